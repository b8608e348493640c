/** The configuration file: examples/config.yaml stays valid, and every error names its key. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ConfigError, DEFAULT_LIMITS, parseDuration, validateConfig } from '../../src/config/config.js';
import { parseAddress, StartupConfigError } from '../../src/server/compose.js';
import { REPO_ROOT } from '../helpers/server.js';

test('examples/config.yaml documents a valid configuration with every section', () => {
  const doc = parse(readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8'));
  const c = validateConfig(doc, '/etc/minkms');
  assert.equal(c.heartbeat, 500);
  // As shipped it starts on its own: no external KMS or token, no foreign root identity (test/cli/example-config.test.ts).
  assert.equal(c.hsm.minkms, undefined);
  assert.equal(c.hsm.pkcs11, undefined);
  assert.equal(c.admin.identity, undefined);
  assert.deepEqual(c.limits, DEFAULT_LIMITS);
  assert.equal(c.audit.file, '/var/log/minkms/audit.log');
  assert.equal(c.log.level, 'info');
});

const BAD: Array<[string, unknown, RegExp]> = [
  ['no version', {}, /^version: must be 'v1'/],
  ['unknown top-level key', { version: 'v1', tsl: {} }, /^tsl: unknown key/],
  [
    'unknown nested key',
    { version: 'v1', hsm: { minio: { minkms: { server: ['a'], enclave: 'e', key: 'k', auth: { key: 'k1:x' }, extra: 1 } } } },
    /^hsm\.minio\.minkms\.extra: unknown key/,
  ],
  [
    'missing hsm key',
    { version: 'v1', hsm: { minio: { minkms: { server: ['a'], enclave: 'e', auth: { key: 'k1:x' } } } } },
    /^hsm\.minio\.minkms\.key: is required/,
  ],
  ['bad identity', { version: 'v1', admin: { identity: 'k1:abc' } }, /^admin\.identity: must be an identity/],
  ['cert without key', { version: 'v1', tls: { certs: [{ cert: 'a.crt' }] } }, /^tls\.certs\[0\]\.key: is required/],
  ['bad duration', { version: 'v1', heartbeat: 'fast' }, /^heartbeat: invalid duration/],
  ['bad size', { version: 'v1', limits: { max_body: '10 potatoes' } }, /^limits\.max_body: invalid size/],
  ['bad level', { version: 'v1', log: { level: 'loud' } }, /^log\.level: must be one of/],
  ['unknown store', { version: 'v1', store: { backend: 'postgres' } }, /^store\.backend: unknown backend/],
  [
    'staleness bound too small',
    { version: 'v1', store: { backend: 'etcd', etcd: { endpoints: ['http://e:2379'], max_staleness: '10ms' } } },
    /^store\.etcd\.max_staleness: must be at least 50ms/,
  ],
  [
    'etcd timeout of zero',
    { version: 'v1', store: { backend: 'etcd', etcd: { endpoints: ['http://e:2379'], timeout: '0s' } } },
    /^store\.etcd\.timeout: must be more than 0/,
  ],
];

test('store.etcd.max_staleness: 1s by default, a duration with a unit', () => {
  const etcd = (extra: object) => {
    const c = validateConfig({ version: 'v1', store: { backend: 'etcd', etcd: { endpoints: ['http://e:2379'], ...extra } } }, '/');
    return c.store.backend === 'etcd' ? c.store.etcd : undefined;
  };
  assert.equal(etcd({})?.maxStaleness, 1000);
  assert.equal(etcd({ max_staleness: '250ms' })?.maxStaleness, 250);
  assert.equal(etcd({ max_staleness: '2s' })?.maxStaleness, 2000);
});

test('invalid configurations name the offending key', () => {
  BAD.forEach(([name, doc, want], i) => {
    assert.throws(
      () => validateConfig(doc, '/'),
      (err: Error) => {
        assert.ok(err instanceof ConfigError, `case ${i} (${name}): not a ConfigError`);
        assert.match(err.message, want, `case ${i} (${name}): got '${err.message}'`);
        return true;
      },
    );
  });
});

test('durations', () => {
  const cases: Array<[string, number]> = [
    ['500ms', 500],
    ['1s', 1000],
    ['1m30s', 90_000],
    ['2h', 7_200_000],
    ['0', 0],
    ['1.5s', 1500],
  ];
  assert.equal(parseDuration(0, 'x'), 0);
  for (const [text, ms] of cases) assert.equal(parseDuration(text, 'x'), ms, text);
});

test('--address: IP:PORT, [IPv6]:PORT, IP, bare IPv6; anything else is refused before listening', () => {
  assert.deepEqual(parseAddress('127.0.0.1:7000'), { host: '127.0.0.1', port: 7000 });
  assert.deepEqual(parseAddress('localhost:7000'), { host: 'localhost', port: 7000 });
  assert.deepEqual(parseAddress('[::1]:7000'), { host: '::1', port: 7000 });
  assert.deepEqual(parseAddress('::1'), { host: '::1', port: 7373 });
  assert.deepEqual(parseAddress(':7000'), { host: '0.0.0.0', port: 7000 });
  assert.deepEqual(parseAddress('10.0.0.1'), { host: '10.0.0.1', port: 7373 });
  for (const bad of ['localhost:abc', 'host:7000:1', '1.2.3.4:99999', '[::1]:x'])
    assert.throws(
      () => parseAddress(bad),
      (err: unknown) => err instanceof StartupConfigError && err.message.startsWith(`invalid --address '${bad}'`),
    );
});
