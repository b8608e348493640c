/**
 * What the load generator sends: request bodies of `POST /v1/kms/{enclave}` built once, up
 * front, so that encoding costs nothing during a measurement (except for KEY:CREATE/DELETE,
 * whose names change with every request).
 */
import { encodeFrames } from '../src/protocol/frames.js';
import { encodeMessage } from '../src/protocol/schema.js';
import { CommandCode as C } from '../src/protocol/commands.js';
import * as M from '../src/protocol/messages.js';

export type WorkloadKind = 'generate' | 'decrypt' | 'mix' | 'soak' | 'handshake';

export interface Workload {
  kind: WorkloadKind;
  /** Command frames per request (KEY:GENERATE / KEY:DECRYPT). */
  batch: number;
  /** The master key the data keys are generated under. */
  key: string;
  /** Associated data (base64): the ~150-byte JSON context MinIO sends. */
  ad: string;
  /** Ciphertexts (base64) of data keys generated with `ad`, for KEY:DECRYPT. */
  ciphertexts?: string[];
}

/**
 * The associated data MinIO binds a data key to: a JSON object naming the bucket and object
 * (about 150 bytes).
 */
export function minioContext(i = 0): Buffer {
  const object = `photos/2025/12/31/camera-roll/IMG_${String(20_000 + (i % 10_000)).padStart(6, '0')}.heic`;
  return Buffer.from(JSON.stringify({ 'x-minio-internal-server-side-encryption-context': `analytics-eu-west-1-bucket/${object}` }), 'utf8');
}

export function generateBody(w: Workload): Buffer {
  const ad = Buffer.from(w.ad, 'base64');
  const one = encodeMessage(M.GenerateKeyRequestSchema, { name: w.key, associatedData: ad, length: 32 });
  return encodeFrames(C.KeyGenerate, new Array<Uint8Array>(w.batch).fill(one));
}

/** `count` different KEY:DECRYPT bodies of `w.batch` frames each, cycling through the ciphertexts. */
export function decryptBodies(w: Workload, count: number): Buffer[] {
  const ad = Buffer.from(w.ad, 'base64');
  const cts = (w.ciphertexts ?? []).map((c) => Buffer.from(c, 'base64'));
  if (cts.length === 0) throw new Error('no ciphertexts to decrypt');
  const out: Buffer[] = [];
  let k = 0;
  for (let i = 0; i < count; i++) {
    const frames: Uint8Array[] = [];
    for (let j = 0; j < w.batch; j++)
      frames.push(
        encodeMessage(M.DecryptRequestSchema, { name: w.key, version: 1, ciphertext: cts[k++ % cts.length]!, associatedData: ad }),
      );
    out.push(encodeFrames(C.KeyDecrypt, frames));
  }
  return out;
}

export function createBody(name: string): Buffer {
  return encodeFrames(C.KeyCreate, [encodeMessage(M.CreateKeyRequestSchema, { name })]);
}

export function deleteBody(name: string): Buffer {
  return encodeFrames(C.KeyDelete, [encodeMessage(M.DeleteKeyRequestSchema, { name, allVersions: true })]);
}
