/**
 * One KMS node's life: open the store, find the HSMs, unseal the root key (or stay sealed and
 * retry), load the state, serve, and shut down cleanly.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Http2SecureServer } from 'node:http2';
import type { Config } from '../config/config.js';
import type { Hsm } from '../hsm/hsm.js';
import { SoftHsm, generateSoftHsmKey } from '../hsm/soft.js';
import { loadLocalSoftHsmKey } from '../hsm/local-key.js';
import { MinkmsHsm } from '../hsm/minkms.js';
import { rotateRoot, type RotationProgress } from '../hsm/rotate-root.js';
import { KmsError } from '../errors.js';
import { deriveRootApiKey, openRootKey, sealedEntryNames, SealedError, type RootKey } from '../hsm/root-key.js';
import { SqliteStore, SQLITE_FILE } from '../store/sqlite.js';
import { StoreUnavailableError, type Store } from '../store/store.js';
import { EtcdStore } from '../store/etcd.js';
import type { EtcdConfig } from '../config/config.js';
import { ClusterRuntime } from './cluster.js';
import type { NodeSnapshot } from './membership.js';
import { MemoryStore } from '../store/memory.js';
import { decodeSnapshot, encodeSnapshot } from '../store/snapshot.js';
import type { ApiKey } from '../identity/api-key.js';
import { Barrier } from '../store/barrier.js';
import { Kms } from '../kms/kms.js';
import { createHttpServer } from './http.js';
import { apiRoutes } from './api.js';
import { loadTlsMaterial, warnExpiring, watchTls } from './tls.js';
import type { Logger } from './log.js';
import { Observability } from './observability.js';
import { VERSION } from '../version.js';

export interface NodeOptions {
  dir: string;
  /** `IP:PORT`, `IP` (port 7373) or `:PORT`. */
  address: string;
  config: Config;
  /** Whether a config file was given (then TLS must be configured). */
  configured: boolean;
  dev: boolean;
  /** Value of MINIO_KMS_HSM_KEY, if set. */
  hsmKey?: string;
  log: Logger;
  /** Metrics, audit log and log stream (server/observability.ts); a default one if absent. */
  observability?: Observability;
  /** Prints a banner line (stdout). */
  print: (line: string) => void;
  /** `host:port` other nodes and clients reach this node at (cluster membership); default: the endpoint. */
  host?: string;
  /** Threads for the cryptography of large data-key batches; default: the available cores. */
  cryptoThreads?: number;
}

const LOCAL_HSM_FILE = 'hsm.key';
const DEFAULT_PORT = 7373;
/** Unseal retries back off from 0.5 s to this; an HSM that comes back is used within seconds. */
const RETRY_MAX_MS = 5000;

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(address) ?? /^([^[\]]*:[^[\]]*)$/.exec(address);
  if (!m) throw new Error(`invalid --address '${address}': expected IP:PORT`);
  const host = m[1] ?? m[2] ?? '';
  const port = m[3] === undefined ? DEFAULT_PORT : Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid --address '${address}': bad port`);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** The running node, as the API handlers see it. */
export class KmsNode {
  readonly startedAt = Date.now();
  readonly opts: NodeOptions;
  readonly store: Store;
  readonly hsms: readonly Hsm[];
  readonly log: Logger;
  kms: Kms | undefined;
  root: RootKey | undefined;
  /** Why the node is sealed (when `kms` is undefined). */
  sealedReason = 'starting';
  /** Sealed REK entries in the store (names). */
  hsmEntries: string[] = [];
  server: Http2SecureServer | undefined;
  endpoint = '';
  /** Unsealing failed for a reason retrying cannot fix (e.g. a wrong soft HSM key). */
  sealedPermanently = false;
  #retry: NodeJS.Timeout | undefined;
  #retryJoin: NodeJS.Timeout | undefined;
  #devDir: string | undefined;
  #derivedApiKey: string | undefined;
  #barrier: Barrier | undefined;
  #stopTlsWatch: (() => void) | undefined;
  /** Set when the store is an etcd cluster shared with other nodes. */
  readonly cluster: ClusterRuntime | undefined;

  private constructor(opts: NodeOptions, store: Store, hsms: Hsm[], devDir: string | undefined) {
    this.opts = opts;
    this.log = opts.log;
    this.store = store;
    this.hsms = hsms;
    this.#devDir = devDir;
    if (store instanceof EtcdStore) {
      this.cluster = new ClusterRuntime(
        store,
        { kms: () => this.kms, rootChanged: () => this.#rootChanged(), resync: () => this.#resync() },
        opts.log,
      );
    }
  }

  /** The address this node is reached at: `--host`, or the endpoint it listens on. */
  get host(): string {
    return this.opts.host ?? this.endpoint.replace(/^https:\/\//, '');
  }

  static async start(opts: NodeOptions): Promise<KmsNode> {
    process.umask(0o077);
    const devDir = opts.dev ? mkdtempSync(join(tmpdir(), 'minkms-dev-')) : undefined;
    const dir = devDir ?? opts.dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const etcd = opts.config.store.backend === 'etcd' ? opts.config.store.etcd : undefined;
    // A cluster never generates an HSM key: every node must be given the same one.
    const fresh = !etcd && !existsSync(join(dir, SQLITE_FILE));
    const hsms = configuredHsms(opts, dir, fresh);
    const store = etcd ? createEtcdStore(etcd) : new SqliteStore(dir);
    const node = new KmsNode(opts, store, hsms, devDir);
    const tls = loadTlsMaterial(opts.config, dir, opts.configured);

    await node.#unseal();
    if (!node.kms && node.sealedPermanently) {
      await store.close();
      throw new Error(`kms: cannot open the database in ${dir}: ${node.sealedReason}`);
    }

    const { host, port } = parseAddress(opts.address);
    const obs = (opts.observability ??= new Observability({ log: opts.log }));
    const server = createHttpServer({
      cert: tls.cert,
      key: tls.key,
      ca: tls.ca,
      routes: apiRoutes(node),
      limits: opts.config.limits,
      log: opts.log,
      observer: obs.http,
    });
    node.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = (server.address() as AddressInfo).port;
    const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
    node.endpoint = `https://${shown}:${bound}`;
    warnExpiring(tls, opts.log);
    node.#stopTlsWatch = watchTls(server, () => loadTlsMaterial(opts.config, dir, opts.configured), tls.files, opts.log);
    node.#banner(tls.source, tls.generated);
    if (node.cluster) node.#join();
    return node;
  }

  /** Registers in the cluster membership; retried until etcd answers. */
  #join(): void {
    const heartbeat = this.opts.config.heartbeat || 1000;
    this.cluster!.join(this.host, heartbeat, () => this.#snapshot()).then(
      () => this.log.info('joined the cluster', { node: this.cluster!.membership!.id, host: this.host }),
      (err: unknown) => {
        this.log.warn('cannot register in the cluster yet; retrying', { err: (err as Error).message });
        this.#retryJoin = setTimeout(() => this.#join(), 2000);
      },
    );
  }

  #snapshot(): Omit<NodeSnapshot, 'id' | 'heartbeatAt'> {
    const mem = process.memoryUsage();
    return {
      host: this.host,
      version: VERSION,
      startedAt: this.startedAt,
      commit: this.cluster?.appliedRev ?? 0,
      hsms: this.hsmEntries,
      hsmActive: this.hsms.map((h) => h.name),
      os: process.platform,
      arch: process.arch,
      cpus: cpus().length,
      usableCpus: availableParallelism(),
      heapMemInUse: mem.heapUsed,
      sealed: this.kms === undefined,
    };
  }

  /** Another node changed the sealed root key entries: follow a root key rotation, or reload. */
  async #rootChanged(): Promise<void> {
    this.hsmEntries = await sealedEntryNames(this.store);
    if (!this.kms || !this.#barrier || !this.root) return;
    const root = await openRootKey(this.store, this.hsms, (msg) => this.log.warn(msg));
    if (root.clusterId !== this.root.clusterId) return this.#resync(); // a backup was restored
    if (root.term > this.#barrier.term) this.#barrier.addTerm(root.rek, root.term);
    if (root.next) this.#barrier.addTerm(root.next.rek, root.next.term);
    else if (root.term === this.#barrier.term) this.#barrier.dropOldTerms();
    this.root = root;
  }

  /** Reloads the whole state from the store and follows changes from there. */
  async #resync(): Promise<void> {
    const rev = await this.cluster!.currentRevision();
    const opened = await this.#open(this.store);
    this.kms?.retire();
    await this.#activate(opened);
    await this.cluster!.follow(rev);
    this.log.info('state reloaded from the store', { rev });
  }

  /** Opens the root key and the state of `store` (the node's own, or a backup being checked). */
  async #open(store: Store): Promise<{ root: RootKey; barrier: Barrier; kms: Kms; derived?: ApiKey }> {
    const root = await openRootKey(store, this.hsms, (msg) => this.log.warn(msg));
    const derived = this.opts.config.admin.identity ? undefined : await this.derivedRootApiKey();
    const rootIdentity = this.opts.config.admin.identity ?? derived!.identity;
    const barrier = new Barrier(root.rek, root.clusterId, root.term);
    if (root.next) barrier.addTerm(root.next.rek, root.next.term);
    return { root, barrier, kms: await Kms.load(store, barrier, { rootIdentity }), derived };
  }

  async #activate(opened: { root: RootKey; barrier: Barrier; kms: Kms }): Promise<void> {
    this.root = opened.root;
    this.#barrier = opened.barrier;
    this.hsmEntries = await sealedEntryNames(this.store);
    this.kms = opened.kms;
  }

  /** Tries to unseal; on a transient failure stays sealed and retries with backoff. */
  async #unseal(attempt = 0): Promise<void> {
    try {
      // In a cluster, follow changes from the revision the state is loaded at.
      const rev = await this.cluster?.currentRevision();
      const opened = await this.#open(this.store);
      await this.#activate(opened);
      if (rev !== undefined) await this.cluster!.follow(rev);
      this.log.info('unsealed', { hsm: opened.root.unsealedBy });
      if (attempt > 0) this.#announce(opened.derived?.text);
      else this.#derivedApiKey = opened.derived?.text;
    } catch (err) {
      // An unreachable store (etcd without quorum) may come back; a wrong key will not.
      const permanent = err instanceof SealedError ? err.permanent : !(err instanceof StoreUnavailableError);
      this.sealedReason = (err as Error).message;
      this.hsmEntries = await sealedEntryNames(this.store).catch(() => []);
      if (permanent && attempt === 0) {
        this.sealedPermanently = true;
        return;
      }
      const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** Math.min(attempt, 4));
      this.log.warn('sealed: cannot unseal the root encryption key; retrying', { reason: this.sealedReason, retryInMs: delay });
      this.#retry = setTimeout(() => void this.#unseal(attempt + 1), delay);
    }
  }

  /** The root API key derived from the first configured HSM. */
  derivedRootApiKey() {
    return deriveRootApiKey(this.hsms[0]!);
  }

  #banner(tlsSource: string, generated: boolean): void {
    const p = this.opts.print;
    p(`Version     ${VERSION}`);
    p(`HSM         ${this.hsms.map((h) => h.name).join(', ')}`);
    if (this.root) p(`Cluster ID  ${this.root.clusterId}`);
    p(`Node 0      ${this.host}`);
    p(`Data        ${this.#devDir ? `${this.#devDir} (dev mode: deleted on exit)` : this.opts.dir}`);
    p(`TLS         ${tlsSource}${generated ? ' (generated self-signed certificate for localhost)' : ''}`);
    p(`Endpoint    ${this.endpoint}`);
    if (this.opts.config.admin.identity) p(`Admin       ${this.opts.config.admin.identity}`);
    if (this.kms) this.#announce(this.#derivedApiKey);
    else p(`=> Server is sealed: ${this.sealedReason}`);
  }

  /** Printed once the node serves: the derived root API key (if any) and the ready line. */
  #announce(apiKey: string | undefined): void {
    if (apiKey) this.opts.print(`API Key     ${apiKey}`);
    this.opts.print('=> Server is up and running...');
  }

  /** Replaces the root encryption key (see hsm/rotate-root.ts); writes wait, reads go on. */
  async rotateRoot(progress: (p: RotationProgress) => void): Promise<void> {
    const kms = this.kms;
    if (!kms || !this.root || !this.#barrier) throw new KmsError('ERR_SEALED');
    await kms.exclusive(async () => {
      this.root = await rotateRoot(this.store, this.hsms, this.root!, this.#barrier!, progress);
      this.hsmEntries = await sealedEntryNames(this.store);
      await kms.reload();
    });
    this.log.info('root encryption key rotated', { term: this.root.term });
  }

  /** A consistent snapshot of the whole store, still encrypted (GET /v1/db). */
  async backup(): Promise<Buffer> {
    if (!this.kms || !this.root) throw new KmsError('ERR_SEALED');
    const entries = await this.store.range('');
    return encodeSnapshot(this.root.clusterId, entries);
  }

  /**
   * Replaces the whole state with a snapshot (PUT /v1/db). The snapshot is opened and every
   * record checked in memory first, with this node's HSMs; only then is the store replaced, in
   * one transaction. A snapshot that cannot be opened leaves the node as it was.
   */
  async restore(snapshot: Buffer): Promise<void> {
    const kms = this.kms;
    if (!kms) throw new KmsError('ERR_SEALED');
    let entries;
    try {
      entries = decodeSnapshot(snapshot).entries;
    } catch (err) {
      throw new KmsError('ERR_INVALID_BACKUP', (err as Error).message);
    }
    await kms.exclusive(async () => {
      try {
        await this.#open(new MemoryStore(entries));
      } catch (err) {
        throw new KmsError('ERR_INVALID_BACKUP', `this node cannot open it: ${(err as Error).message}`);
      }
      const current = await this.store.range('');
      const keep = new Set(entries.map((e) => e.key));
      const res = await this.store.commit(
        current.map((e) => ({ key: e.key, rev: e.rev })),
        [...current.filter((e) => !keep.has(e.key)).map((e) => ({ key: e.key })), ...entries],
      );
      if (!res.ok) throw new KmsError('ERR_CONFLICT');
      kms.retire();
      await this.#activate(await this.#open(this.store));
    });
    this.log.info('database restored from a backup', { entries: entries.length });
  }

  uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  hostname(): string {
    return hostname();
  }

  async close(): Promise<void> {
    clearTimeout(this.#retry);
    clearTimeout(this.#retryJoin);
    this.#stopTlsWatch?.();
    this.opts.observability?.endStreams();
    if (this.server) {
      const server = this.server;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle HTTP/2 sessions and keep-alive sockets would hold close() open.
        setTimeout(resolve, 2000).unref();
      });
    }
    this.opts.observability?.close();
    await this.cluster?.close();
    await this.store.close();
    for (const h of this.hsms) await h.close();
    if (this.#devDir) rmSync(this.#devDir, { recursive: true, force: true });
  }
}

/**
 * The HSMs, in priority order: the soft HSM from MINIO_KMS_HSM_KEY, then the external KMS of
 * the configuration. Without any, a new database gets a generated soft HSM key stored in
 * `DIR/hsm.key` (convenient for a first start; production moves it to MINIO_KMS_HSM_KEY or an
 * external HSM).
 */
function configuredHsms(opts: NodeOptions, dir: string, fresh: boolean): Hsm[] {
  const hsms: Hsm[] = [];
  const local = join(dir, LOCAL_HSM_FILE);
  if (opts.hsmKey) {
    hsms.push(new SoftHsm(opts.hsmKey));
  } else if (!opts.dev) {
    // Written atomically; a damaged file is explained (hsm/local-key.ts).
    const warn = (msg: string) => opts.log.warn(msg);
    const key = loadLocalSoftHsmKey(local, { create: fresh && !opts.configured, database: join(dir, SQLITE_FILE), warn });
    if (key) hsms.push(new SoftHsm(key));
  }
  if (opts.config.hsm.minkms) hsms.push(new MinkmsHsm(opts.config.hsm.minkms));
  if (hsms.length === 0 && opts.dev) hsms.push(new SoftHsm(generateSoftHsmKey()));
  if (hsms.length === 0)
    throw new Error('kms: no HSM provided (set MINIO_KMS_HSM_KEY, see `minkms --soft-hsm`, or configure hsm.minio.minkms)');
  return hsms;
}

function createEtcdStore(c: EtcdConfig): EtcdStore {
  const read = (f: string | undefined) => (f === undefined ? undefined : readFileSync(f));
  return new EtcdStore({
    endpoints: c.endpoints,
    prefix: c.prefix,
    username: c.username,
    password: c.password,
    tls: c.tls && { ca: read(c.tls.ca), cert: read(c.tls.cert), key: read(c.tls.key) },
    timeoutMs: c.timeout,
    maxStalenessMs: c.maxStaleness,
  });
}
