/**
 * Conformance with the official MinIO KMS Go SDK (github.com/minio/kms-go/kms): starts a real
 * server and runs the Go test package in test/interop against it. Needs `go` (≥ 1.24) on PATH
 * and access to the Go module proxy (or a warm module cache).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, removeDir, startServer } from '../helpers/server.js';

const INTEROP_DIR = join(REPO_ROOT, 'test', 'interop');
const GO_TIMEOUT_MS = 240_000;

interface GoResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  timedOut: boolean;
}

function runGoTest(env: NodeJS.ProcessEnv): Promise<GoResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('go', ['test', '-count=1', '-v', '-run', '^TestInterop$', './...'], {
      cwd: INTEROP_DIR,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, GO_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, timedOut });
    });
  });
}

test('official Go SDK (kms-go) conformance', { timeout: GO_TIMEOUT_MS + 60_000 }, async (t) => {
  const probe = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    assert.fail(
      'the Go toolchain (`go`, version >= 1.24) is required for the kms-go interop test but is not ' +
        `usable on PATH (${probe.error?.message ?? probe.stderr.trim()}); install Go or fix PATH`,
    );
  }
  t.diagnostic(probe.stdout.trim());

  const server = await startServer();
  try {
    assert.match(server.apiKey, /^k1:/, `server printed no root API key:\n${server.output()}`);
    assert.ok(server.caPem, `no server certificate at ${server.caFile}`);

    const result = await runGoTest({
      ...process.env, // PATH, HOME, GOPATH, GOMODCACHE, GOFLAGS, GOPROXY, GOTOOLCHAIN, ...
      MINKMS_ENDPOINTS: server.host,
      MINKMS_API_KEY: server.apiKey,
      MINKMS_CA_FILE: server.caFile,
    });
    const passed = result.output.match(/^\s*--- PASS: /gm)?.length ?? 0;
    const skipped = result.output.match(/^\s*--- SKIP: .*$/gm) ?? [];
    t.diagnostic(`go test: ${passed} passed, ${skipped.length} skipped`);
    for (const s of skipped) t.diagnostic(s.trim());

    if (result.timedOut) {
      assert.fail(`go test did not finish within ${GO_TIMEOUT_MS / 1000} s:\n${result.output}`);
    }
    assert.equal(
      result.code,
      0,
      `go test failed (exit ${result.code ?? result.signal}):\n${result.output}\n--- server output ---\n${server.output()}`,
    );
  } finally {
    await server.stop();
    removeDir(join(server.dir, '..'));
  }
});
