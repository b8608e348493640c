/**
 * Unit tests of the domain (src/kms) without HTTP: Kms.load over a SqliteStore + Barrier in a
 * temp dir. Key rings and versions, decrypt/MAC/generate/import, pagination
 * (kms-wire.md §2.5), policies, identity rules, enclave deletion, concurrent writes, and state
 * reloaded after a "restart" (a new Kms.load on a reopened store).
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kms, MAX_DEK_LENGTH, type Principal } from '../../src/kms/kms.js';
import { SortedMap, DEFAULT_PAGE } from '../../src/kms/pagination.js';
import { grantsAny, isAllowed, matchPattern, normalizePatterns, type PolicyRules } from '../../src/kms/policy.js';
import { PRIVILEGE } from '../../src/kms/records.js';
import { Barrier } from '../../src/store/barrier.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { isSdkCommandName } from '../../src/protocol/commands.js';
import { KmsError, type ErrorCode } from '../../src/errors.js';
import { rejectsWith } from '../helpers/clients.js';
import { CIPHERTEXT_OVERHEAD, decryptWithKey, encryptWithKey, hkdfSha256, hmacSha256 } from '../../src/crypto/index.js';

// ---------------------------------------------------------------------------------------------
// helpers

const ROOT = generateApiKey('k1').identity;
const newIdentity = (): string => generateApiKey('k1').identity;
const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
/** Names hidden from the caller in the pagination tests. */
const HIDDEN = ['a-1', 'a0'];

interface Ctx {
  kms: Kms;
  store: SqliteStore;
  /** Simulates a restart: closes the store, reopens the directory, loads a new Kms from it. */
  restart(): Promise<Kms>;
}

async function withKms(fn: (ctx: Ctx) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'minkms-kms-'));
  const dir = join(root, 'data');
  const rek = randomBytes(32);
  const clusterId = randomUUID();
  const ctx = {
    store: new SqliteStore(dir),
  } as Ctx;
  ctx.kms = await Kms.load(ctx.store, new Barrier(rek, clusterId), { rootIdentity: ROOT });
  ctx.restart = async () => {
    await ctx.store.close();
    ctx.store = new SqliteStore(dir);
    ctx.kms = await Kms.load(ctx.store, new Barrier(Buffer.from(rek), clusterId), { rootIdentity: ROOT });
    return ctx.kms;
  };
  try {
    await fn(ctx);
  } finally {
    await ctx.store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

const versionsOf = (kms: Kms, e: string, k: string): number[] => kms.listKeyVersions(e, k, 0, 0).items.map((v) => v.version);

async function storeKeys(store: SqliteStore, prefix: string): Promise<string[]> {
  return (await store.range(prefix)).map((e) => e.key);
}

/** Everything a client could observe, plus key bytes and revisions, as plain data. */
function dump(kms: Kms): unknown {
  return kms.listEnclaves('', '', 0).items.map((e) => ({
    name: e.name,
    createdAt: e.createdAt.toISOString(),
    createdBy: e.createdBy,
    rev: e.rev,
    keys: e.keys.names().map((n) => {
      const ring = e.keys.get(n)!;
      return {
        name: ring.name,
        rev: ring.rev,
        maxVersion: ring.maxVersion,
        versions: ring.versions.map((v) => ({
          version: v.version,
          type: v.type,
          key: v.key.toString('hex'),
          createdAt: v.createdAt.toISOString(),
          createdBy: v.createdBy,
          imported: v.imported,
        })),
      };
    }),
    policies: e.policies.names().map((n) => ({ ...e.policies.get(n)! })),
    identities: kms.listIdentities(e.name, '', '', 0).items.map((i) => ({ ...i, createdAt: i.createdAt.toISOString() })),
  }));
}

function createId(
  kms: Kms,
  caller: Principal,
  enclave: string,
  identity: string,
  privilege: string,
  serviceAccount = false,
  tags: Record<string, string> = {},
): Promise<void> {
  return kms.createIdentity(caller, enclave, { identity, privilege, serviceAccount, tags });
}

// ---------------------------------------------------------------------------------------------
// enclaves

describe('Kms enclaves', () => {
  it('creates enclaves, refuses duplicates and invalid names', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'tenant-1');
      assert.equal(kms.hasEnclave('tenant-1'), true, 'got hasEnclave=false after create');
      assert.equal(kms.enclave('tenant-1').createdBy, ROOT, 'got another createdBy');
      await rejectsWith(() => kms.createEnclave(ROOT, 'tenant-1'), 'ERR_ENCLAVE_EXISTS', 'duplicate');
      await rejectsWith(() => kms.enclave('nope'), 'ERR_ENCLAVE_NOT_FOUND', 'missing enclave');
      for (const [i, name] of INVALID_NAMES.entries()) {
        await rejectsWith(() => kms.createEnclave(ROOT, name), 'ERR_INVALID_NAME', `case ${i} (${JSON.stringify(name)})`);
      }
      for (const [i, name] of VALID_NAMES.entries()) {
        await kms.createEnclave(ROOT, name);
        assert.equal(kms.hasEnclave(name), true, `case ${i} (${JSON.stringify(name)}): not created`);
      }
    }));
});

// ---------------------------------------------------------------------------------------------
// keys

describe('Kms key rings', () => {
  it('creates keys with versions 1, 2, 3 … of the requested or inherited type', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createKey('creator', 'e', 'k', '', false);
      await rejectsWith(() => kms.createKey(ROOT, 'e', 'k', '', false), 'ERR_KEY_EXISTS', 'create existing');
      await rejectsWith(() => kms.createKey(ROOT, 'e', 'missing', '', true), 'ERR_KEY_NOT_FOUND', 'add version to missing key');
      await rejectsWith(() => kms.createKey(ROOT, 'nope', 'k', '', false), 'ERR_ENCLAVE_NOT_FOUND', 'missing enclave');
      await rejectsWith(() => kms.createKey(ROOT, 'e', 'x', 'AES128', false), 'ERR_INVALID_KEY_TYPE', 'bad type');
      await rejectsWith(() => kms.createKey(ROOT, 'e', 'a/b', '', false), 'ERR_INVALID_NAME', 'bad name');

      const steps: [string, string, number, string][] = [
        // [step, type argument, want version, want type]
        ['add version, inherit', '', 2, 'AES256'],
        ['add version, chacha20 (case-insensitive)', 'chacha20', 3, 'ChaCha20'],
        ['add version, inherit ChaCha20', '', 4, 'ChaCha20'],
        ['add version, AES256', 'aes256', 5, 'AES256'],
      ];
      for (const [i, [name, type, version, wantType]] of steps.entries()) {
        await kms.createKey('creator', 'e', 'k', type, true);
        const latest = kms.keyStatus('e', 'k', 0);
        assert.equal(latest.version, version, `case ${i} (${name}): got latest version ${latest.version}, want ${version}`);
        assert.equal(latest.type, wantType, `case ${i} (${name}): got type ${latest.type}, want ${wantType}`);
        assert.equal(latest.createdBy, 'creator', `case ${i} (${name}): got createdBy ${latest.createdBy}`);
      }
      assert.deepEqual(versionsOf(kms, 'e', 'k'), [1, 2, 3, 4, 5], 'got other versions');
      assert.equal(kms.keyStatus('e', 'k', 1).type, 'AES256', 'version 1: got another default type');
      const distinct = new Set([1, 2, 3, 4, 5].map((v) => kms.keyVersion('e', 'k', v).key.toString('hex')));
      assert.equal(distinct.size, 5, `got ${distinct.size} distinct key materials for 5 versions`);
    }));

  it('deletes the latest, one, or all versions; deleted versions are never reused', () =>
    withKms(async ({ kms, store }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createKey(ROOT, 'e', 'k', '', false);
      for (let i = 0; i < 4; i++) await kms.createKey(ROOT, 'e', 'k', '', true); // 1..5

      const steps: { name: string; run: () => Promise<void>; want: number[] }[] = [
        { name: 'delete latest (version 0)', run: () => kms.deleteKey('e', 'k', 0, false), want: [1, 2, 3, 4] },
        { name: 'delete version 2 (the highest number ever is still 5)', run: () => kms.deleteKey('e', 'k', 2, false), want: [1, 3, 4] },
        { name: 'add version after deleting the latest', run: () => kms.createKey(ROOT, 'e', 'k', '', true), want: [1, 3, 4, 6] },
        { name: 'delete version 6 (the latest, by number)', run: () => kms.deleteKey('e', 'k', 6, false), want: [1, 3, 4] },
        { name: 'delete version 1', run: () => kms.deleteKey('e', 'k', 1, false), want: [3, 4] },
        { name: 'add version again', run: () => kms.createKey(ROOT, 'e', 'k', '', true), want: [3, 4, 7] },
      ];
      for (const [i, s] of steps.entries()) {
        await s.run();
        const got = versionsOf(kms, 'e', 'k');
        assert.deepEqual(got, s.want, `case ${i} (${s.name}): got versions ${JSON.stringify(got)}, want ${JSON.stringify(s.want)}`);
      }
      await rejectsWith(() => kms.deleteKey('e', 'k', 2, false), 'ERR_KEY_NOT_FOUND', 'delete a deleted version');
      await rejectsWith(() => kms.deleteKey('e', 'k', 99, false), 'ERR_KEY_NOT_FOUND', 'delete a version never created');
      await rejectsWith(() => kms.keyVersion('e', 'k', 2), 'ERR_KEY_NOT_FOUND', 'status of a deleted version');
      await rejectsWith(() => kms.deleteKey('e', 'k', 3, true), 'ERR_BAD_REQUEST', 'all_versions with a version');
      assert.equal(kms.keyStatus('e', 'k', 0).version, 7, 'latest after deletes: got another version');

      await kms.deleteKey('e', 'k', 0, true);
      await rejectsWith(() => kms.keyStatus('e', 'k', 0), 'ERR_KEY_NOT_FOUND', 'status after delete all');
      assert.deepEqual(await storeKeys(store, 'key/e/'), [], 'delete all: the record is still stored');
      await rejectsWith(() => kms.deleteKey('e', 'k', 0, true), 'ERR_KEY_NOT_FOUND', 'delete all twice');
    }));

  it('deleting the last remaining version deletes the key', () =>
    withKms(async ({ kms, store }) => {
      await kms.createEnclave(ROOT, 'e');
      const cases: { name: string; extra: number; deletes: [number, boolean][] }[] = [
        { name: 'only version, by number', extra: 0, deletes: [[1, false]] },
        { name: 'only version, as latest', extra: 0, deletes: [[0, false]] },
        {
          name: 'two versions, one by one',
          extra: 1,
          deletes: [
            [1, false],
            [2, false],
          ],
        },
        {
          name: 'three versions, latest each time',
          extra: 2,
          deletes: [
            [0, false],
            [0, false],
            [0, false],
          ],
        },
      ];
      for (const [i, c] of cases.entries()) {
        const name = `k${i}`;
        await kms.createKey(ROOT, 'e', name, '', false);
        for (let n = 0; n < c.extra; n++) await kms.createKey(ROOT, 'e', name, '', true);
        for (const [v, all] of c.deletes) await kms.deleteKey('e', name, v, all);
        await rejectsWith(() => kms.keyStatus('e', name, 0), 'ERR_KEY_NOT_FOUND', `case ${i} (${c.name})`);
        assert.equal(await store.get(`key/e/${name}`), undefined, `case ${i} (${c.name}): the record is still stored`);
        // The name is free again.
        await kms.createKey(ROOT, 'e', name, '', false);
      }
    }));

  it('decrypt with version 0 finds the version that encrypted; with a version uses only that one', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createKey(ROOT, 'e', 'k', '', false);
      await kms.createKey(ROOT, 'e', 'k', 'ChaCha20', true);
      await kms.createKey(ROOT, 'e', 'k', 'AES256', true);
      const ad = utf8('context');
      const cts = [1, 2, 3].map((v) => kms.encrypt('e', 'k', v, utf8(`pt of v${v}`), ad));
      const latest = kms.encrypt('e', 'k', 0, utf8('pt of latest'), ad);
      assert.equal(latest.version, 3, `encrypt with version 0: got version ${latest.version}, want 3`);
      for (const [i, ct] of cts.entries()) {
        assert.equal(ct.version, i + 1, `case ${i}: encrypt got version ${ct.version}, want ${i + 1}`);
        const got0 = kms.decrypt('e', 'k', 0, ct.ciphertext, ad).toString();
        assert.equal(got0, `pt of v${i + 1}`, `case ${i} (version 0): got ${JSON.stringify(got0)}`);
        const gotV = kms.decrypt('e', 'k', i + 1, ct.ciphertext, ad).toString();
        assert.equal(gotV, `pt of v${i + 1}`, `case ${i} (version ${i + 1}): got ${JSON.stringify(gotV)}`);
        for (const other of [1, 2, 3].filter((v) => v !== i + 1)) {
          await rejectsWith(
            () => kms.decrypt('e', 'k', other, ct.ciphertext, ad),
            'ERR_DECRYPT',
            `case ${i} (v${i + 1} ciphertext with version ${other})`,
          );
        }
        await rejectsWith(() => kms.decrypt('e', 'k', 0, ct.ciphertext, utf8('other')), 'ERR_DECRYPT', `case ${i} (wrong associated data)`);
      }
      assert.equal(kms.decrypt('e', 'k', 0, latest.ciphertext, ad).toString(), 'pt of latest');
      await rejectsWith(() => kms.decrypt('e', 'k', 0, Buffer.alloc(64), ad), 'ERR_DECRYPT', 'garbage, version 0');
      await rejectsWith(() => kms.decrypt('e', 'k', 9, cts[0]!.ciphertext, ad), 'ERR_KEY_NOT_FOUND', 'unknown version');
      await rejectsWith(() => kms.decrypt('e', 'nope', 0, cts[0]!.ciphertext, ad), 'ERR_KEY_NOT_FOUND', 'unknown key');

      await kms.deleteKey('e', 'k', 1, false);
      await rejectsWith(
        () => kms.decrypt('e', 'k', 0, cts[0]!.ciphertext, ad),
        'ERR_DECRYPT',
        'ciphertext of a deleted version, version 0',
      );
      await rejectsWith(
        () => kms.decrypt('e', 'k', 1, cts[0]!.ciphertext, ad),
        'ERR_KEY_NOT_FOUND',
        'ciphertext of a deleted version, version 1',
      );
      assert.equal(kms.decrypt('e', 'k', 0, cts[1]!.ciphertext, ad).toString(), 'pt of v2', 'v2 after deleting v1');
    }));

  it('MAC is HMAC-SHA256 under a per-version derived key: deterministic, version-separated', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createKey(ROOT, 'e', 'k', '', false);
      await kms.createKey(ROOT, 'e', 'k', '', true);
      await kms.createKey(ROOT, 'e', 'other', '', false);
      const msgs = [Buffer.alloc(0), utf8('message'), randomBytes(1000)];
      for (const [i, msg] of msgs.entries()) {
        const v1 = kms.mac('e', 'k', 1, msg);
        const v1again = kms.mac('e', 'k', 1, msg);
        const v2 = kms.mac('e', 'k', 2, msg);
        const latest = kms.mac('e', 'k', 0, msg);
        const other = kms.mac('e', 'other', 0, msg);
        assert.equal(v1.mac.length, 32, `case ${i}: got ${v1.mac.length}-byte MAC, want 32`);
        assert.ok(v1.mac.equals(v1again.mac), `case ${i}: same version and message gave different MACs`);
        assert.ok(!v1.mac.equals(v2.mac), `case ${i}: versions 1 and 2 gave the same MAC`);
        assert.equal(latest.version, 2, `case ${i}: version 0 got version ${latest.version}, want 2`);
        assert.ok(latest.mac.equals(v2.mac), `case ${i}: version 0 gave another MAC than version 2`);
        assert.ok(!other.mac.equals(v2.mac), `case ${i}: another key gave the same MAC`);
        const key = kms.keyVersion('e', 'k', 1).key;
        const want = hmacSha256(hkdfSha256(key, '', 'minkms key mac v1', 32), msg);
        assert.ok(
          v1.mac.equals(want),
          `case ${i}: got ${v1.mac.toString('hex')}, want HMAC-SHA256(HKDF(key, info "minkms key mac v1"), msg) = ${want.toString('hex')}`,
        );
        assert.ok(!v1.mac.equals(hmacSha256(key, msg)), `case ${i}: the MAC uses the encryption key directly`);
      }
      assert.ok(!kms.mac('e', 'k', 1, utf8('a')).mac.equals(kms.mac('e', 'k', 1, utf8('b')).mac), 'different messages gave the same MAC');
    }));

  it('generates data keys of the requested length (0 = 32, at most 1024)', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createKey(ROOT, 'e', 'k', '', false);
      await kms.createKey(ROOT, 'e', 'c', 'ChaCha20', false);
      const ad = utf8('bucket/object');
      const ok: [number, number][] = [
        [0, 32],
        [1, 1],
        [16, 16],
        [32, 32],
        [64, 64],
        [MAX_DEK_LENGTH, 1024],
      ];
      for (const key of ['k', 'c']) {
        for (const [i, [length, want]] of ok.entries()) {
          const dek = kms.generate('e', key, 0, ad, length);
          assert.equal(dek.plaintext.length, want, `case ${i} (${key}, length ${length}): got ${dek.plaintext.length} bytes, want ${want}`);
          assert.equal(
            dek.ciphertext.length,
            want + CIPHERTEXT_OVERHEAD,
            `case ${i} (${key}, length ${length}): got ciphertext of ${dek.ciphertext.length} bytes, want ${want + CIPHERTEXT_OVERHEAD}`,
          );
          assert.equal(dek.version, 1, `case ${i} (${key}): got version ${dek.version}, want 1`);
          const back = kms.decrypt('e', key, 0, dek.ciphertext, ad);
          assert.ok(back.equals(dek.plaintext), `case ${i} (${key}, length ${length}): decrypt gave other bytes`);
        }
        for (const [i, length] of [MAX_DEK_LENGTH + 1, 4096, -1].entries()) {
          await rejectsWith(() => kms.generate('e', key, 0, ad, length), 'ERR_INVALID_DEK_LENGTH', `case ${i} (${key}, length ${length})`);
        }
      }
      const a = kms.generate('e', 'k', 0, ad, 32);
      const b = kms.generate('e', 'k', 0, ad, 32);
      assert.ok(!a.plaintext.equals(b.plaintext), 'two data keys are equal');
    }));

  it('imports key material as version 1, marked imported', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const material = randomBytes(32);
      await kms.importKey('importer', 'e', 'imp', '', material);
      const v = kms.keyVersion('e', 'imp', 0);
      assert.equal(v.version, 1, `got version ${v.version}, want 1`);
      assert.equal(v.imported, true, 'got imported=false');
      assert.equal(v.type, 'AES256', `got type ${v.type}, want AES256`);
      assert.ok(v.key.equals(material), 'the stored key is not the imported material');
      // A ciphertext made elsewhere with the same material decrypts, and vice versa.
      const ad = utf8('ad');
      const foreign = encryptWithKey('AES256', material, utf8('made elsewhere'), ad);
      assert.equal(kms.decrypt('e', 'imp', 0, foreign, ad).toString(), 'made elsewhere');
      const ours = kms.encrypt('e', 'imp', 0, utf8('made here'), ad);
      assert.equal(decryptWithKey('AES256', material, ours.ciphertext, ad).toString(), 'made here');
      // The caller's buffer is copied.
      material.fill(0);
      assert.ok(!kms.keyVersion('e', 'imp', 1).key.equals(material), "the key shares the caller's buffer");

      await kms.importKey('importer', 'e', 'imp-chacha', 'ChaCha20', randomBytes(32));
      assert.equal(kms.keyVersion('e', 'imp-chacha', 0).type, 'ChaCha20', 'ChaCha20 import got another type');
      await kms.createKey(ROOT, 'e', 'imp', '', true);
      assert.equal(kms.keyVersion('e', 'imp', 2).imported, false, 'a generated version after an import is marked imported');
      await kms.createKey(ROOT, 'e', 'gen', '', false);
      assert.equal(kms.keyVersion('e', 'gen', 0).imported, false, 'a generated key is marked imported');

      const bad: [string, () => Promise<void>, ErrorCode][] = [
        ['existing key', () => kms.importKey(ROOT, 'e', 'imp', '', randomBytes(32)), 'ERR_KEY_EXISTS'],
        ['31 bytes', () => kms.importKey(ROOT, 'e', 'x', '', randomBytes(31)), 'ERR_INVALID_KEY_LENGTH'],
        ['33 bytes', () => kms.importKey(ROOT, 'e', 'x', '', randomBytes(33)), 'ERR_INVALID_KEY_LENGTH'],
        ['empty', () => kms.importKey(ROOT, 'e', 'x', '', Buffer.alloc(0)), 'ERR_INVALID_KEY_LENGTH'],
        ['bad type', () => kms.importKey(ROOT, 'e', 'x', 'RSA', randomBytes(32)), 'ERR_INVALID_KEY_TYPE'],
        ['bad name', () => kms.importKey(ROOT, 'e', '-x', '', randomBytes(32)), 'ERR_INVALID_NAME'],
        ['missing enclave', () => kms.importKey(ROOT, 'nope', 'x', '', randomBytes(32)), 'ERR_ENCLAVE_NOT_FOUND'],
      ];
      for (const [i, [name, run, code]] of bad.entries()) await rejectsWith(run, code, `case ${i} (${name})`);
      await rejectsWith(() => kms.keyStatus('e', 'x', 0), 'ERR_KEY_NOT_FOUND', 'a refused import created the key');
    }));

  it('serializes concurrent writes: one creator wins, added versions are distinct', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const creates = await Promise.allSettled(Array.from({ length: 30 }, () => kms.createKey(ROOT, 'e', 'race', '', false)));
      const won = creates.filter((r) => r.status === 'fulfilled').length;
      assert.equal(won, 1, `got ${won} successful creates, want 1`);
      for (const [i, r] of creates.entries()) {
        if (r.status === 'rejected') {
          assert.ok(
            r.reason instanceof KmsError && r.reason.code === 'ERR_KEY_EXISTS',
            `case ${i}: got ${String(r.reason)}, want ERR_KEY_EXISTS`,
          );
        }
      }
      await Promise.all(Array.from({ length: 20 }, () => kms.createKey(ROOT, 'e', 'race', '', true)));
      const got = versionsOf(kms, 'e', 'race');
      const want = Array.from({ length: 21 }, (_, i) => i + 1);
      assert.deepEqual(got, want, `got versions ${JSON.stringify(got)}, want 1..21`);
    }));
});

// ---------------------------------------------------------------------------------------------
// pagination

describe('SortedMap.page (kms-wire.md §2.5)', () => {
  const NAMES = ['b1', 'a', 'c', 'a.b', 'ab', 'a-1', 'b', 'a0'];
  const map = new SortedMap<string>();
  for (const n of NAMES) map.set(n, `value of ${n}`);
  const hidden = new Set(HIDDEN);

  it('pages by prefix, inclusive continueAt and limit', () => {
    PAGE_CASES.forEach((c, i) => {
      const page = map.page(c.prefix, c.continueAt, c.limit, c.hide ? (n) => !c.hide!.includes(n) : undefined);
      const got = page.items.map((v) => v.replace('value of ', ''));
      assert.deepEqual(got, c.want, `case ${i} (${c.name}): got items ${JSON.stringify(got)}, want ${JSON.stringify(c.want)}`);
      assert.equal(
        page.continueAt,
        c.next,
        `case ${i} (${c.name}): got continueAt ${JSON.stringify(page.continueAt)}, want ${JSON.stringify(c.next)}`,
      );
    });
  });

  it('walking the pages like the SDK gives every matching name once, in order', () => {
    for (const [i, [prefix, limit, hide]] of (
      [
        ['', 1, false],
        ['', 2, false],
        ['', 3, true],
        ['a', 2, false],
        ['a', 1, true],
        ['b', 1, false],
      ] as const
    ).entries()) {
      const visible = hide ? (n: string) => !hidden.has(n) : undefined;
      const seen: string[] = [];
      let continueAt = '';
      for (let pages = 0; pages < 100; pages++) {
        const page = map.page(prefix, continueAt, limit, visible);
        seen.push(...page.items.map((v) => v.replace('value of ', '')));
        if (page.items.length === 0 || page.continueAt === '') break;
        continueAt = page.continueAt;
      }
      const want = [...NAMES].filter((n) => n.startsWith(prefix) && !(hide && hidden.has(n))).sort();
      assert.deepEqual(
        seen,
        want,
        `case ${i} (prefix ${JSON.stringify(prefix)}, limit ${limit}, hidden ${hide}): got ${JSON.stringify(seen)}, want ${JSON.stringify(want)}`,
      );
    }
  });

  it('caps pages at the default size', () => {
    const big = new SortedMap<number>();
    for (let i = 0; i < DEFAULT_PAGE + 500; i++) big.set(`k${String(i).padStart(5, '0')}`, i);
    const cases: [string, number, number, string][] = [
      ['limit 0 = default', 0, DEFAULT_PAGE, `k${String(DEFAULT_PAGE).padStart(5, '0')}`],
      ['negative limit = default', -5, DEFAULT_PAGE, `k${String(DEFAULT_PAGE).padStart(5, '0')}`],
      ['limit above the maximum', 100_000, DEFAULT_PAGE, `k${String(DEFAULT_PAGE).padStart(5, '0')}`],
      ['small limit', 10, 10, 'k00010'],
    ];
    cases.forEach(([name, limit, want, next], i) => {
      const page = big.page('', '', limit);
      assert.equal(page.items.length, want, `case ${i} (${name}): got ${page.items.length} items, want ${want}`);
      assert.equal(page.continueAt, next, `case ${i} (${name}): got continueAt ${page.continueAt}, want ${next}`);
    });
    const last = big.page('', `k${String(DEFAULT_PAGE).padStart(5, '0')}`, 0);
    assert.equal(last.items.length, 500, `second page: got ${last.items.length} items, want 500`);
    assert.equal(last.continueAt, '', `second page: got continueAt ${last.continueAt}, want ""`);
  });

  it('keeps sorted order through inserts and deletes', () => {
    const m = new SortedMap<number>();
    const ops: [string, 'set' | 'delete', string, string[]][] = [
      ['insert c', 'set', 'c', ['c']],
      ['insert a', 'set', 'a', ['a', 'c']],
      ['insert b', 'set', 'b', ['a', 'b', 'c']],
      ['overwrite b', 'set', 'b', ['a', 'b', 'c']],
      ['delete a', 'delete', 'a', ['b', 'c']],
      ['delete missing', 'delete', 'zz', ['b', 'c']],
      ['insert A (uppercase sorts first)', 'set', 'A', ['A', 'b', 'c']],
    ];
    ops.forEach(([name, op, key, want], i) => {
      if (op === 'set') m.set(key, i);
      else m.delete(key);
      const got = [...m.names()];
      assert.deepEqual(got, want, `case ${i} (${name}): got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      const paged = m.page('', '', 0).items.length;
      assert.equal(paged, want.length, `case ${i} (${name}): page got ${paged} items, want ${want.length}`);
    });
  });

  it('Kms list commands page the same way and report the latest version', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      for (const n of NAMES) await kms.createKey(ROOT, 'e', n, '', false);
      await kms.createKey(ROOT, 'e', 'ab', '', true);
      const page = kms.listKeys('e', 'a', '', 2, (n) => !hidden.has(n));
      const got = page.items.map((k) => `${k.name}@${k.version}`);
      assert.deepEqual(got, ['a@1', 'a.b@1'], `listKeys: got ${JSON.stringify(got)}`);
      assert.equal(page.continueAt, 'ab', `listKeys: got continueAt ${page.continueAt}, want ab`);
      const next = kms.listKeys('e', 'a', 'ab', 2, (n) => !hidden.has(n));
      assert.deepEqual(
        next.items.map((k) => `${k.name}@${k.version}`),
        ['ab@2'],
        'listKeys page 2: got other items',
      );
      assert.equal(next.continueAt, '', 'listKeys page 2: got a continueAt');
      assert.equal(kms.listKeys('e', 'a', 'b', 0).items.length, 0, 'listKeys: continueAt outside the prefix gave items');
      await rejectsWith(() => kms.listKeys('nope', '', '', 0), 'ERR_ENCLAVE_NOT_FOUND', 'listKeys of a missing enclave');

      for (let i = 0; i < 3; i++) await kms.createKey(ROOT, 'e', 'b', '', true); // b: 1..4
      await kms.deleteKey('e', 'b', 2, false);
      const versions: [number, number, number[], number][] = [
        [0, 0, [1, 3, 4], 0],
        [0, 2, [1, 3], 4],
        [3, 2, [3, 4], 0],
        [2, 1, [3], 4],
        [5, 0, [], 0],
      ];
      versions.forEach(([continueAt, limit, want, next], i) => {
        const res = kms.listKeyVersions('e', 'b', continueAt, limit);
        const gotV = res.items.map((v) => v.version);
        assert.deepEqual(
          gotV,
          want,
          `case ${i} (versions from ${continueAt}, limit ${limit}): got ${JSON.stringify(gotV)}, want ${JSON.stringify(want)}`,
        );
        assert.equal(
          res.continueAt,
          next,
          `case ${i} (versions from ${continueAt}, limit ${limit}): got continueAt ${res.continueAt}, want ${next}`,
        );
      });
    }));
});

// ---------------------------------------------------------------------------------------------
// policies

describe('policies', () => {
  it('matchPattern: exact names, prefix*, * alone and interior *', () => {
    MATCH_CASES.forEach(([pattern, name, want], i) => {
      const got = matchPattern(pattern, name);
      assert.equal(got, want, `case ${i} (${JSON.stringify(pattern)} vs ${JSON.stringify(name)}): got ${got}, want ${want}`);
    });
  });

  it('isAllowed: deny by default, deny wins over allow', () => {
    const policy: PolicyRules = {
      allow: { 'KEY:ENCRYPT': ['app-*', 'shared'], 'KEY:DECRYPT': ['*'], 'KEY:MAC': [] },
      deny: { 'KEY:ENCRYPT': ['app-secret*'], 'KEY:DECRYPT': ['app-secret'], 'KEY:GENERATE': ['*'] },
    };
    ALLOW_CASES.forEach(([command, name, want], i) => {
      const got = isAllowed(policy, command, name);
      assert.equal(got, want, `case ${i} (${command} ${JSON.stringify(name)}): got ${got}, want ${want}`);
    });
    const empty: PolicyRules = { allow: {}, deny: {} };
    assert.equal(isAllowed(empty, 'KEY:ENCRYPT', 'x'), false, 'empty policy: got allowed');
    const grants: [string, boolean][] = [
      ['KEY:ENCRYPT', true],
      ['KEY:DECRYPT', true],
      ['KEY:MAC', false],
      ['KEY:GENERATE', false],
      ['KEY:LIST', false],
    ];
    grants.forEach(([command, want], i) => {
      assert.equal(grantsAny(policy, command), want, `case ${i} (grantsAny ${command}): got ${!want}, want ${want}`);
    });
  });

  it('normalizePatterns: drops empties and duplicates, sorts by length then bytes', () => {
    NORMALIZE_CASES.forEach(([input, want], i) => {
      const got = normalizePatterns(input);
      assert.deepEqual(got, want, `case ${i} (${JSON.stringify(input)}): got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    });
  });

  it('createPolicy normalizes commands and patterns, refuses unknown commands, overwrites', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      await kms.createPolicy(
        'author',
        'e',
        'p',
        { 'key:encrypt': ['b', 'a', ''], 'KEY:ENCRYPT': ['a', 'c*'], 'KEY:DECRYPT': [''], 'Key:Mac': [] },
        { 'key:generate': ['x', 'x'] },
        isSdkCommandName,
      );
      const p = kms.policy('e', 'p');
      assert.deepEqual(p.allow, { 'KEY:ENCRYPT': ['a', 'b', 'c*'] }, `allow: got ${JSON.stringify(p.allow)}`);
      assert.deepEqual(p.deny, { 'KEY:GENERATE': ['x'] }, `deny: got ${JSON.stringify(p.deny)}`);
      assert.equal(p.createdBy, 'author', `got createdBy ${p.createdBy}`);

      await kms.createPolicy(ROOT, 'e', 'p', { 'KEY:DECRYPT': ['*'] }, {}, isSdkCommandName);
      assert.deepEqual(kms.policy('e', 'p').allow, { 'KEY:DECRYPT': ['*'] }, 'overwrite: got the old rules');

      const bad: [string, () => Promise<void>, ErrorCode, RegExp][] = [
        [
          'unknown command in allow',
          () => kms.createPolicy(ROOT, 'e', 'q', { 'KEY:FROB': ['*'] }, {}, isSdkCommandName),
          'ERR_INVALID_POLICY',
          /unknown command 'KEY:FROB'/,
        ],
        [
          'unknown command in deny',
          () => kms.createPolicy(ROOT, 'e', 'q', {}, { nope: ['*'] }, isSdkCommandName),
          'ERR_INVALID_POLICY',
          /unknown command 'nope'/,
        ],
        [
          'non-SDK command KEY:IMPORT',
          () => kms.createPolicy(ROOT, 'e', 'q', { 'KEY:IMPORT': ['*'] }, {}, isSdkCommandName),
          'ERR_INVALID_POLICY',
          /KEY:IMPORT/,
        ],
        ['bad name', () => kms.createPolicy(ROOT, 'e', 'a b', {}, {}, isSdkCommandName), 'ERR_INVALID_NAME', /./],
        ['missing enclave', () => kms.createPolicy(ROOT, 'nope', 'q', {}, {}, isSdkCommandName), 'ERR_ENCLAVE_NOT_FOUND', /./],
      ];
      for (const [i, [name, run, code, message]] of bad.entries()) {
        const err = await rejectsWith(run, code, `case ${i} (${name})`);
        assert.match(err.message, message, `case ${i} (${name}): got message ${JSON.stringify(err.message)}`);
      }
      await rejectsWith(() => kms.policy('e', 'q'), 'ERR_POLICY_NOT_FOUND', 'a refused policy was created');
      await kms.deletePolicy('e', 'p');
      await rejectsWith(() => kms.policy('e', 'p'), 'ERR_POLICY_NOT_FOUND', 'deleted policy');
      await rejectsWith(() => kms.deletePolicy('e', 'p'), 'ERR_POLICY_NOT_FOUND', 'delete twice');
    }));

  it('a User acts under its assigned policy, and its service accounts under the same one', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const root = kms.principal(ROOT, 'e');
      const user = newIdentity();
      const sa = newIdentity();
      await createId(kms, root, 'e', user, 'User');
      assert.equal(kms.principal(user, 'e').policy, undefined, 'a User without a policy has one');
      assert.equal(kms.allowed(kms.principal(user, 'e'), 'KEY:ENCRYPT', 'app-1'), false, 'a User without a policy is allowed');
      await kms.createPolicy(
        ROOT,
        'e',
        'app',
        { 'KEY:ENCRYPT': ['app-*'], 'KEY:LIST': ['app-*'] },
        { 'KEY:ENCRYPT': ['app-secret'] },
        isSdkCommandName,
      );
      await kms.assignPolicy(root, 'e', user, 'app');
      await createId(kms, kms.principal(user, 'e'), 'e', sa, '', true);
      for (const [who, id] of [
        ['user', user],
        ['its service account', sa],
      ] as const) {
        const p = kms.principal(id, 'e');
        assert.equal(p.known, true, `${who}: got known=false`);
        assert.equal(p.admin, false, `${who}: got admin=true`);
        const cases: [string, string, boolean][] = [
          ['KEY:ENCRYPT', 'app-1', true],
          ['KEY:ENCRYPT', 'app-secret', false],
          ['KEY:ENCRYPT', 'other', false],
          ['KEY:DECRYPT', 'app-1', false],
        ];
        cases.forEach(([command, name, want], i) => {
          assert.equal(kms.allowed(p, command, name), want, `case ${i} (${who}: ${command} ${name}): got ${!want}, want ${want}`);
        });
        assert.equal(kms.allowedToList(p, 'KEY:LIST'), true, `${who}: KEY:LIST not admitted`);
        assert.equal(kms.allowedToList(p, 'POLICY:LIST'), false, `${who}: POLICY:LIST admitted`);
        assert.equal(kms.principal(id, 'other-enclave').known, false, `${who}: known in another enclave`);
      }
      const stranger = kms.principal(newIdentity(), 'e');
      assert.equal(stranger.known, false, 'an unknown identity is known');
      assert.equal(kms.allowed(stranger, 'KEY:ENCRYPT', 'app-1'), false, 'an unknown identity is allowed');

      const assign: [string, string, string, ErrorCode][] = [
        ['to a service account', sa, 'app', 'ERR_POLICY_NOT_ASSIGNABLE'],
        ['missing policy', user, 'nope', 'ERR_POLICY_NOT_FOUND'],
        ['missing identity', newIdentity(), 'app', 'ERR_IDENTITY_NOT_FOUND'],
        ['invalid identity', 'h1:nope', 'app', 'ERR_INVALID_IDENTITY'],
      ];
      for (const [i, [name, id, pol, code]] of assign.entries())
        await rejectsWith(() => kms.assignPolicy(root, 'e', id, pol), code, `case ${i} (${name})`);
      const admin = newIdentity();
      await createId(kms, root, 'e', admin, 'Admin');
      await rejectsWith(() => kms.assignPolicy(root, 'e', admin, 'app'), 'ERR_POLICY_NOT_ASSIGNABLE', 'to an Admin');
      await rejectsWith(() => kms.assignPolicy(kms.principal(user, 'e'), 'e', user, 'app'), 'ERR_NOT_ALLOWED', 'a User assigning');
    }));
});

// ---------------------------------------------------------------------------------------------
// identities

describe('Kms identities', () => {
  it('enforces who may create what', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const root = kms.principal(ROOT, 'e');
      const admin = newIdentity();
      const user = newIdentity();
      const sysadmin = newIdentity();
      await createId(kms, root, 'e', admin, 'Admin');
      await createId(kms, root, 'e', user, 'User');
      await createId(kms, root, 'e', sysadmin, 'SysAdmin');
      const adminP = kms.principal(admin, 'e');
      const userP = kms.principal(user, 'e');
      assert.equal(kms.principal(sysadmin, 'other').sysAdmin, true, 'a SysAdmin identity is not SysAdmin everywhere');
      assert.equal(adminP.admin && !adminP.sysAdmin, true, 'an Admin is not exactly Admin');

      const cases: { name: string; caller: Principal; identity: string; privilege: string; sa: boolean; want?: ErrorCode }[] = [
        { name: 'root creates SysAdmin', caller: root, identity: newIdentity(), privilege: 'sysadmin', sa: false },
        { name: 'Admin creates Admin', caller: adminP, identity: newIdentity(), privilege: 'Admin', sa: false },
        { name: 'Admin creates User', caller: adminP, identity: newIdentity(), privilege: 'User', sa: false },
        { name: 'Admin creates User (empty privilege)', caller: adminP, identity: newIdentity(), privilege: '', sa: false },
        {
          name: 'Admin creates SysAdmin',
          caller: adminP,
          identity: newIdentity(),
          privilege: 'SysAdmin',
          sa: false,
          want: 'ERR_NOT_ALLOWED',
        },
        {
          name: 'Admin creates SysAdmin service account',
          caller: adminP,
          identity: newIdentity(),
          privilege: 'SysAdmin',
          sa: true,
          want: 'ERR_NOT_ALLOWED',
        },
        { name: 'Admin overwrites a SysAdmin', caller: adminP, identity: sysadmin, privilege: 'User', sa: false, want: 'ERR_NOT_ALLOWED' },
        { name: 'User creates a service account', caller: userP, identity: newIdentity(), privilege: '', sa: true },
        { name: 'User creates a User', caller: userP, identity: newIdentity(), privilege: 'User', sa: false, want: 'ERR_NOT_ALLOWED' },
        { name: 'User creates an Admin', caller: userP, identity: newIdentity(), privilege: 'Admin', sa: false, want: 'ERR_NOT_ALLOWED' },
        {
          name: 'User creates an Admin service account',
          caller: userP,
          identity: newIdentity(),
          privilege: 'Admin',
          sa: true,
          want: 'ERR_NOT_ALLOWED',
        },
        {
          name: 'User overwrites an Admin with a service account',
          caller: userP,
          identity: admin,
          privilege: '',
          sa: true,
          want: 'ERR_NOT_ALLOWED',
        },
        { name: 'root identity', caller: root, identity: ROOT, privilege: 'User', sa: false, want: 'ERR_ROOT_IDENTITY' },
        { name: 'root identity by an Admin', caller: adminP, identity: ROOT, privilege: 'User', sa: false, want: 'ERR_ROOT_IDENTITY' },
        { name: 'replace itself', caller: adminP, identity: admin, privilege: 'User', sa: false, want: 'ERR_BAD_REQUEST' },
        { name: 'invalid identity', caller: root, identity: 'h1:short', privilege: 'User', sa: false, want: 'ERR_INVALID_IDENTITY' },
        { name: 'empty identity', caller: root, identity: '', privilege: 'User', sa: false, want: 'ERR_INVALID_IDENTITY' },
        {
          name: 'unknown privilege',
          caller: root,
          identity: newIdentity(),
          privilege: 'Operator',
          sa: false,
          want: 'ERR_INVALID_PRIVILEGE',
        },
      ];
      for (const [i, c] of cases.entries()) {
        const before = dump(kms);
        const run = (): Promise<void> => createId(kms, c.caller, 'e', c.identity, c.privilege, c.sa);
        if (c.want) {
          await rejectsWith(run, c.want, `case ${i} (${c.name})`);
          assert.deepEqual(dump(kms), before, `case ${i} (${c.name}): the state changed`);
          continue;
        }
        await run();
        const info = kms.identityInfo('e', c.identity);
        assert.equal(info.isServiceAccount, c.sa, `case ${i} (${c.name}): got isServiceAccount=${info.isServiceAccount}`);
        assert.equal(info.createdBy, c.caller.identity, `case ${i} (${c.name}): got createdBy ${info.createdBy}`);
      }
      await rejectsWith(() => createId(kms, root, 'nope', newIdentity(), 'User'), 'ERR_ENCLAVE_NOT_FOUND', 'missing enclave');
    }));

  it('the root identity cannot be deleted; nobody deletes itself', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const root = kms.principal(ROOT, 'e');
      const admin = newIdentity();
      await createId(kms, root, 'e', admin, 'Admin');
      const adminP = kms.principal(admin, 'e');
      const cases: [string, Principal, string, ErrorCode][] = [
        ['root deletes root', root, ROOT, 'ERR_SELF_DELETE'],
        ['Admin deletes root', adminP, ROOT, 'ERR_ROOT_IDENTITY'],
        ['Admin deletes itself', adminP, admin, 'ERR_SELF_DELETE'],
        ['missing identity', root, newIdentity(), 'ERR_IDENTITY_NOT_FOUND'],
      ];
      for (const [i, [name, caller, id, code]] of cases.entries())
        await rejectsWith(() => kms.deleteIdentity(caller, 'e', id), code, `case ${i} (${name})`);
      const info = kms.identityInfo('e', ROOT);
      assert.equal(info.privilege, PRIVILEGE.SysAdmin, `root identityInfo: got privilege ${info.privilege}, want SysAdmin`);
      assert.equal(kms.isSysAdmin(ROOT), true, 'root is not SysAdmin');
      assert.equal(kms.isSysAdmin(''), false, 'the empty identity is SysAdmin');
    }));

  it('deletes service accounts with their parent, transitively', () =>
    withKms(async ({ kms, store }) => {
      await kms.createEnclave(ROOT, 'e');
      const root = kms.principal(ROOT, 'e');
      const [admin, sa1, sa2, sa3, user, userSa, other] = Array.from({ length: 7 }, newIdentity) as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      await createId(kms, root, 'e', admin, 'Admin');
      await createId(kms, kms.principal(admin, 'e'), 'e', sa1, '', true);
      await createId(kms, kms.principal(sa1, 'e'), 'e', sa2, '', true); // a service account of a service account
      await createId(kms, kms.principal(sa2, 'e'), 'e', sa3, '', true);
      await createId(kms, root, 'e', user, 'User');
      await createId(kms, kms.principal(user, 'e'), 'e', userSa, '', true);
      await createId(kms, root, 'e', other, 'User');

      assert.deepEqual(kms.identityInfo('e', admin).serviceAccounts, [sa1], 'admin: got other service accounts');
      assert.deepEqual(kms.identityInfo('e', sa1).serviceAccounts, [sa2], 'sa1: got other service accounts');
      assert.equal(kms.principal(sa3, 'e').admin, true, 'a service account of an Admin (3 levels) does not act as Admin');
      assert.equal(kms.principal(userSa, 'e').admin, false, 'a service account of a User acts as Admin');

      // A User manages its own service accounts only.
      await rejectsWith(
        () => kms.deleteIdentity(kms.principal(other, 'e'), 'e', userSa),
        'ERR_NOT_ALLOWED',
        'User deletes a foreign service account',
      );
      await rejectsWith(() => kms.deleteIdentity(kms.principal(user, 'e'), 'e', other), 'ERR_NOT_ALLOWED', 'User deletes a User');
      await rejectsWith(
        () => kms.deleteIdentity(kms.principal(userSa, 'e'), 'e', user),
        'ERR_NOT_ALLOWED',
        'service account deletes its parent',
      );

      // Deleting a middle service account takes its descendants only.
      await kms.deleteIdentity(kms.principal(admin, 'e'), 'e', sa2);
      const remaining = (): string[] =>
        kms
          .listIdentities('e', '', '', 0)
          .items.map((i) => i.identity)
          .sort();
      assert.deepEqual(remaining(), [admin, sa1, user, userSa, other].sort(), 'after deleting sa2: got other identities');
      await createId(kms, kms.principal(sa1, 'e'), 'e', sa2, '', true);

      await kms.deleteIdentity(root, 'e', admin);
      assert.deepEqual(remaining(), [user, userSa, other].sort(), 'after deleting admin: got other identities');
      for (const id of [admin, sa1, sa2, sa3]) {
        assert.equal(await store.get(`identity/e/${id}`), undefined, `${id}: still stored after its parent was deleted`);
        assert.equal(kms.principal(id, 'e').known, false, `${id}: still known after its parent was deleted`);
      }
      await kms.deleteIdentity(kms.principal(user, 'e'), 'e', userSa);
      assert.deepEqual(remaining(), [user, other].sort(), 'after a User deleted its service account: got other identities');
    }));

  it("a service account acts with its parent's rights (Admin for SysAdmin parents)", () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'a');
      await kms.createEnclave(ROOT, 'b');
      const sys = newIdentity();
      await createId(kms, kms.principal(ROOT, 'a'), 'a', sys, 'SysAdmin');
      const [ofRoot, ofSys, ofAdmin, ofUser, admin, user] = Array.from({ length: 6 }, newIdentity) as [
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      await createId(kms, kms.principal(ROOT, 'b'), 'b', admin, 'Admin');
      await createId(kms, kms.principal(ROOT, 'b'), 'b', user, 'User');
      await createId(kms, kms.principal(ROOT, 'b'), 'b', ofRoot, '', true);
      await createId(kms, kms.principal(sys, 'b'), 'b', ofSys, '', true); // parent is SysAdmin via another enclave
      await createId(kms, kms.principal(admin, 'b'), 'b', ofAdmin, '', true);
      await createId(kms, kms.principal(user, 'b'), 'b', ofUser, '', true);
      const cases: [string, string, boolean][] = [
        ['service account of root', ofRoot, true],
        ['service account of a SysAdmin', ofSys, true],
        ['service account of an Admin', ofAdmin, true],
        ['service account of a User', ofUser, false],
      ];
      cases.forEach(([name, id, admin], i) => {
        const p = kms.principal(id, 'b');
        assert.equal(p.known, true, `case ${i} (${name}): got known=false`);
        assert.equal(p.admin, admin, `case ${i} (${name}): got admin=${p.admin}, want ${admin}`);
      });
    }));

  it('removes SysAdmin rights with the identity or its enclave', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'a');
      await kms.createEnclave(ROOT, 'b');
      const s = newIdentity();
      await createId(kms, kms.principal(ROOT, 'a'), 'a', s, 'SysAdmin');
      await createId(kms, kms.principal(ROOT, 'b'), 'b', s, 'SysAdmin');
      assert.equal(kms.isSysAdmin(s), true, 'not SysAdmin after create');
      await kms.deleteIdentity(kms.principal(ROOT, 'a'), 'a', s);
      assert.equal(kms.isSysAdmin(s), true, 'lost SysAdmin while still SysAdmin in enclave b');
      await createId(kms, kms.principal(ROOT, 'b'), 'b', s, 'User');
      assert.equal(kms.isSysAdmin(s), false, 'still SysAdmin after being overwritten as a User');
      await createId(kms, kms.principal(ROOT, 'b'), 'b', s, 'SysAdmin');
      await kms.deleteEnclave('b');
      assert.equal(kms.isSysAdmin(s), false, 'still SysAdmin after its enclave was deleted');
    }));

  it('validates tags: at most 32, key 1-64 and value 0-256 of A-Z a-z 0-9 . _ - /', () =>
    withKms(async ({ kms }) => {
      await kms.createEnclave(ROOT, 'e');
      const root = kms.principal(ROOT, 'e');
      const many = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]));
      const cases: [string, Record<string, string>, boolean][] = [
        ['no tags', {}, true],
        ['32 tags', many(32), true],
        ['33 tags', many(33), false],
        ['64-character key', { ['k'.repeat(64)]: 'v' }, true],
        ['65-character key', { ['k'.repeat(65)]: 'v' }, false],
        ['empty key', { '': 'v' }, false],
        ['256-character value', { k: 'v'.repeat(256) }, true],
        ['257-character value', { k: 'v'.repeat(257) }, false],
        ['empty value', { k: '' }, true],
        ['every allowed character', { 'Az09._-/': 'Az09._-/' }, true],
        ['space in key', { 'a b': 'v' }, false],
        ['space in value', { k: 'a b' }, false],
        ['= in key', { 'a=b': 'v' }, false],
        ['non-ASCII value', { k: 'ä' }, false],
        ['colon in value', { k: 'a:b' }, false],
        ['newline in value', { k: 'a\n' }, false],
      ];
      for (const [i, [name, tags, ok]] of cases.entries()) {
        const id = newIdentity();
        const run = (): Promise<void> => createId(kms, root, 'e', id, 'User', false, tags);
        if (!ok) {
          await rejectsWith(run, 'ERR_INVALID_TAG', `case ${i} (${name})`);
          continue;
        }
        await run();
        assert.deepEqual(kms.identityInfo('e', id).tags, tags, `case ${i} (${name}): got other tags`);
      }
    }));
});

// ---------------------------------------------------------------------------------------------
// enclave deletion and restart

/** Fills an enclave with keys (several versions, an import), policies and identities. */
async function populate(
  kms: Kms,
  e: string,
): Promise<{ ciphertexts: { key: string; version: number; ct: Buffer; pt: string }[]; users: string[] }> {
  await kms.createEnclave(ROOT, e);
  const root = kms.principal(ROOT, e);
  await kms.createKey(ROOT, e, 'k1', '', false);
  await kms.createKey(ROOT, e, 'k1', 'ChaCha20', true);
  await kms.createKey(ROOT, e, 'k1', '', true);
  await kms.deleteKey(e, 'k1', 2, false);
  await kms.createKey(ROOT, e, 'k2', 'ChaCha20', false);
  await kms.importKey(ROOT, e, 'imported', '', randomBytes(32));
  await kms.createPolicy(ROOT, e, 'p', { 'KEY:ENCRYPT': ['k*'], 'KEY:DECRYPT': ['k1'] }, { 'KEY:ENCRYPT': ['k2'] }, isSdkCommandName);
  const admin = newIdentity();
  const user = newIdentity();
  const sa = newIdentity();
  const sys = newIdentity();
  await createId(kms, root, e, admin, 'Admin', false, { team: 'ops' });
  await createId(kms, root, e, user, 'User', false, { app: 'minio/bucket-1' });
  await kms.assignPolicy(root, e, user, 'p');
  await createId(kms, kms.principal(user, e), e, sa, '', true);
  await createId(kms, root, e, sys, 'SysAdmin');
  const ad = utf8(`ad of ${e}`);
  const ciphertexts = [];
  for (const [key, version] of [
    ['k1', 1],
    ['k1', 3],
    ['k2', 1],
    ['imported', 1],
  ] as const) {
    const pt = `secret of ${e}/${key}@${version}`;
    ciphertexts.push({ key, version, ct: kms.encrypt(e, key, version, utf8(pt), ad).ciphertext, pt });
  }
  return { ciphertexts, users: [admin, user, sa, sys] };
}

describe('Kms state across deletion and restart', () => {
  it('deleting an enclave removes everything under it and nothing else', () =>
    withKms(async (ctx) => {
      const { kms, store } = ctx;
      const { users } = await populate(kms, 'e');
      await populate(kms, 'e-2'); // a name sharing the prefix
      await populate(kms, 'f');
      const sys = users[3]!;
      assert.equal(kms.isSysAdmin(sys), true, 'SysAdmin of e is not SysAdmin');
      const fBefore = (dump(kms) as { name: string }[]).filter((x) => x.name !== 'e');

      await kms.deleteEnclave('e');
      await rejectsWith(() => kms.enclave('e'), 'ERR_ENCLAVE_NOT_FOUND', 'deleted enclave');
      await rejectsWith(() => kms.deleteEnclave('e'), 'ERR_ENCLAVE_NOT_FOUND', 'delete twice');
      for (const prefix of ['enclave/e', 'key/e/', 'policy/e/', 'identity/e/']) {
        const left = (await storeKeys(store, prefix)).filter((k) => k === 'enclave/e' || !k.startsWith('enclave/'));
        assert.deepEqual(left, [], `${prefix}: got leftover records ${JSON.stringify(left)}`);
      }
      for (const prefix of ['enclave/e-2', 'key/e-2/', 'policy/e-2/', 'identity/e-2/', 'key/f/']) {
        assert.ok((await storeKeys(store, prefix)).length > 0, `${prefix}: records of another enclave were deleted`);
      }
      assert.equal(kms.isSysAdmin(sys), false, 'the SysAdmin of the deleted enclave is still SysAdmin');
      assert.deepEqual(dump(kms), fBefore, 'the other enclaves changed');

      await kms.createEnclave(ROOT, 'e');
      assert.equal(
        kms.enclave('e').keys.size + kms.enclave('e').policies.size + kms.enclave('e').identities.size,
        0,
        're-created enclave is not empty',
      );
      const restarted = await ctx.restart();
      assert.equal(restarted.enclave('e').keys.size, 0, 'after restart: the re-created enclave has keys');
      assert.equal(restarted.isSysAdmin(sys), false, 'after restart: the deleted SysAdmin is back');
    }));

  it('a restart loads exactly the state before it, and old ciphertexts still decrypt', () =>
    withKms(async (ctx) => {
      const made = [await populate(ctx.kms, 'tenant-1'), await populate(ctx.kms, 'tenant-2')];
      await ctx.kms.createEnclave(ROOT, 'empty');
      const [, user, sa, sys] = made[0]!.users as [string, string, string, string];
      const before = dump(ctx.kms);
      const allowedBefore = ctx.kms.allowed(ctx.kms.principal(sa, 'tenant-1'), 'KEY:ENCRYPT', 'k1');
      const commits = ctx.kms.commits;
      assert.ok(commits > 0, 'no commits counted');

      const kms = await ctx.restart();
      assert.deepEqual(dump(kms), before, 'after restart: got another state');
      assert.equal(kms.commits, 0, `after restart: got ${kms.commits} commits, want 0`);
      for (const [n, enclave] of ['tenant-1', 'tenant-2'].entries()) {
        for (const [i, c] of made[n]!.ciphertexts.entries()) {
          const ad = utf8(`ad of ${enclave}`);
          const got = kms.decrypt(enclave, c.key, c.version, c.ct, ad).toString();
          assert.equal(got, c.pt, `case ${i} (${enclave}/${c.key}@${c.version}): got ${JSON.stringify(got)}, want ${JSON.stringify(c.pt)}`);
          assert.equal(
            kms.decrypt(enclave, c.key, 0, c.ct, ad).toString(),
            c.pt,
            `case ${i} (${enclave}/${c.key}, version 0): other plaintext`,
          );
        }
      }
      assert.equal(kms.isSysAdmin(sys), true, 'after restart: the SysAdmin identity lost its rights');
      assert.equal(
        kms.allowed(kms.principal(sa, 'tenant-1'), 'KEY:ENCRYPT', 'k1'),
        allowedBefore,
        'after restart: the service account has other rights',
      );
      assert.equal(kms.identityInfo('tenant-1', user).policy, 'p', 'after restart: the user lost its policy');
      assert.deepEqual(
        kms.principal(user, 'tenant-1').policy?.allow,
        kms.policy('tenant-1', 'p').allow,
        'after restart: the user acts under other rules',
      );
      assert.equal(kms.keyVersion('tenant-1', 'imported', 0).imported, true, 'after restart: the import mark is lost');

      // maxVersion survives: a new version after the restart does not reuse a deleted number.
      await kms.deleteKey('tenant-1', 'k1', 0, false); // deletes 3, leaving 1
      const again = await ctx.restart();
      await again.createKey(ROOT, 'tenant-1', 'k1', '', true);
      assert.deepEqual(versionsOf(again, 'tenant-1', 'k1'), [1, 4], 'after restart: a deleted version number was reused');
    }));

  it('refuses to load a store whose records were moved, swapped, or made under another REK', async () => {
    const cases: { name: string; tamper: (store: SqliteStore) => Promise<void>; message: RegExp }[] = [
      {
        name: 'two key records swapped',
        tamper: async (s) => {
          const a = (await s.get('key/e/k1'))!;
          const b = (await s.get('key/e/k2'))!;
          await s.commit(
            [],
            [
              { key: a.key, value: b.value },
              { key: b.key, value: a.value },
            ],
          );
        },
        message: /key\/e\/k[12]/,
      },
      {
        name: 'policy moved to another enclave',
        tamper: async (s) => {
          const p = (await s.get('policy/e/p'))!;
          await s.commit([], [{ key: 'policy/f/p', value: p.value }]);
        },
        message: /policy\/f\/p/,
      },
      {
        name: 'identity record bit flip',
        tamper: async (s) => {
          const id = (await s.range('identity/e/'))[0]!;
          const v = Buffer.from(id.value);
          v[v.length - 1]! ^= 1;
          await s.commit([], [{ key: id.key, value: v }]);
        },
        message: /identity\/e\//,
      },
    ];
    for (const [i, c] of cases.entries()) {
      await withKms(async (ctx) => {
        await populate(ctx.kms, 'e');
        await populate(ctx.kms, 'f');
        await c.tamper(ctx.store);
        let err: unknown;
        try {
          await ctx.restart();
        } catch (e) {
          err = e;
        }
        assert.ok(err instanceof Error, `case ${i} (${c.name}): got a loaded state, want an integrity error`);
        assert.match(
          err.message,
          c.message,
          `case ${i} (${c.name}): got message ${JSON.stringify(err.message)}, want it to name the record`,
        );
      });
    }

    await withKms(async (ctx) => {
      await populate(ctx.kms, 'e');
      await assert.rejects(
        Kms.load(ctx.store, new Barrier(randomBytes(32), randomUUID()), { rootIdentity: ROOT }),
        'another REK: got a loaded state, want an error',
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// cases

const VALID_NAMES = ['a', 'A', '0', 'my-key', 'my.key_2:v1', 'x'.repeat(128)];
const INVALID_NAMES = ['', '-a', '.a', '_a', ':a', 'a/b', 'a b', 'a*', 'ä', 'x'.repeat(129), '..', 'a\n'];

interface PageCase {
  name: string;
  prefix: string;
  continueAt: string;
  limit: number;
  /** Names the caller may not see. */
  hide?: string[];
  want: string[];
  next: string;
}

// Sorted names: a, a-1, a.b, a0, ab, b, b1, c
const PAGE_CASES: PageCase[] = [
  {
    name: 'everything, limit 0 = default',
    prefix: '',
    continueAt: '',
    limit: 0,
    want: ['a', 'a-1', 'a.b', 'a0', 'ab', 'b', 'b1', 'c'],
    next: '',
  },
  { name: 'first page of 3', prefix: '', continueAt: '', limit: 3, want: ['a', 'a-1', 'a.b'], next: 'a0' },
  { name: 'continueAt is inclusive', prefix: '', continueAt: 'a0', limit: 3, want: ['a0', 'ab', 'b'], next: 'b1' },
  { name: 'last page', prefix: '', continueAt: 'b1', limit: 3, want: ['b1', 'c'], next: '' },
  { name: 'limit equal to what is left: no next page', prefix: '', continueAt: 'b', limit: 3, want: ['b', 'b1', 'c'], next: '' },
  { name: 'prefix a', prefix: 'a', continueAt: '', limit: 0, want: ['a', 'a-1', 'a.b', 'a0', 'ab'], next: '' },
  { name: 'prefix a, page of 2', prefix: 'a', continueAt: '', limit: 2, want: ['a', 'a-1'], next: 'a.b' },
  { name: 'prefix a from a0', prefix: 'a', continueAt: 'a0', limit: 0, want: ['a0', 'ab'], next: '' },
  { name: 'prefix a, page ends exactly at the prefix end', prefix: 'a', continueAt: 'a0', limit: 2, want: ['a0', 'ab'], next: '' },
  { name: 'prefix b', prefix: 'b', continueAt: '', limit: 1, want: ['b'], next: 'b1' },
  { name: 'exact name as prefix', prefix: 'c', continueAt: '', limit: 0, want: ['c'], next: '' },
  { name: 'continueAt after the prefix', prefix: 'a', continueAt: 'b', limit: 0, want: [], next: '' },
  { name: 'continueAt before the prefix', prefix: 'b', continueAt: 'a0', limit: 0, want: [], next: '' },
  { name: 'continueAt before the prefix, no names in between', prefix: 'b', continueAt: 'az', limit: 0, want: [], next: '' },
  { name: 'continueAt sharing only part of the prefix', prefix: 'ab', continueAt: 'a', limit: 0, want: [], next: '' },
  { name: 'continueAt not a name: starts at the next one', prefix: '', continueAt: 'a00', limit: 2, want: ['ab', 'b'], next: 'b1' },
  { name: 'continueAt beyond every name', prefix: '', continueAt: 'zz', limit: 0, want: [], next: '' },
  { name: 'prefix without matches', prefix: 'x', continueAt: '', limit: 0, want: [], next: '' },
  { name: 'prefix longer than every name', prefix: 'abc', continueAt: '', limit: 0, want: [], next: '' },
  {
    name: 'hidden items are skipped and not counted',
    prefix: '',
    continueAt: '',
    limit: 3,
    hide: HIDDEN,
    want: ['a', 'a.b', 'ab'],
    next: 'b',
  },
  { name: 'next page starts at a visible item', prefix: 'a', continueAt: '', limit: 1, hide: HIDDEN, want: ['a'], next: 'a.b' },
  {
    name: 'hidden items after a full page: next is visible',
    prefix: 'a',
    continueAt: 'a.b',
    limit: 1,
    hide: HIDDEN,
    want: ['a.b'],
    next: 'ab',
  },
  {
    name: 'hidden continueAt is skipped to the next visible name',
    prefix: 'a',
    continueAt: 'a-1',
    limit: 1,
    hide: HIDDEN,
    want: ['a.b'],
    next: 'ab',
  },
  {
    name: 'only hidden items left after a full page: no next page',
    prefix: 'a',
    continueAt: 'a.b',
    limit: 1,
    hide: ['a0', 'ab'],
    want: ['a.b'],
    next: '',
  },
  { name: 'only hidden items under the prefix', prefix: 'a0', continueAt: 'a0', limit: 0, hide: HIDDEN, want: [], next: '' },
  {
    name: 'everything hidden',
    prefix: '',
    continueAt: '',
    limit: 2,
    hide: ['a', 'a-1', 'a.b', 'a0', 'ab', 'b', 'b1', 'c'],
    want: [],
    next: '',
  },
];

const MATCH_CASES: [string, string, boolean][] = [
  ['*', 'anything', true],
  ['*', '', true],
  ['app-*', 'app-', true],
  ['app-*', 'app-1', true],
  ['app-*', 'app', false],
  ['app-*', 'xapp-1', false],
  ['app-*', 'App-1', false],
  ['app', 'app', true],
  ['app', 'app1', false],
  ['app', 'ap', false],
  ['app', 'App', false],
  // Interior wildcards match (policy.test.ts has the full glob semantics).
  ['a*b', 'axb', true],
  ['a*b', 'a*b', true],
  ['**', '*x', true],
  ['**', 'x', true],
  ['', '', true],
  ['', 'x', false],
];

const ALLOW_CASES: [string, string, boolean][] = [
  ['KEY:ENCRYPT', 'app-1', true],
  ['KEY:ENCRYPT', 'app-', true],
  ['KEY:ENCRYPT', 'shared', true],
  ['KEY:ENCRYPT', 'shared2', false],
  ['KEY:ENCRYPT', 'app-secret', false],
  ['KEY:ENCRYPT', 'app-secret-2', false],
  ['KEY:ENCRYPT', 'other', false],
  ['KEY:DECRYPT', 'anything', true],
  ['KEY:DECRYPT', 'app-secret', false],
  ['KEY:DECRYPT', 'app-secret-2', true],
  ['KEY:GENERATE', 'app-1', false],
  ['KEY:MAC', 'app-1', false],
  ['key:encrypt', 'app-1', false],
];

const NORMALIZE_CASES: [string[], string[]][] = [
  [[], []],
  [['', ''], []],
  [
    ['b', 'a', '', 'ab', 'a'],
    ['a', 'b', 'ab'],
  ],
  [
    ['key-1', '*', 'key-*'],
    ['*', 'key-*', 'key-1'],
  ],
  [
    ['B', 'a', 'A'],
    ['A', 'B', 'a'],
  ],
  [
    ['long-name', 'x', 'mid'],
    ['x', 'mid', 'long-name'],
  ],
];
