/**
 * `minkms profile` (profiling a node: start, wait, stop, write the archive) and
 * `minkms restart` (one node, listed nodes one after another, or the whole cluster). SysAdmin.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KmsClient } from '../client/client.js';
import { normalizeEndpoint } from '../client/transport.js';
import { readTar } from '../server/tar.js';
import { writeFileAtomic } from '../store/atomic-file.js';
import {
  clientCommand,
  done,
  humanBytes,
  humanDuration,
  print,
  printFields,
  printJson,
  runs,
  serverEndpoints,
  usageError,
  type Context,
} from './common.js';
import { parseGoDuration } from './logs-audit.js';

/** Default of `minkms profile --duration`. */
const DEFAULT_PROFILE_MS = 30_000;
/** Default bound of a restart (`--timeout`): a cluster restarts one node at a time. */
const DEFAULT_RESTART_TIMEOUT_MS = 10 * 60_000;

function parseDurationArg(v: string): number {
  const ms = /^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : parseGoDuration(v);
  if (ms === undefined || !(ms > 0)) throw new InvalidArgumentError('a duration such as 30s, 2m or 90 (seconds).');
  return ms;
}

function parseBlock(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 0x7fffffff) throw new InvalidArgumentError('nanoseconds from 1 to 2147483647.');
  return Number(v);
}

function stamp(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}_${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}`;
}

/** Waits `ms`, or less when the user presses Ctrl-C (then the profile is still collected). */
async function waitOrInterrupt(ms: number): Promise<boolean> {
  const ac = new AbortController();
  let interrupted = false;
  const onInt = () => {
    interrupted = true;
    ac.abort();
  };
  process.once('SIGINT', onInt);
  try {
    await sleep(ms, undefined, { signal: ac.signal });
  } catch {
    // interrupted
  } finally {
    process.off('SIGINT', onInt);
  }
  return interrupted;
}

/** A node's uptime (s), from its own metrics: tells a restarted process from the old one. */
async function uptimeOf(client: KmsClient, host: string): Promise<number> {
  const res = await client.transport.request({ method: 'GET', path: '/v1/health/metrics', host });
  if (res.status !== 200) throw new Error(`metrics of ${host}: HTTP ${res.status}`);
  const m = /^minkms_uptime_seconds (\S+)$/m.exec(res.body.toString('utf8'));
  if (!m) throw new Error(`metrics of ${host}: no minkms_uptime_seconds`);
  return Number(m[1]);
}

/** Waits until `host` runs a process started after `since` (ms) and is ready. */
async function waitRestarted(client: KmsClient, host: string, since: number, deadline: number): Promise<number> {
  let last: string;
  for (;;) {
    try {
      const up = await uptimeOf(client, host);
      if (up * 1000 < Date.now() - since) {
        await client.ready({ host });
        return up;
      }
      last = 'still the old process';
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${host} did not come back within the timeout (${last})`);
    await sleep(250);
  }
}

export function debugCommands(program: Command): void {
  const profile = clientCommand(program, 'profile', {
    description: 'profile one node: start, wait (or Ctrl-C), stop, and write the results (a .tar.gz of CPU/heap profiles)',
    enclave: false,
    examples: [
      'minkms profile                                   # CPU and heap of the first server, 30 s',
      'minkms profile kms1.example.net:7373 --duration 2m -o kms1.tar.gz',
      'minkms profile --cpu --block 1000000             # CPU and event-loop blocking (1 ms resolution)',
      'minkms profile --stat                            # what runs now',
      'minkms profile --stop                            # stop what runs and download it',
    ],
  })
    .alias('pprof')
    .argument('[HOST]', 'node to profile (default: the first of MINIO_KMS_SERVER)')
    .option('--cpu', 'V8 CPU profile (cpu.cpuprofile: Chrome DevTools, speedscope)')
    .option('--heap', 'V8 sampling heap profile (heap.heapprofile: Chrome DevTools)')
    .addOption(
      new Option('--thread <WHICH>', 'runtime: active resources; os: a diagnostic report (threads, handles); all: both').choices([
        'runtime',
        'os',
        'all',
      ]),
    )
    .addOption(new Option('--block <NS>', 'event-loop blocking: delay histogram with this resolution in ns (≥ 1 ms)').argParser(parseBlock))
    .addOption(
      new Option('-d, --duration <DURATION>', 'how long to profile (Ctrl-C stops earlier; the server stops by itself after 5m)')
        .argParser(parseDurationArg)
        .default(DEFAULT_PROFILE_MS, '30s'),
    )
    .option('-o, --output <FILE>', 'archive to write (default: minkms-profile-HOST-YYYYMMDD_HHMMSS.tar.gz)')
    .option('--force', 'overwrite an existing file')
    .option('--stat', 'only show what profiling runs on the node')
    .option('--stop', 'only stop what runs and download its results');
  runs(profile, async (ctx: Context, hostArg: string | undefined) => {
    const host = hostArg ?? serverEndpoints()[0]!;
    const o = ctx.opts as Record<string, unknown>;
    ctx.need('profiling (SysAdmin)');
    if (o.stat === true) {
      const s = await ctx.client.profilingStatus(host);
      if (ctx.json) return printJson({ host, ...s, started: s.started?.toISOString() ?? null });
      if (!s.started) return print(`No profiling on ${host}.`);
      const kinds = [
        s.cpu && 'cpu',
        s.heap && 'heap',
        s.goroutine && 'runtime',
        s.thread && 'os',
        s.blockRate > 0 && `block=${s.blockRate}ns`,
      ];
      printFields([
        ['Host', host],
        ['Started', `${s.started.toISOString()} (${humanDuration(Date.now() - s.started.getTime())} ago)`],
        ['Profiles', kinds.filter(Boolean).join(', ')],
      ]);
      return;
    }
    const out =
      (o.output as string | undefined) ??
      `minkms-profile-${normalizeEndpoint(host)
        .replace(/^https:\/\//, '')
        .replace(/[^A-Za-z0-9.-]/g, '_')}-${stamp()}.tar.gz`;
    if (existsSync(out) && o.force !== true) throw usageError(`${out} exists`, 'use --force to overwrite it, or -o FILE');
    let interrupted = false;
    if (o.stop !== true) {
      const any = o.cpu === true || o.heap === true || o.thread !== undefined || o.block !== undefined;
      await ctx.client.startProfiling(
        {
          cpu: any ? o.cpu === true : true,
          heap: any ? o.heap === true : true,
          thread: o.thread as 'runtime' | 'os' | 'all' | undefined,
          blockRate: o.block as number | undefined,
        },
        host,
      );
      const ms = o.duration as number;
      if (!ctx.json) process.stderr.write(`Profiling ${host} for ${humanDuration(ms)} (Ctrl-C stops earlier)…\n`);
      interrupted = await waitOrInterrupt(ms);
    }
    const archive = await ctx.client.stopProfiling(host);
    writeFileAtomic(out, archive, 0o600);
    const files = [...readTar(gunzipSync(archive))].map(([name, data]) => ({ name, bytes: data.length }));
    if (ctx.json) return printJson({ host, file: out, bytes: archive.length, interrupted, files });
    for (const f of files) print(`  ${f.name.padEnd(18)} ${humanBytes(f.bytes)}`);
    done(`Profile of ${host} written to ${out} (${humanBytes(archive.length)})`);
  });

  const restart = clientCommand(program, 'restart', {
    description: 'restart nodes gracefully: the whole cluster one node at a time, or the given nodes (drain, then start again)',
    enclave: false,
    examples: [
      'minkms restart                                   # every node, one at a time, each waited for',
      'minkms restart --self                            # only the first of MINIO_KMS_SERVER',
      'minkms restart kms1.example.net:7373 kms2.example.net:7373   # these, one after another',
    ],
  })
    .argument('[HOST...]', 'nodes to restart one after another (each waited for); default: the whole cluster')
    .option('--self', 'restart only the node the command talks to (HOST, or the first of MINIO_KMS_SERVER)');
  runs(restart, async (ctx: Context, hosts: string[]) => {
    // A whole cluster takes a while: every node drains, starts and unseals in turn.
    ctx.opts.timeout ??= DEFAULT_RESTART_TIMEOUT_MS;
    const deadline = Date.now() + ctx.opts.timeout;
    ctx.need('restart (SysAdmin)');
    const c = ctx.client;
    const targets = hosts.length > 0 ? hosts : ctx.opts.self === true ? [serverEndpoints()[0]!] : [];
    const results: { host: string; seconds: number }[] = [];
    if (targets.length === 0) {
      const t0 = Date.now();
      if (!ctx.json) process.stderr.write('Restarting every node, one at a time…\n');
      await c.restart();
      // The node that answered restarts itself last: wait for every known endpoint.
      for (const host of c.transport.endpoints) {
        await waitRestarted(c, host, t0, deadline);
        results.push({ host, seconds: (Date.now() - t0) / 1000 });
      }
    } else {
      for (const host of targets) {
        const t0 = Date.now();
        if (!ctx.json) process.stderr.write(`Restarting ${host}…\n`);
        await c.restart({ self: true, host });
        await waitRestarted(c, host, t0, deadline);
        results.push({ host, seconds: (Date.now() - t0) / 1000 });
      }
    }
    if (ctx.json) return printJson({ restarted: results });
    for (const r of results) print(`  ${r.host.padEnd(28)} back after ${r.seconds.toFixed(1)} s`);
    done(targets.length === 0 ? 'Cluster restarted' : `Restarted ${targets.length} node${targets.length === 1 ? '' : 's'}`);
  });
}
