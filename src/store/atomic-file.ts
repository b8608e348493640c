/**
 * Files that must never be found half-written (the generated soft HSM key, the generated TLS
 * certificate and key, a backup): written to a temporary file in the same directory, flushed
 * to disk, renamed over the target, and the directory flushed too. A crash or a full disk at
 * any point leaves either the old file (or none) or the complete new one — never a 0-byte or
 * truncated file that a later start would trip over.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Writes `data` to `path` atomically and durably (see the module comment).
 * @param mode permission bits of the new file (e.g. 0o600 for secrets)
 * @throws the underlying error (e.g. `ENOSPC`), with the target named in the message; the
 *   temporary file is removed and `path` is untouched
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  try {
    const fd = openSync(tmp, 'wx', mode);
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    const e = err as NodeJS.ErrnoException;
    throw Object.assign(
      new Error(`cannot write ${path}: ${e.code === 'ENOSPC' ? 'no space left on the device' : e.message}`, { cause: err }),
      {
        code: e.code,
      },
    );
  }
  syncDir(dir);
}

/** Flushes a directory's entries (a rename is only durable once its directory is). */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some platforms and file systems cannot fsync a directory (EISDIR, EINVAL): the rename
    // is still atomic there, only its durability across a power cut is up to the system.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
