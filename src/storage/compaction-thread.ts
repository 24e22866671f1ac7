/**
 * The compaction worker thread's entry: runs compaction and flush jobs (lsm/compaction-job.ts) on the real
 * disk, one message per job, and answers with the output tables' metadata or the error.
 */
import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";
import { performance } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { reviveRuns } from "./compaction-worker.js";
import { CorruptionError, StorageError } from "./errors.js";
import { NodeFileSystem } from "./fs/node-file-system.js";
import {
  type CompactionJob,
  type FlushJob,
  ratePacer,
  runCompaction,
  runFlush,
} from "./lsm/compaction-job.js";

const port = parentPort;
if (port === null) throw new Error("compaction-thread.ts must run in a worker thread");
const fs = new NodeFileSystem();

// A lower CPU priority for this thread alone (compaction-worker.ts, mergeNice): on Linux a thread's
// nice value is its own, set through its thread id. Elsewhere, or if refused, it runs as it is.
const nice = (workerData as { nice?: number } | null)?.nice ?? 0;
if (nice > 0 && process.platform === "linux") {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, Math.min(19, getPriority(tid) + nice));
  } catch {
    // No /proc, or not allowed: normal priority.
  }
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

port.on("message", (msg: { id: number; job?: CompactionJob; flush?: FlushJob }) => {
  const work =
    msg.flush !== undefined
      ? runFlush(fs, msg.flush)
      : runCompaction(
          fs,
          { ...msg.job!, inputs: reviveRuns(msg.job!.inputs) },
          // The rate cell is shared memory: the engine changes the pace while the merge runs.
          msg.job!.rate !== undefined ? ratePacer(msg.job!.rate, () => performance.now(), sleep) : undefined,
        );
  work.then(
    (res) => port.postMessage({ id: msg.id, files: res.files }),
    (err: unknown) => {
      const e = err as Error & { code?: string };
      port.postMessage({
        id: msg.id,
        error: {
          name: e.name,
          message: e.message,
          code: e.code,
          file: err instanceof CorruptionError ? err.file : undefined,
          offset: err instanceof CorruptionError ? err.offset : undefined,
          storage: err instanceof StorageError,
        },
      });
    },
  );
});

// Loaded: the engine may count on this thread for its first flush (compaction-worker.ts, warm).
port.postMessage({ ready: true });
