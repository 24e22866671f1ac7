/**
 * Gossip by digest and delta (src/membership/gossip-driver.ts, membership.ts, digest.ts), exchange by
 * exchange on the protocol test network (every body goes through the wire codec). Each node is the real
 * Membership and GossipDriver; its handler records every gossip request it gets and its answer.
 *
 * - the steady state: an exchange is one request and one answer, each carrying heartbeats only (no
 *   entry, no ring), and heartbeats move both ways;
 * - directories that differ: the answer is a full digest, the closing request pushes what the answerer
 *   lacks and asks for what the asker lacks, and both end with the same directory;
 * - the rules of merge hold for pushed entries: a `left` pushed by a member that may not say so is
 *   refused and reported with that sender;
 * - the ring travels only when its version changed: as the change from the peer's ring when smaller,
 *   whole when the peer's ring is not one this node held, and two rings of one version converge;
 * - a digest saying this node's heartbeat is newer than its own is refuted (a new incarnation);
 * - protocol 9's whole-view request is answered with the whole view, and a node of 9's whole-view
 *   answer to a digest is merged (a rolling upgrade, transport/messages.ts MIN_PROTOCOL_VERSION).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ringDelta, ringHash } from "../../src/membership/digest.js";
import { GossipDriver } from "../../src/membership/gossip-driver.js";
import { Membership, type MembershipEvent } from "../../src/membership/membership.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import type {
  AnswerBody,
  GossipAnswer,
  GossipRequest,
  RequestBody,
  RingView,
} from "../../src/transport/messages.js";
import { memberView, roundRobinRing } from "../support/member-views.js";
import { ProtocolNet } from "../support/protocol-net.js";

const PARTITIONS = 16;
const INTERVAL_MS = 200;

const entry = memberView;

const ring1 = roundRobinRing(["a", "b", "c"], PARTITIONS);

interface Exchange {
  readonly from: string;
  readonly to: string;
  readonly request: GossipRequest;
  readonly answer: GossipAnswer;
}

/** Nodes a, b, c (all up, ring 1), with no gossip timer running: the test opens each exchange. */
function cluster(ids = ["a", "b", "c"]) {
  const net = new ProtocolNet();
  const log: Exchange[] = [];
  const nodes = new Map<string, { m: Membership; g: GossipDriver; events: MembershipEvent[] }>();
  for (const id of ids) {
    const transport = net.node(id, async (from: string, body: RequestBody): Promise<AnswerBody> => {
      assert.equal(body.kind, "gossip");
      const answer = nodes.get(id)!.g.onGossip(from, body as GossipRequest);
      log.push({ from, to: id, request: body as GossipRequest, answer });
      return answer;
    });
    const m = new Membership(
      { selfId: id, partitions: PARTITIONS, n: 3, downAfterMs: 5000, suspectForMs: 1000, fanout: 2 },
      entry(id, "up"),
      0,
    );
    m.merge(
      ids.filter((x) => x !== id).map((x) => entry(x, "up")),
      ring1,
      0,
    );
    const events: MembershipEvent[] = [];
    m.onEvent = (e) => events.push(e);
    const g = new GossipDriver({
      membership: m,
      transport,
      timers: net.sched,
      clock: net.sched,
      random: seededRandom(7),
      intervalMs: INTERVAL_MS,
      requestTimeoutMs: 500,
    });
    nodes.set(id, { m, g, events });
  }
  const node = (id: string) => nodes.get(id)!;
  /** `from` opens an exchange with `to`; everything it leads to is delivered. */
  const exchange = async (from: string, to: string): Promise<Exchange[]> => {
    const start = log.length;
    node(from).g.exchangeWith(to);
    while (net.pending().length > 0) await net.step();
    return log.slice(start);
  };
  return { net, node, exchange };
}

describe("gossip by digest", () => {
  test("the steady state: one request and one answer, heartbeats only, both ways", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    // c's heartbeat moved on at a, a's own at b: each side holds one newer heartbeat.
    a.merge([entry("c", "up", 2, 7)], null, 10, "c");
    b.merge([entry("a", "up", 2, 5)], null, 10, "a");
    assert.equal(a.self.heartbeat, 1);

    const ex = await exchange("a", "b");
    assert.equal(ex.length, 1, "no closing request");
    const [{ request, answer }] = ex as [Exchange];
    assert.deepEqual([request.members, request.ring, request.want], [[], null, undefined]);
    assert.equal(request.digest?.ids, undefined, "the opening names no member");
    assert.equal(request.digest?.heartbeats.length, 4 * 3, "a u32 per member");
    assert.deepEqual([answer.members, answer.ring, answer.ringDelta], [[], null, undefined]);
    assert.equal(answer.digest?.ids, undefined, "the same directory: heartbeats only");

    assert.equal(b.member("c")?.heartbeat, 7, "b took a's heartbeat of c");
    // b's newer heartbeat for a is a's own entry: a refutes it (a new incarnation), as merge would.
    assert.ok(a.self.incarnation > 2);
    assert.equal(node("a").events.at(-1)?.change, "refuted");
  });

  test("directories differ: a full digest, then the closing pushes what each lacks", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    a.merge([entry("d", "joining", 1)], null, 10, "d"); // a admitted d; b never heard of it
    b.merge([entry("c", "leaving", 3)], null, 10, "c"); // c told b it is leaving; a does not know yet

    const ex = await exchange("a", "b");
    assert.equal(ex.length, 2);
    const [open, close] = ex as [Exchange, Exchange];
    assert.deepEqual(open.answer.digest?.ids, ["a", "b", "c"], "b's full digest, in id order");
    assert.deepEqual(
      close.request.members.map((m) => m.id),
      ["d"],
      "a pushes only what b lacks",
    );
    assert.deepEqual(close.request.want, ["c"], "a asks for the entry b holds newer");
    assert.deepEqual(
      close.answer.members.map((m) => `${m.id}:${m.status}`),
      ["c:leaving"],
    );
    assert.equal(a.member("c")?.status, "leaving");
    assert.equal(b.member("d")?.status, "joining");
    assert.equal(a.digest(false).dir, b.digest(false).dir, "the same directory now");

    // The next exchange is back to heartbeats only.
    const next = await exchange("b", "a");
    assert.equal(next.length, 1);
    assert.equal(next[0]!.answer.digest?.ids, undefined);
  });

  test("a pushed entry goes through merge: a left from a member that may not say so is refused", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    // b holds c as left (trusted whole, as a saved view would be), and pushes it to a. a's claimant is
    // a itself; b is neither c nor the claimant, and names no approved removal.
    b.merge([entry("c", "left", 3)], null, 10);
    await exchange("a", "b");
    assert.equal(a.member("c")?.status, "up", "a did not take b's word that c left");
    const ignored = node("a").events.find((e) => e.change === "ignored");
    assert.equal(ignored?.sender, "b");
    assert.equal(ignored?.member, "c");
  });
});

describe("the ring by delta", () => {
  /** Ring 2: partition 0 moves from a to c. */
  const ring2: RingView = { ...ring1, version: 2, owners: ["c", ...ring1.owners.slice(1)] };

  test("a ring that changed travels as the change from the peer's, and only then", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    a.merge([], ring2, 10);

    const ex = await exchange("b", "a");
    assert.equal(ex.length, 1);
    const delta = ex[0]!.answer.ringDelta;
    assert.equal(ex[0]!.answer.ring, null, "not the whole ring");
    assert.deepEqual([delta?.version, delta?.base.version, delta?.owners], [2, 1, ["c"]]);
    assert.deepEqual(b.ring, ring2);

    // a asked by b's digest the other way round: b's ring is newer than c's; c asks for it, and b sends
    // it in its closing request.
    const ex2 = await exchange("b", "c");
    assert.equal(ex2.length, 2);
    assert.deepEqual(ex2[0]!.answer.ringWant, { version: 1, hash: ringHash(ring1) });
    assert.equal(ex2[1]!.request.ringDelta?.version, 2);
    assert.deepEqual(node("c").m.ring, ring2);

    // Same ring everywhere: no ring travels.
    const ex3 = await exchange("c", "a");
    assert.deepEqual([ex3.length, ex3[0]!.answer.ring, ex3[0]!.answer.ringDelta], [1, null, undefined]);
  });

  test("a ring the sender never held, or a change larger than the ring, travels whole", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    // b's ring 1 is another than a's ring 1 (two claimants at once); a's ring 3 came after its own.
    const other1: RingView = { ...ring1, owners: ring1.owners.map((o) => (o === "a" ? "b" : o)) };
    b.merge([], other1, 10);
    assert.deepEqual(b.ring, other1);
    const ring3: RingView = { ...ring1, version: 3, owners: ring1.owners.map((o) => (o === "a" ? "c" : o)) };
    a.merge([], ring3, 10);
    const ex = await exchange("b", "a");
    assert.deepEqual(ex[0]!.answer.ring, ring3);
    assert.equal(ex[0]!.answer.ringDelta, undefined);
    assert.deepEqual(b.ring, ring3);

    // More than half the partitions moved: no delta.
    const all: RingView = { ...ring1, version: 9, owners: ring1.owners.map(() => "a") };
    assert.equal(ringDelta(ring1, { version: 1, hash: ringHash(ring1) }, all), undefined);
  });

  test("two rings of one version: both sides end with the same one", async () => {
    const { node, exchange } = cluster();
    const [a, b] = [node("a").m, node("b").m];
    const x: RingView = { ...ring1, version: 2, owners: ["b", ...ring1.owners.slice(1)] };
    const y: RingView = { ...ring1, version: 2, owners: ["c", ...ring1.owners.slice(1)] };
    // a holds the higher of the two (by compareRings): b's answer carries x whole and asks for a's; a
    // keeps y and sends it whole in its closing request.
    a.merge([], y, 10);
    b.merge([], x, 10);
    const ex = await exchange("a", "b");
    assert.equal(ex.length, 2);
    assert.deepEqual([ex[0]!.answer.ring, ex[1]!.request.ring], [x, y]);
    assert.deepEqual([a.ring, b.ring], [y, y]);
  });
});

describe("protocol 9's exchange", () => {
  test("a request with the whole view and ring is answered with the whole view and ring", async () => {
    const { net, node } = cluster();
    const t = net.node("old");
    const answer = await net.runUntilSettled(
      t.request("a", { kind: "gossip", members: [entry("b", "up", 2, 9)], ring: ring1 }, 500),
      1000,
    );
    assert.deepEqual(answer.members.map((m) => m.id).sort(), ["a", "b", "c"]);
    assert.deepEqual(answer.ring, ring1);
    assert.equal(node("a").m.member("b")?.heartbeat, 9);
  });

  test("a node of protocol 9 answers a digest with its whole view (it ignores the digest): it is merged", async () => {
    const { net, node } = cluster(["a", "b"]);
    // Node "old" speaks protocol 9: it reads a gossip request's members and ring only, and answers its
    // whole view and ring.
    const oldView = [entry("old", "up", 2, 40), entry("a", "up"), entry("b", "up", 2, 30)];
    net.node("old", async (_from, body) => {
      assert.equal(body.kind, "gossip");
      return { kind: "gossip", members: oldView, ring: ring1 };
    });
    const a = node("a").m;
    a.merge([entry("old", "up", 2, 1)], null, 5);
    node("a").g.exchangeWith("old");
    while (net.pending().length > 0) await net.step();
    assert.equal(a.member("old")?.heartbeat, 40);
    assert.equal(a.member("b")?.heartbeat, 30);
    assert.equal(a.liveness("old", 10), "up");
  });
});
