/**
 * Public API of the crypto module: pure functions over `node:crypto` (OpenSSL), no I/O.
 */

export { randomBytesPooled, POOL_SIZE, MAX_POOLED_REQUEST } from './random.js';
export { hchacha20 } from './hchacha20.js';
export { hmacSha256, timingSafeEqualBytes } from './hmac.js';
export { hkdfSha256 } from './hkdf.js';
export {
  type KeyType,
  KEY_TYPES,
  isKeyType,
  encryptWithKey,
  decryptWithKey,
  MASTER_KEY_LENGTH,
  IV_LENGTH,
  NONCE_LENGTH,
  TAG_LENGTH,
  CIPHERTEXT_OVERHEAD,
} from './ciphertext.js';
export { aesGcmSeal, aesGcmOpen, AES_GCM_NONCE_LENGTH, AES_GCM_TAG_LENGTH, AES_GCM_OVERHEAD } from './aead.js';
