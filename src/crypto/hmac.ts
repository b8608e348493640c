/**
 * HMAC-SHA256 (RFC 2104, FIPS 198-1) and a constant-time byte comparison.
 */

import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Computes HMAC-SHA256(key, message).
 *
 * @returns a new 32-byte Buffer.
 */
export function hmacSha256(key: Uint8Array, message: Uint8Array | string): Buffer {
  return createHmac('sha256', key).update(message).digest();
}

/**
 * Compares two byte strings without leaking, through timing, where they differ.
 *
 * Returns `false` immediately when the lengths differ (lengths are not secret in any of our
 * uses: MACs and hashes have fixed sizes); otherwise the comparison takes time independent of the
 * contents (`crypto.timingSafeEqual`).
 */
export function timingSafeEqualBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}
