/**
 * Every tunable and every bound of the LSM engine, with units in the names and the arithmetic behind the
 * defaults (as LevelDB's doc/impl.md writes it down).
 *
 * Memory, worst case, with the defaults: memtables (1 active + 2 immutable) x 8 MiB = 24 MiB, plus up to
 * one partly used 1 MiB group buffer each; block cache 32 MiB (8192 slots of 4 KiB) + a 64 KiB table of
 * recently missed blocks; pending writes 64 MiB; per open table the index (~1/150 of the data with 16-byte
 * keys and 100-byte values, plus 8 bytes per block for its prefix and 8 for its cache slot reference) and
 * the bloom filter (10 bits per key), so a 1 GiB store pins about 7 MiB + 11 MiB.
 *
 * Disk: size-tiered runs; with maxSizeAmplificationPercent 200 the live data takes at most about 3x the
 * bytes of the newest full copy during a full merge, and settles back to about 1x.
 *
 * Read amplification: a point lookup probes each memtable, then each run's one candidate table through its
 * bloom filter (1% false positives): with the cap of `stopWritesAtRuns` runs, at most ~24 filter probes and
 * in expectation 1 + 0.01 x runs block reads.
 */
export type Durability = "fsync" | "interval" | "none";

export interface LsmOptions {
  /**
   * One bound on the engine's memory, in bytes (0: none, and the sizes below apply as given). When set,
   * it decides memtableBytes, maxWriteGroupBytes, blockCacheBytes and maxPendingWriteBytes (giving any of
   * them too is an error): see memoryBudgetParts. Not counted: the open tables' indexes and filters
   * (maxOpenTables bounds them), the worker threads' heaps, and a single write larger than the queue's
   * part (admitted alone).
   */
  readonly memoryBudgetBytes: number;
  /** `fsync`: a write resolves once its WAL record is fsynced (group commit shares one fsync among
   * concurrent writers). `interval`: once written to the OS; fsync every `syncIntervalMs`. `none`: once
   * written to the OS (survives a process crash, not a power loss). */
  readonly durability: Durability;
  readonly syncIntervalMs: number;
  /** Size at which the active memtable is frozen and a flush starts. */
  readonly memtableBytes: number;
  /** Frozen memtables waiting for their flush; past this, writers wait (back-pressure). */
  readonly maxImmutableMemtables: number;
  /** Tables of a run are cut at about this size. */
  readonly tableTargetBytes: number;
  /** Data blocks are cut before this size; the block cache's slots have it. */
  readonly blockBytes: number;
  readonly bloomBitsPerKey: number;
  readonly blockCacheBytes: number;
  /** Table files kept open at once (each holds a file descriptor, its index and its filter). */
  readonly maxOpenTables: number;
  /** A compaction merges at least this many runs of similar size (the tiering fan-in). */
  readonly minMergeWidth: number;
  /** A run joins a merge if its size is at most (100 + this)% of the newer runs being merged. */
  readonly sizeRatioPercent: number;
  /** When the runs other than the oldest hold this % of the oldest's bytes, everything is merged. */
  readonly maxSizeAmplificationPercent: number;
  /** With more runs than this, the newest are merged even if their sizes differ. */
  readonly maxRunsBeforeForcedMerge: number;
  /** With this many runs, writers wait for compaction (back-pressure). */
  readonly stopWritesAtRuns: number;
  /**
   * Delayed writes (RocksDB's idea): from this many runs on, and once the unflushed memtables hold more
   * than `slowdownMemtableFraction` of what they may hold, each group commit waits a little before its
   * WAL write, longer as the debt nears the limit where writes would stop, so that the ingest rate meets
   * what flushes and compactions sustain instead of stopping at the limit. Needs timers (no delays
   * without). The rate is measured from the flushes (see WritePacer, lsm/write-pacer.ts).
   */
  readonly slowdownWritesAtRuns: number;
  readonly slowdownMemtableFraction: number;
  /** Longest delay one group commit takes (a debt that still grows meets the hard limits). */
  readonly maxWriteDelayMs: number;
  /**
   * Compaction writes are paced to this rate (bytes per second; 0: unpaced) while the runs are fewer than
   * `slowdownWritesAtRuns`, so that a merge does not take the CPU and the disk from flushes and writers in
   * bursts; from there on a merge runs at full speed to pay the debt. Flushes are never paced. At 64 MiB/s
   * the pace held merges below what a 1M-key overwrite load needed on two cores and cost throughput with
   * no gain in the tails (docs/performance.md, "no write stalls"): the default caps bursts only.
   */
  readonly compactionBytesPerSec: number;
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  /** Bytes of writes queued behind the WAL; past this, writers wait. */
  readonly maxPendingWriteBytes: number;
  /** Most bytes one group commit writes to the WAL at once. */
  readonly maxWriteGroupBytes: number;
  /** Buffered table bytes that trigger an append during a flush or compaction. */
  readonly tableWriteChunkBytes: number;
  /**
   * Read data blocks with a synchronous pread (default) rather than through the thread pool. Far faster
   * when the data is in the page cache (the usual case for a replica's working set); a read from the
   * device blocks the event loop meanwhile. Choose false for data much larger than memory on slow disks.
   */
  readonly syncReads: boolean;
  /**
   * In fsync mode, the WAL is preallocated with zeros in chunks of this size (0: off), so that each group
   * commit's fdatasync overwrites allocated blocks instead of committing a new file size, which about
   * halves its latency on ext4 (docs/performance.md, "first storage choices"). The zeros count as disk
   * writes in the statistics.
   */
  readonly walPreallocateBytes: number;
  /**
   * In fsync mode, the writer loop calls fdatasync synchronously, on the event loop, instead of through
   * libuv's thread pool. The event loop is blocked for each group commit's sync (the device's flush), and
   * while it is, new requests wait in the kernel and then join the next group (natural group commit); in
   * exchange each sync saves the thread-pool hand-off and its wake-ups. A cluster node turns it off
   * (node/node.ts). ARCHITECTURE.md ("Writes") says why; the measurements are in docs/performance.md,
   * "storage write path" and "WAL sync in a cluster node".
   */
  readonly walSyncOnEventLoop: boolean;
  /**
   * Take the memtable switch's file work off the writer's path: the next WAL is created once the memtable
   * is half full, and without fsync per write the WAL is synced in the background every MiB (see
   * ARCHITECTURE.md, "No write stalls"). The simulator turns it off: its fixed seeds were chosen under the
   * timing of the switch without it.
   */
  readonly walAhead: boolean;
}

export const DEFAULT_LSM_OPTIONS: LsmOptions = {
  memoryBudgetBytes: 0,
  durability: "fsync",
  syncIntervalMs: 100,
  memtableBytes: 8 * 1024 * 1024,
  maxImmutableMemtables: 2,
  tableTargetBytes: 32 * 1024 * 1024,
  blockBytes: 4096,
  bloomBitsPerKey: 10,
  blockCacheBytes: 32 * 1024 * 1024,
  maxOpenTables: 1000,
  minMergeWidth: 4,
  sizeRatioPercent: 100,
  maxSizeAmplificationPercent: 200,
  maxRunsBeforeForcedMerge: 12,
  stopWritesAtRuns: 24,
  slowdownWritesAtRuns: 20,
  slowdownMemtableFraction: 0.5,
  maxWriteDelayMs: 20,
  compactionBytesPerSec: 128 * 1024 * 1024,
  maxKeyBytes: 65535,
  maxValueBytes: 64 * 1024 * 1024,
  maxPendingWriteBytes: 64 * 1024 * 1024,
  maxWriteGroupBytes: 4 * 1024 * 1024,
  tableWriteChunkBytes: 1024 * 1024,
  syncReads: true,
  walPreallocateBytes: 1024 * 1024,
  walSyncOnEventLoop: true,
  walAhead: true,
};

/** What a memory budget allows each part of the engine (memoryBudgetBytes). */
export interface MemoryBudgetParts {
  /** The active and frozen memtables together, each up to memtableBytes plus one write group. */
  readonly memtablesBytes: number;
  readonly blockCacheBytes: number;
  /** Writes queued behind the WAL (maxPendingWriteBytes). */
  readonly pendingWritesBytes: number;
}

/** The smallest budget: the memtables need room for a few write groups each. */
export const MIN_MEMORY_BUDGET_BYTES = 4 * 1024 * 1024;

/**
 * The split of a memory budget: 3/8 memtables (writes absorbed while flushes run), 3/8 block cache (the
 * read working set), 1/4 the write queue (bursts of writers beyond what one group commit takes). With
 * the defaults' 120 MiB (24 + 32 + 64) the queue had the most; the split favours what flushes and reads use.
 */
export function memoryBudgetParts(budgetBytes: number): MemoryBudgetParts {
  const memtablesBytes = Math.floor((budgetBytes * 3) / 8);
  const blockCacheBytes = Math.floor((budgetBytes * 3) / 8);
  return {
    memtablesBytes,
    blockCacheBytes,
    pendingWritesBytes: budgetBytes - memtablesBytes - blockCacheBytes,
  };
}

const BUDGETED: readonly (keyof LsmOptions)[] = [
  "memtableBytes",
  "maxWriteGroupBytes",
  "blockCacheBytes",
  "maxPendingWriteBytes",
];

/** The sizes a budget decides (see memoryBudgetParts). */
function budgeted(o: LsmOptions): LsmOptions {
  const b = o.memoryBudgetBytes;
  if (typeof b !== "number" || !Number.isFinite(b) || b < 0)
    throw new RangeError(`lsm option memoryBudgetBytes must be a size in bytes, got ${String(b)}`);
  if (b === 0) return o;
  if (b < MIN_MEMORY_BUDGET_BYTES)
    throw new RangeError(`memoryBudgetBytes must be at least ${MIN_MEMORY_BUDGET_BYTES} (4 MiB), got ${b}`);
  const parts = memoryBudgetParts(b);
  // Each memtable may pass memtableBytes by one write group (it is frozen at the next group): both fit.
  const perMemtable = Math.floor(parts.memtablesBytes / (1 + o.maxImmutableMemtables));
  const maxWriteGroupBytes = Math.min(DEFAULT_LSM_OPTIONS.maxWriteGroupBytes, Math.floor(perMemtable / 8));
  return {
    ...o,
    memtableBytes: perMemtable - maxWriteGroupBytes,
    maxWriteGroupBytes,
    blockCacheBytes: parts.blockCacheBytes,
    maxPendingWriteBytes: parts.pendingWritesBytes,
  };
}

export function resolveLsmOptions(partial: Partial<LsmOptions> = {}): LsmOptions {
  if ((partial.memoryBudgetBytes ?? 0) !== 0)
    for (const k of BUDGETED)
      if (partial[k] !== undefined)
        throw new RangeError(`give memoryBudgetBytes or ${k}, not both (the budget decides ${k})`);
  let o: LsmOptions = budgeted({ ...DEFAULT_LSM_OPTIONS, ...partial });
  // A lower stop limit given alone brings the default slowdown point down with it.
  if (partial.slowdownWritesAtRuns === undefined && o.slowdownWritesAtRuns > o.stopWritesAtRuns)
    o = { ...o, slowdownWritesAtRuns: o.stopWritesAtRuns };
  const positive: (keyof LsmOptions)[] = [
    "syncIntervalMs",
    "memtableBytes",
    "maxImmutableMemtables",
    "tableTargetBytes",
    "blockBytes",
    "bloomBitsPerKey",
    "maxOpenTables",
    "maxKeyBytes",
    "maxPendingWriteBytes",
    "maxWriteGroupBytes",
    "tableWriteChunkBytes",
  ];
  for (const k of positive) {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
      throw new RangeError(`lsm option ${k} must be positive, got ${String(v)}`);
  }
  if (!["fsync", "interval", "none"].includes(o.durability))
    throw new RangeError(`unknown durability ${o.durability}`);
  if (o.maxKeyBytes > 65535)
    throw new RangeError("maxKeyBytes is at most 65535 (tables store key lengths in 16 bits)");
  if (o.minMergeWidth < 2) throw new RangeError("minMergeWidth must be at least 2");
  if (o.stopWritesAtRuns <= o.maxRunsBeforeForcedMerge)
    throw new RangeError("stopWritesAtRuns must exceed maxRunsBeforeForcedMerge");
  if (o.blockCacheBytes < 0 || o.maxValueBytes < 0) throw new RangeError("sizes cannot be negative");
  if (o.slowdownWritesAtRuns < 1 || o.slowdownWritesAtRuns > o.stopWritesAtRuns)
    throw new RangeError("slowdownWritesAtRuns must be in 1..stopWritesAtRuns");
  if (!(o.slowdownMemtableFraction > 0 && o.slowdownMemtableFraction <= 1))
    throw new RangeError("slowdownMemtableFraction must be in (0, 1]");
  if (!(o.maxWriteDelayMs >= 0) || !(o.compactionBytesPerSec >= 0))
    throw new RangeError("maxWriteDelayMs and compactionBytesPerSec cannot be negative");
  return o;
}
