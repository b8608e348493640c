/**
 * Byte-level mutations of valid encodings, shared by the frame, protobuf and identity fuzzers.
 * Valid inputs with a few mutations reach much deeper into a parser than random bytes, which
 * mostly fail at the first byte.
 *
 * Positions are drawn as plain integers and taken modulo the length at the time the mutation
 * is applied, so that any mutation list applies to any input (and shrinks independently of it).
 */
import fc from 'fast-check';

export type Mutation =
  | { readonly kind: 'flip'; readonly pos: number; readonly bit: number }
  | { readonly kind: 'set'; readonly pos: number; readonly value: number }
  | { readonly kind: 'truncate'; readonly pos: number }
  | { readonly kind: 'insert'; readonly pos: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly pos: number; readonly len: number }
  | { readonly kind: 'duplicate'; readonly pos: number; readonly len: number }
  | { readonly kind: 'append'; readonly bytes: Uint8Array };

/** Bytes that matter to varint, length and tag decoding. */
const interestingByte = fc.oneof(
  fc.constantFrom(0x00, 0x01, 0x02, 0x07, 0x08, 0x0a, 0x7f, 0x80, 0x81, 0xff, 0xfe, 0x12, 0x1a, 0x22),
  fc.integer({ min: 0, max: 255 }),
);

const pos = fc.nat();

/**
 * Any Unicode code point except lone surrogates, biased to the UTF-8 length boundaries. (Not
 * fast-check's `unit: 'binary'`: building that one costs ~2 s of CPU per process.)
 */
export const unicodeChar: fc.Arbitrary<string> = fc
  .oneof(
    { weight: 1, arbitrary: fc.constantFrom(0, 0x7f, 0x80, 0x7ff, 0x800, 0xfffd, 0xffff, 0x10000, 0x10ffff) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 0x7f }) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 0xd7ff }) },
    { weight: 2, arbitrary: fc.integer({ min: 0xe000, max: 0x10ffff }) },
  )
  .map((cp) => String.fromCodePoint(cp));

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), pos, bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('set' as const), pos, value: interestingByte }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), pos }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('insert' as const), pos, bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), pos, len: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), pos, len: fc.integer({ min: 1, max: 32 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
);

export const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

/** Applies mutations in order to a copy of `input`. */
export function mutate(input: Uint8Array, mutations: readonly Mutation[]): Buffer {
  let buf = Buffer.from(input);
  for (const m of mutations) {
    const n = buf.length;
    switch (m.kind) {
      case 'flip':
        if (n > 0) buf[m.pos % n]! ^= 1 << m.bit;
        break;
      case 'set':
        if (n > 0) buf[m.pos % n] = m.value;
        break;
      case 'truncate':
        buf = buf.subarray(0, m.pos % (n + 1));
        break;
      case 'insert': {
        const p = m.pos % (n + 1);
        buf = Buffer.concat([buf.subarray(0, p), m.bytes, buf.subarray(p)]);
        break;
      }
      case 'delete': {
        const p = m.pos % (n + 1);
        buf = Buffer.concat([buf.subarray(0, p), buf.subarray(p + m.len)]);
        break;
      }
      case 'duplicate': {
        const p = m.pos % (n + 1);
        const piece = buf.subarray(p, p + m.len);
        buf = Buffer.concat([buf.subarray(0, p), piece, piece, buf.subarray(p + piece.length)]);
        break;
      }
      case 'append':
        buf = Buffer.concat([buf, m.bytes]);
        break;
    }
  }
  return buf;
}

/** Mutations of text: character-level edits (for API keys, identities, YAML). */
export type TextMutation =
  | { readonly kind: 'replace'; readonly pos: number; readonly ch: string }
  | { readonly kind: 'insert'; readonly pos: number; readonly text: string }
  | { readonly kind: 'delete'; readonly pos: number; readonly len: number }
  | { readonly kind: 'truncate'; readonly pos: number }
  | { readonly kind: 'case'; readonly pos: number };

export function textMutationArb(alphabet: fc.Arbitrary<string>): fc.Arbitrary<TextMutation> {
  return fc.oneof(
    fc.record({ kind: fc.constant('replace' as const), pos, ch: alphabet }),
    fc.record({ kind: fc.constant('insert' as const), pos, text: fc.string({ unit: alphabet, minLength: 1, maxLength: 4 }) }),
    fc.record({ kind: fc.constant('delete' as const), pos, len: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ kind: fc.constant('truncate' as const), pos }),
    fc.record({ kind: fc.constant('case' as const), pos }),
  );
}

export function mutateText(input: string, mutations: readonly TextMutation[]): string {
  let s = input;
  for (const m of mutations) {
    const n = s.length;
    const p = m.pos % (n + 1);
    switch (m.kind) {
      case 'replace':
        if (n > 0) s = s.slice(0, m.pos % n) + m.ch + s.slice((m.pos % n) + 1);
        break;
      case 'insert':
        s = s.slice(0, p) + m.text + s.slice(p);
        break;
      case 'delete':
        s = s.slice(0, p) + s.slice(p + m.len);
        break;
      case 'truncate':
        s = s.slice(0, p);
        break;
      case 'case':
        if (n > 0) {
          const i = m.pos % n;
          const c = s[i]!;
          s = s.slice(0, i) + (c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()) + s.slice(i + 1);
        }
        break;
    }
  }
  return s;
}
