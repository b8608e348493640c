/**
 * The authorization matrix: for every command of the command channel and every other HTTP route,
 * for every kind of caller and every kind of URL enclave, the answer the node gives — derived
 * from the rules the server itself runs, never written down by hand:
 *
 * - the **route rules** (server/routes.ts `apiRoutes`): each route's pre-body check is *run*
 *   against a model of the caller (a stand-in for the domain that knows the callers below);
 * - the **command table** (server/commands.ts `COMMAND_TABLE`): each command's `access` goes
 *   through the server's own `authorize`, with the caller's policy evaluated by the real policy
 *   matcher (kms/policy.ts), and its `restriction`, if any, is applied;
 * - the **command catalogue** (protocol/commands.ts): a command's scope decides which enclave it
 *   runs in (dispatch.ts: cluster commands ignore the URL's enclave; enclave commands need one);
 * - the **KES API** (kes/routes.ts, with `kes.enabled` and `kes.enclave` = this enclave): each
 *   route's pre-body check — KES's caller in the KES enclave and the command permission of the
 *   API on the name in the URL (kes/access.ts) — is run like the routes above. The KES API has
 *   no URL enclave (every request acts in `kes.enclave`), so its rows have no enclave columns.
 *
 * What a command answers once the caller passes every check depends on the command, not on the
 * caller (a single-node server answers CLUSTER:ADDNODE with 501, say): each {@link Probe} says
 * what it sends and what a permitted caller gets.
 *
 * test/api/authz-matrix.test.ts runs every cell against a real server process with real
 * identities, policies and service accounts; test/unit/authz-matrix-doc.test.ts checks that
 * docs/security.md shows exactly {@link renderMatrix}'s output (`node scripts/authz-matrix.mjs`
 * writes it). A route or command without a probe here fails both.
 */
import { ERRORS, KmsError, type ErrorCode } from '../errors.js';
import { COMMANDS, type Command } from '../protocol/commands.js';
import { isAllowed, grantsAny, normalizePolicy, type PolicyRules } from '../kms/policy.js';
import { PRIVILEGE, type Privilege } from '../kms/records.js';
import type { Principal } from '../kms/kms.js';
import { COMMAND_TABLE, authorize, type Entry } from './commands.js';
import { apiRoutes } from './routes.js';
import type { Route } from './http.js';
import { kesRoutes } from '../kes/routes.js';
import { kesApiOf, type KesApi } from '../kes/apis.js';

// ------------------------------------------------------------------------------ the callers

export type CallerId =
  'none' | 'unknown' | 'user' | 'user-allow' | 'user-deny' | 'sa-user' | 'sa-admin' | 'admin' | 'admin-other' | 'sysadmin';

/** What a caller is in one enclave. */
export interface Membership {
  readonly privilege: 'Admin' | 'User';
  readonly serviceAccount: boolean;
  /** The policy it acts with (a User's own, a service account's parent's). */
  readonly policy?: 'allow' | 'allow+deny';
}

export interface Caller {
  readonly id: CallerId;
  /** Column header in docs/security.md. */
  readonly short: string;
  readonly description: string;
  /** Presents a client certificate. */
  readonly certificate: boolean;
  readonly sysAdmin: boolean;
  /** Its records: in this enclave (`E`) and in the other one (`F`). */
  readonly in: { readonly E?: Membership; readonly F?: Membership };
}

export const CALLERS: readonly Caller[] = [
  { id: 'none', short: 'no cert', description: 'no client certificate', certificate: false, sysAdmin: false, in: {} },
  {
    id: 'unknown',
    short: 'unknown',
    description: 'a client certificate of no identity the node knows (a stranger)',
    certificate: true,
    sysAdmin: false,
    in: {},
  },
  {
    id: 'user',
    short: 'User',
    description: 'a User of this enclave without a policy',
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'User', serviceAccount: false } },
  },
  {
    id: 'user-allow',
    short: 'User allow',
    description: 'a User of this enclave whose policy allows every command on `*`',
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'User', serviceAccount: false, policy: 'allow' } },
  },
  {
    id: 'user-deny',
    short: 'User allow+deny',
    description: "a User of this enclave whose policy allows every command on `*` and denies the probe's object",
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'User', serviceAccount: false, policy: 'allow+deny' } },
  },
  {
    id: 'sa-user',
    short: 'SA of User',
    description: 'a service account of the "User allow" (it acts with its parent\'s policy)',
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'User', serviceAccount: true, policy: 'allow' } },
  },
  {
    id: 'sa-admin',
    short: 'SA of Admin',
    description: 'a service account of the Admin of this enclave (it acts as an Admin)',
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'Admin', serviceAccount: true } },
  },
  {
    id: 'admin',
    short: 'Admin',
    description: 'an Admin of this enclave',
    certificate: true,
    sysAdmin: false,
    in: { E: { privilege: 'Admin', serviceAccount: false } },
  },
  {
    id: 'admin-other',
    short: 'Admin other',
    description: 'an Admin of the other enclave (no record in this one)',
    certificate: true,
    sysAdmin: false,
    in: { F: { privilege: 'Admin', serviceAccount: false } },
  },
  { id: 'sysadmin', short: 'SysAdmin', description: 'a SysAdmin (the root identity)', certificate: true, sysAdmin: true, in: {} },
];

// ------------------------------------------------------------------------------ the URL enclaves

export type Column = 'own' | 'other' | 'none' | 'missing';

export interface EnclaveColumn {
  readonly id: Column;
  readonly title: string;
  /** The enclave in the URL (model names; the test maps them to real ones). */
  readonly enclave: '' | 'E' | 'F' | 'X';
}

export const COLUMNS: readonly EnclaveColumn[] = [
  { id: 'own', title: 'this enclave: `POST /v1/kms/E`, where the Users, service accounts and the Admin are', enclave: 'E' },
  { id: 'other', title: 'the other enclave: `POST /v1/kms/F`, where only "Admin other" is', enclave: 'F' },
  { id: 'none', title: 'no enclave: `POST /v1/kms`', enclave: '' },
  { id: 'missing', title: 'an enclave that does not exist: `POST /v1/kms/X`', enclave: 'X' },
];

/** Enclaves that exist in the model (and in the test's server). */
const EXISTING = new Set(['E', 'F']);

// ------------------------------------------------------------------------------ the policies

/** Objects of the probes: names match {@link DENIED_NAMES}, identities {@link DENIED_IDENTITIES}. */
export const PROBE_NAME = 'mx-probe-obj';
export const PROBE_IDENTITY = 'h1:probe-identity';
/** The identity in the URL of a KES identity API (KES spells identities in hex; any `h1:` matches {@link DENIED_IDENTITIES}). */
export const PROBE_KES_IDENTITY = 'a1'.repeat(32);
/** What the "allow+deny" policy denies, for every command: the probes' objects. */
export const DENIED_NAMES = 'mx-*-obj';
export const DENIED_IDENTITIES = 'h1:*';

/** Every command a policy may name (the enclave commands: policies of cluster commands grant nothing). */
export const POLICY_COMMANDS: readonly string[] = [
  ...new Set(
    [...COMMAND_TABLE.values()]
      .map((e) => e.access)
      .filter((a): a is Extract<typeof a, { permission: string }> => 'permission' in a)
      .map((a) => a.permission),
  ),
].sort();

/** The two policies of the matrix, as the API takes them (command → patterns). */
export const POLICY_RULES: Readonly<Record<'allow' | 'allow+deny', { allow: Record<string, string[]>; deny: Record<string, string[]> }>> = {
  allow: { allow: Object.fromEntries(POLICY_COMMANDS.map((c) => [c, ['*']])), deny: {} },
  'allow+deny': {
    allow: Object.fromEntries(POLICY_COMMANDS.map((c) => [c, ['*']])),
    deny: Object.fromEntries(POLICY_COMMANDS.map((c) => [c, [DENIED_NAMES, DENIED_IDENTITIES]])),
  },
};

const POLICIES: Record<'allow' | 'allow+deny', PolicyRules> = {
  allow: normalizePolicy(POLICY_RULES.allow.allow, POLICY_RULES.allow.deny, () => true),
  'allow+deny': normalizePolicy(POLICY_RULES['allow+deny'].allow, POLICY_RULES['allow+deny'].deny, () => true),
};

// ------------------------------------------------------------------------------ the probes

/** `ok`, or the catalogue error the caller gets. */
export type Outcome = 'ok' | ErrorCode;

/** One row: a command (with what its request asks) or an HTTP route. */
export interface Probe {
  /** Row name: the command's name, with the variant in brackets, or `METHOD /path`. */
  readonly id: string;
  readonly command?: Command;
  readonly route?: {
    readonly method: string;
    readonly path: string;
    /** The query the probe sends (without `?`), if any. */
    readonly query?: string;
    /** A route of the KES API (kes/routes.ts). */
    readonly kes?: boolean;
    /** The KES API the route serves (kes/apis.ts). */
    readonly api?: KesApi;
  };
  /** The frame's object: a name or an identity (both matched by the "allow+deny" policy's deny), the caller itself, or none. */
  readonly object: 'name' | 'identity' | 'self' | 'none';
  /** For commands with a restriction: whether the request stays inside it. */
  readonly withinRestriction?: boolean;
  /** What the request is, for people. */
  readonly request: string;
  /** What a caller that passes every check gets. */
  readonly permitted: Outcome;
}

/** Variants and answers of the commands whose probe is not "an existing object → ok". */
const COMMAND_PROBES: Readonly<Record<string, readonly Omit<Probe, 'id' | 'command'>[]>> = {
  'CLUSTER:ADDNODE': [{ object: 'none', request: 'add a node', permitted: 'ERR_CLUSTER_SINGLE_NODE' }],
  'CLUSTER:REMOVENODE': [{ object: 'none', request: 'remove a node', permitted: 'ERR_CLUSTER_SINGLE_NODE' }],
  'CLUSTER:EDIT': [{ object: 'none', request: 'remove node ids', permitted: 'ERR_CLUSTER_SINGLE_NODE' }],
  'CLUSTER:STATUS': [{ object: 'none', request: 'cluster status', permitted: 'ok' }],
  'CLUSTER:ADDHSM': [{ object: 'none', request: "seal for the node's HSM again (overwrite)", permitted: 'ok' }],
  'CLUSTER:REMOVEHSM': [{ object: 'none', request: "remove the node's only HSM entry", permitted: 'ERR_HSM_LAST' }],
  'ENCLAVE:CREATE': [{ object: 'name', request: 'a new enclave', permitted: 'ok' }],
  'ENCLAVE:DELETE': [{ object: 'name', request: 'an existing enclave', permitted: 'ok' }],
  'ENCLAVE:STATUS': [{ object: 'name', request: 'enclave E', permitted: 'ok' }],
  'ENCLAVE:LIST': [{ object: 'none', request: 'every enclave', permitted: 'ok' }],
  'KEY:CREATE': [{ object: 'name', request: 'a new key', permitted: 'ok' }],
  'KEY:IMPORT': [{ object: 'name', request: 'a new key from 32 bytes', permitted: 'ok' }],
  'KEY:DELETE': [{ object: 'name', request: 'an existing key', permitted: 'ok' }],
  'KEY:LIST': [{ object: 'none', request: 'every key (filtered by the policy)', permitted: 'ok' }],
  'POLICY:CREATE': [{ object: 'name', request: 'a new policy', permitted: 'ok' }],
  'POLICY:DELETE': [{ object: 'name', request: 'an existing policy', permitted: 'ok' }],
  'POLICY:ASSIGN': [{ object: 'name', request: 'an existing policy to an existing User', permitted: 'ok' }],
  'POLICY:GET': [{ object: 'name', request: 'an existing policy', permitted: 'ok' }],
  'POLICY:STATUS': [{ object: 'name', request: 'an existing policy', permitted: 'ok' }],
  'POLICY:LIST': [{ object: 'none', request: 'every policy (filtered by the policy)', permitted: 'ok' }],
  'IDENTITY:CREATE': [
    { object: 'identity', withinRestriction: true, request: 'a new service account (of the caller)', permitted: 'ok' },
    { object: 'identity', withinRestriction: false, request: 'a new User identity', permitted: 'ok' },
  ],
  'IDENTITY:DELETE': [
    { object: 'identity', withinRestriction: true, request: "one of the caller's own service accounts", permitted: 'ok' },
    { object: 'identity', withinRestriction: false, request: 'another User identity', permitted: 'ok' },
  ],
  'IDENTITY:STATUS': [
    { object: 'identity', request: 'another identity', permitted: 'ok' },
    { object: 'self', request: 'the caller itself (no identity in the request)', permitted: 'ok' },
  ],
  'IDENTITY:LIST': [{ object: 'none', request: 'every identity (filtered by the policy)', permitted: 'ok' }],
};

/** Variant labels shown in the row name. */
function variantLabel(command: string, p: Omit<Probe, 'id' | 'command'>): string {
  if (command === 'IDENTITY:CREATE') return p.withinRestriction ? ' (service account)' : ' (User)';
  if (command === 'IDENTITY:DELETE') return p.withinRestriction ? ' (own service account)' : ' (other identity)';
  if (command === 'IDENTITY:STATUS') return p.object === 'self' ? ' (self)' : ' (other identity)';
  return '';
}

/** Every command of the table, with its variants (the default probe: an existing object, answered `ok`). */
export function commandProbes(): Probe[] {
  const out: Probe[] = [];
  for (const c of COMMANDS) {
    const entry = COMMAND_TABLE.get(c.code);
    if (!entry) throw new Error(`${c.name} is in the catalogue but not in the command table`);
    const variants = COMMAND_PROBES[c.name] ?? [{ object: 'name', request: 'an existing key', permitted: 'ok' }];
    if (entry.restriction && variants.every((v) => v.withinRestriction === undefined)) {
      throw new Error(`${c.name} has a restriction: its probes must say whether they stay inside it`);
    }
    for (const v of variants) out.push({ id: c.name + variantLabel(c.name, v), command: c, ...v });
  }
  return out;
}

/** The HTTP routes other than the command channel: what each probe sends and what a permitted caller gets. */
const ROUTE_PROBES: Readonly<Record<string, { request: string; permitted: Outcome; query?: string }>> = {
  'GET /version': { request: 'the version', permitted: 'ok' },
  'GET /v1/health/live': { request: 'liveness', permitted: 'ok' },
  'GET /v1/health/ready': { request: 'readiness', permitted: 'ok' },
  'GET /v1/health/metrics': { request: 'Prometheus metrics (default `metrics.auth: true`, no `metrics.identities`)', permitted: 'ok' },
  'POST /v1/root/rotate': { request: 'rotate the root encryption key', permitted: 'ok' },
  'GET /v1/db': { request: 'a backup', permitted: 'ok' },
  'PUT /v1/db': { request: 'a restore, with a body that is no backup', permitted: 'ERR_INVALID_BACKUP' },
  'POST /v1/debug/log': { request: 'the log stream (its headers)', permitted: 'ok' },
  // Profiling and restarts (server/debug.ts): the probes leave nothing running. A session of
  // event-loop delay only (no V8 profiler) is started and stopped again by the test around
  // each cell; a restart probe names an option that does not exist, so that a permitted caller
  // is answered after its access check but before anything restarts.
  'POST /v1/debug/pprof': {
    request: 'start profiling (`?block=1000000`: event-loop delay; the test stops it again)',
    query: 'block=1000000',
    permitted: 'ok',
  },
  'GET /v1/debug/pprof': { request: 'profiling status', permitted: 'ok' },
  'DELETE /v1/debug/pprof': { request: 'stop profiling and download the results (the test starts a session first)', permitted: 'ok' },
  'POST /v1/debug/restart': {
    request: 'restart with an unknown option (`?now`): refused before anything restarts',
    query: 'now',
    permitted: 'ERR_BAD_REQUEST',
  },
};

/** What a KES probe asks, for people (kes/apis.ts: the API's access or command permission). */
function kesRequest(api: KesApi): string {
  if (!api.served) return "not served: KES's 501 before any body";
  const what =
    api.resource === undefined
      ? ''
      : api.list
        ? ` (every ${api.resource}, filtered by the policy)`
        : api.resource === 'identity'
          ? ' (another identity)'
          : api.command === 'KEY:CREATE'
            ? ' (a new key)'
            : ` (an existing ${api.resource})`;
  if (api.command) return `\`${api.command}\`${what}`;
  const access = { public: 'anyone', member: 'identities of the KES enclave', metrics: 'like `/v1/health/metrics`', sysadmin: 'SysAdmins' };
  return `${api.stream ? 'a stream (its headers)' : 'no command'}: ${access[api.access ?? 'member']}`;
}

/** Paths of the command channel (rows come from the command table). */
const COMMAND_PATHS = new Set(['/v1/kms', '/v1/kms/']);

// ------------------------------------------------------------------------------ the model

const identityOf = (c: Caller) => (c.certificate ? `caller:${c.id}` : '');

const PRIVILEGES: Record<Membership['privilege'], Privilege> = { Admin: PRIVILEGE.Admin, User: PRIVILEGE.User };

/** The principal the model's caller resolves to in `enclave` (kms.ts `principal`, for the model). */
function principalOf(caller: Caller | undefined, identity: string, enclave: string): Principal {
  if (caller?.sysAdmin) {
    return { identity, sysAdmin: true, admin: true, policy: undefined, known: true, privilege: PRIVILEGE.SysAdmin, serviceAccount: false };
  }
  const m = caller && EXISTING.has(enclave) ? caller.in[enclave as 'E' | 'F'] : undefined;
  if (!m) return { identity, sysAdmin: false, admin: false, policy: undefined, known: false, privilege: undefined, serviceAccount: false };
  const admin = m.privilege === 'Admin';
  return {
    identity,
    sysAdmin: false,
    admin,
    policy: admin || !m.policy ? undefined : POLICIES[m.policy],
    known: true,
    privilege: PRIVILEGES[m.privilege],
    serviceAccount: m.serviceAccount,
  };
}

/** A stand-in for the domain (kms.ts) that knows exactly the {@link CALLERS}. */
function modelKms() {
  const byIdentity = new Map(CALLERS.filter((c) => c.certificate).map((c) => [identityOf(c), c]));
  return {
    isSysAdmin: (identity: string) => byIdentity.get(identity)?.sysAdmin === true,
    hasEnclave: (name: string) => EXISTING.has(name),
    principal: (identity: string, enclave: string) => principalOf(byIdentity.get(identity), identity, enclave),
    allowed: (p: Principal, command: string, name: string) => p.admin || (p.policy !== undefined && isAllowed(p.policy, command, name)),
    allowedToList: (p: Principal, command: string) => p.admin || (p.policy !== undefined && grantsAny(p.policy, command)),
  };
}

/** The enclave of the KES API in the model (and the test's `kes.enclave`): this enclave. */
export const KES_ENCLAVE = 'E';

/** The routes as the server builds them (the KES API enabled), with their pre-body checks bound to the model. */
function modelRoutes(): { api: Route[]; kes: Route[] } {
  const kms = modelKms();
  const node = {
    state: { kind: 'unsealed', kms, rootIdentity: { identity: identityOf(CALLERS.find((c) => c.sysAdmin)!), retired: [] } },
    config: {
      admin: {},
      metrics: { auth: true, identities: [] },
      limits: { maxFrames: 1 },
      kes: { enabled: true, enclave: KES_ENCLAVE },
    },
    stale: () => false,
  };
  // What the pre-body checks do not consult (handlers, logs, metrics): calls that do nothing.
  const unused: object = new Proxy(function () {}, {
    get: (_t, k) => (k === 'then' ? undefined : unused),
    apply: () => undefined,
  });
  const deps = { node: node as never, observability: unused as never };
  return {
    api: apiRoutes({ ...deps, pool: unused as never, profiler: unused as never, restart: unused as never }),
    kes: kesRoutes(deps),
  };
}

/** Runs a route's pre-body check for `identity` and `param`: undefined if it passes. */
function preBody(route: Route, identity: string, param: string): ErrorCode | undefined {
  const closers: (() => void)[] = [];
  const res = { once: (event: string, fn: () => void) => void (event === 'close' && closers.push(fn)) };
  try {
    route.access({ req: {} as never, res: res as never, identity, param, query: new URLSearchParams() });
    return undefined;
  } catch (err) {
    if (err instanceof KmsError) return err.code;
    throw err;
  } finally {
    for (const close of closers) close();
  }
}

/**
 * A command after the pre-body check, as dispatch.ts runs it: the enclave it runs in, the
 * caller there, the table's access rule for the frame's object, the restriction.
 */
function commandOutcome(entry: Entry, probe: Probe, caller: Caller, enclave: string): Outcome {
  const kms = modelKms();
  const identity = identityOf(caller);
  const cmd = entry.command;
  const scope = cmd.scope === 'cluster' ? '' : enclave;
  if (cmd.scope === 'enclave') {
    if (enclave === '') return 'ERR_ENCLAVE_REQUIRED';
    if (kms.isSysAdmin(identity) && !kms.hasEnclave(enclave)) return 'ERR_ENCLAVE_NOT_FOUND';
  }
  const p = kms.principal(identity, scope);
  if (!p.known) return 'ERR_NOT_ALLOWED';
  const object = probe.object === 'name' ? PROBE_NAME : probe.object === 'identity' ? PROBE_IDENTITY : '';
  try {
    authorize(kms as never, p, entry.access, object);
  } catch (err) {
    if (err instanceof KmsError) return err.code;
    throw err;
  }
  if (entry.restriction && probe.withinRestriction === false) {
    const restricted = entry.restriction === 'service-accounts-only' ? !p.admin || p.serviceAccount : !p.admin;
    if (restricted) return 'ERR_NOT_ALLOWED';
  }
  return probe.permitted;
}

/** One cell. */
export interface Cell {
  readonly probe: Probe;
  readonly caller: Caller;
  /** Undefined for routes outside the command channel (they have no enclave). */
  readonly column: EnclaveColumn | undefined;
  readonly outcome: Outcome;
}

export interface Matrix {
  readonly commands: readonly Probe[];
  readonly routes: readonly Probe[];
  /** The routes of the KES API (`kes.enabled`, `kes.enclave` = this enclave). */
  readonly kes: readonly Probe[];
  readonly cells: readonly Cell[];
}

/** The name a KES probe puts in the URL after a prefix route (the model's object). */
function kesParam(route: Route, api: KesApi): string {
  if (!route.prefix || !api.served || api.list || api.resource === undefined) return '';
  return api.resource === 'identity' ? PROBE_KES_IDENTITY : PROBE_NAME;
}

/** Every cell: every command probe × caller × URL enclave, every other route × caller, every KES route × caller. */
export function authorizationMatrix(): Matrix {
  const { api: routes, kes } = modelRoutes();
  const route = (method: string, path: string) => {
    const r = routes.find((x) => x.method === method && x.path === path);
    if (!r) throw new Error(`no route ${method} ${path}`);
    return r;
  };
  const kmsRoot = route('POST', '/v1/kms');
  const kmsEnclave = route('POST', '/v1/kms/');
  const commands = commandProbes();
  const routeProbes: Probe[] = [];
  for (const r of routes) {
    if (COMMAND_PATHS.has(r.path)) continue;
    const key = `${r.method} ${r.path}`;
    const p = ROUTE_PROBES[key];
    if (!p) throw new Error(`route ${key} has no probe in server/authz-matrix.ts (ROUTE_PROBES): add one, and its row to docs/security.md`);
    const { query, ...rest } = p;
    routeProbes.push({ id: key, route: { method: r.method, path: r.path, ...(query ? { query } : {}) }, object: 'none', ...rest });
  }
  const kesProbes: Probe[] = [];
  for (const r of kes) {
    const api = kesApiOf(r.path);
    if (!api || api.method !== r.method) throw new Error(`KES route ${r.method} ${r.path} has no API in kes/apis.ts`);
    const placeholder = api.list ? '{prefix}' : api.resource === 'identity' ? '{id}' : '{name}';
    const id = `${r.method} ${r.path}${r.prefix ? placeholder : ''}`;
    kesProbes.push({
      id,
      route: { method: r.method, path: r.path, kes: true, api },
      object: api.resource === undefined || api.list || !r.prefix ? 'none' : api.resource === 'identity' ? 'identity' : 'name',
      request: kesRequest(api),
      permitted: api.served ? 'ok' : 'ERR_KES_NOT_IMPLEMENTED',
    });
  }
  const cells: Cell[] = [];
  for (const probe of commands) {
    const entry = COMMAND_TABLE.get(probe.command!.code)!;
    for (const caller of CALLERS) {
      for (const column of COLUMNS) {
        const r = column.enclave === '' ? kmsRoot : kmsEnclave;
        const refused = preBody(r, identityOf(caller), column.enclave);
        cells.push({ probe, caller, column, outcome: refused ?? commandOutcome(entry, probe, caller, column.enclave) });
      }
    }
  }
  for (const probe of routeProbes) {
    const r = route(probe.route!.method, probe.route!.path);
    for (const caller of CALLERS)
      cells.push({ probe, caller, column: undefined, outcome: preBody(r, identityOf(caller), '') ?? probe.permitted });
  }
  for (const probe of kesProbes) {
    const r = kes.find((x) => x.method === probe.route!.method && x.path === probe.route!.path)!;
    const param = kesParam(r, probe.route!.api!);
    for (const caller of CALLERS)
      cells.push({ probe, caller, column: undefined, outcome: preBody(r, identityOf(caller), param) ?? probe.permitted });
  }
  return { commands, routes: routeProbes, kes: kesProbes, cells };
}

// ------------------------------------------------------------------------------ the document

export const MATRIX_BEGIN =
  '<!-- authz-matrix:begin (generated by scripts/authz-matrix.mjs from src/server/authz-matrix.ts; do not edit) -->';
export const MATRIX_END = '<!-- authz-matrix:end -->';

/** The short label of an outcome in a cell, and its legend line. */
function labels(cells: readonly Cell[]): Map<Outcome, string> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of cells) {
    if (c.outcome === 'ok') continue;
    const status = ERRORS[c.outcome][0];
    const codes = byStatus.get(status) ?? [];
    if (!codes.includes(c.outcome)) codes.push(c.outcome);
    byStatus.set(status, codes);
  }
  const out = new Map<Outcome, string>([['ok', '✓']]);
  for (const [status, all] of byStatus) {
    // ERR_NOT_ALLOWED is the plain 403; the other errors of a status shared by several get letters.
    if (all.includes('ERR_NOT_ALLOWED')) out.set('ERR_NOT_ALLOWED', `${status}`);
    const codes = all.filter((c) => c !== 'ERR_NOT_ALLOWED').sort();
    const lettered = all.length > 1;
    codes.forEach((code, i) => out.set(code, lettered ? `${status}${String.fromCharCode(97 + i)}` : `${status}`));
  }
  return out;
}

/** `KEY:CREATE (variant)` → [`KEY:CREATE`, ` (variant)`]. */
function splitId(id: string): [string, string] {
  const i = id.indexOf(' (');
  return i < 0 ? [id, ''] : [id.slice(0, i), id.slice(i)];
}

function table(rows: readonly Probe[], cellsOf: (p: Probe) => readonly Cell[], label: Map<Outcome, string>, withRequest: boolean): string {
  const head = `| ${withRequest ? 'command | request' : 'route | request'} | ${CALLERS.map((c) => c.short).join(' | ')} |`;
  const rule = `|---|---|${CALLERS.map(() => ':-:').join('|')}|`;
  const lines = rows.map((p) => {
    const cells = cellsOf(p);
    const [name, variant] = splitId(p.id);
    return `| \`${name}\`${variant} | ${p.request} | ${cells.map((c) => label.get(c.outcome)!).join(' | ')} |`;
  });
  return [head, rule, ...lines].join('\n');
}

/** The matrix section of docs/security.md (between {@link MATRIX_BEGIN} and {@link MATRIX_END}). */
export function renderMatrix(m: Matrix = authorizationMatrix()): string {
  const label = labels(m.cells);
  const legend = [...label.entries()]
    .map(([o, l]) =>
      o === 'ok'
        ? `- \`${l}\` — the request is served: 200, or what the row's request answers a permitted caller (see the row)`
        : `- \`${l}\` — ${ERRORS[o][0]} \`${ERRORS[o][1]}\` (${o})`,
    )
    .join('\n');
  const byKey = new Map<string, Cell>();
  for (const c of m.cells) byKey.set(`${c.probe.id}|${c.caller.id}|${c.column?.id ?? ''}`, c);
  const cellsOf = (column: Column | '') => (p: Probe) => CALLERS.map((c) => byKey.get(`${p.id}|${c.id}|${column}`)!);
  const permitted = [...m.commands, ...m.routes]
    .filter((p) => p.permitted !== 'ok')
    .map((p) => `\`${p.id}\` → ${label.get(p.permitted)}`)
    .join(', ');
  const parts = [
    MATRIX_BEGIN,
    '',
    `${m.cells.length} cells: ${m.commands.length} command probes × ${CALLERS.length} callers × ${COLUMNS.length} URL enclaves, ${m.routes.length} other routes × ${CALLERS.length} callers, and ${m.kes.length} routes of the KES API × ${CALLERS.length} callers. Every cell is run against a real server (\`kes.enabled: true\`, \`kes.enclave\`: this enclave) by \`test/api/authz-matrix.test.ts\`.`,
    '',
    'Callers:',
    '',
    ...CALLERS.map((c) => `- **${c.short}**: ${c.description}`),
    '',
    `Policies: "allow" allows every permission the command table checks on \`*\`; "allow+deny" allows the same and denies \`${DENIED_NAMES}\` and \`${DENIED_IDENTITIES}\` for every command — every probe's object (its names match \`${DENIED_NAMES}\`, its identities \`${DENIED_IDENTITIES}\`).`,
    '',
    'Outcomes:',
    '',
    legend,
    '',
    `A permitted caller gets the request's own answer where it is not ✓: ${permitted} (a single-node server with one HSM).`,
    '',
  ];
  for (const col of COLUMNS) {
    parts.push(`#### URL enclave: ${col.title}`, '', table(m.commands, cellsOf(col.id), label, true), '');
  }
  parts.push('#### Other routes (no enclave)', '', table(m.routes, cellsOf(''), label, false), '');
  parts.push(
    '#### The KES API (every request acts in `kes.enclave`: this enclave)',
    '',
    `\`{name}\` is a key or policy name (the row says whether it exists; the test's names match \`${DENIED_NAMES}\`, as the model's \`${PROBE_NAME}\` does), \`{id}\` another identity of the enclave in hex, \`{prefix}\` a list prefix; what is not served answers 501 before any check.`,
    '',
    table(m.kes, cellsOf(''), label, false),
    '',
    MATRIX_END,
  );
  return parts.join('\n');
}

/** `doc` with its matrix section replaced by `section`; throws if the markers are missing. */
export function replaceMatrix(doc: string, section: string): string {
  const begin = doc.indexOf(MATRIX_BEGIN);
  const end = doc.indexOf(MATRIX_END);
  if (begin < 0 || end < begin) throw new Error('docs/security.md has no authz-matrix markers');
  return doc.slice(0, begin) + section + doc.slice(end + MATRIX_END.length);
}
