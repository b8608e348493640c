/**
 * The set-up commands of docs/hsm.md, run as an operator would: `softhsm2-util` makes a token,
 * `minkms hsm pkcs11 init` makes the key and prints the configuration, that configuration
 * starts a server, `minkms hsm pkcs11 check` verifies it — and a key made with OpenSC's
 * `pkcs11-tool` instead works too. Real processes, a real SoftHSM2 token per test.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { SKIP_PKCS11, SOFTHSM_MODULE, SoftHsmToken } from '../helpers/softhsm.js';

const tokens: SoftHsmToken[] = [];
const dirs: string[] = [];
const running = new Set<TestServer>();
after(async () => {
  for (const s of running) await s.kill();
  tokens.forEach((t) => t.remove());
  dirs.forEach(removeDir);
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code as number) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const minkms = (args: string[], env: Record<string, string>) => run(process.execPath, [MINKMS_BIN, ...args], env);

describe('PKCS#11 set-up commands (docs/hsm.md)', { skip: SKIP_PKCS11 }, () => {
  test('init makes the key and prints a configuration that a server starts with; check verifies it; mistakes are one clear line', async () => {
    const token = SoftHsmToken.create('minkms');
    tokens.push(token);
    const env = { ...token.env, MINKMS_PKCS11_PIN: token.pin };
    const init = await minkms(['hsm', 'pkcs11', 'init', '--module', SOFTHSM_MODULE!, '--token', 'minkms', '--label', 'minkms-root'], env);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /Created key 'minkms-root' \(id [0-9a-f]{16}\) on token 'minkms'/);
    assert.match(init.stdout, /HSM\s+hsm:pkcs11:minkms\/minkms-root/);
    assert.match(init.stdout, /Seal\s+AES-256-GCM/);
    assert.match(init.stdout, /Derive\s+HMAC-SHA256/);
    const snippet = init.stdout.slice(init.stdout.indexOf('hsm:\n'));
    assert.match(snippet, /pin: \{ env: MINKMS_PKCS11_PIN \}/, 'the PIN source, never the PIN');
    assert.ok(!init.stdout.includes(token.pin) && !init.stderr.includes(token.pin));

    // The printed configuration is what the server needs.
    const dir = join(tempDir('minkms-p11-cli-'), 'data');
    dirs.push(join(dir, '..'));
    const server = await startServer({ dir, hsmKey: null, config: `version: v1\n${snippet}`, env, timeoutMs: 30_000 });
    running.add(server);
    assert.match(server.output(), /HSM\s+hsm:pkcs11:minkms\/minkms-root\n/);
    await server.stop();
    running.delete(server);

    const configFile = join(dir, '..', 'check.yaml');
    writeFileSync(configFile, `version: v1\n${snippet}`);
    const check = await minkms(['hsm', 'pkcs11', 'check', '--config', configFile, '--json'], env);
    assert.equal(check.code, 0, check.stderr);
    const info = JSON.parse(check.stdout) as { name: string; seal: string; token: { label: string } };
    assert.equal(info.name, 'hsm:pkcs11:minkms/minkms-root');
    assert.equal(info.seal, 'AES-256-GCM');
    assert.equal(info.token.label, 'minkms');

    const pinFile = join(dir, '..', 'wrong.pin');
    writeFileSync(pinFile, 'not-the-pin\n');
    const cases: [string, string[], RegExp][] = [
      ['init twice', ['init', '--config', configFile], /already has a secret key with label 'minkms-root'/],
      [
        'wrong PIN',
        ['check', '--config', configFile, '--pin-file', pinFile],
        /refused the user PIN \(CKR_PIN_INCORRECT\) \(check the PIN source/,
      ],
      [
        'no such token',
        ['check', '--config', configFile, '--token', 'other'],
        /no token 'other' is present \(initialized tokens: 'minkms'\)/,
      ],
      ['no such key', ['check', '--config', configFile, '--label', 'nope'], /key 'nope' on the token 'minkms' does not exist/],
      [
        'no module',
        ['check', '--config', configFile, '--module', '/nonexistent/vendor.so'],
        /cannot load the PKCS#11 module \/nonexistent\/vendor\.so/,
      ],
    ];
    for (const [name, args, message] of cases) {
      const r = await minkms(['hsm', 'pkcs11', ...args], env);
      assert.equal(r.code, 1, `${name}: exit code (${r.stderr})`);
      assert.match(r.stderr, /^minkms: /, name);
      assert.match(r.stderr, message, name);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
      assert.ok(!r.stderr.includes(token.pin) && !r.stderr.includes('not-the-pin'), `${name}: no PIN`);
    }
    const usage = await minkms(['hsm', 'pkcs11', 'check', '--module', SOFTHSM_MODULE!, '--label', 'x'], env);
    assert.equal(usage.code, 2, 'no token given: a usage error');
    assert.match(usage.stderr, /no token given/);
  });

  test('a key pair made with pkcs11-tool instead works too', async () => {
    const token = SoftHsmToken.create('minkms');
    tokens.push(token);
    const env = { ...token.env, MINKMS_PKCS11_PIN: token.pin };
    const tool = (keyType: string, usage: string) =>
      run(
        'pkcs11-tool',
        [
          '--module',
          SOFTHSM_MODULE!,
          '--token-label',
          'minkms',
          '--login',
          '--pin',
          token.pin,
          '--keygen',
          '--key-type',
          keyType,
          '--label',
          'minkms-root',
          '--id',
          '6d696e6b6d73',
          '--sensitive',
          '--private',
          usage,
        ],
        token.env,
      );
    for (const [type, usage] of [
      ['AES:32', '--usage-decrypt'],
      ['GENERIC:32', '--usage-sign'],
    ]) {
      const r = await tool(type!, usage!);
      assert.equal(r.code, 0, `pkcs11-tool ${type}: ${r.stderr}`);
    }
    for (const key of [
      ['--label', 'minkms-root'],
      ['--id', '6d696e6b6d73'],
    ]) {
      const check = await minkms(['hsm', 'pkcs11', 'check', '--module', SOFTHSM_MODULE!, '--token', 'minkms', ...key], env);
      assert.equal(check.code, 0, `${key.join(' ')}: ${check.stderr}`);
      assert.match(check.stdout, /The key is usable/);
    }
  });
});
