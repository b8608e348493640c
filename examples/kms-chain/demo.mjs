#!/usr/bin/env node
// The KMS chain on one machine: a cluster KMS whose root key ends up sealed by a key on a
// second, independent KMS — the five steps of "Store HSM on MinIO KMS", each command printed
// with its result. Run after `npm run build`:   node examples/kms-chain/demo.mjs
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const MINKMS = resolve(fileURLToPath(import.meta.url), '../../../dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'minkms-chain-demo-'));
const servers = new Set();

const say = (text) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);
const shown = (s) => s.replace(/k[12]:[A-Za-z0-9_-]{20,}/g, (k) => `${k.slice(0, 10)}…`);

/**
 * Starts `minkms server` and resolves once it serves (or, with `sealed`, once it says it is
 * sealed); returns its endpoint, its printed root key and a way to read its output.
 */
function startServer(name, dir, env, config, { sealed = false } = {}) {
  const args = [MINKMS, 'server', dir, '--address', '127.0.0.1:0'];
  if (config) args.push('--config', config);
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  servers.add(child);
  let out = '';
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${name} did not start:\n${out}`)), 30_000);
    const onData = (d) => {
      out += d;
      if (/Server is up and running/.test(out) || (sealed && /=> Server is sealed: .*\n/.test(out))) {
        clearTimeout(timer);
        res({ child, endpoint: /Endpoint\s+(\S+)/.exec(out)[1], apiKey: /API Key\s+(\S+)/.exec(out)?.[1], output: () => out });
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

/** Polls `check` (a command's output) until it holds, for at most 30 s. */
async function until(what, check) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
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
  say('Two KMS servers: an external KMS, and the cluster KMS installed as under systemd —');
  say('a configuration file, and MINIO_KMS_HSM_KEY in its environment (/etc/default/minkms).');
  const external = await startServer('external KMS', join(work, 'external'), { MINIO_KMS_HSM_KEY: minkms({}, '--soft-hsm').trim() });
  const clusterKey = spawnSync(process.execPath, [MINKMS, '--soft-hsm'], { encoding: 'utf8' }).stdout.trim();
  const clusterDir = join(work, 'cluster');
  const certs = join(work, 'cluster-certs');
  mkdirSync(join(certs, 'CAs'), { recursive: true });
  // The deployment's CA directory (tls.ca) trusts the external KMS: its certificate is self-signed here.
  const certFile = (dir) => join(dir, 'certs/public.crt');
  const config = join(work, 'config.yaml');
  // The cluster's own certificate: made once by a first start without configuration, then named in it.
  let cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: clusterKey });
  await stopServer(cluster);
  copyFileSync(certFile(join(work, 'external')), join(certs, 'CAs', 'external-kms.crt'));
  const base = `version: v1
tls:
  certs:
    - key: ${join(clusterDir, 'certs/private.key')}
      cert: ${certFile(clusterDir)}
  ca: ${join(certs, 'CAs')}
`;
  writeFileSync(config, base);
  cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: clusterKey }, config);
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

  say('Step 3: the hsm.minio.minkms section, added to the configuration file of the running node.');
  writeFileSync(
    config,
    base +
      `hsm:
  minio:
    minkms:
      server:
      - ${external.endpoint.replace('https://', '')}
      enclave: aistor-key-manager
      key: aistor-key-manager-hsm
      auth:
        key: ${identity.api_key}
`,
  );
  process.stdout.write(shown(`(${config} now has the seed's hsm.minio.minkms section, with key ${identity.api_key})\n`));
  // The node notices the change and seals its root key for the external KMS while it runs.
  await until('the entry of the external HSM', () =>
    /hsm:minio:minkms:aistor-key-manager\/aistor-key-manager-hsm/.test(
      JSON.stringify(
        JSON.parse(
          spawnSync(process.execPath, [MINKMS, 'stat', '-k', '--json'], { env: { ...process.env, ...clusterEnv }, encoding: 'utf8' })
            .stdout || '[]',
        )[0]?.hsm ?? '',
      ),
    ),
  );
  minkms(clusterEnv, 'stat', '-k');

  say('Step 4: MINIO_KMS_HSM_KEY removed from the environment. Step 5: one restart.');
  await stopServer(cluster);
  cluster = await startServer('cluster KMS', clusterDir, { MINIO_KMS_HSM_KEY: '' }, config);
  process.stdout.write(
    cluster
      .output()
      .split('\n')
      .filter((l) => /^(HSM|Root|API Key|=>)/.test(l))
      .map(shown)
      .join('\n') + '\n',
  );
  const env = { MINIO_KMS_SERVER: cluster.endpoint, MINIO_KMS_API_KEY: cluster.apiKey };
  minkms(env, 'stat', '-k');

  say('The data key made before the switch still decrypts:');
  const plain = JSON.parse(minkms(env, 'decrypt', '-k', '--enclave', 'minio', 'sse-key', dek.ciphertext, '--json'));
  const same = plain.plaintext === dek.plaintext || plain.plaintext_base64 === dek.plaintext;
  process.stdout.write(same ? 'decrypted: the same data key ✔\n' : 'MISMATCH\n');
  await stopServer(cluster);

  say('And the old soft HSM key alone can no longer open the database (the node stays up, sealed):');
  const alone = await startServer('cluster KMS with the old soft key', clusterDir, { MINIO_KMS_HSM_KEY: clusterKey }, undefined, {
    sealed: true,
  });
  const refused = /=> Server is sealed: (.*)/.exec(alone.output());
  process.stdout.write(`  ${refused ? refused[1] : 'NOT SEALED'}\n`);
  await stopServer(alone);
  await stopServer(external);
  if (!same || !refused) process.exitCode = 1;
  else say('Done: the cluster KMS is sealed by the external KMS only.');
} catch (err) {
  process.stderr.write(`demo failed: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  for (const child of servers) child.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}
