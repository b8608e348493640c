/**
 * Fault suite, part 4: a node never exits for a runtime condition (issue 18, items 1 and 7).
 * Real processes: 3 etcd members, 2 KMS nodes whose root key is sealed by a soft key and by an
 * external KMS (the chain), with `admin.identity` (the root identity never changes here).
 *
 * - `rm-hsm hsm:minio:soft` while the external KMS is down: refused, both nodes stay up;
 * - a root key event applied while etcd has no quorum: the node stays up, serves from memory or
 *   is sealed with the reason, and follows the change once the quorum is back;
 * - a failure injected into every background task — unseal loop, change feed (apply and
 *   reload), membership heartbeat, sealing for a pending HSM, removal of unconfigured entries,
 *   configuration watch, TLS watch — each reported (log, status) and none ends the process;
 * - start-up with a hung (SIGSTOP) external KMS: the node listens at once, answers 503 sealed,
 *   and unseals when the external KMS resumes;
 * - a sealed node stops at once on SIGTERM.
 *
 * After every fault: every acknowledged write is on every node and every acknowledged data key
 * decrypts there (test/helpers/invariants.ts); no process wrote a last-resort line
 * ("unhandled rejection", "uncaught exception": a task that did not own its error).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { newHsmKey, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { Ledger } from '../helpers/invariants.js';
import { eventually, waitFor } from '../helpers/wait.js';
import {
  SOFT,
  cliHome,
  extHsmName,
  hsmSection,
  lastResortLines,
  makePki,
  minkms,
  provisionSeed,
  replaceFile,
  startChainCluster,
  startExternalKms,
  type ChainCluster,
  type ExternalKms,
  type Pki,
} from '../helpers/chain.js';
import { KmsClient } from '../../src/client/client.js';
import { KmsError } from '../../src/errors.js';
import { generateApiKey } from '../../src/identity/api-key.js';

const EXT = extHsmName();
const ENCLAVE = 'tasks';
const PREFIX = '/node-tasks/';
let work: string;
let etcd: EtcdCluster;
let etcdClient: Etcd3;
let pki: Pki;
let external: ExternalKms;
let c: ChainCluster;
let home: string;
const softKey = newHsmKey();
const admin = generateApiKey();
const ledger = new Ledger(ENCLAVE);
const extra: TestServer[] = [];

/** Both nodes' clients, as the administrator. */
function clients(): KmsClient[] {
  return c.ports.map((_, i) => c.client(i, admin.text));
}

/** Every acknowledged write on both nodes, every data key decrypts there; both processes up, no last-resort line. */
async function checkInvariants(what: string): Promise<void> {
  const cs = clients();
  try {
    await ledger.check(cs, what);
  } finally {
    cs.forEach((x) => x.close());
  }
  for (const [i, n] of c.nodes.entries()) {
    assert.ok(n, `${what}: node ${i} is not running`);
    assert.equal(n.process.exitCode, null, `${what}: node ${i} exited`);
    assert.equal(n.process.signalCode, null, `${what}: node ${i} was killed`);
    assert.deepEqual(lastResortLines(n.output()), [], `${what}: node ${i} hit the last-resort handler`);
  }
}

/** A little write and data-key load through node `i`, recorded in the ledger. */
async function work1(i: number, tag: string): Promise<void> {
  const k = c.client(i, admin.text);
  try {
    await eventually(`a write through node ${i} (${tag})`, async () => {
      const code = await ledger.create(k, `${tag}-${Date.now()}`);
      if (code !== undefined) throw new Error(code);
    });
    for (let j = 0; j < 3; j++) await ledger.generate(k, 'base');
  } finally {
    k.close();
  }
}

/** JSON log records of `output` whose message starts with `msg`. */
function records(output: string, msg: string): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes(`"msg":"${msg}`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function killQuorum(): Promise<unknown> {
  return Promise.all([etcd.kill(1), etcd.kill(2)]);
}

async function restoreQuorum(): Promise<void> {
  await Promise.all([etcd.restart(1), etcd.restart(2)]);
  await etcd.waitHealthy();
}

before(async () => {
  work = tempDir('minkms-node-tasks-');
  pki = makePki(join(work, 'pki'));
  home = cliHome(join(work, 'home'), pki.caPem);
  etcd = await startEtcdCluster();
  etcdClient = new Etcd3({ hosts: etcd.endpoints });
  external = await startExternalKms(join(work, 'external'), pki);
  const seed = await provisionSeed(external, home);
  c = await startChainCluster({
    etcd,
    pki,
    work,
    prefix: PREFIX,
    size: 2,
    // Node 1 reaches etcd through member 0 only: its change feed stays up when members 1 and 2 die.
    endpoints: (i, all) => (i === 1 ? [all[0]!] : [...all]),
    extra: () => `admin:\n  identity: ${admin.identity}\n` + hsmSection([external.host], seed.apiKey),
  });
  await c.start(0, { hsmKey: softKey });
  await c.start(1, { hsmKey: softKey });
  const k = c.client(0, admin.text);
  await k.createEnclave(ENCLAVE);
  await ledger.create(k, 'base');
  for (let i = 0; i < 5; i++) await ledger.generate(k, 'base');
  k.close();
});

after(async () => {
  for (const s of extra) await s.kill();
  await c?.close();
  await external?.stop().catch(() => undefined);
  etcdClient?.close();
  await etcd?.close();
  if (work) removeDir(work);
});

describe('fault suite: a node never exits for a runtime condition', () => {
  test('rm-hsm hsm:minio:soft while the external KMS is down: refused with the reason; both nodes stay up and serve', async (t) => {
    for (const i of [0, 1]) assert.deepEqual((await c.ownStatus(i, admin.text)).hsms.slice().sort(), [EXT, SOFT].sort());
    await external.stop();
    try {
      const env = { MINIO_KMS_SERVER: `https://127.0.0.1:${c.ports[0]}`, MINIO_KMS_API_KEY: admin.text, HOME: home };
      const rm = await minkms(['rm-hsm', SOFT], env);
      t.diagnostic(`minkms rm-hsm ${SOFT} (external KMS down): exit ${rm.code}: ${rm.out.trim()}`);
      assert.notEqual(rm.code, 0, rm.out);
      assert.match(
        rm.out,
        /cannot remove the last hsm entry: no other configured hsm can open its entry right now \(.*cannot reach the external KMS/,
      );
      // The same through node 1 with the SDK.
      const k1 = c.client(1, admin.text);
      await assert.rejects(k1.removeHsm(SOFT), (err: unknown) => err instanceof KmsError && err.code === 'ERR_HSM_LAST');
      k1.close();
      // Both nodes keep their entries and serve, reads and writes.
      for (const i of [0, 1]) {
        assert.deepEqual((await c.ownStatus(i, admin.text)).hsms.slice().sort(), [EXT, SOFT].sort());
        await work1(i, `rm-hsm-refused-${i}`);
      }
      await checkInvariants('after rm-hsm was refused');
    } finally {
      await external.start();
    }
  });

  test('a root key event applied while etcd has no quorum: the node stays up, serves from memory, and follows the change once the quorum is back', async (t) => {
    // Node 1 is paused while node 0 removes the soft entry; etcd loses its quorum before node 1 runs again.
    c.nodes[1]!.process.kill('SIGSTOP');
    const k0 = c.client(0, admin.text);
    try {
      await k0.removeHsm(SOFT);
    } finally {
      k0.close();
    }
    await killQuorum();
    c.nodes[1]!.process.kill('SIGCONT');
    const lost = Date.now();
    try {
      // Node 1 reads the event from its feed and cannot read the root key state: it reports that and stays up.
      await waitFor('node 1 reports that it cannot follow the change', () =>
        records(c.nodes[1]!.output(), 'following a change of the root key entries failed').length > 0 ? true : undefined,
      );
      const k1 = c.client(1, admin.text);
      try {
        // It serves from memory (nothing can be committed anywhere without a quorum) or answers 503 with a reason.
        const [dek] = await k1.generateKey(ENCLAVE, [{ name: 'base' }]).catch((err: unknown) => {
          assert.ok(err instanceof KmsError && err.status === 503, String(err));
          return [undefined];
        });
        t.diagnostic(`without a quorum, node 1 ${dek ? 'served a data key from memory' : 'answered 503'}`);
      } finally {
        k1.close();
      }
      assert.equal(c.nodes[1]!.process.exitCode, null);
    } finally {
      await restoreQuorum();
    }
    t.diagnostic(`quorum lost for ${Date.now() - lost} ms`);
    // Once etcd answers again, node 1 follows: the soft entry is gone on both nodes.
    const t0 = Date.now();
    for (const i of [0, 1]) {
      await waitFor(
        `node ${i} lists only the external entry`,
        async () => {
          const s = await c.ownStatus(i, admin.text);
          return s.hsms.length === 1 && s.hsms[0] === EXT;
        },
        30_000,
        100,
      );
    }
    t.diagnostic(`node 1 followed the change ${Date.now() - t0} ms after etcd was healthy again`);
    await work1(1, 'after-quorum');
    await checkInvariants('after the root key event without quorum');
    // The soft entry back, for the next tests.
    const k = c.client(0, admin.text);
    await k.addHsm(SOFT);
    k.close();
    for (const i of [0, 1]) await waitFor(`node ${i}: two entries`, async () => (await c.ownStatus(i, admin.text)).hsms.length === 2);
  });

  test('a failure in every background task is reported and ends no process', async (t) => {
    // 1. The change feed: a record no node can decrypt arrives (apply fails, the reload fails): sealed with the reason.
    const garbage = `${PREFIX}data/key/${ENCLAVE}/garbage`;
    await etcdClient.put(garbage).value(Buffer.from('not a barrier value'));
    for (const i of [0, 1]) {
      await waitFor(
        `node ${i}: apply fails and the node reports it`,
        () => records(c.nodes[i]!.output(), 'cannot apply a change from another node').length > 0,
      );
      await waitFor(`node ${i}: sealed with the reason`, async () => {
        const r = await c.get(i, '/v1/health/ready');
        return r.status === 503;
      });
    }
    assert.match(c.nodes[0]!.output(), /=> Server is sealed: /);
    await etcdClient.delete().key(garbage);
    for (const i of [0, 1])
      await waitFor(`node ${i}: unsealed again`, async () => (await c.get(i, '/v1/health/ready')).status === 200, 30_000);
    await checkInvariants('after a record no node could decrypt');
    t.diagnostic('change feed: apply and reload failures reported; sealed with the reason; unsealed once the record was gone');

    // 2. Membership heartbeat and the unseal loop: no quorum; node 1 restarted meanwhile.
    await c.stop(1);
    await killQuorum();
    const s1 = await c.start(1, { hsmKey: softKey, allowSealed: true });
    try {
      await waitFor('node 1 sealed: the store is unreachable', () => /the store is unreachable/.test(s1.output()));
      assert.equal((await c.get(1, '/version')).status, 200);
      assert.equal((await c.get(1, '/v1/health/ready')).status, 503);
      await waitFor('node 0 reports failed heartbeats', () => records(c.nodes[0]!.output(), 'cluster heartbeat failed').length > 0, 30_000);
    } finally {
      await restoreQuorum();
    }
    const t0 = Date.now();
    await waitFor('node 1 unseals once etcd is back', async () => (await c.get(1, '/v1/health/ready')).status === 200, 30_000, 100);
    t.diagnostic(`unseal loop: node 1 started without quorum unsealed ${Date.now() - t0} ms after etcd was healthy`);
    await waitFor('both nodes listed up', async () => {
      const k = c.client(0, admin.text);
      try {
        return (await k.clusterStatus()).nodesUp.size === 2;
      } finally {
        k.close();
      }
    });
    await work1(0, 'after-heartbeat');
    await checkInvariants('after heartbeats and unsealing failed without quorum');

    // 3. Sealing for a pending HSM: node 0 configured with a key that does not exist on the external KMS.
    const missing = extHsmName(undefined, 'no-such-key');
    c.edit(0, (text) => text.replace(/\n {6}key: aistor-key-manager-hsm\n/, '\n      key: no-such-key\n'));
    const pending = await waitFor('node 0: the HSM pending', async () => (await c.ownStatus(0, admin.text)).pendingHsms[missing]);
    assert.match(pending, /does not exist|access denied/);
    await waitFor('the banner names it', () => new RegExp(`HSM pending ${missing}`).test(c.nodes[0]!.output()));
    c.edit(0, (text) => text.replace(/\n {6}key: no-such-key\n/, '\n      key: aistor-key-manager-hsm\n'));
    await waitFor('node 0: nothing pending', async () => Object.keys((await c.ownStatus(0, admin.text)).pendingHsms).length === 0);
    await checkInvariants('after a pending HSM');

    // 3b. Sealing for a new HSM while etcd has no quorum: the sealing cannot even read the entries. Reported,
    // and retried: the entry is written once etcd answers again.
    const second = extHsmName(undefined, 'second-hsm');
    const ext = external.client();
    await ext.createKey('aistor-key-manager', { name: 'second-hsm' });
    ext.close();
    await killQuorum();
    try {
      c.edit(0, (text) => text.replace(/\n {6}key: aistor-key-manager-hsm\n/, '\n      key: second-hsm\n'));
      await waitFor(
        'node 0 reports that it cannot seal for the new HSM',
        () => records(c.nodes[0]!.output(), 'sealing the root key for the configured HSMs failed').length > 0,
        30_000,
      );
    } finally {
      await restoreQuorum();
    }
    const t2 = Date.now();
    await waitFor(
      'the new HSM sealed once etcd is back',
      async () => (await c.ownStatus(0, admin.text)).hsms.includes(second),
      40_000,
      200,
    );
    t.diagnostic(`sealing for a new HSM that failed without quorum: done ${Date.now() - t2} ms after etcd was healthy`);
    c.edit(0, (text) => text.replace(/\n {6}key: second-hsm\n/, '\n      key: aistor-key-manager-hsm\n'));
    // No node has it configured now: its entry goes (every 10 s a node checks).
    await waitFor('the second entry removed', async () => !(await c.ownStatus(0, admin.text)).hsms.includes(second), 40_000, 200);
    await work1(0, 'after-sealing-without-quorum');
    await checkInvariants('after sealing for a new HSM without quorum');

    // 4. The configuration watch: a file that does not parse is reported, the running configuration kept.
    const good = readFileSync(c.configFiles[0]!, 'utf8');
    replaceFile(c.configFiles[0]!, good + 'this is: [not yaml\n');
    await waitFor(
      'node 0 reports the unreadable configuration',
      () => records(c.nodes[0]!.output(), 'the configuration file changed but cannot be loaded').length > 0,
    );
    replaceFile(c.configFiles[0]!, good + 'no_such_section: 1\n');
    await waitFor('node 0 reports the unknown key', () => /no_such_section/.test(c.nodes[0]!.output()));
    replaceFile(c.configFiles[0]!, good);
    await work1(0, 'after-config');
    await checkInvariants('after configuration files that cannot be loaded');

    // 5. The TLS watch: a certificate file that does not parse is reported, the old certificate kept.
    const certFile = /cert: (\S+)/.exec(good)![1]!;
    const cert = readFileSync(certFile);
    writeFileSync(certFile, 'not a certificate\n');
    for (const i of [0, 1]) {
      await waitFor(
        `node ${i} reports the unreadable certificate`,
        () => records(c.nodes[i]!.output(), 'TLS certificates changed but cannot be loaded').length > 0,
      );
    }
    writeFileSync(certFile, cert);
    await work1(1, 'after-tls');
    await checkInvariants('after a certificate file that cannot be loaded');

    // 6. Removal of unconfigured entries: both nodes restarted without MINIO_KMS_HSM_KEY, keeping the soft entry
    // (hsm.keep_unconfigured_entries); then, with the external KMS down, the flag goes: the removal cannot prove
    // that the external entry opens, is refused and reported, and succeeds once the external KMS is back.
    for (const i of [0, 1]) {
      c.edit(i, (text) => text.replace(/\nhsm:\n/, '\nhsm:\n  keep_unconfigured_entries: true\n'));
      await c.stop(i);
      await c.start(i, { hsmKey: null });
    }
    for (const i of [0, 1]) assert.deepEqual((await c.ownStatus(i, admin.text)).hsms.slice().sort(), [EXT, SOFT].sort());
    await external.stop();
    try {
      for (const i of [0, 1]) c.edit(i, (text) => text.replace('  keep_unconfigured_entries: true\n', ''));
      await waitFor(
        'a node reports that it cannot remove the soft entry',
        () =>
          [0, 1].some((i) =>
            /cannot remove the last hsm entry: no other configured hsm can open its entry right now/.test(c.nodes[i]!.output()),
          ),
        30_000,
      );
      for (const i of [0, 1]) assert.ok((await c.ownStatus(i, admin.text)).hsms.includes(SOFT), 'the soft entry stays');
      await work1(0, 'removal-refused');
      await checkInvariants('after the removal was refused');
    } finally {
      await external.start();
    }
    const t1 = Date.now();
    await waitFor(
      'the soft entry removed once the external KMS is back',
      async () => (await c.ownStatus(0, admin.text)).hsms.join() === EXT,
      40_000,
      200,
    );
    t.diagnostic(`removal of the unconfigured soft entry: done ${Date.now() - t1} ms after the external KMS was back`);
    await checkInvariants('after the soft entry was removed');
  });

  test('start-up with a hung (SIGSTOP) external KMS: listening at once, 503 sealed meanwhile, unsealed when it resumes', async (t) => {
    // Both nodes are sealed by the external KMS only now (the previous test removed the soft entry).
    // The baseline on this machine: a start with the external KMS answering.
    await c.stop(1);
    const tb = Date.now();
    const base = c.start(1, { hsmKey: null });
    await waitFor('node 1 answers /version', async () => (await c.get(1, '/version')).status === 200, 30_000, 20);
    const baseline = Date.now() - tb;
    await base;
    t.diagnostic(`baseline: node 1 answered /version ${baseline} ms and served ${Date.now() - tb} ms after it was started`);
    await c.stop(1);
    external.pause();
    let resumed = false;
    try {
      const t0 = Date.now();
      const s1 = await c.start(1, { hsmKey: null, allowSealed: true });
      void s1;
      // The listener comes first: /version answers while the first HSM call hangs.
      const version = await waitFor('node 1 answers /version', async () => (await c.get(1, '/version')).status === 200, 30_000, 20);
      const listening = Date.now() - t0;
      void version;
      const ready = await c.get(1, '/v1/health/ready');
      assert.equal(ready.status, 503);
      assert.ok(ready.error instanceof KmsError && ready.error.code === 'ERR_SEALED', String(ready.error));
      const k = c.client(1, admin.text);
      await assert.rejects(k.listKeys(ENCLAVE), (err: unknown) => err instanceof KmsError && err.code === 'ERR_SEALED');
      k.close();
      // All of this while the external KMS is still stopped: the listener does not wait for the HSM.
      assert.equal(records(c.nodes[1]!.output(), 'unsealed').length, 0);
      t.diagnostic(`node 1 answered /version ${listening} ms after it was started, with the external KMS hung (baseline ${baseline} ms)`);
      external.resume();
      resumed = true;
      const t1 = Date.now();
      await waitFor('node 1 unseals', async () => (await c.get(1, '/v1/health/ready')).status === 200, 40_000, 50);
      t.diagnostic(`node 1 unsealed ${Date.now() - t1} ms after the external KMS resumed`);
    } finally {
      if (!resumed) external.resume();
    }
    await checkInvariants('after the start with a hung external KMS');
  });

  test('a sealed node stops at once on SIGTERM', async (t) => {
    // A single node whose soft key cannot open its entry (another key): sealed, retrying.
    const dir = join(work, 'sealed-single');
    const first = await startServer({ dir, hsmKey: newHsmKey() });
    await first.stop();
    const s = await startServer({ dir, hsmKey: newHsmKey(), allowSealed: true });
    extra.push(s);
    await waitFor('sealed', () => /=> Server is sealed: /.test(s.output()));
    // Let it reach the wait between two attempts.
    await waitFor('a retry', () => records(s.output(), 'sealed: cannot unseal').length > 0);
    const t0 = Date.now();
    await s.stop();
    const ms = Date.now() - t0;
    t.diagnostic(`a sealed node exited ${ms} ms after SIGTERM (exit code ${s.process.exitCode})`);
    assert.equal(s.process.exitCode, 0);
    assert.ok(ms < 5_000, `exit after ${ms} ms`);
  });
});
