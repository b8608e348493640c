/**
 * Instructions per seal/open of the hot-path crypto, counted with callgrind (instruction counts
 * do not depend on what else the machine runs, unlike time):
 *
 *   node dist/bench/crypto-cost.js --count            # runs callgrind twice per operation, prints Ir/op
 *   node dist/bench/crypto-cost.js seal 5000          # one run: 20 000 warm-up seals, then 5000 more
 *
 * With `--count`, every operation runs under `valgrind --tool=callgrind` twice, with 0 and with
 * N iterations (CRYPTO_COST_N, default 50 000) after the same 20 000 warm-up iterations; the
 * difference ÷ N is the
 * cost of one operation, with start-up, warm-up and JIT compilation (finished during the long
 * warm-up) cancelled out. Garbage collection of what an operation allocates is included, as it
 * should be. Run-to-run noise is about ±1 000 instructions per operation with N = 50 000 (where
 * a garbage collection lands); compare repeated runs before trusting a smaller difference.
 * Callgrind counts all threads and cannot execute SHA-NI, so SHA-256 runs OpenSSL's AVX2 code.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCipheriv } from 'node:crypto';
import { PreparedKey, decryptWithKey, encryptWithKey, openWithKey, sealWithKey } from '../src/crypto/ciphertext.js';
import { randomBytesPooled } from '../src/crypto/random.js';
import { minioContext } from './workload.js';

const OPS: Record<string, () => () => unknown> = {
  /** The loop alone: subtract it from the others. */
  empty: () => () => undefined,
  /** KEY:GENERATE's crypto: a fresh 32-byte data key sealed under a prepared master key. */
  seal: () => {
    const pk = new PreparedKey('AES256', randomBytesPooled(32));
    const ad = minioContext(0);
    return () => sealWithKey(pk, randomBytesPooled(32), ad);
  },
  /** KEY:DECRYPT's crypto. */
  open: () => {
    const pk = new PreparedKey('AES256', randomBytesPooled(32));
    const ad = minioContext(0);
    const ct = sealWithKey(pk, randomBytesPooled(32), ad);
    return () => openWithKey(pk, ct, ad);
  },
  /** The unprepared public functions (KEY:ENCRYPT of the barrier, tests). */
  encrypt: () => {
    const key = randomBytesPooled(32);
    const ad = minioContext(0);
    return () => encryptWithKey('AES256', key, randomBytesPooled(32), ad);
  },
  decrypt: () => {
    const key = randomBytesPooled(32);
    const ad = minioContext(0);
    const ct = encryptWithKey('AES256', key, randomBytesPooled(32), ad);
    return () => decryptWithKey('AES256', key, ct, ad);
  },
  /** The per-message key derivation alone. */
  msgkey: () => {
    const pk = new PreparedKey('AES256', randomBytesPooled(32));
    const iv = randomBytesPooled(16);
    return () => pk.messageKey(iv).fill(0);
  },
  /** One AES-256-GCM seal through node:crypto alone (no derivation). */
  gcm: () => {
    const key = randomBytesPooled(32);
    const nonce = randomBytesPooled(12);
    const ad = minioContext(0);
    const pt = randomBytesPooled(32);
    return () => {
      const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
      c.setAAD(ad);
      c.update(pt);
      c.final();
      return c.getAuthTag();
    };
  },
};

const WARMUP = 20_000;

function run(op: string, n: number): void {
  const make = OPS[op];
  if (make === undefined) throw new Error(`unknown operation ${op} (${Object.keys(OPS).join(', ')})`);
  const fn = make();
  let sink: unknown;
  for (let i = 0; i < WARMUP; i++) sink = fn();
  for (let i = 0; i < n; i++) sink = fn();
  if (sink === null) console.log(sink);
}

function irOf(op: string, n: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'minkms-callgrind-'));
  try {
    const out = join(dir, 'cg.out');
    const r = spawnSync(
      'valgrind',
      ['--tool=callgrind', `--callgrind-out-file=${out}`, process.execPath, fileURLToPath(import.meta.url), op, String(n)],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    if (r.error) throw new Error(`valgrind: ${r.error.message} (apt-get install valgrind)`);
    if (r.status !== 0) throw new Error(`valgrind exited ${r.status}: ${r.stderr.slice(-2000)}`);
    const m = /^summary:\s+(\d+)/m.exec(readFileSync(out, 'utf8')) ?? /^totals:\s+(\d+)/m.exec(readFileSync(out, 'utf8'));
    if (!m) throw new Error('no instruction total in the callgrind output');
    return Number(m[1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
if (args[0] === '--count') {
  const ops = args.length > 1 ? args.slice(1) : ['empty', 'seal', 'open', 'msgkey', 'gcm'];
  const n1 = 0;
  const n2 = Number(process.env.CRYPTO_COST_N ?? 50_000);
  for (const op of ops) {
    const a = irOf(op, n1);
    const b = irOf(op, n2);
    console.log(
      `${op.padEnd(8)} ${Math.round((b - a) / (n2 - n1))
        .toString()
        .padStart(8)} instructions/op`,
    );
  }
} else {
  run(args[0] ?? 'seal', Number(args[1] ?? 10000));
}
