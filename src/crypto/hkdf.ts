/**
 * HKDF with SHA-256 (RFC 5869), via OpenSSL (`crypto.hkdfSync`).
 */

import { hkdfSync } from 'node:crypto';

/**
 * Derives `length` bytes: HKDF-SHA256(ikm, salt, info) (RFC 5869 §2.2 extract + §2.3 expand).
 *
 * @param ikm    input keying material.
 * @param salt   salt; a string is UTF-8 encoded; empty means "no salt" (RFC 5869 §2.2: HashLen zeros).
 * @param info   context/application info; a string is UTF-8 encoded.
 * @param length output length, 1..8160 (255 × 32, RFC 5869 §2.3); default 32.
 * @returns a new Buffer owned by the caller.
 * @throws RangeError if `length` is out of range.
 */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array | string, info: Uint8Array | string, length = 32): Buffer {
  if (!Number.isSafeInteger(length) || length < 1 || length > 255 * 32) {
    throw new RangeError(`hkdfSha256: length must be between 1 and 8160, got ${String(length)}`);
  }
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}
