/**
 * KES's log streams, `GET /v1/log/error` and `GET /v1/log/audit`: newline-delimited JSON that
 * stays open and carries what happens from the moment of the request on (nothing of the past),
 * like KES. Both are fed from this node's observability:
 *
 * - error events: every server log record at WARN or above, as `{"message": "TIME LEVEL text"}`;
 * - audit events: every request this node finishes, both APIs, as
 *   `{"time", "request": {"path", "identity", "ip"}, "response": {"code", "time"}}` — the
 *   identity in KES's hex spelling, the response time in nanoseconds (Go's time.Duration).
 *
 * A reader that falls more than {@link MAX_BACKLOG} bytes behind loses events rather than make
 * the server buffer without bound.
 */
import { kesId } from './json.js';
import { ERROR_EVENT_LEVEL } from './metrics.js';
import { clip, slogLevelName } from '../server/log.js';
import type { FinishedRequest, Observability } from '../server/observability.js';
import type { Response } from '../server/http.js';

/** Bytes a slow stream reader may fall behind before events are dropped. */
const MAX_BACKLOG = 1 << 20;
/** Longest message of an error event. */
const MAX_MESSAGE = 4096;

/** Starts an NDJSON stream on `res` and returns its writer (false while it is dropping). */
function ndjson(res: Response, obs: Observability): (event: unknown) => void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  (res as unknown as { flushHeaders?: () => void }).flushHeaders?.();
  obs.trackStream(res);
  let backlog = 0;
  return (event) => {
    if (backlog > MAX_BACKLOG) return;
    const line = JSON.stringify(event) + '\n';
    if (!res.write(line)) {
      if (backlog === 0) res.once('drain', () => (backlog = 0));
      backlog += line.length;
    }
  };
}

/** `GET /v1/log/error`. */
export function serveErrorLog(res: Response, obs: Observability): void {
  const write = ndjson(res, obs);
  const stop = obs.ring.subscribe(ERROR_EVENT_LEVEL, (e) => {
    if (e.level < ERROR_EVENT_LEVEL) return;
    write({ message: clip(`${new Date(e.time).toISOString()} ${slogLevelName(e.level)} ${e.message}`, MAX_MESSAGE) });
  });
  res.once('close', stop);
}

/** `GET /v1/log/audit`. */
export function serveAuditLog(res: Response, obs: Observability): void {
  const write = ndjson(res, obs);
  const stop = obs.streamFinished((r: FinishedRequest) =>
    write({
      time: new Date(r.time).toISOString(),
      request: { path: r.path, identity: kesId(r.identity), ip: r.ip },
      response: { code: r.status, time: Math.round(r.seconds * 1e9) },
    }),
  );
  res.once('close', stop);
}
