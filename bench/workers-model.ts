/**
 * The inputs of the scaling model of several server processes (docs/performance.md, "Using
 * every core"), measured with the Go load generator: `node dist/bench/workers-model.js
 * [--servers N | --node-workers N] [--server-cpus 0,1] [--gen-cpus 1] [--proto h2] [--conns 32]
 * [--cmd generate] [--duration 4] [--warmup 1.5]`.
 *
 * With `--node-workers N` it starts instead ONE node with `minkms server --workers N`
 * (docs/workers.md), pinned with `taskset` to all of `--server-cpus`, and one generator
 * against its one port: the real thing, IPC and the primary included (its CPU is counted with
 * the workers': the server's CPU is its whole process tree). `--node-workers 1` is the same node
 * without `--workers`, under the same pinning, for the comparison.
 *
 * It starts N independent `minkms server` processes (own data directories, nothing shared:
 * the upper bound of N workers of one node, which would add IPC for writes only), the i-th
 * pinned with `taskset` to the i-th CPU of `--server-cpus`, and one generator per server,
 * all pinned to `--gen-cpus`, with the connections split between them. All run at once over
 * the same window. It prints, per server and in total, req/s, p50/p99 and the server's CPU
 * per request (the figure that carries over to a larger machine), the generators' CPU per
 * request, and the cores every other process used meanwhile.
 */
import { goTools } from './go-tools.js';
import { KEY, ENCLAVE, runLoadgen, setup, startServer, stop, systemBusyMs, type Measured, type Server } from './harness.js';

const args = process.argv.slice(2);
function opt(name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def;
}
const nodeWorkers = Number(opt('node-workers', '0'));
const servers = nodeWorkers > 0 ? 1 : Number(opt('servers', '1'));
const serverCpus = opt('server-cpus', '0,1').split(',');
const genCpus = opt('gen-cpus', '1');
const proto = opt('proto', 'h2');
const conns = Number(opt('conns', '32'));
const cmd = opt('cmd', 'generate');
const duration = opt('duration', '4');
const warmup = opt('warmup', '1.5');
const h2Streams = 8;

const tools = goTools();
const started: Server[] = [];
try {
  for (let i = 0; i < servers; i++) {
    started.push(
      nodeWorkers > 0
        ? await startServer({
            wrapper: ['taskset', '-c', serverCpus.join(',')],
            serverArgs: nodeWorkers > 1 ? ['--workers', String(nodeWorkers)] : [],
          })
        : await startServer({ wrapper: ['taskset', '-c', serverCpus[i % serverCpus.length]!] }),
    );
  }
  const ctxs = await Promise.all(started.map((s) => setup(s)));
  const inflight = Math.floor(conns / servers);
  const sys0 = systemBusyMs();
  const t0 = performance.now();
  const results: Measured[] = await Promise.all(
    started.map((s, i) =>
      runLoadgen(
        tools,
        [
          '-url',
          `https://127.0.0.1:${s.port}/v1/kms/${ENCLAVE}`,
          '-ca',
          ctxs[i]!.caFile,
          '-cert',
          ctxs[i]!.certFile,
          '-key',
          ctxs[i]!.keyFile,
          '-proto',
          proto,
          '-inflight',
          String(inflight),
          '-conns',
          String(proto === 'h1' ? inflight : Math.ceil(inflight / h2Streams)),
          '-cmd',
          cmd,
          '-keyname',
          KEY,
          '-batch',
          '1',
          '-warmup',
          warmup,
          '-duration',
          duration,
        ],
        { genProcs: 1, genCpus },
        s.proc.pid!,
      ),
    ),
  );
  const wallMs = performance.now() - t0;
  const machineCores = (systemBusyMs() - sys0) / wallMs;
  let total = 0;
  let srvCores = 0;
  let genCores = 0;
  for (const [i, m] of results.entries()) {
    const g = m.gen;
    total += g.reqPerS;
    srvCores += m.serverCores;
    genCores += g.cpuCores;
    const srvUs = g.reqPerS > 0 ? (m.serverCores * 1e6) / g.reqPerS : 0;
    process.stdout.write(
      `server ${i} (cpu ${nodeWorkers > 0 ? `${serverCpus.join(',')}, ${nodeWorkers} worker(s)` : serverCpus[i % serverCpus.length]}): ${Math.round(g.reqPerS)} req/s  p50 ${g.p50Ms.toFixed(2)} ms  p99 ${g.p99Ms.toFixed(2)} ms  srv ${Math.round(srvUs)} µs/req (${m.serverCores.toFixed(2)} cores)  gen ${Math.round(g.cpuUsPerReq)} µs/req  errors ${g.errors}\n`,
    );
  }
  process.stdout.write(
    `total ${servers} server(s), ${cmd} ${proto} n=${inflight * servers}: ${Math.round(total)} req/s  srv ${Math.round((srvCores * 1e6) / total)} µs/req  srv cores ${srvCores.toFixed(2)}  gen cores ${genCores.toFixed(2)}  other ${Math.max(0, machineCores - srvCores - genCores).toFixed(2)} (whole run, setup excluded)\n`,
  );
} finally {
  await Promise.all(started.map((s) => stop(s.proc)));
}
