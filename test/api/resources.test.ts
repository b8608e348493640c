/**
 * Resources under abuse (issue 11), against real server processes: a stranger's 1 GiB
 * `PUT /v1/db`, 64 parallel 16 MiB `POST /v1/kms` from an unknown identity (and, for the buffer
 * budget, from a User), 2,000 idle connections against `max_connections: 1000`, and a 10,000-frame
 * request from a User.
 *
 * For each: the node's resident memory before, at its peak (VmHWM, reset before the test) and
 * after; the peak must stay under a generous bound — twice the idle RSS plus the configured
 * buffer budget (`limits.max_buffered`, 256 MiB by default) — and, where nothing may be buffered
 * at all (strangers), under the RSS before plus 64 MiB. Meanwhile another client keeps being
 * served (reads and writes, its slowest answer reported), and afterwards everything written
 * before and during the test is still there and still decrypts. The numbers go to the test's
 * diagnostics (docs/security.md quotes them).
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import type { ClientHttp2Session } from 'node:http2';
import { startServer, type TestServer } from '../helpers/server.js';
import { clientFor, newUser } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { MiB, closeSession, h2Session, memoryOf, mib, openSockets, resetPeak } from '../helpers/security.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { ERRORS } from '../../src/errors.js';
import { DEFAULT_LIMITS } from '../../src/config/config.js';
import { KmsClient } from '../../src/client/client.js';

const E = 'res';
const OCTET = 'application/octet-stream';
const DENIED = ERRORS.ERR_NOT_ALLOWED[1];
/** How much a stranger's requests may move the peak RSS (nothing of their bodies is kept). */
const STRANGER_SLACK = 64 * MiB;

// ------------------------------------------------------------------------------ shared parts

/** Another client, served all along: reads and writes, every answer checked, the slowest timed. */
class Bystander {
  readonly #client: KmsClient;
  #stop = false;
  #loop: Promise<void> | undefined;
  worstMs = 0;
  requests = 0;
  readonly errors: string[] = [];
  /** Keys it created (all must exist afterwards). */
  readonly created: string[] = [];

  constructor(client: KmsClient) {
    this.#client = client;
  }

  start(tag: string): void {
    this.#loop = (async () => {
      let i = 0;
      while (!this.#stop) {
        const t0 = performance.now();
        try {
          if (i % 4 === 0) {
            const name = `${tag}-${i}`;
            await this.#client.createKey(E, { name });
            this.created.push(name);
          } else {
            await this.#client.generateKey(E, [{ name: 'base' }]);
          }
          this.requests++;
        } catch (err) {
          this.errors.push((err as Error).message);
        }
        this.worstMs = Math.max(this.worstMs, performance.now() - t0);
        i++;
        // The pace of the load, not a wait for something: a slower machine sends less.
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
    this.#client.close();
  }
}

/** Data keys made before the tests: each must still decrypt after each test. */
interface Sealed {
  plaintext: Buffer;
  ciphertext: Buffer;
  version: number;
}

async function sealSome(c: KmsClient, n: number): Promise<Sealed[]> {
  const deks = await c.generateKey(
    E,
    Array.from({ length: n }, () => ({ name: 'base' })),
  );
  return deks.map((d) => ({ plaintext: Buffer.from(d.plaintext), ciphertext: Buffer.from(d.ciphertext), version: d.version }));
}

async function assertNothingLost(c: KmsClient, sealed: readonly Sealed[], created: readonly string[]): Promise<void> {
  const out = await c.decrypt(
    E,
    sealed.map((s) => ({ name: 'base', version: s.version, ciphertext: s.ciphertext })),
  );
  out.forEach((o, i) => assert.ok(o.plaintext.equals(sealed[i]!.plaintext), `data key ${i} does not decrypt to what it was`));
  for (let i = 0; i < created.length; i += 500) {
    const chunk = created.slice(i, i + 500);
    const st = await c.keyStatus(
      E,
      chunk.map((name) => ({ name })),
    );
    assert.equal(st.length, chunk.length);
  }
}

interface Measured {
  before: number;
  peak: number;
  after: number;
  bound: number;
  ms: number;
}

/** Runs `fn` between memory readings of `server` (peak reset first) and a bystander; reports and checks. */
async function measured(
  t: TestContext,
  server: TestServer,
  root: KmsClient,
  sealed: readonly Sealed[],
  idleRss: number,
  label: string,
  fn: () => Promise<string>,
  opts: { stranger?: boolean } = {},
): Promise<Measured> {
  const pid = server.process.pid!;
  const bystander = new Bystander(clientFor(server, server.apiKey));
  const before = memoryOf(pid).rss;
  resetPeak(pid);
  bystander.start(label.replace(/[^a-z0-9]+/gi, '-').toLowerCase());
  const t0 = performance.now();
  let what: string;
  try {
    what = await fn();
  } finally {
    await bystander.stop();
  }
  const ms = performance.now() - t0;
  const { peak, rss: after } = memoryOf(pid);
  const bound = 2 * idleRss + DEFAULT_LIMITS.maxBuffered;
  t.diagnostic(
    `${label}: ${what}; ${ms.toFixed(0)} ms; RSS before ${mib(before)}, peak ${mib(peak)}, after ${mib(after)} ` +
      `(bound ${mib(bound)}${opts.stranger ? `, stranger bound ${mib(before + STRANGER_SLACK)}` : ''}); ` +
      `bystander: ${bystander.requests} requests, slowest ${bystander.worstMs.toFixed(0)} ms, ${bystander.errors.length} errors`,
  );
  assert.deepEqual(bystander.errors.slice(0, 5), [], 'the other client was not served');
  assert.ok(bystander.requests > 0, 'the other client got nothing done');
  assert.ok(peak < bound, `${label}: peak RSS ${mib(peak)} over the bound ${mib(bound)} (2 × idle ${mib(idleRss)} + max_buffered)`);
  if (opts.stranger) assert.ok(peak < before + STRANGER_SLACK, `${label}: a stranger moved the peak RSS by ${mib(peak - before)}`);
  await assertNothingLost(root, sealed, bystander.created);
  return { before, peak, after, bound, ms };
}

/** Streams `total` bytes of body on a new stream (declared length), with backpressure, until the answer. */
async function stream(
  session: ClientHttp2Session,
  method: string,
  path: string,
  total: number,
): Promise<{ status: number; message: string; written: number }> {
  const st = session.request({ ':method': method, ':path': path, 'content-length': total, 'content-type': OCTET });
  const chunk = Buffer.alloc(MiB, 0x62);
  let status = 0;
  let body = '';
  let written = 0;
  let closed = false;
  // Done once the answer is complete (or the stream gone). Not on 'close' alone: Node's client
  // keeps a stream that the server reset with NO_ERROR open while the body it queued is unsent
  // (the server will never read it), until the session times out. Go's client does what this
  // one does: the response complete, it drops the rest of the body.
  const done = new Promise<void>((resolve) => {
    st.on('response', (h) => (status = Number(h[':status'])));
    st.on('data', (d: Buffer) => (body += d.toString('utf8')));
    const end = () => {
      closed = true;
      resolve();
    };
    st.on('end', end);
    st.on('close', end);
    st.on('error', () => {});
  });
  const timer = setTimeout(() => st.destroy(), 60_000);
  while (written < total && !closed && status === 0) {
    const ok = st.write(chunk);
    written += chunk.length;
    if (!ok) await Promise.race([new Promise((r) => st.once('drain', r)), done]);
  }
  await done;
  clearTimeout(timer);
  st.destroy();
  let message = '';
  try {
    message = String((JSON.parse(body) as { message?: unknown }).message ?? '');
  } catch {
    // not JSON
  }
  return { status, message, written };
}

/** One HTTP/1.1 request with a declared body of `total` bytes, streamed until the server answers or closes. */
function streamH1(server: TestServer, path: string, total: number): Promise<{ status: number; written: number; closed: boolean }> {
  return new Promise((resolve) => {
    const c = tls.connect({ host: '127.0.0.1', port: server.port, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false });
    let status = 0;
    let written = 0;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      resolve({ status, written, closed });
    };
    const timer = setTimeout(() => finish(false), 60_000);
    c.on('error', () => finish(true));
    c.on('close', () => finish(true));
    c.on('data', (d: Buffer) => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1'));
      if (m) status = Number(m[1]);
    });
    c.once('secureConnect', () => {
      c.write(`PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${total}\r\nContent-Type: ${OCTET}\r\n\r\n`);
      const chunk = Buffer.alloc(MiB, 0x63);
      const pump = () => {
        while (!settled && written < total) {
          written += chunk.length;
          if (!c.write(chunk)) return void c.once('drain', pump);
        }
      };
      pump();
    });
  });
}

// ------------------------------------------------------------------------------ bodies and frames

describe('bodies and frames', () => {
  let server: TestServer;
  let root: KmsClient;
  let sealed: Sealed[];
  let idleRss: number;
  const results: Record<string, Measured> = {};

  before(async () => {
    server = await startServer();
    root = clientFor(server, server.apiKey);
    await root.createEnclave(E);
    await root.createKey(E, { name: 'base' });
    sealed = await sealSome(root, 100);
    // Idle: after start-up and a little work, nothing in flight.
    await root.version();
    idleRss = memoryOf(server.process.pid!).rss;
  });

  after(async () => {
    root?.close();
    await server?.stop();
    console.log(
      `# resources: idle RSS ${mib(idleRss)}; ${JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { before: mib(v.before), peak: mib(v.peak), after: mib(v.after), ms: Math.round(v.ms) }])))}`,
    );
  });

  test("a stranger's 1 GiB PUT /v1/db (HTTP/2 and HTTP/1.1): refused before its body, never buffered", { timeout: 180_000 }, async (t) => {
    results['PUT /v1/db 1 GiB'] = await measured(
      t,
      server,
      root,
      sealed,
      idleRss,
      "a stranger's 1 GiB PUT /v1/db",
      async () => {
        const s = h2Session(server, generateApiKey().text);
        const r2 = await stream(s, 'PUT', '/v1/db', 1 << 30);
        await closeSession(s);
        assert.equal(r2.status, 403);
        assert.equal(r2.message, DENIED);
        // Several times: a close that is not lingering loses the answer to a reset most times.
        let written = 0;
        for (let i = 0; i < 10; i++) {
          const r1 = await streamH1(server, '/v1/db', 1 << 30);
          assert.equal(r1.status, 403, `HTTP/1.1 (${i}): no 403`);
          assert.ok(r1.closed, `HTTP/1.1 (${i}): the connection was not closed`);
          written = Math.max(written, r1.written);
        }
        return `HTTP/2: 403 after ${mib(r2.written)} handed over; HTTP/1.1: 403 and closed after at most ${mib(written)} handed over`;
      },
      { stranger: true },
    );
  });

  test('64 parallel 16 MiB POST /v1/kms from an unknown identity: all refused before their bodies', { timeout: 180_000 }, async (t) => {
    results['64 × 16 MiB, unknown'] = await measured(
      t,
      server,
      root,
      sealed,
      idleRss,
      '64 × 16 MiB POST /v1/kms by a stranger',
      async () => {
        const sessions = Array.from({ length: 8 }, () => h2Session(server, generateApiKey().text));
        const answers = await Promise.all(
          Array.from({ length: 64 }, (_, i) => stream(sessions[i % 8]!, 'POST', i % 2 ? '/v1/kms' : `/v1/kms/${E}`, 16 * MiB)),
        );
        await Promise.all(sessions.map(closeSession));
        const statuses = answers.map((a) => a.status);
        assert.deepEqual([...new Set(statuses)], [403], `statuses ${statuses.join(',')}`);
        const handed = answers.reduce((n, a) => n + a.written, 0);
        return `64 × 403, ${mib(handed)} handed over in all`;
      },
      { stranger: true },
    );
  });

  test('a 10,000-frame KEY:GENERATE request from a User', { timeout: 180_000 }, async (t) => {
    const u = newUser(server);
    await root.createPolicy(E, { name: 'gen', allow: { 'KEY:GENERATE': { rules: { 'ba*': {} } } } });
    await root.createIdentity(E, { identity: u.identity });
    await root.assignPolicy(E, u.identity, 'gen');
    try {
      results['10,000 frames, User'] = await measured(t, server, root, sealed, idleRss, 'a 10,000-frame request from a User', async () => {
        const deks = await u.client.generateKey(
          E,
          Array.from({ length: 10_000 }, () => ({ name: 'base' })),
        );
        assert.equal(deks.length, 10_000);
        const back = await root.decrypt(E, [{ name: 'base', version: deks[9_999]!.version, ciphertext: deks[9_999]!.ciphertext }]);
        assert.ok(back[0]!.plaintext.equals(deks[9_999]!.plaintext));
        return '10,000 data keys';
      });
    } finally {
      u.client.close();
    }
  });

  test(
    '64 parallel 16 MiB POST /v1/kms from a User over 8 connections: its budget holds (503 beyond it), others are served',
    { timeout: 180_000 },
    async (t) => {
      const u = newUser(server);
      await root.createIdentity(E, { identity: u.identity });
      try {
        results['64 × 16 MiB, User'] = await measured(t, server, root, sealed, idleRss, '64 × 16 MiB POST /v1/kms by a User', async () => {
          const sessions = Array.from({ length: 8 }, () => h2Session(server, u.apiKey));
          const answers = await Promise.all(
            Array.from({ length: 64 }, (_, i) => stream(sessions[i % 8]!, 'POST', `/v1/kms/${E}`, 16 * MiB)),
          ).finally(() => Promise.all(sessions.map(closeSession)));
          const count = (s: number) => answers.filter((a) => a.status === s).length;
          // A body that fits the budgets is read (garbage: 400) or, on a slow machine, not within
          // body_timeout (408); the others find the budgets full (503). One identity's budget
          // (max_buffered_per_identity, 64 MiB) admits 4 bodies of 16 MiB at once, whatever the
          // number of its connections, and the other client goes on being served.
          assert.equal(count(400) + count(408) + count(503), 64, `statuses ${answers.map((a) => a.status).join(',')}`);
          assert.ok(
            count(503) >= 64 - DEFAULT_LIMITS.maxBufferedPerIdentity / (16 * MiB),
            `only ${count(503)} bodies refused for the budget`,
          );
          return `${count(400)} read (400 malformed), ${count(408)} not received within body_timeout (408), ${count(503)} refused with 503 server busy`;
        });
      } finally {
        u.client.close();
      }
    },
  );
});

// ------------------------------------------------------------------------------ connections

describe('connections', () => {
  const MAX = 1000;
  const FLOOD = 2000;
  let server: TestServer;
  let root: KmsClient;

  before(async () => {
    // The default idle_timeout (2 min) outlasts the flood: nothing is closed for being idle meanwhile.
    // Idle connections are held for longer than the flood can take on a busy machine (opening
    // 2,000 took 130 s at a load of 13): none may be closed for idleness before the newcomer tries.
    server = await startServer({ config: `version: v1\nlimits:\n  max_connections: ${MAX}\n  idle_timeout: 15m\n` });
    root = clientFor(server, server.apiKey);
    await root.createEnclave(E);
    await root.createKey(E, { name: 'base' });
  });

  after(async () => {
    root?.close();
    await server?.stop();
  });

  /** A TLS connection (ALPN h2) that sends the HTTP/2 preface and an empty SETTINGS frame, then nothing; undefined if refused. */
  function idleConnection(): Promise<tls.TLSSocket | undefined> {
    return new Promise((resolve) => {
      const c = tls.connect({ host: '127.0.0.1', port: server.port, ALPNProtocols: ['h2'], rejectUnauthorized: false });
      let settled = false;
      const done = (v: tls.TLSSocket | undefined) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        c.destroy();
        done(undefined);
      }, 60_000);
      c.on('error', () => done(undefined));
      c.on('close', () => done(undefined));
      c.once('secureConnect', () => {
        // Accepted once the node's HTTP/2 session answers with its SETTINGS; a refused socket is
        // closed instead (either settles it, however long the node takes).
        c.once('data', () => done(c));
        c.resume();
        c.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      });
    });
  }

  test(`${FLOOD} idle connections against max_connections: ${MAX}`, { timeout: 300_000 }, async (t) => {
    const pid = server.process.pid!;
    const sealed = await sealSome(root, 50);
    await root.version();
    const idleRss = memoryOf(pid).rss;
    const baseline = openSockets(pid);
    let open: tls.TLSSocket[] = [];
    const conns: (tls.TLSSocket | undefined)[] = [];
    let maxServerSockets = 0;
    let newcomerRefused = false;
    try {
      const m = await measured(t, server, root, sealed, idleRss, `${FLOOD} idle connections`, async () => {
        for (let i = 0; i < FLOOD; i += 100) {
          conns.push(...(await Promise.all(Array.from({ length: Math.min(100, FLOOD - i) }, idleConnection))));
          maxServerSockets = Math.max(maxServerSockets, openSockets(pid));
        }
        open = conns.filter((c): c is tls.TLSSocket => c !== undefined && !c.destroyed);
        maxServerSockets = Math.max(maxServerSockets, openSockets(pid));
        // Full: a newcomer is refused, while the clients connected before are served (the bystander).
        const newcomer = new KmsClient({ endpoints: [server.host], ca: server.caPem, connectTimeoutMs: 5_000, timeoutMs: 10_000 });
        newcomerRefused = await newcomer.version().then(
          () => false,
          () => true,
        );
        newcomer.close();
        return `${open.length} accepted and held, ${FLOOD - open.length} refused; a newcomer ${newcomerRefused ? 'refused' : 'served'}; node sockets at most ${maxServerSockets} (${baseline} before)`;
      });
      console.log(
        `# resources: ${FLOOD} idle connections: RSS before ${mib(m.before)}, peak ${mib(m.peak)}, after ${mib(m.after)}, ${Math.round(m.ms)} ms`,
      );
    } finally {
      for (const c of conns) c?.destroy();
    }
    // The root client's and the bystander's connections count too: the flood gets the rest.
    assert.ok(open.length <= MAX, `${open.length} connections held, more than max_connections`);
    assert.ok(open.length >= MAX - 20, `only ${open.length} of ${MAX} connections accepted`);
    assert.ok(maxServerSockets <= baseline + MAX + 5, `the node held ${maxServerSockets} sockets`);
    assert.ok(newcomerRefused, 'a newcomer was served while the node was full');
    // Once they are gone, the node holds nothing of them and serves newcomers again.
    await waitFor('the node to let go of the connections', () => openSockets(pid) <= baseline + 2, 30_000, 250);
    const after = clientFor(server);
    await after.version();
    after.close();
  });
});
