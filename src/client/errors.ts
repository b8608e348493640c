/**
 * Transport failures of the client, as opposed to HTTP error answers. Each one names the
 * endpoint and what went wrong (`127.0.0.1:7373: no TLS handshake within 5000 ms`), and says
 * whether the request may have reached the server — which decides whether it may be sent
 * again to another endpoint.
 */

/** A connection-level failure of one endpoint. */
export class TransportError extends Error {
  /** `host:port` of the endpoint (for several endpoints, comma-separated). */
  readonly host: string;
  /** What went wrong, without the endpoint. */
  readonly reason: string;
  /**
   * The request may have reached the server: it was handed to a working connection and no
   * answer says it was refused unprocessed. Only requests that are safe to repeat are then sent
   * to another endpoint.
   */
  readonly delivered: boolean;
  /** Part of the answer was already passed to the caller (a stream): never repeated. */
  readonly answered: boolean;

  constructor(host: string, cause: unknown, opts: { delivered?: boolean; answered?: boolean; reason?: string } = {}) {
    const reason = opts.reason ?? ((cause as Error)?.message || String(cause));
    super(`${host}: ${reason}`, { cause });
    this.name = 'TransportError';
    this.host = host;
    this.reason = reason;
    this.delivered = opts.delivered ?? false;
    this.answered = opts.answered ?? false;
  }
}

/** A step that did not finish in time (the cause of a TransportError). */
export class TimeoutError extends Error {
  readonly code = 'MINKMS_TIMEOUT';
  /** It was the whole call's timeout, not one step's: no other endpoint is tried after it. */
  readonly callExpired: boolean;
  constructor(message: string, callExpired = false) {
    super(message);
    this.name = 'TimeoutError';
    this.callExpired = callExpired;
  }
}

/**
 * A state-changing request reached an endpoint that did not answer. It is not sent to another
 * endpoint, because it may have been applied: doing it twice could, for example, add two key
 * versions. The caller must look at the state before trying again.
 */
export class OutcomeUnknownError extends TransportError {
  constructor(err: TransportError) {
    super(err.host, err, {
      delivered: true,
      reason: `${err.reason}; the request was sent and may have been applied, so it was not repeated on another endpoint`,
    });
    this.name = 'OutcomeUnknownError';
  }
}

/** No endpoint answered: what each one did (in the order they were tried), and those not tried. */
export class EndpointsError extends TransportError {
  readonly attempts: readonly TransportError[];
  /** Endpoints left untried because the call's overall timeout was reached. */
  readonly untried: readonly string[];

  constructor(attempts: readonly TransportError[], untried: readonly string[], timeoutMs: number) {
    const parts = attempts.map((a) => `${a.host}: ${a.reason}`);
    if (untried.length > 0) parts.push(`${untried.join(', ')}: not tried, the call's timeout of ${timeoutMs} ms was reached`);
    const hosts = [...attempts.map((a) => a.host), ...untried];
    super(hosts.join(', '), attempts[attempts.length - 1], { reason: `no endpoint answered (${parts.join('; ')})` });
    this.message = this.reason;
    this.name = 'EndpointsError';
    this.attempts = attempts;
    this.untried = untried;
  }
}
