/**
 * The route table: every endpoint as data — method, path, **who may send it (decided from the
 * TLS identity and the URL alone, before a byte of the body is read)**, how large its body may
 * be, and its handler. `/version` and `/v1/health/*` need no client certificate; everything else
 * is refused before its body unless the caller is known:
 *
 * | route | before the body |
 * |---|---|
 * | `POST /v1/kms` | a SysAdmin (cluster and enclave commands) |
 * | `POST /v1/kms/{enclave}` | a SysAdmin, or an identity of that enclave |
 * | `GET /v1/db`, `PUT /v1/db`, `POST /v1/root/rotate` | a SysAdmin |
 * | `POST /v1/debug/log`, `/v1/debug/pprof` (POST, GET, DELETE), `POST /v1/debug/restart` | a SysAdmin (while sealed: `admin.identity`); server/debug.ts |
 * | `GET /v1/health/metrics` | a SysAdmin or one of `metrics.identities` (anyone with `metrics.auth: false`) |
 *
 * Each command of the command channel is then authorized on its own (server/commands.ts).
 */
import { KmsError } from '../errors.js';
import { encodeMessage } from '../protocol/schema.js';
import { protoJson } from '../protocol/json.js';
import { VersionResponseSchema } from '../protocol/messages.js';
import type { CryptoPool } from '../crypto/pool.js';
import { VERSION, COMMIT } from '../version.js';
import { accessRules } from './access.js';
import { dispatch } from './dispatch.js';
import { debugRoutes } from './debug.js';
import { send, type Request, type Route } from './http.js';
import type { KmsNode } from './node.js';
import type { Observability } from './observability.js';
import type { Profiler } from './profiler.js';
import type { RestartService } from './restart.js';

const OCTET = 'application/octet-stream';
/** Largest backup `PUT /v1/db` accepts (one restore at a time). */
export const MAX_BACKUP = 1 << 30;
/** Largest body of the small SysAdmin requests (`POST /v1/debug/log`). */
const MAX_SMALL_BODY = 64 << 10;

/** Protobuf for the Go SDK (`Accept: application/*`), JSON for people and curl. */
function wantsProtobuf(req: Request): boolean {
  const accept = req.headers.accept ?? '';
  return accept.includes(OCTET) || (accept.includes('application/*') && !accept.includes('application/json'));
}

export interface RouteDeps {
  readonly node: KmsNode;
  readonly observability: Observability;
  readonly pool: CryptoPool;
  readonly profiler: Profiler;
  readonly restart: RestartService;
}

export function apiRoutes({ node, observability: obs, pool, profiler, restart }: RouteDeps): Route[] {
  const access = accessRules(node);
  const maxFrames = () => node.config.limits.maxFrames;
  const kmsHandler: Route['handler'] = ({ req, res, identity, param, body }) => {
    const out = obs.runCommands(req, identity, param, (trace) => {
      const state = node.state;
      if (state.kind === 'sealed') throw new KmsError('ERR_SEALED');
      return dispatch({ kms: state.kms, cluster: node.ops, identity, enclave: param, body, maxFrames: maxFrames(), trace, pool });
    });
    if (out instanceof Promise) return out.then((b) => send(res, 200, b, OCTET));
    send(res, 200, out, OCTET);
    return undefined;
  };
  let restoring = false;
  return [
    {
      method: 'GET',
      path: '/version',
      access: () => {},
      handler: ({ req, res }) => {
        const v = { version: VERSION, commit: COMMIT, apiVersion: 'v1', host: node.host, fips140: false };
        if (wantsProtobuf(req)) send(res, 200, encodeMessage(VersionResponseSchema, v), OCTET);
        else {
          // For people and curl: VersionResponse as protobuf-JSON.
          const json = protoJson({ version: v.version, commit: v.commit, api_version: v.apiVersion, host: v.host, fips140: v.fips140 });
          send(res, 200, JSON.stringify(json), 'application/json');
        }
      },
    },
    { method: 'GET', path: '/v1/health/live', access: () => {}, handler: ({ res }) => send(res, 200, '', 'text/plain') },
    {
      method: 'GET',
      path: '/v1/health/ready',
      access: () => {},
      // `?write`: also ready for writes (in a cluster: etcd has a quorum). `?hsm`: also every
      // configured HSM has a sealed root key entry (none is pending).
      handler: async ({ res, query }) => {
        const state = node.state;
        if (state.kind === 'sealed') throw new KmsError('ERR_SEALED');
        if (node.stale()) throw new KmsError('ERR_STORE_STALE');
        if (query.has('hsm') && state.pending.size > 0) {
          throw new KmsError('ERR_HSM_PENDING', [...state.pending.keys()].join(', '));
        }
        if (query.has('write')) await node.checkWritable();
        send(res, 200, '', 'text/plain');
      },
    },
    {
      // Our extension: `minkms rotate-root`. Streams progress as JSON lines.
      method: 'POST',
      path: '/v1/root/rotate',
      access: access.sysAdmin(),
      handler: async ({ res }) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        try {
          const term = await node.rotateRoot((p) => res.write(JSON.stringify(p) + '\n'));
          res.end(JSON.stringify({ finished: true, term }) + '\n');
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
      access: access.sysAdmin(),
      handler: async ({ res }) => send(res, 200, await node.backup(), OCTET),
    },
    {
      method: 'PUT',
      path: '/v1/db',
      // One restore at a time: its body may be far larger than the node's buffer budget.
      access: (ctx) => {
        access.sysAdmin()(ctx);
        if (restoring) throw new KmsError('ERR_BUSY', 'a restore is already running');
        restoring = true;
        ctx.res.once('close', () => (restoring = false));
      },
      body: { max: MAX_BACKUP, unbudgeted: true },
      handler: async ({ res, body }) => {
        await node.restore(body);
        send(res, 200, '', 'text/plain');
      },
    },
    {
      method: 'GET',
      path: '/v1/health/metrics',
      access: access.metrics,
      handler: (ctx) => obs.serveMetrics(ctx),
    },
    {
      method: 'POST',
      path: '/v1/debug/log',
      access: access.sysAdmin({ whileSealed: true }),
      body: { max: MAX_SMALL_BODY },
      handler: (ctx) => obs.serveLog(ctx),
    },
    ...debugRoutes({ node, access, profiler, restart, log: node.log }),
    { method: 'POST', path: '/v1/kms', access: access.commands, body: {}, handler: kmsHandler },
    { method: 'POST', path: '/v1/kms/', prefix: true, access: access.commands, body: {}, handler: kmsHandler },
  ];
}
