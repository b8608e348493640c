/**
 * The barrier: encrypts every value before it reaches the store, with a key derived from the
 * Root Encryption Key (REK), and binds each value to its storage path, so that a record that is
 * moved or swapped to another path no longer opens.
 *
 * Format v1 (golden vectors in test/unit/barrier.test.ts):
 *
 *   0x01 | term (uint32 BE) | nonce (12) | AES-256-GCM ciphertext | tag (16)
 *   associated data = the 5 header bytes || UTF-8 storage path
 *
 * `term` numbers the REK generation that encrypted the value (1 for the first REK), so a root
 * key rotation can tell re-encrypted values from old ones.
 */
import { aesGcmOpen, aesGcmSeal } from '../crypto/aead.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { KmsError } from '../protocol/errors.js';

const VERSION = 0x01;
const HEADER = 5;

export class Barrier {
  readonly term: number;
  readonly #key: Buffer;

  /** @param rek the 32-byte root encryption key; @param clusterId salts the derivation. */
  constructor(rek: Buffer, clusterId: string, term = 1) {
    if (rek.length !== 32) throw new RangeError('barrier: root key must be 32 bytes');
    this.term = term;
    this.#key = hkdfSha256(rek, clusterId, 'minkms barrier v1', 32);
  }

  encrypt(path: string, plaintext: Uint8Array): Buffer {
    const header = Buffer.allocUnsafe(HEADER);
    header[0] = VERSION;
    header.writeUInt32BE(this.term, 1);
    const sealed = aesGcmSeal(this.#key, plaintext, aad(header, path));
    return Buffer.concat([header, sealed]);
  }

  /** @throws KmsError ERR_DECRYPT if the value was altered, moved, or made under another key. */
  decrypt(path: string, blob: Uint8Array): Buffer {
    if (blob.length < HEADER || blob[0] !== VERSION) throw new KmsError('ERR_DECRYPT');
    const header = blob.subarray(0, HEADER);
    return aesGcmOpen(this.#key, blob.subarray(HEADER), aad(header, path));
  }

  /** Zeroes the derived key; the barrier is unusable afterwards. */
  destroy(): void {
    this.#key.fill(0);
  }
}

function aad(header: Uint8Array, path: string): Buffer {
  return Buffer.concat([header, Buffer.from(path, 'utf8')]);
}
