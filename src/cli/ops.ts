/** `minkms backup`, `minkms restore` and `minkms rotate-root`: database-wide operations (SysAdmin). */
import { Option, type Command } from 'commander';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../store/atomic-file.js';
import { gunzipSync, gzipSync } from 'node:zlib';
import { responseError } from '../client/client.js';
import { clientCommand, done, humanBytes, print, printJson, runs, serverEndpoints, usageError, type Context } from './common.js';

/** A one-line progress bar on stderr, only on a terminal. */
function progressBar(label: string, enabled: boolean): { update(done: number, total: number): void; end(): void } {
  const tty = enabled && process.stderr.isTTY === true;
  let shown = false;
  return {
    update(doneCount, total) {
      if (!tty || total <= 0) return;
      const width = 30;
      const filled = Math.round((doneCount / total) * width);
      process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.floor((doneCount / total) * 100)}%`);
      shown = true;
    },
    end() {
      if (shown) process.stderr.write('\n');
    },
  };
}

function defaultBackupName(compress: boolean, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}_${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`;
  return `${stamp}_kms.db${compress ? '.gzip' : ''}`;
}

const GZIP_MAGIC = Buffer.of(0x1f, 0x8b);

export function opsCommands(program: Command): void {
  const backup = clientCommand(program, 'backup', {
    description: 'save a snapshot of the whole database (still encrypted) to a file',
    enclave: false,
    examples: ['minkms backup', 'minkms backup kms.db.gzip --force', 'minkms backup kms.db --compress off'],
  })
    .argument('[FILE]', 'output file (default: YYYYMMDD_HHMMSS_kms.db.gzip)')
    .addOption(new Option('--compress <MODE>', 'gzip or off').choices(['gzip', 'off']).default('gzip'))
    .option('--force', 'overwrite an existing file');
  runs(backup, async (ctx: Context, file: string | undefined) => {
    const compress = ctx.opts.compress !== 'off';
    const out = file ?? defaultBackupName(compress);
    if (existsSync(out) && ctx.opts.force !== true) throw usageError(`${out} exists`, 'use --force to overwrite it');
    ctx.need('backup (SysAdmin)');
    const bar = progressBar('backup ', !ctx.json);
    let received = 0;
    let total = 0;
    const chunks: Buffer[] = [];
    const res = await ctx.client.transport.request({
      method: 'GET',
      path: '/v1/db',
      headers: { accept: 'application/octet-stream' },
      onResponse: (h) => (total = Number(h['content-length'] ?? 0)),
      onData: (c) => {
        chunks.push(c);
        received += c.length;
        bar.update(received, total);
      },
    });
    bar.end();
    const body = Buffer.concat(chunks);
    if (res.status !== 200) throw responseError({ ...res, body });
    const data = compress ? gzipSync(body) : body;
    // Atomically and durably: a failed backup never leaves a half-written file.
    writeFileAtomic(out, data, 0o600);
    if (ctx.json) printJson({ file: out, bytes: data.length, compressed: compress });
    else done(`Backup written to ${out} (${humanBytes(data.length)})`);
  });
  const restore = clientCommand(program, 'restore', {
    description: 'replace the database of one server with a backup (checked before anything changes)',
    enclave: false,
    examples: ['minkms restore 20250101_120000_kms.db.gzip', 'minkms restore kms1.example.net:7373 kms.db.gzip'],
  })
    .argument('[HOST]', 'server to restore (default: the first of MINIO_KMS_SERVER)')
    .argument('[FILE]', 'backup file');
  runs(restore, async (ctx: Context, hostArg: string | undefined, fileArg: string | undefined) => {
    // One argument: a file if it exists, else a host with a missing file.
    let host = hostArg;
    let file = fileArg;
    if (file === undefined && host !== undefined && existsSync(host) && statSync(host).isFile()) {
      file = host;
      host = undefined;
    }
    if (file === undefined) throw usageError('no backup file given', 'usage: minkms restore [HOST] FILE');
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      throw usageError(
        `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        'give the path of a file made by minkms backup',
      );
    }
    if (data.subarray(0, 2).equals(GZIP_MAGIC)) {
      try {
        data = gunzipSync(data);
      } catch {
        throw usageError(`${file} is a damaged gzip file`, 'use an intact backup');
      }
    }
    const target = host ?? serverEndpoints()[0]!;
    ctx.need('restore (SysAdmin)');
    const bar = progressBar('restore', !ctx.json);
    bar.update(0, 1);
    await ctx.client.writeDb(data, target);
    bar.update(1, 1);
    bar.end();
    if (ctx.json) printJson({ host: target, bytes: data.length });
    else done(`Restored ${file} (${humanBytes(data.length)}) onto ${target}`);
  });

  const rotate = clientCommand(program, 'rotate-root', {
    description: 'replace the root encryption key: re-encrypt every record and reseal it for every HSM',
    enclave: false,
    examples: ['minkms rotate-root', 'minkms rotate-root kms0.example.net:7373'],
  }).argument('[HOST]', 'server to run it on (default: any of MINIO_KMS_SERVER)');
  runs(rotate, async (ctx: Context, host: string | undefined) => {
    ctx.need('rotate-root (SysAdmin)');
    const bar = progressBar('re-encrypt', !ctx.json);
    let last = { done: 0, total: 0 };
    const res = await ctx.client.rotateRoot((p) => {
      last = p;
      bar.update(p.done, p.total);
    }, host);
    bar.end();
    if (ctx.json) printJson({ term: res.term, records: last.total });
    else {
      print(`Re-encrypted ${last.total} records.`);
      done(`Root encryption key replaced (generation ${res.term})`);
    }
  });
}
