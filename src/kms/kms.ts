/**
 * The domain: enclaves, master keys, policies and identities, with every rule of the product
 * (who may do what, versions, pagination). It knows nothing about HTTP or protobuf.
 *
 * All state lives in memory, decrypted at load time, so reads and the cryptographic hot path
 * (KEY:GENERATE / KEY:DECRYPT / KEY:ENCRYPT) touch no disk. Writes go to the store first and
 * change memory only once the store has acknowledged them.
 */
import { randomBytes } from 'node:crypto';
import { randomBytesPooled } from '../crypto/random.js';
import { KEY_TYPES, PreparedKey, decryptWithKey, openWithKey, sealWithKey, type KeyType } from '../crypto/ciphertext.js';
import { openKesJson, parseKesJsonCiphertext, type KesJsonCiphertext } from '../crypto/kes-json.js';
import { hmacSha256 } from '../crypto/hmac.js';
import { hkdfSha256 } from '../crypto/hkdf.js';
import { isIdentity } from '../identity/identity.js';
import { KmsError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { Barrier } from '../store/barrier.js';
import { checkName, checkTags } from './names.js';
import { SortedMap, type Page } from './pagination.js';
import { compilePolicy, grantsAny, isAllowed, normalizePolicy, type PolicyRules, type Rules } from './policy.js';
import {
  PATH,
  PRIVILEGE,
  keyRingFromRecord,
  keyRingToRecord,
  serviceAccountPrivilege,
  type EnclaveRecord,
  type Identity,
  type IdentityRecord,
  type KeyRecord,
  type KeyRing,
  type KeyVersion,
  type Policy,
  type PolicyRecord,
  type Privilege,
} from './records.js';
import { Repo } from './repo.js';
import { RetryLedger } from './retries.js';

export const DEFAULT_KEY_TYPE: KeyType = 'AES256';
export const MAX_DEK_LENGTH = 1024;

/** KEY:GENERATE's data key length: 0 means 32; at most {@link MAX_DEK_LENGTH}. */
export function dekLength(length: number): number {
  const len = length === 0 ? 32 : length;
  if (len < 1 || len > MAX_DEK_LENGTH) throw new KmsError('ERR_INVALID_DEK_LENGTH');
  return len;
}

export interface Enclave {
  readonly name: string;
  readonly createdAt: Date;
  readonly createdBy: string;
  readonly rev: number;
  readonly keys: SortedMap<KeyRing>;
  readonly policies: SortedMap<Policy>;
  readonly identities: SortedMap<Identity>;
}

/** Who is calling, resolved for one enclave. */
export interface Principal {
  readonly identity: string;
  readonly sysAdmin: boolean;
  /** Admin of the enclave (every SysAdmin is). */
  readonly admin: boolean;
  /** The User's effective policy; undefined = no permissions. */
  readonly policy: PolicyRules | undefined;
  /** Whether the caller is known at all (root, SysAdmin, or an identity of the enclave). */
  readonly known: boolean;
  /**
   * The privilege the caller acts with in this enclave (undefined if unknown): a service
   * account's is its parent's, at most Admin — what status, list, CLI and audit report.
   */
  readonly privilege: Privilege | undefined;
  /** Whether the caller is a service account (acting with its parent's rights). */
  readonly serviceAccount: boolean;
}

export interface KeyVersionInfo {
  name: string;
  version: number;
  type: KeyType;
  createdAt: Date;
  createdBy: string;
}

export interface IdentityInfo {
  identity: string;
  privilege: Privilege;
  policy: string;
  createdAt: Date;
  createdBy: string;
  isServiceAccount: boolean;
  serviceAccounts: string[];
  tags: Record<string, string>;
}

export interface KmsOptions {
  /** The root (SysAdmin) identity: from `admin.identity` or derived from the HSM. */
  rootIdentity: string;
  /** Default bound of a write (queueing included) when the caller gives no deadline: the store's timeout, or 5 s. */
  writeTimeoutMs?: number;
  /** Where background work of the domain reports its errors (it retries by itself). */
  report?: (err: Error) => void;
}

/** Options of every write (create, delete, assign). */
export interface WriteOptions {
  /**
   * Absolute time (ms since the epoch) after which the write is not started, nor its commit
   * sent or retried: the server passes the request's deadline. Default: now + `writeTimeoutMs`.
   */
  deadline?: number;
}

const DEFAULT_WRITE_TIMEOUT_MS = 5_000;

const MAC_INFO = 'minkms key mac v1';

export class Kms {
  #rootIdentity: string;
  readonly #repo: Repo;
  readonly #retries: RetryLedger;
  readonly #writeTimeoutMs: number;
  #enclaves = new SortedMap<Enclave>();
  /** SysAdmin identity → number of SysAdmin records naming it (across enclaves). */
  #sysAdmins = new Map<string, number>();
  #commits = 0;
  #retired = false;

  private constructor(repo: Repo, opts: KmsOptions) {
    this.#repo = repo;
    this.#rootIdentity = opts.rootIdentity;
    this.#writeTimeoutMs = opts.writeTimeoutMs ?? repo.store.timeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
    this.#retries = new RetryLedger(repo, opts.report);
  }

  /** Loads and decrypts the whole state. Throws if a record fails to decrypt or parse. */
  static async load(store: Store, barrier: Barrier, opts: KmsOptions): Promise<Kms> {
    const kms = new Kms(new Repo(store, barrier), opts);
    await kms.reload();
    return kms;
  }

  /**
   * Re-reads the whole state from the store (e.g. after a root key rotation re-encrypted every
   * record). Call it inside `exclusive` so that no write interleaves.
   */
  async reload(): Promise<void> {
    const repo = this.#repo;
    const enclaves = new SortedMap<Enclave>();
    const sysAdmins = new Map<string, number>();
    for (const { record, rev } of await repo.load<EnclaveRecord>('enclave/')) {
      enclaves.set(record.name, newEnclave(record, rev));
    }
    const owner = (path: string) => {
      const e = enclaves.get(path.split('/')[1]!);
      if (!e) throw new Error(`orphaned record ${path}: its enclave does not exist`);
      return e;
    };
    for (const { path, record, rev } of await repo.load<KeyRecord>('key/')) {
      owner(path).keys.set(record.name, keyRingFromRecord(record, rev));
    }
    for (const { path, record, rev } of await repo.load<PolicyRecord>('policy/')) {
      owner(path).policies.set(record.name, policyFromRecord(record, rev));
    }
    for (const { path, record, rev } of await repo.load<IdentityRecord>('identity/')) {
      owner(path).identities.set(record.identity, { ...record, rev });
      if (isGlobalSysAdmin(record)) sysAdmins.set(record.identity, (sysAdmins.get(record.identity) ?? 0) + 1);
    }
    this.#enclaves = enclaves;
    this.#sysAdmins = sysAdmins;
  }

  /**
   * Applies a change another node made (a change feed delivers them in revision order). Stale
   * events — older than what this node already holds, e.g. its own writes applied when they
   * were acknowledged — are ignored, so own and remote updates can arrive in any interleaving.
   */
  applyChange(path: string, value: Buffer | undefined, rev: number): void {
    const [kind, enclave = '', name = ''] = splitPath(path);
    const e = this.#enclaves.get(enclave);
    if (value === undefined) {
      if (kind === 'enclave' && e && e.rev <= rev) {
        for (const rec of e.identities.values()) if (isGlobalSysAdmin(rec)) this.#countSysAdmin(rec.identity, -1);
        this.#enclaves.delete(enclave);
      }
      const map = e && kind !== 'enclave' ? childMap(e, kind) : undefined;
      const old = map?.get(name);
      if (map && old && old.rev <= rev) {
        map.delete(name);
        if (kind === 'identity' && isGlobalSysAdmin(old as Identity)) this.#countSysAdmin(name, -1);
      }
      return;
    }
    if (this.#repo.deletedAt(path) >= rev) return;
    if (kind === 'enclave') {
      if (e && e.rev >= rev) return;
      const rec = this.#repo.decode<EnclaveRecord>(path, value);
      this.#enclaves.set(
        enclave,
        e ? { ...newEnclave(rec, rev), keys: e.keys, policies: e.policies, identities: e.identities } : newEnclave(rec, rev),
      );
      return;
    }
    const map = e ? childMap(e, kind) : undefined;
    if (!e || !map || (map.get(name)?.rev ?? 0) >= rev) return;
    if (kind === 'key') {
      e.keys.set(name, keyRingFromRecord(this.#repo.decode<KeyRecord>(path, value), rev));
    } else if (kind === 'policy') {
      e.policies.set(name, policyFromRecord(this.#repo.decode<PolicyRecord>(path, value), rev));
    } else {
      const old = e.identities.get(name);
      const rec = this.#repo.decode<IdentityRecord>(path, value);
      if (old && isGlobalSysAdmin(old)) this.#countSysAdmin(name, -1);
      if (isGlobalSysAdmin(rec)) this.#countSysAdmin(name, +1);
      e.identities.set(name, { ...rec, rev });
    }
  }

  /** Enables `applyChange` bookkeeping; `caughtUp(rev)` after each batch of feed events. */
  followChanges(): void {
    this.#repo.trackDeletes();
  }

  caughtUp(rev: number): void {
    this.#repo.forgetDeletes(rev);
  }

  /** Runs `fn` with every other write of this node held back (reads go on). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#repo.exclusive(fn);
  }

  /** The root (SysAdmin) identity: from `admin.identity` or derived from an HSM. */
  get rootIdentity(): string {
    return this.#rootIdentity;
  }

  /** The root identity changed (the HSM its API key was derived from was removed; server/root-identity.ts). */
  setRootIdentity(identity: string): void {
    this.#rootIdentity = identity;
  }

  /** Number of state changes applied by this node since start. */
  get commits(): number {
    return this.#commits;
  }

  // ---------------------------------------------------------------- access

  isSysAdmin(identity: string): boolean {
    return identity !== '' && (identity === this.rootIdentity || this.#sysAdmins.has(identity));
  }

  /** Resolves the caller for an enclave (which may not exist). */
  principal(identity: string, enclave: string): Principal {
    const sysAdmin = this.isSysAdmin(identity);
    if (sysAdmin) {
      return { identity, sysAdmin, admin: true, policy: undefined, known: true, privilege: PRIVILEGE.SysAdmin, serviceAccount: false };
    }
    const e = identity === '' ? undefined : this.#enclaves.get(enclave);
    const rec = e?.identities.get(identity);
    if (!e || !rec) {
      return { identity, sysAdmin: false, admin: false, policy: undefined, known: false, privilege: undefined, serviceAccount: false };
    }
    const effective = this.#effective(e, rec);
    const admin = effective.privilege !== PRIVILEGE.User;
    return {
      identity,
      sysAdmin: false,
      admin,
      policy: admin ? undefined : effective.policy,
      known: true,
      privilege: effective.privilege,
      serviceAccount: rec.serviceAccount,
    };
  }

  /**
   * The rights an identity record acts with. A service account acts with its (transitive)
   * parent's, but never beyond its enclave: a service account of a SysAdmin is an Admin of the
   * enclave. A User's policy counts only if it is still the policy that was assigned (its id),
   * not another one created later under the same name.
   */
  #effective(e: Enclave, rec: Identity): { privilege: Privilege; policy: Policy | undefined } {
    let cur: Identity | undefined = rec;
    for (let depth = 0; cur?.serviceAccount && depth < 16; depth++) {
      if (this.isSysAdmin(cur.parent)) return { privilege: serviceAccountPrivilege(PRIVILEGE.SysAdmin), policy: undefined };
      cur = e.identities.get(cur.parent);
    }
    if (!cur || cur.serviceAccount) return { privilege: PRIVILEGE.User, policy: undefined };
    const privilege = cur === rec ? cur.privilege : serviceAccountPrivilege(cur.privilege);
    if (privilege !== PRIVILEGE.User) return { privilege, policy: undefined };
    const policy = e.policies.get(cur.policy);
    return { privilege, policy: policy && (policy.id ?? '') === (cur.policyId ?? '') ? policy : undefined };
  }

  /** Whether the principal may run `command` on the object `name`. */
  allowed(p: Principal, command: string, name: string): boolean {
    if (p.admin) return true;
    return p.policy !== undefined && isAllowed(p.policy, command, name);
  }

  /** Whether the principal may run a LIST `command` at all (results are then filtered). */
  allowedToList(p: Principal, command: string): boolean {
    return p.admin || (p.policy !== undefined && grantsAny(p.policy, command));
  }

  // ---------------------------------------------------------------- enclaves

  enclave(name: string): Enclave {
    const e = this.#enclaves.get(name);
    if (!e) throw new KmsError('ERR_ENCLAVE_NOT_FOUND');
    return e;
  }

  hasEnclave(name: string): boolean {
    return this.#enclaves.has(name);
  }

  listEnclaves(prefix: string, continueAt: string, limit: number): Page<Enclave> {
    return this.#enclaves.page(prefix, continueAt, limit);
  }

  /** ENCLAVE:CREATE; the retry of a create with an unknown outcome succeeds (see retries.ts). */
  createEnclave(caller: string, name: string, opts?: WriteOptions): Promise<void> {
    checkName('enclave', name);
    return this.#write(async () => {
      const path = PATH.enclave(name);
      const existing = this.#enclaves.get(name);
      if (existing) {
        if (existing.createdBy === caller && (await this.#retries.isRetry(path, caller, existing.createdAt.toISOString()))) return;
        throw new KmsError('ERR_ENCLAVE_EXISTS');
      }
      const rec: EnclaveRecord = { v: 1, name, createdAt: new Date().toISOString(), createdBy: caller };
      const rev = await this.#uncertain(path, caller, rec.createdAt, () =>
        this.#repo.commit([{ key: path, rev: 0 }], [this.#repo.put(path, rec)], 'ERR_ENCLAVE_EXISTS'),
      );
      this.#enclaves.set(name, newEnclave(rec, rev));
    }, opts);
  }

  /** Deletes the enclave with every key, policy and identity in it. */
  deleteEnclave(name: string, opts?: WriteOptions): Promise<void> {
    return this.#write(async () => {
      const e = this.enclave(name);
      const paths = [
        PATH.enclave(name),
        ...e.keys.names().map((k) => PATH.key(name, k)),
        ...e.policies.names().map((p) => PATH.policy(name, p)),
        ...e.identities.names().map((i) => PATH.identity(name, i)),
      ];
      const stranded = [...e.identities.values()].filter(isGlobalSysAdmin).flatMap((rec) => this.#strandedBy(rec.identity, 1, e));
      await this.#repo.commit(
        [
          { key: PATH.enclave(name), rev: e.rev },
          ...stranded.map((s) => ({ key: PATH.identity(s.e.name, s.rec.identity), rev: s.rec.rev })),
        ],
        [...paths.map((p) => this.#repo.del(p)), ...stranded.map((s) => this.#repo.del(PATH.identity(s.e.name, s.rec.identity)))],
        'ERR_ENCLAVE_NOT_FOUND',
      );
      for (const rec of e.identities.values()) {
        if (isGlobalSysAdmin(rec)) this.#countSysAdmin(rec.identity, -1);
      }
      for (const s of stranded) s.e.identities.delete(s.rec.identity);
      this.#enclaves.delete(name);
    }, opts);
  }

  // ---------------------------------------------------------------- keys

  #ring(e: Enclave, name: string): KeyRing {
    const ring = e.keys.get(name);
    if (!ring) throw new KmsError('ERR_KEY_NOT_FOUND');
    return ring;
  }

  /** Version `version` of a key (0 = latest). */
  keyVersion(enclave: string, name: string, version: number): KeyVersion {
    const ring = this.#ring(this.enclave(enclave), name);
    const v = version === 0 ? ring.versions[ring.versions.length - 1]! : findVersion(ring, version);
    if (v?.pending) return pendingFallback(ring, version);
    if (!v) throw new KmsError('ERR_KEY_NOT_FOUND');
    return v;
  }

  keyStatus(enclave: string, name: string, version: number): KeyVersionInfo {
    return versionInfo(name, this.keyVersion(enclave, name, version));
  }

  listKeys(enclave: string, prefix: string, continueAt: string, limit: number, visible?: (name: string) => boolean): Page<KeyVersionInfo> {
    const page = this.enclave(enclave).keys.page(prefix, continueAt, limit, visible);
    return { items: page.items.map((r) => versionInfo(r.name, r.versions[r.versions.length - 1]!)), continueAt: page.continueAt };
  }

  /** Versions of one key in ascending order, starting at `continueAt` (0 = first). */
  listKeyVersions(enclave: string, name: string, continueAt: number, limit: number): { items: KeyVersionInfo[]; continueAt: number } {
    const ring = this.#ring(this.enclave(enclave), name);
    const max = limit <= 0 || limit > 1000 ? 1000 : limit;
    const from = ring.versions.filter((v) => v.version >= continueAt);
    return {
      items: from.slice(0, max).map((v) => versionInfo(name, v)),
      continueAt: from.length > max ? from[max]!.version : 0,
    };
  }

  /**
   * KEY:CREATE. Without `addVersion` the key must not exist; with it, a new version is
   * added to an existing key (of `type`, or the latest version's type).
   */
  createKey(caller: string, enclave: string, name: string, type: string, addVersion: boolean, opts?: WriteOptions): Promise<void> {
    checkName('key', name);
    const keyType = parseKeyType(type);
    return this.#writeKey(
      enclave,
      name,
      addVersion,
      (ring) => ({
        type: keyType ?? ring?.versions[ring.versions.length - 1]!.type ?? DEFAULT_KEY_TYPE,
        key: randomBytesPooled(32),
        imported: false,
        createdBy: caller,
      }),
      (v) => v.createdBy === caller && !v.imported && v.type === (keyType ?? DEFAULT_KEY_TYPE),
      opts,
    );
  }

  /** KEY:IMPORT: a new key (version 1) from caller-supplied key material, marked imported. */
  importKey(caller: string, enclave: string, name: string, type: string, material: Uint8Array, opts?: WriteOptions): Promise<void> {
    checkName('key', name);
    const keyType = parseKeyType(type) ?? DEFAULT_KEY_TYPE;
    if (material.length !== 32) throw new KmsError('ERR_INVALID_KEY_LENGTH', `${keyType} keys are 32 bytes`);
    const key = Buffer.from(material);
    return this.#writeKey(
      enclave,
      name,
      false,
      () => ({ type: keyType, key, imported: true, createdBy: caller }),
      (v) => v.createdBy === caller && v.imported && v.type === keyType && v.key.equals(key),
      opts,
    );
  }

  /**
   * Creates a key or adds a version. A create of an existing key fails with ERR_KEY_EXISTS,
   * unless `same` says its only version is what this very request asks for and the ledger
   * knows it was written by an earlier attempt of this requester whose outcome was unknown:
   * then the retry succeeds (see retries.ts).
   */
  #writeKey(
    enclave: string,
    name: string,
    addVersion: boolean,
    make: (ring: KeyRing | undefined) => { type: KeyType; key: Buffer; imported: boolean; createdBy: string },
    same: (v: KeyVersion) => boolean,
    opts: WriteOptions | undefined,
  ): Promise<void> {
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const ring = e.keys.get(name);
      const path = PATH.key(enclave, name);
      if (addVersion && !ring) throw new KmsError('ERR_KEY_NOT_FOUND');
      if (!addVersion && ring) {
        const only = ring.versions.length === 1 && ring.maxVersion === 1 ? ring.versions[0]! : undefined;
        if (only && same(only) && (await this.#retries.isRetry(path, only.createdBy, only.createdAt.toISOString()))) return;
        throw new KmsError('ERR_KEY_EXISTS');
      }
      const m = make(ring);
      const version = (ring?.maxVersion ?? 0) + 1;
      const v: KeyVersion = { version, type: m.type, key: m.key, createdAt: new Date(), createdBy: m.createdBy, imported: m.imported };
      const next = { name, maxVersion: version, versions: [...(ring?.versions ?? []), v] };
      const commit = () =>
        this.#repo.commit(
          [
            { key: PATH.enclave(enclave), rev: e.rev },
            { key: path, rev: ring?.rev ?? 0 },
          ],
          [this.#repo.put(path, keyRingToRecord(next))],
          addVersion ? 'ERR_CONFLICT' : 'ERR_KEY_EXISTS',
        );
      // Adding a version is not idempotent (a retry adds another one): no retry ledger for it.
      const rev = addVersion ? await commit() : await this.#uncertain(path, m.createdBy, v.createdAt.toISOString(), commit);
      if (this.#repo.staged) {
        // Until its commit is durable, nothing is sealed with the new version: a crash of the
        // machine before then would lose it, and with it whatever it had sealed.
        v.pending = true;
        this.#repo.afterDurable(() => (v.pending = false));
      }
      e.keys.set(name, { ...next, rev });
    }, opts);
  }

  /** Runs a create's commit; if its outcome is unknown, tells the retry ledger before failing. */
  async #uncertain(path: string, requester: string, createdAt: string, commit: () => Promise<number>): Promise<number> {
    let rev: number;
    try {
      rev = await commit();
    } catch (err) {
      if (err instanceof KmsError && err.code === 'ERR_STORE_OUTCOME_UNKNOWN') this.#retries.note(path, requester, createdAt);
      throw err;
    }
    // The record is this create's: an earlier attempt with an unknown outcome was lost (its
    // timestamp may even equal this one's, to the millisecond), so its note is obsolete.
    this.#retries.created(path);
    return rev;
  }

  /**
   * KEY:DELETE: the latest version (version 0), one version, or all versions. Deleting the
   * last remaining version deletes the key. Deleted versions are never created again.
   */
  deleteKey(enclave: string, name: string, version: number, allVersions: boolean, opts?: WriteOptions): Promise<void> {
    if (allVersions && version !== 0) throw new KmsError('ERR_BAD_REQUEST', 'all_versions must not be combined with a version');
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const ring = this.#ring(e, name);
      const target = version === 0 ? ring.versions[ring.versions.length - 1]!.version : version;
      if (!allVersions && !findVersion(ring, target)) throw new KmsError('ERR_KEY_NOT_FOUND');
      const rest = allVersions ? [] : ring.versions.filter((v) => v.version !== target);
      const path = PATH.key(enclave, name);
      const next = { name, maxVersion: ring.maxVersion, versions: rest };
      const mutation = rest.length === 0 ? this.#repo.del(path) : this.#repo.put(path, keyRingToRecord(next));
      const rev = await this.#repo.commit([{ key: path, rev: ring.rev }], [mutation], 'ERR_KEY_NOT_FOUND');
      if (rest.length === 0) e.keys.delete(name);
      else e.keys.set(name, { ...next, rev });
    }, opts);
  }

  encrypt(enclave: string, name: string, version: number, plaintext: Uint8Array, ad: Uint8Array): { version: number; ciphertext: Buffer } {
    const v = this.keyVersion(enclave, name, version);
    return { version: v.version, ciphertext: sealWithKey(prepared(v), plaintext, ad) };
  }

  generate(
    enclave: string,
    name: string,
    version: number,
    ad: Uint8Array,
    length: number,
  ): { version: number; plaintext: Buffer; ciphertext: Buffer } {
    const len = dekLength(length);
    const v = this.keyVersion(enclave, name, version);
    const plaintext = randomBytesPooled(len);
    return { version: v.version, plaintext, ciphertext: sealWithKey(prepared(v), plaintext, ad) };
  }

  /**
   * Decrypts with the given version, or, for version 0 (which MinIO sends when it stored no
   * version), with each version from the newest down until one authenticates.
   */
  decrypt(enclave: string, name: string, version: number, ciphertext: Uint8Array, ad: Uint8Array): Buffer {
    // Data keys sealed by older KES releases come in their JSON format (crypto/kes-json.ts).
    const json = parseKesJsonCiphertext(ciphertext);
    if (version !== 0) return openVersion(this.keyVersion(enclave, name, version), ciphertext, ad, json);
    const ring = this.#ring(this.enclave(enclave), name);
    for (let i = ring.versions.length - 1; i >= 0; i--) {
      if (ring.versions[i]!.pending) continue;
      try {
        return openVersion(ring.versions[i]!, ciphertext, ad, json);
      } catch {
        // try the next older version
      }
    }
    throw new KmsError('ERR_DECRYPT');
  }

  mac(enclave: string, name: string, version: number, message: Uint8Array): { version: number; mac: Buffer } {
    const v = this.keyVersion(enclave, name, version);
    v.macKey ??= hkdfSha256(v.key, '', MAC_INFO, 32);
    return { version: v.version, mac: hmacSha256(v.macKey, message) };
  }

  // ---------------------------------------------------------------- policies

  policy(enclave: string, name: string): Policy {
    const p = this.enclave(enclave).policies.get(name);
    if (!p) throw new KmsError('ERR_POLICY_NOT_FOUND');
    return p;
  }

  listPolicies(enclave: string, prefix: string, continueAt: string, limit: number, visible?: (name: string) => boolean): Page<Policy> {
    return this.enclave(enclave).policies.page(prefix, continueAt, limit, visible);
  }

  /**
   * POLICY:CREATE creates or overwrites. `isCommand` validates the rule keys; the limits of
   * policy.ts are checked before anything is stored. An overwrite keeps the policy's id, so
   * identities holding it keep it; a policy deleted and created again gets a new one.
   */
  createPolicy(
    caller: string,
    enclave: string,
    name: string,
    allow: Rules,
    deny: Rules,
    isCommand: (s: string) => boolean,
    opts?: WriteOptions,
  ): Promise<void> {
    checkName('policy', name);
    const rules = normalizePolicy(allow, deny, isCommand);
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const path = PATH.policy(enclave, name);
      const old = e.policies.get(name);
      const rec: PolicyRecord = {
        v: 1,
        name,
        ...(old ? (old.id ? { id: old.id } : {}) : { id: newPolicyId() }),
        allow: rules.allow,
        deny: rules.deny,
        createdAt: new Date().toISOString(),
        createdBy: caller,
      };
      const rev = await this.#repo.commit(
        [
          { key: PATH.enclave(enclave), rev: e.rev },
          { key: path, rev: old?.rev ?? 0 },
        ],
        [this.#repo.put(path, rec)],
      );
      e.policies.set(name, policyFromRecord(rec, rev));
    }, opts);
  }

  deletePolicy(enclave: string, name: string, opts?: WriteOptions): Promise<void> {
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const p = e.policies.get(name);
      if (!p) throw new KmsError('ERR_POLICY_NOT_FOUND');
      const path = PATH.policy(enclave, name);
      await this.#repo.commit([{ key: path, rev: p.rev }], [this.#repo.del(path)], 'ERR_POLICY_NOT_FOUND');
      e.policies.delete(name);
    }, opts);
  }

  /** POLICY:ASSIGN: only Users (not service accounts, which inherit) get a policy. */
  assignPolicy(caller: Principal, enclave: string, identity: string, policy: string, opts?: WriteOptions): Promise<void> {
    if (!isIdentity(identity)) throw new KmsError('ERR_INVALID_IDENTITY');
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const rec = e.identities.get(identity);
      if (!rec) throw new KmsError('ERR_IDENTITY_NOT_FOUND');
      const p = e.policies.get(policy);
      if (!p) throw new KmsError('ERR_POLICY_NOT_FOUND');
      if (rec.privilege !== PRIVILEGE.User || rec.serviceAccount) throw new KmsError('ERR_POLICY_NOT_ASSIGNABLE');
      if (!caller.admin) throw new KmsError('ERR_NOT_ALLOWED');
      await this.#putIdentity(e, { ...stripRev(rec), policy, ...(p.id ? { policyId: p.id } : {}) });
    }, opts);
  }

  // ---------------------------------------------------------------- identities

  /** IDENTITY:STATUS. The caller's own identity is always visible, even root's. */
  identityInfo(enclave: string, identity: string): IdentityInfo {
    const e = this.enclave(enclave);
    const rec = e.identities.get(identity);
    if (!rec) {
      // A SysAdmin without a record in this enclave (root, or one registered elsewhere).
      if (this.isSysAdmin(identity)) {
        return {
          identity,
          privilege: PRIVILEGE.SysAdmin,
          policy: '',
          createdAt: new Date(0),
          createdBy: '',
          isServiceAccount: false,
          serviceAccounts: [],
          tags: {},
        };
      }
      throw new KmsError('ERR_IDENTITY_NOT_FOUND');
    }
    return this.#info(e, rec);
  }

  listIdentities(
    enclave: string,
    prefix: string,
    continueAt: string,
    limit: number,
    visible?: (name: string) => boolean,
  ): Page<IdentityInfo> {
    const e = this.enclave(enclave);
    const page = e.identities.page(prefix, continueAt, limit, visible);
    return { items: page.items.map((r) => this.#info(e, r)), continueAt: page.continueAt };
  }

  #info(e: Enclave, rec: Identity): IdentityInfo {
    const serviceAccounts: string[] = [];
    for (const other of e.identities.values())
      if (other.serviceAccount && other.parent === rec.identity) serviceAccounts.push(other.identity);
    // What the identity acts with, not what its record says: a service account created by an
    // Admin is an Admin, and a User whose policy was deleted holds none.
    const effective = this.#effective(e, rec);
    return {
      identity: rec.identity,
      privilege: effective.privilege,
      policy: effective.policy?.name ?? '',
      createdAt: new Date(rec.createdAt),
      createdBy: rec.createdBy,
      isServiceAccount: rec.serviceAccount,
      serviceAccounts: serviceAccounts.sort(),
      tags: { ...rec.tags },
    };
  }

  /**
   * IDENTITY:CREATE creates or overwrites. A caller grants at most its own privilege; Users
   * (with the IDENTITY:CREATE permission) only create service accounts; a service account acts
   * with its creator's permissions and is deleted with it.
   *
   * A service account creates only service accounts — its own children, deleted with it — and
   * overwrites only its own descendants. It acts with its parent's rights, but anything it
   * creates must not outlive the parent: otherwise an Admin's service account could mint a
   * standalone Admin that survives the deletion of the Admin (and of the service account).
   */
  createIdentity(
    caller: Principal,
    enclave: string,
    req: { identity: string; privilege: string; serviceAccount: boolean; tags: Record<string, string> },
    opts?: WriteOptions,
  ): Promise<void> {
    if (!isIdentity(req.identity)) throw new KmsError('ERR_INVALID_IDENTITY');
    if (req.identity === this.rootIdentity) throw new KmsError('ERR_ROOT_IDENTITY');
    if (req.identity === caller.identity) throw new KmsError('ERR_BAD_REQUEST', 'an identity cannot replace itself');
    const privilege = parsePrivilege(req.privilege);
    checkTags(req.tags);
    const callerLevel: Privilege = caller.sysAdmin ? PRIVILEGE.SysAdmin : caller.admin ? PRIVILEGE.Admin : PRIVILEGE.User;
    if (privilege < callerLevel) throw new KmsError('ERR_NOT_ALLOWED');
    if ((callerLevel === PRIVILEGE.User || caller.serviceAccount) && !req.serviceAccount) throw new KmsError('ERR_NOT_ALLOWED');
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const existing = e.identities.get(req.identity);
      if (existing && !this.#mayManage(caller, e, existing)) throw new KmsError('ERR_NOT_ALLOWED');
      if (existing && caller.serviceAccount && !this.#isDescendant(e, existing, caller.identity)) throw new KmsError('ERR_NOT_ALLOWED');
      const rec: IdentityRecord = {
        v: 1,
        identity: req.identity,
        privilege: req.serviceAccount ? (Math.max(privilege, callerLevel) as Privilege) : privilege,
        policy: '',
        createdAt: new Date().toISOString(),
        createdBy: caller.identity,
        serviceAccount: req.serviceAccount,
        parent: req.serviceAccount ? caller.identity : '',
        tags: { ...req.tags },
      };
      await this.#putIdentity(e, rec, this.#strandedByCreate(e, existing, rec));
    }, opts);
  }

  /** Whether `caller` may overwrite or delete `target`: Admins manage Users and Admins; Users their own service accounts. */
  #mayManage(caller: Principal, e: Enclave, target: Identity): boolean {
    if (caller.sysAdmin) return true;
    if (caller.admin) return target.privilege !== PRIVILEGE.SysAdmin;
    return this.#isDescendant(e, target, caller.identity);
  }

  /** Whether `target` is a service account of `ancestor`, directly or through other service accounts. */
  #isDescendant(e: Enclave, target: Identity, ancestor: string): boolean {
    for (let cur: Identity | undefined = target, d = 0; cur?.serviceAccount && d < 16; d++) {
      if (cur.parent === ancestor) return true;
      cur = e.identities.get(cur.parent);
    }
    return false;
  }

  /** IDENTITY:DELETE removes the identity and, transitively, its service accounts. */
  deleteIdentity(caller: Principal, enclave: string, identity: string, opts?: WriteOptions): Promise<void> {
    if (identity === caller.identity) throw new KmsError('ERR_SELF_DELETE');
    if (identity === this.rootIdentity) throw new KmsError('ERR_ROOT_IDENTITY');
    return this.#write(async () => {
      const e = this.enclave(enclave);
      const rec = e.identities.get(identity);
      if (!rec) throw new KmsError('ERR_IDENTITY_NOT_FOUND');
      if (!this.#mayManage(caller, e, rec)) throw new KmsError('ERR_NOT_ALLOWED');
      const doomed = [
        ...withServiceAccounts(e, [rec]).map((d) => ({ e, rec: d })),
        ...(isGlobalSysAdmin(rec) ? this.#strandedBy(identity, 1, e) : []),
      ];
      await this.#repo.commit(
        doomed.map((d) => ({ key: PATH.identity(d.e.name, d.rec.identity), rev: d.rec.rev })),
        doomed.map((d) => this.#repo.del(PATH.identity(d.e.name, d.rec.identity))),
        'ERR_IDENTITY_NOT_FOUND',
      );
      for (const d of doomed) {
        d.e.identities.delete(d.rec.identity);
        if (isGlobalSysAdmin(d.rec)) this.#countSysAdmin(d.rec.identity, -1);
      }
    }, opts);
  }

  /** Writes one identity record, deleting `stranded` service accounts in the same commit. */
  async #putIdentity(e: Enclave, rec: IdentityRecord, stranded: readonly Stranded[] = []): Promise<void> {
    const path = PATH.identity(e.name, rec.identity);
    const old = e.identities.get(rec.identity);
    const rev = await this.#repo.commit(
      [
        { key: PATH.enclave(e.name), rev: e.rev },
        { key: path, rev: old?.rev ?? 0 },
        ...stranded.map((s) => ({ key: PATH.identity(s.e.name, s.rec.identity), rev: s.rec.rev })),
      ],
      [this.#repo.put(path, rec), ...stranded.map((s) => this.#repo.del(PATH.identity(s.e.name, s.rec.identity)))],
    );
    if (old && isGlobalSysAdmin(old)) this.#countSysAdmin(old.identity, -1);
    if (isGlobalSysAdmin(rec)) this.#countSysAdmin(rec.identity, +1);
    e.identities.set(rec.identity, { ...rec, rev });
    for (const s of stranded) s.e.identities.delete(s.rec.identity);
  }

  /**
   * Service accounts that must go when `rec` is written over `existing`: those a SysAdmin loses
   * its right to (see {@link #strandedBy}), and — when an identity gets rights it did not have —
   * service accounts of it left behind by an earlier deletion (by a version before this rule),
   * which would otherwise come back to life with the new record.
   */
  #strandedByCreate(e: Enclave, existing: Identity | undefined, rec: IdentityRecord): Stranded[] {
    if (existing !== undefined && isGlobalSysAdmin(existing) && !isGlobalSysAdmin(rec)) return this.#strandedBy(rec.identity, 1, e);
    if (this.isSysAdmin(rec.identity)) return [];
    const out: Stranded[] = [];
    if (existing === undefined) {
      const roots = [...e.identities.values()].filter((r) => r.serviceAccount && r.parent === rec.identity);
      for (const r of withServiceAccounts(e, roots)) out.push({ e, rec: r });
    }
    if (isGlobalSysAdmin(rec)) out.push(...this.#strandedBy(rec.identity, 0, e));
    return out;
  }

  /**
   * The service accounts that live on a SysAdmin's right alone, to be deleted in the commit that
   * takes that right away (`removed` of its SysAdmin records go). A SysAdmin may create service
   * accounts in any enclave; where it has no record of its own, they act with its SysAdmin right
   * (as Admins of that enclave). Left behind when the identity stops being a SysAdmin, they
   * would be powerless — until the identity is made a SysAdmin again, when they would silently
   * regain everything. So they go with the right, together with their own service accounts.
   * Where the identity does have a record, its service accounts follow that record as usual.
   */
  #strandedBy(identity: string, removed: number, skip: Enclave): Stranded[] {
    if (identity === this.rootIdentity || (this.#sysAdmins.get(identity) ?? 0) > removed) return [];
    const out: Stranded[] = [];
    for (const f of this.#enclaves.values()) {
      if (f === skip || f.identities.has(identity)) continue;
      const roots = [...f.identities.values()].filter((r) => r.serviceAccount && r.parent === identity);
      for (const rec of withServiceAccounts(f, roots)) out.push({ e: f, rec });
    }
    return out;
  }

  #countSysAdmin(identity: string, delta: number): void {
    const n = (this.#sysAdmins.get(identity) ?? 0) + delta;
    if (n > 0) this.#sysAdmins.set(identity, n);
    else this.#sysAdmins.delete(identity);
  }

  /**
   * Marks this instance as replaced (the node restored a backup and loaded a new one): writes
   * still queued here fail instead of landing next to the restored state.
   */
  retire(): void {
    this.#retired = true;
    this.#retries.close();
  }

  /** One write: after the writes queued before it, not started (nor sent) after its deadline. */
  #write(fn: () => Promise<void>, opts: WriteOptions | undefined): Promise<void> {
    const deadline = opts?.deadline ?? Date.now() + this.#writeTimeoutMs;
    return this.#repo.exclusive(
      async () => {
        if (this.#retired) throw new KmsError('ERR_CONFLICT');
        await fn();
        this.#commits++;
      },
      { deadline, pipelined: true },
    );
  }
}

/**
 * SysAdmin identities hold cluster-wide rights. Service accounts never do: they act with their
 * parent's rights inside their enclave only, whatever privilege they were created with.
 */
function isGlobalSysAdmin(rec: IdentityRecord): boolean {
  return rec.privilege === PRIVILEGE.SysAdmin && !rec.serviceAccount;
}

/** An identity record to delete, in its enclave. */
interface Stranded {
  readonly e: Enclave;
  readonly rec: Identity;
}

/** `roots` and, transitively, their service accounts in `e` (each once, even if parent links loop). */
function withServiceAccounts(e: Enclave, roots: readonly Identity[]): Identity[] {
  const children = new Map<string, Identity[]>();
  for (const r of e.identities.values()) {
    if (!r.serviceAccount) continue;
    const list = children.get(r.parent);
    if (list) list.push(r);
    else children.set(r.parent, [r]);
  }
  const out = [...roots];
  const seen = new Set(roots.map((r) => r.identity));
  for (let i = 0; i < out.length; i++) {
    for (const c of children.get(out[i]!.identity) ?? []) {
      if (seen.has(c.identity)) continue;
      seen.add(c.identity);
      out.push(c);
    }
  }
  return out;
}

/** A policy as held in memory, compiled right away so that no request pays for it. */
function policyFromRecord(rec: PolicyRecord, rev: number): Policy {
  const p: Policy = { ...rec, rev };
  compilePolicy(p);
  return p;
}

/** Identifies one policy from its creation to its deletion (assignments bind to it). */
function newPolicyId(): string {
  return randomBytes(12).toString('base64url');
}

function newEnclave(rec: EnclaveRecord, rev: number): Enclave {
  return {
    name: rec.name,
    createdAt: new Date(rec.createdAt),
    createdBy: rec.createdBy,
    rev,
    keys: new SortedMap(),
    policies: new SortedMap(),
    identities: new SortedMap(),
  };
}

function splitPath(path: string): ['enclave' | 'key' | 'policy' | 'identity' | '', string?, string?] {
  const parts = path.split('/');
  const kind = parts[0];
  if (kind === 'enclave' && parts.length === 2) return [kind, parts[1]];
  if ((kind === 'key' || kind === 'policy' || kind === 'identity') && parts.length === 3) return [kind, parts[1], parts[2]];
  return [''];
}

function childMap(e: Enclave, kind: string): SortedMap<{ rev: number }> | undefined {
  if (kind === 'key') return e.keys;
  if (kind === 'policy') return e.policies;
  if (kind === 'identity') return e.identities;
  return undefined;
}

/**
 * Opens a ciphertext with one key version. An imported key also opens ciphertexts of the other
 * algorithm: KES keys had no type once, and sealed with AES or ChaCha20 depending on the CPU;
 * MinIO turns those JSON ciphertexts into the binary format before sending them, dropping the
 * algorithm (docs/kes.md). Both are authenticated, so trying the second costs only time.
 */
function openVersion(v: KeyVersion, ciphertext: Uint8Array, ad: Uint8Array, json: KesJsonCiphertext | undefined): Buffer {
  if (json) return openKesJson(json, v.key, ad);
  if (!v.imported) return openWithKey(prepared(v), ciphertext, ad);
  try {
    return openWithKey(prepared(v), ciphertext, ad);
  } catch {
    return decryptWithKey(v.type === 'AES256' ? 'ChaCha20' : 'AES256', v.key, ciphertext, ad);
  }
}

/** The key version made ready for the data path (prepared once, on first use). */
function prepared(v: KeyVersion): PreparedKey {
  return (v.prepared ??= new PreparedKey(v.type, v.key));
}

/**
 * A key version whose creation is not durable yet does not exist for the data path: version 0
 * is then the newest durable version, and a key with none is not found (its creation has not
 * been acknowledged, so a request racing with it may see either).
 */
function pendingFallback(ring: KeyRing, version: number): KeyVersion {
  if (version === 0) {
    for (let i = ring.versions.length - 1; i >= 0; i--) if (!ring.versions[i]!.pending) return ring.versions[i]!;
  }
  throw new KmsError('ERR_KEY_NOT_FOUND');
}

function findVersion(ring: KeyRing, version: number): KeyVersion | undefined {
  return ring.versions.find((v) => v.version === version);
}

function versionInfo(name: string, v: KeyVersion): KeyVersionInfo {
  return { name, version: v.version, type: v.type, createdAt: v.createdAt, createdBy: v.createdBy };
}

/** '' → undefined (server picks); otherwise one of KEY_TYPES (case-insensitive). */
function parseKeyType(type: string): KeyType | undefined {
  if (type === '') return undefined;
  const t = KEY_TYPES.find((k) => k.toLowerCase() === type.toLowerCase());
  if (!t) throw new KmsError('ERR_INVALID_KEY_TYPE', 'must be AES256 or ChaCha20');
  return t;
}

function parsePrivilege(p: string): Privilege {
  switch (p.toLowerCase()) {
    case '':
    case 'user':
      return PRIVILEGE.User;
    case 'admin':
      return PRIVILEGE.Admin;
    case 'sysadmin':
      return PRIVILEGE.SysAdmin;
    default:
      throw new KmsError('ERR_INVALID_PRIVILEGE', 'must be SysAdmin, Admin or User');
  }
}

function stripRev(rec: Identity): IdentityRecord {
  const { rev: _rev, ...rest } = rec;
  return rest;
}
