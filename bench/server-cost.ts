/**
 * Instructions per request of a whole server process, counted with callgrind, so that the cost
 * of the data path can be compared on a busy machine (instruction counts do not depend on what
 * else runs; time does):
 *
 *   node dist/bench/server-cost.js                      # minkms and the ceiling, h1 and h2, generate
 *   node dist/bench/server-cost.js --targets minkms --protos h2 --cmds generate,decrypt --n 20000
 *
 * For each row the server runs twice under `valgrind --tool=callgrind` (all its threads): both
 * runs get the same start-up, set-up and `--warm` requests from the Go load generator, and the
 * second gets `--n` more; (Ir₂ − Ir₁) ÷ n is what one request costs the server, its start-up
 * and warm-up cancelled out. V8 keeps optimizing functions for several thousand requests
 * (measured: ~230 optimizations in the first 1 600 requests of KEY:GENERATE, ~20 after 7 000),
 * so the warm-up is long, and the part of the difference spent in V8's background compiler
 * (`OptimizingCompileDispatcher::CompileTask`) is reported on its own and left out of the
 * "steady" column. Only minkms and the Node ceiling: the Go reference server does not run
 * under valgrind (signal-based preemption).
 *
 * Options: --targets minkms,ceiling  --protos h1,h2  --cmds generate,decrypt  --inflight 8
 *          --n 5000 (requests counted)  --warm 10000 (requests before)  --keep DIR (keep the
 *          callgrind files there, for callgrind_annotate)
 */
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { generateApiKey } from '../src/identity/api-key.js';
import { certificateForApiKey, createSelfSignedServerCertificate } from '../src/identity/client-cert.js';
import { goTools, type GoTools } from './go-tools.js';
import { ENCLAVE, KEY, runLoadgen, setup, startCeiling, startServer, stop } from './harness.js';

type Target = 'minkms' | 'ceiling';

interface Options {
  targets: Target[];
  protos: Array<'h1' | 'h2'>;
  cmds: Array<'generate' | 'decrypt'>;
  inflight: number;
  n: number;
  warm: number;
  keep: string | undefined;
}

function parse(argv: string[]): Options {
  const o: Options = {
    targets: ['minkms', 'ceiling'],
    protos: ['h1', 'h2'],
    cmds: ['generate'],
    inflight: 8,
    n: 5000,
    warm: 10_000,
    keep: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    const list = <T extends string>(allowed: readonly T[]) => {
      const xs = v().split(',') as T[];
      for (const x of xs) if (!allowed.includes(x)) throw new Error(`${a}: ${x} is not one of ${allowed.join(', ')}`);
      return xs;
    };
    if (a === '--targets') o.targets = list(['minkms', 'ceiling'] as const);
    else if (a === '--protos') o.protos = list(['h1', 'h2'] as const);
    else if (a === '--cmds') o.cmds = list(['generate', 'decrypt'] as const);
    else if (a === '--inflight') o.inflight = Math.max(1, Number(v()));
    else if (a === '--n') o.n = Math.max(1, Number(v()));
    else if (a === '--warm') o.warm = Math.max(0, Number(v()));
    else if (a === '--keep') o.keep = v();
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

/** The total instruction count in a callgrind output file. */
function totalIr(file: string): number {
  const text = readFileSync(file, 'utf8');
  const m = /^summary:\s+(\d+)/m.exec(text) ?? /^totals:\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`no instruction total in ${file}`);
  return Number(m[1]);
}

/** Instructions spent in V8's background optimizing compiler (inclusive), from callgrind_annotate. */
function jitIr(file: string): number {
  const r = spawnSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`callgrind_annotate ${file}: ${r.stderr}`);
  let best = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([\d,]+) \(.*OptimizingCompileDispatcher::CompileTask::RunInternal\(\)/.exec(line);
    if (m) best = Math.max(best, Number(m[1]!.replace(/,/g, '')));
  }
  return best;
}

/** One run of a server under callgrind: start, set up, warm requests, `count` requests, stop. */
async function once(
  tools: GoTools,
  o: Options,
  target: Target,
  proto: 'h1' | 'h2',
  cmd: 'generate' | 'decrypt',
  count: number,
  out: string,
): Promise<void> {
  const wrapper = ['valgrind', '--tool=callgrind', `--callgrind-out-file=${out}`];
  const timeoutMs = 900_000; // node starts in about a minute under valgrind on a busy machine
  const work = mkdtempSync(join(tmpdir(), 'minkms-server-cost-'));
  let proc;
  try {
    let port: number;
    let files: { caFile: string; certFile: string; keyFile: string; ciphertextsFile: string };
    let path = `/v1/kms/${ENCLAVE}`;
    if (target === 'minkms') {
      const server = await startServer({ wrapper, timeoutMs });
      proc = server.proc;
      port = server.port;
      files = await setup(server, timeoutMs);
    } else {
      // The ceiling checks no certificate and opens no ciphertext: any will do.
      const tls = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1'], days: 1 });
      const client = certificateForApiKey(generateApiKey());
      files = {
        caFile: join(work, 'ca.crt'),
        certFile: join(work, 'client.crt'),
        keyFile: join(work, 'client.key'),
        ciphertextsFile: join(work, 'ciphertexts.txt'),
      };
      writeFileSync(files.caFile, tls.cert);
      writeFileSync(join(work, 'server.key'), tls.key);
      writeFileSync(files.certFile, client.cert);
      writeFileSync(files.keyFile, client.key);
      writeFileSync(files.ciphertextsFile, Array.from({ length: 64 }, () => randomBytes(76).toString('base64')).join('\n'));
      const peer = await startCeiling({ certFile: files.caFile, keyFile: join(work, 'server.key') }, { wrapper, timeoutMs });
      proc = peer.proc;
      port = peer.port;
      path += `?n=${cmd === 'generate' ? 120 : 40}`;
    }
    const load = async (requests: number) => {
      const args = ['-url', `https://127.0.0.1:${port}${path}`, '-ca', files.caFile, '-cert', files.certFile, '-key', files.keyFile];
      args.push('-proto', proto, '-inflight', String(o.inflight), '-conns', '1', '-cmd', cmd, '-keyname', KEY);
      args.push('-ciphertexts', files.ciphertextsFile, '-warmup', '0', '-duration', '3600', '-count', String(requests), '-timeout', '300s');
      const m = await runLoadgen(tools, args, { genProcs: 1 }, proc!.pid!);
      if (m.gen.errors > 0) throw new Error(`${target} ${proto} ${cmd}: ${m.gen.errors} errors: ${m.gen.errorSamples?.join('; ')}`);
    };
    if (o.warm > 0) await load(o.warm);
    if (count > 0) await load(count);
    await stop(proc, 300_000); // callgrind writes its file at exit
    proc = undefined;
  } finally {
    if (proc) await stop(proc, 10_000);
    rmSync(work, { recursive: true, force: true });
  }
}

const o = parse(process.argv.slice(2));
if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is required (apt-get install valgrind)');
const tools = goTools();
const dir = o.keep ?? mkdtempSync(join(tmpdir(), 'minkms-callgrind-'));
mkdirSync(dir, { recursive: true });
console.log(
  `instructions per request (callgrind, whole server process), ${o.inflight} in flight, ${o.warm} warm-up + ${o.n} counted requests`,
);
try {
  for (const target of o.targets)
    for (const proto of o.protos)
      for (const cmd of o.cmds) {
        const base = join(dir, `${target}-${proto}-${cmd}`);
        const a = `${base}-0.out`;
        const b = `${base}-${o.n}.out`;
        await once(tools, o, target, proto, cmd, 0, a);
        await once(tools, o, target, proto, cmd, o.n, b);
        const total = (totalIr(b) - totalIr(a)) / o.n;
        const jit = (jitIr(b) - jitIr(a)) / o.n;
        const f = (x: number) => String(Math.round(x)).padStart(9);
        console.log(
          `${target.padEnd(8)} ${proto} ${cmd.padEnd(9)} ${f(total - jit)} steady ${f(jit)} JIT ${f(total)} total  instructions/request`,
        );
      }
} finally {
  if (o.keep === undefined) rmSync(dir, { recursive: true, force: true });
}
