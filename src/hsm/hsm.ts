/**
 * The HSM port: whatever protects the Root Encryption Key (REK). An HSM seals the REK once;
 * the sealed blob is stored under the HSM's name and opened at every start.
 */

export interface Hsm {
  /** Stable, unique name; it names the sealed REK entry, e.g. `hsm:minio:soft`. */
  readonly name: string;
  /** Encrypts `plaintext` bound to `aad`; the blob is versioned and self-describing. */
  seal(plaintext: Buffer, aad: Buffer): Promise<Buffer>;
  /** Opens a blob made by `seal` with the same `aad`; throws HsmError on failure. */
  unseal(blob: Buffer, aad: Buffer): Promise<Buffer>;
  /** Deterministic 32-byte key for `label` (same HSM key, same label ⇒ same bytes). */
  deriveKey(label: string): Promise<Buffer>;
  close(): Promise<void>;
  /** Optional: false when `blob` was sealed under an older HSM key version (then it is resealed). */
  isCurrent?(blob: Buffer): Promise<boolean>;
  /** Optional liveness check for status and metrics. */
  health?(): Promise<void>;
}

/**
 * Why an HSM could not do its job. `permanent` failures (a wrong key, a revoked identity)
 * will not go away by retrying; transient ones (network) may.
 */
export class HsmError extends Error {
  readonly permanent: boolean;
  constructor(message: string, permanent: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HsmError';
    this.permanent = permanent;
  }
}
