/**
 * The server's TLS material: the certificate pairs of the configuration file, or, without a
 * configuration file, a self-signed certificate for localhost kept in `DIR/certs` and generated
 * on first start. Configured files are watched: a changed certificate is served to new
 * connections without a restart, and a certificate close to expiry is warned about.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../store/atomic-file.js';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import type { Http2SecureServer } from 'node:http2';
import { createSelfSignedServerCertificate } from '../identity/client-cert.js';
import { readCaPath } from '../config/pem.js';
import type { Config } from '../config/config.js';
import type { Logger } from './log.js';

export interface TlsMaterial {
  cert: string[];
  key: string[];
  ca?: string[];
  /** Files the material was read from (watched for changes). */
  files: string[];
  /** Shown in the banner. */
  source: string;
  generated: boolean;
}

export const LOCAL_CERT_HOSTS = ['localhost', '127.0.0.1', '::1'];
/** Warn this long before a certificate expires. */
export const EXPIRY_WARNING_MS = 48 * 3600_000;

function read(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`kms: cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    });
  }
}

/** Loads the configured certificates, or the generated localhost certificate in `dir`. */
export function loadTlsMaterial(config: Config, dir: string, configured: boolean): TlsMaterial {
  let ca: string[] | undefined;
  if (config.tls.ca) {
    try {
      ca = readCaPath(config.tls.ca);
    } catch (err) {
      throw new Error(`kms: cannot read TLS CA ${config.tls.ca}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        cause: err,
      });
    }
  }
  const caFiles = config.tls.ca ? [config.tls.ca] : [];
  if (config.tls.certs.length > 0) {
    const pairs = config.tls.certs;
    return {
      cert: pairs.map((p) => read(p.cert, 'certificate')),
      key: pairs.map((p) => read(p.key, 'private key')),
      ca,
      files: [...pairs.flatMap((p) => [p.cert, p.key]), ...caFiles],
      source: pairs.map((p) => p.cert).join(', '),
      generated: false,
    };
  }
  if (configured) throw new Error('kms: no TLS configuration provided (add tls.certs with a key and cert to the config file)');
  const certDir = join(dir, 'certs');
  const certFile = join(certDir, 'public.crt');
  const keyFile = join(certDir, 'private.key');
  let generated = false;
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    mkdirSync(certDir, { recursive: true, mode: 0o700 });
    const { cert, key } = createSelfSignedServerCertificate({ hosts: LOCAL_CERT_HOSTS, days: 365 });
    // Atomic, key first: a certificate file present means its key is complete (full disk, crash).
    writeFileAtomic(keyFile, key, 0o600);
    writeFileAtomic(certFile, cert, 0o644);
    generated = true;
  }
  return {
    cert: [read(certFile, 'certificate')],
    key: [read(keyFile, 'private key')],
    ca,
    files: [certFile, keyFile, ...caFiles],
    source: certFile,
    generated,
  };
}

/** Logs a warning for each certificate that expires within 48 hours (or has expired). */
export function warnExpiring(material: TlsMaterial, log: Logger, now = Date.now()): void {
  for (const pem of material.cert) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch {
      continue;
    }
    const left = Date.parse(cert.validTo) - now;
    if (left < EXPIRY_WARNING_MS) {
      log.warn(left <= 0 ? 'TLS certificate has expired' : 'TLS certificate expires within 48 hours', {
        subject: cert.subject,
        validTo: cert.validTo,
      });
    }
  }
}

/**
 * Polls the TLS files and swaps the server's certificates when one changes. A change that
 * cannot be loaded (e.g. a key that does not match, or a half-written file) keeps the old
 * certificates and is logged. Returns a function that stops watching.
 */
export function watchTls(
  server: Http2SecureServer,
  reload: () => TlsMaterial,
  files: readonly string[],
  log: Logger,
  intervalMs = 2000,
): () => void {
  const stamp = () =>
    files
      .map((f) => {
        try {
          const s = statSync(f);
          return `${s.mtimeMs}:${s.size}:${s.ino}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  let last = stamp();
  const timer = setInterval(() => {
    const now = stamp();
    if (now === last) return;
    last = now;
    try {
      const m = reload();
      server.setSecureContext({ cert: m.cert, key: m.key, ca: m.ca, minVersion: 'TLSv1.2' });
      log.info('TLS certificates reloaded', { files: m.files });
      warnExpiring(m, log);
    } catch (err) {
      log.error('TLS certificates changed but cannot be loaded; keeping the old ones', { err: (err as Error).message });
    }
  }, intervalMs);
  timer.unref();
  const daily = setInterval(() => {
    try {
      warnExpiring(reload(), log);
    } catch {
      // reported by the watcher
    }
  }, 24 * 3600_000);
  daily.unref();
  return () => {
    clearInterval(timer);
    clearInterval(daily);
  };
}
