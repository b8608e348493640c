/**
 * `minkms server DIR [--address IP:PORT] [--config FILE] [--dev] [--log-level LEVEL] [--audit-file FILE]
 * [--crypto-threads N] [--restart-mode exec|exit]`
 */
import { spawn } from 'node:child_process';
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
  restartMode?: RestartMode;
}

/**
 * How the process starts again after `POST /v1/debug/restart` (once it has drained and closed):
 * - `exec`: it starts the same command line (same node, arguments, environment and working
 *   directory) as a new process, detached, once the listener and the data are closed, and
 *   exits 0 — no supervisor needed (tests, a shell, a process manager that follows forks);
 * - `exit`: it exits with {@link RESTART_EXIT_STATUS} and its supervisor starts it again
 *   (systemd: `Restart=always` / `RestartForceExitStatus=75` in deploy/minkms.service;
 *   containers: the restart policy). A re-exec there would be wrong: systemd kills what is left
 *   in the unit's cgroup when the main process exits, and a container ends with its PID 1.
 * - `off`: restart requests are refused (501): for nodes whose restarts only their operator's
 *   tooling may do.
 * The default is `exit` under systemd (it sets INVOCATION_ID) and as PID 1 (a container), else `exec`.
 */
export type RestartMode = 'exec' | 'exit' | 'off';
/** EX_TEMPFAIL (sysexits.h): "try again" — a restart was requested, not a failure. */
export const RESTART_EXIT_STATUS = 75;

export function defaultRestartMode(env: NodeJS.ProcessEnv = process.env, pid = process.pid): RestartMode {
  return env.INVOCATION_ID || pid === 1 ? 'exit' : 'exec';
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
    .addOption(
      new Option(
        '--restart-mode <MODE>',
        'how a requested restart starts the node again: exec (a new process with the same command line), exit (status 75 for the supervisor) or off (restarts refused); default: exit under systemd and as PID 1, else exec',
      ).choices(['exec', 'exit', 'off']),
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
      let stopping = false;
      const restartMode = opts.restartMode ?? defaultRestartMode();
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
          restart:
            restartMode === 'off'
              ? undefined
              : () => {
                  // A stop (SIGTERM) that came during the drain wins: no new process.
                  if (stopping) process.exit(0);
                  restartProcess(restartMode, log);
                },
        });
      } catch (err) {
        log.flush();
        if (err instanceof StartupConfigError) return exitConfigError(err);
        process.stderr.write(`${prefixed((err as Error).message)}\n`);
        process.exit(1);
      }
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
 * Starts the node again after a restart request, everything closed (see {@link RestartMode}).
 * If the new process cannot be started, the old one exits with {@link RESTART_EXIT_STATUS}
 * anyway: a supervisor, if any, still starts it.
 */
function restartProcess(mode: Exclude<RestartMode, 'off'>, log: Logger & { flush?: () => void }): void {
  if (mode === 'exit') {
    log.info('restarting: exiting for the supervisor to start the node again', { status: RESTART_EXIT_STATUS });
    log.flush?.();
    process.exit(RESTART_EXIT_STATUS);
  }
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    cwd: process.cwd(),
    env: process.env,
    // Same stdout/stderr (the journal, a terminal, a test's pipes); its own session, so that
    // it outlives this process and its process group.
    stdio: ['ignore', 'inherit', 'inherit'],
    detached: true,
  });
  child.once('spawn', () => {
    process.stdout.write(`=> Restarted as process ${child.pid}\n`);
    log.info('restarting: a new process took over', { pid: child.pid });
    log.flush?.();
    child.unref();
    process.exit(0);
  });
  child.once('error', (err) => {
    log.error('restarting: cannot start a new process; exiting for a supervisor', { err: err.message, status: RESTART_EXIT_STATUS });
    log.flush?.();
    process.exit(RESTART_EXIT_STATUS);
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
