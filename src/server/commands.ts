/**
 * The command table: for every command of `POST /v1/kms[/{enclave}]`, who may run it, what it is
 * about (the policy object and the audit line's `object`), what it does, and whether its
 * cryptography may run on the crypto pool. Dispatch, authorization, the authorization-matrix
 * test and docs/security.md all read this one table.
 *
 * Entries are built with {@link define}, which closes over each command's request and response
 * types: the table itself is untyped data, yet no handler ever sees a message it did not declare.
 */
import { KmsError } from '../errors.js';
import { CMD, isSdkCommandName, type Command } from '../protocol/commands.js';
import { decodeMessage, type MessageInit } from '../protocol/schema.js';
import { encodeMessageFrames, type Frame } from '../protocol/frames.js';
import type * as M from '../protocol/messages.js';
import { dekLength, type Enclave, type IdentityInfo, type KeyVersionInfo, type Kms, type Principal } from '../kms/kms.js';
import type { KeyVersion, Policy } from '../kms/records.js';
import type { Rules } from '../kms/policy.js';
import type { CryptoPool, PoolResult } from '../crypto/pool.js';
import { mayBeKesJson } from '../crypto/kes-json.js';

/** Cluster-level operations the node provides (status, membership, HSM entries). */
export interface ClusterOps {
  status(): Promise<MessageInit<M.ClusterStatusResponse>>;
  /** Cluster membership (etcd-backed clusters; a single node refuses). */
  addNode(host: string): Promise<void>;
  removeNode(host: string): Promise<void>;
  editCluster(removeIds: readonly number[]): Promise<void>;
  addHsm(name: string, overwrite: boolean): Promise<void>;
  removeHsm(name: string): Promise<void>;
}

/** What a command handler can reach. */
export interface CallContext {
  readonly kms: Kms;
  readonly principal: Principal;
  /** Enclave from the URL ('' for cluster commands). */
  readonly enclave: string;
  readonly cluster: ClusterOps;
}

/**
 * Who may run a command (every SysAdmin may run every command; enclave Admins every enclave
 * command in their enclave):
 * - `sysadmin`: cluster and enclave management; nobody else.
 * - `admin`: the enclave's Admins (and SysAdmins); no policy grants it to a User.
 * - `object`: a User whose policy allows `permission` on the frame's object.
 * - `list`: a User whose policy allows `permission` on anything; results are filtered by it.
 * - `self`: like `object`, and everyone may look at their own identity.
 */
export type Access =
  | { readonly kind: 'sysadmin' }
  | { readonly kind: 'admin' }
  | { readonly kind: 'object'; readonly permission: string }
  | { readonly kind: 'list'; readonly permission: string }
  | { readonly kind: 'self'; readonly permission: string };

/**
 * A rule beyond {@link Access} that depends on what the request asks, enforced by the domain
 * (kms/kms.ts) once the command is authorized; declared here so that the authorization matrix
 * (server/authz-matrix.ts) and docs/security.md state it:
 * - `service-accounts-only` (IDENTITY:CREATE): a caller acting as a User, and every service
 *   account, creates only service accounts (its own), never a standalone identity;
 * - `users-own-service-accounts` (IDENTITY:DELETE): a caller acting as a User deletes only its
 *   own service accounts (and theirs).
 */
export type Restriction = 'service-accounts-only' | 'users-own-service-accounts';

/**
 * What `dispatch` got through, for the audit log and the metrics (filled as it goes; see
 * server/observability.ts). Never holds request payloads, only names.
 */
export interface DispatchTrace {
  /** The command of the request, once the frames are parsed and the code is known. */
  command: Command | undefined;
  /** Number of command frames. */
  frames: number;
  /** Per decoded frame: the key, policy, identity or enclave name it is about ('' if none). */
  objects: string[];
  /** Frames that ran successfully (a failure happened in frame `done`). */
  done: number;
  /** Per finished frame: `performance.now()` when it finished. */
  ends: number[];
  /** The privilege the caller acted with (`Admin`, `User (service account)`, …), once known. */
  privilege?: string;
}

/** One authorized request of one command, as an {@link Entry} runs it. */
export interface Execution {
  readonly c: CallContext;
  readonly frames: readonly Frame[];
  readonly trace: DispatchTrace | undefined;
  /** Threads for the cryptography of large data-key batches, if any. */
  readonly pool: CryptoPool | undefined;
}

/** One row of the table. */
export interface Entry {
  readonly command: Command;
  readonly access: Access;
  readonly restriction?: Restriction;
  /**
   * Decodes, authorizes and runs every frame in order and encodes the responses into one body.
   * Synchronous unless a frame is (writes) or the batch goes to the crypto pool.
   */
  execute(x: Execution): Buffer | Promise<Buffer>;
}

interface Spec<Req, Res> {
  access: Access;
  restriction?: Restriction;
  /** The frame's object (policy object and audit name); default: the message's `name`, else ''. */
  object?: (req: Req) => string;
  run: (c: CallContext, req: Req) => MessageInit<Res> | void | Promise<MessageInit<Res> | void>;
  /** Large batches of this command may seal/open on the crypto pool. */
  pool?: PoolSpec<Req, Res>;
}

/** How a data command's frames become pool jobs and come back as responses. */
interface PoolSpec<Req, Res> {
  /** The key version a frame uses, or undefined if this thread must run the frame. */
  version(c: CallContext, req: Req): KeyVersion | undefined;
  run(pool: CryptoPool, reqs: readonly Req[], keys: readonly KeyVersion[]): Promise<PoolResult<unknown>>;
  answer(req: Req, key: KeyVersion, value: unknown): MessageInit<Res>;
}

const EMPTY = Buffer.alloc(0);
/** A response message with every field at its default (encodes to nothing). */
const NO_FIELDS = Object.freeze({});

function nameOf(req: unknown): string {
  const name = (req as { name?: unknown }).name;
  return typeof name === 'string' ? name : '';
}

/** A table row for `command`, typed by its messages from here to the encoded response. */
function define<Req, Res>(command: Command<Req, Res>, spec: Spec<NoInfer<Req>, NoInfer<Res>>): Entry {
  const objectOf = spec.object ?? nameOf;

  const finished = (x: Execution, results: MessageInit<Res>[], i: number, res: MessageInit<Res> | void) => {
    results[i] = res ?? NO_FIELDS;
    if (x.trace) {
      x.trace.done = i + 1;
      x.trace.ends[i] = performance.now();
    }
  };
  const encode = (results: MessageInit<Res>[]) =>
    command.response ? encodeMessageFrames(command.code, command.response, results, { pad: true }) : EMPTY;

  /** Frames `from`… one after the other; responses encoded at the end, straight into one buffer. */
  const runFrom = (x: Execution, results: MessageInit<Res>[], from: number): Buffer | Promise<Buffer> => {
    for (let i = from; i < x.frames.length; i++) {
      const req = decodeMessage(command.request, x.frames[i]!.payload);
      const object = objectOf(req);
      if (x.trace) x.trace.objects[i] = object;
      authorize(x.c.kms, x.c.principal, spec.access, object);
      const res = spec.run(x.c, req);
      if (res instanceof Promise) {
        return res.then((r) => {
          finished(x, results, i, r);
          return runFrom(x, results, i + 1);
        });
      }
      finished(x, results, i, res);
    }
    return encode(results);
  };

  /**
   * The whole batch with its cryptography on the pool: every frame decoded, authorized and
   * resolved to its key version here, in order, as `runFrom` would; only sealing/opening runs on
   * a thread. Undefined whenever `runFrom` must decide instead (a frame that fails before any
   * cryptography — it reports the first failing frame exactly, and redoing the checks is cheap —
   * or a frame this thread must run).
   */
  const offload = (x: Execution, pool: CryptoPool, ps: PoolSpec<Req, Res>): Promise<Buffer> | undefined => {
    const n = x.frames.length;
    const reqs: Req[] = new Array(n);
    const keys: KeyVersion[] = new Array(n);
    try {
      for (let i = 0; i < n; i++) {
        const req = decodeMessage(command.request, x.frames[i]!.payload);
        authorize(x.c.kms, x.c.principal, spec.access, objectOf(req));
        const key = ps.version(x.c, req);
        if (key === undefined) return undefined;
        reqs[i] = req;
        keys[i] = key;
      }
    } catch {
      return undefined;
    }
    const trace = x.trace;
    if (trace) for (let i = 0; i < n; i++) trace.objects[i] = objectOf(reqs[i]!);
    return ps.run(pool, reqs, keys).then(
      (answer) => {
        try {
          const results: MessageInit<Res>[] = new Array(n);
          for (let i = 0; i < n; i++) results[i] = ps.answer(reqs[i]!, keys[i]!, answer.values[i]);
          if (trace) {
            const now = performance.now();
            trace.ends.fill(now, 0, n);
            trace.done = n;
          }
          return encode(results);
        } finally {
          answer.wipe();
        }
      },
      (err: unknown) => {
        const failed = (err as { failedItem?: unknown }).failedItem;
        // The pool is gone: this thread does the work.
        if (typeof failed !== 'number') return runFrom(x, new Array(n), 0);
        // Frames before `failed` went through; `failed` is the first that does not authenticate.
        if (trace) {
          trace.ends.fill(performance.now(), 0, failed);
          trace.done = failed;
        }
        throw new KmsError('ERR_DECRYPT');
      },
    );
  };

  return {
    command,
    access: spec.access,
    ...(spec.restriction ? { restriction: spec.restriction } : {}),
    execute(x) {
      const ps = spec.pool;
      if (ps && x.pool?.worth(x.frames.length)) {
        const out = offload(x, x.pool, ps);
        if (out) return out;
      }
      return runFrom(x, new Array(x.frames.length), 0);
    },
  };
}

const SYSADMIN: Access = { kind: 'sysadmin' };
const ADMIN: Access = { kind: 'admin' };
const object = (permission: string): Access => ({ kind: 'object', permission });
const list = (permission: string): Access => ({ kind: 'list', permission });

/** Visibility filter for LIST commands: Admins see all, Users what their policy allows. */
function visible(c: CallContext, permission: string): ((name: string) => boolean) | undefined {
  if (c.principal.admin) return undefined;
  return (name) => c.kms.allowed(c.principal, permission, name);
}

const keyStatus = (k: KeyVersionInfo): MessageInit<M.KeyStatusResponse> => k;
const enclaveStatus = (e: Enclave): MessageInit<M.EnclaveStatusResponse> => ({
  name: e.name,
  createdAt: e.createdAt,
  createdBy: e.createdBy,
});
const policyStatus = (p: Policy): MessageInit<M.PolicyStatusResponse> => ({
  name: p.name,
  createdAt: new Date(p.createdAt),
  createdBy: p.createdBy,
});
const identityResponse = (i: IdentityInfo): MessageInit<M.IdentityResponse> => i;

function toRuleSets(rules: Rules): Record<string, M.RuleSet> {
  const out: Record<string, M.RuleSet> = {};
  for (const [cmd, patterns] of Object.entries(rules)) out[cmd] = { rules: Object.fromEntries(patterns.map((p) => [p, {}])) };
  return out;
}

function fromRuleSets(sets: Record<string, M.RuleSet>): Rules {
  // fromEntries defines own properties: a `__proto__` key stays a key (and is refused as an
  // unknown command) instead of replacing the object's prototype.
  return Object.fromEntries(Object.entries(sets).map(([cmd, set]) => [cmd, Object.keys(set.rules)]));
}

/** The key version a data command uses: the named one, or the latest for version 0. */
const dataKey = (c: CallContext, req: { name: string; version: number }) => c.kms.keyVersion(c.enclave, req.name, req.version);

/** Every command, by code. */
export const COMMAND_TABLE: ReadonlyMap<number, Entry> = new Map(
  [
    // ---- cluster (SysAdmin)
    define(CMD.ClusterAddNode, { access: SYSADMIN, object: (r) => r.host, run: (c, r) => c.cluster.addNode(r.host) }),
    define(CMD.ClusterRemoveNode, { access: SYSADMIN, object: (r) => r.host, run: (c, r) => c.cluster.removeNode(r.host) }),
    define(CMD.ClusterStatus, { access: SYSADMIN, run: (c) => c.cluster.status() }),
    define(CMD.ClusterEdit, { access: SYSADMIN, object: (r) => r.removeIds.join(','), run: (c, r) => c.cluster.editCluster(r.removeIds) }),
    define(CMD.ClusterAddHsm, { access: SYSADMIN, run: (c, r) => c.cluster.addHsm(r.name, r.overwrite) }),
    define(CMD.ClusterRemoveHsm, { access: SYSADMIN, run: (c, r) => c.cluster.removeHsm(r.name) }),

    // ---- enclaves (SysAdmin)
    define(CMD.EnclaveCreate, { access: SYSADMIN, run: (c, r) => c.kms.createEnclave(c.principal.identity, r.name) }),
    define(CMD.EnclaveDelete, { access: SYSADMIN, run: (c, r) => c.kms.deleteEnclave(r.name) }),
    define(CMD.EnclaveStatus, { access: SYSADMIN, run: (c, r) => enclaveStatus(c.kms.enclave(r.name)) }),
    define(CMD.EnclaveList, {
      access: SYSADMIN,
      object: () => '',
      run: (c, r) => {
        const page = c.kms.listEnclaves(r.prefix, r.continueAt, r.limit);
        return { enclaves: page.items.map(enclaveStatus), continueAt: page.continueAt };
      },
    }),

    // ---- keys
    define(CMD.KeyCreate, {
      access: object('KEY:CREATE'),
      run: (c, r) => c.kms.createKey(c.principal.identity, c.enclave, r.name, r.type, r.addVersion),
    }),
    define(CMD.KeyDelete, { access: object('KEY:DELETE'), run: (c, r) => c.kms.deleteKey(c.enclave, r.name, r.version, r.allVersions) }),
    // KEY:IMPORT has no name the SDK can put in a policy: importing needs KEY:CREATE.
    define(CMD.KeyImport, {
      access: object('KEY:CREATE'),
      run: (c, r) => c.kms.importKey(c.principal.identity, c.enclave, r.name, r.type, r.key),
    }),
    define(CMD.KeyStatus, { access: object('KEY:STATUS'), run: (c, r) => keyStatus(c.kms.keyStatus(c.enclave, r.name, r.version)) }),
    define(CMD.KeyEncrypt, {
      access: object('KEY:ENCRYPT'),
      run: (c, r) => c.kms.encrypt(c.enclave, r.name, r.version, r.plaintext, r.associatedData),
      pool: {
        version: dataKey,
        run: (p, reqs, keys) => p.encrypt(reqs.map((r, i) => ({ key: keys[i]!, data: r.plaintext, ad: r.associatedData }))),
        answer: (_r, key, ciphertext) => ({ version: key.version, ciphertext: ciphertext as Buffer }),
      },
    }),
    define(CMD.KeyDecrypt, {
      access: object('KEY:DECRYPT'),
      run: (c, r) => ({ plaintext: c.kms.decrypt(c.enclave, r.name, r.version, r.ciphertext, r.associatedData) }),
      pool: {
        // Version 0 tries every version of the key, an imported key both algorithms, and a
        // KES JSON ciphertext names its own: that is this thread's job (kms.decrypt).
        version: (c, r) => {
          if (r.version === 0 || mayBeKesJson(r.ciphertext)) return undefined;
          const key = dataKey(c, r);
          return key.imported ? undefined : key;
        },
        run: (p, reqs, keys) => p.decrypt(reqs.map((r, i) => ({ key: keys[i]!, data: r.ciphertext, ad: r.associatedData }))),
        answer: (_r, _key, plaintext) => ({ plaintext: plaintext as Buffer }),
      },
    }),
    define(CMD.KeyGenerate, {
      access: object('KEY:GENERATE'),
      run: (c, r) => c.kms.generate(c.enclave, r.name, r.version, r.associatedData, r.length),
      pool: {
        version: (c, r) => {
          dekLength(r.length);
          return dataKey(c, r);
        },
        run: (p, reqs, keys) => p.generate(reqs.map((r, i) => ({ key: keys[i]!, length: dekLength(r.length), ad: r.associatedData }))),
        answer: (_r, key, v) => {
          const { plaintext, ciphertext } = v as { plaintext: Buffer; ciphertext: Buffer };
          return { version: key.version, plaintext, ciphertext };
        },
      },
    }),
    define(CMD.KeyList, {
      access: list('KEY:LIST'),
      object: () => '',
      run: (c, r) => {
        const page = c.kms.listKeys(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'KEY:LIST'));
        return { keys: page.items.map(keyStatus), continueAt: page.continueAt };
      },
    }),
    define(CMD.KeyListVersions, {
      access: object('KEY:LISTVERSIONS'),
      run: (c, r) => {
        const page = c.kms.listKeyVersions(c.enclave, r.name, r.continueAt, r.limit);
        return { versions: page.items.map(keyStatus), continueAt: page.continueAt };
      },
    }),
    define(CMD.KeyMac, { access: object('KEY:MAC'), run: (c, r) => c.kms.mac(c.enclave, r.name, r.version, r.message) }),

    // ---- policies
    define(CMD.PolicyCreate, {
      access: object('POLICY:CREATE'),
      run: (c, r) =>
        c.kms.createPolicy(c.principal.identity, c.enclave, r.name, fromRuleSets(r.allow), fromRuleSets(r.deny), isSdkCommandName),
    }),
    define(CMD.PolicyDelete, { access: object('POLICY:DELETE'), run: (c, r) => c.kms.deletePolicy(c.enclave, r.name) }),
    // Assigning a policy can raise a User's rights: Admins only, whatever a policy says.
    define(CMD.PolicyAssign, {
      access: ADMIN,
      object: (r) => r.policy,
      run: (c, r) => c.kms.assignPolicy(c.principal, c.enclave, r.identity, r.policy),
    }),
    define(CMD.PolicyGet, {
      access: object('POLICY:GET'),
      run: (c, r) => {
        const p = c.kms.policy(c.enclave, r.name);
        return { ...policyStatus(p), allow: toRuleSets(p.allow), deny: toRuleSets(p.deny) };
      },
    }),
    define(CMD.PolicyStatus, { access: object('POLICY:STATUS'), run: (c, r) => policyStatus(c.kms.policy(c.enclave, r.name)) }),
    define(CMD.PolicyList, {
      access: list('POLICY:LIST'),
      object: () => '',
      run: (c, r) => {
        const page = c.kms.listPolicies(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'POLICY:LIST'));
        return { policies: page.items.map(policyStatus), continueAt: page.continueAt };
      },
    }),

    // ---- identities
    define(CMD.IdentityCreate, {
      access: object('IDENTITY:CREATE'),
      restriction: 'service-accounts-only',
      object: (r) => r.identity,
      run: (c, r) =>
        c.kms.createIdentity(c.principal, c.enclave, {
          identity: r.identity,
          privilege: r.privilege,
          serviceAccount: r.isServiceAccount,
          tags: r.tags,
        }),
    }),
    define(CMD.IdentityDelete, {
      access: object('IDENTITY:DELETE'),
      restriction: 'users-own-service-accounts',
      object: (r) => r.identity,
      run: (c, r) => c.kms.deleteIdentity(c.principal, c.enclave, r.identity),
    }),
    // Everyone may look at themselves ("get-identity" without an argument).
    define(CMD.IdentityStatus, {
      access: { kind: 'self', permission: 'IDENTITY:STATUS' },
      object: (r) => r.identity,
      run: (c, r) => identityResponse(c.kms.identityInfo(c.enclave, r.identity || c.principal.identity)),
    }),
    define(CMD.IdentityList, {
      access: list('IDENTITY:LIST'),
      object: () => '',
      run: (c, r) => {
        const page = c.kms.listIdentities(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'IDENTITY:LIST'));
        return { identities: page.items.map(identityResponse), continueAt: page.continueAt };
      },
    }),
  ].map((e) => [e.command.code, e]),
);

/** Throws `access denied` unless the caller may run a command of `access` on `object`. */
export function authorize(kms: Kms, p: Principal, access: Access, object: string): void {
  if (p.sysAdmin) return;
  switch (access.kind) {
    case 'sysadmin':
      throw new KmsError('ERR_NOT_ALLOWED');
    case 'admin':
      if (!p.admin) throw new KmsError('ERR_NOT_ALLOWED');
      return;
    case 'list':
      if (!kms.allowedToList(p, access.permission)) throw new KmsError('ERR_NOT_ALLOWED');
      return;
    case 'self':
      if (object === '' || object === p.identity) return;
      if (!kms.allowed(p, access.permission, object)) throw new KmsError('ERR_NOT_ALLOWED');
      return;
    case 'object':
      if (!kms.allowed(p, access.permission, object)) throw new KmsError('ERR_NOT_ALLOWED');
      return;
  }
}
