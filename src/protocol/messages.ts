/**
 * Every protobuf message of the MinIO KMS protocol (package `minio.kms`, proto3), written from
 * the field tables of `kms-wire.md` §2.4, plus a few of our own (marked **our extension**).
 *
 * Each message is declared once, as a table — JS field name → field number and type — and its
 * TypeScript type is derived from that table, so the two cannot disagree. To add a message:
 *
 * ```ts
 * // KEY:FOO (doc comments on the schema and on its rows show on the type and its fields).
 * export const FooRequestSchema = defineMessage('FooRequest', {
 *   name: { no: 1, type: 'string' },
 *   versions: { no: 2, type: 'uint32', repeated: true }, // number[]
 *   tags: { no: 3, map: ['string', 'string'] }, // Record<string, string>; integer keys give a Map
 *   status: { no: 4, type: KeyStatusResponseSchema }, // a nested message: its schema, declared above
 * });
 * export type FooRequest = MessageType<typeof FooRequestSchema>;
 * ```
 *
 * Types are `string`, `bytes`, `bool`, `uint32`, `int32`, `sint32`, `uint64`, `int64`,
 * `sint64`, `timestamp` (google.protobuf.Timestamp), `duration` (google.protobuf.Duration) or a
 * message schema; `schema.ts` says what each is in JS. Field numbers are those of the Go SDK;
 * fields of our own in an SDK message are numbered from 100, so that no later SDK field collides.
 * The round-trip tests and the fuzzers find every exported schema by themselves; the unit test
 * also wants a sample of the new message with every field set (`SAMPLES` in
 * `test/unit/protocol.test.ts`).
 *
 * Use:
 * ```ts
 * const bytes = encodeMessage(GenerateKeyRequestSchema, { name: 'my-key', length: 32 });
 * const req = decodeMessage(GenerateKeyRequestSchema, bytes); // { name, version: 0, associatedData, length }
 * ```
 */

import { defineMessage, type MessageType } from './schema.js';

// ---------------------------------------------------------------------------------------------
// Shared pieces

/** `Rule`: an empty message today (placeholder for future rule conditions). */
export const RuleSchema = defineMessage('Rule', {});
export type Rule = MessageType<typeof RuleSchema>;

/** `RuleSet`: name patterns (map keys, e.g. `my-key*`) → rule. Empty patterns are dropped by the SDK. */
export const RuleSetSchema = defineMessage('RuleSet', {
  rules: { no: 1, map: ['string', RuleSchema] },
});
export type RuleSet = MessageType<typeof RuleSetSchema>;

/** `IdentityResponse.privilege` values (the request uses the text names instead). */
export const Privilege = { SysAdmin: 1, Admin: 2, User: 3 } as const;
export type PrivilegeCode = (typeof Privilege)[keyof typeof Privilege];

// ---------------------------------------------------------------------------------------------
// Requests

/** CLUSTER:STATUS request: empty. */
export const ClusterStatusRequestSchema = defineMessage('ClusterStatusRequest', {});
export type ClusterStatusRequest = MessageType<typeof ClusterStatusRequestSchema>;

/** Request of every LIST command (ENCLAVE:LIST, KEY:LIST, POLICY:LIST, IDENTITY:LIST). */
export const ListRequestSchema = defineMessage('ListRequest', {
  prefix: { no: 1, type: 'string' },
  /** Name to start at (inclusive); empty = from the beginning. */
  continueAt: { no: 2, type: 'string' },
  /** Page size; 0 = server chooses. */
  limit: { no: 3, type: 'uint32' },
});
export type ListRequest = MessageType<typeof ListRequestSchema>;

/** CLUSTER:ADDNODE. */
export const AddClusterNodeRequestSchema = defineMessage('AddClusterNodeRequest', {
  /** `host` or `host:port`. */
  host: { no: 1, type: 'string' },
});
export type AddClusterNodeRequest = MessageType<typeof AddClusterNodeRequestSchema>;

/** CLUSTER:REMOVENODE. */
export const RemoveClusterNodeRequestSchema = defineMessage('RemoveClusterNodeRequest', {
  host: { no: 1, type: 'string' },
  deleteClusterOnHost: { no: 2, type: 'bool' },
});
export type RemoveClusterNodeRequest = MessageType<typeof RemoveClusterNodeRequestSchema>;

/** CLUSTER:EDIT. */
export const EditClusterRequestSchema = defineMessage('EditClusterRequest', {
  host: { no: 1, type: 'string' },
  /** Node ids to drop from the receiving node's cluster definition. */
  removeIds: { no: 2, type: 'uint32', repeated: true },
});
export type EditClusterRequest = MessageType<typeof EditClusterRequestSchema>;

/** CLUSTER:ADDHSM. */
export const AddHSMRequestSchema = defineMessage('AddHSMRequest', {
  name: { no: 1, type: 'string' },
  /** Re-seal / replace an existing entry. */
  overwrite: { no: 2, type: 'bool' },
});
export type AddHSMRequest = MessageType<typeof AddHSMRequestSchema>;

/** CLUSTER:REMOVEHSM. */
export const RemoveHSMRequestSchema = defineMessage('RemoveHSMRequest', {
  name: { no: 1, type: 'string' },
});
export type RemoveHSMRequest = MessageType<typeof RemoveHSMRequestSchema>;

/** ENCLAVE:CREATE (and, byte-identical, ENCLAVE:DELETE and ENCLAVE:STATUS). */
export const CreateEnclaveRequestSchema = defineMessage('CreateEnclaveRequest', {
  name: { no: 1, type: 'string' },
});
export type CreateEnclaveRequest = MessageType<typeof CreateEnclaveRequestSchema>;
/** ENCLAVE:DELETE. */
export const DeleteEnclaveRequestSchema = defineMessage('DeleteEnclaveRequest', {
  name: { no: 1, type: 'string' },
});
export type DeleteEnclaveRequest = MessageType<typeof DeleteEnclaveRequestSchema>;
/** ENCLAVE:STATUS (the SDK actually sends a CreateEnclaveRequest; same bytes). */
export const EnclaveStatusRequestSchema = defineMessage('EnclaveStatusRequest', {
  name: { no: 1, type: 'string' },
});
export type EnclaveStatusRequest = MessageType<typeof EnclaveStatusRequestSchema>;

/** Body of `POST /v1/debug/log` (unframed). Levels are slog levels: Debug −4, Info 0, Warn 4, Error 8. */
export const LogRequestSchema = defineMessage('LogRequest', {
  /** Only records ≥ this level. */
  level: { no: 1, type: 'sint32' },
  /** Substring filter. */
  message: { no: 2, type: 'string' },
  /** Replay records since; undefined = only new records. */
  since: { no: 3, type: 'timestamp' },
  /** Stack traces only for records ≥ this level. */
  traceLevel: { no: 4, type: 'sint32' },
});
export type LogRequest = MessageType<typeof LogRequestSchema>;

/** KEY:CREATE. */
export const CreateKeyRequestSchema = defineMessage('CreateKeyRequest', {
  name: { no: 1, type: 'string' },
  /** `AES256`, `ChaCha20` or empty (server picks). */
  type: { no: 2, type: 'string' },
  /** true = add a version to an existing key (rotate); false = fail if it exists. */
  addVersion: { no: 3, type: 'bool' },
});
export type CreateKeyRequest = MessageType<typeof CreateKeyRequestSchema>;

/** KEY:IMPORT (code 203). */
export const ImportKeyRequestSchema = defineMessage('ImportKeyRequest', {
  name: { no: 1, type: 'string' },
  type: { no: 2, type: 'string' },
  /** Raw key material (32 bytes). */
  key: { no: 3, type: 'bytes' },
});
export type ImportKeyRequest = MessageType<typeof ImportKeyRequestSchema>;

/** KEY:DELETE. */
export const DeleteKeyRequestSchema = defineMessage('DeleteKeyRequest', {
  name: { no: 1, type: 'string' },
  /** 0 = latest. */
  version: { no: 2, type: 'uint32' },
  /** Must not be combined with a non-zero version. */
  allVersions: { no: 3, type: 'bool' },
});
export type DeleteKeyRequest = MessageType<typeof DeleteKeyRequestSchema>;

/** KEY:STATUS. */
export const KeyStatusRequestSchema = defineMessage('KeyStatusRequest', {
  name: { no: 1, type: 'string' },
  /** 0 = latest. */
  version: { no: 2, type: 'uint32' },
});
export type KeyStatusRequest = MessageType<typeof KeyStatusRequestSchema>;

/** KEY:ENCRYPT. */
export const EncryptRequestSchema = defineMessage('EncryptRequest', {
  name: { no: 1, type: 'string' },
  version: { no: 2, type: 'uint32' },
  plaintext: { no: 3, type: 'bytes' },
  associatedData: { no: 4, type: 'bytes' },
});
export type EncryptRequest = MessageType<typeof EncryptRequestSchema>;

/** KEY:GENERATE. */
export const GenerateKeyRequestSchema = defineMessage('GenerateKeyRequest', {
  name: { no: 1, type: 'string' },
  version: { no: 2, type: 'uint32' },
  associatedData: { no: 3, type: 'bytes' },
  /** DEK length in bytes; 0 → 32; max 1024. */
  length: { no: 4, type: 'uint32' },
});
export type GenerateKeyRequest = MessageType<typeof GenerateKeyRequestSchema>;

/** KEY:MAC. */
export const MACRequestSchema = defineMessage('MACRequest', {
  name: { no: 1, type: 'string' },
  version: { no: 2, type: 'uint32' },
  message: { no: 3, type: 'bytes' },
});
export type MACRequest = MessageType<typeof MACRequestSchema>;

/** KEY:DECRYPT. MinIO may send version 0 (see `kms-wire.md` §2.6). */
export const DecryptRequestSchema = defineMessage('DecryptRequest', {
  name: { no: 1, type: 'string' },
  version: { no: 2, type: 'uint32' },
  ciphertext: { no: 3, type: 'bytes' },
  associatedData: { no: 4, type: 'bytes' },
});
export type DecryptRequest = MessageType<typeof DecryptRequestSchema>;

/** POLICY:CREATE (create or overwrite). Map keys are command text names. */
export const CreatePolicyRequestSchema = defineMessage('CreatePolicyRequest', {
  name: { no: 1, type: 'string' },
  allow: { no: 2, map: ['string', RuleSetSchema] },
  deny: { no: 3, map: ['string', RuleSetSchema] },
});
export type CreatePolicyRequest = MessageType<typeof CreatePolicyRequestSchema>;

/** POLICY:GET and POLICY:STATUS. */
export const PolicyRequestSchema = defineMessage('PolicyRequest', {
  name: { no: 1, type: 'string' },
});
export type PolicyRequest = MessageType<typeof PolicyRequestSchema>;
/** POLICY:DELETE. */
export const DeletePolicyRequestSchema = defineMessage('DeletePolicyRequest', {
  name: { no: 1, type: 'string' },
});
export type DeletePolicyRequest = MessageType<typeof DeletePolicyRequestSchema>;

/** POLICY:ASSIGN. */
export const AssignPolicyRequestSchema = defineMessage('AssignPolicyRequest', {
  /** `h1:` identity, non-empty. */
  identity: { no: 1, type: 'string' },
  policy: { no: 2, type: 'string' },
});
export type AssignPolicyRequest = MessageType<typeof AssignPolicyRequestSchema>;

/** IDENTITY:CREATE (create or overwrite). */
export const CreateIdentityRequestSchema = defineMessage('CreateIdentityRequest', {
  identity: { no: 1, type: 'string' },
  /** `SysAdmin`, `Admin`, `User`; empty = User. */
  privilege: { no: 2, type: 'string' },
  isServiceAccount: { no: 3, type: 'bool' },
  tags: { no: 4, map: ['string', 'string'] },
});
export type CreateIdentityRequest = MessageType<typeof CreateIdentityRequestSchema>;

/** IDENTITY:STATUS. */
export const IdentityRequestSchema = defineMessage('IdentityRequest', {
  identity: { no: 1, type: 'string' },
});
export type IdentityRequest = MessageType<typeof IdentityRequestSchema>;
/** IDENTITY:DELETE. */
export const DeleteIdentityRequestSchema = defineMessage('DeleteIdentityRequest', {
  identity: { no: 1, type: 'string' },
});
export type DeleteIdentityRequest = MessageType<typeof DeleteIdentityRequestSchema>;

/**
 * KEY:LISTVERSIONS request (code 209). **Our extension**: the Go SDK has the command code and
 * text name but no message types, so this layout is ours, not MinIO's.
 */
export const ListKeyVersionsRequestSchema = defineMessage('ListKeyVersionsRequest', {
  name: { no: 1, type: 'string' },
  /** Version to start at (inclusive); 0 = the first. */
  continueAt: { no: 2, type: 'uint32' },
  /** Page size; 0 = server chooses. */
  limit: { no: 3, type: 'uint32' },
});
export type ListKeyVersionsRequest = MessageType<typeof ListKeyVersionsRequestSchema>;

// ---------------------------------------------------------------------------------------------
// Responses

/** Error body (`application/octet-stream`), or `{"message": …}` as JSON. */
export const ErrResponseSchema = defineMessage('ErrResponse', {
  message: { no: 1, type: 'string' },
});
export type ErrResponse = MessageType<typeof ErrResponseSchema>;

/** `GET /version`. */
export const VersionResponseSchema = defineMessage('VersionResponse', {
  /** Commit timestamp like `2023-12-01T16-06-52Z`. */
  version: { no: 1, type: 'string' },
  commit: { no: 2, type: 'string' },
  /** e.g. `v1`. */
  apiVersion: { no: 3, type: 'string' },
  host: { no: 4, type: 'string' },
  fips140: { no: 5, type: 'bool' },
});
export type VersionResponse = MessageType<typeof VersionResponseSchema>;

/** One node's status (inside ClusterStatusResponse). Durations are milliseconds. */
export const ServerStatusResponseSchema = defineMessage('ServerStatusResponse', {
  version: { no: 1, type: 'string' },
  apiVersion: { no: 2, type: 'string' },
  host: { no: 3, type: 'string' },
  upTime: { no: 4, type: 'duration' },
  /** `Leader`, `Follower` or `Candidate`. */
  role: { no: 5, type: 'string' },
  /** Number of applied state changes. */
  commit: { no: 6, type: 'uint64' },
  /** Node id → address. */
  nodes: { no: 7, map: ['uint32', 'string'] },
  id: { no: 8, type: 'uint32' },
  /** Negative = no leader. */
  leaderId: { no: 9, type: 'sint64' },
  lastHeartbeat: { no: 10, type: 'duration' },
  heartbeatInterval: { no: 11, type: 'duration' },
  electionTimeout: { no: 12, type: 'duration' },
  os: { no: 13, type: 'string' },
  arch: { no: 14, type: 'string' },
  cpus: { no: 15, type: 'uint32' },
  usableCpus: { no: 16, type: 'uint32' },
  heapMemInUse: { no: 17, type: 'uint64' },
  stackMemInUse: { no: 18, type: 'uint64' },
  /** HSMs with a sealed root-key entry on disk. */
  hsms: { no: 19, type: 'string', repeated: true },
  /** HSMs with a configuration present. */
  configuredHsms: { no: 20, type: 'string', repeated: true },
  // Ours, numbered far from the SDK's fields so that a newer SDK field never collides.
  /** Ours: configured HSMs without a sealed entry → why sealing failed last. */
  pendingHsms: { no: 100, map: ['string', 'string'] },
  /** Ours: the node is sealed. */
  sealed: { no: 101, type: 'bool' },
  /** Ours: the root (SysAdmin) identity, and `admin.identity` or the HSM its API key is derived from. */
  rootIdentity: { no: 102, type: 'string' },
  rootIdentitySource: { no: 103, type: 'string' },
  /** Ours: how current the node's copy of the state is (`fresh`, `stale`, `offline`, `ok`, `full`). */
  storeState: { no: 104, type: 'string' },
  /** Ours: time since a quorum of the cluster store last answered (0: not a cluster, or never). */
  lastQuorum: { no: 105, type: 'duration' },
});
export type ServerStatusResponse = MessageType<typeof ServerStatusResponseSchema>;

/** CLUSTER:STATUS response (exactly one frame). */
export const ClusterStatusResponseSchema = defineMessage('ClusterStatusResponse', {
  nodesUp: { no: 1, map: ['uint32', ServerStatusResponseSchema] },
  /** Node id → address. */
  nodesDown: { no: 2, map: ['uint32', 'string'] },
});
export type ClusterStatusResponse = MessageType<typeof ClusterStatusResponseSchema>;

/** `GET /v1/debug/pprof`. */
export const ProfileStatusResponseSchema = defineMessage('ProfileStatusResponse', {
  started: { no: 1, type: 'timestamp' },
  cpu: { no: 2, type: 'bool' },
  heap: { no: 3, type: 'bool' },
  goroutine: { no: 4, type: 'bool' },
  thread: { no: 5, type: 'bool' },
  blockRate: { no: 6, type: 'uint32' },
  mutexFraction: { no: 7, type: 'uint32' },
});
export type ProfileStatusResponse = MessageType<typeof ProfileStatusResponseSchema>;

/** ENCLAVE:STATUS response (one per request frame); also the rows of ListEnclavesResponse. */
export const EnclaveStatusResponseSchema = defineMessage('EnclaveStatusResponse', {
  name: { no: 1, type: 'string' },
  createdAt: { no: 2, type: 'timestamp' },
  /** Identity or empty. */
  createdBy: { no: 3, type: 'string' },
});
export type EnclaveStatusResponse = MessageType<typeof EnclaveStatusResponseSchema>;

/** ENCLAVE:LIST response. */
export const ListEnclavesResponseSchema = defineMessage('ListEnclavesResponse', {
  enclaves: { no: 1, type: EnclaveStatusResponseSchema, repeated: true },
  /** First name of the next page; empty at the end. */
  continueAt: { no: 2, type: 'string' },
});
export type ListEnclavesResponse = MessageType<typeof ListEnclavesResponseSchema>;

/** KEY:STATUS response; also the rows of ListKeysResponse and ListKeyVersionsResponse. */
export const KeyStatusResponseSchema = defineMessage('KeyStatusResponse', {
  name: { no: 1, type: 'string' },
  version: { no: 2, type: 'uint32' },
  /** Must be exactly `AES256` or `ChaCha20` (the Go client rejects anything else). */
  type: { no: 3, type: 'string' },
  createdAt: { no: 4, type: 'timestamp' },
  createdBy: { no: 5, type: 'string' },
});
export type KeyStatusResponse = MessageType<typeof KeyStatusResponseSchema>;

/** KEY:LIST response. */
export const ListKeysResponseSchema = defineMessage('ListKeysResponse', {
  keys: { no: 1, type: KeyStatusResponseSchema, repeated: true },
  continueAt: { no: 2, type: 'string' },
});
export type ListKeysResponse = MessageType<typeof ListKeysResponseSchema>;

/** KEY:ENCRYPT response. */
export const EncryptResponseSchema = defineMessage('EncryptResponse', {
  version: { no: 1, type: 'uint32' },
  ciphertext: { no: 2, type: 'bytes' },
});
export type EncryptResponse = MessageType<typeof EncryptResponseSchema>;

/** KEY:DECRYPT response. */
export const DecryptResponseSchema = defineMessage('DecryptResponse', {
  plaintext: { no: 1, type: 'bytes' },
});
export type DecryptResponse = MessageType<typeof DecryptResponseSchema>;

/** KEY:GENERATE response. */
export const GenerateKeyResponseSchema = defineMessage('GenerateKeyResponse', {
  version: { no: 1, type: 'uint32' },
  /** The DEK. */
  plaintext: { no: 2, type: 'bytes' },
  /** The DEK encrypted under the key version. */
  ciphertext: { no: 3, type: 'bytes' },
});
export type GenerateKeyResponse = MessageType<typeof GenerateKeyResponseSchema>;

/** KEY:MAC response. */
export const MACResponseSchema = defineMessage('MACResponse', {
  version: { no: 1, type: 'uint32' },
  mac: { no: 2, type: 'bytes' },
});
export type MACResponse = MessageType<typeof MACResponseSchema>;

/** POLICY:STATUS response; also the rows of ListPoliciesResponse. Field numbers 2–3 are unused. */
export const PolicyStatusResponseSchema = defineMessage('PolicyStatusResponse', {
  name: { no: 1, type: 'string' },
  createdAt: { no: 4, type: 'timestamp' },
  createdBy: { no: 5, type: 'string' },
});
export type PolicyStatusResponse = MessageType<typeof PolicyStatusResponseSchema>;

/** POLICY:GET response. Every map key must be a command text the SDK knows (see `commands.ts`). */
export const PolicyResponseSchema = defineMessage('PolicyResponse', {
  name: { no: 1, type: 'string' },
  allow: { no: 2, map: ['string', RuleSetSchema] },
  deny: { no: 3, map: ['string', RuleSetSchema] },
  createdAt: { no: 4, type: 'timestamp' },
  createdBy: { no: 5, type: 'string' },
});
export type PolicyResponse = MessageType<typeof PolicyResponseSchema>;

/** POLICY:LIST response. */
export const ListPoliciesResponseSchema = defineMessage('ListPoliciesResponse', {
  policies: { no: 1, type: PolicyStatusResponseSchema, repeated: true },
  continueAt: { no: 2, type: 'string' },
});
export type ListPoliciesResponse = MessageType<typeof ListPoliciesResponseSchema>;

/** IDENTITY:STATUS response; also the rows of ListIdentitiesResponse. */
export const IdentityResponseSchema = defineMessage('IdentityResponse', {
  identity: { no: 1, type: 'string' },
  /** 1 = SysAdmin, 2 = Admin, 3 = User (see {@link Privilege}). */
  privilege: { no: 2, type: 'uint32' },
  /** Empty for Admin/SysAdmin. */
  policy: { no: 3, type: 'string' },
  createdAt: { no: 4, type: 'timestamp' },
  createdBy: { no: 5, type: 'string' },
  isServiceAccount: { no: 6, type: 'bool' },
  /** Identities of this identity's service accounts. */
  serviceAccounts: { no: 7, type: 'string', repeated: true },
  tags: { no: 8, map: ['string', 'string'] },
});
export type IdentityResponse = MessageType<typeof IdentityResponseSchema>;

/** IDENTITY:LIST response. */
export const ListIdentitiesResponseSchema = defineMessage('ListIdentitiesResponse', {
  identities: { no: 1, type: IdentityResponseSchema, repeated: true },
  continueAt: { no: 2, type: 'string' },
});
export type ListIdentitiesResponse = MessageType<typeof ListIdentitiesResponseSchema>;

/** One stack frame of a LogRecord trace. */
export const StackFrameSchema = defineMessage('StackFrame', {
  function: { no: 1, type: 'string' },
  file: { no: 2, type: 'string' },
  line: { no: 3, type: 'uint32' },
});
export type StackFrame = MessageType<typeof StackFrameSchema>;

/**
 * The request a log record was made for (LogRecord field 5). The SDK generation MinIO pins
 * needs it in every record (it panics without it) and parses `ip` as an IP address; newer
 * SDKs skip the field.
 */
export const LogRecordRequestSchema = defineMessage('LogRecord.Request', {
  method: { no: 1, type: 'string' },
  path: { no: 2, type: 'string' },
  /** `h1:…` or empty. */
  identity: { no: 3, type: 'string' },
  ip: { no: 4, type: 'string' },
});
export type LogRecordRequest = MessageType<typeof LogRecordRequestSchema>;

/** One record of the `/v1/debug/log` stream (each ≤ 4096 bytes, uint32 BE length-prefixed). */
export const LogRecordSchema = defineMessage('LogRecord', {
  level: { no: 1, type: 'sint32' },
  time: { no: 2, type: 'timestamp' },
  message: { no: 3, type: 'string' },
  /** First frame = where the record was created. */
  trace: { no: 4, type: StackFrameSchema, repeated: true },
  /** The request it was made for (always sent; see {@link LogRecordRequest}). */
  request: { no: 5, type: LogRecordRequestSchema },
});
export type LogRecord = MessageType<typeof LogRecordSchema>;

/**
 * Body of `POST /v1/debug/log` from the SDK generation MinIO pins (kms-go before v0.6): fields
 * 4–7 filter by the record's request, the trace level moved from 4 to 8. The server tells the
 * two layouts apart by field 4's wire type (server/observability.ts).
 */
export const LegacyLogRequestSchema = defineMessage('LegacyLogRequest', {
  level: { no: 1, type: 'sint32' },
  message: { no: 2, type: 'string' },
  since: { no: 3, type: 'timestamp' },
  method: { no: 4, type: 'string' },
  path: { no: 5, type: 'string' },
  identity: { no: 6, type: 'string' },
  ip: { no: 7, type: 'string' },
  traceLevel: { no: 8, type: 'sint32' },
});
export type LegacyLogRequest = MessageType<typeof LegacyLogRequestSchema>;

/**
 * KEY:LISTVERSIONS response (exactly one frame). **Our extension** (see
 * {@link ListKeyVersionsRequest}): one KeyStatusResponse per version, ascending.
 */
export const ListKeyVersionsResponseSchema = defineMessage('ListKeyVersionsResponse', {
  versions: { no: 1, type: KeyStatusResponseSchema, repeated: true },
  /** First version of the next page; 0 at the end. */
  continueAt: { no: 2, type: 'uint32' },
});
export type ListKeyVersionsResponse = MessageType<typeof ListKeyVersionsResponseSchema>;
