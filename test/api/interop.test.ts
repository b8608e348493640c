/**
 * Conformance with the official MinIO KMS Go SDK (github.com/minio/kms-go/kms): starts real
 * servers and runs the Go test package in test/interop against them — TestInterop against a
 * node with the embedded store; TestSDKMethods (every exported method of *kms.Client) and
 * TestWireV06 (the newer SDK generation's shapes, restarts included) against a node whose
 * store is a one-member etcd cluster, so that the membership methods do real work. Needs `go`
 * (≥ 1.24) on PATH and access to the Go module proxy (or a warm module cache), and etcd
 * (test/helpers/etcd.ts obtains it).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEtcdCluster } from '../helpers/etcd.js';
import { REPO_ROOT, freePort, removeDir, startServer, tempDir } from '../helpers/server.js';
import { requireGo, runGoTest } from '../helpers/go.js';

const INTEROP_DIR = join(REPO_ROOT, 'test', 'interop');
const GO_TIMEOUT_MS = 240_000;

test('official Go SDK (kms-go) conformance', { timeout: GO_TIMEOUT_MS + 60_000 }, async (t) => {
  t.diagnostic(requireGo());

  const server = await startServer();
  const etcd = await startEtcdCluster({ size: 1 });
  // A fixed port: TestWireV06 restarts this node (it re-executes itself on the same address).
  const port = await freePort();
  const clustered = await startServer({
    port,
    args: ['--host', `127.0.0.1:${port}`],
    config: `version: v1
heartbeat: 500ms
store:
  backend: etcd
  etcd:
    endpoints: [${etcd.endpoints.join(', ')}]
    prefix: /minkms-interop/
    timeout: 5s
`,
  });
  const work = tempDir('minkms-interop-');
  const report = join(work, 'sdk-methods.md');
  try {
    assert.match(server.apiKey, /^k1:/, `server printed no root API key:\n${server.output()}`);
    assert.ok(server.caPem, `no server certificate at ${server.caFile}`);

    const result = await runGoTest(
      INTEROP_DIR,
      '^(TestInterop|TestSDKMethods|TestWireV06)$',
      {
        ...process.env, // PATH, HOME, GOPATH, GOMODCACHE, GOFLAGS, GOPROXY, GOTOOLCHAIN, ...
        MINKMS_ENDPOINTS: server.host,
        MINKMS_API_KEY: server.apiKey,
        MINKMS_CA_FILE: server.caFile,
        MINKMS_CLUSTER_ENDPOINTS: clustered.host,
        MINKMS_CLUSTER_API_KEY: clustered.apiKey,
        MINKMS_CLUSTER_CA_FILE: clustered.caFile,
        MINKMS_SDK_REPORT: report,
      },
      GO_TIMEOUT_MS,
    );
    const passed = result.output.match(/^\s*--- PASS: /gm)?.length ?? 0;
    const skipped = result.output.match(/^\s*--- SKIP: .*$/gm) ?? [];
    t.diagnostic(`go test: ${passed} passed, ${skipped.length} skipped`);
    for (const s of skipped) t.diagnostic(s.trim());
    try {
      const rows = readFileSync(report, 'utf8').trim().split('\n');
      t.diagnostic(`every exported method of *kms.Client (${rows.length - 2}):`);
      for (const row of rows.slice(2)) t.diagnostic(row);
    } catch {
      // TestSDKMethods did not get that far: its failure is in the output below
    }

    if (result.timedOut) {
      assert.fail(`go test did not finish within ${GO_TIMEOUT_MS / 1000} s:\n${result.output}`);
    }
    assert.equal(
      result.code,
      0,
      `go test failed (exit ${result.code ?? result.signal}):\n${result.output}\n--- server output ---\n${server.output()}\n--- clustered node output ---\n${clustered.output()}`,
    );
    assert.equal(clustered.restarts(), 2, `TestWireV06 restarts the clustered node twice:\n${clustered.output()}`);
  } finally {
    await server.stop();
    await clustered.stop();
    await etcd.close();
    removeDir(join(server.dir, '..'));
    removeDir(join(clustered.dir, '..'));
    removeDir(work);
  }
});
