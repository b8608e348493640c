/**
 * The KES HTTP API v1 as routes of the one listener (server/http.ts), built from the API table
 * (kes/apis.ts) when `kes.enabled` is set. Every route decides who may send it before its body
 * (kes/access.ts), reads at most KES's documented body size, and answers with KES's JSON and
 * KES's spelling of errors (kes/errors.ts). APIs KES defined but minkms does not serve answer
 * KES's own `501 not implemented`, before any body.
 *
 * `/version` is shared: the route of server/routes.ts answers JSON `{"version": …}` to every
 * client that does not ask for protobuf, which is what the KES client reads.
 */
import { KmsError } from '../errors.js';
import { clip } from '../server/log.js';
import type { Observability } from '../server/observability.js';
import type { KmsNode } from '../server/node.js';
import { accessRules } from '../server/access.js';
import { send, type Access, type Route } from '../server/http.js';
import { authorizeKes, kesCaller, objectOf } from './access.js';
import { KES_APIS, type KesApi } from './apis.js';
import { kesError } from './errors.js';
import { HANDLERS, apiList } from './handlers.js';
import { sendJson } from './json.js';
import { serveAuditLog, serveErrorLog } from './logs.js';
import { KesMetrics } from './metrics.js';

/** An API or HSM key where a name should be: never logged. */
const SECRET_LOOKING = /^(?:k[12]|hsm|kes):/i;

export interface KesRouteDeps {
  readonly node: KmsNode;
  readonly observability: Observability;
}

/** Runs `fn`, turning its errors (thrown or rejected) into the KES spelling. */
function kes<T>(fn: () => T): T {
  let out: T;
  try {
    out = fn();
  } catch (err) {
    throw kesError(err);
  }
  if (out instanceof Promise) return out.catch((err: unknown) => Promise.reject(kesError(err))) as T;
  return out;
}

export function kesRoutes({ node, observability: obs }: KesRouteDeps): Route[] {
  const rules = accessRules(node);
  const metrics = new KesMetrics(obs, () => node.uptimeMs() / 1000);
  obs.provideExposition('kes', () => metrics.text());

  /** The pre-body check of a served API. */
  const accessOf = (api: KesApi): Access => {
    const label = api.command ?? `${api.method} ${api.path}`;
    switch (api.access) {
      case 'public':
        return () => {};
      case 'metrics':
        return (ctx) => kes(() => rules.metrics(ctx));
      case 'sysadmin':
        return (ctx) => kes(() => rules.sysAdmin({ whileSealed: true })(ctx));
      default:
        return (ctx) =>
          kes(() => {
            const c = kesCaller(node, ctx.identity);
            const object = objectOf(api, ctx.param);
            obs.describe(ctx.req, { command: label, enclave: c.enclave, object });
            try {
              authorizeKes(c, api, object);
            } catch (err) {
              // Like the command channel: a known caller refused is worth a warning.
              obs.log.warn('KES API: access denied', {
                command: label,
                enclave: c.enclave,
                object: SECRET_LOOKING.test(object) ? '[REDACTED]' : clip(object),
                identity: ctx.identity,
              });
              throw err;
            }
          });
    }
  };

  const routes: Route[] = [];
  for (const api of KES_APIS) {
    if (api.path === '/version') continue; // server/routes.ts answers both clients
    const takesName = api.path.endsWith('/');
    let handler: Route['handler'];
    if (!api.served) {
      // KES's own answer, decided before any body is read.
      const notImplemented: Access = () => {
        throw new KmsError('ERR_KES_NOT_IMPLEMENTED');
      };
      routes.push({ method: api.method, path: api.path, prefix: takesName, access: notImplemented, handler: () => {} });
      continue;
    }
    switch (api.path) {
      case '/v1/ready':
        handler = ({ res }) =>
          kes(() => {
            if (node.state.kind === 'sealed') throw new KmsError('ERR_SEALED');
            if (node.stale()) throw new KmsError('ERR_STORE_STALE');
            send(res, 200, '', 'application/json');
          });
        break;
      case '/v1/api':
        handler = ({ res }) => sendJson(res, apiList(node.config.limits.bodyTimeout));
        break;
      case '/v1/metrics':
        handler = async ({ res }) => send(res, 200, await obs.exposition('kes'), 'text/plain; version=0.0.4; charset=utf-8');
        break;
      case '/v1/log/error':
        handler = ({ res }) => serveErrorLog(res, obs);
        break;
      case '/v1/log/audit':
        handler = ({ res }) => serveAuditLog(res, obs);
        break;
      default: {
        const run = HANDLERS[api.path];
        if (!run) throw new Error(`no handler for the served KES API ${api.path}`);
        // The state may have changed while the body arrived: the caller is resolved and
        // authorized again (its policy may no longer allow what it did before the body).
        handler = (ctx) =>
          kes(() => {
            const c = kesCaller(node, ctx.identity);
            authorizeKes(c, api, objectOf(api, ctx.param));
            return run(ctx, c);
          });
      }
    }
    const route: Route = {
      method: api.method,
      path: api.path,
      prefix: takesName,
      access: accessOf(api),
      ...(api.maxBody > 0 ? { body: { max: api.maxBody } } : {}),
      handler,
    };
    routes.push(route);
    // The client asks for a list without a prefix as `/v1/key/list`, without the slash.
    if (api.list) routes.push({ ...route, path: api.path.slice(0, -1), prefix: false });
  }
  return routes;
}
