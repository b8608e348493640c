/**
 * The MinIO object store for the end-to-end suite: the binary (built from the Go module proxy
 * once and cached outside the repository) and server processes on 127.0.0.1.
 *
 * Nothing of MinIO's code enters this repository: `go install github.com/minio/minio@VERSION`
 * downloads it into Go's module cache and writes one binary to the cache directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/server.js';

/**
 * The MinIO server version: the newest one the Go module proxy serves (`@latest`, commit
 * 7aac2a2c5b7c of 2026-02-12). Its go.mod has no `replace` directive (go install refuses those),
 * asks for go 1.24 and builds with Go 1.26. It pins the same kms-go SDK as the last releases
 * (`github.com/minio/kms-go/kms v0.5.1-0.20250225090116-4e64ce8d0f35`). The RELEASE-tag
 * pseudo-versions (e.g. RELEASE.2025-10-15T17-29-55Z = v0.0.0-20251015172955-9e49d5e7a648) are
 * not served by the proxy reachable here ("This module version is not available").
 */
export const MINIO_VERSION = process.env.MINKMS_E2E_MINIO_VERSION || 'v0.0.0-20260212201848-7aac2a2c5b7c';

/** Where built binaries are kept: `$MINKMS_E2E_CACHE`, else `~/.cache/minkms-e2e`. */
export function cacheDir(): string {
  return process.env.MINKMS_E2E_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'minkms-e2e');
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The MinIO binary: `$MINKMS_E2E_MINIO_BIN` if set, else `<cache>/minio-<version>`, built with
 * `go install` when missing (about 3 minutes on 2 cores with empty Go caches).
 * @param log progress messages
 */
export async function minioBinary(log: (msg: string) => void, timeoutMs: number): Promise<string> {
  const given = process.env.MINKMS_E2E_MINIO_BIN;
  if (given) {
    if (!executable(given)) throw new Error(`MINKMS_E2E_MINIO_BIN=${given} is not an executable file`);
    return given;
  }
  const dir = cacheDir();
  const bin = join(dir, `minio-${MINIO_VERSION}`);
  if (executable(bin)) return bin;

  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (go.status !== 0)
    throw new Error(
      `MinIO ${MINIO_VERSION} is not cached at ${bin} and Go is not available to build it (go version: ${go.error?.message ?? go.stderr})`,
    );
  const gobin = join(dir, `.build-${process.pid}`);
  rmSync(gobin, { recursive: true, force: true });
  mkdirSync(gobin, { recursive: true });
  log(`building MinIO ${MINIO_VERSION} with ${go.stdout.trim()} into ${bin} (once; later runs use the cached binary)`);
  const started = Date.now();
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    GOBIN: gobin,
    // Upstream builds release binaries without cgo; the local toolchain is new enough.
    CGO_ENABLED: '0',
    GOTOOLCHAIN: 'local',
    GOFLAGS: '-buildvcs=false -modcacherw',
  };
  // `nice`: when the suite runs next to others (npm test), the build yields the CPU to them.
  const niceAvailable = spawnSync('nice', ['true']).status === 0;
  const [cmd, args] = niceAvailable
    ? ['nice', ['-n', '10', 'go', 'install', `github.com/minio/minio@${MINIO_VERSION}`]]
    : ['go', ['install', `github.com/minio/minio@${MINIO_VERSION}`]];
  const child = spawn(cmd, args as string[], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | string>((resolve) => child.once('exit', (c, s) => resolve(c ?? s ?? -1)));
  clearTimeout(timer);
  if (code !== 0 || !existsSync(join(gobin, 'minio'))) {
    rmSync(gobin, { recursive: true, force: true });
    throw new Error(
      `go install github.com/minio/minio@${MINIO_VERSION} failed (${code}) after ${Math.round((Date.now() - started) / 1000)} s:\n${out.slice(-4000)}`,
    );
  }
  renameSync(join(gobin, 'minio'), bin); // atomic: a concurrent run sees a complete binary or none
  rmSync(gobin, { recursive: true, force: true });
  log(`built MinIO in ${Math.round((Date.now() - started) / 1000)} s`);
  return bin;
}

export const ROOT_USER = 'minkms-e2e';
export const ROOT_PASSWORD = 'minkms-e2e-secret-password';

export interface MinioOptions {
  bin: string;
  /** Data directory (one drive). */
  dataDir: string;
  /** MinIO's `--certs-dir`: `<dir>/CAs/` holds the KMS's CA certificate. */
  certsDir: string;
  /**
   * MINIO_KMS_SERVER, MINIO_KMS_ENCLAVE, MINIO_KMS_SSE_KEY, MINIO_KMS_API_KEY — or, with `kes`,
   * only MinIO's KES variables (MINIO_KMS_KES_*): an API key, or a client certificate and key file.
   */
  kms: { server: string; enclave: string; sseKey: string; apiKey: string } | { kes: KesEnv };
  /** A temporary HOME (MinIO may write `~/.minio`). */
  home: string;
  timeoutMs?: number;
}

/** MinIO's KES configuration (MINIO_KMS_KES_ENDPOINT, _KEY_NAME, _API_KEY or _CERT_FILE/_KEY_FILE, _CAPATH). */
export interface KesEnv {
  endpoint: string;
  keyName: string;
  apiKey?: string;
  certFile?: string;
  keyFile?: string;
  caPath?: string;
}

function kmsEnv(kms: MinioOptions['kms']): Record<string, string> {
  if (!('kes' in kms)) {
    return { MINIO_KMS_SERVER: kms.server, MINIO_KMS_ENCLAVE: kms.enclave, MINIO_KMS_SSE_KEY: kms.sseKey, MINIO_KMS_API_KEY: kms.apiKey };
  }
  const k = kms.kes;
  const env: Record<string, string> = { MINIO_KMS_KES_ENDPOINT: k.endpoint, MINIO_KMS_KES_KEY_NAME: k.keyName };
  if (k.apiKey) env.MINIO_KMS_KES_API_KEY = k.apiKey;
  if (k.certFile) env.MINIO_KMS_KES_CERT_FILE = k.certFile;
  if (k.keyFile) env.MINIO_KMS_KES_KEY_FILE = k.keyFile;
  if (k.caPath) env.MINIO_KMS_KES_CAPATH = k.caPath;
  return env;
}

export interface MinioServer {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly process: ChildProcess;
  output(): string;
  /** SIGTERM, then SIGKILL after 10 s; waits for the exit. */
  stop(): Promise<void>;
}

/** Every MinIO server started (and not yet stopped), to be killed in `after` on failures. */
const running = new Set<MinioServer>();
// Last resort (the test process is ending without `after`, e.g. on a timeout): leave no MinIO behind.
process.once('exit', () => {
  for (const s of running) s.process.kill('SIGKILL');
});

/**
 * Starts `minio server` on 127.0.0.1 with the MinIO KMS environment, and waits until
 * `/minio/health/live` says the object layer is up (start-up, including the KMS checks, is
 * over). Throws with MinIO's output if it exits or does not come up in time.
 */
export async function startMinio(o: MinioOptions): Promise<MinioServer> {
  const port = await freePort();
  const consolePort = await freePort();
  // A minimal environment: nothing of the caller's MINIO_* variables leaks in.
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: o.home,
    MINIO_ROOT_USER: ROOT_USER,
    MINIO_ROOT_PASSWORD: ROOT_PASSWORD,
    ...kmsEnv(o.kms),
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
  };
  mkdirSync(o.dataDir, { recursive: true });
  const args = [
    'server',
    '--address',
    `127.0.0.1:${port}`,
    '--console-address',
    `127.0.0.1:${consolePort}`,
    '--certs-dir',
    o.certsDir,
    o.dataDir,
  ];
  const child = spawn(o.bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const endpoint = `http://127.0.0.1:${port}`;
  const server: MinioServer = {
    endpoint,
    process: child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      running.delete(server);
    },
  };
  running.add(server);

  const timeoutMs = o.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      running.delete(server);
      throw new Error(`minio server exited (${child.exitCode ?? child.signalCode}):\n${out.slice(-6000)}`);
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`minio server did not start within ${timeoutMs} ms:\n${out.slice(-6000)}`);
    }
    if (await live(endpoint)) return server;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Liveness 200 without `X-Minio-Server-Status: offline` = the object layer is initialized. */
async function live(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status === 200 && res.headers.get('x-minio-server-status') !== 'offline';
  } catch {
    return false;
  }
}

/** Kills every MinIO server still running (for `after`). */
export async function stopAllMinio(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()));
}

/** Status of MinIO's readiness probe, which asks the KMS for a data key of the default key. */
export async function readyStatus(endpoint: string): Promise<number> {
  const res = await fetch(`${endpoint}/minio/health/ready`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}
