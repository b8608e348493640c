/**
 * The KMS chain with real processes, as an operator runs it: a private CA for the deployment,
 * an external KMS (the seed's "HSM cluster") provisioned with the seed's own commands, and
 * cluster KMS nodes on etcd whose configuration files a test edits while they run (the seed's
 * step 3) and which it restarts with or without MINIO_KMS_HSM_KEY (steps 4 and 5).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, renameSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KmsClient, responseError } from '../../src/client/client.js';
import type { ServerStatusResponse } from '../../src/protocol/messages.js';
import { createCertificateAuthority, issueCertificate, type CertificateAuthority } from '../../src/identity/client-cert.js';
import { MINKMS_BIN, freePort, newHsmKey, startServer, type TestServer } from './server.js';
import type { EtcdCluster } from './etcd.js';

export const SEED_ENCLAVE = 'aistor-key-manager';
export const SEED_KEY = 'aistor-key-manager-hsm';
export const SOFT = 'hsm:minio:soft';

export function extHsmName(enclave = SEED_ENCLAVE, key = SEED_KEY): string {
  return `hsm:minio:minkms:${enclave}/${key}`;
}

/** A private CA and the certificates it issued (files in `dir`). */
export interface Pki {
  readonly caPem: string;
  readonly caFile: string;
  /** Issues a server certificate for 127.0.0.1/localhost: its files. */
  issue(name: string): { certFile: string; keyFile: string };
}

export function makePki(dir: string, name = 'minkms test deployment CA'): Pki {
  mkdirSync(dir, { recursive: true });
  const ca: CertificateAuthority = createCertificateAuthority(name);
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, ca.cert);
  return {
    caPem: ca.cert,
    caFile,
    issue: (leaf) => {
      const c = issueCertificate(ca, { commonName: leaf, hosts: ['localhost', '127.0.0.1'], serverAuth: true, days: 30 });
      const certFile = join(dir, `${leaf}.crt`);
      const keyFile = join(dir, `${leaf}.key`);
      writeFileSync(keyFile, c.key, { mode: 0o600 });
      writeFileSync(certFile, c.cert);
      return { certFile, keyFile };
    },
  };
}

/** Runs the minkms binary as an operator would; never throws for a non-zero exit. */
export function minkms(
  args: readonly string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; out: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], {
      env: { ...(process.env as Record<string, string>), NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: stdout + stderr, stdout });
    });
  });
}

/** A HOME whose `~/.minkms/certs/CAs/` trusts `caPem` (how the CLI is told about a private CA). */
export function cliHome(dir: string, caPem: string): string {
  mkdirSync(join(dir, '.minkms/certs/CAs'), { recursive: true });
  writeFileSync(join(dir, '.minkms/certs/CAs/ca.crt'), caPem);
  return dir;
}

/** The external KMS: one node with its own soft key, on a fixed port (it is stopped and started again). */
export interface ExternalKms {
  server: TestServer;
  readonly host: string;
  /** The certificate clients of it must trust (the deployment's CA, or its self-signed certificate). */
  readonly caPem: string;
  readonly caFile: string;
  readonly rootKey: string;
  client(apiKey?: string): KmsClient;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: hung, not dead. */
  pause(): void;
  resume(): void;
}

/** Starts an external KMS with a certificate from `pki`, or (none) a self-signed one. */
export async function startExternalKms(dir: string, pki?: Pki): Promise<ExternalKms> {
  mkdirSync(dir, { recursive: true });
  const hsmKey = newHsmKey();
  const port = await freePort();
  let config = 'version: v1\n';
  if (pki) {
    const { certFile, keyFile } = pki.issue(`external-${port}`);
    config += `tls:\n  certs:\n    - key: ${keyFile}\n      cert: ${certFile}\n`;
  }
  const configFile = join(dir, 'external.yaml');
  const launch = () => startServer({ dir: join(dir, 'data'), hsmKey, config, configFile, port });
  let server = await launch();
  const caPem = pki ? pki.caPem : server.caPem;
  const caFile = pki ? pki.caFile : server.caFile;
  const ext: ExternalKms = {
    server,
    host: server.host,
    caPem,
    caFile,
    rootKey: server.apiKey,
    client: (apiKey = server.apiKey) => new KmsClient({ endpoints: [server.host], apiKey, ca: caPem, timeoutMs: 15_000 }),
    stop: async () => {
      server.process.kill('SIGCONT');
      await server.stop();
    },
    start: async () => {
      server = await launch();
      ext.server = server;
    },
    pause: () => void server.process.kill('SIGSTOP'),
    resume: () => void server.process.kill('SIGCONT'),
  };
  return ext;
}

/**
 * The seed's steps 1 and 2 with the minkms binary: an enclave, an admin identity of it (`--admin`,
 * as the seed does) and the key. Returns the identity's API key (for `auth.key`).
 */
export async function provisionSeed(
  ext: ExternalKms,
  home: string,
  enclave = SEED_ENCLAVE,
  key = SEED_KEY,
): Promise<{ apiKey: string; identity: string; transcript: string }> {
  const env = { MINIO_KMS_SERVER: `https://${ext.host}`, HOME: home };
  let transcript = '';
  const run = async (args: string[], extra: Record<string, string> = {}) => {
    const r = await minkms(args, { ...env, ...extra });
    transcript += `$ minkms ${args.join(' ')}\n${r.out}`;
    if (r.code !== 0) throw new Error(`minkms ${args.join(' ')} failed (exit ${r.code}):\n${r.out}`);
    return r.stdout;
  };
  await run(['add-enclave', '-k', '-a', ext.rootKey, enclave]);
  const out = await run(['add-identity', '-k', '-a', ext.rootKey, '--enclave', enclave, '--admin']);
  const apiKey = /API Key\s+(k1:\S+)/.exec(out)?.[1];
  const identity = /Identity\s+(h1:\S+)/.exec(out)?.[1];
  if (!apiKey || !identity) throw new Error(`add-identity printed no API key and identity:\n${out}`);
  // Step 2 as written: no -k and no -a — MINIO_KMS_API_KEY is exported and the CA is trusted (~/.minkms/certs/CAs).
  await run(['add-key', '--enclave', enclave, key], { MINIO_KMS_API_KEY: ext.rootKey });
  return { apiKey, identity, transcript };
}

/** The seed's `hsm.minio.minkms` section (with `tls.ca` under it only when `caFile` is given). */
export function hsmSection(
  servers: readonly string[],
  apiKey: string,
  opts: { enclave?: string; key?: string; caFile?: string } = {},
): string {
  return `hsm:
  minio:
    minkms:
      server:
${servers.map((s) => `      - ${s}`).join('\n')}
      enclave: ${opts.enclave ?? SEED_ENCLAVE}
      key: ${opts.key ?? SEED_KEY}
      auth:
        key: ${apiKey}
${opts.caFile ? `      tls:\n        ca: ${opts.caFile}\n` : ''}`;
}

/** Writes a file the way editors and config management do (a new file renamed over the old one). */
export function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** Cluster KMS nodes on etcd, each with its own configuration file that a test edits while it runs. */
export interface ChainCluster {
  readonly ports: number[];
  readonly nodes: Array<TestServer | undefined>;
  readonly configFiles: string[];
  readonly prefix: string;
  /** The deployment's CA (every node's certificate is issued by it). */
  readonly caPem: string;
  start(i: number, opts: { hsmKey: string | null; allowSealed?: boolean }): Promise<TestServer>;
  stop(i: number): Promise<void>;
  /** Appends `text` to node `i`'s configuration file (as an operator adds a section). */
  append(i: number, text: string): void;
  edit(i: number, fn: (text: string) => string): void;
  client(i: number | undefined, apiKey: string, timeoutMs?: number): KmsClient;
  /** Node `i`'s status as node `i` itself reports it. */
  ownStatus(i: number, apiKey: string): Promise<ServerStatusResponse>;
  /** `GET path` on node `i` without a client certificate (or with `apiKey`): status and body. */
  get(i: number, path: string, apiKey?: string): Promise<{ status: number; body: string; error?: Error }>;
  /** Writes every node's output so far to `dir/<prefix>-node<i>.log` (for a failed test). */
  dump(dir: string): void;
  /** Stops every node. */
  close(): Promise<void>;
}

export async function startChainCluster(opts: {
  etcd: EtcdCluster;
  pki: Pki;
  work: string;
  prefix: string;
  size: number;
  /** Extra configuration for node `i` (appended before the node first starts). */
  extra?: (i: number) => string;
  /** The etcd endpoints node `i` is configured with; all of them by default. */
  endpoints?: (i: number, all: readonly string[]) => string[];
}): Promise<ChainCluster> {
  const { etcd, pki, work, prefix } = opts;
  const { certFile, keyFile } = pki.issue(`nodes-${prefix.replace(/\W/g, '')}`);
  const ports: number[] = [];
  for (let i = 0; i < opts.size; i++) ports.push(await freePort());
  const nodes: Array<TestServer | undefined> = ports.map(() => undefined);
  const outputs: string[][] = ports.map(() => []);
  const configFiles = ports.map((_, i) => join(work, `${prefix.replace(/\W/g, '')}-node${i}.yaml`));
  configFiles.forEach((f, i) =>
    writeFileSync(
      f,
      `version: v1
heartbeat: 500ms
tls:
  certs:
    - key: ${keyFile}
      cert: ${certFile}
  ca: ${pki.caFile}
store:
  backend: etcd
  etcd:
    endpoints: [${(opts.endpoints?.(i, etcd.endpoints) ?? etcd.endpoints).join(', ')}]
    prefix: ${prefix}
    timeout: 5s
${opts.extra?.(i) ?? ''}`,
    ),
  );
  const client = (i: number | undefined, apiKey: string, timeoutMs = 15_000) =>
    new KmsClient({
      endpoints: i === undefined ? ports.map((p) => `127.0.0.1:${p}`) : [`127.0.0.1:${ports[i]}`],
      apiKey: apiKey || undefined,
      ca: pki.caPem,
      timeoutMs,
    });
  const cluster: ChainCluster = {
    ports,
    nodes,
    configFiles,
    prefix,
    caPem: pki.caPem,
    start: async (i, o) => {
      const s = await startServer({
        dir: join(work, `${prefix.replace(/\W/g, '')}-node${i}`),
        hsmKey: o.hsmKey,
        config: readFileSync(configFiles[i]!, 'utf8'),
        configFile: configFiles[i],
        port: ports[i],
        args: ['--host', `127.0.0.1:${ports[i]}`],
        allowSealed: o.allowSealed,
        timeoutMs: 60_000,
      });
      nodes[i] = s;
      // Every run's output, kept for `dump` (a restarted node's earlier runs included).
      const runs = (outputs[i] ??= []);
      const at = runs.length;
      runs.push(s.output());
      s.process.stdout!.on('data', () => (runs[at] = s.output()));
      s.process.stderr!.on('data', () => (runs[at] = s.output()));
      return s;
    },
    stop: async (i) => {
      const s = nodes[i];
      nodes[i] = undefined;
      await s?.stop();
    },
    append: (i, text) => replaceFile(configFiles[i]!, readFileSync(configFiles[i]!, 'utf8') + text),
    edit: (i, fn) => replaceFile(configFiles[i]!, fn(readFileSync(configFiles[i]!, 'utf8'))),
    client,
    ownStatus: async (i, apiKey) => {
      const c = client(i, apiKey);
      try {
        const st = await c.clusterStatus();
        const own = [...st.nodesUp.values()].find((n) => n.host === `127.0.0.1:${ports[i]}`);
        if (!own) throw new Error(`node ${i} does not list itself as up`);
        return own;
      } finally {
        c.close();
      }
    },
    get: async (i, path, apiKey) => {
      const c = client(i, apiKey ?? '');
      try {
        const res = await c.transport.request({ method: 'GET', path });
        return { status: res.status, body: res.body.toString('utf8'), error: res.status === 200 ? undefined : responseError(res) };
      } finally {
        c.close();
      }
    },
    dump: (dir) => {
      mkdirSync(dir, { recursive: true });
      for (const [i, out] of outputs.entries())
        writeFileSync(join(dir, `${prefix.replace(/\W/g, '')}-node${i}.log`), out.join('\n--- restart ---\n'));
    },
    close: async () => {
      for (const n of nodes) {
        n?.process.kill('SIGCONT');
        await n?.kill();
      }
    },
  };
  return cluster;
}

/** Every line of `output` the last-resort handlers wrote (each one is a bug: a task that did not own its error). */
export function lastResortLines(output: string): string[] {
  return output.split('\n').filter((l) => /unhandled rejection|uncaught exception/.test(l));
}
