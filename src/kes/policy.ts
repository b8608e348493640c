/**
 * KES policies ↔ minkms command policies.
 *
 * A KES policy is two lists of API path patterns (`/v1/key/generate/minio-*`); ours maps
 * commands to name patterns (`KEY:GENERATE: [minio-*]`). A path pattern is an API path and a
 * name pattern: its API (kes/apis.ts) gives the command, the rest is the name pattern, unchanged
 * (KES's `*` and ours mean the same; identities are rewritten from hex to `h1:`).
 *
 * How a path pattern is split:
 * - `/v1/key/generate/minio-*`: it starts with an API path, the rest is the name pattern;
 * - `/v1/key/*`, `/v1/*`: a trailing `*` over the API part (KES matches it as a prefix of the
 *   request path) covers every API it is a prefix of, each with the name pattern `*`;
 * - `/v1/key/*` `/minio-*`-style patterns with a wildcard inside the API part (KES's older
 *   glob semantics, `*` within one path segment): each API whose segments match, with the rest.
 *
 * What cannot be mapped is reported, never silently widened:
 * - paths of APIs without a command (`/v1/status`, `/v1/metrics`, the log streams…): who may call
 *   them is fixed (kes/apis.ts `access`), so an allow is noted and a deny cannot be honoured;
 * - paths of no KES API, names with characters no name here can have, identity patterns that are
 *   not `*` or one whole identity: an allow is dropped (less right), a deny of such a name denies
 *   the whole command (`*`) instead — failing closed.
 */
import { identityOfKes, kesIdentityOf } from '../identity/kes.js';
import { isIdentity } from '../identity/identity.js';
import { checkPattern, normalizePatterns, type Rules } from '../kms/policy.js';
import { matchGlob } from '../kms/glob.js';
import { KES_APIS, type KesApi } from './apis.js';

/** A command policy made from a KES policy, with what could not be carried over. */
export interface MappedPolicy {
  readonly allow: Rules;
  readonly deny: Rules;
  /** One line per path pattern that was not mapped as written (for the operator). */
  readonly notes: string[];
}

/** The APIs a policy path can name: those with a command permission. */
const GRANTABLE = KES_APIS.filter((a) => a.command !== undefined);
/** The APIs whose right is fixed here (no command permission). */
const FIXED = KES_APIS.filter((a) => a.command === undefined && a.access !== undefined);

const ACCESS_TEXT: Record<string, string> = {
  public: 'needs no permission here',
  member: 'is allowed to every identity of the KES enclave here',
  metrics: 'follows metrics.auth / metrics.identities here',
  sysadmin: 'is for SysAdmins only here',
};

/** Segments of an API path without the trailing slash: `/v1/key/generate/` → ['', 'v1', 'key', 'generate']. */
function segments(path: string): string[] {
  return (path.endsWith('/') ? path.slice(0, -1) : path).split('/');
}

/**
 * The name pattern a path pattern gives an API, or undefined if it does not cover the API.
 * For an API without names, '' when the pattern covers it.
 */
export function namePatternFor(pattern: string, a: KesApi): string | undefined {
  const takesName = a.path.endsWith('/');
  if (takesName && pattern.startsWith(a.path)) return pattern.slice(a.path.length);
  if (!takesName && pattern === a.path) return '';
  // A trailing `*` over the API part: KES matches the pattern as a prefix of the request path.
  if (pattern.endsWith('*')) {
    const prefix = pattern.slice(0, -1);
    if (a.path.startsWith(prefix) && !prefix.includes('*') && !prefix.includes('?')) return takesName ? '*' : '';
  }
  // Wildcards inside the API part, one path segment each (KES's older glob semantics).
  if (/[*?]/.test(pattern)) {
    const want = segments(a.path);
    const got = pattern.split('/');
    if (takesName ? got.length <= want.length : got.length !== want.length) return undefined;
    for (let i = 0; i < want.length; i++) if (!matchGlob(got[i]!, want[i]!)) return undefined;
    return takesName ? got.slice(want.length).join('/') : '';
  }
  return undefined;
}

/** A name pattern of a KES path in our terms, or undefined if it has none. */
function ourPattern(a: KesApi, name: string): string | undefined {
  if (a.resource === 'identity') {
    if (name === '*' || (a.list && name === '')) return '*';
    if (/^[0-9a-fA-F]{64}$/.test(name)) return identityOfKes(name);
    return undefined;
  }
  // `/v1/key/list/` alone lists everything.
  if (name === '' && a.list) return '*';
  try {
    checkPattern(name);
    return name;
  } catch {
    return undefined;
  }
}

function add(rules: Rules, command: string, pattern: string): void {
  (rules[command] ??= []).push(pattern);
}

/**
 * Maps a KES policy onto a command policy.
 * @param allow KES `allow` path patterns
 * @param deny KES `deny` path patterns
 */
export function fromKesPolicy(allow: readonly string[], deny: readonly string[]): MappedPolicy {
  const out = { allow: {} as Rules, deny: {} as Rules };
  const notes: string[] = [];
  for (const [side, list] of [
    ['allow', allow],
    ['deny', deny],
  ] as const) {
    for (const pattern of list) {
      let matched = false;
      for (const a of GRANTABLE) {
        const name = namePatternFor(pattern, a);
        if (name === undefined) continue;
        matched = true;
        const ours = ourPattern(a, name);
        if (ours !== undefined) {
          add(out[side], a.command!, ours);
          // One command may stand for several KES APIs (KEY:CREATE for create and import).
          const also = GRANTABLE.filter((b) => b !== a && b.command === a.command && b.served && namePatternFor(pattern, b) === undefined);
          if (side === 'allow' && also.length > 0) {
            notes.push(`allow ${pattern}: here ${a.command} also allows ${also.map((b) => b.path).join(', ')} on the same names`);
          }
          if (!a.served)
            notes.push(`${side} ${pattern}: ${a.path} is not served by the KES API here; mapped to ${a.command} for the minkms API`);
        } else if (side === 'deny') {
          add(out.deny, a.command!, '*');
          notes.push(`deny ${pattern}: '${name.slice(0, 80)}' is no name pattern here; denied ${a.command} on every name instead`);
        } else if (name !== '') {
          notes.push(`allow ${pattern}: '${name.slice(0, 80)}' is no name pattern here; not granted`);
        }
      }
      for (const a of FIXED) {
        if (namePatternFor(pattern, a) === undefined) continue;
        matched = true;
        notes.push(`${side} ${pattern}: ${a.path} ${ACCESS_TEXT[a.access!]}${side === 'deny' ? '; this deny cannot be honoured' : ''}`);
      }
      if (!matched) notes.push(`${side} ${pattern}: no KES API has this path; ignored`);
    }
  }
  const norm = (rules: Rules): Rules => Object.fromEntries(Object.entries(rules).map(([c, p]) => [c, normalizePatterns(p)]));
  return { allow: norm(out.allow), deny: norm(out.deny), notes };
}

/** A KES path pattern for one name pattern of ours; undefined if KES cannot express it. */
function kesPattern(a: KesApi, pattern: string): string | undefined {
  if (a.resource !== 'identity') return a.path + pattern;
  if (pattern === '*') return a.path + '*';
  if (isIdentity(pattern)) return a.path + kesIdentityOf(pattern);
  return undefined;
}

/**
 * Shows a command policy as KES path patterns (what `GET /v1/policy/read/…` and
 * `/v1/identity/self/describe` answer). Commands without a KES API (KEY:LISTVERSIONS, …) have no
 * path; an identity pattern KES cannot express is left out of `allow` and widened to `*` in
 * `deny`, so the paths never allow more than the policy.
 */
export function toKesPolicy(allow: Rules, deny: Rules): { allow: string[]; deny: string[] } {
  const paths = (rules: Rules, side: 'allow' | 'deny'): string[] => {
    const out = new Set<string>();
    for (const [command, patterns] of Object.entries(rules)) {
      for (const a of GRANTABLE) {
        if (a.command !== command) continue;
        for (const p of patterns) {
          const path = kesPattern(a, p) ?? (side === 'deny' ? a.path + '*' : undefined);
          if (path !== undefined) out.add(path);
        }
      }
    }
    return [...out].sort();
  };
  return { allow: paths(allow, 'allow'), deny: paths(deny, 'deny') };
}
