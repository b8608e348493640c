/**
 * The root (SysAdmin) identity: `admin.identity` from the config file replaces the API key
 * derived from the HSM, which is then neither printed nor accepted.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { generateApiKey } from '../../src/identity/api-key.js';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor, rejectsWith } from '../helpers/clients.js';
import { SoftHsm } from '../../src/hsm/soft.js';
import { deriveRootApiKey } from '../../src/hsm/root-key.js';

const dirs: string[] = [];
const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  dirs.forEach(removeDir);
});

test('admin.identity is the root; the HSM-derived key is not printed and has no rights', async () => {
  const base = tempDir();
  dirs.push(base);
  const admin = generateApiKey('k2', 'P-256');
  const s = await startServer({ dir: join(base, 'data'), config: `version: v1\nadmin:\n  identity: ${admin.identity}\n` });
  servers.push(s);
  assert.doesNotMatch(s.output(), /API Key/);
  assert.match(s.output(), new RegExp(`Admin\\s+${admin.identity}`));
  const root = clientFor(s, admin.text);
  await root.createEnclave('e');
  assert.equal((await root.clusterStatus()).nodesUp.size, 1);
  const derived = await deriveRootApiKey(new SoftHsm(s.hsmKey));
  await rejectsWith(clientFor(s, derived.text).listEnclaves(), 'ERR_NOT_ALLOWED');
  // The root identity itself cannot be registered or deleted inside an enclave.
  await rejectsWith(root.createIdentity('e', { identity: admin.identity, privilege: 'Admin' }), 'ERR_ROOT_IDENTITY');
  root.close();
});
