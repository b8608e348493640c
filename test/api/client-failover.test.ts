/**
 * The shared client (src/client/transport.ts) against misbehaving servers next to a real minkms
 * server: a server that accepts TCP and never speaks TLS, one that completes TLS/HTTP2 and
 * never answers, one that resets, one that answers slowly, one that ends streams without a
 * status. Failover happens within the per-attempt bounds; errors name the endpoint and what
 * timed out; state-changing commands are never sent twice; every endpoint (suspended ones too)
 * is tried in one call; a stream's body has no timeout.
 *
 * Timeouts are small (ATTEMPT_MS) to keep the test quick; timing assertions are generous
 * (a few attempt timeouts), and the real server's connection is set up before a timed call.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as http2 from 'node:http2';
import { KmsClient, type ClientOptions } from '../../src/client/client.js';
import { streamLogs } from '../../src/client/logs.js';
import { EndpointsError, OutcomeUnknownError, TransportError } from '../../src/client/transport.js';
import { encodeMessage } from '../../src/protocol/schema.js';
import { LogRecordSchema, VersionResponseSchema } from '../../src/protocol/messages.js';
import { MINKMS_BIN, removeDir, startServer, type TestServer } from '../helpers/server.js';
import {
  closedPort,
  h2,
  proxy,
  resetStreams,
  resetting,
  silentH2,
  silentTcp,
  slowH2,
  type FakeServer,
  type SwitchableProxy,
  type TlsPair,
} from '../helpers/fake-servers.js';

/** Connect and response timeout of one attempt in these tests. */
const ATTEMPT_MS = 400;
/** A bound for "failed over within the per-attempt timeout": generous, for a loaded machine. */
const FAILOVER_BOUND_MS = 3 * ATTEMPT_MS + 600;

let real: TestServer;
let tls: TlsPair;
const fakes: FakeServer[] = [];
const clients: KmsClient[] = [];

async function fake<T extends FakeServer>(p: Promise<T>): Promise<T> {
  const f = await p;
  fakes.push(f);
  return f;
}

function client(endpoints: string[], opts: Partial<ClientOptions> = {}): KmsClient {
  const c = new KmsClient({
    endpoints,
    apiKey: real.apiKey,
    ca: real.caPem,
    connectTimeoutMs: ATTEMPT_MS,
    responseTimeoutMs: ATTEMPT_MS,
    timeoutMs: 10_000,
    endpointOrder: 'listed',
    ...opts,
  });
  clients.push(c);
  return c;
}

/** Runs `fn`, returns its result (or error) and how long it took. */
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

function assertTransportError(error: unknown, host: string, reason: RegExp, label: string): TransportError {
  assert.ok(error instanceof TransportError, `${label}: got ${String(error)}, want a TransportError`);
  assert.ok(error.message.includes(host), `${label}: the error does not name ${host}: ${error.message}`);
  assert.match(error.message, reason, `${label}: got ${JSON.stringify(error.message)}`);
  assert.doesNotMatch(error.message, /NaN/, `${label}: ${error.message}`);
  return error;
}

const versionAnswer = () => ({
  status: 200,
  type: 'application/octet-stream',
  body: encodeMessage(VersionResponseSchema, { version: 'slow', commit: '', apiVersion: 'v1', host: '', fips140: false }),
});

before(async () => {
  real = await startServer();
  tls = { key: readFileSync(join(real.dir, 'certs', 'private.key'), 'utf8'), cert: real.caPem };
  await client([real.host]).createEnclave('fo');
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(fakes.map((f) => f.close()));
  await real?.stop();
  if (real) removeDir(join(real.dir, '..'));
});

describe('failover within the per-attempt bounds', () => {
  test('a server that accepts TCP and never speaks TLS', async () => {
    const silent = await fake(silentTcp());
    const alone = await timed(() => client([silent.host]).version());
    assertTransportError(alone.error, silent.host, new RegExp(`^${silent.host}: no TLS handshake within ${ATTEMPT_MS} ms$`), 'alone');
    assert.ok(alone.ms >= ATTEMPT_MS - 50 && alone.ms < FAILOVER_BOUND_MS, `alone: failed after ${alone.ms} ms`);

    const c = client([silent.host, real.host]);
    await c.version(real.host); // the real server's connection is up: what follows times the failover only
    const r = await timed(() => c.version());
    assert.equal(r.error, undefined, String(r.error));
    assert.ok(r.ms < FAILOVER_BOUND_MS, `failed over after ${r.ms} ms`);
    // A state-changing command too: the request provably never reached the silent server.
    await c.createEnclave('after-no-tls');
    assert.deepEqual(
      (await c.listEnclaves()).enclaves.map((e) => e.name).filter((n) => n === 'after-no-tls'),
      ['after-no-tls'],
    );
  });

  test('a server that completes TLS and HTTP/2 but never answers: reads fail over, writes are not repeated', async () => {
    const silent = await fake(silentH2(tls));
    const alone = await timed(() => client([silent.host]).version());
    assertTransportError(alone.error, silent.host, new RegExp(`^${silent.host}: no response within ${ATTEMPT_MS} ms$`), 'alone');
    assert.ok(alone.ms < FAILOVER_BOUND_MS, `alone: failed after ${alone.ms} ms`);

    const reads: [string, (c: KmsClient) => Promise<unknown>][] = [
      ['GET /version', (c) => c.version()],
      ['ENCLAVE:LIST (a command-channel read)', (c) => c.listEnclaves()],
      ['ENCLAVE:STATUS', (c) => c.enclaveStatus(['fo'])],
    ];
    for (const [name, read] of reads) {
      const c = client([silent.host, real.host]);
      await c.version(real.host);
      const r = await timed(() => read(c));
      assert.equal(r.error, undefined, `${name}: ${String(r.error)}`);
      assert.ok(r.ms < FAILOVER_BOUND_MS, `${name}: failed over after ${r.ms} ms`);
    }

    // ENCLAVE:CREATE reached the silent server: it may have been applied there, so it is not
    // sent to the real one (that would apply it twice on a real cluster).
    const w = client([silent.host, real.host]);
    await w.version(real.host);
    const r = await timed(() => w.createEnclave('maybe-twice'));
    assert.ok(r.error instanceof OutcomeUnknownError, `got ${String(r.error)}, want OutcomeUnknownError`);
    assertTransportError(
      r.error,
      silent.host,
      new RegExp(`no response within ${ATTEMPT_MS} ms; the request was sent and may have been applied`),
      'write',
    );
    assert.ok(r.ms < FAILOVER_BOUND_MS, `write: failed after ${r.ms} ms`);
    const names = (await client([real.host]).listEnclaves()).enclaves.map((e) => e.name);
    assert.ok(!names.includes('maybe-twice'), 'the write was repeated on another endpoint');
  });

  test('a server that resets the connection', async () => {
    const reset = await fake(resetting());
    const alone = await timed(() => client([reset.host]).version());
    assertTransportError(alone.error, reset.host, /ECONNRESET|socket disconnected|reset/i, 'alone');
    const c = client([reset.host, real.host]);
    await c.version(real.host);
    const r = await timed(() => c.createEnclave('after-reset'));
    assert.equal(r.error, undefined, String(r.error));
    assert.ok(r.ms < FAILOVER_BOUND_MS, `failed over after ${r.ms} ms`);
  });

  test('a server that answers slowly, within the timeout, is an answer', async () => {
    const slow = await fake(slowH2(tls, ATTEMPT_MS / 4, versionAnswer()));
    assert.equal((await client([slow.host, real.host]).version()).version, 'slow');
    const tooSlow = await fake(slowH2(tls, ATTEMPT_MS * 3, versionAnswer()));
    const r = await timed(() => client([tooSlow.host]).version());
    assertTransportError(r.error, tooSlow.host, new RegExp(`no response within ${ATTEMPT_MS} ms`), 'too slow');
    const over = await timed(() => client([tooSlow.host, real.host]).version());
    assert.notEqual(over.value?.version, 'slow', 'the too slow server answered');
    assert.equal(over.error, undefined, String(over.error));
  });

  test('a stream that ends without a status is a transport error, never "HTTP NaN"', async () => {
    for (const code of [http2.constants.NGHTTP2_NO_ERROR, http2.constants.NGHTTP2_INTERNAL_ERROR]) {
      const rst = await fake(resetStreams(tls, code));
      const alone = await timed(() => client([rst.host]).version());
      assertTransportError(alone.error, rst.host, /without a response|stream|closed/i, `RST_STREAM ${code}`);
      const c = client([rst.host, real.host]);
      const r = await timed(() => c.version());
      assert.equal(r.error, undefined, `RST_STREAM ${code}: ${String(r.error)}`);
    }
  });
});

describe('every endpoint in one call', () => {
  test('suspended endpoints are tried too (after the healthy ones), and the call names each failure', async () => {
    const refused = await closedPort();
    const p: SwitchableProxy = await fake(proxy(real.host));
    p.mode = 'refuse';
    const c = client([refused, p.host]);
    const down = await timed(() => c.version());
    assert.ok(down.error instanceof EndpointsError, `got ${String(down.error)}`);
    assert.match(down.error.message, new RegExp(`${refused}: .*ECONNREFUSED`));
    assert.ok(down.error.message.includes(`${p.host}: `), down.error.message);
    // Both are suspended now; the proxy comes back: the next call still finds it.
    p.mode = 'forward';
    const up = await timed(() => c.version());
    assert.equal(up.error, undefined, `all suspended: ${String(up.error)}`);

    // A healthy endpoint that fails does not hide a suspended one that works.
    const other = await closedPort();
    const c2 = client([other, p.host]);
    p.mode = 'refuse';
    await assert.rejects(c2.version(p.host)); // suspends the proxy only
    p.mode = 'forward';
    const r = await timed(() => c2.version());
    assert.equal(r.error, undefined, `healthy one failed, suspended one skipped: ${String(r.error)}`);
  });

  test("the call's timeout bounds all attempts and names the endpoints not tried", async () => {
    const [a, b] = [await fake(silentTcp()), await fake(silentH2(tls))];
    const c = client([a.host, b.host, real.host], { timeoutMs: ATTEMPT_MS + ATTEMPT_MS / 2 });
    const r = await timed(() => c.version());
    assert.ok(r.error instanceof EndpointsError, `got ${String(r.error)}`);
    assert.match(r.error.message, new RegExp(`${a.host}: no TLS handshake within ${ATTEMPT_MS} ms`));
    assert.match(r.error.message, new RegExp(`${b.host}: no response within the call's timeout of ${ATTEMPT_MS * 1.5} ms`));
    assert.match(r.error.message, new RegExp(`${real.host}: not tried, the call's timeout of ${ATTEMPT_MS * 1.5} ms was reached`));
    assert.ok(r.ms < ATTEMPT_MS * 1.5 + 600, `took ${r.ms} ms`);
  });
});

describe('request bodies', () => {
  test('bodies the server refuses midway do not wear out the connection: the next request is served', async () => {
    // Each body (20,000 frames) is far over max_body: the server answers 413 after 64 KiB and
    // resets the stream, the rest of the body unsent. Sent whole, every such body stayed counted
    // against the client's session memory: after about 70 the session failed every request.
    const small = await startServer({ config: 'version: v1\nlimits:\n  max_body: 64KiB\n' });
    const c = new KmsClient({ endpoints: [small.host], apiKey: small.apiKey, ca: small.caPem });
    try {
      await c.createEnclave('fo');
      await c.createKey('fo', { name: 'k' });
      const big = Array.from({ length: 20_000 }, () => ({ name: 'k' }));
      for (let i = 0; i < 150; i++) {
        await assert.rejects(c.generateKey('fo', big), /request too large/, `refused request ${i}`);
      }
      assert.equal((await c.generateKey('fo', [{ name: 'k' }])).length, 1);
    } finally {
      c.close();
      await small.stop();
      removeDir(join(small.dir, '..'));
    }
  });
});

describe('streams', () => {
  test("a log stream's body gets no timeout", async () => {
    const record = encodeMessage(LogRecordSchema, { level: 0, time: new Date(), message: 'late record', trace: [] });
    const frame = Buffer.concat([Buffer.from([0, 0, 0, record.length]), record]);
    const logs = await fake(
      h2(tls, (stream) => {
        stream.resume();
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
        const t = setTimeout(() => !stream.closed && stream.write(frame), ATTEMPT_MS * 3);
        stream.on('close', () => clearTimeout(t));
      }),
    );
    const c = client([logs.host], { timeoutMs: ATTEMPT_MS * 2 });
    const ac = new AbortController();
    const got: string[] = [];
    await streamLogs(c, { signal: ac.signal }, (r) => {
      got.push(r.message);
      ac.abort();
    });
    assert.deepEqual(got, ['late record']);
  });
});

describe('the CLI', () => {
  test('--timeout bounds the command, and the error names the endpoint and what timed out', async () => {
    const silent = await fake(silentTcp());
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string; ms: number }>((resolve) => {
        const t0 = performance.now();
        const child = spawn(process.execPath, [MINKMS_BIN, ...args], {
          env: { ...process.env, MINIO_KMS_SERVER: silent.host, MINIO_KMS_API_KEY: real.apiKey },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('close', (code) => resolve({ code: code ?? -1, stderr, ms: performance.now() - t0 }));
      });
    const r = await run(['ls-enclave', '-k', '--timeout', '700ms']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `minkms: cannot reach the KMS server at ${silent.host}: no TLS handshake within the call's timeout of 700 ms (check that the server runs, or set MINIO_KMS_SERVER=https://HOST:PORT[,…]; --timeout gives it longer)\n`,
    );
    const bad = await run(['ls-enclave', '--timeout', 'soon']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--timeout/);
  });
});
