/**
 * Merging the workers' Prometheus expositions into the node's: what adds up (counters,
 * histograms, untyped), what does not (gauges, unless listed; summary quantiles), how series are
 * recognised across workers (label order, escaped values), and what is skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countersOf, mergeExpositions } from '../../src/server/metrics-merge.js';

/** Lines joined, with the final newline an exposition ends with. */
function text(...lines: string[]): string {
  return `${lines.join('\n')}\n`;
}

test('counters of two workers are summed, with HELP and TYPE once', () => {
  const a = text(
    '# HELP minkms_requests_total Requests served.',
    '# TYPE minkms_requests_total counter',
    'minkms_requests_total{route="/v1/key/create",status="200"} 3',
    'minkms_requests_total{route="/v1/key/generate",status="200"} 10',
  );
  const b = text(
    '# HELP minkms_requests_total Requests served.',
    '# TYPE minkms_requests_total counter',
    'minkms_requests_total{route="/v1/key/create",status="200"} 4',
    'minkms_requests_total{route="/v1/key/generate",status="200"} 0.5',
  );
  assert.equal(
    mergeExpositions([a, b]),
    text(
      '# HELP minkms_requests_total Requests served.',
      '# TYPE minkms_requests_total counter',
      'minkms_requests_total{route="/v1/key/create",status="200"} 7',
      'minkms_requests_total{route="/v1/key/generate",status="200"} 10.5',
    ),
  );
});

test('a histogram is summed bucket by bucket, including the +Inf bucket, _sum and _count', () => {
  const worker = (b1: number, b2: number, inf: number, sum: number) =>
    text(
      '# HELP minkms_request_seconds Request latency.',
      '# TYPE minkms_request_seconds histogram',
      `minkms_request_seconds_bucket{route="a",le="0.005"} ${b1}`,
      `minkms_request_seconds_bucket{route="a",le="0.1"} ${b2}`,
      `minkms_request_seconds_bucket{route="a",le="+Inf"} ${inf}`,
      `minkms_request_seconds_sum{route="a"} ${sum}`,
      `minkms_request_seconds_count{route="a"} ${inf}`,
    );
  assert.equal(
    mergeExpositions([worker(1, 2, 3, 0.25), worker(4, 6, 7, 0.5)]),
    text(
      '# HELP minkms_request_seconds Request latency.',
      '# TYPE minkms_request_seconds histogram',
      'minkms_request_seconds_bucket{route="a",le="0.005"} 5',
      'minkms_request_seconds_bucket{route="a",le="0.1"} 8',
      'minkms_request_seconds_bucket{route="a",le="+Inf"} 10',
      'minkms_request_seconds_sum{route="a"} 0.75',
      'minkms_request_seconds_count{route="a"} 10',
    ),
  );
});

test('a gauge is taken from the first worker, or summed when listed in sumGauges', () => {
  const worker = (sealed: number, inflight: number) =>
    text('# TYPE minkms_sealed gauge', `minkms_sealed ${sealed}`, '# TYPE minkms_inflight gauge', `minkms_inflight ${inflight}`);
  const texts = [worker(0, 2), worker(1, 5), worker(1, 1)];
  assert.equal(
    mergeExpositions(texts),
    text('# TYPE minkms_sealed gauge', 'minkms_sealed 0', '# TYPE minkms_inflight gauge', 'minkms_inflight 2'),
  );
  assert.equal(
    mergeExpositions(texts, { sumGauges: new Set(['minkms_inflight']) }),
    text('# TYPE minkms_sealed gauge', 'minkms_sealed 0', '# TYPE minkms_inflight gauge', 'minkms_inflight 8'),
  );
  // The first worker that has the series, not the first worker.
  assert.equal(
    mergeExpositions([text('# TYPE g gauge'), text('# TYPE g gauge', 'g{x="1"} 4'), text('g{x="1"} 9')]),
    text('# TYPE g gauge', 'g{x="1"} 4'),
  );
});

test('a summary sums _sum and _count and takes the largest quantile, ignoring NaN of idle workers', () => {
  const a = text('# TYPE s summary', 's{quantile="0.5"} 0.2', 's{quantile="0.99"} NaN', 's_sum 1.5', 's_count 3');
  const b = text('# TYPE s summary', 's{quantile="0.5"} 0.1', 's{quantile="0.99"} 0.9', 's_sum 2', 's_count 4');
  const idle = text('# TYPE s summary', 's{quantile="0.5"} NaN', 's{quantile="0.99"} NaN', 's_sum 0', 's_count 0');
  assert.equal(
    mergeExpositions([a, b, idle]),
    text('# TYPE s summary', 's{quantile="0.5"} 0.2', 's{quantile="0.99"} 0.9', 's_sum 3.5', 's_count 7'),
  );
  assert.equal(
    mergeExpositions([idle, idle]),
    text('# TYPE s summary', 's{quantile="0.5"} NaN', 's{quantile="0.99"} NaN', 's_sum 0', 's_count 0'),
  );
});

test('labels written in another order are the same series, printed as the first worker wrote it', () => {
  const a = text('# TYPE c counter', 'c{b="2",a="1"} 1', 'c{a="1"} 10');
  const b = text('# TYPE c counter', 'c{a="1", b="2",} 2', 'c{a="1"} 20');
  assert.equal(mergeExpositions([a, b]), text('# TYPE c counter', 'c{b="2",a="1"} 3', 'c{a="1"} 30'));
  // `c` and `c{}` are the same series too.
  assert.equal(mergeExpositions(['c 1\n', 'c{} 2\n']), 'c 3\n');
});

test('escaped label values holding quotes, backslashes, newlines, commas and braces are one label each', () => {
  const series = 'c{path="/a,b}{\\"q\\"\\\\x\\n",z="}"}';
  const reordered = 'c{z="}",path="/a,b}{\\"q\\"\\\\x\\n"}';
  const other = 'c{path="/a,b}{\\"q\\"\\\\x\\n",z="},"}';
  assert.equal(
    mergeExpositions([text('# TYPE c counter', `${series} 1`, `${other} 100`), text(`${reordered} 2`)]),
    text('# TYPE c counter', `${series} 3`, `${other} 100`),
  );
});

test('a series or family present only in a later worker is appended after those of the first', () => {
  const a = text('# HELP c Things.', '# TYPE c counter', 'c{k="x"} 1', '# TYPE g gauge', 'g 5');
  const b = text(
    '# HELP c Things (second worker).',
    '# TYPE c counter',
    'c{k="y"} 2',
    'c{k="x"} 1',
    '# HELP only_b Seen by b.',
    '# TYPE only_b counter',
    'only_b 9',
    '# TYPE g gauge',
    'g 6',
  );
  assert.equal(
    mergeExpositions([a, b]),
    text(
      '# HELP c Things.',
      '# TYPE c counter',
      'c{k="x"} 2',
      'c{k="y"} 2',
      '# TYPE g gauge',
      'g 5',
      '# HELP only_b Seen by b.',
      '# TYPE only_b counter',
      'only_b 9',
    ),
  );
});

test('NaN and infinite values are read and written as Prometheus does; timestamps are dropped', () => {
  const a = text(
    '# TYPE u untyped',
    'u{k="inf"} +Inf 1700000000000',
    'u{k="nan"} NaN',
    'u{k="neg"} -Inf',
    'u{k="mixed"} +Inf',
    'u{k="e"} 1e3',
  );
  const b = text('u{k="inf"} 1 1700000000001', 'u{k="nan"} 2', 'u{k="neg"} -1', 'u{k="mixed"} -Inf', 'u{k="e"} 2.5e-1');
  assert.equal(
    mergeExpositions([a, b]),
    text('# TYPE u untyped', 'u{k="inf"} +Inf', 'u{k="nan"} NaN', 'u{k="neg"} -Inf', 'u{k="mixed"} NaN', 'u{k="e"} 1000.25'),
  );
  // Untyped series without any TYPE line are summed too; large integers keep no decimal point.
  assert.equal(mergeExpositions(['x 123456789012\n', 'x 1\n']), 'x 123456789013\n');
});

test('lines that do not parse are skipped, and nothing throws', () => {
  const garbage = [
    '',
    '   ',
    '# a comment',
    '#HELP glued',
    '# TYPE c nonsense',
    '# EOF',
    'c{k="unterminated} 1',
    'c{k=unquoted} 1',
    'c{k="v"',
    'c{="v"} 1',
    'c{k="v"} ',
    'c{k="v"} one',
    'c{k="v"} 1 2 3',
    'c{k="v"} 1 1.5',
    'c{k="v"} 0x10',
    '{k="v"} 1',
    '9c 1',
    '\u0000\uffff',
  ].join('\n');
  assert.equal(
    mergeExpositions([text('# TYPE c counter', 'c{k="v"} 1'), garbage, 'c{k="v"} 2\r\n']),
    text('# TYPE c counter', 'c{k="v"} 3'),
  );
  assert.equal(mergeExpositions([garbage]), '');
});

test('no input, or only empty input, gives an empty exposition', () => {
  assert.equal(mergeExpositions([]), '');
  assert.equal(mergeExpositions(['', '\n']), '');
});

test('a HELP or TYPE missing from the first worker is taken from a later one', () => {
  const a = text('h_bucket{le="+Inf"} 1', 'h_count 1');
  const b = text('# HELP h Latency.', '# TYPE h histogram', 'h_bucket{le="+Inf"} 2', 'h_count 2');
  // The first worker's samples already name the family `h` (its type is known from b), so they
  // are not separate untyped families.
  assert.equal(mergeExpositions([a, b]), text('# HELP h Latency.', '# TYPE h histogram', 'h_bucket{le="+Inf"} 3', 'h_count 3'));
});

test('countersOf keeps the counter and histogram families only, with their HELP and TYPE lines', () => {
  const text = [
    '# HELP c_total A counter.',
    '# TYPE c_total counter',
    'c_total{a="1"} 3',
    '# HELP g A gauge.',
    '# TYPE g gauge',
    'g 7',
    '# HELP h A histogram.',
    '# TYPE h histogram',
    'h_bucket{le="+Inf"} 2',
    'h_sum 0.5',
    'h_count 2',
    '# TYPE u untyped',
    'u 1',
    '',
  ].join('\n');
  assert.equal(
    countersOf(text),
    [
      '# HELP c_total A counter.',
      '# TYPE c_total counter',
      'c_total{a="1"} 3',
      '# HELP h A histogram.',
      '# TYPE h histogram',
      'h_bucket{le="+Inf"} 2',
      'h_sum 0.5',
      'h_count 2',
      '',
    ].join('\n'),
  );
  // A worker that exited still counts: merged with a live one, counters add up, gauges are the live one's.
  const merged = mergeExpositions(['# TYPE g gauge\ng 1\n# TYPE c_total counter\nc_total{a="1"} 4\n', countersOf(text)]);
  assert.match(merged, /^c_total\{a="1"\} 7$/m);
  assert.match(merged, /^g 1$/m);
  assert.equal(countersOf(''), '');
});
