/**
 * What each served KES API does, in terms of the domain (kms/kms.ts) — the same calls, keys and
 * ciphertexts as the command channel, so that both APIs see one state:
 *
 * - a KES key is a minkms key of the KES enclave; KES knows no versions, so data operations use
 *   the latest version and decryption tries every version (like MinIO's KEY:DECRYPT without a
 *   version), `describe` shows the latest version and `delete` removes all of them;
 * - `generate` and `encrypt` seal in the binary format both APIs share (crypto/ciphertext.ts),
 *   `decrypt` also reads KES's older JSON format (crypto/kes-json.ts);
 * - a KES "admin" is a SysAdmin or an Admin of the enclave; a KES policy is the identity's
 *   command policy, shown as KES paths (kes/policy.ts).
 */
import { availableParallelism, cpus } from 'node:os';
import { KmsError } from '../errors.js';
import { PRIVILEGE } from '../kms/records.js';
import type { IdentityInfo } from '../kms/kms.js';
import { send, type RequestContext } from '../server/http.js';
import { VERSION } from '../version.js';
import type { KesCaller } from './access.js';
import { identityParam } from './access.js';
import { KES_APIS } from './apis.js';
import { bytesField, jsonArray, jsonObject, kesId, sendJson, time } from './json.js';
import { continueToken, pageOf, parseListParam } from './list.js';
import { toKesPolicy } from './policy.js';
import { kesKeyType } from './keystore.js';
import { MAX_PAGE } from '../kms/pagination.js';

/** KES data keys are 256 bits. */
const DEK_LENGTH = 32;
/** Most ciphertexts of one bulk decryption. */
export const MAX_BULK = 1000;

export type KesHandler = (ctx: RequestContext, c: KesCaller) => void | Promise<void>;

/** 200 with no body: what KES answers for a successful change. */
function ok(ctx: RequestContext): void {
  send(ctx.res, 200, '', 'text/plain');
}

/** Sends a JSON answer holding secrets, then zeroes them (the JSON text cannot be; it is short-lived). */
function sendSecret(ctx: RequestContext, value: unknown, secrets: Buffer[]): void {
  try {
    sendJson(ctx.res, value);
  } finally {
    for (const s of secrets) s.fill(0);
  }
}

const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');

/** KES's key algorithm names (KeyAlgorithm text), and the spellings older KES wrote. */
function keyType(v: unknown): string {
  const t = kesKeyType(v === null ? undefined : v);
  if (!t) throw new KmsError('ERR_INVALID_KEY_TYPE', 'must be AES256 or ChaCha20');
  return t;
}

const isAdmin = (i: IdentityInfo) => i.privilege === PRIVILEGE.SysAdmin || i.privilege === PRIVILEGE.Admin;

/** What a User may list: names its policy allows `command` on (Admins see everything). */
function visible(c: KesCaller, command: string): ((name: string) => boolean) | undefined {
  return c.principal.admin ? undefined : (name) => c.kms.allowed(c.principal, command, name);
}

/** Go's names of this platform (runtime.GOOS / GOARCH), which KES reports. */
const GOOS: Record<string, string> = { win32: 'windows' };
const GOARCH: Record<string, string> = { x64: 'amd64', ia32: '386' };

export const HANDLERS: Readonly<Record<string, KesHandler>> = {
  // ---------------------------------------------------------------- server
  '/v1/status': ({ res }, _c) => {
    sendJson(res, {
      version: VERSION,
      os: GOOS[process.platform] ?? process.platform,
      arch: GOARCH[process.arch] ?? process.arch,
      uptime: Math.floor(process.uptime()),
      num_cpu: cpus().length,
      num_cpu_used: availableParallelism(),
      mem_heap_used: process.memoryUsage().heapUsed,
    });
  },

  // ---------------------------------------------------------------- keys
  '/v1/key/create/': async (ctx, c) => {
    await c.kms.createKey(c.principal.identity, c.enclave, ctx.param, '', false);
    ok(ctx);
  },
  '/v1/key/import/': async (ctx, c) => {
    const req = jsonObject(ctx.body);
    // `key` and `cipher` (the v1 client); `bytes` (KES's older documentation).
    const key = bytesField(req, req.key === undefined ? 'bytes' : 'key', true);
    try {
      await c.kms.importKey(c.principal.identity, c.enclave, ctx.param, keyType(req.cipher ?? req.algorithm), key);
    } finally {
      key.fill(0);
    }
    ok(ctx);
  },
  '/v1/key/describe/': ({ res, param }, c) => {
    const k = c.kms.keyStatus(c.enclave, param, 0);
    sendJson(res, { name: k.name, algorithm: k.type, created_at: time(k.createdAt), created_by: kesId(k.createdBy) || undefined });
  },
  '/v1/key/delete/': async (ctx, c) => {
    await c.kms.deleteKey(c.enclave, ctx.param, 0, true);
    ok(ctx);
  },
  '/v1/key/generate/': (ctx, c) => {
    const req = jsonObject(ctx.body);
    const dek = c.kms.generate(c.enclave, ctx.param, 0, bytesField(req, 'context'), DEK_LENGTH);
    sendSecret(ctx, { plaintext: b64(dek.plaintext), ciphertext: b64(dek.ciphertext) }, [dek.plaintext]);
  },
  '/v1/key/encrypt/': (ctx, c) => {
    const req = jsonObject(ctx.body);
    const plaintext = bytesField(req, 'plaintext');
    try {
      const out = c.kms.encrypt(c.enclave, ctx.param, 0, plaintext, bytesField(req, 'context'));
      sendJson(ctx.res, { ciphertext: b64(out.ciphertext) });
    } finally {
      plaintext.fill(0);
    }
  },
  '/v1/key/decrypt/': (ctx, c) => {
    const req = jsonObject(ctx.body);
    const plaintext = c.kms.decrypt(c.enclave, ctx.param, 0, bytesField(req, 'ciphertext', true), bytesField(req, 'context'));
    sendSecret(ctx, { plaintext: b64(plaintext) }, [plaintext]);
  },
  '/v1/key/bulk/decrypt/': (ctx, c) => {
    const reqs = jsonArray(ctx.body, MAX_BULK);
    const plaintexts: Buffer[] = [];
    try {
      for (const r of reqs)
        plaintexts.push(c.kms.decrypt(c.enclave, ctx.param, 0, bytesField(r, 'ciphertext', true), bytesField(r, 'context')));
      sendJson(
        ctx.res,
        plaintexts.map((p) => ({ plaintext: b64(p) })),
      );
    } finally {
      for (const p of plaintexts) p.fill(0);
    }
  },
  '/v1/key/hmac/': (ctx, c) => {
    const req = jsonObject(ctx.body);
    sendJson(ctx.res, { hmac: b64(c.kms.mac(c.enclave, ctx.param, 0, bytesField(req, 'message')).mac) });
  },
  '/v1/key/list/': ({ res, param }, c) => {
    const pos = parseListParam(param);
    const page = c.kms.listKeys(c.enclave, pos.prefix, pos.from, MAX_PAGE, visible(c, 'KEY:LIST'));
    sendJson(res, { names: page.items.map((k) => k.name), continue_at: continueToken(pos, page.continueAt) || undefined });
  },

  // ---------------------------------------------------------------- policies
  '/v1/policy/describe/': ({ res, param }, c) => {
    const p = c.kms.policy(c.enclave, param);
    sendJson(res, { name: p.name, created_at: time(new Date(p.createdAt)), created_by: kesId(p.createdBy) || undefined });
  },
  '/v1/policy/read/': ({ res, param }, c) => {
    const p = c.kms.policy(c.enclave, param);
    const paths = toKesPolicy(p.allow, p.deny);
    const set = (list: string[]) => Object.fromEntries(list.map((path) => [path, {}]));
    sendJson(res, {
      allow: set(paths.allow),
      deny: set(paths.deny),
      created_at: time(new Date(p.createdAt)),
      created_by: kesId(p.createdBy) || undefined,
    });
  },
  '/v1/policy/list/': ({ res, param }, c) => {
    const pos = parseListParam(param);
    const page = c.kms.listPolicies(c.enclave, pos.prefix, pos.from, MAX_PAGE, visible(c, 'POLICY:LIST'));
    sendJson(res, { names: page.items.map((p) => p.name), continue_at: continueToken(pos, page.continueAt) || undefined });
  },

  // ---------------------------------------------------------------- identities
  '/v1/identity/describe/': ({ res, param }, c) => {
    const i = c.kms.identityInfo(c.enclave, identityParam(param));
    sendJson(res, {
      identity: kesId(i.identity),
      admin: isAdmin(i),
      policy: i.policy || undefined,
      created_at: time(i.createdAt),
      created_by: kesId(i.createdBy) || undefined,
    });
  },
  '/v1/identity/self/describe': ({ res }, c) => {
    const i = c.kms.identityInfo(c.enclave, c.principal.identity);
    const policy = c.principal.admin ? undefined : c.principal.policy;
    const paths = policy ? toKesPolicy(policy.allow, policy.deny) : undefined;
    const set = (list: string[] | undefined) => (list ? Object.fromEntries(list.map((path) => [path, {}])) : undefined);
    sendJson(res, {
      identity: kesId(i.identity),
      admin: isAdmin(i),
      policy: i.policy || undefined,
      created_at: time(i.createdAt),
      created_by: kesId(i.createdBy) || undefined,
      allow: set(paths?.allow),
      deny: set(paths?.deny),
    });
  },
  '/v1/identity/list/': ({ res, param }, c) => {
    // Listed in KES's hex spelling and order: gather the enclave's identities, then page.
    const show = visible(c, 'IDENTITY:LIST');
    const all: string[] = [];
    let continueAt = '';
    do {
      const page = c.kms.listIdentities(c.enclave, '', continueAt, MAX_PAGE, show);
      for (const i of page.items) all.push(kesId(i.identity));
      continueAt = page.continueAt;
    } while (continueAt !== '');
    all.sort();
    const pos = parseListParam(param.toLowerCase());
    const page = pageOf(all, pos);
    sendJson(res, { identities: page.items, continue_at: continueToken(pos, page.continueAt) || undefined });
  },
};

/** `GET /v1/api`: the served APIs, as KES lists them (timeouts in seconds, 0 for streams). */
export function apiList(bodyTimeoutMs: number): { method: string; path: string; max_body: number; timeout: number }[] {
  return KES_APIS.filter((a) => a.served).map((a) => ({
    method: a.method,
    path: a.path,
    max_body: a.maxBody,
    timeout: a.stream ? 0 : Math.round(bodyTimeoutMs / 1000),
  }));
}
