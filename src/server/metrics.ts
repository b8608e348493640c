/**
 * Prometheus metrics (`GET /v1/health/metrics`), in the text exposition format, from a
 * prom-client Registry of our own (never the global one).
 *
 * The per-request series are the hot path. prom-client builds a string key from the label
 * values on every `inc`/`observe`; ours only look up a constant label string in a Map and bump
 * numbers ({@link FastCounter}, {@link FastHistogram}), and hand prom-client the values when it
 * scrapes (they implement the registry's `get()` contract, the same shape prom-client's own
 * Counter and Histogram return). Gauges of state (sealed, uptime, enclaves/keys/identities)
 * are computed on scrape. Process and Node.js runtime metrics come from prom-client's
 * `collectDefaultMetrics`.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric, type MetricValue } from 'prom-client';
import { VERSION } from '../version.js';

/** What the registry reads from a metric on scrape (prom-client's own metrics return the same shape). */
interface Values {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: MetricValue<string>[];
  aggregator: 'sum';
}

/** A counter with labels `[first, status]`, counted in Maps of numbers. */
export class FastCounter {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter' as const;
  readonly aggregator = 'sum';
  readonly #labels: readonly [string, string?];
  #rows = new Map<string, Map<number, number>>();

  constructor(name: string, help: string, labels: readonly [string, string?]) {
    this.name = name;
    this.help = help;
    this.#labels = labels;
  }

  /** Adds `n` to the series (`label`, `status`); `status` is ignored without a second label. */
  inc(label: string, status = 0, n = 1): void {
    let row = this.#rows.get(label);
    if (row === undefined) {
      row = new Map();
      this.#rows.set(label, row);
    }
    row.set(status, (row.get(status) ?? 0) + n);
  }

  /** The current value of one series (tests). */
  value(label: string, status = 0): number {
    return this.#rows.get(label)?.get(status) ?? 0;
  }

  get(): Values {
    const [l1, l2] = this.#labels;
    const values: MetricValue<string>[] = [];
    for (const [label, row] of this.#rows) {
      for (const [status, value] of row) values.push({ labels: l2 ? { [l1]: label, [l2]: String(status) } : { [l1]: label }, value });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }

  reset(): void {
    this.#rows = new Map();
  }
}

/** A histogram, optionally with one label, counted in Float64Arrays. */
export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum';
  readonly #label: string | undefined;
  readonly #buckets: readonly number[];
  /** Per label: per-bucket counts (not cumulative), then +Inf, sum, count. */
  #rows = new Map<string, Float64Array>();

  constructor(name: string, help: string, buckets: readonly number[], label?: string) {
    this.name = name;
    this.help = help;
    this.#buckets = buckets;
    this.#label = label;
  }

  observe(label: string, value: number): void {
    let row = this.#rows.get(label);
    const b = this.#buckets;
    if (row === undefined) {
      row = new Float64Array(b.length + 3);
      this.#rows.set(label, row);
    }
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    row[i]!++;
    row[b.length + 1]! += value;
    row[b.length + 2]!++;
  }

  /** Number of observations of one series (tests). */
  count(label = ''): number {
    return this.#rows.get(label)?.[this.#buckets.length + 2] ?? 0;
  }

  get(): Values {
    const b = this.#buckets;
    const values: MetricValue<string>[] = [];
    for (const [label, row] of this.#rows) {
      const base: Record<string, string> = this.#label ? { [this.#label]: label } : {};
      let cumulative = 0;
      for (let i = 0; i <= b.length; i++) {
        cumulative += row[i]!;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { ...base, le: i < b.length ? String(b[i]) : '+Inf' },
          value: cumulative,
        } as MetricValue<string>);
      }
      values.push({ metricName: `${this.name}_sum`, labels: base, value: row[b.length + 1]! } as MetricValue<string>);
      values.push({ metricName: `${this.name}_count`, labels: base, value: row[b.length + 2]! } as MetricValue<string>);
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }

  reset(): void {
    this.#rows = new Map();
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SIZE_BUCKETS = [64, 256, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20];

/** What the state gauges read on scrape. */
export interface StateSource {
  sealed(): boolean;
  /** Configured HSMs without a sealed root key entry. */
  pendingHsms(): number;
  uptimeSeconds(): number;
  /** Counts of the domain, or undefined when sealed. */
  counts(): { enclaves: number; keys: number; identities: number } | undefined;
  logStreams(): number;
  auditRecords(): number;
  auditErrors(): number;
}

/** Every metric of a node. */
export class Metrics {
  readonly registry = new Registry();
  /** `minkms_http_requests_total{command,status}`: one per HTTP request; `command` is the command name or the route. */
  readonly requests = new FastCounter('minkms_http_requests_total', 'HTTP requests by command (or route) and status code', [
    'command',
    'status',
  ]);
  /** `minkms_commands_total{command,status}`: one per command frame (a batch of N counts N). */
  readonly commands = new FastCounter('minkms_commands_total', 'Command frames by command and HTTP status of their request', [
    'command',
    'status',
  ]);
  readonly canceled = new FastCounter(
    'minkms_http_requests_canceled_total',
    'Requests the client abandoned before the response was complete',
    ['command'],
  );
  readonly duration = new FastHistogram(
    'minkms_http_request_duration_seconds',
    'Request latency by command (or route), until the response is complete',
    LATENCY_BUCKETS,
    'command',
  );
  readonly requestSize = new FastHistogram('minkms_http_request_size_bytes', 'Request body sizes (Content-Length)', SIZE_BUCKETS);
  readonly responseSize = new FastHistogram(
    'minkms_http_response_size_bytes',
    'Response body sizes (Content-Length; streams not counted)',
    SIZE_BUCKETS,
  );
  /** Requests being served. */
  inflight = 0;

  constructor(state: StateSource) {
    const r = this.registry;
    for (const m of [this.requests, this.commands, this.canceled, this.duration, this.requestSize, this.responseSize]) {
      r.registerMetric(m as unknown as Metric);
    }
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(value());
        },
      });
    gauge('minkms_http_requests_inflight', 'Requests being served (including open log streams)', () => this.inflight);
    gauge('minkms_sealed', '1 if the node is sealed (cannot unseal its root key), 0 if it serves', () => (state.sealed() ? 1 : 0));
    gauge('minkms_hsm_pending', 'Configured HSMs without a sealed root key entry (sealing for them failed; see minkms stat)', () =>
      state.pendingHsms(),
    );
    gauge('minkms_uptime_seconds', 'Seconds since the node started', () => state.uptimeSeconds());
    // One pass over the enclaves serves all three gauges of a scrape.
    let cached: { at: number; value: ReturnType<StateSource['counts']> } | undefined;
    const counts = () => {
      const now = Date.now();
      if (!cached || now - cached.at > 1000) cached = { at: now, value: state.counts() };
      return cached.value;
    };
    const countGauge = (name: string, help: string, pick: (c: NonNullable<ReturnType<StateSource['counts']>>) => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          const c = counts();
          if (c) this.set(pick(c));
          else this.set(0);
        },
      });
    countGauge('minkms_enclaves', 'Number of enclaves (0 while sealed)', (c) => c.enclaves);
    countGauge('minkms_keys', 'Number of keys (names, not versions) in all enclaves (0 while sealed)', (c) => c.keys);
    countGauge(
      'minkms_identities',
      'Number of identities in all enclaves, without the root identity (0 while sealed)',
      (c) => c.identities,
    );
    gauge('minkms_log_streams', 'Open POST /v1/debug/log streams', () => state.logStreams());
    const total = (name: string, help: string, value: () => number) =>
      new Counter({
        name,
        help,
        registers: [r],
        collect() {
          this.reset();
          this.inc(value());
        },
      });
    total('minkms_audit_records_total', 'Audit lines written since the start', () => state.auditRecords());
    total('minkms_audit_write_errors_total', 'Failed audit log writes since the start', () => state.auditErrors());
    new Gauge({ name: 'minkms_build_info', help: 'Version of the server', labelNames: ['version'], registers: [r] }).set(
      { version: VERSION },
      1,
    );
    collectDefaultMetrics({ register: r });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
