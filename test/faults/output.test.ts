/**
 * A node whose standard output and error go away (journald restarted, the shell that started it
 * closed) keeps serving, spends nothing on the lost output, and stops on SIGTERM as usual. A
 * write to a broken stderr used to become an uncaught exception, logged to the same stderr,
 * failing again: a loop that took a core and made SIGTERM wait for its 15 s deadline (exit 1).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDir, startServer } from '../helpers/server.js';
import { clientFor } from '../helpers/clients.js';

/** CPU seconds (user + system) of a process and its children (a node's workers). */
function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  const visit = (p: number) => {
    try {
      // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
      for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(' ')) if (c) visit(Number(c));
    } catch {
      // gone meanwhile
    }
  };
  visit(pid);
  return ticks / 100;
}

describe('a node whose stdout and stderr went away', () => {
  for (const [mode, args] of [
    ['one process', []],
    ['two workers', ['--workers', '2']],
  ] as const) {
    test(`${mode}: keeps serving, costs nothing, stops at once on SIGTERM`, { timeout: 120_000 }, async () => {
      const server = await startServer({ args: [...args] });
      const root = clientFor(server, server.apiKey);
      try {
        await root.createEnclave('out');
        await root.createKey('out', { name: 'k' });
        // Nobody reads the node's output any more: its next write fails with EPIPE.
        server.process.stdout!.destroy();
        server.process.stderr!.destroy();
        // Logged at info by every process of the node.
        await root.rotateRoot();
        for (let i = 0; i < 20; i++) assert.equal((await root.generateKey('out', [{ name: 'k' }])).length, 1);
        const cpu0 = treeCpuSeconds(server.process.pid!);
        await new Promise((r) => setTimeout(r, 1_000));
        const idle = treeCpuSeconds(server.process.pid!) - cpu0;
        assert.ok(idle < 0.25, `the idle node used ${idle} s of CPU in 1 s`);
        const t0 = performance.now();
        const exit = new Promise<number | null>((resolve) => server.process.once('exit', (code) => resolve(code)));
        server.process.kill('SIGTERM');
        const code = await exit;
        const ms = performance.now() - t0;
        assert.equal(code, 0, `exit status ${code} after ${Math.round(ms)} ms`);
        assert.ok(ms < 5_000, `stopped after ${Math.round(ms)} ms`);
      } finally {
        root.close();
        await server.kill();
        removeDir(join(server.dir, '..'));
      }
    });
  }
});
