/**
 * Conformance suite for the storage port (src/store/store.ts). Every backend's test file calls
 * `storeSuite(name, factory)`; the suite runs the whole written contract against it:
 *
 * - `get` of a missing key is `undefined`;
 * - `commit` applies puts and deletes atomically, with one store-wide, strictly increasing
 *   revision per successful commit, and every entry it writes carries that revision;
 * - conditions: `rev: 0` means "absent", any other rev must equal the key's current rev; if one
 *   condition fails, nothing of the batch is written;
 * - `range(prefix)` returns exactly the keys starting with `prefix`, in ascending byte order;
 * - values are opaque bytes (and, unless the backend opts out, copied in and out);
 * - concurrent commits from many promises serialize correctly;
 * - (if the fixture can `reopen`) everything, including the revision counter, survives a
 *   close and reopen.
 *
 * Failures read "case N (name): got X, want Y".
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import type { Condition, Mutation, Store, StoreEntry } from '../../src/store/store.js';

export interface StoreFixture {
  /** A fresh, empty store. */
  readonly store: Store;
  /**
   * Closes `store` and opens the same storage again. Absent for volatile backends (the
   * persistence tests are skipped then).
   */
  readonly reopen?: () => Promise<Store>;
  /** Closes whatever is open and removes every trace (temp dirs). Must not throw. */
  cleanup(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreFixture>;

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const put = (key: string, value: string | Buffer): Mutation => ({ key, value: typeof value === 'string' ? utf8(value) : value });
const del = (key: string): Mutation => ({ key });
const show = (e: StoreEntry | undefined): string => (e ? `{${e.key}=${e.value.toString('hex')}@${e.rev}}` : 'undefined');

/** Runs `fn` with a fresh fixture and always cleans up. */
async function withStore(factory: StoreFactory, fn: (f: StoreFixture) => Promise<void>): Promise<void> {
  const f = await factory();
  try {
    await fn(f);
  } finally {
    await f.cleanup();
  }
}

/** All entries of the store as `key=hex@rev`, for "nothing changed" comparisons. */
async function snapshot(store: Store): Promise<string[]> {
  return (await store.range('')).map((e) => `${e.key}=${e.value.toString('hex')}@${e.rev}`);
}

async function mustCommit(store: Store, conds: readonly Condition[], muts: readonly Mutation[], label: string): Promise<number> {
  const res = await store.commit(conds, muts);
  assert.equal(res.ok, true, `${label}: commit got ok=false, want ok=true`);
  assert.ok(Number.isSafeInteger(res.rev) && res.rev > 0, `${label}: got rev ${res.rev}, want a positive integer`);
  return res.rev;
}

/** Byte-order comparison of two keys (what the contract promises for `range`). */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(utf8(a), utf8(b));
}

/** Keys for the range tests: near-miss prefixes and every ASCII class our names use. */
const RANGE_KEYS = [
  'key/a/x',
  'key/a/b',
  'key/a/',
  'key/a',
  'key/a-b/c',
  'key/a.b/c',
  'key/a0',
  'key/a:1',
  'key/aB/c',
  'key/a_/c',
  'key/ab/z',
  'key/A/c',
  'key/b/a',
  'kez',
  'ke',
  'enclave/a',
  'enclave/a-b',
  'identity/a/h1:AAAA',
  'identity/a/h1:-zz',
  'identity/a/h1:_zz',
  'rek/hsm:minio:soft',
  'x~',
  'x~a',
  'x\x7f',
  'y',
];

interface RangeCase {
  name: string;
  prefix: string;
}

const RANGE_CASES: RangeCase[] = [
  { name: 'one enclave, trailing slash', prefix: 'key/a/' },
  { name: 'no slash: every key starting with key/a', prefix: 'key/a' },
  { name: 'sibling with dash', prefix: 'key/a-b/' },
  { name: 'sibling with dot', prefix: 'key/a.b/' },
  { name: 'uppercase segment', prefix: 'key/A/' },
  { name: 'whole table key/', prefix: 'key/' },
  { name: 'identities with h1: names', prefix: 'identity/a/' },
  { name: 'sealed entries', prefix: 'rek/' },
  { name: 'exact key as prefix', prefix: 'kez' },
  { name: 'prefix of a key name only', prefix: 'ke' },
  { name: 'prefix ending in ~ (0x7e)', prefix: 'x~' },
  { name: 'prefix ending in DEL (0x7f)', prefix: 'x\x7f' },
  { name: 'nothing matches', prefix: 'nope/' },
  { name: 'nothing matches, sorts after all', prefix: 'zzz' },
  { name: 'empty prefix: everything', prefix: '' },
];

interface ConditionCase {
  name: string;
  /** Builds the conditions from the current revisions of `present` (written at `presentRev`) and `gone` (deleted, was `goneRev`). */
  conditions: (r: { presentRev: number; goneRev: number }) => Condition[];
  ok: boolean;
}

const CONDITION_CASES: ConditionCase[] = [
  { name: 'rev 0 on an absent key', conditions: () => [{ key: 'absent', rev: 0 }], ok: true },
  { name: 'rev 0 on a present key', conditions: () => [{ key: 'present', rev: 0 }], ok: false },
  { name: 'current rev of a present key', conditions: (r) => [{ key: 'present', rev: r.presentRev }], ok: true },
  { name: 'stale rev of a present key', conditions: (r) => [{ key: 'present', rev: r.presentRev - 1 }], ok: false },
  { name: 'future rev of a present key', conditions: (r) => [{ key: 'present', rev: r.presentRev + 1000 }], ok: false },
  { name: 'rev of an absent key that never existed', conditions: (r) => [{ key: 'absent', rev: r.presentRev }], ok: false },
  { name: 'old rev of a deleted key', conditions: (r) => [{ key: 'gone', rev: r.goneRev }], ok: false },
  { name: 'rev 0 on a deleted key', conditions: () => [{ key: 'gone', rev: 0 }], ok: true },
  {
    name: 'all of several conditions hold',
    conditions: (r) => [
      { key: 'absent', rev: 0 },
      { key: 'present', rev: r.presentRev },
      { key: 'gone', rev: 0 },
    ],
    ok: true,
  },
  {
    name: 'last of several conditions fails',
    conditions: (r) => [
      { key: 'absent', rev: 0 },
      { key: 'present', rev: r.presentRev },
      { key: 'gone', rev: r.goneRev },
    ],
    ok: false,
  },
  {
    name: 'first of several conditions fails',
    conditions: () => [
      { key: 'present', rev: 0 },
      { key: 'absent', rev: 0 },
    ],
    ok: false,
  },
  { name: 'no conditions', conditions: () => [], ok: true },
];

const VALUE_CASES: [string, Buffer][] = [
  ['empty', Buffer.alloc(0)],
  ['NUL bytes', Buffer.alloc(17)],
  ['all byte values', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
  ['invalid UTF-8', Buffer.of(0xc3, 0x28, 0xff, 0xfe)],
  ['64 KiB', Buffer.alloc(64 * 1024, 0xa5)],
];

export function storeSuite(name: string, factory: StoreFactory, persistent = true): void {
  describe(`Store conformance: ${name}`, () => {
    it('get of a missing key is undefined', () =>
      withStore(factory, async ({ store }) => {
        await mustCommit(store, [], [put('key/a/x', 'v'), put('cluster', 'c')], 'setup');
        const missing = ['key/a/y', 'key/a', 'key/a/x/', 'key/a/X', 'Cluster', 'rek/', ''];
        for (const [i, key] of missing.entries()) {
          const got = await store.get(key);
          assert.equal(got, undefined, `case ${i} (${JSON.stringify(key)}): got ${show(got)}, want undefined`);
        }
      }));

    it('commit puts and deletes; entries carry the commit revision', () =>
      withStore(factory, async ({ store }) => {
        const r1 = await mustCommit(store, [], [put('a', 'one'), put('b', Buffer.of(0, 1, 2, 0xff)), put('c', 'three')], 'commit 1');
        const want1: [string, string, number][] = [
          ['a', utf8('one').toString('hex'), r1],
          ['b', '000102ff', r1],
          ['c', utf8('three').toString('hex'), r1],
        ];
        for (const [i, [key, hex, rev]] of want1.entries()) {
          const got = await store.get(key);
          assert.ok(got, `case ${i} (${key} after commit 1): got undefined, want ${hex}@${rev}`);
          assert.equal(got.key, key, `case ${i} (${key}): got key ${got.key}, want ${key}`);
          assert.equal(got.value.toString('hex'), hex, `case ${i} (${key}): got value ${got.value.toString('hex')}, want ${hex}`);
          assert.equal(got.rev, rev, `case ${i} (${key}): got rev ${got.rev}, want the commit's rev ${rev}`);
        }

        // Overwrite one, delete one, leave one alone: mixed batch.
        const r2 = await mustCommit(store, [], [put('a', 'uno'), del('b'), put('d', '')], 'commit 2');
        const want2: [string, string | undefined, number][] = [
          ['a', utf8('uno').toString('hex'), r2],
          ['b', undefined, 0],
          ['c', utf8('three').toString('hex'), r1],
          ['d', '', r2],
        ];
        for (const [i, [key, hex, rev]] of want2.entries()) {
          const got = await store.get(key);
          if (hex === undefined) {
            assert.equal(got, undefined, `case ${i} (${key} after delete): got ${show(got)}, want undefined`);
            continue;
          }
          assert.ok(got, `case ${i} (${key} after commit 2): got undefined, want ${hex}@${rev}`);
          assert.equal(got.value.toString('hex'), hex, `case ${i} (${key}): got value ${got.value.toString('hex')}, want ${hex}`);
          assert.equal(got.rev, rev, `case ${i} (${key}): got rev ${got.rev}, want ${rev}`);
        }

        // Deleting a key that does not exist is not an error.
        await mustCommit(store, [], [del('never-existed')], 'delete of a missing key');
        // Within one batch, the last mutation of a key wins.
        const r4 = await mustCommit(store, [], [put('e', 'first'), put('e', 'second')], 'double put');
        const e = await store.get('e');
        assert.equal(e?.value.toString(), 'second', `double put: got ${show(e)}, want second@${r4}`);
        await mustCommit(store, [], [put('f', 'x'), del('f')], 'put then delete');
        assert.equal(await store.get('f'), undefined, 'put then delete in one batch: got an entry, want undefined');
      }));

    it('revisions strictly increase across commits', () =>
      withStore(factory, async ({ store }) => {
        let last = 0;
        const muts: Mutation[][] = [
          [put('a', '1')],
          [put('a', '2')],
          [del('a')],
          [put('b', '1'), put('c', '1')],
          [del('nothing')],
          [],
          [put('a', '3')],
        ];
        for (const [i, m] of muts.entries()) {
          const rev = await mustCommit(store, [], m, `case ${i}`);
          assert.ok(rev > last, `case ${i} (commit of ${m.length} mutations): got rev ${rev}, want > ${last}`);
          last = rev;
        }
        // A failed commit does not move a later successful revision backwards.
        const failed = await store.commit([{ key: 'a', rev: 0 }], [put('z', 'no')]);
        assert.equal(failed.ok, false, 'failed commit: got ok=true, want ok=false');
        const after = await mustCommit(store, [], [put('z', 'yes')], 'after failure');
        assert.ok(after > last, `after a failed commit: got rev ${after}, want > ${last}`);
      }));

    it('conditions: rev 0 = absent, a failing condition writes nothing of the batch', async () => {
      for (const [i, c] of CONDITION_CASES.entries()) {
        await withStore(factory, async ({ store }) => {
          await mustCommit(store, [], [put('gone', 'g')], `case ${i} setup 1`);
          const goneRev = (await store.get('gone'))!.rev;
          await mustCommit(store, [], [del('gone')], `case ${i} setup 2`);
          const presentRev = await mustCommit(store, [], [put('present', 'p'), put('bystander', 'b')], `case ${i} setup 3`);
          const before = await snapshot(store);

          const conds = c.conditions({ presentRev, goneRev });
          const res = await store.commit(conds, [put('present', 'changed'), put('new/1', 'n1'), del('bystander'), put('new/2', 'n2')]);
          assert.equal(res.ok, c.ok, `case ${i} (${c.name}): got ok=${res.ok}, want ok=${c.ok}`);
          const after = await snapshot(store);
          if (!c.ok) {
            assert.deepEqual(
              after,
              before,
              `case ${i} (${c.name}): got store ${JSON.stringify(after)}, want unchanged ${JSON.stringify(before)}`,
            );
            return;
          }
          assert.ok(res.rev > presentRev, `case ${i} (${c.name}): got rev ${res.rev}, want > ${presentRev}`);
          const want = [
            `new/1=${utf8('n1').toString('hex')}@${res.rev}`,
            `new/2=${utf8('n2').toString('hex')}@${res.rev}`,
            `present=${utf8('changed').toString('hex')}@${res.rev}`,
          ];
          assert.deepEqual(after, want, `case ${i} (${c.name}): got store ${JSON.stringify(after)}, want ${JSON.stringify(want)}`);
        });
      }
    });

    it('a condition on a key holds only until that key is written again', () =>
      withStore(factory, async ({ store }) => {
        const r1 = await mustCommit(store, [{ key: 'k', rev: 0 }], [put('k', 'v1')], 'create');
        const r2 = await mustCommit(store, [{ key: 'k', rev: r1 }], [put('k', 'v2')], 'update with current rev');
        const stale = await store.commit([{ key: 'k', rev: r1 }], [put('k', 'v3')]);
        assert.equal(stale.ok, false, 'update with the rev before the last write: got ok=true, want ok=false');
        // A write to another key must not change k's revision.
        await mustCommit(store, [], [put('other', 'x')], 'unrelated write');
        await mustCommit(store, [{ key: 'k', rev: r2 }], [del('k')], 'delete with current rev (unrelated writes in between)');
        const recreate = await store.commit([{ key: 'k', rev: r2 }], [put('k', 'v4')]);
        assert.equal(recreate.ok, false, 'condition with the rev of a deleted key: got ok=true, want ok=false');
        await mustCommit(store, [{ key: 'k', rev: 0 }], [put('k', 'v5')], 're-create after delete');
      }));

    it('range returns exactly the keys with the prefix, in ascending byte order', () =>
      withStore(factory, async ({ store }) => {
        // Written over several commits, in no particular order, so that revs differ.
        const revs = new Map<string, number>();
        const shuffled = [...RANGE_KEYS].reverse();
        for (let i = 0; i < shuffled.length; i += 4) {
          const batch = shuffled.slice(i, i + 4);
          const rev = await mustCommit(
            store,
            [],
            batch.map((k) => put(k, `value of ${k}`)),
            `setup ${i}`,
          );
          for (const k of batch) revs.set(k, rev);
        }
        for (const [i, c] of RANGE_CASES.entries()) {
          const want = RANGE_KEYS.filter((k) => k.startsWith(c.prefix)).sort(byteOrder);
          const got = await store.range(c.prefix);
          const gotKeys = got.map((e) => e.key);
          assert.deepEqual(
            gotKeys,
            want,
            `case ${i} (${c.name}, prefix ${JSON.stringify(c.prefix)}): got ${JSON.stringify(gotKeys)}, want ${JSON.stringify(want)}`,
          );
          for (const e of got) {
            assert.equal(
              e.value.toString(),
              `value of ${e.key}`,
              `case ${i} (${c.name}): got value ${JSON.stringify(e.value.toString())} for ${e.key}`,
            );
            assert.equal(e.rev, revs.get(e.key), `case ${i} (${c.name}): got rev ${e.rev} for ${e.key}, want ${revs.get(e.key)}`);
          }
        }
      }));

    it('range of an empty store is empty; range sees deletes', () =>
      withStore(factory, async ({ store }) => {
        assert.deepEqual(await store.range(''), [], 'empty store, prefix "": got entries, want none');
        assert.deepEqual(await store.range('key/'), [], 'empty store, prefix "key/": got entries, want none');
        await mustCommit(store, [], [put('key/a/1', '1'), put('key/a/2', '2'), put('key/a/3', '3')], 'setup');
        await mustCommit(store, [], [del('key/a/2')], 'delete');
        const got = (await store.range('key/a/')).map((e) => e.key);
        assert.deepEqual(got, ['key/a/1', 'key/a/3'], `after delete: got ${JSON.stringify(got)}, want ["key/a/1","key/a/3"]`);
      }));

    it('values are opaque bytes', () =>
      withStore(factory, async ({ store }) => {
        for (const [i, [label, value]] of VALUE_CASES.entries()) {
          await mustCommit(store, [], [{ key: `v/${i}`, value: Buffer.from(value) }], `case ${i} (${label})`);
          const got = await store.get(`v/${i}`);
          assert.ok(got, `case ${i} (${label}): got undefined`);
          assert.ok(
            got.value.equals(value),
            `case ${i} (${label}): got ${got.value.length} bytes ${got.value.subarray(0, 16).toString('hex')}…, want ${value.length} bytes ${value.subarray(0, 16).toString('hex')}…`,
          );
          const ranged = (await store.range(`v/${i}`)).find((e) => e.key === `v/${i}`);
          assert.ok(ranged?.value.equals(value), `case ${i} (${label}): range got a different value than get`);
        }
      }));

    it('values are copied in and out (a caller zeroing its buffers cannot change the store)', async () => {
      await withStore(factory, async ({ store }) => {
        for (const [i, [label, value]] of VALUE_CASES.entries()) {
          const input = Buffer.from(value);
          await mustCommit(store, [], [{ key: `v/${i}`, value: input }], `case ${i} (${label})`);
          input.fill(0x5a);
          const got = await store.get(`v/${i}`);
          assert.ok(got?.value.equals(value), `case ${i} (${label}): changing the committed buffer changed the stored value`);
          got!.value.fill(0x33);
          const again = await store.get(`v/${i}`);
          assert.ok(again?.value.equals(value), `case ${i} (${label}): changing a value returned by get changed the stored value`);
          (await store.range(`v/${i}`))[0]!.value.fill(0x44);
          const third = await store.get(`v/${i}`);
          assert.ok(third?.value.equals(value), `case ${i} (${label}): changing a value returned by range changed the stored value`);
        }
      });
    });

    it('concurrent create-if-absent: exactly one winner per key', () =>
      withStore(factory, async ({ store }) => {
        const KEYS = 50;
        const ATTEMPTS = 200;
        const results = await Promise.all(
          Array.from({ length: ATTEMPTS }, (_, i) => {
            const key = `lock/${i % KEYS}`;
            return store.commit([{ key, rev: 0 }], [put(key, `attempt ${i}`)]).then((res) => ({ i, key, res }));
          }),
        );
        const winners = results.filter((r) => r.res.ok);
        assert.equal(winners.length, KEYS, `got ${winners.length} successful commits, want ${KEYS}`);
        const perKey = new Map<string, number>();
        for (const w of winners) perKey.set(w.key, (perKey.get(w.key) ?? 0) + 1);
        for (let k = 0; k < KEYS; k++) {
          assert.equal(perKey.get(`lock/${k}`), 1, `case ${k} (lock/${k}): got ${perKey.get(`lock/${k}`) ?? 0} winners, want 1`);
        }
        const revs = winners.map((w) => w.res.rev);
        assert.equal(new Set(revs).size, revs.length, `got duplicate revisions among winners: ${JSON.stringify(revs)}`);
        for (const [n, w] of winners.entries()) {
          const got = await store.get(w.key);
          assert.equal(
            got?.value.toString(),
            `attempt ${w.i}`,
            `case ${n} (${w.key}): got ${show(got)}, want the winner's value "attempt ${w.i}"`,
          );
          assert.equal(got?.rev, w.res.rev, `case ${n} (${w.key}): got rev ${got?.rev}, want the winner's rev ${w.res.rev}`);
        }
        assert.equal((await store.range('lock/')).length, KEYS, 'got a different number of lock/ entries than keys');
      }));

    it('concurrent compare-and-set increments lose no update', () =>
      withStore(factory, async ({ store }) => {
        const WORKERS = 20;
        const INCREMENTS = 10;
        const MAX_TRIES = 10_000;
        await mustCommit(store, [], [put('counter', '0')], 'setup');
        let conflicts = 0;
        const worker = async (): Promise<void> => {
          for (let n = 0; n < INCREMENTS; n++) {
            for (let tries = 0; ; tries++) {
              assert.ok(tries < MAX_TRIES, 'a worker retried too often: compare-and-set never succeeds');
              const cur = (await store.get('counter'))!;
              await new Promise<void>((r) => setImmediate(r)); // let the others interleave
              const next = String(Number(cur.value.toString()) + 1);
              const res = await store.commit([{ key: 'counter', rev: cur.rev }], [put('counter', next)]);
              if (res.ok) break;
              conflicts++;
            }
          }
        };
        await Promise.all(Array.from({ length: WORKERS }, worker));
        const got = (await store.get('counter'))!.value.toString();
        assert.equal(
          got,
          String(WORKERS * INCREMENTS),
          `got counter ${got}, want ${WORKERS * INCREMENTS} (${conflicts} conflicts retried)`,
        );
        assert.ok(conflicts > 0, 'the workers never conflicted: the test did not interleave');
      }));

    it('close can be called twice', () =>
      withStore(factory, async ({ store }) => {
        await store.close();
        await store.close();
      }));

    // Only for backends that persist (the in-memory reference does not).
    if (persistent)
      it('everything survives close and reopen, and revisions keep increasing', async () => {
        await withStore(factory, async (f) => {
          const store = f.store;
          const r1 = await mustCommit(
            store,
            [],
            [put('cluster', 'c'), put('key/a/1', Buffer.of(0, 1, 2)), put('key/a/2', 'two')],
            'commit 1',
          );
          const r2 = await mustCommit(store, [], [del('key/a/2'), put('key/b/1', 'b1')], 'commit 2');
          const before = await snapshot(store);
          const reopened = await f.reopen!();
          const after = await snapshot(reopened);
          assert.deepEqual(after, before, `after reopen: got ${JSON.stringify(after)}, want ${JSON.stringify(before)}`);
          const cluster = await reopened.get('cluster');
          assert.equal(cluster?.rev, r1, `after reopen: got cluster rev ${cluster?.rev}, want ${r1}`);
          const r3 = await mustCommit(
            reopened,
            [{ key: 'key/b/1', rev: r2 }],
            [put('key/b/1', 'b2')],
            'commit after reopen with a pre-reopen rev',
          );
          assert.ok(r3 > r2, `after reopen: got rev ${r3}, want > ${r2} (the revision counter must persist)`);
          const again = await f.reopen!();
          const b1 = await again.get('key/b/1');
          assert.equal(b1?.value.toString(), 'b2', `after second reopen: got ${show(b1)}, want b2@${r3}`);
          assert.equal(b1?.rev, r3, `after second reopen: got rev ${b1?.rev}, want ${r3}`);
        });
      });
  });
}
