/**
 * Regression tests for the bugs the fuzzers found, one deterministic case each (the fuzzers
 * find them again, but only with luck and time; these fail at once if a bug comes back).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage } from '../../src/protocol/schema.js';
import { KeyStatusResponseSchema, ServerStatusResponseSchema } from '../../src/protocol/messages.js';
import { ConfigError, validateConfig } from '../../src/config/config.js';

/** Bytes of a length-delimited field holding varint fields 1 (seconds) and/or 2 (nanos). */
function secondsNanosField(no: number, seconds?: number, nanos?: number): Buffer {
  const body: number[] = [];
  const varint = (v: number) => {
    while (v > 0x7f) {
      body.push((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    body.push(v);
  };
  if (seconds !== undefined) {
    body.push(0x08);
    varint(seconds);
  }
  if (nanos !== undefined) {
    body.push(0x10);
    varint(nanos);
  }
  return Buffer.from([(no << 3) | 2, body.length, ...body]);
}

describe('protobuf: a repeated Timestamp/Duration field merges like any embedded message (fuzz: protobuf.roundtrip.binary)', () => {
  // Found as: decode(encode(a) ++ encode(b)) replaced a's Duration by b's instead of merging
  // them field by field, as protobuf (and Go's decoder) does for a repeated singular message.
  test('Timestamp: the second occurrence sets seconds, the nanos of the first stay', () => {
    const bytes = Buffer.concat([secondsNanosField(4, 1700000000, 500_000_000), secondsNanosField(4, 1800000000)]);
    const m = decodeMessage(KeyStatusResponseSchema, bytes);
    assert.equal(m.createdAt?.getTime(), 1800000000_500);
  });

  test('Duration: the second occurrence sets nanos, the seconds of the first stay', () => {
    const bytes = Buffer.concat([secondsNanosField(4, 5), secondsNanosField(4, undefined, 250_000_000)]);
    assert.equal(decodeMessage(ServerStatusResponseSchema, bytes).upTime, 5250);
  });

  test('a merge that gives a Duration seconds and nanos of opposite signs is refused', () => {
    const negNanos = 2 ** 32 - 1; // int32 -1, as a 32-bit varint (the decoder reads the low 32 bits)
    const bytes = Buffer.concat([secondsNanosField(4, 5), secondsNanosField(4, undefined, negNanos)]);
    assert.throws(() => decodeMessage(ServerStatusResponseSchema, bytes), { code: 'ERR_MALFORMED_MESSAGE' });
  });
});

describe('config: limits are positive safe integers (fuzz: config.validate.*)', () => {
  // Found as: `max_frames: 1e300` and `max_body: 99999999999999999999999` were accepted (as 1e300
  // and 1e23), and `max_body: "0"` as 0, a limit that refuses every request body.
  const limits = (l: Record<string, unknown>) => validateConfig({ version: 'v1', limits: l }, '/etc/minkms').limits;

  for (const [what, l] of [
    ['max_frames: 1e300', { max_frames: 1e300 }],
    ['max_frames: 2^53', { max_frames: 2 ** 53 }],
    ['max_body: 1e23', { max_body: 1e23 }],
    ["max_body: '99999999999999999999999'", { max_body: '99999999999999999999999' }],
    ["max_body: '0'", { max_body: '0' }],
    ["max_body: '0MiB'", { max_body: '0MiB' }],
    ["max_body: '8388608GiB'", { max_body: '8388608GiB' }],
  ] as const) {
    test(`${what} is refused`, () => {
      assert.throws(
        () => limits(l),
        (err: unknown) => err instanceof ConfigError && /^limits\.max_(body|frames): /.test(err.message),
      );
    });
  }

  test('the largest and smallest sizes still work', () => {
    assert.equal(limits({ max_body: '1' }).maxBody, 1);
    assert.equal(limits({ max_body: '4096GiB' }).maxBody, 4096 * 2 ** 30);
    assert.equal(limits({ max_frames: 2 ** 53 - 1 }).maxFrames, 2 ** 53 - 1);
  });
});

describe('config: an invalid etcd endpoint is shown without its credentials (fuzz: config.load.text)', () => {
  // Found as: `endpoints: [http://root:PASSWORD@etcd:2379/x]` was refused with the whole URL,
  // password included, in the message (issue 11, finding 8).
  const refuse = (endpoint: string) => {
    let message = '';
    assert.throws(
      () => validateConfig({ version: 'v1', store: { backend: 'etcd', etcd: { endpoints: [endpoint] } } }, '/etc/minkms'),
      (err: unknown) => err instanceof ConfigError && ((message = err.message), true),
    );
    return message;
  };

  for (const endpoint of [
    'http://root:pw-SECRET@etcd:2379/x',
    'u:pw-SECRET@etcd:2379',
    'ftp://u:pw/SECRET@etcd',
    'https://a@b:pw-SECRET@etcd/x',
  ]) {
    test(endpoint, () => {
      const message = refuse(endpoint);
      assert.match(message, /^store\.etcd\.endpoints\[0\]: must not contain credentials .*, got '.*\*\*\*@/);
      assert.doesNotMatch(message, /SECRET/);
    });
  }

  test('an endpoint without credentials is still shown whole', () => {
    assert.match(refuse('etcd0:2379'), /got 'etcd0:2379'/);
  });
});

describe('config: durations are finite and fit a Node timer (fuzz: config.validate.*)', () => {
  // Found as: `heartbeat: .inf`, `heartbeat: 1e300` and `body_timeout: 9999999h` were accepted;
  // Node runs a timer of more than 2^31-1 ms (or Infinity) after 1 ms instead. Bare numbers now
  // need a unit, so those are refused for that first; a duration with a unit is bounded.
  for (const [what, doc, reason] of [
    ['heartbeat: Infinity', { heartbeat: Infinity }, /has no unit/],
    ['heartbeat: 1e300', { heartbeat: 1e300 }, /has no unit/],
    ["heartbeat: 'Infinitys'", { heartbeat: 'Infinitys' }, /invalid duration/],
    ["heartbeat: '1e300s'", { heartbeat: '1e300s' }, /invalid duration/],
    ["heartbeat: '2147483.648s'", { heartbeat: '2147483.648s' }, /is too long/],
    ["limits.body_timeout: '9999999h'", { limits: { body_timeout: '9999999h' } }, /is too long/],
    ["limits.body_timeout: '597h'", { limits: { body_timeout: '597h' } }, /is too long/],
  ] as const) {
    test(`${what} is refused`, () => {
      assert.throws(
        () => validateConfig({ version: 'v1', ...doc }, '/etc/minkms'),
        (err: unknown) => err instanceof ConfigError && /^(heartbeat|limits\.body_timeout): /.test(err.message) && reason.test(err.message),
      );
    });
  }

  test('the longest duration still works', () => {
    assert.equal(validateConfig({ version: 'v1', heartbeat: '596h31m23s647ms' }, '/etc/minkms').heartbeat, 2 ** 31 - 1);
    assert.equal(validateConfig({ version: 'v1', limits: { body_timeout: '24h' } }, '/etc/minkms').limits.bodyTimeout, 86_400_000);
  });
});

describe('config: a size of any type is refused with a ConfigError (fuzz: config.validate.near-valid)', () => {
  // Found as: `max_body: [Object with no prototype]` made the error message's String(v) throw a
  // TypeError instead of the ConfigError.
  for (const [what, v] of [
    ['an object without a prototype', Object.create(null) as unknown],
    ['a list holding one', [Object.create(null)]],
    ['a boolean', true],
  ] as const) {
    test(what, () => {
      assert.throws(
        () => validateConfig({ version: 'v1', limits: { max_body: v } }, '/etc/minkms'),
        (err: unknown) => err instanceof ConfigError && /^limits\.max_body: invalid size/.test(err.message),
      );
    });
  }
});
