/**
 * Smoke test of the benchmark (`npm run bench`, bench/run.ts): a very short run of the quick
 * matrix (minkms, the Node ceiling and the Go reference server, driven by the Go load
 * generator) and of the soak mode, checking that it builds its Go tools, runs and reports —
 * rows, ratios, latencies, CPU per request of server and generator, flags, the goals — never
 * that some number was reached: CI machines are busy and differ too much for that.
 *
 * The Go toolchain is required (CI always has it): without it this test fails and says so.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';

const GO_DIR = join(REPO_ROOT, 'bench', 'go');

const BENCH = join(REPO_ROOT, 'dist/bench/run.js');

function bench(args: string[]): Promise<{ json: Record<string, unknown>; table: string }> {
  return new Promise((resolve, reject) => {
    // Generous: a cold Go build cache and a busy machine make the first run slow.
    execFile(process.execPath, [BENCH, ...args, '--json'], { timeout: 600_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
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

describe('npm run bench (smoke)', { timeout: 1_500_000 }, () => {
  before(() => {
    const go = process.env.MINKMS_BENCH_GO ?? 'go';
    const probe = spawnSync(go, ['version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      assert.fail(
        `the benchmark's load generator and Go reference server need the Go toolchain (\`go\` >= 1.24), ` +
          `but \`${go} version\` failed (${probe.error?.message ?? probe.stderr.trim()}); install Go or set MINKMS_BENCH_GO`,
      );
    }
  });

  it("passes the Go tools' own tests (HTTP/1.1 and HTTP/2 client, wire messages, ciphertext vector, histogram)", async () => {
    const go = process.env.MINKMS_BENCH_GO ?? 'go';
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        go,
        ['test', '-count=1', './...'],
        { cwd: GO_DIR, timeout: 600_000, env: { ...process.env, GOTOOLCHAIN: 'local', GOWORK: 'off', GOFLAGS: '' } },
        (err, stdout, stderr) => (err ? reject(new Error(`go test failed: ${err.message}\n${stdout}${stderr}`)) : resolve(stdout)),
      ),
    );
    assert.match(out, /ok\s+minkms\.bench\/internal\/rawclient/);
  });

  it('measures the quick matrix against the ceiling and the Go reference, with CPU per request', async () => {
    const { json, table } = await bench(['--quick', '--duration', '0.3', '--warmup', '0.2']);
    const machine = json.machine as Record<string, unknown>;
    assert.equal(typeof machine.cpu, 'string');
    assert.ok(finite(machine.cores));
    assert.equal(machine.node, process.version);
    assert.match(String(machine.go), /^go version go1\./);

    const rows = json.rows as Array<Record<string, unknown>>;
    const of = (target: string) => rows.filter((r) => r.target === target);
    const minkms = of('minkms');
    assert.ok(minkms.length >= 6, 'one minkms row per scenario of the quick matrix');
    for (const kind of ['generate', 'decrypt', 'mix'])
      assert.ok(
        minkms.some((r) => r.kind === kind),
        kind,
      );
    assert.ok(minkms.some((r) => r.proto === 'h1') && minkms.some((r) => r.proto === 'h2'));
    assert.ok(
      minkms.some((r) => (r.batch as number) > 1),
      'a batched row',
    );
    // Every single-op scenario is measured on all three targets, with both ratios.
    for (const r of minkms.filter((r) => r.kind === 'generate' || r.kind === 'decrypt')) {
      for (const t of ['ceiling', 'go'])
        assert.ok(
          of(t).some((x) => x.name === r.name),
          `${r.name}: ${t} row`,
        );
      assert.ok(finite(r.ratioCeiling), `${r.name}: ratio to the ceiling`);
      assert.ok(finite(r.ratioGo), `${r.name}: ratio to the Go reference`);
      assert.ok(finite(r.cpuRatioCeiling), `${r.name}: CPU ratio to the ceiling`);
    }
    for (const r of rows) {
      for (const f of [
        'reqPerS',
        'opsPerS',
        'p50Ms',
        'p99Ms',
        'maxMs',
        'peakRssMiB',
        'serverCores',
        'serverUsPerReq',
        'genCores',
        'genUsPerReq',
        'otherCores',
      ])
        assert.ok(finite(r[f]), `${r.name} ${r.target} ${f}`);
      assert.ok((r.requests as number) > 0, `${r.name} ${r.target}: no request was answered`);
      assert.equal(r.errors, 0, `${r.name} ${r.target}: ${(r.errorSamples as string[]).join('; ')}`);
      assert.ok(Array.isArray(r.flags), `${r.name} ${r.target}: flags`);
      assert.ok((r.peakRssMiB as number) > 0, `${r.name} ${r.target}: server memory`);
      assert.ok((r.connections as number) >= 1, `${r.name} ${r.target}: connections`);
    }
    const goals = json.goals as Array<Record<string, unknown>>;
    assert.ok(goals.length >= 4);
    for (const g of goals) assert.ok(g.met === undefined || typeof g.met === 'boolean', String(g.goal));

    assert.match(table, /\| workload +\| target/);
    assert.match(table, /srv µs\/req \| gen µs\/req/);
    assert.match(table, /generate ×100 h2/);
    assert.match(table, /Goals/);
  });

  it('runs a soak at fixed load and reports memory and errors over time', async () => {
    const { json } = await bench(['--soak', '1.5', '--rate', '200', '--conns', '4', '--warmup', '0.2']);
    const soak = json.soak as Record<string, unknown>;
    const intervals = soak.intervals as Array<Record<string, unknown>>;
    assert.ok(intervals.length >= 2, 'periodic reports');
    for (const i of intervals) assert.ok(finite(i.rssMiB) && (i.rssMiB as number) > 0);
    assert.ok((soak.totalRequests as number) > 0);
    assert.equal(soak.errors, 0, (soak.errorSamples as string[]).join('; '));
    for (const f of ['rssStartMiB', 'rssEndMiB', 'rssPeakMiB', 'p99Ms', 'serverUsPerReq', 'genUsPerReq']) assert.ok(finite(soak[f]), f);
  });
});
