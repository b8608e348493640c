/**
 * Ports for processes that tests stop and start again on the same port (an etcd member, a KMS
 * node). They are drawn from below the kernel's ephemeral range: a port of that range is what
 * `listen(0)` hands out, and while its owner is down another test's server can be given it, and
 * the restarted process then fails to bind (an etcd member that does not come back, and a
 * cluster with one member fewer than the test thinks).
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomInt } from 'node:crypto';

/** The lowest port tests pick from: above the registered services that might run here. */
const FLOOR = 10_000;
/** Below that many ports under the ephemeral range, fall back to `listen(0)`. */
const ENOUGH = 4_096;

/** The first port of the kernel's ephemeral range (32768 when it cannot be read). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Binds `port` (0: any) on 127.0.0.1 and releases it: the port bound, or undefined if taken. */
function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(undefined));
    srv.listen(port, '127.0.0.1', () => {
      const bound = (srv.address() as { port: number }).port;
      srv.close(() => resolve(bound));
    });
  });
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago and that no `listen(0)` or outgoing
 * connection of this machine is handed meanwhile. Picked at random so that test files running
 * side by side rarely pick the same one; one that is in use is skipped.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  if (low - FLOOR >= ENOUGH) {
    for (let i = 0; i < 50; i++) {
      const port = await probe(randomInt(FLOOR, low));
      if (port !== undefined) return port;
    }
  }
  return (await probe(0))!;
}

/** `count` distinct ports as {@link freePort}. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}
