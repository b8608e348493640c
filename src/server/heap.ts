/**
 * How far V8 lets the old generation grow between two full collections in a server process.
 *
 * By default V8 picks the growth factor itself, up to several times the live size on a busy
 * process. A node's requests leave objects in the old generation whose collection is paid in
 * the final, stop-the-world pause: Node's HTTP/2 header strings are external strings, which
 * V8 allocates in the old generation, each with a finalizer, and C++-backed objects (streams,
 * ciphers) die there through weak handles. The longer V8 waits, the more of them one pause
 * clears. Measured under a soak at full speed (docs/performance.md, "Full collections"): a
 * 100–390 ms pause every 10–40 s, RSS rising from 150 to 300 MiB; with growth capped at 30 %,
 * a ~35 ms pause every few seconds, RSS 139 → 156 MiB over 10 minutes (was 157 → 309), the
 * same CPU per request; on HTTP/2 at 32 requests in flight p99 rises by about 2 ms.
 */
import { setFlagsFromString } from 'node:v8';

/** The growth of the old generation before the next full collection, in percent of the live size. */
export const HEAP_GROWING_PERCENT = 30;

/** The V8 flags {@link tuneHeap} sets, given the process's own node flags: none an operator chose. */
export function heapFlags(execArgv: readonly string[]): string[] {
  const chosen = execArgv.some((a) => /^--heap[-_]growing[-_]percent(=|$)/.test(a));
  return chosen ? [] : [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`];
}

/** Applies {@link heapFlags}: V8 reads this flag at every collection, so it holds from here on. */
export function tuneHeap(execArgv: readonly string[] = process.execArgv): void {
  for (const flag of heapFlags(execArgv)) setFlagsFromString(flag);
}
