#!/usr/bin/env node
/**
 * The `minkms` executable: the server (`minkms server DIR`) and the command-line client.
 * Exit codes: 0 success, 1 failure, 2 usage error.
 */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.js';
import { serverCommand } from './server.js';
import { identityCommand, softHsmKey } from './identity.js';

export function buildProgram(): Command {
  const program = new Command('minkms')
    .description('Open key management server, wire-compatible with MinIO KMS')
    .version(VERSION, '-v, --version', 'print the version')
    .addOption(new Option('--soft-hsm', 'generate and print a new software HSM key (hsm:aes256:…)'))
    .showHelpAfterError('(run `minkms help` for usage)')
    .configureOutput({ outputError: (str, write) => write(str) })
    .exitOverride();

  program.action((opts: { softHsm?: boolean }) => {
    if (opts.softHsm) {
      process.stdout.write(softHsmKey());
      return;
    }
    program.help();
  });

  serverCommand(program);
  identityCommand(program);
  return program;
}

async function main(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and --version exit through here with code 0
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    process.stderr.write(`minkms: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

await main();
