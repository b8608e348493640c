/**
 * Backup and restore over the API (GET/PUT /v1/db): backup → wipe → restore → every old
 * ciphertext decrypts; foreign, corrupt or truncated backups are refused and leave the node as
 * it was.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { newHsmKey, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor, newUser, rejectsWith } from '../helpers/clients.js';

const dirs: string[] = [];
const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  dirs.forEach(removeDir);
});

async function start(hsmKey: string, dir?: string): Promise<TestServer> {
  if (!dir) {
    const d = tempDir();
    dirs.push(d);
    dir = join(d, 'data');
  }
  const s = await startServer({ dir, hsmKey });
  servers.push(s);
  return s;
}

test('backup → wipe → restore on a fresh node with the same HSM → every ciphertext decrypts', async () => {
  const hsmKey = newHsmKey();
  const a = await start(hsmKey);
  const rootA = clientFor(a, a.apiKey);
  await rootA.createEnclave('minio');
  await rootA.createKey('minio', { name: 'k' });
  await rootA.createKey('minio', { name: 'k', addVersion: true });
  const user = newUser(a);
  await rootA.createIdentity('minio', { identity: user.identity, privilege: 'Admin' });
  const deks = await rootA.generateKey(
    'minio',
    Array.from({ length: 50 }, (_, i) => ({ name: 'k', version: 1 + (i % 2), associatedData: Buffer.from(`o${i}`) })),
  );
  const snapshot = await rootA.readDb();
  assert.ok(snapshot.length > 0);
  for (const dek of deks) assert.equal(snapshot.indexOf(dek.plaintext), -1, 'no plaintext in a backup');
  rootA.close();
  user.client.close();

  const b = await start(hsmKey);
  const rootB = clientFor(b, b.apiKey);
  await rootB.createEnclave('will-be-replaced');
  await rejectsWith(clientFor(b, user.apiKey).writeDb(snapshot), 'ERR_NOT_ALLOWED');
  await rootB.writeDb(snapshot, b.host);
  assert.deepEqual(
    (await rootB.listEnclaves()).enclaves.map((e) => e.name),
    ['minio'],
  );
  const plain = await rootB.decrypt(
    'minio',
    deks.map((d, i) => ({ name: 'k', version: d.version, ciphertext: d.ciphertext, associatedData: Buffer.from(`o${i}`) })),
  );
  plain.forEach((p, i) => assert.ok(p.plaintext.equals(deks[i]!.plaintext)));
  const admin = clientFor(b, user.apiKey);
  await admin.createKey('minio', { name: 'after-restore' });
  admin.close();
  rootB.close();

  // The restored state is durable.
  await b.stop();
  servers.splice(servers.indexOf(b), 1);
  const b2 = await start(hsmKey, b.dir);
  const rootB2 = clientFor(b2, b2.apiKey);
  assert.deepEqual(
    (await rootB2.listKeys('minio')).keys.map((k) => k.name),
    ['after-restore', 'k'],
  );
  rootB2.close();
});

test('a foreign, corrupt or truncated backup is refused and the node stays as it was', async () => {
  const a = await start(newHsmKey());
  const rootA = clientFor(a, a.apiKey);
  await rootA.createEnclave('a-data');
  const snapshot = await rootA.readDb();
  rootA.close();

  const c = await start(newHsmKey());
  const rootC = clientFor(c, c.apiKey);
  await rootC.createEnclave('c-data');
  const flipped = Buffer.from(snapshot);
  flipped[flipped.length >> 1]! ^= 1;
  const cases: Array<[string, Buffer, RegExp]> = [
    ['foreign HSM', snapshot, /this node cannot open it/],
    ['flipped byte', flipped, /checksum mismatch/],
    ['truncated', snapshot.subarray(0, snapshot.length - 100), /checksum mismatch|truncated/],
    ['not a backup', Buffer.from('hello world, this is no backup at all, just text'), /not a minkms backup/],
  ];
  for (const [name, body, message] of cases) {
    await assert.rejects(rootC.writeDb(body, c.host), (err: { status?: number; message?: string }) => {
      assert.equal(err.status, 400, name);
      assert.match(err.message ?? '', message, name);
      return true;
    });
    assert.deepEqual(
      (await rootC.listEnclaves()).enclaves.map((e) => e.name),
      ['c-data'],
      `${name}: state unchanged`,
    );
  }
  rootC.close();
});
