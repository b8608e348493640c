/**
 * Fault suite, part 3: concurrent first starts on a real etcd cluster. Three nodes (three
 * EtcdStore clients, each with its own soft HSM instance of the shared key) open the root key
 * of a fresh namespace at the same moment, 20 times: every one of them must succeed, exactly
 * one creates the cluster, and all end up with the same cluster id and root key. (Before
 * cluster creation was one compare-and-set that losers join, a loser could find the winner's
 * records between its two reads and stop with "the database has data but no cluster record".)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { EtcdStore } from '../../src/store/etcd.js';
import { openRootKey } from '../../src/hsm/root-key.js';
import { SoftHsm, generateSoftHsmKey } from '../../src/hsm/soft.js';

const ROUNDS = 20;
const NODES = 3;
let etcd: EtcdCluster;

before(async () => {
  etcd = await startEtcdCluster();
});

after(async () => {
  await etcd?.close();
});

describe('fault suite: concurrent first start', () => {
  test(`${ROUNDS} rounds of ${NODES} nodes opening the root key of a fresh namespace at once: no failure, one cluster`, async (t) => {
    const failures: string[] = [];
    let joined = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const prefix = `/minkms-first-start/${process.pid}-${round}/`;
      const hsmKey = generateSoftHsmKey();
      // Every order of the endpoints: the nodes' first calls go to different members.
      const stores = Array.from(
        { length: NODES },
        (_, i) => new EtcdStore({ endpoints: [...etcd.endpoints.slice(i), ...etcd.endpoints.slice(0, i)], prefix }),
      );
      try {
        const results = await Promise.allSettled(stores.map((s) => openRootKey(s, [new SoftHsm(hsmKey)])));
        const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        for (const [i, r] of results.entries()) {
          if (r.status === 'rejected') failures.push(`round ${round}, node ${i}: ${(r.reason as Error).message}`);
        }
        if (ok.length === NODES) {
          const created = ok.filter((r) => r.created).length;
          assert.equal(created, 1, `round ${round}: ${created} nodes created a cluster`);
          assert.equal(new Set(ok.map((r) => r.clusterId)).size, 1, `round ${round}: different cluster ids`);
          assert.ok(
            ok.every((r) => r.rek.equals(ok[0]!.rek)),
            `round ${round}: different root keys`,
          );
          joined += NODES - created;
        }
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    }
    t.diagnostic(`${ROUNDS} rounds x ${NODES} nodes: ${failures.length} failures; ${joined} nodes joined the winner's cluster`);
    assert.deepEqual(failures, []);
  });
});
