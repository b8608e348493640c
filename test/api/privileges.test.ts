/**
 * Every command × every kind of caller, over real mTLS against a real server process:
 * SysAdmin (root), enclave Admin, User with a matching policy, User whose policy does not
 * match, an unknown identity, and no client certificate at all.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.js';
import { clientFor, newUser, rejectsWith } from '../helpers/clients.js';
import { generateApiKey } from '../../src/identity/api-key.js';
import type { KmsClient } from '../../src/client/client.js';
import type { ErrorCode } from '../../src/errors.js';

type Role = 'root' | 'admin' | 'user' | 'denied' | 'unknown' | 'nocert';
const ROLES: Role[] = ['root', 'admin', 'user', 'denied', 'unknown', 'nocert'];
const ENCLAVE = 'matrix';

/** `ok`, or the error the role must get. */
type Outcome = 'ok' | ErrorCode;

interface Case {
  command: string;
  /** Runs the command; `tag` makes object names unique per role. */
  run: (c: KmsClient, tag: string) => Promise<unknown>;
  want: Partial<Record<Role, Outcome>> & { default: Outcome };
}

const denied: Outcome = 'ERR_NOT_ALLOWED';
/** Cluster-scope commands: only SysAdmin. */
const sysAdminOnly = { root: 'ok', default: denied } as const;
/** Enclave commands that a User with a matching policy may run. */
const enclaveCommand = { root: 'ok', admin: 'ok', user: 'ok', default: denied } as const;

const CASES: Case[] = [
  { command: 'CLUSTER:STATUS', run: (c) => c.clusterStatus(), want: sysAdminOnly },
  {
    command: 'CLUSTER:ADDNODE',
    run: (c) => c.send('', 1, addNode, [{ host: '127.0.0.1:1' }]),
    want: { root: 'ERR_CLUSTER_SINGLE_NODE', default: denied },
  },
  {
    command: 'CLUSTER:REMOVENODE',
    run: (c) => c.send('', 2, removeNode, [{ host: '127.0.0.1:1' }]),
    want: { root: 'ERR_CLUSTER_SINGLE_NODE', default: denied },
  },
  {
    command: 'CLUSTER:EDIT',
    run: (c) => c.send('', 4, editCluster, [{ host: '127.0.0.1:1' }]),
    want: { root: 'ERR_CLUSTER_SINGLE_NODE', default: denied },
  },
  { command: 'CLUSTER:ADDHSM', run: (c) => c.addHsm('hsm:minio:soft', true), want: sysAdminOnly },
  { command: 'CLUSTER:REMOVEHSM', run: (c) => c.removeHsm('hsm:minio:soft'), want: { root: 'ERR_HSM_LAST', default: denied } },
  { command: 'ENCLAVE:CREATE', run: (c, t) => c.createEnclave(`e-${t}`), want: sysAdminOnly },
  { command: 'ENCLAVE:STATUS', run: (c) => c.enclaveStatus([ENCLAVE]), want: sysAdminOnly },
  { command: 'ENCLAVE:LIST', run: (c) => c.listEnclaves(), want: sysAdminOnly },
  { command: 'ENCLAVE:DELETE', run: (c) => c.deleteEnclave('doomed'), want: sysAdminOnly },

  { command: 'KEY:CREATE', run: (c, t) => c.createKey(ENCLAVE, { name: `k-${t}` }), want: enclaveCommand },
  { command: 'KEY:IMPORT', run: (c, t) => c.importKey(ENCLAVE, { name: `imp-${t}`, key: Buffer.alloc(32, 7) }), want: enclaveCommand },
  { command: 'KEY:STATUS', run: (c) => c.keyStatus(ENCLAVE, [{ name: 'fixture' }]), want: enclaveCommand },
  { command: 'KEY:LIST', run: (c) => c.listKeys(ENCLAVE), want: enclaveCommand },
  { command: 'KEY:LISTVERSIONS', run: (c) => c.listKeyVersions(ENCLAVE, { name: 'fixture' }), want: enclaveCommand },
  { command: 'KEY:GENERATE', run: (c) => c.generateKey(ENCLAVE, [{ name: 'fixture' }]), want: enclaveCommand },
  { command: 'KEY:ENCRYPT', run: (c) => c.encrypt(ENCLAVE, [{ name: 'fixture', plaintext: Buffer.from('hi') }]), want: enclaveCommand },
  {
    command: 'KEY:DECRYPT',
    run: async (c) => {
      assert.equal(
        (await c.decrypt(ENCLAVE, [{ name: 'fixture', version: 1, ciphertext: fixtureCiphertext }]))[0]!.plaintext.toString(),
        'fixture',
      );
    },
    want: enclaveCommand,
  },
  { command: 'KEY:MAC', run: (c) => c.mac(ENCLAVE, [{ name: 'fixture', message: Buffer.from('m') }]), want: enclaveCommand },
  { command: 'KEY:DELETE', run: (c, t) => c.deleteKey(ENCLAVE, { name: `del-${t}` }), want: enclaveCommand },

  {
    command: 'POLICY:CREATE',
    run: (c, t) => c.createPolicy(ENCLAVE, { name: `p-${t}`, allow: { 'KEY:STATUS': { rules: { '*': {} } } } }),
    want: enclaveCommand,
  },
  { command: 'POLICY:GET', run: (c) => c.getPolicy(ENCLAVE, ['fixture-policy']), want: enclaveCommand },
  { command: 'POLICY:STATUS', run: (c) => c.policyStatus(ENCLAVE, ['fixture-policy']), want: enclaveCommand },
  { command: 'POLICY:LIST', run: (c) => c.listPolicies(ENCLAVE), want: enclaveCommand },
  // Assigning policies can escalate privileges: enclave Admins only, whatever a policy says.
  {
    command: 'POLICY:ASSIGN',
    run: (c) => c.assignPolicy(ENCLAVE, fixtureUser, 'fixture-policy'),
    want: { root: 'ok', admin: 'ok', default: denied },
  },
  { command: 'POLICY:DELETE', run: (c, t) => c.deletePolicy(ENCLAVE, `pdel-${t}`), want: enclaveCommand },

  // Users create service accounts only; a plain user identity is refused.
  {
    command: 'IDENTITY:CREATE',
    run: (c) => c.createIdentity(ENCLAVE, { identity: generateApiKey().identity }),
    want: { root: 'ok', admin: 'ok', default: denied },
  },
  {
    command: 'IDENTITY:CREATE (service account)',
    run: (c) => c.createIdentity(ENCLAVE, { identity: generateApiKey().identity, isServiceAccount: true }),
    want: enclaveCommand,
  },
  { command: 'IDENTITY:STATUS', run: (c) => c.getIdentity(ENCLAVE, [fixtureUser]), want: enclaveCommand },
  {
    command: 'IDENTITY:STATUS (self)',
    run: (c) => c.getIdentity(ENCLAVE, ['']),
    want: { root: 'ok', admin: 'ok', user: 'ok', denied: 'ok', default: denied },
  },
  { command: 'IDENTITY:LIST', run: (c) => c.listIdentities(ENCLAVE), want: enclaveCommand },
  // Users (even with IDENTITY:DELETE) only delete their own service accounts.
  {
    command: 'IDENTITY:DELETE',
    run: (c, t) => c.deleteIdentity(ENCLAVE, doomedIdentities[t]!),
    want: { root: 'ok', admin: 'ok', default: denied },
  },
  {
    command: 'IDENTITY:DELETE (own service account)',
    run: async (c) => {
      const sa = generateApiKey().identity;
      await c.createIdentity(ENCLAVE, { identity: sa, isServiceAccount: true });
      await c.deleteIdentity(ENCLAVE, sa);
    },
    want: enclaveCommand,
  },
];

import {
  AddClusterNodeRequestSchema as addNode,
  RemoveClusterNodeRequestSchema as removeNode,
  EditClusterRequestSchema as editCluster,
} from '../../src/protocol/messages.js';

let server: TestServer;
let fixtureCiphertext: Buffer;
let fixtureUser: string;
const doomedIdentities: Record<string, string> = {};
const clients = {} as Record<Role, KmsClient>;

/** Every enclave command on every object: what "a matching policy" means here. */
const ALL_ENCLAVE_COMMANDS = [
  'KEY:CREATE',
  'KEY:DELETE',
  'KEY:STATUS',
  'KEY:LIST',
  'KEY:LISTVERSIONS',
  'KEY:ENCRYPT',
  'KEY:DECRYPT',
  'KEY:GENERATE',
  'KEY:MAC',
  'POLICY:CREATE',
  'POLICY:DELETE',
  'POLICY:ASSIGN',
  'POLICY:GET',
  'POLICY:STATUS',
  'POLICY:LIST',
  'IDENTITY:CREATE',
  'IDENTITY:DELETE',
  'IDENTITY:STATUS',
  'IDENTITY:LIST',
];

before(async () => {
  server = await startServer();
  const root = clientFor(server, server.apiKey);
  clients.root = root;
  await root.createEnclave(ENCLAVE);
  await root.createEnclave('doomed');
  await root.createKey(ENCLAVE, { name: 'fixture' });
  fixtureCiphertext = (await root.encrypt(ENCLAVE, [{ name: 'fixture', plaintext: Buffer.from('fixture') }]))[0]!.ciphertext;
  await root.createPolicy(ENCLAVE, {
    name: 'fixture-policy',
    allow: Object.fromEntries(ALL_ENCLAVE_COMMANDS.map((c) => [c, { rules: { '*': {} } }])),
  });
  await root.createPolicy(ENCLAVE, { name: 'nothing', allow: { 'KEY:STATUS': { rules: { 'no-such-key*': {} } } } });

  const admin = newUser(server);
  await root.createIdentity(ENCLAVE, { identity: admin.identity, privilege: 'Admin' });
  clients.admin = admin.client;
  const user = newUser(server);
  await root.createIdentity(ENCLAVE, { identity: user.identity, privilege: 'User' });
  await root.assignPolicy(ENCLAVE, user.identity, 'fixture-policy');
  clients.user = user.client;
  const deniedUser = newUser(server);
  await root.createIdentity(ENCLAVE, { identity: deniedUser.identity });
  await root.assignPolicy(ENCLAVE, deniedUser.identity, 'nothing');
  clients.denied = deniedUser.client;
  clients.unknown = newUser(server).client;
  clients.nocert = clientFor(server);
  fixtureUser = generateApiKey().identity;
  await root.createIdentity(ENCLAVE, { identity: fixtureUser });

  for (const role of ROLES) {
    await root.createKey(ENCLAVE, { name: `del-${role}` });
    await root.createPolicy(ENCLAVE, { name: `pdel-${role}`, allow: {} });
    doomedIdentities[role] = generateApiKey().identity;
    await root.createIdentity(ENCLAVE, { identity: doomedIdentities[role] });
  }
});

after(async () => {
  for (const c of Object.values(clients)) c.close();
  await server?.stop();
});

describe('every command × every privilege', () => {
  for (const c of CASES) {
    test(c.command, async () => {
      // ENCLAVE:DELETE by root removes 'doomed' for everyone: run it last.
      const order = c.command === 'ENCLAVE:DELETE' ? [...ROLES.filter((r) => r !== 'root'), 'root' as Role] : ROLES;
      for (const role of order) {
        const want = c.want[role] ?? c.want.default;
        const label = `${c.command} as ${role}`;
        if (want === 'ok') await c.run(clients[role], role).catch((err: Error) => assert.fail(`${label}: ${err.message}`));
        else await rejectsWith(c.run(clients[role], role), want, label);
      }
    });
  }

  test('an Admin of one enclave has no rights in another', async () => {
    await clients.root.createEnclave('other');
    await clients.root.createKey('other', { name: 'k' });
    await rejectsWith(clients.admin.keyStatus('other', [{ name: 'k' }]), 'ERR_NOT_ALLOWED');
    await rejectsWith(clients.admin.createKey('other', { name: 'x' }), 'ERR_NOT_ALLOWED');
  });

  test('root gets "enclave does not exist" for a missing enclave; others get no hint', async () => {
    await rejectsWith(clients.root.keyStatus('no-such-enclave', [{ name: 'k' }]), 'ERR_ENCLAVE_NOT_FOUND');
    await rejectsWith(clients.admin.keyStatus('no-such-enclave', [{ name: 'k' }]), 'ERR_NOT_ALLOWED');
  });
});
