/**
 * Fault suite, part 4: a full disk, on a really full file system — a small tmpfs mounted for
 * the test (the suite runs as root in CI; where mounting is not permitted the tests say so and
 * are skipped) — with real server processes:
 *
 * - first start on a full disk: the server stops with an error naming the file it could not
 *   write, and leaves no empty or truncated hsm.key or certificate behind; once space is
 *   freed, the same directory starts;
 * - the disk fills up at run time: writes answer `507 store full`, `ready?write` too, reads go
 *   on, nothing crashes; once space is freed, readiness and writes come back by themselves;
 *   every acknowledged write and data key survives a restart;
 * - a damaged (0-byte) hsm.key next to a database: a clear error naming the file.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, tempDir, removeDir, type TestServer } from '../helpers/server.js';
import { clientFor, rejectsWith } from '../helpers/clients.js';
import { Ledger } from '../helpers/invariants.js';
import { eventually } from '../helpers/wait.js';
import { KmsError } from '../../src/errors.js';

let root: string;
const mounts: string[] = [];
let mountError: string | undefined;

/** A fresh tmpfs of `size` at a new directory; undefined if this machine does not allow it. */
function mountTmpfs(size: string): string | undefined {
  const dir = join(root, `mnt${mounts.length}`);
  mkdirSync(dir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    mountError = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
    return undefined;
  }
  mounts.push(dir);
  return dir;
}

/** Fills the file system of `dir` until ENOSPC; returns the filler file (delete it to free the space). */
function fill(dir: string): string {
  const file = join(dir, 'filler');
  const fd = openSync(file, 'a');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (let n = chunk.length; ;) {
      try {
        writeSync(fd, chunk, 0, n);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        if (n === 1) break;
        n = Math.max(1, n >> 1);
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

/** Files of `dir` (recursively) that are empty. */
function emptyFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...emptyFiles(p));
    else if (statSync(p).size === 0) out.push(p);
  }
  return out;
}

before(() => {
  root = tempDir('minkms-full-');
});

after(() => {
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'pipe' });
    } catch {
      // already gone
    }
  }
  if (root) removeDir(root);
});

describe('fault suite: a full disk', () => {
  test('first start on a full disk: a clear error, no half-written file; the directory starts once space is freed', async (t) => {
    const mnt = mountTmpfs('1m');
    if (!mnt) return t.skip(`cannot mount a tmpfs here (${mountError}): not run`);
    const dir = join(mnt, 'data');
    const filler = fill(mnt);
    // No MINIO_KMS_HSM_KEY: the first start generates hsm.key (and a certificate).
    await assert.rejects(startServer({ dir, hsmKey: null, timeoutMs: 20_000 }), (err: Error) => {
      assert.match(err.message, /no space left on the device/, 'the error says the disk is full');
      assert.match(err.message, /hsm\.key/, 'the error names the file');
      return true;
    });
    assert.deepEqual(existsSync(dir) ? emptyFiles(dir) : [], [], 'no empty file is left behind');
    assert.ok(!existsSync(join(dir, 'hsm.key')), 'no hsm.key is left behind');
    rmSync(filler);
    const s = await startServer({ dir, hsmKey: null });
    assert.ok(existsSync(join(dir, 'hsm.key')) && statSync(join(dir, 'hsm.key')).size > 40);
    await s.stop();
    // And again: the key file is valid.
    const again = await startServer({ dir, hsmKey: null });
    await again.stop();
  });

  test('the disk fills up at run time: 507 store full, ready?write fails, reads go on; space freed: writes resume', async (t) => {
    const mnt = mountTmpfs('4m');
    if (!mnt) return t.skip(`cannot mount a tmpfs here (${mountError}): not run`);
    const dir = join(mnt, 'data');
    let s: TestServer = await startServer({ dir });
    const c = clientFor(s, s.apiKey);
    const ledger = new Ledger('full');
    await c.createEnclave('full');
    for (let i = 0; i < 5; i++) await ledger.create(c, `before-${i}`);
    for (let i = 0; i < 5; i++) await ledger.generate(c, `before-${i}`);
    const filler = fill(mnt);
    // SQLite may still have room in pages it already holds: write until the disk says no.
    let code: string | undefined;
    let n = 0;
    for (; n < 2_000 && code === undefined; n++) code = await ledger.create(c, `filling-${n}`);
    t.diagnostic(`${n - 1} creates succeeded on the full disk before the first refusal (${code})`);
    assert.equal(code, 'ERR_STORE_FULL', `a create on a full disk: got ${code}`);
    await rejectsWith(c.createKey('full', { name: 'refused' }), 'ERR_STORE_FULL');
    ledger.refused.add('refused');
    await assert.rejects(
      c.ready({ write: true }),
      (err: unknown) => err instanceof KmsError && err.code === 'ERR_STORE_FULL' && err.status === 507,
    );
    await c.ready();
    for (let i = 0; i < 20; i++) await ledger.generate(c, `before-${i % 5}`);
    await ledger.check([c], 'reads on a full disk');
    assert.equal(s.process.exitCode, null, 'the server is still running');
    rmSync(filler);
    const freed = Date.now();
    await eventually('ready?write after space was freed', () => c.ready({ write: true }), 10_000);
    t.diagnostic(`ready for writes ${Date.now() - freed} ms after space was freed`);
    assert.equal(await ledger.create(c, 'after-space'), undefined);
    c.close();
    await s.stop();
    s = await startServer({ dir, hsmKey: s.hsmKey });
    const c2 = clientFor(s, s.apiKey);
    await ledger.check([c2], 'after a restart');
    c2.close();
    await s.stop();
  });

  test('a 0-byte hsm.key next to a database: the server names the file and what to do', async () => {
    const dir = join(root, 'damaged');
    const s = await startServer({ dir, hsmKey: null });
    await s.stop();
    writeFileSync(join(dir, 'hsm.key'), '');
    await assert.rejects(startServer({ dir, hsmKey: null }), (err: Error) => {
      assert.match(err.message, /hsm\.key is empty/);
      assert.match(err.message, /restore .*hsm\.key from a backup/);
      return true;
    });
  });
});
