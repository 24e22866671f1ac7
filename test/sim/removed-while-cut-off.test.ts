/**
 * A member removed while it was cut off, for longer than the tombstone grace period, comes back before it
 * has heard of its removal. The others refuse what it sends (purges may have gone ahead without it), but a
 * newcomer it admitted would take its view, and with it its copies, some older than deletes whose
 * tombstones were purged since (the simulator's seed 7, heavy faults with membership changes, lost an
 * acknowledged delete that way). So such a node is unsure of its membership until it has heard from every
 * member up: it admits nobody and hands nothing off meanwhile (node/absences.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { memberView } from "../support/member-views.js";
import { writtenSimCluster } from "../support/sim-cluster.js";

const GRACE_MS = 6000;

/** Five nodes with tombstone purging (grace GRACE_MS), formed, no key written. */
const cutOffCluster = (seed: number) =>
  writtenSimCluster({
    seed,
    nodes: 5,
    storage: "memory",
    keys: 0,
    extra: {
      hintWindowMs: 1000,
      tombstones: {
        graceMs: GRACE_MS,
        pacing: {
          sweepIntervalMs: 1000,
          scanKeysPerSecond: 100_000,
          purgesPerSecond: 10_000,
          pageKeys: 256,
          pageBytes: 1 << 20,
        },
      },
    },
  });

type Cut = Awaited<ReturnType<typeof cutOffCluster>>;

/** n3 cut off, then removed by n1 once it looks down there; resolves once `heard` (by default every other member holds the removal). */
async function isolateAndRemove(c: Cut, heard?: () => boolean): Promise<void> {
  const { sched, net, cluster } = c;
  const n1 = cluster.byId.get("n1")!;
  net.isolate(cluster.byId.get("n3")!.address);
  assert.ok(
    await sched.runUntil(() => n1.core.membership.liveness("n3", sched.now()) === "down", 10_000),
    "n1 sees n3 down",
  );
  await sched.runUntilSettled(n1.core.remove("n3", false), 5000);
  const all = () =>
    cluster.members().every((n) => n.id === "n3" || n.core.membership.member("n3")?.status === "left");
  assert.ok(await sched.runUntil(heard ?? all, 10_000), "the others hold n3's removal");
}

/** n3 cut off, removed by the others, and kept away past the grace period. */
async function removeWhileCutOff(seed: number): Promise<Cut> {
  const c = await cutOffCluster(seed);
  await isolateAndRemove(c);
  await c.sched.runFor(GRACE_MS + 3000);
  return c;
}

const joinRequest = (id: string) => ({ kind: "join", member: memberView(id, "joining", 1, 1) }) as const;

describe("a member removed while cut off for longer than the grace period", () => {
  test("is unsure of its membership: it admits nobody until it has heard from the members up, then learns of its removal and stops", async () => {
    const { sched, net, cluster, trace } = await removeWhileCutOff(7);
    const n3 = cluster.byId.get("n3")!;
    assert.equal(n3.core.membership.self.status, "up", "n3 has not heard of its removal");
    assert.match(n3.core.unsure() ?? "", /has not yet confirmed that it is still a member/);
    net.heal();
    // The first request after the heal, before any gossip: a newcomer asking n3 to admit it.
    await assert.rejects(n3.handler("n9", joinRequest("n9")), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_REJECTED");
      assert.match(err.message, /ask another member to admit n9/);
      return true;
    });
    assert.equal(n3.core.membership.member("n9"), undefined, "n3 admitted nobody");
    // It hears of its removal from the members up, and stops at once (cut off too long to send anything).
    assert.ok(
      await sched.runUntil(() => n3.state === "left", 10_000),
      `n3 stops: ${trace.slice(-5).join("\n")}`,
    );
    assert.equal(n3.core.handoff.progress.keysSent, 0, "n3 handed nothing off");
  });

  test("restarted after its removal, it is still unsure (its last contact outlives the restart)", async () => {
    const { sched, net, cluster } = await removeWhileCutOff(8);
    const n3 = cluster.byId.get("n3")!;
    cluster.crash("n3", "drop", () => 0);
    await sched.runUntilSettled(cluster.restart("n3"), 10_000);
    assert.match(n3.core.unsure() ?? "", /has not yet confirmed/, "unsure again after the restart");
    net.heal();
    await assert.rejects(n3.handler("n9", joinRequest("n9")), /ask another member to admit n9/);
    assert.ok(await sched.runUntil(() => n3.state === "left", 10_000), "n3 stops");
  });

  test("removed while cut off briefly, it takes the ring without it before its removal: it admits nobody and hands nothing off until it hears the approver", async () => {
    const c = await cutOffCluster(10);
    const { sched, net, cluster } = c;
    const n3 = cluster.byId.get("n3")!;
    const n5 = cluster.byId.get("n5")!;
    // Until n5 holds the removal and a ring without n3.
    await isolateAndRemove(
      c,
      () =>
        n5.core.membership.member("n3")?.status === "left" &&
        n5.core.membership.ring?.owners.includes("n3") === false,
    );
    assert.equal(n3.core.unsure(), undefined, "cut off for less than the grace period");
    // n5 (neither the claimant nor the approver) passes both on: n3 takes the ring, and holds the removal
    // until the approver confirms it.
    n3.core.membership.merge(n5.core.membership.view(), n5.core.membership.ring, sched.now(), "n5");
    assert.equal(n3.core.membership.self.status, "up");
    assert.match(n3.core.staleView() ?? "", /no longer holds it/);
    await assert.rejects(
      n3.handler("n9", joinRequest("n9")),
      /no longer holds it: .*; ask another member to admit n9/,
    );
    net.heal();
    assert.ok(await sched.runUntil(() => n3.state === "left", 10_000), "n3 hears of its removal and stops");
  });

  test("a member cut off as long but not removed is sure again once it has heard from every member up", async () => {
    const { sched, net, cluster } = await cutOffCluster(9);
    const n3 = cluster.byId.get("n3")!;
    net.isolate(n3.address);
    await sched.runFor(GRACE_MS + 3000);
    assert.ok(n3.core.unsure() !== undefined, "unsure while cut off");
    net.heal();
    assert.ok(await sched.runUntil(() => n3.core.unsure() === undefined, 10_000), "sure again");
    assert.equal(n3.core.membership.self.status, "up");
    const answer = await n3.handler("n9", joinRequest("n9"));
    assert.equal(answer.kind, "joined");
  });
});
