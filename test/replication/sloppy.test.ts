/**
 * Sloppy quorum (src/replication/sloppy.ts, write-round.ts, read-round.ts, coordinator.ts): requests go to
 * the first N healthy nodes of a key's extended list, stand-ins keep hints for the primaries they stand in
 * for, a failed store moves to a spare, pr/pw count primaries, the coordinator keeps hints for primaries
 * that acknowledged nothing by the deadline, and a coordinator with no reachable primary stands in under
 * an actor of its own for that one write.
 *
 * Every node is a real Replica and HintStore on a memory engine; the "network" answers after a delay of
 * virtual time, or fails at once ("down"), or never ("silent").
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Coordinator, localPeer, type ReplicaPeer } from "../../src/replication/coordinator.js";
import { HintStore } from "../../src/replication/hints.js";
import { Replica } from "../../src/replication/replica.js";
import { planSlots, replaceInSlot } from "../../src/replication/sloppy.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";
import type { StoredSibling, StoredValue } from "../../src/versioning/object-codec.js";

const KEY = Buffer.from("k");
const value = (text: string): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 0,
});
const texts = (s: readonly StoredSibling[]) => s.map((x) => Buffer.from(x.value.data).toString()).sort();

describe("planSlots", () => {
  test("a healthy primary takes its own slot; a down one's goes to the next healthy fallback", () => {
    const down = new Set(["b", "e"]);
    const plan = planSlots(["a", "b", "c"], ["d", "e", "f"], (id) => !down.has(id));
    assert.deepEqual(
      plan.slots.map((s) => [s.primary, s.node]),
      [
        ["a", "a"],
        ["b", "d"],
        ["c", "c"],
      ],
    );
    assert.deepEqual(plan.spares, ["f"]);
    // Its stand-in fails too: the next spare takes the slot, then nobody is left.
    assert.equal(replaceInSlot(plan, plan.slots[1]!), true);
    assert.equal(plan.slots[1]!.node, "f");
    assert.equal(replaceInSlot(plan, plan.slots[1]!), false);
    assert.equal(plan.slots[1]!.node, undefined);
  });

  test("a coordinator standing in takes the first down primary's slot itself", () => {
    const plan = planSlots(["a", "b", "c"], ["d", "e", "f"], (id) => id >= "d", "e");
    assert.deepEqual(
      plan.slots.map((s) => s.node),
      ["e", "d", "f"],
    );
    assert.throws(() => planSlots(["a"], ["d"], () => true, "z"), { code: "ERR_INVARIANT" });
  });
});

interface Node {
  readonly id: string;
  readonly replica: Replica;
  readonly hints: HintStore;
  mode: "up" | "down" | "silent";
  /** Stores it received, with the primary they were a hint for. */
  readonly stores: (string | undefined)[];
}

/** Nodes a..f: for every key, primaries a, b, c and fallbacks d, e, f (in that order). */
function cluster(sched: VirtualScheduler) {
  const ids = ["a", "b", "c", "d", "e", "f"];
  const nodes = new Map<string, Node>();
  for (const id of ids) {
    const engine = new MemoryEngine();
    nodes.set(id, {
      id,
      replica: new Replica(engine, `${id}.1`, 64),
      hints: new HintStore(engine, sched),
      mode: "up",
      stores: [],
    });
  }
  const after = <T>(n: Node, fn: () => Promise<T>): Promise<T> => {
    if (n.mode === "down") return Promise.reject(new Error(`${n.id} is down`));
    if (n.mode === "silent") return new Promise<T>(() => undefined);
    return new Promise<T>((resolve, reject) => sched.after(1, () => fn().then(resolve, reject)));
  };
  const peer = (from: string, n: Node): ReplicaPeer => {
    const inner = localPeer(n.id, n.replica, n.hints);
    if (n.id === from) return inner;
    return {
      nodeId: n.id,
      read: (key, hintFor) => after(n, () => inner.read(key, hintFor)),
      store: (key, set, handoff, hintFor) => {
        n.stores.push(hintFor);
        return after(n, () => inner.store(key, set, handoff, hintFor));
      },
    };
  };
  let actors = 0;
  const coordinator = (from: string, lateHints: string[] = []) => {
    const self = nodes.get(from)!;
    return new Coordinator({
      local: self.replica,
      localNodeId: from,
      replicasFor: () => ["a", "b", "c"].map((id) => peer(from, nodes.get(id)!)),
      fallbacksFor: () => ["d", "e", "f"].map((id) => peer(from, nodes.get(id)!)),
      // The failure detector's view: "down" nodes are seen down, "silent" ones are not (yet).
      healthy: (id) => nodes.get(id)!.mode !== "down",
      hints: self.hints,
      standInActor: () => `${from}.1~${String(++actors).padStart(16, "0")}`,
      timers: sched,
      random: seededRandom(1),
      reads: { hedgeMs: 50, fullReadFraction: 0 },
      onLateHint: (o) => lateHints.push(o),
    });
  };
  return { nodes, coordinator };
}

describe("sloppy writes", () => {
  test("with two primaries down, a w=2 write goes to a primary and a stand-in, which keeps a hint", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    nodes.get("b")!.mode = "down";
    nodes.get("c")!.mode = "down";
    const out = await sched.runUntilSettled(
      coordinator("a").write(KEY, EMPTY_VECTOR, value("v"), 2, 1000),
      5000,
    );
    assert.equal(out.kind, "ok");
    assert.deepEqual(nodes.get("d")!.stores, ["b"]);
    assert.deepEqual(nodes.get("e")!.stores, ["c"]);
    assert.deepEqual(texts(await nodes.get("d")!.hints.read("b", KEY)), ["v"]);
    assert.deepEqual(await nodes.get("d")!.replica.read(KEY), [], "a stand-in keeps no data of its own");
    // A sloppy read asks the same stand-ins, for their hints.
    const read = await sched.runUntilSettled(coordinator("a").get(KEY, 2, 1000), 5000);
    assert.equal(read.kind, "ok");
    if (read.kind === "ok") assert.deepEqual(texts(read.siblings), ["v"]);
  });

  test("pw and pr count the primaries: with two down, pw=2 and pr=2 are refused, saying how many", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    nodes.get("b")!.mode = "down";
    nodes.get("c")!.mode = "down";
    const w = await sched.runUntilSettled(
      coordinator("a").write(KEY, EMPTY_VECTOR, value("v"), 2, 1000, { pw: 2 }),
      5000,
    );
    // The 503 says the true count: every copy was acknowledged, one of them by a primary.
    assert.deepEqual(w, { kind: "unavailable", needed: 2, acked: 3, primary: { needed: 2, acked: 1 } });
    const r = await sched.runUntilSettled(coordinator("a").get(KEY, 2, 1000, { pr: 2 }), 5000);
    assert.deepEqual(r, { kind: "unavailable", needed: 2, replied: 3, primary: { needed: 2, replied: 1 } });
    assert.equal((await coordinator("a").get(KEY, 1, 1000, { pr: 1 })).kind, "ok");
  });

  test("a primary the failure detector still sees up but whose store fails is replaced by a spare at once", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    const co = coordinator("a");
    // b fails its stores without being seen down (a bad link, a refused connection).
    const b = nodes.get("b")!;
    const store = b.replica.merge.bind(b.replica);
    b.replica.merge = () => Promise.reject(new Error("disk error"));
    const out = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("v"), 3, 1000), 5000);
    b.replica.merge = store;
    assert.equal(out.kind, "ok");
    assert.deepEqual(nodes.get("d")!.stores, ["b"], "d stood in for b");
    assert.deepEqual(texts(await nodes.get("d")!.hints.read("b", KEY)), ["v"]);
  });

  test("a primary that acknowledged nothing by the deadline gets a hint kept by the coordinator", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    nodes.get("c")!.mode = "silent"; // paused: not yet seen down
    const late: string[] = [];
    const out = await sched.runUntilSettled(
      coordinator("a", late).write(KEY, EMPTY_VECTOR, value("v"), 2, 500),
      5000,
    );
    assert.equal(out.kind, "ok");
    assert.deepEqual(await nodes.get("a")!.hints.read("c", KEY), [], "no hint before the deadline");
    await sched.runFor(600);
    assert.deepEqual(texts(await nodes.get("a")!.hints.read("c", KEY)), ["v"]);
    assert.deepEqual(late, ["stored"]);
    assert.deepEqual(await nodes.get("a")!.hints.read("b", KEY), [], "b acknowledged: no hint for it");
  });

  test("with every primary down, a fallback coordinates as a stand-in under an actor of its own per write", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    for (const id of ["a", "b", "c"]) nodes.get(id)!.mode = "down";
    const co = coordinator("d");
    const first = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("one"), 2, 1000), 5000);
    const second = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("two"), 2, 1000), 5000);
    assert.equal(first.kind, "ok");
    assert.equal(second.kind, "ok");
    if (first.kind !== "ok" || second.kind !== "ok") return;
    assert.match(first.written.dot.actor, /^d\.1~/);
    assert.notEqual(first.written.dot.actor, second.written.dot.actor, "never the same actor twice");
    // d keeps what it versioned as a hint for a (the first primary's slot); e and f stand in for b and c.
    assert.deepEqual(texts(await nodes.get("d")!.hints.read("a", KEY)), ["one", "two"]);
    assert.deepEqual(nodes.get("e")!.stores, ["b", "b"]);
    assert.deepEqual(await nodes.get("d")!.replica.read(KEY), []);
    // Two blind writes stay siblings wherever they go.
    assert.equal(second.set.length, 2);
  });

  test("a read goes to the nodes a write went to, whichever node coordinates it", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    nodes.get("b")!.mode = "down";
    nodes.get("c")!.mode = "down";
    const w = await sched.runUntilSettled(
      coordinator("a").write(KEY, EMPTY_VECTOR, value("v"), 3, 1000),
      5000,
    );
    assert.equal(w.kind, "ok");
    // f is a fallback of the key, but not one of its stand-ins (d and e are): it asks a, d and e.
    for (const id of ["a", "b", "c", "d", "e", "f"]) nodes.get(id)!.stores.length = 0;
    const read = await sched.runUntilSettled(coordinator("f").get(KEY, 3, 1000), 5000);
    assert.equal(read.kind, "ok");
    if (read.kind === "ok") assert.deepEqual(texts(read.siblings), ["v"]);
  });

  test("with only w nodes of the cluster alive, a w=w write to any key succeeds", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(sched);
    for (const id of ["a", "b", "c", "d"]) nodes.get(id)!.mode = "down";
    const out = await sched.runUntilSettled(
      coordinator("e").write(KEY, EMPTY_VECTOR, value("v"), 2, 1000),
      5000,
    );
    assert.equal(out.kind, "ok");
    const read = await sched.runUntilSettled(coordinator("f").get(KEY, 2, 1000), 5000);
    assert.equal(read.kind, "ok");
    if (read.kind === "ok") assert.deepEqual(texts(read.siblings), ["v"]);
  });
});
