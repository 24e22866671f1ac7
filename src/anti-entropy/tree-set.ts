/**
 * A node's anti-entropy trees: one per partition it holds (tree.ts), kept up to date as writes land, and
 * the writes' way into them (and into a rebuild, rebuild.ts). Pure and synchronous: the node calls it.
 *
 * The write hook (what the integration must do). Every change of a key's stored set in the data
 * keyspace, whatever makes it (a coordinated write, a merge from replication, read repair, handoff or
 * anti-entropy, a purge or a removal), goes through
 *
 *   const w = trees.writeBegins(key, oldSet, newSet);   // under the key's lock, synchronously right
 *   storage.put(...)                                    //   before the engine write is issued
 *   ... once the engine write settles, still under the key's lock:
 *   trees.writeEnds(w, ok);                             // ok: it resolved; false: it failed
 *
 * `oldSet` is the set the write replaces ([] if none) and `newSet` the one it stores ([] for a removal).
 * The tree changes at `writeBegins`, so it runs ahead of the disk by the writes in flight (an exchange
 * tolerates that: it looks twice); a failed write is undone at `writeEnds`. Both calls being under the
 * key's lock means one key never has two writes in flight, which rebuild.ts and the undo rely on.
 * A write that skips the hook leaves the partition's tree wrong for good: exchanges then find segments
 * that differ without any key differing (exchange.ts `unexplainedSegments`), and only a rebuild fixes it.
 *
 * States of a partition: held with a tree (`tree(p)`), held but rebuilding (`rebuilding`; `tree(p)` is
 * undefined, so an exchange skips it), or not held (no tree: writes to it change nothing here).
 */
import { assert } from "../core/assert.js";
import type { Sibling } from "../versioning/dvv.js";
import { keyStateHash } from "./key-state.js";
import { TreeRebuild } from "./rebuild.js";
import { type PartitionTree, segmentOf, type TreeSource } from "./tree.js";

/** A write in flight, from writeBegins to writeEnds. Read-only for callers. */
export interface TreeWrite {
  readonly key: Uint8Array;
  readonly partition: number;
  readonly segment: number;
  readonly oldHash: number;
  readonly newHash: number;
  /** The TreeSet's rebuild generation when it began (writes begun before a rebuild are waited for). */
  readonly generation: number;
}

/**
 * Writes in flight at once: one per locked key at most, and the key lock holds at most 16,384 keys
 * (replication/key-lock.ts); the assertion catches a hook whose writeEnds is missing.
 */
export const TREE_WRITES_IN_FLIGHT_MAX = 1 << 20;

type VersionedSet = readonly Sibling<{ readonly deleted: boolean }>[];

export class TreeSet implements TreeSource {
  private readonly live = new Map<number, PartitionTree>();
  private inFlight = 0;
  private rebuild: TreeRebuild | undefined;
  /** Bumped by each rebuild: a write's generation says whether it began before the current one. */
  private generation = 0;
  /** While a rebuild runs: the writes begun since it started and not yet ended. */
  private tracked = new Set<TreeWrite>();
  /** While a rebuild runs: the writes begun before it started and not yet ended. */
  private untracked = 0;
  private quietWaiters: (() => void)[] = [];

  constructor(readonly partitionOf: (key: Uint8Array) => number) {}

  /** The partition's tree, if it is held and not being rebuilt. */
  tree(partition: number): PartitionTree | undefined {
    return this.live.get(partition);
  }

  /** Partitions with a tree, ascending. */
  get partitions(): number[] {
    return [...this.live.keys()].sort((a, b) => a - b);
  }

  /** Partitions being rebuilt, ascending. */
  get rebuilding(): number[] {
    return this.rebuild === undefined ? [] : [...this.rebuild.partitions].sort((a, b) => a - b);
  }

  /** The rebuild under way, if any. */
  get activeRebuild(): TreeRebuild | undefined {
    return this.rebuild;
  }

  /** Writes begun and not yet ended. */
  get writesInFlight(): number {
    return this.inFlight;
  }

  /**
   * Holds `tree` as its partition's (one loaded from its saved copy, or an empty one for a partition
   * taken on with no data). Only while no write to the partition is in flight: call it before the node
   * takes writes, or use a rebuild.
   */
  adopt(tree: PartitionTree): void {
    assert(
      this.rebuild?.partitions.has(tree.partition) !== true,
      () => `adopting a tree for partition ${tree.partition}, which is being rebuilt`,
    );
    this.live.set(tree.partition, tree);
  }

  /** The node no longer holds `partition`: its tree (or its rebuild) is dropped. */
  drop(partition: number): void {
    this.live.delete(partition);
    this.rebuild?.forget(partition);
  }

  /**
   * A key's stored set is about to change from `oldSet` to `newSet` (see the header: under the key's lock,
   * right before the engine write). Returns the write to pass to `writeEnds`, or undefined when the state
   * does not change (nothing to end).
   *
   * The write path's cost: two state hashes, the partition's and the segment's hashes, one segment
   * updated; no record of the writes in flight is kept unless a rebuild runs (bench/antientropy.ts
   * prices it).
   */
  writeBegins(key: Uint8Array, oldSet: VersionedSet, newSet: VersionedSet): TreeWrite | undefined {
    const oldHash = keyStateHash(key, oldSet);
    const newHash = keyStateHash(key, newSet);
    if (oldHash === newHash) return undefined;
    const partition = this.partitionOf(key);
    const w: TreeWrite = {
      key,
      partition,
      segment: segmentOf(key),
      oldHash,
      newHash,
      generation: this.generation,
    };
    assert(this.inFlight < TREE_WRITES_IN_FLIGHT_MAX, () => `${this.inFlight} tree writes in flight`);
    this.inFlight++;
    const tree = this.live.get(partition);
    if (tree !== undefined) tree.updateSegment(w.segment, oldHash, newHash);
    if (this.rebuild?.partitions.has(partition) === true) {
      this.tracked.add(w);
      if (tree === undefined) this.rebuild.begun(w);
    }
    return w;
  }

  /** The engine write of `w` settled: `ok` if it resolved. A failed write is taken back out of the tree. */
  writeEnds(w: TreeWrite | undefined, ok: boolean): void {
    if (w === undefined) return;
    assert(this.inFlight > 0, () => `a tree write ended that never began (partition ${w.partition})`);
    this.inFlight--;
    if (this.rebuild !== undefined) {
      if (w.generation === this.generation) this.tracked.delete(w);
      else if (this.untracked > 0 && --this.untracked === 0) this.wake();
    }
    if (ok) return;
    const tree = this.live.get(w.partition);
    if (tree !== undefined) tree.updateSegment(w.segment, w.newHash, w.oldHash);
    else if (this.rebuild?.partitions.has(w.partition) === true) this.rebuild.failed(w);
  }

  /**
   * Starts rebuilding the trees of `partitions` from the data (rebuild.ts `runRebuild` drives it): their
   * trees are dropped now and the rebuilt ones adopted when it ends. One rebuild at a time.
   */
  startRebuild(partitions: Iterable<number>): TreeRebuild {
    assert(this.rebuild === undefined, "a rebuild is already under way");
    const set = new Set(partitions);
    for (const p of set) this.live.delete(p);
    // Writes in flight now are not tracked: the rebuild's first page waits until they have ended.
    this.generation++;
    this.untracked = this.inFlight;
    this.tracked = new Set();
    const end = () => {
      this.rebuild = undefined;
      this.untracked = 0;
      this.tracked = new Set();
      this.wake();
    };
    const rebuild = new TreeRebuild(set, this.partitionOf, {
      inFlight: () => {
        assert(this.untracked === 0, () => `a rebuild page starts with ${this.untracked} writes untracked`);
        return this.tracked;
      },
      quiet: () =>
        this.untracked === 0
          ? Promise.resolve()
          : new Promise<void>((resolve) => this.quietWaiters.push(resolve)),
      finished: (trees) => {
        assert(this.rebuild === rebuild, "a rebuild finished that is not the set's");
        for (const t of trees) this.live.set(t.partition, t);
        end();
      },
      abandoned: () => {
        if (this.rebuild === rebuild) end();
      },
    });
    this.rebuild = rebuild;
    return rebuild;
  }

  private wake(): void {
    const waiters = this.quietWaiters;
    this.quietWaiters = [];
    for (const w of waiters) w();
  }
}
