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

/** One command of the catalogue. */
export interface Command {
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
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly request: MessageSchema<any>;
  /** Response message; undefined when `responseKind` is `none`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly response: MessageSchema<any> | undefined;
  /** False if the Go SDK does not know this text name (only KEY:IMPORT). */
  readonly sdkName: boolean;
}

function write(
  code: number,
  name: string,
  scope: Command['scope'],
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  request: MessageSchema<any>,
  sdkName = true,
): Command {
  return { code, name, scope, write: true, batch: false, responseKind: 'none', request, response: undefined, sdkName };
}

function read(
  code: number,
  name: string,
  scope: Command['scope'],
  responseKind: 'single' | 'perFrame',
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  request: MessageSchema<any>,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  response: MessageSchema<any>,
): Command {
  return {
    code,
    name,
    scope,
    write: false,
    batch: responseKind === 'perFrame',
    responseKind,
    request,
    response,
    sdkName: true,
  };
}

/** Every command, in code order. */
export const COMMANDS: readonly Command[] = Object.freeze(
  [
    write(1, 'CLUSTER:ADDNODE', 'cluster', AddClusterNodeRequestSchema),
    write(2, 'CLUSTER:REMOVENODE', 'cluster', RemoveClusterNodeRequestSchema),
    read(3, 'CLUSTER:STATUS', 'cluster', 'single', ClusterStatusRequestSchema, ClusterStatusResponseSchema),
    write(4, 'CLUSTER:EDIT', 'cluster', EditClusterRequestSchema),
    write(5, 'CLUSTER:ADDHSM', 'cluster', AddHSMRequestSchema),
    write(6, 'CLUSTER:REMOVEHSM', 'cluster', RemoveHSMRequestSchema),

    write(101, 'ENCLAVE:CREATE', 'cluster', CreateEnclaveRequestSchema),
    write(102, 'ENCLAVE:DELETE', 'cluster', DeleteEnclaveRequestSchema),
    read(103, 'ENCLAVE:STATUS', 'cluster', 'perFrame', EnclaveStatusRequestSchema, EnclaveStatusResponseSchema),
    read(104, 'ENCLAVE:LIST', 'cluster', 'single', ListRequestSchema, ListEnclavesResponseSchema),

    write(201, 'KEY:CREATE', 'enclave', CreateKeyRequestSchema),
    write(202, 'KEY:DELETE', 'enclave', DeleteKeyRequestSchema),
    write(203, 'KEY:IMPORT', 'enclave', ImportKeyRequestSchema, false),
    read(204, 'KEY:STATUS', 'enclave', 'perFrame', KeyStatusRequestSchema, KeyStatusResponseSchema),
    read(205, 'KEY:ENCRYPT', 'enclave', 'perFrame', EncryptRequestSchema, EncryptResponseSchema),
    read(206, 'KEY:DECRYPT', 'enclave', 'perFrame', DecryptRequestSchema, DecryptResponseSchema),
    read(207, 'KEY:GENERATE', 'enclave', 'perFrame', GenerateKeyRequestSchema, GenerateKeyResponseSchema),
    read(208, 'KEY:LIST', 'enclave', 'single', ListRequestSchema, ListKeysResponseSchema),
    read(209, 'KEY:LISTVERSIONS', 'enclave', 'single', ListKeyVersionsRequestSchema, ListKeyVersionsResponseSchema),
    read(210, 'KEY:MAC', 'enclave', 'perFrame', MACRequestSchema, MACResponseSchema),

    write(301, 'POLICY:CREATE', 'enclave', CreatePolicyRequestSchema),
    write(302, 'POLICY:DELETE', 'enclave', DeletePolicyRequestSchema),
    write(303, 'POLICY:ASSIGN', 'enclave', AssignPolicyRequestSchema),
    read(304, 'POLICY:GET', 'enclave', 'perFrame', PolicyRequestSchema, PolicyResponseSchema),
    read(305, 'POLICY:STATUS', 'enclave', 'perFrame', PolicyRequestSchema, PolicyStatusResponseSchema),
    read(306, 'POLICY:LIST', 'enclave', 'single', ListRequestSchema, ListPoliciesResponseSchema),

    write(401, 'IDENTITY:CREATE', 'enclave', CreateIdentityRequestSchema),
    write(402, 'IDENTITY:DELETE', 'enclave', DeleteIdentityRequestSchema),
    read(403, 'IDENTITY:STATUS', 'enclave', 'perFrame', IdentityRequestSchema, IdentityResponseSchema),
    read(404, 'IDENTITY:LIST', 'enclave', 'single', ListRequestSchema, ListIdentitiesResponseSchema),
  ].map((c) => Object.freeze(c)),
);

/** Named codes, for readable call sites (`CommandCode.KeyGenerate`). */
export const CommandCode = {
  ClusterAddNode: 1,
  ClusterRemoveNode: 2,
  ClusterStatus: 3,
  ClusterEdit: 4,
  ClusterAddHsm: 5,
  ClusterRemoveHsm: 6,
  EnclaveCreate: 101,
  EnclaveDelete: 102,
  EnclaveStatus: 103,
  EnclaveList: 104,
  KeyCreate: 201,
  KeyDelete: 202,
  KeyImport: 203,
  KeyStatus: 204,
  KeyEncrypt: 205,
  KeyDecrypt: 206,
  KeyGenerate: 207,
  KeyList: 208,
  KeyListVersions: 209,
  KeyMac: 210,
  PolicyCreate: 301,
  PolicyDelete: 302,
  PolicyAssign: 303,
  PolicyGet: 304,
  PolicyStatus: 305,
  PolicyList: 306,
  IdentityCreate: 401,
  IdentityDelete: 402,
  IdentityStatus: 403,
  IdentityList: 404,
} as const;

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
