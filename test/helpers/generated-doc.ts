/**
 * Docs with generated parts: the text between `<!-- BEGIN GENERATED: name -->` and
 * `<!-- END GENERATED: name -->` is rendered from code (the error catalogue, the command table)
 * so the doc cannot drift from it. A test compares; `npm run docs` (MINKMS_WRITE_DOCS=1) writes.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './server.js';

export function checkGenerated(docPath: string, name: string, rendered: string): void {
  const file = join(REPO_ROOT, docPath);
  const text = readFileSync(file, 'utf8');
  const begin = `<!-- BEGIN GENERATED: ${name} -->`;
  const end = `<!-- END GENERATED: ${name} -->`;
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  assert.ok(a >= 0 && b > a, `${docPath} has no '${begin}' … '${end}' section`);
  const current = text.slice(a + begin.length, b);
  const want = `\n${rendered.trimEnd()}\n`;
  if (current === want) return;
  if (process.env.MINKMS_WRITE_DOCS === '1') {
    writeFileSync(file, text.slice(0, a + begin.length) + want + text.slice(b));
    return;
  }
  assert.equal(current, want, `${docPath} (${name}) is out of date: run npm run docs`);
}
