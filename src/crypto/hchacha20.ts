/**
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2), derived from OpenSSL's ChaCha20 stream cipher.
 *
 * Node has no HChaCha20, and we do not hand-roll ChaCha rounds on the server. Instead we use the
 * relation between the two functions:
 *
 * - The ChaCha20 block function (RFC 8439 §2.3) outputs `rounds(S) + S` (word-wise mod 2^32),
 *   where `S` = constants "expand 32-byte k" (words 0..3) || key (4..11) || counter/nonce (12..15).
 * - OpenSSL's `chacha20` takes a 16-byte IV that is exactly state words 12..15 (a 4-byte
 *   little-endian counter followed by the 12-byte nonce).
 * - HChaCha20(key, input) = words 0..3 and 12..15 of `rounds(S)` with words 12..15 = input.
 *
 * So: encrypt 64 zero bytes with IV = input (giving the keystream block), then subtract the known
 * initial words (constants for 0..3, the input words for 12..15).
 */

import { createCipheriv } from 'node:crypto';

/** "expand 32-byte k" as four little-endian words (RFC 8439 §2.3). */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] as const;

const ZERO_BLOCK = Buffer.alloc(64);

/** Wraps a Uint8Array as a Buffer view (no copy). */
function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Computes HChaCha20(key, input): a 32-byte subkey.
 *
 * @param key   32-byte key.
 * @param input 16-byte input (the first 16 bytes of an XChaCha nonce, or the KES iv).
 * @returns a new 32-byte Buffer owned by the caller (zero it when done if it is a key).
 * @throws RangeError on wrong input lengths.
 */
export function hchacha20(key: Uint8Array, input: Uint8Array): Buffer {
  if (key.length !== 32) throw new RangeError(`hchacha20: key must be 32 bytes, got ${key.length}`);
  if (input.length !== 16) throw new RangeError(`hchacha20: input must be 16 bytes, got ${input.length}`);
  const inp = asBuffer(input);
  const cipher = createCipheriv('chacha20', key, inp);
  const block = cipher.update(ZERO_BLOCK); // one keystream block = rounds(S) + S
  const out = Buffer.allocUnsafe(32);
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE((block.readUInt32LE(4 * i) - SIGMA[i]!) >>> 0, 4 * i);
    out.writeUInt32LE((block.readUInt32LE(48 + 4 * i) - inp.readUInt32LE(4 * i)) >>> 0, 16 + 4 * i);
  }
  block.fill(0);
  return out;
}
