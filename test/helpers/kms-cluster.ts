/**
 * A KMS cluster of real `minkms server` processes on a real etcd cluster (test/helpers/etcd.ts
 * and server.ts), for the fault suite: start, stop, kill -9, pause (SIGSTOP) and restart KMS
 * nodes on fixed ports, and clients of one node or of all of them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KmsClient } from '../../src/client/client.js';
import { createSelfSignedServerCertificate } from '../../src/identity/client-cert.js';
import { startEtcdCluster, type EtcdCluster, type EtcdClusterOptions } from './etcd.js';
import { freePort, newHsmKey, removeDir, startServer, tempDir, type TestServer } from './server.js';

export interface KmsClusterOptions {
  nodes?: number;
  /** `store.etcd.timeout`; 5s by default. */
  timeout?: string;
  /** `store.etcd.max_staleness`; 1s by default. */
  maxStaleness?: string;
  etcd?: EtcdClusterOptions;
  /** The etcd endpoints node `i` is configured with; all of them by default. */
  nodeEndpoints?: (i: number, all: readonly string[]) => string[];
  /** More command-line arguments of every node (after `--host`). */
  args?: string[];
}

export interface KmsCluster {
  readonly etcd: EtcdCluster;
  readonly nodes: Array<TestServer | undefined>;
  readonly ports: number[];
  readonly apiKey: string;
  readonly ca: string[];
  readonly work: string;
  /** A client of node `i`, or (no index) of every node, with failover. */
  client(i?: number, timeoutMs?: number): KmsClient;
  startNode(i: number): Promise<TestServer>;
  /** SIGSTOP / SIGCONT of KMS node `i`. */
  pauseNode(i: number): void;
  resumeNode(i: number): void;
  close(): Promise<void>;
}

export async function startKmsCluster(opts: KmsClusterOptions = {}): Promise<KmsCluster> {
  const work = tempDir('minkms-faults-');
  const tls = createSelfSignedServerCertificate({ hosts: ['localhost', '127.0.0.1'], days: 30 });
  mkdirSync(join(work, 'tls'));
  writeFileSync(join(work, 'tls/private.key'), tls.key);
  writeFileSync(join(work, 'tls/public.crt'), tls.cert);
  const hsmKey = newHsmKey();
  const etcd = await startEtcdCluster(opts.etcd);
  const ports: number[] = [];
  for (let i = 0; i < (opts.nodes ?? 3); i++) ports.push(await freePort());
  const nodes: Array<TestServer | undefined> = ports.map(() => undefined);
  const config = (i: number): string => `version: v1
heartbeat: 500ms
tls:
  certs:
    - key: ${join(work, 'tls/private.key')}
      cert: ${join(work, 'tls/public.crt')}
store:
  backend: etcd
  etcd:
    endpoints: [${(opts.nodeEndpoints?.(i, etcd.endpoints) ?? etcd.endpoints).join(', ')}]
    prefix: /minkms-faults/
    timeout: ${opts.timeout ?? '5s'}
    max_staleness: ${opts.maxStaleness ?? '1s'}
`;
  const startNode = async (i: number): Promise<TestServer> => {
    const s = await startServer({
      dir: join(work, `node${i}`),
      hsmKey,
      config: config(i),
      port: ports[i],
      args: ['--host', `127.0.0.1:${ports[i]}`, ...(opts.args ?? [])],
    });
    nodes[i] = s;
    return s;
  };
  let apiKey = '';
  const cluster: KmsCluster = {
    etcd,
    nodes,
    ports,
    get apiKey() {
      return apiKey;
    },
    ca: [tls.cert],
    work,
    client: (i, timeoutMs = 15_000) =>
      new KmsClient({
        endpoints: i === undefined ? ports.map((p) => `127.0.0.1:${p}`) : [`127.0.0.1:${ports[i]}`],
        apiKey,
        ca: [tls.cert],
        timeoutMs,
      }),
    startNode,
    pauseNode: (i) => void nodes[i]?.process.kill('SIGSTOP'),
    resumeNode: (i) => void nodes[i]?.process.kill('SIGCONT'),
    close: async () => {
      for (const n of nodes) {
        n?.process.kill('SIGCONT');
        await n?.kill();
      }
      await etcd.close();
      removeDir(work);
    },
  };
  try {
    // The first node creates the cluster; the others join it.
    await startNode(0);
    await Promise.all(ports.slice(1).map((_, i) => startNode(i + 1)));
    apiKey = nodes[0]!.apiKey;
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}
