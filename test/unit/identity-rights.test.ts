/**
 * Service accounts (src/kms/kms.ts): the privilege reported is the one they act with; they
 * create nothing that outlives their parent; and a SysAdmin's service accounts in other
 * enclaves go when it stops being a SysAdmin, instead of waiting to regain their rights.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import type { Kms } from '../../src/kms/kms.js';
import { isSdkCommandName } from '../../src/protocol/commands.js';
import { PRIVILEGE, encodeRecord, type IdentityRecord } from '../../src/kms/records.js';
import { createId, newIdentity, withKms } from '../helpers/kms.js';
import { rejectsWith } from '../helpers/clients.js';

const ids = (kms: Kms, enclave: string) =>
  kms
    .listIdentities(enclave, '', '', 0)
    .items.map((i) => i.identity)
    .sort();

describe('service accounts report what they act with', () => {
  it('IDENTITY:STATUS, IDENTITY:LIST and the principal show the effective privilege and policy', () =>
    withKms(async ({ kms, root }) => {
      await kms.createEnclave(root, 'a');
      await kms.createEnclave(root, 'e');
      const rootP = kms.principal(root, 'e');
      const [sys, admin, user, ofRoot, ofSys, ofAdmin, ofOfAdmin, ofUser] = Array.from({ length: 8 }, newIdentity) as string[] as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      await createId(kms, kms.principal(root, 'a'), 'a', sys, 'SysAdmin'); // SysAdmin through enclave a
      await createId(kms, rootP, 'e', admin, 'Admin');
      await createId(kms, rootP, 'e', user, 'User');
      await kms.createPolicy(root, 'e', 'app', { 'KEY:STATUS': ['app-*'] }, {}, isSdkCommandName);
      await kms.assignPolicy(rootP, 'e', user, 'app');
      await createId(kms, rootP, 'e', ofRoot, '', true);
      await createId(kms, kms.principal(sys, 'e'), 'e', ofSys, '', true);
      await createId(kms, kms.principal(admin, 'e'), 'e', ofAdmin, '', true);
      await createId(kms, kms.principal(ofAdmin, 'e'), 'e', ofOfAdmin, '', true);
      await createId(kms, kms.principal(user, 'e'), 'e', ofUser, '', true);

      const want: [string, string, number, string, boolean][] = [
        ['Admin', admin, PRIVILEGE.Admin, '', false],
        ['User', user, PRIVILEGE.User, 'app', false],
        ['service account of root', ofRoot, PRIVILEGE.Admin, '', true],
        ['service account of a SysAdmin', ofSys, PRIVILEGE.Admin, '', true],
        ['service account of an Admin', ofAdmin, PRIVILEGE.Admin, '', true],
        ['service account of a service account of an Admin', ofOfAdmin, PRIVILEGE.Admin, '', true],
        ['service account of a User', ofUser, PRIVILEGE.User, 'app', true],
      ];
      const listed = new Map(kms.listIdentities('e', '', '', 0).items.map((i) => [i.identity, i]));
      for (const [i, [name, id, privilege, policy, sa]] of want.entries()) {
        for (const [how, info] of [
          ['status', kms.identityInfo('e', id)],
          ['list', listed.get(id)!],
        ] as const) {
          assert.equal(info.privilege, privilege, `case ${i} (${name}, ${how}): got privilege ${info.privilege}, want ${privilege}`);
          assert.equal(info.policy, policy, `case ${i} (${name}, ${how}): got policy '${info.policy}'`);
          assert.equal(info.isServiceAccount, sa, `case ${i} (${name}, ${how}): got isServiceAccount ${info.isServiceAccount}`);
        }
        const p = kms.principal(id, 'e');
        assert.equal(p.privilege, privilege, `case ${i} (${name}): principal privilege ${p.privilege}`);
        assert.equal(p.serviceAccount, sa, `case ${i} (${name}): principal serviceAccount ${p.serviceAccount}`);
        assert.equal(p.admin, privilege !== PRIVILEGE.User, `case ${i} (${name}): principal admin ${p.admin}`);
      }
      // A SysAdmin sees itself in any enclave, as SysAdmin (root did before; now every SysAdmin).
      assert.equal(kms.identityInfo('e', sys).privilege, PRIVILEGE.SysAdmin);
      assert.equal(kms.identityInfo('e', root).privilege, PRIVILEGE.SysAdmin);
      assert.equal(kms.principal(sys, 'e').privilege, PRIVILEGE.SysAdmin);
      assert.equal(kms.principal(newIdentity(), 'e').privilege, undefined, 'a stranger has a privilege');
    }));
});

describe('a service account creates nothing that outlives its parent', () => {
  it('creates only service accounts (its children), overwrites only its descendants', () =>
    withKms(async ({ kms, root }) => {
      await kms.createEnclave(root, 'e');
      const rootP = kms.principal(root, 'e');
      const [admin, other, sa, child] = Array.from({ length: 4 }, newIdentity) as [string, string, string, string];
      await createId(kms, rootP, 'e', admin, 'Admin');
      await createId(kms, rootP, 'e', other, 'User');
      await createId(kms, kms.principal(admin, 'e'), 'e', sa, '', true);
      const saP = kms.principal(sa, 'e');
      assert.equal(saP.admin, true, "an Admin's service account does not act as Admin");

      const refused: [string, string, string, boolean][] = [
        ['a new Admin', newIdentity(), 'Admin', false],
        ['a new User', newIdentity(), 'User', false],
        ['a new SysAdmin', newIdentity(), 'SysAdmin', false],
        ['its parent, as a service account of itself', admin, '', true],
        ['another identity, as a service account of itself', other, '', true],
        ['its parent, as an Admin', admin, 'Admin', false],
      ];
      for (const [i, [name, id, privilege, asSa]] of refused.entries()) {
        const before = ids(kms, 'e');
        await rejectsWith(() => createId(kms, saP, 'e', id, privilege, asSa), 'ERR_NOT_ALLOWED', `case ${i} (${name})`);
        assert.deepEqual(ids(kms, 'e'), before, `case ${i} (${name}): the identities changed`);
      }
      assert.equal(kms.identityInfo('e', admin).isServiceAccount, false, 'the parent was turned into a service account');

      // A service account of its own: a child, and the child's child, overwritten by the grandparent.
      await createId(kms, saP, 'e', child, 'Admin', true);
      assert.equal(kms.identityInfo('e', child).createdBy, sa);
      const grandchild = newIdentity();
      await createId(kms, kms.principal(child, 'e'), 'e', grandchild, '', true);
      await createId(kms, saP, 'e', grandchild, '', true);
      assert.deepEqual(kms.identityInfo('e', sa).serviceAccounts, [child, grandchild].sort());

      // All of it goes with the Admin.
      await kms.deleteIdentity(rootP, 'e', admin);
      assert.deepEqual(ids(kms, 'e'), [other], 'something created by the service account outlived its parent');

      // Non-service Admins still create Admins.
      const admin2 = newIdentity();
      await createId(kms, rootP, 'e', admin2, 'Admin');
      const made = newIdentity();
      await createId(kms, kms.principal(admin2, 'e'), 'e', made, 'Admin');
      assert.equal(kms.identityInfo('e', made).privilege, PRIVILEGE.Admin);
    }));
});

describe("a SysAdmin's service accounts in other enclaves", () => {
  /** SysAdmin `s` (record in enclave a) with a service account (and its child) in enclave b. */
  async function setup(kms: Kms, root: string) {
    for (const e of ['a', 'b', 'c']) await kms.createEnclave(root, e);
    const [s, sa, sa2] = Array.from({ length: 3 }, newIdentity) as [string, string, string];
    await createId(kms, kms.principal(root, 'a'), 'a', s, 'SysAdmin');
    await createId(kms, kms.principal(s, 'b'), 'b', sa, '', true);
    await createId(kms, kms.principal(sa, 'b'), 'b', sa2, '', true);
    assert.equal(kms.principal(sa, 'b').admin, true);
    return { s, sa, sa2 };
  }

  it('are deleted with the identity (and stay deleted when it is added again and after a restart)', () =>
    withKms(async (ctx) => {
      const { kms, root } = ctx;
      const { s, sa, sa2 } = await setup(kms, root);
      await kms.deleteIdentity(kms.principal(root, 'a'), 'a', s);
      await createId(kms, kms.principal(root, 'a'), 'a', s, 'SysAdmin');
      for (const k of [kms, await ctx.restart()]) {
        for (const id of [sa, sa2]) {
          assert.equal(k.principal(id, 'b').known, false, 'a service account regained its rights');
          assert.equal(await ctx.store.get(`identity/b/${id}`), undefined, 'a service account is still stored');
        }
        assert.deepEqual(ids(k, 'b'), []);
      }
    }));

  it('stay while the identity is a SysAdmin through another record, go with the last one', () =>
    withKms(async ({ kms, root }) => {
      const { s, sa } = await setup(kms, root);
      await createId(kms, kms.principal(root, 'c'), 'c', s, 'SysAdmin');
      await kms.deleteIdentity(kms.principal(root, 'a'), 'a', s);
      assert.equal(kms.principal(sa, 'b').admin, true, 'deleted while its parent is still a SysAdmin');
      await kms.deleteIdentity(kms.principal(root, 'c'), 'c', s);
      assert.equal(kms.principal(sa, 'b').known, false);
    }));

  it('go when the identity is overwritten as a User, or its enclave is deleted', () =>
    withKms(async ({ kms, root }) => {
      const { s, sa } = await setup(kms, root);
      await createId(kms, kms.principal(root, 'a'), 'a', s, 'User');
      assert.equal(kms.principal(sa, 'b').known, false, 'kept after its parent was made a User');
      await createId(kms, kms.principal(root, 'a'), 'a', s, 'SysAdmin');
      const sa3 = newIdentity();
      await createId(kms, kms.principal(s, 'b'), 'b', sa3, '', true);
      await kms.deleteEnclave('a');
      assert.equal(kms.principal(sa3, 'b').known, false, "kept after the enclave of its parent's record was deleted");
    }));

  it("follow the identity's own record where it has one", () =>
    withKms(async ({ kms, root }) => {
      const { s, sa } = await setup(kms, root);
      await createId(kms, kms.principal(root, 'b'), 'b', s, 'User');
      await kms.deleteIdentity(kms.principal(root, 'a'), 'a', s);
      const p = kms.principal(sa, 'b');
      assert.equal(p.known, true, 'deleted although its parent is still in its enclave');
      assert.equal(p.admin, false, 'acts as Admin although its parent is now a User');
      await kms.deleteIdentity(kms.principal(root, 'b'), 'b', s);
      assert.equal(kms.principal(sa, 'b').known, false);
    }));

  it('left behind by an older version, are not adopted when the identity gets rights again', () =>
    withKms(async (ctx) => {
      const { kms, root } = ctx;
      for (const e of ['a', 'b']) await kms.createEnclave(root, e);
      const [s, orphanB, orphanA] = Array.from({ length: 3 }, newIdentity) as [string, string, string];
      // What a deleted SysAdmin left behind before this version: its service accounts in b, and in a.
      const legacy = (enclave: string, identity: string) => {
        const path = `identity/${enclave}/${identity}`;
        const rec: IdentityRecord = {
          v: 1,
          identity,
          privilege: PRIVILEGE.User,
          policy: '',
          createdAt: new Date().toISOString(),
          createdBy: s,
          serviceAccount: true,
          parent: s,
          tags: {},
        };
        return { key: path, value: ctx.barrier.encrypt(path, encodeRecord(rec)) };
      };
      assert.equal((await ctx.store.commit([], [legacy('b', orphanB), legacy('a', orphanA)])).ok, true);
      const k = await ctx.restart();
      assert.equal(k.principal(orphanB, 'b').admin, false);
      await createId(k, k.principal(root, 'a'), 'a', s, 'SysAdmin');
      for (const [enclave, id] of [
        ['b', orphanB],
        ['a', orphanA],
      ] as const) {
        assert.equal(k.principal(id, enclave).known, false, `an orphan in ${enclave} came back with the new SysAdmin record`);
        assert.equal(await ctx.store.get(`identity/${enclave}/${id}`), undefined, `an orphan in ${enclave} is still stored`);
      }
    }));
});
