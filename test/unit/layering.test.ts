/**
 * The import graph of src/ stays one-way (CONTRIBUTING.md, "Layers"): no file imports itself
 * back through others. ESLint's no-restricted-imports rules keep each folder below the ones it
 * may not import; this test finds cycles between files, which folder rules cannot see.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';

const SRC = join(REPO_ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** The src files `file` imports at run time (type-only imports cannot form a cycle at run time, but are kept: they are design). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^'";]*?from\s+'(\.{1,2}\/[^']+)'/gm)) {
    out.push(resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  }
  for (const m of text.matchAll(/\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g)) out.push(resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  return out;
}

test('src/ has no import cycle', () => {
  const files = sources(SRC);
  const graph = new Map(files.map((f) => [f, importsOf(f).filter((t) => files.includes(t))]));
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'visiting');
    stack.push(f);
    for (const t of graph.get(f) ?? []) {
      if (state.get(t) === 'visiting') cycles.push([...stack.slice(stack.indexOf(t)), t].map((x) => relative(SRC, x)).join(' → '));
      else if (!state.has(t)) visit(t);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  assert.deepEqual(cycles, [], 'import cycles in src/');
  assert.ok(files.length > 50, `read ${files.length} files`);
});
