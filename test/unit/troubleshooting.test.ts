/**
 * docs/troubleshooting.md cannot drift from the code: every start-up and connection error the
 * product prints is found in the source by its syntax (with the TypeScript parser, so a moved
 * file, a reformatted line or a new module does not fool it) and must appear in the doc.
 *
 * What counts as such a message:
 * - every string starting with `kms: ` anywhere in src/ (the server's start-up errors, MinKMS's
 *   convention);
 * - the message of every `new ConfigError(…)`, `SealedError`, `HsmError` and
 *   `StoreUnavailableError` anywhere in src/, and of every `fail(PATH, …)` in src/config/
 *   (configuration errors, reasons a node stays sealed, an unreachable store);
 * - in src/hsm/ and src/store/sqlite.ts, every `throw new Error(…)` / `TypeError(…)` (a wrong HSM
 *   key, a damaged record, a data directory in use) and every reason assigned to `why`;
 * - the message of every `….warn(…)` / `….error(…)` on a logger (`log`, `this.log`, …) outside
 *   src/cli/ (what the server logs when something is wrong);
 * - the message of every `new CliError(…)` / `usageError(…)` in src/cli/common.ts (the CLI's
 *   connection, TLS and credential errors shared by all commands).
 * A template literal's `${…}` parts are placeholders: each fixed part of 8 or more characters
 * must appear in the doc verbatim. A message that is not a literal (computed) is listed, so it
 * cannot slip through unnoticed either.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ts from 'typescript';
import { REPO_ROOT } from '../helpers/server.js';

const SRC = join(REPO_ROOT, 'src');
const DOC = join(REPO_ROOT, 'docs/troubleshooting.md');
const MIN_FRAGMENT = 8;

export interface Message {
  file: string;
  line: number;
  /** The message with `…` for each placeholder. */
  text: string;
  /** The fixed parts that the doc must contain. */
  fragments: string[];
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** The texts a message expression can produce (placeholders as `\0`); undefined if not literal. */
function texts(node: ts.Expression): string[] | undefined {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text];
  if (ts.isTemplateExpression(node)) return [node.head.text + node.templateSpans.map((s) => '\0' + s.literal.text).join('')];
  if (ts.isParenthesizedExpression(node)) return texts(node.expression);
  if (ts.isConditionalExpression(node)) {
    const [a, b] = [texts(node.whenTrue), texts(node.whenFalse)];
    return a && b ? [...a, ...b] : undefined;
  }
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const [a, b] = [texts(node.left) ?? ['\0'], texts(node.right) ?? ['\0']];
    return a.flatMap((x) => b.map((y) => x + y));
  }
  return undefined;
}

const LOGGER = /(^|\.|#)log$/;

/** Every start-up and connection message of the product, found in src/. */
export function productMessages(): { messages: Message[]; computed: string[] } {
  const messages: Message[] = [];
  const computed: string[] = [];
  for (const file of sources(SRC)) {
    const rel = relative(REPO_ROOT, file).split(sep).join('/');
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
    const where = (n: ts.Node) => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
    const add = (n: ts.Expression | undefined) => {
      if (!n) return;
      const t = texts(n);
      if (!t) {
        computed.push(`${rel}:${where(n)}: ${n.getText(sf).slice(0, 80)}`);
        return;
      }
      for (const raw of t) {
        if (!/[a-z]/i.test(raw.replace(/\0/g, ''))) continue; // only placeholders: nothing to document
        messages.push({
          file: rel,
          line: where(n),
          text: raw.replace(/\0/g, '…'),
          fragments: raw
            .split('\0')
            .map((f) => f.trim())
            .filter((f) => f.replace(/[^A-Za-z0-9]/g, '').length >= MIN_FRAGMENT),
        });
      }
    };
    const visit = (node: ts.Node): void => {
      if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) && node.text.startsWith('kms: ')) add(node);
      else if (ts.isTemplateExpression(node) && node.head.text.startsWith('kms: ')) add(node);
      if (ts.isNewExpression(node) && ts.isIdentifier(node.expression)) {
        const name = node.expression.text;
        if (['ConfigError', 'SealedError', 'HsmError', 'StoreUnavailableError'].includes(name)) add(node.arguments?.[0]);
        if ((name === 'Error' || name === 'TypeError') && (rel.startsWith('src/hsm/') || rel === 'src/store/sqlite.ts')) {
          add(node.arguments?.[0]);
        }
        if (name === 'CliError' && rel === 'src/cli/common.ts') add(node.arguments?.[0]);
      }
      if (
        ts.isBinaryExpression(node) &&
        node.operatorToken.kind === ts.SyntaxKind.EqualsToken &&
        ts.isIdentifier(node.left) &&
        node.left.text === 'why' &&
        rel.startsWith('src/hsm/')
      ) {
        add(node.right);
      }
      if (ts.isCallExpression(node)) {
        const callee = node.expression;
        if (ts.isIdentifier(callee) && callee.text === 'fail' && rel.startsWith('src/config/')) add(node.arguments[1]);
        if (ts.isIdentifier(callee) && callee.text === 'usageError' && rel === 'src/cli/common.ts') add(node.arguments[0]);
        if (
          ts.isPropertyAccessExpression(callee) &&
          (callee.name.text === 'warn' || callee.name.text === 'error') &&
          LOGGER.test(callee.expression.getText(sf)) &&
          !rel.startsWith('src/cli/')
        ) {
          add(node.arguments[0]);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return { messages, computed };
}

const normalize = (s: string) => s.replace(/\s+/g, ' ');

test('docs/troubleshooting.md names every start-up and connection error of the code', () => {
  const doc = normalize(readFileSync(DOC, 'utf8'));
  const { messages } = productMessages();
  assert.ok(
    messages.length >= 40,
    `only ${messages.length} messages found: has the source layout changed? (${messages.map((m) => m.file).join(', ')})`,
  );
  const missing = messages.filter((m) => m.fragments.some((f) => !doc.includes(normalize(f))));
  assert.deepEqual(
    missing.map((m) => `${m.file}:${m.line}: ${m.text}  [missing: ${m.fragments.filter((f) => !doc.includes(normalize(f))).join(' | ')}]`),
    [],
    'add each message to docs/troubleshooting.md with its cause and fix',
  );
});

test('computed messages (not literals) are few and each is documented by hand', () => {
  const { computed } = productMessages();
  // A computed message cannot be checked: each one that exists is listed here on purpose, with
  // the doc section that covers it. A new one fails until it is added (or made a literal).
  const KNOWN: RegExp[] = [
    // CliError's own plumbing and the server's answers passed through (KmsError, HTTP): "The CLI".
    /^src\/cli\/common\.ts:\d+: (message|err\.message|msg)$/,
    /^src\/cli\/common\.ts:\d+: message\.startsWith\('access denied'\)/,
    // fail(path, msg) prefixes the key path: "Start-up: the configuration file".
    /^src\/config\/config\.ts:\d+: path \? `\$\{path\}: \$\{msg\}` : msg$/,
    // the HSMs' reasons joined: each is documented under "A sealed node".
    /^src\/hsm\/root-key\.ts:\d+: failures\.join\('; '\)$/,
    // root-key notices (resealed under a newer key version) logged as they come.
    /^src\/server\/(workers\/)?\w+\.ts:\d+: msg$/,
    // a store error of the primary, passed to the worker that asked: "Worker processes".
    /^src\/server\/workers\/link\.ts:\d+: e\.message$/,
  ];
  const unexpected = computed.filter((c) => !KNOWN.some((k) => k.test(c)));
  assert.deepEqual(unexpected, [], 'a computed error message: make it a literal, or document it and list it here');
});
