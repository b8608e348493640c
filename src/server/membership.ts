/**
 * Cluster membership on etcd. Every node registers under the cluster's namespace:
 *
 *   <prefix>members/<id>   {"id":N,"host":"…","addedAt":"…"}   who belongs to the cluster (persistent)
 *   <prefix>alive/<id>     a status snapshot, under a lease       who is up right now
 *
 * A node's `alive` key is refreshed every heartbeat and expires with its lease (3 heartbeats,
 * at least 3 s) when the node stops or loses etcd. The leader is the live node whose `alive`
 * key is the oldest (lowest create revision) — etcd's own election rule — so no extra
 * campaign is needed and a new leader follows within one lease TTL of the old one's loss.
 *
 * Node ids are small integers, allocated with create-if-absent; a node that starts again with
 * the same advertised host gets its id back.
 */
import type { Etcd3, Lease } from 'etcd3';
import { KmsError } from '../errors.js';
import type { Logger } from './log.js';

export interface NodeSnapshot {
  id: number;
  host: string;
  version: string;
  startedAt: number;
  heartbeatAt: number;
  commit: number;
  hsms: string[];
  hsmActive: string[];
  /** Configured HSMs without a sealed entry → why sealing for them failed (absent in older nodes' snapshots). */
  pendingHsms?: Record<string, string>;
  /** The root identity the node accepts, and where it comes from (absent in older nodes' snapshots; empty while sealed). */
  rootIdentity?: string;
  rootIdentitySource?: string;
  /** How current the node's copy of the state is: `ok`/`full` (embedded store), `fresh`/`stale`/`offline`/`full` (etcd). */
  store?: { state: string; lastQuorumAt: number };
  os: string;
  arch: string;
  cpus: number;
  usableCpus: number;
  heapMemInUse: number;
  sealed: boolean;
}

export interface ClusterView {
  up: Map<number, NodeSnapshot>;
  down: Map<number, string>;
  /** -1 without a live node. */
  leaderId: number;
}

interface MemberRecord {
  id: number;
  host: string;
  addedAt: string;
}

export class Membership {
  readonly id: number;
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #snapshot: () => Omit<NodeSnapshot, 'id' | 'heartbeatAt'>;
  readonly #heartbeatMs: number;
  readonly #log: Logger;
  #lease: Lease | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(
    client: Etcd3,
    prefix: string,
    id: number,
    heartbeatMs: number,
    snapshot: () => Omit<NodeSnapshot, 'id' | 'heartbeatAt'>,
    log: Logger,
  ) {
    this.#client = client;
    this.#prefix = prefix;
    this.id = id;
    this.#heartbeatMs = heartbeatMs;
    this.#snapshot = snapshot;
    this.#log = log;
  }

  /** Registers this node (allocating or finding its id by `host`) and starts heartbeats. */
  static async join(
    client: Etcd3,
    prefix: string,
    host: string,
    heartbeatMs: number,
    snapshot: () => Omit<NodeSnapshot, 'id' | 'heartbeatAt'>,
    log: Logger,
  ): Promise<Membership> {
    const id = await allocateId(client, prefix, host);
    const m = new Membership(client, prefix, id, heartbeatMs, snapshot, log);
    await m.#beat();
    m.#timer = setInterval(() => void m.#beat(), heartbeatMs);
    m.#timer.unref();
    return m;
  }

  get #ttlSeconds(): number {
    return Math.max(3, Math.ceil((3 * this.#heartbeatMs) / 1000));
  }

  async #beat(): Promise<void> {
    if (this.#closed) return;
    try {
      if (!this.#lease || this.#lease.revoked()) {
        const lease = this.#client.lease(this.#ttlSeconds, { autoKeepAlive: true });
        lease.on('lost', () => {
          if (this.#lease === lease) this.#lease = undefined;
        });
        await lease.grant();
        this.#lease = lease;
      }
      const snap: NodeSnapshot = { ...this.#snapshot(), id: this.id, heartbeatAt: Date.now() };
      await this.#lease.put(`${this.#prefix}alive/${this.id}`).value(JSON.stringify(snap));
    } catch (err) {
      this.#lease = undefined;
      this.#log.warn('cluster heartbeat failed: etcd unreachable or without quorum', { err: (err as Error).message });
    }
  }

  /** Nodes up (with their last snapshot), nodes down, and the leader. */
  async view(): Promise<ClusterView> {
    const [members, alive] = await Promise.all([
      this.#client.getAll().prefix(`${this.#prefix}members/`).exec(),
      this.#client.getAll().prefix(`${this.#prefix}alive/`).exec(),
    ]);
    const up = new Map<number, NodeSnapshot>();
    let leaderId = -1;
    let oldest = Infinity;
    for (const kv of alive.kvs) {
      const snap = JSON.parse(kv.value.toString()) as NodeSnapshot;
      up.set(snap.id, snap);
      const created = Number(kv.create_revision);
      if (created < oldest) {
        oldest = created;
        leaderId = snap.id;
      }
    }
    const down = new Map<number, string>();
    for (const kv of members.kvs) {
      const m = JSON.parse(kv.value.toString()) as MemberRecord;
      if (!up.has(m.id)) down.set(m.id, m.host);
    }
    return { up, down, leaderId };
  }

  /**
   * CLUSTER:ADDNODE: pre-registers a host, which is listed as down until a node started with
   * that `--host` (and the cluster's store configuration) joins. Nodes join by configuration.
   */
  async addNode(host: string): Promise<void> {
    await allocateId(this.#client, this.#prefix, host);
  }

  /** CLUSTER:REMOVENODE: deregisters a host that is down (stop the node first). */
  async removeNode(host: string): Promise<void> {
    const view = await this.view();
    const id = [...view.down].find(([, h]) => h === host)?.[0];
    if (id === undefined) {
      const up = [...view.up.values()].some((n) => n.host === host);
      throw new KmsError(
        'ERR_BAD_REQUEST',
        up ? `node ${host} is running: stop it before removing it` : `node ${host} is not a member of the cluster`,
      );
    }
    await this.#client.delete().key(`${this.#prefix}members/${id}`).exec();
  }

  /** CLUSTER:EDIT: forgets the given node ids (repair after a permanent node loss), live or not. */
  async removeIds(ids: readonly number[]): Promise<void> {
    for (const id of ids) {
      await this.#client.delete().key(`${this.#prefix}members/${id}`).exec();
      await this.#client.delete().key(`${this.#prefix}alive/${id}`).exec();
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    // Leave at once rather than after the lease TTL.
    await this.#lease?.revoke().catch(() => undefined);
  }
}

async function allocateId(client: Etcd3, prefix: string, host: string): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const members = await client.getAll().prefix(`${prefix}members/`).exec();
    const records = members.kvs.map((kv) => JSON.parse(kv.value.toString()) as MemberRecord);
    const mine = records.find((m) => m.host === host);
    if (mine) return mine.id;
    const used = new Set(records.map((m) => m.id));
    let id = 0;
    while (used.has(id)) id++;
    const key = `${prefix}members/${id}`;
    const record: MemberRecord = { id, host, addedAt: new Date().toISOString() };
    const res = await client
      .if(key, 'Create', '==', 0)
      .then(client.put(key).value(JSON.stringify(record)))
      .commit();
    if (res.succeeded) return id;
  }
  throw new Error('cannot allocate a cluster node id: too much contention');
}
