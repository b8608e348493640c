/**
 * Fault suite, part 2: faults of processes under write load, with real processes (3 etcd
 * members, 3 KMS nodes on 127.0.0.1): a KMS node paused (SIGSTOP) and resumed, then killed
 * (SIGKILL) and restarted; the etcd leader killed and restarted. After every fault: every
 * acknowledged write is on every node, every acknowledged data key decrypts on every node
 * (test/helpers/invariants.ts).
 */
import { after, before, describe, test } from 'node:test';
import type { KmsClient } from '../../src/client/client.js';
import { startKmsCluster, type KmsCluster } from '../helpers/kms-cluster.js';
import { Ledger } from '../helpers/invariants.js';
import { waitFor } from '../helpers/wait.js';

const ENCLAVE = 'faults';
let cluster: KmsCluster;
const ledger = new Ledger(ENCLAVE);

before(async () => {
  cluster = await startKmsCluster();
  const c = cluster.client(0);
  await c.createEnclave(ENCLAVE);
  for (let i = 0; i < 3; i++) await ledger.create(c, `base-${i}`);
  c.close();
});

after(async () => {
  await cluster?.close();
});

/** Creates keys through `c` every ~20 ms until stopped: write load, recorded in the ledger. */
function writeLoad(c: KmsClient, tag: string): { acknowledged(): number; stop(): Promise<number> } {
  let stopped = false;
  let n = 0;
  let ok = 0;
  const done = (async () => {
    while (!stopped) {
      if ((await ledger.create(c, `${tag}-${n++}`)) === undefined) ok++;
      // The pace of the load, not a wait for something: a slower machine writes less often.
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    acknowledged: () => ok,
    stop: async () => {
      stopped = true;
      await done;
      return n;
    },
  };
}

describe('fault suite: paused and killed processes', () => {
  test('a KMS node paused, then killed with SIGKILL and restarted, under write load', async (t) => {
    const [a, b] = [cluster.client(0), cluster.client(1)];
    const load = writeLoad(a, 'node-faults');
    for (let i = 0; i < 5; i++) await ledger.generate(b, 'base-0');
    cluster.pauseNode(2);
    // Node 2 misses writes while it is paused: as many as it takes, not a time.
    const beforePause = load.acknowledged();
    await waitFor('20 writes while node 2 is paused', () => load.acknowledged() >= beforePause + 20, 60_000);
    for (let i = 0; i < 5; i++) await ledger.generate(b, 'base-0');
    cluster.resumeNode(2);
    // The paused node catches up when it runs again.
    const c = cluster.client(2);
    await ledger.check([c], 'after the pause of node 2');
    await cluster.nodes[2]!.kill();
    const killedAt = Date.now();
    const beforeKill = load.acknowledged();
    await waitFor('10 writes while node 2 is down', () => load.acknowledged() >= beforeKill + 10, 60_000);
    await cluster.startNode(2);
    t.diagnostic(`node 2 restarted and serving ${Date.now() - killedAt} ms after SIGKILL`);
    const n = await load.stop();
    const c2 = cluster.client(2);
    await ledger.check([a, b, c2], 'after SIGKILL and restart of node 2');
    t.diagnostic(`${n} creates of load, ${ledger.keys.size} acknowledged keys, ${ledger.deks.length} data keys checked on every node`);
    [a, b, c, c2].forEach((x) => x.close());
  });

  test('an etcd member killed with SIGKILL and restarted under write load', async () => {
    const [a, b, c] = [cluster.client(0), cluster.client(1), cluster.client(2)];
    const load = writeLoad(b, 'etcd-kill');
    const leader = await cluster.etcd.leader();
    await cluster.etcd.kill(leader);
    // The load goes on through another leader before the old one comes back.
    await waitFor('a new etcd leader', async () => (await cluster.etcd.leader().catch(() => leader)) !== leader, 60_000, 100);
    const beforeRestart = load.acknowledged();
    await waitFor('5 writes under the new leader', () => load.acknowledged() >= beforeRestart + 5, 60_000);
    await cluster.etcd.restart(leader);
    await cluster.etcd.waitHealthy();
    await load.stop();
    for (let i = 0; i < 5; i++) await ledger.generate(a, 'base-1');
    await ledger.check([a, b, c], 'after SIGKILL and restart of the etcd leader');
    [a, b, c].forEach((x) => x.close());
  });
});
