/**
 * Rebuilding trees from the data while writes go on (after an unclean stop, or when a saved tree is
 * missing or damaged): one scan of the replica's sets, in pages, builds the trees of every partition
 * being rebuilt at once. The data keyspace is ordered by user key and the partitions' keys are spread
 * all over it, so building one partition's tree costs a full scan anyway: one pass for all of them (4
 * KiB per tree) rather than a pass per partition. Between pages the driver yields (an injected
 * `yieldNow`), so requests keep being served.
 *
 * Writes during the rebuild. A page is read from its own snapshot (replication/replica.ts `scan`: the
 * engine's iterator takes it when called), and writes keep landing between and during pages. The
 * rebuilt tree must end up holding, for each key, the state of the last write begun on it (tree-set.ts:
 * trees run ahead of the disk by the writes in flight). With `cursor` the last key of the pages done:
 *
 *   - a write of a key at or before the cursor is applied to the rebuilt tree as to a live one
 *     (old -> new): the key's contribution is already in it;
 *   - a key after the cursor is taken from the page that covers it, except that the page's snapshot may
 *     miss a write in flight when the page started (begun, not yet visible) or begun while the page was
 *     being read. Those writes are tracked (`since`: the writes in flight at the page's start, and every
 *     write begun until the page is processed), and for such a key the page's state is replaced by the
 *     last such write's new state (or, if it failed, its old state). A key the page lacks but a tracked
 *     write created is added the same way. Writes that ended before the page started are in its snapshot.
 *
 * This needs two things of the integration, both in tree-set.ts's hook contract: the hook runs before the
 * engine write is issued and its end after it settles (so "in flight" covers the moment it becomes
 * visible), and `pageStarting` is called synchronously right before the page's scan call takes its
 * snapshot (`runRebuild` does). TreeSet tracks writes only while a rebuild runs (the write path pays
 * nothing for it otherwise), so the writes already in flight when a rebuild starts are not tracked: the
 * first page waits until they have ended (`quiet`), after which they are in its snapshot. test/anti-entropy/rebuild.test.ts checks the result against a
 * from-scratch build under random interleavings of writes, slow disks and pages.
 *
 * Bounded: `since` holds the writes in flight (bounded by the key lock) and those begun during one page
 * read; past REBUILD_TRACKED_MAX the rebuild is abandoned (the caller starts it again later) rather than
 * grow without limit.
 */
import { assert } from "../core/assert.js";
import { compareBytes } from "../storage/bytes.js";
import { decodeSiblings, ObjectDecodeError } from "../versioning/object-codec.js";
import { keyStateHash } from "./key-state.js";
import { PartitionTree } from "./tree.js";
import type { TreeWrite } from "./tree-set.js";

/** Writes tracked during one page: far above the key lock's 16,384 keys plus a page's worth of writes. */
export const REBUILD_TRACKED_MAX = 1 << 18;

/** One stored set as a replica's scan returns it (replication/replica.ts StoredEntry). */
export interface ScannedEntry {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** A replica's sets in pages (replication/replica.ts `Replica.scan` has this shape). */
export interface ScanSource {
  /**
   * The keys after `after` (from the first if undefined), ascending, at most `maxKeys`, ending also
   * once `maxBytes` are read; empty when the scan is done. Must take its snapshot synchronously, within
   * the call, before its first await.
   */
  scan(after: Uint8Array | undefined, maxKeys: number, maxBytes: number): Promise<readonly ScannedEntry[]>;
}

export interface RebuildPaging {
  /** Keys per page. */
  readonly pageKeys: number;
  /** Bytes (keys and values) per page. */
  readonly pageBytes: number;
  /** Gives the event loop back between pages (production: setImmediate; the simulator: a virtual tick). */
  readonly yieldNow: () => Promise<void>;
}

/** Defaults: pages of 1,000 keys or 1 MiB, a few milliseconds of work each. */
export const DEFAULT_REBUILD_PAGING = { pageKeys: 1000, pageBytes: 1024 * 1024 } as const;

export interface RebuildReport {
  /** done: the trees were adopted. abandoned: stopped (by `abandon`, a bound, or a failed scan). */
  readonly outcome: "done" | "abandoned";
  readonly reason: string | undefined;
  readonly partitions: number;
  readonly pages: number;
  /** Keys scanned in the rebuilt partitions. */
  readonly keys: number;
  /** Stored sets that failed to decode (counted as absent: a tree cannot hold what cannot be read). */
  readonly damaged: number;
}

/** What a rebuild needs of its TreeSet (tree-set.ts). */
export interface RebuildOwner {
  /** The writes in flight now (only once `quiet` has resolved). */
  inFlight(): Iterable<TreeWrite>;
  /** Resolves once every write begun before the rebuild started has ended. */
  quiet(): Promise<void>;
  finished(trees: readonly PartitionTree[]): void;
  abandoned(): void;
}

interface Tracked {
  readonly key: Uint8Array;
  readonly partition: number;
  hash: number;
}

export class TreeRebuild {
  private readonly trees = new Map<number, PartitionTree>();
  /** The last key of the pages done (a copy); undefined before the first. */
  private cursor: Uint8Array | undefined;
  private state: "between" | "reading" | "done" | "abandoned" = "between";
  private readonly since = new Map<string, Tracked>();
  private reason: string | undefined;
  pages = 0;
  keys = 0;
  damaged = 0;

  constructor(
    private readonly wanted: Set<number>,
    private readonly partitionOf: (key: Uint8Array) => number,
    private readonly owner: RebuildOwner,
  ) {
    for (const p of wanted) this.trees.set(p, new PartitionTree(p));
  }

  /** The partitions being rebuilt. */
  get partitions(): ReadonlySet<number> {
    return this.wanted;
  }

  get finished(): boolean {
    return this.state === "done" || this.state === "abandoned";
  }

  /** Resolves once the writes begun before the rebuild started have ended (the first page waits). */
  quiet(): Promise<void> {
    return this.owner.quiet();
  }

  /** The last key scanned (a copy), for the next page's `after`. */
  get after(): Uint8Array | undefined {
    return this.cursor;
  }

  report(): RebuildReport {
    return {
      outcome: this.state === "done" ? "done" : "abandoned",
      reason: this.reason,
      partitions: this.trees.size,
      pages: this.pages,
      keys: this.keys,
      damaged: this.damaged,
    };
  }

  // ---------------------------------------------------------------- writes (from TreeSet)

  /** A write of a rebuilt partition began (tree-set.ts writeBegins). */
  begun(w: TreeWrite): void {
    if (this.finished) return;
    if (this.passed(w.key)) this.trees.get(w.partition)?.updateSegment(w.segment, w.oldHash, w.newHash);
    else if (this.state === "reading") this.track(w.key, w.partition, w.newHash);
  }

  /** A write of a rebuilt partition failed (tree-set.ts writeEnds with ok false): take it back. */
  failed(w: TreeWrite): void {
    if (this.finished) return;
    if (this.passed(w.key)) this.trees.get(w.partition)?.updateSegment(w.segment, w.newHash, w.oldHash);
    else if (this.state === "reading") {
      const t = this.since.get(idOf(w.key));
      if (t !== undefined) t.hash = w.oldHash;
    }
  }

  /** The node no longer holds `partition`: stop rebuilding it. */
  forget(partition: number): void {
    this.wanted.delete(partition);
    this.trees.delete(partition);
    for (const [id, t] of this.since) if (t.partition === partition) this.since.delete(id);
  }

  /** Stops the rebuild; its partitions are left without a tree. */
  abandon(reason: string): void {
    if (this.finished) return;
    this.state = "abandoned";
    this.reason = reason;
    this.since.clear();
    this.owner.abandoned();
  }

  // ---------------------------------------------------------------- pages (from runRebuild)

  /** Call synchronously right before the scan call of the next page (after `after`). */
  pageStarting(): void {
    assert(this.state === "between", () => `a page starts while the rebuild is ${this.state}`);
    this.since.clear();
    for (const w of this.owner.inFlight())
      if (this.wanted.has(w.partition) && !this.passed(w.key)) this.track(w.key, w.partition, w.newHash);
    if (this.state === "between") this.state = "reading";
  }

  /** The page read since `pageStarting` (empty: the scan is over, and the trees are adopted). */
  pageRead(entries: readonly ScannedEntry[]): void {
    if (this.state === "abandoned") return;
    assert(this.state === "reading", () => `a page read while the rebuild is ${this.state}`);
    this.pages++;
    let prev = this.cursor;
    for (const e of entries) {
      assert(
        prev === undefined || compareBytes(prev, e.key) < 0,
        "a rebuild page is not ascending after the last key scanned",
      );
      prev = e.key;
      const partition = this.partitionOf(e.key);
      const tree = this.trees.get(partition);
      if (tree === undefined) continue;
      this.keys++;
      const id = idOf(e.key);
      const t = this.since.get(id);
      let hash: number;
      if (t !== undefined) {
        hash = t.hash;
        this.since.delete(id);
      } else hash = this.stateHash(e);
      if (hash !== 0) tree.update(e.key, 0, hash);
    }
    const last = entries.length === 0 ? undefined : Buffer.from(entries[entries.length - 1]!.key);
    // Keys the page's snapshot did not hold but a tracked write made (only up to the page's end: keys
    // after it belong to the pages to come, whose snapshots are taken later).
    for (const t of this.since.values())
      if (last === undefined || compareBytes(t.key, last) <= 0)
        if (t.hash !== 0) this.trees.get(t.partition)?.update(t.key, 0, t.hash);
    this.since.clear();
    if (last === undefined) {
      this.state = "done";
      this.owner.finished([...this.trees.values()]);
    } else {
      this.cursor = last;
      this.state = "between";
    }
  }

  private stateHash(e: ScannedEntry): number {
    try {
      return keyStateHash(e.key, decodeSiblings(e.value));
    } catch (err) {
      if (!(err instanceof ObjectDecodeError)) throw err;
      this.damaged++;
      return 0;
    }
  }

  /** Is `key` at or before the cursor (its contribution is in the rebuilt tree already)? */
  private passed(key: Uint8Array): boolean {
    return this.state === "done" || (this.cursor !== undefined && compareBytes(key, this.cursor) <= 0);
  }

  private track(key: Uint8Array, partition: number, hash: number): void {
    const id = idOf(key);
    const t = this.since.get(id);
    if (t !== undefined) {
      t.hash = hash;
      return;
    }
    if (this.since.size >= REBUILD_TRACKED_MAX) {
      this.abandon(`more than ${REBUILD_TRACKED_MAX} writes landed during one page`);
      return;
    }
    this.since.set(id, { key: Buffer.from(key), partition, hash });
  }
}

function idOf(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
}

/**
 * Runs `rebuild` to its end over `source` (a Replica), a page at a time, yielding between pages.
 * A failed scan abandons the rebuild and rethrows.
 */
export async function runRebuild(
  rebuild: TreeRebuild,
  source: ScanSource,
  paging: RebuildPaging,
): Promise<RebuildReport> {
  assert(paging.pageKeys >= 1 && paging.pageBytes >= 1, () => `rebuild pages of ${paging.pageKeys} keys`);
  // The writes begun before the rebuild started are not tracked: their outcome must be in the first
  // page's snapshot, so wait until they have ended.
  await rebuild.quiet();
  while (!rebuild.finished) {
    rebuild.pageStarting();
    if (rebuild.finished) break;
    let page: readonly ScannedEntry[];
    try {
      page = await source.scan(rebuild.after, paging.pageKeys, paging.pageBytes);
    } catch (err) {
      rebuild.abandon(`the scan failed: ${(err as Error)?.message ?? String(err)}`);
      throw err;
    }
    rebuild.pageRead(page);
    if (!rebuild.finished) await paging.yieldNow();
  }
  return rebuild.report();
}
