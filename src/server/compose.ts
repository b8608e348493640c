/**
 * The composition root: the one place that builds a node from its configuration — TLS
 * material, HSMs, store, observability, cluster runtime, node, crypto pool, routes, listener —
 * and closes everything it opened, in reverse order, on shutdown.
 *
 * The listener starts before the node unseals: while the root key is being opened (an external
 * KMS may be slow or down) the node already answers `/version` and health, and 503 for
 * everything else.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Http2SecureServer } from 'node:http2';
import { ConfigError, type Config, type EtcdConfig } from '../config/config.js';
import { CryptoPool } from '../crypto/pool.js';
import { HsmConfigError, configuredHsms, type HsmSources } from '../hsm/configured.js';
import { EtcdStore } from '../store/etcd.js';
import { SqliteStore, SQLITE_FILE } from '../store/sqlite.js';
import type { Store } from '../store/store.js';
import { VERSION } from '../version.js';
import { ChangeFeed, ClusterRuntime } from './cluster.js';
import { createHttpServer, destroyConnections, drainConnections } from './http.js';
import { clip, type ServerLogger } from './log.js';
import type { WorkerLink } from './workers/link.js';
import type { WorkerInit } from './workers/messages.js';
import { KmsNode, newRootNote } from './node.js';
import { Observability } from './observability.js';
import { Profiler } from './profiler.js';
import { RestartService, type SelfRestart } from './restart.js';
import { apiRoutes } from './routes.js';
import { kesRoutes } from '../kes/routes.js';
import type { NodeState } from './state.js';
import { loadTlsMaterial, warnExpiring, watchTls } from './tls.js';

export interface ServerOptions {
  /** The data directory (ignored in dev mode). */
  readonly dir: string;
  /** `IP:PORT`, `IP` (port 7373) or `:PORT`. */
  readonly address: string;
  /** `host:port` other nodes and clients reach this node at (cluster membership); default: the endpoint. */
  readonly host?: string;
  readonly config: Config;
  /** The configuration file, if any (then TLS must be configured; it is watched for `hsm` changes). */
  readonly configFile?: string;
  /** Development mode: ephemeral data, deleted on exit. */
  readonly dev: boolean;
  /** Value of MINIO_KMS_HSM_KEY, if set. */
  readonly hsmKey?: string;
  readonly log: ServerLogger;
  /** Audit log file; none = no audit log. */
  readonly auditFile?: string;
  /** Threads for the cryptography of large data-key batches; default: the available cores. */
  readonly cryptoThreads?: number;
  /** Prints a banner line (stdout). */
  readonly print: (line: string) => void;
  /**
   * Starts the node again once a restart was requested (`POST /v1/debug/restart`) and the
   * server has drained and closed everything: the process owner's part (cli/server.ts re-execs
   * the process or exits with status 75 for systemd). Without it, restarts are refused (501).
   */
  readonly restart?: () => void;
  /**
   * In a worker process of a node (`--workers N`, docs/workers.md): its channel to the primary,
   * which owns the store, the audit log and the start-up preparation of the data directory.
   */
  readonly worker?: { readonly link: WorkerLink; readonly init: WorkerInit; readonly stopped: () => void };
}

export interface RunningServer {
  readonly node: KmsNode;
  /** `https://IP:PORT` the listener is bound to. */
  readonly endpoint: string;
  /** Reads the configuration file again (SIGHUP). */
  reloadConfig(): Promise<void>;
  /** Stops accepting connections, lets requests in flight finish, closes everything. */
  close(): Promise<void>;
}

/** A start-up failure that no retry can fix: the process exits with status 2 (no restart loop). */
export class StartupConfigError extends Error {
  override readonly name = 'StartupConfigError';
}

const DEFAULT_PORT = 7373;
/** The docs folder the package ships (dist/src/server → docs). */
const DOCS = fileURLToPath(new URL('../../../docs/', import.meta.url));
/** How long a stop (SIGTERM) lets the requests in flight finish. */
const STOP_DRAIN_MS = 2_000;
/** How long a restart lets them finish: a restart is planned, so nothing in flight should fail. */
const RESTART_DRAIN_MS = 10_000;
/** How often the configuration file is checked for changes. */
const CONFIG_POLL_MS = 2_000;

export function parseAddress(address: string): { host: string; port: number } {
  // `IP:PORT`, `[IPv6]:PORT`, `IP`, or a bare IPv6 address (two colons or more, no brackets).
  const m = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(address) ?? /^([0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)$/.exec(address);
  if (!m) throw new StartupConfigError(`invalid --address '${address}': expected IP:PORT`);
  const host = m[1] ?? m[2] ?? '';
  const port = m[3] === undefined ? DEFAULT_PORT : Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new StartupConfigError(`invalid --address '${address}': bad port`);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** Builds and starts a node; everything opened so far is closed again if a step fails. */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  process.umask(0o077);
  const cleanup: (() => Promise<void> | void)[] = [];
  // Once: a SIGTERM during a restart's drain joins the close already under way.
  let closing: Promise<void> | undefined;
  const closeAll = () =>
    (closing ??= (async () => {
      for (const fn of cleanup.reverse()) {
        try {
          await fn();
        } catch (err) {
          opts.log.error('shutdown step failed', { err: clip((err as Error).message) });
        }
      }
      cleanup.length = 0;
    })());
  try {
    return await build(opts, cleanup, closeAll);
  } catch (err) {
    await closeAll();
    throw err;
  }
}

async function build(opts: ServerOptions, cleanup: (() => Promise<void> | void)[], closeAll: () => Promise<void>): Promise<RunningServer> {
  const { config, log } = opts;
  const configured = opts.configFile !== undefined;
  const listen = parseAddress(opts.address);

  // A worker finds its data directory prepared by the primary (which deletes a dev one).
  const worker = opts.worker;
  const dev = worker ? worker.init.dev : opts.dev;
  const devDir = opts.dev && !worker ? mkdtempSync(join(tmpdir(), 'minkms-dev-')) : undefined;
  if (devDir) cleanup.push(() => rmSync(devDir, { recursive: true, force: true }));
  const dir = worker?.init.dir ?? devDir ?? opts.dir;
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  const etcd = config.store.backend === 'etcd' ? config.store.etcd : undefined;
  // A cluster never generates an HSM key: every node must be given the same one.
  const fresh = !etcd && !existsSync(join(dir, SQLITE_FILE));
  const hsmSources: HsmSources = {
    config,
    softKey: worker?.init.devHsmKey ?? opts.hsmKey,
    dir,
    database: join(dir, SQLITE_FILE),
    generate: !worker && (opts.dev || (fresh && !configured)),
    ephemeral: !worker && opts.dev,
    warn: (msg) => log.warn(msg),
  };
  const hsms = asConfigError(() => configuredHsms(hsmSources));
  const tls = asConfigError(() => loadTlsMaterial(config, dir, configured));

  const auditFile = opts.auditFile ?? config.audit.file;
  const link = worker?.link;
  const observability = asConfigError(
    () =>
      new Observability({
        log,
        auditFile,
        ...(link && {
          auditSink: auditFile ? link.audit : undefined,
          shareFinished: (r) => link.finished(r),
          finishedStreams: (delta) => link.finishedStreams(delta),
          scrapeAll: (kind) => link.scrapeAll(kind),
        }),
      }),
  );
  cleanup.push(() => observability.close());
  if (link) {
    link.attachLog(log.ring);
    cleanup.push(() => link.close());
  }

  const store: Store = link ? link.store : etcd ? createEtcdStore(etcd, log) : new SqliteStore(dir);
  const cluster = store instanceof EtcdStore ? new ClusterRuntime(store, log) : undefined;
  const feed = link ? new ChangeFeed(link.feed, log) : undefined;

  let endpoint = '';
  const node = new KmsNode({
    config,
    configFile: opts.configFile,
    store,
    hsmSources,
    hsms,
    cluster,
    feed,
    log,
    print: opts.print,
    audit: (command, object, outcome) =>
      observability.audit?.append({
        time: new Date().toISOString(),
        identity: '',
        enclave: '',
        command,
        object,
        outcome,
        status: 0,
        latency_ms: 0,
        request_id: '',
      }),
    host: () => opts.host ?? endpoint.replace(/^https:\/\//, ''),
  });
  // The node closes the store, the cluster runtime and the HSMs it was given.
  cleanup.push(() => node.close());
  cluster?.attach(node.feed);
  feed?.attach(node.feed);
  observability.attach(node);

  // The other cores seal and open the data keys of large batches (docs/performance.md).
  const pool = new CryptoPool(opts.cryptoThreads ?? availableParallelism());
  cleanup.push(() => pool.close());

  const profiler = new Profiler({ log });
  cleanup.push(() => profiler.close());
  // A restart drains longer than a stop: it is planned, nothing in flight should fail.
  let drainMs = STOP_DRAIN_MS;
  let restarting = false;
  const selfRestart: SelfRestart = {
    supported: opts.restart !== undefined,
    request: (reason) => {
      if (restarting || !opts.restart) return;
      restarting = true;
      drainMs = RESTART_DRAIN_MS;
      // A worker's node restarts as a whole: the primary stops every worker first.
      if (link) return link.restart(reason);
      log.warn('restarting: draining the requests in flight, then starting again', { reason: clip(reason) });
      opts.print(`=> Restarting: ${clip(reason)}`);
      void closeAll().then(opts.restart);
    },
  };
  const restart = new RestartService({ node, log, self: selfRestart });
  cleanup.push(() => restart.close());

  const server = createHttpServer({
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    // The KES API (docs/kes.md) shares the listener; `/version` answers both clients.
    routes: [
      ...apiRoutes({ node, observability, pool, profiler, restart }),
      ...(config.kes.enabled ? kesRoutes({ node, observability }) : []),
    ],
    limits: config.limits,
    log,
    observer: observability.http,
  });
  link?.attach({
    scrape: (kind) => observability.ownExposition(kind),
    reload: () => void node.reloadConfig(),
    stop: (ms) => {
      drainMs = ms;
      void closeAll().then(worker!.stopped);
    },
    finished: (r) => observability.remoteFinished(r),
  });
  // A worker (but the first one's first start) joins the listeners only once it follows the
  // store: the others serve meanwhile, and it never answers from a state that misses a write
  // they acknowledged while it loaded (docs/workers.md).
  const lateListen = worker?.init.listenLate === true;
  if (lateListen) {
    node.start();
    await feed!.following;
    // The changes it missed while it loaded are applied too: a root key change among them
    // waits for the unsealing to end first, so this is after `following`, not inside it.
    await feed!.settled();
  }
  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the address is in use' : err.message;
      reject(new Error(`kms: cannot listen on ${opts.address}: ${why}`, { cause: err }));
    };
    server.once('error', failed);
    server.listen(listen.port, listen.host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  server.on('error', (err) => log.error('listener error', { err: clip(err.message) }));
  cleanup.push(() => closeServer(server, observability, drainMs, log));
  const bound = (server.address() as AddressInfo).port;
  const shown =
    listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  endpoint = `https://${shown}:${bound}`;

  warnExpiring(tls, log);
  const stopTls = watchTls(server, () => loadTlsMaterial(config, dir, configured), tls.files, log);
  cleanup.push(stopTls);
  const stopConfig = opts.configFile ? watchFile(opts.configFile, () => void node.reloadConfig()) : () => {};
  cleanup.push(stopConfig);

  const p = opts.print;
  p(`Version     ${VERSION}`);
  p(`HSM         ${hsms.map((c) => c.hsm.name).join(', ')}`);
  p(`Node        ${node.host}`);
  p(`Data        ${dev ? `${dir} (dev mode: deleted on exit)` : dir}${etcd ? ` (store: etcd ${etcd.prefix})` : ''}`);
  p(`TLS         ${tls.source}${tls.generated ? ' (generated self-signed certificate for localhost)' : ''}`);
  p(`Endpoint    ${endpoint}`);
  if (config.admin.identity) p(`Admin       ${config.admin.identity}`);
  if (config.kes.enabled) p(`KES API     on, in enclave '${config.kes.enclave}'`);
  p(`Docs        ${DOCS} (troubleshooting.md, deploy.md, upgrade.md, kms-chain.md, security.md)`);
  node.onStateChange((state, previous) => announce(p, state, previous));
  if (!lateListen) node.start();
  restart.start();

  return {
    node,
    endpoint,
    reloadConfig: () => node.reloadConfig(),
    close: closeAll,
  };
}

/** What the banner says as the node's state changes: sealed (why), up, pending HSMs. */
function announce(p: (line: string) => void, state: NodeState, previous: NodeState): void {
  if (state.kind === 'sealed') {
    if (state.reason !== 'starting' && (previous.kind !== 'sealed' || previous.reason !== state.reason)) {
      p(`=> Server is sealed: ${state.reason}`);
      if (state.hint) p(`   ${state.hint}`);
    }
    return;
  }
  if (previous.kind === 'sealed') {
    p(`Cluster ID  ${state.root.clusterId}`);
    p(
      `Root        ${state.rootIdentity.identity} (${state.rootIdentity.source === 'admin.identity' ? 'admin.identity' : `API key derived from ${state.rootIdentity.source}`})`,
    );
    const root = state.rootIdentity;
    if (root.apiKey) p(`API Key     ${root.apiKey}${root.replaced === undefined ? '' : `   (${newRootNote(root.replaced)})`}`);
    p('=> Server is up and running...');
  }
  const before = previous.kind === 'unsealed' ? previous.pending : new Map<string, string>();
  for (const [name, why] of state.pending) if (before.get(name) !== why) p(`HSM pending ${name}: ${why}`);
}

export function asConfigError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof HsmConfigError || err instanceof ConfigError) throw new StartupConfigError(err.message);
    if (err instanceof Error && /^(kms:|hsm\.|tls\.)/.test(err.message)) throw new StartupConfigError(err.message);
    throw err;
  }
}

/**
 * Closes the listener gracefully: no new connections; log streams end; HTTP/2 sessions get a
 * GOAWAY (the streams it covers are served to the end — including ones that arrived just
 * before it and have not reached a handler yet — new ones are refused unprocessed, so clients
 * send them elsewhere) and HTTP/1.1 connections close after their answer. The drain is over
 * when the last connection has closed by itself; what is still open after `drainMs` is cut off.
 */
async function closeServer(server: Http2SecureServer, observability: Observability, drainMs: number, log: ServerLogger): Promise<void> {
  observability.endStreams();
  // Fires once every connection is gone: counting requests would miss a stream that arrived
  // but has no handler yet, and cutting its session then would lose it.
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  drainConnections(server);
  let timer: NodeJS.Timeout | undefined;
  const drained = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), drainMs)))]);
  clearTimeout(timer);
  if (drained) return;
  log.warn('stopping with requests still in flight', { requests: observability.metrics.inflight, drainMs });
  destroyConnections(server);
  await Promise.race([closed, new Promise((r) => setTimeout(r, 500).unref())]);
}

/** Calls `changed` when the file's contents change (polled: works for edits, renames and bind mounts). */
function watchFile(file: string, changed: () => void): () => void {
  const stamp = () => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  };
  let last = stamp();
  const timer = setInterval(() => {
    const now = stamp();
    if (now === undefined || now === last) return;
    last = now;
    changed();
  }, CONFIG_POLL_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function createEtcdStore(c: EtcdConfig, log: ServerLogger): EtcdStore {
  const read = (f: string | undefined, key: string) => {
    if (f === undefined) return undefined;
    try {
      return readFileSync(f);
    } catch (err) {
      // A configuration that cannot work: exit 2, which the systemd unit does not restart.
      throw new StartupConfigError(`store.etcd.tls.${key}: cannot read ${f}: ${(err as Error).message}`);
    }
  };
  return new EtcdStore({
    endpoints: c.endpoints,
    prefix: c.prefix,
    username: c.username,
    password: c.password,
    tls: c.tls && { ca: read(c.tls.ca, 'ca'), cert: read(c.tls.cert, 'cert'), key: read(c.tls.key, 'key') },
    timeoutMs: c.timeout,
    maxStalenessMs: c.maxStaleness,
    report: (err) => log.warn('etcd store', { err: clip(err.message) }),
  });
}
