/**
 * What a node does when its store is an etcd cluster shared with other nodes: follow the
 * changes the others make (a watch on the whole namespace, applied to the in-memory state in
 * revision order), register in the membership, and tell whether a write quorum is reachable.
 *
 * Freshness: a node applies another node's write as soon as etcd delivers the watch event
 * (milliseconds on a LAN; see docs/clustering.md for measurements); its own writes are applied
 * when acknowledged, so its next read sees them.
 */
import type { EtcdStore, StoreEvent, StoreWatch } from '../store/etcd.js';
import { isRootKeyRecord, CLUSTER_KEY } from '../hsm/root-key.js';
import type { Kms } from '../kms/kms.js';
import type { Logger } from './log.js';
import { Membership, type ClusterView, type NodeSnapshot } from './membership.js';

/** What the change feed does with each change; none of them throws (they own their errors). */
export interface ClusterHooks {
  /** The node's current domain state, if unsealed. */
  kms(): Kms | undefined;
  /** The sealed root key entries changed (another node added/removed an HSM or rotates the root key). */
  rootChanged(): Promise<void>;
  /** A record outside the domain changed (the root identity). */
  recordChanged(path: string, value: Buffer | undefined): void;
  /** The state could not be followed (e.g. a compacted watch): reload everything. */
  resync(): Promise<void>;
}

/** Records of the domain (kms/records.ts paths). */
function isDomainRecord(key: string): boolean {
  return key.startsWith('enclave/') || key.startsWith('key/') || key.startsWith('policy/') || key.startsWith('identity/');
}

/**
 * Where a change feed comes from: the store's current revision, and a watch that delivers every
 * change after a revision in revision order (etcd; the primary of a node's worker processes).
 */
export interface FeedSource {
  currentRevision(): Promise<number>;
  watch(
    prefix: string,
    onChange: (events: StoreEvent[]) => void | PromiseLike<unknown>,
    options: { fromRev: number; onError: (err: Error) => void },
  ): Pick<StoreWatch, 'ready' | 'close'>;
}

/**
 * Follows the changes other writers make to the store the node's state was loaded from, and
 * applies them to that state in revision order.
 */
export class ChangeFeed {
  #hooks: ClusterHooks | undefined;
  protected readonly log: Logger;
  readonly #source: FeedSource;
  #watch: Pick<StoreWatch, 'ready' | 'close'> | undefined;
  #queue: Promise<void> = Promise.resolve();
  /** Last revision applied from the feed. */
  appliedRev = 0;
  #following!: () => void;
  /** Resolves once the feed follows the store for the first time. */
  readonly following = new Promise<void>((resolve) => (this.#following = resolve));

  constructor(source: FeedSource, log: Logger) {
    this.#source = source;
    this.log = log;
  }

  /** Connects the node whose state the feed updates (before `follow`). */
  attach(hooks: ClusterHooks): void {
    this.#hooks = hooks;
  }

  /** The store revision to follow from after loading state now: read it before loading. */
  currentRevision(): Promise<number> {
    return this.#source.currentRevision();
  }

  /** Follows every change after `rev` (replacing an earlier watch). */
  async follow(rev: number): Promise<void> {
    await this.#watch?.close();
    this.appliedRev = rev;
    this.#watch = this.#source.watch('', (events) => this.#enqueue(events), {
      fromRev: rev + 1,
      onError: (err) => {
        this.log.warn('change feed broken; reloading the state', { err: err.message });
        this.#queue = this.#queue
          .then(() => this.#hooks?.resync())
          .catch((e: unknown) => this.log.error('reload failed', { err: (e as Error).message }));
      },
    });
    this.#hooks?.kms()?.followChanges();
    await this.#watch.ready;
    this.#following();
  }

  /** Resolves once every change received so far is applied (never rejects). */
  settled(): Promise<void> {
    return this.#queue;
  }

  /** Returns when the events are applied: the store counts them for freshness then. */
  #enqueue(events: StoreEvent[]): Promise<void> {
    // Events are applied strictly in order; a root key change may need an HSM call first. The
    // queue never rejects: a failure is logged and answered with a reload, whose own failure the
    // node turns into the sealed state (it never reaches `unhandledRejection`).
    return (this.#queue = this.#queue
      .then(() => this.#apply(events))
      .catch((err: unknown) => {
        this.log.error('cannot apply a change from another node; reloading the state', { err: (err as Error).message });
        return this.#hooks?.resync();
      })
      .catch((err: unknown) => this.log.error('reload failed', { err: (err as Error).message })));
  }

  async #apply(events: StoreEvent[]): Promise<void> {
    const hooks = this.#hooks;
    if (!hooks) return;
    for (const e of events) {
      if (isRootKeyRecord(e.key)) await hooks.rootChanged();
      else if (isDomainRecord(e.key)) hooks.kms()?.applyChange(e.key, e.value, e.rev);
      else hooks.recordChanged(e.key, e.value);
      this.appliedRev = e.rev;
    }
    hooks.kms()?.caughtUp(this.appliedRev);
  }

  async close(): Promise<void> {
    await this.#watch?.close();
  }
}

export class ClusterRuntime extends ChangeFeed {
  readonly store: EtcdStore;
  membership: Membership | undefined;

  constructor(store: EtcdStore, log: Logger) {
    super(
      {
        currentRevision: async () => (await store.rangeWithRevision(CLUSTER_KEY)).rev,
        watch: (prefix, onChange, options) => store.watch(prefix, onChange, options),
      },
      log,
    );
    this.store = store;
  }

  /** Whether etcd answers a linearizable read, i.e. a write quorum is reachable. */
  async writable(): Promise<boolean> {
    try {
      await this.store.get(CLUSTER_KEY);
      return true;
    } catch {
      return false;
    }
  }

  async join(host: string, heartbeatMs: number, snapshot: () => Omit<NodeSnapshot, 'id' | 'heartbeatAt'>): Promise<void> {
    this.membership = await Membership.join(this.store.client, this.store.prefix, host, heartbeatMs, snapshot, this.log);
  }

  async view(): Promise<ClusterView | undefined> {
    return this.membership?.view();
  }

  override async close(): Promise<void> {
    await super.close();
    await this.membership?.close();
  }
}
