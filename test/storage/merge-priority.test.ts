/**
 * The merge thread runs at a lower CPU priority than the rest of the process (compaction-worker.ts,
 * mergeNice), the flush thread at the process's own: on Linux each thread's nice value shows in
 * /proc/self/task/TID/stat.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { workerCompactionExecutor } from "../../src/storage/compaction-worker.js";

/** Every thread of this process and its nice value. */
function niceValues(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // Fields after the command's closing parenthesis: state is field 3, nice field 19.
      out.set(tid, Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out;
}

/** Waits until a thread not in `before` has nice value `nice`; returns whether one did. */
async function threadAppears(before: Map<string, number>, nice: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    for (const [tid, v] of niceValues()) if (!before.has(tid) && v === nice) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

describe("the merge thread's priority", { skip: process.platform !== "linux" }, () => {
  test("the merge worker runs mergeNice below the process; the flush worker does not", async () => {
    const base = Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ")[16]);
    const before = niceValues();
    const ex = workerCompactionExecutor({ mergeNice: 7 });
    try {
      ex.warm?.();
      assert.ok(await threadAppears(before, Math.min(19, base + 7)), "a thread at the process's nice + 7");
      const lowered = [...niceValues()].filter(([tid, v]) => !before.has(tid) && v !== base);
      assert.equal(lowered.length, 1, `only the merge thread is lowered: ${JSON.stringify(lowered)}`);
    } finally {
      await ex.close();
    }
  });

  test("0 leaves it as it is; a value outside 0..19 is refused", async () => {
    assert.throws(
      () => workerCompactionExecutor({ mergeNice: 20 }),
      /mergeNice must be an integer from 0 to 19/,
    );
    assert.throws(() => workerCompactionExecutor({ mergeNice: -1 }), /mergeNice/);
    const base = Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ")[16]);
    const before = niceValues();
    const ex = workerCompactionExecutor({ mergeNice: 0 });
    try {
      ex.warm?.();
      await new Promise((r) => setTimeout(r, 1500));
      const lowered = [...niceValues()].filter(([tid, v]) => !before.has(tid) && v !== base);
      assert.deepEqual(lowered, []);
    } finally {
      await ex.close();
    }
  });
});
