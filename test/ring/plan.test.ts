/**
 * `planChange` (src/ring/plan.ts): the next ring is the claimant's, the moves are exactly the partitions
 * whose owner or replicas change, keys and bytes come from the largest count of a partition's current
 * replicas, senders follow the handoff's rules, and a change that does not apply is refused.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type PartitionCounts, PlanError, planChange, type RingChange } from "../../src/ring/plan.js";
import { claim, PreferenceTable, type RingMember } from "../../src/ring/ring.js";

const Q = 64;
const N = 3;
const members = (ids: string[]): RingMember[] => ids.map((id) => ({ id, weight: 1 }));

/** A cluster of a, b, c, d; each member stores 10 keys of 100 bytes per partition it replicates. */
function cluster() {
  const ms = members(["a", "b", "c", "d"]);
  const ring = claim(undefined, ms, Q, N);
  const table = new PreferenceTable(ring, ms, N);
  const counts = new Map<string, PartitionCounts>();
  for (const { id } of ms) {
    const keys = Array.from({ length: Q }, (_, p) => (table.forPartition(p).includes(id) ? 10 : 0));
    // c missed a write in every partition: the plan takes the largest count.
    counts.set(id, {
      keys: keys.map((k) => (id === "c" && k > 0 ? k - 1 : k)),
      bytes: keys.map((k) => k * 100),
    });
  }
  return { ms, ring, table, counts };
}

function plan(change: RingChange, counts?: Map<string, PartitionCounts>) {
  const c = cluster();
  return {
    c,
    p: planChange({
      ring: c.ring,
      ringVersion: 7,
      n: N,
      ringMembers: c.ms,
      placementMembers: c.ms,
      change,
      counts: counts ?? c.counts,
      bytesPerSecond: 1000,
    }),
  };
}

test("a join: the claimant's ring, exactly the partitions that change, keys from the largest count", () => {
  const { c, p } = plan({ kind: "join", id: "e", weight: 1 });
  const next = claim(c.ring, [...c.ms, { id: "e", weight: 1 }], Q, N);
  const nextTable = new PreferenceTable(next, [...c.ms, { id: "e", weight: 1 }], N);
  const changed = [];
  for (let q = 0; q < Q; q++)
    if (
      c.ring.owners[q] !== next.owners[q] ||
      nextTable.forPartition(q).some((id) => !c.table.forPartition(q).includes(id))
    )
      changed.push(q);
  assert.deepEqual(
    p.moves.map((m) => m.partition),
    changed,
  );
  for (const m of p.moves) {
    assert.equal(m.ownerTo, next.owners[m.partition]);
    assert.equal(m.keys, 10, "the largest count of the replicas (c's is one short)");
  }
  const e = p.nodes.find((n) => n.id === "e")!;
  assert.equal(e.partitionsBefore, 0);
  assert.equal(e.partitionsAfter, next.owners.filter((o) => o === "e").length);
  assert.ok(e.receivesKeys > 0);
  // A join also brings other nodes into some lists (a partition's list shifts along the ring).
  assert.equal(
    p.nodes.reduce((s, n) => s + n.receivesKeys, 0),
    p.keys,
  );
  assert.equal(p.bytes, p.keys * 100);
  // Each gained copy is sent by every loser, the keepers relying on it: at least once, at most N times.
  const sent = p.nodes.reduce((s, n) => s + n.sendsBytes, 0);
  assert.ok(sent >= p.bytes && sent <= N * p.bytes, `${sent} bytes sent for ${p.bytes}`);
  assert.equal(p.estimateSeconds, Math.max(...p.nodes.map((n) => n.sendsBytes)) / 1000);
  assert.equal(p.ringVersion, 7);
  assert.deepEqual(p.missingCounts, []);
});

test("a removal: the gone member sends nothing and is not missed; a weight moves partitions to it", () => {
  const c = cluster();
  const counts = new Map(c.counts);
  counts.delete("d");
  const { p } = plan({ kind: "remove", id: "d" }, counts);
  assert.ok(p.moves.length > 0);
  assert.equal(p.nodes.find((n) => n.id === "d")!.sendsBytes, 0);
  assert.equal(p.nodes.find((n) => n.id === "d")!.partitionsAfter, 0);
  assert.deepEqual(p.missingCounts, []);
  const w = plan({ kind: "weight", id: "a", weight: 3 }).p;
  const a = w.nodes.find((n) => n.id === "a")!;
  assert.equal(a.partitionsAfter, Q / 2);
  assert.ok(w.moves.every((m) => m.ownerTo === "a" || m.ownerFrom === m.ownerTo));
});

test("a change that does not apply is a PlanError", () => {
  assert.throws(() => plan({ kind: "join", id: "a", weight: 1 }), PlanError);
  assert.throws(() => plan({ kind: "leave", id: "zz" }), PlanError);
  assert.throws(() => plan({ kind: "weight", id: "zz", weight: 2 }), PlanError);
});
