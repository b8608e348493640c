/**
 * A worker process's side of the channel to its node's primary (docs/workers.md): the store
 * (every call answered by the primary, which owns the database), the change feed (the writes of
 * the other workers, acknowledged once applied), and the node-wide parts of observability: one
 * audit log written by the primary, the other workers' log records and finished requests for
 * this worker's streams, and scrapes merged over every worker.
 */
import {
  StoreFullError,
  StoreUnavailableError,
  type Condition,
  type CommitResult,
  type Mutation,
  type Store,
  type StoreEntry,
  type StagedCommit,
  type StoreHealth,
} from '../../store/store.js';
import type { StoreEvent } from '../../store/etcd.js';
import type { FeedSource } from '../cluster.js';
import type { AuditEvent, AuditSink } from '../audit.js';
import type { LogRing } from '../log.js';
import type { FinishedRequest } from '../observability.js';
import type { MetricsKind } from '../observability.js';
import type { StoreCall, ToPrimary, ToWorker, WireError } from './messages.js';

/** How long a store call may wait for the primary (it answers in microseconds unless it is gone). */
const CALL_TIMEOUT_MS = 30_000;
/** Audit events are sent in batches: one message per event loop turn, not per line. */
const AUDIT_BATCH = 512;

/** Sends a message; false when the channel's backlog is long (or it is closed). */
type Send = (m: ToPrimary) => boolean;
/** How long best-effort messages (log records, finished requests) are dropped after a long backlog. */
const CONGESTED_MS = 100;

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export interface WorkerHooks {
  /** This worker's own exposition of `kind`. */
  scrape(kind: MetricsKind): Promise<string>;
  /** Read the configuration again (SIGHUP to the node). */
  reload(): void;
  /** Drain (at most `drainMs`) and exit: the node stops or restarts. */
  stop(drainMs: number): void;
  /** A finished request of another worker, for this worker's KES audit streams. */
  finished(r: FinishedRequest): void;
}

export class WorkerLink {
  readonly #send: Send;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  /** Staged commits waiting to be durable and applied by every worker. */
  readonly #durables = new Map<number, Pending>();
  #hooks: WorkerHooks | undefined;
  #onEvents: ((events: StoreEvent[]) => void | PromiseLike<unknown>) | undefined;
  #ring: LogRing | undefined;
  #auditBatch: AuditEvent[] = [];
  #wantsFinished = false;
  /** What the others' streams want (kept until the ring is attached). */
  #remoteLogLevel = Infinity;
  /** This worker's own open streams of finished requests. */
  #finishedStreams = 0;
  #closed = false;
  #health: StoreHealth = { write: 'ok', since: 0, detail: '', fullErrors: 0 };

  constructor(send: Send) {
    this.#send = send;
  }

  /** Connects what the primary may ask of this worker (before it sends anything that asks). */
  attach(hooks: WorkerHooks): void {
    this.#hooks = hooks;
  }

  /** Handles one message from the primary. */
  receive(m: ToWorker): void {
    switch (m.t) {
      case 'reply':
        settle(this.#pending, m.id, m.error, m.value);
        return;
      case 'durable':
        settle(this.#durables, m.id, m.error);
        return;
      case 'events': {
        const onEvents = this.#onEvents;
        if (!onEvents || m.events.length === 0) return;
        const rev = m.events[m.events.length - 1]!.rev;
        // Acknowledged once applied: the writer's answer waits for it (docs/workers.md).
        void Promise.resolve(onEvents([...m.events])).then(() => this.#post({ t: 'ack', rev }));
        return;
      }
      case 'ping':
        this.#post({ t: 'pong' });
        return;
      case 'log':
        this.#ring?.publish(m.entry, m.store, true);
        return;
      case 'finished':
        this.#hooks?.finished(m.request);
        return;
      case 'wants':
        this.#remoteLogLevel = m.logLevel;
        if (this.#ring) this.#ring.remoteLevel = m.logLevel;
        this.#wantsFinished = m.finished;
        return;
      case 'scrape': {
        const hooks = this.#hooks;
        const answer = (text: string) => this.#post({ t: 'scraped', id: m.id, text });
        if (!hooks) answer('');
        else hooks.scrape(m.kind).then(answer, () => answer(''));
        return;
      }
      case 'health':
        this.#health = m.health;
        (this.audit as { errors: number }).errors = m.auditErrors;
        return;
      case 'reload':
        this.#hooks?.reload();
        return;
      case 'stop':
        this.#hooks?.stop(m.drainMs);
        return;
    }
  }

  /**
   * Sends `m` to the primary. Best-effort messages (records for the others' streams) are
   * dropped while the channel is backed up: what the store and the audit log need goes first,
   * and a flood of log records must not grow this process's send queue without bound.
   */
  #post(m: ToPrimary, bestEffort = false): void {
    if (this.#closed) return;
    if (bestEffort && performance.now() < this.#congestedUntil) return;
    try {
      if (!this.#send(m)) this.#congestedUntil = performance.now() + CONGESTED_MS;
    } catch {
      // The channel is gone: the primary exited, and so will this worker.
    }
  }

  #congestedUntil = 0;

  #call<T>(c: StoreCall, id = this.#nextId++): Promise<T> {
    if (this.#closed) return Promise.reject(new StoreUnavailableError('store: this worker is stopping'));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        // A commit sent may have been applied: the caller must re-read, not assume.
        reject(new StoreUnavailableError('store: the primary did not answer', { ambiguous: c.op === 'commit' || c.op === 'stage' }));
      }, CALL_TIMEOUT_MS);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.#post({ t: 'call', id, ...c });
    });
  }

  /** The node's store, owned by the primary. */
  readonly store: Store = {
    kind: 'sqlite',
    get: (key: string) => this.#call<StoreEntry | undefined>({ op: 'get', key }),
    range: (prefix: string) => this.#call<StoreEntry[]>({ op: 'range', prefix }),
    commit: (conditions: readonly Condition[], mutations: readonly Mutation[]) =>
      this.#call<CommitResult>({ op: 'commit', conditions, mutations }),
    stage: (conditions: readonly Condition[], mutations: readonly Mutation[]) => this.#stage(conditions, mutations),
    health: () => this.#health,
    close: async () => {},
  };

  async #stage(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<StagedCommit> {
    const id = this.#nextId++;
    const durable = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#durables.delete(id);
        reject(new StoreUnavailableError('store: the primary did not answer', { ambiguous: true }));
      }, CALL_TIMEOUT_MS);
      this.#durables.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
    });
    // Marked handled here; whoever awaits it still sees the rejection.
    durable.catch(() => undefined);
    let res: CommitResult;
    try {
      res = await this.#call<CommitResult>({ op: 'stage', conditions, mutations }, id);
    } catch (err) {
      settle(this.#durables, id);
      throw err;
    }
    // Nothing staged: nothing to wait for.
    if (!res.ok) settle(this.#durables, id);
    return { ...res, durable };
  }

  /** The other workers' writes, in revision order (server/cluster.ts `ChangeFeed`). */
  readonly feed: FeedSource = {
    currentRevision: () => this.#call<number>({ op: 'revision' }),
    watch: (_prefix, onChange, options) => {
      this.#onEvents = onChange;
      // The replay of the changes from `fromRev` arrives before the answer and is applied in
      // order (not awaited here: a root key change in it waits for the unsealing that follows).
      return {
        ready: this.#call<void>({ op: 'watch', fromRev: options.fromRev }),
        close: async () => {
          if (this.#onEvents === onChange) this.#onEvents = undefined;
        },
      };
    },
  };

  /** The node's audit log: lines go to the primary, which writes the one hash chain. */
  readonly audit: AuditSink = {
    records: 0,
    errors: 0,
    append: (e: AuditEvent) => {
      (this.audit as { records: number }).records++;
      this.#auditBatch.push(e);
      if (this.#auditBatch.length === 1) setImmediate(() => this.#flushAudit());
      else if (this.#auditBatch.length >= AUDIT_BATCH) this.#flushAudit();
    },
    flush: () => this.#flushAudit(),
    close: () => this.#flushAudit(),
  };

  #flushAudit(): void {
    if (this.#auditBatch.length === 0) return;
    const events = this.#auditBatch;
    this.#auditBatch = [];
    this.#post({ t: 'audit', events });
  }

  /**
   * Shares this worker's log records with the others (stored ones always, for their `since`
   * queries; the rest when a stream of another worker wants them) and receives theirs.
   */
  attachLog(ring: LogRing): void {
    this.#ring = ring;
    ring.remoteLevel = this.#remoteLogLevel;
    ring.forward = (entry, store) => {
      if (store || entry.level >= ring.remoteLevel) this.#post({ t: 'log', entry, store }, true);
    };
    ring.onLocalLevel = () => this.#wants();
  }

  /** A finished request of this worker, for the KES audit streams of the others. */
  finished(r: FinishedRequest): void {
    if (this.#wantsFinished) this.#post({ t: 'finished', request: r }, true);
  }

  /** Tells the primary what this worker's own streams want (the log level, finished requests). */
  #wants(): void {
    const ring = this.#ring;
    this.#post({ t: 'wants', logLevel: ring ? ring.localLevel : Infinity, finished: this.#finishedStreams > 0 });
  }

  /** This worker opened (+1) or closed (-1) a stream of finished requests. */
  finishedStreams(delta: number): void {
    this.#finishedStreams += delta;
    this.#wants();
  }

  /** Every worker's exposition of `kind` (this one's included), for one merged scrape. */
  scrapeAll(kind: MetricsKind): Promise<string[]> {
    return this.#call<string[]>({ op: 'scrape', kind });
  }

  print(line: string): void {
    this.#post({ t: 'print', line });
  }

  restart(reason: string): void {
    this.#post({ t: 'restart', reason });
  }

  /** Fails what waits for the primary (the worker stops). */
  close(): void {
    this.#flushAudit();
    this.#closed = true;
    for (const waiting of [this.#pending, this.#durables]) {
      for (const [id, p] of waiting) {
        clearTimeout(p.timer);
        p.reject(new StoreUnavailableError('store: this worker is stopping', { ambiguous: true }));
        waiting.delete(id);
      }
    }
  }
}

/** Takes entry `id` out of `waiting` (if still there) and settles it: rejected with `error`, else resolved with `value`. */
function settle(waiting: Map<number, Pending>, id: number, error?: WireError, value?: unknown): void {
  const p = waiting.get(id);
  if (!p) return;
  waiting.delete(id);
  clearTimeout(p.timer);
  if (error) p.reject(reviveError(error));
  else p.resolve(value);
}

function reviveError(e: WireError): Error {
  if (e.name === 'StoreUnavailableError') return new StoreUnavailableError(e.message, { ambiguous: e.ambiguous === true });
  if (e.name === 'StoreFullError') return new StoreFullError(e.message);
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

/** A store error as it crosses the channel. */
export function wireError(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  return { name: e.name, message: e.message, ...(e instanceof StoreUnavailableError ? { ambiguous: e.ambiguous } : {}) };
}
