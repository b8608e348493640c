/**
 * What a second server process could add, at best: `node dist/bench/two-servers.js N KIND
 * PROTO CONNS BATCH` (e.g. `2 generate h2 32 1`) starts N independent `minkms server`
 * processes (own data directories, no IPC, no forwarded writes: the upper bound of
 * `node:cluster` workers), splits CONNS connections between them, one load generator per
 * server, and prints the total. Compare N=1 with N=2 (docs/performance.md, "Using both cores
 * for single operations").
 *
 * It still drives the load with the Node load generator (bench/loadgen.ts), which saturates
 * its core: its figures are bounded by the client. With the Go generator, run `npm run bench`
 * with `--server-arg` (e.g. a worker count) and `--gen-cpus` instead.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { KmsClient } from '../src/client/client.js';
import { parseApiKey } from '../src/identity/api-key.js';
import { certificateForApiKey } from '../src/identity/client-cert.js';
import { Histogram } from './hist.js';
import type { LoadResult, LoadSpec } from './loadgen.js';
import { minioContext, type WorkloadKind } from './workload.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const MINKMS = resolve(HERE, '..', 'src/cli/main.js');
const [n = '2', kind = 'generate', proto = 'h2', conns = '32', batch = '1'] = process.argv.slice(2);
const DURATION_MS = 4000;

async function start(): Promise<{ proc: ChildProcess; dir: string; spec: Omit<LoadSpec, 'conns'> }> {
  const dir = mkdtempSync(join(tmpdir(), 'minkms-bench-'));
  const proc = spawn(process.execPath, [MINKMS, 'server', join(dir, 'data'), '--address', '127.0.0.1:0'], {
    env: { ...process.env, MINIO_KMS_HSM_KEY: 'hsm:aes256:' + randomBytes(32).toString('base64') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((res, rej) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/up and running/.test(out)) res();
    });
    proc.once('exit', () => rej(new Error(out)));
  });
  proc.stdout!.resume();
  proc.stderr!.resume();
  const port = Number(/Endpoint\s+https:\/\/[^:]+:(\d+)/.exec(out)![1]);
  const apiKey = /API Key\s+(\S+)/.exec(out)![1]!;
  const ca = readFileSync(join(dir, 'data/certs/public.crt'), 'utf8');
  const root = new KmsClient({ endpoints: [`127.0.0.1:${port}`], apiKey, ca });
  const ad = minioContext(0);
  await root.createEnclave('bench');
  await root.createKey('bench', { name: 'k' });
  const deks = await root.generateKey('bench', new Array(64).fill({ name: 'k', associatedData: ad }));
  root.close();
  const { cert, key } = certificateForApiKey(parseApiKey(apiKey));
  return {
    proc,
    dir,
    spec: {
      target: { host: '127.0.0.1', port, ca, cert, key },
      path: '/v1/kms/bench',
      proto: proto as 'h1' | 'h2',
      streams: 1,
      workload: {
        kind: kind as WorkloadKind,
        batch: Number(batch),
        key: 'k',
        ad: ad.toString('base64'),
        ciphertexts: deks.map((d) => Buffer.from(d.ciphertext).toString('base64')),
      },
      warmupMs: 1500,
      durationMs: DURATION_MS,
      rate: 0,
      reportEveryMs: 0,
    },
  };
}

const servers = [];
for (let i = 0; i < Number(n); i++) servers.push(await start());
try {
  const results = await Promise.all(
    servers.map(
      (s) =>
        new Promise<LoadResult>((res, rej) => {
          const c = fork(join(HERE, 'loadgen.js'));
          c.on('message', (m: LoadResult) => m.type === 'result' && res(m));
          c.once('exit', (code) => code !== 0 && rej(new Error(`load generator exited (${code})`)));
          c.send({ ...s.spec, conns: Math.max(1, Math.round(Number(conns) / servers.length)) });
        }),
    ),
  );
  const h = new Histogram();
  let requests = 0;
  let ops = 0;
  let errors = 0;
  for (const r of results) {
    requests += r.requests;
    ops += r.ops;
    errors += r.errors;
    h.merge(r.hist);
  }
  const secs = DURATION_MS / 1000;
  console.log(
    `${n} server(s), ${kind} b${batch} ${proto} c${conns}: ${Math.round(requests / secs)} req/s, ${Math.round(ops / secs)} ops/s, p99 ${h.quantile(0.99).toFixed(2)} ms, errors ${errors}`,
  );
} finally {
  for (const s of servers) {
    s.proc.kill();
    rmSync(s.dir, { recursive: true, force: true });
  }
}
