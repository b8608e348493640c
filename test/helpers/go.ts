/** Runs Go test packages (the official SDKs in test/interop) against a server a test started. */
import { spawn, spawnSync } from 'node:child_process';
import * as assert from 'node:assert/strict';

export interface GoResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  timedOut: boolean;
}

/** Fails with one clear message unless `go` (≥ 1.24) is usable; returns `go version`. */
export function requireGo(): string {
  const probe = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    assert.fail(
      'the Go toolchain (`go`, version >= 1.24) is required for the Go SDK interop tests but is not ' +
        `usable on PATH (${probe.error?.message ?? probe.stderr.trim()}); install Go or fix PATH`,
    );
  }
  return probe.stdout.trim();
}

/** `go test -count=1 -v -run RUN ./...` in `dir`, killed after `timeoutMs`. */
export function runGoTest(dir: string, run: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<GoResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('go', ['test', '-count=1', '-v', '-run', run, './...'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, timedOut });
    });
  });
}
