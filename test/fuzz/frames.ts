/**
 * Fuzz targets of the command framing (`src/protocol/frames.ts`, kms-wire.md §2.2).
 *
 * Properties:
 * - `parseFrames` on any bytes (random, or valid bodies with bit flips, truncations, rewritten
 *   length fields — zero, off by one, 2^31-1, 2^32-1 —, inserted and appended bytes) either
 *   returns frames that re-encode to exactly the body, or throws `ERR_EMPTY_REQUEST`,
 *   `ERR_MALFORMED_FRAME` or `ERR_TOO_MANY_FRAMES` — and the one that the body deserves, judged by
 *   an independent walk over the frame headers;
 * - `encodeFrames`/`encodeMessageFrames` round-trip through `parseFrames` and `decodeMessage`, with
 *   and without the Go-client padding, and a padded body is never 1001–1024 bytes long;
 * - `padResponseBody` returns any body outside 1001–1024 bytes untouched, pads every whole-frame
 *   body inside it with one unknown protobuf field (so the last message decodes unchanged), and
 *   refuses anything else with `ERR_MALFORMED_FRAME`.
 */
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import {
  FRAME_HEADER_SIZE,
  GO_CLIENT_BAD_BODY_MAX,
  GO_CLIENT_BAD_BODY_MIN,
  PADDING_FIELD_NUMBER,
  encodeFrame,
  encodeFrames,
  encodeMessageFrames,
  padResponseBody,
  parseFrames,
  type Frame,
} from '../../src/protocol/frames.js';
import { COMMANDS, commandByCode } from '../../src/protocol/commands.js';
import { Reader } from '../../src/protocol/pb.js';
import { decodeMessage, encodeMessage } from '../../src/protocol/schema.js';
import { attempt, check, expectKmsError, show, target, type FuzzTarget, type Outcomes } from '../helpers/fuzz.js';
import { mutate, mutationsArb } from './mutate.js';
import { messageArb, type AnySchema } from './schema-arb.js';

const CODES = COMMANDS.map((c) => c.code);
const codeArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...CODES) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);
const payloadArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 48 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 1100 }) },
);
const framesArb = fc.array(fc.record({ code: codeArb, payload: payloadArb }), { minLength: 1, maxLength: 6 });
const maxFramesArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom(10_000, 0x7fffffff) },
);

/** Independent walk over the headers: whole frames from the start, and whether the body ends right after one. */
function walk(body: Buffer): { whole: number; clean: boolean } {
  let pos = 0;
  let whole = 0;
  for (;;) {
    if (pos === body.length) return { whole, clean: true };
    if (body.length - pos < FRAME_HEADER_SIZE) return { whole, clean: false };
    const n = body.readUInt32BE(pos + 2);
    if (n > body.length - pos - FRAME_HEADER_SIZE) return { whole, clean: false };
    pos += FRAME_HEADER_SIZE + n;
    whole++;
  }
}

/** The properties of `parseFrames(body, maxFrames)` on any body. */
function checkParse(body: Buffer, maxFrames: number, outcomes: Outcomes): Frame[] | undefined {
  const r = attempt(() => parseFrames(body, maxFrames));
  const { whole, clean } = walk(body);
  if (r.ok) {
    const frames = r.value;
    outcomes.add('ok');
    check(body.length > 0, 'an empty body was accepted');
    check(clean && frames.length === whole, () => `accepted ${frames.length} frames, the headers say ${whole} (clean: ${clean})`);
    check(frames.length <= maxFrames, () => `${frames.length} frames accepted with maxFrames ${maxFrames}`);
    const again = Buffer.concat(frames.map((f) => encodeFrame(f.code, f.payload)));
    check(again.equals(body), 'the parsed frames do not re-encode to the body');
    return frames;
  }
  const code = expectKmsError(r.error, ['ERR_EMPTY_REQUEST', 'ERR_MALFORMED_FRAME', 'ERR_TOO_MANY_FRAMES']);
  outcomes.add(code);
  const why = () => `${code} for a body of ${body.length} bytes: ${whole} whole frames, clean ${clean}, maxFrames ${maxFrames}`;
  if (body.length === 0) check(code === 'ERR_EMPTY_REQUEST', why);
  else if (whole > maxFrames) check(code === 'ERR_TOO_MANY_FRAMES', why);
  else if (clean)
    check(false, why); // a whole-frame body within the limit must be accepted
  else if (whole < maxFrames) check(code === 'ERR_MALFORMED_FRAME', why);
  // whole === maxFrames and trailing garbage: either answer is right.
  else check(code === 'ERR_MALFORMED_FRAME' || code === 'ERR_TOO_MANY_FRAMES', why);
  return undefined;
}

/** Rewrites the length field of frame `index` (of a body built from `frames`). */
type LengthEdit = { index: number; kind: 'zero' | 'minus1' | 'plus1' | 'rest' | 'rest1' | 'i32max' | 'u32max' | 'random'; random: number };
const lengthEditArb: fc.Arbitrary<LengthEdit> = fc.record({
  index: fc.nat(),
  kind: fc.constantFrom('zero', 'minus1', 'plus1', 'rest', 'rest1', 'i32max', 'u32max', 'random'),
  random: fc.nat({ max: 0xffffffff }),
});

function applyLengthEdit(body: Buffer, frames: readonly { payload: Uint8Array }[], e: LengthEdit): void {
  const i = e.index % frames.length;
  let off = 0;
  for (let j = 0; j < i; j++) off += FRAME_HEADER_SIZE + frames[j]!.payload.length;
  const len = frames[i]!.payload.length;
  const rest = body.length - off - FRAME_HEADER_SIZE;
  const value = {
    zero: 0,
    minus1: Math.max(0, len - 1),
    plus1: len + 1,
    rest,
    rest1: rest + 1,
    i32max: 0x7fffffff,
    u32max: 0xffffffff,
    random: e.random,
  }[e.kind];
  body.writeUInt32BE(value >>> 0, off + 2);
}

/** Body sizes around the Go client's bad window (1001–1024 bytes). */
const nearWindowArb = fc.integer({ min: GO_CLIENT_BAD_BODY_MIN - 12, max: GO_CLIENT_BAD_BODY_MAX + 8 });

/** Frames of one code whose total length is about `total`. */
function framesNear(total: number, n: number, payloadByte: number): Uint8Array[] {
  const per = Math.max(0, Math.floor(total / n) - FRAME_HEADER_SIZE);
  const out = Array.from({ length: n }, () => new Uint8Array(per).fill(payloadByte));
  const used = n * (FRAME_HEADER_SIZE + per);
  if (total > used) out[n - 1] = new Uint8Array(per + (total - used)).fill(payloadByte);
  return out;
}

function checkPadded(original: Buffer, padded: Buffer): void {
  check(
    padded.length < GO_CLIENT_BAD_BODY_MIN || padded.length > GO_CLIENT_BAD_BODY_MAX,
    () => `padded body is ${padded.length} bytes, inside the Go client's bad window`,
  );
  if (original.length < GO_CLIENT_BAD_BODY_MIN || original.length > GO_CLIENT_BAD_BODY_MAX) {
    check(padded.equals(original), 'a body outside the window was changed');
    return;
  }
  const a = parseFrames(original, Number.MAX_SAFE_INTEGER);
  const b = parseFrames(padded, Number.MAX_SAFE_INTEGER);
  check(a.length === b.length, () => `padding changed the frame count ${a.length} → ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    check(a[i]!.code === b[i]!.code, 'padding changed a frame code');
    if (i < a.length - 1) check(a[i]!.payload.equals(b[i]!.payload), 'padding changed a frame other than the last');
  }
  const last = a[a.length - 1]!.payload;
  const plast = b[b.length - 1]!.payload;
  check(plast.subarray(0, last.length).equals(last), 'padding changed the last payload instead of appending to it');
  // What was appended is exactly one length-delimited field with the padding number.
  const extra = plast.subarray(last.length);
  const r = new Reader(extra);
  const tag = r.tag();
  check(tag >>> 3 === PADDING_FIELD_NUMBER && (tag & 7) === 2, () => `padding field has tag ${tag}`);
  r.skip(2);
  check(r.pos === extra.length, 'bytes after the padding field');
}

/** Commands with a response message (the bodies the padding is for). */
const RESPONSE_CODES = COMMANDS.filter((c) => c.response !== undefined).map((c) => c.code);
const responseSchema = (code: number): AnySchema => commandByCode(code)!.response!;

export const frameTargets: FuzzTarget[] = [
  target({
    name: 'frames.parse.bytes',
    arbitrary: fc.record({ body: fc.uint8Array({ maxLength: 256 }), maxFrames: maxFramesArb }),
    run: ({ body, maxFrames }, outcomes) => {
      checkParse(Buffer.from(body), maxFrames, outcomes);
    },
    quickRuns: 2000,
    weight: 10,
  }),

  target({
    name: 'frames.parse.mutated',
    arbitrary: fc.record({
      frames: framesArb,
      lengthEdits: fc.array(lengthEditArb, { maxLength: 2 }),
      mutations: fc.option(mutationsArb, { nil: undefined }),
      padding: fc.constantFrom('none', 'zeros', 'partial-header', 'empty-frame'),
      maxFrames: maxFramesArb,
    }),
    run: ({ frames, lengthEdits, mutations, padding, maxFrames }, outcomes) => {
      const valid = Buffer.concat(frames.map((f) => encodeFrame(f.code, f.payload)));
      let body: Buffer = Buffer.from(valid);
      for (const e of lengthEdits) applyLengthEdit(body, frames, e);
      if (mutations) body = mutate(body, mutations);
      if (padding === 'zeros') body = Buffer.concat([body, Buffer.alloc(7)]);
      else if (padding === 'partial-header') body = Buffer.concat([body, Buffer.from([0x00, 0xcf, 0x00])]);
      else if (padding === 'empty-frame') body = Buffer.concat([body, encodeFrame(0, Buffer.alloc(0))]);
      const parsed = checkParse(body, maxFrames, outcomes);
      if (parsed && body.equals(valid)) {
        check(
          parsed.length === frames.length && parsed.every((f, i) => f.code === frames[i]!.code && f.payload.equals(frames[i]!.payload)),
          'an unmodified body parsed to other frames',
        );
      }
    },
    quickRuns: 2000,
    weight: 12,
  }),

  target({
    name: 'frames.encode.roundtrip',
    arbitrary: fc.record({
      code: codeArb,
      payloads: fc.oneof(
        fc.array(payloadArb, { minLength: 1, maxLength: 6 }) as fc.Arbitrary<Uint8Array[]>,
        fc.tuple(nearWindowArb, fc.integer({ min: 1, max: 5 }), fc.nat({ max: 255 })).map(([t, n, b]) => framesNear(t, n, b)),
      ),
      pad: fc.boolean(),
    }),
    run: ({ code, payloads, pad }, outcomes) => {
      const plain = encodeFrames(code, payloads);
      const body = encodeFrames(code, payloads, { pad });
      outcomes.add(body.length === plain.length ? 'unpadded' : 'padded');
      if (pad) checkPadded(plain, body);
      else check(body.equals(plain), 'pad: false changed the body');
      check(plain.equals(Buffer.concat(payloads.map((p) => encodeFrame(code, p)))), 'encodeFrames differs from encodeFrame');
      const frames = parseFrames(plain, payloads.length);
      check(
        frames.length === payloads.length && frames.every((f, i) => f.code === code && f.payload.equals(payloads[i]!)),
        'encodeFrames → parseFrames is not the identity',
      );
    },
    quickRuns: 800,
    weight: 6,
  }),

  target({
    name: 'frames.encode.messages',
    // Batch responses of every response schema, sized around the Go client's bad window.
    arbitrary: fc.constantFrom(...RESPONSE_CODES).chain((code) =>
      fc.record({
        code: fc.constant(code),
        messages: fc.array(messageArb(responseSchema(code)), { minLength: 1, maxLength: 4 }),
        fill: fc.option(nearWindowArb, { nil: undefined }),
        pad: fc.boolean(),
      }),
    ),
    run: ({ code, messages: generated, fill, pad }, outcomes) => {
      const schema = responseSchema(code);
      const messages = [...generated];
      // Grow the first bytes field (if any) so that the body lands near the window.
      if (fill !== undefined) {
        const f = schema.fields.find((x) => x.type === 'bytes' && !x.repeated);
        if (f) {
          const others = encodeMessageFrames(code, schema, messages.slice(1)).length;
          const rest = { ...messages[0], [f.name]: Buffer.alloc(0) };
          const base = encodeMessageFrames(code, schema, [rest]).length;
          const want = fill - others - base - 3;
          if (want > 0) messages[0] = { ...rest, [f.name]: Buffer.alloc(want, 0x41) };
        }
      }
      const body = encodeMessageFrames(code, schema, messages, { pad });
      const viaPayloads = encodeFrames(
        code,
        messages.map((m) => encodeMessage(schema, m)),
        { pad },
      );
      check(body.equals(viaPayloads), 'encodeMessageFrames differs from encodeFrames of encodeMessage');
      const plain = encodeMessageFrames(code, schema, messages);
      if (pad) checkPadded(plain, body);
      outcomes.add(body.length !== plain.length ? 'padded' : 'unpadded');
      const frames = parseFrames(body, messages.length);
      check(frames.length === messages.length, 'frame count');
      frames.forEach((fr, i) => {
        const got = decodeMessage(schema, fr.payload);
        const want = decodeMessage(schema, encodeMessage(schema, messages[i]!));
        check(isDeepStrictEqual(got, want), () => `frame ${i} of ${schema.name} decodes to ${show(got)}, want ${show(want)}`);
      });
    },
    quickRuns: 200,
    weight: 3,
  }),

  target({
    name: 'frames.pad.body',
    arbitrary: fc.oneof(
      fc.uint8Array({ maxLength: 1100 }).map((b) => Buffer.from(b)),
      // Whole-frame bodies inside and around the window, possibly mutated.
      fc
        .tuple(nearWindowArb, fc.integer({ min: 1, max: 5 }), codeArb, fc.option(mutationsArb, { nil: undefined }))
        .map(([t, n, code, ms]) => {
          const body = encodeFrames(code, framesNear(t, n, 0x5a));
          return ms ? mutate(body, ms) : body;
        }),
    ),
    run: (body, outcomes) => {
      const r = attempt(() => padResponseBody(body));
      const inWindow = body.length >= GO_CLIENT_BAD_BODY_MIN && body.length <= GO_CLIENT_BAD_BODY_MAX;
      if (!r.ok) {
        outcomes.add(expectKmsError(r.error, ['ERR_MALFORMED_FRAME']));
        const w = walk(body);
        check(inWindow && !(w.clean && w.whole > 0), () => `refused a body of ${body.length} bytes (whole ${w.whole}, clean ${w.clean})`);
        return;
      }
      outcomes.add(inWindow ? 'padded' : 'untouched');
      if (!inWindow) check(r.value === body, 'a body outside the window was copied or changed');
      checkPadded(body, r.value);
    },
    quickRuns: 800,
    weight: 6,
  }),
];
