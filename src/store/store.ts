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

export interface Store {
  /** Short backend name for status output, e.g. `sqlite`. */
  readonly kind: string;
  get(key: string): Promise<StoreEntry | undefined>;
  /** Every entry whose key starts with `prefix`, in ascending byte order of keys. */
  range(prefix: string): Promise<StoreEntry[]>;
  /**
   * Atomically: if every condition holds, apply every mutation, durably, before resolving.
   * A resolved `{ ok: true }` is an acknowledged write that survives a crash.
   */
  commit(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<CommitResult>;
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
