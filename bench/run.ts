/**
 * `npm run bench [-- options]`: the data path of a real `minkms server` process over mutual
 * TLS, next to two references measured in the same run and with the same load generator:
 *
 * - **ceiling**: bench/ceiling.ts, a do-nothing Node TLS server (same TLS settings, same
 *   certificate) answering with as many bytes as minkms did: what Node can do at all here;
 * - **go**: bench/go/cmd/refserver, the same KEY:GENERATE / KEY:DECRYPT frames with the same
 *   crypto (identity, authorization, HMAC-derived AES-256-GCM) in Go's standard library: what
 *   a Go implementation such as MinIO KMS reaches on this machine.
 *
 * The load comes from bench/go/cmd/loadgen (Go, HTTP/1.1 or HTTP/2, N requests in flight over M
 * connections, bodies encoded up front, a minimal client: one write per request), built into
 * ~/.cache/minkms-bench. For
 * every row the bench samples the server's CPU (utime+stime of /proc/<pid>/stat, the process
 * and its children) at the start and end of the generator's measured window, and the generator
 * reports its own CPU (getrusage) over the same window: **CPU µs per request for both**. A row
 * where the generator used more CPU per request than the server, or saturated the cores it may
 * use, measured the generator and is flagged.
 *
 * Options:
 *   --quick           a small matrix for validation (shorter rows unless --duration/--warmup)
 *   --duration S      seconds measured per row (default 5; quick 2)
 *   --warmup S        seconds of load before measuring (default 1.5; quick 0.5)
 *   --repeat N        measure every row N times, targets interleaved, and report medians
 *   --only REGEX      only rows whose name matches (e.g. 'generate/b1/h2')
 *   --targets LIST    comma-separated subset of minkms,ceiling,go (default all)
 *   --inflight LIST   in-flight counts of the single-op rows (default 1,8,32)
 *   --h2-streams N    HTTP/2 requests in flight per connection (default 8: 32 in flight = 4
 *                     connections; the Go SDK multiplexes a MinIO node's requests on one)
 *   --gen-procs N     GOMAXPROCS of the load generator (default 1: one core at most)
 *   --ref-procs N     GOMAXPROCS of the Go reference server (default 1, like one Node thread)
 *   --gen-cpus LIST   run the generator under `taskset -c LIST` (e.g. keep it off the cores of a
 *                     multi-process server)
 *   --client C        the generator's HTTP client: raw (default: one write per request, about a
 *                     tenth of the CPU of net/http) or nethttp (Go's net/http, as the kms-go SDK)
 *   --json            print JSON on stdout (the table goes to stderr)
 *   --out FILE        also write the JSON to FILE
 *   --server-arg ARG  extra argument for `minkms server` (repeatable), e.g. `--server-arg=--crypto-threads=0`
 *   --minkms FILE     the server to measure (default: this build's dist/src/cli/main.js), e.g. an
 *                     older build for a before/after comparison
 *   --soak S          instead of the matrix: load minkms for S seconds, memory and errors every 10 s
 *   --rate N          soak: total requests/s (default 3000; 0 = as fast as it answers)
 *   --proto h1|h2     soak: protocol (default h2)
 *   --conns N         soak: connections, one request in flight on each (default 16)
 *
 * Environment: BENCH_SERVER_NODE_ARGS holds extra node flags for the server process only
 * (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`), BENCH_CEILING_NODE_ARGS the same for the
 * ceiling; MINKMS_BENCH_GO and MINKMS_BENCH_CACHE: see bench/go-tools.ts.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { goTools, type GoTools } from './go-tools.js';
import {
  DEFAULT_MINKMS,
  ENCLAVE,
  KEY,
  runLoadgen,
  setup,
  startCeiling,
  startGoReference,
  startServer,
  stop,
  type Context,
  type GenInterval,
  type Measured,
  type Peer,
  type Server,
} from './harness.js';

let MINKMS = DEFAULT_MINKMS;

type TargetName = 'minkms' | 'ceiling' | 'go';
const TARGETS: readonly TargetName[] = ['minkms', 'ceiling', 'go'];
type Kind = 'generate' | 'decrypt' | 'mix' | 'handshake';
type Proto = 'h1' | 'h2';

// ------------------------------------------------------------------------------- options

interface Options {
  duration: number;
  warmup: number;
  quick: boolean;
  only: RegExp | undefined;
  targets: Set<TargetName>;
  inflight: number[];
  h2Streams: number;
  genProcs: number;
  refProcs: number;
  /** `taskset -c` CPU list for the generator (e.g. to keep it off the server's cores). */
  genCpus: string | undefined;
  client: 'raw' | 'nethttp';
  json: boolean;
  out: string | undefined;
  serverArgs: string[];
  repeat: number;
  soak: number;
  rate: number;
  proto: Proto;
  conns: number;
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    duration: NaN,
    warmup: NaN,
    quick: false,
    only: undefined,
    targets: new Set(TARGETS),
    inflight: [1, 8, 32],
    h2Streams: 8,
    genProcs: 1,
    refProcs: 1,
    genCpus: undefined,
    client: 'raw',
    json: false,
    out: undefined,
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
    const count = () => Math.max(1, Math.floor(num()));
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
      case '--targets': {
        const list = value().split(',').filter(Boolean);
        for (const t of list) if (!(TARGETS as readonly string[]).includes(t)) throw new Error(`--targets: unknown target ${t}`);
        o.targets = new Set(list as TargetName[]);
        break;
      }
      case '--inflight':
        o.inflight = value()
          .split(',')
          .map((s) => Math.floor(Number(s)))
          .filter((n) => n >= 1);
        if (o.inflight.length === 0) throw new Error('--inflight needs a list such as 1,8,32');
        break;
      case '--h2-streams':
        o.h2Streams = count();
        break;
      case '--gen-procs':
        o.genProcs = count();
        break;
      case '--ref-procs':
        o.refProcs = count();
        break;
      case '--gen-cpus':
        o.genCpus = value();
        if (!/^[0-9][0-9,-]*$/.test(o.genCpus)) throw new Error('--gen-cpus takes a CPU list such as 1 or 2-3');
        break;
      case '--client': {
        const c = value();
        if (c !== 'raw' && c !== 'nethttp') throw new Error('--client is raw or nethttp');
        o.client = c;
        break;
      }
      case '--json':
        o.json = true;
        break;
      case '--out':
        o.out = value();
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
        o.repeat = count();
        break;
      case '--rate':
        o.rate = num();
        break;
      case '--conns':
        o.conns = count();
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
  if (Number.isNaN(o.duration)) o.duration = o.quick ? 2 : 5;
  if (Number.isNaN(o.warmup)) o.warmup = o.quick ? 0.5 : 1.5;
  return o;
}

// ------------------------------------------------------------------------------- scenarios

interface Scenario {
  /** e.g. `generate/b1/h2/n32`: stable, for --only and the JSON. */
  name: string;
  kind: Kind;
  proto: Proto;
  /** Requests in flight in total. */
  inflight: number;
  /** Connections they share (HTTP/1.1: one request per connection). */
  conns: number;
  batch: number;
  targets: TargetName[];
}

function scenario(o: Options, kind: Kind, proto: Proto, inflight: number, batch: number, targets: TargetName[]): Scenario {
  const conns = proto === 'h1' ? inflight : Math.ceil(inflight / o.h2Streams);
  return {
    name: `${kind}/b${batch}/${proto}/n${inflight}`,
    kind,
    proto,
    inflight,
    conns,
    batch,
    targets: targets.filter((t) => o.targets.has(t)),
  };
}

function matrix(o: Options): Scenario[] {
  const all: TargetName[] = ['minkms', 'ceiling', 'go'];
  const out: Scenario[] = [];
  const inflight = o.quick ? [32] : o.inflight;
  for (const kind of ['generate', 'decrypt'] as const)
    for (const proto of ['h1', 'h2'] as const) for (const n of inflight) out.push(scenario(o, kind, proto, n, 1, all));
  // Batches: data keys per second. The ceiling does none of the work, so its ratio means
  // little here; the Go reference does all of it.
  for (const proto of o.quick ? (['h2'] as const) : (['h1', 'h2'] as const)) out.push(scenario(o, 'generate', proto, 8, 100, all));
  // 90 % KEY:GENERATE, 10 % KEY:CREATE (a durable write): minkms only, against the ceiling of
  // its KEY:GENERATE requests. The Go reference stores nothing, so it has no comparable write.
  for (const proto of o.quick ? (['h2'] as const) : (['h1', 'h2'] as const))
    out.push(scenario(o, 'mix', proto, 32, 1, ['minkms', 'ceiling']));
  // A new connection (full mTLS handshake) per request.
  if (!o.quick) out.push(scenario(o, 'handshake', 'h1', 8, 1, all));
  return out.filter((s) => s.targets.length > 0 && (!o.only || o.only.test(s.name)));
}

function label(s: Scenario): string {
  const shape = s.proto === 'h2' ? `n=${s.inflight} c=${s.conns}` : `n=${s.inflight}`;
  return `${s.kind}${s.batch > 1 ? ` ×${s.batch}` : ''} ${s.proto} ${shape}`;
}

export interface Row {
  name: string;
  label: string;
  target: TargetName;
  kind: Kind;
  proto: Proto;
  inflight: number;
  conns: number;
  batch: number;
  durationS: number;
  requests: number;
  reqPerS: number;
  /** Command frames per second (data keys/s for batches). */
  opsPerS: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  errorSamples: string[];
  /** TCP connections the generator opened in the window and before (priming). */
  connections: number;
  peakRssMiB: number;
  /** Cores used by the server over the window (1.0 = one core busy). */
  serverCores: number;
  /** Server CPU time per request, µs: the figure that travels between machines. */
  serverUsPerReq: number;
  genCores: number;
  genUsPerReq: number;
  genProcs: number;
  /** Cores used by everything else (other tenants, the kernel, the idle targets). */
  otherCores: number;
  requestBytes: number;
  responseBytes: number;
  /** Why the row may not measure the server (see FLAGS). */
  flags: string[];
  /** minkms rows: requests/s ÷ the ceiling's, ÷ the Go reference's (same scenario, medians of per-round ratios). */
  ratioCeiling?: number;
  ratioGo?: number;
  /** minkms rows: server µs/request ÷ the ceiling's, p99 ÷ the ceiling's. */
  cpuRatioCeiling?: number;
  p99RatioCeiling?: number;
  /** Every round of the row (with --repeat); the row itself is the median round by req/s. */
  runs?: Array<{ reqPerS: number; p99Ms: number; serverUsPerReq: number; otherCores: number }>;
}

const FLAGS: Record<string, string> = {
  'gen>srv': 'the load generator used more CPU per request than the server: the row measures the generator',
  'gen-sat': 'the load generator used >= 90 % of the cores it may use (--gen-procs): the row measures the generator',
  busy: 'other processes used >= 0.25 cores during the row: throughput and latency are disturbed (CPU µs/request much less)',
  errors: 'some requests failed',
};

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

function toRow(s: Scenario, target: TargetName, m: Measured, genProcs: number): Row {
  const g = m.gen;
  const serverUsPerReq = g.requests > 0 ? (m.serverCores * g.elapsedS * 1e6) / g.requests : 0;
  const flags: string[] = [];
  if (g.cpuUsPerReq > serverUsPerReq) flags.push('gen>srv');
  if (g.cpuCores >= 0.9 * genProcs) flags.push('gen-sat');
  const otherCores = Math.max(0, m.systemCores - m.serverCores - g.cpuCores);
  if (otherCores >= 0.25) flags.push('busy');
  if (g.errors > 0) flags.push('errors');
  return {
    name: s.name,
    label: label(s),
    target,
    kind: s.kind,
    proto: s.proto,
    inflight: s.inflight,
    conns: s.conns,
    batch: s.batch,
    durationS: round(g.elapsedS, 3),
    requests: g.requests,
    reqPerS: Math.round(g.reqPerS),
    opsPerS: Math.round(g.opsPerS),
    p50Ms: round(g.p50Ms, 3),
    p99Ms: round(g.p99Ms, 3),
    maxMs: round(g.maxMs, 3),
    errors: g.errors,
    errorSamples: g.errorSamples ?? [],
    connections: g.dials,
    peakRssMiB: round(m.peakRss / 1048576, 1),
    serverCores: round(m.serverCores),
    serverUsPerReq: Math.round(serverUsPerReq),
    genCores: round(g.cpuCores),
    genUsPerReq: Math.round(g.cpuUsPerReq),
    genProcs,
    otherCores: round(otherCores),
    requestBytes: g.requestBytes,
    responseBytes: g.responseBytes,
    flags,
  };
}

// ------------------------------------------------------------------------------- output

function machine(goVersion: string, o: Options): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    openssl: process.versions.openssl,
    go: goVersion,
    kernel: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg().map((x) => round(x)),
    genProcs: o.genProcs,
    refProcs: o.refProcs,
    genCpus: o.genCpus ?? null,
    client: o.client,
  };
}

function formatTable(head: string[], lines: string[][], leftCols: number): string {
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) =>
    '| ' + cells.map((c, i) => (i < leftCols || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  return [
    fmt(head),
    '|' + widths.map((w, i) => (i < leftCols || i === widths.length - 1 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|',
    ...lines.map(fmt),
  ].join('\n');
}

function table(rows: Row[]): string {
  const head = [
    'workload',
    'target',
    'req/s',
    'ops/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'err',
    'srv µs/req',
    'gen µs/req',
    'srv cores',
    'gen cores',
    'other',
    'RSS MiB',
    '÷ceiling',
    '÷go',
    'cpu÷ceil',
    'flags',
  ];
  const opt = (x: number | undefined) => (x === undefined ? '' : x.toFixed(2));
  const lines = rows.map((r) => [
    r.label,
    r.target,
    String(r.reqPerS),
    String(r.opsPerS),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    r.maxMs.toFixed(1),
    String(r.errors),
    String(r.serverUsPerReq),
    String(r.genUsPerReq),
    r.serverCores.toFixed(2),
    r.genCores.toFixed(2),
    r.otherCores.toFixed(2),
    r.peakRssMiB.toFixed(0),
    opt(r.ratioCeiling),
    opt(r.ratioGo),
    opt(r.cpuRatioCeiling),
    r.flags.join(' '),
  ]);
  return formatTable(head, lines, 2);
}

interface Goal {
  goal: string;
  /** true / false; undefined when no row could decide (missing rows, or only flagged ones). */
  met: boolean | undefined;
  measured: string;
  /** Rows whose flags (or their ceiling's) make them unfit to decide the goal. */
  invalid: string[];
}

/**
 * The goals of the performance issue, evaluated on this run's rows (never on stored numbers).
 * A row flagged `gen>srv`, `gen-sat` or `busy` (on either side of a ratio) cannot decide a goal:
 * it measured the generator or a disturbed machine.
 */
function goals(rows: Row[]): Goal[] {
  const unfit = (r: Row | undefined) => r !== undefined && r.flags.some((f) => f === 'gen>srv' || f === 'gen-sat' || f === 'busy');
  const refOf = (r: Row, target: TargetName) => rows.find((x) => x.name === r.name && x.target === target);
  const single = rows.filter((r) => r.target === 'minkms' && r.batch === 1 && (r.kind === 'generate' || r.kind === 'decrypt'));
  const check = (
    goal: string,
    candidates: Row[],
    value: (r: Row) => number | undefined,
    ok: (x: number) => boolean,
    fmt: (x: number) => string,
  ): Goal => {
    const invalid: string[] = [];
    const parts: string[] = [];
    let met: boolean | undefined;
    for (const r of candidates) {
      const x = value(r);
      if (x === undefined) continue;
      if (unfit(r) || unfit(refOf(r, 'ceiling'))) {
        invalid.push(r.label);
        continue;
      }
      parts.push(`${r.label} ${fmt(x)}`);
      met = (met ?? true) && ok(x);
    }
    return { goal, met, measured: parts.join('; ') || '-', invalid };
  };
  const at = (ns: number[]) => single.filter((r) => ns.includes(r.inflight));
  const batched = rows.filter((r) => r.target === 'minkms' && r.kind === 'generate' && r.batch === 100);
  return [
    check(
      'single-op KEY:GENERATE/DECRYPT >= 0.8x the Node ceiling (h1 and h2, 8 and 32 in flight)',
      at([8, 32]),
      (r) => r.ratioCeiling,
      (x) => x >= 0.8,
      (x) => x.toFixed(2),
    ),
    check(
      "server CPU/request <= 1.3x the ceiling's (same rows)",
      at([8, 32]),
      (r) => r.cpuRatioCeiling,
      (x) => x <= 1.3,
      (x) => x.toFixed(2),
    ),
    check(
      "p99 at 32 in flight <= 1.5x the ceiling's",
      at([32]),
      (r) => r.p99RatioCeiling,
      (x) => x <= 1.5,
      (x) => x.toFixed(2),
    ),
    check(
      'batched x100 KEY:GENERATE >= 150 000 data keys/s',
      batched,
      (r) => r.opsPerS,
      (x) => x >= 150_000,
      (x) => String(x),
    ),
  ];
}

function goalsText(gs: Goal[]): string {
  return gs
    .map((g) => {
      const verdict = g.met === undefined ? 'undecided' : g.met ? 'met' : 'NOT met';
      const invalid = g.invalid.length > 0 ? ` [not counted, flagged: ${g.invalid.join(', ')}]` : '';
      return `- ${g.goal}: ${verdict}${g.measured === '-' ? '' : ` — ${g.measured}`}${invalid}`;
    })
    .join('\n');
}

// ------------------------------------------------------------------------------- the matrix

/** The element of median value of `key` (the lower one of an even count). */
function median<T>(items: T[], key: (t: T) => number): T {
  return [...items].sort((a, b) => key(a) - key(b))[Math.floor((items.length - 1) / 2)]!;
}

/** Response size of a scenario when minkms did not answer one in this round (frame + message sizes). */
function expectedResponseBytes(s: Scenario): number {
  // KEY:GENERATE: frame 6 + version 2 + plaintext 34 + ciphertext 78; KEY:DECRYPT: 6 + 34.
  return (s.kind === 'decrypt' ? 40 : 120) * s.batch;
}

async function runMatrix(
  o: Options,
  tools: GoTools,
  ctx: Context,
  ports: Record<TargetName, Peer | undefined>,
  log: (s: string) => void,
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const s of matrix(o)) {
    const runs: Record<TargetName, Row[]> = { minkms: [], ceiling: [], go: [] };
    const ratios: Record<'ceiling' | 'go' | 'cpu' | 'p99', number[]> = { ceiling: [], go: [], cpu: [], p99: [] };
    // The targets of a scenario are measured one right after the other, in every round, so that
    // a ratio compares runs under the same conditions; with --repeat the medians are reported.
    // The ceiling goes last: it answers with as many bytes as minkms did in the same round.
    const order = (['minkms', 'go', 'ceiling'] as const).filter((t) => s.targets.includes(t));
    for (let round = 0; round < o.repeat; round++) {
      const mine: Partial<Record<TargetName, Row>> = {};
      for (const t of order) {
        const peer = ports[t];
        if (peer === undefined) continue;
        let path = `/v1/kms/${ENCLAVE}`;
        if (t === 'ceiling') path += `?n=${mine.minkms?.responseBytes || mine.go?.responseBytes || expectedResponseBytes(s)}`;
        const cmd = t === 'ceiling' && s.kind === 'mix' ? 'generate' : s.kind === 'handshake' ? 'generate' : s.kind;
        const args = [
          '-url',
          `https://127.0.0.1:${peer.port}${path}`,
          '-ca',
          ctx.caFile,
          '-cert',
          ctx.certFile,
          '-key',
          ctx.keyFile,
          '-proto',
          s.proto,
          '-inflight',
          String(s.inflight),
          '-conns',
          String(s.conns),
          '-cmd',
          cmd,
          '-keyname',
          KEY,
          '-batch',
          String(s.batch),
          '-warmup',
          String(o.warmup),
          '-duration',
          String(o.duration),
          '-client',
          o.client,
        ];
        if (s.kind === 'handshake') args.push('-handshake');
        // The ceiling cannot make data keys: it gets minkms's ciphertexts (it never opens them).
        if (t === 'ceiling' && cmd === 'decrypt') args.push('-ciphertexts', ctx.ciphertextsFile);
        const m = await runLoadgen(tools, args, o, peer.proc.pid!);
        const wantMajor = s.proto === 'h2' ? 2 : 1;
        if (m.gen.protoMajor !== 0 && m.gen.protoMajor !== wantMajor) {
          throw new Error(`${s.name} ${t}: asked for ${s.proto}, the connection spoke HTTP/${m.gen.protoMajor}`);
        }
        const row = toRow(s, t, m, o.genProcs);
        mine[t] = row;
        runs[t].push(row);
        log(
          `${row.label.padEnd(26)} ${t.padEnd(7)} ${String(row.reqPerS).padStart(7)} req/s ${String(row.opsPerS).padStart(8)} ops/s  p99 ${row.p99Ms.toFixed(2).padStart(6)} ms  srv ${String(row.serverUsPerReq).padStart(4)} µs/req  gen ${String(row.genUsPerReq).padStart(4)} µs/req  other ${row.otherCores.toFixed(2)}${row.errors ? `  err ${row.errors} ${row.errorSamples[0] ?? ''}` : ''}${row.flags.length ? `  [${row.flags.join(' ')}]` : ''}`,
        );
      }
      const a = mine.minkms;
      if (a && mine.ceiling && mine.ceiling.reqPerS > 0) {
        ratios.ceiling.push(a.reqPerS / mine.ceiling.reqPerS);
        if (mine.ceiling.serverUsPerReq > 0) ratios.cpu.push(a.serverUsPerReq / mine.ceiling.serverUsPerReq);
        if (mine.ceiling.p99Ms > 0) ratios.p99.push(a.p99Ms / mine.ceiling.p99Ms);
      }
      if (a && mine.go && mine.go.reqPerS > 0) ratios.go.push(a.reqPerS / mine.go.reqPerS);
    }
    for (const t of ['minkms', 'ceiling', 'go'] as const) {
      if (runs[t].length === 0) continue;
      const row = { ...median(runs[t], (r) => r.reqPerS) };
      // A generator-bound or failing round flags the row whatever the median is (it says the
      // setup cannot measure this row); `busy` only if most rounds were disturbed, since the
      // median is there to step over a disturbed round.
      const rounds = runs[t];
      row.flags = ['gen>srv', 'gen-sat', 'busy', 'errors'].filter((f) => {
        const n = rounds.filter((r) => r.flags.includes(f)).length;
        return f === 'busy' ? n * 2 > rounds.length : n > 0;
      });
      if (rounds.length > 1)
        row.runs = rounds.map((r) => ({ reqPerS: r.reqPerS, p99Ms: r.p99Ms, serverUsPerReq: r.serverUsPerReq, otherCores: r.otherCores }));
      if (t === 'minkms') {
        const med = (xs: number[]) => (xs.length > 0 ? round(median(xs, (x) => x)) : undefined);
        row.ratioCeiling = med(ratios.ceiling);
        row.ratioGo = med(ratios.go);
        row.cpuRatioCeiling = med(ratios.cpu);
        row.p99RatioCeiling = med(ratios.p99);
      }
      rows.push(row);
    }
  }
  return rows;
}

// ------------------------------------------------------------------------------- soak

interface SoakReport {
  seconds: number;
  rate: number;
  proto: string;
  conns: number;
  intervals: Array<GenInterval & { rssMiB: number }>;
  totalRequests: number;
  errors: number;
  errorSamples: string[];
  p99Ms: number;
  maxMs: number;
  rssStartMiB: number;
  rssEndMiB: number;
  rssPeakMiB: number;
  serverUsPerReq: number;
  genUsPerReq: number;
}

async function runSoak(o: Options, tools: GoTools, ctx: Context, server: Server, log: (s: string) => void): Promise<SoakReport> {
  const intervals: SoakReport['intervals'] = [];
  const every = Math.min(10, Math.max(0.25, o.soak / 10));
  log(
    `soak: ${o.soak} s at ${o.rate > 0 ? `${o.rate} req/s` : 'full speed'} (${o.proto}, ${o.conns} connections): 45 % KEY:GENERATE, 45 % KEY:DECRYPT, 10 % KEY:CREATE/KEY:DELETE`,
  );
  const args = [
    '-url',
    `https://127.0.0.1:${server.port}/v1/kms/${ENCLAVE}`,
    '-ca',
    ctx.caFile,
    '-cert',
    ctx.certFile,
    '-key',
    ctx.keyFile,
    '-proto',
    o.proto,
    '-inflight',
    String(o.conns),
    '-conns',
    String(o.conns),
    '-cmd',
    'soak',
    '-keyname',
    KEY,
    '-rate',
    String(o.rate),
    '-warmup',
    String(o.warmup),
    '-duration',
    String(o.soak),
    '-report',
    String(every),
    '-client',
    o.client,
  ];
  const m = await runLoadgen(tools, args, o, server.proc.pid!, (r, rss) => {
    intervals.push({ ...r, rssMiB: round(rss / 1048576, 1) });
    log(
      `  t=${r.atS.toFixed(0).padStart(4)} s  ${String(Math.round(r.requests / r.spanS)).padStart(6)} req/s  p99 ${r.p99Ms.toFixed(2)} ms  max ${r.maxMs.toFixed(1)} ms  errors ${r.errors}  server RSS ${(rss / 1048576).toFixed(1)} MiB`,
    );
  });
  const row = toRow(scenario(o, 'generate', o.proto, o.conns, 1, ['minkms']), 'minkms', m, o.genProcs);
  const rss = intervals.map((i) => i.rssMiB);
  const report: SoakReport = {
    seconds: o.soak,
    rate: o.rate,
    proto: o.proto,
    conns: o.conns,
    intervals,
    totalRequests: m.gen.requests,
    errors: m.gen.errors,
    errorSamples: m.gen.errorSamples ?? [],
    p99Ms: round(m.gen.p99Ms, 3),
    maxMs: round(m.gen.maxMs, 3),
    rssStartMiB: rss.length > 0 ? Math.min(...rss.slice(0, Math.max(1, Math.ceil(rss.length / 5)))) : 0,
    rssEndMiB: rss.length > 0 ? rss[rss.length - 1]! : 0,
    rssPeakMiB: round(m.peakRss / 1048576, 1),
    serverUsPerReq: row.serverUsPerReq,
    genUsPerReq: row.genUsPerReq,
  };
  log(
    `soak: ${report.totalRequests} requests, ${report.errors} errors, p99 ${report.p99Ms} ms, max ${report.maxMs} ms; server RSS ${report.rssStartMiB} MiB (first fifth, min) → ${report.rssEndMiB} MiB (end), peak ${report.rssPeakMiB} MiB; server ${report.serverUsPerReq} µs/req, generator ${report.genUsPerReq} µs/req`,
  );
  return report;
}

// ------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => (o.json ? process.stderr : process.stdout).write(s + '\n');
  // Build (or find) the Go tools first: without them there is nothing to measure with.
  const tools = goTools();
  const info = machine(tools.goVersion, o);
  log(
    `machine: ${info.cpu}, ${info.cores} cores, load average ${(info.loadAverage as number[]).join(' ')}; node ${info.node}, OpenSSL ${info.openssl}, ${info.go}; generator GOMAXPROCS=${o.genProcs} (${o.client} client), Go reference GOMAXPROCS=${o.refProcs}`,
  );
  const server = await startServer({ minkms: MINKMS, serverArgs: o.serverArgs });
  const peers: Record<TargetName, Peer | undefined> = {
    minkms: { proc: server.proc, port: server.port },
    ceiling: undefined,
    go: undefined,
  };
  try {
    const ctx = await setup(server);
    let result: Record<string, unknown>;
    if (o.soak > 0) {
      const soak = await runSoak(o, tools, ctx, server, log);
      result = { machine: info, serverArgs: o.serverArgs, soak };
    } else {
      if (o.targets.has('ceiling')) peers.ceiling = await startCeiling(server);
      if (o.targets.has('go')) peers.go = await startGoReference(tools, server, ctx.identity, o.refProcs);
      if (!o.targets.has('minkms')) peers.minkms = undefined;
      const rows = await runMatrix(o, tools, ctx, peers, log);
      const gs = goals(rows);
      const used = new Set(rows.flatMap((r) => r.flags));
      log('');
      log(table(rows));
      log('');
      log(
        `srv/gen µs/req: CPU time per request of the server (/proc/<pid>/stat) and of the load generator (getrusage), over the same window. ` +
          `÷ceiling, ÷go: minkms req/s ÷ the reference's; cpu÷ceil: minkms srv µs/req ÷ the ceiling's. ` +
          `h2 c=: connections the in-flight requests share.`,
      );
      for (const f of used) log(`[${f}] ${FLAGS[f]}`);
      log('');
      log('Goals (docs/performance.md), from this run:');
      log(goalsText(gs));
      result = {
        machine: info,
        serverArgs: o.serverArgs,
        durationS: o.duration,
        warmupS: o.warmup,
        repeat: o.repeat,
        h2Streams: o.h2Streams,
        rows,
        goals: gs,
      };
    }
    const json = JSON.stringify(result, null, 2);
    if (o.json) process.stdout.write(json + '\n');
    if (o.out) writeFileSync(o.out, json + '\n');
  } finally {
    for (const p of [peers.ceiling, peers.go]) if (p) await stop(p.proc);
    await stop(server.proc);
    rmSync(dirname(server.dir), { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
