/**
 * How long a commit of the embedded store holds the calling (main) thread, which is what reads
 * wait for in a write-heavy mix: `node dist/bench/store-commit.js [--commits 400]
 * [--concurrent 8] [--sqlite FILE]`. `--sqlite` loads another build's `dist/src/store/sqlite.js`
 * (for before/after); a store without `stage` (synchronous commits) is measured through
 * `commit`. Prints quantiles of the blocked time per commit and of the time to durable.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CommitResult, Condition, Mutation, StagedCommit } from '../src/store/store.js';

interface AnyStore {
  commit(c: readonly Condition[], m: readonly Mutation[]): Promise<CommitResult>;
  stage?(c: readonly Condition[], m: readonly Mutation[]): StagedCommit;
  close(): Promise<void>;
}

const args = process.argv.slice(2);
function opt(name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def;
}
const commits = Number(opt('commits', '400'));
const concurrent = Number(opt('concurrent', '8'));
const file = args.includes('--sqlite') ? pathToFileURL(resolve(opt('sqlite', ''))).href : '../src/store/sqlite.js';
const { SqliteStore } = (await import(file)) as { SqliteStore: new (dir: string) => AnyStore };

const root = mkdtempSync(join(tmpdir(), 'minkms-store-commit-'));
const store = new SqliteStore(join(root, 'data'));
const value = Buffer.alloc(400, 7);
const blocked: number[] = [];
const durable: number[] = [];
try {
  for (let i = 0; i < commits; i += concurrent) {
    const wave: Array<Promise<unknown>> = [];
    for (let j = i; j < Math.min(commits, i + concurrent); j++) {
      const key = `k${j}`;
      const t = performance.now();
      const done = store.stage
        ? store.stage([{ key, rev: 0 }], [{ key, value }]).durable
        : store.commit([{ key, rev: 0 }], [{ key, value }]);
      blocked.push(performance.now() - t);
      wave.push(done.then(() => durable.push(performance.now() - t)));
    }
    await Promise.all(wave);
  }
} finally {
  await store.close();
  rmSync(root, { recursive: true, force: true });
}
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.floor(p * (xs.length - 1))]!.toFixed(3);
for (const [name, xs] of [
  ['main thread held', blocked],
  ['until durable', durable],
] as const) {
  process.stdout.write(
    `${store.stage ? 'staged' : 'synchronous'} commits, ${name} (ms): p50 ${q(xs, 0.5)}  p90 ${q(xs, 0.9)}  p99 ${q(xs, 0.99)}  max ${q(xs, 1)}\n`,
  );
}
