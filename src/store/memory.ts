/** An in-memory Store: the reference implementation of the contract, and a scratch space (e.g. to check a backup before restoring it). */
import type { CommitResult, Condition, Mutation, Store, StoreEntry } from './store.js';

export class MemoryStore implements Store {
  readonly kind = 'memory';
  readonly #entries = new Map<string, StoreEntry>();
  #rev = 0;

  constructor(entries: Iterable<{ key: string; value: Buffer }> = []) {
    for (const e of entries) this.#entries.set(e.key, { key: e.key, value: Buffer.from(e.value), rev: ++this.#rev });
  }

  // Values are copied in and out, as a real backend's are: a caller zeroing its buffer
  // must not change what is stored.
  async get(key: string): Promise<StoreEntry | undefined> {
    const e = this.#entries.get(key);
    return e && { ...e, value: Buffer.from(e.value) };
  }

  async range(prefix: string): Promise<StoreEntry[]> {
    return [...this.#entries.values()]
      .filter((e) => e.key.startsWith(prefix))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map((e) => ({ ...e, value: Buffer.from(e.value) }));
  }

  async commit(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<CommitResult> {
    for (const c of conditions) if ((this.#entries.get(c.key)?.rev ?? 0) !== c.rev) return { ok: false, rev: this.#rev };
    const rev = ++this.#rev;
    for (const m of mutations) {
      if (m.value === undefined) this.#entries.delete(m.key);
      else this.#entries.set(m.key, { key: m.key, value: Buffer.from(m.value), rev });
    }
    return { ok: true, rev };
  }

  async close(): Promise<void> {}
}
