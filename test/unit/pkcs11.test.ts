/**
 * Unit tests of the PKCS#11 HSM (src/hsm/pkcs11*.ts) against a real SoftHSM2: every test makes
 * its own token in a temporary directory (own softhsm2.conf, SOFTHSM2_CONF pointing at it) and
 * closes its HSMs, so that the module is finalized before the next test's token is used.
 *
 * Covered: seal/unseal round trips for each mechanism, AAD and header binding, golden vectors
 * (keys imported with known values must give the documented bytes), derivation, wrong PIN,
 * PIN sources, missing token / key, refused keys, session loss and re-open, serialization,
 * a hung module (timeout), a missing binding or module, and the HSM factory.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { HsmError } from '../../src/hsm/hsm.js';
import { Pkcs11Hsm, pkcs11HsmName, type Pkcs11HsmOptions } from '../../src/hsm/pkcs11.js';
import * as C from '../../src/hsm/pkcs11-api.js';
import {
  cmacDeriveBlocks,
  deriveMessage,
  gcmAad,
  macInput,
  parseBlob,
  MECH_AES_GCM,
  MECH_CBC_CMAC,
  MECH_CBC_HMAC,
} from '../../src/hsm/pkcs11-blob.js';
import { configuredHsms } from '../../src/hsm/configured.js';
import type { Config } from '../../src/config/config.js';
import { EMPTY_CONFIG, type Pkcs11HsmConfig } from '../../src/config/config.js';
import { SKIP_PKCS11, SOFTHSM_MODULE, SoftHsmToken, secretTemplate } from '../helpers/softhsm.js';
import { loadVectors, hex, utf8 } from '../helpers/vectors.js';
import { newHsmKey } from '../helpers/server.js';

/** The HSMs the composition root would build for this configuration and environment. */
function createHsms(
  config: Config,
  env: { hsmKey?: string; dev: boolean; configured: boolean; fresh: boolean },
  dir: string,
  log: { warn(msg: string): void },
) {
  const generate = env.dev || (env.fresh && !env.configured);
  const database = join(dir, 'minkms.db');
  return configuredHsms({ config, softKey: env.hsmKey, dir, database, generate, ephemeral: env.dev, warn: (m) => log.warn(m) }).map(
    (c) => c.hsm,
  );
}

interface VectorFile {
  aesKey: string;
  hmacKey: string;
  cmacKey: string;
  plaintext: string;
  aadUtf8: string;
  sealed: { name: string; mechanism: Pkcs11HsmConfig['mechanism']; derive: 'hmac' | 'cmac'; iv: string; blob: string }[];
  derived: { label: string; derive: 'hmac' | 'cmac'; key: string }[];
}
const V = loadVectors<VectorFile>('pkcs11-hsm.json');

async function rejection(p: Promise<unknown>, label: string): Promise<HsmError> {
  try {
    const v = await p;
    assert.fail(`${label}: got success (${Buffer.isBuffer(v) ? v.toString('hex') : String(v)}), want HsmError`);
  } catch (err) {
    if (!(err instanceof HsmError)) assert.fail(`${label}: got ${String(err)}, want HsmError`);
    return err;
  }
}

async function rejectsHsm(p: Promise<unknown>, permanent: boolean, message: RegExp, label: string): Promise<HsmError> {
  const err = await rejection(p, label);
  assert.equal(err.permanent, permanent, `${label}: got permanent=${err.permanent} (${err.message}), want ${permanent}`);
  assert.match(err.message, message, label);
  return err;
}

/** A fresh token; the HSMs opened through `open` are closed (and the token removed) afterwards. */
async function withToken(
  fn: (t: SoftHsmToken, open: (cfg: Pkcs11HsmConfig, opts?: Pkcs11HsmOptions) => Pkcs11Hsm) => Promise<void>,
): Promise<void> {
  const token = SoftHsmToken.create().use();
  const opened: Pkcs11Hsm[] = [];
  try {
    await fn(token, (cfg, opts) => {
      const h = new Pkcs11Hsm(cfg, opts);
      opened.push(h);
      return h;
    });
  } finally {
    for (const h of opened) await h.close();
    token.remove();
  }
}

const AAD = utf8('minkms rek v1|5b1c3c4e-2f0a-4d55-9a43-1f0e5c8f7a10|hsm:pkcs11:minkms-test/k');

describe('PKCS#11 blob format (pure)', () => {
  it('parses the vector blobs and refuses malformed ones', () => {
    for (const row of V.sealed) {
      const p = parseBlob(hex(row.blob));
      assert.ok(p, row.name);
      assert.equal(
        p.mech,
        { 'AES-256-GCM': MECH_AES_GCM, 'AES-256-CBC-PAD + HMAC-SHA256': MECH_CBC_HMAC, 'AES-256-CBC-PAD + AES-CMAC': MECH_CBC_CMAC }[
          row.name
        ],
      );
      assert.equal(p.iv.toString('hex'), row.iv, `${row.name}: IV`);
    }
    const gcm = hex(V.sealed[0]!.blob);
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['version only', Buffer.of(1)],
      ['version 2', Buffer.concat([Buffer.of(2), gcm.subarray(1)])],
      ['unknown mechanism', Buffer.concat([Buffer.of(1, 9), gcm.subarray(2)])],
      ['GCM without a full tag', gcm.subarray(0, 2 + 12 + 15)],
      ['CBC body not whole blocks', hex(V.sealed[1]!.blob).subarray(0, hex(V.sealed[1]!.blob).length - 1)],
    ];
    for (const [name, blob] of cases) assert.equal(parseBlob(blob), undefined, name);
  });

  it('builds the documented MAC and derivation inputs', () => {
    assert.equal(gcmAad(utf8('x')).toString('hex'), '010178');
    const mi = macInput(Buffer.of(1, 2), Buffer.alloc(16, 0xaa), Buffer.alloc(16, 0xbb), utf8('ad'));
    assert.equal(mi.subarray(0, 26).toString('utf8'), 'minkms pkcs11 seal mac v1\0');
    assert.equal(mi.subarray(26 + 2 + 16, 26 + 2 + 16 + 4).toString('hex'), '00000010', 'ciphertext length, big endian');
    assert.equal(deriveMessage('root-api-key').toString('utf8'), 'minkms pkcs11 derive v1:root-api-key');
    const [b1, b2] = cmacDeriveBlocks('l');
    assert.equal(b1.toString('hex'), '01' + deriveMessage('l').toString('hex') + '000100');
    assert.equal(b2.toString('hex'), '02' + deriveMessage('l').toString('hex') + '000100');
  });

  it('names the HSM after the configured token and key', () => {
    assert.equal(pkcs11HsmName({ token: { label: 'minkms' }, key: { label: 'root' } }), 'hsm:pkcs11:minkms/root');
    assert.equal(
      pkcs11HsmName({ token: { serial: '78b0a6b903f9dab3' }, key: { id: '0102' } }),
      'hsm:pkcs11:serial:78b0a6b903f9dab3/id:0102',
    );
    assert.equal(pkcs11HsmName({ token: { slot: 3 }, key: { label: 'k' } }), 'hsm:pkcs11:slot:3/k');
  });
});

describe('PKCS#11 HSM on SoftHSM2', { skip: SKIP_PKCS11 }, () => {
  it('uses the PKCS#11 constants of the binding', async () => {
    const b = (await import('pkcs11js' as string)) as { default: Record<string, number> };
    const lib = b.default;
    for (const name of Object.keys(C).filter((k) => /^CK[AOKMFU]_/.test(k))) {
      assert.equal((C as unknown as Record<string, number>)[name], lib[name], name);
    }
  });

  it('seals and unseals inside the token (AES-256-GCM), bound to the AAD and the header', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const hsm = open(token.config('k'));
      assert.equal(hsm.name, 'hsm:pkcs11:minkms-test/k');
      const rek = randomBytes(32);
      const blob = await hsm.seal(rek, AAD);
      assert.equal(blob[0], 1, 'format version');
      assert.equal(blob[1], MECH_AES_GCM, 'mechanism');
      assert.equal(blob.length, 2 + 12 + 32 + 16);
      assert.equal(blob.indexOf(rek), -1, 'the REK is not in the blob');
      assert.ok((await hsm.unseal(blob, AAD)).equals(rek));
      assert.ok(!(await hsm.seal(rek, AAD)).equals(blob), 'a fresh IV each time');

      await rejectsHsm(
        hsm.unseal(blob, utf8('minkms rek v1|another-cluster|hsm:pkcs11:minkms-test/k')),
        true,
        /cannot open this sealed entry/,
        'other AAD',
      );
      for (const at of [1, 2, 14, blob.length - 1]) {
        const bad = Buffer.from(blob);
        bad[at]! ^= at === 1 ? 0x03 : 0x01; // byte 1 becomes mechanism 0x02
        const err = await rejection(hsm.unseal(bad, AAD), `flipped byte ${at}`);
        assert.equal(err.permanent, true, `flipped byte ${at}: ${err.message}`);
      }
      for (const [name, bad] of [
        ['truncated', blob.subarray(0, 20)],
        ['empty', Buffer.alloc(0)],
        ['version 2', Buffer.concat([Buffer.of(2), blob.subarray(1)])],
      ] as const) {
        await rejectsHsm(hsm.unseal(bad, AAD), true, /unsupported or damaged sealed entry/, name);
      }
      // The session survives permanent failures.
      assert.ok((await hsm.unseal(blob, AAD)).equals(rek));
    }));

  it('falls back to AES-CBC-PAD + HMAC-SHA256, or + AES-CMAC where the token has no HMAC key; any configuration opens any blob of its key', () =>
    withToken(async (token, open) => {
      assert.equal(token.initKey('h', 'hmac').derive, 'hmac');
      assert.equal(token.initKey('c', 'cmac').derive, 'cmac');
      for (const [label, mech] of [
        ['h', MECH_CBC_HMAC],
        ['c', MECH_CBC_CMAC],
      ] as const) {
        const cbc = open(token.config(label, { mechanism: 'aes-cbc-pad-hmac' }));
        const auto = open(token.config(label));
        const rek = randomBytes(32);
        const blob = await cbc.seal(rek, AAD);
        assert.equal(blob[1], mech, `${label}: mechanism`);
        assert.ok((await cbc.unseal(blob, AAD)).equals(rek), `${label}: round trip`);
        assert.ok((await auto.unseal(blob, AAD)).equals(rek), `${label}: a GCM-configured HSM opens a CBC blob`);
        assert.ok((await cbc.unseal(await auto.seal(rek, AAD), AAD)).equals(rek), `${label}: and the other way`);
        await rejectsHsm(cbc.unseal(blob, utf8('other')), true, /cannot open/, `${label}: other AAD`);
        const bad = Buffer.from(blob);
        bad[bad.length - 1]! ^= 1;
        await rejectsHsm(cbc.unseal(bad, AAD), true, /cannot open/, `${label}: flipped tag`);
        const relabelled = Buffer.from(blob);
        relabelled[1] = mech === MECH_CBC_HMAC ? MECH_CBC_CMAC : MECH_CBC_HMAC;
        await rejection(cbc.unseal(relabelled, AAD), `${label}: relabelled mechanism`);
        assert.match(
          (await cbc.check()).seal,
          mech === MECH_CBC_HMAC ? /CBC-PAD \+ HMAC-SHA256/ : /CBC-PAD \+ AES-CMAC/,
          `${label}: check`,
        );
        assert.equal((await auto.check()).seal, 'AES-256-GCM', `${label}: check (auto)`);
        const d = await cbc.deriveKey('root-api-key');
        assert.equal(d.length, 32);
        assert.ok(d.equals(await auto.deriveKey('root-api-key')), `${label}: derivation does not depend on the seal mechanism`);
      }
    }));

  it('golden vectors: keys imported with known values give the documented blobs and derived keys', () =>
    withToken(async (token, open) => {
      const aes = (label: string) => secretTemplate(label, 'aes', hex(V.aesKey), { encrypt: true });
      token.createObjects([
        aes('vec'),
        secretTemplate('vec', 'generic', hex(V.hmacKey), { sign: true }),
        aes('vec-cmac'),
        secretTemplate('vec-cmac', 'aes', hex(V.cmacKey), { sign: true }),
      ]);
      const warnings: string[] = [];
      const aad = utf8(V.aadUtf8);
      for (const row of V.sealed) {
        const label = row.derive === 'hmac' ? 'vec' : 'vec-cmac';
        const hsm = open(token.config(label, { mechanism: row.mechanism }), { fixedIv: hex(row.iv), warn: (w) => warnings.push(w) });
        const blob = await hsm.seal(hex(V.plaintext), aad);
        assert.equal(blob.toString('hex'), row.blob, row.name);
        assert.equal((await hsm.unseal(hex(row.blob), aad)).toString('hex'), V.plaintext, `${row.name}: opens`);
      }
      for (const row of V.derived) {
        const hsm = open(token.config(row.derive === 'hmac' ? 'vec' : 'vec-cmac'));
        assert.equal((await hsm.deriveKey(row.label)).toString('hex'), row.key, `derive ${row.derive} '${row.label}'`);
      }
      assert.ok(
        warnings.some((w) => /was imported or was once extractable/.test(w)),
        `an imported key is reported: ${JSON.stringify(warnings)}`,
      );
    }));

  it('derives deterministically: same key and label, same 32 bytes, across sessions; other labels differ', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const a = open(token.config('k'));
      const k1 = await a.deriveKey('root-api-key');
      assert.equal(k1.length, 32);
      assert.ok(k1.equals(await a.deriveKey('root-api-key')));
      assert.ok(!k1.equals(await a.deriveKey('root-api-key2')));
      assert.ok(!k1.equals(await a.deriveKey('')));
      await a.close();
      const b = open(token.config('k')); // a new worker, a new C_Initialize and session
      assert.ok(k1.equals(await b.deriveKey('root-api-key')));
      token.initKey('other');
      assert.ok(!k1.equals(await open(token.config('other')).deriveKey('root-api-key')), 'another key derives other bytes');
    }));

  it('wrong PIN: a permanent error without the PIN; the refused PIN is not presented again; a corrected PIN file is used', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const file = join(token.dir, 'pin');
      const wrong = 'wrong-' + randomBytes(4).toString('hex');
      writeFileSync(file, wrong + '\n', { mode: 0o600 });
      const hsm = open(token.config('k', { pin: { file } }));
      const e1 = await rejectsHsm(hsm.deriveKey('x'), true, /refused the user PIN \(CKR_PIN_INCORRECT\)/, 'first try');
      const e2 = await rejectsHsm(hsm.seal(randomBytes(32), AAD), true, /not presented again/, 'second try');
      for (const e of [e1, e2]) {
        assert.ok(!e.message.includes(wrong) && !e.message.includes(token.pin), `the PIN is not in: ${e.message}`);
        assert.ok(!String(e.stack).includes(wrong), 'nor in the stack');
      }
      writeFileSync(file, token.pin + '\n');
      assert.equal((await hsm.deriveKey('x')).length, 32, 'the corrected PIN file is read at the next login');
    }));

  it('PIN sources: an environment variable; an unset variable, a missing or empty file are permanent errors', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const name = 'MINKMS_TEST_PIN_' + randomBytes(3).toString('hex').toUpperCase();
      process.env[name] = token.pin;
      try {
        assert.equal((await open(token.config('k', { pin: { env: name } })).deriveKey('x')).length, 32);
      } finally {
        delete process.env[name];
      }
      await rejectsHsm(
        open(token.config('k', { pin: { env: name } })).deriveKey('x'),
        true,
        new RegExp(`PIN variable ${name} .* is not set`),
        'unset',
      );
      await rejectsHsm(
        open(token.config('k', { pin: { file: join(token.dir, 'nope') } })).deriveKey('x'),
        true,
        /cannot read the PIN file .*ENOENT/,
        'missing',
      );
      const empty = join(token.dir, 'empty');
      writeFileSync(empty, '\n');
      await rejectsHsm(open(token.config('k', { pin: { file: empty } })).deriveKey('x'), true, /PIN file .* is empty/, 'empty');
    }));

  it('missing token: transient (the node stays sealed and retries); the same HSM works once the token is back', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      token.takeAway();
      const hsm = open(token.config('k'));
      await rejectsHsm(hsm.seal(randomBytes(32), AAD), false, /no token 'minkms-test' is present/, 'token away');
      await rejectsHsm(hsm.health(), false, /no token/, 'health');
      token.bringBack();
      const rek = randomBytes(32);
      assert.ok((await hsm.unseal(await hsm.seal(rek, AAD), AAD)).equals(rek));
      await hsm.health();
    }));

  it('missing key: a permanent error that names the key and how to create one', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      await rejectsHsm(
        open(token.config('nope')).seal(randomBytes(32), AAD),
        true,
        /key 'nope' on the token 'minkms-test' does not exist.*minkms hsm pkcs11 init/,
        'missing',
      );
      await rejectsHsm(
        open(token.config('nope', { key: { id: '99' } })).deriveKey('x'),
        true,
        /key with id 99 .* does not exist/,
        'missing id',
      );
      // A key pair found by its CKA_ID works like one found by its label.
      const { id } = token.initKey('by-id');
      assert.equal((await open(token.config('', { key: { id } })).deriveKey('x')).length, 32);
    }));

  it('refuses keys that could leave the device or are not AES-256', () =>
    withToken(async (token, open) => {
      const v = () => randomBytes(32);
      token.createObjects([
        secretTemplate('extractable', 'aes', v(), { encrypt: true, extractable: true }),
        secretTemplate('extractable', 'generic', v(), { sign: true }),
        secretTemplate('readable', 'aes', v(), { encrypt: true, sensitive: false }),
        secretTemplate('readable', 'generic', v(), { sign: true }),
        secretTemplate('derive-extractable', 'aes', v(), { encrypt: true }),
        secretTemplate('derive-extractable', 'generic', v(), { sign: true, extractable: true }),
        secretTemplate('aes128', 'aes', randomBytes(16), { encrypt: true }),
        secretTemplate('aes128', 'generic', v(), { sign: true }),
        secretTemplate('no-derive', 'aes', v(), { encrypt: true }),
      ]);
      const cases: [string, RegExp][] = [
        ['extractable', /refusing the AES key .* extractable \(CKA_EXTRACTABLE=true\)/],
        ['readable', /refusing the AES key .* not sensitive \(CKA_SENSITIVE=false\)/],
        ['derive-extractable', /refusing the derivation key .* extractable/],
        ['aes128', /AES-128; AES-256 is required/],
        ['no-derive', /has no derivation key/],
      ];
      for (const [label, message] of cases) {
        const hsm = open(token.config(label));
        await rejectsHsm(hsm.seal(randomBytes(32), AAD), true, message, `${label}: seal`);
        await rejectsHsm(hsm.deriveKey('x'), true, message, `${label}: derive`);
      }
    }));

  it('re-opens a lost session without a restart: closed session, finalized module, token removed and back', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const hsm = open(token.config('k'));
      const rek = randomBytes(32);
      const blob = await hsm.seal(rek, AAD);
      const derived = await hsm.deriveKey('x');

      await hsm.testHooks.dropSession(); // CKR_SESSION_HANDLE_INVALID at the next call
      assert.ok((await hsm.unseal(blob, AAD)).equals(rek), 'after the session was closed');
      await hsm.testHooks.finalizeModule(); // CKR_CRYPTOKI_NOT_INITIALIZED at the next call
      assert.ok((await hsm.deriveKey('x')).equals(derived), 'after the module was finalized');

      token.takeAway(); // the device goes away while a session is open
      await rejectsHsm(hsm.unseal(blob, AAD), false, /CKR_|no token/, 'token away');
      await rejectsHsm(hsm.deriveKey('x'), false, /no token/, 'still away');
      token.bringBack();
      assert.ok((await hsm.unseal(blob, AAD)).equals(rek), 'token back');
      assert.ok((await hsm.deriveKey('x')).equals(derived));
    }));

  it('serializes concurrent calls on one session', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      const hsm = open(token.config('k'));
      const want = await hsm.deriveKey('d');
      await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          if (i % 3 === 0) return assert.ok((await hsm.deriveKey('d')).equals(want), `derive ${i}`);
          const rek = randomBytes(32);
          const aad = utf8(`aad ${i}`);
          assert.ok((await hsm.unseal(await hsm.seal(rek, aad), aad)).equals(rek), `round trip ${i}`);
        }),
      );
    }));

  it('a module that does not answer fails the call (transient) and the next call gets a fresh worker', () =>
    withToken(async (token, open) => {
      token.initKey('k');
      // A patient HSM warms the worker up (loading and logging in take long on a busy machine);
      // an impatient one on the same module worker then meets the hang.
      const patient = open(token.config('k', { timeout: 60_000 }));
      const impatient = open(token.config('k', { timeout: 1000 }));
      const want = await patient.deriveKey('x');
      const t0 = Date.now();
      await rejectsHsm(impatient.testHooks.block(15_000), false, /did not answer within 1 s/, 'hung module');
      assert.ok(Date.now() - t0 < 10_000, 'the caller is not held for the hang');
      assert.ok((await patient.deriveKey('x')).equals(want), 'the next call works, on a fresh worker');
    }));

  it('configured but not installed: the binding or the module missing are permanent errors that say what to install', async () => {
    const token = SoftHsmToken.create().use();
    const hsms = [
      new Pkcs11Hsm(token.config('k'), { binding: 'pkcs11js-missing-for-test' }),
      new Pkcs11Hsm(token.config('k', { module: '/nonexistent/libvendor-pkcs11.so' })),
    ];
    try {
      await rejectsHsm(
        hsms[0]!.seal(randomBytes(32), AAD),
        true,
        /binding 'pkcs11js-missing-for-test' is not installed.*npm install pkcs11js@2\.1\.7/,
        'binding',
      );
      await rejectsHsm(hsms[1]!.deriveKey('x'), true, /cannot load the PKCS#11 module \/nonexistent\/libvendor-pkcs11\.so/, 'module');
    } finally {
      for (const h of hsms) await h.close();
      token.remove();
    }
  });

  it('an HSM that is never closed does not keep its process alive (the node exits after a failed start)', async () => {
    const token = SoftHsmToken.create();
    token.initKey('k');
    const script = `
      import { Pkcs11Hsm } from ${JSON.stringify(new URL('../../src/hsm/pkcs11.js', import.meta.url).href)};
      import { Secret } from ${JSON.stringify(new URL('../../src/config/config.js', import.meta.url).href)};
      const hsm = new Pkcs11Hsm({ module: ${JSON.stringify(SOFTHSM_MODULE)}, token: { label: ${JSON.stringify(token.label)} }, key: { label: 'k' },
        pin: { value: new Secret(process.env.PIN) }, mechanism: 'auto', timeout: 10000 });
      console.log((await hsm.deriveKey('x')).length);`;
    try {
      const t0 = Date.now();
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, ...token.env, PIN: token.pin },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      assert.equal(code, 0, `the process ended by itself (after ${Date.now() - t0} ms)`);
      assert.equal(out.trim(), '32');
    } finally {
      token.remove();
    }
  });

  it('createHsms: soft, then PKCS#11, then the external KMS; building them touches no device', async () => {
    const config = {
      ...EMPTY_CONFIG,
      hsm: {
        keepUnconfiguredEntries: false,
        pkcs11: baseConfig('/nonexistent/lib.so'),
        minkms: {
          server: ['127.0.0.1:1'],
          enclave: 'e',
          key: 'k',
          apiKey: 'k1:J8uKqnK7mGawGvOXqUbDqctpbZCjWzfeBkRb27L0FKU',
          insecure: true,
        },
      },
    };
    const warnings: string[] = [];
    const hsms = createHsms(config, { hsmKey: newHsmKey(), dev: false, configured: true, fresh: false }, '/nonexistent-dir', {
      warn: (m) => warnings.push(m),
    });
    try {
      assert.deepEqual(
        hsms.map((h) => h.name),
        ['hsm:minio:soft', 'hsm:pkcs11:t/k', 'hsm:minio:minkms:e/k'],
      );
      assert.deepEqual(warnings, []);
    } finally {
      for (const h of hsms) await h.close();
    }
    assert.throws(
      () => createHsms(EMPTY_CONFIG, { dev: false, configured: true, fresh: true }, '/nonexistent-dir', { warn: () => {} }),
      /no HSM provided .*hsm\.pkcs11/,
    );
  });
});

function baseConfig(module = SOFTHSM_MODULE!): Pkcs11HsmConfig {
  return { module, token: { label: 't' }, pin: { env: 'UNUSED' }, key: { label: 'k' }, mechanism: 'auto', timeout: 1000 };
}
