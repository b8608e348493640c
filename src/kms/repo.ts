/**
 * The domain's view of the store: records encrypted by the barrier, writes serialized by one
 * lock (so checks made against the in-memory state still hold when the write lands) and made
 * conditional on the revisions last read (so a concurrent writer elsewhere is detected).
 */
import type { Barrier } from '../store/barrier.js';
import { StoreUnavailableError, type Condition, type Mutation, type Store } from '../store/store.js';
import { KmsError, type ErrorCode } from '../errors.js';
import { decodeRecord, encodeRecord } from './records.js';

export class Repo {
  readonly store: Store;
  readonly #barrier: Barrier;
  #queue: Promise<unknown> = Promise.resolve();
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
   * @returns the revision of the write
   */
  async commit(conditions: Condition[], mutations: Mutation[], conflict: ErrorCode = 'ERR_CONFLICT'): Promise<number> {
    let res;
    try {
      res = await this.store.commit(conditions, mutations);
    } catch (err) {
      // Writes fail fast without a quorum; reads go on from memory.
      if (err instanceof StoreUnavailableError) throw new KmsError('ERR_STORE_UNAVAILABLE', undefined, { cause: err });
      throw err;
    }
    if (!res.ok) throw new KmsError(conflict);
    if (this.#trackDeletes) for (const m of mutations) if (m.value === undefined) this.#tombstones.set(m.key, res.rev);
    return res.rev;
  }

  /** Runs `fn` after every write queued before it has finished. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
