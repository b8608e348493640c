/**
 * Strict unpadded base64url (RFC 4648 §5, no `=` padding, §3.5 canonical encoding).
 *
 * Node's own decoder is lenient (it skips unknown characters, accepts padding and both
 * alphabets), so strictness is enforced by checking the alphabet and re-encoding.
 */

const BASE64URL_CHARS = /^[A-Za-z0-9_-]*$/;

/** Encodes bytes as unpadded base64url. */
export function encodeBase64Url(bytes: Uint8Array): string {
  return (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('base64url');
}

/**
 * Decodes canonical unpadded base64url.
 *
 * Returns `undefined` if `text` contains anything outside `[A-Za-z0-9_-]` (so no `=`, `+`, `/`,
 * whitespace), has an impossible length, or is not canonical (non-zero trailing bits, RFC 4648
 * §3.5) — i.e. unless re-encoding the result gives back exactly `text`.
 */
export function decodeBase64UrlStrict(text: string): Buffer | undefined {
  if (!BASE64URL_CHARS.test(text) || text.length % 4 === 1) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : undefined;
}
