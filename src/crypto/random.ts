/**
 * Pooled randomness for the hot path.
 *
 * Every KEY:GENERATE / KEY:ENCRYPT needs 28 fresh random bytes (16-byte iv + 12-byte nonce, see
 * `ciphertext.ts`) and usually a data key. Calling into OpenSSL's DRBG once per small request
 * costs more than the bytes themselves, so small requests are served from a 64 KiB buffer that is
 * filled by one `crypto.randomFillSync` call.
 *
 * Safety rules enforced here:
 * - Every byte of a pool is handed out at most once.
 * - An exhausted pool is never refilled in place: its slices may still be referenced (and an
 *   in-place refill would silently change a caller's iv or key). A new buffer is allocated
 *   instead and the old one is left to the garbage collector.
 * - Requests larger than {@link MAX_POOLED_REQUEST} bypass the pool (`crypto.randomBytes`).
 *
 * Returned buffers are `subarray`s of the shared pool: callers must use the Buffer view only and
 * must never hand out its underlying `ArrayBuffer` (`buf.buffer`), which contains other callers'
 * random bytes. Zeroing a returned buffer (`buf.fill(0)`) only touches the caller's own bytes.
 *
 * Concurrency: Node runs JavaScript on one thread, and the function is synchronous, so no two
 * callers can ever receive overlapping bytes.
 */

import { randomBytes, randomFillSync } from 'node:crypto';

/** Size of one randomness pool (64 KiB). */
export const POOL_SIZE = 64 * 1024;

/** Requests above this size (4 KiB) are served by `crypto.randomBytes` directly. */
export const MAX_POOLED_REQUEST = 4 * 1024;

let pool: Buffer | undefined;
let offset = 0;

/**
 * Returns `n` cryptographically secure random bytes.
 *
 * Small requests (≤ 4 KiB) are slices of a shared, never-reused pool (see the module comment);
 * larger ones are fresh buffers.
 *
 * @throws RangeError if `n` is not a non-negative safe integer.
 */
export function randomBytesPooled(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`randomBytesPooled: length must be a non-negative integer, got ${String(n)}`);
  }
  if (n === 0) return Buffer.alloc(0);
  if (n > MAX_POOLED_REQUEST) return randomBytes(n);
  if (pool === undefined || offset + n > pool.length) {
    // A NEW buffer every time: the previous pool's slices may still be in use.
    // `allocUnsafeSlow` keeps it out of Node's shared small-buffer pool.
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_SIZE));
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}
