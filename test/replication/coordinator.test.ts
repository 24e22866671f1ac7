/**
 * The coordinator (src/replication/coordinator.ts) over real replicas (Replica on MemoryEngine), the
 * remote ones reached as a node reaches them, through remote-replica.ts's remotePeer, here on the protocol
 * test network (test/support/protocol-net.ts): which replicas a read asks (ReadPolicy), the speculative
 * retry, read repair of the replicas asked, and the write's quorum counting the coordinator's own
 * durable copy. A replica is "down" when crashed (a request to it is refused at once) and "silent" when
 * isolated (a request to it is lost: no answer within the remote timeout).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Coordinator,
  localPeer,
  type ReadPolicy,
  type ReplicaPeer,
} from "../../src/replication/coordinator.js";
import { KeyLock } from "../../src/replication/key-lock.js";
import { remotePeer } from "../../src/replication/remote-replica.js";
import { Replica } from "../../src/replication/replica.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { SlowDisk } from "../../src/sim/slow-disk.js";
import { LsmEngine, MemoryEngine, MemoryFileSystem } from "../../src/storage/index.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredValue } from "../../src/versioning/object-codec.js";
import { ProtocolNet, serveReplica } from "../support/protocol-net.js";

const KEY = Buffer.from("k");
/** A remote replica's request timeout, as a node's (requestTimeoutMs). */
const REPLICA_TIMEOUT_MS = 5000;
const value = (text: string): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 0,
});

const texts = (set: readonly { value: StoredValue }[]): string[] =>
  set.map((x) => Buffer.from(x.value.data).toString()).sort();

/**
 * Nodes `ids` on one network, each serving its replica (`own` gives some a replica of the test's own);
 * a coordinator on node `from` sees its own replica directly and the others through the network.
 */
function cluster(ids: string[], own: Record<string, Replica> = {}, net = new ProtocolNet()) {
  const replicas = new Map(ids.map((id) => [id, own[id] ?? new Replica(new MemoryEngine(), id, 64)]));
  const replica = (id: string) => replicas.get(id)!;
  const transports = new Map(ids.map((id) => [id, net.node(id, serveReplica(replica(id)))]));
  const coordinator = (from: string, reads: ReadPolicy, seed = 1) => {
    const peers = ids.map(
      (id): ReplicaPeer =>
        id === from
          ? localPeer(id, replica(id))
          : remotePeer(id, transports.get(from)!, net.directory, REPLICA_TIMEOUT_MS),
    );
    return new Coordinator({
      local: replica(from),
      localNodeId: from,
      replicasFor: () => peers,
      timers: net.sched,
      random: seededRandom(seed),
      reads,
    });
  };
  /** Requests of `kind` sent to `to` so far. */
  const asked = (to: string, kind: "read" | "store") => net.sent({ to, kind, answer: false }).length;
  return { net, sched: net.sched, replica, coordinator, asked };
}

const NEVER_FULL: ReadPolicy = { hedgeMs: 50, fullReadFraction: 0 };

/** The write reached a and c only: b is behind. */
async function writtenToAandC(replica: (id: string) => Replica): Promise<void> {
  await replica("a").coordinate(KEY, EMPTY_VECTOR, value("v1"));
  await replica("c").merge(KEY, await replica("a").read(KEY));
}

describe("Coordinator reads, message by message", () => {
  test("a asks its own replica and b; b, behind, answers empty; the read is ok; b is repaired by one store", async () => {
    const { net, replica, coordinator } = cluster(["a", "b", "c"]);
    await writtenToAandC(replica);
    const read = coordinator("a", NEVER_FULL, 2).get(KEY, 2, 1000);
    await net.settle();
    // Its own replica needs no message; of the others, the random pick asks b.
    assert.deepEqual(net.pending(), ["a -> b read k"]);
    assert.deepEqual(await net.step(), ["a -> b read k"]);
    assert.deepEqual(net.pending(), ["b --> a read"]);
    assert.equal(await net.settled(read), false, "one answer of the two needed");
    await net.step();
    assert.ok(await net.settled(read));
    const out = await read;
    assert.equal(out.kind, "ok");
    if (out.kind === "ok") {
      assert.deepEqual(texts(out.siblings), ["v1"]);
      assert.equal(out.replied, 2);
    }
    // Read repair: both asked have answered, and b's answer lacked v1: the merged set goes to b.
    assert.deepEqual(net.pending(), ["a -> b store k"]);
    await net.step();
    assert.deepEqual(net.pending(), ["b --> a stored"]);
    await net.step();
    assert.deepEqual(texts(await replica("b").read(KEY)), ["v1"]);
    assert.deepEqual(net.pending(), []);
    assert.deepEqual(net.sent({ to: "c" }), [], "c was never asked");
  });

  test("a asks b, whose read is lost; at hedgeMs it asks c, whose answer makes the quorum; b is not repaired", async () => {
    const { net, replica, coordinator, asked } = cluster(["a", "b", "c"]);
    await writtenToAandC(replica);
    const read = coordinator("a", NEVER_FULL, 2).get(KEY, 2, 1000);
    await net.settle();
    assert.deepEqual(net.drop({ to: "b" }), ["a -> b read k"]);
    await net.elapse(49);
    assert.deepEqual(net.pending(), []);
    assert.equal(await net.settled(read), false);
    // hedgeMs without r answers: the rest are asked.
    await net.elapse(1);
    assert.deepEqual(net.pending(), ["a -> c read k"]);
    await net.step();
    assert.deepEqual(net.pending(), ["c --> a read"]);
    await net.step();
    assert.ok(await net.settled(read));
    const out = await read;
    assert.equal(out.kind, "ok");
    if (out.kind === "ok") assert.deepEqual([texts(out.siblings), out.replied], [["v1"], 2]);
    // b never answered (its read times out): a repair goes only to a replica whose answer lacked something.
    await net.elapse(REPLICA_TIMEOUT_MS);
    assert.deepEqual(net.pending(), []);
    assert.equal(asked("b", "store") + asked("c", "store"), 0);
    assert.deepEqual(
      net.sent({ to: "b" }).map((s) => [s.line, s.fate]),
      [["a -> b read k", "lost"]],
    );
  });
});

describe("Coordinator reads", () => {
  test("a read asks r replicas, its own first, and repairs the one it asked that was behind", async () => {
    const { net, replica, coordinator, asked } = cluster(["a", "b", "c"]);
    await writtenToAandC(replica);
    const co = coordinator("b", NEVER_FULL);
    const out = await net.runUntilSettled(co.get(KEY, 2, 1000), 5000);
    assert.equal(out.kind, "ok");
    if (out.kind === "ok")
      assert.deepEqual(
        out.siblings.map((s) => Buffer.from(s.value.data).toString()),
        ["v1"],
      );
    // b (its own replica, first) and one other were asked.
    assert.equal(asked("a", "read") + asked("c", "read"), 1);
    await net.runFor(2000);
    assert.equal((await replica("b").read(KEY)).length, 1, "b was repaired after the read");
  });

  test("a replica that fails is replaced at once; a silent one after hedgeMs", async () => {
    const { net, sched, coordinator, asked } = cluster(["a", "b", "c"]);
    net.crash("b");
    const t0 = sched.now();
    let out = await net.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 2, 1000), 5000);
    assert.equal(out.kind, "ok");
    assert.ok(sched.now() - t0 < 10, "no wait for a replica known to fail");
    assert.equal(asked("c", "read"), 1);

    // A silent replica costs hedgeMs when it is the one asked, and nothing when the other is.
    net.restart("b");
    net.isolate("b");
    const took: number[] = [];
    const co = coordinator("a", NEVER_FULL, 5);
    for (let i = 0; i < 20; i++) {
      const t1 = sched.now();
      out = await net.runUntilSettled(co.get(KEY, 2, 1000), 5000);
      assert.equal(out.kind, "ok");
      took.push(sched.now() - t1);
    }
    assert.ok(
      Math.max(...took) >= 50 && Math.max(...took) < 60,
      `answered after the hedge, not the timeout: ${took}`,
    );
    assert.ok(Math.min(...took) < 10, `and at once when the silent replica was not asked first: ${took}`);
  });

  test("fewer than r answers by the deadline: unavailable, with how many replied", async () => {
    const { net, coordinator } = cluster(["a", "b", "c"]);
    net.isolate("b");
    net.isolate("c");
    const out = await net.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 2, 300), 5000);
    assert.deepEqual(out, { kind: "unavailable", needed: 2, replied: 1 });
  });

  test("fullReadFraction 1 asks every replica; about that share of reads do", async () => {
    const { net, coordinator, asked } = cluster(["a", "b", "c"]);
    await net.runUntilSettled(coordinator("a", { hedgeMs: 50, fullReadFraction: 1 }).get(KEY, 2, 1000), 5000);
    assert.deepEqual([asked("b", "read"), asked("c", "read")], [1, 1]);
    const co = coordinator("a", { hedgeMs: 50, fullReadFraction: 0.1 }, 7);
    let full = 0;
    let toB = 0;
    for (let i = 0; i < 1000; i++) {
      const before = [asked("b", "read"), asked("c", "read")];
      await net.runUntilSettled(co.get(KEY, 2, 1000), 5000);
      const now = [asked("b", "read") - before[0]!, asked("c", "read") - before[1]!];
      if (now[0]! + now[1]! === 2) full++;
      else if (now[0] === 1) toB++;
    }
    assert.ok(full > 60 && full < 140, `${full} of 1000 reads asked all three`);
    // The other reads spread over both remote replicas.
    assert.ok(toB > 350 && toB < 550, `${toB} of ${1000 - full} partial reads asked b`);
  });
});

describe("Coordinator writes", () => {
  test("the local durable copy counts toward w; the set reaches every replica", async () => {
    const { net, replica, coordinator } = cluster(["a", "b", "c"]);
    net.isolate("b");
    const out = await net.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500),
      5000,
    );
    assert.equal(out.kind, "ok");
    if (out.kind === "ok") assert.equal(out.acked, 2);
    assert.equal((await replica("c").read(KEY)).length, 1);
    assert.deepEqual(
      net.sent({ answer: false }).map((s) => [s.line, s.fate]),
      [
        ["a -> b store k", "lost"],
        ["a -> c store k", "delivered"],
      ],
    );
    net.isolate("c");
    const late = await net.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("w"), 2, 500),
      5000,
    );
    assert.deepEqual(late, { kind: "unavailable", needed: 2, acked: 1 });
  });
});

describe("Coordinator: a key with too many writes waiting", () => {
  test("is refused at once with `overloaded`, nothing versioned or sent; what was admitted runs on", async () => {
    const net = new ProtocolNet();
    const sched = net.sched;
    const mem = new MemoryFileSystem();
    await mem.mkdirp("/db");
    const disk = new SlowDisk(mem, sched, seededRandom(5));
    const engine = await sched.runUntilSettled(
      LsmEngine.open({ dir: "/db", fs: disk, options: { durability: "fsync", walSyncOnEventLoop: false } }),
      10_000,
    );
    const local = new Replica(engine, "a", 64, new KeyLock({ waitersMax: 2 }));
    const { coordinator, asked } = cluster(["a", "b", "c"], { a: local }, net);
    const co = coordinator("a", NEVER_FULL);
    disk.stalled = true;
    // The first write is acknowledged by b and c; this node's own copy waits for the disk, holding the key.
    const first = await net.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w1"), 2, 1000), 1000);
    assert.equal(first.kind, "ok");
    const waiting = [
      co.write(KEY, EMPTY_VECTOR, value("w2"), 2, 1000),
      co.write(KEY, EMPTY_VECTOR, value("w3"), 2, 1000),
    ];
    await net.runFor(10);
    const t0 = sched.now();
    const refused = await net.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w4"), 2, 1000), 1000);
    assert.deepEqual(refused, { kind: "overloaded", limit: "waiters_per_key", max: 2 });
    assert.equal(sched.now(), t0, "refused without waiting");
    assert.deepEqual(
      [asked("b", "store"), asked("c", "store")],
      [1, 1],
      "nothing of the refused write was sent",
    );
    // The admitted ones time out while the disk hangs, then give up their turn: nothing more is versioned.
    assert.deepEqual(await net.runUntilSettled(Promise.all(waiting), 5000), [
      { kind: "unavailable", needed: 2, acked: 0 },
      { kind: "unavailable", needed: 2, acked: 0 },
    ]);
    assert.deepEqual([asked("b", "store"), asked("c", "store")], [1, 1], "nor of the ones that gave up");
    disk.stalled = false;
    await net.runFor(1000);
    assert.deepEqual(texts(await local.read(KEY)), ["w1"]);
    const again = await net.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w5"), 2, 1000), 5000);
    assert.equal(again.kind, "ok");
    await sched.runUntilSettled(engine.close(), 10_000);
  });
});

describe("Coordinator invariants", () => {
  test("r or w below 1 is a bug of the caller (the API checks them): an InvariantError, not an outcome", async () => {
    const { net, coordinator } = cluster(["a", "b", "c"]);
    const co = coordinator("a", NEVER_FULL);
    await assert.rejects(co.get(KEY, 0, 1000), { code: "ERR_INVARIANT" });
    await assert.rejects(co.write(KEY, EMPTY_VECTOR, value("v"), 0, 1000), { code: "ERR_INVARIANT" });
    await assert.rejects(co.write(KEY, EMPTY_VECTOR, value("v"), 1.5, 1000), { code: "ERR_INVARIANT" });
    assert.deepEqual(net.sent(), [], "nothing was sent");
  });

  test("an ok write whose written sibling is not in its set, or not of this node's actor, is caught", async () => {
    const { net, replica, coordinator } = cluster(["a", "b", "c"]);
    const local = replica("a");
    const v = (actor: string) => update([], EMPTY_VECTOR, actor, value("v"));
    // A replica whose versioning is broken: the written sibling is missing from the set sent out.
    const first = v("a");
    const lost = update(first.set, EMPTY_VECTOR, "a", value("w"));
    local.version = async () => ({
      kind: "ok",
      set: first.set,
      written: lost.written,
      durable: Promise.resolve(),
    });
    await assert.rejects(
      net.runUntilSettled(coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500), 5000),
      {
        code: "ERR_INVARIANT",
        message: /the written sibling 2@a is not in its set \[1@a\]/,
      },
    );
    const other = update([], EMPTY_VECTOR, "b", value("v"));
    local.version = async () => ({
      kind: "ok",
      set: other.set,
      written: other.written,
      durable: Promise.resolve(),
    });
    await assert.rejects(
      net.runUntilSettled(coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500), 5000),
      {
        code: "ERR_INVARIANT",
        message: /coordinated by a has the dot 1@b/,
      },
    );
  });
});

describe("Coordinator: a quorum known to be out of reach fails at once, with true counts", () => {
  test("a read needing more replicas than can answer says how many did (not 0), without waiting", async () => {
    const { net, sched, coordinator } = cluster(["a", "b", "c"]);
    net.crash("c");
    const t0 = sched.now();
    const out = await net.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 3, 1000), 5000);
    assert.deepEqual(out, { kind: "unavailable", needed: 3, replied: 2 });
    assert.ok(sched.now() - t0 < 10, `answered after ${sched.now() - t0} ms, not at the timeout`);
  });

  test("replicas still silent when the quorum is out of reach delay the 503 by a short grace only", async () => {
    const { net, sched, coordinator } = cluster(["a", "b", "c"]);
    net.crash("b");
    net.isolate("c");
    const t0 = sched.now();
    const out = await net.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 3, 5000), 10_000);
    assert.deepEqual(out, { kind: "unavailable", needed: 3, replied: 1 });
    const took = sched.now() - t0;
    assert.ok(took >= 50 && took < 100, `answered after ${took} ms: the grace, not the 5 s timeout`);
  });

  test("a write whose other replicas are down counts its own durable copy in the 503", async () => {
    const { net, sched, replica, coordinator } = cluster(["a", "b", "c"]);
    net.crash("b");
    net.crash("c");
    // The local copy becomes durable 3 ms after the others have failed, as a disk's fsync would.
    const local = replica("a");
    const version = local.version.bind(local);
    local.version = (async (...args: Parameters<typeof version>) => {
      const res = await version(...args);
      if (res.kind !== "ok") return res;
      const durable = res.durable.then(() => new Promise<void>((ok) => sched.after(3, ok)));
      return { ...res, durable };
    }) as typeof local.version;
    const t0 = sched.now();
    const out = await net.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 1000),
      5000,
    );
    assert.deepEqual(out, { kind: "unavailable", needed: 2, acked: 1 });
    assert.ok(sched.now() - t0 < 10, `answered after ${sched.now() - t0} ms, not at the timeout`);
  });
});

describe("remotePeer (replication over the transport)", () => {
  test("a timed-out read or store is reported (the replica-timeout metric); other failures are not", async () => {
    const net = new ProtocolNet();
    const transport = net.node("a");
    net.node("x", serveReplica(new Replica(new MemoryEngine(), "x", 64)));
    const dir = { addressOf: () => "x", reachable: () => true, contacted: () => undefined };
    const seen: string[] = [];
    const peer = remotePeer("b", transport, dir, 100, (kind) => seen.push(kind));
    // The read is lost on the wire: 100 ms later it times out.
    const read = peer.read(KEY);
    await net.settle();
    assert.deepEqual(net.drop({ to: "x" }), ["a -> x read k"]);
    await net.elapse(99);
    assert.equal(await net.settled(read), false);
    await net.elapse(1);
    await assert.rejects(read, { code: "ERR_TIMEOUT" });
    net.isolate("x");
    await assert.rejects(net.runUntilSettled(peer.store(KEY, []), 1000), { code: "ERR_TIMEOUT" });
    assert.deepEqual(seen, ["read", "store"]);
    // x is down: the read is refused at once, which is no timeout.
    net.heal();
    net.crash("x");
    const refused = assert.rejects(peer.read(KEY), { code: "ERR_UNREACHABLE" });
    await net.step();
    assert.deepEqual(net.pending(), ["x --> a ERR_UNREACHABLE"]);
    await net.step();
    await refused;
    assert.deepEqual(seen, ["read", "store"]);
  });
});
