/**
 * Policy commands: `add-policy`, `get-policy`, `stat-policy`, `set-policy`, `rm-policy`,
 * `ls-policy`.
 *
 * A policy file is JSON: `{"allow": {CMD: PATTERNS}, "deny": {CMD: PATTERNS}}` where PATTERNS is
 * a string, an array of strings or an object `{pattern: {}}`. `get-policy --json` prints the
 * array form, so its output (one element) can be fed back to `add-policy`.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { isCommandName } from '../protocol/commands.js';
import { fromKesPolicy, toKesPolicy } from '../kes/policy.js';
import type { PolicyResponse, PolicyStatusResponse, RuleSet } from '../protocol/messages.js';
import {
  CliError,
  clientCommand,
  done,
  humanTime,
  listAll,
  print,
  printFields,
  printJson,
  rfc3339,
  requireIdentity,
  runs,
  style,
  table,
} from './common.js';

/** Patterns: empty ones dropped, duplicates removed, sorted by length then lexically. */
export function normalizePatterns(patterns: Iterable<string>): string[] {
  return [...new Set([...patterns].filter((p) => p !== ''))].sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
}

/** `{CMD: RuleSet}` → `{CMD: [patterns]}`, commands sorted. */
export function rulesJson(rules: Record<string, RuleSet>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const cmd of Object.keys(rules).sort()) out[cmd] = normalizePatterns(Object.keys(rules[cmd]?.rules ?? {}));
  return out;
}

export function policyJson(p: PolicyResponse) {
  return { name: p.name, allow: rulesJson(p.allow), deny: rulesJson(p.deny), created_at: rfc3339(p.createdAt), created_by: p.createdBy };
}

export function policyStatusJson(p: PolicyStatusResponse) {
  return { name: p.name, created_at: rfc3339(p.createdAt), created_by: p.createdBy };
}

/** `{CMD: [patterns]}` → `{CMD: RuleSet}`. */
function ruleSets(rules: Record<string, string[]>): Record<string, RuleSet> {
  return Object.fromEntries(
    Object.entries(rules).map(([cmd, patterns]) => [cmd, { rules: Object.fromEntries(patterns.map((p) => [p, {}])) }]),
  );
}

/**
 * A KES policy — `{"allow": [PATH…], "deny": [PATH…]}`, KES API path patterns such as
 * `/v1/key/generate/minio-*` — as command rules (kes/policy.ts); what does not map is reported
 * to `notes`.
 */
function fromKesDocument(doc: Record<string, unknown>, bad: (what: string) => CliError, notes: string[]) {
  const list = (field: 'allow' | 'deny'): string[] => {
    const v = doc[field];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((p) => typeof p === 'string')) throw bad(`"${field}" of a KES policy must be a list of API paths`);
    return v as string[];
  };
  for (const field of Object.keys(doc)) {
    if (!['allow', 'deny', 'name', 'created_at', 'created_by', 'identities'].includes(field)) throw bad(`unknown field '${field}'`);
  }
  const mapped = fromKesPolicy(list('allow'), list('deny'));
  notes.push(...mapped.notes);
  if (Array.isArray(doc.identities) && doc.identities.length > 0) {
    notes.push("identities: add-policy assigns none; run 'minkms set-policy' for each (KES hex identities are accepted)");
  }
  return { allow: ruleSets(mapped.allow), deny: ruleSets(mapped.deny) };
}

/**
 * Parses the text of a policy file into the request's allow/deny maps; throws CliError. A KES
 * policy (lists of API paths) is mapped onto commands; what it cannot carry over is added to
 * `notes`.
 */
export function parsePolicyDocument(
  text: string,
  file: string,
  notes: string[] = [],
): { allow: Record<string, RuleSet>; deny: Record<string, RuleSet> } {
  const bad = (what: string) =>
    new CliError(
      `invalid policy file '${file}': ${what}`,
      'a policy looks like {"allow": {"KEY:STATUS": "*"}, "deny": {}}, or as in KES {"allow": ["/v1/key/describe/*"]}',
    );
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON: ${(err as Error).message}`);
  }
  if (Array.isArray(doc) && doc.length === 1) doc = doc[0]; // `get-policy NAME --json` output
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw bad('expected a JSON object');
  const d = doc as Record<string, unknown>;
  if (Array.isArray(d.allow) || Array.isArray(d.deny)) return fromKesDocument(d, bad, notes);
  const out = { allow: {} as Record<string, RuleSet>, deny: {} as Record<string, RuleSet> };
  for (const [field, value] of Object.entries(doc)) {
    if (field === 'name' || field === 'created_at' || field === 'created_by') continue;
    if (field !== 'allow' && field !== 'deny') throw bad(`unknown field '${field}' (only "allow" and "deny")`);
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) throw bad(`"${field}" must be an object mapping commands to patterns`);
    for (const [cmd, patterns] of Object.entries(value as Record<string, unknown>)) {
      if (!isCommandName(cmd)) throw bad(`unknown command '${cmd}' in "${field}" (commands look like KEY:GENERATE)`);
      let list: string[];
      if (typeof patterns === 'string') list = [patterns];
      else if (Array.isArray(patterns) && patterns.every((p) => typeof p === 'string')) list = patterns as string[];
      else if (patterns !== null && typeof patterns === 'object' && !Array.isArray(patterns)) list = Object.keys(patterns);
      else throw bad(`patterns of '${cmd}' in "${field}" must be a string, an array of strings or an object`);
      const name = cmd.toUpperCase();
      const rules: Record<string, Record<string, never>> = {};
      for (const p of normalizePatterns([...Object.keys(out[field][name]?.rules ?? {}), ...list])) rules[p] = {};
      if (Object.keys(rules).length > 0) out[field][name] = { rules };
    }
  }
  return out;
}

function printRules(title: string, rules: Record<string, string[]>): void {
  print(style.dim(title));
  const rows = Object.entries(rules).map(([cmd, patterns]) => ['  ' + cmd, patterns.join(', ')]);
  if (rows.length === 0) print('  -');
  else print(table(undefined, rows));
}

export function policyCommands(program: Command): void {
  runs(
    clientCommand(program, 'add-policy', {
      description: "create or replace a policy from a JSON file ('-' = stdin)",
      enclave: true,
      examples: [
        'minkms add-policy -e my-enclave readonly readonly.json',
        `echo '{"allow": {"KEY:GENERATE": "minio-*", "KEY:DECRYPT": ["minio-*"]}, "deny": {}}' | minkms add-policy -e my-enclave minio -`,
        `echo '{"allow": ["/v1/key/generate/minio-*", "/v1/key/decrypt/minio-*"]}' | minkms add-policy -e my-enclave minio -   # a KES policy`,
      ],
    })
      .argument('<NAME>', 'policy name')
      .argument(
        '<FILE>',
        'JSON policy file: {"allow": {CMD: PATTERN | [PATTERN...] | {PATTERN: {}}}, "deny": {…}}, or a KES policy {"allow": [PATH...], "deny": [PATH...]}',
      ),
    async (ctx, name: string, file: string) => {
      const enclave = ctx.enclave;
      let text: string;
      try {
        text = readFileSync(file === '-' ? 0 : file, 'utf8');
      } catch (err) {
        throw new CliError(
          `cannot read policy file '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          'give the path of a JSON policy file',
        );
      }
      const notes: string[] = [];
      const rules = parsePolicyDocument(text, file, notes);
      // A KES policy: say what did not map, before anything is created.
      for (const n of notes) process.stderr.write(`${style.yellow('note:')} ${n}\n`);
      ctx.need('POLICY:CREATE', [name], enclave);
      await ctx.client.createPolicy(enclave, { name, ...rules });
      if (ctx.json) printJson({ name, enclave });
      else done(`Created policy '${name}' in enclave '${enclave}'`);
    },
  );

  runs(
    clientCommand(program, 'get-policy', {
      description: 'print policies: allow and deny rules, creation time, creator',
      enclave: true,
      examples: [
        'minkms get-policy -e my-enclave readonly',
        'minkms get-policy -e my-enclave readonly --json',
        'minkms get-policy -e my-enclave readonly --kes   # as KES API paths, as the KES API shows it',
      ],
    })
      .argument('<NAME...>', 'policy names')
      .option('--kes', 'show the rules as KES API path patterns (what GET /v1/policy/read answers)'),
    async (ctx, names: string[]) => {
      const enclave = ctx.enclave;
      ctx.need('POLICY:GET', names, enclave);
      const all = (await ctx.client.getPolicy(enclave, names)).map(policyJson);
      if (ctx.opts.kes === true) {
        const kes = all.map((p) => ({ name: p.name, ...toKesPolicy(p.allow, p.deny), created_at: p.created_at, created_by: p.created_by }));
        if (ctx.json) return printJson(kes);
        kes.forEach((p, i) => {
          if (i > 0) print();
          printFields([
            ['Name', p.name],
            ['Created', p.created_at ?? '-'],
            ['Created by', p.created_by || '-'],
          ]);
          print(style.dim('Allow'));
          print(p.allow.length > 0 ? p.allow.map((x) => '  ' + x).join('\n') : '  -');
          print(style.dim('Deny'));
          print(p.deny.length > 0 ? p.deny.map((x) => '  ' + x).join('\n') : '  -');
        });
        return;
      }
      if (ctx.json) return printJson(all);
      all.forEach((p, i) => {
        if (i > 0) print();
        printFields([
          ['Name', p.name],
          ['Created', p.created_at ?? '-'],
          ['Created by', p.created_by || '-'],
        ]);
        printRules('Allow', p.allow);
        printRules('Deny', p.deny);
      });
    },
  );

  runs(
    clientCommand(program, 'stat-policy', {
      description: 'show creation time and creator of policies',
      enclave: true,
      examples: ['minkms stat-policy -e my-enclave readonly', 'minkms stat-policy -e my-enclave p1 p2 --json'],
    }).argument('<NAME...>', 'policy names'),
    async (ctx, names: string[]) => {
      const enclave = ctx.enclave;
      ctx.need('POLICY:STATUS', names, enclave);
      const all = await ctx.client.policyStatus(enclave, names);
      if (ctx.json) return printJson(all.map(policyStatusJson));
      all.forEach((p, i) => {
        if (i > 0) print();
        printFields([
          ['Name', p.name],
          ['Created', humanTime(p.createdAt)],
          ['Created by', p.createdBy || '-'],
        ]);
      });
    },
  );

  runs(
    clientCommand(program, 'set-policy', {
      description: 'assign a policy to a User identity (replaces its policy)',
      enclave: true,
      examples: ['minkms set-policy -e my-enclave readonly h1:…'],
    })
      .argument('<POLICY>', 'policy name')
      .argument('<IDENTITY>', 'identity (h1:…, or KES hex) of a User in the same enclave'),
    async (ctx, policy: string, given: string) => {
      const identity = requireIdentity(given);
      const enclave = ctx.enclave;
      ctx.need('POLICY:ASSIGN', [policy], enclave);
      await ctx.client.assignPolicy(enclave, identity, policy);
      if (ctx.json) printJson({ policy, identity, enclave });
      else done(`Assigned policy '${policy}' to ${identity}`);
    },
  );

  runs(
    clientCommand(program, 'rm-policy', {
      description: 'delete a policy',
      enclave: true,
      examples: ['minkms rm-policy -e my-enclave readonly'],
    }).argument('<NAME>', 'policy name'),
    async (ctx, name: string) => {
      const enclave = ctx.enclave;
      ctx.need('POLICY:DELETE', [name], enclave);
      await ctx.client.deletePolicy(enclave, name);
      if (ctx.json) printJson({ name, enclave });
      else done(`Deleted policy '${name}' in enclave '${enclave}'`);
    },
  );

  runs(
    clientCommand(program, 'ls-policy', {
      description: 'list the policies of an enclave',
      enclave: true,
      examples: ['minkms ls-policy -e my-enclave', 'minkms ls-policy -e my-enclave read --json'],
    })
      .alias('ls-policies')
      .argument('[PREFIX]', 'list only policies whose name starts with PREFIX'),
    async (ctx, prefix: string | undefined) => {
      const enclave = ctx.enclave;
      ctx.need('POLICY:LIST', undefined, enclave);
      const client = ctx.client;
      const all = await listAll(async (continueAt) => {
        const r = await client.listPolicies(enclave, { prefix: prefix ?? '', continueAt });
        return { items: r.policies, continueAt: r.continueAt };
      });
      if (ctx.json) return printJson(all.map(policyStatusJson));
      if (all.length === 0) return;
      print(
        table(
          ['Name', 'Created', 'Created by'],
          all.map((p) => [p.name, humanTime(p.createdAt), p.createdBy || '-']),
        ),
      );
    },
  );
}
