/**
 * The whole-cluster simulator (src/sim): a fixed set of seeds over both storage engines and every fault
 * profile must pass every checker; every kind of fault must actually happen in them; a run replays byte
 * for byte; and planted bugs must make it fail (so that passing means something).
 *
 * A failing seed prints the command that replays it. SIM_SEEDS=1,2,3 runs other seeds instead.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatAnomalies } from "../../src/sim/checker.js";
import type { StorageKind } from "../../src/sim/cluster.js";
import {
  DEFAULT_SIM_OPTIONS,
  type FaultProfile,
  replayCommand,
  runSimulation,
  type SimOptions,
  type SimResult,
} from "../../src/sim/simulator.js";

/**
 * A change that draws from a node's random stream shifts every history; a seed whose run then ends before
 * the nemesis shows every kind of fault is swapped for a neighbour (5005 became 5009 and 7006 became 7008
 * when NodeCore began drawing the seed of its forwarded-write ids).
 */
const FIXED: [number, StorageKind, FaultProfile][] = [
  [5000, "lsm", "standard"],
  [5001, "memory", "standard"],
  [5002, "lsm", "standard"],
  [5003, "memory", "standard"],
  [5004, "lsm", "standard"],
  [5009, "memory", "standard"],
  [5006, "lsm", "standard"],
  [5008, "lsm", "standard"],
  [7000, "lsm", "heavy"],
  [7001, "memory", "heavy"],
  [7003, "memory", "heavy"],
  [7004, "lsm", "heavy"],
  [7008, "lsm", "heavy"],
  [1, "lsm", "none"],
  [2, "memory", "none"],
];
const SEEDS: [number, StorageKind, FaultProfile][] =
  process.env.SIM_SEEDS === undefined
    ? FIXED
    : process.env.SIM_SEEDS.split(",").map((s, i) => [Number(s), i % 2 === 0 ? "lsm" : "memory", "standard"]);

const options = (seed: number, storage: StorageKind, faults: FaultProfile): SimOptions => ({
  ...DEFAULT_SIM_OPTIONS,
  seed,
  storage,
  faults,
});

function explain(r: SimResult): string {
  return `${formatAnomalies(r.anomalies)}\nreplay: ${replayCommand(r.options)}`;
}

describe("simulator: fixed seeds", () => {
  const results: SimResult[] = [];
  for (const [seed, storage, faults] of SEEDS)
    test(`seed ${seed}, ${storage} storage, faults ${faults}: every checker passes`, async () => {
      const r = await runSimulation(options(seed, storage, faults));
      results.push(r);
      assert.deepEqual(r.anomalies, [], explain(r));
      assert.ok(r.history.writes.length > 100, `only ${r.history.writes.length} writes`);
      assert.ok(
        r.history.writes.filter((w) => w.outcome === "ok").length > 50,
        "most writes should be acknowledged",
      );
    });

  test("every kind of fault happened in the fixed seeds", {
    skip: process.env.SIM_SEEDS !== undefined,
  }, () => {
    const sum = (f: (r: SimResult) => number) => results.reduce((a, r) => a + f(r), 0);
    const happened = {
      "message loss": sum((r) => r.network.droppedRandom),
      duplication: sum((r) => r.network.duplicated),
      "duplicate requests discarded": sum((r) => r.network.duplicatesDiscarded),
      "delay (reordering)": sum((r) => r.network.delayed),
      "symmetric partitions": sum((r) => r.faults.partitions),
      "one-way cuts": sum((r) => r.faults.oneWayCuts),
      isolations: sum((r) => r.faults.isolations),
      crashes: sum((r) => r.faults.crashes),
      restarts: sum((r) => r.faults.restarts),
      pauses: sum((r) => r.faults.pauses),
      "loss bursts": sum((r) => r.faults.bursts),
      "slow disks": sum((r) => r.faults.slowDisks),
      "skewed clocks": sum((r) => r.faults.skewedNodes),
      "messages held at paused nodes": sum((r) => r.network.pauses),
      "read repairs": sum((r) => r.readRepairs),
      "tombstone purges": sum((r) => r.tombstones.purged),
      "purges held back by a member down": sum((r) => r.tombstones.refused.replica_down ?? 0),
      "crashes of LSM nodes": results
        .filter((r) => r.options.storage === "lsm")
        .reduce((a, r) => a + r.faults.crashes, 0),
    };
    for (const [what, n] of Object.entries(happened)) assert.ok(n > 0, `no ${what} in the fixed seeds`);
    // Each faulty run saw every kind of fault (the nemesis starts with a shuffle of all kinds).
    for (const r of results.filter((x) => x.options.faults !== "none")) {
      const f = r.faults;
      assert.ok(
        f.partitions > 0 &&
          f.oneWayCuts > 0 &&
          f.isolations > 0 &&
          f.crashes > 0 &&
          f.pauses > 0 &&
          f.bursts > 0 &&
          (r.options.storage !== "lsm" || f.slowDisks > 0),
        `seed ${r.options.seed}: ${JSON.stringify(f)}`,
      );
      assert.equal(f.restarts, f.crashes, `seed ${r.options.seed}: every crashed node restarted`);
    }
    // The fault-free runs really were fault-free.
    for (const r of results.filter((x) => x.options.faults === "none"))
      assert.equal(r.network.dropped + r.network.duplicated + r.faults.crashes + r.faults.pauses, 0);
  });
});

describe("simulator: nodes join and leave among the faults", () => {
  // 104: a leaving node restarted twice with its unsynced data zeroed, while a member that never saw its
  // leave begin becomes the claimant; the leave's approver must survive the restarts (start-plan.ts).
  // 7: lost an acknowledged delete when a member removed during its long absence, back after the purge
  // of the delete's tombstones, admitted a newcomer before it heard of its removal (node/absences.ts; the
  // path itself is tested in removed-while-cut-off.test.ts).
  // 182: a member removed during its long absence comes back to find every member it knew gone: an orphan
  // (SimCluster.members), which stays unsure and out of the cluster's convergence.
  const seeds: [number, StorageKind, FaultProfile][] = [
    [7, "lsm", "heavy"],
    [182, "lsm", "heavy"],
    [101, "lsm", "standard"],
    [102, "lsm", "heavy"],
    [103, "memory", "standard"],
    [104, "lsm", "heavy"],
    [109, "lsm", "heavy"],
  ];
  const done: SimResult[] = [];
  for (const [seed, storage, faults] of seeds)
    test(`seed ${seed}, ${storage} storage, faults ${faults}, membership changes: every checker passes`, async () => {
      const r = await runSimulation({ ...options(seed, storage, faults), membership: true });
      done.push(r);
      assert.deepEqual(r.anomalies, [], explain(r));
      assert.ok(r.faults.joins >= 1, `seed ${seed}: ${JSON.stringify(r.faults)}`);
    });

  test("the fixed seeds had joins and leaves (a leave waits for its handoff: one per short run at most)", () => {
    assert.ok(done.reduce((a, r) => a + r.faults.leaves, 0) >= 2, JSON.stringify(done.map((r) => r.faults)));
  });

  test("membership changes are deterministic too", async () => {
    const a = await runSimulation({ ...options(105, "lsm", "heavy"), membership: true });
    const b = await runSimulation({ ...options(105, "lsm", "heavy"), membership: true });
    assert.equal(a.hash, b.hash);
    assert.deepEqual(a.trace, b.trace);
  });
});

describe("simulator: determinism", () => {
  test("the same seed gives the same history, byte for byte (and the same trace)", async () => {
    for (const storage of ["lsm", "memory"] as const) {
      const a = await runSimulation(options(4242, storage, "heavy"));
      const b = await runSimulation(options(4242, storage, "heavy"));
      assert.equal(a.hash, b.hash);
      assert.deepEqual(a.trace, b.trace);
      assert.equal(a.steps, b.steps);
    }
  });

  test("different seeds give different histories", async () => {
    const a = await runSimulation(options(11, "lsm", "standard"));
    const b = await runSimulation(options(12, "lsm", "standard"));
    assert.notEqual(a.hash, b.hash);
  });
});

describe("simulator: planted bugs are caught", () => {
  test("a replica that acknowledges replication without storing: replicas disagree", async () => {
    const r = await runSimulation({ ...options(1, "lsm", "standard"), bug: "drop-store" });
    assert.ok(
      r.anomalies.some((a) => a.checker === "replicas-agree"),
      JSON.stringify(r.anomalies.slice(0, 3)),
    );
  });

  test("a skipped anti-entropy tree update: the replicas are never found in sync (or disagree)", async () => {
    // No faults: a crash would rebuild the trees from the data and hide the drift.
    const r = await runSimulation({ ...options(1, "lsm", "none"), bug: "skip-tree-update" });
    assert.ok(
      r.anomalies.some(
        (a) =>
          a.checker === "replicas-agree" ||
          (a.checker === "liveness" && /anti-entropy did not bring the replicas in sync/.test(a.message)),
      ),
      JSON.stringify(r.anomalies.slice(0, 3)),
    );
  });

  test("a coordinator that ignores the client's context: siblings that are not concurrent", async () => {
    const r = await runSimulation({ ...options(1, "memory", "none"), bug: "ignore-context" });
    assert.ok(r.anomalies.some((a) => a.checker === "siblings-concurrent"));
  });

  test("tombstones purged without the replicas' agreement: a replica that missed the delete brings it back", async () => {
    // The run's long absence (a node cut off from the deletes until past the grace period) is what a purge
    // without agreement trips over.
    const caught: number[] = [];
    for (let seed = 1; seed <= 5 && caught.length === 0; seed++) {
      const r = await runSimulation({ ...options(seed, "lsm", "standard"), bug: "purge-without-agreement" });
      if (r.anomalies.some((a) => a.checker === "acknowledged-writes" || a.checker === "no-resurrection"))
        caught.push(seed);
    }
    assert.ok(caught.length > 0, "no seed of 1..5 brought a deleted key back");
  });

  test("a write acknowledged before it is fsynced: crashes lose it", async () => {
    // Replication masks one replica's loss (read repair restores it from the other), so it takes two
    // replicas of a write crashing before the repair: the heavy profile, over a few seeds.
    const caught: number[] = [];
    for (let seed = 1; seed <= 12 && caught.length === 0; seed++) {
      const r = await runSimulation({ ...options(seed, "lsm", "heavy"), bug: "no-fsync" });
      if (r.anomalies.some((a) => a.checker === "acknowledged-writes" || a.checker === "acknowledged-adds"))
        caught.push(seed);
    }
    assert.ok(caught.length > 0, "no seed of 1..12 lost an acknowledged write without fsync");
  });
});

/**
 * Bugs the simulator found, kept as planted bugs that it must still catch. (They used to be kept as the
 * seeds that found them; any change that moves a random draw changes every history, and a seed that once
 * reached the state loses it, so now the bug is put back and a few seeds must catch it.)
 *
 * Seed 7074 (heavy faults) found: a coordinator crashed while handling a forwarded write; the forwarder
 * took the connection reset for "never delivered", retried on the next replica, and the one client write
 * came back as two siblings. Fixed: a request written to a connection that then broke fails with
 * `maybeDelivered`, and Router.write answers "unavailable" for it (planted: `retry-forward`).
 *
 * Seed 9029 with --dup-requests (an at-least-once network: a duplicated request reaches its handler
 * twice) found: a forwarded write (`coordinate`) was coordinated twice, two dots for one client write.
 * Fixed: each coordinate request carries an id, and the coordinator answers a copy from its memo of
 * outcomes (src/replication/forward-memo.ts) (planted: `no-forward-memo`).
 */
describe("simulator: bugs it found stay caught", () => {
  const firstCatch = async (
    o: (seed: number) => SimOptions,
    from: number,
    to: number,
  ): Promise<number | undefined> => {
    for (let seed = from; seed <= to; seed++) {
      const r = await runSimulation(o(seed));
      if (r.anomalies.length > 0) return seed;
    }
    return undefined;
  };

  test("a forwarded write retried on another replica after a maybe-delivered failure", async () => {
    // Since a forwarded write's timeout is one budget, a forward that timed out leaves no time to retry:
    // only a connection reset before the deadline leads to the bug's retry, and few heavy runs catch it
    // (seed 50 of 1..60 with gossip by digest; before the budget, about half did). Histories follow the
    // protocol: a change to it may call for other seeds (npm run sim -- --seed S --faults heavy --bug retry-forward).
    const seed = await firstCatch((s) => ({ ...options(s, "lsm", "heavy"), bug: "retry-forward" }), 46, 55);
    assert.ok(seed !== undefined, "no seed of 46..55 caught the retried forward");
  });

  test("a duplicated forwarded write coordinated twice (no memo)", async () => {
    // Few standard --dup-requests runs catch it (seeds 37 and 46 of 1..100 with gossip by digest and the
    // forward's budget; before both, seed 25 of 1..30). Histories follow the protocol: a change to it may
    // call for other seeds.
    const seed = await firstCatch(
      (s) => ({
        ...options(s, s % 2 === 0 ? "memory" : "lsm", "standard"),
        duplicateRequests: true,
        bug: "no-forward-memo",
      }),
      31,
      50,
    );
    assert.ok(seed !== undefined, "no seed of 31..50 caught the unmemoized forward");
  });

  test("with the memo, a duplicating network applies each forwarded write once", async () => {
    for (const [seed, storage] of [
      [9029, "memory"],
      [9037, "lsm"],
    ] as const) {
      const r = await runSimulation({ ...options(seed, storage, "standard"), duplicateRequests: true });
      assert.ok(r.network.duplicated > 0, "the network duplicated messages");
      assert.deepEqual(r.anomalies, [], explain(r));
    }
  });
});
