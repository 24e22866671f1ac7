/**
 * No write stalls (issue 18): delayed writes (lsm/write-pacer.ts) turn the stop at a full set of memtables
 * into many small waits, and compaction writes are paced by a rate that the engine can change while a
 * merge runs (compaction-job.ts, ratePacer).
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { describe, test } from "node:test";
import { seededRandom } from "../../src/runtime/runtime.js";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { LsmEngine, MemoryFileSystem } from "../../src/storage/index.js";
import { inlineCompactionExecutor, ratePacer } from "../../src/storage/lsm/compaction-job.js";
import { resolveLsmOptions } from "../../src/storage/lsm/options.js";
import { WritePacer } from "../../src/storage/lsm/write-pacer.js";

describe("WritePacer", () => {
  const o = resolveLsmOptions({ slowdownWritesAtRuns: 16, stopWritesAtRuns: 24, maxWriteDelayMs: 20 });
  const limit = 3000;

  test("no delay below both soft limits; the flush rate at the soft limit, less as the debt grows", () => {
    const p = new WritePacer(o);
    p.noteFlush(1000, 10); // 100 bytes per ms
    assert.equal(p.allowedRate({ unflushedBytes: 1500, unflushedLimitBytes: limit, runs: 15 }), Infinity);
    assert.equal(p.allowedRate({ unflushedBytes: 1501, unflushedLimitBytes: limit, runs: 0 }) > 99, true);
    const mid = p.allowedRate({ unflushedBytes: 2250, unflushedLimitBytes: limit, runs: 0 });
    assert.ok(Math.abs(mid - 50) < 1e-9, `half the headroom left: half the flush rate, got ${mid}`);
    assert.equal(p.allowedRate({ unflushedBytes: limit, unflushedLimitBytes: limit, runs: 0 }), 0);
    const runs = p.allowedRate({ unflushedBytes: 0, unflushedLimitBytes: limit, runs: 20 });
    assert.ok(Math.abs(runs - (100 * 4) / 9) < 1e-9, `runs debt: 4 of 9 steps left, got ${runs}`);
    assert.equal(p.allowedRate({ unflushedBytes: 0, unflushedLimitBytes: limit, runs: 24 }), 0);
  });

  test("groups are spaced at the allowed rate, each wait capped at maxWriteDelayMs", () => {
    const p = new WritePacer(o);
    p.noteFlush(1000, 10);
    const debt = { unflushedBytes: 2250, unflushedLimitBytes: limit, runs: 0 }; // 50 bytes per ms
    assert.equal(p.delayMs(0, debt), 0, "the first group in debt goes at once");
    p.wrote(0, 500, debt);
    assert.equal(p.delayMs(0, debt), 10, "500 bytes at 50 bytes/ms: the next waits 10 ms");
    assert.equal(p.delayMs(4, debt), 6);
    p.wrote(10, 5000, debt);
    assert.equal(p.delayMs(10, debt), 20, "a large group's debt is capped at one maximal delay");
    const none = { unflushedBytes: 0, unflushedLimitBytes: limit, runs: 0 };
    assert.equal(p.delayMs(11, none), 0, "out of debt: no wait, and nothing owed");
    assert.equal(p.delayMs(11, debt), 0);
    assert.equal(p.delayMs(11, { ...debt, unflushedBytes: limit }), 20, "at the hard limit: the cap");
  });

  test("the flush rate is smoothed over flushes; a flush the clock did not see is ignored", () => {
    const p = new WritePacer(o);
    p.noteFlush(1000, 0);
    p.noteFlush(1000, 10);
    assert.equal(p.flushRateBytesPerMs, 100);
    p.noteFlush(2000, 10);
    assert.ok(p.flushRateBytesPerMs > 100 && p.flushRateBytesPerMs < 200);
  });
});

describe("ratePacer", () => {
  test("waits while ahead of the rate; a new rate counts from where it changed; 0 is unpaced", async () => {
    let now = 0;
    const slept: number[] = [];
    const rate = new Float64Array(1);
    rate[0] = 1000; // bytes per second: 1 byte per ms
    const pace = ratePacer(
      rate,
      () => now,
      async (ms) => {
        slept.push(ms);
        now += ms;
      },
    );
    await pace.consumed(0);
    await pace.consumed(100);
    assert.deepEqual(slept, [100], "100 bytes at 1 byte/ms, none of the time passed yet");
    now += 50;
    await pace.consumed(200);
    assert.deepEqual(slept, [100, 50]);
    rate[0] = 0;
    await pace.consumed(10_000);
    await pace.consumed(20_000);
    assert.deepEqual(slept, [100, 50], "unpaced");
    rate[0] = 10_000;
    await pace.consumed(20_000);
    await pace.consumed(20_100);
    assert.deepEqual(slept, [100, 50, 10], "what was written before the change is not owed");
  });
});

describe("delayed writes in the engine", () => {
  /** Inline jobs on a memory file system, each flush taking `flushMs` more: a slow disk. */
  function slowFlushes(fs: MemoryFileSystem, flushMs: number) {
    const inner = inlineCompactionExecutor(fs);
    return {
      ...inner,
      async flush(job: Parameters<typeof inner.flush>[0]) {
        await new Promise((r) => setTimeout(r, flushMs));
        return inner.flush(job);
      },
    };
  }

  async function writeBurst(paced: boolean): Promise<{ stalls: number; delays: number; maxMs: number }> {
    const fs = new MemoryFileSystem();
    const e = await LsmEngine.open(
      {
        dir: "/db",
        fs,
        timers: systemRuntime().timers,
        compactor: slowFlushes(fs, 40),
        options: {
          durability: "none",
          memtableBytes: 64 * 1024,
          maxImmutableMemtables: 2,
          // Off: the soft limit at the hard one, and no wait allowed.
          ...(paced ? {} : { slowdownMemtableFraction: 1, maxWriteDelayMs: 0 }),
        },
      },
      () => performance.now(),
    );
    try {
      const value = Buffer.alloc(1000, 7);
      let k = 0;
      const put = () => e.put(Buffer.from(`key${String(k++).padStart(8, "0")}`), value);
      // Warm up: a few flushes measure the flush rate.
      for (let i = 0; i < 400; i++) await put();
      await e.waitForBackground();
      const before = e.stats();
      let maxMs = 0;
      for (let i = 0; i < 1500; i++) {
        const t0 = performance.now();
        await put();
        maxMs = Math.max(maxMs, performance.now() - t0);
      }
      const after = e.stats();
      return {
        stalls: after.writeStalls - before.writeStalls,
        delays: after.writeDelays - before.writeDelays,
        maxMs,
      };
    } finally {
      await e.close();
    }
  }

  test("writes faster than the flushes: stops without pacing, small waits and no stop with it", async () => {
    const off = await writeBurst(false);
    assert.ok(off.stalls > 0, `unpaced writers stop at the full memtables (${JSON.stringify(off)})`);
    assert.equal(off.delays, 0);
    const on = await writeBurst(true);
    assert.ok(on.delays > 0, `paced writers wait a little (${JSON.stringify(on)})`);
    assert.ok(on.stalls < off.stalls, `fewer stops paced than unpaced (${JSON.stringify({ on, off })})`);
  });
});

describe("the memtable switch off the writer's path", () => {
  const wals = async (fs: MemoryFileSystem) =>
    (await fs.readdir("/db")).filter((n) => n.endsWith(".wal")).sort();

  test("the next WAL is made ahead of the switch, and a closed store holds no spare", async () => {
    const fs = new MemoryFileSystem();
    const e = await LsmEngine.open({
      dir: "/db",
      fs,
      options: { durability: "none", memtableBytes: 64 * 1024 },
    });
    const value = Buffer.alloc(1000, 3);
    assert.equal((await wals(fs)).length, 1);
    for (let i = 0; i < 40; i++) await e.put(Buffer.from(`a${i}`), value);
    await new Promise((r) => setImmediate(r));
    assert.equal((await wals(fs)).length, 2, "past half a memtable, the next WAL exists already");
    for (let i = 0; i < 200; i++) await e.put(Buffer.from(`b${i}`), value);
    await e.close();
    const left = await wals(fs);
    assert.equal(left.length, 1, `only the WAL in use is left (${left.join(", ")})`);
    const again = await LsmEngine.open({ dir: "/db", fs, options: { durability: "none" } });
    assert.deepEqual(await again.get(Buffer.from("b199")), value);
    await again.close();
  });

  test("a crash with a spare WAL recovers every write (the spare replays as empty)", async () => {
    const fs = new MemoryFileSystem();
    const e = await LsmEngine.open({
      dir: "/db",
      fs,
      options: { durability: "fsync", memtableBytes: 64 * 1024 },
    });
    const value = Buffer.alloc(1000, 4);
    for (let i = 0; i < 150; i++) await e.put(Buffer.from(`k${i}`), value);
    await new Promise((r) => setImmediate(r));
    fs.crash({ unsynced: "torn", random: seededRandom(7).next });
    const again = await LsmEngine.open({ dir: "/db", fs, options: { durability: "fsync" } });
    for (let i = 0; i < 150; i++) assert.deepEqual(await again.get(Buffer.from(`k${i}`)), value, `k${i}`);
    await again.close();
  });

  test("without fsync per write, the WAL is synced in the background every MiB written", async () => {
    const fs = new MemoryFileSystem();
    const e = await LsmEngine.open({ dir: "/db", fs, options: { durability: "none" } });
    const before = e.stats().walSyncs;
    const value = Buffer.alloc(16 * 1024, 5);
    for (let i = 0; i < 200; i++) await e.put(Buffer.from(`k${i}`), value);
    await new Promise((r) => setImmediate(r));
    const s = e.stats();
    assert.equal(s.flushes, 0, "no memtable switch happened");
    assert.ok(s.walSyncs - before >= 2, `3 MiB written: background syncs (${s.walSyncs - before})`);
    await e.close();
  });
});
