/**
 * Day-two operations in one place: metrics, the audit log, and the server log stream.
 *
 * - {@link Observability.http} is the HTTP server's observer: every request is counted, timed
 *   and sized (`minkms_http_*`), and requests by a client certificate to the SysAdmin endpoints
 *   outside the command channel (`/v1/db`, `/v1/root/rotate`, `/v1/debug/*`) are audited.
 * - {@link Observability.runCommands} wraps `dispatch` (the single entry of `POST /v1/kms`):
 *   each command frame is counted (`minkms_commands_total`), audited (by a caller with a
 *   client certificate: one line per frame that ran, and one line for the frame that failed,
 *   carrying the request's frame count — a request refused as a whole is one line) and logged
 *   (DEBUG; INFO for successful state changes; WARN for access denied).
 * - {@link Observability.serveMetrics} (`GET /v1/health/metrics`, Prometheus text) and
 *   {@link Observability.serveLog} (`POST /v1/debug/log`, the protobuf record stream
 *   `minkms logs` reads, kms-wire.md §2.1); who may call them is decided in server/routes.ts.
 *
 * Every name that comes from a client (object, enclave from the URL) is cut to
 * `MAX_FIELD` (server/log.ts) characters before it reaches a log record or an audit line.
 *
 * Nothing here ever sees request payloads beyond names: no key material, plaintext,
 * ciphertext or associated data reaches a metric, a log record or an audit line.
 */
import { randomUUID } from 'node:crypto';
import { isKmsError } from '../errors.js';
import { decodeMessage, encodeMessage } from '../protocol/schema.js';
import { LegacyLogRequestSchema, LogRecordSchema, LogRequestSchema, type LogRecordRequest } from '../protocol/messages.js';
import { Reader, WIRE_LEN } from '../protocol/pb.js';
import type { Kms } from '../kms/kms.js';
import { AuditLog, type AuditEvent, type AuditSink } from './audit.js';
import { mergeExpositions } from './metrics-merge.js';
import type { DispatchTrace } from './commands.js';
import { send, type HttpObserver, type Request, type RequestContext, type Response, type Route } from './http.js';
import { LogRing, clip, logEnabled, ringOf, type Level, type LogEntry, type Logger } from './log.js';
import { LOG_REQUEST, requestInfo, requestScope, type RequestInfo } from './log-context.js';
import type { NodeState } from './state.js';
import { Metrics } from './metrics.js';

const OCTET = 'application/octet-stream';
/** Largest protobuf LogRecord in the stream (the Go client refuses more than 4096 bytes). */
export const MAX_LOG_RECORD = 4092;
/** Bytes a slow log reader may fall behind before records are dropped. */
const MAX_STREAM_BACKLOG = 1 << 20;
/** Label of requests that matched no route. */
const UNMATCHED = 'unmatched';

/** What observability needs of the node (KmsNode has it). */
export interface NodeView {
  readonly state: Pick<NodeState, 'kind'> & { readonly kms?: Kms; readonly pending?: ReadonlyMap<string, string> };
  uptimeMs(): number;
}

export interface ObservabilityOptions {
  log: Logger;
  /** Audit log file (appended to, hash-chained); none = no audit log. */
  auditFile?: string;
  /** In a worker (docs/workers.md): the node's audit log, written by the primary (instead of `auditFile`). */
  auditSink?: AuditSink;
  /** In a worker: the finished requests of this worker, for the other workers' KES audit streams. */
  shareFinished?: (r: FinishedRequest) => void;
  /** In a worker: this worker opened (+1) or closed (-1) a KES audit stream. */
  finishedStreams?: (delta: number) => void;
  /** In a worker: every worker's own exposition of `kind`, merged into the node's by a scrape. */
  scrapeAll?: (kind: MetricsKind) => Promise<string[]>;
}

/** The two expositions a node serves: its own metrics and the KES API's. */
export type MetricsKind = 'kms' | 'kes';

/** Gauges that are the node's sum over its workers; the others are one worker's view of the node. */
const SUMMED_GAUGES: ReadonlySet<string> = new Set(['minkms_http_requests_inflight', 'minkms_log_streams']);

/** Where the observer keeps its per-request state on the request object. */
const STATE = Symbol('minkms.observability');
type Observed = Request & { [STATE]?: RequestState };

/** Per-request state of the HTTP observer. */
interface RequestState {
  t0: number;
  wall: number;
  /** Command name or route path: the `command` label. */
  label: string;
  /**
   * Set for audited requests: SysAdmin endpoints, and requests of the command channel until
   * their commands run (which audits them in detail): one refused before its body is one line.
   */
  audit: { identity: string; command: string; enclave: string; object: string } | undefined;
  /** The caller's identity ('' without a client certificate), once routed. */
  identity: string;
  /** The client's address, kept only while someone listens for finished requests. */
  ip: string;
  error: unknown;
}

/** One finished request, as {@link Observability.onFinished} listeners see it. */
export interface FinishedRequest {
  /** When it arrived, ms since the epoch. */
  readonly time: number;
  /** Its URL path (client text: clipped). */
  readonly path: string;
  readonly identity: string;
  readonly ip: string;
  readonly status: number;
  readonly seconds: number;
}

/** An API key (k1:, k2:, KES's kes:v1:) or HSM key where a name should be: never write it anywhere. */
const SECRET_LOOKING = /^(?:k[12]|hsm|kes):/i;
/** Routes audited per request (the command channel is audited per frame). */
const isAuditedRoute = (path: string) => path.startsWith('/v1/') && !path.startsWith('/v1/kms') && !path.startsWith('/v1/health/');

/** The domain's sizes for the gauges: one pass over the enclaves. */
function domainCounts(kms: Kms): { enclaves: number; keys: number; identities: number } {
  let enclaves = 0;
  let keys = 0;
  let identities = 0;
  let continueAt = '';
  do {
    const page = kms.listEnclaves('', continueAt, 1000);
    for (const e of page.items) {
      enclaves++;
      keys += e.keys.size;
      identities += e.identities.size;
    }
    continueAt = page.continueAt;
  } while (continueAt !== '');
  return { enclaves, keys, identities };
}

/**
 * The address of records made for no request. Every record carries a request (field 5): the
 * SDK MinIO pins dereferences it unconditionally and refuses a request whose address does not
 * parse as an IP, so "no request" is an empty method, path and identity with the unspecified
 * address.
 */
export const NO_REQUEST_IP = '0.0.0.0';

/** Field 5 of a record: its request, or the valid "no request". */
function recordRequest(r: RequestInfo | undefined): LogRecordRequest {
  if (!r) return { method: '', path: '', identity: '', ip: NO_REQUEST_IP };
  return { method: r.method, path: r.path, identity: r.identity, ip: r.ip === '' ? NO_REQUEST_IP : r.ip };
}

/**
 * Encodes one record of the `/v1/debug/log` stream: uint32 big-endian length + protobuf
 * LogRecord of at most {@link MAX_LOG_RECORD} bytes (the trace is dropped, then the message
 * cut at a character boundary and ended with `…`, until it fits).
 */
export function encodeLogFrame(e: LogEntry, withTrace: boolean): Buffer {
  let message = e.message;
  let trace = withTrace && e.trace ? e.trace : [];
  const request = recordRequest(e.request);
  let pb = encodeMessage(LogRecordSchema, { level: e.level, time: new Date(e.time), message, trace, request });
  for (let i = 0; pb.length > MAX_LOG_RECORD && i < 4; i++) {
    if (trace.length > 0) {
      trace = [];
    } else {
      const bytes = Buffer.from(message, 'utf8');
      let n = Math.max(0, bytes.length - (pb.length - MAX_LOG_RECORD) - 8);
      while (n > 0 && (bytes[n]! & 0xc0) === 0x80) n--;
      message = bytes.subarray(0, n).toString('utf8') + '…';
    }
    pb = encodeMessage(LogRecordSchema, { level: e.level, time: new Date(e.time), message, trace, request });
  }
  const out = Buffer.allocUnsafe(4 + pb.length);
  out.writeUInt32BE(pb.length, 0);
  out.set(pb, 4);
  return out;
}

/** What a log stream asks for, from either SDK generation's LogRequest. */
interface LogQuery {
  level: number;
  message: string;
  since: Date | undefined;
  traceLevel: number;
  /** Filters on the record's request (the pinned SDK's fields 4–7); empty = any. */
  method: string;
  path: string;
  identity: string;
  ip: string;
}

/**
 * Whether a LogRequest has the layout of the SDK generation MinIO pins: field 4 is a string
 * (the method filter) there and a sint32 (the trace level) in newer ones; fields 5–8 exist
 * only there.
 */
function isLegacyLogRequest(body: Buffer): boolean {
  try {
    const r = new Reader(body);
    while (r.more()) {
      const tag = r.tag();
      const no = tag >>> 3;
      if ((no === 4 && (tag & 7) === WIRE_LEN) || (no >= 5 && no <= 8)) return true;
      r.skip(tag & 7);
    }
  } catch {
    // malformed: the decoder below says so
  }
  return false;
}

/** Decodes a LogRequest of either layout (kms-wire.md §2.6). */
export function decodeLogQuery(body: Buffer): LogQuery {
  if (isLegacyLogRequest(body)) {
    const q = decodeMessage(LegacyLogRequestSchema, body);
    return { ...q, method: clip(q.method), path: clip(q.path), identity: clip(q.identity), ip: clip(q.ip), message: clip(q.message) };
  }
  const q = decodeMessage(LogRequestSchema, body);
  return { ...q, message: clip(q.message), method: '', path: '', identity: '', ip: '' };
}

/** Whether a record passes a stream's filters. */
function matches(q: LogQuery, e: LogEntry): boolean {
  if (e.level < q.level) return false;
  if (q.message !== '' && !e.message.includes(q.message)) return false;
  if (q.method === '' && q.path === '' && q.identity === '' && q.ip === '') return true;
  const r = e.request;
  if (!r) return false;
  return (
    (q.method === '' || r.method === q.method) &&
    (q.path === '' || r.path === q.path) &&
    (q.identity === '' || r.identity === q.identity) &&
    (q.ip === '' || sameIp(r.ip, q.ip))
  );
}

/** IP equality that sees `::ffff:1.2.3.4` (how Node reports IPv4 on a dual-stack socket) as `1.2.3.4`. */
function sameIp(a: string, b: string): boolean {
  const plain = (ip: string) => (ip.toLowerCase().startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip.toLowerCase());
  return plain(a) === plain(b);
}

export class Observability {
  readonly log: Logger;
  readonly ring: LogRing;
  readonly metrics: Metrics;
  readonly audit: AuditSink | undefined;
  readonly http: HttpObserver;
  #node: NodeView | undefined;
  readonly #streams = new Set<Response>();
  readonly #finished = new Set<(r: FinishedRequest) => void>();
  /** The KES audit streams: they also see the finished requests of the node's other workers. */
  readonly #finishedStreamSubs = new Set<(r: FinishedRequest) => void>();
  readonly #shareFinished: ((r: FinishedRequest) => void) | undefined;
  readonly #finishedStreams: ((delta: number) => void) | undefined;
  readonly #scrapeAll: ((kind: MetricsKind) => Promise<string[]>) | undefined;
  readonly #expositions = new Map<MetricsKind, () => Promise<string>>();
  readonly #started = performance.now();

  constructor(opts: ObservabilityOptions) {
    this.log = opts.log;
    this.ring = ringOf(opts.log) ?? new LogRing();
    const file = opts.auditSink ? undefined : opts.auditFile ? AuditLog.open(opts.auditFile) : undefined;
    if (file) {
      let reported = 0;
      file.onError = (err) => {
        // One log line per 100 failures: a full disk must not flood the log too.
        if (reported++ % 100 === 0) this.log.error('cannot write the audit log', { file: opts.auditFile, err: err.message });
      };
    }
    this.audit = opts.auditSink ?? file;
    this.#shareFinished = opts.shareFinished;
    this.#finishedStreams = opts.finishedStreams;
    this.#scrapeAll = opts.scrapeAll;
    this.#expositions.set('kms', async () => (await this.metrics.scrape()).text);
    this.metrics = new Metrics({
      sealed: () => this.#node?.state.kind !== 'unsealed',
      pendingHsms: () => this.#node?.state.pending?.size ?? 0,
      uptimeSeconds: () => (this.#node ? this.#node.uptimeMs() : performance.now() - this.#started) / 1000,
      counts: () => {
        const kms = this.#node?.state.kms;
        return kms ? domainCounts(kms) : undefined;
      },
      logStreams: () => this.#streams.size,
      auditRecords: () => this.audit?.records ?? 0,
      auditErrors: () => this.audit?.errors ?? 0,
    });
    this.http = {
      request: (req, res) => this.#request(req, res),
      routed: (req, route, identity, param) => this.#routed(req, route, identity, param),
      failed: (req, err) => {
        const st = (req as Observed)[STATE];
        if (st) st.error = err;
      },
    };
  }

  /** Connects the node whose state the gauges read. */
  attach(node: NodeView): void {
    this.#node = node;
  }

  // ------------------------------------------------------------------ HTTP observer

  #request(req: Request, res: Response): void {
    const st: RequestState = {
      t0: performance.now(),
      wall: Date.now(),
      label: UNMATCHED,
      audit: undefined,
      identity: '',
      ip: '',
      error: undefined,
    };
    if (this.#finished.size > 0 || this.#shareFinished) st.ip = req.socket.remoteAddress ?? '';
    (req as Observed)[STATE] = st;
    this.metrics.inflight++;
    res.on('close', () => this.#finish(req, res, st));
  }

  #routed(req: Request, route: Route, identity: string, param: string): void {
    const st = (req as Observed)[STATE];
    if (!st) return;
    // A prefix route's path is the label, never the client's rest of the URL.
    st.label = route.path;
    st.identity = identity;
    if (identity === '' || !this.audit) return;
    if (route.path.startsWith('/v1/kms')) st.audit = { identity, command: 'POST /v1/kms', enclave: clip(param), object: '' };
    else if (isAuditedRoute(route.path)) st.audit = { identity, command: `${req.method} ${route.path}`, enclave: '', object: '' };
  }

  /**
   * Names what an audited request outside the command channel is about — its command, enclave
   * and object — for its audit line (the KES API names the command its path stands for).
   */
  describe(req: Request, what: { command: string; enclave: string; object: string }): void {
    const st = (req as Observed)[STATE];
    if (!st?.audit) return;
    const object = SECRET_LOOKING.test(what.object) ? '[REDACTED]' : clip(what.object);
    st.audit = { identity: st.audit.identity, command: what.command, enclave: clip(what.enclave), object };
  }

  /** Calls `fn` for every request this process finishes (the KES metrics); returns the unsubscribe. */
  onFinished(fn: (r: FinishedRequest) => void): () => void {
    this.#finished.add(fn);
    return () => this.#finished.delete(fn);
  }

  /**
   * Calls `fn` for every request the node finishes — in every worker process (docs/workers.md)
   * — for the KES audit stream; returns the unsubscribe.
   */
  streamFinished(fn: (r: FinishedRequest) => void): () => void {
    this.#finishedStreamSubs.add(fn);
    const stop = this.onFinished(fn);
    this.#finishedStreams?.(+1);
    return () => {
      if (!this.#finishedStreamSubs.delete(fn)) return;
      stop();
      this.#finishedStreams?.(-1);
    };
  }

  /** A request another worker of the node finished. */
  remoteFinished(r: FinishedRequest): void {
    for (const fn of this.#finishedStreamSubs) fn(r);
  }

  /** Counts a streaming response among the open log streams, ended by {@link endStreams}. */
  trackStream(res: Response): void {
    this.#streams.add(res);
    res.once('close', () => this.#streams.delete(res));
  }

  #finish(req: Request, res: Response, st: RequestState): void {
    const m = this.metrics;
    m.inflight--;
    const status = res.statusCode;
    const seconds = (performance.now() - st.t0) / 1000;
    m.requests.inc(st.label, status);
    m.duration.observe(st.label, seconds);
    const reqLength = req.headers['content-length'];
    if (reqLength !== undefined) m.requestSize.observe('', Number(reqLength));
    const resLength = res.getHeader('content-length');
    if (resLength !== undefined) m.responseSize.observe('', Number(resLength));
    if (!res.writableEnded) m.canceled.inc(st.label);
    if (this.#finished.size > 0 || this.#shareFinished) {
      const r: FinishedRequest = {
        time: st.wall,
        path: clip((req.url ?? '').split('?')[0]!),
        identity: st.identity,
        ip: st.ip,
        status,
        seconds,
      };
      for (const fn of this.#finished) fn(r);
      this.#shareFinished?.(r);
    }
    if (st.audit) {
      const err = st.error;
      const outcome =
        err === undefined && status < 400 ? 'ok' : isKmsError(err) ? err.code : err === undefined ? `HTTP_${status}` : 'ERR_INTERNAL';
      this.audit!.append({
        time: new Date(st.wall).toISOString(),
        identity: st.audit.identity,
        enclave: st.audit.enclave,
        command: st.audit.command,
        object: st.audit.object,
        outcome,
        status,
        latency_ms: seconds * 1000,
        request_id: randomUUID(),
      });
    }
  }

  // ------------------------------------------------------------------ command channel

  /**
   * Runs the commands of one `POST /v1/kms` request through `run` (which calls `dispatch`
   * with the trace) and records what happened, whether it succeeded or threw.
   */
  runCommands(
    req: Request,
    identity: string,
    enclave: string,
    run: (trace: DispatchTrace) => Buffer | Promise<Buffer>,
  ): Buffer | Promise<Buffer> {
    const trace: DispatchTrace = { command: undefined, frames: 0, objects: [], done: 0, ends: [] };
    // From here the commands are audited in detail, not the request.
    const st = (req as Observed)[STATE];
    if (st) st.audit = undefined;
    const t0 = performance.now();
    let out: Buffer | Promise<Buffer>;
    try {
      out = run(trace);
    } catch (err) {
      this.#commandsDone(req, identity, enclave, trace, t0, true, err);
      throw err;
    }
    if (out instanceof Promise) {
      return out.then(
        (body) => {
          this.#commandsDone(req, identity, enclave, trace, t0, false, undefined);
          return body;
        },
        (err: unknown) => {
          this.#commandsDone(req, identity, enclave, trace, t0, true, err);
          throw err;
        },
      );
    }
    this.#commandsDone(req, identity, enclave, trace, t0, false, undefined);
    return out;
  }

  #commandsDone(req: Request, identity: string, url: string, trace: DispatchTrace, t0: number, failed: boolean, err: unknown): void {
    const status = !failed ? 200 : isKmsError(err) ? err.status : 500;
    const outcome = !failed ? 'ok' : isKmsError(err) ? err.code : 'ERR_INTERNAL';
    const cmd = trace.command;
    const st = (req as Observed)[STATE];
    if (cmd) {
      this.metrics.commands.inc(cmd.name, status, trace.frames);
      if (st) st.label = cmd.name;
    }
    const now = performance.now();
    const enclave = clip(url);
    const objectOf = (i: number) => {
      const object = trace.objects[i] ?? '';
      return SECRET_LOOKING.test(object) ? '[REDACTED]' : clip(object);
    };
    let requestId: string | undefined;

    if (this.audit && identity !== '') {
      requestId = randomUUID();
      const time = new Date(st?.wall ?? Date.now() - (now - t0)).toISOString();
      const line = (object: string, result: string, latency: number, frames?: number): AuditEvent => ({
        time,
        identity,
        enclave,
        command: cmd?.name ?? '',
        object,
        outcome: result,
        status,
        latency_ms: latency,
        request_id: requestId!,
        ...(frames === undefined ? {} : { frames }),
        ...(trace.privilege ? { privilege: trace.privilege } : {}),
      });
      // One line per frame that ran; the frame that failed gets one line with the request's
      // frame count (the rest did not run), so a request refused as a whole is one line.
      let prevEnd = t0;
      for (let i = 0; i < trace.done; i++) {
        const end = trace.ends[i]!;
        this.audit.append(line(objectOf(i), 'ok', end - prevEnd));
        prevEnd = end;
      }
      if (failed) this.audit.append(line(objectOf(trace.done), outcome, now - prevEnd, trace.frames));
    }

    // Log: access denied to a known caller → WARN, successful state changes → INFO, rest DEBUG.
    const level: Level = status === 403 && identity !== '' ? 'warn' : !failed && cmd?.write ? 'info' : 'debug';
    if (logEnabled(this.log, level)) {
      this.log[level](cmd?.name ?? 'invalid command request', {
        enclave,
        object: objectOf(failed ? trace.done : 0),
        frames: trace.frames,
        outcome,
        status,
        identity,
        latency_ms: Math.round((now - t0) * 1000) / 1000,
        request_id: requestId ?? randomUUID(),
        [LOG_REQUEST]: requestInfo(req.method, req.url, identity, req.socket.remoteAddress),
      });
    }
  }

  // ------------------------------------------------------------------ endpoints

  /** Serves the exposition of `kind` (the KES API's `/v1/metrics`). */
  provideExposition(kind: MetricsKind, text: () => string): void {
    this.#expositions.set(kind, async () => text());
  }

  /** This process's own exposition of `kind` ('' if none). */
  async ownExposition(kind: MetricsKind): Promise<string> {
    return (await this.#expositions.get(kind)?.()) ?? '';
  }

  /** The node's exposition of `kind`: in a node of several workers, merged over all of them. */
  async exposition(kind: MetricsKind): Promise<string> {
    if (!this.#scrapeAll) return this.ownExposition(kind);
    return mergeExpositions(await this.#scrapeAll(kind), { sumGauges: SUMMED_GAUGES });
  }

  /** `GET /v1/health/metrics` (who may scrape is decided by the route). */
  async serveMetrics({ res }: RequestContext): Promise<void> {
    send(res, 200, await this.exposition('kms'), this.metrics.contentType);
  }

  /**
   * `POST /v1/debug/log`: streams log records ≥ `level` whose message contains `message`: first
   * the stored ones since `since` (if set), then new ones, until the client goes away or the
   * server stops.
   */
  serveLog({ res, body }: RequestContext): void {
    const q = decodeLogQuery(body);
    const match = (e: LogEntry) => matches(q, e);
    res.writeHead(200, { 'content-type': OCTET });
    (res as unknown as { flushHeaders?: () => void }).flushHeaders?.();

    let backlog = 0;
    let dropped = 0;
    const write = (e: LogEntry) => {
      if (!match(e)) return;
      if (backlog > MAX_STREAM_BACKLOG) {
        dropped++;
        return;
      }
      const frame = encodeLogFrame(e, e.level >= q.traceLevel);
      if (!res.write(frame)) {
        if (backlog === 0) {
          res.once('drain', () => {
            backlog = 0;
            if (dropped > 0) {
              write({ level: 4, time: Date.now(), message: `log stream: ${dropped} records dropped (slow reader)` });
              dropped = 0;
            }
          });
        }
        backlog += frame.length;
      }
    };
    if (q.since) for (const e of this.ring.since(q.since.getTime())) write(e);
    const unsubscribe = this.ring.subscribe(q.level, write);
    this.#streams.add(res);
    // While a stream is open, every request runs in a scope its records can name (log-context.ts).
    requestScope.setStreams(this.#streams.size);
    res.once('close', () => {
      unsubscribe();
      this.#streams.delete(res);
      requestScope.setStreams(this.#streams.size);
    });
  }

  // ------------------------------------------------------------------ shutdown

  /** Ends the open log streams (so that the server can close its connections). */
  endStreams(): void {
    for (const res of this.#streams) res.end();
    this.#streams.clear();
    requestScope.setStreams(0);
  }

  /** Ends the log streams and flushes and closes the audit log. */
  close(): void {
    this.endStreams();
    this.audit?.close();
  }
}
