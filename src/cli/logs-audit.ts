/**
 * `minkms logs [HOST[:PORT]]`: stream a node's server log (SysAdmin), and
 * `minkms audit verify FILE`: check the hash chain of an audit log (local, no server).
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { KmsClient } from '../client/client.js';
import { SLOG, streamLogs } from '../client/logs.js';
import { parseApiKey } from '../identity/api-key.js';
import type { LogRecord } from '../protocol/messages.js';
import { verifyAuditFile } from '../server/audit.js';
import {
  CliError,
  DEFAULT_CLI_TIMEOUT_MS,
  addExamples,
  clientCommand,
  printJson,
  runs,
  serverEndpoints,
  style,
  trustedCAs,
  usageError,
  type CommonOptions,
} from './common.js';

// ------------------------------------------------------------------------------ WHEN

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};
const WORD_MS: Record<string, number> = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000 };

/** Parses a Go-style duration (`1h30m`, `90s`, `1.5h`, `300ms`; `d` for days too) into ms. */
export function parseGoDuration(s: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/y;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === s.length && pos > 0 ? total : undefined;
}

/**
 * `--since WHEN`: `today`, `yesterday` (local midnight), `N days|hours|minutes|seconds ago`,
 * a duration (`1h30m`: that long ago), an RFC 3339 time, or a date (`2025-01-31`, local).
 */
export function parseWhen(when: string, now = new Date()): Date {
  const s = when.trim().toLowerCase();
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  if (s === 'now') return now;
  if (s === 'today') return midnight;
  if (s === 'yesterday') return new Date(midnight.getFullYear(), midnight.getMonth(), midnight.getDate() - 1);
  const ago = /^(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s+ago$/.exec(s);
  if (ago) return new Date(now.getTime() - Number(ago[1]) * WORD_MS[ago[2]!]!);
  const d = parseGoDuration(s.replace(/\s+ago$/, ''));
  if (d !== undefined) return new Date(now.getTime() - d);
  const date = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (date) return new Date(Number(date[1]), Number(date[2]) - 1, Number(date[3]));
  if (/^\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(z|[+-]\d{2}:?\d{2})$/.test(s)) {
    const t = new Date(when.trim().replace(' ', 'T'));
    if (!Number.isNaN(t.getTime())) return t;
  }
  throw new InvalidArgumentError(
    "expected 'today', 'yesterday', 'N days|hours|minutes|seconds ago', a duration like 1h30m, or an RFC 3339 time like 2025-01-31T12:00:00Z.",
  );
}

const LEVELS: Record<string, number> = { DEBUG: SLOG.debug, INFO: SLOG.info, WARN: SLOG.warn, WARNING: SLOG.warn, ERROR: SLOG.error };

function parseLevel(v: string): number {
  const l = LEVELS[v.toUpperCase()];
  if (l !== undefined) return l;
  if (/^-?\d+$/.test(v)) return Number(v);
  throw new InvalidArgumentError('expected DEBUG, INFO, WARN or ERROR.');
}

function parseCount(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('expected a positive number.');
  return Number(v);
}

/** `DEBUG`, `INFO`, `WARN`, `ERROR` (slog's names; in-between levels as `INFO+2`). */
export function levelName(level: number): string {
  const [name, base] = level < 0 ? ['DEBUG', -4] : level < 4 ? ['INFO', 0] : level < 8 ? ['WARN', 4] : ['ERROR', 8];
  const d = level - (base as number);
  return d === 0 ? (name as string) : `${name}${d > 0 ? '+' : ''}${d}`;
}

function colorLevel(name: string): string {
  const padded = name.padEnd(5);
  if (name.startsWith('ERROR')) return style.red(padded);
  if (name.startsWith('WARN')) return style.yellow(padded);
  if (name.startsWith('DEBUG')) return style.dim(padded);
  return style.cyan(padded);
}

const iso = (d: Date | undefined) => (d && !Number.isNaN(d.getTime()) ? d.toISOString() : '-');

// ------------------------------------------------------------------------------ client

/** A client for the common flags whose requests may stay open indefinitely (log streams). */
function streamingClient(opts: CommonOptions, host: string | undefined): { client: KmsClient; host: string } {
  const apiKey = opts.apiKey ?? process.env.MINIO_KMS_API_KEY;
  if (apiKey === undefined || apiKey === '') throw usageError('no API key', 'use -a/--api-key KEY or set MINIO_KMS_API_KEY');
  let parsed;
  try {
    parsed = parseApiKey(apiKey.trim());
  } catch {
    throw usageError('invalid API key', "an API key looks like 'k1:…', 'k2:…' or 'kes:v1:…'; 'minkms identity' creates one");
  }
  const endpoints = host ? [host] : serverEndpoints();
  // The timeout bounds reaching the node and its first answer; the stream itself runs until
  // Ctrl-C (the transport applies no timeout to a stream's body).
  const client = new KmsClient({
    endpoints,
    apiKey: parsed,
    ca: opts.insecure === true ? undefined : trustedCAs(opts),
    insecure: opts.insecure === true,
    timeoutMs: opts.timeout ?? DEFAULT_CLI_TIMEOUT_MS,
  });
  return { client, host: client.transport.endpoints[0]! };
}

interface LogsOptions extends CommonOptions {
  level: number;
  message?: string;
  since?: Date;
  records?: number;
  quiet?: boolean;
  short?: boolean;
}

export function logsAuditCommands(program: Command): void {
  const logs = clientCommand(program, 'logs', {
    description: "stream a node's server log: stored records since WHEN, then new ones until Ctrl-C (SysAdmin)",
    enclave: false,
    examples: [
      'minkms logs',
      'minkms logs kms-1.example.net:7373 -l WARN',
      "minkms logs -s '2 hours ago' -l WARN -m ERR_NOT_ALLOWED",
      'minkms logs -s today -n 100 --json',
    ],
  })
    .argument('[HOST[:PORT]]', 'the node to read (default: the first of MINIO_KMS_SERVER)')
    .addOption(
      new Option('-l, --level <LEVEL>', 'only records at or above LEVEL: DEBUG, INFO, WARN, ERROR')
        .argParser(parseLevel)
        .default(SLOG.info, 'INFO'),
    )
    .addOption(new Option('-m, --message <TEXT>', 'only records whose message contains TEXT'))
    .addOption(
      new Option(
        '-s, --since <WHEN>',
        "first the stored records since WHEN: today, yesterday, 'N hours ago', 1h30m, 2025-01-31T12:00:00Z",
      ).argParser((v) => parseWhen(v)),
    )
    .addOption(new Option('-n, --records <NUM>', 'stop after NUM records').argParser(parseCount))
    .addOption(new Option('--short', 'print only the messages'))
    .addOption(new Option('-q, --quiet', 'no status messages on stderr'));

  runs(logs, async (ctx, host: string | undefined) => {
    const opts = ctx.opts as unknown as LogsOptions;
    const { client, host: node } = streamingClient(opts, host);
    const ac = new AbortController();
    const stop = () => ac.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    let count = 0;
    try {
      if (!opts.quiet)
        process.stderr.write(
          style.dim(`Streaming the log of ${node}${opts.since ? ` since ${iso(opts.since)}` : ''} (Ctrl-C to stop)`) + '\n',
        );
      await streamLogs(
        client,
        { level: opts.level, message: opts.message, since: opts.since, host: node, signal: ac.signal },
        (r: LogRecord) => {
          if (ac.signal.aborted) return;
          const name = levelName(r.level);
          if (opts.json) {
            const rec: Record<string, unknown> = { time: iso(r.time), level: name, message: r.message };
            if (r.trace.length > 0) rec.trace = r.trace.map((f) => ({ function: f.function, file: f.file, line: f.line }));
            process.stdout.write(JSON.stringify(rec) + '\n');
          } else if (opts.short) {
            process.stdout.write(r.message + '\n');
          } else {
            process.stdout.write(`${style.dim(iso(r.time))} ${colorLevel(name)} ${r.message}\n`);
          }
          if (opts.records !== undefined && ++count >= opts.records) ac.abort();
        },
      );
      if (!ac.signal.aborted && !opts.quiet) process.stderr.write(style.dim('The server ended the log stream.') + '\n');
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      client.close();
    }
  });

  const audit = program.command('audit').description('audit log tools');
  addExamples(
    audit
      .command('verify')
      .description("check an audit log's hash chain: every line intact, none removed, inserted or reordered")
      .argument('<FILE>', 'audit log file (audit.file of the server configuration, or --audit-file)')
      .addOption(new Option('--json', 'print JSON')),
    ['minkms audit verify /var/log/minkms/audit.log'],
  ).action((file: string, opts: { json?: boolean }) => {
    let result;
    try {
      result = verifyAuditFile(file);
    } catch (err) {
      throw new CliError(
        `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        'check the path and its permissions',
      );
    }
    if (opts.json) printJson({ file, ...result });
    if (!result.ok) {
      throw new CliError(
        `${file}: line ${result.line}: ${result.reason}`,
        'the audit log was modified after it was written; lines up to the one before are intact',
      );
    }
    if (!opts.json) process.stdout.write(`${result.lines} lines verified\n`);
  });
}
