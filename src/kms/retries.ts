/**
 * Safe retries after an unknown outcome.
 *
 * A create whose commit reached etcd without an answer (`ERR_STORE_OUTCOME_UNKNOWN`) may have
 * been applied, even after the client gave up. The client then sends the same create again
 * and, if the first one was applied, would get `409 key already exists` for its own key. The
 * wire contract (kms-wire.md §2.5) keeps that 409 for every other duplicate create, so the
 * retry is recognized exactly instead of by a time window alone: the node that answered
 * "outcome unknown" remembers what it tried to write (path, requester, creation time) and, as
 * soon as the store answers again, checks whether that record is in the store. If it is, it
 * publishes the fact as a small record `retry/<sha256(path)>` (encrypted like every record)
 * that any node reads when the same requester creates the same object again with the same
 * parameters within {@link RETRY_WINDOW_MS}: that retry then succeeds, on every node.
 *
 * What is not covered: a retry that arrives before the store answers again, on another node
 * than the one that answered "outcome unknown", gets the 409 (or a 503 while the store is
 * down); KEY:STATUS shows `createdBy` and `createdAt` to decide. The published records
 * expire after the window and are deleted by the node that wrote them (a leftover of a node
 * that died is ignored once expired).
 */
import { createHash } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { Repo } from './repo.js';

/** How long a create with an unknown outcome may be retried idempotently. */
export const RETRY_WINDOW_MS = 5 * 60_000;
const RETRY_PREFIX = 'retry/';
const FLUSH_MIN_MS = 200;
const FLUSH_MAX_MS = 5_000;

interface RetryRecord {
  v: 1;
  /** The path the uncertain create wrote. */
  path: string;
  requester: string;
  /** `createdAt` of the record the uncertain create wrote: identifies that very attempt. */
  createdAt: string;
  /** Ms since the epoch after which a retry is no longer recognized. */
  until: number;
}

export function retryPath(path: string): string {
  return RETRY_PREFIX + createHash('sha256').update(path).digest('hex');
}

export class RetryLedger {
  readonly #repo: Repo;
  readonly #report: (err: Error) => void;
  /** Uncertain creates of this node, by path, until the window ends. */
  readonly #local = new Map<string, RetryRecord & { published: boolean }>();
  #timer: NodeJS.Timeout | undefined;
  #delay = FLUSH_MIN_MS;
  #flushing = false;
  #closed = false;

  constructor(repo: Repo, report: (err: Error) => void = () => undefined) {
    this.#repo = repo;
    this.#report = report;
  }

  /** A create of `path` by `requester`, writing a record created at `createdAt`, ended with an unknown outcome. */
  note(path: string, requester: string, createdAt: string): void {
    if (this.#closed) return;
    this.#local.set(path, { v: 1, path, requester, createdAt, until: Date.now() + RETRY_WINDOW_MS, published: false });
    this.#delay = FLUSH_MIN_MS;
    this.#schedule(0);
  }

  /** A create of `path` succeeded: a note of an earlier attempt that was not applied is dropped. */
  created(path: string): void {
    const note = this.#local.get(path);
    if (note && !note.published) this.#local.delete(path);
  }

  /**
   * Whether the existing record at `path` (created by `requester` at `createdAt`) was written by
   * an earlier create of the same requester whose outcome was unknown, within the window.
   * Reads the store (only on this rare path: a duplicate create by the record's own creator).
   * @throws KmsError ERR_STORE_UNAVAILABLE if the store cannot tell now
   */
  async isRetry(path: string, requester: string, createdAt: string): Promise<boolean> {
    const now = Date.now();
    const created = Date.parse(createdAt);
    if (!(now - created < RETRY_WINDOW_MS)) return false;
    const local = this.#local.get(path);
    if (local && local.until > now) return local.requester === requester && local.createdAt === createdAt;
    let entry;
    try {
      entry = await this.#repo.store.get(retryPath(path));
    } catch (err) {
      throw new KmsError('ERR_STORE_UNAVAILABLE', undefined, { cause: err });
    }
    if (!entry) return false;
    const rec = this.#repo.decode<RetryRecord>(retryPath(path), entry.value);
    return rec.path === path && rec.requester === requester && rec.createdAt === createdAt && rec.until > now;
  }

  /** Stops the background work (notes not yet published are dropped). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #schedule(delay: number): void {
    if (this.#closed || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flush();
    }, delay);
    this.#timer.unref();
  }

  /**
   * Publishes the notes whose record turned out to be in the store, and deletes expired ones.
   * A background task: it owns its errors (retries with backoff while the store is down).
   */
  async #flush(): Promise<void> {
    if (this.#flushing || this.#closed) return;
    this.#flushing = true;
    let again = false;
    try {
      for (const note of [...this.#local.values()]) {
        if (this.#closed) return;
        const now = Date.now();
        if (note.until <= now) {
          if (note.published) await this.#unpublish(note);
          this.#local.delete(note.path);
          continue;
        }
        if (note.published) continue;
        // A linearizable read after the store answers again is decisive: a commit that was
        // not applied by now never will be (raft drops it when a new leader takes over).
        const e = await this.#repo.store.get(note.path);
        const rec =
          e &&
          this.#repo.decode<{ v: 1; createdAt?: string; createdBy?: string; versions?: Array<{ createdAt: string; createdBy: string }> }>(
            note.path,
            e.value,
          );
        const first = rec?.versions?.[0] ?? rec;
        if (!first || first.createdBy !== note.requester || first.createdAt !== note.createdAt) {
          this.#local.delete(note.path); // not applied: a retry creates it normally
          continue;
        }
        // A create of the path may have succeeded meanwhile (see `created`): then it is not ours.
        if (this.#local.get(note.path) !== note) continue;
        const path = retryPath(note.path);
        const current = await this.#repo.store.get(path);
        const { published: _p, ...record } = note;
        const res = await this.#repo.store.commit([{ key: path, rev: current?.rev ?? 0 }], [this.#repo.put(path, record)]);
        if (res.ok) note.published = true;
        else again = true; // raced by another node: look again
      }
      this.#delay = FLUSH_MIN_MS;
    } catch (err) {
      again = true;
      this.#delay = Math.min(this.#delay * 2, FLUSH_MAX_MS);
      this.#report(new Error(`cannot record an uncertain create for safe retries yet: ${(err as Error).message}`, { cause: err }));
    } finally {
      this.#flushing = false;
    }
    if (this.#local.size === 0) return;
    // Come back when a note expires, or sooner to retry.
    const nextExpiry = Math.min(...[...this.#local.values()].map((n) => n.until)) - Date.now();
    this.#schedule(Math.max(0, again ? this.#delay : nextExpiry));
  }

  async #unpublish(note: RetryRecord): Promise<void> {
    const path = retryPath(note.path);
    const e = await this.#repo.store.get(path);
    if (!e) return;
    const rec = this.#repo.decode<RetryRecord>(path, e.value);
    if (rec.createdAt !== note.createdAt) return; // a newer note of another node
    await this.#repo.store.commit([{ key: path, rev: e.rev }], [this.#repo.del(path)]);
  }
}
