/**
 * The server configuration file: YAML, `version: v1`. Parsed into a typed object and validated
 * at start; every error names the key's path (`tls.certs[0].cert: …`) and unknown keys are
 * rejected, so that a typo never silently falls back to a default.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { isIdentity } from '../identity/identity.js';
import { hideUserinfo, redactCredentials } from './redact.js';

export interface TlsCertPair {
  key: string;
  cert: string;
}

export interface MinkmsHsmConfig {
  server: string[];
  enclave: string;
  key: string;
  apiKey: string;
  ca?: string;
  insecure: boolean;
}

/**
 * A secret of the configuration (the PKCS#11 PIN given inline): shows as `[REDACTED]` in logs,
 * JSON, string conversion and `util.inspect`, so that dumping a Config never reveals it.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[REDACTED]';
  }
  toJSON(): string {
    return '[REDACTED]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'Secret([REDACTED])';
  }
}

/** Where the PKCS#11 user PIN comes from: inline (`value`), an environment variable, or a file (read at each login). */
export type Pkcs11PinSource = { value: Secret } | { env: string } | { file: string };

/** How the REK is sealed: `auto` = AES-GCM when the token offers it, else AES-CBC-PAD + MAC (see docs/hsm.md). */
export type Pkcs11Mechanism = 'auto' | 'aes-gcm' | 'aes-cbc-pad-hmac';

/** `hsm.pkcs11`: a key on a PKCS#11 token (see src/hsm/pkcs11.ts and docs/hsm.md). */
export interface Pkcs11HsmConfig {
  /** Path of the vendor's PKCS#11 library (`.so`). */
  module: string;
  /** Exactly one of label, serial, slot. */
  token: { label?: string; serial?: string; slot?: number };
  pin: Pkcs11PinSource;
  /** Exactly one of label, id (lowercase hex). */
  key: { label?: string; id?: string };
  mechanism: Pkcs11Mechanism;
  /** Bound of one call into the module, ms. */
  timeout: number;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Config {
  version: 'v1';
  admin: { identity?: string };
  tls: { certs: TlsCertPair[]; ca?: string };
  /** Heartbeat interval in milliseconds (0 = automatic). */
  heartbeat: number;
  hsm: {
    minkms?: MinkmsHsmConfig;
    pkcs11?: Pkcs11HsmConfig;
    /** Keep the sealed entries of HSMs that no node has configured any more (default: remove them). */
    keepUnconfiguredEntries: boolean;
  };
  log: { level: LogLevel };
  /** Audit log file (append-only, hash-chained); none = no audit log. */
  audit: { file?: string };
  /**
   * Who may scrape /v1/health/metrics: with `auth`, SysAdmins and the `identities` listed (a
   * scraper needs no other right); without, anyone.
   */
  metrics: { auth: boolean; identities: string[] };
  limits: Limits;
  store: StoreConfig;
  /** The KES HTTP API on the same listener (docs/kes.md): off by default; its requests act in `enclave`. */
  kes: { enabled: boolean; enclave: string };
}

export interface EtcdConfig {
  endpoints: string[];
  prefix: string;
  username?: string;
  password?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  /** Bound of every store operation, ms. */
  timeout: number;
  /** Staleness bound of the state a node serves from memory, ms (store/etcd.ts, Freshness). */
  maxStaleness: number;
}

export type StoreConfig = { backend: 'sqlite' } | { backend: 'etcd'; etcd: EtcdConfig };

/** What one node accepts; docs/security.md explains each bound. */
export interface Limits {
  /** Largest request body of the command channel, bytes. */
  maxBody: number;
  /** Most command frames in one request. */
  maxFrames: number;
  /** Time to receive a request body, ms. */
  bodyTimeout: number;
  /** Open connections (TLS sockets) per node; more are refused. */
  maxConnections: number;
  /** Concurrent HTTP/2 streams per connection. */
  maxStreams: number;
  /** Request bytes buffered at once, per connection, per identity (all its connections) and per node. */
  maxBufferedPerConnection: number;
  maxBufferedPerIdentity: number;
  maxBuffered: number;
  /** A connection with no request for this long is closed, ms. */
  idleTimeout: number;
  /** TLS handshake and (HTTP/1.1) request headers must arrive within this, ms. */
  handshakeTimeout: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBody: 16 << 20,
  maxFrames: 10_000,
  bodyTimeout: 30_000,
  maxConnections: 4096,
  maxStreams: 128,
  maxBufferedPerConnection: 64 << 20,
  maxBufferedPerIdentity: 64 << 20,
  maxBuffered: 256 << 20,
  idleTimeout: 120_000,
  handshakeTimeout: 10_000,
};

export class ConfigError extends Error {
  /** Credentials in URLs are redacted: configuration errors are printed and logged. */
  constructor(message: string) {
    super(redactCredentials(message));
    this.name = 'ConfigError';
  }
}

export const EMPTY_CONFIG: Config = {
  version: 'v1',
  admin: {},
  tls: { certs: [] },
  heartbeat: 0,
  hsm: { keepUnconfiguredEntries: false },
  log: { level: 'info' },
  audit: {},
  metrics: { auth: true, identities: [] },
  limits: DEFAULT_LIMITS,
  store: { backend: 'sqlite' },
  kes: { enabled: false, enclave: '' },
};

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(path: string, msg: string): never {
  throw new ConfigError(path ? `${path}: ${msg}` : msg);
}

function object(v: unknown, path: string, allowed: readonly string[]): Obj {
  if (v === null || v === undefined) return {};
  if (!isObj(v)) fail(path, 'must be a mapping');
  for (const k of Object.keys(v)) if (!allowed.includes(k)) fail(path ? `${path}.${k}` : k, `unknown key (allowed: ${allowed.join(', ')})`);
  return v;
}

function str(v: unknown, path: string, required = false): string | undefined {
  if (v === undefined || v === null) {
    if (required) fail(path, 'is required');
    return undefined;
  }
  if (typeof v !== 'string' || v.trim() === '') fail(path, 'must be a non-empty string');
  return v;
}

function strList(v: unknown, path: string): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || v.length === 0) fail(path, 'must be a non-empty list of strings');
  return v.map((s, i) => str(s, `${path}[${i}]`, true)!);
}

/**
/**
 * Longest duration accepted, in ms: Node's timers wait at most 2^31-1 ms (about 24.8 days); a
 * longer delay — or Infinity — fires after 1 ms, so `heartbeat: 1e300` would beat every ms.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

function bounded(ms: number, v: unknown, path: string): number {
  if (!(ms <= MAX_DURATION_MS)) fail(path, `duration '${String(v)}' is too long (at most 2^31-1 ms, about 24.8 days)`);
  return ms;
}

/**
 * Parses Go-style durations like `500ms`, `1s`, `1m30s` into milliseconds (at most
 * {@link MAX_DURATION_MS}). A unit is required: a bare number is refused rather than guessed,
 * because readers disagree on it (`heartbeat: 500` silently meant 500 seconds here, while the
 * heartbeat is tuned in milliseconds). Only `0` needs no unit: it is the same in every unit.
 */
export function parseDuration(v: unknown, path: string): number {
  if (typeof v === 'number' && !(v >= 0)) fail(path, 'must be a duration such as 500ms or 1s, not negative');
  const bare = typeof v === 'number' ? String(v) : typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v) ? v.trim() : undefined;
  if (bare !== undefined) {
    if (Number(bare) === 0) return 0;
    fail(path, `'${bare}' has no unit: write ${bare}ms for milliseconds or ${bare}s for seconds (units: ms, s, m, h)`);
  }
  if (typeof v !== 'string') fail(path, 'must be a duration such as 500ms or 1s');
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(v)) !== null) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    pos = re.lastIndex;
  }
  if (pos !== v.length || pos === 0) fail(path, `invalid duration '${v}' (examples: 500ms, 1s, 1m30s)`);
  return bounded(total, v, path);
}

/** Validates a parsed YAML document. Relative file paths are resolved against `baseDir`. */
export function validateConfig(doc: unknown, baseDir: string): Config {
  const root = object(doc, '', ['version', 'admin', 'tls', 'heartbeat', 'hsm', 'log', 'audit', 'metrics', 'limits', 'store', 'kes']);
  if (root.version !== 'v1') fail('version', `must be 'v1'`);
  const file = (p: string | undefined) => (p === undefined ? undefined : isAbsolute(p) ? p : resolve(baseDir, p));

  const admin = object(root.admin, 'admin', ['identity']);
  const identity = str(admin.identity, 'admin.identity');
  if (identity !== undefined && !isIdentity(identity))
    fail('admin.identity', 'must be an identity of the form h1:… (see `minkms identity`)');

  const tls = object(root.tls, 'tls', ['certs', 'ca', 'key', 'cert']);
  const certs: TlsCertPair[] = [];
  if (tls.certs !== undefined) {
    if (!Array.isArray(tls.certs)) fail('tls.certs', 'must be a list of {key, cert}');
    tls.certs.forEach((pair, i) => {
      const p = object(pair, `tls.certs[${i}]`, ['key', 'cert']);
      certs.push({ key: file(str(p.key, `tls.certs[${i}].key`, true))!, cert: file(str(p.cert, `tls.certs[${i}].cert`, true))! });
    });
  }
  if (tls.key !== undefined || tls.cert !== undefined) {
    certs.push({ key: file(str(tls.key, 'tls.key', true))!, cert: file(str(tls.cert, 'tls.cert', true))! });
  }

  const hsm = object(root.hsm, 'hsm', ['minio', 'pkcs11', 'keep_unconfigured_entries']);
  if (hsm.keep_unconfigured_entries !== undefined && typeof hsm.keep_unconfigured_entries !== 'boolean') {
    fail('hsm.keep_unconfigured_entries', 'must be true or false');
  }
  const pkcs11 = hsm.pkcs11 === undefined ? undefined : validatePkcs11(hsm.pkcs11, file);
  const minio = object(hsm.minio, 'hsm.minio', ['minkms']);
  let minkms: MinkmsHsmConfig | undefined;
  if (minio.minkms !== undefined) {
    const m = object(minio.minkms, 'hsm.minio.minkms', ['server', 'enclave', 'key', 'auth', 'tls']);
    const auth = object(m.auth, 'hsm.minio.minkms.auth', ['key']);
    const mtls = object(m.tls, 'hsm.minio.minkms.tls', ['ca', 'insecure']);
    if (mtls.insecure !== undefined && typeof mtls.insecure !== 'boolean') fail('hsm.minio.minkms.tls.insecure', 'must be true or false');
    const servers = strList(m.server, 'hsm.minio.minkms.server');
    servers.forEach((url, i) => {
      // No endpoint has an `@` but one with credentials (any spelling): refused, shown without them.
      if (url.includes('@')) {
        fail(
          `hsm.minio.minkms.server[${i}]`,
          `must not contain credentials (the external KMS authenticates with auth.key), got '${hideUserinfo(url)}'`,
        );
      }
    });
    minkms = {
      server: servers,
      enclave: str(m.enclave, 'hsm.minio.minkms.enclave', true)!,
      key: str(m.key, 'hsm.minio.minkms.key', true)!,
      apiKey: str(auth.key, 'hsm.minio.minkms.auth.key', true)!,
      ca: file(str(mtls.ca, 'hsm.minio.minkms.tls.ca')),
      insecure: mtls.insecure === true,
    };
  }

  const log = object(root.log, 'log', ['level']);
  const level = str(log.level, 'log.level') ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(level)) fail('log.level', 'must be one of debug, info, warn, error');

  const audit = object(root.audit, 'audit', ['file']);
  const metrics = object(root.metrics, 'metrics', ['auth', 'identities']);
  if (metrics.auth !== undefined && typeof metrics.auth !== 'boolean') fail('metrics.auth', 'must be true or false');
  const scrapers =
    metrics.identities === undefined || (Array.isArray(metrics.identities) && metrics.identities.length === 0)
      ? []
      : strList(metrics.identities, 'metrics.identities');
  scrapers.forEach((id, i) => {
    if (/^(k[12]|hsm):/i.test(id))
      fail(
        `metrics.identities[${i}]`,
        'is an API or HSM key, not an identity: never put keys here; `minkms identity KEY` prints its identity (h1:…)',
      );
    if (!isIdentity(id))
      fail(`metrics.identities[${i}]`, `'${String(id).slice(0, 64)}' is not an identity of the form h1:… (see \`minkms identity\`)`);
  });

  const limits = object(root.limits, 'limits', [
    'max_body',
    'max_frames',
    'body_timeout',
    'max_connections',
    'max_streams',
    'max_buffered_per_connection',
    'max_buffered_per_identity',
    'max_buffered',
    'idle_timeout',
    'handshake_timeout',
  ]);
  const d = DEFAULT_LIMITS;
  const size = (k: string, def: number) => (limits[k] === undefined ? def : parseSize(limits[k], `limits.${k}`));
  const count = (k: string, def: number) => (limits[k] === undefined ? def : positiveInt(limits[k], `limits.${k}`));
  const duration = (k: string, def: number) => (limits[k] === undefined ? def : parseDuration(limits[k], `limits.${k}`));
  const maxBody = size('max_body', d.maxBody);
  const limitValues: Limits = {
    maxBody,
    maxFrames: count('max_frames', d.maxFrames),
    bodyTimeout: duration('body_timeout', d.bodyTimeout),
    maxConnections: count('max_connections', d.maxConnections),
    maxStreams: count('max_streams', d.maxStreams),
    // The buffer budgets grow with a larger max_body unless they are set.
    maxBufferedPerConnection: size('max_buffered_per_connection', Math.max(d.maxBufferedPerConnection, maxBody)),
    maxBufferedPerIdentity: size('max_buffered_per_identity', Math.max(d.maxBufferedPerIdentity, maxBody)),
    maxBuffered: size('max_buffered', Math.max(d.maxBuffered, 2 * maxBody)),
    idleTimeout: duration('idle_timeout', d.idleTimeout),
    handshakeTimeout: duration('handshake_timeout', d.handshakeTimeout),
  };
  if (limitValues.maxBuffered < limitValues.maxBody) fail('limits.max_buffered', 'must be at least limits.max_body');
  if (limitValues.maxBufferedPerConnection < limitValues.maxBody)
    fail('limits.max_buffered_per_connection', 'must be at least limits.max_body');
  if (limitValues.maxBufferedPerIdentity < limitValues.maxBody)
    fail('limits.max_buffered_per_identity', 'must be at least limits.max_body');

  const store = object(root.store, 'store', ['backend', 'etcd']);
  const backend = str(store.backend, 'store.backend') ?? 'sqlite';
  if (backend !== 'sqlite' && backend !== 'etcd') fail('store.backend', `unknown backend '${backend}' (available: sqlite, etcd)`);
  let storeConfig: StoreConfig = { backend: 'sqlite' };
  if (backend === 'etcd') {
    const e = object(store.etcd, 'store.etcd', ['endpoints', 'prefix', 'username', 'password', 'tls', 'timeout', 'max_staleness']);
    const endpoints = strList(e.endpoints, 'store.etcd.endpoints');
    endpoints.forEach((ep, i) => {
      if (ep.includes('@')) {
        fail(
          `store.etcd.endpoints[${i}]`,
          `must not contain credentials (use store.etcd.username and store.etcd.password), got '${hideUserinfo(ep)}'`,
        );
      }
      if (!/^https?:\/\/[^/]+$/.test(ep)) fail(`store.etcd.endpoints[${i}]`, `must be http(s)://host:port, got '${ep}'`);
    });
    const username = str(e.username, 'store.etcd.username');
    const password = str(e.password, 'store.etcd.password');
    if ((username === undefined) !== (password === undefined)) fail('store.etcd', 'give both username and password, or neither');
    const t = object(e.tls, 'store.etcd.tls', ['ca', 'cert', 'key']);
    const etcdTls =
      e.tls === undefined
        ? undefined
        : {
            ca: file(str(t.ca, 'store.etcd.tls.ca')),
            cert: file(str(t.cert, 'store.etcd.tls.cert')),
            key: file(str(t.key, 'store.etcd.tls.key')),
          };
    const maxStaleness = e.max_staleness === undefined ? 1000 : parseDuration(e.max_staleness, 'store.etcd.max_staleness');
    // Probed five times per bound: below 50 ms that is more load on etcd than it is worth.
    if (maxStaleness < 50) fail('store.etcd.max_staleness', 'must be at least 50ms');
    const timeout = e.timeout === undefined ? 5000 : parseDuration(e.timeout, 'store.etcd.timeout');
    if (timeout === 0) fail('store.etcd.timeout', 'must be more than 0');
    storeConfig = {
      backend: 'etcd',
      etcd: {
        endpoints,
        prefix: str(e.prefix, 'store.etcd.prefix') ?? '/minkms/',
        username,
        password,
        tls: etcdTls,
        timeout,
        maxStaleness,
      },
    };
  } else if (store.etcd !== undefined) {
    fail('store.etcd', "only used with 'backend: etcd'");
  }

  const kes = object(root.kes, 'kes', ['enabled', 'enclave']);
  if (kes.enabled !== undefined && typeof kes.enabled !== 'boolean') fail('kes.enabled', 'must be true or false');
  const kesEnclave = str(kes.enclave, 'kes.enclave') ?? '';
  if (kes.enabled === true && kesEnclave === '') fail('kes.enclave', 'is required with kes.enabled: the enclave KES requests act in');
  if (kesEnclave !== '' && !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(kesEnclave)) {
    fail('kes.enclave', 'must be an enclave name (1-128 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit)');
  }

  return {
    version: 'v1',
    admin: identity ? { identity } : {},
    tls: { certs, ca: file(str(tls.ca, 'tls.ca')) },
    heartbeat: root.heartbeat === undefined ? 0 : parseDuration(root.heartbeat, 'heartbeat'),
    hsm: {
      ...(minkms ? { minkms } : {}),
      ...(pkcs11 ? { pkcs11 } : {}),
      keepUnconfiguredEntries: hsm.keep_unconfigured_entries === true,
    },
    log: { level: level as LogLevel },
    audit: { file: file(str(audit.file, 'audit.file')) },
    metrics: { auth: metrics.auth !== false, identities: [...new Set(scrapers)] },
    limits: limitValues,
    store: storeConfig,
    kes: { enabled: kes.enabled === true, enclave: kesEnclave },
  };
}

/** One of the keys of `o` (a choice such as token: {label | serial | slot}); names the path when none or several are set. */
function oneOf(o: Obj, path: string, keys: readonly string[]): string {
  const set = keys.filter((k) => o[k] !== undefined);
  if (set.length !== 1) fail(path, `give exactly one of ${keys.join(', ')}`);
  return set[0]!;
}

/** Token and key labels: PKCS#11 labels are at most 32 bytes (UTF-8, blank-padded) on the token. */
function label(v: unknown, path: string, maxBytes: number): string {
  const s = str(v, path, true)!;
  if (Buffer.byteLength(s, 'utf8') > maxBytes) fail(path, `must be at most ${maxBytes} bytes`);
  if ([...s].some((c) => c < ' ' || c === '\u007f') || s !== s.trim())
    fail(path, 'must not contain control characters or surrounding blanks');
  return s;
}

/** Validates an `hsm.pkcs11` section on its own (the CLI builds one from flags); relative paths resolve against `baseDir`. */
export function parsePkcs11Config(section: unknown, baseDir: string): Pkcs11HsmConfig {
  return validatePkcs11(section, (p) => (p === undefined ? undefined : isAbsolute(p) ? p : resolve(baseDir, p)));
}

function validatePkcs11(v: unknown, file: (p: string | undefined) => string | undefined): Pkcs11HsmConfig {
  const P = 'hsm.pkcs11';
  const c = object(v, P, ['module', 'token', 'pin', 'key', 'mechanism', 'timeout']);
  const module = file(str(c.module, `${P}.module`, true))!;

  // `token: NAME` is short for `token: {label: NAME}`; likewise `key: NAME`.
  const t = typeof c.token === 'string' ? { label: c.token } : object(c.token, `${P}.token`, ['label', 'serial', 'slot']);
  if (c.token === undefined) fail(`${P}.token`, 'is required (label, serial or slot)');
  const token: Pkcs11HsmConfig['token'] = {};
  switch (oneOf(t, `${P}.token`, ['label', 'serial', 'slot'])) {
    case 'label':
      token.label = label(t.label, `${P}.token.label`, 32);
      break;
    case 'serial':
      if (typeof t.serial === 'number') fail(`${P}.token.serial`, `must be a quoted string (YAML reads an unquoted number as a number)`);
      token.serial = label(t.serial, `${P}.token.serial`, 16);
      break;
    default:
      if (typeof t.slot !== 'number' || !Number.isInteger(t.slot) || t.slot < 0)
        fail(`${P}.token.slot`, 'must be a slot number (0 or more)');
      token.slot = t.slot;
  }

  // The PIN: `pin: "…"` is short for `pin: {value: "…"}`. A YAML number (pin: 0123) would lose its
  // leading zeros, so it is refused rather than guessed.
  let pin: Pkcs11PinSource;
  if (typeof c.pin === 'number') fail(`${P}.pin`, 'must be a quoted string (YAML reads an unquoted number such as 0123 as 123)');
  if (typeof c.pin === 'string') {
    pin = { value: new Secret(str(c.pin, `${P}.pin`, true)!) };
  } else {
    if (c.pin === undefined) fail(`${P}.pin`, 'is required (value, env or file)');
    const p = object(c.pin, `${P}.pin`, ['value', 'env', 'file']);
    const which = oneOf(p, `${P}.pin`, ['value', 'env', 'file']);
    if (which === 'value') {
      if (typeof p.value === 'number')
        fail(`${P}.pin.value`, 'must be a quoted string (YAML reads an unquoted number such as 0123 as 123)');
      pin = { value: new Secret(str(p.value, `${P}.pin.value`, true)!) };
    } else if (which === 'env') {
      const name = str(p.env, `${P}.pin.env`, true)!;
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) fail(`${P}.pin.env`, 'must be an environment variable name');
      pin = { env: name };
    } else {
      pin = { file: file(str(p.file, `${P}.pin.file`, true))! };
    }
  }

  const k = typeof c.key === 'string' ? { label: c.key } : object(c.key, `${P}.key`, ['label', 'id']);
  if (c.key === undefined) fail(`${P}.key`, 'is required (label or id)');
  const key: Pkcs11HsmConfig['key'] = {};
  if (oneOf(k, `${P}.key`, ['label', 'id']) === 'label') {
    key.label = label(k.label, `${P}.key.label`, 128);
  } else {
    if (typeof k.id === 'number') fail(`${P}.key.id`, `must be a quoted string (YAML reads 01 as the number 1)`);
    const id = str(k.id, `${P}.key.id`, true)!;
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(id)) fail(`${P}.key.id`, 'must be hex (the CKA_ID bytes, e.g. 6d696e6b6d73)');
    key.id = id.toLowerCase();
  }

  const mechanism = str(c.mechanism, `${P}.mechanism`) ?? 'auto';
  if (!['auto', 'aes-gcm', 'aes-cbc-pad-hmac'].includes(mechanism))
    fail(`${P}.mechanism`, 'must be one of auto, aes-gcm, aes-cbc-pad-hmac');
  const timeout = c.timeout === undefined ? 30_000 : parseDuration(c.timeout, `${P}.timeout`);
  if (timeout <= 0) fail(`${P}.timeout`, 'must be more than 0');
  return { module, token, pin, key, mechanism: mechanism as Pkcs11Mechanism, timeout };
}

function positiveInt(v: unknown, path: string): number {
  // Safe integers only: 1e300 is an "integer" to Number.isInteger, and no limit can use it.
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) fail(path, 'must be a positive integer');
  return v;
}

/** Sizes like `16MiB`, `512KiB`, `1GiB` or a number of bytes. */
function parseSize(v: unknown, path: string): number {
  if (typeof v === 'number') return positiveInt(v, path);
  const m = typeof v === 'string' ? /^(\d+)\s*(B|KiB|MiB|GiB)?$/.exec(v.trim()) : null;
  // Not String(v): an object without a prototype cannot be converted, and the error must be ours.
  const shown = typeof v === 'string' ? v : typeof v;
  if (!m) fail(path, `invalid size '${shown}' (examples: 16MiB, 512KiB, 1048576)`);
  const size = Number(m[1]) * { B: 1, KiB: 1024, MiB: 1 << 20, GiB: 1 << 30 }[(m[2] ?? 'B') as 'B' | 'KiB' | 'MiB' | 'GiB'];
  // '0' would refuse every body; a size beyond 2^53 is not a number of bytes any more.
  if (!Number.isSafeInteger(size) || size < 1) fail(path, `invalid size '${shown}': must be at least 1 byte and at most 2^53-1 bytes`);
  return size;
}

export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  try {
    return validateConfig(doc, dirname(resolve(path)));
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`config file ${path}: ${err.message}`);
    throw err;
  }
}
