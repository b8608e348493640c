/**
 * Shared pieces of the client commands: the common flags (`-a/--api-key`, `-k/--insecure`,
 * `-e/--enclave`, `--json`), building a {@link KmsClient} from flags and environment, output
 * (aligned tables and fields, colour on a TTY only, stable JSON) and turning any failure into
 * one line on stderr plus an exit code.
 *
 * Conventions every command follows:
 * - exit code 0 success, 1 failure, 2 usage (bad flag/argument, missing API key or enclave);
 * - errors are `minkms: <what is wrong> (<what to do>)`, one line on stderr;
 * - `--json` prints one JSON document: commands taking several names (`NAME...`) and lists
 *   print arrays, the others one object; keys are snake_case like the protocol's JSON names,
 *   times RFC 3339 (UTC), byte strings base64, ciphertexts `v<VERSION>:<BASE64>`.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { KmsClient, HttpError } from '../client/client.js';
import { EndpointsError, OutcomeUnknownError, TimeoutError, TransportError } from '../client/transport.js';
import { ConfigError, parseDuration } from '../config/config.js';
import { KmsError } from '../errors.js';
import { parseApiKey } from '../identity/api-key.js';
import { isIdentity } from '../identity/identity.js';
import { normalizeIdentity } from '../identity/kes.js';

// ------------------------------------------------------------------------------ errors

/** A failure to report as `minkms: message (hint)`, with an exit code (1 failure, 2 usage). */
export class CliError extends Error {
  readonly hint: string;
  readonly exitCode: 1 | 2;
  constructor(message: string, hint: string, exitCode: 1 | 2 = 1) {
    super(message);
    this.name = 'CliError';
    this.hint = hint;
    this.exitCode = exitCode;
  }
  /** The one line written to stderr (with the newline). */
  line(): string {
    return `minkms: ${this.message}${this.hint ? ` (${this.hint})` : ''}\n`;
  }
}

/** A usage error (exit code 2). */
export function usageError(message: string, hint: string): CliError {
  return new CliError(message, hint, 2);
}

/**
 * What a command needs from the server, to explain an `access denied` answer:
 * the policy command (`KEY:CREATE`), the resource names and the enclave (none = SysAdmin only).
 */
export interface Permission {
  command: string;
  names?: readonly string[];
  enclave?: string;
}

/** What the caller of {@link explainError} knows about the failed command. */
export interface ErrorContext {
  /** `minkms add-key` etc., for "see '… --help'". */
  commandPath: string;
  permission?: Permission;
  endpoints?: readonly string[];
}

const quote = (s: string) => `'${s}'`;

/** The hint of an access-denied error: the missing permission. */
export function permissionHint(p: Permission): string {
  if (p.enclave === undefined) return `this command needs ${p.command}, which only a SysAdmin (root) identity has`;
  const on = p.names && p.names.length > 0 ? ` on ${p.names.map(quote).join(', ')}` : '';
  return `this command needs ${p.command}${on} in enclave ${quote(p.enclave)}, or an enclave admin`;
}

const TLS_VERIFY_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const UNREACHABLE_CODES = new Map([
  ['ECONNREFUSED', 'connection refused'],
  ['ENOTFOUND', 'host not found'],
  ['EAI_AGAIN', 'host name lookup failed'],
  ['ETIMEDOUT', 'connection timed out'],
  ['EHOSTUNREACH', 'host unreachable'],
  ['ENETUNREACH', 'network unreachable'],
  ['ECONNRESET', 'connection reset'],
  ['EPIPE', 'connection closed'],
  ['EADDRNOTAVAIL', 'address not available'],
]);

function causeChain(err: unknown): { code?: string; message: string }[] {
  const out: { code?: string; message: string }[] = [];
  let e: unknown = err;
  for (let i = 0; i < 5 && e; i++) {
    const x = e as { code?: unknown; message?: unknown; cause?: unknown };
    out.push({ code: typeof x.code === 'string' ? x.code : undefined, message: String(x.message ?? e) });
    e = x.cause;
  }
  return out;
}

const KMS_HINTS: Partial<Record<string, string>> = {
  ERR_ENCLAVE_NOT_FOUND: "check -e/--enclave or MINIO_KMS_ENCLAVE; 'minkms ls-enclave' lists the enclaves",
  ERR_ENCLAVE_EXISTS: 'choose another name',
  ERR_KEY_NOT_FOUND: "'minkms ls-key' lists the keys of the enclave",
  ERR_KEY_EXISTS: "use 'minkms add-key --version NAME' to add a new version",
  ERR_POLICY_NOT_FOUND: "'minkms ls-policy' lists the policies of the enclave",
  ERR_IDENTITY_NOT_FOUND: "'minkms ls-identity' lists the identities of the enclave",
  ERR_DECRYPT: 'check the key name, the version prefix and the ciphertext',
  ERR_SEALED: 'the server cannot unseal its key database: check its HSM configuration and log',
  ERR_CLUSTER_SINGLE_NODE: 'this server runs a single node',
  ERR_HSM_LAST: 'add another HSM first',
  ERR_HSM_NOT_FOUND: "'minkms stat' lists the HSMs of each node",
  ERR_HSM_EXISTS: 'use --overwrite to reseal the root key with this HSM',
  ERR_HSM_NOT_CONFIGURED: 'configure the HSM on every node first',
  ERR_HSM_FAILED: "check the HSM and the server log; for PKCS#11: 'minkms hsm pkcs11 check --config FILE'",
  ERR_INVALID_POLICY: 'check the policy file: {"allow": {"KEY:STATUS": "*"}, "deny": {}}',
  ERR_SELF_DELETE: 'use another identity to delete this one',
  ERR_ROOT_IDENTITY: 'the root identity is defined by the server configuration',
  ERR_POLICY_NOT_ASSIGNABLE: 'only User identities (not --admin) have policies',
  ERR_IDENTITY_EXISTS_ELSEWHERE: 'an identity belongs to one enclave; delete it there first',
  ERR_CONFLICT: 'run the command again',
  ERR_TIMEOUT: 'run the command again; check the server load',
  ERR_STORE_OUTCOME_UNKNOWN: "the change may have been made: check (e.g. 'minkms stat-key') before running the command again",
  ERR_STORE_FULL: 'free disk space on the server (etcd: compact, defragment and disarm the NOSPACE alarm)',
};

/** Turns any failure of a command into a {@link CliError}. */
export function explainError(err: unknown, ctx: ErrorContext): CliError {
  if (err instanceof CliError) return err;
  const help = `see '${ctx.commandPath} --help'`;
  if (err instanceof KmsError) {
    if (err.code === 'ERR_NOT_ALLOWED') {
      return new CliError(err.message, ctx.permission ? permissionHint(ctx.permission) : 'this command needs more privileges');
    }
    const hint = KMS_HINTS[err.code] ?? (err.status >= 500 ? 'check the server log' : help);
    return new CliError(err.message, hint);
  }
  if (err instanceof HttpError) {
    const message = err.message.replace(/\s+/g, ' ').trim().slice(0, 300);
    if (err.status === 403) {
      return new CliError(
        message.startsWith('access denied') ? message : `access denied: ${message}`,
        ctx.permission ? permissionHint(ctx.permission) : 'this command needs more privileges',
      );
    }
    if (err.status >= 500) return new CliError(`server error (HTTP ${err.status}): ${message}`, 'check the server log');
    return new CliError(message, help);
  }
  if (err instanceof TransportError) return explainTransportError(err, ctx);
  const msg = (err as Error)?.message ?? String(err);
  return new CliError(msg, help);
}

/** Why the client could not get an answer: every endpoint tried, each with what went wrong. */
function explainTransportError(err: TransportError, ctx: ErrorContext): CliError {
  const attempts = err instanceof EndpointsError ? err.attempts : [err];
  for (const a of attempts) {
    const tls = causeChain(a.cause).find((c) => c.code !== undefined && TLS_VERIFY_CODES.has(c.code));
    if (tls) {
      return new CliError(
        `cannot verify the TLS certificate of ${a.host}: ${tls.message}`,
        "trust the server's CA with --ca FILE, in ~/.minkms/certs/CAs or in the system store; -k/--insecure skips verification",
      );
    }
  }
  if (err instanceof OutcomeUnknownError) {
    return new CliError(err.message, 'the change may or may not have been made: check the current state before running the command again');
  }
  const why = (a: TransportError) => {
    const net = causeChain(a.cause).find((c) => c.code !== undefined && UNREACHABLE_CODES.has(c.code));
    return net ? `${UNREACHABLE_CODES.get(net.code!)} (${net.code})` : a.reason;
  };
  const untried = err instanceof EndpointsError ? err.untried : [];
  const reasons = attempts.map(why);
  const all = ctx.endpoints && ctx.endpoints.length > 0 ? ctx.endpoints : [...attempts.map((a) => a.host), ...untried];
  const where = all.length === 1 ? `the KMS server at ${all[0]}` : `any KMS server (${all.join(', ')})`;
  const reason =
    new Set(reasons).size === 1 && untried.length === 0
      ? reasons[0]!
      : [
          ...attempts.map((a, i) => `${a.host}: ${reasons[i]}`),
          ...(untried.length > 0 ? [`${untried.join(', ')}: not tried in time`] : []),
        ].join('; ');
  const timedOut = untried.length > 0 || attempts.some((a) => a.cause instanceof TimeoutError);
  const hint = 'check that the server runs, or set MINIO_KMS_SERVER=https://HOST:PORT[,…]';
  return new CliError(`cannot reach ${where}: ${reason}`, timedOut ? `${hint}; --timeout gives it longer` : hint);
}

// ------------------------------------------------------------------------------ output

/** True if human output may use colour: stdout is a terminal and NO_COLOR is unset. */
export function colorEnabled(): boolean {
  return process.stdout.isTTY === true && process.env.NO_COLOR === undefined;
}

const ansi = (open: number, close: number) => (s: string) => (colorEnabled() ? `\x1b[${open}m${s}\x1b[${close}m` : s);
export const style = {
  bold: ansi(1, 22),
  dim: ansi(2, 22),
  red: ansi(31, 39),
  green: ansi(32, 39),
  yellow: ansi(33, 39),
  cyan: ansi(36, 39),
};

// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*m/g;
const visibleLength = (s: string) => s.replace(ANSI_RE, '').length;

export function print(text = ''): void {
  process.stdout.write(text + '\n');
}

/** Prints one JSON document (2-space indented). */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Formats rows as aligned columns (two spaces apart); the header, if any, in bold. */
export function table(header: readonly string[] | undefined, rows: readonly (readonly string[])[]): string {
  const all = header ? [header, ...rows] : rows;
  const width: number[] = [];
  for (const r of all) r.forEach((c, i) => (width[i] = Math.max(width[i] ?? 0, visibleLength(c))));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(width[i]! - visibleLength(c))))
      .join('  ')
      .trimEnd();
  const out: string[] = [];
  if (header) out.push(style.bold(line(header)));
  for (const r of rows) out.push(line(r));
  return out.join('\n');
}

/** Prints aligned `label  value` lines; the labels dim. */
export function printFields(pairs: readonly (readonly [string, string])[]): void {
  const w = Math.max(0, ...pairs.map(([k]) => k.length));
  for (const [k, v] of pairs) print(`${style.dim(k.padEnd(w))}  ${v}`);
}

/** RFC 3339 in UTC without fractions (`2025-01-02T03:04:05Z`), or null (none, or the zero time). */
export function rfc3339(d: Date | undefined): string | null {
  if (!d || Number.isNaN(d.getTime()) || d.getTime() === 0) return null;
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A time for humans: RFC 3339, or `-`. */
export function humanTime(d: Date | undefined): string {
  return rfc3339(d) ?? '-';
}

/** `3d 4h`, `5m 6s`, `7s`. */
export function humanDuration(ms: number): string {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** `1.5 MiB` */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A success line for humans: `✔ message` (mark in green on a TTY). */
export function done(message: string): void {
  print(`${style.green('✔')} ${message}`);
}

export const PRIVILEGE_NAMES: Record<number, string> = { 1: 'SysAdmin', 2: 'Admin', 3: 'User' };

// ------------------------------------------------------------------------------ argument parsers

/** Parses a key version: a positive integer. */
export function parseVersionArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 0xffffffff) {
    throw new InvalidArgumentError('a key version is a positive integer.');
  }
  return Number(value);
}

/**
 * Checks an identity argument — `h1:…`, or the same identity in KES's spelling (64 hex
 * characters) — and returns it as `h1:`; usage error otherwise, never echoing a secret.
 */
export function requireIdentity(s: string): string {
  if (isIdentity(s)) return s;
  const kes = normalizeIdentity(s);
  if (kes !== undefined) return kes;
  if (/^(k[12]|hsm|kes):/i.test(s)) {
    throw usageError(
      'expected an identity, got an API or HSM key',
      "never share keys; 'minkms identity KEY' prints the identity (h1:…) of a key",
    );
  }
  throw usageError(
    `'${(s as string).slice(0, 64)}' is not an identity`,
    "identities look like 'h1:' followed by 43 base64url characters (or, spelled as KES does, 64 hex characters)",
  );
}

/** Collects a repeatable option into an array. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

// ------------------------------------------------------------------------------ client

export const DEFAULT_SERVER = 'https://localhost:7373';

/** The server endpoints: `MINIO_KMS_SERVER` (comma-separated, scheme optional), else localhost:7373. */
export function serverEndpoints(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = (env.MINIO_KMS_SERVER ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.length > 0 ? list : [DEFAULT_SERVER];
}

/** `$HOME/.minkms/certs/CAs`. */
export function caDir(): string {
  return join(homedir(), '.minkms', 'certs', 'CAs');
}

/**
 * The operating system's CA bundle, by distribution: Debian/Ubuntu/Alpine, Fedora/RHEL,
 * openSUSE, and the BSD/macOS/Alpine location. Node 20 trusts only its bundled Mozilla roots
 * (`tls.rootCertificates`) and has no `--use-system-ca`, so the CLI reads the bundle itself —
 * the first that exists, as OpenSSL's and Go's clients do.
 */
export const SYSTEM_CA_BUNDLES = [
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/ca-bundle.pem',
  '/etc/ssl/cert.pem',
];

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The PEM certificates in `text`, one string each. */
function pemCertificates(text: string): string[] {
  return text.match(PEM_CERT) ?? [];
}

/** The certificates of a PEM file, or of every PEM file in a directory (sorted, non-recursive). */
function certificatesIn(path: string): string[] {
  if (!statSync(path).isDirectory()) return pemCertificates(readFileSync(path, 'utf8'));
  const out: string[] = [];
  for (const name of readdirSync(path).sort()) {
    const file = join(path, name);
    try {
      if (statSync(file).isFile()) out.push(...pemCertificates(readFileSync(file, 'utf8')));
    } catch {
      // unreadable or vanished: skip, like a broken link in /etc/ssl/certs
    }
  }
  return out;
}

/** Same as {@link certificatesIn}, but nothing for a path that cannot be read. */
function certificatesMaybe(path: string | undefined): string[] {
  if (path === undefined || path === '') return [];
  try {
    return certificatesIn(path);
  } catch {
    return [];
  }
}

/**
 * The CAs the CLI trusts to verify a server, in this order:
 * 1. Node's bundled Mozilla roots;
 * 2. the operating system's store: `$SSL_CERT_FILE` if set (as OpenSSL and Go read it), else the
 *    first of {@link SYSTEM_CA_BUNDLES} that exists; plus `$SSL_CERT_DIR` if set;
 * 3. `$NODE_EXTRA_CA_CERTS` (node applies it only when no `ca` is given, and we always give one);
 * 4. every PEM file in `~/.minkms/certs/CAs`;
 * 5. `--ca FILE|DIR` — an error if it cannot be read or holds no certificate, because the user
 *    asked for it explicitly.
 * Duplicates are removed (the system bundle repeats most Mozilla roots).
 */
export function trustedCAs(
  opts: { ca?: string } = {},
  env: NodeJS.ProcessEnv = process.env,
  dir = caDir(),
  bundles: readonly string[] = SYSTEM_CA_BUNDLES,
): string[] {
  const system = env.SSL_CERT_FILE ? certificatesMaybe(env.SSL_CERT_FILE) : certificatesMaybe(bundles.find((b) => existsSync(b)));
  let explicit: string[] = [];
  if (opts.ca !== undefined) {
    try {
      explicit = certificatesIn(opts.ca);
    } catch (err) {
      throw usageError(
        `cannot read --ca ${opts.ca}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        'give a PEM file or a directory of PEM files',
      );
    }
    if (explicit.length === 0) throw usageError(`--ca ${opts.ca} holds no PEM certificate`, 'give a PEM file or a directory of PEM files');
  }
  const all = [
    ...rootCertificates,
    ...system,
    ...certificatesMaybe(env.SSL_CERT_DIR),
    ...certificatesMaybe(env.NODE_EXTRA_CA_CERTS),
    ...certificatesMaybe(dir),
    ...explicit,
  ];
  const seen = new Set<string>();
  return all.filter((pem) => {
    const body = pem.replace(/-----[A-Z ]+-----|\s/g, '');
    if (seen.has(body)) return false;
    seen.add(body);
    return true;
  });
}

/** The common flags, as commander parses them. */
export interface CommonOptions {
  apiKey?: string;
  insecure?: boolean;
  /** `--ca FILE|DIR`: more CA certificates to trust. */
  ca?: string;
  enclave?: string;
  json?: boolean;
  /** `--timeout`, in ms. */
  timeout?: number;
}

/** Default of `--timeout`: the whole command's call to the servers, failover included. */
export const DEFAULT_CLI_TIMEOUT_MS = 30_000;

/** Parses `--timeout`: a duration such as `500ms`, `10s`, `1m`, or seconds. */
export function parseTimeoutArg(value: string): number {
  let ms: number;
  try {
    ms = /^\d+(\.\d+)?$/.test(value) ? Number(value) * 1000 : parseDuration(value, '--timeout');
  } catch (err) {
    if (err instanceof ConfigError) throw new InvalidArgumentError('a duration such as 500ms, 10s or 1m.');
    throw err;
  }
  if (!(ms > 0)) throw new InvalidArgumentError('a duration greater than zero.');
  return ms;
}

/** Creates the client for the common flags and environment; usage error if no API key. */
export function createClient(opts: CommonOptions): KmsClient {
  const apiKey = opts.apiKey ?? process.env.MINIO_KMS_API_KEY;
  if (apiKey === undefined || apiKey === '') {
    throw usageError('no API key', 'use -a/--api-key KEY or set MINIO_KMS_API_KEY');
  }
  let parsed;
  try {
    parsed = parseApiKey(apiKey.trim());
  } catch {
    throw usageError('invalid API key', "an API key looks like 'k1:…', 'k2:…' or 'kes:v1:…'; 'minkms identity' creates one");
  }
  // Each server gets the transport's per-attempt bounds (connect 5 s, response 10 s, both
  // shortened to what is left of --timeout); all of them together get --timeout.
  return new KmsClient({
    endpoints: serverEndpoints(),
    apiKey: parsed,
    ca: opts.insecure === true ? undefined : trustedCAs(opts),
    insecure: opts.insecure === true,
    timeoutMs: opts.timeout ?? DEFAULT_CLI_TIMEOUT_MS,
  });
}

/** The state of one running client command. */
export class Context {
  readonly cmd: Command;
  readonly opts: CommonOptions & Record<string, unknown>;
  /** Set by the command before it calls the server: explains an access-denied answer. */
  permission: Permission | undefined;
  #client: KmsClient | undefined;

  constructor(cmd: Command) {
    this.cmd = cmd;
    this.opts = cmd.opts();
  }

  get json(): boolean {
    return this.opts.json === true;
  }

  /** `minkms add-key` */
  get path(): string {
    const names: string[] = [];
    for (let c: Command | null = this.cmd; c; c = c.parent) names.unshift(c.name());
    return names.join(' ');
  }

  /** The enclave from `-e/--enclave` or `MINIO_KMS_ENCLAVE`; usage error if none. */
  get enclave(): string {
    const e = this.opts.enclave ?? process.env.MINIO_KMS_ENCLAVE;
    if (e === undefined || e === '') throw usageError('no enclave', 'use -e/--enclave NAME or set MINIO_KMS_ENCLAVE');
    return e;
  }

  get client(): KmsClient {
    this.#client ??= createClient(this.opts);
    return this.#client;
  }

  /** Records the permission the next server calls need (for error messages). */
  need(command: string, names?: readonly string[], enclave?: string): void {
    this.permission = { command, names, enclave };
  }

  errorContext(): ErrorContext {
    return { commandPath: this.path, permission: this.permission, endpoints: this.#client?.transport.endpoints };
  }

  close(): void {
    this.#client?.close();
  }
}

/** The Environment section of client command help. */
function envHelp(enclave: boolean): string {
  return [
    '',
    'Environment:',
    `  MINIO_KMS_SERVER     server endpoints, comma-separated (default ${DEFAULT_SERVER})`,
    '  MINIO_KMS_API_KEY    default for -a/--api-key',
    ...(enclave ? ['  MINIO_KMS_ENCLAVE    default for -e/--enclave'] : []),
    '  ~/.minkms/certs/CAs  extra trusted CA certificates (PEM files), besides the system store',
    '  SSL_CERT_FILE        the system CA bundle to trust (default: /etc/ssl/certs/ca-certificates.crt or the like)',
  ].join('\n');
}

export interface ClientCommandSpec {
  description: string;
  /** Adds `-e/--enclave`. */
  enclave: boolean;
  /** Example command lines (without `$`). */
  examples: readonly string[];
}

/**
 * Declares a client command with the common flags, help examples and the environment section.
 * Add arguments and options, then call {@link runs}.
 */
export function clientCommand(parent: Command, name: string, spec: ClientCommandSpec): Command {
  const cmd = parent.command(name).description(spec.description);
  cmd.addOption(new Option('-a, --api-key <KEY>', 'API key (k1:… / k2:…, or KES kes:v1:…) to authenticate with').env('MINIO_KMS_API_KEY'));
  cmd.addOption(new Option('-k, --insecure', 'do not verify the server certificate'));
  cmd.addOption(new Option('--ca <FILE|DIR>', 'also trust the CA certificates (PEM) in FILE or DIR'));
  if (spec.enclave) cmd.addOption(new Option('-e, --enclave <NAME>', 'enclave to operate in').env('MINIO_KMS_ENCLAVE'));
  cmd.addOption(
    new Option('--timeout <DURATION>', 'give up after DURATION, every server tried (e.g. 500ms, 10s, 1m; default 30s)').argParser(
      parseTimeoutArg,
    ),
  );
  cmd.addOption(new Option('--json', 'print JSON'));
  addExamples(cmd, spec.examples, envHelp(spec.enclave));
  return cmd;
}

/** Appends an Examples section (and optional extra text) to a command's help. */
export function addExamples(cmd: Command, examples: readonly string[], extra = ''): Command {
  return cmd.addHelpText('after', `\nExamples:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n${extra}`);
}

/** Sets the action of a client command: runs `fn` with a {@link Context}, explains failures. */
export function runs<A extends unknown[]>(cmd: Command, fn: (ctx: Context, ...args: A) => Promise<void>): Command {
  return cmd.action(async (...args: unknown[]) => {
    const ctx = new Context(cmd);
    // commander passes the declared arguments first (strings, or string[] for a variadic one).
    const positional = args.slice(0, cmd.registeredArguments.length) as A;
    try {
      await fn(ctx, ...positional);
    } catch (err) {
      throw explainError(err, ctx.errorContext());
    } finally {
      ctx.close();
    }
  });
}

/** Reads every page of a LIST command. */
export async function listAll<T>(fetch: (continueAt: string) => Promise<{ items: T[]; continueAt: string }>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of KmsClient.pages(fetch)) out.push(item);
  return out;
}
