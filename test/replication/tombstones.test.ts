/**
 * The purge rule every member applies (src/replication/tombstones.ts `judge`), case by case: a purge is
 * agreed only by a member that holds exactly the owner's tombstones (or, if it is no replica of the key,
 * nothing), past the grace period by its own clock, under the same ring, with no hint and no handoff.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { judge, pastGrace, type ReplicaFacts } from "../../src/replication/tombstones.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";

const sibling = (counter: number, deleted: boolean, writtenAtMs: number): StoredSibling => ({
  dot: { actor: "a.1", counter },
  context: new Map(),
  value: { data: Buffer.alloc(0), contentType: "", deleted, writtenAtMs },
});
const T = [sibling(5, true, 1000)];
const GRACE = 10_000;
const proposal = { owner: "a", self: "b", ringVersion: 7, agreed: T, now: 1000 + GRACE, graceMs: GRACE };
const facts = (over: Partial<ReplicaFacts> = {}): ReplicaFacts => ({
  purging: true,
  ringVersion: 7,
  list: ["a", "b", "c"],
  handoffSettled: true,
  hintHeld: false,
  held: T,
  ...over,
});

test("a replica holding exactly the owner's tombstones, past grace, with nothing pending: ok", () => {
  assert.equal(judge(facts(), proposal), "ok");
});

test("every reason to refuse, in the order they are checked", () => {
  assert.equal(judge(facts({ purging: false }), proposal), "off");
  assert.equal(judge(facts({ ringVersion: 8 }), proposal), "ring_differs");
  assert.equal(
    judge(facts({ list: ["b", "a", "c"] }), proposal),
    "ring_differs",
    "the sender is not the owner",
  );
  assert.equal(judge(facts({ handoffSettled: false }), proposal), "handoff_pending");
  assert.equal(judge(facts({ held: [] }), proposal), "differs", "a replica must hold the tombstones");
  assert.equal(judge(facts({ held: [sibling(4, true, 1000)] }), proposal), "differs");
  assert.equal(judge(facts({ held: [...T, sibling(6, false, 1000)] }), proposal), "differs");
  assert.equal(judge(facts(), { ...proposal, now: 1000 + GRACE - 1 }), "young");
  assert.equal(judge(facts({ hintHeld: true }), proposal), "hint_pending");
});

test("a member that is no replica of the key agrees if it holds nothing, or the same tombstones", () => {
  const other = { ...proposal, self: "d" };
  assert.equal(judge(facts({ held: [] }), other), "ok");
  assert.equal(judge(facts(), other), "ok");
  assert.equal(judge(facts({ held: [sibling(4, false, 1000)] }), other), "differs", "an older copy");
});

test("pastGrace: every sibling a tombstone, the newest older than the grace period", () => {
  assert.equal(pastGrace(T, 1000 + GRACE, GRACE), true);
  assert.equal(pastGrace([...T, sibling(6, true, 2000)], 1000 + GRACE, GRACE), false);
  assert.equal(pastGrace([sibling(5, false, 0)], 1e12, GRACE), false);
  assert.equal(pastGrace([], 1e12, GRACE), false);
});
