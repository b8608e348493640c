/**
 * Smoke test of the benchmark suite (`npm run bench`, bench/run.ts): a very short run of the
 * quick matrix and of the soak mode against a real server, checking that it works and reports
 * (rows, ceiling ratios, latencies, memory, errors) — never that some number was reached: CI
 * machines are too different for that.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';

const BENCH = join(REPO_ROOT, 'dist/bench/run.js');

function bench(args: string[]): Promise<{ json: Record<string, unknown>; table: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BENCH, ...args, '--json'], { timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`bench failed: ${err.message}\n${stderr}`));
      try {
        resolve({ json: JSON.parse(stdout) as Record<string, unknown>, table: stderr });
      } catch (e) {
        reject(new Error(`bench printed no JSON: ${(e as Error).message}\n${stdout}\n${stderr}`));
      }
    });
  });
}

const finite = (x: unknown) => typeof x === 'number' && Number.isFinite(x);

describe('npm run bench (smoke)', { timeout: 180_000 }, () => {
  it('measures the quick matrix and its ceiling, as a table and as JSON', async () => {
    const { json, table } = await bench(['--quick', '--duration', '0.3', '--warmup', '0.2']);
    const machine = json.machine as Record<string, unknown>;
    assert.equal(typeof machine.cpu, 'string');
    assert.ok(finite(machine.cores));
    assert.equal(machine.node, process.version);
    const rows = json.rows as Array<Record<string, unknown>>;
    const minkms = rows.filter((r) => r.target === 'minkms');
    const ceiling = rows.filter((r) => r.target === 'ceiling');
    assert.ok(minkms.length >= 6, 'one row per scenario of the quick matrix');
    assert.equal(ceiling.length, minkms.length, 'every row has its ceiling');
    for (const kind of ['generate', 'decrypt', 'mix', 'handshake'])
      assert.ok(
        minkms.some((r) => r.kind === kind),
        kind,
      );
    assert.ok(minkms.some((r) => r.proto === 'h1') && minkms.some((r) => r.proto === 'h2'));
    assert.ok(
      minkms.some((r) => (r.batch as number) > 1),
      'a batched row',
    );
    for (const r of rows) {
      for (const f of ['reqPerS', 'opsPerS', 'p50Ms', 'p99Ms', 'maxMs', 'peakRssMiB', 'serverCpu', 'loadgenCpu'])
        assert.ok(finite(r[f]), `${r.name} ${r.target} ${f}`);
      assert.ok((r.requests as number) > 0, `${r.name} ${r.target}: no request was answered`);
      assert.equal(r.errors, 0, `${r.name} ${r.target}: ${(r.errorSamples as string[]).join('; ')}`);
    }
    for (const r of minkms) {
      assert.ok(finite(r.ratio), `${r.name}: ratio to the ceiling`);
      assert.ok((r.peakRssMiB as number) > 0, `${r.name}: server memory`);
    }
    assert.match(table, /\| scenario +\| target/);
    assert.match(table, /generate\/b100\/h2/);
  });

  it('runs a soak at fixed load and reports memory and errors over time', async () => {
    const { json } = await bench(['--soak', '1.5', '--rate', '200', '--conns', '4', '--warmup', '0.2']);
    const soak = json.soak as Record<string, unknown>;
    const intervals = soak.intervals as Array<Record<string, unknown>>;
    assert.ok(intervals.length >= 2, 'periodic reports');
    for (const i of intervals) assert.ok(finite(i.rssMiB) && (i.rssMiB as number) > 0);
    assert.ok((soak.totalRequests as number) > 0);
    assert.equal(soak.errors, 0, (soak.errorSamples as string[]).join('; '));
    for (const f of ['rssStartMiB', 'rssEndMiB', 'rssPeakMiB', 'p99Ms']) assert.ok(finite(soak[f]), f);
  });
});
