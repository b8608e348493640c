/**
 * The KMS chain on a 3-node cluster (3 etcd members, 3 KMS processes), done as MinIO's
 * procedure is written (/work/shared/seed: config edit on every node → MINIO_KMS_HSM_KEY
 * removed → restart) with a rolling restart, one node at a time. After every step: the root
 * identity is the same on every node (each node's own status, and the root API key tried on
 * every node), every acknowledged key is on every node and every data key decrypts there.
 *
 * The external KMS has a certificate from the deployment's private CA, which is only in the
 * nodes' `tls.ca` (no `tls` under `hsm.minio.minkms`, as in the seed). Then: an external KMS
 * the nodes do not trust is "pending" everywhere an operator looks, and the soft key cannot be
 * removed; a node started with no HSM that can open an entry is up and sealed, and unseals once
 * another node seals an entry for its HSM (`minkms add-hsm`).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Etcd3 } from 'etcd3';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { newHsmKey, removeDir, startServer, tempDir, freePort, type TestServer } from '../helpers/server.js';
import { Ledger } from '../helpers/invariants.js';
import { waitFor } from '../helpers/wait.js';
import {
  SOFT,
  cliHome,
  extHsmName,
  hsmSection,
  lastResortLines,
  makePki,
  minkms,
  provisionSeed,
  startChainCluster,
  startExternalKms,
  type ChainCluster,
  type ExternalKms,
  type Pki,
} from '../helpers/chain.js';
import { KmsError } from '../../src/errors.js';
import { generateApiKey, parseApiKey } from '../../src/identity/api-key.js';

const EXT = extHsmName();
let work: string;
let etcd: EtcdCluster;
let etcdClient: Etcd3;
let pki: Pki;
let external: ExternalKms;
/** A HOME whose ~/.minkms/certs/CAs trusts the deployment's CA (for the CLI). */
let home: string;
const clusters: ChainCluster[] = [];
const others: TestServer[] = [];

before(async () => {
  work = tempDir('minkms-chain-cluster-');
  pki = makePki(join(work, 'pki'));
  home = cliHome(join(work, 'home'), pki.caPem);
  etcd = await startEtcdCluster();
  etcdClient = new Etcd3({ hosts: etcd.endpoints });
  external = await startExternalKms(join(work, 'external'), pki);
});

after(async () => {
  // The nodes' logs stay in the temporary directory's parent for a look after a failure.
  for (const c of clusters) c.dump(join(tmpdir(), 'minkms-chain-cluster-logs'));
  for (const c of clusters) await c.close();
  for (const s of others) await s.kill();
  await external?.stop().catch(() => undefined);
  etcdClient?.close();
  await etcd?.close();
  if (work) removeDir(work);
});

/** The JSON log records of `output` whose message is `msg`. */
function records(output: string, msg: string): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The etcd revision of a sealed root key entry (0: none). */
async function entryRevision(prefix: string, hsm: string): Promise<number> {
  const res = await etcdClient.get(`${prefix}data/rek/${hsm}`).exec();
  return res.kvs[0] ? Number(res.kvs[0].mod_revision) : 0;
}

/**
 * The root identity, on every running node: each reports `identity` in its own status, and in
 * the status of every other node as one node's `minkms stat` shows them; every key of `valid`
 * is accepted on every node; every key of `retired` gets 403 "root API key no longer valid".
 */
async function checkRootIdentity(
  c: ChainCluster,
  step: string,
  identity: string,
  valid: readonly string[],
  retired: readonly string[] = [],
): Promise<void> {
  const running = c.nodes.flatMap((n, i) => (n ? [i] : []));
  await waitFor(
    `${step}: every node reports the root identity ${identity}`,
    async () => {
      for (const i of running) {
        const own = await c.ownStatus(i, valid[0]!);
        assert.equal(own.rootIdentity, identity, `${step}: node ${i}'s own status`);
        const all = c.client(i, valid[0]!);
        try {
          const st = await all.clusterStatus();
          for (const n of st.nodesUp.values())
            if (!n.sealed) assert.equal(n.rootIdentity, identity, `${step}: node ${n.host} as node ${i} lists it`);
        } finally {
          all.close();
        }
      }
      return true;
    },
    20_000,
    200,
  );
  for (const i of running) {
    for (const key of valid) {
      const k = c.client(i, key);
      try {
        await k.clusterStatus();
      } finally {
        k.close();
      }
    }
    for (const key of retired) {
      const k = c.client(i, key);
      try {
        await assert.rejects(k.clusterStatus(), (err: unknown) => {
          assert.ok(err instanceof KmsError && err.code === 'ERR_ROOT_KEY_RETIRED', `${step}: node ${i}: ${String(err)}`);
          assert.match(err.message, /root API key no longer valid: the HSM it was derived from \(hsm:minio:soft\) was removed/);
          return true;
        });
      } finally {
        k.close();
      }
    }
  }
}

/** Fails on any line of a node's output that the last-resort handlers wrote. */
function assertNoLastResort(c: ChainCluster): void {
  for (const [i, n] of c.nodes.entries()) {
    if (n) assert.deepEqual(lastResortLines(n.output()), [], `node ${i} hit the last-resort handler`);
  }
}

describe('the KMS chain on a three-node etcd cluster', () => {
  test('the seed as written (config edit on every node, MINIO_KMS_HSM_KEY removed, a rolling restart): sealed by the external KMS only; one root identity at every step', async (t) => {
    const softKey = newHsmKey();
    const c = await startChainCluster({ etcd, pki, work, prefix: '/chain-seed/', size: 3 });
    clusters.push(c);
    await c.start(0, { hsmKey: softKey });
    await Promise.all([c.start(1, { hsmKey: softKey }), c.start(2, { hsmKey: softKey })]);
    const oldRoot = c.nodes[0]!.apiKey;
    const oldIdentity = parseApiKey(oldRoot).identity;
    assert.ok(
      c.nodes.every((n) => n!.apiKey === oldRoot),
      'every node prints the same root API key',
    );

    // Data written before the change; data keys handed out.
    const ledger = new Ledger('minio');
    const root = c.client(undefined, oldRoot);
    await root.createEnclave('minio');
    for (let i = 0; i < 3; i++) assert.equal(await ledger.create(root, `sse-${i}`), undefined);
    for (let i = 0; i < 12; i++) await ledger.generate(root, `sse-${i % 3}`);
    const everyNode = () => c.ports.map((_, i) => c.client(i, oldRoot));
    await checkRootIdentity(c, 'installed', oldIdentity, [oldRoot]);

    // Steps 1 and 2 on the external KMS, with the seed's commands.
    const seed = await provisionSeed(external, home);
    t.diagnostic(`steps 1-2:\n${seed.transcript.replace(/k1:[\w-]{20,}/g, 'k1:…')}`);

    // Step 3: the seed's hsm.minio.minkms section (no tls: the CA is in the nodes' tls.ca) on every node, one at a time.
    let entryRev = 0;
    for (const i of [0, 1, 2]) {
      const t0 = Date.now();
      c.append(i, hsmSection([external.host], seed.apiKey));
      const own = await waitFor(
        `node ${i} has the external HSM configured, with an entry`,
        async () => {
          const s = await c.ownStatus(i, oldRoot);
          return s.configuredHsms.includes(EXT) && s.hsms.includes(EXT) ? s : undefined;
        },
        20_000,
        100,
      );
      assert.deepEqual(own.configuredHsms, [SOFT, EXT]);
      assert.deepEqual(own.pendingHsms, {}, `node ${i}: nothing pending`);
      const rev = await entryRevision(c.prefix, EXT);
      if (i === 0) {
        entryRev = rev;
        assert.equal(records(c.nodes[0]!.output(), 'sealed the root encryption key for a configured HSM').length, 1);
        t.diagnostic(`node 0 sealed the root key for ${EXT} ${Date.now() - t0} ms after its configuration file changed`);
      } else {
        // The entry node 0 sealed serves every node: nobody reseals it.
        assert.equal(rev, entryRev, `node ${i} rewrote the entry node 0 sealed`);
        assert.equal(records(c.nodes[i]!.output(), 'sealed the root encryption key for a configured HSM').length, 0);
        assert.equal(records(c.nodes[i]!.output(), 'the HSM configuration changed').length, 1);
      }
      // Every node follows the new entry through its change feed (milliseconds).
      for (const n of [0, 1, 2]) {
        await waitFor(`after the edit of node ${i}: node ${n} lists both entries`, async () => {
          const s = await c.ownStatus(n, oldRoot);
          return s.hsms.length === 2 && s.hsms.includes(EXT) && s.hsms.includes(SOFT);
        });
      }
      await checkRootIdentity(c, `step 3 on node ${i}`, oldIdentity, [oldRoot]);
    }
    await ledger.check(everyNode(), 'after step 3');

    // Steps 4 and 5: MINIO_KMS_HSM_KEY gone from each node's environment; restarted one at a time.
    const restartTimes: number[] = [];
    for (const i of [0, 1, 2]) {
      await c.stop(i);
      await checkRootIdentity(c, `node ${i} stopped`, oldIdentity, [oldRoot]);
      const t0 = Date.now();
      const s = await c.start(i, { hsmKey: null });
      restartTimes.push(Date.now() - t0);
      const unsealed = await waitFor(`node ${i} logs how it unsealed`, () => records(s.output(), 'unsealed')[0]);
      assert.equal(unsealed.hsm, EXT, `node ${i} unsealed through the external KMS`);
      if (i < 2) {
        // Other nodes still have the soft HSM configured: its entry stays, and so does the root identity.
        assert.deepEqual((await c.ownStatus(i, oldRoot)).hsms.slice().sort(), [EXT, SOFT].sort());
        await checkRootIdentity(c, `node ${i} restarted without MINIO_KMS_HSM_KEY`, oldIdentity, [oldRoot]);
        // This node cannot derive the root API key (it has not the soft HSM): it prints none, and says where it comes from.
        assert.match(s.output(), new RegExp(`Root\\s+${oldIdentity} \\(API key derived from hsm:minio:soft\\)`));
        assert.doesNotMatch(s.output(), /API Key/);
        await ledger.check(everyNode(), `after the restart of node ${i}`);
      }
      // After the last one, the old root key may be retired at any moment: checked below with the new one.
    }

    // No node has the soft HSM configured any more: its entry goes, and with it the root API key derived from it.
    const t0 = Date.now();
    await waitFor('the soft entry removed', async () => (await entryRevision(c.prefix, SOFT)) === 0, 30_000, 100);
    const removedAfter = Date.now() - t0;
    // Every node prints the new root API key: those that were running when the entry went with a note saying
    // why; a node that was still unsealing then reads the new identity from the store and prints it as the key.
    const newRoots = await waitFor(
      'every node prints the new root API key',
      () => {
        const keys = c.nodes.map((n) => [...n!.output().matchAll(/API Key\s+(k1:\S+)/g)].at(-1)?.[1]);
        return keys.every((k) => k !== undefined && k !== oldRoot) ? keys : undefined;
      },
      20_000,
    ).catch((err: Error) => {
      const lines = c.nodes.map(
        (n, i) =>
          `node ${i}: ${n!
            .output()
            .split('\n')
            .filter((l) => /API Key|root identity|Root /.test(l))
            .join('\n  ')}`,
      );
      throw new Error(`${err.message}\n${lines.join('\n')}`);
    });
    const noted = c.nodes.filter((n) =>
      /API Key\s+k1:\S+\s+\(the new root API key: the HSM the previous one was derived from, hsm:minio:soft, was removed\)/.test(
        n!.output(),
      ),
    ).length;
    assert.ok(noted >= 1, 'the nodes that were serving say why the root API key changed');
    t.diagnostic(`${noted} of 3 nodes printed the new root API key with the note (the others read it from the store while unsealing)`);
    assert.equal(new Set(newRoots).size, 1, `the nodes printed different new root keys: ${newRoots.join(', ')}`);
    const newRoot = newRoots[0]!;
    assert.notEqual(newRoot, oldRoot);
    const newIdentity = parseApiKey(newRoot).identity;
    t.diagnostic(
      `rolling restart: each node serving ${restartTimes.join(', ')} ms after its start; soft entry removed ${removedAfter} ms after the last node served`,
    );
    const removals = c.nodes.map(
      (n) => records(n!.output(), 'removed the sealed root key entry of an HSM that no node has configured any more').length,
    );
    assert.equal(
      removals.reduce((a, b) => a + b, 0),
      1,
      `exactly one node removes the entry (${removals.join(', ')})`,
    );
    await checkRootIdentity(c, 'soft entry removed', newIdentity, [newRoot], [oldRoot]);
    for (const i of [0, 1, 2]) {
      const s = await c.ownStatus(i, newRoot);
      assert.deepEqual(s.hsms, [EXT], `node ${i}: entries`);
      assert.deepEqual(s.configuredHsms, [EXT]);
      assert.equal(s.rootIdentitySource, EXT);
    }

    // Old data keys decrypt on every node; writes go on.
    const fresh = c.ports.map((_, i) => c.client(i, newRoot));
    await ledger.check(fresh, 'after the soft entry was removed');
    assert.equal(await ledger.create(fresh[1]!, 'after-the-chain'), undefined);
    await ledger.generate(fresh[2]!, 'after-the-chain');
    await ledger.check(fresh, 'after a write through the chain');

    // The soft key alone cannot open the store: a node with only MINIO_KMS_HSM_KEY stays sealed.
    const port = await freePort();
    const alone = await startServer({
      dir: join(work, 'soft-alone'),
      hsmKey: softKey,
      config: readFileSync(c.configFiles[0]!, 'utf8').split('\nhsm:\n')[0]!,
      port,
      args: ['--host', `127.0.0.1:${port}`],
      allowSealed: true,
    });
    others.push(alone);
    await waitFor('the soft-only node says why it is sealed', () =>
      /=> Server is sealed: no configured HSM has a sealed root key entry/.test(alone.output()),
    );
    assert.match(alone.output(), new RegExp(`entries: ${EXT.replace(/[/]/g, '\\/')}; configured: hsm:minio:soft`));
    assert.equal(alone.process.exitCode, null, 'the soft-only node keeps running, sealed');
    await alone.stop();
    await fresh[0]!.removeNode(`127.0.0.1:${port}`).catch(() => undefined);
    assertNoLastResort(c);
    [root, ...fresh].forEach((x) => x.close());
    await Promise.all([0, 1, 2].map((i) => c.stop(i)));
  });

  test('an external KMS the nodes do not trust: pending in stat (human and JSON), status, ready?hsm, the metric and the banner; the soft key cannot be removed', async (t) => {
    const softKey = newHsmKey();
    const c = await startChainCluster({ etcd, pki, work, prefix: '/chain-untrusted/', size: 3 });
    clusters.push(c);
    await c.start(0, { hsmKey: softKey });
    await Promise.all([c.start(1, { hsmKey: softKey }), c.start(2, { hsmKey: softKey })]);
    const rootKey = c.nodes[0]!.apiKey;
    // An external KMS with a self-signed certificate, in neither the system's roots nor tls.ca.
    const untrusted = await startExternalKms(join(work, 'untrusted'));
    try {
      const seed = await provisionSeed(untrusted, cliHome(join(work, 'home-untrusted'), untrusted.caPem), 'untrusted', 'k');
      const name = extHsmName('untrusted', 'k');
      for (const i of [0, 1, 2]) c.append(i, hsmSection([untrusted.host], seed.apiKey, { enclave: 'untrusted', key: 'k' }));
      for (const i of [0, 1, 2]) {
        const s = await waitFor(`node ${i}: ${name} pending`, async () => {
          const own = await c.ownStatus(i, rootKey);
          return own.pendingHsms[name] ? own : undefined;
        });
        assert.match(s.pendingHsms[name]!, /cannot verify the external KMS's TLS certificate .*set hsm\.minio\.minkms\.tls\.ca/);
        assert.deepEqual(s.hsms, [SOFT]);
        // Start banner / stdout.
        await waitFor(`node ${i}'s banner`, () => new RegExp(`HSM pending ${name}: .*TLS certificate`).test(c.nodes[i]!.output()));
        // Readiness: ready as a KMS, not ready as to its HSMs.
        assert.equal((await c.get(i, '/v1/health/ready')).status, 200);
        const hsm = await c.get(i, '/v1/health/ready?hsm');
        assert.equal(hsm.status, 503);
        assert.ok(hsm.error instanceof KmsError && hsm.error.code === 'ERR_HSM_PENDING', String(hsm.error));
        assert.match(hsm.error.message, new RegExp(name.replace(/[/]/g, '\\/')));
        const metrics = await c.get(i, '/v1/health/metrics', rootKey);
        assert.match(metrics.body, /^minkms_hsm_pending 1$/m, `node ${i}: metric`);
      }
      // minkms stat, as an operator runs it against one node: every node shows the pending HSM.
      const env = { MINIO_KMS_SERVER: `https://127.0.0.1:${c.ports[0]}`, MINIO_KMS_API_KEY: rootKey, HOME: home };
      const human = await minkms(['stat'], env);
      assert.equal(human.code, 0, human.out);
      t.diagnostic(`minkms stat:\n${human.out.replace(/k1:[\w-]{20,}/g, 'k1:…')}`);
      const lines = human.out.split('\n').filter((l) => l.includes(`Pending HSM`) && l.includes(name));
      assert.equal(lines.length, 3, `stat shows the pending HSM for every node:\n${human.out}`);
      assert.ok(lines.every((l) => /TLS certificate/.test(l)));
      const json = await minkms(['stat', '--json'], env);
      const nodes = JSON.parse(json.stdout) as Array<{ hsm_pending: Record<string, string>; hsm: string[] }>;
      assert.equal(nodes.length, 3);
      for (const n of nodes) {
        assert.match(n.hsm_pending[name] ?? '', /TLS certificate/);
        assert.deepEqual(n.hsm, [SOFT]);
      }
      // The soft entry is the only one: removing it is refused, with the reason.
      const rm = await minkms(['rm-hsm', SOFT], env);
      assert.notEqual(rm.code, 0, rm.out);
      assert.match(rm.out, /cannot remove the last hsm entry/);
      t.diagnostic(`minkms rm-hsm ${SOFT}: ${rm.out.trim()}`);
      for (const i of [0, 1, 2]) assert.deepEqual((await c.ownStatus(i, rootKey)).hsms, [SOFT]);

      // Fixed by trusting the external KMS's certificate: the next attempt seals, pending clears everywhere.
      const t0 = Date.now();
      for (const i of [0, 1, 2])
        c.edit(i, (text) => text.replace(/(\n {8}key: k1:\S+\n)/, `$1      tls:\n        ca: ${untrusted.caFile}\n`));
      for (const i of [0, 1, 2]) {
        await waitFor(`node ${i}: nothing pending`, async () => {
          const own = await c.ownStatus(i, rootKey);
          return Object.keys(own.pendingHsms).length === 0 && own.hsms.includes(name);
        });
        assert.equal((await c.get(i, '/v1/health/ready?hsm')).status, 200);
        assert.match((await c.get(i, '/v1/health/metrics', rootKey)).body, /^minkms_hsm_pending 0$/m);
      }
      t.diagnostic(`trusted ${Date.now() - t0} ms after the configuration files named the CA`);
      assertNoLastResort(c);
    } finally {
      await untrusted.stop();
      await Promise.all([0, 1, 2].map((i) => c.stop(i)));
    }
  });

  test('a node started with no HSM that can open an entry is up and sealed, and unseals when another node seals its entry (minkms add-hsm)', async (t) => {
    const softKey = newHsmKey();
    const enclave = 'late';
    const key = 'late-hsm';
    const name = extHsmName(enclave, key);
    // The identity the nodes will use on the external KMS: chosen now, registered there later.
    const identity = generateApiKey();
    const section = hsmSection([external.host], identity.text, { enclave, key });
    const c = await startChainCluster({ etcd, pki, work, prefix: '/chain-sealed/', size: 3, extra: (i) => (i === 2 ? section : '') });
    clusters.push(c);
    await c.start(0, { hsmKey: softKey });
    await c.start(1, { hsmKey: softKey });
    const rootKey = c.nodes[0]!.apiKey;
    const ledger = new Ledger('data');
    const c0 = c.client(0, rootKey);
    await c0.createEnclave('data');
    await ledger.create(c0, 'k');
    for (let i = 0; i < 5; i++) await ledger.generate(c0, 'k');

    // Node 2: only the external HSM, which has no entry (and does not exist yet on the external KMS).
    const s2 = await c.start(2, { hsmKey: null, allowSealed: true });
    await waitFor('node 2 says why it is sealed', () =>
      /=> Server is sealed: no configured HSM has a sealed root key entry/.test(s2.output()),
    );
    assert.match(s2.output(), new RegExp(`entries: hsm:minio:soft; configured: ${name.replace(/[/]/g, '\\/')}`));
    assert.match(s2.output(), /run `minkms add-hsm NAME` on an unsealed node of this cluster/);
    assert.match(s2.output(), /this node unseals by itself as soon as an entry it can open exists/);
    assert.equal(s2.process.exitCode, null, 'node 2 keeps running, sealed');
    assert.equal((await c.get(2, '/version')).status, 200);
    assert.equal((await c.get(2, '/v1/health/live')).status, 200);
    const ready = await c.get(2, '/v1/health/ready');
    assert.equal(ready.status, 503);
    assert.ok(ready.error instanceof KmsError && ready.error.code === 'ERR_SEALED');
    const c2 = c.client(2, rootKey);
    await assert.rejects(c2.listKeys('data'), (err: unknown) => err instanceof KmsError && err.code === 'ERR_SEALED');
    // The other nodes show it sealed, with the HSM it has.
    const env = { MINIO_KMS_SERVER: `https://127.0.0.1:${c.ports[0]}`, MINIO_KMS_API_KEY: rootKey, HOME: home };
    const stat = await waitFor('node 2 listed as sealed', async () => {
      const r = await minkms(['stat', '--json'], env);
      const n = (JSON.parse(r.stdout) as Array<{ host: string; sealed?: boolean; hsm_active?: string[] }>).find(
        (x) => x.host === `127.0.0.1:${c.ports[2]}`,
      );
      return n?.sealed === true ? n : undefined;
    });
    assert.deepEqual(stat.hsm_active, [name]);
    const human = await minkms(['stat'], env);
    assert.match(human.out, /State\s+sealed/);

    // Node 0 gets the HSM configured: pending (the key does not exist on the external KMS yet).
    c.append(0, section);
    await waitFor('node 0: the HSM pending', async () => (await c.ownStatus(0, rootKey)).pendingHsms[name]);
    // The key and the identity are created on the external KMS; `minkms add-hsm` on node 0 seals at once.
    const ext = external.client();
    await ext.createEnclave(enclave);
    await ext.createKey(enclave, { name: key });
    await ext.createIdentity(enclave, { identity: identity.identity, privilege: 'Admin' });
    ext.close();
    const t0 = Date.now();
    const add = await minkms(['add-hsm', name], env);
    // The node retries pending HSMs by itself (from 5 s on): it may have sealed first.
    if (add.code !== 0) {
      assert.match(add.out, /hsm already has a sealed root key entry/, add.out);
      t.diagnostic(`the node's own retry sealed before minkms add-hsm: ${add.out.trim()}`);
    } else {
      assert.match(add.out, new RegExp(`Sealed the root encryption key with HSM '${name.replace(/[/]/g, '\\/')}'`));
    }
    await waitFor('node 2 unseals by itself', () => c2.ready().then(() => true), 30_000, 100);
    t.diagnostic(`node 2 unsealed ${Date.now() - t0} ms after minkms add-hsm`);
    assert.equal((await waitFor('node 2 logs how it unsealed', () => records(s2.output(), 'unsealed')[0])).hsm, name);
    assert.equal(s2.process.exitCode, null);
    await ledger.check(
      c.ports.map((_, i) => c.client(i, rootKey)),
      'after node 2 unsealed',
    );
    assert.equal((await c.ownStatus(2, rootKey)).rootIdentity, parseApiKey(rootKey).identity);
    assertNoLastResort(c);
    c0.close();
    c2.close();
    await Promise.all([0, 1, 2].map((i) => c.stop(i)));
  });
});
