/**
 * Misbehaving servers on 127.0.0.1, for client failover tests: each one fails in one precise
 * way (accepts TCP and says nothing, completes TLS and HTTP/2 and never answers, resets,
 * answers slowly, ends streams without a status), plus a TCP proxy that can be switched
 * between refusing and forwarding. The HTTP/2 ones use the key and certificate given, so that a
 * client trusting a real test server's CA trusts them too.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';

export interface FakeServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** Connections accepted so far. */
  readonly connections: () => number;
  close(): Promise<void>;
}

export interface TlsPair {
  key: string;
  cert: string;
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** A TCP server whose sockets are handed to `onSocket`; closing destroys them all. */
async function tcp(onSocket: (s: net.Socket) => void): Promise<FakeServer> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onSocket(s);
  });
  const port = await listen(server);
  return {
    host: `127.0.0.1:${port}`,
    connections: () => count,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Accepts TCP connections and never sends a byte (no TLS handshake). */
export function silentTcp(): Promise<FakeServer> {
  return tcp(() => undefined);
}

/** Accepts TCP connections and resets them at once (RST). */
export function resetting(): Promise<FakeServer> {
  return tcp((s) => s.resetAndDestroy());
}

/**
 * An HTTP/2 server over TLS whose streams go to `onStream`. Closing destroys every session.
 */
export async function h2(
  tls: TlsPair,
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<FakeServer> {
  const sessions = new Set<http2.ServerHttp2Session>();
  let count = 0;
  const server = http2.createSecureServer({ key: tls.key, cert: tls.cert, allowHTTP1: false });
  server.on('session', (s) => {
    count++;
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => undefined);
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    onStream(stream, headers);
  });
  const port = await listen(server);
  return {
    host: `127.0.0.1:${port}`,
    connections: () => count,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Completes TLS and HTTP/2, reads requests, never answers them. */
export function silentH2(tls: TlsPair): Promise<FakeServer> {
  return h2(tls, (stream) => stream.resume());
}

/** Answers every request with `status`, `body` and `type` after `delayMs`. */
export function slowH2(tls: TlsPair, delayMs: number, answer: { status: number; type: string; body: Buffer }): Promise<FakeServer> {
  return h2(tls, (stream) => {
    stream.resume();
    const t = setTimeout(() => {
      if (stream.closed) return;
      stream.respond({ ':status': answer.status, 'content-type': answer.type });
      stream.end(answer.body);
    }, delayMs);
    stream.on('close', () => clearTimeout(t));
  });
}

/** Ends every stream with RST_STREAM `code` and no response headers. */
export function resetStreams(tls: TlsPair, code: number): Promise<FakeServer> {
  return h2(tls, (stream) => {
    stream.resume();
    stream.close(code);
  });
}

export interface SwitchableProxy extends FakeServer {
  /** `forward` passes connections to the target; `refuse` destroys them at once. */
  mode: 'forward' | 'refuse';
}

/** A TCP proxy to `target` (`host:port`) that can be switched off and on. */
export async function proxy(target: string): Promise<SwitchableProxy> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const state = { mode: 'forward' as 'forward' | 'refuse' };
  const inner = await tcp((s) => {
    if (state.mode === 'refuse') {
      s.destroy();
      return;
    }
    const up = net.connect(port, host);
    up.on('error', () => s.destroy());
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
    s.pipe(up).pipe(s);
  });
  return Object.assign(state, { host: inner.host, connections: inner.connections, close: inner.close });
}

/** A port on 127.0.0.1 where nothing listens (connections are refused). */
export async function closedPort(): Promise<string> {
  const server = net.createServer();
  const port = await listen(server);
  await new Promise<void>((r) => server.close(() => r()));
  return `127.0.0.1:${port}`;
}
