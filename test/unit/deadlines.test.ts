import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Deadlines } from '../../src/server/deadlines.js';

test('a deadline fires once, after its time and within a tick; a removed one never does', async () => {
  const d = new Deadlines(20);
  const fired: string[] = [];
  const t0 = performance.now();
  const at: Record<string, number> = {};
  d.add(50, () => {
    fired.push('a');
    at.a = performance.now() - t0;
  });
  const b = d.add(50, () => fired.push('b'));
  d.add(150, () => {
    fired.push('c');
    at.c = performance.now() - t0;
  });
  d.remove(b);
  assert.equal(d.size, 2);
  await sleep(100);
  assert.deepEqual(fired, ['a']);
  await sleep(150);
  assert.deepEqual(fired, ['a', 'c'], 'each fires once');
  assert.ok(at.a! >= 50 && at.c! >= 150, `fired early: ${JSON.stringify(at)}`);
  assert.equal(d.size, 0);
});
