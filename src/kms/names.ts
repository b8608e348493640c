/**
 * Names of enclaves, keys and policies: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`, starting
 * with a letter or digit. The set is narrow on purpose: names are storage path segments and URL
 * path segments (`/v1/kms/{enclave}`), so `/`, `*`, whitespace and dot-only names are excluded.
 */
import { KmsError } from '../errors.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function isValidName(name: string): boolean {
  return NAME.test(name);
}

/** @throws KmsError ERR_INVALID_NAME */
export function checkName(kind: 'enclave' | 'key' | 'policy', name: string): void {
  if (!NAME.test(name)) {
    throw new KmsError('ERR_INVALID_NAME', `${kind} name must be 1-128 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit`);
  }
}

/** Identity tags: at most 32, key 1-64 and value 0-256 characters of `A-Z a-z 0-9 . _ - /`. */
const TAG_KEY = /^[A-Za-z0-9._\-/]{1,64}$/;
const TAG_VALUE = /^[A-Za-z0-9._\-/]{0,256}$/;
export const MAX_TAGS = 32;

/** @throws KmsError ERR_INVALID_TAG */
export function checkTags(tags: Record<string, string>): void {
  const keys = Object.keys(tags);
  if (keys.length > MAX_TAGS) throw new KmsError('ERR_INVALID_TAG', `at most ${MAX_TAGS} tags per identity`);
  for (const k of keys) {
    if (!TAG_KEY.test(k)) throw new KmsError('ERR_INVALID_TAG', 'tag keys must be 1-64 characters of A-Z a-z 0-9 . _ - /');
    if (!TAG_VALUE.test(tags[k]!))
      throw new KmsError('ERR_INVALID_TAG', 'tag values must be at most 256 characters of A-Z a-z 0-9 . _ - /');
  }
}
