/** Clients and assertions shared by the API tests. */
import assert from 'node:assert/strict';
import { generateApiKey } from '../../src/identity/api-key.js';
import { KmsClient, HttpError } from '../../src/client/client.js';
import { KmsError, type ErrorCode } from '../../src/errors.js';
import type { TestServer } from './server.js';

/** A client of `server` authenticating with `apiKey` (none = no client certificate). */
export function clientFor(server: TestServer, apiKey?: string): KmsClient {
  return new KmsClient({ endpoints: [server.host], apiKey, ca: server.caPem, timeoutMs: 15_000 });
}

/** A new API key with a client for it. */
export function newUser(server: TestServer): { apiKey: string; identity: string; client: KmsClient } {
  const key = generateApiKey();
  return { apiKey: key.text, identity: key.identity, client: clientFor(server, key.text) };
}

/** Asserts that `p` rejects with the catalogue error `code` (status and exact message). */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, label = ''): Promise<void> {
  const want = new KmsError(code);
  await assert.rejects(p, (err: unknown) => {
    if (err instanceof KmsError) {
      assert.equal(err.code, code, `${label}: got ${err.code} (${err.status} ${err.message}), want ${code}`);
      return true;
    }
    if (err instanceof HttpError) {
      assert.fail(`${label}: got HTTP ${err.status} '${err.message}', want ${want.status} '${want.message}'`);
    }
    throw err;
  });
}

/** Asserts an HTTP error whose message starts with the catalogue message of `code`. */
export async function rejectsWithStatus(p: Promise<unknown>, status: number, messageStart: string, label = ''): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const e = err as { status?: number; message?: string };
    assert.equal(e.status, status, `${label}: status ${e.status} '${e.message}', want ${status}`);
    assert.ok(e.message?.startsWith(messageStart), `${label}: message '${e.message}' does not start with '${messageStart}'`);
    return true;
  });
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
