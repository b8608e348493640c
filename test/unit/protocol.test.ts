/**
 * Unit tests of src/protocol: proto3 primitives, the message codec, the message types derived
 * from the tables, framing and the command catalogue. Byte-exact vectors live in test/vectors/protocol-frames.json
 * (kms-wire.md §7). Failures read "case N (name): got X, want Y".
 */

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadVectors } from '../helpers/vectors.js';
import { inspect } from 'node:util';

import * as messages from '../../src/protocol/messages.js';
import {
  COMMANDS,
  CommandCode,
  EMPTY_BUFFER,
  FRAME_HEADER_SIZE,
  KmsError,
  PADDING_FIELD_NUMBER,
  Reader,
  Writer,
  commandByCode,
  commandByName,
  decodeMessage,
  encodeFrame,
  encodeFrames,
  encodeMessage,
  encodeMessageFrames,
  formatDuration,
  formatTimestamp,
  isCommandName,
  isSdkCommandName,
  newMessage,
  padResponseBody,
  paddingFor,
  parseFrames,
  protoJson,
  type ErrorCode,
  defineMessage,
  type MessageInit,
  type MessageSchema,
  type MessageType,
} from '../../src/protocol/index.js';

type AnySchema = MessageSchema<any>;
type Obj = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Helpers

const show = (v: unknown): string => inspect(v, { depth: 6, breakLength: Infinity, maxArrayLength: 20 });

/** Deep equality with the project's failure format. */
function check(i: number, name: string, got: unknown, want: unknown): void {
  assert.deepStrictEqual(got, want, `case ${i} (${name}): got ${show(got)}, want ${show(want)}`);
}

/** Asserts that fn throws a KmsError with the given code (and nothing else). */
function checkThrows(i: number, name: string, fn: () => unknown, code: ErrorCode): void {
  let err: unknown;
  let result: unknown;
  try {
    result = fn();
  } catch (e) {
    err = e;
  }
  if (err === undefined) assert.fail(`case ${i} (${name}): got result ${show(result)}, want KmsError ${code}`);
  if (!(err instanceof KmsError) || err.code !== code) {
    assert.fail(`case ${i} (${name}): got ${show(err)}, want KmsError ${code}`);
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const unhex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Reference varint encoder (BigInt, independent of pb.ts). */
function refVarint(v: bigint): string {
  let out = '';
  v = BigInt.asUintN(64, v);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out += b.toString(16).padStart(2, '0');
  } while (v !== 0n);
  return out;
}
const zigzag64 = (v: bigint): bigint => BigInt.asUintN(64, (v << 1n) ^ (v >> 63n));
/** A length-delimited field: key hex + length varint + inner hex. */
const ld = (key: string, inner: string): string => {
  const clean = inner.replace(/\s+/g, '');
  return key + refVarint(BigInt(clean.length / 2)) + clean;
};

/** All message schemas exported by messages.ts, by message name. */
const SCHEMAS: Record<string, AnySchema> = {};
for (const [k, v] of Object.entries(messages)) {
  if (k.endsWith('Schema')) SCHEMAS[k.slice(0, -'Schema'.length)] = v as AnySchema;
}

/** Revives vector values: {"$hex"} → Buffer, {"$date"} → Date. */
function revive(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revive);
  if (v !== null && typeof v === 'object') {
    const o = v as Obj;
    if (typeof o.$hex === 'string') return unhex(o.$hex);
    if (typeof o.$date === 'string') return new Date(o.$date);
    return Object.fromEntries(Object.entries(o).map(([k, e]) => [k, revive(e)]));
  }
  return v;
}

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// §7 frame vectors

interface Vector {
  name: string;
  code: number | null;
  message: string;
  value: Obj;
  hex: string;
}
const VECTORS: Vector[] = loadVectors<{ vectors: Vector[] }>('protocol-frames.json').vectors;

describe('protocol: kms-wire.md §7 vectors', () => {
  test('vector file is complete', () => {
    assert.ok(VECTORS.length >= 16, `got ${VECTORS.length} vectors, want ≥ 16`);
  });

  test('encode is byte-exact', () => {
    VECTORS.forEach((v, i) => {
      const schema = SCHEMAS[v.message];
      assert.ok(schema, `case ${i} (${v.name}): unknown message ${v.message}`);
      const value = revive(v.value) as Obj;
      const payload = encodeMessage(schema, value);
      const got = v.code === null ? payload : encodeFrame(v.code, payload);
      check(i, v.name, hex(got), v.hex);
      if (v.code !== null) {
        check(i, `${v.name} / encodeMessageFrames`, hex(encodeMessageFrames(v.code, schema, [value])), v.hex);
        check(i, `${v.name} / encodeFrames`, hex(encodeFrames(v.code, [payload])), v.hex);
      }
    });
  });

  test('decode round-trips', () => {
    VECTORS.forEach((v, i) => {
      const schema = SCHEMAS[v.message]!;
      let payload = unhex(v.hex);
      if (v.code !== null) {
        const frames = parseFrames(payload, 10);
        check(i, `${v.name} / frame count`, frames.length, 1);
        check(i, `${v.name} / frame code`, frames[0]!.code, v.code);
        payload = frames[0]!.payload;
      }
      const want = { ...(newMessage(schema) as Obj), ...(revive(v.value) as Obj) };
      const got = decodeMessage(schema, payload);
      check(i, v.name, got, want);
      // Canonical: re-encoding gives the same bytes.
      check(i, `${v.name} / re-encode`, hex(encodeMessage(schema, got)), hex(payload));
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Round trip of every message with all fields set

const T1 = new Date(Date.UTC(2024, 2, 26, 17, 52, 38, 123));
const T2 = new Date(Date.UTC(1969, 6, 20, 20, 17, 40, 0)); // negative seconds
const ID1 = 'h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw';
const ID2 = 'h1:l4AoVm6xKAVGsfo8J_ttCOC6Odgq3GJLHg5NtAdOAr0';
const bytes = (n: number, seed = 1): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

const keyStatus = { name: 'my-key', version: 3, type: 'ChaCha20', createdAt: T1, createdBy: ID1 };
const serverStatus = {
  version: '2024-03-26T17-52-38Z',
  apiVersion: 'v1',
  host: '10.0.0.1:7373',
  upTime: 86_400_000.25,
  role: 'Leader',
  commit: Number.MAX_SAFE_INTEGER,
  nodes: new Map([
    [0, '10.0.0.1:7373'],
    [1, '10.0.0.2:7373'],
  ]),
  id: 1,
  leaderId: -Number.MAX_SAFE_INTEGER,
  lastHeartbeat: 250,
  heartbeatInterval: 500.5,
  electionTimeout: -1500,
  os: 'linux',
  arch: 'x64',
  cpus: 8,
  usableCpus: 4,
  heapMemInUse: 2 ** 40 + 1,
  stackMemInUse: 65536,
  hsms: ['hsm:minio:soft'],
  configuredHsms: ['hsm:minio:soft', ''],
  pendingHsms: { 'hsm:minio:minkms:e/k': 'unreachable' },
  sealed: true,
  rootIdentity: 'h1:root',
  rootIdentitySource: 'hsm:minio:soft',
  storeState: 'fresh',
  lastQuorum: 120,
};
const identity = {
  identity: ID2,
  privilege: 3,
  policy: 'read-only',
  createdAt: T2,
  createdBy: ID1,
  isServiceAccount: true,
  serviceAccounts: [ID1, ID2],
  tags: { team: 'storage', 'a.b/c-d_e': 'x' },
};
const ruleSets = {
  'KEY:GENERATE': { rules: { 'my-*': {}, 'minio-default-key': {} } },
  'KEY:DECRYPT': { rules: { '*': {} } },
};
const stackFrame = { function: 'main.run', file: '/src/main.go', line: 42 };
const logRequest = { method: 'POST', path: '/v1/kms/minio', identity: ID2, ip: '::1' };

/** Message name → its type, for every schema that messages.ts exports. */
type Messages = {
  [K in keyof typeof messages as K extends `${infer N}Schema` ? N : never]: MessageType<(typeof messages)[K]>;
};

/**
 * Every message of messages.ts with every field set to a non-default value. Typed by the types
 * derived from the tables: a message without a sample, or a sample that does not fit its table,
 * does not compile.
 */
const TYPED_SAMPLES = {
  Rule: {},
  RuleSet: { rules: { 'my-key*': {}, '*': {} } },
  ClusterStatusRequest: {},
  ListRequest: { prefix: 'my-', continueAt: 'my-key-0042', limit: 100 },
  AddClusterNodeRequest: { host: '10.0.0.3:7373' },
  RemoveClusterNodeRequest: { host: '10.0.0.3', deleteClusterOnHost: true },
  EditClusterRequest: { host: '10.0.0.1', removeIds: [0, 1, 127, 128, 300, 0xffffffff] },
  AddHSMRequest: { name: 'hsm:minio:soft', overwrite: true },
  RemoveHSMRequest: { name: 'hsm:vault' },
  CreateEnclaveRequest: { name: 'minio' },
  DeleteEnclaveRequest: { name: 'minio' },
  EnclaveStatusRequest: { name: 'tenant-1' },
  LogRequest: { level: -4, message: 'héllo ✓ 🔑', since: T1, traceLevel: 8 },
  CreateKeyRequest: { name: 'my-key', type: 'ChaCha20', addVersion: true },
  ImportKeyRequest: { name: 'imported', type: 'AES256', key: bytes(32) },
  DeleteKeyRequest: { name: 'my-key', version: 7, allVersions: true },
  KeyStatusRequest: { name: 'my-key', version: 0xffffffff },
  EncryptRequest: { name: 'my-key', version: 3, plaintext: bytes(1000), associatedData: bytes(9, 7) },
  GenerateKeyRequest: { name: 'my-key', version: 2, associatedData: Buffer.from('{"a":"b"}'), length: 1024 },
  MACRequest: { name: 'mac-key', version: 1, message: bytes(200) },
  DecryptRequest: { name: 'my-key', version: 1, ciphertext: bytes(76), associatedData: Buffer.from('x') },
  CreatePolicyRequest: { name: 'p', allow: ruleSets, deny: { 'KEY:DELETE': { rules: { '*': {} } } } },
  PolicyRequest: { name: 'p' },
  DeletePolicyRequest: { name: 'p' },
  AssignPolicyRequest: { identity: ID1, policy: 'p' },
  CreateIdentityRequest: { identity: ID1, privilege: 'User', isServiceAccount: true, tags: { team: 'a', env: 'prod' } },
  IdentityRequest: { identity: ID1 },
  DeleteIdentityRequest: { identity: ID2 },
  ListKeyVersionsRequest: { name: 'my-key', continueAt: 5, limit: 10 },

  ErrResponse: { message: 'key does not exist' },
  VersionResponse: { version: '2024-03-26T17-52-38Z', commit: 'abc123', apiVersion: 'v1', host: 'kms:7373', fips140: true },
  ServerStatusResponse: serverStatus,
  ClusterStatusResponse: {
    nodesUp: new Map([
      [1, serverStatus],
      [3, { ...serverStatus, id: 3, role: 'Follower', leaderId: 1, nodes: new Map([[7, 'x']]) }],
    ]),
    nodesDown: new Map([[2, '10.0.0.2:7373']]),
  },
  ProfileStatusResponse: {
    started: T1,
    cpu: true,
    heap: true,
    goroutine: true,
    thread: true,
    blockRate: 1,
    mutexFraction: 5,
  },
  EnclaveStatusResponse: { name: 'minio', createdAt: T1, createdBy: ID1 },
  ListEnclavesResponse: {
    enclaves: [
      { name: 'a', createdAt: T1, createdBy: ID1 },
      { name: 'b', createdAt: T2, createdBy: '' },
    ],
    continueAt: 'c',
  },
  KeyStatusResponse: keyStatus,
  ListKeysResponse: { keys: [keyStatus, { ...keyStatus, name: 'other', version: 1 }], continueAt: 'zz' },
  EncryptResponse: { version: 1, ciphertext: bytes(76) },
  DecryptResponse: { plaintext: bytes(32) },
  GenerateKeyResponse: { version: 1, plaintext: bytes(32), ciphertext: bytes(76, 9) },
  MACResponse: { version: 2, mac: bytes(32) },
  PolicyStatusResponse: { name: 'p', createdAt: T1, createdBy: ID1 },
  PolicyResponse: { name: 'p', allow: ruleSets, deny: { 'POLICY:DELETE': { rules: { x: {} } } }, createdAt: T2, createdBy: ID2 },
  ListPoliciesResponse: { policies: [{ name: 'p', createdAt: T1, createdBy: ID1 }], continueAt: 'q' },
  IdentityResponse: identity,
  ListIdentitiesResponse: { identities: [identity, { ...identity, identity: ID1, tags: {} }], continueAt: ID2 },
  StackFrame: stackFrame,
  LogRecordRequest: logRequest,
  LogRecord: { level: 8, time: T1, message: 'disk full', trace: [stackFrame, { ...stackFrame, line: 1 }], request: logRequest },
  LegacyLogRequest: {
    level: -4,
    message: 'disk',
    since: T1,
    method: 'POST',
    path: '/v1/kms/minio',
    identity: ID1,
    ip: '10.0.0.1',
    traceLevel: 8,
  },
  ListKeyVersionsResponse: { versions: [keyStatus, { ...keyStatus, version: 4 }], continueAt: 6 },
} satisfies Messages;
const SAMPLES: Record<string, Obj> = TYPED_SAMPLES;

function isDefaultish(v: unknown): boolean {
  if (v === undefined || v === '' || v === 0 || v === false) return true;
  if (v instanceof Uint8Array || Array.isArray(v)) return v.length === 0;
  if (v instanceof Map) return v.size === 0;
  if (v instanceof Date) return false;
  if (typeof v === 'object' && v !== null) return Object.keys(v).length === 0;
  return false;
}

describe('protocol: message round trips', () => {
  test('every message has a full sample', () => {
    const names = Object.keys(SCHEMAS).sort();
    check(0, 'schemas vs samples', names, Object.keys(SAMPLES).sort());
    names.forEach((n, i) => {
      const schema = SCHEMAS[n]!;
      for (const f of schema.fields) {
        assert.ok(!isDefaultish(SAMPLES[n]![f.name]), `case ${i} (${n}): field ${f.name} is not set in the sample`);
      }
    });
  });

  test('decode(encode(x)) == x and encoding is canonical', () => {
    Object.keys(SAMPLES).forEach((n, i) => {
      const schema = SCHEMAS[n]!;
      const enc = encodeMessage(schema, SAMPLES[n]!);
      const dec = decodeMessage(schema, enc);
      check(i, n, dec, SAMPLES[n]);
      check(i, `${n} / re-encode`, hex(encodeMessage(schema, dec)), hex(enc));
      // Decoding from a non-Buffer Uint8Array at an offset gives the same result.
      const wrapped = new Uint8Array(enc.length + 7);
      wrapped.set(enc, 3);
      check(i, `${n} / Uint8Array view`, decodeMessage(schema, wrapped.subarray(3, 3 + enc.length)), SAMPLES[n]);
    });
  });

  test('defaults are omitted, absent fields decode to defaults', () => {
    Object.keys(SAMPLES).forEach((n, i) => {
      const schema = SCHEMAS[n]!;
      check(i, `${n} / empty object`, encodeMessage(schema, {}).length, 0);
      check(i, `${n} / decode empty`, decodeMessage(schema, EMPTY_BUFFER), newMessage(schema));
      const defaults = newMessage(schema) as Obj;
      check(i, `${n} / encode defaults`, encodeMessage(schema, defaults).length, 0);
    });
  });

  test('large nested messages (multi-byte length prefixes)', () => {
    const big = { ...serverStatus, hsms: Array.from({ length: 2000 }, (_, j) => `hsm-${j}`), host: 'h'.repeat(300) };
    const cases: Array<[string, AnySchema, Obj]> = [
      ['ClusterStatusResponse ≥16 KiB node', messages.ClusterStatusResponseSchema, { nodesUp: new Map([[9, big]]) }],
      [
        'ListKeysResponse 5000 keys',
        messages.ListKeysResponseSchema,
        {
          keys: Array.from({ length: 5000 }, (_, j) => ({ ...keyStatus, name: `key-${j}` })),
          continueAt: '',
        },
      ],
      ['EncryptRequest 1 MiB plaintext', messages.EncryptRequestSchema, { ...SAMPLES.EncryptRequest, plaintext: bytes(1 << 20) }],
      ['ErrResponse 20000-char string', messages.ErrResponseSchema, { message: 'é'.repeat(20000) }],
    ];
    cases.forEach(([name, schema, value], i) => {
      const dec = decodeMessage(schema, encodeMessage(schema, value)) as Obj;
      check(i, name, dec, { ...(newMessage(schema) as Obj), ...value });
    });
  });

  test('__proto__ map keys are plain own properties', () => {
    const tags: Record<string, string> = {};
    Object.defineProperty(tags, '__proto__', { value: 'x', enumerable: true, writable: true, configurable: true });
    const enc = encodeMessage(messages.CreateIdentityRequestSchema, { identity: ID1, tags });
    const dec = decodeMessage(messages.CreateIdentityRequestSchema, enc);
    check(0, 'prototype untouched', Object.getPrototypeOf(dec.tags), Object.prototype);
    check(1, 'own key', Object.getOwnPropertyDescriptor(dec.tags, '__proto__')?.value, 'x');
  });
});

// ---------------------------------------------------------------------------------------------
// Non-canonical input

interface DecodeCase {
  name: string;
  schema: AnySchema;
  hex: string;
  want: Obj;
}

const m = messages;
const DECODE_CASES: DecodeCase[] = [
  {
    name: 'fields out of order',
    schema: m.GenerateKeyRequestSchema,
    hex: '2020 1002 0a066d792d6b6579',
    want: { name: 'my-key', version: 2, length: 32 },
  },
  {
    name: 'duplicate scalars: last wins',
    schema: m.KeyStatusRequestSchema,
    hex: '0a0161 1001 0a0162 1005',
    want: { name: 'b', version: 5 },
  },
  {
    name: 'unknown fields of every wire type',
    schema: m.KeyStatusRequestSchema,
    hex: '9806ffffffffffffffffff01 99060102030405060708 9a0602abcd 0a016b 9d0601020304 f8ffffff0f00 9a0600',
    want: { name: 'k' },
  },
  { name: 'unknown field number 2^29-1 (5-byte tag)', schema: m.ErrResponseSchema, hex: 'faffffff0f0161 0a0178', want: { message: 'x' } },
  { name: 'unpacked repeated uint32', schema: m.EditClusterRequestSchema, hex: '1001 10ac02', want: { removeIds: [1, 300] } },
  { name: 'packed and unpacked mixed', schema: m.EditClusterRequestSchema, hex: '1001 12020203 1004', want: { removeIds: [1, 2, 3, 4] } },
  { name: 'empty packed list', schema: m.EditClusterRequestSchema, hex: '1200', want: {} },
  { name: 'explicit default values', schema: m.CreateKeyRequestSchema, hex: '0a00 1200 1800', want: {} },
  { name: 'bool from multi-byte varint', schema: m.CreateKeyRequestSchema, hex: '188001', want: { addVersion: true } },
  { name: 'bool 2 is true', schema: m.CreateKeyRequestSchema, hex: '1802', want: { addVersion: true } },
  {
    name: 'uint32 from 10-byte varint is truncated',
    schema: m.KeyStatusRequestSchema,
    hex: '10ffffffffffffffffff01',
    want: { version: 0xffffffff },
  },
  { name: 'uint32 from 6-byte varint is truncated', schema: m.KeyStatusRequestSchema, hex: '10818080809001', want: { version: 1 } },
  {
    name: 'timestamp with nanos (ms precision)',
    schema: m.KeyStatusResponseSchema,
    hex: '22060801 10c0843d',
    want: { createdAt: new Date(1001) },
  },
  {
    name: 'timestamp sub-ms nanos truncated',
    schema: m.KeyStatusResponseSchema,
    hex: '22060801 10bf843d',
    want: { createdAt: new Date(1000) },
  },
  { name: 'empty timestamp = epoch', schema: m.KeyStatusResponseSchema, hex: '2200', want: { createdAt: new Date(0) } },
  {
    name: 'timestamp: last occurrence wins',
    schema: m.KeyStatusResponseSchema,
    hex: '22020801 22020802',
    want: { createdAt: new Date(2000) },
  },
  { name: 'timestamp with unknown field', schema: m.KeyStatusResponseSchema, hex: '2204 0801 1801', want: { createdAt: new Date(1000) } },
  {
    name: 'negative timestamp',
    schema: m.KeyStatusResponseSchema,
    hex: '220b08ffffffffffffffffff01',
    want: { createdAt: new Date(-1000) },
  },
  {
    name: 'duration seconds+nanos',
    schema: m.ServerStatusResponseSchema,
    hex: ld('22', `0801 10${refVarint(50_000_000n)}`),
    want: { upTime: 1050 },
  },
  {
    name: 'repeated messages append',
    schema: m.LogRecordSchema,
    hex: '22030a0166 22030a0167',
    want: {
      trace: [
        { function: 'f', file: '', line: 0 },
        { function: 'g', file: '', line: 0 },
      ],
    },
  },
  {
    name: 'map: duplicate key, last wins',
    schema: m.CreateIdentityRequestSchema,
    hex: '22060a0161120131 22060a0161120132',
    want: { tags: { a: '2' } },
  },
  { name: 'map: value before key', schema: m.CreateIdentityRequestSchema, hex: '2206120131 0a0161', want: { tags: { a: '1' } } },
  { name: 'map: missing value', schema: m.CreateIdentityRequestSchema, hex: '22030a0161', want: { tags: { a: '' } } },
  { name: 'map: missing key', schema: m.CreateIdentityRequestSchema, hex: '2203120131', want: { tags: { '': '1' } } },
  { name: 'map: unknown field in entry', schema: m.CreateIdentityRequestSchema, hex: '22080a0161 1805 120131', want: { tags: { a: '1' } } },
  {
    name: 'uint32-keyed map: missing key is 0',
    schema: m.ClusterStatusResponseSchema,
    hex: '1203120178',
    want: { nodesDown: new Map([[0, 'x']]) },
  },
  {
    name: 'message map value missing → default message',
    schema: m.ClusterStatusResponseSchema,
    hex: '0a020805',
    want: { nodesUp: new Map([[5, newMessage(m.ServerStatusResponseSchema)]]) },
  },
  {
    name: 'message map value twice in one entry merges',
    schema: m.ClusterStatusResponseSchema,
    hex: ld('0a', '0805 12030a0176 12024001'),
    want: { nodesUp: new Map([[5, { ...newMessage(m.ServerStatusResponseSchema), version: 'v', id: 1 }]]) },
  },
  {
    name: 'policy map with missing rule set',
    schema: m.PolicyResponseSchema,
    hex: '12050a034b4559',
    want: { allow: { KEY: { rules: {} } } },
  },
  { name: 'sint32 -4 (vector)', schema: m.LogRequestSchema, hex: '0807', want: { level: -4 } },
  {
    name: 'sint32 from 10-byte varint uses low 32 bits',
    schema: m.LogRequestSchema,
    hex: `08${refVarint(0xffffffff00000007n)}`,
    want: { level: -4 },
  },
  {
    name: 'sint64 extremes',
    schema: m.ServerStatusResponseSchema,
    hex: `48${refVarint(zigzag64(-(2n ** 53n - 1n)))}`,
    want: { leaderId: -Number.MAX_SAFE_INTEGER },
  },
  {
    name: 'uint64 2^53-1',
    schema: m.ServerStatusResponseSchema,
    hex: `30${refVarint(2n ** 53n - 1n)}`,
    want: { commit: Number.MAX_SAFE_INTEGER },
  },
  {
    name: 'long UTF-8 string (native path)',
    schema: m.ErrResponseSchema,
    hex: `0a48${Buffer.from('✓'.repeat(24)).toString('hex')}`,
    want: { message: '✓'.repeat(24) },
  },
];

describe('protocol: non-canonical input', () => {
  test('decodes leniently', () => {
    DECODE_CASES.forEach((c, i) => {
      const want = { ...(newMessage(c.schema) as Obj), ...c.want };
      check(i, c.name, decodeMessage(c.schema, unhex(c.hex)), want);
    });
  });

  test('decoded bytes alias the input', () => {
    const input = unhex('1a04aaaaaaaa');
    const dec = decodeMessage(m.DecryptRequestSchema, input);
    input[2] = 0x11;
    check(0, 'alias', hex(dec.ciphertext), '11aaaaaa');
    check(1, 'is Buffer', Buffer.isBuffer(dec.ciphertext), true);
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed input

const MALFORMED: Array<[string, AnySchema, string]> = [
  ['truncated tag', m.CreateKeyRequestSchema, '80'],
  ['truncated varint value', m.KeyStatusRequestSchema, '1080'],
  ['truncated 9-byte varint', m.KeyStatusRequestSchema, '10ffffffffffffffffff'],
  ['varint longer than 10 bytes', m.KeyStatusRequestSchema, '10ffffffffffffffffffff01'],
  ['varint 10th byte > 1', m.KeyStatusRequestSchema, '10ffffffffffffffffff02'],
  ['varint 10th byte 0x7f after zeros', m.KeyStatusRequestSchema, `10${'80'.repeat(9)}7f`],
  ['uint64 varint 10th byte > 1', m.ServerStatusResponseSchema, '30ffffffffffffffffff02'],
  ['unknown varint overflow', m.KeyStatusRequestSchema, '9806ffffffffffffffffff02'],
  ['bool varint overflow', m.CreateKeyRequestSchema, '18ffffffffffffffffffff'],
  ['length beyond end', m.CreateKeyRequestSchema, '0a056162'],
  ['huge length 2^32-1', m.CreateKeyRequestSchema, '0affffffff0f61'],
  ['huge 64-bit length', m.CreateKeyRequestSchema, '0affffffffffffffffff01'],
  ['huge length on bytes', m.DecryptRequestSchema, '1a8080808008'],
  ['unknown LEN field beyond end', m.KeyStatusRequestSchema, '9a061000'],
  ['string as varint', m.CreateKeyRequestSchema, '0801'],
  ['uint32 as LEN', m.KeyStatusRequestSchema, '120100'],
  ['uint32 as fixed32', m.KeyStatusRequestSchema, '1501000000'],
  ['bool as fixed64', m.CreateKeyRequestSchema, '190100000000000000'],
  ['message as varint', m.ListKeysResponseSchema, '0801'],
  ['timestamp as varint', m.KeyStatusResponseSchema, '2001'],
  ['duration as fixed32', m.ServerStatusResponseSchema, '2501000000'],
  ['map as varint', m.CreateIdentityRequestSchema, '2001'],
  ['LEN inside timestamp', m.KeyStatusResponseSchema, '22020a00'],
  ['map key wrong wire type', m.CreateIdentityRequestSchema, '220408011200'],
  ['map value wrong wire type', m.CreateIdentityRequestSchema, '22040a001001'],
  ['uint32 map key wrong wire type', m.ClusterStatusResponseSchema, '12040a001200'],
  ['repeated string as varint', m.ServerStatusResponseSchema, '980101'],
  ['repeated uint32 as fixed32', m.EditClusterRequestSchema, '1501000000'],
  ['invalid UTF-8', m.CreateKeyRequestSchema, '0a02c328'],
  ['overlong UTF-8', m.CreateKeyRequestSchema, '0a02c080'],
  ['UTF-8 surrogate', m.CreateKeyRequestSchema, '0a03eda080'],
  ['truncated UTF-8 sequence', m.CreateKeyRequestSchema, '0a0261e2'],
  ['invalid UTF-8 in long string', m.ErrResponseSchema, `0a47${'61'.repeat(70)}ff`],
  ['invalid UTF-8 in map key', m.CreateIdentityRequestSchema, '22050a01ff1200'],
  ['invalid UTF-8 in map value', m.CreateIdentityRequestSchema, '22050a001201ff'],
  ['invalid UTF-8 in repeated string', m.IdentityResponseSchema, '3a01ff'],
  ['invalid UTF-8 deep inside', m.ClusterStatusResponseSchema, '0a07080112030a01ff'],
  ['start group on known field', m.CreateKeyRequestSchema, '0b0c'],
  ['start group on unknown field', m.CreateKeyRequestSchema, '9b069c06'],
  ['lone end group', m.CreateKeyRequestSchema, '0c'],
  ['wire type 6', m.CreateKeyRequestSchema, '0e00'],
  ['wire type 7', m.CreateKeyRequestSchema, '0f00'],
  ['field number 0 (varint)', m.CreateKeyRequestSchema, '0000'],
  ['field number 0 (LEN)', m.CreateKeyRequestSchema, '0200'],
  ['field number ≥ 2^29', m.CreateKeyRequestSchema, '808080808001' + '00'],
  ['truncated fixed64', m.CreateKeyRequestSchema, '9906010203'],
  ['truncated fixed32', m.CreateKeyRequestSchema, '9d060102'],
  ['uint64 = 2^53', m.ServerStatusResponseSchema, `30${refVarint(2n ** 53n)}`],
  ['uint64 = 2^64-1', m.ServerStatusResponseSchema, '30ffffffffffffffffff01'],
  ['sint64 = 2^53', m.ServerStatusResponseSchema, `48${refVarint(zigzag64(2n ** 53n))}`],
  ['sint64 = -2^53', m.ServerStatusResponseSchema, `48${refVarint(zigzag64(-(2n ** 53n)))}`],
  ['sint64 = -2^63', m.ServerStatusResponseSchema, `48${refVarint(zigzag64(-(2n ** 63n)))}`],
  ['timestamp seconds beyond year 9999', m.KeyStatusResponseSchema, ld('22', `08${refVarint(253402300800n)}`)],
  ['timestamp seconds before year 1', m.KeyStatusResponseSchema, ld('22', `08${refVarint(-62135596801n)}`)],
  ['timestamp negative nanos', m.KeyStatusResponseSchema, ld('22', `10${refVarint(-1n)}`)],
  ['timestamp nanos = 1e9', m.KeyStatusResponseSchema, ld('22', `10${refVarint(1_000_000_000n)}`)],
  ['timestamp int64 seconds beyond 2^53', m.KeyStatusResponseSchema, ld('22', `08${refVarint(2n ** 62n)}`)],
  ['duration beyond 10000 years', m.ServerStatusResponseSchema, ld('22', `08${refVarint(315576000001n)}`)],
  ['duration sign mismatch', m.ServerStatusResponseSchema, ld('22', `0801 10${refVarint(-1n)}`)],
  ['nested length beyond nested end', m.ListKeysResponseSchema, '0a020a056162636465'],
  ['nested message truncated', m.KeyStatusResponseSchema, '22050801'],
  ['packed list truncated varint', m.EditClusterRequestSchema, '120180'],
  ['packed list beyond end', m.EditClusterRequestSchema, '120501'],
  ['map entry truncated', m.CreateIdentityRequestSchema, '22050a0161'],
  ['map entry inner string beyond entry', m.CreateIdentityRequestSchema, '22020a056162636465'],
  ['repeated message truncated', m.LogRecordSchema, '22030a0566'],
];

describe('protocol: malformed input', () => {
  test('throws ERR_MALFORMED_MESSAGE', () => {
    MALFORMED.forEach(([name, schema, h], i) => {
      checkThrows(i, name, () => decodeMessage(schema, unhex(h)), 'ERR_MALFORMED_MESSAGE');
    });
  });

  test('fuzz: 2000 random mutations only ever throw KmsError', () => {
    const rand = prng(0x5eed);
    const pool = Object.keys(SAMPLES)
      .map((n) => [SCHEMAS[n]!, encodeMessage(SCHEMAS[n]!, SAMPLES[n]!)] as const)
      .filter(([, b]) => b.length > 0 && b.length < 4096);
    const schemas = Object.values(SCHEMAS);
    const int = (n: number): number => Math.floor(rand() * n);
    const interesting = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x22, 0x0b, 0x0e, 0xc3, 0xed];
    let thrown = 0;
    for (let i = 0; i < 2000; i++) {
      const [schema0, orig] = pool[int(pool.length)]!;
      const b = Array.from(orig);
      const ops = 1 + int(3);
      for (let k = 0; k < ops; k++) {
        const op = int(6);
        const at = int(b.length + 1);
        if (op === 0 && b.length) b[int(b.length)] = int(256);
        else if (op === 1) b.splice(at, 0, interesting[int(interesting.length)]!);
        else if (op === 2 && b.length) b.splice(int(b.length), 1);
        else if (op === 3) b.length = int(b.length + 1);
        else if (op === 4 && b.length) b[int(b.length)]! ^= 1 << int(8);
        else b.splice(at, 0, ...Array.from({ length: 1 + int(10) }, () => 0xff));
      }
      const input = Buffer.from(b);
      const schema = i % 3 === 0 ? schemas[int(schemas.length)]! : schema0;
      try {
        decodeMessage(schema, input);
      } catch (e) {
        thrown++;
        if (!(e instanceof KmsError) || e.code !== 'ERR_MALFORMED_MESSAGE') {
          assert.fail(`case ${i} (${schema.name} ${input.toString('hex')}): got ${show(e)}, want KmsError ERR_MALFORMED_MESSAGE`);
        }
      }
    }
    assert.ok(thrown > 100, `fuzz produced only ${thrown} errors; mutations too weak`);
  });

  test('fuzz: random frame bodies only ever throw KmsError', () => {
    const rand = prng(7);
    const allowed = new Set<string>(['ERR_MALFORMED_FRAME', 'ERR_TOO_MANY_FRAMES', 'ERR_EMPTY_REQUEST']);
    for (let i = 0; i < 500; i++) {
      const body = Buffer.from(
        Array.from({ length: Math.floor(rand() * 40) }, () => (Math.floor(rand() * 4) === 0 ? Math.floor(rand() * 256) : 0)),
      );
      try {
        parseFrames(body, 4);
      } catch (e) {
        if (!(e instanceof KmsError) || !allowed.has(e.code)) assert.fail(`case ${i} (${body.toString('hex')}): got ${show(e)}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Primitives

describe('protocol: wire primitives', () => {
  const INTS = [
    0,
    1,
    127,
    128,
    300,
    16383,
    16384,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 35 + 5,
    2 ** 52,
    Number.MAX_SAFE_INTEGER,
  ];
  const SIGNED = [...INTS, ...INTS.map((v) => -v).filter((v) => v !== 0), -(2 ** 31), -(2 ** 32) + 1];

  test('uint64/int64 varints match a reference encoder and read back', () => {
    SIGNED.forEach((v, i) => {
      const w = new Writer(1);
      w.int64(v);
      const got = w.finish();
      check(i, `int64 ${v}`, hex(got), refVarint(BigInt(v)));
      const r = new Reader(got);
      check(i, `read int64 ${v}`, r.int64(), v);
      check(i, `consumed ${v}`, r.pos, got.length);
      if (v >= 0) check(i, `read uint64 ${v}`, new Reader(got).uint64(), v);
    });
  });

  test('sint64 zig-zag matches a reference and reads back', () => {
    SIGNED.forEach((v, i) => {
      const w = new Writer(1);
      w.sint64(v);
      const got = w.finish();
      check(i, `sint64 ${v}`, hex(got), refVarint(zigzag64(BigInt(v))));
      check(i, `read sint64 ${v}`, new Reader(got).sint64(), v);
    });
  });

  test('sint32/int32/uint32', () => {
    const s32 = [0, -1, 1, -2, 2, 2 ** 31 - 1, -(2 ** 31), 1000, -1000];
    s32.forEach((v, i) => {
      const w = new Writer(1);
      w.sint32(v);
      const got = w.finish();
      check(i, `sint32 ${v}`, hex(got), refVarint(zigzag64(BigInt(v))));
      check(i, `read sint32 ${v}`, new Reader(got).sint32(), v);
      w.int32(v);
      const gi = w.finish();
      check(i, `int32 ${v}`, hex(gi), refVarint(BigInt(v)));
      check(i, `read int32 ${v}`, new Reader(gi).int32(), v);
    });
    [0, 1, 127, 128, 2 ** 28, 2 ** 32 - 1].forEach((v, i) => {
      const w = new Writer(1);
      w.uint32(v);
      const got = w.finish();
      check(i, `uint32 ${v}`, hex(got), refVarint(BigInt(v)));
      check(i, `read uint32 ${v}`, new Reader(got).uint32(), v);
    });
  });

  test('strings: UTF-8 encoding in every size class', () => {
    const strings = [
      '',
      'a',
      'a'.repeat(42),
      'a'.repeat(43),
      'é'.repeat(42),
      '✓'.repeat(43),
      '🔑'.repeat(21),
      'x'.repeat(64),
      'ü'.repeat(65),
      'y'.repeat(200),
      'mixed é✓🔑 text'.repeat(30),
      '\ud800',
      'a\udc00b',
      '🔑'.repeat(10) + '\ud83d',
    ];
    strings.forEach((s, i) => {
      const got = encodeMessage(m.ErrResponseSchema, { message: s });
      const utf8 = Buffer.from(s, 'utf8');
      const want = s === '' ? '' : `0a${refVarint(BigInt(utf8.length))}${utf8.toString('hex')}`;
      check(i, `encode ${JSON.stringify(s.slice(0, 20))}…(${s.length})`, hex(got), want);
      check(i, `decode ${s.length}`, decodeMessage(m.ErrResponseSchema, got).message, utf8.toString('utf8'));
    });
  });

  test('writer grows and fixes up long length prefixes', () => {
    [0, 1, 127, 128, 16383, 16384, 100000].forEach((n, i) => {
      const w = new Writer(16);
      w.tag(1, 2);
      const start = w.fork();
      w.raw(bytes(n));
      w.ldelim(start);
      const got = w.finish();
      check(i, `prefix for ${n}`, hex(got.subarray(0, 1 + refVarint(BigInt(n)).length / 2)), `0a${refVarint(BigInt(n))}`);
      check(i, `payload ${n}`, got.subarray(got.length - n).equals(bytes(n)), true);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Message types derived from the tables

/** Compiles only if A and B are the same type. */
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>): void => assert.equal(ok, true);

describe('protocol: message types', () => {
  test('each proto type gives its JS type (a wrong one does not compile)', () => {
    const AllSchema = defineMessage('All', {
      s: { no: 1, type: 'string' },
      b: { no: 2, type: 'bytes' },
      flag: { no: 3, type: 'bool' },
      u32: { no: 4, type: 'uint32' },
      i64: { no: 5, type: 'sint64' },
      at: { no: 6, type: 'timestamp' },
      took: { no: 7, type: 'duration' },
      key: { no: 8, type: m.KeyStatusResponseSchema },
      ids: { no: 9, type: 'uint32', repeated: true },
      times: { no: 10, type: 'timestamp', repeated: true },
      keys: { no: 11, type: m.KeyStatusResponseSchema, repeated: true },
      tags: { no: 12, map: ['string', 'string'] },
      byId: { no: 13, map: ['uint32', m.KeyStatusResponseSchema] },
    });
    type All = MessageType<typeof AllSchema>;
    same<All['s'], string>(true);
    same<All['b'], Buffer>(true);
    same<All['flag'], boolean>(true);
    same<All['u32'], number>(true);
    same<All['i64'], number>(true);
    same<All['at'], Date | undefined>(true);
    same<All['took'], number>(true);
    same<All['key'], messages.KeyStatusResponse | undefined>(true);
    same<All['ids'], number[]>(true);
    same<All['times'], Date[]>(true);
    same<All['keys'], messages.KeyStatusResponse[]>(true);
    same<All['tags'], Record<string, string>>(true);
    same<All['byId'], Map<number, messages.KeyStatusResponse>>(true);
    same<keyof All, 's' | 'b' | 'flag' | 'u32' | 'i64' | 'at' | 'took' | 'key' | 'ids' | 'times' | 'keys' | 'tags' | 'byId'>(true);
    same<messages.Rule, Record<string, never>>(true);
    same<messages.GenerateKeyRequest, { name: string; version: number; associatedData: Buffer; length: number }>(true);
    // A value of the wrong type, or a field the table does not have, is a compile error.
    // @ts-expect-error: length is a uint32
    const bad: MessageInit<messages.GenerateKeyRequest> = { name: 'k', length: '32' };
    // @ts-expect-error: no such field
    const extra: MessageInit<messages.GenerateKeyRequest> = { name: 'k', size: 32 };
    void bad;
    void extra;
    // And what decodes is what the type says.
    check(0, 'decoded shape', Object.keys(newMessage(AllSchema)).sort(), AllSchema.fields.map((f) => f.name).sort());
  });

  test('bad tables are refused when declared', () => {
    // The type system refuses these already; the checks are for tables it cannot see.
    const loose = defineMessage as (name: string, fields: unknown) => MessageSchema<unknown>;
    // @ts-expect-error: not a type
    void (() => defineMessage('X', { a: { no: 1, type: 'toString' } }));
    // @ts-expect-error: type and map
    void (() => defineMessage('X', { a: { no: 1, type: 'string', map: ['string', 'string'] } }));
    const cases: Array<[string, () => unknown, RegExp]> = [
      ['field number 0', () => defineMessage('X', { a: { no: 0, type: 'string' } }), /X\.a: invalid field number 0/],
      ['field number 2^29', () => defineMessage('X', { a: { no: 2 ** 29, type: 'string' } }), /invalid field number/],
      ['reserved number', () => defineMessage('X', { a: { no: 19000, type: 'string' } }), /invalid field number 19000/],
      ['fraction', () => defineMessage('X', { a: { no: 1.5, type: 'string' } }), /invalid field number/],
      [
        'duplicate number',
        () => defineMessage('X', { a: { no: 1, type: 'string' }, b: { no: 1, type: 'bool' } }),
        /X: duplicate field number 1/,
      ],
      ['unknown type', () => newMessage(loose('X', { a: { no: 1, type: 'toString' } })), /X\.a: unknown type toString/],
      ['type and map', () => loose('X', { a: { no: 1, type: 'string', map: ['string', 'string'] } }), /exactly one of type and map/],
      ['neither', () => loose('X', { a: { no: 1 } }), /exactly one of type and map/],
    ];
    cases.forEach(([name, fn, want], i) => assert.throws(fn, want, `case ${i} (${name})`));
  });
});

// ---------------------------------------------------------------------------------------------
// Frames

describe('protocol: protobuf-JSON outputs', () => {
  // The texts the server and the CLI wrote with the former general protobuf-JSON mapping.
  test('protoJson: JSON names in field order, default values left out', () => {
    const v = TYPED_SAMPLES.VersionResponse;
    const p = TYPED_SAMPLES.ProfileStatusResponse;
    const profile = (s: Partial<messages.ProfileStatusResponse>) =>
      protoJson({
        started: s.started,
        cpu: s.cpu,
        heap: s.heap,
        goroutine: s.goroutine,
        thread: s.thread,
        block_rate: s.blockRate,
        mutex_frac: s.mutexFraction,
      });
    const cases: Array<[string, object, string]> = [
      [
        'VersionResponse',
        protoJson({ version: v.version, commit: v.commit, api_version: v.apiVersion, host: v.host, fips140: v.fips140 }),
        '{"version":"2024-03-26T17-52-38Z","commit":"abc123","api_version":"v1","host":"kms:7373","fips140":true}',
      ],
      [
        'VersionResponse defaults omitted',
        protoJson({ version: 'x', commit: '', api_version: 'v1', host: '', fips140: false }),
        '{"version":"x","api_version":"v1"}',
      ],
      [
        'ProfileStatusResponse',
        profile(p),
        '{"started":"2024-03-26T17:52:38.123Z","cpu":true,"heap":true,"goroutine":true,"thread":true,"block_rate":1,"mutex_frac":5}',
      ],
      ['ProfileStatusResponse, nothing runs', profile({}), '{}'],
    ];
    cases.forEach(([name, json, want], i) => check(i, name, JSON.stringify(json), want));
  });

  test('durations', () => {
    const cases: Array<[number, string]> = [
      [0, '0s'],
      [1000, '1s'],
      [1500, '1.500s'],
      [-1500, '-1.500s'],
      [-0.5, '-0.000500s'],
      [0.001, '0.000001s'],
      [0.000001, '0.000000001s'],
      [1234.5678, '1.234567800s'],
      [86_400_000, '86400s'],
    ];
    cases.forEach(([ms, s], i) => check(i, `format ${ms}`, formatDuration(ms), s));
  });

  test('timestamps', () => {
    const cases: Array<[number, string]> = [
      [0, '1970-01-01T00:00:00Z'],
      [1700000000000, '2023-11-14T22:13:20Z'],
      [1700000000500, '2023-11-14T22:13:20.500Z'],
      [1700000000123, '2023-11-14T22:13:20.123Z'],
      [-62135596800000, '0001-01-01T00:00:00Z'],
      [253402300799000, '9999-12-31T23:59:59Z'],
      [Date.UTC(2024, 1, 29), '2024-02-29T00:00:00Z'],
    ];
    cases.forEach(([ms, s], i) => check(i, `format ${ms}`, formatTimestamp(new Date(ms)), s));
    assert.throws(() => formatTimestamp(new Date(NaN)), TypeError);
  });
});

describe('protocol: frames', () => {
  test('parse', () => {
    const body = unhex('00cf00000002aaaa 00cf00000000 00cf00000001bb');
    const frames = parseFrames(body, 3);
    check(0, 'count', frames.length, 3);
    check(
      1,
      'codes',
      frames.map((f) => f.code),
      [207, 207, 207],
    );
    check(
      2,
      'payloads',
      frames.map((f) => hex(f.payload)),
      ['aaaa', '', 'bb'],
    );
    check(3, 'aliases body', frames[0]!.payload.buffer, body.buffer);
    const u8 = new Uint8Array([0, 0, 0, 3, 0, 0, 0, 0]).subarray(2);
    const f2 = parseFrames(u8, 1);
    check(4, 'Uint8Array input', [f2[0]!.code, Buffer.isBuffer(f2[0]!.payload), f2[0]!.payload.length], [3, true, 0]);
    check(5, 'max code', parseFrames(unhex('ffff00000000'), 1)[0]!.code, 0xffff);
  });

  test('malformed bodies', () => {
    const cases: Array<[string, string, number, ErrorCode]> = [
      ['empty body', '', 10, 'ERR_EMPTY_REQUEST'],
      ['1-byte header', '00', 10, 'ERR_MALFORMED_FRAME'],
      ['5-byte header', '0003000000', 10, 'ERR_MALFORMED_FRAME'],
      ['truncated payload', '00030000000501', 10, 'ERR_MALFORMED_FRAME'],
      ['length 2^32-1', '0003ffffffff00', 10, 'ERR_MALFORMED_FRAME'],
      ['good frame then truncated header', '000300000000 0003', 10, 'ERR_MALFORMED_FRAME'],
      ['good frame then truncated payload', '000300000000 000300000002 00', 10, 'ERR_MALFORMED_FRAME'],
      ['too many frames', '000300000000 000300000000 000300000000', 2, 'ERR_TOO_MANY_FRAMES'],
      ['maxFrames 0', '000300000000', 0, 'ERR_TOO_MANY_FRAMES'],
    ];
    cases.forEach(([name, h, max, code], i) => checkThrows(i, name, () => parseFrames(unhex(h), max), code));
    check(cases.length, 'exactly maxFrames is fine', parseFrames(unhex('000300000000000300000000'), 2).length, 2);
  });

  test('encode', () => {
    check(0, 'single', hex(encodeFrame(205, unhex('0801'))), '00cd000000020801');
    check(
      1,
      'several',
      hex(encodeFrames(205, [unhex('0801'), EMPTY_BUFFER, unhex('aa')])),
      '00cd000000020801 00cd00000000 00cd00000001aa'.replace(/ /g, ''),
    );
    check(2, 'none', encodeFrames(205, []).length, 0);
    check(3, 'none, padded', encodeFrames(205, [], { pad: true }).length, 0);
    assert.throws(() => encodeFrame(0x10000, EMPTY_BUFFER), RangeError);
    assert.throws(() => encodeFrame(-1, EMPTY_BUFFER), RangeError);
    const msgs = [SAMPLES.GenerateKeyResponse!, {}, SAMPLES.GenerateKeyResponse!];
    check(
      4,
      'encodeMessageFrames = encodeFrames(encodeMessage)',
      hex(encodeMessageFrames(207, m.GenerateKeyResponseSchema, msgs)),
      hex(
        encodeFrames(
          207,
          msgs.map((x) => encodeMessage(m.GenerateKeyResponseSchema, x)),
        ),
      ),
    );
  });

  test('Go-client padding: bodies of 1001..1024 bytes grow to ≥ 1025', () => {
    check(0, 'paddingFor(1000)', paddingFor(1000), 0);
    check(1, 'paddingFor(1001)', paddingFor(1001), 24);
    check(2, 'paddingFor(1022)', paddingFor(1022), 3);
    check(3, 'paddingFor(1024)', paddingFor(1024), 3);
    check(4, 'paddingFor(1025)', paddingFor(1025), 0);
    let n = 5;
    const schema = m.GenerateKeyResponseSchema;
    const seen = new Set<number>();
    // Grow the last frame's ciphertext byte by byte so the body length sweeps 970..1060, with
    // one, two and three frames.
    for (const frames of [1, 2, 3]) {
      for (let ctLen = 0; ctLen <= 1100; ctLen++) {
        const msgs = Array.from({ length: frames }, (_, j) => ({
          version: 1,
          plaintext: bytes(32, j),
          ciphertext: bytes(j === frames - 1 ? ctLen : 300, j + 3),
        }));
        const plain = encodeMessageFrames(207, schema, msgs);
        if (plain.length < 970 || plain.length > 1060) continue;
        seen.add(plain.length);
        const padded = encodeMessageFrames(207, schema, msgs, { pad: true });
        const name = `${frames} frame(s), body ${plain.length}`;
        if (plain.length >= 1001 && plain.length <= 1024) {
          check(n++, `${name}: padded length`, padded.length >= 1025 && padded.length <= 1027, true);
        } else {
          check(n++, `${name}: untouched`, hex(padded), hex(plain));
        }
        check(
          n++,
          `${name}: encodeFrames pad`,
          hex(
            encodeFrames(
              207,
              msgs.map((x) => encodeMessage(schema, x)),
              { pad: true },
            ),
          ),
          hex(padded),
        );
        check(n++, `${name}: padResponseBody`, hex(padResponseBody(plain)), hex(padded));
        const parsed = parseFrames(padded, 10);
        check(n++, `${name}: frame count`, parsed.length, frames);
        parsed.forEach((f, j) => {
          check(n++, `${name}: frame ${j} decodes`, decodeMessage(schema, f.payload), msgs[j]);
          if (j < frames - 1) check(n++, `${name}: frame ${j} unchanged`, hex(f.payload), hex(encodeMessage(schema, msgs[j]!)));
        });
      }
    }
    for (let len = 1001; len <= 1024; len++) assert.ok(seen.has(len), `case ${n++} (sweep): body length ${len} not exercised`);
    // The padding is an unknown length-delimited field with the documented number.
    const one = encodeFrames(207, [Buffer.alloc(1010 - FRAME_HEADER_SIZE)], { pad: true });
    check(n++, 'padded length', one.length, 1025);
    check(n++, 'last frame length fixed', one.readUInt32BE(2), 1025 - FRAME_HEADER_SIZE);
    check(n++, 'padding field', hex(one.subarray(1010)), refVarint(BigInt(PADDING_FIELD_NUMBER * 8 + 2)) + '0c' + '00'.repeat(12));
    check(
      n++,
      'padResponseBody on non-frames',
      (() => {
        try {
          padResponseBody(Buffer.alloc(1010, 0xff));
          return 'no error';
        } catch (e) {
          return (e as KmsError).code;
        }
      })(),
      'ERR_MALFORMED_FRAME',
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Command catalogue

/** kms-wire.md §2.3 as data: code, name, scope, write, response kind. */
const CATALOGUE: Array<[number, string, 'cluster' | 'enclave', boolean, 'none' | 'single' | 'perFrame']> = [
  [1, 'CLUSTER:ADDNODE', 'cluster', true, 'none'],
  [2, 'CLUSTER:REMOVENODE', 'cluster', true, 'none'],
  [3, 'CLUSTER:STATUS', 'cluster', false, 'single'],
  [4, 'CLUSTER:EDIT', 'cluster', true, 'none'],
  [5, 'CLUSTER:ADDHSM', 'cluster', true, 'none'],
  [6, 'CLUSTER:REMOVEHSM', 'cluster', true, 'none'],
  [101, 'ENCLAVE:CREATE', 'cluster', true, 'none'],
  [102, 'ENCLAVE:DELETE', 'cluster', true, 'none'],
  [103, 'ENCLAVE:STATUS', 'cluster', false, 'perFrame'],
  [104, 'ENCLAVE:LIST', 'cluster', false, 'single'],
  [201, 'KEY:CREATE', 'enclave', true, 'none'],
  [202, 'KEY:DELETE', 'enclave', true, 'none'],
  [203, 'KEY:IMPORT', 'enclave', true, 'none'],
  [204, 'KEY:STATUS', 'enclave', false, 'perFrame'],
  [205, 'KEY:ENCRYPT', 'enclave', false, 'perFrame'],
  [206, 'KEY:DECRYPT', 'enclave', false, 'perFrame'],
  [207, 'KEY:GENERATE', 'enclave', false, 'perFrame'],
  [208, 'KEY:LIST', 'enclave', false, 'single'],
  [209, 'KEY:LISTVERSIONS', 'enclave', false, 'single'],
  [210, 'KEY:MAC', 'enclave', false, 'perFrame'],
  [301, 'POLICY:CREATE', 'enclave', true, 'none'],
  [302, 'POLICY:DELETE', 'enclave', true, 'none'],
  [303, 'POLICY:ASSIGN', 'enclave', true, 'none'],
  [304, 'POLICY:GET', 'enclave', false, 'perFrame'],
  [305, 'POLICY:STATUS', 'enclave', false, 'perFrame'],
  [306, 'POLICY:LIST', 'enclave', false, 'single'],
  [401, 'IDENTITY:CREATE', 'enclave', true, 'none'],
  [402, 'IDENTITY:DELETE', 'enclave', true, 'none'],
  [403, 'IDENTITY:STATUS', 'enclave', false, 'perFrame'],
  [404, 'IDENTITY:LIST', 'enclave', false, 'single'],
];

describe('protocol: command catalogue', () => {
  test('every command of §2.3, with its attributes', () => {
    check(0, 'count', COMMANDS.length, CATALOGUE.length);
    CATALOGUE.forEach(([code, name, scope, write, kind], i) => {
      const c = commandByCode(code);
      assert.ok(c, `case ${i} (${name}): got no command for code ${code}`);
      check(i, name, [c.code, c.name, c.scope, c.write, c.responseKind, c.batch], [code, name, scope, write, kind, kind === 'perFrame']);
      check(i, `${name} by name`, commandByName(name), c);
      check(i, `${name} response schema`, c.response === undefined, kind === 'none');
      check(i, `${name} sdkName`, c.sdkName, name !== 'KEY:IMPORT');
      check(i, `${name} isCommandName`, isCommandName(name), true);
    });
  });

  test('codes and names are unique; named codes match', () => {
    check(0, 'unique codes', new Set(COMMANDS.map((c) => c.code)).size, COMMANDS.length);
    check(1, 'unique names', new Set(COMMANDS.map((c) => c.name)).size, COMMANDS.length);
    check(
      2,
      'CommandCode values',
      Object.values(CommandCode).sort((a, b) => a - b),
      COMMANDS.map((c) => c.code),
    );
    check(
      3,
      'sorted by code',
      COMMANDS.map((c) => c.code),
      [...COMMANDS.map((c) => c.code)].sort((a, b) => a - b),
    );
  });

  test('lookups', () => {
    const cases: Array<[string, () => unknown, unknown]> = [
      ['lower case', () => commandByName('key:generate')?.code, 207],
      ['mixed case', () => commandByName('Key:Generate')?.code, 207],
      ['unknown name', () => commandByName('KEY:FROB'), undefined],
      ['empty name', () => commandByName(''), undefined],
      ['unknown code', () => commandByCode(7), undefined],
      ['code 0', () => commandByCode(0), undefined],
      ['code 65535', () => commandByCode(65535), undefined],
      ['isCommandName lower', () => isCommandName('identity:status'), true],
      ['isCommandName unknown', () => isCommandName('IDENTITY:GET'), false],
      ['isCommandName with spaces', () => isCommandName(' KEY:LIST'), false],
      ['KEY:IMPORT is ours', () => isSdkCommandName('key:import'), false],
      ['KEY:LISTVERSIONS is the SDK’s', () => isSdkCommandName('KEY:LISTVERSIONS'), true],
      [
        'ENCLAVE:STATUS request = CreateEnclaveRequest bytes',
        () => hex(encodeMessage(commandByCode(103)!.request, { name: 'minio' })),
        '0a056d696e696f',
      ],
    ];
    cases.forEach(([name, fn, want], i) => check(i, name, fn(), want));
  });
});
