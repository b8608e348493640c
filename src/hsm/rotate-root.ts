/**
 * `minkms rotate-root`: replaces the Root Encryption Key. A new REK (the next "term") is
 * sealed by every HSM, every stored value is re-encrypted under it in batches, and finally the
 * new sealed entries replace the old ones in one transaction.
 *
 * Resumable: each barrier value records its term, and the new REK's sealed entries and a
 * `rotation` record are written before any value is touched, so a node that stops half-way
 * opens both generations at its next start and the next `rotate-root` continues where it was.
 */
import { randomBytes } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { Store, Condition, Mutation } from '../store/store.js';
import { termOf, type Barrier } from '../store/barrier.js';
import type { Hsm } from './hsm.js';
import { REK_NEXT_PREFIX, REK_PREFIX, ROTATION_KEY, isRootKeyRecord, sealEntry, type RootKey, type RotationRecord } from './root-key.js';

export interface RotationProgress {
  /** Values re-encrypted so far, of `total`. */
  done: number;
  total: number;
  /** The new REK generation. */
  term: number;
}

export const ROTATION_BATCH = 500;

/**
 * Rotates (or finishes rotating) the REK. The caller must keep other writers out while it
 * runs (the domain's write lock); reads go on. Returns the new root key; the barrier encrypts
 * under the new term from the first batch on.
 */
export async function rotateRoot(
  store: Store,
  hsms: readonly Hsm[],
  root: RootKey,
  barrier: Barrier,
  progress: (p: RotationProgress) => void = () => {},
  batchSize = ROTATION_BATCH,
): Promise<RootKey> {
  const entries = (await store.range(REK_PREFIX)).map((e) => e.key.slice(REK_PREFIX.length));
  const unconfigured = entries.filter((name) => !hsms.some((h) => h.name === name));
  if (unconfigured.length > 0) {
    throw new KmsError(
      'ERR_BAD_REQUEST',
      `hsm ${unconfigured.join(', ')} has a sealed root key entry but is not configured: configure it, or remove its entry with 'minkms rm-hsm', before rotating`,
    );
  }
  const sealers = hsms.filter((h) => entries.includes(h.name));

  // 1. The next REK, sealed by every HSM, recorded before any value changes.
  let next = root.next;
  if (!next) {
    next = { rek: randomBytes(32), term: root.term + 1 };
    const rotation: RotationRecord = { v: 1, term: next.term, startedAt: new Date().toISOString() };
    const conditions: Condition[] = [{ key: ROTATION_KEY, rev: 0 }];
    const mutations: Mutation[] = [{ key: ROTATION_KEY, value: Buffer.from(JSON.stringify(rotation)) }];
    for (const hsm of sealers) {
      const key = REK_NEXT_PREFIX + hsm.name;
      const stale = await store.get(key);
      conditions.push({ key, rev: stale?.rev ?? 0 });
      mutations.push({ key, value: await sealEntry(hsm, next.rek, root.clusterId, next.term) });
    }
    const res = await store.commit(conditions, mutations);
    if (!res.ok) throw new KmsError('ERR_CONFLICT', 'another root key rotation started');
  }
  barrier.addTerm(next.rek, next.term);

  // 2. Re-encrypt every value still under an older term, in batches.
  const pending = (await store.range('')).filter((e) => !isRootKeyRecord(e.key) && termOf(e.value) !== next.term);
  const total = pending.length;
  progress({ done: 0, total, term: next.term });
  for (let i = 0; i < total; i += batchSize) {
    const batch = pending.slice(i, i + batchSize);
    const res = await store.commit(
      batch.map((e) => ({ key: e.key, rev: e.rev })),
      batch.map((e) => ({ key: e.key, value: barrier.encrypt(e.key, barrier.decrypt(e.key, e.value)) })),
    );
    if (!res.ok) throw new KmsError('ERR_CONFLICT', 'a value changed during the root key rotation; run it again');
    progress({ done: Math.min(i + batchSize, total), total, term: next.term });
  }

  // 3. Swap the sealed entries in one transaction; the old REK is gone afterwards.
  const nextEntries = await store.range(REK_NEXT_PREFIX);
  const current = new Map((await store.range(REK_PREFIX)).map((e) => [e.key.slice(REK_PREFIX.length), e]));
  const rotation = await store.get(ROTATION_KEY);
  const conditions: Condition[] = [{ key: ROTATION_KEY, rev: rotation?.rev ?? 0 }];
  const mutations: Mutation[] = [{ key: ROTATION_KEY }];
  for (const e of nextEntries) {
    const name = e.key.slice(REK_NEXT_PREFIX.length);
    conditions.push({ key: e.key, rev: e.rev }, { key: REK_PREFIX + name, rev: current.get(name)?.rev ?? 0 });
    mutations.push({ key: e.key }, { key: REK_PREFIX + name, value: e.value });
    current.delete(name);
  }
  // An entry without a successor would keep the old REK: it cannot stay.
  for (const [name, e] of current) {
    conditions.push({ key: e.key, rev: e.rev });
    mutations.push({ key: REK_PREFIX + name });
  }
  const res = await store.commit(conditions, mutations);
  if (!res.ok) throw new KmsError('ERR_CONFLICT', 'the sealed root key entries changed during the rotation; run it again');
  barrier.dropOldTerms();
  progress({ done: total, total, term: next.term });
  return { rek: next.rek, term: next.term, clusterId: root.clusterId, created: false, unsealedBy: root.unsealedBy };
}
