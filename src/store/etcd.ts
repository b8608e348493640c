/**
 * The cluster store: an etcd cluster (v3 API; tested with Debian's etcd 3.4.23) through the
 * `etcd3` client. Every KMS node is a client of the same etcd cluster.
 *
 * Layout under the namespace `prefix` (e.g. `/minkms/`):
 *
 * - `<prefix>data/<key>`: one etcd key per store key; the store value is the etcd value and
 *   the store revision is the etcd `mod_revision`. `range('')` covers exactly `<prefix>data/`.
 * - `<prefix>meta/commit`: rewritten by a commit that would not otherwise advance etcd's
 *   revision (only deletes, or nothing), so that every successful commit gets a new revision.
 * - Everything else under `<prefix>` (members, elections, …) is left to the cluster layer and
 *   is invisible to `get`/`range`/`watch`.
 *
 * A commit is ONE etcd transaction: condition `rev: 0` compares `create_revision == 0`
 * (absent), any other `rev` compares `mod_revision == rev`; on success every put/delete is
 * applied at one new revision (etcd's store-wide, strictly increasing revision). Reads are
 * linearizable (they go through the raft leader's read index), so a condition built from a
 * read is never based on a stale member.
 *
 * Limits. etcd refuses a transaction with more than `--max-txn-ops` operations (default 128)
 * or a request larger than `--max-request-bytes` (default 1.5 MiB). A restore or a root-key
 * rotation rewrites every record in one commit, and splitting it would break its atomicity,
 * so the store does not split: it throws `EtcdLimitError` naming the flag. Run every member
 * with, for example, `--max-txn-ops=10000 --max-request-bytes=33554432` (the test cluster
 * does).
 *
 * Failures. Every operation is bounded by `timeoutMs` (5 s by default), retries included:
 * when no member answers, or the members that answer have no quorum, the operation throws
 * `StoreUnavailableError` instead of hanging. Reads are retried on another member until the
 * deadline. A commit is retried only when the request provably never reached a server
 * (connection refused, member without a leader); if it was sent and the answer was lost
 * (member died mid-call, deadline expired), it may have been applied: the error says so
 * (`ambiguous: true`) and the caller must re-read.
 *
 * Watches (`watch`, beyond the Store port, for cache invalidation) resume after a broken
 * stream from the revision after the last one they delivered, so no event is lost or repeated
 * across reconnects. If that revision has been compacted away in the meantime (etcd
 * `--auto-compaction-*`), the watch ends with `StoreWatchCompactedError`: reload with
 * `rangeWithRevision` and watch again from there.
 */
import {
  ClientClosedError,
  CompareResult,
  CompareTarget,
  Etcd3,
  GRPCAbortedError,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCInternalError,
  GRPCResourceExhastedError,
  GRPCUnavailableError,
  GRPCUnknownError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type IWatchResponse,
  type Watcher,
} from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError, type CommitResult, type Condition, type Mutation, type Store, type StoreEntry } from './store.js';

export interface EtcdStoreOptions {
  /** Client URLs of the members, e.g. `http://10.0.0.1:2379` (all `http://` or all `https://`). */
  endpoints: string[];
  /** Namespace of this KMS cluster in etcd, e.g. `/minkms/`; a `/` is appended if missing. */
  prefix: string;
  /** etcd user (etcd's `auth enable`); both or neither of username and password. */
  username?: string;
  password?: string;
  /** TLS to the members: CA to verify them, client certificate and key (PEM). */
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string };
  /** Bound of every operation, retries included; 5000 ms by default. */
  timeoutMs?: number;
  /**
   * Bound of a single attempt of a read (and of the auth-token exchange) on one member, so
   * that an unresponsive member does not use up the whole `timeoutMs`; 2000 ms by default.
   * (etcd3's own `dialTimeout` option is accepted but unused by etcd3 1.1.2.)
   */
  dialTimeoutMs?: number;
}

/** One change seen by a watch. `value` is absent for a delete. */
export interface StoreEvent {
  readonly key: string;
  readonly value?: Buffer;
  /** The revision of the commit that made the change. */
  readonly rev: number;
}

export interface WatchOptions {
  /**
   * First revision to deliver (inclusive), e.g. `rangeWithRevision(...).rev + 1`. By default
   * the watch starts at the revision current when it connects for the first time.
   */
  fromRev?: number;
  /**
   * Called when the watch ends because of an error (`StoreWatchCompactedError`, or etcd
   * cancelled it), and when `onChange` throws (the watch continues then). Without it, the
   * error is thrown asynchronously (an uncaught exception): a cache must not go stale silently.
   */
  onError?: (err: Error) => void;
}

export interface StoreWatch {
  /** Resolves once the watch is established for the first time. */
  readonly ready: Promise<void>;
  /** Stops the watch; no `onChange` call happens after it resolves. */
  close(): Promise<void>;
}

/** etcd refused a transaction because of one of its size limits; the message names the flag. */
export class EtcdLimitError extends Error {
  override readonly name = 'EtcdLimitError';
  readonly flag: '--max-txn-ops' | '--max-request-bytes';

  constructor(message: string, flag: '--max-txn-ops' | '--max-request-bytes', cause: unknown) {
    super(message, { cause });
    this.flag = flag;
  }
}

/** A watch could not resume: the revisions it missed were compacted. Reload and watch again. */
export class StoreWatchCompactedError extends Error {
  override readonly name = 'StoreWatchCompactedError';
}

const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_DIAL_TIMEOUT_MS = 2_000;
const RANGE_PAGE = 500;
const DATA = 'data/';
const COMMIT_MARK = 'meta/commit';
const EMPTY = Buffer.alloc(0);
const RECOMMENDED_LIMITS = '--max-txn-ops=10000 --max-request-bytes=33554432';
const WATCH_BACKOFF_MIN_MS = 50;
const WATCH_BACKOFF_MAX_MS = 2_000;

/** gRPC call options (the deadline), typed through etcd3 rather than its grpc-js dependency. */
type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>;
type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** Thrown by the per-member breaker instead of calling an endpoint known to be failing. */
class MemberSkippedError extends Error {}

/** Runs the call as is: retries are done by EtcdStore, which knows whether a retry is safe. */
const passThrough = { execute: <T>(fn: (ctx: unknown) => T): T => fn({ signal: new AbortController().signal, attempt: 0 }) };

/**
 * A small per-member circuit breaker: after a member failed with "unavailable" or a deadline,
 * calls skip it (etcd3 then tries the next member) for 1 s, doubling while it keeps failing,
 * up to 30 s; after the pause one call probes it again.
 */
function memberBreaker(): FaultPolicy {
  let failures = 0;
  let openUntil = 0;
  return {
    execute: async <T>(fn: (ctx: unknown) => Promise<T> | T): Promise<T> => {
      if (failures > 0 && Date.now() < openUntil) throw new MemberSkippedError('member skipped after recent failures');
      try {
        const res = await fn({ signal: new AbortController().signal, attempt: 0 });
        failures = 0;
        return res;
      } catch (err) {
        if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError) {
          failures++;
          openUntil = Date.now() + Math.min(30_000, 1_000 * 2 ** Math.min(failures - 1, 5));
        }
        throw err;
      }
    },
  } as unknown as FaultPolicy;
}

type Failure = { kind: 'unsent' | 'ambiguous' | 'compacted' | 'fatal' } | { kind: 'limit'; flag: '--max-txn-ops' | '--max-request-bytes' };

/** What an error from etcd3 means for a retry. */
function classify(err: unknown): Failure {
  if (err instanceof MemberSkippedError) return { kind: 'unsent' };
  const msg = errorMessage(err);
  if (msg.includes('too many operations in txn request')) return { kind: 'limit', flag: '--max-txn-ops' };
  if (msg.includes('request is too large') || /message larger than max/i.test(msg)) return { kind: 'limit', flag: '--max-request-bytes' };
  if (msg.includes('required revision has been compacted')) return { kind: 'compacted' };
  // Refused before the request was handed to raft: safe to send again.
  if (/No connection established|ECONNREFUSED|etcdserver: no leader|etcdserver: too many requests|etcdserver: not capable/.test(msg)) return { kind: 'unsent' };
  if (
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError ||
    err instanceof GRPCInternalError ||
    err instanceof GRPCUnknownError ||
    err instanceof GRPCAbortedError ||
    err instanceof GRPCResourceExhastedError
  ) {
    return { kind: 'ambiguous' };
  }
  return { kind: 'fatal' };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The smallest key greater than every key starting with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.of(0); // all 0xff: to the end of the keyspace
}

function toBuffer(v: Buffer | string): Buffer {
  return typeof v === 'string' ? Buffer.from(v) : v;
}

export class EtcdStore implements Store {
  readonly kind = 'etcd';
  /** The namespace, always ending in `/`. */
  readonly prefix: string;
  readonly endpoints: readonly string[];
  /** The underlying client, shared with the cluster layer (leases, elections) of this node. */
  readonly client: Etcd3;
  readonly #data: Buffer;
  readonly #commitMark: Buffer;
  readonly #timeoutMs: number;
  readonly #dialTimeoutMs: number;
  readonly #watches = new Set<WatchLoop>();
  #closed = false;

  constructor(options: EtcdStoreOptions) {
    const { endpoints, tls } = options;
    if (!Array.isArray(endpoints) || endpoints.length === 0) throw new Error('etcd store: no endpoints given');
    if (typeof options.prefix !== 'string' || options.prefix === '') throw new Error('etcd store: the prefix (namespace) must not be empty');
    for (const e of endpoints) {
      if (!/^https?:\/\/[^/]+$/.test(e)) throw new Error(`etcd store: endpoint ${JSON.stringify(e)} is not of the form http(s)://host:port`);
      if (tls && e.startsWith('http://')) throw new Error(`etcd store: TLS options given, but endpoint ${e} is http://`);
    }
    if ((options.username === undefined) !== (options.password === undefined)) throw new Error('etcd store: give both username and password, or neither');
    if (tls && (tls.cert === undefined) !== (tls.key === undefined)) throw new Error('etcd store: give both the TLS client certificate and key, or neither');
    this.#timeoutMs = positive(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.#dialTimeoutMs = positive(options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS, 'dialTimeoutMs');
    this.prefix = options.prefix.endsWith('/') ? options.prefix : options.prefix + '/';
    this.endpoints = [...endpoints];
    this.#data = Buffer.from(this.prefix + DATA);
    this.#commitMark = Buffer.from(this.prefix + COMMIT_MARK);

    const etcdOptions: IOptions = {
      hosts: [...endpoints],
      faultHandling: { global: passThrough as unknown as FaultPolicy, host: () => memberBreaker() },
      grpcOptions: {
        // A range page or a restore transaction may be large; etcd enforces its own limit.
        'grpc.max_receive_message_length': -1,
        'grpc.max_send_message_length': -1,
        // Detect a member that vanished without closing the connection (etcd's default
        // --grpc-keepalive-min-time is 5 s; pinging more often gets the connection closed).
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
      },
    };
    if (options.username !== undefined) {
      etcdOptions.auth = {
        username: options.username,
        password: options.password!,
        callOptions: () => ({ deadline: Date.now() + this.#dialTimeoutMs }),
      };
    }
    if (tls) {
      etcdOptions.credentials = {
        // null: the system's roots (grpc's createSsl accepts it; etcd3's type says Buffer).
        rootCertificate: (tls.ca === undefined ? null : toBuffer(tls.ca)) as Buffer,
        ...(tls.key === undefined ? {} : { privateKey: toBuffer(tls.key) }),
        ...(tls.cert === undefined ? {} : { certChain: toBuffer(tls.cert) }),
      };
    }
    this.client = new Etcd3(etcdOptions);
  }

  async get(key: string): Promise<StoreEntry | undefined> {
    const res = await this.#call('get', 'read', (opts) => this.client.kv.range({ key: this.#key(key) }, opts));
    const kv = res.kvs[0];
    return kv && this.#entry(kv);
  }

  async range(prefix: string): Promise<StoreEntry[]> {
    return (await this.rangeWithRevision(prefix)).entries;
  }

  /**
   * Like `range`, plus the revision the entries were read at: watching from `rev + 1` then
   * misses nothing. Large ranges are read in pages, all at that one revision.
   */
  async rangeWithRevision(prefix: string): Promise<{ entries: StoreEntry[]; rev: number }> {
    const start = this.#key(prefix);
    const end = prefixEnd(start);
    return this.#call('range', 'read', async (opts) => {
      const entries: StoreEntry[] = [];
      let from = start;
      let rev = 0;
      for (;;) {
        const res = await this.client.kv.range({ key: from, range_end: end, limit: RANGE_PAGE, revision: rev }, opts);
        if (rev === 0) rev = Number(res.header.revision);
        for (const kv of res.kvs) entries.push(this.#entry(kv));
        const last = res.kvs.at(-1);
        if (!res.more || !last) return { entries, rev };
        from = Buffer.concat([last.key, Buffer.of(0)]);
      }
    });
  }

  async commit(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<CommitResult> {
    const compare: ICompare[] = conditions.map((c) => {
      if (!Number.isSafeInteger(c.rev) || c.rev < 0) throw new TypeError(`etcd store: condition on ${c.key} has an invalid revision ${c.rev}`);
      const key = this.#key(c.key);
      return c.rev === 0
        ? { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }
        : { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: c.rev };
    });
    // etcd refuses a transaction that touches a key twice: the last mutation of a key wins.
    const last = new Map<string, Mutation>();
    for (const m of mutations) {
      last.delete(m.key);
      last.set(m.key, m);
    }
    const success: IRequestOp[] = [...last.values()].map((m) =>
      m.value === undefined
        ? { request_delete_range: { key: this.#key(m.key) } }
        : { request_put: { key: this.#key(m.key), value: Buffer.from(m.value) } },
    );
    // Deletes of missing keys (or nothing at all) would not create a new revision.
    if (!success.some((op) => op.request_put)) success.push({ request_put: { key: this.#commitMark, value: EMPTY } });
    try {
      const res = await this.#call('commit', 'write', (opts) => this.client.kv.txn({ compare, success, failure: [] }, opts));
      return { ok: res.succeeded, rev: Number(res.header.revision) };
    } catch (err) {
      if (err instanceof EtcdLimitError) {
        const bytes = success.reduce((n, op) => n + (op.request_put ? op.request_put.key!.length + op.request_put.value!.length : op.request_delete_range!.key!.length), 0);
        throw new EtcdLimitError(
          `etcd refused a commit of ${success.length} operations and ${compare.length} conditions (~${bytes} bytes): ${errorMessage(err.cause)}. ` +
            `A restore or a root-key rotation writes every record in one transaction and is not split; raise ${err.flag} on every etcd member ` +
            `(recommended: ${RECOMMENDED_LIMITS}; etcd's defaults are 128 operations and 1.5 MiB)`,
          err.flag,
          err.cause,
        );
      }
      throw err;
    }
  }

  /**
   * Delivers every change under `prefix` (a store key prefix; `''` = everything), in revision
   * order, in batches (one batch never splits a commit). Survives broken streams and member
   * restarts without losing or repeating events; see `WatchOptions` for how it ends.
   */
  watch(prefix: string, onChange: (events: StoreEvent[]) => void, options: WatchOptions = {}): StoreWatch {
    if (this.#closed) throw new Error('etcd store: watch after close');
    if (options.fromRev !== undefined && (!Number.isSafeInteger(options.fromRev) || options.fromRev < 1)) {
      throw new TypeError(`etcd store: invalid watch start revision ${options.fromRev}`);
    }
    const start = this.#key(prefix);
    const loop = new WatchLoop(this.client, start, prefixEnd(start), this.#data.length, onChange, options, () => this.#watches.delete(loop));
    this.#watches.add(loop);
    loop.start();
    return loop;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#watches].map((w) => w.close()));
    this.client.close();
  }

  #key(key: string): Buffer {
    return Buffer.concat([this.#data, Buffer.from(key, 'utf8')]);
  }

  #entry(kv: IKeyValue): StoreEntry {
    return { key: kv.key.subarray(this.#data.length).toString('utf8'), value: Buffer.from(kv.value), rev: Number(kv.mod_revision) };
  }

  /**
   * Runs one etcd call with the store's bounds: retries on another member while that is
   * safe (reads: always; writes: only if the request was never sent), until `timeoutMs`.
   */
  async #call<T>(op: string, kind: 'read' | 'write', fn: (opts: CallOptions) => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error(`etcd store: ${op} after close`);
    const deadline = Date.now() + this.#timeoutMs;
    let lastErr: unknown;
    let attempts = 0;
    let pause = 20;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      attempts++;
      const attemptMs = kind === 'read' ? Math.min(remaining, this.#dialTimeoutMs) : remaining;
      try {
        return await fn({ deadline: Date.now() + attemptMs });
      } catch (err) {
        if (this.#closed || err instanceof ClientClosedError) throw new Error(`etcd store: closed during ${op}`, { cause: err });
        const failure = classify(err);
        if (failure.kind === 'limit') throw new EtcdLimitError(`etcd refused the ${op}: ${errorMessage(err)}`, failure.flag, err);
        if (failure.kind === 'fatal') throw new Error(`etcd ${op} failed: ${errorMessage(err)}`, { cause: err });
        if (failure.kind === 'ambiguous' && kind === 'write') {
          throw new StoreUnavailableError(
            `etcd ${op}: the request reached a member but no answer came back (${errorMessage(err)}); it may or may not have been applied`,
            { cause: err, ambiguous: true },
          );
        }
        lastErr = err;
        await sleep(Math.max(0, Math.min(pause, deadline - Date.now())));
        pause = Math.min(pause * 2, 250);
      }
    }
    throw new StoreUnavailableError(
      `etcd ${op}: no quorum of the etcd cluster (${this.endpoints.join(', ')}) answered within ${this.#timeoutMs} ms ` +
        `(${attempts} attempts${lastErr === undefined ? '' : `; last error: ${errorMessage(lastErr)}`})`,
      { cause: lastErr, ambiguous: false },
    );
  }
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new Error(`etcd store: ${name} must be a positive number of milliseconds, got ${n}`);
  return n;
}

/**
 * One `watch`: an etcd3 Watcher, replaced by a new one from our own resume revision whenever
 * the stream breaks. (etcd3 would re-attach the same Watcher by itself, but from the revision
 * in the last response header, which can be ahead of the last event received: a watch
 * catching up on old revisions gets batches stamped with the current revision.)
 */
class WatchLoop implements StoreWatch {
  readonly ready: Promise<void>;
  readonly #client: Etcd3;
  readonly #start: Buffer;
  readonly #end: Buffer;
  readonly #strip: number;
  readonly #onChange: (events: StoreEvent[]) => void;
  readonly #onError: ((err: Error) => void) | undefined;
  readonly #onClosed: () => void;
  #markReady!: () => void;
  /** The first revision not yet delivered; undefined until the first connection pins "now". */
  #next: number | undefined;
  #watcher: Watcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #backoff = WATCH_BACKOFF_MIN_MS;
  #closed = false;

  constructor(client: Etcd3, start: Buffer, end: Buffer, strip: number, onChange: (events: StoreEvent[]) => void, options: WatchOptions, onClosed: () => void) {
    this.#client = client;
    this.#start = start;
    this.#end = end;
    this.#strip = strip;
    this.#onChange = onChange;
    this.#onError = options.onError;
    this.#onClosed = onClosed;
    this.#next = options.fromRev;
    this.ready = new Promise<void>((resolve) => (this.#markReady = resolve));
  }

  start(): void {
    this.#timer = undefined;
    if (this.#closed) return;
    const builder = this.#client.watch().inRange({ start: this.#start, end: this.#end });
    if (this.#next !== undefined) builder.startRevision(String(this.#next));
    const w = builder.watcher();
    this.#watcher = w;
    w.on('connected', (res: IWatchResponse) => {
      if (w !== this.#watcher) return;
      this.#backoff = WATCH_BACKOFF_MIN_MS;
      // The creation header carries the current revision; it is the resume point only if we
      // had none (a watch from "now"), never when catching up from an older revision.
      if (this.#next === undefined) this.#next = Number(res.header.revision) + 1;
      this.#markReady();
    });
    w.on('data', (res: IWatchResponse) => {
      if (w === this.#watcher && !this.#closed) this.#deliver(res);
    });
    w.on('disconnected', () => {
      if (w !== this.#watcher || this.#closed) return;
      this.#watcher = undefined;
      // etcd3's manager is idle while it reports a disconnection: cancelling just detaches.
      void w.cancel().catch(() => undefined);
      this.#timer = setTimeout(() => this.start(), this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, WATCH_BACKOFF_MAX_MS);
    });
    w.on('error', (err: Error) => {
      if (w !== this.#watcher || this.#closed) return;
      const fatal = /compacted/.test(err.message)
        ? new StoreWatchCompactedError(`etcd watch cannot resume from revision ${this.#next}: it was compacted (${err.message}); reload and watch again`, { cause: err })
        : new Error(`etcd cancelled the watch: ${err.message}`, { cause: err });
      void this.close();
      this.#report(fatal);
    });
  }

  #deliver(res: IWatchResponse): void {
    if (res.events.length === 0) {
      // A progress notification: etcd sends those only to a watch that has caught up, so
      // nothing up to the header's revision is missing.
      if (this.#next !== undefined) this.#next = Math.max(this.#next, Number(res.header.revision) + 1);
      return;
    }
    const events: StoreEvent[] = res.events.map((ev) => {
      const key = ev.kv.key.subarray(this.#strip).toString('utf8');
      const rev = Number(ev.kv.mod_revision);
      return String(ev.type).toLowerCase() === 'delete' ? { key, rev } : { key, value: Buffer.from(ev.kv.value), rev };
    });
    this.#next = events.at(-1)!.rev + 1;
    try {
      this.#onChange(events);
    } catch (err) {
      this.#report(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #report(err: Error): void {
    if (this.#onError) this.#onError(err);
    else
      queueMicrotask(() => {
        throw err;
      });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClosed();
    if (this.#timer) clearTimeout(this.#timer);
    const w = this.#watcher;
    this.#watcher = undefined;
    if (!w) return;
    // Cancelling waits for etcd's confirmation; do not wait forever on a dead member.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([w.cancel().catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, 1_000)))]);
    clearTimeout(timer);
  }
}
