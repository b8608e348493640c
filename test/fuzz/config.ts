/**
 * Fuzz targets of the configuration loader (`src/config/config.ts`).
 *
 * Properties, for any document (`validateConfig`: near-valid configurations with one field
 * replaced by any value, unknown keys, dropped keys; arbitrary values) and any file content
 * (`loadConfig`: random text, YAML-shaped text, the documented example with character edits,
 * YAML oddities — aliases, tags, merge keys, several documents, `__proto__`):
 * - the result is a `Config` or a `ConfigError` (exactly that class), never anything else;
 * - an error names where it is (`path: …`, or the file), and never repeats a secret of the
 *   document (etcd password, the password in an endpoint URL, the external KMS's API key);
 * - an accepted configuration is usable as typed: sizes and frame counts are positive safe
 *   integers, every duration is a finite number of ms between 0 and 2^31-1 (Node's timer limit:
 *   a longer one fires after 1 ms), file paths are absolute, the identity is an identity, the
 *   log level and store backend are known ones.
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, validateConfig, type Config } from '../../src/config/config.js';
import { isIdentity } from '../../src/identity/identity.js';
import { attempt, check, expectErrorClass, show, target, type FuzzTarget, type Outcomes } from '../helpers/fuzz.js';
import { mutateText, textMutationArb, unicodeChar } from './mutate.js';

/** Largest delay Node's timers honour (a larger one is replaced by 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const BASE = '/etc/minkms';

/** Secrets planted in generated documents: an error message must never contain them. */
const SECRET_PASSWORD = 'S3cretPassw0rd';
const SECRET_URL_PASSWORD = 'UrlSecr3t';
const SECRET_API_KEY = 'k1:J8uKqnK7mGawGvOXqUbDqctpbZCjWzfeBkRb27L0FKU';
const SECRETS = [SECRET_PASSWORD, SECRET_URL_PASSWORD, SECRET_API_KEY];

// ---------------------------------------------------------------------------------------------
// Documents

const durationArb = fc.oneof(
  fc.constantFrom('500ms', '1s', '1m30s', '0', '0s', '1h', '2.5s', '', 's', '1x', '-1s', '9999999h', '1e3ms', ' 1s', '1s ', '1.s'),
  fc.stringMatching(/^(\d{1,6}(\.\d{1,3})?(ms|s|m|h)){1,3}$/),
  fc.oneof(fc.nat(), fc.double(), fc.constantFrom(Infinity, -1, 1e300, 2 ** 31, 0.5)),
);
const sizeArb = fc.oneof(
  fc.constantFrom('16MiB', '512KiB', '1GiB', '0', '0B', '1', '10 potatoes', ' 1MiB', '1 MiB', '99999999999999999999999', '4096GiB'),
  fc.stringMatching(/^\d{1,20}\s?(B|KiB|MiB|GiB)?$/),
  fc.oneof(fc.integer({ min: -2, max: 1 << 30 }), fc.double(), fc.constantFrom(1e23, 2 ** 53, 2 ** 53 + 2)),
);
const identityArb = fc.constantFrom(
  'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw',
  'h1:short',
  'k1:abc',
  '',
  'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhW',
);
const pathArb = fc.constantFrom('a.crt', '/etc/x.key', './rel/x', '', ' ', '../../up');
const endpointArb = fc.oneof(
  fc.constantFrom(
    'http://127.0.0.1:2379',
    'https://etcd0:2379',
    `http://minkms:${SECRET_URL_PASSWORD}@etcd0:2379`,
    `https://u:${SECRET_URL_PASSWORD}@etcd0:2379/path`,
    `etcd0:2379`,
    `ftp://u:${SECRET_URL_PASSWORD}@x`,
  ),
  // Not fc.webUrl(): building it costs ~2 s of CPU per process.
  fc
    .tuple(
      fc.constantFrom('http', 'https', 'unix', ''),
      fc.constantFrom('', 'u@', 'u:p@'),
      fc.constantFrom('etcd', '[::1]', '127.0.0.1', ''),
      fc.constantFrom('', ':2379', ':0', ':99999', ':x'),
      fc.constantFrom('', '/', '/v3', '?a=b', '#f'),
    )
    .map(([scheme, user, host, port, rest]) => `${scheme}${scheme ? '://' : ''}${user}${host}${port}${rest}`),
);

/** A configuration close to valid: every section may be present, each value mostly plausible. */
const nearValidArb = fc.record(
  {
    version: fc.constantFrom('v1', 'v1', 'v1', 'v2', 1),
    admin: fc.record({ identity: identityArb }, { requiredKeys: [] }),
    tls: fc.record(
      { certs: fc.array(fc.record({ key: pathArb, cert: pathArb }, { requiredKeys: [] }), { maxLength: 2 }), ca: pathArb },
      { requiredKeys: [] },
    ),
    heartbeat: durationArb,
    hsm: fc.record({
      minio: fc.record({
        minkms: fc.record(
          {
            server: fc.oneof(fc.constant('kms0:7373'), fc.array(fc.constantFrom('kms0:7373', 'kms1:7373', ''), { maxLength: 3 })),
            enclave: fc.constantFrom('e', ''),
            key: fc.constantFrom('k'),
            auth: fc.record({ key: fc.constantFrom(SECRET_API_KEY) }),
            tls: fc.record({ ca: pathArb, insecure: fc.oneof(fc.boolean(), fc.constantFrom('yes', 1)) }, { requiredKeys: [] }),
          },
          { requiredKeys: ['server', 'enclave', 'key', 'auth'] },
        ),
      }),
    }),
    log: fc.record({ level: fc.constantFrom('debug', 'info', 'warn', 'error', 'loud', 'INFO') }),
    audit: fc.record({ file: pathArb }),
    metrics: fc.record({ auth: fc.oneof(fc.boolean(), fc.constantFrom('false', 0)) }),
    limits: fc.record(
      {
        max_body: sizeArb,
        max_frames: fc.oneof(fc.integer({ min: -1, max: 20000 }), fc.constantFrom(1e300, 2.5, '10')),
        body_timeout: durationArb,
      },
      { requiredKeys: [] },
    ),
    store: fc.oneof(
      fc.constant({ backend: 'sqlite' }),
      fc.record(
        {
          backend: fc.constantFrom('etcd', 'etcd', 'postgres'),
          etcd: fc.record(
            {
              endpoints: fc.oneof(endpointArb, fc.array(endpointArb, { minLength: 1, maxLength: 3 })),
              prefix: fc.constantFrom('/minkms/', ''),
              username: fc.constantFrom('minkms'),
              password: fc.constantFrom(SECRET_PASSWORD),
              tls: fc.record({ ca: pathArb, cert: pathArb, key: pathArb }, { requiredKeys: [] }),
              timeout: durationArb,
            },
            { requiredKeys: ['endpoints'] },
          ),
        },
        { requiredKeys: ['backend'] },
      ),
    ),
  },
  { requiredKeys: ['version'] },
);

type Edit =
  { kind: 'replace'; pick: number; value: unknown } | { kind: 'unknown-key'; pick: number; key: string } | { kind: 'drop'; pick: number };

const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({
    kind: fc.constant('replace' as const),
    pick: fc.nat(),
    value: fc.anything({ maxDepth: 2, withNullPrototype: true, withMap: true, withDate: true }),
  }),
  fc.record({
    kind: fc.constant('unknown-key' as const),
    pick: fc.nat(),
    key: fc.constantFrom('__proto__', 'constructor', 'toString', 'Version', 'tsl', ''),
  }),
  fc.record({ kind: fc.constant('drop' as const), pick: fc.nat() }),
);

/** Every object/array node of a document (to pick one for an edit). */
function nodes(doc: unknown, out: Array<Record<string, unknown>> = []): Array<Record<string, unknown>> {
  if (doc !== null && typeof doc === 'object' && !(doc instanceof Date)) {
    out.push(doc as Record<string, unknown>);
    for (const v of Object.values(doc)) nodes(v, out);
  }
  return out;
}

function applyEdit(doc: Record<string, unknown>, e: Edit): void {
  const all = nodes(doc);
  const node = all[e.pick % all.length]!;
  const keys = Object.keys(node);
  if (e.kind === 'unknown-key') {
    // Mappings only: a YAML sequence is a plain array, never one with named keys (an array
    // with an own `constructor` breaks Array.prototype.map — not a document YAML can give).
    if (!Array.isArray(node)) Object.defineProperty(node, e.key, { value: 1, enumerable: true, writable: true, configurable: true });
  } else if (keys.length > 0) {
    const key = keys[e.pick % keys.length]!;
    if (e.kind === 'replace') node[key] = e.value;
    else delete node[key];
  }
}

// ---------------------------------------------------------------------------------------------
// YAML text

/** The repository (this file runs as dist/test/fuzz/config.js). Not from helpers/server.ts: that one registers node:test hooks. */
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

let example = '';
function exampleYaml(): string {
  if (!example) example = readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8');
  return example;
}

const yamlOddities = fc.constantFrom(
  'version: v1\n__proto__:\n  version: v1\n',
  '__proto__:\n  version: v1\n',
  'version: v1\nlimits: &a\n  max_frames: 5\nstore:\n  <<: *a\n',
  'a: &a [*a]\n',
  'a: &a ["x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
  'version: !!binary aGVsbG8=\n',
  'version: !!js/function "function(){}"\n',
  'version: v1\n---\nversion: v2\n',
  '? [version]\n: v1\n',
  'version: v1\nlimits: {max_body: .inf}\n',
  'version: v1\nheartbeat: .nan\n',
  '\ufeffversion: v1\n',
  'version: "v1"\r\nlog: {level: debug}\r\n',
  `version: v1\nstore:\n  backend: etcd\n  etcd:\n    endpoints: [http://root:${SECRET_URL_PASSWORD}@etcd:2379/x]\n`,
  `version: v1\nstore:\n  backend: etcd\n  etcd:\n    endpoints: http://e:2379\n    password: ${SECRET_PASSWORD}\n`,
  'version: v1\ntls:\n  certs:\n    - key: [a]\n',
  '%YAML 1.1\n---\nversion: v1\n',
  'version: v1\nmetrics: {auth: no}\n',
);

const YAML_KEYS = [
  'version',
  'admin',
  'identity',
  'tls',
  'certs',
  'key',
  'cert',
  'ca',
  'heartbeat',
  'hsm',
  'minio',
  'minkms',
  'server',
  'enclave',
  'auth',
  'insecure',
  'log',
  'level',
  'audit',
  'file',
  'metrics',
  'limits',
  'max_body',
  'max_frames',
  'body_timeout',
  'store',
  'backend',
  'etcd',
  'endpoints',
  'prefix',
  'username',
  'password',
  'timeout',
];
const yamlLineArb = fc
  .tuple(
    fc.integer({ min: 0, max: 3 }),
    fc.oneof(fc.constantFrom(...YAML_KEYS), fc.string({ maxLength: 6 })),
    fc.oneof(
      fc.constantFrom(
        '',
        'v1',
        '1s',
        '16MiB',
        'true',
        '[a, b]',
        '{a: 1}',
        '&x 1',
        '*x',
        '|',
        '>',
        '- a',
        '"unterminated',
        "'q'",
        '~',
        'null',
        '0x1F',
        '1e3',
      ),
      fc.string({ maxLength: 10 }),
    ),
    fc.boolean(),
  )
  .map(([indent, key, value, dash]) => `${'  '.repeat(indent)}${dash ? '- ' : ''}${key}: ${value}`);
const yamlishArb = fc.array(yamlLineArb, { maxLength: 12 }).map((lines) => lines.join('\n') + '\n');

const textArb = fc.oneof(
  { weight: 1, arbitrary: fc.string({ unit: unicodeChar, maxLength: 200 }) },
  { weight: 3, arbitrary: yamlishArb },
  { weight: 2, arbitrary: yamlOddities },
  {
    weight: 3,
    arbitrary: fc
      .array(textMutationArb(fc.constantFrom(':', ' ', '\n', '-', '[', '{', '"', "'", '#', '&', '*', '!', '|', 'a', '0', '\t')), {
        minLength: 1,
        maxLength: 5,
      })
      .map((ms) => ({ mutations: ms })),
  },
);

// ---------------------------------------------------------------------------------------------
// Checks

function checkError(err: unknown, outcomes: Outcomes): void {
  outcomes.add(expectErrorClass(err, ConfigError));
  const msg = (err as ConfigError).message;
  check(msg.length > 0, 'empty ConfigError message');
  for (const s of SECRETS) check(!msg.includes(s), () => `ConfigError repeats a secret of the document: ${show(msg)}`);
}

const validDuration = (ms: number, what: string) =>
  check(Number.isFinite(ms) && ms >= 0 && ms <= MAX_TIMER_MS, () => `${what} accepted as ${ms} ms (want a finite 0 … 2^31-1)`);

function checkConfig(c: Config, outcomes: Outcomes): void {
  outcomes.add('ok');
  check(c.version === 'v1', 'version');
  check(Number.isSafeInteger(c.limits.maxBody) && c.limits.maxBody > 0, () => `limits.max_body accepted as ${c.limits.maxBody}`);
  check(Number.isSafeInteger(c.limits.maxFrames) && c.limits.maxFrames > 0, () => `limits.max_frames accepted as ${c.limits.maxFrames}`);
  validDuration(c.limits.bodyTimeout, 'limits.body_timeout');
  validDuration(c.heartbeat, 'heartbeat');
  if (c.store.backend === 'etcd') {
    validDuration(c.store.etcd.timeout, 'store.etcd.timeout');
    for (const e of c.store.etcd.endpoints) check(/^https?:\/\/[^/]+$/.test(e), () => `etcd endpoint ${show(e)} accepted`);
  } else {
    check(c.store.backend === 'sqlite', () => `store.backend ${show(c.store.backend)}`);
  }
  check(['debug', 'info', 'warn', 'error'].includes(c.log.level), () => `log.level ${show(c.log.level)}`);
  if (c.admin.identity !== undefined) check(isIdentity(c.admin.identity), () => `admin.identity ${show(c.admin.identity)}`);
  const files = [
    ...c.tls.certs.flatMap((p) => [p.key, p.cert]),
    c.tls.ca,
    c.audit.file,
    c.hsm.minkms?.ca,
    ...(c.store.backend === 'etcd' ? [c.store.etcd.tls?.ca, c.store.etcd.tls?.cert, c.store.etcd.tls?.key] : []),
  ];
  for (const f of files) if (f !== undefined) check(typeof f === 'string' && isAbsolute(f), () => `file path ${show(f)} is not absolute`);
  check(typeof c.metrics.auth === 'boolean', 'metrics.auth');
}

function checkValidate(doc: unknown, outcomes: Outcomes): void {
  const r = attempt(() => validateConfig(doc, BASE));
  if (r.ok) checkConfig(r.value, outcomes);
  else checkError(r.error, outcomes);
}

let dir = '';
let fileNo = 0;

export const configTargets: FuzzTarget[] = [
  target({
    name: 'config.validate.near-valid',
    arbitrary: fc.record({ doc: nearValidArb, edits: fc.array(editArb, { maxLength: 3 }) }),
    run: ({ doc, edits }, outcomes) => {
      const copy = structuredClone(doc) as Record<string, unknown>;
      for (const e of edits) applyEdit(copy, e);
      checkValidate(copy, outcomes);
    },
    quickRuns: 1200,
    weight: 12,
  }),

  target({
    name: 'config.validate.any',
    arbitrary: fc.oneof(
      fc.anything({ maxDepth: 3, withNullPrototype: true, withMap: true, withSet: true, withDate: true, withBigInt: true }),
      fc.dictionary(fc.constantFrom(...YAML_KEYS), fc.anything({ maxDepth: 2 }), { maxKeys: 4 }).map((d) => ({ version: 'v1', ...d })),
    ),
    run: (doc, outcomes) => checkValidate(doc, outcomes),
    quickRuns: 1000,
    weight: 10,
  }),

  target({
    name: 'config.load.text',
    arbitrary: textArb,
    setup: async () => {
      dir ||= mkdtempSync(join(tmpdir(), 'minkms-fuzz-config-'));
      // The YAML parser reports odd input (unknown tags, collection keys) as process warnings:
      // expected here by the thousand, and noise in the output. (This process only fuzzes.)
      process.removeAllListeners('warning');
    },
    teardown: async () => {
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = '';
    },
    run: (input, outcomes) => {
      const text = typeof input === 'string' ? input : mutateText(exampleYaml(), input.mutations);
      const file = join(dir, `c${fileNo++ % 16}.yaml`);
      writeFileSync(file, text);
      const r = attempt(() => loadConfig(file));
      if (r.ok) {
        checkConfig(r.value, outcomes);
        return;
      }
      checkError(r.error, outcomes);
      const msg = (r.error as Error).message;
      check(msg.startsWith(`config file ${file}`), () => `error does not name the file: ${show(msg)}`);
    },
    quickRuns: 600,
    weight: 6,
  }),
];
