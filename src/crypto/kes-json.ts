/**
 * The JSON ciphertext format of older KES releases (and of MinIO objects written through them),
 * read — never written — so that data keys sealed years ago still open after their keys were
 * imported here. Later KES releases write the binary format of ciphertext.ts, which is this
 * format's fields concatenated: `bytes ‖ iv ‖ nonce`.
 *
 * ```
 * {"aead": ALGORITHM, "id": KEY-ID (optional), "iv": b64(16 bytes), "nonce": b64(12 bytes), "bytes": b64(ct ‖ tag)}
 * ```
 *
 * | `aead` (as written by KES over the years)                      | per-message key, AEAD |
 * |------------------------------------------------------------------|-----------------------|
 * | `AES-256-GCM-HMAC-SHA-256` (also `AES256`, `AES256-GCM_SHA256`)  | HMAC-SHA256(key, iv), AES-256-GCM |
 * | `ChaCha20Poly1305` (also `ChaCha20`, `XCHACHA20-POLY1305`)       | HChaCha20(key, iv), ChaCha20-Poly1305 |
 * | `AES-256-GCM` (the earliest releases' documentation)             | as `AES-256-GCM-HMAC-SHA-256`; failing that, the key itself |
 *
 * In this format the ciphertext, not the key, names the algorithm: an old KES key had no type
 * and sealed with AES or ChaCha20 depending on the CPU it ran on. The optional `id` is not
 * checked: authentication decides, like for every ciphertext.
 */
import { createDecipheriv } from 'node:crypto';
import { KmsError } from '../errors.js';
import { IV_LENGTH, NONCE_LENGTH, TAG_LENGTH, decryptWithKey, type KeyType } from './ciphertext.js';

/** A parsed JSON ciphertext: the binary form and how it may have been sealed. */
export interface KesJsonCiphertext {
  readonly type: KeyType;
  /** `bytes ‖ iv ‖ nonce`: the binary format of the same ciphertext. */
  readonly binary: Buffer;
  /** `AES-256-GCM`: also try AES-256-GCM under the master key itself. */
  readonly direct: boolean;
}

const ALGORITHMS: Readonly<Record<string, { type: KeyType; direct: boolean }>> = {
  'AES-256-GCM-HMAC-SHA-256': { type: 'AES256', direct: false },
  AES256: { type: 'AES256', direct: false },
  'AES256-GCM_SHA256': { type: 'AES256', direct: false },
  'AES-256-GCM': { type: 'AES256', direct: true },
  ChaCha20Poly1305: { type: 'ChaCha20', direct: false },
  ChaCha20: { type: 'ChaCha20', direct: false },
  'XCHACHA20-POLY1305': { type: 'ChaCha20', direct: false },
};

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** Whether a ciphertext may be in the JSON format (cheap: its first and last byte). */
export function mayBeKesJson(ciphertext: Uint8Array): boolean {
  return ciphertext.length > 0 && ciphertext[0] === OPEN_BRACE && ciphertext[ciphertext.length - 1] === CLOSE_BRACE;
}

/** Strict standard base64 (what Go's encoding/json writes for []byte), or undefined. */
function base64(v: unknown): Buffer | undefined {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) return undefined;
  const b = Buffer.from(v, 'base64');
  return b.toString('base64') === v ? b : undefined;
}

/**
 * Parses the JSON format; undefined if `ciphertext` is not in it (then it is a binary
 * ciphertext — one that happens to start with `{` and end with `}` is no valid JSON of this
 * shape, like MinIO decides).
 */
export function parseKesJsonCiphertext(ciphertext: Uint8Array): KesJsonCiphertext | undefined {
  if (!mayBeKesJson(ciphertext)) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return undefined;
  const o = doc as Record<string, unknown>;
  const alg = typeof o.aead === 'string' && Object.hasOwn(ALGORITHMS, o.aead) ? ALGORITHMS[o.aead] : undefined;
  const iv = base64(o.iv);
  const nonce = base64(o.nonce);
  const bytes = base64(o.bytes);
  if (!alg || !iv || !nonce || !bytes) return undefined;
  if (iv.length !== IV_LENGTH || nonce.length !== NONCE_LENGTH || bytes.length < TAG_LENGTH) return undefined;
  if (o.id !== undefined && typeof o.id !== 'string') return undefined;
  return { type: alg.type, binary: Buffer.concat([bytes, iv, nonce]), direct: alg.direct };
}

/**
 * Opens a JSON-format ciphertext with a 32-byte master key (any key type: the ciphertext names
 * its algorithm).
 * @throws KmsError ERR_DECRYPT if it does not authenticate.
 */
export function openKesJson(c: KesJsonCiphertext, masterKey: Uint8Array, associatedData: Uint8Array): Buffer {
  try {
    return decryptWithKey(c.type, masterKey, c.binary, associatedData);
  } catch (err) {
    if (!c.direct) throw err;
  }
  return openDirectAesGcm(masterKey, c.binary, associatedData);
}

/** AES-256-GCM under the master key itself, with the nonce of `ct ‖ tag ‖ iv ‖ nonce`. */
function openDirectAesGcm(masterKey: Uint8Array, binary: Buffer, associatedData: Uint8Array): Buffer {
  const n = binary.length - TAG_LENGTH - IV_LENGTH - NONCE_LENGTH;
  let plaintext: Buffer | undefined;
  try {
    const d = createDecipheriv('aes-256-gcm', masterKey, binary.subarray(binary.length - NONCE_LENGTH), { authTagLength: TAG_LENGTH });
    d.setAuthTag(binary.subarray(n, n + TAG_LENGTH));
    d.setAAD(associatedData, { plaintextLength: n });
    plaintext = d.update(binary.subarray(0, n));
    d.final();
    return plaintext;
  } catch {
    plaintext?.fill(0);
    throw new KmsError('ERR_DECRYPT');
  }
}
