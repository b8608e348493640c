/**
 * Policies (src/kms/policy.ts, src/kms/glob.ts): the glob semantics (`*` and `?` anywhere),
 * compiled evaluation against a pattern-by-pattern reference, deny never failing open (checks
 * and LIST filtering), the documented limits, and a policy deleted and created again.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  MAX_GLOB_PATTERNS,
  MAX_MATCHED_NAME,
  MAX_PATTERNS_PER_COMMAND,
  MAX_PATTERNS_PER_POLICY,
  MAX_PATTERN_LENGTH,
  MAX_POLICY_CHARS,
  compilePolicy,
  grantsAny,
  isAllowed,
  matchPattern,
  normalizePolicy,
  type PolicyRules,
  type Rules,
} from '../../src/kms/policy.js';
import { PRIVILEGE } from '../../src/kms/records.js';
import { isSdkCommandName } from '../../src/protocol/commands.js';
import { createId, newIdentity, withKms } from '../helpers/kms.js';
import { rejectsWith } from '../helpers/clients.js';

/** The meaning of a pattern, written the obvious way (backtracking is fine on short names). */
function reference(pattern: string, name: string): boolean {
  if (name.length > MAX_MATCHED_NAME) return false;
  const re = pattern.replace(/[.:-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's').test(name);
}

function referenceAllowed(p: PolicyRules, command: string, name: string): boolean {
  const any = (rules: Rules) => (rules[command] ?? []).some((pat) => reference(pat, name));
  return name.length <= MAX_MATCHED_NAME && !any(p.deny) && any(p.allow);
}

/** A seeded PRNG (mulberry32), so a failure can be reproduced. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = (r: () => number, s: string) => s[Math.floor(r() * s.length)]!;
const randomString = (r: () => number, alphabet: string, max: number) =>
  Array.from({ length: Math.floor(r() * (max + 1)) }, () => pick(r, alphabet)).join('');

const MATCH: [string, string, boolean][] = [
  ['*', '', true],
  ['*', 'anything', true],
  ['minio-*', 'minio-', true],
  ['minio-*', 'minio', false],
  ['minio-*-prod', 'minio-x-prod', true],
  ['minio-*-prod', 'minio--prod', true],
  ['minio-*-prod', 'minio-prod', false],
  ['minio-*-prod', 'minio-x-prod-2', false],
  ['minio-*-prod', 'minio-a-prod-b-prod', true],
  ['*-prod', 'x-prod', true],
  ['*-prod', 'x-prod-x', false],
  ['a*b*c', 'abc', true],
  ['a*b*c', 'aXbYc', true],
  ['a*b*c', 'acb', false],
  ['a*b*c', 'abcbc', true],
  ['a*a*a', 'aa', false],
  ['a*a*a', 'aaa', true],
  ['a**b', 'aXb', true],
  ['**', 'x', true],
  ['*a*', 'bab', true],
  ['*a*', 'bbb', false],
  ['k?y', 'key', true],
  ['k?y', 'ky', false],
  ['k?y', 'keey', false],
  ['?', 'a', true],
  ['?', '', false],
  ['??*', 'a', false],
  ['??*', 'ab', true],
  ['*?x?*', 'axa', true],
  ['*?x?*', 'xa', false],
  ['app-?-*', 'app-1-a', true],
  ['app-?-*', 'app-12-a', false],
  ['exact', 'exact', true],
  ['exact', 'exact2', false],
  ['Key', 'key', false],
  // A name that straddles the 32-character words of the position index.
  [`*${'a'.repeat(30)}b?c*`, `${'x'.repeat(20)}${'a'.repeat(30)}bXc${'y'.repeat(40)}`, true],
  [`*${'a'.repeat(30)}b?c*`, `${'x'.repeat(20)}${'a'.repeat(30)}bXd${'y'.repeat(40)}`, false],
  [`*z`, `${'a'.repeat(127)}z`, true],
  [`a*`, `a${'b'.repeat(MAX_MATCHED_NAME)}`, false], // longer than any name: matches nothing
];

describe('policy patterns', () => {
  it('match with * (any run) and ? (one character) anywhere', () => {
    MATCH.forEach(([pattern, name, want], i) => {
      const got = matchPattern(pattern, name);
      assert.equal(got, want, `case ${i} (${JSON.stringify(pattern)} vs ${JSON.stringify(name)}): got ${got}, want ${want}`);
      assert.equal(reference(pattern, name), want, `case ${i}: the reference disagrees with the table`);
    });
  });

  it('the matcher agrees with a reference on 20,000 random patterns and names', () => {
    const r = rng(11);
    for (let i = 0; i < 20_000; i++) {
      const pattern = randomString(r, 'ab-*?', 10) || '*';
      const name = randomString(r, 'ab-', r() < 0.1 ? 128 : 14);
      const got = matchPattern(pattern, name);
      const want = reference(pattern, name);
      assert.equal(got, want, `case ${i} (${JSON.stringify(pattern)} vs ${JSON.stringify(name)}): got ${got}, want ${want}`);
    }
  });

  it('a compiled policy agrees with pattern-by-pattern evaluation, deny winning (3,000 random policies)', () => {
    const r = rng(7);
    const randomPatterns = () => {
      const n = Math.floor(r() * 8);
      return Array.from({ length: n }, () => {
        const kind = r();
        if (kind < 0.35) return randomString(r, 'abc', 4) || 'a';
        if (kind < 0.7) return `${randomString(r, 'abc', 3)}*`;
        return randomString(r, 'abc*?', 6) || '?';
      });
    };
    for (let i = 0; i < 3_000; i++) {
      const raw = { allow: { 'KEY:ENCRYPT': randomPatterns() }, deny: { 'KEY:ENCRYPT': randomPatterns() } };
      const policy = normalizePolicy(raw.allow, raw.deny, () => true);
      for (let j = 0; j < 20; j++) {
        const name = randomString(r, 'abc', 7);
        const got = isAllowed(policy, 'KEY:ENCRYPT', name);
        const want = referenceAllowed(raw, 'KEY:ENCRYPT', name);
        assert.equal(got, want, `policy ${i} ${JSON.stringify(raw)} name ${JSON.stringify(name)}: got ${got}, want ${want}`);
      }
      assert.equal(isAllowed(policy, 'KEY:DECRYPT', 'a'), false, `policy ${i}: another command is allowed`);
    }
  });

  it('normalization collapses runs of *, drops empties and duplicates, sorts by length', () => {
    const p = normalizePolicy({ 'key:generate': ['b**', 'a', '', 'b*', 'x**y'] }, {}, isSdkCommandName);
    assert.deepEqual(p.allow, { 'KEY:GENERATE': ['a', 'b*', 'x*y'] });
    assert.deepEqual(p.deny, {});
  });
});

describe('a deny never fails open', () => {
  it('allow KEY:GENERATE minio-* + deny minio-*-prod: minio-x-prod refused, minio-x allowed, LIST filtered alike', () =>
    withKms(async ({ kms, root }) => {
      await kms.createEnclave(root, 'e');
      const rootP = kms.principal(root, 'e');
      await kms.createPolicy(
        root,
        'e',
        'minio',
        { 'KEY:GENERATE': ['minio-*'], 'KEY:LIST': ['minio-*'] },
        { 'KEY:GENERATE': ['minio-*-prod'], 'KEY:LIST': ['minio-*-prod', 'minio-?-old'] },
        isSdkCommandName,
      );
      const user = newIdentity();
      await createId(kms, rootP, 'e', user, 'User');
      await kms.assignPolicy(rootP, 'e', user, 'minio');
      const sa = newIdentity();
      await createId(kms, kms.principal(user, 'e'), 'e', sa, '', true);
      for (const k of ['minio-x', 'minio-x-prod', 'minio-a-old', 'minio-ab-old', 'other', 'minio-prod']) {
        await kms.createKey(root, 'e', k, '', false);
      }
      for (const id of [user, sa]) {
        const p = kms.principal(id, 'e');
        const cases: [string, string, boolean][] = [
          ['KEY:GENERATE', 'minio-x', true],
          ['KEY:GENERATE', 'minio-x-prod', false],
          ['KEY:GENERATE', 'minio--prod', false],
          ['KEY:GENERATE', 'minio-prod', true],
          ['KEY:GENERATE', 'minio-x-prod-2', true],
          ['KEY:GENERATE', 'other', false],
          ['KEY:DECRYPT', 'minio-x', false],
        ];
        cases.forEach(([cmd, name, want], i) => {
          assert.equal(kms.allowed(p, cmd, name), want, `case ${i} (${id === sa ? 'service account' : 'user'} ${cmd} ${name})`);
        });
        // The server filters LIST results with the same check (server/dispatch.ts `visible`).
        assert.equal(kms.allowedToList(p, 'KEY:LIST'), true);
        const listed = kms.listKeys('e', '', '', 0, (name) => kms.allowed(p, 'KEY:LIST', name)).items.map((k) => k.name);
        assert.deepEqual(listed, ['minio-ab-old', 'minio-prod', 'minio-x'], 'KEY:LIST shows a denied key');
      }
      // What get-policy shows is what is enforced.
      const stored = kms.policy('e', 'minio');
      assert.deepEqual(stored.deny, { 'KEY:GENERATE': ['minio-*-prod'], 'KEY:LIST': ['minio-?-old', 'minio-*-prod'] });
    }));

  it('names longer than any valid name are refused even under allow *', () => {
    const policy = normalizePolicy({ 'KEY:STATUS': ['*'] }, {}, () => true);
    assert.equal(isAllowed(policy, 'KEY:STATUS', 'a'.repeat(MAX_MATCHED_NAME)), true);
    assert.equal(isAllowed(policy, 'KEY:STATUS', 'a'.repeat(MAX_MATCHED_NAME + 1)), false);
    assert.equal(isAllowed(policy, 'KEY:STATUS', 'a'.repeat(8 << 20)), false);
  });

  it('a stored policy that breaks the rules (older version) allows nothing', () => {
    const legacy: PolicyRules = { allow: { 'KEY:ENCRYPT': ['*'] }, deny: { 'KEY:ENCRYPT': ['app-[0-9]*'] } };
    assert.equal(isAllowed(legacy, 'KEY:ENCRYPT', 'app-1'), false);
    assert.equal(isAllowed(legacy, 'KEY:ENCRYPT', 'other'), false);
    assert.equal(grantsAny(legacy, 'KEY:ENCRYPT'), false);
    assert.match(compilePolicy(legacy).invalid ?? '', /app-\[0-9\]\*/);
    const huge: PolicyRules = {
      allow: { 'KEY:ENCRYPT': Array.from({ length: MAX_PATTERNS_PER_COMMAND + 1 }, (_, i) => `k${i}`) },
      deny: {},
    };
    assert.equal(isAllowed(huge, 'KEY:ENCRYPT', 'k1'), false);
  });
});

describe('policy limits', () => {
  const n = (count: number, f: (i: number) => string = (i) => `key-${i}`) => Array.from({ length: count }, (_, i) => f(i));
  const globs = (count: number) => n(count, (i) => `g-*-${i}`);
  const cases: { name: string; allow: Rules; deny?: Rules; error?: RegExp }[] = [
    { name: 'patterns per command at the limit', allow: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_COMMAND) } },
    {
      name: 'patterns per command over the limit',
      allow: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_COMMAND + 1) },
      error: new RegExp(`allow KEY:ENCRYPT has ${MAX_PATTERNS_PER_COMMAND + 1} patterns, more than ${MAX_PATTERNS_PER_COMMAND}`),
    },
    {
      name: 'patterns per policy at the limit',
      allow: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_POLICY / 2) },
      deny: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_POLICY / 2, (i) => `d-${i}`) },
    },
    {
      name: 'patterns per policy over the limit',
      allow: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_POLICY / 2), 'KEY:DECRYPT': ['x'] },
      deny: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_POLICY / 2, (i) => `d-${i}`) },
      error: new RegExp(`more than ${MAX_PATTERNS_PER_POLICY} patterns`),
    },
    { name: '100,000 patterns', allow: { 'KEY:ENCRYPT': n(100_000) }, error: /more than 1000 patterns/ },
    { name: 'pattern length at the limit', allow: { 'KEY:ENCRYPT': ['p'.repeat(MAX_PATTERN_LENGTH)] } },
    {
      name: 'pattern length over the limit',
      allow: { 'KEY:ENCRYPT': ['p'.repeat(MAX_PATTERN_LENGTH + 1)] },
      error: new RegExp(`longer than ${MAX_PATTERN_LENGTH} characters`),
    },
    { name: 'globs at the limit', allow: { 'KEY:ENCRYPT': globs(MAX_GLOB_PATTERNS) } },
    {
      name: 'globs over the limit',
      allow: { 'KEY:ENCRYPT': globs(MAX_GLOB_PATTERNS / 2) },
      deny: { 'KEY:DECRYPT': [...globs(MAX_GLOB_PATTERNS / 2), 'd?'] },
      error: new RegExp(`more than ${MAX_GLOB_PATTERNS} patterns with '\\?' or a '\\*' before the end`),
    },
    {
      name: 'characters in total over the limit',
      allow: { 'KEY:ENCRYPT': n(MAX_PATTERNS_PER_COMMAND, (i) => `${i}-${'c'.repeat(MAX_PATTERN_LENGTH - 8)}`) },
      error: new RegExp(`more than ${MAX_POLICY_CHARS} characters in total`),
    },
    { name: 'prefixes do not count as globs', allow: { 'KEY:ENCRYPT': n(MAX_GLOB_PATTERNS + 1, (i) => `p${i}*`) } },
    ...['app-[0-9]*', 'a\\b', 'a b', 'a/b', 'ключ', 'a{b,c}', 'x\n'].map((p) => ({
      name: `pattern ${JSON.stringify(p)}`,
      allow: { 'KEY:ENCRYPT': ['ok', p] },
      error: /has characters no name can have/,
    })),
    { name: 'unknown command', allow: { 'KEY:FROB': ['*'] }, error: /unknown command 'KEY:FROB'/ },
  ];

  it('are documented constants; over them a policy is refused with 400 invalid policy and a bounded detail', () =>
    withKms(async ({ kms, root }) => {
      await kms.createEnclave(root, 'e');
      for (const [i, c] of cases.entries()) {
        const run = () => kms.createPolicy(root, 'e', `p${i}`, c.allow, c.deny ?? {}, isSdkCommandName);
        if (!c.error) {
          await run();
          continue;
        }
        const err = await rejectsWith(run, 'ERR_INVALID_POLICY', `case ${i} (${c.name})`);
        assert.equal(err.status, 400);
        assert.match(err.message, c.error, `case ${i} (${c.name}): got ${JSON.stringify(err.message)}`);
        assert.ok(err.message.length <= 200, `case ${i} (${c.name}): a detail of ${err.message.length} characters`);
        await rejectsWith(() => kms.policy('e', `p${i}`), 'ERR_POLICY_NOT_FOUND', `case ${i} (${c.name}): stored anyway`);
      }
    }));

  it('a policy at the limits is compiled once and checked right', () => {
    const allow = n(MAX_PATTERNS_PER_COMMAND, (i) => (i % 2 ? `app-${i}-key` : `app-${i}-*`));
    const deny = [
      ...n(MAX_GLOB_PATTERNS, (i) => `app-*-secret-${i}`),
      ...n(MAX_PATTERNS_PER_COMMAND - MAX_GLOB_PATTERNS, (i) => `app-${i}-old`),
    ];
    const policy = normalizePolicy({ 'KEY:GENERATE': allow }, { 'KEY:GENERATE': deny }, isSdkCommandName);
    const compiled = compilePolicy(policy);
    assert.equal(compilePolicy(policy), compiled, 'compiled again for the same policy version');
    const cases: [string, boolean][] = [
      ['app-1-key', true],
      ['app-3-key', true],
      ['app-1-x', false],
      ['app-2-key', true],
      ['app-0-anything', true],
      ['app-0-secret-5', false],
      ['app-498-x-secret-63', false],
      ['app-498-x-secret-64', true],
      ['app-2-old', false],
      ['app-499-key', true],
      ['app-500-key', false],
      ['other', false],
    ];
    cases.forEach(([name, want], i) => {
      assert.equal(isAllowed(policy, 'KEY:GENERATE', name), want, `case ${i} (${name})`);
      assert.equal(referenceAllowed(policy, 'KEY:GENERATE', name), want, `case ${i} (${name}): the reference disagrees`);
    });
  });
});

describe('a policy deleted and created again', () => {
  it('is not granted to the holders of the old one; an overwrite keeps its holders', () =>
    withKms(async (ctx) => {
      const { kms, root } = ctx;
      await kms.createEnclave(root, 'e');
      const rootP = kms.principal(root, 'e');
      const user = newIdentity();
      const sa = newIdentity();
      await createId(kms, rootP, 'e', user, 'User');
      await kms.createPolicy(root, 'e', 'p', { 'KEY:STATUS': ['a*'] }, {}, isSdkCommandName);
      await kms.assignPolicy(rootP, 'e', user, 'p');
      await createId(kms, kms.principal(user, 'e'), 'e', sa, '', true);

      // An overwrite is an update: the holders keep the policy, with its new rules.
      await kms.createPolicy(root, 'e', 'p', { 'KEY:STATUS': ['b*'] }, {}, isSdkCommandName);
      for (const id of [user, sa]) {
        assert.equal(kms.allowed(kms.principal(id, 'e'), 'KEY:STATUS', 'b1'), true, 'the overwritten policy was lost');
        assert.equal(kms.allowed(kms.principal(id, 'e'), 'KEY:STATUS', 'a1'), false, 'the old rules still apply');
      }
      assert.equal(kms.identityInfo('e', user).policy, 'p');

      await kms.deletePolicy('e', 'p');
      await kms.createPolicy(root, 'e', 'p', { 'KEY:STATUS': ['*'] }, {}, isSdkCommandName);
      for (const k of [kms, await ctx.restart()]) {
        for (const id of [user, sa]) {
          const p = k.principal(id, 'e');
          assert.equal(p.policy, undefined, 'the re-created policy is granted to an old holder');
          assert.equal(k.allowed(p, 'KEY:STATUS', 'b1'), false, 'an old holder is allowed by the re-created policy');
        }
        assert.equal(k.identityInfo('e', user).policy, '', 'IDENTITY:STATUS shows a policy the user does not hold');
        assert.equal(k.identityInfo('e', user).privilege, PRIVILEGE.User);
      }
      // Assigning it again grants it.
      await ctx.kms.assignPolicy(ctx.kms.principal(root, 'e'), 'e', user, 'p');
      assert.equal(ctx.kms.allowed(ctx.kms.principal(sa, 'e'), 'KEY:STATUS', 'b1'), true);
      assert.equal(ctx.kms.identityInfo('e', user).policy, 'p');
    }));
});
