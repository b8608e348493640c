/**
 * The package version (package.json) and the build's git commit (dist/build-info.json, written
 * by `npm run build`; empty when unknown), read once. Both files sit two levels above dist/src.
 */
import { readFileSync } from 'node:fs';

function readJson<T>(path: string): Partial<T> {
  try {
    return JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as Partial<T>;
  } catch {
    return {};
  }
}

export const VERSION: string = readJson<{ version: string }>('../../package.json').version ?? '0.0.0';
export const COMMIT: string = readJson<{ commit: string }>('../build-info.json').commit ?? '';
