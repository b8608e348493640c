/**
 * The audit log: one JSON line per authenticated command frame (and per SysAdmin request to
 * the other endpoints), appended to a file and hash-chained so that an edited, removed,
 * inserted or reordered line is detected by {@link verifyAuditFile} (`minkms audit verify`).
 * The format is documented in docs/audit.md.
 *
 * A line is the JSON object of {@link AuditEvent} fields in a fixed order, then `seq`, `prev`
 * and last `hash`:
 * - `prev` = hex SHA-256 of the previous line's bytes (without its newline); for the first line
 *   of a chain, of `minkms-audit-v1:` + the chain id, which that first line carries as `chain`;
 * - `hash` = hex SHA-256 of the line's own bytes up to the `hash` field, i.e. of the line
 *   without its `,"hash":"…"` suffix, closed by `}` (the "canonical content").
 *
 * Lines never contain key material, plaintexts, ciphertexts or associated data: the event type
 * has no field for them. Truncating the end of the file cannot be detected from the file alone
 * (ship lines elsewhere, or record the last `hash`, if that matters).
 *
 * Writes are buffered and flushed at least every 100 ms, when 64 KiB are pending and on close.
 * The file is opened append-only with mode 0600; an existing file's chain is continued.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { ConfigError } from '../config/config.js';

/** What happened, as the server reports it. */
export interface AuditEvent {
  /** RFC 3339 time (UTC, milliseconds) the request arrived. */
  time: string;
  /** `h1:` identity of the caller's client certificate. */
  identity: string;
  /** Enclave of the URL ('' for cluster commands). */
  enclave: string;
  /** `KEY:GENERATE` etc., or `METHOD /path` for the other endpoints; '' if not decodable. */
  command: string;
  /** The key, policy, identity or enclave name the command is about ('' if none). */
  object: string;
  /** `ok`, the error code (`ERR_NOT_ALLOWED`), or `skipped` (a later frame of a failed batch). */
  outcome: string;
  /** HTTP status of the request. */
  status: number;
  /** Time spent on this frame (the whole request for the other endpoints). */
  latency_ms: number;
  /** Same for every frame of one request. */
  request_id: string;
  /** On the line of a failed frame: the number of frames in the request (the ones after it did not run). */
  frames?: number;
  /** Command channel: the privilege the caller acted with (a service account's effective one). */
  privilege?: string;
}

export const AUDIT_GENESIS_PREFIX = 'minkms-audit-v1:';
const FLUSH_MS = 100;
const FLUSH_BYTES = 64 * 1024;
/** Longest `enclave`, `command` and `object` kept (a refused request may carry any garbage as a name). */
const MAX_FIELD = 256;
const bound = (s: string) => (s.length > MAX_FIELD ? s.slice(0, MAX_FIELD) + '…' : s);

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const HASH_SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;

/**
 * Why the audit file cannot be opened, in words an operator can act on (a raw `ENOENT` names
 * neither the setting nor the fix). A ConfigError: retrying cannot help until someone acts.
 */
function auditOpenError(path: string, err: NodeJS.ErrnoException): ConfigError {
  const dir = dirname(path);
  const fix = "(create it writable by the server's user, or change audit.file / --audit-file)";
  if (err.code === 'ENOENT') return new ConfigError(`cannot open the audit log ${path}: its directory ${dir} does not exist ${fix}`);
  if (err.code === 'EACCES' || err.code === 'EPERM') return new ConfigError(`cannot open the audit log ${path}: permission denied ${fix}`);
  if (err.code === 'EISDIR') return new ConfigError(`cannot open the audit log ${path}: it is a directory (audit.file names a file)`);
  if (err.code === 'ENOTDIR') return new ConfigError(`cannot open the audit log ${path}: a part of ${dir} is not a directory ${fix}`);
  return new ConfigError(`cannot open the audit log ${path}: ${err.code ?? err.message}`);
}

/** An audit file opened for appending. */
/** Where audit events go: the hash-chained file, or (in a worker) the primary that writes it. */
export interface AuditSink {
  append(e: AuditEvent): void;
  /** Lines appended since opened. */
  readonly records: number;
  /** Write failures (the server keeps serving; the count is a metric). */
  readonly errors: number;
  flush(): void;
  close(): void;
}

export class AuditLog implements AuditSink {
  readonly path: string;
  readonly #fd: number;
  #prev: string;
  #seq: number;
  #chain: string | undefined;
  #pending: string[] = [];
  #pendingBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Lines appended since the log was opened. */
  records = 0;
  /** Write failures (the server keeps serving; the count is a metric). */
  errors = 0;
  onError: (err: Error) => void = () => {};

  private constructor(path: string, fd: number, prev: string, seq: number, chain: string | undefined) {
    this.path = path;
    this.#fd = fd;
    this.#prev = prev;
    this.#seq = seq;
    this.#chain = chain;
  }

  /** Opens (creating with mode 0600) `path` and continues its chain, or starts one. */
  static open(path: string): AuditLog {
    let fd: number;
    try {
      fd = openSync(path, 'a', 0o600);
    } catch (err) {
      throw auditOpenError(path, err as NodeJS.ErrnoException);
    }
    try {
      const rfd = openSync(path, 'r');
      let last;
      try {
        last = lastLine(rfd);
      } finally {
        closeSync(rfd);
      }
      if (last === undefined) {
        const chain = randomBytes(16).toString('hex');
        return new AuditLog(path, fd, sha256(AUDIT_GENESIS_PREFIX + chain), 0, chain);
      }
      let seq = 0;
      try {
        const v = (JSON.parse(last.line) as { seq?: unknown }).seq;
        if (typeof v === 'number' && Number.isSafeInteger(v)) seq = v;
      } catch {
        // A damaged last line: chain on from its bytes anyway; `verify` will name it.
      }
      // A crash in the middle of a write leaves a line without newline: end it first.
      if (!last.terminated) writeSync(fd, '\n');
      return new AuditLog(path, fd, sha256(last.line), seq, undefined);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Appends one line (buffered). */
  append(e: AuditEvent): void {
    if (this.#closed) return;
    this.#seq++;
    const head: Record<string, unknown> = {
      time: e.time,
      identity: e.identity,
      enclave: bound(e.enclave),
      command: bound(e.command),
      object: bound(e.object),
      outcome: e.outcome,
      status: e.status,
      latency_ms: Math.round(e.latency_ms * 1000) / 1000,
      request_id: e.request_id,
      ...(e.frames === undefined ? {} : { frames: e.frames }),
      ...(e.privilege === undefined ? {} : { privilege: e.privilege }),
      seq: this.#seq,
    };
    if (this.#chain !== undefined) {
      head.chain = this.#chain;
      this.#chain = undefined;
    }
    head.prev = this.#prev;
    const content = JSON.stringify(head);
    const line = `${content.slice(0, -1)},"hash":"${sha256(content)}"}`;
    this.#prev = sha256(line);
    this.#pending.push(line + '\n');
    this.#pendingBytes += line.length + 1;
    this.records++;
    if (this.#pendingBytes >= FLUSH_BYTES) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), FLUSH_MS).unref();
  }

  /** Writes what is buffered. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.length === 0) return;
    const data = this.#pending.join('');
    this.#pending = [];
    this.#pendingBytes = 0;
    try {
      writeSync(this.#fd, data);
    } catch (err) {
      this.errors++;
      this.onError(err as Error);
    }
  }

  /** Flushes, syncs to disk and closes the file. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    try {
      fsyncSync(this.#fd);
    } catch {
      // not every file system syncs
    }
    closeSync(this.#fd);
  }
}

/** The last line of the file (without newline), read backwards in 64 KiB steps. */
function lastLine(fd: number): { line: string; terminated: boolean } | undefined {
  const size = fstatSync(fd).size;
  if (size === 0) return undefined;
  const step = 64 * 1024;
  let end = size;
  const one = Buffer.alloc(1);
  readSync(fd, one, 0, 1, size - 1);
  const terminated = one[0] === 0x0a;
  if (terminated) end--;
  const chunks: Buffer[] = [];
  let pos = end;
  while (pos > 0) {
    const n = Math.min(step, pos);
    pos -= n;
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, pos);
    const nl = buf.lastIndexOf(0x0a);
    if (nl >= 0) {
      chunks.unshift(buf.subarray(nl + 1));
      break;
    }
    chunks.unshift(buf);
  }
  const line = Buffer.concat(chunks).toString('utf8');
  return line === '' && !terminated ? undefined : { line, terminated };
}

export type AuditVerification = { ok: true; lines: number } | { ok: false; line: number; reason: string };

/**
 * Checks every line of an audit file: valid JSON, its own `hash`, `prev` = hash of the line
 * before (or of the genesis string of the chain id given in the first line), and `seq`
 * counting up by one. Returns the first bad line (1-based).
 */
export function verifyAuditFile(path: string): AuditVerification {
  const text = readFileSync(path, 'utf8');
  if (text === '') return { ok: true, lines: 0 };
  if (!text.endsWith('\n')) {
    const n = text.split('\n').length;
    return { ok: false, line: n, reason: 'incomplete last line (no newline)' };
  }
  const lines = text.slice(0, -1).split('\n');
  let prevLine: string | undefined;
  let prevSeq = 0;
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const line = lines[i]!;
    const bad = (reason: string): AuditVerification => ({ ok: false, line: n, reason });
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return bad('not valid JSON');
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return bad('not a JSON object');
    const m = HASH_SUFFIX.exec(line);
    if (!m) return bad("no 'hash' field at the end of the line");
    const content = line.slice(0, m.index) + '}';
    if (sha256(content) !== m[1]) return bad('hash mismatch: the line was modified');
    const expectedPrev = prevLine === undefined ? undefined : sha256(prevLine);
    if (prevLine === undefined) {
      if (typeof rec.chain !== 'string') return bad('the first line does not start a chain (lines before it were removed?)');
      if (rec.prev !== sha256(AUDIT_GENESIS_PREFIX + rec.chain)) return bad('prev does not match the chain id');
    } else if (rec.prev !== expectedPrev) {
      return bad(`prev does not match line ${i} (a line was removed, inserted or reordered)`);
    } else if (rec.chain !== undefined) {
      return bad('a new chain starts in the middle of the file');
    }
    if (rec.seq !== prevSeq + 1) {
      return bad(`seq ${String(rec.seq)} does not follow ${prevSeq}`);
    }
    prevSeq = rec.seq as number;
    prevLine = line;
  }
  return { ok: true, lines: lines.length };
}
