/**
 * Size-tiered compaction: which runs to merge (a pure function), and writing a merged run.
 *
 * The picker follows the universal compaction of RocksDB, on sorted runs ordered newest first:
 * 1. Space: if the runs newer than the oldest hold at least maxSizeAmplificationPercent of its bytes,
 *    merge everything (this is also what purges tombstones: only a merge that includes the oldest run may
 *    drop them, since an older run could still hold the value they delete).
 * 2. Size ratio: starting at each run from the newest, extend the window while the next older run is at
 *    most (100 + sizeRatioPercent)% of the window's bytes; a window of minMergeWidth runs or more is merged.
 *    Each byte is so rewritten about log_minMergeWidth(total / memtable) times: write amplification stays
 *    low, which is what a write-heavy Dynamo replica needs.
 * 3. Count: with more than maxRunsBeforeForcedMerge runs, merge the newest ones regardless of size, which
 *    bounds read amplification.
 * Runs merged are always contiguous in age, so the merge keeps the newest version of each key.
 */
import type { LsmOptions } from "./options.js";
import type { Run } from "./version.js";

export interface CompactionPick {
  /** Indexes into the newest-first run list: a contiguous range [start, end). */
  readonly start: number;
  readonly end: number;
  readonly reason: "size-amplification" | "size-ratio" | "run-count";
}

export function pickCompaction(runs: readonly Run[], o: LsmOptions): CompactionPick | undefined {
  const n = runs.length;
  if (n < o.minMergeWidth) return undefined;
  const oldest = runs[n - 1]!;
  let newer = 0;
  for (let i = 0; i < n - 1; i++) newer += runs[i]!.bytes;
  if (newer * 100 >= o.maxSizeAmplificationPercent * oldest.bytes)
    return { start: 0, end: n, reason: "size-amplification" };
  for (let start = 0; start + o.minMergeWidth <= n; start++) {
    let sum = runs[start]!.bytes;
    let end = start + 1;
    while (end < n && runs[end]!.bytes * 100 <= sum * (100 + o.sizeRatioPercent)) {
      sum += runs[end]!.bytes;
      end++;
    }
    if (end - start >= o.minMergeWidth) return { start, end, reason: "size-ratio" };
  }
  if (n > o.maxRunsBeforeForcedMerge)
    return { start: 0, end: n - o.maxRunsBeforeForcedMerge + 1, reason: "run-count" };
  return undefined;
}
