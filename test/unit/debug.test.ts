/**
 * Unit tests of the debug endpoints' parts: the ustar writer and reader (checked against the
 * system's `tar` when there is one), the profiling options as the SDK sends them, a profiling
 * session's bounds (auto-stop, one at a time, results kept until downloaded), and the request
 * of log records (field 5) with both SDK generations' log request layouts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { readTar, writeTar } from '../../src/server/tar.js';
import { Profiler, parseProfileQuery, resolutionMs } from '../../src/server/profiler.js';
import { createLogger, type LogEntry } from '../../src/server/log.js';
import { LOG_REQUEST, requestInfo, requestScope } from '../../src/server/log-context.js';
import { NO_REQUEST_IP, decodeLogQuery, encodeLogFrame } from '../../src/server/observability.js';
import { LogRecordParser } from '../../src/client/logs.js';
import { encodeMessage } from '../../src/protocol/schema.js';
import { LegacyLogRequestSchema, LogRequestSchema } from '../../src/protocol/messages.js';
import { KmsError } from '../../src/errors.js';
import { removeDir, tempDir } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const quiet = createLogger('error', { destination: { write: () => {} } });

describe('tar', () => {
  test('round trip, checksums, padding and the end marker', () => {
    const files = [
      { name: 'a.txt', data: Buffer.from('hello') },
      { name: 'empty', data: Buffer.alloc(0) },
      { name: 'dir/exact.bin', data: Buffer.alloc(512, 7) },
      { name: 'x'.repeat(100), data: Buffer.alloc(1000, 1) },
    ];
    const tar = writeTar(files);
    assert.equal(tar.length % 512, 0);
    assert.equal(tar.length, 512 * (1 + 1) + 512 + 512 * 2 + 512 * 3 + 1024);
    const back = readTar(tar);
    assert.deepEqual(
      [...back.keys()],
      files.map((f) => f.name),
    );
    for (const f of files) assert.deepEqual(back.get(f.name), f.data);
    const broken = Buffer.from(tar);
    broken[10] = broken[10]! ^ 1;
    assert.throws(() => readTar(broken), /checksum/);
    assert.throws(() => writeTar([{ name: '../up', data: Buffer.alloc(1) }]), /unsafe/);
    assert.throws(() => writeTar([{ name: 'y'.repeat(101), data: Buffer.alloc(1) }]), /1 to 100 bytes/);
  });

  test('the system tar reads it', (t) => {
    if (spawnSync('tar', ['--version']).status !== 0) return t.skip('no tar on PATH');
    const dir = tempDir('minkms-tar-');
    try {
      writeFileSync(join(dir, 'x.tar'), writeTar([{ name: 'cpu.cpuprofile', data: Buffer.from('{"nodes":[]}') }]));
      mkdirSync(join(dir, 'out'));
      const r = spawnSync('tar', ['-xf', join(dir, 'x.tar'), '-C', join(dir, 'out')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(readFileSync(join(dir, 'out', 'cpu.cpuprofile'), 'utf8'), '{"nodes":[]}');
    } finally {
      removeDir(dir);
    }
  });
});

describe('profiling options', () => {
  const q = (s: string) => parseProfileQuery(new URLSearchParams(s));
  const refused = (s: string, why: RegExp) =>
    assert.throws(
      () => q(s),
      (err: unknown) => err instanceof KmsError && err.code === 'ERR_PROFILE_OPTION' && err.status === 400 && why.test(err.message),
      s,
    );

  test('exactly what the SDK sends', () => {
    assert.deepEqual(q('cpu=true&heap=false'), { cpu: true, heap: false, runtime: false, os: false, blockRate: 0 });
    assert.deepEqual(q('cpu=false&heap=true&thread=all&block=1000'), { cpu: false, heap: true, runtime: true, os: true, blockRate: 1000 });
    assert.deepEqual(q('cpu=false&heap=false&thread=runtime'), { cpu: false, heap: false, runtime: true, os: false, blockRate: 0 });
    assert.deepEqual(q('cpu=false&heap=false&thread=os'), { cpu: false, heap: false, runtime: false, os: true, blockRate: 0 });
  });

  test('what has no meaning here is refused with a reason', () => {
    refused('cpu=true&heap=true&mutex=5', /mutex profiling has no meaning in Node\.js/);
    refused('cpu=false&heap=false', /nothing to profile/);
    refused('cpu=yes', /expected true or false/);
    refused('cpu=true&thread=green', /all, runtime or os/);
    refused('cpu=true&block=0', /nanoseconds/);
    refused('cpu=true&block=-1', /nanoseconds/);
    refused('cpu=true&goroutine=true', /unknown option 'goroutine'/);
    refused('cpu=true&cpu=false', /more than once/);
  });

  test('block rate → event-loop delay resolution', () => {
    assert.equal(resolutionMs(1), 1);
    assert.equal(resolutionMs(10_000_000), 10);
    assert.equal(resolutionMs(2_000_000_000), 1000);
  });
});

describe('profiling session', () => {
  test('stops by itself, keeps its results for one download, one session at a time', async () => {
    const p = new Profiler({ log: quiet, maxDurationMs: 300 });
    try {
      assert.deepEqual(p.status(), {});
      await assert.rejects(p.stop(), (e: unknown) => e instanceof KmsError && e.code === 'ERR_PROFILE_NOT_STARTED' && e.status === 409);
      await p.start({ cpu: true, heap: true, runtime: true, os: false, blockRate: 1_000_000 });
      await assert.rejects(
        p.start({ cpu: true, heap: false, runtime: false, os: false, blockRate: 0 }),
        (e: unknown) => e instanceof KmsError && e.code === 'ERR_PROFILE_RUNNING',
      );
      const st = p.status();
      assert.equal(st.cpu, true);
      assert.equal(st.goroutine, true);
      assert.equal(st.blockRate, 1_000_000);
      // Work to sample until the session has stopped by itself.
      await waitFor('the auto-stop', async () => {
        let x = 0;
        for (let i = 0; i < 1e5; i++) x += Math.sqrt(i);
        await new Promise((r) => setImmediate(r));
        return x > 0 && (await isFinished(p));
      });
      // Still refused: the results wait for their download.
      await assert.rejects(
        p.start({ cpu: true, heap: false, runtime: false, os: false, blockRate: 0 }),
        (e: unknown) => e instanceof KmsError && /not been downloaded/.test(e.message),
      );
      const files = readTar(gunzipSync(await p.stop()));
      assert.deepEqual([...files.keys()].sort(), [
        'README.txt',
        'cpu.cpuprofile',
        'eventloop.json',
        'heap.heapprofile',
        'profile.json',
        'resources.json',
      ]);
      const cpu = JSON.parse(files.get('cpu.cpuprofile')!.toString()) as { samples: number[]; nodes: unknown[] };
      assert.ok(cpu.samples.length > 0 && cpu.nodes.length > 0);
      const meta = JSON.parse(files.get('profile.json')!.toString()) as { autoStopped: boolean; durationMs: number };
      assert.equal(meta.autoStopped, true);
      const loop = JSON.parse(files.get('eventloop.json')!.toString()) as { resolutionMs: number; delayNs: { count: number } };
      assert.equal(loop.resolutionMs, 1);
      assert.ok(loop.delayNs.count > 0);
      assert.deepEqual(p.status(), {});
      // Now a new session may start.
      await p.start({ cpu: false, heap: false, runtime: false, os: true, blockRate: 0 });
      const report = JSON.parse(
        readTar(gunzipSync(await p.stop()))
          .get('report.json')!
          .toString(),
      ) as Record<string, unknown>;
      assert.equal(report.environmentVariables, undefined, 'the environment (MINIO_KMS_HSM_KEY) never leaves the node');
      assert.ok(report.header && report.libuv);
    } finally {
      await p.close();
    }
  });

  test('results nobody downloads are dropped after a while', async () => {
    const p = new Profiler({ log: quiet, maxDurationMs: 50, resultTtlMs: 100 });
    try {
      await p.start({ cpu: false, heap: false, runtime: true, os: false, blockRate: 0 });
      await waitFor('the results to expire', () => p.status().started === undefined);
      await p.start({ cpu: false, heap: false, runtime: true, os: false, blockRate: 0 });
    } finally {
      await p.close();
    }
  });
});

/** Whether the session has stopped (its status stays until the download; a stop() would tell). */
async function isFinished(p: Profiler): Promise<boolean> {
  try {
    await p.start({ cpu: false, heap: false, runtime: true, os: false, blockRate: 0 });
    return false; // cannot happen while one runs
  } catch (err) {
    return err instanceof KmsError && /not been downloaded/.test(err.message);
  }
}

describe('the request of log records', () => {
  const entry = (request?: LogEntry['request']): LogEntry => ({ level: 0, time: 1_700_000_000_000, message: 'm', request });

  test('field 5: the request, or no request with the unspecified address', () => {
    const parse = (e: LogEntry) => new LogRecordParser().push(encodeLogFrame(e, false))[0]!;
    const withReq = parse(entry(requestInfo('POST', '/v1/kms/e1?x=1', 'h1:abc', '127.0.0.1')));
    assert.deepEqual(withReq.request, { method: 'POST', path: '/v1/kms/e1', identity: 'h1:abc', ip: '127.0.0.1' });
    assert.deepEqual(parse(entry()).request, { method: '', path: '', identity: '', ip: NO_REQUEST_IP });
    // A request without a known address (socket gone) still gets a parseable one.
    assert.equal(parse(entry(requestInfo('GET', '/version', '', undefined))).request!.ip, NO_REQUEST_IP);
    // Client-supplied strings are bounded.
    const long = requestInfo('X'.repeat(100), '/' + 'p'.repeat(5000), '', '::1');
    assert.ok(long.method.length <= 17 && long.path.length <= 257);
  });

  test('explicitly through the fields, or from the scope while a stream is open', () => {
    const log = createLogger('info', { destination: { write: () => {} } });
    const seen: LogEntry[] = [];
    const unsubscribe = log.ring.subscribe(-4, (e) => seen.push(e));
    try {
      const info = requestInfo('POST', '/v1/kms', 'h1:x', '10.0.0.1');
      log.info('explicit', { a: 1, [LOG_REQUEST]: info });
      assert.deepEqual(seen.at(-1)!.request, info);
      assert.equal(seen.at(-1)!.message, 'explicit a=1', 'the request is not part of the message');
      // No stream open: the scope is off and costs nothing.
      requestScope.setStreams(0);
      requestScope.run(
        () => info,
        () => log.info('outside'),
      );
      assert.equal(seen.at(-1)!.request, undefined);
      requestScope.setStreams(1);
      let calls = 0;
      requestScope.run(
        () => (calls++, info),
        () => log.info('inside'),
      );
      assert.deepEqual(seen.at(-1)!.request, info);
      assert.equal(calls, 1, 'computed only when a record is made');
      log.info('after');
      assert.equal(seen.at(-1)!.request, undefined);
    } finally {
      requestScope.setStreams(0);
      unsubscribe();
    }
  });

  test('both SDK generations’ log requests', () => {
    const since = new Date(1_700_000_000_000);
    const v06 = decodeLogQuery(encodeMessage(LogRequestSchema, { level: 4, message: 'm', since, traceLevel: 8 }));
    assert.deepEqual(v06, { level: 4, message: 'm', since, traceLevel: 8, method: '', path: '', identity: '', ip: '' });
    const pinned = decodeLogQuery(
      encodeMessage(LegacyLogRequestSchema, {
        level: -4,
        since,
        method: 'POST',
        path: '/v1/kms/e',
        identity: 'h1:x',
        ip: '127.0.0.1',
        traceLevel: 8,
      }),
    );
    assert.deepEqual(pinned, {
      level: -4,
      message: '',
      since,
      traceLevel: 8,
      method: 'POST',
      path: '/v1/kms/e',
      identity: 'h1:x',
      ip: '127.0.0.1',
    });
    // Only a trace level (field 8) also means the pinned layout.
    assert.equal(decodeLogQuery(encodeMessage(LegacyLogRequestSchema, { traceLevel: 4 })).traceLevel, 4);
    assert.throws(() => decodeLogQuery(Buffer.from([0x22, 0x05, 0x61])), /malformed/);
  });
});
