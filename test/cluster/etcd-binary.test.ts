/**
 * How the tests obtain etcd (test/helpers/etcd.ts): $ETCD_BIN, then PATH, then the cache, then a
 * build with Go (once, even when two test files ask at the same moment), then apt as root — and
 * one message naming all that is missing otherwise. Stand-in `etcd` and `go` scripts keep this
 * fast; the real build from the Go module proxy runs in .ci/run's clean-clone step.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { etcdBuildVersion, resolveEtcdBinary } from '../helpers/etcd.js';
import { removeDir, tempDir } from '../helpers/server.js';

const work = tempDir('minkms-etcd-bin-');
after(() => removeDir(work));

let n = 0;
/** A directory for a PATH with the given executable scripts (`name` → shell body). */
function bin(scripts: Record<string, string>): string {
  const dir = join(work, `bin${n++}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, body] of Object.entries(scripts)) {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  }
  return dir;
}

const fakeEtcd = (version: string) => `[ "$1" = --version ] && echo "etcd Version: ${version}" && exit 0; exit 1`;
const quiet = () => {};

test('test/etcd/go.mod pins the etcd version that is built', () => {
  assert.match(etcdBuildVersion(), /^v3\.\d+\.\d+$/);
});

test('ETCD_BIN first; an ETCD_BIN that does not run is an error, not a fallback', async () => {
  const b = bin({ etcd: fakeEtcd('3.9.9') });
  const r = await resolveEtcdBinary({ env: { PATH: bin({ etcd: fakeEtcd('3.4.1') }), ETCD_BIN: join(b, 'etcd') }, log: quiet });
  assert.deepEqual(r, { bin: join(b, 'etcd'), source: 'ETCD_BIN', version: '3.9.9' });
  await assert.rejects(
    resolveEtcdBinary({ env: { PATH: b, ETCD_BIN: join(work, 'nope') }, log: quiet }),
    /^Error: ETCD_BIN=.*nope does not run/,
  );
});

test('an etcd on PATH, else the cached build', async () => {
  const path = bin({ etcd: fakeEtcd('3.4.30') });
  assert.deepEqual(await resolveEtcdBinary({ env: { PATH: path }, log: quiet }), {
    bin: join(path, 'etcd'),
    source: 'PATH',
    version: '3.4.30',
  });
  const cache = join(work, 'cache-hit');
  mkdirSync(cache);
  const cached = join(cache, `etcd-${etcdBuildVersion()}`);
  writeFileSync(cached, `#!/bin/sh\n${fakeEtcd('3.6.0')}\n`);
  chmodSync(cached, 0o755);
  assert.deepEqual(await resolveEtcdBinary({ env: { PATH: bin({}), MINKMS_E2E_CACHE: cache }, log: quiet }), {
    bin: cached,
    source: 'cache',
    version: '3.6.0',
  });
});

test('built once with the Go on PATH into the cache, even when asked twice at once', async () => {
  const cache = join(work, 'cache-build');
  const calls = join(work, 'go-calls');
  const template = join(bin({ etcd: fakeEtcd('3.6.8') }), 'etcd');
  // A stand-in `go build -trimpath -o OUT .`: records the call and its environment, writes an "etcd".
  const go = bin({
    go: [
      'PATH=/usr/bin:/bin', // for sleep and cp; the PATH it was started with holds only itself
      `echo "$PWD $CGO_ENABLED $GOTOOLCHAIN" >> ${calls}`,
      'out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done',
      'sleep 1',
      `cp ${template} "$out"`,
    ].join('\n'),
  });
  const logs: string[] = [];
  const env = { PATH: go, MINKMS_E2E_CACHE: cache };
  const [a, b] = await Promise.all([
    resolveEtcdBinary({ env, log: (m) => logs.push(m), allowApt: false }),
    resolveEtcdBinary({ env, log: (m) => logs.push(m), allowApt: false }),
  ]);
  const want = join(cache, `etcd-${etcdBuildVersion()}`);
  assert.equal(a.bin, want);
  assert.equal(b.bin, want);
  assert.deepEqual([a.source, b.source].sort(), ['built', 'built']);
  assert.equal(a.version, '3.6.8');
  const lines = readFileSync(calls, 'utf8').trim().split('\n');
  assert.equal(lines.length, 1, `go ran ${lines.length} times`);
  assert.match(lines[0]!, /\/test\/etcd 0 local$/, 'built in test/etcd, without cgo, with the local toolchain');
  assert.ok(!existsSync(`${want}.lock`), 'the lock is released');
  assert.match(logs[0]!, /^building etcd v3\.\d+\.\d+ from the Go module proxy into /);
  // Later runs: from the cache, no build.
  assert.equal((await resolveEtcdBinary({ env, log: quiet })).source, 'cache');
});

test('a failing build says so with its output', async () => {
  const go = bin({ go: 'echo "go: go.mod requires go >= 1.24.0 (running go 1.21.0; GOTOOLCHAIN=local)" >&2; exit 1' });
  await assert.rejects(
    resolveEtcdBinary({ env: { PATH: go, MINKMS_E2E_CACHE: join(work, 'cache-fail') }, log: quiet, allowApt: false }),
    /could not build etcd v3\.\d+\.\d+ with .*\/go \(exit 1 .*Go >= 1\.24.*\n.*requires go >= 1\.24\.0/,
  );
});

test('nothing available: one message naming what is missing and every way out', async () => {
  await assert.rejects(
    resolveEtcdBinary({ env: { PATH: bin({}), MINKMS_E2E_CACHE: join(work, 'cache-none') }, log: quiet, allowApt: false }),
    (err: Error) => {
      assert.match(err.message, /^etcd is missing: no etcd on PATH, none built in .*cache-none\/etcd-v3\.\d+\.\d+, and no Go on PATH/);
      assert.match(
        err.message,
        /Install Go >= 1\.24 \(the tests then build etcd once\), or run `apt-get install etcd-server`, or set ETCD_BIN/,
      );
      return true;
    },
  );
});
