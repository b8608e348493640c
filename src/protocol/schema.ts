/**
 * A table-driven proto3 codec. A message is described once, as data (field number, name, type,
 * optional `repeated`/`map`), and {@link encodeMessage}/{@link decodeMessage}/{@link toJSON}/
 * {@link fromJSON} interpret that table. No code generation, no dependencies.
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
 * JS representation (decode output; encode accepts the same shapes, all fields optional):
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
 */

import { KmsError } from '../errors.js';
import { EMPTY_BUFFER, Reader, WIRE_LEN, WIRE_VARINT, Writer, malformed } from './pb.js';

/** Scalar and well-known field types. */
export type ScalarType =
  'string' | 'bytes' | 'bool' | 'uint32' | 'int32' | 'sint32' | 'uint64' | 'int64' | 'sint64' | 'timestamp' | 'duration';

/** Types a map key may have. String keys give a `Record`, integer keys a `Map<number, V>`. */
export type MapKeyType = 'string' | 'uint32' | 'int32' | 'sint32' | 'uint64' | 'int64' | 'sint64';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type FieldType = ScalarType | MessageSchema<any>;

/** One row of a message table. Exactly one of `type` and `map` is given. */
export interface FieldSpec {
  /** Field number, 1 … 2^29-1. */
  readonly no: number;
  /** JS property name (camelCase). */
  readonly name: string;
  /** protobuf-JSON name (`json_name`); defaults to `name`. */
  readonly json?: string;
  readonly type?: FieldType;
  readonly repeated?: boolean;
  /** `[keyType, valueType]` for a `map<K, V>` field. */
  readonly map?: readonly [MapKeyType, FieldType];
}

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

// Type codes (compiled form of FieldType).
const T_STRING = 1;
const T_BYTES = 2;
const T_BOOL = 3;
const T_UINT32 = 4;
const T_INT32 = 5;
const T_SINT32 = 6;
const T_UINT64 = 7;
const T_INT64 = 8;
const T_SINT64 = 9;
const T_TIMESTAMP = 10;
const T_DURATION = 11;
const T_MESSAGE = 12;

const TYPE_CODES: Record<ScalarType, number> = {
  string: T_STRING,
  bytes: T_BYTES,
  bool: T_BOOL,
  uint32: T_UINT32,
  int32: T_INT32,
  sint32: T_SINT32,
  uint64: T_UINT64,
  int64: T_INT64,
  sint64: T_SINT64,
  timestamp: T_TIMESTAMP,
  duration: T_DURATION,
};

const K_SINGLE = 0;
const K_REPEATED = 1;
const K_MAP = 2;

interface CompiledField {
  readonly no: number;
  readonly name: string;
  readonly json: string;
  readonly kind: number;
  /** Value type (element type for repeated, value type for maps). */
  readonly type: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly msg: MessageSchema<any> | undefined;
  /** Wire type of one value. */
  readonly wire: number;
  /** Precomputed key of one value: (no << 3) | wire. */
  readonly key: number;
  /** Map key type code (maps only). */
  readonly keyType: number;
  /** True if the map has string keys (→ Record), false for integer keys (→ Map). */
  readonly stringKeys: boolean;
}

function wireOf(type: number): number {
  return type === T_STRING || type === T_BYTES || type === T_TIMESTAMP || type === T_DURATION || type === T_MESSAGE
    ? WIRE_LEN
    : WIRE_VARINT;
}

/**
 * A message description. Create with {@link defineMessage}. `T` is the decoded JS shape; it is
 * carried for typing only.
 */
export class MessageSchema<T> {
  /** Phantom: the JS type of this message (never set at runtime). */
  declare readonly _type: T;
  readonly name: string;
  readonly fields: readonly FieldSpec[];
  /** Compiled fields in field-number order. */
  private compiledFields: CompiledField[] | undefined;
  /** Compiled fields indexed by field number (sparse). */
  private byNumber: (CompiledField | undefined)[] | undefined;
  private byJson: Map<string, CompiledField> | undefined;

  constructor(name: string, fields: readonly FieldSpec[]) {
    this.name = name;
    this.fields = fields;
    const nos = new Set<number>();
    const names = new Set<string>();
    for (const f of fields) {
      if (!Number.isInteger(f.no) || f.no < 1 || f.no > 0x1fffffff || (f.no >= 19000 && f.no <= 19999)) {
        throw new Error(`${name}.${f.name}: invalid field number ${f.no}`);
      }
      if (nos.has(f.no)) throw new Error(`${name}: duplicate field number ${f.no}`);
      if (names.has(f.name)) throw new Error(`${name}: duplicate field name ${f.name}`);
      if ((f.type === undefined) === (f.map === undefined)) {
        throw new Error(`${name}.${f.name}: exactly one of type and map must be set`);
      }
      if (f.map && f.repeated) throw new Error(`${name}.${f.name}: a map cannot be repeated`);
      nos.add(f.no);
      names.add(f.name);
    }
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

  /** @internal Field by JSON name or JS name. */
  get jsonNames(): Map<string, CompiledField> {
    if (this.byJson === undefined) this.compile();
    return this.byJson!;
  }

  private compile(): CompiledField[] {
    const out: CompiledField[] = [];
    for (const f of [...this.fields].sort((a, b) => a.no - b.no)) {
      const valueType = f.map ? f.map[1] : f.type!;
      const type = typeof valueType === 'string' ? TYPE_CODES[valueType] : T_MESSAGE;
      if (type === undefined) throw new Error(`${this.name}.${f.name}: unknown type ${String(valueType)}`);
      const kind = f.map ? K_MAP : f.repeated ? K_REPEATED : K_SINGLE;
      const wire = kind === K_MAP ? WIRE_LEN : wireOf(type);
      const keyType = f.map ? TYPE_CODES[f.map[0]] : 0;
      out.push({
        no: f.no,
        name: f.name,
        json: f.json ?? f.name,
        kind,
        type,
        msg: typeof valueType === 'string' ? undefined : valueType,
        wire,
        key: f.no * 8 + wire,
        keyType,
        stringKeys: keyType === T_STRING,
      });
    }
    const byNumber: (CompiledField | undefined)[] = [];
    const byJson = new Map<string, CompiledField>();
    for (const f of out) {
      if (f.no < 4096) byNumber[f.no] = f;
      byJson.set(f.json, f);
      byJson.set(f.name, f);
    }
    // Sparse high numbers are handled by a linear search fallback (see fieldByNumber).
    this.byNumber = byNumber;
    this.byJson = byJson;
    this.compiledFields = out;
    return out;
  }
}

/** Declares a message: `defineMessage<KeyStatusRequest>('KeyStatusRequest', [{ no: 1, name: 'name', type: 'string' }, …])`. */
export function defineMessage<T>(name: string, fields: readonly FieldSpec[]): MessageSchema<T> {
  return new MessageSchema<T>(name, fields);
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
    if (f.kind === K_SINGLE) {
      if (!isDefault(f.type, v)) {
        w.uint32(f.key);
        writeValue(w, f, f.type, v);
      }
    } else if (f.kind === K_REPEATED) {
      const arr = v as ArrayLike<unknown>;
      const n = arr.length;
      if (n === 0) continue;
      if (f.wire === WIRE_VARINT) {
        // Packed.
        w.tag(f.no, WIRE_LEN);
        const start = w.fork();
        for (let j = 0; j < n; j++) writeValue(w, f, f.type, arr[j]);
        w.ldelim(start);
      } else {
        for (let j = 0; j < n; j++) {
          w.uint32(f.key);
          writeValue(w, f, f.type, arr[j]);
        }
      }
    } else {
      writeMap(w, f, v);
    }
  }
}

function isDefault(type: number, v: unknown): boolean {
  switch (type) {
    case T_STRING:
      return v === '';
    case T_BYTES:
      return (v as Uint8Array).length === 0;
    case T_BOOL:
      return v === false;
    case T_TIMESTAMP:
    case T_MESSAGE:
      return false; // presence: undefined/null were filtered out
    default:
      return v === 0 || v !== v; // 0, -0, NaN
  }
}

/** Writes one value (no key) of the given type. */
function writeValue(w: Writer, f: CompiledField, type: number, v: unknown): void {
  switch (type) {
    case T_STRING:
      w.string((v as string) ?? '');
      return;
    case T_BYTES:
      w.bytes((v as Uint8Array) ?? EMPTY_BUFFER);
      return;
    case T_BOOL:
      w.bool(v === true);
      return;
    case T_UINT32:
      w.uint32((v as number) >>> 0);
      return;
    case T_INT32:
      w.int32((v as number) | 0);
      return;
    case T_SINT32:
      w.sint32((v as number) | 0);
      return;
    case T_UINT64:
    case T_INT64:
      w.int64(checkInt64(v as number));
      return;
    case T_SINT64:
      w.sint64(checkInt64(v as number));
      return;
    case T_TIMESTAMP: {
      const start = w.fork();
      if (v !== undefined && v !== null) writeTimestampFields(w, v as Date);
      w.ldelim(start);
      return;
    }
    case T_DURATION: {
      const start = w.fork();
      writeDurationFields(w, (v as number) ?? 0);
      w.ldelim(start);
      return;
    }
    default: {
      const start = w.fork();
      if (v !== undefined && v !== null) writeFields(w, f.msg!, v as Record<string, unknown>);
      w.ldelim(start);
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
  const nanos = (ms - seconds * 1000) * 1_000_000;
  if (seconds !== 0) {
    w.tag(1, WIRE_VARINT);
    w.int64(seconds);
  }
  if (nanos !== 0) {
    w.tag(2, WIRE_VARINT);
    w.int32(nanos);
  }
}

/** Splits milliseconds into protobuf Duration seconds + nanos (same sign). */
function splitDuration(ms: number): [number, number] {
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
  if (ms === 0) return;
  const [seconds, nanos] = splitDuration(ms);
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
  const keyWire = (1 << 3) | wireOf(f.keyType);
  const valKey = (2 << 3) | wireOf(f.type);
  if (f.stringKeys) {
    const rec = v as Record<string, unknown>;
    const keys = Object.keys(rec);
    if (keys.length === 0) return;
    keys.sort();
    for (const k of keys) {
      w.uint32(f.key);
      const start = w.fork();
      w.uint32(keyWire);
      w.string(k);
      w.uint32(valKey);
      writeValue(w, f, f.type, rec[k]);
      w.ldelim(start);
    }
  } else {
    const map = v as ReadonlyMap<number, unknown>;
    if (map.size === 0) return;
    const keys = [...map.keys()].sort((a, b) => a - b);
    for (const k of keys) {
      w.uint32(f.key);
      const start = w.fork();
      w.uint32(keyWire);
      writeValue(w, f, f.keyType, k);
      w.uint32(valKey);
      writeValue(w, f, f.type, map.get(k));
      w.ldelim(start);
    }
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

/** Decodes from a reader positioned at a message body ending at `r.end`. */
export function decodeMessageFrom<T>(r: Reader, schema: MessageSchema<T>): T {
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
    obj[f.name] = f.kind === K_REPEATED ? [] : f.kind === K_MAP ? (f.stringKeys ? {} : new Map()) : defaultValue(f.type);
  }
  return obj as T;
}

function defaultValue(type: number): unknown {
  switch (type) {
    case T_STRING:
      return '';
    case T_BYTES:
      return EMPTY_BUFFER;
    case T_BOOL:
      return false;
    case T_TIMESTAMP:
    case T_MESSAGE:
      return undefined;
    default:
      return 0;
  }
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
      obj[f.name] = readValue(r, f, f.type, obj[f.name]);
    } else if (f.kind === K_REPEATED) {
      const arr = obj[f.name] as unknown[];
      if (wt === f.wire) {
        arr.push(readValue(r, f, f.type, undefined));
      } else if (wt === WIRE_LEN && f.wire === WIRE_VARINT) {
        // Packed.
        const n = r.len();
        const saved = r.push(n);
        while (r.pos < r.end) arr.push(readValue(r, f, f.type, undefined));
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

/** Reads one value (after its key). `prev` is the current value (merged into for messages). */
function readValue(r: Reader, f: CompiledField, type: number, prev: unknown): unknown {
  switch (type) {
    case T_STRING:
      return r.string();
    case T_BYTES:
      return r.bytes();
    case T_BOOL:
      return r.bool();
    case T_UINT32:
      return r.uint32();
    case T_INT32:
      return r.int32();
    case T_SINT32:
      return r.sint32();
    case T_UINT64:
      return r.uint64();
    case T_INT64:
      return r.int64();
    case T_SINT64:
      return r.sint64();
    case T_TIMESTAMP:
      return readTimestamp(r, prev as Date | undefined);
    case T_DURATION:
      return readDuration(r, (prev as number | undefined) ?? 0);
    default: {
      const n = r.len();
      const saved = r.push(n);
      const obj = (prev as Record<string, unknown> | undefined) ?? newMessage(f.msg!);
      readFields(r, f.msg!, obj as Record<string, unknown>);
      r.pop(saved);
      return obj;
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
  const n = r.len();
  const saved = r.push(n);
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
  const n = r.len();
  const saved = r.push(n);
  const keyWire = wireOf(f.keyType);
  const valWire = wireOf(f.type);
  let key: unknown = f.stringKeys ? '' : 0;
  let val: unknown = undefined;
  let haveVal = false;
  while (r.pos < r.end) {
    const t = r.tag();
    const no = t >>> 3;
    const wt = t & 7;
    if (no === 1) {
      if (wt !== keyWire) malformed('wrong wire type for map key');
      key = readValue(r, f, f.keyType, undefined);
    } else if (no === 2) {
      if (wt !== valWire) malformed('wrong wire type for map value');
      val = readValue(r, f, f.type, haveVal ? val : undefined);
      haveVal = true;
    } else {
      r.skip(wt);
    }
  }
  r.pop(saved);
  if (!haveVal) {
    val = f.type === T_MESSAGE ? newMessage(f.msg!) : f.type === T_TIMESTAMP ? new Date(0) : defaultValue(f.type);
  }
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

// ---------------------------------------------------------------------------------------------
// protobuf-JSON (https://protobuf.dev/programming-guides/json/), as Go's protojson writes it:
// json names, default values omitted, 64-bit integers as strings, bytes as padded standard
// base64, Timestamp as RFC 3339 in UTC with 0/3/6/9 fraction digits, Duration as "<s>[.fff]s".

/** A JSON value as produced by {@link toJSON}. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** Converts a message to its protobuf-JSON object (pass the result to `JSON.stringify`). */
export function toJSON<T>(schema: MessageSchema<T>, obj: MessageInit<T>): { [key: string]: JsonValue } {
  const out: { [key: string]: JsonValue } = {};
  const rec = obj as Record<string, unknown>;
  for (const f of schema.compiled) {
    const v = rec[f.name];
    if (v === undefined || v === null) continue;
    if (f.kind === K_SINGLE) {
      if (isDefault(f.type, v)) continue;
      out[f.json] = valueToJSON(f, f.type, v);
    } else if (f.kind === K_REPEATED) {
      const arr = v as ArrayLike<unknown>;
      if (arr.length === 0) continue;
      out[f.json] = Array.from(arr, (e) => valueToJSON(f, f.type, e));
    } else {
      const m: { [key: string]: JsonValue } = {};
      let any = false;
      if (f.stringKeys) {
        const src = v as Record<string, unknown>;
        for (const k of Object.keys(src).sort()) {
          setOwn(m, k, valueToJSON(f, f.type, src[k]));
          any = true;
        }
      } else {
        const src = v as ReadonlyMap<number, unknown>;
        for (const k of [...src.keys()].sort((a, b) => a - b)) {
          m[String(k)] = valueToJSON(f, f.type, src.get(k));
          any = true;
        }
      }
      if (any) out[f.json] = m;
    }
  }
  return out;
}

function valueToJSON(f: CompiledField, type: number, v: unknown): JsonValue {
  switch (type) {
    case T_STRING:
      return (v as string) ?? '';
    case T_BYTES:
      return Buffer.from((v as Uint8Array).buffer, (v as Uint8Array).byteOffset, (v as Uint8Array).byteLength).toString('base64');
    case T_BOOL:
      return v === true;
    case T_UINT32:
      return (v as number) >>> 0;
    case T_INT32:
    case T_SINT32:
      return (v as number) | 0;
    case T_UINT64:
    case T_INT64:
    case T_SINT64:
      return String(checkInt64((v as number) ?? 0));
    case T_TIMESTAMP:
      return formatTimestamp((v as Date | undefined) ?? new Date(0));
    case T_DURATION:
      return formatDuration((v as number) ?? 0);
    default:
      return toJSON(f.msg!, (v ?? {}) as MessageInit<unknown>);
  }
}

/** RFC 3339 in UTC, fraction only when non-zero (Go protojson style). */
export function formatTimestamp(d: Date): string {
  const ms = d.getTime();
  if (ms !== ms) throw new TypeError('invalid Date');
  const iso = d.toISOString(); // YYYY-MM-DDTHH:mm:ss.sssZ
  return iso.endsWith('.000Z') ? iso.slice(0, -5) + 'Z' : iso;
}

/** Duration as protobuf-JSON: seconds with 0, 3, 6 or 9 fraction digits and a trailing `s`. */
export function formatDuration(ms: number): string {
  const [seconds, nanos] = splitDuration(ms);
  const neg = seconds < 0 || nanos < 0;
  let s = `${neg ? '-' : ''}${Math.abs(seconds)}`;
  if (nanos !== 0) {
    let frac = String(Math.abs(nanos)).padStart(9, '0');
    if (frac.endsWith('000')) frac = frac.slice(0, -3);
    if (frac.endsWith('000')) frac = frac.slice(0, -3);
    s += '.' + frac;
  }
  return s + 's';
}

/** Options of {@link fromJSON}. */
export interface FromJsonOptions {
  /** Ignore unknown fields instead of rejecting them (Go protojson's `DiscardUnknown`). */
  ignoreUnknown?: boolean;
}

/**
 * Parses a protobuf-JSON object (already `JSON.parse`d) into a message. Field names may be the
 * json name or the JS name; `null` means default; 64-bit and 32-bit integers may be numbers or
 * decimal strings; bytes may be standard or URL-safe base64, padded or not. Throws
 * `KmsError('ERR_MALFORMED_MESSAGE')` on anything else.
 */
export function fromJSON<T>(schema: MessageSchema<T>, json: unknown, options: FromJsonOptions = {}): T {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) malformed(`${schema.name}: expected an object`);
  const obj = newMessage(schema) as Record<string, unknown>;
  const names = schema.jsonNames;
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    const f = names.get(k);
    if (f === undefined) {
      if (options.ignoreUnknown) continue;
      malformed(`${schema.name}: unknown field ${JSON.stringify(k).slice(0, 80)}`);
    }
    if (v === null) continue;
    if (f.kind === K_SINGLE) {
      obj[f.name] = valueFromJSON(f, f.type, v, options);
    } else if (f.kind === K_REPEATED) {
      if (!Array.isArray(v)) malformed(`${schema.name}.${f.json}: expected an array`);
      obj[f.name] = v.map((e) => valueFromJSON(f, f.type, e, options));
    } else {
      if (typeof v !== 'object' || Array.isArray(v)) malformed(`${schema.name}.${f.json}: expected an object`);
      const target = obj[f.name];
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>)) {
        const val = valueFromJSON(f, f.type, mv, options);
        if (f.stringKeys) setOwn(target as Record<string, unknown>, mk, val);
        else (target as Map<number, unknown>).set(integerFromJSON(f.keyType, mk) as number, val);
      }
    }
  }
  return obj as T;
}

function valueFromJSON(f: CompiledField, type: number, v: unknown, options: FromJsonOptions): unknown {
  switch (type) {
    case T_STRING:
      if (typeof v !== 'string') malformed(`${f.json}: expected a string`);
      return v;
    case T_BYTES:
      return bytesFromJSON(f, v);
    case T_BOOL:
      if (typeof v !== 'boolean') malformed(`${f.json}: expected a boolean`);
      return v;
    case T_TIMESTAMP:
      if (typeof v !== 'string') malformed(`${f.json}: expected an RFC 3339 string`);
      return parseTimestamp(v);
    case T_DURATION:
      if (typeof v !== 'string') malformed(`${f.json}: expected a duration string`);
      return parseDuration(v);
    case T_MESSAGE:
      if (v === null) return newMessage(f.msg!);
      return fromJSON(f.msg!, v, options);
    default:
      return integerFromJSON(type, v);
  }
}

const INT_LIMITS: Record<number, [number, number]> = {
  [T_UINT32]: [0, 0xffffffff],
  [T_INT32]: [-0x80000000, 0x7fffffff],
  [T_SINT32]: [-0x80000000, 0x7fffffff],
  [T_UINT64]: [0, Number.MAX_SAFE_INTEGER],
  [T_INT64]: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  [T_SINT64]: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

function integerFromJSON(type: number, v: unknown): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^-?\d+(\.0*)?([eE]\+?\d+)?$/.test(v)) n = Number(v);
  else return malformed('expected an integer');
  const [min, max] = INT_LIMITS[type]!;
  if (!Number.isInteger(n) || n < min || n > max) malformed('integer out of range');
  return n === 0 ? 0 : n; // no -0
}

function bytesFromJSON(f: CompiledField, v: unknown): Buffer {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v) || v.replace(/=+$/, '').length % 4 === 1) {
    malformed(`${f.json}: expected base64`);
  }
  return Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** Parses an RFC 3339 timestamp (as protojson accepts it) to a Date (ms precision). */
export function parseTimestamp(s: string): Date {
  const m = RFC3339.exec(s);
  if (m === null) return malformed('invalid RFC 3339 timestamp');
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) {
    malformed('invalid RFC 3339 timestamp');
  }
  const ms = m[7] ? Math.floor(Number(m[7].padEnd(9, '0')) / 1_000_000) : 0;
  let t = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  const check = new Date(Date.UTC(year, month - 1, day));
  if (check.getUTCDate() !== day) malformed('invalid RFC 3339 timestamp');
  if (year < 100) t = new Date(t).setUTCFullYear(year); // Date.UTC maps 0…99 to 1900…1999
  if (m[9]) {
    const off = (Number(m[10]) * 60 + Number(m[11])) * 60_000;
    t += m[9] === '+' ? -off : off;
  }
  const sec = Math.floor(t / 1000);
  if (sec < MIN_TIMESTAMP_SECONDS || sec > MAX_TIMESTAMP_SECONDS) malformed('timestamp out of range');
  return new Date(t);
}

/** Parses a protojson Duration (`"1.5s"`, `"-0.001s"`) to milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(s);
  if (m === null) return malformed('invalid duration');
  const seconds = Number(m[2]);
  if (seconds > MAX_DURATION_SECONDS) malformed('duration out of range');
  const nanos = m[3] ? Number(m[3].padEnd(9, '0')) : 0;
  const ms = seconds * 1000 + nanos / 1_000_000;
  return m[1] && ms !== 0 ? -ms : ms;
}

/** True for a `KmsError` raised by this codec (for callers that need to tell). */
export function isMalformed(err: unknown): boolean {
  return err instanceof KmsError && err.code === 'ERR_MALFORMED_MESSAGE';
}
