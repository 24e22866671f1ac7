/**
 * Group commit with a blocking WAL sync (walSyncOnEventLoop): writes made by separate I/O callbacks of
 * one turn of the event loop, as a server's requests are, share one fsync. Without the deferred start
 * of the writer the first write was synced alone and every other one after it, one sync each (found in
 * a 3-node cluster: one write per fsync, a fifth of the throughput).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { LsmEngine, NodeFileSystem } from "../../src/storage/index.js";

const root = mkdtempSync(path.join(tmpdir(), "ringstore-group-commit-"));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

async function syncsFor(blocking: boolean, withSoon: boolean): Promise<{ syncs: number; writes: number }> {
  const rt = systemRuntime().timers;
  const timers = withSoon ? rt : { after: rt.after };
  // The system runtime's `after` timers do not keep the process alive (unref), so with nothing else
  // pending the loop could end before a writer started by after(0) runs (this test was cancelled so
  // once). A server always has its listening sockets; this interval stands for them.
  const alive = setInterval(() => undefined, 1000);
  try {
    return await writeTwenty(blocking, timers);
  } finally {
    clearInterval(alive);
  }
}

async function writeTwenty(
  blocking: boolean,
  timers: Parameters<typeof LsmEngine.open>[0]["timers"],
): Promise<{ syncs: number; writes: number }> {
  const db = await LsmEngine.open({
    dir: path.join(root, `db${dirs++}`),
    fs: new NodeFileSystem(),
    timers,
    options: { durability: "fsync", walSyncOnEventLoop: blocking },
  });
  const before = db.stats().walSyncs;
  const n = 20;
  // Each write starts from its own callback, the way a server's requests do.
  const done = await new Promise<Promise<void>[]>((resolve) => {
    const ps: Promise<void>[] = [];
    for (let i = 0; i < n; i++)
      setImmediate(() => {
        ps.push(db.put(Buffer.from(`k${i}`), Buffer.from(`v${i}`)));
        if (ps.length === n) resolve(ps);
      });
  });
  await Promise.all(done);
  const syncs = db.stats().walSyncs - before;
  for (let i = 0; i < n; i++)
    assert.equal(Buffer.from((await db.get(Buffer.from(`k${i}`)))!).toString(), `v${i}`);
  await db.close();
  return { syncs, writes: n };
}

test("blocking sync: writes from the callbacks of one loop turn share one fsync", async () => {
  const { syncs, writes } = await syncsFor(true, true);
  assert.ok(syncs <= 2, `${writes} writes took ${syncs} syncs`);
});

test("blocking sync with timers that cannot run 'soon': after(0) groups them too", async () => {
  const { syncs, writes } = await syncsFor(true, false);
  assert.ok(syncs <= 2, `${writes} writes took ${syncs} syncs`);
});

test("asynchronous sync: writes gather while a sync is in flight", async () => {
  const { syncs, writes } = await syncsFor(false, true);
  assert.ok(syncs < writes, `${writes} writes took ${syncs} syncs`);
});
