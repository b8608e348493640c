/**
 * The KES HTTP API v1 as one table: every path KES defined, whether minkms serves it, and what it
 * means here — the command permission a KES policy path grants (kes/policy.ts), the kind of name
 * that follows the path, the largest body. The routes (kes/routes.ts), `GET /v1/api` and the
 * policy mapping all read this table.
 *
 * Who may call an API without a command permission (`access`):
 * - `public`: anyone, no client certificate needed (like `/v1/health/ready`);
 * - `member`: any identity of the KES enclave, and every SysAdmin (KES status and self-description
 *   reveal nothing about keys);
 * - `metrics`: whoever may scrape `/v1/health/metrics` (a SysAdmin, `metrics.identities`, or
 *   anyone with `metrics.auth: false`);
 * - `sysadmin`: the log streams, which show every enclave's requests.
 */

export type KesMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** The name that follows an API path: a key, a policy, an identity (hex), or a list position. */
export type KesResource = 'key' | 'policy' | 'identity';

export interface KesApi {
  readonly method: KesMethod;
  /** With a trailing `/` when a name follows. */
  readonly path: string;
  /** Served here (false: answered with KES's own 501 "not implemented"). */
  readonly served: boolean;
  /** The permission a KES policy path of this API grants (our command policy). */
  readonly command?: string;
  readonly resource?: KesResource;
  /** Lists (`/v1/key/list/…`): the name is a prefix and position, the results are filtered. */
  readonly list?: boolean;
  /** For APIs without a command permission. */
  readonly access?: 'public' | 'member' | 'metrics' | 'sysadmin';
  /** Largest request body (0: none is read). */
  readonly maxBody: number;
  /** A stream that stays open (KES reports timeout 0). */
  readonly stream?: boolean;
}

/** KES's documented request limit for the cryptographic APIs. */
export const KES_MAX_BODY = 1 << 20;

const api = (method: KesMethod, path: string, rest: Partial<KesApi> = {}): KesApi => ({ method, path, served: true, maxBody: 0, ...rest });
const notServed = (method: KesMethod, path: string, rest: Partial<KesApi> = {}): KesApi => api(method, path, { ...rest, served: false });

export const KES_APIS: readonly KesApi[] = [
  api('GET', '/version', { access: 'public' }),
  api('GET', '/v1/ready', { access: 'public' }),
  api('GET', '/v1/status', { access: 'member' }),
  api('GET', '/v1/api', { access: 'member' }),
  api('GET', '/v1/metrics', { access: 'metrics' }),

  api('POST', '/v1/key/create/', { command: 'KEY:CREATE', resource: 'key' }),
  // Our KEY:IMPORT needs KEY:CREATE (server/commands.ts): the same here.
  api('POST', '/v1/key/import/', { command: 'KEY:CREATE', resource: 'key', maxBody: KES_MAX_BODY }),
  api('GET', '/v1/key/describe/', { command: 'KEY:STATUS', resource: 'key' }),
  api('DELETE', '/v1/key/delete/', { command: 'KEY:DELETE', resource: 'key' }),
  api('POST', '/v1/key/generate/', { command: 'KEY:GENERATE', resource: 'key', maxBody: KES_MAX_BODY }),
  api('POST', '/v1/key/encrypt/', { command: 'KEY:ENCRYPT', resource: 'key', maxBody: KES_MAX_BODY }),
  api('POST', '/v1/key/decrypt/', { command: 'KEY:DECRYPT', resource: 'key', maxBody: KES_MAX_BODY }),
  api('POST', '/v1/key/bulk/decrypt/', { command: 'KEY:DECRYPT', resource: 'key', maxBody: KES_MAX_BODY }),
  api('PUT', '/v1/key/hmac/', { command: 'KEY:MAC', resource: 'key', maxBody: KES_MAX_BODY }),
  api('GET', '/v1/key/list/', { command: 'KEY:LIST', resource: 'key', list: true }),

  api('GET', '/v1/policy/describe/', { command: 'POLICY:STATUS', resource: 'policy' }),
  api('GET', '/v1/policy/read/', { command: 'POLICY:GET', resource: 'policy' }),
  api('GET', '/v1/policy/list/', { command: 'POLICY:LIST', resource: 'policy', list: true }),

  api('GET', '/v1/identity/describe/', { command: 'IDENTITY:STATUS', resource: 'identity' }),
  api('GET', '/v1/identity/self/describe', { access: 'member' }),
  api('GET', '/v1/identity/list/', { command: 'IDENTITY:LIST', resource: 'identity', list: true }),

  api('GET', '/v1/log/error', { access: 'sysadmin', stream: true }),
  api('GET', '/v1/log/audit', { access: 'sysadmin', stream: true }),

  // Administration through the KES API: KES servers of the same generation as the v1 client
  // answer these with 501 too; here policies and identities are managed with the minkms CLI.
  // Their policy paths still map, so that a KES policy that grants them keeps its meaning.
  notServed('POST', '/v1/policy/write/', { command: 'POLICY:CREATE', resource: 'policy' }),
  notServed('POST', '/v1/policy/assign/', { command: 'POLICY:ASSIGN', resource: 'policy' }),
  notServed('DELETE', '/v1/policy/delete/', { command: 'POLICY:DELETE', resource: 'policy' }),
  notServed('DELETE', '/v1/identity/delete/', { command: 'IDENTITY:DELETE', resource: 'identity' }),
  notServed('DELETE', '/v1/identity/forget/', { command: 'IDENTITY:DELETE', resource: 'identity' }),
  // KES enclaves and secrets have no counterpart here.
  notServed('POST', '/v1/enclave/create/'),
  notServed('DELETE', '/v1/enclave/delete/'),
  notServed('GET', '/v1/enclave/describe/'),
  notServed('GET', '/v1/enclave/list/'),
  notServed('POST', '/v1/secret/create/'),
  notServed('GET', '/v1/secret/describe/'),
  notServed('GET', '/v1/secret/read/'),
  notServed('DELETE', '/v1/secret/delete/'),
  notServed('GET', '/v1/secret/list/'),
];

/** The API a request path belongs to (longest path first), if any. */
export function kesApiOf(path: string): KesApi | undefined {
  let best: KesApi | undefined;
  for (const a of KES_APIS) {
    const hit = a.path.endsWith('/') ? path.startsWith(a.path) || path === a.path.slice(0, -1) : path === a.path;
    if (hit && (best === undefined || a.path.length > best.path.length)) best = a;
  }
  return best;
}
