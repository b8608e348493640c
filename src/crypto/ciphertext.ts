/**
 * The KES/MinKMS-compatible ciphertext format (kms-wire.md §4).
 *
 * ```
 * ciphertext = AEAD_Seal(K, nonce, plaintext, associatedData)   // ct || 16-byte tag
 *              || iv (16 random bytes) || nonce (12 random bytes)
 * ```
 *
 * The per-message key `K` is derived from the 32-byte master key (one key version) and the iv:
 * - `AES256`:   K = HMAC-SHA256(masterKey, iv), AEAD = AES-256-GCM (NIST SP 800-38D).
 * - `ChaCha20`: K = HChaCha20(masterKey, iv),   AEAD = ChaCha20-Poly1305 (RFC 8439 §2.8).
 *
 * Overhead: 44 bytes (16 tag + 16 iv + 12 nonce). The key version travels outside the ciphertext.
 *
 * Wear-out: every message gets its own AEAD key derived from a 128-bit random iv, and a random
 * 96-bit nonce. A (key, nonce) pair repeats only if iv AND nonce repeat, i.e. 224 random bits:
 * the collision risk stays below 2^-32 for about 2^96 messages per master key version, far beyond
 * any realistic use (compare the 2^32-message limit of plain random-nonce AES-GCM, `aead.ts`).
 *
 * This is the hot path (KEY:GENERATE, KEY:ENCRYPT, KEY:DECRYPT): no needless copies, per-message
 * keys are zeroed right after use.
 */

import {
  createCipheriv,
  createDecipheriv,
  type CipherChaCha20Poly1305,
  type CipherGCM,
  type DecipherChaCha20Poly1305,
  type DecipherGCM,
} from 'node:crypto';
import { KmsError } from '../protocol/errors.js';
import { hchacha20 } from './hchacha20.js';
import { hmacSha256 } from './hmac.js';
import { randomBytesPooled } from './random.js';

/** The key types on the wire (`KeyStatus.Type`). */
export type KeyType = 'AES256' | 'ChaCha20';

/** All key types, in wire spelling. */
export const KEY_TYPES: readonly KeyType[] = ['AES256', 'ChaCha20'];

/** Length of a master key (one key version), in bytes. */
export const MASTER_KEY_LENGTH = 32;
/** Length of the random iv appended to a ciphertext. */
export const IV_LENGTH = 16;
/** Length of the AEAD nonce appended to a ciphertext. */
export const NONCE_LENGTH = 12;
/** Length of the AEAD authentication tag. */
export const TAG_LENGTH = 16;
/** Total overhead of a ciphertext over its plaintext: tag + iv + nonce = 44 bytes. */
export const CIPHERTEXT_OVERHEAD = TAG_LENGTH + IV_LENGTH + NONCE_LENGTH;

/** Type guard for wire key type strings. */
export function isKeyType(s: unknown): s is KeyType {
  return s === 'AES256' || s === 'ChaCha20';
}

const AEAD_OPTIONS = { authTagLength: TAG_LENGTH } as const;

function newCipher(type: KeyType, key: Buffer, nonce: Uint8Array): CipherGCM | CipherChaCha20Poly1305 {
  return type === 'AES256'
    ? createCipheriv('aes-256-gcm', key, nonce, AEAD_OPTIONS)
    : createCipheriv('chacha20-poly1305', key, nonce, AEAD_OPTIONS);
}

function newDecipher(type: KeyType, key: Buffer, nonce: Uint8Array): DecipherGCM | DecipherChaCha20Poly1305 {
  return type === 'AES256'
    ? createDecipheriv('aes-256-gcm', key, nonce, AEAD_OPTIONS)
    : createDecipheriv('chacha20-poly1305', key, nonce, AEAD_OPTIONS);
}

function checkArgs(type: KeyType, masterKey: Uint8Array, fn: string): void {
  if (type !== 'AES256' && type !== 'ChaCha20') {
    throw new TypeError(`${fn}: unknown key type`);
  }
  if (masterKey.length !== MASTER_KEY_LENGTH) {
    throw new RangeError(`${fn}: master key must be ${MASTER_KEY_LENGTH} bytes, got ${masterKey.length}`);
  }
}

/**
 * Encrypts `plaintext` under one master key version, binding `associatedData`.
 *
 * @param type           key type of the master key.
 * @param masterKey      32-byte master key version. Not modified.
 * @param plaintext      data to encrypt (any length, including 0).
 * @param associatedData authenticated but not encrypted context (may be empty).
 * @param iv             16-byte iv; random (pooled) if omitted. Only for test vectors.
 * @param nonce          12-byte nonce; random (pooled) if omitted. Only for test vectors.
 * @returns a new Buffer `ct || tag || iv || nonce` of length `plaintext.length + 44`.
 * @throws TypeError / RangeError on invalid arguments (a bug in the caller, not a client error).
 */
export function encryptWithKey(
  type: KeyType,
  masterKey: Uint8Array,
  plaintext: Uint8Array,
  associatedData: Uint8Array,
  iv?: Uint8Array,
  nonce?: Uint8Array,
): Buffer {
  checkArgs(type, masterKey, 'encryptWithKey');
  if (iv !== undefined && iv.length !== IV_LENGTH) {
    throw new RangeError(`encryptWithKey: iv must be ${IV_LENGTH} bytes, got ${iv.length}`);
  }
  if (nonce !== undefined && nonce.length !== NONCE_LENGTH) {
    throw new RangeError(`encryptWithKey: nonce must be ${NONCE_LENGTH} bytes, got ${nonce.length}`);
  }
  if (iv === undefined || nonce === undefined) {
    const r = randomBytesPooled(IV_LENGTH + NONCE_LENGTH);
    iv ??= r.subarray(0, IV_LENGTH);
    nonce ??= r.subarray(IV_LENGTH);
  }

  const key = type === 'AES256' ? hmacSha256(masterKey, iv) : hchacha20(masterKey, iv);
  let cipher: CipherGCM | CipherChaCha20Poly1305;
  try {
    cipher = newCipher(type, key, nonce);
  } finally {
    key.fill(0); // OpenSSL has its own copy of the key schedule.
  }
  cipher.setAAD(associatedData, { plaintextLength: plaintext.length });
  const ct = cipher.update(plaintext);
  const rest = cipher.final(); // empty for both AEADs; kept for correctness.
  const tag = cipher.getAuthTag();

  const n = ct.length + rest.length;
  const out = Buffer.allocUnsafe(n + CIPHERTEXT_OVERHEAD);
  ct.copy(out, 0);
  if (rest.length > 0) rest.copy(out, ct.length);
  tag.copy(out, n);
  out.set(iv, n + TAG_LENGTH);
  out.set(nonce, n + TAG_LENGTH + IV_LENGTH);
  return out;
}

/**
 * Decrypts a ciphertext produced by {@link encryptWithKey} (or by KES/MinIO with the same format).
 *
 * @param type           key type of the master key.
 * @param masterKey      32-byte master key version. Not modified.
 * @param ciphertext     `ct || tag || iv || nonce`.
 * @param associatedData the associated data used when encrypting.
 * @returns the plaintext (a new Buffer owned by the caller).
 * @throws KmsError `ERR_DECRYPT` (400 `invalid ciphertext`) for every failure that can be caused
 *   by the ciphertext or the associated data — too short, tampered, wrong key, wrong AD — always
 *   the same error without detail, so nothing is revealed about why (no oracle).
 * @throws TypeError / RangeError for an unknown key type or a master key of the wrong length (a
 *   bug in the caller).
 */
export function decryptWithKey(
  type: KeyType,
  masterKey: Uint8Array,
  ciphertext: Uint8Array,
  associatedData: Uint8Array,
): Buffer {
  checkArgs(type, masterKey, 'decryptWithKey');
  const total = ciphertext.length;
  // kms-wire.md §4: ciphertexts ≤ 28 bytes are invalid; anything shorter than tag + iv + nonce
  // cannot authenticate either.
  if (total < CIPHERTEXT_OVERHEAD) throw new KmsError('ERR_DECRYPT');
  const n = total - CIPHERTEXT_OVERHEAD;
  const ct = ciphertext.subarray(0, n);
  const tag = ciphertext.subarray(n, n + TAG_LENGTH);
  const iv = ciphertext.subarray(n + TAG_LENGTH, n + TAG_LENGTH + IV_LENGTH);
  const nonce = ciphertext.subarray(n + TAG_LENGTH + IV_LENGTH);

  const key = type === 'AES256' ? hmacSha256(masterKey, iv) : hchacha20(masterKey, iv);
  let plaintext: Buffer | undefined;
  try {
    const decipher = newDecipher(type, key, nonce);
    key.fill(0);
    decipher.setAuthTag(tag);
    decipher.setAAD(associatedData, { plaintextLength: ct.length });
    plaintext = decipher.update(ct);
    const rest = decipher.final(); // throws on authentication failure
    return rest.length === 0 ? plaintext : Buffer.concat([plaintext, rest]);
  } catch {
    key.fill(0);
    plaintext?.fill(0); // never leave unauthenticated plaintext around
    throw new KmsError('ERR_DECRYPT');
  }
}
