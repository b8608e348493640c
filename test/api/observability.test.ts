/**
 * Observability, black-box against a real server process (`--log-level debug --audit-file`):
 * Prometheus metrics over mTLS (SysAdmin only), `minkms logs` streaming with level, message
 * and since filters, the hash-chained audit log with `minkms audit verify` (intact, edited,
 * removed, swapped lines), and no secret in the server log or the audit log.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { clientFor, newUser, rejectsWith, settledAuditLines } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import type { KmsClient } from '../../src/client/client.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let server: TestServer;
let root: KmsClient;
let work: string;
let auditFile: string;
let env: Record<string, string>;

/** Starts `minkms args…`; `done` resolves when it exits. */
function spawnMinkms(args: readonly string[]): { done: Promise<Result>; kill: () => void; stdout: () => string } {
  const child = spawn(process.execPath, [MINKMS_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
  return { done, kill: () => child.kill('SIGINT'), stdout: () => stdout };
}

const minkms = (args: readonly string[]) => spawnMinkms(args).done;
const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

async function scrape(c: KmsClient): Promise<{ status: number; type: string; text: string }> {
  const res = await c.transport.request({ method: 'GET', path: '/v1/health/metrics' });
  return { status: res.status, type: String(res.headers['content-type']), text: res.body.toString('utf8') };
}

/** The value of one series (exact name and labels as printed), 0 if absent. */
function sample(text: string, series: string): number {
  for (const line of text.split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return 0;
}

/** Waits until the server has `n` open log streams (the CLI is subscribed). */
async function waitForStreams(n: number): Promise<void> {
  // Generous: the CLI is a new process, slow to start on a loaded machine.
  await waitFor(`${n} log streams`, async () => sample((await scrape(root)).text, 'minkms_log_streams') === n, 60_000);
}

const unique = (p: string) => `${p}-${Math.random().toString(36).slice(2, 8)}`;

describe('observability', () => {
  before(async () => {
    work = tempDir('minkms-obs-');
    auditFile = join(work, 'audit.log');
    server = await startServer({ dir: join(work, 'data'), args: ['--log-level', 'debug', '--audit-file', auditFile] });
    root = clientFor(server, server.apiKey);
    const home = join(work, 'home');
    mkdirSync(join(home, '.minkms', 'certs', 'CAs'), { recursive: true });
    writeFileSync(join(home, '.minkms', 'certs', 'CAs', 'server.pem'), server.caPem);
    env = {
      ...(process.env as Record<string, string>),
      HOME: home,
      MINIO_KMS_SERVER: server.host,
      MINIO_KMS_API_KEY: server.apiKey,
      NO_COLOR: '1',
    };
    delete env.MINIO_KMS_ENCLAVE;
    await root.createEnclave('obs');
    await root.createKey('obs', { name: 'k' });
  });

  after(async () => {
    root?.close();
    await server?.stop();
    if (work) removeDir(work);
  });

  test('metrics: Prometheus text for the SysAdmin, counting every command frame', async () => {
    const before = await scrape(root);
    assert.equal(before.status, 200);
    assert.match(before.type, /^text\/plain; version=0\.0\.4/);
    const gen = 'minkms_commands_total{command="KEY:GENERATE",status="200"}';
    const genReq = 'minkms_http_requests_total{command="KEY:GENERATE",status="200"}';
    const gen0 = sample(before.text, gen);
    const req0 = sample(before.text, genReq);
    for (let i = 0; i < 5; i++) await root.generateKey('obs', [{ name: 'k' }]);
    await root.generateKey('obs', [{ name: 'k' }, { name: 'k' }, { name: 'k' }]); // a batch: 3 commands, 1 request
    await rejectsWith(root.generateKey('obs', [{ name: 'missing' }]), 'ERR_KEY_NOT_FOUND');

    const { text } = await scrape(root);
    assert.equal(sample(text, gen) - gen0, 8, text);
    assert.equal(sample(text, genReq) - req0, 6);
    assert.ok(sample(text, 'minkms_commands_total{command="KEY:GENERATE",status="404"}') >= 1);
    assert.ok(sample(text, 'minkms_http_request_duration_seconds_count{command="KEY:GENERATE"}') >= 7);
    assert.ok(sample(text, 'minkms_http_request_size_bytes_count') > 0);
    assert.ok(sample(text, 'minkms_http_response_size_bytes_count') > 0);
    assert.ok(sample(text, 'minkms_http_requests_total{command="/v1/health/metrics",status="200"}') >= 1);
    assert.equal(sample(text, 'minkms_http_requests_inflight'), 1); // this scrape
    assert.equal(sample(text, 'minkms_sealed'), 0);
    assert.ok(sample(text, 'minkms_uptime_seconds') > 0);
    assert.ok(sample(text, 'minkms_enclaves') >= 1);
    assert.ok(sample(text, 'minkms_keys') >= 1);
    assert.match(text, /^minkms_identities \d+$/m);
    assert.match(text, /^process_cpu_user_seconds_total /m); // prom-client's default metrics
    assert.match(text, /^nodejs_heap_size_used_bytes /m);
  });

  test('metrics: 403 without a SysAdmin client certificate', async () => {
    const nocert = clientFor(server);
    const admin = newUser(server);
    const stranger = clientFor(server, generateApiKey().text);
    try {
      await root.createIdentity('obs', { identity: admin.identity, privilege: 'Admin' });
      for (const [who, c] of [
        ['no certificate', nocert],
        ['enclave admin', admin.client],
        ['unknown identity', stranger],
      ] as const) {
        const r = await scrape(c);
        assert.equal(r.status, 403, `${who}: ${r.status} ${r.text}`);
        assert.equal(JSON.parse(r.text).message, 'access denied: insufficient permissions');
      }
    } finally {
      nocert.close();
      admin.client.close();
      stranger.close();
    }
  });

  test('minkms logs: streams new records ≥ level matching the message, and replays with --since', async () => {
    const tag = unique('logkey');
    // -n 1: the first record printed must be the INFO KEY:CREATE of `tag`: not the DEBUG
    // KEY:STATUS before it (level) nor the KEY:CREATE of another key (message).
    const info = spawnMinkms(['logs', server.host, '-l', 'INFO', '-m', tag, '-n', '1']);
    await waitForStreams(1);
    await root.createKey('obs', { name: unique('other') });
    await rejectsWith(root.keyStatus('obs', [{ name: tag }]), 'ERR_KEY_NOT_FOUND');
    await root.createKey('obs', { name: tag });
    const r = await info.done;
    assert.equal(r.code, 0, show(r));
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, show(r));
    assert.match(
      lines[0]!,
      new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z INFO  KEY:CREATE enclave=obs object=${tag} .*outcome=ok status=200`),
    );
    assert.match(r.stderr, /Streaming the log of 127\.0\.0\.1:\d+/);

    // WARN: access denied; the INFO record about the same key does not pass the level.
    const user = newUser(server);
    try {
      await root.createIdentity('obs', { identity: user.identity });
      const warn = spawnMinkms(['logs', server.host, '-l', 'WARN', '-m', tag, '-n', '1', '--json', '-q']);
      await waitForStreams(1);
      await root.createKey('obs', { name: `${tag}-2` });
      await rejectsWith(user.client.deleteKey('obs', { name: tag }), 'ERR_NOT_ALLOWED');
      const w = await warn.done;
      assert.equal(w.code, 0, show(w));
      assert.equal(w.stderr, '');
      const rec = JSON.parse(w.stdout.trim());
      assert.equal(rec.level, 'WARN');
      assert.match(
        rec.message,
        new RegExp(`^KEY:DELETE enclave=obs object=${tag} .*outcome=ERR_NOT_ALLOWED status=403 identity=${user.identity}`),
      );
      assert.ok(Array.isArray(rec.trace) || rec.trace === undefined);
    } finally {
      user.client.close();
    }

    // --since replays stored records (the KEY:CREATE above) before any new one.
    const replay = await minkms(['logs', server.host, '-s', '1 hour ago', '-m', `object=${tag} `, '-n', '1', '--short', '-q']);
    assert.equal(replay.code, 0, show(replay));
    assert.match(replay.stdout, new RegExp(`^KEY:CREATE enclave=obs object=${tag} `));

    // Stream closed by the client: Ctrl-C ends it with exit 0.
    const follow = spawnMinkms(['logs', server.host, '-q']);
    await waitForStreams(1);
    follow.kill();
    const f = await follow.done;
    assert.equal(f.code, 0, show(f));
    await waitForStreams(0);
  });

  test('minkms logs: refused for a non-SysAdmin, usage errors for bad flags', async () => {
    const user = generateApiKey();
    const r = await minkms(['logs', server.host, '-a', user.text, '-q']);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /^minkms: access denied: insufficient permissions/);
    const bad = await minkms(['logs', '-s', 'next tuesday']);
    assert.equal(bad.code, 2, show(bad));
    const lvl = await minkms(['logs', '-l', 'LOUD']);
    assert.equal(lvl.code, 2, show(lvl));
  });

  test('audit log: one line per command frame with its outcome; verify detects edits, removals and swaps', async () => {
    await root.createEnclave('audited');
    const user = newUser(server);
    try {
      await root.createKey('audited', { name: 'a1' });
      await rejectsWith(root.createKey('audited', { name: 'a1' }), 'ERR_KEY_EXISTS');
      await root.generateKey('audited', [{ name: 'a1' }, { name: 'a1' }]);
      await rejectsWith(root.keyStatus('audited', [{ name: 'a1' }, { name: 'nope' }, { name: 'a1' }]), 'ERR_KEY_NOT_FOUND');
      await rejectsWith(user.client.keyStatus('audited', [{ name: 'a1' }]), 'ERR_NOT_ALLOWED');
    } finally {
      user.client.close();
    }
    const lines = await settledAuditLines(root, auditFile);
    const recs = lines.map((l) => JSON.parse(l));
    const mine = recs.filter((r) => r.enclave === 'audited').map((r) => [r.command, r.object, r.outcome, r.status, r.frames]);
    // One line per frame that ran; the failed frame's line carries the request's frame count;
    // a request refused before its body (an unknown identity) is one line.
    assert.deepEqual(mine, [
      ['KEY:CREATE', 'a1', 'ok', 200, undefined],
      ['KEY:CREATE', 'a1', 'ERR_KEY_EXISTS', 409, 1],
      ['KEY:GENERATE', 'a1', 'ok', 200, undefined],
      ['KEY:GENERATE', 'a1', 'ok', 200, undefined],
      ['KEY:STATUS', 'a1', 'ok', 404, undefined],
      ['KEY:STATUS', 'nope', 'ERR_KEY_NOT_FOUND', 404, 3],
      ['POST /v1/kms', '', 'ERR_NOT_ALLOWED', 403, undefined],
    ]);
    const create = recs.find((r) => r.command === 'ENCLAVE:CREATE' && r.object === 'audited');
    assert.ok(create, 'ENCLAVE:CREATE is audited');
    assert.equal(create.identity, root.identity);
    assert.equal(create.enclave, '');
    for (const r of recs) {
      assert.deepEqual(
        Object.keys(r).filter((k) => k !== 'chain' && k !== 'frames' && k !== 'privilege'),
        ['time', 'identity', 'enclave', 'command', 'object', 'outcome', 'status', 'latency_ms', 'request_id', 'seq', 'prev', 'hash'],
      );
      assert.match(r.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(r.latency_ms >= 0);
    }
    assert.equal(typeof recs[0].chain, 'string');
    // SysAdmin endpoints outside the command channel are audited per request.
    const streams = recs.filter((r) => r.command === 'POST /v1/debug/log');
    assert.ok(
      streams.some((r) => r.identity === root.identity && r.outcome === 'ok' && r.status === 200),
      'log streams are audited',
    );
    assert.ok(
      streams.some((r) => r.identity !== root.identity && r.outcome === 'ERR_NOT_ALLOWED' && r.status === 403),
      'refused log streams are audited',
    );
    assert.ok(!recs.some((r) => r.command.includes('/v1/health/')), 'metrics scrapes are not audited');
    // Frames of one request share the request id.
    const gens = recs.filter((r) => r.enclave === 'audited' && r.command === 'KEY:GENERATE');
    assert.equal(gens[0].request_id, gens[1].request_id);

    const intact = await minkms(['audit', 'verify', auditFile]);
    assert.equal(intact.code, 0, show(intact));
    assert.equal(intact.stdout, `${lines.length} lines verified\n`);

    const tampered = async (name: string, edit: (l: string[]) => string[], line: number, reason: RegExp) => {
      const file = join(work, `${name}.log`);
      writeFileSync(file, edit([...lines]).join('\n') + '\n');
      const r = await minkms(['audit', 'verify', file]);
      assert.equal(r.code, 1, `${name}: ${show(r)}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, new RegExp(`^minkms: .*${name}\\.log: line ${line}: `), `${name}: ${r.stderr}`);
      assert.match(r.stderr, reason, name);
    };
    await Promise.all([
      tampered(
        'edited',
        (l) => ((l[2] = l[2]!.replace(/"outcome":"[^"]+"/, '"outcome":"ok"').replace(/"status":\d+/, '"status":201')), l),
        3,
        /hash mismatch/,
      ),
      tampered('removed', (l) => (l.splice(1, 1), l), 2, /prev does not match line 1/),
      tampered('swapped', (l) => (([l[1], l[2]] = [l[2]!, l[1]!]), l), 2, /prev does not match/),
      tampered('head-removed', (l) => l.slice(1), 1, /does not start a chain/),
    ]);
    const json = await minkms(['audit', 'verify', join(work, 'removed.log'), '--json']);
    assert.equal(json.code, 1);
    assert.deepEqual(JSON.parse(json.stdout), {
      file: join(work, 'removed.log'),
      ok: false,
      line: 2,
      reason: 'prev does not match line 1 (a line was removed, inserted or reordered)',
    });
  });

  test('no API key, HSM key, DEK, plaintext, ciphertext or imported key material in the log or the audit log', async () => {
    // A full session: identities, keys, imports, encryption, DEKs, MACs, policies, a log stream.
    const user = newUser(server);
    const material = Buffer.alloc(32, 0x5a);
    const plaintext = Buffer.from('the quick brown secret plaintext 0123456789');
    const secrets: string[] = [
      server.apiKey,
      user.apiKey,
      server.hsmKey,
      material.toString('base64'),
      material.toString('hex'),
      plaintext.toString('utf8'),
      plaintext.toString('base64'),
    ];
    try {
      await root.createEnclave('session');
      await root.createIdentity('session', { identity: user.identity, privilege: 'Admin' });
      await user.client.importKey('session', { name: 'imported', key: material });
      await user.client.createKey('session', { name: 'k', addVersion: false });
      const [enc] = await user.client.encrypt('session', [{ name: 'imported', plaintext, associatedData: Buffer.from('ad-context-xyz') }]);
      const [dec] = await user.client.decrypt('session', [
        { name: 'imported', version: enc!.version, ciphertext: enc!.ciphertext, associatedData: Buffer.from('ad-context-xyz') },
      ]);
      assert.deepEqual(dec!.plaintext, plaintext);
      const deks = await user.client.generateKey('session', [{ name: 'k' }, { name: 'k', length: 64 }]);
      await user.client.mac('session', [{ name: 'k', message: plaintext }]);
      await rejectsWith(user.client.decrypt('session', [{ name: 'k', version: 1, ciphertext: enc!.ciphertext }]), 'ERR_DECRYPT');
      await user.client.createPolicy('session', { name: 'p', allow: { 'KEY:GENERATE': { rules: { 'k*': {} } } } });
      for (const d of deks) secrets.push(d.plaintext.toString('base64'), d.plaintext.toString('hex'), d.ciphertext.toString('base64'));
      secrets.push(enc!.ciphertext.toString('base64'), enc!.ciphertext.toString('hex'));
      const replay = await minkms([
        'logs',
        server.host,
        '-l',
        'DEBUG',
        '-s',
        '1 hour ago',
        '-m',
        'enclave=session',
        '-n',
        '5',
        '--json',
        '-q',
      ]);
      assert.equal(replay.code, 0, show(replay));
      await waitFor('the session in the server log', () => server.output().includes('"msg":"KEY:IMPORT"'));
      const streamed = replay.stdout;
      const logLines = server
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'));
      assert.ok(
        logLines.some((l) => l.includes('"msg":"KEY:IMPORT"')),
        'the session was logged (debug level)',
      );
      const audit = (await settledAuditLines(root, auditFile)).join('\n');
      assert.ok(audit.includes('"command":"KEY:DECRYPT"'));
      for (const s of secrets) {
        assert.ok(!logLines.some((l) => l.includes(s)), `server log contains a secret: ${s.slice(0, 12)}…`);
        assert.ok(!audit.includes(s), `audit log contains a secret: ${s.slice(0, 12)}…`);
        assert.ok(!streamed.includes(s), `log stream contains a secret: ${s.slice(0, 12)}…`);
      }
      // The root API key appears once on stdout: the start-up banner prints it on purpose.
      assert.equal(server.output().split(server.apiKey).length - 1, 1);
    } finally {
      user.client.close();
    }
  });
});
