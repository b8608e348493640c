/** `minkms env [--json] [--share] [NAME...]`: print the MINIO_KMS_* environment variables. */
import { Option, type Command } from 'commander';
import { addExamples, print, printJson, style } from './common.js';

const PREFIX = 'MINIO_KMS_';

/** True if the variable holds a secret (API keys, HSM keys, passwords, …). */
export function isSecret(name: string, value: string): boolean {
  return /API_KEY|HSM_KEY|SECRET|PASSWORD|TOKEN|PRIVATE|CREDENTIAL/i.test(name) || /^\s*(k[12]|hsm):/i.test(value);
}

/** `SERVER` → `MINIO_KMS_SERVER`; full names are kept. */
export function envName(name: string): string {
  const n = name.toUpperCase();
  return n.startsWith(PREFIX) ? n : PREFIX + n;
}

/** The variables to show, sorted: the requested ones (unset = null) or every MINIO_KMS_* one. */
export function collectEnv(names: readonly string[], share: boolean, env: NodeJS.ProcessEnv = process.env): [string, string | null][] {
  const wanted = names.length > 0 ? [...new Set(names.map(envName))] : Object.keys(env).filter((k) => k.startsWith(PREFIX));
  return wanted.sort().map((k) => {
    const v = env[k];
    if (v === undefined) return [k, null];
    return [k, share && isSecret(k, v) ? '***' : v];
  });
}

/** Quotes a value for a POSIX shell if needed. */
function shellQuote(v: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export function envCommand(program: Command): void {
  const cmd = program
    .command('env')
    .description('print the MINIO_KMS_* environment variables (--share masks secrets)')
    .argument('[NAME...]', 'variables to print (MINIO_KMS_ may be left out); default all that are set')
    .addOption(new Option('--share', "mask secrets with '***', to share the output safely"))
    .addOption(new Option('--json', 'print JSON'))
    .action((names: string[], opts: { share?: boolean; json?: boolean }) => {
      const vars = collectEnv(names, opts.share === true);
      if (opts.json) return printJson(Object.fromEntries(vars));
      for (const [k, v] of vars) {
        if (v === null) print(style.dim(`# ${k} is not set`));
        else print(`${k}=${v === '***' ? v : shellQuote(v)}`);
      }
    });
  addExamples(cmd, ['minkms env', 'minkms env --share', 'minkms env SERVER ENCLAVE --json']);
}
