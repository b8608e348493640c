/** `minkms server DIR [--address IP:PORT] [--config FILE] [--dev]` */
import type { Command } from 'commander';
import { EMPTY_CONFIG, loadConfig } from '../config/config.js';
import { KmsNode } from '../server/node.js';
import { createLogger } from '../server/log.js';

interface ServerOptions {
  address: string;
  config?: string;
  dev?: boolean;
}

export function serverCommand(program: Command): void {
  program
    .command('server')
    .description('run a KMS server node')
    .argument('[DIR]', 'data directory holding the encrypted key database')
    .option('--address <IP:PORT>', 'listen address', '0.0.0.0:7373')
    .option('--config <FILE>', 'configuration file (YAML, version: v1)')
    .option('--dev', 'development mode: ephemeral data, deleted on exit')
    .addHelpText('after', `
Environment:
  MINIO_KMS_HSM_KEY   software HSM key (hsm:aes256:…), see 'minkms --soft-hsm'

Examples:
  MINIO_KMS_HSM_KEY=$(minkms --soft-hsm) minkms server ./data
  minkms server /var/lib/minkms --config /etc/minkms/config.yaml --address 0.0.0.0:7373`)
    .action(async (dir: string | undefined, opts: ServerOptions) => {
      if (!dir && !opts.dev) program.error('error: missing required argument DIR', { exitCode: 2 });
      const log = createLogger('info');
      const node = await KmsNode.start({
        dir: dir ?? '',
        address: opts.address,
        config: opts.config ? loadConfig(opts.config) : EMPTY_CONFIG,
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
