/**
 * Ready-made certificates: the client certificate of an API key (kms-wire.md §1.3), a
 * self-signed server certificate, and a small test CA.
 *
 * All private keys are returned as PKCS#8 PEM (RFC 5208 / RFC 7468), what node's `tls` expects.
 */

import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { ApiKey } from './api-key.js';
import { identityOfPublicKey } from './identity.js';
import { createCertificate, type ExtKeyUsage, type KeyUsage } from './x509.js';

/** A certificate and its private key, both PEM. */
export interface PemCertificate {
  /** The certificate (PEM). */
  readonly cert: string;
  /** The private key (PKCS#8 PEM). Secret. */
  readonly key: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Validity of an API key's client certificate: 90 days (kms-wire.md §1.3). */
export const API_KEY_CERTIFICATE_DAYS = 90;

function pkcs8Pem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }) as string;
}

function checkDays(days: number): void {
  if (!Number.isFinite(days) || days <= 0) throw new RangeError(`days must be a positive number, got ${String(days)}`);
}

function splitHosts(hosts: readonly string[]): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const h of hosts) {
    const bare = h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
    if (isIP(bare) !== 0) ipAddresses.push(bare);
    else dnsNames.push(h);
  }
  return { dnsNames, ipAddresses };
}

/**
 * The client certificate a MinKMS client builds from its API key (kms-wire.md §1.3): self-signed
 * with the API key, random 128-bit serial, subject `CN=<identity>`, valid `now … now + 90 days`,
 * KeyUsage digitalSignature, ExtKeyUsage clientAuth, BasicConstraints CA=false.
 *
 * @param now start of the validity period (default: the current time).
 */
export function certificateForApiKey(apiKey: ApiKey, now: Date = new Date()): PemCertificate {
  const { certPem } = createCertificate({
    publicKey: apiKey.publicKey,
    signingKey: apiKey.privateKey,
    subjectCommonName: apiKey.identity,
    notBefore: now,
    notAfter: new Date(now.getTime() + API_KEY_CERTIFICATE_DAYS * DAY_MS),
    isCA: false,
    keyUsage: ['digitalSignature'],
    extKeyUsage: ['clientAuth'],
  });
  return { cert: certPem, key: pkcs8Pem(apiKey.privateKey) };
}

/** Options of {@link createSelfSignedServerCertificate}. */
export interface ServerCertificateOptions {
  /** DNS names and IP literals, e.g. `['localhost', '127.0.0.1', '::1']`. The first is the CN. */
  hosts: string[];
  /** Validity in days from now. */
  days: number;
}

/**
 * Creates a self-signed TLS server certificate with a fresh ECDSA P-256 key (accepted by Go,
 * curl and browsers): SANs from `hosts`, KeyUsage digitalSignature + keyEncipherment,
 * ExtKeyUsage serverAuth, CA=false. The validity starts 5 minutes in the past to tolerate
 * client clock skew.
 *
 * @throws TypeError if `hosts` is empty; RangeError if `days` is not positive.
 */
export function createSelfSignedServerCertificate(opts: ServerCertificateOptions): PemCertificate {
  if (opts.hosts.length === 0) throw new TypeError('createSelfSignedServerCertificate: hosts must not be empty');
  checkDays(opts.days);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const now = Date.now();
  const { certPem } = createCertificate({
    publicKey,
    signingKey: privateKey,
    subjectCommonName: opts.hosts[0]!,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + opts.days * DAY_MS),
    ...splitHosts(opts.hosts),
    isCA: false,
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: ['serverAuth'],
  });
  return { cert: certPem, key: pkcs8Pem(privateKey) };
}

/** A certificate authority for tests: certificate, key, and what is needed to issue. */
export interface CertificateAuthority extends PemCertificate {
  readonly privateKey: KeyObject;
  readonly commonName: string;
}

/**
 * Creates a self-signed CA (ECDSA P-256, CA=true, KeyUsage keyCertSign + cRLSign +
 * digitalSignature), for tests and development.
 *
 * @param days validity in days (default 365).
 */
export function createCertificateAuthority(commonName: string, days = 365): CertificateAuthority {
  checkDays(days);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const now = Date.now();
  const { certPem } = createCertificate({
    publicKey,
    signingKey: privateKey,
    subjectCommonName: commonName,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + days * DAY_MS),
    isCA: true,
    keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'],
  });
  return { cert: certPem, key: pkcs8Pem(privateKey), privateKey, commonName };
}

/** Options of {@link issueCertificate}. */
export interface IssueOptions {
  commonName: string;
  /** DNS names and IP literals for the SAN. */
  hosts?: string[];
  clientAuth?: boolean;
  serverAuth?: boolean;
  days: number;
  /** Key type of the new certificate: ECDSA P-256 (default), Ed25519 or RSA 2048. */
  keyType?: 'ecdsa' | 'ed25519' | 'rsa';
}

/** A certificate issued by {@link issueCertificate}. */
export interface IssuedCertificate extends PemCertificate {
  readonly privateKey: KeyObject;
  /** The `h1:` identity of the new key. */
  readonly identity: string;
}

/**
 * Issues a leaf certificate signed by `ca` with a fresh key pair, for tests and development.
 * KeyUsage is digitalSignature (plus keyEncipherment for RSA); ExtKeyUsage as requested.
 */
export function issueCertificate(ca: CertificateAuthority, opts: IssueOptions): IssuedCertificate {
  checkDays(opts.days);
  const keyType = opts.keyType ?? 'ecdsa';
  const { privateKey, publicKey } =
    keyType === 'ed25519'
      ? generateKeyPairSync('ed25519')
      : keyType === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const extKeyUsage: ExtKeyUsage[] = [];
  if (opts.serverAuth) extKeyUsage.push('serverAuth');
  if (opts.clientAuth) extKeyUsage.push('clientAuth');
  const keyUsage: KeyUsage[] = keyType === 'rsa' ? ['digitalSignature', 'keyEncipherment'] : ['digitalSignature'];
  const now = Date.now();
  const { certPem } = createCertificate({
    publicKey,
    signingKey: ca.privateKey,
    subjectCommonName: opts.commonName,
    issuerCommonName: ca.commonName,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + opts.days * DAY_MS),
    ...splitHosts(opts.hosts ?? []),
    isCA: false,
    keyUsage,
    extKeyUsage,
  });
  return { cert: certPem, key: pkcs8Pem(privateKey), privateKey, identity: identityOfPublicKey(publicKey) };
}
