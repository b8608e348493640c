/**
 * The HTTPS front end: a `node:http2` secure server with HTTP/1.1 fallback, mutual TLS with
 * client certificates requested but not CA-verified (the identity is the certificate's public
 * key hash, checked against the enclave's identities), and the route table.
 *
 * Errors are turned into responses in exactly one place, `sendError`.
 *
 * Hot path (docs/performance.md): HTTP/2 requests of the command channel (`POST /v1/kms…`)
 * skip Node's HTTP/2 compatibility layer, whose two stream objects per request
 * (Http2ServerRequest/Response) cost more than the whole KEY:GENERATE itself. They are served
 * from the raw `ServerHttp2Stream` through {@link StreamRequest}/{@link StreamResponse}, small
 * adapters with the part of the request/response API that handlers and the observer use
 * ({@link Request}/{@link Response}); routing, identity, observer and error mapping are the same
 * code for every request. Every other HTTP/2 request, and all of HTTP/1.1, goes through
 * Node's own request/response objects.
 */
import * as http2 from 'node:http2';
import type { Http2SecureServer, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { identityOfCertificate } from '../identity/identity.js';
import { KmsError, isKmsError } from '../errors.js';
import type { Logger } from './log.js';
import type { Limits } from '../config/config.js';
import { Deadlines } from './deadlines.js';
import { requestInfo, requestScope } from './log-context.js';

type Listener = (...args: any[]) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * What handlers and the observer may use of a request: implemented by Node's
 * Http2ServerRequest (HTTP/2 through the compatibility layer), http.IncomingMessage (HTTP/1.1)
 * and {@link StreamRequest} (the HTTP/2 command channel).
 */
export interface Request {
  readonly headers: IncomingHttpHeaders;
  readonly method: string;
  readonly url: string;
  readonly httpVersionMajor: number;
  /** The TLS socket (HTTP/1.1) or the session's socket (HTTP/2). */
  readonly socket: Socket | TLSSocket;
  /** HTTP/2 only. */
  readonly stream?: ServerHttp2Stream;
  on(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
  removeAllListeners(event?: string): unknown;
  resume(): unknown;
}

/** What handlers and the observer may use of a response (see {@link Request}). */
export interface Response {
  readonly statusCode: number;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  /** HTTP/2 only. */
  readonly stream?: { readonly destroyed: boolean };
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  write(chunk: Buffer | string): boolean;
  end(chunk?: Buffer | string): unknown;
  getHeader(name: string): number | string | string[] | undefined;
  on(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
}

/** What one request's pre-body check gets: everything the TLS connection and the URL tell. */
export interface AccessContext {
  readonly req: Request;
  readonly res: Response;
  /** `h1:` identity of the client certificate, or '' without one. */
  readonly identity: string;
  /** The rest of the path after a prefix route, percent-decoded. */
  readonly param: string;
  readonly query: URLSearchParams;
}

/**
 * Decides whether the caller may send this request — before a byte of its body is read.
 * Throws the catalogue's error to refuse.
 */
export type Access = (ctx: AccessContext) => void;

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Exact path, or a prefix ending in `/` matched with the rest as `param`. */
  path: string;
  prefix?: boolean;
  /** Who may send the request (see {@link Access}); `() => {}` for public endpoints. */
  access: Access;
  /**
   * Present if the handler needs the body, read up to `max` bytes (default: `limits.max_body`)
   * within `limits.body_timeout` and counted against the connection's and the node's buffer
   * budgets (`unbudgeted`: only for requests the route itself allows one at a time).
   */
  body?: { max?: number; unbudgeted?: boolean };
  handler: (ctx: RequestContext) => void | Promise<void>;
}

export interface RequestContext extends AccessContext {
  readonly body: Buffer;
}

const identities = new WeakMap<object, string>();

/** The identity of the connection, computed once per TLS connection. */
function connectionIdentity(req: Request): string {
  // HTTP/2: one session per connection; HTTP/1.1: req.socket is the TLS socket itself. Decided
  // by the stream, not by httpVersionMajor: an HTTP/1.1 connection may claim "HTTP/2.0" in its
  // request line, and has no stream.
  const owner: object = req.stream?.session ?? req.socket;
  let id = identities.get(owner);
  if (id === undefined) {
    const cert = (req.socket as TLSSocket).getPeerX509Certificate?.();
    id = cert ? identityOfCertificate(cert) : '';
    identities.set(owner, id);
  }
  return id;
}

export function send(res: Response, status: number, body: Buffer | string, contentType: string): void {
  const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  // Content-Length is always set and the body is never compressed: the Go SDK reads
  // exactly Content-Length bytes and refuses responses without it (kms-wire.md §2.2).
  if (res instanceof StreamResponse) return res.send(status, contentType, buf);
  res.writeHead(status, { 'content-type': contentType, 'content-length': buf.length });
  res.end(buf);
}

export function sendError(res: Response, err: unknown, log: Logger): void {
  let e: KmsError;
  if (isKmsError(err)) {
    e = err;
  } else {
    const id = randomUUID();
    log.error('internal error', { requestId: id, err: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    e = new KmsError('ERR_INTERNAL', `request id ${id}`);
  }
  if (res.headersSent || res.stream?.destroyed) return;
  // `application/json` exactly: the SDK decodes {"message": …} only for this content type.
  send(res, e.status, JSON.stringify({ message: e.message }), 'application/json');
}

/** Identities without bytes in flight that {@link BodyBudget} keeps before it drops them. */
const IDLE_IDENTITIES = 256;

/**
 * Request bytes held in memory at once, per connection, per identity and per node: a client may
 * send many bodies in parallel (HTTP/2 streams, connections), each within `max_body`; these bound
 * the sum. A body that would exceed a budget is refused with `503 server busy` (retry later).
 * The identity's budget keeps one caller — whatever number of connections it opens — from
 * holding the node's budget and so refusing everyone else (a declared length is reserved before
 * its bytes arrive: without it, 16 streams of headers alone froze the command channel).
 */
export class BodyBudget {
  readonly perConnection: number;
  readonly perIdentity: number;
  readonly total: number;
  #used = 0;
  readonly #byConnection = new WeakMap<object, number>();
  /**
   * Bytes held by identity. An entry back at 0 stays (a Map that loses and regains an entry per
   * request reallocates its table, in the old generation: docs/performance.md, "Full
   * collections"); idle entries go once there are more than {@link IDLE_IDENTITIES}.
   */
  readonly #byIdentity = new Map<string, number>();

  constructor(perConnection: number, total: number, perIdentity = Math.min(perConnection, total)) {
    this.perConnection = perConnection;
    this.perIdentity = perIdentity;
    this.total = total;
  }

  /** Bytes held now, node-wide. */
  get used(): number {
    return this.#used;
  }

  /** Reserves `n` bytes for `connection` and `identity`; false (and nothing reserved) if a budget would be exceeded. */
  take(connection: object, identity: string, n: number): boolean {
    const mine = this.#byConnection.get(connection) ?? 0;
    const theirs = this.#byIdentity.get(identity) ?? 0;
    if (mine + n > this.perConnection || theirs + n > this.perIdentity || this.#used + n > this.total) return false;
    this.#byConnection.set(connection, mine + n);
    this.#byIdentity.set(identity, theirs + n);
    this.#used += n;
    return true;
  }

  give(connection: object, identity: string, n: number): void {
    if (n === 0) return;
    this.#byConnection.set(connection, (this.#byConnection.get(connection) ?? n) - n);
    const left = (this.#byIdentity.get(identity) ?? n) - n;
    this.#byIdentity.set(identity, left);
    if (left === 0 && this.#byIdentity.size > IDLE_IDENTITIES) {
      for (const [id, held] of this.#byIdentity) if (held === 0) this.#byIdentity.delete(id);
    }
    this.#used -= n;
  }
}

/** The object that stands for a request's connection: the HTTP/2 session or the TLS socket. */
function connectionOf(req: Request): object {
  return req.stream?.session ?? req.socket;
}

interface BodyLimits {
  max: number;
  timeout: number;
  /** Undefined: not counted (the route allows one request at a time). */
  budget: BodyBudget | undefined;
  /** Whose bytes they are (the caller's identity). */
  identity: string;
}

/**
 * Reads the whole body (up to the limit, within the time limit, within the buffer budgets) and
 * calls `done` once, with the body or with why there is none. With a declared length the body
 * is read straight into one buffer of that size (reserved up front); without one, chunks are
 * reserved as they arrive. The reservation is given back when the response is finished.
 *
 * A callback, not a promise: on the command channel every microtask hop is measurable
 * (docs/performance.md).
 */
function readBody(req: Request, res: Response, limits: BodyLimits, done: (err: unknown, body?: Buffer) => void): void {
  const declaredText = req.headers['content-length'];
  if (declaredText !== undefined && !/^\d+$/.test(declaredText)) return done(new KmsError('ERR_BAD_REQUEST', 'invalid content-length'));
  const declared = declaredText === undefined ? undefined : Number(declaredText);
  if (declared !== undefined && declared > limits.max) return done(new KmsError('ERR_TOO_LARGE'));
  const budget = limits.budget;
  const conn = connectionOf(req);
  let reserved = 0;
  const reserve = (n: number) => {
    if (!budget) return true;
    if (!budget.take(conn, limits.identity, n)) return false;
    reserved += n;
    return true;
  };
  if (declared !== undefined && declared > 0 && !reserve(declared))
    return done(new KmsError('ERR_BUSY', 'too many request bytes in flight'));
  if (budget) res.once('close', () => budget.give(conn, limits.identity, reserved));

  const whole = declared !== undefined && declared > 0 ? Buffer.allocUnsafe(declared) : undefined;
  let first: Buffer | undefined;
  let chunks: Buffer[] | undefined;
  let size = 0;
  let finished = false;
  const pending = bodyDeadlines.add(limits.timeout, () => fail(new KmsError('ERR_TIMEOUT')));
  const fail = (err: unknown) => {
    if (finished) return;
    finished = true;
    bodyDeadlines.remove(pending);
    req.removeAllListeners('data');
    done(err);
  };
  req.on('data', (chunk: Buffer) => {
    if (finished) return;
    if (whole) {
      if (size + chunk.length > whole.length) return fail(new KmsError('ERR_BAD_REQUEST', 'body longer than its content-length'));
      whole.set(chunk, size);
      size += chunk.length;
      return;
    }
    size += chunk.length;
    if (size > limits.max) return fail(new KmsError('ERR_TOO_LARGE'));
    if (!reserve(chunk.length)) return fail(new KmsError('ERR_BUSY', 'too many request bytes in flight'));
    if (first === undefined) first = chunk;
    else (chunks ??= [first]).push(chunk);
  });
  req.on('end', () => {
    if (finished) return;
    finished = true;
    bodyDeadlines.remove(pending);
    if (whole && size !== whole.length) return done(new KmsError('ERR_BAD_REQUEST', 'body shorter than its content-length'));
    done(undefined, whole ?? (chunks ? Buffer.concat(chunks, size) : (first ?? EMPTY)));
  });
  req.on('error', fail);
  req.on('aborted', () => fail(new KmsError('ERR_BAD_REQUEST', 'request aborted')));
}

const EMPTY = Buffer.alloc(0);
const bodyDeadlines = new Deadlines();

/** Sees every request (metrics, audit); see server/observability.ts. */
export interface HttpObserver {
  /** A request arrived (before routing). */
  request(req: Request, res: Response): void;
  /** Its route and caller are known (before the body is read). */
  routed(req: Request, route: Route, identity: string, param: string): void;
  /** It failed with `err` (just before `sendError`). */
  failed(req: Request, err: unknown): void;
}

export interface HttpServerOptions {
  cert: string | string[];
  key: string | string[];
  ca?: string | string[];
  routes: readonly Route[];
  limits: Limits;
  log: Logger;
  observer?: HttpObserver;
}

/**
 * The listener, with every resource bounded (docs/security.md): connections per node, HTTP/2
 * streams per connection, buffered request bytes per connection, per identity and per node, and timeouts that
 * close what is idle — a TLS handshake that does not finish, HTTP/1.1 headers that do not
 * arrive, a connection (HTTP/2 session or HTTP/1.1 keep-alive socket) without requests.
 */
export function createHttpServer(opts: HttpServerOptions): Http2SecureServer {
  const limits = opts.limits;
  const server = http2.createSecureServer({
    cert: opts.cert,
    key: opts.key,
    ca: opts.ca,
    allowHTTP1: true,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    handshakeTimeout: limits.handshakeTimeout,
    settings: { maxConcurrentStreams: limits.maxStreams },
  });
  // No 'timeout' listener: Node then destroys an HTTP/2 session or HTTP/1.1 socket idle this long.
  server.setTimeout(limits.idleTimeout);
  server.maxConnections = limits.maxConnections;
  // HTTP/1.1 (allowHTTP1): the headers of a request must arrive quickly; the body has its own deadline.
  const h1 = server as unknown as {
    headersTimeout: number;
    requestTimeout: number;
    keepAliveTimeout: number;
    connectionsCheckingInterval: number;
  };
  h1.headersTimeout = limits.handshakeTimeout;
  h1.requestTimeout = limits.handshakeTimeout + limits.bodyTimeout;
  h1.keepAliveTimeout = Math.min(5_000, limits.idleTimeout);
  // Node checks those two timeouts only every `connectionsCheckingInterval` (30 s by default):
  // headers trickling in a byte at a time (which keeps the socket from being idle) would hold a
  // connection up to 30 s past handshake_timeout. Check often enough to close it within a
  // quarter of the timeout (read when the server starts listening).
  h1.connectionsCheckingInterval = Math.min(5_000, Math.max(100, Math.floor(limits.handshakeTimeout / 4)));
  const ctx: HandleContext = {
    opts,
    budget: new BodyBudget(limits.maxBufferedPerConnection, limits.maxBuffered, limits.maxBufferedPerIdentity),
  };
  const observer = opts.observer;
  const conns = trackConnections(server);
  const run = (req: Request, res: Response) => {
    observer?.request(req, res);
    const fail = (err: unknown) => {
      observer?.failed(req, err);
      sendError(res, err, opts.log);
    };
    try {
      handle(req, res, ctx, fail);
    } catch (err) {
      fail(err);
    }
  };
  const serve = (req: Request, res: Response) => {
    if (!req.stream) conns.http1Request(req, res);
    // Only while someone reads the log stream: the request is known to every record made for it.
    if (!requestScope.active) return run(req, res);
    requestScope.run(
      () => requestInfo(req.method, req.url, connectionIdentity(req), req.socket.remoteAddress),
      () => run(req, res),
    );
  };
  server.on('request', serve);
  // Adding the `request` listener made Node install its compatibility layer as the one
  // `stream` listener; the command channel bypasses it (see the module doc).
  const compat = server.listeners('stream') as Listener[];
  if (compat.length === 1) {
    const toCompat = compat[0]!;
    server.removeListener('stream', toCompat);
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      const path = headers[':path'];
      if (headers[':method'] === 'POST' && typeof path === 'string' && path.startsWith('/v1/kms')) {
        serve(new StreamRequest(stream, headers, path), new StreamResponse(stream));
      } else {
        toCompat.call(server, stream, headers, ...rest);
      }
    });
  }
  server.on('sessionError', () => {}); // a client that breaks its connection is not our error
  server.on('tlsClientError', () => {});
  return server;
}

/**
 * The open connections of a server, for a graceful stop ({@link drainConnections}): HTTP/2
 * sessions, and HTTP/1.1 sockets with the number of their requests in flight (HTTP/1.1 only:
 * the hot path — HTTP/2 — pays nothing per request).
 */
class Connections {
  readonly sessions = new Set<http2.ServerHttp2Session>();
  readonly sockets = new Map<Socket, number>();
  draining = false;

  http1Request(req: Request, res: Response): void {
    const socket = req.socket;
    this.sockets.set(socket, (this.sockets.get(socket) ?? 0) + 1);
    // While draining, every HTTP/1.1 answer closes its connection.
    if (this.draining) (res as { shouldKeepAlive?: boolean }).shouldKeepAlive = false;
    res.once('close', () => {
      const n = (this.sockets.get(socket) ?? 1) - 1;
      if (!this.sockets.has(socket)) return;
      this.sockets.set(socket, n);
      if (n === 0 && this.draining) socket.end();
    });
  }
}

const connections = new WeakMap<Http2SecureServer, Connections>();

function trackConnections(server: Http2SecureServer): Connections {
  const c = new Connections();
  connections.set(server, c);
  server.on('session', (session: http2.ServerHttp2Session) => {
    if (c.draining) return void session.close();
    c.sessions.add(session);
    session.once('close', () => c.sessions.delete(session));
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') return;
    c.sockets.set(socket, 0);
    socket.once('close', () => c.sockets.delete(socket));
  });
  return c;
}

/** The highest HTTP/2 stream id (2^31 - 1). */
const MAX_STREAM_ID = 2 ** 31 - 1;

/** How long after its GOAWAY a session is closed by the server if the client keeps it open. */
const GOAWAY_GRACE_MS = 1_000;

/**
 * Starts a graceful stop of a server's connections (the listener is closed separately): every
 * HTTP/2 session gets a GOAWAY — every stream the client sent before it is served to the end;
 * the client sends later ones elsewhere, and after the grace the final GOAWAY refuses what
 * still comes, unprocessed — and HTTP/1.1 connections close when idle, or after the answer in
 * flight.
 *
 * Not `session.close()` right away: it destroys a session without open streams at once, and
 * the GOAWAY it queued may not be sent by then — the client's requests already on the wire are
 * then lost without a word (and a client cannot know whether a write among them was applied).
 * With the GOAWAY alone the client closes the connection itself once its streams are done;
 * sessions still open after {@link GOAWAY_GRACE_MS} are closed gracefully.
 */
export function drainConnections(server: Http2SecureServer): void {
  const c = connections.get(server);
  if (!c || c.draining) return;
  c.draining = true;
  // The first GOAWAY names the highest stream id there can be (RFC 9113 §6.8): the client opens
  // no new stream on the connection, and every stream already on the wire is served. A GOAWAY
  // naming the last stream processed so far would race with the client's streams in flight: a
  // stream that arrives after it is queued but before it is sent may still be processed while
  // the client, told it was refused, sends it again elsewhere — a write applied twice.
  // `session.close()` after the grace sends the final GOAWAY with the last stream processed.
  for (const session of c.sessions) {
    if (!session.closed && !session.destroyed) session.goaway(http2.constants.NGHTTP2_NO_ERROR, MAX_STREAM_ID);
  }
  setTimeout(() => {
    for (const session of c.sessions) session.close();
  }, GOAWAY_GRACE_MS).unref();
  for (const [socket, n] of c.sockets) if (n === 0) socket.end();
}

/** Ends what a drain left open (its deadline passed). */
export function destroyConnections(server: Http2SecureServer): void {
  const c = connections.get(server);
  if (!c) return;
  for (const session of c.sessions) session.destroy();
  for (const socket of c.sockets.keys()) socket.destroy();
}

/** Events of the raw HTTP/2 stream, shared by its request and response adapters. */
class OnStream {
  readonly stream: ServerHttp2Stream;

  constructor(stream: ServerHttp2Stream) {
    this.stream = stream;
  }

  on(event: string, listener: Listener): this {
    this.stream.on(event, listener);
    return this;
  }

  once(event: string, listener: Listener): this {
    this.stream.once(event, listener);
    return this;
  }
}

/** A request on a raw HTTP/2 stream (the command channel's fast path). */
class StreamRequest extends OnStream implements Request {
  readonly httpVersionMajor = 2;
  readonly headers: IncomingHttpHeaders;
  readonly url: string;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, path: string) {
    super(stream);
    this.headers = headers;
    this.url = path;
    // A peer that resets the stream makes it emit 'error'; that is not our error.
    stream.on('error', noop);
  }

  get method(): string {
    return this.headers[':method'] as string;
  }

  get socket(): Socket | TLSSocket {
    return this.stream.session!.socket;
  }

  removeAllListeners(event?: string): this {
    this.stream.removeAllListeners(event);
    if (event === undefined || event === 'error') this.stream.on('error', noop);
    return this;
  }

  resume(): this {
    this.stream.resume();
    return this;
  }
}

/**
 * The response on a raw HTTP/2 stream: like Node's Http2ServerResponse, it ignores writes to a
 * stream the client has already reset.
 */
class StreamResponse extends OnStream implements Response {
  statusCode = 200;
  #headers: OutgoingHttpHeaders | undefined;
  #length: number | undefined;

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get writableEnded(): boolean {
    return this.stream.writableEnded;
  }

  /** Whether the client (or the session) has ended the stream: nothing can be sent any more. */
  get #gone(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  /** `writeHead` + `end` of a whole body, in one go. */
  send(status: number, contentType: string, body: Buffer): void {
    const stream = this.stream;
    if (stream.headersSent) throw new Error('response headers already sent');
    this.statusCode = status;
    this.#length = body.length;
    if (this.#gone) return;
    stream.respond({ ':status': status, 'content-type': contentType, 'content-length': body.length });
    stream.end(body);
  }

  writeHead(status: number, headers: OutgoingHttpHeaders = {}): this {
    const stream = this.stream;
    if (stream.headersSent) throw new Error('response headers already sent');
    this.statusCode = status;
    this.#headers = headers;
    if (!this.#gone) stream.respond({ ...headers, ':status': status });
    return this;
  }

  write(chunk: Buffer | string): boolean {
    if (!this.stream.headersSent) this.writeHead(this.statusCode);
    return this.#gone ? false : this.stream.write(chunk);
  }

  end(chunk?: Buffer | string): this {
    if (!this.stream.headersSent) this.writeHead(this.statusCode);
    if (!this.#gone) this.stream.end(chunk);
    return this;
  }

  getHeader(name: string): number | string | string[] | undefined {
    if (name === 'content-length' && this.#length !== undefined) return this.#length;
    return this.#headers?.[name];
  }
}

function noop(): void {}

/**
 * Paths the WHATWG URL parser would return unchanged, so parsing can be skipped: segments of
 * safe characters that start with none of `.` (no dot segments), no query, no percent-encoding.
 */
const PLAIN_PATH = /^(?:\/[A-Za-z0-9_~-][A-Za-z0-9_~.-]*)+\/?$|^\/$/;
const NO_QUERY = new URLSearchParams();

/** Whether a request comes with a body (that a route without one will not read). */
function hasBody(req: Request): boolean {
  if (req.stream) return !req.stream.endAfterHeaders;
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

interface HandleContext {
  readonly opts: HttpServerOptions;
  readonly budget: BodyBudget;
}

/**
 * How much of a refused HTTP/1.1 body is still read (and discarded) for a clean answer: from a
 * caller that passed the pre-body check (a known identity whose body was too large, or whose
 * request failed) up to {@link DRAIN_KNOWN}; from anyone else a little.
 */
const DRAIN_KNOWN = 32 << 20;
const DRAIN_STRANGER = 64 << 10;
/** How long a connection closed under a body still arriving stays half-open: see {@link lingeringClose}. */
const LINGER_MS = 500;

/**
 * The client will not get to send the rest of its body. HTTP/2: once the answer is out, the
 * stream is ended (RST_STREAM NO_ERROR, RFC 9113 §8.1). HTTP/1.1 has no such signal: the rest is
 * read and discarded up to `drain` bytes (so that a client still writing gets to read the
 * answer) and the connection is closed beyond that bound — and after the answer, for a caller
 * that did not pass the pre-body check. Either close is a {@link lingeringClose}.
 */
function refuseBody(req: Request, res: Response, drain: number): void {
  const stream = req.stream;
  if (stream) {
    res.once('finish', () => {
      if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
    return;
  }
  const socket = req.socket;
  // Node closes a connection it does not keep alive with `destroySoon()`, at once after the
  // answer; this one's every close lingers instead.
  (socket as { destroySoon?: () => void }).destroySoon = () => lingeringClose(socket);
  // A known caller keeps its connection once the rest is read; anyone else loses it.
  if (drain < DRAIN_KNOWN) (res as { shouldKeepAlive?: boolean }).shouldKeepAlive = false;
  let drained = 0;
  let answered = false;
  res.once('finish', () => {
    answered = true;
    if (drained > drain) lingeringClose(socket);
  });
  req.removeAllListeners('data');
  req.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained <= drain) return;
    socket.pause();
    if (answered) lingeringClose(socket);
  });
  req.resume();
}

/**
 * Closes an HTTP/1.1 connection whose client may still be sending a body, so that the client
 * reads the answer: closing a socket with unread bytes makes the kernel send a reset, which can
 * overtake the answer and discard it from the client's receive buffer (a client writing 1 MiB
 * chunks lost the 403 in 299 of 300 tries). So: FIN after the answer, no more reading (the
 * client's writes stall in its own buffers and cost the node nothing), and the reset only
 * {@link LINGER_MS} later, as Go's and Apache's servers do. Lingering sockets still count
 * against the connection limits.
 */
function lingeringClose(socket: Socket | TLSSocket): void {
  if (socket.destroyed || socket.writableEnded) return;
  socket.pause();
  socket.end();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/**
 * Routes a request, decides whether its caller may send it (before its body), reads the body
 * and runs the handler; every failure, thrown or rejected, goes to `fail`. Synchronous as far as
 * the handler is: see {@link readBody}.
 */
function handle(req: Request, res: Response, hc: HandleContext, fail: (err: unknown) => void): void {
  const opts = hc.opts;
  const raw = req.url ?? '/';
  let pathname: string;
  let query: URLSearchParams;
  if (PLAIN_PATH.test(raw)) {
    pathname = raw;
    query = NO_QUERY;
  } else {
    let url: URL;
    try {
      url = new URL(raw, 'https://localhost');
    } catch {
      // An HTTP/1.1 request target the parser let through but that is no URL (`http://[`,
      // `//[`, a port above 65535): the client's error, not ours.
      throw new KmsError('ERR_BAD_REQUEST', 'invalid request target');
    }
    pathname = url.pathname;
    query = url.searchParams;
  }
  let route: Route | undefined;
  let param = '';
  let pathMatched = false;
  for (const r of opts.routes) {
    const hit = r.prefix ? pathname.startsWith(r.path) : pathname === r.path;
    if (!hit) continue;
    pathMatched = true;
    if (r.method !== req.method) continue;
    route = r;
    if (r.prefix) {
      try {
        param = decodeURIComponent(pathname.slice(r.path.length));
      } catch {
        refuseBody(req, res, DRAIN_STRANGER);
        throw new KmsError('ERR_BAD_REQUEST', 'invalid path encoding');
      }
    }
    break;
  }
  if (!route) {
    refuseBody(req, res, DRAIN_STRANGER);
    throw new KmsError(pathMatched ? 'ERR_METHOD_NOT_ALLOWED' : 'ERR_NOT_FOUND');
  }
  const identity = connectionIdentity(req);
  opts.observer?.routed(req, route, identity, param);
  const access: AccessContext = { req, res, identity, param, query };
  try {
    route.access(access);
  } catch (err) {
    refuseBody(req, res, DRAIN_STRANGER);
    throw err;
  }
  const handler = route.handler;
  const run = (body: Buffer) => {
    const done = handler({ req, res, identity, param, query, body });
    if (done !== undefined) done.catch(fail);
  };
  const body = route.body;
  if (!body) {
    if (hasBody(req)) refuseBody(req, res, DRAIN_STRANGER);
    else req.resume();
    return run(EMPTY);
  }
  const limits = {
    max: body.max ?? opts.limits.maxBody,
    timeout: opts.limits.bodyTimeout,
    budget: body.unbudgeted ? undefined : hc.budget,
    identity,
  };
  readBody(req, res, limits, (err, b) => {
    if (err !== undefined) {
      refuseBody(req, res, DRAIN_KNOWN);
      return fail(err);
    }
    try {
      run(b!);
    } catch (e) {
      fail(e);
    }
  });
}
