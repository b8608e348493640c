/**
 * Listing on the KES API (`GET /v1/{key,policy,identity}/list/{param}`).
 *
 * The KES client pages by handing the server's `continue_at` back as the next `param`, so the
 * param has to carry both what to list and where to go on. It reads:
 *
 * | param | lists |
 * |---|---|
 * | `` or `*` | everything |
 * | `minio-` or `minio-*` | names starting with `minio-` (MinIO sends a prefix, the KES CLI a pattern) |
 * | `minio-*minio-x` | names starting with `minio-`, from `minio-x` on (a continuation) |
 *
 * and every `continue_at` we answer has the third form. No name can contain a `*`, so the
 * split is unambiguous.
 */
import { DEFAULT_PAGE, type Page } from '../kms/pagination.js';

export interface ListPosition {
  readonly prefix: string;
  /** '' = from the first name with the prefix. */
  readonly from: string;
}

export function parseListParam(param: string): ListPosition {
  const star = param.indexOf('*');
  if (star === -1) return { prefix: param, from: '' };
  return { prefix: param.slice(0, star), from: param.slice(star + 1) };
}

/** The `continue_at` of a page: '' at the end. */
export function continueToken(pos: ListPosition, next: string): string {
  return next === '' ? '' : `${pos.prefix}*${next}`;
}

/** One page of a sorted list of names (identities, listed in their KES spelling). */
export function pageOf(sorted: readonly string[], pos: ListPosition, limit = DEFAULT_PAGE): Page<string> {
  const items: string[] = [];
  const start = pos.from !== '' && pos.from > pos.prefix ? pos.from : pos.prefix;
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < start) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < sorted.length; i++) {
    const name = sorted[i]!;
    if (!name.startsWith(pos.prefix)) break;
    if (items.length === limit) return { items, continueAt: name };
    items.push(name);
  }
  return { items, continueAt: '' };
}
