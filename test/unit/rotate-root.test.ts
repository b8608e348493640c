/**
 * Root key rotation in-process: every value re-encrypted under the new term, sealed entries
 * replaced, and an interrupted rotation resumed after a "restart".
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite.js';
import { Barrier, termOf } from '../../src/store/barrier.js';
import { SoftHsm, generateSoftHsmKey } from '../../src/hsm/soft.js';
import { openRootKey, isRootKeyRecord, REK_PREFIX, REK_NEXT_PREFIX, ROTATION_KEY, type RootKey } from '../../src/hsm/root-key.js';
import { rotateRoot } from '../../src/hsm/rotate-root.js';
import { Kms } from '../../src/kms/kms.js';
import type { Store } from '../../src/store/store.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const ROOT = 'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw';

async function open(store: Store, hsms: SoftHsm[]): Promise<{ root: RootKey; barrier: Barrier; kms: Kms }> {
  const root = await openRootKey(store, hsms);
  const barrier = new Barrier(root.rek, root.clusterId, root.term);
  if (root.next) barrier.addTerm(root.next.rek, root.next.term);
  return { root, barrier, kms: await Kms.load(store, barrier, { rootIdentity: ROOT }) };
}

async function terms(store: Store): Promise<Set<number>> {
  return new Set((await store.range('')).filter((e) => !isRootKeyRecord(e.key)).map((e) => termOf(e.value)));
}

test('rotate-root re-encrypts everything, survives an interruption, and the old REK is gone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'minkms-rotate-'));
  dirs.push(dir);
  const hsms = [new SoftHsm(generateSoftHsmKey()), new SoftHsm(generateSoftHsmKey())];
  Object.defineProperty(hsms[1], 'name', { value: 'hsm:test:second' });
  let store: Store = new SqliteStore(dir);
  let { root, barrier, kms } = await open(store, hsms);
  await kms.createEnclave(ROOT, 'e');
  for (let i = 0; i < 1200; i++) await kms.createKey(ROOT, 'e', `k-${String(i).padStart(4, '0')}`, i % 2 ? 'ChaCha20' : 'AES256', false);
  const cts = Array.from({ length: 1200 }, (_, i) =>
    kms.encrypt('e', `k-${String(i).padStart(4, '0')}`, 0, Buffer.from(`secret ${i}`), Buffer.alloc(0)),
  );
  const oldRek = root.rek;

  // Interrupted after the first batch: the "process" dies here.
  await assert.rejects(
    rotateRoot(store, hsms, root, barrier, (p) => {
      if (p.done >= 500) throw new Error('power cut');
    }),
    /power cut/,
  );
  assert.deepEqual([...(await terms(store))].sort(), [1, 2], 'half of the values are under the new term');
  await store.close();

  // "Restart": both generations open, the state is whole, and the rotation finishes.
  store = new SqliteStore(dir);
  ({ root, barrier, kms } = await open(store, hsms));
  assert.equal(root.term, 1);
  assert.equal(root.next?.term, 2);
  const seen: number[] = [];
  root = await kms.exclusive(async () => {
    const r = await rotateRoot(store, hsms, root, barrier, (p) => seen.push(p.done), 400);
    await kms.reload();
    return r;
  });
  assert.equal(root.term, 2);
  assert.ok(!root.rek.equals(oldRek));
  assert.ok(seen.at(-1)! <= 1200 && seen.length >= 2, 'progress reported per batch');
  assert.deepEqual([...(await terms(store))], [2]);
  assert.equal(await store.get(ROTATION_KEY), undefined);
  assert.deepEqual(await store.range(REK_NEXT_PREFIX), []);
  assert.equal((await store.range(REK_PREFIX)).length, 2);

  // Writes after the rotation work (revisions were reloaded), and old ciphertexts decrypt.
  await kms.createKey(ROOT, 'e', 'after', '', false);
  await store.close();
  store = new SqliteStore(dir);
  ({ root, kms } = await open(store, [hsms[1]!]));
  assert.equal(root.term, 2);
  cts.forEach((c, i) =>
    assert.equal(kms.decrypt('e', `k-${String(i).padStart(4, '0')}`, c.version, c.ciphertext, Buffer.alloc(0)).toString(), `secret ${i}`),
  );
  kms.keyStatus('e', 'after', 0);
  await store.close();
});
