/**
 * A latency histogram of fixed size (memory stays flat however long a run is): logarithmic
 * buckets of 1 % width from 1 µs to ~100 s, so a percentile is exact to within 1 %. The
 * maximum is kept exactly.
 */
const GROWTH = Math.log(1.01);
const BUCKETS = Math.ceil(Math.log(100e6) / GROWTH) + 2; // µs up to 100 s

export class Histogram {
  counts = new Float64Array(BUCKETS);
  n = 0;
  max = 0;
  sum = 0;

  /** Records one latency in milliseconds. */
  record(ms: number): void {
    const us = ms * 1000;
    const i = us <= 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log(us) / GROWTH) + 1);
    this.counts[i]!++;
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }

  /** The q-quantile (0 < q ≤ 1) in milliseconds: the upper edge of its bucket. */
  quantile(q: number): number {
    if (this.n === 0) return 0;
    const rank = Math.ceil(q * this.n);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(this.max, i === 0 ? 0.001 : Math.exp(i * GROWTH) / 1000);
    }
    return this.max;
  }

  merge(other: { counts: ArrayLike<number>; n: number; max: number; sum: number }): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.n += other.n;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  reset(): void {
    this.counts.fill(0);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
  }

  /** A plain object for IPC. */
  toJSON(): { counts: number[]; n: number; max: number; sum: number } {
    return { counts: Array.from(this.counts), n: this.n, max: this.max, sum: this.sum };
  }

  static from(o: { counts: ArrayLike<number>; n: number; max: number; sum: number }): Histogram {
    const h = new Histogram();
    h.merge(o);
    return h;
  }
}
