/**
 * Model-based property tests of the LSM engine on MemoryFileSystem against a Map, across reopen and
 * simulated power loss (fast-check `fc.commands`).
 *
 * The key space is tiny (1-2 bytes from a five-byte alphabet: 30 keys), so keys are overwritten and
 * deleted constantly, and the LSM options are tiny, so every few writes freeze a memtable and flushes,
 * compactions and write stalls happen all the time, also at the moment of a crash.
 *
 * A power loss is `MemoryFileSystem.crash()` with the engine still running: it is abandoned, not closed.
 * Each engine reaches the shared file system through its own ProcessFs, which the crash kills: a dead
 * process makes no more calls. Without it the abandoned engine's background work would go on creating
 * and deleting files in the "rebooted" file system, next to the new engine (a zombie a real power cut
 * cannot produce).
 *
 * Seeded: FC_SEED=<n> replays another seed; a failure prints its seed, path and command list.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { seededRandom } from "../../src/runtime/runtime.js";
import {
  type CrashOptions,
  LsmEngine,
  type LsmOptions,
  MemoryFileSystem,
  type RangeOptions,
  StorageError,
  type WriteOp,
} from "../../src/storage/index.js";
import { ProcessFs } from "./process-fs.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x5eed_2024;
/** Each property has its own seed, derived from SEED. */
const fcParams = (numRuns: number, seedOffset: number) =>
  ({ seed: SEED + seedOffset, numRuns, includeErrorInReport: true }) as const;
/**
 * Shrinking a failure runs the model again for every candidate; capping the candidates keeps a failing
 * file well under a minute, at the price of a less minimal counterexample.
 */
const capped = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T> => fc.limitShrink(a, 120);
const DIR = "/ringstore/db";
const TEST_TIMEOUT_MS = 120_000;

/** Tiny everything: a memtable holds about five small entries; a run holds a few tables of a few blocks. */
const TINY_LSM: Partial<LsmOptions> = {
  memtableBytes: 600,
  maxImmutableMemtables: 1,
  tableTargetBytes: 300,
  blockBytes: 64,
  blockCacheBytes: 1024,
  maxOpenTables: 4,
  minMergeWidth: 2,
  maxRunsBeforeForcedMerge: 3,
  stopWritesAtRuns: 5,
  tableWriteChunkBytes: 128,
  maxWriteGroupBytes: 512,
};

type UnsyncedMode = NonNullable<CrashOptions["unsynced"]>;
const UNSYNCED_MODES: readonly UnsyncedMode[] = ["drop", "torn", "zeroed"];

// ---------------------------------------------------------------- keys, values, model

const ALPHABET = [0x00, 0x01, 0x7f, 0x80, 0xff];
const ALL_KEYS: Buffer[] = [
  ...ALPHABET.map((a) => Buffer.from([a])),
  ...ALPHABET.flatMap((a) => ALPHABET.map((c) => Buffer.from([a, c]))),
];

const keyArb = fc.constantFrom(...ALL_KEYS);
const valueArb = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 6 }), weight: 8 },
  { arbitrary: fc.uint8Array({ minLength: 40, maxLength: 200 }), weight: 2 },
);
const opArb: fc.Arbitrary<WriteOp> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant("put" as const), key: keyArb, value: valueArb }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant("delete" as const), key: keyArb }), weight: 1 },
);

/** Two hex digits per byte: comparing these strings is comparing the bytes (memcmp order). */
const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString("hex");

type State = Map<string, string>;

function apply(state: State, ops: readonly WriteOp[]): void {
  for (const op of ops) {
    if (op.kind === "put") state.set(hex(op.key), hex(op.value));
    else state.delete(hex(op.key));
  }
}

function sameState(a: State, c: State): boolean {
  if (a.size !== c.size) return false;
  for (const [k, v] of a) if (c.get(k) !== v) return false;
  return true;
}

const showState = (s: State): string =>
  `{${[...s.entries()]
    .sort()
    .map(([k, v]) => `${k}:${v.length > 16 ? `${v.slice(0, 16)}..(${v.length / 2}B)` : v}`)
    .join(" ")}}`;

function inRange(range: RangeOptions, state: State): [string, string][] {
  const out = [...state.entries()]
    .filter(([k]) => {
      if (range.gte !== undefined && k < hex(range.gte)) return false;
      if (range.gte === undefined && range.gt !== undefined && k <= hex(range.gt)) return false;
      if (range.lt !== undefined && k >= hex(range.lt)) return false;
      if (range.lte !== undefined && k > hex(range.lte)) return false;
      return true;
    })
    .sort(([a], [c]) => (a < c ? -1 : a > c ? 1 : 0));
  return range.limit === undefined ? out : out.slice(0, range.limit);
}

const showRange = (r: RangeOptions): string =>
  Object.entries(r)
    .map(([k, v]) => `${k}=${v instanceof Uint8Array ? hex(v) : String(v)}`)
    .join(",");

async function scan(e: LsmEngine, range?: RangeOptions): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const { key, value } of e.iterate(range)) out.push([hex(key), hex(value)]);
  return out;
}

/** The engine's whole state, read by a full scan and checked against a get of every possible key. */
async function readState(e: LsmEngine): Promise<State> {
  const s: State = new Map(await scan(e));
  for (const k of ALL_KEYS) {
    const v = await e.get(k);
    assert.equal(
      v === undefined ? undefined : hex(v),
      s.get(hex(k)),
      `get(${hex(k)}) disagrees with the scan`,
    );
  }
  return s;
}

/** Power loss: the running process dies, then the file system keeps only what was durable. */
function powerLoss(fs: MemoryFileSystem, proc: ProcessFs, mode: UnsyncedMode, seed: number): void {
  proc.kill();
  fs.crash({ unsynced: mode, random: seededRandom(seed).next });
}

function openEngine(proc: ProcessFs, options: Partial<LsmOptions>): Promise<LsmEngine> {
  return LsmEngine.open({ dir: DIR, fs: proc, options });
}

// ---------------------------------------------------------------- the sequential model

interface Model {
  /** What every read must return. */
  data: State;
  /**
   * The states a power loss may leave, oldest first: with fsync only the current one; with durability
   * "none" every state since the last point that made all writes durable (flush, close).
   */
  afterCrash: State[];
}

/** What the runs of a property exercised: a test that never compacted or crashed would prove little. */
interface Coverage {
  flushes: number;
  compactions: number;
  writeStalls: number;
  powerLosses: number;
}

function newCoverage(): Coverage {
  return { flushes: 0, compactions: 0, writeStalls: 0, powerLosses: 0 };
}

function noteStats(c: Coverage, e: LsmEngine): void {
  const s = e.stats();
  c.flushes += s.flushes;
  c.compactions += s.compactions;
  c.writeStalls += s.writeStalls;
}

interface Real {
  readonly coverage: Coverage;
  readonly fs: MemoryFileSystem;
  readonly options: Partial<LsmOptions>;
  readonly fsync: boolean;
  proc: ProcessFs;
  engine: LsmEngine | undefined;
}

type Cmd = fc.AsyncCommand<Model, Real>;

function live(r: Real): LsmEngine {
  assert.ok(r.engine !== undefined, "no engine is open");
  return r.engine;
}

function everythingDurable(m: Model): void {
  m.afterCrash = [new Map(m.data)];
}

class WriteCmd implements Cmd {
  constructor(readonly ops: readonly WriteOp[]) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const e = live(r);
    const op = this.ops[0]!;
    if (this.ops.length > 1) await e.write(this.ops);
    else if (op.kind === "put") await e.put(op.key, op.value);
    else await e.delete(op.key);
    apply(m.data, this.ops);
    if (r.fsync) everythingDurable(m);
    else m.afterCrash.push(new Map(m.data));
  }
  toString(): string {
    const show = (o: WriteOp) =>
      o.kind === "put" ? `put(${hex(o.key)},${hex(o.value)})` : `del(${hex(o.key)})`;
    return this.ops.length === 1 ? show(this.ops[0]!) : `batch[${this.ops.map(show).join(" ")}]`;
  }
}

class GetCmd implements Cmd {
  constructor(readonly key: Uint8Array) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const v = await live(r).get(this.key);
    assert.equal(v === undefined ? undefined : hex(v), m.data.get(hex(this.key)), this.toString());
  }
  toString = () => `get(${hex(this.key)})`;
}

class ScanCmd implements Cmd {
  constructor(readonly range: RangeOptions) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    assert.deepEqual(await scan(live(r), this.range), inRange(this.range, m.data), this.toString());
  }
  toString = () => `scan(${showRange(this.range)})`;
}

class FlushCmd implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await live(r).flush();
    everythingDurable(m);
  }
  toString = () => "flush";
}

class SettleCmd implements Cmd {
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await live(r).waitForBackground();
  }
  toString = () => "waitForBackground";
}

class ReopenCmd implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    noteStats(r.coverage, live(r));
    await live(r).close();
    r.engine = undefined;
    r.engine = await openEngine(r.proc, r.options);
    everythingDurable(m);
    assert.ok(sameState(await readState(r.engine), m.data), "reopen lost or invented data");
  }
  toString = () => "reopen";
}

class PowerLossCmd implements Cmd {
  constructor(
    readonly mode: UnsyncedMode,
    readonly seed: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    noteStats(r.coverage, live(r));
    r.coverage.powerLosses++;
    powerLoss(r.fs, r.proc, this.mode, this.seed);
    r.engine = undefined; // abandoned, not closed
    r.proc = new ProcessFs(r.fs);
    r.engine = await openEngine(r.proc, r.options);
    const got = await readState(r.engine);
    const match = m.afterCrash.findLast((s) => sameState(s, got));
    assert.ok(
      match !== undefined,
      `after the power loss the engine holds ${showState(got)}; allowed: ${m.afterCrash.map(showState).join(" or ")}`,
    );
    m.data = new Map(match);
    everythingDurable(m);
  }
  toString = () => `powerLoss(${this.mode},${this.seed})`;
}

function commandArbs(mode: UnsyncedMode): fc.Arbitrary<Cmd>[] {
  const bound = (kinds: readonly ("gte" | "gt" | "lt" | "lte")[]) =>
    fc.option(
      fc.tuple(fc.constantFrom(...kinds), keyArb).map(([k, v]) => ({ [k]: v })),
      { nil: undefined },
    );
  const rangeArb = fc
    .tuple(bound(["gte", "gt"]), bound(["lt", "lte"]), fc.option(fc.nat(6), { nil: undefined }))
    .map(([lo, hi, limit]): RangeOptions => ({ ...lo, ...hi, ...(limit === undefined ? {} : { limit }) }));
  const single = opArb.map((op): Cmd => new WriteCmd([op]));
  return [
    single,
    single,
    single,
    fc.array(opArb, { minLength: 2, maxLength: 5 }).map((ops): Cmd => new WriteCmd(ops)),
    keyArb.map((k): Cmd => new GetCmd(k)),
    rangeArb.map((range): Cmd => new ScanCmd(range)),
    fc.constant<Cmd>(new FlushCmd()),
    fc.constant<Cmd>(new SettleCmd()),
    fc.constant<Cmd>(new ReopenCmd()),
    fc.nat().map((seed): Cmd => new PowerLossCmd(mode, seed)),
  ];
}

async function runModel(
  coverage: Coverage,
  options: Partial<LsmOptions>,
  cmds: Iterable<Cmd>,
): Promise<void> {
  const fs = new MemoryFileSystem();
  const proc = new ProcessFs(fs);
  const real: Real = {
    coverage,
    fs,
    options,
    fsync: options.durability === undefined || options.durability === "fsync",
    proc,
    engine: await openEngine(proc, options),
  };
  try {
    await fc.asyncModelRun(() => ({ model: { data: new Map(), afterCrash: [new Map()] }, real }), cmds);
  } finally {
    if (real.engine !== undefined) {
      noteStats(coverage, real.engine);
      await real.engine.close();
    }
  }
}

function assertCovered(c: Coverage): void {
  assert.ok(
    c.flushes > 0 && c.compactions > 0 && c.powerLosses > 0,
    `too little happened: ${JSON.stringify(c)}`,
  );
}

describe("LSM engine against a Map model", () => {
  for (const mode of UNSYNCED_MODES) {
    test(`fsync: every acknowledged write survives reopen and power loss (unsynced tail: ${mode})`, {
      timeout: TEST_TIMEOUT_MS,
    }, async () => {
      const coverage = newCoverage();
      await fc.assert(
        fc.asyncProperty(capped(fc.commands(commandArbs(mode), { maxCommands: 100, size: "max" })), (cmds) =>
          runModel(coverage, { ...TINY_LSM, durability: "fsync" }, cmds),
        ),
        fcParams(60, UNSYNCED_MODES.indexOf(mode)),
      );
      assertCovered(coverage);
    });
  }

  for (const mode of UNSYNCED_MODES) {
    test(`none: a power loss leaves a prefix of the writes since the last flush (unsynced tail: ${mode})`, {
      timeout: TEST_TIMEOUT_MS,
    }, async () => {
      const coverage = newCoverage();
      await fc.assert(
        fc.asyncProperty(capped(fc.commands(commandArbs(mode), { maxCommands: 100, size: "max" })), (cmds) =>
          runModel(coverage, { ...TINY_LSM, durability: "none" }, cmds),
        ),
        fcParams(40, 10 + UNSYNCED_MODES.indexOf(mode)),
      );
      assertCovered(coverage);
    });
  }
});

// ---------------------------------------------------------------- concurrent writes

const batchArb = fc.array(opArb, { minLength: 1, maxLength: 5 });

interface Outcome {
  resolvedBeforeCrash: boolean;
  error: unknown;
}

/** Where the power fails: after some microtask turns, or just before the n-th file sync. */
type CrashPoint = { readonly afterTicks: number } | { readonly beforeSync: number };

const crashPointArb: fc.Arbitrary<CrashPoint> = fc.oneof(
  fc.nat(250).map((n) => ({ afterTicks: n })),
  fc.nat(60).map((n) => ({ beforeSync: n })),
);

const showCrashPoint = (c: CrashPoint) =>
  "afterTicks" in c ? `after ${c.afterTicks} microtask turns` : `before file sync #${c.beforeSync}`;

/**
 * Starts every write at once without awaiting, and cuts the power at `point` (each MemoryFileSystem call
 * takes a few microtask turns; a WAL group, a table and a manifest edit each end with a sync). Writes are
 * applied in call order, so what survives must be the state after some prefix of the writes, and that
 * prefix must include every write acknowledged before the crash. An unacknowledged write may be lost,
 * but never in part: a batch is all or nothing.
 */
async function concurrentThenPowerLoss(
  coverage: Coverage & { cutMidway: number },
  options: Partial<LsmOptions>,
  preload: readonly WriteOp[][],
  writes: readonly WriteOp[][],
  point: CrashPoint,
  mode: UnsyncedMode,
  crashSeed: number,
): Promise<void> {
  const fs = new MemoryFileSystem();
  const proc = new ProcessFs(fs);
  const e = await openEngine(proc, options);
  const state: State = new Map();
  for (const ops of preload) {
    await e.write(ops);
    apply(state, ops);
  }
  const prefixes: State[] = [new Map(state)];
  for (const ops of writes) {
    apply(state, ops);
    prefixes.push(new Map(state));
  }
  let crashed = false;
  const crash = () => {
    if (crashed) return;
    crashed = true;
    noteStats(coverage, e);
    coverage.powerLosses++;
    powerLoss(fs, proc, mode, crashSeed);
  };
  if ("beforeSync" in point) {
    let n = point.beforeSync;
    proc.beforeSync = () => {
      if (n-- === 0) crash();
    };
  }
  const outcomes: Outcome[] = writes.map(() => ({ resolvedBeforeCrash: false, error: undefined }));
  const settled = writes.map((ops, i) =>
    e.write(ops).then(
      () => {
        outcomes[i]!.resolvedBeforeCrash = !crashed;
      },
      (err: unknown) => {
        outcomes[i]!.error = err;
      },
    ),
  );
  if ("afterTicks" in point) {
    for (let i = 0; i < point.afterTicks; i++) await Promise.resolve();
    crash();
  }
  await Promise.all(settled);
  crash(); // if the sync never came: now, with background work perhaps still running
  for (const o of outcomes)
    if (o.error !== undefined)
      assert.ok(o.error instanceof StorageError, `a write failed with an untyped error: ${String(o.error)}`);

  const after = await openEngine(new ProcessFs(fs), options);
  try {
    const got = await readState(after);
    const acked = outcomes
      .map((o, i) => (o.resolvedBeforeCrash ? i + 1 : 0))
      .reduce((a, c) => Math.max(a, c), 0);
    if (acked > 0 && outcomes.some((o) => !o.resolvedBeforeCrash)) coverage.cutMidway++;
    let found = -1;
    for (let n = acked; n < prefixes.length && found < 0; n++) if (sameState(prefixes[n]!, got)) found = n;
    assert.ok(
      found >= 0,
      `after a power loss ${showCrashPoint(point)} the engine holds ${showState(got)}, which is not the ` +
        `state after any prefix of ` +
        `${acked}..${writes.length} of the ${writes.length} writes (the first ${acked} were acknowledged); ` +
        `with all of them: ${showState(prefixes[writes.length]!)}`,
    );
    // The recovered engine goes on working.
    await after.put(ALL_KEYS[0]!, Buffer.from("after"));
    assert.equal(hex((await after.get(ALL_KEYS[0]!))!), hex(Buffer.from("after")));
  } finally {
    await after.close();
  }
}

describe("LSM engine under concurrent writes", () => {
  for (const mode of UNSYNCED_MODES) {
    test(`fsync: acknowledged writes survive a power loss, the rest are whole or absent (unsynced tail: ${mode})`, {
      timeout: TEST_TIMEOUT_MS,
    }, async () => {
      const coverage = { ...newCoverage(), cutMidway: 0 };
      await fc.assert(
        fc.asyncProperty(
          capped(fc.array(batchArb, { maxLength: 15, size: "max" })),
          capped(fc.array(batchArb, { minLength: 1, maxLength: 40, size: "max" })),
          capped(crashPointArb),
          capped(fc.nat()),
          (preload, writes, point, seed) =>
            concurrentThenPowerLoss(
              coverage,
              { ...TINY_LSM, durability: "fsync" },
              preload,
              writes,
              point,
              mode,
              seed,
            ),
        ),
        fcParams(300, 20 + UNSYNCED_MODES.indexOf(mode)),
      );
      assertCovered(coverage);
      assert.ok(
        coverage.writeStalls > 0 && coverage.cutMidway > 10,
        `too little happened: ${JSON.stringify(coverage)}`,
      );
    });
  }

  test("fsync with the WAL synced through the thread pool (walSyncOnEventLoop: false): the same property", {
    timeout: TEST_TIMEOUT_MS,
  }, async () => {
    const coverage = { ...newCoverage(), cutMidway: 0 };
    await fc.assert(
      fc.asyncProperty(
        capped(fc.array(batchArb, { maxLength: 15, size: "max" })),
        capped(fc.array(batchArb, { minLength: 1, maxLength: 40, size: "max" })),
        capped(crashPointArb),
        capped(fc.nat()),
        (preload, writes, point, seed) =>
          concurrentThenPowerLoss(
            coverage,
            { ...TINY_LSM, durability: "fsync", walSyncOnEventLoop: false },
            preload,
            writes,
            point,
            "torn",
            seed,
          ),
      ),
      fcParams(150, 24),
    );
    assertCovered(coverage);
    assert.ok(
      coverage.writeStalls > 0 && coverage.cutMidway > 5,
      `too little happened: ${JSON.stringify(coverage)}`,
    );
  });

  test("fsync: a power loss between a WAL append and its sync, leaving zeros, keeps the store openable", {
    timeout: TEST_TIMEOUT_MS,
  }, async () => {
    const fs = new MemoryFileSystem();
    const proc = new ProcessFs(fs);
    const e = await openEngine(proc, { durability: "fsync" });
    await e.put(Buffer.from("acknowledged"), Buffer.from("1"));
    proc.beforeSync = (p) => {
      if (!p.endsWith(".wal")) return;
      proc.kill();
      // The file system had persisted the WAL's new length but not its data: the unsynced tail reads as
      // zeros, from the end of the last synced record (which need not be 512-byte aligned).
      fs.crash({ unsynced: "zeroed", random: () => 0.999 });
    };
    await assert.rejects(e.put(Buffer.from("never acknowledged"), Buffer.alloc(100, 1)), StorageError);
    const after = await openEngine(new ProcessFs(fs), { durability: "fsync" });
    try {
      assert.equal((await after.get(Buffer.from("acknowledged")))?.toString(), "1");
      assert.equal(await after.get(Buffer.from("never acknowledged")), undefined);
    } finally {
      await after.close();
    }
  });

  test("close during concurrent writes waits for them, and they survive reopen", {
    timeout: TEST_TIMEOUT_MS,
  }, async () => {
    const coverage = newCoverage();
    await fc.assert(
      fc.asyncProperty(
        capped(fc.array(batchArb, { maxLength: 15, size: "max" })),
        capped(fc.array(batchArb, { minLength: 1, maxLength: 40, size: "max" })),
        capped(fc.nat(250)),
        async (preload, writes, ticks) => {
          const proc = new ProcessFs(new MemoryFileSystem());
          const e = await openEngine(proc, TINY_LSM);
          const expected: State = new Map();
          for (const ops of [...preload, ...writes]) apply(expected, ops);
          for (const ops of preload) await e.write(ops);
          const outcomes: string[] = writes.map(() => "pending");
          const all = writes.map((ops, i) =>
            e.write(ops).then(
              () => {
                outcomes[i] = "ok";
              },
              (err: unknown) => {
                outcomes[i] = String(err);
              },
            ),
          );
          for (let i = 0; i < ticks; i++) await Promise.resolve();
          let closed = "pending";
          const closing = e.close().then(
            () => {
              closed = "ok";
            },
            (err: unknown) => {
              closed = String(err);
            },
          );
          // MemoryFileSystem does no real I/O: once the event loop has turned, whatever is still pending is
          // waiting for something that will never come.
          for (let i = 0; i < 3 && closed === "pending"; i++) await new Promise((r) => setImmediate(r));
          noteStats(coverage, e);
          assert.equal(closed, "ok", `close() is ${closed}; writes: ${[...new Set(outcomes)].join(", ")}`);
          await Promise.all([closing, ...all]);
          assert.deepEqual([...new Set(outcomes)], ["ok"], "every write issued before close() succeeds");
          const again = await openEngine(proc, TINY_LSM);
          try {
            const got = await readState(again);
            assert.ok(sameState(got, expected), `holds ${showState(got)}, expected ${showState(expected)}`);
          } finally {
            await again.close();
          }
        },
      ),
      fcParams(200, 40),
    );
    assert.ok(
      coverage.flushes > 0 && coverage.writeStalls > 0,
      `too little happened: ${JSON.stringify(coverage)}`,
    );
  });

  test("writes held back by a full queue are still applied in call order", {
    timeout: TEST_TIMEOUT_MS,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        capped(fc.array(batchArb, { minLength: 1, maxLength: 40, size: "max" })),
        async (writes) => {
          // A queue of 300 bytes: most writers wait for room (back-pressure).
          const options = { ...TINY_LSM, maxPendingWriteBytes: 300 };
          const fs = new MemoryFileSystem();
          const proc = new ProcessFs(fs);
          let e = await openEngine(proc, options);
          try {
            const expected: State = new Map();
            for (const ops of writes) apply(expected, ops);
            await Promise.all(writes.map((ops) => e.write(ops)));
            const got = await readState(e);
            assert.ok(sameState(got, expected), `holds ${showState(got)}, expected ${showState(expected)}`);
            await e.close();
            e = await openEngine(proc, options);
            assert.ok(sameState(await readState(e), expected), "after reopen");
          } finally {
            await e.close();
          }
        },
      ),
      fcParams(100, 30),
    );
  });
});
