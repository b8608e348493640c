/**
 * The rolling restart of a cluster (`POST /v1/debug/restart`, `minkms restart`): three etcd
 * members and three KMS nodes, real processes. Under a steady client load (a TS client given
 * every endpoint: data keys, decryptions and key creations) the cluster restarts node by
 * node — each node drains, re-executes itself and is waited for — and not one client request
 * fails; at no moment is more than one node down. A second request meanwhile is refused (one
 * rolling restart at a time), and so is a restart while a node is down.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startKmsCluster, type KmsCluster } from '../helpers/kms-cluster.js';
import { rejectsWith } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { KmsClient } from '../../src/client/client.js';
import { KmsError } from '../../src/errors.js';

const ENCLAVE = 'rolling';
let cluster: KmsCluster;

before(async () => {
  cluster = await startKmsCluster({ nodes: 3 });
  const c = cluster.client();
  try {
    await c.createEnclave(ENCLAVE);
    await c.createKey(ENCLAVE, { name: 'dek' });
  } finally {
    c.close();
  }
});

after(async () => {
  await cluster?.close();
});

/** Readiness of one node from a connection of its own (a restarting node refuses it). */
async function isReady(c: KmsClient): Promise<boolean> {
  try {
    await c.ready();
    return true;
  } catch {
    return false;
  }
}

/** When a node began to drain, handed over, unsealed and rejoined (from its JSON log lines). */
function timeline(output: string): string {
  const at = (msg: string, after = 0) => {
    for (const line of output.split('\n')) {
      if (!line.includes(`"msg":"${msg}`)) continue;
      const t = Date.parse((JSON.parse(line) as { time: string }).time);
      if (t >= after) return t;
    }
    return undefined;
  };
  const drain = at('restarting: draining');
  if (drain === undefined) return 'not restarted';
  const handover = at('restarting: a new process took over', drain);
  const unsealed = at('unsealed', drain);
  const joined = at('joined the cluster', drain);
  const ms = (t: number | undefined) => (t === undefined ? '?' : `${t - drain} ms`);
  return `drained and handed over after ${ms(handover)}, unsealed after ${ms(unsealed)}, rejoined after ${ms(joined)}`;
}

describe('rolling restart', () => {
  test('node by node under client load: zero failed requests, never two nodes down', { timeout: 300_000 }, async (t) => {
    const load = cluster.client(undefined, 30_000);
    const admin = new KmsClient({
      endpoints: cluster.ports.map((p) => `127.0.0.1:${p}`),
      apiKey: cluster.apiKey,
      ca: cluster.ca,
      timeoutMs: 240_000,
    });
    const probes = cluster.ports.map(
      (p) =>
        new KmsClient({ endpoints: [`127.0.0.1:${p}`], apiKey: cluster.apiKey, ca: cluster.ca, timeoutMs: 2_000, connectTimeoutMs: 1_000 }),
    );
    let requests = 0;
    const failures: string[] = [];
    const created: string[] = [];
    let running = true;

    // Four workers: a data key and its decryption (what MinIO does per object), and every
    // tenth round a new key (a write: never sent twice, so it must never be cut off).
    const worker = async (w: number) => {
      for (let i = 0; running; i++) {
        const ad = Buffer.from(`${w}/${i}`);
        try {
          requests++;
          const [g] = await load.generateKey(ENCLAVE, [{ name: 'dek', associatedData: ad }]);
          requests++;
          const [d] = await load.decrypt(ENCLAVE, [{ name: 'dek', version: g!.version, ciphertext: g!.ciphertext, associatedData: ad }]);
          if (!d!.plaintext.equals(g!.plaintext)) failures.push(`worker ${w} round ${i}: decrypted data key differs`);
          if (i % 10 === 0) {
            const name = `k-${w}-${i}`;
            requests++;
            await load.createKey(ENCLAVE, { name });
            created.push(name);
          }
        } catch (err) {
          failures.push(`worker ${w} round ${i}: ${(err as Error).name}: ${(err as Error).message}`);
        }
      }
    };

    // Who is down, every 100 ms, each node through a connection of its own.
    let maxDown = 0;
    const downSince: (number | undefined)[] = cluster.ports.map(() => undefined);
    const downtime: number[] = cluster.ports.map(() => 0);
    const monitor = (async () => {
      while (running) {
        const ready = await Promise.all(probes.map(isReady));
        const now = performance.now();
        ready.forEach((ok, i) => {
          if (!ok && downSince[i] === undefined) downSince[i] = now;
          if (ok && downSince[i] !== undefined) {
            downtime[i]! += now - downSince[i]!;
            downSince[i] = undefined;
          }
        });
        maxDown = Math.max(maxDown, ready.filter((ok) => !ok).length);
        // The sampling interval of the monitor, not a wait for something.
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const workers = [0, 1, 2, 3].map(worker);
    try {
      await waitFor('load to run', () => requests > 40);
      const t0 = performance.now();
      // Two requests at once, to two nodes: one coordinates, the other is refused.
      const [a, b] = await Promise.allSettled([
        admin.restart({ host: `127.0.0.1:${cluster.ports[0]}` }),
        admin.restart({ host: `127.0.0.1:${cluster.ports[1]}` }),
      ]);
      const answered = performance.now() - t0;
      const results = [a, b];
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `exactly one rolling restart runs: ${lost.map((l) => (l.reason as Error).message).join('; ')}`);
      assert.ok(
        lost[0]!.reason instanceof KmsError && lost[0]!.reason.code === 'ERR_RESTART_RUNNING',
        `the other is refused: ${(lost[0]!.reason as Error).message}`,
      );
      // The coordinator goes last, after its answer: wait for all three processes.
      await waitFor(
        'every node restarted and ready',
        async () => cluster.nodes.every((n) => n!.restarts() === 1) && (await Promise.all(probes.map(isReady))).every(Boolean),
        120_000,
        100,
      );
      const total = performance.now() - t0;
      // Some load on the restarted cluster too.
      const before = requests;
      await waitFor('load after the restart', () => requests > before + 40);
      running = false;
      await Promise.all([...workers, monitor]);

      const coordinator = cluster.nodes.findIndex((n) => /rolling restart: restarting a node/.test(n!.output()));
      const perNode = cluster.nodes.map((n, i) => {
        const back = [...n!.output().matchAll(/"node":(\d+),"host":"[^"]*","ms":(\d+),"msg":"rolling restart: node is back"/g)];
        return { node: i, downMs: Math.round(downtime[i]!), waitedMs: back.map((m) => Number(m[2])) };
      });
      t.diagnostic(
        `${requests} requests (${created.length} key creations), ${failures.length} failed; coordinator: node ${coordinator}; ` +
          `answered after ${Math.round(answered)} ms, all back after ${Math.round(total)} ms; at most ${maxDown} node(s) down at once`,
      );
      for (const [i, n] of cluster.nodes.entries()) t.diagnostic(`node ${i}: ${timeline(n!.output())}`);
      for (const p of perNode)
        t.diagnostic(
          `node ${p.node}: down ${p.downMs} ms${p.waitedMs.length ? `; coordinator waited ${p.waitedMs.join(', ')} ms per node it restarted` : ''}`,
        );

      assert.deepEqual(failures, [], 'no client request may fail during a rolling restart');
      assert.ok(maxDown <= 1, `at most one node down at a time, saw ${maxDown}`);
      assert.ok(
        downtime.every((d) => d > 0),
        `every node was restarted (down ${downtime.map(Math.round).join(', ')} ms)`,
      );
      const keys = new Set<string>();
      for await (const k of KmsClient.pages((at) =>
        load.listKeys(ENCLAVE, { continueAt: at }).then((p) => ({ items: p.keys, continueAt: p.continueAt })),
      ))
        keys.add(k.name);
      assert.deepEqual(
        created.filter((k) => !keys.has(k)),
        [],
        'every acknowledged key creation survived',
      );
    } finally {
      running = false;
      await Promise.allSettled([...workers, monitor]);
      load.close();
      admin.close();
      probes.forEach((p) => p.close());
    }
  });

  test('refused while a node is down, and with a single --self the node restarts alone', { timeout: 120_000 }, async () => {
    const admin = cluster.client(0, 60_000);
    const probe = cluster.client(1, 2_000);
    try {
      await cluster.nodes[2]!.kill();
      await waitFor('node 2 to be seen down', async () => (await admin.clusterStatus()).nodesDown.size === 1, 30_000, 100);
      await rejectsWith(admin.restart(), 'ERR_RESTART_UNSAFE', 'rolling restart with a node down');
      // A restart of one node is the operator's explicit choice: it goes ahead.
      const before = cluster.nodes[1]!.restarts();
      await admin.restart({ self: true, host: `127.0.0.1:${cluster.ports[1]}` });
      await waitFor('node 1 restarted', async () => cluster.nodes[1]!.restarts() === before + 1 && (await isReady(probe)), 60_000, 100);
    } finally {
      admin.close();
      probe.close();
      await cluster.startNode(2);
    }
  });
});
