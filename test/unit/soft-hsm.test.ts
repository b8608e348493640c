/**
 * Unit tests of src/hsm/soft.ts and the HSM-derived root API key (src/hsm/root-key.ts):
 * key text parsing (errors never reveal the key), golden vectors of the sealed blob and of the
 * derived keys (test/vectors/soft-hsm.json), and the root API key + identity that
 * `minkms identity hsm:aes256:…` prints — which must never change.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { generateSoftHsmKey, parseSoftHsmKey, SoftHsm, SOFT_HSM_NAME } from '../../src/hsm/soft.js';
import { HsmError } from '../../src/hsm/hsm.js';
import { deriveRootApiKey } from '../../src/hsm/root-key.js';
import { parseApiKey } from '../../src/identity/api-key.js';
import { loadVectors, hex, utf8 } from '../helpers/vectors.js';

interface SoftHsmFile {
  keyText: string;
  sealed: { name: string; aadUtf8: string; nonce: string; plaintext: string; blob: string }[];
  derived: { label: string; key: string }[];
  rootApiKey: string;
  rootIdentity: string;
}

const file = loadVectors<SoftHsmFile>('soft-hsm.json');
const KEY_TEXT = file.keyText;
const KEY_B64 = KEY_TEXT.slice('hsm:aes256:'.length);
const KEY_BYTES = Buffer.from(KEY_B64, 'base64');

/** Awaits p and asserts it rejects with an HsmError of the given permanence. */
async function assertHsmError(p: Promise<unknown>, permanent: boolean, label: string): Promise<HsmError> {
  let thrown: unknown;
  let result: unknown;
  let succeeded = false;
  try {
    result = await p;
    succeeded = true;
  } catch (err) {
    thrown = err;
  }
  if (succeeded) assert.fail(`${label}: got success (${Buffer.isBuffer(result) ? result.toString('hex') : String(result)}), want HsmError`);
  if (!(thrown instanceof HsmError)) assert.fail(`${label}: got ${String(thrown)}, want HsmError`);
  assert.equal(thrown.permanent, permanent, `${label}: got permanent=${thrown.permanent}, want ${permanent}`);
  assert.ok(!thrown.message.includes(KEY_B64), `${label}: the error message contains the HSM key`);
  return thrown;
}

describe('parseSoftHsmKey', () => {
  it('accepts hsm:aes256: + padded standard base64 of 32 bytes', () => {
    VALID.forEach((c, i) => {
      let got: Buffer;
      try {
        got = parseSoftHsmKey(c.text);
      } catch (err) {
        assert.fail(`case ${i} (${c.name}): got ${String(err)}, want the key`);
      }
      assert.equal(got.toString('hex'), c.wantHex, `case ${i} (${c.name}): got ${got.toString('hex')}, want ${c.wantHex}`);
    });
  });

  it('rejects everything else with a TypeError that does not contain the key', () => {
    INVALID.forEach((c, i) => {
      let thrown: unknown;
      try {
        const got = parseSoftHsmKey(c.text);
        assert.fail(`case ${i} (${c.name}): got a ${got.length}-byte key, want TypeError`);
      } catch (err) {
        thrown = err;
      }
      assert.ok(thrown instanceof TypeError, `case ${i} (${c.name}): got ${String(thrown)}, want TypeError`);
      const payload = c.text.replace(/^\s*hsm:aes256:/, '').trim();
      if (payload.length >= 8) {
        assert.ok(
          !thrown.message.includes(payload),
          `case ${i} (${c.name}): got message ${JSON.stringify(thrown.message)}, which contains the key text`,
        );
      }
      assert.ok(
        !thrown.message.includes(KEY_B64.slice(0, 12)),
        `case ${i} (${c.name}): got message ${JSON.stringify(thrown.message)}, which contains part of the key`,
      );
      assert.match(
        thrown.message,
        /^invalid HSM key/,
        `case ${i} (${c.name}): got message ${JSON.stringify(thrown.message)}, want it to start with "invalid HSM key"`,
      );
    });
  });

  it('generateSoftHsmKey output parses, and keys differ', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const text = generateSoftHsmKey();
      assert.match(
        text,
        /^hsm:aes256:[A-Za-z0-9+/]{43}=$/,
        `case ${i}: got ${text.slice(0, 11)}…, want hsm:aes256: + 44 base64 characters`,
      );
      assert.equal(parseSoftHsmKey(text).length, 32, `case ${i}: generated key does not parse to 32 bytes`);
      assert.ok(!seen.has(text), `case ${i}: got a key generated before`);
      seen.add(text);
    }
  });
});

describe('SoftHsm', () => {
  it('is named hsm:minio:soft', () => {
    assert.equal(new SoftHsm(KEY_TEXT).name, 'hsm:minio:soft');
    assert.equal(SOFT_HSM_NAME, 'hsm:minio:soft');
  });

  it('unseals the committed golden blobs', async () => {
    const hsm = new SoftHsm(KEY_TEXT);
    for (const [i, v] of file.sealed.entries()) {
      const got = (await hsm.unseal(hex(v.blob), utf8(v.aadUtf8))).toString('hex');
      assert.equal(got, v.plaintext, `case ${i} (${v.name}): got ${got}, want ${v.plaintext}`);
      const blob = hex(v.blob);
      assert.equal(blob[0], 1, `case ${i} (${v.name}): got version ${blob[0]}, want 1`);
      assert.equal(
        blob.subarray(1, 13).toString('hex'),
        v.nonce,
        `case ${i} (${v.name}): got nonce ${blob.subarray(1, 13).toString('hex')}, want ${v.nonce}`,
      );
    }
  });

  it('seals and unseals round trip, with a fresh blob every time', async () => {
    const hsm = new SoftHsm(KEY_TEXT);
    const aad = utf8('minkms rek v1|cluster|hsm:minio:soft');
    const seen = new Set<string>();
    for (const [i, n] of [0, 1, 32, 100].entries()) {
      const pt = Buffer.alloc(n, i + 7);
      const blob = await hsm.seal(pt, aad);
      assert.equal(blob.length, 1 + 12 + n + 16, `case ${i} (${n} bytes): got blob length ${blob.length}, want ${1 + 12 + n + 16}`);
      assert.equal(blob[0], 1, `case ${i} (${n} bytes): got version ${blob[0]}, want 1`);
      const got = await hsm.unseal(blob, aad);
      assert.ok(got.equals(pt), `case ${i} (${n} bytes): got ${got.toString('hex')}, want ${pt.toString('hex')}`);
      assert.ok(!seen.has(blob.toString('hex')), `case ${i}: got a blob seen before`);
      seen.add(blob.toString('hex'));
    }
    const again = await hsm.seal(Buffer.alloc(32, 1), aad);
    assert.ok(!again.equals(await hsm.seal(Buffer.alloc(32, 1), aad)), 'same plaintext sealed twice: got equal blobs, want different');
  });

  it('unsealing with the wrong key, wrong aad or a damaged blob is a permanent HsmError', async () => {
    const v = file.sealed[0]!;
    const blob = hex(v.blob);
    const aad = utf8(v.aadUtf8);
    const right = new SoftHsm(KEY_TEXT);
    const otherKey = Buffer.from(KEY_BYTES);
    otherKey[0]! ^= 1;
    const wrong = new SoftHsm('hsm:aes256:' + otherKey.toString('base64'));
    const flip = (pos: number): Buffer => {
      const b = Buffer.from(blob);
      b[pos]! ^= 0x01;
      return b;
    };
    const cases: [string, SoftHsm, Buffer, Buffer][] = [
      ['other HSM key', wrong, blob, aad],
      ['aad of another cluster', right, blob, utf8(v.aadUtf8.replace('6f1d3c2e', '00000000'))],
      ['aad of another HSM name', right, blob, utf8(v.aadUtf8 + 'x')],
      ['empty aad', right, blob, Buffer.alloc(0)],
      ['flipped nonce byte', right, flip(1), aad],
      ['flipped ciphertext byte', right, flip(20), aad],
      ['flipped tag byte', right, flip(blob.length - 1), aad],
      ['truncated', right, blob.subarray(0, blob.length - 1), aad],
      ['version byte only', right, Buffer.of(1), aad],
      ['unknown version 2', right, Buffer.concat([Buffer.of(2), blob.subarray(1)]), aad],
      ['version 0', right, Buffer.concat([Buffer.of(0), blob.subarray(1)]), aad],
      ['empty blob', right, Buffer.alloc(0), aad],
    ];
    for (const [i, [name, hsm, b, a]] of cases.entries()) {
      await assertHsmError(hsm.unseal(b, a), true, `case ${i} (${name})`);
    }
  });

  it('derives the committed keys (HKDF, label-separated, deterministic)', async () => {
    const a = new SoftHsm(KEY_TEXT);
    const b = new SoftHsm(KEY_TEXT);
    for (const [i, v] of file.derived.entries()) {
      const got = (await a.deriveKey(v.label)).toString('hex');
      assert.equal(got, v.key, `case ${i} (label ${JSON.stringify(v.label)}): got ${got}, want ${v.key}`);
      const again = (await b.deriveKey(v.label)).toString('hex');
      assert.equal(again, v.key, `case ${i} (label ${JSON.stringify(v.label)}, second HSM object): got ${again}, want ${v.key}`);
    }
  });

  it('derives different keys for different labels and different HSM keys', async () => {
    const hsm = new SoftHsm(KEY_TEXT);
    const other = new SoftHsm(generateSoftHsmKey());
    const labels = ['root-api-key', 'root-api-key ', 'Root-api-key', 'node-trust', '', 'a', 'b', 'seal v1'];
    const seen = new Map<string, string>();
    for (const [i, label] of labels.entries()) {
      const k = await hsm.deriveKey(label);
      assert.equal(k.length, 32, `case ${i} (${JSON.stringify(label)}): got ${k.length} bytes, want 32`);
      const h = k.toString('hex');
      assert.ok(!seen.has(h), `case ${i} (${JSON.stringify(label)}): got the same key as label ${JSON.stringify(seen.get(h))}`);
      seen.set(h, label);
      const o = (await other.deriveKey(label)).toString('hex');
      assert.notEqual(o, h, `case ${i} (${JSON.stringify(label)}): another HSM key derived the same bytes`);
      assert.notEqual(h, KEY_BYTES.toString('hex'), `case ${i} (${JSON.stringify(label)}): the derived key is the HSM key itself`);
    }
  });

  it('close() zeroes its keys (nothing opens afterwards)', async () => {
    const hsm = new SoftHsm(KEY_TEXT);
    const v = file.sealed[0]!;
    await hsm.close();
    await assertHsmError(hsm.unseal(hex(v.blob), utf8(v.aadUtf8)), true, 'unseal after close');
    const derived = (await hsm.deriveKey('root-api-key')).toString('hex');
    assert.notEqual(derived, file.derived[0]!.key, 'deriveKey after close: got the real derived key, want the key to be zeroed');
  });
});

describe('deriveRootApiKey (what `minkms identity hsm:aes256:…` prints)', () => {
  it('gives the committed k1: API key and h1: identity', async () => {
    const key = await deriveRootApiKey(new SoftHsm(KEY_TEXT));
    assert.equal(key.text, file.rootApiKey, `got API key ${key.text}, want ${file.rootApiKey}`);
    assert.equal(key.identity, file.rootIdentity, `got identity ${key.identity}, want ${file.rootIdentity}`);
    assert.equal(key.kind, 'k1', `got kind ${key.kind}, want k1`);
    const reparsed = parseApiKey(file.rootApiKey);
    assert.equal(
      reparsed.identity,
      file.rootIdentity,
      `parsing the committed API key: got identity ${reparsed.identity}, want ${file.rootIdentity}`,
    );
    const seed = Buffer.from(file.rootApiKey.slice(3), 'base64url').toString('hex');
    const want = file.derived.find((d) => d.label === 'root-api-key')!.key;
    assert.equal(seed, want, `API key seed: got ${seed}, want deriveKey('root-api-key') = ${want}`);
  });

  it('is the same for the same key text with surrounding whitespace, and differs for another key', async () => {
    const a = await deriveRootApiKey(new SoftHsm(`  ${KEY_TEXT}\n`));
    assert.equal(a.identity, file.rootIdentity, `with whitespace: got ${a.identity}, want ${file.rootIdentity}`);
    const b = await deriveRootApiKey(new SoftHsm(generateSoftHsmKey()));
    assert.notEqual(b.identity, file.rootIdentity, 'another HSM key: got the same root identity');
  });
});

// ---------------------------------------------------------------------------------------------
// cases

const VALID: { name: string; text: string; wantHex: string }[] = [
  { name: 'the example key', text: KEY_TEXT, wantHex: KEY_BYTES.toString('hex') },
  { name: 'all zero', text: 'hsm:aes256:' + Buffer.alloc(32).toString('base64'), wantHex: '00'.repeat(32) },
  { name: 'all 0xff (uses + and /)', text: 'hsm:aes256:' + Buffer.alloc(32, 0xff).toString('base64'), wantHex: 'ff'.repeat(32) },
  { name: 'trailing newline (as read from a file)', text: KEY_TEXT + '\n', wantHex: KEY_BYTES.toString('hex') },
  { name: 'surrounding spaces', text: '  ' + KEY_TEXT + '\t', wantHex: KEY_BYTES.toString('hex') },
];

const b64of = (n: number): string => Buffer.alloc(n, 0xfb).toString('base64');

const INVALID: { name: string; text: string }[] = [
  { name: 'empty', text: '' },
  { name: 'prefix only', text: 'hsm:aes256:' },
  { name: 'no prefix', text: KEY_B64 },
  { name: 'other algorithm', text: 'hsm:aes128:' + KEY_B64 },
  { name: 'uppercase prefix', text: 'HSM:AES256:' + KEY_B64 },
  { name: 'kms prefix', text: 'kms:aes256:' + KEY_B64 },
  { name: 'missing colon', text: 'hsm:aes256' + KEY_B64 },
  { name: 'name field like MinKMS key ids', text: 'hsm:aes256:my-key:' + KEY_B64 },
  { name: 'url-safe alphabet', text: 'hsm:aes256:' + Buffer.alloc(32, 0xff).toString('base64url') + '=' },
  { name: 'url-safe, unpadded', text: 'hsm:aes256:' + Buffer.alloc(32, 0xfb).toString('base64url') },
  { name: 'missing padding', text: 'hsm:aes256:' + KEY_B64.replace(/=+$/, '') },
  { name: 'extra padding', text: 'hsm:aes256:' + KEY_B64 + '=' },
  { name: '31 bytes', text: 'hsm:aes256:' + b64of(31) },
  { name: '33 bytes', text: 'hsm:aes256:' + b64of(33) },
  { name: '16 bytes', text: 'hsm:aes256:' + b64of(16) },
  { name: '64 bytes', text: 'hsm:aes256:' + b64of(64) },
  { name: 'hex instead of base64', text: 'hsm:aes256:' + KEY_BYTES.toString('hex') },
  { name: 'space inside', text: 'hsm:aes256:' + KEY_B64.slice(0, 20) + ' ' + KEY_B64.slice(20) },
  { name: 'newline inside', text: 'hsm:aes256:' + KEY_B64.slice(0, 20) + '\n' + KEY_B64.slice(20) },
  { name: 'non-canonical last character', text: 'hsm:aes256:' + KEY_B64.slice(0, 42) + 'X=' },
  { name: 'garbage', text: 'hsm:aes256:!!!!not-base64-at-all!!!!' },
  { name: 'two keys', text: KEY_TEXT + KEY_TEXT },
  { name: 'API key instead of HSM key', text: 'k1:1bc41SUQ92bsG6EnMztgoCkcv9i2W6hrcK-wr0BbDhk' },
];
