/**
 * The server's TLS material: the certificate pairs of the configuration file, or, without one,
 * a self-signed certificate for localhost kept in `DIR/certs` and generated on first start.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSelfSignedServerCertificate } from '../identity/client-cert.js';
import type { Config } from '../config/config.js';

export interface TlsMaterial {
  cert: string;
  key: string;
  ca?: string;
  /** Files the material was read from (shown in the banner). */
  source: string;
  generated: boolean;
}

export const LOCAL_CERT_HOSTS = ['localhost', '127.0.0.1', '::1'];

function read(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`kms: cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Loads the configured certificates, or the generated localhost certificate in `dir`. */
export function loadTlsMaterial(config: Config, dir: string, configured: boolean): TlsMaterial {
  const ca = config.tls.ca ? read(config.tls.ca, 'CA file') : undefined;
  if (config.tls.certs.length > 0) {
    // node serves one pair per context; the first pair is the server's certificate.
    const pair = config.tls.certs[0]!;
    return { cert: read(pair.cert, 'certificate'), key: read(pair.key, 'private key'), ca, source: pair.cert, generated: false };
  }
  if (configured) throw new Error('kms: no TLS configuration provided (add tls.certs to the config file)');
  const certDir = join(dir, 'certs');
  const certFile = join(certDir, 'public.crt');
  const keyFile = join(certDir, 'private.key');
  let generated = false;
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    mkdirSync(certDir, { recursive: true, mode: 0o700 });
    const { cert, key } = createSelfSignedServerCertificate({ hosts: LOCAL_CERT_HOSTS, days: 365 });
    writeFileSync(keyFile, key, { mode: 0o600 });
    writeFileSync(certFile, cert, { mode: 0o644 });
    generated = true;
  }
  return { cert: read(certFile, 'certificate'), key: read(keyFile, 'private key'), ca, source: certFile, generated };
}
