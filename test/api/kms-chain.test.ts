/**
 * The KMS chain: a cluster KMS whose root key is sealed by a key on a second, independent KMS
 * (`hsm.minio.minkms`). Real server processes on 127.0.0.1, as an operator would run them.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { newHsmKey, removeDir, startServer, tempDir, type TestServer, freePort } from '../helpers/server.js';
import { assertSealed, clientFor, newUser, rejectsWith } from '../helpers/clients.js';
import { eventually, waitFor } from '../helpers/wait.js';
import { SQLITE_FILE } from '../../src/store/sqlite.js';
import type { KmsClient } from '../../src/client/client.js';

const dirs: string[] = [];
const running = new Set<TestServer>();
after(async () => {
  for (const s of running) await s.kill();
  dirs.forEach(removeDir);
});

function dataDir(): string {
  const d = tempDir('minkms-chain-');
  dirs.push(d);
  return join(d, 'data');
}

async function start(opts: Parameters<typeof startServer>[0]): Promise<TestServer> {
  const s = await startServer(opts);
  running.add(s);
  return s;
}

async function stop(s: TestServer): Promise<void> {
  await s.stop();
  running.delete(s);
}

interface External {
  host: string;
  caFile: string;
  enclave: string;
  key: string;
  apiKey: string;
}

function chainConfig(ext: External, servers: string[] = [ext.host]): string {
  return `version: v1
hsm:
  minio:
    minkms:
      server: [${servers.join(', ')}]
      enclave: ${ext.enclave}
      key: ${ext.key}
      auth:
        key: ${ext.apiKey}
      tls:
        ca: ${ext.caFile}
`;
}

/** Sets up an enclave, a key and a least-privilege User on `ext` for a cluster KMS to seal with. */
async function provision(
  ext: TestServer,
  enclave = 'aistor-key-manager',
  key = 'aistor-key-manager-hsm',
): Promise<External & { user: string }> {
  const root = clientFor(ext, ext.apiKey);
  await root.createEnclave(enclave);
  await root.createKey(enclave, { name: key });
  const rules = { rules: { [key]: {} } };
  await root.createPolicy(enclave, { name: 'kms-chain', allow: { 'KEY:ENCRYPT': rules, 'KEY:DECRYPT': rules, 'KEY:MAC': rules } });
  const user = newUser(ext);
  await root.createIdentity(enclave, { identity: user.identity });
  await root.assignPolicy(enclave, user.identity, 'kms-chain');
  root.close();
  user.client.close();
  return { host: ext.host, caFile: ext.caFile, enclave, key, apiKey: user.apiKey, user: user.identity };
}

async function waitReady(c: KmsClient, timeoutMs = 20_000): Promise<void> {
  await eventually('readiness', () => c.ready(), timeoutMs, 200);
}

function sealedEntries(dir: string): Array<{ hsm: string; version: number }> {
  const db = new Database(join(dir, SQLITE_FILE), { readonly: true });
  const rows = db.prepare(`SELECT k, v FROM kv WHERE k LIKE 'rek/%' ORDER BY k`).all() as Array<{ k: string; v: Buffer }>;
  db.close();
  return rows.map((r) => {
    const entry = JSON.parse(r.v.toString()) as { hsm: string; blob: string };
    const blob = Buffer.from(entry.blob, 'base64');
    return { hsm: entry.hsm, version: entry.hsm.startsWith('hsm:minio:minkms:') ? blob.readUInt32BE(1) : 0 };
  });
}

const EXT_HSM = 'hsm:minio:minkms:aistor-key-manager/aistor-key-manager-hsm';

describe('KMS chain', () => {
  test('the seed procedure in its own order: config edit → remove the soft key → one restart; old key retired, soft key alone no longer opens', async () => {
    const external = await start({ port: await freePort() });
    const dir = dataDir();
    const softKey = newHsmKey();
    // Installed with a configuration file (as under systemd) and the soft key in the environment.
    let cluster = await start({ dir, hsmKey: softKey, config: 'version: v1\n', port: await freePort() });
    const configFile = cluster.configFile!;
    const oldRoot = cluster.apiKey;
    let root = clientFor(cluster, oldRoot);
    await root.createEnclave('minio');
    await root.createKey('minio', { name: 'sse' });
    const deks = await root.generateKey(
      'minio',
      Array.from({ length: 20 }, (_, i) => ({ name: 'sse', associatedData: Buffer.from(`object-${i}`) })),
    );

    // Steps 1–2: enclave, identity and key on the external KMS (least privilege: a User).
    const ext = await provision(external);
    // Step 3: add hsm.minio.minkms to the configuration file. The running node notices and
    // seals the root key for the external KMS while it runs.
    writeFileSync(configFile, readFileSync(configFile, 'utf8') + chainConfig(ext).replace(/^version: v1\n/, ''));
    const status = await waitFor('the entry of the external HSM', async () => {
      const [s] = [...(await root.clusterStatus()).nodesUp.values()];
      return s!.hsms.includes(EXT_HSM) ? s : undefined;
    });
    assert.deepEqual(status!.configuredHsms, ['hsm:minio:soft', EXT_HSM]);
    assert.deepEqual(status!.pendingHsms, {});
    root.close();

    // Step 4: remove MINIO_KMS_HSM_KEY. Step 5: one restart.
    await stop(cluster);
    cluster = await start({ dir, hsmKey: null, config: readFileSync(configFile, 'utf8'), configFile, port: cluster.port });
    // The soft entry is gone (no node has the soft HSM configured), and with it the root API
    // key derived from it: the new one, derived from the external HSM, is printed.
    const newRoot = await waitFor(
      'the new root API key',
      () =>
        /API Key\s+(k1:\S+)\s+\(the new root API key: the HSM the previous one was derived from, hsm:minio:soft, was removed\)/.exec(
          cluster.output(),
        )?.[1],
    );
    assert.notEqual(newRoot, oldRoot);
    root = clientFor(cluster, newRoot);
    const [after] = [...(await root.clusterStatus()).nodesUp.values()];
    assert.deepEqual(after!.hsms, [EXT_HSM]);
    assert.equal(after!.rootIdentitySource, EXT_HSM);
    const plain = await root.decrypt(
      'minio',
      deks.map((d, i) => ({ name: 'sse', version: d.version, ciphertext: d.ciphertext, associatedData: Buffer.from(`object-${i}`) })),
    );
    plain.forEach((p, i) => assert.ok(p.plaintext.equals(deks[i]!.plaintext), `DEK ${i}`));
    await rejectsWith(root.removeHsm(EXT_HSM), 'ERR_HSM_LAST');
    root.close();
    // The old root API key is refused with a reason, not a bare permission error.
    const old = clientFor(cluster, oldRoot);
    await rejectsWith(old.clusterStatus(), 'ERR_ROOT_KEY_RETIRED');
    old.close();

    // The next restart keeps the same root identity.
    await stop(cluster);
    cluster = await start({ dir, hsmKey: null, config: readFileSync(configFile, 'utf8'), configFile, port: cluster.port });
    assert.equal(cluster.apiKey, newRoot);
    await stop(cluster);

    // The old soft key alone cannot open the database any more: the node stays up, sealed.
    const alone = await start({ dir, hsmKey: softKey, allowSealed: true });
    await assertSealed(alone, /no configured HSM has a sealed root key entry/);
    await stop(alone);
    await stop(external);
  });

  test('external KMS down at start: sealed and 503, then unsealed by itself when it returns', async () => {
    const extDir = dataDir();
    const extKey = newHsmKey();
    let external = await start({ dir: extDir, hsmKey: extKey, port: await freePort() });
    const ext = await provision(external);
    const dir = dataDir();
    let cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: await freePort() });
    let root = clientFor(cluster, cluster.apiKey);
    await root.createEnclave('e');
    root.close();
    const apiKey = cluster.apiKey;
    await stop(cluster);
    await stop(external);

    cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: cluster.port, allowSealed: true });
    root = clientFor(cluster, apiKey);
    await assert.rejects(root.ready(), (err: { status?: number }) => err.status === 503);
    await rejectsWith(root.listEnclaves(), 'ERR_SEALED');
    assert.match(cluster.output(), /cannot reach the external KMS/);

    external = await start({ dir: extDir, hsmKey: extKey, port: external.port });
    const t0 = Date.now();
    await waitReady(root);
    assert.ok(Date.now() - t0 < 10_000, 'unsealed within seconds');
    assert.deepEqual(
      (await root.listEnclaves()).enclaves.map((e) => e.name),
      ['e'],
    );

    // Once unsealed, the external KMS going away does not affect the data plane.
    await stop(external);
    await root.createKey('e', { name: 'k' });
    const [dek] = await root.generateKey('e', [{ name: 'k' }]);
    const [back] = await root.decrypt('e', [{ name: 'k', version: dek!.version, ciphertext: dek!.ciphertext }]);
    assert.ok(back!.plaintext.equals(dek!.plaintext));
    root.close();
    await stop(cluster);
  });

  test('revoked external identity: sealed with a message that says so, and nothing recoverable from the data directory', async () => {
    const external = await start({ port: await freePort() });
    const ext = await provision(external);
    const dir = dataDir();
    let cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: await freePort() });
    const root = clientFor(cluster, cluster.apiKey);
    await root.createEnclave('e');
    const material = Buffer.from('0123456789abcdef0123456789abcdef');
    await root.importKey('e', { name: 'imported', key: material });
    const [dek] = await root.generateKey('e', [{ name: 'imported' }]);
    root.close();
    await stop(cluster);

    const extRoot = clientFor(external, external.apiKey);
    await extRoot.deleteIdentity(ext.enclave, ext.user);
    extRoot.close();

    cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: cluster.port, allowSealed: true });
    assert.match(cluster.output(), /access denied .*revoked/);
    const probe = clientFor(cluster);
    await assert.rejects(probe.ready(), (err: { status?: number }) => err.status === 503);
    probe.close();
    await stop(cluster);

    // Everything on disk: no key material, no DEK, in any file or encoding.
    const files = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((f) => f.isFile());
    for (const f of files) {
      const bytes = readFileSync(join(f.parentPath ?? f.path, f.name));
      for (const secret of [material, dek!.plaintext]) {
        for (const form of [secret, Buffer.from(secret.toString('base64')), Buffer.from(secret.toString('hex'))]) {
          assert.equal(bytes.indexOf(form), -1, `${f.name} contains key bytes`);
        }
      }
    }
    await stop(external);
  });

  test('failover: the first listed external server is down, the second serves', async () => {
    const external = await start({ port: await freePort() });
    const ext = await provision(external);
    const dead = `127.0.0.1:${await freePort()}`;
    const cluster = await start({ dir: dataDir(), hsmKey: null, config: chainConfig(ext, [dead, ext.host]), port: await freePort() });
    const root = clientFor(cluster, cluster.apiKey);
    await root.createEnclave('e');
    root.close();
    await stop(cluster);
    await stop(external);
  });

  test('rotation of the external key: the entry is resealed under the latest version on the next start', async () => {
    const external = await start({ port: await freePort() });
    const ext = await provision(external);
    const dir = dataDir();
    let cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: await freePort() });
    await stop(cluster);
    assert.deepEqual(sealedEntries(dir), [{ hsm: EXT_HSM, version: 1 }]);
    const extRoot = clientFor(external, external.apiKey);
    await extRoot.createKey(ext.enclave, { name: ext.key, addVersion: true });
    extRoot.close();
    cluster = await start({ dir, hsmKey: null, config: chainConfig(ext), port: cluster.port });
    await stop(cluster);
    assert.deepEqual(sealedEntries(dir), [{ hsm: EXT_HSM, version: 2 }]);
    await stop(external);
  });

  test('bad configuration: wrong enclave, key, API key or an untrusted server give a sealed node with a clear message', async () => {
    const external = await start({ port: await freePort() });
    const ext = await provision(external);
    const stranger = newUser(external);
    stranger.client.close();
    const cases: Array<[string, string, RegExp]> = [
      // A least-privilege identity cannot tell a missing key from a forbidden one: the message names both.
      ['wrong key', chainConfig({ ...ext, key: 'no-such-key' }), /key 'no-such-key' in enclave 'aistor-key-manager'/],
      ['wrong enclave', chainConfig({ ...ext, enclave: 'no-such-enclave' }), /access denied|enclave 'no-such-enclave' does not exist/],
      ['unknown API key', chainConfig({ ...ext, apiKey: stranger.apiKey }), /access denied/],
      ['untrusted server', chainConfig(ext).replace(/\n\s+tls:\n\s+ca: .*\n/, '\n'), /TLS certificate/],
    ];
    for (const [name, config, message] of cases) {
      const s = await start({ dir: dataDir(), hsmKey: null, config, port: await freePort(), allowSealed: true });
      assert.match(s.output(), message, name);
      assert.equal(s.process.exitCode, null, `${name}: the server keeps running (sealed)`);
      await stop(s);
    }
    await stop(external);
  });

  test('a chain of depth three (A sealed by B, B by C, C by a soft key) converges from any start order', async () => {
    const cDir = dataDir();
    const cKey = newHsmKey();
    let c = await start({ dir: cDir, hsmKey: cKey, port: await freePort() });
    const forB = await provision(c, 'b', 'b-hsm');
    const bDir = dataDir();
    let b = await start({ dir: bDir, hsmKey: null, config: chainConfig(forB), port: await freePort() });
    const forA = await provision(b, 'a', 'a-hsm');
    const aDir = dataDir();
    let a = await start({ dir: aDir, hsmKey: null, config: chainConfig(forA), port: await freePort() });
    const aKey = a.apiKey;
    await Promise.all([stop(a), stop(b), stop(c)]);

    // Worst order: the top of the chain first.
    a = await start({ dir: aDir, hsmKey: null, config: chainConfig(forA), port: a.port, allowSealed: true });
    b = await start({ dir: bDir, hsmKey: null, config: chainConfig(forB), port: b.port, allowSealed: true });
    c = await start({ dir: cDir, hsmKey: cKey, port: c.port });
    const client = clientFor(a, aKey);
    await waitReady(client, 30_000);
    await client.createEnclave('works');
    client.close();
    await Promise.all([stop(a), stop(b), stop(c)]);
  });

  test('a cycle (A sealed by B and B by A) leaves both sealed with a clear message, not crashed', async () => {
    const bKey = newHsmKey();
    const bDir = dataDir();
    let b = await start({ dir: bDir, hsmKey: bKey, port: await freePort() });
    const forA = await provision(b, 'a', 'a-hsm');
    const aDir = dataDir();
    const aSoft = newHsmKey();
    let a = await start({ dir: aDir, hsmKey: aSoft, config: chainConfig(forA), port: await freePort() });
    const forB = await provision(a, 'b', 'b-hsm');
    await stop(b);
    // B keeps the certificate A trusts (its generated one) now that it has a configuration file.
    const bTls = `tls:\n  certs:\n    - key: ${join(bDir, 'certs', 'private.key')}\n      cert: ${join(bDir, 'certs', 'public.crt')}\n`;
    b = await start({ dir: bDir, hsmKey: bKey, config: chainConfig(forB) + bTls, port: b.port });
    // Each has sealed its root key for the other: only then may the soft entries go.
    for (const s of [a, b]) {
      const c = clientFor(s, s.apiKey);
      await waitFor('both entries', async () => [...(await c.clusterStatus()).nodesUp.values()][0]!.hsms.length === 2);
      c.close();
    }
    // Both drop their soft keys.
    for (const [s, soft] of [
      [a, aSoft],
      [b, bKey],
    ] as const) {
      const c = clientFor(s, s.apiKey);
      await c.removeHsm('hsm:minio:soft');
      c.close();
      void soft;
    }
    await Promise.all([stop(a), stop(b)]);
    a = await start({ dir: aDir, hsmKey: null, config: chainConfig(forA), port: a.port, allowSealed: true });
    b = await start({ dir: bDir, hsmKey: null, config: chainConfig(forB) + bTls, port: b.port, allowSealed: true });
    for (const s of [a, b]) {
      await waitFor('the sealed banner', () => /=> Server is sealed: /.test(s.output()));
      assert.equal(s.process.exitCode, null);
      assert.match(s.output(), /sealed/);
      const probe = clientFor(s);
      await assert.rejects(probe.ready(), (err: { status?: number }) => err.status === 503);
      probe.close();
    }
    assert.match(a.output() + b.output(), /is sealed itself|cannot reach/);
    await Promise.all([stop(a), stop(b)]);
  });
});
