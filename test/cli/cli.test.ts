/**
 * The `minkms` client commands, black-box: the real built binary (dist/src/cli/main.js) is
 * spawned against a real server process. Covers every command in human and `--json` form, the
 * exit codes (0 success, 1 failure, 2 usage), the seed procedure's commands verbatim, error
 * messages (permission, unreachable server, TLS), `env` and shell completion.
 *
 * Spawning node costs ~150 ms, so independent invocations run concurrently.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { generateApiKey } from '../../src/identity/api-key.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  /** Extra/overriding environment variables; `undefined` values remove a variable. */
  env?: Record<string, string | undefined>;
  input?: string;
}

let server: TestServer;
let home: string;
let work: string;
/** Environment of every invocation: the test server, the root API key, the CA in $HOME. */
let baseEnv: Record<string, string>;

/** Runs `minkms args…`; never rejects. */
function minkms(args: readonly string[], opts: RunOptions = {}): Promise<Result> {
  const env: Record<string, string> = { ...baseEnv };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

const show = (r: Result) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** Runs and asserts exit code 0 and an empty stderr; returns stdout. */
async function ok(args: readonly string[], opts?: RunOptions): Promise<string> {
  const r = await minkms(args, opts);
  assert.equal(r.code, 0, `minkms ${args.join(' ')}: ${show(r)}`);
  assert.equal(r.stderr, '', `minkms ${args.join(' ')}: ${show(r)}`);
  return r.stdout;
}

/** Runs with --json and parses stdout. */
async function json(args: readonly string[], opts?: RunOptions): Promise<any> {
  const out = await ok([...args, '--json'], opts);
  try {
    return JSON.parse(out);
  } catch {
    assert.fail(`minkms ${args.join(' ')} --json printed no JSON document: ${out}`);
  }
}

/**
 * Runs and asserts a failure: the exit code, and exactly one stderr line of the form
 * `minkms: what (hint)` matching `pattern`; stdout empty.
 */
async function fails(args: readonly string[], code: 1 | 2, pattern: RegExp | string, opts?: RunOptions): Promise<string> {
  const r = await minkms(args, opts);
  const label = `minkms ${args.join(' ')}: ${show(r)}`;
  assert.equal(r.code, code, label);
  assert.equal(r.stdout, '', label);
  assert.match(r.stderr, /^minkms: [^\n]+ \([^\n]+\)\n$/, label);
  if (typeof pattern === 'string') assert.ok(r.stderr.includes(pattern), label);
  else assert.match(r.stderr, pattern, label);
  return r.stderr;
}

function utf8(b: Buffer): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return undefined;
  }
}

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

/** A TCP port nobody listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

before(async () => {
  server = await startServer();
  home = tempDir('minkms-cli-home-');
  work = tempDir('minkms-cli-work-');
  mkdirSync(join(home, '.minkms', 'certs', 'CAs'), { recursive: true });
  writeFileSync(join(home, '.minkms', 'certs', 'CAs', 'test-server.pem'), server.caPem);
  baseEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('MINIO_KMS_') && k !== 'NO_COLOR') baseEnv[k] = v;
  }
  Object.assign(baseEnv, { HOME: home, MINIO_KMS_SERVER: server.url, MINIO_KMS_API_KEY: server.apiKey });
});

after(async () => {
  await server?.stop();
  if (server) removeDir(join(server.dir, '..'));
  if (home) removeDir(home);
  if (work) removeDir(work);
});

describe('usage', () => {
  test('help lists every command; each command has a description, options and examples', async () => {
    const root = await ok(['--help']);
    const commands = [
      'server',
      'identity',
      'env',
      'completion',
      'stat',
      'ls',
      'add-hsm',
      'rm-hsm',
      'add-enclave',
      'rm-enclave',
      'ls-enclave',
      'stat-enclave',
      'add-key',
      'rm-key',
      'ls-key',
      'stat-key',
      'keygen',
      'encrypt',
      'decrypt',
      'import-kes',
      'add-policy',
      'get-policy',
      'stat-policy',
      'set-policy',
      'rm-policy',
      'ls-policy',
      'add-identity',
      'rm-identity',
      'ls-identity',
      'get-identity',
      'profile',
      'restart',
    ];
    for (const c of commands) assert.match(root, new RegExp(`^  ${c}[ |]`, 'm'), `'${c}' missing from minkms --help`);
    for (const alias of ['ls-enclaves', 'ls-keys', 'ls-policies', 'ls-identities']) assert.ok(root.includes(`|${alias} `), alias);
    assert.equal(await ok([]), root, 'minkms without arguments prints the help');

    // Help of every command, a few at a time.
    const pending = [...commands];
    const worker = async () => {
      for (let c = pending.shift(); c !== undefined; c = pending.shift()) {
        const h = await ok([c, '--help']);
        assert.match(h, new RegExp(`^Usage: minkms ${c}[ |]`), c);
        assert.match(h.split('\n')[2] ?? '', /\w/, `${c}: description`);
        assert.match(h, /\nOptions:\n/, `${c}: options`);
        assert.match(h, new RegExp(`\\nExamples:\\n  [^\\n]*minkms ${c}`), `${c}: examples`);
        if (!['server', 'identity', 'env', 'completion'].includes(c)) {
          assert.match(h, /-a, --api-key <KEY>/, c);
          assert.match(h, /-k, --insecure/, c);
          assert.match(h, /--json/, c);
          assert.match(h, /MINIO_KMS_SERVER/, c);
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    assert.match(await ok(['help', 'add-key']), /^Usage: minkms add-key /);
    assert.match(await ok(['add-key', '--help']), /-e, --enclave <NAME>/);
  });

  test('version, soft HSM key and offline identity still work', async () => {
    const [v, short, hsm, id, idJson] = await Promise.all([
      ok(['--version']),
      ok(['-v']),
      ok(['--soft-hsm']),
      ok(['identity']),
      json(['identity', server.apiKey]),
    ]);
    assert.match(v, /^\d+\.\d+\.\d+/);
    assert.equal(short, v);
    assert.match(hsm, /^hsm:aes256:[A-Za-z0-9+/=]{44}\n$/);
    // Both spellings of the key and of the identity: minkms's and KES's.
    assert.match(id, /^API Key\s+k1:\S+\nKES API Key\s+kes:v1:\S+\nIdentity\s+h1:\S+\nKES Identity\s+[0-9a-f]{64}\n$/);
    assert.equal(idJson.api_key, server.apiKey);
    assert.match(idJson.identity, /^h1:/);
  });

  test('usage errors exit with 2 and one line naming the command help', async () => {
    const key = generateApiKey().text;
    await Promise.all([
      fails(['no-such-command'], 2, "minkms: unknown command 'no-such-command' (see 'minkms --help')"),
      fails(['ad-key'], 2, /did you mean add-key\?/),
      fails(['add-key', '--bogus', '-e', 'x', 'k'], 2, "minkms: unknown option '--bogus' (see 'minkms add-key --help')"),
      fails(['add-key', '-e', 'x'], 2, "minkms: missing required argument 'NAME' (see 'minkms add-key --help')"),
      fails(['add-enclave', 'a', 'b'], 2, /too many arguments for 'add-enclave'/),
      fails(['rm-key', '-e', 'x', '-v', 'abc', 'k'], 2, /argument 'abc' is invalid: a key version is a positive integer/),
      fails(['rm-key', '-e', 'x', '-v', '2', '--all', 'k'], 2, /cannot be used with/),
      fails(['add-key', '-e', 'x', '--type', 'DES', 'k'], 2, /allowed types are AES256, ChaCha20/),
      fails(['add-identity', '-e', 'x', '--tag', 'novalue'], 2, /a tag is KEY=VALUE/),
      fails(['completion', 'fish'], 2, /Allowed choices are bash, zsh/),
      fails(['ls-enclave'], 2, 'minkms: no API key (use -a/--api-key KEY or set MINIO_KMS_API_KEY)', {
        env: { MINIO_KMS_API_KEY: undefined },
      }),
      fails(['ls-enclave', '-a', 'k9:nope'], 2, 'minkms: invalid API key'),
      fails(['ls-key'], 2, 'minkms: no enclave (use -e/--enclave NAME or set MINIO_KMS_ENCLAVE)'),
      fails(['decrypt', '-e', 'x', 'k', 'v1:!!!'], 2, /argument 'v1:!!!' is invalid for argument 'DATA': expected v<VERSION>:<BASE64>/),
      fails(['set-policy', '-e', 'x', 'p', 'h1:short'], 2, "'h1:short' is not an identity"),
    ]);
    // A key given where an identity is expected is refused without echoing the secret.
    const err = await fails(['rm-identity', '-e', 'x', key], 2, 'expected an identity, got an API or HSM key');
    assert.ok(!err.includes(key.slice(3)), 'the API key must not be echoed');
  });
});

describe('against a server', () => {
  test("the seed procedure's commands run verbatim", async () => {
    // export MINIO_KMS_SERVER=https://…:7373 (MINIO_KMS_API_KEY unset for the first two)
    const env = { MINIO_KMS_API_KEY: undefined };
    const created = await ok(['add-enclave', '-k', '-a', server.apiKey, 'aistor-key-manager'], { env });
    assert.match(created, /aistor-key-manager/);
    const out = await ok(['add-identity', '-k', '-a', server.apiKey, '--enclave', 'aistor-key-manager', '--admin'], { env });
    const apiKey = /^API Key\s+(k1:\S+)$/m.exec(out)?.[1];
    const identity = /^Identity\s+(h1:\S+)$/m.exec(out)?.[1];
    assert.ok(apiKey && identity, out);
    assert.match(out, /^Privilege\s+Admin$/m);
    // The k1: key of the new admin, as MINIO_KMS_API_KEY; the server's CA is in ~/.minkms/certs/CAs.
    const added = await ok(['add-key', '--enclave', 'aistor-key-manager', 'aistor-key-manager-hsm'], {
      env: { MINIO_KMS_API_KEY: apiKey },
    });
    assert.match(added, /Created key 'aistor-key-manager-hsm' in enclave 'aistor-key-manager'/);

    const [key] = await json(['stat-key', '-e', 'aistor-key-manager', 'aistor-key-manager-hsm']);
    assert.equal(key.created_by, identity);
    const me = await json(['get-identity', '-e', 'aistor-key-manager'], { env: { MINIO_KMS_API_KEY: apiKey } });
    assert.deepEqual([me[0].identity, me[0].privilege], [identity, 'Admin']);
  });

  test('enclaves: add, ls, stat, rm', async () => {
    assert.equal(await ok(['add-enclave', 'cli-e1']), "✔ Created enclave 'cli-e1'\n");
    assert.deepEqual(await json(['add-enclave', 'cli-e2']), { name: 'cli-e2' });
    await fails(['add-enclave', 'cli-e1'], 1, 'minkms: enclave already exists (choose another name)');

    const [human, alias, list, stat, statHuman] = await Promise.all([
      ok(['ls-enclave', 'cli-']),
      ok(['ls-enclaves', 'cli-']),
      json(['ls-enclave', 'cli-']),
      json(['stat-enclave', 'cli-e1', 'cli-e2']),
      ok(['stat-enclave', 'cli-e1']),
    ]);
    assert.match(human, /^Name\s+Created\s+Created by\n/);
    assert.match(human, /^cli-e1\s+\d{4}-\S+Z\s+h1:\S+$/m);
    assert.equal(alias, human);
    assert.deepEqual(
      list.map((e: any) => e.name),
      ['cli-e1', 'cli-e2'],
    );
    assert.deepEqual(Object.keys(list[0]), ['name', 'created_at', 'created_by']);
    assert.match(list[0].created_at, RFC3339);
    assert.deepEqual(
      stat.map((e: any) => e.name),
      ['cli-e1', 'cli-e2'],
    );
    assert.match(statHuman, /^Name\s+cli-e1\nCreated\s+\S+Z\nCreated by\s+h1:\S+\n$/);

    assert.equal(await ok(['rm-enclave', 'cli-e2']), "✔ Deleted enclave 'cli-e2'\n");
    assert.deepEqual(await json(['rm-enclave', 'cli-e1']), { name: 'cli-e1' });
    assert.deepEqual(await json(['ls-enclave', 'cli-']), []);
    assert.equal(await ok(['ls-enclave', 'cli-']), '');
    await fails(
      ['stat-enclave', 'cli-e1'],
      1,
      "minkms: enclave does not exist (check -e/--enclave or MINIO_KMS_ENCLAVE; 'minkms ls-enclave' lists the enclaves)",
    );
  });

  test('keys: add (types, versions, import), ls, stat, keygen, encrypt, decrypt, rm', async () => {
    const env = { MINIO_KMS_ENCLAVE: 'cli-keys' };
    await ok(['add-enclave', 'cli-keys']);
    const imported = Buffer.alloc(32, 7).toString('base64');
    const [a, b, c] = await Promise.all([
      ok(['add-key', 'k-aes'], { env }),
      json(['add-key', '-e', 'cli-keys', '--type', 'chacha20', 'k-chacha']),
      ok(['add-key', '--import', imported, 'k-imp'], { env }),
    ]);
    assert.equal(a, "✔ Created key 'k-aes' in enclave 'cli-keys'\n");
    assert.deepEqual(b, { name: 'k-chacha', enclave: 'cli-keys', type: 'ChaCha20', new_version: false, imported: false });
    assert.equal(c, "✔ Imported key 'k-imp' into enclave 'cli-keys'\n");
    assert.equal(await ok(['add-key', '--version', 'k-aes'], { env }), "✔ Added a new version to key 'k-aes' in enclave 'cli-keys'\n");
    await fails(['add-key', 'k-aes'], 1, "minkms: key already exists (use 'minkms add-key --version NAME' to add a new version)", { env });
    await fails(['add-key', '--import', 'not base64!', 'k-bad'], 2, '--import: the key is not valid base64', { env });

    const [list, human, alias, stat, statV1, statHuman] = await Promise.all([
      json(['ls-key', 'k-'], { env }),
      ok(['ls-key'], { env }),
      ok(['ls-keys'], { env }),
      json(['stat-key', 'k-aes', 'k-chacha'], { env }),
      json(['stat-key', '-v', '1', 'k-aes'], { env }),
      ok(['stat-key', 'k-aes'], { env }),
    ]);
    assert.deepEqual(
      list.map((k: any) => [k.name, k.version, k.type]),
      [
        ['k-aes', 2, 'AES256'],
        ['k-chacha', 1, 'ChaCha20'],
        ['k-imp', 1, 'AES256'],
      ],
    );
    assert.deepEqual(Object.keys(list[0]), ['name', 'version', 'type', 'created_at', 'created_by']);
    assert.match(list[0].created_at, RFC3339);
    assert.match(human, /^Name\s+Version\s+Type\s+Created\s+Created by\n/);
    assert.match(human, /^k-chacha\s+v1\s+ChaCha20\s+\S+Z\s+h1:\S+$/m);
    assert.equal(alias, human);
    assert.deepEqual(
      stat.map((k: any) => [k.name, k.version]),
      [
        ['k-aes', 2],
        ['k-chacha', 1],
      ],
    );
    assert.equal(statV1[0].version, 1);
    assert.match(statHuman, /^Name\s+k-aes\nVersion\s+v2\nType\s+AES256\nCreated\s+\S+Z\nCreated by\s+h1:\S+\n$/);

    // keygen → decrypt, in both forms
    const [gen, genV1, enc, encJson] = await Promise.all([
      ok(['keygen', 'k-aes'], { env }),
      json(['keygen', '-v', '1', 'k-aes'], { env }),
      ok(['encrypt', 'k-chacha', 'hello wörld'], { env }),
      json(['encrypt', '-v', '1', 'k-aes', 'v1 secret'], { env }),
    ]);
    const m = /^Plaintext\s+(\S+)\nCiphertext\s+(v2:\S+)\n$/.exec(gen);
    assert.ok(m, gen);
    assert.equal(Buffer.from(m[1]!, 'base64').length, 32);
    assert.deepEqual(Object.keys(genV1), ['name', 'version', 'plaintext', 'ciphertext']);
    assert.equal(genV1.version, 1);
    assert.match(genV1.ciphertext, /^v1:[A-Za-z0-9+/]+=*$/);
    assert.match(enc, /^v1:[A-Za-z0-9+/]+=*\n$/);
    assert.equal(encJson.version, 1);
    const [dek, dekJson, text, textJson, noVersion, v1text] = await Promise.all([
      ok(['decrypt', 'k-aes', m[2]!], { env }),
      json(['decrypt', 'k-aes', genV1.ciphertext], { env }),
      ok(['decrypt', 'k-chacha', enc.trim()], { env }),
      json(['decrypt', 'k-chacha', enc.trim()], { env }),
      ok(['decrypt', 'k-chacha', enc.trim().slice(3)], { env }), // plain base64 = version 0
      ok(['decrypt', 'k-aes', encJson.ciphertext], { env }),
    ]);
    // Binary plaintext (a random DEK is almost never UTF-8) is printed as base64.
    assert.equal(dek, (utf8(Buffer.from(m[1]!, 'base64')) ?? m[1]) + '\n');
    assert.equal(dekJson.plaintext, genV1.plaintext);
    assert.equal(text, 'hello wörld\n');
    assert.deepEqual(textJson, { name: 'k-chacha', plaintext: Buffer.from('hello wörld').toString('base64'), text: 'hello wörld' });
    assert.equal(noVersion, 'hello wörld\n');
    assert.equal(v1text, 'v1 secret\n');
    await fails(
      ['decrypt', 'k-aes', 'v1:' + Buffer.alloc(60).toString('base64')],
      1,
      'minkms: invalid ciphertext (check the key name, the version prefix and the ciphertext)',
      { env },
    );
    await fails(['keygen', 'nope'], 1, "minkms: key does not exist ('minkms ls-key' lists the keys of the enclave)", { env });

    // rm-key: latest, a version, all
    assert.equal(await ok(['rm-key', 'k-aes'], { env }), "✔ Deleted the latest version of key 'k-aes' in enclave 'cli-keys'\n");
    assert.equal((await json(['stat-key', 'k-aes'], { env }))[0].version, 1);
    assert.deepEqual(await json(['rm-key', '-v', '1', 'k-chacha'], { env }), {
      name: 'k-chacha',
      enclave: 'cli-keys',
      version: 1,
      all_versions: false,
    });
    assert.equal(await ok(['rm-key', '--all', 'k-imp'], { env }), "✔ Deleted key 'k-imp' (all versions) in enclave 'cli-keys'\n");
    assert.deepEqual(
      (await json(['ls-key'], { env })).map((k: any) => k.name),
      ['k-aes'],
    );
  });

  test('policies: add (file, stdin, get-policy output), get, stat, ls, set, rm', async () => {
    const env = { MINIO_KMS_ENCLAVE: 'cli-pol' };
    await ok(['add-enclave', 'cli-pol']);
    const file = join(work, 'policy.json');
    writeFileSync(
      file,
      JSON.stringify({
        allow: { 'KEY:STATUS': '*', 'key:list': ['*'], 'KEY:GENERATE': { 'app-*': {}, '': {} }, 'KEY:DECRYPT': ['app-*', 'a'] },
        deny: { 'KEY:DECRYPT': 'app-secret' },
      }),
    );
    assert.equal(await ok(['add-policy', 'p1', file], { env }), "✔ Created policy 'p1' in enclave 'cli-pol'\n");
    assert.deepEqual(await json(['add-policy', 'p2', '-'], { env, input: '{"allow": {"KEY:ENCRYPT": "x"}}' }), {
      name: 'p2',
      enclave: 'cli-pol',
    });
    const [got] = await json(['get-policy', 'p1'], { env });
    assert.deepEqual(
      { name: got.name, allow: got.allow, deny: got.deny },
      {
        name: 'p1',
        allow: { 'KEY:DECRYPT': ['a', 'app-*'], 'KEY:GENERATE': ['app-*'], 'KEY:LIST': ['*'], 'KEY:STATUS': ['*'] },
        deny: { 'KEY:DECRYPT': ['app-secret'] },
      },
    );
    assert.match(got.created_at, RFC3339);
    // get-policy --json output is a valid policy file
    writeFileSync(join(work, 'p1-copy.json'), JSON.stringify([got]));
    await ok(['add-policy', 'p3', join(work, 'p1-copy.json')], { env });

    const [copy, human, stat, statHuman, list, lsHuman, alias] = await Promise.all([
      json(['get-policy', 'p3', 'p2'], { env }),
      ok(['get-policy', 'p1'], { env }),
      json(['stat-policy', 'p1', 'p2'], { env }),
      ok(['stat-policy', 'p2'], { env }),
      json(['ls-policy'], { env }),
      ok(['ls-policy', 'p'], { env }),
      ok(['ls-policies', 'p'], { env }),
    ]);
    assert.deepEqual(copy[0].allow, got.allow);
    assert.deepEqual(copy[1].allow, { 'KEY:ENCRYPT': ['x'] });
    assert.match(human, /^Name\s+p1\nCreated\s+\S+Z\nCreated by\s+h1:\S+\nAllow\n\s+KEY:DECRYPT\s+a, app-\*\n/);
    assert.match(human, /\nDeny\n\s+KEY:DECRYPT\s+app-secret\n$/);
    assert.deepEqual(
      stat.map((p: any) => Object.keys(p)),
      [
        ['name', 'created_at', 'created_by'],
        ['name', 'created_at', 'created_by'],
      ],
    );
    assert.match(statHuman, /^Name\s+p2\n/);
    assert.deepEqual(
      list.map((p: any) => p.name),
      ['p1', 'p2', 'p3'],
    );
    assert.match(lsHuman, /^Name\s+Created\s+Created by\np1\s+/);
    assert.equal(alias, lsHuman);

    const user = generateApiKey();
    await ok(['add-identity', user.identity], { env });
    assert.equal(await ok(['set-policy', 'p1', user.identity], { env }), `✔ Assigned policy 'p1' to ${user.identity}\n`);
    assert.equal((await json(['get-identity', user.identity], { env }))[0].policy, 'p1');
    assert.deepEqual(await json(['set-policy', 'p2', user.identity], { env }), {
      policy: 'p2',
      identity: user.identity,
      enclave: 'cli-pol',
    });

    assert.equal(await ok(['rm-policy', 'p3'], { env }), "✔ Deleted policy 'p3' in enclave 'cli-pol'\n");
    assert.deepEqual(await json(['rm-policy', 'p1'], { env }), { name: 'p1', enclave: 'cli-pol' });
    await fails(['get-policy', 'p1'], 1, "minkms: policy does not exist ('minkms ls-policy' lists the policies of the enclave)", { env });

    writeFileSync(join(work, 'bad.json'), '{"allow": {"KEY:FLY": "*"}}');
    await Promise.all([
      fails(['add-policy', 'bad', join(work, 'bad.json')], 1, /invalid policy file '.*bad\.json': unknown command 'KEY:FLY'/, { env }),
      fails(['add-policy', 'bad', '-'], 1, /invalid policy file '-': not JSON/, { env, input: '{' }),
      fails(['add-policy', 'bad', join(work, 'missing.json')], 1, /cannot read policy file '.*missing\.json': ENOENT/, { env }),
    ]);
  });

  test('identities: add (generated, given, tags), get (self, others), ls, rm', async () => {
    const env = { MINIO_KMS_ENCLAVE: 'cli-id' };
    await ok(['add-enclave', 'cli-id']);
    const [admin, userJson] = await Promise.all([
      ok(['add-identity', '--admin'], { env }),
      json(['add-identity', '--tag', 'app=minio', '--tag', 'env=prod'], { env }),
    ]);
    const adminKey = /^API Key\s+(k1:\S+)$/m.exec(admin)?.[1];
    const adminId = /^Identity\s+(h1:\S+)$/m.exec(admin)?.[1];
    assert.ok(adminKey && adminId, admin);
    assert.match(admin, /^Enclave\s+cli-id\nPrivilege\s+Admin\n$/m);
    assert.equal(userJson.length, 1);
    const user = userJson[0];
    assert.deepEqual(Object.keys(user), ['identity', 'api_key', 'enclave', 'privilege', 'is_service_account', 'tags']);
    assert.equal(user.privilege, 'User');
    assert.deepEqual(user.tags, { app: 'minio', env: 'prod' });

    const given = [generateApiKey().identity, generateApiKey().identity];
    assert.equal(
      await ok(['add-identity', ...given], { env }),
      given.map((i) => `✔ Added identity ${i} to enclave 'cli-id' (User)\n`).join(''),
    );

    const [self, selfHuman, others, list, human, alias] = await Promise.all([
      json(['get-identity'], { env: { ...env, MINIO_KMS_API_KEY: user.api_key } }),
      ok(['get-identity'], { env: { ...env, MINIO_KMS_API_KEY: adminKey } }),
      json(['get-identity', user.identity, adminId], { env }),
      json(['ls-identity'], { env }),
      ok(['ls-identity'], { env }),
      ok(['ls-identities'], { env }),
    ]);
    assert.equal(self.length, 1);
    assert.deepEqual(Object.keys(self[0]), [
      'identity',
      'privilege',
      'policy',
      'created_at',
      'created_by',
      'is_service_account',
      'service_accounts',
      'tags',
    ]);
    assert.deepEqual([self[0].identity, self[0].privilege, self[0].tags], [user.identity, 'User', { app: 'minio', env: 'prod' }]);
    assert.match(self[0].created_at, RFC3339);
    assert.match(selfHuman, new RegExp(`^Identity\\s+${adminId}\\nPrivilege\\s+Admin\\n`));
    assert.match(selfHuman, /\nTags\s+-\n$/);
    assert.deepEqual(
      others.map((r: any) => r.privilege),
      ['User', 'Admin'],
    );
    assert.deepEqual(new Set(list.map((r: any) => r.identity)), new Set([adminId, user.identity, ...given]));
    assert.match(human, /^Identity\s+Privilege\s+Policy\s+Created\s+Tags\n/);
    assert.ok(human.includes('app=minio, env=prod'), human);
    assert.equal(alias, human);

    assert.equal(await ok(['rm-identity', given[0]!], { env }), `✔ Deleted identity ${given[0]} from enclave 'cli-id'\n`);
    assert.deepEqual(await json(['rm-identity', given[1]!], { env }), [{ identity: given[1], enclave: 'cli-id' }]);
    await fails(
      ['get-identity', given[0]!],
      1,
      "minkms: identity does not exist ('minkms ls-identity' lists the identities of the enclave)",
      { env },
    );
  });

  test('permission errors name the missing permission', async () => {
    await ok(['add-enclave', 'minio']);
    const user = JSON.parse(await ok(['add-identity', '-e', 'minio', '--json']))[0];
    const asUser = { MINIO_KMS_API_KEY: user.api_key, MINIO_KMS_ENCLAVE: 'minio' };
    await Promise.all([
      fails(
        ['add-key', 'my-key'],
        1,
        "minkms: access denied: insufficient permissions (this command needs KEY:CREATE on 'my-key' in enclave 'minio', or an enclave admin)\n",
        { env: asUser },
      ),
      fails(
        ['ls-key'],
        1,
        "minkms: access denied: insufficient permissions (this command needs KEY:LIST in enclave 'minio', or an enclave admin)\n",
        { env: asUser },
      ),
      fails(
        ['add-enclave', 'other'],
        1,
        'minkms: access denied: insufficient permissions (this command needs ENCLAVE:CREATE, which only a SysAdmin (root) identity has)\n',
        { env: asUser },
      ),
      fails(['stat'], 1, 'this command needs CLUSTER:STATUS, which only a SysAdmin (root) identity has', { env: asUser }),
      fails(['add-hsm', 'hsm:minio:soft'], 1, 'this command needs CLUSTER:ADDHSM', { env: asUser }),
      fails(['decrypt', 'k', 'v1:AAAA'], 1, "this command needs KEY:DECRYPT on 'k' in enclave 'minio'", { env: asUser }),
    ]);
  });

  test('cluster: stat, ls, add-hsm, rm-hsm', async () => {
    const [stat, statHuman, ls, lsHuman] = await Promise.all([json(['stat']), ok(['stat']), json(['ls']), ok(['ls'])]);
    assert.equal(stat.length, 1);
    const n = stat[0];
    for (const k of [
      'node_id',
      'state',
      'role',
      'uptime',
      'host',
      'version',
      'api_version',
      'hsm',
      'hsm_active',
      'sys_os',
      'sys_cpu_arch',
      'sys_cpu_num',
      'sys_mem_heap_used',
    ]) {
      assert.ok(k in n, `stat --json lacks ${k}: ${JSON.stringify(n)}`);
    }
    assert.deepEqual([n.node_id, n.state, n.role, n.host], [0, 'online', 'Leader', server.host]);
    assert.match(n.uptime, /^\d+(\.\d+)?s$/);
    assert.ok(Array.isArray(n.hsm) && n.hsm.includes('hsm:minio:soft'), JSON.stringify(n.hsm));
    assert.ok(Array.isArray(n.hsm_active));
    assert.match(statHuman, /^Node 0\s+online\s+Leader\n/);
    for (const label of ['Host', 'Version', 'Uptime', 'HSMs', 'Active HSMs', 'System'])
      assert.match(statHuman, new RegExp(`^\\s+${label}\\s+\\S`, 'm'), label);
    assert.deepEqual(Object.keys(ls[0]), ['node_id', 'state', 'role', 'uptime', 'host']);
    assert.match(
      lsHuman,
      new RegExp(
        `^ID\\s+Status\\s+Role\\s+Uptime\\s+Host\\n0\\s+online\\s+Leader\\s+(?:\\d+[a-z]+ ?)+\\s+${server.host.replace(/\./g, '\\.')}\\n$`,
      ),
    );

    assert.equal(await ok(['add-hsm', '--overwrite', 'hsm:minio:soft']), "✔ Sealed the root encryption key with HSM 'hsm:minio:soft'\n");
    assert.deepEqual(await json(['add-hsm', '--overwrite', 'hsm:minio:soft']), { name: 'hsm:minio:soft', overwrite: true });
    await fails(['rm-hsm', 'hsm:minio:soft'], 1, 'minkms: cannot remove the last hsm entry (add another HSM first)');
    await fails(['add-hsm', 'hsm:minio:nowhere'], 1, /^minkms: hsm is not configured/);
  });

  test('TLS: the CA from ~/.minkms/certs/CAs, --insecure, and a verification failure', async () => {
    const empty = tempDir('minkms-cli-nohome-');
    try {
      const noCa = { HOME: empty };
      await fails(
        ['ls'],
        1,
        new RegExp(
          `^minkms: cannot verify the TLS certificate of ${server.host.replace(/\./g, '\\.')}: .+ \\(trust the server's CA with --ca FILE, in ~/\\.minkms/certs/CAs or in the system store; -k/--insecure skips verification\\)\\n$`,
        ),
        { env: noCa },
      );
      const [insecure, trusted] = await Promise.all([json(['ls-enclave', '-k'], { env: noCa }), json(['ls-enclave'])]);
      assert.deepEqual(insecure, trusted);
    } finally {
      removeDir(empty);
    }
  });

  test('an unreachable server names the endpoints and MINIO_KMS_SERVER', async () => {
    const [p1, p2] = [await closedPort(), await closedPort()];
    await fails(
      ['ls-enclave'],
      1,
      `minkms: cannot reach the KMS server at 127.0.0.1:${p1}: connection refused (ECONNREFUSED) (check that the server runs, or set MINIO_KMS_SERVER=https://HOST:PORT[,…])\n`,
      {
        env: { MINIO_KMS_SERVER: `127.0.0.1:${p1}` },
      },
    );
    await fails(['stat'], 1, `minkms: cannot reach any KMS server (127.0.0.1:${p1}, 127.0.0.1:${p2}): connection refused`, {
      env: { MINIO_KMS_SERVER: `https://127.0.0.1:${p1}, 127.0.0.1:${p2}` },
    });
    // Failover: a dead endpoint next to a live one still works.
    assert.equal((await json(['ls'], { env: { MINIO_KMS_SERVER: `127.0.0.1:${p1},${server.host}` } })).length, 1);
  });
});

describe('offline commands', () => {
  test('env prints the MINIO_KMS_* variables; --share masks secrets', async () => {
    const env = {
      MINIO_KMS_SERVER: 'https://a:7373,https://b:7373',
      MINIO_KMS_API_KEY: 'k1:secretsecret',
      MINIO_KMS_HSM_KEY: 'hsm:aes256:topsecret',
      MINIO_KMS_ENCLAVE: 'minio',
      MINIO_KMS_SSE_KEY: 'my-key',
    };
    const [plain, shared, sharedJson, some] = await Promise.all([
      ok(['env'], { env }),
      ok(['env', '--share'], { env }),
      json(['env', '--share'], { env }),
      json(['env', 'SERVER', 'MINIO_KMS_ENCLAVE', 'MINIO_KMS_NOPE'], { env }),
    ]);
    assert.equal(
      plain,
      'MINIO_KMS_API_KEY=k1:secretsecret\nMINIO_KMS_ENCLAVE=minio\nMINIO_KMS_HSM_KEY=hsm:aes256:topsecret\nMINIO_KMS_SERVER=https://a:7373,https://b:7373\nMINIO_KMS_SSE_KEY=my-key\n',
    );
    assert.equal(
      shared,
      'MINIO_KMS_API_KEY=***\nMINIO_KMS_ENCLAVE=minio\nMINIO_KMS_HSM_KEY=***\nMINIO_KMS_SERVER=https://a:7373,https://b:7373\nMINIO_KMS_SSE_KEY=my-key\n',
    );
    assert.deepEqual(sharedJson, {
      MINIO_KMS_API_KEY: '***',
      MINIO_KMS_ENCLAVE: 'minio',
      MINIO_KMS_HSM_KEY: '***',
      MINIO_KMS_SERVER: 'https://a:7373,https://b:7373',
      MINIO_KMS_SSE_KEY: 'my-key',
    });
    assert.deepEqual(some, { MINIO_KMS_ENCLAVE: 'minio', MINIO_KMS_NOPE: null, MINIO_KMS_SERVER: 'https://a:7373,https://b:7373' });
  });

  test('completion scripts are generated from the command tree', async () => {
    const [bash, zsh] = await Promise.all([ok(['completion', 'bash']), ok(['completion', 'zsh'])]);
    assert.match(bash, /^complete -F _minkms minkms$/m);
    assert.match(zsh, /^#compdef minkms\n/);
    for (const c of ['add-key', 'ls-keys', 'get-identity', 'add-hsm', 'completion']) {
      assert.ok(bash.includes(` ${c} `) || bash.includes(`${c})`), `bash: ${c}`);
      assert.ok(zsh.includes(`'${c}:`), `zsh: ${c}`);
    }
    assert.ok(zsh.includes(`'--type[key type (default: chosen by the server)]:TYPE:(AES256 ChaCha20)'`), 'zsh: --type choices');
    assert.ok(zsh.includes(`'(-e --enclave)'{-e,--enclave}'[enclave to operate in]:NAME: '`), 'zsh: -e/--enclave');

    const bashBin = spawnSync('bash', ['--version']).status === 0;
    if (!bashBin) return;
    const file = join(work, 'minkms.bash');
    writeFileSync(file, bash);
    assert.equal(spawnSync('bash', ['-n', file]).status, 0, 'bash syntax');
    const complete = (...words: string[]) => {
      const script = `source ${JSON.stringify(file)}; COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')}); COMP_CWORD=${words.length - 1}; _minkms; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
      return r.stdout.split('\n').filter((l) => l !== '');
    };
    assert.deepEqual(complete('minkms', 'add-k'), ['add-key']);
    assert.deepEqual(complete('minkms', 'ls-p'), ['ls-policy', 'ls-policies']);
    assert.deepEqual(complete('minkms', 'add-key', '--ty'), ['--type']);
    assert.deepEqual(complete('minkms', 'add-key', '--type', ''), ['AES256', 'ChaCha20']);
    assert.deepEqual(complete('minkms', 'completion', ''), ['bash', 'zsh']);
    assert.deepEqual(complete('minkms', '--soft'), ['--soft-hsm']);
    assert.ok(complete('minkms', 'rm-key', '-').includes('--all'));
    assert.ok(complete('minkms', 'add-identity', '-k', '--').includes('--admin'));
    assert.deepEqual(complete('minkms', 'help', 'stat-'), ['stat-enclave', 'stat-key', 'stat-policy']);
  });
});
