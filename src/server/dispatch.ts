/**
 * `POST /v1/kms[/{enclave}]`: decodes the command frames of a request, checks the batch rules
 * and the caller, and hands the frames to the command's row of the table (server/commands.ts),
 * which authorizes and runs each one and frames the responses (kms-wire.md §2.2–2.5).
 *
 * One request carries commands of one kind; batchable commands get one response frame per
 * request frame, in order. If any command fails the whole request fails with that error, and
 * since only read-only commands can be batched, a failed request has changed nothing.
 */
import { KmsError } from '../errors.js';
import { parseFrames } from '../protocol/frames.js';
import type { Kms, Principal } from '../kms/kms.js';
import { PRIVILEGE } from '../kms/records.js';
import type { CryptoPool } from '../crypto/pool.js';
import { COMMAND_TABLE, type ClusterOps, type DispatchTrace } from './commands.js';

export type { ClusterOps, DispatchTrace } from './commands.js';

export interface DispatchInput {
  readonly kms: Kms;
  readonly cluster: ClusterOps;
  /** The caller's `h1:` identity ('' without a client certificate). */
  readonly identity: string;
  /** Enclave from the URL ('' for `POST /v1/kms`). */
  readonly enclave: string;
  readonly body: Buffer;
  readonly maxFrames: number;
  /** Filled with what happened, if given. */
  readonly trace?: DispatchTrace;
  /** Threads for the cryptography of large KEY:GENERATE/ENCRYPT/DECRYPT batches. */
  readonly pool?: CryptoPool;
}

/**
 * Whether the caller may send commands to this URL at all — decided from the TLS identity and
 * the URL alone, before a byte of the body is read: a SysAdmin anywhere, otherwise an identity
 * of the URL's enclave (cluster commands, sent without an enclave, are SysAdmin-only).
 */
export function admitted(kms: Kms, identity: string, enclave: string): boolean {
  if (identity === '') return false;
  if (kms.isSysAdmin(identity)) return true;
  return enclave !== '' && kms.principal(identity, enclave).known;
}

const PRIVILEGE_NAMES: Record<number, string> = { [PRIVILEGE.SysAdmin]: 'SysAdmin', [PRIVILEGE.Admin]: 'Admin', [PRIVILEGE.User]: 'User' };

/** How the audit log names what the caller acts with: a service account's effective privilege. */
function privilegeName(p: Principal): string {
  const name = p.privilege === undefined ? '' : (PRIVILEGE_NAMES[p.privilege] ?? '');
  return p.serviceAccount ? `${name} (service account)` : name;
}

/** Runs every command frame of a request body and returns the response body. */
export function dispatch(x: DispatchInput): Buffer | Promise<Buffer> {
  const { kms, identity, enclave, trace } = x;
  // Without a client certificate nothing of the request is looked at (kms-wire.md §1.5).
  if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
  const frames = parseFrames(x.body, x.maxFrames);
  const code = frames[0]!.code;
  const entry = COMMAND_TABLE.get(code);
  if (!entry) throw new KmsError('ERR_UNKNOWN_COMMAND', `code ${code}`);
  const cmd = entry.command;
  if (trace) {
    trace.command = cmd;
    trace.frames = frames.length;
  }
  for (const f of frames) if (f.code !== code) throw new KmsError('ERR_MIXED_BATCH');
  if (frames.length > 1 && !cmd.batch) throw new KmsError('ERR_BATCH_NOT_ALLOWED', cmd.name);

  // Cluster and enclave-management commands ignore the URL's enclave (ENCLAVE:LIST is sent
  // with none, the others with their argument in the message).
  const scope = cmd.scope === 'cluster' ? '' : enclave;
  if (cmd.scope === 'enclave') {
    if (enclave === '') throw new KmsError('ERR_ENCLAVE_REQUIRED');
    if (kms.isSysAdmin(identity) && !kms.hasEnclave(enclave)) throw new KmsError('ERR_ENCLAVE_NOT_FOUND');
  }
  const principal = kms.principal(identity, scope);
  if (!principal.known) throw new KmsError('ERR_NOT_ALLOWED');
  if (trace) trace.privilege = privilegeName(principal);
  return entry.execute({
    c: { kms, principal, enclave: scope, cluster: x.cluster },
    frames,
    trace,
    pool: x.pool,
  });
}
