/**
 * The volatile engine: the same contract as the LSM engine, held in one multi-version skip list.
 * For tests and the simulator. Old versions are kept while iterators (snapshots) may need them and
 * dropped by a rebuild once garbage outweighs live data and no iterator is open.
 */
import { compareBytes } from "./bytes.js";
import {
  type EngineStats,
  type Entry,
  MANUAL_COMPACTION_IDLE,
  type ManualCompactionProgress,
  type ManualCompactionStart,
  type RangeOptions,
  rejectingIterator,
  SnapshotIterator,
  type StorageEngine,
  type WriteOp,
} from "./engine.js";
import { InvalidArgumentError, StorageClosedError } from "./errors.js";
import { KIND_DELETE, KIND_PUT } from "./lsm/batch-format.js";
import { Memtable, type MemtableIterator } from "./lsm/memtable.js";

export interface MemoryEngineOptions {
  readonly maxKeyBytes?: number;
  readonly maxValueBytes?: number;
  /** The clock of compactAll's times (default Date.now). */
  readonly now?: () => number;
}

export class MemoryEngine implements StorageEngine {
  readonly kind = "memory" as const;
  /** It has no I/O to fail. */
  readonly failure = undefined;
  private table = new Memtable(0);
  private seq = 0;
  private openIterators = 0;
  private liveAfterRebuild = 0;
  private userBytes = 0;
  private closed = false;
  private manualCompactions = 0;
  private lastCompaction: ManualCompactionProgress = MANUAL_COMPACTION_IDLE;
  private readonly maxKeyBytes: number;
  private readonly maxValueBytes: number;
  private readonly now: () => number;

  constructor(options: MemoryEngineOptions = {}) {
    this.maxKeyBytes = options.maxKeyBytes ?? 65535;
    this.maxValueBytes = options.maxValueBytes ?? 64 * 1024 * 1024;
    this.now = options.now ?? Date.now;
  }

  private checkKey(key: unknown): asserts key is Uint8Array {
    if (!(key instanceof Uint8Array)) throw new InvalidArgumentError("key must be a Uint8Array");
    if (key.length === 0) throw new InvalidArgumentError("key must not be empty");
    if (key.length > this.maxKeyBytes)
      throw new InvalidArgumentError(`key of ${key.length} bytes exceeds the limit of ${this.maxKeyBytes}`);
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.closed) throw new StorageClosedError();
    this.checkKey(key);
    const e = this.table.get(key, this.seq);
    return e !== undefined && e.kind === KIND_PUT ? Buffer.from(e.value) : undefined;
  }

  put(key: Uint8Array, value: Uint8Array): Promise<void> {
    return this.write([{ kind: "put", key, value }]);
  }

  delete(key: Uint8Array): Promise<void> {
    return this.write([{ kind: "delete", key }]);
  }

  async write(ops: readonly WriteOp[]): Promise<void> {
    if (this.closed) throw new StorageClosedError();
    if (!Array.isArray(ops)) throw new InvalidArgumentError("write expects an array of operations");
    for (const op of ops) {
      if (op === null || typeof op !== "object")
        throw new InvalidArgumentError("operation must be an object");
      this.checkKey(op.key);
      if (op.kind === "put") {
        if (!(op.value instanceof Uint8Array)) throw new InvalidArgumentError("value must be a Uint8Array");
        if (op.value.length > this.maxValueBytes)
          throw new InvalidArgumentError(
            `value of ${op.value.length} bytes exceeds the limit of ${this.maxValueBytes}`,
          );
      } else if (op.kind !== "delete") {
        throw new InvalidArgumentError(`unknown operation kind ${String((op as { kind: unknown }).kind)}`);
      }
    }
    for (const op of ops) {
      const value = op.kind === "put" ? Buffer.from(op.value) : Buffer.alloc(0);
      this.table.add(Buffer.from(op.key), ++this.seq, op.kind === "put" ? KIND_PUT : KIND_DELETE, value);
      this.userBytes += op.key.length + value.length;
    }
    this.maybeRebuild();
  }

  private maybeRebuild(): void {
    if (this.openIterators > 0 || this.table.entries < 2 * this.liveAfterRebuild + 1024) return;
    this.rebuild();
  }

  /** Keeps only each key's newest live version. An open iterator keeps reading the table it started on. */
  private rebuild(): void {
    const next = new Memtable(0);
    const it = this.table.iterator(this.seq);
    let live = 0;
    for (it.seek(undefined); it.valid; it.next()) {
      if (it.kind !== KIND_PUT) continue;
      next.add(it.key, this.seq, KIND_PUT, it.value);
      live++;
    }
    this.table = next;
    this.liveAfterRebuild = live;
  }

  /**
   * The memory engine's full compaction is its rebuild, done at once: old versions and tombstones
   * dropped. It has no tables: the figures before and after are zero, the entries are the versions.
   */
  compactAll(): ManualCompactionStart {
    if (this.closed) throw new StorageClosedError();
    const at = this.now();
    const entries = this.table.entries;
    this.rebuild();
    this.manualCompactions++;
    this.lastCompaction = {
      ...MANUAL_COMPACTION_IDLE,
      state: "done",
      startedAt: at,
      finishedAt: at,
      entriesTotal: entries,
      entriesDone: entries,
      runsAfter: 0,
      tablesAfter: 0,
      bytesAfter: 0,
    };
    return { started: true, progress: this.lastCompaction, done: Promise.resolve(this.lastCompaction) };
  }

  compactionProgress(): ManualCompactionProgress {
    return this.lastCompaction;
  }

  /** Takes the snapshot now, at the call (a generator body would only run at the first `next()`). */
  iterate(range: RangeOptions = {}): AsyncIterableIterator<Entry> {
    if (this.closed) return new SnapshotIterator(rejectingIterator(new StorageClosedError()), () => {});
    const it = this.table.iterator(this.seq);
    this.openIterators++;
    return new SnapshotIterator(this.scan(it, range), () => {
      this.openIterators--;
    });
  }

  private async *scan(it: MemtableIterator, range: RangeOptions): AsyncGenerator<Entry, void, undefined> {
    {
      it.seek(range.gte ?? range.gt);
      if (range.gt !== undefined && range.gte === undefined)
        while (it.valid && compareBytes(it.key, range.gt) === 0) it.next();
      let left = range.limit ?? Number.POSITIVE_INFINITY;
      while (it.valid && left > 0) {
        const k = it.key;
        if (range.lt !== undefined && compareBytes(k, range.lt) >= 0) break;
        if (range.lte !== undefined && compareBytes(k, range.lte) > 0) break;
        if (it.kind === KIND_PUT) {
          left--;
          yield { key: Buffer.from(k), value: Buffer.from(it.value) };
          if (this.closed) throw new StorageClosedError();
        }
        it.next();
      }
    }
  }

  stats(): EngineStats {
    return {
      engine: "memory",
      userBytesWritten: this.userBytes,
      walBytesWritten: 0,
      tableBytesWritten: 0,
      diskBytesWritten: 0,
      writeAmplification: 0,
      levels: [],
      memtableBytes: this.table.bytes,
      immutableMemtables: 0,
      flushes: 0,
      compactions: 0,
      compactionBytesRead: 0,
      compactionBytesWritten: 0,
      bloomChecks: 0,
      bloomNegatives: 0,
      bloomFalsePositives: 0,
      blockCacheHits: 0,
      blockCacheMisses: 0,
      blockCacheBytes: 0,
      blockCacheCapacityBytes: 0,
      writeStalls: 0,
      writeStallMs: 0,
      immutableMemtableBytes: 0,
      pendingWriteBytes: 0,
      memoryBudgetBytes: 0,
      writeDelays: 0,
      writeDelayMs: 0,
      walSyncs: 0,
      tableDeleteFailures: 0,
      liveKeysEstimate: this.table.entries,
      sequence: this.seq,
      manualCompactions: this.manualCompactions,
      manualCompaction: this.lastCompaction,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
