/**
 * Starts a REAL etcd cluster (default: 3 members) on 127.0.0.1 for tests, with free ports and
 * data directories in a temporary directory, and lets a test stop, kill and restart single
 * members. The `etcd` binary comes from Debian's `etcd-server` package (CI:
 * `apt-get install -y etcd-server etcd-client`), or from `$ETCD_BIN`. If it is missing,
 * `startEtcdCluster` throws: tests that need etcd fail, they are not skipped.
 *
 * The members run with `--max-txn-ops` and `--max-request-bytes` raised (see
 * src/store/etcd.ts: a restore or root-key rotation is one large transaction).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';

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
   * Waits until member `i` (default: every running member) reports healthy, i.e. sees a
   * leader (with TLS: only until it accepts connections; check with a client).
   */
  waitHealthy(i?: number, timeoutMs?: number): Promise<void>;
  /** Kills every member and removes the temporary directory. Never throws; may be called twice. */
  close(): Promise<void>;
}

type Resolved = Required<Omit<EtcdClusterOptions, 'tls'>> & Pick<EtcdClusterOptions, 'tls'>;

export const DEFAULT_MAX_TXN_OPS = 10_000;
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** Path of the etcd binary, or a thrown error that says how to install it. */
export function etcdBinary(): string {
  const bin = process.env['ETCD_BIN'] || 'etcd';
  const probe = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `etcd binary not found or not runnable (${bin}: ${probe.error?.message ?? `exit ${probe.status}: ${probe.stderr}`}). ` +
        'The etcd tests need a real etcd: install it with `apt-get install -y etcd-server etcd-client` (Debian, etcd 3.4) ' +
        'or point $ETCD_BIN at an etcd 3.4+ binary.',
    );
  }
  return bin;
}

/** `count` distinct free TCP ports on 127.0.0.1 (bound together, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
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
      const deadline = Date.now() + 10_000;
      while ((await cluster.leader().catch(() => -1)) !== target) {
        if (Date.now() > deadline) throw new Error(`etcd member ${target} did not become the leader`);
        await sleep(50);
      }
    },
    waitHealthy: async (i, timeoutMs = opts.timeoutMs) => {
      const targets = i === undefined ? members.filter((m) => m.running && !m.paused) : [member(i)];
      const deadline = Date.now() + timeoutMs;
      for (const m of targets) {
        for (;;) {
          if (!m.running) throw new Error(`etcd member ${m.name} is not running; the end of its output:\n${m.tail()}`);
          if (await m.healthy()) break;
          if (Date.now() > deadline)
            throw new Error(`etcd member ${m.name} not healthy within ${timeoutMs} ms; the end of its output:\n${m.tail()}`);
          await sleep(50);
        }
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
  const bin = etcdBinary();
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
