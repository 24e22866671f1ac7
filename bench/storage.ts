/**
 * Storage benchmark: ringstore's LSM engine ("ours", LsmEngine on NodeFileSystem) against classic-level
 * (LevelDB, "level") in the same run, on the same disk, with the same data.
 *
 *   npm run bench:storage                      # 1,000,000 keys (several minutes)
 *   npm run bench:storage -- --quick           # 100,000 keys
 *   npm run bench:storage -- --help            # every flag
 *
 * Design. A parent process makes a temp dir under os.tmpdir(), then runs one child process per engine, one
 * after the other (`node --expose-gc --import tsx bench/storage.ts --child ours|level ...`). Each child
 * runs every phase and writes its results as JSON to a file; the parent prints the comparison. So the
 * engines never share a process, a heap or the CPU, and peak RSS is per engine. The temp dir is removed at
 * the end, on error and on SIGINT/SIGTERM. A child can also be run alone (it then makes and removes its
 * own temp dir and prints a one-engine report), e.g. under `--cpu-prof` or with `--profile DIR`.
 *
 * Data. N keys of 16 random bytes and 100-byte values, all from seeded PRNGs (sfc32), so both children
 * get identical data and identical operation sequences. Values are slices of a 4 MiB random pool at an
 * offset derived from (key index, version), so a read can be checked against the value last written.
 *
 * Phases (durability none and fsync, write modes serial / concurrent / batch):
 *   fillseq     the N keys in ascending order into a fresh store
 *   fillrandom  the N keys in random order into a fresh store
 *   overwrite   N puts of random keys already written (same store as fillrandom)
 * then on one store holding all N keys (the durability-none batch store, topped up), closed, reopened
 * and settled (see `settle`), with reads awaited one at a time and `concurrency` at once:
 *   readpresent random gets of present keys (values checked)
 *   readmissing random gets of absent keys (16 random bytes: inside the key range, so filters are probed)
 *   scan        100 entries from random start keys (count and first key checked)
 *
 * Warm-up. Before its first timed phase each child writes WARMUP_OPS puts (32 at a time, then in batches)
 * and reads them back on a scratch store it then removes: the first phase would otherwise time the
 * harness's and ours' code being compiled (V8 runs new code slowly for its first tenths of a second), which a
 * node pays once at its start. Both engines do the same.
 *
 * Every loop is bounded in count and time: durability-none phases by N ops (scans N/10) and `--budget`
 * seconds; fsync phases by `--fsync-ops` ops and `--fsync-budget` seconds, whichever comes first.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { Session } from "node:inspector/promises";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ClassicLevel } from "classic-level";
import { systemRuntime } from "../src/runtime/system-runtime.js";
import {
  DEFAULT_LSM_OPTIONS,
  DEFAULT_MERGE_NICE,
  type EngineStats,
  LsmEngine,
  type LsmOptions,
  memoryBudgetParts,
  NodeFileSystem,
  type WriteOp,
  workerCompactionExecutor,
} from "../src/storage/index.js";
import { resolveLsmOptions } from "../src/storage/lsm/options.js";

const SCRIPT = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(SCRIPT), "..");
const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const POOL_BYTES = 4 * 1024 * 1024;
const SCAN_LENGTH = 100;
const MIB = 1024 * 1024;

const ENGINES = ["ours", "level"] as const;
type EngineName = (typeof ENGINES)[number];
const DURABILITIES = ["none", "fsync"] as const;
type Durability = (typeof DURABILITIES)[number];
const MODES = ["serial", "concurrent", "batch"] as const;
/** Puts (and then gets) of each child's warm-up, before its first timed phase. */
const WARMUP_OPS = 100_000;
type Mode = (typeof MODES)[number];
const PHASES = ["fillseq", "fillrandom", "overwrite", "readpresent", "readmissing", "scan"] as const;
type Phase = (typeof PHASES)[number];
const WRITE_PHASES: readonly Phase[] = ["fillseq", "fillrandom", "overwrite"];
const READ_PHASES: readonly Phase[] = ["readpresent", "readmissing", "scan"];

// ------------------------------------------------------------------------------------------ configuration

interface Config {
  keys: number;
  phases: Phase[];
  durabilities: Durability[];
  modes: Mode[];
  only: EngineName | undefined;
  child: EngineName | undefined;
  dir: string | undefined;
  out: string | undefined;
  profileDir: string | undefined;
  budgetMs: number;
  fsyncBudgetMs: number;
  fsyncOps: number;
  readOps: number;
  scanOps: number;
  concurrency: number;
  batchSize: number;
  cacheBytes: number;
  memtableBytes: number;
  /** Ours' LsmOptions.memoryBudgetBytes (0: none; then cacheBytes and memtableBytes apply). */
  memoryBudgetBytes: number;
  /** More LsmOptions for ours (to compare settings side by side), from --ours-options JSON. */
  oursOptions: Partial<LsmOptions>;
  /** Data block size, both engines. */
  blockBytes: number;
  /** Ours' merge thread's nice value (workerCompactionExecutor's mergeNice). */
  mergeNice: number;
  seed: number;
  settleMaxMs: number;
  interleave: boolean;
}

const HELP = `usage: node --expose-gc --import tsx bench/storage.ts [flags]
  --keys N            keys in the data set (default 1000000)
  --quick             same as --keys 100000
  --only ours|level   run one engine only
  --phases LIST       comma list of ${PHASES.join(",")} (default all)
  --durability LIST   comma list of none,fsync (default both)
  --modes LIST        comma list of serial,concurrent,batch (default all; reads use serial,concurrent)
  --budget S          time budget per durability-none phase, seconds (default 60)
  --fsync-budget S    time budget per fsync phase, seconds (default 5)
  --fsync-ops N       op cap per fsync phase (default 100000)
  --read-ops N        gets per read phase (default N keys)
  --scan-ops N        scans per scan phase (default N keys / 10)
  --concurrency C     in-flight ops of the concurrent mode (default 32)
  --batch B           ops per batch of the batch mode (default 1000)
  --cache-mib M       block cache, both engines (default ours: ${DEFAULT_LSM_OPTIONS.blockCacheBytes / MIB})
  --memtable-mib M    memtable / write buffer, both engines (default ours: ${DEFAULT_LSM_OPTIONS.memtableBytes / MIB})
  --memory-budget-mib M  ours: LsmOptions.memoryBudgetBytes (memtables, block cache, write queue); LevelDB
                      gets the cache and write buffer the budget gives ours (default: no budget)
  --ours-options JSON more LsmOptions for ours, e.g. '{"compactionBytesPerSec":0}' (to compare settings)
  --block-bytes B     data block size, both engines (default ${DEFAULT_LSM_OPTIONS.blockBytes}, ours' default; LevelDB's is also 4096)
  --merge-nice N      ours: how far the merge thread's CPU priority is lowered (default ${DEFAULT_MERGE_NICE}, as a node runs; 0: not)
  --seed S            PRNG seed (default 42)
  --settle-max S      most seconds to wait for background work before reads (default 60)
  --no-interleave     one child per engine for all phases (default: a child per engine per group of
                      phases: writes/none, writes/fsync, reads, alternating engines, so that both sides
                      of a ratio are measured minutes apart even on a busy machine)
  --profile DIR       (child) write a V8 CPU profile of each timed phase to DIR
  --child ours|level  internal: run one engine's phases (alone, it prints a one-engine report)
  --dir D, --out F    internal: child data dir and JSON result file`;

function parseList<T extends string>(s: string | undefined, all: readonly T[], what: string): T[] {
  if (s === undefined) return [...all];
  const items = s
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
  for (const x of items)
    if (!all.includes(x as T)) throw new Error(`unknown ${what} "${x}"; one of ${all.join(",")}`);
  return all.filter((x) => items.includes(x));
}

function parseNumber(s: string | undefined, dflt: number, what: string, min = 1): number {
  if (s === undefined) return dflt;
  const v = Number(s.replaceAll("_", ""));
  if (!Number.isFinite(v) || v < min) throw new Error(`--${what} must be a number >= ${min}, got "${s}"`);
  return v;
}

function parseEngine(s: string | undefined, what: string): EngineName | undefined {
  if (s === undefined) return undefined;
  if (s !== "ours" && s !== "level") throw new Error(`--${what} must be ours or level, got "${s}"`);
  return s;
}

function parseOursOptions(s: string | undefined): Partial<LsmOptions> {
  if (s === undefined) return {};
  const o = JSON.parse(s) as unknown;
  if (o === null || typeof o !== "object" || Array.isArray(o))
    throw new Error("--ours-options takes a JSON object");
  resolveLsmOptions(o as Partial<LsmOptions>);
  return o as Partial<LsmOptions>;
}

function parseConfig(argv: string[]): Config {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      keys: { type: "string" },
      quick: { type: "boolean" },
      only: { type: "string" },
      phases: { type: "string" },
      durability: { type: "string" },
      modes: { type: "string" },
      budget: { type: "string" },
      "fsync-budget": { type: "string" },
      "fsync-ops": { type: "string" },
      "read-ops": { type: "string" },
      "scan-ops": { type: "string" },
      concurrency: { type: "string" },
      batch: { type: "string" },
      "cache-mib": { type: "string" },
      "memtable-mib": { type: "string" },
      "block-bytes": { type: "string" },
      "merge-nice": { type: "string" },
      "memory-budget-mib": { type: "string" },
      "ours-options": { type: "string" },
      seed: { type: "string" },
      "settle-max": { type: "string" },
      profile: { type: "string" },
      child: { type: "string" },
      dir: { type: "string" },
      out: { type: "string" },
      "no-interleave": { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (v.help) {
    console.log(HELP);
    process.exit(0);
  }
  const keys = Math.floor(parseNumber(v.keys, v.quick ? 100_000 : 1_000_000, "keys"));
  const memoryBudgetBytes = Math.floor(parseNumber(v["memory-budget-mib"], 0, "memory-budget-mib", 0) * MIB);
  if (memoryBudgetBytes > 0 && (v["cache-mib"] !== undefined || v["memtable-mib"] !== undefined))
    throw new Error("--memory-budget-mib decides the cache and memtable sizes: give it or them, not both");
  // The sizes the budget gives ours; LevelDB gets the same cache and write buffer.
  const budgeted = memoryBudgetBytes > 0 ? resolveLsmOptions({ memoryBudgetBytes }) : undefined;
  if (keys > 50_000_000) throw new Error("--keys is at most 50,000,000");
  return {
    keys,
    phases: parseList(v.phases, PHASES, "phase"),
    durabilities: parseList(v.durability, DURABILITIES, "durability"),
    modes: parseList(v.modes, MODES, "mode"),
    only: parseEngine(v.only, "only"),
    child: parseEngine(v.child, "child"),
    dir: v.dir,
    out: v.out,
    profileDir: v.profile,
    budgetMs: parseNumber(v.budget, 60, "budget", 0.1) * 1000,
    fsyncBudgetMs: parseNumber(v["fsync-budget"], 5, "fsync-budget", 0.1) * 1000,
    fsyncOps: Math.floor(parseNumber(v["fsync-ops"], 100_000, "fsync-ops")),
    readOps: Math.min(keys, Math.floor(parseNumber(v["read-ops"], keys, "read-ops"))),
    scanOps: Math.min(
      keys,
      Math.floor(parseNumber(v["scan-ops"], Math.max(1, Math.floor(keys / 10)), "scan-ops")),
    ),
    concurrency: Math.floor(parseNumber(v.concurrency, 32, "concurrency")),
    batchSize: Math.floor(parseNumber(v.batch, 1000, "batch")),
    cacheBytes:
      budgeted?.blockCacheBytes ??
      Math.floor(parseNumber(v["cache-mib"], DEFAULT_LSM_OPTIONS.blockCacheBytes / MIB, "cache-mib") * MIB),
    memtableBytes:
      budgeted?.memtableBytes ??
      Math.floor(
        parseNumber(v["memtable-mib"], DEFAULT_LSM_OPTIONS.memtableBytes / MIB, "memtable-mib") * MIB,
      ),
    memoryBudgetBytes,
    oursOptions: parseOursOptions(v["ours-options"]),
    blockBytes: Math.floor(parseNumber(v["block-bytes"], DEFAULT_LSM_OPTIONS.blockBytes, "block-bytes", 256)),
    mergeNice: Math.floor(parseNumber(v["merge-nice"], DEFAULT_MERGE_NICE, "merge-nice", 0)),
    seed: Math.floor(parseNumber(v.seed, 42, "seed", 0)),
    settleMaxMs: parseNumber(v["settle-max"], 60, "settle-max", 1) * 1000,
    interleave: v["no-interleave"] !== true,
  };
}

// ------------------------------------------------------------------------------------------ data

/** sfc32, seeded through splitmix32: small, fast, and the same sequence in every process. */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const splitmix = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix();
    for (let i = 0; i < 12; i++) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform-enough integer in [0, n) for n far below 2^32. */
  below(n: number): number {
    return Math.floor((this.next() / 4294967296) * n);
  }
}

function randomBuffer(seed: number, bytes: number): Buffer {
  const rng = new Rng(seed);
  const words = new Uint32Array(Math.ceil(bytes / 4));
  for (let i = 0; i < words.length; i++) words[i] = rng.next();
  return Buffer.from(words.buffer, 0, bytes);
}

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

class Dataset {
  readonly n: number;
  /** Present keys, 16 bytes each, in generation (= random) order. */
  readonly keys: Buffer;
  /** Absent keys (scan starts too): random, so they fall inside the present keys' range. */
  readonly missing: Buffer;
  readonly pool: Buffer;
  /** Key indices in ascending key order. */
  readonly sorted: Uint32Array;
  /** Key index of each present-key read. */
  readonly readSeq: Uint32Array;
  /** Raw random numbers of the overwrite phase (taken modulo the keys written so far). */
  readonly overwriteSeq: Uint32Array;

  constructor(cfg: Config) {
    this.n = cfg.keys;
    this.keys = randomBuffer(cfg.seed * 8 + 1, cfg.keys * KEY_BYTES);
    this.missing = randomBuffer(cfg.seed * 8 + 2, Math.max(cfg.readOps, cfg.scanOps) * KEY_BYTES);
    this.pool = randomBuffer(cfg.seed * 8 + 3, POOL_BYTES);
    const r = new Rng(cfg.seed * 8 + 4);
    this.readSeq = new Uint32Array(cfg.readOps);
    for (let i = 0; i < this.readSeq.length; i++) this.readSeq[i] = r.below(this.n);
    const w = new Rng(cfg.seed * 8 + 5);
    this.overwriteSeq = new Uint32Array(cfg.keys);
    for (let i = 0; i < this.overwriteSeq.length; i++) this.overwriteSeq[i] = w.next();
    // Sort by the first 6 bytes as a number, then by the whole key: no Buffer allocated per comparison.
    const hi = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) hi[i] = this.keys.readUIntBE(i * KEY_BYTES, 6);
    const keys = this.keys;
    const sorted = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) sorted[i] = i;
    sorted.sort(
      (a, b) =>
        hi[a]! - hi[b]! ||
        keys.compare(keys, b * KEY_BYTES, (b + 1) * KEY_BYTES, a * KEY_BYTES, (a + 1) * KEY_BYTES),
    );
    this.sorted = sorted;
  }

  key(i: number): Buffer {
    return this.keys.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES);
  }

  missingKey(i: number): Buffer {
    return this.missing.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES);
  }

  /** The value of key `i` at version `ver` (0: the fill; j + 1: the overwrite phase's op j). */
  value(i: number, ver: number): Buffer {
    const off = mix32(i ^ mix32(ver + 0x9e3779b9)) % (POOL_BYTES - VALUE_BYTES + 1);
    return this.pool.subarray(off, off + VALUE_BYTES);
  }

  /** Position in `sorted` of the first key >= `k`. */
  lowerBound(k: Buffer): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const j = this.sorted[mid]!;
      if (k.compare(this.keys, j * KEY_BYTES, (j + 1) * KEY_BYTES) > 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

// ------------------------------------------------------------------------------------------ engines

interface ScanResult {
  readonly count: number;
  readonly first: Uint8Array | undefined;
}

interface LevelInfo {
  /** Files per level (leveldb.num-files-at-levelN). */
  readonly filesPerLevel: number[];
  /** Sum of the Write(MB) column of leveldb.stats (flushes and compactions), in bytes. */
  readonly tableBytesWritten: number;
  readonly statsText: string;
}

interface BenchDb {
  put(key: Buffer, value: Buffer): Promise<void>;
  batch(keys: Buffer[], values: Buffer[]): Promise<void>;
  get(key: Buffer): Promise<Uint8Array | undefined>;
  scan(start: Buffer, limit: number): Promise<ScanResult>;
  /** Engine-specific wait for background work (ours: waitForBackground; LevelDB has no such call). */
  background(): Promise<void>;
  oursStats(): EngineStats | undefined;
  levelInfo(): LevelInfo | undefined;
  close(): Promise<void>;
}

class OursDb implements BenchDb {
  private constructor(private readonly e: LsmEngine) {}

  static async open(dir: string, durability: Durability, cfg: Config): Promise<OursDb> {
    const e = await LsmEngine.open(
      {
        dir,
        fs: new NodeFileSystem(),
        timers: systemRuntime().timers,
        options: {
          ...(cfg.memoryBudgetBytes > 0
            ? { durability, memoryBudgetBytes: cfg.memoryBudgetBytes, blockBytes: cfg.blockBytes }
            : {
                durability,
                memtableBytes: cfg.memtableBytes,
                blockCacheBytes: cfg.cacheBytes,
                blockBytes: cfg.blockBytes,
              }),
          ...cfg.oursOptions,
        },
        // As the product runs it (openStorage, the node): compactions in a worker thread.
        compactor: workerCompactionExecutor({ mergeNice: cfg.mergeNice }),
      },
      () => performance.now(),
    );
    return new OursDb(e);
  }

  put(key: Buffer, value: Buffer): Promise<void> {
    return this.e.put(key, value);
  }

  batch(keys: Buffer[], values: Buffer[]): Promise<void> {
    const ops: WriteOp[] = new Array(keys.length);
    for (let j = 0; j < keys.length; j++) ops[j] = { kind: "put", key: keys[j]!, value: values[j]! };
    return this.e.write(ops);
  }

  get(key: Buffer): Promise<Uint8Array | undefined> {
    return this.e.get(key);
  }

  async scan(start: Buffer, limit: number): Promise<ScanResult> {
    let count = 0;
    let first: Uint8Array | undefined;
    for await (const entry of this.e.iterate({ gte: start, limit })) {
      if (count === 0) first = entry.key;
      count++;
    }
    return { count, first };
  }

  background(): Promise<void> {
    return this.e.waitForBackground();
  }

  oursStats(): EngineStats {
    return this.e.stats();
  }

  levelInfo(): undefined {
    return undefined;
  }

  close(): Promise<void> {
    return this.e.close();
  }
}

class LevelDb implements BenchDb {
  private readonly wopts: { sync: boolean };

  private constructor(
    private readonly db: ClassicLevel<Buffer, Buffer>,
    durability: Durability,
  ) {
    this.wopts = { sync: durability === "fsync" };
  }

  static async open(dir: string, durability: Durability, cfg: Config): Promise<LevelDb> {
    const db = new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: "buffer",
      valueEncoding: "buffer",
      cacheSize: cfg.cacheBytes,
      writeBufferSize: cfg.memtableBytes,
      blockSize: cfg.blockBytes,
      // Ours does not compress; the values are random bytes anyway.
      compression: false,
    });
    await db.open();
    return new LevelDb(db, durability);
  }

  put(key: Buffer, value: Buffer): Promise<void> {
    return this.db.put(key, value, this.wopts);
  }

  batch(keys: Buffer[], values: Buffer[]): Promise<void> {
    const ops: { type: "put"; key: Buffer; value: Buffer }[] = new Array(keys.length);
    for (let j = 0; j < keys.length; j++) ops[j] = { type: "put", key: keys[j]!, value: values[j]! };
    return this.db.batch(ops, this.wopts);
  }

  get(key: Buffer): Promise<Uint8Array | undefined> {
    return this.db.get(key);
  }

  async scan(start: Buffer, limit: number): Promise<ScanResult> {
    const entries = await this.db.iterator({ gte: start, limit }).all();
    return { count: entries.length, first: entries[0]?.[0] };
  }

  background(): Promise<void> {
    return Promise.resolve();
  }

  oursStats(): undefined {
    return undefined;
  }

  levelInfo(): LevelInfo {
    const filesPerLevel: number[] = [];
    for (let l = 0; l < 7; l++)
      filesPerLevel.push(Number(this.db.getProperty(`leveldb.num-files-at-level${l}`)));
    const statsText = this.db.getProperty("leveldb.stats");
    let mb = 0;
    for (const line of statsText.split("\n")) {
      const cols = line.trim().split(/\s+/);
      if (cols.length === 6 && /^\d+$/.test(cols[0]!)) mb += Number(cols[5]);
    }
    return { filesPerLevel, tableBytesWritten: Math.round(mb * MIB), statsText };
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

function openDb(engine: EngineName, dir: string, durability: Durability, cfg: Config): Promise<BenchDb> {
  return engine === "ours" ? OursDb.open(dir, durability, cfg) : LevelDb.open(dir, durability, cfg);
}

// ------------------------------------------------------------------------------------------ measuring

/** Peak RSS, sampled every 50 ms for the whole process and per phase. */
class RssSampler {
  peak = 0;
  phasePeak = 0;
  private timer: NodeJS.Timeout | undefined;

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  sample(): void {
    const rss = process.memoryUsage.rss();
    if (rss > this.peak) this.peak = rss;
    if (rss > this.phasePeak) this.phasePeak = rss;
  }

  resetPhase(): void {
    this.phasePeak = 0;
    this.sample();
  }
}

/** Bytes this process handed to write(2) and friends (all threads): /proc/self/io wchar. */
function processWriteBytes(): number | undefined {
  try {
    const m = /^wchar:\s*(\d+)$/m.exec(fs.readFileSync("/proc/self/io", "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * Waits until the process has used under 5% of one core for two 500 ms windows in a row (both engines
 * compact in threads of their own, which process.cpuUsage counts), at most `maxMs`.
 */
async function waitCpuIdle(maxMs: number): Promise<{ ms: number; timedOut: boolean }> {
  const t0 = performance.now();
  let quiet = 0;
  while (performance.now() - t0 < maxMs) {
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    await sleep(500);
    const c = process.cpuUsage(c0);
    const wallUs = (performance.now() - w0) * 1000;
    if (c.user + c.system < 0.05 * wallUs) {
      if (++quiet >= 2) return { ms: performance.now() - t0, timedOut: false };
    } else {
      quiet = 0;
    }
  }
  return { ms: performance.now() - t0, timedOut: true };
}

interface Measured {
  ops: number;
  ms: number;
  /** Stopped by the time budget before the op count was reached. */
  bounded: boolean;
  maxOpMs: number;
  /** Latency of one call (a batch is one call), from the histogram: 50th, 99th and 99.9th percentiles. */
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
}

/**
 * Call latencies in log-spaced buckets, 1% wide from 1 us up (a fixed array: recording allocates nothing,
 * so the histogram neither grows the heap it measures nor adds to the phase's RSS).
 */
class LatencyHistogram {
  private static readonly GROWTH = Math.log(1.01);
  private static readonly BUCKETS = 2400;
  private readonly counts = new Float64Array(LatencyHistogram.BUCKETS);
  private total = 0;

  record(ms: number): void {
    const us = ms * 1000;
    const i =
      us <= 1 ? 0 : Math.min(LatencyHistogram.BUCKETS - 1, Math.ceil(Math.log(us) / LatencyHistogram.GROWTH));
    this.counts[i]!++;
    this.total++;
  }

  /** The upper edge of the bucket holding quantile q (0..1), in ms; 0 with no calls. */
  quantile(q: number): number {
    if (this.total === 0) return 0;
    const rank = Math.ceil(q * this.total);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.exp(i * LatencyHistogram.GROWTH) / 1000;
    }
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * Runs `calls` calls of `op` with `concurrency` of them in flight (each worker awaits its call before
 * taking the next index), stopping early once `budgetMs` has passed. `op` returns the user ops it did.
 */
async function measure(
  calls: number,
  concurrency: number,
  budgetMs: number,
  op: (i: number) => Promise<number>,
): Promise<Measured> {
  let next = 0;
  let ops = 0;
  let bounded = false;
  let maxOpMs = 0;
  const hist = new LatencyHistogram();
  const t0 = performance.now();
  const deadline = t0 + budgetMs;
  const worker = async () => {
    while (next < calls) {
      const s = performance.now();
      if (s >= deadline) {
        bounded = true;
        return;
      }
      const i = next++;
      // Not `ops += await op(i)`: that reads `ops` before the await and loses the other workers' counts.
      const n = await op(i);
      ops += n;
      const d = performance.now() - s;
      hist.record(d);
      if (d > maxOpMs) maxOpMs = d;
    }
  };
  const workers: Promise<void>[] = [];
  for (let w = 0; w < Math.min(concurrency, calls); w++) workers.push(worker());
  await Promise.all(workers);
  return {
    ops,
    ms: performance.now() - t0,
    bounded,
    // The histogram's buckets are 1% wide: the max is exact, a percentile never exceeds it.
    maxOpMs,
    p50Ms: Math.min(maxOpMs, hist.quantile(0.5)),
    p99Ms: Math.min(maxOpMs, hist.quantile(0.99)),
    p999Ms: Math.min(maxOpMs, hist.quantile(0.999)),
  };
}

// ------------------------------------------------------------------------------------------ child

interface ReadDelta {
  bloomChecks: number;
  bloomNegatives: number;
  bloomFalsePositives: number;
  blockCacheHits: number;
  blockCacheMisses: number;
}

interface PhaseRow {
  durability: Durability;
  phase: Phase;
  mode: Mode;
  /** Ops asked for (N, or the fsync cap). */
  target: number;
  ops: number;
  ms: number;
  opsPerSec: number;
  bounded: boolean;
  maxOpMs: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  peakRssBytes: number;
  /** Reads that returned a wrong value, a value for a missing key, or a wrong scan. */
  wrong: number;
  firstWrong?: string;
  read?: ReadDelta;
  /** 1-minute load average at the end of the phase. */
  load: number;
}

interface WriteRunInfo {
  durability: Durability;
  mode: Mode;
  /** The phases of the run: fillseq, or fillrandom (or an untimed load) and overwrite. */
  run: string;
  userOps: number;
  userBytes: number;
  /** Bytes written by the process (/proc/self/io wchar) from open to settled; undefined if unknown. */
  processWriteBytes: number | undefined;
  settleMs: number;
  settleTimedOut: boolean;
  oursAtEnd?: EngineStats;
  oursSettled?: EngineStats;
  level?: LevelInfo;
}

interface ReadSetup {
  loadedFrom: string;
  reopenMs: number;
  settleMs: number;
  settleTimedOut: boolean;
  oursAfterSettle?: EngineStats;
  oursAfterReads?: EngineStats;
  levelAfterSettle?: LevelInfo;
  levelAfterReads?: LevelInfo;
  dataDirBytes: number;
}

interface ChildResult {
  engine: EngineName;
  /** The engine source at the child's start (see sourceVersion). */
  source?: string;
  /** 1-minute load average at the child's start and end (other work on the machine skews results). */
  loadStart?: number;
  loadEnd?: number;
  keys: number;
  rows: PhaseRow[];
  writeRuns: WriteRunInfo[];
  readSetup?: ReadSetup;
  datasetMs: number;
  totalMs: number;
  maxRssBytes: number;
  sampledPeakRssBytes: number;
  anomalies: string[];
  error?: string;
  interrupted?: boolean;
}

/**
 * The engine source this process loaded: git HEAD, files under src/storage that differ from it, and a hash
 * of their contents (the engine is being changed while it is benchmarked: results name what they measured).
 */
function sourceVersion(): string {
  const hash = createHash("sha256");
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) hash.update(p).update(fs.readFileSync(p));
    }
  };
  let head = "?";
  let dirty = "";
  try {
    walk(path.join(REPO, "src", "storage"));
    const git = (args: string[]) =>
      execFileSync("git", args, { cwd: REPO, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    head = git(["rev-parse", "--short", "HEAD"]);
    const changed = git(["status", "--porcelain", "--", "src/storage"]);
    if (changed !== "") dirty = ` + ${changed.split("\n").length} changed file(s)`;
  } catch {
    // Not a git checkout: the content hash alone.
  }
  return `${head}${dirty}, src/storage sha256 ${hash.digest("hex").slice(0, 12)}`;
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) {
    const st = fs.statSync(path.join(dir, name));
    if (st.isFile()) total += st.size;
  }
  return total;
}

class ChildRun {
  private readonly rss = new RssSampler();
  private profiler: Session | undefined;
  private runCounter = 0;
  /** Version of each key in the store that becomes the read store (0: the fill). */
  private readonly ver: Uint32Array;

  constructor(
    private readonly cfg: Config,
    private readonly engine: EngineName,
    private readonly root: string,
    private readonly ds: Dataset,
    readonly result: ChildResult,
  ) {
    this.ver = new Uint32Array(ds.n);
  }

  private log(msg: string): void {
    process.stderr.write(`[${this.engine}] ${msg}\n`);
  }

  private freshDir(label: string): string {
    const d = path.join(this.root, `${String(++this.runCounter).padStart(2, "0")}-${label}`);
    fs.rmSync(d, { recursive: true, force: true });
    return d;
  }

  private cap(d: Durability, n: number): number {
    return d === "fsync" ? Math.min(n, this.cfg.fsyncOps) : n;
  }

  private budget(d: Durability): number {
    return d === "fsync" ? this.cfg.fsyncBudgetMs : this.cfg.budgetMs;
  }

  /** Runs one timed phase: GC first, RSS and (optionally) CPU profile around it, a row after it. */
  private async phase(
    db: BenchDb,
    d: Durability,
    phase: Phase,
    mode: Mode,
    target: number,
    body: () => Promise<Measured & { wrong?: number; firstWrong?: string }>,
  ): Promise<PhaseRow> {
    collectGarbage();
    const before = db.oursStats();
    this.rss.resetPhase();
    if (this.profiler) await this.profiler.post("Profiler.start");
    const m = await body();
    if (this.profiler) {
      const { profile } = await this.profiler.post("Profiler.stop");
      const file = path.join(this.cfg.profileDir!, `${this.engine}-${d}-${phase}-${mode}.cpuprofile`);
      fs.writeFileSync(file, JSON.stringify(profile));
    }
    this.rss.sample();
    const after = db.oursStats();
    const row: PhaseRow = {
      durability: d,
      phase,
      mode,
      target,
      ops: m.ops,
      ms: m.ms,
      opsPerSec: m.ops / (m.ms / 1000),
      bounded: m.bounded,
      maxOpMs: m.maxOpMs,
      p50Ms: m.p50Ms,
      p99Ms: m.p99Ms,
      p999Ms: m.p999Ms,
      peakRssBytes: this.rss.phasePeak,
      wrong: m.wrong ?? 0,
      load: os.loadavg()[0] ?? 0,
    };
    if (m.firstWrong !== undefined) row.firstWrong = m.firstWrong;
    if (before && after && READ_PHASES.includes(phase))
      row.read = {
        bloomChecks: after.bloomChecks - before.bloomChecks,
        bloomNegatives: after.bloomNegatives - before.bloomNegatives,
        bloomFalsePositives: after.bloomFalsePositives - before.bloomFalsePositives,
        blockCacheHits: after.blockCacheHits - before.blockCacheHits,
        blockCacheMisses: after.blockCacheMisses - before.blockCacheMisses,
      };
    this.result.rows.push(row);
    this.log(
      `${d.padEnd(5)} ${phase.padEnd(11)} ${mode.padEnd(10)} ${String(m.ops).padStart(9)} ops ` +
        `${(m.ms / 1000).toFixed(2).padStart(7)} s ${fmtInt(row.opsPerSec).padStart(10)} ops/s` +
        `${m.bounded ? " (time budget)" : ""}${row.wrong > 0 ? ` WRONG ${row.wrong}` : ""}`,
    );
    if (row.wrong > 0)
      this.result.anomalies.push(
        `${d} ${phase} ${mode}: ${row.wrong} wrong results (first: ${row.firstWrong})`,
      );
    return row;
  }

  /** Writes `count` ops, op j putting key keyOf(j) at version verOf(j), in the given mode. */
  private writeOps(
    db: BenchDb,
    mode: Mode,
    count: number,
    budgetMs: number,
    keyOf: (j: number) => number,
    verOf: (j: number) => number,
    track: boolean,
  ): Promise<Measured> {
    const ds = this.ds;
    const ver = this.ver;
    if (mode === "batch") {
      const b = this.cfg.batchSize;
      return measure(Math.ceil(count / b), 1, budgetMs, async (c) => {
        const s = c * b;
        const e = Math.min(count, s + b);
        const keys: Buffer[] = new Array(e - s);
        const values: Buffer[] = new Array(e - s);
        for (let j = s; j < e; j++) {
          const i = keyOf(j);
          const v = verOf(j);
          keys[j - s] = ds.key(i);
          values[j - s] = ds.value(i, v);
          if (track) ver[i] = v;
        }
        await db.batch(keys, values);
        return e - s;
      });
    }
    return measure(count, mode === "serial" ? 1 : this.cfg.concurrency, budgetMs, async (j) => {
      const i = keyOf(j);
      const v = verOf(j);
      if (track) ver[i] = v;
      await db.put(ds.key(i), ds.value(i, v));
      return 1;
    });
  }

  /** The warm-up (file comment): puts, batches and gets of 15-byte keys on a scratch store, untimed. */
  private async warmUp(): Promise<void> {
    const dir = this.freshDir("warm-up");
    const db = await openDb(this.engine, dir, "none", this.cfg);
    const key = (i: number) => {
      const k = Buffer.alloc(15);
      k.writeUInt32BE(i, 11);
      return k;
    };
    const value = this.ds.value(0, 0);
    const half = WARMUP_OPS / 2;
    let next = 0;
    const writer = async () => {
      while (next < half) await db.put(key(next++), value);
    };
    await Promise.all(Array.from({ length: this.cfg.concurrency }, writer));
    for (let b = half; b < WARMUP_OPS; b += this.cfg.batchSize) {
      const n = Math.min(this.cfg.batchSize, WARMUP_OPS - b);
      await db.batch(
        Array.from({ length: n }, (_, i) => key(b + i)),
        Array.from({ length: n }, () => value),
      );
    }
    for (let i = 0; i < WARMUP_OPS; i += 7) await db.get(key(i));
    await this.closeAndRemove(db, dir);
  }

  /** Background work of the engine, then CPU idle: what "settled" means before reads and for write amp. */
  private async settle(db: BenchDb): Promise<{ ms: number; timedOut: boolean }> {
    const t0 = performance.now();
    await db.background();
    const idle = await waitCpuIdle(Math.max(1000, this.cfg.settleMaxMs - (performance.now() - t0)));
    return { ms: performance.now() - t0, timedOut: idle.timedOut };
  }

  private async closeAndRemove(db: BenchDb, dir: string): Promise<void> {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  async run(): Promise<void> {
    const { cfg, ds } = this;
    this.rss.start();
    if (cfg.profileDir !== undefined) {
      fs.mkdirSync(cfg.profileDir, { recursive: true });
      this.profiler = new Session();
      this.profiler.connect();
      await this.profiler.post("Profiler.enable");
    }
    await this.warmUp();
    const has = (p: Phase) => cfg.phases.includes(p);
    const wantReads = READ_PHASES.some(has);
    let readDb: BenchDb | undefined;
    let readDir = "";
    let readFilled = 0;
    let readFrom = "";

    for (const d of cfg.durabilities) {
      const count = this.cap(d, ds.n);
      const budgetMs = this.budget(d);
      for (const mode of cfg.modes) {
        if (has("fillseq")) {
          const dir = this.freshDir(`${d}-${mode}-fillseq`);
          const io0 = processWriteBytes();
          const db = await openDb(this.engine, dir, d, cfg);
          const row = await this.phase(db, d, "fillseq", mode, count, () =>
            this.writeOps(
              db,
              mode,
              count,
              budgetMs,
              (j) => ds.sorted[j]!,
              () => 0,
              false,
            ),
          );
          const atEnd = db.oursStats();
          const st = await this.settle(db);
          const io1 = processWriteBytes();
          this.result.writeRuns.push(this.writeRunInfo(d, mode, "fillseq", row.ops, io0, io1, st, db, atEnd));
          await this.closeAndRemove(db, dir);
        }
        if (has("fillrandom") || has("overwrite")) {
          const keep = wantReads && readDb === undefined && d === "none" && mode === "batch";
          const dir = this.freshDir(`${d}-${mode}-random`);
          const io0 = processWriteBytes();
          const db = await openDb(this.engine, dir, d, cfg);
          if (keep) this.ver.fill(0);
          let filled: number;
          let userOps = 0;
          let runLabel = has("fillrandom") ? "fillrandom" : "load (untimed)";
          if (has("fillrandom")) {
            const row = await this.phase(db, d, "fillrandom", mode, count, () =>
              this.writeOps(
                db,
                mode,
                count,
                budgetMs,
                (j) => j,
                () => 0,
                keep,
              ),
            );
            filled = row.ops;
          } else {
            filled = count;
            await this.load(db, 0, count);
          }
          userOps += filled;
          if (has("overwrite") && filled > 0) {
            const f = filled;
            const row = await this.phase(db, d, "overwrite", mode, count, () =>
              this.writeOps(
                db,
                mode,
                count,
                budgetMs,
                (j) => ds.overwriteSeq[j]! % f,
                (j) => j + 1,
                keep,
              ),
            );
            userOps += row.ops;
            runLabel += "+overwrite";
          }
          const atEnd = db.oursStats();
          const st = await this.settle(db);
          const io1 = processWriteBytes();
          this.result.writeRuns.push(this.writeRunInfo(d, mode, runLabel, userOps, io0, io1, st, db, atEnd));
          if (keep) {
            readDb = db;
            readDir = dir;
            readFilled = filled;
            readFrom = `the durability-none batch fillrandom${has("overwrite") ? "+overwrite" : ""} store`;
          } else {
            await this.closeAndRemove(db, dir);
          }
        }
      }
    }

    if (!wantReads) return;
    if (readDb === undefined) {
      readDir = this.freshDir("read");
      readDb = await openDb(this.engine, readDir, "none", cfg);
      this.ver.fill(0);
      readFrom = "a store loaded (untimed) in batches";
    }
    if (readFilled < ds.n) {
      this.log(`loading keys ${readFilled}..${ds.n} (untimed) for the read phases`);
      await this.load(readDb, readFilled, ds.n);
    }
    // Reopen, so both engines start the reads from their tables with a cold block cache, then settle.
    const t0 = performance.now();
    await readDb.close();
    readDb = await openDb(this.engine, readDir, "none", cfg);
    const reopenMs = performance.now() - t0;
    const st = await this.settle(readDb);
    const setup: ReadSetup = {
      loadedFrom: readFrom,
      reopenMs,
      settleMs: st.ms,
      settleTimedOut: st.timedOut,
      dataDirBytes: dirBytes(readDir),
    };
    const s0 = readDb.oursStats();
    if (s0) setup.oursAfterSettle = s0;
    const l0 = readDb.levelInfo();
    if (l0) setup.levelAfterSettle = l0;
    this.result.readSetup = setup;
    this.log(`read store: reopened in ${fmtMs(reopenMs)}, settled in ${fmtMs(st.ms)}`);
    if (st.timedOut)
      this.result.anomalies.push("read store: background work did not settle within --settle-max");

    for (const phase of READ_PHASES) {
      if (!has(phase)) continue;
      for (const mode of cfg.modes) {
        if (mode === "batch") continue;
        await this.readPhase(readDb, phase, mode);
      }
    }
    const s1 = readDb.oursStats();
    if (s1) setup.oursAfterReads = s1;
    const l1 = readDb.levelInfo();
    if (l1) setup.levelAfterReads = l1;
    await this.closeAndRemove(readDb, readDir);
  }

  private writeRunInfo(
    d: Durability,
    mode: Mode,
    run: string,
    userOps: number,
    io0: number | undefined,
    io1: number | undefined,
    st: { ms: number; timedOut: boolean },
    db: BenchDb,
    atEnd: EngineStats | undefined,
  ): WriteRunInfo {
    const info: WriteRunInfo = {
      durability: d,
      mode,
      run,
      userOps,
      userBytes: userOps * (KEY_BYTES + VALUE_BYTES),
      processWriteBytes: io0 !== undefined && io1 !== undefined ? io1 - io0 : undefined,
      settleMs: st.ms,
      settleTimedOut: st.timedOut,
    };
    const settled = db.oursStats();
    if (atEnd) info.oursAtEnd = atEnd;
    if (settled) {
      info.oursSettled = settled;
      if (settled.writeStalls > 0)
        this.result.anomalies.push(
          `${d} ${mode} ${run}: ${settled.writeStalls} write stalls, ${fmtMs(settled.writeStallMs)} in total`,
        );
    }
    const li = db.levelInfo();
    if (li) info.level = li;
    if (st.timedOut) this.result.anomalies.push(`${d} ${mode} ${run}: background work did not settle`);
    return info;
  }

  /** Untimed batch load of keys [from, to) at version 0 (bounded by count; a safety time limit). */
  private async load(db: BenchDb, from: number, to: number): Promise<void> {
    const m = await this.writeOps(
      db,
      "batch",
      to - from,
      30 * 60 * 1000,
      (j) => from + j,
      () => 0,
      true,
    );
    if (m.bounded) throw new Error("untimed load did not finish within 30 minutes");
  }

  private readPhase(db: BenchDb, phase: Phase, mode: Mode): Promise<PhaseRow> {
    const { cfg, ds } = this;
    const conc = mode === "serial" ? 1 : cfg.concurrency;
    const ver = this.ver;
    let wrong = 0;
    let firstWrong: string | undefined;
    const bad = (what: string) => {
      if (wrong++ === 0) firstWrong = what;
    };
    if (phase === "readpresent") {
      return this.phase(db, "none", phase, mode, cfg.readOps, async () => {
        const m = await measure(cfg.readOps, conc, cfg.budgetMs, async (j) => {
          const i = ds.readSeq[j]!;
          const v = await db.get(ds.key(i));
          if (v === undefined || !ds.value(i, ver[i]!).equals(v))
            bad(`key #${i} ${v === undefined ? "missing" : "has a wrong value"}`);
          return 1;
        });
        return { ...m, wrong, firstWrong };
      });
    }
    if (phase === "readmissing") {
      return this.phase(db, "none", phase, mode, cfg.readOps, async () => {
        const m = await measure(cfg.readOps, conc, cfg.budgetMs, async (j) => {
          const v = await db.get(ds.missingKey(j));
          if (v !== undefined) bad(`absent key #${j} returned a value`);
          return 1;
        });
        return { ...m, wrong, firstWrong };
      });
    }
    return this.phase(db, "none", phase, mode, cfg.scanOps, async () => {
      const m = await measure(cfg.scanOps, conc, cfg.budgetMs, async (j) => {
        const start = ds.missingKey(j);
        const r = await db.scan(start, SCAN_LENGTH);
        const lb = ds.lowerBound(start);
        const expected = Math.min(SCAN_LENGTH, ds.n - lb);
        if (r.count !== expected) bad(`scan #${j} returned ${r.count} entries, expected ${expected}`);
        else if (expected > 0 && (r.first === undefined || !ds.key(ds.sorted[lb]!).equals(r.first)))
          bad(`scan #${j} started at the wrong key`);
        return 1;
      });
      return { ...m, wrong, firstWrong };
    });
  }

  finish(): void {
    this.rss.stop();
    this.rss.sample();
    this.result.sampledPeakRssBytes = this.rss.peak;
    this.result.maxRssBytes = process.resourceUsage().maxRSS * 1024;
    this.profiler?.disconnect();
  }
}

async function childMain(cfg: Config, engine: EngineName): Promise<void> {
  const ownRoot = cfg.dir === undefined;
  const root = cfg.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-bench-"));
  fs.mkdirSync(root, { recursive: true });
  const t0 = performance.now();
  const result: ChildResult = {
    engine,
    source: sourceVersion(),
    loadStart: os.loadavg()[0] ?? 0,
    keys: cfg.keys,
    rows: [],
    writeRuns: [],
    datasetMs: 0,
    totalMs: 0,
    maxRssBytes: 0,
    sampledPeakRssBytes: 0,
    anomalies: [],
  };
  let run: ChildRun | undefined;
  const save = () => {
    result.totalMs = performance.now() - t0;
    result.loadEnd = os.loadavg()[0] ?? 0;
    run?.finish();
    if (cfg.out !== undefined) fs.writeFileSync(cfg.out, JSON.stringify(result));
  };
  const removeRoot = () => {
    if (ownRoot) fs.rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    result.interrupted = true;
    result.error = `interrupted by ${sig}`;
    save();
    removeRoot();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  process.stderr.write(`[${engine}] generating ${fmtInt(cfg.keys)} keys (seed ${cfg.seed})\n`);
  const ds = new Dataset(cfg);
  result.datasetMs = performance.now() - t0;
  run = new ChildRun(cfg, engine, root, ds, result);
  let failed = false;
  try {
    await run.run();
  } catch (err) {
    failed = true;
    result.error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`[${engine}] FAILED: ${result.error}\n`);
  } finally {
    save();
    removeRoot();
  }
  if (cfg.out === undefined) printReport(cfg, machineFacts(os.tmpdir()), { [engine]: result });
  process.exitCode = failed ? 1 : 0;
}

// ------------------------------------------------------------------------------------------ parent

interface MachineFacts {
  cpu: string;
  cores: number;
  totalMemBytes: number;
  node: string;
  platform: string;
  dataDir: string;
  diskFreeBytes: number | undefined;
  mount: string | undefined;
}

function machineFacts(dir: string): MachineFacts {
  const cpus = os.cpus();
  let diskFreeBytes: number | undefined;
  try {
    const s = fs.statfsSync(dir);
    diskFreeBytes = s.bavail * s.bsize;
  } catch {
    diskFreeBytes = undefined;
  }
  let mount: string | undefined;
  try {
    // The longest mount point that is a prefix of the dir: device, mount point, type.
    let best = "";
    for (const line of fs.readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [dev, mnt, type] = line.split(" ");
      if (dev === undefined || mnt === undefined || type === undefined) continue;
      const prefix = mnt.endsWith("/") ? mnt : `${mnt}/`;
      if ((dir === mnt || dir.startsWith(prefix)) && mnt.length >= best.length) {
        best = mnt;
        mount = `${dev} on ${mnt} (${type})`;
      }
    }
  } catch {
    mount = undefined;
  }
  return {
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    totalMemBytes: os.totalmem(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    dataDir: dir,
    diskFreeBytes,
    mount,
  };
}

function runChild(
  engine: EngineName,
  root: string,
  argv: string[],
  tag: string,
  onSpawn: (c: ChildProcess) => void,
): Promise<ChildResult> {
  const out = path.join(root, `${engine}-${tag}.json`);
  const args = [
    "--expose-gc",
    "--import",
    "tsx",
    SCRIPT,
    ...argv,
    "--child",
    engine,
    "--dir",
    path.join(root, `${engine}-${tag}`),
    "--out",
    out,
  ];
  return new Promise((resolve) => {
    const c = spawn(process.execPath, args, { stdio: "inherit" });
    onSpawn(c);
    c.on("exit", (code, signal) => {
      let r: ChildResult;
      try {
        r = JSON.parse(fs.readFileSync(out, "utf8")) as ChildResult;
      } catch {
        r = {
          engine,
          keys: 0,
          rows: [],
          writeRuns: [],
          datasetMs: 0,
          totalMs: 0,
          maxRssBytes: 0,
          sampledPeakRssBytes: 0,
          anomalies: [],
        };
      }
      if (code !== 0 && r.error === undefined)
        r.error = `child exited with ${signal !== null ? `signal ${signal}` : `code ${code}`}`;
      resolve(r);
    });
    c.on("error", (err) => {
      process.stderr.write(`could not start the ${engine} child: ${err.message}\n`);
    });
  });
}

/** argv without the given --name VALUE / --name=VALUE flags. */
function stripFlags(argv: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (names.some((n) => a === `--${n}`)) {
      i++;
      continue;
    }
    if (names.some((n) => a.startsWith(`--${n}=`))) continue;
    out.push(a);
  }
  return out;
}

/** One engine's results from several children (groups of phases) as one. */
function mergeResults(parts: ChildResult[]): ChildResult {
  const first = parts[0]!;
  const sources = [...new Set(parts.map((p) => p.source).filter((x) => x !== undefined))];
  const merged: ChildResult = {
    engine: first.engine,
    keys: first.keys,
    rows: parts.flatMap((p) => p.rows),
    writeRuns: parts.flatMap((p) => p.writeRuns),
    datasetMs: Math.max(...parts.map((p) => p.datasetMs)),
    totalMs: parts.reduce((a, p) => a + p.totalMs, 0),
    maxRssBytes: Math.max(...parts.map((p) => p.maxRssBytes)),
    sampledPeakRssBytes: Math.max(...parts.map((p) => p.sampledPeakRssBytes)),
    anomalies: parts.flatMap((p) => p.anomalies),
  };
  if (sources.length > 0) merged.source = sources.join(" | ");
  if (sources.length > 1)
    merged.anomalies.push(`the engine source changed between children: ${merged.source}`);
  const setup = parts.find((p) => p.readSetup !== undefined)?.readSetup;
  if (setup) merged.readSetup = setup;
  if (first.loadStart !== undefined) merged.loadStart = first.loadStart;
  const last = parts[parts.length - 1]!;
  if (last.loadEnd !== undefined) merged.loadEnd = last.loadEnd;
  const errors = parts.map((p) => p.error).filter((e) => e !== undefined);
  if (errors.length > 0) merged.error = errors.join("\n");
  if (parts.some((p) => p.interrupted)) merged.interrupted = true;
  return merged;
}

async function parentMain(cfg: Config, argv: string[]): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-bench-"));
  const cleanup = () => fs.rmSync(root, { recursive: true, force: true });
  process.on("exit", cleanup);
  let child: ChildProcess | undefined;
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = true;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill(sig);
    } else {
      cleanup();
      process.exit(130);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const machine = machineFacts(root);
  const engines = ENGINES.filter((e) => cfg.only === undefined || cfg.only === e);
  const parts: Record<EngineName, ChildResult[]> = { ours: [], level: [] };
  const run = async (engine: EngineName, tag: string, args: string[]) => {
    if (interrupted) return;
    parts[engine].push(
      await runChild(engine, root, args, tag, (c) => {
        child = c;
      }),
    );
    child = undefined;
  };
  if (!cfg.interleave) {
    const args = stripFlags(argv, ["only"]);
    for (const engine of engines) await run(engine, "all", args);
  } else {
    // Groups of phases, each run by one child per engine, engines alternating.
    const groups: { tag: string; durability: Durability; phases: Phase[] }[] = [];
    const writes = cfg.phases.filter((p) => WRITE_PHASES.includes(p));
    const reads = cfg.phases.filter((p) => READ_PHASES.includes(p));
    if (writes.length > 0)
      for (const d of cfg.durabilities) groups.push({ tag: `w-${d}`, durability: d, phases: writes });
    if (reads.length > 0) groups.push({ tag: "reads", durability: "none", phases: reads });
    const base = stripFlags(argv, ["only", "phases", "durability"]);
    for (const g of groups)
      for (const engine of engines)
        await run(engine, g.tag, [...base, "--durability", g.durability, "--phases", g.phases.join(",")]);
  }
  const results: Partial<Record<EngineName, ChildResult>> = {};
  for (const engine of engines) if (parts[engine].length > 0) results[engine] = mergeResults(parts[engine]);
  printReport(cfg, machine, results);
  cleanup();
  if (interrupted) process.exit(130);
  if (Object.values(results).some((r) => r?.error !== undefined)) process.exitCode = 1;
}

// ------------------------------------------------------------------------------------------ report

function fmtInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-";
}

function fmtMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function fmtMiB(b: number): string {
  return (b / MIB).toFixed(b >= 100 * MIB ? 0 : 1);
}

function fmtBytes(b: number): string {
  if (b >= 1024 * MIB) return `${(b / (1024 * MIB)).toFixed(1)} GiB`;
  if (b >= MIB) return `${(b / MIB).toFixed(1)} MiB`;
  if (b >= 1024) return `${(b / 1024).toFixed(1)} KiB`;
  return `${b} B`;
}

function section(title: string): string {
  return `-- ${title} ${"-".repeat(Math.max(3, 100 - title.length - 4))}`;
}

function pct(num: number, den: number): string {
  return den > 0 ? `${((100 * num) / den).toFixed(2)}%` : "-";
}

function table(headers: string[], rows: string[][], leftCols = 2): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => (i < leftCols ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [fmt(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(fmt)].join("\n");
}

interface Target {
  readonly label: string;
  readonly min: number;
}

function targetFor(phase: Phase): Target | undefined {
  if (phase === "fillrandom" || phase === "overwrite") return { label: ">=2x", min: 2 };
  if (phase === "readpresent") return { label: ">=1x", min: 1 };
  if (phase === "readmissing") return { label: ">=2x", min: 2 };
  return undefined;
}

function modeLabel(mode: Mode, cfg: Config): string {
  if (mode === "concurrent") return `c${cfg.concurrency}`;
  if (mode === "batch") return `batch${cfg.batchSize}`;
  return mode;
}

function printReport(cfg: Config, m: MachineFacts, results: Partial<Record<EngineName, ChildResult>>): void {
  const ours = results.ours;
  const level = results.level;
  const lines: string[] = [];
  const out = (s = "") => lines.push(s);
  const misses: string[] = [];
  let checked = 0;

  out();
  out("=".repeat(100));
  out(`ringstore storage benchmark: ours (LsmEngine + NodeFileSystem) vs classic-level (LevelDB)`);
  out("=".repeat(100));
  out(`CPU          ${m.cpu}, ${m.cores} cores`);
  out(`memory       ${fmtBytes(m.totalMemBytes)}`);
  out(`node         ${m.node} (${m.platform})`);
  const sources = [...new Set([ours?.source, level?.source].filter((x) => x !== undefined))];
  out(`engine src   ${sources.length > 0 ? sources.join(" | ") : "?"} (at the start of each child)`);
  out(`data dir     ${m.dataDir}`);
  out(
    `filesystem   ${m.mount ?? "unknown"}; free ${m.diskFreeBytes !== undefined ? fmtBytes(m.diskFreeBytes) : "?"}`,
  );
  out(
    `data         ${fmtInt(cfg.keys)} keys x (${KEY_BYTES} B key + ${VALUE_BYTES} B value) = ` +
      `${fmtBytes(cfg.keys * (KEY_BYTES + VALUE_BYTES))} of user data; seed ${cfg.seed}`,
  );
  out(
    `settings     memtable/write buffer ${fmtBytes(cfg.memtableBytes)} both; block cache ${fmtBytes(cfg.cacheBytes)} both; ` +
      `data blocks ${fmtBytes(cfg.blockBytes)} both; ours' merge thread at nice +${cfg.mergeNice};`,
  );
  if (Object.keys(cfg.oursOptions).length > 0)
    out(`             ours also ${JSON.stringify(cfg.oursOptions)}`);
  out(
    `             bloom 10 bits/key both; LevelDB compression off (ours has none), max_file_size 2 MiB (default);`,
  );
  out(
    `             ours compactions and flushes in two worker threads, tableTargetBytes ${fmtBytes(DEFAULT_LSM_OPTIONS.tableTargetBytes)}, size-tiered; ` +
      `LevelDB leveled`,
  );
  out(`durability   none:  ours durability "none" / level sync:false (acknowledged once written to the OS)`);
  out(
    `             fsync: ours durability "fsync" (group commit) / level sync:true (fdatasync per acked write)`,
  );
  out(
    `bounds       none phases: ${fmtInt(cfg.keys)} ops (scans ${fmtInt(cfg.scanOps)}, gets ${fmtInt(cfg.readOps)}) ` +
      `or ${cfg.budgetMs / 1000} s; fsync phases: ${fmtInt(Math.min(cfg.keys, cfg.fsyncOps))} ops or ` +
      `${cfg.fsyncBudgetMs / 1000} s, whichever first`,
  );
  out(
    `modes        serial = awaited one at a time; c${cfg.concurrency} = ${cfg.concurrency} concurrent ` +
      `callers; batch${cfg.batchSize} = awaited batches of ${cfg.batchSize}`,
  );
  out(
    cfg.interleave
      ? "processes    a child process per engine per group of phases (writes/none, writes/fsync, reads), " +
          "engines alternating"
      : "processes    one child process per engine, run one after the other",
  );
  out(
    "             so RSS is per engine; load o/l = 1-minute load average at the end of the phase (2+ on 2 cores",
  );
  out("             means other work competed with the benchmark)");
  out(`ops          "*" = stopped by the time budget; ratio = ours ops/s / level ops/s`);

  const rowOf = (r: ChildResult | undefined, d: Durability, p: Phase, mode: Mode) =>
    r?.rows.find((x) => x.durability === d && x.phase === p && x.mode === mode);
  const opsCell = (r: PhaseRow | undefined) => (r ? `${fmtInt(r.ops)}${r.bounded ? "*" : ""}` : "-");
  const phaseTable = (d: Durability, phases: readonly Phase[], modes: readonly Mode[]) => {
    const rows: string[][] = [];
    for (const p of phases)
      for (const mode of modes) {
        const a = rowOf(ours, d, p, mode);
        const b = rowOf(level, d, p, mode);
        if (!a && !b) continue;
        const ratio = a && b ? a.opsPerSec / b.opsPerSec : Number.NaN;
        const t = targetFor(p);
        let target = "";
        if (t && Number.isFinite(ratio)) {
          checked++;
          const pass = ratio >= t.min;
          target = `${t.label} ${pass ? "PASS" : "MISS"}`;
          if (!pass)
            misses.push(`${d} ${p} ${modeLabel(mode, cfg)}: ${ratio.toFixed(2)}x (target ${t.label})`);
        } else if (t) target = t.label;
        const same = !a || !b || (a.ops === b.ops && a.bounded === b.bounded);
        const ops = same ? opsCell(a ?? b) : `${opsCell(a)} / ${opsCell(b)}`;
        const wrong = (a?.wrong ?? 0) + (b?.wrong ?? 0) > 0 ? ` WRONG ${a?.wrong ?? 0}/${b?.wrong ?? 0}` : "";
        rows.push([
          p,
          modeLabel(mode, cfg),
          ops,
          a ? fmtInt(a.opsPerSec) : "-",
          b ? fmtInt(b.opsPerSec) : "-",
          Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : "-",
          target,
          `${a ? a.maxOpMs.toFixed(1) : "-"} / ${b ? b.maxOpMs.toFixed(1) : "-"}`,
          `${a ? fmtMiB(a.peakRssBytes) : "-"} / ${b ? fmtMiB(b.peakRssBytes) : "-"}`,
          `${a?.load.toFixed(1) ?? "-"} / ${b?.load.toFixed(1) ?? "-"}${wrong}`,
        ]);
      }
    return rows.length === 0
      ? undefined
      : table(
          [
            "phase",
            "mode",
            "ops",
            "ours ops/s",
            "level ops/s",
            "ratio",
            "target",
            "max op ms o/l",
            "peak RSS MiB o/l",
            "load o/l",
          ],
          rows,
        );
  };

  for (const d of cfg.durabilities) {
    const t = phaseTable(d, WRITE_PHASES, cfg.modes);
    if (!t) continue;
    out();
    out(
      d === "none"
        ? section("writes, durability none")
        : section(
            `writes, durability fsync (bounded: ${fmtInt(Math.min(cfg.keys, cfg.fsyncOps))} ops or ` +
              `${cfg.fsyncBudgetMs / 1000} s per phase, whichever first; small stores)`,
          ),
    );
    out(t);
  }
  // Write latency against LevelDB's (issue 18: no write stalls): per call, a batch being one call.
  const latRows: string[][] = [];
  const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  for (const d of cfg.durabilities)
    for (const p of WRITE_PHASES)
      for (const mode of cfg.modes) {
        const a = rowOf(ours, d, p, mode);
        const b = rowOf(level, d, p, mode);
        if (!a) continue;
        const verdicts: string[] = [];
        const check = (label: string, pass: boolean, detail: string) => {
          checked++;
          verdicts.push(`${label} ${pass ? "ok" : "MISS"}`);
          if (!pass) misses.push(`${d} ${p} ${modeLabel(mode, cfg)}: ${detail}`);
        };
        const ratio = b ? a.opsPerSec / b.opsPerSec : Number.NaN;
        if (b) {
          check("p99.9", a.p999Ms <= b.p999Ms, `p99.9 ${ms(a.p999Ms)} ms > level's ${ms(b.p999Ms)} ms`);
          check(
            "max",
            a.maxOpMs <= b.maxOpMs,
            `longest write ${ms(a.maxOpMs)} ms > level's ${ms(b.maxOpMs)} ms`,
          );
          check(">=3x", ratio >= 3, `${ratio.toFixed(2)}x the throughput of level (target >=3x)`);
        }
        const pair = (x: number, y: number | undefined) => `${ms(x)} / ${y === undefined ? "-" : ms(y)}`;
        latRows.push([
          `${d} ${p}`,
          modeLabel(mode, cfg),
          pair(a.p50Ms, b?.p50Ms),
          pair(a.p99Ms, b?.p99Ms),
          pair(a.p999Ms, b?.p999Ms),
          pair(a.maxOpMs, b?.maxOpMs),
          Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : "-",
          verdicts.join(", "),
        ]);
      }
  if (latRows.length > 0) {
    out();
    out(section("write latency per call, ms, ours / level (a batch is one call)"));
    out(table(["phase", "mode", "p50", "p99", "p99.9", "max", "ratio", "targets"], latRows));
    out(
      "targets (issue 18): p99.9 and the longest call at most level's, throughput at least 3x level's; " +
        "percentiles are bucket upper edges, 1% wide",
    );
  }

  const rt = phaseTable(
    "none",
    READ_PHASES,
    cfg.modes.filter((x) => x !== "batch"),
  );
  if (rt) {
    out();
    out(section("reads (store of all keys, closed + reopened, then settled; same key sequence both)"));
    out(rt);
    for (const r of [ours, level]) {
      const s = r?.readSetup;
      if (!s) continue;
      out(
        `${r.engine.padEnd(5)}: read store = ${s.loadedFrom}; reopen ${fmtMs(s.reopenMs)}; settle ` +
          `${fmtMs(s.settleMs)}${s.settleTimedOut ? " (TIMED OUT)" : ""}; data dir ${fmtBytes(s.dataDirBytes)}`,
      );
    }
    out(
      `settle = ours: await waitForBackground(), then both: wait until the process uses < 5% of a core for ` +
        `two 500 ms windows (LevelDB compacts in a background thread), at most ${cfg.settleMaxMs / 1000} s`,
    );
  }

  // Write amplification.
  const waRows: string[][] = [];
  const runsOf = (r: ChildResult | undefined) => r?.writeRuns ?? [];
  for (const w of runsOf(ours)) {
    const lw = runsOf(level).find(
      (x) => x.durability === w.durability && x.mode === w.mode && x.run === w.run,
    );
    const s = w.oursSettled;
    const e = w.oursAtEnd;
    let target = "";
    if (s && w.durability === "none") {
      checked++;
      const pass = s.writeAmplification < 10;
      target = `<10 ${pass ? "PASS" : "MISS"}`;
      if (!pass)
        misses.push(
          `write amplification ${w.durability} ${modeLabel(w.mode, cfg)} ${w.run}: ${s.writeAmplification.toFixed(2)}`,
        );
    }
    waRows.push([
      `${w.durability} ${modeLabel(w.mode, cfg)}`,
      w.run,
      fmtInt(w.userOps),
      e ? e.writeAmplification.toFixed(2) : "-",
      s ? s.writeAmplification.toFixed(2) : "-",
      target,
      s ? fmtMiB(s.userBytesWritten) : "-",
      s ? fmtMiB(s.walBytesWritten) : "-",
      s ? fmtMiB(s.tableBytesWritten) : "-",
      s ? `${s.flushes}/${s.compactions}` : "-",
      s ? `${s.writeStalls}/${fmtMs(s.writeStallMs)}` : "-",
      s ? `${s.writeDelays}/${fmtMs(s.writeDelayMs)}` : "-",
      w.processWriteBytes !== undefined ? (w.processWriteBytes / w.userBytes).toFixed(2) : "-",
      lw?.processWriteBytes !== undefined ? (lw.processWriteBytes / lw.userBytes).toFixed(2) : "-",
    ]);
  }
  if (waRows.length > 0) {
    out();
    out(section('write amplification (ours stats(); "os" = bytes written by the process / user bytes)'));
    out(
      table(
        [
          "run",
          "phases",
          "user ops",
          "ours WA end",
          "ours WA settled",
          "target",
          "user MiB",
          "wal MiB",
          "table MiB",
          "flush/comp",
          "stalls",
          "delays",
          "ours os",
          "level os",
        ],
        waRows,
      ),
    );
    out(
      `"end" = right after the last write phase; "settled" = after background work finished (see settle); ` +
        `WA = (wal + table + manifest bytes) / user bytes`,
    );
  }

  // Our engine's internals.
  if (ours) {
    const s = ours.readSetup?.oursAfterSettle;
    if (s) {
      out();
      out(section("ours: the read store after reopen + settle"));
      out(
        `runs (newest first): ${s.levels.map((l) => `#${l.level}: ${l.tables} tables ${fmtMiB(l.bytes)} MiB`).join("; ")}`,
      );
      out(
        `memtable ${fmtBytes(s.memtableBytes)}, immutable ${s.immutableMemtables}; live keys estimate ` +
          `${fmtInt(s.liveKeysEstimate)}; flushes ${s.flushes}, compactions ${s.compactions} since reopen`,
      );
    }
    const readRows: string[][] = [];
    for (const r of ours.rows) {
      if (!r.read) continue;
      const x = r.read;
      const absentProbes = x.bloomNegatives + x.bloomFalsePositives;
      readRows.push([
        r.phase,
        modeLabel(r.mode, cfg),
        fmtInt(r.ops),
        r.ops > 0 ? (x.bloomChecks / r.ops).toFixed(2) : "-",
        pct(x.bloomFalsePositives, absentProbes),
        `${fmtInt(x.bloomFalsePositives)}/${fmtInt(absentProbes)}`,
        pct(x.blockCacheHits, x.blockCacheHits + x.blockCacheMisses),
        fmtInt(x.blockCacheMisses),
      ]);
    }
    if (readRows.length > 0) {
      out();
      out(section("ours: read path per read phase"));
      out(
        table(
          [
            "phase",
            "mode",
            "ops",
            "bloom probes/op",
            "bloom FP rate",
            "FP/absent probes",
            "block cache hit",
            "cache misses",
          ],
          readRows,
        ),
      );
      out('bloom FP rate = probes that said "maybe" for a key the table lacks / all probes for such keys');
    }
    const fin = ours.readSetup?.oursAfterReads;
    if (fin)
      out(
        `block cache at the end: ${fmtBytes(fin.blockCacheBytes)} of ${fmtBytes(fin.blockCacheCapacityBytes)}; ` +
          `totals: ${pct(fin.blockCacheHits, fin.blockCacheHits + fin.blockCacheMisses)} hits, bloom FP ` +
          `${pct(fin.bloomFalsePositives, fin.bloomFalsePositives + fin.bloomNegatives)}`,
      );
  }
  const ls = level?.readSetup?.levelAfterSettle;
  if (ls) {
    out();
    out(section("level: the read store after reopen + settle"));
    out(
      `files per level ${ls.filesPerLevel.join("/")}; table MiB written since reopen ` +
        fmtMiB(ls.tableBytesWritten),
    );
  }

  // Memory and time.
  out();
  out(section("process (each engine in its own child process)"));
  const procRows: string[][] = [];
  for (const r of [ours, level]) {
    if (!r) continue;
    procRows.push([
      r.engine,
      fmtMiB(r.maxRssBytes),
      fmtMiB(r.sampledPeakRssBytes),
      fmtMs(r.datasetMs),
      fmtMs(r.totalMs),
      `${r.loadStart?.toFixed(2) ?? "?"} / ${r.loadEnd?.toFixed(2) ?? "?"}`,
      r.error ? "ERROR" : "ok",
    ]);
  }
  out(
    table(
      [
        "engine",
        "peak RSS MiB (OS)",
        "peak RSS MiB (sampled)",
        "data gen",
        "total time",
        "load 1m start/end",
        "status",
      ],
      procRows,
      1,
    ),
  );
  out("the data set (keys, value pool, op sequences) lives in each child: about 2 x 16 B + 12 B per key");
  if (cfg.memoryBudgetBytes > 0 && ours) {
    const parts = memoryBudgetParts(cfg.memoryBudgetBytes);
    out(
      `ours' memory budget ${fmtMiB(cfg.memoryBudgetBytes)} MiB (memtables ${fmtMiB(parts.memtablesBytes)}, block cache ` +
        `${fmtMiB(parts.blockCacheBytes)}, write queue ${fmtMiB(parts.pendingWritesBytes)}): peak RSS ` +
        `${fmtMiB(ours.maxRssBytes)} MiB = ${(ours.maxRssBytes / cfg.memoryBudgetBytes).toFixed(2)}x the budget ` +
        "(RSS also holds the data set, V8's heaps and the two worker threads)",
    );
  }

  // Targets.
  out();
  out(section(`targets: ${checked - misses.length} of ${checked} met`));
  for (const x of misses) out(`MISS ${x}`);

  const anomalies: string[] = [];
  if (sources.length > 1)
    anomalies.push(`the engine source changed between the two children: ${sources.join(" | ")}`);
  for (const r of [ours, level]) {
    if (!r) continue;
    for (const a of r.anomalies) anomalies.push(`${r.engine}: ${a}`);
    if (r.error) anomalies.push(`${r.engine}: ERROR ${r.error}`);
  }
  if (anomalies.length > 0) {
    out();
    out(section("anomalies"));
    for (const a of anomalies) out(a);
  }
  out();
  process.stdout.write(`${lines.join("\n")}\n`);
}

// ------------------------------------------------------------------------------------------ main

const argv = process.argv.slice(2);
let config: Config;
try {
  config = parseConfig(argv);
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  console.error(HELP);
  process.exit(2);
}
if (config.child !== undefined) await childMain(config, config.child);
else await parentMain(config, argv);
