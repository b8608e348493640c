/**
 * Fault suite, part 2: writes without a quorum, with real processes (3 etcd members, 2 KMS
 * nodes). A majority of etcd members killed (SIGKILL), then paused (SIGSTOP): 1 and 32
 * concurrent writers on one node all get their 503 within about one store timeout (not one
 * timeout per queued write), reads go on from memory on every node, `ready?write` says 503;
 * once the quorum is back, writes resume within a bound, and no write that was answered with
 * a definite 503 (`store unavailable: no write quorum`, `… could not start in time`) is ever
 * applied — checked on every node, after the new leader has had time to commit anything left
 * in its log. Then every acknowledged write and data key is checked on every node.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startKmsCluster, type KmsCluster } from '../helpers/kms-cluster.js';
import { Ledger } from '../helpers/invariants.js';
import { eventually } from '../helpers/wait.js';

const ENCLAVE = 'quorum';
const TIMEOUT_MS = 5_000;
/** A loaded 2-core machine: process scheduling, TLS handshakes of 32 fresh requests. */
const MARGIN_MS = 2_500;
let cluster: KmsCluster;
const ledger = new Ledger(ENCLAVE);
const DEFINITE = new Set(['ERR_STORE_UNAVAILABLE', 'ERR_STORE_TIMEOUT']);

before(async () => {
  cluster = await startKmsCluster({ nodes: 2, timeout: `${TIMEOUT_MS}ms` });
  const c = cluster.client(0);
  await c.createEnclave(ENCLAVE);
  for (let i = 0; i < 5; i++) await ledger.create(c, `before-${i}`);
  for (let i = 0; i < 10; i++) await ledger.generate(c, `before-${i % 5}`);
  c.close();
});

after(async () => {
  await cluster?.close();
});

/** N concurrent creates on node 0; every one's outcome and time to answer. */
async function burst(tag: string, n: number): Promise<{ codes: Map<string, number>; times: number[] }> {
  const c = cluster.client(0, 60_000);
  const t0 = Date.now();
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const code = await ledger.create(c, `${tag}-${i}`);
      return { code: code ?? 'OK', ms: Date.now() - t0 };
    }),
  );
  c.close();
  const codes = new Map<string, number>();
  for (const r of results) codes.set(r.code, (codes.get(r.code) ?? 0) + 1);
  return { codes, times: results.map((r) => r.ms).sort((a, b) => a - b) };
}

describe('fault suite: no write quorum', () => {
  for (const fault of ['killed', 'paused'] as const) {
    for (const n of [1, 32]) {
      test(`two of three etcd members ${fault}: ${n} concurrent writers get 503 within one store timeout; reads go on; recovery`, async (t) => {
        const readers = [cluster.client(0), cluster.client(1)];
        if (fault === 'killed') await Promise.all([cluster.etcd.kill(1), cluster.etcd.kill(2)]);
        else [1, 2].forEach((m) => cluster.etcd.pause(m));
        const lost = Date.now();
        try {
          // At once: the writes queue up before the node knows the quorum is gone.
          const { codes, times } = await burst(`${fault}-${n}`, n);
          const summary = [...codes].map(([c, k]) => `${k}x ${c}`).join(', ');
          t.diagnostic(
            `${fault}, ${n} writers: answers ${summary}; time to answer min ${times[0]} ms, median ${times[n >> 1]} ms, max ${times.at(-1)} ms`,
          );
          assert.equal(codes.get('OK') ?? 0, 0, `${fault}, ${n} writers: a write succeeded without a quorum`);
          for (const code of codes.keys()) {
            assert.ok(DEFINITE.has(code) || code === 'ERR_STORE_OUTCOME_UNKNOWN', `${fault}, ${n} writers: unexpected answer ${code}`);
          }
          assert.ok(times.at(-1)! <= TIMEOUT_MS + MARGIN_MS, `${fault}, ${n} writers: the last 503 came after ${times.at(-1)} ms`);
          // Reads are served from memory on every node; readiness for writes says no.
          for (const [i, r] of readers.entries()) {
            const [dek] = await r.generateKey(ENCLAVE, [{ name: 'before-0' }]);
            const [back] = await r.decrypt(ENCLAVE, [{ name: 'before-0', version: dek!.version, ciphertext: dek!.ciphertext }]);
            assert.ok(back!.plaintext.equals(dek!.plaintext), `node ${i}: a data key generated without quorum decrypts`);
            await assert.rejects(r.ready({ write: true }), (err: { status?: number }) => err.status === 503, `node ${i}: ready?write`);
          }
        } finally {
          if (fault === 'killed') await Promise.all([cluster.etcd.restart(1), cluster.etcd.restart(2)]);
          else [1, 2].forEach((m) => cluster.etcd.resume(m));
        }
        const back = Date.now();
        await cluster.etcd.waitHealthy();
        const c = cluster.client(0);
        await eventually(
          'a write succeeds again',
          async () => {
            const code = await ledger.create(c, `${fault}-${n}-after-${Date.now()}`);
            if (code !== undefined) throw new Error(code);
          },
          30_000,
        );
        t.diagnostic(
          `${fault}: quorum lost for ${back - lost} ms; writes succeed again ${Date.now() - back} ms after the members were back`,
        );
        await eventually('ready?write', () => c.ready({ write: true }));
        // Anything left in a member's log is committed with the new leader's first entries:
        // write a little more before checking that nothing refused was applied.
        for (let i = 0; i < 5; i++) await ledger.create(c, `${fault}-${n}-settle-${i}`);
        await ledger.check(readers, `after the quorum came back (${fault}, ${n} writers)`);
        t.diagnostic(`${ledger.refused.size} refused creates absent on every node; ${ledger.uncertain.size} with an unknown outcome`);
        [...readers, c].forEach((x) => x.close());
      });
    }
  }
});
