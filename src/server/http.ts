/**
 * The HTTPS front end: a `node:http2` secure server with HTTP/1.1 fallback, mutual TLS with
 * client certificates requested but not CA-verified (the identity is the certificate's public
 * key hash, checked against the enclave's identities), and the route table.
 *
 * Errors are turned into responses in exactly one place, `sendError`.
 */
import * as http2 from 'node:http2';
import { type Http2ServerRequest, type Http2ServerResponse, type Http2SecureServer } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { identityOfCertificate } from '../identity/identity.js';
import { KmsError, isKmsError } from '../protocol/errors.js';
import type { Logger } from './log.js';

export type Request = Http2ServerRequest;
export type Response = Http2ServerResponse;

export interface Limits {
  /** Maximum request body in bytes. */
  maxBody: number;
  /** Maximum command frames in one request. */
  maxFrames: number;
  /** Time allowed to receive a request body, in ms. */
  bodyTimeout: number;
}


export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Exact path, or a prefix ending in `/` matched with the rest as `param`. */
  path: string;
  prefix?: boolean;
  handler: (ctx: RequestContext) => void | Promise<void>;
  /** Whether the handler needs the body (read up to the limit before calling it). */
  body?: boolean;
  /** Body limit of this route, if not the server's. */
  maxBody?: number;
  /** Requires a client certificate: refused with 403 before any body is read. */
  authenticated?: boolean;
}

export interface RequestContext {
  readonly req: Request;
  readonly res: Response;
  /** `h1:` identity of the client certificate, or '' without one. */
  readonly identity: string;
  /** The rest of the path after a prefix route, percent-decoded. */
  readonly param: string;
  readonly query: URLSearchParams;
  readonly body: Buffer;
}

const identities = new WeakMap<object, string>();

/** The identity of the connection, computed once per TLS connection. */
function connectionIdentity(req: Request): string {
  // HTTP/2: one session per connection; HTTP/1.1: req.socket is the TLS socket itself.
  const owner: object = req.httpVersionMajor === 2 ? req.stream.session! : req.socket;
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
  res.writeHead(status, { 'content-type': contentType, 'content-length': buf.length });
  res.end(buf);
}

export function sendError(res: Response, err: unknown, log: Logger): void {
  let e: KmsError;
  if (isKmsError(err)) {
    e = err;
  } else {
    const id = randomUUID();
    log.error('internal error', { requestId: id, err: err instanceof Error ? err.stack ?? err.message : String(err) });
    e = new KmsError('ERR_INTERNAL', `request id ${id}`);
  }
  if (res.headersSent || res.stream?.destroyed) return;
  // `application/json` exactly: the SDK decodes {"message": …} only for this content type.
  send(res, e.status, JSON.stringify({ message: e.message }), 'application/json');
}

function readBody(req: Request, limits: Limits): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limits.maxBody) return Promise.reject(new KmsError('ERR_TOO_LARGE'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => fail(new KmsError('ERR_TIMEOUT')), limits.bodyTimeout);
    const fail = (err: unknown) => {
      clearTimeout(timer);
      req.removeAllListeners('data');
      req.resume();
      reject(err);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limits.maxBody) return fail(new KmsError('ERR_TOO_LARGE'));
      chunks.push(chunk);
    });
    req.once('end', () => {
      clearTimeout(timer);
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
    req.once('error', fail);
    req.once('aborted', () => fail(new KmsError('ERR_BAD_REQUEST', 'request aborted')));
  });
}

const EMPTY = Buffer.alloc(0);

/** Sees every request (metrics, audit); see server/observability.ts. */
export interface HttpObserver {
  /** A request arrived (before routing). */
  request(req: Request, res: Response): void;
  /** Its route and caller are known (before the body is read). */
  routed(req: Request, route: Route, identity: string): void;
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

export function createHttpServer(opts: HttpServerOptions): Http2SecureServer {
  const server = http2.createSecureServer({
    cert: opts.cert,
    key: opts.key,
    ca: opts.ca,
    allowHTTP1: true,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
  });
  server.setTimeout(120_000, () => {});
  const observer = opts.observer;
  server.on('request', (req: Request, res: Response) => {
    observer?.request(req, res);
    handle(req, res, opts).catch((err: unknown) => {
      observer?.failed(req, err);
      sendError(res, err, opts.log);
    });
  });
  server.on('sessionError', () => {}); // a client that breaks its connection is not our error
  server.on('tlsClientError', () => {});
  return server;
}

async function handle(req: Request, res: Response, opts: HttpServerOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'https://localhost');
  let route: Route | undefined;
  let param = '';
  let pathMatched = false;
  for (const r of opts.routes) {
    const hit = r.prefix ? url.pathname.startsWith(r.path) : url.pathname === r.path;
    if (!hit) continue;
    pathMatched = true;
    if (r.method !== req.method) continue;
    route = r;
    if (r.prefix) {
      try {
        param = decodeURIComponent(url.pathname.slice(r.path.length));
      } catch {
        throw new KmsError('ERR_BAD_REQUEST', 'invalid path encoding');
      }
    }
    break;
  }
  if (!route) throw new KmsError(pathMatched ? 'ERR_METHOD_NOT_ALLOWED' : 'ERR_NOT_FOUND');
  const identity = connectionIdentity(req);
  opts.observer?.routed(req, route, identity);
  if (route.authenticated && identity === '') {
    req.resume();
    throw new KmsError('ERR_NOT_ALLOWED');
  }
  const body = route.body ? await readBody(req, route.maxBody ? { ...opts.limits, maxBody: route.maxBody } : opts.limits) : EMPTY;
  if (!route.body) req.resume();
  await route.handler({ req, res, identity, param, query: url.searchParams, body });
}
