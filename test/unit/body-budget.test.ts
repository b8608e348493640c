/**
 * The request-byte budgets (server/http.ts, BodyBudget): per connection, per identity, per
 * node; what is given back can be taken again, whatever number of identities came and went.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BodyBudget } from '../../src/server/http.js';

test('each budget bounds its own sum; a refused take reserves nothing', () => {
  const b = new BodyBudget(100, 250, 150);
  const c1 = {};
  const c2 = {};
  const c3 = {};
  assert.ok(b.take(c1, 'alice', 100));
  assert.ok(!b.take(c1, 'alice', 1), 'connection full');
  assert.ok(b.take(c2, 'alice', 50));
  assert.ok(!b.take(c3, 'alice', 1), 'identity full');
  assert.ok(b.take(c3, 'bob', 100));
  assert.ok(!b.take({}, 'carol', 1), 'node full');
  assert.equal(b.used, 250);
  b.give(c1, 'alice', 100);
  assert.ok(b.take(c1, 'carol', 100));
  assert.equal(b.used, 250);
});

test('after many identities came and went, every one of them has its whole budget again', () => {
  const b = new BodyBudget(10, 1_000_000, 10);
  const conn = {};
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 1_000; i++) {
      assert.ok(b.take(conn, `id-${i}`, 10), `round ${round}, id-${i}`);
      assert.ok(!b.take({}, `id-${i}`, 1), 'its budget is full');
      b.give(conn, `id-${i}`, 10);
    }
  }
  assert.equal(b.used, 0);
  // One identity holding bytes while hundreds of others come and go keeps its count.
  assert.ok(b.take({}, 'holder', 6));
  for (let i = 0; i < 600; i++) {
    b.take(conn, `other-${i}`, 1);
    b.give(conn, `other-${i}`, 1);
  }
  assert.ok(!b.take({}, 'holder', 5), 'still holding 6 of 10');
  assert.ok(b.take({}, 'holder', 4));
  assert.equal(b.used, 10);
});
