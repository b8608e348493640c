/**
 * The root (SysAdmin) identity when the configuration names no `admin.identity`.
 *
 * The rule: the root API key is derived from one HSM — the first one configured when the
 * database was created — and the identity it was derived from is **recorded in the store**
 * (`root-identity`, encrypted by the barrier like every other record). Every node reads it from
 * there, so all nodes of a cluster accept the same root key at every moment, whatever HSMs each
 * one has configured during a rolling change. The identity changes only when the entry of the
 * HSM it was derived from is removed (`minkms rm-hsm`, or the automatic removal of an entry no
 * node has configured any more): the node that removes the entry derives a new root API key
 * from an HSM that still has one, and writes both changes in one commit. The old identity is
 * kept in the record (the last few), so that its key gets a clear "no longer valid" answer
 * rather than a permission error.
 */
import type { ApiKey } from '../identity/api-key.js';
import type { Hsm } from '../hsm/hsm.js';
import { deriveRootApiKey } from '../hsm/root-key.js';
import { decodeRecord, encodeRecord } from '../kms/records.js';
import type { Barrier } from '../store/barrier.js';
import type { Mutation, Store } from '../store/store.js';

export const ROOT_IDENTITY_PATH = 'root-identity';
/** How many earlier root identities are remembered. */
const MAX_RETIRED = 8;

export interface RootIdentityRecord {
  v: 1;
  identity: string;
  /** The HSM the root API key is derived from. */
  hsm: string;
  since: string;
  retired: { identity: string; hsm: string; until: string }[];
}

export async function loadRootIdentity(store: Store, barrier: Barrier): Promise<{ record: RootIdentityRecord; rev: number } | undefined> {
  const e = await store.get(ROOT_IDENTITY_PATH);
  return e && { record: decodeRootIdentity(barrier, e.value), rev: e.rev };
}

export function decodeRootIdentity(barrier: Barrier, value: Buffer): RootIdentityRecord {
  return decodeRecord<RootIdentityRecord>(ROOT_IDENTITY_PATH, barrier.decrypt(ROOT_IDENTITY_PATH, value));
}

export function putRootIdentity(barrier: Barrier, record: RootIdentityRecord): Mutation {
  return { key: ROOT_IDENTITY_PATH, value: barrier.encrypt(ROOT_IDENTITY_PATH, encodeRecord(record)) };
}

/** The root API key derived from `hsm`, and the record naming it (the old one retired, if any). */
export async function deriveRootIdentity(hsm: Hsm, previous?: RootIdentityRecord): Promise<{ apiKey: ApiKey; record: RootIdentityRecord }> {
  const apiKey = await deriveRootApiKey(hsm);
  const now = new Date().toISOString();
  const retired = previous ? [{ identity: previous.identity, hsm: previous.hsm, until: now }, ...previous.retired] : [];
  return {
    apiKey,
    record: {
      v: 1,
      identity: apiKey.identity,
      hsm: hsm.name,
      since: now,
      retired: retired.filter((r) => r.identity !== apiKey.identity).slice(0, MAX_RETIRED),
    },
  };
}
