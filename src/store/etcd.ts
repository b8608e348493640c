/**
 * The cluster store: an etcd cluster (v3 API; tested with Debian's etcd 3.4.23) through the
 * `etcd3` client. Every KMS node is a client of the same etcd cluster.
 *
 * Layout under the namespace `prefix` (e.g. `/minkms/`):
 *
 * - `<prefix>data/<key>`: one etcd key per store key; the store value is the etcd value and
 *   the store revision is the etcd `mod_revision`. `range('')` covers exactly `<prefix>data/`.
 * - `<prefix>meta/txn/<time>-<random>`: one empty "commit token" per commit (see below),
 *   removed again by later commits once a minute old.
 * - Everything else under `<prefix>` (members, elections, …) is left to the cluster layer and
 *   is invisible to `get`/`range`/`watch`. Two KMS clusters need namespaces where neither is
 *   inside the other's `data/` or `meta/`.
 *
 * A commit is ONE etcd transaction: condition `rev: 0` compares `create_revision == 0`
 * (absent), any other `rev` compares `mod_revision == rev`; on success every put/delete is
 * applied at one new revision (etcd's store-wide, strictly increasing revision; a commit
 * always writes its token, so even a commit of deletes of missing keys gets a new revision).
 * Reads are linearizable (they go through the raft leader's read index), so a condition
 * built from a read is never based on a stale member.
 *
 * Commit tokens make a commit safe to send again. The transaction also requires its token to
 * be absent and creates it; when an attempt's answer is lost (the member died, the leader
 * changed, the deadline of the attempt passed), the store sends the same transaction again:
 * if the first attempt was applied, the second fails on the token, finds it, and reports the
 * first one's success and revision; otherwise it is applied once. So a leader election or a
 * member restart costs a delay, not an error. (Tokens are deleted once a minute old, so the
 * guarantee assumes the etcd members and the KMS nodes' clocks agree within about a minute,
 * and that no attempt is still in flight inside etcd a minute later.)
 *
 * Limits. etcd refuses a transaction with more than `--max-txn-ops` operations (default 128)
 * or a request larger than `--max-request-bytes` (default 1.5 MiB). A commit costs its
 * mutations plus up to two operations (token, clean-up) and its conditions plus one. A restore
 * or a root-key rotation rewrites every record in one commit, and splitting it would break its
 * atomicity, so the store does not split: it throws `EtcdLimitError` naming the flag. Run
 * every member with, for example, `--max-txn-ops=10000 --max-request-bytes=33554432` (the
 * test cluster does).
 *
 * Failures. Every operation is bounded by `timeoutMs` (5 s by default) and each attempt on
 * one member by `attemptTimeoutMs` (2 s by default), so that an unresponsive member or an
 * election does not use up the whole budget. Attempts are retried on another member until
 * the budget is spent; then the operation throws `StoreUnavailableError` (no quorum, or no
 * member reachable) instead of hanging. For a commit, `ambiguous: true` on that error means
 * some attempt reached a member without an answer: it may still have been applied.
 *
 * Watches (`watch`, beyond the Store port, for cache invalidation) resume after a broken
 * stream from the revision after the last event they delivered, so no event is lost or
 * repeated across reconnects. Every call carries etcd's "require leader" flag, so a member cut
 * off from the majority ends the watches it serves and they move to another member. If the
 * resume revision has been compacted away in the meantime (etcd `--auto-compaction-*`), the
 * watch ends with `StoreWatchCompactedError`: reload with `rangeWithRevision` and watch again.
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
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
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
   * Bound of a single attempt on one member (and of the auth-token exchange), so that an
   * unresponsive member or a leader election does not use up the whole `timeoutMs`; 2000 ms
   * by default, plus 1 ms per 10 KiB of a large commit. (This replaces a dial timeout: the
   * `dialTimeout` option of etcd3 1.1.2 is not used by etcd3 at all.)
   */
  attemptTimeoutMs?: number;
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
const DEFAULT_ATTEMPT_TIMEOUT_MS = 2_000;
const RANGE_PAGE = 500;
const DATA = 'data/';
const TOKENS = 'meta/txn/';
/** Commit tokens older than this are deleted by later commits. */
const TOKEN_GRACE_MS = 60_000;
/** How often a store adds the token clean-up to a commit. */
const TOKEN_SWEEP_EVERY_MS = 10_000;
const EMPTY = Buffer.alloc(0);
const RECOMMENDED_LIMITS = '--max-txn-ops=10000 --max-request-bytes=33554432';
const WATCH_BACKOFF_MIN_MS = 50;
const WATCH_BACKOFF_MAX_MS = 2_000;

/** gRPC call options (the deadline), typed through etcd3 rather than its grpc-js dependency. */
type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>;
type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * The gRPC library etcd3 itself uses (resolved from etcd3's location, so it is always the
 * same copy), for one thing etcd3 does not offer: request metadata. Typed minimally here.
 */
interface GrpcInterceptors {
  InterceptingCall: new (
    next: unknown,
    requester: {
      start(
        metadata: { set(key: string, value: string): void },
        listener: unknown,
        next: (metadata: unknown, listener: unknown) => void,
      ): void;
    },
  ) => unknown;
}
const grpc = createRequire(createRequire(import.meta.url).resolve('etcd3'))('@grpc/grpc-js') as GrpcInterceptors;

/**
 * Adds etcd's "require leader" metadata (`hasleader: true`) to every call. A member that has
 * lost its leader (partitioned from the majority, or the majority is down) then refuses
 * requests at once ("etcdserver: no leader", safe to retry elsewhere) instead of letting them
 * time out, and cancels the watch streams it serves within about three election timeouts, so
 * that a watch never sits silently on a member that no longer sees new writes.
 */
const requireLeader = (options: unknown, nextCall: (options: unknown) => unknown): unknown =>
  new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('hasleader', 'true');
      next(metadata, listener);
    },
  });

/** Thrown by the per-member breaker instead of calling an endpoint known to be failing. */
class MemberSkippedError extends Error {}

/** Runs the call as is: retries are done by EtcdStore, which knows whether a retry is safe. */
const passThrough = { execute: <T>(fn: (ctx: unknown) => T): T => fn({ signal: new AbortController().signal, attempt: 0 }) };

/**
 * A small per-member circuit breaker: after a member failed with "unavailable" or a deadline,
 * calls skip it (etcd3 then tries the next member) for 0.5 s, doubling while it keeps
 * failing, up to 4 s; after the pause one call probes it again. (When every member is being
 * skipped, EtcdStore keeps retrying until its deadline, so the cap bounds how long a
 * recovered cluster stays unused.)
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
          openUntil = Date.now() + Math.min(4_000, 500 * 2 ** Math.min(failures - 1, 3));
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
  if (/No connection established|ECONNREFUSED|etcdserver: no leader|etcdserver: too many requests|etcdserver: not capable/.test(msg))
    return { kind: 'unsent' };
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
  /**
   * The underlying client, to share with the cluster layer (leases, elections) of this node.
   * Calls made through it directly carry the require-leader flag and skip failing members,
   * but are not retried and have no deadline unless the caller sets one.
   */
  readonly client: Etcd3;
  readonly #data: Buffer;
  readonly #tokens: Buffer;
  #lastSweep = 0;
  readonly #timeoutMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #watches = new Set<WatchLoop>();
  #closed = false;

  constructor(options: EtcdStoreOptions) {
    const { endpoints, tls } = options;
    if (!Array.isArray(endpoints) || endpoints.length === 0) throw new Error('etcd store: no endpoints given');
    if (typeof options.prefix !== 'string' || options.prefix === '')
      throw new Error('etcd store: the prefix (namespace) must not be empty');
    for (const e of endpoints) {
      if (!/^https?:\/\/[^/]+$/.test(e))
        throw new Error(`etcd store: endpoint ${JSON.stringify(e)} is not of the form http(s)://host:port`);
      if (tls && e.startsWith('http://')) throw new Error(`etcd store: TLS options given, but endpoint ${e} is http://`);
    }
    if ((options.username === undefined) !== (options.password === undefined))
      throw new Error('etcd store: give both username and password, or neither');
    if (tls && (tls.cert === undefined) !== (tls.key === undefined))
      throw new Error('etcd store: give both the TLS client certificate and key, or neither');
    this.#timeoutMs = positive(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.#attemptTimeoutMs = positive(options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS, 'attemptTimeoutMs');
    this.prefix = options.prefix.endsWith('/') ? options.prefix : options.prefix + '/';
    this.endpoints = [...endpoints];
    this.#data = Buffer.from(this.prefix + DATA);
    this.#tokens = Buffer.from(this.prefix + TOKENS);

    const etcdOptions: IOptions = {
      hosts: [...endpoints],
      defaultCallOptions: () => ({ interceptors: [requireLeader] }) as CallOptions,
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
        callOptions: () => ({ deadline: Date.now() + this.#attemptTimeoutMs }),
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
    const res = await this.#call('get', (opts) => this.client.kv.range({ key: this.#key(key) }, opts));
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
    return this.#call('range', async (opts) => {
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
    const now = Date.now();
    const token = this.#token(now);
    const compare: ICompare[] = [{ key: token, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }];
    for (const c of conditions) {
      if (!Number.isSafeInteger(c.rev) || c.rev < 0)
        throw new TypeError(`etcd store: condition on ${c.key} has an invalid revision ${c.rev}`);
      const key = this.#key(c.key);
      compare.push(
        c.rev === 0
          ? { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }
          : { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: c.rev },
      );
    }
    // etcd refuses a transaction that touches a key twice: the last mutation of a key wins.
    const last = new Map<string, Mutation>();
    for (const m of mutations) {
      last.delete(m.key);
      last.set(m.key, m);
    }
    let bytes = 0;
    const success: IRequestOp[] = [...last.values()].map((m) => {
      const key = this.#key(m.key);
      bytes += key.length + (m.value?.length ?? 0);
      return m.value === undefined ? { request_delete_range: { key } } : { request_put: { key, value: Buffer.from(m.value) } };
    });
    success.push({ request_put: { key: token, value: EMPTY } });
    // Now and then, remove the tokens (of every node) that are old enough never to be needed.
    const sweep = now - this.#lastSweep >= TOKEN_SWEEP_EVERY_MS;
    if (sweep) this.#lastSweep = now;
    if (sweep) success.push({ request_delete_range: { key: this.#tokens, range_end: this.#token(now - TOKEN_GRACE_MS, true) } });
    const txn = { compare, success, failure: [{ request_range: { key: token } }] };
    try {
      const res = await this.#call('commit', (opts) => this.client.kv.txn(txn, opts), Math.floor(bytes / 10_240));
      if (res.succeeded) return { ok: true, rev: Number(res.header.revision) };
      // Our token exists: an earlier attempt whose answer was lost was applied.
      const earlier = res.responses[0]?.response_range?.kvs[0];
      if (earlier) return { ok: true, rev: Number(earlier.mod_revision) };
      return { ok: false, rev: Number(res.header.revision) };
    } catch (err) {
      if (err instanceof EtcdLimitError) {
        throw new EtcdLimitError(
          `etcd refused a commit of ${mutations.length} mutations and ${conditions.length} conditions (~${bytes} bytes): ${errorMessage(err.cause)}. ` +
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
    const loop = new WatchLoop(this.client, start, prefixEnd(start), this.#data.length, onChange, options, () =>
      this.#watches.delete(loop),
    );
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

  /** The token key for time `ms` (fixed-width time first, so tokens sort by age); `bound`: no random part. */
  #token(ms: number, bound = false): Buffer {
    const time = Math.max(0, Math.floor(ms)).toString(36).padStart(10, '0');
    return Buffer.from(this.prefix + TOKENS + time + (bound ? '' : '-' + randomBytes(12).toString('hex')));
  }

  #entry(kv: IKeyValue): StoreEntry {
    return { key: kv.key.subarray(this.#data.length).toString('utf8'), value: Buffer.from(kv.value), rev: Number(kv.mod_revision) };
  }

  /**
   * Runs one etcd call within the store's bounds, again on another member after a failure
   * that may be transient, until `timeoutMs` is spent. Only safe calls come here: reads, and
   * commits (made idempotent by their token).
   */
  async #call<T>(op: string, fn: (opts: CallOptions) => Promise<T>, extraAttemptMs = 0): Promise<T> {
    if (this.#closed) throw new Error(`etcd store: ${op} after close`);
    const deadline = Date.now() + this.#timeoutMs;
    let lastErr: unknown;
    let attempts = 0;
    let maybeApplied = false;
    let pause = 20;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      attempts++;
      try {
        return await fn({ deadline: Date.now() + Math.min(remaining, this.#attemptTimeoutMs + extraAttemptMs) });
      } catch (err) {
        if (this.#closed || err instanceof ClientClosedError) throw new Error(`etcd store: closed during ${op}`, { cause: err });
        const failure = classify(err);
        if (failure.kind === 'limit') throw new EtcdLimitError(`etcd refused the ${op}: ${errorMessage(err)}`, failure.flag, err);
        if (failure.kind === 'fatal') throw new Error(`etcd ${op} failed: ${errorMessage(err)}`, { cause: err });
        if (failure.kind === 'ambiguous') maybeApplied = true;
        lastErr = err;
        await sleep(Math.max(0, Math.min(pause, deadline - Date.now())));
        pause = Math.min(pause * 2, 250);
      }
    }
    const ambiguous = maybeApplied && op === 'commit';
    throw new StoreUnavailableError(
      `etcd ${op}: no quorum of the etcd cluster (${this.endpoints.join(', ')}) answered within ${this.#timeoutMs} ms ` +
        `(${attempts} attempts${lastErr === undefined ? '' : `; last error: ${errorMessage(lastErr)}`})` +
        (ambiguous ? '; an attempt reached a member without an answer, so the commit may still have been applied' : ''),
      { cause: lastErr, ambiguous },
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

  constructor(
    client: Etcd3,
    start: Buffer,
    end: Buffer,
    strip: number,
    onChange: (events: StoreEvent[]) => void,
    options: WatchOptions,
    onClosed: () => void,
  ) {
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
        ? new StoreWatchCompactedError(
            `etcd watch cannot resume from revision ${this.#next}: it was compacted (${err.message}); reload and watch again`,
            { cause: err },
          )
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
