/**
 * The key lock's bounds (src/replication/key-lock.ts): waiters per key and keys locked at once. Past
 * either, acquire fails at once with ERR_OVERLOADED; what was admitted still runs, in order. A peer's
 * store refused by the bound reaches the sender over the TCP transport as ERR_OVERLOADED. (Mutual
 * exclusion itself is tested with the replica: test/versioning/replica.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  KeyLock,
  KeyLockOverloadedError,
  keyLockKeysMax,
  keyLockWaitersMax,
} from "../../src/replication/key-lock.js";
import { Replica } from "../../src/replication/replica.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { SlowDisk } from "../../src/sim/slow-disk.js";
import { LsmEngine, MemoryFileSystem } from "../../src/storage/index.js";
import { TcpTransport } from "../../src/transport/tcp-transport.js";
import { TransportError } from "../../src/transport/transport.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import { decodeSiblings, encodeSiblings } from "../../src/versioning/object-codec.js";

const k = (s: string) => Buffer.from(s);

/** Lets every pending promise continuation run (a macrotask turn). */
const drain = () => new Promise<void>((r) => setImmediate(r));

/** Whether `p` has settled after one turn, and how. */
async function settledNow<T>(p: Promise<T>): Promise<{ ok: T } | { err: unknown } | undefined> {
  let out: { ok: T } | { err: unknown } | undefined;
  p.then(
    (ok) => {
      out = { ok };
    },
    (err: unknown) => {
      out = { err };
    },
  );
  await drain();
  return out;
}

describe("KeyLock bounds", () => {
  test("the defaults", () => {
    assert.equal(keyLockWaitersMax, 256);
    assert.equal(keyLockKeysMax, 16_384);
  });

  test("a key takes waitersMax waiters; the next is refused at once; other keys are not affected", async () => {
    const lock = new KeyLock({ waitersMax: 3 });
    const release = await lock.acquire(k("hot"));
    const order: number[] = [];
    const waiters = [1, 2, 3].map((i) =>
      lock.acquire(k("hot")).then((rel) => {
        order.push(i);
        return rel;
      }),
    );
    assert.equal(lock.waiting(k("hot")), 3);
    const refused = await settledNow(lock.acquire(k("hot")));
    assert.ok(refused !== undefined && "err" in refused, "refused without waiting");
    assert.ok(refused.err instanceof KeyLockOverloadedError);
    assert.equal(refused.err.code, "ERR_OVERLOADED");
    assert.equal(refused.err.limit, "waiters_per_key");
    assert.equal(refused.err.max, 3);
    // Another key is free.
    const other = await settledNow(lock.acquire(k("cold")));
    assert.ok(other !== undefined && "ok" in other);
    other.ok();
    // The admitted waiters run in order once the key is released; then there is room again.
    release();
    for (const w of waiters) (await w)();
    assert.deepEqual(order, [1, 2, 3]);
    assert.equal(lock.size, 0);
    (await lock.acquire(k("hot")))();
  });

  test("at most keysMax keys are locked; a waiter on a locked key is still taken", async () => {
    const lock = new KeyLock({ keysMax: 2, waitersMax: 5 });
    const r1 = await lock.acquire(k("a"));
    const r2 = await lock.acquire(k("b"));
    await assert.rejects(lock.acquire(k("c")), { code: "ERR_OVERLOADED", limit: "keys_locked", max: 2 });
    const waiter = lock.acquire(k("a"));
    r1();
    (await waiter)();
    assert.equal(lock.size, 1);
    const r3 = await lock.acquire(k("c"));
    r2();
    r3();
    assert.equal(lock.size, 0);
  });

  test("a release called twice releases once", async () => {
    const lock = new KeyLock({ waitersMax: 2 });
    const r1 = await lock.acquire(k("x"));
    let second = false;
    const w = lock.acquire(k("x")).then((r) => {
      second = true;
      return r;
    });
    let third = false;
    const w3 = lock.acquire(k("x")).then((r) => {
      third = true;
      return r;
    });
    r1();
    r1();
    await drain();
    assert.deepEqual([second, third], [true, false], "the second release did not hand the key on again");
    (await w)();
    (await w3)();
    assert.equal(lock.size, 0);
  });
});

describe("a peer's store refused by the key lock", () => {
  test("reaches the sender over TCP as ERR_OVERLOADED, at once", { timeout: 10_000 }, async () => {
    const sched = new VirtualScheduler();
    const mem = new MemoryFileSystem();
    await mem.mkdirp("/db");
    const disk = new SlowDisk(mem, sched, seededRandom(9));
    const engine = await sched.runUntilSettled(
      LsmEngine.open({ dir: "/db", fs: disk, options: { durability: "fsync", walSyncOnEventLoop: false } }),
      10_000,
    );
    const replica = new Replica(engine, "b", 64, new KeyLock({ waitersMax: 1 }));
    const rt = systemRuntime();
    const common = {
      host: "127.0.0.1",
      port: 0,
      clusterId: "c",
      timers: rt.timers,
      clock: rt.clock,
      security: "plaintext",
    } as const;
    // The receiving side answers a store as NodeCore does: a merge into its replica.
    const server = await TcpTransport.listen({
      ...common,
      nodeId: "b",
      handler: async (_from, body) => {
        if (body.kind !== "store") throw new Error(`unexpected ${body.kind}`);
        await replica.merge(body.key, decodeSiblings(body.set));
        return { kind: "stored" };
      },
    });
    const client = await TcpTransport.listen({
      ...common,
      nodeId: "a",
      handler: async () => {
        throw new Error("not used");
      },
    });
    try {
      const key = Buffer.from("hot");
      const set = update([], EMPTY_VECTOR, "a", {
        data: Buffer.from("v"),
        contentType: "text/plain",
        deleted: false,
        writtenAtMs: 0,
      }).set;
      disk.stalled = true;
      const holder = await sched.runUntilSettled(replica.version(key, EMPTY_VECTOR, set[0]!.value), 1000);
      assert.equal(holder.kind, "ok");
      const queued = replica.merge(key, set);
      const t0 = performance.now();
      const err = await client
        .request(server.address, { kind: "store", key, set: encodeSiblings(set) }, 5000)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err instanceof TransportError, String(err));
      assert.equal(err.code, "ERR_OVERLOADED");
      assert.match(err.message, /writes waiting/);
      assert.ok(performance.now() - t0 < 2000, "answered at once, not at the timeout");
      disk.stalled = false;
      await sched.runUntilSettled(queued, 10_000);
      assert.equal((await replica.read(key)).length, 2);
    } finally {
      await client.close();
      await server.close();
      disk.stalled = false;
      await sched.runUntilSettled(engine.close(), 10_000);
    }
  });
});
