/**
 * The soft HSM key a first start generates into `DIR/hsm.key` (convenient for trying minkms;
 * production moves it to MINIO_KMS_HSM_KEY or an external HSM).
 *
 * The file is written atomically (store/atomic-file.ts): a full disk or a crash during the
 * first start leaves no file rather than an empty one. A damaged file (empty, truncated, not a
 * key) found at start is reported with what to do: if the database does not exist yet the
 * first start never finished, so nothing is lost by generating a new key — this is done, with
 * a warning; otherwise the key may be the only way into the database and the node refuses to
 * start, naming the file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../store/atomic-file.js';
import { generateSoftHsmKey, parseSoftHsmKey } from './soft.js';

export interface LocalKeyOptions {
  /** Generate and store a key if there is none (first start of a single node). */
  create: boolean;
  /** The database file this key protects; "absent" means nothing can be lost by replacing the key. */
  database: string;
  warn: (msg: string) => void;
}

/**
 * The `hsm:aes256:…` text of the local key file, generated if allowed, or undefined if there
 * is none and none may be generated.
 * @throws Error naming the file and what to do, when the file is damaged and a database exists
 */
export function loadLocalSoftHsmKey(file: string, opts: LocalKeyOptions): string | undefined {
  if (existsSync(file)) {
    const text = readFileSync(file, 'utf8');
    try {
      parseSoftHsmKey(text);
      opts.warn(
        `using the soft HSM key stored in ${file}: anyone who can read the data directory can decrypt it; move it to MINIO_KMS_HSM_KEY for production`,
      );
      return text.trim();
    } catch {
      const what = text.trim() === '' ? `empty (${statSync(file).size} bytes)` : 'damaged (not an hsm:aes256: key)';
      if (existsSync(opts.database)) {
        throw new Error(
          `kms: the soft HSM key file ${file} is ${what}, probably from an interrupted start on a full disk. ` +
            `The database ${opts.database} can only be opened with its original key: restore ${file} from a backup ` +
            `(or set MINIO_KMS_HSM_KEY to the key), or, if the database holds nothing yet, delete both files and start again`,
        );
      }
      if (!opts.create) {
        throw new Error(`kms: the soft HSM key file ${file} is ${what}: delete it, or set MINIO_KMS_HSM_KEY`);
      }
      opts.warn(`the soft HSM key file ${file} is ${what} and there is no database yet (an interrupted first start): generating a new key`);
    }
  } else if (!opts.create) {
    return undefined;
  }
  const key = generateSoftHsmKey();
  writeFileAtomic(file, key + '\n', 0o600);
  opts.warn(`generated a soft HSM key and stored it in ${file}; move it to MINIO_KMS_HSM_KEY for production`);
  return key;
}
