/**
 * The ceiling: the least a Node server on this machine must do to answer our requests. Same
 * TLS stack and settings as the real server (`http2.createSecureServer` with HTTP/1.1 fallback,
 * `requestCert`, self-signed client certificates accepted), same certificate, reads the whole
 * request body and answers with a body of the same size as the real server's answer — and does
 * nothing else (no routing, no identity, no decoding, no crypto, no metrics).
 *
 * The response size comes from the query string (`?n=123`), set by the bench to the size the
 * real server answered with. Run as a child process of the bench; prints `PORT <n>` when it
 * listens. `CEILING_COMPAT=1` serves HTTP/2 through Node's compatibility layer instead (the
 * request/response objects), to see what that layer costs.
 */
import * as http2 from 'node:http2';
import { readFileSync } from 'node:fs';

const [certFile, keyFile] = process.argv.slice(2);
const server = http2.createSecureServer({
  cert: readFileSync(certFile!),
  key: readFileSync(keyFile!),
  allowHTTP1: true,
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: 'TLSv1.2',
});
const bodies = new Map<number, Buffer>();
function bodyOf(url: string): Buffer {
  const q = url.indexOf('?n=');
  const n = q < 0 ? 0 : Number(url.slice(q + 3)) || 0;
  let body = bodies.get(n);
  if (body === undefined) bodies.set(n, (body = Buffer.alloc(n, 0x5a)));
  return body;
}
/** Reads the whole request, then answers with a body of the size the path asks for. */
function answer(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void {
  const body = bodyOf(req.url ?? '');
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
}
if (process.env.CEILING_COMPAT) {
  server.on('request', answer);
} else {
  // HTTP/1.1 through the `request` event (the fallback always goes through it); HTTP/2 through
  // the raw stream API, the fastest Node offers: adding a `request` listener also installs the
  // compatibility layer's `stream` listener, which is removed again.
  server.on('request', answer);
  server.removeAllListeners('stream');
  server.on('stream', (stream, headers) => {
    const body = bodyOf(String(headers[':path'] ?? ''));
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': body.length });
      stream.end(body);
    });
  });
}
server.on('sessionError', () => {});
server.on('tlsClientError', () => {});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`PORT ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
