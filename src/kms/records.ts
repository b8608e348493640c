/**
 * Persisted records (JSON inside the barrier) and their in-memory forms. Every record carries
 * `"v": 1`; a reader refuses versions it does not know rather than guessing.
 *
 * Storage paths (names are restricted so that they never contain `/`, see names.ts):
 *   enclave/<enclave>             EnclaveRecord
 *   key/<enclave>/<key>           KeyRecord (every version of the key ring)
 *   policy/<enclave>/<policy>     PolicyRecord
 *   identity/<enclave>/<h1:…>     IdentityRecord
 */
import type { KeyType, PreparedKey } from '../crypto/ciphertext.js';
import type { Rules } from './policy.js';

export const PATH = {
  enclave: (e: string) => `enclave/${e}`,
  key: (e: string, k: string) => `key/${e}/${k}`,
  policy: (e: string, p: string) => `policy/${e}/${p}`,
  identity: (e: string, i: string) => `identity/${e}/${i}`,
} as const;

export const PRIVILEGE = { SysAdmin: 1, Admin: 2, User: 3 } as const;
export type Privilege = (typeof PRIVILEGE)[keyof typeof PRIVILEGE];

/**
 * The privilege a service account acts with, given its parent's: the parent's, but at most
 * Admin — a SysAdmin's rights are cluster-wide, a service account's end at its enclave.
 */
export function serviceAccountPrivilege(parent: Privilege): Privilege {
  return parent === PRIVILEGE.SysAdmin ? PRIVILEGE.Admin : parent;
}

export interface EnclaveRecord {
  v: 1;
  name: string;
  createdAt: string;
  createdBy: string;
}

export interface KeyVersionRecord {
  version: number;
  type: KeyType;
  key: string;
  createdAt: string;
  createdBy: string;
  imported?: boolean;
}

export interface KeyRecord {
  v: 1;
  name: string;
  /** Highest version ever created; deleted versions are never reused. */
  maxVersion: number;
  versions: KeyVersionRecord[];
}

export interface PolicyRecord {
  v: 1;
  name: string;
  /**
   * Random, set when the policy is created and kept when it is overwritten. Identities hold
   * the id they were assigned, so a policy deleted and created again under the same name is
   * not silently granted to the holders of the old one. Absent in records of older versions.
   */
  id?: string;
  allow: Rules;
  deny: Rules;
  createdAt: string;
  createdBy: string;
}

export interface IdentityRecord {
  v: 1;
  identity: string;
  privilege: Privilege;
  policy: string;
  /** The id of the policy when it was assigned (absent: assigned by an older version). */
  policyId?: string;
  createdAt: string;
  createdBy: string;
  serviceAccount: boolean;
  /** The identity that created this service account ('' otherwise). */
  parent: string;
  tags: Record<string, string>;
}

export function encodeRecord(record: { v: 1 }): Buffer {
  return Buffer.from(JSON.stringify(record), 'utf8');
}

export function decodeRecord<T extends { v: number }>(path: string, bytes: Buffer): T {
  let rec: T;
  try {
    rec = JSON.parse(bytes.toString('utf8')) as T;
  } catch {
    throw new Error(`corrupt record at ${path}: not JSON`);
  }
  if (rec.v !== 1) throw new Error(`record at ${path} has unsupported version ${String(rec.v)}`);
  return rec;
}

/** One version of a master key, ready for use (key bytes decoded). */
export interface KeyVersion {
  readonly version: number;
  readonly type: KeyType;
  readonly key: Buffer;
  readonly createdAt: Date;
  readonly createdBy: string;
  readonly imported: boolean;
  /** HMAC key for KEY:MAC, derived on first use. */
  macKey?: Buffer;
  /** The key made ready for the data path (crypto/ciphertext.ts), on first use. */
  prepared?: PreparedKey;
  /** Its creation is staged but not durable yet (kms/repo.ts): not used to seal or open. */
  pending?: boolean;
}

export interface KeyRing {
  readonly name: string;
  readonly rev: number;
  readonly maxVersion: number;
  /** Ascending by version; never empty. */
  readonly versions: readonly KeyVersion[];
}

export interface Policy extends PolicyRecord {
  readonly rev: number;
}

export interface Identity extends IdentityRecord {
  readonly rev: number;
}

export function keyRingFromRecord(rec: KeyRecord, rev: number): KeyRing {
  const versions = rec.versions
    .map((v) => ({
      version: v.version,
      type: v.type,
      key: Buffer.from(v.key, 'base64'),
      createdAt: new Date(v.createdAt),
      createdBy: v.createdBy,
      imported: v.imported === true,
    }))
    .sort((a, b) => a.version - b.version);
  return { name: rec.name, rev, maxVersion: rec.maxVersion, versions };
}

export function keyRingToRecord(ring: Omit<KeyRing, 'rev'>): KeyRecord {
  return {
    v: 1,
    name: ring.name,
    maxVersion: ring.maxVersion,
    versions: ring.versions.map((v) => ({
      version: v.version,
      type: v.type,
      key: v.key.toString('base64'),
      createdAt: v.createdAt.toISOString(),
      createdBy: v.createdBy,
      ...(v.imported ? { imported: true } : {}),
    })),
  };
}
