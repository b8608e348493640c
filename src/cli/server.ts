/** `minkms server DIR [--address IP:PORT] [--config FILE] [--dev] [--log-level LEVEL] [--audit-file FILE] [--crypto-threads N]` */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { EMPTY_CONFIG, loadConfig } from '../config/config.js';
import { startServer, StartupConfigError, type RunningServer } from '../server/compose.js';
import { createLogger, type Level, type Logger } from '../server/log.js';

/** How long a graceful shutdown (SIGTERM, SIGINT) may take before the process exits anyway. */
const SHUTDOWN_DEADLINE_MS = 15_000;

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
      let config;
      try {
        config = opts.config ? loadConfig(opts.config) : EMPTY_CONFIG;
      } catch (err) {
        return exitConfigError(err);
      }
      const log = createLogger(opts.logLevel ?? config.log.level);
      installLastResortHandlers(log);
      let server: RunningServer;
      try {
        server = await startServer({
          dir: dir ?? '',
          address: opts.address,
          host: opts.host,
          cryptoThreads: opts.cryptoThreads,
          config,
          configFile: opts.config,
          dev: opts.dev === true,
          hsmKey: process.env.MINIO_KMS_HSM_KEY || undefined,
          log,
          auditFile: opts.auditFile,
          print: (line) => process.stdout.write(line + '\n'),
        });
      } catch (err) {
        log.flush();
        if (err instanceof StartupConfigError) return exitConfigError(err);
        process.stderr.write(`${prefixed((err as Error).message)}\n`);
        process.exit(1);
      }
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info('shutting down', { signal });
        // The last resort: a shutdown step that hangs (a store or HSM that does not answer) must not
        // keep a stopped node around until systemd's SIGKILL.
        setTimeout(() => {
          log.error('shutdown did not finish in time; exiting', { afterMs: SHUTDOWN_DEADLINE_MS });
          log.flush();
          process.exit(1);
        }, SHUTDOWN_DEADLINE_MS).unref();
        server.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      // SIGHUP: read the configuration file again (a new `hsm` section takes effect at once).
      process.on('SIGHUP', () => void server.reloadConfig());
    });
}

/**
 * A configuration that can never work (bad YAML, unknown keys, no HSM, unreadable TLS files):
 * exit status 2, which the systemd unit does not restart (`RestartPreventExitStatus=2`).
 * Everything else that goes wrong while running is a runtime condition the node reports and
 * retries — it never exits for one.
 */
function exitConfigError(err: unknown): never {
  process.stderr.write(`${prefixed((err as Error).message)}\n`);
  process.exit(2);
}

/**
 * The last resort: an error no task caught is logged and the node keeps serving. Every
 * background task owns its errors; reaching this is a bug to fix, not a reason to stop
 * answering decryptions.
 */
function installLastResortHandlers(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled rejection (a bug: please report it); the node keeps running', { err: errorText(reason) });
  });
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception (a bug: please report it); the node keeps running', { err: errorText(err) });
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

/** Start-up messages already say `kms: …`; others get the program's name. */
function prefixed(message: string): string {
  return message.startsWith('kms:') ? message : `minkms: ${message}`;
}
