/**
 * Micro-benchmark of one policy check (`isAllowed`) with a policy at the limits of
 * src/kms/policy.ts: 1,000 patterns on one command (500 allow, 500 deny), the maximum number of
 * glob patterns, each of them adversarial (a long interior segment that almost matches).
 *
 *   npm run build && node dist/bench/policy-check.js
 *
 * Prints µs per check for names that match early, late, or not at all; a 1,000-frame request
 * does one check per frame.
 */
import { MAX_GLOB_PATTERNS, MAX_PATTERNS_PER_COMMAND, compilePolicy, isAllowed, normalizePolicy } from '../src/kms/policy.js';

const CMD = 'KEY:GENERATE';

function maxPolicy(): { allow: Record<string, string[]>; deny: Record<string, string[]> } {
  const allow: string[] = [];
  const deny: string[] = [];
  for (let i = 0; allow.length < MAX_PATTERNS_PER_COMMAND; i++) allow.push(i % 2 ? `app-${i}-key` : `app-${i}-*`);
  // Globs that scan the whole name: an interior segment of 40 'a' then 'b', against names of 'a's.
  for (let i = 0; i < MAX_GLOB_PATTERNS; i++) deny.push(`*${'a'.repeat(40)}b${i}*x`);
  for (let i = 0; deny.length < MAX_PATTERNS_PER_COMMAND; i++) deny.push(`app-${i}-old`);
  return normalizePolicy({ [CMD]: allow }, { [CMD]: deny }, () => true);
}

/** Best of 5 rounds (the machine may be shared): µs per check. */
function measure(label: string, policy: { allow: Record<string, string[]>; deny: Record<string, string[]> }, names: string[]): void {
  let allowed = 0;
  let best = Infinity;
  for (let round = 0; round < 6; round++) {
    const t0 = performance.now();
    for (let r = 0; r < 20; r++) for (const n of names) allowed += isAllowed(policy, CMD, n) ? 1 : 0;
    const us = ((performance.now() - t0) * 1000) / (20 * names.length);
    if (round > 0) best = Math.min(best, us); // round 0 warms up
  }
  console.log(`${label.padEnd(44)} ${best.toFixed(3).padStart(8)} µs/check   (${best.toFixed(1)} ms per 1000-frame request)`);
  if (allowed < 0) console.log(allowed);
}

const policy = maxPolicy();
const t0 = performance.now();
compilePolicy(policy);
console.log(
  `compile (${MAX_PATTERNS_PER_COMMAND * 2} patterns, ${MAX_GLOB_PATTERNS} globs): ${(performance.now() - t0).toFixed(2)} ms, once per policy version`,
);
measure(
  'allowed by an exact name (deny scans all)',
  policy,
  Array.from({ length: 1000 }, (_, i) => `app-${(i % 250) * 2 + 1}-key`),
);
measure(
  'allowed by a prefix (deny scans all)',
  policy,
  Array.from({ length: 1000 }, (_, i) => `app-${(i % 250) * 2}-x`),
);
measure(
  'refused: no allow matches',
  policy,
  Array.from({ length: 1000 }, (_, i) => `other-${i}`),
);
measure(
  'worst case: 128 chars, every glob scans',
  policy,
  Array.from({ length: 1000 }, (_, i) => `app-${(i % 250) * 2}-${'a'.repeat(120)}`),
);
