/**
 * `minkms server --workers N` (docs/workers.md): N processes accept on one port with one view of
 * the state. A write through one worker is visible through every other when it is acknowledged,
 * a deletion applies everywhere before it is acknowledged, the audit log is one hash chain, the
 * metrics and the log stream are the node's, and a worker killed with SIGKILL loses nothing
 * acknowledged and is started again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { freePort, MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor, newUser, rejectsWith, settledAuditLines } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { streamLogs } from '../../src/client/logs.js';
import { verifyAuditFile } from '../../src/server/audit.js';
import { KmsClient } from '../../src/client/client.js';

const WORKERS = 2;
/** Fresh clients, one connection each: the primary hands connections to the workers in turn. */
const CONNECTIONS = 8;

let server: TestServer;
let root: KmsClient;
let work: string;
let auditFile: string;

/** The worker processes' pids from the banner (`Workers 2 processes (pids 1, 2)`), or after a restart the log. */
function workerPids(): number[] {
  const m = /Workers\s+\d+ processes \(pids ([\d, ]+)\)/.exec(server.output());
  assert.ok(m, 'the banner names the workers');
  return m[1]!.split(', ').map(Number);
}

/** CPU time (user + system, clock ticks) a process has used. */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** `n` clients with an open connection each (so that a later request does not open a new one). */
async function connections(apiKey: string, n = CONNECTIONS): Promise<KmsClient[]> {
  const out: KmsClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = clientFor(server, apiKey);
    await c.version();
    out.push(c);
  }
  return out;
}

async function scrape(c: KmsClient): Promise<string> {
  const res = await c.transport.request({ method: 'GET', path: '/v1/health/metrics' });
  assert.equal(res.status, 200);
  return res.body.toString('utf8');
}

function sample(text: string, series: string): number {
  for (const line of text.split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return 0;
}

/** The worker processes running now (the primary's children). */
function liveWorkers(): number[] {
  const primary = server.pid();
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${primary}/task`)) {
      const children = readFileSync(`/proc/${primary}/task/${task}/children`, 'utf8').trim();
      if (children) out.push(...children.split(/\s+/).map(Number));
    }
  } catch {
    // the primary is gone
  }
  return out;
}

describe(`--workers ${WORKERS}`, () => {
  before(async () => {
    work = tempDir('minkms-workers-');
    auditFile = join(work, 'audit.log');
    // A fixed port: the node keeps it across its restart.
    server = await startServer({
      dir: join(work, 'data'),
      port: await freePort(),
      args: ['--workers', String(WORKERS), '--audit-file', auditFile],
    });
    root = clientFor(server, server.apiKey);
    // The first worker serves first; the others join once they follow the store.
    await waitFor('every worker to serve', () => /=> All \d+ workers serve/.test(server.output()), 60_000);
    await root.createEnclave('w');
  });
  after(async () => {
    root?.close();
    await server?.stop();
    if (work) removeDir(work);
  });

  test('one banner for the node; every worker serves connections on the one port', async () => {
    const out = server.output();
    assert.equal(out.match(/Server is up and running/g)?.length, 1, out);
    const pids = workerPids();
    assert.equal(pids.length, WORKERS);
    await root.createKey('w', { name: 'busy' });
    const clients = await connections(server.apiKey);
    const before = pids.map(cpuTicks);
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < 150; i++) await c.generateKey('w', [{ name: 'busy' }]);
      }),
    );
    const used = pids.map((p, i) => cpuTicks(p) - before[i]!);
    for (const [i, ticks] of used.entries()) assert.ok(ticks > 0, `worker ${pids[i]} served nothing: ${used.join(', ')} ticks`);
    clients.forEach((c) => c.close());
  });

  test('a key created through one worker is usable through every other when acknowledged; a deletion applies everywhere', async () => {
    const clients = await connections(server.apiKey);
    for (let round = 0; round < 5; round++) {
      const name = `k-${round}`;
      await root.createKey('w', { name });
      const made = await Promise.all(clients.map((c) => c.generateKey('w', [{ name }]).then((r) => r[0]!)));
      // Every worker opens what every other sealed.
      for (const [i, c] of clients.entries()) {
        const dek = made[(i + 1) % made.length]!;
        const [plain] = await c.decrypt('w', [{ name, version: dek.version, ciphertext: dek.ciphertext }]);
        assert.ok(plain!.plaintext.equals(dek.plaintext));
      }
      await root.deleteKey('w', { name });
      for (const c of clients) await rejectsWith(c.generateKey('w', [{ name }]), 'ERR_KEY_NOT_FOUND', `round ${round}`);
    }
    clients.forEach((c) => c.close());
  });

  test('an identity deleted through one worker is refused by every worker when acknowledged', async () => {
    await root.createKey('w', { name: 'shared' });
    await root.createPolicy('w', { name: 'gen', allow: { 'KEY:GENERATE': { rules: { shared: {} } } } });
    const user = newUser(server);
    user.client.close();
    await root.createIdentity('w', { identity: user.identity });
    await root.assignPolicy('w', user.identity, 'gen');
    const clients = await connections(user.apiKey);
    for (const c of clients) await c.generateKey('w', [{ name: 'shared' }]);
    await root.deleteIdentity('w', user.identity);
    for (const c of clients) await rejectsWith(c.generateKey('w', [{ name: 'shared' }]), 'ERR_NOT_ALLOWED');
    clients.forEach((c) => c.close());
  });

  test('metrics are the node’s: requests of every worker are counted in one scrape', async () => {
    const clients = await connections(server.apiKey);
    const series = 'minkms_commands_total{command="KEY:STATUS",status="200"}';
    const before = sample(await scrape(root), series);
    const per = 20;
    await root.createKey('w', { name: 'counted' });
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < per; i++) await c.keyStatus('w', [{ name: 'counted' }]);
      }),
    );
    // Whichever worker answers the scrape, it counts every worker's requests.
    for (const c of clients) assert.equal(sample(await scrape(c), series) - before, per * clients.length);
    clients.forEach((c) => c.close());
  });

  test('the log stream of one worker carries the records of every worker', async () => {
    const clients = await connections(server.apiKey);
    const records: { message: string }[] = [];
    const ac = new AbortController();
    const stream = streamLogs(root, { level: 0, message: 'KEY:CREATE', signal: ac.signal }, (r) => records.push(r));
    // The stream is open once a record of its own worker arrives. (Records at the node's log
    // level reach every worker anyway; the dev-mode test below streams records below it.)
    await waitFor('the log stream to be open', async () => {
      await root.createKey('w', { name: `probe-${Date.now()}` });
      return records.length > 0;
    });
    const names = clients.map((_, i) => `logged-${i}`);
    await Promise.all(clients.map((c, i) => c.createKey('w', { name: names[i]! })));
    await waitFor('a record of every key creation', () => names.every((n) => records.some((r) => r.message.includes(n))), 20_000);
    ac.abort();
    await stream.catch(() => undefined);
    clients.forEach((c) => c.close());
  });

  test('the audit log is one hash chain with the lines of every worker', async () => {
    const lines = await settledAuditLines(root, auditFile);
    assert.ok(lines.length > 100, `${lines.length} audit lines`);
    assert.deepEqual(verifyAuditFile(auditFile), { ok: true, lines: lines.length });
  });

  test('kill -9 of a worker under writes: nothing acknowledged is lost, the worker is started again', async () => {
    const pids = workerPids();
    const clients = await connections(server.apiKey);
    const acknowledged: string[] = [];
    let stop = false;
    const writers = clients.map(async (c, i) => {
      for (let n = 0; !stop; n++) {
        const name = `load-${i}-${n}`;
        try {
          await c.createKey('w', { name });
          acknowledged.push(name);
        } catch {
          // the worker of this connection was killed: its request fails, the client tries elsewhere next time
        }
      }
    });
    await waitFor('writes under way', () => acknowledged.length >= 40);
    const created = 'minkms_commands_total{command="KEY:CREATE",status="200"}';
    const countedBefore = sample(await scrape(root), created);
    process.kill(pids[1]!, 'SIGKILL');
    const at = acknowledged.length;
    await waitFor('more writes after the kill', () => acknowledged.length >= at + 80, 30_000);
    await waitFor('the worker started again', () => /worker process serves again/.test(server.output()), 30_000);
    stop = true;
    await Promise.all(writers);
    clients.forEach((c) => c.close());

    // Through every worker (the restarted one included, once it serves), every acknowledged key is there.
    const fresh = await connections(server.apiKey);
    await waitFor('every worker to serve', async () => {
      for (const c of fresh) await c.keyStatus('w', [{ name: acknowledged[0]! }]);
      return true;
    });
    for (const c of fresh) {
      const listed = new Set<string>();
      let continueAt = '';
      for (;;) {
        const page = await c.listKeys('w', { prefix: 'load-', continueAt, limit: 1000 });
        page.keys.forEach((k) => listed.add(k.name));
        if (!page.continueAt) break;
        continueAt = page.continueAt;
      }
      const missing = acknowledged.filter((n) => !listed.has(n));
      assert.deepEqual(missing, [], `${missing.length} acknowledged keys missing`);
    }
    // The node's counters do not go back when a worker exits (Prometheus would see a reset).
    for (const c of fresh) assert.ok(sample(await scrape(c), created) >= countedBefore + 80, 'KEY:CREATE counted');
    fresh.forEach((c) => c.close());
    assert.deepEqual(verifyAuditFile(auditFile).ok, true);
  });

  test('a hung worker (SIGSTOP) holds writes at most the acknowledgement timeout, then is replaced', async () => {
    const serving = () => server.output().match(/worker process serves again/g)?.length ?? 0;
    const before = serving();
    const [hung] = liveWorkers();
    const clients = await connections(server.apiKey);
    process.kill(hung!, 'SIGSTOP');
    // Should the test fail before the primary kills it, a stopped worker must not outlive it
    // (only if that pid is still this node's worker: pids are reused).
    after(() => {
      if (liveWorkers().includes(hung!)) process.kill(hung!, 'SIGKILL');
    });
    const t0 = performance.now();
    // Connections of the hung worker get no answer; the others' writes wait for it, then go on.
    const outcomes = await Promise.all(
      clients.map((c, i) =>
        c.createKey('w', { name: `during-hang-${i}` }).then(
          () => performance.now() - t0,
          () => -1,
        ),
      ),
    );
    const done = outcomes.filter((ms) => ms >= 0);
    assert.ok(done.length > 0, `writes through the other worker completed:\n${server.output().split('\n').slice(-12).join('\n')}`);
    assert.ok(Math.max(...done) < 20_000, `writes waited ${Math.round(Math.max(...done))} ms (acknowledgement timeout 5 s)`);
    assert.match(server.output(), /worker does not answer; killing it/);
    await waitFor('the hung worker replaced', () => !liveWorkers().includes(hung!) && serving() > before, 30_000);
    clients.forEach((c) => c.close());
    // What was acknowledged is there through every worker.
    const fresh = await connections(server.apiKey);
    for (const c of fresh) {
      for (const [i, ms] of outcomes.entries()) {
        if (ms >= 0) assert.equal((await c.keyStatus('w', [{ name: `during-hang-${i}` }]))[0]!.name, `during-hang-${i}`);
      }
    }
    fresh.forEach((c) => c.close());
  });

  test('a worker started again gets the records below the log level that streams want', async () => {
    // KEY:STATUS is logged at DEBUG, below the node's level (INFO): only a stream that wants
    // DEBUG makes a worker produce it — the restarted worker must be told.
    const records: { message: string }[] = [];
    const ac = new AbortController();
    const stream = streamLogs(root, { level: -4, message: 'KEY:STATUS', signal: ac.signal }, (r) => records.push(r));
    await root.createKey('w', { name: 'stat-0' });
    await waitFor('the stream to be open', async () => {
      await root.keyStatus('w', [{ name: 'stat-0' }]);
      return records.length > 0;
    });
    const clients = await connections(server.apiKey);
    await waitFor('records of every connection, so of both workers', async () => {
      await Promise.all(clients.map((c) => c.keyStatus('w', [{ name: 'stat-0' }])));
      return records.length >= clients.length * 2;
    });
    const names = clients.map((_, i) => `stat-${i + 1}`);
    for (const n of names) await root.createKey('w', { name: n });
    await Promise.all(clients.map((c, i) => c.keyStatus('w', [{ name: names[i]! }])));
    await waitFor('a record of every status request', () => names.every((n) => records.some((r) => r.message.includes(n))), 20_000);
    ac.abort();
    await stream.catch(() => undefined);
    clients.forEach((c) => c.close());
  });

  test('a root key rotation and a restored backup through one worker are followed by every worker', async () => {
    await root.createKey('w', { name: 'before-rotation' });
    const [old] = await root.generateKey('w', [{ name: 'before-rotation' }]);
    const snapshot = await root.readDb();
    const { term } = await root.rotateRoot();
    assert.ok(term >= 2);
    await root.createKey('w', { name: 'after-backup' });
    const clients = await connections(server.apiKey);
    for (const c of clients) {
      const [plain] = await c.decrypt('w', [{ name: 'before-rotation', version: old!.version, ciphertext: old!.ciphertext }]);
      assert.ok(plain!.plaintext.equals(old!.plaintext));
      await c.generateKey('w', [{ name: 'after-backup' }]);
    }
    await root.writeDb(snapshot);
    for (const c of clients) {
      await waitFor('the restored state on every worker', async () => {
        await rejectsWith(c.keyStatus('w', [{ name: 'after-backup' }]), 'ERR_KEY_NOT_FOUND');
        return true;
      });
      const [plain] = await c.decrypt('w', [{ name: 'before-rotation', version: old!.version, ciphertext: old!.ciphertext }]);
      assert.ok(plain!.plaintext.equals(old!.plaintext));
    }
    clients.forEach((c) => c.close());
  });

  test('a restart request restarts the whole node: every worker, with the state', async () => {
    await root.createKey('w', { name: 'survives-restart' });
    await root.restart({ self: true });
    await waitFor(
      'the node back',
      async () => server.restarts() === 1 && /Server is up and running[\s\S]*Server is up and running/.test(server.output()),
      60_000,
    );
    assert.match(server.output(), /=> Restarting: restart requested/);
    root.close();
    root = clientFor(server, server.apiKey);
    await waitFor('every worker after the restart', () => server.output().match(/=> All \d+ workers serve/g)?.length === 2, 60_000);
    const clients = await connections(server.apiKey);
    for (const c of clients) assert.equal((await c.keyStatus('w', [{ name: 'survives-restart' }]))[0]!.name, 'survives-restart');
    clients.forEach((c) => c.close());
  });
});

test('--workers with --dev: one ephemeral HSM key for every worker; a stream below the log level gets every worker’s records; the data is deleted on stop', async () => {
  const s = await startServer({ hsmKey: null, args: ['--dev', '--workers', '2', '--log-level', 'error'] });
  try {
    await waitFor('every worker to serve', () => /=> All \d+ workers serve/.test(s.output()), 60_000);
    const data = /Data\s+(\S+) \(dev mode: deleted on exit\)/.exec(s.output())?.[1];
    assert.ok(data, s.output());
    // Dev mode writes its certificate into its temporary directory.
    const ca = readFileSync(join(data, 'certs', 'public.crt'), 'utf8');
    const connect = () => new KmsClient({ endpoints: [s.host], apiKey: s.apiKey, ca, timeoutMs: 15_000 });
    const c = connect();
    await c.createEnclave('d');
    await c.createKey('d', { name: 'k' });
    const clients = Array.from({ length: 4 }, connect);
    const deks = await Promise.all(clients.map((x) => x.generateKey('d', [{ name: 'k' }]).then((r) => r[0]!)));
    for (const [i, x] of clients.entries()) {
      const dek = deks[(i + 1) % deks.length]!;
      const [p] = await x.decrypt('d', [{ name: 'k', version: dek.version, ciphertext: dek.ciphertext }]);
      assert.ok(p!.plaintext.equals(dek.plaintext));
    }
    // KEY:CREATE is logged at INFO, below the node's level: a stream that wants INFO makes
    // every worker produce and forward those records.
    const records: { message: string }[] = [];
    const ac = new AbortController();
    const stream = streamLogs(c, { level: 0, message: 'KEY:CREATE', signal: ac.signal }, (r) => records.push(r));
    await waitFor('the log stream to be open everywhere', async () => {
      await Promise.all(clients.map((x, i) => x.createKey('d', { name: `probe-${i}-${Date.now()}` })));
      return new Set(records.map((r) => /probe-(\d)/.exec(r.message)?.[1])).size === clients.length;
    });
    const names = clients.map((_, i) => `below-level-${i}`);
    await Promise.all(clients.map((x, i) => x.createKey('d', { name: names[i]! })));
    await waitFor('a record of every creation', () => names.every((n) => records.some((r) => r.message.includes(n))), 20_000);
    ac.abort();
    await stream.catch(() => undefined);
    clients.forEach((x) => x.close());
    c.close();
    await s.stop();
    assert.equal(s.process.exitCode, 0);
    assert.throws(() => readFileSync(join(data, 'minkms.db')), /ENOENT/);
  } finally {
    await s.stop();
  }
});

test('--workers needs the embedded store: with etcd it exits 2 and says why', () => {
  const dir = tempDir('minkms-workers-etcd-');
  try {
    const config = join(dir, 'config.yaml');
    const tls = `tls:\n  certs:\n    - key: ${join(dir, 'k')}\n      cert: ${join(dir, 'c')}\n`;
    writeFileSync(config, `version: v1\nstore:\n  backend: etcd\n  etcd:\n    endpoints: [http://127.0.0.1:1]\n${tls}`);
    const r = spawnSync(process.execPath, [MINKMS_BIN, 'server', join(dir, 'data'), '--workers', '2', '--config', config], {
      encoding: 'utf8',
      env: { ...process.env, MINIO_KMS_HSM_KEY: 'hsm:aes256:' + Buffer.alloc(32, 1).toString('base64') },
      timeout: 60_000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--workers needs the embedded store/);
  } finally {
    removeDir(dir);
  }
});
