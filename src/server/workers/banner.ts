/**
 * Which of the workers' banner lines the node prints. Every worker runs the whole server and
 * prints the whole banner; the node prints it as one process would:
 * - the static part (version, endpoint, …) once per node start, whichever worker says it first
 *   (a worker that starts again says it again; the order in which workers listen and speak
 *   decides nothing);
 * - each line of the "up" announcement once (a new root API key is a new line);
 * - any other line (sealed, pending HSMs) once per {@link PRINT_DEDUP_MS}, however many workers
 *   say it.
 */

/** Identical lines of several workers within this time are printed once. */
export const PRINT_DEDUP_MS = 10_000;
/** The static part of the banner, by its label. */
const STATIC = /^(Version|HSM|Node|Data|TLS|Endpoint|Admin|KES API|Docs) /;
/** The "up" announcement. */
const ONCE = /^(Cluster ID|Root|API Key|=> Server is up and running)/;

export class BannerLines {
  readonly #staticShown = new Set<string>();
  readonly #onceShown = new Set<string>();
  readonly #recent = new Map<string, number>();

  /** Whether `line`, said by a worker at `now` (ms), is printed. */
  admit(line: string, now = Date.now()): boolean {
    const label = STATIC.exec(line)?.[1];
    if (label !== undefined) {
      if (this.#staticShown.has(label)) return false;
      this.#staticShown.add(label);
      return true;
    }
    if (ONCE.test(line)) {
      if (this.#onceShown.has(line)) return false;
      this.#onceShown.add(line);
      return true;
    }
    for (const [l, at] of this.#recent) if (now - at > PRINT_DEDUP_MS) this.#recent.delete(l);
    if (this.#recent.has(line)) return false;
    this.#recent.set(line, now);
    return true;
  }
}
