/**
 * The seed procedure ("Store HSM on MinIO KMS"), verbatim, as examples/kms-chain/demo.mjs runs
 * it with the minkms binary: two servers, the seed's commands (add-enclave -k -a …,
 * add-identity -k -a … --enclave … --admin, add-key --enclave …), the hsm.minio.minkms
 * section, the soft key removed — and the data key made before still decrypts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';

test('examples/kms-chain/demo.mjs walks the five steps and ends sealed by the external KMS only', () => {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'examples/kms-chain/demo.mjs')], { encoding: 'utf8', timeout: 120_000 });
  const out = r.stdout + r.stderr;
  assert.equal(r.status, 0, out);
  assert.match(out, /\$ minkms add-enclave -k -a k1:\S+ aistor-key-manager/);
  assert.match(out, /\$ minkms add-identity -k -a k1:\S+ --enclave aistor-key-manager --admin/);
  assert.match(out, /\$ minkms add-key -k --enclave aistor-key-manager aistor-key-manager-hsm/);
  assert.match(out, /decrypted: the same data key/);
  assert.match(out, /no configured HSM has a sealed root key entry/);
});
