/**
 * The protocol codec's hot paths alone, without crypto or dispatch: `node dist/bench/codec.js`.
 * Decodes KEY:GENERATE and KEY:DECRYPT requests as MinIO sends them and encodes their answers
 * straight into one body (`encodeMessageFrames`), as `dispatch` does, in ns per message.
 *
 * `--count N` runs each case N times and prints nothing else: for instruction counts, which a
 * busy machine does not disturb. The marginal cost is the difference of two counts:
 *
 * ```sh
 * for n in 100000 200000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
 *   node --single-threaded dist/bench/codec.js --case decode-generate --count $n 2>&1 | grep Collected; done
 * ```
 */
import { decodeMessage, encodeMessage } from '../src/protocol/schema.js';
import { encodeMessageFrames } from '../src/protocol/frames.js';
import * as M from '../src/protocol/messages.js';
import { minioContext } from './workload.js';

const ad = minioContext(0);
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
const generateRequest = encodeMessage(M.GenerateKeyRequestSchema, { name: 'minio-default-key', associatedData: ad, length: 32 });
const decryptRequest = encodeMessage(M.DecryptRequestSchema, {
  name: 'minio-default-key',
  version: 1,
  ciphertext: bytes(76, 1),
  associatedData: ad,
});
const generated = { version: 1, plaintext: bytes(32, 2), ciphertext: bytes(76, 3) };
const generated100 = new Array(100).fill(generated);
const decrypted = { plaintext: bytes(32, 4) };

/** Each case does `per` messages per call. */
const CASES: Record<string, { per: number; run: () => unknown }> = {
  'decode-generate': { per: 1, run: () => decodeMessage(M.GenerateKeyRequestSchema, generateRequest) },
  'decode-decrypt': { per: 1, run: () => decodeMessage(M.DecryptRequestSchema, decryptRequest) },
  'encode-generate': { per: 1, run: () => encodeMessageFrames(207, M.GenerateKeyResponseSchema, [generated], { pad: true }) },
  'encode-generate-100': { per: 100, run: () => encodeMessageFrames(207, M.GenerateKeyResponseSchema, generated100, { pad: true }) },
  'encode-decrypt': { per: 1, run: () => encodeMessageFrames(206, M.DecryptResponseSchema, [decrypted], { pad: true }) },
};

let sink: unknown;
const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const only = arg('--case');
const count = arg('--count');
const cases = Object.entries(CASES).filter(([name]) => only === undefined || name === only);
if (cases.length === 0) throw new Error(`no case ${only}; cases: ${Object.keys(CASES).join(', ')}`);

if (count !== undefined) {
  for (const [, c] of cases) for (let i = Number(count) / c.per; i > 0; i--) sink = c.run();
} else {
  for (const [name, c] of cases) {
    const calls = 1_000_000 / c.per;
    for (let i = 0; i < calls / 5; i++) sink = c.run();
    let ns = Infinity;
    for (let round = 0; round < 5; round++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < calls; i++) sink = c.run();
      ns = Math.min(ns, Number(process.hrtime.bigint() - t0) / (calls * c.per));
    }
    console.log(`${name.padEnd(24)} ${ns.toFixed(1).padStart(7)} ns/message`);
  }
}
void sink;
