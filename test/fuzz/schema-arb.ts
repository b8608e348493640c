/**
 * fast-check arbitraries derived from the message tables of `src/protocol/messages.ts`: a valid
 * message of any schema (for round trips and as the seed of mutations), and "protobuf-shaped"
 * bytes (random fields with random wire types, lengths and varints, biased to a schema's field
 * numbers), which get past the first tag far more often than random bytes.
 *
 * Generated messages have every field present, in the shape `decodeMessage` returns (defaults
 * included), so `decode(encode(x))` can be compared with `x` itself.
 */
import fc from 'fast-check';
import * as M from '../../src/protocol/messages.js';
import { unicodeChar } from './mutate.js';
import { MessageSchema, type FieldSpec, type FieldType, type MapKeyType } from '../../src/protocol/schema.js';

export type AnySchema = MessageSchema<any>;

/** Every message schema of messages.ts, by export name (the fuzzers must cover each one). */
export const SCHEMAS: ReadonlyArray<readonly [string, AnySchema]> = Object.entries(M)
  .filter((e): e is [string, AnySchema] => e[1] instanceof MessageSchema)
  .sort(([a], [b]) => (a < b ? -1 : 1));

const U32_EDGES = [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, 0x7fffffff, 0x80000000, 0xffffffff];
const SAFE_EDGES = [0, 1, -1, 2 ** 32, -(2 ** 32), 2 ** 31, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER];
// google.protobuf.Timestamp's range, and Duration's (±10,000 years), in ms.
const MIN_DATE = new Date(-62135596800000); // 0001-01-01T00:00:00Z
const MAX_DATE = new Date(253402300799999); // 9999-12-31T23:59:59.999Z
const MAX_DURATION_MS = 315576000000 * 1000;

/**
 * Strings: mostly short, across the codec's fast-path boundaries (42 and 64 UTF-16 units),
 * ASCII and full Unicode (no lone surrogates: the encoder replaces them by U+FFFD on purpose,
 * so they cannot round-trip).
 */
export const stringArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 16 }) },
  { weight: 2, arbitrary: fc.string({ unit: unicodeChar, maxLength: 48 }) },
  { weight: 1, arbitrary: fc.string({ unit: unicodeChar, minLength: 40, maxLength: 70 }) },
  { weight: 1, arbitrary: fc.string({ minLength: 60, maxLength: 300 }) },
);

export const bytesArb: fc.Arbitrary<Buffer> = fc
  .oneof({ weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 400 }) })
  .map((b) => Buffer.from(b));

const uint32Arb = fc.oneof(fc.constantFrom(...U32_EDGES), fc.nat({ max: 0xffffffff }));
const int32Arb = fc.oneof(fc.constantFrom(0, -1, 1, -0x80000000, 0x7fffffff), fc.integer({ min: -0x80000000, max: 0x7fffffff }));
const uint64Arb = fc.oneof(fc.constantFrom(...SAFE_EDGES.filter((v) => v >= 0)), fc.maxSafeNat());
const int64Arb = fc.oneof(fc.constantFrom(...SAFE_EDGES), fc.maxSafeInteger());
const dateArb = fc.oneof(
  fc.constantFrom(new Date(0), MIN_DATE, MAX_DATE, new Date(-1)),
  fc.date({ min: MIN_DATE, max: MAX_DATE, noInvalidDate: true }),
);
const durationArb = fc.oneof(
  fc.constantFrom(0, 1, -1, 999, -1001, MAX_DURATION_MS),
  fc.integer({ min: -MAX_DURATION_MS, max: MAX_DURATION_MS }),
);

const mapKeyString = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', '') },
  { weight: 5, arbitrary: stringArb },
);

function scalarArb(type: string): fc.Arbitrary<unknown> {
  switch (type) {
    case 'string':
      return stringArb;
    case 'bytes':
      return bytesArb;
    case 'bool':
      return fc.boolean();
    case 'uint32':
      return uint32Arb;
    case 'int32':
    case 'sint32':
      return int32Arb;
    case 'uint64':
      return uint64Arb;
    case 'int64':
    case 'sint64':
      return int64Arb;
    case 'timestamp':
      return dateArb;
    case 'duration':
      return durationArb;
    default:
      throw new Error(`no arbitrary for type ${type}`);
  }
}

/** A record from entries; a `__proto__` key becomes an own property, as the decoder stores it. */
export function recordOf(entries: ReadonlyArray<readonly [string, unknown]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  return out;
}

const cache = new Map<AnySchema, fc.Arbitrary<Record<string, unknown>>>();

function valueArb(type: FieldType): fc.Arbitrary<unknown> {
  return typeof type === 'string' ? scalarArb(type) : messageArb(type);
}

function fieldArb(f: FieldSpec): fc.Arbitrary<unknown> {
  if (f.map) {
    const [k, v] = f.map as readonly [MapKeyType, FieldType];
    const entries = fc.array(fc.tuple(k === 'string' ? mapKeyString : scalarArb(k), valueArb(v)), { maxLength: 4 });
    return k === 'string'
      ? entries.map((es) => recordOf(es as [string, unknown][]))
      : entries.map((es) => new Map(es as [number, unknown][]));
  }
  const one = valueArb(f.type!);
  if (f.repeated) return fc.array(one, { maxLength: 5 });
  // Singular timestamps and messages may be absent (undefined), as the decoder reports them.
  if (f.type === 'timestamp' || typeof f.type !== 'string') return fc.option(one, { nil: undefined });
  return one;
}

/** A valid, complete message of `schema` (every field present, defaults included). */
export function messageArb(schema: AnySchema): fc.Arbitrary<Record<string, unknown>> {
  let arb = cache.get(schema);
  if (!arb) {
    const shape: Record<string, fc.Arbitrary<unknown>> = {};
    for (const f of schema.fields) shape[f.name] = fieldArb(f);
    // Plain objects, as the decoder builds them (fast-check's default is a null prototype).
    arb = fc.record(shape, { noNullPrototype: true }) as fc.Arbitrary<Record<string, unknown>>;
    cache.set(schema, arb);
  }
  return arb;
}

const byName = new Map(SCHEMAS);

/** The schema exported as `name` (inputs carry names, so that a counterexample prints short). */
export function schemaNamed(name: string): AnySchema {
  const s = byName.get(name);
  if (!s) throw new Error(`no schema ${name}`);
  return s;
}

/** The name of any schema. */
export const schemaNameArb: fc.Arbitrary<string> = fc.constantFrom(...SCHEMAS.map(([n]) => n));

/** Any schema (by name) and a valid message of it. */
export const anyMessageArb: fc.Arbitrary<{ name: string; message: Record<string, unknown> }> = schemaNameArb.chain((name) =>
  messageArb(schemaNamed(name)).map((message) => ({ name, message })),
);

// ---------------------------------------------------------------------------------------------
// Protobuf-shaped bytes

function varintBytes(v: bigint): number[] {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  while (x > 0x7fn) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return out;
}

/** Varints, including over-long encodings, 10-byte ones, overflowing and unterminated ones. */
const rawVarintArb: fc.Arbitrary<number[]> = fc.oneof(
  { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map(varintBytes) },
  { weight: 3, arbitrary: fc.nat({ max: 300 }).map((n) => varintBytes(BigInt(n))) },
  // Over-long: a value padded with 0x80 continuation bytes.
  {
    weight: 1,
    arbitrary: fc.tuple(fc.nat({ max: 127 }), fc.integer({ min: 1, max: 10 })).map(([v, k]) => [...Array(k).fill(0x80 | v), 0]),
  },
  // Overflow (11 bytes) or unterminated.
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 11 }).map((k) => Array(k).fill(0xff)) },
);

const WIRE_TYPES = [0, 1, 2, 3, 4, 5, 6, 7];

function fieldBytesArb(numbers: readonly number[]): fc.Arbitrary<number[]> {
  const noArb = fc.oneof(
    { weight: 6, arbitrary: numbers.length > 0 ? fc.constantFrom(...numbers) : fc.integer({ min: 1, max: 8 }) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom(2047, 4095, 4096, 19000, 0x1fffffff, 0x20000000) },
  );
  const wireArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 2) }, { weight: 3, arbitrary: fc.constantFrom(...WIRE_TYPES) });
  return fc.tuple(noArb, wireArb, rawVarintArb, fc.uint8Array({ maxLength: 24 }), fc.boolean()).map(([no, wt, varint, payload, honest]) => {
    const tag = varintBytes((BigInt(no) << 3n) | BigInt(wt));
    switch (wt) {
      case 0:
        return [...tag, ...varint];
      case 1:
        return [...tag, ...payload.subarray(0, 8)];
      case 2:
        // Mostly an honest length; else whatever the varint says (too long, huge, over-long).
        return [...tag, ...(honest ? varintBytes(BigInt(payload.length)) : varint), ...payload];
      case 5:
        return [...tag, ...payload.subarray(0, 4)];
      default:
        return [...tag, ...payload.subarray(0, 2)];
    }
  });
}

/** Field numbers used in a schema and the schemas nested in it. */
function numbersOf(schema: AnySchema, seen = new Set<AnySchema>()): number[] {
  if (seen.has(schema)) return [];
  seen.add(schema);
  const out: number[] = [];
  for (const f of schema.fields) {
    out.push(f.no);
    const t = f.map ? f.map[1] : f.type;
    if (t instanceof MessageSchema) out.push(...numbersOf(t, seen));
    if (f.map) out.push(1, 2);
  }
  return out;
}

/** Bytes made of protobuf fields (some well-formed, some not), biased to the schema's field numbers. */
export function protobufShapedArb(schema: AnySchema): fc.Arbitrary<Buffer> {
  const nos = [...new Set(numbersOf(schema))];
  const field = fieldBytesArb(nos);
  // A length-delimited field whose payload is itself made of fields (nested messages, map entries).
  const nested = fc.tuple(fc.constantFrom(...(nos.length ? nos : [1])), fc.array(field, { maxLength: 4 })).map(([no, inner]) => {
    const body = inner.flat();
    return [...varintBytes((BigInt(no) << 3n) | 2n), ...varintBytes(BigInt(body.length)), ...body];
  });
  return fc
    .array(fc.oneof({ weight: 3, arbitrary: field }, { weight: 1, arbitrary: nested }), { maxLength: 8 })
    .map((fields) => Buffer.from(fields.flat()));
}
