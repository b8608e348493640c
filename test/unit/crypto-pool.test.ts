/**
 * The data-path speed-ups: PreparedKey (crypto/ciphertext.ts) gives the same ciphertexts as
 * encryptWithKey/decryptWithKey, and the crypto pool (crypto/pool.ts) gives the same answers —
 * and the same errors, at the same frame — as the frame-by-frame path of `dispatch` for
 * batches of KEY:GENERATE / KEY:ENCRYPT / KEY:DECRYPT.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PreparedKey, decryptWithKey, encryptWithKey, openWithKey, sealWithKey, type KeyType } from '../../src/crypto/ciphertext.js';
import { CryptoPool } from '../../src/crypto/pool.js';
import { Kms } from '../../src/kms/kms.js';
import { MemoryStore } from '../../src/store/memory.js';
import { Barrier } from '../../src/store/barrier.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { dispatch, type ClusterOps, type DispatchTrace } from '../../src/server/dispatch.js';
import { DEFAULT_LIMITS } from '../../src/config/config.js';
import { isSdkCommandName, CommandCode as C } from '../../src/protocol/commands.js';
import { encodeFrames, parseFrames } from '../../src/protocol/frames.js';
import { decodeMessage, encodeMessage, type MessageSchema } from '../../src/protocol/schema.js';
import * as M from '../../src/protocol/messages.js';
import { KmsError } from '../../src/errors.js';

describe('PreparedKey', () => {
  for (const type of ['AES256', 'ChaCha20'] as KeyType[]) {
    it(`${type}: seals and opens like encryptWithKey/decryptWithKey`, () => {
      const key = randomBytes(32);
      const pk = new PreparedKey(type, key);
      for (const n of [0, 1, 32, 1000]) {
        const pt = randomBytes(n);
        const ad = randomBytes(n % 200);
        assert.deepEqual(decryptWithKey(type, key, sealWithKey(pk, pt, ad), ad), pt);
        assert.deepEqual(openWithKey(pk, encryptWithKey(type, key, pt, ad), ad), pt);
        assert.throws(
          () => openWithKey(pk, encryptWithKey(type, key, pt, ad), Buffer.from('other')),
          (e: unknown) => e instanceof KmsError && e.code === 'ERR_DECRYPT',
        );
      }
    });
  }

  it('derives the same per-message key as the test vectors path (fixed iv and nonce)', () => {
    const key = randomBytes(32);
    const iv = randomBytes(16);
    const nonce = randomBytes(12);
    const pt = randomBytes(32);
    const ct = encryptWithKey('AES256', key, pt, Buffer.alloc(0), iv, nonce);
    assert.deepEqual(ct.subarray(-28), Buffer.concat([iv, nonce]));
    assert.deepEqual(openWithKey(new PreparedKey('AES256', key), ct, Buffer.alloc(0)), pt);
  });
});

describe('crypto pool', () => {
  const pool = new CryptoPool(2, 1);
  after(() => pool.close());

  it('generates, encrypts and decrypts on its threads', async () => {
    const a = { type: 'AES256' as const, key: randomBytes(32) };
    const b = { type: 'ChaCha20' as const, key: randomBytes(32) };
    const ad = Buffer.from('{"bucket":"b/o"}');
    const gen = await pool.generate([
      { key: a, length: 32, ad },
      { key: b, length: 64, ad },
      { key: a, length: 1, ad: Buffer.alloc(0) },
    ]);
    assert.deepEqual(
      gen.values.map((v) => [v.plaintext.length, v.ciphertext.length]),
      [
        [32, 76],
        [64, 108],
        [1, 45],
      ],
    );
    assert.deepEqual(decryptWithKey('AES256', a.key, gen.values[0]!.ciphertext, ad), gen.values[0]!.plaintext);
    assert.deepEqual(decryptWithKey('ChaCha20', b.key, gen.values[1]!.ciphertext, ad), gen.values[1]!.plaintext);
    assert.deepEqual(decryptWithKey('AES256', a.key, gen.values[2]!.ciphertext, Buffer.alloc(0)), gen.values[2]!.plaintext);
    const plaintexts = gen.values.map((v) => Buffer.from(v.plaintext));
    gen.wipe();
    assert.ok(
      gen.values[0]!.plaintext.every((x) => x === 0),
      'wipe zeroes the answer',
    );

    const enc = await pool.encrypt([{ key: b, data: plaintexts[0]!, ad }]);
    assert.deepEqual(decryptWithKey('ChaCha20', b.key, enc.values[0]!, ad), plaintexts[0]);
    const dec = await pool.decrypt([
      { key: b, data: enc.values[0]!, ad },
      { key: a, data: encryptWithKey('AES256', a.key, plaintexts[2]!, ad), ad },
    ]);
    assert.deepEqual(dec.values, [plaintexts[0], plaintexts[2]]);
  });

  it('reports the first item that does not authenticate', async () => {
    const k = { type: 'AES256' as const, key: randomBytes(32) };
    const ad = Buffer.from('ad');
    const good = encryptWithKey('AES256', k.key, randomBytes(32), ad);
    const bad = Buffer.from(good);
    bad[0]! ^= 1;
    await assert.rejects(
      pool.decrypt([
        { key: k, data: good, ad },
        { key: k, data: bad, ad },
        { key: k, data: bad, ad },
      ]),
      (e: unknown) => e instanceof KmsError && e.code === 'ERR_DECRYPT' && (e as { failedItem?: number }).failedItem === 1,
    );
    await assert.rejects(
      pool.decrypt([{ key: k, data: Buffer.alloc(10), ad }]),
      (e: unknown) => e instanceof KmsError && e.code === 'ERR_DECRYPT',
    );
  });
});

describe('dispatch: batches on the pool answer like the frame-by-frame path', () => {
  const root = generateApiKey('k1').identity;
  const user = generateApiKey('k1').identity;
  const cluster = {} as ClusterOps;
  const pool = new CryptoPool(1, 2);
  let kms: Kms;
  const ad = Buffer.from('{"x-minio-internal-server-side-encryption-context":"bucket/object"}');

  before(async () => {
    kms = await Kms.load(new MemoryStore([]), new Barrier(randomBytes(32), 'test'), { rootIdentity: root });
    await kms.createEnclave(root, 'e');
    await kms.createKey(root, 'e', 'k', '', false);
    await kms.createKey(root, 'e', 'c', 'ChaCha20', false);
    await kms.createKey(root, 'e', 'secret', '', false);
    await kms.createPolicy(
      root,
      'e',
      'p',
      { 'KEY:GENERATE': ['k', 'c'], 'KEY:DECRYPT': ['k', 'c'], 'KEY:ENCRYPT': ['k'] },
      {},
      isSdkCommandName,
    );
    await kms.createIdentity(kms.principal(root, 'e'), 'e', { identity: user, privilege: 'User', serviceAccount: false, tags: {} });
    await kms.assignPolicy(kms.principal(root, 'e'), 'e', user, 'p');
  });
  after(() => pool.close());

  const frames = <T>(code: number, schema: MessageSchema<T>, reqs: object[]) =>
    encodeFrames(
      code,
      reqs.map((r) => encodeMessage(schema, r as never)),
    );
  const newTrace = (): DispatchTrace => ({ command: undefined, frames: 0, objects: [], done: 0, ends: [] });
  async function both(
    body: Buffer,
  ): Promise<{ pooled: Buffer | KmsError; plain: Buffer | KmsError; tp: DispatchTrace; tq: DispatchTrace }> {
    const tp = newTrace();
    const tq = newTrace();
    const run = (p: CryptoPool | undefined, t: DispatchTrace) =>
      Promise.resolve()
        .then(() =>
          dispatch({ kms, cluster, identity: user, enclave: 'e', body: body, maxFrames: DEFAULT_LIMITS.maxFrames, trace: t, pool: p }),
        )
        .catch((e: unknown) => e as KmsError);
    return { pooled: await run(pool, tp), plain: await run(undefined, tq), tp, tq };
  }

  it('KEY:GENERATE and KEY:DECRYPT', async () => {
    const gen = frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [
      { name: 'k', associatedData: ad },
      { name: 'c', associatedData: ad, length: 64 },
      { name: 'k', version: 1, associatedData: ad, length: 16 },
    ]);
    const { pooled, tp } = await both(gen);
    assert.ok(Buffer.isBuffer(pooled));
    assert.deepEqual(tp.objects, ['k', 'c', 'k']);
    assert.equal(tp.done, 3);
    const deks = parseFrames(pooled, 10).map((f) => {
      assert.equal(f.code, C.KeyGenerate);
      return decodeMessage(M.GenerateKeyResponseSchema, f.payload);
    });
    assert.deepEqual(
      deks.map((d) => [d.version, d.plaintext.length]),
      [
        [1, 32],
        [1, 64],
        [1, 16],
      ],
    );
    const dec = frames(
      C.KeyDecrypt,
      M.DecryptRequestSchema,
      deks.map((d, i) => ({ name: i === 1 ? 'c' : 'k', version: 1, ciphertext: d.ciphertext, associatedData: ad })),
    );
    const r = await both(dec);
    assert.ok(Buffer.isBuffer(r.pooled) && Buffer.isBuffer(r.plain));
    assert.deepEqual(r.pooled, r.plain);
    assert.deepEqual(
      parseFrames(r.pooled, 10).map((f) => decodeMessage(M.DecryptResponseSchema, f.payload).plaintext),
      deks.map((d) => d.plaintext),
    );
  });

  it('KEY:ENCRYPT', async () => {
    const pts = [randomBytes(5), randomBytes(100)];
    const { pooled } = await both(
      frames(
        C.KeyEncrypt,
        M.EncryptRequestSchema,
        pts.map((plaintext) => ({ name: 'k', plaintext, associatedData: ad })),
      ),
    );
    assert.ok(Buffer.isBuffer(pooled));
    const cts = parseFrames(pooled, 10).map((f) => decodeMessage(M.EncryptResponseSchema, f.payload));
    assert.deepEqual(
      cts.map((c) => kms.decrypt('e', 'k', c.version, c.ciphertext, ad)),
      pts,
    );
  });

  it('fails at the same frame with the same error', async () => {
    const [one] = parseFrames(
      await dispatch({
        kms,
        cluster,
        identity: user,
        enclave: 'e',
        body: frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [{ name: 'k', associatedData: ad }]),
        maxFrames: DEFAULT_LIMITS.maxFrames,
      }),
      1,
    );
    const ct = decodeMessage(M.GenerateKeyResponseSchema, one!.payload).ciphertext;
    const tampered = Buffer.from(ct);
    tampered[3]! ^= 0x80;
    const cases: Array<[string, Buffer, string, number]> = [
      [
        'bad ciphertext',
        frames(C.KeyDecrypt, M.DecryptRequestSchema, [
          { name: 'k', version: 1, ciphertext: ct, associatedData: ad },
          { name: 'k', version: 1, ciphertext: tampered, associatedData: ad },
          { name: 'k', version: 1, ciphertext: ct, associatedData: ad },
        ]),
        'ERR_DECRYPT',
        1,
      ],
      [
        'short ciphertext',
        frames(C.KeyDecrypt, M.DecryptRequestSchema, [
          { name: 'k', version: 1, ciphertext: ct, associatedData: ad },
          { name: 'k', version: 1, ciphertext: Buffer.alloc(8), associatedData: ad },
        ]),
        'ERR_DECRYPT',
        1,
      ],
      [
        'wrong associated data',
        frames(C.KeyDecrypt, M.DecryptRequestSchema, [
          { name: 'k', version: 1, ciphertext: ct, associatedData: Buffer.from('x') },
          { name: 'k', version: 1, ciphertext: ct, associatedData: ad },
        ]),
        'ERR_DECRYPT',
        0,
      ],
      [
        'unknown key',
        frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [
          { name: 'k', associatedData: ad },
          { name: 'c', version: 7, associatedData: ad },
        ]),
        'ERR_KEY_NOT_FOUND',
        1,
      ],
      [
        'not allowed',
        frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [
          { name: 'k', associatedData: ad },
          { name: 'secret', associatedData: ad },
        ]),
        'ERR_NOT_ALLOWED',
        1,
      ],
      [
        'DEK too long',
        frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [
          { name: 'k', associatedData: ad },
          { name: 'k', associatedData: ad, length: 4096 },
        ]),
        'ERR_INVALID_DEK_LENGTH',
        1,
      ],
    ];
    for (const [label, body, code, at] of cases) {
      const r = await both(body);
      for (const [which, res, t] of [
        ['pool', r.pooled, r.tp],
        ['frame by frame', r.plain, r.tq],
      ] as const) {
        assert.ok(res instanceof KmsError, `${label} (${which}): ${String(res)}`);
        assert.equal(res.code, code, `${label} (${which})`);
        assert.equal(t.done, at, `${label} (${which}): failing frame`);
      }
    }
  });

  it('KEY:DECRYPT of version 0 (every version is tried) answers the same', async () => {
    await kms.createKey(root, 'e', 'k', '', true); // version 2
    const [one] = parseFrames(
      await dispatch({
        kms,
        cluster,
        identity: user,
        enclave: 'e',
        body: frames(C.KeyGenerate, M.GenerateKeyRequestSchema, [{ name: 'k', version: 1, associatedData: ad }]),
        maxFrames: DEFAULT_LIMITS.maxFrames,
      }),
      1,
    );
    const dek = decodeMessage(M.GenerateKeyResponseSchema, one!.payload);
    const r = await both(
      frames(
        C.KeyDecrypt,
        M.DecryptRequestSchema,
        [0, 0, 1].map((version) => ({ name: 'k', version, ciphertext: dek.ciphertext, associatedData: ad })),
      ),
    );
    assert.ok(Buffer.isBuffer(r.pooled));
    assert.deepEqual(r.pooled, r.plain);
  });
});
