/**
 * Hint delivery (src/replication/hint-delivery.ts) on virtual time: hints go to their target once it is
 * alive, are deleted only when acknowledged and unchanged, are paced by the byte rate, expire past the
 * window, and go to the key's current replicas when their target left.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { localPeer, type ReplicaPeer } from "../../src/replication/coordinator.js";
import { HintDelivery } from "../../src/replication/hint-delivery.js";
import { HintStore } from "../../src/replication/hints.js";
import { Replica } from "../../src/replication/replica.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";

const set = (actor: string, text: string): StoredSibling[] =>
  update([], EMPTY_VECTOR, actor, {
    data: Buffer.from(text),
    contentType: "t",
    deleted: false,
    writtenAtMs: 0,
  }).set;
const texts = (s: readonly StoredSibling[]) => s.map((x) => Buffer.from(x.value.data).toString()).sort();
const key = (i: number) => Buffer.from(`k${String(i).padStart(3, "0")}`);

function setup(opts: { rate?: number; windowMs?: number } = {}) {
  const sched = new VirtualScheduler();
  const hints = new HintStore(new MemoryEngine(), sched, {
    maxBytesPerTarget: 1 << 30,
    windowMs: opts.windowMs ?? 3_600_000,
  });
  const replicas = new Map(["b", "c", "d"].map((id) => [id, new Replica(new MemoryEngine(), `${id}.1`, 64)]));
  const alive = new Set(["c", "d"]);
  const gone = new Set<string>();
  const failing = new Set<string>();
  const stores: string[] = [];
  const peer = (id: string): ReplicaPeer => {
    const inner = localPeer(id, replicas.get(id)!);
    return {
      nodeId: id,
      read: inner.read,
      store: (k, s, h, f) => {
        stores.push(id);
        if (failing.has(id)) return Promise.reject(new Error(`${id} refused`));
        return new Promise((resolve, reject) =>
          sched.after(1, () => inner.store(k, s, h, f).then(resolve, reject)),
        );
      },
    };
  };
  const dropped: string[] = [];
  const delivery = new HintDelivery({
    selfId: "a",
    hints,
    peer,
    alive: (id) => alive.has(id),
    gone: (id) => gone.has(id),
    replicasOf: () => ["c", "d"],
    timers: sched,
    clock: sched,
    maxBytesPerSecond: opts.rate ?? 1 << 30,
    intervalMs: 1000,
    onDropped: (t, why) => dropped.push(`${t}:${why}`),
  });
  return { sched, hints, replicas, alive, gone, failing, stores, delivery, dropped };
}

describe("HintDelivery", () => {
  test("waits while the target is down, delivers once it is up, and deletes what was acknowledged", async () => {
    const { sched, hints, replicas, alive, delivery } = setup();
    for (let i = 0; i < 10; i++) await hints.put("b", key(i), set("a.1", `v${i}`));
    delivery.start();
    await sched.runFor(3000);
    assert.equal(hints.backlog().get("b")?.count, 10);
    assert.equal(delivery.progress.get("b")?.state, "waiting");
    alive.add("b");
    delivery.kick();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 5000));
    for (let i = 0; i < 10; i++) assert.deepEqual(texts(await replicas.get("b")!.read(key(i))), [`v${i}`]);
    const p = delivery.progress.get("b")!;
    assert.equal(p.delivered, 10);
    assert.equal(p.state, "idle");
    await sched.runUntilSettled(delivery.stop(), 1000);
  });

  test("a hint that changed while it was sent stays for the next round; delivering twice changes nothing", async () => {
    const { sched, hints, replicas, alive, delivery } = setup();
    alive.add("b");
    await hints.put("b", key(1), set("a.1", "first"));
    delivery.kick();
    // While the store is on its way, a newer hint for the same key arrives.
    await sched.runFor(0);
    await hints.put("b", key(1), set("a.2", "second"));
    await sched.runFor(10);
    assert.equal(hints.backlog().get("b")?.count, 1, "the newer hint was not deleted with the older");
    delivery.kick();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 5000));
    assert.deepEqual(texts(await replicas.get("b")!.read(key(1))), ["first", "second"]);
  });

  test("paced: bytes per second at most", async () => {
    const { sched, hints, alive, delivery } = setup({ rate: 2000 });
    alive.add("b");
    for (let i = 0; i < 40; i++) await hints.put("b", key(i), set("a.1", "x".repeat(100)));
    const total = hints.backlog().get("b")!.bytes;
    const t0 = sched.now();
    delivery.kick();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 60_000));
    const took = sched.now() - t0;
    // A full bucket (one second's worth) goes at once; the rest at the rate.
    assert.ok(took >= ((total - 2000) / 2000) * 1000 * 0.8, `${total} bytes in ${took} ms`);
  });

  test("a failing target: counted, the window halves, the rest waits for the next round", async () => {
    const { sched, hints, alive, failing, delivery } = setup();
    alive.add("b");
    failing.add("b");
    for (let i = 0; i < 5; i++) await hints.put("b", key(i), set("a.1", `v${i}`));
    delivery.kick();
    await sched.runFor(50);
    const p = delivery.progress.get("b")!;
    assert.ok(p.failed >= 1);
    assert.match(p.lastError ?? "", /refused/);
    assert.equal(p.window, 2);
    assert.equal(hints.backlog().get("b")?.count, 5);
    failing.delete("b");
    delivery.start();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 5000));
  });

  test("a target that stays down: its hints past the window are dropped all the same", async () => {
    const { sched, hints, delivery, dropped } = setup({ windowMs: 10_000 });
    await hints.put("b", key(1), set("a.1", "old"));
    await sched.runFor(5_000);
    await hints.put("b", key(2), set("a.1", "newer"));
    delivery.start();
    assert.ok(await sched.runUntil(() => dropped.length === 1, 20_000));
    assert.deepEqual(dropped, ["b:expired"]);
    assert.equal(hints.backlog().get("b")?.count, 1);
    assert.ok(await sched.runUntil(() => dropped.length === 2, 120_000));
    assert.equal(hints.backlog().size, 0);
    await sched.runUntilSettled(delivery.stop(), 1000);
  });

  test("hints past the window are dropped, counted; a departed target's go to the key's replicas", async () => {
    const { sched, hints, replicas, alive, gone, dropped, delivery } = setup({ windowMs: 10_000 });
    await hints.put("b", key(1), set("a.1", "old"));
    await sched.runFor(20_000);
    await hints.put("b", key(2), set("a.1", "new"));
    alive.add("b");
    delivery.kick();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 5000));
    assert.deepEqual(dropped, ["b:expired"]);
    assert.deepEqual(await replicas.get("b")!.read(key(1)), []);
    assert.deepEqual(texts(await replicas.get("b")!.read(key(2))), ["new"]);
    // A target that left: its hints go to the key's current replicas (c, d), then they are discarded.
    await hints.put("x", key(3), set("a.1", "for x"));
    gone.add("x");
    delivery.kick();
    assert.ok(await sched.runUntil(() => hints.backlog().size === 0, 5000));
    assert.deepEqual(texts(await replicas.get("c")!.read(key(3))), ["for x"]);
    assert.deepEqual(texts(await replicas.get("d")!.read(key(3))), ["for x"]);
    assert.deepEqual(dropped, ["b:expired", "x:removed"]);
  });
});
