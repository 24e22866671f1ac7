/**
 * Scenarios played step by step on the simulator's cluster (real NodeCores, the LSM engine on a
 * crashable file system behind a slow disk, the simulated network).
 *
 * The one the actor renewal exists for: a
 * coordinator's disk hangs; a blind write through it is acknowledged by the two other replicas while
 * its own copy is still waiting for its fsync; the coordinator crashes, losing that copy, and restarts;
 * a second blind write of the key goes through it. With a new actor after the crash (what node.ts and
 * the simulator do) the two writes get different dots. With the old actor (the planted `keep-actor`
 * bug) they still do: the node's counter starts above its durable lease (replication/dot-counter.ts),
 * a second line of defence. With both off (`keep-actor-and-counter`) the second write is named like the
 * first, and the checkers see one dot naming two writes.
 *
 * And a replica that can version no more writes (sealed for a clean stop, or after a failed local
 * write) hands its writes to another replica.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { derivedRandom, VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { checkUniqueDots } from "../../src/sim/checker.js";
import { type PlantedBug, SimCluster } from "../../src/sim/cluster.js";
import type { WriteRecord } from "../../src/sim/history.js";
import { SimNetwork } from "../../src/sim/sim-network.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";

const EPOCH_MS = 1_700_000_000_000;

async function startCluster(bug: PlantedBug | undefined) {
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
      nodes: 3,
      storage: "lsm",
      n: 3,
      r: 2,
      w: 2,
      partitions: 16,
      gossipIntervalMs: 200,
      downAfterMs: 2000,
      requestTimeoutMs: 500,
      maxSiblings: 64,
      ...(bug === undefined ? {} : { bug }),
    },
    sched,
    net,
    [],
    () => undefined,
  );
  await sched.runUntilSettled(cluster.start(), 10_000);
  await sched.runFor(2000);
  return { sched, cluster };
}

async function scenario(bug: PlantedBug | undefined) {
  const { sched, cluster } = await startCluster(bug);
  const a = cluster.nodes[0]!;
  const key = Buffer.from("cart");
  const write = async (text: string): Promise<WriteRecord> => {
    const out = await sched.runUntilSettled(
      a.core.coordinator.write(
        key,
        EMPTY_VECTOR,
        {
          data: Buffer.from(JSON.stringify({ w: text, items: [] })),
          contentType: "",
          deleted: false,
          writtenAtMs: 0,
        },
        2,
        500,
      ),
      2000,
    );
    assert.equal(out.kind, "ok", `write ${text}: ${JSON.stringify(out)}`);
    const dot = out.kind === "ok" ? `${out.written.dot.counter}@${out.written.dot.actor}` : "";
    return {
      id: text,
      client: "c",
      key: "cart",
      kind: "blind",
      observed: [],
      observedItems: [],
      items: [],
      outcome: "ok",
      dot,
      invokedAt: 0,
      completedAt: 0,
    };
  };

  a.disk!.stalled = true; // a's syncs hang: w1 is acknowledged by the two other replicas alone
  const first = await write("w1");
  const durableAtA = (await a.core.replica.read(key)).length;
  cluster.crash(a.id, "drop", () => 0.5);
  await sched.runUntilSettled(cluster.restart(a.id), 2000);
  assert.equal((await a.core.replica.read(key)).length, 0, "a lost its own copy of w1 in the crash");
  const second = await write("w2");
  return { first, second, durableAtA };
}

test("a restart keeps no actor: a lost local copy never makes two writes share a dot", async () => {
  const { first, second, durableAtA } = await scenario(undefined);
  assert.equal(durableAtA, 0, "w1 was acknowledged before it was durable at its coordinator");
  assert.notEqual(first.dot, second.dot);
  assert.deepEqual(checkUniqueDots({ writes: [first, second], final: { keys: new Map() } }), []);
});

test("planted keep-actor bug: the node's counter, above its durable lease, still keeps the dots apart", async () => {
  const { first, second } = await scenario("keep-actor");
  assert.equal(second.dot?.split("@")[1], first.dot?.split("@")[1], "the actor was kept");
  assert.notEqual(first.dot, second.dot);
  assert.deepEqual(checkUniqueDots({ writes: [first, second], final: { keys: new Map() } }), []);
});

test("planted keep-actor-and-counter bug: the second write reuses the first one's dot, and the checker says so", async () => {
  const { first, second } = await scenario("keep-actor-and-counter");
  assert.equal(first.dot, second.dot);
  const anomalies = checkUniqueDots({ writes: [first, second], final: { keys: new Map() } });
  assert.equal(anomalies.length, 1);
  assert.match(anomalies[0]!.message, /both acknowledged as version/);
});

test("a replica that versions no more (stopping, or its disk failed) forwards its writes", async () => {
  const { sched, cluster } = await startCluster(undefined);
  const a = cluster.nodes[0];
  const key = Buffer.from("cart");
  assert.ok(a!.core.preferenceList(key).includes(a!.id));
  await sched.runUntilSettled(a!.core.replica.seal(), 1000);
  const out = await sched.runUntilSettled(
    a!.core.router.write(
      key,
      EMPTY_VECTOR,
      { data: Buffer.from("v"), contentType: "", deleted: false, writtenAtMs: 0 },
      2,
      500,
    ),
    2000,
  );
  assert.equal(out.kind, "ok", JSON.stringify(out));
  if (out.kind === "ok")
    assert.notEqual(out.written.dot.actor, a!.core.replica.actor, "another replica versioned it");
});
