/**
 * The storage layer's public face: the engine contract, both engines, and `openStorage`, which wires an
 * engine to the real disk and clock (the edge; the engines themselves receive these).
 */
import { systemRuntime } from "../runtime/system-runtime.js";
import { workerCompactionExecutor } from "./compaction-worker.js";
import type { StorageEngine } from "./engine.js";
import { NodeFileSystem } from "./fs/node-file-system.js";
import { LsmEngine } from "./lsm/lsm-engine.js";
import type { LsmOptions } from "./lsm/options.js";
import { MemoryEngine } from "./memory-engine.js";

export { DEFAULT_MERGE_NICE, workerCompactionExecutor } from "./compaction-worker.js";
export type {
  EngineStats,
  Entry,
  LevelStats,
  ManualCompactionProgress,
  ManualCompactionStart,
  RangeOptions,
  StorageEngine,
  WriteOp,
} from "./engine.js";
export {
  CorruptionError,
  InvalidArgumentError,
  LockedError,
  NoStoreError,
  ReadOnlyError,
  StorageClosedError,
  StorageError,
  StorageIoError,
} from "./errors.js";
export type { FileSystem, RandomAccessFile, WritableFile } from "./fs/file-system.js";
export { type CrashOptions, MemoryFileSystem } from "./fs/memory-file-system.js";
export { type FileLocks, NodeFileSystem } from "./fs/node-file-system.js";
export { LsmEngine, type LsmEngineConfig } from "./lsm/lsm-engine.js";
export {
  DEFAULT_LSM_OPTIONS,
  type Durability,
  type LsmOptions,
  type MemoryBudgetParts,
  memoryBudgetParts,
} from "./lsm/options.js";
export { MemoryEngine } from "./memory-engine.js";

export type StorageConfig =
  | {
      readonly kind: "lsm";
      readonly dir: string;
      readonly options?: Partial<LsmOptions>;
      /** Run compactions and flushes in worker threads (default true; unused when read-only). */
      readonly compactionWorker?: boolean;
      /** Open for inspection: LsmEngine.openReadOnly (writes nothing; a missing store is an error). */
      readonly readOnly?: boolean;
    }
  | { readonly kind: "memory" };

export async function openStorage(config: StorageConfig): Promise<StorageEngine> {
  if (config.kind === "memory") return new MemoryEngine();
  const rt = systemRuntime();
  if (config.readOnly === true)
    return LsmEngine.openReadOnly(
      { dir: config.dir, fs: new NodeFileSystem(), options: config.options ?? {} },
      () => rt.clock.now(),
    );
  return LsmEngine.open(
    {
      dir: config.dir,
      fs: new NodeFileSystem(),
      timers: rt.timers,
      options: config.options ?? {},
      ...(config.compactionWorker === false ? {} : { compactor: workerCompactionExecutor() }),
    },
    () => rt.clock.now(),
  );
}
