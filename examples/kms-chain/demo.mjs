#!/usr/bin/env node
// The KMS chain on one machine: a cluster KMS whose root key ends up sealed by a key on a
// second, independent KMS — the five steps of "Store HSM on MinIO KMS", each command printed
// with its result. Run after `npm run build`:   node examples/kms-chain/demo.mjs
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const MINKMS = resolve(fileURLToPath(import.meta.url), '../../../dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'minkms-chain-demo-'));
const servers = new Set();

const say = (text) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);
const shown = (s) => s.replace(/k[12]:[A-Za-z0-9_-]{20,}/g, (k) => `${k.slice(0, 10)}…`);

/** Starts `minkms server` and resolves once it serves; returns its endpoint and printed root key. */
function startServer(name, dir, env, config) {
  const args = [MINKMS, 'server', dir, '--address', '127.0.0.1:0'];
  if (config) args.push('--config', config);
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  servers.add(child);
  let out = '';
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${name} did not start:\n${out}`)), 20_000);
    const onData = (d) => {
      out += d;
      if (/Server is up and running/.test(out)) {
        clearTimeout(timer);
        res({ child, endpoint: /Endpoint\s+(\S+)/.exec(out)[1], apiKey: /API Key\s+(\S+)/.exec(out)?.[1] });
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => rej(new Error(`${name} exited (${code}):\n${out}`)));
  });
}

async function stopServer(s) {
  s.child.kill('SIGTERM');
  await new Promise((r) => (s.child.exitCode !== null ? r() : s.child.once('exit', r)));
  servers.delete(s.child);
}

/** Runs a minkms command as an operator would, printing it and its output. */
function minkms(env, ...args) {
  process.stdout.write(`$ ${shown(['minkms', ...args].join(' '))}\n`);
  const r = spawnSync(process.execPath, [MINKMS, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
  const text = (r.stdout + r.stderr).trimEnd();
  if (text) process.stdout.write(shown(text).replace(/^/gm, '  ') + '\n');
  if (r.status !== 0) throw new Error(`minkms ${args[0]} failed (exit ${r.status})`);
  return r.stdout;
}

try {
  say('Two KMS servers: the cluster KMS (soft HSM key) and an external KMS.');
  const external = await startServer('external KMS', join(work, 'external'), { MINIO_KMS_HSM_KEY: minkms({}, '--soft-hsm').trim() });
  const clusterKey = spawnSync(process.execPath, [MINKMS, '--soft-hsm'], { encoding: 'utf8' }).stdout.trim();
  const clusterDir = join(work, 'cluster');
  let cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: clusterKey });
  const clusterEnv = { MINIO_KMS_SERVER: cluster.endpoint, MINIO_KMS_API_KEY: cluster.apiKey };
  minkms(clusterEnv, 'add-enclave', '-k', 'minio');
  minkms(clusterEnv, 'add-key', '-k', '--enclave', 'minio', 'sse-key');
  const dek = JSON.parse(minkms(clusterEnv, 'keygen', '-k', '--enclave', 'minio', 'sse-key', '--json'));

  say('Step 1: an enclave and an identity for the cluster KMS on the external KMS.');
  const extEnv = { MINIO_KMS_SERVER: external.endpoint };
  minkms(extEnv, 'add-enclave', '-k', '-a', external.apiKey, 'aistor-key-manager');
  const [identity] = JSON.parse(
    minkms(extEnv, 'add-identity', '-k', '-a', external.apiKey, '--enclave', 'aistor-key-manager', '--admin', '--json'),
  );

  say("Step 2: the key that seals the cluster's root key.");
  minkms({ ...extEnv, MINIO_KMS_API_KEY: external.apiKey }, 'add-key', '-k', '--enclave', 'aistor-key-manager', 'aistor-key-manager-hsm');

  say('Step 3: the hsm.minio.minkms section in the cluster KMS configuration, then a restart.');
  const config = join(work, 'cluster.yaml');
  writeFileSync(
    config,
    `version: v1
tls:
  certs:
    - key: ${join(clusterDir, 'certs/private.key')}
      cert: ${join(clusterDir, 'certs/public.crt')}
hsm:
  minio:
    minkms:
      server: [${external.endpoint.replace('https://', '')}]
      enclave: aistor-key-manager
      key: aistor-key-manager-hsm
      auth:
        key: ${identity.api_key}
      tls:
        ca: ${join(work, 'external/certs/public.crt')}
`,
  );
  process.stdout.write(shown(`(config ${config} has the hsm.minio.minkms section for key ${identity.api_key})\n`));
  await stopServer(cluster);
  cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: clusterKey }, config);
  minkms({ ...clusterEnv, MINIO_KMS_SERVER: cluster.endpoint }, 'stat', '-k');

  say('Steps 4 and 5: MINIO_KMS_HSM_KEY removed, restart, and the soft HSM entry deleted.');
  await stopServer(cluster);
  cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: '' }, config);
  const env = { MINIO_KMS_SERVER: cluster.endpoint, MINIO_KMS_API_KEY: cluster.apiKey };
  minkms(env, 'rm-hsm', '-k', 'hsm:minio:soft');
  minkms(env, 'stat', '-k');

  say('The data key made before the switch still decrypts:');
  const plain = JSON.parse(minkms(env, 'decrypt', '-k', '--enclave', 'minio', 'sse-key', dek.ciphertext, '--json'));
  const same = plain.plaintext === dek.plaintext || plain.plaintext_base64 === dek.plaintext;
  process.stdout.write(same ? 'decrypted: the same data key ✔\n' : 'MISMATCH\n');
  await stopServer(cluster);

  say('And the old soft HSM key alone can no longer open the database:');
  const refused = spawnSync(process.execPath, [MINKMS, 'server', clusterDir, '--address', '127.0.0.1:0'], {
    env: { ...process.env, MINIO_KMS_HSM_KEY: clusterKey },
    encoding: 'utf8',
    timeout: 20_000,
  });
  process.stdout.write(`  ${(refused.stderr || refused.stdout).trim().split('\n').pop()}\n`);
  await stopServer(external);
  if (!same || refused.status === 0) process.exitCode = 1;
  else say('Done: the cluster KMS is sealed by the external KMS only.');
} catch (err) {
  process.stderr.write(`demo failed: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  for (const child of servers) child.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}
