/**
 * docs/security.md cannot drift from the code: its authorization matrix section is exactly what
 * src/server/authz-matrix.ts derives from the command table and the route rules
 * (`node scripts/authz-matrix.mjs` rewrites it), and the matrix covers every command of the
 * catalogue, every route of the server and of the KES API, and the callers and URL enclaves
 * issue 11 asks for.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';
import { COMMANDS } from '../../src/protocol/commands.js';
import { KES_APIS } from '../../src/kes/apis.js';
import { CALLERS, COLUMNS, MATRIX_BEGIN, MATRIX_END, authorizationMatrix, renderMatrix } from '../../src/server/authz-matrix.js';

const DOC = join(REPO_ROOT, 'docs/security.md');

test('docs/security.md shows the matrix the code derives', () => {
  const doc = readFileSync(DOC, 'utf8');
  const begin = doc.indexOf(MATRIX_BEGIN);
  const end = doc.indexOf(MATRIX_END);
  assert.ok(begin >= 0 && end > begin, 'docs/security.md has no authz-matrix markers');
  const shown = doc.slice(begin, end + MATRIX_END.length);
  assert.ok(
    shown === renderMatrix(),
    'docs/security.md: the authorization matrix is out of date: run `npm run build && node scripts/authz-matrix.mjs`',
  );
});

test('the matrix covers every command, route, KES API, kind of caller and URL enclave', () => {
  const m = authorizationMatrix();
  const probed = new Set(m.commands.map((p) => p.command!.name));
  assert.deepEqual(
    COMMANDS.map((c) => c.name).filter((n) => !probed.has(n)),
    [],
    'commands without a row',
  );
  assert.deepEqual(
    CALLERS.map((c) => c.id),
    ['none', 'unknown', 'user', 'user-allow', 'user-deny', 'sa-user', 'sa-admin', 'admin', 'admin-other', 'sysadmin'],
  );
  assert.deepEqual(
    COLUMNS.map((c) => c.id),
    ['own', 'other', 'none', 'missing'],
  );
  // Every KES API but /version (one route for both clients, in the routes above) has a row.
  const kesProbed = new Set(m.kes.map((p) => `${p.route!.api!.method} ${p.route!.api!.path}`));
  assert.deepEqual(
    KES_APIS.filter((a) => a.path !== '/version' && !kesProbed.has(`${a.method} ${a.path}`)).map((a) => `${a.method} ${a.path}`),
    [],
    'KES APIs without a row',
  );
  assert.equal(m.cells.length, m.commands.length * CALLERS.length * COLUMNS.length + (m.routes.length + m.kes.length) * CALLERS.length);
  // A stranger reaches nothing but /version and health (KES's: /v1/ready); without a certificate likewise.
  for (const c of m.cells) {
    if (c.caller.id !== 'none' && c.caller.id !== 'unknown') continue;
    const open = c.probe.route && /^GET \/(version|v1\/health\/(live|ready)|v1\/ready)$/.test(c.probe.id);
    assert.equal(c.outcome === 'ok', Boolean(open), `${c.probe.id} for ${c.caller.id}: ${c.outcome}`);
  }
});
