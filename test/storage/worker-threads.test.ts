/**
 * The storage engine's worker threads (compaction-worker.ts): an open waits until they can take a flush,
 * and the merge thread runs at a lower CPU priority than the rest of the process (mergeNice), the flush
 * thread at the process's own (on Linux each thread's nice value shows in /proc/self/task/TID/stat).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { workerCompactionExecutor } from "../../src/storage/compaction-worker.js";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { inlineCompactionExecutor } from "../../src/storage/lsm/compaction-job.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";

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
      await ex.warm?.();
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
      await ex.warm?.();
      const lowered = [...niceValues()].filter(([tid, v]) => !before.has(tid) && v !== base);
      assert.deepEqual(lowered, []);
    } finally {
      await ex.close();
    }
  });
});

describe("opening with worker threads", () => {
  test("open starts the threads before recovering and returns once they are ready", async () => {
    const fs = new MemoryFileSystem();
    const inline = inlineCompactionExecutor(fs);
    const events: string[] = [];
    let ready!: () => void;
    const compactor = {
      ...inline,
      warm: () => {
        events.push("warm");
        return new Promise<void>((resolve) => {
          ready = () => {
            events.push("ready");
            resolve();
          };
        });
      },
    };
    const opening = LsmEngine.open({ dir: "/db", fs, compactor }).then((e) => {
      events.push("open");
      return e;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(events, ["warm"], "open waits for the threads");
    ready();
    const e = await opening;
    assert.deepEqual(events, ["warm", "ready", "open"]);
    await e.close();
  });

  test("the real threads: an open resolves (the threads keep the process alive until they are ready)", async () => {
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { NodeFileSystem } = await import("../../src/storage/fs/node-file-system.js");
    const dir = mkdtempSync(join(tmpdir(), "ringstore-workers-"));
    try {
      const e = await LsmEngine.open({
        dir,
        fs: new NodeFileSystem(),
        compactor: workerCompactionExecutor(),
      });
      await e.write([{ kind: "put", key: Buffer.from("k"), value: Buffer.from("v") }]);
      await e.flush();
      assert.deepEqual(await e.get(Buffer.from("k")), Buffer.from("v"));
      await e.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
