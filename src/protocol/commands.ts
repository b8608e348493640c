/**
 * The command catalogue (`kms-wire.md` §2.3) as data: one entry per command of
 * `POST /v1/kms/{enclave}`. Policy checks, routing, batching rules and response framing all read
 * this table; nothing else should hard-code command codes.
 *
 * Notes carried over from the spec:
 * - KEY:IMPORT (203) has no text name in the Go SDK (it prints as `!INVALID:203` and cannot be
 *   parsed from a policy). We name it `KEY:IMPORT` for our own policies; `sdkName: false` marks
 *   that such a name must never be sent to an SDK client (e.g. as a PolicyResponse map key — the
 *   Go client fails to decode unknown command names).
 * - KEY:LISTVERSIONS (209) has an SDK text name but no SDK message types; its messages are our
 *   extension (see `messages.ts`).
 * - ENCLAVE:STATUS requests are sent by the SDK as CreateEnclaveRequest; the bytes are identical.
 * - KEY:ENCRYPT responses: the SDK pinned by MinIO community (Feb 2025) expected frame code 204;
 *   current SDKs expect 205 (the request's code). We always echo the request code.
 */

import {
  AddClusterNodeRequestSchema,
  AddHSMRequestSchema,
  AssignPolicyRequestSchema,
  ClusterStatusRequestSchema,
  ClusterStatusResponseSchema,
  CreateEnclaveRequestSchema,
  CreateIdentityRequestSchema,
  CreateKeyRequestSchema,
  CreatePolicyRequestSchema,
  DecryptRequestSchema,
  DecryptResponseSchema,
  DeleteEnclaveRequestSchema,
  DeleteIdentityRequestSchema,
  DeleteKeyRequestSchema,
  DeletePolicyRequestSchema,
  EditClusterRequestSchema,
  EnclaveStatusRequestSchema,
  EnclaveStatusResponseSchema,
  EncryptRequestSchema,
  EncryptResponseSchema,
  GenerateKeyRequestSchema,
  GenerateKeyResponseSchema,
  IdentityRequestSchema,
  IdentityResponseSchema,
  ImportKeyRequestSchema,
  KeyStatusRequestSchema,
  KeyStatusResponseSchema,
  ListEnclavesResponseSchema,
  ListIdentitiesResponseSchema,
  ListKeysResponseSchema,
  ListKeyVersionsRequestSchema,
  ListKeyVersionsResponseSchema,
  ListPoliciesResponseSchema,
  ListRequestSchema,
  MACRequestSchema,
  MACResponseSchema,
  PolicyRequestSchema,
  PolicyResponseSchema,
  PolicyStatusResponseSchema,
  RemoveClusterNodeRequestSchema,
  RemoveHSMRequestSchema,
} from './messages.js';
import type { MessageSchema } from './schema.js';

/**
 * How a command answers:
 * - `none`: state-changing; empty response body (the client ignores it).
 * - `single`: exactly one response frame (LIST commands, CLUSTER:STATUS, KEY:LISTVERSIONS).
 * - `perFrame`: one response frame per request frame, in request order (batchable reads).
 */
export type ResponseKind = 'none' | 'single' | 'perFrame';

/** One command of the catalogue, typed by its request and response messages. */
export interface Command<Req = unknown, Res = unknown> {
  /** uint16 frame code. */
  readonly code: number;
  /** Text name used in policies (`KEY:GENERATE`); upper case. */
  readonly name: string;
  /** `cluster`: sent without enclave (`POST /v1/kms`), SysAdmin only. `enclave`: inside the URL's enclave. */
  readonly scope: 'cluster' | 'enclave';
  /** State-changing (`cmds.IsWrite`). */
  readonly write: boolean;
  /** Several frames of this command may share one request (each answered by one frame). */
  readonly batch: boolean;
  readonly responseKind: ResponseKind;
  readonly request: MessageSchema<Req>;
  /** Response message; undefined when `responseKind` is `none`. */
  readonly response: MessageSchema<Res> | undefined;
  /** False if the Go SDK does not know this text name (only KEY:IMPORT). */
  readonly sdkName: boolean;
}

function write<Req>(code: number, name: string, scope: Command['scope'], request: MessageSchema<Req>, sdkName = true): Command<Req, never> {
  return Object.freeze({ code, name, scope, write: true, batch: false, responseKind: 'none', request, response: undefined, sdkName });
}

function read<Req, Res>(
  code: number,
  name: string,
  scope: Command['scope'],
  responseKind: 'single' | 'perFrame',
  request: MessageSchema<Req>,
  response: MessageSchema<Res>,
): Command<Req, Res> {
  return Object.freeze({
    code,
    name,
    scope,
    write: false,
    batch: responseKind === 'perFrame',
    responseKind,
    request,
    response,
    sdkName: true,
  });
}

/** Every command, by a readable name (`CMD.KeyGenerate`), typed by its messages. */
export const CMD = Object.freeze({
  ClusterAddNode: write(1, 'CLUSTER:ADDNODE', 'cluster', AddClusterNodeRequestSchema),
  ClusterRemoveNode: write(2, 'CLUSTER:REMOVENODE', 'cluster', RemoveClusterNodeRequestSchema),
  ClusterStatus: read(3, 'CLUSTER:STATUS', 'cluster', 'single', ClusterStatusRequestSchema, ClusterStatusResponseSchema),
  ClusterEdit: write(4, 'CLUSTER:EDIT', 'cluster', EditClusterRequestSchema),
  ClusterAddHsm: write(5, 'CLUSTER:ADDHSM', 'cluster', AddHSMRequestSchema),
  ClusterRemoveHsm: write(6, 'CLUSTER:REMOVEHSM', 'cluster', RemoveHSMRequestSchema),

  EnclaveCreate: write(101, 'ENCLAVE:CREATE', 'cluster', CreateEnclaveRequestSchema),
  EnclaveDelete: write(102, 'ENCLAVE:DELETE', 'cluster', DeleteEnclaveRequestSchema),
  EnclaveStatus: read(103, 'ENCLAVE:STATUS', 'cluster', 'perFrame', EnclaveStatusRequestSchema, EnclaveStatusResponseSchema),
  EnclaveList: read(104, 'ENCLAVE:LIST', 'cluster', 'single', ListRequestSchema, ListEnclavesResponseSchema),

  KeyCreate: write(201, 'KEY:CREATE', 'enclave', CreateKeyRequestSchema),
  KeyDelete: write(202, 'KEY:DELETE', 'enclave', DeleteKeyRequestSchema),
  KeyImport: write(203, 'KEY:IMPORT', 'enclave', ImportKeyRequestSchema, false),
  KeyStatus: read(204, 'KEY:STATUS', 'enclave', 'perFrame', KeyStatusRequestSchema, KeyStatusResponseSchema),
  KeyEncrypt: read(205, 'KEY:ENCRYPT', 'enclave', 'perFrame', EncryptRequestSchema, EncryptResponseSchema),
  KeyDecrypt: read(206, 'KEY:DECRYPT', 'enclave', 'perFrame', DecryptRequestSchema, DecryptResponseSchema),
  KeyGenerate: read(207, 'KEY:GENERATE', 'enclave', 'perFrame', GenerateKeyRequestSchema, GenerateKeyResponseSchema),
  KeyList: read(208, 'KEY:LIST', 'enclave', 'single', ListRequestSchema, ListKeysResponseSchema),
  KeyListVersions: read(209, 'KEY:LISTVERSIONS', 'enclave', 'single', ListKeyVersionsRequestSchema, ListKeyVersionsResponseSchema),
  KeyMac: read(210, 'KEY:MAC', 'enclave', 'perFrame', MACRequestSchema, MACResponseSchema),

  PolicyCreate: write(301, 'POLICY:CREATE', 'enclave', CreatePolicyRequestSchema),
  PolicyDelete: write(302, 'POLICY:DELETE', 'enclave', DeletePolicyRequestSchema),
  PolicyAssign: write(303, 'POLICY:ASSIGN', 'enclave', AssignPolicyRequestSchema),
  PolicyGet: read(304, 'POLICY:GET', 'enclave', 'perFrame', PolicyRequestSchema, PolicyResponseSchema),
  PolicyStatus: read(305, 'POLICY:STATUS', 'enclave', 'perFrame', PolicyRequestSchema, PolicyStatusResponseSchema),
  PolicyList: read(306, 'POLICY:LIST', 'enclave', 'single', ListRequestSchema, ListPoliciesResponseSchema),

  IdentityCreate: write(401, 'IDENTITY:CREATE', 'enclave', CreateIdentityRequestSchema),
  IdentityDelete: write(402, 'IDENTITY:DELETE', 'enclave', DeleteIdentityRequestSchema),
  IdentityStatus: read(403, 'IDENTITY:STATUS', 'enclave', 'perFrame', IdentityRequestSchema, IdentityResponseSchema),
  IdentityList: read(404, 'IDENTITY:LIST', 'enclave', 'single', ListRequestSchema, ListIdentitiesResponseSchema),
});

export type CommandKey = keyof typeof CMD;

/** Every command, in code order. */
export const COMMANDS: readonly Command[] = Object.freeze(Object.values(CMD).sort((a, b) => a.code - b.code) as Command[]);

/** Named codes, for readable call sites (`CommandCode.KeyGenerate`). */
export const CommandCode = Object.freeze(Object.fromEntries(Object.entries(CMD).map(([k, c]) => [k, c.code]))) as {
  readonly [K in CommandKey]: number;
};

// Direct-indexed lookup: codes are < 512.
const byCode: (Command | undefined)[] = [];
const byName = new Map<string, Command>();
for (const c of COMMANDS) {
  byCode[c.code] = c;
  byName.set(c.name, c);
}

/** The command with this frame code, or undefined. */
export function commandByCode(code: number): Command | undefined {
  return byCode[code];
}

/** The command with this text name (case-insensitive, as the SDK parses it), or undefined. */
export function commandByName(name: string): Command | undefined {
  return byName.get(name.toUpperCase());
}

/** True if `s` is a command text name (case-insensitive). */
export function isCommandName(s: string): boolean {
  return byName.has(s.toUpperCase());
}

/** True if the Go SDK knows the text name `s` (all names except KEY:IMPORT); case-insensitive. */
export function isSdkCommandName(s: string): boolean {
  return byName.get(s.toUpperCase())?.sdkName === true;
}
