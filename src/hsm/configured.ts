/**
 * Builds every HSM a node is configured with — the one place that knows the HSM kinds. The
 * composition root calls {@link createHsms} once at start; nothing here touches a device or
 * the network (the PKCS#11 binding loads at the first call, in its worker thread), so a device
 * or external KMS that is away at start leaves the node sealed, not failed.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import type { Hsm } from './hsm.js';
import { MinkmsHsm } from './minkms.js';
import { Pkcs11Hsm } from './pkcs11.js';
import { SoftHsm, generateSoftHsmKey } from './soft.js';

/** Where the soft HSM key of a first start without any HSM is kept (`DIR/hsm.key`). */
export const LOCAL_HSM_FILE = 'hsm.key';

/** What, besides the configuration file, decides the HSMs. */
export interface HsmEnvironment {
  /** MINIO_KMS_HSM_KEY (`hsm:aes256:…`), if set. */
  hsmKey?: string;
  /** `--dev`: an ephemeral node; a soft key is generated and kept in memory only. */
  dev: boolean;
  /** A configuration file was given (then no soft key is ever generated). */
  configured: boolean;
  /** The data directory has no database yet (and the store is not a shared cluster). */
  fresh: boolean;
}

/** The warnings sink (the server's logger fits). */
export interface HsmLog {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * The HSMs, in priority order (unsealing tries them in this order; the first derives the root
 * API key when `admin.identity` is not configured): the soft HSM from MINIO_KMS_HSM_KEY (or
 * `DIR/hsm.key`), the PKCS#11 token of `hsm.pkcs11`, the external KMS of `hsm.minio.minkms`.
 * Without any, a new unconfigured database gets a generated soft HSM key stored in
 * `DIR/hsm.key` (convenient for a first start; production moves it to MINIO_KMS_HSM_KEY or
 * another HSM).
 *
 * @throws Error when no HSM is configured and none may be generated (a configuration error).
 */
export function createHsms(config: Config, env: HsmEnvironment, dataDir: string, log: HsmLog): Hsm[] {
  const hsms: Hsm[] = [];
  const local = join(dataDir, LOCAL_HSM_FILE);
  if (env.hsmKey) {
    hsms.push(new SoftHsm(env.hsmKey));
  } else if (existsSync(local)) {
    log.warn(
      `using the soft HSM key stored in ${local}: anyone who can read the data directory can decrypt it; move it to MINIO_KMS_HSM_KEY for production`,
    );
    hsms.push(new SoftHsm(readFileSync(local, 'utf8')));
  }
  if (config.hsm.pkcs11) hsms.push(new Pkcs11Hsm(config.hsm.pkcs11, { warn: (msg) => log.warn(msg) }));
  if (config.hsm.minkms) hsms.push(new MinkmsHsm(config.hsm.minkms));
  if (hsms.length === 0 && (env.dev || (env.fresh && !env.configured))) {
    const key = generateSoftHsmKey();
    if (!env.dev) {
      writeFileSync(local, key + '\n', { mode: 0o600 });
      log.warn(`generated a soft HSM key and stored it in ${local}; move it to MINIO_KMS_HSM_KEY for production`);
    }
    hsms.push(new SoftHsm(key));
  }
  if (hsms.length === 0) {
    throw new Error('kms: no HSM provided (set MINIO_KMS_HSM_KEY, see `minkms --soft-hsm`, or configure hsm.pkcs11 or hsm.minio.minkms)');
  }
  return hsms;
}
