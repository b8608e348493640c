/**
 * The cluster store: an etcd cluster (v3 API; tested with Debian's etcd 3.4.23) through the
 * `etcd3` client. Every KMS node is a client of the same etcd cluster.
 *
 * Layout under the namespace `prefix` (e.g. `/minkms/`):
 *
 * - `<prefix>data/<key>`: one etcd key per store key; the store value is the etcd value and
 *   the store revision is the etcd `mod_revision`. `range('')` covers exactly `<prefix>data/`.
 * - `<prefix>data` (no slash): the "head", an empty value rewritten by every commit, so that
 *   its `mod_revision` is the revision of the namespace's latest commit (see Freshness).
 * - `<prefix>meta/txn/<time>-<random>`: one empty "commit token" per commit (see below),
 *   removed again by later commits once a minute old.
 * - Everything else under `<prefix>` (members, elections, …) is left to the cluster layer and
 *   is invisible to `get`/`range`/`watch`. Two KMS clusters need namespaces where neither is
 *   inside the other's `data/` or `meta/`.
 *
 * A commit is ONE etcd transaction: condition `rev: 0` compares `create_revision == 0`
 * (absent), any other `rev` compares `mod_revision == rev`; on success every put/delete is
 * applied at one new revision (etcd's store-wide, strictly increasing revision; a commit
 * always writes its token and the head, so even a commit of deletes of missing keys gets a
 * new revision). Reads are linearizable (they go through the raft leader's read index), so a
 * condition built from a read is never based on a stale member.
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
 * mutations plus up to three operations (token, head, clean-up) and its conditions plus one.
 * A restore or a root-key rotation rewrites every record in one commit, and splitting it
 * would break its atomicity, so the store does not split: it throws `EtcdLimitError` naming
 * the flag. Run every member with, for example, `--max-txn-ops=10000
 * --max-request-bytes=33554432` (the test cluster does).
 *
 * Members. The store talks to each member through its own connection and keeps a view of
 * each one's health, refreshed by a probe every `maxStalenessMs / 5` (a linearizable read of
 * the head on every member, answered within `maxStalenessMs / 2`): `ok`, `no-leader` (alive,
 * but its raft group has no leader: an election, or no quorum), `slow` (no answer in time: a
 * hung or paused process, or a busy one) or `down` (connection refused or dropped). Calls go
 * to the healthiest member first. An attempt in flight on a member found `down`, `no-leader`,
 * or hanging while the other members answer is abandoned and sent elsewhere (safe: see the
 * tokens), so a hung member costs about one probe timeout, not an attempt timeout; when every
 * member is slow (a loaded cluster) attempts keep waiting.
 *
 * Failures. Every operation is bounded by `timeoutMs` (5 s by default; or the caller's
 * earlier deadline) and each attempt on one member by `attemptTimeoutMs` (2 s by default,
 * at most half the timeout). "etcdserver: no leader" (an election in progress) is not held
 * against a member: the call is retried on the others, then again after a short pause, until
 * an election completes or the budget is spent. When the budget is spent the operation throws
 * `StoreUnavailableError` (for a commit, `ambiguous: true` if some attempt reached a member
 * without an answer: it may still be applied later) instead of hanging.
 *
 * Quorum breaker. When the store knows there is no quorum — a majority of the members is
 * down (connection refused), or no member has answered a linearizable read for `timeoutMs`,
 * or an operation has just spent its whole budget — it opens a breaker: every operation then
 * fails at once with `StoreUnavailableError` (not ambiguous: nothing is sent), and operations
 * in flight stop retrying. The probe closes it as soon as a member answers a linearizable
 * read again. So N queued writes without quorum fail within one timeout, not N timeouts.
 * `health()` reports it (and a full store: etcd's space quota, `StoreFullError`).
 *
 * Watches (`watch`, beyond the Store port, for cache invalidation) resume after a broken
 * stream from the revision after the last event they delivered, so no event is lost or
 * repeated across reconnects. Every call carries etcd's "require leader" flag, so a member cut
 * off from the majority ends the watches it serves and they move to another member. If the
 * resume revision has been compacted away in the meantime (etcd `--auto-compaction-*`), the
 * watch ends with `StoreWatchCompactedError`: reload with `rangeWithRevision` and watch again.
 *
 * Freshness. A watch on a member that hangs without closing its connection (a paused
 * process, a stuck disk) delivers nothing and reports no error; etcd's progress notifications
 * cannot tell (they come from that same member, and etcd 3.4 may send a requested one ahead of
 * pending events). So freshness is checked against a quorum: each successful probe started at
 * time T returns the head revision H, which covers every commit acknowledged before T; once a
 * watch has applied everything up to H, the state it feeds is complete as of T. A watch that
 * has not caught up with a probe within `maxStalenessMs / 2`, or whose member the probe finds
 * failing, is moved to a healthier member at once. `freshness()` says `fresh` while the state
 * is complete as of `maxStalenessMs` ago; `stale` when it may lag more although some member
 * serves linearizable reads (the node must then not serve reads); and `offline` when none can
 * (no quorum, or an election in progress): then nothing can be committed either, so the
 * state misses at most what was committed in the last bound before (the documented fallback:
 * reads go on from memory). A node cut off from every member while the others still have a
 * quorum cannot tell that case from a quorum loss: it is `offline` too (docs/clustering.md).
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
  type IDuplexStream,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  StoreFullError,
  StoreUnavailableError,
  type CommitOptions,
  type CommitResult,
  type Condition,
  type Mutation,
  type Store,
  type StoreEntry,
  type StoreHealth,
} from './store.js';

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
   * (at most half of `timeoutMs`) by default, plus 1 ms per 10 KiB of a large commit. (This
   * replaces a dial timeout: the `dialTimeout` option of etcd3 1.1.2 is not used by etcd3.)
   */
  attemptTimeoutMs?: number;
  /**
   * The staleness bound of the state a watch feeds (see Freshness): 1000 ms by default. The
   * members are probed five times per bound.
   */
  maxStalenessMs?: number;
  /** Where errors of the store's own background work go (a throwing listener); ignored by default. */
  report?: (err: Error) => void;
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
   * cancelled it), and when `onChange` throws or its promise rejects (the watch continues
   * then, but no longer counts as fresh). Without it, the error is thrown asynchronously (an
   * uncaught exception): a cache must not go stale silently.
   */
  onError?: (err: Error) => void;
}

export type FreshnessState = 'fresh' | 'stale' | 'offline';

/** How current the state fed by a watch is (see Freshness in the module comment). */
export interface Freshness {
  /**
   * `fresh`: complete as of at most the bound ago. `stale`: a quorum answers but the state may
   * lag more than the bound: do not serve reads. `offline`: no quorum reachable: serving from
   * memory is the documented fallback (only writes committed in the last bound before the
   * quorum was lost can be missing).
   */
  readonly state: FreshnessState;
  /** The state holds every write acknowledged before this time (ms since the epoch; 0: never confirmed). */
  readonly lastFreshAt: number;
  /** Last time a quorum answered: a linearizable read or a commit succeeded (ms since the epoch; 0: never). */
  readonly lastQuorumAt: number;
  /** Revisions known to be committed but not yet applied (0 when caught up or unknown). */
  readonly lagRevisions: number;
  /** The member the watch is connected to, if any. */
  readonly member?: string;
  /** The bound (`maxStalenessMs`). */
  readonly boundMs: number;
}

export interface StoreWatch {
  /** Resolves once the watch is established for the first time. */
  readonly ready: Promise<void>;
  /** How current the state fed by this watch is. */
  freshness(): Freshness;
  /** Stops the watch; no `onChange` call happens after it resolves. */
  close(): Promise<void>;
}

/** What the probe knows about one member. */
export type MemberState = 'unknown' | 'ok' | 'no-leader' | 'slow' | 'down';

export interface MemberHealth {
  readonly endpoint: string;
  readonly state: MemberState;
  /** Last successful call or probe (ms since the epoch; 0: never). */
  readonly okAt: number;
  /** Round trip of the last successful probe, in ms. */
  readonly latencyMs: number;
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
const DEFAULT_MAX_STALENESS_MS = 1_000;
const RANGE_PAGE = 500;
const DATA = 'data/';
const HEAD = 'data';
const TOKENS = 'meta/txn/';
/** Commit tokens older than this are deleted by later commits. */
const TOKEN_GRACE_MS = 60_000;
/** How often a store adds the token clean-up to a commit. */
const TOKEN_SWEEP_EVERY_MS = 10_000;
const EMPTY = Buffer.alloc(0);
const RECOMMENDED_LIMITS = '--max-txn-ops=10000 --max-request-bytes=33554432';
const WATCH_BACKOFF_MIN_MS = 50;
const WATCH_BACKOFF_MAX_MS = 2_000;
/** A member whose call just failed is tried last for this long (the probe clears it earlier). */
const AVOID_MS = 1_000;
/** How often a full store checks whether space was freed (etcd: the NOSPACE alarm). */
const FULL_RECHECK_MS = 1_000;
/** Pending freshness checks kept per watch (older ones give an older time anyway). */
const MAX_PENDING_PROBES = 64;

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

/** An attempt given up because its member was found failing or the quorum breaker opened. */
class AbandonedError extends Error {}

/** Runs the call as is: retries are done by EtcdStore, which knows whether a retry is safe. */
const passThrough = { execute: <T>(fn: (ctx: unknown) => T): T => fn({ signal: new AbortController().signal, attempt: 0 }) };

/**
 * The same as the policy of a one-member client: asynchronous, because etcd3 reports a failed
 * watch stream with `execute(() => { throw err }).catch(…)`, and a synchronous throw there
 * would escape as an uncaught exception.
 */
const passThroughAsync = {
  execute: async <T>(fn: (ctx: unknown) => T): Promise<Awaited<T>> => await fn({ signal: new AbortController().signal, attempt: 0 }),
};

/**
 * The per-member circuit breaker of the shared client (`EtcdStore.client`, used by the cluster
 * layer for leases and membership): after a member failed with "unavailable" or a deadline,
 * calls skip it (etcd3 then tries the next member) for 0.5 s, doubling while it keeps
 * failing, up to 4 s. "etcdserver: no leader" does not count: the member is alive and the
 * cluster is electing a leader (or has no quorum); skipping it would keep the client away
 * from the members that serve first once the election is over.
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
        if ((err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError) && !isNoLeader(err)) {
          failures++;
          openUntil = Date.now() + Math.min(4_000, 500 * 2 ** Math.min(failures - 1, 3));
        }
        throw err;
      }
    },
  } as unknown as FaultPolicy;
}

type Failure =
  | { kind: 'unsent' | 'ambiguous' | 'compacted' | 'fatal' | 'full'; member: MemberState }
  | { kind: 'limit'; flag: '--max-txn-ops' | '--max-request-bytes'; member: MemberState };

function isNoLeader(err: unknown): boolean {
  return /etcdserver: no leader/.test(errorMessage(err));
}

/** What an error from etcd3 means for a retry, and for the member that answered it. */
function classify(err: unknown): Failure {
  if (err instanceof MemberSkippedError) return { kind: 'unsent', member: 'down' };
  if (err instanceof AbandonedError) return { kind: 'ambiguous', member: 'slow' };
  const msg = errorMessage(err);
  if (msg.includes('too many operations in txn request')) return { kind: 'limit', flag: '--max-txn-ops', member: 'ok' };
  if (msg.includes('request is too large') || /message larger than max/i.test(msg))
    return { kind: 'limit', flag: '--max-request-bytes', member: 'ok' };
  if (msg.includes('required revision has been compacted')) return { kind: 'compacted', member: 'ok' };
  // etcd's space quota (NOSPACE alarm): refused before or at apply time, never applied.
  if (/database space exceeded|etcdserver: no space/.test(msg)) return { kind: 'full', member: 'ok' };
  // Refused before the request was handed to raft: safe to send again.
  if (/etcdserver: no leader/.test(msg)) return { kind: 'unsent', member: 'no-leader' };
  if (/No connection established|ECONNREFUSED/.test(msg)) return { kind: 'unsent', member: 'down' };
  if (/etcdserver: too many requests|etcdserver: not capable/.test(msg)) return { kind: 'unsent', member: 'slow' };
  if (err instanceof GRPCDeadlineExceededError) return { kind: 'ambiguous', member: 'slow' };
  if (err instanceof GRPCUnavailableError) {
    // A connection reset or dropped under the call: the member went away (maybe after the request arrived).
    return { kind: 'ambiguous', member: /ECONNRESET|Connection dropped|EPIPE|socket/i.test(msg) ? 'down' : 'slow' };
  }
  if (
    err instanceof GRPCCancelledError ||
    err instanceof GRPCInternalError ||
    err instanceof GRPCUnknownError ||
    err instanceof GRPCAbortedError ||
    err instanceof GRPCResourceExhastedError
  ) {
    return { kind: 'ambiguous', member: 'slow' };
  }
  return { kind: 'fatal', member: 'ok' };
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

/** A one-shot signal a call can race against; `cancel` forgets the waiter. */
interface Signal {
  readonly promise: Promise<never>;
  cancel(): void;
}

/** A set of waiters fired together (a member found failing, the breaker opening). */
class Alarm {
  readonly #waiters = new Set<(err: Error) => void>();

  wait(): Signal {
    let fire!: (err: Error) => void;
    const promise = new Promise<never>((_, reject) => (fire = reject));
    // Nobody may be racing it any more when it fires: never an unhandled rejection.
    promise.catch(() => undefined);
    this.#waiters.add(fire);
    return { promise, cancel: () => this.#waiters.delete(fire) };
  }

  fire(err: Error): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w(err);
  }
}

/** One etcd member: its own client (so a call goes exactly there) and what the store knows of it. */
class Member implements MemberHealth {
  readonly endpoint: string;
  readonly client: Etcd3;
  state: MemberState = 'unknown';
  okAt = 0;
  latencyMs = 0;
  /** Start of the probe in flight (0: none). */
  probing = 0;
  /** Calls try the member last until then. */
  avoidUntil = 0;
  readonly trouble = new Alarm();

  constructor(endpoint: string, client: Etcd3) {
    this.endpoint = endpoint;
    this.client = client;
  }

  ok(now: number): void {
    this.state = 'ok';
    this.okAt = now;
    this.avoidUntil = 0;
  }

  failed(state: MemberState, now: number): void {
    if (state === 'ok' || state === 'unknown') return;
    this.state = state;
    // "No leader" is the cluster's state, not the member's fault: keep trying it in turn.
    if (state !== 'no-leader') this.avoidUntil = now + AVOID_MS;
    // Attempts in flight there cannot succeed: the member is gone, or has no leader to commit
    // with (a proposal forwarded to a dead leader is dropped silently). A merely slow member
    // (a busy one, under load) keeps them: abandoning them would only add load.
    if (state === 'down' || state === 'no-leader') this.trouble.fire(new AbandonedError(`etcd member ${this.endpoint} is ${state}`));
  }
}

export class EtcdStore implements Store {
  readonly kind = 'etcd';
  readonly prefix: string;
  readonly endpoints: readonly string[];
  /**
   * The underlying client, to share with the cluster layer (leases, elections) of this node.
   * Calls made through it directly carry the require-leader flag and skip failing members,
   * but are not retried and have no deadline unless the caller sets one.
   */
  readonly client: Etcd3;
  readonly timeoutMs: number;
  readonly maxStalenessMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #probeIntervalMs: number;
  readonly #probeTimeoutMs: number;
  readonly #members: Member[];
  readonly #data: Buffer;
  readonly #head: Buffer;
  readonly #tokens: Buffer;
  readonly #report: (err: Error) => void;
  #lastSweep = 0;
  readonly #watches = new Set<WatchLoop>();
  #closed = false;
  #probeTimer: NodeJS.Timeout | undefined;
  /** Highest head revision a probe has seen (the latest commit known to a quorum). */
  #headRev = 0;
  #lastQuorumAt = 0;
  /** Since when the quorum breaker is open, and why (undefined: closed). */
  #breaker: { since: number; reason: string } | undefined;
  readonly #breakerAlarm = new Alarm();
  #full: { since: number; detail: string } | undefined;
  #fullErrors = 0;
  #fullCheckAt = 0;
  readonly #freshnessListeners = new Set<(f: Freshness) => void>();
  #lastFreshness: FreshnessState | undefined;

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
    this.timeoutMs = positive(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.#attemptTimeoutMs = positive(
      options.attemptTimeoutMs ?? Math.min(DEFAULT_ATTEMPT_TIMEOUT_MS, this.timeoutMs / 2),
      'attemptTimeoutMs',
    );
    this.maxStalenessMs = positive(options.maxStalenessMs ?? DEFAULT_MAX_STALENESS_MS, 'maxStalenessMs');
    this.#probeIntervalMs = Math.min(1_000, Math.max(20, this.maxStalenessMs / 5));
    this.#probeTimeoutMs = Math.max(50, Math.min(this.#attemptTimeoutMs, this.maxStalenessMs / 2));
    this.#report = options.report ?? (() => undefined);
    this.prefix = options.prefix.endsWith('/') ? options.prefix : options.prefix + '/';
    this.endpoints = [...endpoints];
    this.#data = Buffer.from(this.prefix + DATA);
    this.#head = Buffer.from(this.prefix + HEAD);
    this.#tokens = Buffer.from(this.prefix + TOKENS);

    const clientOptions = (hosts: string[], host: () => FaultPolicy): IOptions => {
      const o: IOptions = {
        hosts,
        defaultCallOptions: () => ({ interceptors: [requireLeader] }) as CallOptions,
        faultHandling: { global: passThrough as unknown as FaultPolicy, host },
        grpcOptions: {
          // A range page or a restore transaction may be large; etcd enforces its own limit.
          'grpc.max_receive_message_length': -1,
          'grpc.max_send_message_length': -1,
          // Detect a member that vanished without closing the connection (etcd's default
          // --grpc-keepalive-min-time is 5 s; pinging more often gets the connection closed).
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': 5_000,
          // A member that comes back is connected to again within a second. grpc's default
          // backoff grows to minutes, and meanwhile the member counts as down: one more member
          // lost would open the breaker ("no quorum") while a quorum is in fact there.
          'grpc.initial_reconnect_backoff_ms': 100,
          'grpc.max_reconnect_backoff_ms': 1_000,
        },
      };
      if (options.username !== undefined) {
        o.auth = {
          username: options.username,
          password: options.password!,
          callOptions: () => ({ deadline: Date.now() + this.#attemptTimeoutMs }),
        };
      }
      if (tls) {
        o.credentials = {
          // null: the system's roots (grpc's createSsl accepts it; etcd3's type says Buffer).
          rootCertificate: (tls.ca === undefined ? null : toBuffer(tls.ca)) as Buffer,
          ...(tls.key === undefined ? {} : { privateKey: toBuffer(tls.key) }),
          ...(tls.cert === undefined ? {} : { certChain: toBuffer(tls.cert) }),
        };
      }
      return o;
    };
    this.client = new Etcd3(clientOptions([...endpoints], () => memberBreaker()));
    this.#members = endpoints.map((e) => new Member(e, new Etcd3(clientOptions([e], () => passThroughAsync as unknown as FaultPolicy))));
  }

  async get(key: string): Promise<StoreEntry | undefined> {
    const res = await this.#call('get', (c, opts) => c.kv.range({ key: this.#key(key) }, opts));
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
    return this.#call('range', async (c, opts) => {
      const entries: StoreEntry[] = [];
      let from = start;
      let rev = 0;
      for (;;) {
        const res = await c.kv.range({ key: from, range_end: end, limit: RANGE_PAGE, revision: rev }, opts);
        if (rev === 0) rev = Number(res.header.revision);
        for (const kv of res.kvs) entries.push(this.#entry(kv));
        const last = res.kvs.at(-1);
        if (!res.more || !last) return { entries, rev };
        from = Buffer.concat([last.key, Buffer.of(0)]);
      }
    });
  }

  async commit(conditions: readonly Condition[], mutations: readonly Mutation[], options: CommitOptions = {}): Promise<CommitResult> {
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
    // The head: its mod_revision tells a probe the revision of the latest commit.
    success.push({ request_put: { key: this.#head, value: EMPTY } });
    // Now and then, remove the tokens (of every node) that are old enough never to be needed.
    const sweep = now - this.#lastSweep >= TOKEN_SWEEP_EVERY_MS;
    if (sweep) this.#lastSweep = now;
    if (sweep) success.push({ request_delete_range: { key: this.#tokens, range_end: this.#token(now - TOKEN_GRACE_MS, true) } });
    const txn = { compare, success, failure: [{ request_range: { key: token } }] };
    try {
      const res = await this.#call('commit', (c, opts) => c.kv.txn(txn, opts), Math.floor(bytes / 10_240), options.deadline);
      this.#full = undefined;
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
   * order, in batches (one batch never splits a commit). Survives broken streams, member
   * restarts and hung members without losing or repeating events; see `WatchOptions` for how
   * it ends. If `onChange` returns a promise, the batch counts as applied (for `freshness`)
   * once it resolves; such promises must resolve in the order of the batches.
   */
  watch(prefix: string, onChange: (events: StoreEvent[]) => void | PromiseLike<unknown>, options: WatchOptions = {}): StoreWatch {
    if (this.#closed) throw new Error('etcd store: watch after close');
    if (options.fromRev !== undefined && (!Number.isSafeInteger(options.fromRev) || options.fromRev < 1)) {
      throw new TypeError(`etcd store: invalid watch start revision ${options.fromRev}`);
    }
    const filter = this.#key(prefix);
    const loop = new WatchLoop(this.#watchContext(), this.#head, prefixEnd(filter), filter, this.#data.length, onChange, options);
    this.#watches.add(loop);
    loop.start();
    // Confirm the new watch's freshness now rather than at the next tick.
    if (this.#probeTimer) this.#tick();
    else this.#startProbes();
    return loop;
  }

  /** The freshness of the state the watches feed: the worst of them (`stale` with none; `offline` while no quorum). */
  freshness(now = Date.now()): Freshness {
    let worst: Freshness | undefined;
    const rank = { fresh: 0, offline: 1, stale: 2 } as const;
    for (const w of this.#watches) {
      const f = w.freshness(now);
      if (!worst || rank[f.state] > rank[worst.state] || (f.state === worst.state && f.lastFreshAt < worst.lastFreshAt)) worst = f;
    }
    return (
      worst ?? {
        state: this.#quorumReachable(now) ? 'stale' : 'offline',
        lastFreshAt: 0,
        lastQuorumAt: this.#lastQuorumAt,
        lagRevisions: 0,
        boundMs: this.maxStalenessMs,
      }
    );
  }

  /**
   * `freshness().state !== 'stale'`, without allocating: whether the node may serve reads from
   * the state its watches feed (cheap enough for every request).
   */
  readable(now = Date.now()): boolean {
    let all = this.#watches.size > 0;
    for (const w of this.#watches) all &&= w.fresh(now);
    return all || !this.#quorumReachable(now);
  }

  /** Calls `listener` whenever `freshness().state` changes (checked at every probe and applied batch). Returns an unsubscribe function. */
  onFreshness(listener: (f: Freshness) => void): () => void {
    this.#freshnessListeners.add(listener);
    return () => this.#freshnessListeners.delete(listener);
  }

  /** Writes expected to fail now (no quorum, store full), and the count of commits refused for lack of space. */
  health(): StoreHealth {
    const now = Date.now();
    if (this.#full && now - this.#fullCheckAt >= FULL_RECHECK_MS) {
      this.#fullCheckAt = now;
      void this.#recheckFull();
    }
    if (this.#full) return { write: 'full', since: this.#full.since, detail: this.#full.detail, fullErrors: this.#fullErrors };
    if (this.#breaker)
      return { write: 'unavailable', since: this.#breaker.since, detail: this.#breaker.reason, fullErrors: this.#fullErrors };
    return { write: 'ok', since: 0, detail: '', fullErrors: this.#fullErrors };
  }

  /** What the store knows of each member (for status output and tests). */
  members(): MemberHealth[] {
    return this.#members.map((m) => ({ endpoint: m.endpoint, state: m.state, okAt: m.okAt, latencyMs: m.latencyMs }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probeTimer);
    this.#breakerAlarm.fire(new Error('etcd store: closed'));
    await Promise.all([...this.#watches].map((w) => w.close()));
    this.client.close();
    for (const m of this.#members) {
      m.trouble.fire(new Error('etcd store: closed'));
      m.client.close();
    }
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

  /** How much a call should avoid a member now: 0 = healthy; hung, failing or recently failed ones rank higher. */
  #rank(m: Member, now: number): number {
    let r = { ok: 0, unknown: 1, 'no-leader': 2, slow: 3, down: 4 }[m.state];
    // A probe outstanding for two intervals: the member is probably hung, whatever it said before.
    if (m.probing !== 0 && now - m.probing > 2 * this.#probeIntervalMs) r = Math.max(r, 3);
    if (m.avoidUntil > now) r += 5;
    return r;
  }

  /** Members in the order calls should try them: healthy and fast first; hung, failing or avoided ones last. */
  #ordered(now: number): Member[] {
    // Shuffle first: equal members share the load.
    const list = [...this.#members];
    for (let i = list.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [list[i], list[j]] = [list[j]!, list[i]!];
    }
    return list
      .map((m) => ({ m, r: this.#rank(m, now) }))
      .sort((a, b) => a.r - b.r || (a.r === 0 ? a.m.latencyMs - b.m.latencyMs : 0))
      .map((x) => x.m);
  }

  /**
   * Runs one etcd call within the store's bounds, again on another member after a failure
   * that may be transient, until `timeoutMs` (or the caller's `deadline`) is spent. Only safe
   * calls come here: reads, and commits (made idempotent by their token).
   */
  async #call<T>(
    op: string,
    fn: (client: Etcd3, opts: CallOptions) => Promise<T>,
    extraAttemptMs = 0,
    callerDeadline = Infinity,
  ): Promise<T> {
    if (this.#closed) throw new Error(`etcd store: ${op} after close`);
    this.#startProbes();
    const start = Date.now();
    const ownDeadline = start + this.timeoutMs;
    const deadline = Math.min(ownDeadline, callerDeadline);
    let lastErr: unknown;
    let attempts = 0;
    let maybeApplied = false;
    let pause = 20;
    const tried = new Set<Member>();
    for (;;) {
      if (this.#breaker) break;
      const now = Date.now();
      if (now >= deadline) break;
      const member = this.#ordered(now).find((m) => !tried.has(m));
      if (!member) {
        // Every member had its turn: wait a little (an election takes about a second) and go round again.
        await sleep(Math.max(0, Math.min(pause, deadline - now)));
        pause = Math.min(pause * 2, 250);
        tried.clear();
        continue;
      }
      tried.add(member);
      attempts++;
      const trouble = member.trouble.wait();
      const breaker = this.#breakerAlarm.wait();
      try {
        const attemptDeadline = now + Math.min(deadline - now, this.#attemptTimeoutMs + extraAttemptMs);
        const res = await Promise.race([fn(member.client, { deadline: attemptDeadline }), trouble.promise, breaker.promise]);
        const done = Date.now();
        member.ok(done);
        this.#quorumOk(done);
        return res;
      } catch (err) {
        if (this.#closed || err instanceof ClientClosedError) throw new Error(`etcd store: closed during ${op}`, { cause: err });
        const failure = classify(err);
        if (failure.kind === 'limit') throw new EtcdLimitError(`etcd refused the ${op}: ${errorMessage(err)}`, failure.flag, err);
        if (failure.kind === 'full') throw this.#fullError(op, err);
        if (failure.kind === 'fatal') throw new Error(`etcd ${op} failed: ${errorMessage(err)}`, { cause: err });
        if (failure.kind === 'ambiguous') maybeApplied = true;
        if (!(err instanceof AbandonedError)) member.failed(failure.member, Date.now());
        lastErr = err;
      } finally {
        trouble.cancel();
        breaker.cancel();
      }
    }
    const ambiguous = maybeApplied && op === 'commit';
    const targets = `the etcd cluster (${this.endpoints.join(', ')})`;
    const tail =
      (lastErr === undefined ? '' : `; last error: ${errorMessage(lastErr)}`) +
      (ambiguous ? '; an attempt reached a member without an answer, so the commit may still have been applied' : '');
    if (this.#breaker) {
      throw new StoreUnavailableError(
        `etcd ${op}: no quorum of ${targets} is reachable (${this.#breaker.reason}, for ${Date.now() - this.#breaker.since} ms)` +
          (attempts === 0 ? '; not sent' : ` (${attempts} attempts${tail})`),
        { cause: lastErr, ambiguous },
      );
    }
    const ownBudget = deadline === ownDeadline;
    // The whole budget went by without an answer from a quorum: fail the writes queued behind at once.
    if (ownBudget) this.#openBreaker(`the last ${op} found no quorum within ${this.timeoutMs} ms`);
    throw new StoreUnavailableError(
      ownBudget
        ? `etcd ${op}: no quorum of ${targets} answered within ${this.timeoutMs} ms (${attempts} attempts${tail})`
        : `etcd ${op}: the caller's deadline passed after ${Date.now() - start} ms without an answer from a quorum of ${targets} (${attempts} attempts${tail})`,
      { cause: lastErr, ambiguous },
    );
  }

  #fullError(op: string, err: unknown): StoreFullError {
    const now = Date.now();
    this.#fullErrors++;
    const detail = `etcd has no space left (${errorMessage(err)}): compact and defragment the members, then run \`etcdctl alarm disarm\``;
    this.#full ??= { since: now, detail };
    this.#fullCheckAt = now;
    return new StoreFullError(`etcd ${op}: ${detail}`, { cause: err });
  }

  /** A full etcd stays full until an operator disarms the NOSPACE alarm: look for it. */
  async #recheckFull(): Promise<void> {
    try {
      await this.#call('alarm', async (c, opts) => {
        const res = await c.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' }, opts);
        if (!res.alarms.some((a) => String(a.alarm) === 'Nospace' || String(a.alarm) === 'NOSPACE')) this.#full = undefined;
      });
    } catch {
      // Unknown: stay full until a commit succeeds or a later check says otherwise.
    }
  }

  /**
   * Whether a quorum can serve a linearizable read now: the breaker is closed and some member
   * answered its last probe (and is not sitting on the next one). When none can — no quorum,
   * or an election in progress — nothing can be committed either, so a cache that was fresh
   * misses at most what was committed in the last bound before: `offline`, not `stale`.
   */
  #quorumReachable(now: number): boolean {
    if (this.#breaker) return false;
    return this.#members.some((m) => m.state === 'ok' && !(m.probing !== 0 && now - m.probing > this.#probeTimeoutMs));
  }

  #quorumOk(now: number): void {
    this.#lastQuorumAt = Math.max(this.#lastQuorumAt, now);
    if (this.#breaker) {
      this.#breaker = undefined;
      this.#emitFreshness(now);
    }
  }

  #openBreaker(reason: string): void {
    if (this.#breaker || this.#closed) return;
    this.#breaker = { since: Date.now(), reason };
    this.#breakerAlarm.fire(new AbandonedError(`no etcd quorum: ${reason}`));
    this.#emitFreshness(Date.now());
  }

  #startProbes(): void {
    if (this.#probeTimer || this.#closed) return;
    // "No quorum for timeoutMs" counts from when the store started to look.
    this.#lastQuorumAt = Math.max(this.#lastQuorumAt, Date.now());
    this.#probeTimer = setInterval(() => this.#tick(), this.#probeIntervalMs);
    this.#probeTimer.unref();
    this.#tick();
  }

  #tick(): void {
    if (this.#closed) return;
    for (const m of this.#members) if (m.probing === 0) void this.#probe(m);
    this.#evaluate(Date.now());
  }

  /** A linearizable read of the head on one member: its health, and (on success) the latest commit's revision. */
  async #probe(m: Member): Promise<void> {
    const t = Date.now();
    m.probing = t;
    let head: number;
    try {
      const res = await m.client.kv.range({ key: this.#head, keys_only: true }, { deadline: t + this.#probeTimeoutMs } as CallOptions);
      head = Number(res.kvs[0]?.mod_revision ?? 0);
    } catch (err) {
      m.probing = 0;
      if (this.#closed) return;
      const now = Date.now();
      const state = classify(err).member;
      m.failed(state, now);
      // A member that hangs while the others answer (a paused process, a stuck disk): calls
      // waiting on it will not get an answer in time either; send them elsewhere now. (When
      // every member is slow, the cluster is loaded: calls keep waiting, see Member.failed.)
      if (state === 'slow' && this.#members.some((o) => o !== m && o.state === 'ok' && now - o.okAt < 2 * this.#probeTimeoutMs)) {
        m.trouble.fire(new AbandonedError(`etcd member ${m.endpoint} does not answer while the others do`));
      }
      this.#evaluate(now);
      return;
    }
    const end = Date.now();
    m.probing = 0;
    if (this.#closed) return;
    m.ok(end);
    m.latencyMs = end - t;
    this.#headRev = Math.max(this.#headRev, head);
    this.#quorumOk(end);
    // Every commit acknowledged before `t` has a revision <= head.
    for (const w of this.#watches) w.probed(t, head);
    this.#evaluate(end);
  }

  /** Opens the breaker when the quorum is known gone; moves lagging watches; tells listeners about freshness. */
  #evaluate(now: number): void {
    const n = this.#members.length;
    const majority = Math.floor(n / 2) + 1;
    const down = this.#members.filter((m) => m.state === 'down').length;
    if (down > n - majority) this.#openBreaker(`${down} of ${n} etcd members are down`);
    else if (now - this.#lastQuorumAt >= this.timeoutMs)
      this.#openBreaker(`no etcd member answered a linearizable read for ${now - this.#lastQuorumAt} ms`);
    for (const w of this.#watches) w.check(now);
    this.#emitFreshness(now);
  }

  #emitFreshness(now: number): void {
    if (this.#freshnessListeners.size === 0) return;
    const f = this.freshness(now);
    if (f.state === this.#lastFreshness) return;
    this.#lastFreshness = f.state;
    for (const l of this.#freshnessListeners) {
      try {
        l(f);
      } catch (err) {
        this.#report(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  #watchContext(): WatchContext {
    return {
      boundMs: this.maxStalenessMs,
      lagToleranceMs: this.maxStalenessMs / 2,
      probeTimeoutMs: this.#probeTimeoutMs,
      best: (now, avoid) => {
        const order = this.#ordered(now);
        const other = order.find((m) => m !== avoid);
        // Another member as good as the one to avoid (or better) is preferred.
        if (avoid && other && this.#rank(other, now) <= this.#rank(avoid, now)) return other;
        return order[0];
      },
      rank: (m, now) => this.#rank(m, now),
      quorum: (now) => ({ lastQuorumAt: this.#lastQuorumAt, reachable: this.#quorumReachable(now), headRev: this.#headRev }),
      changed: (now) => this.#emitFreshness(now),
      closed: (w) => this.#watches.delete(w),
    };
  }
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new Error(`etcd store: ${name} must be a positive number of milliseconds, got ${n}`);
  return n;
}

/** What a watch needs from its store. */
interface WatchContext {
  readonly boundMs: number;
  readonly lagToleranceMs: number;
  readonly probeTimeoutMs: number;
  /** The member to (re)connect to: the healthiest, and not `avoid` if another is as healthy. */
  best(now: number, avoid?: Member): Member | undefined;
  rank(m: Member, now: number): number;
  quorum(now: number): { lastQuorumAt: number; reachable: boolean; headRev: number };
  changed(now: number): void;
  closed(w: WatchLoop): void;
}

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

/**
 * One `watch`: a raw etcd watch stream on one member, replaced by a new one (on the same or
 * another member) from our own resume revision whenever the stream breaks, the member is
 * found failing, or the stream lags behind what a quorum has committed. (etcd3's own Watcher
 * would resume from the revision in the last response header, which can be ahead of the last
 * event received: a watch catching up on old revisions gets batches stamped with the current
 * revision. And it cannot be moved off a member that hangs.)
 *
 * The stream covers the head key too (it sorts just before the data range), so every commit
 * shows up, even one whose data events are filtered out: "applied up to revision R" is then
 * exact, which is what freshness compares with the head revision a probe read.
 */
class WatchLoop implements StoreWatch {
  readonly ready: Promise<void>;
  readonly #ctx: WatchContext;
  readonly #start: Buffer;
  readonly #end: Buffer;
  readonly #filter: Buffer;
  readonly #strip: number;
  readonly #onChange: (events: StoreEvent[]) => void | PromiseLike<unknown>;
  readonly #onError: ((err: Error) => void) | undefined;
  #markReady!: () => void;
  /** The first revision not yet received; undefined until the first connection pins "now". */
  #next: number | undefined;
  /** The last revision whose events the consumer has applied. */
  #applied = 0;
  /** Batches handed over as promises and not yet settled (applied advances in order behind them). */
  #inflight = 0;
  #tail: Promise<void> = Promise.resolve();
  /** A batch failed to apply: the state is incomplete from then on. */
  #broken = false;
  #lastFreshAt = 0;
  /** Probes (start time, head revision) the watch has not caught up with yet, oldest first. */
  #pending: Array<{ t: number; rev: number }> = [];
  #member: Member | undefined;
  #stream: WatchStream | undefined;
  #timer: NodeJS.Timeout | undefined;
  #backoff = WATCH_BACKOFF_MIN_MS;
  #connectedAt = 0;
  #closed = false;

  constructor(
    ctx: WatchContext,
    start: Buffer,
    end: Buffer,
    filter: Buffer,
    strip: number,
    onChange: (events: StoreEvent[]) => void | PromiseLike<unknown>,
    options: WatchOptions,
  ) {
    this.#ctx = ctx;
    this.#start = start;
    this.#end = end;
    this.#filter = filter;
    this.#strip = strip;
    this.#onChange = onChange;
    this.#onError = options.onError;
    this.#next = options.fromRev;
    if (options.fromRev !== undefined) this.#applied = options.fromRev - 1;
    this.ready = new Promise<void>((resolve) => (this.#markReady = resolve));
  }

  freshness(now = Date.now()): Freshness {
    const q = this.#ctx.quorum(now);
    const state: FreshnessState =
      !this.#broken && now - this.#lastFreshAt <= this.#ctx.boundMs ? 'fresh' : q.reachable ? 'stale' : 'offline';
    return {
      state,
      lastFreshAt: this.#lastFreshAt,
      lastQuorumAt: q.lastQuorumAt,
      lagRevisions: Math.max(0, q.headRev - this.#applied),
      ...(this.#member ? { member: this.#member.endpoint } : {}),
      boundMs: this.#ctx.boundMs,
    };
  }

  /** Complete as of at most the bound ago. */
  fresh(now: number): boolean {
    return !this.#broken && now - this.#lastFreshAt <= this.#ctx.boundMs;
  }

  /** A probe started at `t` read head revision `rev`: complete as of `t` once applied up to `rev`. */
  probed(t: number, rev: number): void {
    if (this.#closed) return;
    if (this.#applied >= rev) {
      this.#fresh(t);
      return;
    }
    const last = this.#pending.at(-1);
    if (last && last.rev === rev) last.t = Math.max(last.t, t);
    else this.#pending.push({ t, rev });
    if (this.#pending.length > MAX_PENDING_PROBES) this.#pending.shift();
  }

  /** Moves the stream when it lags behind the quorum or its member is failing (called at every probe). */
  check(now: number): void {
    const m = this.#member;
    if (this.#closed || !m || !this.#stream) return;
    const oldest = this.#pending[0];
    const lagging = oldest !== undefined && now - oldest.t > this.#ctx.lagToleranceMs;
    const hung = m.probing !== 0 && now - m.probing > this.#ctx.probeTimeoutMs;
    const failing = m.state === 'down' || m.state === 'slow' || m.state === 'no-leader' || hung;
    // Give a new stream the time to catch up before judging it.
    if (!(lagging || failing) || now - this.#connectedAt < this.#ctx.lagToleranceMs) return;
    const next = this.#ctx.best(now, m);
    if (!next || next === m) return;
    // To a healthier member; to an equally healthy one only when lagging for a whole bound
    // (under load every member is slow: moving would only add a replay to the load).
    const better = this.#ctx.rank(next, now) < this.#ctx.rank(m, now);
    const stuck = oldest !== undefined && now - oldest.t > this.#ctx.boundMs && this.#ctx.rank(next, now) <= this.#ctx.rank(m, now);
    if (better || stuck) this.#restart(next);
  }

  start(): void {
    this.#connect(this.#ctx.best(Date.now()));
  }

  #connect(member: Member | undefined): void {
    this.#timer = undefined;
    if (this.#closed) return;
    if (!member) {
      this.#retryLater();
      return;
    }
    this.#member = member;
    this.#connectedAt = Date.now();
    member.client.watchClient.watch().then(
      (stream) => {
        if (this.#closed || this.#member !== member || this.#stream) {
          stream.cancel();
          return;
        }
        this.#stream = stream;
        stream.on('data', (res) => {
          if (stream === this.#stream) this.#receive(res);
        });
        const broken = (): void => {
          if (stream !== this.#stream) return;
          this.#stream = undefined;
          stream.cancel();
          this.#retryLater();
        };
        stream.on('error', broken);
        stream.on('end', broken);
        const request: IWatchRequest['create_request'] = { key: this.#start, range_end: this.#end, progress_notify: true };
        if (this.#next !== undefined) request.start_revision = String(this.#next);
        stream.write({ create_request: request });
      },
      () => {
        if (this.#member === member && !this.#stream) this.#retryLater();
      },
    );
  }

  /** Reconnects after `delay` ms, to the best member other than a failing current one. */
  #retryLater(): void {
    if (this.#closed || this.#timer) return;
    const delay = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, WATCH_BACKOFF_MAX_MS);
    const failed = this.#member;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#connect(this.#ctx.best(Date.now(), failed));
    }, delay);
    this.#timer.unref();
  }

  /** Drops the current stream (without waiting for a member that may not answer) and connects to `member` now. */
  #restart(member: Member): void {
    const old = this.#stream;
    this.#stream = undefined;
    old?.cancel();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#connect(member);
  }

  #receive(res: IWatchResponse): void {
    if (this.#closed) return;
    if (res.created) {
      if (res.canceled) return this.#cancelled(res);
      this.#backoff = WATCH_BACKOFF_MIN_MS;
      // The creation header carries the current revision; it is the resume point only if we
      // had none (a watch from "now"), never when catching up from an older revision.
      if (this.#next === undefined) {
        this.#next = Number(res.header.revision) + 1;
        this.#advance(this.#next - 1);
      }
      this.#markReady();
      return;
    }
    if (res.canceled) return this.#cancelled(res);
    if (res.events.length === 0) {
      // A progress notification (etcd's periodic one goes through the same queue as the
      // events, so it never overtakes them): nothing up to the header's revision is missing.
      if (this.#next !== undefined) {
        const rev = Number(res.header.revision);
        this.#next = Math.max(this.#next, rev + 1);
        this.#advance(rev);
      }
      return;
    }
    const events: StoreEvent[] = [];
    for (const ev of res.events) {
      const k = ev.kv.key;
      // The head and anything else between it and the data range: revisions only.
      if (k.length < this.#filter.length || !k.subarray(0, this.#filter.length).equals(this.#filter)) continue;
      const key = k.subarray(this.#strip).toString('utf8');
      const rev = Number(ev.kv.mod_revision);
      events.push(String(ev.type).toLowerCase() === 'delete' ? { key, rev } : { key, value: Buffer.from(ev.kv.value), rev });
    }
    const rev = Number(res.events.at(-1)!.kv.mod_revision);
    this.#next = rev + 1;
    if (events.length === 0) {
      this.#advance(rev);
      return;
    }
    let applied: void | PromiseLike<unknown>;
    try {
      applied = this.#onChange(events);
    } catch (err) {
      this.#broken = true;
      this.#report(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.#advance(rev, applied);
  }

  /** The consumer has applied (or will have, once `applied` resolves) everything up to `rev`. */
  #advance(rev: number, applied?: void | PromiseLike<unknown>): void {
    const thenable = applied !== undefined && applied !== null && typeof (applied as PromiseLike<unknown>).then === 'function';
    if (!thenable && this.#inflight === 0) {
      this.#applied = Math.max(this.#applied, rev);
      this.#caughtUp();
      return;
    }
    this.#inflight++;
    this.#tail = this.#tail
      .then(() => applied)
      .then(
        () => {
          this.#applied = Math.max(this.#applied, rev);
          this.#caughtUp();
        },
        (err: unknown) => {
          this.#broken = true;
          this.#report(err instanceof Error ? err : new Error(String(err)));
        },
      )
      .finally(() => this.#inflight--);
  }

  #caughtUp(): void {
    let t = 0;
    while (this.#pending.length > 0 && this.#pending[0]!.rev <= this.#applied) t = Math.max(t, this.#pending.shift()!.t);
    if (t > 0) this.#fresh(t);
  }

  #fresh(t: number): void {
    if (t <= this.#lastFreshAt) return;
    this.#lastFreshAt = t;
    this.#ctx.changed(Date.now());
  }

  #cancelled(res: IWatchResponse): void {
    const reason = res.cancel_reason || 'no reason given';
    const compacted = Number(res.compact_revision ?? 0) > 0 || /compacted/.test(reason);
    const fatal = compacted
      ? new StoreWatchCompactedError(
          `etcd watch cannot resume from revision ${this.#next}: it was compacted (compact revision ${res.compact_revision}; ${reason}); reload and watch again`,
        )
      : new Error(`etcd cancelled the watch: ${reason}`);
    void this.close();
    this.#report(fatal);
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
    this.#ctx.closed(this);
    if (this.#timer) clearTimeout(this.#timer);
    const s = this.#stream;
    this.#stream = undefined;
    // Cancelling the stream ends it locally at once, even on a member that does not answer.
    s?.cancel();
  }
}
