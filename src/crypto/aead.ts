/**
 * A small generic AEAD for our OWN persisted formats (the storage barrier, the soft HSM):
 * AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce.
 *
 * ```
 * blob = nonce (12 random bytes) || ciphertext || tag (16 bytes)
 * ```
 *
 * Wear-out limit: with random 96-bit nonces, NIST SP 800-38D §8.3 allows at most 2^32
 * encryptions under one key (keeping the nonce-collision probability below 2^-32). Callers must
 * rotate the key (e.g. a new barrier term) well before 2^32 seals per key. The wire ciphertext
 * format (`ciphertext.ts`) is not subject to this limit because it derives a key per message.
 *
 * The associated data is mandatory (use it to bind a storage path, a record type, a version):
 * a blob moved to another context fails to open.
 */

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { KmsError } from '../errors.js';
import { randomBytesPooled } from './random.js';

/** Length of the random nonce prefix of a sealed blob. */
export const AES_GCM_NONCE_LENGTH = 12;
/** Length of the authentication tag suffix of a sealed blob. */
export const AES_GCM_TAG_LENGTH = 16;
/** Overhead of {@link aesGcmSeal} over the plaintext: 28 bytes. */
export const AES_GCM_OVERHEAD = AES_GCM_NONCE_LENGTH + AES_GCM_TAG_LENGTH;

function checkKey(key: Uint8Array, fn: string): void {
  if (key.length !== 32) throw new RangeError(`${fn}: key must be 32 bytes, got ${key.length}`);
}

/**
 * Encrypts and authenticates `plaintext`, binding `aad`, under a random nonce.
 *
 * @param key32     32-byte AES-256 key. Not modified.
 * @param plaintext data to protect (any length).
 * @param aad       associated data (authenticated, not stored in the blob).
 * @returns a new Buffer `nonce12 || ct || tag16`.
 * @throws RangeError if the key is not 32 bytes.
 */
export function aesGcmSeal(key32: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  checkKey(key32, 'aesGcmSeal');
  const nonce = randomBytesPooled(AES_GCM_NONCE_LENGTH);
  const cipher = createCipheriv('aes-256-gcm', key32, nonce, { authTagLength: AES_GCM_TAG_LENGTH });
  cipher.setAAD(aad);
  const ct = cipher.update(plaintext);
  const rest = cipher.final();
  const tag = cipher.getAuthTag();
  return Buffer.concat([nonce, ct, rest, tag], AES_GCM_OVERHEAD + ct.length + rest.length);
}

/**
 * Verifies and decrypts a blob produced by {@link aesGcmSeal}.
 *
 * @param key32 32-byte AES-256 key. Not modified.
 * @param blob  `nonce12 || ct || tag16`.
 * @param aad   the associated data used when sealing.
 * @returns the plaintext (a new Buffer owned by the caller).
 * @throws KmsError `ERR_DECRYPT` on any failure (too short, tampered, wrong key, wrong aad), with no
 *   detail.
 * @throws RangeError if the key is not 32 bytes (a bug in the caller).
 */
export function aesGcmOpen(key32: Uint8Array, blob: Uint8Array, aad: Uint8Array): Buffer {
  checkKey(key32, 'aesGcmOpen');
  if (blob.length < AES_GCM_OVERHEAD) throw new KmsError('ERR_DECRYPT');
  const nonce = blob.subarray(0, AES_GCM_NONCE_LENGTH);
  const ct = blob.subarray(AES_GCM_NONCE_LENGTH, blob.length - AES_GCM_TAG_LENGTH);
  const tag = blob.subarray(blob.length - AES_GCM_TAG_LENGTH);
  let plaintext: Buffer | undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key32, nonce, { authTagLength: AES_GCM_TAG_LENGTH });
    decipher.setAuthTag(tag);
    decipher.setAAD(aad);
    plaintext = decipher.update(ct);
    const rest = decipher.final();
    return rest.length === 0 ? plaintext : Buffer.concat([plaintext, rest]);
  } catch {
    plaintext?.fill(0);
    throw new KmsError('ERR_DECRYPT');
  }
}
