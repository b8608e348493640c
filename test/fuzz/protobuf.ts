/**
 * Fuzz targets of the table-driven protobuf codec (`src/protocol/schema.ts`, `pb.ts`), for every
 * message schema of `src/protocol/messages.ts` (each target checks at the end that its inputs
 * reached every schema).
 *
 * Properties:
 * - `decodeMessage` on any bytes — random, protobuf-shaped (random fields, wire types, varints of
 *   every length, lengths that lie), or valid encodings with bit flips, truncations, insertions —
 *   returns a message or throws `ERR_MALFORMED_MESSAGE`, nothing else; and a message it returns
 *   is stable: encoding it and decoding again gives the same message and the same bytes;
 * - round trip: `decode(encode(x))` equals `x` for every valid message, `encode` is canonical
 *   (`encode(decode(encode(x)))` is byte-identical), unknown fields are skipped, and the
 *   concatenation of two encodings decodes to their protobuf merge (last scalar wins, repeated
 *   fields concatenate, maps merge by key, messages merge field by field).
 */
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { decodeMessage, encodeMessage, MessageSchema, type FieldSpec } from '../../src/protocol/schema.js';
import { attempt, check, expectKmsError, show, target, type FuzzTarget, type Outcomes, type TargetStats } from '../helpers/fuzz.js';
import { mutate, mutationsArb } from './mutate.js';
import {
  SCHEMAS,
  anyMessageArb,
  messageArb,
  protobufShapedArb,
  recordOf,
  schemaNameArb,
  schemaNamed,
  type AnySchema,
} from './schema-arb.js';

type Msg = Record<string, unknown>;

/** Records which schemas a target reached, and fails the run if one was never reached. */
function coverage(): { reached: (name: string) => void; finish: (stats: TargetStats) => string | undefined } {
  const seen = new Set<string>();
  return {
    reached: (name) => seen.add(name),
    finish: (stats) => {
      // Only meaningful when the run was long enough to draw every schema a few times (and not
      // cut short by a failure, whose shrinking reruns one schema).
      if (stats.inputs < SCHEMAS.length * 10 || stats.crashes > 0) return undefined;
      const missed = SCHEMAS.map(([n]) => n).filter((n) => !seen.has(n));
      seen.clear();
      return missed.length > 0 ? `no input reached ${missed.join(', ')}` : undefined;
    },
  };
}

/** Decodes any bytes with the codec's properties; returns the message or undefined. */
function checkDecode(schema: AnySchema, bytes: Uint8Array, outcomes: Outcomes): Msg | undefined {
  const r = attempt(() => decodeMessage(schema, bytes) as Msg);
  if (!r.ok) {
    outcomes.add(expectKmsError(r.error, ['ERR_MALFORMED_MESSAGE']));
    return undefined;
  }
  outcomes.add('ok');
  const msg = r.value;
  // Stable: what was accepted re-encodes (without throwing) to bytes that decode to it again.
  const e1 = encodeMessage(schema, msg);
  const again = decodeMessage(schema, e1) as Msg;
  check(sameMessage(again, msg), () => `${schema.name}: decode(encode(m)) = ${show(again)}, m = ${show(msg)}`);
  check(encodeMessage(schema, again).equals(e1), () => `${schema.name}: encoding of an accepted message is not stable`);
  return msg;
}

/**
 * Deep equality, except that Durations (ms as a JS number) may differ in the last bits: a
 * Duration of seconds and nanos is not always exactly representable in binary floating point.
 */
function sameMessage(a: unknown, b: unknown): boolean {
  if (isDeepStrictEqual(a, b)) return true;
  return isDeepStrictEqual(roundDurations(a), roundDurations(b));
}

function roundDurations(v: unknown): unknown {
  if (typeof v === 'number' && !Number.isInteger(v)) return Math.round(v * 1000) / 1000; // µs
  if (Array.isArray(v)) return v.map(roundDurations);
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, roundDurations(x)]));
  if (v !== null && typeof v === 'object' && !(v instanceof Date) && !Buffer.isBuffer(v)) {
    return recordOf(Object.entries(v).map(([k, x]) => [k, roundDurations(x)]));
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Protobuf merge (the meaning of two concatenated encodings), written from the protobuf spec

function isDefaultScalar(type: string, v: unknown): boolean {
  switch (type) {
    case 'string':
      return v === '';
    case 'bytes':
      return (v as Buffer).length === 0;
    case 'bool':
      return v === false;
    default:
      return v === 0;
  }
}

/** Seconds and nanos of a Timestamp (Date) or Duration (ms), as they go on the wire. */
function secondsNanos(type: 'timestamp' | 'duration', v: Date | number): [number, number] {
  if (type === 'timestamp') {
    const ms = (v as Date).getTime();
    const s = Math.floor(ms / 1000);
    return [s, (ms - s * 1000) * 1e6];
  }
  const ms = v as number;
  const s = Math.trunc(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}

/** Set by {@link merge} when the merged message is not valid (the decoder must refuse it). */
let mergeInvalid = false;

function mergeValue(type: FieldSpec['type'], a: unknown, b: unknown): unknown {
  if (type instanceof MessageSchema) return a === undefined ? b : b === undefined ? a : merge(type, a as Msg, b as Msg);
  if (type === 'timestamp' || type === 'duration') {
    if (b === undefined || (type === 'duration' && b === 0)) return a; // absent in b's encoding
    if (a === undefined || (type === 'duration' && a === 0)) return b;
    // Both present: field-wise, b's non-zero seconds/nanos replace a's.
    const [as, an] = secondsNanos(type, a as Date | number);
    const [bs, bn] = secondsNanos(type, b as Date | number);
    const s = bs !== 0 ? bs : as;
    const n = bn !== 0 ? bn : an;
    // A merged Duration may get seconds and nanos of opposite signs: no valid Duration.
    if (type === 'duration' && ((s > 0 && n < 0) || (s < 0 && n > 0))) mergeInvalid = true;
    return type === 'timestamp' ? new Date(s * 1000 + Math.floor(n / 1e6)) : s * 1000 + n / 1e6;
  }
  return isDefaultScalar(type as string, b) ? a : b;
}

/** The message that `encode(a) ++ encode(b)` means. */
function merge(schema: AnySchema, a: Msg, b: Msg): Msg {
  const out: Msg = {};
  for (const f of schema.fields) {
    const x = a[f.name];
    const y = b[f.name];
    if (f.map) {
      out[f.name] =
        f.map[0] === 'string'
          ? recordOf([...Object.entries(x as Msg), ...Object.entries(y as Msg)])
          : new Map([...(x as Map<number, unknown>), ...(y as Map<number, unknown>)]);
    } else if (f.repeated) {
      out[f.name] = [...(x as unknown[]), ...(y as unknown[])];
    } else {
      out[f.name] = mergeValue(f.type, x, y);
    }
  }
  return out;
}

/** Encoded unknown fields: numbers the schema does not use, every valid wire type. */
function unknownFields(schema: AnySchema, seed: number): Buffer {
  const used = new Set(schema.fields.map((f) => f.no));
  let no = 100 + (seed % 900);
  while (used.has(no)) no++;
  const key = (wt: number) => {
    const out: number[] = [];
    let v = no * 8 + wt;
    while (v > 0x7f) {
      out.push((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    out.push(v);
    return out;
  };
  return Buffer.from([
    ...key(0),
    0xff,
    0xff,
    0x03, // varint
    ...key(1),
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8, // fixed64
    ...key(2),
    3,
    0x61,
    0x62,
    0x63, // length-delimited
    ...key(5),
    9,
    9,
    9,
    9, // fixed32
  ]);
}

// ---------------------------------------------------------------------------------------------

const decodeBytesCoverage = coverage();
const decodeMutatedCoverage = coverage();
const roundtripCoverage = coverage();

export const protobufTargets: FuzzTarget[] = [
  target({
    name: 'protobuf.decode.bytes',
    arbitrary: schemaNameArb.chain((name) =>
      fc.record({
        name: fc.constant(name),
        bytes: fc.oneof(
          { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }) as fc.Arbitrary<Uint8Array> },
          { weight: 3, arbitrary: protobufShapedArb(schemaNamed(name)) },
        ),
      }),
    ),
    run: ({ name, bytes }, outcomes) => {
      decodeBytesCoverage.reached(name);
      checkDecode(schemaNamed(name), bytes, outcomes);
    },
    finish: decodeBytesCoverage.finish,
    quickRuns: 2000,
    weight: 16,
  }),

  target({
    name: 'protobuf.decode.mutated',
    arbitrary: fc.record({ m: anyMessageArb, mutations: mutationsArb }),
    run: ({ m, mutations }, outcomes) => {
      decodeMutatedCoverage.reached(m.name);
      const schema = schemaNamed(m.name);
      checkDecode(schema, mutate(encodeMessage(schema, m.message), mutations), outcomes);
    },
    finish: decodeMutatedCoverage.finish,
    quickRuns: 1500,
    weight: 14,
  }),

  target({
    name: 'protobuf.roundtrip.binary',
    arbitrary: fc
      .record({
        a: anyMessageArb,
        b: fc.option(fc.nat(), { nil: undefined }),
        unknownSeed: fc.option(fc.nat(), { nil: undefined }),
      })
      .chain(({ a, b, unknownSeed }) =>
        // A second message of the same schema, to check that concatenation means merge.
        (b === undefined ? fc.constant(undefined) : messageArb(schemaNamed(a.name))).map((second) => ({ a, second, unknownSeed })),
      ),
    run: ({ a: { name, message }, second, unknownSeed }, outcomes) => {
      roundtripCoverage.reached(name);
      const schema = schemaNamed(name);
      const e = encodeMessage(schema, message);
      const d = decodeMessage(schema, e) as Msg;
      check(isDeepStrictEqual(d, message), () => `${name}: decode(encode(x)) = ${show(d)}, x = ${show(message)}`);
      check(encodeMessage(schema, d).equals(e), () => `${name}: encoding is not canonical`);
      if (unknownSeed !== undefined) {
        const withUnknown = Buffer.concat([unknownFields(schema, unknownSeed), e, unknownFields(schema, unknownSeed + 1)]);
        const du = decodeMessage(schema, withUnknown);
        check(isDeepStrictEqual(du, message), () => `${name}: unknown fields changed the message: ${show(du)}`);
        outcomes.add('unknown-fields');
      }
      if (second !== undefined) {
        const cat = attempt(() => decodeMessage(schema, Buffer.concat([e, encodeMessage(schema, second)])) as Msg);
        mergeInvalid = false;
        const want = merge(schema, message, second);
        if (mergeInvalid) {
          check(!cat.ok, () => `${name}: the merge of a and b is not a valid message, but decode accepted ${show(cat)}`);
          expectKmsError(cat.error, ['ERR_MALFORMED_MESSAGE']);
          outcomes.add('merge-invalid');
        } else {
          check(cat.ok, () => `${name}: decode(encode(a) ++ encode(b)) threw ${show(!cat.ok && cat.error)}`);
          check(sameMessage(cat.value, want), () => `${name}: decode(encode(a) ++ encode(b)) = ${show(cat)}, merge = ${show(want)}`);
          outcomes.add('merge');
        }
      }
      outcomes.add('ok');
    },
    finish: roundtripCoverage.finish,
    quickRuns: 1200,
    weight: 10,
  }),
];
