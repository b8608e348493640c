/**
 * Unit tests of the observability modules: the pino logger (redaction, ring, subscribers),
 * log record framing (≤ 4096 bytes) and its client-side parser, the audit log's hash chain
 * (resume, tamper detection), the metrics exposition and access rules, and `--since` parsing.
 */
import { afterEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clip, createLogger, formatMessage, LogRing, parseStack, type LogEntry } from '../../src/server/log.js';
import { COMMANDS } from '../../src/protocol/commands.js';
import { ERRORS } from '../../src/errors.js';
import { AuditLog, verifyAuditFile, type AuditEvent } from '../../src/server/audit.js';
import { encodeLogFrame, MAX_LOG_RECORD, Observability, type NodeView } from '../../src/server/observability.js';
import { FastHistogram, Metrics } from '../../src/server/metrics.js';
import { LogRecordParser } from '../../src/client/logs.js';
import { parseGoDuration, parseWhen } from '../../src/cli/logs-audit.js';
import { removeDir, tempDir } from '../helpers/server.js';
import type { RequestContext } from '../../src/server/http.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) removeDir(d);
});
function scratch(): string {
  const d = tempDir('minkms-obs-unit-');
  dirs.push(d);
  return d;
}

function capture() {
  const lines: string[] = [];
  return { lines, destination: { write: (s: string) => void lines.push(s) } };
}

describe('log', () => {
  test('JSON lines with level names, ISO time, fields; below the level nothing', () => {
    const out = capture();
    const log = createLogger('info', { destination: out.destination });
    log.debug('hidden');
    log.info('hello', { n: 1, s: 'x' });
    assert.equal(out.lines.length, 1);
    const rec = JSON.parse(out.lines[0]!);
    assert.equal(rec.level, 'info');
    assert.equal(rec.msg, 'hello');
    assert.equal(rec.n, 1);
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(rec.pid, undefined);
  });

  test('secret-looking fields are redacted in the JSON and in the ring', () => {
    const out = capture();
    const log = createLogger('debug', { destination: out.destination });
    log.warn('oops', {
      apiKey: 'k1:SECRET1',
      nested: { plaintext: 'SECRET2', fine: 'visible' },
      key: 'SECRET3',
      hsmKey: 'hsm:aes256:SECRET4',
    });
    const text = out.lines.join('');
    assert.ok(!/SECRET\d/.test(text), text);
    assert.ok(text.includes('visible'));
    const [e] = log.ring.since(0);
    assert.ok(!/SECRET\d/.test(e!.message), e!.message);
    assert.match(e!.message, /^oops apiKey=\[REDACTED\] nested=\{"plaintext":"\[REDACTED\]","fine":"visible"\} key=\[REDACTED\]/);
  });

  test('ring: bounded, since(), live subscribers below the stderr level', () => {
    const out = capture();
    const ring = new LogRing(3);
    const log = createLogger('info', { destination: out.destination, ring });
    for (let i = 0; i < 5; i++) log.info(`m${i}`);
    assert.deepEqual(
      ring.since(0).map((e) => e.message),
      ['m2', 'm3', 'm4'],
    );
    assert.deepEqual(ring.since(Date.now() + 1000), []);
    const got: LogEntry[] = [];
    assert.equal(log.enabled('debug'), false);
    const off = ring.subscribe(-4, (e) => got.push(e));
    assert.equal(log.enabled('debug'), true);
    log.debug('dbg', { a: 'b c' });
    log.error('bad');
    off();
    log.info('after');
    assert.deepEqual(
      got.map((e) => [e.level, e.message]),
      [
        [-4, 'dbg a="b c"'],
        [8, 'bad'],
      ],
    );
    assert.ok(got[1]!.trace && got[1]!.trace.length > 0, 'errors carry a trace');
    assert.match(got[1]!.trace![0]!.file, /observability\.test\.(js|ts)$/, 'first frame = where the record was created');
    // debug went to the subscriber only: not stderr, not the ring
    assert.ok(!out.lines.join('').includes('dbg'));
    assert.ok(!ring.since(0).some((e) => e.message.startsWith('dbg')));
    assert.equal(log.enabled('debug'), false);
  });

  test('formatMessage and parseStack', () => {
    assert.equal(formatMessage('m', { a: 1, b: 'two words', c: 'x\ny', d: null }), 'm a=1 b="two words" c=x d=null');
    const frames = parseStack('Error: x\n    at foo (/a/b.js:10:5)\n    at /c/d.js:3:1');
    assert.deepEqual(frames, [
      { function: 'foo', file: '/a/b.js', line: 10 },
      { function: '', file: '/c/d.js', line: 3 },
    ]);
  });

  test('log frames are ≤ 4096 bytes (truncated) and parse back, split anywhere', () => {
    const long: LogEntry = { level: 8, time: Date.now(), message: 'é'.repeat(5000), trace: [{ function: 'f', file: '/x.js', line: 1 }] };
    const small: LogEntry = { level: -4, time: 1_700_000_000_123, message: 'hello', trace: [{ function: 'f', file: '/x.js', line: 7 }] };
    const a = encodeLogFrame(long, true);
    const b = encodeLogFrame(small, true);
    assert.ok(a.length - 4 <= MAX_LOG_RECORD && a.length - 4 > 4000, String(a.length));
    assert.equal(a.readUInt32BE(0), a.length - 4);
    const all = Buffer.concat([a, b]);
    for (const cut of [0, 1, 3, 5, 100, a.length, a.length + 2, all.length]) {
      const p = new LogRecordParser();
      const recs = [...p.push(all.subarray(0, cut)), ...p.push(all.subarray(cut))];
      assert.equal(recs.length, 2);
      assert.equal(p.pending, 0);
      assert.ok(recs[0]!.message.endsWith('…') && recs[0]!.message.startsWith('ééé') && !recs[0]!.message.includes('\ufffd'));
      assert.equal(recs[0]!.trace.length, 0, 'the trace goes first when too long');
      assert.deepEqual(
        [recs[1]!.level, recs[1]!.time!.getTime(), recs[1]!.message, recs[1]!.trace],
        [-4, 1_700_000_000_123, 'hello', small.trace],
      );
    }
    assert.equal(encodeLogFrame(small, false).length < b.length, true);
    const bad = new LogRecordParser();
    assert.deepEqual(bad.push(Buffer.from('{"message":"access denied"}')), []);
    assert.match(bad.invalid!, /exceeds 4096/);
  });
});

describe('audit log', () => {
  const event = (i: number, over: Partial<AuditEvent> = {}): AuditEvent => ({
    time: new Date(1_700_000_000_000 + i).toISOString(),
    identity: 'h1:abc',
    enclave: 'e',
    command: 'KEY:GENERATE',
    object: `k${i}`,
    outcome: 'ok',
    status: 200,
    latency_ms: 0.1234567,
    request_id: `r${i}`,
    ...over,
  });

  test('chain: verify ok; resume continues it; mode 0600', () => {
    const file = join(scratch(), 'audit.log');
    let log = AuditLog.open(file);
    for (let i = 0; i < 3; i++) log.append(event(i));
    log.close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(verifyAuditFile(file), { ok: true, lines: 3 });
    log = AuditLog.open(file);
    log.append(event(3, { outcome: 'ERR_NOT_ALLOWED', status: 403 }));
    log.close();
    assert.deepEqual(verifyAuditFile(file), { ok: true, lines: 4 });
    const recs = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      recs.map((r) => r.seq),
      [1, 2, 3, 4],
    );
    assert.equal(recs.filter((r) => 'chain' in r).length, 1);
    assert.equal(recs[0].latency_ms, 0.123);
    assert.equal(recs[3].outcome, 'ERR_NOT_ALLOWED');
  });

  test('flushes within 100 ms without close', () => {
    // Controlled time: the write-behind timer fires when the test moves the clock.
    mock.timers.enable({ apis: ['setTimeout'] });
    const file = join(scratch(), 'audit.log');
    const log = AuditLog.open(file);
    try {
      log.append(event(0));
      assert.equal(readFileSync(file, 'utf8'), '');
      mock.timers.tick(100);
      assert.equal(readFileSync(file, 'utf8').split('\n').length, 2);
    } finally {
      log.close();
      mock.timers.reset();
    }
  });

  test('tampering is detected at the first bad line', () => {
    const dir = scratch();
    const file = join(dir, 'audit.log');
    const log = AuditLog.open(file);
    for (let i = 0; i < 5; i++) log.append(event(i));
    log.close();
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const check = (edit: (l: string[]) => string[], line: number, reason: RegExp, raw?: string) => {
      const f = join(dir, 'copy.log');
      writeFileSync(f, raw ?? edit([...lines]).join('\n') + '\n');
      const r = verifyAuditFile(f);
      assert.equal(r.ok, false, JSON.stringify(r));
      if (!r.ok) {
        assert.equal(r.line, line, r.reason);
        assert.match(r.reason, reason);
      }
    };
    check((l) => ((l[3] = l[3]!.replace('"k3"', '"k9"')), l), 4, /hash mismatch/);
    check((l) => ((l[3] = l[3]!.replace(/"hash":"[0-9a-f]+"/, `"hash":"${'0'.repeat(64)}"`)), l), 4, /hash mismatch/);
    check((l) => (l.splice(2, 1), l), 3, /prev does not match line 2/);
    check((l) => (([l[1], l[3]] = [l[3]!, l[1]!]), l), 2, /prev does not match/);
    check((l) => l.slice(1), 1, /does not start a chain/);
    check((l) => [...l.slice(0, 2), l[0]!, ...l.slice(2)], 3, /prev does not match|new chain/);
    check((l) => ((l[1] = 'not json'), l), 2, /not valid JSON/);
    check(() => [], 6, /incomplete last line/, lines.join('\n') + '\n{"time":');
    // Removing the last lines cannot be seen from the file alone (documented in docs/audit.md).
    const truncated = join(dir, 'truncated.log');
    writeFileSync(truncated, lines.slice(0, 3).join('\n') + '\n');
    assert.deepEqual(verifyAuditFile(truncated), { ok: true, lines: 3 });
  });

  test('a crash mid-line: the next start ends the line, verify names it', () => {
    const file = join(scratch(), 'audit.log');
    let log = AuditLog.open(file);
    log.append(event(0));
    log.close();
    appendFileSync(file, '{"time":"2025');
    log = AuditLog.open(file);
    log.append(event(1));
    log.close();
    const r = verifyAuditFile(file);
    assert.deepEqual(r, { ok: false, line: 2, reason: 'not valid JSON' });
  });

  test('long objects are cut to 256 characters', () => {
    const file = join(scratch(), 'audit.log');
    const log = AuditLog.open(file);
    log.append(event(0, { object: 'x'.repeat(10_000) }));
    log.close();
    assert.equal(JSON.parse(readFileSync(file, 'utf8')).object.length, 257);
    assert.deepEqual(verifyAuditFile(file), { ok: true, lines: 1 });
  });

  test('worst-case line sizes, as docs/security.md states them', () => {
    const file = join(scratch(), 'audit.log');
    const log = AuditLog.open(file);
    const longest = (xs: readonly string[]) => xs.reduce((a, b) => (b.length > a.length ? b : a));
    // Every field at its longest; a client's text that is no name, cut as server/observability.ts
    // cuts it, in characters JSON spells as 6-byte \uXXXX escapes.
    const garbage = clip('\u0001'.repeat(1_000_000));
    const name = 'a'.repeat(128);
    const base = {
      identity: `h1:${'A'.repeat(43)}`,
      command: longest(COMMANDS.map((c) => c.name)),
      status: 503,
      latency_ms: 30000.123,
      privilege: 'Admin (service account)',
      request_id: '00000000-0000-4000-8000-000000000000', // a UUID, like the server's
    };
    const code = longest(Object.keys(ERRORS));
    log.append(event(0, { ...base, enclave: 'e', object: 'o' })); // the first line carries the chain id
    log.append(event(1, { ...base, enclave: name, object: name, outcome: 'ok' }));
    log.append(event(2, { ...base, enclave: name, object: garbage, outcome: code, frames: 10_000 }));
    log.append(event(3, { ...base, enclave: garbage, object: garbage, outcome: code, frames: 10_000 }));
    log.close();
    const bytes = readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => Buffer.byteLength(l) + 1);
    // A frame that ran: about 705 bytes; a failed frame's line: about 2.2 KiB; a request refused before its body: about 3.6 KiB.
    const [, ran, failed, refused] = bytes as [number, number, number, number];
    assert.ok(ran > 680 && ran <= 720, `a frame that ran: ${ran} bytes`);
    assert.ok(failed > 2100 && failed <= 2250, `a failed frame: ${failed} bytes`);
    assert.ok(refused > 3500 && refused <= 3700, `a refused request: ${refused} bytes`);
    assert.deepEqual(verifyAuditFile(file), { ok: true, lines: 4 });
  });
});

describe('metrics', () => {
  const node = (sealed = false): NodeView => ({
    state: sealed
      ? { kind: 'sealed' }
      : {
          kind: 'unsealed',
          kms: { listEnclaves: () => ({ items: [], continueAt: '' }) } as unknown as NonNullable<NodeView['state']['kms']>,
          pending: new Map([['hsm:minio:minkms:e/k', 'unreachable']]),
        },
    uptimeMs: () => 1500,
  });

  function fakeCtx(identity: string) {
    const res = {
      status: 0,
      headers: {} as Record<string, unknown>,
      body: '',
      writeHead(s: number, h: Record<string, unknown>) {
        this.status = s;
        this.headers = h;
      },
      end(b: Buffer) {
        this.body = b.toString();
      },
    };
    return { ctx: { res, identity } as unknown as RequestContext, res };
  }

  async function scrape(obs: Observability) {
    const { ctx, res } = fakeCtx('');
    await obs.serveMetrics(ctx);
    return res;
  }

  test('the state gauges follow the node: uptime, sealed, pending HSMs, domain counts', async () => {
    const quiet = createLogger('error', { destination: capture().destination });
    const obs = new Observability({ log: quiet });
    obs.attach(node());
    const ok = await scrape(obs);
    assert.equal(ok.status, 200);
    assert.match(ok.body, /^minkms_uptime_seconds 1\.5$/m);
    assert.match(ok.body, /^minkms_sealed 0$/m);
    assert.match(ok.body, /^minkms_hsm_pending 1$/m);

    const sealed = new Observability({ log: quiet });
    sealed.attach(node(true));
    const s = await scrape(sealed);
    assert.match(s.body, /^minkms_sealed 1$/m);
    assert.match(s.body, /^minkms_enclaves 0$/m);
  });

  test('fast series render like prom-client', async () => {
    const m = new Metrics({
      sealed: () => false,
      pendingHsms: () => 0,
      uptimeSeconds: () => 1,
      counts: () => ({ enclaves: 2, keys: 3, identities: 4 }),
      logStreams: () => 0,
      auditRecords: () => 7,
      auditErrors: () => 0,
    });
    m.commands.inc('KEY:GENERATE', 200, 3);
    m.commands.inc('KEY:GENERATE', 200);
    m.commands.inc('KEY:GENERATE', 404);
    m.duration.observe('KEY:GENERATE', 0.002);
    m.duration.observe('KEY:GENERATE', 20);
    const { text } = await m.scrape();
    assert.match(text, /^minkms_commands_total\{command="KEY:GENERATE",status="200"\} 4$/m);
    assert.match(text, /^minkms_commands_total\{command="KEY:GENERATE",status="404"\} 1$/m);
    assert.match(text, /^# TYPE minkms_commands_total counter$/m);
    assert.match(text, /^# TYPE minkms_http_request_duration_seconds histogram$/m);
    assert.match(text, /^minkms_http_request_duration_seconds_bucket\{command="KEY:GENERATE",le="0\.001"\} 0$/m);
    assert.match(text, /^minkms_http_request_duration_seconds_bucket\{command="KEY:GENERATE",le="0\.0025"\} 1$/m);
    assert.match(text, /^minkms_http_request_duration_seconds_bucket\{command="KEY:GENERATE",le="10"\} 1$/m);
    assert.match(text, /^minkms_http_request_duration_seconds_bucket\{command="KEY:GENERATE",le="\+Inf"\} 2$/m);
    assert.match(text, /^minkms_http_request_duration_seconds_count\{command="KEY:GENERATE"\} 2$/m);
    assert.match(text, /^minkms_enclaves 2$/m);
    assert.match(text, /^minkms_keys 3$/m);
    assert.match(text, /^minkms_identities 4$/m);
    assert.match(text, /^minkms_audit_records_total 7$/m);
    assert.match(text, /^minkms_build_info\{version="[^"]+"\} 1$/m);
    const h = new FastHistogram('x', 'x', [1, 2]);
    h.observe('', 2);
    assert.equal(h.count(), 1);
  });
});

describe('--since WHEN', () => {
  const now = new Date(2025, 5, 15, 13, 30, 0); // local time
  test('words, durations and times', () => {
    assert.equal(parseWhen('today', now).getTime(), new Date(2025, 5, 15).getTime());
    assert.equal(parseWhen('Yesterday', now).getTime(), new Date(2025, 5, 14).getTime());
    assert.equal(parseWhen('3 days ago', now).getTime(), now.getTime() - 3 * 86_400_000);
    assert.equal(parseWhen('1 hour ago', now).getTime(), now.getTime() - 3_600_000);
    assert.equal(parseWhen('15 minutes ago', now).getTime(), now.getTime() - 900_000);
    assert.equal(parseWhen('30 seconds ago', now).getTime(), now.getTime() - 30_000);
    assert.equal(parseWhen('1h30m', now).getTime(), now.getTime() - 5_400_000);
    assert.equal(parseWhen('90s', now).getTime(), now.getTime() - 90_000);
    assert.equal(parseWhen('2025-01-31T12:00:00Z', now).toISOString(), '2025-01-31T12:00:00.000Z');
    assert.equal(parseWhen('2025-01-31T12:00:00.5+02:00', now).toISOString(), '2025-01-31T10:00:00.500Z');
    assert.equal(parseWhen('2025-01-31', now).getTime(), new Date(2025, 0, 31).getTime());
    for (const bad of ['', 'soon', '3 fortnights ago', '1x', '2025-13-45T00:00:00']) assert.throws(() => parseWhen(bad, now), /expected/);
    assert.equal(parseGoDuration('1.5h'), 5_400_000);
    assert.equal(parseGoDuration('250ms'), 250);
    assert.equal(parseGoDuration('h'), undefined);
  });
});
