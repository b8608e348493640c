/**
 * Who may call a KES API, decided before the body from the TLS identity and the URL alone — the
 * rule of every route here (server/routes.ts) — and with the same authorization as the command
 * channel: the caller must be an identity of the KES enclave (or a SysAdmin), and the command
 * the API stands for (kes/apis.ts) must be allowed on the name in the URL (server/commands.ts
 * `authorize`). An enclave Admin, like a KES admin, may do everything in its enclave.
 */
import { KmsError } from '../errors.js';
import type { Kms, Principal } from '../kms/kms.js';
import { normalizeIdentity } from '../identity/kes.js';
import { admitted } from '../server/dispatch.js';
import { authorize, type Access as CommandAccess } from '../server/commands.js';
import type { KmsNode } from '../server/node.js';
import type { KesApi } from './apis.js';

/** A caller of the KES API, resolved in the KES enclave. */
export interface KesCaller {
  readonly kms: Kms;
  readonly enclave: string;
  readonly principal: Principal;
}

/** The caller, or the error it gets: no certificate or unknown here (403), sealed, stale (503). */
export function kesCaller(node: KmsNode, identity: string): KesCaller {
  if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
  const state = node.state;
  if (state.kind === 'sealed') throw new KmsError('ERR_SEALED');
  // Never from a copy that may lag the cluster by more than the bound, like the command channel.
  if (node.stale()) throw new KmsError('ERR_STORE_STALE');
  const enclave = node.config.kes.enclave;
  if (!admitted(state.kms, identity, enclave)) throw new KmsError('ERR_NOT_ALLOWED');
  return { kms: state.kms, enclave, principal: state.kms.principal(identity, enclave) };
}

/** The name in an identity API's URL, as `h1:` (KES sends hex; `h1:` works too). */
export function identityParam(param: string): string {
  const id = normalizeIdentity(param);
  if (id === undefined) throw new KmsError('ERR_INVALID_IDENTITY', 'a KES identity is 64 hex characters');
  return id;
}

/** The policy object of a request: the name in the URL ('' for lists and APIs without one). */
export function objectOf(api: KesApi, param: string): string {
  if (api.resource === undefined || api.list) return '';
  return api.resource === 'identity' ? identityParam(param) : param;
}

/** Checks the command permission of `api` on `object` (APIs without a command need none beyond membership). */
export function authorizeKes(c: KesCaller, api: KesApi, object: string): void {
  if (api.command === undefined) return;
  const access: CommandAccess = api.list
    ? { kind: 'list', permission: api.command }
    : api.resource === 'identity'
      ? { kind: 'self', permission: api.command }
      : { kind: 'object', permission: api.command };
  authorize(c.kms, c.principal, access, object);
}
