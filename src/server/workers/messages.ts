/**
 * The messages between the primary process of a node and its worker processes
 * (`minkms server --workers N`, docs/workers.md), sent over the IPC channel of `node:cluster`
 * with the `advanced` serialization (Buffers arrive as Buffers).
 *
 * Worker → primary: store calls (answered by `reply` with the same id), the change feed's
 * watch and acknowledgements, audit events, log records and finished requests for the other
 * workers' streams, banner lines, scrapes of the node's metrics, and a restart request.
 * Primary → worker: replies, store changes, the others' log records and finished requests, how
 * much of them the others want, scrape requests, and reload and stop.
 */
import type { Condition, Mutation, StoreHealth } from '../../store/store.js';
import type { StoreEvent } from '../../store/etcd.js';
import type { AuditEvent } from '../audit.js';
import type { LogEntry } from '../log.js';
import type { FinishedRequest, MetricsKind } from '../observability.js';

export type StoreCall =
  | { readonly op: 'get'; readonly key: string }
  | { readonly op: 'range'; readonly prefix: string }
  | { readonly op: 'revision' }
  | { readonly op: 'commit'; readonly conditions: readonly Condition[]; readonly mutations: readonly Mutation[] }
  /** Answered when applied (`{ ok, rev }`); a `durable` message with the same id follows once durable and applied by every worker. */
  | { readonly op: 'stage'; readonly conditions: readonly Condition[]; readonly mutations: readonly Mutation[] }
  /** Starts (or replaces) the worker's change feed from `fromRev`; answered after the replay. */
  | { readonly op: 'watch'; readonly fromRev: number }
  | { readonly op: 'scrape'; readonly kind: MetricsKind };

export type ToPrimary =
  | ({ readonly t: 'call'; readonly id: number } & StoreCall)
  /** Every change up to `rev` is applied to the worker's state. */
  | { readonly t: 'ack'; readonly rev: number }
  | { readonly t: 'audit'; readonly events: readonly AuditEvent[] }
  | { readonly t: 'log'; readonly entry: LogEntry; readonly store: boolean }
  | { readonly t: 'finished'; readonly request: FinishedRequest }
  /** The lowest log level this worker's own streams want, and whether it streams finished requests. */
  | { readonly t: 'wants'; readonly logLevel: number; readonly finished: boolean }
  | { readonly t: 'print'; readonly line: string }
  | { readonly t: 'scraped'; readonly id: number; readonly text: string }
  | { readonly t: 'restart'; readonly reason: string }
  | { readonly t: 'pong' };

/** A store error, as it crosses the channel (classes do not). */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly ambiguous?: boolean;
}

export type ToWorker =
  | { readonly t: 'reply'; readonly id: number; readonly value?: unknown; readonly error?: WireError }
  /** The staged commit `id` is durable and every worker applied it (or it failed). */
  | { readonly t: 'durable'; readonly id: number; readonly error?: WireError }
  | { readonly t: 'events'; readonly events: readonly StoreEvent[] }
  | { readonly t: 'log'; readonly entry: LogEntry; readonly store: boolean }
  | { readonly t: 'finished'; readonly request: FinishedRequest }
  /** What the other workers' streams want from this one. */
  | { readonly t: 'wants'; readonly logLevel: number; readonly finished: boolean }
  /** The database's health changed (a full disk), for readiness and writes. */
  | { readonly t: 'health'; readonly health: StoreHealth; readonly auditErrors: number }
  | { readonly t: 'scrape'; readonly id: number; readonly kind: MetricsKind }
  | { readonly t: 'reload' }
  /** Drain (for `drainMs` at most) and exit. */
  | { readonly t: 'stop'; readonly drainMs: number }
  | { readonly t: 'ping' };

/** What the primary tells a worker at fork (environment variable `MINKMS_WORKER`). */
export interface WorkerInit {
  readonly index: number;
  readonly count: number;
  /** The data directory the primary prepared (in dev mode: its temporary one). */
  readonly dir: string;
  /**
   * Listen only once following the store (every worker but the first one's first start), so
   * that no worker serves a state without a write the others acknowledged while it loaded.
   */
  readonly listenLate: boolean;
  /** Dev mode: the primary deletes `dir` when it stops. */
  readonly dev: boolean;
  /** In dev mode: the ephemeral soft HSM key the primary generated, the same for every worker. */
  readonly devHsmKey?: string;
}

export const WORKER_ENV = 'MINKMS_WORKER';
