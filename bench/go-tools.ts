/**
 * The Go half of the benchmark (bench/go: the load generator and the reference server), built
 * with the Go toolchain into a cache directory and reused while its sources and the toolchain
 * are unchanged.
 *
 * - `MINKMS_BENCH_GO`: the `go` binary (default: `go` on PATH).
 * - `MINKMS_BENCH_CACHE`: the cache directory (default `~/.cache/minkms-bench`).
 *
 * The tools use Go's standard library only, so a build needs no network.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/go in the source tree (this file runs from dist/bench). */
export const GO_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'go');

export interface GoTools {
  loadgen: string;
  refserver: string;
  goVersion: string;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith('.go') || name === 'go.mod' || name === 'go.sum') out.push(p);
  }
  return out;
}

/**
 * Builds (or finds in the cache) the load generator and the reference server.
 *
 * @throws Error with a clear message when the Go toolchain is missing or the build fails.
 */
export function goTools(): GoTools {
  const go = process.env.MINKMS_BENCH_GO ?? 'go';
  // GOTOOLCHAIN=local: never download another toolchain; GOWORK=off: bench/go is its own module.
  const env = { ...process.env, GOTOOLCHAIN: 'local', GOWORK: 'off', GOFLAGS: '' };
  const probe = spawnSync(go, ['version'], { encoding: 'utf8', env });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `the benchmark needs the Go toolchain (\`go\` >= 1.24) to build its load generator and reference server ` +
        `(bench/go), but \`${go} version\` failed: ${probe.error?.message ?? probe.stderr.trim()}. ` +
        'Install Go, fix PATH, or set MINKMS_BENCH_GO=/path/to/go.',
    );
  }
  const goVersion = probe.stdout.trim();
  if (!existsSync(join(GO_DIR, 'go.mod'))) throw new Error(`${GO_DIR}/go.mod is missing: the benchmark's Go sources are not there`);
  const h = createHash('sha256').update(goVersion + '\n');
  for (const f of sources(GO_DIR)) h.update(relative(GO_DIR, f) + '\n').update(readFileSync(f));
  const cache = process.env.MINKMS_BENCH_CACHE ?? join(homedir(), '.cache', 'minkms-bench');
  const dir = join(cache, h.digest('hex').slice(0, 16));
  const tools = { loadgen: join(dir, 'loadgen'), refserver: join(dir, 'refserver'), goVersion };
  if (existsSync(tools.loadgen) && existsSync(tools.refserver)) return tools;

  // Build into a fresh directory and rename it into place, so that a concurrent bench never
  // sees half a build.
  mkdirSync(cache, { recursive: true });
  const tmp = mkdtempSync(join(cache, 'build-'));
  try {
    const r = spawnSync(go, ['build', '-trimpath', '-o', tmp + '/', './cmd/loadgen', './cmd/refserver'], {
      cwd: GO_DIR,
      encoding: 'utf8',
      env,
      timeout: 300_000,
    });
    if (r.error || r.status !== 0) {
      throw new Error(`building the benchmark's Go tools failed (${goVersion}, in ${GO_DIR}):\n${r.error?.message ?? ''}${r.stderr}`);
    }
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Another bench built the same sources first: use its build.
      if (!(existsSync(tools.loadgen) && existsSync(tools.refserver))) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return tools;
}
