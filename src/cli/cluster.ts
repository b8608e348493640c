/** Cluster commands (SysAdmin): `stat`, `ls`, `add`, `rm`, `edit`, `add-hsm`, `rm-hsm`. */
import { Option, type Command } from 'commander';
import type { ClusterStatusResponse, ServerStatusResponse } from '../protocol/messages.js';
import { formatDuration } from '../protocol/json.js';
import { clientCommand, usageError, done, humanBytes, humanDuration, print, printFields, printJson, runs, style, table } from './common.js';

/** One node, up or down, in node-id order. */
export interface NodeEntry {
  id: number;
  host: string;
  status?: ServerStatusResponse;
}

export function nodesOf(s: ClusterStatusResponse): NodeEntry[] {
  const out: NodeEntry[] = [];
  for (const [id, status] of s.nodesUp) out.push({ id, host: status.host, status });
  for (const [id, host] of s.nodesDown) if (!s.nodesUp.has(id)) out.push({ id, host });
  return out.sort((a, b) => a.id - b.id);
}

/** The short JSON form (`ls`). */
export function nodeSummaryJson(n: NodeEntry) {
  return {
    node_id: n.id,
    state: n.status ? 'online' : 'offline',
    role: n.status?.role ?? null,
    uptime: n.status ? formatDuration(n.status.upTime) : null,
    host: n.host,
  };
}

/** The full JSON form (`stat`): protocol JSON names. */
export function nodeJson(n: NodeEntry) {
  const s = n.status;
  if (!s) return { ...nodeSummaryJson(n) };
  return {
    ...nodeSummaryJson(n),
    version: s.version,
    api_version: s.apiVersion,
    commit: s.commit,
    leader_id: s.leaderId,
    nodes: Object.fromEntries([...s.nodes].sort(([a], [b]) => a - b).map(([id, host]) => [String(id), host])),
    sealed: s.sealed,
    hsm: [...s.hsms],
    hsm_active: [...s.configuredHsms],
    hsm_pending: { ...s.pendingHsms },
    root_identity: s.rootIdentity,
    root_identity_source: s.rootIdentitySource,
    sys_os: s.os,
    sys_cpu_arch: s.arch,
    sys_cpu_num: s.cpus,
    sys_cpu_used: s.usableCpus,
    sys_mem_heap_used: s.heapMemInUse,
    sys_mem_stack_used: s.stackMemInUse,
  };
}

const stateText = (n: NodeEntry) => (n.status ? style.green('online') : style.red('offline'));

export function clusterCommands(program: Command): void {
  runs(
    clientCommand(program, 'stat', {
      description: 'show the status of every node: state, role, uptime, host, version, HSMs, system',
      enclave: false,
      examples: ['minkms stat', 'minkms stat --json'],
    }),
    async (ctx) => {
      ctx.need('CLUSTER:STATUS');
      const nodes = nodesOf(await ctx.client.clusterStatus());
      if (ctx.json) return printJson(nodes.map(nodeJson));
      nodes.forEach((n, i) => {
        if (i > 0) print();
        const s = n.status;
        print(`${style.bold(`Node ${n.id}`)}  ${stateText(n)}${s ? `  ${s.role}` : ''}`);
        if (!s) {
          printFields([['  Host', n.host]]);
          return;
        }
        printFields([
          ['  Host', n.host],
          ['  Version', `${s.version} (API ${s.apiVersion})`],
          ['  Uptime', humanDuration(s.upTime)],
          ...(s.sealed ? [['  State', style.red('sealed')] as [string, string]] : []),
          ['  HSMs', s.hsms.length > 0 ? s.hsms.join(', ') : '-'],
          ['  Active HSMs', s.configuredHsms.length > 0 ? s.configuredHsms.join(', ') : '-'],
          ...Object.entries(s.pendingHsms).map(([name, why]) => [`  Pending HSM`, `${name}: ${style.red(why)}`] as [string, string]),
          ...(s.rootIdentity ? [['  Root', `${s.rootIdentity} (${s.rootIdentitySource})`] as [string, string]] : []),
          [
            '  System',
            `${s.os}/${s.arch}, ${s.usableCpus}/${s.cpus} CPUs, heap ${humanBytes(s.heapMemInUse)}, stack ${humanBytes(s.stackMemInUse)}`,
          ],
          ['  Commit', String(s.commit)],
        ]);
      });
    },
  );

  runs(
    clientCommand(program, 'ls', {
      description: 'list the nodes of the cluster: ID, status, role, uptime, host',
      enclave: false,
      examples: ['minkms ls', 'minkms ls --json'],
    }),
    async (ctx) => {
      ctx.need('CLUSTER:STATUS');
      const nodes = nodesOf(await ctx.client.clusterStatus());
      if (ctx.json) return printJson(nodes.map(nodeSummaryJson));
      print(
        table(
          ['ID', 'Status', 'Role', 'Uptime', 'Host'],
          nodes.map((n) => [String(n.id), stateText(n), n.status?.role ?? '-', n.status ? humanDuration(n.status.upTime) : '-', n.host]),
        ),
      );
    },
  );

  runs(
    clientCommand(program, 'add-hsm', {
      description: 'seal the root encryption key with one more configured HSM',
      enclave: false,
      examples: ['minkms add-hsm hsm:minio:minkms', 'minkms add-hsm --overwrite hsm:minio:soft   # reseal'],
    })
      .argument('<NAME>', 'HSM name, as configured on every node (see minkms stat)')
      .addOption(new Option('--overwrite', 'replace an existing sealed entry of this HSM (reseal)')),
    async (ctx, name: string) => {
      const o = ctx.opts as { overwrite?: boolean };
      ctx.need('CLUSTER:ADDHSM');
      await ctx.client.addHsm(name, o.overwrite === true);
      if (ctx.json) printJson({ name, overwrite: o.overwrite === true });
      else done(`Sealed the root encryption key with HSM '${name}'`);
    },
  );

  runs(
    clientCommand(program, 'rm-hsm', {
      description: 'remove the sealed root key entry of an HSM',
      enclave: false,
      examples: ['minkms rm-hsm hsm:minio:soft'],
    }).argument('<NAME>', 'HSM name (see minkms stat)'),
    async (ctx, name: string) => {
      ctx.need('CLUSTER:REMOVEHSM');
      // The root API key is derived from one HSM: removing that one's entry replaces the key.
      const [before] = [...(await ctx.client.clusterStatus()).nodesUp.values()];
      await ctx.client.removeHsm(name);
      const rootChanged = before?.rootIdentitySource === name;
      if (ctx.json) return printJson({ name, root_identity_changed: rootChanged });
      done(`Removed the sealed root key entry of HSM '${name}'`);
      if (rootChanged) {
        print(
          `The root API key was derived from ${name}: it is no longer valid. The node printed the new one ` +
            `("API Key" in its log, e.g. journalctl -u minkms -g 'API Key'); set admin.identity to keep one root identity across HSM changes.`,
        );
      }
    },
  );

  // Membership of an etcd-backed cluster. A node joins by configuration: started with the
  // cluster's `store.etcd` section, the same HSM and its own --host, it registers itself.
  runs(
    clientCommand(program, 'add', {
      description: 'pre-register a node (it is listed as down until it starts with that --host and the cluster configuration)',
      enclave: false,
      examples: ['minkms add kms3.example.net:7373'],
    }).argument('<HOST[:PORT]>', 'address the new node will be started with (--host)'),
    async (ctx, host: string) => {
      ctx.need('CLUSTER:ADDNODE');
      await ctx.client.addNode(host);
      if (ctx.json) printJson({ host });
      else done(`Registered node ${host}; start it with --host ${host} and the cluster configuration`);
    },
  );

  runs(
    clientCommand(program, 'rm', {
      description: 'deregister a stopped node from the cluster',
      enclave: false,
      examples: ['minkms rm kms3.example.net:7373'],
    }).argument('<HOST[:PORT]>', 'address of the node (see minkms ls)'),
    async (ctx, host: string) => {
      ctx.need('CLUSTER:REMOVENODE');
      await ctx.client.removeNode(host);
      if (ctx.json) printJson({ host });
      else done(`Removed node ${host}`);
    },
  );

  runs(
    clientCommand(program, 'edit', {
      description: 'repair the cluster definition: forget nodes by id (after a permanent node loss), even if they look alive',
      enclave: false,
      examples: ['minkms edit kms0.example.net:7373 --rm 2', 'minkms edit kms0.example.net:7373 --rm 2 --rm 3'],
    })
      .argument('<HOST[:PORT]>', 'node to send the change to')
      .addOption(
        new Option('--rm <ID>', 'node id to forget (repeatable)').argParser((v: string, prev: number[] = []) => {
          const id = Number(v);
          if (!Number.isInteger(id) || id < 0) throw new Error(`invalid node id '${v}'`);
          return [...prev, id];
        }),
      ),
    async (ctx, host: string) => {
      const ids = (ctx.opts as { rm?: number[] }).rm ?? [];
      if (ids.length === 0) throw usageError('no node id given', 'use --rm ID (see minkms ls)');
      ctx.need('CLUSTER:EDIT');
      await ctx.client.editCluster(ids, host);
      if (ctx.json) printJson({ host, removed: ids });
      else done(`Removed node(s) ${ids.join(', ')} from the cluster definition`);
    },
  );
}
