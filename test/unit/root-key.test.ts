/**
 * Unit tests of src/hsm/root-key.ts over a SqliteStore in a temp dir: creating the cluster,
 * reopening, the wrong HSM key (SealedError, nothing written), HSMs added later, transient HSM
 * failures, sealed entries bound to the cluster id and the HSM name, and the ADDHSM/REMOVEHSM
 * rules.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HsmError, type Hsm } from '../../src/hsm/hsm.js';
import { generateSoftHsmKey, SoftHsm, SOFT_HSM_NAME } from '../../src/hsm/soft.js';
import {
  addHsmEntry,
  CLUSTER_KEY,
  openRootKey,
  REK_PREFIX,
  removeHsmEntry,
  sealedEntryNames,
  SealedError,
  type RootKey,
} from '../../src/hsm/root-key.js';
import { ERRORS, type ErrorCode } from '../../src/errors.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/store.js';
import { rejectsWith } from '../helpers/clients.js';

// ---------------------------------------------------------------------------------------------
// helpers

/** A soft HSM under another name (e.g. standing in for an external KMS or a PKCS#11 token). */
class NamedSoftHsm implements Hsm {
  readonly name: string;
  readonly #inner: SoftHsm;
  constructor(name: string, keyText: string = generateSoftHsmKey()) {
    this.name = name;
    this.#inner = new SoftHsm(keyText);
  }
  seal(plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    return this.#inner.seal(plaintext, aad);
  }
  unseal(blob: Buffer, aad: Buffer): Promise<Buffer> {
    return this.#inner.unseal(blob, aad);
  }
  deriveKey(label: string): Promise<Buffer> {
    return this.#inner.deriveKey(label);
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}

type Mode = 'ok' | 'transient' | 'permanent' | 'garbage';

/** An HSM whose seal/unseal can be switched to fail (transiently or for good) or misbehave. */
class FakeHsm implements Hsm {
  readonly name: string;
  sealMode: Mode = 'ok';
  unsealMode: Mode = 'ok';
  seals = 0;
  unseals = 0;
  readonly #inner: SoftHsm;
  constructor(name: string) {
    this.name = name;
    this.#inner = new SoftHsm(generateSoftHsmKey());
  }
  async seal(plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    this.seals++;
    if (this.sealMode === 'transient') throw new HsmError(`${this.name}: connection refused`, false);
    if (this.sealMode === 'permanent') throw new HsmError(`${this.name}: access denied`, true);
    return this.#inner.seal(plaintext, aad);
  }
  async unseal(blob: Buffer, aad: Buffer): Promise<Buffer> {
    this.unseals++;
    if (this.unsealMode === 'transient') throw new HsmError(`${this.name}: connection refused`, false);
    if (this.unsealMode === 'permanent') throw new HsmError(`${this.name}: access denied`, true);
    if (this.unsealMode === 'garbage') return Buffer.alloc(16, 0x42);
    return this.#inner.unseal(blob, aad);
  }
  deriveKey(label: string): Promise<Buffer> {
    return this.#inner.deriveKey(label);
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}

/** A FakeHsm that reports whether a blob was sealed under its latest key version. */
class VersionedHsm extends FakeHsm {
  current: boolean | 'throw' = true;
  async isCurrent(_blob: Buffer): Promise<boolean> {
    if (this.current === 'throw') throw new HsmError(`${this.name}: status unavailable`, false);
    return this.current;
  }
}

/** Runs fn with a SqliteStore in a fresh temp dir; closes and removes it afterwards. */
async function withStore(fn: (store: SqliteStore, dir: string) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'minkms-rootkey-'));
  const store = new SqliteStore(join(root, 'data'));
  try {
    await fn(store, join(root, 'data'));
  } finally {
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

async function snapshot(store: Store): Promise<string[]> {
  return (await store.range('')).map((e) => `${e.key}=${e.value.toString('hex')}@${e.rev}`);
}

async function rejection(p: Promise<unknown>, label: string): Promise<unknown> {
  try {
    const v = await p;
    assert.fail(`${label}: got success (${JSON.stringify(v, (_k, x: unknown) => (Buffer.isBuffer(x) ? '<buffer>' : x))}), want an error`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err;
  }
}

async function assertSealed(p: Promise<unknown>, permanent: boolean, messagePattern: RegExp, label: string): Promise<SealedError> {
  const err = await rejection(p, label);
  assert.ok(err instanceof SealedError, `${label}: got ${String(err)}, want SealedError`);
  assert.equal(err.permanent, permanent, `${label}: got permanent=${err.permanent}, want ${permanent} (${err.message})`);
  assert.match(err.message, messagePattern, `${label}: got message ${JSON.stringify(err.message)}, want it to match ${messagePattern}`);
  return err;
}

function entryJson(value: Buffer): { v: number; hsm: string; blob: string; createdAt: string } {
  return JSON.parse(value.toString('utf8')) as { v: number; hsm: string; blob: string; createdAt: string };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

// ---------------------------------------------------------------------------------------------
// openRootKey

describe('openRootKey', () => {
  it('creates the cluster on an empty store: one sealed entry per HSM and a cluster record', () =>
    withStore(async (store) => {
      const soft = new SoftHsm(generateSoftHsmKey());
      const kms = new NamedSoftHsm('hsm:minio:minkms:tenant/root-key');
      const root = await openRootKey(store, [soft, kms]);
      assert.equal(root.created, true, `got created=${root.created}, want true`);
      assert.equal(root.rek.length, 32, `got REK of ${root.rek.length} bytes, want 32`);
      assert.equal(root.unsealedBy, SOFT_HSM_NAME, `got unsealedBy ${root.unsealedBy}, want ${SOFT_HSM_NAME}`);
      assert.match(root.clusterId, UUID, `got cluster id ${root.clusterId}, want a random UUID`);

      const keys = (await store.range('')).map((e) => e.key);
      const want = [CLUSTER_KEY, REK_PREFIX + kms.name, REK_PREFIX + SOFT_HSM_NAME].sort();
      assert.deepEqual(keys, want, `got store keys ${JSON.stringify(keys)}, want ${JSON.stringify(want)}`);
      assert.deepEqual((await sealedEntryNames(store)).sort(), [kms.name, SOFT_HSM_NAME].sort(), 'sealedEntryNames: got other names');

      const cluster = JSON.parse((await store.get(CLUSTER_KEY))!.value.toString()) as { v: number; id: string; createdAt: string };
      assert.equal(cluster.v, 1, `cluster record: got v ${cluster.v}, want 1`);
      assert.equal(cluster.id, root.clusterId, `cluster record: got id ${cluster.id}, want ${root.clusterId}`);
      assert.ok(!Number.isNaN(Date.parse(cluster.createdAt)), `cluster record: got createdAt ${cluster.createdAt}, want a timestamp`);

      for (const [i, hsm] of [soft, kms].entries()) {
        const e = entryJson((await store.get(REK_PREFIX + hsm.name))!.value);
        assert.equal(e.v, 1, `case ${i} (${hsm.name}): got v ${e.v}, want 1`);
        assert.equal(e.hsm, hsm.name, `case ${i} (${hsm.name}): got hsm ${e.hsm}, want ${hsm.name}`);
        const blob = Buffer.from(e.blob, 'base64');
        assert.ok(!blob.includes(root.rek), `case ${i} (${hsm.name}): the sealed entry contains the REK in plaintext`);
        const aad = Buffer.from(`minkms rek v1|${root.clusterId}|${hsm.name}`);
        const opened = await hsm.unseal(blob, aad);
        assert.ok(opened.equals(root.rek), `case ${i} (${hsm.name}): the entry does not unseal to the REK with the documented aad`);
      }
    }));

  it('reopens with the same REK, created=false, and writes nothing', () =>
    withStore(async (store) => {
      const keyText = generateSoftHsmKey();
      const other = new NamedSoftHsm('hsm:test:other');
      const first = await openRootKey(store, [new SoftHsm(keyText), other]);
      const before = await snapshot(store);
      const cases: [string, Hsm[], string][] = [
        ['same HSMs', [new SoftHsm(keyText), other], SOFT_HSM_NAME],
        ['reversed order', [other, new SoftHsm(keyText)], other.name],
        ['soft HSM only', [new SoftHsm(keyText)], SOFT_HSM_NAME],
        ['other HSM only', [other], other.name],
      ];
      for (const [i, [name, hsms, by]] of cases.entries()) {
        const warnings: string[] = [];
        const again = await openRootKey(store, hsms, (w) => warnings.push(w));
        assert.equal(again.created, false, `case ${i} (${name}): got created=${again.created}, want false`);
        assert.ok(again.rek.equals(first.rek), `case ${i} (${name}): got another REK`);
        assert.equal(again.clusterId, first.clusterId, `case ${i} (${name}): got cluster id ${again.clusterId}, want ${first.clusterId}`);
        assert.equal(again.unsealedBy, by, `case ${i} (${name}): got unsealedBy ${again.unsealedBy}, want ${by}`);
        assert.deepEqual(warnings, [], `case ${i} (${name}): got warnings ${JSON.stringify(warnings)}`);
        assert.deepEqual(await snapshot(store), before, `case ${i} (${name}): the store changed`);
      }
    }));

  it('refuses a different soft HSM key: permanent SealedError, nothing written', () =>
    withStore(async (store) => {
      await openRootKey(store, [new SoftHsm(generateSoftHsmKey())]);
      const before = await snapshot(store);
      const wrongText = generateSoftHsmKey();
      const cases: [string, Hsm[]][] = [
        ['wrong soft key', [new SoftHsm(wrongText)]],
        // An HSM without an entry must not get one sealed while the REK cannot be opened.
        ['wrong soft key plus a new HSM', [new SoftHsm(wrongText), new NamedSoftHsm('hsm:test:new')]],
      ];
      for (const [i, [name, hsms]] of cases.entries()) {
        const err = await assertSealed(
          openRootKey(store, hsms),
          true,
          /cannot unseal the root encryption key.*MINIO_KMS_HSM_KEY/,
          `case ${i} (${name})`,
        );
        assert.ok(!err.message.includes(wrongText.slice(11)), `case ${i} (${name}): the message contains the HSM key`);
        assert.deepEqual(await snapshot(store), before, `case ${i} (${name}): the store changed`);
      }
    }));

  it('an HSM added later gets its entry from addHsmEntry, then opens the store alone', () =>
    withStore(async (store) => {
      const keyText = generateSoftHsmKey();
      const first = await openRootKey(store, [new SoftHsm(keyText)]);
      const added = new NamedSoftHsm('hsm:minio:minkms:kms-b/root');
      const again = await openRootKey(store, [new SoftHsm(keyText), added]);
      assert.equal(again.unsealedBy, SOFT_HSM_NAME, `got unsealedBy ${again.unsealedBy}, want ${SOFT_HSM_NAME}`);
      // Opening never seals for the added HSM: the node does that and reports failures as pending.
      assert.deepEqual(await sealedEntryNames(store), [SOFT_HSM_NAME]);
      await addHsmEntry(store, added, again, false);
      const names = (await sealedEntryNames(store)).sort();
      assert.deepEqual(names, [added.name, SOFT_HSM_NAME].sort(), `got entries ${JSON.stringify(names)}`);
      const alone = await openRootKey(store, [added]);
      assert.ok(alone.rek.equals(first.rek), 'the added HSM opened another REK');
      assert.equal(alone.unsealedBy, added.name, `got unsealedBy ${alone.unsealedBy}, want ${added.name}`);
    }));

  it('an added HSM that cannot seal does not stop opening, and nothing is written', () =>
    withStore(async (store) => {
      const keyText = generateSoftHsmKey();
      const root0 = await openRootKey(store, [new SoftHsm(keyText)]);
      const before = await snapshot(store);
      const broken = new FakeHsm('hsm:test:broken');
      broken.sealMode = 'transient';
      const root = await openRootKey(store, [new SoftHsm(keyText), broken]);
      assert.equal(root.unsealedBy, SOFT_HSM_NAME, `got unsealedBy ${root.unsealedBy}, want ${SOFT_HSM_NAME}`);
      await assert.rejects(addHsmEntry(store, broken, root0, false), /hsm:test:broken/);
      assert.deepEqual(await snapshot(store), before, 'a failed seal wrote something');
    }));

  it('reports transient HSM failures as a non-permanent SealedError (retry), writing nothing', () =>
    withStore(async (store) => {
      const fake = new FakeHsm('hsm:test:remote');
      const soft = new SoftHsm(generateSoftHsmKey());
      await openRootKey(store, [fake, soft]);
      const before = await snapshot(store);
      const wrongSoft = new SoftHsm(generateSoftHsmKey());
      const cases: { name: string; mode: Mode; hsms: Hsm[]; permanent: boolean; message: RegExp }[] = [
        { name: 'only HSM is unreachable', mode: 'transient', hsms: [fake], permanent: false, message: /connection refused/ },
        {
          name: 'unreachable + wrong soft key',
          mode: 'transient',
          hsms: [fake, wrongSoft],
          permanent: false,
          message: /connection refused.*; .*cannot unseal/,
        },
        {
          name: 'wrong soft key + unreachable',
          mode: 'transient',
          hsms: [wrongSoft, fake],
          permanent: false,
          message: /cannot unseal.*; .*connection refused/,
        },
        { name: 'HSM denies access', mode: 'permanent', hsms: [fake], permanent: true, message: /access denied/ },
        { name: 'denied + wrong soft key', mode: 'permanent', hsms: [fake, wrongSoft], permanent: true, message: /access denied/ },
        { name: 'HSM returns a 16-byte REK', mode: 'garbage', hsms: [fake], permanent: true, message: /wrong length/ },
      ];
      for (const [i, c] of cases.entries()) {
        fake.unsealMode = c.mode;
        await assertSealed(openRootKey(store, c.hsms), c.permanent, c.message, `case ${i} (${c.name})`);
        assert.deepEqual(await snapshot(store), before, `case ${i} (${c.name}): the store changed`);
      }
      // Once it is back, it opens; a failing first HSM falls through to the next.
      fake.unsealMode = 'transient';
      const root = await openRootKey(store, [fake, soft]);
      assert.equal(root.unsealedBy, SOFT_HSM_NAME, `fall-through: got unsealedBy ${root.unsealedBy}, want ${SOFT_HSM_NAME}`);
      fake.unsealMode = 'ok';
      const back = await openRootKey(store, [fake]);
      assert.ok(back.rek.equals(root.rek), 'after recovery: got another REK');
    }));

  it('binds each entry to its HSM name and to the cluster id', () =>
    withStore(async (store, dir) => {
      // A and B hold the same key material: only the aad tells their entries apart.
      const keyText = generateSoftHsmKey();
      const a = new NamedSoftHsm('hsm:test:a', keyText);
      const b = new NamedSoftHsm('hsm:test:b', keyText);
      await openRootKey(store, [a, b]);
      const entryA = (await store.get(REK_PREFIX + a.name))!;
      const entryB = (await store.get(REK_PREFIX + b.name))!;

      // 1. A's entry copied under B's name does not open.
      await store.commit([], [{ key: REK_PREFIX + b.name, value: entryA.value }]);
      await assertSealed(openRootKey(store, [b]), true, /cannot unseal/, "case 0 (A's entry under B's name)");
      await store.commit([], [{ key: REK_PREFIX + b.name, value: entryB.value }]);
      await openRootKey(store, [b]);

      // 2. An entry copied into another cluster (same HSM) does not open there.
      const otherDir = join(dir, '..', 'other');
      const other = new SqliteStore(otherDir);
      try {
        await openRootKey(other, [a]);
        await other.commit([], [{ key: REK_PREFIX + a.name, value: entryA.value }]);
        await assertSealed(openRootKey(other, [a]), true, /cannot unseal/, 'case 1 (entry copied into another cluster)');
      } finally {
        await other.close();
      }

      // 3. Rewriting the cluster id of this store breaks every entry.
      const cluster = JSON.parse((await store.get(CLUSTER_KEY))!.value.toString()) as { id: string };
      const forged = Buffer.from(JSON.stringify({ ...cluster, id: '00000000-0000-4000-8000-000000000000' }));
      await store.commit([], [{ key: CLUSTER_KEY, value: forged }]);
      await assertSealed(openRootKey(store, [a, b]), true, /cannot unseal.*; .*cannot unseal/, 'case 2 (cluster id rewritten)');
    }));

  it("authenticates an entry's term: a first-generation entry relabeled as term 2 does not open", () =>
    withStore(async (store) => {
      const keyText = generateSoftHsmKey();
      await openRootKey(store, [new SoftHsm(keyText)]);
      const e = (await store.get(REK_PREFIX + SOFT_HSM_NAME))!;
      const entry = entryJson(e.value);
      assert.equal((entry as { term?: number }).term, undefined, 'a first-generation entry carries a term field');
      await store.commit([], [{ key: e.key, value: Buffer.from(JSON.stringify({ ...entry, term: 2 })) }]);
      const before = await snapshot(store);
      await assertSealed(openRootKey(store, [new SoftHsm(keyText)]), true, /cannot unseal/, 'entry relabeled as term 2');
      assert.deepEqual(await snapshot(store), before, 'relabeled entry: the store changed');
    }));

  it('reseals an entry that its HSM reports as sealed under an old key version', () =>
    withStore(async (store) => {
      const hsm = new VersionedHsm('hsm:test:versioned');
      const first = await openRootKey(store, [hsm]);
      const cases: { name: string; current: boolean | 'throw'; resealed: boolean; notice: RegExp | undefined }[] = [
        { name: 'current', current: true, resealed: false, notice: undefined },
        { name: 'outdated', current: false, resealed: true, notice: /resealed the root key entry of hsm:test:versioned/ },
        { name: 'status unavailable', current: 'throw', resealed: false, notice: /could not reseal .*status unavailable/ },
      ];
      for (const [i, c] of cases.entries()) {
        hsm.current = c.current;
        const before = (await store.get(REK_PREFIX + hsm.name))!;
        const notices: string[] = [];
        const root = await openRootKey(store, [hsm], (m) => notices.push(m));
        assert.ok(root.rek.equals(first.rek), `case ${i} (${c.name}): got another REK`);
        const after = (await store.get(REK_PREFIX + hsm.name))!;
        assert.equal(
          after.rev !== before.rev,
          c.resealed,
          `case ${i} (${c.name}): got resealed=${after.rev !== before.rev}, want ${c.resealed}`,
        );
        if (c.notice)
          assert.ok(
            notices.some((n) => c.notice!.test(n)),
            `case ${i} (${c.name}): got notices ${JSON.stringify(notices)}, want one matching ${c.notice}`,
          );
        else assert.deepEqual(notices, [], `case ${i} (${c.name}): got notices ${JSON.stringify(notices)}`);
        hsm.current = true;
        const again = await openRootKey(store, [hsm]);
        assert.ok(again.rek.equals(first.rek), `case ${i} (${c.name}): the entry no longer opens the REK`);
      }
    }));

  it('refuses damaged or foreign stores with a permanent SealedError naming the problem', () => {
    const soft = (): SoftHsm => new SoftHsm(generateSoftHsmKey());
    const cases: { name: string; setup: (store: Store) => Promise<void>; hsms: () => Hsm[]; message: RegExp }[] = [
      { name: 'no HSM configured', setup: async () => {}, hsms: () => [], message: /no HSM/ },
      {
        name: 'data but no cluster record',
        setup: async (s) => void (await s.commit([], [{ key: 'enclave/x', value: Buffer.from('x') }])),
        hsms: () => [soft()],
        message: /data but no cluster record/,
      },
      {
        name: 'cluster record but no sealed entry',
        setup: async (s) => {
          await openRootKey(s, [soft()]);
          await s.commit([], [{ key: REK_PREFIX + SOFT_HSM_NAME }]);
        },
        hsms: () => [soft()],
        message: /no sealed root key entry/,
      },
      {
        name: 'no configured HSM has an entry',
        setup: async (s) => void (await openRootKey(s, [new NamedSoftHsm('hsm:test:gone')])),
        hsms: () => [soft(), new NamedSoftHsm('hsm:test:new')],
        message: /no configured HSM has a sealed root key entry \(entries: hsm:test:gone; configured: hsm:minio:soft, hsm:test:new\)/,
      },
      {
        name: 'corrupt sealed entry',
        setup: async (s) => {
          await openRootKey(s, [soft()]);
          await s.commit([], [{ key: REK_PREFIX + SOFT_HSM_NAME, value: Buffer.from('{not json') }]);
        },
        hsms: () => [soft()],
        message: /corrupt sealed root key/,
      },
      {
        name: 'sealed entry of an unknown version',
        setup: async (s) => {
          await openRootKey(s, [soft()]);
          await s.commit([], [{ key: REK_PREFIX + SOFT_HSM_NAME, value: Buffer.from('{"v":2}') }]);
        },
        hsms: () => [soft()],
        message: /unsupported version 2/,
      },
    ];
    return (async () => {
      for (const [i, c] of cases.entries()) {
        await withStore(async (store) => {
          await c.setup(store);
          const before = await snapshot(store);
          await assertSealed(openRootKey(store, c.hsms()), true, c.message, `case ${i} (${c.name})`);
          assert.deepEqual(await snapshot(store), before, `case ${i} (${c.name}): the store changed`);
        });
      }
    })();
  });

  it('does not create a cluster unless every HSM can seal', () =>
    withStore(async (store) => {
      const cases: [string, Mode, boolean][] = [
        ['transient seal failure', 'transient', false],
        ['permanent seal failure', 'permanent', true],
      ];
      for (const [i, [name, mode, permanent]] of cases.entries()) {
        const fake = new FakeHsm('hsm:test:second');
        fake.sealMode = mode;
        await assertSealed(
          openRootKey(store, [new SoftHsm(generateSoftHsmKey()), fake]),
          permanent,
          /cannot initialize/,
          `case ${i} (${name})`,
        );
        assert.deepEqual(await snapshot(store), [], `case ${i} (${name}): got writes on a failed initialization`);
      }
    }));

  it('two concurrent first starts agree on one cluster and one REK', () =>
    withStore(async (store) => {
      const keyText = generateSoftHsmKey();
      const results = await Promise.all(Array.from({ length: 4 }, () => openRootKey(store, [new SoftHsm(keyText)])));
      const created = results.filter((r) => r.created).length;
      assert.equal(created, 1, `got ${created} results with created=true, want 1`);
      for (const [i, r] of results.entries()) {
        assert.ok(r.rek.equals(results[0]!.rek), `case ${i}: got another REK`);
        assert.equal(r.clusterId, results[0]!.clusterId, `case ${i}: got cluster id ${r.clusterId}, want ${results[0]!.clusterId}`);
      }
      assert.equal((await store.range(REK_PREFIX)).length, 1, 'got more than one sealed entry');
    }));
});

// ---------------------------------------------------------------------------------------------
// CLUSTER:ADDHSM / CLUSTER:REMOVEHSM

describe('addHsmEntry', () => {
  async function setup(store: Store): Promise<{ root: RootKey; soft: SoftHsm; keyText: string }> {
    const keyText = generateSoftHsmKey();
    const soft = new SoftHsm(keyText);
    const root = await openRootKey(store, [soft]);
    return { root, soft, keyText };
  }

  it('adds an entry for a new HSM, which can then open the store alone', () =>
    withStore(async (store) => {
      const { root } = await setup(store);
      const added = new NamedSoftHsm('hsm:test:added');
      await addHsmEntry(store, added, root, false);
      const opened = await openRootKey(store, [added]);
      assert.ok(opened.rek.equals(root.rek), 'the added entry opened another REK');
    }));

  it('refuses an existing entry without overwrite (ERR_HSM_EXISTS), writing nothing', () =>
    withStore(async (store) => {
      const { root, soft } = await setup(store);
      const before = await snapshot(store);
      await rejectsWith(addHsmEntry(store, soft, root, false), 'ERR_HSM_EXISTS', 'case 0 (existing entry, overwrite=false)');
      assert.deepEqual(await snapshot(store), before, 'case 0: the store changed');
    }));

  it('replaces an existing entry with overwrite', () =>
    withStore(async (store) => {
      const { root, keyText } = await setup(store);
      const old = (await store.get(REK_PREFIX + SOFT_HSM_NAME))!;
      await addHsmEntry(store, new SoftHsm(keyText), root, true);
      const now = (await store.get(REK_PREFIX + SOFT_HSM_NAME))!;
      assert.ok(!now.value.equals(old.value), 'overwrite: got the old entry, want a new one');
      assert.ok(now.rev > old.rev, `overwrite: got rev ${now.rev}, want > ${old.rev}`);
      const opened = await openRootKey(store, [new SoftHsm(keyText)]);
      assert.ok(opened.rek.equals(root.rek), 'overwritten entry opened another REK');
    }));

  it('writes nothing if the new entry does not round-trip or the HSM fails', () =>
    withStore(async (store) => {
      const { root } = await setup(store);
      const before = await snapshot(store);
      const cases: { name: string; seal: Mode; unseal: Mode; permanent: boolean }[] = [
        { name: 'unseal returns other bytes', seal: 'ok', unseal: 'garbage', permanent: true },
        { name: 'seal fails transiently', seal: 'transient', unseal: 'ok', permanent: false },
        { name: 'unseal check fails', seal: 'ok', unseal: 'permanent', permanent: true },
      ];
      for (const [i, c] of cases.entries()) {
        const fake = new FakeHsm('hsm:test:fake');
        fake.sealMode = c.seal;
        fake.unsealMode = c.unseal;
        // The client sees a catalogued error; the HsmError (and its permanence) is its cause.
        const err = await rejectsWith(addHsmEntry(store, fake, root, false), 'ERR_HSM_FAILED', `case ${i} (${c.name})`);
        const cause = err.cause;
        assert.ok(cause instanceof HsmError, `case ${i} (${c.name}): got cause ${String(cause)}, want HsmError`);
        assert.equal(cause.permanent, c.permanent, `case ${i} (${c.name}): got permanent=${cause.permanent}, want ${c.permanent}`);
        assert.ok(err.message.includes(cause.message), `case ${i} (${c.name}): the message names the HSM's failure`);
        assert.deepEqual(await snapshot(store), before, `case ${i} (${c.name}): the store changed`);
      }
    }));
});

describe('removeHsmEntry', () => {
  it('refuses what would lock the database, removes otherwise', () =>
    withStore(async (store) => {
      const soft = new SoftHsm(generateSoftHsmKey());
      const b = new NamedSoftHsm('hsm:test:b');
      const c = new NamedSoftHsm('hsm:test:c');
      const unconfiguredEntry = new NamedSoftHsm('hsm:test:elsewhere');
      const root = await openRootKey(store, [soft, b]);
      await addHsmEntry(store, unconfiguredEntry, root, false);
      // Entries now: soft, b, elsewhere. Configured on this node: whatever the case says.
      const refused: { name: string; target: string; configured: Hsm[]; code: ErrorCode; message: RegExp }[] = [
        { name: 'no such entry', target: c.name, configured: [soft, b, c], code: 'ERR_HSM_NOT_FOUND', message: /^hsm does not exist$/ },
        { name: 'no other configured HSM', target: b.name, configured: [b], code: 'ERR_HSM_LAST', message: /no other configured hsm/ },
        {
          name: 'other configured HSM has no entry',
          target: b.name,
          configured: [b, c],
          code: 'ERR_HSM_LAST',
          message: /no other configured hsm/,
        },
        { name: 'nothing configured', target: b.name, configured: [], code: 'ERR_HSM_LAST', message: /no other configured hsm/ },
      ];
      for (const [i, r] of refused.entries()) {
        const before = await snapshot(store);
        const err = await rejectsWith(removeHsmEntry(store, r.target, r.configured), r.code, `case ${i} (${r.name})`);
        assert.match(err.message, r.message, `case ${i} (${r.name}): got message ${JSON.stringify(err.message)}`);
        assert.deepEqual(await snapshot(store), before, `case ${i} (${r.name}): the store changed`);
      }

      await removeHsmEntry(store, b.name, [soft, b]);
      let names = (await sealedEntryNames(store)).sort();
      assert.deepEqual(names, [SOFT_HSM_NAME, unconfiguredEntry.name].sort(), `after removing b: got ${JSON.stringify(names)}`);
      await assertSealed(openRootKey(store, [b]), true, /no configured HSM has a sealed root key entry/, 'b after removal');

      await removeHsmEntry(store, unconfiguredEntry.name, [soft]);
      names = await sealedEntryNames(store);
      assert.deepEqual(names, [SOFT_HSM_NAME], `after removing elsewhere: got ${JSON.stringify(names)}`);

      const before = await snapshot(store);
      const err = await rejectsWith(removeHsmEntry(store, SOFT_HSM_NAME, [soft, b]), 'ERR_HSM_LAST', 'last entry');
      assert.equal(err.message, ERRORS.ERR_HSM_LAST[1], `last entry: got message ${JSON.stringify(err.message)}`);
      assert.deepEqual(await snapshot(store), before, 'last entry: the store changed');
      const opened = await openRootKey(store, [soft]);
      assert.ok(opened.rek.equals(root.rek), 'after removals: the remaining HSM opened another REK');
    }));
});
