/**
 * End to end with the real MinIO object store: MinIO (built from the Go module proxy, see
 * ./minio.ts) encrypts objects with SSE-S3 and SSE-KMS using minkms as its KMS, configured
 * exactly as an operator would (MINIO_KMS_SERVER / _ENCLAVE / _SSE_KEY / _API_KEY, our CA in
 * MinIO's certs/CAs), with a User identity holding a least-privilege policy.
 *
 * Checked: MinIO's start-up paths (default key missing → MinIO creates it; present; no
 * KEY:CREATE permission → the 403 is tolerated), that MinIO needs exactly KEY:GENERATE and
 * KEY:DECRYPT (less breaks writing or reading), objects of 0 B, 1 KiB, 1 MiB and 17 MiB
 * (multipart) with SSE-S3, SSE-KMS with the default key, SSE-KMS with a named key and a
 * bucket's default encryption, read back byte-identical with the encryption headers; that
 * the data keys were generated and decrypted by minkms (audit log lines, metrics); key
 * rotation; restarts of minkms (MinIO still running) and of both.
 *
 * `npm run test:e2e` runs only this suite. `npm test` runs it too. MINKMS_E2E=0 skips it.
 * The MinIO binary is cached in ~/.cache/minkms-e2e (MINKMS_E2E_CACHE) and built with
 * `go install` when missing (about 3 minutes with empty Go caches on 2 cores).
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
  GetBucketEncryptionCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutBucketEncryptionCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type ServerSideEncryption,
} from '@aws-sdk/client-s3';
import { MINKMS_BIN, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.js';
import { auditFileLines, clientFor, settledAuditLines } from '../helpers/clients.js';
import type { KmsClient } from '../../src/client/client.js';
import { MINIO_VERSION, ROOT_PASSWORD, ROOT_USER, minioBinary, readyStatus, startMinio, stopAllMinio, type MinioServer } from './minio.js';
import type { AuditEvent } from '../../src/server/audit.js';

// The pinned SDK supports Node 20; newer releases will not (it says so on every start).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const SKIP = process.env.MINKMS_E2E === '0' ? 'MINKMS_E2E=0' : false;
const BUILD_TIMEOUT_MS = 25 * 60_000;
const STEP_TIMEOUT_MS = 120_000;

const KiB = 1024;
const MiB = 1024 * KiB;
/** Larger bodies go up as multipart uploads of 5 MiB parts (17 MiB = 3 × 5 MiB + 2 MiB). */
const MULTIPART_THRESHOLD = 8 * MiB;
const PART_SIZE = 5 * MiB;
const SIZES = [0, KiB, MiB, 17 * MiB];

/** What MinIO needs: data keys for writing, decryption for reading — of its keys only. */
const MINIMAL_POLICY = { allow: { 'KEY:GENERATE': ['minio-*'], 'KEY:DECRYPT': ['minio-*'] } };
/** Plus KEY:CREATE: MinIO may create its default key on first start (and `mc admin kms key create`). */
const CREATE_POLICY = { allow: { 'KEY:CREATE': ['minio-*'], 'KEY:GENERATE': ['minio-*'], 'KEY:DECRYPT': ['minio-*'] } };

const DEFAULT_KEY = 'minio-default';
const NAMED_KEY = 'minio-app-key';
/** A key of the enclave that the policy does not cover. */
const FOREIGN_KEY = 'other-key';

/** One audit line as written (docs/audit.md): the event plus its sequence number. */
type AuditLine = AuditEvent & { seq: number };

let bin: string;
let work: string;
let kms: TestServer;
let kmsDir: string;
let kmsPort: number;
let hsmKey: string | undefined;
let auditFile: string;
/** Lines of the audit log before the running minkms started (it appends to its predecessor's). */
let auditBase = 0;
let root: KmsClient;
let home: string;
let certsDir: string;

/** `minkms ARGS…` as the root (SysAdmin) operator; resolves stdout, rejects on failure. */
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

/** Creates an enclave with a policy `minio-sse` and a User identity holding it (the README's steps). */
async function provision(enclave: string, policy: object, keys: readonly string[]): Promise<{ apiKey: string; identity: string }> {
  await minkms(['add-enclave', enclave]);
  await minkms(['add-policy', '-e', enclave, 'minio-sse', '-'], JSON.stringify(policy));
  const [created] = JSON.parse(await minkms(['add-identity', '-e', enclave, '--tag', 'app=minio', '--json'])) as {
    api_key: string;
    identity: string;
  }[];
  await minkms(['set-policy', '-e', enclave, 'minio-sse', created!.identity]);
  for (const k of keys) await minkms(['add-key', '-e', enclave, k]);
  return { apiKey: created!.api_key, identity: created!.identity };
}

/** Starts minkms; again: with the same data directory, HSM key, port and audit log. */
async function startKms(port = 0): Promise<void> {
  auditBase = auditFileLines(auditFile).length;
  kms = await startServer({ dir: kmsDir, hsmKey, port, args: ['--audit-file', auditFile] });
  kmsPort = kms.port;
  hsmKey = kms.hsmKey;
  root = clientFor(kms, kms.apiKey);
}

function minio(enclave: string, apiKey: string, dataDir: string): Promise<MinioServer> {
  return startMinio({
    bin,
    dataDir,
    certsDir,
    home,
    kms: { server: `https://127.0.0.1:${kmsPort}`, enclave, sseKey: DEFAULT_KEY, apiKey },
  });
}

/** The audit log so far, once the server wrote out everything it audited (it writes behind). */
async function audit(): Promise<AuditLine[]> {
  return (await settledAuditLines(root, auditFile, auditBase)).map((l) => JSON.parse(l) as AuditLine);
}

function count(lines: readonly AuditLine[], identity: string, command: string, object?: string, outcome = 'ok'): number {
  return lines.filter(
    (l) => l.identity === identity && l.command === command && (object === undefined || l.object === object) && l.outcome === outcome,
  ).length;
}

/** `{command outcome object: n}` of one identity, for messages. */
function summary(lines: readonly AuditLine[], identity: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of lines) {
    if (l.identity !== identity) continue;
    const k = `${l.command} ${l.object} ${l.outcome}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

async function metric(series: string): Promise<number> {
  const res = await root.transport.request({ method: 'GET', path: '/v1/health/metrics' });
  assert.equal(res.status, 200);
  for (const line of res.body.toString('utf8').split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return 0;
}
const GENERATED = 'minkms_commands_total{command="KEY:GENERATE",status="200"}';
const DECRYPTED = 'minkms_commands_total{command="KEY:DECRYPT",status="200"}';

function s3For(m: MinioServer): S3Client {
  return new S3Client({
    endpoint: m.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ROOT_USER, secretAccessKey: ROOT_PASSWORD },
    maxAttempts: 1,
  });
}

type Mode = 'sse-s3' | 'sse-kms-default' | 'sse-kms-named' | 'bucket-default';
const MODES: readonly Mode[] = ['sse-s3', 'sse-kms-default', 'sse-kms-named', 'bucket-default'];

/** The request headers of a mode (bucket-default: none, the bucket's configuration applies). */
function sseParams(mode: Mode): { ServerSideEncryption?: ServerSideEncryption; SSEKMSKeyId?: string } {
  switch (mode) {
    case 'sse-s3':
      return { ServerSideEncryption: 'AES256' };
    case 'sse-kms-default':
      return { ServerSideEncryption: 'aws:kms' };
    case 'sse-kms-named':
      return { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: NAMED_KEY };
    case 'bucket-default':
      return {};
  }
}

/** The response headers a mode must give: algorithm and (SSE-KMS) key. */
function expected(mode: Mode): { sse: string; keyId: string | undefined; kmsKey: string } {
  switch (mode) {
    case 'sse-s3':
      return { sse: 'AES256', keyId: undefined, kmsKey: DEFAULT_KEY };
    case 'sse-kms-default':
      return { sse: 'aws:kms', keyId: `arn:aws:kms:${DEFAULT_KEY}`, kmsKey: DEFAULT_KEY };
    case 'sse-kms-named':
    case 'bucket-default':
      return { sse: 'aws:kms', keyId: `arn:aws:kms:${NAMED_KEY}`, kmsKey: NAMED_KEY };
  }
}

interface StoredObject {
  key: string;
  mode: Mode;
  body: Buffer;
  sha256: string;
  multipart: boolean;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function checkHeaders(what: string, mode: Mode, got: { ServerSideEncryption?: string; SSEKMSKeyId?: string }): void {
  const want = expected(mode);
  assert.equal(got.ServerSideEncryption, want.sse, `${what}: x-amz-server-side-encryption`);
  assert.equal(got.SSEKMSKeyId, want.keyId, `${what}: x-amz-server-side-encryption-aws-kms-key-id`);
}

/** PUT (multipart above 8 MiB) with the mode's encryption; checks the response headers. */
async function put(s3: S3Client, bucket: string, key: string, mode: Mode, body: Buffer): Promise<StoredObject> {
  const sse = sseParams(mode);
  const multipart = body.length > MULTIPART_THRESHOLD;
  if (!multipart) {
    const res = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...sse }));
    checkHeaders(`PUT ${key}`, mode, res);
  } else {
    // The SSE headers go with CreateMultipartUpload; MinIO answers them on every UploadPart
    // (not on Create or Complete), and on GET/HEAD of the finished object.
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...sse }));
    const parts: { ETag: string; PartNumber: number }[] = [];
    for (let off = 0, n = 1; off < body.length; off += PART_SIZE, n++) {
      const res = await s3.send(
        new UploadPartCommand({
          Bucket: bucket,
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
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId, MultipartUpload: { Parts: parts } }),
    );
  }
  return { key, mode, body, sha256: sha256(body), multipart };
}

/** GET and HEAD: byte-identical content, the encryption in the headers. */
async function check(s3: S3Client, bucket: string, o: StoredObject): Promise<void> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.key }));
  const got = Buffer.from(await res.Body!.transformToByteArray());
  assert.equal(got.length, o.body.length, `GET ${o.key}: length`);
  assert.equal(sha256(got), o.sha256, `GET ${o.key}: content differs`);
  checkHeaders(`GET ${o.key}`, o.mode, res);
  const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: o.key }));
  assert.equal(head.ContentLength, o.body.length, `HEAD ${o.key}: length`);
  checkHeaders(`HEAD ${o.key}`, o.mode, head);
}

/** The S3 error of a failed request: name and HTTP status. */
async function s3Error(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
  }
  assert.fail('the request succeeded');
}

/** A figure for the report: printed as a diagnostic of the test (`# …` in TAP output). */
function note(t: TestContext, msg: string): void {
  t.diagnostic(msg);
}

describe(`MinIO object store (${MINIO_VERSION}) with minkms as its KMS`, { skip: SKIP }, () => {
  before(
    async () => {
      bin = await minioBinary((m) => console.error(`e2e: ${m}`), BUILD_TIMEOUT_MS);
      work = tempDir('minkms-e2e-');
      kmsDir = join(work, 'kms');
      auditFile = join(work, 'audit.log');
      await startKms();
      // The operator trusts the KMS's certificate: the CLI in ~/.minkms/certs/CAs, MinIO in
      // <certs-dir>/CAs (its own TLS stays off: no public.crt there, S3 over plain HTTP).
      home = join(work, 'home');
      mkdirSync(join(home, '.minkms', 'certs', 'CAs'), { recursive: true });
      writeFileSync(join(home, '.minkms', 'certs', 'CAs', 'minkms.crt'), kms.caPem);
      certsDir = join(work, 'minio-certs');
      mkdirSync(join(certsDir, 'CAs'), { recursive: true });
      writeFileSync(join(certsDir, 'CAs', 'minkms.crt'), kms.caPem);
    },
    { timeout: BUILD_TIMEOUT_MS + 60_000 },
  );

  after(async () => {
    await stopAllMinio();
    root?.close();
    await kms?.stop();
    if (work) removeDir(work);
  });

  describe('start-up', () => {
    test('default key missing: MinIO creates it (KEY:GENERATE 404 → KEY:CREATE)', { timeout: STEP_TIMEOUT_MS }, async (t) => {
      const id = await provision('startup-create', CREATE_POLICY, []);
      const m = await minio('startup-create', id.apiKey, join(work, 'minio-startup-create'));
      try {
        const lines = await audit();
        const mine = lines.filter((l) => l.identity === id.identity);
        assert.deepEqual(
          mine.slice(0, 3).map((l) => `${l.command} ${l.object} ${l.outcome}`),
          [`KEY:GENERATE ${DEFAULT_KEY} ERR_KEY_NOT_FOUND`, `KEY:CREATE ${DEFAULT_KEY} ok`, `KEY:GENERATE ${DEFAULT_KEY} ok`],
          JSON.stringify(summary(lines, id.identity)),
        );
        const [key] = JSON.parse(await minkms(['stat-key', '-e', 'startup-create', DEFAULT_KEY, '--json'])) as {
          version: number;
          created_by: string;
        }[];
        assert.equal(key!.created_by, id.identity, 'the key was created by MinIO');
        assert.equal(await readyStatus(m.endpoint), 200, "MinIO's readiness probe (a data key from the KMS)");
        const s3 = s3For(m);
        await s3.send(new CreateBucketCommand({ Bucket: 'startup' }));
        await check(s3, 'startup', await put(s3, 'startup', 'o', 'sse-s3', randomBytes(KiB)));
        s3.destroy();
        note(t, `MinIO at start-up: ${JSON.stringify(summary(mine, id.identity))}`);
      } finally {
        await m.stop();
      }
    });

    test(
      'default key present, identity without KEY:CREATE: MinIO uses the key and creates nothing',
      { timeout: STEP_TIMEOUT_MS },
      async () => {
        const id = await provision('startup-present', MINIMAL_POLICY, [DEFAULT_KEY]);
        const m = await minio('startup-present', id.apiKey, join(work, 'minio-startup-present'));
        try {
          const lines = await audit();
          assert.equal(lines.find((l) => l.identity === id.identity)?.command, 'KEY:GENERATE');
          assert.equal(lines.find((l) => l.identity === id.identity)?.outcome, 'ok');
          assert.equal(lines.filter((l) => l.identity === id.identity && l.command === 'KEY:CREATE').length, 0);
          assert.equal(await readyStatus(m.endpoint), 200);
          const s3 = s3For(m);
          await s3.send(new CreateBucketCommand({ Bucket: 'startup' }));
          await check(s3, 'startup', await put(s3, 'startup', 'o', 'sse-kms-default', randomBytes(KiB)));
          s3.destroy();
        } finally {
          await m.stop();
        }
      },
    );

    test(
      'default key missing, identity without KEY:CREATE: the 403 is tolerated, MinIO starts, encrypts once the key exists',
      { timeout: STEP_TIMEOUT_MS },
      async () => {
        const id = await provision('startup-denied', MINIMAL_POLICY, []);
        const m = await minio('startup-denied', id.apiKey, join(work, 'minio-startup-denied'));
        try {
          const lines = await audit();
          const mine = lines.filter((l) => l.identity === id.identity);
          assert.deepEqual(
            mine.slice(0, 2).map((l) => `${l.command} ${l.object} ${l.outcome} ${l.status}`),
            [`KEY:GENERATE ${DEFAULT_KEY} ERR_KEY_NOT_FOUND 404`, `KEY:CREATE ${DEFAULT_KEY} ERR_NOT_ALLOWED 403`],
          );
          // MinIO runs, but its KMS is not usable: the readiness probe and SSE-S3 fail.
          assert.notEqual(await readyStatus(m.endpoint), 200);
          const s3 = s3For(m);
          await s3.send(new CreateBucketCommand({ Bucket: 'startup' }));
          const err = await s3Error(put(s3, 'startup', 'o', 'sse-s3', randomBytes(KiB)));
          assert.ok(err.status !== undefined && err.status >= 400, JSON.stringify(err));
          // The operator creates the key: MinIO encrypts without a restart.
          await minkms(['add-key', '-e', 'startup-denied', DEFAULT_KEY]);
          assert.equal(await readyStatus(m.endpoint), 200);
          await check(s3, 'startup', await put(s3, 'startup', 'o', 'sse-s3', randomBytes(KiB)));
          s3.destroy();
        } finally {
          await m.stop();
        }
      },
    );

    test(
      'least privilege: without KEY:DECRYPT MinIO cannot read, without KEY:GENERATE it cannot write',
      { timeout: STEP_TIMEOUT_MS },
      async () => {
        const noDecrypt = await provision('no-decrypt', { allow: { 'KEY:GENERATE': ['minio-*'] } }, [DEFAULT_KEY]);
        let m = await minio('no-decrypt', noDecrypt.apiKey, join(work, 'minio-no-decrypt'));
        try {
          const s3 = s3For(m);
          await s3.send(new CreateBucketCommand({ Bucket: 'least' }));
          await put(s3, 'least', 'o', 'sse-s3', randomBytes(KiB));
          const err = await s3Error(s3.send(new GetObjectCommand({ Bucket: 'least', Key: 'o' })));
          assert.equal(err.status, 403, JSON.stringify(err));
          assert.equal(err.name, 'kms:NotAuthorized');
          assert.ok(count(await audit(), noDecrypt.identity, 'KEY:DECRYPT', DEFAULT_KEY, 'ERR_NOT_ALLOWED') >= 1);
          s3.destroy();
        } finally {
          await m.stop();
        }

        const noGenerate = await provision('no-generate', { allow: { 'KEY:DECRYPT': ['minio-*'] } }, [DEFAULT_KEY]);
        m = await minio('no-generate', noGenerate.apiKey, join(work, 'minio-no-generate'));
        try {
          // MinIO's start-up check got 403 and went on.
          assert.ok(count(await audit(), noGenerate.identity, 'KEY:GENERATE', DEFAULT_KEY, 'ERR_NOT_ALLOWED') >= 1);
          assert.notEqual(await readyStatus(m.endpoint), 200);
          const s3 = s3For(m);
          await s3.send(new CreateBucketCommand({ Bucket: 'least' }));
          const err = await s3Error(put(s3, 'least', 'o', 'sse-s3', randomBytes(KiB)));
          assert.equal(err.status, 403, JSON.stringify(err));
          assert.equal(err.name, 'kms:NotAuthorized');
          s3.destroy();
        } finally {
          await m.stop();
        }
      },
    );
  });

  describe('SSE-S3 and SSE-KMS end to end', () => {
    const ENCLAVE = 'minio';
    const BUCKET = 'sse-bucket';
    let id: { apiKey: string; identity: string };
    let m: MinioServer;
    let s3: S3Client;
    let minioData: string;
    const objects: StoredObject[] = [];

    before(
      async () => {
        minioData = join(work, 'minio-main');
        // The operator's setup: enclave, least-privilege policy, User identity, default key, a
        // named key for SSE-KMS, and a key MinIO must not use.
        id = await provision(ENCLAVE, MINIMAL_POLICY, [DEFAULT_KEY, NAMED_KEY, FOREIGN_KEY]);
        m = await minio(ENCLAVE, id.apiKey, minioData);
        s3 = s3For(m);
      },
      { timeout: STEP_TIMEOUT_MS },
    );

    after(() => s3?.destroy());

    /** Reads every object so far; checks that minkms decrypted their data keys (audit, metrics). */
    async function readAll(t: TestContext, label: string): Promise<void> {
      const mark = (await audit()).length;
      const d0 = await metric(DECRYPTED);
      for (const o of objects) await check(s3, BUCKET, o);
      const lines = (await audit()).slice(mark);
      const d1 = await metric(DECRYPTED);
      for (const key of [DEFAULT_KEY, NAMED_KEY]) {
        const n = objects.filter((o) => expected(o.mode).kmsKey === key).length;
        // A GET needs the object key (and so does the ETag of HEAD): at least one decryption each.
        assert.ok(count(lines, id.identity, 'KEY:DECRYPT', key) >= n, `${label}: ${JSON.stringify(summary(lines, id.identity))}`);
      }
      assert.equal(
        lines.filter((l) => l.identity === id.identity && l.outcome !== 'ok').length,
        0,
        JSON.stringify(summary(lines, id.identity)),
      );
      assert.ok(d1 - d0 >= count(lines, id.identity, 'KEY:DECRYPT'), `metrics: ${d1 - d0} decryptions`);
      note(
        t,
        `${label}: ${objects.length} objects, ${objects.reduce((s, o) => s + o.body.length, 0)} bytes read; audit: ${JSON.stringify(summary(lines, id.identity))}; metrics KEY:DECRYPT +${d1 - d0}`,
      );
    }

    test('a bucket with default SSE-KMS encryption (named key)', { timeout: STEP_TIMEOUT_MS }, async () => {
      await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
      await s3.send(
        new PutBucketEncryptionCommand({
          Bucket: BUCKET,
          ServerSideEncryptionConfiguration: {
            Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: NAMED_KEY } }],
          },
        }),
      );
      const res = await s3.send(new GetBucketEncryptionCommand({ Bucket: BUCKET }));
      const rule = res.ServerSideEncryptionConfiguration?.Rules?.[0]?.ApplyServerSideEncryptionByDefault;
      assert.equal(rule?.SSEAlgorithm, 'aws:kms');
      assert.equal(rule?.KMSMasterKeyID, NAMED_KEY);
    });

    test(
      'PUT 0 B, 1 KiB, 1 MiB, 17 MiB (multipart) × SSE-S3, SSE-KMS default key, SSE-KMS named key, bucket default',
      { timeout: STEP_TIMEOUT_MS },
      async (t) => {
        const mark = (await audit()).length;
        const g0 = await metric(GENERATED);
        for (const mode of MODES) {
          for (const size of SIZES) objects.push(await put(s3, BUCKET, `${mode}/${size}`, mode, randomBytes(size)));
        }
        const lines = (await audit()).slice(mark);
        const g1 = await metric(GENERATED);
        // One data key per object (a multipart upload gets its key at CreateMultipartUpload),
        // generated by minkms under the key the mode names. Other GENERATE lines of the default key
        // come from MinIO itself (its configuration and IAM data are encrypted too).
        assert.equal(count(lines, id.identity, 'KEY:GENERATE', NAMED_KEY), 2 * SIZES.length, JSON.stringify(summary(lines, id.identity)));
        assert.ok(count(lines, id.identity, 'KEY:GENERATE', DEFAULT_KEY) >= 2 * SIZES.length, JSON.stringify(summary(lines, id.identity)));
        assert.equal(
          lines.filter((l) => l.identity === id.identity && l.outcome !== 'ok').length,
          0,
          JSON.stringify(summary(lines, id.identity)),
        );
        assert.ok(g1 - g0 >= 4 * SIZES.length, `metrics: ${g1 - g0} data keys`);
        note(
          t,
          `PUT ${objects.length} objects (${objects.reduce((s, o) => s + o.body.length, 0)} bytes); audit: ${JSON.stringify(summary(lines, id.identity))}; metrics KEY:GENERATE +${g1 - g0}`,
        );
      },
    );

    test(
      'GET and HEAD every object: byte-identical, encryption in the headers, keys decrypted by minkms',
      { timeout: STEP_TIMEOUT_MS },
      async (t) => {
        await readAll(t, 'read');
      },
    );

    test('a key outside the policy is refused (403), and MinIO says so', { timeout: STEP_TIMEOUT_MS }, async () => {
      const mark = (await audit()).length;
      const err = await s3Error(
        s3.send(
          new PutObjectCommand({ Bucket: BUCKET, Key: 'foreign', Body: 'x', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: FOREIGN_KEY }),
        ),
      );
      assert.equal(err.status, 403, JSON.stringify(err));
      assert.equal(err.name, 'kms:NotAuthorized');
      const lines = (await audit()).slice(mark);
      assert.equal(count(lines, id.identity, 'KEY:GENERATE', FOREIGN_KEY, 'ERR_NOT_ALLOWED'), 1);
    });

    test('rotate both keys (add-key --version): old and new objects read', { timeout: STEP_TIMEOUT_MS }, async (t) => {
      for (const key of [DEFAULT_KEY, NAMED_KEY]) {
        await minkms(['add-key', '-e', ENCLAVE, '--version', key]);
        const [status] = JSON.parse(await minkms(['stat-key', '-e', ENCLAVE, key, '--json'])) as { version: number }[];
        assert.equal(status!.version, 2, key);
      }
      for (const mode of MODES) {
        for (const size of [KiB, 17 * MiB]) objects.push(await put(s3, BUCKET, `rotated/${mode}/${size}`, mode, randomBytes(size)));
      }
      await readAll(t, 'after rotation');
    });

    test('minkms restarts while MinIO runs: MinIO fails while it is down, then reconnects', { timeout: STEP_TIMEOUT_MS }, async () => {
      root.close();
      await kms.stop();
      const err = await s3Error(
        s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: objects[1]!.key }), { abortSignal: AbortSignal.timeout(60_000) }),
      );
      assert.ok(err.status !== undefined && err.status >= 500, `GET without KMS: ${JSON.stringify(err)}`);
      await startKms(kmsPort);
      for (const o of objects.filter((x) => x.body.length <= MiB)) await check(s3, BUCKET, o);
    });

    test('restart MinIO and minkms: everything reads again', { timeout: STEP_TIMEOUT_MS }, async (t) => {
      await m.stop();
      root.close();
      await kms.stop();
      await startKms(kmsPort);
      m = await minio(ENCLAVE, id.apiKey, minioData);
      s3.destroy();
      s3 = s3For(m);
      assert.equal(await readyStatus(m.endpoint), 200);
      await readAll(t, 'after restarts');
    });

    test(
      'deleting version 1 of the named key: only the objects written after the rotation still read',
      { timeout: STEP_TIMEOUT_MS },
      async (t) => {
        // MinIO sends KEY:DECRYPT without a version, minkms tries the key's versions: with version 1
        // gone, the data keys of the objects written before the rotation no longer decrypt.
        await minkms(['rm-key', '-e', ENCLAVE, '-v', '1', NAMED_KEY]);
        const results: string[] = [];
        for (const o of objects.filter((x) => expected(x.mode).kmsKey === NAMED_KEY && x.body.length <= MiB)) {
          const mark = (await audit()).length;
          const rotated = o.key.startsWith('rotated/');
          let outcome = 'read';
          if (rotated || o.body.length === 0) {
            // An empty object has no content to decrypt: MinIO serves it although minkms refused.
            await check(s3, BUCKET, o);
          } else {
            const err = await s3Error(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: o.key })));
            assert.equal(err.name, 'kms:DecryptionFailed', `${o.key}: ${JSON.stringify(err)}`);
            outcome = `${err.name} ${err.status}`;
          }
          const lines = (await audit()).slice(mark);
          const mine = summary(lines, id.identity);
          if (rotated)
            assert.ok(
              count(lines, id.identity, 'KEY:DECRYPT', NAMED_KEY) >= 1 &&
                count(lines, id.identity, 'KEY:DECRYPT', NAMED_KEY, 'ERR_DECRYPT') === 0,
              `${o.key}: ${JSON.stringify(mine)}`,
            );
          else
            assert.ok(
              count(lines, id.identity, 'KEY:DECRYPT', NAMED_KEY, 'ERR_DECRYPT') >= 1 &&
                count(lines, id.identity, 'KEY:DECRYPT', NAMED_KEY) === 0,
              `${o.key}: ${JSON.stringify(mine)}`,
            );
          results.push(`${o.key}: ${outcome} ${JSON.stringify(mine)}`);
        }
        note(t, results.join('; '));
      },
    );

    test("the audit log's hash chain verifies across the restarts", { timeout: STEP_TIMEOUT_MS }, async (t) => {
      await m.stop();
      root.close();
      await kms.stop(); // flushes the audit log
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [MINKMS_BIN, 'audit', 'verify', auditFile], { stdio: ['ignore', 'pipe', 'pipe'] });
        let s = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (s += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (s += d));
        child.on('close', (code) => (code === 0 ? resolve(s) : reject(new Error(s))));
      });
      assert.match(out, /^\d+ lines verified$/m);
      const lines = auditFileLines(auditFile).map((l) => JSON.parse(l) as AuditLine); // the server is stopped: all written
      // Through start, writes, reads, rotation and restarts MinIO sent nothing but these two.
      assert.deepEqual([...new Set(lines.filter((l) => l.identity === id.identity).map((l) => l.command))].sort(), [
        'KEY:DECRYPT',
        'KEY:GENERATE',
      ]);
      note(
        t,
        `audit log: ${out.trim()}; MinIO (main enclave) in total: KEY:GENERATE ok ${count(lines, id.identity, 'KEY:GENERATE')}, KEY:DECRYPT ok ${count(lines, id.identity, 'KEY:DECRYPT')}`,
      );
    });
  });
});
