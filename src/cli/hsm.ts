/**
 * `minkms hsm pkcs11 init` and `minkms hsm pkcs11 check`: offline tools that talk to a PKCS#11
 * token directly (no server), to create the key a node seals its root key with and to verify a
 * configuration before a server uses it.
 *
 * The token, PIN and key come from `--config FILE` (its `hsm.pkcs11` section, so the key made
 * is exactly the one the server will look for) and/or flags, flags winning. The PIN is never a
 * command-line argument (other users see those in `ps`): a file, an environment variable, or
 * the configuration.
 */
import { Option, type Command } from 'commander';
import { ConfigError, loadConfig, parsePkcs11Config, type Pkcs11HsmConfig } from '../config/config.js';
import { loadBinding, BindingError } from '../hsm/pkcs11-api.js';
import { Pkcs11Device, Pkcs11Module, createKeys, DeviceError, type DeviceConfig } from '../hsm/pkcs11-device.js';
import { pkcs11HsmName } from '../hsm/pkcs11.js';
import { CliError, addExamples, done, print, printFields, printJson, usageError } from './common.js';

/** The environment variable read for the PIN when no other source is given. */
export const PIN_ENV = 'MINKMS_PKCS11_PIN';

interface TokenFlags {
  config?: string;
  module?: string;
  token?: string;
  tokenSerial?: string;
  slot?: string;
  pinFile?: string;
  pinEnv?: string;
  label?: string;
  id?: string;
  json?: boolean;
}

function addTokenOptions(cmd: Command): Command {
  return cmd
    .option('--config <FILE>', 'server configuration whose hsm.pkcs11 section names the module, token, PIN and key')
    .option('--module <PATH>', 'PKCS#11 library of the device (e.g. /usr/lib/softhsm/libsofthsm2.so)')
    .option('--token <LABEL>', 'token label')
    .option('--token-serial <SERIAL>', 'token serial number (instead of --token)')
    .option('--slot <N>', 'slot number (instead of --token)')
    .option('--pin-file <FILE>', 'file holding the user PIN')
    .option('--pin-env <VAR>', `environment variable holding the user PIN (default: ${PIN_ENV})`)
    .option('--label <LABEL>', 'key label (CKA_LABEL)')
    .option('--id <HEX>', 'key id (CKA_ID, hex)')
    .addOption(new Option('--json', 'print JSON'));
}

/** Merges `--config` and the flags into one validated `hsm.pkcs11` section. */
export function tokenConfig(o: TokenFlags): Pkcs11HsmConfig {
  let base: Partial<Pkcs11HsmConfig> = {};
  if (o.config) {
    try {
      base = loadConfig(o.config).hsm.pkcs11 ?? {};
    } catch (err) {
      throw new CliError((err as Error).message, 'fix the configuration file');
    }
    if (!base.module) throw usageError(`${o.config} has no hsm.pkcs11 section`, 'add one (see docs/hsm.md) or give the flags');
  }
  const tokens = [o.token, o.tokenSerial, o.slot].filter((v) => v !== undefined).length;
  const pins = [o.pinFile, o.pinEnv].filter((v) => v !== undefined).length;
  if (tokens > 1) throw usageError('give one of --token, --token-serial, --slot', "see 'minkms hsm pkcs11 --help'");
  if (pins > 1) throw usageError('give one of --pin-file, --pin-env', "see 'minkms hsm pkcs11 --help'");
  const basePin = base.pin && ('value' in base.pin ? { value: base.pin.value.reveal() } : base.pin);
  const section = {
    module: o.module ?? base.module,
    token:
      o.token !== undefined
        ? { label: o.token }
        : o.tokenSerial !== undefined
          ? { serial: o.tokenSerial }
          : o.slot !== undefined
            ? { slot: /^\d+$/.test(o.slot) ? Number(o.slot) : o.slot }
            : base.token,
    pin:
      o.pinFile !== undefined
        ? { file: o.pinFile }
        : o.pinEnv !== undefined
          ? { env: o.pinEnv }
          : (basePin ?? (process.env[PIN_ENV] !== undefined ? { env: PIN_ENV } : undefined)),
    key: o.label !== undefined ? { label: o.label } : o.id !== undefined ? { id: o.id } : base.key,
    mechanism: base.mechanism,
    timeout: base.timeout === undefined ? undefined : `${base.timeout}ms`,
  };
  if (section.module === undefined) throw usageError('no PKCS#11 module given', 'give --module PATH or --config FILE');
  if (section.token === undefined) throw usageError('no token given', 'give --token LABEL, --token-serial SERIAL or --slot N');
  if (section.pin === undefined) throw usageError('no PIN given', `give --pin-file FILE or --pin-env VAR, or set ${PIN_ENV}`);
  if (section.key === undefined) throw usageError('no key given', 'give --label LABEL (or --id HEX)');
  try {
    return parsePkcs11Config(section, process.cwd());
  } catch (err) {
    if (err instanceof ConfigError) throw usageError(err.message.replace(/^hsm\.pkcs11\./, ''), "see 'minkms hsm pkcs11 --help'");
    throw err;
  }
}

function deviceConfig(c: Pkcs11HsmConfig): DeviceConfig {
  const pin = 'value' in c.pin ? { value: c.pin.value.reveal() } : c.pin;
  return { module: c.module, token: c.token, key: c.key, pin, mechanism: c.mechanism };
}

/** A DeviceError as one CLI line with a hint that fits its cause. */
function deviceFailure(err: unknown): CliError {
  if (err instanceof BindingError) return new CliError(err.message, 'or configure another HSM');
  if (!(err instanceof DeviceError)) return new CliError((err as Error).message, '');
  const m = err.message;
  const hint = /refused the user PIN|refused this PIN/.test(m)
    ? 'check the PIN source; a token locks its PIN after a few wrong tries'
    : /no .*token.* is present/.test(m)
      ? 'list the tokens: pkcs11-tool --module MODULE --list-token-slots, or softhsm2-util --show-slots'
      : /cannot load the PKCS#11 module/.test(m)
        ? "give the vendor's PKCS#11 library (.so) with --module"
        : /already has a secret key/.test(m)
          ? "'minkms hsm pkcs11 check' verifies an existing key"
          : err.permanent
            ? ''
            : 'the device may be unavailable: try again';
  return new CliError(m, hint);
}

/** The `hsm.pkcs11` section to paste into the server's configuration. */
function configSnippet(c: Pkcs11HsmConfig): string {
  const t = c.token;
  const token =
    t.label !== undefined
      ? `label: ${JSON.stringify(t.label)}`
      : t.serial !== undefined
        ? `serial: ${JSON.stringify(t.serial)}`
        : `slot: ${t.slot}`;
  const pin = 'file' in c.pin ? `file: ${c.pin.file}` : 'env' in c.pin ? `env: ${c.pin.env}` : 'value: "…"  # as in your configuration';
  const key = c.key.label !== undefined ? `label: ${JSON.stringify(c.key.label)}` : `id: "${c.key.id}"`;
  return ['hsm:', '  pkcs11:', `    module: ${c.module}`, `    token: { ${token} }`, `    pin: { ${pin} }`, `    key: { ${key} }`].join(
    '\n',
  );
}

async function withModule<T>(c: Pkcs11HsmConfig, fn: (m: Pkcs11Module) => T): Promise<T> {
  let m: Pkcs11Module | undefined;
  try {
    m = new Pkcs11Module(await loadBinding(), c.module);
    return fn(m);
  } catch (err) {
    throw deviceFailure(err);
  } finally {
    m?.close();
  }
}

export function hsmCommands(program: Command): void {
  const hsm = program.command('hsm').description('set up and check HSMs (offline: talks to the device, not to a server)');
  const p11 = hsm.command('pkcs11').description('PKCS#11 tokens: create and check the key a node seals its root key with');
  const groupExamples = [
    'minkms hsm pkcs11 init --module /usr/lib/softhsm/libsofthsm2.so --token minkms --label minkms-root --pin-file pin.txt',
    'minkms hsm pkcs11 check --config /etc/minkms/config.yaml',
  ];
  addExamples(hsm, groupExamples, '\nSee docs/hsm.md for the HSM kinds and how to move between them.\n');
  addExamples(p11, groupExamples);

  const init = addTokenOptions(
    p11
      .command('init')
      .description('create the AES-256 key and the HMAC (or CMAC) key on a token: sensitive, not extractable, token objects')
      .addOption(
        new Option('--derive <KIND>', 'derivation key: hmac, or cmac for tokens without HMAC-SHA256')
          .choices(['auto', 'hmac', 'cmac'])
          .default('auto'),
      ),
  ).action(async (o: TokenFlags & { derive: 'auto' | 'hmac' | 'cmac' }) => {
    const c = tokenConfig(o);
    if (c.key.label === undefined) throw usageError('init needs a key label', 'give --label LABEL (and optionally --id HEX)');
    if (o.id !== undefined && !/^(?:[0-9a-fA-F]{2})+$/.test(o.id)) throw usageError('--id must be hex', 'e.g. --id 6d696e6b6d73');
    const dc = deviceConfig(c);
    const keyId = o.id?.toLowerCase() ?? c.key.id;
    const { created, info } = await withModule(c, (m) => {
      const created = createKeys(m, { ...dc, key: { label: c.key.label!, id: keyId } }, o.derive);
      // Prove the new key works the way the server will use it.
      const device = new Pkcs11Device(m, dc);
      try {
        return { created, info: device.check() };
      } finally {
        device.close();
      }
    });
    const name = pkcs11HsmName(c);
    if (o.json) {
      printJson({ name, token: created.token, label: created.label, id: created.id, derive: created.derive, seal: info.seal });
      return;
    }
    done(`Created key '${created.label}' (id ${created.id}) on token '${created.token.label}' (serial ${created.token.serial})`);
    printFields([
      ['HSM', name],
      ['Seal', info.seal],
      ['Derive', info.derive],
    ]);
    print('\nAdd to the server configuration:\n');
    print(configSnippet(c));
  });
  addExamples(init, [
    `${PIN_ENV}=… minkms hsm pkcs11 init --module /usr/lib/softhsm/libsofthsm2.so --token minkms --label minkms-root`,
    'minkms hsm pkcs11 init --config /etc/minkms/config.yaml    # the key hsm.pkcs11 names',
  ]);

  const check = addTokenOptions(
    p11.command('check').description('open the key, verify its attributes and a seal/unseal round trip'),
  ).action(async (o: TokenFlags) => {
    const c = tokenConfig(o);
    const info = await withModule(c, (m) => {
      const device = new Pkcs11Device(m, deviceConfig(c), (msg) => process.stderr.write(`minkms: warning: ${msg}\n`));
      try {
        return device.check();
      } finally {
        device.close();
      }
    });
    const name = pkcs11HsmName(c);
    if (o.json) {
      printJson({ name, ...info });
      return;
    }
    done(`The key is usable: '${name}'`);
    printFields([
      [
        'Token',
        `${info.token.label} (serial ${info.token.serial}, slot ${info.token.slot}, ${info.token.manufacturer} ${info.token.model})`,
      ],
      ['Seal', info.seal],
      ['Derive', info.derive],
      [
        'Mechanisms',
        Object.entries({
          CKM_AES_GCM: info.mechanisms.aesGcm,
          CKM_AES_CBC_PAD: info.mechanisms.aesCbcPad,
          CKM_SHA256_HMAC: info.mechanisms.sha256Hmac,
          CKM_AES_CMAC: info.mechanisms.aesCmac,
        })
          .map(([k, v]) => `${k} ${v ? 'yes' : 'no'}`)
          .join(', '),
      ],
    ]);
  });
  addExamples(check, ['minkms hsm pkcs11 check --config /etc/minkms/config.yaml']);
}
