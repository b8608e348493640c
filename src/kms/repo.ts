/**
 * The domain's view of the store: records encrypted by the barrier, writes serialized by one
 * lock (so checks made against the in-memory state still hold when the write lands) and made
 * conditional on the revisions last read (so a concurrent writer elsewhere is detected).
 */
import type { Barrier } from '../store/barrier.js';
import type { Condition, Mutation, Store } from '../store/store.js';
import { KmsError, type ErrorCode } from '../protocol/errors.js';
import { decodeRecord, encodeRecord } from './records.js';

export class Repo {
  readonly store: Store;
  readonly #barrier: Barrier;
  #queue: Promise<unknown> = Promise.resolve();

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
    const res = await this.store.commit(conditions, mutations);
    if (!res.ok) throw new KmsError(conflict);
    return res.rev;
  }

  /** Runs `fn` after every write queued before it has finished. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
