/**
 * The part of the PKCS#11 binding (`pkcs11js`, an optional dependency) that minkms uses, typed
 * here rather than imported from the package: the build and every user without PKCS#11 must
 * not depend on a native module that may have failed to compile. The binding is loaded with a
 * dynamic `import()` only when `hsm.pkcs11` is configured (see {@link loadBinding}).
 *
 * Constants are the numbers of the PKCS#11 standard (v2.40 / v3.0 `pkcs11t.h`); they are the same
 * for every module, so they are written out here instead of read from the binding.
 */

/** An opaque CK_ULONG handle (slot, session, object), as pkcs11js represents it. */
export type Handle = Buffer;

export interface Attribute {
  type: number;
  value?: number | boolean | string | Buffer;
}

export interface Mechanism {
  mechanism: number;
  parameter?: Buffer | { type: number; iv: Buffer; ivBits: number; aad?: Buffer; tagBits?: number };
}

export interface TokenInfo {
  label: string;
  manufacturerID: string;
  model: string;
  serialNumber: string;
  flags: number;
}

/** One loaded module (`new PKCS11(); load(path)`); every call is synchronous. */
export interface Pkcs11Lib {
  load(path: string): void;
  close(): void;
  C_Initialize(options?: { flags?: number }): void;
  C_Finalize(): void;
  C_GetSlotList(tokenPresent?: boolean): Handle[];
  C_GetTokenInfo(slot: Handle): TokenInfo;
  C_GetMechanismList(slot: Handle): number[];
  C_OpenSession(slot: Handle, flags: number): Handle;
  C_CloseSession(session: Handle): void;
  C_GetSessionInfo(session: Handle): { slotID: Handle; state: number; flags: number };
  C_Login(session: Handle, userType: number, pin?: string): void;
  C_FindObjectsInit(session: Handle, template: Attribute[]): void;
  C_FindObjects(session: Handle, maxObjectCount: number): Handle[];
  C_FindObjectsFinal(session: Handle): void;
  C_GetAttributeValue(session: Handle, object: Handle, template: Attribute[]): Array<{ type: number; value?: Buffer }>;
  C_CreateObject(session: Handle, template: Attribute[]): Handle;
  C_DestroyObject(session: Handle, object: Handle): void;
  C_GenerateKey(session: Handle, mechanism: Mechanism, template: Attribute[]): Handle;
  C_EncryptInit(session: Handle, mechanism: Mechanism, key: Handle): void;
  C_Encrypt(session: Handle, inData: Buffer, outData: Buffer): Buffer;
  C_DecryptInit(session: Handle, mechanism: Mechanism, key: Handle): void;
  C_Decrypt(session: Handle, inData: Buffer, outData: Buffer): Buffer;
  C_SignInit(session: Handle, mechanism: Mechanism, key: Handle): void;
  C_Sign(session: Handle, inData: Buffer, outData: Buffer): Buffer;
}

/** What `import('pkcs11js')` gives: the class and pkcs11js's own constant for GCM parameters. */
export interface Binding {
  PKCS11: new () => Pkcs11Lib;
  /** pkcs11js's tag for a CK_GCM_PARAMS structure (with ulIvBits, PKCS#11 v2.40 errata / v3.0). */
  CK_PARAMS_AES_GCM: number;
}

/** The binding and version we build against (package.json pins it exactly). */
export const BINDING_PACKAGE = 'pkcs11js';
export const BINDING_VERSION = '2.1.7';

/**
 * Loads the binding. Fails with an explanation that tells how to install it when it is absent
 * (an optional dependency that did not build, or `npm ci --omit=optional`).
 */
export async function loadBinding(specifier: string = BINDING_PACKAGE): Promise<Binding> {
  let mod: { default?: Binding } & Partial<Binding>;
  try {
    mod = (await import(specifier)) as typeof mod;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND'
        ? 'is not installed'
        : `cannot be loaded (${(err as Error).message.split('\n')[0]})`;
    throw new BindingError(
      `the PKCS#11 binding '${specifier}' ${why}: hsm.pkcs11 needs it; install it with ` +
        `'npm install ${BINDING_PACKAGE}@${BINDING_VERSION}' (it compiles with node-gyp: apt-get install build-essential python3)`,
    );
  }
  const b = (mod.default ?? mod) as Binding;
  if (typeof b.PKCS11 !== 'function') throw new BindingError(`the module '${specifier}' is not the pkcs11js binding`);
  return b;
}

export class BindingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BindingError';
  }
}

// Object classes, key types, attributes, mechanisms, flags and user types (PKCS#11 pkcs11t.h).
export const CKO_SECRET_KEY = 0x4;
export const CKK_GENERIC_SECRET = 0x10;
export const CKK_AES = 0x1f;

export const CKA_CLASS = 0x0;
export const CKA_TOKEN = 0x1;
export const CKA_PRIVATE = 0x2;
export const CKA_LABEL = 0x3;
export const CKA_VALUE = 0x11;
export const CKA_KEY_TYPE = 0x100;
export const CKA_ID = 0x102;
export const CKA_SENSITIVE = 0x103;
export const CKA_ENCRYPT = 0x104;
export const CKA_DECRYPT = 0x105;
export const CKA_WRAP = 0x106;
export const CKA_UNWRAP = 0x107;
export const CKA_SIGN = 0x108;
export const CKA_VERIFY = 0x10a;
export const CKA_DERIVE = 0x10c;
export const CKA_VALUE_LEN = 0x161;
export const CKA_EXTRACTABLE = 0x162;
export const CKA_ALWAYS_SENSITIVE = 0x165;
export const CKA_NEVER_EXTRACTABLE = 0x164;

export const CKM_GENERIC_SECRET_KEY_GEN = 0x350;
export const CKM_SHA256_HMAC = 0x251;
export const CKM_AES_KEY_GEN = 0x1080;
export const CKM_AES_CBC_PAD = 0x1085;
export const CKM_AES_GCM = 0x1087;
export const CKM_AES_CMAC = 0x108a;

export const CKF_TOKEN_INITIALIZED = 0x400;
export const CKF_OS_LOCKING_OK = 0x2;
export const CKF_RW_SESSION = 0x2;
export const CKF_SERIAL_SESSION = 0x4;
export const CKU_USER = 1;

/** The `CKR_…` name of a binding error (pkcs11js puts it in the message), if it is one. */
export function ckrName(err: unknown): string | undefined {
  const m = /\b(CKR_[A-Z0-9_]+)\b/.exec(String((err as Error | undefined)?.message ?? ''));
  return m?.[1];
}

/** A CK_ULONG handle as a number (slot ids are shown and configured as numbers). */
export function handleNumber(h: Handle): number {
  return h.length >= 8 ? Number(h.readBigUInt64LE(0)) : h.readUInt32LE(0);
}
