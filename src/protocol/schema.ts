/**
 * A table-driven proto3 codec. A message is declared once, as data — field name → field number
 * and type — and {@link encodeMessage}/{@link decodeMessage} interpret that table. The message's
 * TypeScript type is derived from the same table ({@link MessageType}), so the two cannot drift.
 * No code generation, no dependencies.
 *
 * ```ts
 * export const KeyStatusRequestSchema = defineMessage('KeyStatusRequest', {
 *   name: { no: 1, type: 'string' },
 *   version: { no: 2, type: 'uint32' },
 * });
 * export type KeyStatusRequest = MessageType<typeof KeyStatusRequestSchema>; // { name: string; version: number }
 * ```
 *
 * Wire rules (https://protobuf.dev/programming-guides/encoding/, proto3 semantics as Go's
 * `google.golang.org/protobuf` implements them):
 * - Encoding omits default values (empty string/bytes, 0, false, empty list/map, `undefined`)
 *   and writes fields in field-number order, so the output is byte-identical to Go's
 *   `proto.Marshal` for messages without maps. Repeated numeric/bool fields are packed.
 *   Map entries always carry key and value (as Go writes them); map keys are written sorted
 *   (Go's order is random, so any order is "identical" to it; sorting makes ours stable).
 * - Decoding accepts any field order, present or absent fields, last-one-wins for scalars,
 *   merging for repeated occurrences of a singular message field, packed and unpacked repeated
 *   scalars, and skips unknown fields. Every malformation — including a known field with the
 *   wrong wire type, invalid UTF-8 in a string, an out-of-range 64-bit integer, a group — throws
 *   `KmsError('ERR_MALFORMED_MESSAGE')`. (Go would keep a known field with a wrong wire type as
 *   an unknown field; we refuse it.)
 *
 * JS representation (decode output; encode accepts the same shapes, all fields optional), as
 * {@link SCALARS} reads them:
 * | proto type | JS |
 * |---|---|
 * | string | `string` |
 * | bytes | `Buffer` on decode (a view that **aliases the input**), any `Uint8Array` on encode |
 * | bool | `boolean` |
 * | uint32, int32, sint32 | `number` |
 * | uint64, int64, sint64 | `number`; values beyond ±(2^53-1) are rejected on decode |
 * | google.protobuf.Timestamp | `Date` (millisecond precision; sub-ms nanos are truncated); absent → `undefined` |
 * | google.protobuf.Duration | `number` of milliseconds (may be fractional); absent → `0` |
 * | nested message | object; absent → `undefined` (singular) |
 * | repeated T | `T[]` |
 * | map<string, V> | `Record<string, V>` (plain object; a `__proto__` key is stored as an own property) |
 * | map<integer, V> | `Map<number, V>` |
 *
 * There is no general protobuf-JSON mapping (names, 64-bit strings, base64, RFC 3339, durations):
 * the product writes JSON for three fixed outputs only, which `json.ts` builds from explicit
 * field lists.
 */

import { EMPTY_BUFFER, Reader, WIRE_LEN, WIRE_VARINT, Writer, malformed } from './pb.js';

// ---------------------------------------------------------------------------------------------
// The types: one table

/**
 * How one proto type is encoded, decoded and defaulted. Members are methods, so that the codec of
 * any one type is a `Codec<unknown>` (method parameters are checked bivariantly).
 */
interface Codec<V> {
  /** Wire type of one value. */
  readonly wire: number;
  /** The value of an absent field (`newMessage`, and the JS type of a singular field). */
  readonly zero: V | undefined;
  /** True if a present value is the default, which encoding omits. */
  isDefault(v: V): boolean;
  /** The value of an element written without content (a map entry without value). */
  empty(): V;
  /** Writes one value, without its key. */
  write(w: Writer, v: V): void;
  /** Reads one value (after its key). `prev` is the field's current value (messages, Timestamp and Duration merge into it). */
  read(r: Reader, prev: V | undefined): V;
}

const isZero = (v: number) => v === 0 || v !== v; // 0, -0, NaN
const never = () => false;

/**
 * Every scalar and well-known type. The JS type of a field is what its `read` returns (and, for
 * a singular field, its `zero`): {@link MessageType} derives message types from this table.
 */
const SCALARS = {
  string: {
    wire: WIRE_LEN,
    zero: '',
    isDefault: (v: string) => v === '',
    empty: () => '',
    write: (w: Writer, v: string) => w.string(v ?? ''),
    read: (r: Reader): string => r.string(),
  },
  bytes: {
    wire: WIRE_LEN,
    zero: EMPTY_BUFFER,
    isDefault: (v: Uint8Array) => v.length === 0,
    empty: () => EMPTY_BUFFER,
    write: (w: Writer, v: Uint8Array) => w.bytes(v ?? EMPTY_BUFFER),
    read: (r: Reader): Buffer => r.bytes(),
  },
  bool: {
    wire: WIRE_VARINT,
    zero: false,
    isDefault: (v: boolean) => v === false,
    empty: () => false,
    write: (w: Writer, v: boolean) => w.bool(v === true),
    read: (r: Reader): boolean => r.bool(),
  },
  uint32: varint(
    (w, v) => w.uint32(v >>> 0),
    (r) => r.uint32(),
  ),
  int32: varint(
    (w, v) => w.int32(v | 0),
    (r) => r.int32(),
  ),
  sint32: varint(
    (w, v) => w.sint32(v | 0),
    (r) => r.sint32(),
  ),
  uint64: varint(
    (w, v) => w.int64(checkInt64(v)),
    (r) => r.uint64(),
  ),
  int64: varint(
    (w, v) => w.int64(checkInt64(v)),
    (r) => r.int64(),
  ),
  sint64: varint(
    (w, v) => w.sint64(checkInt64(v)),
    (r) => r.sint64(),
  ),
  timestamp: {
    wire: WIRE_LEN,
    zero: undefined,
    isDefault: never, // presence: only undefined is absent
    empty: () => new Date(0),
    write: (w: Writer, v: Date | undefined) => {
      const start = w.fork();
      if (v !== undefined && v !== null) writeTimestampFields(w, v);
      w.ldelim(start);
    },
    read: readTimestamp,
  },
  duration: {
    wire: WIRE_LEN,
    zero: 0,
    isDefault: isZero,
    empty: () => 0,
    write: (w: Writer, v: number) => {
      const start = w.fork();
      writeDurationFields(w, v ?? 0);
      w.ldelim(start);
    },
    read: (r: Reader, prev: number | undefined) => readDuration(r, prev ?? 0),
  },
} satisfies Record<string, Codec<unknown>>;

function varint(write: (w: Writer, v: number) => void, read: (r: Reader) => number) {
  return { wire: WIRE_VARINT, zero: 0, isDefault: isZero, empty: () => 0, write, read };
}

/** Scalar and well-known field types. */
export type ScalarType = keyof typeof SCALARS;

/** Types a map key may have. String keys give a `Record`, integer keys a `Map<number, V>`. */
export type MapKeyType = 'string' | 'uint32' | 'int32' | 'sint32' | 'uint64' | 'int64' | 'sint64';

/** The type of a field (of a map's values): a scalar or well-known type, or a message schema. */
export type FieldType = ScalarType | MessageSchema<unknown>;

/** One row of a message table: a singular or repeated field, or a map. */
export type Field =
  | {
      /** Field number, 1 … 2^29-1. */
      readonly no: number;
      readonly type: FieldType;
      readonly repeated?: boolean;
      readonly map?: never;
    }
  | {
      readonly no: number;
      /** `[keyType, valueType]` for a `map<K, V>` field. */
      readonly map: readonly [MapKeyType, FieldType];
      readonly type?: never;
      readonly repeated?: never;
    };

/** A message table: JS property name (camelCase) → field. */
export type Fields = { readonly [name: string]: Field };

/** A field with its name, as {@link MessageSchema.fields} lists them. */
export type FieldSpec = {
  readonly name: string;
  readonly no: number;
  readonly type?: FieldType;
  readonly repeated?: boolean;
  readonly map?: readonly [MapKeyType, FieldType];
};

// ---------------------------------------------------------------------------------------------
// Types derived from a table

/** The JS type of a message schema: `MessageType<typeof KeyStatusRequestSchema>`. */
export type MessageType<S> = S extends MessageSchema<infer T> ? T : never;

/** The decoded JS shape of a message table (every field present). */
export type MessageOf<F extends Fields> = [keyof F] extends [never] ? Record<string, never> : FieldsOf<F>;
// Homomorphic, so each property keeps the doc comment of its table row.
type FieldsOf<F extends Fields> = { -readonly [K in keyof F]: FieldValue<F[K]> };

type FieldValue<F> = F extends { readonly map: readonly [infer K, infer V] }
  ? K extends 'string'
    ? Record<string, ElementOf<V>>
    : Map<number, ElementOf<V>>
  : F extends { readonly type: infer T; readonly repeated: true }
    ? ElementOf<T>[]
    : F extends { readonly type: infer T }
      ? ElementOf<T> | (T extends ScalarType ? (typeof SCALARS)[T]['zero'] : undefined)
      : never;

type ElementOf<T> = T extends ScalarType ? ReturnType<(typeof SCALARS)[T]['read']> : T extends MessageSchema<infer M> ? M : never;

/** Deep-optional form of a message type, accepted by the encoders. */
export type MessageInit<T> = { [K in keyof T]?: InitValue<T[K]> };
type InitValue<V> = V extends Uint8Array
  ? Uint8Array
  : V extends Date
    ? Date
    : V extends ReadonlyArray<infer E>
      ? ReadonlyArray<InitValue<E>>
      : V extends ReadonlyMap<infer K, infer E>
        ? ReadonlyMap<K, InitValue<E>>
        : V extends object
          ? MessageInit<V>
          : V;

// ---------------------------------------------------------------------------------------------
// Schemas

const K_SINGLE = 0;
const K_REPEATED = 1;
const K_MAP = 2;

interface CompiledField {
  readonly no: number;
  readonly name: string;
  readonly kind: number;
  /** Value codec (element type for repeated, value type for maps). */
  readonly codec: Codec<unknown>;
  /** Wire type of one value. */
  readonly wire: number;
  /** Precomputed key of one value (of one map entry for maps): (no << 3) | wire. */
  readonly key: number;
  /** Map key codec (maps only). */
  readonly keyCodec: Codec<unknown> | undefined;
  /** True if the map has string keys (→ Record), false for integer keys (→ Map). */
  readonly stringKeys: boolean;
}

/**
 * A message description. Create with {@link defineMessage}. `T` is the decoded JS shape; it is
 * carried for typing only.
 */
export class MessageSchema<T> {
  /** Phantom: the JS type of this message (never set at runtime). */
  declare readonly _type: T;
  readonly name: string;
  /** The rows of the table, as declared. */
  readonly fields: readonly FieldSpec[];
  /** @internal How a field of this message type is written and read. */
  readonly codec: Codec<unknown>;
  /** Compiled fields in field-number order. */
  private compiledFields: CompiledField[] | undefined;
  /** Compiled fields indexed by field number (sparse). */
  private byNumber: (CompiledField | undefined)[] | undefined;

  constructor(name: string, fields: Fields) {
    this.name = name;
    this.fields = Object.entries(fields).map(([n, f]) => ({ name: n, ...f }));
    const nos = new Set<number>();
    for (const f of this.fields) {
      if (!Number.isInteger(f.no) || f.no < 1 || f.no > 0x1fffffff || (f.no >= 19000 && f.no <= 19999)) {
        throw new Error(`${name}.${f.name}: invalid field number ${f.no}`);
      }
      if (nos.has(f.no)) throw new Error(`${name}: duplicate field number ${f.no}`);
      if ((f.type === undefined) === (f.map === undefined)) {
        throw new Error(`${name}.${f.name}: exactly one of type and map must be set`);
      }
      nos.add(f.no);
    }
    const schema = this as MessageSchema<unknown>;
    this.codec = {
      wire: WIRE_LEN,
      zero: undefined,
      isDefault: never, // presence: only undefined is absent
      empty: () => newMessage(schema),
      write: (w, v) => {
        const start = w.fork();
        if (v !== undefined && v !== null) writeFields(w, schema, v as Record<string, unknown>);
        w.ldelim(start);
      },
      read: (r, prev) => {
        const saved = r.push(r.len());
        const obj = prev ?? newMessage(schema);
        readFields(r, schema, obj as Record<string, unknown>);
        r.pop(saved);
        return obj;
      },
    };
  }

  /** @internal Fields in field-number order (compiled on first use). */
  get compiled(): CompiledField[] {
    return this.compiledFields ?? this.compile();
  }

  /** @internal Field by number, or undefined. */
  get numbers(): (CompiledField | undefined)[] {
    if (this.byNumber === undefined) this.compile();
    return this.byNumber!;
  }

  private compile(): CompiledField[] {
    const out: CompiledField[] = [];
    for (const f of [...this.fields].sort((a, b) => a.no - b.no)) {
      const codec = codecOf(f.map ? f.map[1] : f.type!, `${this.name}.${f.name}`);
      const kind = f.map ? K_MAP : f.repeated ? K_REPEATED : K_SINGLE;
      const wire = kind === K_MAP ? WIRE_LEN : codec.wire;
      out.push({
        no: f.no,
        name: f.name,
        kind,
        codec,
        wire,
        key: f.no * 8 + wire,
        keyCodec: f.map ? codecOf(f.map[0], `${this.name}.${f.name}`) : undefined,
        stringKeys: f.map?.[0] === 'string',
      });
    }
    const byNumber: (CompiledField | undefined)[] = [];
    // Sparse high numbers are handled by a linear search fallback (see fieldByNumber).
    for (const f of out) if (f.no < 4096) byNumber[f.no] = f;
    this.byNumber = byNumber;
    this.compiledFields = out;
    return out;
  }
}

function codecOf(type: FieldType, where: string): Codec<unknown> {
  if (type instanceof MessageSchema) return type.codec;
  const codec = (SCALARS as Record<string, Codec<unknown>>)[type];
  if (codec === undefined || !Object.hasOwn(SCALARS, type)) throw new Error(`${where}: unknown type ${String(type)}`);
  return codec as Codec<unknown>;
}

/**
 * Declares a message from its table; the message's JS type is {@link MessageType} of the result.
 * See the module doc for an example, and `messages.ts` for every message of the protocol.
 */
export function defineMessage<const F extends Fields>(name: string, fields: F): MessageSchema<MessageOf<F>> {
  return new MessageSchema<MessageOf<F>>(name, fields);
}

function fieldByNumber(s: MessageSchema<unknown>, no: number): CompiledField | undefined {
  if (no < 4096) return s.numbers[no];
  for (const f of s.compiled) if (f.no === no) return f;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const sharedWriter = new Writer(4096);
const SHARED_WRITER_MAX = 1 << 20;

/**
 * Encodes a message to proto3 binary. Defaults are omitted; the result is a fresh `Buffer`.
 * Encoding trusts the TypeScript types (no runtime type checks on the hot path); a `Date` that
 * is invalid throws a `TypeError`.
 */
export function encodeMessage<T>(schema: MessageSchema<T>, obj: MessageInit<T>): Buffer {
  const w = sharedWriter.reset();
  try {
    writeFields(w, schema, obj as Record<string, unknown>);
    return w.copy();
  } finally {
    w.wipe();
    if (w.buf.length > SHARED_WRITER_MAX) w.buf = Buffer.allocUnsafe(4096);
  }
}

/** Appends the encoding of a message (without tag or length) to a writer. */
export function encodeMessageTo<T>(w: Writer, schema: MessageSchema<T>, obj: MessageInit<T>): void {
  writeFields(w, schema, obj as Record<string, unknown>);
}

function writeFields(w: Writer, schema: MessageSchema<unknown>, obj: Record<string, unknown>): void {
  const fields = schema.compiled;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    const codec = f.codec;
    if (f.kind === K_SINGLE) {
      if (!codec.isDefault(v)) {
        w.uint32(f.key);
        codec.write(w, v);
      }
    } else if (f.kind === K_REPEATED) {
      const arr = v as ArrayLike<unknown>;
      const n = arr.length;
      if (n === 0) continue;
      if (f.wire === WIRE_VARINT) {
        // Packed.
        w.tag(f.no, WIRE_LEN);
        const start = w.fork();
        for (let j = 0; j < n; j++) codec.write(w, arr[j]);
        w.ldelim(start);
      } else {
        for (let j = 0; j < n; j++) {
          w.uint32(f.key);
          codec.write(w, arr[j]);
        }
      }
    } else {
      writeMap(w, f, v);
    }
  }
}

function checkInt64(v: number): number {
  if (!Number.isSafeInteger(v)) {
    if (v !== v || v === undefined) return 0;
    throw new TypeError(`64-bit field value ${v} is not a safe integer`);
  }
  return v;
}

function writeTimestampFields(w: Writer, d: Date): void {
  const ms = d.getTime();
  if (ms !== ms) throw new TypeError('invalid Date');
  const seconds = Math.floor(ms / 1000);
  writeSecondsNanos(w, seconds, (ms - seconds * 1000) * 1_000_000);
}

/** @internal Splits milliseconds into protobuf Duration seconds + nanos (same sign). */
export function splitDuration(ms: number): [number, number] {
  if (!Number.isFinite(ms)) throw new TypeError(`invalid duration ${ms}`);
  let seconds = Math.trunc(ms / 1000);
  let nanos = Math.round((ms - seconds * 1000) * 1_000_000);
  if (nanos >= 1_000_000_000) {
    seconds += 1;
    nanos -= 1_000_000_000;
  } else if (nanos <= -1_000_000_000) {
    seconds -= 1;
    nanos += 1_000_000_000;
  }
  return [seconds, nanos];
}

function writeDurationFields(w: Writer, ms: number): void {
  if (ms !== 0) writeSecondsNanos(w, ...splitDuration(ms));
}

/** The body of a Timestamp or Duration: 1 int64 seconds, 2 int32 nanos. */
function writeSecondsNanos(w: Writer, seconds: number, nanos: number): void {
  if (seconds !== 0) {
    w.tag(1, WIRE_VARINT);
    w.int64(seconds);
  }
  if (nanos !== 0) {
    w.tag(2, WIRE_VARINT);
    w.int32(nanos);
  }
}

function writeMap(w: Writer, f: CompiledField, v: unknown): void {
  const keyCodec = f.keyCodec!;
  const keyWire = (1 << 3) | keyCodec.wire;
  const valKey = (2 << 3) | f.codec.wire;
  const entries: [unknown, unknown][] = f.stringKeys
    ? Object.keys(v as Record<string, unknown>)
        .sort()
        .map((k) => [k, (v as Record<string, unknown>)[k]])
    : [...(v as ReadonlyMap<number, unknown>)].sort(([a], [b]) => (a as number) - (b as number));
  for (const [k, val] of entries) {
    w.uint32(f.key);
    const start = w.fork();
    w.uint32(keyWire);
    keyCodec.write(w, k);
    w.uint32(valKey);
    f.codec.write(w, val);
    w.ldelim(start);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes proto3 binary into a fresh object with every field present (defaults for absent
 * ones, see the module doc). `bytes` fields alias `bytes`. Throws
 * `KmsError('ERR_MALFORMED_MESSAGE')` on any malformation.
 */
export function decodeMessage<T>(schema: MessageSchema<T>, bytes: Uint8Array): T {
  const r = new Reader(bytes);
  const obj = newMessage(schema);
  readFields(r, schema, obj as Record<string, unknown>);
  return obj;
}

/** A message object with every field set to its default. */
export function newMessage<T>(schema: MessageSchema<T>): T {
  const obj: Record<string, unknown> = {};
  const fields = schema.compiled;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    obj[f.name] = f.kind === K_REPEATED ? [] : f.kind === K_MAP ? (f.stringKeys ? {} : new Map()) : f.codec.zero;
  }
  return obj as T;
}

function readFields(r: Reader, schema: MessageSchema<unknown>, obj: Record<string, unknown>): void {
  const byNumber = schema.numbers;
  while (r.pos < r.end) {
    const t = r.tag();
    const no = t >>> 3;
    const wt = t & 7;
    const f = no < byNumber.length ? byNumber[no] : no >= 4096 ? fieldByNumber(schema, no) : undefined;
    if (f === undefined) {
      r.skip(wt);
      continue;
    }
    if (f.kind === K_SINGLE) {
      if (wt !== f.wire) malformed(`wrong wire type for ${schema.name}.${f.name}`);
      obj[f.name] = f.codec.read(r, obj[f.name]);
    } else if (f.kind === K_REPEATED) {
      const arr = obj[f.name] as unknown[];
      if (wt === f.wire) {
        arr.push(f.codec.read(r, undefined));
      } else if (wt === WIRE_LEN && f.wire === WIRE_VARINT) {
        // Packed.
        const saved = r.push(r.len());
        while (r.pos < r.end) arr.push(f.codec.read(r, undefined));
        r.pop(saved);
      } else {
        malformed(`wrong wire type for ${schema.name}.${f.name}`);
      }
    } else {
      if (wt !== WIRE_LEN) malformed(`wrong wire type for ${schema.name}.${f.name}`);
      readMapEntry(r, f, obj[f.name]);
    }
  }
}

// google.protobuf.Timestamp valid range: 0001-01-01T00:00:00Z … 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS = -62135596800;
const MAX_TIMESTAMP_SECONDS = 253402300799;
// google.protobuf.Duration valid range: ±10,000 years.
const MAX_DURATION_SECONDS = 315576000000;

/**
 * Reads the seconds (field 1) and nanos (field 2) of a Timestamp/Duration body, merged into
 * those of an earlier occurrence of the same field (`seconds`, `nanos`): like any embedded
 * message, a repeated singular Timestamp/Duration merges field by field.
 */
function readSecondsNanos(r: Reader, seconds: number, nanos: number): [number, number] {
  const saved = r.push(r.len());
  while (r.pos < r.end) {
    const t = r.tag();
    const no = t >>> 3;
    const wt = t & 7;
    if (no === 1 || no === 2) {
      if (wt !== WIRE_VARINT) malformed('wrong wire type in timestamp/duration');
      if (no === 1) seconds = r.int64();
      else nanos = r.int32();
    } else {
      r.skip(wt);
    }
  }
  r.pop(saved);
  return [seconds, nanos];
}

function readTimestamp(r: Reader, prev: Date | undefined): Date {
  const prevMs = prev === undefined ? 0 : prev.getTime();
  const prevSeconds = Math.floor(prevMs / 1000);
  const [seconds, nanos] = readSecondsNanos(r, prevSeconds, (prevMs - prevSeconds * 1000) * 1_000_000);
  if (seconds < MIN_TIMESTAMP_SECONDS || seconds > MAX_TIMESTAMP_SECONDS || nanos < 0 || nanos > 999_999_999) {
    malformed('timestamp out of range');
  }
  return new Date(seconds * 1000 + Math.floor(nanos / 1_000_000));
}

function readDuration(r: Reader, prev: number): number {
  const [seconds, nanos] = readSecondsNanos(r, ...splitDuration(prev));
  if (
    seconds < -MAX_DURATION_SECONDS ||
    seconds > MAX_DURATION_SECONDS ||
    nanos < -999_999_999 ||
    nanos > 999_999_999 ||
    (seconds > 0 && nanos < 0) ||
    (seconds < 0 && nanos > 0)
  ) {
    malformed('duration out of range');
  }
  return seconds * 1000 + nanos / 1_000_000;
}

function readMapEntry(r: Reader, f: CompiledField, target: unknown): void {
  const saved = r.push(r.len());
  const keyCodec = f.keyCodec!;
  let key = keyCodec.zero;
  let val: unknown = undefined;
  let haveVal = false;
  while (r.pos < r.end) {
    const t = r.tag();
    const no = t >>> 3;
    const wt = t & 7;
    if (no === 1) {
      if (wt !== keyCodec.wire) malformed('wrong wire type for map key');
      key = keyCodec.read(r, undefined);
    } else if (no === 2) {
      if (wt !== f.codec.wire) malformed('wrong wire type for map value');
      val = f.codec.read(r, haveVal ? val : undefined);
      haveVal = true;
    } else {
      r.skip(wt);
    }
  }
  r.pop(saved);
  if (!haveVal) val = f.codec.empty();
  if (f.stringKeys) setOwn(target as Record<string, unknown>, key as string, val);
  else (target as Map<number, unknown>).set(key as number, val);
}

/** Sets an own enumerable property, also for the key `__proto__` (no prototype mutation). */
function setOwn(obj: Record<string, unknown>, key: string, val: unknown): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, { value: val, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = val;
  }
}
