/**
 * The coordinator (src/replication/coordinator.ts) over real replicas (Replica on MemoryEngine), reached
 * through peers that answer after a delay of virtual time or not at all, as a network would: which
 * replicas a read asks (ReadPolicy), the speculative retry, read repair of the replicas asked, and the
 * write's quorum counting the coordinator's own durable copy.
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
import { Replica } from "../../src/replication/replica.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { SlowDisk } from "../../src/sim/slow-disk.js";
import { LsmEngine, MemoryEngine, MemoryFileSystem } from "../../src/storage/index.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredValue } from "../../src/versioning/object-codec.js";

const KEY = Buffer.from("k");
const value = (text: string): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 0,
});

const texts = (set: readonly { value: StoredValue }[]): string[] =>
  set.map((x) => Buffer.from(x.value.data).toString()).sort();

interface Node {
  readonly id: string;
  readonly replica: Replica;
  /** How this node answers: after `delayMs` of virtual time, or never ("down" fails at once). */
  mode: { kind: "ok"; delayMs: number } | { kind: "silent" } | { kind: "down" };
  reads: number;
  stores: number;
}

function cluster(ids: string[], sched: VirtualScheduler) {
  const nodes = new Map<string, Node>(
    ids.map((id) => [
      id,
      {
        id,
        replica: new Replica(new MemoryEngine(), id, 64),
        mode: { kind: "ok", delayMs: 1 },
        reads: 0,
        stores: 0,
      },
    ]),
  );
  const delayed = <T>(n: Node, fn: () => Promise<T>): Promise<T> => {
    const m = n.mode;
    if (m.kind === "down") return Promise.reject(new Error(`${n.id} is down`));
    if (m.kind === "silent") return new Promise<T>(() => undefined);
    return new Promise<T>((resolve, reject) => sched.after(m.delayMs, () => fn().then(resolve, reject)));
  };
  /** A peer as node `from` sees node `n`: its own replica directly, the others through the "network". */
  const peer = (from: string, n: Node): ReplicaPeer => {
    if (n.id === from) return localPeer(n.id, n.replica);
    return {
      nodeId: n.id,
      read: (key) => {
        n.reads++;
        return delayed(n, () => n.replica.read(key));
      },
      store: (key, set) => {
        n.stores++;
        return delayed(n, async () => {
          await n.replica.merge(key, set);
        });
      },
    };
  };
  const coordinator = (from: string, reads: ReadPolicy, seed = 1) =>
    new Coordinator({
      local: nodes.get(from)!.replica,
      localNodeId: from,
      replicasFor: () => ids.map((id) => peer(from, nodes.get(id)!)),
      timers: sched,
      random: seededRandom(seed),
      reads,
    });
  return { nodes, coordinator };
}

const NEVER_FULL: ReadPolicy = { hedgeMs: 50, fullReadFraction: 0 };

describe("Coordinator reads", () => {
  test("a read asks r replicas, its own first, and repairs the one it asked that was behind", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    // The write reached a and c only.
    await nodes.get("a")!.replica.coordinate(KEY, EMPTY_VECTOR, value("v1"));
    const set = await nodes.get("a")!.replica.read(KEY);
    await nodes.get("c")!.replica.merge(KEY, set);
    const co = coordinator("b", NEVER_FULL);
    const out = await sched.runUntilSettled(co.get(KEY, 2, 1000), 5000);
    assert.equal(out.kind, "ok");
    if (out.kind === "ok")
      assert.deepEqual(
        out.siblings.map((s) => Buffer.from(s.value.data).toString()),
        ["v1"],
      );
    // b (its own replica, first) and one other were asked.
    assert.equal(nodes.get("a")!.reads + nodes.get("c")!.reads, 1);
    await sched.runFor(2000);
    assert.equal((await nodes.get("b")!.replica.read(KEY)).length, 1, "b was repaired after the read");
  });

  test("a replica that fails is replaced at once; a silent one after hedgeMs", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("b")!.mode = { kind: "down" };
    const t0 = sched.now();
    let out = await sched.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 2, 1000), 5000);
    assert.equal(out.kind, "ok");
    assert.ok(sched.now() - t0 < 10, "no wait for a replica known to fail");
    assert.equal(nodes.get("c")!.reads, 1);

    // A silent replica costs hedgeMs when it is the one asked, and nothing when the other is.
    nodes.get("b")!.mode = { kind: "silent" };
    const took: number[] = [];
    const co = coordinator("a", NEVER_FULL, 5);
    for (let i = 0; i < 20; i++) {
      const t1 = sched.now();
      out = await sched.runUntilSettled(co.get(KEY, 2, 1000), 5000);
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
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("b")!.mode = { kind: "silent" };
    nodes.get("c")!.mode = { kind: "silent" };
    const out = await sched.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 2, 300), 5000);
    assert.deepEqual(out, { kind: "unavailable", needed: 2, replied: 1 });
  });

  test("fullReadFraction 1 asks every replica; about that share of reads do", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    await sched.runUntilSettled(
      coordinator("a", { hedgeMs: 50, fullReadFraction: 1 }).get(KEY, 2, 1000),
      5000,
    );
    assert.deepEqual([nodes.get("b")!.reads, nodes.get("c")!.reads], [1, 1]);
    const co = coordinator("a", { hedgeMs: 50, fullReadFraction: 0.1 }, 7);
    let full = 0;
    let toB = 0;
    for (let i = 0; i < 1000; i++) {
      const before = [nodes.get("b")!.reads, nodes.get("c")!.reads];
      await sched.runUntilSettled(co.get(KEY, 2, 1000), 5000);
      const asked = [nodes.get("b")!.reads - before[0]!, nodes.get("c")!.reads - before[1]!];
      if (asked[0]! + asked[1]! === 2) full++;
      else if (asked[0] === 1) toB++;
    }
    assert.ok(full > 60 && full < 140, `${full} of 1000 reads asked all three`);
    // The other reads spread over both remote replicas.
    assert.ok(toB > 350 && toB < 550, `${toB} of ${1000 - full} partial reads asked b`);
  });
});

describe("Coordinator writes", () => {
  test("the local durable copy counts toward w; the set reaches every replica", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("b")!.mode = { kind: "silent" };
    const out = await sched.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500),
      5000,
    );
    assert.equal(out.kind, "ok");
    if (out.kind === "ok") assert.equal(out.acked, 2);
    assert.equal((await nodes.get("c")!.replica.read(KEY)).length, 1);
    nodes.get("c")!.mode = { kind: "silent" };
    const late = await sched.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("w"), 2, 500),
      5000,
    );
    assert.deepEqual(late, { kind: "unavailable", needed: 2, acked: 1 });
  });
});

describe("Coordinator: a key with too many writes waiting", () => {
  test("is refused at once with `overloaded`, nothing versioned or sent; what was admitted runs on", async () => {
    const sched = new VirtualScheduler();
    const mem = new MemoryFileSystem();
    await mem.mkdirp("/db");
    const disk = new SlowDisk(mem, sched, seededRandom(5));
    const engine = await sched.runUntilSettled(
      LsmEngine.open({ dir: "/db", fs: disk, options: { durability: "fsync", walSyncOnEventLoop: false } }),
      10_000,
    );
    const local = new Replica(engine, "a", 64, new KeyLock({ waitersMax: 2 }));
    const others = ["b", "c"].map((id) => ({
      id,
      replica: new Replica(new MemoryEngine(), id, 64),
      stores: 0,
    }));
    const co = new Coordinator({
      local,
      localNodeId: "a",
      replicasFor: () => [
        localPeer("a", local),
        ...others.map(
          (o): ReplicaPeer => ({
            nodeId: o.id,
            read: (key) => o.replica.read(key),
            store: async (key, set) => {
              o.stores++;
              await o.replica.merge(key, set);
            },
          }),
        ),
      ],
      timers: sched,
      random: seededRandom(1),
      reads: NEVER_FULL,
    });
    disk.stalled = true;
    // The first write is acknowledged by b and c; this node's own copy waits for the disk, holding the key.
    const first = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w1"), 2, 1000), 1000);
    assert.equal(first.kind, "ok");
    const waiting = [
      co.write(KEY, EMPTY_VECTOR, value("w2"), 2, 1000),
      co.write(KEY, EMPTY_VECTOR, value("w3"), 2, 1000),
    ];
    await sched.runFor(10);
    const t0 = sched.now();
    const refused = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w4"), 2, 1000), 1000);
    assert.deepEqual(refused, { kind: "overloaded", limit: "waiters_per_key", max: 2 });
    assert.equal(sched.now(), t0, "refused without waiting");
    assert.deepEqual(
      others.map((o) => o.stores),
      [1, 1],
      "nothing of the refused write was sent",
    );
    // The admitted ones time out while the disk hangs, then give up their turn: nothing more is versioned.
    assert.deepEqual(await sched.runUntilSettled(Promise.all(waiting), 5000), [
      { kind: "unavailable", needed: 2, acked: 0 },
      { kind: "unavailable", needed: 2, acked: 0 },
    ]);
    disk.stalled = false;
    await sched.runFor(1000);
    assert.deepEqual(texts(await local.read(KEY)), ["w1"]);
    const again = await sched.runUntilSettled(co.write(KEY, EMPTY_VECTOR, value("w5"), 2, 1000), 5000);
    assert.equal(again.kind, "ok");
    await sched.runUntilSettled(engine.close(), 10_000);
  });
});

describe("Coordinator invariants", () => {
  test("r or w below 1 is a bug of the caller (the API checks them): an InvariantError, not an outcome", async () => {
    const sched = new VirtualScheduler();
    const { coordinator } = cluster(["a", "b", "c"], sched);
    const co = coordinator("a", NEVER_FULL);
    await assert.rejects(co.get(KEY, 0, 1000), { code: "ERR_INVARIANT" });
    await assert.rejects(co.write(KEY, EMPTY_VECTOR, value("v"), 0, 1000), { code: "ERR_INVARIANT" });
    await assert.rejects(co.write(KEY, EMPTY_VECTOR, value("v"), 1.5, 1000), { code: "ERR_INVARIANT" });
  });

  test("an ok write whose written sibling is not in its set, or not of this node's actor, is caught", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    const local = nodes.get("a")!.replica;
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
      sched.runUntilSettled(coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500), 5000),
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
      sched.runUntilSettled(coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 500), 5000),
      {
        code: "ERR_INVARIANT",
        message: /coordinated by a has the dot 1@b/,
      },
    );
  });
});

describe("Coordinator: a quorum known to be out of reach fails at once, with true counts", () => {
  test("a read needing more replicas than can answer says how many did (not 0), without waiting", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("c")!.mode = { kind: "down" };
    const t0 = sched.now();
    const out = await sched.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 3, 1000), 5000);
    assert.deepEqual(out, { kind: "unavailable", needed: 3, replied: 2 });
    assert.ok(sched.now() - t0 < 10, `answered after ${sched.now() - t0} ms, not at the timeout`);
  });

  test("replicas still silent when the quorum is out of reach delay the 503 by a short grace only", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("b")!.mode = { kind: "down" };
    nodes.get("c")!.mode = { kind: "silent" };
    const t0 = sched.now();
    const out = await sched.runUntilSettled(coordinator("a", NEVER_FULL).get(KEY, 3, 5000), 10_000);
    assert.deepEqual(out, { kind: "unavailable", needed: 3, replied: 1 });
    const took = sched.now() - t0;
    assert.ok(took >= 50 && took < 100, `answered after ${took} ms: the grace, not the 5 s timeout`);
  });

  test("a write whose other replicas are down counts its own durable copy in the 503", async () => {
    const sched = new VirtualScheduler();
    const { nodes, coordinator } = cluster(["a", "b", "c"], sched);
    nodes.get("b")!.mode = { kind: "down" };
    nodes.get("c")!.mode = { kind: "down" };
    // The local copy becomes durable 3 ms after the others have failed, as a disk's fsync would.
    const local = nodes.get("a")!.replica;
    const version = local.version.bind(local);
    local.version = (async (...args: Parameters<typeof version>) => {
      const res = await version(...args);
      if (res.kind !== "ok") return res;
      const durable = res.durable.then(() => new Promise<void>((ok) => sched.after(3, ok)));
      return { ...res, durable };
    }) as typeof local.version;
    const t0 = sched.now();
    const out = await sched.runUntilSettled(
      coordinator("a", NEVER_FULL).write(KEY, EMPTY_VECTOR, value("v"), 2, 1000),
      5000,
    );
    assert.deepEqual(out, { kind: "unavailable", needed: 2, acked: 1 });
    assert.ok(sched.now() - t0 < 10, `answered after ${sched.now() - t0} ms, not at the timeout`);
  });
});

describe("remotePeer (replication over the transport)", () => {
  test("a timed-out read or store is reported (the replica-timeout metric); other failures are not", async () => {
    const { remotePeer } = await import("../../src/replication/remote-replica.js");
    const { TransportError } = await import("../../src/transport/transport.js");
    let next: Error = new TransportError("ERR_TIMEOUT", "read to x timed out");
    const transport = { request: () => Promise.reject(next) } as unknown as Parameters<typeof remotePeer>[1];
    const dir = { addressOf: () => "x:1", reachable: () => true, contacted: () => undefined };
    const seen: string[] = [];
    const peer = remotePeer("b", transport, dir, 100, (kind) => seen.push(kind));
    await assert.rejects(peer.read(KEY));
    await assert.rejects(peer.store(KEY, []));
    next = new TransportError("ERR_UNREACHABLE", "refused");
    await assert.rejects(peer.read(KEY));
    assert.deepEqual(seen, ["read", "store"]);
  });
});
