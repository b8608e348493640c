/**
 * The npm package, as a user gets it: `npm pack` in a clean copy of the repository (no dist/:
 * `prepack` builds it), the tarball's contents, `npm install -g --prefix` of the tarball, and the
 * installed `minkms` — its version, a server started from it, a command against that server, a
 * clean stop — all outside the clone.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, newHsmKey, removeDir, tempDir } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const work = tempDir('minkms-package-');
after(() => removeDir(work));

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

/** What a clean clone holds (tracked files plus new ones not ignored), with the dependencies linked in. */
function cleanCopy(dest: string): void {
  const ls = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(ls.status, 0, ls.stderr);
  for (const file of ls.stdout.split('\0').filter((f) => f !== '')) {
    if (!existsSync(join(REPO_ROOT, file))) continue; // deleted in the work tree
    mkdirSync(join(dest, file, '..'), { recursive: true });
    cpSync(join(REPO_ROOT, file), join(dest, file));
  }
  // `npm ci` would install the same tree; linking it saves minutes. prepack only needs typescript.
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dest, 'node_modules'));
  assert.ok(!existsSync(join(dest, 'dist')), 'the copy has no build output');
}

test('npm pack from a clean clone, npm install -g of the tarball, and the installed minkms serves', { timeout: 15 * 60_000 }, async () => {
  const src = join(work, 'clone');
  cleanCopy(src);
  const t0 = Date.now();
  const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: src, encoding: 'utf8', timeout: 600_000 });
  assert.equal(pack.status, 0, pack.stderr);
  const packTime = Date.now() - t0;
  const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{
    filename: string;
    size: number;
    unpackedSize: number;
    files: { path: string }[];
  }>;
  const files = info!.files.map((f) => f.path);
  for (const want of [
    'dist/src/cli/main.js',
    'dist/src/version.js',
    'package.json',
    'LICENSE',
    'README.md',
    'examples/config.yaml',
    'deploy/install.sh',
    'deploy/minkms.service',
    'deploy/minkms.env',
  ]) {
    assert.ok(files.includes(want), `${want} is not in the tarball`);
  }
  const stray = files.filter(
    (f) =>
      /\.(ts|map)$/.test(f) || f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('src/') || f.startsWith('node_modules/'),
  );
  assert.deepEqual(stray, [], 'sources, tests and maps stay out');
  assert.match(readFileSync(join(REPO_ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004/);
  const tarball = join(work, info!.filename);
  assert.equal(info!.filename, `${pkg.name}-${pkg.version}.tgz`);

  // Installed like a release, into a prefix of its own; better-sqlite3 is built or fetched by npm.
  const prefix = join(work, 'prefix');
  const t1 = Date.now();
  const install = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarball], {
    cwd: work,
    encoding: 'utf8',
    timeout: 12 * 60_000,
  });
  assert.equal(install.status, 0, install.stdout + install.stderr);
  const installTime = Date.now() - t1;
  process.stderr.write(
    `tarball ${info!.filename}: ${(info!.size / 1024).toFixed(0)} KiB packed, ${(info!.unpackedSize / 1024).toFixed(0)} KiB unpacked, ` +
      `${files.length} files; npm pack ${(packTime / 1000).toFixed(0)} s, npm install -g ${(installTime / 1000).toFixed(0)} s\n`,
  );
  const bin = join(prefix, 'bin/minkms');
  assert.ok(existsSync(bin), `${bin} missing`);
  assert.ok(realpathSync(bin).startsWith(realpathSync(prefix)), `${bin} points into ${realpathSync(bin)}, not into the prefix`);

  // No trace of the clone: another directory, another HOME, only system PATH entries plus node's.
  const home = join(work, 'home');
  mkdirSync(home);
  const env = { PATH: `${join(prefix, 'bin')}:${join(process.execPath, '..')}:/usr/bin:/bin`, HOME: home, NO_COLOR: '1' };
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8', env, cwd: home });
  assert.equal(version.status, 0, version.stderr);
  assert.equal(version.stdout.trim(), pkg.version);

  const server = spawn(bin, ['server', join(home, 'data'), '--address', '127.0.0.1:0'], {
    env: { ...env, MINIO_KMS_HSM_KEY: newHsmKey() },
    cwd: home,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  server.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  server.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
  try {
    await waitFor('the installed server to start', () => /Server is up and running/.test(out) || server.exitCode !== null, 60_000).catch(
      () => assert.fail(`the installed server did not start within 60 s:\n${out}`),
    );
    assert.equal(server.exitCode, null, `the installed server exited:\n${out}`);
    assert.match(out, new RegExp(`Version\\s+${pkg.version.replace(/\./g, '\\.')}`));
    const clientEnv = {
      ...env,
      MINIO_KMS_SERVER: /Endpoint\s+(https:\/\/\S+)/.exec(out)![1]!,
      MINIO_KMS_API_KEY: /API Key\s+(k1:\S+)/.exec(out)![1]!,
    };
    const add = spawnSync(bin, ['add-enclave', '-k', 'minio'], { encoding: 'utf8', env: clientEnv, cwd: home, timeout: 30_000 });
    assert.equal(add.status, 0, add.stderr);
    const ls = spawnSync(bin, ['ls-enclave', '-k', '--json'], { encoding: 'utf8', env: clientEnv, cwd: home, timeout: 30_000 });
    assert.equal(ls.status, 0, ls.stderr);
    assert.deepEqual(
      (JSON.parse(ls.stdout) as { name: string }[]).map((e) => e.name),
      ['minio'],
    );
  } finally {
    server.kill('SIGTERM');
  }
  assert.equal(await exited, 0, `a clean stop:\n${out}`);
});
