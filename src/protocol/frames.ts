/**
 * Command framing of `POST /v1/kms/{enclave}` request and response bodies (`kms-wire.md`
 * §2.2): a body is one or more frames back to back, each
 *
 * ```
 * offset 0  uint16 big-endian   command code
 * offset 2  uint32 big-endian   N = payload length
 * offset 6  N bytes             protobuf message
 * ```
 *
 * Includes the Go-client workaround of §2.2 rule 4: response bodies of 1001–1024 bytes make the
 * Go SDK panic, so {@link encodeFrames}/{@link encodeMessageFrames} with `pad: true` (and
 * {@link padResponseBody}) grow such bodies to ≥ 1025 bytes by appending an unknown,
 * length-delimited protobuf field (number {@link PADDING_FIELD_NUMBER}) to the last frame's
 * payload. Decoders ignore unknown fields, so the padded payload decodes to the same message.
 */

import { KmsError } from '../errors.js';
import { Writer } from './pb.js';
import { encodeMessageTo, type MessageInit, type MessageSchema } from './schema.js';

/** Size of a frame header (code + length). */
export const FRAME_HEADER_SIZE = 6;

/** Response body lengths the Go client cannot read (inclusive bounds). */
export const GO_CLIENT_BAD_BODY_MIN = 1001;
export const GO_CLIENT_BAD_BODY_MAX = 1024;

/** Field number of the padding field: the largest number with a two-byte key (2^11 - 1). */
export const PADDING_FIELD_NUMBER = 2047;
const PADDING_KEY_0 = (((PADDING_FIELD_NUMBER << 3) | 2) & 0x7f) | 0x80; // low 7 bits, continuation
const PADDING_KEY_1 = ((PADDING_FIELD_NUMBER << 3) | 2) >>> 7;
/** Smallest padding: key (2 bytes) + length byte 0. */
const PADDING_MIN = 3;

/** A parsed frame. `payload` aliases the parsed body (no copy). */
export interface Frame {
  code: number;
  payload: Buffer;
}

/** Options of the frame encoders. */
export interface EncodeFramesOptions {
  /**
   * Apply the Go-client workaround: a body of 1001–1024 bytes is padded to ≥ 1025 bytes.
   * Use it for every command response body. Default false.
   */
  pad?: boolean;
}

/**
 * Number of bytes the padding field adds to a body of `bodyLength` bytes: 0 when the length
 * is fine, else 3–24 (at least enough to reach 1025).
 */
export function paddingFor(bodyLength: number): number {
  if (bodyLength < GO_CLIENT_BAD_BODY_MIN || bodyLength > GO_CLIENT_BAD_BODY_MAX) return 0;
  return Math.max(PADDING_MIN, GO_CLIENT_BAD_BODY_MAX + 1 - bodyLength);
}

/** Writes a padding field of `size` (≥ 3, ≤ 130) bytes at `pos`. */
function writePadding(buf: Buffer, pos: number, size: number): void {
  const n = size - PADDING_MIN;
  buf[pos] = PADDING_KEY_0;
  buf[pos + 1] = PADDING_KEY_1;
  buf[pos + 2] = n;
  buf.fill(0, pos + 3, pos + 3 + n);
}

function checkCode(code: number): void {
  if (!Number.isInteger(code) || code < 0 || code > 0xffff) throw new RangeError(`invalid command code ${code}`);
}

/** Encodes one frame. */
export function encodeFrame(code: number, payload: Uint8Array): Buffer {
  checkCode(code);
  const out = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length);
  out.writeUInt16BE(code, 0);
  out.writeUInt32BE(payload.length, 2);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/**
 * Encodes several frames with the same code into one buffer (one allocation). With
 * `pad: true` the Go-client workaround is applied (see the module doc). An empty `payloads`
 * gives an empty body.
 */
export function encodeFrames(code: number, payloads: readonly Uint8Array[], options?: EncodeFramesOptions): Buffer {
  checkCode(code);
  let total = 0;
  for (const p of payloads) total += FRAME_HEADER_SIZE + p.length;
  const pad = options?.pad && payloads.length > 0 ? paddingFor(total) : 0;
  const out = Buffer.allocUnsafe(total + pad);
  let pos = 0;
  const last = payloads.length - 1;
  for (let i = 0; i <= last; i++) {
    const p = payloads[i]!;
    out.writeUInt16BE(code, pos);
    out.writeUInt32BE(i === last ? p.length + pad : p.length, pos + 2);
    out.set(p, pos + FRAME_HEADER_SIZE);
    pos += FRAME_HEADER_SIZE + p.length;
  }
  if (pad !== 0) writePadding(out, pos, pad);
  return out;
}

const frameWriter = new Writer(4096);

/**
 * Encodes one frame per message straight into one buffer (no intermediate payload buffers):
 * the hot path for batch responses. Options as {@link encodeFrames}.
 */
export function encodeMessageFrames<T>(
  code: number,
  schema: MessageSchema<T>,
  messages: readonly MessageInit<T>[],
  options?: EncodeFramesOptions,
): Buffer {
  checkCode(code);
  const w = frameWriter.reset();
  try {
    let lastHeader = -1;
    for (const m of messages) {
      w.ensure(FRAME_HEADER_SIZE);
      lastHeader = w.pos;
      w.buf.writeUInt16BE(code, lastHeader);
      w.pos += FRAME_HEADER_SIZE;
      encodeMessageTo(w, schema, m);
      w.buf.writeUInt32BE(w.pos - lastHeader - FRAME_HEADER_SIZE, lastHeader + 2);
    }
    const pad = options?.pad && lastHeader >= 0 ? paddingFor(w.pos) : 0;
    if (pad !== 0) {
      w.ensure(pad);
      writePadding(w.buf, w.pos, pad);
      w.pos += pad;
      w.buf.writeUInt32BE(w.pos - lastHeader - FRAME_HEADER_SIZE, lastHeader + 2);
    }
    return w.copy();
  } finally {
    w.wipe();
    if (w.buf.length > 1 << 20) w.buf = Buffer.allocUnsafe(4096);
  }
}

/**
 * Applies the Go-client workaround to an already encoded body: returns `body` itself when its
 * length is outside 1001–1024, else a padded copy (the last frame's payload grows by an unknown
 * field and its length is fixed). Throws `KmsError('ERR_MALFORMED_FRAME')` if `body` is not a
 * sequence of whole frames.
 */
export function padResponseBody(body: Buffer): Buffer {
  const pad = paddingFor(body.length);
  if (pad === 0) return body;
  const last = lastFrameOffset(body);
  const out = Buffer.allocUnsafe(body.length + pad);
  body.copy(out, 0);
  writePadding(out, body.length, pad);
  out.writeUInt32BE(body.readUInt32BE(last + 2) + pad, last + 2);
  return out;
}

function lastFrameOffset(body: Buffer): number {
  let pos = 0;
  let last = -1;
  while (pos < body.length) {
    if (body.length - pos < FRAME_HEADER_SIZE) throw new KmsError('ERR_MALFORMED_FRAME', 'truncated frame header');
    const n = body.readUInt32BE(pos + 2);
    if (n > body.length - pos - FRAME_HEADER_SIZE) throw new KmsError('ERR_MALFORMED_FRAME', 'truncated frame payload');
    last = pos;
    pos += FRAME_HEADER_SIZE + n;
  }
  if (last < 0) throw new KmsError('ERR_MALFORMED_FRAME', 'no frame');
  return last;
}

/**
 * Splits a body into frames. Payloads alias `body`.
 *
 * @throws KmsError `ERR_EMPTY_REQUEST` for an empty body; `ERR_MALFORMED_FRAME` for a truncated
 *   header or payload; `ERR_TOO_MANY_FRAMES` for more than `maxFrames` frames.
 */
export function parseFrames(body: Uint8Array, maxFrames: number): Frame[] {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const len = buf.length;
  if (len === 0) throw new KmsError('ERR_EMPTY_REQUEST');
  const frames: Frame[] = [];
  let pos = 0;
  while (pos < len) {
    if (frames.length >= maxFrames) throw new KmsError('ERR_TOO_MANY_FRAMES');
    if (len - pos < FRAME_HEADER_SIZE) throw new KmsError('ERR_MALFORMED_FRAME', 'truncated frame header');
    const code = buf.readUInt16BE(pos);
    const n = buf.readUInt32BE(pos + 2);
    const start = pos + FRAME_HEADER_SIZE;
    if (n > len - start) throw new KmsError('ERR_MALFORMED_FRAME', 'truncated frame payload');
    frames.push({ code, payload: buf.subarray(start, start + n) });
    pos = start + n;
  }
  return frames;
}
