/**
 * Least-privilege operations with the real binary: `minkms identity --cert --key` writes the
 * client certificate and key that a scraper or curl needs (and they work against a server), and
 * the CLI trusts the operating system's CA store, ~/.minkms/certs/CAs and `--ca`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { MINKMS_BIN, newHsmKey, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { parseApiKey } from '../../src/identity/api-key.js';
import { identityOfCertificate } from '../../src/identity/identity.js';
import { createCertificateAuthority, issueCertificate } from '../../src/identity/client-cert.js';
import { trustedCAs } from '../../src/cli/common.js';
import { debianTool } from '../helpers/tools.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

const dirs: string[] = [];
function temp(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}
after(() => dirs.forEach(removeDir));

/** Runs `minkms args…` with exactly `env` (plus PATH); never rejects. */
function minkms(args: readonly string[], env: Record<string, string>): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** GET `path` over mTLS with the given PEM files; resolves with status and body. */
function get(url: string, path: string, tls: { cert?: string; key?: string; ca: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { ...tls, method: 'GET', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('minkms identity --cert --key', () => {
  let server: TestServer;
  let work: string;
  const hsmKey = newHsmKey();
  before(async () => {
    work = temp('minkms-lp-');
    server = await startServer({ dir: join(work, 'data'), hsmKey });
  });
  after(async () => server?.stop());

  test('writes the API key client certificate (0644) and private key (0600) the CLI would use', async () => {
    const key = JSON.parse(spawnSync(process.execPath, [MINKMS_BIN, 'identity', '--json'], { encoding: 'utf8' }).stdout) as {
      api_key: string;
      identity: string;
    };
    const cert = join(work, 'scraper.crt');
    const pkey = join(work, 'scraper.key');
    const r = await minkms(['identity', '--cert', cert, '--key', pkey, key.api_key], { HOME: work });
    assert.equal(r.code, 0, show(r));
    assert.match(
      r.stdout,
      new RegExp(
        `^Identity +${key.identity}\\nCertificate +${cert} \\(valid until \\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\)\\nPrivate key +${pkey} \\(mode 0600\\)\\n$`,
      ),
    );
    assert.equal(statSync(pkey).mode & 0o777, 0o600);
    assert.equal(statSync(cert).mode & 0o777, 0o644);
    const x509 = new X509Certificate(readFileSync(cert));
    assert.equal(identityOfCertificate(x509), key.identity);
    assert.ok(x509.checkPrivateKey(createPrivateKey(readFileSync(pkey))), 'the key belongs to the certificate');
    assert.ok(x509.verify(x509.publicKey), 'self-signed with the API key, as the CLI derives it');
    assert.equal(x509.subject, `CN=${key.identity}`);
    assert.equal(
      createPrivateKey(readFileSync(pkey)).export({ format: 'der', type: 'pkcs8' }).toString('hex'),
      parseApiKey(key.api_key).privateKey.export({ format: 'der', type: 'pkcs8' }).toString('hex'),
    );

    // Again, from MINIO_KMS_API_KEY (no key in the process list), with --json; replaces the files.
    const again = await minkms(['identity', '--cert', cert, '--key', pkey, '--json'], { HOME: work, MINIO_KMS_API_KEY: key.api_key });
    assert.equal(again.code, 0, show(again));
    const out = JSON.parse(again.stdout) as Record<string, string>;
    assert.deepEqual(Object.keys(out), ['identity', 'cert', 'key', 'not_after']);
    assert.equal(out.identity, key.identity);
    assert.ok(!again.stdout.includes(key.api_key), 'the API key is not printed');
    assert.equal(statSync(pkey).mode & 0o777, 0o600);
  });

  test('usage errors: one file only, no key, a certificate as input, an unwritable path', async () => {
    const cases: Array<[string[], Record<string, string>, RegExp, number]> = [
      [['identity', '--cert', join(work, 'a.crt'), 'k1:x'], {}, /^minkms: --cert and --key go together \(give both files/, 2],
      [['identity', '--cert', join(work, 'a.crt'), '--key', join(work, 'a.key')], {}, /^minkms: --cert\/--key need an API key/, 2],
      [
        ['identity', '--cert', join(work, 'b.crt'), '--key', join(work, 'b.key'), server.caFile],
        {},
        /^minkms: --cert\/--key need an API key/,
        2,
      ],
      [
        ['identity', '--cert', join(work, 'no/such/dir/c.crt'), '--key', join(work, 'no/such/dir/c.key'), hsmKey],
        {},
        /^minkms: cannot write .*\/no\/such\/dir\/c\.key: ENOENT \(check that the directory exists and is writable\)$/,
        1,
      ],
    ];
    await Promise.all(
      cases.map(async ([args, env, want, code]) => {
        const r = await minkms(args, { HOME: work, ...env });
        assert.equal(r.code, code, `${args.join(' ')}: ${show(r)}`);
        assert.match(r.stderr.trim(), want, args.join(' '));
        assert.equal(r.stderr.trim().split('\n').length, 1);
      }),
    );
  });

  test('the files work for a scrape: the root key (from the HSM key) reads /v1/health/metrics over mTLS; curl too', async () => {
    const cert = join(work, 'root.crt');
    const pkey = join(work, 'root.key');
    const r = await minkms(['identity', '--cert', cert, '--key', pkey, hsmKey], { HOME: work });
    assert.equal(r.code, 0, show(r));
    const ca = readFileSync(server.caFile, 'utf8');
    const scrape = await get(server.url, '/v1/health/metrics', { cert: readFileSync(cert, 'utf8'), key: readFileSync(pkey, 'utf8'), ca });
    assert.equal(scrape.status, 200, scrape.body);
    assert.match(scrape.body, /^# HELP /m);
    const anonymous = await get(server.url, '/v1/health/metrics', { ca });
    assert.equal(anonymous.status, 403);

    const curl = spawnSync(
      await debianTool('curl', 'curl'),
      ['-sS', '--fail', '--cacert', server.caFile, '--cert', cert, '--key', pkey, `${server.url}/v1/health/metrics`],
      { encoding: 'utf8', timeout: 20_000 },
    );
    assert.equal(curl.status, 0, curl.stderr);
    assert.match(curl.stdout, /^minkms_http_requests_total/m);
  });
});

describe('CA trust: the system store, ~/.minkms/certs/CAs, --ca', () => {
  let server: TestServer;
  let work: string;
  let caFile: string;
  before(async () => {
    work = temp('minkms-trust-');
    const ca = createCertificateAuthority('minkms test CA');
    const leaf = issueCertificate(ca, { commonName: 'localhost', hosts: ['localhost', '127.0.0.1'], serverAuth: true, days: 2 });
    caFile = join(work, 'ca.crt');
    writeFileSync(caFile, ca.cert);
    writeFileSync(join(work, 'server.crt'), leaf.cert);
    writeFileSync(join(work, 'server.key'), leaf.key, { mode: 0o600 });
    server = await startServer({
      dir: join(work, 'data'),
      config: `version: v1\ntls:\n  certs:\n    - key: ${join(work, 'server.key')}\n      cert: ${join(work, 'server.crt')}\n`,
    });
  });
  after(async () => server?.stop());

  test('a CA-issued server certificate is verified through each source of trust', async () => {
    const home = join(work, 'home');
    mkdirSync(home, { recursive: true });
    const base = { HOME: home, MINIO_KMS_SERVER: server.host, MINIO_KMS_API_KEY: server.apiKey };
    // An empty system bundle: nothing but Node's Mozilla roots, which do not know this CA.
    const emptyBundle = join(work, 'empty.pem');
    writeFileSync(emptyBundle, '');
    const untrusted = await minkms(['ls-enclave'], { ...base, SSL_CERT_FILE: emptyBundle });
    assert.equal(untrusted.code, 1, show(untrusted));
    assert.match(untrusted.stderr, /^minkms: cannot verify the TLS certificate of .*\(trust the server's CA with --ca FILE/);

    const ways: Array<[string, string[], Record<string, string>]> = [
      ['--ca FILE', ['--ca', caFile], { SSL_CERT_FILE: emptyBundle }],
      ['--ca DIR', ['--ca', work], { SSL_CERT_FILE: emptyBundle }],
      ['SSL_CERT_FILE (the system store)', [], { SSL_CERT_FILE: caFile }],
      ['NODE_EXTRA_CA_CERTS', [], { SSL_CERT_FILE: emptyBundle, NODE_EXTRA_CA_CERTS: caFile }],
    ];
    const results = await Promise.all(ways.map(([, args, env]) => minkms(['ls-enclave', '--json', ...args], { ...base, ...env })));
    results.forEach((r, i) => assert.equal(r.code, 0, `${ways[i]![0]}: ${show(r)}`));

    mkdirSync(join(home, '.minkms/certs/CAs'), { recursive: true });
    writeFileSync(join(home, '.minkms/certs/CAs/test-ca.pem'), readFileSync(caFile));
    const fromHome = await minkms(['ls-enclave'], { ...base, SSL_CERT_FILE: emptyBundle });
    assert.equal(fromHome.code, 0, show(fromHome));

    const missing = await minkms(['ls-enclave', '--ca', join(work, 'nope.pem')], base);
    assert.equal(missing.code, 2, show(missing));
    assert.match(missing.stderr, /^minkms: cannot read --ca .*nope\.pem: ENOENT \(give a PEM file or a directory of PEM files\)\n$/);
    const notPem = await minkms(['ls-enclave', '--ca', emptyBundle], base);
    assert.equal(notPem.code, 2, show(notPem));
    assert.match(notPem.stderr, /holds no PEM certificate/);
  });

  test('trustedCAs: Mozilla roots + the first system bundle that exists + the CA directory, without duplicates', () => {
    const ca = readFileSync(caFile, 'utf8');
    const bundle = join(work, 'bundle.pem');
    writeFileSync(bundle, `${ca}\n${ca}`);
    const none = join(work, 'none');
    const list = trustedCAs({}, {}, none, [join(work, 'missing.pem'), bundle]);
    const base = trustedCAs({}, {}, none, []);
    assert.equal(list.length, base.length + 1, 'the CA once, though the bundle holds it twice');
    assert.ok(list.some((p) => p.trim() === ca.trim()));
    // SSL_CERT_FILE replaces the bundle search, as for OpenSSL and Go.
    assert.equal(trustedCAs({}, { SSL_CERT_FILE: join(work, 'empty.pem') }, none, [bundle]).length, base.length);
  });
});
