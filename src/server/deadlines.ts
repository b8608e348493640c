/**
 * Coarse deadlines for many short-lived waits (request bodies): one interval timer for all of
 * them instead of a timer per request, which costs more than the wait itself on the command
 * channel (docs/performance.md). A deadline fires at most one tick late.
 */
export interface Deadline {
  readonly due: number;
  readonly fire: () => void;
}

export class Deadlines {
  readonly #tick: number;
  readonly #now: () => number;
  readonly #pending = new Set<Deadline>();
  #timer: NodeJS.Timeout | undefined;

  /** @param now the clock (a monotonic one by default; tests pass one they control) */
  constructor(tickMs = 100, now: () => number = () => performance.now()) {
    this.#tick = tickMs;
    this.#now = now;
  }

  /** Calls `fire` once, about `ms` from now, unless {@link remove}d first. */
  add(ms: number, fire: () => void): Deadline {
    const d: Deadline = { due: this.#now() + ms, fire };
    this.#pending.add(d);
    this.#timer ??= setInterval(() => this.#check(), this.#tick).unref();
    return d;
  }

  remove(d: Deadline): void {
    this.#pending.delete(d);
  }

  get size(): number {
    return this.#pending.size;
  }

  #check(): void {
    const now = this.#now();
    for (const d of this.#pending) {
      if (d.due > now) continue;
      this.#pending.delete(d);
      d.fire();
    }
    if (this.#pending.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}
