/**
 * The authorization matrix (src/server/authz-matrix.ts), cell by cell, against a real server
 * process: every command (with its variants) × every kind of caller × every kind of URL
 * enclave, and every other HTTP route × every caller. The expected answer of each cell is
 * derived from the command table and the route rules; here real identities, policies and
 * service accounts send real requests over mutual TLS, and every answer must match in status
 * and exact message. docs/security.md shows the same matrix (test/unit/authz-matrix-doc.test.ts).
 *
 * The server has the KES API on (`kes.enclave` is this enclave), so that its routes are run too.
 * The debug probes leave nothing behind: a profiling session is started before and stopped after
 * each profiling cell, and the restart probe is one the node answers without restarting.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ClientHttp2Session } from 'node:http2';
import { startServer, type TestServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';
import { closeSession, h2Request, h2Session, type RawAnswer } from '../helpers/security.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { kesIdentityOf } from '../../src/identity/kes.js';
import { ERRORS } from '../../src/errors.js';
import { encodeFrames } from '../../src/protocol/frames.js';
import { encodeMessage } from '../../src/protocol/schema.js';
import { SOFT_HSM_NAME } from '../../src/hsm/soft.js';
import { isAllowed, normalizePolicy } from '../../src/kms/policy.js';
import {
  CALLERS,
  DENIED_IDENTITIES,
  DENIED_NAMES,
  POLICY_RULES,
  PROBE_IDENTITY,
  PROBE_KES_IDENTITY,
  PROBE_NAME,
  authorizationMatrix,
  type CallerId,
  type Cell,
  type Outcome,
} from '../../src/server/authz-matrix.js';
import type { KmsClient } from '../../src/client/client.js';

/** The model's enclaves, for real. */
const ENCLAVE = { E: 'mx-this', F: 'mx-that', X: 'mx-nowhere', '': '' } as const;
const OCTET = 'application/octet-stream';

let server: TestServer;
let root: KmsClient;
/** API key and HTTP/2 session per caller. */
const keys = {} as Record<CallerId, string | undefined>;
const sessions = {} as Record<CallerId, ClientHttp2Session>;
/** Per existing enclave: objects the probes name. */
const fixtures: Record<'E' | 'F', { ciphertext: Buffer; peer: string; assignee: string }> = {} as never;

const toRules = (r: Record<string, string[]>) =>
  Object.fromEntries(Object.entries(r).map(([c, ps]) => [c, { rules: Object.fromEntries(ps.map((p) => [p, {}])) }]));

/** A client with `apiKey` (for set-up as that caller). */
const as = (apiKey: string) => clientFor(server, apiKey);

let counter = 0;
/** A new object name (matching the "allow+deny" policy's deny, as PROBE_NAME does). */
const fresh = () => `mx-${(counter++).toString(36)}-obj`;
const freshIdentity = () => generateApiKey().identity;

before(async () => {
  server = await startServer({ config: `version: v1\nkes:\n  enabled: true\n  enclave: ${ENCLAVE.E}\n` });
  root = clientFor(server, server.apiKey);
  // The objects the test uses are matched by the policies exactly as the model's are.
  const deny = normalizePolicy(POLICY_RULES['allow+deny'].allow, POLICY_RULES['allow+deny'].deny, () => true);
  for (const [real, model] of [
    ['mx-key-obj', PROBE_NAME],
    ['mx-pol-obj', PROBE_NAME],
    [fresh(), PROBE_NAME],
    [freshIdentity(), PROBE_IDENTITY],
    [freshIdentity(), `h1:${Buffer.from(PROBE_KES_IDENTITY, 'hex').toString('base64url')}`],
  ]) {
    assert.equal(isAllowed(deny, 'KEY:STATUS', real!), isAllowed(deny, 'KEY:STATUS', model!), `${real} vs ${model}`);
  }
  assert.equal(isAllowed(deny, 'KEY:STATUS', PROBE_NAME), false, `${DENIED_NAMES} does not deny the probe's name`);
  assert.equal(isAllowed(deny, 'IDENTITY:STATUS', PROBE_IDENTITY), false, `${DENIED_IDENTITIES} does not deny the probe's identity`);

  for (const e of ['E', 'F'] as const) {
    const name = ENCLAVE[e];
    await root.createEnclave(name);
    await root.createKey(name, { name: 'mx-key-obj' });
    const [ct] = await root.encrypt(name, [{ name: 'mx-key-obj', plaintext: Buffer.from('matrix') }]);
    for (const p of ['mx-pol-obj', 'mx-assign-obj'])
      await root.createPolicy(name, { name: p, allow: { 'KEY:STATUS': { rules: { '*': {} } } } });
    const peer = freshIdentity();
    const assignee = freshIdentity();
    await root.createIdentity(name, { identity: peer });
    await root.createIdentity(name, { identity: assignee });
    fixtures[e] = { ciphertext: ct!.ciphertext, peer, assignee };
  }
  const E = ENCLAVE.E;
  await root.createPolicy(E, { name: 'grant-allow', allow: toRules(POLICY_RULES.allow.allow) });
  await root.createPolicy(E, {
    name: 'grant-deny',
    allow: toRules(POLICY_RULES['allow+deny'].allow),
    deny: toRules(POLICY_RULES['allow+deny'].deny),
  });

  const add = async (id: CallerId, enclave: string, privilege: string, policy?: string, by?: string) => {
    const k = generateApiKey();
    keys[id] = k.text;
    if (by) {
      const c = as(by);
      await c.createIdentity(enclave, { identity: k.identity, isServiceAccount: true });
      c.close();
    } else {
      await root.createIdentity(enclave, { identity: k.identity, privilege });
    }
    if (policy) await root.assignPolicy(enclave, k.identity, policy);
  };
  keys.none = undefined;
  keys.unknown = generateApiKey().text;
  keys.sysadmin = server.apiKey;
  await add('admin', E, 'Admin');
  await add('admin-other', ENCLAVE.F, 'Admin');
  await add('user', E, 'User');
  await add('user-allow', E, 'User', 'grant-allow');
  await add('user-deny', E, 'User', 'grant-deny');
  await add('sa-user', E, '', undefined, keys['user-allow']);
  await add('sa-admin', E, '', undefined, keys.admin);
  for (const c of CALLERS) sessions[c.id] = h2Session(server, keys[c.id]);
});

after(async () => {
  for (const s of Object.values(sessions)) await closeSession(s);
  root?.close();
  await server?.stop();
});

/** The model enclave of a cell ('' for none). */
const modelEnclave = (cell: Cell) => (cell.column?.enclave ?? '') as keyof typeof ENCLAVE;
const existing = (e: string): e is 'E' | 'F' => e === 'E' || e === 'F';

/** The message a command probe sends in `cell`, after preparing what it needs (as root, or as the caller). */
async function commandMessage(cell: Cell, outcomes: Map<string, Outcome>): Promise<Record<string, unknown>> {
  const e = modelEnclave(cell);
  const url = ENCLAVE[e];
  const fx = fixtures[existing(e) ? e : 'E'];
  const id = cell.probe.id;
  switch (id) {
    case 'CLUSTER:ADDNODE':
    case 'CLUSTER:REMOVENODE':
      return { host: '127.0.0.1:1' };
    case 'CLUSTER:EDIT':
      return { removeIds: [7] };
    case 'CLUSTER:STATUS':
    case 'ENCLAVE:LIST':
    case 'KEY:LIST':
    case 'POLICY:LIST':
    case 'IDENTITY:LIST':
      return {};
    case 'CLUSTER:ADDHSM':
      return { name: SOFT_HSM_NAME, overwrite: true };
    case 'CLUSTER:REMOVEHSM':
      return { name: SOFT_HSM_NAME };
    case 'ENCLAVE:CREATE':
    case 'KEY:CREATE':
    case 'POLICY:CREATE':
      return id === 'POLICY:CREATE' ? { name: fresh(), allow: { 'KEY:STATUS': { rules: { '*': {} } } } } : { name: fresh() };
    case 'KEY:IMPORT':
      return { name: fresh(), key: randomBytes(32) };
    case 'ENCLAVE:DELETE': {
      const name = fresh();
      await root.createEnclave(name);
      return { name };
    }
    case 'ENCLAVE:STATUS':
      return { name: ENCLAVE.E };
    case 'KEY:DELETE': {
      const name = fresh();
      if (existing(e)) await root.createKey(url, { name });
      return { name };
    }
    case 'KEY:STATUS':
    case 'KEY:GENERATE':
    case 'KEY:LISTVERSIONS':
      return { name: 'mx-key-obj' };
    case 'KEY:ENCRYPT':
      return { name: 'mx-key-obj', plaintext: Buffer.from('p') };
    case 'KEY:DECRYPT':
      return { name: 'mx-key-obj', version: 1, ciphertext: fx.ciphertext };
    case 'KEY:MAC':
      return { name: 'mx-key-obj', message: Buffer.from('m') };
    case 'POLICY:DELETE': {
      const name = fresh();
      if (existing(e)) await root.createPolicy(url, { name, allow: {} });
      return { name };
    }
    case 'POLICY:ASSIGN':
      return { identity: fx.assignee, policy: 'mx-assign-obj' };
    case 'POLICY:GET':
    case 'POLICY:STATUS':
      return { name: 'mx-pol-obj' };
    case 'IDENTITY:CREATE (service account)':
      return { identity: freshIdentity(), isServiceAccount: true };
    case 'IDENTITY:CREATE (User)':
      return { identity: freshIdentity(), privilege: 'User' };
    case 'IDENTITY:DELETE (own service account)': {
      const identity = freshIdentity();
      // The caller's own service account, where the matrix says it may create one.
      if (outcomes.get(`IDENTITY:CREATE (service account)|${cell.caller.id}|${cell.column!.id}`) === 'ok') {
        const c = as(keys[cell.caller.id]!);
        await c.createIdentity(url, { identity, isServiceAccount: true });
        c.close();
      }
      return { identity };
    }
    case 'IDENTITY:DELETE (other identity)': {
      const identity = freshIdentity();
      if (existing(e)) await root.createIdentity(url, { identity, privilege: 'User' });
      return { identity };
    }
    case 'IDENTITY:STATUS (other identity)':
      return { identity: fx.peer };
    case 'IDENTITY:STATUS (self)':
      return { identity: '' };
  }
  throw new Error(`no request for probe ${id}: add one to test/api/authz-matrix.test.ts`);
}

const JSON_TYPE = { 'content-type': 'application/json' };
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

/** The path and body of a KES probe, after preparing what it needs (as root). */
async function kesMessage(cell: Cell): Promise<{ path: string; body?: Buffer }> {
  const { method, path } = cell.probe.route!;
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const fx = fixtures.E;
  if (!cell.probe.route!.api!.served) return { path: path.endsWith('/') ? `${path}mx-x-obj` : path };
  switch (`${method} ${path}`) {
    case 'GET /v1/ready':
    case 'GET /v1/status':
    case 'GET /v1/api':
    case 'GET /v1/metrics':
    case 'GET /v1/identity/self/describe':
    case 'GET /v1/log/error':
    case 'GET /v1/log/audit':
    case 'GET /v1/key/list':
    case 'GET /v1/policy/list':
    case 'GET /v1/identity/list':
      return { path };
    case 'GET /v1/key/list/':
    case 'GET /v1/policy/list/':
    case 'GET /v1/identity/list/':
      return { path: `${path}mx-` };
    case 'POST /v1/key/create/':
      return { path: path + fresh() };
    case 'POST /v1/key/import/':
      return { path: path + fresh(), body: json({ key: b64(randomBytes(32)), cipher: 'AES256' }) };
    case 'DELETE /v1/key/delete/': {
      const name = fresh();
      await root.createKey(ENCLAVE.E, { name });
      return { path: path + name };
    }
    case 'GET /v1/key/describe/':
      return { path: `${path}mx-key-obj` };
    case 'POST /v1/key/generate/':
      return { path: `${path}mx-key-obj`, body: json({}) };
    case 'POST /v1/key/encrypt/':
      return { path: `${path}mx-key-obj`, body: json({ plaintext: b64(Buffer.from('p')) }) };
    case 'POST /v1/key/decrypt/':
      return { path: `${path}mx-key-obj`, body: json({ ciphertext: b64(fx.ciphertext) }) };
    case 'POST /v1/key/bulk/decrypt/':
      return { path: `${path}mx-key-obj`, body: json([{ ciphertext: b64(fx.ciphertext) }]) };
    case 'PUT /v1/key/hmac/':
      return { path: `${path}mx-key-obj`, body: json({ message: b64(Buffer.from('m')) }) };
    case 'GET /v1/policy/describe/':
    case 'GET /v1/policy/read/':
      return { path: `${path}mx-pol-obj` };
    case 'GET /v1/identity/describe/':
      return { path: path + kesIdentityOf(fx.peer) };
  }
  throw new Error(`no request for KES probe ${cell.probe.id}: add one to test/api/authz-matrix.test.ts`);
}

/** Stops a profiling session, if one runs or waits to be downloaded (as SysAdmin). */
async function stopProfiling(): Promise<void> {
  const r = await h2Request(sessions.sysadmin, { method: 'DELETE', path: '/v1/debug/pprof' });
  if (r.status !== 200 && r.message !== ERRORS.ERR_PROFILE_NOT_STARTED[1])
    throw new Error(`stopping the profiling: ${r.status} ${r.message}`);
}

/** Sends the cell's request as its caller (profiling cells: started before, stopped after, as SysAdmin). */
async function run(cell: Cell, outcomes: Map<string, Outcome>): Promise<RawAnswer> {
  const pprof = cell.probe.route?.path === '/v1/debug/pprof';
  if (pprof && cell.probe.route!.method === 'DELETE') {
    const r = await h2Request(sessions.sysadmin, { method: 'POST', path: '/v1/debug/pprof?block=1000000' });
    if (r.status !== 200) throw new Error(`starting the profiling: ${r.status} ${r.message}`);
  }
  try {
    return await send(cell, outcomes);
  } finally {
    if (pprof) await stopProfiling();
  }
}

async function send(cell: Cell, outcomes: Map<string, Outcome>): Promise<RawAnswer> {
  const session = sessions[cell.caller.id];
  const p = cell.probe;
  if (p.route?.kes) {
    const { path, body } = await kesMessage(cell);
    return h2Request(session, {
      method: p.route.method,
      path,
      body,
      headers: body ? JSON_TYPE : {},
      headersOnly: p.route.api!.stream === true,
    });
  }
  if (p.command) {
    const msg = await commandMessage(cell, outcomes);
    const url = ENCLAVE[modelEnclave(cell)];
    const body = encodeFrames(p.command.code, [encodeMessage(p.command.request, msg as never)]);
    return h2Request(session, {
      method: 'POST',
      path: url === '' ? '/v1/kms' : `/v1/kms/${url}`,
      body,
      headers: { 'content-type': OCTET, accept: OCTET },
    });
  }
  const { method, query } = p.route!;
  const path = query ? `${p.route!.path}?${query}` : p.route!.path;
  if (method === 'PUT') return h2Request(session, { method, path, body: Buffer.from('no backup at all') });
  return h2Request(session, {
    method,
    path,
    headersOnly: path === '/v1/debug/log',
    body: path === '/v1/debug/log' ? Buffer.alloc(0) : undefined,
  });
}

function matches(want: Outcome, got: RawAnswer): boolean {
  if (want === 'ok') return got.status === 200;
  const [status, message] = ERRORS[want];
  return got.status === status && (got.message === message || got.message.startsWith(`${message}: `));
}

const show = (o: Outcome) => (o === 'ok' ? '200' : `${ERRORS[o][0]} '${ERRORS[o][1]}'`);

test('every cell of the authorization matrix, against a real server', { timeout: 600_000 }, async (t) => {
  const m = authorizationMatrix();
  const outcomes = new Map(m.cells.map((c) => [`${c.probe.id}|${c.caller.id}|${c.column?.id ?? ''}`, c.outcome]));
  const wrong: string[] = [];
  const t0 = performance.now();
  for (const cell of m.cells) {
    const where = `${cell.probe.id} as ${cell.caller.short}${cell.column ? ` at ${cell.column.id} enclave` : ''}`;
    let got: RawAnswer;
    try {
      got = await run(cell, outcomes);
    } catch (err) {
      wrong.push(`${where}: ${(err as Error).message}`);
      continue;
    }
    if (!matches(cell.outcome, got)) wrong.push(`${where}: got ${got.status} '${got.message}', want ${show(cell.outcome)}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  t.diagnostic(
    `${m.cells.length} cells (${m.commands.length} command probes, ${m.routes.length} routes, ${m.kes.length} KES routes) in ${seconds.toFixed(1)} s`,
  );
  assert.deepEqual(wrong.slice(0, 40), [], `${wrong.length} of ${m.cells.length} cells differ from the matrix`);

  // And the node is unharmed: nothing is profiled, the fixtures are still there and still decrypt.
  const status = await h2Request(sessions.sysadmin, { method: 'GET', path: '/v1/debug/pprof', headers: { accept: 'application/json' } });
  assert.equal(status.status, 200);
  assert.deepEqual(JSON.parse(status.body.toString()), {}, 'a profiling session was left behind');
  for (const e of ['E', 'F'] as const) {
    const [pt] = await root.decrypt(ENCLAVE[e], [{ name: 'mx-key-obj', version: 1, ciphertext: fixtures[e].ciphertext }]);
    assert.equal(pt!.plaintext.toString(), 'matrix');
  }
});
