/**
 * The primary process of a node with several worker processes (`minkms server --workers N`,
 * docs/workers.md). It serves no HTTP: `node:cluster` hands every connection to a worker. It
 * owns what must exist once per node: the database (every write of every worker is committed
 * here, with group commit), the audit log's one hash chain, the fan-in of log records and
 * finished requests between the workers' streams, merged scrapes, and the workers themselves
 * (restarted when one dies).
 *
 * A write is answered only when it is durable **and** every worker that follows the store has
 * applied it: a key created through one worker is usable through every other as soon as its
 * creator has the answer, and a deletion applies everywhere before it is acknowledged. A worker
 * that does not apply a change within {@link ACK_TIMEOUT_MS} is killed and started again (a
 * hung worker must not hold every write, nor serve what was deleted).
 */
import cluster, { type Worker } from 'node:cluster';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../config/config.js';
import { configuredHsms } from '../../hsm/configured.js';
import { generateSoftHsmKey } from '../../hsm/soft.js';
import type { StoreEvent } from '../../store/etcd.js';
import { SqliteStore, SQLITE_FILE } from '../../store/sqlite.js';
import {
  StoreUnavailableError,
  type CommitResult,
  type Condition,
  type Mutation,
  type StagedCommit,
  type StoreHealth,
} from '../../store/store.js';
import { AuditLog } from '../audit.js';
import { clip, type LogEntry, type ServerLogger } from '../log.js';
import type { MetricsKind } from '../observability.js';
import { loadTlsMaterial } from '../tls.js';
import { asConfigError, StartupConfigError } from '../compose.js';
import { BannerLines } from './banner.js';
import { wireError } from './link.js';
import { countersOf, mergeExpositions } from '../metrics-merge.js';
import { WORKER_ENV, type StoreCall, type ToPrimary, type ToWorker, type WorkerInit } from './messages.js';

/**
 * How long the writers wait for a worker to apply a change before the primary checks whether it
 * is alive: a worker that answers a ping within {@link PING_TIMEOUT_MS} is busy (an HSM call
 * while following a root key change, a large restore) and is waited for again, up to
 * {@link ACK_MAX_MS}; one that does not is hung and is killed.
 */
export const ACK_TIMEOUT_MS = 2_000;
const ACK_MAX_MS = 30_000;
/** Every worker is pinged this often, also without writes: a hung one is found and replaced. */
const PING_EVERY_MS = 5_000;
const PING_TIMEOUT_MS = 1_000;
/** Changes kept for workers that start following (a worker that starts or reloads). */
const REPLAY_EVENTS = 10_000;
const REPLAY_BYTES = 32 << 20;
/** How long a scrape waits for the workers' expositions (a missing one is left out). */
const SCRAPE_TIMEOUT_MS = 2_000;
/** How long a stop lets the workers drain before they are killed. */
const STOP_TIMEOUT_MS = 13_000;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5_000;
/** A worker that ran this long was healthy: its next restart starts from the shortest delay. */
const HEALTHY_AFTER_MS = 30_000;
const HEALTH_POLL_MS = 500;
/** How long a stop or a restart lets each worker's requests in flight finish (as a single process). */
const STOP_DRAIN_MS = 2_000;
const RESTART_DRAIN_MS = 10_000;
/** How long best-effort messages to a worker are dropped after its channel backed up. */
const CONGESTED_MS = 100;

export interface PrimaryOptions {
  readonly dir: string;
  readonly dev: boolean;
  readonly config: Config;
  readonly configFile?: string;
  readonly hsmKey?: string;
  readonly auditFile?: string;
  readonly log: ServerLogger;
  readonly print: (line: string) => void;
  readonly workers: number;
  /** Starts the node again once every worker has stopped (see `ServerOptions.restart`). */
  readonly restart?: () => void;
}

export interface RunningPrimary {
  /** SIGHUP: every worker reads the configuration again. */
  reloadConfig(): void;
  close(): Promise<void>;
}

/** One worker process as the primary sees it. */
interface Slot {
  readonly index: number;
  worker: Worker | undefined;
  /** Follows the store (has a watch), so writes wait for its acknowledgement. */
  watching: boolean;
  startedAt: number;
  restartDelay: number;
  logLevel: number;
  finished: boolean;
  /** Until when best-effort messages to it are dropped (its channel was backed up). */
  congestedUntil: number;
  /** When it last answered a ping (or started). */
  aliveAt: number;
  /** Its last expositions, by kind: what a scrape counts for it when it does not answer in time. */
  lastScrape: Map<MetricsKind, string>;
}

interface AckWait {
  readonly rev: number;
  readonly waiting: Set<Slot>;
  readonly resolve: () => void;
  readonly since: number;
  timer: NodeJS.Timeout;
}

interface Scrape {
  readonly kind: MetricsKind;
  /** Workers that have not answered yet. */
  readonly outstanding: Set<Slot>;
  readonly texts: string[];
  readonly done: () => void;
}

/** Prepares the data directory once, then starts the workers. */
export async function startPrimary(opts: PrimaryOptions): Promise<RunningPrimary> {
  process.umask(0o077);
  const { config, log } = opts;
  if (config.store.backend === 'etcd') {
    throw new StartupConfigError('kms: --workers needs the embedded store; with etcd, run one node per process (docs/workers.md)');
  }
  const devDir = opts.dev ? mkdtempSync(join(tmpdir(), 'minkms-dev-')) : undefined;
  const dir = devDir ?? opts.dir;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const configured = opts.configFile !== undefined;
    // What a first start creates — the soft HSM key, the self-signed certificate — is created
    // here, once; the workers find it. In dev mode the HSM key stays in memory: the primary
    // hands the same one to every worker.
    const devHsmKey = opts.dev ? (opts.hsmKey ?? generateSoftHsmKey()) : undefined;
    const fresh = !existsSync(join(dir, SQLITE_FILE));
    const hsms = asConfigError(() =>
      configuredHsms({
        config,
        softKey: devHsmKey ?? opts.hsmKey,
        dir,
        database: join(dir, SQLITE_FILE),
        generate: fresh && !configured,
        ephemeral: false,
        warn: (msg) => log.warn(msg),
      }),
    );
    for (const c of hsms) await c.hsm.close().catch(() => undefined);
    asConfigError(() => loadTlsMaterial(config, dir, configured));
    const auditFile = opts.auditFile ?? config.audit.file;
    const audit = auditFile ? asConfigError(() => AuditLog.open(auditFile)) : undefined;
    const primary = new Primary(opts, new SqliteStore(dir), audit, {
      index: 0,
      count: opts.workers,
      dir,
      dev: opts.dev,
      devHsmKey,
      listenLate: false,
    });
    await primary.start();
    return {
      reloadConfig: () => primary.broadcast({ t: 'reload' }),
      close: async () => {
        await primary.close();
        if (devDir) rmSync(devDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (devDir) rmSync(devDir, { recursive: true, force: true });
    throw err;
  }
}

class Primary {
  readonly #opts: PrimaryOptions;
  readonly #log: ServerLogger;
  readonly #store: SqliteStore;
  readonly #audit: AuditLog | undefined;
  readonly #init: WorkerInit;
  readonly #slots: Slot[];
  /** The durability of the last commit staged: reads wait for it, so no worker loads what could still be lost. */
  #lastStaged: Promise<void> = Promise.resolve();
  /** The changes published lately, oldest first, for workers that start following. */
  readonly #replay: StoreEvent[] = [];
  #replayBytes = 0;
  /** Changes up to this revision are no longer in {@link #replay}. */
  #forgotten = 0;
  readonly #acks = new Set<AckWait>();
  readonly #scrapes = new Map<number, Scrape>();
  #nextScrape = 1;
  #stopping = false;
  #restarting = false;
  #startFailed: ((err: Error) => void) | undefined;
  /** Workers that listened after their first start. */
  #listening = 0;
  #health: StoreHealth;
  #auditErrors = 0;
  readonly #healthTimer: NodeJS.Timeout;
  readonly #pingTimer: NodeJS.Timeout;
  /** Counters of workers that exited, by kind: a merged counter never goes back. */
  readonly #retired = new Map<MetricsKind, string>();
  /** N workers' banners printed as one. */
  readonly #banner = new BannerLines();

  constructor(opts: PrimaryOptions, store: SqliteStore, audit: AuditLog | undefined, init: WorkerInit) {
    this.#opts = opts;
    this.#log = opts.log;
    this.#store = store;
    this.#audit = audit;
    this.#init = init;
    this.#forgotten = store.revision();
    this.#health = store.health();
    this.#slots = Array.from({ length: opts.workers }, (_, index) => ({
      index,
      worker: undefined,
      watching: false,
      startedAt: 0,
      restartDelay: RESTART_MIN_MS,
      logLevel: Infinity,
      finished: false,
      congestedUntil: 0,
      aliveAt: 0,
      lastScrape: new Map(),
    }));
    if (audit) {
      let reported = 0;
      audit.onError = (err) => {
        if (reported++ % 100 === 0) this.#log.error('cannot write the audit log', { file: audit.path, err: err.message });
      };
    }
    // The primary's own records reach the workers' streams too.
    opts.log.ring.forward = (entry, stored) => this.#shareLog(undefined, entry, stored);
    this.#healthTimer = setInterval(() => this.#checkHealth(), HEALTH_POLL_MS).unref();
    this.#pingTimer = setInterval(() => this.#pingAll(), PING_EVERY_MS).unref();
  }

  /**
   * Forks every worker; resolves once one of them listens. A worker that exits before any
   * listens (a configuration it cannot use, an address in use) ends the start: it said why on
   * stderr, and the process exits with its status.
   */
  async start(): Promise<void> {
    cluster.setupPrimary({ serialization: 'advanced' });
    const listening = new Promise<void>((resolve, reject) => {
      this.#startFailed = reject;
      cluster.once('listening', () => {
        this.#startFailed = undefined;
        resolve();
      });
    });
    for (const slot of this.#slots) this.#fork(slot);
    this.#opts.print(`Workers     ${this.#slots.length} processes (pids ${this.#slots.map((s) => s.worker?.process.pid).join(', ')})`);
    try {
      await listening;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  #fork(slot: Slot): void {
    // Only the first worker's first start listens before it unseals (and answers 503 while
    // sealed): every other joins once it follows the store, so that no worker ever answers from
    // a state that misses a write another one acknowledged.
    const restarted = slot.startedAt > 0;
    const init: WorkerInit = { ...this.#init, index: slot.index, listenLate: restarted || slot.index > 0 };
    const worker = cluster.fork({ [WORKER_ENV]: JSON.stringify(init) });
    slot.worker = worker;
    slot.watching = false;
    slot.startedAt = Date.now();
    slot.logLevel = Infinity;
    slot.finished = false;
    slot.aliveAt = Date.now();
    worker.on('message', (m: ToPrimary) => this.#receive(slot, worker, m));
    // What the others' streams want, from its first moment.
    worker.once('online', () => this.#wantsChanged());
    // The channel's own errors (a worker gone mid-send) are answered by its exit.
    worker.on('error', (err) => this.#log.debug('worker channel error', { worker: slot.index, err: err.message }));
    worker.once('exit', (code, signal) => this.#exited(slot, worker, code, signal));
    worker.once('listening', () => {
      if (restarted) this.#log.info('worker process serves again', { worker: slot.index, pid: worker.process.pid });
      else if (++this.#listening === this.#slots.length) this.#opts.print(`=> All ${this.#listening} workers serve`);
    });
  }

  #exited(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    slot.watching = false;
    this.#retire(slot);
    for (const wait of this.#acks) this.#acked(wait, slot);
    this.#wantsChanged();
    if (this.#stopping) return;
    if (this.#startFailed) {
      this.#startFailed(new WorkerStartError(code ?? 1));
      return;
    }
    const healthy = Date.now() - slot.startedAt > HEALTHY_AFTER_MS;
    if (healthy) slot.restartDelay = RESTART_MIN_MS;
    this.#log.error('worker process exited; starting it again', {
      worker: slot.index,
      pid: worker.process.pid,
      code,
      signal,
      restartInMs: slot.restartDelay,
    });
    const delay = slot.restartDelay;
    slot.restartDelay = Math.min(RESTART_MAX_MS, slot.restartDelay * 2);
    setTimeout(() => {
      if (!this.#stopping && !slot.worker) this.#fork(slot);
    }, delay).unref();
  }

  /** Sends `m`; a best-effort one (a record for a stream) is dropped while the worker's channel is backed up. */
  #send(slot: Slot, m: ToWorker, bestEffort = false): void {
    const w = slot.worker;
    if (!w || !w.isConnected()) return;
    if (bestEffort && performance.now() < slot.congestedUntil) return;
    try {
      if (!w.send(m)) slot.congestedUntil = performance.now() + CONGESTED_MS;
    } catch {
      // Gone: its exit is handled.
    }
  }

  broadcast(m: ToWorker): void {
    for (const slot of this.#slots) this.#send(slot, m);
  }

  #receive(slot: Slot, worker: Worker, m: ToPrimary): void {
    if (slot.worker !== worker) return;
    switch (m.t) {
      case 'call':
        if (m.op === 'stage') {
          this.#stage(slot, m.id, m.conditions, m.mutations);
          return;
        }
        this.#call(slot, m).then(
          (value) => this.#send(slot, { t: 'reply', id: m.id, value }),
          (err: unknown) => this.#send(slot, { t: 'reply', id: m.id, error: wireError(err) }),
        );
        return;
      case 'ack':
        for (const wait of this.#acks) if (wait.rev <= m.rev) this.#acked(wait, slot);
        return;
      case 'audit':
        for (const e of m.events) this.#audit?.append(e);
        return;
      case 'log':
        this.#opts.log.ring.publish(m.entry, m.store, true);
        this.#shareLog(slot, m.entry, m.store);
        return;
      case 'finished':
        for (const s of this.#slots) if (s !== slot && s.finished) this.#send(s, { t: 'finished', request: m.request }, true);
        return;
      case 'wants':
        slot.logLevel = m.logLevel;
        slot.finished = m.finished;
        this.#wantsChanged();
        return;
      case 'print':
        this.#print(m.line);
        return;
      case 'pong':
        slot.aliveAt = Date.now();
        return;
      case 'scraped': {
        const scrape = this.#scrapes.get(m.id);
        if (!scrape || !scrape.outstanding.delete(slot)) return;
        scrape.texts.push(m.text);
        slot.lastScrape.set(scrape.kind, m.text);
        if (scrape.outstanding.size === 0) scrape.done();
        return;
      }
      case 'restart':
        this.#restart(m.reason);
        return;
    }
  }

  async #call(slot: Slot, c: StoreCall): Promise<unknown> {
    switch (c.op) {
      case 'get':
        await this.#lastStaged;
        return this.#store.get(c.key);
      case 'range':
        await this.#lastStaged;
        return this.#store.range(c.prefix);
      case 'revision':
        await this.#lastStaged;
        return this.#store.revision();
      case 'commit':
        return this.#commit(c.conditions, c.mutations);
      case 'stage':
        throw new Error('stage is answered twice, not here');
      case 'watch':
        return this.#watch(slot, c.fromRev);
      case 'scrape':
        return this.#scrape(c.kind);
    }
  }

  async #commit(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<CommitResult> {
    const staged = this.#stageHere(conditions, mutations);
    if (staged.ok) await this.#settle(staged, mutations);
    return { ok: staged.ok, rev: staged.rev };
  }

  /**
   * A worker's pipelined write (`Store.stage`): answered as soon as it is applied here, so that
   * the worker's next write can be staged behind it (one sync covers them all), then once
   * more when it is durable and every worker applied it.
   */
  #stage(slot: Slot, id: number, conditions: readonly Condition[], mutations: readonly Mutation[]): void {
    let staged: StagedCommit;
    try {
      staged = this.#stageHere(conditions, mutations);
    } catch (err) {
      this.#send(slot, { t: 'reply', id, error: wireError(err) });
      return;
    }
    this.#send(slot, { t: 'reply', id, value: { ok: staged.ok, rev: staged.rev } });
    if (!staged.ok) return;
    this.#settle(staged, mutations).then(
      () => this.#send(slot, { t: 'durable', id }),
      (err: unknown) => this.#send(slot, { t: 'durable', id, error: wireError(err) }),
    );
  }

  #stageHere(conditions: readonly Condition[], mutations: readonly Mutation[]): StagedCommit {
    if (this.#stopping) throw new StoreUnavailableError('store: the node is stopping');
    const staged = this.#store.stage(conditions, mutations);
    if (staged.ok) this.#lastStaged = staged.durable.catch(() => undefined);
    return staged;
  }

  /** Resolves once `staged` is durable and every following worker applied it. */
  async #settle(staged: StagedCommit, mutations: readonly Mutation[]): Promise<void> {
    await staged.durable;
    if (mutations.length === 0) return;
    // Durable commits resolve in the order they were staged: changes go out in revision order.
    await this.#publish(mutations.map((m) => ({ key: m.key, value: m.value, rev: staged.rev })));
  }

  /** Sends the changes of one commit to every following worker; resolves when each applied them. */
  #publish(events: StoreEvent[]): Promise<void> {
    const rev = events[0]!.rev;
    for (const e of events) {
      this.#replay.push(e);
      this.#replayBytes += e.key.length + (e.value?.length ?? 0);
    }
    while (this.#replay.length > REPLAY_EVENTS || this.#replayBytes > REPLAY_BYTES) {
      const old = this.#replay.shift()!;
      this.#replayBytes -= old.key.length + (old.value?.length ?? 0);
      this.#forgotten = Math.max(this.#forgotten, old.rev);
    }
    const waiting = new Set(this.#slots.filter((s) => s.watching && s.worker));
    for (const s of waiting) this.#send(s, { t: 'events', events });
    if (waiting.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const wait: AckWait = {
        rev,
        waiting,
        resolve,
        since: Date.now(),
        timer: setTimeout(() => this.#ackTimeout(wait), ACK_TIMEOUT_MS),
      };
      this.#acks.add(wait);
    });
  }

  #acked(wait: AckWait, slot: Slot): void {
    if (!wait.waiting.delete(slot) || wait.waiting.size > 0) return;
    clearTimeout(wait.timer);
    this.#acks.delete(wait);
    wait.resolve();
  }

  /**
   * A worker has not applied a change for {@link ACK_TIMEOUT_MS}: if it answers a ping it is
   * busy and waited for again (up to {@link ACK_MAX_MS}); if not, or after that, it is killed —
   * it must not serve what the others no longer do, nor hold every write.
   */
  #ackTimeout(wait: AckWait): void {
    const lagging = [...wait.waiting];
    const sent = Date.now();
    for (const slot of lagging) this.#send(slot, { t: 'ping' });
    wait.timer = setTimeout(() => {
      for (const slot of lagging) {
        if (!wait.waiting.has(slot)) continue;
        const alive = slot.aliveAt >= sent;
        if (alive && Date.now() - wait.since < ACK_MAX_MS) continue;
        this.#kill(slot, !alive, { rev: wait.rev, afterMs: Date.now() - wait.since });
        this.#acked(wait, slot);
      }
      if (wait.waiting.size > 0) wait.timer = setTimeout(() => this.#ackTimeout(wait), ACK_TIMEOUT_MS - PING_TIMEOUT_MS);
    }, PING_TIMEOUT_MS);
  }

  /** Kills a worker that is `hung` (answers no ping) or too slow to apply a change. */
  #kill(slot: Slot, hung: boolean, fields: Record<string, unknown>): void {
    const all = { worker: slot.index, pid: slot.worker?.process.pid, ...fields };
    if (hung) this.#log.error('worker does not answer; killing it', all);
    else this.#log.error('worker did not apply a change in time; killing it', all);
    slot.watching = false;
    slot.worker?.process.kill('SIGKILL');
  }

  /** Pings every worker; one that did not answer the previous ping in time is hung. */
  #pingAll(): void {
    const now = Date.now();
    for (const slot of this.#slots) {
      if (!slot.worker || this.#stopping) continue;
      if (now - slot.aliveAt > PING_EVERY_MS + PING_TIMEOUT_MS) {
        this.#kill(slot, true, { silentMs: now - slot.aliveAt });
        continue;
      }
      this.#send(slot, { t: 'ping' });
    }
  }

  /** A worker (re)starts following from `fromRev`: the changes it may have missed first. */
  async #watch(slot: Slot, fromRev: number): Promise<void> {
    // The worker loads again (its follow fails, its unsealing is retried) rather than serve
    // a state with a gap.
    if (fromRev <= this.#forgotten) throw new Error(`change feed: revision ${fromRev} is no longer kept; loading again`);
    const missed = this.#replay.filter((e) => e.rev >= fromRev);
    if (missed.length > 0) this.#send(slot, { t: 'events', events: missed });
    slot.watching = true;
  }

  /**
   * Every worker's exposition of `kind`. A worker that does not answer in time counts with its
   * last counters, and workers that exited with theirs: the node's counters never go back.
   */
  #scrape(kind: MetricsKind): Promise<string[]> {
    const live = this.#slots.filter((s) => s.worker?.isConnected());
    const id = this.#nextScrape++;
    return new Promise<string[]>((resolve) => {
      const texts: string[] = [];
      const outstanding = new Set(live);
      const done = () => {
        clearTimeout(timer);
        this.#scrapes.delete(id);
        for (const s of outstanding) {
          const last = s.lastScrape.get(kind);
          if (last) texts.push(countersOf(last));
        }
        const retired = this.#retired.get(kind);
        if (retired) texts.push(retired);
        resolve(texts);
      };
      const timer = setTimeout(done, SCRAPE_TIMEOUT_MS);
      this.#scrapes.set(id, { kind, outstanding, texts, done });
      for (const s of live) this.#send(s, { t: 'scrape', id, kind });
    });
  }

  /** Keeps the counters a worker reported last, added to every later scrape. */
  #retire(slot: Slot): void {
    for (const [kind, text] of slot.lastScrape) {
      const before = this.#retired.get(kind);
      this.#retired.set(kind, mergeExpositions(before ? [before, countersOf(text)] : [countersOf(text)]));
    }
    slot.lastScrape.clear();
  }

  #print(line: string): void {
    if (this.#banner.admit(line)) this.#opts.print(line);
  }

  /** Hands a log record to the workers whose streams want it (stored ones to all: `since` reads them). */
  #shareLog(from: Slot | undefined, entry: LogEntry, stored: boolean): void {
    for (const s of this.#slots) {
      if (s === from || !s.worker) continue;
      if (stored || entry.level >= s.logLevel) this.#send(s, { t: 'log', entry, store: stored }, true);
    }
  }

  /** Tells every worker the lowest level the others' streams want, and whether they stream finished requests. */
  #wantsChanged(): void {
    let all = Infinity;
    for (const s of this.#slots) {
      if (!s.worker) continue;
      all = Math.min(all, s.logLevel);
      let logLevel = Infinity;
      let finished = false;
      for (const o of this.#slots) {
        if (o === s || !o.worker) continue;
        logLevel = Math.min(logLevel, o.logLevel);
        finished ||= o.finished;
      }
      this.#send(s, { t: 'wants', logLevel, finished });
    }
    this.#opts.log.ring.remoteLevel = all;
  }

  #checkHealth(): void {
    const h = this.#store.health();
    const auditErrors = this.#audit?.errors ?? 0;
    if (h.write === this.#health.write && h.fullErrors === this.#health.fullErrors && auditErrors === this.#auditErrors) return;
    this.#health = h;
    this.#auditErrors = auditErrors;
    this.broadcast({ t: 'health', health: h, auditErrors });
  }

  /** `POST /v1/debug/restart` on any worker: the whole node drains and starts again. */
  #restart(reason: string): void {
    if (this.#restarting || this.#stopping || !this.#opts.restart) return;
    this.#restarting = true;
    this.#log.warn('restarting: stopping every worker, then starting again', { reason: clip(reason) });
    this.#opts.print(`=> Restarting: ${clip(reason)}`);
    const restart = this.#opts.restart;
    // Started again even if a step of the stop failed: the node must not stay without workers.
    void this.close()
      .catch((err: unknown) => this.#log.error('stopping for the restart failed', { err: (err as Error).message }))
      .then(restart);
  }

  async close(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    clearInterval(this.#healthTimer);
    clearInterval(this.#pingTimer);
    const exits = this.#slots
      .map((s) => s.worker)
      .filter((w): w is Worker => w !== undefined)
      .map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    // A planned restart lets every worker's requests in flight finish; a stop drains briefly.
    this.broadcast({ t: 'stop', drainMs: this.#restarting ? RESTART_DRAIN_MS : STOP_DRAIN_MS });
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.all(exits).then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), STOP_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (!drained) {
      this.#log.warn('workers did not stop in time; killing them');
      for (const s of this.#slots) s.worker?.process.kill('SIGKILL');
      await Promise.all(exits);
    }
    for (const wait of this.#acks) {
      clearTimeout(wait.timer);
      wait.resolve();
    }
    this.#audit?.close();
    await this.#store.close();
  }
}

/** A worker exited before the node listened; it printed why. */
export class WorkerStartError extends Error {
  override readonly name = 'WorkerStartError';
  readonly status: number;

  constructor(status: number) {
    super(`a worker process exited with status ${status} while starting`);
    this.status = status;
  }
}
