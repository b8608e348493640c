/** `minkms identity` and `minkms --soft-hsm`: offline key and identity tools. */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { generateApiKey, parseApiKey } from '../identity/api-key.js';
import { identityOfCertificate } from '../identity/identity.js';
import { SoftHsm, generateSoftHsmKey } from '../hsm/soft.js';
import { deriveRootApiKey } from '../hsm/root-key.js';

export function softHsmKey(): string {
  return `${generateSoftHsmKey()}\n`;
}

/** API key + identity for: nothing (new key), an HSM key, an API key, or a certificate file. */
export async function describeIdentity(input: string | undefined): Promise<{ apiKey?: string; identity: string }> {
  if (input === undefined) {
    const key = generateApiKey('k1');
    return { apiKey: key.text, identity: key.identity };
  }
  if (input.startsWith('hsm:')) {
    const hsm = new SoftHsm(input);
    const key = await deriveRootApiKey(hsm);
    await hsm.close();
    return { apiKey: key.text, identity: key.identity };
  }
  if (/^k[12]:/.test(input)) {
    const key = parseApiKey(input);
    return { apiKey: key.text, identity: key.identity };
  }
  let pem: string;
  try {
    pem = readFileSync(input, 'utf8');
  } catch {
    throw new Error(`'${input}' is neither an API key, an HSM key, nor a readable certificate file`);
  }
  return { identity: identityOfCertificate(new X509Certificate(pem)) };
}

export function identityCommand(program: Command): void {
  program
    .command('identity')
    .description('print a new API key and its identity, or the identity of an HSM key, API key or certificate')
    .argument('[KEY|FILE]', 'hsm:aes256:… (root API key), k1:/k2: API key, or a PEM certificate file')
    .option('--json', 'print JSON')
    .action(async (input: string | undefined, opts: { json?: boolean }) => {
      const res = await describeIdentity(input);
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ...(res.apiKey ? { api_key: res.apiKey } : {}), identity: res.identity }) + '\n');
        return;
      }
      if (res.apiKey) process.stdout.write(`API Key   ${res.apiKey}\n`);
      process.stdout.write(`Identity  ${res.identity}\n`);
    });
}
