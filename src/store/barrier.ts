/**
 * The barrier: encrypts every value before it reaches the store, with a key derived from the
 * Root Encryption Key (REK), and binds each value to its storage path, so that a record that is
 * moved or swapped to another path no longer opens.
 *
 * Format v1 (golden vectors in test/vectors/barrier.json):
 *
 *   0x01 | term (uint32 BE) | nonce (12) | AES-256-GCM ciphertext | tag (16)
 *   associated data = the 5 header bytes || UTF-8 storage path
 *
 * `term` numbers the REK generation that encrypted the value (1 for the first REK), so a root
 * key rotation can tell re-encrypted values from old ones.
 */
import { aesGcmOpen, aesGcmSeal } from '../crypto/aead.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { KmsError } from '../errors.js';

const VERSION = 0x01;
const HEADER = 5;

export class Barrier {
  readonly #clusterId: string;
  /** Derived key per term; several only while a root key rotation is in progress. */
  readonly #keys = new Map<number, Buffer>();
  #term: number;

  /** @param rek the 32-byte root encryption key of `term`; @param clusterId salts the derivation. */
  constructor(rek: Buffer, clusterId: string, term = 1) {
    this.#clusterId = clusterId;
    this.#term = term;
    this.addTerm(rek, term);
  }

  /** The term new values are encrypted under. */
  get term(): number {
    return this.#term;
  }

  /** Adds the key of a newer REK generation and encrypts under it from now on. */
  addTerm(rek: Buffer, term: number): void {
    if (rek.length !== 32) throw new RangeError('barrier: root key must be 32 bytes');
    this.#keys.set(term, hkdfSha256(rek, this.#clusterId, 'minkms barrier v1', 32));
    this.#term = Math.max(this.#term, term);
  }

  /** Forgets (and zeroes) the keys of every term but the current one. */
  dropOldTerms(): void {
    for (const [term, key] of this.#keys) {
      if (term !== this.#term) {
        key.fill(0);
        this.#keys.delete(term);
      }
    }
  }

  encrypt(path: string, plaintext: Uint8Array): Buffer {
    const header = Buffer.allocUnsafe(HEADER);
    header[0] = VERSION;
    header.writeUInt32BE(this.#term, 1);
    const sealed = aesGcmSeal(this.#keys.get(this.#term)!, plaintext, aad(header, path));
    return Buffer.concat([header, sealed]);
  }

  /** @throws KmsError ERR_DECRYPT if the value was altered, moved, or made under another key. */
  decrypt(path: string, blob: Uint8Array): Buffer {
    const key = blob.length >= HEADER && blob[0] === VERSION ? this.#keys.get(termOf(blob)) : undefined;
    if (!key) throw new KmsError('ERR_DECRYPT');
    return aesGcmOpen(key, blob.subarray(HEADER), aad(blob.subarray(0, HEADER), path));
  }

  /** Zeroes the derived keys; the barrier is unusable afterwards. */
  destroy(): void {
    for (const key of this.#keys.values()) key.fill(0);
    this.#keys.clear();
  }
}

/** The term a barrier blob was encrypted under (0 if it is no barrier blob). */
export function termOf(blob: Uint8Array): number {
  return blob.length >= HEADER && blob[0] === VERSION ? Buffer.from(blob.buffer, blob.byteOffset, HEADER).readUInt32BE(1) : 0;
}

function aad(header: Uint8Array, path: string): Buffer {
  return Buffer.concat([header, Buffer.from(path, 'utf8')]);
}
