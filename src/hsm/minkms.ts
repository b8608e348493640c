/**
 * An external KMS as HSM (the KMS chain, `hsm.minio.minkms` in the configuration): the REK is
 * sealed by a master key that never leaves a second, independent KMS, reached through our own
 * client SDK with failover across the listed servers.
 *
 *   seal   = KEY:ENCRYPT (latest version)      blob v1: 0x01 | key version (uint32 BE) | ciphertext
 *   unseal = KEY:DECRYPT with the recorded version, so entries sealed before a rotation of the
 *            external key still open
 *   derive = KEY:MAC under a pinned key version (deterministic while that version exists)
 *
 * The identity used needs only KEY:ENCRYPT, KEY:DECRYPT and KEY:MAC on the one key (a User
 * with a policy; no admin rights on the external KMS).
 */
import { KmsClient } from '../client/client.js';
import { TransportError } from '../client/transport.js';
import { isKmsError } from '../errors.js';
import type { MinkmsHsmConfig } from '../config/config.js';
import { readCaPath } from '../config/pem.js';
import { HsmError, type Hsm } from './hsm.js';

const BLOB_VERSION = 0x01;
const HEADER = 5;
/** Key version whose MAC derives keys (the root API key): version 1 must therefore be kept. */
export const DERIVE_VERSION = 1;

export function minkmsHsmName(enclave: string, key: string): string {
  return `hsm:minio:minkms:${enclave}/${key}`;
}

export class MinkmsHsm implements Hsm {
  readonly name: string;
  readonly #client: KmsClient;
  readonly #enclave: string;
  readonly #key: string;
  readonly #servers: string;

  /**
   * @param opts.ca trusted CA certificates when the configuration names none (`tls.ca`)
   * @param opts.timeoutMs bound of each call to the external KMS
   */
  constructor(cfg: MinkmsHsmConfig, opts: { ca?: string[]; timeoutMs?: number } = {}) {
    this.name = minkmsHsmName(cfg.enclave, cfg.key);
    this.#enclave = cfg.enclave;
    this.#key = cfg.key;
    this.#servers = cfg.server.join(', ');
    let ca = opts.ca;
    try {
      if (cfg.ca) ca = readCaPath(cfg.ca);
    } catch (err) {
      throw new Error(`hsm.minio.minkms.tls.ca: cannot read ${cfg.ca}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        cause: err,
      });
    }
    try {
      this.#client = new KmsClient({
        endpoints: cfg.server,
        apiKey: cfg.apiKey,
        ca,
        insecure: cfg.insecure,
        timeoutMs: opts.timeoutMs ?? 10_000,
      });
    } catch (err) {
      throw new Error(`hsm.minio.minkms.auth.key: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Translates SDK failures into HsmErrors that say what to fix. None is permanent: an operator can fix each one. */
  #fail(op: string, err: unknown): never {
    const where = `key '${this.#key}' in enclave '${this.#enclave}' on the external KMS (${this.#servers})`;
    let why: string;
    if (err instanceof TransportError) {
      const msg = err.message;
      why = /certificate|self[- ]signed|unable to verify|CERT_/i.test(msg)
        ? `cannot verify the external KMS's TLS certificate (${msg}); set hsm.minio.minkms.tls.ca to its CA`
        : `cannot reach the external KMS: ${msg}`;
    } else if (isKmsError(err)) {
      switch (err.code) {
        case 'ERR_NOT_ALLOWED':
          why = `access denied to ${where}: the API key in hsm.minio.minkms.auth.key was revoked or lacks KEY:ENCRYPT, KEY:DECRYPT and KEY:MAC`;
          break;
        case 'ERR_KEY_NOT_FOUND':
          why = `${where} does not exist`;
          break;
        case 'ERR_ENCLAVE_NOT_FOUND':
          why = `enclave '${this.#enclave}' does not exist on the external KMS`;
          break;
        case 'ERR_DECRYPT':
          why = `${where} cannot decrypt the sealed root key entry (was the key deleted and re-created?)`;
          break;
        case 'ERR_SEALED':
          why = `the external KMS (${this.#servers}) is sealed itself`;
          break;
        default:
          why = `the external KMS answered: ${err.message}`;
      }
    } else {
      why = `the external KMS answered: ${(err as Error).message}`;
    }
    throw new HsmError(`${this.name}: ${op}: ${why}`, false, { cause: err });
  }

  async seal(plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    let res;
    try {
      [res] = await this.#client.encrypt(this.#enclave, [{ name: this.#key, plaintext, associatedData: aad }]);
    } catch (err) {
      this.#fail('seal', err);
    }
    const header = Buffer.allocUnsafe(HEADER);
    header[0] = BLOB_VERSION;
    header.writeUInt32BE(res!.version, 1);
    return Buffer.concat([header, res!.ciphertext]);
  }

  async unseal(blob: Buffer, aad: Buffer): Promise<Buffer> {
    const version = blobVersion(blob);
    if (version === undefined) throw new HsmError(`${this.name}: unsupported sealed entry format`, true);
    try {
      const [res] = await this.#client.decrypt(this.#enclave, [
        { name: this.#key, version, ciphertext: blob.subarray(HEADER), associatedData: aad },
      ]);
      return res!.plaintext;
    } catch (err) {
      this.#fail('unseal', err);
    }
  }

  /** False when the entry was sealed under an older version of the external key. */
  async isCurrent(blob: Buffer): Promise<boolean> {
    const version = blobVersion(blob);
    try {
      // KEY:ENCRYPT reports the latest version and needs no permission beyond sealing.
      const [probe] = await this.#client.encrypt(this.#enclave, [
        { name: this.#key, plaintext: Buffer.alloc(0), associatedData: Buffer.from('minkms version probe') },
      ]);
      return probe!.version === version;
    } catch (err) {
      this.#fail('check key version', err);
    }
  }

  async deriveKey(label: string): Promise<Buffer> {
    try {
      const [res] = await this.#client.mac(this.#enclave, [
        { name: this.#key, version: DERIVE_VERSION, message: Buffer.from(`minkms derive v1:${label}`) },
      ]);
      return res!.mac.subarray(0, 32);
    } catch (err) {
      this.#fail('derive key', err);
    }
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

function blobVersion(blob: Buffer): number | undefined {
  return blob.length > HEADER && blob[0] === BLOB_VERSION ? blob.readUInt32BE(1) : undefined;
}
