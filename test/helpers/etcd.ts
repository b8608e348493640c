/**
 * Starts a REAL etcd cluster (default: 3 members) on 127.0.0.1 for tests, with free ports and
 * data directories in a temporary directory, and lets a test stop, kill and restart single
 * members.
 *
 * The `etcd` binary is found by {@link resolveEtcdBinary}: `$ETCD_BIN`, an `etcd` on PATH
 * (Debian's `etcd-server`, 3.4), a binary built earlier into the cache, else it is built once
 * from the Go module proxy (test/etcd/, etcd 3.6) — or, without Go but as root, installed with
 * apt. If none of these is possible, `startEtcdCluster` throws one message naming what is
 * missing: tests that need etcd fail, they are not skipped.
 *
 * The members run with `--max-txn-ops` and `--max-request-bytes` raised (see
 * src/store/etcd.ts: a restore or root-key rotation is one large transaction).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { cacheDir, executable, lockBuild, onPath, runCommand } from './tools.js';
import { waitFor } from './wait.js';
import { freePorts } from './ports.js';

export interface EtcdClusterOptions {
  /** Number of members; 3 by default. */
  size?: number;
  /** `--max-txn-ops`; 10000 by default (etcd's default is 128). */
  maxTxnOps?: number;
  /** `--max-request-bytes`; 32 MiB by default (etcd's default is 1.5 MiB). */
  maxRequestBytes?: number;
  /** How long to wait for the cluster to become healthy; 20 s by default. */
  timeoutMs?: number;
  /**
   * Serve clients over TLS (`https://` client URLs) with this certificate and key (PEM),
   * requiring client certificates issued by `ca`. Peers still talk plain HTTP.
   */
  tls?: { cert: string; key: string; ca: string } | undefined;
  /** More etcd flags for every member, e.g. `--quota-backend-bytes=…`. */
  extraArgs?: string[];
}

export interface EtcdMember {
  readonly name: string;
  /** `http://127.0.0.1:PORT` */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** True while the process runs (paused or not). */
  readonly running: boolean;
  /** True while the process is stopped by `pause`. */
  readonly paused: boolean;
  /** The last ~64 KiB the process wrote to stdout/stderr (all its runs). */
  output(): string;
  /** The last `lines` lines of `output()`, for error messages. */
  tail(lines?: number): string;
}

export interface EtcdCluster {
  /** Client URLs of every member, running or not. */
  readonly endpoints: string[];
  readonly members: readonly EtcdMember[];
  /** Gracefully stops member `i` (SIGTERM) and waits for it to exit. */
  stop(i: number): Promise<void>;
  /** Kills member `i` (SIGKILL) and waits for it to exit. */
  kill(i: number): Promise<void>;
  /** Starts member `i` again on its data directory (it must not be running); does not wait for health. */
  restart(i: number): Promise<void>;
  /**
   * Pauses member `i` (SIGSTOP): it keeps its connections open and answers nothing, like a
   * hung process or a stuck disk. `resume` (SIGCONT) lets it go on; stop, kill and close work
   * on a paused member too.
   */
  pause(i: number): void;
  resume(i: number): void;
  /** Index of the member that is the raft leader now (asks every running, unpaused member). */
  leader(): Promise<number>;
  /** Makes member `i` the leader (etcd's MoveLeader; no election timeout involved), unless it is already. */
  moveLeader(i: number): Promise<void>;
  /** Watchers each member serves now (its `etcd_debugging_mvcc_watcher_total`; -1 if it does not answer). */
  watchers(): Promise<number[]>;
  /**
   * Waits until member `i` (default: every member started and not stopped since, unless
   * paused) reports healthy, i.e. sees a leader (with TLS: only until it accepts connections;
   * check with a client). One of them that exited (a restart that could not bind its port) is
   * an error with the end of its output.
   */
  waitHealthy(i?: number, timeoutMs?: number): Promise<void>;
  /** Kills every member and removes the temporary directory. Never throws; may be called twice. */
  close(): Promise<void>;
}

type Resolved = Required<Omit<EtcdClusterOptions, 'tls'>> & Pick<EtcdClusterOptions, 'tls'>;

export const DEFAULT_MAX_TXN_OPS = 10_000;
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** The repository: dist/test/helpers/ → ../../.. */
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** The Go main module that builds etcd (a wrapper around etcdmain, see its main.go). */
export const ETCD_BUILD_DIR = join(REPO_ROOT, 'test/etcd');

/** The etcd version test/etcd/go.mod pins (the single place it is written down). */
export function etcdBuildVersion(): string {
  const mod = readFileSync(join(ETCD_BUILD_DIR, 'go.mod'), 'utf8');
  const m = /^\s*(?:require\s+)?go\.etcd\.io\/etcd\/server\/v3\s+(v\S+)/m.exec(mod);
  if (!m) throw new Error(`${join(ETCD_BUILD_DIR, 'go.mod')} does not require go.etcd.io/etcd/server/v3`);
  return m[1]!;
}

export interface ResolveEtcdOptions {
  /** Environment to look in (PATH, ETCD_BIN, MINKMS_E2E_CACHE); `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /** May apt-get install etcd-server when nothing else works; by default when running as root. */
  allowApt?: boolean;
  /** Progress messages (a build takes minutes the first time). */
  log?: (msg: string) => void;
  /** Bound of a build or an installation; 15 minutes by default. */
  timeoutMs?: number;
}

/** How the binary was found: for the message of a test, and for the resolution test. */
export interface ResolvedEtcd {
  bin: string;
  source: 'ETCD_BIN' | 'PATH' | 'cache' | 'built' | 'apt';
  version: string;
}

/** `etcd --version`'s first line, or undefined if `bin` does not run. */
function probe(bin: string, env: NodeJS.ProcessEnv): string | undefined {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', env, timeout: 20_000 });
  if (r.error || r.status !== 0) return undefined;
  return /etcd Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? r.stdout.split('\n')[0]!.trim();
}

/** Builds test/etcd into `bin` with Go (the module proxy supplies etcd's source). */
async function buildEtcd(go: string, bin: string, version: string, o: Required<Omit<ResolveEtcdOptions, 'allowApt'>>): Promise<void> {
  const started = Date.now();
  const tmp = `${bin}.build-${process.pid}`;
  const env: NodeJS.ProcessEnv = {
    ...o.env,
    // etcd's releases are static binaries; no C toolchain needed.
    CGO_ENABLED: '0',
    // go.mod asks for go 1.24: never download another toolchain behind the user's back.
    GOTOOLCHAIN: 'local',
    GOFLAGS: '-buildvcs=false -modcacherw -mod=readonly',
  };
  o.log(`building etcd ${version} from the Go module proxy into ${bin} (once; later runs use the cached binary)`);
  // `nice`: next to running tests (npm test runs two files at once), the build yields the CPU.
  const nice = onPath('nice', o.env);
  const args = ['build', '-trimpath', '-o', tmp, '.'];
  const r = await runCommand(nice ?? go, nice ? ['-n', '10', go, ...args] : args, {
    cwd: ETCD_BUILD_DIR,
    env,
    timeoutMs: o.timeoutMs,
  });
  if (r.code !== 0 || !executable(tmp)) {
    rmSync(tmp, { force: true });
    throw new Error(
      `could not build etcd ${version} with ${go} (exit ${r.code} after ${Math.round((Date.now() - started) / 1000)} s; ` +
        `it needs Go >= 1.24 and the Go module proxy):\n${r.out.slice(-4000)}`,
    );
  }
  renameSync(tmp, bin); // atomic: a concurrent reader sees a complete binary or none
  o.log(`built etcd ${version} in ${Math.round((Date.now() - started) / 1000)} s`);
}

/**
 * Finds or obtains an etcd binary, in this order: `$ETCD_BIN` (an error if it does not run);
 * `etcd` on PATH; `<cache>/etcd-<version>`; a build of test/etcd with the Go on PATH into the
 * cache; `apt-get install etcd-server` when running as root; else one error naming all that is
 * missing.
 */
export async function resolveEtcdBinary(opts: ResolveEtcdOptions = {}): Promise<ResolvedEtcd> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((msg: string) => process.stderr.write(`${msg}\n`));
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  const given = env.ETCD_BIN;
  if (given) {
    const v = probe(given, env);
    if (v === undefined)
      throw new Error(`ETCD_BIN=${given} does not run ('${given} --version' failed); unset it or point it at an etcd 3.4+ binary`);
    return { bin: given, source: 'ETCD_BIN', version: v };
  }
  const system = onPath('etcd', env);
  const systemVersion = system && probe(system, env);
  if (system && systemVersion) return { bin: system, source: 'PATH', version: systemVersion };

  const version = etcdBuildVersion();
  const cache = cacheDir(env);
  const bin = join(cache, `etcd-${version}`);
  const cachedVersion = executable(bin) ? probe(bin, env) : undefined;
  if (cachedVersion) return { bin, source: 'cache', version: cachedVersion };

  const go = onPath('go', env);
  if (go) {
    mkdirSync(cache, { recursive: true });
    const deadline = Date.now() + timeoutMs;
    if (await lockBuild(bin, deadline)) {
      try {
        await buildEtcd(go, bin, version, { env, log, timeoutMs });
      } finally {
        rmSync(`${bin}.lock`, { recursive: true, force: true });
      }
    }
    const v = probe(bin, env);
    if (v === undefined) throw new Error(`the etcd binary built into ${bin} does not run; remove it and try again`);
    return { bin, source: 'built', version: v };
  }

  const root = process.getuid?.() === 0;
  const apt = onPath('apt-get', env);
  if ((opts.allowApt ?? root) && apt) {
    log("etcd is missing and Go is not installed: installing Debian's etcd-server with apt-get");
    const aptEnv = { ...env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = await runCommand(apt, ['update', '-qq'], { env: aptEnv, timeoutMs });
    const install =
      update.code === 0
        ? await runCommand(apt, ['install', '-y', '-qq', '--no-install-recommends', 'etcd-server'], { env: aptEnv, timeoutMs })
        : update;
    // The package starts a system etcd on the default ports where systemd runs; the tests start their own.
    if (install.code === 0 && onPath('systemctl', env)) spawnSync('systemctl', ['stop', 'etcd'], { env, stdio: 'ignore' });
    const installed = onPath('etcd', env);
    const v = installed && probe(installed, env);
    if (install.code === 0 && installed && v) return { bin: installed, source: 'apt', version: v };
    throw new Error(`apt-get install etcd-server failed (exit ${install.code}):\n${install.out.slice(-2000)}`);
  }

  throw new Error(
    `etcd is missing: no etcd on PATH, none built in ${bin}, and no Go on PATH to build etcd ${version} from the Go module proxy` +
      (root ? ' (nor apt-get to install it)' : ' (and not root, so apt-get cannot install it)') +
      '. Install Go >= 1.24 (the tests then build etcd once), or run `apt-get install etcd-server`, or set ETCD_BIN=/path/to/etcd.',
  );
}

let resolved: Promise<ResolvedEtcd> | undefined;

/** {@link resolveEtcdBinary} once per test process. */
export async function etcdBinary(): Promise<string> {
  resolved ??= resolveEtcdBinary();
  try {
    return (await resolved).bin;
  } catch (err) {
    resolved = undefined; // let a later test try again (and fail with the same message)
    throw err;
  }
}

/** Every child still alive, so that a crashing test run does not leave etcd processes behind. */
const alive = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of alive) child.kill('SIGKILL');
  });
}

const OUTPUT_LIMIT = 64 * 1024;

class Member implements EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly #bin: string;
  readonly #args: string[];
  #child: ChildProcess | undefined;
  /** Started and not stopped by the test: it should be running (a restart that fails to bind is not). */
  #wanted = false;
  #exited: Promise<void> = Promise.resolve();
  #output = '';
  #paused = false;

  constructor(
    bin: string,
    name: string,
    clientPort: number,
    peerPort: number,
    dataDir: string,
    initialCluster: string,
    token: string,
    opts: Resolved,
  ) {
    this.#bin = bin;
    this.name = name;
    this.clientUrl = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
    this.peerUrl = `http://127.0.0.1:${peerPort}`;
    this.dataDir = dataDir;
    this.#args = [
      `--name=${name}`,
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${this.clientUrl}`,
      `--advertise-client-urls=${this.clientUrl}`,
      `--listen-peer-urls=${this.peerUrl}`,
      `--initial-advertise-peer-urls=${this.peerUrl}`,
      `--initial-cluster=${initialCluster}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=${token}`,
      `--max-txn-ops=${opts.maxTxnOps}`,
      `--max-request-bytes=${opts.maxRequestBytes}`,
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
      ...opts.extraArgs,
    ];
    if (opts.tls) {
      const files = { cert: join(dataDir, '..', 'server.crt'), key: join(dataDir, '..', 'server.key'), ca: join(dataDir, '..', 'ca.crt') };
      writeFileSync(files.cert, opts.tls.cert);
      writeFileSync(files.key, opts.tls.key, { mode: 0o600 });
      writeFileSync(files.ca, opts.tls.ca);
      this.#args.push(`--cert-file=${files.cert}`, `--key-file=${files.key}`, `--trusted-ca-file=${files.ca}`, '--client-cert-auth');
    }
  }

  get wanted(): boolean {
    return this.#wanted;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  get paused(): boolean {
    return this.#paused;
  }

  pause(): void {
    if (!this.#child) throw new Error(`etcd member ${this.name} is not running`);
    this.#child.kill('SIGSTOP');
    this.#paused = true;
  }

  resume(): void {
    if (this.#child && this.#paused) this.#child.kill('SIGCONT');
    this.#paused = false;
  }

  output(): string {
    return this.#output;
  }

  tail(lines = 15): string {
    return this.#output.trimEnd().split('\n').slice(-lines).join('\n');
  }

  #append(chunk: Buffer): void {
    this.#output = (this.#output + chunk.toString('utf8')).slice(-OUTPUT_LIMIT);
  }

  start(): void {
    if (this.#child) throw new Error(`etcd member ${this.name} is already running`);
    this.#wanted = true;
    // Keep ETCD_* variables of the environment out: etcd reads its flags from them too.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
    const child = spawn(this.#bin, this.#args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.#child = child;
    alive.add(child);
    child.stdout!.on('data', (d: Buffer) => this.#append(d));
    child.stderr!.on('data', (d: Buffer) => this.#append(d));
    this.#exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        alive.delete(child);
        if (this.#child === child) {
          this.#child = undefined;
          this.#paused = false;
        }
        this.#append(Buffer.from(`\n[test helper] ${this.name} exited (code ${code}, signal ${signal})\n`));
        resolve();
      });
      child.once('error', (err) => {
        alive.delete(child);
        if (this.#child === child) this.#child = undefined;
        this.#append(Buffer.from(`\n[test helper] ${this.name} failed to start: ${err.message}\n`));
        resolve();
      });
    });
  }

  async signal(sig: NodeJS.Signals): Promise<void> {
    this.#wanted = false;
    const child = this.#child;
    if (!child) return;
    // A stopped process only handles SIGKILL: let it run to handle the others.
    if (sig !== 'SIGKILL') this.resume();
    child.kill(sig);
    const timer = sig === 'SIGKILL' ? undefined : setTimeout(() => child.kill('SIGKILL'), 10_000);
    await this.#exited;
    if (timer) clearTimeout(timer);
  }

  /** True if `/health` says so (the member has a leader and can serve a quorum read). */
  async healthy(): Promise<boolean> {
    if (this.clientUrl.startsWith('https:')) return this.#tlsListening();
    try {
      const res = await fetch(`${this.clientUrl}/health`, { signal: AbortSignal.timeout(2_000) });
      const body = (await res.json()) as { health?: string };
      return res.ok && body.health === 'true';
    } catch {
      return false;
    }
  }

  /** With client-certificate auth, /health needs a client certificate; settle for "it listens". */
  async #tlsListening(): Promise<boolean> {
    const port = Number(new URL(this.clientUrl).port);
    return new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  }
}

async function launch(bin: string, root: string, opts: Resolved): Promise<EtcdCluster> {
  const ports = await freePorts(opts.size * 2);
  const names = Array.from({ length: opts.size }, (_, i) => `m${i}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[2 * i + 1]}`).join(',');
  const token = `minkms-test-${process.pid}-${ports[0]}`;
  const members = names.map((n, i) => {
    const dataDir = join(root, n);
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return new Member(bin, n, ports[2 * i]!, ports[2 * i + 1]!, dataDir, initialCluster, token, opts);
  });
  let closed = false;
  const cluster: EtcdCluster = {
    endpoints: members.map((m) => m.clientUrl),
    members,
    stop: (i) => member(i).signal('SIGTERM'),
    kill: (i) => member(i).signal('SIGKILL'),
    restart: async (i) => member(i).start(),
    pause: (i) => member(i).pause(),
    resume: (i) => member(i).resume(),
    leader: async () => {
      // /v2 is off in 3.4 by default; the metrics endpoint says whether a member leads.
      for (const [i, m] of members.entries()) {
        if (!m.running || m.paused || m.clientUrl.startsWith('https:')) continue;
        try {
          const res = await fetch(`${m.clientUrl}/metrics`, { signal: AbortSignal.timeout(2_000) });
          if (/^etcd_server_is_leader 1$/m.test(await res.text())) return i;
        } catch {
          // not answering: not the leader we can use
        }
      }
      throw new Error('no etcd member reports being the leader');
    },
    watchers: async () =>
      Promise.all(
        members.map(async (m) => {
          if (!m.running || m.paused || m.clientUrl.startsWith('https:')) return -1;
          try {
            const res = await fetch(`${m.clientUrl}/metrics`, { signal: AbortSignal.timeout(2_000) });
            const match = /^etcd_debugging_mvcc_watcher_total (\d+)$/m.exec(await res.text());
            return match ? Number(match[1]) : -1;
          } catch {
            return -1;
          }
        }),
      ),
    moveLeader: async (target) => {
      const from = await cluster.leader();
      if (from === target) return;
      const client = new Etcd3({ hosts: [members[from]!.clientUrl] });
      try {
        const list = await client.cluster.memberList({});
        const id = list.members.find((m) => m.name === members[target]!.name)?.ID;
        if (!id) throw new Error(`etcd member ${members[target]!.name} is not in the member list`);
        await client.maintenance.moveLeader({ targetID: id });
      } finally {
        client.close();
      }
      await waitFor(`etcd member ${target} to become the leader`, async () => (await cluster.leader().catch(() => -1)) === target, 10_000);
    },
    waitHealthy: async (i, timeoutMs = opts.timeoutMs) => {
      const targets = i === undefined ? members.filter((m) => m.wanted && !m.paused) : [member(i)];
      const deadline = Date.now() + timeoutMs;
      for (const m of targets) {
        const state = await waitFor(
          `etcd member ${m.name} to be healthy`,
          async () => (!m.running ? 'stopped' : (await m.healthy()) ? 'healthy' : false),
          Math.max(0, deadline - Date.now()),
        ).catch(() => 'late');
        if (state === 'stopped') throw new Error(`etcd member ${m.name} is not running; the end of its output:\n${m.tail()}`);
        if (state === 'late')
          throw new Error(`etcd member ${m.name} not healthy within ${timeoutMs} ms; the end of its output:\n${m.tail()}`);
      }
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await Promise.all(members.map((m) => m.signal('SIGKILL').catch(() => undefined)));
    },
  };
  function member(i: number): Member {
    const m = members[i];
    if (!m) throw new Error(`no etcd member ${i} (cluster of ${members.length})`);
    return m;
  }
  for (const m of members) m.start();
  try {
    await cluster.waitHealthy(undefined, opts.timeoutMs);
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}

/**
 * Starts a fresh cluster and waits until every member is healthy. Always `close()` it (in an
 * `after` hook); the temporary directory goes with it.
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const bin = await etcdBinary();
  installExitHook();
  const opts: Resolved = {
    size: options.size ?? 3,
    maxTxnOps: options.maxTxnOps ?? DEFAULT_MAX_TXN_OPS,
    maxRequestBytes: options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    timeoutMs: options.timeoutMs ?? 20_000,
    tls: options.tls,
    extraArgs: options.extraArgs ?? [],
  };
  const root = mkdtempSync(join(tmpdir(), 'minkms-etcd-'));
  const removeRoot = (): void => rmSync(root, { recursive: true, force: true });
  // A free port can be taken by someone else between probing and etcd binding it: try twice.
  for (let attempt = 1; ; attempt++) {
    const dir = join(root, `try${attempt}`);
    try {
      const cluster = await launch(bin, dir, opts);
      return {
        ...cluster,
        close: async () => {
          await cluster.close();
          removeRoot();
        },
      };
    } catch (err) {
      if (attempt >= 2) {
        removeRoot();
        throw err;
      }
    }
  }
}
