/**
 * TLS configuration: certificates from the config file, reloaded when their files change
 * (without a restart), a warning for certificates that expire within 48 hours, and the
 * documented start-up error without TLS configuration.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { createCertificateAuthority, issueCertificate } from '../../src/identity/client-cert.js';
import { removeDir, startServer, tempDir } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const dirs: string[] = [];
after(() => dirs.forEach(removeDir));

/** The serial number of the certificate a new TLS connection gets. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      const serial = sock.getPeerX509Certificate()!.serialNumber;
      sock.destroy();
      resolve(serial);
    });
    sock.once('error', reject);
  });
}

test('certificates are reloaded when their files change; a broken change keeps the old ones', async () => {
  const base = tempDir();
  dirs.push(base);
  const ca = createCertificateAuthority('minkms test CA');
  const certFile = join(base, 'public.crt');
  const keyFile = join(base, 'private.key');
  const install = (days: number) => {
    const leaf = issueCertificate(ca, { commonName: 'localhost', hosts: ['localhost', '127.0.0.1'], serverAuth: true, days });
    // Write-then-rename, as deployment tools do.
    writeFileSync(keyFile + '.tmp', leaf.key);
    writeFileSync(certFile + '.tmp', leaf.cert);
    renameSync(keyFile + '.tmp', keyFile);
    renameSync(certFile + '.tmp', certFile);
    return leaf;
  };
  const first = install(1);
  const s = await startServer({
    dir: join(base, 'data'),
    config: `version: v1\ntls:\n  certs:\n    - key: ${keyFile}\n      cert: ${certFile}\n`,
  });
  assert.match(s.output(), /expires within 48 hours/);
  assert.equal(await servedSerial(s.port, ca.cert), new X509Certificate(first.cert).serialNumber);

  const second = install(365);
  const want = new X509Certificate(second.cert).serialNumber;
  await waitFor('the new certificate to be served', async () => (await servedSerial(s.port, ca.cert)) === want, 60_000, 200);
  assert.match(s.output(), /TLS certificates reloaded/);

  writeFileSync(keyFile, 'not a key');
  await waitFor('the broken change to be reported', () => /cannot be loaded; keeping the old ones/.test(s.output()), 60_000);
  assert.equal(await servedSerial(s.port, ca.cert), want);
  await s.stop();
});

test('a config file without TLS is refused at start with the documented error', async () => {
  const base = tempDir();
  dirs.push(base);
  await assert.rejects(startServer({ dir: join(base, 'data'), config: 'version: v1\ntls: {}\n' }), /kms: no TLS configuration provided/);
});

test('config errors name the key', async () => {
  const base = tempDir();
  dirs.push(base);
  await assert.rejects(
    startServer({ dir: join(base, 'data'), config: 'version: v1\ntls: {}\nlimits:\n  max_bodyy: 1\n' }),
    /limits\.max_bodyy: unknown key/,
  );
  await assert.rejects(startServer({ dir: join(base, 'data'), config: 'version: v2\n' }), /version: must be 'v1'/);
});
