/**
 * Errors on the KES API: the catalogue's errors, spelled the way the KES client compares them.
 * Three differ from the MinKMS spelling (status or message); every other error — `key does not
 * exist` 404, `policy does not exist`, `identity does not exist`, `enclave does not exist` — is
 * the same text on both APIs.
 */
import { KmsError, isKmsError, type ErrorCode } from '../errors.js';

const KES_SPELLING: Partial<Record<ErrorCode, ErrorCode>> = {
  ERR_NOT_ALLOWED: 'ERR_KES_NOT_ALLOWED',
  // A retired root API key is refused on the KES API like any other unknown caller: the KES
  // client knows only its own 403.
  ERR_ROOT_KEY_RETIRED: 'ERR_KES_NOT_ALLOWED',
  ERR_KEY_EXISTS: 'ERR_KES_KEY_EXISTS',
  ERR_DECRYPT: 'ERR_KES_DECRYPT',
};

/** `err` as the KES API answers it (anything that is not a KmsError stays as it is: a 500). */
export function kesError(err: unknown): unknown {
  if (!isKmsError(err)) return err;
  const code = KES_SPELLING[err.code];
  return code === undefined ? err : new KmsError(code);
}
