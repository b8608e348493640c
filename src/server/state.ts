/**
 * A node's state as one immutable value: **sealed** (why, since when, what it waits for) or
 * **unsealed** (with its key database and domain). The node holds it in one reference and
 * replaces it in one assignment, never changing it in place, so a handler that reads it once
 * per request can never see half of a transition (KES swaps its server state the same way).
 *
 * The domain (`Kms`) inside an unsealed state is itself mutable — writes change it — but which
 * domain, barrier, root key and HSMs belong together only ever changes by a new state.
 */
import { KmsError } from '../errors.js';
import type { Hsm } from '../hsm/hsm.js';
import type { RootKey } from '../hsm/root-key.js';
import type { Kms } from '../kms/kms.js';
import type { Barrier } from '../store/barrier.js';

/** The root (SysAdmin) identity and where it comes from. */
export interface RootIdentity {
  readonly identity: string;
  /** `admin.identity`, or the name of the HSM the root API key is derived from. */
  readonly source: string;
  /** The API key, when this node can derive it (printed in the banner, never logged). */
  readonly apiKey?: string;
  /** Set when the identity was derived anew while unsealing: the HSM whose entry was removed. */
  readonly replaced?: string;
  /** Earlier root identities (their HSM entry was removed), for a clear error to their callers. */
  readonly retired: readonly { readonly identity: string; readonly hsm: string }[];
}

interface Common {
  /** When this state began (ms since the epoch). */
  readonly since: number;
  /** The configured HSMs, in priority order. */
  readonly hsms: readonly Hsm[];
  /** Names of the HSMs with a sealed root key entry in the store (empty if unknown). */
  readonly entries: readonly string[];
}

export interface SealedState extends Common {
  readonly kind: 'sealed';
  /** Why the node cannot unseal (for the log, the status and the 503 answers). */
  readonly reason: string;
  /** What the operator can do about it. */
  readonly hint: string;
}

export interface UnsealedState extends Common {
  readonly kind: 'unsealed';
  readonly root: RootKey;
  readonly barrier: Barrier;
  readonly kms: Kms;
  readonly rootIdentity: RootIdentity;
  /** Configured HSMs without a sealed entry, with why sealing for them failed last. */
  readonly pending: ReadonlyMap<string, string>;
}

export type NodeState = SealedState | UnsealedState;

/** The unsealed state, or the 503 every command gets while sealed. */
export function unsealed(state: NodeState): UnsealedState {
  if (state.kind !== 'unsealed') throw new KmsError('ERR_SEALED');
  return state;
}

/** Names of configured HSMs. */
export function hsmNames(state: NodeState): string[] {
  return state.hsms.map((h) => h.name);
}
