/**
 * Bad input over real mutual TLS on 127.0.0.1 against one real server process: every case must
 * get the exact protocol error (or a clear 400/403/404/405/411/413), never a crash, a 500, a hang,
 * a partial write or a secret in a response.
 *
 * Raw requests go through node's `http2.connect` (and `https.request` for HTTP/1.1) with the
 * client certificate of the root API key, so the bytes on the wire are exactly what the test
 * says. Every raw response is checked against the Go SDK's invariants (kms-wire.md §2.2, §3):
 * Content-Length present and exact, no Content-Encoding, error bodies `application/json`
 * exactly with `{"message": …}` and no stack trace or key material in them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ClientHttp2Session } from 'node:http2';
import { dirname } from 'node:path';
import { startServer, removeDir, type TestServer } from '../helpers/server.js';
import { clientFor, inflightRequests } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { certificateForApiKey, generateApiKey, parseApiKey, type PemCertificate } from '../../src/identity/index.js';
import { ERRORS, type ErrorCode } from '../../src/errors.js';
import { encodeFrame, parseFrames } from '../../src/protocol/frames.js';
import { CommandCode as C } from '../../src/protocol/commands.js';
import { decodeMessage, encodeMessage, type MessageInit, type MessageSchema } from '../../src/protocol/schema.js';
import * as M from '../../src/protocol/messages.js';
import type { KmsClient } from '../../src/client/client.js';

const ENCLAVE = 'bad';
const OCTET = 'application/octet-stream';
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_BODY = 16 << 20;
const MAX_FRAMES = 10_000;
const SECRET = Buffer.from('TOP-SECRET-PLAINTEXT-0123456789abcdef');
const AD = Buffer.from('{"bucket":"b","object":"o"}');

let server: TestServer;
let root: KmsClient;
let rootCert: PemCertificate;
/** HTTP/2 sessions: with the root certificate, and without any client certificate. */
const sessions: { cert?: ClientHttp2Session; anon?: ClientHttp2Session } = {};

// -------------------------------------------------------------------------------------------
// Raw HTTP

interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface RawRequest {
  method?: string;
  path: string;
  body?: Uint8Array;
  headers?: OutgoingHttpHeaders;
  /** Send no Content-Length header for the body (HTTP/2: DATA frames only). */
  noContentLength?: boolean;
  /** Send the headers only and leave the request body open (for Content-Length checks). */
  headersOnly?: boolean;
  /** Without a client certificate. */
  anon?: boolean;
  /** A session of its own (closed afterwards), for requests that may reset streams. */
  fresh?: boolean;
  /** Use this certificate instead of root's. */
  cert?: PemCertificate;
}

function connect(cert: PemCertificate | undefined): ClientHttp2Session {
  const s = http2.connect(server.url, {
    ca: server.caPem,
    cert: cert?.cert,
    key: cert?.key,
    servername: '', // IP literal: no SNI, like Go
    // The client queues whole request bodies (17 MiB for the limit cases); node's default of
    // 10 MB would make the *client* reset its own stream with ENHANCE_YOUR_CALM.
    maxSessionMemory: 64,
  });
  s.on('error', () => {});
  return s;
}

function session(anon: boolean): ClientHttp2Session {
  const k = anon ? 'anon' : 'cert';
  const s = sessions[k];
  if (s && !s.closed && !s.destroyed) return s;
  sessions[k] = connect(anon ? undefined : rootCert);
  return sessions[k]!;
}

/** One HTTP/2 request; rejects (instead of hanging) after REQUEST_TIMEOUT_MS. */
function h2(o: RawRequest): Promise<Raw> {
  const own = o.fresh || o.cert !== undefined;
  const s = own ? connect(o.anon ? undefined : (o.cert ?? rootCert)) : session(o.anon ?? false);
  return new Promise<Raw>((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ':method': o.method ?? 'POST', ':path': o.path, ...o.headers };
    if (o.body && !o.noContentLength && headers['content-length'] === undefined) headers['content-length'] = o.body.length;
    const stream = s.request(headers, { endStream: !o.body && !o.headersOnly });
    let resHeaders: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!stream.closed) stream.close();
      if (own) s.close();
      if (err) reject(err);
      else resolve({ status: Number(resHeaders![':status']), headers: resHeaders!, body: Buffer.concat(chunks) });
    };
    const timer = setTimeout(() => finish(new Error(`request hangs: ${headers[':method']} ${o.path}`)), REQUEST_TIMEOUT_MS);
    stream.on('response', (h) => (resHeaders = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => finish(resHeaders ? undefined : new Error('stream ended without a response')));
    const what = `${String(headers[':method'])} ${o.path} (${o.body?.length ?? 0} bytes)`;
    stream.on('error', (err) => finish(new Error(`${what}: ${err.message}`, { cause: err })));
    stream.on('close', () =>
      finish(resHeaders ? undefined : new Error(`${what}: stream closed without a response (code ${stream.rstCode})`)),
    );
    if (o.body && !o.headersOnly) stream.end(o.body);
  });
}

/**
 * One HTTP/1.1 request on a connection of its own. Keep-alive, as Go's transport: with
 * `Connection: close` a server that answers before the whole body arrived closes the socket
 * under the client's feet (EPIPE) instead of discarding the rest of the body.
 */
function h1(o: RawRequest): Promise<Raw> {
  const cert = o.anon ? undefined : (o.cert ?? rootCert);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  return new Promise<Raw>((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ...o.headers };
    if (o.body && !o.noContentLength && headers['content-length'] === undefined) headers['content-length'] = o.body.length;
    const req = https.request({
      host: '127.0.0.1',
      port: server.port,
      method: o.method ?? 'POST',
      path: o.path,
      ca: server.caPem,
      cert: cert?.cert,
      key: cert?.key,
      agent,
      headers: headers as Record<string, string | number>,
    });
    let settled = false;
    const finish = (err: Error | undefined, raw?: Raw) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      agent.destroy();
      if (err) reject(err);
      else resolve(raw!);
    };
    const timer = setTimeout(() => finish(new Error(`HTTP/1.1 request hangs: ${o.path}`)), REQUEST_TIMEOUT_MS);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => finish(undefined, { status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', (err) => finish(err));
    });
    req.on('error', (err) => finish(err));
    if (o.headersOnly) req.flushHeaders();
    else req.end(o.body ? Buffer.from(o.body) : undefined);
  });
}

/** Key material and other secrets that must never appear in a response. */
function secrets(): string[] {
  return [server.apiKey, server.apiKey.slice(3), server.hsmKey, server.hsmKey.slice('hsm:aes256:'.length)].filter((s) => s.length > 8);
}

/** Number of responses checked by {@link checkInvariants}. */
let checkedResponses = 0;

/** The Go SDK's invariants for every response (kms-wire.md §2.2, §3). */
function checkInvariants(r: Raw, label: string): void {
  checkedResponses++;
  const cl = r.headers['content-length'];
  assert.ok(cl !== undefined, `${label}: no content-length (status ${r.status})`);
  assert.equal(Number(cl), r.body.length, `${label}: content-length ${cl} but body of ${r.body.length} bytes`);
  assert.equal(r.headers['content-encoding'], undefined, `${label}: content-encoding ${String(r.headers['content-encoding'])}`);
  assert.equal(r.headers['transfer-encoding'], undefined, `${label}: transfer-encoding ${String(r.headers['transfer-encoding'])}`);
  const text = r.body.toString('latin1');
  for (const s of secrets()) assert.ok(!text.includes(s), `${label}: response contains a secret`);
  if (r.status !== 200) {
    assert.equal(r.headers['content-type'], 'application/json', `${label}: error content-type`);
    const json = JSON.parse(r.body.toString('utf8')) as unknown;
    assert.ok(json !== null && typeof json === 'object' && !Array.isArray(json), `${label}: error body is not an object`);
    assert.deepEqual(Object.keys(json), ['message'], `${label}: error body keys`);
    const message = (json as { message: unknown }).message;
    assert.equal(typeof message, 'string', `${label}: message is not a string`);
    assert.doesNotMatch(
      message as string,
      /\n|\bat \S+ \(|\.[jt]s:\d+|Error:|TypeError|RangeError/,
      `${label}: message looks like a stack trace`,
    );
    assert.notEqual(r.status, 500, `${label}: internal server error: ${message as string}`);
  }
}

function messageOf(r: Raw): string {
  return (JSON.parse(r.body.toString('utf8')) as { message: string }).message;
}

/**
 * Asserts a catalogue error: its status and its message, exactly (`exact`, the default for the
 * wire-contract errors) or as `message` / `message: detail`.
 */
function expectError(r: Raw, code: ErrorCode, label: string, opts: { exact?: boolean; detail?: string | RegExp } = {}): void {
  const [status, base] = ERRORS[code];
  assert.notEqual(r.status, 200, `${label}: succeeded (${r.body.length} bytes), want ${status} '${base}'`);
  checkInvariants(r, label);
  const message = messageOf(r);
  assert.equal(r.status, status, `${label}: status ${r.status} '${message}', want ${status} '${base}'`);
  if (opts.exact) {
    assert.equal(message, base, `${label}: message`);
  } else if (typeof opts.detail === 'string') {
    assert.equal(message, `${base}: ${opts.detail}`, `${label}: message`);
  } else {
    assert.ok(message === base || message.startsWith(`${base}: `), `${label}: message '${message}' is not '${base}[: …]'`);
    if (opts.detail) assert.match(message, opts.detail, `${label}: message detail`);
  }
}

function expectOk(r: Raw, label: string): void {
  checkInvariants(r, label);
  assert.equal(r.status, 200, `${label}: status ${r.status}${r.status !== 200 ? ` '${messageOf(r)}'` : ''}`);
}

// -------------------------------------------------------------------------------------------
// Frames

function frame(code: number, payload: Uint8Array | number[] = []): Buffer {
  return encodeFrame(code, payload instanceof Uint8Array ? payload : Buffer.from(payload));
}

function frameOf<T>(code: number, schema: MessageSchema<T>, m: MessageInit<T>): Buffer {
  return encodeFrame(code, encodeMessage(schema, m));
}

function kmsPath(enclave: string): string {
  return enclave === '' ? '/v1/kms' : `/v1/kms/${encodeURIComponent(enclave)}`;
}

/** POST of a raw body to `/v1/kms/{enclave}` over HTTP/2 with the root certificate. */
function post(enclave: string, body: Uint8Array, extra: Partial<RawRequest> = {}): Promise<Raw> {
  return h2({
    path: kmsPath(enclave),
    body,
    headers: { 'content-type': OCTET, accept: 'application/*', 'accept-encoding': 'gzip' },
    ...extra,
  });
}

/** POST of framed messages of one command. */
function command<T>(
  enclave: string,
  code: number,
  schema: MessageSchema<T>,
  msgs: MessageInit<T>[],
  extra: Partial<RawRequest> = {},
): Promise<Raw> {
  return post(enclave, Buffer.concat(msgs.map((m) => frameOf(code, schema, m))), extra);
}

/** Decodes a 200 response body into messages, checking the framing (codes, count). */
function decodeResponse<T>(r: Raw, code: number, schema: MessageSchema<T>, count: number, label: string): T[] {
  expectOk(r, label);
  const frames = parseFrames(r.body, count + 1);
  assert.equal(frames.length, count, `${label}: response frames`);
  return frames.map((f) => {
    assert.equal(f.code, code, `${label}: response frame code`);
    return decodeMessage(schema, f.payload);
  });
}

async function keyNames(): Promise<string[]> {
  const names: string[] = [];
  let continueAt = '';
  for (;;) {
    const page = await root.listKeys(ENCLAVE, { continueAt });
    names.push(...page.keys.map((k) => k.name));
    if (page.continueAt === '' || page.keys.length === 0) return names;
    continueAt = page.continueAt;
  }
}

async function assertAlive(label: string): Promise<void> {
  assert.equal(server.process.exitCode, null, `${label}: server exited:\n${server.output()}`);
  assert.equal(server.process.signalCode, null, `${label}: server killed:\n${server.output()}`);
  expectOk(await h2({ method: 'GET', path: '/v1/health/live' }), `${label}: live`);
  const r = await command(ENCLAVE, C.KeyStatus, M.KeyStatusRequestSchema, [{ name: 'k' }]);
  const [st] = decodeResponse(r, C.KeyStatus, M.KeyStatusResponseSchema, 1, `${label}: KEY:STATUS`);
  assert.equal(st!.name, 'k');
}

// -------------------------------------------------------------------------------------------
// Fixture state: what exists in the enclave on purpose. Everything else a case tried to create
// must not exist at the end.

const EXPECTED_KEYS = new Set(['k', 'k2', 'cc', 'rot', 'imported', 'a'.repeat(128), 'ok.name_1:2-3', 'dek']);
const EXPECTED_POLICIES = new Set(['p', 'weird']);
let adminKey: ReturnType<typeof generateApiKey>;
let tagged: string;
let ctK: Buffer; // ciphertext of SECRET under k v1 with AD
let ctRotV1: Buffer; // ciphertext of SECRET under rot v1 with AD
let ctCc: Buffer; // ciphertext of SECRET under cc (ChaCha20) with AD

describe('bad input over real mTLS', { timeout: 60_000 }, () => {
  before(async () => {
    server = await startServer();
    assert.ok(server.apiKey, 'server printed no root API key');
    rootCert = certificateForApiKey(parseApiKey(server.apiKey));
    root = clientFor(server, server.apiKey);
    await root.createEnclave(ENCLAVE);
    await root.createKey(ENCLAVE, { name: 'k' });
    await root.createKey(ENCLAVE, { name: 'k2' });
    await root.createKey(ENCLAVE, { name: 'cc', type: 'ChaCha20' });
    await root.createKey(ENCLAVE, { name: 'rot' });
    ctRotV1 = (await root.encrypt(ENCLAVE, [{ name: 'rot', plaintext: SECRET, associatedData: AD }]))[0]!.ciphertext;
    await root.createKey(ENCLAVE, { name: 'rot', addVersion: true });
    ctK = (await root.encrypt(ENCLAVE, [{ name: 'k', plaintext: SECRET, associatedData: AD }]))[0]!.ciphertext;
    ctCc = (await root.encrypt(ENCLAVE, [{ name: 'cc', plaintext: SECRET, associatedData: AD }]))[0]!.ciphertext;
    await root.createPolicy(ENCLAVE, { name: 'p', allow: { 'KEY:STATUS': { rules: { '*': {} } } } });
    adminKey = generateApiKey();
    await root.createIdentity(ENCLAVE, { identity: adminKey.identity, privilege: 'Admin' });
  });

  after(async () => {
    sessions.cert?.destroy();
    sessions.anon?.destroy();
    root?.close();
    if (server) {
      await server.stop();
      removeDir(dirname(server.dir)); // the temporary directory startServer made
    }
  });

  // ------------------------------------------------------------------ framing

  test('empty body → 400 request contains no command', async () => {
    expectError(await post(ENCLAVE, Buffer.alloc(0)), 'ERR_EMPTY_REQUEST', 'empty body', { exact: true });
    expectError(await post('', Buffer.alloc(0)), 'ERR_EMPTY_REQUEST', 'empty body, cluster', { exact: true });
    // HTTP/1.1 POST without any body (no Content-Length, no chunks).
    expectError(await h1({ path: kmsPath(ENCLAVE) }), 'ERR_EMPTY_REQUEST', 'HTTP/1.1 no body', { exact: true });
  });

  test('truncated frame header → 400 malformed frame', async () => {
    const status = frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' });
    const cases: [string, Buffer][] = [
      ['1 byte', Buffer.from([0x00])],
      ['2 bytes (code only)', Buffer.from([0x00, 0xcc])],
      ['5 bytes', Buffer.from([0x00, 0xcc, 0x00, 0x00, 0x00])],
      ['whole frame + 1 byte', Buffer.concat([status, Buffer.from([0x00])])],
      ['whole frame + 5 bytes', Buffer.concat([status, Buffer.from([0x00, 0xcc, 0x00, 0x00, 0x00])])],
    ];
    for (const [label, body] of cases) {
      expectError(await post(ENCLAVE, body), 'ERR_MALFORMED_FRAME', label, { detail: 'truncated frame header' });
      expectError(await h1({ path: kmsPath(ENCLAVE), body }), 'ERR_MALFORMED_FRAME', `HTTP/1.1 ${label}`, {
        detail: 'truncated frame header',
      });
    }
  });

  test('truncated payload and a length field claiming 4 GiB → 400 malformed frame', async () => {
    const payload = encodeMessage(M.KeyStatusRequestSchema, { name: 'k' });
    const lying = (n: number, code: number = C.KeyStatus) => {
      const b = Buffer.alloc(6);
      b.writeUInt16BE(code, 0);
      b.writeUInt32BE(n, 2);
      return b;
    };
    const cases: [string, Buffer][] = [
      ['payload 1 byte short', Buffer.concat([lying(payload.length + 1), payload])],
      ['header only, length 10', lying(10)],
      ['length 0xFFFFFFFF', Buffer.concat([lying(0xffffffff), payload])],
      ['length 0x80000000', Buffer.concat([lying(0x80000000), payload])],
      ['second frame truncated', Buffer.concat([frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' }), lying(100), payload])],
      ['4 GiB, unknown code', Buffer.concat([lying(0xffffffff, 999), payload])],
      [
        '4 GiB, write command',
        Buffer.concat([lying(0xffffffff, C.KeyCreate), encodeMessage(M.CreateKeyRequestSchema, { name: 'never-4g' })]),
      ],
    ];
    for (const [label, body] of cases) {
      expectError(await post(ENCLAVE, body), 'ERR_MALFORMED_FRAME', label, { detail: 'truncated frame payload' });
    }
    await assertAlive('after 4 GiB length');
  });

  test('trailing garbage after the last frame → 400, nothing runs', async () => {
    const create = frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-trailing' });
    expectError(await post(ENCLAVE, Buffer.concat([create, Buffer.from([0xde, 0xad])])), 'ERR_MALFORMED_FRAME', 'write + 2 bytes');
    expectError(await post(ENCLAVE, Buffer.concat([create, Buffer.from('garbage!')])), 'ERR_MALFORMED_FRAME', 'write + text');
    const status = frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' });
    expectError(await post(ENCLAVE, Buffer.concat([status, Buffer.from([0xff])])), 'ERR_MALFORMED_FRAME', 'read + 1 byte');
    // Six zero bytes after a frame are a (code 0) frame: a request mixing commands.
    expectError(await post(ENCLAVE, Buffer.concat([create, Buffer.alloc(6)])), 'ERR_MIXED_BATCH', 'write + zero frame', { exact: true });
    await rejectsNotFound('never-trailing');
  });

  test('unknown command codes → 400 unknown command', async () => {
    for (const code of [0, 7, 100, 105, 200, 211, 300, 307, 400, 405, 999, 0x8000, 65535]) {
      for (const enclave of ['', ENCLAVE]) {
        for (const payload of [Buffer.alloc(0), Buffer.from([0x0a, 0x01, 0x6b])]) {
          const r = await post(enclave, frame(code, payload));
          expectError(r, 'ERR_UNKNOWN_COMMAND', `code ${code} at '${enclave}'`);
        }
      }
      // Several frames of an unknown code, and an unknown code followed by a known one.
      expectError(await post(ENCLAVE, Buffer.concat([frame(code), frame(code)])), 'ERR_UNKNOWN_COMMAND', `2 × code ${code}`);
      expectError(await post(ENCLAVE, Buffer.concat([frame(code), frame(C.KeyList)])), 'ERR_UNKNOWN_COMMAND', `code ${code} + KEY:LIST`);
    }
  });

  test('mixed commands in one request → 400, nothing runs', async () => {
    const status = frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' });
    const generate = frameOf(C.KeyGenerate, M.GenerateKeyRequestSchema, { name: 'k' });
    const create = frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-mixed' });
    const createPolicy = frameOf(C.PolicyCreate, M.CreatePolicyRequestSchema, { name: 'never-mixed' });
    const cases: [string, string, Buffer][] = [
      ['KEY:STATUS + KEY:GENERATE', ENCLAVE, Buffer.concat([status, generate])],
      ['KEY:GENERATE + KEY:STATUS (secret first)', ENCLAVE, Buffer.concat([generate, status])],
      ['KEY:CREATE + KEY:STATUS', ENCLAVE, Buffer.concat([create, status])],
      ['KEY:STATUS + KEY:CREATE', ENCLAVE, Buffer.concat([status, create])],
      ['KEY:CREATE + POLICY:CREATE', ENCLAVE, Buffer.concat([create, createPolicy])],
      ['KEY:STATUS × 3 + KEY:CREATE', ENCLAVE, Buffer.concat([status, status, status, create])],
      [
        'ENCLAVE:CREATE + ENCLAVE:LIST',
        '',
        Buffer.concat([frameOf(C.EnclaveCreate, M.CreateEnclaveRequestSchema, { name: 'never-mixed' }), frame(C.EnclaveList)]),
      ],
    ];
    for (const [label, enclave, body] of cases) {
      const r = await post(enclave, body);
      expectError(r, 'ERR_MIXED_BATCH', label, { exact: true });
    }
    await rejectsNotFound('never-mixed');
    await rejectsPolicyNotFound('never-mixed');
    assert.ok(!(await root.listEnclaves()).enclaves.some((e) => e.name === 'never-mixed'), 'enclave created by a mixed request');
  });

  test('several frames of a non-batchable (write) command → 400, nothing written', async () => {
    const cases: [string, string, Buffer][] = [
      [
        'KEY:CREATE × 2',
        ENCLAVE,
        Buffer.concat(['never-batch-1', 'never-batch-2'].map((name) => frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name }))),
      ],
      [
        'KEY:IMPORT × 2',
        ENCLAVE,
        Buffer.concat(
          ['never-batch-3', 'never-batch-4'].map((name) =>
            frameOf(C.KeyImport, M.ImportKeyRequestSchema, { name, key: Buffer.alloc(32, 1) }),
          ),
        ),
      ],
      ['KEY:DELETE × 2', ENCLAVE, Buffer.concat(['k', 'k2'].map((name) => frameOf(C.KeyDelete, M.DeleteKeyRequestSchema, { name })))],
      [
        'KEY:CREATE (rotate) × 2',
        ENCLAVE,
        Buffer.concat([0, 1].map(() => frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'k', addVersion: true }))),
      ],
      [
        'POLICY:CREATE × 2',
        ENCLAVE,
        Buffer.concat(['never-batch-p1', 'never-batch-p2'].map((name) => frameOf(C.PolicyCreate, M.CreatePolicyRequestSchema, { name }))),
      ],
      ['POLICY:DELETE × 2', ENCLAVE, Buffer.concat([0, 1].map(() => frameOf(C.PolicyDelete, M.DeletePolicyRequestSchema, { name: 'p' })))],
      [
        'IDENTITY:CREATE × 2',
        ENCLAVE,
        Buffer.concat([0, 1].map(() => frameOf(C.IdentityCreate, M.CreateIdentityRequestSchema, { identity: generateApiKey().identity }))),
      ],
      [
        'IDENTITY:DELETE × 2',
        ENCLAVE,
        Buffer.concat([0, 1].map(() => frameOf(C.IdentityDelete, M.DeleteIdentityRequestSchema, { identity: adminKey.identity }))),
      ],
      [
        'ENCLAVE:CREATE × 2',
        '',
        Buffer.concat(['never-batch-e1', 'never-batch-e2'].map((name) => frameOf(C.EnclaveCreate, M.CreateEnclaveRequestSchema, { name }))),
      ],
      [
        'ENCLAVE:DELETE × 2',
        '',
        Buffer.concat([0, 1].map(() => frameOf(C.EnclaveDelete, M.DeleteEnclaveRequestSchema, { name: ENCLAVE }))),
      ],
      ['KEY:LIST × 2 (single-response read)', ENCLAVE, Buffer.concat([frame(C.KeyList), frame(C.KeyList)])],
      ['CLUSTER:STATUS × 2', '', Buffer.concat([frame(C.ClusterStatus), frame(C.ClusterStatus)])],
    ];
    for (const [label, enclave, body] of cases) {
      expectError(await post(enclave, body), 'ERR_BATCH_NOT_ALLOWED', label);
    }
    for (const name of ['never-batch-1', 'never-batch-2', 'never-batch-3', 'never-batch-4']) await rejectsNotFound(name);
    await rejectsPolicyNotFound('never-batch-p1');
    const [k] = await root.keyStatus(ENCLAVE, [{ name: 'k' }]);
    assert.equal(k!.version, 1, 'KEY:CREATE (rotate) × 2 added a version');
    assert.deepEqual(
      (await root.listEnclaves()).enclaves.map((e) => e.name),
      [ENCLAVE],
    );
    assert.equal((await root.getIdentity(ENCLAVE, [adminKey.identity]))[0]!.identity, adminKey.identity);
  });

  // ------------------------------------------------------------------ protobuf

  test('invalid protobuf in a known command → 400 malformed request: invalid protobuf message', async () => {
    const name = [0x0a, 0x01, 0x6b]; // field 1 = "k"
    const bad: [string, number[]][] = [
      ['varint overflow (11 bytes)', [...name, 0x10, ...Array(10).fill(0xff), 0x01]],
      ['varint 10th byte > 1', [...name, 0x10, ...Array(9).fill(0xff), 0x02]],
      ['truncated varint', [...name, 0x10, 0x80]],
      ['truncated varint at end of tag', [0x80]],
      ['field number 0', [0x00, 0x00]],
      ['wire type 6', [0x0e, 0x00]],
      ['wire type 7', [0x0f, 0x00]],
      ['start group', [0x0b]],
      ['end group', [0x0c]],
      ['string field as varint', [0x08, 0x05]],
      ['string field as fixed32', [0x0d, 1, 2, 3, 4]],
      ['uint32 field as bytes', [...name, 0x12, 0x01, 0x41]],
      ['invalid UTF-8 in name (c3 28)', [0x0a, 0x02, 0xc3, 0x28]],
      ['invalid UTF-8 in name (lone continuation)', [0x0a, 0x01, 0x80]],
      ['invalid UTF-8 in name (overlong /)', [0x0a, 0x02, 0xc0, 0xaf]],
      ['invalid UTF-8 in name (surrogate)', [0x0a, 0x03, 0xed, 0xa0, 0x80]],
      ['invalid UTF-8 in a long name', [0x0a, 0x50, ...Array(79).fill(0x61), 0xff]],
      ['truncated length-delimited field', [0x0a, 0x10, 0x61, 0x62]],
      ['length prefix 2^32', [0x0a, 0x80, 0x80, 0x80, 0x80, 0x10, 0x61]],
      ['truncated unknown length-delimited field', [...name, 0x7a, 0x05, 0x00]],
      ['truncated unknown fixed64', [...name, 0x79, 0x00]],
      ['field number 2^29 (too large)', [0x80, 0x80, 0x80, 0x80, 0x10, 0x00]],
    ];
    const UINT32_FIELD_2 = new Set<number>([C.KeyStatus, C.KeyGenerate, C.KeyDecrypt, C.KeyDelete]);
    const commands: [string, number, string][] = [
      ['KEY:STATUS', C.KeyStatus, ENCLAVE],
      ['KEY:GENERATE', C.KeyGenerate, ENCLAVE],
      ['KEY:DECRYPT', C.KeyDecrypt, ENCLAVE],
      ['KEY:CREATE', C.KeyCreate, ENCLAVE],
      ['KEY:IMPORT', C.KeyImport, ENCLAVE],
      ['KEY:DELETE', C.KeyDelete, ENCLAVE],
      ['POLICY:CREATE', C.PolicyCreate, ENCLAVE],
      ['IDENTITY:CREATE', C.IdentityCreate, ENCLAVE],
      ['ENCLAVE:CREATE', C.EnclaveCreate, ''],
      ['ENCLAVE:DELETE', C.EnclaveDelete, ''],
    ];
    for (const [cmd, code, enclave] of commands) {
      for (const [label, bytes] of bad) {
        // A field of the wrong wire type is only an error for fields the message knows;
        // field 2 is a string in some messages and a uint32 in others.
        if (label === 'uint32 field as bytes' && !UINT32_FIELD_2.has(code)) continue;
        const r = await post(enclave, frame(code, bytes));
        expectError(r, 'ERR_MALFORMED_MESSAGE', `${cmd}: ${label}`);
      }
    }
    // Malformed nested messages and map entries.
    const nested: [string, number, number[]][] = [
      ['POLICY:CREATE allow entry truncated', C.PolicyCreate, [0x0a, 0x01, 0x70, 0x12, 0x05, 0x0a, 0x0a, 0x4b]],
      ['POLICY:CREATE allow key not a string', C.PolicyCreate, [0x0a, 0x01, 0x70, 0x12, 0x02, 0x08, 0x01]],
      [
        'POLICY:CREATE rule set with invalid UTF-8 pattern',
        C.PolicyCreate,
        [0x0a, 0x01, 0x70, 0x12, 0x0b, 0x0a, 0x03, 0x4b, 0x3a, 0x53, 0x12, 0x04, 0x0a, 0x02, 0x0a, 0xff],
      ],
      ['IDENTITY:CREATE tag value not a string', C.IdentityCreate, [0x22, 0x05, 0x0a, 0x01, 0x61, 0x10, 0x01]],
      ['IDENTITY:CREATE tag key invalid UTF-8', C.IdentityCreate, [0x22, 0x06, 0x0a, 0x01, 0xfe, 0x12, 0x01, 0x61]],
      ['IDENTITY:CREATE tag entry overruns', C.IdentityCreate, [0x22, 0x09, 0x0a, 0x01, 0x61]],
    ];
    for (const [label, code, bytes] of nested) expectError(await post(ENCLAVE, frame(code, bytes)), 'ERR_MALFORMED_MESSAGE', label);

    // A batch whose second frame is malformed: the whole request fails, no partial answer
    // (and no DEK from the first frame).
    const good = frameOf(C.KeyGenerate, M.GenerateKeyRequestSchema, { name: 'k' });
    const r = await post(ENCLAVE, Buffer.concat([good, frame(C.KeyGenerate, [0x0a, 0x02, 0xc3, 0x28])]));
    expectError(r, 'ERR_MALFORMED_MESSAGE', 'batch with malformed second frame');
  });

  // ------------------------------------------------------------------ limits

  test('body over 16 MiB → 413, server stays up', async () => {
    // Streamed without Content-Length: the limit applies while reading.
    const big = Buffer.alloc(MAX_BODY + 1024 * 1024);
    expectError(await post(ENCLAVE, big, { noContentLength: true, fresh: true }), 'ERR_TOO_LARGE', 'HTTP/2 17 MiB streamed', {
      exact: true,
    });
    await assertAlive('after 17 MiB streamed');
    // With an honest Content-Length over the limit.
    expectError(await post(ENCLAVE, big, { fresh: true }), 'ERR_TOO_LARGE', 'HTTP/2 17 MiB with content-length', { exact: true });
    await assertAlive('after 17 MiB with content-length');
    // Exactly one byte over the limit, and exactly at the limit (then a malformed-frame answer).
    const over = Buffer.alloc(MAX_BODY + 1);
    expectError(await post(ENCLAVE, over, { fresh: true }), 'ERR_TOO_LARGE', 'limit + 1', { exact: true });
    const at = Buffer.alloc(MAX_BODY);
    at.writeUInt16BE(C.KeyStatus, 0);
    at.writeUInt32BE(MAX_BODY - 6, 2); // one frame filling the body: an (all-zero) field-0 message
    expectError(await post(ENCLAVE, at, { fresh: true }), 'ERR_MALFORMED_MESSAGE', 'exactly at the limit');
    // HTTP/1.1, chunked and with Content-Length, over the limit.
    expectError(await h1({ path: kmsPath(ENCLAVE), body: big, noContentLength: true }), 'ERR_TOO_LARGE', 'HTTP/1.1 17 MiB chunked', {
      exact: true,
    });
    expectError(await h1({ path: kmsPath(ENCLAVE), body: big }), 'ERR_TOO_LARGE', 'HTTP/1.1 17 MiB with content-length', { exact: true });
    // A big body for a path or method that takes none: the error still arrives (the body is
    // discarded, not left to reset the stream).
    expectError(await h2({ path: '/nope', body: big, fresh: true }), 'ERR_NOT_FOUND', 'HTTP/2 17 MiB to /nope', { exact: true });
    expectError(
      await h2({ method: 'PUT', path: kmsPath(ENCLAVE), body: big, fresh: true }),
      'ERR_METHOD_NOT_ALLOWED',
      'HTTP/2 17 MiB PUT',
      { exact: true },
    );
    expectError(await h2({ path: '/v1/kms/%ZZ', body: big, fresh: true }), 'ERR_BAD_REQUEST', 'HTTP/2 17 MiB to /v1/kms/%ZZ');
    // Unauthenticated callers are refused before their body is read.
    expectError(
      await h2({ path: kmsPath(ENCLAVE), body: big, fresh: true, anon: true }),
      'ERR_NOT_ALLOWED',
      'HTTP/2 17 MiB without certificate',
      { exact: true },
    );
    // HTTP/1.1 to a path that takes no body: 64 KiB of it is read, then the connection is closed
    // (docs/security.md), lingering so that the client still writing reads the 404 first.
    for (let i = 0; i < 5; i++)
      expectError(await h1({ path: '/nope', body: big }), 'ERR_NOT_FOUND', `HTTP/1.1 17 MiB to /nope (${i})`, { exact: true });
    await assertAlive('after HTTP/1.1 17 MiB');
  });

  test('a Content-Length header over the limit → 413 before any body is sent', async () => {
    for (const len of [MAX_BODY + 1, 17 * 1024 * 1024, 2 ** 32, 2 ** 53]) {
      const r = await post(ENCLAVE, Buffer.alloc(1), { headers: { 'content-length': String(len) }, headersOnly: true, fresh: true });
      expectError(r, 'ERR_TOO_LARGE', `HTTP/2 content-length ${len}`, { exact: true });
      const r1 = await h1({ path: kmsPath(ENCLAVE), headers: { 'content-length': String(len) }, headersOnly: true });
      expectError(r1, 'ERR_TOO_LARGE', `HTTP/1.1 content-length ${len}`, { exact: true });
    }
    await assertAlive('after big content-length headers');
  });

  test('more than 10,000 frames → 413; exactly 10,000 are served', async () => {
    const status = frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' });
    const r = await post(ENCLAVE, Buffer.concat(Array(MAX_FRAMES + 1).fill(status)));
    expectError(r, 'ERR_TOO_MANY_FRAMES', '10,001 frames', { exact: true });
    expectError(await post(ENCLAVE, Buffer.alloc(6 * 50_000)), 'ERR_TOO_MANY_FRAMES', '50,000 empty frames', { exact: true });
    const ok = await post(ENCLAVE, Buffer.concat(Array(MAX_FRAMES).fill(status)));
    const all = decodeResponse(ok, C.KeyStatus, M.KeyStatusResponseSchema, MAX_FRAMES, '10,000 frames');
    assert.ok(all.every((s) => s.name === 'k' && s.version === 1));
    // 10,001 writes are refused as too many before anything runs.
    const creates = Buffer.concat(Array(MAX_FRAMES + 1).fill(frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-many' })));
    expectError(await post(ENCLAVE, creates), 'ERR_TOO_MANY_FRAMES', '10,001 KEY:CREATE', { exact: true });
    await rejectsNotFound('never-many');
    await assertAlive('after too many frames');
  });

  test('aborted and lying requests do not take the server down or write anything', async () => {
    // A Content-Length that does not match the body is a malformed HTTP/2 request (RFC 9113
    // §8.1.1): the stream is reset with PROTOCOL_ERROR and nothing runs.
    const create = frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-abort' });
    for (const len of [create.length + 10, create.length - 2]) {
      await assert.rejects(
        post(ENCLAVE, create, { headers: { 'content-length': String(len) }, fresh: true }),
        /PROTOCOL_ERROR/,
        `content-length ${len} for ${create.length} bytes`,
      );
    }
    // Headers, half a body, then the client resets the stream / destroys the connection.
    for (const how of ['rst', 'destroy'] as const) {
      const s = connect(rootCert);
      const stream = s.request({ ':method': 'POST', ':path': kmsPath(ENCLAVE), 'content-length': create.length }, { endStream: false });
      stream.on('error', () => {});
      stream.write(create.subarray(0, 8));
      await waitFor(`${how}: the server serving the half-sent request`, async () => (await inflightRequests(root)) >= 1);
      if (how === 'rst') stream.close(http2.constants.NGHTTP2_CANCEL);
      else s.destroy();
      await waitFor(`${how}: the server letting go of it`, async () => (await inflightRequests(root)) === 0);
      s.destroy();
    }
    // HTTP/1.1 connection closed mid-body.
    const req = https.request({
      host: '127.0.0.1',
      port: server.port,
      method: 'POST',
      path: kmsPath(ENCLAVE),
      ca: server.caPem,
      cert: rootCert.cert,
      key: rootCert.key,
      agent: false,
      headers: { 'content-length': create.length },
    });
    const gone = new Promise<void>((resolve) => {
      req.on('error', () => resolve());
      req.on('close', () => resolve());
    });
    req.write(create.subarray(0, 8));
    await waitFor('HTTP/1.1: the server serving the half-sent request', async () => (await inflightRequests(root)) >= 1);
    req.destroy();
    await gone;
    await waitFor('HTTP/1.1: the server letting go of it', async () => (await inflightRequests(root)) === 0);
    await rejectsNotFound('never-abort');
    await assertAlive('after aborted requests');
  });

  // ------------------------------------------------------------------ names and arguments

  const BAD_NAMES: string[] = [
    'a/b',
    '..',
    '.',
    '.hidden',
    '*',
    'k*',
    '',
    'a'.repeat(129),
    'ключ',
    'é',
    '🔑',
    'a b',
    ' a',
    'a ',
    '-a',
    '_a',
    ':a',
    'a\u0000b',
    'a\nb',
    'a%2Fb',
    'a\\b',
    'a?b',
    'a#b',
  ];

  test('names outside the charset → 400 invalid name (enclave, key, import, policy)', async () => {
    for (const name of BAD_NAMES) {
      const label = JSON.stringify(name);
      expectError(await command('', C.EnclaveCreate, M.CreateEnclaveRequestSchema, [{ name }]), 'ERR_INVALID_NAME', `enclave ${label}`);
      expectError(await command(ENCLAVE, C.KeyCreate, M.CreateKeyRequestSchema, [{ name }]), 'ERR_INVALID_NAME', `key ${label}`);
      expectError(
        await command(ENCLAVE, C.KeyImport, M.ImportKeyRequestSchema, [{ name, key: Buffer.alloc(32, 2) }]),
        'ERR_INVALID_NAME',
        `import ${label}`,
      );
      expectError(await command(ENCLAVE, C.PolicyCreate, M.CreatePolicyRequestSchema, [{ name }]), 'ERR_INVALID_NAME', `policy ${label}`);
    }
    // The boundaries are accepted.
    expectOk(await command(ENCLAVE, C.KeyCreate, M.CreateKeyRequestSchema, [{ name: 'a'.repeat(128) }]), '128-character key name');
    expectOk(await command(ENCLAVE, C.KeyCreate, M.CreateKeyRequestSchema, [{ name: 'ok.name_1:2-3' }]), 'all allowed characters');
    assert.deepEqual(
      (await root.listEnclaves()).enclaves.map((e) => e.name),
      [ENCLAVE],
    );
  });

  test('invalid identities in IDENTITY:CREATE / POLICY:ASSIGN → 400 invalid identity', async () => {
    const valid = generateApiKey().identity;
    const bad = [
      '',
      'h1:short',
      'h1:',
      'k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E',
      server.apiKey, // the root API key itself: never echoed
      'h1:XCYpGV3rHlfQH10EQ85UbomqW08Chx5Z0ZBTFKpfGqQs', // 44-character payload
      'h1:rakZkIp7uZSoIo1zXl52o75m3GWBK20EntBW4zd-oQ', // 42-character payload
      '46fc5aee78fcce42f8f0278390de8b8695fe2bb28aeae84886904e7131cd856c', // KES hex identity
      'H1:' + valid.slice(3),
      valid.slice(0, -1) + '=',
      valid.slice(0, 10) + '+' + valid.slice(11), // standard, not URL, base64
      ' ' + valid,
      valid + '\n',
    ];
    for (const identity of bad) {
      const label = JSON.stringify(identity.slice(0, 20));
      expectError(
        await command(ENCLAVE, C.IdentityCreate, M.CreateIdentityRequestSchema, [{ identity }]),
        'ERR_INVALID_IDENTITY',
        `IDENTITY:CREATE ${label}`,
        { exact: true },
      );
      expectError(
        await command(ENCLAVE, C.PolicyAssign, M.AssignPolicyRequestSchema, [{ identity, policy: 'p' }]),
        'ERR_INVALID_IDENTITY',
        `POLICY:ASSIGN ${label}`,
        { exact: true },
      );
    }
    // A valid identity the enclave does not know.
    expectError(
      await command(ENCLAVE, C.PolicyAssign, M.AssignPolicyRequestSchema, [{ identity: valid, policy: 'p' }]),
      'ERR_IDENTITY_NOT_FOUND',
      'assign to unknown identity',
      { exact: true },
    );
    const ids = (await root.listIdentities(ENCLAVE)).identities.map((i) => i.identity);
    assert.deepEqual(ids, [adminKey.identity]);
  });

  test('invalid privilege → 400 invalid privilege', async () => {
    for (const privilege of [
      'root',
      'superadmin',
      'Admin ',
      ' User',
      'admin2',
      '1',
      'Sys Admin',
      'ADMIN\u0000',
      'Administrator',
      'user,admin',
    ]) {
      const identity = generateApiKey().identity;
      const r = await command(ENCLAVE, C.IdentityCreate, M.CreateIdentityRequestSchema, [{ identity, privilege }]);
      expectError(r, 'ERR_INVALID_PRIVILEGE', `privilege ${JSON.stringify(privilege)}`);
      expectError(
        await command(ENCLAVE, C.IdentityStatus, M.IdentityRequestSchema, [{ identity }]),
        'ERR_IDENTITY_NOT_FOUND',
        'created anyway',
        { exact: true },
      );
    }
  });

  test('tags: too many, too long, bad charset → 400 invalid identity tag; limits themselves are fine', async () => {
    const tags = (n: number, k = (i: number) => `k${i}`, v = (i: number) => `v${i}`) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [k(i), v(i)]));
    const bad: [string, Record<string, string>][] = [
      ['33 tags', tags(33)],
      ['100 tags', tags(100)],
      ['key of 65', { ['k'.repeat(65)]: 'v' }],
      ['value of 257', { k: 'v'.repeat(257) }],
      ['empty key', { '': 'v' }],
      ['key with space', { 'a b': 'v' }],
      ['key with *', { 'a*': 'v' }],
      ['key with :', { 'a:b': 'v' }],
      ['value with space', { k: 'a b' }],
      ['value with =', { k: 'a=b' }],
      ['unicode key', { ключ: 'v' }],
      ['unicode value', { k: 'é' }],
      ['NUL in value', { k: 'a\u0000' }],
      ['newline in key', { 'a\n': 'v' }],
    ];
    for (const [label, t] of bad) {
      const identity = generateApiKey().identity;
      const r = await command(ENCLAVE, C.IdentityCreate, M.CreateIdentityRequestSchema, [{ identity, tags: t }]);
      expectError(r, 'ERR_INVALID_TAG', label);
      expectError(
        await command(ENCLAVE, C.IdentityStatus, M.IdentityRequestSchema, [{ identity }]),
        'ERR_IDENTITY_NOT_FOUND',
        `${label}: created anyway`,
        { exact: true },
      );
    }
    // At the limits: 32 tags, 64-character keys, 256-character values; and keys that are
    // special in JavaScript objects.
    const edge: Record<string, string> = tags(
      30,
      (i) => `${String(i).padStart(2, '0')}${'k'.repeat(62)}`,
      () => 'v'.repeat(256),
    );
    Object.defineProperty(edge, '__proto__', { value: 'p', enumerable: true, writable: true, configurable: true });
    edge['constructor'] = 'a/b';
    assert.equal(Object.keys(edge).length, 32);
    tagged = generateApiKey().identity;
    expectOk(
      await command(ENCLAVE, C.IdentityCreate, M.CreateIdentityRequestSchema, [{ identity: tagged, tags: edge }]),
      '32 tags at the limits',
    );
    const [info] = decodeResponse(
      await command(ENCLAVE, C.IdentityStatus, M.IdentityRequestSchema, [{ identity: tagged }]),
      C.IdentityStatus,
      M.IdentityResponseSchema,
      1,
      'tagged identity',
    );
    assert.deepEqual(Object.keys(info!.tags).sort(), Object.keys(edge).sort());
    assert.equal(info!.tags['__proto__'], 'p');
    assert.equal(Object.getPrototypeOf(info!.tags), Object.prototype);
  });

  test('policies: unknown command names → 400 invalid policy; odd patterns are data', async () => {
    for (const cmd of ['KEY:FOO', 'KEY:IMPORT', '*', '', 'KEY', '__proto__', 'KEY:STATUS ']) {
      const r = await command(ENCLAVE, C.PolicyCreate, M.CreatePolicyRequestSchema, [
        { name: 'never-policy', allow: { [cmd]: { rules: { '*': {} } } } },
      ]);
      expectError(r, 'ERR_INVALID_POLICY', `allow ${JSON.stringify(cmd)}`);
      const d = await command(ENCLAVE, C.PolicyCreate, M.CreatePolicyRequestSchema, [
        { name: 'never-policy', deny: { [cmd]: { rules: { '*': {} } } } },
      ]);
      expectError(d, 'ERR_INVALID_POLICY', `deny ${JSON.stringify(cmd)}`);
    }
    await rejectsPolicyNotFound('never-policy');
    // A pattern with characters no name can have could never match: refused, not stored.
    expectError(
      await command(ENCLAVE, C.PolicyCreate, M.CreatePolicyRequestSchema, [
        { name: 'never-policy', allow: { 'key:status': { rules: { 'a/b': {} } } } },
      ]),
      'ERR_INVALID_POLICY',
      'pattern a/b',
    );
    const rules = { rules: { ['__proto__']: {}, constructor: {}, '': {} } };
    expectOk(
      await command(ENCLAVE, C.PolicyCreate, M.CreatePolicyRequestSchema, [{ name: 'weird', allow: { 'key:status': rules } }]),
      'odd patterns',
    );
    const [p] = decodeResponse(
      await command(ENCLAVE, C.PolicyGet, M.PolicyRequestSchema, [{ name: 'weird' }]),
      C.PolicyGet,
      M.PolicyResponseSchema,
      1,
      'POLICY:GET weird',
    );
    assert.deepEqual(Object.keys(p!.allow), ['KEY:STATUS']);
    assert.deepEqual(Object.keys(p!.allow['KEY:STATUS']!.rules).sort(), ['__proto__', 'constructor']);
  });

  test('DEK lengths: 1025 and 2^32-1 → 400; 0 (= 32), 1, 1024 work and decrypt', async () => {
    for (const length of [1025, 2048, 0xffffffff]) {
      const r = await command(ENCLAVE, C.KeyGenerate, M.GenerateKeyRequestSchema, [{ name: 'k', length }]);
      expectError(r, 'ERR_INVALID_DEK_LENGTH', `length ${length}`, { exact: true });
    }
    // A batch with one bad length: no DEK of the good frames leaks out.
    const r = await command(ENCLAVE, C.KeyGenerate, M.GenerateKeyRequestSchema, [
      { name: 'k', length: 64 },
      { name: 'k', length: 1025 },
    ]);
    expectError(r, 'ERR_INVALID_DEK_LENGTH', 'batch with a bad length', { exact: true });
    assert.ok(r.body.length < 200, 'error body is only the message');
    await root.createKey(ENCLAVE, { name: 'dek', type: 'ChaCha20' });
    for (const name of ['k', 'dek']) {
      for (const [length, want] of [
        [0, 32],
        [1, 1],
        [1024, 1024],
      ] as const) {
        const res = await command(ENCLAVE, C.KeyGenerate, M.GenerateKeyRequestSchema, [{ name, length, associatedData: AD }]);
        const [dek] = decodeResponse(res, C.KeyGenerate, M.GenerateKeyResponseSchema, 1, `${name} length ${length}`);
        assert.equal(dek!.plaintext.length, want);
        assert.equal(dek!.ciphertext.length, want + 44);
        const [back] = await root.decrypt(ENCLAVE, [{ name, version: dek!.version, ciphertext: dek!.ciphertext, associatedData: AD }]);
        assert.deepEqual(back!.plaintext, dek!.plaintext);
      }
    }
  });

  test('KEY:IMPORT with 31/33/0/64 bytes → 400 invalid key length; unknown key types → 400', async () => {
    for (const type of ['', 'AES256', 'ChaCha20']) {
      for (const n of [0, 1, 31, 33, 64]) {
        const r = await command(ENCLAVE, C.KeyImport, M.ImportKeyRequestSchema, [{ name: 'never-import', type, key: Buffer.alloc(n, 3) }]);
        expectError(r, 'ERR_INVALID_KEY_LENGTH', `import ${type || 'default'} ${n} bytes`);
        assert.ok(!r.body.includes(Buffer.alloc(Math.max(n, 8), 3)), 'key material echoed');
      }
    }
    for (const type of ['AES128', 'aes-256', 'AES256 ', ' ChaCha20', 'XChaCha20-Poly1305', 'RSA', 'AES256\u0000', 'null', '*']) {
      expectError(
        await command(ENCLAVE, C.KeyCreate, M.CreateKeyRequestSchema, [{ name: 'never-type', type }]),
        'ERR_INVALID_KEY_TYPE',
        `create type ${JSON.stringify(type)}`,
      );
      expectError(
        await command(ENCLAVE, C.KeyImport, M.ImportKeyRequestSchema, [{ name: 'never-type', type, key: Buffer.alloc(32, 4) }]),
        'ERR_INVALID_KEY_TYPE',
        `import type ${JSON.stringify(type)}`,
      );
      expectError(
        await command(ENCLAVE, C.KeyCreate, M.CreateKeyRequestSchema, [{ name: 'k', type, addVersion: true }]),
        'ERR_INVALID_KEY_TYPE',
        `rotate type ${JSON.stringify(type)}`,
      );
    }
    await rejectsNotFound('never-import');
    await rejectsNotFound('never-type');
    expectOk(
      await command(ENCLAVE, C.KeyImport, M.ImportKeyRequestSchema, [{ name: 'imported', key: Buffer.alloc(32, 5) }]),
      'import 32 bytes',
    );
    expectError(
      await command(ENCLAVE, C.KeyImport, M.ImportKeyRequestSchema, [{ name: 'imported', key: Buffer.alloc(32, 6) }]),
      'ERR_KEY_EXISTS',
      'import again',
      { exact: true },
    );
    const [k] = await root.keyStatus(ENCLAVE, [{ name: 'k' }]);
    assert.equal(k!.version, 1, 'a rotation with a bad type added a version');
  });

  test('KEY:DELETE with all_versions and a version → 400, key intact; missing versions → 404', async () => {
    for (const version of [1, 2, 0xffffffff]) {
      const r = await command(ENCLAVE, C.KeyDelete, M.DeleteKeyRequestSchema, [{ name: 'rot', version, allVersions: true }]);
      expectError(r, 'ERR_BAD_REQUEST', `all_versions + version ${version}`, { detail: /all_versions/ });
    }
    expectError(
      await command(ENCLAVE, C.KeyDelete, M.DeleteKeyRequestSchema, [{ name: 'rot', version: 99 }]),
      'ERR_KEY_NOT_FOUND',
      'delete version 99',
      { exact: true },
    );
    expectError(
      await command(ENCLAVE, C.KeyDelete, M.DeleteKeyRequestSchema, [{ name: 'nope' }]),
      'ERR_KEY_NOT_FOUND',
      'delete missing key',
      { exact: true },
    );
    const st = await root.keyStatus(ENCLAVE, [
      { name: 'rot', version: 1 },
      { name: 'rot', version: 2 },
    ]);
    assert.deepEqual(
      st.map((s) => s.version),
      [1, 2],
    );
  });

  // ------------------------------------------------------------------ decryption

  /** KEY:DECRYPT that must fail with exactly 400 `invalid ciphertext` and leak nothing. */
  async function decryptFails(
    req: MessageInit<M.DecryptRequest>,
    label: string,
    batch: MessageInit<M.DecryptRequest>[] = [],
  ): Promise<void> {
    const r = await command(ENCLAVE, C.KeyDecrypt, M.DecryptRequestSchema, [...batch, req]);
    expectError(r, 'ERR_DECRYPT', label, { exact: true });
    assert.equal(r.body.toString('utf8'), '{"message":"invalid ciphertext"}', `${label}: body`);
  }

  test('KEY:DECRYPT failures all answer exactly 400 invalid ciphertext', async () => {
    const ok = { name: 'k', version: 1, ciphertext: ctK, associatedData: AD };
    const [back] = decodeResponse(
      await command(ENCLAVE, C.KeyDecrypt, M.DecryptRequestSchema, [ok]),
      C.KeyDecrypt,
      M.DecryptResponseSchema,
      1,
      'good decrypt',
    );
    assert.deepEqual(back!.plaintext, SECRET);

    for (const version of [0, 1]) {
      const v = { name: 'k', version, associatedData: AD };
      await decryptFails({ ...v, ciphertext: Buffer.alloc(0) }, `v${version} empty`);
      await decryptFails({ ...v, ciphertext: Buffer.from([0x42]) }, `v${version} 1 byte`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(27) }, `v${version} 27 bytes`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(28) }, `v${version} 28 bytes`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(43) }, `v${version} 43 zero bytes`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(44) }, `v${version} 44 zero bytes`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(76) }, `v${version} 76 zero bytes`);
      await decryptFails({ ...v, ciphertext: Buffer.alloc(4096, 0xff) }, `v${version} 4096 × ff`);
      await decryptFails({ ...v, ciphertext: ctK.subarray(0, -1) }, `v${version} one byte short`);
      await decryptFails({ ...v, ciphertext: Buffer.concat([ctK, Buffer.from([0])]) }, `v${version} one byte extra`);
      await decryptFails({ ...v, ciphertext: ctK.subarray(1) }, `v${version} first byte cut`);
      await decryptFails({ ...v, ciphertext: Buffer.from(ctK.toString('base64')) }, `v${version} base64 text`);
      await decryptFails({ ...v, ciphertext: ctK, associatedData: Buffer.alloc(0) }, `v${version} AD missing`);
      await decryptFails({ ...v, ciphertext: ctK, associatedData: Buffer.from('{"bucket":"b","object":"O"}') }, `v${version} AD differs`);
      await decryptFails({ ...v, ciphertext: ctK, associatedData: Buffer.concat([AD, Buffer.from(' ')]) }, `v${version} AD longer`);
      await decryptFails({ ...v, name: 'k2', ciphertext: ctK }, `v${version} other key`);
      await decryptFails({ ...v, name: 'cc', ciphertext: ctK }, `v${version} ChaCha20 key, AES ciphertext`);
      await decryptFails({ ...v, ciphertext: ctCc }, `v${version} AES key, ChaCha20 ciphertext`);
    }
    // Wrong explicit version of the same key (rot has versions 1 and 2).
    await decryptFails({ name: 'rot', version: 2, ciphertext: ctRotV1, associatedData: AD }, 'rot v1 ciphertext as v2');
    await decryptFails({ name: 'rot', version: 1, ciphertext: ctRotV1, associatedData: Buffer.alloc(0) }, 'rot v1, wrong AD');
    await decryptFails(
      { name: 'rot', version: 0, ciphertext: ctRotV1, associatedData: Buffer.from('x') },
      'rot v0 (all versions), wrong AD',
    );
    const [rot] = await root.decrypt(ENCLAVE, [{ name: 'rot', version: 0, ciphertext: ctRotV1, associatedData: AD }]);
    assert.deepEqual(rot!.plaintext, SECRET, 'version 0 decrypts an older version');
    // A version that does not exist is a missing key, as for every other command.
    const missing = await command(ENCLAVE, C.KeyDecrypt, M.DecryptRequestSchema, [
      { name: 'rot', version: 3, ciphertext: ctRotV1, associatedData: AD },
    ]);
    expectError(missing, 'ERR_KEY_NOT_FOUND', 'rot v3', { exact: true });

    // A batch whose last frame fails: the plaintexts of the good frames must not come back.
    await decryptFails({ ...ok, ciphertext: Buffer.alloc(44) }, 'batch: good, good, bad', [ok, ok]);
    await decryptFails({ ...ok, name: 'k2' }, 'batch: good, other key', [ok]);
  });

  test('KEY:DECRYPT with one flipped bit at every byte position → 400 invalid ciphertext', async () => {
    for (const [name, ct] of [
      ['k', ctK],
      ['cc', ctCc],
    ] as const) {
      for (let i = 0; i < ct.length; i++) {
        const bad = Buffer.from(ct);
        bad[i]! ^= 1 << (i % 8);
        const r = await command(ENCLAVE, C.KeyDecrypt, M.DecryptRequestSchema, [{ name, version: 1, ciphertext: bad, associatedData: AD }]);
        expectError(r, 'ERR_DECRYPT', `${name}: bit ${i % 8} of byte ${i}`, { exact: true });
        assert.ok(!r.body.includes(SECRET.subarray(0, 8)), `${name} byte ${i}: plaintext in the response`);
      }
    }
  });

  // ------------------------------------------------------------------ paths and methods

  test('enclave paths: percent-encoding, wrong enclave, enclave-less enclave commands', async () => {
    const list = frame(C.KeyList);
    // Percent-decoded enclave names (kms-wire.md §8.2).
    const good = await h2({ path: '/v1/kms/b%61d', body: list });
    const [page] = decodeResponse(good, C.KeyList, M.ListKeysResponseSchema, 1, '/v1/kms/b%61d');
    assert.ok(page!.keys.some((k) => k.name === 'k'));
    for (const path of [
      '/v1/kms/a%2Fb',
      '/v1/kms/nope',
      '/v1/kms/bad%00',
      '/v1/kms/bad/extra',
      '/v1/kms/bad%2F',
      '/v1/kms/%E2%82%AC',
      '/v1/kms/BAD',
    ]) {
      expectError(await h2({ path, body: list }), 'ERR_ENCLAVE_NOT_FOUND', path, { exact: true });
    }
    for (const path of ['/v1/kms/%ZZ', '/v1/kms/%', '/v1/kms/bad%', '/v1/kms/%C3%28', '/v1/kms/%FF']) {
      expectError(await h2({ path, body: list }), 'ERR_BAD_REQUEST', path, { detail: 'invalid path encoding' });
    }
    // Enclave commands without an enclave.
    for (const path of ['/v1/kms', '/v1/kms/']) {
      expectError(await h2({ path, body: list }), 'ERR_ENCLAVE_REQUIRED', `KEY:LIST at ${path}`, { exact: true });
      const create = frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-path' });
      expectError(await h2({ path, body: create }), 'ERR_ENCLAVE_REQUIRED', `KEY:CREATE at ${path}`, { exact: true });
    }
    // An enclave Admin is unknown in every other enclave, and cannot run cluster commands.
    const admin = certificateForApiKey(adminKey);
    expectOk(await h2({ path: kmsPath(ENCLAVE), body: list, cert: admin }), 'admin in its enclave');
    expectError(await h2({ path: '/v1/kms/nope', body: list, cert: admin }), 'ERR_NOT_ALLOWED', 'admin in a missing enclave', {
      exact: true,
    });
    expectError(await h2({ path: '/v1/kms', body: frame(C.EnclaveList), cert: admin }), 'ERR_NOT_ALLOWED', 'admin: ENCLAVE:LIST', {
      exact: true,
    });
    expectError(
      await h2({ path: '/v1/kms', body: frameOf(C.EnclaveCreate, M.CreateEnclaveRequestSchema, { name: 'never-admin' }), cert: admin }),
      'ERR_NOT_ALLOWED',
      'admin: ENCLAVE:CREATE',
      { exact: true },
    );
    // An identity nobody registered.
    const stranger = certificateForApiKey(generateApiKey());
    expectError(await h2({ path: kmsPath(ENCLAVE), body: list, cert: stranger }), 'ERR_NOT_ALLOWED', 'unknown identity', { exact: true });
    expectError(
      await h2({ path: kmsPath(ENCLAVE), body: frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-path' }), cert: stranger }),
      'ERR_NOT_ALLOWED',
      'unknown identity: KEY:CREATE',
      { exact: true },
    );
    await rejectsNotFound('never-path');
  });

  test('unknown paths → 404, wrong methods on known paths → 405 (HTTP/2 and HTTP/1.1)', async () => {
    const notFound = [
      '/',
      '/v1',
      '/v1/',
      '/v1/kmsx',
      '/v1/km',
      '/v1/health',
      '/v1/health/',
      '/v1/health/livex',
      '/version/',
      '/VERSION',
      '/v2/kms',
      '/v1/rpc/replicate',
      '/v1/dbx',
      '/%ZZ',
      '/v1/KMS/bad',
    ];
    for (const path of notFound) {
      for (const method of ['GET', 'POST']) {
        expectError(
          await h2({ method, path, body: method === 'POST' ? frame(C.KeyList) : undefined }),
          'ERR_NOT_FOUND',
          `h2 ${method} ${path}`,
          { exact: true },
        );
      }
      expectError(await h1({ method: 'GET', path }), 'ERR_NOT_FOUND', `h1 GET ${path}`, { exact: true });
    }
    const wrong: [string, string][] = [
      ['GET', '/v1/kms'],
      ['GET', '/v1/kms/bad'],
      ['PUT', '/v1/kms/bad'],
      ['DELETE', '/v1/kms/bad'],
      ['PATCH', '/v1/kms'],
      ['OPTIONS', '/v1/kms/bad'],
      ['POST', '/version'],
      ['PUT', '/version'],
      ['DELETE', '/v1/health/live'],
      ['POST', '/v1/health/ready'],
    ];
    for (const [method, path] of wrong) {
      const body = method === 'GET' || method === 'OPTIONS' ? undefined : frame(C.KeyList);
      expectError(await h2({ method, path, body }), 'ERR_METHOD_NOT_ALLOWED', `h2 ${method} ${path}`, { exact: true });
      expectError(await h1({ method, path, body }), 'ERR_METHOD_NOT_ALLOWED', `h1 ${method} ${path}`, { exact: true });
    }
    // HEAD: a 405 without a body, still with a Content-Length.
    const head = await h2({ method: 'HEAD', path: '/v1/kms/bad' });
    assert.equal(head.status, 405);
    assert.ok(head.headers['content-length'] !== undefined, 'HEAD: no content-length');
    await assertAlive('after wrong paths');
  });

  test('no client certificate: /v1/kms → 403; /version and health endpoints work (HTTP/2 and HTTP/1.1)', async () => {
    const cases: [string, string, Buffer][] = [
      ['KEY:LIST', kmsPath(ENCLAVE), frame(C.KeyList)],
      [
        'KEY:DECRYPT',
        kmsPath(ENCLAVE),
        frameOf(C.KeyDecrypt, M.DecryptRequestSchema, { name: 'k', version: 1, ciphertext: ctK, associatedData: AD }),
      ],
      ['KEY:CREATE', kmsPath(ENCLAVE), frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'never-anon' })],
      ['ENCLAVE:LIST', '/v1/kms', frame(C.EnclaveList)],
      ['ENCLAVE:CREATE', '/v1/kms', frameOf(C.EnclaveCreate, M.CreateEnclaveRequestSchema, { name: 'never-anon' })],
      ['CLUSTER:STATUS', '/v1/kms', frame(C.ClusterStatus)],
      ['KEY:LIST in a missing enclave', '/v1/kms/nope', frame(C.KeyList)],
      // Without a certificate nothing about the request is looked at: not the body either.
      ['empty body', kmsPath(ENCLAVE), Buffer.alloc(0)],
      ['garbage body', kmsPath(ENCLAVE), Buffer.from('garbage')],
      ['unknown command', kmsPath(ENCLAVE), frame(999)],
      ['malformed message', kmsPath(ENCLAVE), frame(C.KeyList, [0xff])],
      ['mixed commands', kmsPath(ENCLAVE), Buffer.concat([frame(C.KeyList), frame(C.KeyStatus)])],
    ];
    for (const [label, path, body] of cases) {
      expectError(await h2({ path, body, anon: true }), 'ERR_NOT_ALLOWED', `h2 no cert: ${label}`, { exact: true });
      expectError(await h1({ path, body, anon: true }), 'ERR_NOT_ALLOWED', `h1 no cert: ${label}`, { exact: true });
    }
    await rejectsNotFound('never-anon');
    for (const req of [h2, h1]) {
      const proto = req === h2 ? 'h2' : 'h1';
      const v = await req({ method: 'GET', path: '/version', anon: true, headers: { accept: OCTET } });
      expectOk(v, `${proto} /version`);
      assert.equal(v.headers['content-type'], OCTET);
      const version = decodeMessage(M.VersionResponseSchema, v.body);
      assert.equal(version.apiVersion, 'v1');
      const j = await req({
        method: 'GET',
        path: '/version',
        anon: true,
        headers: { accept: 'application/json', 'accept-encoding': 'gzip' },
      });
      expectOk(j, `${proto} /version json`);
      // The same as protobuf-JSON, byte for byte: JSON names, default values (fips140: false) left out.
      const { version: ver, commit, host } = version;
      assert.equal(j.body.toString('utf8'), JSON.stringify({ version: ver, ...(commit && { commit }), api_version: 'v1', host }));
      for (const path of ['/v1/health/live', '/v1/health/ready', '/v1/health/ready?write']) {
        expectOk(await req({ method: 'GET', path, anon: true }), `${proto} ${path}`);
      }
    }
  });

  // ------------------------------------------------------------------ response invariants

  test('every /v1/kms response has content-length and no content-encoding, even with accept-encoding: gzip', async () => {
    const enc = { 'accept-encoding': 'gzip, deflate, br', accept: 'application/*', 'content-type': OCTET };
    const requests: [string, string, Buffer, number][] = [
      ['KEY:LIST', ENCLAVE, frame(C.KeyList), 200],
      ['KEY:STATUS × 50', ENCLAVE, Buffer.concat(Array(50).fill(frameOf(C.KeyStatus, M.KeyStatusRequestSchema, { name: 'k' }))), 200],
      [
        'KEY:GENERATE × 100',
        ENCLAVE,
        Buffer.concat(Array(100).fill(frameOf(C.KeyGenerate, M.GenerateKeyRequestSchema, { name: 'k', length: 1024 }))),
        200,
      ],
      [
        'KEY:ENCRYPT of 1 MiB',
        ENCLAVE,
        frameOf(C.KeyEncrypt, M.EncryptRequestSchema, { name: 'k', plaintext: Buffer.alloc(1 << 20, 0x61) }),
        200,
      ],
      ['ENCLAVE:LIST', '', frame(C.EnclaveList), 200],
      ['CLUSTER:STATUS', '', frame(C.ClusterStatus), 200],
      [
        'POLICY:CREATE (write, empty body)',
        ENCLAVE,
        frameOf(C.PolicyCreate, M.CreatePolicyRequestSchema, { name: 'p', allow: { 'KEY:STATUS': { rules: { '*': {} } } } }),
        200,
      ],
      ['400', ENCLAVE, frame(999), 400],
      ['404', 'nope', frame(C.KeyList), 404],
      ['409', ENCLAVE, frameOf(C.KeyCreate, M.CreateKeyRequestSchema, { name: 'k' }), 409],
      ['501', '', frameOf(C.ClusterAddNode, M.AddClusterNodeRequestSchema, { host: '127.0.0.1:1' }), 501],
    ];
    for (const [label, enclave, body, status] of requests) {
      for (const req of [h2, h1]) {
        const r = await req({ path: kmsPath(enclave), body, headers: enc });
        checkInvariants(r, `${req === h2 ? 'h2' : 'h1'} ${label}`);
        assert.equal(r.status, status, `${label}: status ${r.status}`);
        if (status === 200 && label.includes('write')) assert.equal(r.body.length, 0);
        if (status === 200) assert.equal(r.headers['content-type'], OCTET);
      }
    }
    for (const [method, path] of [
      ['GET', '/nope'],
      ['GET', '/v1/kms'],
    ] as const) {
      checkInvariants(await h2({ method, path, headers: enc }), `${method} ${path}`);
      checkInvariants(await h1({ method, path, headers: enc }), `h1 ${method} ${path}`);
    }
    checkInvariants(await post(ENCLAVE, Buffer.alloc(MAX_BODY + 1), { headers: { ...enc }, fresh: true }), '413');
    checkInvariants(await h2({ method: 'GET', path: '/version', headers: enc }), '/version');
  });

  test('batch bodies of 1001–1024 bytes are padded (≥ 1025) and still decode', async () => {
    // KEY:GENERATE: n DEKs of length L. Find batches whose plain body lands in the window.
    const genFrame = (L: number) =>
      6 + encodeMessage(M.GenerateKeyResponseSchema, { version: 1, plaintext: Buffer.alloc(L), ciphertext: Buffer.alloc(L + 44) }).length;
    const batches: number[][] = [];
    for (let n = 1; n <= 20 && batches.length < 8; n++) {
      for (let L = 1; L <= 1024; L++) {
        const size = n * genFrame(L);
        if (size >= 1001 && size <= 1024) batches.push(Array(n).fill(L));
        if (size > 1024) break;
      }
    }
    batches.push([32, 32, 32, 32, 32, 32, 32, 53]); // 7 × 120 + 162 = 1002 bytes
    assert.ok(batches.length >= 5);
    for (const lengths of batches) {
      const label = `KEY:GENERATE ${lengths.length} × ${lengths.join(',')}`;
      const plain = lengths.reduce((s, L) => s + genFrame(L), 0);
      assert.ok(plain >= 1001 && plain <= 1024, `${label}: test arithmetic (${plain})`);
      const r = await command(
        ENCLAVE,
        C.KeyGenerate,
        M.GenerateKeyRequestSchema,
        lengths.map((length) => ({ name: 'k', length })),
      );
      const deks = decodeResponse(r, C.KeyGenerate, M.GenerateKeyResponseSchema, lengths.length, label);
      assert.ok(r.body.length >= 1025, `${label}: body of ${r.body.length} bytes (unpadded ${plain})`);
      deks.forEach((d, i) => {
        assert.equal(d.version, 1);
        assert.equal(d.plaintext.length, lengths[i]);
        assert.equal(d.ciphertext.length, lengths[i]! + 44);
      });
      // The padded frame decodes to exactly the DEK (unknown field ignored).
      const last = deks[deks.length - 1]!;
      const [back] = await root.decrypt(ENCLAVE, [{ name: 'k', version: 1, ciphertext: last.ciphertext }]);
      assert.deepEqual(back!.plaintext, last.plaintext);
    }

    // KEY:DECRYPT: sweep every total body length from 995 to 1030 bytes with 10 plaintexts.
    const plaintexts: Buffer[][] = [];
    for (let total = 995; total <= 1030; total++) {
      const sum = total - 10 * 8; // frame header 6 + field key 1 + length 1
      plaintexts.push(
        Array.from({ length: 10 }, (_, i) => Buffer.alloc(Math.floor(sum / 10) + (i < sum % 10 ? 1 : 0), 0x30 + (total % 10))),
      );
    }
    const flat = plaintexts.flat();
    const cts = await root.encrypt(
      ENCLAVE,
      flat.map((plaintext) => ({ name: 'k2', plaintext })),
    );
    for (let t = 0; t < plaintexts.length; t++) {
      const total = 995 + t;
      const pts = plaintexts[t]!;
      assert.equal(
        pts.reduce((s, p) => s + 6 + encodeMessage(M.DecryptResponseSchema, { plaintext: p }).length, 0),
        total,
        'test arithmetic',
      );
      const reqs = pts.map((_, i) => ({ name: 'k2', version: 1, ciphertext: cts[t * 10 + i]!.ciphertext }));
      const r = await command(ENCLAVE, C.KeyDecrypt, M.DecryptRequestSchema, reqs);
      const out = decodeResponse(r, C.KeyDecrypt, M.DecryptResponseSchema, 10, `decrypt total ${total}`);
      out.forEach((o, i) => assert.deepEqual(o.plaintext, pts[i], `decrypt total ${total}: frame ${i}`));
      if (total >= 1001 && total <= 1024) assert.ok(r.body.length >= 1025, `total ${total}: body of ${r.body.length}`);
      else assert.equal(r.body.length, total, `total ${total}: padded needlessly`);
    }
    // The SDK sees the right number of results for a padded batch.
    const viaSdk = await root.generateKey(
      ENCLAVE,
      batches[0]!.map((length) => ({ name: 'k', length })),
    );
    assert.equal(viaSdk.length, batches[0]!.length);
  });

  // ------------------------------------------------------------------ afterwards

  test('finally: the server is alive, healthy and nothing was partially written', async (t) => {
    await assertAlive('final');
    expectOk(await h1({ method: 'GET', path: '/v1/health/ready', anon: true }), 'ready');
    const status = await root.clusterStatus();
    assert.equal(status.nodesUp.size, 1);
    assert.deepEqual(new Set(await keyNames()), EXPECTED_KEYS);
    assert.deepEqual(
      (await root.listEnclaves()).enclaves.map((e) => e.name),
      [ENCLAVE],
    );
    assert.deepEqual(new Set((await root.listPolicies(ENCLAVE)).policies.map((p) => p.name)), EXPECTED_POLICIES);
    assert.deepEqual(new Set((await root.listIdentities(ENCLAVE)).identities.map((i) => i.identity)), new Set([adminKey.identity, tagged]));
    // Fixtures unchanged: keys still decrypt, versions as created.
    const [k] = await root.decrypt(ENCLAVE, [{ name: 'k', version: 1, ciphertext: ctK, associatedData: AD }]);
    assert.deepEqual(k!.plaintext, SECRET);
    const rot = await root.keyStatus(ENCLAVE, [{ name: 'rot' }]);
    assert.equal(rot[0]!.version, 2);
    // No internal error was ever logged.
    assert.doesNotMatch(server.output(), /internal error|uncaught|unhandled/i, 'server logged an internal error');
    t.diagnostic(`${checkedResponses} raw responses checked`);
  });
});

async function rejectsNotFound(name: string): Promise<void> {
  const r = await command(ENCLAVE, C.KeyStatus, M.KeyStatusRequestSchema, [{ name }]);
  expectError(r, 'ERR_KEY_NOT_FOUND', `key '${name}' must not exist`, { exact: true });
}

async function rejectsPolicyNotFound(name: string): Promise<void> {
  const r = await command(ENCLAVE, C.PolicyStatus, M.PolicyRequestSchema, [{ name }]);
  expectError(r, 'ERR_POLICY_NOT_FOUND', `policy '${name}' must not exist`, { exact: true });
}
