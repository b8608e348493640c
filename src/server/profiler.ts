/**
 * Profiling of the running node (`/v1/debug/pprof`, the SDK's StartProfiling, ProfilingStatus
 * and StopProfiling): one session per node at a time, bounded in time (it stops by itself
 * after {@link DEFAULT_MAX_DURATION_MS}) and in size.
 *
 * The SDK's options are Go runtime profiles; here each one means what comes closest in Node.js:
 *
 * | query (SDK field) | Go | here | file |
 * |---|---|---|---|
 * | `cpu=true` (CPU) | CPU profile | V8 CPU profiler (node:inspector `Profiler`), 1 ms sampling | `cpu.cpuprofile` (Chrome DevTools, speedscope) |
 * | `heap=true` (Heap) | heap profile | V8 sampling heap profiler (`HeapProfiler.startSampling`, one sample per 32 KiB allocated) | `heap.heapprofile` (Chrome DevTools) |
 * | `thread=runtime` (Goroutine) | goroutine profile | the runtime's live work: `process.getActiveResourcesInfo()` (sockets, timers, file and crypto requests, …) sampled every second | `resources.json` |
 * | `thread=os` (Thread) | OS thread creation | the process's threads and native resources: a diagnostic report (`process.report`: libuv handles, thread-pool and worker-thread usage, native stack, limits) at the end, environment removed | `report.json` |
 * | `thread=all` | both | both | both |
 * | `block=N` (BlockRate) | goroutine blocking, one sample per N ns blocked | event-loop blocking: `perf_hooks.monitorEventLoopDelay` with a resolution of N ns (at least 1 ms, at most 1 s), and the event-loop utilization | `eventloop.json` |
 * | `mutex=N` (MutexFraction) | mutex contention | **refused (400)**: JavaScript runs on one thread and has no mutexes; event-loop blocking (`block`) is what contention looks like here | — |
 *
 * Every archive also holds `profile.json` (the options, times, Node.js version, memory and
 * resource usage at start and stop) and `README.txt` (what each file is and how to open it).
 * The archive is a POSIX tar, gzip-compressed.
 */
import { gzipSync } from 'node:zlib';
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks';
import type { Session } from 'node:inspector/promises';
import { KmsError } from '../errors.js';
import type { MessageInit } from '../protocol/schema.js';
import type { ProfileStatusResponse } from '../protocol/messages.js';
import { VERSION } from '../version.js';
import { clip, type Logger } from './log.js';
import { writeTar, type TarEntry } from './tar.js';

/** A session stops by itself after this long. */
export const DEFAULT_MAX_DURATION_MS = 5 * 60_000;
/** Results nobody downloads are dropped after this long, so that a new session can start. */
export const DEFAULT_RESULT_TTL_MS = 15 * 60_000;
/** Largest uncompressed file in the archive; a larger profile is replaced by a note. */
export const DEFAULT_MAX_ENTRY_BYTES = 128 << 20;
/** CPU sampling interval (µs). */
const CPU_SAMPLING_US = 1000;
/** Heap sampling interval (bytes allocated per sample): V8's default. */
const HEAP_SAMPLING_BYTES = 32 << 10;
/** How often `thread=runtime` samples the active resources. */
const RESOURCE_SAMPLE_MS = 1000;
/** Bounds of the event-loop delay resolution (ms). */
const MIN_RESOLUTION_MS = 1;
const MAX_RESOLUTION_MS = 1000;

/** What to profile (parsed from the query of `POST /v1/debug/pprof`). */
export interface ProfileOptions {
  readonly cpu: boolean;
  readonly heap: boolean;
  /** `thread=runtime|all` (the SDK's Goroutine). */
  readonly runtime: boolean;
  /** `thread=os|all` (the SDK's Thread). */
  readonly os: boolean;
  /** `block=N` in ns (0: off). */
  readonly blockRate: number;
}

const BOOL = new Map([
  ['true', true],
  ['false', false],
  ['1', true],
  ['0', false],
]);

/**
 * The options of `?cpu=B&heap=B[&thread=all|runtime|os][&block=N][&mutex=N]`, exactly as the
 * SDK sends them; anything else is refused with a 400 that says why.
 */
export function parseProfileQuery(q: URLSearchParams): ProfileOptions {
  const bad = (why: string) => new KmsError('ERR_PROFILE_OPTION', clip(why));
  const seen = new Set<string>();
  for (const k of q.keys()) {
    if (seen.has(k)) throw bad(`'${k}' given more than once`);
    seen.add(k);
    if (!['cpu', 'heap', 'thread', 'block', 'mutex'].includes(k))
      throw bad(`unknown option '${k}' (known: cpu, heap, thread, block; mutex has no meaning in Node.js)`);
  }
  const bool = (k: string): boolean => {
    const v = q.get(k);
    if (v === null) return false;
    const b = BOOL.get(v.toLowerCase());
    if (b === undefined) throw bad(`${k}=${v}: expected true or false`);
    return b;
  };
  const cpu = bool('cpu');
  const heap = bool('heap');
  const thread = q.get('thread');
  let runtime = false;
  let os = false;
  if (thread !== null) {
    if (thread === 'all') runtime = os = true;
    else if (thread === 'runtime') runtime = true;
    else if (thread === 'os') os = true;
    else throw bad(`thread=${thread}: expected all, runtime or os`);
  }
  let blockRate = 0;
  const block = q.get('block');
  if (block !== null) {
    if (!/^\d{1,10}$/.test(block) || Number(block) < 1 || Number(block) > 0x7fffffff)
      throw bad(`block=${block}: expected a number of nanoseconds from 1 to 2147483647`);
    blockRate = Number(block);
  }
  if (q.has('mutex')) {
    throw bad(
      'mutex profiling has no meaning in Node.js: JavaScript runs on one thread without mutexes; ' +
        'use block=N to see what blocks the event loop',
    );
  }
  if (!cpu && !heap && !runtime && !os && blockRate === 0) throw bad('nothing to profile: enable cpu, heap, thread or block');
  return { cpu, heap, runtime, os, blockRate };
}

/** The event-loop delay resolution (ms) for a Go block rate (ns). */
export function resolutionMs(blockRate: number): number {
  return Math.min(MAX_RESOLUTION_MS, Math.max(MIN_RESOLUTION_MS, Math.round(blockRate / 1e6)));
}

interface Running {
  readonly kind: 'running';
  readonly options: ProfileOptions;
  readonly started: Date;
  readonly t0: number;
  readonly session: Session | undefined;
  readonly delay: IntervalHistogram | undefined;
  readonly elu: EventLoopUtilization | undefined;
  readonly resources: { t: number; counts: Record<string, number> }[];
  readonly sampler: NodeJS.Timeout | undefined;
  readonly auto: NodeJS.Timeout;
  readonly startUsage: { memory: NodeJS.MemoryUsage; resources: NodeJS.ResourceUsage };
}

interface Finished {
  readonly kind: 'finished';
  readonly options: ProfileOptions;
  readonly started: Date;
  /** The gzip'd tar archive. */
  readonly archive: Buffer;
  readonly expires: NodeJS.Timeout;
}

type State = { readonly kind: 'idle' } | { readonly kind: 'starting'; readonly options: ProfileOptions } | Running | Finished;

export interface ProfilerOptions {
  readonly log: Logger;
  readonly maxDurationMs?: number;
  readonly resultTtlMs?: number;
  readonly maxEntryBytes?: number;
}

export class Profiler {
  readonly #log: Logger;
  readonly #maxDurationMs: number;
  readonly #resultTtlMs: number;
  readonly #maxEntryBytes: number;
  #state: State = { kind: 'idle' };
  /** The collection in progress (an auto-stop and a DELETE share it). */
  #collecting: Promise<Finished> | undefined;

  constructor(opts: ProfilerOptions) {
    this.#log = opts.log;
    this.#maxDurationMs = opts.maxDurationMs ?? DEFAULT_MAX_DURATION_MS;
    this.#resultTtlMs = opts.resultTtlMs ?? DEFAULT_RESULT_TTL_MS;
    this.#maxEntryBytes = opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES;
  }

  /** What runs (or ran and waits to be downloaded); all unset when idle. */
  status(): MessageInit<ProfileStatusResponse> {
    const st = this.#state;
    if (st.kind !== 'running' && st.kind !== 'finished') return {};
    const o = st.options;
    return { started: st.started, cpu: o.cpu, heap: o.heap, goroutine: o.runtime, thread: o.os, blockRate: o.blockRate, mutexFraction: 0 };
  }

  /** Starts a session; refused while one runs or its results wait to be downloaded. */
  async start(options: ProfileOptions): Promise<void> {
    const st = this.#state;
    if (st.kind === 'running' || st.kind === 'starting') throw new KmsError('ERR_PROFILE_RUNNING');
    if (st.kind === 'finished')
      throw new KmsError('ERR_PROFILE_RUNNING', 'its results have not been downloaded yet: stop it (DELETE /v1/debug/pprof) first');
    this.#state = { kind: 'starting', options };
    let session: Session | undefined;
    try {
      if (options.cpu || options.heap) session = await openSession();
      if (options.cpu) {
        await session!.post('Profiler.enable');
        await session!.post('Profiler.setSamplingInterval', { interval: CPU_SAMPLING_US });
        await session!.post('Profiler.start');
      }
      if (options.heap) {
        await session!.post('HeapProfiler.enable');
        await session!.post('HeapProfiler.startSampling', { samplingInterval: HEAP_SAMPLING_BYTES });
      }
    } catch (err) {
      this.#state = { kind: 'idle' };
      session?.disconnect();
      if (err instanceof KmsError) throw err;
      throw new KmsError('ERR_PROFILE_UNAVAILABLE', clip((err as Error).message));
    }
    let delay: IntervalHistogram | undefined;
    if (options.blockRate > 0) {
      delay = monitorEventLoopDelay({ resolution: resolutionMs(options.blockRate) });
      delay.enable();
    }
    const resources: Running['resources'] = [];
    let sampler: NodeJS.Timeout | undefined;
    if (options.runtime) {
      const sample = () => {
        const counts: Record<string, number> = {};
        for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
        resources.push({ t: Date.now(), counts });
      };
      sample();
      sampler = setInterval(sample, RESOURCE_SAMPLE_MS);
      sampler.unref();
    }
    const auto = setTimeout(() => {
      this.#log.info('profiling stopped after its maximum duration; the results wait to be downloaded', {
        maxDurationMs: this.#maxDurationMs,
      });
      void this.#collect(true).catch((err: unknown) => this.#log.error('collecting the profiles failed', { err: (err as Error).message }));
    }, this.#maxDurationMs);
    auto.unref();
    this.#state = {
      kind: 'running',
      options,
      started: new Date(),
      t0: performance.now(),
      session,
      delay,
      elu: options.blockRate > 0 ? performance.eventLoopUtilization() : undefined,
      resources,
      sampler,
      auto,
      startUsage: { memory: process.memoryUsage(), resources: process.resourceUsage() },
    };
    this.#log.info('profiling started', { ...options });
  }

  /** Stops the session (if it still runs) and hands out its results: a gzip'd tar archive. */
  async stop(): Promise<Buffer> {
    const st = this.#state;
    if (st.kind === 'starting') throw new KmsError('ERR_PROFILE_RUNNING', 'it is still starting');
    if (st.kind === 'idle') throw new KmsError('ERR_PROFILE_NOT_STARTED');
    const finished = st.kind === 'finished' ? st : await this.#collect(false);
    clearTimeout(finished.expires);
    if (this.#state === finished) this.#state = { kind: 'idle' };
    this.#log.info('profiling results downloaded', { bytes: finished.archive.length });
    return finished.archive;
  }

  /** Stops a running session and drops every result (server shutdown). */
  async close(): Promise<void> {
    const st = this.#state;
    if (st.kind === 'running') {
      clearTimeout(st.auto);
      clearInterval(st.sampler);
      st.delay?.disable();
      st.session?.disconnect();
    }
    if (st.kind === 'finished') clearTimeout(st.expires);
    this.#state = { kind: 'idle' };
  }

  #collect(auto: boolean): Promise<Finished> {
    this.#collecting ??= this.#doCollect(auto).finally(() => (this.#collecting = undefined));
    return this.#collecting;
  }

  async #doCollect(auto: boolean): Promise<Finished> {
    const st = this.#state;
    if (st.kind !== 'running') throw new KmsError('ERR_PROFILE_NOT_STARTED');
    clearTimeout(st.auto);
    clearInterval(st.sampler);
    const o = st.options;
    const entries: TarEntry[] = [];
    const mtime = new Date();
    const notes: string[] = [];
    const add = (name: string, text: string) => {
      const data = Buffer.from(text, 'utf8');
      if (data.length > this.#maxEntryBytes) {
        notes.push(`${name} was dropped: ${data.length} bytes exceed the limit of ${this.#maxEntryBytes}`);
        entries.push({ name: `${name}.dropped.txt`, data: Buffer.from(`${notes.at(-1)!}\nProfile for a shorter time.\n`), mtime });
        return;
      }
      entries.push({ name, data, mtime });
    };
    try {
      if (o.cpu && st.session) {
        const { profile } = await st.session.post('Profiler.stop');
        await st.session.post('Profiler.disable');
        add('cpu.cpuprofile', JSON.stringify(profile));
      }
      if (o.heap && st.session) {
        const { profile } = await st.session.post('HeapProfiler.stopSampling');
        await st.session.post('HeapProfiler.disable');
        add('heap.heapprofile', JSON.stringify(profile));
      }
    } catch (err) {
      notes.push(`the V8 profiler failed: ${(err as Error).message}`);
    } finally {
      st.session?.disconnect();
    }
    if (o.runtime) {
      const counts: Record<string, number> = {};
      for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
      st.resources.push({ t: Date.now(), counts });
      add(
        'resources.json',
        JSON.stringify(
          {
            description: 'process.getActiveResourcesInfo() by type, sampled every second (the goroutine profile of Node.js)',
            intervalMs: RESOURCE_SAMPLE_MS,
            samples: st.resources.map((s) => ({ time: new Date(s.t).toISOString(), counts: s.counts })),
          },
          null,
          1,
        ),
      );
    }
    if (o.blockRate > 0 && st.delay) {
      st.delay.disable();
      const h = st.delay;
      const elu = performance.eventLoopUtilization(st.elu);
      add(
        'eventloop.json',
        JSON.stringify(
          {
            description:
              'event-loop delay (perf_hooks.monitorEventLoopDelay): how late timers of the given resolution fired, i.e. how long the loop was blocked; nanoseconds',
            blockRateNs: o.blockRate,
            resolutionMs: resolutionMs(o.blockRate),
            delayNs: {
              count: h.count,
              min: h.min,
              max: h.max,
              mean: Number.isNaN(h.mean) ? 0 : h.mean,
              stddev: Number.isNaN(h.stddev) ? 0 : h.stddev,
              exceeds: h.exceeds,
              percentiles: Object.fromEntries([...h.percentiles].map(([p, v]) => [String(p), v])),
            },
            utilization: { idleMs: elu.idle, activeMs: elu.active, utilization: elu.utilization },
          },
          null,
          1,
        ),
      );
    }
    if (o.os) {
      const report = process.report.getReport() as unknown as Record<string, unknown>;
      withoutEnvironment(report);
      add('report.json', JSON.stringify(report, null, 1));
    }
    const stopped = new Date();
    add(
      'profile.json',
      JSON.stringify(
        {
          server: `minkms ${VERSION}`,
          node: process.version,
          pid: process.pid,
          options: { ...o, mutexFraction: 0 },
          started: st.started.toISOString(),
          stopped: stopped.toISOString(),
          durationMs: Math.round(performance.now() - st.t0),
          autoStopped: auto,
          maxDurationMs: this.#maxDurationMs,
          cpuSamplingIntervalUs: o.cpu ? CPU_SAMPLING_US : undefined,
          heapSamplingIntervalBytes: o.heap ? HEAP_SAMPLING_BYTES : undefined,
          atStart: st.startUsage,
          atStop: { memory: process.memoryUsage(), resources: process.resourceUsage() },
          notes,
        },
        null,
        1,
      ),
    );
    entries.push({ name: 'README.txt', data: Buffer.from(README), mtime });
    const archive = gzipSync(writeTar(entries));
    const expires = setTimeout(() => {
      if (this.#state === finished) {
        this.#state = { kind: 'idle' };
        this.#log.warn('profiling results were not downloaded and have been dropped', { ttlMs: this.#resultTtlMs });
      }
    }, this.#resultTtlMs);
    expires.unref();
    const finished: Finished = { kind: 'finished', options: o, started: st.started, archive, expires };
    this.#state = finished;
    this.#log.info('profiling stopped', { durationMs: Math.round(performance.now() - st.t0), bytes: archive.length });
    return finished;
  }
}

/**
 * Removes the environment from a diagnostic report: it holds MINIO_KMS_HSM_KEY, never to be
 * handed out. Each worker thread (the crypto pool's) has a whole report of its own, with a copy
 * of the environment, under `workers`.
 */
export function withoutEnvironment(report: Record<string, unknown>): void {
  delete report.environmentVariables;
  const workers = report.workers;
  if (Array.isArray(workers)) {
    for (const w of workers) if (w !== null && typeof w === 'object') withoutEnvironment(w as Record<string, unknown>);
  }
}

async function openSession(): Promise<Session> {
  let mod: typeof import('node:inspector/promises');
  try {
    mod = await import('node:inspector/promises');
  } catch (err) {
    throw new KmsError('ERR_PROFILE_UNAVAILABLE', clip((err as Error).message));
  }
  const session = new mod.Session();
  session.connect();
  return session;
}

const README = `minkms profiling results
========================

cpu.cpuprofile    V8 CPU profile (1 ms sampling). Open it in Chrome DevTools (Performance
                  panel, "Load profile"), in https://www.speedscope.app, or in VS Code.
heap.heapprofile  V8 sampling heap profile: where the memory still in use was allocated.
                  Open it in Chrome DevTools (Memory panel, "Load").
resources.json    thread=runtime: the process's active resources (sockets, timers, pending
                  file/crypto requests) by type, sampled every second.
report.json       thread=os: a Node.js diagnostic report at the end (libuv handles, thread
                  pool and worker threads, native stack, resource usage, limits); the
                  environment is removed.
eventloop.json    block=N: the event-loop delay histogram (how long the loop was blocked)
                  and its utilization.
profile.json      the options, times, memory and resource usage at start and stop.

Go's mutex profile has no Node.js counterpart (JavaScript runs on one thread).
`;
