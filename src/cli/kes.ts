/**
 * `minkms import-kes`: moves the keys of a KES deployment into an enclave, with KEY:IMPORT — from
 * KES's filesystem keystore (a directory) or a JSON list `{"NAME": "BASE64 KEY"}` exported from
 * any other keystore (kes/keystore.ts). Afterwards every ciphertext KES wrote with those keys
 * opens here, in its JSON or binary format, through the MinKMS and the KES API (docs/migrate-from-kes.md).
 */
import type { Command } from 'commander';
import { isKmsError } from '../errors.js';
import { readKesKeystore, type KesKey } from '../kes/keystore.js';
import { CliError, clientCommand, done, print, printJson, runs, style } from './common.js';

interface ImportOptions {
  merge?: boolean;
  dryRun?: boolean;
}

export function kesCommands(program: Command): void {
  runs(
    clientCommand(program, 'import-kes', {
      description: "import a KES deployment's keys: its filesystem keystore directory, or a JSON file {NAME: BASE64 KEY}",
      enclave: true,
      examples: [
        'minkms import-kes -e minio /var/lib/kes/keys             # KES keystore.fs.path',
        'minkms import-kes -e minio keys.json                     # {"minio-default": "base64…", …}',
        'minkms import-kes -e minio --merge --dry-run /var/lib/kes/keys',
      ],
    })
      .argument('<PATH...>', 'KES filesystem keystore directories and JSON key lists')
      .option('--merge', 'skip keys that already exist (default: stop at the first one)')
      .option('--dry-run', 'read and check everything, import nothing'),
    async (ctx, paths: string[]) => {
      const o = ctx.opts as ImportOptions;
      const enclave = ctx.enclave;
      const keys: KesKey[] = [];
      const skipped: { name: string; why: string; path: string }[] = [];
      try {
        for (const path of paths) {
          let store;
          try {
            store = readKesKeystore(path);
          } catch (err) {
            const e = err as NodeJS.ErrnoException;
            throw new CliError(
              `cannot read ${path}: ${e.code ?? e.message}`,
              'give a KES keystore directory or a JSON file {"NAME": "BASE64 KEY"}',
            );
          }
          keys.push(...store.keys);
          skipped.push(...store.skipped.map((s) => ({ ...s, path })));
        }
        const seen = new Set<string>();
        for (const k of keys) {
          if (seen.has(k.name)) throw new CliError(`key '${k.name}' is given twice`, 'import each key from one source');
          seen.add(k.name);
        }
        const results: { name: string; type: string; outcome: 'imported' | 'exists' | 'checked' }[] = [];
        ctx.need(
          'KEY:CREATE',
          keys.map((k) => k.name),
          enclave,
        );
        for (const k of keys) {
          if (o.dryRun) {
            results.push({ name: k.name, type: k.type, outcome: 'checked' });
            continue;
          }
          try {
            await ctx.client.importKey(enclave, { name: k.name, type: k.type, key: k.key });
            results.push({ name: k.name, type: k.type, outcome: 'imported' });
          } catch (err) {
            if (!(o.merge && isKmsError(err) && err.code === 'ERR_KEY_EXISTS')) throw err;
            results.push({ name: k.name, type: k.type, outcome: 'exists' });
          }
        }
        if (ctx.json) {
          printJson({ enclave, keys: results, skipped });
          return;
        }
        for (const r of results) {
          if (r.outcome === 'imported') done(`Imported key '${r.name}' (${r.type}) into enclave '${enclave}'`);
          else if (r.outcome === 'exists') print(`${style.dim('-')} Key '${r.name}' exists: skipped (--merge)`);
          else print(`${style.dim('-')} Key '${r.name}' (${r.type}) can be imported (--dry-run)`);
        }
        for (const s of skipped) process.stderr.write(`${style.yellow('skipped:')} ${s.path}: ${s.name}: ${s.why}\n`);
      } finally {
        for (const k of keys) k.key.fill(0);
      }
    },
  );
}
