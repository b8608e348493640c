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
  readonly #pending = new Set<Deadline>();
  #timer: NodeJS.Timeout | undefined;

  constructor(tickMs = 100) {
    this.#tick = tickMs;
  }

  /** Calls `fire` once, about `ms` from now, unless {@link remove}d first. */
  add(ms: number, fire: () => void): Deadline {
    const d: Deadline = { due: performance.now() + ms, fire };
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
    const now = performance.now();
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
