/**
 * Every protobuf message of the MinIO KMS protocol (package `minio.kms`, proto3), written from
 * the field tables of `kms-wire.md` §2.4, plus one message pair of our own for
 * KEY:LISTVERSIONS. Each message has a TS interface (the decoded shape, see `schema.ts` for the
 * type mapping) and a `…Schema` table for `encodeMessage`/`decodeMessage`/`toJSON`/`fromJSON`.
 *
 * JSON names: as listed in `kms-wire.md` §2.4 and `minkms-features.md` §11.2; where neither
 * names a field, the snake_case of the field name is used (guess; only matters for JSON).
 *
 * Example:
 * ```ts
 * const bytes = encodeMessage(GenerateKeyRequestSchema, { name: 'my-key', length: 32 });
 * const req = decodeMessage(GenerateKeyRequestSchema, bytes); // { name, version: 0, associatedData, length }
 * ```
 */

import { defineMessage } from './schema.js';

// ---------------------------------------------------------------------------------------------
// Shared pieces

/** `Rule`: an empty message today (placeholder for future rule conditions). */
export type Rule = Record<string, never>;
export const RuleSchema = defineMessage<Rule>('Rule', []);

/** `RuleSet`: name patterns (map keys, e.g. `my-key*`) → rule. Empty patterns are dropped by the SDK. */
export interface RuleSet {
  rules: Record<string, Rule>;
}
export const RuleSetSchema = defineMessage<RuleSet>('RuleSet', [{ no: 1, name: 'rules', json: 'rules', map: ['string', RuleSchema] }]);

/** `IdentityResponse.privilege` values (the request uses the text names instead). */
export const Privilege = { SysAdmin: 1, Admin: 2, User: 3 } as const;
export type PrivilegeCode = (typeof Privilege)[keyof typeof Privilege];

// ---------------------------------------------------------------------------------------------
// Requests

/** CLUSTER:STATUS request: empty. */
export type ClusterStatusRequest = Record<string, never>;
export const ClusterStatusRequestSchema = defineMessage<ClusterStatusRequest>('ClusterStatusRequest', []);

/** Request of every LIST command (ENCLAVE:LIST, KEY:LIST, POLICY:LIST, IDENTITY:LIST). */
export interface ListRequest {
  prefix: string;
  /** Name to start at (inclusive); empty = from the beginning. */
  continueAt: string;
  /** Page size; 0 = server chooses. */
  limit: number;
}
export const ListRequestSchema = defineMessage<ListRequest>('ListRequest', [
  { no: 1, name: 'prefix', json: 'prefix', type: 'string' },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'string' },
  { no: 3, name: 'limit', json: 'limit', type: 'uint32' },
]);

/** CLUSTER:ADDNODE. */
export interface AddClusterNodeRequest {
  /** `host` or `host:port`. */
  host: string;
}
export const AddClusterNodeRequestSchema = defineMessage<AddClusterNodeRequest>('AddClusterNodeRequest', [
  { no: 1, name: 'host', json: 'host', type: 'string' },
]);

/** CLUSTER:REMOVENODE. */
export interface RemoveClusterNodeRequest {
  host: string;
  deleteClusterOnHost: boolean;
}
export const RemoveClusterNodeRequestSchema = defineMessage<RemoveClusterNodeRequest>('RemoveClusterNodeRequest', [
  { no: 1, name: 'host', json: 'host', type: 'string' },
  { no: 2, name: 'deleteClusterOnHost', json: 'delete_cluster_on_host', type: 'bool' },
]);

/** CLUSTER:EDIT. */
export interface EditClusterRequest {
  host: string;
  /** Node ids to drop from the receiving node's cluster definition. */
  removeIds: number[];
}
export const EditClusterRequestSchema = defineMessage<EditClusterRequest>('EditClusterRequest', [
  { no: 1, name: 'host', json: 'host', type: 'string' },
  { no: 2, name: 'removeIds', json: 'remove', type: 'uint32', repeated: true },
]);

/** CLUSTER:ADDHSM. */
export interface AddHSMRequest {
  name: string;
  /** Re-seal / replace an existing entry. */
  overwrite: boolean;
}
export const AddHSMRequestSchema = defineMessage<AddHSMRequest>('AddHSMRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'overwrite', json: 'overwrite', type: 'bool' },
]);

/** CLUSTER:REMOVEHSM. */
export interface RemoveHSMRequest {
  name: string;
}
export const RemoveHSMRequestSchema = defineMessage<RemoveHSMRequest>('RemoveHSMRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
]);

/** ENCLAVE:CREATE (and, byte-identical, ENCLAVE:DELETE and ENCLAVE:STATUS). */
export interface CreateEnclaveRequest {
  name: string;
}
export const CreateEnclaveRequestSchema = defineMessage<CreateEnclaveRequest>('CreateEnclaveRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
]);
/** ENCLAVE:DELETE. */
export type DeleteEnclaveRequest = CreateEnclaveRequest;
export const DeleteEnclaveRequestSchema = defineMessage<DeleteEnclaveRequest>('DeleteEnclaveRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
]);
/** ENCLAVE:STATUS (the SDK actually sends a CreateEnclaveRequest; same bytes). */
export type EnclaveStatusRequest = CreateEnclaveRequest;
export const EnclaveStatusRequestSchema = defineMessage<EnclaveStatusRequest>('EnclaveStatusRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
]);

/** Body of `POST /v1/debug/log` (unframed). Levels are slog levels: Debug −4, Info 0, Warn 4, Error 8. */
export interface LogRequest {
  /** Only records ≥ this level. */
  level: number;
  /** Substring filter. */
  message: string;
  /** Replay records since; undefined = only new records. */
  since: Date | undefined;
  /** Stack traces only for records ≥ this level. */
  traceLevel: number;
}
export const LogRequestSchema = defineMessage<LogRequest>('LogRequest', [
  { no: 1, name: 'level', json: 'level', type: 'sint32' },
  { no: 2, name: 'message', json: 'message', type: 'string' },
  { no: 3, name: 'since', json: 'since', type: 'timestamp' },
  { no: 4, name: 'traceLevel', json: 'trace_level', type: 'sint32' },
]);

/** KEY:CREATE. */
export interface CreateKeyRequest {
  name: string;
  /** `AES256`, `ChaCha20` or empty (server picks). */
  type: string;
  /** true = add a version to an existing key (rotate); false = fail if it exists. */
  addVersion: boolean;
}
export const CreateKeyRequestSchema = defineMessage<CreateKeyRequest>('CreateKeyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'type', json: 'type', type: 'string' },
  { no: 3, name: 'addVersion', json: 'add_version', type: 'bool' },
]);

/** KEY:IMPORT (code 203). */
export interface ImportKeyRequest {
  name: string;
  type: string;
  /** Raw key material (32 bytes). */
  key: Buffer;
}
export const ImportKeyRequestSchema = defineMessage<ImportKeyRequest>('ImportKeyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'type', json: 'type', type: 'string' },
  { no: 3, name: 'key', json: 'key', type: 'bytes' },
]);

/** KEY:DELETE. */
export interface DeleteKeyRequest {
  name: string;
  /** 0 = latest. */
  version: number;
  /** Must not be combined with a non-zero version. */
  allVersions: boolean;
}
export const DeleteKeyRequestSchema = defineMessage<DeleteKeyRequest>('DeleteKeyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'allVersions', json: 'all_versions', type: 'bool' },
]);

/** KEY:STATUS. */
export interface KeyStatusRequest {
  name: string;
  /** 0 = latest. */
  version: number;
}
export const KeyStatusRequestSchema = defineMessage<KeyStatusRequest>('KeyStatusRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
]);

/** KEY:ENCRYPT. */
export interface EncryptRequest {
  name: string;
  version: number;
  plaintext: Buffer;
  associatedData: Buffer;
}
export const EncryptRequestSchema = defineMessage<EncryptRequest>('EncryptRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'plaintext', json: 'plaintext', type: 'bytes' },
  { no: 4, name: 'associatedData', json: 'associated_data', type: 'bytes' },
]);

/** KEY:GENERATE. */
export interface GenerateKeyRequest {
  name: string;
  version: number;
  associatedData: Buffer;
  /** DEK length in bytes; 0 → 32; max 1024. */
  length: number;
}
export const GenerateKeyRequestSchema = defineMessage<GenerateKeyRequest>('GenerateKeyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'associatedData', json: 'associated_data', type: 'bytes' },
  { no: 4, name: 'length', json: 'length', type: 'uint32' },
]);

/** KEY:MAC. */
export interface MACRequest {
  name: string;
  version: number;
  message: Buffer;
}
export const MACRequestSchema = defineMessage<MACRequest>('MACRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'message', json: 'message', type: 'bytes' },
]);

/** KEY:DECRYPT. MinIO may send version 0 (see `kms-wire.md` §2.6). */
export interface DecryptRequest {
  name: string;
  version: number;
  ciphertext: Buffer;
  associatedData: Buffer;
}
export const DecryptRequestSchema = defineMessage<DecryptRequest>('DecryptRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'ciphertext', json: 'ciphertext', type: 'bytes' },
  { no: 4, name: 'associatedData', json: 'associated_data', type: 'bytes' },
]);

/** POLICY:CREATE (create or overwrite). Map keys are command text names. */
export interface CreatePolicyRequest {
  name: string;
  allow: Record<string, RuleSet>;
  deny: Record<string, RuleSet>;
}
export const CreatePolicyRequestSchema = defineMessage<CreatePolicyRequest>('CreatePolicyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'allow', json: 'allow', map: ['string', RuleSetSchema] },
  { no: 3, name: 'deny', json: 'deny', map: ['string', RuleSetSchema] },
]);

/** POLICY:GET and POLICY:STATUS. */
export interface PolicyRequest {
  name: string;
}
export const PolicyRequestSchema = defineMessage<PolicyRequest>('PolicyRequest', [{ no: 1, name: 'name', json: 'name', type: 'string' }]);
/** POLICY:DELETE. */
export type DeletePolicyRequest = PolicyRequest;
export const DeletePolicyRequestSchema = defineMessage<DeletePolicyRequest>('DeletePolicyRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
]);

/** POLICY:ASSIGN. */
export interface AssignPolicyRequest {
  /** `h1:` identity, non-empty. */
  identity: string;
  policy: string;
}
export const AssignPolicyRequestSchema = defineMessage<AssignPolicyRequest>('AssignPolicyRequest', [
  { no: 1, name: 'identity', json: 'identity', type: 'string' },
  { no: 2, name: 'policy', json: 'policy', type: 'string' },
]);

/** IDENTITY:CREATE (create or overwrite). */
export interface CreateIdentityRequest {
  identity: string;
  /** `SysAdmin`, `Admin`, `User`; empty = User. */
  privilege: string;
  isServiceAccount: boolean;
  tags: Record<string, string>;
}
export const CreateIdentityRequestSchema = defineMessage<CreateIdentityRequest>('CreateIdentityRequest', [
  { no: 1, name: 'identity', json: 'identity', type: 'string' },
  { no: 2, name: 'privilege', json: 'privilege', type: 'string' },
  { no: 3, name: 'isServiceAccount', json: 'service_account', type: 'bool' },
  { no: 4, name: 'tags', json: 'tags', map: ['string', 'string'] },
]);

/** IDENTITY:STATUS. */
export interface IdentityRequest {
  identity: string;
}
export const IdentityRequestSchema = defineMessage<IdentityRequest>('IdentityRequest', [
  { no: 1, name: 'identity', json: 'identity', type: 'string' },
]);
/** IDENTITY:DELETE. */
export type DeleteIdentityRequest = IdentityRequest;
export const DeleteIdentityRequestSchema = defineMessage<DeleteIdentityRequest>('DeleteIdentityRequest', [
  { no: 1, name: 'identity', json: 'identity', type: 'string' },
]);

/**
 * KEY:LISTVERSIONS request (code 209). **Our extension**: the Go SDK has the command code and
 * text name but no message types, so this layout is ours, not MinIO's.
 */
export interface ListKeyVersionsRequest {
  name: string;
  /** Version to start at (inclusive); 0 = the first. */
  continueAt: number;
  /** Page size; 0 = server chooses. */
  limit: number;
}
export const ListKeyVersionsRequestSchema = defineMessage<ListKeyVersionsRequest>('ListKeyVersionsRequest', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'uint32' },
  { no: 3, name: 'limit', json: 'limit', type: 'uint32' },
]);

// ---------------------------------------------------------------------------------------------
// Responses

/** Error body (`application/octet-stream`), or `{"message": …}` as JSON. */
export interface ErrResponse {
  message: string;
}
export const ErrResponseSchema = defineMessage<ErrResponse>('ErrResponse', [{ no: 1, name: 'message', json: 'message', type: 'string' }]);

/** `GET /version`. */
export interface VersionResponse {
  /** Commit timestamp like `2023-12-01T16-06-52Z`. */
  version: string;
  commit: string;
  /** e.g. `v1`. */
  apiVersion: string;
  host: string;
  fips140: boolean;
}
export const VersionResponseSchema = defineMessage<VersionResponse>('VersionResponse', [
  { no: 1, name: 'version', json: 'version', type: 'string' },
  { no: 2, name: 'commit', json: 'commit', type: 'string' },
  { no: 3, name: 'apiVersion', json: 'api_version', type: 'string' },
  { no: 4, name: 'host', json: 'host', type: 'string' },
  { no: 5, name: 'fips140', json: 'fips140', type: 'bool' },
]);

/** One node's status (inside ClusterStatusResponse). Durations are milliseconds. */
export interface ServerStatusResponse {
  version: string;
  apiVersion: string;
  host: string;
  upTime: number;
  /** `Leader`, `Follower` or `Candidate`. */
  role: string;
  /** Number of applied state changes. */
  commit: number;
  /** Node id → address. */
  nodes: Map<number, string>;
  id: number;
  /** Negative = no leader. */
  leaderId: number;
  lastHeartbeat: number;
  heartbeatInterval: number;
  electionTimeout: number;
  os: string;
  arch: string;
  cpus: number;
  usableCpus: number;
  heapMemInUse: number;
  stackMemInUse: number;
  /** HSMs with a sealed root-key entry on disk. */
  hsms: string[];
  /** HSMs with a configuration present. */
  configuredHsms: string[];
  /** Ours: configured HSMs without a sealed entry → why sealing failed last. */
  pendingHsms: Record<string, string>;
  /** Ours: the node is sealed. */
  sealed: boolean;
  /** Ours: the root (SysAdmin) identity, and `admin.identity` or the HSM its API key is derived from. */
  rootIdentity: string;
  rootIdentitySource: string;
  /** Ours: how current the node's copy of the state is (`fresh`, `stale`, `offline`, `ok`, `full`). */
  storeState: string;
  /** Ours: time since a quorum of the cluster store last answered (0: not a cluster, or never). */
  lastQuorum: number;
}
export const ServerStatusResponseSchema = defineMessage<ServerStatusResponse>('ServerStatusResponse', [
  { no: 1, name: 'version', json: 'version', type: 'string' },
  { no: 2, name: 'apiVersion', json: 'api_version', type: 'string' },
  { no: 3, name: 'host', json: 'host', type: 'string' },
  { no: 4, name: 'upTime', json: 'uptime', type: 'duration' },
  { no: 5, name: 'role', json: 'role', type: 'string' },
  { no: 6, name: 'commit', json: 'commit', type: 'uint64' },
  { no: 7, name: 'nodes', json: 'nodes', map: ['uint32', 'string'] },
  { no: 8, name: 'id', json: 'node_id', type: 'uint32' },
  { no: 9, name: 'leaderId', json: 'leader_id', type: 'sint64' },
  { no: 10, name: 'lastHeartbeat', json: 'last_heartbeat', type: 'duration' },
  { no: 11, name: 'heartbeatInterval', json: 'heartbeat_interval', type: 'duration' },
  { no: 12, name: 'electionTimeout', json: 'election_timeout', type: 'duration' },
  { no: 13, name: 'os', json: 'sys_os', type: 'string' },
  { no: 14, name: 'arch', json: 'sys_cpu_arch', type: 'string' },
  { no: 15, name: 'cpus', json: 'sys_cpu_num', type: 'uint32' },
  { no: 16, name: 'usableCpus', json: 'sys_cpu_used', type: 'uint32' },
  { no: 17, name: 'heapMemInUse', json: 'sys_mem_heap_used', type: 'uint64' },
  { no: 18, name: 'stackMemInUse', json: 'sys_mem_stack_used', type: 'uint64' },
  { no: 19, name: 'hsms', json: 'hsm', type: 'string', repeated: true },
  { no: 20, name: 'configuredHsms', json: 'hsm_active', type: 'string', repeated: true },
  // Ours, numbered far from the SDK's fields so that a newer SDK field never collides.
  { no: 100, name: 'pendingHsms', json: 'hsm_pending', map: ['string', 'string'] },
  { no: 101, name: 'sealed', json: 'sealed', type: 'bool' },
  { no: 102, name: 'rootIdentity', json: 'root_identity', type: 'string' },
  { no: 103, name: 'rootIdentitySource', json: 'root_identity_source', type: 'string' },
  { no: 104, name: 'storeState', json: 'store_state', type: 'string' },
  { no: 105, name: 'lastQuorum', json: 'store_last_quorum', type: 'duration' },
]);

/** CLUSTER:STATUS response (exactly one frame). */
export interface ClusterStatusResponse {
  nodesUp: Map<number, ServerStatusResponse>;
  /** Node id → address. */
  nodesDown: Map<number, string>;
}
export const ClusterStatusResponseSchema = defineMessage<ClusterStatusResponse>('ClusterStatusResponse', [
  { no: 1, name: 'nodesUp', json: 'nodes_up', map: ['uint32', ServerStatusResponseSchema] },
  { no: 2, name: 'nodesDown', json: 'nodes_down', map: ['uint32', 'string'] },
]);

/** `GET /v1/debug/pprof`. */
export interface ProfileStatusResponse {
  started: Date | undefined;
  cpu: boolean;
  heap: boolean;
  goroutine: boolean;
  thread: boolean;
  blockRate: number;
  mutexFraction: number;
}
export const ProfileStatusResponseSchema = defineMessage<ProfileStatusResponse>('ProfileStatusResponse', [
  { no: 1, name: 'started', json: 'started', type: 'timestamp' },
  { no: 2, name: 'cpu', json: 'cpu', type: 'bool' },
  { no: 3, name: 'heap', json: 'heap', type: 'bool' },
  { no: 4, name: 'goroutine', json: 'goroutine', type: 'bool' },
  { no: 5, name: 'thread', json: 'thread', type: 'bool' },
  { no: 6, name: 'blockRate', json: 'block_rate', type: 'uint32' },
  { no: 7, name: 'mutexFraction', json: 'mutex_frac', type: 'uint32' },
]);

/** ENCLAVE:STATUS response (one per request frame); also the rows of ListEnclavesResponse. */
export interface EnclaveStatusResponse {
  name: string;
  createdAt: Date | undefined;
  /** Identity or empty. */
  createdBy: string;
}
export const EnclaveStatusResponseSchema = defineMessage<EnclaveStatusResponse>('EnclaveStatusResponse', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'createdAt', json: 'created_at', type: 'timestamp' },
  { no: 3, name: 'createdBy', json: 'created_by', type: 'string' },
]);

/** ENCLAVE:LIST response. */
export interface ListEnclavesResponse {
  enclaves: EnclaveStatusResponse[];
  /** First name of the next page; empty at the end. */
  continueAt: string;
}
export const ListEnclavesResponseSchema = defineMessage<ListEnclavesResponse>('ListEnclavesResponse', [
  { no: 1, name: 'enclaves', json: 'enclaves', type: EnclaveStatusResponseSchema, repeated: true },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'string' },
]);

/** KEY:STATUS response; also the rows of ListKeysResponse and ListKeyVersionsResponse. */
export interface KeyStatusResponse {
  name: string;
  version: number;
  /** Must be exactly `AES256` or `ChaCha20` (the Go client rejects anything else). */
  type: string;
  createdAt: Date | undefined;
  createdBy: string;
}
export const KeyStatusResponseSchema = defineMessage<KeyStatusResponse>('KeyStatusResponse', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'version', json: 'version', type: 'uint32' },
  { no: 3, name: 'type', json: 'type', type: 'string' },
  { no: 4, name: 'createdAt', json: 'created_at', type: 'timestamp' },
  { no: 5, name: 'createdBy', json: 'created_by', type: 'string' },
]);

/** KEY:LIST response. */
export interface ListKeysResponse {
  keys: KeyStatusResponse[];
  continueAt: string;
}
export const ListKeysResponseSchema = defineMessage<ListKeysResponse>('ListKeysResponse', [
  { no: 1, name: 'keys', json: 'keys', type: KeyStatusResponseSchema, repeated: true },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'string' },
]);

/** KEY:ENCRYPT response. */
export interface EncryptResponse {
  version: number;
  ciphertext: Buffer;
}
export const EncryptResponseSchema = defineMessage<EncryptResponse>('EncryptResponse', [
  { no: 1, name: 'version', json: 'version', type: 'uint32' },
  { no: 2, name: 'ciphertext', json: 'ciphertext', type: 'bytes' },
]);

/** KEY:DECRYPT response. */
export interface DecryptResponse {
  plaintext: Buffer;
}
export const DecryptResponseSchema = defineMessage<DecryptResponse>('DecryptResponse', [
  { no: 1, name: 'plaintext', json: 'plaintext', type: 'bytes' },
]);

/** KEY:GENERATE response. */
export interface GenerateKeyResponse {
  version: number;
  /** The DEK. */
  plaintext: Buffer;
  /** The DEK encrypted under the key version. */
  ciphertext: Buffer;
}
export const GenerateKeyResponseSchema = defineMessage<GenerateKeyResponse>('GenerateKeyResponse', [
  { no: 1, name: 'version', json: 'version', type: 'uint32' },
  { no: 2, name: 'plaintext', json: 'plaintext', type: 'bytes' },
  { no: 3, name: 'ciphertext', json: 'ciphertext', type: 'bytes' },
]);

/** KEY:MAC response. */
export interface MACResponse {
  version: number;
  mac: Buffer;
}
export const MACResponseSchema = defineMessage<MACResponse>('MACResponse', [
  { no: 1, name: 'version', json: 'version', type: 'uint32' },
  { no: 2, name: 'mac', json: 'mac', type: 'bytes' },
]);

/** POLICY:STATUS response; also the rows of ListPoliciesResponse. Field numbers 2–3 are unused. */
export interface PolicyStatusResponse {
  name: string;
  createdAt: Date | undefined;
  createdBy: string;
}
export const PolicyStatusResponseSchema = defineMessage<PolicyStatusResponse>('PolicyStatusResponse', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 4, name: 'createdAt', json: 'created_at', type: 'timestamp' },
  { no: 5, name: 'createdBy', json: 'created_by', type: 'string' },
]);

/** POLICY:GET response. Every map key must be a command text the SDK knows (see `commands.ts`). */
export interface PolicyResponse {
  name: string;
  allow: Record<string, RuleSet>;
  deny: Record<string, RuleSet>;
  createdAt: Date | undefined;
  createdBy: string;
}
export const PolicyResponseSchema = defineMessage<PolicyResponse>('PolicyResponse', [
  { no: 1, name: 'name', json: 'name', type: 'string' },
  { no: 2, name: 'allow', json: 'allow', map: ['string', RuleSetSchema] },
  { no: 3, name: 'deny', json: 'deny', map: ['string', RuleSetSchema] },
  { no: 4, name: 'createdAt', json: 'created_at', type: 'timestamp' },
  { no: 5, name: 'createdBy', json: 'created_by', type: 'string' },
]);

/** POLICY:LIST response. */
export interface ListPoliciesResponse {
  policies: PolicyStatusResponse[];
  continueAt: string;
}
export const ListPoliciesResponseSchema = defineMessage<ListPoliciesResponse>('ListPoliciesResponse', [
  { no: 1, name: 'policies', json: 'policies', type: PolicyStatusResponseSchema, repeated: true },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'string' },
]);

/** IDENTITY:STATUS response; also the rows of ListIdentitiesResponse. */
export interface IdentityResponse {
  identity: string;
  /** 1 = SysAdmin, 2 = Admin, 3 = User (see {@link Privilege}). */
  privilege: number;
  /** Empty for Admin/SysAdmin. */
  policy: string;
  createdAt: Date | undefined;
  createdBy: string;
  isServiceAccount: boolean;
  /** Identities of this identity's service accounts. */
  serviceAccounts: string[];
  tags: Record<string, string>;
}
export const IdentityResponseSchema = defineMessage<IdentityResponse>('IdentityResponse', [
  { no: 1, name: 'identity', json: 'identity', type: 'string' },
  { no: 2, name: 'privilege', json: 'privilege', type: 'uint32' },
  { no: 3, name: 'policy', json: 'policy', type: 'string' },
  { no: 4, name: 'createdAt', json: 'created_at', type: 'timestamp' },
  { no: 5, name: 'createdBy', json: 'created_by', type: 'string' },
  { no: 6, name: 'isServiceAccount', json: 'is_service_account', type: 'bool' },
  { no: 7, name: 'serviceAccounts', json: 'service_accounts', type: 'string', repeated: true },
  { no: 8, name: 'tags', json: 'tags', map: ['string', 'string'] },
]);

/** IDENTITY:LIST response. */
export interface ListIdentitiesResponse {
  identities: IdentityResponse[];
  continueAt: string;
}
export const ListIdentitiesResponseSchema = defineMessage<ListIdentitiesResponse>('ListIdentitiesResponse', [
  { no: 1, name: 'identities', json: 'identities', type: IdentityResponseSchema, repeated: true },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'string' },
]);

/** One stack frame of a LogRecord trace. */
export interface StackFrame {
  function: string;
  file: string;
  line: number;
}
export const StackFrameSchema = defineMessage<StackFrame>('StackFrame', [
  { no: 1, name: 'function', json: 'function', type: 'string' },
  { no: 2, name: 'file', json: 'file', type: 'string' },
  { no: 3, name: 'line', json: 'line', type: 'uint32' },
]);

/**
 * The request a log record was made for (LogRecord field 5). The SDK generation MinIO pins
 * needs it in every record (it panics without it) and parses `ip` as an IP address; newer
 * SDKs skip the field.
 */
export interface LogRecordRequest {
  method: string;
  path: string;
  /** `h1:…` or empty. */
  identity: string;
  ip: string;
}
export const LogRecordRequestSchema = defineMessage<LogRecordRequest>('LogRecord.Request', [
  { no: 1, name: 'method', json: 'method', type: 'string' },
  { no: 2, name: 'path', json: 'path', type: 'string' },
  { no: 3, name: 'identity', json: 'identity', type: 'string' },
  { no: 4, name: 'ip', json: 'ip', type: 'string' },
]);

/** One record of the `/v1/debug/log` stream (each ≤ 4096 bytes, uint32 BE length-prefixed). */
export interface LogRecord {
  level: number;
  time: Date | undefined;
  message: string;
  /** First frame = where the record was created. */
  trace: StackFrame[];
  /** The request it was made for (always sent; see {@link LogRecordRequest}). */
  request: LogRecordRequest | undefined;
}
export const LogRecordSchema = defineMessage<LogRecord>('LogRecord', [
  { no: 1, name: 'level', json: 'level', type: 'sint32' },
  { no: 2, name: 'time', json: 'time', type: 'timestamp' },
  { no: 3, name: 'message', json: 'message', type: 'string' },
  { no: 4, name: 'trace', json: 'trace', type: StackFrameSchema, repeated: true },
  { no: 5, name: 'request', json: 'request', type: LogRecordRequestSchema },
]);

/**
 * Body of `POST /v1/debug/log` from the SDK generation MinIO pins (kms-go before v0.6): fields
 * 4–7 filter by the record's request, the trace level moved from 4 to 8. The server tells the
 * two layouts apart by field 4's wire type (server/observability.ts).
 */
export interface LegacyLogRequest {
  level: number;
  message: string;
  since: Date | undefined;
  method: string;
  path: string;
  identity: string;
  ip: string;
  traceLevel: number;
}
export const LegacyLogRequestSchema = defineMessage<LegacyLogRequest>('LegacyLogRequest', [
  { no: 1, name: 'level', json: 'level', type: 'sint32' },
  { no: 2, name: 'message', json: 'message', type: 'string' },
  { no: 3, name: 'since', json: 'since', type: 'timestamp' },
  { no: 4, name: 'method', json: 'method', type: 'string' },
  { no: 5, name: 'path', json: 'path', type: 'string' },
  { no: 6, name: 'identity', json: 'identity', type: 'string' },
  { no: 7, name: 'ip', json: 'ip', type: 'string' },
  { no: 8, name: 'traceLevel', json: 'trace_level', type: 'sint32' },
]);

/**
 * KEY:LISTVERSIONS response (exactly one frame). **Our extension** (see
 * {@link ListKeyVersionsRequest}): one KeyStatusResponse per version, ascending.
 */
export interface ListKeyVersionsResponse {
  versions: KeyStatusResponse[];
  /** First version of the next page; 0 at the end. */
  continueAt: number;
}
export const ListKeyVersionsResponseSchema = defineMessage<ListKeyVersionsResponse>('ListKeyVersionsResponse', [
  { no: 1, name: 'versions', json: 'versions', type: KeyStatusResponseSchema, repeated: true },
  { no: 2, name: 'continueAt', json: 'continue_at', type: 'uint32' },
]);
