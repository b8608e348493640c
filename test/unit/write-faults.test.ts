/**
 * The domain's write path under store faults, with fault-injecting store wrappers around a
 * MemoryStore (no etcd): catalogued errors for each failure (unavailable, outcome unknown,
 * full), deadlines (a queued write whose deadline passed is never sent), safe retries of a
 * create whose outcome was unknown (on the same and on another node, and only those), the
 * first-start race of root-key.ts replayed deterministically, atomic files, and the local
 * soft HSM key file.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kms } from '../../src/kms/kms.js';
import { retryPath, RETRY_WINDOW_MS } from '../../src/kms/retries.js';
import { Barrier } from '../../src/store/barrier.js';
import { MemoryStore } from '../../src/store/memory.js';
import {
  StoreFullError,
  StoreUnavailableError,
  type CommitOptions,
  type CommitResult,
  type Condition,
  type Mutation,
  type Store,
  type StoreEntry,
} from '../../src/store/store.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { KmsError, type ErrorCode } from '../../src/errors.js';
import { openRootKey, CLUSTER_KEY } from '../../src/hsm/root-key.js';
import { SoftHsm, generateSoftHsmKey } from '../../src/hsm/soft.js';
import { writeFileAtomic } from '../../src/store/atomic-file.js';
import { loadLocalSoftHsmKey } from '../../src/hsm/local-key.js';
import { waitFor } from '../helpers/wait.js';
import { rejectsWith } from '../helpers/clients.js';

const ROOT = generateApiKey('k1').identity;
const ALICE = generateApiKey('k1').identity;
const BOB = generateApiKey('k1').identity;

type Fault = 'ambiguous-applied' | 'ambiguous-lost' | 'unavailable' | 'full';

/**
 * A store that passes everything to `inner`, except that the next commits fail as queued in
 * `faults`: `ambiguous-applied` applies the commit and then reports an unknown outcome (the
 * answer was lost), `ambiguous-lost` reports an unknown outcome without applying it.
 */
class FaultyStore implements Store {
  readonly kind = 'faulty';
  readonly inner: Store;
  readonly faults: Fault[] = [];
  readonly commits: Array<{ mutations: readonly Mutation[]; options: CommitOptions | undefined }> = [];
  /** Holds commits until released (to build a queue behind a slow write). */
  gate: Promise<void> | undefined;
  readonly timeoutMs?: number;

  constructor(inner: Store, timeoutMs?: number) {
    this.inner = inner;
    if (timeoutMs !== undefined) this.timeoutMs = timeoutMs;
  }

  /** The keys read, in order, each once its read was answered. */
  readonly gets: string[] = [];

  async get(key: string): Promise<StoreEntry | undefined> {
    const entry = await this.inner.get(key);
    this.gets.push(key);
    return entry;
  }
  range(prefix: string): Promise<StoreEntry[]> {
    return this.inner.range(prefix);
  }
  async commit(conditions: readonly Condition[], mutations: readonly Mutation[], options?: CommitOptions): Promise<CommitResult> {
    this.commits.push({ mutations, options });
    if (this.gate) await this.gate;
    const fault = this.faults.shift();
    if (fault === 'unavailable') throw new StoreUnavailableError('injected: no quorum');
    if (fault === 'full') throw new StoreFullError('injected: no space left');
    if (fault === 'ambiguous-lost') throw new StoreUnavailableError('injected: no answer', { ambiguous: true });
    const res = await this.inner.commit(conditions, mutations);
    if (fault === 'ambiguous-applied') throw new StoreUnavailableError('injected: the answer was lost', { ambiguous: true });
    return res;
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Two "nodes" (Kms instances) over one shared store, each through its own faulty wrapper. */
async function twoNodes(
  timeoutMs?: number,
): Promise<{ shared: MemoryStore; a: FaultyStore; b: FaultyStore; kmsA: Kms; reloadB(): Promise<Kms> }> {
  const shared = new MemoryStore();
  const rek = randomBytes(32);
  const clusterId = randomUUID();
  const a = new FaultyStore(shared, timeoutMs);
  const b = new FaultyStore(shared, timeoutMs);
  const kmsA = await Kms.load(a, new Barrier(rek, clusterId), { rootIdentity: ROOT });
  await kmsA.createEnclave(ROOT, 'e');
  // Node B loads what is in the store now (as a node following the change feed would see it).
  const reloadB = () => Kms.load(b, new Barrier(Buffer.from(rek), clusterId), { rootIdentity: ROOT });
  return { shared, a, b, kmsA, reloadB };
}

describe('store failures on the write path', () => {
  it('each failure is a distinct catalogued error, and nothing is half-applied', async () => {
    const cases: Array<{ fault: Fault; code: ErrorCode; applied: boolean }> = [
      { fault: 'unavailable', code: 'ERR_STORE_UNAVAILABLE', applied: false },
      { fault: 'ambiguous-lost', code: 'ERR_STORE_OUTCOME_UNKNOWN', applied: false },
      { fault: 'ambiguous-applied', code: 'ERR_STORE_OUTCOME_UNKNOWN', applied: true },
      { fault: 'full', code: 'ERR_STORE_FULL', applied: false },
    ];
    for (const [i, c] of cases.entries()) {
      const { a, kmsA, shared } = await twoNodes();
      a.faults.push(c.fault);
      await rejectsWith(kmsA.createKey(ALICE, 'e', 'k', '', false), c.code, `case ${i} (${c.fault})`);
      const stored = (await shared.range('key/')).length;
      assert.equal(stored, c.applied ? 1 : 0, `case ${i} (${c.fault}): ${stored} key records in the store`);
      // The node's memory only follows acknowledged writes (the feed brings the rest).
      assert.throws(() => kmsA.keyStatus('e', 'k', 0), /key does not exist/, `case ${i} (${c.fault}): in memory before any ack`);
    }
  });

  it('the outcome-unknown error says so, and is a 503 distinct from "try again"', () => {
    const unknown = new KmsError('ERR_STORE_OUTCOME_UNKNOWN');
    const unavailable = new KmsError('ERR_STORE_UNAVAILABLE');
    assert.equal(unknown.status, 503);
    assert.match(unknown.message, /^store unavailable: outcome unknown, check before retrying$/);
    assert.notEqual(unknown.message, unavailable.message);
    assert.equal(new KmsError('ERR_STORE_FULL').status, 507);
  });
});

describe('a retry after an unknown outcome', () => {
  it('KEY:CREATE by the same requester with the same parameters succeeds on the same node and on another one', async () => {
    const { a, kmsA, shared, reloadB } = await twoNodes();
    a.faults.push('ambiguous-applied');
    await rejectsWith(kmsA.createKey(ALICE, 'e', 'k', 'AES256', false), 'ERR_STORE_OUTCOME_UNKNOWN', 'first attempt');
    // Node A's change feed brings the record it could not confirm.
    const rec = (await shared.get('key/e/k'))!;
    kmsA.followChanges();
    kmsA.applyChange(rec.key, rec.value, rec.rev);
    const before = kmsA.keyStatus('e', 'k', 0);
    // Node A recognizes the retry at once (it remembers the attempt).
    await kmsA.createKey(ALICE, 'e', 'k', 'AES256', false);
    // Node B recognizes it once node A has published the attempt.
    await waitFor('the attempt is published', async () => (await shared.get(retryPath('key/e/k'))) !== undefined);
    const kmsB = await reloadB();
    await kmsB.createKey(ALICE, 'e', 'k', 'AES256', false);
    await kmsB.createKey(ALICE, 'e', 'k', '', false); // '' = the default type, AES256: the same request
    const after = kmsB.keyStatus('e', 'k', 0);
    assert.deepEqual(after, before, 'the retries changed nothing');
    assert.deepEqual(kmsA.keyStatus('e', 'k', 0), before);
    assert.equal((await shared.range('key/')).length, 1);
  });

  it('only such a retry: other requesters, other parameters, later versions and plain duplicates get 409', async () => {
    const { a, kmsA, shared, reloadB } = await twoNodes();
    a.faults.push('ambiguous-applied');
    await rejectsWith(kmsA.createKey(ALICE, 'e', 'k', 'AES256', false), 'ERR_STORE_OUTCOME_UNKNOWN', 'first attempt');
    await waitFor('the attempt is published', async () => (await shared.get(retryPath('key/e/k'))) !== undefined);
    const kmsB = await reloadB();
    await rejectsWith(kmsB.createKey(BOB, 'e', 'k', 'AES256', false), 'ERR_KEY_EXISTS', 'another requester');
    await rejectsWith(kmsB.createKey(ALICE, 'e', 'k', 'ChaCha20', false), 'ERR_KEY_EXISTS', 'another key type');
    await rejectsWith(kmsB.importKey(ALICE, 'e', 'k', 'AES256', randomBytes(32)), 'ERR_KEY_EXISTS', 'an import over it');
    // A plain duplicate (the first create was acknowledged) keeps the wire contract's 409.
    await kmsB.createKey(ALICE, 'e', 'plain', 'AES256', false);
    await rejectsWith(kmsB.createKey(ALICE, 'e', 'plain', 'AES256', false), 'ERR_KEY_EXISTS', 'plain duplicate');
    // Once the key has a second version, a create is no retry of the first one.
    await kmsB.createKey(ALICE, 'e', 'k', '', true);
    await rejectsWith(kmsB.createKey(ALICE, 'e', 'k', 'AES256', false), 'ERR_KEY_EXISTS', 'after a new version');
  });

  it('a lost attempt is simply created by the retry; an expired note is no longer a retry', async () => {
    const { a, kmsA, shared } = await twoNodes();
    a.faults.push('ambiguous-lost');
    await rejectsWith(kmsA.createKey(ALICE, 'e', 'k', '', false), 'ERR_STORE_OUTCOME_UNKNOWN', 'first attempt');
    await kmsA.createKey(ALICE, 'e', 'k', '', false);
    assert.equal((await shared.range('key/')).length, 1);
    // The retry's create succeeded, so the record is its own and the note of the lost attempt is
    // dropped at once (even when both carry the same millisecond): a later duplicate is no retry,
    // and nothing is published.
    await rejectsWith(kmsA.createKey(ALICE, 'e', 'k', '', false), 'ERR_KEY_EXISTS', 'a duplicate after the retry');
    assert.equal(await shared.get(retryPath('key/e/k')), undefined, 'a lost attempt is not published');
    assert.equal(RETRY_WINDOW_MS, 300_000, 'the documented window');
  });

  it('ENCLAVE:CREATE and KEY:IMPORT retries succeed too', async () => {
    const { a, kmsA, shared, reloadB } = await twoNodes();
    a.faults.push('ambiguous-applied');
    await rejectsWith(kmsA.createEnclave(ALICE, 'tenant'), 'ERR_STORE_OUTCOME_UNKNOWN', 'enclave');
    const material = randomBytes(32);
    a.faults.push('ambiguous-applied');
    await rejectsWith(kmsA.importKey(ALICE, 'e', 'imp', 'AES256', material), 'ERR_STORE_OUTCOME_UNKNOWN', 'import');
    await waitFor('both attempts are published', async () => (await shared.range('retry/')).length === 2);
    const kmsB = await reloadB();
    await kmsB.createEnclave(ALICE, 'tenant');
    await rejectsWith(kmsB.createEnclave(BOB, 'tenant'), 'ERR_ENCLAVE_EXISTS', 'enclave, another requester');
    await kmsB.importKey(ALICE, 'e', 'imp', 'AES256', material);
    await rejectsWith(kmsB.importKey(ALICE, 'e', 'imp', 'AES256', randomBytes(32)), 'ERR_KEY_EXISTS', 'import of other material');
  });
});

describe('write deadlines', () => {
  it('a write whose deadline passes while earlier writes hold the lock is never sent; a started one carries its deadline', async () => {
    const { a, kmsA } = await twoNodes();
    let release!: () => void;
    a.gate = new Promise<void>((r) => (release = r));
    const sentBefore = a.commits.length;
    const slow = kmsA.createKey(ALICE, 'e', 'slow', '', false, { deadline: Date.now() + 60_000 });
    const queuedDeadline = Date.now() + 100;
    const queued = kmsA.createKey(ALICE, 'e', 'queued', '', false, { deadline: queuedDeadline });
    await waitFor("the queued write's deadline to pass", () => Date.now() > queuedDeadline, 5_000, 10);
    a.gate = undefined;
    release();
    await slow;
    await rejectsWith(queued, 'ERR_STORE_TIMEOUT', 'queued past its deadline');
    assert.equal(a.commits.length - sentBefore, 1, 'only the first write reached the store');
    const deadline = a.commits.at(-1)!.options?.deadline;
    assert.ok(deadline !== undefined && deadline > Date.now(), `the commit carried the write's deadline, got ${deadline}`);
    assert.throws(() => kmsA.keyStatus('e', 'queued', 0), /key does not exist/);
  });

  it('without a deadline, a write is bounded by the store timeout', async () => {
    const { a, kmsA } = await twoNodes(150);
    let release!: () => void;
    a.gate = new Promise<void>((r) => (release = r));
    const sent = a.commits.length;
    const t0 = Date.now();
    const first = kmsA.createKey(ALICE, 'e', 'first', '', false);
    const second = kmsA.createKey(ALICE, 'e', 'second', '', false);
    await waitFor('the first commit is sent', async () => a.commits.length > sent);
    // Both deadlines were set between t0 and now (t1): the store timeout after that.
    const t1 = Date.now();
    const d = a.commits.at(-1)!.options?.deadline;
    assert.ok(
      d !== undefined && d >= t0 + 150 && d <= t1 + 150,
      `the first commit's deadline is the 150 ms store timeout: ${d === undefined ? d : `t0 + ${d - t0} ms, t1 + ${d - t1} ms`}`,
    );
    await waitFor("the second write's deadline to pass", () => Date.now() > t1 + 150, 5_000, 10);
    a.gate = undefined;
    release();
    await first;
    await rejectsWith(second, 'ERR_STORE_TIMEOUT', 'the second write waited longer than the store timeout');
    assert.equal(a.commits.length, sent + 1, 'the second write was never sent');
  });
});

describe('concurrent first start (root-key.ts)', () => {
  it('the loser of the race for the cluster record joins the winner, at every interleaving', async () => {
    const hsmKey = generateSoftHsmKey();
    // The loser reads "no cluster record", then the winner commits, then the loser looks at
    // the data (the interleaving that made the loser call the store damaged) or commits.
    for (const [i, step] of ['before-range', 'before-commit'].entries()) {
      const shared = new MemoryStore();
      let winner: Promise<unknown> | undefined;
      const loserStore: Store = {
        kind: 'memory',
        get: (k) => shared.get(k),
        range: async (p) => {
          if (step === 'before-range' && !winner) await (winner = openRootKey(shared, [new SoftHsm(hsmKey)]));
          return shared.range(p);
        },
        commit: async (c, m) => {
          if (step === 'before-commit' && !winner) await (winner = openRootKey(shared, [new SoftHsm(hsmKey)]));
          return shared.commit(c, m);
        },
        close: async () => undefined,
      };
      const loser = await openRootKey(loserStore, [new SoftHsm(hsmKey)]);
      const won = (await winner) as Awaited<ReturnType<typeof openRootKey>>;
      assert.ok(won, `case ${i} (${step}): the winner ran`);
      assert.equal(won.created, true, `case ${i} (${step}): the winner created the cluster`);
      assert.equal(loser.created, false, `case ${i} (${step}): the loser joined`);
      assert.equal(loser.clusterId, won.clusterId, `case ${i} (${step}): one cluster`);
      assert.ok(loser.rek.equals(won.rek), `case ${i} (${step}): one root key`);
      assert.equal(JSON.parse((await shared.get(CLUSTER_KEY))!.value.toString()).id, won.clusterId);
    }
  });

  it('real damage (data but no cluster record) is still refused', async () => {
    const shared = new MemoryStore([{ key: 'enclave/x', value: Buffer.from('x') }]);
    await assert.rejects(openRootKey(shared, [new SoftHsm(generateSoftHsmKey())]), /data but no cluster record/);
  });
});

describe('files written atomically', () => {
  it('writeFileAtomic: the content, the mode, no temporary file left; a failure leaves the old file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'minkms-atomic-'));
    try {
      const f = join(dir, 'secret');
      writeFileAtomic(f, 'one\n', 0o600);
      assert.equal(readFileSync(f, 'utf8'), 'one\n');
      assert.equal(statSync(f).mode & 0o777, 0o600);
      writeFileAtomic(f, Buffer.from('two\n'), 0o644);
      assert.equal(readFileSync(f, 'utf8'), 'two\n');
      assert.deepEqual(readdirSync(dir), ['secret'], 'no temporary file is left');
      // A target in a missing directory: the error names it, nothing else changes.
      writeFileSync(join(dir, 'keep'), 'old');
      assert.throws(() => writeFileAtomic(join(dir, 'missing-dir', 'f'), 'x'), /cannot write .*missing-dir/);
      assert.deepEqual(readdirSync(dir).sort(), ['keep', 'secret']);
      assert.equal(readFileSync(join(dir, 'keep'), 'utf8'), 'old');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a damaged hsm.key: explained when a database exists, replaced when none does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'minkms-localkey-'));
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    try {
      const file = join(dir, 'hsm.key');
      const db = join(dir, 'minkms.db');
      for (const [i, content] of ['', 'hsm:aes256:AAAA'].entries()) {
        writeFileSync(file, content);
        writeFileSync(db, '');
        assert.throws(
          () => loadLocalSoftHsmKey(file, { create: false, database: db, warn }),
          (err: Error) =>
            err.message.includes(file) && /restore .* from a backup/.test(err.message) && /MINIO_KMS_HSM_KEY/.test(err.message),
          `case ${i}: a damaged key next to a database`,
        );
        rmSync(db);
        const key = loadLocalSoftHsmKey(file, { create: true, database: db, warn });
        assert.ok(key?.startsWith('hsm:aes256:'), `case ${i}: a new key when no database exists`);
        assert.equal(readFileSync(file, 'utf8').trim(), key);
        assert.equal(loadLocalSoftHsmKey(file, { create: true, database: db, warn }), key, `case ${i}: the stored key is used again`);
        rmSync(file);
      }
      assert.equal(loadLocalSoftHsmKey(file, { create: false, database: db, warn }), undefined, 'no file, no creation: none');
      assert.ok(!existsSync(file));
      assert.ok(warnings.some((w) => /interrupted first start/.test(w)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
