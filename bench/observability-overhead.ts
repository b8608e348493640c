/**
 * Cost of the metrics/audit/log hooks per request, in a tight loop without network:
 * `node dist/bench/observability-overhead.js`. Prints ns per request for
 * - the full observer path of one `POST /v1/kms` request (HTTP hooks + runCommands, no audit,
 *   log level info: a read command logs nothing),
 * - the same with the audit log on (one hash-chained line per request, buffered writes),
 * - for comparison, prom-client's own Counter.inc + Histogram.observe with labels.
 * A real request over mTLS costs ~100 µs or more, so a few hundred ns are well below 1 %.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, Histogram, Registry } from 'prom-client';
import { createLogger } from '../src/server/log.js';
import { Observability } from '../src/server/observability.js';
import { commandByCode } from '../src/protocol/commands.js';
import type { Request, Response, Route } from '../src/server/http.js';
import type { DispatchTrace } from '../src/server/commands.js';

const N = 300_000;
const generate = commandByCode(0xcf)!;
const route: Route = { method: 'POST', path: '/v1/kms/', prefix: true, access: () => {}, handler: () => {} };
const OUT = Buffer.alloc(100);

function fakeRequest(): { req: Request; res: Response } {
  const res = Object.assign(new EventEmitter(), {
    statusCode: 200,
    writableEnded: true,
    getHeader: () => 100,
  });
  const req = { headers: { 'content-length': '16' }, method: 'POST' };
  return { req: req as unknown as Request, res: res as unknown as Response };
}

async function perRequest(obs: Observability): Promise<number> {
  const run = (trace: DispatchTrace) => {
    trace.command = generate;
    trace.frames = 1;
    trace.objects[0] = 'my-key';
    trace.done = 1;
    trace.ends[0] = performance.now();
    return Promise.resolve(OUT);
  };
  const once = async () => {
    const { req, res } = fakeRequest();
    obs.http.request(req, res);
    obs.http.routed(req, route, 'h1:caller', 'enclave');
    await obs.runCommands(req, 'h1:caller', 'enclave', run);
    (res as unknown as EventEmitter).emit('close');
  };
  for (let i = 0; i < 20_000; i++) await once(); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await once();
  return Number(process.hrtime.bigint() - t0) / N;
}

async function baseline(): Promise<number> {
  const once = async () => {
    const { res } = fakeRequest();
    await Promise.resolve(OUT);
    (res as unknown as EventEmitter).emit('close');
  };
  for (let i = 0; i < 20_000; i++) await once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await once();
  return Number(process.hrtime.bigint() - t0) / N;
}

function promClient(): number {
  const r = new Registry();
  const c = new Counter({ name: 'c', help: 'c', labelNames: ['command', 'status'], registers: [r] });
  const h = new Histogram({ name: 'h', help: 'h', labelNames: ['command'], registers: [r] });
  const s = new Histogram({ name: 's', help: 's', registers: [r] });
  const once = () => {
    c.inc({ command: 'KEY:GENERATE', status: '200' });
    c.inc({ command: 'KEY:GENERATE', status: '200' });
    h.observe({ command: 'KEY:GENERATE' }, 0.0012);
    s.observe(16);
    s.observe(100);
  };
  for (let i = 0; i < 20_000; i++) once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) once();
  return Number(process.hrtime.bigint() - t0) / N;
}

const dir = mkdtempSync(join(tmpdir(), 'minkms-bench-'));
try {
  const log = createLogger('info', { destination: { write: () => {} } });
  const base = await baseline();
  const plain = await perRequest(new Observability({ log }));
  const audited = new Observability({ log, auditFile: join(dir, 'audit.log') });
  const withAudit = await perRequest(audited);
  audited.close();
  const prom = promClient();
  const f = (ns: number) => `${ns.toFixed(0)} ns`;
  console.log(`loop baseline (fake request, await, close event): ${f(base)}`);
  console.log(`metrics + log hooks per request:                 ${f(plain - base)}`);
  console.log(`metrics + log + audit line per request:          ${f(withAudit - base)}`);
  console.log(`prom-client inc/observe with labels (reference):  ${f(prom)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
