/**
 * The SysAdmin debug endpoints against a real server process: profiling (`/v1/debug/pprof`
 * and `minkms profile`: the archive opens and its CPU profile has samples), log records that
 * name their request, and restarts of a single node (`?self`, without it, `minkms restart
 * --self`, and `--restart-mode exit` for a supervisor). The cluster's rolling restart is in
 * test/cluster/restart.test.ts, the Go SDK's view in test/interop/.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { MINKMS_BIN, freePort, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor, newUser, rejectsWith } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { readTar } from '../../src/server/tar.js';
import { streamLogs, SLOG } from '../../src/client/logs.js';
import type { KmsClient } from '../../src/client/client.js';
import type { LogRecord } from '../../src/protocol/messages.js';

const ENCLAVE = 'dbg';
let server: TestServer;
let admin: KmsClient;
const dirs: string[] = [];

before(async () => {
  // A fixed port: the node re-executes itself on the same address when it restarts.
  server = await startServer({ port: await freePort() });
  admin = clientFor(server, server.apiKey);
  await admin.createEnclave(ENCLAVE);
  await admin.createKey(ENCLAVE, { name: 'k' });
});

after(async () => {
  admin?.close();
  await server?.stop();
  if (server) removeDir(join(server.dir, '..'));
  dirs.forEach(removeDir);
});

function minkms(args: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MINKMS_BIN, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, MINIO_KMS_SERVER: server.host, MINIO_KMS_API_KEY: server.apiKey, NO_COLOR: '1' },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** `GET /v1/debug/pprof` as JSON (the body's text). */
async function statusJson(): Promise<string> {
  const res = await admin.transport.request({ method: 'GET', path: '/v1/debug/pprof', headers: { accept: 'application/json' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'application/json');
  return res.body.toString('utf8');
}

async function ready(c: KmsClient): Promise<boolean> {
  try {
    await c.ready();
    return true;
  } catch {
    return false;
  }
}

describe('profiling', () => {
  test('SysAdmin only, one session at a time, options the SDK sends, the archive opens', async () => {
    const stranger = newUser(server);
    try {
      await rejectsWith(stranger.client.startProfiling({ cpu: true }), 'ERR_NOT_ALLOWED', 'a stranger');
      await rejectsWith(stranger.client.profilingStatus(), 'ERR_NOT_ALLOWED', 'a stranger');
      await rejectsWith(stranger.client.stopProfiling(), 'ERR_NOT_ALLOWED', 'a stranger');
    } finally {
      stranger.client.close();
    }
    assert.equal((await admin.profilingStatus()).started, undefined, 'nothing runs');
    assert.equal(await statusJson(), '{}', 'nothing runs (JSON)');
    await rejectsWith(admin.startProfiling({ cpu: true, mutexFraction: 5 }), 'ERR_PROFILE_OPTION', 'mutex');
    await rejectsWith(admin.startProfiling({}), 'ERR_PROFILE_OPTION', 'nothing to profile');

    await admin.startProfiling({ cpu: true, heap: true, thread: 'all', blockRate: 1_000_000 });
    await rejectsWith(admin.startProfiling({ cpu: true }), 'ERR_PROFILE_RUNNING', 'a second session');
    const st = await admin.profilingStatus();
    assert.deepEqual([st.cpu, st.heap, st.goroutine, st.thread, st.blockRate, st.mutexFraction], [true, true, true, true, 1_000_000, 0]);
    assert.ok(st.started && Date.now() - st.started.getTime() < 60_000);
    // For people and curl: protobuf-JSON, byte for byte (JSON names, default values left out).
    const started = st.started.toISOString().replace(/\.000Z$/, 'Z');
    assert.equal(await statusJson(), `{"started":"${started}","cpu":true,"heap":true,"goroutine":true,"thread":true,"block_rate":1000000}`);
    for (let i = 0; i < 100; i++) await admin.generateKey(ENCLAVE, [{ name: 'k' }]);

    // As the Go SDK asks (its transport adds Accept-Encoding: gzip): a gzip-encoded tar.
    const res = await admin.transport.request({
      method: 'DELETE',
      path: '/v1/debug/pprof',
      headers: { accept: 'application/*, gzip', 'accept-encoding': 'gzip' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], 'gzip');
    assert.equal(res.headers['content-type'], 'application/x-tar');
    assert.equal(Number(res.headers['content-length']), res.body.length);
    const files = readTar(gunzipSync(res.body));
    assert.deepEqual([...files.keys()].sort(), [
      'README.txt',
      'cpu.cpuprofile',
      'eventloop.json',
      'heap.heapprofile',
      'profile.json',
      'report.json',
      'resources.json',
    ]);
    const cpu = JSON.parse(files.get('cpu.cpuprofile')!.toString()) as {
      nodes: { callFrame: { functionName: string } }[];
      samples: number[];
    };
    assert.ok(cpu.samples.length > 0, 'the CPU profile has samples');
    assert.ok(
      cpu.nodes.some((n) => /generate|dispatch|handle/i.test(n.callFrame.functionName)),
      'the CPU profile shows the server at work',
    );
    assert.ok(!files.get('report.json')!.toString().includes(server.hsmKey), 'the HSM key (environment) never leaves the node');
    await rejectsWith(admin.stopProfiling(), 'ERR_PROFILE_NOT_STARTED', 'a second stop');
  });

  test("the diagnostic report holds no environment, not even a crypto thread's", async () => {
    await admin.startProfiling({ thread: 'os' });
    // A batch large enough for the crypto pool: its thread is alive when the report is made.
    await admin.generateKey(
      ENCLAVE,
      Array.from({ length: 64 }, () => ({ name: 'k' })),
    );
    const files = readTar(gunzipSync(await admin.stopProfiling()));
    const text = files.get('report.json')!.toString();
    const report = JSON.parse(text) as { workers?: unknown[] };
    assert.ok((report.workers ?? []).length > 0, 'the report covers a crypto thread');
    assert.ok(!text.includes(server.hsmKey), 'the HSM key (environment) never leaves the node');
    assert.ok(!text.includes('environmentVariables'), 'no environment at all');
  });

  test('minkms profile writes a .tar.gz whose CPU profile has samples', () => {
    const work = tempDir('minkms-profile-');
    dirs.push(work);
    const r = minkms(['profile', '-k', '--duration', '1s', '-o', 'p.tar.gz'], work);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /cpu\.cpuprofile/);
    assert.match(r.stdout, /Profile of .* written to p\.tar\.gz/);
    const files = readTar(gunzipSync(readFileSync(join(work, 'p.tar.gz'))));
    const cpu = JSON.parse(files.get('cpu.cpuprofile')!.toString()) as { samples: number[]; startTime: number; endTime: number };
    assert.ok(cpu.samples.length > 0, 'samples');
    assert.ok(cpu.endTime - cpu.startTime >= 900_000, `a profile of about a second (${cpu.endTime - cpu.startTime} µs)`);
    assert.ok(files.has('heap.heapprofile'), 'CPU and heap by default');
    const stat = minkms(['profile', '-k', '--stat'], work);
    assert.match(stat.stdout, /No profiling on/);
    const exists = minkms(['profile', '-k', '--duration', '1s', '-o', 'p.tar.gz'], work);
    assert.equal(exists.code, 2);
    assert.match(exists.stderr, /p\.tar\.gz exists/);
  });
});

describe('logs', () => {
  test('records made for a request name it; the others carry the unspecified address', async () => {
    const since = new Date(Date.now() - 3600_000);
    await admin.createKey(ENCLAVE, { name: 'logged' });
    const ac = new AbortController();
    const seen: LogRecord[] = [];
    const stream = streamLogs(admin, { level: SLOG.debug, since, signal: ac.signal }, (r) => {
      seen.push(r);
      if (seen.some((x) => x.request?.path === `/v1/kms/${ENCLAVE}`) && seen.some((x) => x.request?.method === '')) ac.abort();
    });
    await waitFor('both kinds of records', () => ac.signal.aborted, 10_000);
    await stream;
    const mine = seen.find((x) => x.request?.path === `/v1/kms/${ENCLAVE}` && x.message.startsWith('KEY:CREATE'))!;
    assert.ok(mine, `a KEY:CREATE record of the enclave among ${seen.length}`);
    assert.deepEqual({ ...mine.request! }, { method: 'POST', path: `/v1/kms/${ENCLAVE}`, identity: admin.identity, ip: '127.0.0.1' });
    const serverRecord = seen.find((x) => x.request?.method === '')!;
    assert.deepEqual({ ...serverRecord.request! }, { method: '', path: '', identity: '', ip: '0.0.0.0' });
    assert.ok(
      seen.every((x) => x.request !== undefined),
      'every record carries field 5',
    );
  });
});

describe('restart of a single node', () => {
  test('?self, without it, and minkms restart --self: drained, re-executed on the same address, data kept', async () => {
    const stranger = newUser(server);
    try {
      await rejectsWith(stranger.client.restart({ self: true }), 'ERR_NOT_ALLOWED', 'a stranger');
    } finally {
      stranger.client.close();
    }
    const bad = await admin.transport.request({ method: 'POST', path: '/v1/debug/restart?now' });
    assert.equal(bad.status, 400);

    await admin.restart({ self: true });
    await waitFor('the first restart', async () => server.restarts() === 1 && (await ready(admin)), 60_000, 100);
    assert.equal((await admin.keyStatus(ENCLAVE, [{ name: 'k' }]))[0]!.name, 'k');
    assert.match(server.output(), /=> Restarting: restart requested \(\?self\) by h1:/);

    // Without ?self, a node with the embedded store restarts itself.
    await admin.restart();
    await waitFor('the second restart', async () => server.restarts() === 2 && (await ready(admin)), 60_000, 100);

    const work = tempDir('minkms-restart-');
    dirs.push(work);
    const r = minkms(['restart', '-k', '--self'], work);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /back after \d+\.\d s/);
    assert.match(r.stdout, /Restarted 1 node/);
    // The CLI returned once the new process served (spawnSync held our event loop: its
    // announcement on the pipe is read now).
    await waitFor('the third process', () => server.restarts() === 3, 10_000);
    assert.equal((await admin.keyStatus(ENCLAVE, [{ name: 'logged' }]))[0]!.name, 'logged');
  });

  test('--restart-mode exit: the process exits with status 75 for its supervisor', async () => {
    const s = await startServer({ args: ['--restart-mode', 'exit'] });
    const c = clientFor(s, s.apiKey);
    try {
      await c.restart({ self: true });
      await waitFor('exit status 75', () => s.process.exitCode === 75, 30_000);
      assert.equal(s.restarts(), 0, 'no new process: the supervisor starts it');
    } finally {
      c.close();
      await s.stop();
      removeDir(join(s.dir, '..'));
    }
  });
});
