/**
 * Unit tests of src/identity: API keys and identities against test/vectors (kms-wire.md §7),
 * certificates (parsed back with node's X509Certificate), and a real mTLS handshake on
 * 127.0.0.1 where the server derives the client's identity from its certificate.
 */

import { before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import {
  apiKeyFromSeed,
  certificateForApiKey,
  createCertificate,
  createCertificateAuthority,
  createSelfSignedServerCertificate,
  decodeBase64UrlStrict,
  generateApiKey,
  identityFromSpki,
  identityOfCertificate,
  identityOfPublicKey,
  ipAddressBytes,
  isIdentity,
  isIdentityOrEmpty,
  issueCertificate,
  kesIdentity,
  parseApiKey,
  parseIdentity,
  readCertificateExtensions,
  spkiOfCertificate,
  type ApiKey,
  type ApiKeyCurve,
  type PemCertificate,
} from '../../src/identity/index.js';
import { loadVectors } from '../helpers/vectors.js';

// ---------------------------------------------------------------------------------------------
// helpers

interface ApiKeyFile {
  valid: {
    name: string;
    text: string;
    kind: 'k1' | 'k2';
    curve: ApiKeyCurve;
    identity: string;
    ed25519PublicKey?: string;
    kesIdentity?: string;
  }[];
  kes: { cases: { name: string; text: string; kesIdentity: string }[] };
  invalid: { name: string; text: string }[];
}
interface IdentityFile {
  valid: { name: string; text: string }[];
  emptyIsZeroIdentity: { name: string; text: string };
  invalid: { name: string; text: string }[];
}

const apiKeyVectors = loadVectors<ApiKeyFile>('api-keys.json');
const identityVectors = loadVectors<IdentityFile>('identities.json');

const OID_EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const OID_EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const DAY_MS = 24 * 60 * 60 * 1000;

/** Finds an extension by OID; fails the test if missing. */
function ext(certPem: string, oid: string): { critical: boolean; hex: string } {
  const found = readCertificateExtensions(new X509Certificate(certPem).raw).find((e) => e.oid === oid);
  assert.ok(found, `extension ${oid} missing`);
  return { critical: found.critical, hex: found.value.toString('hex') };
}

// DER values of the extensions we check (RFC 5280 §4.2.1.3, §4.2.1.9).
const KU_DIGITAL_SIGNATURE = '03020780'; // BIT STRING, 7 unused bits, bit 0
const KU_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT = '030205a0'; // bits 0 and 2
const KU_CA = '03020186'; // bits 0, 5, 6 (digitalSignature, keyCertSign, cRLSign)
const BC_NOT_CA = '3000';
const BC_CA = '30030101ff';

// ---------------------------------------------------------------------------------------------
// API keys

describe('parseApiKey', () => {
  it('derives curve, kind and identity of every vector key', () => {
    apiKeyVectors.valid.forEach((v, i) => {
      const key = parseApiKey(v.text);
      assert.equal(key.kind, v.kind, `case ${i} (${v.name}): got kind ${key.kind}, want ${v.kind}`);
      assert.equal(key.curve, v.curve, `case ${i} (${v.name}): got curve ${key.curve}, want ${v.curve}`);
      assert.equal(key.identity, v.identity, `case ${i} (${v.name}): got ${key.identity}, want ${v.identity}`);
      assert.equal(key.text, v.text, `case ${i} (${v.name}): text not preserved`);
      assert.equal(key.privateKey.type, 'private', `case ${i} (${v.name}): privateKey is ${key.privateKey.type}`);
      assert.equal(key.publicKey.type, 'public', `case ${i} (${v.name}): publicKey is ${key.publicKey.type}`);
      const got = identityOfPublicKey(key.publicKey);
      assert.equal(got, v.identity, `case ${i} (${v.name}): identityOfPublicKey got ${got}, want ${v.identity}`);
    });
  });

  it('derives the Ed25519 public key and the KES hex identity of the example key', () => {
    apiKeyVectors.valid.forEach((v, i) => {
      const key = parseApiKey(v.text);
      if (v.ed25519PublicKey !== undefined) {
        const spki = key.publicKey.export({ type: 'spki', format: 'der' });
        const got = spki.subarray(spki.length - 32).toString('hex');
        assert.equal(got, v.ed25519PublicKey, `case ${i} (${v.name}): got public key ${got}, want ${v.ed25519PublicKey}`);
        assert.equal(spki.length, 44, `case ${i} (${v.name}): got SPKI length ${spki.length}, want 44`);
      }
      if (v.kesIdentity !== undefined) {
        const got = kesIdentity(key.publicKey);
        assert.equal(got, v.kesIdentity, `case ${i} (${v.name}): got KES identity ${got}, want ${v.kesIdentity}`);
        assert.equal(kesIdentity(key.privateKey), v.kesIdentity, `case ${i} (${v.name}): KES identity of private key differs`);
      }
    });
  });

  it('reproduces the KES identities of legacy kes:v1 keys via apiKeyFromSeed', () => {
    apiKeyVectors.kes.cases.forEach((v, i) => {
      const raw = Buffer.from(v.text.slice('kes:v1:'.length), 'base64');
      assert.equal(raw.length, 33, `case ${i} (${v.name}): got ${raw.length} bytes, want 33`);
      assert.equal(raw[0], 0, `case ${i} (${v.name}): got type byte ${raw[0]}, want 0 (Ed25519)`);
      const got = kesIdentity(apiKeyFromSeed(raw.subarray(1)).publicKey);
      assert.equal(got, v.kesIdentity, `case ${i} (${v.name}): got ${got}, want ${v.kesIdentity}`);
    });
  });

  it('parses legacy kes:v1 keys as the same Ed25519 key (one identity, two spellings: identity/kes.ts)', () => {
    apiKeyVectors.kes.cases.forEach((v, i) => {
      const key = parseApiKey(v.text);
      assert.equal(key.kind, 'kes', `case ${i} (${v.name})`);
      assert.equal(kesIdentity(key.publicKey), v.kesIdentity, `case ${i} (${v.name})`);
    });
  });

  it('rejects every invalid key text with a TypeError that does not reveal the key', () => {
    apiKeyVectors.invalid.forEach((v, i) => {
      let err: unknown;
      try {
        parseApiKey(v.text);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof TypeError, `case ${i} (${v.name}): got ${String(err)}, want TypeError`);
      const payload = v.text.slice(3).trim();
      if (payload.length >= 8) {
        assert.ok(!err.message.includes(payload), `case ${i} (${v.name}): error message contains the key text`);
      }
    });
  });
});

describe('apiKeyFromSeed', () => {
  it('gives the same key as parsing its k1 text', () => {
    apiKeyVectors.valid
      .filter((v) => v.kind === 'k1')
      .forEach((v, i) => {
        const seed = decodeBase64UrlStrict(v.text.slice(3));
        assert.ok(seed, `case ${i} (${v.name}): seed does not decode`);
        const key = apiKeyFromSeed(seed);
        assert.equal(key.text, v.text, `case ${i} (${v.name}): got ${key.text}, want ${v.text}`);
        assert.equal(key.identity, v.identity, `case ${i} (${v.name}): got ${key.identity}, want ${v.identity}`);
        assert.equal(key.curve, 'Ed25519');
      });
  });

  it('does not modify the seed and rejects wrong lengths', () => {
    const seed = Buffer.alloc(32, 7);
    apiKeyFromSeed(seed);
    assert.ok(seed.equals(Buffer.alloc(32, 7)), 'seed was modified');
    [0, 31, 33, 64].forEach((n, i) => {
      assert.throws(() => apiKeyFromSeed(Buffer.alloc(n)), RangeError, `case ${i} (${n} bytes): want RangeError`);
    });
  });
});

describe('generateApiKey', () => {
  const cases: { kind: 'k1' | 'k2'; curve?: ApiKeyCurve; wantCurve: ApiKeyCurve; wantLength: number }[] = [
    { kind: 'k1', wantCurve: 'Ed25519', wantLength: 46 },
    { kind: 'k1', curve: 'Ed25519', wantCurve: 'Ed25519', wantLength: 46 },
    { kind: 'k2', wantCurve: 'P-256', wantLength: 46 },
    { kind: 'k2', curve: 'P-256', wantCurve: 'P-256', wantLength: 46 },
    { kind: 'k2', curve: 'P-384', wantCurve: 'P-384', wantLength: 67 },
    { kind: 'k2', curve: 'P-521', wantCurve: 'P-521', wantLength: 91 },
  ];
  it('generates keys that parse back to the same identity', () => {
    cases.forEach((c, i) => {
      const name = `${c.kind} ${c.curve ?? 'default'}`;
      for (let rep = 0; rep < 5; rep++) {
        const key = generateApiKey(c.kind, c.curve);
        assert.equal(key.curve, c.wantCurve, `case ${i} (${name}): got curve ${key.curve}, want ${c.wantCurve}`);
        assert.equal(key.text.length, c.wantLength, `case ${i} (${name}): got length ${key.text.length}, want ${c.wantLength}`);
        const back = parseApiKey(key.text);
        assert.equal(back.identity, key.identity, `case ${i} (${name}): parsed identity differs`);
        assert.ok(isIdentity(key.identity), `case ${i} (${name}): invalid identity ${key.identity}`);
      }
    });
  });

  it('generates distinct keys', () => {
    const a = generateApiKey();
    const b = generateApiKey();
    assert.notEqual(a.identity, b.identity);
  });

  it('rejects invalid kind/curve combinations', () => {
    assert.throws(() => generateApiKey('k1', 'P-256'), TypeError);
    assert.throws(() => generateApiKey('k2', 'Ed25519'), TypeError);
    assert.throws(() => generateApiKey('k3' as 'k1'), TypeError);
  });
});

// ---------------------------------------------------------------------------------------------
// identities

describe('identity parsing', () => {
  it('accepts valid identities', () => {
    identityVectors.valid.forEach((v, i) => {
      assert.equal(isIdentity(v.text), true, `case ${i} (${v.name}): isIdentity got false, want true`);
      assert.equal(isIdentityOrEmpty(v.text), true, `case ${i} (${v.name}): isIdentityOrEmpty got false, want true`);
      assert.equal(parseIdentity(v.text), v.text, `case ${i} (${v.name}): parseIdentity changed the text`);
    });
  });

  it('treats the empty string as the zero identity only in isIdentityOrEmpty', () => {
    const { text, name } = identityVectors.emptyIsZeroIdentity;
    assert.equal(isIdentityOrEmpty(text), true, `${name}: isIdentityOrEmpty got false, want true`);
    assert.equal(isIdentity(text), false, `${name}: isIdentity got true, want false`);
    assert.throws(() => parseIdentity(text), TypeError, `${name}: parseIdentity should throw`);
  });

  it('rejects invalid identities', () => {
    identityVectors.invalid.forEach((v, i) => {
      assert.equal(isIdentity(v.text), false, `case ${i} (${v.name}): isIdentity got true, want false`);
      assert.equal(isIdentityOrEmpty(v.text), false, `case ${i} (${v.name}): isIdentityOrEmpty got true, want false`);
      assert.throws(() => parseIdentity(v.text), TypeError, `case ${i} (${v.name}): parseIdentity should throw`);
    });
    const nonStrings: unknown[] = [undefined, null, 42, {}, ['h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw']];
    nonStrings.forEach((v, i) => {
      assert.equal(isIdentity(v), false, `non-string case ${i}: isIdentity got true`);
      assert.equal(isIdentityOrEmpty(v), false, `non-string case ${i}: isIdentityOrEmpty got true`);
    });
  });

  it('computes identities of SPKI bytes and of public and private keys', () => {
    const key = parseApiKey(apiKeyVectors.valid[0]!.text);
    const spki = key.publicKey.export({ type: 'spki', format: 'der' });
    assert.equal(identityFromSpki(spki), apiKeyVectors.valid[0]!.identity);
    assert.equal(identityFromSpki(new Uint8Array(spki)), apiKeyVectors.valid[0]!.identity);
    assert.equal(identityOfPublicKey(key.privateKey), apiKeyVectors.valid[0]!.identity);
  });
});

// ---------------------------------------------------------------------------------------------
// certificates

describe('certificateForApiKey (kms-wire.md §1.3)', () => {
  const now = new Date('2025-06-01T12:00:00.000Z');
  apiKeyVectors.valid.forEach((v, i) => {
    it(`case ${i} (${v.name}, ${v.curve})`, () => {
      const apiKey = parseApiKey(v.text);
      const { cert, key } = certificateForApiKey(apiKey, now);
      const x = new X509Certificate(cert);
      assert.ok(x.checkPrivateKey(createPrivateKey(key)), 'checkPrivateKey failed');
      assert.ok(x.checkPrivateKey(apiKey.privateKey), 'checkPrivateKey (API key) failed');
      assert.ok(x.verify(apiKey.publicKey), 'self-signature does not verify');
      assert.equal(x.subject, `CN=${v.identity}`, `got subject ${x.subject}, want CN=${v.identity}`);
      assert.equal(x.issuer, x.subject, `got issuer ${x.issuer}, want the subject`);
      assert.equal(identityOfCertificate(x), v.identity, 'identityOfCertificate(X509Certificate)');
      assert.equal(identityOfCertificate(cert), v.identity, 'identityOfCertificate(PEM)');
      assert.equal(identityOfCertificate(x.raw), v.identity, 'identityOfCertificate(DER)');
      assert.equal(identityOfCertificate({ raw: x.raw }), v.identity, 'identityOfCertificate({raw})');
      assert.deepEqual(x.keyUsage, [OID_EKU_CLIENT_AUTH], `got ext key usage ${String(x.keyUsage)}`);
      assert.equal(x.ca, false, 'CA flag set');
      assert.deepEqual(ext(cert, '2.5.29.15'), { critical: true, hex: KU_DIGITAL_SIGNATURE }, 'KeyUsage');
      assert.deepEqual(ext(cert, '2.5.29.19'), { critical: true, hex: BC_NOT_CA }, 'BasicConstraints');
      assert.equal(x.subjectAltName, undefined, 'unexpected SAN');
      const from = Date.parse(x.validFrom);
      const to = Date.parse(x.validTo);
      assert.equal(from, now.getTime(), `got notBefore ${x.validFrom}, want ${now.toISOString()}`);
      assert.equal(to - from, 90 * DAY_MS, `got validity ${(to - from) / DAY_MS} days, want 90`);
      assert.ok(/^[0-9A-F]+$/.test(x.serialNumber) && x.serialNumber.length <= 34, `odd serial ${x.serialNumber}`);
      assert.ok(key.startsWith('-----BEGIN PRIVATE KEY-----'), 'key is not PKCS#8 PEM');
    });
  });

  it('uses a fresh random serial each time', () => {
    const apiKey = parseApiKey(apiKeyVectors.valid[0]!.text);
    const a = new X509Certificate(certificateForApiKey(apiKey).cert).serialNumber;
    const b = new X509Certificate(certificateForApiKey(apiKey).cert).serialNumber;
    assert.notEqual(a, b);
  });
});

describe('createSelfSignedServerCertificate', () => {
  it('has the SANs, usages and validity asked for', () => {
    const { cert, key } = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1', '::1'], days: 30 });
    const x = new X509Certificate(cert);
    assert.ok(x.checkPrivateKey(createPrivateKey(key)), 'checkPrivateKey failed');
    assert.ok(x.verify(x.publicKey), 'self-signature does not verify');
    assert.equal(x.publicKey.asymmetricKeyType, 'ec');
    assert.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const wantSan = 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1';
    assert.equal(x.subjectAltName, wantSan, `got SAN ${x.subjectAltName}, want ${wantSan}`);
    assert.equal(x.checkHost('localhost'), 'localhost');
    assert.equal(x.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(x.checkIP('::1'), '::1');
    assert.equal(x.checkHost('example.com'), undefined);
    assert.deepEqual(x.keyUsage, [OID_EKU_SERVER_AUTH]);
    assert.equal(x.ca, false);
    assert.deepEqual(ext(cert, '2.5.29.15'), { critical: true, hex: KU_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT });
    assert.deepEqual(ext(cert, '2.5.29.19'), { critical: true, hex: BC_NOT_CA });
    const days = (Date.parse(x.validTo) - Date.now()) / DAY_MS;
    assert.ok(days > 29.9 && days <= 30, `got ${days} days of validity left, want 30`);
    assert.ok(Date.parse(x.validFrom) <= Date.now(), 'not yet valid');
  });

  it('rejects empty hosts and bad days', () => {
    assert.throws(() => createSelfSignedServerCertificate({ hosts: [], days: 1 }), TypeError);
    assert.throws(() => createSelfSignedServerCertificate({ hosts: ['localhost'], days: 0 }), RangeError);
  });
});

describe('createCertificateAuthority / issueCertificate', () => {
  const ca = createCertificateAuthority('minkms test CA');
  const caX = new X509Certificate(ca.cert);

  it('creates a CA certificate', () => {
    assert.equal(caX.ca, true);
    assert.equal(caX.subject, 'CN=minkms test CA');
    assert.ok(caX.verify(caX.publicKey));
    assert.deepEqual(ext(ca.cert, '2.5.29.19'), { critical: true, hex: BC_CA });
    assert.deepEqual(ext(ca.cert, '2.5.29.15'), { critical: true, hex: KU_CA });
  });

  const cases: { keyType: 'ecdsa' | 'ed25519' | 'rsa'; asymmetricKeyType: string }[] = [
    { keyType: 'ecdsa', asymmetricKeyType: 'ec' },
    { keyType: 'ed25519', asymmetricKeyType: 'ed25519' },
    { keyType: 'rsa', asymmetricKeyType: 'rsa' },
  ];
  cases.forEach((c, i) => {
    it(`case ${i} (${c.keyType}): issues a leaf that chains to the CA`, () => {
      const leaf = issueCertificate(ca, {
        commonName: `leaf-${c.keyType}`,
        hosts: ['localhost', '10.0.0.1'],
        serverAuth: true,
        clientAuth: true,
        days: 2,
        keyType: c.keyType,
      });
      const x = new X509Certificate(leaf.cert);
      assert.equal(x.publicKey.asymmetricKeyType, c.asymmetricKeyType);
      assert.ok(x.checkIssued(caX), 'checkIssued(CA) is false');
      assert.ok(x.verify(caX.publicKey), 'signature does not verify with the CA key');
      assert.ok(x.checkPrivateKey(leaf.privateKey));
      assert.equal(x.issuer, caX.subject);
      assert.equal(x.subjectAltName, 'DNS:localhost, IP Address:10.0.0.1');
      assert.deepEqual(x.keyUsage, [OID_EKU_SERVER_AUTH, OID_EKU_CLIENT_AUTH]);
      assert.equal(identityOfCertificate(x), leaf.identity);
      const aki = ext(leaf.cert, '2.5.29.35').hex;
      const caSki = ext(ca.cert, '2.5.29.14').hex; // OCTET STRING (04 14 …)
      assert.equal(aki, '30168014' + caSki.slice(4), 'AuthorityKeyIdentifier does not match the CA SubjectKeyIdentifier');
    });
  });
});

describe('createCertificate', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

  it('signs with every supported key type', () => {
    const signers: [string, KeyObject][] = [
      ['Ed25519', generateKeyPairSync('ed25519').privateKey],
      ['P-256', generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey],
      ['P-384', generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey],
      ['P-521', generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey],
      ['RSA 2048', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey],
    ];
    const wantAlg = ['ED25519', 'ecdsa-with-SHA256', 'ecdsa-with-SHA384', 'ecdsa-with-SHA512', 'sha256WithRSAEncryption'];
    const wantAlgOid = ['06032b6570', '06082a8648ce3d040302', '06082a8648ce3d040303', '06082a8648ce3d040304', '06092a864886f70d01010b0500'];
    signers.forEach(([name, signingKey], i) => {
      const { certDer, certPem } = createCertificate({
        publicKey: signingKey,
        signingKey,
        subjectCommonName: name,
        notAfter: new Date(Date.now() + DAY_MS),
        keyUsage: ['digitalSignature'],
      });
      const x = new X509Certificate(certPem);
      assert.ok(x.raw.equals(certDer), `case ${i} (${name}): PEM and DER differ`);
      assert.ok(x.verify(x.publicKey), `case ${i} (${name}): signature does not verify`);
      assert.ok(certDer.toString('hex').includes(wantAlgOid[i]!), `case ${i} (${name}): want signature algorithm ${wantAlg[i]}`);
      const spki = spkiOfCertificate(certDer);
      const want = createPublicKey(signingKey).export({ type: 'spki', format: 'der' });
      assert.ok(spki.equals(want), `case ${i} (${name}): sliced SPKI differs from the exported SPKI`);
    });
  });

  it('encodes dates as UTCTime before 2050 and GeneralizedTime from 2050', () => {
    const cases: [string, Date, Date, string, string][] = [
      [
        'UTCTime',
        new Date('2025-01-02T03:04:05.678Z'),
        new Date('2049-12-31T23:59:59Z'),
        '170d3235303130323033303430355a',
        '170d3439313233313233353935395a',
      ],
      [
        'GeneralizedTime',
        new Date('2049-06-01T00:00:00Z'),
        new Date('2050-01-01T00:00:00Z'),
        '170d3439303630313030303030305a',
        '180f32303530303130313030303030305a',
      ],
    ];
    cases.forEach(([name, notBefore, notAfter, wantFrom, wantTo], i) => {
      const { certDer, certPem } = createCertificate({
        publicKey,
        signingKey: privateKey,
        subjectCommonName: 't',
        notBefore,
        notAfter,
        keyUsage: ['digitalSignature'],
      });
      const h = certDer.toString('hex');
      assert.ok(h.includes(wantFrom + wantTo), `case ${i} (${name}): validity encoding not found`);
      const x = new X509Certificate(certPem);
      assert.equal(Date.parse(x.validTo), notAfter.getTime(), `case ${i} (${name}): got validTo ${x.validTo}`);
      assert.equal(
        Date.parse(x.validFrom),
        Math.floor(notBefore.getTime() / 1000) * 1000,
        `case ${i} (${name}): got validFrom ${x.validFrom}`,
      );
    });
  });

  it('encodes serials as positive minimal INTEGERs', () => {
    const cases: [string, Buffer, string][] = [
      ['high bit set', Buffer.from('80000000000000000000000000000001', 'hex'), '80000000000000000000000000000001'],
      ['leading zeros', Buffer.from('00000102', 'hex'), '0102'],
      ['one', Buffer.from([1]), '01'],
    ];
    cases.forEach(([name, serial, want], i) => {
      const { certPem } = createCertificate({
        publicKey,
        signingKey: privateKey,
        subjectCommonName: 't',
        serial,
        notAfter: new Date(Date.now() + DAY_MS),
        keyUsage: ['digitalSignature'],
      });
      const got = new X509Certificate(certPem).serialNumber;
      assert.equal(got, want.toUpperCase(), `case ${i} (${name}): got ${got}, want ${want.toUpperCase()}`);
    });
  });

  it('rejects invalid options', () => {
    const base = {
      publicKey,
      signingKey: privateKey,
      subjectCommonName: 't',
      notAfter: new Date(Date.now() + DAY_MS),
      keyUsage: ['digitalSignature' as const],
    };
    const cases: [string, () => unknown][] = [
      ['public signing key', () => createCertificate({ ...base, signingKey: publicKey })],
      ['zero serial', () => createCertificate({ ...base, serial: Buffer.alloc(16) })],
      ['21-byte serial', () => createCertificate({ ...base, serial: Buffer.alloc(21, 1) })],
      ['notAfter before notBefore', () => createCertificate({ ...base, notBefore: new Date(), notAfter: new Date(Date.now() - 1000) })],
      ['empty keyUsage', () => createCertificate({ ...base, keyUsage: [] })],
      ['bad DNS name', () => createCertificate({ ...base, dnsNames: ['a b'] })],
      ['bad IP', () => createCertificate({ ...base, ipAddresses: ['1.2.3'] })],
      [
        'secp256k1 signing key',
        () => createCertificate({ ...base, signingKey: generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey }),
      ],
    ];
    cases.forEach(([name, fn], i) => {
      assert.throws(
        fn,
        (e: unknown) => e instanceof TypeError || e instanceof RangeError,
        `case ${i} (${name}): want TypeError or RangeError`,
      );
    });
  });
});

describe('ipAddressBytes', () => {
  const cases: [string, string][] = [
    ['127.0.0.1', '7f000001'],
    ['0.0.0.0', '00000000'],
    ['::1', '00000000000000000000000000000001'],
    ['[::1]', '00000000000000000000000000000001'],
    ['::', '00000000000000000000000000000000'],
    ['fe80::1:2', 'fe800000000000000000000000010002'],
    ['2001:db8::', '20010db8000000000000000000000000'],
    ['2001:db8:0:1:2:3:4:5', '20010db8000000010002000300040005'],
    ['::ffff:10.1.2.3', '00000000000000000000ffff0a010203'],
    ['1:2:3:4:5:6:7.8.9.10', '0001000200030004000500060708090a'],
  ];
  it('parses IPv4 and IPv6 literals', () => {
    cases.forEach(([input, want], i) => {
      const got = ipAddressBytes(input).toString('hex');
      assert.equal(got, want, `case ${i} (${input}): got ${got}, want ${want}`);
    });
  });
  it('rejects non-IPs', () => {
    ['', 'localhost', '1.2.3', '1.2.3.256', ':::1', 'fe80::1%eth0', '1::2::3'].forEach((input, i) => {
      assert.throws(() => ipAddressBytes(input), TypeError, `case ${i} (${JSON.stringify(input)}): want TypeError`);
    });
  });
});

describe('identityOfCertificate input forms', () => {
  it('rejects non-certificates', () => {
    const cases: [string, unknown][] = [
      ['empty peer certificate object', {}],
      ['null', null],
      ['garbage DER', Buffer.from('3003020101', 'hex')],
      ['empty DER', Buffer.alloc(0)],
    ];
    cases.forEach(([name, input], i) => {
      assert.throws(() => identityOfCertificate(input as Buffer), TypeError, `case ${i} (${name}): want TypeError`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// real mTLS handshake on 127.0.0.1

interface TlsResult {
  /** What the server computed from the peer certificate ('' when there was none). */
  serverSawIdentity: string;
  /** What the client received back. */
  clientGot: string;
}

/**
 * Starts a TLS server that requests (but does not verify) a client certificate, connects once,
 * and returns the identity the server derived. Everything is closed; the whole exchange is
 * bounded by a timeout.
 */
async function handshake(server: PemCertificate, caForClient: string, client: PemCertificate | undefined): Promise<TlsResult> {
  const srv = tls.createServer({ cert: server.cert, key: server.key, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
  let serverSawIdentity = '<none>';
  srv.on('secureConnection', (socket) => {
    const peer = socket.getPeerX509Certificate();
    serverSawIdentity = peer === undefined ? '' : identityOfCertificate(peer);
    socket.end(serverSawIdentity);
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = srv.address() as AddressInfo;
  try {
    const clientGot = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('TLS exchange timed out'));
      }, 5000);
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        ca: caForClient,
        ...(client ? { cert: client.cert, key: client.key } : {}),
      });
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (data += d));
      socket.on('end', () => {
        clearTimeout(timer);
        socket.end();
        resolve(data);
      });
      socket.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    return { serverSawIdentity, clientGot };
  } finally {
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
}

describe('mTLS on 127.0.0.1', () => {
  let server: PemCertificate;
  before(() => {
    server = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1', '::1'], days: 1 });
  });

  const keys: [string, () => ApiKey][] = [
    ...apiKeyVectors.valid.slice(0, 5).map((v): [string, () => ApiKey] => [`${v.name} (${v.curve})`, () => parseApiKey(v.text)]),
    ['generated k1', () => generateApiKey('k1')],
    ['generated k2 P-384', () => generateApiKey('k2', 'P-384')],
  ];
  keys.forEach(([name, makeKey], i) => {
    it(`case ${i} (${name}): the server derives the API key's identity`, async () => {
      const apiKey = makeKey();
      const got = await handshake(server, server.cert, certificateForApiKey(apiKey));
      assert.equal(
        got.serverSawIdentity,
        apiKey.identity,
        `case ${i} (${name}): server got ${got.serverSawIdentity}, want ${apiKey.identity}`,
      );
      assert.equal(got.clientGot, apiKey.identity, `case ${i} (${name}): client got ${got.clientGot}, want ${apiKey.identity}`);
    });
  });

  it('serves a client without certificate (identity empty)', async () => {
    const got = await handshake(server, server.cert, undefined);
    assert.equal(got.serverSawIdentity, '', `got ${got.serverSawIdentity}, want empty`);
  });

  it('works with CA-issued server and client certificates (RSA, Ed25519, ECDSA clients)', async () => {
    const ca = createCertificateAuthority('mtls test CA');
    const srv = issueCertificate(ca, { commonName: 'localhost', hosts: ['localhost', '127.0.0.1'], serverAuth: true, days: 1 });
    for (const keyType of ['rsa', 'ed25519', 'ecdsa'] as const) {
      const client = issueCertificate(ca, { commonName: `client-${keyType}`, clientAuth: true, days: 1, keyType });
      const got = await handshake(srv, ca.cert, client);
      assert.equal(got.serverSawIdentity, client.identity, `${keyType}: server got ${got.serverSawIdentity}, want ${client.identity}`);
    }
  });

  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
    it(`keeps the peer identity on resumed sessions (${maxVersion}, kms-wire.md §1.5/§8)`, async () => {
      const apiKey = generateApiKey('k1');
      const client = certificateForApiKey(apiKey);
      const srv = tls.createServer({ cert: server.cert, key: server.key, requestCert: true, rejectUnauthorized: false });
      const seen: { reused: boolean; identity: string }[] = [];
      srv.on('secureConnection', (socket) => {
        const peer = socket.getPeerX509Certificate();
        seen.push({ reused: socket.isSessionReused(), identity: peer === undefined ? '' : identityOfCertificate(peer) });
        socket.end('ok');
      });
      await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
      const { port } = srv.address() as AddressInfo;
      const connectOnce = (session?: Buffer): Promise<Buffer | undefined> =>
        new Promise((resolve, reject) => {
          let ticket: Buffer | undefined;
          const socket = tls.connect({
            host: '127.0.0.1',
            port,
            servername: 'localhost',
            ca: server.cert,
            cert: client.cert,
            key: client.key,
            maxVersion,
            ...(session ? { session } : {}),
          });
          const timer = setTimeout(() => {
            socket.destroy();
            reject(new Error('TLS exchange timed out'));
          }, 5000);
          socket.on('session', (s: Buffer) => (ticket = s));
          socket.on('data', () => {});
          socket.on('end', () => {
            clearTimeout(timer);
            socket.end();
            resolve(ticket ?? socket.getSession());
          });
          socket.on('error', (err) => {
            clearTimeout(timer);
            reject(err);
          });
        });
      try {
        const session = await connectOnce();
        assert.ok(session, 'no session to resume');
        await connectOnce(session);
      } finally {
        await new Promise<void>((resolve) => srv.close(() => resolve()));
      }
      assert.equal(seen.length, 2);
      assert.equal(seen[1]!.reused, true, 'second connection did not resume the session');
      assert.equal(seen[0]!.identity, apiKey.identity, `first connection: got ${seen[0]!.identity}, want ${apiKey.identity}`);
      assert.equal(seen[1]!.identity, apiKey.identity, `resumed connection: got ${seen[1]!.identity}, want ${apiKey.identity}`);
    });
  }

  it('fails when the client does not trust the server certificate', async () => {
    const other = createSelfSignedServerCertificate({ hosts: ['localhost'], days: 1 });
    await assert.rejects(handshake(server, other.cert, certificateForApiKey(generateApiKey())));
  });
});
