/**
 * Pipelined writes and group commit (kms/repo.ts over store/sqlite.ts): a write holds the
 * domain's lock only while its commit is applied, its caller is answered when the commit is
 * durable, and a key version is not used to seal or open before its creation is durable. The
 * syncs of the WAL are held or failed on purpose through a replaced fs.fdatasync.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kms } from '../../src/kms/kms.js';
import { Barrier } from '../../src/store/barrier.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { KmsError } from '../../src/errors.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = generateApiKey('k1').identity;
const AD = Buffer.from('{"bucket":"b"}');

type SyncCb = (err: NodeJS.ErrnoException | null) => void;

/**
 * fs.fdatasync as the store sees it: each sync waits in `held` until released with `release`
 * (all held syncs) or failed with `fail`.
 */
class HeldSyncs {
  readonly held: Array<{ fd: number; cb: SyncCb }> = [];
  readonly #real = fs.fdatasync;
  readonly #mod = fs as unknown as { default: { fdatasync: typeof fs.fdatasync } };

  constructor() {
    this.#mod.default.fdatasync = ((fd: number, cb: SyncCb) => void this.held.push({ fd, cb })) as typeof fs.fdatasync;
    syncBuiltinESMExports();
  }

  release(): void {
    for (const { fd, cb } of this.held.splice(0)) this.#real(fd, cb);
  }

  fail(): void {
    for (const { cb } of this.held.splice(0)) cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
  }

  restore(): void {
    this.release();
    this.#mod.default.fdatasync = this.#real;
    syncBuiltinESMExports();
  }
}

async function withKms(fn: (kms: Kms, store: SqliteStore, syncs: HeldSyncs) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'minkms-group-'));
  const store = new SqliteStore(join(root, 'data'));
  const kms = await Kms.load(store, new Barrier(randomBytes(32), randomUUID()), { rootIdentity: ROOT });
  await kms.createEnclave(ROOT, 'e');
  const syncs = new HeldSyncs();
  try {
    await fn(kms, store, syncs);
  } finally {
    syncs.restore();
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/** How `p` stands once the event loop has turned. */
async function state(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let s: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => (s = 'resolved'),
    () => (s = 'rejected'),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return s;
}

function notFound(fn: () => unknown, what: string): void {
  assert.throws(fn, (err: unknown) => err instanceof KmsError && err.code === 'ERR_KEY_NOT_FOUND', what);
}

describe('pipelined writes and group commit', () => {
  it('a write is acknowledged only when durable, and the next write does not wait for that', () =>
    withKms(async (kms, store, syncs) => {
      const first = kms.createKey(ROOT, 'e', 'k1', '', false);
      await waitFor('the first commit reached its sync', () => syncs.held.length === 1);
      const second = kms.createKey(ROOT, 'e', 'k2', '', false);
      // The second write ran (its commit is in the store) while the first one's sync is held.
      await waitFor('the second commit was applied', async () => (await store.get('key/e/k2')) !== undefined);
      assert.equal(await state(first), 'pending', 'first create acknowledged before its sync');
      assert.equal(await state(second), 'pending', 'second create acknowledged before its sync');
      syncs.release(); // the first sync; it started before the second commit, so it does not cover it
      await first;
      assert.equal(await state(second), 'pending', 'second create acknowledged by a sync that started before its commit');
      await waitFor('a second sync was started for the second commit', () => syncs.held.length === 1);
      syncs.release();
      await second;
    }));

  it('a key version is not used to seal or open until its creation is durable', () =>
    withKms(async (kms, _store, syncs) => {
      syncs.restore();
      await kms.createKey(ROOT, 'e', 'k', '', false);
      const v1 = kms.generate('e', 'k', 0, AD, 32);
      assert.equal(v1.version, 1);
      const held = new HeldSyncs();
      try {
        const create = kms.createKey(ROOT, 'e', 'new', '', false);
        const addVersion = kms.createKey(ROOT, 'e', 'k', '', true);
        await waitFor(
          'both writes applied',
          () => kms.listKeyVersions('e', 'k', 0, 10).items.length === 2 && kms.listKeyVersions('e', 'new', 0, 10).items.length === 1,
        );
        notFound(() => kms.generate('e', 'new', 0, AD, 32), 'KEY:GENERATE with a key whose creation is not durable');
        notFound(() => kms.keyVersion('e', 'k', 2), 'version 2 by number before it is durable');
        const latest = kms.generate('e', 'k', 0, AD, 32);
        assert.equal(
          latest.version,
          1,
          `KEY:GENERATE with version 0 while version 2 is not durable: got version ${latest.version}, want 1`,
        );
        assert.deepEqual(kms.decrypt('e', 'k', 0, v1.ciphertext, AD), v1.plaintext, 'version-0 decrypt skips the pending version');
        held.restore(); // this sync and the ones after it go to the disk
        await Promise.all([create, addVersion]);
        assert.equal(kms.generate('e', 'k', 0, AD, 32).version, 2);
        assert.equal(kms.generate('e', 'new', 0, AD, 32).version, 1);
      } finally {
        held.restore();
      }
    }));

  it('a failed sync fails the writes it covered as outcome unknown, and their key versions stay unused', () =>
    withKms(async (kms, store, syncs) => {
      const create = kms.createKey(ROOT, 'e', 'k', '', false);
      await waitFor('the commit reached its sync', () => syncs.held.length === 1);
      syncs.fail();
      await assert.rejects(create, (err: unknown) => err instanceof KmsError && err.code === 'ERR_STORE_OUTCOME_UNKNOWN');
      notFound(() => kms.generate('e', 'k', 0, AD, 32), 'KEY:GENERATE with a key whose sync failed');
      assert.equal(store.health().write, 'unavailable');
      await assert.rejects(
        kms.createKey(ROOT, 'e', 'k2', '', false),
        (err: unknown) => err instanceof KmsError && err.code === 'ERR_STORE_UNAVAILABLE',
      );
    }));
});
