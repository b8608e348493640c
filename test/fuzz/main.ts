/**
 * `npm run fuzz`: every fuzz target of test/fuzz for a large number of inputs in total
 * (default 1,000,000, shared between the targets by their weight), each target in a worker
 * thread watched for hangs, and a summary per target: inputs, crashes, hangs, the largest CPU
 * time of one input, and what the inputs led to.
 *
 * Environment:
 * - `MINKMS_FUZZ_RUNS`: total inputs (default 1000000).
 * - `MINKMS_FUZZ_SEED`: base seed (default: a random one, printed first).
 * - `MINKMS_FUZZ_TARGET`: a regular expression on target names.
 * - `MINKMS_FUZZ_REPLAY`: `NAME@SEED:PATH`, as printed with a failure: replays that one input.
 * - `MINKMS_FUZZ_JOBS`: targets run at once (default 1; the machine is shared).
 * - `MINKMS_FUZZ_HANG_MS`: an input running this long (wall time) is a hang (default 10000): the
 *   worker is stopped, the input's seed and index are printed, and the run goes on.
 * - `MINKMS_FUZZ_REPORT`: also write the summary as JSON to this file.
 *
 * Exit code 1 if any target other than a known bug (see `FuzzTarget.knownBug`) crashed or hung.
 */
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  formatFailure,
  parseReplay,
  replayCommand,
  runTarget,
  seedFor,
  selectTargets,
  type FailureReport,
  type FuzzTarget,
} from '../helpers/fuzz.js';
import { configTargets } from './config.js';
import { frameTargets } from './frames.js';
import { identityTargets } from './identity.js';
import { policyTargets } from './policy.js';
import { protobufTargets } from './protobuf.js';

const ALL: readonly FuzzTarget[] = [...frameTargets, ...protobufTargets, ...policyTargets, ...configTargets, ...identityTargets];

/** Runs per fast-check call in a worker: a failure ends its batch, the next goes on with the next seed. */
const BATCH = 20_000;

interface Job {
  name: string;
  runs: number;
  seed: number;
  /** [inputs started, seed of the current batch, index of the current input in it]. */
  progress: SharedArrayBuffer;
}

/** What a worker sends back (TargetStats made cloneable). */
interface Result {
  name: string;
  inputs: number;
  crashes: number;
  slow: number;
  fuzzerErrors: number;
  maxMs: number;
  outcomes: Record<string, number>;
  failures: FailureReport[];
  hangs: number;
  wallMs: number;
  knownBug?: string;
}

function byName(name: string): FuzzTarget {
  const t = ALL.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target ${name}`);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Worker

async function work(job: Job): Promise<void> {
  const progress = new Int32Array(job.progress);
  const t = byName(job.name);
  const stats = await runTarget(t, {
    runs: job.runs,
    seed: job.seed,
    batch: BATCH,
    // A known bug fails often: keep going, so that the target still gets its share of inputs.
    maxFailures: t.knownBug ? Number.MAX_SAFE_INTEGER : 20,
    onInput: (seed, index) => {
      progress[1] = seed;
      progress[2] = index;
      Atomics.add(progress, 0, 1);
    },
  });
  const result: Omit<Result, 'hangs' | 'wallMs'> = {
    name: stats.name,
    inputs: stats.inputs,
    crashes: stats.crashes,
    slow: stats.slow,
    fuzzerErrors: stats.fuzzerErrors,
    maxMs: stats.maxMs,
    outcomes: Object.fromEntries(stats.outcomes.counts),
    failures: stats.failures,
  };
  parentPort!.postMessage(result);
}

// ---------------------------------------------------------------------------------------------
// Main

const hangMs = Number(process.env.MINKMS_FUZZ_HANG_MS ?? 10_000);
const STARTUP_GRACE_MS = 120_000;

/** Runs one target in a worker; a hang stops the worker and is reported with its input. */
function runInWorker(t: FuzzTarget, runs: number, seed: number): Promise<Result> {
  const started = Date.now();
  const progress = new SharedArrayBuffer(12);
  const view = new Int32Array(progress);
  const worker = new Worker(new URL(import.meta.url), { workerData: { name: t.name, runs, seed, progress } satisfies Job });
  return new Promise((resolve) => {
    let last = -1;
    let lastChange = Date.now();
    let done = false;
    const finish = (r: Omit<Result, 'hangs' | 'wallMs' | 'knownBug'>, hangs: number) => {
      if (done) return;
      done = true;
      clearInterval(watch);
      resolve({ ...r, hangs, wallMs: Date.now() - started, knownBug: t.knownBug });
    };
    const partial = (failure: FailureReport) => ({
      name: t.name,
      inputs: Atomics.load(view, 0),
      crashes: 1,
      slow: 0,
      fuzzerErrors: 0,
      maxMs: NaN,
      outcomes: {},
      failures: [failure],
    });
    const watch = setInterval(() => {
      const n = Atomics.load(view, 0);
      if (n !== last) {
        last = n;
        lastChange = Date.now();
        return;
      }
      // Before the first input, the worker loads modules and sets the target up: on a busy
      // machine that alone can take seconds, so it gets a longer grace.
      if (Date.now() - lastChange < (n === 0 ? Math.max(hangMs, STARTUP_GRACE_MS) : hangMs)) return;
      // Hung on input `index` of the batch with seed `seed`: fast-check's path for it is the index.
      const s = Atomics.load(view, 1);
      const path = String(Math.max(0, Atomics.load(view, 2)));
      void worker.terminate();
      finish(
        partial({
          target: t.name,
          seed: s,
          path,
          counterexample: '(the input the worker was stuck on: replay it)',
          error: `hang: no progress for ${hangMs} ms`,
          replay: replayCommand(t.name, s, path),
        }),
        1,
      );
    }, 1000);
    worker.once('message', (r: Result) => finish(r, 0));
    worker.once('error', (err) =>
      finish(
        partial({
          target: t.name,
          seed: Atomics.load(view, 1),
          path: String(Atomics.load(view, 2)),
          counterexample: '(the worker died)',
          error: err.stack ?? String(err),
          replay: replayCommand(t.name, Atomics.load(view, 1), String(Atomics.load(view, 2))),
        }),
        0,
      ),
    );
    worker.once('exit', (code) => {
      if (!done && code !== 0) {
        finish(
          partial({
            target: t.name,
            seed: Atomics.load(view, 1),
            path: String(Atomics.load(view, 2)),
            counterexample: '(the worker exited)',
            error: `worker exit code ${code}`,
            replay: replayCommand(t.name, Atomics.load(view, 1), String(Atomics.load(view, 2))),
          }),
          0,
        );
      }
    });
  });
}

function table(results: readonly Result[]): string {
  const rows = [['target', 'inputs', 'crashes', 'hangs', '>100ms', 'fc errors', 'max ms/input', 'wall s', 'outcomes']];
  for (const r of results) {
    const outcomes = Object.entries(r.outcomes)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    rows.push([
      r.name + (r.knownBug ? ' (known bug)' : ''),
      String(r.inputs),
      String(r.crashes),
      String(r.hangs),
      String(r.slow),
      String(r.fuzzerErrors),
      Number.isNaN(r.maxMs) ? '-' : r.maxMs.toFixed(2),
      (r.wallMs / 1000).toFixed(1),
      outcomes,
    ]);
  }
  const total = results.reduce(
    (a, r) => ({
      inputs: a.inputs + r.inputs,
      crashes: a.crashes + r.crashes,
      hangs: a.hangs + r.hangs,
      slow: a.slow + r.slow,
      fc: a.fc + r.fuzzerErrors,
      max: Math.max(a.max, r.maxMs || 0),
      wall: a.wall + r.wallMs,
    }),
    { inputs: 0, crashes: 0, hangs: 0, slow: 0, fc: 0, max: 0, wall: 0 },
  );
  rows.push([
    'TOTAL',
    String(total.inputs),
    String(total.crashes),
    String(total.hangs),
    String(total.slow),
    String(total.fc),
    total.max.toFixed(2),
    (total.wall / 1000).toFixed(1),
    '',
  ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

async function main(): Promise<void> {
  const replay = parseReplay(process.env.MINKMS_FUZZ_REPLAY);
  if (replay) {
    const stats = await runTarget(byName(replay.name), { runs: 1, seed: replay.seed, path: replay.path });
    if (stats.failures.length === 0) console.log(`${replay.name}@${replay.seed}:${replay.path}: the property holds for this input`);
    for (const f of stats.failures) console.log(formatFailure(f));
    process.exitCode = stats.failures.length > 0 ? 1 : 0;
    return;
  }
  const total = Number(process.env.MINKMS_FUZZ_RUNS ?? 1_000_000);
  const base = process.env.MINKMS_FUZZ_SEED ? Number(process.env.MINKMS_FUZZ_SEED) : randomInt(2 ** 31);
  const jobs = Math.max(1, Number(process.env.MINKMS_FUZZ_JOBS ?? 1));
  const targets = selectTargets(ALL);
  const weights = targets.reduce((a, t) => a + t.weight, 0);
  console.log(
    `minkms fuzz: ${total} inputs over ${targets.length} targets, base seed ${base} (MINKMS_FUZZ_SEED=${base} reruns this), ${jobs} at a time`,
  );

  const results: Result[] = [];
  const queue = [...targets];
  const runner = async () => {
    for (let t = queue.shift(); t; t = queue.shift()) {
      const runs = Math.max(1, Math.round((total * t.weight) / weights));
      const r = await runInWorker(t, runs, seedFor(t.name, base));
      results.push(r);
      console.log(
        `  ${r.name}: ${r.inputs} inputs, ${r.crashes} crashes, ${r.hangs} hangs, max ${Number.isNaN(r.maxMs) ? '-' : r.maxMs.toFixed(2)} ms/input, ${(r.wallMs / 1000).toFixed(1)} s${r.knownBug ? ' (known bug)' : ''}`,
      );
    }
  };
  await Promise.all(Array.from({ length: jobs }, runner));
  results.sort((a, b) => targets.findIndex((t) => t.name === a.name) - targets.findIndex((t) => t.name === b.name));

  console.log('\n' + table(results));
  const failures = results.flatMap((r) => r.failures.map((f) => ({ f, known: r.knownBug })));
  if (failures.length > 0) {
    console.log('\nFailures:');
    for (const { f, known } of failures) console.log('\n' + formatFailure(f) + (known ? `\n  (known bug: ${known})` : ''));
  }
  if (process.env.MINKMS_FUZZ_REPORT) writeFileSync(process.env.MINKMS_FUZZ_REPORT, JSON.stringify({ total, base, results }, null, 2));
  const unexpected = results.filter((r) => !r.knownBug && (r.crashes > 0 || r.hangs > 0));
  process.exitCode = unexpected.length > 0 ? 1 : 0;
}

if (isMainThread) await main();
else await work(workerData as Job);
