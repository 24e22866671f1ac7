/**
 * The LSM-tree storage engine: WAL + memtable + size-tiered sorted runs of tables + manifest.
 *
 * Write path (one writer loop, LevelDB's writer queue): a write is encoded into a WAL record at once and
 * queued. The loop takes every queued record (up to maxWriteGroupBytes), gives them sequence numbers,
 * appends them to the WAL in one write, fsyncs once for the whole group (group commit), then applies them
 * to the memtable in order and resolves their promises. So a write is visible only once it is durable.
 *
 * Read path: active memtable, frozen memtables (newest first), then each sorted run newest first, through
 * its bloom filter and block index. The first version found wins; a tombstone means "absent".
 *
 * Background: a full memtable is frozen, a new WAL started, and the frozen one flushed to a new run; the
 * compaction picker (compaction.ts) merges runs. Each becomes real when its manifest edit is durable; the
 * files it replaced are deleted once no reader pins a version that holds them.
 *
 * Crash safety, by the order of effects: tables are synced and their directory entry made durable before
 * the manifest names them; a WAL is deleted only after the manifest records that its memtable is flushed;
 * on open, leftovers (tables no manifest names, old WALs, old manifests) are removed.
 *
 * Errors: a failed WAL or manifest write puts the engine in a failed state (it cannot know what reached
 * the disk); every later write fails with that error, reads go on. Reopening recovers.
 *
 * Read-only open (`openReadOnly`, for inspection): the same recovery reads, and no write of any kind. It
 * creates no directory and no file, takes a shared hold of the lock (refused while a writer has the
 * directory), replays the WALs into memtables kept in memory (a torn tail is skipped as on recovery,
 * corruption fails the open), and never flushes, compacts, writes a manifest, renames or deletes.
 */
import * as path from "node:path";
import type { Timers } from "../../runtime/runtime.js";
import { compareBytes, varintLength } from "../bytes.js";
import {
  type EngineStats,
  type Entry,
  type LevelStats,
  MANUAL_COMPACTION_IDLE,
  type ManualCompactionProgress,
  type ManualCompactionStart,
  type RangeOptions,
  rejectingIterator,
  SnapshotIterator,
  type StorageEngine,
  type WriteOp,
} from "../engine.js";
import {
  CorruptionError,
  InvalidArgumentError,
  NoStoreError,
  ReadOnlyError,
  StorageClosedError,
  StorageError,
  StorageIoError,
} from "../errors.js";
import type { FileSystem, WritableFile } from "../fs/file-system.js";
import {
  BATCH_BODY_OFFSET,
  type DecodedOp,
  decodeBatchPayload,
  encodeBatchOps,
  KIND_PUT,
  sealGroupRecord,
} from "./batch-format.js";
import { BlockCache } from "./block-cache.js";
import { bloomHash } from "./bloom.js";
import { pickCompaction } from "./compaction.js";
import {
  type CompactionExecutor,
  flushFilesNeeded,
  inlineCompactionExecutor,
  outputFilesNeeded,
  writeRunTables,
} from "./compaction-job.js";
import {
  encodeLogFileHeader,
  LOG_RECORD_MAX_PAYLOAD_BYTES,
  parseLogFile,
  RECORD_TYPE_BATCH,
  WAL_MAGIC,
} from "./log-format.js";
import { CURRENT_FILE, ManifestWriter, readCurrent, readManifest } from "./manifest.js";
import { Memtable, sharedBuffer } from "./memtable.js";
import { MergingIterator, RunIterator, type SourceIterator } from "./merge.js";
import { type LsmOptions, resolveLsmOptions } from "./options.js";
import { TableCache, tableFileName } from "./table-cache.js";
import type { ReadStats } from "./table-reader.js";
import { findTable, makeRun, type Run, type TableMeta, Version, type VersionEdit } from "./version.js";
import { type WriteDebt, WritePacer } from "./write-pacer.js";

export interface LsmEngineConfig {
  readonly dir: string;
  readonly fs: FileSystem;
  /** Where compactions run; by default inline, on `fs`. openStorage passes a worker thread for the disk. */
  readonly compactor?: CompactionExecutor;
  /** Needed for durability "interval" (the periodic fsync). */
  readonly timers?: Timers;
  readonly options?: Partial<LsmOptions>;
}

function walFileName(n: number): string {
  return `${String(n).padStart(6, "0")}.wal`;
}

const FILE_NAME = /^(\d{6,})\.(wal|sst)$/;
/** Size of the buffers writes are encoded into (a write larger than this gets a buffer of its own). */
const GROUP_BUFFER_BYTES = 1024 * 1024;
const MANIFEST_NAME = /^MANIFEST-(\d{6,})$/;

/** A queued write: its operations are encoded in `buf` up to `end`, in the group whose header is at `start`. */
interface PendingWrite {
  readonly buf: Buffer;
  readonly start: number;
  readonly end: number;
  readonly ops: number;
  /** Encoded bytes (what counts against maxPendingWriteBytes). */
  readonly bytes: number;
  readonly userBytes: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

class WalFile {
  constructor(
    readonly number: number,
    readonly file: WritableFile,
  ) {}
  dirty = false;
  /** Bytes appended since the last sync started (durability interval and none: see WAL_BYTES_PER_SYNC). */
  unsyncedBytes = 0;
}

/**
 * Without per-write fsync (durability interval and none), the WAL is synced in the background each time
 * this much was appended since the last sync (RocksDB's wal_bytes_per_sync): the sync a memtable switch
 * must make before the new WAL is used then has at most this much left to write, instead of a whole
 * memtable's worth, which stalled the writer behind it.
 */
const WAL_BYTES_PER_SYNC = 1024 * 1024;

/** A waitable condition: `wait()` resolves at the next `signal()`. */
class Signal {
  private waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }
  signal(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}

export class LsmEngine implements StorageEngine {
  readonly kind = "lsm" as const;
  /** Opened by openReadOnly: nothing is ever written, and `wal` and `manifest` stay unset. */
  readonly readOnly: boolean;
  private readonly o: LsmOptions;
  private readonly fs: FileSystem;
  private readonly dir: string;
  private readonly timers: Timers | undefined;
  /** A writer start is scheduled (startWriter). */
  private writerScheduled = false;
  private readonly blockCache: BlockCache;
  private readonly tables: TableCache;
  private readonly readStats: ReadStats = { bloomChecks: 0, bloomNegatives: 0, bloomFalsePositives: 0 };
  private readonly compactor: CompactionExecutor;
  private readonly pacer: WritePacer;
  /**
   * The pace of compaction writes, bytes per second (0: unpaced), in shared memory: a merge running in a
   * worker thread reads it as it goes, so that it speeds up as soon as the runs pile up.
   */
  private readonly compactionRate = new Float64Array(new SharedArrayBuffer(8));

  private mem!: Memtable;
  private imms: Memtable[] = [];
  private wal!: WalFile;
  private manifest!: ManifestWriter;
  private current!: Version;
  private readonly liveVersions = new Set<Version>();
  private nextFileNumber = 1;
  private lastSequence = 0;
  private visibleSequence = 0;
  private logNumber = 0;

  private readonly queue: PendingWrite[] = [];
  private queuedBytes = 0;
  private admissionWaiters = 0;
  private admissionTail: Promise<void> = Promise.resolve();
  private writerRunning = false;
  private readonly queueSpace = new Signal();
  private readonly writerIdle = new Signal();
  private readonly backgroundDone = new Signal();
  private flushTask: Promise<void> | undefined;
  /**
   * The next WAL, created (and its directory entry synced) ahead of the memtable switch that takes it, so
   * that the writer does not wait for two syncs at each switch. Empty until used; removed on close, and
   * replayed as empty (then removed) by the next open after a crash.
   */
  private spareWal: Promise<WalFile> | undefined;
  private compactionTask: Promise<void> | undefined;
  /** A full compaction (compactAll) waits for the compaction slot: background merges start none. */
  private holdCompactions = false;
  /** A full compaction asks the writer loop to freeze the active memtable at its next group. */
  private rollRequested = false;
  private readonly memtableRolled = new Signal();
  private manualCompactions = 0;
  /** The current or last full compaction; `manualMerge` holds its merge's live figures while it runs. */
  private manual: ManualCompactionProgress = MANUAL_COMPACTION_IDLE;
  private manualDone: Promise<ManualCompactionProgress> | undefined;
  private manualMerge:
    | {
        readonly cell: Float64Array;
        readonly entriesTotal: number;
        readonly bytesTotal: number;
        readonly startedAt: number;
      }
    | undefined;
  private manifestLock: Promise<void> = Promise.resolve();
  private syncTimer: { cancel(): void } | undefined;
  private syncInFlight: Promise<void> | undefined;
  private failed: StorageError | undefined;

  /** See StorageEngine.failure. */
  get failure(): StorageError | undefined {
    return this.failed;
  }
  /** Set by validate(): the batch payload length of the operations it checked. */
  private payloadLength = 0;
  /**
   * Writes are encoded straight into a group buffer, one after the other, behind room for the record
   * header and count of the group they join (`groupStart`, -1 when the next write starts a new group). The
   * writer loop seals the group in place, writes it to the WAL, and the memtable keeps the bytes there: one
   * copy of each key and value on the way in, and no object per write besides its promise.
   */
  private groupBuf: Buffer = Buffer.alloc(0);
  private groupEnd = 0;
  private groupStart = -1;
  private closed = false;
  private closing: Promise<void> | undefined;
  private unlock: (() => Promise<void>) | undefined;

  private counters = {
    userBytes: 0,
    walBytes: 0,
    tableBytes: 0,
    flushes: 0,
    compactions: 0,
    compactionBytesRead: 0,
    compactionBytesWritten: 0,
    writeStalls: 0,
    writeStallMs: 0,
    writeDelays: 0,
    writeDelayMs: 0,
    walSyncs: 0,
    deleteFailures: 0,
  };
  private manifestBytesBefore = 0;
  private readonly now: () => number;

  private constructor(config: LsmEngineConfig, now: () => number, readOnly: boolean) {
    this.readOnly = readOnly;
    this.o = resolveLsmOptions(config.options);
    if (this.o.durability === "interval" && config.timers === undefined)
      throw new InvalidArgumentError("durability 'interval' needs timers");
    this.fs = config.fs;
    this.dir = config.dir;
    this.timers = config.timers;
    this.now = now;
    this.blockCache = new BlockCache(this.o.blockCacheBytes, this.o.blockBytes);
    this.pacer = new WritePacer(this.o);
    this.compactor = config.compactor ?? inlineCompactionExecutor(config.fs);
    this.tables = new TableCache(
      this.fs,
      this.dir,
      this.blockCache,
      this.readStats,
      this.o.maxOpenTables,
      this.o.syncReads,
    );
  }

  /**
   * Opens (creating if needed) the engine in `config.dir`: recovers the manifest, replays the WALs into
   * a new run, and starts a new WAL and manifest. Fails with a CorruptionError naming the file and offset
   * if anything acknowledged cannot be read back intact. `now` is only used for stall-time statistics.
   */
  static async open(config: LsmEngineConfig, now: () => number = () => 0): Promise<LsmEngine> {
    const e = new LsmEngine(config, now, false);
    await e.fs.mkdirp(e.dir);
    e.unlock = await e.fs.lock(e.dir);
    // The worker threads start while the store recovers; it is open once they can take a flush, so that
    // the first writes do not share the cores with their start.
    const warming = e.compactor.warm?.();
    await e.recoverOrRelease();
    await warming;
    return e;
  }

  /**
   * Opens the store in `config.dir` for reading only, writing nothing (see the file comment). Fails with
   * a NoStoreError (ERR_NOT_FOUND) if the directory is missing or holds no store, a LockedError
   * (ERR_LOCKED) while a writer has it open, a CorruptionError as `open` does. Writes and `flush` fail
   * with a ReadOnlyError (ERR_READ_ONLY). `compactor` and `timers` are not used.
   */
  static async openReadOnly(config: LsmEngineConfig, now: () => number = () => 0): Promise<LsmEngine> {
    const e = new LsmEngine(config, now, true);
    let names: string[];
    try {
      names = await e.fs.readdir(e.dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new NoStoreError(e.dir, "no such directory", { cause: err });
      if (code === "ENOTDIR") throw new NoStoreError(e.dir, "not a directory", { cause: err });
      throw new StorageIoError(`cannot list ${e.dir}`, err);
    }
    if (!names.some((n) => n === CURRENT_FILE || FILE_NAME.test(n) || MANIFEST_NAME.test(n)))
      throw new NoStoreError(
        e.dir,
        "the directory holds no CURRENT, manifest, write-ahead log or table file",
      );
    e.unlock = await e.fs.lockShared(e.dir);
    await e.recoverOrRelease();
    return e;
  }

  private async recoverOrRelease(): Promise<void> {
    try {
      await this.recover();
    } catch (err) {
      await this.tables.closeAll();
      await this.compactor.close();
      await this.unlock?.();
      throw err;
    }
  }

  // ---------------------------------------------------------------- recovery

  private async recover(): Promise<void> {
    const names = await this.fs.readdir(this.dir);
    let maxSeen = 0;
    const wals: number[] = [];
    for (const name of names) {
      const m = FILE_NAME.exec(name) ?? MANIFEST_NAME.exec(name);
      if (m === null) continue;
      const n = Number(m[1]);
      maxSeen = Math.max(maxSeen, n);
      if (m[2] === "wal") wals.push(n);
    }
    let version = new Version([]);
    const manifestName = await readCurrent(this.fs, this.dir);
    if (manifestName !== undefined) {
      for (const edit of await readManifest(this.fs, this.dir, manifestName)) {
        try {
          version = version.apply(edit);
        } catch (err) {
          throw new CorruptionError(
            path.join(this.dir, manifestName),
            0,
            "edits do not form a valid history",
            { cause: err },
          );
        }
        if (edit.logNumber !== undefined) this.logNumber = edit.logNumber;
        if (edit.nextFileNumber !== undefined) this.nextFileNumber = edit.nextFileNumber;
        if (edit.lastSequence !== undefined) this.lastSequence = edit.lastSequence;
      }
    } else if (names.some((n) => FILE_NAME.test(n) && n.endsWith(".sst"))) {
      throw new CorruptionError(
        path.join(this.dir, "CURRENT"),
        0,
        "CURRENT is missing but table files are present",
      );
    }
    this.nextFileNumber = Math.max(this.nextFileNumber, maxSeen + 1);
    this.current = version;
    // The WAL the manifest's last edit names is deleted only after a later edit is durable. If it is gone,
    // an edit was lost (a damaged manifest tail taken for a torn one): refuse rather than lose its writes.
    if (manifestName !== undefined && this.logNumber > 0 && !wals.includes(this.logNumber))
      throw new CorruptionError(
        path.join(this.dir, manifestName),
        0,
        `the write-ahead log ${walFileName(this.logNumber)} the manifest needs is missing: a later manifest edit was lost`,
      );

    // Every table the manifest names must exist and pass its checks.
    for (const run of version.runs)
      for (const f of run.files) {
        const p = path.join(this.dir, tableFileName(f.fileNumber));
        if (!(await this.fs.exists(p)))
          throw new CorruptionError(p, 0, "table named by the manifest is missing");
        const r = await this.tables.acquire(f);
        this.tables.release(r.fileNumber);
      }

    // Replay the WALs the manifest still needs, oldest first, into memtables flushed as new runs (read-only:
    // kept in memory as frozen memtables, newest last, as the write path keeps them).
    const replay = wals.filter((n) => n >= this.logNumber).sort((a, b) => a - b);
    const addRuns: Run[] = [];
    const frozen: Memtable[] = [];
    let mem = new Memtable(0);
    for (const n of replay) {
      const p = path.join(this.dir, walFileName(n));
      const parsed = parseLogFile(p, await this.fs.readFile(p), WAL_MAGIC);
      for (const rec of parsed.records) {
        if (rec.type !== RECORD_TYPE_BATCH)
          throw new CorruptionError(p, rec.offset, `unexpected WAL record type ${rec.type}`);
        let ops: DecodedOp[];
        try {
          ops = decodeBatchPayload(rec.payload);
        } catch (err) {
          throw new CorruptionError(p, rec.offset, "malformed write batch", { cause: err });
        }
        // Checked: the operations go into the memtable in one copy of the payload.
        if (ops.length > 0) mem.addBatch(rec.payload, 4, rec.payload.length, ops.length, rec.sequence);
        if (ops.length > 0) this.lastSequence = Math.max(this.lastSequence, rec.sequence + ops.length - 1);
        if (mem.bytes >= this.o.memtableBytes) {
          if (this.readOnly) {
            frozen.push(mem);
          } else {
            const run = await this.writeMemtable(mem, version.runs.length === 0 && addRuns.length === 0);
            if (run) addRuns.push(run);
          }
          mem = new Memtable(0);
        }
      }
    }
    if (this.readOnly) {
      this.imms = frozen;
      this.mem = mem;
      this.visibleSequence = this.lastSequence;
      this.installVersion(version);
      return;
    }
    if (mem.entries > 0) {
      const run = await this.writeMemtable(mem, version.runs.length === 0 && addRuns.length === 0);
      if (run) addRuns.push(run);
    }
    if (addRuns.length > 0) this.current = version = version.apply({ addRuns });
    this.visibleSequence = this.lastSequence;

    // A new WAL, then a new manifest naming everything; only then are the old files garbage.
    const walNumber = this.nextFileNumber++;
    this.wal = await this.createWal(walNumber);
    this.mem = new Memtable(walNumber);
    this.logNumber = walNumber;
    const manifestNumber = this.nextFileNumber++;
    this.manifest = await ManifestWriter.create(this.fs, this.dir, manifestNumber, {
      ...version.snapshotEdit(),
      logNumber: this.logNumber,
      nextFileNumber: this.nextFileNumber,
      lastSequence: this.lastSequence,
    });
    this.installVersion(version);
    await this.removeLeftovers();
    this.armSyncTimer();
  }

  private async removeLeftovers(): Promise<void> {
    const live = new Set(this.current.fileNumbers());
    for (const name of await this.fs.readdir(this.dir)) {
      let remove = false;
      const m = FILE_NAME.exec(name);
      if (m !== null) {
        const n = Number(m[1]);
        remove = m[2] === "sst" ? !live.has(n) : n < this.logNumber;
      } else if (MANIFEST_NAME.test(name)) {
        remove = name !== this.manifest.name;
      } else if (name.endsWith(".tmp")) {
        remove = true;
      }
      if (remove) await this.fs.unlink(path.join(this.dir, name));
    }
    await this.fs.syncDir(this.dir);
  }

  private async createWal(n: number): Promise<WalFile> {
    const preallocateBytes = this.o.durability === "fsync" ? this.o.walPreallocateBytes : 0;
    const file = await this.fs.create(path.join(this.dir, walFileName(n)), { preallocateBytes });
    const header = encodeLogFileHeader(WAL_MAGIC, n);
    await file.append(header);
    await file.sync();
    await this.fs.syncDir(this.dir);
    this.counters.walBytes += header.length;
    return new WalFile(n, file);
  }

  // ---------------------------------------------------------------- writes

  put(key: Uint8Array, value: Uint8Array): Promise<void> {
    return this.write([{ kind: "put", key, value }]);
  }

  delete(key: Uint8Array): Promise<void> {
    return this.write([{ kind: "delete", key }]);
  }

  /** Checks the operations; returns their user bytes, and sets `payloadLength` to their batch payload's. */
  private validate(ops: readonly WriteOp[]): number {
    let bytes = 0;
    let payload = 4;
    if (!Array.isArray(ops)) throw new InvalidArgumentError("write expects an array of operations");
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      if (op === null || typeof op !== "object")
        throw new InvalidArgumentError("operation must be an object");
      if (!(op.key instanceof Uint8Array)) throw new InvalidArgumentError("key must be a Uint8Array");
      const klen = op.key.length;
      if (klen === 0) throw new InvalidArgumentError("key must not be empty");
      if (klen > this.o.maxKeyBytes)
        throw new InvalidArgumentError(`key of ${klen} bytes exceeds the limit of ${this.o.maxKeyBytes}`);
      bytes += klen;
      payload += 1 + (klen < 0x80 ? 1 : varintLength(klen)) + klen;
      if (op.kind === "put") {
        if (!(op.value instanceof Uint8Array)) throw new InvalidArgumentError("value must be a Uint8Array");
        const vlen = op.value.length;
        if (vlen > this.o.maxValueBytes)
          throw new InvalidArgumentError(
            `value of ${vlen} bytes exceeds the limit of ${this.o.maxValueBytes}`,
          );
        bytes += vlen;
        payload += (vlen < 0x80 ? 1 : varintLength(vlen)) + vlen;
      } else if (op.kind !== "delete") {
        throw new InvalidArgumentError(`unknown operation kind ${String((op as { kind: unknown }).kind)}`);
      }
    }
    this.payloadLength = payload;
    return bytes;
  }

  async write(ops: readonly WriteOp[]): Promise<void> {
    if (this.closed) throw new StorageClosedError();
    if (this.failed) throw this.failed;
    if (this.readOnly) throw new ReadOnlyError("write refused");
    const userBytes = this.validate(ops);
    if (ops.length === 0) return;
    if (this.payloadLength > LOG_RECORD_MAX_PAYLOAD_BYTES)
      throw new InvalidArgumentError(
        `a write of ${this.payloadLength} encoded bytes exceeds the WAL record limit of ${LOG_RECORD_MAX_PAYLOAD_BYTES}`,
      );
    const bytes = this.payloadLength - 4;
    if (this.admissionWaiters > 0 || this.queuedBytes + bytes > this.o.maxPendingWriteBytes) {
      // Wait in line: writers that had to wait are admitted first come, first served, so a small write
      // never overtakes an earlier large one (writes are applied in call order).
      this.admissionWaiters++;
      const prev = this.admissionTail;
      let admitted!: () => void;
      this.admissionTail = new Promise((r) => {
        admitted = r;
      });
      try {
        await prev;
        while (this.queuedBytes > 0 && this.queuedBytes + bytes > this.o.maxPendingWriteBytes) {
          if (this.closed) throw new StorageClosedError();
          if (this.failed) throw this.failed;
          await this.queueSpace.wait();
        }
        if (this.closed) throw new StorageClosedError();
        if (this.failed) throw this.failed;
        return this.enqueue(ops, bytes, userBytes);
      } finally {
        this.admissionWaiters--;
        admitted();
      }
    }
    return this.enqueue(ops, bytes, userBytes);
  }

  /**
   * Encodes the write into the group being formed (see `groupBuf`) and queues it. Synchronous up to the
   * returned promise, so writes are encoded, queued and grouped in call order.
   */
  private enqueue(ops: readonly WriteOp[], bytes: number, userBytes: number): Promise<void> {
    let start = this.groupStart;
    if (start >= 0 && this.groupEnd - start + bytes > this.o.maxWriteGroupBytes) start = -1;
    const need = bytes + (start < 0 ? BATCH_BODY_OFFSET : 0);
    if (this.groupEnd + need > this.groupBuf.length) {
      this.groupBuf = sharedBuffer(Math.max(GROUP_BUFFER_BYTES, bytes + BATCH_BODY_OFFSET));
      this.groupEnd = 0;
      start = -1;
    }
    if (start < 0) {
      // A new group: room for its record header and count, written when the writer loop takes it.
      start = this.groupEnd;
      this.groupEnd += BATCH_BODY_OFFSET;
    }
    this.groupStart = start;
    const buf = this.groupBuf;
    const end = encodeBatchOps(ops, buf, this.groupEnd);
    if (end !== this.groupEnd + bytes) throw new Error("write: encoded length differs from the computed one");
    this.groupEnd = end;
    const count = ops.length;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ buf, start, end, ops: count, bytes, userBytes, resolve, reject });
      this.queuedBytes += bytes;
      if (!this.writerRunning && !this.writerScheduled) this.startWriter();
    });
  }

  /**
   * With a blocking WAL sync the writer must not start at the first write: it would sync that write
   * alone, and requests that arrived with it (their callbacks not yet run) would each get a sync of
   * their own, one after another (group commit lost: docs/performance.md, "the WAL writer starts soon").
   * So it starts once the I/O callbacks ready now have run, and takes every write they made as one
   * group. (The asynchronous sync needs no delay: writes gather while the sync is in the thread pool.)
   */
  private startWriter(): void {
    const blocking = this.o.durability === "fsync" && this.o.walSyncOnEventLoop;
    const timers = this.timers;
    if (!blocking || timers === undefined) {
      void this.runWriter();
      return;
    }
    this.writerScheduled = true;
    const go = () => {
      this.writerScheduled = false;
      if (!this.writerRunning && this.queue.length > 0) void this.runWriter();
    };
    if (timers.soon !== undefined) timers.soon(go);
    else timers.after(0, go);
  }

  private async runWriter(): Promise<void> {
    this.writerRunning = true;
    try {
      while (this.queue.length > 0) {
        const delay = this.writeDelayMs();
        if (delay > 0) await this.delayWrites(delay);
        try {
          await this.makeRoomForWrite();
        } catch (err) {
          this.failAll(err);
          return;
        }
        // The group: the queued writes encoded after the same record header.
        const head = this.queue[0]!;
        const buf = head.buf;
        const start = head.start;
        let count = 0;
        let ops = 0;
        let groupBytes = 0;
        while (count < this.queue.length) {
          const w = this.queue[count]!;
          if (w.buf !== buf || w.start !== start) break;
          ops += w.ops;
          groupBytes += w.bytes;
          count++;
        }
        // Writes from now on start a new group.
        if (this.groupBuf === buf && this.groupStart === start) this.groupStart = -1;
        const group = count === this.queue.length ? this.queue.splice(0) : this.queue.splice(0, count);
        const end = group[group.length - 1]!.end;
        const record = buf.subarray(start, end);
        const firstSeq = this.lastSequence + 1;
        sealGroupRecord(record, ops, firstSeq);
        try {
          const zerosBefore = this.wal.file.zeroBytesWritten;
          this.wal.file.appendSync(record);
          this.counters.walBytes += record.length + (this.wal.file.zeroBytesWritten - zerosBefore);
          if (this.o.durability === "fsync") {
            if (this.o.walSyncOnEventLoop) this.wal.file.syncBlocking();
            else await this.wal.file.sync();
            this.counters.walSyncs++;
          } else {
            this.wal.dirty = true;
            this.wal.unsyncedBytes += record.length;
            if (
              this.o.walAhead &&
              this.wal.unsyncedBytes >= WAL_BYTES_PER_SYNC &&
              this.syncInFlight === undefined
            )
              this.syncInBackground(this.wal);
          }
        } catch (err) {
          this.queuedBytes -= groupBytes;
          const e = new StorageIoError("write-ahead log write failed; the engine takes no more writes", err);
          this.failed = e;
          for (const w of group) w.reject(e);
          this.failAll(e);
          return;
        }
        this.lastSequence = firstSeq + ops - 1;
        // The memtable keeps the group's bytes where they are: the group buffer is never written again.
        this.mem.adoptBatch(buf, start + BATCH_BODY_OFFSET, end, ops, firstSeq);
        for (let i = 0; i < group.length; i++) this.counters.userBytes += group[i]!.userBytes;
        this.visibleSequence = this.lastSequence;
        this.queuedBytes -= groupBytes;
        this.pacer.wrote(this.now(), groupBytes, this.debt());
        if (this.o.walAhead && this.spareWal === undefined && this.mem.bytes >= this.o.memtableBytes / 2)
          this.prepareSpareWal();
        for (let i = 0; i < group.length; i++) group[i]!.resolve();
        this.queueSpace.signal();
      }
    } finally {
      this.writerRunning = false;
      this.writerIdle.signal();
    }
  }

  private failAll(err: unknown): void {
    const e = err instanceof StorageError ? err : new StorageIoError("write failed", err);
    if (!this.failed && !(e instanceof StorageClosedError)) this.failed = e;
    const q = this.queue.splice(0);
    for (const w of q) w.reject(e);
    this.queuedBytes = 0;
    // The bytes of the rejected writes stay in the group buffer: the next write starts a new group.
    this.groupStart = -1;
    this.queueSpace.signal();
  }

  private debt(): WriteDebt {
    let unflushed = this.mem.bytes;
    for (const m of this.imms) unflushed += m.bytes;
    return {
      unflushedBytes: unflushed,
      unflushedLimitBytes: (1 + this.o.maxImmutableMemtables) * this.o.memtableBytes,
      runs: this.current.runs.length,
    };
  }

  /**
   * Called by the writer loop only, before a group: the delayed write (lsm/write-pacer.ts) while flushes
   * or compactions are behind. Only while one runs (it is what pays the debt), and only with timers.
   */
  private writeDelayMs(): number {
    if (this.timers === undefined || this.failed || this.closed) return 0;
    if (this.flushTask === undefined && this.compactionTask === undefined) return 0;
    return this.pacer.delayMs(this.now(), this.debt());
  }

  private async delayWrites(ms: number): Promise<void> {
    const timers = this.timers!;
    const t0 = this.now();
    // Ends early when a flush or compaction ends (the debt changed): that also ends it when the timer
    // alone would not keep the process alive.
    let timer: { cancel(): void } | undefined;
    await Promise.race([
      new Promise<void>((r) => {
        timer = timers.after(ms, r);
      }),
      this.backgroundDone.wait(),
    ]);
    timer?.cancel();
    this.counters.writeDelays++;
    this.counters.writeDelayMs += this.now() - t0;
  }

  /** Called by the writer loop only: freezes a full memtable; waits while the background falls behind. */
  private async makeRoomForWrite(): Promise<void> {
    for (;;) {
      if (this.failed) throw this.failed;
      const full = this.mem.bytes >= this.o.memtableBytes;
      if (!full && !this.rollRequested) return;
      if (
        this.imms.length >= this.o.maxImmutableMemtables ||
        this.current.runs.length >= this.o.stopWritesAtRuns
      ) {
        // A switch only asked for (compactAll) never stalls a write: it waits for a later group.
        if (!full) return;
        const t0 = this.now();
        this.counters.writeStalls++;
        this.scheduleBackground();
        await this.backgroundDone.wait();
        this.counters.writeStallMs += this.now() - t0;
        continue;
      }
      const asked = this.rollRequested;
      this.rollRequested = false;
      if (this.mem.entries > 0) await this.rollMemtable();
      if (asked) this.memtableRolled.signal();
      return;
    }
  }

  private prepareSpareWal(): void {
    if (this.readOnly || this.closed || this.failed) return;
    const spare = this.createWal(this.nextFileNumber++);
    // Its failure is the memtable switch's, which awaits it.
    spare.catch(() => undefined);
    this.spareWal = spare;
  }

  /** A sync of `wal` off the writer's path (WAL_BYTES_PER_SYNC); `dirty` stays: writes go on meanwhile. */
  private syncInBackground(wal: WalFile): void {
    wal.unsyncedBytes = 0;
    this.syncInFlight = wal.file.sync().then(
      () => {
        this.counters.walSyncs++;
        this.syncInFlight = undefined;
      },
      (err) => {
        this.syncInFlight = undefined;
        this.failed ??= new StorageIoError(
          "background WAL sync failed; the engine takes no more writes",
          err,
        );
      },
    );
  }

  private async rollMemtable(): Promise<void> {
    const old = this.wal;
    const next = this.spareWal ?? this.createWal(this.nextFileNumber++);
    this.spareWal = undefined;
    // Awaited below; a failed sync of the old WAL must not leave its rejection unhandled meanwhile.
    next.catch(() => undefined);
    if (this.syncInFlight) await this.syncInFlight;
    // Unsynced WAL bytes (durability interval/none) must reach the disk before the flush makes them
    // redundant: otherwise a crash could keep a later WAL's writes but lose these.
    if (old.dirty) {
      await old.file.sync();
      this.counters.walSyncs++;
      old.dirty = false;
    }
    this.wal = await next;
    const walNumber = this.wal.number;
    await old.file.close();
    this.imms.push(this.mem);
    this.mem = new Memtable(walNumber);
    this.scheduleBackground();
  }

  private armSyncTimer(): void {
    if (this.o.durability !== "interval" || this.timers === undefined || this.closed) return;
    this.syncTimer = this.timers.after(this.o.syncIntervalMs, () => {
      this.syncTimer = undefined;
      const wal = this.wal;
      // A background sync in flight (WAL_BYTES_PER_SYNC): the next tick syncs what it did not cover.
      if (this.syncInFlight !== undefined) {
        this.armSyncTimer();
        return;
      }
      if (wal.dirty && !this.failed) {
        wal.dirty = false;
        this.syncInFlight = wal.file.sync().then(
          () => {
            this.counters.walSyncs++;
            this.syncInFlight = undefined;
            this.armSyncTimer();
          },
          (err) => {
            this.syncInFlight = undefined;
            this.failed = new StorageIoError(
              "periodic WAL sync failed; the engine takes no more writes",
              err,
            );
          },
        );
      } else {
        this.armSyncTimer();
      }
    });
  }

  // ---------------------------------------------------------------- background work

  private scheduleBackground(): void {
    // A read-only engine's frozen memtables are never flushed, nor its runs compacted.
    if (this.readOnly) return;
    if (this.failed) {
      this.backgroundDone.signal();
      return;
    }
    // Paced while the runs are few; at full speed once they pile up, and when closing (close waits for it).
    this.compactionRate[0] =
      this.closed || this.current.runs.length >= this.o.slowdownWritesAtRuns
        ? 0
        : this.o.compactionBytesPerSec;
    if (this.flushTask === undefined && this.imms.length > 0) {
      this.flushTask = this.flushOldest().then(
        () => {
          this.flushTask = undefined;
          this.backgroundDone.signal();
          this.scheduleBackground();
        },
        (err) => this.backgroundFailed(err, "flush"),
      );
    }
    // While closing, compaction still runs if a writer is waiting for room: close waits for that writer.
    if (this.compactionTask === undefined && !this.holdCompactions && (!this.closed || this.writerRunning)) {
      const pick = pickCompaction(this.current.runs, this.o);
      if (pick !== undefined) {
        const inputs = this.current.runs.slice(pick.start, pick.end);
        void this.startCompaction(inputs, pick.end === this.current.runs.length, undefined);
      }
    }
  }

  /**
   * Takes the compaction slot (`compactionTask`, which must be free) for a merge of `inputs`; returns the
   * merge itself (its failure also fails the engine, through the slot's handler).
   */
  private startCompaction(
    inputs: readonly Run[],
    bottom: boolean,
    progress: Float64Array | undefined,
  ): Promise<void> {
    if (this.compactionTask !== undefined) throw new Error("startCompaction: a compaction is running");
    const job = this.compact(inputs, bottom, progress);
    this.compactionTask = job.then(
      () => {
        this.compactionTask = undefined;
        this.backgroundDone.signal();
        this.scheduleBackground();
      },
      (err) => this.backgroundFailed(err, "compaction"),
    );
    return job;
  }

  private backgroundFailed(err: unknown, what: string): void {
    if (what === "flush") this.flushTask = undefined;
    else this.compactionTask = undefined;
    if (!this.failed)
      this.failed =
        err instanceof StorageError
          ? err
          : new StorageIoError(`${what} failed; the engine takes no more writes`, err);
    this.backgroundDone.signal();
    this.queueSpace.signal();
  }

  /** Serialises manifest appends and version installs (flush and compaction run concurrently). */
  private async withManifest<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.manifestLock;
    let release!: () => void;
    this.manifestLock = new Promise((r) => {
      release = r;
    });
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Writes the sorted entries of `source` (already positioned) into tables; returns their metadata. */
  private async writeTables(source: SourceIterator, dropTombstones: boolean): Promise<TableMeta[]> {
    const files = await writeRunTables(
      this.fs,
      this.dir,
      source,
      dropTombstones,
      this.o,
      () => this.nextFileNumber++,
    );
    for (const f of files) this.counters.tableBytes += f.size;
    return files;
  }

  /** Writes a memtable (recovery) as a run, without installing it. */
  private async writeMemtable(mem: Memtable, dropTombstones: boolean): Promise<Run | undefined> {
    const it = mem.iterator(Number.MAX_SAFE_INTEGER);
    it.seek(undefined);
    const files = await this.writeTables(it, dropTombstones);
    if (files.length === 0) return undefined;
    return makeRun(this.nextFileNumber++, mem.minSeq, mem.maxSeq, files);
  }

  private async flushOldest(): Promise<void> {
    const imm = this.imms[0]!;
    const fileNumbers: number[] = [];
    for (let k = flushFilesNeeded(imm.bytes, this.o.tableTargetBytes); k > 0; k--)
      fileNumbers.push(this.nextFileNumber++);
    const { chunks, order, count } = imm.latestOrder();
    const t0 = this.now();
    const { files } = await this.compactor.flush({
      dir: this.dir,
      chunks,
      order,
      count,
      // With no run at all, nothing older exists for a tombstone to hide: drop them.
      dropTombstones: this.current.runs.length === 0 && this.compactionTask === undefined,
      fileNumbers,
      options: this.o,
    });
    this.pacer.noteFlush(imm.bytes, this.now() - t0);
    for (const f of files) this.counters.tableBytes += f.size;
    const run = files.length > 0 ? makeRun(this.nextFileNumber++, imm.minSeq, imm.maxSeq, files) : undefined;
    await this.withManifest(async () => {
      const nextWal = this.imms[1]?.walNumber ?? this.mem.walNumber;
      const edit: VersionEdit = {
        ...(run ? { addRuns: [run] } : {}),
        logNumber: nextWal,
        nextFileNumber: this.nextFileNumber,
        lastSequence: this.visibleSequence,
      };
      await this.appendEdit(edit);
      this.logNumber = nextWal;
      this.installVersion(this.current.apply(edit));
      this.imms.shift();
    });
    this.counters.flushes++;
    await this.fs.unlink(path.join(this.dir, walFileName(imm.walNumber)));
  }

  private async compact(
    inputs: readonly Run[],
    bottom: boolean,
    progress: Float64Array | undefined,
  ): Promise<void> {
    const v = this.current;
    this.refVersion(v);
    try {
      let bytesIn = 0;
      for (const r of inputs) bytesIn += r.bytes;
      const fileNumbers: number[] = [];
      for (let k = outputFilesNeeded(inputs, this.o.tableTargetBytes); k > 0; k--)
        fileNumbers.push(this.nextFileNumber++);
      const { files } = await this.compactor.run({
        dir: this.dir,
        inputs,
        dropTombstones: bottom,
        fileNumbers,
        options: this.o,
        maxOpenTables: this.o.maxOpenTables,
        rate: this.compactionRate,
        ...(progress !== undefined ? { progress } : {}),
      });
      let bytesOut = 0;
      for (const f of files) bytesOut += f.size;
      const id = this.nextFileNumber++;
      const minSeq = Math.min(...inputs.map((r) => r.minSeq));
      const maxSeq = Math.max(...inputs.map((r) => r.maxSeq));
      await this.withManifest(async () => {
        const edit: VersionEdit = {
          removeRuns: inputs.map((r) => r.id),
          ...(files.length > 0 ? { addRuns: [makeRun(id, minSeq, maxSeq, files)] } : {}),
          nextFileNumber: this.nextFileNumber,
        };
        await this.appendEdit(edit);
        this.installVersion(this.current.apply(edit));
      });
      this.counters.tableBytes += bytesOut;
      this.counters.compactions++;
      this.counters.compactionBytesRead += bytesIn;
      this.counters.compactionBytesWritten += bytesOut;
    } finally {
      this.unrefVersion(v);
    }
  }

  private async appendEdit(edit: VersionEdit): Promise<void> {
    // Roll the manifest over when it grows large: a fresh one holds a single snapshot edit.
    if (this.manifest.size > 4 * 1024 * 1024) {
      const old = this.manifest;
      const next = this.current.apply(edit);
      this.manifestBytesBefore += old.bytesWritten;
      this.manifest = await ManifestWriter.create(this.fs, this.dir, this.nextFileNumber++, {
        ...next.snapshotEdit(),
        logNumber: edit.logNumber ?? this.logNumber,
        nextFileNumber: this.nextFileNumber,
        lastSequence: Math.max(edit.lastSequence ?? 0, this.visibleSequence),
      });
      await old.close();
      await this.fs.unlink(path.join(this.dir, old.name));
      return;
    }
    await this.manifest.append(edit);
  }

  // ---------------------------------------------------------------- versions and obsolete files

  private installVersion(v: Version): void {
    const old = this.current;
    this.current = v;
    this.liveVersions.add(v);
    v.refs++;
    if (old !== v) this.unrefVersion(old);
  }

  private refVersion(v: Version): void {
    v.refs++;
  }

  private unrefVersion(v: Version): void {
    if (--v.refs > 0 || v === this.current) return;
    if (!this.liveVersions.delete(v)) return;
    const live = new Set<number>();
    for (const lv of this.liveVersions) for (const n of lv.fileNumbers()) live.add(n);
    for (const n of v.fileNumbers()) {
      if (live.has(n)) continue;
      live.add(n);
      void this.deleteTable(n);
    }
  }

  private async deleteTable(n: number): Promise<void> {
    if (this.readOnly) throw new Error(`deleteTable(${n}): a read-only engine never replaces a version`);
    try {
      await this.tables.forget(n);
      await this.fs.unlink(path.join(this.dir, tableFileName(n)));
    } catch (err) {
      // The next open removes it (it is in no manifest); count it so that it shows in the statistics.
      this.counters.deleteFailures++;
      void err;
    }
  }

  // ---------------------------------------------------------------- reads

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.closed) return Promise.reject(new StorageClosedError());
    if (!(key instanceof Uint8Array) || key.length === 0 || key.length > this.o.maxKeyBytes)
      return Promise.reject(
        new InvalidArgumentError(`key must be a Uint8Array of 1..${this.o.maxKeyBytes} bytes`),
      );
    const snap = this.visibleSequence;
    let e = this.mem.get(key, snap);
    if (e === undefined)
      for (let i = this.imms.length - 1; i >= 0 && e === undefined; i--) e = this.imms[i]!.get(key, snap);
    if (e !== undefined) return Promise.resolve(e.kind === KIND_PUT ? e.copyValue() : undefined);
    const v = this.current;
    if (v.runs.length === 0) return Promise.resolve(undefined);
    // Without an await, nothing can replace the version or close its tables under this loop: no pins.
    try {
      const h = bloomHash(key);
      const runs = v.runs;
      for (let i = 0; i < runs.length; i++) {
        const meta = findTable(runs[i]!, key);
        if (meta === undefined) continue;
        const t = this.tables.peekOpen(meta.fileNumber);
        if (t === undefined) return this.getFrom(v, i, key, h, undefined);
        const hit = t.get(key, h);
        // The block comes through the thread pool: pin the version and the table until it arrives.
        if (hit instanceof Promise) return this.getFrom(v, i, key, h, { meta, hit });
        if (hit !== undefined) return Promise.resolve(hit ?? undefined);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return Promise.resolve(undefined);
  }

  /**
   * The rest of a get that must wait, from run `from` on, with the version and each table pinned across
   * the awaits. `pending` is run `from`'s lookup if it already started (its table is open).
   */
  private async getFrom(
    v: Version,
    from: number,
    key: Uint8Array,
    h: number,
    pending: { readonly meta: TableMeta; readonly hit: Promise<Buffer | null | undefined> } | undefined,
  ): Promise<Uint8Array | undefined> {
    // Pinned before the first await (the caller has not yielded since it found the table open).
    v.refs++;
    let first = pending;
    if (first !== undefined && this.tables.tryAcquire(first.meta) === undefined) {
      this.unrefVersion(v);
      throw new Error("get: a table open a moment ago is not");
    }
    try {
      for (let i = from; i < v.runs.length; i++) {
        let hit: Buffer | null | undefined;
        if (first !== undefined) {
          try {
            hit = await first.hit;
          } finally {
            this.tables.release(first.meta.fileNumber);
            first = undefined;
          }
        } else {
          const meta = findTable(v.runs[i]!, key);
          if (meta === undefined) continue;
          const t = this.tables.tryAcquire(meta) ?? (await this.tables.acquire(meta));
          try {
            hit = await t.get(key, h);
          } finally {
            this.tables.release(meta.fileNumber);
          }
        }
        if (hit !== undefined) return hit ?? undefined;
      }
      return undefined;
    } finally {
      if (first !== undefined) this.tables.release(first.meta.fileNumber);
      this.unrefVersion(v);
    }
  }

  /** Takes the snapshot now, at the call (not at the first `next()`: a generator body would run late). */
  iterate(range: RangeOptions = {}): AsyncIterableIterator<Entry> {
    if (this.closed) return new SnapshotIterator(rejectingIterator(new StorageClosedError()), () => {});
    const snap = this.visibleSequence;
    const v = this.current;
    v.refs++;
    const sources: SourceIterator[] = [this.mem.iterator(snap)];
    for (let i = this.imms.length - 1; i >= 0; i--) sources.push(this.imms[i]!.iterator(snap));
    for (const run of v.runs) sources.push(new RunIterator(run, this.tables, true));
    const merged = new MergingIterator(sources);
    return new SnapshotIterator(this.scan(merged, range), () => {
      merged.close();
      this.unrefVersion(v);
    });
  }

  private async *scan(merged: MergingIterator, range: RangeOptions): AsyncGenerator<Entry, void, undefined> {
    {
      const start = range.gte ?? range.gt;
      await merged.seek(start);
      if (range.gt !== undefined && range.gte === undefined)
        while (merged.valid && compareBytes(merged.key, range.gt) === 0) {
          const r = merged.next();
          if (r !== undefined) await r;
        }
      let left = range.limit ?? Number.POSITIVE_INFINITY;
      while (merged.valid && left > 0) {
        const k = merged.key;
        if (range.lt !== undefined && compareBytes(k, range.lt) >= 0) break;
        if (range.lte !== undefined && compareBytes(k, range.lte) > 0) break;
        if (merged.kind === KIND_PUT) {
          const entry = { key: Buffer.from(k), value: Buffer.from(merged.value) };
          left--;
          yield entry;
          if (this.closed) throw new StorageClosedError();
        }
        const r = merged.next();
        if (r !== undefined) await r;
      }
    }
  }

  // ---------------------------------------------------------------- statistics and close

  stats(): EngineStats {
    const c = this.counters;
    const manifestBytes = this.manifestBytesBefore + (this.manifest?.bytesWritten ?? 0);
    const disk = c.walBytes + c.tableBytes + Math.max(0, manifestBytes);
    const levels: LevelStats[] = this.current.runs.map((r, i) => ({
      level: i,
      tables: r.files.length,
      bytes: r.bytes,
    }));
    let liveKeys = 0;
    for (const r of this.current.runs) liveKeys += r.entries;
    liveKeys += this.mem.entries;
    for (const m of this.imms) liveKeys += m.entries;
    return {
      engine: "lsm",
      userBytesWritten: c.userBytes,
      walBytesWritten: c.walBytes,
      tableBytesWritten: c.tableBytes,
      diskBytesWritten: disk,
      writeAmplification: c.userBytes > 0 ? disk / c.userBytes : 0,
      levels,
      memtableBytes: this.mem.bytes,
      immutableMemtables: this.imms.length,
      immutableMemtableBytes: this.imms.reduce((n, m) => n + m.bytes, 0),
      pendingWriteBytes: this.queuedBytes,
      memoryBudgetBytes: this.o.memoryBudgetBytes,
      flushes: c.flushes,
      compactions: c.compactions,
      compactionBytesRead: c.compactionBytesRead,
      compactionBytesWritten: c.compactionBytesWritten,
      bloomChecks: this.readStats.bloomChecks,
      bloomNegatives: this.readStats.bloomNegatives,
      bloomFalsePositives: this.readStats.bloomFalsePositives,
      blockCacheHits: this.blockCache.hits,
      blockCacheMisses: this.blockCache.misses,
      blockCacheBytes: this.blockCache.bytes,
      blockCacheCapacityBytes: this.blockCache.capacityBytes,
      writeStalls: c.writeStalls,
      writeStallMs: c.writeStallMs,
      writeDelays: c.writeDelays,
      writeDelayMs: c.writeDelayMs,
      walSyncs: c.walSyncs,
      tableDeleteFailures: c.deleteFailures,
      liveKeysEstimate: liveKeys,
      sequence: this.visibleSequence,
      manualCompactions: this.manualCompactions,
      manualCompaction: this.compactionProgress(),
    };
  }

  /** Resolves when no flush or compaction is running or due (tests and benchmarks use it). */
  async waitForBackground(): Promise<void> {
    for (;;) {
      if (this.failed) throw this.failed;
      if (this.flushTask !== undefined) await this.flushTask;
      else if (this.compactionTask !== undefined) await this.compactionTask;
      else {
        this.scheduleBackground();
        if (this.flushTask === undefined && this.compactionTask === undefined) return;
      }
    }
  }

  /** Freezes the active memtable and flushes it (and any other frozen one) to tables. */
  async flush(): Promise<void> {
    if (this.closed) throw new StorageClosedError();
    if (this.readOnly) throw new ReadOnlyError("flush refused");
    if (!this.writerRunning && this.queue.length > 0) void this.runWriter();
    while (this.writerRunning) await this.writerIdle.wait();
    if (this.mem.entries > 0) await this.rollMemtable();
    while (this.imms.length > 0) {
      if (this.failed) throw this.failed;
      this.scheduleBackground();
      if (this.flushTask !== undefined) await this.flushTask;
    }
  }

  // ---------------------------------------------------------------- full compaction (compactAll)

  /** See StorageEngine.compactAll. */
  compactAll(): ManualCompactionStart {
    if (this.closed) throw new StorageClosedError();
    if (this.readOnly) throw new ReadOnlyError("compaction refused");
    if (this.failed) throw this.failed;
    if (this.manualDone !== undefined)
      return { started: false, progress: this.compactionProgress(), done: this.manualDone };
    const before = this.tableFigures();
    this.manualCompactions++;
    this.manual = {
      ...MANUAL_COMPACTION_IDLE,
      state: "running",
      phase: "flush",
      startedAt: this.now(),
      runsBefore: before.runs,
      tablesBefore: before.tables,
      bytesBefore: before.bytes,
    };
    const done = this.runFullCompaction().then(
      () => this.endManual(undefined),
      (err: unknown) => this.endManual(err),
    );
    this.manualDone = done;
    return { started: true, progress: this.manual, done };
  }

  /** See StorageEngine.compactionProgress. */
  compactionProgress(): ManualCompactionProgress {
    const m = this.manualMerge;
    if (m === undefined || this.manual.state !== "running") return this.manual;
    const entriesDone = Math.min(m.entriesTotal, m.cell[0] ?? 0);
    const bytesDone = m.entriesTotal > 0 ? Math.round((m.bytesTotal * entriesDone) / m.entriesTotal) : 0;
    const secs = (this.now() - m.startedAt) / 1000;
    return {
      ...this.manual,
      entriesDone,
      bytesDone,
      bytesPerSecond: secs > 0 ? Math.round(bytesDone / secs) : 0,
    };
  }

  private tableFigures(): { runs: number; tables: number; bytes: number } {
    let tables = 0;
    let bytes = 0;
    for (const r of this.current.runs) {
      tables += r.files.length;
      bytes += r.bytes;
    }
    return { runs: this.current.runs.length, tables, bytes };
  }

  private endManual(err: unknown): ManualCompactionProgress {
    const last = this.compactionProgress();
    const after = this.tableFigures();
    const e =
      err === undefined
        ? null
        : err instanceof StorageError
          ? { code: err.code, message: err.message }
          : { code: "ERR_IO", message: err instanceof Error ? err.message : String(err) };
    this.manual = {
      ...last,
      state: e === null ? "done" : "failed",
      phase: null,
      finishedAt: this.now(),
      ...(e === null ? { entriesDone: last.entriesTotal, bytesDone: last.bytesTotal } : {}),
      runsAfter: after.runs,
      tablesAfter: after.tables,
      bytesAfter: after.bytes,
      error: e,
    };
    this.manualMerge = undefined;
    this.manualDone = undefined;
    return this.manual;
  }

  /** Throws why a full compaction cannot go on: the engine failed or is closing. */
  private checkManual(): void {
    if (this.failed) throw this.failed;
    if (this.closed) throw new StorageClosedError();
  }

  /**
   * The full compaction: (1) the active memtable frozen and every frozen one flushed, (2) the compaction
   * slot taken (a background merge running ends first; none starts meanwhile), (3) every run merged into
   * one through the slot, paced as background merges are. Runs flushed after (2) are newer than every
   * input and stay as they are; the inputs include the oldest run, so tombstones are dropped.
   * Each step is an ordinary flush or merge: crash safety is theirs (a merge becomes real with its
   * manifest edit, its unrecorded outputs are removed by the next open).
   */
  private async runFullCompaction(): Promise<void> {
    // Not held while the memtable is frozen: a writer stalled at stopWritesAtRuns waits for a merge.
    await this.freezeActiveMemtable();
    // Held from here: a merge the flush would trigger is part of this one.
    this.holdCompactions = true;
    try {
      const frozen = this.imms.slice();
      while (frozen.some((m) => this.imms.includes(m))) {
        this.checkManual();
        this.scheduleBackground();
        if (this.flushTask !== undefined) await this.flushTask;
      }
      this.checkManual();
      this.manual = { ...this.manual, phase: "wait" };
      while (this.compactionTask !== undefined) {
        await this.compactionTask;
        this.checkManual();
      }
    } finally {
      this.holdCompactions = false;
    }
    this.checkManual();
    const inputs = this.current.runs.slice();
    let tombstones = 0;
    for (const r of inputs) for (const f of r.files) tombstones += f.tombstones;
    // Already one run with nothing to drop: nothing to merge.
    if (inputs.length === 0 || (inputs.length === 1 && tombstones === 0)) {
      // The slot was held: a merge due meanwhile starts now.
      this.scheduleBackground();
      return;
    }
    let entriesTotal = 0;
    let bytesTotal = 0;
    for (const r of inputs) {
      entriesTotal += r.entries;
      bytesTotal += r.bytes;
    }
    const cell = new Float64Array(new SharedArrayBuffer(8));
    this.manualMerge = { cell, entriesTotal, bytesTotal, startedAt: this.now() };
    this.manual = { ...this.manual, phase: "merge", entriesTotal, bytesTotal };
    await this.startCompaction(inputs, true, cell);
  }

  /**
   * Freezes the active memtable (its WAL switched, as a full memtable's is), without waiting for a busy
   * writer to go idle: the writer loop switches it before its next group (makeRoomForWrite). An idle
   * writer's part is taken here, with `writerRunning` held so that no write starts meanwhile.
   */
  private async freezeActiveMemtable(): Promise<void> {
    for (;;) {
      this.checkManual();
      if (!this.writerRunning) {
        this.rollRequested = false;
        this.writerRunning = true;
        try {
          if (this.mem.entries > 0) await this.rollMemtable();
        } finally {
          this.writerRunning = false;
          this.writerIdle.signal();
          if (this.queue.length > 0 && !this.writerScheduled) this.startWriter();
        }
        return;
      }
      this.rollRequested = true;
      await Promise.race([this.memtableRolled.wait(), this.writerIdle.wait()]);
      if (!this.rollRequested) return;
    }
  }

  close(): Promise<void> {
    if (this.closing === undefined) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    this.compactionRate[0] = 0;
    if (this.readOnly) {
      await this.tables.closeAll();
      await this.compactor.close();
      await this.unlock?.();
      return;
    }
    // Writes accepted before the close are written first (a writer start may still be scheduled).
    if (!this.writerRunning && this.queue.length > 0) void this.runWriter();
    while (this.writerRunning) await this.writerIdle.wait();
    this.syncTimer?.cancel();
    if (this.syncInFlight) await this.syncInFlight;
    let firstError: unknown;
    if (this.wal.dirty && !this.failed) {
      try {
        await this.wal.file.sync();
        this.wal.dirty = false;
      } catch (err) {
        firstError = err;
      }
    }
    for (const t of [this.flushTask, this.compactionTask]) if (t) await t;
    // A full compaction stops at its next step (it sees `closed`); its merge, if running, was awaited.
    if (this.manualDone !== undefined) await this.manualDone;
    await this.wal.file.close();
    if (this.spareWal !== undefined) {
      // Never used: empty. Removed so that a closed store holds only what it needs.
      try {
        const spare = await this.spareWal;
        await spare.file.close();
        await this.fs.unlink(path.join(this.dir, walFileName(spare.number)));
      } catch (err) {
        firstError ??= err;
      }
      this.spareWal = undefined;
    }
    await this.manifest.close();
    await this.tables.closeAll();
    await this.compactor.close();
    await this.unlock?.();
    if (firstError !== undefined) throw new StorageIoError("final WAL sync failed on close", firstError);
  }
}
