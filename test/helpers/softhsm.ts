/**
 * Real SoftHSM2 tokens for tests: each one in its own temporary directory with its own
 * `softhsm2.conf` (SOFTHSM2_CONF points at it), initialized with `softhsm2-util`, so that tests
 * never share a token and never touch the machine's.
 *
 * SoftHSM2 reads its configuration and scans its token directory at C_Initialize: a process
 * that switches tokens (unit tests) must have finalized the module first — closing every
 * Pkcs11Hsm of the module does that.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadBinding, type Binding, type Attribute } from '../../src/hsm/pkcs11-api.js';
import * as C from '../../src/hsm/pkcs11-api.js';
import { createKeys, findToken, Pkcs11Module, type CreatedKeys } from '../../src/hsm/pkcs11-device.js';
import { Secret, type Pkcs11HsmConfig } from '../../src/config/config.js';

const CANDIDATES = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib64/softhsm/libsofthsm2.so',
];

/** The SoftHSM2 PKCS#11 module, if installed. */
export const SOFTHSM_MODULE = CANDIDATES.find((p) => existsSync(p));

function hasUtil(): boolean {
  try {
    execFileSync('softhsm2-util', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let binding: Binding | undefined;
try {
  binding = await loadBinding();
} catch {
  binding = undefined;
}

/**
 * Why the PKCS#11 tests cannot run here, or undefined when they can. On CI (CI=true) a missing
 * SoftHSM2 or binding is an error, never a silent skip: .ci/run installs both.
 */
export const SKIP_PKCS11: string | undefined = (() => {
  const why = !SOFTHSM_MODULE
    ? 'SoftHSM2 is not installed (apt-get install softhsm2)'
    : !hasUtil()
      ? 'softhsm2-util is not on the PATH'
      : !binding
        ? 'the pkcs11js binding is not installed (npm install)'
        : undefined;
  if (why && process.env.CI) throw new Error(`PKCS#11 tests cannot run on CI: ${why}`);
  return why;
})();

export class SoftHsmToken {
  readonly dir: string;
  readonly conf: string;
  readonly tokens: string;
  readonly label: string;
  readonly pin: string;
  readonly soPin = 'so-' + randomBytes(4).toString('hex');
  readonly #away: string;

  private constructor(label: string, pin: string) {
    this.dir = mkdtempSync(join(tmpdir(), 'minkms-softhsm-'));
    this.tokens = join(this.dir, 'tokens');
    this.#away = join(this.dir, 'away');
    this.conf = join(this.dir, 'softhsm2.conf');
    this.label = label;
    this.pin = pin;
    mkdirSync(this.tokens, { mode: 0o700 });
    mkdirSync(this.#away, { mode: 0o700 });
    writeFileSync(
      this.conf,
      `directories.tokendir = ${this.tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = true\n`,
    );
  }

  /** A new token (own directory and configuration), initialized with a random user PIN. */
  static create(label = 'minkms-test', pin = 'pin-' + randomBytes(6).toString('hex')): SoftHsmToken {
    const t = new SoftHsmToken(label, pin);
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', t.soPin, '--pin', pin], {
      env: { ...process.env, SOFTHSM2_CONF: t.conf },
      stdio: 'ignore',
    });
    return t;
  }

  /** The environment a process needs to see this token. */
  get env(): { SOFTHSM2_CONF: string } {
    return { SOFTHSM2_CONF: this.conf };
  }

  /** Points this process's SoftHSM2 at the token (takes effect at the module's next C_Initialize). */
  use(): this {
    process.env.SOFTHSM2_CONF = this.conf;
    return this;
  }

  /** The token disappears, as a removed device would: its files move out of the token directory. */
  takeAway(): void {
    for (const d of readdirSync(this.tokens)) renameSync(join(this.tokens, d), join(this.#away, d));
  }

  bringBack(): void {
    for (const d of readdirSync(this.#away)) renameSync(join(this.#away, d), join(this.tokens, d));
  }

  /** An `hsm.pkcs11` section for this token and a key label. */
  config(key: string, extra: Partial<Pkcs11HsmConfig> = {}): Pkcs11HsmConfig {
    return {
      module: SOFTHSM_MODULE!,
      token: { label: this.label },
      pin: { value: new Secret(this.pin) },
      key: { label: key },
      mechanism: 'auto',
      timeout: 10_000,
      ...extra,
    };
  }

  /** The YAML of an `hsm.pkcs11` section (PIN through the environment variable `pinEnv`). */
  yaml(key: string, pinEnv = 'MINKMS_TEST_PKCS11_PIN'): string {
    return `hsm:\n  pkcs11:\n    module: ${SOFTHSM_MODULE}\n    token:\n      label: ${this.label}\n    pin:\n      env: ${pinEnv}\n    key:\n      label: ${key}\n    timeout: 10s\n`;
  }

  /**
   * Creates secret key objects with arbitrary attributes, directly (in this thread, its own
   * module instance) — for keys that `minkms hsm pkcs11 init` would never make: extractable,
   * imported with a known value (golden vectors), AES-128, …
   */
  createObjects(templates: Attribute[][]): void {
    this.use();
    const m = new Pkcs11Module(binding!, SOFTHSM_MODULE!);
    try {
      const lib = m.lib();
      const { slot } = findToken(lib, { label: this.label });
      const s = lib.C_OpenSession(slot, C.CKF_SERIAL_SESSION | C.CKF_RW_SESSION);
      try {
        lib.C_Login(s, C.CKU_USER, this.pin);
        for (const t of templates) lib.C_CreateObject(s, t);
      } finally {
        lib.C_CloseSession(s);
      }
    } finally {
      m.close();
    }
  }

  /** `minkms hsm pkcs11 init` for `label`, in this thread (call before opening HSMs on the token). */
  initKey(label: string, derive: 'auto' | 'hmac' | 'cmac' = 'auto'): CreatedKeys {
    this.use();
    const m = new Pkcs11Module(binding!, SOFTHSM_MODULE!);
    try {
      return createKeys(
        m,
        { module: SOFTHSM_MODULE!, token: { label: this.label }, key: { label }, pin: { value: this.pin }, mechanism: 'auto' },
        derive,
      );
    } finally {
      m.close();
    }
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A token secret-key template: AES or generic secret with a value, flags given. */
export function secretTemplate(
  label: string,
  keyType: 'aes' | 'generic',
  value: Buffer,
  flags: { encrypt?: boolean; sign?: boolean; sensitive?: boolean; extractable?: boolean; token?: boolean },
): Attribute[] {
  return [
    { type: C.CKA_CLASS, value: C.CKO_SECRET_KEY },
    { type: C.CKA_KEY_TYPE, value: keyType === 'aes' ? C.CKK_AES : C.CKK_GENERIC_SECRET },
    { type: C.CKA_TOKEN, value: flags.token ?? true },
    { type: C.CKA_PRIVATE, value: true },
    { type: C.CKA_LABEL, value: label },
    { type: C.CKA_VALUE, value },
    { type: C.CKA_SENSITIVE, value: flags.sensitive ?? true },
    { type: C.CKA_EXTRACTABLE, value: flags.extractable ?? false },
    { type: C.CKA_ENCRYPT, value: flags.encrypt ?? false },
    { type: C.CKA_DECRYPT, value: flags.encrypt ?? false },
    { type: C.CKA_SIGN, value: flags.sign ?? false },
    { type: C.CKA_VERIFY, value: flags.sign ?? false },
  ];
}
