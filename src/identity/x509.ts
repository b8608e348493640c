/**
 * X.509 v3 certificate creation (RFC 5280), write-only: we build and sign certificates here and
 * parse them with node's `X509Certificate`.
 *
 * Supported signing keys: Ed25519 (RFC 8410 §3, no parameters), ECDSA P-256/P-384/P-521 with
 * SHA-256/384/512 (RFC 5758 §3.2, no parameters, DER signature), RSA PKCS#1 v1.5 with SHA-256
 * (RFC 4055 §5, NULL parameters). Any public key node can export as SPKI can be certified.
 */

import { createHash, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import {
  bitString,
  boolean,
  decodeOid,
  directoryString,
  explicit,
  implicitPrimitive,
  integerSmall,
  integerUnsigned,
  namedBitString,
  nullValue,
  octetString,
  oid,
  readChildren,
  readTlv,
  sequence,
  setOf,
  TAG,
  time,
} from './der.js';

/** KeyUsage bits (RFC 5280 §4.2.1.3) we can set. */
export type KeyUsage = 'digitalSignature' | 'keyEncipherment' | 'keyCertSign' | 'cRLSign';

/** ExtendedKeyUsage purposes (RFC 5280 §4.2.1.12) we can set. */
export type ExtKeyUsage = 'serverAuth' | 'clientAuth';

/** Options of {@link createCertificate}. */
export interface CertificateOptions {
  /** The subject's public key (a private key is accepted: its public half is used). */
  publicKey: KeyObject;
  /** The issuer's private key. Same key pair as `publicKey` ⇒ self-signed. */
  signingKey: KeyObject;
  subjectCommonName: string;
  /** Issuer CN; defaults to `subjectCommonName` (self-signed). Must equal the CA's subject CN. */
  issuerCommonName?: string;
  /** Serial number magnitude (unsigned big-endian, ≤ 20 bytes); default 16 random bytes. */
  serial?: Buffer;
  /** Default: now. */
  notBefore?: Date;
  notAfter: Date;
  dnsNames?: string[];
  /** IPv4 and IPv6 literals. */
  ipAddresses?: string[];
  /** BasicConstraints cA; default false. */
  isCA?: boolean;
  keyUsage: KeyUsage[];
  extKeyUsage?: ExtKeyUsage[];
}

const OID = {
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ed25519: '1.3.101.112',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
  sha256WithRsaEncryption: '1.2.840.113549.1.1.11',
} as const;

const KEY_USAGE_BITS: Record<KeyUsage, number> = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
};

interface SignatureScheme {
  readonly algorithm: Buffer; // AlgorithmIdentifier DER
  sign(tbs: Buffer): Buffer;
}

function signatureScheme(key: KeyObject): SignatureScheme {
  if (key.type !== 'private') throw new TypeError('createCertificate: signingKey must be a private key');
  switch (key.asymmetricKeyType) {
    case 'ed25519':
      return { algorithm: sequence(oid(OID.ed25519)), sign: (tbs) => sign(null, tbs, key) };
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const [hash, alg] =
        curve === 'prime256v1'
          ? ['sha256', OID.ecdsaWithSha256]
          : curve === 'secp384r1'
            ? ['sha384', OID.ecdsaWithSha384]
            : curve === 'secp521r1'
              ? ['sha512', OID.ecdsaWithSha512]
              : [undefined, undefined];
      if (hash === undefined || alg === undefined) {
        throw new TypeError('createCertificate: ECDSA signing keys must use P-256, P-384 or P-521');
      }
      return { algorithm: sequence(oid(alg)), sign: (tbs) => sign(hash, tbs, { key, dsaEncoding: 'der' }) };
    }
    case 'rsa':
      return {
        algorithm: sequence(oid(OID.sha256WithRsaEncryption), nullValue()),
        sign: (tbs) => sign('sha256', tbs, key),
      };
    default:
      throw new TypeError(`createCertificate: unsupported signing key type ${String(key.asymmetricKeyType)}`);
  }
}

function spkiOf(key: KeyObject): Buffer {
  return (key.type === 'public' ? key : createPublicKey(key)).export({ type: 'spki', format: 'der' });
}

/**
 * Key identifier of an SPKI: the leftmost 160 bits of SHA-256 of the subjectPublicKey bits
 * (RFC 7093 §2 method 1; avoids SHA-1).
 */
function keyIdentifier(spki: Buffer): Buffer {
  const [, subjectPublicKey] = readChildren(readTlv(spki).content);
  if (subjectPublicKey === undefined || subjectPublicKey.tag !== TAG.BIT_STRING) {
    throw new TypeError('invalid SubjectPublicKeyInfo');
  }
  return createHash('sha256').update(subjectPublicKey.content.subarray(1)).digest().subarray(0, 20);
}

function name(commonName: string): Buffer {
  // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue), RFC 5280 §4.1.2.4
  return sequence(setOf(sequence(oid(OID.commonName), directoryString(commonName))));
}

/**
 * Parses an IPv4 or IPv6 literal into 4 or 16 bytes (the iPAddress GeneralName form,
 * RFC 5280 §4.2.1.6). Brackets around IPv6 (`[::1]`) are accepted.
 *
 * @throws TypeError if `text` is not an IP literal (zone ids are rejected).
 */
export function ipAddressBytes(text: string): Buffer {
  const s = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const v = isIP(s);
  if (v === 4) return Buffer.from(s.split('.').map(Number));
  if (v !== 6 || s.includes('%')) throw new TypeError(`not an IP address: ${JSON.stringify(text)}`);
  let groups: string[];
  const parse = (part: string): string[] => {
    if (part === '') return [];
    const g = part.split(':');
    const last = g[g.length - 1]!;
    if (last.includes('.')) {
      // embedded IPv4 (e.g. ::ffff:10.0.0.1) → two 16-bit groups
      const b = last.split('.').map(Number);
      g.splice(g.length - 1, 1, ((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16));
    }
    return g;
  };
  const halves = s.split('::');
  if (halves.length === 2) {
    const head = parse(halves[0]!);
    const tail = parse(halves[1]!);
    groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  } else {
    groups = parse(s);
  }
  if (groups.length !== 8) throw new TypeError(`not an IP address: ${JSON.stringify(text)}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
  return critical ? sequence(oid(id), boolean(true), octetString(value)) : sequence(oid(id), octetString(value));
}

const DNS_NAME = /^[\x21-\x7e]+$/;

/**
 * Creates and signs an X.509 v3 certificate.
 *
 * Extensions: SubjectKeyIdentifier; AuthorityKeyIdentifier when the issuer key differs from the
 * subject key; BasicConstraints (critical); KeyUsage (critical); ExtKeyUsage if given;
 * SubjectAltName if DNS names or IPs are given.
 *
 * @returns the certificate as PEM and DER.
 * @throws TypeError / RangeError on invalid options.
 */
export function createCertificate(opts: CertificateOptions): { certPem: string; certDer: Buffer } {
  const scheme = signatureScheme(opts.signingKey);
  const spki = spkiOf(opts.publicKey);
  const issuerSpki = spkiOf(opts.signingKey);
  const selfSigned = spki.equals(issuerSpki);

  const serial = opts.serial ?? randomBytes(16); // all-zero: probability 2^-128, rejected below
  if (serial.length === 0 || serial.length > 20 || serial.every((b) => b === 0)) {
    throw new RangeError('createCertificate: serial must be 1..20 bytes and non-zero (RFC 5280 §4.1.2.2)');
  }
  const notBefore = opts.notBefore ?? new Date();
  if (!(opts.notAfter.getTime() > notBefore.getTime())) {
    throw new RangeError('createCertificate: notAfter must be after notBefore');
  }
  if (opts.keyUsage.length === 0) throw new RangeError('createCertificate: keyUsage must not be empty');

  const extensions: Buffer[] = [extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(spki)))];
  if (!selfSigned) {
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    extensions.push(extension(OID.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, keyIdentifier(issuerSpki)))));
  }
  // BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE } — DER omits the default.
  extensions.push(extension(OID.basicConstraints, true, opts.isCA ? sequence(boolean(true)) : sequence()));
  extensions.push(extension(OID.keyUsage, true, namedBitString([...new Set(opts.keyUsage)].map((u) => KEY_USAGE_BITS[u]))));
  if (opts.extKeyUsage !== undefined && opts.extKeyUsage.length > 0) {
    extensions.push(extension(OID.extKeyUsage, false, sequence(...opts.extKeyUsage.map((u) => oid(OID[u])))));
  }
  const altNames: Buffer[] = [];
  for (const dns of opts.dnsNames ?? []) {
    if (!DNS_NAME.test(dns)) throw new TypeError(`createCertificate: invalid DNS name ${JSON.stringify(dns)}`);
    altNames.push(implicitPrimitive(2, Buffer.from(dns, 'ascii'))); // dNSName [2] IA5String
  }
  for (const ip of opts.ipAddresses ?? []) altNames.push(implicitPrimitive(7, ipAddressBytes(ip))); // iPAddress [7]
  if (altNames.length > 0) extensions.push(extension(OID.subjectAltName, false, sequence(...altNames)));

  const tbs = sequence(
    explicit(0, integerSmall(2)), // version v3
    integerUnsigned(serial),
    scheme.algorithm,
    name(opts.issuerCommonName ?? opts.subjectCommonName),
    sequence(time(notBefore), time(opts.notAfter)),
    name(opts.subjectCommonName),
    spki,
    explicit(3, sequence(...extensions)),
  );
  const certDer = sequence(tbs, scheme.algorithm, bitString(scheme.sign(tbs)));
  return { certDer, certPem: toPem('CERTIFICATE', certDer) };
}

/** PEM-encodes DER (RFC 7468), 64 characters per line. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** One certificate extension as found in the DER. */
export interface CertificateExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** The extnValue contents (the DER of the extension's own structure). */
  readonly value: Buffer;
}

/**
 * Lists the extensions of a DER certificate (for tests and diagnostics; node's
 * `X509Certificate` does not expose KeyUsage or BasicConstraints criticality).
 *
 * @throws TypeError if the DER does not have the shape of a certificate.
 */
export function readCertificateExtensions(certDer: Buffer): CertificateExtension[] {
  const tbs = readTlv(readTlv(certDer).content);
  const ext = readChildren(tbs.content).find((f) => f.tag === 0xa3);
  if (ext === undefined) return [];
  return readChildren(readTlv(ext.content).content).map((e) => {
    const [id, second, third] = readChildren(e.content);
    if (id === undefined || id.tag !== TAG.OID || second === undefined) throw new TypeError('invalid extension');
    const critical = second.tag === TAG.BOOLEAN ? second.content[0] !== 0 : false;
    const value = second.tag === TAG.BOOLEAN ? third : second;
    if (value === undefined || value.tag !== TAG.OCTET_STRING) throw new TypeError('invalid extension');
    return { oid: decodeOid(id.content), critical, value: value.content };
  });
}
