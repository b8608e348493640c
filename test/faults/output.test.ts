/**
 * A node whose standard output and error go away (journald restarted, the shell that started it
 * closed) keeps serving, spends nothing on the lost output, stops on SIGTERM as usual, and
 * restarts itself as usual. A write to a broken stderr used to become an uncaught exception,
 * logged to the same stderr, failing again: a loop that took a core and made SIGTERM wait for
 * its 15 s deadline (exit 1). A write to a broken stdout (a banner line) ended the node.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, removeDir, startServer, type TestServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

/** A process and its children (a node's workers). */
function processTree(pid: number): number[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
  return [pid, ...children.flatMap(processTree)];
}

/** CPU seconds (user + system) of processes. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const p of pids) {
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

/** Processes running `minkms server` on a data directory (a restarted node's new process included). */
function serving(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('server') && argv.includes(dir)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Closes the test's ends of the node's stdout and stderr: the node's next write to either fails with EPIPE. */
function dropOutput(server: TestServer): void {
  server.process.stdout!.destroy();
  server.process.stderr!.destroy();
}

async function cleanUp(server: TestServer): Promise<void> {
  await server.kill();
  for (const pid of serving(server.dir)) process.kill(pid, 'SIGKILL');
  removeDir(join(server.dir, '..'));
}

describe('a node whose stdout and stderr went away', () => {
  for (const [mode, args, processes] of [
    ['one process', [], 1],
    ['two workers', ['--workers', '2'], 3],
  ] as const) {
    test(`${mode}: keeps serving, costs nothing, stops at once on SIGTERM`, { timeout: 120_000 }, async () => {
      const server = await startServer({ args: [...args] });
      const root = clientFor(server, server.apiKey);
      try {
        await root.createEnclave('out');
        await root.createKey('out', { name: 'k' });
        dropOutput(server);
        // Logged at info by every process of the node.
        await root.rotateRoot();
        for (let i = 0; i < 20; i++) assert.equal((await root.generateKey('out', [{ name: 'k' }])).length, 1);
        const pids = processTree(server.process.pid!);
        assert.equal(pids.length, processes, `processes of the node: ${pids.join(', ')}`);
        // Idle, it uses next to nothing; the loop used a core per process and never let up.
        let last = { at: performance.now(), cpu: cpuSeconds(pids) };
        let rate = NaN;
        await waitFor(
          'an idle second of the node',
          () => {
            const now = { at: performance.now(), cpu: cpuSeconds(pids) };
            if (now.at - last.at < 1_000) return false;
            rate = (now.cpu - last.cpu) / ((now.at - last.at) / 1_000);
            last = now;
            return rate < 0.3;
          },
          15_000,
          100,
        ).catch((err: Error) => assert.fail(`${err.message}; the last second used ${rate.toFixed(2)} of a core`));
        const t0 = performance.now();
        const exit = new Promise<number | null>((resolve) => server.process.once('exit', (code) => resolve(code)));
        server.process.kill('SIGTERM');
        const code = await exit;
        const ms = performance.now() - t0;
        assert.equal(code, 0, `exit status ${code} after ${Math.round(ms)} ms`);
        // The loop made the stop wait for its 15 s deadline.
        assert.ok(ms < 10_000, `stopped after ${Math.round(ms)} ms`);
      } finally {
        root.close();
        await cleanUp(server);
      }
    });
  }

  test('a restart prints its banner line to the lost stdout and the node comes back', { timeout: 120_000 }, async () => {
    // A fixed port: the node re-executes itself on the same address.
    const server = await startServer({ port: await freePort() });
    const root = clientFor(server, server.apiKey);
    try {
      await root.createEnclave('out');
      await root.createKey('out', { name: 'k' });
      dropOutput(server);
      // "=> Restarting: …" goes to stdout first.
      await root.restart({ self: true });
      await waitFor('the first process to exit', () => server.process.exitCode !== null, 30_000);
      await waitFor(
        'the new process to serve',
        async () => {
          try {
            await root.ready();
            return true;
          } catch {
            return false;
          }
        },
        30_000,
        100,
      );
      assert.equal(server.process.exitCode, 0);
      assert.equal(serving(server.dir).length, 1, 'one process serves the node');
      assert.equal((await root.generateKey('out', [{ name: 'k' }])).length, 1);
    } finally {
      root.close();
      await cleanUp(server);
    }
  });
});
