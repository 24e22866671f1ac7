/**
 * Tombstones, played step by step on the simulator's cluster (real NodeCores and start-ups, the LSM
 * engine on crashable disks, the simulated network, virtual time):
 *
 * - a purge waits for every copy in the cluster: a member that is no replica of the key but holds an
 *   older copy of it (left there by a ring change) is sent the tombstones first, and purged with the rest;
 *   a member that is down holds every purge back;
 * - kv679: a replica's disk is restored from a backup that holds the key's old tombstone, after the
 *   tombstone was purged and the key written again; the stale tombstone spreads back, and the new write
 *   must survive it (its dot comes from the node-wide counter). With the planted `counter-from-set` bug
 *   (dots from the key's set alone, as before the counter) the new write reuses the old value's dot, the
 *   old tombstone covers it, and it is lost;
 * - the node restored from an old backup is refused at its start (away longer than the grace period),
 *   and starts under a new actor when forced.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { describe, test } from "node:test";
import { NodeAwayTooLongError } from "../../src/node/start-plan.js";
import { derivedRandom, VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { type PlantedBug, SimCluster, type SimNode } from "../../src/sim/cluster.js";
import { SimNetwork } from "../../src/sim/sim-network.js";
import type { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { contextOf, type Dot, EMPTY_VECTOR, type VersionVector } from "../../src/versioning/dvv.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";

const EPOCH_MS = 1_700_000_000_000;
const GRACE_MS = 10_000;
const KEY = Buffer.from("cart");

async function startCluster(nodes: number, bug?: PlantedBug) {
  const sched = new VirtualScheduler({ startMs: EPOCH_MS });
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: derivedRandom(1, "network"),
    latency: { minMs: 1, maxMs: 1 },
  });
  const cluster = new SimCluster(
    {
      seed: 1,
      nodes,
      storage: "lsm",
      n: 3,
      r: 2,
      w: 2,
      partitions: 16,
      gossipIntervalMs: 200,
      downAfterMs: 2000,
      requestTimeoutMs: 500,
      maxSiblings: 64,
      hintWindowMs: 2000,
      tombstones: {
        graceMs: GRACE_MS,
        pacing: {
          sweepIntervalMs: 500,
          scanKeysPerSecond: 100_000,
          purgesPerSecond: 10_000,
          pageKeys: 256,
          pageBytes: 1 << 20,
        },
      },
      ...(bug === undefined ? {} : { bug }),
    },
    sched,
    net,
    [],
    () => undefined,
  );
  await sched.runUntilSettled(cluster.start(), 10_000);
  await sched.runFor(2000);
  const read = (n: SimNode) => sched.runUntilSettled(n.core.replica.read(KEY), 1000);
  const write = async (via: SimNode, context: VersionVector, text: string | null): Promise<StoredSibling> => {
    const out = await sched.runUntilSettled(
      via.core.router.write(
        KEY,
        context,
        {
          data: Buffer.from(text ?? ""),
          contentType: "text/plain",
          deleted: text === null,
          writtenAtMs: via.clock.now(),
        },
        3,
        1000,
      ),
      3000,
    );
    assert.equal(out.kind, "ok", JSON.stringify(out));
    return out.kind === "ok" ? out.written : (undefined as never);
  };
  return { sched, cluster, read, write };
}

const dots = (set: readonly StoredSibling[]) =>
  set.map((s) => `${s.dot.counter}@${s.dot.actor}${s.value.deleted ? " (deleted)" : ""}`);
const holds = (set: readonly StoredSibling[], d: Dot) =>
  set.some((s) => s.dot.actor === d.actor && s.dot.counter === d.counter);

/** Every file of the node's data directory (two levels: the node's files, the engine's). */
async function copyDir(from: MemoryFileSystem, to: MemoryFileSystem, dir: string): Promise<void> {
  await to.mkdirp(dir);
  for (const name of await from.readdir(dir)) {
    const p = path.join(dir, name);
    const f = await to.create(p);
    await f.append(await from.readFile(p));
    await f.sync();
    await f.close();
  }
  await to.syncDir(dir);
}

async function restoreDir(node: SimNode, backup: MemoryFileSystem): Promise<void> {
  for (const dir of ["/data", "/data/storage"])
    for (const name of await node.fs.readdir(dir)) await node.fs.unlink(path.join(dir, name));
  for (const dir of ["/data", "/data/storage"])
    for (const name of await backup.readdir(dir)) {
      const f = await node.fs.create(path.join(dir, name));
      await f.append(await backup.readFile(path.join(dir, name)));
      await f.sync();
      await f.close();
    }
  await node.fs.syncDir("/data/storage");
  await node.fs.syncDir("/data");
}

describe("tombstone purging waits for every copy", () => {
  test("an older copy at a member that is no replica is superseded first, then purged with the rest", async () => {
    const { sched, cluster, read, write } = await startCluster(4);
    const byId = (id: string) => cluster.byId.get(id)!;
    const prefs = cluster.nodes[0]!.core.preferenceList(KEY);
    const [owner, ,] = prefs.map(byId);
    const other = cluster.nodes.find((n) => !prefs.includes(n.id))!;
    const v1 = await write(owner!, EMPTY_VECTOR, "v1");
    // A copy of v1 outside the key's replicas, as a ring change that moved the key away leaves one.
    await sched.runUntilSettled(other.core.replica.merge(KEY, [v1]), 1000);
    await write(owner!, contextOf([v1]), null);
    await sched.runFor(GRACE_MS + 3000);
    const refused = () => cluster.tombstones.refused.get("differs") ?? 0;
    assert.ok(refused() > 0, "the owner held the purge back: a member held another copy");
    // The owner sent that member its tombstones, which supersede v1; then every copy was purged.
    await sched.runUntil(() => cluster.tombstones.purged >= 4, 10_000);
    for (const n of cluster.nodes) assert.deepEqual(dots(await read(n)), [], `${n.id} still holds the key`);
    assert.equal(cluster.tombstones.purged, 4);
  });

  test("a member that is down holds every purge back until it returns", async () => {
    const { sched, cluster, read, write } = await startCluster(4);
    const prefs = cluster.nodes[0]!.core.preferenceList(KEY);
    const owner = cluster.byId.get(prefs[0]!)!;
    const other = cluster.nodes.find((n) => !prefs.includes(n.id))!;
    const v1 = await write(owner, EMPTY_VECTOR, "v1");
    await write(owner, contextOf([v1]), null);
    // Down from shortly before the grace period ends until shortly after (away less than the grace
    // period, so its start is not refused).
    await sched.runFor(GRACE_MS - 4000);
    cluster.crash(other.id, "drop", () => 0);
    await sched.runFor(6000);
    assert.equal(cluster.tombstones.purged, 0);
    assert.ok((cluster.tombstones.refused.get("replica_down") ?? 0) > 0);
    for (const id of prefs) assert.equal((await read(cluster.byId.get(id)!)).length, 1);
    await sched.runUntilSettled(cluster.restart(other.id), 2000);
    await sched.runUntil(() => cluster.tombstones.purged >= 3, 15_000);
    for (const id of prefs) assert.deepEqual(dots(await read(cluster.byId.get(id)!)), []);
  });
});

/**
 * kv679 through a backup: c's disk is copied while it holds the key's tombstone, the tombstone is purged,
 * the key is written again through a, then c's disk is put back and c forced to rejoin with it.
 */
async function kv679(bug?: PlantedBug) {
  const { sched, cluster, read, write } = await startCluster(3, bug);
  const [a, , c] = cluster.nodes as [SimNode, SimNode, SimNode];
  const v1 = await write(a, EMPTY_VECTOR, "v1");
  const tombstone = await write(a, contextOf([v1]), null);
  await sched.runFor(500);
  for (const n of cluster.nodes) assert.deepEqual(dots(await read(n)), dots([tombstone]));
  // c's disk as it is now: a clean copy, taken while c is down for a moment.
  cluster.crash(c.id, "drop", () => 0);
  const { MemoryFileSystem } = await import("../../src/storage/fs/memory-file-system.js");
  const backup = new MemoryFileSystem();
  await copyDir(c.fs, backup, "/data");
  await copyDir(c.fs, backup, "/data/storage");
  await sched.runUntilSettled(cluster.restart(c.id), 2000);
  // Past the grace period, every copy agrees: the tombstone goes.
  assert.ok(await sched.runUntil(() => cluster.tombstones.purged >= 3, GRACE_MS + 10_000), "no purge");
  for (const n of cluster.nodes) assert.deepEqual(dots(await read(n)), []);
  // The key is written again, through a, as a client that read nothing (404, no context) writes.
  const v2 = await write(a, EMPTY_VECTOR, "v2");
  // c's old disk comes back: refused at first (its heartbeat is older than the grace period), then forced.
  await sched.runFor(GRACE_MS);
  cluster.crash(c.id, "drop", () => 0);
  await restoreDir(c, backup);
  const refused = await sched.runUntilSettled(
    cluster.restart(c.id).then(
      () => undefined,
      (err: unknown) => err,
    ),
    2000,
  );
  assert.ok(refused instanceof NodeAwayTooLongError, String(refused));
  const oldActor = c.actor;
  await sched.runUntilSettled(cluster.restart(c.id, true), 2000);
  assert.notEqual(c.actor, oldActor, "a node forced back takes a new actor");
  assert.deepEqual(dots(await read(c)), dots([tombstone]), "c holds the old tombstone again");
  // Anti-entropy spreads it (exchanges every 2 s).
  await sched.runFor(10_000);
  const finals: StoredSibling[][] = [];
  for (const n of cluster.nodes) finals.push(await read(n));
  return { v1, v2, tombstone, finals };
}

describe("no dot is reused after a purge (kv679)", () => {
  test("a stale copy of the old tombstone, brought back after the key was written again, hides nothing", async () => {
    const { v1, v2, tombstone, finals } = await kv679();
    assert.ok(v2.dot.counter > Math.max(v1.dot.counter, tombstone.dot.counter));
    for (const set of finals) {
      assert.ok(holds(set, v2.dot), `the new write is gone: ${dots(set)}`);
      assert.ok(holds(set, tombstone.dot), "the stale tombstone spread (as a sibling of the new write)");
    }
  });

  test("planted counter-from-set bug: the new write reuses v1's dot, and the old tombstone hides it", async () => {
    const { v1, v2, finals } = await kv679("counter-from-set");
    assert.deepEqual(v2.dot, v1.dot, "the re-created key counted from its (empty) set again");
    // Lost everywhere: the old tombstone covered it (and, past the grace period, was purged again).
    for (const set of finals)
      assert.ok(
        set.every((s) => s.value.deleted),
        `a live version survived: ${dots(set)}`,
      );
  });
});
