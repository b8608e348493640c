/**
 * The route table: every endpoint as data (method, path, handler). Unprivileged endpoints
 * (`/version`, `/v1/health/*`) work without a client certificate; everything else is
 * authenticated and authorized per command in `dispatch`.
 */
import * as os from 'node:os';
import { KmsError } from '../errors.js';
import { encodeMessage, toJSON, type MessageInit } from '../protocol/schema.js';
import { VersionResponseSchema, type ClusterStatusResponse, type ServerStatusResponse } from '../protocol/messages.js';
import { addHsmEntry, removeHsmEntry, sealedEntryNames } from '../hsm/root-key.js';
import { VERSION } from '../version.js';
import { dispatch, type ClusterOps } from './dispatch.js';
import { send, type Request, type Route } from './http.js';
import type { KmsNode } from './node.js';
import type { NodeSnapshot } from './membership.js';
import { Observability } from './observability.js';
import { CryptoPool } from '../crypto/pool.js';

const OCTET = 'application/octet-stream';
/** Largest backup `PUT /v1/db` accepts. */
const MAX_BACKUP = 1 << 30;

/** Protobuf for the Go SDK (`Accept: application/*`), JSON for people and curl. */
function wantsProtobuf(req: Request): boolean {
  const accept = req.headers.accept ?? '';
  return accept.includes(OCTET) || (accept.includes('application/*') && !accept.includes('application/json'));
}

/** One node's status, from its own state or from the snapshot it publishes in the cluster. */
function serverStatus(node: KmsNode, n: NodeSnapshot, nodes: Map<number, string>, leaderId: number): MessageInit<ServerStatusResponse> {
  const now = Date.now();
  return {
    version: n.version,
    apiVersion: 'v1',
    host: n.host,
    upTime: now - n.startedAt,
    role: n.id === leaderId ? 'Leader' : 'Follower',
    commit: n.commit,
    nodes,
    id: n.id,
    leaderId,
    lastHeartbeat: now - n.heartbeatAt,
    heartbeatInterval: node.opts.config.heartbeat,
    electionTimeout: 0,
    os: n.os,
    arch: n.arch,
    cpus: n.cpus,
    usableCpus: n.usableCpus,
    heapMemInUse: n.heapMemInUse,
    stackMemInUse: 0,
    hsms: n.hsms,
    configuredHsms: n.hsmActive,
  };
}

export function clusterOps(node: KmsNode): ClusterOps {
  const membership = () => {
    const m = node.cluster?.membership;
    if (!m) throw new KmsError(node.cluster ? 'ERR_STORE_UNAVAILABLE' : 'ERR_CLUSTER_SINGLE_NODE');
    return m;
  };
  return {
    async status(): Promise<MessageInit<ClusterStatusResponse>> {
      const view = await node.cluster?.view();
      if (!view) {
        // A single node (embedded store): itself, the leader.
        const mem = process.memoryUsage();
        const self: NodeSnapshot = {
          id: 0,
          host: node.host,
          version: VERSION,
          startedAt: node.startedAt,
          heartbeatAt: Date.now(),
          commit: node.kms?.commits ?? 0,
          hsms: node.hsmEntries,
          hsmActive: node.hsms.map((h) => h.name),
          os: os.platform(),
          arch: os.arch(),
          cpus: os.cpus().length,
          usableCpus: os.availableParallelism(),
          heapMemInUse: mem.heapUsed,
          sealed: node.kms === undefined,
        };
        return { nodesUp: new Map([[0, serverStatus(node, self, new Map([[0, node.host]]), 0)]]), nodesDown: new Map() };
      }
      const nodes = new Map<number, string>([...[...view.up.values()].map((n) => [n.id, n.host] as const), ...view.down]);
      const up = new Map([...view.up.values()].map((n) => [n.id, serverStatus(node, n, nodes, view.leaderId)] as const));
      return { nodesUp: up, nodesDown: view.down };
    },
    async addNode(host) {
      await membership().addNode(host);
    },
    async removeNode(host) {
      await membership().removeNode(host);
    },
    async editCluster(ids) {
      await membership().removeIds(ids);
    },
    async addHsm(name, overwrite) {
      const hsm = node.hsms.find((h) => h.name === name);
      if (!hsm) throw new KmsError('ERR_HSM_NOT_CONFIGURED');
      await addHsmEntry(node.store, hsm, node.root!, overwrite);
      node.hsmEntries = await sealedEntryNames(node.store);
    },
    async removeHsm(name) {
      await removeHsmEntry(node.store, name, node.hsms);
      node.hsmEntries = await sealedEntryNames(node.store);
    },
  };
}

/** Endpoints outside the command channel that only SysAdmins may use. */
function requireSysAdmin(node: KmsNode, identity: string): void {
  if (!node.kms) throw new KmsError('ERR_SEALED');
  if (!node.kms.isSysAdmin(identity)) throw new KmsError('ERR_NOT_ALLOWED');
}

export function apiRoutes(node: KmsNode): Route[] {
  const cluster = clusterOps(node);
  // Metrics, audit and logs of every command, in one place (server/observability.ts).
  const obs = (node.opts.observability ??= new Observability({ log: node.log }));
  obs.attach(node);
  // The other cores seal and open the data keys of large batches (docs/performance.md).
  const pool = new CryptoPool(node.opts.cryptoThreads ?? os.availableParallelism());
  const kmsHandler: Route['handler'] = ({ req, res, identity, param, body }) => {
    const out = obs.runCommands(req, identity, param, (trace) => {
      const kms = node.kms;
      if (!kms) throw new KmsError('ERR_SEALED');
      // Not from a copy that may lag the cluster by more than the bound (store/etcd.ts, Freshness).
      if (node.cluster && !node.cluster.store.readable()) throw new KmsError('ERR_STORE_STALE');
      return dispatch(kms, cluster, identity, param, body, node.opts.config.limits, trace, pool);
    });
    if (out instanceof Promise) return out.then((b) => send(res, 200, b, OCTET));
    send(res, 200, out, OCTET);
    return undefined;
  };
  return [
    {
      method: 'GET',
      path: '/version',
      handler: ({ req, res }) => {
        const v = { version: VERSION, commit: '', apiVersion: 'v1', host: node.host, fips140: false };
        if (wantsProtobuf(req)) send(res, 200, encodeMessage(VersionResponseSchema, v), OCTET);
        else send(res, 200, JSON.stringify(toJSON(VersionResponseSchema, v)), 'application/json');
      },
    },
    { method: 'GET', path: '/v1/health/live', handler: ({ res }) => send(res, 200, '', 'text/plain') },
    {
      method: 'GET',
      path: '/v1/health/ready',
      // `?write`: also ready for writes, i.e. (in a cluster) etcd has a quorum.
      handler: async ({ res, query }) => {
        if (!node.kms) throw new KmsError('ERR_SEALED');
        if (query.has('write') && node.store.health?.().write === 'full') throw new KmsError('ERR_STORE_FULL');
        if (query.has('write') && node.cluster && !(await node.cluster.writable())) throw new KmsError('ERR_STORE_UNAVAILABLE');
        send(res, 200, '', 'text/plain');
      },
    },
    {
      // Our extension: `minkms rotate-root`. Streams progress as JSON lines.
      method: 'POST',
      path: '/v1/root/rotate',
      authenticated: true,
      handler: async ({ res, identity }) => {
        requireSysAdmin(node, identity);
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        try {
          await node.rotateRoot((p) => res.write(JSON.stringify(p) + '\n'));
          res.end(JSON.stringify({ finished: true, term: node.root!.term }) + '\n');
        } catch (err) {
          // Headers are gone: report the failure in the stream.
          res.end(JSON.stringify({ error: err instanceof KmsError ? err.message : 'internal error: see the server log' }) + '\n');
          if (!(err instanceof KmsError)) node.log.error('root key rotation failed', { err: (err as Error).stack });
        }
      },
    },
    {
      method: 'GET',
      path: '/v1/db',
      authenticated: true,
      handler: async ({ res, identity }) => {
        requireSysAdmin(node, identity);
        send(res, 200, await node.backup(), OCTET);
      },
    },
    {
      method: 'PUT',
      path: '/v1/db',
      authenticated: true,
      body: true,
      maxBody: MAX_BACKUP,
      handler: async ({ res, identity, body }) => {
        requireSysAdmin(node, identity);
        await node.restore(body);
        send(res, 200, '', 'text/plain');
      },
    },
    ...obs.routes(),
    { method: 'POST', path: '/v1/kms', handler: kmsHandler, body: true, authenticated: true },
    { method: 'POST', path: '/v1/kms/', prefix: true, handler: kmsHandler, body: true, authenticated: true },
  ];
}
