/**
 * Key commands: `add-key`, `rm-key`, `ls-key`, `stat-key`, `keygen`, `encrypt`, `decrypt`.
 * Ciphertexts are shown as `v<VERSION>:<BASE64>`; `decrypt` also takes plain base64 (version 0 =
 * the server finds the version).
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { KeyStatusResponse } from '../protocol/messages.js';
import {
  clientCommand,
  done,
  humanTime,
  listAll,
  parseVersionArg,
  print,
  printFields,
  printJson,
  rfc3339,
  runs,
  table,
  usageError,
} from './common.js';

/** The JSON form of a key (version). */
export function keyJson(k: KeyStatusResponse) {
  return { name: k.name, version: k.version, type: k.type, created_at: rfc3339(k.createdAt), created_by: k.createdBy };
}

/** `v<VERSION>:<BASE64>` */
export function formatCiphertext(version: number, ciphertext: Uint8Array): string {
  return `v${version}:${Buffer.from(ciphertext).toString('base64')}`;
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/** Strict standard base64 (padding optional), or undefined. */
export function decodeBase64(s: string): Buffer | undefined {
  const t = s.trim();
  if (t === '' || !BASE64_RE.test(t)) return undefined;
  return Buffer.from(t, 'base64');
}

/** Parses `v<VERSION>:<BASE64>` or plain base64 (version 0). */
export function parseCiphertext(data: string): { version: number; ciphertext: Buffer } {
  const m = /^v(\d+):(.*)$/s.exec(data.trim());
  const version = m ? Number(m[1]) : 0;
  const ciphertext = decodeBase64(m ? m[2]! : data);
  if (ciphertext === undefined || version > 0xffffffff) {
    throw new InvalidArgumentError('expected v<VERSION>:<BASE64> or base64.');
  }
  return { version, ciphertext };
}

/** Text if `b` is valid UTF-8, else undefined. */
export function utf8OrUndefined(b: Uint8Array): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return undefined;
  }
}

const KEY_TYPES = ['AES256', 'ChaCha20'] as const;

function parseKeyType(value: string): string {
  const t = KEY_TYPES.find((k) => k.toLowerCase() === value.toLowerCase());
  if (!t) throw new InvalidArgumentError(`allowed types are ${KEY_TYPES.join(', ')}.`);
  return t;
}

const versionOption = (what: string) => new Option('-v, --version <VERSION>', what).argParser(parseVersionArg);

export function keyCommands(program: Command): void {
  runs(
    clientCommand(program, 'add-key', {
      description: 'create a key, add a version (--version) or import one (--import)',
      enclave: true,
      examples: [
        'minkms add-key -e my-enclave my-key',
        'minkms add-key -e my-enclave --type ChaCha20 my-key',
        'minkms add-key -e my-enclave --version my-key          # rotate: add a new version',
        'minkms add-key -e my-enclave --import "$(head -c32 /dev/urandom | base64)" imported-key',
      ],
    })
      .argument('<NAME>', 'key name')
      .addOption(new Option('--type <TYPE>', 'key type (default: chosen by the server)').choices(KEY_TYPES).argParser(parseKeyType))
      .addOption(new Option('--version', 'add a new version to an existing key (key rotation)').conflicts('import'))
      .addOption(new Option('--import <BASE64KEY>', 'import this base64-encoded 256-bit key instead of generating one')),
    async (ctx, name: string) => {
      const o = ctx.opts as { type?: string; version?: boolean; import?: string };
      const enclave = ctx.enclave;
      if (o.import !== undefined) {
        const key = decodeBase64(o.import);
        if (key === undefined) throw usageError('--import: the key is not valid base64', 'give the 32-byte key base64-encoded');
        ctx.need('KEY:IMPORT', [name], enclave);
        await ctx.client.importKey(enclave, { name, type: o.type ?? '', key });
        key.fill(0);
        if (ctx.json) printJson({ name, enclave, type: o.type ?? null, new_version: false, imported: true });
        else done(`Imported key '${name}' into enclave '${enclave}'`);
        return;
      }
      ctx.need('KEY:CREATE', [name], enclave);
      await ctx.client.createKey(enclave, { name, type: o.type ?? '', addVersion: o.version === true });
      if (ctx.json) printJson({ name, enclave, type: o.type ?? null, new_version: o.version === true, imported: false });
      else
        done(o.version ? `Added a new version to key '${name}' in enclave '${enclave}'` : `Created key '${name}' in enclave '${enclave}'`);
    },
  );

  runs(
    clientCommand(program, 'rm-key', {
      description: 'delete the latest version of a key, one version (-v), or all (--all)',
      enclave: true,
      examples: [
        'minkms rm-key -e my-enclave my-key',
        'minkms rm-key -e my-enclave -v 2 my-key',
        'minkms rm-key -e my-enclave --all my-key',
      ],
    })
      .argument('<NAME>', 'key name')
      .addOption(versionOption('delete this version'))
      .addOption(new Option('--all', 'delete every version of the key').conflicts('version'))
      .addHelpText('after', '\nData encrypted with a deleted key version can no longer be decrypted (restore it from a backup).'),
    async (ctx, name: string) => {
      const o = ctx.opts as { version?: number; all?: boolean };
      const enclave = ctx.enclave;
      ctx.need('KEY:DELETE', [name], enclave);
      await ctx.client.deleteKey(enclave, { name, version: o.version ?? 0, allVersions: o.all === true });
      if (ctx.json) return printJson({ name, enclave, version: o.version ?? null, all_versions: o.all === true });
      if (o.all) done(`Deleted key '${name}' (all versions) in enclave '${enclave}'`);
      else if (o.version) done(`Deleted version ${o.version} of key '${name}' in enclave '${enclave}'`);
      else done(`Deleted the latest version of key '${name}' in enclave '${enclave}'`);
    },
  );

  runs(
    clientCommand(program, 'ls-key', {
      description: 'list the keys of an enclave',
      enclave: true,
      examples: ['minkms ls-key -e my-enclave', 'minkms ls-key -e my-enclave minio- --json'],
    })
      .alias('ls-keys')
      .argument('[PREFIX]', 'list only keys whose name starts with PREFIX'),
    async (ctx, prefix: string | undefined) => {
      const enclave = ctx.enclave;
      ctx.need('KEY:LIST', undefined, enclave);
      const client = ctx.client;
      const all = await listAll(async (continueAt) => {
        const r = await client.listKeys(enclave, { prefix: prefix ?? '', continueAt });
        return { items: r.keys, continueAt: r.continueAt };
      });
      if (ctx.json) return printJson(all.map(keyJson));
      if (all.length === 0) return;
      print(
        table(
          ['Name', 'Version', 'Type', 'Created', 'Created by'],
          all.map((k) => [k.name, k.version ? `v${k.version}` : '-', k.type || '-', humanTime(k.createdAt), k.createdBy || '-']),
        ),
      );
    },
  );

  runs(
    clientCommand(program, 'stat-key', {
      description: 'show version, type, creation time and creator of keys',
      enclave: true,
      examples: [
        'minkms stat-key -e my-enclave my-key',
        'minkms stat-key -e my-enclave -v 1 my-key --json',
        'minkms stat-key -e my-enclave key-1 key-2',
      ],
    })
      .argument('<NAME...>', 'key names')
      .addOption(versionOption('show this version instead of the latest')),
    async (ctx, names: string[]) => {
      const o = ctx.opts as { version?: number };
      const enclave = ctx.enclave;
      ctx.need('KEY:STATUS', names, enclave);
      const all = await ctx.client.keyStatus(
        enclave,
        names.map((name) => ({ name, version: o.version ?? 0 })),
      );
      if (ctx.json) return printJson(all.map(keyJson));
      all.forEach((k, i) => {
        if (i > 0) print();
        printFields([
          ['Name', k.name],
          ['Version', `v${k.version}`],
          ['Type', k.type],
          ['Created', humanTime(k.createdAt)],
          ['Created by', k.createdBy || '-'],
        ]);
      });
    },
  );

  runs(
    clientCommand(program, 'keygen', {
      description: 'generate a data key: plaintext (base64) and ciphertext (v<VERSION>:<BASE64>)',
      enclave: true,
      examples: ['minkms keygen -e my-enclave my-key', 'minkms keygen -e my-enclave -v 1 my-key --json'],
    })
      .argument('<NAME>', 'key to encrypt the data key with')
      .addOption(versionOption('use this key version instead of the latest')),
    async (ctx, name: string) => {
      const o = ctx.opts as { version?: number };
      const enclave = ctx.enclave;
      ctx.need('KEY:GENERATE', [name], enclave);
      const [dek] = await ctx.client.generateKey(enclave, [{ name, version: o.version ?? 0 }]);
      const plaintext = dek!.plaintext.toString('base64');
      const ciphertext = formatCiphertext(dek!.version, dek!.ciphertext);
      dek!.plaintext.fill(0);
      if (ctx.json) return printJson({ name, version: dek!.version, plaintext, ciphertext });
      printFields([
        ['Plaintext', plaintext],
        ['Ciphertext', ciphertext],
      ]);
    },
  );

  runs(
    clientCommand(program, 'encrypt', {
      description: 'encrypt a message; prints v<VERSION>:<BASE64>',
      enclave: true,
      examples: ["minkms encrypt -e my-enclave my-key 'hello world'", 'minkms encrypt -e my-enclave -v 2 my-key secret --json'],
    })
      .argument('<NAME>', 'key name')
      .argument('<PLAINTEXT>', 'message to encrypt (as UTF-8 text)')
      .addOption(versionOption('use this key version instead of the latest')),
    async (ctx, name: string, plaintext: string) => {
      const o = ctx.opts as { version?: number };
      const enclave = ctx.enclave;
      ctx.need('KEY:ENCRYPT', [name], enclave);
      const [res] = await ctx.client.encrypt(enclave, [{ name, version: o.version ?? 0, plaintext: Buffer.from(plaintext, 'utf8') }]);
      const ciphertext = formatCiphertext(res!.version, res!.ciphertext);
      if (ctx.json) return printJson({ name, version: res!.version, ciphertext });
      print(ciphertext);
    },
  );

  runs(
    clientCommand(program, 'decrypt', {
      description: 'decrypt v<VERSION>:<BASE64>; prints text if valid UTF-8, else base64',
      enclave: true,
      examples: [
        'minkms decrypt -e my-enclave my-key v1:AAAA…',
        'minkms decrypt -e my-enclave my-key "$(minkms encrypt -e my-enclave my-key hi)"',
      ],
    })
      .argument('<NAME>', 'key name')
      .argument('<DATA>', 'ciphertext: v<VERSION>:<BASE64>, or plain base64 (version found by the server)', parseCiphertext),
    async (ctx, name: string, data: { version: number; ciphertext: Buffer }) => {
      const enclave = ctx.enclave;
      ctx.need('KEY:DECRYPT', [name], enclave);
      const [res] = await ctx.client.decrypt(enclave, [{ name, version: data.version, ciphertext: data.ciphertext }]);
      const text = utf8OrUndefined(res!.plaintext);
      if (ctx.json) return printJson({ name, plaintext: res!.plaintext.toString('base64'), text: text ?? null });
      print(text ?? res!.plaintext.toString('base64'));
    },
  );
}
