/** Polling with a deadline: tests wait for a condition, never for a fixed time. */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Calls `check` until it returns a value other than undefined/false (or stops throwing), and
 * returns that value; fails after `timeoutMs` with the last error or `label`.
 */
export async function waitFor<T>(
  label: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${label}${why}`, { cause: last });
    }
    await sleep(intervalMs);
  }
}

/**
 * Calls `fn` until it resolves (an operation that fails until the system has caught up: a write
 * after a failover, a read of a replicated key) and returns what it resolved to; fails after
 * `timeoutMs` with its last error.
 */
export async function eventually<T>(label: string, fn: () => Promise<T>, timeoutMs = 15_000, intervalMs = 50): Promise<T> {
  const done = await waitFor(label, async () => ({ value: await fn() }), timeoutMs, intervalMs);
  return done.value;
}
