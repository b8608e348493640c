import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { Deadlines } from '../../src/server/deadlines.js';

test('a deadline fires once, after its time and within a tick; a removed one never does', () => {
  // Controlled time: the interval timer and the clock move only when the test moves them, so the
  // bounds below are exact whatever the machine is doing.
  mock.timers.enable({ apis: ['setInterval', 'Date'] });
  try {
    const d = new Deadlines(20, () => Date.now());
    const t0 = Date.now();
    const fired: string[] = [];
    const at: Record<string, number> = {};
    d.add(50, () => {
      fired.push('a');
      at.a = Date.now() - t0;
    });
    const b = d.add(50, () => fired.push('b'));
    d.add(150, () => {
      fired.push('c');
      at.c = Date.now() - t0;
    });
    d.remove(b);
    assert.equal(d.size, 2);
    mock.timers.tick(40);
    assert.deepEqual(fired, [], 'nothing before its time');
    mock.timers.tick(20);
    assert.deepEqual(fired, ['a'], 'a within a tick of its time; b was removed');
    mock.timers.tick(80);
    assert.deepEqual(fired, ['a']);
    mock.timers.tick(20);
    assert.deepEqual(fired, ['a', 'c']);
    assert.deepEqual(at, { a: 60, c: 160 }, 'each at the first tick after its time');
    assert.equal(d.size, 0);
    mock.timers.tick(1_000);
    assert.deepEqual(fired, ['a', 'c'], 'each fires once');
  } finally {
    mock.timers.reset();
  }
});

test('a deadline removed by another one firing in the same tick does not fire; one added meanwhile waits its time', () => {
  mock.timers.enable({ apis: ['setInterval', 'Date'] });
  try {
    const d = new Deadlines(20, () => Date.now());
    const fired: string[] = [];
    const later: Array<ReturnType<Deadlines['add']>> = [];
    const a = d.add(10, () => {
      fired.push('a');
      d.remove(later[0]!);
      d.add(10, () => fired.push('late'));
    });
    later.push(d.add(10, () => fired.push('b')));
    const c = d.add(10, () => fired.push('c'));
    mock.timers.tick(20);
    assert.deepEqual(fired, ['a', 'c']);
    assert.equal(d.size, 1, 'the one added by a');
    d.remove(a);
    d.remove(c);
    assert.equal(d.size, 1, 'removing fired deadlines again changes nothing');
    mock.timers.tick(20);
    assert.deepEqual(fired, ['a', 'c', 'late']);
    assert.equal(d.size, 0);
  } finally {
    mock.timers.reset();
  }
});

test('deadlines removed from the head, the middle and the tail; the rest fire in order', () => {
  mock.timers.enable({ apis: ['setInterval', 'Date'] });
  try {
    const d = new Deadlines(20, () => Date.now());
    const fired: number[] = [];
    const all = Array.from({ length: 6 }, (_, i) => d.add(10, () => fired.push(i)));
    for (const i of [0, 3, 5]) d.remove(all[i]!);
    assert.equal(d.size, 3);
    mock.timers.tick(20);
    assert.deepEqual(fired, [1, 2, 4]);
    assert.equal(d.size, 0);
  } finally {
    mock.timers.reset();
  }
});
