/**
 * HTTPS/2 transport with mutual TLS and several endpoints (used by the CLI, the SDK and the
 * external-KMS HSM).
 *
 * Every call is bounded, in three ways (defaults in brackets, all configurable):
 * - connect [5 s]: TCP connection, TLS handshake and HTTP/2 session of one endpoint;
 * - response [10 s]: from the request handed over to the response headers, per endpoint;
 * - the call [30 s]: everything, failover included; it also bounds reading a response body,
 *   except for streams (`onData`, e.g. `minkms logs`), whose body runs until the server ends it
 *   or the caller aborts.
 *
 * Failover: a call tries every endpoint at most once, healthy ones first (endpoints.ts). A
 * failure that provably happened before the request reached the server (no connection, no
 * TLS, a stream refused unprocessed) moves on to the next endpoint for every request. A
 * request that was sent and then got no answer moves on only if it is safe to repeat
 * (`idempotent`: GET, and command-channel reads); a state-changing request fails with an
 * {@link OutcomeUnknownError} instead, so that it is never silently applied twice.
 *
 * HTTP error statuses are answers, never retried. A stream that closes without a status is a
 * transport failure, never an answer.
 */
import * as http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { Endpoint, callOrder, normalizeEndpoint, type EndpointOrder } from './endpoints.js';
import { EndpointsError, OutcomeUnknownError, TimeoutError, TransportError } from './errors.js';

export { SUSPEND_MS, normalizeEndpoint, type EndpointOrder } from './endpoints.js';
export { EndpointsError, OutcomeUnknownError, TimeoutError, TransportError } from './errors.js';

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_RESPONSE_TIMEOUT_MS = 10_000;
export const DEFAULT_TIMEOUT_MS = 30_000;
/** An idle connection is closed after this long (the server may close it earlier). */
const IDLE_MS = 30_000;

export interface TlsOptions {
  cert?: string;
  key?: string;
  /** Trusted CA certificates (PEM). Default: the system's. */
  ca?: string | string[];
  /** Skip server certificate verification (tests and first steps only). */
  insecure?: boolean;
}

export interface TimeoutOptions {
  /** TCP connection + TLS handshake + HTTP/2 session, per endpoint. Default {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  connectTimeoutMs?: number;
  /** Request handed over → response headers, per endpoint. Default {@link DEFAULT_RESPONSE_TIMEOUT_MS}. */
  responseTimeoutMs?: number;
  /** The whole call, failover included (and a non-stream body). Default {@link DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number;
}

export interface TransportOptions extends TimeoutOptions {
  /** `random` (default) spreads calls over the healthy endpoints; `listed` prefers them in the given order. */
  endpointOrder?: EndpointOrder;
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
  /** Called with each response body chunk instead of buffering (streams: no timeout on the body). */
  onData?: (chunk: Buffer) => void;
  signal?: AbortSignal;
  /**
   * Whether the request may be sent again after it may have reached a server (default: GET
   * only). Say `true` for reads sent with POST (command-channel reads, log streams).
   */
  idempotent?: boolean;
  /** Overrides the response timeout (e.g. Infinity for answers that take long to prepare, such as a backup). */
  responseTimeoutMs?: number;
}

export class Transport {
  readonly #endpoints: Endpoint[];
  /** Endpoints named by `host` that are not in the list (their connections are reused too). */
  readonly #others = new Map<string, Endpoint>();
  readonly #tls: TlsOptions;
  readonly #connectMs: number;
  readonly #responseMs: number;
  readonly #timeoutMs: number;
  readonly #order: EndpointOrder;

  constructor(endpoints: readonly string[], tlsOptions: TlsOptions, opts: TransportOptions = {}) {
    const list = (endpoints.length > 0 ? endpoints : ['127.0.0.1:7373']).map(normalizeEndpoint);
    this.#endpoints = [...new Set(list)].map((u) => new Endpoint(u));
    this.#tls = tlsOptions;
    this.#connectMs = positive(opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
    this.#responseMs = positive(opts.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS, 'responseTimeoutMs');
    this.#timeoutMs = positive(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.#order = opts.endpointOrder ?? 'random';
  }

  get endpoints(): string[] {
    return this.#endpoints.map((e) => e.host);
  }

  async request(opts: RequestOptions): Promise<HttpResponse> {
    const deadline = Date.now() + this.#timeoutMs;
    const idempotent = opts.idempotent ?? opts.method === 'GET';
    if (opts.host !== undefined) {
      const url = normalizeEndpoint(opts.host);
      let ep = this.#endpoints.find((e) => e.url === url) ?? this.#others.get(url);
      if (!ep) this.#others.set(url, (ep = new Endpoint(url)));
      try {
        const res = await this.#attempt(ep, opts, deadline);
        ep.succeeded();
        return res;
      } catch (err) {
        if (!(err instanceof TransportError)) throw err;
        ep.failed();
        throw err.delivered && !err.answered && !idempotent ? new OutcomeUnknownError(err) : err;
      }
    }
    const order = callOrder(this.#endpoints, this.#order);
    const failures: TransportError[] = [];
    for (const ep of order) {
      if (Date.now() >= deadline) break;
      try {
        const res = await this.#attempt(ep, opts, deadline);
        ep.succeeded();
        return res;
      } catch (err) {
        if (!(err instanceof TransportError)) throw err; // aborted by the caller, or a bug
        ep.failed();
        if (err.answered) throw err;
        if (err.delivered && !idempotent) throw new OutcomeUnknownError(err);
        failures.push(err);
        // The call's own timer fired. Timers may fire a little before `deadline` by the wall
        // clock: the check above alone would start an attempt with a millisecond left.
        if (err.cause instanceof TimeoutError && err.cause.callExpired) break;
      }
    }
    const untried = order.slice(failures.length).map((e) => e.host);
    if (failures.length === 1 && untried.length === 0) throw failures[0]!;
    throw new EndpointsError(failures, untried, this.#timeoutMs);
  }

  /** One endpoint: connect (or reuse the connection), send, read the answer. */
  async #attempt(ep: Endpoint, opts: RequestOptions, deadline: number): Promise<HttpResponse> {
    for (let fresh = false; ; fresh = true) {
      opts.signal?.throwIfAborted();
      const reused = ep.session !== undefined && !ep.session.closed && !ep.session.destroyed;
      const session = await this.#connect(ep, deadline, opts.signal);
      try {
        return await this.#exchange(ep, session, opts, deadline);
      } catch (err) {
        // A kept-alive connection the server had just closed (or sent a GOAWAY on): once more
        // on a new one. The old one is closed gracefully, not destroyed: other requests may
        // still be in flight on it, and destroying it would lose their answers — or, for those
        // the GOAWAY refused, the knowledge that they were never processed.
        if (err instanceof TransportError && !err.delivered && reused && !fresh && Date.now() < deadline) {
          dropSession(ep, session, false);
          if (!session.closed && !session.destroyed) session.close();
          continue;
        }
        throw err;
      }
    }
  }

  /** The endpoint's connected session: the current one, or a new one within the connect timeout. */
  #connect(ep: Endpoint, deadline: number, signal: AbortSignal | undefined): Promise<ClientHttp2Session> {
    const left = deadline - Date.now();
    if (left <= 0)
      return Promise.reject(new TransportError(ep.host, new TimeoutError(`not tried, ${this.#callLimit()} was reached`, true)));
    if (!ep.ready || !ep.session || ep.session.closed || ep.session.destroyed) this.#open(ep, this.#bound(this.#connectMs, left));
    return bounded(
      ep.ready!,
      left,
      signal,
      () => new TransportError(ep.host, new TimeoutError(`no connection within ${this.#callLimit()}`, true)),
    );
  }

  /** `the call's timeout of N ms` */
  #callLimit(): string {
    return `the call's timeout of ${this.#timeoutMs} ms`;
  }

  /** A per-attempt bound cut to what is left of the call, with how to name it in an error (and whether it is the call's). */
  #bound(perAttempt: number, left: number): Limit {
    return perAttempt <= left
      ? { ms: perAttempt, text: `${perAttempt} ms`, call: false }
      : { ms: Math.max(0, left), text: this.#callLimit(), call: true };
  }

  /** Starts a session; `ep.ready` settles when it is connected, or fails after `limit.ms`. */
  #open(ep: Endpoint, limit: Limit): void {
    const url = new URL(ep.url);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let tcp = false;
    let secure = false;
    const socket = tls.connect({
      host,
      port: Number(url.port),
      // Go sends no SNI for IP literals; node refuses to set an IP as servername.
      servername: isIP(host) ? undefined : host,
      ALPNProtocols: ['h2'],
      cert: this.#tls.cert,
      key: this.#tls.key,
      ca: this.#tls.ca,
      rejectUnauthorized: !this.#tls.insecure,
      minVersion: 'TLSv1.2',
    });
    socket.once('connect', () => (tcp = true));
    socket.once('secureConnect', () => (secure = true));
    const session = http2.connect(ep.url, { createConnection: () => socket });
    ep.session = session;
    session.unref();
    const ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      const fail = (err: TransportError) => {
        clearTimeout(timer);
        reject(err);
        dropSession(ep, session);
      };
      const timer = setTimeout(() => {
        const what = !tcp ? 'no TCP connection' : !secure ? 'no TLS handshake' : 'no HTTP/2 session';
        fail(new TransportError(ep.host, new TimeoutError(`${what} within ${limit.text}`, limit.call)));
      }, limit.ms);
      session.once('connect', () => {
        clearTimeout(timer);
        resolve(session);
      });
      session.once('error', (err) => fail(new TransportError(ep.host, err)));
      socket.once('error', (err) => fail(new TransportError(ep.host, err)));
      session.once('close', () => fail(new TransportError(ep.host, new Error('connection closed before it was set up'))));
    });
    ready.catch(() => undefined); // whoever waits sees the failure; nobody may be waiting any more
    ep.ready = ready;
    session.on('error', () => dropSession(ep, session, false));
    session.on('close', () => dropSession(ep, session, false));
    session.on('goaway', () => dropSession(ep, session, false));
    session.setTimeout(IDLE_MS, () => session.close());
  }

  /** Sends the request on a connected session and reads the answer. */
  #exchange(ep: Endpoint, session: ClientHttp2Session, opts: RequestOptions, deadline: number): Promise<HttpResponse> {
    return new Promise((resolve, reject) => {
      const headers: http2.OutgoingHttpHeaders = { ':method': opts.method, ':path': opts.path, ...opts.headers };
      if (opts.body) headers['content-length'] = opts.body.length;
      let stream: ClientHttp2Stream;
      try {
        stream = session.request(headers, { endStream: !opts.body, signal: opts.signal });
      } catch (err) {
        reject(new TransportError(ep.host, err)); // nothing was sent
        return;
      }
      track(session, +1);
      let state: 'sending' | 'waiting' | 'body' | 'done' = 'sending';
      let timer: NodeJS.Timeout | undefined;
      let responseHeaders: IncomingHttpHeaders | undefined;
      let gotData = false;
      const chunks: Buffer[] = [];
      const settle = (fn: () => void) => {
        if (state === 'done') return;
        state = 'done';
        clearTimeout(timer);
        track(session, -1);
        fn();
      };
      const fail = (cause: unknown, reason?: string) =>
        settle(() => {
          if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
          if (opts.signal?.aborted) return reject(opts.signal.reason ?? cause);
          const responded = responseHeaders !== undefined;
          reject(
            new TransportError(ep.host, cause, {
              reason,
              delivered: !refusedUnprocessed(cause, stream),
              answered: responded && opts.onData !== undefined && gotData,
            }),
          );
        });
      const arm = (ms: number, message: string, call: boolean) => {
        clearTimeout(timer);
        if (Number.isFinite(ms)) timer = setTimeout(() => fail(new TimeoutError(message, call)), Math.max(0, ms));
      };
      const left = () => deadline - Date.now();

      // Sending (a large body may wait for flow control): bounded by the call.
      arm(left(), `request not sent within ${this.#callLimit()}`, true);
      const waiting = () => {
        if (state !== 'sending') return;
        state = 'waiting';
        const limit = this.#bound(opts.responseTimeoutMs ?? this.#responseMs, left());
        arm(limit.ms, `no response within ${limit.text}`, limit.call);
      };

      stream.on('response', (h) => {
        if (state === 'done') return;
        responseHeaders = h;
        state = 'body';
        if (opts.onData) clearTimeout(timer);
        else arm(left(), `response body not complete within ${this.#callLimit()}`, true);
        opts.onResponse?.(h);
      });
      stream.on('data', (c: Buffer) => {
        if (state === 'done') return;
        gotData = true;
        if (opts.onData) opts.onData(c);
        else chunks.push(c);
      });
      stream.on('end', () => {
        const h = responseHeaders;
        if (h === undefined) return fail(new Error(`the stream ended without a response (HTTP/2 error code ${stream.rstCode ?? 'none'})`));
        settle(() => resolve({ status: Number(h[':status']), headers: h, body: Buffer.concat(chunks) }));
        // Answered before the whole body was sent (a refusal): the rest is not wanted.
        if (!stream.writableFinished) stream.destroy();
      });
      stream.on('error', (err) => fail(err));
      stream.on('close', () => {
        const what = responseHeaders === undefined ? 'without a response' : 'before the response was complete';
        fail(new Error(`stream closed ${what} (HTTP/2 error code ${stream.rstCode ?? 'none'})`));
      });
      if (opts.body) sendBody(stream, opts.body, waiting);
      else waiting();
    });
  }

  close(): void {
    for (const ep of [...this.#endpoints, ...this.#others.values()]) {
      ep.session?.close();
      ep.session = undefined;
      ep.ready = undefined;
    }
  }
}

/** A time bound of one step: in ms, as named in an error, and whether it is what is left of the call. */
interface Limit {
  ms: number;
  text: string;
  call: boolean;
}

/** The piece of a request body handed to the HTTP/2 stream at a time: see {@link sendBody}. */
const BODY_PIECE = 16 << 10;

/**
 * Sends a request body a piece at a time, the next once the last is out. Node counts a body
 * handed to a stream whole against its session's memory (10 MB) until sent, and a body the
 * server refused midway is never sent: about 70 refused 140 kB requests left the session failing
 * every later request with ENHANCE_YOUR_CALM. A piece at a time, a refusal leaves one piece.
 */
function sendBody(stream: ClientHttp2Stream, body: Uint8Array, sent: () => void): void {
  let offset = 0;
  const next = (): void => {
    while (offset + BODY_PIECE < body.length) {
      const piece = body.subarray(offset, offset + BODY_PIECE);
      offset += BODY_PIECE;
      if (!stream.write(piece)) return void stream.once('drain', next);
    }
    stream.end(body.subarray(offset), sent);
  };
  next();
}

/** Requests in flight per session: a session keeps the process alive only while it has some. */
const inFlight = new WeakMap<ClientHttp2Session, number>();

function track(session: ClientHttp2Session, delta: 1 | -1): void {
  const n = (inFlight.get(session) ?? 0) + delta;
  inFlight.set(session, n);
  if (session.destroyed) return;
  if (n === 1 && delta === 1) session.ref();
  if (n === 0) session.unref();
}

/** A stream the server refused before processing it (RST_STREAM REFUSED_STREAM, or past a GOAWAY). */
function refusedUnprocessed(cause: unknown, stream: ClientHttp2Stream): boolean {
  const code = (cause as { code?: string })?.code;
  if (code === 'ERR_HTTP2_GOAWAY_SESSION') return true;
  return stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
}

/** Forgets `session` as the endpoint's connection (and destroys it unless it only closed). */
function dropSession(ep: Endpoint, session: ClientHttp2Session, destroy = true): void {
  if (ep.session === session) {
    ep.session = undefined;
    ep.ready = undefined;
  }
  if (destroy && !session.destroyed) session.destroy();
}

/** `p`, or the error of `onTimeout()` after `ms`, or the caller's abort. */
function bounded<T>(p: Promise<T>, ms: number, signal: AbortSignal | undefined, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => done(() => reject(onTimeout())), ms);
    const onAbort = () => done(() => reject(signal!.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (fn: () => void) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    p.then(
      (v) => done(() => resolve(v)),
      (e) => done(() => reject(e)),
    );
  });
}

function positive(ms: number, name: string): number {
  if (!(ms > 0)) throw new TypeError(`${name} must be a positive number of milliseconds`);
  return ms;
}
