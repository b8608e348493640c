/**
 * The fuzz harness shared by the property-based fuzzers (`test/fuzz/*`): a target is a
 * fast-check arbitrary plus a function that runs one input and throws when a property is
 * violated. The harness adds what every target needs, so that targets only state properties:
 *
 * - **seeds**: every run is seeded; a failure names the target, the seed and fast-check's
 *   counterexample path, and the exact command that replays it (`MINKMS_FUZZ_REPLAY`);
 * - **time**: every input is timed (CPU time, see {@link cpuMs}); one that takes more than
 *   {@link SLOW_MS} is run twice more and fails the property if the fastest of the three is still
 *   slow (one slow run can be a garbage collection, three in a row are the input);
 * - **counts**: inputs, crashes, slow inputs, the largest time per input, and an outcome tally
 *   (which errors the module answered with) per target.
 *
 * Two run modes use it: a brief, fixed-seed run inside `npm test` ({@link registerFuzzTests}) and
 * `npm run fuzz` (test/fuzz/main.ts) for ≥ 1,000,000 inputs in worker threads with a hang
 * watchdog.
 *
 * Environment (both modes):
 * - `MINKMS_FUZZ_SEED`: base seed (an integer). `npm test` uses a fixed one unless set.
 * - `MINKMS_FUZZ_TARGET`: a regular expression; only targets whose name matches run.
 * - `MINKMS_FUZZ_REPLAY`: `NAME@SEED:PATH`, as printed on a failure: replays that counterexample only.
 * - `MINKMS_FUZZ_SCALE`: multiplies the `npm test` run counts (default 1).
 * - `MINKMS_FUZZ_SLOW_MS`: the per-input time bound (default 100).
 */
import { test } from 'node:test';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { ERRORS, KmsError, type ErrorCode } from '../../src/errors.js';

/** Per-input time bound, in ms. */
export const SLOW_MS = Number(process.env.MINKMS_FUZZ_SLOW_MS ?? 100);

/** The fixed base seed of `npm test` runs (any integer; changing it explores other inputs). */
const DEFAULT_TEST_SEED = 0x6d6b6d73; // "mkms"

/** Tally of what a target's inputs led to (`ok`, an error code, a class name, …). */
export class Outcomes {
  readonly counts = new Map<string, number>();

  add(label: string): void {
    this.counts.set(label, (this.counts.get(label) ?? 0) + 1);
  }
}

export interface FuzzTarget<T = unknown> {
  /** `module.what`, e.g. `frames.parse.mutated`. */
  readonly name: string;
  readonly arbitrary: fc.Arbitrary<T>;
  /**
   * Runs one input; throws (an assertion error, or an unexpected error let through) when a
   * property does not hold. May be async (the Kms-level targets write to a store).
   */
  readonly run: (input: T, outcomes: Outcomes) => void | Promise<void>;
  /** Whether `run` returns a promise. */
  readonly async?: boolean;
  /** Inputs in the brief `npm test` run. */
  readonly quickRuns: number;
  /** Share of the `npm run fuzz` total, relative to the other targets (cheap targets get more). */
  readonly weight: number;
  /** Called once before the first input (e.g. to open a store). */
  readonly setup?: () => Promise<void>;
  /** Called once after the last input. */
  readonly teardown?: () => Promise<void>;
  /**
   * A bug known and owned elsewhere that this target still finds: the `npm test` run is
   * reported as a TODO (shown with its counterexample, not failing the suite) and `npm run
   * fuzz` lists its crashes apart. Remove it once the fix has landed.
   */
  readonly knownBug?: string;
  /**
   * Called after the last input (not on a replay): returns a problem with the run as a whole
   * (e.g. a message schema no input reached), which counts as a failure.
   */
  readonly finish?: (stats: TargetStats) => string | undefined;
}

/** Builds a target with its input type inferred from the arbitrary. */
export function target<T>(t: FuzzTarget<T>): FuzzTarget<unknown> {
  return t as unknown as FuzzTarget<unknown>;
}

export interface FailureReport {
  readonly target: string;
  readonly seed: number;
  readonly path: string;
  readonly counterexample: string;
  readonly error: string;
  /** The command that replays it. */
  readonly replay: string;
}

export interface TargetStats {
  readonly name: string;
  inputs: number;
  crashes: number;
  /** Inputs slower than SLOW_MS on three tries (each is also a crash). */
  slow: number;
  /** Batches in which fast-check itself threw outside the property (not a finding; see runTarget). */
  fuzzerErrors: number;
  /** Largest CPU time of one input (for a slow first try: the fastest of its three tries), ms. */
  maxMs: number;
  readonly outcomes: Outcomes;
  readonly failures: FailureReport[];
}

export function newStats(name: string): TargetStats {
  return { name, inputs: 0, crashes: 0, slow: 0, fuzzerErrors: 0, maxMs: 0, outcomes: new Outcomes(), failures: [] };
}

// ---------------------------------------------------------------------------------------------
// Assertions shared by the targets

/** Thrown by a target when a property does not hold. */
export class PropertyViolation extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PropertyViolation';
  }
}

export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new PropertyViolation(typeof message === 'string' ? message : message());
}

/** Short printable form of a value for failure messages. */
export function show(v: unknown, max = 300): string {
  const s = inspect(v, { depth: 4, maxArrayLength: 20, maxStringLength: max, breakLength: Infinity });
  return s.length > max * 2 ? s.slice(0, max * 2) + '…' : s;
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return `non-Error thrown: ${show(err)}`;
}

/**
 * Asserts that `err` is a catalogued {@link KmsError}: its code is in the catalogue, its status
 * and message are the catalogue's (the message may carry a `: detail`), and — if `codes` is
 * given — its code is one of them; without `codes`, any catalogued client error (4xx) will do.
 * Returns the code (for the outcome tally).
 */
export function expectKmsError(err: unknown, codes?: readonly ErrorCode[]): ErrorCode {
  if (!(err instanceof KmsError)) throw new PropertyViolation(`expected a KmsError, got ${describeError(err)}`, { cause: err });
  const entry = (ERRORS as Record<string, readonly [number, string]>)[err.code];
  check(entry !== undefined, () => `KmsError with an uncatalogued code ${err.code}`);
  check(entry[0] === err.status, () => `KmsError ${err.code}: status ${err.status}, catalogue says ${entry[0]}`);
  check(
    err.message === entry[1] || err.message.startsWith(entry[1] + ': '),
    () => `KmsError ${err.code}: message ${show(err.message)} is not the catalogue's ${show(entry[1])}`,
  );
  if (codes) check(codes.includes(err.code), () => `KmsError ${err.code} (${err.message}), want one of ${codes.join(', ')}`);
  else check(err.status >= 400 && err.status < 500, () => `KmsError ${err.code} has status ${err.status}, want a 4xx`);
  return err.code;
}

/** Asserts that `err` is exactly of class `cls` (the module's documented error class). Returns its name. */
export function expectErrorClass(err: unknown, cls: abstract new (...args: never[]) => Error): string {
  if (!(err instanceof cls) || err.constructor !== cls) {
    throw new PropertyViolation(`expected a ${cls.name}, got ${describeError(err)}`, { cause: err });
  }
  return cls.name;
}

export type Attempt<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Runs `fn`, returning its value or what it threw. */
export function attempt<T>(fn: () => T): Attempt<T> {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Like {@link attempt} for a function that may throw synchronously or reject. */
export async function attemptAsync<T>(fn: () => T | Promise<T>): Promise<Attempt<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

// ---------------------------------------------------------------------------------------------
// Running

/**
 * CPU time (user + system) since `start`, in ms. Inputs are timed in CPU time, not wall time:
 * on a shared 2-core machine under load, wall time says more about the neighbours than about the
 * input, while an input that makes the parser work hard shows in CPU time wherever it runs. (A
 * true hang is caught by the watchdog of `npm run fuzz` and by the test timeout.)
 */
function cpuMs(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

/** Seed of a target: the base seed mixed with the target's name, so targets explore independently. */
export function seedFor(name: string, base: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return (h ^ base) | 0;
}

export interface RunOptions {
  runs: number;
  /** Seed of the first batch; batch i uses seed + i. */
  seed: number;
  /** Runs per fast-check call; a failure ends its batch, and the next batch goes on. Default: all in one. */
  batch?: number;
  /** Replay one counterexample (`seed` is then its seed). */
  path?: string;
  /** Stop after this many failures (default 20). Only the first 20 are kept in the report. */
  maxFailures?: number;
  /** Called before each input (the watchdog of `npm run fuzz` counts them). */
  onInput?: (batchSeed: number, indexInBatch: number) => void;
}

/** The command that replays a failure. */
export function replayCommand(name: string, seed: number, path: string): string {
  return `npm run build && MINKMS_FUZZ_REPLAY='${name}@${seed}:${path}' node dist/test/fuzz/main.js`;
}

/** Runs a target for `runs` inputs (or one replay) and returns its counts; never throws for a failing property. */
export async function runTarget(t: FuzzTarget, opts: RunOptions): Promise<TargetStats> {
  const stats = newStats(t.name);
  if (t.setup) await t.setup();
  const batch = Math.max(1, opts.batch ?? opts.runs);
  let batchSeed = opts.seed;
  let index = 0;

  // A slow input is tried twice more; the fastest of the three counts (see the module doc).
  const account = (ms: number): void => {
    if (ms > stats.maxMs) stats.maxMs = ms;
    if (ms > SLOW_MS) {
      stats.slow++;
      throw new PropertyViolation(`input took ${ms.toFixed(1)} ms of CPU on each of three tries (bound: ${SLOW_MS} ms)`);
    }
  };

  const syncProperty = fc.property(t.arbitrary, (input) => {
    opts.onInput?.(batchSeed, index++);
    stats.inputs++;
    const once = () => {
      const t0 = process.cpuUsage();
      t.run(input, stats.outcomes);
      return cpuMs(t0);
    };
    let ms = once();
    for (let i = 0; i < 2 && ms > SLOW_MS; i++) ms = Math.min(ms, once());
    account(ms);
  });
  const asyncProperty = fc.asyncProperty(t.arbitrary, async (input) => {
    opts.onInput?.(batchSeed, index++);
    stats.inputs++;
    const once = async () => {
      const t0 = process.cpuUsage();
      await t.run(input, stats.outcomes);
      return cpuMs(t0);
    };
    let ms = await once();
    for (let i = 0; i < 2 && ms > SLOW_MS; i++) ms = Math.min(ms, await once());
    account(ms);
  });

  const record = (details: fc.RunDetails<[unknown]>, seed: number) => {
    if (!details.failed) return;
    stats.crashes++;
    if (stats.failures.length >= 20) return; // enough evidence; keep the report readable
    const path = details.counterexamplePath ?? '';
    stats.failures.push({
      target: t.name,
      seed,
      path,
      counterexample: details.counterexample ? show(details.counterexample[0], 2000) : '(none)',
      error: details.interrupted ? 'interrupted' : describeError(details.errorInstance),
      replay: replayCommand(t.name, seed, path),
    });
  };

  try {
    if (opts.path !== undefined) {
      const params = { seed: opts.seed, path: opts.path, numRuns: 1, endOnFailure: false };
      const details = t.async ? await fc.check(asyncProperty, params) : fc.check(syncProperty, params);
      record(details as fc.RunDetails<[unknown]>, opts.seed);
      return stats;
    }
    // A failure ends fast-check's run; go on with the next seed until the inputs are done (or
    // too many batches failed outright, which only a property failing on every input does).
    for (let b = 0; stats.inputs < opts.runs && b < 1000 + opts.runs / batch; b++) {
      batchSeed = (opts.seed + b) | 0;
      index = 0;
      const numRuns = Math.min(batch, opts.runs - stats.inputs);
      const params = { seed: batchSeed, numRuns };
      try {
        const details = t.async ? await fc.check(asyncProperty, params) : fc.check(syncProperty, params);
        record(details as fc.RunDetails<[unknown]>, batchSeed);
      } catch (err) {
        // fast-check itself threw outside the property — seen while shrinking values with null
        // prototypes. Not a finding about the code under test (counted apart), but the failure
        // that started the shrinking is one: run the batch again without shrinking to report it.
        stats.fuzzerErrors++;
        if (stats.fuzzerErrors <= 3)
          console.error(`${t.name}: fast-check failed outside the property (seed ${batchSeed}): ${describeError(err)}`);
        const before = stats.inputs;
        index = 0;
        const again = { ...params, endOnFailure: true };
        try {
          record((t.async ? await fc.check(asyncProperty, again) : fc.check(syncProperty, again)) as fc.RunDetails<[unknown]>, batchSeed);
        } catch {
          // nothing more to learn from this batch
        }
        stats.inputs = before; // the rerun's inputs were counted once already
      }
      if (stats.crashes >= (opts.maxFailures ?? 20)) break;
    }
    const problem = t.finish?.(stats);
    if (problem !== undefined) {
      stats.crashes++;
      stats.failures.push({
        target: t.name,
        seed: opts.seed,
        path: '',
        counterexample: '(the run as a whole)',
        error: problem,
        replay: '',
      });
    }
    return stats;
  } finally {
    await t.teardown?.();
  }
}

/** A failure report as printed by both modes. */
export function formatFailure(f: FailureReport): string {
  return [
    `target ${f.target}: property failed (seed ${f.seed}, path ${f.path})`,
    `  counterexample: ${f.counterexample}`,
    `  error: ${f.error.split('\n').slice(0, 12).join('\n         ')}`,
    `  replay: ${f.replay}`,
  ].join('\n');
}

/** Parses `MINKMS_FUZZ_REPLAY` (`NAME@SEED:PATH`). */
export function parseReplay(text: string | undefined): { name: string; seed: number; path: string } | undefined {
  if (!text) return undefined;
  const m = /^(.+)@(-?\d+):([\d:]+)$/.exec(text.trim());
  if (!m) throw new Error(`MINKMS_FUZZ_REPLAY must be NAME@SEED:PATH, got '${text}'`);
  return { name: m[1]!, seed: Number(m[2]), path: m[3]! };
}

/** The targets selected by `MINKMS_FUZZ_TARGET` (all without it). */
export function selectTargets(targets: readonly FuzzTarget[]): FuzzTarget[] {
  const filter = process.env.MINKMS_FUZZ_TARGET;
  if (!filter) return [...targets];
  const re = new RegExp(filter);
  return targets.filter((t) => re.test(t.name));
}

/**
 * Registers one `node:test` test per target: the brief, seeded run of `npm test`. A failure's
 * message carries the counterexample, the seed and the replay command.
 */
export function registerFuzzTests(targets: readonly FuzzTarget[]): void {
  const base = process.env.MINKMS_FUZZ_SEED ? Number(process.env.MINKMS_FUZZ_SEED) : DEFAULT_TEST_SEED;
  const scale = Number(process.env.MINKMS_FUZZ_SCALE ?? 1);
  const replay = parseReplay(process.env.MINKMS_FUZZ_REPLAY);
  for (const t of selectTargets(targets)) {
    if (replay && replay.name !== t.name) continue;
    const runs = Math.max(1, Math.round(t.quickRuns * scale));
    test(`fuzz ${t.name} (${runs} inputs)`, { todo: t.knownBug }, async (ctx) => {
      const stats = await runTarget(
        t,
        replay ? { runs: 1, seed: replay.seed, path: replay.path } : { runs, seed: seedFor(t.name, base), maxFailures: 1 },
      );
      const tally = [...stats.outcomes.counts].map(([k, v]) => `${k}=${v}`).join(' ');
      ctx.diagnostic(`${t.name}: ${stats.inputs} inputs, ${stats.crashes} crashes, max ${stats.maxMs.toFixed(2)} ms/input; ${tally}`);
      if (stats.failures.length > 0) throw new Error(stats.failures.map(formatFailure).join('\n\n'));
      if (!replay && stats.inputs < runs) throw new Error(`${t.name}: only ${stats.inputs} of ${runs} inputs ran`);
    });
  }
}
