/**
 * The processes of the benchmark and how they are measured, shared by `npm run bench`
 * (bench/run.ts) and bench/server-cost.ts: a minkms server set up like a MinIO deployment, the
 * Node ceiling, the Go reference server, the Go load generator, and CPU/memory sampling from
 * /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { KmsClient } from '../src/client/client.js';
import { generateApiKey } from '../src/identity/api-key.js';
import { certificateForApiKey } from '../src/identity/client-cert.js';
import type { GoTools } from './go-tools.js';
import { minioContext } from './workload.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const DEFAULT_MINKMS = join(resolve(HERE, '..', '..'), 'dist/src/cli/main.js');
const CEILING = join(HERE, 'ceiling.js');
export const ENCLAVE = 'bench';
export const KEY = 'minio-default-key';

export interface Server {
  proc: ChildProcess;
  port: number;
  apiKey: string;
  dir: string;
  caPem: string;
  certFile: string;
  keyFile: string;
}

export async function waitFor(proc: ChildProcess, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<string> {
  let out = '';
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString('utf8');
      if (pattern.test(out)) {
        clearTimeout(timer);
        resolvePromise(out);
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${what}: ${err.message}`));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}):\n${out}`));
    });
  });
}

export interface StartOptions {
  /** The server's entry point (default: this build's dist/src/cli/main.js). */
  minkms?: string;
  serverArgs?: string[];
  /** A command the node process runs under, e.g. `['valgrind', '--tool=callgrind', …]`. */
  wrapper?: string[];
  timeoutMs?: number;
}

/** Node flags from an environment variable (BENCH_SERVER_NODE_ARGS, BENCH_CEILING_NODE_ARGS). */
function nodeArgsOf(name: string): string[] {
  return (process.env[name] ?? '').split(/\s+/).filter((a) => a !== '');
}

function spawnNode(wrapper: string[] | undefined, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const argv = [...(wrapper ?? []), process.execPath, ...args];
  return spawn(argv[0]!, argv.slice(1), { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A fresh `minkms server` on 127.0.0.1 with a new data directory and a random soft HSM key. */
export async function startServer(opts: StartOptions = {}): Promise<Server> {
  const minkms = opts.minkms ?? DEFAULT_MINKMS;
  if (!existsSync(minkms)) throw new Error(`${minkms} is missing: run 'npm run build' first`);
  const dir = join(mkdtempSync(join(os.tmpdir(), 'minkms-bench-')), 'data');
  const env = { ...process.env, MINIO_KMS_HSM_KEY: 'hsm:aes256:' + randomBytes(32).toString('base64') };
  const proc = spawnNode(
    opts.wrapper,
    [...nodeArgsOf('BENCH_SERVER_NODE_ARGS'), minkms, 'server', dir, '--address', '127.0.0.1:0', ...(opts.serverArgs ?? [])],
    env,
  );
  const out = await waitFor(proc, /Server is up and running/, 'minkms server', opts.timeoutMs);
  // Keep draining the server's log (INFO lines for KEY:CREATE) so that it never blocks.
  proc.stdout!.resume();
  proc.stderr!.resume();
  const url = /Endpoint\s+(https:\/\/\S+)/.exec(out)![1]!;
  const apiKey = /API Key\s+(k[12]:\S+)/.exec(out)![1]!;
  const certFile = join(dir, 'certs', 'public.crt');
  return {
    proc,
    port: Number(new URL(url).port),
    apiKey,
    dir,
    caPem: readFileSync(certFile, 'utf8'),
    certFile,
    keyFile: join(dir, 'certs', 'private.key'),
  };
}

export interface Peer {
  proc: ChildProcess;
  port: number;
}

/** The do-nothing Node server (bench/ceiling.ts) with the certificate of `server`. */
export async function startCeiling(server: Pick<Server, 'certFile' | 'keyFile'>, opts: StartOptions = {}): Promise<Peer> {
  const proc = spawnNode(opts.wrapper, [...nodeArgsOf('BENCH_CEILING_NODE_ARGS'), CEILING, server.certFile, server.keyFile]);
  const out = await waitFor(proc, /PORT \d+/, 'ceiling server', opts.timeoutMs);
  proc.stdout!.resume();
  proc.stderr!.resume();
  return { proc, port: Number(/PORT (\d+)/.exec(out)![1]) };
}

/** The Go reference server (bench/go/cmd/refserver), allowing `identity` the data-key commands. */
export async function startGoReference(tools: GoTools, server: Server, identity: string, procs: number): Promise<Peer> {
  const proc = spawn(
    tools.refserver,
    ['-cert', server.certFile, '-key', server.keyFile, '-identity', identity, '-enclave', ENCLAVE, '-keyname', KEY],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GOMAXPROCS: String(procs) } },
  );
  const out = await waitFor(proc, /PORT \d+/, 'Go reference server');
  proc.stdout!.resume();
  proc.stderr!.resume();
  return { proc, port: Number(/PORT (\d+)/.exec(out)![1]) };
}

/** SIGTERM, then SIGKILL after `graceMs`. */
export async function stop(proc: ChildProcess, graceMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

// ------------------------------------------------------------------------------- /proc sampling

const USER_HZ = 100; // the unit of /proc/<pid>/stat and /proc/stat times on Linux

/** The process and its descendants (cluster workers). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${out[i]}/task`)) {
        const children = readFileSync(`/proc/${out[i]}/task/${task}/children`, 'utf8').trim();
        if (children) for (const c of children.split(/\s+/)) out.push(Number(c));
      }
    } catch {
      // gone
    }
  }
  return out;
}

export function rssBytes(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) sum += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return sum;
}

/** CPU time (ms) used so far by the processes: utime + stime of /proc/<pid>/stat (all threads). */
export function cpuMs(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
    } catch {
      // gone
    }
  }
  return sum;
}

/** CPU time (ms) the whole machine has been busy (all cores, /proc/stat). */
export function systemBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return ((f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) * 1000) / USER_HZ;
}

// ------------------------------------------------------------------------------- one measurement

/** What bench/go/cmd/loadgen prints at the end (see its main.go). */
export interface GenResult {
  type: 'result';
  protoMajor: number;
  dials: number;
  gomaxprocs: number;
  elapsedS: number;
  requests: number;
  ops: number;
  errors: number;
  errorSamples: string[] | null;
  reqPerS: number;
  opsPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  cpuS: number;
  cpuCores: number;
  cpuUsPerReq: number;
  requestBytes: number;
  responseBytes: number;
}

export interface GenInterval {
  type: 'interval';
  atS: number;
  spanS: number;
  requests: number;
  ops: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface Measured {
  gen: GenResult;
  /** Cores the server used over the window. */
  serverCores: number;
  /** Cores the whole machine used over the window. */
  systemCores: number;
  peakRss: number;
}

/**
 * Runs the load generator once against the server `pid` listens as, and samples the server's
 * CPU when the generator says its window starts and ends.
 */
export async function runLoadgen(
  tools: GoTools,
  args: string[],
  o: { genProcs: number; genCpus?: string | undefined },
  pid: number,
  onInterval?: (r: GenInterval, rss: number) => void,
): Promise<Measured> {
  // taskset execs the generator in place: same process, so its getrusage is the generator's.
  const [cmd, argv] = o.genCpus === undefined ? [tools.loadgen, args] : ['taskset', ['-c', o.genCpus, tools.loadgen, ...args]];
  const child = spawn(cmd, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, GOMAXPROCS: String(o.genProcs) },
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  let peakRss = 0;
  const sample = () => {
    const rss = rssBytes(processTree(pid));
    if (rss > peakRss) peakRss = rss;
    return rss;
  };
  const sampler = setInterval(sample, 100);
  let cpu0 = 0;
  let sys0 = 0;
  let t0 = 0;
  let cpu1 = 0;
  let sys1 = 0;
  let t1 = 0;
  let gen: GenResult | undefined;
  const exited = new Promise<number | null>((r, reject) => {
    child.once('error', (err) => reject(new Error(`load generator: ${err.message}`)));
    child.once('exit', (code) => r(code));
  });
  try {
    for await (const line of createInterface({ input: child.stdout! })) {
      let msg: { type: string };
      try {
        msg = JSON.parse(line) as { type: string };
      } catch {
        continue;
      }
      if (msg.type === 'start') {
        cpu0 = cpuMs(processTree(pid));
        sys0 = systemBusyMs();
        t0 = performance.now();
      } else if (msg.type === 'end') {
        cpu1 = cpuMs(processTree(pid));
        sys1 = systemBusyMs();
        t1 = performance.now();
      } else if (msg.type === 'interval') {
        onInterval?.(msg as GenInterval, sample());
      } else if (msg.type === 'result') {
        gen = msg as GenResult;
      }
    }
    const code = await exited;
    if (code !== 0 || gen === undefined || t1 <= t0) {
      throw new Error(`load generator failed (exit ${code}) for ${args.join(' ')}:\n${stderr}`);
    }
    sample();
    const wallMs = t1 - t0;
    return { gen, serverCores: (cpu1 - cpu0) / wallMs, systemCores: (sys1 - sys0) / wallMs, peakRss };
  } finally {
    clearInterval(sampler);
    if (child.exitCode === null) child.kill();
  }
}

export interface Context {
  work: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  ciphertextsFile: string;
  identity: string;
}

/**
 * A MinIO-like deployment on minkms: an enclave, one master key, and a User whose policy allows
 * the data-key commands (authorization is part of the measured path). Writes the User's client
 * certificate and key, and ciphertexts of data keys (for the ceiling's KEY:DECRYPT requests,
 * which it never opens), as files for the Go tools.
 */
export async function setup(server: Server, timeoutMs?: number): Promise<Context> {
  const root = new KmsClient({ endpoints: [`127.0.0.1:${server.port}`], apiKey: server.apiKey, ca: server.caPem, timeoutMs });
  const user = generateApiKey();
  try {
    await root.createEnclave(ENCLAVE);
    await root.createKey(ENCLAVE, { name: KEY });
    const any = { rules: { '*': {} } };
    await root.createPolicy(ENCLAVE, {
      name: 'minio',
      allow: { 'KEY:GENERATE': any, 'KEY:DECRYPT': any, 'KEY:CREATE': any, 'KEY:DELETE': any, 'KEY:STATUS': any },
    });
    await root.createIdentity(ENCLAVE, { identity: user.identity, privilege: 'User' });
    await root.assignPolicy(ENCLAVE, user.identity, 'minio');
  } finally {
    root.close();
  }
  const client = new KmsClient({ endpoints: [`127.0.0.1:${server.port}`], apiKey: user, ca: server.caPem, timeoutMs });
  const ciphertexts: string[] = [];
  try {
    // Batches of 4: below the size that starts the server's crypto threads, which are no part
    // of a single-op row (and start slowly under valgrind, see server-cost.ts).
    for (let i = 0; i < 16; i++) {
      const deks = await client.generateKey(ENCLAVE, new Array(4).fill({ name: KEY, associatedData: minioContext(0), length: 32 }));
      for (const d of deks) ciphertexts.push(Buffer.from(d.ciphertext).toString('base64'));
    }
  } finally {
    client.close();
  }
  const work = dirname(server.dir);
  const { cert, key } = certificateForApiKey(user);
  const ctx: Context = {
    work,
    caFile: server.certFile,
    certFile: join(work, 'client.crt'),
    keyFile: join(work, 'client.key'),
    ciphertextsFile: join(work, 'ciphertexts.txt'),
    identity: user.identity,
  };
  writeFileSync(ctx.certFile, cert);
  writeFileSync(ctx.keyFile, key, { mode: 0o600 });
  writeFileSync(ctx.ciphertextsFile, ciphertexts.join('\n') + '\n');
  return ctx;
}
