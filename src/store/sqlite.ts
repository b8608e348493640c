/**
 * The embedded store: one SQLite database file in the data directory, in WAL mode. A commit
 * is acknowledged only after it has reached the disk, but the sync is not SQLite's: SQLite
 * runs with `synchronous=NORMAL` (it writes the transaction to the WAL without syncing it;
 * checkpoints still sync), and the store syncs the WAL file itself with `fdatasync` on libuv's
 * thread pool — group commit. The transaction runs on the caller's thread in tens of
 * microseconds; commits staged while a sync is on the disk are covered together by the next
 * one. The WAL is appended in order and recovery stops at the first frame that was not
 * written completely, so a sync that covers a commit covers every earlier one.
 * Files are created with mode 0600 inside a 0700 directory.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, fdatasync, fstatSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  StoreFullError,
  StoreUnavailableError,
  type CommitResult,
  type StagedCommit,
  type Condition,
  type Mutation,
  type Store,
  type StoreEntry,
  type StoreHealth,
} from './store.js';

export const SQLITE_FILE = 'minkms.db';
const SCHEMA_VERSION = 1;
/** How often a full store tries a small write to see whether space was freed. */
const FULL_RECHECK_MS = 1_000;

/** A staged commit waiting for a sync of the WAL (`seq`: its place in the order of commits). */
interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface Row {
  k: string;
  v: Buffer;
  rev: number;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  readonly path: string;
  readonly #db: Database.Database;
  readonly #get: Database.Statement<[string], Row>;
  readonly #range: Database.Statement<[string, string], Row>;
  readonly #all: Database.Statement<[], Row>;
  readonly #put: Database.Statement<[string, Buffer, number]>;
  readonly #del: Database.Statement<[string]>;
  readonly #rev: Database.Statement<[string], { rev: number }>;
  readonly #commit: Database.Transaction<(conds: readonly Condition[], muts: readonly Mutation[]) => CommitResult>;
  readonly #touch: Database.Statement<[number]>;
  readonly #lastRev: Database.Statement<[], { v: number }>;
  #full: { since: number; detail: string } | undefined;
  #fullErrors = 0;
  #fullCheckAt = 0;
  readonly #walPath: string;
  /** The WAL file, opened at the first commit (SQLite creates it), for the syncs. */
  #wal: { fd: number; ino: number } | undefined;
  /** Commits applied (the sequence number of the last one) and commits known durable. */
  #applied = 0;
  #synced = 0;
  #syncing = false;
  readonly #waiters: Waiter[] = [];
  /** Set when a sync of the WAL failed: what the disk holds is unknown, no write is acknowledged again. */
  #broken: Error | undefined;
  #idle: (() => void) | undefined;
  #brokenAt = 0;

  /** Opens (creating if needed) the store in `dir`. */
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      chmodSync(dir, 0o700);
    } catch {
      // not ours to change (e.g. a mount point owned by root); the files are still 0600
    }
    this.path = join(dir, SQLITE_FILE);
    if (!existsSync(this.path)) closeSync(openSync(this.path, 'a', 0o600));
    chmodSync(this.path, 0o600);
    const db = new Database(this.path, { timeout: 1000 });
    this.#db = db;
    try {
      // One server per data directory: a second process would serve from its own, diverging
      // cache. The exclusive lock is taken now and held until close.
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.exec('BEGIN IMMEDIATE; COMMIT;');
    } catch (err) {
      db.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY')
        throw new Error(`the data directory ${dir} is in use by another minkms server`, { cause: err });
      throw err;
    }
    // Durability comes from the store's own sync of the WAL after each group of commits
    // (`#sync`); SQLite still syncs the WAL before and the database after each checkpoint.
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = OFF');
    db.exec(`CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL, rev INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;`);
    const schema = db.prepare<[], { v: number }>(`SELECT v FROM meta WHERE k = 'schema'`).get();
    if (!schema) {
      db.prepare(`INSERT INTO meta (k, v) VALUES ('schema', ?), ('rev', 0)`).run(SCHEMA_VERSION);
    } else if (schema.v !== SCHEMA_VERSION) {
      db.close();
      throw new Error(`unsupported database schema version ${schema.v} in ${this.path}`);
    }
    for (const suffix of ['-wal', '-shm']) {
      if (existsSync(this.path + suffix)) chmodSync(this.path + suffix, 0o600);
    }
    this.#walPath = this.path + '-wal';
    this.#get = db.prepare(`SELECT k, v, rev FROM kv WHERE k = ?`);
    this.#range = db.prepare(`SELECT k, v, rev FROM kv WHERE k >= ? AND k < ? ORDER BY k`);
    this.#all = db.prepare(`SELECT k, v, rev FROM kv ORDER BY k`);
    this.#put = db.prepare(`INSERT INTO kv (k, v, rev) VALUES (?, ?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v, rev = excluded.rev`);
    this.#del = db.prepare(`DELETE FROM kv WHERE k = ?`);
    this.#rev = db.prepare(`SELECT rev FROM kv WHERE k = ?`);
    this.#touch = db.prepare(`INSERT INTO meta (k, v) VALUES ('space-check', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`);
    const getRev = db.prepare<[], { v: number }>(`SELECT v FROM meta WHERE k = 'rev'`);
    this.#lastRev = getRev;
    const setRev = db.prepare<[number]>(`UPDATE meta SET v = ? WHERE k = 'rev'`);
    // The revision counter is read inside the write transaction, not cached: another
    // connection to the same file (a second process on the same DIR) may have committed.
    this.#commit = db.transaction((conds: readonly Condition[], muts: readonly Mutation[]): CommitResult => {
      const lastRev = getRev.get()!.v;
      for (const c of conds) {
        const rev = this.#rev.get(c.key)?.rev ?? 0;
        if (rev !== c.rev) return { ok: false, rev: lastRev };
      }
      const rev = lastRev + 1;
      for (const m of muts) {
        if (m.value === undefined) this.#del.run(m.key);
        else this.#put.run(m.key, m.value, rev);
      }
      setRev.run(rev);
      return { ok: true, rev };
    });
  }

  /** The revision of the last commit applied (staged commits included). */
  revision(): number {
    return this.#lastRev.get()!.v;
  }

  async get(key: string): Promise<StoreEntry | undefined> {
    const row = this.#get.get(key);
    return row && { key: row.k, value: row.v, rev: row.rev };
  }

  async range(prefix: string): Promise<StoreEntry[]> {
    const rows = prefix === '' ? this.#all.all() : this.#range.all(prefix, prefixEnd(prefix));
    return rows.map((r) => ({ key: r.k, value: r.v, rev: r.rev }));
  }

  async commit(conditions: readonly Condition[], mutations: readonly Mutation[]): Promise<CommitResult> {
    const staged = this.stage(conditions, mutations);
    await staged.durable;
    return { ok: staged.ok, rev: staged.rev };
  }

  stage(conditions: readonly Condition[], mutations: readonly Mutation[]): StagedCommit {
    if (this.#broken) throw new StoreUnavailableError(`sqlite commit: ${this.#broken.message}`, { cause: this.#broken });
    let res: CommitResult;
    try {
      // IMMEDIATE: take the write lock before reading the conditions and the revision counter.
      res = this.#commit.immediate(conditions, mutations);
      this.#full = undefined;
    } catch (err) {
      throw this.#checkFull(err);
    }
    if (!res.ok) return { ...res, durable: Promise.resolve() };
    const seq = ++this.#applied;
    const durable = new Promise<void>((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
    // Marked handled here; whoever awaits it still sees the rejection.
    durable.catch(() => undefined);
    if (!this.#syncing) this.#sync();
    return { ...res, durable };
  }

  /**
   * Syncs the WAL on libuv's thread pool, covering every commit applied so far; commits applied
   * meanwhile wait for the next sync, which starts when this one ends (one sync on the disk at a
   * time, so a burst of commits shares a few syncs instead of queueing one each).
   */
  #sync(): void {
    let fd: number;
    try {
      fd = this.#walFd();
    } catch (err) {
      this.#fail(err);
      return;
    }
    const upTo = this.#applied;
    this.#syncing = true;
    fdatasync(fd, (err) => {
      this.#syncing = false;
      if (err) {
        this.#fail(err);
        return;
      }
      this.#synced = upTo;
      let n = 0;
      while (n < this.#waiters.length && this.#waiters[n]!.seq <= upTo) this.#waiters[n++]!.resolve();
      this.#waiters.splice(0, n);
      if (this.#applied > this.#synced && !this.#broken) this.#sync();
      else if (this.#idle) this.#idle();
    });
  }

  /**
   * The WAL's descriptor. SQLite keeps one WAL file while the database is open (exclusive
   * locking mode); the inode is checked anyway, so that a sync can never go to a file that is
   * no longer the WAL.
   */
  #walFd(): number {
    const ino = statSync(this.#walPath).ino;
    if (this.#wal?.ino === ino) return this.#wal.fd;
    if (this.#wal) closeSync(this.#wal.fd);
    this.#wal = undefined;
    const fd = openSync(this.#walPath, 'r+');
    this.#wal = { fd, ino: fstatSync(fd).ino };
    return fd;
  }

  /** A sync failed: the commits it covered, and all later ones, may or may not be on the disk. */
  #fail(err: unknown): void {
    const why = err instanceof Error ? err.message : String(err);
    this.#broken = new Error(`syncing ${this.#walPath} failed (${why}): restart the server`, { cause: err });
    this.#brokenAt = Date.now();
    const failed = new StoreUnavailableError(`sqlite commit: ${this.#broken.message}`, { cause: err, ambiguous: true });
    for (const w of this.#waiters.splice(0)) w.reject(failed);
    if (this.#idle) this.#idle();
  }

  /**
   * Writes expected to fail now because the disk is full (after a commit failed with
   * `SQLITE_FULL`), and the count of such commits. While full, at most once a second a tiny
   * write checks whether space was freed, so that readiness recovers without a client write.
   */
  health(): StoreHealth {
    if (this.#broken) return { write: 'unavailable', since: this.#brokenAt, detail: this.#broken.message, fullErrors: this.#fullErrors };
    const now = Date.now();
    if (this.#full && now - this.#fullCheckAt >= FULL_RECHECK_MS && this.#db.open) {
      this.#fullCheckAt = now;
      try {
        this.#touch.run(now);
        this.#full = undefined;
      } catch {
        // still full (or another disk error): stay so
      }
    }
    if (this.#full) return { write: 'full', since: this.#full.since, detail: this.#full.detail, fullErrors: this.#fullErrors };
    return { write: 'ok', since: 0, detail: '', fullErrors: this.#fullErrors };
  }

  /** Turns SQLite's "disk full" into a StoreFullError (nothing was written: the transaction rolled back). */
  #checkFull(err: unknown): unknown {
    const code = (err as { code?: unknown }).code;
    if (code !== 'SQLITE_FULL') return err;
    const now = Date.now();
    this.#fullErrors++;
    const detail = `no space left on the device of ${this.path}: free disk space`;
    this.#full ??= { since: now, detail };
    this.#fullCheckAt = now;
    return new StoreFullError(`sqlite commit: ${detail}`, { cause: err });
  }

  /** Closes after the syncs of every commit applied so far (their callers are waiting for them). */
  async close(): Promise<void> {
    while (this.#syncing) await new Promise<void>((resolve) => (this.#idle = resolve));
    this.#idle = undefined;
    if (this.#wal) closeSync(this.#wal.fd);
    this.#wal = undefined;
    if (this.#db.open) this.#db.close();
  }
}

/** The smallest string greater than every string starting with `prefix`. */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
