/**
 * The SysAdmin debug endpoints besides the log stream, as the Go SDK calls them
 * (kms-wire.md §2.1): profiling (`/v1/debug/pprof`: start, status, stop-and-download) and
 * restarts (`/v1/debug/restart`, `?self`). Who may call them is decided before the body, from
 * the TLS identity alone: a SysAdmin (while sealed: `admin.identity`, so that a node stuck
 * unsealing can still be profiled or restarted). None of them reads a body.
 */
import { KmsError } from '../errors.js';
import { encodeMessage } from '../protocol/schema.js';
import { protoJson } from '../protocol/json.js';
import { ProfileStatusResponseSchema } from '../protocol/messages.js';
import { send, type Request, type Route } from './http.js';
import type { Logger } from './log.js';
import { parseProfileQuery, type Profiler } from './profiler.js';
import type { RestartService } from './restart.js';
import type { accessRules } from './access.js';
import type { KmsNode } from './node.js';

const OCTET = 'application/octet-stream';

export interface DebugDeps {
  readonly node: KmsNode;
  readonly access: ReturnType<typeof accessRules>;
  readonly profiler: Profiler;
  readonly restart: RestartService;
  readonly log: Logger;
}

/** Whether the client takes a gzip-encoded body: `Accept-Encoding: gzip` (not `;q=0`), or the SDK's `Accept: gzip`. */
function acceptsGzip(req: Request): boolean {
  const enc = /(?:^|,)\s*gzip\s*(?:;\s*q=([\d.]+))?\s*(?=,|$)/i.exec(String(req.headers['accept-encoding'] ?? ''));
  if (enc && (enc[1] === undefined || Number(enc[1]) > 0)) return true;
  return /(?:^|,)\s*gzip\s*(?=,|$)/i.test(String(req.headers.accept ?? ''));
}

/** Protobuf for the Go SDK (`Accept: application/octet-stream`), JSON otherwise. */
function wantsProtobuf(req: Request): boolean {
  const accept = req.headers.accept ?? '';
  return accept.includes(OCTET) || (accept.includes('application/*') && !accept.includes('application/json'));
}

export function debugRoutes({ node, access, profiler, restart, log }: DebugDeps): Route[] {
  const sysAdmin = access.sysAdmin({ whileSealed: true });
  return [
    {
      // StartProfiling: `?cpu=B&heap=B[&thread=…][&block=N][&mutex=N]`, no body.
      method: 'POST',
      path: '/v1/debug/pprof',
      access: sysAdmin,
      handler: async ({ res, query }) => {
        await profiler.start(parseProfileQuery(query));
        send(res, 200, '', 'text/plain');
      },
    },
    {
      // ProfilingStatus.
      method: 'GET',
      path: '/v1/debug/pprof',
      access: sysAdmin,
      handler: ({ req, res }) => {
        const status = profiler.status();
        if (wantsProtobuf(req)) send(res, 200, encodeMessage(ProfileStatusResponseSchema, status), OCTET);
        else {
          // For people and curl: ProfileStatusResponse as protobuf-JSON.
          const { started, cpu, heap, goroutine, thread, blockRate, mutexFraction } = status;
          const json = protoJson({ started, cpu, heap, goroutine, thread, block_rate: blockRate, mutex_frac: mutexFraction });
          send(res, 200, JSON.stringify(json), 'application/json');
        }
      },
    },
    {
      // StopProfiling: the results, one gzip'd tar archive. To a client that takes gzip
      // encoding (Go's transport adds Accept-Encoding: gzip and unpacks it, so the SDK's caller
      // reads the tar) it is `Content-Encoding: gzip`; to others the .tar.gz file itself.
      method: 'DELETE',
      path: '/v1/debug/pprof',
      access: sysAdmin,
      handler: async ({ req, res }) => {
        const archive = await profiler.stop();
        const headers = acceptsGzip(req)
          ? { 'content-type': 'application/x-tar', 'content-encoding': 'gzip' }
          : { 'content-type': 'application/gzip' };
        res.writeHead(200, {
          ...headers,
          'content-length': archive.length,
          'content-disposition': 'attachment; filename="minkms-profile.tar.gz"',
        });
        res.end(archive);
      },
    },
    {
      // Restart: `?self` this node; without it the whole cluster, one node at a time (a single
      // node with the embedded store: itself). The answer goes out before this node goes.
      method: 'POST',
      path: '/v1/debug/restart',
      access: sysAdmin,
      handler: async ({ res, query, identity }) => {
        for (const k of query.keys()) {
          if (k !== 'self') throw new KmsError('ERR_BAD_REQUEST', `unknown option '${k.slice(0, 64)}' (only 'self')`);
        }
        if (!restart.selfSupported) throw new KmsError('ERR_RESTART_UNSUPPORTED');
        const self = query.has('self');
        let reason: string;
        if (self || !node.cluster) {
          reason = self ? 'restart requested (?self)' : 'restart requested (single node)';
        } else {
          const done = await restart.restartOthers();
          log.info('rolling restart: the other nodes are back; this node restarts last', {
            nodes: done.map((n) => `${n.id}:${n.ms}ms`).join(','),
          });
          reason = 'rolling restart of the cluster: the coordinator restarts last';
        }
        // After the answer is out (or the client is gone): the drain waits for it anyway.
        res.once('close', () => restart.restartSelf(`${reason} by ${identity}`));
        send(res, 200, '', 'text/plain');
      },
    },
  ];
}
