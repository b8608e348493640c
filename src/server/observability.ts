/**
 * Day-two operations in one place: metrics, the audit log, and the server log stream.
 *
 * - {@link Observability.http} is the HTTP server's observer: every request is counted, timed
 *   and sized (`minkms_http_*`), and requests by a client certificate to the SysAdmin endpoints
 *   outside the command channel (`/v1/db`, `/v1/root/rotate`, `/v1/debug/*`) are audited.
 * - {@link Observability.runCommands} wraps `dispatch` (the single entry of `POST /v1/kms`):
 *   each command frame is counted (`minkms_commands_total`), audited (one line per frame, by
 *   a caller with a client certificate, success or failure) and logged (DEBUG; INFO for
 *   successful state changes; WARN for access denied).
 * - {@link Observability.routes}: `GET /v1/health/metrics` (Prometheus text; a SysAdmin
 *   client certificate unless `metricsUnauthenticated`) and `POST /v1/debug/log` (SysAdmin;
 *   the protobuf record stream `minkms logs` reads, kms-wire.md §2.1).
 *
 * Nothing here ever sees request payloads beyond names: no key material, plaintext,
 * ciphertext or associated data reaches a metric, a log record or an audit line.
 */
import { randomUUID } from 'node:crypto';
import { KmsError, isKmsError } from '../errors.js';
import { decodeMessage, encodeMessage } from '../protocol/schema.js';
import { LogRecordSchema, LogRequestSchema } from '../protocol/messages.js';
import type { Kms } from '../kms/kms.js';
import { AuditLog } from './audit.js';
import type { DispatchTrace } from './dispatch.js';
import { send, type HttpObserver, type Request, type RequestContext, type Response, type Route } from './http.js';
import { LogRing, logEnabled, ringOf, type Level, type LogEntry, type Logger } from './log.js';
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
  readonly kms: Kms | undefined;
  uptimeMs(): number;
  readonly opts: { readonly config: { readonly admin: { readonly identity?: string } } };
}

export interface ObservabilityOptions {
  log: Logger;
  /** Audit log file (appended to, hash-chained); none = no audit log. */
  auditFile?: string;
  /** Serve `/v1/health/metrics` to anyone (default: SysAdmin client certificate required). */
  metricsUnauthenticated?: boolean;
}

/** Where the observer keeps its per-request state on the request object. */
const STATE = Symbol('minkms.observability');
type Observed = Request & { [STATE]?: RequestState };

/** Per-request state of the HTTP observer. */
interface RequestState {
  t0: number;
  wall: number;
  /** Command name or route path: the `command` label. */
  label: string;
  /** Set for audited SysAdmin endpoints. */
  audit: { identity: string; command: string } | undefined;
  error: unknown;
}

/** An API or HSM key where a name should be: never write it anywhere. */
const SECRET_LOOKING = /^(?:k[12]|hsm):/i;
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
 * Encodes one record of the `/v1/debug/log` stream: uint32 big-endian length + protobuf
 * LogRecord of at most {@link MAX_LOG_RECORD} bytes (the trace is dropped, then the message
 * cut at a character boundary and ended with `…`, until it fits).
 */
export function encodeLogFrame(e: LogEntry, withTrace: boolean): Buffer {
  let message = e.message;
  let trace = withTrace && e.trace ? e.trace : [];
  let pb = encodeMessage(LogRecordSchema, { level: e.level, time: new Date(e.time), message, trace });
  for (let i = 0; pb.length > MAX_LOG_RECORD && i < 4; i++) {
    if (trace.length > 0) {
      trace = [];
    } else {
      const bytes = Buffer.from(message, 'utf8');
      let n = Math.max(0, bytes.length - (pb.length - MAX_LOG_RECORD) - 8);
      while (n > 0 && (bytes[n]! & 0xc0) === 0x80) n--;
      message = bytes.subarray(0, n).toString('utf8') + '…';
    }
    pb = encodeMessage(LogRecordSchema, { level: e.level, time: new Date(e.time), message, trace });
  }
  const out = Buffer.allocUnsafe(4 + pb.length);
  out.writeUInt32BE(pb.length, 0);
  out.set(pb, 4);
  return out;
}

export class Observability {
  readonly log: Logger;
  readonly ring: LogRing;
  readonly metrics: Metrics;
  readonly audit: AuditLog | undefined;
  readonly metricsUnauthenticated: boolean;
  readonly http: HttpObserver;
  #node: NodeView | undefined;
  readonly #streams = new Set<Response>();
  readonly #started = performance.now();

  constructor(opts: ObservabilityOptions) {
    this.log = opts.log;
    this.ring = ringOf(opts.log) ?? new LogRing();
    this.metricsUnauthenticated = opts.metricsUnauthenticated === true;
    this.audit = opts.auditFile ? AuditLog.open(opts.auditFile) : undefined;
    if (this.audit) {
      let reported = 0;
      this.audit.onError = (err) => {
        // One log line per 100 failures: a full disk must not flood the log too.
        if (reported++ % 100 === 0) this.log.error('cannot write the audit log', { file: opts.auditFile, err: err.message });
      };
    }
    this.metrics = new Metrics({
      sealed: () => !this.#node?.kms,
      uptimeSeconds: () => (this.#node ? this.#node.uptimeMs() : performance.now() - this.#started) / 1000,
      counts: () => (this.#node?.kms ? domainCounts(this.#node.kms) : undefined),
      logStreams: () => this.#streams.size,
      auditRecords: () => this.audit?.records ?? 0,
      auditErrors: () => this.audit?.errors ?? 0,
    });
    this.http = {
      request: (req, res) => this.#request(req, res),
      routed: (req, route, identity) => this.#routed(req, route, identity),
      failed: (req, err) => {
        const st = (req as Observed)[STATE];
        if (st) st.error = err;
      },
    };
  }

  /** Connects the node whose state the gauges and the SysAdmin checks read. */
  attach(node: NodeView): void {
    this.#node = node;
  }

  // ------------------------------------------------------------------ HTTP observer

  #request(req: Request, res: Response): void {
    const st: RequestState = { t0: performance.now(), wall: Date.now(), label: UNMATCHED, audit: undefined, error: undefined };
    (req as Observed)[STATE] = st;
    this.metrics.inflight++;
    res.on('close', () => this.#finish(req, res, st));
  }

  #routed(req: Request, route: Route, identity: string): void {
    const st = (req as Observed)[STATE];
    if (!st) return;
    st.label = route.path;
    if (identity !== '' && this.audit && isAuditedRoute(route.path)) st.audit = { identity, command: `${req.method} ${route.path}` };
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
    if (st.audit) {
      const err = st.error;
      const outcome =
        err === undefined && status < 400 ? 'ok' : isKmsError(err) ? err.code : err === undefined ? `HTTP_${status}` : 'ERR_INTERNAL';
      this.audit!.append({
        time: new Date(st.wall).toISOString(),
        identity: st.audit.identity,
        enclave: '',
        command: st.audit.command,
        object: '',
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

  #commandsDone(req: Request, identity: string, enclave: string, trace: DispatchTrace, t0: number, failed: boolean, err: unknown): void {
    const status = !failed ? 200 : isKmsError(err) ? err.status : 500;
    const outcome = !failed ? 'ok' : isKmsError(err) ? err.code : 'ERR_INTERNAL';
    const cmd = trace.command;
    const st = (req as Observed)[STATE];
    if (cmd) {
      this.metrics.commands.inc(cmd.name, status, trace.frames);
      if (st) st.label = cmd.name;
    }
    const now = performance.now();
    let requestId: string | undefined;

    if (this.audit && identity !== '') {
      requestId = randomUUID();
      const time = new Date(st?.wall ?? Date.now() - (now - t0)).toISOString();
      const n = cmd ? Math.max(trace.frames, 1) : 1;
      let prevEnd = t0;
      for (let i = 0; i < n; i++) {
        let result = 'skipped';
        let latency = 0;
        if (i < trace.done) {
          result = failed && trace.done === n && i === n - 1 ? outcome : 'ok';
          latency = trace.ends[i]! - prevEnd;
          prevEnd = trace.ends[i]!;
        } else if (i === trace.done) {
          result = outcome;
          latency = now - prevEnd;
        }
        const object = trace.objects[i] ?? trace.objectAt?.(i) ?? '';
        this.audit.append({
          time,
          identity,
          enclave,
          command: cmd?.name ?? '',
          object: SECRET_LOOKING.test(object) ? '[REDACTED]' : object,
          outcome: result,
          status,
          latency_ms: latency,
          request_id: requestId,
        });
      }
    }

    // Log: access denied to a known caller → WARN, successful state changes → INFO, rest DEBUG.
    const level: Level = status === 403 && identity !== '' ? 'warn' : !failed && cmd?.write ? 'info' : 'debug';
    if (logEnabled(this.log, level)) {
      const object = trace.objects[0] ?? trace.objectAt?.(0) ?? '';
      this.log[level](cmd?.name ?? 'invalid command request', {
        enclave,
        object: SECRET_LOOKING.test(object) ? '[REDACTED]' : object,
        frames: trace.frames,
        outcome,
        status,
        identity,
        latency_ms: Math.round((now - t0) * 1000) / 1000,
        request_id: requestId ?? randomUUID(),
      });
    }
  }

  // ------------------------------------------------------------------ endpoints

  /** SysAdmin only; while sealed, the configured admin identity (if any) still may. */
  #requireSysAdmin(identity: string): void {
    if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
    const node = this.#node;
    const kms = node?.kms;
    if (!kms) {
      if (node?.opts.config.admin.identity === identity) return;
      throw new KmsError('ERR_SEALED');
    }
    if (!kms.isSysAdmin(identity)) throw new KmsError('ERR_NOT_ALLOWED');
  }

  /** `GET /v1/health/metrics` and `POST /v1/debug/log`. */
  routes(): Route[] {
    return [
      { method: 'GET', path: '/v1/health/metrics', handler: (ctx) => this.#serveMetrics(ctx) },
      { method: 'POST', path: '/v1/debug/log', body: true, authenticated: true, handler: (ctx) => this.#serveLog(ctx) },
    ];
  }

  async #serveMetrics({ res, identity }: RequestContext): Promise<void> {
    if (!this.metricsUnauthenticated) this.#requireSysAdmin(identity);
    const { text, contentType } = await this.metrics.scrape();
    send(res, 200, text, contentType);
  }

  /**
   * Streams log records ≥ `level` whose message contains `message`: first the stored ones
   * since `since` (if set), then new ones, until the client goes away or the server stops.
   */
  #serveLog({ res, identity, body }: RequestContext): void {
    this.#requireSysAdmin(identity);
    const q = decodeMessage(LogRequestSchema, body);
    const match = (e: LogEntry) => e.level >= q.level && (q.message === '' || e.message.includes(q.message));
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
    res.once('close', () => {
      unsubscribe();
      this.#streams.delete(res);
    });
  }

  // ------------------------------------------------------------------ shutdown

  /** Ends the open log streams (so that the server can close its connections). */
  endStreams(): void {
    for (const res of this.#streams) res.end();
    this.#streams.clear();
  }

  /** Ends the log streams and flushes and closes the audit log. */
  close(): void {
    this.endStreams();
    this.audit?.close();
  }
}
