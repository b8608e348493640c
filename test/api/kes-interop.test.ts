/**
 * The KES API with the official KES client (github.com/minio/kms-go/kes v0.3.1, the version
 * MinIO pins): starts a server with `kes.enabled` and runs TestKES of test/interop against it —
 * every exported method of kes.Client, its typed errors, and the same keys, ciphertexts,
 * identities and policies through the MinKMS SDK. Needs `go` and the Go module proxy (or a warm
 * module cache).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, removeDir, startServer } from '../helpers/server.js';
import { requireGo, runGoTest } from '../helpers/go.js';

const INTEROP_DIR = join(REPO_ROOT, 'test', 'interop');
const GO_TIMEOUT_MS = 240_000;
const ENCLAVE = 'kes-interop';

test('official KES client (kms-go/kes v0.3.1) against the KES API', { timeout: GO_TIMEOUT_MS + 60_000 }, async (t) => {
  t.diagnostic(requireGo());
  const server = await startServer({ config: `version: v1\nkes:\n  enabled: true\n  enclave: ${ENCLAVE}\n` });
  try {
    assert.match(server.apiKey, /^k1:/, `server printed no root API key:\n${server.output()}`);
    assert.match(server.output(), new RegExp(`KES API\\s+on, in enclave '${ENCLAVE}'`));
    const result = await runGoTest(
      INTEROP_DIR,
      '^TestKES$',
      {
        ...process.env,
        MINKMS_ENDPOINTS: server.host,
        MINKMS_API_KEY: server.apiKey,
        MINKMS_CA_FILE: server.caFile,
        MINKMS_KES_ENCLAVE: ENCLAVE,
      },
      GO_TIMEOUT_MS,
    );
    const passed = result.output.match(/^\s*--- PASS: /gm)?.length ?? 0;
    t.diagnostic(`go test: ${passed} passed`);
    if (result.timedOut) assert.fail(`go test did not finish within ${GO_TIMEOUT_MS / 1000} s:\n${result.output}`);
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
