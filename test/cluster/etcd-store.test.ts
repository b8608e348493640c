/**
 * src/store/etcd.ts against a REAL 3-member etcd cluster (test/helpers/etcd.ts; needs the
 * `etcd` binary: the tests fail, not skip, without it). The Store conformance suite, then
 * what only the cluster backend promises: compare-and-set across clients, namespace
 * isolation, large transactions and etcd's limits, watches that survive member restarts
 * without losing events, quorum loss failing fast with StoreUnavailableError and recovering,
 * and no acknowledged write lost.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:net';
import { Etcd3, Range } from 'etcd3';
import { EtcdLimitError, EtcdStore, type EtcdStoreOptions, type StoreEvent } from '../../src/store/etcd.js';
import { StoreFullError, StoreUnavailableError, type Store } from '../../src/store/store.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { createCertificateAuthority, issueCertificate } from '../../src/identity/client-cert.js';
import { storeSuite, type StoreFixture } from '../helpers/store-suite.js';
import { waitFor } from '../helpers/wait.js';

let cluster: EtcdCluster;
/** A raw client for set-up and clean-up, independent of the code under test. */
let admin: Etcd3;
const opened = new Set<EtcdStore>();

before(async () => {
  cluster = await startEtcdCluster();
  admin = new Etcd3({ hosts: cluster.endpoints });
});

after(async () => {
  await Promise.all([...opened].map((s) => s.close().catch(() => undefined)));
  admin?.close();
  await cluster?.close();
});

let seq = 0;
/** A namespace no other test uses. */
function freshPrefix(tag: string): string {
  return `/minkms-test/${process.pid}-${seq++}-${tag}/`;
}

function open(prefix: string, options: Partial<EtcdStoreOptions> = {}): EtcdStore {
  const s = new EtcdStore({ endpoints: cluster.endpoints, prefix, ...options });
  opened.add(s);
  return s;
}

async function wipe(prefix: string): Promise<void> {
  await admin.delete().prefix(prefix);
}

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const put = (key: string, value: string): { key: string; value: Buffer } => ({ key, value: utf8(value) });

storeSuite('etcd (3 members)', async (): Promise<StoreFixture> => {
  const prefix = freshPrefix('suite');
  let current: Store = open(prefix);
  return {
    store: current,
    reopen: async () => {
      await current.close();
      current = open(prefix);
      return current;
    },
    cleanup: async () => {
      await current.close().catch(() => undefined);
      await wipe(prefix).catch(() => undefined);
    },
  };
});

/** A watch that records every event, for exact comparisons. */
function record(
  store: EtcdStore,
  prefix: string,
  fromRev?: number,
): { events: StoreEvent[]; batches: StoreEvent[][]; errors: Error[]; close(): Promise<void>; ready: Promise<void> } {
  const events: StoreEvent[] = [];
  const batches: StoreEvent[][] = [];
  const errors: Error[] = [];
  const w = store.watch(
    prefix,
    (batch) => {
      batches.push(batch);
      events.push(...batch);
    },
    { ...(fromRev === undefined ? {} : { fromRev }), onError: (e) => errors.push(e) },
  );
  return { events, batches, errors, close: () => w.close(), ready: w.ready };
}

const show = (e: StoreEvent): string => `${e.key}${e.value === undefined ? ' deleted' : '=' + e.value.toString()}@${e.rev}`;

describe('EtcdStore on a 3-member etcd cluster', () => {
  it('create-if-absent raced by two EtcdStore instances: exactly one winner per key', async () => {
    const prefix = freshPrefix('race');
    const a = open(prefix);
    const b = new EtcdStore({ endpoints: [...cluster.endpoints].reverse(), prefix });
    opened.add(b);
    const KEYS = 5;
    const PER_STORE = 15;
    for (let k = 0; k < KEYS; k++) {
      const key = `key/default/k${k}`;
      const attempts = [a, b].flatMap((s, si) =>
        Array.from({ length: PER_STORE }, (_, i) =>
          s.commit([{ key, rev: 0 }], [put(key, `store ${si} attempt ${i}`)]).then((res) => ({ res, value: `store ${si} attempt ${i}` })),
        ),
      );
      const results = await Promise.all(attempts);
      const winners = results.filter((r) => r.res.ok);
      assert.equal(winners.length, 1, `case ${k} (${key}): got ${winners.length} winners among ${results.length} commits, want 1`);
      const w = winners[0]!;
      for (const [name, s] of [
        ['a', a],
        ['b', b],
      ] as const) {
        const got = await s.get(key);
        assert.equal(
          got?.value.toString(),
          w.value,
          `case ${k} (${key}): store ${name} reads ${got?.value.toString()}, want the winner's ${w.value}`,
        );
        assert.equal(got?.rev, w.res.rev, `case ${k} (${key}): store ${name} reads rev ${got?.rev}, want ${w.res.rev}`);
      }
    }
    await wipe(prefix);
  });

  it('a stale revision fails and writes nothing, across instances', async () => {
    const prefix = freshPrefix('stale');
    const a = open(prefix);
    const b = open(prefix);
    const r1 = (await a.commit([{ key: 'k', rev: 0 }], [put('k', 'v1'), put('bystander', 'b')])).rev;
    const r2 = await b.commit([{ key: 'k', rev: r1 }], [put('k', 'v2')]);
    assert.equal(r2.ok, true, 'b updates with the current rev: got ok=false');
    const before = (await a.range('')).map((e) => `${e.key}=${e.value}@${e.rev}`);
    const stale = await a.commit([{ key: 'k', rev: r1 }], [put('k', 'stale'), put('new', 'n'), { key: 'bystander' }]);
    assert.equal(stale.ok, false, 'a commits with the rev it read before b wrote: got ok=true, want ok=false');
    for (const [name, s] of [
      ['a', a],
      ['b', b],
    ] as const) {
      const after = (await s.range('')).map((e) => `${e.key}=${e.value}@${e.rev}`);
      assert.deepEqual(
        after,
        before,
        `store ${name} after the failed commit: got ${JSON.stringify(after)}, want unchanged ${JSON.stringify(before)}`,
      );
    }
    await wipe(prefix);
  });

  it('namespaces are isolated: sibling and nested prefixes see only their own keys', async () => {
    const base = freshPrefix('ns');
    const names = ['a/', 'a-b/', 'a/b/', 'a/dat/', 'b/'];
    const stores = names.map((n) => open(base + n));
    // The same keys everywhere, written in an order that is not the sorted one.
    const keys = ['key/z', 'key/a', 'enclave/e', 'key/a/', 'key/A', 'x~'];
    for (const [i, s] of stores.entries()) {
      const res = await s.commit(
        keys.map((key) => ({ key, rev: 0 })),
        keys.map((k) => put(k, `${names[i]}:${k}`)),
      );
      assert.equal(res.ok, true, `case ${i} (${names[i]}): create-if-absent of keys another namespace holds: got ok=false`);
    }
    const sorted = [...keys].sort((x, y) => Buffer.compare(utf8(x), utf8(y)));
    for (const [i, s] of stores.entries()) {
      const got = await s.range('');
      assert.deepEqual(
        got.map((e) => e.key),
        sorted,
        `case ${i} (${names[i]}): got keys ${JSON.stringify(got.map((e) => e.key))}, want ${JSON.stringify(sorted)}`,
      );
      for (const e of got)
        assert.equal(e.value.toString(), `${names[i]}:${e.key}`, `case ${i} (${names[i]}): ${e.key} holds ${e.value.toString()}`);
      const deleted = await s.commit([], [{ key: 'key/a' }]);
      assert.equal(deleted.ok, true);
      assert.equal(await s.get('key/a'), undefined, `case ${i} (${names[i]}): key/a still present after its delete`);
    }
    // Each delete touched only its own namespace.
    for (const [i, s] of stores.entries()) {
      assert.equal(
        (await s.range('')).length,
        keys.length - 1,
        `case ${i} (${names[i]}): got a different number of keys after the deletes`,
      );
    }
    // The commit tokens are not data.
    const raw = await admin
      .getAll()
      .prefix(base + 'a/meta/')
      .keys();
    assert.ok(
      raw.length > 0 && raw.every((k) => k.startsWith(base + 'a/meta/txn/')),
      `want the commit tokens among the raw keys, got ${JSON.stringify(raw)}`,
    );
    await wipe(base);
  });

  it('large commits: thousands of keys in one transaction, read back in pages at one revision', async () => {
    const prefix = freshPrefix('large');
    const s = open(prefix);
    const N = 3_000;
    const muts = Array.from({ length: N }, (_, i) => put(`key/default/${String(N - i).padStart(5, '0')}`, `v${i}`.repeat(20)));
    const t0 = Date.now();
    const res = await s.commit([], muts);
    assert.equal(res.ok, true, `commit of ${N} puts: got ok=false`);
    const { entries, rev } = await s.rangeWithRevision('key/');
    assert.equal(entries.length, N, `got ${entries.length} entries, want ${N}`);
    assert.ok(rev >= res.rev, `range revision ${rev} is older than the commit's ${res.rev}`);
    for (let i = 1; i < entries.length; i++)
      assert.ok(
        entries[i - 1]!.key < entries[i]!.key,
        `entries ${i - 1} and ${i} out of order: ${entries[i - 1]!.key}, ${entries[i]!.key}`,
      );
    assert.ok(
      entries.every((e) => e.rev === res.rev),
      'every entry carries the commit revision',
    );
    // And a deletion of all of them in one commit.
    const del = await s.commit(
      [],
      muts.map((m) => ({ key: m.key })),
    );
    assert.equal(del.ok, true);
    assert.deepEqual(await s.range(''), []);
    assert.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
    await wipe(prefix);
  });

  it("beyond etcd's limits: EtcdLimitError naming the flag, and nothing written", async () => {
    const prefix = freshPrefix('limits');
    const s = open(prefix);
    const cases: Array<{ name: string; muts: Array<{ key: string; value: Buffer }>; flag: string }> = [
      {
        name: '10001 operations > --max-txn-ops=10000',
        muts: Array.from({ length: 10_001 }, (_, i) => ({ key: `k/${i}`, value: Buffer.of(1) })),
        flag: '--max-txn-ops',
      },
      {
        name: '40 MiB > --max-request-bytes=32 MiB',
        muts: Array.from({ length: 40 }, (_, i) => ({ key: `big/${i}`, value: Buffer.alloc(1024 * 1024, i) })),
        flag: '--max-request-bytes',
      },
      {
        name: '32 MiB + a little (etcd checks it, not gRPC)',
        muts: [{ key: 'big/1', value: Buffer.alloc(32 * 1024 * 1024 + 100) }],
        flag: '--max-request-bytes',
      },
    ];
    for (const [i, c] of cases.entries()) {
      await assert.rejects(s.commit([], c.muts), (err: unknown) => {
        assert.ok(err instanceof EtcdLimitError, `case ${i} (${c.name}): got ${String(err)}, want EtcdLimitError`);
        assert.equal(err.flag, c.flag, `case ${i} (${c.name}): got flag ${err.flag}`);
        assert.match(err.message, new RegExp(c.flag), `case ${i} (${c.name}): the message does not name the flag: ${err.message}`);
        return true;
      });
      assert.deepEqual(await s.range(''), [], `case ${i} (${c.name}): something was written`);
    }
    await wipe(prefix);
  });

  it('watch delivers puts and deletes with values and revisions, one batch per commit, only under its prefix', async () => {
    const prefix = freshPrefix('watch');
    const s = open(prefix);
    const w = record(s, 'key/');
    await w.ready;
    const r1 = (await s.commit([], [put('key/a', 'A1'), put('other/x', 'X')])).rev;
    const r2 = (await s.commit([], [{ key: 'key/a' }, put('key/b', 'B1'), put('key/c', '')])).rev;
    await s.commit([], [put('other/y', 'Y')]);
    await s.commit([], [{ key: 'key/never-existed' }]); // writes only the commit token: no event
    const r5 = (await s.commit([{ key: 'key/b', rev: r2 }], [put('key/b', 'B2')])).rev;
    const want = [[`key/a=A1@${r1}`], [`key/a deleted@${r2}`, `key/b=B1@${r2}`, `key/c=@${r2}`], [`key/b=B2@${r5}`]];
    // Nothing else may arrive: a watch delivers in revision order, so once a later commit (the
    // fence) has arrived, every batch before it is there.
    const fence = (await s.commit([], [put('key/fence', '')])).rev;
    await waitFor('the fence', () => w.events.some((e) => e.rev === fence), 5_000);
    const got = w.batches.slice(0, -1).map((b) => b.map(show));
    assert.deepEqual(got, want, `got batches ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    assert.deepEqual(w.batches.at(-1)!.map(show), [`key/fence=@${fence}`]);
    assert.ok(w.events.every((e) => e.value === undefined || Buffer.isBuffer(e.value)));
    // After close: a second watch of the same store, open before the write, receives it; by
    // then the closed one would have too.
    const witness = record(s, 'key/');
    await witness.ready;
    await w.close();
    const late = (await s.commit([], [put('key/after-close', 'z')])).rev;
    await waitFor('the write after close on the other watch', () => witness.events.some((e) => e.rev === late), 5_000);
    assert.equal(w.batches.length, 4, 'an event arrived after close');
    await witness.close();
    assert.deepEqual(w.errors, []);
    await wipe(prefix);
  });

  it('rangeWithRevision + watch from rev+1 misses nothing and repeats nothing', async () => {
    const prefix = freshPrefix('watch-from');
    const s = open(prefix);
    await s.commit([], [put('key/1', 'one'), put('key/2', 'two')]);
    const { entries, rev } = await s.rangeWithRevision('key/');
    assert.equal(entries.length, 2);
    const later = [];
    for (let i = 3; i <= 6; i++) later.push((await s.commit([], [put(`key/${i}`, `v${i}`)])).rev);
    const w = record(s, 'key/', rev + 1);
    await waitFor('4 replayed events', () => w.events.length >= 4, 5_000);
    const live = (await s.commit([], [{ key: 'key/1' }])).rev;
    await waitFor('the live event', () => w.events.length >= 5, 5_000);
    assert.deepEqual(
      w.events.map((e) => e.rev),
      [...later, live],
    );
    await w.close();
    await wipe(prefix);
  });

  it('one member down: commits and reads still succeed', async () => {
    const prefix = freshPrefix('one-down');
    const s = open(prefix, { timeoutMs: 5_000 });
    await s.commit([], [put('warm', 'up')]);
    await cluster.kill(0);
    try {
      const t0 = Date.now();
      for (let i = 0; i < 30; i++) {
        const res = await s.commit([{ key: `k/${i}`, rev: 0 }], [put(`k/${i}`, `v${i}`)]);
        assert.equal(res.ok, true, `case ${i}: commit with member 0 down: got ok=false`);
        assert.equal((await s.get(`k/${i}`))?.value.toString(), `v${i}`, `case ${i}: read back`);
      }
      assert.equal((await s.range('k/')).length, 30);
      // A commit that waited for the dead member would take the 5 s timeout: 30 of them 150 s.
      assert.ok(Date.now() - t0 < 60_000, `30 commits with one member down took ${Date.now() - t0} ms`);
    } finally {
      await cluster.restart(0);
      await cluster.waitHealthy();
    }
    await wipe(prefix);
  });

  it('a watch resumes without loss or repeats after its member is killed and restarted', async () => {
    const prefix = freshPrefix('watch-restart');
    const writer = open(prefix);
    const acked: number[] = [];
    const write = async (n: number, tag: string): Promise<void> => {
      for (let i = 0; i < n; i++) acked.push((await writer.commit([], [put(`key/${tag}/${i}`, `${tag}${i}`)])).rev);
    };

    // (1) A watch that can only talk to member 1: events written while member 1 is dead must
    // arrive after it comes back.
    const pinned = open(prefix, { endpoints: [cluster.endpoints[1]!] });
    const w1 = record(pinned, 'key/');
    await w1.ready;
    // (2) A watch over all members, while each member in turn is killed and restarted.
    const w2 = record(writer, 'key/');
    await w2.ready;

    await write(5, 'before');
    for (const m of [1, 0, 2]) {
      await cluster.kill(m);
      try {
        await write(10, `down${m}-`);
      } finally {
        await cluster.restart(m);
      }
      await cluster.waitHealthy();
      // Until its probe finds the member back, the store counts it down, and the next kill
      // would be a second member down: no quorum (fast 503), which is not what this test is about.
      await waitFor(
        'the writer to find the member back',
        () => writer.members().find((x) => x.endpoint === cluster.endpoints[m])?.state === 'ok',
        10_000,
      );
      await write(5, `up${m}-`);
    }
    // A last write (the fence): once a watch delivered it, it delivered everything before it,
    // and a repeated event would be among them.
    const fence = (await writer.commit([], [put('key/fence', '')])).rev;
    acked.push(fence);
    for (const [name, w] of [
      ['pinned to member 1', w1],
      ['all members', w2],
    ] as const) {
      await waitFor(`the fence on the watch ${name}`, () => w.events.some((e) => e.rev === fence), 20_000);
      const revs = w.events.map((e) => e.rev);
      assert.deepEqual(
        revs,
        acked,
        `watch ${name}: got revisions ${JSON.stringify(revs)}, want exactly the acknowledged ${JSON.stringify(acked)}`,
      );
      assert.deepEqual(w.errors, [], `watch ${name}: got errors ${w.errors.map(String).join('; ')}`);
    }
    await w1.close();
    await w2.close();
    await wipe(prefix);
  });

  it('a watch catching up on old revisions resumes after its last batch, not at the revision in the batch header', async () => {
    // etcd sends a catching-up watch its backlog in batches of 1000 revisions, 100 ms apart,
    // each stamped with the CURRENT revision; resuming from that stamp (as etcd3's own watcher
    // does) would skip the rest of the backlog. Kill the member on the first batch.
    const prefix = freshPrefix('catch-up');
    const writer = open(prefix);
    const first = (await writer.commit([], [put('key/first', 'f')])).rev;
    const acked = [first];
    for (let r = 0; r < 25; r++) {
      const revs = await Promise.all(
        Array.from({ length: 100 }, (_, j) => writer.commit([], [put(`key/${r}/${j}`, 'v')]).then((res) => res.rev)),
      );
      acked.push(...revs);
    }
    acked.sort((a, b) => a - b);
    const pinned = open(prefix, { endpoints: [cluster.endpoints[2]!] });
    const events: StoreEvent[] = [];
    const errors: Error[] = [];
    let killing: Promise<void> | undefined;
    let atKill = 0;
    const w = pinned.watch(
      'key/',
      (batch) => {
        events.push(...batch);
        if (!killing) {
          atKill = events.length;
          killing = cluster.kill(2);
        }
      },
      { fromRev: first, onError: (e) => errors.push(e) },
    );
    await waitFor('the first batch', () => killing !== undefined, 10_000);
    await killing;
    assert.ok(atKill < acked.length, `the whole backlog (${atKill} events) arrived in one batch: the test did not interrupt a catch-up`);
    await cluster.restart(2);
    await cluster.waitHealthy();
    // A last write (the fence): once delivered, everything before it was, repeats included.
    const fence = (await writer.commit([], [put('key/fence', '')])).rev;
    acked.push(fence);
    await waitFor(`the fence (got ${events.length} events)`, () => events.some((e) => e.rev === fence), 20_000);
    const revs = events.map((e) => e.rev);
    assert.equal(revs.length, acked.length, `got ${revs.length} events, want ${acked.length}`);
    assert.deepEqual(revs, acked, 'the revisions delivered differ from the acknowledged ones');
    assert.deepEqual(errors, []);
    await w.close();
    await wipe(prefix);
  });

  it('a watch on a paused (hung) member: never reported fresh while it misses a write older than the bound; it moves', async (t) => {
    const BOUND = 1_000;
    const prefix = freshPrefix('paused-watch');
    const reader = open(prefix, { maxStalenessMs: BOUND });
    const applied = new Map<string, { value: string; at: number }>();
    const errors: Error[] = [];
    const { rev } = await reader.rangeWithRevision('');
    const w = reader.watch(
      '',
      (batch) => {
        for (const e of batch) applied.set(e.key, { value: e.value?.toString() ?? '', at: Date.now() });
      },
      { fromRev: rev + 1, onError: (e) => errors.push(e) },
    );
    await w.ready;
    await waitFor('the watch to be fresh', () => w.freshness().state === 'fresh', 5_000);
    const member = cluster.endpoints.indexOf(w.freshness().member!);
    assert.ok(member >= 0, `the watch names its member: ${w.freshness().member}`);
    // A paused follower: the quorum stays, writes go on, only this watch's member hangs.
    await cluster.moveLeader((member + 1) % 3);
    // The writer never talks to the paused member (as another node whose connections are elsewhere).
    const writer = open(prefix, { endpoints: cluster.endpoints.filter((_, i) => i !== member) });
    await writer.commit([], [put('warm', 'up')]);
    await waitFor('the warm-up write to arrive', () => applied.has('warm'), 5_000);
    cluster.pause(member);
    const paused = Date.now();
    const acks: Array<{ key: string; value: string; at: number }> = [];
    const violations: string[] = [];
    const states = new Map<string, number>();
    let writing = true;
    try {
      const load = (async () => {
        for (let i = 0; i < 40; i++) {
          const key = `k/${i}`;
          await writer.commit([], [put(key, `v${i}`)]);
          acks.push({ key, value: `v${i}`, at: Date.now() });
          // The shape of the load (writes spread over about a second, longer than the bound), not
          // a wait for something: a slower machine spreads them further.
          await sleep(25);
        }
        writing = false;
      })();
      // Sample the claim: "fresh" means everything acknowledged before lastFreshAt is applied.
      while (writing || acks.some((a) => applied.get(a.key)?.value !== a.value)) {
        const now = Date.now();
        const f = reader.freshness(now);
        states.set(f.state, (states.get(f.state) ?? 0) + 1);
        if (reader.readable(now) !== (f.state !== 'stale')) violations.push(`readable() says ${reader.readable(now)} in state ${f.state}`);
        if (f.state === 'fresh') {
          for (const a of acks)
            if (a.at < f.lastFreshAt && applied.get(a.key)?.value !== a.value)
              violations.push(`${a.key} acknowledged ${f.lastFreshAt - a.at} ms before lastFreshAt, not applied`);
        }
        if (Date.now() - paused > 30_000) throw new Error('the watch did not catch up within 30 s');
        // The sampling interval of a poll with the deadline above.
        await sleep(5);
      }
      await load;
    } finally {
      cluster.resume(member);
    }
    const lags = acks.map((a) => applied.get(a.key)!.at - a.at);
    const maxLag = Math.max(...lags);
    const moved = w.freshness().member;
    t.diagnostic(
      `watch member ${member} paused: ${acks.length} writes; applied at most ${maxLag} ms after their acknowledgement; ` +
        `the watch moved to ${moved}; states sampled: ${[...states].map(([k, v]) => `${k} ${v}`).join(', ')}`,
    );
    assert.deepEqual(violations.slice(0, 5), [], 'reported fresh while missing acknowledged writes');
    assert.notEqual(moved, cluster.endpoints[member], 'the watch left the paused member');
    // The old behaviour (sitting on the member until gRPC keepalive gave up) took 10 to 15 s.
    assert.ok(maxLag < BOUND + 2_000, `a write was applied ${maxLag} ms after its acknowledgement`);
    assert.deepEqual(errors, []);
    await cluster.waitHealthy();
    await w.close();
    await wipe(prefix);
  });

  it('a leader killed: writes go on (within the timeout) once a new leader is elected', async (t) => {
    const prefix = freshPrefix('leader-kill');
    const s = open(prefix, { timeoutMs: 5_000 });
    const took: number[] = [];
    for (let round = 0; round < 3; round++) {
      await s.commit([], [put('warm', `${round}`)]);
      const leader = await cluster.leader();
      await cluster.kill(leader);
      const t0 = Date.now();
      try {
        const res = await s.commit([{ key: `k/${round}`, rev: 0 }], [put(`k/${round}`, 'v')]);
        assert.equal(res.ok, true);
        took.push(Date.now() - t0);
      } finally {
        await cluster.restart(leader);
        await cluster.waitHealthy();
      }
    }
    t.diagnostic(`first commit after killing the leader: ${took.map((ms) => `${ms} ms`).join(', ')} (etcd's election timeout is 1 s)`);
    await wipe(prefix);
  });

  it('two members down: operations fail fast with StoreUnavailableError, recover after restart, no acknowledged write lost', async (t) => {
    const prefix = freshPrefix('quorum');
    const s = open(prefix, { timeoutMs: 2_000, attemptTimeoutMs: 1_000 });
    const acked = new Set<string>();
    const maybe = new Set<string>();
    let n = 0;
    const attempt = async (): Promise<boolean> => {
      const key = `k/${String(n++).padStart(4, '0')}`;
      try {
        const res = await s.commit([{ key, rev: 0 }], [put(key, 'v')]);
        assert.equal(res.ok, true);
        acked.add(key);
        return true;
      } catch (err) {
        assert.ok(err instanceof StoreUnavailableError, `got ${String(err)}, want StoreUnavailableError`);
        if (err.ambiguous) maybe.add(key);
        return false;
      }
    };
    for (let i = 0; i < 20; i++) assert.equal(await attempt(), true, `case ${i}: commit with every member up failed`);

    await cluster.kill(1);
    await cluster.kill(2);
    try {
      for (let i = 0; i < 2; i++) {
        const t0 = Date.now();
        assert.equal(await attempt(), false, `case ${i}: a commit succeeded without quorum`);
        const took = Date.now() - t0;
        t.diagnostic(`commit ${i} without quorum failed after ${took} ms`);
        assert.ok(took < 10_000, `case ${i}: the commit failed after ${took} ms, want < 10 s`);
      }
      for (const [name, op] of [
        ['get', () => s.get('k/0000')],
        ['range', () => s.range('k/')],
      ] as const) {
        const t0 = Date.now();
        await assert.rejects(op(), StoreUnavailableError, `${name} without quorum`);
        assert.ok(Date.now() - t0 < 10_000, `${name} failed after ${Date.now() - t0} ms, want < 10 s`);
      }
    } finally {
      await cluster.restart(1);
      await cluster.restart(2);
    }
    await cluster.waitHealthy();
    const t0 = Date.now();
    await waitFor('a commit to succeed after the restart', attempt, 20_000);
    const recovery = Date.now() - t0;
    t.diagnostic(
      `first successful commit ${recovery} ms after the cluster was healthy again; ${acked.size} acknowledged, ${maybe.size} ambiguous`,
    );
    for (let i = 0; i < 10; i++) assert.equal(await attempt(), true, `case ${i}: commit after recovery failed`);

    const check = async (when: string): Promise<void> => {
      const present = new Set((await s.range('k/')).map((e) => e.key));
      const lost = [...acked].filter((k) => !present.has(k));
      assert.deepEqual(lost, [], `${when}: acknowledged writes lost: ${JSON.stringify(lost)}`);
      const unexpected = [...present].filter((k) => !acked.has(k) && !maybe.has(k));
      assert.deepEqual(unexpected, [], `${when}: writes that were reported as not applied are present: ${JSON.stringify(unexpected)}`);
    };
    await check('after recovery');
    // Every member killed at once, then restarted: acknowledged means on disk on a quorum.
    await Promise.all([0, 1, 2].map((m) => cluster.kill(m)));
    await Promise.all([0, 1, 2].map((m) => cluster.restart(m)));
    await cluster.waitHealthy();
    // The quorum breaker opened while every member was down; the next probe closes it.
    const t1 = Date.now();
    await waitFor('the store to see the quorum again', () => s.health().write === 'ok', 5_000);
    t.diagnostic(`the store used the quorum again ${Date.now() - t1} ms after the cluster was healthy`);
    await check('after killing and restarting every member');
    assert.ok(recovery < 20_000, `recovery took ${recovery} ms`);
    await wipe(prefix);
  });

  it('an unreachable cluster: every operation fails within its timeout, none hangs; once known, at once', async () => {
    // Ports that were free a moment ago: nothing listens there.
    const ports = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<number>((resolve) => {
            const srv = createServer().listen(0, '127.0.0.1', () => {
              const { port } = srv.address() as { port: number };
              srv.close(() => resolve(port));
            });
          }),
      ),
    );
    const s = open('/minkms-test/nowhere/', { endpoints: ports.map((p) => `http://127.0.0.1:${p}`), timeoutMs: 1_000 });
    const w = s.watch('', () => undefined, { onError: () => undefined });
    const ops: Array<[string, () => Promise<unknown>]> = [
      ['get', () => s.get('k')],
      ['range', () => s.range('')],
      ['commit', () => s.commit([{ key: 'k', rev: 0 }], [put('k', 'v')])],
    ];
    for (const [i, [name, op]] of ops.entries()) {
      const t0 = Date.now();
      await assert.rejects(op(), (err: unknown) => {
        assert.ok(err instanceof StoreUnavailableError, `${name}: got ${String(err)}, want StoreUnavailableError`);
        assert.equal(err.ambiguous, false, `${name}: nothing was sent, yet the error says the outcome is unknown`);
        assert.match(err.message, /no quorum/);
        return true;
      });
      const took = Date.now() - t0;
      // Every member refuses connections: the store knows the quorum is gone after the first
      // probe (or the first operation's timeout at the latest); from then on nothing waits.
      assert.ok(took < 3_000, `${name}: failed after ${took} ms, want at most about the 1000 ms timeout`);
      if (i > 0) assert.ok(took < 500, `${name}: failed after ${took} ms although the store knew there was no quorum`);
    }
    assert.equal(s.health().write, 'unavailable', 'health() reports the missing quorum');
    assert.equal(s.freshness().state, 'offline', 'the watch is offline, not stale, without a quorum');
    await w.close();
    await s.close();
    await assert.rejects(s.get('k'), /after close/);
  });

  it('the options are checked', () => {
    const cases: Array<[string, Partial<EtcdStoreOptions>, RegExp]> = [
      ['no endpoints', { endpoints: [] }, /no endpoints/],
      ['endpoint without scheme', { endpoints: ['127.0.0.1:2379'] }, /http\(s\):\/\/host:port/],
      ['empty prefix', { prefix: '' }, /prefix/],
      ['tls with http endpoint', { tls: { ca: 'x' } }, /http:\/\//],
      ['user without password', { username: 'u' }, /username and password/],
      ['zero timeout', { timeoutMs: 0 }, /timeoutMs/],
    ];
    for (const [i, [name, opts, want]] of cases.entries()) {
      assert.throws(() => new EtcdStore({ endpoints: ['http://127.0.0.1:1'], prefix: '/p/', ...opts }), want, `case ${i} (${name})`);
    }
    const s = new EtcdStore({ endpoints: ['http://127.0.0.1:1'], prefix: '/no-slash' });
    assert.equal(s.prefix, '/no-slash/');
    void s.close();
  });
});

describe('EtcdStore over TLS with client certificates, and etcd users', () => {
  const ca = createCertificateAuthority('minkms test etcd CA', 1);
  const otherCa = createCertificateAuthority('some other CA', 1);
  // etcd 3.4 also uses its server certificate as a client (gateway): give it both usages.
  const server = issueCertificate(ca, { commonName: '127.0.0.1', hosts: ['127.0.0.1'], serverAuth: true, clientAuth: true, days: 1 });
  const client = issueCertificate(ca, { commonName: 'minkms', clientAuth: true, days: 1 });
  const stranger = issueCertificate(otherCa, { commonName: 'minkms', clientAuth: true, days: 1 });
  let tlsCluster: EtcdCluster;
  const tls = { ca: ca.cert, cert: client.cert, key: client.key };

  before(async () => {
    tlsCluster = await startEtcdCluster({ size: 1, tls: { cert: server.cert, key: server.key, ca: ca.cert } });
  });
  after(async () => {
    await tlsCluster?.close();
  });

  const tlsStore = (options: Partial<EtcdStoreOptions>): EtcdStore => {
    const s = new EtcdStore({ endpoints: tlsCluster.endpoints, prefix: '/minkms-tls/', tls, ...options });
    opened.add(s);
    return s;
  };

  it('with the CA and a client certificate the store works; without a valid client certificate it is refused', async () => {
    assert.match(tlsCluster.endpoints[0]!, /^https:/);
    const good = tlsStore({});
    const deadline = Date.now() + 10_000;
    let res;
    for (;;) {
      try {
        res = await good.commit([{ key: 'k', rev: 0 }], [put('k', 'over TLS')]);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err; // the member may still be electing itself
      }
    }
    assert.equal(res.ok, true);
    assert.equal((await good.get('k'))?.value.toString(), 'over TLS');
    const cases: Array<[string, EtcdStoreOptions['tls']]> = [
      ['no client certificate', { ca: ca.cert }],
      ['client certificate from another CA', { ca: ca.cert, cert: stranger.cert, key: stranger.key }],
      ['server not trusted', { ca: otherCa.cert, cert: client.cert, key: client.key }],
    ];
    for (const [i, [name, bad]] of cases.entries()) {
      const s = tlsStore({ tls: bad, timeoutMs: 1_000 });
      const t0 = Date.now();
      await assert.rejects(s.get('k'), (err: unknown) => {
        assert.ok(err instanceof StoreUnavailableError, `case ${i} (${name}): got ${String(err)}, want StoreUnavailableError`);
        return true;
      });
      assert.ok(Date.now() - t0 < 3_000, `case ${i} (${name}): took ${Date.now() - t0} ms`);
      await s.close();
    }
  });

  it('etcd users: the right password works inside the granted prefix; a wrong password or another prefix fails at once, clearly', async () => {
    const root = tlsStore({ prefix: '/unused/' }).client;
    await root.user('root').create('root-password');
    await root.role('root').create();
    await root.user('root').addRole('root');
    await root.role('kms').create();
    await root.role('kms').grant({ permission: 'Readwrite', range: Range.prefix('/minkms-auth/') });
    await root.user('kms').create('kms-password');
    await root.user('kms').addRole('kms');
    await root.auth.authEnable();

    const kms = tlsStore({ prefix: '/minkms-auth/', username: 'kms', password: 'kms-password' });
    const res = await kms.commit([{ key: 'k', rev: 0 }], [put('k', 'as user kms')]);
    assert.equal(res.ok, true);
    assert.equal((await kms.get('k'))?.value.toString(), 'as user kms');
    assert.equal((await kms.range('')).length, 1);

    const cases: Array<[string, Partial<EtcdStoreOptions>, RegExp]> = [
      ['wrong password', { prefix: '/minkms-auth/', username: 'kms', password: 'nope' }, /authentication failed/],
      ['prefix outside the role', { prefix: '/elsewhere/', username: 'kms', password: 'kms-password' }, /permission denied/],
    ];
    for (const [i, [name, options, want]] of cases.entries()) {
      const s = tlsStore(options);
      const t0 = Date.now();
      await assert.rejects(s.commit([], [put('k', 'v')]), (err: unknown) => {
        assert.ok(
          !(err instanceof StoreUnavailableError),
          `case ${i} (${name}): a configuration error reported as unavailability: ${String(err)}`,
        );
        assert.match(String(err), want, `case ${i} (${name})`);
        return true;
      });
      assert.ok(Date.now() - t0 < 2_000, `case ${i} (${name}): took ${Date.now() - t0} ms, want at once`);
      await s.close();
    }
  });
});

describe("EtcdStore on a full etcd (its space quota, etcd's NOSPACE alarm)", () => {
  it('commits fail with StoreFullError (nothing written), reads go on, health() says full until the alarm is disarmed', async () => {
    const small = await startEtcdCluster({ size: 1, extraArgs: ['--quota-backend-bytes=4194304'] });
    const raw = new Etcd3({ hosts: small.endpoints });
    const s = new EtcdStore({ endpoints: small.endpoints, prefix: '/minkms-test/full/' });
    try {
      let n = 0;
      let full: unknown;
      for (; n < 200 && full === undefined; n++) {
        await s.commit([], [put(`k/${n}`, 'x'.repeat(256 * 1024))]).catch((err: unknown) => (full = err));
      }
      assert.ok(full instanceof StoreFullError, `got ${String(full)} after ${n} commits of 256 KiB into a 4 MiB quota`);
      assert.match(full.message, /no space left.*alarm disarm/);
      const refused = await s.commit([{ key: 'refused', rev: 0 }], [put('refused', 'r')]).catch((err: unknown) => err);
      assert.ok(refused instanceof StoreFullError, `a second commit: got ${String(refused)}`);
      assert.equal((await s.get('k/0'))?.value.length, 256 * 1024, 'reads go on');
      const h = s.health();
      assert.equal(h.write, 'full');
      assert.equal(h.fullErrors, 2);
      // The operator's way out: compact, defragment, disarm.
      const deleted = await raw.kv.txn({
        success: [{ request_delete_range: { key: Buffer.from('/minkms-test/full/'), range_end: Buffer.from('/minkms-test/full0') } }],
      });
      // Compacting at the delete's own revision frees the deleted values; defragmenting returns the space.
      const rev = Number(deleted.header.revision);
      await raw.kv.compact({ revision: String(rev) });
      await raw.maintenance.defragment({});
      for (const a of (await raw.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' })).alarms)
        await raw.maintenance.alarm({ action: 'Deactivate', memberID: a.memberID, alarm: a.alarm });
      await waitFor('health() to see the alarm gone', () => s.health().write === 'ok', 10_000);
      assert.equal((await s.commit([], [put('after', 'a')])).ok, true);
      assert.equal(await s.get('refused'), undefined, 'the refused commit wrote nothing');
    } finally {
      await s.close();
      raw.close();
      await small.close();
    }
  });
});
