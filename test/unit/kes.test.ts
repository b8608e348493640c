/**
 * The KES pieces without a server: the two spellings of keys and identities, KES's ciphertext
 * formats (made by test/helpers/kes.ts from their documentation), the policy mapping in both
 * directions (cases, and properties: round trip, and the same decisions as KES's own path
 * matching), list positions, the keystore reader and the `kes:` configuration.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { apiKeyFromSeed, generateApiKey, parseApiKey } from '../../src/identity/api-key.js';
import { identityOfKes, isKesIdentity, kesApiKeyOf, kesIdentityOf, normalizeIdentity } from '../../src/identity/kes.js';
import { decryptWithKey, encryptWithKey } from '../../src/crypto/ciphertext.js';
import { mayBeKesJson, openKesJson, parseKesJsonCiphertext } from '../../src/crypto/kes-json.js';
import { KmsError } from '../../src/errors.js';
import { fromKesPolicy, namePatternFor, toKesPolicy } from '../../src/kes/policy.js';
import { KES_APIS } from '../../src/kes/apis.js';
import { isAllowed, type Rules } from '../../src/kms/policy.js';
import { continueToken, pageOf, parseListParam } from '../../src/kes/list.js';
import { parseKesKey, readKesKeystore } from '../../src/kes/keystore.js';
import { kesError } from '../../src/kes/errors.js';
import { ConfigError, validateConfig } from '../../src/config/config.js';
import { hchacha20Reference, jsonToBinary, kesBinary, kesJson } from '../helpers/kes.js';
import { removeDir, tempDir } from '../helpers/server.js';

describe('identities and API keys: one key pair, two spellings', () => {
  test('kes:v1: is 0x00 and the Ed25519 seed; it authenticates as the k1: key of the same seed', () => {
    const seed = randomBytes(32);
    const k1 = apiKeyFromSeed(seed);
    const kes = parseApiKey('kes:v1:' + Buffer.concat([Buffer.from([0]), seed]).toString('base64'));
    assert.equal(kes.kind, 'kes');
    assert.equal(kes.identity, k1.identity);
    assert.equal(kesApiKeyOf(k1.privateKey), kes.text);
    assert.equal(kesApiKeyOf(generateApiKey('k2').privateKey), undefined, 'KES has no spelling for ECDSA keys');
  });

  test("the KES client's identity of a key it generated (kes.GenerateAPIKey, Identity())", () => {
    const key = parseApiKey('kes:v1:AAHcfdHOtzolBEiK5rhnK2Uwxgdm0oGUZfLnvHNiKmP/');
    assert.equal(kesIdentityOf(key.identity), '29d975f6dbc168ec7776aeaae2dfab3f3c74230dcfb3b0449c9b26beed02f206');
    assert.equal(key.identity, 'h1:Kdl19tvBaOx3dq6q4t-rPzx0Iw3Ps7BEnJsmvu0C8gY');
  });

  test('malformed KES API keys are refused without echoing them', () => {
    const seed = randomBytes(32);
    for (const bad of [
      'kes:v1:' + Buffer.concat([Buffer.from([1]), seed]).toString('base64'), // unknown type
      'kes:v1:' + seed.toString('base64'), // no type byte
      'kes:v1:' + Buffer.concat([Buffer.from([0]), Buffer.alloc(32, 0xfb)]).toString('base64url'), // wrong alphabet
      'kes:v2:' + Buffer.concat([Buffer.from([0]), seed]).toString('base64'),
    ]) {
      assert.throws(
        () => parseApiKey(bad),
        (e: Error) => e instanceof TypeError && !e.message.includes(bad.slice(7, 20)),
        bad,
      );
    }
  });

  test('hex ↔ h1: round trip; either spelling normalizes to h1:', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (b) => {
        const hex = Buffer.from(b).toString('hex');
        const h1 = identityOfKes(hex);
        assert.equal(kesIdentityOf(h1), hex);
        assert.equal(normalizeIdentity(hex.toUpperCase()), h1);
        assert.equal(normalizeIdentity(h1), h1);
        assert.ok(isKesIdentity(hex));
      }),
    );
    assert.equal(normalizeIdentity('abc'), undefined);
    assert.equal(normalizeIdentity('k1:' + 'a'.repeat(43)), undefined);
    assert.equal(kesIdentityOf(''), '');
  });
});

describe("KES's ciphertext formats", () => {
  const key = randomBytes(32);
  const pt = Buffer.from('data key 0123456789abcdef0123456');
  const ctx = Buffer.from('{"bucket":"b","object":"o"}');

  test('the reference HChaCha20 of the tests matches the draft vector', () => {
    const k = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    assert.equal(
      hchacha20Reference(k, Buffer.from('000000090000004a0000000031415927', 'hex')).toString('hex'),
      '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc',
    );
  });

  test('the binary format is ours: both directions, both algorithms', () => {
    for (const alg of ['AES256', 'ChaCha20'] as const) {
      assert.deepEqual(decryptWithKey(alg, key, kesBinary(alg, key, pt, ctx), ctx), pt, alg);
      const ours = encryptWithKey(alg, key, pt, ctx);
      assert.equal(parseKesJsonCiphertext(ours), undefined);
    }
  });

  test('every JSON variant opens with the key, whatever its type; the ciphertext names the algorithm', () => {
    const cases: [string, Buffer][] = [
      ['AES-256-GCM-HMAC-SHA-256', kesJson('AES-256-GCM-HMAC-SHA-256', key, pt, ctx)],
      ['AES-256-GCM-HMAC-SHA-256 with id', kesJson('AES-256-GCM-HMAC-SHA-256', key, pt, ctx, { withId: true })],
      ['ChaCha20Poly1305', kesJson('ChaCha20Poly1305', key, pt, ctx)],
      ['AES-256-GCM (derived key)', kesJson('AES-256-GCM', key, pt, ctx)],
      ['AES-256-GCM (the key itself)', kesJson('AES-256-GCM', key, pt, ctx, { direct: true })],
    ];
    for (const [name, ct] of cases) {
      assert.ok(mayBeKesJson(ct), name);
      const parsed = parseKesJsonCiphertext(ct);
      assert.ok(parsed, name);
      assert.deepEqual(openKesJson(parsed, key, ctx), pt, name);
      assert.throws(
        () => openKesJson(parsed, key, Buffer.from('other')),
        (e: unknown) => e instanceof KmsError && e.code === 'ERR_DECRYPT',
        name,
      );
      assert.throws(
        () => openKesJson(parsed, randomBytes(32), ctx),
        (e: unknown) => e instanceof KmsError && e.code === 'ERR_DECRYPT',
        name,
      );
      // MinIO turns it into the binary format: the same bytes as our own.
      assert.deepEqual(parsed.binary, jsonToBinary(ct), name);
    }
  });

  test('not the JSON format: anything else is left to the binary format', () => {
    const valid = JSON.parse(kesJson('ChaCha20Poly1305', key, pt).toString()) as Record<string, string>;
    const variants: unknown[] = [
      { ...valid, aead: 'DES' },
      { ...valid, iv: valid.nonce },
      { ...valid, nonce: 'AAAA' },
      { ...valid, bytes: 'AA==' },
      { ...valid, id: 7 },
      { ...valid, iv: valid.iv!.replace(/=+$/, '') },
      [valid],
    ];
    for (const v of variants) assert.equal(parseKesJsonCiphertext(Buffer.from(JSON.stringify(v))), undefined, JSON.stringify(v));
    // Binary ciphertexts may start with '{' and end with '}' by chance.
    const random = Buffer.concat([Buffer.from('{'), randomBytes(60), Buffer.from('}')]);
    assert.ok(mayBeKesJson(random));
    assert.equal(parseKesJsonCiphertext(random), undefined);
  });
});

describe('KES policies ↔ command policies', () => {
  test("MinIO's documented KES policy", () => {
    const m = fromKesPolicy(
      [
        '/v1/key/create/minio-*',
        '/v1/key/generate/minio-*',
        '/v1/key/decrypt/minio-*',
        '/v1/key/bulk/decrypt',
        '/v1/key/list/*',
        '/v1/status',
        '/v1/metrics',
      ],
      [],
    );
    assert.deepEqual(m.allow, { 'KEY:CREATE': ['minio-*'], 'KEY:GENERATE': ['minio-*'], 'KEY:DECRYPT': ['minio-*'], 'KEY:LIST': ['*'] });
    assert.deepEqual(m.deny, {});
    assert.ok(m.notes.some((n) => n.includes('/v1/status') && n.includes('every identity')));
    assert.ok(m.notes.some((n) => n.includes('/v1/metrics') && n.includes('metrics.identities')));
    assert.ok(
      m.notes.some((n) => n.includes('/v1/key/bulk/decrypt')),
      'the bulk path without a name grants nothing',
    );
    assert.ok(
      m.notes.some((n) => n.includes('/v1/key/create/minio-*') && n.includes('import')),
      'create also allows import here',
    );
  });

  test('wildcards over the API part: prefix, per-segment globs', () => {
    assert.deepEqual(fromKesPolicy(['/v1/key/*'], []).allow, {
      'KEY:CREATE': ['*'],
      'KEY:STATUS': ['*'],
      'KEY:DELETE': ['*'],
      'KEY:GENERATE': ['*'],
      'KEY:ENCRYPT': ['*'],
      'KEY:DECRYPT': ['*'],
      'KEY:MAC': ['*'],
      'KEY:LIST': ['*'],
    });
    assert.deepEqual(fromKesPolicy(['/v1/key/*/app-*'], []).allow['KEY:GENERATE'], ['app-*']);
    assert.deepEqual(fromKesPolicy(['/v1/*'], []).allow['POLICY:GET'], ['*']);
    assert.equal(
      namePatternFor(
        '/v1/key/generate/x',
        KES_APIS.find((a) => a.path === '/v1/key/decrypt/')!,
      ),
      undefined,
    );
  });

  test('identities: hex becomes h1:, other identity patterns fail closed', () => {
    const hex = randomBytes(32).toString('hex');
    const m = fromKesPolicy(
      [`/v1/identity/describe/${hex}`, '/v1/identity/describe/ab*', '/v1/identity/list/*'],
      ['/v1/identity/describe/cd*'],
    );
    assert.deepEqual(m.allow, { 'IDENTITY:STATUS': [identityOfKes(hex)], 'IDENTITY:LIST': ['*'] });
    assert.deepEqual(m.deny, { 'IDENTITY:STATUS': ['*'] });
    assert.equal(m.notes.filter((n) => n.includes('ab*') || n.includes('cd*')).length, 2);
    assert.deepEqual(toKesPolicy(m.allow, m.deny), {
      allow: [`/v1/identity/describe/${hex}`, '/v1/identity/list/*'],
      deny: ['/v1/identity/describe/*'],
    });
  });

  test('what no KES API has, and what minkms does not serve, is named', () => {
    const m = fromKesPolicy(['/v1/secret/read/*', '/v2/key/create/x', '/v1/policy/write/app-*', '/v1/log/audit'], ['/v1/status']);
    assert.deepEqual(m.allow, { 'POLICY:CREATE': ['app-*'] });
    assert.equal(m.notes.length, 5);
    assert.ok(m.notes.some((n) => n.startsWith('deny /v1/status') && n.includes('cannot be honoured')));
    assert.ok(m.notes.some((n) => n.startsWith('allow /v1/log/audit') && n.includes('SysAdmins')));
  });

  test('names KES may use but minkms cannot: allow drops, deny denies everything', () => {
    const m = fromKesPolicy(['/v1/key/generate/a b'], ['/v1/key/decrypt/a b']);
    assert.deepEqual(m.allow, {});
    assert.deepEqual(m.deny, { 'KEY:DECRYPT': ['*'] });
  });

  test('our policies as KES paths: every KES API of a command', () => {
    assert.deepEqual(
      toKesPolicy({ 'KEY:CREATE': ['a-*'], 'KEY:DECRYPT': ['a-*'], 'KEY:LISTVERSIONS': ['*'] }, { 'KEY:DECRYPT': ['a-secret'] }),
      {
        allow: ['/v1/key/bulk/decrypt/a-*', '/v1/key/create/a-*', '/v1/key/decrypt/a-*', '/v1/key/import/a-*'],
        deny: ['/v1/key/bulk/decrypt/a-secret', '/v1/key/decrypt/a-secret'],
      },
    );
  });

  const NAME_CHARS = fc.constantFrom(...'abcxyz0129-._:'.split(''));
  const NAME = fc.string({ unit: NAME_CHARS, minLength: 1, maxLength: 8 }).filter((s) => /^[a-z0-9]/.test(s));
  const PATTERN = fc.oneof(
    NAME,
    NAME.map((n) => n + '*'),
    fc.constant('*'),
  );
  const KEY_APIS = KES_APIS.filter((a) => a.command !== undefined && a.resource !== 'identity');

  test('property: command → KES paths → command is the identity (commands KES has, non-identity names)', () => {
    const COMMANDS = [...new Set(KEY_APIS.map((a) => a.command!))];
    const RULES = fc.dictionary(fc.constantFrom(...COMMANDS), fc.uniqueArray(PATTERN, { minLength: 1, maxLength: 4 }), { maxKeys: 5 });
    fc.assert(
      fc.property(RULES, RULES, (allow: Rules, deny: Rules) => {
        const paths = toKesPolicy(allow, deny);
        const back = fromKesPolicy(paths.allow, paths.deny);
        const norm = (r: Rules) =>
          Object.fromEntries(
            Object.entries(r)
              .map(([c, p]) => [c, [...new Set(p)].sort()])
              .sort(),
          );
        const sorted = (r: Rules) =>
          Object.fromEntries(
            Object.entries(r)
              .map(([c, p]) => [c, [...p].sort()])
              .sort(),
          );
        assert.deepEqual(sorted(back.allow), norm(allow));
        assert.deepEqual(sorted(back.deny), norm(deny));
      }),
    );
  });

  /** KES's rule (kes.Policy docs): a pattern ending in `*` matches as a prefix of the request path, else exactly. */
  const kesMatches = (pattern: string, path: string) => (pattern.endsWith('*') ? path.startsWith(pattern.slice(0, -1)) : path === pattern);
  const kesAllows = (allow: string[], deny: string[], path: string) =>
    !deny.some((p) => kesMatches(p, path)) && allow.some((p) => kesMatches(p, path));

  test("property: the mapped policy decides every request as KES's path matching does", () => {
    const PATH = fc.tuple(fc.constantFrom(...KEY_APIS), PATTERN).map(([a, p]) => a.path + p);
    // Requests: an API that takes a name (lists: the param is a position, not the object).
    const REQUEST = fc.tuple(fc.constantFrom(...KEY_APIS.filter((a) => !a.list)), NAME);
    fc.assert(
      fc.property(fc.array(PATH, { maxLength: 6 }), fc.array(PATH, { maxLength: 3 }), REQUEST, (allow, deny, [api, name]) => {
        const ours = isAllowed(fromKesPolicy(allow, deny), api.command!, name);
        // APIs that share a command here (create and import, decrypt and bulk decrypt) are one
        // right: allowed if KES allows one of them and denies none. For every other API this is
        // exactly KES's decision.
        const siblings = KEY_APIS.filter((a) => a.command === api.command && !a.list).map((a) => a.path + name);
        const want = siblings.some((p) => allow.some((x) => kesMatches(x, p))) && !siblings.some((p) => deny.some((x) => kesMatches(x, p)));
        assert.equal(ours, want, JSON.stringify({ allow, deny, request: api.path + name }));
        if (siblings.length === 1) assert.equal(ours, kesAllows(allow, deny, api.path + name));
      }),
    );
  });
});

describe('lists: prefix and position in one parameter', () => {
  test('forms', () => {
    assert.deepEqual(parseListParam(''), { prefix: '', from: '' });
    assert.deepEqual(parseListParam('*'), { prefix: '', from: '' });
    assert.deepEqual(parseListParam('minio-'), { prefix: 'minio-', from: '' });
    assert.deepEqual(parseListParam('minio-*'), { prefix: 'minio-', from: '' });
    assert.deepEqual(parseListParam('minio-*minio-x'), { prefix: 'minio-', from: 'minio-x' });
    assert.equal(continueToken({ prefix: 'a', from: '' }, 'a9'), 'a*a9');
    assert.equal(continueToken({ prefix: 'a', from: '' }, ''), '');
  });

  test('property: following the tokens lists every name with the prefix once, in order', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 4 })),
        fc.constantFrom('', 'a', 'ab', 'c'),
        fc.integer({ min: 1, max: 4 }),
        (names, prefix, limit) => {
          const sorted = [...names].sort();
          const got: string[] = [];
          let param: string = prefix;
          for (let i = 0; i < 100; i++) {
            const pos = parseListParam(param);
            const page = pageOf(sorted, pos, limit);
            got.push(...page.items);
            param = continueToken(pos, page.continueAt);
            if (param === '') break;
          }
          assert.deepEqual(
            got,
            sorted.filter((n) => n.startsWith(prefix)),
          );
        },
      ),
    );
  });
});

describe('the KES keystore reader', () => {
  test('a filesystem keystore in every layout KES wrote, and a JSON key list', () => {
    const dir = tempDir('minkms-kes-keystore-');
    try {
      const keys = Array.from({ length: 5 }, () => randomBytes(32));
      const ks = join(dir, 'keys');
      mkdirSync(ks);
      writeFileSync(
        join(ks, 'typed-aes'),
        JSON.stringify({ bytes: keys[0]!.toString('base64'), algorithm: 'AES256', created_at: '2023-01-01T00:00:00Z', created_by: 'ab' }),
      );
      writeFileSync(join(ks, 'typed-chacha'), JSON.stringify({ bytes: keys[1]!.toString('base64'), algorithm: 'XCHACHA20-POLY1305' }));
      writeFileSync(join(ks, 'untyped'), JSON.stringify({ bytes: keys[2]!.toString('base64') }));
      writeFileSync(join(ks, 'raw'), keys[3]!);
      writeFileSync(join(ks, 'text'), keys[4]!.toString('base64') + '\n');
      writeFileSync(join(ks, '.typed-aes.tmp'), 'partial');
      writeFileSync(join(ks, 'broken'), '{"bytes":"AAAA"}');
      writeFileSync(join(ks, 'bad name!'), keys[0]!);
      mkdirSync(join(ks, 'subdir'));
      const got = readKesKeystore(ks);
      assert.deepEqual(
        got.keys.map((k) => [k.name, k.type]),
        [
          ['raw', 'AES256'],
          ['text', 'AES256'],
          ['typed-aes', 'AES256'],
          ['typed-chacha', 'ChaCha20'],
          ['untyped', 'AES256'],
        ],
      );
      assert.deepEqual(got.keys.find((k) => k.name === 'raw')!.key, keys[3]);
      assert.deepEqual(got.keys.find((k) => k.name === 'typed-chacha')!.key, keys[1]);
      assert.deepEqual(got.skipped.map((s) => s.name).sort(), ['bad name!', 'broken', 'subdir']);

      const list = join(dir, 'keys.json');
      writeFileSync(
        list,
        JSON.stringify({ a: keys[0]!.toString('base64'), b: { bytes: keys[1]!.toString('base64'), algorithm: 'ChaCha20' }, c: 'short' }),
      );
      const fromList = readKesKeystore(list);
      assert.deepEqual(
        fromList.keys.map((k) => [k.name, k.type]),
        [
          ['a', 'AES256'],
          ['b', 'ChaCha20'],
        ],
      );
      assert.deepEqual(fromList.skipped, [{ name: 'c', why: 'not base64 of 32 bytes' }]);
      assert.equal(typeof parseKesKey('k', { bytes: keys[0]!.toString('base64'), algorithm: 'RSA' }), 'string');
    } finally {
      removeDir(dir);
    }
  });
});

describe('errors and configuration', () => {
  test("errors in KES's spelling where it differs", () => {
    const spell = (code: ConstructorParameters<typeof KmsError>[0]) => kesError(new KmsError(code)) as KmsError;
    assert.deepEqual(
      [spell('ERR_NOT_ALLOWED').status, spell('ERR_NOT_ALLOWED').message],
      [403, 'not authorized: insufficient permissions'],
    );
    assert.deepEqual([spell('ERR_KEY_EXISTS').status, spell('ERR_KEY_EXISTS').message], [400, 'key already exists']);
    assert.deepEqual([spell('ERR_DECRYPT').status, spell('ERR_DECRYPT').message], [400, 'decryption failed: ciphertext is not authentic']);
    assert.equal(spell('ERR_KEY_NOT_FOUND').message, 'key does not exist');
    const other = new Error('x');
    assert.equal(kesError(other), other);
  });

  test('kes: off by default; enabled needs an enclave name; unknown keys refused', () => {
    assert.deepEqual(validateConfig({ version: 'v1' }, '/').kes, { enabled: false, enclave: '' });
    assert.deepEqual(validateConfig({ version: 'v1', kes: { enabled: true, enclave: 'minio' } }, '/').kes, {
      enabled: true,
      enclave: 'minio',
    });
    for (const [kes, msg] of [
      [{ enabled: true }, /^kes\.enclave: is required/],
      [{ enabled: 'yes', enclave: 'm' }, /^kes\.enabled: must be true or false/],
      [{ enabled: true, enclave: 'a/b' }, /^kes\.enclave: must be an enclave name/],
      [{ enabled: true, enclave: 'm', port: 7374 }, /^kes\.port: unknown key/],
    ] as const) {
      assert.throws(
        () => validateConfig({ version: 'v1', kes }, '/'),
        (e: Error) => e instanceof ConfigError && msg.test(e.message),
        JSON.stringify(kes),
      );
    }
  });
});
