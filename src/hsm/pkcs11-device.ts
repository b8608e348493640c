/**
 * The PKCS#11 device: one loaded module, one session per configured key, and the HSM port's
 * operations done inside the token. Synchronous, like PKCS#11 itself: the server runs it in a
 * worker thread (pkcs11-worker.ts, one call at a time, so a session is never used by two calls
 * at once and a slow device never blocks the event loop); the CLI (`minkms hsm pkcs11 …`) runs
 * it directly.
 *
 * The key is a pair of token objects sharing one label (or CKA_ID), both CKA_SENSITIVE=true,
 * CKA_EXTRACTABLE=false, CKA_TOKEN=true:
 *   - an AES-256 secret key with CKA_ENCRYPT/CKA_DECRYPT: seals the REK (CKM_AES_GCM; or
 *     CKM_AES_CBC_PAD then a MAC with the second object, for devices without GCM);
 *   - a generic secret (≥ 32 bytes) with CKA_SIGN for CKM_SHA256_HMAC — or, on devices without
 *     HMAC, an AES-256 key with CKA_SIGN (and no CKA_ENCRYPT) for CKM_AES_CMAC: derives keys.
 * Neither ever leaves the device; the REK crosses the module boundary only as plaintext input to
 * C_Encrypt and output of C_Decrypt, and nothing the device returns is written anywhere.
 *
 * Failures are {@link DeviceError}s, `permanent` when retrying cannot help (see
 * {@link classify} and docs/hsm.md). After a transient failure the module is finalized, so that the
 * next call starts from C_Initialize: that re-scans the slots (a token plugged back in, an HA
 * member back) and opens a new session (a session lost to CKR_SESSION_HANDLE_INVALID,
 * CKR_DEVICE_REMOVED, …). Each operation is retried once that way before it fails.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  ckrName,
  handleNumber,
  type Attribute,
  type Binding,
  type Handle,
  type Pkcs11Lib,
  type TokenInfo,
  CKA_CLASS,
  CKA_DECRYPT,
  CKA_DERIVE,
  CKA_ENCRYPT,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_NEVER_EXTRACTABLE,
  CKA_ALWAYS_SENSITIVE,
  CKA_PRIVATE,
  CKA_SENSITIVE,
  CKA_SIGN,
  CKA_TOKEN,
  CKA_UNWRAP,
  CKA_VALUE_LEN,
  CKA_VERIFY,
  CKA_WRAP,
  CKF_OS_LOCKING_OK,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKF_TOKEN_INITIALIZED,
  CKK_AES,
  CKK_GENERIC_SECRET,
  CKM_AES_CBC_PAD,
  CKM_AES_CMAC,
  CKM_AES_GCM,
  CKM_AES_KEY_GEN,
  CKM_GENERIC_SECRET_KEY_GEN,
  CKM_SHA256_HMAC,
  CKO_SECRET_KEY,
  CKU_USER,
} from './pkcs11-api.js';
import {
  CBC_IV_BYTES,
  GCM_IV_BYTES,
  GCM_TAG_BYTES,
  MECH_AES_GCM,
  MECH_CBC_CMAC,
  MECH_CBC_HMAC,
  cmacDeriveBlocks,
  deriveMessage,
  gcmAad,
  header,
  macInput,
  mechanismName,
  parseBlob,
  type BlobMechanism,
  type ParsedBlob,
} from './pkcs11-blob.js';

/** The device's part of `hsm.pkcs11`, as plain data (it crosses to the worker thread). */
export interface DeviceConfig {
  module: string;
  token: { label?: string; serial?: string; slot?: number };
  key: { label?: string; id?: string };
  pin: { value: string } | { env: string } | { file: string };
  mechanism: 'auto' | 'aes-gcm' | 'aes-cbc-pad-hmac';
}

/** A failure of the device or its configuration; the message never contains the PIN. */
export class DeviceError extends Error {
  readonly permanent: boolean;
  /** The PKCS#11 return value's name, when the module returned one. */
  readonly ckr: string | undefined;
  constructor(message: string, permanent: boolean, ckr?: string) {
    super(message);
    this.name = 'DeviceError';
    this.permanent = permanent;
    this.ckr = ckr;
  }
}

/**
 * Return values that say the session, the token or the module went away or is busy — they
 * heal by re-opening (token re-inserted, device back, new login). Every other CKR is a
 * property of the key, the mechanism or the data, and retrying the same call cannot change it.
 */
const TRANSIENT = new Set([
  'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_DEVICE_ERROR',
  'CKR_DEVICE_MEMORY',
  'CKR_DEVICE_REMOVED',
  'CKR_FUNCTION_CANCELED',
  'CKR_FUNCTION_FAILED',
  'CKR_GENERAL_ERROR',
  'CKR_HOST_MEMORY',
  'CKR_KEY_HANDLE_INVALID',
  'CKR_OBJECT_HANDLE_INVALID',
  'CKR_OPERATION_ACTIVE',
  'CKR_SESSION_CLOSED',
  'CKR_SESSION_COUNT',
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SLOT_ID_INVALID',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_CANT_LOCK',
]);

/** C_Decrypt's ways of saying "this ciphertext does not open under this key". */
const AUTH_FAILED = new Set([
  'CKR_ENCRYPTED_DATA_INVALID',
  'CKR_ENCRYPTED_DATA_LEN_RANGE',
  'CKR_AEAD_DECRYPT_FAILED',
  'CKR_SIGNATURE_INVALID',
]);

/** C_Login's ways of saying "wrong PIN". Retrying would count towards the token's lock-out. */
const PIN_REFUSED = new Set(['CKR_PIN_INCORRECT', 'CKR_PIN_INVALID', 'CKR_PIN_LEN_RANGE']);

/** Turns anything a PKCS#11 call threw into a DeviceError saying what was being done. */
export function classify(err: unknown, what: string): DeviceError {
  if (err instanceof DeviceError) return err;
  const ckr = ckrName(err);
  if (ckr) return new DeviceError(`${what}: the device returned ${ckr}`, !TRANSIENT.has(ckr), ckr);
  // Not a return value (a binding or argument error): may be a passing condition of the module.
  return new DeviceError(`${what}: ${String((err as Error)?.message ?? err).split('\n')[0]}`, false);
}

/** One loaded PKCS#11 library (per process, shared by the devices that use the same path). */
export class Pkcs11Module {
  readonly path: string;
  /** pkcs11js's tag for a CK_GCM_PARAMS mechanism parameter. */
  readonly gcmParams: number;
  readonly #lib: Pkcs11Lib;
  #initialized = false;
  /** Incremented at every finalize: sessions of older generations are gone. */
  generation = 0;

  constructor(binding: Binding, path: string) {
    this.path = path;
    this.gcmParams = binding.CK_PARAMS_AES_GCM;
    const lib = new binding.PKCS11();
    try {
      lib.load(path);
    } catch (err) {
      // A wrong path or a library that is not a PKCS#11 module: fixed only by the operator.
      throw new DeviceError(`cannot load the PKCS#11 module ${path}: ${String((err as Error).message).split('\n')[0]}`, true);
    }
    this.#lib = lib;
  }

  /** The library, initialized (C_Initialize once per generation). */
  lib(): Pkcs11Lib {
    if (!this.#initialized) {
      try {
        this.#lib.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      } catch (err) {
        const ckr = ckrName(err);
        if (ckr === 'CKR_CANT_LOCK') {
          // A module without OS locking: calls are serialized by the caller anyway.
          try {
            this.#lib.C_Initialize();
          } catch (err2) {
            if (ckrName(err2) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw classify(err2, `initialize the PKCS#11 module ${this.path}`);
          }
        } else if (ckr !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
          // Another user in this process initialized it (a previous worker): that is fine.
          throw classify(err, `initialize the PKCS#11 module ${this.path}`);
        }
      }
      this.#initialized = true;
    }
    return this.#lib;
  }

  /** Finalizes the module: every session closes; the next call re-initializes (re-scans the slots). */
  reset(): void {
    if (this.#initialized) {
      try {
        this.#lib.C_Finalize();
      } catch {
        // Already finalized underneath, or the device is gone: either way it is reset now.
      }
    }
    this.#initialized = false;
    this.generation++;
  }

  /**
   * Test hook: C_Finalize without telling the devices (their sessions die under them, as when
   * another library user in the process finalizes, or a vendor client restarts).
   */
  finalizeBehindTheDevicesBack(): void {
    if (!this.#initialized) return;
    try {
      this.#lib.C_Finalize();
    } catch {
      // Already finalized.
    }
  }

  close(): void {
    this.reset();
    try {
      this.#lib.close();
    } catch {
      // dlclose failing leaves a mapped library behind, nothing more.
    }
  }
}

interface KeyAttrs {
  handle: Handle;
  keyType: number;
  token: boolean;
  sensitive: boolean;
  extractable: boolean;
  alwaysSensitive: boolean;
  neverExtractable: boolean;
  encrypt: boolean;
  decrypt: boolean;
  sign: boolean;
  valueLen: number;
}

interface Session {
  handle: Handle;
  generation: number;
  slot: Handle;
  token: TokenInfo;
  sealKey: Handle;
  deriveKey: Handle;
  deriveKind: 'hmac' | 'cmac';
  mechs: Set<number>;
}

/** What `check()` reports (and `minkms hsm pkcs11 check` prints). */
export interface DeviceInfo {
  token: { label: string; serial: string; model: string; manufacturer: string; slot: number };
  seal: string;
  derive: string;
  mechanisms: { aesGcm: boolean; aesCbcPad: boolean; sha256Hmac: boolean; aesCmac: boolean };
}

export function describeToken(t: DeviceConfig['token']): string {
  return t.label !== undefined
    ? `token '${t.label}'`
    : t.serial !== undefined
      ? `token with serial ${t.serial}`
      : `token in slot ${t.slot}`;
}

export function describeKey(k: DeviceConfig['key']): string {
  return k.label !== undefined ? `key '${k.label}'` : `key with id ${k.id}`;
}

function readPin(src: DeviceConfig['pin']): string {
  if ('value' in src) return src.value;
  if ('env' in src) {
    const v = process.env[src.env];
    if (!v) throw new DeviceError(`the PIN variable ${src.env} (hsm.pkcs11.pin.env) is not set`, true);
    return v;
  }
  let text: string;
  try {
    text = readFileSync(src.file, 'utf8');
  } catch (err) {
    throw new DeviceError(
      `cannot read the PIN file ${src.file} (hsm.pkcs11.pin.file): ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      true,
    );
  }
  const pin = text.replace(/\r?\n$/, '');
  if (pin === '') throw new DeviceError(`the PIN file ${src.file} is empty`, true);
  return pin;
}

function pinFingerprint(pin: string, token: TokenInfo): Buffer {
  return createHash('sha256').update(`${token.serialNumber}\0${pin}`).digest();
}

function bool(v: Buffer | undefined): boolean {
  return v !== undefined && v.length > 0 && v[0] !== 0;
}

function ulong(v: Buffer | undefined): number {
  if (!v || v.length === 0) return 0;
  return v.length >= 8 ? Number(v.readBigUInt64LE(0)) : v.readUInt32LE(0);
}

/** The slot holding the configured token; transient if absent (removed, device down), permanent if ambiguous. */
export function findToken(lib: Pkcs11Lib, want: DeviceConfig['token']): { slot: Handle; info: TokenInfo } {
  let slots: Handle[];
  try {
    slots = lib.C_GetSlotList(true);
  } catch (err) {
    throw classify(err, 'list the slots');
  }
  const matches: Array<{ slot: Handle; info: TokenInfo }> = [];
  const seen: string[] = [];
  for (const slot of slots) {
    let info: TokenInfo;
    try {
      info = lib.C_GetTokenInfo(slot);
    } catch {
      continue; // a token that went away between the two calls
    }
    if ((info.flags & CKF_TOKEN_INITIALIZED) === 0) continue;
    const label = info.label.trimEnd();
    seen.push(`'${label}'`);
    if (want.label !== undefined && label !== want.label) continue;
    if (want.serial !== undefined && info.serialNumber.trim() !== want.serial) continue;
    if (want.slot !== undefined && handleNumber(slot) !== want.slot) continue;
    matches.push({ slot, info });
  }
  if (matches.length === 0) {
    throw new DeviceError(
      `no ${describeToken(want)} is present (initialized tokens: ${seen.length > 0 ? seen.join(', ') : 'none'}); is the device connected and its module configured?`,
      false,
    );
  }
  if (matches.length > 1) {
    throw new DeviceError(
      `${matches.length} tokens match ${describeToken(want)}: name the token by serial (hsm.pkcs11.token.serial)`,
      true,
    );
  }
  return matches[0]!;
}

/** Logs the user in on `session`; a refused PIN is permanent (and remembered by the caller). */
function login(lib: Pkcs11Lib, session: Handle, pin: string, token: string): void {
  try {
    lib.C_Login(session, CKU_USER, pin);
  } catch (err) {
    const ckr = ckrName(err);
    if (ckr === 'CKR_USER_ALREADY_LOGGED_IN') return; // login state is per token and process
    if (ckr && PIN_REFUSED.has(ckr)) throw new DeviceError(`the ${token} refused the user PIN (${ckr})`, true, ckr);
    if (ckr === 'CKR_PIN_LOCKED')
      throw new DeviceError(`the user PIN of the ${token} is locked (${ckr}): the security officer must reset it`, true, ckr);
    if (ckr === 'CKR_PIN_EXPIRED') throw new DeviceError(`the user PIN of the ${token} has expired (${ckr}): set a new one`, true, ckr);
    throw classify(err, `log in to the ${token}`);
  }
}

function findObjects(lib: Pkcs11Lib, session: Handle, template: Attribute[]): Handle[] {
  lib.C_FindObjectsInit(session, template);
  try {
    return lib.C_FindObjects(session, 16);
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

function keyTemplate(key: DeviceConfig['key']): Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_SECRET_KEY },
    key.label !== undefined ? { type: CKA_LABEL, value: key.label } : { type: CKA_ID, value: Buffer.from(key.id!, 'hex') },
  ];
}

function readKey(lib: Pkcs11Lib, session: Handle, handle: Handle): KeyAttrs {
  const types = [
    CKA_KEY_TYPE,
    CKA_TOKEN,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VALUE_LEN,
  ];
  const got = new Map(
    lib
      .C_GetAttributeValue(
        session,
        handle,
        types.map((type) => ({ type })),
      )
      .map((a) => [a.type, a.value]),
  );
  return {
    handle,
    keyType: ulong(got.get(CKA_KEY_TYPE)),
    token: bool(got.get(CKA_TOKEN)),
    sensitive: bool(got.get(CKA_SENSITIVE)),
    extractable: bool(got.get(CKA_EXTRACTABLE)),
    alwaysSensitive: bool(got.get(CKA_ALWAYS_SENSITIVE)),
    neverExtractable: bool(got.get(CKA_NEVER_EXTRACTABLE)),
    encrypt: bool(got.get(CKA_ENCRYPT)),
    decrypt: bool(got.get(CKA_DECRYPT)),
    sign: bool(got.get(CKA_SIGN)),
    valueLen: ulong(got.get(CKA_VALUE_LEN)),
  };
}

export class Pkcs11Device {
  readonly #m: Pkcs11Module;
  readonly #cfg: DeviceConfig;
  readonly #notice: (msg: string) => void;
  #s: Session | undefined;
  /** Fingerprint of a PIN the token refused: never presented again (a token locks after a few). */
  #refusedPin: Buffer | undefined;
  #warned = false;

  constructor(module: Pkcs11Module, cfg: DeviceConfig, notice: (msg: string) => void = () => {}) {
    this.#m = module;
    this.#cfg = cfg;
    this.#notice = notice;
  }

  get #where(): string {
    return `${describeKey(this.#cfg.key)} on the ${describeToken(this.#cfg.token)}`;
  }

  /**
   * Runs `fn` on a live session; on a transient failure finalizes the module and tries once
   * more on a fresh session. Permanent failures are thrown at once.
   */
  #run<T>(what: string, fn: (lib: Pkcs11Lib, s: Session) => T): T {
    for (let attempt = 0; ; attempt++) {
      try {
        const s = this.#session();
        return fn(this.#m.lib(), s);
      } catch (err) {
        const e = classify(err, what);
        if (!e.permanent) {
          // Whatever went away, start again from C_Initialize on a new session.
          this.#s = undefined;
          this.#m.reset();
        }
        if (e.permanent || attempt > 0) throw e;
      }
    }
  }

  #session(): Session {
    if (this.#s && this.#s.generation === this.#m.generation) return this.#s;
    this.#s = undefined;
    const lib = this.#m.lib();
    const { slot, info } = findToken(lib, this.#cfg.token);
    const pin = readPin(this.#cfg.pin);
    const fp = pinFingerprint(pin, info);
    if (this.#refusedPin?.equals(fp)) {
      throw new DeviceError(
        `the ${describeToken(this.#cfg.token)} refused this PIN before; it is not presented again so as not to lock the token: correct hsm.pkcs11.pin`,
        true,
      );
    }
    let handle: Handle;
    try {
      handle = lib.C_OpenSession(slot, CKF_SERIAL_SESSION);
    } catch (err) {
      throw classify(err, `open a session on the ${describeToken(this.#cfg.token)}`);
    }
    try {
      try {
        login(lib, handle, pin, describeToken(this.#cfg.token));
      } catch (err) {
        if (err instanceof DeviceError && err.ckr && PIN_REFUSED.has(err.ckr)) this.#refusedPin = fp;
        throw err;
      }
      const { seal, derive } = this.#findKeys(lib, handle);
      const mechs = new Set(lib.C_GetMechanismList(slot));
      this.#s = {
        handle,
        generation: this.#m.generation,
        slot,
        token: info,
        sealKey: seal.handle,
        deriveKey: derive.handle,
        deriveKind: derive.keyType === CKK_GENERIC_SECRET ? 'hmac' : 'cmac',
        mechs,
      };
      return this.#s;
    } catch (err) {
      try {
        lib.C_CloseSession(handle);
      } catch {
        // The session is useless either way.
      }
      throw err;
    }
  }

  /** Finds the AES key and the derivation key and refuses any that could leave the device. */
  #findKeys(lib: Pkcs11Lib, session: Handle): { seal: KeyAttrs; derive: KeyAttrs } {
    const keys = findObjects(lib, session, keyTemplate(this.#cfg.key)).map((h) => readKey(lib, session, h));
    const seal = keys.filter((k) => k.keyType === CKK_AES && k.encrypt && k.decrypt);
    const derive = keys.filter((k) => k.sign && (k.keyType === CKK_GENERIC_SECRET || (k.keyType === CKK_AES && !k.encrypt)));
    const create = `create one with 'minkms hsm pkcs11 init'`;
    if (seal.length === 0) {
      const other =
        keys.length > 0
          ? ` (${keys.length} other secret key object(s) have this ${this.#cfg.key.label !== undefined ? 'label' : 'id'})`
          : '';
      throw new DeviceError(`the ${this.#where} does not exist: no AES key with CKA_ENCRYPT and CKA_DECRYPT${other}; ${create}`, true);
    }
    if (derive.length === 0) {
      throw new DeviceError(
        `the ${this.#where} has no derivation key (a generic secret with CKA_SIGN for HMAC-SHA256, or an AES key with CKA_SIGN for CMAC, with the same ${this.#cfg.key.label !== undefined ? 'label' : 'id'}); ${create}`,
        true,
      );
    }
    if (seal.length > 1 || derive.length > 1) {
      throw new DeviceError(`the ${this.#where} is ambiguous: several objects match; name the key by id (hsm.pkcs11.key.id)`, true);
    }
    const s = seal[0]!;
    const d = derive[0]!;
    for (const [k, role] of [
      [s, 'AES key'],
      [d, 'derivation key'],
    ] as const) {
      const refuse = (why: string) =>
        new DeviceError(
          `refusing the ${role} of the ${this.#where}: ${why}; create a non-extractable key with 'minkms hsm pkcs11 init'`,
          true,
        );
      if (k.extractable) throw refuse('it is extractable (CKA_EXTRACTABLE=true), so its value can leave the device');
      if (!k.sensitive) throw refuse('it is not sensitive (CKA_SENSITIVE=false), so its value can be read');
      if (!k.token) throw refuse('it is a session object (CKA_TOKEN=false) and vanishes with the session');
    }
    if (s.valueLen !== 32)
      throw new DeviceError(`refusing the AES key of the ${this.#where}: it is AES-${s.valueLen * 8}; AES-256 is required`, true);
    if (d.valueLen < 32 || (d.keyType === CKK_AES && d.valueLen !== 32)) {
      throw new DeviceError(`refusing the derivation key of the ${this.#where}: ${d.valueLen} bytes; 32 are required`, true);
    }
    if (!this.#warned && [s, d].some((k) => !k.alwaysSensitive || !k.neverExtractable)) {
      this.#warned = true;
      this.#notice(
        `the ${this.#where} was imported or was once extractable (CKA_ALWAYS_SENSITIVE or CKA_NEVER_EXTRACTABLE is false): copies of it may exist outside the device`,
      );
    }
    return { seal: s, derive: d };
  }

  #need(s: Session, mech: number, name: string): void {
    if (!s.mechs.has(mech)) throw new DeviceError(`the ${describeToken(this.#cfg.token)} does not offer ${name}`, true);
  }

  /** The mechanism a new seal uses: `hsm.pkcs11.mechanism`, or for `auto` GCM when offered, else CBC-PAD + MAC. */
  #sealMechanism(s: Session): BlobMechanism {
    const cbc: BlobMechanism = s.deriveKind === 'hmac' ? MECH_CBC_HMAC : MECH_CBC_CMAC;
    switch (this.#cfg.mechanism) {
      case 'aes-gcm':
        return MECH_AES_GCM;
      case 'aes-cbc-pad-hmac':
        return cbc;
      default:
        return s.mechs.has(CKM_AES_GCM) ? MECH_AES_GCM : cbc;
    }
  }

  #mac(lib: Pkcs11Lib, s: Session, data: Buffer): Buffer {
    if (s.deriveKind === 'hmac') {
      this.#need(s, CKM_SHA256_HMAC, 'CKM_SHA256_HMAC');
      lib.C_SignInit(s.handle, { mechanism: CKM_SHA256_HMAC }, s.deriveKey);
      return Buffer.from(lib.C_Sign(s.handle, data, Buffer.alloc(32)));
    }
    this.#need(s, CKM_AES_CMAC, 'CKM_AES_CMAC');
    lib.C_SignInit(s.handle, { mechanism: CKM_AES_CMAC }, s.deriveKey);
    return Buffer.from(lib.C_Sign(s.handle, data, Buffer.alloc(16)));
  }

  #gcm(iv: Buffer, aad: Buffer) {
    return {
      mechanism: CKM_AES_GCM,
      parameter: { type: this.#m.gcmParams, iv, ivBits: iv.length * 8, aad: gcmAad(aad), tagBits: GCM_TAG_BYTES * 8 },
    };
  }

  #encrypt(lib: Pkcs11Lib, s: Session, mech: BlobMechanism, plaintext: Buffer, aad: Buffer, iv: Buffer): Buffer {
    const hdr = header(mech);
    if (mech === MECH_AES_GCM) {
      this.#need(s, CKM_AES_GCM, 'CKM_AES_GCM');
      if (iv.length !== GCM_IV_BYTES) throw new DeviceError('internal: wrong IV length', true);
      lib.C_EncryptInit(s.handle, this.#gcm(iv, aad), s.sealKey);
      const ct = Buffer.from(lib.C_Encrypt(s.handle, plaintext, Buffer.alloc(plaintext.length + GCM_TAG_BYTES + 16)));
      return Buffer.concat([hdr, iv, ct]);
    }
    this.#need(s, CKM_AES_CBC_PAD, 'CKM_AES_CBC_PAD');
    if (iv.length !== CBC_IV_BYTES) throw new DeviceError('internal: wrong IV length', true);
    lib.C_EncryptInit(s.handle, { mechanism: CKM_AES_CBC_PAD, parameter: iv }, s.sealKey);
    const ct = Buffer.from(lib.C_Encrypt(s.handle, plaintext, Buffer.alloc(plaintext.length + 32)));
    return Buffer.concat([hdr, iv, ct, this.#mac(lib, s, macInput(hdr, iv, ct, aad))]);
  }

  /** Seals `plaintext` bound to `aad`. `iv` comes from the caller (tests fix it for golden vectors). */
  seal(plaintext: Buffer, aad: Buffer, iv?: (bytes: number) => Buffer): Buffer {
    return this.#run(`seal with the ${this.#where}`, (lib, s) => {
      const mech = this.#sealMechanism(s);
      const nonce = (iv ?? randomBytes)(mech === MECH_AES_GCM ? GCM_IV_BYTES : CBC_IV_BYTES);
      return this.#encrypt(lib, s, mech, plaintext, aad, nonce);
    });
  }

  unseal(blob: Buffer, aad: Buffer): Buffer {
    const p = parseBlob(blob);
    if (!p) throw new DeviceError('unsupported or damaged sealed entry format', true);
    const cannotOpen = () =>
      new DeviceError(
        `the ${this.#where} cannot open this sealed entry (${mechanismName(p.mech)}): it was sealed by another key, for another cluster, or was altered`,
        true,
      );
    return this.#run(`unseal with the ${this.#where}`, (lib, s) => this.#open(lib, s, p, aad, cannotOpen, false));
  }

  /**
   * Opens a parsed blob. A failed C_Decrypt means the data does not open (permanent) or the
   * device failed (transient); some modules (SoftHSM2 among them) report a GCM tag mismatch as
   * CKR_GENERAL_ERROR, like a device fault, so then a round trip of fresh data through the same
   * key and mechanism tells the two apart. `probing`: this is that round trip.
   */
  #open(lib: Pkcs11Lib, s: Session, p: ParsedBlob, aad: Buffer, cannotOpen: () => DeviceError, probing: boolean): Buffer {
    const failed = (err: unknown): DeviceError => {
      const ckr = ckrName(err);
      if (probing) return classify(err, 'self-test');
      if (ckr && AUTH_FAILED.has(ckr)) return cannotOpen();
      if (ckr !== 'CKR_GENERAL_ERROR' && ckr !== 'CKR_FUNCTION_FAILED') return classify(err, 'decrypt');
      this.#selfTest(lib, s, p.mech); // throws (transient) if the device itself is failing
      return cannotOpen();
    };
    if (p.mech === MECH_AES_GCM) {
      this.#need(s, CKM_AES_GCM, 'CKM_AES_GCM');
      lib.C_DecryptInit(s.handle, this.#gcm(p.iv, aad), s.sealKey);
      try {
        return Buffer.from(lib.C_Decrypt(s.handle, p.body, Buffer.alloc(p.body.length)));
      } catch (err) {
        throw failed(err);
      }
    }
    if ((p.mech === MECH_CBC_HMAC) !== (s.deriveKind === 'hmac')) throw cannotOpen();
    const want = this.#mac(lib, s, macInput(p.header, p.iv, p.body, aad));
    if (want.length !== p.tag.length || !timingSafeEqual(want, p.tag)) throw cannotOpen();
    this.#need(s, CKM_AES_CBC_PAD, 'CKM_AES_CBC_PAD');
    lib.C_DecryptInit(s.handle, { mechanism: CKM_AES_CBC_PAD, parameter: p.iv }, s.sealKey);
    try {
      return Buffer.from(lib.C_Decrypt(s.handle, p.body, Buffer.alloc(p.body.length)));
    } catch (err) {
      throw failed(err);
    }
  }

  /** Seals and opens 32 random bytes with the session's keys and `mech`; throws if the device does not give them back. */
  #selfTest(lib: Pkcs11Lib, s: Session, mech: BlobMechanism): void {
    const probe = randomBytes(32);
    const aad = Buffer.from('minkms pkcs11 self-test');
    const blob = this.#encrypt(lib, s, mech, probe, aad, randomBytes(mech === MECH_AES_GCM ? GCM_IV_BYTES : CBC_IV_BYTES));
    const broken = () => new DeviceError('the device failed a self-test (a seal/unseal round trip of fresh data)', false);
    const back = this.#open(lib, s, parseBlob(blob)!, aad, broken, true);
    if (!back.equals(probe)) throw broken();
  }

  /** 32 bytes, deterministic for the key and `label`: HMAC-SHA256, or two CMAC blocks (see pkcs11-blob.ts). */
  derive(label: string): Buffer {
    return this.#run(`derive with the ${this.#where}`, (lib, s) => {
      if (s.deriveKind === 'hmac') return this.#mac(lib, s, deriveMessage(label));
      const [b1, b2] = cmacDeriveBlocks(label);
      return Buffer.concat([this.#mac(lib, s, b1), this.#mac(lib, s, b2)]);
    });
  }

  /** Opens the key, checks it and the mechanisms, and runs a seal/unseal round trip. */
  check(): DeviceInfo {
    return this.#run(`check the ${this.#where}`, (lib, s) => {
      const mech = this.#sealMechanism(s);
      this.#selfTest(lib, s, mech);
      return {
        token: {
          label: s.token.label.trimEnd(),
          serial: s.token.serialNumber.trim(),
          model: s.token.model.trim(),
          manufacturer: s.token.manufacturerID.trim(),
          slot: handleNumber(s.slot),
        },
        seal: mechanismName(mech),
        derive: s.deriveKind === 'hmac' ? 'HMAC-SHA256 (CKM_SHA256_HMAC)' : 'AES-CMAC counter mode (CKM_AES_CMAC)',
        mechanisms: {
          aesGcm: s.mechs.has(CKM_AES_GCM),
          aesCbcPad: s.mechs.has(CKM_AES_CBC_PAD),
          sha256Hmac: s.mechs.has(CKM_SHA256_HMAC),
          aesCmac: s.mechs.has(CKM_AES_CMAC),
        },
      };
    });
  }

  /** Cheap liveness: the session is open (re-opened if it was lost). */
  probe(): void {
    this.#run(`reach the ${this.#where}`, (lib, s) => void lib.C_GetSessionInfo(s.handle));
  }

  /** Test hook: closes the session behind the device's back, as a token removal would. */
  dropSession(): void {
    if (!this.#s) return;
    try {
      this.#m.lib().C_CloseSession(this.#s.handle);
    } catch {
      // Gone already.
    }
  }

  close(): void {
    if (this.#s && this.#s.generation === this.#m.generation) {
      try {
        this.#m.lib().C_CloseSession(this.#s.handle);
      } catch {
        // Closing a dead session.
      }
    }
    this.#s = undefined;
  }
}

export interface CreatedKeys {
  label: string;
  id: string;
  derive: 'hmac' | 'cmac';
  token: { label: string; serial: string };
}

/**
 * `minkms hsm pkcs11 init`: generates the key pair inside the token — the AES-256 key and the
 * derivation key (HMAC secret, or a CMAC key where the token lacks HMAC) — with the label and a
 * CKA_ID shared by both, CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, and only
 * the usage flags each needs. Refuses when objects with that label or id exist already.
 */
export function createKeys(
  module: Pkcs11Module,
  cfg: DeviceConfig & { key: { label: string; id?: string } },
  derive: 'auto' | 'hmac' | 'cmac' = 'auto',
): CreatedKeys {
  const lib = module.lib();
  const { slot, info } = findToken(lib, cfg.token);
  const token = describeToken(cfg.token);
  const session = lib.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
  try {
    login(lib, session, readPin(cfg.pin), token);
    const id = cfg.key.id ?? randomBytes(8).toString('hex');
    for (const t of [keyTemplate({ label: cfg.key.label }), keyTemplate({ id })]) {
      if (findObjects(lib, session, t).length > 0) {
        const what = t[1]!.type === CKA_LABEL ? `label '${cfg.key.label}'` : `id ${id}`;
        throw new DeviceError(`the ${token} already has a secret key with ${what}: choose another, or use the existing key`, true);
      }
    }
    const mechs = new Set(lib.C_GetMechanismList(slot));
    const hasHmac = mechs.has(CKM_SHA256_HMAC) && mechs.has(CKM_GENERIC_SECRET_KEY_GEN);
    const hasCmac = mechs.has(CKM_AES_CMAC);
    const kind = derive === 'auto' ? (hasHmac ? 'hmac' : 'cmac') : derive;
    if (!mechs.has(CKM_AES_KEY_GEN)) throw new DeviceError(`the ${token} cannot generate AES keys (no CKM_AES_KEY_GEN)`, true);
    if (kind === 'hmac' && !hasHmac)
      throw new DeviceError(`the ${token} offers no HMAC-SHA256 (CKM_SHA256_HMAC, CKM_GENERIC_SECRET_KEY_GEN)`, true);
    if (kind === 'cmac' && !hasCmac) throw new DeviceError(`the ${token} offers neither HMAC-SHA256 nor AES-CMAC for key derivation`, true);
    if (!mechs.has(CKM_AES_GCM) && !mechs.has(CKM_AES_CBC_PAD))
      throw new DeviceError(`the ${token} offers neither CKM_AES_GCM nor CKM_AES_CBC_PAD`, true);

    const common: Attribute[] = [
      { type: CKA_CLASS, value: CKO_SECRET_KEY },
      { type: CKA_TOKEN, value: true },
      { type: CKA_PRIVATE, value: true },
      { type: CKA_SENSITIVE, value: true },
      { type: CKA_EXTRACTABLE, value: false },
      { type: CKA_LABEL, value: cfg.key.label },
      { type: CKA_ID, value: Buffer.from(id, 'hex') },
      { type: CKA_WRAP, value: false },
      { type: CKA_UNWRAP, value: false },
      { type: CKA_DERIVE, value: false },
    ];
    const aes = lib.C_GenerateKey(session, { mechanism: CKM_AES_KEY_GEN }, [
      ...common,
      { type: CKA_KEY_TYPE, value: CKK_AES },
      { type: CKA_VALUE_LEN, value: 32 },
      { type: CKA_ENCRYPT, value: true },
      { type: CKA_DECRYPT, value: true },
      { type: CKA_SIGN, value: false },
      { type: CKA_VERIFY, value: false },
    ]);
    try {
      lib.C_GenerateKey(session, { mechanism: kind === 'hmac' ? CKM_GENERIC_SECRET_KEY_GEN : CKM_AES_KEY_GEN }, [
        ...common,
        { type: CKA_KEY_TYPE, value: kind === 'hmac' ? CKK_GENERIC_SECRET : CKK_AES },
        { type: CKA_VALUE_LEN, value: 32 },
        { type: CKA_ENCRYPT, value: false },
        { type: CKA_DECRYPT, value: false },
        { type: CKA_SIGN, value: true },
        { type: CKA_VERIFY, value: true },
      ]);
    } catch (err) {
      // Never leave half a key behind: a later init with the same label would be refused.
      try {
        lib.C_DestroyObject(session, aes);
      } catch {
        // Reported below with the original failure.
      }
      throw err;
    }
    return { label: cfg.key.label, id, derive: kind, token: { label: info.label.trimEnd(), serial: info.serialNumber.trim() } };
  } catch (err) {
    throw classify(err, `create the ${describeKey(cfg.key)} on the ${token}`);
  } finally {
    try {
      lib.C_CloseSession(session);
    } catch {
      // Nothing to undo.
    }
  }
}
