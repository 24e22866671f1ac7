/**
 * The full compaction asked for (`StorageEngine.compactAll`), on MemoryFileSystem with tiny options so that
 * a few hundred writes make many runs and tables:
 * - property: the data read before and after are the same (tombstones' effect included: a deleted key
 *   stays absent), the store ends as one run without tombstones, and the same after a reopen;
 * - writes made while it runs are all kept, and a second request while it runs starts none;
 * - a power loss at any sync while it runs (a table, the manifest, a concurrent write's WAL) loses no
 *   acknowledged write.
 * Seeded: FC_SEED=<n> replays another seed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { seededRandom } from "../../src/runtime/runtime.js";
import {
  LsmEngine,
  type LsmOptions,
  MemoryEngine,
  MemoryFileSystem,
  type StorageEngine,
  type WriteOp,
} from "../../src/storage/index.js";
import { ProcessFs } from "./process-fs.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x0c0_4ac7;
const DIR = "/ringstore/db";
const TIMEOUT_MS = 120_000;

const TINY: Partial<LsmOptions> = {
  memtableBytes: 600,
  maxImmutableMemtables: 1,
  tableTargetBytes: 300,
  blockBytes: 64,
  blockCacheBytes: 1024,
  maxOpenTables: 4,
  minMergeWidth: 2,
  maxRunsBeforeForcedMerge: 6,
  // Size amplification never forces a merge of everything here: runs pile up as a long-lived store's do.
  maxSizeAmplificationPercent: 1_000_000,
  sizeRatioPercent: 0,
  slowdownWritesAtRuns: 7,
  stopWritesAtRuns: 8,
  tableWriteChunkBytes: 128,
  maxWriteGroupBytes: 512,
};

const KEYS: Buffer[] = Array.from({ length: 40 }, (_, i) => Buffer.from(`k${String(i).padStart(2, "0")}`));
const hex = (u: Uint8Array) => Buffer.from(u).toString("hex");

const opArb: fc.Arbitrary<WriteOp> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant("put" as const),
      key: fc.constantFrom(...KEYS),
      value: fc.uint8Array({ minLength: 1, maxLength: 60 }),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("delete" as const), key: fc.constantFrom(...KEYS) }),
    weight: 1,
  },
);

type State = Map<string, string>;
function apply(s: State, ops: readonly WriteOp[]): void {
  for (const op of ops) {
    if (op.kind === "put") s.set(hex(op.key), hex(op.value));
    else s.delete(hex(op.key));
  }
}

/** Every key read by get and by a scan (they must agree). */
async function readAll(e: StorageEngine): Promise<State> {
  const scanned: State = new Map();
  for await (const { key, value } of e.iterate()) scanned.set(hex(key), hex(value));
  for (const k of KEYS) {
    const v = await e.get(k);
    assert.equal(v === undefined ? undefined : hex(v), scanned.get(hex(k)), `get(${k}) and scan disagree`);
  }
  return scanned;
}

function tombstonesIn(e: LsmEngine): number {
  // Read through the version the engine reports: tables' tombstone counts are in the manifest's metadata.
  const v = (e as unknown as { current: { runs: { files: { tombstones: number }[] }[] } }).current;
  let n = 0;
  for (const r of v.runs) for (const f of r.files) n += f.tombstones;
  return n;
}

const open = (fs: MemoryFileSystem | ProcessFs) => LsmEngine.open({ dir: DIR, fs, options: TINY });

describe("StorageEngine.compactAll", () => {
  test("the data is the same before and after, and the store ends as one run without tombstones", {
    timeout: TIMEOUT_MS,
  }, async () => {
    let merged = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.limitShrink(fc.array(opArb, { minLength: 20, maxLength: 400 }), 20),
        async (ops) => {
          const fs = new MemoryFileSystem();
          let e = await open(fs);
          const model: State = new Map();
          for (const op of ops) {
            await e.write([op]);
            apply(model, [op]);
          }
          await e.waitForBackground();
          const before = await readAll(e);
          assert.deepEqual(before, model);
          const runsBefore = e.stats().levels.length;
          const start = e.compactAll();
          assert.equal(start.started, true);
          assert.equal(start.progress.state, "running");
          const end = await start.done;
          assert.equal(end.state, "done", JSON.stringify(end.error));
          assert.deepEqual(await readAll(e), model);
          const s = e.stats();
          assert.ok(s.levels.length <= 1, `${s.levels.length} runs after a full compaction`);
          assert.equal(end.runsAfter, s.levels.length);
          assert.equal(tombstonesIn(e), 0);
          assert.equal(end.bytesDone, end.bytesTotal);
          if (runsBefore > 1) {
            merged++;
            assert.ok(end.entriesTotal > 0 && end.bytesTotal > 0);
            assert.equal(s.manualCompaction.state, "done");
            assert.equal(s.manualCompactions, 1);
          }
          await e.close();
          e = await open(fs);
          assert.deepEqual(await readAll(e), model);
          await e.close();
        },
      ),
      { seed: SEED, numRuns: 40, includeErrorInReport: true },
    );
    assert.ok(merged >= 10, `only ${merged} runs had several sorted runs to merge`);
  });

  test("writes made while it runs are kept; a second request while it runs starts none", {
    timeout: TIMEOUT_MS,
  }, async () => {
    const fs = new MemoryFileSystem();
    const e = await open(fs);
    const model: State = new Map();
    const rnd = seededRandom(SEED).next;
    const randomOp = (): WriteOp => {
      const key = KEYS[Math.floor(rnd() * KEYS.length)]!;
      return rnd() < 0.25
        ? { kind: "delete", key }
        : { kind: "put", key, value: Buffer.from(`v${Math.floor(rnd() * 1e9)}`.repeat(3)) };
    };
    for (let i = 0; i < 600; i++) {
      const op = randomOp();
      await e.write([op]);
      apply(model, [op]);
    }
    await e.waitForBackground();
    assert.ok(
      e.stats().levels.length >= 2,
      `the test needs several runs to merge (${e.stats().levels.length})`,
    );
    const first = e.compactAll();
    assert.equal(first.started, true);
    const second = e.compactAll();
    assert.equal(second.started, false, "a second full compaction started while one ran");
    assert.equal(second.done, first.done);
    let during = 0;
    const phases = new Set<string>();
    let running = true;
    void first.done.then(() => {
      running = false;
    });
    while (running) {
      const op = randomOp();
      await e.write([op]);
      apply(model, [op]);
      if (running) {
        during++;
        phases.add(String(e.compactionProgress().phase));
      }
    }
    const end = await first.done;
    assert.equal(end.state, "done");
    assert.ok(during > 0, "no write was made while the compaction ran");
    assert.ok(phases.has("merge"), `no write was made during the merge (phases seen: ${[...phases]})`);
    assert.deepEqual(await readAll(e), model);
    // Another one may start once it is done.
    const again = e.compactAll();
    assert.equal(again.started, true);
    assert.equal((await again.done).state, "done");
    assert.deepEqual(await readAll(e), model);
    assert.equal(e.stats().manualCompactions, 2);
    await e.close();
    const reopened = await open(fs);
    assert.deepEqual(await readAll(reopened), model);
    await reopened.close();
  });

  test("a power loss at any sync while it runs loses no acknowledged write", {
    timeout: TIMEOUT_MS,
  }, async () => {
    let crashedInMerge = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 100, maxLength: 300 }),
        fc.array(opArb, { minLength: 0, maxLength: 60 }),
        fc.nat({ max: 40 }),
        fc.constantFrom("drop" as const, "torn" as const, "zeroed" as const),
        fc.nat(),
        async (ops, concurrent, crashAtSync, mode, crashSeed) => {
          const fs = new MemoryFileSystem();
          const proc = new ProcessFs(fs);
          const e = await open(proc);
          const acked: State = new Map();
          for (const op of ops) {
            await e.write([op]);
            apply(acked, [op]);
          }
          await e.waitForBackground();
          let crashed = false;
          let syncs = 0;
          let phase = "";
          proc.beforeSync = () => {
            if (crashed || syncs++ < crashAtSync) return;
            crashed = true;
            phase = String(e.compactionProgress().phase);
            proc.kill();
            fs.crash({ unsynced: mode, random: seededRandom(crashSeed).next });
          };
          const start = e.compactAll();
          // Writes while it runs, each acknowledged before the next: what is acknowledged must survive.
          // A write in flight at the crash may or may not be kept.
          let inFlight: WriteOp | undefined;
          for (const op of concurrent) {
            if (crashed) break;
            inFlight = op;
            try {
              await e.write([op]);
            } catch {
              break;
            }
            inFlight = undefined;
            if (crashed) break;
            apply(acked, [op]);
          }
          const end = await start.done;
          if (!crashed) {
            // The crash point lay past the end: cut the power now.
            assert.equal(end.state, "done");
            crashed = true;
            proc.kill();
            fs.crash({ unsynced: mode, random: seededRandom(crashSeed).next });
          } else if (phase === "merge") crashedInMerge++;
          const after = await open(new ProcessFs(fs));
          const got = await readAll(after);
          const alt = new Map(acked);
          if (inFlight !== undefined) apply(alt, [inFlight]);
          assert.ok(
            sameState(got, acked) || sameState(got, alt),
            `after the crash: ${JSON.stringify([...got])} is not ${JSON.stringify([...acked])}`,
          );
          await after.close();
        },
      ),
      { seed: SEED + 1, numRuns: 60, includeErrorInReport: true },
    );
    assert.ok(crashedInMerge >= 5, `only ${crashedInMerge} crashes fell in the merge`);
  });

  test("refused on a read-only or closed engine; the memory engine's is its rebuild", async () => {
    const fs = new MemoryFileSystem();
    const e = await open(fs);
    await e.put(Buffer.from("a"), Buffer.from("1"));
    await e.close();
    assert.throws(() => e.compactAll(), { code: "ERR_CLOSED" });
    const ro = await LsmEngine.openReadOnly({ dir: DIR, fs, options: TINY });
    assert.throws(() => ro.compactAll(), { code: "ERR_READ_ONLY" });
    assert.equal(ro.compactionProgress().state, "idle");
    await ro.close();

    const m = new MemoryEngine({ now: () => 1234 });
    await m.put(Buffer.from("a"), Buffer.from("1"));
    await m.put(Buffer.from("a"), Buffer.from("2"));
    await m.delete(Buffer.from("b"));
    const r = m.compactAll();
    assert.equal(r.started, true);
    const p = await r.done;
    assert.equal(p.state, "done");
    assert.equal(p.startedAt, 1234);
    assert.equal(p.entriesTotal, 3);
    assert.deepEqual(await m.get(Buffer.from("a")), Buffer.from("2"));
    assert.equal(m.stats().manualCompactions, 1);
    await m.close();
  });
});

function sameState(a: State, b: State): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
