/**
 * Server log: pino, one JSON object per line on stderr (`journalctl -u minkms` keeps them), with
 * a level threshold. Never log key material, plaintexts or API keys; as a safety net, fields
 * named like secrets ({@link REDACTED_FIELDS}) are replaced by `[REDACTED]` in every output.
 *
 * Besides stderr, every record goes to a bounded in-memory ring ({@link LogRing}, the last
 * 10,000 records) and to live subscribers: that is what `POST /v1/debug/log` (`minkms logs`)
 * streams. Subscribers may ask for a lower level than the server logs (e.g. DEBUG while the
 * server runs at INFO); such records reach them but neither stderr nor the ring.
 *
 * Levels on the wire are Go slog levels: Debug −4, Info 0, Warn 4, Error 8.
 */
import { pino, stdTimeFunctions, type DestinationStream, type Logger as Pino } from 'pino';
import type { StackFrame } from '../protocol/messages.js';
import { LOG_REQUEST, requestScope, type RequestInfo } from './log-context.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';

/** pino level names → slog levels. */
export const SLOG_LEVEL: Readonly<Record<Level, number>> = { debug: -4, info: 0, warn: 4, error: 8 };

/** slog level → name (`DEBUG`, `INFO`, `WARN`, `ERROR`; in-between values as `INFO+2`, like slog). */
export function slogLevelName(level: number): string {
  const base = level < 0 ? ['DEBUG', -4] : level < 4 ? ['INFO', 0] : level < 8 ? ['WARN', 4] : ['ERROR', 8];
  const delta = level - (base[1] as number);
  return delta === 0 ? (base[0] as string) : `${base[0]}${delta > 0 ? '+' : ''}${delta}`;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Longest client-supplied string kept in a log record, an audit line or an error message. */
export const MAX_FIELD = 256;

/**
 * `s` cut to `max` characters (and marked with `…` and its full length): every string that may
 * come from a client — names, enclaves from the URL, messages — passes here before it reaches a
 * log, an audit line or an error, so that no request can make them large.
 */
export function clip(s: string, max = MAX_FIELD): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(${s.length} chars)`;
}

/** Field names whose values never reach any log output (case-sensitive, at any depth). */
export const REDACTED_FIELDS: readonly string[] = [
  'apiKey',
  'api_key',
  'apikey',
  'APIKey',
  'key',
  'hsmKey',
  'hsm_key',
  'privateKey',
  'private_key',
  'secret',
  'password',
  'token',
  'authorization',
  'plaintext',
  'Plaintext',
  'dek',
  'material',
  'keyMaterial',
];
const REDACTED = new Set(REDACTED_FIELDS);
const CENSOR = '[REDACTED]';

/** One record as the ring keeps it. */
export interface LogEntry {
  /** slog level. */
  readonly level: number;
  /** Unix milliseconds. */
  readonly time: number;
  /** The message followed by its fields as ` name=value`. */
  readonly message: string;
  /** Where the record was created (warnings and errors only). */
  readonly trace?: readonly StackFrame[];
  /** The request it was made for, if any (server/log-context.ts). */
  readonly request?: RequestInfo;
}

type Subscriber = { level: number; fn: (e: LogEntry) => void };

/** What a record costs the ring: its message and trace, in characters, plus a fixed overhead. */
function weight(e: LogEntry): number {
  let n = 64 + e.message.length;
  for (const f of e.trace ?? []) n += 32 + f.function.length + f.file.length;
  return n;
}

/** Default bounds of the ring: records and bytes of their messages. */
export const RING_RECORDS = 10_000;
export const RING_BYTES = 8 << 20;

/** The last records (at most `capacity`, and at most `maxBytes` of messages), and the live subscribers. */
export class LogRing {
  readonly capacity: number;
  readonly maxBytes: number;
  readonly #buf: (LogEntry | undefined)[];
  #next = 0;
  #size = 0;
  #bytes = 0;
  #subs: Subscriber[] = [];
  /** Lowest level any subscriber wants, here or in another worker of the node (Infinity: none). */
  minSubscriberLevel = Infinity;
  /** Lowest level this process's own subscribers want. */
  localLevel = Infinity;
  #remoteLevel = Infinity;
  /** In a worker (docs/workers.md): hands this process's records to the other workers. */
  forward: ((e: LogEntry, store: boolean) => void) | undefined;
  /** In a worker: `localLevel` changed. */
  onLocalLevel: (() => void) | undefined;

  constructor(capacity = RING_RECORDS, maxBytes = RING_BYTES) {
    this.capacity = capacity;
    this.maxBytes = maxBytes;
    this.#buf = new Array(capacity);
  }

  get size(): number {
    return this.#size;
  }

  /** Characters of the stored records' messages and traces (the ring's memory, roughly). */
  get bytes(): number {
    return this.#bytes;
  }

  #drop(): void {
    const oldest = (this.#next - this.#size + this.capacity) % this.capacity;
    this.#bytes -= weight(this.#buf[oldest]!);
    this.#buf[oldest] = undefined;
    this.#size--;
  }

  get subscribers(): number {
    return this.#subs.length;
  }

  /** Lowest level the streams of the node's other workers want. */
  get remoteLevel(): number {
    return this.#remoteLevel;
  }

  set remoteLevel(level: number) {
    this.#remoteLevel = level;
    this.#recompute();
  }

  /**
   * Stores `e` (if `store`) and hands it to every subscriber that wants its level; a record of
   * this process also goes to the other workers (`remote`: it came from one).
   */
  publish(e: LogEntry, store: boolean, remote = false): void {
    if (!remote) this.forward?.(e, store);
    if (store) {
      if (this.#size === this.capacity) this.#drop();
      this.#buf[this.#next] = e;
      this.#next = (this.#next + 1) % this.capacity;
      this.#size++;
      this.#bytes += weight(e);
      while (this.#bytes > this.maxBytes && this.#size > 1) this.#drop();
    }
    for (const s of this.#subs) {
      if (e.level < s.level) continue;
      try {
        s.fn(e);
      } catch {
        // a broken subscriber must not break logging
      }
    }
  }

  /** Stored records with `time >= since` (ms), oldest first. */
  since(since: number): LogEntry[] {
    const out: LogEntry[] = [];
    const start = (this.#next - this.#size + this.capacity) % this.capacity;
    for (let i = 0; i < this.#size; i++) {
      const e = this.#buf[(start + i) % this.capacity]!;
      if (e.time >= since) out.push(e);
    }
    return out;
  }

  /** Calls `fn` with every new record ≥ `level` until the returned function is called. */
  subscribe(level: number, fn: (e: LogEntry) => void): () => void {
    const s: Subscriber = { level, fn };
    this.#subs = [...this.#subs, s];
    this.#recompute();
    return () => {
      this.#subs = this.#subs.filter((x) => x !== s);
      this.#recompute();
    };
  }

  #recompute(): void {
    const local = this.#subs.reduce((m, s) => Math.min(m, s.level), Infinity);
    this.minSubscriberLevel = Math.min(local, this.#remoteLevel);
    if (local === this.localLevel) return;
    this.localLevel = local;
    this.onLocalLevel?.();
  }
}

/** The logger the server uses: {@link Logger} plus the ring behind `minkms logs`. */
export interface ServerLogger extends Logger {
  readonly ring: LogRing;
  /** The stderr threshold. */
  readonly level: Level;
  /** Whether a record at `level` would go anywhere (stderr, ring or a subscriber). */
  enabled(level: Level): boolean;
  /** Writes what pino buffered (no-op for synchronous destinations). */
  flush(): void;
}

export interface LoggerOptions {
  /** Where the JSON lines go; default stderr. */
  destination?: DestinationStream;
  ring?: LogRing;
}

/** `value` with every {@link REDACTED_FIELDS} property replaced, at any depth. */
function redactDeep(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1));
  if (value instanceof Error) return value.message;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = REDACTED.has(k) ? CENSOR : redactDeep(v, depth + 1);
  return out;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') {
    const first = v.split('\n', 1)[0]!;
    return /^[^\s"=]+$/.test(first) ? first : JSON.stringify(first);
  }
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  if (v instanceof Date) return v.toISOString();
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Longest value of one field in a log record (errors with their stacks included). */
export const MAX_LOG_VALUE = 4096;

/** `msg name=value …` with secrets redacted (the ring's form of a record); every value cut to {@link MAX_LOG_VALUE}. */
export function formatMessage(msg: string, fields: Record<string, unknown> | undefined): string {
  let out = clip(msg, MAX_LOG_VALUE);
  if (!fields) return out;
  for (const [k, v] of Object.entries(fields))
    out += ` ${clip(k, 64)}=${REDACTED.has(k) ? CENSOR : clip(formatValue(redactDeep(v)), MAX_LOG_VALUE)}`;
  return out;
}

/** The fields with every string value cut to {@link MAX_LOG_VALUE} (what goes to stderr). */
function boundFields(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'string' && v.length > MAX_LOG_VALUE) (out ??= { ...fields })[k] = clip(v, MAX_LOG_VALUE);
  }
  return out ?? fields;
}

const FRAME_RE = /^\s*at (?:(.+?) \()?(.+?):(\d+):\d+\)?$/;

/** Parses V8 stack lines (`at fn (file:line:col)`) into frames. */
export function parseStack(stack: string, max = 8): StackFrame[] {
  const frames: StackFrame[] = [];
  for (const line of stack.split('\n')) {
    const m = FRAME_RE.exec(line);
    if (!m) continue;
    frames.push({ function: m[1] ?? '', file: m[2]!, line: Number(m[3]) });
    if (frames.length === max) break;
  }
  return frames;
}

function traceOf(fields: Record<string, unknown> | undefined, caller: (...args: never[]) => unknown): StackFrame[] {
  // An error's own stack says more than where it was logged.
  const err = fields?.err;
  if (typeof err === 'string' && err.includes('\n    at ')) return parseStack(err);
  if (err instanceof Error && err.stack) return parseStack(err.stack);
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, caller);
  return parseStack(holder.stack ?? '');
}

/**
 * A pino logger writing JSON lines (`{"level":"info","time":"…","msg":"…",…}`) to stderr, and
 * the ring behind `POST /v1/debug/log`.
 */
export function createLogger(level: Level = 'info', opts: LoggerOptions = {}): ServerLogger {
  const p: Pino = pino(
    {
      level,
      base: null,
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACTED_FIELDS, ...REDACTED_FIELDS.map((f) => `*.${f}`)], censor: CENSOR },
    },
    opts.destination ?? process.stderr,
  );
  const ring = opts.ring ?? new LogRing();
  const threshold = SLOG_LEVEL[level];

  const at = (lvl: Level) => {
    const slog = SLOG_LEVEL[lvl];
    const method = (msg: string, fields?: Record<string, unknown>): void => {
      const toStderr = slog >= threshold;
      if (!toStderr && slog < ring.minSubscriberLevel) return;
      if (toStderr) {
        if (fields) p[lvl](boundFields(fields), clip(msg, MAX_LOG_VALUE));
        else p[lvl](clip(msg, MAX_LOG_VALUE));
      }
      const entry: LogEntry = {
        level: slog,
        time: Date.now(),
        message: formatMessage(msg, fields),
        trace: slog >= SLOG_LEVEL.warn ? traceOf(fields, method) : undefined,
        request: (fields as { [LOG_REQUEST]?: RequestInfo } | undefined)?.[LOG_REQUEST] ?? requestScope.current(),
      };
      ring.publish(entry, toStderr);
    };
    return method;
  };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    ring,
    level,
    enabled: (lvl) => SLOG_LEVEL[lvl] >= threshold || SLOG_LEVEL[lvl] >= ring.minSubscriberLevel,
    flush: () => p.flush(),
  };
}

/** The ring of a logger made by {@link createLogger}, if it is one. */
export function ringOf(log: Logger): LogRing | undefined {
  const r = (log as Partial<ServerLogger>).ring;
  return r instanceof LogRing ? r : undefined;
}

/** Whether a record at `level` would be used (true for loggers not made here). */
export function logEnabled(log: Logger, level: Level): boolean {
  const f = (log as Partial<ServerLogger>).enabled;
  return typeof f === 'function' ? f(level) : true;
}
