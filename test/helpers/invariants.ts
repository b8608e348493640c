/**
 * What must hold after every fault (test/faults): every acknowledged write is present on
 * every node, and every acknowledged data key still decrypts, on every node. A `Ledger`
 * records what clients were told succeeded; `check` polls (nodes converge through their
 * change feed) until it holds or a deadline passes, and then says exactly what is missing.
 */
import assert from 'node:assert/strict';
import { KmsClient } from '../../src/client/client.js';
import { KmsError } from '../../src/errors.js';

export interface IssuedDek {
  readonly key: string;
  readonly version: number;
  readonly plaintext: Buffer;
  readonly ciphertext: Buffer;
}

export class Ledger {
  readonly enclave: string;
  /** Keys whose creation was acknowledged (and not deleted since). */
  readonly keys = new Set<string>();
  /** Data keys handed out with a 200. */
  readonly deks: IssuedDek[] = [];
  /** Writes answered "outcome unknown": may or may not be there. */
  readonly uncertain = new Set<string>();
  /** Creates answered with a definite failure: must never appear. */
  readonly refused = new Set<string>();

  constructor(enclave: string) {
    this.enclave = enclave;
  }

  /** Creates `name` through `c` and records the outcome; returns the error code, if any. */
  async create(c: KmsClient, name: string): Promise<string | undefined> {
    try {
      await c.createKey(this.enclave, { name });
      this.keys.add(name);
      return undefined;
    } catch (err) {
      const code = err instanceof KmsError ? err.code : `${(err as Error).name}: ${(err as Error).message}`;
      if (code === 'ERR_STORE_OUTCOME_UNKNOWN' || !(err instanceof KmsError)) this.uncertain.add(name);
      else if (code === 'ERR_STORE_UNAVAILABLE' || code === 'ERR_STORE_TIMEOUT' || code === 'ERR_STORE_FULL') this.refused.add(name);
      return code;
    }
  }

  /** Generates a data key under `name` through `c` and records it. */
  async generate(c: KmsClient, name: string): Promise<IssuedDek> {
    const [d] = await c.generateKey(this.enclave, [{ name }]);
    const dek = { key: name, version: d!.version, plaintext: d!.plaintext, ciphertext: d!.ciphertext };
    this.deks.push(dek);
    return dek;
  }

  /**
   * Every acknowledged key is listed by every client's node, no refused create is, and every
   * acknowledged data key decrypts to its plaintext there; polled until `timeoutMs`.
   */
  async check(clients: readonly KmsClient[], what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const [i, c] of clients.entries()) {
      for (;;) {
        let problem: string | undefined;
        try {
          problem = await this.#problem(c);
        } catch (err) {
          problem = `node ${i} failed to answer: ${(err as Error).message}`;
        }
        if (problem === undefined) break;
        if (Date.now() > deadline) assert.fail(`${what}: node ${i}: ${problem}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async #problem(c: KmsClient): Promise<string | undefined> {
    const have = new Set<string>();
    for await (const k of KmsClient.pages((at) =>
      c.listKeys(this.enclave, { continueAt: at }).then((p) => ({ items: p.keys, continueAt: p.continueAt })),
    ))
      have.add(k.name);
    const missing = [...this.keys].filter((k) => !have.has(k));
    if (missing.length > 0) return `acknowledged keys missing: ${missing.join(', ')}`;
    const ghosts = [...this.refused].filter((k) => have.has(k));
    if (ghosts.length > 0) return `keys whose creation was refused (503/507, not applied) are present: ${ghosts.join(', ')}`;
    for (let i = 0; i < this.deks.length; i += 100) {
      const batch = this.deks.slice(i, i + 100).filter((d) => this.keys.has(d.key));
      if (batch.length === 0) continue;
      const out = await c.decrypt(
        this.enclave,
        batch.map((d) => ({ name: d.key, version: d.version, ciphertext: d.ciphertext })),
      );
      for (const [j, o] of out.entries()) {
        if (!o.plaintext.equals(batch[j]!.plaintext)) return `data key ${i + j} of ${batch[j]!.key} decrypts to something else`;
      }
    }
    return undefined;
  }
}
