/**
 * KES in the tests: ciphertexts in every format KES has written, made here from the formats'
 * documentation (independently of src/crypto: own HChaCha20 from draft-irtf-cfrg-xchacha-03
 * §2.2, Node's AES-GCM, ChaCha20-Poly1305 and HMAC), a KES filesystem keystore, and raw requests
 * to the KES API with a client certificate.
 *
 * | format | layout | per-message key |
 * |---|---|---|
 * | binary, AES256 key | `ct‖tag ‖ iv(16) ‖ nonce(12)` | HMAC-SHA256(key, iv), AES-256-GCM |
 * | binary, ChaCha20 key | same | HChaCha20(key, iv), ChaCha20-Poly1305 |
 * | JSON | `{"aead", "id"?, "iv", "nonce", "bytes": ct‖tag}` (base64) | by `aead`, as above |
 */
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import * as https from 'node:https';
import { certificateForApiKey, parseApiKey } from '../../src/identity/index.js';
import type { TestServer } from './server.js';

const rotl = (v: number, n: number) => ((v << n) | (v >>> (32 - n))) >>> 0;

/** HChaCha20(key, 16-byte input) → 32-byte subkey (draft-irtf-cfrg-xchacha-03 §2.2). */
export function hchacha20Reference(key: Uint8Array, input: Uint8Array): Buffer {
  const s = new Uint32Array(16);
  s.set([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
  const k = Buffer.from(key);
  const n = Buffer.from(input);
  for (let i = 0; i < 8; i++) s[4 + i] = k.readUInt32LE(4 * i);
  for (let i = 0; i < 4; i++) s[12 + i] = n.readUInt32LE(4 * i);
  const qr = (a: number, b: number, c: number, d: number) => {
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 16);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 12);
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 8);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 7);
  };
  for (let i = 0; i < 10; i++) {
    qr(0, 4, 8, 12);
    qr(1, 5, 9, 13);
    qr(2, 6, 10, 14);
    qr(3, 7, 11, 15);
    qr(0, 5, 10, 15);
    qr(1, 6, 11, 12);
    qr(2, 7, 8, 13);
    qr(3, 4, 9, 14);
  }
  const out = Buffer.alloc(32);
  [0, 1, 2, 3, 12, 13, 14, 15].forEach((w, i) => out.writeUInt32LE(s[w]!, 4 * i));
  return out;
}

export type KesAlgorithm = 'AES256' | 'ChaCha20';

/** Seals like KES: returns `ct‖tag`, iv and nonce. `direct`: AES-256-GCM under the key itself. */
function seal(alg: KesAlgorithm, key: Uint8Array, plaintext: Uint8Array, context: Uint8Array, direct = false) {
  const iv = randomBytes(16);
  const nonce = randomBytes(12);
  const sealingKey = direct
    ? Buffer.from(key)
    : alg === 'AES256'
      ? createHmac('sha256', key).update(iv).digest()
      : hchacha20Reference(key, iv);
  const c =
    alg === 'AES256'
      ? createCipheriv('aes-256-gcm', sealingKey, nonce, { authTagLength: 16 })
      : createCipheriv('chacha20-poly1305', sealingKey, nonce, { authTagLength: 16 });
  c.setAAD(context, { plaintextLength: plaintext.length });
  const bytes = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return { bytes, iv, nonce };
}

/** KES's binary format (the later releases). */
export function kesBinary(alg: KesAlgorithm, key: Uint8Array, plaintext: Uint8Array, context: Uint8Array = Buffer.alloc(0)): Buffer {
  const { bytes, iv, nonce } = seal(alg, key, plaintext, context);
  return Buffer.concat([bytes, iv, nonce]);
}

/**
 * KES's JSON format (the older releases), with one of the `aead` names KES wrote:
 * `AES-256-GCM-HMAC-SHA-256`, `ChaCha20Poly1305`, `AES-256-GCM` (the earliest docs; sealed under
 * the key itself when `direct`); with a key `id` when `withId`.
 */
export function kesJson(
  aead: 'AES-256-GCM-HMAC-SHA-256' | 'ChaCha20Poly1305' | 'AES-256-GCM',
  key: Uint8Array,
  plaintext: Uint8Array,
  context: Uint8Array = Buffer.alloc(0),
  opts: { withId?: boolean; direct?: boolean } = {},
): Buffer {
  const { bytes, iv, nonce } = seal(aead === 'ChaCha20Poly1305' ? 'ChaCha20' : 'AES256', key, plaintext, context, opts.direct);
  const doc: Record<string, string> = { aead };
  if (opts.withId) doc.id = randomBytes(16).toString('hex');
  Object.assign(doc, { iv: iv.toString('base64'), nonce: nonce.toString('base64'), bytes: bytes.toString('base64') });
  return Buffer.from(JSON.stringify(doc));
}

/** What MinIO's MinKMS connector sends for a JSON ciphertext: `bytes ‖ iv ‖ nonce`, the algorithm dropped. */
export function jsonToBinary(json: Buffer): Buffer {
  const d = JSON.parse(json.toString()) as { iv: string; nonce: string; bytes: string };
  return Buffer.concat([Buffer.from(d.bytes, 'base64'), Buffer.from(d.iv, 'base64'), Buffer.from(d.nonce, 'base64')]);
}

export interface KesResponse {
  status: number;
  contentType: string;
  body: Buffer;
  /** The body as JSON (undefined if it is not). */
  json: unknown;
}

/** One request to the KES API (HTTP/1.1, like curl) with the client certificate of `apiKey` (none: anonymous). */
export function kesRequest(
  server: TestServer,
  apiKey: string | undefined,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<KesResponse> {
  const pem = apiKey ? certificateForApiKey(parseApiKey(apiKey)) : undefined;
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path, ca: server.caPem, cert: pem?.cert, key: pem?.key, headers, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const b = Buffer.concat(chunks);
          let json: unknown;
          try {
            json = JSON.parse(b.toString('utf8'));
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: b, json });
        });
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.end(body);
  });
}
