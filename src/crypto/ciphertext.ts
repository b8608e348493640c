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

import * as nodeCrypto from 'node:crypto';
import {
  createCipheriv,
  createDecipheriv,
  type CipherChaCha20Poly1305,
  type CipherGCM,
  type DecipherChaCha20Poly1305,
  type DecipherGCM,
} from 'node:crypto';
import { KmsError } from '../errors.js';
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

/** One-shot SHA-256 (`crypto.hash`, Node ≥ 20.12), if this Node has it. */
const sha256OneShot = (nodeCrypto as { hash?: typeof nodeCrypto.hash }).hash;
const HMAC_BLOCK = 64;

/**
 * A master key version made ready for the hot path (KEY:GENERATE / KEY:ENCRYPT / KEY:DECRYPT),
 * with the same results as {@link encryptWithKey} / {@link decryptWithKey}.
 *
 * For `AES256` the per-message key HMAC-SHA256(masterKey, iv) is computed from the two HMAC
 * key blocks (masterKey ⊕ ipad, masterKey ⊕ opad; RFC 2104 §2), prepared once, with two
 * one-shot SHA-256 calls instead of a new HMAC object per message (about a third cheaper).
 * The blocks are key material, like the master key itself: a PreparedKey lives exactly as long
 * as the key version (in memory) it was made from.
 */
export class PreparedKey {
  readonly type: KeyType;
  readonly #masterKey: Uint8Array;
  /** `masterKey ⊕ ipad` then room for the 16-byte iv (one SHA-256 input). */
  readonly #inner: Buffer | undefined;
  /** `masterKey ⊕ opad` then room for the 32-byte inner hash. */
  readonly #outer: Buffer | undefined;

  /** @throws TypeError / RangeError like {@link encryptWithKey}. */
  constructor(type: KeyType, masterKey: Uint8Array) {
    checkArgs(type, masterKey, 'PreparedKey');
    this.type = type;
    this.#masterKey = masterKey;
    if (type === 'AES256' && sha256OneShot !== undefined) {
      const inner = Buffer.alloc(HMAC_BLOCK + IV_LENGTH, 0x36);
      const outer = Buffer.alloc(HMAC_BLOCK + 32, 0x5c);
      outer.fill(0, HMAC_BLOCK);
      inner.fill(0, HMAC_BLOCK);
      for (let i = 0; i < MASTER_KEY_LENGTH; i++) {
        inner[i]! ^= masterKey[i]!;
        outer[i]! ^= masterKey[i]!;
      }
      this.#inner = inner;
      this.#outer = outer;
    }
  }

  /** The per-message AEAD key for `iv` (a new Buffer; the caller zeroes it after use). */
  messageKey(iv: Uint8Array): Buffer {
    const inner = this.#inner;
    const outer = this.#outer;
    if (inner === undefined || outer === undefined) return deriveMessageKey(this.type, this.#masterKey, iv);
    // Synchronous, on one thread: no other call can use the scratch space in between.
    inner.set(iv, HMAC_BLOCK);
    // The inner digest comes back as a latin1 ('binary') string written into the outer block:
    // a Buffer result costs a malloc'ed backing store, and this saves about 2 300 of the
    // 23 000 instructions of a derivation (callgrind, docs/performance.md). The inner digest
    // is not key material: without masterKey ⊕ opad (HMAC's outer key) it does not give the
    // message key. The message key itself still comes back as a Buffer, zeroed after use.
    outer.write(sha256OneShot!('sha256', inner, 'binary'), HMAC_BLOCK, 'latin1');
    const key = sha256OneShot!('sha256', outer, 'buffer');
    outer.fill(0, HMAC_BLOCK);
    return key;
  }

  /** Zeroes the prepared key blocks (the master key itself belongs to the caller). */
  wipe(): void {
    this.#inner?.fill(0);
    this.#outer?.fill(0);
  }
}

function deriveMessageKey(type: KeyType, masterKey: Uint8Array, iv: Uint8Array): Buffer {
  return type === 'AES256' ? hmacSha256(masterKey, iv) : hchacha20(masterKey, iv);
}

/** Encrypts with a {@link PreparedKey}: {@link encryptWithKey} with random iv and nonce. */
export function sealWithKey(key: PreparedKey, plaintext: Uint8Array, associatedData: Uint8Array): Buffer {
  const r = randomBytesPooled(IV_LENGTH + NONCE_LENGTH);
  return seal(key.type, key.messageKey(r.subarray(0, IV_LENGTH)), plaintext, associatedData, r);
}

/** Decrypts with a {@link PreparedKey}: {@link decryptWithKey}, same errors. */
export function openWithKey(key: PreparedKey, ciphertext: Uint8Array, associatedData: Uint8Array): Buffer {
  return open(key.type, key, ciphertext, associatedData);
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
  let ivNonce = randomBytesPooled(IV_LENGTH + NONCE_LENGTH);
  if (iv !== undefined || nonce !== undefined) {
    ivNonce = Buffer.from(ivNonce); // test vectors: never write into the shared pool
    if (iv !== undefined) ivNonce.set(iv, 0);
    if (nonce !== undefined) ivNonce.set(nonce, IV_LENGTH);
  }
  return seal(type, deriveMessageKey(type, masterKey, ivNonce.subarray(0, IV_LENGTH)), plaintext, associatedData, ivNonce);
}

/**
 * AEAD_Seal under the per-message `key` (zeroed here) with the nonce of `ivNonce`
 * (iv || nonce, 28 bytes), appending iv and nonce: `ct || tag || iv || nonce`.
 */
function seal(type: KeyType, key: Buffer, plaintext: Uint8Array, associatedData: Uint8Array, ivNonce: Uint8Array): Buffer {
  let cipher: CipherGCM | CipherChaCha20Poly1305;
  try {
    cipher = newCipher(type, key, ivNonce.subarray(IV_LENGTH));
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
  out.set(ivNonce, n + TAG_LENGTH);
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
export function decryptWithKey(type: KeyType, masterKey: Uint8Array, ciphertext: Uint8Array, associatedData: Uint8Array): Buffer {
  checkArgs(type, masterKey, 'decryptWithKey');
  return open(type, masterKey, ciphertext, associatedData);
}

/** AEAD_Open of `ct || tag || iv || nonce` with the per-message key of `iv` (zeroed here). */
function open(type: KeyType, master: PreparedKey | Uint8Array, ciphertext: Uint8Array, associatedData: Uint8Array): Buffer {
  const total = ciphertext.length;
  // kms-wire.md §4: ciphertexts ≤ 28 bytes are invalid; anything shorter than tag + iv + nonce
  // cannot authenticate either.
  if (total < CIPHERTEXT_OVERHEAD) throw new KmsError('ERR_DECRYPT');
  const n = total - CIPHERTEXT_OVERHEAD;
  const ct = ciphertext.subarray(0, n);
  const tag = ciphertext.subarray(n, n + TAG_LENGTH);
  const iv = ciphertext.subarray(n + TAG_LENGTH, n + TAG_LENGTH + IV_LENGTH);
  const nonce = ciphertext.subarray(n + TAG_LENGTH + IV_LENGTH);

  const key = master instanceof PreparedKey ? master.messageKey(iv) : deriveMessageKey(type, master, iv);
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
