/**
 * The storage engine contract: an ordered map from byte keys to byte values.
 *
 * Every replica of ringstore keeps its data in one `StorageEngine`. Two implementations satisfy this
 * contract and are tested by one conformance suite (test/storage/conformance.test.ts): `lsm` (durable, on
 * disk, the default) and `memory` (volatile, for tests and the simulator).
 *
 * Contract:
 * - Keys are 1..`maxKeyBytes` bytes, values 0..`maxValueBytes` bytes. The engine copies what it keeps:
 *   callers may reuse their buffers once a call returns or its promise settles.
 * - `write(ops)` is atomic: after a crash either every operation of the batch is present or none is.
 * - A write whose promise resolved is durable as the engine's durability mode promises (for `lsm` with
 *   `fsync`, on disk and fsynced). Writes are applied in the order they were called.
 * - A write is visible to `get` and new iterators once its promise resolves, never before: a reader never
 *   sees a write that a crash could still take away (in `fsync` mode).
 * - `iterate` reads one consistent snapshot, taken when it is called: writes made during the iteration are
 *   not seen, and nothing it returns disappears under it. The snapshot is held until the iteration ends,
 *   fails, or `return()` is called (a `for await` loop that breaks calls it): an iterator neither consumed
 *   to the end nor returned keeps its snapshot's files alive.
 */
import type { StorageError } from "./errors.js";

export type WriteOp =
  | { readonly kind: "put"; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly kind: "delete"; readonly key: Uint8Array };

export interface RangeOptions {
  /** Inclusive lower bound. */
  readonly gte?: Uint8Array;
  /** Exclusive lower bound. */
  readonly gt?: Uint8Array;
  /** Exclusive upper bound. */
  readonly lt?: Uint8Array;
  /** Inclusive upper bound. */
  readonly lte?: Uint8Array;
  /** Stop after this many entries. */
  readonly limit?: number;
}

export interface Entry {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

export interface LevelStats {
  /** Level (or sorted run) number; 0 is the newest. */
  readonly level: number;
  readonly tables: number;
  readonly bytes: number;
}

export interface EngineStats {
  readonly engine: "lsm" | "memory";
  /** Bytes of keys and values handed to put/delete/write. */
  readonly userBytesWritten: number;
  /** Bytes written to the write-ahead log. */
  readonly walBytesWritten: number;
  /** Bytes written to tables by flushes and compactions. */
  readonly tableBytesWritten: number;
  /** All bytes written to disk: WAL, tables and manifest. */
  readonly diskBytesWritten: number;
  /** diskBytesWritten / userBytesWritten (0 before any write). */
  readonly writeAmplification: number;
  readonly levels: readonly LevelStats[];
  readonly memtableBytes: number;
  readonly immutableMemtables: number;
  /** Bytes held by the frozen memtables waiting for their flush. */
  readonly immutableMemtableBytes: number;
  /** Bytes of writes queued behind the WAL. */
  readonly pendingWriteBytes: number;
  /** The engine's memory budget (0: none; see LsmOptions.memoryBudgetBytes). */
  readonly memoryBudgetBytes: number;
  readonly flushes: number;
  readonly compactions: number;
  readonly compactionBytesRead: number;
  readonly compactionBytesWritten: number;
  /** Bloom filter probes, probes that ruled a table out, and probes that said "maybe" wrongly. */
  readonly bloomChecks: number;
  readonly bloomNegatives: number;
  readonly bloomFalsePositives: number;
  readonly blockCacheHits: number;
  readonly blockCacheMisses: number;
  readonly blockCacheBytes: number;
  readonly blockCacheCapacityBytes: number;
  /** Times a writer had to wait for a flush or compaction, and the total wait. */
  readonly writeStalls: number;
  readonly writeStallMs: number;
  /** Group commits delayed while flushes or compactions were behind (delayed writes), and the total delay. */
  readonly writeDelays: number;
  readonly writeDelayMs: number;
  readonly walSyncs: number;
  /** Obsolete tables that could not be deleted (they are removed on the next open). */
  readonly tableDeleteFailures: number;
  readonly liveKeysEstimate: number;
  readonly sequence: number;
  /** Full compactions asked for (`compactAll`) since start, and the current or last one. */
  readonly manualCompactions: number;
  readonly manualCompaction: ManualCompactionProgress;
}

/**
 * A full compaction asked for (`StorageEngine.compactAll`): the memtables flushed, then every sorted run
 * merged into one (LevelDB's CompactRange over the whole key space).
 */
export interface ManualCompactionProgress {
  /** idle: none asked for since start. */
  readonly state: "idle" | "running" | "done" | "failed";
  /**
   * While running: `flush` (the memtables to tables), `wait` (for a background merge to end), `merge`.
   * Null otherwise.
   */
  readonly phase: "flush" | "wait" | "merge" | null;
  /** Milliseconds since the epoch; null while idle. */
  readonly startedAt: number | null;
  /** When it ended (done or failed). */
  readonly finishedAt: number | null;
  /** The store when it was asked for: sorted runs, tables and their bytes. */
  readonly runsBefore: number;
  readonly tablesBefore: number;
  readonly bytesBefore: number;
  /** The table bytes the merge reads (known once it starts merging; 0 before). */
  readonly bytesTotal: number;
  /** How much of `bytesTotal` is merged so far (estimated from the entries merged). */
  readonly bytesDone: number;
  /** Entries the merge reads, and how many it has read. */
  readonly entriesTotal: number;
  readonly entriesDone: number;
  /** bytesDone over the time since the merge started (0 before it). */
  readonly bytesPerSecond: number;
  /** The store when it ended (writes made meanwhile may have added newer runs); null until then. */
  readonly runsAfter: number | null;
  readonly tablesAfter: number | null;
  readonly bytesAfter: number | null;
  /** Why it failed (a StorageError's code and message). */
  readonly error: { readonly code: string; readonly message: string } | null;
}

/** What `compactAll` answers: whether it started one, and the one that runs (this one or an earlier). */
export interface ManualCompactionStart {
  /** False when one was already running: no second one starts, `progress` and `done` are that one's. */
  readonly started: boolean;
  readonly progress: ManualCompactionProgress;
  /** Settles with its final progress (state done or failed); never rejects. */
  readonly done: Promise<ManualCompactionProgress>;
}

/** The progress of an engine that was never asked for a full compaction. */
export const MANUAL_COMPACTION_IDLE: ManualCompactionProgress = {
  state: "idle",
  phase: null,
  startedAt: null,
  finishedAt: null,
  runsBefore: 0,
  tablesBefore: 0,
  bytesBefore: 0,
  bytesTotal: 0,
  bytesDone: 0,
  entriesTotal: 0,
  entriesDone: 0,
  bytesPerSecond: 0,
  runsAfter: null,
  tablesAfter: null,
  bytesAfter: null,
  error: null,
};

export interface StorageEngine {
  readonly kind: "lsm" | "memory";
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  put(key: Uint8Array, value: Uint8Array): Promise<void>;
  delete(key: Uint8Array): Promise<void>;
  /** Applies all operations atomically, in order (a later op on the same key wins). */
  write(ops: readonly WriteOp[]): Promise<void>;
  /** Ordered (ascending) iteration over a snapshot taken now. Break out of the loop to stop early. */
  iterate(range?: RangeOptions): AsyncIterableIterator<Entry>;
  stats(): EngineStats;
  /**
   * Starts a full compaction in the background and answers at once: the memtables are flushed, then
   * every sorted run is merged into one (tables of the target size), dropping shadowed versions and
   * tombstones (the merge includes the oldest run). Paced as background merges are; reads and writes go
   * on meanwhile, and what they write lands in newer runs. One at a time: while one runs, another
   * request gets `started: false` and that one's progress. Throws a ReadOnlyError on a read-only engine,
   * a StorageClosedError once closed.
   */
  compactAll(): ManualCompactionStart;
  /** The current or last full compaction (the same as `stats().manualCompaction`). */
  compactionProgress(): ManualCompactionProgress;
  /**
   * The I/O error that put the engine in its failed state, if any: it takes no more writes, and writes it
   * acknowledged may not be durable (a failed periodic sync in durability "interval"). Stays set after
   * `close()`, which does not sync a failed engine.
   */
  readonly failure: StorageError | undefined;
  /** Waits for pending writes, flushes what is needed and releases files. Idempotent. */
  close(): Promise<void>;
}

/**
 * Wraps a generator that reads a snapshot so that the snapshot is released exactly once: at the end, on
 * an error, or on `return()` even before the first `next()` (an unstarted generator never runs its
 * `finally`).
 */
export class SnapshotIterator implements AsyncIterableIterator<Entry> {
  private released = false;
  constructor(
    private readonly inner: AsyncGenerator<Entry, void, undefined>,
    private readonly releaseFn: () => void,
  ) {}

  private release(): void {
    if (!this.released) {
      this.released = true;
      this.releaseFn();
    }
  }

  async next(): Promise<IteratorResult<Entry>> {
    try {
      const r = await this.inner.next();
      if (r.done) this.release();
      return r;
    } catch (err) {
      this.release();
      throw err;
    }
  }

  async return(): Promise<IteratorResult<Entry>> {
    try {
      await this.inner.return(undefined);
    } finally {
      this.release();
    }
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Entry> {
    return this;
  }
}

/** An iterator whose first `next()` rejects with `err`. */
export async function* rejectingIterator(err: Error): AsyncGenerator<Entry, void, undefined> {
  if (err !== undefined) throw err;
  yield* [];
}
