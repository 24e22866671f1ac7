/**
 * A joining node follows the handoff its join started (node/join-follower.ts) on the simulator's cluster
 * (real NodeCores, the simulated network, virtual time): it waits for the ring that holds it, asks every
 * member for its figures by `handoff_progress`, and ends once each has finished its pass for that ring,
 * when the keys are on the new node; a member that crashed is named as not answering instead of waited
 * for; and the follow is bounded in time.
 *
 * Deterministic: the same seed gives the same run (SIM_SEED to replay another).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { JoinFollower, type JoinProgress } from "../../src/node/join-follower.js";
import type { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import type { SimNode } from "../../src/sim/cluster.js";
import { simKey, writtenSimCluster } from "../support/sim-cluster.js";

const SEED = process.env.SIM_SEED !== undefined ? Number(process.env.SIM_SEED) : 11;
const KEYS = 200;
const key = simKey;

const startCluster = (nodes: number) =>
  writtenSimCluster({ seed: SEED, nodes, storage: "memory", keys: KEYS });

/** A follower on the joined node `n`, as node.ts makes one, keeping every figure it reports. */
function follow(sched: VirtualScheduler, n: SimNode, o: { silentForMs?: number; maxMs?: number } = {}) {
  const seen: JoinProgress[] = [];
  const f = new JoinFollower({
    selfId: n.id,
    membership: n.core.membership,
    transport: n.transport,
    clock: sched,
    timers: sched,
    ownFigures: () => n.core.handoffFigures(),
    received: () => n.core.handoffReceived,
    onChange: (p) => seen.push(p),
    lookEveryMs: 250,
    ...o,
  });
  f.start();
  return { f, seen, ended: () => seen.some((p) => p.state === "done" || p.state === "given_up") };
}

test("the follow ends once every member has finished its pass for the ring with the new node", async () => {
  const { sched, cluster, trace } = await startCluster(4);
  const n5 = await sched.runUntilSettled(cluster.join("n5", "n2"), 5000);
  const { seen, ended } = follow(sched, n5);
  assert.ok(await sched.runUntil(ended, 60_000), trace.join("\n"));
  const last = seen[seen.length - 1]!;
  assert.equal(last.state, "done");
  // The ring it followed holds n5, and every member's last complete pass is for it (or later).
  const ring = n5.core.membership.ring!;
  assert.ok(last.ringVersion !== null && last.ringVersion <= ring.version);
  assert.deepEqual(
    last.members.map((m) => [m.id, m.state]),
    ["n1", "n2", "n3", "n4", "n5"].map((id) => [id, "done"]),
  );
  for (const n of cluster.members())
    assert.ok((n.core.handoff.handedOffRing?.version ?? 0) >= last.ringVersion!, n.id);
  // What the members sent for it is what n5 received, and n5 now holds each key it replicates.
  assert.ok(last.keysReceived > 0 && last.keysSent >= last.keysReceived, JSON.stringify(last));
  assert.equal(last.keysReceived, n5.core.handoffReceived.keys);
  let held = 0;
  for (let i = 0; i < KEYS; i++)
    if (n5.core.preferenceList(key(i)).includes("n5")) {
      held++;
      assert.equal((await sched.runUntilSettled(n5.core.replica.read(key(i)), 1000)).length, 1, `key-${i}`);
    }
  assert.ok(held > 0);
  // Before it ended it was following (or waiting for the ring): the figures only grow within a pass.
  assert.ok(seen.slice(0, -1).every((p) => p.state === "waiting" || p.state === "handing_off"));
  cluster.stop();
});

test("a member that crashed is named as not answering; the follow does not wait for it", async () => {
  const { sched, cluster, trace } = await startCluster(4);
  const n5 = await sched.runUntilSettled(cluster.join("n5", "n2"), 5000);
  cluster.crash("n4", "drop", () => 0.5);
  const { seen, ended } = follow(sched, n5, { silentForMs: 3000 });
  assert.ok(await sched.runUntil(ended, 60_000), trace.join("\n"));
  const last = seen[seen.length - 1]!;
  assert.equal(last.state, "done");
  const n4 = last.members.find((m) => m.id === "n4")!;
  assert.equal(n4.state, "silent");
  assert.match(n4.why!, /down|no answer/);
  assert.ok(last.members.filter((m) => m.id !== "n4").every((m) => m.state === "done"));
  cluster.stop();
});

test("bounded in time: past maxMs the follow gives up, naming who was not done", async () => {
  const { sched, cluster } = await startCluster(4);
  // Every member's throttle so slow that its pass takes minutes.
  for (const n of cluster.members()) n.core.handoff.setBytesPerSecond(64);
  const n5 = await sched.runUntilSettled(cluster.join("n5", "n2"), 5000);
  const { seen, ended } = follow(sched, n5, { maxMs: 5000 });
  assert.ok(await sched.runUntil(ended, 20_000));
  const last = seen[seen.length - 1]!;
  assert.equal(last.state, "given_up");
  assert.ok(last.members.some((m) => m.state === "busy"));
  assert.ok(last.endedAt! - last.startedAt <= 5000 + 1000);
  for (const n of cluster.members()) n.core.handoff.setBytesPerSecond(64 << 20);
  cluster.stop();
});
