/**
 * Name patterns of policies, compiled once and matched without backtracking.
 *
 * A pattern is made of literal characters and two wildcards: `*` matches any run of characters
 * (including none) and `?` matches exactly one character, anywhere in the pattern. Runs of `*`
 * are the same as one. Everything else matches itself (policy patterns are restricted to the
 * characters names can have, see policy.ts, so there is nothing to escape).
 *
 * Matching cost. A pattern `H*M1*…*Mk*T` matches a name iff H is at its start, T at its end
 * and M1…Mk occur in order in between; taking the leftmost occurrence of each Mi is always
 * right (it leaves the most room for the rest), so there is no backtracking. Occurrences are
 * found with a bit-parallel scan over a per-name index of character positions
 * ({@link NameIndex}): one AND of {@link WORDS} words per pattern character, whatever the name,
 * so one pattern costs O(|pattern|) word operations on a name of at most {@link MAX_INDEXED}
 * characters.
 */

/** Longest name the position index covers (the longest valid key, policy or identity name). */
export const MAX_INDEXED = 128;
const WORDS = MAX_INDEXED / 32;
const ASCII = 128;
/** A `?` in a compiled segment. */
const ANY = -1;

/** The shape of a pattern, which decides how a policy stores it. */
export type PatternKind = 'all' | 'exact' | 'prefix' | 'glob';

/** Collapses runs of `*` (`a**b` means `a*b`). */
export function collapseStars(pattern: string): string {
  return pattern.includes('**') ? pattern.replace(/\*{2,}/g, '*') : pattern;
}

/**
 * `all`: only stars; `exact`: no wildcard; `prefix`: literal characters then one trailing `*`;
 * `glob`: anything else (a `?`, or a `*` that is not only at the end).
 */
export function patternKind(pattern: string): PatternKind {
  const p = collapseStars(pattern);
  if (p === '*') return 'all';
  if (p.includes('?')) return 'glob';
  const star = p.indexOf('*');
  if (star === -1) return 'exact';
  return star === p.length - 1 ? 'prefix' : 'glob';
}

/** Positions of each ASCII character in one name, as bit sets of {@link WORDS} words. */
export class NameIndex {
  readonly #masks = new Uint32Array(ASCII * WORDS);
  readonly #touched: number[] = [];
  #name = '';

  get name(): string {
    return this.#name;
  }

  /** Indexes `name` (at most {@link MAX_INDEXED} characters), replacing the previous one. */
  load(name: string): this {
    if (name.length > MAX_INDEXED) throw new RangeError(`names longer than ${MAX_INDEXED} characters are not indexed`);
    for (const c of this.#touched) this.#masks.fill(0, c * WORDS, c * WORDS + WORDS);
    this.#touched.length = 0;
    this.#name = name;
    for (let i = 0; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c >= ASCII) continue; // no pattern character equals it; only wildcards match it
      const base = c * WORDS;
      if (this.#masks[base] === 0 && this.#masks[base + 1] === 0 && this.#masks[base + 2] === 0 && this.#masks[base + 3] === 0) {
        this.#touched.push(c);
      }
      this.#masks[base + (i >>> 5)]! |= 1 << (i & 31);
    }
    return this;
  }

  /**
   * The leftmost position p in [from, to - seg.length] where `seg` matches, or -1.
   * `scratch` holds the candidate set (WORDS words).
   */
  find(seg: Int16Array, from: number, to: number, scratch: Uint32Array): number {
    const last = to - seg.length;
    if (last < from) return -1;
    // Candidates: every start position in [from, last].
    for (let w = 0; w < WORDS; w++) {
      const lo = w * 32;
      const a = Math.max(from - lo, 0);
      const b = Math.min(last - lo, 31);
      scratch[w] = a > b ? 0 : (0xffffffff >>> (31 - b + a)) << a;
    }
    for (let j = 0; j < seg.length; j++) {
      const c = seg[j]!;
      if (c === ANY) continue;
      // Start p is still a candidate iff name[p + j] === c: AND with (positions of c) >> j.
      const base = c * WORDS;
      const q = j >>> 5;
      const r = j & 31;
      let any = 0;
      for (let w = 0; w < WORDS; w++) {
        const hi = w + q + 1 < WORDS ? this.#masks[base + w + q + 1]! : 0;
        const cur = w + q < WORDS ? this.#masks[base + w + q]! : 0;
        const shifted = r === 0 ? cur : (cur >>> r) | (hi << (32 - r));
        any |= scratch[w]! &= shifted;
      }
      if (any === 0) return -1;
    }
    for (let w = 0; w < WORDS; w++) {
      const x = scratch[w]!;
      if (x !== 0) return w * 32 + (31 - Math.clz32(x & -x));
    }
    return -1;
  }
}

/** A pattern with at least one `?` or an interior `*`, compiled once. */
export class Glob {
  readonly source: string;
  /** Literal characters before the first `*` (the whole pattern if it has none). */
  readonly #head: Int16Array;
  /** After the last `*` (empty if the pattern has no `*`). */
  readonly #tail: Int16Array;
  /** Between stars, in order. */
  readonly #mids: Int16Array[];
  readonly #hasStar: boolean;
  /** Fewest characters a matching name has. */
  readonly minLength: number;

  /** @param pattern characters of the policy pattern charset only (ASCII) */
  constructor(pattern: string) {
    this.source = pattern;
    const parts = collapseStars(pattern).split('*').map(compileSegment);
    this.#hasStar = parts.length > 1;
    this.#head = parts[0]!;
    this.#tail = this.#hasStar ? parts[parts.length - 1]! : new Int16Array(0);
    this.#mids = parts.slice(1, -1).filter((s) => s.length > 0);
    this.minLength = parts.reduce((n, s) => n + s.length, 0);
  }

  /** Whether the indexed name matches. */
  matches(idx: NameIndex, scratch: Uint32Array): boolean {
    const name = idx.name;
    const n = name.length;
    if (n < this.minLength) return false;
    if (!this.#hasStar) return n === this.#head.length && segmentAt(name, 0, this.#head);
    if (!segmentAt(name, 0, this.#head) || !segmentAt(name, n - this.#tail.length, this.#tail)) return false;
    let pos = this.#head.length;
    const end = n - this.#tail.length;
    for (const seg of this.#mids) {
      const at = idx.find(seg, pos, end, scratch);
      if (at < 0) return false;
      pos = at + seg.length;
    }
    return true;
  }
}

function compileSegment(s: string): Int16Array {
  const out = new Int16Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= ASCII) throw new RangeError('glob patterns are ASCII');
    out[i] = s[i] === '?' ? ANY : c;
  }
  return out;
}

function segmentAt(name: string, at: number, seg: Int16Array): boolean {
  for (let j = 0; j < seg.length; j++) {
    const c = seg[j]!;
    if (c !== ANY && name.charCodeAt(at + j) !== c) return false;
  }
  return true;
}

/**
 * Whether `name` matches one pattern (for tools and tests; policies use a compiled form). Names
 * longer than {@link MAX_INDEXED} characters — longer than any valid name — match nothing.
 */
export function matchGlob(pattern: string, name: string): boolean {
  if (name.length > MAX_INDEXED) return false;
  const p = collapseStars(pattern);
  switch (patternKind(p)) {
    case 'all':
      return true;
    case 'exact':
      return p === name;
    case 'prefix':
      return name.startsWith(p.slice(0, -1));
    default:
      return new Glob(p).matches(new NameIndex().load(name), newScratch());
  }
}

/** Scratch space for {@link NameIndex.find}. */
export function newScratch(): Uint32Array {
  return new Uint32Array(WORDS);
}
