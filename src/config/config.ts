/**
 * The server configuration file: YAML, `version: v1`. Parsed into a typed object and validated
 * at start; every error names the key's path (`tls.certs[0].cert: …`) and unknown keys are
 * rejected, so that a typo never silently falls back to a default.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { isIdentity } from '../identity/identity.js';

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

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Config {
  version: 'v1';
  admin: { identity?: string };
  tls: { certs: TlsCertPair[]; ca?: string };
  /** Heartbeat interval in milliseconds (0 = automatic). */
  heartbeat: number;
  hsm: { minkms?: MinkmsHsmConfig };
  log: { level: LogLevel };
  /** Audit log file (append-only, hash-chained); none = no audit log. */
  audit: { file?: string };
  /**
   * Whether /v1/health/metrics needs a client certificate, and which identities (h1:…) may scrape
   * besides SysAdmins (e.g. a Prometheus identity with no other rights).
   */
  metrics: { auth: boolean; identities: string[] };
  limits: { maxBody: number; maxFrames: number; bodyTimeout: number };
  store: StoreConfig;
}

export interface EtcdConfig {
  endpoints: string[];
  prefix: string;
  username?: string;
  password?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  /** Bound of every store operation, ms. */
  timeout: number;
}

export type StoreConfig = { backend: 'sqlite' } | { backend: 'etcd'; etcd: EtcdConfig };

export const DEFAULT_LIMITS = { maxBody: 16 << 20, maxFrames: 10_000, bodyTimeout: 30_000 };

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const EMPTY_CONFIG: Config = {
  version: 'v1',
  admin: {},
  tls: { certs: [] },
  heartbeat: 0,
  hsm: {},
  log: { level: 'info' },
  audit: {},
  metrics: { auth: true, identities: [] },
  limits: DEFAULT_LIMITS,
  store: { backend: 'sqlite' },
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
 * Parses Go-style durations like `500ms`, `1s`, `1m30s` into milliseconds. A unit is required:
 * a bare number is refused rather than guessed, because readers disagree on it (`heartbeat: 500`
 * silently meant 500 seconds here, while the heartbeat is tuned in milliseconds). Only `0` needs
 * no unit: it is the same in every unit.
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
  return total;
}

/** Validates a parsed YAML document. Relative file paths are resolved against `baseDir`. */
export function validateConfig(doc: unknown, baseDir: string): Config {
  const root = object(doc, '', ['version', 'admin', 'tls', 'heartbeat', 'hsm', 'log', 'audit', 'metrics', 'limits', 'store']);
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

  const hsm = object(root.hsm, 'hsm', ['minio']);
  const minio = object(hsm.minio, 'hsm.minio', ['minkms']);
  let minkms: MinkmsHsmConfig | undefined;
  if (minio.minkms !== undefined) {
    const m = object(minio.minkms, 'hsm.minio.minkms', ['server', 'enclave', 'key', 'auth', 'tls']);
    const auth = object(m.auth, 'hsm.minio.minkms.auth', ['key']);
    const mtls = object(m.tls, 'hsm.minio.minkms.tls', ['ca', 'insecure']);
    if (mtls.insecure !== undefined && typeof mtls.insecure !== 'boolean') fail('hsm.minio.minkms.tls.insecure', 'must be true or false');
    minkms = {
      server: strList(m.server, 'hsm.minio.minkms.server'),
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

  const limits = object(root.limits, 'limits', ['max_body', 'max_frames', 'body_timeout']);
  const maxBody = limits.max_body === undefined ? DEFAULT_LIMITS.maxBody : parseSize(limits.max_body, 'limits.max_body');
  const maxFrames = limits.max_frames === undefined ? DEFAULT_LIMITS.maxFrames : positiveInt(limits.max_frames, 'limits.max_frames');
  const bodyTimeout =
    limits.body_timeout === undefined ? DEFAULT_LIMITS.bodyTimeout : parseDuration(limits.body_timeout, 'limits.body_timeout');

  const store = object(root.store, 'store', ['backend', 'etcd']);
  const backend = str(store.backend, 'store.backend') ?? 'sqlite';
  if (backend !== 'sqlite' && backend !== 'etcd') fail('store.backend', `unknown backend '${backend}' (available: sqlite, etcd)`);
  let storeConfig: StoreConfig = { backend: 'sqlite' };
  if (backend === 'etcd') {
    const e = object(store.etcd, 'store.etcd', ['endpoints', 'prefix', 'username', 'password', 'tls', 'timeout']);
    const endpoints = strList(e.endpoints, 'store.etcd.endpoints');
    endpoints.forEach((ep, i) => {
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
    storeConfig = {
      backend: 'etcd',
      etcd: {
        endpoints,
        prefix: str(e.prefix, 'store.etcd.prefix') ?? '/minkms/',
        username,
        password,
        tls: etcdTls,
        timeout: e.timeout === undefined ? 5000 : parseDuration(e.timeout, 'store.etcd.timeout'),
      },
    };
  } else if (store.etcd !== undefined) {
    fail('store.etcd', "only used with 'backend: etcd'");
  }

  return {
    version: 'v1',
    admin: identity ? { identity } : {},
    tls: { certs, ca: file(str(tls.ca, 'tls.ca')) },
    heartbeat: root.heartbeat === undefined ? 0 : parseDuration(root.heartbeat, 'heartbeat'),
    hsm: minkms ? { minkms } : {},
    log: { level: level as LogLevel },
    audit: { file: file(str(audit.file, 'audit.file')) },
    metrics: { auth: metrics.auth !== false, identities: [...new Set(scrapers)] },
    limits: { maxBody, maxFrames, bodyTimeout },
    store: storeConfig,
  };
}

function positiveInt(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(path, 'must be a positive integer');
  return v;
}

/** Sizes like `16MiB`, `512KiB`, `1GiB` or a number of bytes. */
function parseSize(v: unknown, path: string): number {
  if (typeof v === 'number') return positiveInt(v, path);
  const m = typeof v === 'string' ? /^(\d+)\s*(B|KiB|MiB|GiB)?$/.exec(v.trim()) : null;
  if (!m) fail(path, `invalid size '${String(v)}' (examples: 16MiB, 512KiB, 1048576)`);
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1 << 20, GiB: 1 << 30 }[(m[2] ?? 'B') as 'B' | 'KiB' | 'MiB' | 'GiB'];
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
