/**
 * The endpoints of a client and their health. A call tries every endpoint at most once: the
 * healthy ones first (in random order, to spread the load, or in the listed order), then the
 * suspended ones, the one suspended longest ago first. A failure suspends an endpoint for
 * {@link SUSPEND_MS}, which only moves it to the back of the line: a suspended endpoint is still
 * tried when every other one has failed, so suspension never makes a call fail while some
 * endpoint works.
 */
import type { ClientHttp2Session } from 'node:http2';

/** How long an endpoint that failed goes to the back of the line. */
export const SUSPEND_MS = 30_000;

/** `host:port`, `https://host:port` or `http://host:port` → `https://host:port` (port 7373 by default). */
export function normalizeEndpoint(e: string): string {
  const s = e
    .trim()
    .replace(/^https?:\/\//, '')
    .replace(/\/+$/, '');
  if (s === '') throw new TypeError('empty server endpoint');
  const url = new URL(`https://${s}`);
  if (url.port === '') url.port = '7373';
  return `https://${url.host}`;
}

export class Endpoint {
  /** `https://host:port` */
  readonly url: string;
  /** `host:port`, as errors name it. */
  readonly host: string;
  suspendedUntil = 0;
  /** The HTTP/2 session in use (or being set up), shared by concurrent requests. */
  session: ClientHttp2Session | undefined;
  /** Settles when `session` is connected (TCP, TLS and HTTP/2 preface). */
  ready: Promise<ClientHttp2Session> | undefined;

  constructor(url: string) {
    this.url = url;
    this.host = url.slice('https://'.length);
  }

  failed(now = Date.now()): void {
    this.suspendedUntil = now + SUSPEND_MS;
  }

  succeeded(): void {
    this.suspendedUntil = 0;
  }
}

export type EndpointOrder = 'random' | 'listed';

/** Every endpoint once: the healthy ones first, then the suspended ones (longest suspended first). */
export function callOrder(endpoints: readonly Endpoint[], order: EndpointOrder, now = Date.now()): Endpoint[] {
  const healthy = endpoints.filter((e) => e.suspendedUntil <= now);
  const suspended = endpoints.filter((e) => e.suspendedUntil > now).sort((a, b) => a.suspendedUntil - b.suspendedUntil);
  if (order === 'random' && healthy.length > 1) {
    const start = Math.floor(Math.random() * healthy.length);
    healthy.push(...healthy.splice(0, start));
  }
  return [...healthy, ...suspended];
}
