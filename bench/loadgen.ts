/**
 * The Node load generator. **`npm run bench` no longer uses it** (bench/go/cmd/loadgen does): a
 * Node client spends about 55 µs of CPU per HTTP/1.1 request and saturates its core before a
 * Node server does, so what it measures is bounded by the client. Kept for bench/two-servers.ts.
 *
 * A child process of its caller (forked once per measurement), so that it never shares an
 * event loop with a server. It receives one
 * {@link LoadSpec} over IPC, runs it and answers with a {@link LoadResult}.
 *
 * - `h1`: `https.request` through one `https.Agent({ keepAlive: true })` with `conns` sockets,
 *   one request in flight per socket (what an HTTP/1.1 client can do).
 * - `h2`: `conns` `node:http2` sessions with `streams` requests in flight on each.
 * - `handshake`: a new TLS connection (full mTLS handshake, no session resumption) for every
 *   request, `Connection: close`.
 *
 * Closed loop by default (each slot sends its next request when the previous one is
 * answered); with `rate` the slots pace themselves to a fixed total rate (soak).
 */
import * as https from 'node:https';
import * as http2 from 'node:http2';
import { Histogram } from './hist.js';
import { createBody, decryptBodies, deleteBody, generateBody, type Workload } from './workload.js';

export interface Target {
  host: string;
  port: number;
  /** Server certificate, trusted as CA (PEM). */
  ca: string;
  /** Client certificate and key (PEM). */
  cert: string;
  key: string;
}

export interface LoadSpec {
  target: Target;
  /** Request path, e.g. `/v1/kms/bench`. */
  path: string;
  proto: 'h1' | 'h2';
  conns: number;
  /** Requests in flight per connection (h2 only; h1 is always 1). */
  streams: number;
  workload: Workload;
  warmupMs: number;
  durationMs: number;
  /** Total requests per second (fixed load); 0 = as fast as answers come back. */
  rate: number;
  /** Send an interval report this often (soak); 0 = never. */
  reportEveryMs: number;
}

export interface HistJSON {
  counts: number[];
  n: number;
  max: number;
  sum: number;
}

export interface LoadResult {
  type: 'result';
  elapsedMs: number;
  requests: number;
  /** Command frames answered (requests × batch for batches). */
  ops: number;
  errors: number;
  errorSamples: string[];
  hist: HistJSON;
  /** Length of the last successful response body (the ceiling server answers with as many bytes). */
  responseBytes: number;
  requestBytes: number;
  /** CPU time of this process during the measurement, ms. */
  cpuMs: number;
}

export interface IntervalReport {
  type: 'interval';
  /** Since the measurement started. */
  atMs: number;
  /** Length of this interval. */
  spanMs: number;
  requests: number;
  ops: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
}

interface Answer {
  status: number;
  bytes: number;
  error?: string;
}

type Send = (body: Buffer) => Promise<Answer>;

const HEADERS = { 'content-type': 'application/octet-stream', accept: 'application/octet-stream' };

function h1Sender(spec: LoadSpec, agent: https.Agent, close = false): Send {
  const t = spec.target;
  return (body) =>
    new Promise((resolve) => {
      const req = https.request(
        {
          host: t.host,
          port: t.port,
          method: 'POST',
          path: spec.path,
          agent,
          headers: { ...HEADERS, 'content-length': body.length, ...(close ? { connection: 'close' } : {}) },
        },
        (res) => {
          let bytes = 0;
          let text = '';
          const status = res.statusCode ?? 0;
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (status !== 200 && text.length < 200) text += c.toString('utf8');
          });
          res.on('end', () => resolve({ status, bytes, error: status === 200 ? undefined : `HTTP ${status} ${text}` }));
          res.on('error', (err) => resolve({ status: 0, bytes: 0, error: err.message }));
        },
      );
      req.on('error', (err) => resolve({ status: 0, bytes: 0, error: err.message }));
      req.end(body);
    });
}

class H2Connection {
  session: http2.ClientHttp2Session | undefined;
  constructor(readonly spec: LoadSpec) {}

  #connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const t = this.spec.target;
    const s = http2.connect(`https://${t.host}:${t.port}`, { ca: t.ca, cert: t.cert, key: t.key, servername: '' });
    s.on('error', () => {});
    s.on('close', () => {
      if (this.session === s) this.session = undefined;
    });
    this.session = s;
    return s;
  }

  send: Send = (body) =>
    new Promise((resolve) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.#connect().request({ ':method': 'POST', ':path': this.spec.path, ...HEADERS, 'content-length': body.length });
      } catch (err) {
        resolve({ status: 0, bytes: 0, error: (err as Error).message });
        return;
      }
      let status = 0;
      let bytes = 0;
      let text = '';
      let done = false;
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', (c: Buffer) => {
        bytes += c.length;
        if (status !== 200 && text.length < 200) text += c.toString('utf8');
      });
      stream.on('end', () => {
        done = true;
        resolve({ status, bytes, error: status === 200 ? undefined : `HTTP ${status} ${text}` });
      });
      stream.on('error', (err) => {
        if (!done) resolve({ status: 0, bytes: 0, error: err.message });
        done = true;
      });
      stream.on('close', () => {
        if (!done) resolve({ status: 0, bytes: 0, error: `stream closed (${stream.rstCode})` });
        done = true;
      });
      stream.end(body);
    });

  close(): void {
    this.session?.close();
  }
}

/** Chooses each request's body; `slot` is the loop number (writes alternate per slot). */
type Picker = (slot: number, seq: number) => { body: Buffer; frames: number; then?: (ok: boolean) => void };

function picker(w: Workload): Picker {
  switch (w.kind) {
    case 'generate':
    case 'handshake': {
      const body = generateBody(w);
      return () => ({ body, frames: w.batch });
    }
    case 'decrypt': {
      const bodies = decryptBodies(w, 64);
      return (_slot, seq) => ({ body: bodies[seq % bodies.length]!, frames: w.batch });
    }
    case 'mix': {
      // 90 % KEY:GENERATE, 10 % KEY:CREATE of a new key (the key set grows, as it does when
      // tenants are added).
      const gen = generateBody({ ...w, batch: 1 });
      let n = 0;
      return (_slot, seq) => (seq % 10 === 9 ? { body: createBody(`mix-${process.pid}-${n++}`), frames: 1 } : { body: gen, frames: 1 });
    }
    case 'soak': {
      // 45 % KEY:GENERATE, 45 % KEY:DECRYPT, 10 % writes: each slot alternates creating a key
      // and deleting it again, so the key set stays bounded and memory should stay flat.
      const gen = generateBody({ ...w, batch: 1 });
      const dec = decryptBodies({ ...w, batch: 1 }, 64);
      const pending = new Map<number, string>();
      let n = 0;
      return (slot, seq) => {
        const r = seq % 20;
        if (r === 19) {
          const name = pending.get(slot);
          if (name === undefined) {
            const fresh = `soak-${process.pid}-${slot}-${n++}`;
            return { body: createBody(fresh), frames: 1, then: (ok) => ok && pending.set(slot, fresh) };
          }
          return { body: deleteBody(name), frames: 1, then: (ok) => ok && pending.delete(slot) };
        }
        return r % 2 === 0 ? { body: gen, frames: 1 } : { body: dec[seq % dec.length]!, frames: 1 };
      };
    }
  }
}

async function run(spec: LoadSpec, report: (r: IntervalReport) => void): Promise<LoadResult> {
  const t = spec.target;
  const pick = picker(spec.workload);
  const slots: Send[] = [];
  const closers: Array<() => void> = [];
  if (spec.workload.kind === 'handshake') {
    // No keep-alive and no TLS session cache: every request pays a full mTLS handshake.
    const agent = new https.Agent({ keepAlive: false, maxCachedSessions: 0, ca: t.ca, cert: t.cert, key: t.key, servername: '' });
    for (let i = 0; i < spec.conns; i++) slots.push(h1Sender(spec, agent, true));
    closers.push(() => agent.destroy());
  } else if (spec.proto === 'h1') {
    const agent = new https.Agent({
      keepAlive: true,
      maxSockets: spec.conns,
      maxFreeSockets: spec.conns,
      ca: t.ca,
      cert: t.cert,
      key: t.key,
      servername: '',
    });
    for (let i = 0; i < spec.conns; i++) slots.push(h1Sender(spec, agent));
    closers.push(() => agent.destroy());
  } else {
    for (let i = 0; i < spec.conns; i++) {
      const c = new H2Connection(spec);
      for (let j = 0; j < Math.max(1, spec.streams); j++) slots.push(c.send);
      closers.push(() => c.close());
    }
  }

  const hist = new Histogram();
  const interval = new Histogram();
  let requests = 0;
  let ops = 0;
  let errors = 0;
  let iRequests = 0;
  let iOps = 0;
  let iErrors = 0;
  let responseBytes = 0;
  let requestBytes = 0;
  const errorSamples: string[] = [];
  let measuring = false;

  const start = performance.now();
  const measureFrom = start + spec.warmupMs;
  const end = measureFrom + spec.durationMs;
  let cpu0 = process.cpuUsage();
  const warm = setTimeout(() => {
    measuring = true;
    cpu0 = process.cpuUsage();
  }, spec.warmupMs);
  let lastReport = measureFrom;
  const reporter =
    spec.reportEveryMs > 0
      ? setInterval(() => {
          if (!measuring) return;
          const now = performance.now();
          report({
            type: 'interval',
            atMs: now - measureFrom,
            spanMs: now - Math.max(lastReport, measureFrom),
            requests: iRequests,
            ops: iOps,
            errors: iErrors,
            p50: interval.quantile(0.5),
            p99: interval.quantile(0.99),
            max: interval.max,
          });
          lastReport = now;
          iRequests = iOps = iErrors = 0;
          interval.reset();
        }, spec.reportEveryMs)
      : undefined;

  // Spread the slots' first requests over one interval when pacing.
  const perSlotInterval = spec.rate > 0 ? (slots.length * 1000) / spec.rate : 0;
  const loop = async (slot: number, send: Send) => {
    let seq = slot; // different slots start at different points of the workload cycle
    let next = start + (perSlotInterval * slot) / slots.length;
    for (;;) {
      if (perSlotInterval > 0) {
        const wait = next - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        next += perSlotInterval;
      }
      const now = performance.now();
      if (now >= end) return;
      const { body, frames, then } = pick(slot, seq++);
      const a = await send(body);
      const ms = performance.now() - now;
      then?.(a.error === undefined);
      if (!measuring || performance.now() > end) continue;
      requests++;
      iRequests++;
      if (a.error !== undefined) {
        errors++;
        iErrors++;
        if (errorSamples.length < 5) errorSamples.push(a.error);
        continue;
      }
      ops += frames;
      iOps += frames;
      if (frames === spec.workload.batch) {
        responseBytes = a.bytes;
        requestBytes = body.length;
      }
      hist.record(ms);
      interval.record(ms);
    }
  };
  await Promise.all(slots.map((s, i) => loop(i, s)));
  clearTimeout(warm);
  if (reporter) clearInterval(reporter);
  const cpu = process.cpuUsage(cpu0);
  for (const c of closers) c();
  return {
    type: 'result',
    elapsedMs: spec.durationMs,
    requests,
    ops,
    errors,
    errorSamples,
    hist: hist.toJSON(),
    responseBytes,
    requestBytes,
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
}

process.once('message', (spec: LoadSpec) => {
  run(spec, (r) => process.send!(r)).then(
    (result) => process.send!(result, () => process.exit(0)),
    (err: unknown) => {
      process.send!({ type: 'error', message: (err as Error).stack ?? String(err) }, () => process.exit(1));
    },
  );
});
