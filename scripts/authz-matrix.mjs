// Writes the authorization matrix (src/server/authz-matrix.ts, built into dist/) into
// docs/security.md between its markers; `--check` only reports whether the doc is out of date.
// Run `npm run build` first.
import { readFileSync, writeFileSync } from 'node:fs';

const { renderMatrix, replaceMatrix } = await import('../dist/src/server/authz-matrix.js');
const path = new URL('../docs/security.md', import.meta.url);
const doc = readFileSync(path, 'utf8');
const next = replaceMatrix(doc, renderMatrix());
if (process.argv.includes('--check')) {
  if (next !== doc) {
    console.error('docs/security.md: the authorization matrix is out of date (node scripts/authz-matrix.mjs rewrites it)');
    process.exit(1);
  }
  console.log('docs/security.md: the authorization matrix is up to date');
} else if (next !== doc) {
  writeFileSync(path, next);
  console.log('docs/security.md: authorization matrix rewritten');
} else {
  console.log('docs/security.md: the authorization matrix is up to date');
}
