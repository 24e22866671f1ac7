/**
 * Runs compactions and flushes in a worker thread (the edge adapter of lsm/compaction-job.ts for the real
 * disk). A merge then takes the second core instead of the event loop that serves requests, so an
 * overwrite-heavy load does not stall its writers behind it; a flush too, since on the event loop it
 * competes with the writer that waits for it (docs/performance.md, "first storage choices" and "storage
 * write path").
 *
 * One worker per engine, started on the first job; it keeps the process alive only while a job runs.
 * Metadata crosses the thread boundary by structured clone, which turns Buffers into Uint8Arrays: they
 * are turned back on arrival.
 */
import { Worker } from "node:worker_threads";
import { CorruptionError, StorageError, StorageIoError } from "./errors.js";
import type { CompactionExecutor, CompactionJob, CompactionResult, FlushJob } from "./lsm/compaction-job.js";
import { makeRun, type Run, type TableMeta } from "./lsm/version.js";

function buf(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function reviveTables(files: readonly TableMeta[]): TableMeta[] {
  return files.map((f) => ({ ...f, smallest: buf(f.smallest), largest: buf(f.largest) }));
}

export function reviveRuns(runs: readonly Run[]): Run[] {
  return runs.map((r) => makeRun(r.id, r.minSeq, r.maxSeq, reviveTables(r.files)));
}

interface WorkerError {
  name: string;
  message: string;
  code?: string;
  file?: string;
  offset?: number;
  storage: boolean;
}

function reviveError(e: WorkerError): Error {
  if (e.file !== undefined && e.offset !== undefined) {
    const c = new CorruptionError(e.file, e.offset, "");
    c.message = e.message;
    return c;
  }
  if (e.storage) return new StorageError((e.code as StorageError["code"]) ?? "ERR_IO", e.message);
  return new StorageIoError(`compaction failed in the worker: ${e.message}`, e);
}

/**
 * A small young generation for the workers: a merge or a flush makes mostly short-lived garbage (block
 * buffers and views), and V8's default young generation lets each worker hold tens of MiB of it; 8 MiB
 * costs no throughput (docs/performance.md, "the workers' young generation").
 * The old generation keeps V8's default (a limit there would make a large merge crash the worker).
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 8 };

/**
 * One worker thread and its jobs in flight, started on the first job. `nice` (0: none) lowers the
 * thread's CPU priority, where the system allows it (compaction-thread.ts).
 */
function workerLane(
  name: string,
  nice: number,
): {
  post(msg: { job?: CompactionJob; flush?: FlushJob }): Promise<CompactionResult>;
  warm(): Promise<void>;
  close(): Promise<void>;
} {
  let worker: Worker | undefined;
  /** Resolves once the current worker has loaded its modules (or failed, or exited). */
  let ready: Promise<void> = Promise.resolve();
  let nextId = 1;
  const pending = new Map<number, { resolve: (r: CompactionResult) => void; reject: (e: unknown) => void }>();
  const failAll = (err: unknown) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    worker = undefined;
  };
  const start = (): Worker => {
    // Built code runs compaction-thread.js. When the sources run under tsx (tests, benchmarks), loader
    // hooks of the main thread do not reach the worker: a two-line bootstrap registers tsx there first.
    const w = import.meta.url.endsWith(".ts")
      ? new Worker(
          `import("tsx/esm/api").then((m) => { m.register(); return import(${JSON.stringify(new URL("./compaction-thread.ts", import.meta.url).href)}); });`,
          { eval: true, name, resourceLimits: WORKER_LIMITS, workerData: { nice } },
        )
      : new Worker(new URL("./compaction-thread.js", import.meta.url), {
          name,
          resourceLimits: WORKER_LIMITS,
          workerData: { nice },
        });
    let started!: () => void;
    ready = new Promise<void>((resolve) => {
      started = resolve;
    });
    w.on("message", (m: { id: number; ready?: true; files?: TableMeta[]; error?: WorkerError }) => {
      if (m.ready === true) {
        started();
        if (pending.size === 0) w.unref();
        return;
      }
      const p = pending.get(m.id);
      if (p === undefined) return;
      pending.delete(m.id);
      if (pending.size === 0) w.unref();
      if (m.error !== undefined) p.reject(reviveError(m.error));
      else p.resolve({ files: reviveTables(m.files ?? []) });
    });
    w.on("error", (err) => {
      started();
      failAll(new StorageIoError(`the ${name} worker failed`, err));
    });
    w.on("exit", (code) => {
      started();
      if (pending.size > 0) failAll(new StorageIoError(`the ${name} worker exited with code ${code}`, code));
      worker = undefined;
    });
    // Referenced until it is ready (an open waits for that), then only while a job is in flight.
    return w;
  };
  return {
    warm() {
      worker ??= start();
      return ready;
    },
    post(msg) {
      worker ??= start();
      const w = worker;
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        w.ref();
        // The flush order moves to the worker; the memtable chunks are shared memory (never copied).
        w.postMessage({ id, ...msg }, msg.flush !== undefined ? [msg.flush.order.buffer] : []);
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w !== undefined) await w.terminate();
    },
  };
}

/** How much the merge thread's CPU priority is lowered by default (a nice value; 0: not at all). */
export const DEFAULT_MERGE_NICE = 10;

/**
 * Compactions and flushes on two worker threads, so that a flush never waits behind a merge that can take
 * seconds (with one thread for both, writers stall on full memtables: docs/performance.md, "storage write
 * path"). The merge thread runs at a lower CPU priority (`mergeNice`, Linux), as RocksDB's low-priority
 * compaction pool: when the cores are busy, the thread serving requests and the flushes it waits for go
 * first, and a merge that falls behind slows writes gradually (delayed writes) instead of every request
 * waiting for a core behind it.
 */
export function workerCompactionExecutor(o: { mergeNice?: number } = {}): CompactionExecutor {
  const nice = o.mergeNice ?? DEFAULT_MERGE_NICE;
  if (!(Number.isInteger(nice) && nice >= 0 && nice <= 19))
    throw new RangeError(`mergeNice must be an integer from 0 to 19, got ${nice}`);
  const merges = workerLane("ringstore compaction", nice);
  const flushes = workerLane("ringstore flush", 0);
  return {
    run: (job: CompactionJob) => merges.post({ job }),
    flush: (flush: FlushJob) => flushes.post({ flush }),
    // A worker takes a while to start (its isolate and modules): the first flush must not wait for it while
    // writers fill the memtables behind it.
    warm: async () => {
      await Promise.all([merges.warm(), flushes.warm()]);
    },
    async close(): Promise<void> {
      await Promise.all([merges.close(), flushes.close()]);
    },
  };
}
