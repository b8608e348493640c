/**
 * Data-path cryptography on the other CPU cores: the per-message work of a large KEY:GENERATE /
 * KEY:ENCRYPT / KEY:DECRYPT batch (derive the message key, AEAD seal or open; `ciphertext.ts`)
 * runs in worker threads while the main thread goes on serving HTTP, decoding and encoding.
 * Nothing else leaves the main thread: the domain state, authorization, HTTP, audit and
 * metrics stay where they are, so there is no cache to keep coherent.
 *
 * A job is one batch, packed into one ArrayBuffer that is transferred (not copied) to a
 * thread and zeroed there after use; the answer comes back the same way and is zeroed by the
 * caller once the response is encoded ({@link PoolResult.wipe}). Only the master key versions
 * a batch names travel with it (32 bytes each); the threads keep no key material between jobs.
 *
 * Wire format of a job (all integers big-endian):
 * ```
 * u8 op (1 generate, 2 encrypt, 3 decrypt) | u8 keys | keys × (u8 type, 32-byte key)
 * u32 items | items × (u8 key index, u32 n, u32 adLength, [n data bytes unless generate], ad)
 * ```
 * `n` is the DEK length (generate) or the data length. The answer is `i32 failed item (-1 =
 * none)` then per item: DEK || ciphertext (generate), ciphertext (encrypt), plaintext (decrypt).
 */
import { Worker } from 'node:worker_threads';
import { KmsError } from '../errors.js';
import { CIPHERTEXT_OVERHEAD, MASTER_KEY_LENGTH, type KeyType } from './ciphertext.js';

export const OP_GENERATE = 1;
export const OP_ENCRYPT = 2;
export const OP_DECRYPT = 3;

/** A master key version as the pool needs it. */
export interface PoolKey {
  readonly type: KeyType;
  readonly key: Buffer;
}

export interface GenerateItem {
  key: PoolKey;
  length: number;
  ad: Uint8Array;
}

export interface DataItem {
  key: PoolKey;
  /** Plaintext (encrypt) or ciphertext (decrypt). */
  data: Uint8Array;
  ad: Uint8Array;
}

/** Results are views into one buffer: call `wipe` once they are no longer needed. */
export interface PoolResult<T> {
  values: T[];
  wipe(): void;
}

interface Pending {
  resolve(buf: ArrayBuffer): void;
  reject(err: unknown): void;
}

/** A thread that has had no job for this long ends (and is started again when needed). */
const IDLE_MS = 30_000;

class Thread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  #idle: NodeJS.Timeout | undefined;
  #gone = false;

  constructor(onGone: (t: Thread) => void) {
    this.worker = new Worker(new URL('./pool-worker.js', import.meta.url));
    this.worker.unref(); // never keeps the process alive
    this.worker.on('message', (m: { id: number; buf: ArrayBuffer }) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      p?.resolve(m.buf);
      if (this.pending.size === 0) this.#idle = setTimeout(() => void this.end(), IDLE_MS).unref();
    });
    const fail = (err: unknown) => {
      if (!this.#gone) onGone(this);
      this.#gone = true;
      clearTimeout(this.#idle);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`crypto thread exited (${code})`)));
  }

  post(id: number, job: Pending, buf: ArrayBuffer): void {
    clearTimeout(this.#idle);
    this.pending.set(id, job);
    this.worker.postMessage({ id, buf }, [buf]);
  }

  async end(): Promise<void> {
    await this.worker.terminate();
  }
}

let nextId = 1;

export class CryptoPool {
  /** Number of threads (0: none; the caller does the work itself). */
  readonly size: number;
  /** Batches of fewer frames are not worth a thread hop. */
  readonly minBatch: number;
  #threads: Thread[] = [];
  #next = 0;
  #closed = false;

  constructor(size: number, minBatch = 8) {
    this.size = Math.max(0, Math.floor(size));
    this.minBatch = minBatch;
  }

  /** Whether a batch of `frames` frames should go to a thread. */
  worth(frames: number): boolean {
    return this.size > 0 && !this.#closed && frames >= this.minBatch;
  }

  #thread(): Thread {
    if (this.#threads.length < this.size) {
      const t = new Thread((gone) => {
        this.#threads = this.#threads.filter((x) => x !== gone);
      });
      this.#threads.push(t);
      return t;
    }
    // The thread with the fewest jobs in flight (round robin among equals).
    let best = this.#threads[this.#next++ % this.#threads.length]!;
    for (const t of this.#threads) if (t.pending.size < best.pending.size) best = t;
    return best;
  }

  #run(job: Uint8Array): Promise<ArrayBuffer> {
    if (this.#closed) return Promise.reject(new Error('crypto pool closed'));
    const t = this.#thread();
    const id = nextId++;
    return new Promise((resolve, reject) => t.post(id, { resolve, reject }, job.buffer as ArrayBuffer));
  }

  /** KEY:GENERATE: a random DEK of `length` bytes per item, sealed under its key. */
  async generate(items: readonly GenerateItem[]): Promise<PoolResult<{ plaintext: Buffer; ciphertext: Buffer }>> {
    const out = new Uint8Array(await this.#run(pack(OP_GENERATE, items, (i) => i.length, undefined)));
    let pos = checkAnswer(out);
    const values = items.map((it) => {
      const plaintext = Buffer.from(out.buffer, out.byteOffset + pos, it.length);
      const ciphertext = Buffer.from(out.buffer, out.byteOffset + pos + it.length, it.length + CIPHERTEXT_OVERHEAD);
      pos += 2 * it.length + CIPHERTEXT_OVERHEAD;
      return { plaintext, ciphertext };
    });
    return { values, wipe: () => out.fill(0) };
  }

  /** KEY:ENCRYPT: each plaintext sealed under its key. */
  async encrypt(items: readonly DataItem[]): Promise<PoolResult<Buffer>> {
    const out = new Uint8Array(
      await this.#run(
        pack(
          OP_ENCRYPT,
          items,
          (i) => i.data.length,
          (i) => i.data,
        ),
      ),
    );
    let pos = checkAnswer(out);
    const values = items.map((it) => {
      const n = it.data.length + CIPHERTEXT_OVERHEAD;
      const ct = Buffer.from(out.buffer, out.byteOffset + pos, n);
      pos += n;
      return ct;
    });
    return { values, wipe: () => out.fill(0) };
  }

  /**
   * KEY:DECRYPT: each ciphertext opened with its key.
   * @throws KmsError `ERR_DECRYPT` if any item does not authenticate (with `failedItem` set)
   */
  async decrypt(items: readonly DataItem[]): Promise<PoolResult<Buffer>> {
    for (const it of items) if (it.data.length < CIPHERTEXT_OVERHEAD) throw new KmsError('ERR_DECRYPT');
    const out = new Uint8Array(
      await this.#run(
        pack(
          OP_DECRYPT,
          items,
          (i) => i.data.length,
          (i) => i.data,
        ),
      ),
    );
    let pos = checkAnswer(out);
    const values = items.map((it) => {
      const n = it.data.length - CIPHERTEXT_OVERHEAD;
      const pt = Buffer.from(out.buffer, out.byteOffset + pos, n);
      pos += n;
      return pt;
    });
    return { values, wipe: () => out.fill(0) };
  }

  /** Stops the threads; later jobs are refused (callers then work on their own thread). */
  async close(): Promise<void> {
    this.#closed = true;
    const threads = this.#threads;
    this.#threads = [];
    await Promise.all(threads.map((t) => t.end()));
  }
}

/** The answer's header: throws ERR_DECRYPT for a failed item; returns where the values start. */
function checkAnswer(out: Uint8Array): number {
  const failed = new DataView(out.buffer, out.byteOffset, 4).getInt32(0);
  if (failed >= 0) {
    out.fill(0);
    throw Object.assign(new KmsError('ERR_DECRYPT'), { failedItem: failed });
  }
  return 4;
}

function pack<T extends { key: PoolKey; ad: Uint8Array }>(
  op: number,
  items: readonly T[],
  n: (i: T) => number,
  data: ((i: T) => Uint8Array) | undefined,
): Uint8Array {
  const keys: PoolKey[] = [];
  const index = new Map<Buffer, number>();
  let size = 2 + 4;
  for (const it of items) {
    if (!index.has(it.key.key)) {
      if (keys.length === 255) throw new RangeError('too many keys in one batch');
      index.set(it.key.key, keys.length);
      keys.push(it.key);
      size += 1 + MASTER_KEY_LENGTH;
    }
    size += 9 + (data ? n(it) : 0) + it.ad.length;
  }
  const buf = new Uint8Array(new ArrayBuffer(size));
  const view = new DataView(buf.buffer);
  let pos = 0;
  buf[pos++] = op;
  buf[pos++] = keys.length;
  for (const k of keys) {
    buf[pos++] = k.type === 'AES256' ? 0 : 1;
    buf.set(k.key, pos);
    pos += MASTER_KEY_LENGTH;
  }
  view.setUint32(pos, items.length);
  pos += 4;
  for (const it of items) {
    buf[pos] = index.get(it.key.key)!;
    view.setUint32(pos + 1, n(it));
    view.setUint32(pos + 5, it.ad.length);
    pos += 9;
    if (data) {
      const d = data(it);
      buf.set(d, pos);
      pos += d.length;
    }
    buf.set(it.ad, pos);
    pos += it.ad.length;
  }
  return buf;
}
