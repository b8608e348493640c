/**
 * One Prometheus text exposition (format 0.0.4) for a node that runs several worker processes:
 * each worker has its own registry, but a scrape must describe the node as a whole, so the
 * workers' expositions are merged series by series.
 *
 * How a series merges depends on its family's type: counters, histograms, summary sums and
 * counts, and untyped series add up (each worker counted its own share); a gauge describes state
 * every worker sees alike (sealed, key count), so the first worker's value stands, unless the
 * gauge counts something each worker holds on its own (in-flight requests) and is listed in
 * `sumGauges`. Summary quantiles cannot be merged exactly; the maximum is a safe upper bound.
 *
 * The input comes from our own processes, but a worker that died mid-write must not break the
 * scrape of the others: lines that do not parse are skipped, never thrown on.
 */

type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

const TYPES: ReadonlySet<string> = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const META = /^#\s+(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s+(.*))?$/;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const TIMESTAMP = /^-?\d+$/;

interface Series {
  /** The series as the first text wrote it (name and label block). */
  readonly text: string;
  /** Whether the series carries a `quantile` label (a summary's quantile). */
  readonly quantile: boolean;
  /** Its value in each text that has it, in the order of the texts. */
  readonly values: number[];
}

interface Family {
  help: string | undefined;
  type: MetricType | undefined;
  /** Keyed by the normalised series ({@link parseSample}), in order of first appearance. */
  readonly series: Map<string, Series>;
}

interface Sample {
  readonly name: string;
  /** The series as written: name and label block, without value or timestamp. */
  readonly text: string;
  /** Name and labels sorted by name, so that workers that order labels differently still agree. */
  readonly key: string;
  readonly quantile: boolean;
  readonly value: number;
}

/** Merges the Prometheus text expositions of several worker processes of one node into one. */
export function mergeExpositions(texts: readonly string[], options?: { sumGauges?: ReadonlySet<string> }): string {
  const lines = texts.map((t) => t.split('\n').map((l) => l.trim()));
  // Types first, from every text: a sample's family (`x_bucket` belongs to histogram `x`) depends
  // on them, and a text may carry samples without the TYPE line another text has.
  const types = new Map<string, MetricType>();
  for (const line of lines.flat()) {
    const m = META.exec(line);
    if (m?.[1] === 'TYPE' && TYPES.has(m[3] ?? '') && !types.has(m[2]!)) types.set(m[2]!, m[3] as MetricType);
  }

  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (f === undefined) {
      f = { help: undefined, type: undefined, series: new Map() };
      families.set(name, f);
    }
    return f;
  };
  for (const line of lines.flat()) {
    if (line.startsWith('#')) {
      const m = META.exec(line);
      if (m === null || (m[1] === 'TYPE' && !TYPES.has(m[3] ?? ''))) continue;
      const f = family(m[2]!);
      if (m[1] === 'HELP') f.help ??= m[3] ?? '';
      else f.type ??= m[3] as MetricType;
      continue;
    }
    const s = parseSample(line);
    if (s === undefined) continue;
    const f = family(familyOf(s.name, types));
    let series = f.series.get(s.key);
    if (series === undefined) {
      series = { text: s.text, quantile: s.quantile, values: [] };
      f.series.set(s.key, series);
    }
    series.values.push(s.value);
  }

  const out: string[] = [];
  for (const [name, f] of families) {
    if (f.help !== undefined) out.push(f.help === '' ? `# HELP ${name}` : `# HELP ${name} ${f.help}`);
    if (f.type !== undefined) out.push(`# TYPE ${name} ${f.type}`);
    for (const s of f.series.values()) out.push(`${s.text} ${formatValue(merge(f.type, name, s, options?.sumGauges))}`);
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

/** The family a sample belongs to: its own name, or the histogram/summary its suffix names. */
function familyOf(name: string, types: ReadonlyMap<string, MetricType>): string {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const type = types.get(base);
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
  }
  return name;
}

function merge(type: MetricType | undefined, name: string, s: Series, sumGauges: ReadonlySet<string> | undefined): number {
  if (type === 'gauge' && !sumGauges?.has(name)) return s.values[0]!;
  if (type === 'summary' && s.quantile) {
    // A worker that has observed nothing reports NaN quantiles; that says nothing about the
    // others, so NaN wins only when every worker has it.
    const known = s.values.filter((v) => !Number.isNaN(v));
    return known.length === 0 ? NaN : Math.max(...known);
  }
  return s.values.reduce((a, b) => a + b, 0);
}

/** A sample line, or undefined if it does not parse: `name{l="v",...} value [timestamp]`. */
function parseSample(line: string): Sample | undefined {
  const name = NAME.exec(line)?.[0];
  if (name === undefined) return undefined;
  let end = name.length;
  let labels: [string, string][] = [];
  const after = line.slice(end).trimStart();
  if (after.startsWith('{')) {
    const block = scanLabels(line, line.length - after.length + 1);
    if (block === undefined) return undefined;
    labels = block.labels;
    end = block.end;
  }
  const text = line.slice(0, end);
  const rest = line.slice(end).trim().split(/\s+/);
  if (rest.length > 2 || (rest.length === 2 && !TIMESTAMP.test(rest[1]!))) return undefined;
  const value = parseValue(rest[0]!);
  if (value === undefined) return undefined;
  labels.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const key = `${name}{${labels.map(([k, v]) => `${k}="${v}"`).join(',')}}`;
  return { name, text, key, quantile: labels.some(([k]) => k === 'quantile'), value };
}

/**
 * The labels of the block that starts after `{` at `start`, with values as written (escapes
 * kept: they are the same text in every worker, and the output prints them back unchanged), and
 * the index after the closing `}`. A value may hold `,`, `}` and escaped quotes, so the block is
 * scanned character by character rather than split.
 */
function scanLabels(line: string, start: number): { labels: [string, string][]; end: number } | undefined {
  const labels: [string, string][] = [];
  let i = start;
  const skipSpace = () => {
    while (line[i] === ' ' || line[i] === '\t') i++;
  };
  for (;;) {
    skipSpace();
    if (line[i] === '}') return { labels, end: i + 1 };
    const label = LABEL_NAME.exec(line.slice(i))?.[0];
    if (label === undefined) return undefined;
    i += label.length;
    skipSpace();
    if (line[i] !== '=') return undefined;
    i++;
    skipSpace();
    if (line[i] !== '"') return undefined;
    const from = ++i;
    while (i < line.length && line[i] !== '"') i += line[i] === '\\' ? 2 : 1;
    if (i >= line.length) return undefined;
    labels.push([label, line.slice(from, i)]);
    i++;
    skipSpace();
    if (line[i] === ',') i++;
    else if (line[i] !== '}') return undefined;
  }
}

/** A sample value as Prometheus (Go's ParseFloat) reads it; undefined if it is none. */
function parseValue(s: string): number | undefined {
  if (DECIMAL.test(s)) return Number(s);
  const lower = s.toLowerCase();
  if (lower === 'nan') return NaN;
  if (lower === '+inf' || lower === 'inf') return Infinity;
  if (lower === '-inf') return -Infinity;
  return undefined;
}

/** As Prometheus writes values: `+Inf`, `-Inf`, `NaN`; integers without a decimal point. */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  // JS's shortest round-trip form already prints integers without a point (up to 1e21).
  return String(v);
}

/**
 * Only the counter and histogram families of an exposition (as prom-client writes it: each
 * family's samples follow its `# TYPE` line): what a worker that exited still adds to the node.
 */
export function countersOf(text: string): string {
  const out: string[] = [];
  let keep = false;
  for (const line of text.split('\n')) {
    const type = /^# TYPE \S+ (\S+)/.exec(line);
    if (type) keep = type[1] === 'counter' || type[1] === 'histogram';
    else if (line.startsWith('# HELP ')) {
      // A HELP line comes before its TYPE line: decided by the next line.
      out.push(line);
      continue;
    }
    if (keep) out.push(line);
    else if (type && out.at(-1)?.startsWith('# HELP ')) out.pop();
  }
  return out.join('\n') + (out.length > 0 ? '\n' : '');
}
