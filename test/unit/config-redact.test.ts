/** No configuration or start-up error shows the credentials of a URL (`user:password@`). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, validateConfig } from '../../src/config/config.js';
import { hasCredentials, redactCredentials } from '../../src/config/redact.js';

const SECRET = 's3cr3t-Pa55';

const etcd = (endpoints: unknown) => ({ version: 'v1', store: { backend: 'etcd', etcd: { endpoints } } });
const hsm = (server: unknown) => ({ version: 'v1', hsm: { minio: { minkms: { server, enclave: 'e', key: 'k', auth: { key: 'k1:x' } } } } });

const CASES: Array<[string, unknown, RegExp]> = [
  [
    'etcd endpoint with user and password',
    etcd([`https://root:${SECRET}@etcd-1:2379`]),
    /^store\.etcd\.endpoints\[0\]: must not contain credentials/,
  ],
  ['etcd endpoint with a user only', etcd([`http://${SECRET}@etcd-1:2379`]), /^store\.etcd\.endpoints\[0\]: must not contain credentials/],
  ['second etcd endpoint', etcd(['https://etcd-1:2379', `https://root:${SECRET}@etcd-2:2379`]), /^store\.etcd\.endpoints\[1\]:/],
  ['malformed etcd endpoint with credentials', etcd([`https://root:${SECRET}@etcd-1:2379/v3`]), /^store\.etcd\.endpoints\[0\]:/],
  ['etcd endpoint as a single string', etcd(`https://root:${SECRET}@etcd-1:2379`), /^store\.etcd\.endpoints\[0\]:/],
  [
    'external KMS server with credentials',
    hsm([`https://admin:${SECRET}@kms-1:7373`]),
    /^hsm\.minio\.minkms\.server\[0\]: must not contain credentials/,
  ],
];

test('a URL with credentials in the configuration is refused, and the error shows it redacted', () => {
  for (const [i, [name, doc, want]] of CASES.entries()) {
    let err: unknown;
    try {
      validateConfig(doc, '/etc/minkms');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError, `case ${i} (${name}): got ${String(err)}, want a ConfigError`);
    const msg = (err as Error).message;
    assert.match(msg, want, `case ${i} (${name}): got ${JSON.stringify(msg)}`);
    assert.ok(!msg.includes(SECRET), `case ${i} (${name}): the secret is in ${JSON.stringify(msg)}`);
    assert.match(msg, /:\/\/\*\*\*@(etcd|kms)-\d:/, `case ${i} (${name}): no redacted URL in ${JSON.stringify(msg)}`);
  }
});

test('errors of a config file are redacted too (YAML errors, file names)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'minkms-redact-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, `version: v1\nstore:\n  backend: etcd\n  etcd:\n    endpoints: ["https://root:${SECRET}@etcd-1:2379"]\n`);
    assert.throws(
      () => loadConfig(file),
      (err: Error) => !err.message.includes(SECRET) && /https:\/\/\*\*\*@etcd-1:2379/.test(err.message),
    );
    writeFileSync(file, `version: v1\nstore: {backend: etcd, etcd: {endpoints: https://root:${SECRET}@etcd-1:2379, "\n`);
    assert.throws(
      () => loadConfig(file),
      (err: Error) => err instanceof ConfigError && !err.message.includes(SECRET),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('redactCredentials replaces every userinfo and nothing else', () => {
  const cases: [string, string][] = [
    ['https://u:p@h:2379', 'https://***@h:2379'],
    ['a http://u@h:1 and https://x:y@z:2/p?q=a@b', 'a http://***@h:1 and https://***@z:2/p?q=a@b'],
    ['https://h:2379', 'https://h:2379'],
    ['user@example.com', 'user@example.com'],
    ["'https://u:p@w@h:1'", "'https://***@h:1'"],
  ];
  for (const [input, want] of cases) assert.equal(redactCredentials(input), want, input);
  assert.equal(hasCredentials('https://u:p@h:1'), true);
  assert.equal(hasCredentials('https://h:1'), false);
  assert.equal(hasCredentials('https://h:1'), false);
});
