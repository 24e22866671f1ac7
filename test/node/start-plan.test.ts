/** The start decision (src/node/start-plan.ts): a pure function of what is on disk and on the command line. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { NodeIdentity } from "../../src/node/identity.js";
import { NodeAwayTooLongError, planSelf, planStart, type StartFacts } from "../../src/node/start-plan.js";
import type { MemberView, RingView } from "../../src/transport/messages.js";

const ID: NodeIdentity = {
  nodeId: "n2",
  actor: "n2.aa",
  clusterId: "c1",
  clusterSecret: "s",
  n: 3,
  r: 2,
  w: 2,
  partitions: 8,
  createdAt: new Date(0).toISOString(),
};

function facts(over: Partial<StartFacts> = {}): StartFacts {
  return {
    nodeId: "n2",
    dataDir: "/d",
    join: [],
    settings: { n: 3, r: 2, w: 2 },
    explicit: { n: false, r: false, w: false },
    identity: undefined,
    saved: undefined,
    uncleanStop: false,
    ...over,
  };
}

function me(status: MemberView["status"], incarnation = 4): MemberView {
  return { id: "n2", api: "a", peer: "p", weight: 1, zone: undefined, status, incarnation, heartbeat: 9 };
}

const ring = (owners: string[]): RingView => ({ version: 3, partitions: owners.length, owners, members: [] });

test("no identity: a new cluster without --join, a join with it", () => {
  assert.deepEqual(planStart(facts()), { kind: "create" });
  assert.deepEqual(planStart(facts({ join: ["h:1"] })), { kind: "join", seeds: ["h:1"] });
});

test("an identity: a rejoin, with a new actor only after an unclean stop, and --join only checked", () => {
  assert.deepEqual(planStart(facts({ identity: ID })), {
    kind: "rejoin",
    identity: ID,
    renewActor: false,
    checkSeeds: [],
  });
  assert.deepEqual(planStart(facts({ identity: ID, uncleanStop: true, join: ["h:1"] })), {
    kind: "rejoin",
    identity: ID,
    renewActor: true,
    checkSeeds: ["h:1"],
  });
});

test("refusals: another node's directory, a contradicting N/R/W, a node that left", () => {
  assert.throws(
    () => planStart(facts({ identity: { ...ID, nodeId: "n9" } })),
    /belongs to node "n9", not "n2"/,
  );
  assert.throws(
    () =>
      planStart(
        facts({ identity: ID, settings: { n: 5, r: 2, w: 2 }, explicit: { n: true, r: false, w: false } }),
      ),
    /--n 5 differs from the cluster's n=3/,
  );
  // Not given explicitly: the cluster's settings stand.
  assert.equal(planStart(facts({ identity: ID, settings: { n: 5, r: 2, w: 2 } })).kind, "rejoin");
  const left = { members: [me("left")], ring: null };
  assert.throws(
    () => planStart(facts({ identity: ID, saved: left })),
    /has left cluster c1.*new --data and a new --id/,
  );
  // A new node joining with a stale view of a departed id is the cluster's to refuse, not the disk's.
  assert.equal(planStart(facts({ saved: left, join: ["h:1"] })).kind, "join");
});

test("the node's own entry at start: up in the ring, joining otherwise, leaving (and its approver) survives a restart", () => {
  assert.deepEqual(planSelf("n2", { members: [me("up")], ring: ring(["n1", "n2"]) }, false, []), {
    status: "up",
    incarnation: 5,
    bootstrapRing: false,
  });
  assert.deepEqual(planSelf("n2", { members: [me("up")], ring: ring(["n1", "n1"]) }, false, []), {
    status: "joining",
    incarnation: 5,
    bootstrapRing: false,
  });
  assert.equal(planSelf("n2", { members: [me("leaving")], ring: ring(["n2"]) }, false, []).status, "leaving");
  // With the claimant that approved it: members that never saw the leave begin take its end from it.
  const approved = { ...me("leaving"), leaveApprovedBy: "n1" };
  assert.deepEqual(planSelf("n2", { members: [approved], ring: ring(["n1"]) }, false, []), {
    status: "leaving",
    incarnation: 5,
    leaveApprovedBy: "n1",
    bootstrapRing: false,
  });
  // An approver outlives only a leave.
  assert.equal(
    planSelf("n2", { members: [{ ...approved, status: "up" }], ring: ring(["n2"]) }, false, [])
      .leaveApprovedBy,
    undefined,
  );
  // A new cluster, or a node that never had a ring and has nobody to join: it makes the first ring.
  assert.deepEqual(planSelf("n2", undefined, true, []), {
    status: "joining",
    incarnation: 1,
    bootstrapRing: true,
  });
  assert.equal(planSelf("n2", { members: [], ring: null }, false, []).bootstrapRing, true);
  assert.equal(planSelf("n2", { members: [], ring: null }, false, ["h:1"]).bootstrapRing, false);
});

test("a node away longer than the tombstone grace period: refused unless forced, then with a new actor", () => {
  const HOUR = 3600_000;
  const away = (hours: number, force = false) => ({
    lastAliveAtMs: 1_000 * HOUR,
    nowMs: 1_000 * HOUR + hours * HOUR,
    graceMs: 24 * HOUR,
    force,
  });
  // Within the grace period: an ordinary rejoin.
  assert.deepEqual(planStart(facts({ identity: ID, away: away(23.9) })), {
    kind: "rejoin",
    identity: ID,
    renewActor: false,
    checkSeeds: [],
  });
  // Longer: refused, with what to do.
  assert.throws(
    () => planStart(facts({ identity: ID, away: away(30) })),
    (err: Error) =>
      err instanceof NodeAwayTooLongError &&
      /node n2 was last running 30\.0 hours ago/.test(err.message) &&
      /longer than the tombstone grace period \(24\.0 hours\)/.test(err.message) &&
      /Wipe its data directory \(\/d\) and start it again with --join MEMBER/.test(err.message) &&
      /--force-rejoin/.test(err.message),
  );
  // Forced: it rejoins with its data, under a new actor.
  assert.deepEqual(planStart(facts({ identity: ID, away: away(30, true) })), {
    kind: "rejoin",
    identity: ID,
    renewActor: true,
    checkSeeds: [],
    forcedBackAfterMs: 30 * HOUR,
  });
  // No heartbeat recorded (a directory from before it existed): not judged. A new node: nothing to judge.
  assert.equal(
    planStart(facts({ identity: ID, away: { ...away(30), lastAliveAtMs: undefined } })).kind,
    "rejoin",
  );
  assert.equal(planStart(facts({ away: away(30) })).kind, "create");
  // A node that left is refused as such, however long it was away.
  assert.throws(
    () => planStart(facts({ identity: ID, saved: { members: [me("left")], ring: null }, away: away(30) })),
    /has left cluster/,
  );
});
