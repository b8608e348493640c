/** Test vectors (test/vectors/*.json) and small helpers the vector tests share. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './server.js';

/** Loads test/vectors/<file>. */
export function loadVectors<T>(file: string): T {
  return JSON.parse(readFileSync(join(REPO_ROOT, 'test/vectors', file), 'utf8')) as T;
}

export const hex = (s: string): Buffer => Buffer.from(s, 'hex');
export const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
