/**
 * The software HSM: a 32-byte key given as `hsm:aes256:<standard base64>` (the form
 * `minkms --soft-hsm` prints and `MINIO_KMS_HSM_KEY` carries).
 *
 * Sealed blob v1: 0x01 | nonce (12) | AES-256-GCM ciphertext | tag (16), under
 * HKDF-SHA256(hsmKey, info "minkms soft-hsm seal v1"); derived keys are
 * HKDF-SHA256(hsmKey, info "minkms soft-hsm derive v1:" + label).
 */
import { randomBytes } from 'node:crypto';
import { aesGcmOpen, aesGcmSeal } from '../crypto/aead.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { HsmError, type Hsm } from './hsm.js';

export const SOFT_HSM_NAME = 'hsm:minio:soft';
const PREFIX = 'hsm:aes256:';
const BLOB_VERSION = 0x01;

/** Parses `hsm:aes256:<base64>`; throws a TypeError that never contains the key. */
export function parseSoftHsmKey(text: string): Buffer {
  const trimmed = text.trim();
  if (!trimmed.startsWith(PREFIX)) throw new TypeError(`invalid HSM key: must start with '${PREFIX}'`);
  const b64 = trimmed.slice(PREFIX.length);
  const key = Buffer.from(b64, 'base64');
  if (key.length !== 32 || key.toString('base64') !== b64) {
    throw new TypeError('invalid HSM key: expected the standard base64 encoding of 32 bytes');
  }
  return key;
}

export function generateSoftHsmKey(): string {
  return PREFIX + randomBytes(32).toString('base64');
}

export class SoftHsm implements Hsm {
  readonly name = SOFT_HSM_NAME;
  readonly #sealKey: Buffer;
  readonly #key: Buffer;

  constructor(keyText: string) {
    this.#key = parseSoftHsmKey(keyText);
    this.#sealKey = hkdfSha256(this.#key, '', 'minkms soft-hsm seal v1', 32);
  }

  async seal(plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    return Buffer.concat([Buffer.of(BLOB_VERSION), aesGcmSeal(this.#sealKey, plaintext, aad)]);
  }

  async unseal(blob: Buffer, aad: Buffer): Promise<Buffer> {
    if (blob.length < 1 || blob[0] !== BLOB_VERSION) {
      throw new HsmError(`${this.name}: unsupported sealed entry format`, true);
    }
    try {
      return aesGcmOpen(this.#sealKey, blob.subarray(1), aad);
    } catch {
      throw new HsmError(
        `${this.name}: the HSM key cannot unseal the root encryption key (is MINIO_KMS_HSM_KEY the key this data directory was created with?)`,
        true,
      );
    }
  }

  async deriveKey(label: string): Promise<Buffer> {
    return hkdfSha256(this.#key, '', `minkms soft-hsm derive v1:${label}`, 32);
  }

  async close(): Promise<void> {
    this.#key.fill(0);
    this.#sealKey.fill(0);
  }
}
