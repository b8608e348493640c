/**
 * Unit tests of src/store/sqlite.ts and src/store/memory.ts: the Store conformance suite
 * (test/helpers/store-suite.ts) against both, plus what only the embedded backend promises: file modes, WAL + synchronous=NORMAL with its
 * own group sync of the WAL (stage, durability in order, a failed sync), the schema version
 * check, a commit surviving the death of its process, and one writer per directory.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore, SQLITE_FILE } from '../../src/store/sqlite.js';
import { MemoryStore } from '../../src/store/memory.js';
import { StoreUnavailableError, type Store } from '../../src/store/store.js';
import { storeSuite, type StoreFixture } from '../helpers/store-suite.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'minkms-store-'));
}

async function sqliteFixture(): Promise<StoreFixture> {
  const root = tempDir();
  const dir = join(root, 'data');
  let current: Store = new SqliteStore(dir);
  return {
    store: current,
    reopen: async () => {
      await current.close();
      current = new SqliteStore(dir);
      return current;
    },
    cleanup: async () => {
      await current.close().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

storeSuite('sqlite', sqliteFixture);

// The in-memory implementation (used to check a backup before it is restored). It keeps the
// caller's buffers instead of copying them, so it opts out of that one test.
storeSuite(
  'memory',
  async () => {
    const store = new MemoryStore();
    return { store, cleanup: () => store.close() };
  },
  false,
);

/** Runs fn with a fresh temp root (the data dir is `<root>/data`, not yet created). */
async function inTemp(fn: (root: string, dir: string) => Promise<void>): Promise<void> {
  const root = tempDir();
  try {
    await fn(root, join(root, 'data'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const mode = (path: string): string => (statSync(path).mode & 0o777).toString(8).padStart(4, '0');

describe('SqliteStore (embedded backend)', () => {
  it('creates the directory 0700 and the database files 0600', () =>
    inTemp(async (_root, dir) => {
      const nested = join(dir, 'deeper');
      const stores = [new SqliteStore(dir), new SqliteStore(nested)];
      try {
        await stores[0]!.commit([], [{ key: 'k', value: Buffer.from('v') }]);
        await stores[1]!.commit([], [{ key: 'k', value: Buffer.from('v') }]);
        const db = join(dir, SQLITE_FILE);
        const cases: [string, string, string][] = [
          ['data dir', dir, '0700'],
          ['nested data dir', nested, '0700'],
          ['database file', db, '0600'],
          ['WAL file', db + '-wal', '0600'],
          ['nested database file', join(nested, SQLITE_FILE), '0600'],
        ];
        for (const [i, [name, path, want]] of cases.entries()) {
          assert.ok(existsSync(path), `case ${i} (${name}): ${path} does not exist`);
          const got = mode(path);
          assert.equal(got, want, `case ${i} (${name}): got mode ${got}, want ${want}`);
        }
      } finally {
        for (const s of stores) await s.close();
      }
    }));

  it('tightens the mode of an existing database file to 0600 on open', () =>
    inTemp(async (_root, dir) => {
      const first = new SqliteStore(dir);
      await first.close();
      chmodSync(join(dir, SQLITE_FILE), 0o644);
      const again = new SqliteStore(dir);
      try {
        const got = mode(join(dir, SQLITE_FILE));
        assert.equal(got, '0600', `after reopen: got mode ${got}, want 0600`);
      } finally {
        await again.close();
      }
    }));

  it('runs its own connection in WAL mode with synchronous=NORMAL (the store syncs the WAL itself)', () =>
    inTemp(async (_root, dir) => {
      // synchronous is a per-connection setting (a second connection shows its own default,
      // which better-sqlite3 builds as NORMAL in WAL mode), so look at the store's connection:
      // record the connection the constructor configures.
      const proto = Database.prototype as { pragma: Database.Database['pragma'] };
      const original = proto.pragma;
      const seen = new Set<Database.Database>();
      proto.pragma = function (this: Database.Database, ...args: Parameters<Database.Database['pragma']>) {
        seen.add(this);
        return original.apply(this, args);
      };
      let store: SqliteStore;
      try {
        store = new SqliteStore(dir);
      } finally {
        proto.pragma = original;
      }
      try {
        assert.equal(seen.size, 1, `got ${seen.size} connections configured, want 1`);
        const conn = [...seen][0]!;
        const cases: [string, unknown][] = [
          ['journal_mode', 'wal'],
          ['synchronous', 1], // 1 = NORMAL: the store's own fdatasync makes commits durable
        ];
        for (const [i, [pragma, want]] of cases.entries()) {
          const got = conn.pragma(pragma, { simple: true });
          assert.equal(got, want, `case ${i} (store connection ${pragma}): got ${String(got)}, want ${String(want)}`);
        }
        await store.commit([], [{ key: 'k', value: Buffer.from('v') }]);
      } finally {
        await store.close();
      }
      // WAL mode is persistent: a later connection sees it in the file.
      const ro = new Database(join(dir, SQLITE_FILE), { readonly: true, fileMustExist: true });
      try {
        const got = ro.pragma('journal_mode', { simple: true });
        assert.equal(got, 'wal', `read-only connection journal_mode: got ${String(got)}, want wal`);
      } finally {
        ro.close();
      }
    }));

  it('refuses a database with an unknown schema version, naming it', () =>
    inTemp(async (_root, dir) => {
      const s = new SqliteStore(dir);
      await s.commit([], [{ key: 'k', value: Buffer.from('v') }]);
      await s.close();
      const raw = new Database(join(dir, SQLITE_FILE));
      raw.prepare(`UPDATE meta SET v = 99 WHERE k = 'schema'`).run();
      raw.close();
      assert.throws(
        () => new SqliteStore(dir),
        (err: unknown) => err instanceof Error && /unsupported database schema version 99/.test(err.message),
        'opening a schema-99 database: got no error or another message, want "unsupported database schema version 99"',
      );
    }));

  it('a resolved commit survives SIGKILL of its process', () =>
    inTemp(async (_root, dir) => {
      const storeUrl = new URL('../../src/store/sqlite.js', import.meta.url).href;
      const script = `
        import { SqliteStore } from ${JSON.stringify(storeUrl)};
        const s = new SqliteStore(process.argv[1]);
        const r = await s.commit([{ key: 'durable', rev: 0 }], [{ key: 'durable', value: Buffer.from('acknowledged') }]);
        process.stdout.write('committed ' + r.rev + '\\n');
        setInterval(() => {}, 1000); // stay alive (no clean close) until killed
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`child did not commit within 10 s; stderr: ${err}`)), 10_000);
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.includes('\n')) {
              clearTimeout(timer);
              resolve();
            }
          });
          child.on('exit', (code) => {
            clearTimeout(timer);
            reject(new Error(`child exited with ${code} before committing; stderr: ${err}`));
          });
        });
      } finally {
        child.kill('SIGKILL');
        await exited;
      }
      const rev = Number(/committed (\d+)/.exec(out)?.[1]);
      const s = new SqliteStore(dir);
      try {
        const got = await s.get('durable');
        assert.equal(got?.value.toString(), 'acknowledged', `after SIGKILL: got ${got?.value.toString()}, want acknowledged`);
        assert.equal(got?.rev, rev, `after SIGKILL: got rev ${got?.rev}, want ${rev}`);
      } finally {
        await s.close();
      }
    }));

  it('a second store on the same directory is refused while the first is open', () =>
    inTemp(async (_root, dir) => {
      const a = new SqliteStore(dir);
      try {
        assert.throws(() => new SqliteStore(dir), /is in use by another minkms server/);
        await a.commit([], [{ key: 'k', value: Buffer.from('still mine') }]);
      } finally {
        await a.close();
      }
      const b = new SqliteStore(dir);
      assert.equal((await b.get('k'))?.value.toString(), 'still mine');
      await b.close();
    }));

  it('group commit: staged commits are visible at once, durable in order, and share syncs', () =>
    inTemp(async (_root, dir) => {
      const store = new SqliteStore(dir);
      let syncs = 0;
      const restore = patchFdatasync((fd, cb, real) => {
        syncs++;
        real(fd, cb);
      });
      try {
        const order: number[] = [];
        const staged = Array.from({ length: 50 }, (_, i) =>
          store.stage([{ key: `k${i}`, rev: 0 }], [{ key: `k${i}`, value: Buffer.from(`v${i}`) }]),
        );
        for (const [i, s] of staged.entries()) {
          assert.ok(s.ok, `case ${i}: staged commit refused`);
          void s.durable.then(() => order.push(i));
        }
        // Applied before durable: a read (and a conditional stage) sees it.
        assert.equal((await store.get('k49'))?.value.toString(), 'v49');
        assert.equal(store.stage([{ key: 'k0', rev: 0 }], []).ok, false, 'a stage conditional on k0 not existing: got ok, want refused');
        await Promise.all(staged.map((s) => s.durable));
        assert.deepEqual(
          order,
          [...order].sort((a, b) => a - b),
          `durable out of order: ${order.join(',')}`,
        );
        assert.ok(syncs >= 1 && syncs < 50, `50 commits staged together: got ${syncs} syncs, want fewer than 50`);
        const revs = staged.map((s) => s.rev);
        assert.deepEqual(
          revs,
          [...revs].sort((a, b) => a - b),
          'revisions in staging order',
        );
      } finally {
        restore();
        await store.close();
      }
    }));

  it('a failed sync fails the commits it covered as ambiguous, and the store refuses writes from then on', () =>
    inTemp(async (_root, dir) => {
      const store = new SqliteStore(dir);
      const restore = patchFdatasync((_fd, cb) =>
        setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }))),
      );
      try {
        const staged = store.stage([], [{ key: 'k', value: Buffer.from('v') }]);
        await assert.rejects(
          staged.durable,
          (err: unknown) => err instanceof StoreUnavailableError && err.ambiguous && /EIO/.test(err.message),
        );
        await assert.rejects(
          store.commit([], [{ key: 'k2', value: Buffer.from('v') }]),
          (err: unknown) => err instanceof StoreUnavailableError && !err.ambiguous,
        );
        const h = store.health();
        assert.equal(h.write, 'unavailable', `health after a failed sync: got ${h.write}, want unavailable`);
        assert.match(h.detail, /restart the server/);
      } finally {
        restore();
        await store.close();
      }
    }));
});

type SyncCb = (err: NodeJS.ErrnoException | null) => void;

/** Replaces fs.fdatasync (as the store imports it) until the returned function is called. */
function patchFdatasync(fn: (fd: number, cb: SyncCb, real: typeof fs.fdatasync) => void): () => void {
  const real = fs.fdatasync;
  const mod = fs as unknown as { default: { fdatasync: typeof fs.fdatasync } };
  mod.default.fdatasync = ((fd: number, cb: SyncCb) => fn(fd, cb, real)) as typeof fs.fdatasync;
  syncBuiltinESMExports();
  return () => {
    mod.default.fdatasync = real;
    syncBuiltinESMExports();
  };
}
