/**
 * Join and leave on the simulator's cluster (real NodeCores, the LSM engine on a crashable file system
 * behind a slow disk, the simulated network, virtual time): the keys move by handoff alone, with no
 * client read to repair anything, and a leaving node that crashes half-way loses no key.
 *
 * Deterministic: the same seed gives the same run (SIM_SEED to replay another).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import type { SimCluster, SimNode } from "../../src/sim/cluster.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import { encodeSiblings } from "../../src/versioning/object-codec.js";
import { simKey, writtenSimCluster } from "../support/sim-cluster.js";

const SEED = process.env.SIM_SEED !== undefined ? Number(process.env.SIM_SEED) : 7;
const KEYS = 120;
const key = simKey;

const startCluster = (nodes: number) => writtenSimCluster({ seed: SEED, nodes, storage: "lsm", keys: KEYS });

/** Keys some replica of the final ring lacks, read straight from each replica's storage. */
async function missing(sched: VirtualScheduler, cluster: SimCluster): Promise<string[]> {
  const out: string[] = [];
  const members = cluster.members();
  for (let i = 0; i < KEYS; i++) {
    for (const id of members[0]!.core.preferenceList(key(i))) {
      const node = cluster.byId.get(id)!;
      const sibs = await sched.runUntilSettled(node.core.replica.read(key(i)), 1000);
      const values = sibs.map((s) => Buffer.from(s.value.data).toString());
      if (values.join() !== `v${i}`) out.push(`key-${i} on ${id}: [${values}]`);
    }
  }
  return out;
}

const settled = (cluster: SimCluster) =>
  cluster.converged() && cluster.members().every((n: SimNode) => n.core.handoff.progress.state === "idle");

test("simulated join: the new node gets its keys by handoff, no read needed", async () => {
  const { sched, cluster, trace } = await startCluster(5);
  await sched.runUntilSettled(cluster.join("n6", "n2"), 5000);
  assert.ok(
    await sched.runUntil(() => settled(cluster) && cluster.members().length === 6, 60_000),
    trace.join("\n"),
  );
  await sched.runFor(2000);
  const n6 = cluster.byId.get("n6")!;
  const held = cluster.members()[0]!.core.placement.partitionsHeld();
  assert.ok(held.replicated.length > 0);
  assert.ok(n6.core.placement.partitionsHeld().replicated.length > 0, "n6 replicates partitions");
  // Handoff's stores, and what n6 was sent while joining, are not stray: no node sent anything on.
  for (const n of cluster.members())
    assert.deepEqual(n.core.strays.counts, { forwarded: 0, failed: 0, dropped: 0 }, n.id);
  assert.deepEqual(await missing(sched, cluster), []);
  cluster.stop();
});

test("simulated leave with a crash half-way: the leave resumes after the restart, every key keeps N copies", async () => {
  const { sched, cluster, trace } = await startCluster(5);
  const n2 = cluster.byId.get("n2")!;
  await sched.runUntilSettled(n2.core.leave(false), 5000);
  assert.equal(n2.core.membership.self.status, "leaving");
  // Out of the ring, handing off (or waiting out the settle time): crash it.
  assert.ok(await sched.runUntil(() => n2.core.handoff.progress.keysScanned > 0, 20_000), trace.join("\n"));
  cluster.crash("n2", "drop", () => 0.5);
  await sched.runFor(1000);
  await sched.runUntilSettled(cluster.restart("n2"), 5000);
  assert.equal(n2.core.membership.self.status, "leaving", "the leave survives the restart");
  assert.ok(await sched.runUntil(() => n2.state === "left", 60_000), trace.join("\n"));
  assert.ok(
    await sched.runUntil(
      () =>
        settled(cluster) && cluster.members().every((n) => n.core.membership.member("n2")?.status === "left"),
      60_000,
    ),
    trace.join("\n"),
  );
  assert.equal(cluster.members().length, 4);
  for (const n of cluster.members())
    assert.ok(!n.core.membership.ring!.owners.includes("n2"), `${n.id}'s ring has no n2`);
  // The leave's handoff stores reach nodes whose ring may be older than n2's: none is sent on as stray.
  for (const n of cluster.members()) assert.equal(n.core.strays.counts.forwarded, 0, n.id);
  assert.deepEqual(await missing(sched, cluster), []);
  // A second leave would leave three members: still allowed (N=3); a third is refused without force.
  await sched.runUntilSettled(cluster.byId.get("n3")!.core.leave(false), 5000);
  assert.ok(await sched.runUntil(() => cluster.byId.get("n3")!.state === "left", 60_000), trace.join("\n"));
  await assert.rejects(
    sched.runUntilSettled(cluster.byId.get("n4")!.core.leave(false), 5000),
    /fewer than N=3/,
  );
  assert.ok(await sched.runUntil(() => settled(cluster), 60_000));
  assert.deepEqual(await missing(sched, cluster), []);
  cluster.stop();
});

test("departures asked for at once on different nodes: the claimant lets through only those that keep N members", async () => {
  const settle = (p: Promise<unknown>) =>
    p.then(
      () => "ok",
      (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
    );
  // Four members, N=3: one may go. Each node alone sees three others up and would pass its own check;
  // n1, the lowest id, is the claimant and approves the first departure it hears of.
  const a = await startCluster(4);
  const three = await a.sched.runUntilSettled(
    Promise.all(["n2", "n3", "n4"].map((id) => settle(a.cluster.byId.get(id)!.core.leave(false)))),
    5000,
  );
  assert.equal(three.filter((x) => x === "ok").length, 1, three.join("\n"));
  for (const x of three.filter((y) => y !== "ok"))
    assert.match(
      x,
      /^leave_refused: .*fewer than N=3 \(counting the departure of n\d, approved by the claimant n1\)/,
    );
  a.cluster.stop();

  // Five members, one of them crashed: two may go. The claimant leaves; a leave and a removal asked for at
  // the same moment on other nodes reach it once it is leaving and no longer the claimant: try again.
  const b = await startCluster(5);
  const bcore = (id: string) => b.cluster.byId.get(id)!.core;
  b.cluster.crash("n5", "drop", () => 0.5);
  assert.ok(
    await b.sched.runUntil(
      () => ["n2", "n3"].every((id) => bcore(id).membership.liveness("n5", b.sched.now()) === "down"),
      10_000,
    ),
    b.trace.join("\n"),
  );
  await b.sched.runFor(3000); // the nodes' own clocks may run behind the scheduler's
  const mixed = await b.sched.runUntilSettled(
    Promise.all([
      settle(bcore("n1").leave(false)),
      settle(bcore("n2").leave(false)),
      settle(bcore("n3").remove("n5", false)),
    ]),
    5000,
  );
  assert.deepEqual(
    mixed.map((x) => x.split(":")[0]),
    ["ok", "unavailable", "unavailable"],
    mixed.join("\n"),
  );
  assert.match(mixed[1]!, /n1 is not the claimant \(n2 is/);
  // Asked again once every node has heard of n1's leave, n2 decides: the removal passes (n2, n3, n4
  // remain); n2's own leave would leave two.
  assert.ok(
    await b.sched.runUntil(
      () => ["n2", "n3", "n4"].every((id) => bcore(id).membership.member("n1")?.status !== "up"),
      10_000,
    ),
    b.trace.join("\n"),
  );
  const again = await b.sched.runUntilSettled(
    Promise.all([settle(bcore("n3").remove("n5", false)), settle(bcore("n2").leave(false))]),
    5000,
  );
  assert.deepEqual(
    again.map((x) => x.split(":")[0]),
    ["ok", "leave_refused"],
    again.join("\n"),
  );
  // Forced, a departure below N is approved.
  assert.equal(
    await b.sched.runUntilSettled(settle(b.cluster.byId.get("n2")!.core.remove("n4", true)), 5000),
    "ok",
  );
  b.cluster.stop();
});

test("departures while the claimant changes: a node that is not the claimant, or a claimant with approvals on their way, says try again", async () => {
  const settle = (p: Promise<unknown>) =>
    p.then(
      () => "ok",
      (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
    );
  const { sched, cluster, trace } = await startCluster(5);
  const core = (id: string) => cluster.byId.get(id)!.core;
  // n1, the claimant, approves n3's leave; n3 is leaving, but n1 has not heard it yet (no time passed).
  assert.equal(await sched.runUntilSettled(settle(core("n3").leave(false)), 5000), "ok");
  assert.equal(core("n1").membership.member("n3")?.status, "up");
  // n1's own leave now would hand the claimant's role to a node that knows nothing of n3's: refused for
  // now (503 at the API), not for good.
  const early = await sched.runUntilSettled(settle(core("n1").leave(false)), 5000);
  assert.match(
    early,
    /^unavailable: the claimant n1 approved the departure of n3, which has not started yet/,
  );
  // A node that is not the claimant as it sees the cluster answers a departure with "try again".
  const verdict = core("n2").departures.approve("n4", "leave", false);
  assert.equal(verdict.retry, true);
  assert.match(verdict.refused ?? "", /n2 is not the claimant \(n1 is/);
  // Once n3's leaving has reached n1 by gossip, n1 may leave (3 remain), and n2 takes over as claimant.
  assert.ok(
    await sched.runUntil(() => core("n1").membership.member("n3")?.status !== "up", 10_000),
    trace.join("\n"),
  );
  assert.equal(await sched.runUntilSettled(settle(core("n1").leave(false)), 5000), "ok");
  // n4 hears of n1's leave before n2 does: it asks n2, which still sees n1 up and n1 as the claimant,
  // so n2 says try again rather than approve from a view that misses a departure. (Forced, so that n4's
  // own count, which may already miss n3 too, does not refuse it first.)
  core("n4").membership.merge([core("n1").membership.self], null, sched.now());
  assert.equal(core("n2").membership.member("n1")?.status, "up");
  const n4early = await sched.runUntilSettled(settle(core("n4").leave(true)), 5000);
  assert.match(n4early, /^unavailable: n2 is not the claimant \(n1 is/);
  // Once the views agree, the third departure is refused for good: two members would remain.
  assert.ok(
    await sched.runUntil(() => core("n2").membership.member("n1")?.status !== "up", 10_000),
    trace.join("\n"),
  );
  assert.match(
    await sched.runUntilSettled(settle(core("n4").leave(false)), 5000),
    /^leave_refused: .*fewer than N=3/,
  );
  cluster.stop();
});

test("a store for a key this node does not replicate (its writer's ring was older) is sent on to the key's replicas", async () => {
  const { sched, cluster } = await startCluster(5);
  const k = key(0);
  const list = cluster.members()[0]!.core.preferenceList(k);
  const stray = cluster.members().find((n) => !list.includes(n.id))!;
  // A write versioned by a coordinator that still had an older ring, stored on a node that is not a
  // replica any more (and on none of the current ones).
  const late = update([], EMPTY_VECTOR, "old-writer", {
    data: Buffer.from("late"),
    contentType: "",
    deleted: false,
    writtenAtMs: 0,
  }).set;
  const store = { kind: "store", key: k, set: encodeSiblings(late) } as const;
  await sched.runUntilSettled(stray.core.dispatch("n9", store), 2000);
  await sched.runFor(2000);
  for (const id of list) {
    const sibs = await sched.runUntilSettled(cluster.byId.get(id)!.core.replica.read(k), 1000);
    assert.deepEqual(sibs.map((s) => Buffer.from(s.value.data).toString()).sort(), ["late", "v0"], id);
  }
  assert.deepEqual(stray.core.strays.counts, { forwarded: 1, failed: 0, dropped: 0 });
  // The same set again brings nothing new: it is not sent on again (no ping-pong between two rings).
  await sched.runUntilSettled(stray.core.dispatch("n9", store), 2000);
  assert.equal(stray.core.strays.counts.forwarded, 1);
  // A replica of the key keeps what it is sent.
  const replica = cluster.byId.get(list[0]!)!;
  await sched.runUntilSettled(
    replica.core.dispatch("n9", {
      ...store,
      set: encodeSiblings(
        update(late, EMPTY_VECTOR, "w2", {
          data: Buffer.from("x"),
          contentType: "",
          deleted: false,
          writtenAtMs: 0,
        }).set,
      ),
    }),
    2000,
  );
  assert.equal(replica.core.strays.counts.forwarded, 0);
  cluster.stop();
});
