/**
 * Restarts (`POST /v1/debug/restart`, the SDK's Restart; `minkms restart`):
 *
 * - **`?self`**: this node's process restarts. It stops accepting connections, lets the
 *   requests in flight finish (HTTP/2 sessions get a GOAWAY, so clients move to another node
 *   without losing a request), closes everything, and hands over to whoever owns the process
 *   (server/compose.ts → cli/server.ts: a re-exec of the same command line, or exit status 75
 *   for systemd and containers; see docs/deploy.md "Restarts").
 * - **without `?self`** on a node of an etcd cluster: a rolling restart of the whole cluster,
 *   coordinated by the node that got the request. The other nodes restart one at a time; each
 *   is waited for until it is back (a new start time in its membership snapshot, unsealed, its
 *   copy of the state fresh) before the next one goes, and the coordinator restarts itself
 *   last, after its answer. Before each step the cluster must be whole: every member up,
 *   unsealed and fresh, and etcd writable — so at most one node is ever down and the cluster
 *   keeps its write quorum (etcd's) throughout; otherwise the restart stops with a 503 that
 *   says why. One rolling restart at a time per cluster (a lock in etcd under a lease).
 *
 *   The nodes need no authentication among themselves: the coordinator records a request in
 *   etcd under the cluster's namespace (`<prefix>restart/node/<id>`), and each node watches for
 *   requests for its own id.
 * - **without `?self`** on a single node with the embedded store: the node restarts itself.
 */
import { randomBytes } from 'node:crypto';
import type { Lease, Watcher } from 'etcd3';
import { KmsError } from '../errors.js';
import type { KmsNode } from './node.js';
import type { NodeSnapshot } from './membership.js';
import { clip, type Logger } from './log.js';

/** How long the coordinator waits for one node to come back. */
export const DEFAULT_NODE_TIMEOUT_MS = 120_000;
/** How often the coordinator looks at the membership while it waits. */
const POLL_MS = 200;
/**
 * How long a member that is up but not serving yet (it just unsealed, its store probe has not
 * answered yet) is waited for before a restart is refused: it publishes its state every heartbeat.
 */
const SETTLE_MS = 10_000;
/** The lock's lease: it outlives a coordinator that dies by at most this long. */
const LOCK_TTL_S = 10;
/** Bound of one etcd call of the coordinator (the client has no deadline of its own). */
const ETCD_CALL_MS = 5_000;
/** The request watch is set up again after this long when etcd cannot be reached. */
const WATCH_RETRY_MS = 2_000;

/** What the process owner offers: restart this process (drain, close, start again). */
export interface SelfRestart {
  /** Whether anyone owns the process and can start it again (cli/server.ts does). */
  readonly supported: boolean;
  /** Drains and hands the process over to its owner, once; later calls do nothing. */
  request(reason: string): void;
}

/** One node restarted by a rolling restart. */
export interface RestartedNode {
  readonly id: number;
  readonly host: string;
  /** From the request to the node being ready again. */
  readonly ms: number;
}

interface RestartRequest {
  id: number;
  token: string;
  by: number;
  at: string;
}

function withDeadline<T>(p: Promise<T>, what: string, ms = ETCD_CALL_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new KmsError('ERR_STORE_UNAVAILABLE', `${what}: no answer from etcd within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** Whether a node's snapshot says it serves: unsealed, and its copy of the state current. */
function serving(n: NodeSnapshot): boolean {
  const store = n.store?.state;
  return !n.sealed && (store === undefined || store === 'fresh' || store === 'ok');
}

export class RestartService {
  readonly #node: KmsNode;
  readonly #log: Logger;
  readonly #self: SelfRestart;
  readonly #nodeTimeoutMs: number;
  #watcher: Watcher | undefined;
  #watchTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: { node: KmsNode; log: Logger; self: SelfRestart; nodeTimeoutMs?: number }) {
    this.#node = opts.node;
    this.#log = opts.log;
    this.#self = opts.self;
    this.#nodeTimeoutMs = opts.nodeTimeoutMs ?? DEFAULT_NODE_TIMEOUT_MS;
  }

  get selfSupported(): boolean {
    return this.#self.supported;
  }

  /** Restarts this node (after the caller's answer is out). */
  restartSelf(reason: string): void {
    if (!this.#self.supported) throw new KmsError('ERR_RESTART_UNSUPPORTED');
    this.#self.request(reason);
  }

  #prefix(): string {
    return `${this.#node.cluster!.store.prefix}restart/`;
  }

  /** In a cluster: follows the restart requests recorded for this node (until `close`). */
  start(): void {
    // A process that cannot restart itself (`--restart-mode off`, embedded) has nothing to follow:
    // a coordinator that asks it times out (504), naming it.
    if (!this.#node.cluster || this.#closed || !this.#self.supported) return;
    const client = this.#node.cluster.store.client;
    client
      .watch()
      .prefix(`${this.#prefix()}node/`)
      .create()
      .then(
        (watcher) => {
          if (this.#closed) return void watcher.cancel().catch(() => undefined);
          this.#watcher = watcher;
          watcher.on('put', (kv) => this.#requested(kv.key.toString(), kv.value.toString()));
          watcher.on('error', (err) => {
            this.#log.warn('watch for restart requests failed; setting it up again', { err: clip(err.message) });
            this.#watcher = undefined;
            void watcher.cancel().catch(() => undefined);
            this.#retryWatch();
          });
        },
        (err: unknown) => {
          if (this.#closed) return;
          this.#log.warn('cannot watch for restart requests yet; retrying', { err: clip((err as Error).message) });
          this.#retryWatch();
        },
      );
  }

  #retryWatch(): void {
    if (this.#closed) return;
    clearTimeout(this.#watchTimer);
    this.#watchTimer = setTimeout(() => this.start(), WATCH_RETRY_MS);
    this.#watchTimer.unref();
  }

  #requested(key: string, value: string): void {
    const mine = this.#node.cluster?.membership?.id;
    if (mine === undefined || key !== `${this.#prefix()}node/${mine}`) return;
    let req: RestartRequest;
    try {
      req = JSON.parse(value) as RestartRequest;
    } catch {
      this.#log.warn('ignoring a malformed restart request', { key: clip(key) });
      return;
    }
    this.#log.info('restarting: requested by the rolling restart of the cluster', { coordinator: req.by, token: req.token });
    this.#self.request(`rolling restart of the cluster (coordinated by node ${req.by})`);
  }

  /**
   * The rolling restart of every other node of the cluster, one at a time, each waited for.
   * The caller restarts this node afterwards (after its answer). Throws why it cannot start
   * or had to stop; nodes restarted so far stay restarted.
   */
  async restartOthers(): Promise<RestartedNode[]> {
    const cluster = this.#node.cluster;
    const membership = cluster?.membership;
    if (!cluster || !membership) throw new KmsError('ERR_STORE_UNAVAILABLE', 'this node has not joined the cluster yet');
    if (!this.#self.supported) throw new KmsError('ERR_RESTART_UNSUPPORTED');
    const client = cluster.store.client;
    const lockKey = `${this.#prefix()}lock`;
    const token = randomBytes(8).toString('hex');
    const lease: Lease = client.lease(LOCK_TTL_S, { autoKeepAlive: true });
    lease.on('lost', () => this.#log.warn('the lock of the cluster restart was lost (etcd unreachable)'));
    try {
      const taken = await withDeadline(
        client
          .if(lockKey, 'Create', '==', 0)
          .then(lease.put(lockKey).value(JSON.stringify({ by: membership.id, token, at: new Date().toISOString() })))
          .commit(),
        'taking the restart lock',
      );
      if (!taken.succeeded) {
        const holder = await withDeadline(client.get(lockKey).string(), 'reading the restart lock').catch(() => null);
        throw new KmsError('ERR_RESTART_RUNNING', holder ? clip(`started by ${holder}`) : undefined);
      }
      const view = await withDeadline(membership.view(), 'reading the membership');
      const others = [...view.up.values()].filter((n) => n.id !== membership.id).sort((a, b) => a.id - b.id);
      this.#log.info('rolling restart of the cluster', {
        coordinator: membership.id,
        order: [...others.map((n) => n.id), membership.id].join(','),
      });
      const done: RestartedNode[] = [];
      for (const target of others) {
        await this.#checkWhole(target.id);
        done.push(await this.#restartOne(target.id, membership.id, token));
      }
      // The coordinator goes last, after its answer: check that it may.
      await this.#checkWhole(membership.id);
      return done;
    } finally {
      await withDeadline(client.delete().key(lockKey).exec(), 'releasing the restart lock').catch(() => undefined);
      await lease.revoke().catch(() => undefined);
    }
  }

  /** Throws unless every member is up and serving and etcd takes writes (`target` is about to go down). */
  async #checkWhole(target: number): Promise<void> {
    const cluster = this.#node.cluster!;
    const settleBy = Date.now() + SETTLE_MS;
    for (;;) {
      const view = await withDeadline(cluster.membership!.view(), 'reading the membership');
      if (view.down.size > 0) {
        const hosts = [...view.down.values()].join(', ');
        throw new KmsError(
          'ERR_RESTART_UNSAFE',
          clip(`node(s) ${hosts} down: restarting another one would leave the cluster short; start them or remove them (minkms rm) first`),
        );
      }
      if (!view.up.has(target)) throw new KmsError('ERR_RESTART_UNSAFE', `node ${target} left the cluster`);
      const notServing = [...view.up.values()].filter((n) => !serving(n));
      if (notServing.length === 0) break;
      if (Date.now() >= settleBy || this.#closed) {
        const list = notServing.map((n) => `${n.host} (${n.sealed ? 'sealed' : `store ${n.store?.state ?? 'unknown'}`})`).join(', ');
        throw new KmsError('ERR_RESTART_UNSAFE', clip(`node(s) ${list} not serving: wait until they are, or fix them first`));
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    if (!(await cluster.writable())) throw new KmsError('ERR_RESTART_UNSAFE', 'the etcd cluster has no write quorum');
  }

  /** Asks node `id` to restart and waits until it is back and serving. */
  async #restartOne(id: number, by: number, token: string): Promise<RestartedNode> {
    const cluster = this.#node.cluster!;
    const client = cluster.store.client;
    const before = (await withDeadline(cluster.membership!.view(), 'reading the membership')).up.get(id)!;
    const key = `${this.#prefix()}node/${id}`;
    const t0 = Date.now();
    const req: RestartRequest = { id, token, by, at: new Date(t0).toISOString() };
    this.#log.info('rolling restart: restarting a node', { node: id, host: before.host });
    await withDeadline(client.put(key).value(JSON.stringify(req)).exec(), 'recording the restart request');
    try {
      const deadline = t0 + this.#nodeTimeoutMs;
      for (;;) {
        if (this.#closed) throw new KmsError('ERR_RESTART_FAILED', 'the coordinator is shutting down');
        const view = await withDeadline(cluster.membership!.view(), 'reading the membership').catch(() => undefined);
        const now = view?.up.get(id);
        if (now && now.startedAt > before.startedAt && serving(now)) {
          const ms = Date.now() - t0;
          this.#log.info('rolling restart: node is back', { node: id, host: now.host, ms });
          return { id, host: now.host, ms };
        }
        if (Date.now() > deadline) {
          const state = !now ? 'down' : now.startedAt > before.startedAt ? (now.sealed ? 'sealed' : 'behind the cluster') : 'not restarted';
          throw new KmsError(
            'ERR_RESTART_FAILED',
            clip(`node ${id} (${before.host}) is ${state} after ${this.#nodeTimeoutMs / 1000} s; the remaining nodes were not restarted`),
          );
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    } finally {
      await withDeadline(client.delete().key(key).exec(), 'removing the restart request').catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#watchTimer);
    await this.#watcher?.cancel().catch(() => undefined);
  }
}
