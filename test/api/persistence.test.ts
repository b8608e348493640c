/**
 * Durability and integrity of the embedded store, with real server processes: state survives
 * restarts and `kill -9` in the middle of writes (every acknowledged write is still there), a
 * different HSM key cannot open the data directory, and records moved or swapped on disk are
 * detected.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { newHsmKey, removeDir, startServer, tempDir } from '../helpers/server.js';
import { assertSealed, clientFor, newUser } from '../helpers/clients.js';
import { SQLITE_FILE } from '../../src/store/sqlite.js';
import { waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
after(() => dirs.forEach(removeDir));

function dataDir(): string {
  const d = tempDir();
  dirs.push(d);
  return join(d, 'data');
}

test('state survives a restart: enclaves, keys, versions, policies, identities', async () => {
  const dir = dataDir();
  const hsmKey = newHsmKey();
  let s = await startServer({ dir, hsmKey });
  let root = clientFor(s, s.apiKey);
  const user = newUser(s);
  await root.createEnclave('e');
  await root.createKey('e', { name: 'k', type: 'ChaCha20' });
  await root.createKey('e', { name: 'k', addVersion: true });
  await root.createPolicy('e', { name: 'p', allow: { 'KEY:GENERATE': { rules: { 'k*': {} } } } });
  await root.createIdentity('e', { identity: user.identity, tags: { team: 'storage' } });
  await root.assignPolicy('e', user.identity, 'p');
  const [dek] = await root.generateKey('e', [{ name: 'k', version: 1, associatedData: Buffer.from('ctx') }]);
  const apiKey = s.apiKey;
  root.close();
  user.client.close();
  await s.stop();

  s = await startServer({ dir, hsmKey });
  assert.equal(s.apiKey, apiKey, 'the root API key is derived from the HSM key and stays the same');
  root = clientFor(s, s.apiKey);
  const [v1] = await root.keyStatus('e', [{ name: 'k', version: 1 }]);
  assert.equal(v1!.type, 'ChaCha20');
  assert.equal((await root.keyStatus('e', [{ name: 'k' }]))[0]!.version, 2);
  const [plain] = await root.decrypt('e', [{ name: 'k', version: 1, ciphertext: dek!.ciphertext, associatedData: Buffer.from('ctx') }]);
  assert.ok(plain!.plaintext.equals(dek!.plaintext));
  const [id] = await root.getIdentity('e', [user.identity]);
  assert.equal(id!.policy, 'p');
  assert.deepEqual(id!.tags, { team: 'storage' });
  const userClient = clientFor(s, user.apiKey);
  await userClient.generateKey('e', [{ name: 'k' }]);
  userClient.close();
  root.close();
  await s.stop();
});

test('kill -9 during writes: every acknowledged write survives', async () => {
  const dir = dataDir();
  const hsmKey = newHsmKey();
  let s = await startServer({ dir, hsmKey });
  const root = clientFor(s, s.apiKey);
  await root.createEnclave('e');
  const acknowledged: string[] = [];
  let stop = false;
  const writer = async (w: number) => {
    for (let i = 0; !stop && i < 10_000; i++) {
      const name = `k-${w}-${i}`;
      try {
        await root.createKey('e', { name });
        acknowledged.push(name);
      } catch {
        return; // the server is gone
      }
    }
  };
  const writers = [0, 1, 2, 3, 4, 5, 6, 7].map(writer);
  await waitFor('200 acknowledged writes', () => acknowledged.length >= 200, 60_000, 5);
  await s.kill();
  stop = true;
  await Promise.all(writers);
  root.close();

  s = await startServer({ dir, hsmKey });
  const after = clientFor(s, s.apiKey);
  const names = new Set<string>();
  let continueAt = '';
  do {
    const page = await after.listKeys('e', { continueAt, limit: 1000 });
    page.keys.forEach((k) => names.add(k.name));
    continueAt = page.continueAt;
  } while (continueAt !== '');
  const lost = acknowledged.filter((n) => !names.has(n));
  assert.deepEqual(lost, [], `${lost.length} of ${acknowledged.length} acknowledged writes were lost`);
  // Every key that exists (acknowledged or not) is whole and usable.
  const sample = [...names].slice(0, 50).map((name) => ({ name }));
  assert.equal((await after.generateKey('e', sample)).length, sample.length);
  after.close();
  await s.stop();
});

test('a different HSM key cannot open the data directory: the node stays up, sealed, and says so', async () => {
  const dir = dataDir();
  const s = await startServer({ dir, hsmKey: newHsmKey() });
  await s.stop();
  const wrong = await startServer({ dir, hsmKey: newHsmKey(), allowSealed: true });
  await assertSealed(
    wrong,
    /cannot unseal the root encryption key \(is MINIO_KMS_HSM_KEY the key this data directory was created with\?\)/,
  );
  await wrong.stop();
});

for (const tamper of ['swap two records', 'move a record to another name', 'flip one byte'] as const) {
  test(`tampering on disk is detected: ${tamper}`, async () => {
    const dir = dataDir();
    const hsmKey = newHsmKey();
    const s = await startServer({ dir, hsmKey });
    const root = clientFor(s, s.apiKey);
    await root.createEnclave('e');
    await root.createKey('e', { name: 'a' });
    await root.createKey('e', { name: 'b' });
    root.close();
    await s.stop();

    const db = new Database(join(dir, SQLITE_FILE));
    const get = (k: string) => (db.prepare('SELECT v FROM kv WHERE k = ?').get(k) as { v: Buffer }).v;
    const put = db.prepare('UPDATE kv SET v = ? WHERE k = ?');
    const a = get('key/e/a');
    const b = get('key/e/b');
    if (tamper === 'swap two records') {
      put.run(b, 'key/e/a');
      put.run(a, 'key/e/b');
    } else if (tamper === 'move a record to another name') {
      db.prepare('DELETE FROM kv WHERE k = ?').run('key/e/b');
      db.prepare('UPDATE kv SET k = ? WHERE k = ?').run('key/e/b', 'key/e/a');
    } else {
      a[a.length - 20]! ^= 0x01;
      put.run(a, 'key/e/a');
    }
    db.close();

    const sealed = await startServer({ dir, hsmKey, allowSealed: true });
    await assertSealed(sealed, /integrity check failed for record key\/e\/[ab]/);
    await sealed.stop();
  });
}
