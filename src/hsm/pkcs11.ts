/**
 * A PKCS#11 token as HSM (`hsm.pkcs11`): the REK is sealed and opened inside the device by an
 * AES-256 key that never leaves it; `deriveKey` is an HMAC-SHA256 (or AES-CMAC) inside the
 * device. Name: `hsm:pkcs11:<token>/<key>` (see {@link pkcs11HsmName}).
 *
 * The module runs in a worker thread (pkcs11-worker.ts), one per module path and process,
 * started at the first call and loading the `pkcs11js` binding then — never when PKCS#11 is not
 * configured. Calls queue there and run one at a time; each is bounded by `hsm.pkcs11.timeout`:
 * a module that does not answer in time fails the call (transient) and its worker is replaced.
 *
 * Errors are HsmErrors: permanent when an operator must act (wrong PIN, missing or extractable
 * key, binding or module not installed), transient when the device is away (token absent,
 * session or device lost, timeout) — the node then stays sealed and retries. Table in docs/hsm.md.
 */
import { SHARE_ENV, Worker } from 'node:worker_threads';
import type { Pkcs11HsmConfig } from '../config/config.js';
import { BINDING_PACKAGE } from './pkcs11-api.js';
import type { DeviceConfig, DeviceInfo } from './pkcs11-device.js';
import type { WorkerInit, WorkerNotice, WorkerOp, WorkerRequest, WorkerResponse } from './pkcs11-worker.js';
import { HsmError, type Hsm } from './hsm.js';

/** `hsm:pkcs11:<token label | serial:S | slot:N>/<key label | id:HEX>` — from the configuration, so it is known while the device is away. */
export function pkcs11HsmName(cfg: Pick<Pkcs11HsmConfig, 'token' | 'key'>): string {
  const t = cfg.token;
  const token = t.label ?? (t.serial !== undefined ? `serial:${t.serial}` : `slot:${t.slot}`);
  const key = cfg.key.label ?? `id:${cfg.key.id}`;
  return `hsm:pkcs11:${token}/${key}`;
}

export interface Pkcs11HsmOptions {
  /** Where warnings about the key go (e.g. an imported key); never receives secrets. */
  warn?: (msg: string) => void;
  /** Tests only: the binding's package name. */
  binding?: string;
  /** Tests only: a fixed IV for every seal (golden vectors). Never in production. */
  fixedIv?: Buffer;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  name: string;
}

/** The worker of one module path, shared by every Pkcs11Hsm of the process that uses it. */
class ModuleWorker {
  static readonly #all = new Map<string, ModuleWorker>();

  static acquire(init: WorkerInit): ModuleWorker {
    const key = `${init.module}\0${init.binding}`;
    let w = ModuleWorker.#all.get(key);
    if (!w) {
      w = new ModuleWorker(init, () => ModuleWorker.#all.delete(key));
      ModuleWorker.#all.set(key, w);
    }
    w.#refs++;
    return w;
  }

  readonly #init: WorkerInit;
  readonly #forget: () => void;
  #refs = 0;
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #warn = new Map<number, (msg: string) => void>();

  private constructor(init: WorkerInit, forget: () => void) {
    this.#init = init;
    this.#forget = forget;
  }

  onWarn(device: number, warn: (msg: string) => void): void {
    this.#warn.set(device, warn);
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    // No inherited execArgv: flags meant for the main script (--input-type, -e …) break a worker.
    const w = new Worker(new URL('./pkcs11-worker.js', import.meta.url), { workerData: this.#init, env: SHARE_ENV, execArgv: [] });
    w.on('message', (msg: WorkerResponse | WorkerNotice) => {
      if ('notice' in msg) return this.#warn.get(msg.device)?.(msg.notice);
      const p = this.#pending.get(msg.id);
      if (!p) return; // answered after its timeout
      this.#pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(new HsmError(`${p.name}: ${msg.message}`, msg.permanent));
    });
    w.on('error', (err) => this.#lost(w, `the PKCS#11 worker failed: ${err.message}`));
    w.on('exit', (code) => this.#lost(w, `the PKCS#11 worker exited (code ${code})`));
    // The worker must not keep a stopping process alive; pending calls hold their own timers.
    // (After the listeners: adding a 'message' listener refs the worker's port again.)
    w.unref();
    this.#worker = w;
    return w;
  }

  /** The worker died or was abandoned: every waiting call fails (transient); the next call starts a new one. */
  #lost(w: Worker, why: string): void {
    if (this.#worker !== w) return;
    this.#worker = undefined;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(new HsmError(`${p.name}: ${why}`, false));
    }
  }

  call<T>(name: string, req: Omit<WorkerRequest, 'id'>, timeoutMs: number): Promise<T> {
    const w = this.#start();
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // A module that hangs keeps its thread; abandon it (terminate) and start afresh next call.
        this.#lost(w, `the PKCS#11 module did not answer within ${timeoutMs / 1000} s (hsm.pkcs11.timeout)`);
        void w.terminate();
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, name });
      w.postMessage({ id, ...req } satisfies WorkerRequest);
    });
  }

  /** One user fewer; the last one stops the worker (after it finalized the module). */
  async release(device: number, name: string, config: DeviceConfig, timeoutMs: number): Promise<void> {
    this.#warn.delete(device);
    if (this.#worker) {
      await this.call(name, { op: 'close', device, config }, timeoutMs).catch(() => {});
    }
    if (--this.#refs > 0) return;
    this.#forget();
    const w = this.#worker;
    this.#worker = undefined;
    // The module is finalized already ('close' above). Not awaited: a thread stuck inside a
    // hung module would hold the node's shutdown for as long as the module hangs.
    if (w) void w.terminate();
  }
}

let nextDevice = 1;

/** A Buffer over the bytes a message carried (structured clone turns Buffers into Uint8Arrays); no copy. */
function view(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

export class Pkcs11Hsm implements Hsm {
  readonly name: string;
  readonly #config: DeviceConfig;
  readonly #timeoutMs: number;
  readonly #device = nextDevice++;
  readonly #worker: ModuleWorker;
  readonly #fixedIv: Buffer | undefined;
  #closed = false;

  constructor(cfg: Pkcs11HsmConfig, opts: Pkcs11HsmOptions = {}) {
    this.name = pkcs11HsmName(cfg);
    // Plain data for the worker; the PIN is only read (file, env) when a session is opened.
    const pin = 'value' in cfg.pin ? { value: cfg.pin.value.reveal() } : 'env' in cfg.pin ? { env: cfg.pin.env } : { file: cfg.pin.file };
    this.#config = { module: cfg.module, token: { ...cfg.token }, key: { ...cfg.key }, pin, mechanism: cfg.mechanism };
    this.#timeoutMs = cfg.timeout;
    this.#fixedIv = opts.fixedIv;
    this.#worker = ModuleWorker.acquire({ module: cfg.module, binding: opts.binding ?? BINDING_PACKAGE });
    const warn = opts.warn;
    if (warn) this.#worker.onWarn(this.#device, (msg) => warn(`${this.name}: ${msg}`));
  }

  #call<T>(op: WorkerOp, args: Partial<WorkerRequest> = {}): Promise<T> {
    if (this.#closed) return Promise.reject(new HsmError(`${this.name}: closed`, true));
    return this.#worker.call<T>(this.name, { ...args, op, device: this.#device, config: this.#config }, this.#timeoutMs);
  }

  async seal(plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    return view(await this.#call<Uint8Array>('seal', { data: plaintext, aad, iv: this.#fixedIv }));
  }

  async unseal(blob: Buffer, aad: Buffer): Promise<Buffer> {
    return view(await this.#call<Uint8Array>('unseal', { data: blob, aad }));
  }

  async deriveKey(label: string): Promise<Buffer> {
    return view(await this.#call<Uint8Array>('derive', { label }));
  }

  /** The session is open (re-opened if lost). */
  async health(): Promise<void> {
    await this.#call('probe');
  }

  /** Opens the key, verifies its attributes and a round trip; what `minkms hsm pkcs11 check` prints. */
  check(): Promise<DeviceInfo> {
    return this.#call<DeviceInfo>('check');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#worker.release(this.#device, this.name, this.#config, this.#timeoutMs);
  }

  /** Hooks for tests that break the device under the HSM; not used by the server. */
  readonly testHooks = {
    /** C_CloseSession on the current session, without the device knowing. */
    dropSession: () => this.#call<void>('test:drop-session'),
    /** C_Finalize of the module, without the devices knowing. */
    finalizeModule: () => this.#call<void>('test:finalize'),
    /** Blocks the module's thread for `ms`, like a device that does not answer. */
    block: (ms: number) => this.#call<void>('test:block', { ms }),
  };
}
