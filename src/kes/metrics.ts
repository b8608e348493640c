/**
 * `GET /v1/metrics`: KES's metrics, in the Prometheus text format and with KES's names, which
 * the KES client parses into its `Metric` (kes_http_request_*, kes_http_response_time,
 * kes_log_*_events, kes_system_*). They count every request of this node — both APIs: one
 * listener, one server — with KES's classes: success below 400, error 4xx, failure 5xx.
 * Our own, richer metrics stay at `/v1/health/metrics`.
 */
import { availableParallelism, cpus } from 'node:os';
import type { Observability } from '../server/observability.js';

/** KES's response time buckets, in seconds (10 ms … 10 s). */
const BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 3, 5, 10] as const;
/** Log records at or above WARN are KES "error events" (kes/logs.ts streams the same). */
export const ERROR_EVENT_LEVEL = 4;

export class KesMetrics {
  #success = 0;
  #error = 0;
  #failure = 0;
  #auditEvents = 0;
  #errorEvents = 0;
  readonly #buckets = new Array<number>(BUCKETS.length).fill(0);
  #count = 0;
  #sum = 0;
  readonly #obs: Observability;
  readonly #uptimeSeconds: () => number;
  readonly #stop: (() => void)[] = [];

  constructor(obs: Observability, uptimeSeconds: () => number) {
    this.#obs = obs;
    this.#uptimeSeconds = uptimeSeconds;
    this.#stop.push(
      obs.onFinished((r) => {
        if (r.status >= 500) this.#failure++;
        else if (r.status >= 400) this.#error++;
        else this.#success++;
        // Every request is one KES audit event (kes/logs.ts).
        this.#auditEvents++;
        this.#count++;
        this.#sum += r.seconds;
        for (let i = 0; i < BUCKETS.length; i++) if (r.seconds <= BUCKETS[i]!) this.#buckets[i]!++;
      }),
      obs.ring.subscribe(ERROR_EVENT_LEVEL, () => this.#errorEvents++),
    );
  }

  /** The exposition text. */
  text(): string {
    const lines: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', value: number, help: string) =>
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
    metric('kes_http_request_success', 'counter', this.#success, 'Number of requests that have been served successfully.');
    metric('kes_http_request_error', 'counter', this.#error, 'Number of request that failed due to some error. (HTTP 4xx status code)');
    metric(
      'kes_http_request_failure',
      'counter',
      this.#failure,
      'Number of request that failed due to some internal failure. (HTTP 5xx status code)',
    );
    metric('kes_http_request_active', 'gauge', this.#obs.metrics.inflight, 'Number of active requests that are not finished, yet.');
    lines.push(
      '# HELP kes_http_response_time Histogram of request response times spawning from 10ms to 10s.',
      '# TYPE kes_http_response_time histogram',
    );
    BUCKETS.forEach((le, i) => lines.push(`kes_http_response_time_bucket{le="${le}"} ${this.#buckets[i]}`));
    lines.push(
      `kes_http_response_time_bucket{le="+Inf"} ${this.#count}`,
      `kes_http_response_time_sum ${this.#sum}`,
      `kes_http_response_time_count ${this.#count}`,
    );
    metric('kes_log_audit_events', 'counter', this.#auditEvents, 'Number of audit log events written to the audit log targets.');
    metric('kes_log_error_events', 'counter', this.#errorEvents, 'Number of error log events written to the error log targets.');
    metric('kes_system_up_time', 'gauge', this.#uptimeSeconds(), 'The time the server has been up and running in seconds.');
    metric('kes_system_num_cpu', 'gauge', cpus().length, 'The number of logical CPUs available on the system.');
    metric('kes_system_num_cpu_used', 'gauge', availableParallelism(), 'The number of logical CPUs usable by the server.');
    const mem = process.memoryUsage();
    metric('kes_system_mem_heap_used', 'gauge', mem.heapUsed, 'The number of bytes currently used on the heap memory.');
    return lines.join('\n') + '\n';
  }

  close(): void {
    for (const stop of this.#stop) stop();
  }
}
