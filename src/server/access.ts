/**
 * The pre-body checks of the routes (server/routes.ts, server/debug.ts, kes/routes.ts): who may
 * send a body, decided from the TLS identity, the URL and the node's state when the request
 * arrives — never from the body.
 */
import { KmsError } from '../errors.js';
import { admitted } from './dispatch.js';
import type { Access } from './http.js';
import type { KmsNode } from './node.js';
import type { NodeState } from './state.js';

/** `access denied`, or — for the API key of a root identity that was replaced — why it no longer works. */
function denied(state: NodeState, identity: string): KmsError {
  if (state.kind === 'unsealed') {
    const old = state.rootIdentity.retired.find((r) => r.identity === identity);
    if (old) {
      return new KmsError(
        'ERR_ROOT_KEY_RETIRED',
        `the HSM it was derived from (${old.hsm}) was removed; use the new root API key (the node printed it; \`minkms stat\` shows the root identity) or set admin.identity`,
      );
    }
  }
  return new KmsError('ERR_NOT_ALLOWED');
}

/** Pre-body checks, from the node's state at the moment the request arrives. */
export function accessRules(node: KmsNode) {
  const sysAdmin =
    (opts: { whileSealed?: boolean } = {}): Access =>
    ({ identity }) => {
      if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
      const state = node.state;
      if (state.kind === 'sealed') {
        // Sealed, no identity but the configured admin can be recognized.
        if (opts.whileSealed && identity === node.config.admin.identity) return;
        throw new KmsError('ERR_SEALED');
      }
      if (!state.kms.isSysAdmin(identity)) throw denied(state, identity);
    };
  const commands: Access = ({ identity, param }) => {
    if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
    const state = node.state;
    if (state.kind === 'sealed') throw new KmsError('ERR_SEALED');
    if (!admitted(state.kms, identity, param)) throw denied(state, identity);
    // Never from a copy that may lag the cluster by more than the bound (store/etcd.ts, Freshness).
    if (node.stale()) throw new KmsError('ERR_STORE_STALE');
  };
  const metrics: Access = (ctx) => {
    if (!node.config.metrics.auth) return;
    if (ctx.identity !== '' && node.config.metrics.identities.includes(ctx.identity)) return;
    sysAdmin({ whileSealed: true })(ctx);
  };
  return { sysAdmin, commands, metrics };
}
