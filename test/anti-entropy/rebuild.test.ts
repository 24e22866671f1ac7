/**
 * Rebuilding trees from the data while writes go on (src/anti-entropy/rebuild.ts, through TreeSet):
 * under random interleavings (virtual time: writes slowed before they become visible and before they
 * resolve, pages of a few keys, random yields, some merges failing), the rebuilt trees equal the trees
 * built from scratch from what the engine holds once everything settled, for the partitions rebuilt and
 * for the others. Also: a rebuild that is abandoned or loses a partition, a damaged set, a failed scan.
 *
 * Seeded: FC_SEED=<n> replays another seed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { runRebuild, type ScanSource } from "../../src/anti-entropy/rebuild.js";
import { PartitionTree } from "../../src/anti-entropy/tree.js";
import { TreeSet } from "../../src/anti-entropy/tree-set.js";
import { InvariantError } from "../../src/core/assert.js";
import { KeyLock } from "../../src/replication/key-lock.js";
import { DATA } from "../../src/replication/keyspaces.js";
import { Replica } from "../../src/replication/replica.js";
import { partitionOf } from "../../src/ring/ring.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { contextOf, EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";
import { FC_PARAMS, HookedEngine, storedValue, treesFromScratch } from "./support.js";

const Q = 8;
const pof = (k: Uint8Array) => partitionOf(k, Q);
const ALL = Array.from({ length: Q }, (_, i) => i);
const key = (i: number) => Buffer.from(`key-${String(i).padStart(3, "0")}`);

interface World {
  readonly sched: VirtualScheduler;
  readonly trees: TreeSet;
  readonly inner: MemoryEngine;
  readonly engine: HookedEngine;
  readonly replica: Replica;
  readonly lock: KeyLock;
  readonly sleep: (maxMs: number) => Promise<void>;
  /** Runs virtual time until `p` settles. */
  readonly run: <T>(p: Promise<T>) => Promise<T>;
}

function world(seed: number, failMarker = "boom"): World {
  const sched = new VirtualScheduler();
  const random = seededRandom(seed);
  const sleep = (maxMs: number) =>
    new Promise<void>((resolve) => sched.after(Math.floor(random.next() * (maxMs + 1)), resolve));
  const trees = new TreeSet(pof);
  for (const p of ALL) trees.adopt(new PartitionTree(p));
  const inner = new MemoryEngine();
  const engine = new HookedEngine(inner, trees, {
    delay: () => sleep(3),
    fails: (_k, set) => set.some((s) => Buffer.from(s.value.data).toString() === failMarker),
  });
  const lock = new KeyLock();
  const replica = new Replica(engine, "node-a.1", 64, lock);
  const run = <T>(p: Promise<T>) => sched.runUntilSettled(p, 1_000_000);
  return { sched, trees, inner, engine, replica, lock, sleep, run };
}

/** One client's operation on a key, as the node's paths do it. */
async function operate(w: World, op: number, k: Uint8Array, tag: string): Promise<void> {
  switch (op % 6) {
    case 0:
    case 1: {
      const seen = await w.replica.read(k);
      await w.replica.coordinate(k, contextOf(seen), storedValue(tag));
      return;
    }
    case 2: {
      const seen = await w.replica.read(k);
      await w.replica.coordinate(k, contextOf(seen), storedValue("", true));
      return;
    }
    case 3: {
      // A set versioned elsewhere arrives by replication.
      const theirs = update([], EMPTY_VECTOR, `node-b.${tag}`, storedValue(`b ${tag}`)).set;
      await w.replica.merge(k, theirs);
      return;
    }
    case 4: {
      // A merge whose engine write fails (it is taken back out of the trees).
      const theirs: StoredSibling[] = update([], EMPTY_VECTOR, `node-c.${tag}`, storedValue("boom")).set;
      await w.replica.merge(k, theirs).catch(() => {});
      return;
    }
    default:
      // A removal under the key's lock (a purge, a handed-off key).
      await w.lock.run(k, () => w.engine.delete(DATA.encode(k)));
  }
}

/**
 * The replica's scan, its snapshot taken at the call as the engine does, its page delivered some virtual
 * time later (a page read from disk): writes begin and end while a page is being read.
 */
function slowScan(w: World): ScanSource {
  return {
    scan: async (after, maxKeys, maxBytes) => {
      const page = w.replica.scan(after, maxKeys, maxBytes);
      await w.sleep(6);
      return page;
    },
  };
}

async function expectTreesMatchData(w: World): Promise<void> {
  const scratch = await treesFromScratch(w.inner, pof, ALL);
  for (const p of ALL) {
    const t = w.trees.tree(p);
    assert.ok(t !== undefined, `partition ${p} has no tree`);
    t.checkLevels();
    assert.ok(t.equals(scratch.get(p)!), `partition ${p}: its tree differs from its data`);
  }
}

describe("rebuild", () => {
  test("a rebuild under concurrent writes, merges, failures and removals equals the trees of the data", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.subarray(ALL, { minLength: 1 }),
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.array(fc.tuple(fc.nat(5), fc.nat(59)), { minLength: 5, maxLength: 30 }), {
          minLength: 2,
          maxLength: 8,
        }),
        fc.nat(10),
        async (seed, rebuilt, pageKeys, clients, startAfter) => {
          const w = world(seed);
          // Some data before the rebuild starts.
          for (let i = 0; i < 60; i += 1 + (i % 2))
            await w.run(w.replica.coordinate(key(i), EMPTY_VECTOR, storedValue(`pre${i}`)));
          let report: Awaited<ReturnType<typeof runRebuild>> | undefined;
          const rebuild = (async () => {
            await w.sleep(startAfter);
            const r = w.trees.startRebuild(rebuilt);
            report = await runRebuild(r, slowScan(w), {
              pageKeys,
              pageBytes: 1 << 20,
              yieldNow: () => w.sleep(2),
            });
          })();
          const work = clients.map(async (ops, c) => {
            for (const [n, [op, k]] of ops.entries()) {
              await w.sleep(4);
              await operate(w, op, key(k), `${c}.${n}`);
            }
          });
          await w.sched.runUntilSettled(Promise.all([rebuild, ...work]), 1_000_000);
          assert.equal(report?.outcome, "done");
          assert.deepEqual(w.trees.rebuilding, []);
          assert.equal(w.trees.writesInFlight, 0);
          await expectTreesMatchData(w);
        },
      ),
      { ...FC_PARAMS, numRuns: 150 },
    );
  });

  test("a write in flight when a page takes its snapshot reaches the rebuilt tree", async () => {
    // A write begun before the page's snapshot and visible after it: the page sees the old set.
    const w = world(1);
    await w.run(w.replica.coordinate(key(1), EMPTY_VECTOR, storedValue("old")));
    const r = w.trees.startRebuild(ALL);
    const writing = w.replica.coordinate(key(1), EMPTY_VECTOR, storedValue("new"));
    // Let the write begin (its hook runs) but not land.
    await Promise.resolve();
    await Promise.resolve();
    await Promise.resolve();
    assert.equal(w.trees.writesInFlight, 1);
    const rebuilding = runRebuild(r, w.replica, {
      pageKeys: 10,
      pageBytes: 1 << 20,
      yieldNow: () => w.sleep(1),
    });
    await w.sched.runUntilSettled(Promise.all([writing, rebuilding]), 10_000);
    await expectTreesMatchData(w);
  });

  test("partitions not rebuilt keep their live trees; a dropped partition leaves the rebuild", async () => {
    const w = world(2);
    for (let i = 0; i < 40; i++)
      await w.run(w.replica.coordinate(key(i), EMPTY_VECTOR, storedValue(`v${i}`)));
    const r = w.trees.startRebuild([0, 1, 2]);
    assert.deepEqual(w.trees.rebuilding, [0, 1, 2]);
    assert.equal(w.trees.tree(1), undefined, "a partition being rebuilt has no tree to answer from");
    assert.ok(w.trees.tree(3) !== undefined);
    w.trees.drop(2);
    const report = await w.sched.runUntilSettled(
      runRebuild(r, w.replica, { pageKeys: 3, pageBytes: 1 << 20, yieldNow: () => w.sleep(1) }),
      10_000,
    );
    assert.equal(report.outcome, "done");
    assert.equal(report.partitions, 2);
    assert.ok(report.pages >= 14);
    assert.equal(w.trees.tree(2), undefined);
    assert.deepEqual(w.trees.partitions, [0, 1, 3, 4, 5, 6, 7]);
    const scratch = await treesFromScratch(w.inner, pof, ALL);
    for (const p of [0, 1, 3, 4, 5, 6, 7]) assert.ok(w.trees.tree(p)!.equals(scratch.get(p)!));
    assert.equal(
      report.keys,
      [...scratch.entries()].filter(([p]) => p <= 1).reduce((n, [, t]) => n + t.keys, 0),
    );
  });

  test("an abandoned rebuild adopts nothing and frees the set for the next one", async () => {
    const w = world(3);
    for (let i = 0; i < 20; i++)
      await w.run(w.replica.coordinate(key(i), EMPTY_VECTOR, storedValue(`v${i}`)));
    const r = w.trees.startRebuild(ALL);
    assert.throws(() => w.trees.startRebuild([1]), InvariantError);
    const running = runRebuild(r, w.replica, { pageKeys: 2, pageBytes: 1 << 20, yieldNow: () => w.sleep(1) });
    await w.sched.runFor(3);
    r.abandon("the node is stopping");
    const report = await w.sched.runUntilSettled(running, 10_000);
    assert.equal(report.outcome, "abandoned");
    assert.equal(report.reason, "the node is stopping");
    assert.deepEqual(w.trees.partitions, []);
    const again = w.trees.startRebuild(ALL);
    const done = await w.sched.runUntilSettled(
      runRebuild(again, w.replica, { pageKeys: 100, pageBytes: 1 << 20, yieldNow: () => w.sleep(1) }),
      10_000,
    );
    assert.equal(done.outcome, "done");
    await expectTreesMatchData(w);
  });

  test("a damaged set is counted and left out; a failed scan abandons the rebuild and rethrows", async () => {
    const w = world(4);
    await w.run(w.replica.coordinate(key(1), EMPTY_VECTOR, storedValue("v")));
    await w.inner.put(DATA.encode(key(2)), Buffer.from("not a stored set"));
    const r = w.trees.startRebuild(ALL);
    const report = await w.sched.runUntilSettled(
      runRebuild(r, w.replica, { pageKeys: 10, pageBytes: 1 << 20, yieldNow: () => w.sleep(1) }),
      10_000,
    );
    assert.equal(report.damaged, 1);
    assert.equal(w.trees.tree(pof(key(1)))!.keys, 1);

    const failing = {
      scan: async () => {
        throw new Error("disk gone");
      },
    };
    const again = w.trees.startRebuild([0]);
    await assert.rejects(
      runRebuild(again, failing, { pageKeys: 10, pageBytes: 1, yieldNow: async () => {} }),
      /disk gone/,
    );
    assert.equal(again.report().outcome, "abandoned");
    assert.deepEqual(w.trees.rebuilding, []);
  });
});
