/**
 * The JSON of the KES API: request bodies read strictly, responses written the way the KES Go
 * client decodes them — byte strings as standard padded base64 (Go's `[]byte`), times as RFC
 * 3339, identities in KES's hex spelling. Field names are those of the KES server API docs.
 */
import { KmsError } from '../errors.js';
import { send, type Response } from '../server/http.js';
import { kesIdentityOf } from '../identity/kes.js';
import { isIdentity } from '../identity/identity.js';

/** A request body as a JSON object; an empty body is `{}` (the client sends `{}` for no fields). */
export function jsonObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new KmsError('ERR_BAD_REQUEST', 'the body is not JSON');
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new KmsError('ERR_BAD_REQUEST', 'the body must be a JSON object');
  return doc as Record<string, unknown>;
}

/** A request body as a JSON array of objects (bulk decryption), at most `max` of them. */
export function jsonArray(body: Buffer, max: number): Record<string, unknown>[] {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new KmsError('ERR_BAD_REQUEST', 'the body is not JSON');
  }
  if (!Array.isArray(doc)) throw new KmsError('ERR_BAD_REQUEST', 'the body must be a JSON array');
  if (doc.length > max) throw new KmsError('ERR_TOO_MANY_FRAMES', `at most ${max} ciphertexts`);
  for (const e of doc)
    if (e === null || typeof e !== 'object' || Array.isArray(e))
      throw new KmsError('ERR_BAD_REQUEST', 'each element must be a JSON object');
  return doc as Record<string, unknown>[];
}

/**
 * A base64 field (standard alphabet, padded — what Go writes for `[]byte`); absent or null is
 * empty unless `required`.
 */
export function bytesField(o: Record<string, unknown>, field: string, required = false): Buffer {
  const v = o[field];
  if (v === undefined || v === null) {
    if (required) throw new KmsError('ERR_BAD_REQUEST', `'${field}' is required`);
    return Buffer.alloc(0);
  }
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) {
    throw new KmsError('ERR_BAD_REQUEST', `'${field}' must be base64`);
  }
  const b = Buffer.from(v, 'base64');
  if (b.toString('base64') !== v) throw new KmsError('ERR_BAD_REQUEST', `'${field}' must be canonical base64`);
  return b;
}

/** An RFC 3339 time, or undefined for the zero time (KES omits unknown times). */
export function time(d: Date): string | undefined {
  return d.getTime() > 0 ? d.toISOString() : undefined;
}

/** An identity in KES's spelling; '' for none (anything that is no `h1:` identity as it is). */
export function kesId(identity: string): string {
  return isIdentity(identity) ? kesIdentityOf(identity) : identity;
}

/** A 200 JSON answer (undefined fields are left out, like Go's `omitempty`). */
export function sendJson(res: Response, value: unknown): void {
  send(res, 200, JSON.stringify(value), 'application/json');
}
