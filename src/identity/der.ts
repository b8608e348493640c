/**
 * A minimal DER toolkit (ITU-T X.690): an encoder for the few ASN.1 types an X.509 certificate
 * needs (RFC 5280), and a TLV walker used only to slice raw fields (the SubjectPublicKeyInfo,
 * extensions) out of DER that OpenSSL has already parsed and validated.
 *
 * Everything here works on Buffers and is pure. We never parse untrusted ASN.1 for meaning:
 * certificates are parsed by node's `X509Certificate`.
 */

/** ASN.1 universal tags and class bits used below. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

// ---------------------------------------------------------------------------------------------
// Encoder (X.690 §8, DER restrictions §10, §11)
// ---------------------------------------------------------------------------------------------

function encodeLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]); // X.690 §8.1.3.4 short form
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]); // §8.1.3.5 long form, minimal (§10.1)
}

/** Encodes one TLV with a single-byte tag. */
export function tlv(tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(content.length), content]);
}

/** SEQUENCE of already-encoded elements. */
export function sequence(...items: Uint8Array[]): Buffer {
  return tlv(TAG.SEQUENCE, Buffer.concat(items));
}

/** SET OF already-encoded elements, sorted as DER requires (X.690 §11.6). */
export function setOf(...items: Uint8Array[]): Buffer {
  const sorted = [...items].map((b) => Buffer.from(b)).sort(Buffer.compare);
  return tlv(TAG.SET, Buffer.concat(sorted));
}

/**
 * INTEGER from an unsigned big-endian magnitude (X.690 §8.3): leading zeros are stripped and a
 * 0x00 is prepended when the high bit is set, so the value stays positive.
 */
export function integerUnsigned(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let body = Buffer.from(magnitude.subarray(i));
  if (body.length === 0) body = Buffer.from([0]);
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return tlv(TAG.INTEGER, body);
}

/** INTEGER from a small non-negative JS number. */
export function integerSmall(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('integerSmall: non-negative integer required');
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return integerUnsigned(Buffer.from(bytes.length ? bytes : [0]));
}

/** OBJECT IDENTIFIER from dotted text, e.g. `"2.5.29.19"` (X.690 §8.19). */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((s) => {
    if (!/^\d+$/.test(s)) throw new TypeError(`oid: invalid arc in ${dotted}`);
    return Number(s);
  });
  if (arcs.length < 2 || arcs[0]! > 2 || (arcs[0]! < 2 && arcs[1]! >= 40)) {
    throw new TypeError(`oid: invalid object identifier ${dotted}`);
  }
  const out: number[] = [];
  const push = (v: number): void => {
    const chunk: number[] = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) chunk.unshift(0x80 | (x & 0x7f));
    out.push(...chunk);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return tlv(TAG.OID, Buffer.from(out));
}

/** NULL. */
export function nullValue(): Buffer {
  return Buffer.from([TAG.NULL, 0]);
}

/** BOOLEAN (DER: TRUE is 0xff, X.690 §11.1). */
export function boolean(v: boolean): Buffer {
  return Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0x00]);
}

/** OCTET STRING. */
export function octetString(content: Uint8Array): Buffer {
  return tlv(TAG.OCTET_STRING, content);
}

/** BIT STRING of whole bytes (0 unused bits). */
export function bitString(content: Uint8Array): Buffer {
  return tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), content]));
}

/**
 * A named-bit BIT STRING (e.g. KeyUsage): bit `i` is the i-th most significant bit. DER drops
 * trailing zero bits (X.690 §11.2.2).
 */
export function namedBitString(bits: readonly number[]): Buffer {
  if (bits.length === 0) return tlv(TAG.BIT_STRING, Buffer.from([0]));
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const b of bits) bytes[Math.floor(b / 8)]! |= 0x80 >> (b % 8);
  const unused = 7 - (highest % 8);
  return tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([unused]), bytes]));
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** A DirectoryString: PrintableString when the text allows it, otherwise UTF8String. */
export function directoryString(text: string): Buffer {
  return PRINTABLE.test(text) ? tlv(TAG.PRINTABLE_STRING, Buffer.from(text, 'ascii')) : tlv(TAG.UTF8_STRING, Buffer.from(text, 'utf8'));
}

/**
 * A certificate validity time (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` for 1950..2049,
 * GeneralizedTime `YYYYMMDDHHMMSSZ` otherwise. Fractions of a second are dropped.
 */
export function time(date: Date): Buffer {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new RangeError('time: invalid date');
  const y = date.getUTCFullYear();
  if (y < 0 || y > 9999) throw new RangeError('time: year out of range');
  const p2 = (n: number): string => String(n).padStart(2, '0');
  const rest =
    p2(date.getUTCMonth() + 1) + p2(date.getUTCDate()) + p2(date.getUTCHours()) + p2(date.getUTCMinutes()) + p2(date.getUTCSeconds()) + 'Z';
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(p2(y % 100) + rest, 'ascii'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(y).padStart(4, '0') + rest, 'ascii'));
}

/** `[n] EXPLICIT` wrapper (context-specific, constructed). */
export function explicit(n: number, content: Uint8Array): Buffer {
  return tlv(0xa0 | n, content);
}

/** `[n] IMPLICIT` primitive (context-specific, primitive), e.g. GeneralName dNSName. */
export function implicitPrimitive(n: number, content: Uint8Array): Buffer {
  return tlv(0x80 | n, content);
}

// ---------------------------------------------------------------------------------------------
// TLV walker (read-only, for slicing fields out of validated DER)
// ---------------------------------------------------------------------------------------------

/** One decoded TLV: its tag, its full encoding and its contents (views into the input). */
export interface Tlv {
  readonly tag: number;
  /** Tag, length and contents. */
  readonly raw: Buffer;
  /** Contents only. */
  readonly content: Buffer;
}

/**
 * Reads the TLV starting at `offset`. Only single-byte tags and definite lengths (all that DER
 * allows for the structures we read).
 *
 * @throws TypeError on malformed or truncated input.
 */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  if (offset + 2 > buf.length) throw new TypeError('der: truncated');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new TypeError('der: multi-byte tags are not supported');
  let len = buf[offset + 1]!;
  let pos = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new TypeError('der: unsupported length');
    if (pos + n > buf.length) throw new TypeError('der: truncated');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + i]!;
    pos += n;
  }
  if (pos + len > buf.length) throw new TypeError('der: truncated');
  return { tag, raw: buf.subarray(offset, pos + len), content: buf.subarray(pos, pos + len) };
}

/** Splits the contents of a constructed TLV into its elements. */
export function readChildren(content: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let off = 0; off < content.length;) {
    const t = readTlv(content, off);
    out.push(t);
    off += t.raw.length;
  }
  return out;
}

/** Decodes OBJECT IDENTIFIER contents to dotted text. */
export function decodeOid(content: Buffer): string {
  const arcs: number[] = [];
  let v = 0;
  for (const b of content) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    }
  }
  if (arcs.length === 0) throw new TypeError('der: empty object identifier');
  const first = arcs[0]!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}
