/**
 * Starts real `minkms server` processes (the built binary, dist/src/cli/main.js) on 127.0.0.1
 * for black-box tests, and tells the test how to reach them.
 */
import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve, dirname } from 'node:path';
import { createSelfSignedServerCertificate } from '../../src/identity/client-cert.js';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

/** Ports for servers that must keep their port across restarts (see ports.ts). */
export { freePort } from './ports.js';

/**
 * Servers still running when a test file ends (a test failed before stopping its server) are
 * killed, so that a failure never hangs the test run.
 */
const live = new Set<ChildProcess>();
/** Processes that took over a server after a restart (`=> Restarted as process N`): not our children. */
const livePids = new Set<number>();
after(() => {
  for (const child of live) child.kill('SIGKILL');
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** The server under test: this tree's build, or another one's (`MINKMS_TEST_BIN`, e.g. to show that a test fails on an older version). */
export const MINKMS_BIN = process.env.MINKMS_TEST_BIN || join(REPO_ROOT, 'dist/src/cli/main.js');

export interface TestServer {
  /** `https://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  /** Root API key printed by the server (HSM-derived), if it printed one. */
  readonly apiKey: string;
  /** The server certificate (PEM), to be trusted as CA by clients. */
  readonly caPem: string;
  readonly caFile: string;
  readonly hsmKey: string;
  /** The configuration file the server was started with, if any. */
  readonly configFile: string | undefined;
  /** The process started first (after a restart in `exec` mode it has exited: see {@link TestServer.pid}). */
  readonly process: ChildProcess;
  /** The process serving now: the first one, or the one that took over after a restart. */
  pid(): number;
  /** How many times the server restarted itself (re-exec). */
  restarts(): number;
  /** Everything the process wrote so far (stdout + stderr). */
  output(): string;
  /** Graceful stop (SIGTERM) and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Data directory; a fresh temporary one by default. */
  dir?: string;
  /** `hsm:aes256:…`; a fresh one by default. Pass `null` to start without MINIO_KMS_HSM_KEY. */
  hsmKey?: string | null;
  /** Config file contents (YAML text); written next to the data dir (or to `configFile`). */
  config?: string;
  /** Where to write `config` (default: a new file next to the data dir). */
  configFile?: string;
  /** Port to listen on; 0 (any) by default. */
  port?: number;
  env?: Record<string, string>;
  args?: string[];
  /** Resolve as soon as the process listens, even if it reports being sealed. */
  allowSealed?: boolean;
  timeoutMs?: number;
}

export function newHsmKey(): string {
  return 'hsm:aes256:' + randomBytes(32).toString('base64');
}

export function tempDir(prefix = 'minkms-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startServer(opts: StartOptions = {}): Promise<TestServer> {
  const dir = opts.dir ?? join(tempDir(), 'data');
  const hsmKey = opts.hsmKey === undefined ? newHsmKey() : opts.hsmKey;
  const args = [MINKMS_BIN, 'server', dir, '--address', `127.0.0.1:${opts.port ?? 0}`];
  let caFile = join(dir, 'certs', 'public.crt');
  let configFile: string | undefined;
  if (opts.config !== undefined) {
    let config = opts.config;
    if (!/^tls:/m.test(config)) {
      // A configured server needs TLS files (like in production): make a localhost certificate.
      const tlsDir = join(dirname(dir), `tls-${basename(dir)}`);
      mkdirSync(tlsDir, { recursive: true });
      caFile = join(tlsDir, 'public.crt');
      if (!existsSync(caFile)) {
        const { cert, key } = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1', '::1'], days: 30 });
        writeFileSync(join(tlsDir, 'private.key'), key, { mode: 0o600 });
        writeFileSync(caFile, cert);
      }
      config += `\ntls:\n  certs:\n    - key: ${join(tlsDir, 'private.key')}\n      cert: ${caFile}\n`;
    } else {
      // Its own (self-signed) certificate is what clients trust.
      caFile = /^\s+(?:- )?cert:\s*(\S+)/m.exec(config)?.[1] ?? caFile;
    }
    configFile = opts.configFile ?? join(dirname(dir), `config-${randomBytes(4).toString('hex')}.yaml`);
    writeFileSync(configFile, config);
    args.push('--config', configFile);
  }
  args.push(...(opts.args ?? []));
  const env: Record<string, string> = { ...(process.env as Record<string, string>), ...opts.env };
  delete env.MINIO_KMS_HSM_KEY;
  if (hsmKey) env.MINIO_KMS_HSM_KEY = hsmKey;

  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  let out = '';
  // A restart in `exec` mode starts a new process that inherits our pipes and announces itself.
  const successors: number[] = [];
  const RESTARTED = /=> Restarted as process (\d+)/g;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const from = Math.max(0, out.length - 64);
    out += d;
    RESTARTED.lastIndex = from;
    for (let m = RESTARTED.exec(out); m; m = RESTARTED.exec(out)) {
      const pid = Number(m[1]);
      if (!successors.includes(pid)) {
        successors.push(pid);
        livePids.add(pid);
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  // Every holder of the pipes is gone: the first process and any that took over after it.
  const closed = new Promise<void>((res) => child.once('close', () => res()));
  closed.then(() => successors.forEach((p) => livePids.delete(p)));

  // Generous: a start takes well under a second, but a loaded machine (2 cores shared by many
  // test runs) has taken more than 20 s; the deadline only decides when a broken start is reported.
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const up = /Server is up and running/.test(out);
    const sealed = opts.allowSealed && /Endpoint\s+https:\/\/\S+/.test(out) && /sealed/i.test(out);
    if (up || sealed) break;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`minkms server exited (${child.exitCode ?? child.signalCode}):\n${out}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`minkms server did not start within ${timeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const url = /Endpoint\s+(https:\/\/\S+)/.exec(out)![1]!;
  const port = Number(new URL(url).port);
  const apiKey = /API Key\s+(k[12]:\S+)/.exec(out)?.[1] ?? '';
  let caPem = '';
  try {
    caPem = readFileSync(caFile, 'utf8');
  } catch {
    // A server configured with its own TLS files: the test knows its CA.
  }
  const current = () => successors.at(-1) ?? child.pid!;
  const wait = async (signal: NodeJS.Signals) => {
    if (successors.length === 0) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      return;
    }
    try {
      process.kill(current(), signal);
    } catch {
      // already gone
    }
    await closed;
  };
  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dir,
    apiKey,
    caPem,
    caFile,
    hsmKey: hsmKey ?? '',
    configFile,
    process: child,
    pid: current,
    restarts: () => successors.length,
    output: () => out,
    stop: () => wait('SIGTERM'),
    kill: () => wait('SIGKILL'),
  };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
