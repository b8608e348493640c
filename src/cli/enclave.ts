/** Enclave commands: `add-enclave`, `rm-enclave`, `ls-enclave`, `stat-enclave` (SysAdmin only). */
import type { Command } from 'commander';
import type { EnclaveStatusResponse } from '../protocol/messages.js';
import { clientCommand, done, humanTime, listAll, print, printFields, printJson, rfc3339, runs, table } from './common.js';

/** The JSON form of an enclave. */
export function enclaveJson(e: EnclaveStatusResponse) {
  return { name: e.name, created_at: rfc3339(e.createdAt), created_by: e.createdBy };
}

export function enclaveCommands(program: Command): void {
  runs(
    clientCommand(program, 'add-enclave', {
      description: 'create an enclave',
      enclave: false,
      examples: ['minkms add-enclave my-enclave', 'minkms add-enclave -k -a k1:… tenant-1'],
    }).argument('<NAME>', 'enclave name'),
    async (ctx, name: string) => {
      ctx.need('ENCLAVE:CREATE');
      await ctx.client.createEnclave(name);
      if (ctx.json) printJson({ name });
      else done(`Created enclave '${name}'`);
    },
  );

  runs(
    clientCommand(program, 'rm-enclave', {
      description: 'delete an enclave with all its keys, policies and identities',
      enclave: false,
      examples: ['minkms rm-enclave my-enclave'],
    }).argument('<NAME>', 'enclave name'),
    async (ctx, name: string) => {
      ctx.need('ENCLAVE:DELETE');
      await ctx.client.deleteEnclave(name);
      if (ctx.json) printJson({ name });
      else done(`Deleted enclave '${name}'`);
    },
  );

  runs(
    clientCommand(program, 'ls-enclave', {
      description: 'list enclaves',
      enclave: false,
      examples: ['minkms ls-enclave', 'minkms ls-enclave tenant- --json'],
    })
      .alias('ls-enclaves')
      .argument('[PREFIX]', 'list only enclaves whose name starts with PREFIX'),
    async (ctx, prefix: string | undefined) => {
      ctx.need('ENCLAVE:LIST');
      const client = ctx.client;
      const all = await listAll(async (continueAt) => {
        const r = await client.listEnclaves({ prefix: prefix ?? '', continueAt });
        return { items: r.enclaves, continueAt: r.continueAt };
      });
      if (ctx.json) return printJson(all.map(enclaveJson));
      if (all.length === 0) return;
      print(
        table(
          ['Name', 'Created', 'Created by'],
          all.map((e) => [e.name, humanTime(e.createdAt), e.createdBy || '-']),
        ),
      );
    },
  );

  runs(
    clientCommand(program, 'stat-enclave', {
      description: 'show creation time and creator of enclaves',
      enclave: false,
      examples: ['minkms stat-enclave my-enclave', 'minkms stat-enclave tenant-1 tenant-2 --json'],
    }).argument('<NAME...>', 'enclave names'),
    async (ctx, names: string[]) => {
      ctx.need('ENCLAVE:STATUS');
      const all = await ctx.client.enclaveStatus(names);
      if (ctx.json) return printJson(all.map(enclaveJson));
      all.forEach((e, i) => {
        if (i > 0) print();
        printFields([
          ['Name', e.name],
          ['Created', humanTime(e.createdAt)],
          ['Created by', e.createdBy || '-'],
        ]);
      });
    },
  );
}
