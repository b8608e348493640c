/**
 * The KES API over real mutual TLS, for what the KES client does not show: who is refused before
 * the body, KES's 501, `/version` answering both clients, bad bodies, the audit line of a KES
 * request, the JSON ciphertexts and imported keys through both APIs, KES's older request forms,
 * and that the KES API is off by default. (Every client method: test/interop/kes_test.go.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { jsonToBinary, kesJson, kesRequest } from '../helpers/kes.js';
import { h2Session } from '../helpers/security.js';
import { generateApiKey, parseApiKey } from '../../src/identity/api-key.js';
import { kesApiKeyOf, kesIdentityOf } from '../../src/identity/kes.js';
import { decodeMessage } from '../../src/protocol/schema.js';
import { VersionResponseSchema } from '../../src/protocol/messages.js';
import type { KmsClient } from '../../src/client/client.js';

const ENCLAVE = 'kes';
const MiB = 1 << 20;

let dir: string;
let server: TestServer;
let root: KmsClient;
let auditFile: string;
const user = generateApiKey();
const scraper = generateApiKey();

before(async () => {
  dir = tempDir('minkms-kes-api-');
  auditFile = join(dir, 'audit.log');
  server = await startServer({
    dir: join(dir, 'data'),
    config: `version: v1\nkes:\n  enabled: true\n  enclave: ${ENCLAVE}\nmetrics:\n  identities: [${scraper.identity}]\n`,
    args: ['--audit-file', auditFile],
  });
  root = clientFor(server, server.apiKey);
  await root.createEnclave(ENCLAVE);
  await root.createIdentity(ENCLAVE, { identity: user.identity, privilege: 'User' });
  await root.createPolicy(ENCLAVE, { name: 'gen', allow: { 'KEY:GENERATE': { rules: { 'app-*': {} } } }, deny: {} });
  await root.assignPolicy(ENCLAVE, user.identity, 'gen');
  await root.createKey(ENCLAVE, { name: 'app-1' });
});

after(async () => {
  root?.close();
  await server?.stop();
  if (dir) removeDir(dir);
});

const kesMessage = (r: { json: unknown }) => (r.json as { message?: string } | undefined)?.message;

describe('before the body', () => {
  test('a stranger is refused with KES 403 before its body; a known caller past the limit gets 413', async () => {
    const big = Buffer.alloc(2 * MiB, 0x7b);
    const stranger = generateApiKey().text;
    let r = await kesRequest(server, stranger, 'POST', '/v1/key/generate/app-1', big, { 'content-type': 'application/json' });
    assert.equal(r.status, 403);
    assert.equal(kesMessage(r), 'not authorized: insufficient permissions');
    r = await kesRequest(server, undefined, 'POST', '/v1/key/generate/app-1', '{}');
    assert.equal(r.status, 403, 'no client certificate');
    // The user may generate with app-1 but not decrypt: refused before the body too.
    r = await kesRequest(server, user.text, 'POST', '/v1/key/decrypt/app-1', big);
    assert.equal(r.status, 403);
    r = await kesRequest(server, user.text, 'POST', '/v1/key/generate/app-1', big);
    assert.equal(r.status, 413);
  });

  test('the check before the body is made again after it: a policy changed while the body arrived decides', async () => {
    const late = generateApiKey();
    await root.createIdentity(ENCLAVE, { identity: late.identity, privilege: 'User' });
    await root.assignPolicy(ENCLAVE, late.identity, 'gen');
    await root.createPolicy(ENCLAVE, { name: 'status-only', allow: { 'KEY:STATUS': { rules: { 'app-*': {} } } }, deny: {} });
    const session = h2Session(server, late.text);
    try {
      // Allowed when its headers arrive; half of its body is sent, the rest waits.
      const stream = session.request({ ':method': 'POST', ':path': '/v1/key/generate/app-1', 'content-length': 2 }, { endStream: false });
      stream.write('{');
      const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (status = Number(h[':status'])));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
        stream.on('error', reject);
      });
      // In flight: this scrape and the generation, past its check (made when its headers came).
      await waitFor('the generation in flight', async () => {
        const m = await kesRequest(server, scraper.text, 'GET', '/v1/metrics');
        return Number(/^kes_http_request_active (\d+)$/m.exec(m.body.toString())?.[1]) >= 2 || undefined;
      });
      await root.assignPolicy(ENCLAVE, late.identity, 'status-only');
      stream.end('}');
      const r = await answer;
      assert.equal(r.status, 403, r.body);
      assert.doesNotMatch(r.body, /plaintext/);
    } finally {
      session.close();
    }
  });

  test("what minkms does not serve answers KES's 501 before any body, with or without a certificate", async () => {
    for (const [method, path] of [
      ['POST', '/v1/secret/create/s'],
      ['POST', '/v1/policy/write/p'],
      ['DELETE', '/v1/identity/delete/' + 'a'.repeat(64)],
      ['POST', '/v1/enclave/create/e'],
    ] as const) {
      const r = await kesRequest(server, undefined, method, path, Buffer.alloc(MiB));
      assert.equal(r.status, 501, `${method} ${path}`);
      assert.equal(kesMessage(r), 'not implemented');
    }
  });
});

describe('requests', () => {
  test('/version answers JSON to the KES client and protobuf to the MinKMS SDK', async () => {
    const json = await kesRequest(server, undefined, 'GET', '/version');
    assert.equal(json.status, 200);
    assert.equal(typeof (json.json as { version?: unknown }).version, 'string');
    const pb = await kesRequest(server, undefined, 'GET', '/version', undefined, { accept: 'application/octet-stream' });
    assert.equal(pb.contentType, 'application/octet-stream');
    assert.equal(decodeMessage(VersionResponseSchema, pb.body).version, (json.json as { version: string }).version);
  });

  test('bad bodies: 400, never a crash', async () => {
    for (const body of ['not json', '[1]', '{"context": 7}', '{"context": "@@@"}', '{"context": "AAA"}']) {
      const r = await kesRequest(server, server.apiKey, 'POST', '/v1/key/generate/app-1', body);
      assert.equal(r.status, 400, body);
      assert.match(kesMessage(r) ?? '', /^invalid request: /, body);
    }
    const r = await kesRequest(
      server,
      server.apiKey,
      'POST',
      '/v1/key/bulk/decrypt/app-1',
      JSON.stringify(Array(1001).fill({ ciphertext: 'AA==' })),
    );
    assert.equal(r.status, 413);
    const bad = await kesRequest(server, server.apiKey, 'GET', '/v1/identity/describe/not-an-identity');
    assert.equal(bad.status, 400);
  });

  test('a KES request is audited like a command: identity, enclave, command, object', async () => {
    await root.createKey(ENCLAVE, { name: 'app-audit' });
    assert.equal((await kesRequest(server, user.text, 'POST', '/v1/key/generate/app-audit', '{}')).status, 200);
    assert.equal((await kesRequest(server, user.text, 'POST', '/v1/key/generate/audit-denied', '{}')).status, 403);
    const lines = await waitFor('the audit lines', () => {
      const all = readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.identity === user.identity && (l.object === 'app-audit' || l.object === 'audit-denied'));
      return all.length >= 2 ? all : undefined;
    });
    assert.deepEqual(
      lines.map((l) => [l.enclave, l.command, l.object, l.outcome, l.status]),
      [
        [ENCLAVE, 'KEY:GENERATE', 'app-audit', 'ok', 200],
        [ENCLAVE, 'KEY:GENERATE', 'audit-denied', 'ERR_KES_NOT_ALLOWED', 403],
      ],
    );
  });

  test('a KES API key where a name should be never reaches the audit log', async () => {
    const secret = kesApiKeyOf(parseApiKey(user.text).privateKey)!;
    const path = (api: string) => `/v1/key/${api}/${encodeURIComponent(secret)}`;
    const audited = () =>
      readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const before = audited().length;
    assert.equal((await kesRequest(server, user.text, 'POST', path('generate'), '{}')).status, 403);
    assert.equal((await kesRequest(server, server.apiKey, 'GET', path('describe'))).status, 404);
    const lines = await waitFor('the audit lines', () => {
      const mine = audited()
        .slice(before)
        .filter((l) => l.command === 'KEY:GENERATE' || l.command === 'KEY:STATUS');
      return mine.length >= 2 ? mine : undefined;
    });
    assert.deepEqual(
      lines.map((l) => [l.command, l.outcome, l.object]),
      [
        ['KEY:GENERATE', 'ERR_KES_NOT_ALLOWED', '[REDACTED]'],
        ['KEY:STATUS', 'ERR_KEY_NOT_FOUND', '[REDACTED]'],
      ],
    );
    assert.ok(!readFileSync(auditFile, 'utf8').includes(secret.slice('kes:v1:'.length)), 'the key is in no audit line');
  });

  test('KES metrics follow metrics.identities; an identity of the enclave reads the status', async () => {
    const m = await kesRequest(server, scraper.text, 'GET', '/v1/metrics');
    assert.equal(m.status, 200);
    assert.match(m.body.toString(), /^kes_http_request_success \d+$/m);
    assert.equal((await kesRequest(server, user.text, 'GET', '/v1/metrics')).status, 403);
    assert.equal((await kesRequest(server, user.text, 'GET', '/v1/status')).status, 200);
    assert.equal((await kesRequest(server, scraper.text, 'GET', '/v1/status')).status, 403, 'no identity of the enclave');
    assert.equal((await kesRequest(server, undefined, 'GET', '/v1/ready')).status, 200, 'readiness needs no certificate');
  });

  test("KES's older request forms: import with {bytes}, bulk decryption, identities in h1: spelling too", async () => {
    const key = randomBytes(32);
    let r = await kesRequest(server, server.apiKey, 'POST', '/v1/key/import/old-form', JSON.stringify({ bytes: key.toString('base64') }));
    assert.equal(r.status, 200, r.body.toString());
    const cts = ['a', 'b'].map((p) => kesJson('AES-256-GCM-HMAC-SHA-256', key, Buffer.from(p), Buffer.from('c')));
    r = await kesRequest(
      server,
      server.apiKey,
      'POST',
      '/v1/key/bulk/decrypt/old-form',
      JSON.stringify(cts.map((c) => ({ ciphertext: c.toString('base64'), context: Buffer.from('c').toString('base64') }))),
    );
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(
      (r.json as { plaintext: string }[]).map((p) => Buffer.from(p.plaintext, 'base64').toString()),
      ['a', 'b'],
    );
    for (const spelling of [user.identity, kesIdentityOf(user.identity)]) {
      r = await kesRequest(server, server.apiKey, 'GET', `/v1/identity/describe/${encodeURIComponent(spelling)}`);
      assert.equal(r.status, 200, spelling);
      assert.equal((r.json as { identity: string }).identity, kesIdentityOf(user.identity));
    }
    // The KES spelling of the root API key authenticates as root.
    r = await kesRequest(server, kesApiKeyOf(parseApiKey(server.apiKey).privateKey), 'GET', '/v1/identity/self/describe');
    assert.equal(r.status, 200);
    assert.deepEqual(
      [(r.json as { identity: string }).identity, (r.json as { admin: boolean }).admin],
      [kesIdentityOf(parseApiKey(server.apiKey).identity), true],
    );
  });

  test('a KES JSON ciphertext made with a ChaCha20 key opens after import as AES256 — also as MinIO sends it, converted to binary', async () => {
    const key = randomBytes(32);
    await root.importKey(ENCLAVE, { name: 'untyped', type: 'AES256', key });
    const ad = Buffer.from('{"bucket":"b"}');
    const json = kesJson('ChaCha20Poly1305', key, Buffer.from('old object key'), ad);
    for (const ct of [json, jsonToBinary(json)]) {
      const [out] = await root.decrypt(ENCLAVE, [{ name: 'untyped', ciphertext: ct, associatedData: ad }]);
      assert.equal(Buffer.from(out!.plaintext).toString(), 'old object key');
      const r = await kesRequest(
        server,
        server.apiKey,
        'POST',
        '/v1/key/decrypt/untyped',
        JSON.stringify({ ciphertext: ct.toString('base64'), context: ad.toString('base64') }),
      );
      assert.equal(Buffer.from((r.json as { plaintext: string }).plaintext, 'base64').toString(), 'old object key');
    }
  });
});

describe('off by default', () => {
  test('without kes.enabled the KES paths do not exist', async () => {
    const s = await startServer();
    try {
      const r = await kesRequest(s, s.apiKey, 'POST', '/v1/key/create/k');
      assert.equal(r.status, 404);
      assert.equal(kesMessage(r), 'not found');
      assert.doesNotMatch(s.output(), /KES API/);
    } finally {
      await s.stop();
      removeDir(join(s.dir, '..'));
    }
  });
});
