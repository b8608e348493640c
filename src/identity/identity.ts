/**
 * Identities (kms-wire.md §1.4): `"h1:" + base64url_nopad(SHA-256(DER(SubjectPublicKeyInfo)))`.
 *
 * The hash input is the certificate's raw SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), sliced out
 * of the certificate DER rather than re-exported, so the identity is exactly what a Go client
 * computes from `cert.RawSubjectPublicKeyInfo`.
 *
 * The empty string is the "zero identity" (an unset `created_by` and the like): it is accepted
 * only by {@link isIdentityOrEmpty}, never by {@link isIdentity} / {@link parseIdentity}.
 */

import { createHash, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { decodeBase64UrlStrict } from './base64url.js';
import { readChildren, readTlv, TAG } from './der.js';

/** The identity prefix. */
export const IDENTITY_PREFIX = 'h1:';

/** Length of an identity string: `h1:` + 43 base64url characters. */
export const IDENTITY_LENGTH = 46;

/** Computes the identity of a DER-encoded SubjectPublicKeyInfo. */
export function identityFromSpki(spkiDer: Uint8Array): string {
  return IDENTITY_PREFIX + createHash('sha256').update(spkiDer).digest('base64url');
}

function spkiOfKey(key: KeyObject): Buffer {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  return pub.export({ type: 'spki', format: 'der' });
}

/** Computes the identity of a public key (a private key is accepted: its public half is used). */
export function identityOfPublicKey(key: KeyObject): string {
  return identityFromSpki(spkiOfKey(key));
}

/**
 * The KES identity of a key: the same SHA-256 of the SPKI, as 64 lowercase hex characters.
 * For tests and migration tooling; MinKMS identities are `h1:` strings.
 */
export function kesIdentity(key: KeyObject): string {
  return createHash('sha256').update(spkiOfKey(key)).digest('hex');
}

/**
 * Returns the raw SubjectPublicKeyInfo bytes (a view into `certDer`) of a DER certificate
 * (RFC 5280 §4.1: Certificate → tbsCertificate → [version] serial signature issuer validity
 * subject subjectPublicKeyInfo).
 *
 * @throws TypeError if the DER does not have the shape of a certificate.
 */
export function spkiOfCertificate(certDer: Uint8Array): Buffer {
  const der = Buffer.isBuffer(certDer) ? certDer : Buffer.from(certDer.buffer, certDer.byteOffset, certDer.byteLength);
  const cert = readTlv(der);
  if (cert.tag !== TAG.SEQUENCE) throw new TypeError('not a DER certificate');
  const tbs = readTlv(cert.content);
  if (tbs.tag !== TAG.SEQUENCE) throw new TypeError('not a DER certificate');
  const fields = readChildren(tbs.content);
  const start = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version, absent for v1
  const spki = fields[start + 5];
  if (spki === undefined || spki.tag !== TAG.SEQUENCE) throw new TypeError('not a DER certificate');
  return spki.raw;
}

/** Anything a certificate may come as: parsed, DER, PEM, or a TLS peer certificate `{ raw }`. */
export type CertificateInput = X509Certificate | Uint8Array | string | { readonly raw: Uint8Array };

/**
 * Computes the identity of a certificate from its raw SubjectPublicKeyInfo.
 *
 * Accepts an `X509Certificate`, DER bytes, PEM text, or an object with a `raw` DER field (what
 * `tlsSocket.getPeerCertificate()` returns — the cheapest form on the request path).
 *
 * @throws TypeError if the input is not a certificate (e.g. `{}` when the peer sent none).
 */
export function identityOfCertificate(cert: CertificateInput): string {
  let der: Uint8Array;
  if (typeof cert === 'string') {
    try {
      der = new X509Certificate(cert).raw;
    } catch {
      throw new TypeError('identityOfCertificate: not a PEM certificate');
    }
  } else if (cert instanceof Uint8Array) {
    der = cert;
  } else if (cert !== null && typeof cert === 'object' && cert.raw instanceof Uint8Array) {
    der = cert.raw;
  } else {
    throw new TypeError('identityOfCertificate: no certificate');
  }
  return identityFromSpki(spkiOfCertificate(der));
}

/** Whether `s` is a valid identity: `h1:` + canonical base64url of exactly 32 bytes. */
export function isIdentity(s: unknown): s is string {
  if (typeof s !== 'string' || s.length !== IDENTITY_LENGTH || !s.startsWith(IDENTITY_PREFIX)) return false;
  const bytes = decodeBase64UrlStrict(s.slice(IDENTITY_PREFIX.length));
  return bytes !== undefined && bytes.length === 32;
}

/** Whether `s` is a valid identity or the empty "zero identity". */
export function isIdentityOrEmpty(s: unknown): s is string {
  return s === '' || isIdentity(s);
}

/**
 * Validates an identity string and returns it unchanged.
 *
 * @throws TypeError if `s` is not a valid identity (the empty string is not accepted).
 */
export function parseIdentity(s: string): string {
  if (!isIdentity(s)) {
    throw new TypeError("invalid identity: must be 'h1:' followed by 43 base64url characters (32 bytes)");
  }
  return s;
}
