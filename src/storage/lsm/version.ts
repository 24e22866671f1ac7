/**
 * Versions: immutable sets of sorted runs, and the edits that move from one to the next.
 *
 * A sorted run is a list of tables with disjoint key ranges, ordered by key; within a run a key appears
 * at most once. Runs cover disjoint ranges of sequence numbers: a flush adds a run newer than every other,
 * and a compaction replaces a contiguous group of runs by one run covering their union. Runs are ordered
 * newest first, so a lookup takes the first hit. (See ARCHITECTURE.md, "Versions, flush and compaction".)
 *
 * A Version is what readers pin: while any reader holds a version, none of its tables is deleted.
 */
import { compareBytes } from "../bytes.js";

export interface TableMeta {
  readonly fileNumber: number;
  readonly size: number;
  readonly entries: number;
  readonly tombstones: number;
  readonly smallest: Buffer;
  readonly largest: Buffer;
}

export interface Run {
  readonly id: number;
  readonly minSeq: number;
  readonly maxSeq: number;
  readonly files: readonly TableMeta[];
  readonly bytes: number;
  readonly entries: number;
}

export interface VersionEdit {
  readonly logNumber?: number;
  readonly nextFileNumber?: number;
  readonly lastSequence?: number;
  readonly addRuns?: readonly Run[];
  readonly removeRuns?: readonly number[];
}

export function makeRun(id: number, minSeq: number, maxSeq: number, files: readonly TableMeta[]): Run {
  let bytes = 0;
  let entries = 0;
  for (const f of files) {
    bytes += f.size;
    entries += f.entries;
  }
  return { id, minSeq, maxSeq, files, bytes, entries };
}

export class Version {
  /** Readers and the engine's "current" hold count. */
  refs = 0;
  constructor(readonly runs: readonly Run[]) {}

  /** Applies an edit's run changes, giving the next version. */
  apply(edit: VersionEdit): Version {
    const removed = new Set(edit.removeRuns ?? []);
    const runs = this.runs.filter((r) => !removed.has(r.id));
    if (runs.length + removed.size !== this.runs.length)
      throw new Error("version edit removes a run that is not live");
    for (const r of edit.addRuns ?? []) runs.push(r);
    runs.sort((a, b) => b.maxSeq - a.maxSeq);
    for (let i = 1; i < runs.length; i++)
      if (runs[i]!.maxSeq >= runs[i - 1]!.minSeq)
        throw new Error("version has runs with overlapping sequence ranges");
    return new Version(runs);
  }

  fileNumbers(): number[] {
    const out: number[] = [];
    for (const r of this.runs) for (const f of r.files) out.push(f.fileNumber);
    return out;
  }

  /** An edit that rebuilds this version from nothing (the first record of a new manifest). */
  snapshotEdit(): VersionEdit {
    return { addRuns: this.runs };
  }
}

/** The table of `run` that may hold `key` (the first whose largest key >= key), if its range covers it. */
export function findTable(run: Run, key: Uint8Array): TableMeta | undefined {
  const files = run.files;
  let lo = 0;
  let hi = files.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareBytes(files[mid]!.largest, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  const f = files[lo];
  if (f === undefined || compareBytes(f.smallest, key) > 0) return undefined;
  return f;
}

/** Index of the first table of `run` whose largest key >= key. */
export function findTableIndex(run: Run, key: Uint8Array): number {
  const files = run.files;
  let lo = 0;
  let hi = files.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareBytes(files[mid]!.largest, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
