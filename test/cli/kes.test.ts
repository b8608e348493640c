/**
 * From KES to minkms with the real binary: `minkms import-kes` reads a KES filesystem keystore
 * (this test writes one, in every layout KES wrote) and a JSON key list, and imports the keys; then
 * ciphertexts this test made in KES's formats (JSON with each `aead` KES wrote, with and without
 * a key id; binary for AES256 and ChaCha20 keys) decrypt through the MinKMS API (the SDK and
 * `minkms decrypt`) and the KES API. Also: identities given in KES's hex spelling, a KES policy
 * given to `add-policy`, and `get-policy --kes`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';
import { kesBinary, kesJson, kesRequest } from '../helpers/kes.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { kesIdentityOf } from '../../src/identity/kes.js';
import type { KmsClient } from '../../src/client/client.js';

const ENCLAVE = 'migrated';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let work: string;
let server: TestServer;
let root: KmsClient;

function minkms(args: readonly string[], input = ''): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: work,
        NO_COLOR: '1',
        MINIO_KMS_SERVER: server.url,
        MINIO_KMS_API_KEY: server.apiKey,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

async function ok(args: readonly string[], input = ''): Promise<string> {
  const r = await minkms([...args, '--ca', server.caFile], input);
  assert.equal(r.code, 0, `minkms ${args.join(' ')}: exit ${r.code}\n${r.stdout}${r.stderr}`);
  return r.stdout + r.stderr;
}

before(async () => {
  work = tempDir('minkms-kes-cli-');
  server = await startServer({ dir: join(work, 'data'), config: `version: v1\nkes:\n  enabled: true\n  enclave: ${ENCLAVE}\n` });
  root = clientFor(server, server.apiKey);
  await root.createEnclave(ENCLAVE);
});

after(async () => {
  root?.close();
  await server?.stop();
  if (work) removeDir(work);
});

describe('import-kes', () => {
  /** One KES key: its material, how its keystore file stores it, and the ciphertexts made with it. */
  const keys = {
    'minio-default': {
      material: randomBytes(32),
      file: (k: Buffer) =>
        JSON.stringify({
          bytes: k.toString('base64'),
          algorithm: 'AES256',
          created_at: '2023-05-01T10:00:00Z',
          created_by: 'ab'.repeat(32),
        }),
    },
    'minio-chacha': {
      material: randomBytes(32),
      file: (k: Buffer) => JSON.stringify({ bytes: k.toString('base64'), algorithm: 'XCHACHA20-POLY1305' }),
    },
    'minio-2020': { material: randomBytes(32), file: (k: Buffer) => JSON.stringify({ bytes: k.toString('base64') }) },
  };
  const listed = { material: randomBytes(32) };
  const context = Buffer.from('{"bucket":"photos","object":"2019/cat.jpg"}');

  test('reads a KES filesystem keystore and a JSON key list; --dry-run imports nothing; --merge skips what exists', async () => {
    const ks = join(work, 'kes-keys');
    mkdirSync(ks);
    for (const [name, k] of Object.entries(keys)) writeFileSync(join(ks, name), k.file(k.material));
    writeFileSync(join(ks, '.minio-default.tmp'), 'half written');
    writeFileSync(join(ks, 'bad name'), keys['minio-default'].material);
    const list = join(work, 'exported.json');
    writeFileSync(list, JSON.stringify({ 'vault-key': listed.material.toString('base64') }));

    const dry = JSON.parse(await ok(['import-kes', '-e', ENCLAVE, '--dry-run', '--json', ks, list])) as {
      keys: { name: string; type: string; outcome: string }[];
      skipped: { name: string }[];
    };
    assert.deepEqual(
      dry.keys.map((k) => [k.name, k.type, k.outcome]),
      [
        ['minio-2020', 'AES256', 'checked'],
        ['minio-chacha', 'ChaCha20', 'checked'],
        ['minio-default', 'AES256', 'checked'],
        ['vault-key', 'AES256', 'checked'],
      ],
    );
    assert.deepEqual(
      dry.skipped.map((s) => s.name),
      ['bad name'],
    );
    assert.equal((await root.listKeys(ENCLAVE, { prefix: '' })).keys.length, 0, '--dry-run imported something');

    const out = await ok(['import-kes', '-e', ENCLAVE, ks]);
    assert.match(out, /Imported key 'minio-default' \(AES256\) into enclave 'migrated'/);
    assert.match(out, /Imported key 'minio-chacha' \(ChaCha20\)/);
    assert.match(out, /skipped: .*kes-keys: bad name: not a key name minkms accepts/);
    const again = await minkms(['import-kes', '-e', ENCLAVE, '--ca', server.caFile, ks]);
    assert.equal(again.code, 1, 'a second import without --merge stops at the existing key');
    assert.match(again.stderr, /key already exists/);
    const merged = await ok(['import-kes', '-e', ENCLAVE, '--merge', ks, list]);
    assert.match(merged, /Key 'minio-default' exists: skipped \(--merge\)/);
    assert.match(merged, /Imported key 'vault-key'/);
  });

  test('every ciphertext format KES wrote decrypts after the import, through both APIs', async () => {
    const secret = randomBytes(32);
    const cases: [string, string, Buffer][] = [
      ['binary, AES256 key', 'minio-default', kesBinary('AES256', keys['minio-default'].material, secret, context)],
      ['binary, ChaCha20 key', 'minio-chacha', kesBinary('ChaCha20', keys['minio-chacha'].material, secret, context)],
      [
        'JSON AES-256-GCM-HMAC-SHA-256 with key id',
        'minio-default',
        kesJson('AES-256-GCM-HMAC-SHA-256', keys['minio-default'].material, secret, context, { withId: true }),
      ],
      ['JSON ChaCha20Poly1305, untyped key', 'minio-2020', kesJson('ChaCha20Poly1305', keys['minio-2020'].material, secret, context)],
      [
        'JSON AES-256-GCM-HMAC-SHA-256, untyped key',
        'minio-2020',
        kesJson('AES-256-GCM-HMAC-SHA-256', keys['minio-2020'].material, secret, context),
      ],
      ['JSON AES-256-GCM (earliest)', 'minio-2020', kesJson('AES-256-GCM', keys['minio-2020'].material, secret, context, { direct: true })],
      ['JSON from a JSON key list', 'vault-key', kesJson('AES-256-GCM-HMAC-SHA-256', listed.material, secret, context)],
    ];
    for (const [what, name, ct] of cases) {
      const [viaKms] = await root.decrypt(ENCLAVE, [{ name, ciphertext: ct, associatedData: context }]);
      assert.deepEqual(Buffer.from(viaKms!.plaintext), secret, `MinKMS API: ${what}`);
      const viaKes = await kesRequest(
        server,
        server.apiKey,
        'POST',
        `/v1/key/decrypt/${name}`,
        JSON.stringify({ ciphertext: ct.toString('base64'), context: context.toString('base64') }),
      );
      assert.equal(viaKes.status, 200, `KES API: ${what}: ${viaKes.body.toString()}`);
      assert.deepEqual(Buffer.from((viaKes.json as { plaintext: string }).plaintext, 'base64'), secret, `KES API: ${what}`);
      const wrong = await kesRequest(
        server,
        server.apiKey,
        'POST',
        `/v1/key/decrypt/${name}`,
        JSON.stringify({ ciphertext: ct.toString('base64') }),
      );
      assert.equal(wrong.status, 400, `KES API without the context: ${what}`);
    }
    // `minkms decrypt` (no associated data) reads the JSON format too.
    const plain = kesJson('ChaCha20Poly1305', keys['minio-chacha'].material, Buffer.from('hello from 2020'));
    assert.match(await ok(['decrypt', '-e', ENCLAVE, 'minio-chacha', plain.toString('base64')]), /hello from 2020/);
  });
});

describe("identities and policies in KES's terms", () => {
  test('a KES policy for add-policy, an identity by its hex spelling, get-policy --kes', async () => {
    const user = generateApiKey();
    const hex = kesIdentityOf(user.identity);
    await ok(['add-identity', '-e', ENCLAVE, hex]);
    const kesPolicy = {
      allow: ['/v1/key/generate/minio-*', '/v1/key/decrypt/minio-*', '/v1/status'],
      deny: ['/v1/key/decrypt/minio-2020'],
      identities: [hex],
    };
    const added = await ok(['add-policy', '-e', ENCLAVE, 'minio-sse', '-'], JSON.stringify(kesPolicy));
    assert.match(added, /note: allow \/v1\/status: \/v1\/status is allowed to every identity of the KES enclave here/);
    assert.match(added, /note: identities: add-policy assigns none/);
    await ok(['set-policy', '-e', ENCLAVE, 'minio-sse', hex]);
    const [ours] = JSON.parse(await ok(['get-policy', '-e', ENCLAVE, 'minio-sse', '--json'])) as { allow: object; deny: object }[];
    assert.deepEqual(ours!.allow, { 'KEY:DECRYPT': ['minio-*'], 'KEY:GENERATE': ['minio-*'] });
    assert.deepEqual(ours!.deny, { 'KEY:DECRYPT': ['minio-2020'] });
    const [asKes] = JSON.parse(await ok(['get-policy', '-e', ENCLAVE, 'minio-sse', '--kes', '--json'])) as {
      allow: string[];
      deny: string[];
    }[];
    assert.deepEqual(asKes!.allow, ['/v1/key/bulk/decrypt/minio-*', '/v1/key/decrypt/minio-*', '/v1/key/generate/minio-*']);
    assert.deepEqual(asKes!.deny, ['/v1/key/bulk/decrypt/minio-2020', '/v1/key/decrypt/minio-2020']);
    const human = await ok(['get-policy', '-e', ENCLAVE, 'minio-sse', '--kes']);
    assert.match(human, /Allow\n {2}\/v1\/key\/bulk\/decrypt\/minio-\*\n/);
    const [identity] = JSON.parse(await ok(['get-identity', '-e', ENCLAVE, hex, '--json'])) as { identity: string; policy: string }[];
    assert.deepEqual([identity!.identity, identity!.policy], [user.identity, 'minio-sse']);
    // The user, with its KES API key, gets what the policy says through the KES API.
    const r = await kesRequest(server, user.text, 'POST', '/v1/key/generate/minio-default', '{}');
    assert.equal(r.status, 200);
    assert.equal((await kesRequest(server, user.text, 'POST', '/v1/key/generate/vault-key', '{}')).status, 403);
  });
});
