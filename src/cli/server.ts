/**
 * `minkms server DIR [--address IP:PORT] [--config FILE] [--dev] [--log-level LEVEL] [--audit-file FILE]
 * [--crypto-threads N] [--restart-mode exec|exit|off] [--workers N]`
 */
import { spawn } from 'node:child_process';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { EMPTY_CONFIG, loadConfig, type Config } from '../config/config.js';
import { startServer, StartupConfigError, type RunningServer } from '../server/compose.js';
import { createLogger, type Level, type Logger, type ServerLogger } from '../server/log.js';
import { WorkerLink } from '../server/workers/link.js';
import { WORKER_ENV, type ToWorker, type WorkerInit } from '../server/workers/messages.js';
import { startPrimary, WorkerStartError, type RunningPrimary } from '../server/workers/primary.js';
import { resilientOutput } from './output.js';

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
  workers?: number;
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
    .option(
      '--workers <N>',
      'worker processes that serve the API on the one port, with the embedded store (docs/workers.md; default 1: one process)',
      (v: string) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError('expected a whole number from 1 to 256');
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
      const stdout = resilientOutput(process.stdout);
      const print = (line: string) => stdout.write(line + '\n');
      const log = createLogger(opts.logLevel ?? config.log.level, { destination: resilientOutput(process.stderr) });
      installLastResortHandlers(log);
      const restartMode = opts.restartMode ?? defaultRestartMode();
      const workerInit = cluster.isWorker ? process.env[WORKER_ENV] : undefined;
      // It may hold the dev mode's HSM key: not for the processes this one starts.
      delete process.env[WORKER_ENV];
      if (workerInit) return runWorker(JSON.parse(workerInit) as WorkerInit, dir ?? '', opts, config, log, restartMode);
      if ((opts.workers ?? 1) > 1) return runPrimary(dir ?? '', opts, config, log, print, restartMode);
      let stopping = false;
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
          print,
          restart: restarter(restartMode, log, print, () => stopping),
        });
      } catch (err) {
        exitStartFailure(err, log);
      }
      onStopSignals(log, () => {
        stopping = true;
        return server.close();
      });
      // SIGHUP: read the configuration file again (a new `hsm` section takes effect at once).
      process.on('SIGHUP', () => void server.reloadConfig());
    });
}

/**
 * The primary of a node with worker processes (docs/workers.md): it prepares the data
 * directory, starts the workers and stops them on SIGTERM/SIGINT; SIGHUP reaches every worker.
 */
async function runPrimary(
  dir: string,
  opts: ServerOptions,
  config: Config,
  log: ServerLogger,
  print: (line: string) => void,
  restartMode: RestartMode,
): Promise<void> {
  let stopping = false;
  let primary: RunningPrimary;
  try {
    primary = await startPrimary({
      dir,
      dev: opts.dev === true,
      config,
      configFile: opts.config,
      hsmKey: process.env.MINIO_KMS_HSM_KEY || undefined,
      auditFile: opts.auditFile,
      log,
      print,
      workers: opts.workers!,
      restart: restarter(restartMode, log, print, () => stopping),
    });
  } catch (err) {
    exitStartFailure(err, log);
  }
  onStopSignals(log, () => {
    stopping = true;
    return primary.close();
  });
  process.on('SIGHUP', () => primary.reloadConfig());
}

/**
 * One worker process of a node: a whole server on the shared port whose store, audit log and
 * banner are the primary's. It stops when the primary says so (signals go to the primary: a
 * terminal's or systemd's reach both, and the primary decides).
 */
async function runWorker(
  init: WorkerInit,
  dir: string,
  opts: ServerOptions,
  config: Config,
  log: ServerLogger,
  restartMode: RestartMode,
): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => {});
  // A failed send means the primary is gone; 'disconnect' ends the worker then.
  const link = new WorkerLink((m) => process.connected && process.send!(m, undefined, {}, () => {}));
  process.on('message', (m) => link.receive(m as ToWorker));
  // Without the primary there is no store and no listener: nothing left to serve or drain.
  process.on('disconnect', () => {
    log.flush();
    process.exit(1);
  });
  try {
    await startServer({
      dir,
      address: opts.address,
      host: opts.host,
      // The cores are shared by the workers.
      cryptoThreads: opts.cryptoThreads ?? Math.max(1, Math.floor(availableParallelism() / init.count)),
      config,
      configFile: opts.config,
      dev: false,
      hsmKey: process.env.MINIO_KMS_HSM_KEY || undefined,
      log,
      auditFile: opts.auditFile,
      print: (line) => link.print(line),
      restart: restartMode === 'off' ? undefined : () => {},
      worker: { link, init, stopped: () => process.exit(0) },
    });
  } catch (err) {
    exitStartFailure(err, log);
  }
}

/**
 * How the process starts again after a restart request (undefined: refused), unless a stop
 * (SIGTERM) came during the drain: that one wins, and no new process starts.
 */
function restarter(mode: RestartMode, log: ServerLogger, print: (line: string) => void, stopping: () => boolean): (() => void) | undefined {
  if (mode === 'off') return undefined;
  return () => {
    if (stopping()) process.exit(0);
    restartProcess(mode, log, print);
  };
}

/** A start that failed: exit 2 for a configuration that cannot work, else 1 (a worker's own status). */
function exitStartFailure(err: unknown, log: ServerLogger): never {
  log.flush();
  if (err instanceof StartupConfigError) exitConfigError(err);
  // The worker said why on stderr.
  if (err instanceof WorkerStartError) process.exit(err.status);
  process.stderr.write(`${prefixed((err as Error).message)}\n`);
  process.exit(1);
}

/** SIGTERM/SIGINT: `close`, then exit 0 (1 if it failed or took longer than the deadline). */
function onStopSignals(log: ServerLogger, close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    setTimeout(() => {
      log.error('shutdown did not finish in time; exiting', { afterMs: SHUTDOWN_DEADLINE_MS });
      log.flush();
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * Starts the node again after a restart request, everything closed (see {@link RestartMode}).
 * If the new process cannot be started, the old one exits with {@link RESTART_EXIT_STATUS}
 * anyway: a supervisor, if any, still starts it.
 */
function restartProcess(mode: Exclude<RestartMode, 'off'>, log: Logger & { flush?: () => void }, print: (line: string) => void): void {
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
    print(`=> Restarted as process ${child.pid}`);
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
