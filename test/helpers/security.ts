/**
 * Helpers of the security tests (authorization matrix, findings of issue 11, resources): raw
 * HTTP/2 requests whose bytes and timing the test controls, and what a server process holds —
 * its resident memory (current and peak, from /proc/PID/status) and its open file descriptors.
 */
import * as http2 from 'node:http2';
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { certificateForApiKey, parseApiKey } from '../../src/identity/index.js';
import type { TestServer } from './server.js';

// ------------------------------------------------------------------------------ raw HTTP/2

/** An HTTP/2 session to `server` with the client certificate of `apiKey` (none: no certificate). */
export function h2Session(server: TestServer, apiKey?: string, opts: http2.SecureClientSessionOptions = {}): ClientHttp2Session {
  const cert = apiKey ? certificateForApiKey(parseApiKey(apiKey)) : undefined;
  const s = http2.connect(server.url, {
    ca: server.caPem,
    cert: cert?.cert,
    key: cert?.key,
    servername: '',
    // Large request bodies are queued whole by the client: do not let it reset its own streams.
    maxSessionMemory: 1024,
    ...opts,
  });
  s.on('error', () => {});
  return s;
}

export interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The `message` of a JSON error body, else ''. */
  message: string;
}

export interface RawRequest {
  method: string;
  path: string;
  body?: Uint8Array;
  headers?: OutgoingHttpHeaders;
  /** Resolve on the headers of a 200, then close the stream (endless streams: the log). */
  headersOnly?: boolean;
  /** Send the headers and leave the body open (nothing of it sent). */
  bodyOpen?: boolean;
  timeoutMs?: number;
}

/** One request on `session`; rejects instead of hanging after `timeoutMs` (default 20 s). */
export function h2Request(session: ClientHttp2Session, r: RawRequest): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ':method': r.method, ':path': r.path, ...r.headers };
    if (r.body) headers['content-length'] ??= r.body.length;
    const stream = session.request(headers, { endStream: !r.body && !r.bodyOpen });
    let status = 0;
    let resHeaders: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (!stream.closed) stream.close();
      if (err) return reject(err);
      const body = Buffer.concat(chunks);
      let message = '';
      if (resHeaders['content-type'] === 'application/json' && status !== 200) {
        try {
          message = String((JSON.parse(body.toString('utf8')) as { message?: unknown }).message ?? '');
        } catch {
          // not an error body
        }
      }
      resolve({ status, headers: resHeaders, body, message });
    };
    const timer = setTimeout(
      () => finish(new Error(`${r.method} ${r.path}: no answer within ${r.timeoutMs ?? 20_000} ms`)),
      r.timeoutMs ?? 20_000,
    );
    stream.on('response', (h) => {
      resHeaders = h;
      status = Number(h[':status']);
      if (r.headersOnly && status === 200) finish();
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => finish(status ? undefined : new Error(`${r.method} ${r.path}: ended without a response`)));
    stream.on('close', () =>
      finish(status ? undefined : new Error(`${r.method} ${r.path}: closed without a response (${stream.rstCode})`)),
    );
    stream.on('error', () => {});
    if (r.body && !r.bodyOpen) stream.end(r.body);
  });
}

/** Closes a session and waits until it is gone. */
export function closeSession(s: ClientHttp2Session): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.once('close', () => resolve());
    s.close();
    setTimeout(() => s.destroy(), 2_000).unref();
  });
}

// ------------------------------------------------------------------------------ the process

export interface Memory {
  /** Resident set size now, bytes. */
  rss: number;
  /** Peak resident set size since start or the last {@link resetPeak}, bytes. */
  peak: number;
}

/** VmRSS and VmHWM of a process (Linux). */
export function memoryOf(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Resets the peak (VmHWM) to the current RSS: writes 5 to /proc/PID/clear_refs (Linux ≥ 4.0). */
export function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Open file descriptors of a process. */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Sockets of a process (file descriptors that are sockets). */
export function openSockets(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

export const MiB = 1 << 20;
export const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
