/**
 * The domain's view of the store: records encrypted by the barrier, writes serialized by one
 * lock (so checks made against the in-memory state still hold when the write lands) and made
 * conditional on the revisions last read (so a concurrent writer elsewhere is detected).
 *
 * Bounded waiting: a write carries a deadline (the request's, or now + the store timeout).
 * A write whose deadline passes while it waits for the lock is never started
 * (`ERR_STORE_TIMEOUT`), and its commit is not sent (nor retried) after the deadline. So the
 * time to an answer is bounded by one store timeout however many writes queue up; and
 * without a quorum the store's breaker fails the queued ones at once.
 *
 * Pipelined writes: on a store that can stage commits (SQLite, `Store.stage`), a write holds
 * the lock only while its commit is applied, not while it reaches the disk; its caller is
 * answered when it is durable. The next write is prepared meanwhile, and one sync of the store
 * covers every commit staged during the previous one (group commit).
 */
import type { Barrier } from '../store/barrier.js';
import { StoreFullError, StoreUnavailableError, type Condition, type Mutation, type Store } from '../store/store.js';
import { KmsError, type ErrorCode } from '../errors.js';
import { decodeRecord, encodeRecord } from './records.js';

export class Repo {
  readonly store: Store;
  readonly #barrier: Barrier;
  #queue: Promise<unknown> = Promise.resolve();
  /** Deadline of the write holding the lock (the lock runs one at a time, so one field is enough). */
  #deadline = Infinity;
  /** What the write holding the lock staged and its caller must wait for; undefined outside a write. */
  #durable: Array<Promise<void>> | undefined;
  /** Run when the write holding the lock is durable. */
  #afterDurable: Array<() => void> | undefined;
  /**
   * Revision at which this node deleted each path, kept while a change feed (another node's
   * writes, arriving in revision order) may still deliver an older put of the same path.
   */
  readonly #tombstones = new Map<string, number>();
  #trackDeletes = false;

  constructor(store: Store, barrier: Barrier) {
    this.store = store;
    this.#barrier = barrier;
  }

  /** Decrypts every record under `prefix` (e.g. `key/`). */
  async load<T extends { v: number }>(prefix: string): Promise<Array<{ path: string; record: T; rev: number }>> {
    const entries = await this.store.range(prefix);
    return entries.map((e) => {
      let plaintext: Buffer;
      try {
        plaintext = this.#barrier.decrypt(e.key, e.value);
      } catch {
        throw new Error(`integrity check failed for record ${e.key}: it was altered, moved or swapped, or belongs to another database`);
      }
      return { path: e.key, record: decodeRecord<T>(e.key, plaintext), rev: e.rev };
    });
  }

  /** Decrypts and parses one stored value (e.g. from a change feed). */
  decode<T extends { v: number }>(path: string, value: Buffer): T {
    return decodeRecord<T>(path, this.#barrier.decrypt(path, value));
  }

  /** Starts remembering deletes, for a change feed (see `deletedAt`). */
  trackDeletes(): void {
    this.#trackDeletes = true;
  }

  /** Revision at which this node deleted `path`, if it still remembers. */
  deletedAt(path: string): number {
    return this.#tombstones.get(path) ?? 0;
  }

  /** The change feed has delivered everything up to `rev`: older deletes can be forgotten. */
  forgetDeletes(upToRev: number): void {
    for (const [path, rev] of this.#tombstones) if (rev <= upToRev) this.#tombstones.delete(path);
  }

  put(path: string, record: { v: 1 }): Mutation {
    return { key: path, value: this.#barrier.encrypt(path, encodeRecord(record)) };
  }

  del(path: string): Mutation {
    return { key: path };
  }

  /**
   * Commits atomically; throws `conflict` if a condition failed (another writer won).
   * Store failures become catalogued errors: `ERR_STORE_UNAVAILABLE` (not applied),
   * `ERR_STORE_OUTCOME_UNKNOWN` (sent without an answer: may be applied, even later),
   * `ERR_STORE_FULL` (not applied), `ERR_STORE_TIMEOUT` (the deadline passed: not sent).
   * @returns the revision of the write
   */
  async commit(conditions: Condition[], mutations: Mutation[], conflict: ErrorCode = 'ERR_CONFLICT'): Promise<number> {
    let res;
    const deadline = this.#deadline;
    if (Date.now() >= deadline) throw new KmsError('ERR_STORE_TIMEOUT');
    try {
      const durable = this.#durable;
      if (this.store.stage && durable) {
        const staged = await this.store.stage(conditions, mutations);
        durable.push(staged.durable);
        res = staged;
      } else {
        res = await this.store.commit(conditions, mutations, deadline === Infinity ? undefined : { deadline });
      }
    } catch (err) {
      // Writes fail fast without a quorum; reads go on from memory.
      if (err instanceof StoreUnavailableError)
        throw new KmsError(err.ambiguous ? 'ERR_STORE_OUTCOME_UNKNOWN' : 'ERR_STORE_UNAVAILABLE', undefined, { cause: err });
      if (err instanceof StoreFullError) throw new KmsError('ERR_STORE_FULL', undefined, { cause: err });
      throw err;
    }
    if (!res.ok) throw new KmsError(conflict);
    if (this.#trackDeletes) for (const m of mutations) if (m.value === undefined) this.#tombstones.set(m.key, res.rev);
    return res.rev;
  }

  /**
   * Whether the write holding the lock has staged a commit that is not durable yet: what it
   * changed in memory is then visible before it is acknowledged (see `afterDurable`).
   */
  get staged(): boolean {
    return this.#durable !== undefined && this.#durable.length > 0;
  }

  /** Runs `fn` once every commit of the write holding the lock is durable (never if one fails). */
  afterDurable(fn: () => void): void {
    if (this.#afterDurable) this.#afterDurable.push(fn);
    else fn();
  }

  /**
   * Runs `fn` after every write queued before it has finished. With a `deadline` (ms since
   * the epoch), `fn` is not started once it has passed (`ERR_STORE_TIMEOUT`), and the
   * commits it makes are not sent after it. With `pipelined`, the commits `fn` makes are staged
   * (if the store can) and the next write starts when `fn` returns; the promise resolves once
   * they are durable, and fails with `ERR_STORE_OUTCOME_UNKNOWN` if one could not be made so.
   */
  exclusive<T>(fn: () => Promise<T>, options: { deadline?: number; pipelined?: boolean } = {}): Promise<T> {
    const deadline = options.deadline ?? Infinity;
    const durable: Array<Promise<void>> | undefined = options.pipelined && this.store.stage ? [] : undefined;
    const after: Array<() => void> = [];
    const start = async (): Promise<T> => {
      if (Date.now() >= deadline) throw new KmsError('ERR_STORE_TIMEOUT');
      this.#deadline = deadline;
      this.#durable = durable;
      this.#afterDurable = durable && after;
      try {
        return await fn();
      } finally {
        this.#deadline = Infinity;
        this.#durable = undefined;
        this.#afterDurable = undefined;
      }
    };
    const run = this.#queue.then(start, start);
    this.#queue = run.catch(() => undefined);
    if (!durable) return run;
    return run.then(
      async (value) => {
        await whenDurable(durable);
        for (const f of after) f();
        return value;
      },
      async (err: unknown) => {
        // A failed write may have staged a commit before failing: its error is not reported
        // before what it did write is durable (or known not to be).
        await whenDurable(durable).catch(() => undefined);
        throw err;
      },
    );
  }
}

/** Waits for staged commits; a sync that failed leaves their outcome unknown to the caller. */
async function whenDurable(durable: ReadonlyArray<Promise<void>>): Promise<void> {
  for (const d of durable) {
    try {
      await d;
    } catch (err) {
      throw new KmsError('ERR_STORE_OUTCOME_UNKNOWN', undefined, { cause: err });
    }
  }
}
