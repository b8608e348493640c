/**
 * The sealed-entry format of the PKCS#11 HSM and the messages it MACs. Pure functions, no
 * device: the format is fixed by golden vectors (test/vectors/pkcs11-hsm.json).
 *
 *   byte 0      format version, 0x01
 *   byte 1      mechanism
 *                 0x01 AES-256-GCM (CKM_AES_GCM), 96-bit IV, 128-bit tag
 *                 0x02 AES-256-CBC-PAD (CKM_AES_CBC_PAD) then HMAC-SHA256 (CKM_SHA256_HMAC), 256-bit tag
 *                 0x03 AES-256-CBC-PAD (CKM_AES_CBC_PAD) then AES-CMAC (CKM_AES_CMAC), 128-bit tag
 *   then        0x01: IV (12) | ciphertext | GCM tag (16)      GCM AAD = bytes 0–1 | aad
 *               0x02/0x03: IV (16) | ciphertext | MAC tag        MAC over {@link macInput}
 *
 * The header is authenticated in every variant, so a blob cannot be relabelled as another
 * mechanism. The CBC variants are encrypt-then-MAC with the separate derivation key (the
 * device's HMAC secret or CMAC key), for devices without CKM_AES_GCM.
 */

export const FORMAT_VERSION = 0x01;

export const MECH_AES_GCM = 0x01;
export const MECH_CBC_HMAC = 0x02;
export const MECH_CBC_CMAC = 0x03;
export type BlobMechanism = typeof MECH_AES_GCM | typeof MECH_CBC_HMAC | typeof MECH_CBC_CMAC;

export const GCM_IV_BYTES = 12;
export const GCM_TAG_BYTES = 16;
export const CBC_IV_BYTES = 16;

export function tagBytes(mech: BlobMechanism): number {
  return mech === MECH_AES_GCM ? GCM_TAG_BYTES : mech === MECH_CBC_HMAC ? 32 : 16;
}

export function ivBytes(mech: BlobMechanism): number {
  return mech === MECH_AES_GCM ? GCM_IV_BYTES : CBC_IV_BYTES;
}

export function mechanismName(mech: BlobMechanism): string {
  return mech === MECH_AES_GCM ? 'AES-256-GCM' : mech === MECH_CBC_HMAC ? 'AES-256-CBC-PAD + HMAC-SHA256' : 'AES-256-CBC-PAD + AES-CMAC';
}

export function header(mech: BlobMechanism): Buffer {
  return Buffer.of(FORMAT_VERSION, mech);
}

export interface ParsedBlob {
  mech: BlobMechanism;
  header: Buffer;
  iv: Buffer;
  /** GCM: ciphertext followed by the tag (what C_Decrypt takes); CBC: the ciphertext alone. */
  body: Buffer;
  /** CBC variants only: the MAC tag. */
  tag: Buffer;
}

/** Splits a blob; undefined if it is not a well-formed v1 blob (never throws). */
export function parseBlob(blob: Buffer): ParsedBlob | undefined {
  if (blob.length < 2 || blob[0] !== FORMAT_VERSION) return undefined;
  const mech = blob[1];
  if (mech !== MECH_AES_GCM && mech !== MECH_CBC_HMAC && mech !== MECH_CBC_CMAC) return undefined;
  const iv = ivBytes(mech);
  const tag = tagBytes(mech);
  // GCM needs at least the tag; CBC-PAD at least one block.
  const minBody = mech === MECH_AES_GCM ? GCM_TAG_BYTES : 16 + tag;
  if (blob.length < 2 + iv + minBody) return undefined;
  const rest = blob.subarray(2 + iv);
  if (mech === MECH_AES_GCM) return { mech, header: blob.subarray(0, 2), iv: blob.subarray(2, 2 + iv), body: rest, tag: Buffer.alloc(0) };
  const ct = rest.subarray(0, rest.length - tag);
  if (ct.length % 16 !== 0) return undefined;
  return { mech, header: blob.subarray(0, 2), iv: blob.subarray(2, 2 + iv), body: ct, tag: rest.subarray(rest.length - tag) };
}

/** GCM's additional data: the header, then the caller's AAD. */
export function gcmAad(aad: Buffer): Buffer {
  return Buffer.concat([header(MECH_AES_GCM), aad]);
}

const MAC_DOMAIN = Buffer.from('minkms pkcs11 seal mac v1\0', 'utf8');

/**
 * What the CBC variants MAC: a domain string (distinct from {@link deriveMessage}'s prefix, so a
 * seal tag can never equal a derived key), the header, the IV, the ciphertext's length (so the
 * ciphertext/AAD boundary is fixed) and the ciphertext, then the AAD.
 */
export function macInput(hdr: Buffer, iv: Buffer, ct: Buffer, aad: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(ct.length);
  return Buffer.concat([MAC_DOMAIN, hdr, iv, len, ct, aad]);
}

const DERIVE_PREFIX = 'minkms pkcs11 derive v1:';

/** HMAC-SHA256 derivation: the 32 bytes are HMAC(secret, this). */
export function deriveMessage(label: string): Buffer {
  return Buffer.from(DERIVE_PREFIX + label, 'utf8');
}

/**
 * AES-CMAC derivation (devices without HMAC), NIST SP 800-108 counter mode with CMAC as PRF:
 * block i (1, 2) = CMAC(key, [i]₁ | "minkms pkcs11 derive v1:" label | 0x00 | [256]₂); the
 * 32 bytes are block 1 | block 2.
 */
export function cmacDeriveBlocks(label: string): [Buffer, Buffer] {
  const ctx = Buffer.concat([deriveMessage(label), Buffer.of(0x00, 0x01, 0x00)]);
  return [Buffer.concat([Buffer.of(1), ctx]), Buffer.concat([Buffer.of(2), ctx])];
}
