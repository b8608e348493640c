/**
 * Unit tests of src/store/barrier.ts: golden vectors of format v1 (test/vectors/barrier.json,
 * made with node:crypto directly and fixed nonces), round trips, and every way a stored value
 * can be tampered with, moved (Vault's barrier move test) or opened under the wrong key — all
 * of which must fail with the one KmsError ERR_DECRYPT.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { Barrier, termOf } from '../../src/store/barrier.js';
import { KmsError } from '../../src/errors.js';
import { loadVectors, hex, utf8 } from '../helpers/vectors.js';

interface BarrierFile {
  rek: string;
  clusterId: string;
  vectors: { name: string; term: number; path: string; plaintextUtf8: string; nonce: string; blob: string }[];
}

/** Asserts fn throws exactly KmsError ERR_DECRYPT / 400 / "invalid ciphertext". */
function assertDecryptError(fn: () => unknown, label: string): void {
  let thrown: unknown;
  let result: unknown;
  let succeeded = false;
  try {
    result = fn();
    succeeded = true;
  } catch (err) {
    thrown = err;
  }
  if (succeeded)
    assert.fail(
      `${label}: got success (${Buffer.isBuffer(result) ? JSON.stringify(result.toString('utf8')) : String(result)}), want ERR_DECRYPT`,
    );
  if (!(thrown instanceof KmsError)) assert.fail(`${label}: got ${String(thrown)}, want KmsError ERR_DECRYPT`);
  assert.equal(thrown.code, 'ERR_DECRYPT', `${label}: got code ${thrown.code}, want ERR_DECRYPT`);
  assert.equal(thrown.message, 'invalid ciphertext', `${label}: got message ${JSON.stringify(thrown.message)}, want "invalid ciphertext"`);
}

const file = loadVectors<BarrierFile>('barrier.json');
const REK = hex(file.rek);
const CLUSTER = file.clusterId;

describe('Barrier format v1 golden vectors', () => {
  it('decrypts every committed blob', () => {
    file.vectors.forEach((v, i) => {
      const barrier = new Barrier(REK, CLUSTER, v.term);
      const got = barrier.decrypt(v.path, hex(v.blob)).toString('utf8');
      assert.equal(got, v.plaintextUtf8, `case ${i} (${v.name}): got ${JSON.stringify(got)}, want ${JSON.stringify(v.plaintextUtf8)}`);
    });
  });

  it('opens a blob only with the key of the term in its header', () => {
    file.vectors.forEach((v, i) => {
      const blob = hex(v.blob);
      assert.equal(termOf(blob), v.term, `case ${i} (${v.name}): termOf got ${termOf(blob)}, want ${v.term}`);
      // A barrier that holds only another term's key (even of the same REK) refuses it.
      const other = new Barrier(REK, CLUSTER, v.term + 1);
      assertDecryptError(() => other.decrypt(v.path, blob), `case ${i} (${v.name}, barrier of term ${v.term + 1} only)`);
      // Given the key of the blob's term as well, it opens.
      other.addTerm(REK, v.term);
      const got = other.decrypt(v.path, blob).toString('utf8');
      assert.equal(
        got,
        v.plaintextUtf8,
        `case ${i} (${v.name}, barrier with terms ${v.term} and ${v.term + 1}): got ${JSON.stringify(got)}`,
      );
    });
  });

  it('has the documented layout: version, term, nonce, ciphertext, tag', () => {
    file.vectors.forEach((v, i) => {
      const blob = hex(v.blob);
      const want = 1 + 4 + 12 + utf8(v.plaintextUtf8).length + 16;
      assert.equal(blob.length, want, `case ${i} (${v.name}): got length ${blob.length}, want ${want}`);
      assert.equal(blob[0], 0x01, `case ${i} (${v.name}): got version byte ${blob[0]}, want 1`);
      assert.equal(blob.readUInt32BE(1), v.term, `case ${i} (${v.name}): got term ${blob.readUInt32BE(1)}, want ${v.term}`);
      assert.equal(
        blob.subarray(5, 17).toString('hex'),
        v.nonce,
        `case ${i} (${v.name}): got nonce ${blob.subarray(5, 17).toString('hex')}, want ${v.nonce}`,
      );
    });
  });

  it('rejects every tampered golden blob', () => {
    file.vectors.forEach((v, i) => {
      const barrier = new Barrier(REK, CLUSTER, v.term);
      const blob = hex(v.blob);
      for (let pos = 0; pos < blob.length; pos++) {
        const bad = Buffer.from(blob);
        bad[pos]! ^= 0x80;
        assertDecryptError(() => barrier.decrypt(v.path, bad), `case ${i} (${v.name}, byte ${pos} flipped)`);
      }
    });
  });
});

describe('Barrier', () => {
  const PATH = 'key/tenant-1/my-key';
  const PLAINTEXT = utf8('{"v":1,"name":"my-key","versions":[]}');

  it('round-trips values of every size', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const sizes = [0, 1, 15, 16, 17, 1024, 65536];
    sizes.forEach((n, i) => {
      const pt = Buffer.alloc(n, i + 1);
      const got = barrier.decrypt(PATH, barrier.encrypt(PATH, pt));
      assert.ok(got.equals(pt), `case ${i} (${n} bytes): got ${got.length} bytes, want the ${n} bytes put in`);
    });
  });

  it('round-trips through a second barrier made from the same REK and cluster id', () => {
    const a = new Barrier(Buffer.from(REK), CLUSTER);
    const b = new Barrier(Buffer.from(REK), CLUSTER);
    const got = b.decrypt(PATH, a.encrypt(PATH, PLAINTEXT));
    assert.ok(got.equals(PLAINTEXT), `got ${JSON.stringify(got.toString())}, want ${JSON.stringify(PLAINTEXT.toString())}`);
  });

  it('gives a different blob every time for the same value', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const blob = barrier.encrypt(PATH, PLAINTEXT).toString('hex');
      assert.ok(!seen.has(blob), `case ${i}: got a blob seen before, want a fresh nonce every time`);
      seen.add(blob);
    }
  });

  it('writes its term in the header, and the header is authenticated', () => {
    const terms = [1, 2, 255, 256, 0x01020304, 0xffffffff];
    terms.forEach((term, i) => {
      const barrier = new Barrier(REK, CLUSTER, term);
      assert.equal(barrier.term, term, `case ${i}: got barrier.term ${barrier.term}, want ${term}`);
      const blob = barrier.encrypt(PATH, PLAINTEXT);
      assert.equal(blob[0], 1, `case ${i} (term ${term}): got version ${blob[0]}, want 1`);
      assert.equal(blob.readUInt32BE(1), term, `case ${i} (term ${term}): got header term ${blob.readUInt32BE(1)}, want ${term}`);
      // Rewriting the term (e.g. to pass an old value off as re-encrypted) breaks the tag.
      const relabeled = Buffer.from(blob);
      relabeled.writeUInt32BE((term + 1) >>> 0, 1);
      assertDecryptError(() => barrier.decrypt(PATH, relabeled), `case ${i} (term ${term} relabeled)`);
    });
  });

  it('defaults to term 1', () => {
    const blob = new Barrier(REK, CLUSTER).encrypt(PATH, PLAINTEXT);
    assert.equal(blob.readUInt32BE(1), 1, `got term ${blob.readUInt32BE(1)}, want 1`);
  });

  it('rejects a flipped bit anywhere in a fresh blob', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const blob = barrier.encrypt(PATH, PLAINTEXT);
    for (let pos = 0; pos < blob.length; pos++) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(blob);
        bad[pos]! ^= bit;
        assertDecryptError(() => barrier.decrypt(PATH, bad), `case ${pos} (byte ${pos} ^ 0x${bit.toString(16)})`);
      }
    }
  });

  it('rejects a value moved or copied to another path (move integrity)', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const blob = barrier.encrypt(PATH, PLAINTEXT);
    const others = [
      'key/tenant-1/my-key2',
      'key/tenant-1/my-ke',
      'key/tenant-2/my-key',
      'key/tenant-1/My-key',
      'policy/tenant-1/my-key',
      'key/tenant-1/my-key/',
      '/key/tenant-1/my-key',
      '',
    ];
    others.forEach((path, i) => {
      assertDecryptError(() => barrier.decrypt(path, blob), `case ${i} (moved to ${JSON.stringify(path)})`);
    });
  });

  it('rejects two records swapped between their paths', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const a = barrier.encrypt('identity/e/h1:a', utf8('{"privilege":3}'));
    const b = barrier.encrypt('identity/e/h1:b', utf8('{"privilege":1}'));
    assertDecryptError(() => barrier.decrypt('identity/e/h1:a', b), 'case 0 (b stored at a)');
    assertDecryptError(() => barrier.decrypt('identity/e/h1:b', a), 'case 1 (a stored at b)');
  });

  it('rejects values made under another REK or another cluster id', () => {
    const blob = new Barrier(REK, CLUSTER).encrypt(PATH, PLAINTEXT);
    const otherRek = Buffer.from(REK);
    otherRek[31]! ^= 0x01;
    const cases: [string, Barrier][] = [
      ['REK with one bit flipped', new Barrier(otherRek, CLUSTER)],
      ['all-zero REK', new Barrier(Buffer.alloc(32), CLUSTER)],
      ['other cluster id', new Barrier(REK, '00000000-0000-4000-8000-000000000000')],
      ['cluster id with different case', new Barrier(REK, CLUSTER.toUpperCase())],
      ['empty cluster id', new Barrier(REK, '')],
    ];
    cases.forEach(([name, barrier], i) => {
      assertDecryptError(() => barrier.decrypt(PATH, blob), `case ${i} (${name})`);
    });
  });

  it('rejects unknown versions and malformed blobs', () => {
    const barrier = new Barrier(REK, CLUSTER);
    const blob = barrier.encrypt(PATH, PLAINTEXT);
    const withVersion = (v: number): Buffer => {
      const b = Buffer.from(blob);
      b[0] = v;
      return b;
    };
    const cases: [string, Buffer][] = [
      ['version 0', withVersion(0x00)],
      ['version 2', withVersion(0x02)],
      ['version 0xff', withVersion(0xff)],
      ['empty', Buffer.alloc(0)],
      ['version byte only', Buffer.of(0x01)],
      ['header only', blob.subarray(0, 5)],
      ['header and nonce only', blob.subarray(0, 17)],
      ['one byte short of header+nonce+tag', blob.subarray(0, 5 + 12 + 15)],
      ['tag cut off', blob.subarray(0, blob.length - 16)],
      ['one byte truncated', blob.subarray(0, blob.length - 1)],
      ['one byte appended', Buffer.concat([blob, Buffer.of(0)])],
      ['header dropped', blob.subarray(5)],
      ['header doubled', Buffer.concat([blob.subarray(0, 5), blob])],
    ];
    cases.forEach(([name, bad], i) => {
      assertDecryptError(() => barrier.decrypt(PATH, bad), `case ${i} (${name})`);
    });
  });

  it('during a rotation: reads both terms, writes the newest, and forgets old terms on request', () => {
    const oldRek = Buffer.from(REK);
    const newRek = Buffer.alloc(32, 0x5c);
    const barrier = new Barrier(oldRek, CLUSTER, 1);
    const oldBlob = barrier.encrypt(PATH, utf8('old'));
    barrier.addTerm(newRek, 2);
    assert.equal(barrier.term, 2, `after addTerm(2): got term ${barrier.term}, want 2`);
    const newBlob = barrier.encrypt(PATH, utf8('new'));
    assert.equal(termOf(newBlob), 2, `new blob: got term ${termOf(newBlob)}, want 2`);
    assert.equal(barrier.decrypt(PATH, oldBlob).toString(), 'old', 'old term no longer opens during the rotation');
    assert.equal(barrier.decrypt(PATH, newBlob).toString(), 'new', 'new term does not open');
    // A term-2 blob is bound to the new REK: the old REK under the label "2" does not open it.
    const impostor = new Barrier(oldRek, CLUSTER, 2);
    assertDecryptError(() => impostor.decrypt(PATH, newBlob), 'term-2 blob with the old REK');
    // Adding an older term does not move writes backwards.
    barrier.addTerm(oldRek, 1);
    assert.equal(barrier.term, 2, `after re-adding term 1: got term ${barrier.term}, want 2`);
    barrier.dropOldTerms();
    assertDecryptError(() => barrier.decrypt(PATH, oldBlob), 'old term after dropOldTerms()');
    assert.equal(barrier.decrypt(PATH, newBlob).toString(), 'new', 'current term after dropOldTerms() does not open');
  });

  it('termOf reads the term of barrier blobs and is 0 for anything else', () => {
    const cases: [string, Buffer, number][] = [
      ['term 1', Buffer.from('0100000001' + '00'.repeat(28), 'hex'), 1],
      ['term 0x01020304', Buffer.from('0101020304' + '00'.repeat(28), 'hex'), 0x01020304],
      ['header only', Buffer.from('0100000009', 'hex'), 9],
      ['version 2', Buffer.from('0200000001' + '00'.repeat(28), 'hex'), 0],
      ['4 bytes', Buffer.from('01000000', 'hex'), 0],
      ['empty', Buffer.alloc(0), 0],
      ['JSON (a plaintext root-key record)', utf8('{"v":1}'), 0],
      ['view at an offset', Buffer.from('ff0100000007', 'hex').subarray(1), 7],
    ];
    cases.forEach(([name, blob, want], i) => {
      assert.equal(termOf(blob), want, `case ${i} (${name}): got ${termOf(blob)}, want ${want}`);
    });
  });

  it('rejects a REK that is not 32 bytes', () => {
    [0, 16, 31, 33, 64].forEach((n, i) => {
      assert.throws(() => new Barrier(Buffer.alloc(n), CLUSTER), RangeError, `case ${i} (${n} bytes): got no RangeError`);
    });
  });

  it('does not keep a reference to the REK buffer, and destroy() disables it', () => {
    const rek = Buffer.from(REK);
    const barrier = new Barrier(rek, CLUSTER);
    rek.fill(0); // the caller zeroes its copy
    const blob = barrier.encrypt(PATH, PLAINTEXT);
    const golden = file.vectors[0]!;
    const got = barrier.decrypt(golden.path, hex(golden.blob)).toString('utf8');
    assert.equal(got, golden.plaintextUtf8, "after zeroing the caller's REK: got a different plaintext for the golden blob");
    barrier.destroy();
    assertDecryptError(() => barrier.decrypt(PATH, blob), 'after destroy()');
  });
});
