/**
 * HTTPS/2 transport with mutual TLS and several endpoints. A request goes to a random healthy
 * endpoint; a transport failure (refused, reset, TLS, timeout) suspends that endpoint for 30 s
 * and the request moves on to the next one. HTTP error statuses are answers, never retried.
 */
import * as http2 from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2';

export const SUSPEND_MS = 30_000;

export interface TlsOptions {
  cert?: string;
  key?: string;
  /** Trusted CA certificates (PEM). Default: the system's. */
  ca?: string | string[];
  /** Skip server certificate verification (tests and first steps only). */
  insecure?: boolean;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface RequestOptions {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  headers?: Record<string, string | number>;
  body?: Uint8Array;
  /** Send to this endpoint only (no failover). */
  host?: string;
  /** Called with the response headers, before any body chunk. */
  onResponse?: (headers: IncomingHttpHeaders) => void;
  /** Called with each response body chunk instead of buffering (streams). */
  onData?: (chunk: Buffer) => void;
  signal?: AbortSignal;
}

/** A connection-level failure (as opposed to an HTTP error answer). */
export class TransportError extends Error {
  readonly host: string;
  constructor(host: string, cause: unknown) {
    super(`${host}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'TransportError';
    this.host = host;
  }
}

/** `host:port`, `https://host:port` or `http://host:port` → `https://host:port` (port 7373 by default). */
export function normalizeEndpoint(e: string): string {
  const s = e
    .trim()
    .replace(/^https?:\/\//, '')
    .replace(/\/+$/, '');
  if (s === '') throw new TypeError('empty server endpoint');
  const url = new URL(`https://${s}`);
  if (url.port === '') url.port = '7373';
  return `https://${url.host}`;
}

class Endpoint {
  readonly url: string;
  suspendedUntil = 0;
  session: ClientHttp2Session | undefined;
  constructor(url: string) {
    this.url = url;
  }
  get host(): string {
    return this.url.slice('https://'.length);
  }
}

export class Transport {
  readonly #endpoints: Endpoint[];
  readonly #tls: TlsOptions;
  readonly #timeoutMs: number;

  constructor(endpoints: readonly string[], tls: TlsOptions, timeoutMs = 30_000) {
    const list = (endpoints.length > 0 ? endpoints : ['127.0.0.1:7373']).map(normalizeEndpoint);
    this.#endpoints = list.map((u) => new Endpoint(u));
    this.#tls = tls;
    this.#timeoutMs = timeoutMs;
  }

  get endpoints(): string[] {
    return this.#endpoints.map((e) => e.host);
  }

  async request(opts: RequestOptions): Promise<HttpResponse> {
    if (opts.host !== undefined) {
      const url = normalizeEndpoint(opts.host);
      const ep = this.#endpoints.find((e) => e.url === url) ?? new Endpoint(url);
      return this.#send(ep, opts);
    }
    const now = Date.now();
    const n = this.#endpoints.length;
    const start = Math.floor(Math.random() * n);
    const order: Endpoint[] = [];
    for (let i = 0; i < n; i++) order.push(this.#endpoints[(start + i) % n]!);
    const healthy = order.filter((e) => e.suspendedUntil <= now);
    const candidates = healthy.length > 0 ? healthy : order.slice(0, 1);
    let last: unknown;
    for (const ep of candidates) {
      try {
        return await this.#send(ep, opts);
      } catch (err) {
        if (!(err instanceof TransportError) || opts.signal?.aborted) throw err;
        ep.suspendedUntil = Date.now() + SUSPEND_MS;
        last = err;
      }
    }
    throw last;
  }

  #session(ep: Endpoint): ClientHttp2Session {
    if (ep.session && !ep.session.closed && !ep.session.destroyed) return ep.session;
    const hostname = new URL(ep.url).hostname.replace(/^\[|\]$/g, '');
    const session = http2.connect(ep.url, {
      cert: this.#tls.cert,
      key: this.#tls.key,
      ca: this.#tls.ca,
      rejectUnauthorized: !this.#tls.insecure,
      // Go sends no SNI for IP literals; node refuses to set an IP as servername.
      servername: /^[\d.]+$|:/.test(hostname) ? '' : hostname,
      minVersion: 'TLSv1.2',
    });
    session.on('error', () => {
      if (ep.session === session) ep.session = undefined;
    });
    session.on('close', () => {
      if (ep.session === session) ep.session = undefined;
    });
    session.setTimeout(90_000, () => session.close());
    session.unref();
    ep.session = session;
    return session;
  }

  #send(ep: Endpoint, opts: RequestOptions): Promise<HttpResponse> {
    return new Promise((resolve, reject) => {
      let session: ClientHttp2Session;
      try {
        session = this.#session(ep);
      } catch (err) {
        reject(new TransportError(ep.host, err));
        return;
      }
      let responded = false;
      let ended = false;
      const headers: http2.OutgoingHttpHeaders = { ':method': opts.method, ':path': opts.path, ...opts.headers };
      if (opts.body) headers['content-length'] = opts.body.length;
      const stream = session.request(headers, { endStream: !opts.body, signal: opts.signal });
      session.ref();
      const done = () => {
        clearTimeout(timer);
        if (!session.destroyed) session.unref();
      };
      const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), this.#timeoutMs);
      const chunks: Buffer[] = [];
      let resHeaders: IncomingHttpHeaders = {};
      stream.on('response', (h) => {
        responded = true;
        resHeaders = h;
        opts.onResponse?.(h);
      });
      stream.on('data', (c: Buffer) => (opts.onData ? opts.onData(c) : chunks.push(c)));
      stream.on('end', () => {
        ended = true;
        done();
        resolve({ status: Number(resHeaders[':status']), headers: resHeaders, body: Buffer.concat(chunks) });
      });
      stream.on('error', (err) => {
        done();
        // An error before any response header is a transport failure: safe to fail over.
        reject(responded ? err : new TransportError(ep.host, err));
      });
      stream.on('close', () => {
        done();
        if (ended) return;
        const err = new Error(`stream closed (code ${stream.rstCode})`);
        reject(responded ? err : new TransportError(ep.host, err));
      });
      if (opts.body) stream.end(opts.body);
    });
  }

  close(): void {
    for (const ep of this.#endpoints) {
      ep.session?.close();
      ep.session = undefined;
    }
  }
}
