/**
 * The error catalogue: every error a client can see, with its HTTP status and its exact
 * message. The messages of the first block are part of the wire contract (the Go SDK compares
 * status and message for equality; MinIO's start-up depends on three of them), see
 * `kms-wire.md` §3. All other messages are ours and stable.
 *
 * Errors are mapped to HTTP in exactly one place (`sendError` in server/http.ts); everything that is not
 * a `KmsError` becomes a generic 500 there and is logged with a request id.
 */

export const ERRORS = {
  // Wire contract (kms-go `kms/error.go`).
  ERR_NOT_ALLOWED: [403, 'access denied: insufficient permissions'],
  ERR_ENCLAVE_EXISTS: [409, 'enclave already exists'],
  ERR_ENCLAVE_NOT_FOUND: [404, 'enclave does not exist'],
  ERR_KEY_EXISTS: [409, 'key already exists'],
  ERR_KEY_NOT_FOUND: [404, 'key does not exist'],
  ERR_POLICY_NOT_FOUND: [404, 'policy does not exist'],
  ERR_IDENTITY_NOT_FOUND: [404, 'identity does not exist'],
  ERR_DECRYPT: [400, 'invalid ciphertext'],

  // The KES API (kes/errors.ts): KES's spelling where it differs from the block above
  // (github.com/minio/kms-go/kes compares status and message), and KES's "not implemented".
  ERR_KES_NOT_ALLOWED: [403, 'not authorized: insufficient permissions'],
  ERR_KES_KEY_EXISTS: [400, 'key already exists'],
  ERR_KES_DECRYPT: [400, 'decryption failed: ciphertext is not authentic'],
  ERR_KES_NOT_IMPLEMENTED: [501, 'not implemented'],

  // Ours.
  ERR_BAD_REQUEST: [400, 'invalid request'],
  ERR_MALFORMED_FRAME: [400, 'malformed request: invalid command frame'],
  ERR_MALFORMED_MESSAGE: [400, 'malformed request: invalid protobuf message'],
  ERR_UNKNOWN_COMMAND: [400, 'unknown command'],
  ERR_MIXED_BATCH: [400, 'a request must not mix different commands'],
  ERR_BATCH_NOT_ALLOWED: [400, 'command cannot be batched'],
  ERR_EMPTY_REQUEST: [400, 'request contains no command'],
  ERR_INVALID_NAME: [400, 'invalid name'],
  ERR_INVALID_IDENTITY: [400, 'invalid identity'],
  ERR_INVALID_KEY_TYPE: [400, 'invalid key type'],
  ERR_INVALID_KEY_LENGTH: [400, 'invalid key length'],
  ERR_INVALID_DEK_LENGTH: [400, 'invalid data key length: must be between 1 and 1024 bytes'],
  ERR_INVALID_VERSION: [400, 'invalid key version'],
  ERR_INVALID_PRIVILEGE: [400, 'invalid privilege'],
  ERR_INVALID_POLICY: [400, 'invalid policy'],
  ERR_INVALID_TAG: [400, 'invalid identity tag'],
  ERR_POLICY_NOT_ASSIGNABLE: [400, 'policies can only be assigned to users'],
  ERR_IDENTITY_EXISTS_ELSEWHERE: [409, 'identity already exists'],
  ERR_CONFLICT: [409, 'conflicting concurrent change: retry the request'],
  ERR_ENCLAVE_IN_URL: [400, 'command must be sent without an enclave'],
  ERR_ENCLAVE_REQUIRED: [400, 'command requires an enclave'],
  ERR_SELF_DELETE: [400, 'an identity cannot delete itself'],
  ERR_ROOT_IDENTITY: [400, 'the root identity cannot be changed'],
  ERR_NOT_FOUND: [404, 'not found'],
  ERR_METHOD_NOT_ALLOWED: [405, 'method not allowed'],
  ERR_LENGTH_REQUIRED: [411, 'content length required'],
  ERR_TOO_LARGE: [413, 'request too large'],
  ERR_TOO_MANY_FRAMES: [413, 'too many commands in one request'],
  ERR_HSM_EXISTS: [409, 'hsm already has a sealed root key entry'],
  ERR_HSM_NOT_FOUND: [404, 'hsm does not exist'],
  ERR_HSM_NOT_CONFIGURED: [400, 'hsm is not configured'],
  ERR_HSM_LAST: [400, 'cannot remove the last hsm entry'],
  // The HSM asked to seal (CLUSTER:ADDHSM) failed: the detail is the HsmError's message, which
  // names the device and the cause but never a PIN or key material.
  ERR_HSM_FAILED: [502, 'the hsm failed to seal the root encryption key'],
  ERR_CLUSTER_SINGLE_NODE: [501, 'cluster membership changes are not supported by a single-node server'],
  ERR_INVALID_BACKUP: [400, 'invalid backup'],
  ERR_STORE_UNAVAILABLE: [503, 'store unavailable: no write quorum, try again'],
  ERR_BUSY: [503, 'server busy, try again'],
  ERR_HSM_PENDING: [503, 'configured hsm without a sealed root key entry'],
  ERR_ROOT_KEY_RETIRED: [403, 'root API key no longer valid'],
  // A write was sent but no answer came back: it may have been applied (possibly later).
  ERR_STORE_OUTCOME_UNKNOWN: [503, 'store unavailable: outcome unknown, check before retrying'],
  // A write was never sent: its deadline passed while earlier writes of this node held the store.
  ERR_STORE_TIMEOUT: [503, 'store unavailable: the write could not start in time, try again'],
  // This node's copy of the state may lag the cluster by more than its staleness bound.
  ERR_STORE_STALE: [503, 'store unavailable: this node is behind the cluster, try another node'],
  ERR_STORE_FULL: [507, 'store full: no space left for writes'],
  ERR_SEALED: [503, 'kms is sealed: no configured hsm could unseal the root encryption key'],
  // Profiling (/v1/debug/pprof) and restarts (/v1/debug/restart), server/debug.ts.
  ERR_PROFILE_OPTION: [400, 'invalid profiling option'],
  ERR_PROFILE_RUNNING: [409, 'profiling is already running on this node'],
  ERR_PROFILE_NOT_STARTED: [409, 'profiling has not been started on this node'],
  ERR_PROFILE_UNAVAILABLE: [501, 'profiling is not available in this Node.js'],
  ERR_RESTART_UNSUPPORTED: [501, 'restarts are disabled on this server'],
  ERR_RESTART_RUNNING: [409, 'a restart of the cluster is already running'],
  // Restarting now would leave the cluster short (a node down, sealed or behind; no etcd quorum).
  ERR_RESTART_UNSAFE: [503, 'restart refused: the cluster is not whole'],
  ERR_RESTART_FAILED: [504, 'cluster restart stopped: a node did not come back in time'],
  ERR_TIMEOUT: [408, 'request timeout'],
  ERR_INTERNAL: [500, 'internal server error'],
} as const satisfies Record<string, readonly [number, string]>;

export type ErrorCode = keyof typeof ERRORS;

/** Longest detail an error message carries. */
export const MAX_DETAIL = 1024;

/** An error a client may see: a stable code, an HTTP status and a message safe to show. */
export class KmsError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  /**
   * @param detail optional text appended to the catalogue message (`message: detail`). Never
   *   put secrets in it. Wire-contract errors (the first block) must be raised without detail.
   */
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    const [status, message] = ERRORS[code];
    // Details may quote what a client sent: never let a request make an error message large.
    const shown = detail !== undefined && detail.length > MAX_DETAIL ? `${detail.slice(0, MAX_DETAIL)}…` : detail;
    super(shown ? `${message}: ${shown}` : message, options);
    this.name = 'KmsError';
    this.code = code;
    this.status = status;
  }
}

export function isKmsError(err: unknown): err is KmsError {
  return err instanceof KmsError;
}

/**
 * Builds the KmsError matching a (status, message) pair received from a server, if any: the
 * catalogue message exactly, or followed by `: detail` (kept as the error's detail).
 */
export function errorFromWire(status: number, message: string): KmsError | undefined {
  for (const [code, [s, m]] of Object.entries(ERRORS)) {
    if (s !== status) continue;
    if (m === message) return new KmsError(code as ErrorCode);
    if (message.startsWith(m + ': ')) return new KmsError(code as ErrorCode, message.slice(m.length + 2));
  }
  return undefined;
}
