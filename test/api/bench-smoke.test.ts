/**
 * Smoke test of the benchmark (`npm run bench`, bench/run.ts): a very short run of the quick
 * matrix (minkms, the Node ceiling and the Go reference server, driven by the Go load
 * generator) and of the soak mode, checking that it builds its Go tools, runs and reports —
 * rows, ratios, latencies, CPU per request of server and generator, flags, the goals — never
 * that some number was reached: CI machines are busy and differ too much for that.
 *
 * Nothing here can fail because the machine is busy: no rate, no latency, no minimum number of
 * answers in a window (a 0.3 s window on a loaded machine may see none; the load generator has
 * already checked that every connection is answered before its window starts, and fails the run
 * if not). Errors in a row are allowed as long as they are what load causes — transport errors
 * (timeouts, resets) and 408/429/503 answers; an answer no load explains (another 4xx, a 500,
 * one that cannot be decoded) fails the test at any rate: the benchmark or the server is broken.
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
const count = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;

/**
 * Error samples of the load generator (`HTTP <status>: <message>`, or a transport error) that load
 * cannot explain: any answer but 408, 429 and 503, or one that was not decoded.
 */
function notLoad(samples: unknown): string[] {
  assert.ok(Array.isArray(samples), 'errorSamples');
  return (samples as string[]).filter((e) => {
    if (/^HTTP status not 200 \(not decoded\)/.test(e)) return true;
    const status = /^HTTP (\d{3}):/.exec(e)?.[1];
    return status !== undefined && !['408', '429', '503'].includes(status);
  });
}

/** Requests and errors of a row or a soak: well-formed counts, and no error load cannot explain. */
function checkErrors(what: string, requests: unknown, errors: unknown, samples: unknown): void {
  assert.ok(count(requests), `${what}: requests ${String(requests)}`);
  assert.ok(count(errors) && (errors as number) <= (requests as number), `${what}: errors ${String(errors)} of ${String(requests)}`);
  assert.deepEqual(notLoad(samples), [], `${what}: errors that load does not explain`);
  if ((errors as number) > 0) assert.ok((samples as string[]).length > 0, `${what}: ${String(errors)} errors without a sample`);
}

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
      // A ratio needs the other target to have answered in its window (on a busy machine it may
      // not have): then it is a number, else absent.
      const ceiling = of('ceiling').find((x) => x.name === r.name)!;
      const go = of('go').find((x) => x.name === r.name)!;
      assert.equal(finite(r.ratioCeiling), (ceiling.reqPerS as number) > 0, `${r.name}: ratio to the ceiling ${String(r.ratioCeiling)}`);
      assert.equal(finite(r.ratioGo), (go.reqPerS as number) > 0, `${r.name}: ratio to the Go reference ${String(r.ratioGo)}`);
      for (const f of ['cpuRatioCeiling', 'p99RatioCeiling'])
        assert.ok(r[f] === undefined || finite(r[f]), `${r.name}: ${f} ${String(r[f])}`);
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
      checkErrors(`${r.name} ${r.target}`, r.requests, r.errors, r.errorSamples);
      assert.ok(Array.isArray(r.flags), `${r.name} ${r.target}: flags`);
      assert.equal((r.flags as string[]).includes('errors'), (r.errors as number) > 0, `${r.name} ${r.target}: the errors flag`);
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
    // Reports come every 0.25 s of a 1.5 s soak; a generator starved of CPU may skip some.
    assert.ok(intervals.length >= 1, 'periodic reports');
    for (const i of intervals) assert.ok(finite(i.rssMiB) && (i.rssMiB as number) > 0);
    checkErrors('soak', soak.totalRequests, soak.errors, soak.errorSamples);
    for (const f of ['rssStartMiB', 'rssEndMiB', 'rssPeakMiB', 'p99Ms', 'serverUsPerReq', 'genUsPerReq']) assert.ok(finite(soak[f]), f);
  });
});
