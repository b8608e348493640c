/**
 * A PKCS#11 token as HSM, end to end: real `minkms server` processes whose root key is sealed
 * by a key on a real SoftHSM2 token (own token directory and SOFTHSM2_CONF per test), alone or
 * beside a soft key and an external KMS (the KMS chain).
 *
 * Written against observable behaviour only — banner lines, the process staying up, HTTP 503
 * while sealed and 200 once unsealed, the CLUSTER:STATUS lists — so that it keeps holding when
 * the server's start-up code changes.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { newHsmKey, removeDir, startServer, tempDir, freePort, type TestServer } from '../helpers/server.js';
import { eventually, waitFor } from '../helpers/wait.js';
import { clientFor, newUser, rejectsWith } from '../helpers/clients.js';
import { SKIP_PKCS11, SOFTHSM_MODULE, SoftHsmToken, secretTemplate } from '../helpers/softhsm.js';
import { SQLITE_FILE } from '../../src/store/sqlite.js';
import { unsealEntry, CLUSTER_KEY, REK_PREFIX } from '../../src/hsm/root-key.js';
import { Pkcs11Hsm } from '../../src/hsm/pkcs11.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import { SoftHsm } from '../../src/hsm/soft.js';
import type { KmsClient } from '../../src/client/client.js';
import { randomBytes } from 'node:crypto';

const dirs: string[] = [];
const tokens: SoftHsmToken[] = [];
const running = new Set<TestServer>();
after(async () => {
  for (const s of running) await s.kill();
  dirs.forEach(removeDir);
  tokens.forEach((t) => t.remove());
});

const KEY = 'minkms-root';
const PIN_ENV = 'MINKMS_TEST_PKCS11_PIN';
const NAME = `hsm:pkcs11:minkms-test/${KEY}`;
const EXT_NAME = 'hsm:minio:minkms:hsm/cluster-hsm';

function dataDir(): string {
  const d = tempDir('minkms-p11-');
  dirs.push(d);
  return join(d, 'data');
}

function newToken(): SoftHsmToken {
  const t = SoftHsmToken.create();
  tokens.push(t);
  t.initKey(KEY);
  return t;
}

async function start(opts: Parameters<typeof startServer>[0]): Promise<TestServer> {
  const s = await startServer({ timeoutMs: 30_000, ...opts });
  running.add(s);
  return s;
}

async function stop(s: TestServer): Promise<void> {
  await s.stop();
  running.delete(s);
}

interface External {
  host: string;
  caFile: string;
  apiKey: string;
}

/** An enclave `hsm`, a key `cluster-hsm` and a least-privilege User on the external KMS. */
async function provision(ext: TestServer): Promise<External> {
  const root = clientFor(ext, ext.apiKey);
  await root.createEnclave('hsm');
  await root.createKey('hsm', { name: 'cluster-hsm' });
  const rules = { rules: { 'cluster-hsm': {} } };
  await root.createPolicy('hsm', { name: 'chain', allow: { 'KEY:ENCRYPT': rules, 'KEY:DECRYPT': rules, 'KEY:MAC': rules } });
  const user = newUser(ext);
  await root.createIdentity('hsm', { identity: user.identity });
  await root.assignPolicy('hsm', user.identity, 'chain');
  root.close();
  user.client.close();
  return { host: ext.host, caFile: ext.caFile, apiKey: user.apiKey };
}

/** The node's configuration: a fixed root identity (it must not change as HSMs come and go), and the HSMs given. */
function config(admin: string, hsm: { token?: SoftHsmToken; key?: string; ext?: External }): string {
  let y = `version: v1\nadmin:\n  identity: ${admin}\n`;
  if (hsm.token || hsm.ext) y += 'hsm:\n';
  if (hsm.token) {
    y += `  pkcs11:\n    module: ${SOFTHSM_MODULE}\n    token:\n      label: ${hsm.token.label}\n    pin:\n      env: ${PIN_ENV}\n    key:\n      label: ${hsm.key ?? KEY}\n    timeout: 10s\n`;
  }
  if (hsm.ext) {
    y += `  minio:\n    minkms:\n      server: [${hsm.ext.host}]\n      enclave: hsm\n      key: cluster-hsm\n      auth:\n        key: ${hsm.ext.apiKey}\n      tls:\n        ca: ${hsm.ext.caFile}\n`;
  }
  return y;
}

function tokenEnv(t: SoftHsmToken): Record<string, string> {
  return { ...t.env, [PIN_ENV]: t.pin };
}

async function waitReady(c: KmsClient, timeoutMs = 30_000): Promise<void> {
  await eventually('readiness', () => c.ready(), timeoutMs, 200);
}

async function assertSealed(s: TestServer, label: string): Promise<void> {
  assert.equal(s.process.exitCode, null, `${label}: the process keeps running`);
  const probe = clientFor(s);
  await assert.rejects(probe.ready(), (err: { status?: number }) => err.status === 503, `${label}: ready answers 503`);
  probe.close();
}

/**
 * Starts a node that no configured HSM can open for a reason retrying cannot fix, and returns
 * what it printed once it reports being sealed: it stays up and answers 503.
 */
async function startUnopenable(opts: Parameters<typeof startServer>[0], label: string): Promise<string> {
  const s = await start({ ...opts, allowSealed: true });
  await waitFor(`${label}: the sealed banner`, () => /=> Server is sealed: /.test(s.output()));
  await assertSealed(s, label);
  await stop(s);
  return s.output();
}

/** Waits until the node has sealed entries for exactly `entries` (new HSMs are sealed for just after unsealing). */
async function waitEntries(c: KmsClient, entries: string[]): Promise<void> {
  const want = JSON.stringify([...entries].sort());
  await waitFor(`entries ${want}`, async () => JSON.stringify((await hsmLists(c)).entries) === want);
}

async function hsmLists(c: KmsClient): Promise<{ entries: string[]; configured: string[] }> {
  const [node] = [...(await c.clusterStatus()).nodesUp.values()];
  return { entries: [...node!.hsms].sort(), configured: [...node!.configuredHsms] };
}

type Dek = { version: number; plaintext: Buffer; ciphertext: Buffer; associatedData: Buffer };

async function makeDeks(c: KmsClient, tag: string, n = 4): Promise<Dek[]> {
  const ads = Array.from({ length: n }, (_, i) => Buffer.from(`${tag}-${i}`));
  const res = await c.generateKey(
    'e',
    ads.map((associatedData) => ({ name: 'k', associatedData })),
  );
  return res.map((r, i) => ({ version: r.version, plaintext: r.plaintext, ciphertext: r.ciphertext, associatedData: ads[i]! }));
}

async function assertDeks(c: KmsClient, deks: Dek[], label: string): Promise<void> {
  const back = await c.decrypt(
    'e',
    deks.map((d) => ({ name: 'k', version: d.version, ciphertext: d.ciphertext, associatedData: d.associatedData })),
  );
  back.forEach((b, i) => assert.ok(b.plaintext.equals(deks[i]!.plaintext), `${label}: DEK ${i}`));
}

/** The REK, learnt the way an attacker with the token and its PIN would: by unsealing the entry on the token. */
async function rekOf(dir: string, token: SoftHsmToken): Promise<Buffer> {
  const db = new Database(join(dir, SQLITE_FILE), { readonly: true });
  const get = (k: string) => (db.prepare('SELECT v FROM kv WHERE k = ?').get(k) as { v: Buffer } | undefined)?.v;
  const cluster = JSON.parse(get(CLUSTER_KEY)!.toString()) as { id: string };
  const entry = get(REK_PREFIX + NAME)!;
  db.close();
  token.use();
  const hsm = new Pkcs11Hsm(token.config(KEY));
  try {
    return (await unsealEntry(hsm, entry, cluster.id)).rek;
  } finally {
    await hsm.close();
  }
}

/** Asserts that no file under `roots` and no text in `logs` holds any of `secrets`, raw or encoded. */
function assertNowhere(secrets: Buffer[], roots: string[], logs: string[]): void {
  const forms = (s: Buffer) => [
    s,
    Buffer.from(s.toString('base64')),
    Buffer.from(s.toString('base64url')),
    Buffer.from(s.toString('hex')),
    Buffer.from(s.toString('hex').toUpperCase()),
  ];
  for (const root of roots) {
    const files = readdirSync(root, { recursive: true, withFileTypes: true }).filter((f) => f.isFile());
    assert.ok(files.length > 0, `${root} has files`);
    for (const f of files) {
      const path = join(f.parentPath ?? f.path, f.name);
      const bytes = readFileSync(path);
      for (const [i, s] of secrets.entries())
        for (const form of forms(s)) assert.equal(bytes.indexOf(form), -1, `${path} holds secret ${i}`);
    }
  }
  for (const [n, log] of logs.entries()) {
    const bytes = Buffer.from(log);
    for (const [i, s] of secrets.entries())
      for (const form of forms(s)) assert.equal(bytes.indexOf(form), -1, `log ${n} holds secret ${i}`);
  }
}

describe('PKCS#11 HSM (SoftHSM2) end to end', { skip: SKIP_PKCS11 }, () => {
  test('a node sealed only by the token: initialise, restart, unseal; the REK and the PIN are in no file and no log', async () => {
    const token = newToken();
    const dir = dataDir();
    const logs: string[] = [];
    const yaml = `version: v1\n${token.yaml(KEY, PIN_ENV)}`;
    let s = await start({ dir, hsmKey: null, config: yaml, env: tokenEnv(token), port: await freePort() });
    assert.match(s.output(), new RegExp(`HSM\\s+${NAME}\\n`), 'the banner names the token key');
    assert.match(s.output(), /API Key\s+k1:/, 'a root API key derived inside the token');
    const apiKey = s.apiKey;
    let root = clientFor(s, apiKey);
    assert.deepEqual(await hsmLists(root), { entries: [NAME], configured: [NAME] });
    await root.createEnclave('e');
    await root.createKey('e', { name: 'k' });
    const deks = await makeDeks(root, 'first');
    root.close();
    await stop(s);
    logs.push(s.output());

    s = await start({ dir, hsmKey: null, config: yaml, env: tokenEnv(token), port: s.port });
    assert.equal(s.apiKey, apiKey, 'the same root API key: derivation inside the token is deterministic');
    root = clientFor(s, apiKey);
    await assertDeks(root, deks, 'after restart');
    root.close();
    await stop(s);
    logs.push(s.output());

    const rek = await rekOf(dir, token);
    assert.equal(rek.length, 32);
    assertNowhere([rek, ...deks.map((d) => d.plaintext)], [dirname(dir), token.dir], logs);
    assertNowhere([Buffer.from(token.pin)], [dirname(dir)], logs);
  });

  test('token unavailable at start: sealed (process up, 503) and unsealed once it is back; removed while running: data plane unaffected, add-hsm fails clearly and works again without a restart', async () => {
    const token = newToken();
    const dir = dataDir();
    const admin = generateApiKey();
    const yaml = config(admin.identity, { token });
    let s = await start({ dir, hsmKey: null, config: yaml, env: tokenEnv(token), port: await freePort() });
    let root = clientFor(s, admin.text);
    await root.createEnclave('e');
    await root.createKey('e', { name: 'k' });
    const deks = await makeDeks(root, 'before');
    root.close();
    await stop(s);

    token.takeAway();
    s = await start({ dir, hsmKey: null, config: yaml, env: tokenEnv(token), port: s.port, allowSealed: true });
    assert.match(s.output(), /sealed/i);
    assert.match(s.output(), /no token 'minkms-test' is present/, 'the reason names the token');
    await assertSealed(s, 'token away');
    root = clientFor(s, admin.text);
    await rejectsWith(root.listEnclaves(), 'ERR_SEALED');

    token.bringBack();
    const t0 = Date.now();
    await waitReady(root);
    assert.ok(Date.now() - t0 < 15_000, 'unsealed within seconds of the token coming back');
    await assertDeks(root, deks, 'unsealed after the token came back');

    // The token goes away while the node runs: the REK is in memory, keys keep working.
    token.takeAway();
    const more = await makeDeks(root, 'token-away');
    await assertDeks(root, [...deks, ...more], 'token away, running');
    await rejectsWith(root.addHsm(NAME, true), 'ERR_HSM_FAILED', 'reseal with the token away');
    token.bringBack();
    await root.addHsm(NAME, true); // the lost session is re-opened by the running node
    root.close();
    await stop(s);

    s = await start({ dir, hsmKey: null, config: yaml, env: tokenEnv(token), port: s.port });
    root = clientFor(s, admin.text);
    await assertDeks(root, [...deks, ...more], 'after the reseal and a restart');
    root.close();
    await stop(s);
  });

  test('wrong PIN, missing key, extractable key at start: a clear reason, never the PIN', async () => {
    const token = newToken();
    token.createObjects([
      secretTemplate('extractable', 'aes', randomBytes(32), { encrypt: true, extractable: true }),
      secretTemplate('extractable', 'generic', randomBytes(32), { sign: true }),
    ]);
    const admin = generateApiKey();
    const wrongPin = 'wrong-' + randomBytes(4).toString('hex');
    const cases: [string, string, Record<string, string>, RegExp][] = [
      [
        'wrong PIN',
        config(admin.identity, { token }),
        { ...tokenEnv(token), [PIN_ENV]: wrongPin },
        /refused the user PIN \(CKR_PIN_INCORRECT\)/,
      ],
      [
        'missing key',
        config(admin.identity, { token, key: 'no-such-key' }),
        tokenEnv(token),
        /key 'no-such-key' on the token 'minkms-test' does not exist/,
      ],
      ['extractable key', config(admin.identity, { token, key: 'extractable' }), tokenEnv(token), /refusing the AES key .* extractable/],
    ];
    for (const [name, yaml, env, reason] of cases) {
      const out = await startUnopenable({ dir: dataDir(), hsmKey: null, config: yaml, env, port: await freePort() }, name);
      assert.match(out, reason, name);
      assert.ok(!out.includes(wrongPin) && !out.includes(token.pin), `${name}: the PIN is not shown`);
    }
  });

  test('multi-HSM: sealed by the token and an external KMS; either alone unseals; either can be removed', async () => {
    const token = newToken();
    let external = await start({ port: await freePort() });
    const extKey = external.hsmKey;
    const extDir = external.dir;
    const ext = await provision(external);
    const admin = generateApiKey();
    const both = config(admin.identity, { token, ext });
    const dir = dataDir();
    let s = await start({ dir, hsmKey: null, config: both, env: tokenEnv(token), port: await freePort() });
    let root = clientFor(s, admin.text);
    await waitEntries(root, [EXT_NAME, NAME]);
    assert.deepEqual(await hsmLists(root), { entries: [EXT_NAME, NAME].sort(), configured: [NAME, EXT_NAME] });
    await root.createEnclave('e');
    await root.createKey('e', { name: 'k' });
    const deks = await makeDeks(root, 'both');
    root.close();
    await stop(s);

    // The external KMS alone: the token is away.
    token.takeAway();
    s = await start({ dir, hsmKey: null, config: both, env: tokenEnv(token), port: s.port });
    root = clientFor(s, admin.text);
    await assertDeks(root, deks, 'external alone');
    root.close();
    await stop(s);
    token.bringBack();

    // The token alone: the external KMS is down.
    await stop(external);
    s = await start({ dir, hsmKey: null, config: both, env: tokenEnv(token), port: s.port });
    root = clientFor(s, admin.text);
    await assertDeks(root, deks, 'token alone');
    // Remove the external KMS's entry (its server is down: removing needs only the store).
    await root.removeHsm(EXT_NAME);
    assert.deepEqual((await hsmLists(root)).entries, [NAME]);
    await rejectsWith(root.removeHsm(NAME), 'ERR_HSM_LAST');
    root.close();
    await stop(s);

    // Back with both configured: the external entry is sealed again at start; then remove the token's.
    external = await start({ dir: extDir, hsmKey: extKey, port: external.port });
    s = await start({ dir, hsmKey: null, config: both, env: tokenEnv(token), port: s.port });
    root = clientFor(s, admin.text);
    await waitEntries(root, [EXT_NAME, NAME]);
    await root.removeHsm(NAME);
    root.close();
    await stop(s);

    // Only the external KMS configured: it opens; the token no longer can.
    s = await start({ dir, hsmKey: null, config: config(admin.identity, { ext }), port: s.port });
    root = clientFor(s, admin.text);
    assert.deepEqual(await hsmLists(root), { entries: [EXT_NAME], configured: [EXT_NAME] });
    await assertDeks(root, deks, 'external only');
    root.close();
    await stop(s);
    await stop(external);
  });

  test('move soft → PKCS#11 → external KMS → soft with no data loss; the REK is in no log on the way', async () => {
    const token = newToken();
    const admin = generateApiKey();
    const dir = dataDir();
    const soft1 = newHsmKey();
    const logs: string[] = [];
    const port = await freePort();
    const run = async (hsmKey: string | null, hsms: { token?: SoftHsmToken; ext?: External }, fn: (c: KmsClient) => Promise<void>) => {
      const s = await start({ dir, hsmKey, config: config(admin.identity, hsms), env: tokenEnv(token), port });
      const c = clientFor(s, admin.text);
      try {
        await fn(c);
      } finally {
        c.close();
        await stop(s);
        logs.push(s.output());
      }
    };
    const deks: Dek[] = [];

    // Soft only.
    await run(soft1, {}, async (c) => {
      await c.createEnclave('e');
      await c.createKey('e', { name: 'k' });
      deks.push(...(await makeDeks(c, 'soft')));
    });
    // Soft + token: the token's entry is sealed at start; drop the soft entry.
    await run(soft1, { token }, async (c) => {
      await waitEntries(c, [NAME, 'hsm:minio:soft']);
      await c.removeHsm('hsm:minio:soft');
      deks.push(...(await makeDeks(c, 'soft+token')));
    });
    // Token only.
    await run(null, { token }, async (c) => {
      assert.deepEqual((await hsmLists(c)).entries, [NAME]);
      await assertDeks(c, deks, 'token only');
      deks.push(...(await makeDeks(c, 'token')));
    });
    // Token + external: drop the token's entry.
    const external = await start({ port: await freePort() });
    const ext = await provision(external);
    await run(null, { token, ext }, async (c) => {
      await waitEntries(c, [EXT_NAME, NAME]);
      await c.removeHsm(NAME);
      deks.push(...(await makeDeks(c, 'token+ext')));
    });
    // External only.
    await run(null, { ext }, async (c) => {
      await assertDeks(c, deks, 'external only');
      deks.push(...(await makeDeks(c, 'ext')));
    });
    // External + a new soft key: drop the external entry.
    const soft2 = newHsmKey();
    await run(soft2, { ext }, async (c) => {
      await waitEntries(c, [EXT_NAME, 'hsm:minio:soft']);
      await c.removeHsm(EXT_NAME);
      deks.push(...(await makeDeks(c, 'ext+soft')));
    });
    await stop(external);
    // The new soft key alone opens everything written at every step.
    await run(soft2, {}, async (c) => {
      assert.deepEqual((await hsmLists(c)).entries, ['hsm:minio:soft']);
      await assertDeks(c, deks, 'soft again, at the end');
    });
    // The soft entry is the new key's now: the first soft key opens nothing any more.
    assert.match(await startUnopenable({ dir, hsmKey: soft1, port }, 'old soft key'), /hsm:minio:soft: the HSM key cannot unseal/);

    // The REK stayed the same all along (moving HSMs reseals it, never replaces it): learn it
    // from the last entry and check that no run logged it.
    const db = new Database(join(dir, SQLITE_FILE), { readonly: true });
    const get = (k: string) => (db.prepare('SELECT v FROM kv WHERE k = ?').get(k) as { v: Buffer }).v;
    const clusterId = (JSON.parse(get(CLUSTER_KEY).toString()) as { id: string }).id;
    const entry = get(REK_PREFIX + 'hsm:minio:soft');
    db.close();
    const soft = new SoftHsm(soft2);
    const rek = (await unsealEntry(soft, entry, clusterId)).rek;
    await soft.close();
    assertNowhere([rek], [dirname(dir), token.dir], logs);
  });
});
