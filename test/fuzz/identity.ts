/**
 * Fuzz targets of the API key and identity parsers (`src/identity/`). Their documented error
 * class is `TypeError` (an API key is a secret: its parse errors never contain it).
 *
 * Properties:
 * - `parseApiKey` on any text (random; `k1:`/`k2:`-shaped payloads of every length around 43, 64
 *   and 88 characters; the spec's keys with character edits) returns an `ApiKey` whose `text` is
 *   the input, whose kind and curve match the prefix and payload length and whose identity is a
 *   valid `h1:` identity — a different accepted text is a different key — or throws a
 *   `TypeError` whose message does not contain the payload;
 * - `isIdentity` never throws; `parseIdentity` returns its input exactly when `isIdentity` holds
 *   and throws a `TypeError` otherwise; `isIdentityOrEmpty` is `isIdentity` plus the empty string;
 * - `decodeBase64UrlStrict` returns bytes only for text that they re-encode to exactly;
 * - `spkiOfCertificate`, `identityOfCertificate` and `readCertificateExtensions` on any bytes
 *   (random, or real certificates — Ed25519 and ECDSA keys — with byte edits) and
 *   `identityOfCertificate` on any PEM text return or throw a `TypeError`; an unedited
 *   certificate gives its key's identity.
 */
import fc from 'fast-check';
import { X509Certificate } from 'node:crypto';
import { parseApiKey, type ApiKey } from '../../src/identity/api-key.js';
import { decodeBase64UrlStrict, encodeBase64Url } from '../../src/identity/base64url.js';
import { identityOfCertificate, isIdentity, isIdentityOrEmpty, parseIdentity, spkiOfCertificate } from '../../src/identity/identity.js';
import { createCertificate, readCertificateExtensions, toPem } from '../../src/identity/x509.js';
import { attempt, check, expectErrorClass, show, target, type FuzzTarget, type Outcomes } from '../helpers/fuzz.js';
import { mutate, mutateText, mutationsArb, textMutationArb, unicodeChar } from './mutate.js';

/** API keys of kms-wire.md §7 (fixed, so that counterexamples replay). */
const SPEC_KEYS = [
  'k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E',
  'k1:xZnpcYtPdVMNLBBRaUO5HPEoK_jVrcc3MWR8BshkjJw',
  'k2:q0B1BZ069Sk3-pBun983nLbQUOSR_j0ltnkfG4nPrE0',
  'k2:CaJIp1tfO7US1bMkRP1LzVzMV8v4IK5oBW1bhuvJFpFOPtbsJf3a3vViu5uGSas6',
  'k2:AT7JYw3tnjgYhqplUPiJbITqAdgo4IuDf9talnHivzMeoEsVR60Vidpl93zAdweZApsStCEpHVPtwGAD2UoGI0o0',
];
const SPEC_IDENTITIES = [
  'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw',
  'h1:01Wao7cTy0ZGRsOmZzjtnrIliF2ozLlwkGa4adRMAYI',
  'h1:9edVjiHvgN6h5L1AmEjUgyapyTdCcrO54-INxKHeDdw',
  'h1:Ks-Q7OFe1W_ktXYdoBmHxLWKICLyGRj1P4wFQoZ2JKA',
];

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const b64urlChar = fc.constantFrom(...B64URL);
/** Characters around the base64url alphabet: standard base64, padding, whitespace, non-ASCII. */
const nearB64Char = fc.oneof(
  { weight: 8, arbitrary: b64urlChar },
  { weight: 1, arbitrary: fc.constantFrom('+', '/', '=', ' ', '\n', '.', 'é', '\u0000', '%') },
);

const payloadArb = fc.oneof(
  fc.integer({ min: 40, max: 46 }).chain((n) => fc.string({ unit: b64urlChar, minLength: n, maxLength: n })),
  fc.integer({ min: 61, max: 67 }).chain((n) => fc.string({ unit: b64urlChar, minLength: n, maxLength: n })),
  fc.integer({ min: 85, max: 91 }).chain((n) => fc.string({ unit: b64urlChar, minLength: n, maxLength: n })),
  fc.string({ unit: nearB64Char, maxLength: 100 }),
);
const prefixArb = fc.constantFrom('k1:', 'k2:', 'k1:', 'k2:', 'K1:', 'k3:', 'h1:', '', 'k1', 'kes:v1:', ' k1:');

/** Key texts built from bytes, so that k2 scalars of every width (and out of range) appear. */
const keyFromBytesArb = fc.oneof(
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => 'k1:' + encodeBase64Url(b)),
  fc.constantFrom(32, 48, 66, 31, 33, 65, 67).chain((n) =>
    fc.uint8Array({ minLength: n, maxLength: n }).map((b) => {
      // Mostly in range for P-521 (its 66-byte scalar starts with 0x00 or 0x01).
      if (n === 66 && b[0]! > 1) b[0] = b[0]! & 1;
      return 'k2:' + encodeBase64Url(b);
    }),
  ),
  fc.constantFrom('k2:' + encodeBase64Url(Buffer.alloc(32)), 'k2:' + encodeBase64Url(Buffer.alloc(32, 0xff))),
);

function checkApiKey(text: string, outcomes: Outcomes): ApiKey | undefined {
  const r = attempt(() => parseApiKey(text));
  if (!r.ok) {
    outcomes.add(expectErrorClass(r.error, TypeError));
    const payload = text.slice(3);
    const msg = (r.error as Error).message;
    if (payload.length >= 8) check(!msg.includes(payload), () => `parse error repeats the key: ${show(msg)}`);
    return undefined;
  }
  const k = r.value;
  outcomes.add(`${k.kind}:${k.curve}`);
  check(k.text === text, () => `text ${show(k.text)} ≠ input ${show(text)}`);
  check(text.startsWith(k.kind + ':'), () => `kind ${k.kind} for ${show(text)}`);
  const bytes = decodeBase64UrlStrict(text.slice(3));
  check(bytes !== undefined, () => `accepted a non-canonical payload ${show(text)}`);
  const want = k.kind === 'k1' ? 'Ed25519' : ({ 32: 'P-256', 48: 'P-384', 66: 'P-521' } as Record<number, string>)[bytes.length];
  check(k.curve === want, () => `curve ${k.curve} for a ${bytes.length}-byte ${k.kind} payload`);
  check(isIdentity(k.identity), () => `identity ${show(k.identity)} is not an identity`);
  return k;
}

const identityArb = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.integer({ min: 40, max: 46 }).chain((n) => fc.string({ unit: nearB64Char, minLength: n, maxLength: n }).map((s) => 'h1:' + s)),
  fc
    .tuple(fc.constantFrom(...SPEC_IDENTITIES), fc.array(textMutationArb(nearB64Char), { maxLength: 3 }))
    .map(([id, ms]) => mutateText(id, ms)),
  fc.constantFrom('', 'h1:', 'H1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw', 'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw '),
);

// ---------------------------------------------------------------------------------------------
// Certificates: built once, deterministic (Ed25519 signatures, fixed serial and dates)

interface CertCase {
  der: Buffer;
  pem: string;
  identity: string;
}
let certs: CertCase[] = [];

function buildCerts(): CertCase[] {
  const ed = parseApiKey(SPEC_KEYS[0]!);
  const make = (subject: ApiKey, extra: Partial<Parameters<typeof createCertificate>[0]>): CertCase => {
    const { certPem, certDer } = createCertificate({
      publicKey: subject.publicKey,
      signingKey: ed.privateKey,
      subjectCommonName: subject.identity,
      issuerCommonName: ed.identity,
      serial: Buffer.from('0123456789abcdef', 'hex'),
      notBefore: new Date('2025-01-01T00:00:00Z'),
      notAfter: new Date('2025-04-01T00:00:00Z'),
      keyUsage: ['digitalSignature'],
      extKeyUsage: ['clientAuth'],
      ...extra,
    });
    return { der: certDer, pem: certPem, identity: subject.identity };
  };
  return [
    make(ed, {}),
    make(parseApiKey(SPEC_KEYS[2]!), {
      dnsNames: ['localhost', 'kms.example.net'],
      ipAddresses: ['127.0.0.1', '::1'],
      extKeyUsage: ['serverAuth'],
    }),
    make(parseApiKey(SPEC_KEYS[4]!), { isCA: true, keyUsage: ['digitalSignature', 'keyCertSign', 'cRLSign'] }),
  ];
}

const certInputArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('der' as const),
      cert: fc.nat({ max: 2 }),
      mutations: fc.option(mutationsArb, { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 300 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('pem' as const),
      cert: fc.nat({ max: 2 }),
      edits: fc.array(textMutationArb(fc.constantFrom('-', 'A', '/', '+', '=', '\n', ' ', 'x')), { maxLength: 3 }),
    }),
  },
);

export const identityTargets: FuzzTarget[] = [
  target({
    name: 'identity.apikey.text',
    arbitrary: fc.oneof(
      { weight: 3, arbitrary: fc.tuple(prefixArb, payloadArb).map(([p, s]) => p + s) },
      { weight: 2, arbitrary: keyFromBytesArb },
      { weight: 1, arbitrary: fc.string({ unit: unicodeChar, maxLength: 100 }) },
    ),
    run: (text, outcomes) => {
      checkApiKey(text, outcomes);
    },
    quickRuns: 800,
    weight: 8,
  }),

  target({
    name: 'identity.apikey.mutated',
    arbitrary: fc.record({
      key: fc.nat({ max: SPEC_KEYS.length - 1 }),
      edits: fc.array(textMutationArb(nearB64Char), { minLength: 1, maxLength: 3 }),
    }),
    run: ({ key, edits }, outcomes) => {
      const original = SPEC_KEYS[key]!;
      const text = mutateText(original, edits);
      const k = checkApiKey(text, outcomes);
      if (k && text !== original) {
        check(k.identity !== parseApiKey(original).identity, () => `the edited key ${show(text)} has the identity of ${show(original)}`);
      }
    },
    quickRuns: 500,
    weight: 6,
  }),

  target({
    name: 'identity.h1',
    arbitrary: identityArb,
    run: (s, outcomes) => {
      const ok = attempt(() => isIdentity(s));
      check(ok.ok && typeof ok.value === 'boolean', () => `isIdentity(${show(s)}) threw or returned a non-boolean`);
      const valid = ok.value;
      const parsed = attempt(() => parseIdentity(s));
      if (valid) {
        check(parsed.ok && parsed.value === s, () => `parseIdentity(${show(s)}) failed, isIdentity says valid`);
        check(decodeBase64UrlStrict(s.slice(3))?.length === 32, () => `${show(s)} does not hold 32 bytes`);
        outcomes.add('valid');
      } else {
        check(!parsed.ok, () => `parseIdentity(${show(s)}) accepted, isIdentity says invalid`);
        outcomes.add(expectErrorClass(parsed.error, TypeError));
      }
      check(isIdentityOrEmpty(s) === (s === '' || valid), () => `isIdentityOrEmpty(${show(s)})`);
    },
    quickRuns: 1000,
    weight: 10,
  }),

  target({
    name: 'identity.base64url',
    arbitrary: fc.string({ unit: nearB64Char, maxLength: 90 }),
    run: (text, outcomes) => {
      const r = attempt(() => decodeBase64UrlStrict(text));
      check(r.ok, () => `decodeBase64UrlStrict(${show(text)}) threw`);
      if (r.value === undefined) {
        outcomes.add('refused');
        return;
      }
      outcomes.add('decoded');
      check(encodeBase64Url(r.value) === text, () => `${show(text)} decoded to bytes that encode to ${show(encodeBase64Url(r.value!))}`);
    },
    quickRuns: 1000,
    weight: 10,
  }),

  target({
    name: 'identity.certificate',
    arbitrary: certInputArb,
    setup: async () => {
      if (certs.length === 0) certs = buildCerts();
    },
    run: (input, outcomes) => {
      if (input.kind === 'pem') {
        const c = certs[input.cert]!;
        const pem = mutateText(c.pem, input.edits);
        const r = attempt(() => identityOfCertificate(pem));
        if (r.ok) {
          outcomes.add('pem:ok');
          check(isIdentity(r.value), () => `identity ${show(r.value)}`);
          // Node's parser accepted the PEM: the identity is that of the certificate it parsed.
          check(r.value === identityOfCertificate(new X509Certificate(pem).raw), 'PEM and DER identities differ');
        } else {
          outcomes.add(`pem:${expectErrorClass(r.error, TypeError)}`);
        }
        return;
      }
      const c = input.kind === 'der' ? certs[input.cert]! : undefined;
      const der = input.kind === 'der' ? (input.mutations ? mutate(c!.der, input.mutations) : c!.der) : Buffer.from(input.bytes);
      const spki = attempt(() => spkiOfCertificate(der));
      const id = attempt(() => identityOfCertificate(der));
      const ext = attempt(() => readCertificateExtensions(der));
      if (!spki.ok) expectErrorClass(spki.error, TypeError);
      if (id.ok) check(isIdentity(id.value), () => `identity ${show(id.value)}`);
      else expectErrorClass(id.error, TypeError);
      check(spki.ok === id.ok, 'spkiOfCertificate and identityOfCertificate disagree');
      if (!ext.ok) expectErrorClass(ext.error, TypeError);
      if (c && der === c.der) check(id.ok && id.value === c.identity, () => `the certificate of ${c.identity} gives ${show(id)}`);
      outcomes.add(`der:${id.ok ? 'ok' : 'TypeError'}/ext:${ext.ok ? 'ok' : 'TypeError'}`);
      // Round trip through PEM for what Node can parse.
      if (id.ok) {
        const x = attempt(() => new X509Certificate(toPem('CERTIFICATE', der)));
        if (x.ok) check(identityOfCertificate(x.value) === id.value, 'X509Certificate and DER identities differ');
      }
    },
    quickRuns: 800,
    weight: 6,
  }),
];
