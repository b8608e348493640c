/**
 * The data path without any network: `node dist/bench/data-path.js`. Times `dispatch` (decode
 * the frames, authorize, run, encode the answer) for KEY:GENERATE / KEY:DECRYPT one by one and
 * in batches, and the cryptographic core alone, in µs per operation on one core. What the
 * HTTP server adds on top is what `npm run bench` measures against its ceiling.
 */
import { randomBytes } from 'node:crypto';
import { Kms } from '../src/kms/kms.js';
import { MemoryStore } from '../src/store/memory.js';
import { Barrier } from '../src/store/barrier.js';
import { generateApiKey } from '../src/identity/api-key.js';
import { dispatch, type ClusterOps } from '../src/server/dispatch.js';
import { DEFAULT_LIMITS } from '../src/config/config.js';
import { PreparedKey, decryptWithKey, encryptWithKey, openWithKey, sealWithKey } from '../src/crypto/ciphertext.js';
import { randomBytesPooled } from '../src/crypto/random.js';
import { isSdkCommandName } from '../src/protocol/commands.js';
import { decryptBodies, generateBody, minioContext, type Workload } from './workload.js';
import { parseFrames } from '../src/protocol/frames.js';
import { decodeMessage } from '../src/protocol/schema.js';
import * as M from '../src/protocol/messages.js';

const ENCLAVE = 'bench';
const KEY = 'minio-default-key';
const root = generateApiKey('k1').identity;
const user = generateApiKey('k1').identity;

const kms = await Kms.load(new MemoryStore([]), new Barrier(randomBytes(32), 'bench-cluster'), { rootIdentity: root });
const rootP = kms.principal(root, '');
await kms.createEnclave(root, ENCLAVE);
await kms.createKey(root, ENCLAVE, KEY, '', false);
await kms.createPolicy(root, ENCLAVE, 'minio', { 'KEY:GENERATE': ['*'], 'KEY:DECRYPT': ['*'] }, {}, isSdkCommandName);
await kms.createIdentity(kms.principal(root, ENCLAVE), ENCLAVE, { identity: user, privilege: 'User', serviceAccount: false, tags: {} });
await kms.assignPolicy(kms.principal(root, ENCLAVE), ENCLAVE, user, 'minio');
void rootP;
const cluster = {} as ClusterOps;

const ad = minioContext(0);
const w: Workload = { kind: 'generate', batch: 1, key: KEY, ad: ad.toString('base64') };
const gen100 = generateBody({ ...w, batch: 100 });
const cts: string[] = [];
for (const f of parseFrames(
  await dispatch({ kms, cluster, identity: user, enclave: ENCLAVE, body: gen100, maxFrames: DEFAULT_LIMITS.maxFrames }),
  1000,
)) {
  cts.push(decodeMessage(M.GenerateKeyResponseSchema, f.payload).ciphertext.toString('base64'));
}

/** Best of three rounds (the least disturbed by anything else on the machine). */
async function time(label: string, opsPerCall: number, fn: () => unknown): Promise<void> {
  const target = 100_000 / opsPerCall;
  for (let i = 0; i < target / 5; i++) await fn();
  let ns = Infinity;
  for (let round = 0; round < 3; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < target; i++) await fn();
    ns = Math.min(ns, Number(process.hrtime.bigint() - t0) / (target * opsPerCall));
  }
  console.log(
    `${label.padEnd(44)} ${(ns / 1000).toFixed(2).padStart(6)} µs/op  ${Math.round(1e9 / ns)
      .toString()
      .padStart(8)} ops/s`,
  );
}

const key = randomBytesPooled(32);
const dek = randomBytesPooled(32);
const ct = encryptWithKey('AES256', key, dek, ad);
await time('crypto: encryptWithKey AES256 32 B + AD', 1, () => encryptWithKey('AES256', key, randomBytesPooled(32), ad));
await time('crypto: decryptWithKey AES256 32 B + AD', 1, () => decryptWithKey('AES256', key, ct, ad));
const pk = new PreparedKey('AES256', key);
await time('crypto: sealWithKey (prepared) AES256 32 B + AD', 1, () => sealWithKey(pk, randomBytesPooled(32), ad));
await time('crypto: openWithKey (prepared) AES256 32 B + AD', 1, () => openWithKey(pk, ct, ad));
for (const batch of [1, 10, 100, 1000]) {
  const body = generateBody({ ...w, batch });
  await time(`dispatch KEY:GENERATE, batch ${batch}`, batch, () =>
    dispatch({ kms, cluster, identity: user, enclave: ENCLAVE, body: body, maxFrames: DEFAULT_LIMITS.maxFrames }),
  );
}
for (const batch of [1, 100]) {
  const bodies = decryptBodies({ ...w, kind: 'decrypt', batch, ciphertexts: cts }, 16);
  let i = 0;
  await time(`dispatch KEY:DECRYPT, batch ${batch}`, batch, () =>
    dispatch({ kms, cluster, identity: user, enclave: ENCLAVE, body: bodies[i++ % bodies.length]!, maxFrames: DEFAULT_LIMITS.maxFrames }),
  );
}
const body1 = generateBody(w);
await time('dispatch KEY:GENERATE, batch 1, as root (no policy)', 1, () =>
  dispatch({ kms, cluster, identity: root, enclave: ENCLAVE, body: body1, maxFrames: DEFAULT_LIMITS.maxFrames }),
);
