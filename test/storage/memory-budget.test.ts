/**
 * The memory budget (issue 18): one setting, LsmOptions.memoryBudgetBytes, sizes the memtables, the block
 * cache and the write queue, and the engine keeps each within its part under writers that outrun the
 * flushes and readers that fill the cache.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { type EngineStats, LsmEngine, MemoryFileSystem, memoryBudgetParts } from "../../src/storage/index.js";
import { inlineCompactionExecutor } from "../../src/storage/lsm/compaction-job.js";
import { MIN_MEMORY_BUDGET_BYTES, resolveLsmOptions } from "../../src/storage/lsm/options.js";

const MIB = 1024 * 1024;

describe("memory budget", () => {
  test("the budget decides the sizes, and its parts add up to it", () => {
    for (const budget of [MIN_MEMORY_BUDGET_BYTES, 64 * MIB, 1000 * MIB + 7]) {
      const parts = memoryBudgetParts(budget);
      assert.equal(parts.memtablesBytes + parts.blockCacheBytes + parts.pendingWritesBytes, budget);
      const o = resolveLsmOptions({ memoryBudgetBytes: budget });
      assert.ok(
        (1 + o.maxImmutableMemtables) * (o.memtableBytes + o.maxWriteGroupBytes) <= parts.memtablesBytes,
        "every memtable, each up to one write group past memtableBytes, fits the memtables' part",
      );
      assert.equal(o.blockCacheBytes, parts.blockCacheBytes);
      assert.equal(o.maxPendingWriteBytes, parts.pendingWritesBytes);
    }
    assert.deepEqual(
      resolveLsmOptions({ memoryBudgetBytes: 0 }).memtableBytes,
      resolveLsmOptions({}).memtableBytes,
      "0: the defaults",
    );
    assert.throws(() => resolveLsmOptions({ memoryBudgetBytes: 64 * MIB, blockCacheBytes: MIB }), /not both/);
    assert.throws(() => resolveLsmOptions({ memoryBudgetBytes: MIB }), /at least/);
    assert.throws(() => resolveLsmOptions({ memoryBudgetBytes: -1 }), /memoryBudgetBytes/);
  });

  test("writers faster than the flushes and readers over the whole store stay within every part", async () => {
    const budget = 4 * MIB;
    const parts = memoryBudgetParts(budget);
    const fs = new MemoryFileSystem();
    const inner = inlineCompactionExecutor(fs);
    // Slow flushes: the memtables fill up and the queue with them.
    const compactor = {
      ...inner,
      async flush(job: Parameters<typeof inner.flush>[0]) {
        await new Promise((r) => setTimeout(r, 30));
        return inner.flush(job);
      },
    };
    const e = await LsmEngine.open({
      dir: "/db",
      fs,
      timers: systemRuntime().timers,
      compactor,
      options: { durability: "none", memoryBudgetBytes: budget, blockBytes: 4096 },
    });
    const peak = { memtables: 0, pending: 0, cache: 0 };
    const check = (s: EngineStats) => {
      const memtables = s.memtableBytes + s.immutableMemtableBytes;
      peak.memtables = Math.max(peak.memtables, memtables);
      peak.pending = Math.max(peak.pending, s.pendingWriteBytes);
      peak.cache = Math.max(peak.cache, s.blockCacheBytes);
      assert.ok(memtables <= parts.memtablesBytes, `memtables ${memtables} within ${parts.memtablesBytes}`);
      assert.ok(
        s.pendingWriteBytes <= parts.pendingWritesBytes,
        `queue ${s.pendingWriteBytes} within its part`,
      );
      assert.ok(s.blockCacheBytes <= parts.blockCacheBytes, `cache ${s.blockCacheBytes} within its part`);
      assert.equal(s.memoryBudgetBytes, budget);
    };
    const keys = 6000;
    const key = (i: number) => Buffer.from(`key${String(i).padStart(8, "0")}`);
    const value = Buffer.alloc(2000, 1);
    try {
      // 400 writers at once: far more than one group commit takes, so writes wait for queue space.
      let next = 0;
      const writer = async () => {
        while (next < keys) {
          const i = next++;
          const p = e.put(key(i), value);
          check(e.stats());
          await p;
          check(e.stats());
        }
      };
      await Promise.all(Array.from({ length: 400 }, writer));
      await e.waitForBackground();
      for (let round = 0; round < 2; round++)
        for (let i = 0; i < keys; i += 3) {
          assert.ok((await e.get(key(i))) !== undefined);
          check(e.stats());
        }
    } finally {
      await e.close();
    }
    // The parts were used, not just never reached.
    assert.ok(peak.memtables > parts.memtablesBytes / 2, `memtables used (${JSON.stringify(peak)})`);
    assert.ok(peak.pending > parts.pendingWritesBytes / 2, `queue used (${JSON.stringify(peak)})`);
    assert.ok(peak.cache > parts.blockCacheBytes / 2, `cache used (${JSON.stringify(peak)})`);
  });
});
