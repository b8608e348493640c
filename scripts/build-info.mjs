// Records what `minkms --version` and `GET /version` report about the build: the git commit of
// the tree that was compiled (empty outside a git checkout, e.g. when building from a tarball).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';

let commit = '';
try {
  commit = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  if (dirty.trim() !== '') commit += '-dirty';
} catch {
  // not a git checkout
}
mkdirSync('dist', { recursive: true });
writeFileSync('dist/build-info.json', JSON.stringify({ commit, builtAt: new Date().toISOString() }) + '\n');
