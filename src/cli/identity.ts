/**
 * Identities: the offline tools `minkms identity` and `minkms --soft-hsm`, and the enclave
 * commands `add-identity`, `rm-identity`, `ls-identity`, `get-identity`.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { closeSync, fchmodSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { certificateForApiKey } from '../identity/client-cert.js';
import { apiKeyFromSeed, generateApiKey, parseApiKey, type ApiKey } from '../identity/api-key.js';
import { kesApiKeyOf, kesIdentityOf, normalizeIdentity } from '../identity/kes.js';
import { identityOfCertificate } from '../identity/identity.js';
import { SoftHsm, generateSoftHsmKey } from '../hsm/soft.js';
import { deriveRootApiKey } from '../hsm/root-key.js';
import type { IdentityResponse } from '../protocol/messages.js';
import type { KmsClient } from '../client/client.js';
import { serviceAccountPrivilege, type Privilege } from '../kms/records.js';
import {
  CliError,
  PRIVILEGE_NAMES,
  addExamples,
  clientCommand,
  done,
  humanTime,
  listAll,
  print,
  printFields,
  printJson,
  requireIdentity,
  rfc3339,
  runs,
  style,
  table,
} from './common.js';

export function softHsmKey(): string {
  return `${generateSoftHsmKey()}\n`;
}

/** What `minkms identity` shows: an API key (if the input has one) and the identity, each in both spellings. */
export interface DescribedIdentity {
  apiKey?: string;
  /** The KES spelling of the API key (Ed25519 keys only). Secret. */
  kesApiKey?: string;
  identity: string;
  kesIdentity: string;
}

function described(identity: string, key?: ApiKey): DescribedIdentity {
  const kesApiKey = key ? kesApiKeyOf(key.privateKey) : undefined;
  return {
    ...(key ? { apiKey: key.text } : {}),
    ...(kesApiKey ? { kesApiKey } : {}),
    identity,
    kesIdentity: kesIdentityOf(identity),
  };
}

/**
 * API key + identity for: nothing (new key), an HSM key, an API key (`k1:`, `k2:`, KES's
 * `kes:v1:`), an identity in either spelling (`h1:…`, KES's 64 hex characters), or a
 * certificate file.
 */
export async function describeIdentity(input: string | undefined): Promise<DescribedIdentity> {
  if (input === undefined) {
    const key = generateApiKey('k1');
    return described(key.identity, key);
  }
  if (input.startsWith('hsm:')) {
    const hsm = new SoftHsm(input);
    const key = await deriveRootApiKey(hsm);
    await hsm.close();
    return described(key.identity, key);
  }
  if (/^(k[12]:|kes:)/.test(input)) {
    const key = parseApiKey(input);
    // The canonical k1: spelling of a KES key, so that both spellings are shown.
    return described(key.identity, key.kind === 'kes' ? apiKeyOfKes(key) : key);
  }
  const identity = normalizeIdentity(input);
  if (identity !== undefined) return described(identity);
  let pem: string;
  try {
    pem = readFileSync(input, 'utf8');
  } catch {
    throw new CliError(
      `'${input.slice(0, 64)}' is neither an API key, an HSM key, an identity, nor a readable certificate file`,
      'give a k1:/k2:/kes:v1: API key, an hsm:aes256:… key, an identity (h1:… or 64 hex characters) or a PEM certificate file',
      2,
    );
  }
  try {
    return described(identityOfCertificate(new X509Certificate(pem)));
  } catch (err) {
    throw new CliError(`'${input}' is not a PEM certificate: ${(err as Error).message}`, 'give a PEM-encoded X.509 certificate');
  }
}

/** The k1: key of a KES API key (the same Ed25519 seed). */
function apiKeyOfKes(key: ApiKey): ApiKey {
  const seed = Buffer.from(key.privateKey.export({ format: 'jwk' }).d ?? '', 'base64url');
  try {
    return apiKeyFromSeed(seed);
  } finally {
    seed.fill(0);
  }
}

/**
 * Writes `data` to `file` with `mode`, replacing it atomically: a temporary file in the same
 * directory gets the mode before any byte is written (a private key is never readable by others,
 * not even for a moment, and an existing file with a wider mode is not reused), then is renamed
 * over `file`.
 */
export function writeFileAtomic(file: string, data: string, mode: number): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  let open = true;
  try {
    fchmodSync(fd, mode); // the umask may have narrowed the mode; never widened it
    writeSync(fd, data);
    open = false;
    closeSync(fd);
    renameSync(tmp, file);
  } catch (err) {
    if (open) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

interface IdentityOptions {
  json?: boolean;
  cert?: string;
  key?: string;
}

/**
 * `--cert FILE --key FILE`: the client certificate and private key of an API key (or of the root
 * API key of an HSM key), exactly as the CLI derives them for mTLS, for clients that need files:
 * a Prometheus scrape job, curl, a load balancer's health checks. Returns the key to use: the
 * argument, else MINIO_KMS_API_KEY (so the key need not appear in the process list).
 */
function certificateInput(input: string | undefined, opts: IdentityOptions): string {
  if ((opts.cert === undefined) !== (opts.key === undefined)) {
    throw new CliError('--cert and --key go together', "give both files: 'minkms identity --cert client.crt --key client.key k1:…'", 2);
  }
  const key = input ?? process.env.MINIO_KMS_API_KEY?.trim();
  if (key === undefined || key === '' || !/^(k[12]:|hsm:|kes:v1:)/.test(key)) {
    throw new CliError(
      '--cert/--key need an API key',
      "give the k1:/k2: API key (argument or MINIO_KMS_API_KEY), or hsm:aes256:… for the root API key; 'minkms identity' creates a key",
      2,
    );
  }
  return key;
}

export function identityCommand(program: Command): void {
  const cmd = program
    .command('identity')
    .description(
      'print a new API key, or the identity of a key or certificate, in minkms and KES spelling; write the client certificate of a key (offline)',
    )
    .argument(
      '[KEY|FILE]',
      'hsm:aes256:… (root API key), k1:/k2:/kes:v1: API key, an identity (h1:… or KES hex), or a PEM certificate file',
    )
    .option('--cert <FILE>', "write the API key's client certificate (PEM) to FILE (with --key)")
    .option('--key <FILE>', "write the API key's private key (PKCS#8 PEM, mode 0600) to FILE (with --cert)")
    .option('--json', 'print JSON')
    .action(async (input: string | undefined, opts: IdentityOptions) => {
      const writing = opts.cert !== undefined || opts.key !== undefined;
      if (writing) input = certificateInput(input, opts);
      let res: DescribedIdentity;
      try {
        res = await describeIdentity(input);
      } catch (err) {
        if (err instanceof CliError) throw err;
        throw new CliError((err as Error).message, "see 'minkms identity --help'");
      }
      let notAfter: string | undefined;
      if (writing) {
        const pem = certificateForApiKey(parseApiKey(res.apiKey!));
        notAfter = rfc3339(new Date(new X509Certificate(pem.cert).validTo)) ?? undefined;
        for (const [file, data, mode] of [
          [opts.key!, pem.key, 0o600],
          [opts.cert!, pem.cert, 0o644],
        ] as const) {
          try {
            writeFileAtomic(file, data, mode);
          } catch (err) {
            const e = err as NodeJS.ErrnoException;
            throw new CliError(`cannot write ${file}: ${e.code ?? e.message}`, 'check that the directory exists and is writable');
          }
        }
      }
      if (opts.json) {
        // The API key is not repeated when writing files: the caller has it already.
        const out = writing
          ? { identity: res.identity, cert: opts.cert, key: opts.key, not_after: notAfter }
          : {
              ...(res.apiKey ? { api_key: res.apiKey } : {}),
              ...(res.kesApiKey ? { kes_api_key: res.kesApiKey } : {}),
              identity: res.identity,
              kes_identity: res.kesIdentity,
            };
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      if (writing) {
        process.stdout.write(
          `Identity     ${res.identity}\nCertificate  ${opts.cert} (valid until ${notAfter})\nPrivate key  ${opts.key} (mode 0600)\n`,
        );
        return;
      }
      // Both spellings: minkms (k1:, h1:) and KES (kes:v1:, hex) name the same key pair.
      if (res.apiKey) process.stdout.write(`API Key       ${res.apiKey}\n`);
      if (res.kesApiKey) process.stdout.write(`KES API Key   ${res.kesApiKey}\n`);
      process.stdout.write(`Identity      ${res.identity}\nKES Identity  ${res.kesIdentity}\n`);
    });
  addExamples(cmd, [
    'minkms identity                      # new API key and its identity',
    'minkms identity k1:…                 # identity of an API key',
    'minkms identity "$MINIO_KMS_HSM_KEY"  # root API key and identity of a soft-HSM key',
    'minkms identity client.crt           # identity of a certificate',
    'minkms identity kes:v1:…             # a KES API key: its k1: spelling and identity (h1: and hex)',
    'minkms identity 3ecfcdf38fcbe1…      # the h1: spelling of a KES identity',
    'minkms identity --cert prometheus.crt --key prometheus.key k1:…   # client certificate + key for a scraper or curl',
  ]);
}

// ------------------------------------------------------------------------------ enclave identities

/** The JSON form of an identity record. */
export function identityJson(r: IdentityResponse) {
  return {
    identity: r.identity,
    privilege: PRIVILEGE_NAMES[r.privilege] ?? String(r.privilege),
    policy: r.policy,
    created_at: rfc3339(r.createdAt),
    created_by: r.createdBy,
    is_service_account: r.isServiceAccount,
    service_accounts: [...r.serviceAccounts],
    tags: Object.fromEntries(Object.entries(r.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
  };
}

const TAG_RE = /^[a-zA-Z0-9._\-/]*$/;

/** Parses `--tag key=value`. */
export function parseTag(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const i = value.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError('a tag is KEY=VALUE.');
  const k = value.slice(0, i);
  const v = value.slice(i + 1);
  if (k.length > 64 || v.length > 256 || !TAG_RE.test(k) || !TAG_RE.test(v)) {
    throw new InvalidArgumentError('tag keys (≤ 64) and values (≤ 256) use only a-z A-Z 0-9 . _ - /.');
  }
  return { ...(previous ?? {}), [k]: v };
}

/** The privilege a service account of the caller acts with (its own effective one, at most Admin). */
async function serviceAccountPrivilegeName(client: KmsClient, enclave: string): Promise<string> {
  const [self] = await client.getIdentity(enclave, ['']);
  const own = self!.privilege as Privilege;
  return PRIVILEGE_NAMES[serviceAccountPrivilege(own)] ?? String(own);
}

function formatTags(tags: Record<string, string>): string {
  const list = Object.keys(tags)
    .sort()
    .map((k) => `${k}=${tags[k]}`);
  return list.length > 0 ? list.join(', ') : '-';
}

export function enclaveIdentityCommands(program: Command): void {
  runs(
    clientCommand(program, 'add-identity', {
      description: 'register identities; without IDENTITY, create and print a new API key',
      enclave: true,
      examples: [
        'minkms add-identity -e my-enclave --admin                 # new enclave admin: prints its API key',
        'minkms add-identity -e my-enclave --tag app=minio           # new User (assign a policy with set-policy)',
        'minkms add-identity -e my-enclave h1:… --service            # a service account of the caller',
      ],
    })
      .argument('[IDENTITY...]', 'identities (h1:…, or KES hex) to register; none = generate a new API key')
      .addOption(new Option('--admin', 'enclave admin: may do everything inside the enclave'))
      .addOption(new Option('--service', "service account: inherits the caller's permissions"))
      .addOption(new Option('--tag <KEY=VALUE>', 'label the identity (repeatable)').argParser(parseTag)),
    async (ctx, given: string[]) => {
      const o = ctx.opts as { admin?: boolean; service?: boolean; tag?: Record<string, string> };
      const identities = given.map(requireIdentity);
      const enclave = ctx.enclave;
      const privilege = o.admin ? 'Admin' : 'User';
      const tags = o.tag ?? {};
      const created: { identity: string; api_key?: string }[] = [];
      if (identities.length === 0) {
        const key = generateApiKey();
        created.push({ identity: key.identity, api_key: key.text });
      } else {
        for (const identity of identities) created.push({ identity });
      }
      ctx.need(
        'IDENTITY:CREATE',
        created.map((c) => c.identity),
        enclave,
      );
      const client = ctx.client;
      // A service account acts with the caller's rights, whatever privilege the request names:
      // report those (the caller may always look at itself), never the requested "User".
      const shown = o.service ? await serviceAccountPrivilegeName(client, enclave) : privilege;
      const label = o.service ? `${shown}, service account` : shown;
      for (const c of created) {
        await client.createIdentity(enclave, { identity: c.identity, privilege, isServiceAccount: o.service === true, tags });
        if (!ctx.json && c.api_key === undefined) done(`Added identity ${c.identity} to enclave '${enclave}' (${label})`);
      }
      if (ctx.json) {
        printJson(created.map((c) => ({ ...c, enclave, privilege: shown, is_service_account: o.service === true, tags })));
        return;
      }
      const generated = created.find((c) => c.api_key !== undefined);
      if (generated) {
        printFields([
          ['API Key', generated.api_key!],
          ['Identity', generated.identity],
          ['Enclave', enclave],
          ['Privilege', o.service ? `${shown} (service account)` : shown],
        ]);
        if (process.stderr.isTTY) process.stderr.write(style.yellow('Store the API key now: it is not shown again.') + '\n');
      }
    },
  );

  runs(
    clientCommand(program, 'rm-identity', {
      description: 'delete identities and their service accounts',
      enclave: true,
      examples: ['minkms rm-identity -e my-enclave h1:…'],
    }).argument('<IDENTITY...>', 'identities (h1:…, or KES hex) to delete'),
    async (ctx, given: string[]) => {
      const identities = given.map(requireIdentity);
      const enclave = ctx.enclave;
      ctx.need('IDENTITY:DELETE', identities, enclave);
      const client = ctx.client;
      for (const identity of identities) {
        await client.deleteIdentity(enclave, identity);
        if (!ctx.json) done(`Deleted identity ${identity} from enclave '${enclave}'`);
      }
      if (ctx.json) printJson(identities.map((identity) => ({ identity, enclave })));
    },
  );

  runs(
    clientCommand(program, 'ls-identity', {
      description: 'list the identities of an enclave',
      enclave: true,
      examples: ['minkms ls-identity -e my-enclave', 'minkms ls-identity -e my-enclave --json'],
    })
      .alias('ls-identities')
      .argument('[PREFIX]', 'list only identities starting with PREFIX (h1:…)'),
    async (ctx, prefix: string | undefined) => {
      const enclave = ctx.enclave;
      ctx.need('IDENTITY:LIST', undefined, enclave);
      const client = ctx.client;
      const all = await listAll(async (continueAt) => {
        const r = await client.listIdentities(enclave, { prefix: prefix ?? '', continueAt });
        return { items: r.identities, continueAt: r.continueAt };
      });
      if (ctx.json) return printJson(all.map(identityJson));
      if (all.length === 0) return;
      print(
        table(
          ['Identity', 'Privilege', 'Policy', 'Created', 'Tags'],
          all.map((r) => [
            r.identity,
            (PRIVILEGE_NAMES[r.privilege] ?? String(r.privilege)) + (r.isServiceAccount ? ' (service)' : ''),
            r.policy || '-',
            humanTime(r.createdAt),
            formatTags(r.tags),
          ]),
        ),
      );
    },
  );

  runs(
    clientCommand(program, 'get-identity', {
      description: 'show identities (default: your own)',
      enclave: true,
      examples: ['minkms get-identity -e my-enclave', 'minkms get-identity -e my-enclave h1:… --json'],
    }).argument('[IDENTITY...]', 'identities (h1:…, or KES hex); none = the identity of your API key'),
    async (ctx, given: string[]) => {
      const identities = given.map(requireIdentity);
      const enclave = ctx.enclave;
      const ask = identities.length > 0 ? identities : [''];
      ctx.need('IDENTITY:STATUS', identities, enclave);
      const client = ctx.client;
      const all = (await client.getIdentity(enclave, ask)).map((r, i) =>
        identityJson({ ...r, identity: r.identity || (ask[i] === '' ? (client.identity ?? '') : ask[i]!) }),
      );
      if (ctx.json) return printJson(all);
      all.forEach((r, i) => {
        if (i > 0) print();
        printFields([
          ['Identity', r.identity],
          ['Privilege', r.privilege],
          ['Policy', r.policy || '-'],
          ['Created', r.created_at ?? '-'],
          ['Created by', r.created_by || '-'],
          ['Service account', r.is_service_account ? 'yes' : 'no'],
          ['Service accounts', r.service_accounts.length > 0 ? r.service_accounts.join(', ') : '-'],
          ['Tags', formatTags(r.tags)],
        ]);
      });
    },
  );
}
