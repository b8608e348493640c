/**
 * The HSMs a node is configured with, in priority order: the soft HSM (MINIO_KMS_HSM_KEY, or
 * a key generated into `DIR/hsm.key` on a first start without configuration), the PKCS#11
 * token of `hsm.pkcs11`, the external KMS of `hsm.minio.minkms`. Nothing here touches a device
 * or the network (the PKCS#11 binding loads at the first call, in its worker thread), so a
 * device or external KMS that is away at start leaves the node sealed, not failed. Built at start and again whenever the configuration's `hsm` section
 * changes while the node runs; an HSM whose settings did not change is kept as it is (its
 * connections and sessions stay open).
 */
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import type { Config, MinkmsHsmConfig, Pkcs11HsmConfig } from '../config/config.js';
import { readCaPath } from '../config/pem.js';
import type { Hsm } from './hsm.js';
import { MinkmsHsm } from './minkms.js';
import { Pkcs11Hsm } from './pkcs11.js';
import { SoftHsm, generateSoftHsmKey } from './soft.js';
import { loadLocalSoftHsmKey } from './local-key.js';

export const LOCAL_HSM_FILE = 'hsm.key';

export interface HsmSources {
  readonly config: Config;
  /** Value of MINIO_KMS_HSM_KEY, if set. */
  readonly softKey?: string;
  /** The data directory (for `hsm.key`). */
  readonly dir: string;
  /** The embedded database file `hsm.key` protects (whether it exists decides what a damaged key file means). */
  readonly database: string;
  /** May a soft HSM key be generated into `DIR/hsm.key` (first start without configuration)? */
  readonly generate: boolean;
  /** Keep a generated key in memory only (`--dev`). */
  readonly ephemeral: boolean;
  readonly warn: (msg: string) => void;
}

/** One configured HSM and the settings it was built from (to tell whether they changed). */
export interface ConfiguredHsm {
  readonly hsm: Hsm;
  readonly settings: string;
}

/** A configuration error that no retry can fix (the node refuses to start with it). */
export class HsmConfigError extends Error {
  override readonly name = 'HsmConfigError';
}

/**
 * The HSMs for `sources`, reusing those of `previous` whose settings are unchanged. HSMs of
 * `previous` that are not reused are the caller's to close.
 */
export function configuredHsms(sources: HsmSources, previous: readonly ConfiguredHsm[] = []): ConfiguredHsm[] {
  const out: ConfiguredHsm[] = [];
  const reuse = (settings: string, make: () => Hsm) => {
    const same = previous.find((p) => p.settings === settings);
    out.push(same ?? { hsm: make(), settings });
  };

  const soft = softKey(sources);
  if (soft !== undefined) reuse(`soft:${soft}`, () => softHsm(soft));
  const pkcs11 = sources.config.hsm.pkcs11;
  if (pkcs11) reuse(`pkcs11:${pkcs11Settings(pkcs11)}`, () => new Pkcs11Hsm(pkcs11, { warn: sources.warn }));
  const minkms = sources.config.hsm.minkms;
  if (minkms) reuse(`minkms:${JSON.stringify(minkms)}:${sources.config.tls.ca ?? ''}`, () => externalKms(minkms, sources.config));
  if (out.length === 0) {
    throw new HsmConfigError(
      'kms: no HSM provided (set MINIO_KMS_HSM_KEY, see `minkms --soft-hsm`, or configure hsm.pkcs11 or hsm.minio.minkms)',
    );
  }
  return out;
}

/** A soft HSM; a malformed key is a configuration error (exit status 2), never shown. */
function softHsm(key: string): Hsm {
  try {
    return new SoftHsm(key);
  } catch (err) {
    throw new HsmConfigError(`kms: MINIO_KMS_HSM_KEY: ${(err as Error).message} (see \`minkms --soft-hsm\`)`);
  }
}

/**
 * The soft HSM key: MINIO_KMS_HSM_KEY, else `DIR/hsm.key` (written atomically on a first start
 * without configuration; a damaged file is explained, hsm/local-key.ts), else none.
 */
function softKey(s: HsmSources): string | undefined {
  if (s.softKey) return s.softKey;
  if (s.ephemeral) return s.generate ? generateSoftHsmKey() : undefined;
  const create = s.generate && !s.config.hsm.minkms && !s.config.hsm.pkcs11;
  try {
    return loadLocalSoftHsmKey(join(s.dir, LOCAL_HSM_FILE), { create, database: s.database, warn: s.warn });
  } catch (err) {
    // A damaged key file needs an operator; a full disk (retried by a restart) does not.
    if ((err as Error).message.startsWith('kms:')) throw new HsmConfigError((err as Error).message);
    throw err;
  }
}

/** The settings of a PKCS#11 HSM, the PIN's source included (its value is never kept here). */
function pkcs11Settings(c: Pkcs11HsmConfig): string {
  return JSON.stringify([c.module, c.token, c.key, c.mechanism, c.timeout, Object.keys(c.pin), pinSource(c)]);
}

function pinSource(c: Pkcs11HsmConfig): string {
  const pin = c.pin as { file?: string; env?: string };
  return pin.file ?? pin.env ?? 'value';
}

/**
 * The external KMS of `hsm.minio.minkms`. Without its own `tls.ca`, its certificate is checked
 * against the system's roots plus the node's own `tls.ca`: one private CA for the whole
 * deployment is the common case.
 */
function externalKms(cfg: MinkmsHsmConfig, config: Config): Hsm {
  if (cfg.ca !== undefined || cfg.insecure || config.tls.ca === undefined) return new MinkmsHsm(cfg);
  let own: string[];
  try {
    own = readCaPath(config.tls.ca);
  } catch (err) {
    throw new HsmConfigError(`tls.ca: cannot read ${config.tls.ca}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return new MinkmsHsm(cfg, { ca: [...rootCertificates, ...own] });
}
