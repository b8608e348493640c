/**
 * Conformance with the official MinIO KMS Go SDK (github.com/minio/kms-go/kms): starts a real
 * server and runs the Go test package in test/interop against it. Needs `go` (≥ 1.24) on PATH
 * and access to the Go module proxy (or a warm module cache).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, removeDir, startServer } from '../helpers/server.js';
import { requireGo, runGoTest } from '../helpers/go.js';

const INTEROP_DIR = join(REPO_ROOT, 'test', 'interop');
const GO_TIMEOUT_MS = 240_000;

test('official Go SDK (kms-go) conformance', { timeout: GO_TIMEOUT_MS + 60_000 }, async (t) => {
  t.diagnostic(requireGo());

  const server = await startServer();
  try {
    assert.match(server.apiKey, /^k1:/, `server printed no root API key:\n${server.output()}`);
    assert.ok(server.caPem, `no server certificate at ${server.caFile}`);

    const result = await runGoTest(
      INTEROP_DIR,
      '^TestInterop$',
      {
        ...process.env, // PATH, HOME, GOPATH, GOMODCACHE, GOFLAGS, GOPROXY, GOTOOLCHAIN, ...
        MINKMS_ENDPOINTS: server.host,
        MINKMS_API_KEY: server.apiKey,
        MINKMS_CA_FILE: server.caFile,
      },
      GO_TIMEOUT_MS,
    );
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
