/**
 * The `hsm.pkcs11` configuration section (src/config/config.ts): its forms, its errors (each
 * naming the key's path), and the PIN never showing when a Config is logged, printed or
 * serialized.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { REPO_ROOT } from '../helpers/server.js';
import { ConfigError, EMPTY_CONFIG, Secret, validateConfig, type Pkcs11HsmConfig } from '../../src/config/config.js';
import { configuredHsms, LOCAL_HSM_FILE } from '../../src/hsm/configured.js';
import type { Config } from '../../src/config/config.js';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';

/** The HSMs the composition root would build for this configuration and environment. */
function createHsms(
  config: Config,
  env: { hsmKey?: string; dev: boolean; configured: boolean; fresh: boolean },
  dir: string,
  log: { warn(msg: string): void },
) {
  const generate = env.dev || (env.fresh && !env.configured);
  const database = join(dir, 'minkms.db');
  return configuredHsms({ config, softKey: env.hsmKey, dir, database, generate, ephemeral: env.dev, warn: (m) => log.warn(m) }).map(
    (c) => c.hsm,
  );
}

const MODULE = '/usr/lib/softhsm/libsofthsm2.so';

function parse(pkcs11: unknown): Pkcs11HsmConfig {
  return validateConfig({ version: 'v1', hsm: { pkcs11 } }, '/etc/minkms').hsm.pkcs11!;
}

describe('hsm.pkcs11 configuration', () => {
  it('accepts the long and the short forms', () => {
    const long = parse({
      module: MODULE,
      token: { label: 'minkms' },
      pin: { env: 'PIN_VAR' },
      key: { label: 'root' },
      mechanism: 'aes-gcm',
      timeout: '5s',
    });
    assert.deepEqual(long, {
      module: MODULE,
      token: { label: 'minkms' },
      pin: { env: 'PIN_VAR' },
      key: { label: 'root' },
      mechanism: 'aes-gcm',
      timeout: 5000,
    });

    const short = parse({ module: 'lib/vendor.so', token: 'minkms', pin: '0123', key: 'root' });
    assert.equal(short.module, '/etc/minkms/lib/vendor.so', 'relative to the config file');
    assert.deepEqual(short.token, { label: 'minkms' });
    assert.deepEqual(short.key, { label: 'root' });
    assert.ok('value' in short.pin && short.pin.value.reveal() === '0123');
    assert.equal(short.mechanism, 'auto');
    assert.equal(short.timeout, 30_000);

    assert.deepEqual(parse({ module: MODULE, token: { serial: '78b0a6b903f9dab3' }, pin: { file: 'pin' }, key: { id: '0A0b' } }), {
      module: MODULE,
      token: { serial: '78b0a6b903f9dab3' },
      pin: { file: '/etc/minkms/pin' },
      key: { id: '0a0b' },
      mechanism: 'auto',
      timeout: 30_000,
    });
    assert.deepEqual(parse({ module: MODULE, token: { slot: 0 }, pin: { value: 'x' }, key: 'k' }).token, { slot: 0 });
  });

  it('refuses what it cannot use, naming the key', () => {
    const ok = { module: MODULE, token: 'minkms', pin: 'secret-pin', key: 'root' };
    const cases: [string, unknown, RegExp][] = [
      ['unknown key', { ...ok, slot: 1 }, /^hsm\.pkcs11\.slot: unknown key/],
      ['no module', { ...ok, module: undefined }, /^hsm\.pkcs11\.module: is required/],
      ['no token', { ...ok, token: undefined }, /^hsm\.pkcs11\.token: is required/],
      [
        'two token selectors',
        { ...ok, token: { label: 'a', serial: 'b' } },
        /^hsm\.pkcs11\.token: give exactly one of label, serial, slot/,
      ],
      ['long label', { ...ok, token: 'x'.repeat(33) }, /^hsm\.pkcs11\.token\.label: must be at most 32 bytes/],
      ['label with blanks', { ...ok, token: ' minkms' }, /surrounding blanks/],
      ['negative slot', { ...ok, token: { slot: -1 } }, /^hsm\.pkcs11\.token\.slot: must be a slot number/],
      ['numeric serial', { ...ok, token: { serial: 1234 } }, /^hsm\.pkcs11\.token\.serial: must be a quoted string/],
      ['no PIN', { ...ok, pin: undefined }, /^hsm\.pkcs11\.pin: is required/],
      [
        'numeric PIN',
        { ...ok, pin: 123 },
        /^hsm\.pkcs11\.pin: must be a quoted string \(YAML reads an unquoted number such as 0123 as 123\)/,
      ],
      ['two PIN sources', { ...ok, pin: { env: 'A', file: 'b' } }, /^hsm\.pkcs11\.pin: give exactly one of value, env, file/],
      ['bad variable name', { ...ok, pin: { env: 'A-B' } }, /^hsm\.pkcs11\.pin\.env: must be an environment variable name/],
      ['no key', { ...ok, key: undefined }, /^hsm\.pkcs11\.key: is required/],
      ['key id not hex', { ...ok, key: { id: 'xyz' } }, /^hsm\.pkcs11\.key\.id: must be hex/],
      ['numeric key id', { ...ok, key: { id: 1 } }, /^hsm\.pkcs11\.key\.id: must be a quoted string/],
      ['mechanism', { ...ok, mechanism: 'aes-ecb' }, /^hsm\.pkcs11\.mechanism: must be one of auto, aes-gcm, aes-cbc-pad-hmac/],
      ['timeout', { ...ok, timeout: 'soon' }, /^hsm\.pkcs11\.timeout: invalid duration/],
    ];
    for (const [name, section, message] of cases) {
      assert.throws(
        () => parse(section),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `${name}: got ${String(err)}`);
          assert.match(err.message, message, name);
          assert.ok(!err.message.includes('secret-pin'), `${name}: the PIN is not in the message`);
          return true;
        },
      );
    }
  });

  it('is documented in examples/config.yaml (commented out: the example starts without a token)', () => {
    const lines = readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8').split('\n');
    const start = lines.findIndex((l) => l.startsWith('  # pkcs11:'));
    assert.ok(start >= 0, 'the example has an hsm.pkcs11 section');
    const section = [lines[start]!];
    for (const l of lines.slice(start + 1)) {
      if (!l.startsWith('  #   ')) break;
      section.push(l);
    }
    const doc = parseYaml(`version: v1\nhsm:\n${section.map((l) => l.replace(/^ {2}# /, '  ')).join('\n')}\n`);
    assert.deepEqual(validateConfig(doc, '/etc/minkms').hsm.pkcs11, {
      module: MODULE,
      token: { label: 'minkms' },
      pin: { file: '/etc/minkms/pkcs11.pin' },
      key: { label: 'minkms-root' },
      mechanism: 'auto',
      timeout: 30_000,
    });
  });

  it('never shows an inline PIN: JSON, inspect, string conversion', () => {
    const config = validateConfig(
      { version: 'v1', hsm: { pkcs11: { module: MODULE, token: 't', pin: 'pin-4711-secret', key: 'k' } } },
      '/',
    );
    for (const [how, text] of [
      ['JSON', JSON.stringify(config)],
      ['inspect', inspect(config, { depth: 10 })],
      ['template', `${(config.hsm.pkcs11!.pin as { value: Secret }).value}`],
    ] as const) {
      assert.ok(!text.includes('pin-4711-secret'), `${how}: ${text}`);
      assert.match(text, /REDACTED/, how);
    }
  });
});

describe('createHsms (src/hsm/configured.ts)', () => {
  it('generates DIR/hsm.key only for a fresh unconfigured node, reads it back with a warning, never in --dev', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'minkms-hsms-'));
    try {
      const warnings: string[] = [];
      const log = { warn: (m: string) => warnings.push(m) };
      const first = createHsms(EMPTY_CONFIG, { dev: false, configured: false, fresh: true }, dir, log);
      assert.deepEqual(
        first.map((h) => h.name),
        ['hsm:minio:soft'],
      );
      const file = join(dir, LOCAL_HSM_FILE);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.match(warnings.join('\n'), /generated a soft HSM key and stored it in/);
      const seal = await first[0]!.seal(Buffer.alloc(32, 1), Buffer.from('aad'));

      warnings.length = 0;
      const again = createHsms(EMPTY_CONFIG, { dev: false, configured: false, fresh: false }, dir, log);
      assert.ok((await again[0]!.unseal(seal, Buffer.from('aad'))).equals(Buffer.alloc(32, 1)), 'the stored key is read back');
      assert.match(warnings.join('\n'), /using the soft HSM key stored in/);

      const devDir = join(dir, 'dev');
      createHsms(EMPTY_CONFIG, { dev: true, configured: false, fresh: true }, devDir, log);
      assert.equal(existsSync(join(devDir, LOCAL_HSM_FILE)), false, '--dev keeps its key in memory');

      rmSync(file);
      assert.throws(() => createHsms(EMPTY_CONFIG, { dev: false, configured: false, fresh: false }, dir, log), /no HSM provided/);
      for (const h of [...first, ...again]) await h.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
