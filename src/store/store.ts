/**
 * The storage port. Every backend (embedded SQLite, etcd) implements this narrow contract;
 * everything above it (barrier, domain) is backend-agnostic.
 *
 * Keys are ASCII paths such as `key/<enclave>/<name>`; values are opaque bytes (already
 * encrypted by the barrier, except the sealed root-key entries and the cluster record).
 * Every write carries a revision: a store-wide, strictly increasing number, so that a
 * caller can make a write conditional on what it last read (compare-and-set).
 */

export interface StoreEntry {
  readonly key: string;
  readonly value: Buffer;
  /** Revision of the write that produced this value (> 0). */
  readonly rev: number;
}

/** `rev: 0` means "the key must not exist". */
export interface Condition {
  readonly key: string;
  readonly rev: number;
}

/** A put (value set) or a delete (value undefined). */
export interface Mutation {
  readonly key: string;
  readonly value?: Buffer;
}

export interface CommitResult {
  /** False if a condition did not hold; nothing was written then. */
  readonly ok: boolean;
  /** The revision the mutations were written with (when ok). */
  readonly rev: number;
}

/**
 * A commit applied in order but not yet durable (`Store.stage`). Later reads and stages see it
 * at once; `durable` resolves when it would survive a crash of the machine, and rejects with an
 * ambiguous `StoreUnavailableError` if the store could not make it durable.
 */
export interface StagedCommit extends CommitResult {
  readonly durable: Promise<void>;
}

export interface CommitOptions {
  /**
   * Absolute time (ms since the epoch) after which the commit must not be sent, nor sent
   * again: the caller (a request with a client deadline) no longer waits for it. The commit
   * then fails with `StoreUnavailableError` (ambiguous if an attempt was sent). Backends
   * without retries (SQLite) ignore it.
   */
  readonly deadline?: number;
}

/** Whether the store expects writes to succeed now (cheap: no I/O), for readiness and metrics. */
export interface StoreHealth {
  /** `full`: no space left (SQLite `SQLITE_FULL`, etcd's space quota); `unavailable`: no write quorum. */
  readonly write: 'ok' | 'full' | 'unavailable';
  /** When `write` last left `ok` (ms since the epoch); 0 while `ok`. */
  readonly since: number;
  /** Why, for logs and status (no secrets). */
  readonly detail: string;
  /** Commits refused because the store was full, since the store was opened (a counter for metrics). */
  readonly fullErrors: number;
}

export interface Store {
  /** Short backend name for status output, e.g. `sqlite`. */
  readonly kind: string;
  /** Bound of one store operation in ms, if the backend has one (etcd); writes default to it as their deadline. */
  readonly timeoutMs?: number;
  get(key: string): Promise<StoreEntry | undefined>;
  /** Every entry whose key starts with `prefix`, in ascending byte order of keys. */
  range(prefix: string): Promise<StoreEntry[]>;
  /**
   * Atomically: if every condition holds, apply every mutation, durably, before resolving.
   * A resolved `{ ok: true }` is an acknowledged write that survives a crash.
   */
  commit(conditions: readonly Condition[], mutations: readonly Mutation[], options?: CommitOptions): Promise<CommitResult>;
  /**
   * Like `commit`, but returns as soon as the commit is applied, before it is durable (see
   * `StagedCommit`), so that a writer can prepare the next commit while this one reaches the
   * disk, and one sync covers every commit staged meanwhile (group commit). Durability is in
   * order: when a commit is durable, so is every commit staged before it. Absent on backends
   * whose commits are durable when applied (etcd, memory). Asynchronous where the store is in
   * another process (a worker's store, docs/workers.md): applied when the promise resolves.
   */
  stage?(conditions: readonly Condition[], mutations: readonly Mutation[]): StagedCommit | Promise<StagedCommit>;
  /** See `StoreHealth`; absent on backends that cannot tell (the in-memory store). */
  health?(): StoreHealth;
  close(): Promise<void>;
}

/**
 * The store could not be reached, or has no quorum, within the backend's operation timeout.
 * Thrown instead of hanging. For a `commit`, `ambiguous` says whether the write may have been
 * applied anyway (the request reached a server but no answer came back): the caller must then
 * re-read before deciding, not assume either outcome.
 */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  readonly ambiguous: boolean;

  constructor(message: string, options?: { cause?: unknown; ambiguous?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.ambiguous = options?.ambiguous ?? false;
  }
}

/**
 * The store has no space left for the write (SQLite `SQLITE_FULL`, etcd `mvcc: database space
 * exceeded`). Nothing was written. Reads go on; writes fail until space is freed (etcd: compact,
 * defragment and `etcdctl alarm disarm`).
 */
export class StoreFullError extends Error {
  override readonly name = 'StoreFullError';
}
