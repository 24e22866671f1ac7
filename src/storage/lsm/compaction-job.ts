/**
 * Writing sorted runs: the table-writing loop shared by flushes and compactions, and the compaction job
 * as a self-contained function of a FileSystem, so that it can run inline (memory file system, simulator)
 * or in a worker thread (the real disk: storage/compaction-worker.ts), where it does not compete with the
 * event loop that serves reads and writes.
 *
 * A job names its inputs (runs, by table metadata) and the file numbers its outputs may take (allocated
 * by the engine beforehand, one more than the inputs could ever need). It writes and syncs the output
 * tables and their directory entries, and returns their metadata; the engine alone records the result in
 * the manifest. Outputs of a job that fails or is abandoned are in no manifest: the next open removes them.
 */
import * as path from "node:path";
import type { FileSystem } from "../fs/file-system.js";
import { KIND_PUT } from "./batch-format.js";
import { BlockCache } from "./block-cache.js";
import { decodeOp, type OpView } from "./memtable.js";
import { MergingIterator, RunIterator, type SourceIterator } from "./merge.js";
import { TableBuilder } from "./table-builder.js";
import { TableCache, tableFileName } from "./table-cache.js";
import type { Run, TableMeta } from "./version.js";

export interface TableWriteOptions {
  readonly tableTargetBytes: number;
  readonly blockBytes: number;
  readonly bloomBitsPerKey: number;
  readonly tableWriteChunkBytes: number;
}

/** How often (in entry bytes) a paced job checks its pace, and what an entry costs beyond its bytes. */
const PACE_STEP_BYTES = 256 * 1024;
const ENTRY_OVERHEAD_BYTES = 8;

/** Meters a job's output: `consumed(total)` waits while the job is ahead of its allowed rate. */
export interface Pacer {
  consumed(totalBytes: number): Promise<void>;
}

/**
 * A pacer at the rate held in `rate[0]` (bytes per second, 0: unpaced), read at each step so that the
 * engine can change it while a job runs (a shared cell when the job is in a worker thread).
 */
export function ratePacer(
  rate: Float64Array,
  now: () => number,
  sleep: (ms: number) => Promise<void>,
): Pacer {
  let current = -1;
  let t0 = 0;
  let base = 0;
  return {
    async consumed(total: number): Promise<void> {
      const r = rate[0] ?? 0;
      if (r !== current) {
        // A new rate counts from here: what was written before is neither owed nor credited.
        current = r;
        t0 = now();
        base = total;
        return;
      }
      if (!(r > 0)) return;
      const dueMs = ((total - base) / r) * 1000;
      const ahead = dueMs - (now() - t0);
      if (ahead >= 1) await sleep(ahead);
    },
  };
}

/**
 * Writes the entries of `source` (already positioned) into tables of about tableTargetBytes, dropping
 * tombstones if asked; syncs each table and then the directory. Closes the source.
 */
export async function writeRunTables(
  fs: FileSystem,
  dir: string,
  source: SourceIterator,
  dropTombstones: boolean,
  o: TableWriteOptions,
  nextFileNumber: () => number,
  pace?: Pacer,
): Promise<TableMeta[]> {
  const out: TableMeta[] = [];
  /** Bytes of entries handed to builders so far (what the pacer meters). */
  let added = 0;
  let nextPace = PACE_STEP_BYTES;
  let builder: TableBuilder | undefined;
  let fileNumber = 0;
  const finish = async () => {
    const built = await builder!.finish();
    out.push({ fileNumber, ...built });
    builder = undefined;
  };
  try {
    while (source.valid) {
      if (!(dropTombstones && source.kind !== KIND_PUT)) {
        if (builder === undefined) {
          fileNumber = nextFileNumber();
          const file = await fs.create(path.join(dir, tableFileName(fileNumber)));
          builder = new TableBuilder(file, {
            blockBytes: o.blockBytes,
            bloomBitsPerKey: o.bloomBitsPerKey,
            drainBytes: o.tableWriteChunkBytes,
          });
        }
        builder.add(source.key, source.kind, source.value);
        if (pace !== undefined) {
          added += source.key.length + source.value.length + ENTRY_OVERHEAD_BYTES;
          if (added >= nextPace) {
            nextPace = added + PACE_STEP_BYTES;
            await pace.consumed(added);
          }
        }
        if (builder.pendingBytes >= o.tableWriteChunkBytes) await builder.drainIfNeeded();
        if (builder.estimatedSize >= o.tableTargetBytes) await finish();
      }
      const r = source.next();
      if (r !== undefined) await r;
    }
    if (builder !== undefined) await finish();
  } finally {
    source.close?.();
  }
  if (out.length > 0) await fs.syncDir(dir);
  return out;
}

export interface CompactionJob {
  readonly dir: string;
  /** Input runs, newest first (the merge keeps the newest version of each key). */
  readonly inputs: readonly Run[];
  /** True when the inputs include the oldest run: nothing older can hold what a tombstone deletes. */
  readonly dropTombstones: boolean;
  /** File numbers the outputs may use, in order. */
  readonly fileNumbers: readonly number[];
  readonly options: TableWriteOptions;
  readonly maxOpenTables: number;
  /** The pace of its writes, bytes per second in cell 0 (0: unpaced); the engine changes it as it goes. */
  readonly rate?: Float64Array;
  /**
   * Where the job reports how far it is: cell 0, the input entries merged so far (of the inputs' total,
   * shadowed versions and dropped tombstones included). Shared memory when the job runs in a worker.
   */
  readonly progress?: Float64Array;
}

export interface CompactionResult {
  readonly files: TableMeta[];
}

/**
 * A flush: the newest version of each key of a frozen memtable, written as tables. The memtable's chunks
 * are SharedArrayBuffers, so a worker thread reads the operations where they are; `order` (from
 * Memtable.latestOrder) names them in key order as (chunk, offset) pairs. The event loop's part of a flush
 * is that one walk over the tree's leaves.
 */
export interface FlushJob {
  readonly dir: string;
  readonly chunks: readonly Uint8Array[];
  readonly order: Float64Array<ArrayBuffer>;
  readonly count: number;
  /** True when no run exists: nothing older can hold what a tombstone deletes. */
  readonly dropTombstones: boolean;
  /** File numbers the outputs may use, in order. */
  readonly fileNumbers: readonly number[];
  readonly options: TableWriteOptions;
}

/** The operations a flush names, as a SourceIterator (views made on demand). */
class FlushSource implements SourceIterator {
  private i = -1;
  private readonly op: OpView = { kind: 0, keyOffset: 0, keyLength: 0, valueOffset: 0, valueLength: 0 };
  private buf: Buffer = Buffer.alloc(0);
  valid = false;
  private readonly chunks: Buffer[];

  constructor(
    chunks: readonly Uint8Array[],
    private readonly order: Float64Array<ArrayBuffer>,
    private readonly count: number,
  ) {
    // Structured clone turns Buffers into Uint8Arrays (over the same shared memory).
    this.chunks = chunks.map((u) =>
      Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength),
    );
  }

  get key(): Uint8Array {
    return this.buf.subarray(this.op.keyOffset, this.op.keyOffset + this.op.keyLength);
  }
  get value(): Uint8Array {
    return this.buf.subarray(this.op.valueOffset, this.op.valueOffset + this.op.valueLength);
  }
  get kind(): number {
    return this.op.kind;
  }

  seek(target: Uint8Array | undefined): void {
    if (target !== undefined) throw new Error("flush source: seek to a key is not supported");
    this.i = -1;
    this.next();
  }

  next(): void {
    this.i++;
    this.valid = this.i < this.count;
    if (!this.valid) return;
    const chunk = this.chunks[this.order[2 * this.i]! | 0];
    if (chunk === undefined) throw new Error("flush source: operation in an unknown chunk");
    this.buf = chunk;
    decodeOp(chunk, this.order[2 * this.i + 1]! | 0, this.op);
  }
}

/** How many output files a flush can need at most: the memtable's bytes over-estimate its tables'. */
export function flushFilesNeeded(memtableBytes: number, tableTargetBytes: number): number {
  return Math.ceil(memtableBytes / tableTargetBytes) + 1;
}

/** Runs a flush job against `fs`. */
export async function runFlush(fs: FileSystem, job: FlushJob): Promise<CompactionResult> {
  const source = new FlushSource(job.chunks, job.order, job.count);
  source.seek(undefined);
  let next = 0;
  const files = await writeRunTables(fs, job.dir, source, job.dropTombstones, job.options, () => {
    const n = job.fileNumbers[next++];
    if (n === undefined) throw new Error("flush: more output files than allocated");
    return n;
  });
  return { files };
}

export interface CompactionExecutor {
  run(job: CompactionJob): Promise<CompactionResult>;
  flush(job: FlushJob): Promise<CompactionResult>;
  /**
   * Gets ready for the first job (starts its threads); optional. Resolves once they can take a job; never
   * rejects (a thread that failed to start fails its first job).
   */
  warm?(): Promise<void>;
  close(): Promise<void>;
}

/** How many output files a job can need at most: its input bytes in tables of the target size, plus one. */
export function outputFilesNeeded(inputs: readonly Run[], tableTargetBytes: number): number {
  let bytes = 0;
  for (const r of inputs) bytes += r.bytes;
  return Math.ceil(bytes / tableTargetBytes) + inputs.reduce((n, r) => n + r.files.length, 0) + 1;
}

/** Runs a compaction job against `fs`. Inputs are read through their own small cache, never the engine's. */
export async function runCompaction(
  fs: FileSystem,
  job: CompactionJob,
  pace?: Pacer,
): Promise<CompactionResult> {
  const cache = new BlockCache(0, job.options.blockBytes);
  const stats = { bloomChecks: 0, bloomNegatives: 0, bloomFalsePositives: 0 };
  const tables = new TableCache(fs, job.dir, cache, stats, job.maxOpenTables, true);
  try {
    const merged = new MergingIterator(job.inputs.map((r) => new RunIterator(r, tables, false)));
    await merged.seek(undefined);
    const progress = job.progress;
    // Progress is noted at each pacing step (every 256 KiB written), paced or not.
    const stepPace: Pacer | undefined =
      progress === undefined
        ? pace
        : {
            consumed: (total) => {
              progress[0] = merged.consumed;
              return pace === undefined ? Promise.resolve() : pace.consumed(total);
            },
          };
    let next = 0;
    const files = await writeRunTables(
      fs,
      job.dir,
      merged,
      job.dropTombstones,
      job.options,
      () => {
        const n = job.fileNumbers[next++];
        if (n === undefined) throw new Error("compaction: more output files than allocated");
        return n;
      },
      stepPace,
    );
    if (progress !== undefined) progress[0] = merged.consumed;
    return { files };
  } finally {
    await tables.closeAll();
  }
}

/** Runs compactions on the calling thread (memory file system, simulator, or when workers are unwanted). */
export function inlineCompactionExecutor(fs: FileSystem): CompactionExecutor {
  return { run: (job) => runCompaction(fs, job), flush: (job) => runFlush(fs, job), close: async () => {} };
}
