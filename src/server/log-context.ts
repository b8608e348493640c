/**
 * The request a log record was made for (the `request` of a LogRecord: remote address, method,
 * path, identity — kms-wire.md §2.4; the SDK MinIO pins needs it in every record).
 *
 * Two ways in, both free when nobody reads the log stream:
 * - explicitly: a caller that has the request puts it in the record's fields under the symbol
 *   {@link LOG_REQUEST} (the command channel's records do; the symbol never reaches stderr);
 * - implicitly: while at least one `/v1/debug/log` stream is open, every request runs inside
 *   an AsyncLocalStorage scope ({@link requestScope}), so that any record made on its behalf —
 *   however deep in the call stack, across awaits — knows it. When the last stream closes the
 *   scope is disabled again, so the hot path pays one boolean check per request and no async
 *   hooks (Node 20's AsyncLocalStorage costs on every promise while enabled).
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface RequestInfo {
  readonly method: string;
  /** The URL path, without the query. */
  readonly path: string;
  /** `h1:…` or ''. */
  readonly identity: string;
  /** The client's IP address. */
  readonly ip: string;
}

/** Field key of a record's request (a symbol: invisible to the JSON of stderr and the message). */
export const LOG_REQUEST: unique symbol = Symbol('minkms.log.request');

/** Longest path kept (the rest of a client's URL is its own business). */
const MAX_PATH = 256;

/** `s` cut to `max` characters (log.ts's `clip`, which imports this module). */
function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

/** `info` with every client-supplied string bounded. */
export function requestInfo(method: string, url: string, identity: string, ip: string | undefined): RequestInfo {
  const q = url.indexOf('?');
  return {
    method: cut(method, 16),
    path: cut(q < 0 ? url : url.slice(0, q), MAX_PATH),
    identity,
    ip: ip ?? '',
  };
}

class RequestScope {
  readonly #als = new AsyncLocalStorage<() => RequestInfo>();
  /** Whether requests run inside a scope now (a log stream is open). */
  active = false;

  /** Runs `fn` with `info` (computed only if a record asks) as the current request. */
  run<T>(info: () => RequestInfo, fn: () => T): T {
    return this.#als.run(info, fn);
  }

  /** The current request, if a record is made inside a scope. */
  current(): RequestInfo | undefined {
    if (!this.active) return undefined;
    return this.#als.getStore()?.();
  }

  /** Called when the number of log streams changes. */
  setStreams(n: number): void {
    const active = n > 0;
    if (active === this.active) return;
    this.active = active;
    // Disabling turns Node's async hooks off again once no instance needs them.
    if (!active) this.#als.disable();
  }
}

/** The one scope of the process (the logger and the HTTP server share it). */
export const requestScope = new RequestScope();
