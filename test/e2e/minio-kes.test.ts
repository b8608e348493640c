/**
 * End to end with the real MinIO object store speaking the **KES** protocol to minkms: MinIO is
 * configured only through MINIO_KMS_KES_* — the way a KES deployment configures it — against a
 * minkms node with `kes.enabled`, then moved to the MinKMS protocol (MINIO_KMS_SERVER, …) on the
 * same keys, and back.
 *
 * The operator's steps are the CLI's: an enclave, MinIO's documented KES policy (API paths,
 * mapped onto commands by `add-policy`), an identity assigned by its KES (hex) spelling, MinIO's
 * `kes:v1:` API key from `minkms identity`; later a client certificate and key file
 * (`minkms identity --cert --key`) for MINIO_KMS_KES_CERT_FILE / _KEY_FILE.
 *
 * Checked: MinIO creates its default key through the KES API; SSE-S3, SSE-KMS with the default
 * and a named key, small and multipart (11 MiB: three parts) objects read back byte-identical with their
 * encryption headers; the data keys were generated and decrypted by minkms (audit log); restart of
 * minkms and MinIO; the same MinIO authenticated with a client certificate; switched to
 * MINIO_KMS_SERVER/MINIO_KMS_API_KEY it still reads every object written through the KES API,
 * and switched back, the KES API reads what the MinKMS protocol wrote.
 *
 * Runs with the MinIO e2e suite (`npm run test:e2e`); MINKMS_E2E=0 skips it. The MinIO binary is
 * the cached one of ./minio.ts.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { auditFileLines, clientFor, settledAuditLines } from '../helpers/clients.js';
import { MINKMS_BIN, freePort, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { MINIO_VERSION, ROOT_PASSWORD, ROOT_USER, minioBinary, readyStatus, startMinio, stopAllMinio, type MinioServer } from './minio.js';
import type { AuditEvent } from '../../src/server/audit.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const SKIP = process.env.MINKMS_E2E === '0' ? 'MINKMS_E2E=0' : false;
const BUILD_TIMEOUT_MS = 25 * 60_000;
const STEP_TIMEOUT_MS = 120_000;

const KiB = 1024;
const MiB = 1024 * KiB;
const MULTIPART_THRESHOLD = 8 * MiB;
const PART_SIZE = 5 * MiB;

const ENCLAVE = 'minio';
const BUCKET = 'kes-bucket';
const DEFAULT_KEY = 'minio-default';
const NAMED_KEY = 'minio-app-key';

/**
 * MinIO's KES policy as KES's documentation gives it (KES API paths). `add-policy` maps the key
 * paths onto KEY:CREATE, KEY:GENERATE, KEY:DECRYPT and KEY:LIST; status and metrics are allowed to
 * every identity of the enclave here anyway.
 */
const KES_POLICY = {
  allow: [
    '/v1/key/create/minio-*',
    '/v1/key/generate/minio-*',
    '/v1/key/decrypt/minio-*',
    '/v1/key/bulk/decrypt',
    '/v1/key/list/*',
    '/v1/status',
    '/v1/metrics',
  ],
};

type Mode = 'sse-s3' | 'sse-kms-default' | 'sse-kms-named';
const MODES: readonly Mode[] = ['sse-s3', 'sse-kms-default', 'sse-kms-named'];

interface StoredObject {
  key: string;
  mode: Mode;
  body: Buffer;
  sha256: string;
}

type AuditLine = AuditEvent & { seq: number };

let bin: string;
let work: string;
let kms: TestServer;
let kmsDir: string;
let kmsPort: number;
let hsmKey: string | undefined;
let configFile: string;
let auditFile: string;
/** Lines of the audit log before the running minkms started (it appends to its predecessor's). */
let auditBase = 0;
let home: string;
let caFile: string;
let minioData: string;
const objects: StoredObject[] = [];

/** `minkms ARGS…` as the root operator; resolves stdout. */
function minkms(args: readonly string[], input = ''): Promise<string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('MINIO_KMS_')) env[k] = v;
  Object.assign(env, { HOME: home, MINIO_KMS_SERVER: kms.url, MINIO_KMS_API_KEY: kms.apiKey, NO_COLOR: '1' });
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MINKMS_BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`minkms ${args.join(' ')}: exit ${code}\n${stdout}${stderr}`));
    });
    child.stdin.end(input);
  });
}

async function startKms(port = 0): Promise<void> {
  auditBase = auditFileLines(auditFile).length;
  kms = await startServer({
    dir: kmsDir,
    hsmKey,
    port,
    configFile,
    config: `version: v1\nkes:\n  enabled: true\n  enclave: ${ENCLAVE}\n`,
    args: ['--audit-file', auditFile],
  });
  kmsPort = kms.port;
  hsmKey = kms.hsmKey;
}

/** MinIO on the same data directory, with the KES variables (API key or certificate) or the MinKMS ones. */
function minio(kmsEnv: { kesApiKey: string } | { certFile: string; keyFile: string } | { apiKey: string }): Promise<MinioServer> {
  const endpoint = `https://127.0.0.1:${kmsPort}`;
  const kmsConfig =
    'apiKey' in kmsEnv
      ? { server: endpoint, enclave: ENCLAVE, sseKey: DEFAULT_KEY, apiKey: kmsEnv.apiKey }
      : { kes: { endpoint, keyName: DEFAULT_KEY, caPath: caFile, ...('kesApiKey' in kmsEnv ? { apiKey: kmsEnv.kesApiKey } : kmsEnv) } };
  return startMinio({ bin, dataDir: minioData, certsDir: join(work, 'minio-certs'), home, kms: kmsConfig });
}

/** The audit log so far, once the server wrote out everything it audited (it writes behind). */
async function audit(): Promise<AuditLine[]> {
  const root = clientFor(kms, kms.apiKey);
  try {
    return (await settledAuditLines(root, auditFile, auditBase)).map((l) => JSON.parse(l) as AuditLine);
  } finally {
    root.close();
  }
}

function summary(lines: readonly AuditLine[], identity: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of lines) {
    if (l.identity !== identity) continue;
    const k = `${l.command} ${l.object} ${l.outcome}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

const count = (lines: readonly AuditLine[], identity: string, command: string, outcome = 'ok') =>
  lines.filter((l) => l.identity === identity && l.command === command && l.outcome === outcome).length;

function s3For(m: MinioServer): S3Client {
  return new S3Client({
    endpoint: m.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ROOT_USER, secretAccessKey: ROOT_PASSWORD },
    maxAttempts: 1,
  });
}

function sseParams(mode: Mode): { ServerSideEncryption: ServerSideEncryption; SSEKMSKeyId?: string } {
  if (mode === 'sse-s3') return { ServerSideEncryption: 'AES256' };
  if (mode === 'sse-kms-default') return { ServerSideEncryption: 'aws:kms' };
  return { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: NAMED_KEY };
}

function checkHeaders(what: string, mode: Mode, got: { ServerSideEncryption?: string; SSEKMSKeyId?: string }): void {
  const want = mode === 'sse-s3' ? [`AES256`, undefined] : ['aws:kms', `arn:aws:kms:${mode === 'sse-kms-named' ? NAMED_KEY : DEFAULT_KEY}`];
  assert.equal(got.ServerSideEncryption, want[0], `${what}: x-amz-server-side-encryption`);
  assert.equal(got.SSEKMSKeyId, want[1], `${what}: x-amz-server-side-encryption-aws-kms-key-id`);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function put(s3: S3Client, key: string, mode: Mode, size: number): Promise<void> {
  const body = randomBytes(size);
  const sse = sseParams(mode);
  if (size <= MULTIPART_THRESHOLD) {
    checkHeaders(`PUT ${key}`, mode, await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ...sse })));
  } else {
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key, ...sse }));
    const parts: { ETag: string; PartNumber: number }[] = [];
    for (let off = 0, n = 1; off < size; off += PART_SIZE, n++) {
      const res = await s3.send(
        new UploadPartCommand({
          Bucket: BUCKET,
          Key: key,
          UploadId: created.UploadId,
          PartNumber: n,
          Body: body.subarray(off, off + PART_SIZE),
        }),
      );
      checkHeaders(`UploadPart ${n} of ${key}`, mode, res);
      parts.push({ ETag: res.ETag!, PartNumber: n });
    }
    await s3.send(
      new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: created.UploadId, MultipartUpload: { Parts: parts } }),
    );
  }
  objects.push({ key, mode, body, sha256: sha256(body) });
}

/** GET and HEAD of every object so far: byte-identical, with the encryption headers. */
async function readAll(t: TestContext, s3: S3Client, label: string): Promise<void> {
  for (const o of objects) {
    const res = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: o.key }));
    const got = Buffer.from(await res.Body!.transformToByteArray());
    assert.equal(got.length, o.body.length, `${label}: GET ${o.key}: length`);
    assert.equal(sha256(got), o.sha256, `${label}: GET ${o.key}: content differs`);
    checkHeaders(`${label}: GET ${o.key}`, o.mode, res);
    checkHeaders(`${label}: HEAD ${o.key}`, o.mode, await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: o.key })));
  }
  t.diagnostic(`${label}: ${objects.length} objects (${objects.reduce((s, o) => s + o.body.length, 0)} bytes) read back byte-identical`);
}

describe(`MinIO (${MINIO_VERSION}) with minkms through the KES API (MINIO_KMS_KES_*)`, { skip: SKIP }, () => {
  let user: { apiKey: string; kesApiKey: string; identity: string; kesIdentity: string };
  let m: MinioServer | undefined;
  let s3: S3Client | undefined;

  /** (Re)starts MinIO with `env` and a fresh S3 client for it. */
  async function restartMinio(env: Parameters<typeof minio>[0]): Promise<S3Client> {
    s3?.destroy();
    await m?.stop();
    m = await minio(env);
    s3 = s3For(m);
    return s3;
  }

  before(
    async () => {
      bin = await minioBinary((msg) => console.error(`e2e: ${msg}`), BUILD_TIMEOUT_MS);
      work = tempDir('minkms-e2e-kes-');
      kmsDir = join(work, 'kms');
      configFile = join(work, 'config.yaml');
      auditFile = join(work, 'audit.log');
      minioData = join(work, 'minio');
      home = join(work, 'home');
      await startKms(await freePort());
      caFile = kms.caFile;
      mkdirSync(join(home, '.minkms', 'certs', 'CAs'), { recursive: true });
      writeFileSync(join(home, '.minkms', 'certs', 'CAs', 'minkms.crt'), kms.caPem);
      // MinIO's own CA directory (the MinKMS protocol reads it; with KES, MINIO_KMS_KES_CAPATH names the file).
      mkdirSync(join(work, 'minio-certs', 'CAs'), { recursive: true });
      writeFileSync(join(work, 'minio-certs', 'CAs', 'minkms.crt'), kms.caPem);
    },
    { timeout: BUILD_TIMEOUT_MS + 60_000 },
  );

  after(async () => {
    s3?.destroy();
    await stopAllMinio();
    await kms?.stop();
    if (work) removeDir(work);
  });

  test('the operator: enclave, KES policy, identity by its KES spelling, a kes:v1: API key', { timeout: STEP_TIMEOUT_MS }, async (t) => {
    await minkms(['add-enclave', ENCLAVE]);
    await minkms(['add-policy', '-e', ENCLAVE, 'minio-sse', '-'], JSON.stringify(KES_POLICY));
    const [policy] = JSON.parse(await minkms(['get-policy', '-e', ENCLAVE, 'minio-sse', '--json'])) as {
      allow: Record<string, string[]>;
    }[];
    assert.deepEqual(policy!.allow, {
      'KEY:CREATE': ['minio-*'],
      'KEY:DECRYPT': ['minio-*'],
      'KEY:GENERATE': ['minio-*'],
      'KEY:LIST': ['*'],
    });
    const [created] = JSON.parse(await minkms(['add-identity', '-e', ENCLAVE, '--json'])) as { api_key: string }[];
    const both = JSON.parse(await minkms(['identity', '--json', created!.api_key])) as Record<string, string>;
    user = { apiKey: both.api_key!, kesApiKey: both.kes_api_key!, identity: both.identity!, kesIdentity: both.kes_identity! };
    assert.match(user.kesApiKey, /^kes:v1:/);
    await minkms(['set-policy', '-e', ENCLAVE, 'minio-sse', user.kesIdentity]);
    await minkms(['add-key', '-e', ENCLAVE, NAMED_KEY]);
    t.diagnostic(`MinIO's identity ${user.identity} = ${user.kesIdentity}`);
  });

  test('MinIO with MINIO_KMS_KES_API_KEY creates its default key through the KES API', { timeout: STEP_TIMEOUT_MS }, async (t) => {
    const mark = (await audit()).length;
    const s3 = await restartMinio({ kesApiKey: user.kesApiKey });
    assert.equal(await readyStatus(m!.endpoint), 200, "MinIO's readiness probe (a data key through the KES API)");
    const lines = (await audit()).slice(mark);
    assert.ok(
      lines.some((l) => l.identity === user.identity && l.command === 'KEY:CREATE' && l.object === DEFAULT_KEY && l.outcome === 'ok'),
      JSON.stringify(summary(lines, user.identity)),
    );
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    t.diagnostic(`MinIO at start-up: ${JSON.stringify(summary(lines, user.identity))}`);
  });

  test('SSE-S3, SSE-KMS (default and named key), 1 KiB and 11 MiB multipart: byte-identical', { timeout: STEP_TIMEOUT_MS }, async (t) => {
    const mark = (await audit()).length;
    for (const mode of MODES) for (const size of [KiB, 11 * MiB]) await put(s3!, `kes/${mode}/${size}`, mode, size);
    await readAll(t, s3!, 'through the KES API');
    const lines = (await audit()).slice(mark);
    const mine = summary(lines, user.identity);
    assert.ok(count(lines, user.identity, 'KEY:GENERATE') >= objects.length, JSON.stringify(mine));
    assert.ok(count(lines, user.identity, 'KEY:DECRYPT') >= objects.length, JSON.stringify(mine));
    // Nothing failed but what the policy does not grant (MinIO's periodic DescribeKey).
    for (const l of lines.filter((x) => x.identity === user.identity && x.outcome !== 'ok')) {
      assert.equal(l.command, 'KEY:STATUS', JSON.stringify(mine));
      assert.equal(l.status, 403, JSON.stringify(mine));
    }
    t.diagnostic(`audit: ${JSON.stringify(mine)}`);
  });

  test('restart minkms and MinIO: everything reads again', { timeout: STEP_TIMEOUT_MS }, async (t) => {
    s3?.destroy();
    await m!.stop();
    m = undefined;
    await kms.stop();
    await startKms(kmsPort);
    const client = await restartMinio({ kesApiKey: user.kesApiKey });
    assert.equal(await readyStatus(m!.endpoint), 200);
    await readAll(t, client, 'after restarts');
  });

  test(
    'the same MinIO with a client certificate and key file (MINIO_KMS_KES_CERT_FILE / _KEY_FILE)',
    { timeout: STEP_TIMEOUT_MS },
    async (t) => {
      const [created] = JSON.parse(await minkms(['add-identity', '-e', ENCLAVE, '--json'])) as { api_key: string; identity: string }[];
      const certFile = join(work, 'minio-kes.crt');
      const keyFile = join(work, 'minio-kes.key');
      const out = JSON.parse(await minkms(['identity', '--json', '--cert', certFile, '--key', keyFile, created!.api_key])) as {
        identity: string;
      };
      assert.equal(out.identity, created!.identity);
      await minkms(['set-policy', '-e', ENCLAVE, 'minio-sse', created!.identity]);
      const mark = (await audit()).length;
      const client = await restartMinio({ certFile, keyFile });
      await readAll(t, client, 'with a client certificate');
      for (const mode of MODES) await put(client, `cert/${mode}`, mode, KiB);
      await put(client, 'cert/multipart', 'sse-kms-named', 11 * MiB);
      await readAll(t, client, 'with a client certificate, after writing');
      const lines = (await audit()).slice(mark);
      assert.ok(count(lines, created!.identity, 'KEY:GENERATE') >= 4, JSON.stringify(summary(lines, created!.identity)));
      assert.ok(count(lines, created!.identity, 'KEY:DECRYPT') >= objects.length, JSON.stringify(summary(lines, created!.identity)));
    },
  );

  test(
    'switched to MINIO_KMS_SERVER / MINIO_KMS_API_KEY on the same keys: every object written through KES reads',
    { timeout: STEP_TIMEOUT_MS },
    async (t) => {
      const mark = (await audit()).length;
      const client = await restartMinio({ apiKey: user.apiKey });
      assert.equal(await readyStatus(m!.endpoint), 200);
      await readAll(t, client, 'through the MinKMS protocol');
      for (const mode of MODES) await put(client, `minkms/${mode}`, mode, KiB);
      const lines = (await audit()).slice(mark);
      assert.ok(count(lines, user.identity, 'KEY:DECRYPT') >= objects.length - MODES.length, JSON.stringify(summary(lines, user.identity)));
      assert.equal(
        lines.filter((l) => l.identity === user.identity && l.outcome !== 'ok').length,
        0,
        JSON.stringify(summary(lines, user.identity)),
      );
    },
  );

  test('and back to MINIO_KMS_KES_*: what the MinKMS protocol wrote reads through the KES API', { timeout: STEP_TIMEOUT_MS }, async (t) => {
    const client = await restartMinio({ kesApiKey: user.kesApiKey });
    await readAll(t, client, 'back through the KES API');
  });
});
