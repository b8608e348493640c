/**
 * `POST /v1/kms/{enclave}`: decodes the command frames of a request, authorizes each one,
 * runs it against the domain and frames the responses (kms-wire.md §2.2–2.5).
 *
 * One request carries commands of one kind; batchable commands get one response frame per
 * request frame, in order. If any command fails the whole request fails with that error, and
 * since only read-only commands can be batched, a failed request has changed nothing.
 */
import { KmsError } from '../errors.js';
import { parseFrames, encodeMessageFrames } from '../protocol/frames.js';
import { CommandCode as C, commandByCode, isSdkCommandName, type Command } from '../protocol/commands.js';
import { decodeMessage, type MessageInit } from '../protocol/schema.js';
import * as M from '../protocol/messages.js';
import { dekLength, type Enclave, type IdentityInfo, type KeyVersionInfo, type Kms, type Principal } from '../kms/kms.js';
import type { KeyVersion } from '../kms/records.js';
import type { CryptoPool, PoolResult } from '../crypto/pool.js';
import type { Policy } from '../kms/records.js';
import type { Rules } from '../kms/policy.js';
import type { Limits } from './http.js';

/** What a command handler can reach. */
export interface CallContext {
  readonly kms: Kms;
  readonly principal: Principal;
  /** Enclave from the URL ('' for cluster commands). */
  readonly enclave: string;
  readonly cluster: ClusterOps;
}

/** Cluster-level operations the node provides (status, HSM entries). */
export interface ClusterOps {
  status(): Promise<MessageInit<M.ClusterStatusResponse>>;
  /** Cluster membership (etcd-backed clusters; a single node refuses). */
  addNode(host: string): Promise<void>;
  removeNode(host: string): Promise<void>;
  editCluster(removeIds: readonly number[]): Promise<void>;
  addHsm(name: string, overwrite: boolean): Promise<void>;
  removeHsm(name: string): Promise<void>;
}

/** How to run one command; its message types come from the catalogue (protocol/commands). */
interface Handler<Req, Res> {
  /** The object a policy rule is matched against (key, policy or identity name). */
  object?: (req: Req) => string;
  run: (c: CallContext, req: Req) => MessageInit<Res> | void | Promise<MessageInit<Res> | void>;
}

function handler<Req, Res = never>(h: Handler<Req, Res>): Handler<unknown, unknown> {
  return h as unknown as Handler<unknown, unknown>;
}

const EMPTY = Buffer.alloc(0);

/** Visibility filter for LIST commands: Admins see all, Users what their policy allows. */
function visible(c: CallContext, command: string): ((name: string) => boolean) | undefined {
  if (c.principal.admin) return undefined;
  return (name) => c.kms.allowed(c.principal, command, name);
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

/** Handlers by command code. Authorization of the caller happens before `run`. */
const HANDLERS: ReadonlyMap<number, Handler<unknown, unknown>> = new Map([
  // ---- cluster (SysAdmin)
  [C.ClusterAddNode, handler<M.AddClusterNodeRequest>({ run: (c, r) => c.cluster.addNode(r.host) })],
  [C.ClusterRemoveNode, handler<M.RemoveClusterNodeRequest>({ run: (c, r) => c.cluster.removeNode(r.host) })],
  [C.ClusterStatus, handler<M.ClusterStatusRequest, M.ClusterStatusResponse>({ run: (c) => c.cluster.status() })],
  [C.ClusterEdit, handler<M.EditClusterRequest>({ run: (c, r) => c.cluster.editCluster(r.removeIds) })],
  [C.ClusterAddHsm, handler<M.AddHSMRequest>({ run: (c, r) => c.cluster.addHsm(r.name, r.overwrite) })],
  [C.ClusterRemoveHsm, handler<M.RemoveHSMRequest>({ run: (c, r) => c.cluster.removeHsm(r.name) })],

  // ---- enclaves (SysAdmin)
  [C.EnclaveCreate, handler<M.CreateEnclaveRequest>({ run: (c, r) => c.kms.createEnclave(c.principal.identity, r.name) })],
  [C.EnclaveDelete, handler<M.DeleteEnclaveRequest>({ run: (c, r) => c.kms.deleteEnclave(r.name) })],
  [C.EnclaveStatus, handler<M.EnclaveStatusRequest, M.EnclaveStatusResponse>({ run: (c, r) => enclaveStatus(c.kms.enclave(r.name)) })],
  [
    C.EnclaveList,
    handler<M.ListRequest, M.ListEnclavesResponse>({
      run: (c, r) => {
        const page = c.kms.listEnclaves(r.prefix, r.continueAt, r.limit);
        return { enclaves: page.items.map(enclaveStatus), continueAt: page.continueAt };
      },
    }),
  ],

  // ---- keys
  [
    C.KeyCreate,
    handler<M.CreateKeyRequest>({
      object: (r) => r.name,
      run: (c, r) => c.kms.createKey(c.principal.identity, c.enclave, r.name, r.type, r.addVersion),
    }),
  ],
  [
    C.KeyDelete,
    handler<M.DeleteKeyRequest>({ object: (r) => r.name, run: (c, r) => c.kms.deleteKey(c.enclave, r.name, r.version, r.allVersions) }),
  ],
  [
    C.KeyImport,
    handler<M.ImportKeyRequest>({
      object: (r) => r.name,
      run: (c, r) => c.kms.importKey(c.principal.identity, c.enclave, r.name, r.type, r.key),
    }),
  ],
  [
    C.KeyStatus,
    handler<M.KeyStatusRequest, M.KeyStatusResponse>({
      object: (r) => r.name,
      run: (c, r) => keyStatus(c.kms.keyStatus(c.enclave, r.name, r.version)),
    }),
  ],
  [
    C.KeyEncrypt,
    handler<M.EncryptRequest, M.EncryptResponse>({
      object: (r) => r.name,
      run: (c, r) => c.kms.encrypt(c.enclave, r.name, r.version, r.plaintext, r.associatedData),
    }),
  ],
  [
    C.KeyDecrypt,
    handler<M.DecryptRequest, M.DecryptResponse>({
      object: (r) => r.name,
      run: (c, r) => ({ plaintext: c.kms.decrypt(c.enclave, r.name, r.version, r.ciphertext, r.associatedData) }),
    }),
  ],
  [
    C.KeyGenerate,
    handler<M.GenerateKeyRequest, M.GenerateKeyResponse>({
      object: (r) => r.name,
      run: (c, r) => c.kms.generate(c.enclave, r.name, r.version, r.associatedData, r.length),
    }),
  ],
  [
    C.KeyList,
    handler<M.ListRequest, M.ListKeysResponse>({
      run: (c, r) => {
        const page = c.kms.listKeys(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'KEY:LIST'));
        return { keys: page.items.map(keyStatus), continueAt: page.continueAt };
      },
    }),
  ],
  [
    C.KeyListVersions,
    handler<M.ListKeyVersionsRequest, M.ListKeyVersionsResponse>({
      object: (r) => r.name,
      run: (c, r) => {
        const page = c.kms.listKeyVersions(c.enclave, r.name, r.continueAt, r.limit);
        return { versions: page.items.map(keyStatus), continueAt: page.continueAt };
      },
    }),
  ],
  [
    C.KeyMac,
    handler<M.MACRequest, M.MACResponse>({ object: (r) => r.name, run: (c, r) => c.kms.mac(c.enclave, r.name, r.version, r.message) }),
  ],

  // ---- policies
  [
    C.PolicyCreate,
    handler<M.CreatePolicyRequest>({
      object: (r) => r.name,
      run: (c, r) =>
        c.kms.createPolicy(c.principal.identity, c.enclave, r.name, fromRuleSets(r.allow), fromRuleSets(r.deny), isSdkCommandName),
    }),
  ],
  [C.PolicyDelete, handler<M.DeletePolicyRequest>({ object: (r) => r.name, run: (c, r) => c.kms.deletePolicy(c.enclave, r.name) })],
  [
    C.PolicyAssign,
    handler<M.AssignPolicyRequest>({
      object: (r) => r.policy,
      run: (c, r) => c.kms.assignPolicy(c.principal, c.enclave, r.identity, r.policy),
    }),
  ],
  [
    C.PolicyGet,
    handler<M.PolicyRequest, M.PolicyResponse>({
      object: (r) => r.name,
      run: (c, r) => {
        const p = c.kms.policy(c.enclave, r.name);
        return { ...policyStatus(p), allow: toRuleSets(p.allow), deny: toRuleSets(p.deny) };
      },
    }),
  ],
  [
    C.PolicyStatus,
    handler<M.PolicyRequest, M.PolicyStatusResponse>({
      object: (r) => r.name,
      run: (c, r) => policyStatus(c.kms.policy(c.enclave, r.name)),
    }),
  ],
  [
    C.PolicyList,
    handler<M.ListRequest, M.ListPoliciesResponse>({
      run: (c, r) => {
        const page = c.kms.listPolicies(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'POLICY:LIST'));
        return { policies: page.items.map(policyStatus), continueAt: page.continueAt };
      },
    }),
  ],

  // ---- identities
  [
    C.IdentityCreate,
    handler<M.CreateIdentityRequest>({
      object: (r) => r.identity,
      run: (c, r) =>
        c.kms.createIdentity(c.principal, c.enclave, {
          identity: r.identity,
          privilege: r.privilege,
          serviceAccount: r.isServiceAccount,
          tags: r.tags,
        }),
    }),
  ],
  [
    C.IdentityDelete,
    handler<M.DeleteIdentityRequest>({
      object: (r) => r.identity,
      run: (c, r) => c.kms.deleteIdentity(c.principal, c.enclave, r.identity),
    }),
  ],
  [
    C.IdentityStatus,
    handler<M.IdentityRequest, M.IdentityResponse>({
      // Everyone may look at themselves ("get-identity" without an argument).
      object: (r) => r.identity,
      run: (c, r) => identityResponse(c.kms.identityInfo(c.enclave, r.identity || c.principal.identity)),
    }),
  ],
  [
    C.IdentityList,
    handler<M.ListRequest, M.ListIdentitiesResponse>({
      run: (c, r) => {
        const page = c.kms.listIdentities(c.enclave, r.prefix, r.continueAt, r.limit, visible(c, 'IDENTITY:LIST'));
        return { identities: page.items.map(identityResponse), continueAt: page.continueAt };
      },
    }),
  ],
]);

/** Whether the caller may run `cmd` on `object` (per frame; LIST commands filter instead). */
function authorize(c: CallContext, cmd: Command, h: Handler<unknown, unknown>, req: unknown): void {
  const p = c.principal;
  if (cmd.scope === 'cluster') {
    if (!p.sysAdmin) throw new KmsError('ERR_NOT_ALLOWED');
    return;
  }
  if (p.admin) return;
  if (!h.object) {
    if (!c.kms.allowedToList(p, cmd.name)) throw new KmsError('ERR_NOT_ALLOWED');
    return;
  }
  const object = h.object(req);
  // KEY:IMPORT has no name the SDK can put in a policy; importing needs KEY:CREATE.
  const name = cmd.code === C.KeyImport ? 'KEY:CREATE' : cmd.name;
  if (cmd.code === C.IdentityStatus && (object === '' || object === p.identity)) return;
  if (!c.kms.allowed(p, name, object)) throw new KmsError('ERR_NOT_ALLOWED');
}

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
  /** The name of frame `i`, decoded on demand (for frames that did not run). */
  objectAt?: (i: number) => string;
  /** Frames that ran successfully (a failure happened in frame `done`). */
  done: number;
  /** Per finished frame: `performance.now()` when it finished. */
  ends: number[];
}

/** The name a frame is about: the handler's policy object, else the message's `name`. */
function objectOf(h: Handler<unknown, unknown>, req: unknown): string {
  if (h.object) return h.object(req);
  const name = (req as { name?: unknown }).name;
  return typeof name === 'string' ? name : '';
}

/**
 * Runs every command frame of a request body and returns the response body.
 * @param identity the caller's `h1:` identity ('' without a client certificate)
 * @param trace filled with what happened, if given
 * @param pool threads for the cryptography of large KEY:GENERATE/ENCRYPT/DECRYPT batches
 */
export function dispatch(
  kms: Kms,
  cluster: ClusterOps,
  identity: string,
  enclave: string,
  body: Buffer,
  limits: Limits,
  trace?: DispatchTrace,
  pool?: CryptoPool,
): Buffer | Promise<Buffer> {
  // Without a client certificate nothing of the request is looked at (kms-wire.md §1.5).
  if (identity === '') throw new KmsError('ERR_NOT_ALLOWED');
  const frames = parseFrames(body, limits.maxFrames);
  const code = frames[0]!.code;
  const cmd = commandByCode(code);
  const h = HANDLERS.get(code);
  if (!cmd || !h) throw new KmsError('ERR_UNKNOWN_COMMAND', `code ${code}`);
  if (trace) {
    trace.command = cmd;
    trace.frames = frames.length;
    trace.objectAt = (i) => {
      try {
        return objectOf(h, decodeMessage(cmd.request, frames[i]!.payload));
      } catch {
        return '';
      }
    };
  }
  for (const f of frames) if (f.code !== code) throw new KmsError('ERR_MIXED_BATCH');
  if (frames.length > 1 && !cmd.batch) throw new KmsError('ERR_BATCH_NOT_ALLOWED', cmd.name);

  // Cluster and enclave-management commands ignore the URL's enclave (ENCLAVE:LIST is sent
  // with none, the others with their argument in the message).
  const scope = cmd.scope === 'cluster' ? '' : enclave;
  if (cmd.scope === 'enclave') {
    if (enclave === '') throw new KmsError('ERR_ENCLAVE_REQUIRED');
    if (kms.isSysAdmin(identity) && !kms.hasEnclave(enclave)) throw new KmsError('ERR_ENCLAVE_NOT_FOUND');
  }
  const principal = kms.principal(identity, scope);
  if (!principal.known) throw new KmsError('ERR_NOT_ALLOWED');
  const c: CallContext = { kms, principal, enclave: scope, cluster };

  if (pool?.worth(frames.length) && OFFLOADED.has(code)) {
    return offload(pool, c, cmd, h, frames, trace).then((out) => out ?? runFrames(c, cmd, h, frames, trace, new Array(frames.length), 0));
  }
  return runFrames(c, cmd, h, frames, trace, new Array(frames.length), 0);
}

/**
 * Runs frames `from`… one after the other and encodes all responses at the end, straight into
 * one buffer (no per-frame copies). Synchronous unless a command is (only writes are).
 */
function runFrames(
  c: CallContext,
  cmd: Command,
  h: Handler<unknown, unknown>,
  frames: readonly { payload: Buffer }[],
  trace: DispatchTrace | undefined,
  results: MessageInit<unknown>[],
  from: number,
): Buffer | Promise<Buffer> {
  for (let i = from; i < frames.length; i++) {
    const req = decodeMessage(cmd.request, frames[i]!.payload);
    if (trace) trace.objects[i] = objectOf(h, req);
    authorize(c, cmd, h, req);
    const res = h.run(c, req);
    if (res instanceof Promise) {
      return res.then((r) => {
        finished(trace, results, i, r);
        return runFrames(c, cmd, h, frames, trace, results, i + 1);
      });
    }
    finished(trace, results, i, res);
  }
  return cmd.response ? encodeMessageFrames(cmd.code, cmd.response, results, { pad: true }) : EMPTY;
}

function finished(trace: DispatchTrace | undefined, results: MessageInit<unknown>[], i: number, res: MessageInit<unknown> | void): void {
  results[i] = (res ?? NO_FIELDS) as MessageInit<unknown>;
  if (trace) {
    trace.done = i + 1;
    trace.ends[i] = performance.now();
  }
}

/** A response message with every field at its default (encodes to nothing). */
const NO_FIELDS = Object.freeze({});

/** Commands whose batches may run their cryptography on the pool's threads. */
const OFFLOADED = new Set<number>([C.KeyGenerate, C.KeyEncrypt, C.KeyDecrypt]);

type DataRequest = M.GenerateKeyRequest & M.EncryptRequest & M.DecryptRequest;

/**
 * A KEY:GENERATE / KEY:ENCRYPT / KEY:DECRYPT batch with its cryptography on the pool: every
 * frame is decoded, authorized and resolved to its key version here, in order, exactly as the
 * frame-by-frame path does; only sealing/opening runs on a thread. Returns undefined whenever
 * the frame-by-frame path must decide instead (a frame that fails before any cryptography,
 * KEY:DECRYPT of version 0, which tries every version, or a pool that failed): it reports the
 * first failing frame exactly, and redoing a batch's checks is cheap.
 */
async function offload(
  pool: CryptoPool,
  c: CallContext,
  cmd: Command,
  h: Handler<unknown, unknown>,
  frames: readonly { payload: Buffer }[],
  trace: DispatchTrace | undefined,
): Promise<Buffer | undefined> {
  const n = frames.length;
  const reqs: DataRequest[] = new Array(n);
  const keys: KeyVersion[] = new Array(n);
  const lengths: number[] = cmd.code === C.KeyGenerate ? new Array(n) : [];
  try {
    for (let i = 0; i < n; i++) {
      const req = decodeMessage(cmd.request, frames[i]!.payload) as DataRequest;
      authorize(c, cmd, h, req);
      if (cmd.code === C.KeyDecrypt && req.version === 0) return undefined;
      if (cmd.code === C.KeyGenerate) lengths[i] = dekLength(req.length);
      keys[i] = c.kms.keyVersion(c.enclave, req.name, req.version);
      reqs[i] = req;
    }
  } catch {
    return undefined;
  }
  let answer: PoolResult<unknown>;
  try {
    if (cmd.code === C.KeyGenerate)
      answer = await pool.generate(reqs.map((r, i) => ({ key: keys[i]!, length: lengths[i]!, ad: r.associatedData })));
    else if (cmd.code === C.KeyEncrypt)
      answer = await pool.encrypt(reqs.map((r, i) => ({ key: keys[i]!, data: r.plaintext, ad: r.associatedData })));
    else answer = await pool.decrypt(reqs.map((r, i) => ({ key: keys[i]!, data: r.ciphertext, ad: r.associatedData })));
  } catch (err) {
    const failed = (err as { failedItem?: number }).failedItem;
    if (failed === undefined) return undefined; // the pool is gone: on this thread
    // Frames before `failed` went through; `failed` is the first that does not authenticate.
    if (trace) {
      const now = performance.now();
      for (let i = 0; i < n; i++) trace.objects[i] = reqs[i]!.name;
      for (let i = 0; i < failed; i++) trace.ends[i] = now;
      trace.done = failed;
    }
    throw new KmsError('ERR_DECRYPT');
  }
  try {
    const v = answer.values;
    const results: MessageInit<unknown>[] = new Array(n);
    for (let i = 0; i < n; i++) {
      if (cmd.code === C.KeyGenerate) {
        const r = v[i] as { plaintext: Buffer; ciphertext: Buffer };
        results[i] = { version: keys[i]!.version, plaintext: r.plaintext, ciphertext: r.ciphertext };
      } else if (cmd.code === C.KeyEncrypt) {
        results[i] = { version: keys[i]!.version, ciphertext: v[i] };
      } else {
        results[i] = { plaintext: v[i] };
      }
    }
    if (trace) {
      const now = performance.now();
      for (let i = 0; i < n; i++) {
        trace.objects[i] = reqs[i]!.name;
        trace.ends[i] = now;
      }
      trace.done = n;
    }
    return encodeMessageFrames(cmd.code, cmd.response!, results, { pad: true });
  } finally {
    answer.wipe();
  }
}
