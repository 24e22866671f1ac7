/**
 * One node's replica of the keys it holds: sibling sets stored in the storage engine, changed only by
 * read-modify-write under a per-key lock.
 *
 * - `version` (and `coordinate`, which also waits for durability) is a write this node coordinates: it
 *   versions the new value with this node's actor (dvv.update), refuses it if the key would exceed the
 *   sibling limit, and stores the result. It returns the whole new set: that set, not the lone new
 *   sibling, is what goes to the other replicas (see ARCHITECTURE.md: shipping whole sets means no
 *   replica holds a dot of an actor without every earlier dot of that actor for the key, or what
 *   superseded it). Its counter comes from the node-wide counter (dot-counter.ts), never from the key's
 *   set alone, so a key purged and written again never reuses a dot.
 * - `purgeIfEqual` deletes a key's set if it is still exactly the tombstones agreed on (tombstone purging,
 *   tombstones.ts).
 * - `merge` folds in a set received from elsewhere (replication, read repair, handoff, anti-entropy).
 *
 * The sets live in the storage engine's `data` keyspace (keyspaces.ts); `scan` and `readRaw` give them
 * to handoff (and later anti-entropy) without anyone else touching the engine's keys.
 *
 * The key lock is bounded (key-lock.ts): a write that finds it full is refused at once (`overloaded`,
 * nothing versioned), and a merge that finds it full fails with KeyLockOverloadedError (ERR_OVERLOADED,
 * which the peer transport passes back as such).
 *
 * Invariants asserted: a versioned write's dot is new (its counter is above every counter of this
 * actor in the set it replaces, and above every counter the node issued before: dot-counter.ts), and a
 * merge's result covers both of its inputs (nothing received or held is dropped without being
 * superseded).
 */
import { assert } from "../core/assert.js";
import type { StorageEngine } from "../storage/engine.js";
import {
  type Actor,
  assertFreshDot,
  assertMergeCovers,
  merge,
  nextCounter,
  update,
  type VersionVector,
} from "../versioning/dvv.js";
import {
  decodeSiblings,
  encodeSiblings,
  type StoredSibling,
  type StoredValue,
} from "../versioning/object-codec.js";
import { DotCounter } from "./dot-counter.js";
import { KeyLock, KeyLockOverloadedError } from "./key-lock.js";
import { DATA } from "./keyspaces.js";

/** The key lock refused the write (too many writes wait for the key, or too many keys are locked). */
export interface Overloaded {
  readonly kind: "overloaded";
  readonly limit: KeyLockOverloadedError["limit"];
  readonly max: number;
}

export type CoordinateResult =
  | { readonly kind: "ok"; readonly set: StoredSibling[]; readonly written: StoredSibling }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | Overloaded;

export type VersionResult =
  | {
      readonly kind: "ok";
      readonly set: StoredSibling[];
      readonly written: StoredSibling;
      /** Settles when the set is durable on this node. */
      readonly durable: Promise<void>;
    }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | Overloaded
  /** The caller gave up (its deadline passed) before the key was free: nothing was versioned. */
  | { readonly kind: "abandoned" };

/**
 * This replica versions no more writes: a write it versioned could not be stored here (it is never
 * cleared: restart the node), or the node is stopping (`seal`).
 */
export class CannotVersionError extends Error {
  readonly code = "ERR_CANNOT_VERSION";
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

/** One stored set as a scan returns it: the user key and the set's bytes as stored (object-codec.ts). */
export interface StoredEntry {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** What is told of every change of a stored set (anti-entropy's TreeSet has this shape). */
export interface StoredSetChanges {
  writeBegins(key: Uint8Array, oldSet: readonly StoredSibling[], newSet: readonly StoredSibling[]): unknown;
  writeEnds(write: unknown, ok: boolean): void;
}

/** What handoff reads of a replica: its sets, in pages, and one set's stored bytes. */
export type StoredSets = Pick<Replica, "scan" | "readRaw">;

export class Replica {
  private readonly lock: KeyLock;
  private failure: CannotVersionError | undefined;
  private sealed: CannotVersionError | undefined;
  /** `close` was called: merges are refused too. */
  private closed = false;
  /** The local writes of versioned sets not yet settled. */
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly storage: StorageEngine,
    readonly actor: Actor,
    private readonly maxSiblings: number,
    lock: KeyLock = new KeyLock(),
    /**
     * Told of every change of a stored set, under the key's lock: right before the engine write and once
     * it settled (anti-entropy's trees, anti-entropy/tree-set.ts).
     */
    private readonly changes?: StoredSetChanges,
    /**
     * The node's counters (dot-counter.ts): a versioned write's counter is above every one this node ever
     * issued, so a key purged and written again never reuses a dot. Volatile unless given.
     */
    readonly counters: DotCounter = DotCounter.volatile(),
  ) {
    this.lock = lock;
  }

  /** The key's sibling set ([] if the key was never written here). */
  async read(key: Uint8Array): Promise<StoredSibling[]> {
    const raw = await this.readRaw(key);
    return raw === undefined ? [] : decodeSiblings(raw);
  }

  /** The key's sibling set as stored (encoded), or undefined if the key was never written here. */
  readRaw(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.storage.get(DATA.encode(key));
  }

  /**
   * One page of the stored sets, in key order: the keys after `after` (from the first if undefined), at
   * most `maxKeys` of them, ending also once the page holds `maxBytes` (engine keys and values as
   * stored; at least one entry). An empty page means the scan is done; the next page starts after the
   * last key of this one. Each page reads its own snapshot: a set written between pages is seen if its
   * key comes later. Keys are views into the engine's buffers: copy one to keep it.
   */
  async scan(after: Uint8Array | undefined, maxKeys: number, maxBytes: number): Promise<StoredEntry[]> {
    assert(maxKeys >= 1 && maxBytes >= 1, () => `scan page of ${maxKeys} keys, ${maxBytes} bytes`);
    const page: StoredEntry[] = [];
    let bytes = 0;
    for await (const e of this.storage.iterate(DATA.after(after, maxKeys))) {
      page.push({ key: DATA.decode(e.key), value: e.value });
      bytes += e.key.length + e.value.length;
      if (bytes >= maxBytes) break;
    }
    return page;
  }

  /** Why this replica versions nothing now (undefined: it can coordinate writes). */
  get cannotVersion(): CannotVersionError | undefined {
    const failed = this.storage.failure;
    if (this.failure === undefined && failed !== undefined)
      this.failure = new CannotVersionError(
        `the storage engine failed (${failed.message}); this node coordinates no more writes until it is restarted`,
        failed,
      );
    return this.failure ?? this.sealed;
  }

  /**
   * Versions a write this node coordinates and starts storing it: resolves once the new set is known,
   * with `durable` settling when it is on disk here. The key stays locked until then, so the next write
   * of the key through this node reads the new set. The coordinator sends the set to the other replicas
   * while it is being made durable here; that is safe only because the node takes a new actor after any
   * unclean stop, and this replica versions nothing after a failed local write (`writeFailure`, which
   * also keeps the node's running marker) or once sealed: a dot that reached other replicas but not this
   * disk is never issued again by this actor.
   *
   * `abandoned`, if given, is asked once the key is free: true means the caller no longer waits (its
   * deadline passed), and nothing is versioned.
   */
  async version(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    abandoned?: () => boolean,
  ): Promise<VersionResult> {
    return this.versionWith(key, context, value, abandoned);
  }

  /**
   * Versions a write this node coordinates as a stand-in: none of the key's replicas can be reached, so
   * it versions under `actor`, an actor used for this write alone (a stand-in does not keep the sets it
   * versions once it has delivered them, so its own actor's next dot for the key could be one it already
   * issued), reading the key as it holds it (its data and the hints it holds for the key: `held`) and
   * storing the result with `store` (a hint for the replica it stands in for). A failed store here does
   * not stop this replica from versioning: the actor is never used again.
   */
  versionStandIn(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    actor: Actor,
    held: () => Promise<StoredSibling[]>,
    store: (set: readonly StoredSibling[]) => Promise<void>,
    abandoned?: () => boolean,
  ): Promise<VersionResult> {
    assert(actor !== this.actor, () => `a stand-in write versioned under the node's own actor ${actor}`);
    return this.versionWith(key, context, value, abandoned, { actor, held, store });
  }

  private async versionWith(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    abandoned: (() => boolean) | undefined,
    standIn?: {
      readonly actor: Actor;
      readonly held: () => Promise<StoredSibling[]>;
      readonly store: (set: readonly StoredSibling[]) => Promise<void>;
    },
  ): Promise<VersionResult> {
    let cannot = this.cannotVersion;
    if (cannot !== undefined) throw cannot;
    let release: () => void;
    try {
      release = await this.lock.acquire(key);
    } catch (err) {
      if (err instanceof KeyLockOverloadedError)
        return { kind: "overloaded", limit: err.limit, max: err.max };
      throw err;
    }
    // The key stays locked past this call only when a set is being stored: every other way out frees it.
    let storing = false;
    try {
      cannot = this.cannotVersion;
      if (cannot !== undefined) throw cannot;
      if (abandoned?.() === true) return { kind: "abandoned" };
      const own = await this.read(key);
      const current = standIn === undefined ? own : merge(own, await standIn.held());
      cannot = this.cannotVersion;
      if (cannot !== undefined) throw cannot;
      const actor = standIn?.actor ?? this.actor;
      // The node's own actor counts on from its node-wide counter; a stand-in's actor is used once.
      let counter: number | undefined;
      if (standIn === undefined) {
        const c = this.counters.next(nextCounter(current, context, actor));
        counter = typeof c === "number" ? c : await c;
        cannot = this.cannotVersion;
        if (cannot !== undefined) throw cannot;
      }
      const { set, written } = update(current, context, actor, value, counter);
      assertFreshDot(current, context, actor, written.dot);
      if (set.length > this.maxSiblings)
        return { kind: "too_many_siblings", siblings: current.length, max: this.maxSiblings };
      // A stand-in's set is a hint, not this node's data: no tree of its own changes.
      const tree = standIn === undefined ? this.changes?.writeBegins(key, own, set) : undefined;
      const durable =
        standIn !== undefined
          ? standIn.store(set)
          : this.storage.put(DATA.encode(key), encodeSiblings(set)).catch((err: unknown) => {
              this.failure ??= new CannotVersionError(
                `a local write failed (${(err as Error)?.message ?? String(err)}); this node coordinates no more writes until it is restarted`,
                err,
              );
              throw err;
            });
      this.pending.add(durable);
      const settled = (ok: boolean) => {
        this.pending.delete(durable);
        this.changes?.writeEnds(tree, ok);
        release();
      };
      durable.then(
        () => settled(true),
        () => settled(false),
      );
      storing = true;
      return { kind: "ok", set, written, durable };
    } finally {
      if (!storing) release();
    }
  }

  /** `version`, resolving once the new set is durable here. */
  async coordinate(key: Uint8Array, context: VersionVector, value: StoredValue): Promise<CoordinateResult> {
    const res = await this.version(key, context, value);
    assert(res.kind !== "abandoned", "coordinate never abandons");
    if (res.kind === "ok") await res.durable;
    return res;
  }

  /**
   * The first failed local write of a versioned set, or the engine's own failure, if any. From then on
   * this replica versions nothing (its dots may have reached other replicas without reaching its own
   * disk), and the node keeps its running marker so that its next start takes a new actor.
   */
  get writeFailure(): Error | undefined {
    void this.cannotVersion; // notices an engine that failed on its own (a periodic sync)
    return this.failure;
  }

  /**
   * For a clean stop, before the storage engine closes: versions nothing more, and resolves once every
   * versioned set has been stored here or has failed (then `writeFailure` says so). Without it, a set
   * sent to other replicas could fail to store here after the node decided its stop was clean.
   */
  async seal(): Promise<void> {
    this.sealed ??= new CannotVersionError("this node is stopping; it coordinates no more writes");
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /**
   * For a clean stop, after `seal`: takes no more merges either (they fail with CannotVersionError), and
   * resolves once none is under way, so that nothing changes a stored set any more (the anti-entropy
   * trees saved next then match the data).
   */
  async close(): Promise<void> {
    await this.seal();
    this.closed = true;
    await this.lock.idle();
  }

  /**
   * Folds `incoming` into the stored set; returns the merged set. Writes only if something changed.
   * Rejects with KeyLockOverloadedError (ERR_OVERLOADED) at once if the key lock is full.
   */
  async merge(key: Uint8Array, incoming: readonly StoredSibling[]): Promise<StoredSibling[]> {
    return (await this.mergeChanged(key, incoming)).set;
  }

  /** `merge`, saying also whether the stored set changed (the incoming set held something new). */
  async mergeChanged(
    key: Uint8Array,
    incoming: readonly StoredSibling[],
  ): Promise<{ set: StoredSibling[]; changed: boolean }> {
    if (this.closed) throw new CannotVersionError("this node is stopping; it stores nothing more");
    return this.lock.run(key, async () => {
      if (this.closed) throw new CannotVersionError("this node is stopping; it stores nothing more");
      const current = await this.read(key);
      const merged = merge(current, incoming);
      assertMergeCovers(merged, current, incoming);
      const changed = !sameDots(current, merged);
      if (changed) {
        const tree = this.changes?.writeBegins(key, current, merged);
        let ok = false;
        try {
          await this.storage.put(DATA.encode(key), encodeSiblings(merged));
          ok = true;
        } finally {
          this.changes?.writeEnds(tree, ok);
        }
      }
      return { set: merged, changed };
    });
  }

  /**
   * Deletes the key's set if it is still exactly `agreed` (the same versions, all tombstones): the last
   * step of a tombstone purge, at each replica (tombstones.ts). Returns whether it deleted it; a set that
   * changed since (a write, a merge) stays. Under the key's lock and through the tree hook (the new set
   * is []), like every change of a stored set. Rejects with KeyLockOverloadedError at once if the key
   * lock is full.
   */
  async purgeIfEqual(key: Uint8Array, agreed: readonly StoredSibling[]): Promise<boolean> {
    assert(
      agreed.length > 0 && agreed.every((s) => s.value.deleted),
      () => `a purge of a set that is not all tombstones (${agreed.length} siblings)`,
    );
    if (this.closed) throw new CannotVersionError("this node is stopping; it stores nothing more");
    return this.lock.run(key, async () => {
      if (this.closed) throw new CannotVersionError("this node is stopping; it stores nothing more");
      const current = await this.read(key);
      if (!sameDots(current, agreed)) return false;
      const tree = this.changes?.writeBegins(key, current, []);
      let ok = false;
      try {
        await this.storage.delete(DATA.encode(key));
        ok = true;
      } finally {
        this.changes?.writeEnds(tree, ok);
      }
      return true;
    });
  }
}

/** Do two canonical sets hold the same versions (the same dots, in order)? */
export function sameDots(a: readonly StoredSibling[], b: readonly StoredSibling[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!.dot;
    const y = b[i]!.dot;
    if (x.actor !== y.actor || x.counter !== y.counter) return false;
  }
  return true;
}
