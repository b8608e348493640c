/**
 * `minkms add-identity --service`, `ls-identity` and `get-identity` report the privilege a
 * service account acts with (its creator's, at most Admin), not the "User" of its request; and
 * a service account cannot register a standalone identity.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';

let server: TestServer;
let home: string;
let baseEnv: Record<string, string>;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function minkms(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function ok(args: readonly string[], env?: Record<string, string>): Promise<string> {
  const r = await minkms(args, env);
  assert.equal(r.code, 0, `minkms ${args.join(' ')}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const json = async (args: readonly string[], env?: Record<string, string>): Promise<any> => JSON.parse(await ok([...args, '--json'], env));

before(async () => {
  server = await startServer();
  home = tempDir('minkms-sa-home-');
  mkdirSync(join(home, '.minkms', 'certs', 'CAs'), { recursive: true });
  writeFileSync(join(home, '.minkms', 'certs', 'CAs', 'server.pem'), server.caPem);
  baseEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('MINIO_KMS_')) baseEnv[k] = v;
  Object.assign(baseEnv, { HOME: home, NO_COLOR: '1', MINIO_KMS_SERVER: server.url, MINIO_KMS_API_KEY: server.apiKey });
});

after(async () => {
  await server?.stop();
  if (server) removeDir(join(server.dir, '..'));
  if (home) removeDir(home);
});

test('service accounts are shown with the privilege they act with', async () => {
  const e = { MINIO_KMS_ENCLAVE: 'sa' };
  await ok(['add-enclave', 'sa']);
  const [admin] = await json(['add-identity', '--admin'], e);
  const asAdmin = { ...e, MINIO_KMS_API_KEY: admin.api_key };

  // An Admin's service account: "Admin (service account)", not "(User)".
  const human = await ok(['add-identity', '--service'], asAdmin);
  assert.match(human, /^Privilege\s+Admin \(service account\)$/m, human);
  const saId = /^Identity\s+(h1:\S+)$/m.exec(human)![1]!;
  const saKey = /^API Key\s+(k1:\S+)$/m.exec(human)![1]!;
  const [viaJson] = await json(['add-identity', '--service'], asAdmin);
  assert.equal(viaJson.privilege, 'Admin');
  assert.equal(viaJson.is_service_account, true);

  // Of root: Admin of the enclave (a service account's rights end at its enclave).
  const [ofRoot] = await json(['add-identity', '--service'], e);
  assert.equal(ofRoot.privilege, 'Admin');

  // ls-identity and get-identity agree, for the JSON and the human form.
  const list = await json(['ls-identity'], e);
  const row = list.find((r: any) => r.identity === saId);
  assert.deepEqual([row.privilege, row.is_service_account, row.created_by], ['Admin', true, admin.identity]);
  const table = await ok(['ls-identity'], e);
  assert.match(table, new RegExp(`^${saId}\\s+Admin \\(service\\)\\s`, 'm'), table);
  const [status] = await json(['get-identity', saId], e);
  assert.equal(status.privilege, 'Admin');
  const self = await ok(['get-identity'], { ...e, MINIO_KMS_API_KEY: saKey });
  assert.match(self, /^Privilege\s+Admin$/m, self);
  assert.match(self, /^Service account\s+yes$/m, self);

  // The service account may add its own service accounts, never a standalone identity.
  const [child] = await json(['add-identity', '--service'], { ...e, MINIO_KMS_API_KEY: saKey });
  assert.equal(child.privilege, 'Admin');
  const refused = await minkms(['add-identity', '--admin'], { ...e, MINIO_KMS_API_KEY: saKey });
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /^minkms: access denied: insufficient permissions/);

  // All of them go with the Admin.
  await ok(['rm-identity', admin.identity], e);
  const left = (await json(['ls-identity'], e)).map((r: any) => r.identity);
  assert.deepEqual(left.sort(), [ofRoot.identity]);

  // A User's service account acts as a User, with the User's policy.
  writeFileSync(join(home, 'p.json'), '{"allow": {"IDENTITY:CREATE": "*", "KEY:STATUS": "app-*"}}');
  await ok(['add-policy', 'p', join(home, 'p.json')], e);
  const [user] = await json(['add-identity'], e);
  await ok(['set-policy', 'p', user.identity], e);
  const [userSa] = await json(['add-identity', '--service'], { ...e, MINIO_KMS_API_KEY: user.api_key });
  assert.equal(userSa.privilege, 'User');
  const [userSaStatus] = await json(['get-identity', userSa.identity], e);
  assert.deepEqual([userSaStatus.privilege, userSaStatus.policy, userSaStatus.is_service_account], ['User', 'p', true]);
});
