/**
 * Configuration values that were easy to get wrong: durations without a unit (refused, with the
 * unit to add), metrics.identities (identities, never keys), and the commented-out sections of
 * examples/config.yaml (valid once uncommented).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ConfigError, parseDuration, validateConfig } from '../../src/config/config.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { REPO_ROOT } from '../helpers/server.js';

function refused(doc: unknown, want: RegExp): void {
  assert.throws(
    () => validateConfig(doc, '/'),
    (err: Error) => {
      assert.ok(err instanceof ConfigError, `not a ConfigError: ${err}`);
      assert.match(err.message, want);
      return true;
    },
  );
}

test('a duration without a unit is refused, naming the units to add; 0 needs none', () => {
  refused({ version: 'v1', heartbeat: 500 }, /^heartbeat: '500' has no unit: write 500ms for milliseconds or 500s for seconds/);
  refused({ version: 'v1', heartbeat: '500' }, /^heartbeat: '500' has no unit: write 500ms/);
  refused({ version: 'v1', limits: { body_timeout: 30 } }, /^limits\.body_timeout: '30' has no unit: write 30ms for milliseconds or 30s/);
  refused(
    { version: 'v1', store: { backend: 'etcd', etcd: { endpoints: ['http://e:2379'], timeout: 2.5 } } },
    /^store\.etcd\.timeout: '2\.5' has no unit: write 2\.5ms .* or 2\.5s/,
  );
  refused({ version: 'v1', heartbeat: -1 }, /^heartbeat: must be a duration .*not negative/);
  refused({ version: 'v1', heartbeat: '5 s' }, /^heartbeat: invalid duration '5 s'/);
  assert.equal(validateConfig({ version: 'v1', heartbeat: 0 }, '/').heartbeat, 0);
  assert.equal(validateConfig({ version: 'v1', heartbeat: '0' }, '/').heartbeat, 0);
  const c = validateConfig(
    {
      version: 'v1',
      heartbeat: '250ms',
      limits: { body_timeout: '1m' },
      store: { backend: 'etcd', etcd: { endpoints: ['http://e:2379'], timeout: '2s' } },
    },
    '/',
  );
  assert.deepEqual([c.heartbeat, c.limits.bodyTimeout, c.store.backend === 'etcd' && c.store.etcd.timeout], [250, 60_000, 2000]);
  assert.equal(parseDuration('1h1m1s1ms', 'x'), 3_661_001);
});

test('metrics.identities: identities allowed to scrape; keys and garbage refused', () => {
  const a = generateApiKey();
  const b = generateApiKey('k2');
  const c = validateConfig({ version: 'v1', metrics: { identities: [a.identity, b.identity, a.identity] } }, '/');
  assert.deepEqual(c.metrics, { auth: true, identities: [a.identity, b.identity] });
  assert.deepEqual(validateConfig({ version: 'v1', metrics: { identities: a.identity } }, '/').metrics.identities, [a.identity]);
  assert.deepEqual(validateConfig({ version: 'v1', metrics: { identities: [] } }, '/').metrics.identities, []);
  assert.deepEqual(validateConfig({ version: 'v1' }, '/').metrics, { auth: true, identities: [] });
  refused({ version: 'v1', metrics: { identities: [a.text] } }, /^metrics\.identities\[0\]: is an API or HSM key, not an identity/);
  // The key itself never appears in the message.
  assert.throws(
    () => validateConfig({ version: 'v1', metrics: { identities: [a.identity, a.text] } }, '/'),
    (err: Error) => !err.message.includes(a.text.slice(3)),
  );
  refused(
    { version: 'v1', metrics: { identities: ['prometheus'] } },
    /^metrics\.identities\[0\]: 'prometheus' is not an identity of the form h1:/,
  );
  refused({ version: 'v1', metrics: { identities: [42] } }, /^metrics\.identities\[0\]: must be a non-empty string/);
  refused({ version: 'v1', metrics: { scrapers: [] } }, /^metrics\.scrapers: unknown key \(allowed: auth, identities\)/);
});

test('examples/config.yaml: the commented-out admin identity and KMS chain are valid once uncommented', () => {
  const text = readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8');
  const lines = text.split('\n');
  // Uncomment `  # identity: …` under admin, and the `  # minio:` block under hsm (until the
  // first line that is not a commented continuation of it).
  const out: string[] = [];
  let inChain = false;
  for (const line of lines) {
    if (/^ {2}# identity: h1:/.test(line)) {
      out.push(line.replace('# ', ''));
      continue;
    }
    if (/^ {2}# minio:\s*$/.test(line)) inChain = true;
    else if (inChain && !/^ {2}# {3}/.test(line)) inChain = false;
    out.push(inChain ? line.replace(/^ {2}# /, '  ') : line);
  }
  const c = validateConfig(parse(out.join('\n')), '/etc/minkms');
  assert.match(c.admin.identity ?? '', /^h1:/);
  assert.deepEqual(c.hsm.minkms, {
    server: ['kms0.hsm-cluster.example.net:7373', 'kms1.hsm-cluster.example.net:7373'],
    enclave: 'aistor-key-manager',
    key: 'aistor-key-manager-hsm',
    apiKey: 'k1:REPLACE-ME',
    ca: '/etc/minkms/certs/hsm-cluster-ca.crt',
    insecure: false,
  });
});
