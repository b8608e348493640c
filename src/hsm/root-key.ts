/**
 * The Root Encryption Key (REK) and its sealed entries, one per HSM.
 *
 * Store layout (plaintext: these records are needed before anything can be decrypted):
 *   `cluster`         {"v":1,"id":"<uuid>","createdAt":"<RFC 3339>"}
 *   `rek/<hsm>`       {"v":1,"hsm":"<name>","blob":"<base64>","createdAt":"<RFC 3339>","term":N}
 *   `rek-next/<hsm>`  the same, for the next REK while `minkms rotate-root` runs
 *   `rotation`        {"v":1,"term":N,"startedAt":"<RFC 3339>"} while a rotation runs
 *
 * Each blob is `hsm.seal(REK, aad)` with aad = "minkms rek v1|<cluster id>|<hsm name>" (and
 * "|term N" for REK generations after the first), so an entry cannot be replayed into another
 * cluster, under another HSM's name, or as another generation. `term` is absent (= 1) in
 * entries of the first generation.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Store, Mutation, Condition } from '../store/store.js';
import { HsmError, type Hsm } from './hsm.js';
import { KmsError } from '../errors.js';
import { apiKeyFromSeed, type ApiKey } from '../identity/api-key.js';

export const CLUSTER_KEY = 'cluster';
export const REK_PREFIX = 'rek/';
export const REK_NEXT_PREFIX = 'rek-next/';
export const ROTATION_KEY = 'rotation';

/** Store keys that hold plaintext (not barrier-encrypted) records. */
export function isRootKeyRecord(key: string): boolean {
  return key === CLUSTER_KEY || key === ROTATION_KEY || key.startsWith(REK_PREFIX) || key.startsWith(REK_NEXT_PREFIX);
}

interface ClusterRecord {
  v: 1;
  id: string;
  createdAt: string;
}

interface SealedEntry {
  v: 1;
  hsm: string;
  blob: string;
  createdAt: string;
  term?: number;
}

export interface RotationRecord {
  v: 1;
  term: number;
  startedAt: string;
}

export interface RootKey {
  readonly rek: Buffer;
  /** REK generation (1 for the first; each `rotate-root` adds one). */
  readonly term: number;
  /** The next REK while a rotation is in progress. */
  readonly next?: { readonly rek: Buffer; readonly term: number };
  readonly clusterId: string;
  /** True if the cluster was created by this call (first start on an empty store). */
  readonly created: boolean;
  /** HSM that opened the REK. */
  readonly unsealedBy: string;
}

/** No configured HSM could open the REK. `permanent` if retrying cannot help. */
export class SealedError extends Error {
  readonly permanent: boolean;
  constructor(message: string, permanent: boolean) {
    super(message);
    this.name = 'SealedError';
    this.permanent = permanent;
  }
}

function sealAad(clusterId: string, hsmName: string, term: number): Buffer {
  return Buffer.from(`minkms rek v1|${clusterId}|${hsmName}${term === 1 ? '' : `|term ${term}`}`, 'utf8');
}

export function parseJson<T>(what: string, value: Buffer): T {
  try {
    const v = JSON.parse(value.toString('utf8')) as { v?: unknown };
    if (v.v !== 1) throw new Error(`unsupported version ${String(v.v)}`);
    return v as T;
  } catch (err) {
    throw new Error(`corrupt ${what} record: ${(err as Error).message}`, { cause: err });
  }
}

async function readCluster(store: Store): Promise<{ record: ClusterRecord; rev: number } | undefined> {
  const e = await store.get(CLUSTER_KEY);
  return e && { record: parseJson<ClusterRecord>('cluster', e.value), rev: e.rev };
}

/** The cluster id, the REK generation of the sealed entries, and whether a rotation runs. */
export async function rootKeyState(
  store: Store,
): Promise<{ clusterId: string | undefined; entries: string[]; term: number; rotating: boolean }> {
  const [cluster, entries, rotation] = await Promise.all([readCluster(store), store.range(REK_PREFIX), store.get(ROTATION_KEY)]);
  let term = 0;
  for (const e of entries) term = Math.max(term, parseJson<SealedEntry>('sealed root key', e.value).term ?? 1);
  return {
    clusterId: cluster?.record.id,
    entries: entries.map((e) => e.key.slice(REK_PREFIX.length)),
    term,
    rotating: rotation !== undefined,
  };
}

/** Names of the HSMs that have a sealed entry in the store. */
export async function sealedEntryNames(store: Store): Promise<string[]> {
  return (await store.range(REK_PREFIX)).map((e) => e.key.slice(REK_PREFIX.length));
}

export async function sealEntry(hsm: Hsm, rek: Buffer, clusterId: string, term: number): Promise<Buffer> {
  const blob = await hsm.seal(rek, sealAad(clusterId, hsm.name, term));
  const entry: SealedEntry = {
    v: 1,
    hsm: hsm.name,
    blob: blob.toString('base64'),
    createdAt: new Date().toISOString(),
    ...(term === 1 ? {} : { term }),
  };
  return Buffer.from(JSON.stringify(entry));
}

/** Opens a sealed entry (a `rek/` or `rek-next/` value) with its HSM. */
export async function unsealEntry(hsm: Hsm, value: Buffer, clusterId: string): Promise<{ rek: Buffer; term: number; blob: Buffer }> {
  const entry = parseJson<SealedEntry>(`sealed root key (${hsm.name})`, value);
  const term = entry.term ?? 1;
  const blob = Buffer.from(entry.blob, 'base64');
  const rek = await hsm.unseal(blob, sealAad(clusterId, hsm.name, term));
  if (rek.length !== 32) throw new HsmError(`${hsm.name}: unsealed root key has the wrong length`, true);
  return { rek, term, blob };
}

/**
 * Opens the REK with the first configured HSM whose entry it can unseal, creating the cluster
 * (random REK, one sealed entry per HSM) on an empty store. Sealing for configured HSMs that
 * have no entry yet is the caller's (`addHsmEntry`). Never writes anything if unsealing fails.
 *
 * @throws SealedError when no HSM can open the REK.
 */
export async function openRootKey(store: Store, hsms: readonly Hsm[], notice: (msg: string) => void = () => {}): Promise<RootKey> {
  if (hsms.length === 0) throw new SealedError('kms: no HSM provided', true);
  const cluster = await readCluster(store);
  if (!cluster) return createCluster(store, hsms, notice);

  const clusterId = cluster.record.id;
  const entries = new Map((await store.range(REK_PREFIX)).map((e) => [e.key.slice(REK_PREFIX.length), e]));
  if (entries.size === 0) throw new SealedError('the database has no sealed root key entry: it is damaged; restore a backup', true);

  const failures: string[] = [];
  let permanent = true;
  let opened: { rek: Buffer; term: number; by: Hsm } | undefined;
  for (const hsm of hsms) {
    const e = entries.get(hsm.name);
    if (!e) continue;
    try {
      const { rek, term, blob } = await unsealEntry(hsm, e.value, clusterId);
      opened = { rek, term, by: hsm };
      await resealIfOutdated(store, hsm, blob, e.rev, rek, clusterId, term, notice);
      break;
    } catch (err) {
      failures.push((err as Error).message);
      if (err instanceof HsmError && !err.permanent) permanent = false;
    }
  }
  if (!opened) {
    if (failures.length === 0) {
      const have = [...entries.keys()].join(', ');
      const configured = hsms.map((h) => h.name).join(', ');
      throw new SealedError(`no configured HSM has a sealed root key entry (entries: ${have}; configured: ${configured})`, true);
    }
    throw new SealedError(failures.join('; '), permanent);
  }

  // An interrupted rotate-root: open the next REK too, so values of both generations read.
  let next: RootKey['next'];
  if (await store.get(ROTATION_KEY)) {
    const e = await store.get(REK_NEXT_PREFIX + opened.by.name);
    if (!e) throw new SealedError(`a root key rotation is in progress but ${opened.by.name} has no entry for the next root key`, true);
    const n = await unsealEntry(opened.by, e.value, clusterId);
    next = { rek: n.rek, term: n.term };
    notice('a root key rotation was interrupted: run `minkms rotate-root` again to finish it');
  }
  return { rek: opened.rek, term: opened.term, next, clusterId, created: false, unsealedBy: opened.by.name };
}

/** After the HSM's key was rotated, reseal its entry under the new version (old entries still open). */
async function resealIfOutdated(
  store: Store,
  hsm: Hsm,
  blob: Buffer,
  rev: number,
  rek: Buffer,
  clusterId: string,
  term: number,
  notice: (msg: string) => void,
): Promise<void> {
  if (!hsm.isCurrent) return;
  try {
    if (await hsm.isCurrent(blob)) return;
    const key = REK_PREFIX + hsm.name;
    const res = await store.commit([{ key, rev }], [{ key, value: await sealEntry(hsm, rek, clusterId, term) }]);
    if (res.ok) notice(`resealed the root key entry of ${hsm.name} under the HSM key's latest version`);
  } catch (err) {
    notice(`could not reseal the root key entry of ${hsm.name}: ${(err as Error).message}`);
  }
}

/**
 * First start on an empty store: a new cluster record and REK, sealed for every configured
 * HSM, written in ONE compare-and-set (the cluster record and every entry must be absent). Of
 * several nodes starting together on the same empty store exactly one wins; every other one
 * sees its commit refused, or finds the winner's records when it looks, and joins the winner's
 * cluster by opening its REK.
 */
async function createCluster(store: Store, hsms: readonly Hsm[], notice: (msg: string) => void): Promise<RootKey> {
  const existing = await store.range('');
  // The winner of a concurrent first start wrote its cluster record (atomically with its
  // sealed entries) after we found none: join it.
  if (existing.some((e) => e.key === CLUSTER_KEY)) return openRootKey(store, hsms, notice);
  if (existing.length > 0) throw new SealedError('the database has data but no cluster record: it is damaged; restore a backup', true);
  const clusterId = randomUUID();
  const rek = randomBytes(32);
  const conditions: Condition[] = [{ key: CLUSTER_KEY, rev: 0 }];
  const record: ClusterRecord = { v: 1, id: clusterId, createdAt: new Date().toISOString() };
  const mutations: Mutation[] = [{ key: CLUSTER_KEY, value: Buffer.from(JSON.stringify(record)) }];
  for (const hsm of hsms) {
    // A cluster is only created if every configured HSM can seal: a half-sealed start is a trap.
    const value = await sealEntry(hsm, rek, clusterId, 1).catch((err: unknown) => {
      throw new SealedError(`cannot initialize: ${(err as Error).message}`, err instanceof HsmError && err.permanent);
    });
    conditions.push({ key: REK_PREFIX + hsm.name, rev: 0 });
    mutations.push({ key: REK_PREFIX + hsm.name, value });
  }
  const res = await store.commit(conditions, mutations);
  if (!res.ok) {
    rek.fill(0);
    return openRootKey(store, hsms, notice); // another node initialized first: join its cluster
  }
  return { rek, term: 1, clusterId, created: true, unsealedBy: hsms[0]!.name };
}

/** CLUSTER:ADDHSM — seal the REK for a configured HSM (replacing its entry if `overwrite`). */
export async function addHsmEntry(store: Store, hsm: Hsm, root: RootKey, overwrite: boolean): Promise<void> {
  const key = REK_PREFIX + hsm.name;
  if (root.next) throw new KmsError('ERR_BAD_REQUEST', 'a root key rotation is in progress: finish it with `minkms rotate-root` first');
  const current = await store.get(key);
  if (current && !overwrite) throw new KmsError('ERR_HSM_EXISTS');
  let value: Buffer;
  try {
    value = await sealEntry(hsm, root.rek, root.clusterId, root.term);
    // Prove the new entry opens before it replaces anything.
    const check = await unsealEntry(hsm, value, root.clusterId);
    if (!check.rek.equals(root.rek)) throw new HsmError(`${hsm.name}: sealed entry does not round-trip`, true);
  } catch (err) {
    // The caller (a SysAdmin) sees why: the device is away, the key refused, …
    if (err instanceof HsmError) throw new KmsError('ERR_HSM_FAILED', err.message, { cause: err });
    throw err;
  }
  const res = await store.commit([{ key, rev: current?.rev ?? 0 }], [{ key, value }]);
  if (!res.ok) throw new KmsError('ERR_HSM_EXISTS', 'concurrent change');
}

/**
 * CLUSTER:REMOVEHSM — delete an HSM's entry. Refused for the last entry and when no other
 * configured HSM holds an entry (the database could not be opened at the next start).
 */
export async function removeHsmEntry(store: Store, name: string, configured: readonly Hsm[]): Promise<void> {
  const entries = await store.range(REK_PREFIX);
  const target = entries.find((e) => e.key === REK_PREFIX + name);
  if (!target) throw new KmsError('ERR_HSM_NOT_FOUND');
  const others = entries.filter((e) => e !== target).map((e) => e.key.slice(REK_PREFIX.length));
  if (others.length === 0) throw new KmsError('ERR_HSM_LAST');
  if (!configured.some((h) => h.name !== name && others.includes(h.name))) {
    throw new KmsError('ERR_HSM_LAST', 'no other configured hsm could unseal the database');
  }
  const res = await store.commit([{ key: target.key, rev: target.rev }], [{ key: target.key }]);
  if (!res.ok) throw new KmsError('ERR_HSM_NOT_FOUND', 'concurrent change');
}

/**
 * The root (SysAdmin) API key derived from an HSM, used when the configuration names no
 * `admin.identity`. Deterministic: `minkms identity hsm:aes256:…` prints the same key.
 */
export async function deriveRootApiKey(hsm: Hsm): Promise<ApiKey> {
  return apiKeyFromSeed(await hsm.deriveKey('root-api-key'));
}
