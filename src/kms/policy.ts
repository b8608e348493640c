/**
 * Policies: `allow` and `deny` maps from a command name (`KEY:GENERATE`) to name patterns (see
 * glob.ts: `*` any run of characters, `?` one character, anywhere in the pattern). Evaluation is
 * deny-by-default and any matching deny wins over every allow.
 *
 * A policy is checked against the limits below when it is created, and compiled once per
 * version (exact names in a set, prefixes in a sorted prefix-free array, the other patterns as
 * {@link Glob}s): a check then costs O(name length · log patterns) plus a bounded number of glob
 * scans, never a walk over every pattern of the policy.
 */
import { KmsError } from '../errors.js';
import { Glob, MAX_INDEXED, NameIndex, collapseStars, matchGlob, newScratch, patternKind } from './glob.js';

export type Rules = Record<string, string[]>;

export interface PolicyRules {
  readonly allow: Rules;
  readonly deny: Rules;
}

// ------------------------------------------------------------------------------ limits

/** Patterns of one command in `allow`, or in `deny`. */
export const MAX_PATTERNS_PER_COMMAND = 500;
/** Patterns of one policy: `allow` and `deny`, every command. */
export const MAX_PATTERNS_PER_POLICY = 1000;
/** Characters of one pattern. */
export const MAX_PATTERN_LENGTH = 256;
/** Characters of all patterns of one policy together. */
export const MAX_POLICY_CHARS = 64 * 1024;
/**
 * Patterns with a `?` or a `*` that is not only at the end, per policy: each costs a scan per
 * check (the others cost a set lookup or a binary search), so their number bounds a check.
 */
export const MAX_GLOB_PATTERNS = 64;
/**
 * Names longer than this (the longest valid key, policy or identity name) are never allowed by
 * a policy: no object can have one, and refusing them keeps matching bounded.
 */
export const MAX_MATCHED_NAME = MAX_INDEXED;
/** Characters a pattern may have: those of names (names.ts, identities) and the wildcards. */
const PATTERN_CHARS = /^[A-Za-z0-9._:*?-]+$/;

/** Client text in error details: at most `max` characters. */
function bounded(s: string, max = 64): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

const invalid = (detail: string) => new KmsError('ERR_INVALID_POLICY', detail);

// ------------------------------------------------------------------------------ creation

/**
 * Normalizes patterns: empty ones dropped, runs of `*` collapsed, duplicates removed, sorted by
 * length then lexically (the order the SDK prints them in).
 */
export function normalizePatterns(patterns: Iterable<string>): string[] {
  const set = new Set<string>();
  for (const p of patterns) if (p !== '') set.add(collapseStars(p));
  return [...set].sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
}

/** Refuses a pattern the matcher cannot honour, before anything is stored. */
export function checkPattern(pattern: string): void {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw invalid(`pattern '${bounded(pattern)}' is longer than ${MAX_PATTERN_LENGTH} characters`);
  }
  if (!PATTERN_CHARS.test(pattern)) {
    throw invalid(`pattern '${bounded(pattern)}' has characters no name can have (allowed: A-Z a-z 0-9 . _ : - and the wildcards * ?)`);
  }
}

/**
 * The stored form of a policy's rules: command names upper-cased and merged, patterns
 * normalized, every limit checked.
 * @param isCommand whether a (upper-case) command name may appear in a policy
 * @throws KmsError ERR_INVALID_POLICY with a bounded detail
 */
export function normalizePolicy(allow: Rules, deny: Rules, isCommand: (name: string) => boolean): { allow: Rules; deny: Rules } {
  // Cheap bounds on the raw input first, so that a huge request is refused before it is sorted.
  let raw = 0;
  for (const rules of [allow, deny]) {
    for (const [cmd, patterns] of Object.entries(rules)) {
      if (!isCommand(cmd.toUpperCase())) throw invalid(`unknown command '${bounded(cmd)}'`);
      for (const p of patterns) {
        if (p === '') continue;
        checkPattern(p);
        if (++raw > MAX_PATTERNS_PER_POLICY) throw invalid(`more than ${MAX_PATTERNS_PER_POLICY} patterns`);
      }
    }
  }
  const norm = (rules: Rules): Rules => {
    const out: Rules = {};
    for (const [cmd, patterns] of Object.entries(rules)) {
      const command = cmd.toUpperCase();
      const p = normalizePatterns([...(out[command] ?? []), ...patterns]);
      if (p.length > 0) out[command] = p;
    }
    return out;
  };
  const result = { allow: norm(allow), deny: norm(deny) };
  checkLimits(result);
  return result;
}

/** The limits that hold after normalization. */
function checkLimits(policy: PolicyRules): void {
  let chars = 0;
  let globs = 0;
  for (const [side, rules] of [
    ['allow', policy.allow],
    ['deny', policy.deny],
  ] as const) {
    for (const [cmd, patterns] of Object.entries(rules)) {
      if (patterns.length > MAX_PATTERNS_PER_COMMAND) {
        throw invalid(`${side} ${bounded(cmd)} has ${patterns.length} patterns, more than ${MAX_PATTERNS_PER_COMMAND}`);
      }
      for (const p of patterns) {
        chars += p.length;
        if (patternKind(p) === 'glob') globs++;
      }
    }
  }
  if (chars > MAX_POLICY_CHARS) throw invalid(`patterns of more than ${MAX_POLICY_CHARS} characters in total`);
  if (globs > MAX_GLOB_PATTERNS) {
    throw invalid(`more than ${MAX_GLOB_PATTERNS} patterns with '?' or a '*' before the end`);
  }
}

// ------------------------------------------------------------------------------ evaluation

/** The patterns of one command, compiled. */
export class PatternSet {
  all = false;
  readonly exact = new Set<string>();
  /** Sorted and prefix-free: the only candidate for a name is the greatest one ≤ it. */
  prefixes: string[] = [];
  readonly globs: Glob[] = [];
  readonly size: number;

  constructor(patterns: readonly string[]) {
    this.size = patterns.length;
    const prefixes: string[] = [];
    for (const raw of patterns) {
      const p = collapseStars(raw);
      const kind = patternKind(p);
      if (kind === 'all') this.all = true;
      else if (kind === 'exact') this.exact.add(p);
      else if (kind === 'prefix') prefixes.push(p.slice(0, -1));
      else this.globs.push(new Glob(p));
    }
    prefixes.sort();
    // Drop every prefix that has a shorter one in the set (sorted: it follows it directly or
    // after other extensions of it).
    for (const p of prefixes) {
      const last = this.prefixes[this.prefixes.length - 1];
      if (last === undefined || !p.startsWith(last)) this.prefixes.push(p);
    }
  }

  matches(name: string, ctx: MatchContext): boolean {
    if (this.all || this.exact.has(name)) return true;
    const pre = this.prefixes;
    if (pre.length > 0) {
      let lo = 0;
      let hi = pre.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (pre[mid]! <= name) lo = mid + 1;
        else hi = mid;
      }
      if (lo > 0 && name.startsWith(pre[lo - 1]!)) return true;
    }
    for (const g of this.globs) {
      if (name.length >= g.minLength && g.matches(ctx.index(name), ctx.scratch)) return true;
    }
    return false;
  }
}

/** One index and scratch space for all glob scans of a check (checks are synchronous). */
class MatchContext {
  readonly #idx = new NameIndex();
  readonly scratch = newScratch();
  #loaded: string | undefined;

  /** The index of `name`, built once however many globs look at it. */
  index(name: string): NameIndex {
    if (this.#loaded !== name) {
      this.#idx.load(name);
      this.#loaded = name;
    }
    return this.#idx;
  }
}

const ctx = new MatchContext();

/** A policy version, ready to be evaluated. */
export interface CompiledPolicy {
  readonly allow: ReadonlyMap<string, PatternSet>;
  readonly deny: ReadonlyMap<string, PatternSet>;
  /**
   * Why a stored policy breaks today's rules (written by an older version): such a policy
   * allows nothing — failing closed, so that a deny it holds can never be skipped.
   */
  readonly invalid: string | undefined;
}

/** Compiled forms, per policy object: a changed policy is a new object, so this is per version. */
const compiledForms = new WeakMap<PolicyRules, CompiledPolicy>();

/** The compiled form of `policy` (compiled on first use, then cached). */
export function compilePolicy(policy: PolicyRules): CompiledPolicy {
  let c = compiledForms.get(policy);
  if (c === undefined) {
    let reason: string | undefined;
    try {
      for (const rules of [policy.allow, policy.deny]) for (const patterns of Object.values(rules)) patterns.forEach(checkPattern);
      checkLimits(policy);
    } catch (err) {
      reason = (err as Error).message;
    }
    const sets = (rules: Rules) => new Map(Object.entries(rules).map(([cmd, patterns]) => [cmd, new PatternSet(patterns)]));
    c =
      reason === undefined
        ? { allow: sets(policy.allow), deny: sets(policy.deny), invalid: undefined }
        : { allow: new Map(), deny: new Map(), invalid: reason };
    compiledForms.set(policy, c);
  }
  return c;
}

/** Whether `command` on the object `name` is allowed. */
export function isAllowed(policy: PolicyRules, command: string, name: string): boolean {
  if (name.length > MAX_MATCHED_NAME) return false;
  const c = compilePolicy(policy);
  const allow = c.allow.get(command);
  if (allow === undefined) return false;
  if (!allow.matches(name, ctx)) return false;
  const deny = c.deny.get(command);
  return deny === undefined || !deny.matches(name, ctx);
}

/** Whether the policy grants `command` on anything at all (used to admit LIST commands). */
export function grantsAny(policy: PolicyRules, command: string): boolean {
  return (compilePolicy(policy).allow.get(command)?.size ?? 0) > 0;
}

/** Whether `name` matches one pattern (the policy semantics of a single pattern). */
export function matchPattern(pattern: string, name: string): boolean {
  return matchGlob(pattern, name);
}
