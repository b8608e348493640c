/**
 * Unit tests of src/crypto: vectors from test/vectors (see its README for sources), negative
 * rows for every decrypt path, and a differential check of HChaCha20 against a plain reference.
 */

import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  aesGcmOpen,
  aesGcmSeal,
  CIPHERTEXT_OVERHEAD,
  decryptWithKey,
  encryptWithKey,
  hchacha20,
  hkdfSha256,
  hmacSha256,
  isKeyType,
  KEY_TYPES,
  MAX_POOLED_REQUEST,
  POOL_SIZE,
  randomBytesPooled,
  timingSafeEqualBytes,
  type KeyType,
} from '../../src/crypto/index.js';
import { KmsError } from '../../src/errors.js';
import { loadVectors, hex, utf8 } from '../helpers/vectors.js';

// ---------------------------------------------------------------------------------------------
// helpers

/** Asserts that fn throws exactly KmsError ERR_DECRYPT / 400 / "invalid ciphertext". */
function assertDecryptError(fn: () => unknown, label: string): void {
  let thrown: unknown;
  let succeeded = false;
  let result: unknown;
  try {
    result = fn();
    succeeded = true;
  } catch (err) {
    thrown = err;
  }
  if (succeeded) {
    assert.fail(`${label}: got success (${Buffer.isBuffer(result) ? result.toString('hex') : String(result)}), want ERR_DECRYPT`);
  }
  if (!(thrown instanceof KmsError)) assert.fail(`${label}: got ${String(thrown)}, want KmsError`);
  assert.equal(thrown.code, 'ERR_DECRYPT', `${label}: got code ${thrown.code}, want ERR_DECRYPT`);
  assert.equal(thrown.status, 400, `${label}: got status ${thrown.status}, want 400`);
  assert.equal(thrown.message, 'invalid ciphertext', `${label}: got message ${thrown.message}, want "invalid ciphertext"`);
}

// ---------------------------------------------------------------------------------------------
// vector file shapes

interface CiphertextFile {
  masterKey: string;
  iv: string;
  nonce: string;
  plaintextUtf8: string;
  associatedDataUtf8: string;
  vectors: { name: string; type: KeyType; ciphertext: string }[];
  negative: {
    name: string;
    flipByte?: number;
    associatedDataUtf8?: string;
    flipMasterKeyByte?: number;
    otherType?: boolean;
    truncateTo?: number;
    appendHex?: string;
    dropFront?: number;
    replaceHex?: string;
  }[];
}
interface HChaChaFile {
  vectors: { name: string; key: string; input: string; output: string }[];
}
interface HkdfFile {
  vectors: { name: string; ikm: string; salt: string; info: string; length: number; okm: string }[];
}
interface HmacFile {
  vectors: { name: string; key: string; data: string; mac: string }[];
}

// ---------------------------------------------------------------------------------------------
// HChaCha20

/** Plain reference HChaCha20 (draft-irtf-cfrg-xchacha §2.2), test-only, for the differential check. */
function referenceHChaCha20(key: Buffer, input: Buffer): Buffer {
  const s = new Uint32Array(16);
  s.set([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
  for (let i = 0; i < 8; i++) s[4 + i] = key.readUInt32LE(4 * i);
  for (let i = 0; i < 4; i++) s[12 + i] = input.readUInt32LE(4 * i);
  const rotl = (v: number, c: number): number => ((v << c) | (v >>> (32 - c))) >>> 0;
  const qr = (a: number, b: number, c: number, d: number): void => {
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 16);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 12);
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 8);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 7);
  };
  for (let r = 0; r < 10; r++) {
    qr(0, 4, 8, 12);
    qr(1, 5, 9, 13);
    qr(2, 6, 10, 14);
    qr(3, 7, 11, 15);
    qr(0, 5, 10, 15);
    qr(1, 6, 11, 12);
    qr(2, 7, 8, 13);
    qr(3, 4, 9, 14);
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE(s[i]!, 4 * i);
    out.writeUInt32LE(s[12 + i]!, 16 + 4 * i);
  }
  return out;
}

describe('hchacha20', () => {
  it('matches the test vectors', () => {
    const { vectors } = loadVectors<HChaChaFile>('hchacha20.json');
    vectors.forEach((v, i) => {
      const got = hchacha20(hex(v.key), hex(v.input)).toString('hex');
      assert.equal(got, v.output, `case ${i} (${v.name}): got ${got}, want ${v.output}`);
    });
  });

  it('matches a plain reference implementation on random and edge inputs', () => {
    const inputs: [string, Buffer, Buffer][] = [
      ['all zero', Buffer.alloc(32), Buffer.alloc(16)],
      ['all ones', Buffer.alloc(32, 0xff), Buffer.alloc(16, 0xff)],
      ['counter word 0xffffffff', randomBytes(32), Buffer.concat([Buffer.alloc(4, 0xff), randomBytes(12)])],
    ];
    for (let i = 0; i < 50; i++) inputs.push([`random ${i}`, randomBytes(32), randomBytes(16)]);
    inputs.forEach(([name, key, input], i) => {
      const got = hchacha20(key, input).toString('hex');
      const want = referenceHChaCha20(key, input).toString('hex');
      assert.equal(got, want, `case ${i} (${name}): got ${got}, want ${want}`);
    });
  });

  it('accepts Uint8Array views at an offset', () => {
    const backing = new Uint8Array(64);
    backing.set(hex('000000090000004a0000000031415927'), 40);
    const key = new Uint8Array(32).map((_, i) => i);
    const got = hchacha20(key, backing.subarray(40, 56)).toString('hex');
    assert.equal(got, '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  });

  it('rejects wrong lengths', () => {
    assert.throws(() => hchacha20(Buffer.alloc(31), Buffer.alloc(16)), RangeError);
    assert.throws(() => hchacha20(Buffer.alloc(32), Buffer.alloc(12)), RangeError);
  });
});

// ---------------------------------------------------------------------------------------------
// ciphertext format

describe('ciphertext (KES/MinKMS format)', () => {
  const file = loadVectors<CiphertextFile>('ciphertext.json');
  const masterKey = hex(file.masterKey);
  const plaintext = utf8(file.plaintextUtf8);
  const ad = utf8(file.associatedDataUtf8);

  it('encrypts the vectors byte-exactly', () => {
    file.vectors.forEach((v, i) => {
      const got = encryptWithKey(v.type, masterKey, plaintext, ad, hex(file.iv), hex(file.nonce)).toString('hex');
      assert.equal(got, v.ciphertext, `case ${i} (${v.name}): got ${got}, want ${v.ciphertext}`);
    });
  });

  it('decrypts the vectors', () => {
    file.vectors.forEach((v, i) => {
      const got = decryptWithKey(v.type, masterKey, hex(v.ciphertext), ad).toString('utf8');
      assert.equal(got, file.plaintextUtf8, `case ${i} (${v.name}): got ${got}, want ${file.plaintextUtf8}`);
    });
  });

  it('rejects every negative row with ERR_DECRYPT', () => {
    for (const v of file.vectors) {
      file.negative.forEach((n, i) => {
        let ct = hex(v.ciphertext);
        const key = Buffer.from(masterKey);
        let type: KeyType = v.type;
        let aad = ad;
        if (n.flipByte !== undefined) ct[n.flipByte]! ^= 0x01;
        if (n.associatedDataUtf8 !== undefined) aad = utf8(n.associatedDataUtf8);
        if (n.flipMasterKeyByte !== undefined) key[n.flipMasterKeyByte]! ^= 0x01;
        if (n.otherType) type = v.type === 'AES256' ? 'ChaCha20' : 'AES256';
        if (n.truncateTo !== undefined) ct = ct.subarray(0, n.truncateTo);
        if (n.appendHex !== undefined) ct = Buffer.concat([ct, hex(n.appendHex)]);
        if (n.dropFront !== undefined) ct = ct.subarray(n.dropFront);
        if (n.replaceHex !== undefined) ct = hex(n.replaceHex);
        assertDecryptError(() => decryptWithKey(type, key, ct, aad), `case ${i} (${v.name}: ${n.name})`);
      });
    }
  });

  it('round-trips random data of various lengths for both key types', () => {
    const lengths = [0, 1, 15, 16, 17, 32, 64, 1000, 5000, 70000];
    for (const type of KEY_TYPES) {
      const key = randomBytes(32);
      lengths.forEach((len, i) => {
        const pt = randomBytes(len);
        const aad = randomBytes(i);
        const ct = encryptWithKey(type, key, pt, aad);
        assert.equal(ct.length, len + CIPHERTEXT_OVERHEAD, `case ${i} (${type}, ${len} bytes): got length ${ct.length}, want ${len + 44}`);
        const got = decryptWithKey(type, key, ct, aad);
        assert.ok(got.equals(pt), `case ${i} (${type}, ${len} bytes): round trip differs`);
      });
    }
  });

  it('uses fresh iv and nonce for every message', () => {
    const key = randomBytes(32);
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const ct = encryptWithKey('AES256', key, Buffer.alloc(0), Buffer.alloc(0));
      const tail = ct.subarray(ct.length - 28).toString('hex');
      assert.ok(!seen.has(tail), `case ${i}: iv||nonce repeated`);
      seen.add(tail);
    }
  });

  it('returns a plaintext that does not alias the ciphertext', () => {
    const key = randomBytes(32);
    const ct = encryptWithKey('ChaCha20', key, utf8('hello'), Buffer.alloc(0));
    const pt = decryptWithKey('ChaCha20', key, ct, Buffer.alloc(0));
    pt.fill(0);
    assert.equal(decryptWithKey('ChaCha20', key, ct, Buffer.alloc(0)).toString(), 'hello');
  });

  it('rejects caller bugs with TypeError/RangeError, not ERR_DECRYPT', () => {
    const cases: [string, () => unknown, typeof TypeError | typeof RangeError][] = [
      ['encrypt: 31-byte master key', () => encryptWithKey('AES256', Buffer.alloc(31), Buffer.alloc(1), Buffer.alloc(0)), RangeError],
      ['decrypt: 33-byte master key', () => decryptWithKey('ChaCha20', Buffer.alloc(33), Buffer.alloc(60), Buffer.alloc(0)), RangeError],
      ['encrypt: unknown type', () => encryptWithKey('AES128' as KeyType, Buffer.alloc(32), Buffer.alloc(1), Buffer.alloc(0)), TypeError],
      [
        'decrypt: unknown type',
        () => decryptWithKey('XCHACHA20-POLY1305' as KeyType, Buffer.alloc(32), Buffer.alloc(60), Buffer.alloc(0)),
        TypeError,
      ],
      [
        'encrypt: 15-byte iv',
        () => encryptWithKey('AES256', Buffer.alloc(32), Buffer.alloc(1), Buffer.alloc(0), Buffer.alloc(15)),
        RangeError,
      ],
      [
        'encrypt: 16-byte nonce',
        () => encryptWithKey('AES256', Buffer.alloc(32), Buffer.alloc(1), Buffer.alloc(0), Buffer.alloc(16), Buffer.alloc(16)),
        RangeError,
      ],
    ];
    cases.forEach(([name, fn, want], i) => {
      assert.throws(fn, want, `case ${i} (${name}): want ${want.name}`);
    });
  });

  it('recognises the wire key types', () => {
    const cases: [unknown, boolean][] = [
      ['AES256', true],
      ['ChaCha20', true],
      ['aes256', false],
      ['AES256-GCM_SHA256', false],
      ['', false],
      [undefined, false],
    ];
    cases.forEach(([input, want], i) => {
      assert.equal(isKeyType(input), want, `case ${i} (${String(input)}): got ${!want}, want ${want}`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// HMAC, HKDF, constant-time compare

describe('hmacSha256', () => {
  it('matches RFC 4231', () => {
    loadVectors<HmacFile>('hmac-sha256.json').vectors.forEach((v, i) => {
      const got = hmacSha256(hex(v.key), hex(v.data)).toString('hex');
      assert.equal(got, v.mac, `case ${i} (${v.name}): got ${got}, want ${v.mac}`);
    });
  });
});

describe('hkdfSha256', () => {
  it('matches RFC 5869', () => {
    loadVectors<HkdfFile>('hkdf-sha256.json').vectors.forEach((v, i) => {
      const got = hkdfSha256(hex(v.ikm), hex(v.salt), hex(v.info), v.length);
      assert.ok(Buffer.isBuffer(got), `case ${i} (${v.name}): got ${typeof got}, want Buffer`);
      assert.equal(got.toString('hex'), v.okm, `case ${i} (${v.name}): got ${got.toString('hex')}, want ${v.okm}`);
    });
  });

  it('accepts string salt and info (UTF-8) and defaults to 32 bytes', () => {
    const ikm = randomBytes(32);
    const a = hkdfSha256(ikm, 'salt', 'minkms test');
    const b = hkdfSha256(ikm, utf8('salt'), utf8('minkms test'), 32);
    assert.equal(a.length, 32);
    assert.ok(a.equals(b), 'string and byte inputs differ');
    assert.ok(!a.equals(hkdfSha256(ikm, 'salt', 'minkms other')), 'different info gave the same key');
  });

  it('rejects out-of-range lengths', () => {
    [0, -1, 8161, 1.5].forEach((len, i) => {
      assert.throws(() => hkdfSha256(Buffer.alloc(32), '', '', len), RangeError, `case ${i} (length ${len}): want RangeError`);
    });
  });
});

describe('timingSafeEqualBytes', () => {
  const cases: [string, Uint8Array, Uint8Array, boolean][] = [
    ['equal', hex('00010203'), hex('00010203'), true],
    ['both empty', Buffer.alloc(0), new Uint8Array(0), true],
    ['differ in last byte', hex('00010203'), hex('00010204'), false],
    ['differ in first byte', hex('10010203'), hex('00010203'), false],
    ['shorter', hex('000102'), hex('00010203'), false],
    ['longer', hex('0001020304'), hex('00010203'), false],
    ['Uint8Array vs Buffer', new Uint8Array([1, 2, 3]), hex('010203'), true],
  ];
  it('compares correctly', () => {
    cases.forEach(([name, a, b, want], i) => {
      const got = timingSafeEqualBytes(a, b);
      assert.equal(got, want, `case ${i} (${name}): got ${got}, want ${want}`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// pooled randomness

describe('randomBytesPooled', () => {
  it('returns the requested lengths', () => {
    [0, 1, 12, 16, 28, 32, 4096, 4097, 100000].forEach((n, i) => {
      const got = randomBytesPooled(n).length;
      assert.equal(got, n, `case ${i} (${n} bytes): got ${got}, want ${n}`);
    });
  });

  it('never hands out the same bytes twice, across pool refills', () => {
    // Enough 32-byte requests to exhaust several pools; every chunk must be distinct.
    const seen = new Set<string>();
    const count = Math.ceil((3 * POOL_SIZE) / 32) + 7;
    for (let i = 0; i < count; i++) {
      const b = randomBytesPooled(32).toString('hex');
      assert.ok(!seen.has(b), `case ${i}: repeated 32-byte chunk`);
      seen.add(b);
    }
  });

  it('does not refill a pool whose slices are still referenced', () => {
    const first = randomBytesPooled(MAX_POOLED_REQUEST);
    const snapshot = Buffer.from(first);
    const backing = first.buffer;
    let sawNewPool = false;
    for (let i = 0; i < (2 * POOL_SIZE) / MAX_POOLED_REQUEST + 2; i++) {
      if (randomBytesPooled(MAX_POOLED_REQUEST).buffer !== backing) sawNewPool = true;
    }
    assert.ok(sawNewPool, 'pool was never replaced after being exhausted');
    assert.ok(first.equals(snapshot), 'an earlier slice changed: the pool was refilled in place');
  });

  it('serves requests above 4 KiB outside the pool', () => {
    const big = randomBytesPooled(MAX_POOLED_REQUEST + 1);
    const small = randomBytesPooled(16);
    assert.notEqual(big.buffer, small.buffer, 'large request shares the pool');
  });

  it('rejects invalid lengths', () => {
    [-1, 1.5, Number.NaN, Infinity].forEach((n, i) => {
      assert.throws(() => randomBytesPooled(n), RangeError, `case ${i} (${n}): want RangeError`);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// generic AEAD for our own formats

describe('aesGcmSeal / aesGcmOpen', () => {
  it('round-trips', () => {
    const key = randomBytes(32);
    [0, 1, 32, 4096, 70000].forEach((len, i) => {
      const pt = randomBytes(len);
      const aad = utf8(`entry/${i}`);
      const blob = aesGcmSeal(key, pt, aad);
      assert.equal(blob.length, len + 28, `case ${i} (${len} bytes): got length ${blob.length}, want ${len + 28}`);
      assert.ok(aesGcmOpen(key, blob, aad).equals(pt), `case ${i} (${len} bytes): round trip differs`);
    });
  });

  it('uses a random nonce per seal', () => {
    const key = randomBytes(32);
    const a = aesGcmSeal(key, utf8('same'), utf8('x'));
    const b = aesGcmSeal(key, utf8('same'), utf8('x'));
    assert.ok(!a.subarray(0, 12).equals(b.subarray(0, 12)), 'nonce repeated');
  });

  it('rejects tampering, wrong key, wrong aad and short blobs with ERR_DECRYPT', () => {
    const key = randomBytes(32);
    const aad = utf8('barrier/keys/my-key');
    const blob = aesGcmSeal(key, utf8('secret entry'), aad);
    const flip = (i: number): Buffer => {
      const b = Buffer.from(blob);
      b[i]! ^= 0x80;
      return b;
    };
    const cases: [string, Buffer, Buffer, Buffer][] = [
      ['flipped nonce byte', key, flip(0), aad],
      ['flipped ciphertext byte', key, flip(12), aad],
      ['flipped tag byte', key, flip(blob.length - 1), aad],
      ['wrong aad (moved entry)', key, blob, utf8('barrier/keys/other-key')],
      ['empty aad', key, blob, Buffer.alloc(0)],
      ['wrong key', randomBytes(32), blob, aad],
      ['truncated', key, blob.subarray(0, blob.length - 1), aad],
      ['27 bytes', key, blob.subarray(0, 27), aad],
      ['28 bytes', key, blob.subarray(0, 28), aad],
      ['empty', key, Buffer.alloc(0), aad],
    ];
    cases.forEach(([name, k, b, a], i) => assertDecryptError(() => aesGcmOpen(k, b, a), `case ${i} (${name})`));
  });

  it('rejects keys of the wrong size with RangeError', () => {
    assert.throws(() => aesGcmSeal(Buffer.alloc(16), Buffer.alloc(1), Buffer.alloc(0)), RangeError);
    assert.throws(() => aesGcmOpen(Buffer.alloc(16), Buffer.alloc(40), Buffer.alloc(0)), RangeError);
  });
});
