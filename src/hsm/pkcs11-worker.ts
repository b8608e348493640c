/**
 * The worker thread that owns a PKCS#11 module (one per module path and process, see
 * pkcs11.ts). PKCS#11 calls are synchronous and may block for as long as a network HSM takes
 * to answer or time out; here they block this thread only, never the server's event loop (its
 * health endpoints keep answering). Requests are handled strictly one after another, so a
 * session is never used by two calls at once.
 *
 * Protocol (structured clone): {@link WorkerRequest} in, {@link WorkerResponse} or
 * {@link WorkerNotice} out. Buffers holding key material are zeroed once posted.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadBinding, BindingError } from './pkcs11-api.js';
import { DeviceError, Pkcs11Device, Pkcs11Module, type DeviceConfig } from './pkcs11-device.js';

export type WorkerOp = 'seal' | 'unseal' | 'derive' | 'check' | 'probe' | 'close' | 'test:drop-session' | 'test:finalize' | 'test:block';

export interface WorkerRequest {
  id: number;
  op: WorkerOp;
  device: number;
  config: DeviceConfig;
  data?: Buffer;
  aad?: Buffer;
  label?: string;
  /** Tests only: a fixed IV for golden vectors. */
  iv?: Buffer;
  /** test:block only. */
  ms?: number;
}

export type WorkerResponse = { id: number; ok: true; value?: unknown } | { id: number; ok: false; message: string; permanent: boolean };
export interface WorkerNotice {
  notice: string;
  device: number;
}

export interface WorkerInit {
  module: string;
  /** The binding's package name (tests point it at a missing one). */
  binding: string;
}

const init = workerData as WorkerInit;
let module: Pkcs11Module | undefined;
const devices = new Map<number, Pkcs11Device>();

async function getModule(): Promise<Pkcs11Module> {
  if (!module) {
    let binding;
    try {
      binding = await loadBinding(init.binding);
    } catch (err) {
      // Installing the binding needs an operator (and a restart): permanent.
      throw new DeviceError((err as BindingError).message, true);
    }
    module = new Pkcs11Module(binding, init.module);
  }
  return module;
}

async function device(req: WorkerRequest): Promise<Pkcs11Device> {
  const m = await getModule();
  let d = devices.get(req.device);
  if (!d) {
    d = new Pkcs11Device(m, req.config, (notice) => parentPort!.postMessage({ notice, device: req.device } satisfies WorkerNotice));
    devices.set(req.device, d);
  }
  return d;
}

/** Messages carry Uint8Arrays (structured clone drops the Buffer prototype); the binding wants Buffers. */
function buf(u: Uint8Array | undefined): Buffer | undefined {
  return u === undefined ? undefined : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

async function handle(req: WorkerRequest): Promise<unknown> {
  req.data = buf(req.data);
  req.aad = buf(req.aad);
  req.iv = buf(req.iv);
  switch (req.op) {
    case 'seal': {
      const d = await device(req);
      try {
        return d.seal(req.data!, req.aad!, req.iv ? () => req.iv! : undefined);
      } finally {
        req.data!.fill(0);
      }
    }
    case 'unseal':
      return (await device(req)).unseal(req.data!, req.aad!);
    case 'derive':
      return (await device(req)).derive(req.label!);
    case 'check':
      return (await device(req)).check();
    case 'probe':
      return (await device(req)).probe();
    case 'close': {
      devices.get(req.device)?.close();
      devices.delete(req.device);
      if (devices.size === 0 && module) {
        // The last user: finalize, so that a later user starts from C_Initialize.
        module.close();
        module = undefined;
      }
      return undefined;
    }
    case 'test:drop-session':
      return devices.get(req.device)?.dropSession();
    case 'test:finalize':
      return module?.finalizeBehindTheDevicesBack();
    case 'test:block':
      // A module that hangs (a network HSM that does not answer): block this thread.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, req.ms ?? 0);
      return undefined;
  }
}

let queue: Promise<void> = Promise.resolve();

parentPort!.on('message', (req: WorkerRequest) => {
  queue = queue.then(async () => {
    let res: WorkerResponse;
    let secret: Buffer | undefined;
    try {
      const value = await handle(req);
      if (req.op === 'unseal' || req.op === 'derive') secret = value as Buffer;
      res = { id: req.id, ok: true, value };
    } catch (err) {
      const e = err instanceof DeviceError ? err : new DeviceError(String((err as Error)?.message ?? err).split('\n')[0]!, false);
      res = { id: req.id, ok: false, message: e.message, permanent: e.permanent };
    }
    parentPort!.postMessage(res); // copies the value
    secret?.fill(0);
  });
});
