/**
 * Departed members forgotten (src/membership/membership.ts, forgetDeparted): once every live member has
 * been seen holding a member's departure and a grace time passed, it leaves the view, the digests and
 * the status; its id stays refused (its final entry kept, bounded), and a peer that still holds it
 * otherwise is told it left.
 *
 * - over the protocol test network, with real gossip: a member leaves; nobody forgets it before the
 *   grace time; then everyone does, and their directories agree again;
 * - the state machine alone: not while a live member has not been seen holding it (whatever the time);
 *   a member that is down does not hold it back; what a peer's digest says counts, directly or relayed
 *   in its `seen` bitmaps;
 * - a forgotten id is refused: its entries are never taken again, it still reads as left (a join with
 *   it is refused), and a peer that holds it as not left gets its final entry.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GossipDriver } from "../../src/membership/gossip-driver.js";
import { Membership, type MembershipEvent } from "../../src/membership/membership.js";
import { decodeView, encodeView } from "../../src/node/saved-view.js";
import { derivedRandom } from "../../src/runtime/virtual-runtime.js";
import type { AnswerBody, GossipRequest, MemberView, RequestBody } from "../../src/transport/messages.js";
import { memberView, roundRobinRing } from "../support/member-views.js";
import { ProtocolNet } from "../support/protocol-net.js";

const PARTITIONS = 16;
const INTERVAL_MS = 200;
const GRACE_MS = 3000;

const entry = memberView;

const ring = roundRobinRing(["a", "b", "c", "d"], PARTITIONS);

const config = (selfId: string) => ({
  selfId,
  partitions: PARTITIONS,
  n: 3,
  downAfterMs: 2000,
  suspectForMs: 1000,
  fanout: 2,
  forgetAfterMs: GRACE_MS,
});

/** Member `self` of a, b, c, d (all up), with `view` overriding entries. */
function member(self: string, view: MemberView[] = []): Membership {
  const m = new Membership(config(self), entry(self, "up"), 0);
  const others = ["a", "b", "c", "d"]
    .filter((x) => x !== self)
    .map((x) => view.find((v) => v.id === x) ?? entry(x, "up"));
  m.merge(others, ring, 0);
  return m;
}

describe("departed members forgotten, over gossip", () => {
  test("a member leaves: forgotten everywhere after the grace time, not before", async () => {
    const net = new ProtocolNet();
    const ids = ["a", "b", "c", "d"];
    const nodes = new Map<string, { m: Membership; g: GossipDriver; events: MembershipEvent[] }>();
    for (const id of ids) {
      const transport = net.node(id, async (from: string, body: RequestBody): Promise<AnswerBody> => {
        assert.equal(body.kind, "gossip");
        return nodes.get(id)!.g.onGossip(from, body as GossipRequest);
      });
      const m = member(id);
      const events: MembershipEvent[] = [];
      m.onEvent = (e) => events.push(e);
      const g = new GossipDriver({
        membership: m,
        transport,
        timers: net.sched,
        clock: net.sched,
        random: derivedRandom(19, id),
        intervalMs: INTERVAL_MS,
        requestTimeoutMs: 500,
      });
      nodes.set(id, { m, g, events });
      g.start();
    }
    const live = ["a", "b", "c"].map((id) => nodes.get(id)!);
    await net.runFor(1000);
    const d = nodes.get("d")!;
    d.m.markLeft();
    const leftAt = net.sched.now();
    // d gossips its departure for a while, then stops.
    await net.runFor(4 * INTERVAL_MS);
    d.g.stop();
    net.crash("d");
    assert.ok(live.every((n) => n.m.member("d")?.status === "left"));

    await net.runFor(leftAt + GRACE_MS - 1 - net.sched.now());
    for (const n of live)
      assert.ok(
        n.m.view().some((v) => v.id === "d"),
        "not forgotten before the grace time",
      );
    assert.ok(
      await net.runUntil(() => live.every((n) => n.m.isForgotten("d")), 10 * GRACE_MS),
      "forgotten everywhere",
    );
    for (const n of live) {
      assert.deepEqual(
        n.m
          .view()
          .map((v) => v.id)
          .sort(),
        ["a", "b", "c"],
      );
      assert.equal(n.m.member("d")?.status, "left", "it still reads as left");
      assert.equal(n.events.filter((e) => e.change === "forgotten").length, 1);
    }
    const dirs = new Set(live.map((n) => n.m.digest(false).dir));
    assert.equal(dirs.size, 1, "the directories agree again");
  });
});

describe("departed members forgotten, the rules", () => {
  test("not while a live member has not been seen holding the departure; a down one does not count", () => {
    const left = entry("d", "left", 3);
    const [a, b, c] = [member("a", [left]), member("b", [left]), member("c", [entry("d", "up")])];
    let now = 0;
    const tick = () => {
      now += INTERVAL_MS;
      a.tick(now, { next: () => 0.5 });
    };
    tick(); // a's record of d's departure starts
    // b's digest (the same directory) says b holds it; c's directory differs, and c is heard from.
    assert.ok(a.takeHeartbeats(b.digest(false), now, "b"));
    while (now < 3 * GRACE_MS) {
      a.merge([entry("c", "up", 2, now)], null, now, "b"); // c's heartbeat moves: it is live
      tick();
    }
    assert.ok(!a.isForgotten("d"), "c, live, never held d as left");
    // c's full digest lists d as up: still not seen (and d's entry is what c lacks).
    const c1 = a.compareDigest(c.digest(true), now, "c");
    assert.deepEqual(
      c1.lacks.map((m) => `${m.id}:${m.status}`),
      ["d:left"],
    );
    tick();
    assert.ok(!a.isForgotten("d"));
    // c stops being heard of: down, it no longer holds d back.
    now += 2500;
    tick();
    assert.ok(a.isForgotten("d"));
    assert.ok(!a.view().some((v) => v.id === "d"));
  });

  test("seen relayed: a peer's bitmaps tell of members this node never exchanged with", () => {
    const left = entry("d", "left", 3);
    const [a, b, c] = [member("a", [left]), member("b", [left]), member("c", [left])];
    let now = 0;
    const step = () => {
      now += INTERVAL_MS;
      for (const m of [a, b, c]) m.tick(now, { next: () => 0.5 });
    };
    step();
    // c tells b, b tells a: a never hears from c directly, yet learns that c holds d as left.
    assert.ok(b.takeHeartbeats(c.digest(false), now, "c"));
    now = GRACE_MS + 2 * INTERVAL_MS;
    assert.ok(a.takeHeartbeats(b.digest(false), now, "b"));
    a.merge([entry("c", "up", 2, 99)], null, now, "b");
    a.tick(now, { next: () => 0.5 });
    assert.ok(a.isForgotten("d"));
  });

  test("a forgotten id is refused, reads as left, and a peer holding it otherwise is told", () => {
    const left = entry("d", "left", 3);
    const a = member("a", [left]);
    const events: MembershipEvent[] = [];
    a.onEvent = (e) => events.push(e);
    a.tick(1, { next: () => 0.5 });
    for (const p of ["b", "c"]) a.takeHeartbeats(member(p, [left]).digest(false), 2, p);
    a.tick(GRACE_MS + 10, { next: () => 0.5 });
    assert.ok(a.isForgotten("d"));
    assert.equal(events.at(-1)?.change, "forgotten");

    // d again, as up with a higher incarnation (a restarted process, or a forgery), from anyone.
    a.merge([entry("d", "up", 9, 5)], null, GRACE_MS + 20, "d");
    a.merge([entry("d", "joining", 10)], null, GRACE_MS + 20);
    assert.ok(!a.view().some((v) => v.id === "d"));
    assert.equal(a.member("d")?.status, "left", "a join with its id is refused (peer-dispatch reads this)");
    // A peer still holding d as up: a's comparison of its full digest, and a's answer to its push.
    const stale = member("b", [entry("d", "up")]);
    assert.deepEqual(
      a.compareDigest(stale.digest(true), GRACE_MS + 30, "b").lacks.map((m) => `${m.id}:${m.status}`),
      ["d:left"],
    );
    assert.deepEqual(
      a.departuresFor([entry("d", "up"), entry("b", "up")]).map((m) => `${m.id}:${m.status}`),
      ["d:left"],
    );
    // Not asked for either: it is no want of a.
    assert.deepEqual(a.compareDigest(member("b", [left]).digest(true), GRACE_MS + 30, "b").wants, []);
  });

  test("forgotten members outlive a restart: saved with the view, taken back, still refused", () => {
    const left = entry("d", "left", 3);
    const a = member("a", [left]);
    a.tick(1, { next: () => 0.5 });
    for (const p of ["b", "c"]) a.takeHeartbeats(member(p, [left]).digest(false), 2, p);
    const before = a.epoch;
    a.tick(GRACE_MS + 10, { next: () => 0.5 });
    assert.ok(a.isForgotten("d"));
    assert.ok(a.epoch > before, "forgetting changes what the node saves");
    const saved = decodeView(
      encodeView({ members: a.view(), ring: a.ring, forgotten: a.forgottenEntries() }),
      "members.json",
    );
    assert.deepEqual(
      saved?.forgotten?.map((m) => `${m.id}:${m.status}`),
      ["d:left"],
    );
    // The restarted node: its saved view, then the forgotten members.
    const again = new Membership(config("a"), entry("a", "up", 3), 0);
    again.merge(saved!.members, saved!.ring, 0);
    again.restoreForgotten(saved!.forgotten ?? []);
    assert.ok(again.isForgotten("d"));
    again.merge([entry("d", "up", 9, 5)], null, 10, "d");
    assert.equal(again.member("d")?.status, "left", "its id is still refused after the restart");
    assert.ok(!again.view().some((v) => v.id === "d"));
    // A view saved with none checks as a view saved before the field existed.
    const plain = encodeView({ members: a.view(), ring: a.ring, forgotten: [] });
    assert.ok(!plain.includes("forgotten"));
    assert.deepEqual(
      decodeView(plain, "members.json")?.members.map((m) => m.id),
      a.view().map((m) => m.id),
    );
  });
});
