/**
 * Key material a KES deployment can hand over, read for `minkms import-kes` (then imported with
 * KEY:IMPORT, one key each):
 *
 * - **KES's filesystem keystore** (`keystore.fs.path` of a KES config): a directory with one
 *   file per key, named like the key. A file holds the key as KES wrote it over the years:
 *   JSON `{"bytes": b64, "algorithm": "AES256" | "ChaCha20" | …, "created_at", "created_by"}`,
 *   or the older `{"bytes": b64}` without an algorithm (such keys sealed with AES or ChaCha20
 *   depending on the CPU; an imported key opens both, see kms/kms.ts).
 * - **A JSON list** for every other keystore (Vault, a cloud KMS, …): `{"NAME": "b64", …}`, or
 *   `{"NAME": {"bytes": b64, "algorithm": …}, …}` — what an export script writes.
 *
 * A key is 32 bytes. What cannot be imported (a hidden file, a name minkms cannot have, a value
 * of another shape) is reported with the reason, never silently dropped.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyType } from '../crypto/ciphertext.js';

export interface KesKey {
  readonly name: string;
  readonly type: KeyType;
  /** 32 bytes. Secret: zero it after use. */
  readonly key: Buffer;
}

export interface KesKeystore {
  readonly keys: KesKey[];
  /** Entries not imported, with why. */
  readonly skipped: { name: string; why: string }[];
}

/** Names a key may have here (kms/names.ts). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** Largest keystore file read (a key is a few hundred bytes of JSON). */
const MAX_FILE = 64 << 10;

/** KES's algorithm names over its releases; '' or none: AES256 (see the module doc). */
export function kesKeyType(alg: unknown): KeyType | undefined {
  switch (alg ?? '') {
    case '':
    case 'AES256':
    case 'AES256-GCM_SHA256':
    case 'AES-256-GCM-HMAC-SHA-256':
      return 'AES256';
    case 'ChaCha20':
    case 'XCHACHA20-POLY1305':
    case 'ChaCha20Poly1305':
      return 'ChaCha20';
    default:
      return undefined;
  }
}

function base64Key(v: unknown): Buffer | undefined {
  if (typeof v !== 'string') return undefined;
  const t = v.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(t)) return undefined;
  const b = Buffer.from(t, 'base64');
  return b.length === 32 ? b : undefined;
}

/** One key from its stored value (JSON object, base64 text, or the raw 32 bytes); a reason if not. */
export function parseKesKey(name: string, value: unknown): KesKey | string {
  if (!NAME.test(name)) return 'not a key name minkms accepts (1-128 characters of A-Z a-z 0-9 . _ : -)';
  if (Buffer.isBuffer(value)) {
    if (value.length === 32) return { name, type: 'AES256', key: Buffer.from(value) };
    const text = value.toString('utf8').trim();
    if (!text.startsWith('{')) return parseKesKey(name, text);
    try {
      value = JSON.parse(text);
    } catch {
      return 'neither JSON nor a 32-byte key';
    }
  }
  if (typeof value === 'string') {
    const key = base64Key(value);
    return key ? { name, type: 'AES256', key } : 'not base64 of 32 bytes';
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'neither a base64 key nor {"bytes": …}';
  const o = value as Record<string, unknown>;
  const key = base64Key(o.bytes ?? o.key);
  if (!key) return '"bytes" is not base64 of 32 bytes';
  const type = kesKeyType(o.algorithm ?? o.cipher);
  if (!type) {
    key.fill(0);
    return `unknown algorithm '${String(o.algorithm ?? o.cipher).slice(0, 40)}'`;
  }
  return { name, type, key };
}

/** Reads a KES filesystem keystore (a directory) or a JSON list (a file). */
export function readKesKeystore(path: string): KesKeystore {
  const out: KesKeystore = { keys: [], skipped: [] };
  const add = (name: string, value: unknown) => {
    const k = parseKesKey(name, value);
    if (typeof k === 'string') out.skipped.push({ name, why: k });
    else out.keys.push(k);
  };
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      // KES writes a key to a hidden temporary file first, then renames it.
      if (entry.name.startsWith('.')) continue;
      if (!entry.isFile()) {
        out.skipped.push({ name: entry.name, why: 'not a regular file' });
        continue;
      }
      const file = join(path, entry.name);
      if (statSync(file).size > MAX_FILE) {
        out.skipped.push({ name: entry.name, why: `larger than ${MAX_FILE} bytes: no key` });
        continue;
      }
      const data = readFileSync(file);
      try {
        add(entry.name, data);
      } finally {
        data.fill(0);
      }
    }
    return out;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path} is neither a KES keystore directory nor a JSON file: ${(err as Error).message}`, { cause: err });
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new Error(`${path}: expected a JSON object {"NAME": "BASE64 KEY", …}`);
  for (const [name, value] of Object.entries(doc)) add(name, value);
  return out;
}
