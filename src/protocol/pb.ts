/**
 * Protocol Buffers (proto3) binary wire primitives: a growable {@link Writer} and a
 * bounds-checked {@link Reader}. See https://protobuf.dev/programming-guides/encoding/ for
 * the format (varints, zig-zag, wire types, length-delimited records).
 *
 * These are on the hot path (KEY:GENERATE / KEY:DECRYPT at >100k ops/s), so:
 * - neither class allocates per field; 64-bit varints are decoded into two 32-bit halves kept
 *   on the reader ({@link Reader.lo}, {@link Reader.hi});
 * - short strings are UTF-8 encoded/decoded in JavaScript, long ones through Buffer's native
 *   `utf8Write` / `utf8Slice`;
 * - decoded `bytes` fields are `subarray` views: **they alias the input buffer**. Copy them if
 *   the input buffer is reused or the value must outlive it.
 * - a writer zeroes scratch memory it discards when growing, and the shared writers of the
 *   encoders are wiped after each use, so no plaintext lingers there (the returned buffers are
 *   the caller's to clear).
 *
 * Every malformation found while reading throws `KmsError('ERR_MALFORMED_MESSAGE')`; the reader
 * never throws a `RangeError` and never reads outside `[pos, end)`.
 */

import { isUtf8 } from 'node:buffer';
import { KmsError } from '../errors.js';

/** Wire types (protobuf encoding §"Message Structure"). 3 and 4 are the deprecated groups. */
export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_SGROUP = 3;
export const WIRE_EGROUP = 4;
export const WIRE_I32 = 5;

/** Largest valid field number, 2^29 - 1. */
export const MAX_FIELD_NUMBER = 0x1fffffff;

const TWO_32 = 4294967296;

/**
 * Buffer's native string fast paths. They exist on `Buffer.prototype` in every Node release we
 * support but are not in `@types/node`; they skip the argument normalisation of
 * `toString`/`write`.
 */
interface NativeBuffer extends Buffer {
  latin1Slice(start: number, end: number): string;
  utf8Slice(start: number, end: number): string;
  utf8Write(s: string, offset: number, length: number): number;
}

/** Shared zero-length buffer; safe to share because it cannot be written to. */
export const EMPTY_BUFFER: Buffer = Buffer.alloc(0);

/** Throws the one error every decoding problem maps to. */
export function malformed(detail: string): never {
  throw new KmsError('ERR_MALFORMED_MESSAGE', detail);
}

/** Number of bytes of the varint encoding of a uint32 (0 ≤ v < 2^32). */
export function varint32Size(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  return 5;
}

// Strings up to this many UTF-16 units are encoded/decoded in JS; longer ones natively.
const SHORT_STRING = 64;

/**
 * A growable output buffer with proto3 primitive writers. Values are written at `pos`; the
 * caller is responsible for writing a tag (see {@link Writer.tag}) before each field value.
 */
export class Writer {
  /** The backing buffer; only bytes `[0, pos)` are meaningful. */
  buf: Buffer;
  /** Write position = number of bytes written so far. */
  pos = 0;

  constructor(initialCapacity = 256) {
    this.buf = Buffer.allocUnsafe(Math.max(16, initialCapacity));
  }

  /** Discards everything written so far (keeps the backing buffer). */
  reset(): this {
    this.pos = 0;
    return this;
  }

  /** Makes room for at least `n` more bytes. */
  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    if (cap < need) cap = need;
    const next = Buffer.allocUnsafe(cap);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf.fill(0, 0, this.pos); // may hold secrets (DEKs); don't leave them behind
    this.buf = next;
  }

  /** Returns a copy of the bytes written so far (exact length) and resets the writer. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    return out;
  }

  /**
   * Zeroes the bytes written so far and resets the writer. Long-lived (shared) writers call this
   * after each use so that no plaintext (e.g. a DEK) lingers in their scratch memory.
   */
  wipe(): void {
    this.buf.fill(0, 0, this.pos);
    this.pos = 0;
  }

  /** Returns a copy of the bytes written so far (exact length) without resetting. */
  copy(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }

  /** Writes a field key: `(fieldNumber << 3) | wireType`. */
  tag(fieldNumber: number, wireType: number): void {
    this.uint32((fieldNumber * 8 + wireType) >>> 0);
  }

  /** Writes an unsigned varint of a value in [0, 2^32). */
  uint32(v: number): void {
    this.ensure(5);
    const buf = this.buf;
    let pos = this.pos;
    while (v > 0x7f) {
      buf[pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[pos++] = v;
    this.pos = pos;
  }

  /** Writes an int32 as protobuf does: negative values take 10 bytes (sign-extended to 64 bits). */
  int32(v: number): void {
    if (v >= 0) this.uint32(v >>> 0);
    else this.varint64(v >>> 0, 0xffffffff);
  }

  /** Writes a zig-zag encoded sint32. */
  sint32(v: number): void {
    this.uint32(((v << 1) ^ (v >> 31)) >>> 0);
  }

  /** Writes a bool as a one-byte varint. */
  bool(v: boolean): void {
    this.ensure(1);
    this.buf[this.pos++] = v ? 1 : 0;
  }

  /** Writes a 64-bit varint given as unsigned low and high 32-bit halves. */
  varint64(lo: number, hi: number): void {
    this.ensure(10);
    const buf = this.buf;
    let pos = this.pos;
    lo >>>= 0;
    hi >>>= 0;
    while (hi !== 0) {
      buf[pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    while (lo > 0x7f) {
      buf[pos++] = (lo & 0x7f) | 0x80;
      lo >>>= 7;
    }
    buf[pos++] = lo;
    this.pos = pos;
  }

  /** Writes an integral JS number (|v| ≤ 2^53) as a uint64/int64 varint (two's complement). */
  int64(v: number): void {
    if (v >= 0 && v < TWO_32) {
      this.uint32(v);
      return;
    }
    splitInt64(v);
    this.varint64(splitLo, splitHi);
  }

  /** Writes an integral JS number (|v| ≤ 2^53) as a zig-zag sint64 varint. */
  sint64(v: number): void {
    splitInt64(v);
    const sign = splitHi >> 31; // 0 or -1
    const hi = ((splitHi << 1) | (splitLo >>> 31)) ^ sign;
    const lo = (splitLo << 1) ^ sign;
    this.varint64(lo >>> 0, hi >>> 0);
  }

  /** Writes 4 bytes little-endian. */
  fixed32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }

  /** Writes length-prefixed bytes. */
  bytes(v: Uint8Array): void {
    const n = v.length;
    this.uint32(n);
    this.ensure(n);
    this.buf.set(v, this.pos);
    this.pos += n;
  }

  /** Writes raw bytes without a length prefix. */
  raw(v: Uint8Array): void {
    this.ensure(v.length);
    this.buf.set(v, this.pos);
    this.pos += v.length;
  }

  /**
   * Writes a length-prefixed UTF-8 string. Lone surrogates are written as U+FFFD (JS strings
   * are UTF-16 and may hold them; the output is always valid UTF-8).
   */
  string(s: string): void {
    const len = s.length;
    if (len <= 42) {
      // At most 3 bytes per UTF-16 unit ⇒ at most 126 bytes ⇒ a one-byte length prefix.
      this.ensure(1 + len * 3);
      const start = this.pos + 1;
      const end = utf8WriteShort(this.buf, start, s);
      this.buf[start - 1] = end - start;
      this.pos = end;
      return;
    }
    const n = Buffer.byteLength(s, 'utf8');
    this.uint32(n);
    this.ensure(n);
    if (len <= SHORT_STRING) utf8WriteShort(this.buf, this.pos, s);
    else (this.buf as NativeBuffer).utf8Write(s, this.pos, n);
    this.pos += n;
  }

  /**
   * Starts a length-delimited record whose length is not yet known: reserves one byte for the
   * length and returns the start of the payload, to be passed to {@link Writer.ldelim}.
   */
  fork(): number {
    this.ensure(1);
    this.pos += 1;
    return this.pos;
  }

  /** Ends a record started with {@link Writer.fork}: writes its length, moving it if needed. */
  ldelim(start: number): void {
    const len = this.pos - start;
    if (len < 0x80) {
      this.buf[start - 1] = len;
      return;
    }
    const extra = varint32Size(len) - 1;
    this.ensure(extra);
    const buf = this.buf;
    buf.copyWithin(start + extra, start, this.pos);
    let p = start - 1;
    let v = len;
    while (v > 0x7f) {
      buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[p] = v;
    this.pos += extra;
  }
}

// Scratch results of splitInt64 (avoids allocating a tuple).
let splitLo = 0;
let splitHi = 0;

/** Splits an integral number into two's-complement 64-bit halves (splitLo, splitHi). */
function splitInt64(v: number): void {
  const neg = v < 0;
  if (neg) v = -v;
  let lo = v >>> 0;
  let hi = Math.floor(v / TWO_32) >>> 0;
  if (neg) {
    lo = ~lo >>> 0;
    hi = ~hi >>> 0;
    if (lo === 0xffffffff) {
      lo = 0;
      hi = (hi + 1) >>> 0;
    } else {
      lo = lo + 1;
    }
  }
  splitLo = lo;
  splitHi = hi;
}

/** UTF-8 encodes `s` into `buf` at `pos` (room must exist); returns the end position. */
function utf8WriteShort(buf: Buffer, pos: number, s: string): number {
  const len = s.length;
  for (let i = 0; i < len; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[pos++] = c;
    } else if (c < 0x800) {
      buf[pos++] = 0xc0 | (c >> 6);
      buf[pos++] = 0x80 | (c & 0x3f);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const c2 = i + 1 < len ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && c2 >= 0xdc00 && c2 <= 0xdfff) {
        i++;
        c = 0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00);
        buf[pos++] = 0xf0 | (c >> 18);
        buf[pos++] = 0x80 | ((c >> 12) & 0x3f);
        buf[pos++] = 0x80 | ((c >> 6) & 0x3f);
        buf[pos++] = 0x80 | (c & 0x3f);
      } else {
        // Lone surrogate → U+FFFD, as Buffer.byteLength/utf8Write do.
        buf[pos++] = 0xef;
        buf[pos++] = 0xbf;
        buf[pos++] = 0xbd;
      }
    } else {
      buf[pos++] = 0xe0 | (c >> 12);
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f);
      buf[pos++] = 0x80 | (c & 0x3f);
    }
  }
  return pos;
}

/**
 * A bounds-checked reader over `[pos, end)` of a buffer. Nested messages are read by narrowing
 * `end` (see {@link Reader.push}/{@link Reader.pop}), so one reader serves a whole message tree.
 */
export class Reader {
  readonly buf: Buffer;
  pos: number;
  end: number;
  /** Low 32 bits (unsigned) of the last {@link Reader.varint64} / {@link Reader.fixed64}. */
  lo = 0;
  /** High 32 bits (unsigned) of the last {@link Reader.varint64} / {@link Reader.fixed64}. */
  hi = 0;

  /** `bytes` is not copied; a non-Buffer Uint8Array is wrapped in a Buffer view. */
  constructor(bytes: Uint8Array, start = 0, end = bytes.length) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = end;
  }

  /** True while unread bytes remain before `end`. */
  more(): boolean {
    return this.pos < this.end;
  }

  /**
   * Reads a field key and returns it as `(fieldNumber << 3) | wireType` (a uint32). Field
   * number 0, field numbers above 2^29-1 and the reserved wire types 6 and 7 are rejected.
   */
  tag(): number {
    const buf = this.buf;
    const b = buf[this.pos];
    let t: number;
    if (b !== undefined && b < 0x80 && this.pos < this.end) {
      this.pos++;
      t = b;
    } else {
      this.varint64();
      if (this.hi !== 0) malformed('field number out of range');
      t = this.lo;
    }
    if (t < 8) malformed('field number 0');
    if ((t & 7) > 5) malformed('invalid wire type');
    return t;
  }

  /**
   * Reads a varint (up to 10 bytes, the 10th holding only bit 63) and returns its low 32 bits
   * as an unsigned number; protobuf's uint32 semantics (higher bits are truncated).
   */
  uint32(): number {
    const buf = this.buf;
    let pos = this.pos;
    if (this.end - pos >= 5) {
      let b = buf[pos++]!;
      let v = b & 0x7f;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
      b = buf[pos++]!;
      v |= (b & 0x7f) << 7;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
      b = buf[pos++]!;
      v |= (b & 0x7f) << 14;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
      b = buf[pos++]!;
      v |= (b & 0x7f) << 21;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
      b = buf[pos++]!;
      v = (v | ((b & 0x0f) << 28)) >>> 0;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
      // Bits above 32: consume and validate the rest.
      this.pos = pos;
      this.skipVarintTail(5);
      return v;
    }
    this.varint64();
    return this.lo;
  }

  /** Consumes the continuation bytes of a varint of which `n` bytes were already read. */
  private skipVarintTail(n: number): void {
    const buf = this.buf;
    let pos = this.pos;
    const end = this.end;
    for (;;) {
      if (pos >= end) malformed('truncated varint');
      const b = buf[pos++]!;
      n++;
      if (n === 10) {
        if (b > 1) malformed('varint overflow');
        break;
      }
      if (b < 0x80) break;
    }
    this.pos = pos;
  }

  /** Reads a varint of up to 64 bits into {@link Reader.lo} / {@link Reader.hi}. */
  varint64(): void {
    const buf = this.buf;
    const end = this.end;
    let pos = this.pos;
    let lo = 0;
    let hi: number;
    let b: number;
    let i = 0;
    // Bytes 0..3: bits 0..27.
    for (; i < 4; i++) {
      if (pos >= end) malformed('truncated varint');
      b = buf[pos++]!;
      lo |= (b & 0x7f) << (i * 7);
      if (b < 0x80) {
        this.pos = pos;
        this.lo = lo >>> 0;
        this.hi = 0;
        return;
      }
    }
    // Byte 4: bits 28..34.
    if (pos >= end) malformed('truncated varint');
    b = buf[pos++]!;
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    if (b >= 0x80) {
      // Bytes 5..8: bits 35..62; byte 9: bit 63.
      for (i = 0; i < 5; i++) {
        if (pos >= end) malformed('truncated varint');
        b = buf[pos++]!;
        if (i === 4) {
          if (b > 1) malformed('varint overflow');
          hi |= b << 31;
          break;
        }
        hi |= (b & 0x7f) << (i * 7 + 3);
        if (b < 0x80) break;
      }
    }
    this.pos = pos;
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  /** Reads a varint as a uint64; throws unless it is ≤ 2^53 - 1. */
  uint64(): number {
    this.varint64();
    if (this.hi > 0x1fffff) malformed('integer exceeds 2^53');
    return this.hi * TWO_32 + this.lo;
  }

  /** Reads a varint as a two's-complement int64; throws unless |v| ≤ 2^53 - 1. */
  int64(): number {
    this.varint64();
    return int64Number(this.lo, this.hi);
  }

  /** Reads a zig-zag sint64; throws unless |v| ≤ 2^53 - 1. */
  sint64(): number {
    this.varint64();
    const lo = this.lo;
    const hi = this.hi;
    const s = -(lo & 1);
    return int64Number(((lo >>> 1) | (hi << 31)) ^ s, (hi >>> 1) ^ s);
  }

  /** Reads a varint as int32 (low 32 bits, signed). */
  int32(): number {
    return this.uint32() | 0;
  }

  /** Reads a zig-zag sint32 (of the low 32 bits, as Go does). */
  sint32(): number {
    const v = this.uint32();
    return (v >>> 1) ^ -(v & 1);
  }

  /** Reads a varint as bool: any non-zero value is true. */
  bool(): boolean {
    const b = this.buf[this.pos];
    if (b !== undefined && b < 0x80 && this.pos < this.end) {
      this.pos++;
      return b !== 0;
    }
    this.varint64();
    return (this.lo | this.hi) !== 0;
  }

  /** Reads a length prefix and checks it fits before `end`; returns the length. */
  len(): number {
    const b = this.buf[this.pos];
    let n: number;
    if (b !== undefined && b < 0x80 && this.pos < this.end) {
      this.pos++;
      n = b;
    } else {
      this.varint64();
      if (this.hi !== 0) malformed('length out of range');
      n = this.lo;
    }
    if (n > this.end - this.pos) malformed('length exceeds message');
    return n;
  }

  /** Reads length-prefixed bytes. The result **aliases** the input buffer (no copy). */
  bytes(): Buffer {
    const n = this.len();
    if (n === 0) return EMPTY_BUFFER;
    const start = this.pos;
    this.pos = start + n;
    return this.buf.subarray(start, start + n);
  }

  /** Reads a length-prefixed string; invalid UTF-8 is rejected. */
  string(): string {
    const n = this.len();
    const start = this.pos;
    const end = start + n;
    this.pos = end;
    return decodeUtf8(this.buf, start, end);
  }

  /** Reads 4 bytes little-endian (unsigned). */
  fixed32(): number {
    if (this.end - this.pos < 4) malformed('truncated fixed32');
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /**
   * Narrows the reader to the next `n` bytes (a nested message) and returns the previous end,
   * to be restored with {@link Reader.pop}.
   */
  push(n: number): number {
    const saved = this.end;
    this.end = this.pos + n;
    return saved;
  }

  /** Restores the end saved by {@link Reader.push}; the nested message must be fully read. */
  pop(savedEnd: number): void {
    this.end = savedEnd;
  }

  /** Skips the value of a field with the given wire type. Groups are rejected. */
  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint64();
        return;
      case WIRE_I64:
        if (this.end - this.pos < 8) malformed('truncated fixed64');
        this.pos += 8;
        return;
      case WIRE_LEN: {
        const n = this.len();
        this.pos += n;
        return;
      }
      case WIRE_I32:
        if (this.end - this.pos < 4) malformed('truncated fixed32');
        this.pos += 4;
        return;
      case WIRE_SGROUP:
      case WIRE_EGROUP:
        return malformed('groups are not supported');
      default:
        return malformed('invalid wire type');
    }
  }
}

/** Two's-complement halves → number; throws unless |v| ≤ 2^53 - 1. */
function int64Number(lo: number, hi: number): number {
  lo >>>= 0;
  hi >>>= 0;
  if (hi & 0x80000000) {
    const mag = (~hi >>> 0) * TWO_32 + (~lo >>> 0) + 1;
    if (mag > Number.MAX_SAFE_INTEGER) malformed('integer exceeds 2^53');
    return -mag;
  }
  if (hi > 0x1fffff) malformed('integer exceeds 2^53');
  return hi * TWO_32 + lo;
}

const fatalDecoder = new TextDecoder('utf-8', { fatal: true });

/** Decodes `buf[start, end)` as strict UTF-8; throws ERR_MALFORMED_MESSAGE on invalid input. */
export function decodeUtf8(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  if (n === 0) return '';
  if (n <= SHORT_STRING) {
    // ASCII fast path.
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return (buf as NativeBuffer).latin1Slice(start, end);
    try {
      return fatalDecoder.decode(buf.subarray(start, end));
    } catch {
      return malformed('invalid UTF-8 in string');
    }
  }
  const view = buf.subarray(start, end);
  if (!isUtf8(view)) malformed('invalid UTF-8 in string');
  return (buf as NativeBuffer).utf8Slice(start, end);
}
