/**
 * Backup snapshots (`GET /v1/db`, `PUT /v1/db`, `minkms backup`/`restore`): every store entry
 * as it is stored — values stay encrypted by the barrier, root key entries stay sealed — so a
 * snapshot is only useful together with an HSM that can unseal it.
 *
 * Format v1:
 *   "MINKMS-SNAPSHOT\n"                                 magic (16 bytes)
 *   uint32 BE n, n bytes of JSON                        {"v":1,"clusterId":…,"createdAt":…,"entries":N}
 *   N × (uint32 BE key length, key, uint32 BE value length, value)
 *   32 bytes SHA-256 of everything before it            detects truncation and corruption
 */
import { createHash } from 'node:crypto';

export const SNAPSHOT_MAGIC = Buffer.from('MINKMS-SNAPSHOT\n', 'latin1');

export interface SnapshotMeta {
  v: 1;
  clusterId: string;
  createdAt: string;
  entries: number;
}

export interface SnapshotEntry {
  key: string;
  value: Buffer;
}

export class SnapshotError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotError';
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

export function encodeSnapshot(clusterId: string, entries: readonly SnapshotEntry[]): Buffer {
  const meta: SnapshotMeta = { v: 1, clusterId, createdAt: new Date().toISOString(), entries: entries.length };
  const metaBytes = Buffer.from(JSON.stringify(meta));
  const parts: Buffer[] = [SNAPSHOT_MAGIC, u32(metaBytes.length), metaBytes];
  for (const e of entries) {
    const key = Buffer.from(e.key, 'utf8');
    parts.push(u32(key.length), key, u32(e.value.length), e.value);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

/** @throws SnapshotError with a message saying what is wrong with the file. */
export function decodeSnapshot(buf: Buffer): { meta: SnapshotMeta; entries: SnapshotEntry[] } {
  if (buf.length < SNAPSHOT_MAGIC.length || !buf.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC)) {
    throw new SnapshotError('not a minkms backup (unknown file format)');
  }
  if (buf.length < SNAPSHOT_MAGIC.length + 4 + 32) throw new SnapshotError('corrupt backup: truncated');
  const body = buf.subarray(0, buf.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(buf.subarray(buf.length - 32))
  ) {
    throw new SnapshotError('corrupt backup: checksum mismatch (truncated or altered)');
  }
  let pos = SNAPSHOT_MAGIC.length;
  const take = (n: number): Buffer => {
    if (pos + n > body.length) throw new SnapshotError('corrupt backup: truncated record');
    const out = body.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const len = () => take(4).readUInt32BE(0);
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(take(len()).toString('utf8')) as SnapshotMeta;
  } catch (err) {
    if (err instanceof SnapshotError) throw err;
    throw new SnapshotError('corrupt backup: unreadable header');
  }
  if (meta.v !== 1) throw new SnapshotError(`unsupported backup format version ${String(meta.v)}`);
  const entries: SnapshotEntry[] = [];
  for (let i = 0; i < meta.entries; i++) {
    const key = take(len()).toString('utf8');
    entries.push({ key, value: Buffer.from(take(len())) });
  }
  if (pos !== body.length) throw new SnapshotError('corrupt backup: trailing data');
  return { meta, entries };
}
