/**
 * One KMS node's life after its parts are built (server/compose.ts builds them): unseal the root
 * key or stay sealed and retry, follow the other nodes of a cluster, keep the sealed root key
 * entries in line with the configured HSMs, and run the operations that change the node's
 * state (root key rotation, restore, HSM entries). The state is one immutable value
 * (server/state.ts), replaced in one assignment.
 *
 * Nothing here ever ends the process: every background task (unsealing, following the cluster,
 * sealing for new HSMs, removing entries of HSMs no node has configured, the configuration
 * watch) catches its own errors, logs them, and either retries or leaves the node sealed with
 * the reason.
 */
import { availableParallelism, cpus, hostname } from 'node:os';
import { KmsError, isKmsError } from '../errors.js';
import type { Config } from '../config/config.js';
import { loadConfig } from '../config/config.js';
import type { Hsm } from '../hsm/hsm.js';
import { configuredHsms, type ConfiguredHsm, type HsmSources } from '../hsm/configured.js';
import { rotateRoot, type RotationProgress } from '../hsm/rotate-root.js';
import {
  REK_PREFIX,
  SealedError,
  addHsmEntry,
  deriveRootApiKey,
  openRootKey,
  rootKeyState,
  sealedEntryNames,
  unsealEntry,
  type RootKey,
} from '../hsm/root-key.js';
import { Kms } from '../kms/kms.js';
import { Barrier } from '../store/barrier.js';
import { MemoryStore } from '../store/memory.js';
import { decodeSnapshot, encodeSnapshot } from '../store/snapshot.js';
import { StoreUnavailableError, type Condition, type Mutation, type Store } from '../store/store.js';
import type { MessageInit } from '../protocol/schema.js';
import type { ClusterStatusResponse, ServerStatusResponse } from '../protocol/messages.js';
import { VERSION } from '../version.js';
import type { ChangeFeed, ClusterRuntime } from './cluster.js';
import type { ClusterOps } from './commands.js';
import type { NodeSnapshot } from './membership.js';
import { clip, type Logger } from './log.js';
import {
  ROOT_IDENTITY_PATH,
  decodeRootIdentity,
  deriveRootIdentity,
  loadRootIdentity,
  putRootIdentity,
  type RootIdentityRecord,
} from './root-identity.js';
import { hsmNames, unsealed, type NodeState, type RootIdentity, type SealedState, type UnsealedState } from './state.js';

/** Unseal retries back off from 0.5 s to this; an HSM that comes back is used within seconds. */
const RETRY_MAX_MS = 5_000;
/** Sealing for a configured HSM without an entry is retried from this… */
const PENDING_RETRY_MIN_MS = 5_000;
/** …up to this. */
const PENDING_RETRY_MAX_MS = 300_000;
/** Following a change of the root key entries that failed is retried from this (up to RETRY_MAX_MS). */
const FOLLOW_RETRY_MIN_MS = 500;
/** How often a cluster node checks for entries no node has configured any more. */
const UNCONFIGURED_CHECK_MS = 10_000;

/** An opened root key with the HSMs it was opened with. */
interface Opened {
  readonly root: RootKey;
  readonly barrier: Barrier;
  readonly hsms: readonly Hsm[];
}

export interface NodeOptions {
  readonly config: Config;
  /** The configuration file, watched for changes of its `hsm` section. */
  readonly configFile?: string;
  readonly store: Store;
  /** Where the HSMs come from (rebuilt when the configuration changes). */
  readonly hsmSources: HsmSources;
  readonly hsms: readonly ConfiguredHsm[];
  readonly cluster?: ClusterRuntime;
  /**
   * The changes other writers make to the store (a node's other worker processes): like a
   * cluster's feed, without membership. A cluster's runtime is its feed.
   */
  readonly feed?: ChangeFeed;
  readonly log: Logger;
  /** Prints a line of the banner (stdout): the root API key goes here, never to the log. */
  readonly print: (line: string) => void;
  /** Records an operation the node did by itself (sealing for an HSM, removing an entry) in the audit log. */
  readonly audit: (command: string, object: string, outcome: string) => void;
  /** `host:port` other nodes and clients reach this node at. */
  readonly host: () => string;
}

export class KmsNode {
  readonly startedAt = Date.now();
  readonly log: Logger;
  readonly store: Store;
  readonly cluster: ClusterRuntime | undefined;
  readonly #changes: ChangeFeed | undefined;
  readonly ops: ClusterOps;
  #config: Config;
  readonly #opts: NodeOptions;
  #hsms: readonly ConfiguredHsm[];
  #state: NodeState;
  #closed = false;
  #unsealing: Promise<void> | undefined;
  #timers = new Set<NodeJS.Timeout>();
  /** Wakes the background loops' sleeps (close() must not wait for a timer it cleared). */
  #sleepers = new Set<() => void>();
  #pendingDelay = PENDING_RETRY_MIN_MS;
  #pendingTimer: NodeJS.Timeout | undefined;
  /** A change of the root key entries that could not be followed yet is retried with this timer. */
  #followRetry: NodeJS.Timeout | undefined;
  #followDelay = FOLLOW_RETRY_MIN_MS;
  #reconciling: Promise<void> | undefined;
  #reconcileAgain = false;
  /** State transitions (unseal, reload, following a root key change) run one at a time. */
  #transitions: Promise<unknown> = Promise.resolve();
  #queuedReload: Promise<void> | undefined;
  /** Listeners of state changes (banner, metrics). */
  readonly #listeners: ((state: NodeState, previous: NodeState) => void)[] = [];

  constructor(opts: NodeOptions) {
    this.#opts = opts;
    this.#config = opts.config;
    this.log = opts.log;
    this.store = opts.store;
    this.cluster = opts.cluster;
    this.#changes = opts.cluster ?? opts.feed;
    this.#hsms = opts.hsms;
    this.#state = {
      kind: 'sealed',
      since: Date.now(),
      hsms: opts.hsms.map((c) => c.hsm),
      entries: [],
      reason: 'starting',
      hint: '',
    };
    this.ops = this.#clusterOps();
  }

  /** The current state: read it once per request. */
  get state(): NodeState {
    return this.#state;
  }

  get config(): Config {
    return this.#config;
  }

  get host(): string {
    return this.#opts.host();
  }

  /** Calls `fn` after every state change. */
  onStateChange(fn: (state: NodeState, previous: NodeState) => void): void {
    this.#listeners.push(fn);
  }

  #set(next: NodeState): void {
    const previous = this.#state;
    this.#state = next;
    for (const fn of this.#listeners) {
      try {
        fn(next, previous);
      } catch (err) {
        this.log.error('state change listener failed', { err: (err as Error).message });
      }
    }
  }

  /** Starts unsealing (retried until it succeeds) and, in a cluster, joining the membership. */
  start(): void {
    this.#unsealInBackground();
    if (this.cluster) this.#join();
    if (this.cluster) this.#every(UNCONFIGURED_CHECK_MS, 'removal of unconfigured HSM entries', () => this.#removeUnconfigured());
  }

  // ------------------------------------------------------------------ background tasks

  /** Runs `fn` now and then; its errors are logged, never thrown. */
  #every(ms: number, what: string, fn: () => Promise<void>): void {
    const timer = setInterval(() => void this.#task(what, fn), ms);
    timer.unref();
    this.#timers.add(timer);
  }

  /** Runs a background task that owns its errors. */
  async #task(what: string, fn: () => Promise<void>): Promise<void> {
    if (this.#closed) return;
    try {
      await fn();
    } catch (err) {
      if (this.#closed) return;
      const level = err instanceof StoreUnavailableError ? 'warn' : 'error';
      this.log[level](`${what} failed`, { err: clip(errorText(err)) });
    }
  }

  #after(ms: number, fn: () => void): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fn();
    }, ms);
    timer.unref();
    this.#timers.add(timer);
    return timer;
  }

  /** Sleeps `ms`, or less if the node closes meanwhile. */
  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        this.#sleepers.delete(wake);
        clearTimeout(timer);
        resolve();
      };
      const timer = this.#after(ms, wake);
      this.#sleepers.add(wake);
    });
  }

  // ------------------------------------------------------------------ unsealing

  /** Runs `fn` after every transition queued before it (they never interleave). */
  #transition<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#transitions.then(fn, fn);
    this.#transitions = run.catch(() => undefined);
    return run;
  }

  #unsealInBackground(): void {
    if (this.#unsealing || this.#closed) return;
    this.#unsealing = this.#unsealLoop().finally(() => (this.#unsealing = undefined));
  }

  async #unsealLoop(): Promise<void> {
    let lastReason = '';
    for (let attempt = 0; !this.#closed && this.#state.kind === 'sealed'; attempt++) {
      try {
        await this.#transition(() => (this.#state.kind === 'sealed' ? this.#unseal() : Promise.resolve()));
        return;
      } catch (err) {
        if (this.#closed) return;
        const sealed = this.#sealedState(err);
        this.#set(sealed);
        const delay = Math.min(RETRY_MAX_MS, 500 * 2 ** Math.min(attempt, 4));
        // One record per reason, not per attempt: a node waiting for its HSM must not flood the log.
        if (sealed.reason !== lastReason) {
          this.log.warn('sealed: cannot unseal the root encryption key; retrying', {
            reason: sealed.reason,
            hint: sealed.hint,
            retryInMs: delay,
          });
          lastReason = sealed.reason;
        }
        await this.#sleep(delay);
      }
    }
  }

  /** The sealed state for an unsealing failure: the reason, and what the operator can do. */
  #sealedState(err: unknown, entries: readonly string[] = this.#state.entries): SealedState {
    const hsms = this.#hsms.map((c) => c.hsm);
    const reason = clip(errorText(err), 2000);
    const configured = hsms.map((h) => h.name);
    const missing = entries.length > 0 && !configured.some((n) => entries.includes(n));
    const hint = missing
      ? `no configured HSM has a sealed root key entry (entries: ${entries.join(', ')}; configured: ${configured.join(', ')}): ` +
        `start this node once with an HSM that has an entry (e.g. MINIO_KMS_HSM_KEY) so that the root key can be sealed for ` +
        `${configured.join(', ')}, or run \`minkms add-hsm NAME\` on an unsealed node of this cluster that has it configured; ` +
        `this node unseals by itself as soon as an entry it can open exists`
      : err instanceof StoreUnavailableError
        ? 'the store is unreachable; this node unseals once it is back'
        : 'this node retries by itself; fix the HSM named above (reachable, credentials, key) or start it with another configured HSM that has an entry';
    return { kind: 'sealed', since: Date.now(), hsms, entries: [...entries], reason, hint };
  }

  async #unseal(): Promise<void> {
    const store = this.store;
    const hsms = this.#hsms.map((c) => c.hsm);
    // Entries are read first so that a failure can say what exists and what is configured.
    const entries = await sealedEntryNames(store).catch(() => this.#state.entries);
    if (this.#state.kind === 'sealed' && entries !== this.#state.entries) this.#set({ ...this.#state, entries: [...entries] });
    // With other writers (a cluster, worker processes), follow changes from the revision the
    // state is loaded at.
    const rev = await this.#changes?.currentRevision();
    const root = await openRootKey(store, hsms, (msg) => this.log.warn(msg));
    const barrier = new Barrier(root.rek, root.clusterId, root.term);
    if (root.next) barrier.addTerm(root.next.rek, root.next.term);
    // A single node knows every configured HSM: entries of the others go before it announces
    // its root identity (in a cluster, once every member has reported; see #removeUnconfigured).
    let replaced: RootIdentityRecord | undefined | false = false;
    if (!this.cluster) {
      replaced = await this.#removeUnconfiguredEntries({ root, barrier, hsms }, new Set(hsms.map((h) => h.name))).catch((err: unknown) => {
        this.log.error('cannot remove the entries of HSMs that are no longer configured', { err: clip(errorText(err)) });
        return false as const;
      });
    }
    let rootIdentity = await this.#resolveRootIdentity(barrier, hsms);
    if (replaced) {
      rootIdentity = { ...rootIdentity, replaced: replaced.retired[0]?.hsm ?? '' };
      this.log.warn('the root identity changed: the HSM its API key was derived from was removed', {
        identity: rootIdentity.identity,
        derivedFrom: rootIdentity.source,
        removed: rootIdentity.replaced,
      });
    }
    const kms = await Kms.load(store, barrier, {
      rootIdentity: rootIdentity.identity,
      report: (err) => this.log.warn('background work of the domain failed; retrying', { err: clip(err.message) }),
    });
    const previous = this.#state;
    if (previous.kind === 'unsealed') previous.kms.retire();
    this.#set({
      kind: 'unsealed',
      since: Date.now(),
      hsms,
      entries: await sealedEntryNames(store),
      root,
      barrier,
      kms,
      rootIdentity,
      pending: new Map(),
    });
    if (rev !== undefined) await this.#changes!.follow(rev);
    this.log.info('unsealed', { hsm: root.unsealedBy, cluster: root.clusterId });
    void this.#reconcile();
  }

  /**
   * The root identity (server/root-identity.ts): `admin.identity`, else the recorded one; a
   * database without a record (new, or from an earlier version) records the identity derived
   * from its first configured HSM that has an entry.
   */
  async #resolveRootIdentity(barrier: Barrier, hsms: readonly Hsm[]): Promise<RootIdentity> {
    const admin = this.#config.admin.identity;
    if (admin) return { identity: admin, source: 'admin.identity', retired: [] };
    for (let attempt = 0; ; attempt++) {
      const loaded = await loadRootIdentity(this.store, barrier);
      if (loaded) return this.#rootIdentityOf(loaded.record, hsms);
      const entries = await sealedEntryNames(this.store);
      const from = (entries.includes(hsms[0]!.name) ? hsms[0] : hsms.find((h) => entries.includes(h.name))) ?? hsms[0]!;
      const { apiKey, record } = await deriveRootIdentity(from);
      const res = await this.store.commit([{ key: ROOT_IDENTITY_PATH, rev: 0 }], [putRootIdentity(barrier, record)]);
      if (res.ok) return { identity: record.identity, source: record.hsm, apiKey: apiKey.text, retired: [] };
      if (attempt > 2) throw new Error('cannot record the root identity: conflicting concurrent changes');
    }
  }

  /** The identity of a record, with its API key if this node has the HSM it is derived from. */
  async #rootIdentityOf(record: RootIdentityRecord, hsms: readonly Hsm[]): Promise<RootIdentity> {
    const retired = record.retired.map((r) => ({ identity: r.identity, hsm: r.hsm }));
    const hsm = hsms.find((h) => h.name === record.hsm);
    let apiKey: string | undefined;
    if (hsm) {
      try {
        const key = await deriveRootApiKey(hsm);
        if (key.identity === record.identity) apiKey = key.text;
        else this.log.warn("the root API key derived from this node's HSM is not the cluster's root identity", { hsm: hsm.name });
      } catch (err) {
        this.log.warn('cannot derive the root API key', { hsm: hsm.name, err: clip(errorText(err)) });
      }
    }
    return { identity: record.identity, source: record.hsm, apiKey, retired };
  }

  // ------------------------------------------------------------------ HSM entries

  /**
   * Brings the sealed entries in line with the configuration: seals the root key for every
   * configured HSM without an entry (retried with backoff while one fails: it is "pending"),
   * and removes entries no node has configured any more.
   */
  #reconcile(): Promise<void> {
    // A request while a run is under way (a configuration change, say) means one more run: the
    // current one may have read the HSMs before they changed.
    if (this.#reconciling) {
      this.#reconcileAgain = true;
      return this.#reconciling;
    }
    const run = async (): Promise<void> => {
      do {
        this.#reconcileAgain = false;
        let sealed = true;
        await this.#task('sealing the root key for the configured HSMs', async () => {
          try {
            await this.#sealPending();
          } catch (err) {
            sealed = false;
            throw err;
          }
        });
        // The sealing could not even start (the store did not answer): try again later, as for a pending HSM.
        if (!sealed) this.#retryReconcile();
        await this.#task('removal of unconfigured HSM entries', () => this.#removeUnconfigured());
      } while (this.#reconcileAgain && !this.#closed);
    };
    this.#reconciling = run().finally(() => (this.#reconciling = undefined));
    return this.#reconciling;
  }

  /** Runs #reconcile again after the pending-HSM backoff (5 s doubling to 5 min). */
  #retryReconcile(): void {
    if (this.#closed) return;
    clearTimeout(this.#pendingTimer);
    this.#pendingTimer = this.#after(this.#pendingDelay, () => void this.#reconcile());
    this.#pendingDelay = Math.min(PENDING_RETRY_MAX_MS, this.#pendingDelay * 2);
  }

  async #sealPending(): Promise<void> {
    const st = this.#state;
    if (st.kind !== 'unsealed') return;
    const entries = new Set(await sealedEntryNames(this.store));
    const pending = new Map<string, string>();
    for (const hsm of st.hsms) {
      if (entries.has(hsm.name)) continue;
      try {
        await addHsmEntry(this.store, hsm, st.root, false);
        this.log.info('sealed the root encryption key for a configured HSM', { hsm: hsm.name });
        this.#opts.audit('CLUSTER:ADDHSM', hsm.name, 'ok');
      } catch (err) {
        if (isKmsError(err) && err.code === 'ERR_HSM_EXISTS') continue;
        const why = clip(errorText(err), 1000);
        if (st.pending.get(hsm.name) !== why)
          this.log.error('cannot seal the root encryption key for a configured HSM', { hsm: hsm.name, err: why });
        pending.set(hsm.name, why);
      }
    }
    const now = this.#state;
    if (now.kind === 'unsealed' && now.kms === st.kms) this.#set({ ...now, entries: await sealedEntryNames(this.store), pending });
    clearTimeout(this.#pendingTimer);
    if (pending.size > 0) this.#retryReconcile();
    else this.#pendingDelay = PENDING_RETRY_MIN_MS;
  }

  /**
   * Removes the entries of HSMs that no node has configured (`hsm.keep_unconfigured_entries`
   * keeps them): once MINIO_KMS_HSM_KEY is gone from every node, the old soft key alone no
   * longer opens the database. In a cluster this waits until every member is up and reports
   * its configured HSMs: a node that is down may still have the HSM configured.
   */
  async #removeUnconfigured(): Promise<void> {
    const st = this.#state;
    if (st.kind !== 'unsealed' || this.#config.hsm.keepUnconfiguredEntries) return;
    const configured = new Set(hsmNames(st));
    if (this.cluster) {
      const view = await this.cluster.view();
      if (!view || view.down.size > 0 || view.up.size === 0) return;
      for (const n of view.up.values()) {
        if (n.sealed && n.hsmActive.length === 0) return;
        for (const h of n.hsmActive) configured.add(h);
      }
    }
    const record = await this.#removeUnconfiguredEntries(st, configured);
    if (record !== false) await this.#entriesChanged(st, record);
  }

  /**
   * Removes every entry whose HSM is not in `configured`. Returns false if nothing was removed,
   * else the new root identity record if the root API key had to be derived anew.
   */
  async #removeUnconfiguredEntries(o: Opened, configured: ReadonlySet<string>): Promise<RootIdentityRecord | undefined | false> {
    if (this.#config.hsm.keepUnconfiguredEntries || o.root.next) return false;
    const entries = await sealedEntryNames(this.store);
    if (!entries.some((e) => o.hsms.some((h) => h.name === e))) return false;
    let removed = false;
    let record: RootIdentityRecord | undefined;
    for (const name of entries.filter((e) => !configured.has(e))) {
      record = (await this.#removeEntry(o, name)) ?? record;
      removed = true;
      this.log.warn('removed the sealed root key entry of an HSM that no node has configured any more', { hsm: name });
      this.#opts.audit('CLUSTER:REMOVEHSM', name, 'ok');
    }
    return removed ? record : false;
  }

  /**
   * Deletes `name`'s entry — refused unless another entry can be opened right now by a
   * configured HSM (so the database never becomes unopenable). When the root API key was
   * derived from `name`, a new one is derived from the HSM that proved it opens, written in
   * the same commit, and returned.
   */
  async #removeEntry(o: Opened, name: string): Promise<RootIdentityRecord | undefined> {
    if (o.root.next) throw new KmsError('ERR_BAD_REQUEST', 'a root key rotation is in progress: finish it with `minkms rotate-root` first');
    const all = await this.store.range(REK_PREFIX);
    const target = all.find((e) => e.key === REK_PREFIX + name);
    if (!target) throw new KmsError('ERR_HSM_NOT_FOUND');
    const others = all.filter((e) => e !== target);
    if (others.length === 0) throw new KmsError('ERR_HSM_LAST');
    const failures: string[] = [];
    let opener: { hsm: Hsm; entry: (typeof all)[number] } | undefined;
    for (const hsm of o.hsms) {
      const entry = others.find((e) => e.key === REK_PREFIX + hsm.name);
      if (!entry) continue;
      try {
        const { rek } = await unsealEntry(hsm, entry.value, o.root.clusterId);
        if (rek.equals(o.root.rek)) {
          opener = { hsm, entry };
          break;
        }
        failures.push(`${hsm.name}: its entry holds another root key`);
      } catch (err) {
        failures.push(errorText(err));
      }
    }
    if (!opener) {
      const why = failures.length > 0 ? failures.join('; ') : 'no other entry belongs to an HSM configured on this node';
      throw new KmsError('ERR_HSM_LAST', clip(`no other configured hsm can open its entry right now (${why})`, 1000));
    }
    const conditions: Condition[] = [
      { key: target.key, rev: target.rev },
      { key: opener.entry.key, rev: opener.entry.rev },
    ];
    const mutations: Mutation[] = [{ key: target.key }];
    let record: RootIdentityRecord | undefined;
    if (!this.#config.admin.identity) {
      const loaded = await loadRootIdentity(this.store, o.barrier);
      if (loaded && loaded.record.hsm === name) {
        record = (await deriveRootIdentity(opener.hsm, loaded.record)).record;
        conditions.push({ key: ROOT_IDENTITY_PATH, rev: loaded.rev });
        mutations.push(putRootIdentity(o.barrier, record));
      }
    }
    const res = await this.store.commit(conditions, mutations);
    if (!res.ok) throw new KmsError('ERR_CONFLICT', 'the sealed root key entries changed concurrently');
    return record;
  }

  /** After entries were removed: the new entry list, and the new root identity if there is one. */
  async #entriesChanged(st: UnsealedState, record: RootIdentityRecord | undefined): Promise<void> {
    const rootIdentity = record ? await this.#rootIdentityOf(record, st.hsms) : st.rootIdentity;
    if (record) this.#announceRootChange(rootIdentity, record.retired[0]?.hsm ?? '');
    const now = this.#state;
    if (now.kind === 'unsealed' && now.kms === st.kms) {
      now.kms.setRootIdentity(rootIdentity.identity);
      this.#set({ ...now, entries: await sealedEntryNames(this.store), rootIdentity });
    }
  }

  #announceRootChange(root: RootIdentity, removed: string): void {
    this.log.warn('the root identity changed: the HSM its API key was derived from was removed', {
      identity: root.identity,
      derivedFrom: root.source,
      removed,
    });
    if (root.apiKey) this.#opts.print(`API Key     ${root.apiKey}   (${newRootNote(removed)})`);
  }

  // ------------------------------------------------------------------ following the cluster

  /** Hooks for the cluster's change feed (server/cluster.ts). */
  get feed(): {
    kms(): Kms | undefined;
    rootChanged(): Promise<void>;
    recordChanged(path: string, value: Buffer | undefined): void;
    resync(): Promise<void>;
  } {
    return {
      kms: () => (this.#state.kind === 'unsealed' ? this.#state.kms : undefined),
      rootChanged: () => this.#followRootChange(),
      recordChanged: (path, value) => this.#followRecord(path, value),
      resync: () => this.#task('reloading the state from the store', () => this.#reload('the change feed could not be followed')),
    };
  }

  /**
   * Follows a change of the root key entries. It reads the store, which may fail (no quorum):
   * then the failure is reported and the node tries again, with backoff, until it has followed —
   * otherwise it would keep an outdated list of entries, or miss the end of a root key rotation,
   * until the next change happened to come along.
   */
  async #followRootChange(): Promise<void> {
    clearTimeout(this.#followRetry);
    this.#followRetry = undefined;
    let failed = false;
    await this.#task('following a change of the root key entries', async () => {
      try {
        await this.#transition(() => this.#followRoot());
        this.#followDelay = FOLLOW_RETRY_MIN_MS;
      } catch (err) {
        failed = true;
        throw err;
      }
    });
    if (!failed || this.#closed || this.#followRetry) return;
    this.#followRetry = this.#after(this.#followDelay, () => {
      this.#followRetry = undefined;
      void this.#followRootChange();
    });
    this.#followDelay = Math.min(RETRY_MAX_MS, this.#followDelay * 2);
  }

  /**
   * Another node changed the sealed root key entries: an HSM was added or removed (only the
   * list changes), or a root key rotation started or finished (the new REK generation must be
   * opened with a configured HSM — if none can, the node is sealed until one can).
   */
  async #followRoot(): Promise<void> {
    const st = this.#state;
    if (st.kind !== 'unsealed') return;
    const now = await rootKeyState(this.store);
    if (now.clusterId !== st.root.clusterId) {
      // Queued behind this transition, not awaited inside it.
      void this.#reload('a backup was restored');
      return;
    }
    let root: RootKey = st.root;
    const needsOpen = now.term > st.barrier.term || (now.rotating && !st.root.next);
    if (needsOpen) {
      try {
        root = await openRootKey(this.store, st.hsms, (msg) => this.log.debug(msg));
      } catch (err) {
        this.#set(this.#sealedState(new Error(`cannot follow a root key rotation of another node: ${errorText(err)}`), now.entries));
        st.kms.retire();
        this.#unsealInBackground();
        return;
      }
      if (root.term > st.barrier.term) st.barrier.addTerm(root.rek, root.term);
      if (root.next) st.barrier.addTerm(root.next.rek, root.next.term);
    }
    if (!now.rotating && root.term === st.barrier.term) st.barrier.dropOldTerms();
    const latest = this.#state;
    if (latest.kind === 'unsealed' && latest.kms === st.kms) this.#set({ ...latest, root, entries: now.entries });
  }

  /** A record outside the domain changed on another node (the root identity). */
  #followRecord(path: string, value: Buffer | undefined): void {
    const st = this.#state;
    if (path !== ROOT_IDENTITY_PATH || st.kind !== 'unsealed' || value === undefined || this.#config.admin.identity) return;
    let record: RootIdentityRecord;
    try {
      record = decodeRootIdentity(st.barrier, value);
    } catch (err) {
      this.log.error('cannot read the root identity written by another node', { err: clip(errorText(err)) });
      return;
    }
    if (record.identity === st.rootIdentity.identity) return;
    void this.#task('following a change of the root identity', async () => {
      const root = await this.#rootIdentityOf(record, st.hsms);
      const now = this.#state;
      if (now.kind !== 'unsealed' || now.kms !== st.kms) return;
      now.kms.setRootIdentity(root.identity);
      this.#set({ ...now, rootIdentity: root });
      this.#announceRootChange(root, record.retired[0]?.hsm ?? '');
    });
  }

  /**
   * Reloads everything from the store (a restored backup, a broken change feed) while the
   * current state keeps serving; the node is sealed only if the reload fails.
   */
  #reload(why: string): Promise<void> {
    // One reload queued is enough: it reads everything there is by the time it runs.
    this.#queuedReload ??= this.#transition(async () => {
      this.#queuedReload = undefined;
      const st = this.#state;
      if (st.kind !== 'unsealed' || this.#closed) return;
      this.log.warn('reloading the state from the store', { why });
      try {
        await this.#unseal();
      } catch (err) {
        st.kms.retire();
        this.#set(this.#sealedState(err));
        this.#unsealInBackground();
      }
    });
    return this.#queuedReload;
  }

  /** Registers in the cluster membership; retried until etcd answers. */
  #join(): void {
    const cluster = this.cluster!;
    const heartbeat = this.#config.heartbeat || 1000;
    cluster
      .join(this.host, heartbeat, () => this.#snapshot())
      .then(
        () => this.log.info('joined the cluster', { node: cluster.membership!.id, host: this.host }),
        (err: unknown) => {
          if (this.#closed) return;
          this.log.warn('cannot register in the cluster yet; retrying', { err: clip(errorText(err)) });
          this.#after(2000, () => this.#join());
        },
      );
  }

  #snapshot(): Omit<NodeSnapshot, 'id' | 'heartbeatAt'> {
    const st = this.#state;
    const mem = process.memoryUsage();
    return {
      host: this.host,
      version: VERSION,
      startedAt: this.startedAt,
      commit: this.cluster?.appliedRev ?? 0,
      hsms: [...st.entries],
      hsmActive: hsmNames(st),
      pendingHsms: st.kind === 'unsealed' ? Object.fromEntries(st.pending) : {},
      rootIdentity: st.kind === 'unsealed' ? st.rootIdentity.identity : '',
      rootIdentitySource: st.kind === 'unsealed' ? st.rootIdentity.source : '',
      os: process.platform,
      arch: process.arch,
      cpus: cpus().length,
      usableCpus: availableParallelism(),
      heapMemInUse: mem.heapUsed,
      sealed: st.kind === 'sealed',
      store: this.#storeSummary(),
    };
  }

  /** How current this node's copy of the state is (clusters), for status: `fresh`, `stale` or `offline`. */
  #storeSummary(): NodeSnapshot['store'] {
    const f = this.cluster?.store.freshness();
    const health = this.store.health?.();
    if (!f) return { state: health?.write === 'full' ? 'full' : 'ok', lastQuorumAt: 0 };
    return { state: health?.write === 'full' ? 'full' : f.state, lastQuorumAt: f.lastQuorumAt };
  }

  // ------------------------------------------------------------------ configuration

  /**
   * Reads the configuration file again (on a change of the file, and on SIGHUP). A change of
   * the `hsm` section takes effect at once: new HSMs get a sealed entry while the node runs, so
   * that the next restart can do without the old ones. Other sections need a restart (TLS
   * files are reloaded by their own watch).
   */
  async reloadConfig(): Promise<void> {
    const file = this.#opts.configFile;
    if (!file || this.#closed) return;
    let next: Config;
    try {
      next = loadConfig(file);
    } catch (err) {
      this.log.error('the configuration file changed but cannot be loaded; keeping the running configuration', {
        err: clip(errorText(err)),
      });
      return;
    }
    const changed = (Object.keys(next) as (keyof Config)[]).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.#config[k]));
    const later = changed.filter((k) => k !== 'hsm');
    if (later.length > 0)
      this.log.warn('configuration changed: these sections take effect at the next restart', { sections: later.join(', ') });
    if (!changed.includes('hsm')) {
      await this.#reconcile();
      return;
    }
    let hsms: ConfiguredHsm[];
    try {
      hsms = configuredHsms({ ...this.#opts.hsmSources, config: next, generate: false }, this.#hsms);
    } catch (err) {
      this.log.error('the hsm section of the configuration cannot be used; keeping the running HSMs', { err: clip(errorText(err)) });
      return;
    }
    const dropped = this.#hsms.filter((c) => !hsms.includes(c));
    this.#hsms = hsms;
    this.#config = { ...this.#config, hsm: next.hsm };
    const list = hsms.map((c) => c.hsm);
    this.log.info('the HSM configuration changed', { hsms: list.map((h) => h.name).join(', ') });
    this.#set({ ...this.#state, hsms: list });
    for (const c of dropped) await c.hsm.close().catch(() => undefined);
    this.#pendingDelay = PENDING_RETRY_MIN_MS;
    if (this.#state.kind === 'sealed') this.#unsealInBackground();
    else await this.#reconcile();
  }

  // ------------------------------------------------------------------ operations

  /** Throws why a write would not be accepted now (`/v1/health/ready?write`): sealed, store full, no quorum. */
  async checkWritable(): Promise<void> {
    unsealed(this.#state);
    const health = this.store.health?.();
    if (health?.write === 'full') throw new KmsError('ERR_STORE_FULL');
    if (health?.write === 'unavailable' || (this.cluster && !(await this.cluster.writable()))) throw new KmsError('ERR_STORE_UNAVAILABLE');
  }

  /** Whether this node's copy of the state may lag its cluster by more than the bound (no allocation: every request asks). */
  stale(): boolean {
    return this.cluster !== undefined && !this.cluster.store.readable();
  }

  /** Replaces the root encryption key (hsm/rotate-root.ts); writes wait, reads go on. */
  async rotateRoot(progress: (p: RotationProgress) => void): Promise<number> {
    const st = unsealed(this.#state);
    let root: RootKey | undefined;
    await st.kms.exclusive(async () => {
      root = await rotateRoot(this.store, st.hsms, st.root, st.barrier, progress);
      await st.kms.reload();
    });
    const now = this.#state;
    if (now.kind === 'unsealed' && now.kms === st.kms) this.#set({ ...now, root: root!, entries: await sealedEntryNames(this.store) });
    this.log.info('root encryption key rotated', { term: root!.term });
    return root!.term;
  }

  /** A consistent snapshot of the whole store, still encrypted (GET /v1/db). */
  async backup(): Promise<Buffer> {
    const st = unsealed(this.#state);
    return encodeSnapshot(st.root.clusterId, await this.store.range(''));
  }

  /**
   * Replaces the whole state with a snapshot (PUT /v1/db). The snapshot is opened and every
   * record checked in memory first, with this node's HSMs; only then is the store replaced, in
   * one transaction. A snapshot that cannot be opened leaves the node as it was.
   */
  async restore(snapshot: Buffer): Promise<void> {
    const st = unsealed(this.#state);
    let entries;
    try {
      entries = decodeSnapshot(snapshot).entries;
    } catch (err) {
      throw new KmsError('ERR_INVALID_BACKUP', clip(errorText(err)));
    }
    await st.kms.exclusive(async () => {
      try {
        const memory = new MemoryStore(entries);
        const root = await openRootKey(memory, st.hsms);
        const barrier = new Barrier(root.rek, root.clusterId, root.term);
        if (root.next) barrier.addTerm(root.next.rek, root.next.term);
        await Kms.load(memory, barrier, { rootIdentity: st.rootIdentity.identity });
      } catch (err) {
        throw new KmsError('ERR_INVALID_BACKUP', clip(`this node cannot open it: ${errorText(err)}`, 1000));
      }
      const current = await this.store.range('');
      const keep = new Set(entries.map((e) => e.key));
      const res = await this.store.commit(
        current.map((e) => ({ key: e.key, rev: e.rev })),
        [...current.filter((e) => !keep.has(e.key)).map((e) => ({ key: e.key })), ...entries],
      );
      if (!res.ok) throw new KmsError('ERR_CONFLICT');
      // Writes still queued on this domain must fail rather than land next to the restored state.
      st.kms.retire();
    });
    this.log.info('database restored from a backup', { entries: entries.length });
    await this.#reload('a backup was restored');
  }

  // ------------------------------------------------------------------ cluster commands

  #clusterOps(): ClusterOps {
    const membership = () => {
      const m = this.cluster?.membership;
      if (!m) throw new KmsError(this.cluster ? 'ERR_STORE_UNAVAILABLE' : 'ERR_CLUSTER_SINGLE_NODE');
      return m;
    };
    return {
      status: () => this.#status(),
      addNode: async (host) => membership().addNode(host),
      removeNode: async (host) => membership().removeNode(host),
      editCluster: async (ids) => membership().removeIds(ids),
      addHsm: async (name, overwrite) => {
        const st = unsealed(this.#state);
        const hsm = st.hsms.find((h) => h.name === name);
        if (!hsm) throw new KmsError('ERR_HSM_NOT_CONFIGURED');
        await addHsmEntry(this.store, hsm, st.root, overwrite);
        const pending = new Map(st.pending);
        pending.delete(name);
        const now = this.#state;
        if (now.kind === 'unsealed' && now.kms === st.kms) this.#set({ ...now, entries: await sealedEntryNames(this.store), pending });
      },
      removeHsm: async (name) => {
        const st = unsealed(this.#state);
        await this.#entriesChanged(st, await this.#removeEntry(st, name));
      },
    };
  }

  /** CLUSTER:STATUS: this node, or every live node of the cluster from its published snapshot. */
  async #status(): Promise<MessageInit<ClusterStatusResponse>> {
    const view = await this.cluster?.view();
    if (!view) {
      const self: NodeSnapshot = { ...this.#snapshot(), id: 0, heartbeatAt: Date.now() };
      self.commit = this.#state.kind === 'unsealed' ? this.#state.kms.commits : 0;
      return { nodesUp: new Map([[0, this.#serverStatus(self, new Map([[0, this.host]]), 0)]]), nodesDown: new Map() };
    }
    const nodes = new Map<number, string>([...[...view.up.values()].map((n) => [n.id, n.host] as const), ...view.down]);
    // This node as it is now, not as its last heartbeat (up to a heartbeat old) published it:
    // asked right after it unsealed, it would say it had no HSM entries.
    const self = this.cluster?.membership?.id;
    const now = (n: NodeSnapshot) => (n.id === self ? { ...n, ...this.#snapshot(), heartbeatAt: Date.now() } : n);
    const up = new Map([...view.up.values()].map((n) => [n.id, this.#serverStatus(now(n), nodes, view.leaderId)] as const));
    return { nodesUp: up, nodesDown: view.down };
  }

  #serverStatus(n: NodeSnapshot, nodes: Map<number, string>, leaderId: number): MessageInit<ServerStatusResponse> {
    const now = Date.now();
    const st = this.#state;
    // Each node's own root identity (from its snapshot), so that `minkms stat` shows whether they agree;
    // this node's from its current state.
    const live = !this.cluster || n.id === this.cluster.membership?.id;
    const own = st.kind === 'unsealed' ? st.rootIdentity : undefined;
    return {
      version: n.version,
      apiVersion: 'v1',
      host: n.host,
      upTime: now - n.startedAt,
      role: n.id === leaderId ? 'Leader' : 'Follower',
      commit: n.commit,
      nodes,
      id: n.id,
      leaderId,
      lastHeartbeat: now - n.heartbeatAt,
      heartbeatInterval: this.#config.heartbeat,
      electionTimeout: 0,
      os: n.os,
      arch: n.arch,
      cpus: n.cpus,
      usableCpus: n.usableCpus,
      heapMemInUse: n.heapMemInUse,
      stackMemInUse: 0,
      hsms: n.hsms,
      configuredHsms: n.hsmActive,
      pendingHsms: n.pendingHsms ?? {},
      sealed: n.sealed,
      rootIdentity: live ? (own?.identity ?? '') : (n.rootIdentity ?? ''),
      rootIdentitySource: live ? (own?.source ?? '') : (n.rootIdentitySource ?? ''),
      storeState: n.store?.state ?? '',
      lastQuorum: n.store?.lastQuorumAt ? now - n.store.lastQuorumAt : 0,
    };
  }

  uptimeMs(): number {
    return Date.now() - this.startedAt;
  }

  hostname(): string {
    return hostname();
  }

  /** Stops every background task and closes the store and the HSMs. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    // A sealed node's unseal loop sleeps between attempts: its timer is gone now, so wake it.
    for (const wake of [...this.#sleepers]) wake();
    await this.#unsealing?.catch(() => undefined);
    await this.#changes?.close().catch(() => undefined);
    await this.store.close().catch(() => undefined);
    for (const c of this.#hsms) await c.hsm.close().catch(() => undefined);
  }
}

/** How the banner marks a root API key that replaced one whose HSM entry was removed. */
export function newRootNote(removed: string): string {
  return `the new root API key: the HSM the previous one was derived from${removed ? `, ${removed},` : ''} was removed`;
}

function errorText(err: unknown): string {
  if (err instanceof SealedError || err instanceof Error) return err.message;
  return String(err);
}
