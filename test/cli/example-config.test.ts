/**
 * examples/config.yaml starts as shipped: a node runs on it with only its paths moved into a
 * temporary directory (the files install.sh would create there: a certificate pair, the CA
 * directory, the log directory). A missing audit directory is a clear error, not a raw ENOENT.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MINKMS_BIN, REPO_ROOT, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { createSelfSignedServerCertificate } from '../../src/identity/client-cert.js';
import { waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  dirs.forEach(removeDir);
});

/** The shipped example with /etc/minkms and /var/log/minkms moved below `root`. */
function example(root: string): string {
  const text = readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8');
  const moved = text.replaceAll('/etc/minkms', join(root, 'etc/minkms')).replaceAll('/var/log/minkms', join(root, 'var/log/minkms'));
  // Every absolute path left must be in a comment: the test must not depend on this machine.
  for (const line of moved.split('\n')) {
    const value = line.replace(/#.*$/, '');
    assert.ok(!/\s\/(etc|var|usr|opt|mnt)\//.test(value) || value.includes(root), `unmoved path in: ${line}`);
  }
  return moved;
}

/** What install.sh creates: the certificate pair, the CA directory, the log directory. */
function prepare(root: string, opts: { logDir: boolean }): string {
  const certs = join(root, 'etc/minkms/certs');
  mkdirSync(join(certs, 'CAs'), { recursive: true });
  const { cert, key } = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1'], days: 2 });
  writeFileSync(join(certs, 'public.crt'), cert);
  writeFileSync(join(certs, 'private.key'), key, { mode: 0o600 });
  mkdirSync(join(root, 'var/lib'), { recursive: true });
  if (opts.logDir) mkdirSync(join(root, 'var/log/minkms'), { recursive: true, mode: 0o750 });
  return join(certs, 'public.crt');
}

test('a node starts on examples/config.yaml as shipped (paths moved), serves the CLI and writes the audit log', async () => {
  const root = tempDir('minkms-example-');
  dirs.push(root);
  const caFile = prepare(root, { logDir: true });
  const s = await startServer({ dir: join(root, 'var/lib/minkms'), config: example(root) });
  servers.push(s);
  assert.match(s.apiKey, /^k1:/, 'without admin.identity the root API key is printed');
  const r = spawnSync(process.execPath, [MINKMS_BIN, 'add-enclave', 'minio', '--ca', caFile], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, MINIO_KMS_SERVER: s.host, MINIO_KMS_API_KEY: s.apiKey },
  });
  assert.equal(r.status, 0, r.stderr);
  const audit = join(root, 'var/log/minkms/audit.log');
  await waitFor(
    `an ENCLAVE:CREATE line in ${audit}`,
    () => existsSync(audit) && readFileSync(audit, 'utf8').includes('ENCLAVE:CREATE'),
    10_000,
  );
});

test('a missing audit directory stops the start with a message naming the directory and the setting', async () => {
  const root = tempDir('minkms-example-');
  dirs.push(root);
  prepare(root, { logDir: false });
  await assert.rejects(startServer({ dir: join(root, 'var/lib/minkms'), config: example(root) }), (err: Error) => {
    const dir = join(root, 'var/log/minkms');
    assert.ok(
      err.message.includes(`cannot open the audit log ${dir}/audit.log: its directory ${dir} does not exist`),
      `unclear error:\n${err.message}`,
    );
    assert.match(err.message, /audit\.file/);
    return true;
  });
});
