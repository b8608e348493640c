/**
 * Day-two operations with the real binary: backup → wipe → restore → decrypt, refused
 * backups, rotate-root. (The npm package is tested in package.test.ts.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { MINKMS_BIN, newHsmKey, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';

const dirs: string[] = [];
const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  dirs.forEach(removeDir);
});

function temp(): string {
  const d = tempDir('minkms-ops-');
  dirs.push(d);
  return d;
}

/** Runs `minkms …` against `s` with its root API key; returns exit code and output. */
function minkms(s: TestServer, args: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MINKMS_BIN, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, MINIO_KMS_SERVER: s.host, MINIO_KMS_API_KEY: s.apiKey, MINIO_KMS_ENCLAVE: 'minio', NO_COLOR: '1' },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ok(s: TestServer, args: string[], cwd: string): string {
  const r = minkms(s, args, cwd);
  assert.equal(r.code, 0, `minkms ${args.join(' ')}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('backup → wipe → restore → decrypt, with the CLI', async () => {
  const work = temp();
  const hsmKey = newHsmKey();
  const a = await startServer({ dir: join(work, 'a'), hsmKey });
  servers.push(a);
  ok(a, ['add-enclave', '-k', 'minio'], work);
  ok(a, ['add-key', '-k', 'sse'], work);
  const deks = [0, 1, 2].map(() => JSON.parse(ok(a, ['keygen', '-k', 'sse', '--json'], work)) as { plaintext: string; ciphertext: string });

  ok(a, ['backup', '-k'], work);
  const file = readdirSync(work).find((f) => /^\d{8}_\d{6}_kms\.db\.gzip$/.test(f));
  assert.ok(file, `no YYYYMMDD_HHMMSS_kms.db.gzip in ${readdirSync(work).join(', ')}`);
  assert.equal(readFileSync(join(work, file!)).subarray(0, 2).toString('hex'), '1f8b', 'gzip by default');
  const plain = JSON.parse(ok(a, ['backup', '-k', 'plain.db', '--compress', 'off', '--json'], work)) as {
    file: string;
    compressed: boolean;
  };
  assert.deepEqual([plain.file, plain.compressed], ['plain.db', false]);
  const again = minkms(a, ['backup', '-k', 'plain.db'], work);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /^minkms: plain\.db exists \(use --force/);
  ok(a, ['backup', '-k', 'plain.db', '--compress', 'off', '--force'], work);

  // Wipe: a brand-new node with the same HSM key.
  await a.stop();
  servers.splice(servers.indexOf(a), 1);
  removeDir(a.dir);
  const b = await startServer({ dir: join(work, 'b'), hsmKey });
  servers.push(b);
  ok(b, ['restore', '-k', b.host, file!], work);
  for (const dek of deks) {
    const out = JSON.parse(ok(b, ['decrypt', '-k', 'sse', dek.ciphertext, '--json'], work)) as { plaintext: string };
    assert.equal(out.plaintext, dek.plaintext);
  }
  // One argument that is a file: restored onto the first server of MINIO_KMS_SERVER.
  ok(b, ['restore', '-k', 'plain.db'], work);

  // A corrupt or foreign backup: one line, exit 1, the node unchanged.
  const bytes = readFileSync(join(work, 'plain.db'));
  bytes[bytes.length >> 1]! ^= 0xff;
  writeFileSync(join(work, 'corrupt.db'), bytes);
  const corrupt = minkms(b, ['restore', '-k', b.host, 'corrupt.db'], work);
  assert.equal(corrupt.code, 1, corrupt.stderr);
  assert.match(corrupt.stderr, /^minkms: .*invalid backup: corrupt backup: checksum mismatch/);
  assert.equal(corrupt.stderr.trim().split('\n').length, 1);
  const foreign = await startServer({ dir: join(work, 'c'), hsmKey: newHsmKey() });
  servers.push(foreign);
  const refused = minkms(foreign, ['restore', '-k', foreign.host, file!], work);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /this node cannot open it/);
  assert.ok(ok(b, ['ls-key', '-k'], work).includes('sse'));
});

test('rotate-root with the CLI: progress, a new generation, data still readable', async () => {
  const work = temp();
  const s = await startServer({ dir: join(work, 'data') });
  servers.push(s);
  ok(s, ['add-enclave', '-k', 'minio'], work);
  ok(s, ['add-key', '-k', 'sse'], work);
  const dek = JSON.parse(ok(s, ['keygen', '-k', 'sse', '--json'], work)) as { plaintext: string; ciphertext: string };
  const res = JSON.parse(ok(s, ['rotate-root', '-k', '--json'], work)) as { term: number; records: number };
  assert.equal(res.term, 2);
  assert.ok(res.records >= 2);
  assert.match(ok(s, ['rotate-root', '-k'], work), /generation 3/);
  const out = JSON.parse(ok(s, ['decrypt', '-k', 'sse', dek.ciphertext, '--json'], work)) as { plaintext: string };
  assert.equal(out.plaintext, dek.plaintext);
});
