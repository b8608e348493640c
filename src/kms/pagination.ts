/**
 * Pagination shared by every LIST command (kms-wire.md §2.5): items whose name starts with
 * `prefix`, in ascending order, beginning at `continueAt` (inclusive), at most `limit` items;
 * the next page begins at the returned `continueAt` (empty at the end).
 */

export const DEFAULT_PAGE = 1000;
export const MAX_PAGE = 1000;

export interface Page<T> {
  items: T[];
  continueAt: string;
}

/** A name → value map that lists in sorted order without re-sorting on every call. */
export class SortedMap<V> {
  readonly #map = new Map<string, V>();
  #sorted: string[] | undefined = [];

  get size(): number {
    return this.#map.size;
  }
  get(name: string): V | undefined {
    return this.#map.get(name);
  }
  has(name: string): boolean {
    return this.#map.has(name);
  }
  set(name: string, value: V): void {
    if (!this.#map.has(name)) this.#sorted = undefined;
    this.#map.set(name, value);
  }
  delete(name: string): void {
    if (this.#map.delete(name)) this.#sorted = undefined;
  }
  values(): IterableIterator<V> {
    return this.#map.values();
  }

  /** Names in ascending UTF-16 order (the same as byte order for our ASCII names). */
  names(): readonly string[] {
    this.#sorted ??= [...this.#map.keys()].sort();
    return this.#sorted;
  }

  /**
   * One page. `visible` filters items the caller may see; filtered items do not count
   * towards the limit.
   */
  page(prefix: string, continueAt: string, limit: number, visible: (name: string) => boolean = () => true): Page<V> {
    const max = limit <= 0 || limit > MAX_PAGE ? DEFAULT_PAGE : limit;
    const names = this.names();
    const start = continueAt !== '' ? continueAt : prefix;
    if (continueAt !== '' && !continueAt.startsWith(prefix)) return { items: [], continueAt: '' };
    const items: V[] = [];
    for (let i = lowerBound(names, start); i < names.length; i++) {
      const name = names[i]!;
      if (!name.startsWith(prefix)) break;
      if (!visible(name)) continue;
      if (items.length === max) return { items, continueAt: name };
      items.push(this.#map.get(name)!);
    }
    return { items, continueAt: '' };
  }
}

function lowerBound(sorted: readonly string[], target: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
