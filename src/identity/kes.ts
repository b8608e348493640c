/**
 * KES spellings of the same principals (kms-wire.md §1.2, §1.4): one key pair, one SHA-256 of
 * its SubjectPublicKeyInfo, two ways to write each.
 *
 * | what | minkms | KES |
 * |---|---|---|
 * | identity | `h1:` + base64url (unpadded) of the hash | the hash as 64 lowercase hex characters |
 * | API key | `k1:` + base64url of the Ed25519 seed | `kes:v1:` + base64 (padded) of a type byte `0x00` (Ed25519) and the seed |
 *
 * A KES API key therefore is a `k1:` key in other clothes: both derive the same Ed25519 key pair,
 * so both authenticate as the same identity.
 */
import type { KeyObject } from 'node:crypto';
import { IDENTITY_PREFIX, isIdentity } from './identity.js';
import { decodeBase64UrlStrict } from './base64url.js';

export const KES_API_KEY_PREFIX = 'kes:v1:';
/** The type byte of an Ed25519 KES API key (the only type KES defines). */
const KES_ED25519 = 0x00;
const KES_IDENTITY = /^[0-9a-f]{64}$/;

/** Whether `s` is a KES identity: 64 lowercase hex characters. */
export function isKesIdentity(s: unknown): s is string {
  return typeof s === 'string' && KES_IDENTITY.test(s);
}

/** The KES spelling (hex) of an `h1:` identity; '' for the empty "zero identity". */
export function kesIdentityOf(identity: string): string {
  if (identity === '') return '';
  const bytes = decodeBase64UrlStrict(identity.slice(IDENTITY_PREFIX.length));
  if (!identity.startsWith(IDENTITY_PREFIX) || bytes === undefined || bytes.length !== 32) {
    throw new TypeError('invalid identity: not an h1: identity');
  }
  return bytes.toString('hex');
}

/** The `h1:` spelling of a KES identity (64 hex characters, either case). */
export function identityOfKes(hex: string): string {
  const lower = hex.toLowerCase();
  if (!isKesIdentity(lower)) throw new TypeError('invalid KES identity: must be 64 hex characters');
  return IDENTITY_PREFIX + Buffer.from(lower, 'hex').toString('base64url');
}

/**
 * An identity in either spelling (`h1:…` or 64 hex characters), as `h1:`; undefined if it is
 * neither.
 */
export function normalizeIdentity(s: string): string | undefined {
  if (isIdentity(s)) return s;
  if (/^[0-9a-fA-F]{64}$/.test(s)) return identityOfKes(s);
  return undefined;
}

/**
 * The 32-byte Ed25519 seed of a KES API key (`kes:v1:` + standard base64 of `0x00 ‖ seed`).
 * The caller owns (and should zero) the result.
 *
 * @throws TypeError describing what is wrong (never containing the key text).
 */
export function kesApiKeySeed(text: string): Buffer {
  if (!text.startsWith(KES_API_KEY_PREFIX)) throw new TypeError(`invalid API key: must start with '${KES_API_KEY_PREFIX}'`);
  const b64 = text.slice(KES_API_KEY_PREFIX.length);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new TypeError('invalid API key: kes:v1 payload is not base64');
  const raw = Buffer.from(b64, 'base64');
  try {
    if (raw.toString('base64') !== b64) throw new TypeError('invalid API key: kes:v1 payload is not canonical base64');
    if (raw.length !== 33) throw new TypeError(`invalid API key: kes:v1 payload must be 33 bytes, got ${raw.length}`);
    if (raw[0] !== KES_ED25519) throw new TypeError('invalid API key: unknown kes:v1 key type (only Ed25519 is defined)');
    return Buffer.from(raw.subarray(1));
  } finally {
    raw.fill(0);
  }
}

/** Whether `s` looks like a KES API key (a secret: never print it). */
export function isKesApiKeyText(s: string): boolean {
  return s.startsWith(KES_API_KEY_PREFIX);
}

/**
 * The KES spelling of an Ed25519 API key (`k1:` or `kes:v1:`), given its private key; undefined
 * for ECDSA (`k2:`) keys, which KES cannot spell. Secret, like the key.
 */
export function kesApiKeyOf(privateKey: KeyObject): string | undefined {
  if (privateKey.asymmetricKeyType !== 'ed25519') return undefined;
  const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url');
  const raw = Buffer.concat([Buffer.from([KES_ED25519]), seed]);
  try {
    return KES_API_KEY_PREFIX + raw.toString('base64');
  } finally {
    seed.fill(0);
    raw.fill(0);
  }
}
