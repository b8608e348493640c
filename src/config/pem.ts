/** Reading PEM files named in the configuration. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** PEM text of a CA file, or of every `.pem`/`.crt`/`.cer` file in a CA directory. */
export function readCaPath(path: string): string[] {
  if (!statSync(path).isDirectory()) return [readFileSync(path, 'utf8')];
  return readdirSync(path)
    .filter((f) => /\.(pem|crt|cer)$/i.test(f))
    .sort()
    .map((f) => readFileSync(join(path, f), 'utf8'));
}
