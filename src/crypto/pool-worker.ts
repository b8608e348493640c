/**
 * A thread of the crypto pool (`pool.ts`, which describes the job format): unpacks a job,
 * seals or opens every item, zeroes the job (it held master keys and data) and sends the
 * answer back. Holds no state between jobs.
 */
import { parentPort } from 'node:worker_threads';
import { CIPHERTEXT_OVERHEAD, MASTER_KEY_LENGTH, PreparedKey, openWithKey, sealWithKey } from './ciphertext.js';
import { randomBytesPooled } from './random.js';

const OP_GENERATE = 1;
const OP_ENCRYPT = 2;

function run(job: Uint8Array): Uint8Array {
  const view = new DataView(job.buffer, job.byteOffset, job.byteLength);
  let pos = 0;
  const op = job[pos++]!;
  const nKeys = job[pos++]!;
  const keys: PreparedKey[] = [];
  for (let i = 0; i < nKeys; i++) {
    const type = job[pos++] === 0 ? 'AES256' : 'ChaCha20';
    keys.push(new PreparedKey(type, job.subarray(pos, pos + MASTER_KEY_LENGTH)));
    pos += MASTER_KEY_LENGTH;
  }
  const nItems = view.getUint32(pos);
  pos += 4;
  // First pass: the answer's size.
  let size = 4;
  for (let i = 0, p = pos; i < nItems; i++) {
    const n = view.getUint32(p + 1);
    const adLength = view.getUint32(p + 5);
    p += 9 + (op === OP_GENERATE ? 0 : n) + adLength;
    size += op === OP_GENERATE ? 2 * n + CIPHERTEXT_OVERHEAD : op === OP_ENCRYPT ? n + CIPHERTEXT_OVERHEAD : n - CIPHERTEXT_OVERHEAD;
  }
  const out = new Uint8Array(new ArrayBuffer(size));
  new DataView(out.buffer).setInt32(0, -1);
  let o = 4;
  try {
    for (let i = 0; i < nItems; i++) {
      const key = keys[job[pos]!]!;
      const n = view.getUint32(pos + 1);
      const adLength = view.getUint32(pos + 5);
      pos += 9;
      if (op === OP_GENERATE) {
        const ad = job.subarray(pos, pos + adLength);
        pos += adLength;
        const dek = randomBytesPooled(n);
        out.set(dek, o);
        out.set(sealWithKey(key, dek, ad), o + n);
        dek.fill(0);
        o += 2 * n + CIPHERTEXT_OVERHEAD;
        continue;
      }
      const data = job.subarray(pos, pos + n);
      const ad = job.subarray(pos + n, pos + n + adLength);
      pos += n + adLength;
      if (op === OP_ENCRYPT) {
        out.set(sealWithKey(key, data, ad), o);
        o += n + CIPHERTEXT_OVERHEAD;
      } else {
        let plaintext: Buffer;
        try {
          plaintext = openWithKey(key, data, ad);
        } catch {
          out.fill(0);
          new DataView(out.buffer).setInt32(0, i);
          return out.subarray(0, 4);
        }
        out.set(plaintext, o);
        plaintext.fill(0);
        o += n - CIPHERTEXT_OVERHEAD;
      }
    }
    return out;
  } finally {
    for (const k of keys) k.wipe();
    job.fill(0);
  }
}

parentPort!.on('message', (m: { id: number; buf: ArrayBuffer }) => {
  const out = run(new Uint8Array(m.buf));
  const buf =
    out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? (out.buffer as ArrayBuffer) : (out.slice().buffer as ArrayBuffer);
  parentPort!.postMessage({ id: m.id, buf }, [buf]);
});
