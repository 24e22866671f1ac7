/**
 * Membership (src/membership/membership.ts) driven by GossipDriver (gossip-driver.ts), on the protocol
 * test network (test/support/protocol-net.ts) and virtual time (src/runtime/virtual-runtime.ts). Nothing
 * is mocked: each node is the real state machine and driver, wired as the node wires them, with a
 * handler that answers `gossip`, `join` and `ping` as node/peer-dispatch.ts does.
 *
 * - a join and the gossip after it, message by message: the claimant claims the joiner in, its push
 *   turns the joiner up, a lost push is a failed contact (suspect, not down), the next exchange lifts it;
 * - a cluster of five converges: everyone sees everyone up, and the same ring holding all of them;
 * - one bad link (cut both ways) may make the two ends suspect each other, never declare each other down,
 *   and nobody else notices;
 * - a crashed node is declared down by every other node within downAfterMs and a few gossip rounds (and
 *   not before downAfterMs), and up again soon after it restarts;
 * - views converge for any seed, under loss, duplication and reordering;
 * - the ring: three joins give three claims, each moving partitions only to the joiner; every node ends
 *   at the same version, and no node ever sees its ring version go down.
 *
 * Deterministic: every fault and gossip peer comes from SIM_SEED (default below). A failing run prints
 * the command that replays it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GossipDriver } from "../../src/membership/gossip-driver.js";
import { type Liveness, Membership, newerEntry } from "../../src/membership/membership.js";
import { ownership } from "../../src/ring/ring.js";
import { derivedRandom, deriveSeed, type TimerGroup } from "../../src/runtime/virtual-runtime.js";
import type {
  AnswerBody,
  AnswerOf,
  MemberView,
  RequestBody,
  RingView,
} from "../../src/transport/messages.js";
import { type Transport, TransportError } from "../../src/transport/transport.js";
import { memberView } from "../support/member-views.js";
import { type NetFaults, ProtocolNet } from "../support/protocol-net.js";

const SEED = process.env.SIM_SEED !== undefined ? Number(process.env.SIM_SEED) : 0x6055_1e01;
const REPLAY = `SIM_SEED=${SEED} node --import tsx --test test/membership/membership.test.ts`;

// As node.ts derives them from a gossip interval (the cluster tests use 100 ms and 1000 ms).
const INTERVAL_MS = 200;
const DOWN_AFTER_MS = 2000;
const SUSPECT_FOR_MS = Math.max(INTERVAL_MS * 4, 1000);
const REQUEST_TIMEOUT_MS = Math.max(INTERVAL_MS * 2, 500);
const JOIN_TIMEOUT_MS = 5000;
const PARTITIONS = 64;
const N = 3;
const CLUSTER = "sim-cluster";

interface SimNode {
  readonly id: string;
  readonly transport: Transport;
  /** This incarnation's timers (halted by a crash) and random stream. */
  timers: TimerGroup;
  generation: number;
  membership: Membership | undefined;
  gossip: GossipDriver | undefined;
  /** What node.ts keeps in members.json: rewritten on every change, read back by a restart. */
  saved: { members: MemberView[]; ring: RingView | null };
  crashed: boolean;
}

const sortedIds = (ids: Iterable<string>): string => [...ids].sort().join(",");

/** Seeded loss, duplication and reordering (a message held up to 100 ms), as a bad network would. */
type Faults = Omit<NetFaults, "random">;

/** A cluster on one network (a node's name is its id and its peer address), joining as node.ts makes them join. */
class SimCluster {
  readonly net: ProtocolNet;
  readonly sched: ProtocolNet["sched"];
  readonly nodes = new Map<string, SimNode>();

  constructor(
    readonly seed: number,
    faults?: Faults,
  ) {
    this.net = new ProtocolNet({
      faults: faults === undefined ? undefined : { ...faults, random: derivedRandom(seed, "network") },
    });
    this.sched = this.net.sched;
  }

  /** Every message sent, as "from -> to kind" (a request) or "from --> to kind" (its answer). */
  get trace(): string[] {
    return this.net.sent().map((s) => s.line);
  }

  node(id: string): SimNode {
    const n = this.nodes.get(id);
    assert.ok(n !== undefined, `no node ${id}`);
    return n;
  }

  live(): SimNode[] {
    return [...this.nodes.values()].filter((n) => !n.crashed && n.membership !== undefined);
  }

  /** Attaches node `id` to the network, not yet in a cluster (it may only join). */
  private attach(id: string): SimNode {
    // Requests may arrive as soon as the address exists; they find the node through this binding.
    let node: SimNode | undefined;
    const transport = this.net.node(id, (from, body) => this.dispatch(node!, from, body));
    node = {
      id,
      transport,
      timers: this.sched.group(),
      generation: 0,
      membership: undefined,
      gossip: undefined,
      saved: { members: [], ring: null },
      crashed: false,
    };
    this.nodes.set(id, node);
    return node;
  }

  /** node.ts's request dispatch, for the requests membership uses. */
  private async dispatch(node: SimNode, from: string, body: RequestBody): Promise<AnswerBody> {
    const m = node.membership;
    const g = node.gossip;
    if (m === undefined || g === undefined)
      throw Object.assign(new Error("node is starting"), { code: "ERR_STARTING" });
    switch (body.kind) {
      case "ping":
        return { kind: "pong" };
      case "gossip":
        return g.onGossip(from, body);
      case "join":
        m.admit(body.member, this.sched.now());
        return {
          kind: "joined",
          clusterId: CLUSTER,
          secret: "c2VjcmV0",
          n: N,
          r: 2,
          w: 2,
          members: m.view(),
          ring: m.ring,
        };
      default:
        throw Object.assign(new Error(`${body.kind} is not served in this test`), {
          code: "ERR_UNSUPPORTED",
        });
    }
  }

  private selfEntry(id: string, status: MemberView["status"], incarnation: number): MemberView {
    return memberView(id, status, incarnation, 0);
  }

  /** Builds membership and gossip from a view (a join answer or the saved one), as node.ts does. */
  private startMembership(node: SimNode, view: { members: MemberView[]; ring: RingView | null } | undefined) {
    const now = this.sched.now();
    const prevSelf = view?.members.find((m) => m.id === node.id);
    const inRing = view?.ring?.owners.includes(node.id) ?? false;
    const membership = new Membership(
      {
        selfId: node.id,
        partitions: PARTITIONS,
        n: N,
        downAfterMs: DOWN_AFTER_MS,
        suspectForMs: SUSPECT_FOR_MS,
        fanout: 3,
      },
      this.selfEntry(node.id, inRing ? "up" : "joining", (prevSelf?.incarnation ?? 0) + 1),
      now,
    );
    if (view !== undefined) membership.merge(view.members, view.ring, now);
    const save = () => {
      node.saved = { members: membership.view(), ring: membership.ring };
    };
    const gossip = new GossipDriver({
      membership,
      transport: node.transport,
      timers: node.timers,
      clock: this.sched,
      random: derivedRandom(this.seed, `${node.id}/${node.generation}`),
      intervalMs: INTERVAL_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      onChange: save,
    });
    node.membership = membership;
    node.gossip = gossip;
    return { membership, gossip, save };
  }

  /** `id` creates a new cluster of one: its own ring, as `ringstore start` without --join. */
  bootstrap(id: string): void {
    const node = this.attach(id);
    node.transport.setCluster(CLUSTER);
    const { membership, gossip, save } = this.startMembership(node, undefined);
    membership.bootstrapRing();
    gossip.start();
    save();
  }

  /**
   * `id` asks `via` to admit it (`join` -> `joined`), takes the cluster id and view from the answer and
   * gossips from then on, as `joining` until the claimant gives it partitions. A lost join is retried,
   * as an operator would run the command again (at 5% loss an attempt fails about one time in ten).
   */
  async join(id: string, via: string, attempts = 1): Promise<void> {
    const node = this.attach(id);
    let answer: AnswerOf<"join"> | undefined;
    for (let i = 0; i < attempts && answer === undefined; i++) {
      const res = node.transport.request(
        via,
        { kind: "join", member: this.selfEntry(id, "joining", 0) },
        JOIN_TIMEOUT_MS,
      );
      answer = await this.net.runUntilSettled(res, JOIN_TIMEOUT_MS + 1).catch((err: unknown) => {
        if (i === attempts - 1 || !(err instanceof TransportError)) throw err;
        return undefined;
      });
    }
    assert.ok(answer !== undefined, `${id} was not admitted`);
    node.transport.setCluster(answer.clusterId);
    const { gossip, save } = this.startMembership(node, { members: [...answer.members], ring: answer.ring });
    gossip.start();
    save();
  }

  /** The process dies: its timers stop, the network forgets it; its saved view stays on "disk". */
  crash(id: string): void {
    const node = this.node(id);
    this.net.crash(id);
    node.timers.halt();
    node.gossip!.stop();
    node.crashed = true;
  }

  /** It starts again from its saved view, with a new incarnation, as node.ts does after a restart. */
  restart(id: string): void {
    const node = this.node(id);
    node.generation++;
    node.timers = this.sched.group();
    node.crashed = false;
    node.membership = undefined;
    node.gossip = undefined;
    this.net.restart(id);
    const { gossip, save } = this.startMembership(node, node.saved);
    gossip.start();
    save();
  }

  liveness(observer: string, subject: string): Liveness {
    return this.node(observer).membership!.liveness(subject, this.sched.now());
  }

  /**
   * Every live node knows exactly `ids`, sees each of them `up` (or, with `suspectOk`, at least not down:
   * under message loss a node may suspect another for a while), and holds the same ring, owned by them.
   */
  converged(ids: readonly string[], suspectOk = false): boolean {
    const want = sortedIds(ids);
    let ring: string | undefined;
    for (const n of this.live()) {
      const m = n.membership!;
      const view = m.view();
      if (sortedIds(view.map((v) => v.id)) !== want) return false;
      for (const v of view) {
        const live = this.liveness(n.id, v.id);
        if (v.status !== "up" || live === "down" || (live === "suspect" && !suspectOk)) return false;
      }
      const r = m.ring;
      if (r === null || sortedIds(new Set(r.owners)) !== want) return false;
      const key = `${r.version}:${r.owners.join(",")}`;
      if (ring !== undefined && key !== ring) return false;
      ring = key;
    }
    return ring !== undefined;
  }

  /** Who sees whom how, for assertion messages. */
  describe(): string {
    const t = this.sched.now();
    const lines = [`t=${t} ms, seed ${this.seed} (replay: ${REPLAY})`];
    for (const n of this.live()) {
      const m = n.membership!;
      const seen = m
        .view()
        .map((v) => `${v.id}:${v.status}/${m.liveness(v.id, t)}`)
        .join(" ");
      lines.push(`  ${n.id} ring v${m.ring?.version ?? "-"} sees ${seen}`);
    }
    return lines.join("\n");
  }

  /** Five nodes: n1 bootstraps, n2..n5 join through n1, then the view settles. */
  static async ofFive(seed: number, faults?: Faults, attempts = 1): Promise<SimCluster> {
    const c = new SimCluster(seed, faults);
    c.bootstrap("n1");
    for (const id of ["n2", "n3", "n4", "n5"]) await c.join(id, "n1", attempts);
    const ok = await c.net.runUntil(() => c.converged(FIVE), 30_000);
    assert.ok(ok, `five nodes did not converge within 30 s\n${c.describe()}`);
    return c;
  }
}

const FIVE = ["n1", "n2", "n3", "n4", "n5"];

describe("membership, message by message", () => {
  test("a join: the claimant's next round claims the joiner in; its push turns it up; a lost push is a suspicion, lifted by the next exchange", async () => {
    const c = new SimCluster(SEED);
    const { net } = c;
    c.bootstrap("n1");
    await c.join("n2", "n1");
    assert.deepEqual(c.trace, ["n2 -> n1 join", "n1 --> n2 joined"]);
    const [n1, n2] = [c.node("n1").membership!, c.node("n2").membership!];
    assert.deepEqual([n1.ring?.version, n2.self.status], [1, "joining"]);
    assert.equal(c.sched.now(), 0);

    // A round each: n1, the claimant, claims n2 in before it gossips; each opens with its digest.
    await net.elapse(INTERVAL_MS);
    assert.deepEqual(net.pending(), ["n1 -> n2 gossip", "n2 -> n1 gossip"]);
    assert.equal(n1.ring?.version, 2);
    assert.ok(n1.ring!.owners.includes("n2"));
    assert.equal(n2.self.status, "joining", "n2 has heard nothing yet");

    // n1's digest reaches n2: n1's ring is newer, so n2 asks for it (ringWant) in its answer; the
    // directories differ (n1 holds n2's entry of the join), so n2's digest names every member.
    assert.deepEqual(await net.deliver({ to: "n2" }), ["n1 -> n2 gossip"]);
    assert.deepEqual([n2.ring?.version, n2.self.status], [1, "joining"], "a digest carries no ring");
    assert.deepEqual(net.pending(), ["n2 -> n1 gossip", "n2 --> n1 gossip"]);
    // n1 closes the exchange: ring 2 (as the change from ring 1) and a want of n2's newer entry.
    await net.deliver({ answer: true });
    assert.deepEqual(net.pending(), ["n2 -> n1 gossip", "n1 -> n2 gossip"]);
    assert.deepEqual(await net.deliver({ to: "n2" }), ["n1 -> n2 gossip"]);
    assert.deepEqual([n2.ring?.version, n2.self.status], [2, "up"], "n2 took ring 2 and turned up");
    assert.deepEqual(n2.ring, n1.ring, "the delta made n1's ring");
    assert.equal(n1.member("n2")?.status, "joining");
    await net.deliver({ answer: true });
    assert.equal(n1.member("n2")?.status, "up", "n2's answer told n1");

    // n2's own push is lost: no answer, and after the request timeout n2 suspects n1. Nothing more.
    assert.deepEqual(net.drop({ from: "n2" }), ["n2 -> n1 gossip"]);
    const lostAt = c.sched.now();
    await net.elapse(REQUEST_TIMEOUT_MS - 1);
    assert.equal(c.liveness("n2", "n1"), "up");
    await net.elapse(1);
    assert.equal(c.sched.now(), lostAt + REQUEST_TIMEOUT_MS);
    assert.equal(c.liveness("n2", "n1"), "suspect", "a failed contact is a suspicion");
    assert.equal(c.liveness("n1", "n2"), "up", "n1's contacts with n2 did not fail");
    // The rounds of the meantime are still queued (nothing moves by itself)...
    assert.deepEqual(net.pending(), [
      "n1 -> n2 gossip",
      "n2 -> n1 gossip",
      "n1 -> n2 gossip",
      "n2 -> n1 gossip",
    ]);
    // ...and once delivered, the next exchange with n1 lifts the suspicion.
    await net.deliver({ from: "n1" });
    assert.equal(c.liveness("n2", "n1"), "up");
    await net.step();
    await net.step();
    assert.deepEqual(net.pending(), []);
    assert.ok(c.converged(["n1", "n2"]), c.describe());
  });
});

describe("membership over the network", () => {
  test("a cluster of five converges: everyone sees everyone up and the same ring", async () => {
    const c = new SimCluster(SEED);
    c.bootstrap("n1");
    assert.equal(c.node("n1").membership!.ring?.version, 1, "n1 made the first ring");

    await c.join("n2", "n1");
    // n2 is admitted by n1 and takes the view from n1's answer: one round trip, no gossip yet.
    assert.deepEqual(c.trace, ["n2 -> n1 join", "n1 --> n2 joined"]);
    const n2 = c.node("n2").membership!;
    assert.equal(n2.self.status, "joining", "n2 owns no partition yet");
    assert.deepEqual(n2.ring?.owners, new Array(PARTITIONS).fill("n1"));

    for (const id of ["n3", "n4", "n5"]) await c.join(id, "n1");
    const t0 = c.sched.now();
    assert.ok(await c.net.runUntil(() => c.converged(FIVE), 30_000), c.describe());
    const took = c.sched.now() - t0;
    // Joiners learn the ring through gossip from the claimant (n1), then turn themselves up.
    assert.ok(c.trace.includes("n1 -> n2 gossip") || c.trace.includes("n2 -> n1 gossip"));
    assert.ok(took < 20 * INTERVAL_MS, `converged after ${took} ms\n${c.describe()}`);

    const ring = c.node("n1").membership!.ring!;
    for (const n of c.live()) assert.deepEqual(n.membership!.ring, ring, `${n.id} holds n1's ring`);
    const shares = [...ownership(ring).values()].sort((a, b) => a - b);
    assert.ok(
      shares[0]! >= Math.floor(PARTITIONS / 5) && shares.at(-1)! <= Math.ceil(PARTITIONS / 5),
      `${shares}`,
    );
    c.net.checkCounters();
    assert.equal(c.net.counters.lost, 0);
  });

  test("one bad link: A may suspect B, never declares it down while B gossips with others", async () => {
    const c = await SimCluster.ofFive(SEED);
    const [A, B] = ["n1", "n2"]; // n1 is also the claimant: a wrong "down" would change the ring
    const ringVersion = c.node(A).membership!.ring!.version;
    c.net.cut(A, B);
    c.net.cut(B, A);

    const seen = new Map<string, Set<Liveness>>();
    const note = (observer: string, subject: string) => {
      const k = `${observer} sees ${subject}`;
      const s = seen.get(k) ?? new Set<Liveness>();
      s.add(c.liveness(observer, subject));
      seen.set(k, s);
    };
    // Check after every event for 10 x downAfterMs; stop at the first "down" anyone reports.
    const anyDown = await c.net.runUntil(() => {
      for (const o of FIVE) for (const s of FIVE) if (o !== s) note(o, s);
      return [...seen.values()].some((s) => s.has("down"));
    }, 10 * DOWN_AFTER_MS);
    assert.equal(anyDown, false, `a node was declared down\n${[...seen].join("\n")}\n${c.describe()}`);

    assert.ok(seen.get(`${A} sees ${B}`)!.has("suspect"), "A's failed contacts made it suspect B");
    assert.ok(seen.get(`${B} sees ${A}`)!.has("suspect"), "and B suspect A");
    for (const o of ["n3", "n4", "n5"])
      for (const s of [A, B]) assert.deepEqual([...seen.get(`${o} sees ${s}`)!], ["up"], `${o} sees ${s}`);
    for (const n of c.live())
      assert.equal(n.membership!.ring!.version, ringVersion, `${n.id}: ring unchanged`);

    // A -> B is lost on the wire (a timeout, not a refusal); n3 -> B works.
    const lost = c.node(A).transport.request(B, { kind: "ping" }, 300);
    await assert.rejects(c.net.runUntilSettled(lost, 1000), { code: "ERR_TIMEOUT" });
    const ok = c.node("n3").transport.request(B, { kind: "ping" }, 300);
    assert.deepEqual(await c.net.runUntilSettled(ok, 1000), { kind: "pong" });

    // Healed: the next successful gossip lifts the suspicion.
    c.net.heal();
    assert.ok(
      await c.net.runUntil(() => c.liveness(A, B) === "up" && c.liveness(B, A) === "up", SUSPECT_FOR_MS),
      c.describe(),
    );
    c.net.checkCounters();
  });

  test("a crashed node is declared down by every other node within downAfterMs + 3 rounds, up after restart", async () => {
    const c = await SimCluster.ofFive(SEED);
    const X = "n3";
    const others = FIVE.filter((id) => id !== X);
    const incarnation = c.node(X).membership!.self.incarnation;
    const t0 = c.sched.now();
    c.crash(X);

    const downAt = new Map<string, number>();
    const allDown = await c.net.runUntil(
      () => {
        for (const o of others)
          if (!downAt.has(o) && c.liveness(o, X) === "down") downAt.set(o, c.sched.now() - t0);
        return downAt.size === others.length;
      },
      DOWN_AFTER_MS + 10 * INTERVAL_MS,
    );
    assert.ok(allDown, `not everyone declared ${X} down: ${[...downAt]}\n${c.describe()}`);
    for (const [o, ms] of downAt) {
      // Its last heartbeat left it at most one round before the crash, and reached everyone soon after.
      assert.ok(ms > DOWN_AFTER_MS - INTERVAL_MS, `${o} declared ${X} down too early, after ${ms} ms`);
      assert.ok(ms <= DOWN_AFTER_MS + 3 * INTERVAL_MS, `${o} declared ${X} down after ${ms} ms`);
    }
    // A down member keeps its partitions (Dynamo: only an explicit leave changes the ring).
    for (const o of others) assert.ok(c.node(o).membership!.ring!.owners.includes(X));

    const t1 = c.sched.now();
    c.restart(X);
    const upAgain = await c.net.runUntil(() => c.converged(FIVE), 10 * INTERVAL_MS);
    assert.ok(upAgain, `${X} not up everywhere after its restart\n${c.describe()}`);
    assert.ok(c.sched.now() - t1 <= 5 * INTERVAL_MS, `up again after ${c.sched.now() - t1} ms`);
    for (const o of others) assert.ok(c.node(o).membership!.member(X)!.incarnation > incarnation);
    c.net.checkCounters();
  });

  test("views converge for any seed, with loss, duplication and reordering", async () => {
    const faults: Faults = { drop: 0.05, duplicate: 0.05, delay: 0.1, delayMaxMs: 100 };
    for (let i = 0; i < 8; i++) {
      const seed = deriveSeed(SEED, `property/${i}`);
      let c: SimCluster | undefined;
      try {
        c = await SimCluster.ofFive(seed, faults, 6);
        // Still converged a while later: nothing flaps under the same faults.
        let flapped = false;
        await c.net.runUntil(() => {
          flapped ||= !c!.live().every((o) => FIVE.every((s) => c!.liveness(o.id, s) !== "down"));
          return flapped;
        }, 5 * DOWN_AFTER_MS);
        assert.equal(flapped, false, `a member was declared down under 5% loss\n${c.describe()}`);
        assert.ok(c.converged(FIVE, true), c.describe());
        const { lost: dropped, duplicated } = c.net.checkCounters();
        assert.ok(
          dropped > 0 && duplicated > 0,
          `the faults were exercised: ${dropped} lost, ${duplicated} duplicated`,
        );
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        throw new Error(`seed ${seed} (run ${i} of SIM_SEED=${SEED}; replay: ${REPLAY}): ${why}`, {
          cause: err,
        });
      }
    }
  });

  test("ring: three joins, three claims; every node ends at the same version and none ever goes back", async () => {
    const c = new SimCluster(SEED);
    const versions = new Map<string, number[]>();
    const record = () => {
      for (const n of c.live()) {
        const v = n.membership!.ring?.version ?? 0;
        const seen = versions.get(n.id) ?? [];
        if (seen.at(-1) !== v) seen.push(v);
        versions.set(n.id, seen);
      }
    };
    c.bootstrap("n1");
    const members = ["n1"];
    let prev = c.node("n1").membership!.ring!;
    for (const id of ["n2", "n3", "n4"]) {
      await c.join(id, "n1");
      members.push(id);
      const everywhere = await c.net.runUntil(() => {
        record();
        return c.converged(members);
      }, 30 * INTERVAL_MS);
      assert.ok(everywhere, `${id}'s join did not reach everyone\n${c.describe()}`);
      const ring = c.node("n1").membership!.ring!;
      assert.equal(ring.version, prev.version + 1, `one claim for ${id}`);
      for (let p = 0; p < PARTITIONS; p++)
        if (ring.owners[p] !== prev.owners[p])
          assert.equal(ring.owners[p], id, `partition ${p} moved to ${id} only`);
      prev = ring;
    }
    for (const n of c.live()) {
      assert.equal(n.membership!.ring!.version, 4, `${n.id}: bootstrap + 3 claims`);
      assert.deepEqual(
        [...ownership(n.membership!.ring!).entries()].sort(),
        members.map((id) => [id, 16]),
      );
    }
    for (const [id, seen] of versions)
      assert.deepEqual(
        seen,
        [...seen].sort((a, b) => a - b),
        `${id} saw ring versions ${seen}`,
      );
    assert.deepEqual(versions.get("n4"), [3, 4], "n4 took v3 from its join answer, v4 from gossip");
  });

  test("left is final: it supersedes any other entry, whatever the incarnations, and nothing supersedes it", () => {
    const e = (status: MemberView["status"], incarnation: number): MemberView => ({
      id: "x",
      api: "",
      peer: "",
      weight: 1,
      zone: undefined,
      status,
      incarnation,
      heartbeat: 0,
    });
    assert.ok(newerEntry(e("left", 1), e("up", 9)));
    assert.ok(!newerEntry(e("up", 9), e("left", 1)));
    assert.ok(!newerEntry(e("joining", 10), e("left", 2)));
    assert.ok(newerEntry(e("left", 3), e("left", 2)));
    assert.ok(newerEntry(e("up", 3), e("joining", 2)));
  });

  test("a member's new addresses change the saved view (epoch); its heartbeats alone do not", () => {
    const entry = (over: Partial<MemberView>): MemberView => ({
      id: "x",
      api: "127.0.0.1:8001",
      peer: "127.0.0.1:9001",
      weight: 1,
      zone: undefined,
      status: "up",
      incarnation: 1,
      heartbeat: 1,
      ...over,
    });
    const m = new Membership(
      {
        selfId: "me",
        partitions: PARTITIONS,
        n: N,
        downAfterMs: DOWN_AFTER_MS,
        suspectForMs: SUSPECT_FOR_MS,
        fanout: 3,
      },
      { ...entry({}), id: "me", api: "127.0.0.1:8000", peer: "127.0.0.1:9000" },
      0,
    );
    m.merge([entry({})], null, 0);
    let epoch = m.epoch;
    m.merge([entry({ heartbeat: 2 })], null, 10);
    assert.equal(m.epoch, epoch, "a heartbeat is not a change of the saved view");
    // x restarted on another port (port 0, or a new IP): the view node.ts saves must follow, or a node
    // restarted later would look for x where it no longer is.
    m.merge(
      [entry({ incarnation: 2, heartbeat: 1, peer: "127.0.0.1:9101", api: "127.0.0.1:8101" })],
      null,
      20,
    );
    assert.ok(m.epoch > epoch, "new addresses are a change of the saved view");
    assert.equal(m.member("x")?.peer, "127.0.0.1:9101");
    epoch = m.epoch;
    m.merge(
      [entry({ incarnation: 2, heartbeat: 5, peer: "127.0.0.1:9101", api: "127.0.0.1:8101", weight: 2 })],
      null,
      30,
    );
    assert.ok(m.epoch > epoch, "a new weight is a change of the saved view");
  });

  test("remove: a crashed member is removed on its behalf, claimed out, and hears it when it restarts; left is final", async () => {
    const c = await SimCluster.ofFive(SEED);
    c.crash("n4");
    assert.ok(
      await c.net.runUntil(
        () => c.live().every((n) => n.membership!.liveness("n4", c.sched.now()) === "down"),
        30_000,
      ),
    );
    // The claimant (n1) removes it: the others take the removal from it (membership.ts).
    c.node("n1").membership!.remove("n4", "n1");
    const out = await c.net.runUntil(
      () =>
        c
          .live()
          .every(
            (n) =>
              n.membership!.member("n4")?.status === "left" && !n.membership!.ring!.owners.includes("n4"),
          ),
      30 * INTERVAL_MS,
    );
    assert.ok(out, `n4 was not removed everywhere\n${c.describe()}`);
    // n4 restarts from its saved view (it was up then, with a higher incarnation): it hears it is gone.
    c.restart("n4");
    assert.ok(
      await c.net.runUntil(() => c.node("n4").membership!.self.status === "left", 30 * INTERVAL_MS),
      `n4 did not learn it was removed\n${c.describe()}`,
    );
    await c.net.runFor(20 * INTERVAL_MS);
    for (const n of c.live()) {
      assert.equal(n.membership!.member("n4")?.status, "left", `${n.id} keeps n4 left`);
      assert.ok(!n.membership!.ring!.owners.includes("n4"));
    }
  });

  test("leave: a leaving member is claimed out at once, its partitions going only to others; left spreads", async () => {
    const c = await SimCluster.ofFive(SEED);
    const before = c.node("n1").membership!.ring!;
    // n1 is the claimant; let the lowest-but-one leave, then the claimant itself.
    for (const leaver of ["n2", "n1"]) {
      const prev = c.live()[0]!.membership!.ring!;
      c.node(leaver).membership!.startLeaving();
      const out = await c.net.runUntil(
        () => c.live().every((n) => !n.membership!.ring!.owners.includes(leaver)),
        30 * INTERVAL_MS,
      );
      assert.ok(out, `${leaver} was not claimed out everywhere\n${c.describe()}`);
      const ring = c.node(leaver).membership!.ring!;
      assert.equal(ring.version, prev.version + 1, `one claim for ${leaver}'s leave`);
      assert.ok(!ring.members.some((k) => k.startsWith(`${leaver}:`)));
      for (let p = 0; p < PARTITIONS; p++)
        if (ring.owners[p] !== prev.owners[p]) assert.equal(prev.owners[p], leaver, `partition ${p} moved`);
      // Still a member (it hands off, gossips) until it marks itself left.
      assert.equal(c.node("n5").membership!.member(leaver)?.status, "leaving");
      c.node(leaver).membership!.markLeft();
      const heard = await c.net.runUntil(
        () => c.live().every((n) => n.membership!.member(leaver)?.status === "left"),
        30 * INTERVAL_MS,
      );
      assert.ok(heard, `${leaver}'s left did not spread\n${c.describe()}`);
    }
    assert.ok(before.version < c.node("n5").membership!.ring!.version);
    assert.deepEqual(
      [...ownership(c.node("n5").membership!.ring!).keys()].sort(),
      ["n3", "n4", "n5"],
      "the three that stay own every partition",
    );
  });
});

describe("membership invariants", () => {
  const entry = (id: string, status: MemberView["status"], incarnation = 1): MemberView => ({
    id,
    api: `${id}:8000`,
    peer: `${id}:9000`,
    weight: 1,
    zone: undefined,
    status,
    incarnation,
    heartbeat: 1,
  });
  const config = {
    selfId: "me",
    partitions: PARTITIONS,
    n: N,
    downAfterMs: DOWN_AFTER_MS,
    suspectForMs: 1000,
    fanout: 3,
  };
  /** The private paths every change goes through, reached as a bug elsewhere in the class would. */
  const internals = (m: Membership) =>
    m as unknown as {
      setEntry(id: string, e: MemberView): void;
      setRing(r: RingView): void;
      maybeClaim(now: number): void;
      claimant(now: number): string | undefined;
    };

  test("an entry never comes back from left; the ring version never goes back; one first ring", () => {
    const m = new Membership(config, entry("me", "joining"), 0);
    m.bootstrapRing();
    assert.throws(() => m.bootstrapRing(), {
      code: "ERR_INVARIANT",
      message: /first ring made over ring version 1/,
    });
    m.merge([entry("x", "up")], null, 0);
    m.remove("x", "me");
    assert.equal(m.member("x")?.status, "left");
    // Gossip cannot bring it back (newerEntry), and a change that tried would be caught.
    m.merge([entry("x", "up", 99)], null, 0);
    assert.equal(m.member("x")?.status, "left");
    assert.throws(() => internals(m).setEntry("x", entry("x", "up", 100)), {
      code: "ERR_INVARIANT",
      message: /x would go from left back to up/,
    });
    assert.throws(() => internals(m).setEntry("y", entry("x", "up")), { code: "ERR_INVARIANT" });
    const ring = m.ring!;
    m.merge([], { ...ring, version: 0 }, 0);
    assert.equal(m.ring!.version, ring.version, "an older ring from gossip is ignored");
    assert.throws(() => internals(m).setRing({ ...ring, version: ring.version - 1 }), {
      code: "ERR_INVARIANT",
      message: /from version 1 back to 0/,
    });
  });

  test("only an up member claims: a claimant that is not up is caught", () => {
    const m = new Membership(config, entry("me", "joining"), 0);
    m.merge(
      [entry("a", "up")],
      { version: 1, partitions: PARTITIONS, owners: Array(PARTITIONS).fill("a"), members: ["a:1"] },
      0,
    );
    assert.equal(m.self.status, "joining");
    const bug = internals(m);
    bug.claimant = () => "me"; // a claimant choice that forgot to look at the status
    assert.throws(() => bug.maybeClaim(0), {
      code: "ERR_INVARIANT",
      message: /claimant me is joining, not up/,
    });
  });
});
