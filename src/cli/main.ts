#!/usr/bin/env node
/**
 * The `minkms` executable: the server (`minkms server DIR`) and the command-line client.
 * Exit codes: 0 success, 1 failure, 2 usage error. Errors are one line on stderr:
 * `minkms: <what is wrong> (<what to do>)`.
 */
import './heap-first.js';
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.js';
import { serverCommand } from './server.js';
import { enclaveIdentityCommands, identityCommand, softHsmKey } from './identity.js';
import { enclaveCommands } from './enclave.js';
import { keyCommands } from './key.js';
import { policyCommands } from './policy.js';
import { clusterCommands } from './cluster.js';
import { opsCommands } from './ops.js';
import { logsAuditCommands } from './logs-audit.js';
import { debugCommands } from './debug.js';
import { envCommand } from './env.js';
import { completionCommand } from './completion.js';
import { hsmCommands } from './hsm.js';
import { kesCommands } from './kes.js';
import { CliError, addExamples } from './common.js';

/** `minkms add-key` for a (sub)command. */
function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * Rewrites a commander error message (`error: unknown option '--x'\n(Did you mean --y?)`) into
 * our one-line form.
 */
export function usageLine(message: string, path: string): string {
  const lines = message
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  let what = (lines[0] ?? 'usage error').replace(/^error:\s*/, '');
  const suggestion = lines
    .slice(1)
    .join(' ')
    .replace(/^\((.*)\)$/, '$1');
  what = what.replace(/^command-argument value/, 'argument').replace(/ is invalid( for argument '[^']*')?\. /, ' is invalid$1: ');
  if (suggestion) what += `; ${suggestion.charAt(0).toLowerCase()}${suggestion.slice(1)}`;
  return `minkms: ${what.replace(/\.$/, '')} (see '${path} --help')\n`;
}

/** Gives every command one-line usage errors that name its own `--help`. */
function configureErrors(cmd: Command): void {
  const path = commandPath(cmd);
  cmd.configureOutput({ outputError: (str, write) => write(usageLine(str, path)) });
  cmd.exitOverride();
  for (const sub of cmd.commands) configureErrors(sub);
}

export function buildProgram(): Command {
  const program = new Command('minkms')
    .description('Open key management server, wire-compatible with MinIO KMS')
    .version(VERSION, '-v, --version', 'print the version')
    .addOption(new Option('--soft-hsm', 'generate and print a new software HSM key (hsm:aes256:…)'))
    .enablePositionalOptions()
    .showSuggestionAfterError(true);

  program.commandsGroup('Server:');
  serverCommand(program);
  identityCommand(program);
  hsmCommands(program);
  envCommand(program);
  completionCommand(program);

  program.commandsGroup('Cluster (SysAdmin):');
  clusterCommands(program);
  opsCommands(program);
  logsAuditCommands(program);
  debugCommands(program);

  program.commandsGroup('Enclaves (SysAdmin):');
  enclaveCommands(program);

  program.commandsGroup('Keys:');
  keyCommands(program);
  kesCommands(program);

  program.commandsGroup('Policies:');
  policyCommands(program);

  program.commandsGroup('Identities:');
  enclaveIdentityCommands(program);

  program.commandsGroup('');
  addExamples(
    program,
    [
      'MINIO_KMS_HSM_KEY=$(minkms --soft-hsm) minkms server ./data',
      'export MINIO_KMS_SERVER=https://kms.example.net:7373 MINIO_KMS_API_KEY=k1:…',
      'minkms add-enclave my-enclave',
      'minkms add-key -e my-enclave my-key',
      'minkms help add-key',
    ],
    "\nRun 'minkms COMMAND --help' for the options of a command.",
  );
  configureErrors(program);
  return program;
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  if (argv.length === 1 && argv[0] === '--soft-hsm') {
    process.stdout.write(softHsmKey());
    return 0;
  }
  const program = buildProgram();
  if (argv.length === 0) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version exit through here with code 0; the message was printed already.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof CliError) {
      process.stderr.write(err.line());
      return err.exitCode;
    }
    process.stderr.write(`minkms: ${(err as Error)?.message ?? String(err)}\n`);
    return 1;
  }
}

// `minkms ls-key | head`: a closed pipe ends the output, not in a crash.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
process.exitCode = await run(process.argv.slice(2));
