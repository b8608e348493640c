/** Clients and assertions shared by the API tests. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { generateApiKey } from '../../src/identity/api-key.js';
import { KmsClient, HttpError } from '../../src/client/client.js';
import { ERRORS, KmsError, type ErrorCode } from '../../src/errors.js';
import type { TestServer } from './server.js';
import { waitFor } from './wait.js';

/** A client of `server` authenticating with `apiKey` (none = no client certificate). */
export function clientFor(server: TestServer, apiKey?: string): KmsClient {
  return new KmsClient({ endpoints: [server.host], apiKey, ca: server.caPem, timeoutMs: 15_000 });
}

/** A new API key with a client for it. */
export function newUser(server: TestServer): { apiKey: string; identity: string; client: KmsClient } {
  const key = generateApiKey();
  return { apiKey: key.text, identity: key.identity, client: clientFor(server, key.text) };
}

/**
 * The one way tests expect an error: asserts that `run` — a promise, or a function that throws or
 * returns a promise — fails with the catalogue error `code` (src/errors.ts): a KmsError with that
 * code and status, whose message is the catalogue message, followed by `: detail` at most. Works
 * for the domain's errors and for the client's (decoded from a server's answer). Returns the error
 * for further checks of its detail.
 */
export async function rejectsWith(run: Promise<unknown> | (() => unknown), code: ErrorCode, label = ''): Promise<KmsError> {
  const [status, message] = ERRORS[code];
  const want = `${code} (${status} '${message}')`;
  const where = label === '' ? '' : `${label}: `;
  let failed = false;
  let thrown: unknown;
  try {
    await (typeof run === 'function' ? run() : run);
  } catch (err) {
    failed = true;
    thrown = err;
  }
  if (!failed) assert.fail(`${where}got success, want ${want}`);
  if (thrown instanceof HttpError) assert.fail(`${where}got HTTP ${thrown.status} '${thrown.message}', want ${want}`);
  if (!(thrown instanceof KmsError)) assert.fail(`${where}got ${thrown instanceof Error ? thrown.stack : String(thrown)}, want ${want}`);
  assert.equal(thrown.code, code, `${where}got ${thrown.code} (${thrown.status} '${thrown.message}'), want ${want}`);
  assert.equal(thrown.status, status, `${where}got status ${thrown.status}, want ${want}`);
  assert.ok(
    thrown.message === message || thrown.message.startsWith(`${message}: `),
    `${where}got message ${JSON.stringify(thrown.message)}, want ${JSON.stringify(message)} (with a detail at most)`,
  );
  return thrown;
}

/**
 * Asserts that a server is up but sealed: still running, its output says why (`reason`), and
 * readiness answers 503 sealed. (A node never exits because it cannot unseal.)
 */
export async function assertSealed(server: TestServer, reason: RegExp): Promise<void> {
  assert.equal(server.process.exitCode, null, 'the sealed server exited');
  assert.match(server.output(), /=> Server is sealed: /);
  assert.match(server.output(), reason);
  const c = clientFor(server);
  try {
    await rejectsWith(c.ready(), 'ERR_SEALED', 'readiness while sealed');
  } finally {
    c.close();
  }
}

/** The lines of an audit log file (none if there is no file yet). */
export function auditFileLines(file: string): string[] {
  return existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
    : [];
}

/**
 * The lines of the audit log `file` of the server `c` talks to, once everything it audited so far
 * is in the file: the log is written behind (up to 100 ms), so this polls until the file holds
 * `base` + minkms_audit_records_total lines. `base`: the lines the file had before this server
 * started (a restarted server appends to its predecessor's log and counts from 0). `c` must be
 * allowed to read the metrics (a SysAdmin).
 */
export async function settledAuditLines(c: KmsClient, file: string, base = 0, timeoutMs = 20_000): Promise<string[]> {
  return waitFor(
    `the audit log ${file} to hold every audited record`,
    async () => {
      const res = await c.transport.request({ method: 'GET', path: '/v1/health/metrics' });
      assert.equal(res.status, 200, `metrics: HTTP ${res.status}`);
      const m = /^minkms_audit_records_total (\d+)$/m.exec(res.body.toString('utf8'));
      assert.ok(m, 'minkms_audit_records_total is not among the metrics');
      const lines = auditFileLines(file);
      return lines.length >= base + Number(m[1]) && lines;
    },
    timeoutMs,
  );
}

/** Requests the server of `c` is serving (minkms_http_requests_inflight), not counting the one that asks. */
export async function inflightRequests(c: KmsClient): Promise<number> {
  const res = await c.transport.request({ method: 'GET', path: '/v1/health/metrics' });
  const m = /^minkms_http_requests_inflight (\d+)$/m.exec(res.body.toString('utf8'));
  assert.ok(m, `no minkms_http_requests_inflight in the metrics (HTTP ${res.status})`);
  return Number(m[1]) - 1;
}
