/**
 * The few protobuf-JSON texts the product writes (https://protobuf.dev/programming-guides/json/,
 * as Go's `protojson` writes them). There is no general mapping: JSON is written for people and
 * curl in three places only, each from an explicit list of JSON names — `GET /version`
 * (server/routes.ts), `GET /v1/debug/pprof` (server/debug.ts) and the uptime in `minkms cluster
 * ls/stat --json` (cli/cluster.ts). Error bodies are `{"message": …}` (server/http.ts).
 */

import { splitDuration } from './schema.js';

/** A value of {@link protoJson}: what a JSON field of a scalar proto3 type can hold. */
export type ProtoJsonValue = string | number | boolean | Date | undefined;

/**
 * A protobuf-JSON object from its fields in field-number order (keys are the JSON names): like
 * `protojson`, a field with its default value (`''`, `0`, `false`, `undefined`) is left out, and
 * a `Date` (a google.protobuf.Timestamp) is written as {@link formatTimestamp}. Numbers are
 * written as they are, so only 32-bit integer fields may be numbers (64-bit ones are strings in
 * protobuf-JSON).
 */
export function protoJson(fields: Readonly<Record<string, ProtoJsonValue>>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [name, v] of Object.entries(fields)) {
    if (v === undefined || v === '' || v === 0 || v === false) continue;
    out[name] = v instanceof Date ? formatTimestamp(v) : v;
  }
  return out;
}

/** A google.protobuf.Timestamp as text: RFC 3339 in UTC, with a fraction only when non-zero. */
export function formatTimestamp(d: Date): string {
  const ms = d.getTime();
  if (ms !== ms) throw new TypeError('invalid Date');
  const iso = d.toISOString(); // YYYY-MM-DDTHH:mm:ss.sssZ
  return iso.endsWith('.000Z') ? iso.slice(0, -5) + 'Z' : iso;
}

/** A google.protobuf.Duration (in milliseconds) as text: seconds with 0, 3, 6 or 9 fraction digits and an `s`. */
export function formatDuration(ms: number): string {
  const [seconds, nanos] = splitDuration(ms);
  const neg = seconds < 0 || nanos < 0;
  let s = `${neg ? '-' : ''}${Math.abs(seconds)}`;
  if (nanos !== 0) {
    let frac = String(Math.abs(nanos)).padStart(9, '0');
    if (frac.endsWith('000')) frac = frac.slice(0, -3);
    if (frac.endsWith('000')) frac = frac.slice(0, -3);
    s += '.' + frac;
  }
  return s + 's';
}
