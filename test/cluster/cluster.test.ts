/**
 * Clustering on etcd with real processes on 127.0.0.1: three etcd members and three KMS nodes
 * sharing one namespace. Writes need an etcd majority (not every KMS node); reads are served
 * from each node's memory; faults are injected by killing processes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createSelfSignedServerCertificate } from '../../src/identity/client-cert.js';
import { join } from 'node:path';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { newHsmKey, removeDir, startServer, tempDir, REPO_ROOT, type TestServer, freePort } from '../helpers/server.js';
import { rejectsWith } from '../helpers/clients.js';
import { eventually } from '../helpers/wait.js';
import { KmsClient } from '../../src/client/client.js';
import { KmsError } from '../../src/errors.js';

const ENCLAVE = 'cluster';
let etcd: EtcdCluster;
let work: string;
const hsmKey = newHsmKey();
const ports: number[] = [];
const nodes: Array<TestServer | undefined> = [];
let ca: string[] = [];
let apiKey = '';
/** Every key whose creation was acknowledged, through every fault. */
const acknowledged = new Set<string>();

function config(): string {
  return `version: v1
heartbeat: 500ms
tls:
  certs:
    - key: ${join(work, 'tls/private.key')}
      cert: ${join(work, 'tls/public.crt')}
store:
  backend: etcd
  etcd:
    endpoints: [${etcd.endpoints.join(', ')}]
    prefix: /minkms-test/
    timeout: 5s
`;
}

async function startNode(i: number): Promise<TestServer> {
  const s = await startServer({
    dir: join(work, `node${i}`),
    hsmKey,
    config: config(),
    port: ports[i],
    args: ['--host', `127.0.0.1:${ports[i]}`],
  });
  nodes[i] = s;
  return s;
}

/** A client of one node, or (no index) of every node, with failover. */
function client(i?: number): KmsClient {
  const endpoints = i === undefined ? ports.map((p) => `127.0.0.1:${p}`) : [`127.0.0.1:${ports[i]}`];
  return new KmsClient({ endpoints, apiKey, ca, timeoutMs: 10_000 });
}

async function create(c: KmsClient, name: string): Promise<void> {
  await c.createKey(ENCLAVE, { name });
  acknowledged.add(name);
}

async function allKeys(c: KmsClient): Promise<Set<string>> {
  const names = new Set<string>();
  for await (const k of KmsClient.pages((at) =>
    c.listKeys(ENCLAVE, { continueAt: at }).then((p) => ({ items: p.keys, continueAt: p.continueAt })),
  ))
    names.add(k.name);
  return names;
}

before(async () => {
  work = tempDir('minkms-cluster-');
  // One certificate for every node, as a deployment would have (a cluster certificate).
  const tls = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1'], days: 30 });
  mkdirSync(join(work, 'tls'));
  writeFileSync(join(work, 'tls/private.key'), tls.key);
  writeFileSync(join(work, 'tls/public.crt'), tls.cert);
  ca = [tls.cert];
  etcd = await startEtcdCluster();
  for (let i = 0; i < 3; i++) ports.push(await freePort());
  // The first node initializes the cluster; the others join it.
  await startNode(0);
  await Promise.all([startNode(1), startNode(2)]);
  writeFileSync(join(work, 'ca.pem'), ca.join(''));
  apiKey = nodes[0]!.apiKey;
  assert.ok(
    nodes.every((n) => n!.apiKey === apiKey),
    'every node derives the same root API key from the shared HSM key',
  );
  const c = client(0);
  await c.createEnclave(ENCLAVE);
  c.close();
});

after(async () => {
  for (const n of nodes) await n?.kill();
  await etcd?.close();
  if (work) removeDir(work);
});

describe('a three-node KMS cluster on a three-member etcd cluster', () => {
  test('status shows three nodes up, one leader, and the HSM entries', async () => {
    const c = client(1);
    const st = await eventually('three nodes up', async () => {
      const s = await c.clusterStatus();
      assert.equal(s.nodesUp.size, 3);
      return s;
    });
    const roles = [...st.nodesUp.values()].map((n) => n.role).sort();
    assert.deepEqual(roles, ['Follower', 'Follower', 'Leader']);
    for (const n of st.nodesUp.values()) {
      assert.deepEqual(n.hsms, ['hsm:minio:soft']);
      assert.equal(n.nodes.size, 3);
    }
    c.close();
  });

  test('a key created on node 1 is usable on nodes 2 and 3 (and the delay is measured)', async () => {
    const [c0, c1, c2] = [client(0), client(1), client(2)];
    const delays: number[] = [];
    for (let i = 0; i < 20; i++) {
      const name = `visible-${i}`;
      await create(c0, name);
      const t0 = process.hrtime.bigint();
      for (const c of [c1, c2]) {
        for (;;) {
          try {
            await c.generateKey(ENCLAVE, [{ name }]);
            break;
          } catch (err) {
            if (!(err instanceof KmsError) || err.code !== 'ERR_KEY_NOT_FOUND') throw err;
            assert.ok(process.hrtime.bigint() - t0 < 5_000_000_000n, `${name} not visible on another node within 5 s`);
          }
        }
      }
      delays.push(Number(process.hrtime.bigint() - t0) / 1e6);
      // Read-your-writes on the writing node: its next read sees the key at once.
      await c0.keyStatus(ENCLAVE, [{ name }]);
    }
    delays.sort((a, b) => a - b);
    console.log(
      `# staleness after another node's write: median ${delays[10]!.toFixed(1)} ms, max ${delays.at(-1)!.toFixed(1)} ms (20 keys, 2 readers)`,
    );
    [c0, c1, c2].forEach((c) => c.close());
  });

  test('N concurrent creates of the same key across nodes: exactly one succeeds', async () => {
    const clients = [client(0), client(1), client(2)];
    for (let round = 0; round < 5; round++) {
      const name = `race-${round}`;
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => clients[i % 3]!.createKey(ENCLAVE, { name })));
      const ok = results.filter((r) => r.status === 'fulfilled').length;
      assert.equal(ok, 1, `round ${round}: ${ok} creates succeeded`);
      for (const r of results) {
        if (r.status === 'rejected') assert.equal((r.reason as KmsError).code, 'ERR_KEY_EXISTS', String(r.reason));
      }
      acknowledged.add(name);
    }
    clients.forEach((c) => c.close());
  });

  test('one etcd member down: writes go on; two down: writes fail fast with 503 and reads go on; back: converge', async () => {
    const c = client(0);
    const other = client(2);
    await create(c, 'before-faults');
    const [dek] = await c.generateKey(ENCLAVE, [{ name: 'before-faults' }]);

    await etcd.kill(2);
    try {
      for (let i = 0; i < 5; i++) await create(c, `one-down-${i}`);
      await c.ready({ write: true });

      await etcd.kill(1);
      const t0 = Date.now();
      // 503 either way: "no write quorum" (not applied), or "outcome unknown" when an attempt
      // reached the member as it died (it may be applied once the quorum is back).
      await assert.rejects(c.createKey(ENCLAVE, { name: 'no-quorum' }), (err: unknown) => {
        assert.ok(err instanceof KmsError, String(err));
        assert.ok(['ERR_STORE_UNAVAILABLE', 'ERR_STORE_OUTCOME_UNKNOWN'].includes(err.code), `got ${err.code}`);
        return true;
      });
      assert.ok(Date.now() - t0 < 10_000, 'a write without quorum fails within seconds');
      await assert.rejects(c.ready({ write: true }), (err: { status?: number }) => err.status === 503);
      await c.ready();
      // Reads are served from memory on every node.
      for (const r of [c, other]) {
        const [back] = await r.decrypt(ENCLAVE, [{ name: 'before-faults', version: dek!.version, ciphertext: dek!.ciphertext }]);
        assert.ok(back!.plaintext.equals(dek!.plaintext));
        await r.generateKey(ENCLAVE, [{ name: 'one-down-4' }]);
      }
    } finally {
      // Also when an assertion above failed: the tests after this one need the quorum back.
      for (const i of [1, 2]) if (!etcd.members[i]!.running) await etcd.restart(i);
    }
    await etcd.waitHealthy();
    await eventually('writes after recovery', () => create(c, 'after-recovery'));
    await eventually('other nodes converge', async () => {
      await other.keyStatus(ENCLAVE, [{ name: 'after-recovery' }]);
    });
    await c.ready({ write: true });
    c.close();
    other.close();
  });

  test('a KMS node killed: the TypeScript SDK and the official Go SDK, given all endpoints, carry on', async () => {
    const all = client();
    await create(all, 'failover');
    await nodes[0]!.kill();
    nodes[0] = undefined;
    for (let i = 0; i < 30; i++) {
      const [dek] = await all.generateKey(ENCLAVE, [{ name: 'failover', associatedData: Buffer.of(i) }]);
      const [back] = await all.decrypt(ENCLAVE, [
        { name: 'failover', version: dek!.version, ciphertext: dek!.ciphertext, associatedData: Buffer.of(i) },
      ]);
      assert.ok(back!.plaintext.equals(dek!.plaintext));
    }
    await create(all, 'written-while-node-0-is-down');
    // The dead node is listed as down once its lease expires.
    await eventually('node 0 reported down', async () => {
      const st = await all.clusterStatus();
      assert.equal(st.nodesUp.size, 2);
      assert.equal(st.nodesDown.size, 1);
    });

    const go = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn('go', ['test', '-count=1', '-v', '-run', '^TestClusterFailover$', './...'], {
        cwd: join(REPO_ROOT, 'test/interop'),
        env: {
          ...process.env,
          MINKMS_ENDPOINTS: ports.map((p) => `127.0.0.1:${p}`).join(','),
          MINKMS_API_KEY: apiKey,
          MINKMS_CA_FILE: join(work, 'ca.pem'),
          MINKMS_ENCLAVE: ENCLAVE,
          MINKMS_KEY: 'failover',
        },
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
    assert.equal(go.code, 0, go.out);

    // The node comes back and catches up with what was written while it was down.
    await startNode(0);
    const c0 = client(0);
    await c0.keyStatus(ENCLAVE, [{ name: 'written-while-node-0-is-down' }]);
    c0.close();
    all.close();
  });

  test('every acknowledged write is on every node', async () => {
    for (let i = 0; i < 3; i++) {
      const c = client(i);
      const names = await eventually(`node ${i} has every key`, async () => {
        const have = await allKeys(c);
        const missing = [...acknowledged].filter((n) => !have.has(n));
        assert.deepEqual(missing, []);
        return have;
      });
      assert.ok(names.size >= acknowledged.size);
      c.close();
    }
  });

  test('membership: add pre-registers a host, rm deregisters it, rm of a running node is refused', async () => {
    const c = client(1);
    await c.addNode('127.0.0.1:1');
    let st = await c.clusterStatus();
    assert.ok([...st.nodesDown.values()].includes('127.0.0.1:1'));
    await assert.rejects(c.removeNode(`127.0.0.1:${ports[2]}`), /is running/);
    await c.removeNode('127.0.0.1:1');
    st = await c.clusterStatus();
    assert.ok(![...st.nodesDown.values()].includes('127.0.0.1:1'));
    c.close();
  });

  test('rotate-root on one node: the others follow, keep serving, and accept writes', async () => {
    const c1 = client(1);
    const [dek] = await c1.generateKey(ENCLAVE, [{ name: 'failover' }]);
    const res = await c1.rotateRoot();
    assert.equal(res.term, 2);
    for (const i of [0, 2]) {
      const c = client(i);
      const [back] = await c.decrypt(ENCLAVE, [{ name: 'failover', version: dek!.version, ciphertext: dek!.ciphertext }]);
      assert.ok(back!.plaintext.equals(dek!.plaintext));
      await eventually(`node ${i} writes after the rotation`, () => create(c, `after-rotation-${i}`));
      c.close();
    }
    // A node started now opens the new generation only.
    await nodes[2]!.stop();
    await startNode(2);
    const c2 = client(2);
    await c2.keyStatus(ENCLAVE, [{ name: 'after-rotation-0' }]);
    c2.close();
    c1.close();
  });

  test('migration: a backup of a single node restored into the cluster is served by every node', async () => {
    const single = await startServer({ dir: join(work, 'single'), hsmKey });
    const s = new KmsClient({ endpoints: [single.host], apiKey, ca: single.caPem, timeoutMs: 10_000 });
    await s.createEnclave('migrated');
    await s.createKey('migrated', { name: 'old' });
    const deks = await s.generateKey(
      'migrated',
      Array.from({ length: 10 }, () => ({ name: 'old' })),
    );
    const snapshot = await s.readDb();
    s.close();
    await single.stop();

    const c1 = client(1);
    await c1.writeDb(snapshot, `127.0.0.1:${ports[1]}`);
    for (let i = 0; i < 3; i++) {
      const c = client(i);
      await eventually(`node ${i} serves the restored data`, async () => {
        const back = await c.decrypt(
          'migrated',
          deks.map((d) => ({ name: 'old', version: d.version, ciphertext: d.ciphertext })),
        );
        back.forEach((b, j) => assert.ok(b.plaintext.equals(deks[j]!.plaintext)));
      });
      c.close();
    }
    // The cluster's own state was replaced, as a restore does.
    await rejectsWith(c1.listKeys(ENCLAVE), 'ERR_ENCLAVE_NOT_FOUND');
    c1.close();
  });
});
