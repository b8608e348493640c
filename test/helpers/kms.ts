/**
 * The domain (src/kms) without HTTP, for unit tests: a Kms over a SqliteStore + Barrier in a
 * temporary directory, and an assertion for catalogued errors.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kms, type Principal } from '../../src/kms/kms.js';
import { Barrier } from '../../src/store/barrier.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { generateApiKey } from '../../src/identity/api-key.js';

export const newIdentity = (): string => generateApiKey('k1').identity;

export interface KmsContext {
  kms: Kms;
  root: string;
  store: SqliteStore;
  /** The barrier of the store, to write records as another (older) version would. */
  barrier: Barrier;
  /** Closes the store and loads a new Kms from the same directory (a restart). */
  restart(): Promise<Kms>;
}

export async function withKms(fn: (ctx: KmsContext) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'minkms-kms-'));
  const rek = randomBytes(32);
  const clusterId = randomUUID();
  const root = newIdentity();
  const ctx = { root, store: new SqliteStore(join(dir, 'data')), barrier: new Barrier(Buffer.from(rek), clusterId) } as KmsContext;
  ctx.kms = await Kms.load(ctx.store, new Barrier(rek, clusterId), { rootIdentity: root });
  ctx.restart = async () => {
    await ctx.store.close();
    ctx.store = new SqliteStore(join(dir, 'data'));
    ctx.kms = await Kms.load(ctx.store, new Barrier(Buffer.from(rek), clusterId), { rootIdentity: root });
    return ctx.kms;
  };
  try {
    await fn(ctx);
  } finally {
    await ctx.store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function createId(
  kms: Kms,
  caller: Principal,
  enclave: string,
  identity: string,
  privilege: string,
  serviceAccount = false,
): Promise<void> {
  return kms.createIdentity(caller, enclave, { identity, privilege, serviceAccount, tags: {} });
}
