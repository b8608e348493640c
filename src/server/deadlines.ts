/**
 * Coarse deadlines for many short-lived waits (request bodies): one interval timer for all of
 * them instead of a timer per request, which costs more than the wait itself on the command
 * channel (docs/performance.md). A deadline fires at most one tick late.
 *
 * The pending deadlines are a linked list, not a Set: a long-lived Set that gains and loses an
 * entry per request reallocates its table as it grows and shrinks, and V8 allocates the table of
 * an old Set in the old generation — garbage only a full collection frees (docs/performance.md,
 * "Full collections").
 */
export interface Deadline {
  readonly due: number;
  readonly fire: () => void;
}

interface Entry extends Deadline {
  prev: Entry | undefined;
  next: Entry | undefined;
  linked: boolean;
}

export class Deadlines {
  readonly #tick: number;
  readonly #now: () => number;
  #head: Entry | undefined;
  #tail: Entry | undefined;
  #size = 0;
  #timer: NodeJS.Timeout | undefined;

  /** @param now the clock (a monotonic one by default; tests pass one they control) */
  constructor(tickMs = 100, now: () => number = () => performance.now()) {
    this.#tick = tickMs;
    this.#now = now;
  }

  /** Calls `fire` once, about `ms` from now, unless {@link remove}d first. */
  add(ms: number, fire: () => void): Deadline {
    const e: Entry = { due: this.#now() + ms, fire, prev: this.#tail, next: undefined, linked: true };
    if (this.#tail) this.#tail.next = e;
    else this.#head = e;
    this.#tail = e;
    this.#size++;
    this.#timer ??= setInterval(() => this.#check(), this.#tick).unref();
    return e;
  }

  remove(d: Deadline): void {
    const e = d as Entry;
    if (!e.linked) return;
    e.linked = false;
    if (e.prev) e.prev.next = e.next;
    else this.#head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.#tail = e.prev;
    e.prev = e.next = undefined;
    this.#size--;
  }

  get size(): number {
    return this.#size;
  }

  #check(): void {
    const now = this.#now();
    // Collected first: a deadline's `fire` may remove (or add) others.
    const due: Entry[] = [];
    for (let e = this.#head; e; e = e.next) if (e.due <= now) due.push(e);
    for (const e of due) {
      if (!e.linked) continue;
      this.remove(e);
      e.fire();
    }
    if (this.#size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}
