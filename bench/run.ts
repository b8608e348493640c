/**
 * `npm run bench [-- options]`: load tests of a real `minkms server` process over mutual TLS
 * with keep-alive, next to the ceiling of this machine (bench/ceiling.ts: the same TLS server
 * answering with a body of the same size and doing nothing else), measured in the same run.
 *
 * Every measurement forks a fresh load generator process (bench/loadgen.ts), so that client
 * and server never share an event loop. Reported per row: requests/s, operations/s (command
 * frames: a batch of 100 is 100 operations), p50/p99/max latency, errors, peak server RSS
 * (the server process and its workers), CPU used by server and load generator, and the ratio
 * of requests/s to the ceiling's requests/s for the same protocol, connections and sizes.
 *
 * Options:
 *   --duration S      seconds measured per row (default 5)
 *   --warmup S        seconds of load before measuring (default 1.5)
 *   --quick           a small matrix (one row per kind of load)
 *   --only REGEX      only rows whose name matches
 *   --repeat N        measure every row N times (server and ceiling in pairs) and report medians;
 *                     use it on a shared or noisy machine (the `other` column shows what else ran)
 *   --json            print JSON on stdout (the table goes to stderr)
 *   --out FILE        also write the JSON to FILE
 *   --no-ceiling      skip the ceiling rows
 *   --ceiling-only    only the ceiling rows (the sizes come from one short request to the server)
 *   --server-arg ARG  extra argument for `minkms server` (repeatable), e.g. `--server-arg=--crypto-threads=0`
 *   --minkms FILE     the server to measure (default: this build's dist/src/cli/main.js), e.g. an
 *                     older build for a before/after comparison
 *   --soak S          instead of the matrix: fixed load for S seconds, memory and errors every 10 s
 *   --rate N          soak: total requests/s (default 3000)
 *   --proto h1|h2     soak: protocol (default h2)
 *   --conns N         soak: connections (default 16)
 *
 * Environment: BENCH_SERVER_NODE_ARGS holds extra node flags for the server process only
 * (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile it under load); BENCH_CEILING_NODE_ARGS
 * the same for the ceiling server.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { KmsClient } from '../src/client/client.js';
import { generateApiKey } from '../src/identity/api-key.js';
import { certificateForApiKey } from '../src/identity/client-cert.js';
import { Histogram } from './hist.js';
import type { IntervalReport, LoadResult, LoadSpec, Target } from './loadgen.js';
import { minioContext, type Workload, type WorkloadKind } from './workload.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
let MINKMS = join(ROOT, 'dist/src/cli/main.js');
const LOADGEN = join(HERE, 'loadgen.js');
const CEILING = join(HERE, 'ceiling.js');
const ENCLAVE = 'bench';
const KEY = 'minio-default-key';

// ------------------------------------------------------------------------------- options

interface Options {
  duration: number;
  warmup: number;
  quick: boolean;
  only: RegExp | undefined;
  json: boolean;
  out: string | undefined;
  ceiling: boolean;
  /** Measure the server (false: the ceiling rows only, to study the ceiling itself). */
  server: boolean;
  serverArgs: string[];
  /** Runs per row (medians reported). */
  repeat: number;
  soak: number;
  rate: number;
  proto: 'h1' | 'h2';
  conns: number;
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    duration: 5,
    warmup: 1.5,
    quick: false,
    only: undefined,
    json: false,
    out: undefined,
    ceiling: true,
    server: true,
    serverArgs: [],
    repeat: 1,
    soak: 0,
    rate: 3000,
    proto: 'h2',
    conns: 16,
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    let v: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const value = () => {
      if (v !== undefined) return v;
      const next = argv[++i];
      if (next === undefined) throw new Error(`${a} needs a value`);
      return next;
    };
    const num = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a} needs a non-negative number`);
      return n;
    };
    switch (a) {
      case '--duration':
        o.duration = num();
        break;
      case '--warmup':
        o.warmup = num();
        break;
      case '--quick':
        o.quick = true;
        break;
      case '--only':
        o.only = new RegExp(value());
        break;
      case '--json':
        o.json = true;
        break;
      case '--out':
        o.out = value();
        break;
      case '--no-ceiling':
        o.ceiling = false;
        break;
      case '--ceiling-only':
        o.server = false;
        break;
      case '--server-arg':
        o.serverArgs.push(value());
        break;
      case '--minkms':
        MINKMS = resolve(value());
        break;
      case '--soak':
        o.soak = num();
        break;
      case '--repeat':
        o.repeat = Math.max(1, Math.floor(num()));
        break;
      case '--rate':
        o.rate = num();
        break;
      case '--conns':
        o.conns = Math.max(1, Math.floor(num()));
        break;
      case '--proto': {
        const p = value();
        if (p !== 'h1' && p !== 'h2') throw new Error('--proto is h1 or h2');
        o.proto = p;
        break;
      }
      case '--help':
      case '-h':
        process.stdout.write(
          readFileSync(fileURLToPath(import.meta.url), 'utf8')
            .split('*/')[0]!
            .replace(/^\/\*\*?|^ \* ?/gm, '') + '\n',
        );
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

// ------------------------------------------------------------------------------- scenarios

interface Scenario {
  name: string;
  kind: WorkloadKind;
  proto: 'h1' | 'h2';
  conns: number;
  streams: number;
  batch: number;
}

function scenario(kind: WorkloadKind, proto: 'h1' | 'h2', conns: number, batch = 1, streams = 1): Scenario {
  const shape = proto === 'h2' && streams > 1 ? `${conns}x${streams}` : `${conns}`;
  return { name: `${kind}/b${batch}/${proto}/c${shape}`, kind, proto, conns, streams, batch };
}

function matrix(quick: boolean): Scenario[] {
  if (quick) {
    return [
      scenario('generate', 'h1', 32),
      scenario('generate', 'h2', 32),
      scenario('decrypt', 'h2', 32),
      scenario('mix', 'h2', 32),
      scenario('generate', 'h2', 8, 100),
      scenario('handshake', 'h1', 8),
    ];
  }
  const out: Scenario[] = [];
  for (const proto of ['h1', 'h2'] as const) for (const c of [1, 8, 32, 64]) out.push(scenario('generate', proto, c));
  for (const proto of ['h1', 'h2'] as const) for (const c of [1, 32]) out.push(scenario('decrypt', proto, c));
  out.push(scenario('generate', 'h2', 4, 1, 16));
  for (const proto of ['h1', 'h2'] as const) out.push(scenario('mix', proto, 32));
  for (const proto of ['h1', 'h2'] as const) for (const b of [10, 100, 1000]) out.push(scenario('generate', proto, 8, b));
  out.push(scenario('decrypt', 'h2', 8, 100));
  out.push(scenario('handshake', 'h1', 8));
  return out;
}

// ------------------------------------------------------------------------------- processes

interface Server {
  proc: ChildProcess;
  port: number;
  apiKey: string;
  dir: string;
  caPem: string;
  certFile: string;
  keyFile: string;
}

async function waitFor(proc: ChildProcess, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<string> {
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
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}):\n${out}`));
    });
  });
}

async function startServer(serverArgs: string[]): Promise<Server> {
  if (!existsSync(MINKMS)) throw new Error(`${MINKMS} is missing: run 'npm run build' first`);
  const dir = join(mkdtempSync(join(os.tmpdir(), 'minkms-bench-')), 'data');
  const env = { ...process.env, MINIO_KMS_HSM_KEY: 'hsm:aes256:' + randomBytes(32).toString('base64') };
  // Node flags for the server only, e.g. BENCH_SERVER_NODE_ARGS=--cpu-prof to profile it.
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
  const proc = spawn(process.execPath, [...nodeArgs, MINKMS, 'server', dir, '--address', '127.0.0.1:0', ...serverArgs], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = await waitFor(proc, /Server is up and running/, 'minkms server');
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

async function startCeiling(server: Server): Promise<{ proc: ChildProcess; port: number }> {
  const nodeArgs = (process.env.BENCH_CEILING_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
  const proc = spawn(process.execPath, [...nodeArgs, CEILING, server.certFile, server.keyFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = await waitFor(proc, /PORT \d+/, 'ceiling server');
  return { proc, port: Number(/PORT (\d+)/.exec(out)![1]) };
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

// ------------------------------------------------------------------------------- /proc sampling

const PAGE_TICKS = 100; // USER_HZ

/** The process and its descendants (cluster workers). */
function processTree(pid: number): number[] {
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

function rssBytes(pids: number[]): number {
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

/** CPU time (ms) used so far by the processes. */
function cpuMs(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += ((Number(fields[11]) + Number(fields[12])) * 1000) / PAGE_TICKS;
    } catch {
      // gone
    }
  }
  return sum;
}

/** CPU time (ms) the whole machine has been busy (all cores, /proc/stat). */
function systemBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return ((f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) * 1000) / PAGE_TICKS;
}

// ------------------------------------------------------------------------------- one measurement

export interface Row {
  name: string;
  target: 'minkms' | 'ceiling';
  kind: WorkloadKind;
  proto: 'h1' | 'h2';
  conns: number;
  streams: number;
  batch: number;
  durationS: number;
  requests: number;
  reqPerS: number;
  opsPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  errorSamples: string[];
  /** Peak RSS of the server (all its processes) during the row, MiB. */
  peakRssMiB: number;
  /** CPU of the server while measuring, in cores (1.0 = one core busy). */
  serverCpu: number;
  loadgenCpu: number;
  /** Server CPU time per request, µs (less sensitive to a busy machine than throughput). */
  serverUsPerReq: number;
  /** Cores used by everything else on the machine while measuring (other tenants, the kernel). */
  otherCpu: number;
  requestBytes: number;
  responseBytes: number;
  /** requests/s ÷ ceiling requests/s (same protocol, connections and sizes). */
  ratio?: number;
  ceilingReqPerS?: number;
  /** Every run of the row (with --repeat). */
  runs?: Array<{ reqPerS: number; p99Ms: number; otherCpu: number }>;
}

interface Measure {
  spec: LoadSpec;
  serverPid: number;
  onInterval?: (r: IntervalReport, rss: number) => void;
}

async function measure(m: Measure): Promise<{ result: LoadResult; peakRss: number; serverCpu: number; systemCpu: number }> {
  const child = fork(LOADGEN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let peakRss = 0;
  let cpuStart = 0;
  let cpuStartAt = 0;
  let cpuEnd = 0;
  let cpuEndAt = 0;
  let sysStart = 0;
  let sysEnd = 0;
  const sample = () => {
    const rss = rssBytes(processTree(m.serverPid));
    if (rss > peakRss) peakRss = rss;
    return rss;
  };
  const sampler = setInterval(sample, 100);
  const warm = setTimeout(() => {
    cpuStart = cpuMs(processTree(m.serverPid));
    sysStart = systemBusyMs();
    cpuStartAt = performance.now();
  }, m.spec.warmupMs + 150); // the child needs ~150 ms to load before its clock starts
  try {
    const result = await new Promise<LoadResult>((resolvePromise, reject) => {
      child.on('message', (msg: LoadResult | IntervalReport | { type: 'error'; message: string }) => {
        if (msg.type === 'interval') {
          m.onInterval?.(msg, sample());
        } else if (msg.type === 'result') {
          cpuEnd = cpuMs(processTree(m.serverPid));
          sysEnd = systemBusyMs();
          cpuEndAt = performance.now();
          resolvePromise(msg);
        } else reject(new Error(`load generator failed: ${msg.message}`));
      });
      child.once('exit', (code) => reject(new Error(`load generator exited (${code})`)));
      child.send(m.spec);
    });
    sample();
    const serverCpu = cpuStartAt > 0 ? (cpuEnd - cpuStart) / (cpuEndAt - cpuStartAt) : 0;
    const systemCpu = cpuStartAt > 0 ? (sysEnd - sysStart) / (cpuEndAt - cpuStartAt) : 0;
    return { result, peakRss, serverCpu, systemCpu };
  } finally {
    clearInterval(sampler);
    clearTimeout(warm);
    if (child.exitCode === null) child.kill();
  }
}

function toRow(s: Scenario, target: Row['target'], r: LoadResult, m: { peakRss: number; serverCpu: number; systemCpu: number }): Row {
  const { peakRss, serverCpu } = m;
  const h = Histogram.from(r.hist);
  const secs = r.elapsedMs / 1000;
  const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
  const loadgenCpu = r.cpuMs / r.elapsedMs;
  return {
    name: s.name,
    target,
    kind: s.kind,
    proto: s.proto,
    conns: s.conns,
    streams: s.streams,
    batch: s.batch,
    durationS: secs,
    requests: r.requests,
    reqPerS: Math.round(r.requests / secs),
    opsPerS: Math.round(r.ops / secs),
    p50Ms: round(h.quantile(0.5), 3),
    p99Ms: round(h.quantile(0.99), 3),
    maxMs: round(h.max, 3),
    errors: r.errors,
    errorSamples: r.errorSamples,
    peakRssMiB: round(peakRss / 1048576, 1),
    serverCpu: round(serverCpu),
    loadgenCpu: round(loadgenCpu),
    serverUsPerReq: r.requests > 0 ? Math.round((serverCpu * 1e6 * secs) / r.requests) : 0,
    otherCpu: round(Math.max(0, m.systemCpu - serverCpu - loadgenCpu)),
    requestBytes: r.requestBytes,
    responseBytes: r.responseBytes,
  };
}

// ------------------------------------------------------------------------------- output

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    openssl: process.versions.openssl,
    kernel: `${os.type()} ${os.release()}`,
  };
}

function table(rows: Row[]): string {
  const head = [
    'scenario',
    'target',
    'req/s',
    'ops/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'err',
    'RSS MiB',
    'srv cpu',
    'µs/req',
    'gen cpu',
    'other',
    'ratio',
  ];
  const lines = rows.map((r) => [
    r.name,
    r.target,
    String(r.reqPerS),
    String(r.opsPerS),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    r.maxMs.toFixed(1),
    String(r.errors),
    r.peakRssMiB.toFixed(0),
    r.serverCpu.toFixed(2),
    String(r.serverUsPerReq),
    r.loadgenCpu.toFixed(2),
    r.otherCpu.toFixed(2),
    r.ratio === undefined ? '-' : r.ratio.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => '| ' + cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  return [
    fmt(head),
    '|' + widths.map((w, i) => (i < 2 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|',
    ...lines.map(fmt),
  ].join('\n');
}

// ------------------------------------------------------------------------------- main

async function setup(server: Server): Promise<{ target: Target; workload: Omit<Workload, 'kind' | 'batch'> }> {
  const root = new KmsClient({ endpoints: [`127.0.0.1:${server.port}`], apiKey: server.apiKey, ca: server.caPem });
  const user = generateApiKey();
  try {
    // A MinIO-like deployment: an enclave, one master key, and a User whose policy allows the
    // data-key commands (authorization is part of the measured path).
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
  const client = new KmsClient({ endpoints: [`127.0.0.1:${server.port}`], apiKey: user, ca: server.caPem });
  const ad = minioContext(0);
  const ciphertexts: string[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const deks = await client.generateKey(ENCLAVE, new Array(64).fill({ name: KEY, associatedData: ad, length: 32 }));
      for (const d of deks) ciphertexts.push(Buffer.from(d.ciphertext).toString('base64'));
    }
  } finally {
    client.close();
  }
  const { cert, key } = certificateForApiKey(user);
  return {
    target: { host: '127.0.0.1', port: server.port, ca: server.caPem, cert, key },
    workload: { key: KEY, ad: ad.toString('base64'), ciphertexts },
  };
}

/** The element of median value of `key` (the lower one of an even count). */
function median<T>(items: T[], key: (t: T) => number): T {
  return [...items].sort((a, b) => key(a) - key(b))[Math.floor((items.length - 1) / 2)]!;
}

async function runMatrix(
  o: Options,
  server: Server,
  ceilingProc: { proc: ChildProcess; port: number } | undefined,
  ctx: Awaited<ReturnType<typeof setup>>,
  log: (s: string) => void,
): Promise<Row[]> {
  const rows: Row[] = [];
  const scenarios = matrix(o.quick).filter((s) => !o.only || o.only.test(s.name));
  for (const s of scenarios) {
    const workload: Workload = { ...ctx.workload, kind: s.kind, batch: s.batch };
    const spec: LoadSpec = {
      target: ctx.target,
      path: `/v1/kms/${ENCLAVE}`,
      proto: s.proto,
      conns: s.conns,
      streams: s.streams,
      workload,
      warmupMs: o.warmup * 1000,
      durationMs: o.duration * 1000,
      rate: 0,
      reportEveryMs: 0,
    };
    // Server and ceiling are measured in pairs, one right after the other, so that a ratio
    // compares two runs under the same conditions; with --repeat, the medians are reported.
    const mine: Row[] = [];
    const theirs: Row[] = [];
    const ratios: number[] = [];
    for (let r = 0; r < o.repeat; r++) {
      const m = await measure({ spec: o.server ? spec : { ...spec, warmupMs: 300, durationMs: 200 }, serverPid: server.proc.pid! });
      const row = toRow(s, 'minkms', m.result, m);
      if (o.server) {
        mine.push(row);
        log(
          `${row.name.padEnd(28)} minkms   ${String(row.reqPerS).padStart(7)} req/s ${String(row.opsPerS).padStart(8)} ops/s  p99 ${row.p99Ms.toFixed(2)} ms  err ${row.errors}${row.errors ? ' ' + row.errorSamples[0] : ''}  other cpu ${row.otherCpu}`,
        );
      }
      if (ceilingProc === undefined) continue;
      // The ceiling answers with as many bytes as the server did; same requests, same shape
      // (the mix is compared with the ceiling of its KEY:GENERATE requests).
      const cSpec: LoadSpec = {
        ...spec,
        target: { ...ctx.target, port: ceilingProc.port },
        path: `/v1/kms/${ENCLAVE}?n=${row.responseBytes}`,
        workload: s.kind === 'mix' ? { ...workload, kind: 'generate' } : workload,
      };
      const c = await measure({ spec: cSpec, serverPid: ceilingProc.proc.pid! });
      const ceiling = toRow(s, 'ceiling', c.result, c);
      theirs.push(ceiling);
      log(
        `${ceiling.name.padEnd(28)} ceiling  ${String(ceiling.reqPerS).padStart(7)} req/s ${String(ceiling.opsPerS).padStart(8)} ops/s  p99 ${ceiling.p99Ms.toFixed(2)} ms  other cpu ${ceiling.otherCpu}`,
      );
      if (o.server && ceiling.reqPerS > 0) ratios.push(row.reqPerS / ceiling.reqPerS);
    }
    const ceiling = theirs.length > 0 ? median(theirs, (r) => r.reqPerS) : undefined;
    if (mine.length > 0) {
      const row = median(mine, (r) => r.reqPerS);
      if (ceiling) {
        row.ceilingReqPerS = ceiling.reqPerS;
        row.ratio = ratios.length > 0 ? Math.round(median(ratios, (x) => x) * 100) / 100 : undefined;
      }
      if (mine.length > 1) row.runs = mine.map((r) => ({ reqPerS: r.reqPerS, p99Ms: r.p99Ms, otherCpu: r.otherCpu }));
      rows.push(row);
    }
    if (ceiling) {
      if (theirs.length > 1) ceiling.runs = theirs.map((r) => ({ reqPerS: r.reqPerS, p99Ms: r.p99Ms, otherCpu: r.otherCpu }));
      rows.push(ceiling);
    }
  }
  return rows;
}

interface SoakReport {
  seconds: number;
  rate: number;
  proto: string;
  conns: number;
  intervals: Array<IntervalReport & { rssMiB: number }>;
  totalRequests: number;
  errors: number;
  errorSamples: string[];
  p99Ms: number;
  maxMs: number;
  rssStartMiB: number;
  rssEndMiB: number;
  rssPeakMiB: number;
}

async function runSoak(o: Options, server: Server, ctx: Awaited<ReturnType<typeof setup>>, log: (s: string) => void): Promise<SoakReport> {
  const intervals: SoakReport['intervals'] = [];
  const spec: LoadSpec = {
    target: ctx.target,
    path: `/v1/kms/${ENCLAVE}`,
    proto: o.proto,
    conns: o.conns,
    streams: 1,
    workload: { ...ctx.workload, kind: 'soak', batch: 1 },
    warmupMs: o.warmup * 1000,
    durationMs: o.soak * 1000,
    rate: o.rate,
    reportEveryMs: Math.min(10_000, Math.max(250, (o.soak * 1000) / 10)),
  };
  log(
    `soak: ${o.soak} s at ${o.rate} req/s (${o.proto}, ${o.conns} connections): 45 % KEY:GENERATE, 45 % KEY:DECRYPT, 10 % KEY:CREATE/KEY:DELETE`,
  );
  const m = await measure({
    spec,
    serverPid: server.proc.pid!,
    onInterval: (r, rss) => {
      const secs = r.spanMs / 1000;
      intervals.push({ ...r, rssMiB: Math.round((rss / 1048576) * 10) / 10 });
      log(
        `  t=${(r.atMs / 1000).toFixed(0).padStart(4)} s  ${Math.round(r.requests / secs)
          .toString()
          .padStart(
            6,
          )} req/s  p99 ${r.p99.toFixed(2)} ms  max ${r.max.toFixed(1)} ms  errors ${r.errors}  server RSS ${(rss / 1048576).toFixed(1)} MiB`,
      );
    },
  });
  const h = Histogram.from(m.result.hist);
  const rss = intervals.map((i) => i.rssMiB);
  const report: SoakReport = {
    seconds: o.soak,
    rate: o.rate,
    proto: o.proto,
    conns: o.conns,
    intervals,
    totalRequests: m.result.requests,
    errors: m.result.errors,
    errorSamples: m.result.errorSamples,
    p99Ms: Math.round(h.quantile(0.99) * 1000) / 1000,
    maxMs: Math.round(h.max * 1000) / 1000,
    rssStartMiB: rss.length > 0 ? Math.min(...rss.slice(0, Math.max(1, Math.ceil(rss.length / 5)))) : 0,
    rssEndMiB: rss.length > 0 ? rss[rss.length - 1]! : 0,
    rssPeakMiB: Math.round((m.peakRss / 1048576) * 10) / 10,
  };
  log(
    `soak: ${report.totalRequests} requests, ${report.errors} errors, p99 ${report.p99Ms} ms, max ${report.maxMs} ms; server RSS ${report.rssStartMiB} MiB (first fifth, min) → ${report.rssEndMiB} MiB (end), peak ${report.rssPeakMiB} MiB`,
  );
  return report;
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => (o.json ? process.stderr : process.stdout).write(s + '\n');
  const info = machine();
  log(`machine: ${info.cpu}, ${info.cores} cores, node ${info.node}, OpenSSL ${info.openssl}, ${info.kernel}`);
  const server = await startServer(o.serverArgs);
  let ceiling: Awaited<ReturnType<typeof startCeiling>> | undefined;
  try {
    const ctx = await setup(server);
    let result: Record<string, unknown>;
    if (o.soak > 0) {
      const soak = await runSoak(o, server, ctx, log);
      result = { machine: info, serverArgs: o.serverArgs, soak };
    } else {
      ceiling = o.ceiling ? await startCeiling(server) : undefined;
      const rows = await runMatrix(o, server, ceiling, ctx, log);
      log('');
      log(table(rows));
      result = { machine: info, serverArgs: o.serverArgs, durationS: o.duration, warmupS: o.warmup, repeat: o.repeat, rows };
    }
    const json = JSON.stringify(result, null, 2);
    if (o.json) process.stdout.write(json + '\n');
    if (o.out) writeFileSync(o.out, json + '\n');
  } finally {
    if (ceiling) await stop(ceiling.proc);
    await stop(server.proc);
    rmSync(dirname(server.dir), { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
