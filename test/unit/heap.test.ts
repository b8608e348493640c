/**
 * The server's cap on the old generation's growth (server/heap.ts): set unless the operator
 * chose a value with node's own flag.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEAP_GROWING_PERCENT, heapFlags } from '../../src/server/heap.js';

test('the growth is capped by default', () => {
  assert.deepEqual(heapFlags([]), [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`]);
  assert.deepEqual(heapFlags(['--enable-source-maps', '--max-old-space-size=4096']), [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`]);
});

test("an operator's own value is kept, in either spelling", () => {
  for (const flag of ['--heap-growing-percent=80', '--heap_growing_percent=0', '--heap-growing-percent']) {
    assert.deepEqual(heapFlags([flag]), [], flag);
  }
});

test('a flag that only starts alike is not taken for it', () => {
  assert.deepEqual(heapFlags(['--heap-growing-percentage=5']), [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`]);
});
