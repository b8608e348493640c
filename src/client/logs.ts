/**
 * The server log stream of one node (`POST /v1/debug/log`, SysAdmin; kms-wire.md §2.1): the
 * request is an unframed protobuf LogRequest, the answer `application/octet-stream` records,
 * each a uint32 big-endian length and a protobuf LogRecord of at most 4096 bytes, until the
 * server ends the stream or the caller aborts.
 *
 * @example
 *   const ac = new AbortController();
 *   await streamLogs(client, { level: SLOG.warn, signal: ac.signal }, (r) => console.log(r.message));
 */
import { encodeMessage, decodeMessage } from '../protocol/schema.js';
import { LogRecordSchema, LogRequestSchema, type LogRecord } from '../protocol/messages.js';
import { responseError, type KmsClient } from './client.js';

const OCTET = 'application/octet-stream';
/** Largest record the client accepts (as the Go SDK). */
export const MAX_LOG_RECORD = 4096;

/** slog levels. */
export const SLOG = { debug: -4, info: 0, warn: 4, error: 8 } as const;

export interface LogStreamOptions {
  /** Only records ≥ this slog level (default Info = 0). */
  level?: number;
  /** Only records whose message contains this. */
  message?: string;
  /** Replay the stored records since this time first; without it, only new records. */
  since?: Date;
  /** Stack traces only for records ≥ this level (default: Error). */
  traceLevel?: number;
  /** The node to read (`host:port`); default: the client's endpoint choice. */
  host?: string;
  /** Ends the stream; `streamLogs` then resolves normally. */
  signal?: AbortSignal;
}

/** Splits a byte stream into length-prefixed LogRecords. */
export class LogRecordParser {
  #buf: Buffer = Buffer.alloc(0);
  /** Set when the stream is not a record stream (e.g. an error body). */
  invalid: string | undefined;

  /** Feeds bytes; returns the complete records. */
  push(chunk: Buffer): LogRecord[] {
    if (this.invalid) return [];
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: LogRecord[] = [];
    while (this.#buf.length >= 4) {
      const n = this.#buf.readUInt32BE(0);
      if (n > MAX_LOG_RECORD) {
        this.invalid = `log record of ${n} bytes exceeds ${MAX_LOG_RECORD}`;
        return out;
      }
      if (this.#buf.length < 4 + n) break;
      try {
        out.push(decodeMessage(LogRecordSchema, Buffer.from(this.#buf.subarray(4, 4 + n))));
      } catch (err) {
        this.invalid = `invalid log record: ${(err as Error).message}`;
        return out;
      }
      this.#buf = this.#buf.subarray(4 + n);
    }
    return out;
  }

  /** Bytes of an incomplete record left at the end. */
  get pending(): number {
    return this.#buf.length;
  }
}

/** Streams log records to `onRecord` until the server ends the stream or `signal` aborts. */
export async function streamLogs(client: KmsClient, opts: LogStreamOptions, onRecord: (r: LogRecord) => void): Promise<void> {
  const body = encodeMessage(LogRequestSchema, {
    level: opts.level ?? SLOG.info,
    message: opts.message ?? '',
    since: opts.since,
    traceLevel: opts.traceLevel ?? SLOG.error,
  });
  const parser = new LogRecordParser();
  // Records only from a 200 answer of exactly this content type (as the Go SDK); any other
  // answer's body is kept (its beginning) for the error message.
  let records = false;
  const raw: Buffer[] = [];
  let rawBytes = 0;
  let res;
  try {
    res = await client.transport.request({
      method: 'POST',
      path: '/v1/debug/log',
      headers: { 'content-type': OCTET, accept: OCTET },
      body,
      host: opts.host,
      signal: opts.signal,
      idempotent: true, // a read: a node that took it and never answered may be replaced by another
      onResponse: (h) => {
        records = Number(h[':status']) === 200 && h['content-type'] === OCTET;
      },
      onData: (chunk) => {
        if (!records) {
          if (rawBytes < 5000) {
            raw.push(chunk);
            rawBytes += chunk.length;
          }
          return;
        }
        for (const r of parser.push(chunk)) {
          if (opts.signal?.aborted) return;
          onRecord(r);
        }
      },
    });
  } catch (err) {
    if (opts.signal?.aborted) return;
    throw err;
  }
  if (res.status !== 200) throw responseError({ ...res, body: Buffer.concat(raw) }, opts.host ?? '');
  if (res.headers['content-type'] !== OCTET)
    throw new Error(`log stream: unexpected content type '${String(res.headers['content-type'])}'`);
  if (parser.invalid) throw new Error(`log stream: ${parser.invalid}`);
  if (parser.pending > 0) throw new Error('log stream: the last record is incomplete');
}
