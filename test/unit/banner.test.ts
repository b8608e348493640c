/**
 * The banner of a node with several workers: every worker prints the whole banner, the node
 * prints it once, whatever order the workers listen and speak in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BannerLines, PRINT_DEDUP_MS } from '../../src/server/workers/banner.js';

const STATIC = ['Version     0.2.0', 'HSM         hsm:minio:soft', 'Endpoint    https://127.0.0.1:7373', 'Docs        /docs/'];
const UP = [
  'Cluster ID  c1',
  'Root        h1:abc (API key derived from hsm:minio:soft)',
  'API Key     k1:xyz',
  '=> Server is up and running...',
];

function printed(banner: BannerLines, lines: string[], now = 0): string[] {
  return lines.filter((l) => banner.admit(l, now));
}

test('two workers whose banners interleave: every line once, the endpoint included', () => {
  const banner = new BannerLines();
  const first = [...STATIC, ...UP];
  // The second worker's lines arrive between the first one's, in any order.
  const out: string[] = [];
  for (let i = 0; i < first.length; i++) {
    out.push(...printed(banner, [first[i]!]));
    out.push(...printed(banner, [first[first.length - 1 - i]!]));
  }
  assert.deepEqual([...out].sort(), [...first].sort());
});

test('a worker that starts again later repeats nothing of the banner', () => {
  const banner = new BannerLines();
  assert.equal(printed(banner, [...STATIC, ...UP], 0).length, STATIC.length + UP.length);
  assert.deepEqual(printed(banner, [...STATIC, ...UP], 10 * PRINT_DEDUP_MS), []);
});

test('a new root API key is announced; a repeated one is not', () => {
  const banner = new BannerLines();
  printed(banner, UP);
  assert.deepEqual(printed(banner, ['API Key     k1:new   (replaces the previous one)', 'API Key     k1:xyz']), [
    'API Key     k1:new   (replaces the previous one)',
  ]);
});

test('other announcements: once per worker burst, again after the dedup window', () => {
  const banner = new BannerLines();
  const sealed = '=> Server is sealed: the HSM is unreachable';
  assert.deepEqual(printed(banner, [sealed, sealed], 0), [sealed]);
  assert.deepEqual(printed(banner, [sealed], PRINT_DEDUP_MS - 1), []);
  assert.deepEqual(printed(banner, [sealed], 2 * PRINT_DEDUP_MS + 1), [sealed]);
});
