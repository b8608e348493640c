/** `minkms server DIR [--address IP:PORT] [--config FILE] [--dev] [--log-level LEVEL] [--audit-file FILE] [--crypto-threads N]` */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { EMPTY_CONFIG, loadConfig } from '../config/config.js';
import { KmsNode } from '../server/node.js';
import { createLogger, type Level } from '../server/log.js';
import { Observability } from '../server/observability.js';

interface ServerOptions {
  host?: string;
  address: string;
  config?: string;
  dev?: boolean;
  logLevel?: Level;
  auditFile?: string;
  cryptoThreads?: number;
}

export function serverCommand(program: Command): void {
  program
    .command('server')
    .description('run a KMS server node')
    .argument('[DIR]', 'data directory holding the encrypted key database')
    .option('--address <IP:PORT>', 'listen address', '0.0.0.0:7373')
    .option('--host <HOST:PORT>', 'address other nodes and clients reach this node at (cluster membership; default: the listen address)')
    .option('--config <FILE>', 'configuration file (YAML, version: v1)')
    .option('--dev', 'development mode: ephemeral data, deleted on exit')
    .addOption(
      new Option('--log-level <LEVEL>', 'server log level (default: log.level of the config, else info)').choices([
        'debug',
        'info',
        'warn',
        'error',
      ]),
    )
    .option('--audit-file <FILE>', 'append a hash-chained audit log to FILE (default: audit.file of the config, else none)')
    .option(
      '--crypto-threads <N>',
      'threads that seal and open the data keys of batches (default: the available cores; 0 = none)',
      (v: string) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 256) throw new InvalidArgumentError('expected a whole number from 0 to 256');
        return n;
      },
    )
    .addHelpText(
      'after',
      `
Environment:
  MINIO_KMS_HSM_KEY   software HSM key (hsm:aes256:…), see 'minkms --soft-hsm'

Examples:
  MINIO_KMS_HSM_KEY=$(minkms --soft-hsm) minkms server ./data
  minkms server /var/lib/minkms --config /etc/minkms/config.yaml --address 0.0.0.0:7373`,
    )
    .action(async (dir: string | undefined, opts: ServerOptions) => {
      if (!dir && !opts.dev) program.error('error: missing required argument DIR', { exitCode: 2 });
      const config = opts.config ? loadConfig(opts.config) : EMPTY_CONFIG;
      const log = createLogger(opts.logLevel ?? config.log.level);
      const observability = new Observability({
        log,
        auditFile: opts.auditFile ?? config.audit.file,
        metricsUnauthenticated: !config.metrics.auth,
      });
      const node = await KmsNode.start({
        dir: dir ?? '',
        address: opts.address,
        host: opts.host,
        cryptoThreads: opts.cryptoThreads,
        config,
        observability,
        configured: opts.config !== undefined,
        dev: opts.dev === true,
        hsmKey: process.env.MINIO_KMS_HSM_KEY || undefined,
        log,
        print: (line) => process.stdout.write(line + '\n'),
      });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info('shutting down', { signal });
        node.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
