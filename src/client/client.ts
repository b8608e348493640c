/**
 * The TypeScript SDK: every operation of the KMS API over mutual TLS, with several endpoints
 * and failover. Used by the CLI, the tests and the external-KMS HSM.
 *
 * @example
 *   const kms = new KmsClient({ endpoints: ['127.0.0.1:7373'], apiKey: 'k1:…', ca: pem });
 *   await kms.createKey('minio', { name: 'my-key' });
 *   const [dek] = await kms.generateKey('minio', [{ name: 'my-key', associatedData: ctx }]);
 */
import { parseApiKey, type ApiKey } from '../identity/api-key.js';
import { certificateForApiKey } from '../identity/client-cert.js';
import { KmsError, errorFromWire } from '../errors.js';
import { encodeFrames, parseFrames } from '../protocol/frames.js';
import { decodeMessage, encodeMessage, type MessageInit, type MessageSchema } from '../protocol/schema.js';
import * as M from '../protocol/messages.js';
import { CommandCode as C, commandByCode } from '../protocol/commands.js';
import { Transport, type TlsOptions, type HttpResponse, type TransportOptions } from './transport.js';

/**
 * Endpoints, credentials, TLS and the bounds of every call (transport.ts): `connectTimeoutMs`
 * (TCP + TLS + HTTP/2 per endpoint, default 5 s), `responseTimeoutMs` (request → response
 * headers per endpoint, default 10 s), `timeoutMs` (the whole call with failover, default
 * 30 s), and `endpointOrder`.
 */
export interface ClientOptions extends Omit<TlsOptions, 'cert' | 'key'>, TransportOptions {
  /** `host:port` (scheme optional). Default `127.0.0.1:7373`. */
  endpoints: readonly string[];
  /** A `k1:`/`k2:` API key; or give a client certificate with `cert` + `key`. */
  apiKey?: string | ApiKey;
  cert?: string;
  key?: string;
}

/** An error answer of a server that is not in our catalogue. */
export class HttpError extends Error {
  readonly status: number;
  readonly host: string;
  constructor(status: number, message: string, host: string) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.host = host;
  }
}

const OCTET = 'application/octet-stream';
const MAX_ERROR_BODY = 5000;

/** Turns a non-200 response into the catalogue's KmsError, or an HttpError. */
export function responseError(res: HttpResponse, host = ''): Error {
  const type = res.headers['content-type'];
  const body = res.body.subarray(0, MAX_ERROR_BODY);
  let message = body.toString('utf8');
  try {
    if (type === OCTET) message = decodeMessage(M.ErrResponseSchema, body).message;
    else if (type === 'application/json') {
      // ErrResponse as protobuf-JSON: `{"message": "…"}` (the server's own form, see `sendError`).
      const json = JSON.parse(message) as { message?: unknown } | null;
      if (typeof json?.message === 'string') message = json.message;
    }
  } catch {
    // keep the raw text
  }
  return errorFromWire(res.status, message) ?? new HttpError(res.status, message || `HTTP ${res.status}`, host);
}

export class KmsClient {
  readonly transport: Transport;
  /** The client's own identity (h1:…), when it authenticates with an API key. */
  readonly identity: string | undefined;

  constructor(opts: ClientOptions) {
    let cert = opts.cert;
    let key = opts.key;
    let identity: string | undefined;
    if (opts.apiKey !== undefined) {
      if (cert !== undefined || key !== undefined) throw new TypeError('give either an API key or a client certificate, not both');
      const apiKey = typeof opts.apiKey === 'string' ? parseApiKey(opts.apiKey) : opts.apiKey;
      ({ cert, key } = certificateForApiKey(apiKey));
      identity = apiKey.identity;
    }
    this.identity = identity;
    this.transport = new Transport(
      opts.endpoints,
      { cert, key, ca: opts.ca, insecure: opts.insecure },
      {
        connectTimeoutMs: opts.connectTimeoutMs,
        responseTimeoutMs: opts.responseTimeoutMs,
        timeoutMs: opts.timeoutMs,
        endpointOrder: opts.endpointOrder,
      },
    );
  }

  close(): void {
    this.transport.close();
  }

  // ---------------------------------------------------------------- plain endpoints

  async version(host?: string): Promise<M.VersionResponse> {
    const res = await this.#ok({ method: 'GET', path: '/version', headers: { accept: OCTET }, host });
    return decodeMessage(M.VersionResponseSchema, res.body);
  }

  async live(host?: string): Promise<void> {
    await this.#ok({ method: 'GET', path: '/v1/health/live', host });
  }

  async ready(opts: { write?: boolean; host?: string } = {}): Promise<void> {
    await this.#ok({ method: 'GET', path: opts.write ? '/v1/health/ready?write' : '/v1/health/ready', host: opts.host });
  }

  // ---------------------------------------------------------------- command channel

  async #ok(opts: Parameters<Transport['request']>[0]): Promise<HttpResponse> {
    const res = await this.transport.request(opts);
    if (res.status !== 200) throw responseError(res, opts.host ?? '');
    return res;
  }

  /**
   * Sends one or more commands of one kind and decodes one response per request frame
   * (or none, for state-changing commands).
   */
  async send<Req, Res>(
    enclave: string,
    code: number,
    reqSchema: MessageSchema<Req>,
    requests: readonly MessageInit<Req>[],
    resSchema?: MessageSchema<Res>,
    host?: string,
  ): Promise<Res[]> {
    if (requests.length === 0) return [];
    const body = encodeFrames(
      code,
      requests.map((r) => encodeMessage(reqSchema, r)),
    );
    const path = enclave === '' ? '/v1/kms' : `/v1/kms/${encodeURIComponent(enclave)}`;
    // Reads may go to another endpoint when one took the request and did not answer; a
    // state-changing command is never sent twice (see transport.ts).
    const idempotent = commandByCode(code)?.write === false;
    const res = await this.#ok({
      method: 'POST',
      path,
      headers: { 'content-type': OCTET, accept: 'application/*' },
      body,
      host,
      idempotent,
    });
    if (!resSchema) return [];
    const frames = parseFrames(res.body, Math.max(requests.length, 1));
    if (frames.length !== requests.length)
      throw new KmsError('ERR_MALFORMED_FRAME', `expected ${requests.length} response frames, got ${frames.length}`);
    return frames.map((f) => {
      if (f.code !== code) throw new KmsError('ERR_MALFORMED_FRAME', `received command ${f.code}`);
      return decodeMessage(resSchema, f.payload);
    });
  }

  async #one<Req, Res>(
    enclave: string,
    code: number,
    reqSchema: MessageSchema<Req>,
    req: MessageInit<Req>,
    resSchema: MessageSchema<Res>,
  ): Promise<Res> {
    return (await this.send(enclave, code, reqSchema, [req], resSchema))[0]!;
  }

  // ---------------------------------------------------------------- cluster

  clusterStatus(host?: string): Promise<M.ClusterStatusResponse> {
    return this.send('', C.ClusterStatus, M.ClusterStatusRequestSchema, [{}], M.ClusterStatusResponseSchema, host).then((r) => r[0]!);
  }
  /** Pre-registers a node (etcd-backed clusters: it joins when started with that --host). */
  async addNode(host: string): Promise<void> {
    await this.send('', C.ClusterAddNode, M.AddClusterNodeRequestSchema, [{ host }]);
  }
  /** Deregisters a stopped node. */
  async removeNode(host: string): Promise<void> {
    await this.send('', C.ClusterRemoveNode, M.RemoveClusterNodeRequestSchema, [{ host }]);
  }
  /** Forgets node ids (repair after a permanent node loss). */
  async editCluster(removeIds: readonly number[], host?: string): Promise<void> {
    await this.send('', C.ClusterEdit, M.EditClusterRequestSchema, [{ host: host ?? '', removeIds }], undefined, host);
  }
  async addHsm(name: string, overwrite = false): Promise<void> {
    await this.send('', C.ClusterAddHsm, M.AddHSMRequestSchema, [{ name, overwrite }]);
  }
  async removeHsm(name: string): Promise<void> {
    await this.send('', C.ClusterRemoveHsm, M.RemoveHSMRequestSchema, [{ name }]);
  }

  /**
   * Replaces the root encryption key (our extension; SysAdmin). Progress arrives as the
   * server re-encrypts; resolves with the new REK generation.
   */
  async rotateRoot(
    onProgress: (p: { done: number; total: number; term: number }) => void = () => {},
    host?: string,
  ): Promise<{ term: number }> {
    let pending = '';
    let result: { term: number } | undefined;
    let failure: string | undefined;
    const onLine = (line: string) => {
      if (line.trim() === '') return;
      const msg = JSON.parse(line) as { done?: number; total?: number; term: number; finished?: boolean; error?: string };
      if (msg.error) failure = msg.error;
      else if (msg.finished) result = { term: msg.term };
      else onProgress({ done: msg.done ?? 0, total: msg.total ?? 0, term: msg.term });
    };
    const res = await this.transport.request({
      method: 'POST',
      path: '/v1/root/rotate',
      host,
      responseTimeoutMs: Infinity,
      onData: (chunk) => {
        pending += chunk.toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop()!;
        lines.forEach(onLine);
      },
    });
    if (res.status !== 200) throw responseError({ ...res, body: Buffer.from(pending) }, host);
    onLine(pending);
    if (failure !== undefined || !result) throw new Error(`root key rotation failed: ${failure ?? 'the stream ended early'}`);
    return result;
  }

  /** A backup snapshot of the whole database (still encrypted); SysAdmin. */
  async readDb(host?: string): Promise<Buffer> {
    // The server prepares the whole snapshot before it answers: only the call's timeout applies.
    return (await this.#ok({ method: 'GET', path: '/v1/db', headers: { accept: OCTET }, host, responseTimeoutMs: Infinity })).body;
  }

  /** Restores a backup snapshot onto one node; SysAdmin. */
  async writeDb(snapshot: Uint8Array, host?: string): Promise<void> {
    await this.#ok({ method: 'PUT', path: '/v1/db', headers: { accept: OCTET }, body: snapshot, host, responseTimeoutMs: Infinity });
  }

  // ---------------------------------------------------------------- profiling and restarts

  /**
   * Starts profiling on one node (SysAdmin; the SDK's StartProfiling). `thread`: `runtime`
   * (the SDK's Goroutine: active resources), `os` (Thread: a diagnostic report) or `all`;
   * `blockRate` in ns (event-loop delay); see server/profiler.ts for what each means in Node.js.
   */
  async startProfiling(
    opts: { cpu?: boolean; heap?: boolean; thread?: 'runtime' | 'os' | 'all'; blockRate?: number; mutexFraction?: number },
    host?: string,
  ): Promise<void> {
    // The query exactly as the Go SDK builds it: cpu and heap always, the rest when set.
    let q = `?cpu=${opts.cpu === true}&heap=${opts.heap === true}`;
    if (opts.thread) q += `&thread=${opts.thread}`;
    if (opts.blockRate && opts.blockRate > 0) q += `&block=${opts.blockRate}`;
    if (opts.mutexFraction && opts.mutexFraction > 0) q += `&mutex=${opts.mutexFraction}`;
    await this.#ok({ method: 'POST', path: `/v1/debug/pprof${q}`, headers: { accept: OCTET }, host });
  }

  /** What profiling runs on one node (all unset: none). */
  async profilingStatus(host?: string): Promise<M.ProfileStatusResponse> {
    const res = await this.#ok({ method: 'GET', path: '/v1/debug/pprof', headers: { accept: OCTET }, host });
    return decodeMessage(M.ProfileStatusResponseSchema, res.body);
  }

  /** Stops profiling on one node and returns its results: a gzip'd tar archive (`.tar.gz`). */
  async stopProfiling(host?: string): Promise<Buffer> {
    // No Accept-Encoding: the server answers with the .tar.gz itself (application/gzip).
    const res = await this.#ok({
      method: 'DELETE',
      path: '/v1/debug/pprof',
      headers: { accept: 'application/*' },
      host,
      responseTimeoutMs: Infinity,
    });
    return res.body;
  }

  /**
   * Restarts (SysAdmin; the SDK's Restart). `self`: only the node at `host` (or the one the
   * client picks). Without it: the whole cluster, one node at a time, each waited for until it
   * serves again; the answer comes when every other node is back (this can take minutes: only
   * the client's call timeout bounds it), then the answering node restarts itself.
   */
  async restart(opts: { self?: boolean; host?: string } = {}): Promise<void> {
    await this.#ok({
      method: 'POST',
      path: opts.self ? '/v1/debug/restart?self' : '/v1/debug/restart',
      headers: { accept: 'application/*' },
      host: opts.host,
      responseTimeoutMs: Infinity,
    });
  }

  // ---------------------------------------------------------------- enclaves

  async createEnclave(name: string): Promise<void> {
    await this.send('', C.EnclaveCreate, M.CreateEnclaveRequestSchema, [{ name }]);
  }
  async deleteEnclave(name: string): Promise<void> {
    await this.send('', C.EnclaveDelete, M.DeleteEnclaveRequestSchema, [{ name }]);
  }
  enclaveStatus(names: readonly string[]): Promise<M.EnclaveStatusResponse[]> {
    return this.send(
      '',
      C.EnclaveStatus,
      M.EnclaveStatusRequestSchema,
      names.map((name) => ({ name })),
      M.EnclaveStatusResponseSchema,
    );
  }
  listEnclaves(req: MessageInit<M.ListRequest> = {}): Promise<M.ListEnclavesResponse> {
    return this.#one('', C.EnclaveList, M.ListRequestSchema, req, M.ListEnclavesResponseSchema);
  }

  // ---------------------------------------------------------------- keys

  async createKey(enclave: string, req: MessageInit<M.CreateKeyRequest>): Promise<void> {
    await this.send(enclave, C.KeyCreate, M.CreateKeyRequestSchema, [req]);
  }
  async deleteKey(enclave: string, req: MessageInit<M.DeleteKeyRequest>): Promise<void> {
    await this.send(enclave, C.KeyDelete, M.DeleteKeyRequestSchema, [req]);
  }
  async importKey(enclave: string, req: MessageInit<M.ImportKeyRequest>): Promise<void> {
    await this.send(enclave, C.KeyImport, M.ImportKeyRequestSchema, [req]);
  }
  keyStatus(enclave: string, reqs: readonly MessageInit<M.KeyStatusRequest>[]): Promise<M.KeyStatusResponse[]> {
    return this.send(enclave, C.KeyStatus, M.KeyStatusRequestSchema, reqs, M.KeyStatusResponseSchema);
  }
  encrypt(enclave: string, reqs: readonly MessageInit<M.EncryptRequest>[]): Promise<M.EncryptResponse[]> {
    return this.send(enclave, C.KeyEncrypt, M.EncryptRequestSchema, reqs, M.EncryptResponseSchema);
  }
  decrypt(enclave: string, reqs: readonly MessageInit<M.DecryptRequest>[]): Promise<M.DecryptResponse[]> {
    return this.send(enclave, C.KeyDecrypt, M.DecryptRequestSchema, reqs, M.DecryptResponseSchema);
  }
  generateKey(enclave: string, reqs: readonly MessageInit<M.GenerateKeyRequest>[]): Promise<M.GenerateKeyResponse[]> {
    return this.send(enclave, C.KeyGenerate, M.GenerateKeyRequestSchema, reqs, M.GenerateKeyResponseSchema);
  }
  listKeys(enclave: string, req: MessageInit<M.ListRequest> = {}): Promise<M.ListKeysResponse> {
    return this.#one(enclave, C.KeyList, M.ListRequestSchema, req, M.ListKeysResponseSchema);
  }
  listKeyVersions(enclave: string, req: MessageInit<M.ListKeyVersionsRequest>): Promise<M.ListKeyVersionsResponse> {
    return this.#one(enclave, C.KeyListVersions, M.ListKeyVersionsRequestSchema, req, M.ListKeyVersionsResponseSchema);
  }
  mac(enclave: string, reqs: readonly MessageInit<M.MACRequest>[]): Promise<M.MACResponse[]> {
    return this.send(enclave, C.KeyMac, M.MACRequestSchema, reqs, M.MACResponseSchema);
  }

  // ---------------------------------------------------------------- policies

  async createPolicy(enclave: string, req: MessageInit<M.CreatePolicyRequest>): Promise<void> {
    await this.send(enclave, C.PolicyCreate, M.CreatePolicyRequestSchema, [req]);
  }
  async deletePolicy(enclave: string, name: string): Promise<void> {
    await this.send(enclave, C.PolicyDelete, M.DeletePolicyRequestSchema, [{ name }]);
  }
  async assignPolicy(enclave: string, identity: string, policy: string): Promise<void> {
    await this.send(enclave, C.PolicyAssign, M.AssignPolicyRequestSchema, [{ identity, policy }]);
  }
  getPolicy(enclave: string, names: readonly string[]): Promise<M.PolicyResponse[]> {
    return this.send(
      enclave,
      C.PolicyGet,
      M.PolicyRequestSchema,
      names.map((name) => ({ name })),
      M.PolicyResponseSchema,
    );
  }
  policyStatus(enclave: string, names: readonly string[]): Promise<M.PolicyStatusResponse[]> {
    return this.send(
      enclave,
      C.PolicyStatus,
      M.PolicyRequestSchema,
      names.map((name) => ({ name })),
      M.PolicyStatusResponseSchema,
    );
  }
  listPolicies(enclave: string, req: MessageInit<M.ListRequest> = {}): Promise<M.ListPoliciesResponse> {
    return this.#one(enclave, C.PolicyList, M.ListRequestSchema, req, M.ListPoliciesResponseSchema);
  }

  // ---------------------------------------------------------------- identities

  async createIdentity(enclave: string, req: MessageInit<M.CreateIdentityRequest>): Promise<void> {
    await this.send(enclave, C.IdentityCreate, M.CreateIdentityRequestSchema, [req]);
  }
  async deleteIdentity(enclave: string, identity: string): Promise<void> {
    await this.send(enclave, C.IdentityDelete, M.DeleteIdentityRequestSchema, [{ identity }]);
  }
  /** IDENTITY:STATUS; an empty identity means the caller. */
  getIdentity(enclave: string, identities: readonly string[]): Promise<M.IdentityResponse[]> {
    return this.send(
      enclave,
      C.IdentityStatus,
      M.IdentityRequestSchema,
      identities.map((identity) => ({ identity })),
      M.IdentityResponseSchema,
    );
  }
  listIdentities(enclave: string, req: MessageInit<M.ListRequest> = {}): Promise<M.ListIdentitiesResponse> {
    return this.#one(enclave, C.IdentityList, M.ListRequestSchema, req, M.ListIdentitiesResponseSchema);
  }

  /** Iterates over every page of a LIST command. */
  static async *pages<T>(fetch: (continueAt: string) => Promise<{ items: T[]; continueAt: string }>): AsyncGenerator<T> {
    let at = '';
    for (;;) {
      const page = await fetch(at);
      yield* page.items;
      if (page.continueAt === '' || page.items.length === 0) return;
      at = page.continueAt;
    }
  }
}
