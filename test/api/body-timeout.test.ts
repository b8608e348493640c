/**
 * A client that sends a request's headers and then stalls (slowloris) gets 408 once
 * `limits.body_timeout` has passed, over HTTP/2 and HTTP/1.1, and does not hold the server up:
 * requests on other streams and connections are served meanwhile and afterwards.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import { startServer, type TestServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';
import { certificateForApiKey, parseApiKey, type PemCertificate } from '../../src/identity/index.js';

const TIMEOUT_MS = 400;
let server: TestServer;
let cert: PemCertificate;

before(async () => {
  server = await startServer({ config: `version: v1\nlimits:\n  body_timeout: ${TIMEOUT_MS}ms\n` });
  assert.ok(server.apiKey, 'server printed no root API key');
  cert = certificateForApiKey(parseApiKey(server.apiKey));
  await clientFor(server, server.apiKey).createEnclave('slow');
});
after(() => server?.stop());

/** Sends headers promising 100 bytes, then 10 of them, then nothing. */
function stalledH2(session: http2.ClientHttp2Session): Promise<{ status: number; body: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/v1/kms/slow', 'content-length': '100' }, { endStream: false });
    req.write(Buffer.alloc(10));
    let status = 0;
    let body = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => resolve({ status, body, ms: performance.now() - t0 }));
    req.on('error', reject);
  });
}

test(
  'HTTP/2: a stalled body → 408 request timeout after body_timeout; other streams are served meanwhile',
  { timeout: 15_000 },
  async () => {
    const session = http2.connect(server.url, { ca: server.caPem, cert: cert.cert, key: cert.key, servername: '' });
    session.on('error', () => {});
    try {
      const stalled = [stalledH2(session), stalledH2(session), stalledH2(session)];
      // While they stall, the same connection and a new client are served.
      const live = await clientFor(server, server.apiKey).version();
      assert.ok(live.version, 'no version answer while bodies stall');
      for (const [i, r] of (await Promise.all(stalled)).entries()) {
        assert.equal(r.status, 408, `stream ${i}: got status ${r.status}, want 408`);
        assert.deepEqual(JSON.parse(r.body), { message: 'request timeout' }, `stream ${i}: body`);
        assert.ok(r.ms >= TIMEOUT_MS - 20, `stream ${i}: answered after ${r.ms.toFixed(0)} ms, before the ${TIMEOUT_MS} ms limit`);
        assert.ok(r.ms < TIMEOUT_MS + 2000, `stream ${i}: answered after ${r.ms.toFixed(0)} ms, far beyond the ${TIMEOUT_MS} ms limit`);
      }
    } finally {
      session.close();
    }
  },
);

test('HTTP/1.1: a stalled body → 408 after body_timeout, server alive afterwards', { timeout: 15_000 }, async () => {
  const t0 = performance.now();
  const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request(`${server.url}/v1/kms/slow`, {
      method: 'POST',
      ca: server.caPem,
      cert: cert.cert,
      key: cert.key,
      servername: '',
      agent: false,
      headers: { 'content-length': '100' },
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.write(Buffer.alloc(10));
  });
  const ms = performance.now() - t0;
  assert.equal(r.status, 408);
  assert.deepEqual(JSON.parse(r.body), { message: 'request timeout' });
  assert.ok(ms >= TIMEOUT_MS - 20 && ms < TIMEOUT_MS + 2000, `answered after ${ms.toFixed(0)} ms, limit ${TIMEOUT_MS} ms`);
  await clientFor(server, server.apiKey).listEnclaves();
});
