/**
 * Policies: `allow` and `deny` maps from a command name (`KEY:GENERATE`) to name patterns.
 * A pattern is an exact name, a prefix ending in `*` (`app-*`), or `*` alone. Evaluation is
 * deny-by-default and any matching deny wins over every allow.
 */

export type Rules = Record<string, string[]>;

export interface PolicyRules {
  readonly allow: Rules;
  readonly deny: Rules;
}

export function matchPattern(pattern: string, name: string): boolean {
  if (pattern.endsWith('*')) return name.startsWith(pattern.slice(0, -1));
  return pattern === name;
}

function matches(rules: Rules, command: string, name: string): boolean {
  const patterns = rules[command];
  return patterns !== undefined && patterns.some((p) => matchPattern(p, name));
}

/** Whether `command` on the object `name` is allowed. */
export function isAllowed(policy: PolicyRules, command: string, name: string): boolean {
  return !matches(policy.deny, command, name) && matches(policy.allow, command, name);
}

/** Whether the policy grants `command` on anything at all (used to admit LIST commands). */
export function grantsAny(policy: PolicyRules, command: string): boolean {
  return (policy.allow[command]?.length ?? 0) > 0;
}

/**
 * Normalizes patterns: empty ones dropped, duplicates removed, sorted by length then
 * lexically (the order the SDK prints them in).
 */
export function normalizePatterns(patterns: Iterable<string>): string[] {
  return [...new Set([...patterns].filter((p) => p !== ''))].sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
}
