/**
 * API keys (kms-wire.md §1.2): the text form of a client's private key.
 *
 * | prefix | algorithm          | payload (canonical unpadded base64url, RFC 4648 §5)        |
 * |--------|--------------------|------------------------------------------------------------|
 * | `k1:`  | Ed25519 (RFC 8032) | the 32-byte seed                                           |
 * | `k2:`  | ECDSA (FIPS 186-5) | the private scalar d, big-endian, left-padded to 32/48/66  |
 * |        |                    | bytes; the width selects P-256 / P-384 / P-521             |
 *
 * The client turns the key into a self-signed certificate (`client-cert.ts`); the server only
 * ever sees the public key, whose SPKI hash is the identity (`identity.ts`).
 *
 * Parse errors are `TypeError`s whose messages never contain the key text (it is a secret).
 */

import { createECDH, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { decodeBase64UrlStrict, encodeBase64Url } from './base64url.js';
import { identityOfPublicKey } from './identity.js';
import { KES_API_KEY_PREFIX, kesApiKeySeed } from './kes.js';

/** The curves an API key can use. */
export type ApiKeyCurve = 'Ed25519' | 'P-256' | 'P-384' | 'P-521';

/** The ECDSA curves of `k2:` keys. */
export type EcdsaCurve = Exclude<ApiKeyCurve, 'Ed25519'>;

/** A parsed API key. Treat as a secret: `text` and `privateKey` are the private key. */
export interface ApiKey {
  /** The canonical text form (`k1:…` / `k2:…`, or a KES `kes:v1:…` key as given). Secret. */
  readonly text: string;
  /** `kes`: a KES API key, the same Ed25519 key pair as the `k1:` key of its seed (identity/kes.ts). */
  readonly kind: 'k1' | 'k2' | 'kes';
  readonly curve: ApiKeyCurve;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The `h1:` identity of the public key (kms-wire.md §1.4). */
  readonly identity: string;
}

/** PKCS#8 DER prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte seed follows. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

interface CurveInfo {
  readonly curve: EcdsaCurve;
  /** OpenSSL name, for `createECDH`. */
  readonly openssl: string;
  /** Width of the scalar and of each coordinate, in bytes. */
  readonly size: number;
}

const EC_CURVES: readonly CurveInfo[] = [
  { curve: 'P-256', openssl: 'prime256v1', size: 32 },
  { curve: 'P-384', openssl: 'secp384r1', size: 48 },
  { curve: 'P-521', openssl: 'secp521r1', size: 66 },
];

function curveBySize(size: number): CurveInfo | undefined {
  return EC_CURVES.find((c) => c.size === size);
}

function ed25519FromSeed(seed: Buffer): KeyObject {
  const der = Buffer.concat([ED25519_PKCS8_PREFIX, seed]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

function ecdsaFromScalar(info: CurveInfo, d: Buffer): KeyObject {
  const ecdh = createECDH(info.openssl);
  ecdh.setPrivateKey(d); // throws unless 0 < d < n
  const point = ecdh.getPublicKey(); // uncompressed: 04 || X || Y
  if (point.length !== 1 + 2 * info.size || point[0] !== 0x04) throw new Error('unexpected EC point encoding');
  return createPrivateKey({
    key: {
      kty: 'EC',
      crv: info.curve,
      d: encodeBase64Url(d),
      x: encodeBase64Url(point.subarray(1, 1 + info.size)),
      y: encodeBase64Url(point.subarray(1 + info.size)),
    },
    format: 'jwk',
  });
}

function makeApiKey(text: string, kind: ApiKey['kind'], curve: ApiKeyCurve, privateKey: KeyObject): ApiKey {
  const publicKey = createPublicKey(privateKey);
  return Object.freeze({ text, kind, curve, privateKey, publicKey, identity: identityOfPublicKey(publicKey) });
}

/**
 * Parses an API key (`k1:` Ed25519 seed, `k2:` ECDSA scalar, or a KES `kes:v1:` key), strictly: exact prefix, canonical
 * unpadded base64url, exact payload length (32 for `k1:`; 32, 48 or 66 for `k2:`), and for `k2:` a
 * scalar in range for its curve.
 *
 * @throws TypeError describing what is wrong (never containing the key text).
 */
export function parseApiKey(text: string): ApiKey {
  if (typeof text !== 'string') throw new TypeError('invalid API key: not a string');
  if (text.startsWith(KES_API_KEY_PREFIX)) {
    const seed = kesApiKeySeed(text);
    try {
      return makeApiKey(text, 'kes', 'Ed25519', ed25519FromSeed(seed));
    } finally {
      seed.fill(0);
    }
  }
  const kind = text.startsWith('k1:') ? 'k1' : text.startsWith('k2:') ? 'k2' : undefined;
  if (kind === undefined) throw new TypeError("invalid API key: must start with 'k1:', 'k2:' or 'kes:v1:'");
  const payload = decodeBase64UrlStrict(text.slice(3));
  if (payload === undefined) {
    throw new TypeError('invalid API key: payload is not canonical unpadded base64url');
  }
  try {
    if (kind === 'k1') {
      if (payload.length !== 32) {
        throw new TypeError(`invalid API key: k1 payload must be 32 bytes, got ${payload.length}`);
      }
      return makeApiKey(text, 'k1', 'Ed25519', ed25519FromSeed(payload));
    }
    const info = curveBySize(payload.length);
    if (info === undefined) {
      throw new TypeError(`invalid API key: k2 payload must be 32, 48 or 66 bytes, got ${payload.length}`);
    }
    let privateKey: KeyObject;
    try {
      privateKey = ecdsaFromScalar(info, payload);
    } catch {
      throw new TypeError(`invalid API key: not a valid ${info.curve} private scalar`);
    }
    return makeApiKey(text, 'k2', info.curve, privateKey);
  } finally {
    payload.fill(0);
  }
}

/**
 * Builds the `k1:` API key of a 32-byte Ed25519 seed (e.g. the root key derived from the HSM).
 *
 * @param seed 32 bytes; not modified, not retained.
 * @throws RangeError if `seed` is not 32 bytes.
 */
export function apiKeyFromSeed(seed: Uint8Array): ApiKey {
  if (seed.length !== 32) throw new RangeError(`apiKeyFromSeed: seed must be 32 bytes, got ${seed.length}`);
  const s = Buffer.from(seed);
  try {
    return makeApiKey('k1:' + encodeBase64Url(s), 'k1', 'Ed25519', ed25519FromSeed(s));
  } finally {
    s.fill(0);
  }
}

/**
 * Generates a new random API key.
 *
 * @param kind  `'k1'` (Ed25519, the default) or `'k2'` (ECDSA; FIPS deployments).
 * @param curve for `'k2'`: `'P-256'` (default), `'P-384'` or `'P-521'`. Must be omitted or
 *   `'Ed25519'` for `'k1'`.
 * @throws TypeError on an invalid kind/curve combination.
 */
export function generateApiKey(kind: 'k1' | 'k2' = 'k1', curve?: ApiKeyCurve): ApiKey {
  if (kind === 'k1') {
    if (curve !== undefined && curve !== 'Ed25519') throw new TypeError('generateApiKey: k1 keys are Ed25519');
    const seed = randomBytes(32); // not pooled: a long-lived secret gets its own buffer
    try {
      return apiKeyFromSeed(seed);
    } finally {
      seed.fill(0);
    }
  }
  if (kind !== 'k2') throw new TypeError('generateApiKey: kind must be k1 or k2');
  const info = EC_CURVES.find((c) => c.curve === (curve ?? 'P-256'));
  if (info === undefined) throw new TypeError('generateApiKey: k2 keys use P-256, P-384 or P-521');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: info.openssl });
  const jwk = privateKey.export({ format: 'jwk' });
  const d = Buffer.from(jwk.d ?? '', 'base64url');
  const padded = Buffer.alloc(info.size);
  d.copy(padded, info.size - d.length);
  d.fill(0);
  const text = 'k2:' + encodeBase64Url(padded);
  padded.fill(0);
  return makeApiKey(text, 'k2', info.curve, privateKey);
}
