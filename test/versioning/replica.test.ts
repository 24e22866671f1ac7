/**
 * Replica (src/replication/replica.ts) over real engines: read-modify-write of a key's sibling set under
 * the per-key lock (src/replication/key-lock.ts), the sibling limit, merging of remote sets, and
 * persistence through the engine (MemoryEngine; LsmEngine on MemoryFileSystem across a reopen).
 *
 * MemoryEngine's get and put are async, so un-awaited calls interleave at every await: without the lock,
 * concurrent writes of one key would read the same old set and overwrite each other's result.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { KeyLock, keyLockWaitersMax } from "../../src/replication/key-lock.js";
import { type CoordinateResult, Replica } from "../../src/replication/replica.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { SlowDisk } from "../../src/sim/slow-disk.js";
import { LsmEngine, MemoryEngine, MemoryFileSystem, type StorageEngine } from "../../src/storage/index.js";
import { contextOf, EMPTY_VECTOR } from "../../src/versioning/dvv.js";
import { decodeSiblings, type StoredSibling, type StoredValue } from "../../src/versioning/object-codec.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x4e9_11ca;
const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;

const KEY = Buffer.from("user:42");

const value = (text: string, deleted = false): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted,
  writtenAtMs: 1_700_000_000_000,
});

const texts = (set: readonly StoredSibling[]): string[] =>
  set.map((s) => Buffer.from(s.value.data).toString()).sort();

const dots = (set: readonly StoredSibling[]): string[] => set.map((s) => `${s.dot.actor}:${s.dot.counter}`);

function ok(r: CoordinateResult): Extract<CoordinateResult, { kind: "ok" }> {
  assert.equal(r.kind, "ok", `write refused: ${JSON.stringify(r)}`);
  return r as Extract<CoordinateResult, { kind: "ok" }>;
}

/** Fires `n` un-awaited blind writes at once, each from its own client. */
function blindBurst(
  replica: Replica,
  key: Uint8Array,
  n: number,
  prefix: string,
): Promise<CoordinateResult[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => replica.coordinate(key, EMPTY_VECTOR, value(`${prefix}${i}`))),
  );
}

/** The LSM engine on a disk whose syncs take virtual time (and can hang: `disk.stalled`). */
async function slowDiskEngine() {
  const sched = new VirtualScheduler();
  const mem = new MemoryFileSystem();
  await mem.mkdirp("/db");
  const disk = new SlowDisk(mem, sched, seededRandom(3));
  const engine = await sched.runUntilSettled(
    LsmEngine.open({ dir: "/db", fs: disk, options: { durability: "fsync", walSyncOnEventLoop: false } }),
    10_000,
  );
  return { sched, disk, engine };
}

describe("Replica", () => {
  test("50 concurrent blind writes of one key are serialized: 50 siblings, none lost", async () => {
    const engine = new MemoryEngine();
    const replica = new Replica(engine, "a", 100);
    const results = await blindBurst(replica, KEY, 50, "v");
    const written = results.map((r) => ok(r).written);
    assert.deepEqual(
      written.map((s) => s.dot.counter).sort((x, y) => x - y),
      Array.from({ length: 50 }, (_, i) => i + 1),
      "each write got its own dot",
    );
    const stored = await replica.read(KEY);
    assert.equal(stored.length, 50);
    assert.deepEqual(texts(stored), Array.from({ length: 50 }, (_, i) => `v${i}`).sort());
    // The last write's returned set is the final one; every returned set includes all earlier writes.
    const sizes = results.map((r) => ok(r).set.length).sort((x, y) => x - y);
    assert.deepEqual(
      sizes,
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
  });

  test("with maxSiblings 10, exactly 10 of 50 concurrent blind writes are stored; the others are refused", async () => {
    const replica = new Replica(new MemoryEngine(), "a", 10);
    const results = await blindBurst(replica, KEY, 50, "v");
    const accepted = results.filter((r) => r.kind === "ok");
    const refused = results.filter((r) => r.kind === "too_many_siblings");
    assert.equal(accepted.length, 10);
    assert.equal(refused.length, 40);
    for (const r of refused) assert.deepEqual(r, { kind: "too_many_siblings", siblings: 10, max: 10 });
    const stored = await replica.read(KEY);
    assert.equal(stored.length, 10);
    assert.deepEqual(texts(stored), texts(accepted.map((r) => ok(r).written)));
    // A write that reads the siblings and supersedes them is accepted again.
    const resolved = ok(await replica.coordinate(KEY, contextOf(stored), value("resolved")));
    assert.deepEqual(texts(await replica.read(KEY)), ["resolved"]);
    assert.deepEqual(resolved.set, await replica.read(KEY));
  });

  test("the sibling limit is exact for any limit and burst size", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 30 }), async (max, n) => {
        const replica = new Replica(new MemoryEngine(), "a", max);
        const results = await blindBurst(replica, KEY, n, "v");
        const accepted = results.filter((r) => r.kind === "ok").length;
        assert.equal(accepted, Math.min(max, n));
        assert.equal((await replica.read(KEY)).length, Math.min(max, n));
      }),
      { ...FC_PARAMS, numRuns: 60 },
    );
  });

  test("concurrent writes to different keys are independent", async () => {
    const replica = new Replica(new MemoryEngine(), "a", 100);
    const keys = ["k1", "k2", "k3"].map((k) => Buffer.from(k));
    await Promise.all(keys.map((k) => blindBurst(replica, k, 20, `${k.toString()}-`)));
    for (const k of keys) {
      const set = await replica.read(k);
      assert.equal(set.length, 20);
      assert.ok(texts(set).every((t) => t.startsWith(`${k.toString()}-`)));
    }
  });

  test("concurrent coordinates and merges of one key lose nothing", async () => {
    // b's 20 blind writes are shipped to a as b's whole set after each write, while a coordinates 20 of
    // its own; all of it interleaves on a's key.
    const a = new Replica(new MemoryEngine(), "a", 100);
    const b = new Replica(new MemoryEngine(), "b", 100);
    const shipped: StoredSibling[][] = [];
    for (let i = 0; i < 20; i++) shipped.push(ok(await b.coordinate(KEY, EMPTY_VECTOR, value(`b${i}`))).set);
    await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => a.coordinate(KEY, EMPTY_VECTOR, value(`a${i}`))),
      ...shipped.map((set) => a.merge(KEY, set)),
    ]);
    const stored = await a.read(KEY);
    assert.equal(stored.length, 40);
    assert.deepEqual(
      texts(stored),
      [
        ...Array.from({ length: 20 }, (_, i) => `a${i}`),
        ...Array.from({ length: 20 }, (_, i) => `b${i}`),
      ].sort(),
    );
  });

  test("merging a remote set: superseded versions go, concurrent ones stay, the result is stored", async () => {
    const a = new Replica(new MemoryEngine(), "a", 100);
    const b = new Replica(new MemoryEngine(), "b", 100);
    const first = ok(await a.coordinate(KEY, EMPTY_VECTOR, value("v1")));
    // v1 reaches b; a client reads it at b and overwrites it there, while another writes v2 blind at a.
    await b.merge(KEY, first.set);
    const overwrite = ok(await b.coordinate(KEY, contextOf(await b.read(KEY)), value("v3")));
    assert.deepEqual(texts(overwrite.set), ["v3"]);
    ok(await a.coordinate(KEY, EMPTY_VECTOR, value("v2")));
    const merged = await a.merge(KEY, overwrite.set);
    assert.deepEqual(texts(merged), ["v2", "v3"]);
    assert.deepEqual(merged, await a.read(KEY));
    assert.deepEqual(dots(merged), ["a:2", "b:1"]);
    // And back: b merges a's set and holds the same.
    assert.deepEqual(await b.merge(KEY, merged), merged);
  });

  test("a merge that changes nothing writes nothing", async () => {
    const engine = new MemoryEngine();
    const a = new Replica(engine, "a", 100);
    const { set } = ok(await a.coordinate(KEY, EMPTY_VECTOR, value("v1")));
    const before = engine.stats().userBytesWritten;
    assert.deepEqual(await a.merge(KEY, set), set);
    assert.deepEqual(await a.merge(KEY, []), set);
    assert.equal(engine.stats().userBytesWritten, before);
    const other = new Replica(new MemoryEngine(), "b", 100);
    await a.merge(KEY, ok(await other.coordinate(KEY, EMPTY_VECTOR, value("w"))).set);
    assert.ok(engine.stats().userBytesWritten > before, "a merge that added a sibling was not stored");
  });

  test("a delete is stored as a tombstone sibling", async () => {
    const a = new Replica(new MemoryEngine(), "a", 100);
    ok(await a.coordinate(KEY, EMPTY_VECTOR, value("v1")));
    const del = ok(await a.coordinate(KEY, contextOf(await a.read(KEY)), value("", true)));
    const stored = await a.read(KEY);
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.value.deleted, true);
    assert.deepEqual(stored, [del.written]);
  });

  test("the set is in the engine under namespace 'd' + key, and a new Replica continues from it", async () => {
    const engine = new MemoryEngine();
    const key = Buffer.from([0x00, 0xff, 0x64]);
    const a = new Replica(engine, "a", 100);
    await blindBurst(a, key, 3, "v");
    const raw = await engine.get(Buffer.concat([Buffer.from("d"), key]));
    assert.ok(raw !== undefined, "nothing stored under d + key");
    const stored = decodeSiblings(raw);
    assert.deepEqual(stored, await a.read(key));
    assert.equal(await engine.get(key), undefined, "stored under the bare key");
    assert.deepEqual(await new Replica(engine, "a", 100).read(Buffer.from("other")), []);
    // A replica restarted on the same engine never reuses a dot.
    const again = new Replica(engine, "a", 100);
    assert.deepEqual(await again.read(key), stored);
    const next = ok(await again.coordinate(key, EMPTY_VECTOR, value("v3")));
    assert.deepEqual(next.written.dot, { actor: "a", counter: 4 });
    assert.equal((await again.read(key)).length, 4);
  });

  test("the set survives closing and reopening a durable engine", async () => {
    const fs = new MemoryFileSystem();
    const open = (): Promise<StorageEngine> =>
      LsmEngine.open({ dir: "/db", fs, options: { durability: "fsync" } });
    let engine = await open();
    let a = new Replica(engine, "a", 100);
    await blindBurst(a, KEY, 5, "v");
    const before = await a.read(KEY);
    await engine.close();
    engine = await open();
    a = new Replica(engine, "a", 100);
    assert.deepEqual(await a.read(KEY), before);
    const next = ok(await a.coordinate(KEY, contextOf(before), value("after")));
    assert.deepEqual(next.written.dot, { actor: "a", counter: 6 });
    assert.deepEqual(texts(await a.read(KEY)), ["after"]);
    await engine.close();
  });

  test("version hands out the set before it is durable, and holds the key until it is", async () => {
    const replica = new Replica(new MemoryEngine(), "a", 100);
    const first = await replica.version(KEY, EMPTY_VECTOR, value("v1"));
    assert.equal(first.kind, "ok");
    // A second write of the key waits for the first to be durable, then reads it: no lost update.
    const second = replica.version(KEY, EMPTY_VECTOR, value("v2"));
    if (first.kind === "ok") await first.durable;
    const s = await second;
    assert.equal(s.kind, "ok");
    if (s.kind === "ok") {
      await s.durable;
      assert.deepEqual(dots(s.set).sort(), ["a:1", "a:2"]);
    }
  });

  test("on a disk that is slow to sync, the key stays locked until the versioned set is durable", async () => {
    // The LSM engine shows a write only once it is durable: a lock released earlier would let the next
    // write read the old set and take the same dot.
    const { sched, disk, engine } = await slowDiskEngine();
    const a = new Replica(engine, "a", 100);
    disk.stalled = true;
    const first = await sched.runUntilSettled(a.version(KEY, EMPTY_VECTOR, value("v1")), 1000);
    let secondDone = false;
    const second = a.version(KEY, EMPTY_VECTOR, value("v2")).then((r) => {
      secondDone = true;
      return r;
    });
    await sched.runFor(1000);
    assert.equal(secondDone, false, "the second write waits for the first to be durable");
    disk.stalled = false;
    const s = await sched.runUntilSettled(second, 10_000);
    assert.ok(first.kind === "ok" && s.kind === "ok");
    await sched.runUntilSettled(s.durable, 10_000);
    assert.deepEqual([first.written.dot.counter, s.written.dot.counter], [1, 2]);
    assert.deepEqual(texts(await a.read(KEY)), ["v1", "v2"]);
    await sched.runUntilSettled(engine.close(), 10_000);
  });

  test("a hot key on a stalled disk: writes queue up to the bound, then are refused at once; other keys still take writes; the queue drains when the disk is back", async () => {
    const { sched, disk, engine } = await slowDiskEngine();
    const a = new Replica(engine, "a", 1000);
    disk.stalled = true;
    // The first write holds the key while its put waits for the disk; the next ones queue behind it.
    const first = await sched.runUntilSettled(a.version(KEY, EMPTY_VECTOR, value("w0")), 1000);
    assert.equal(first.kind, "ok");
    const queued = Array.from({ length: keyLockWaitersMax }, (_, i) =>
      a.version(KEY, EMPTY_VECTOR, value(`w${i + 1}`)),
    );
    await sched.runFor(1000);
    // One more: refused without waiting for anything (no virtual time passes), nothing versioned.
    let refused: Awaited<ReturnType<Replica["version"]>> | undefined;
    void a.version(KEY, EMPTY_VECTOR, value("one too many")).then((r) => {
      refused = r;
    });
    await new Promise<void>((r) => setImmediate(r));
    assert.deepEqual(refused, { kind: "overloaded", limit: "waiters_per_key", max: keyLockWaitersMax });
    // A merge from a peer is refused the same way, with a typed error the transport passes on.
    await assert.rejects(a.merge(KEY, []), { code: "ERR_OVERLOADED", limit: "waiters_per_key" });
    // Another key is not held up by the hot one: it is versioned (its put waits for the disk too).
    const other = await sched.runUntilSettled(
      a.version(Buffer.from("other"), EMPTY_VECTOR, value("o")),
      1000,
    );
    assert.equal(other.kind, "ok");
    disk.stalled = false;
    const results = await sched.runUntilSettled(Promise.all(queued), 600_000);
    for (const r of results) assert.equal(r.kind, "ok");
    if (first.kind === "ok") await first.durable;
    for (const r of results) if (r.kind === "ok") await sched.runUntilSettled(r.durable, 10_000);
    const stored = await a.read(KEY);
    assert.equal(
      stored.length,
      keyLockWaitersMax + 1,
      "every admitted write is a sibling; the refused one is not",
    );
    assert.ok(!texts(stored).includes("one too many"));
    assert.equal(
      (await sched.runUntilSettled(a.version(KEY, contextOf(stored), value("after")), 1000)).kind,
      "ok",
    );
    await sched.runUntilSettled(engine.close(), 10_000);
  });

  test("seal: no more versions, and it waits for the sets already versioned", async () => {
    const { sched, disk, engine } = await slowDiskEngine();
    const a = new Replica(engine, "a", 100);
    disk.stalled = true;
    const v = await sched.runUntilSettled(a.version(KEY, EMPTY_VECTOR, value("v1")), 1000);
    let sealed = false;
    const sealing = a.seal().then(() => {
      sealed = true;
    });
    await sched.runFor(1000);
    assert.equal(sealed, false, "seal waits for the pending local write");
    await assert.rejects(a.version(Buffer.from("other"), EMPTY_VECTOR, value("x")), {
      code: "ERR_CANNOT_VERSION",
    });
    disk.stalled = false;
    await sched.runUntilSettled(sealing, 10_000);
    assert.ok(v.kind === "ok");
    await v.durable;
    assert.equal(a.writeFailure, undefined);
    await sched.runUntilSettled(engine.close(), 10_000);
  });

  test("an engine that failed on its own (a periodic sync) stops the replica's versioning too", async () => {
    const sched = new VirtualScheduler();
    const fs = new MemoryFileSystem();
    const engine = await sched.runUntilSettled(
      LsmEngine.open({
        dir: "/db",
        fs,
        timers: sched,
        options: { durability: "interval", syncIntervalMs: 100 },
      }),
      10_000,
    );
    const replica = new Replica(engine, "a", 100);
    ok(await sched.runUntilSettled(replica.coordinate(KEY, EMPTY_VECTOR, value("v1")), 1000));
    assert.equal(replica.writeFailure, undefined);
    fs.crash(); // the acknowledged write was never synced, and now the periodic sync fails
    await sched.runFor(500);
    assert.ok(engine.failure !== undefined, "the engine knows it failed");
    assert.ok(replica.writeFailure !== undefined, "so the replica does");
    await assert.rejects(replica.version(KEY, EMPTY_VECTOR, value("v2")), { code: "ERR_CANNOT_VERSION" });
    await sched.runUntilSettled(engine.close(), 10_000).catch(() => undefined);
  });

  test("after a failed local write the replica versions nothing more", async () => {
    const fs = new MemoryFileSystem();
    const engine = await LsmEngine.open({ dir: "/db", fs, options: { durability: "fsync" } });
    const replica = new Replica(engine, "a", 100);
    ok(await replica.coordinate(KEY, EMPTY_VECTOR, value("v1")));
    assert.equal(replica.writeFailure, undefined);
    fs.crash(); // the engine's open files now fail: its next WAL write is an I/O error
    const doomed = await replica.version(KEY, EMPTY_VECTOR, value("v2"));
    assert.equal(doomed.kind, "ok");
    if (doomed.kind === "ok") await assert.rejects(doomed.durable);
    assert.ok(replica.writeFailure !== undefined);
    // Its dot (a, 2) may have reached other replicas: it must never be issued again by this actor.
    await assert.rejects(replica.version(Buffer.from("other"), EMPTY_VECTOR, value("v3")), {
      code: "ERR_CANNOT_VERSION",
    });
    await assert.rejects(replica.coordinate(KEY, EMPTY_VECTOR, value("v4")), {
      code: "ERR_CANNOT_VERSION",
    });
    await engine.close().catch(() => undefined);
  });
});

describe("KeyLock", () => {
  test("runs one key's tasks one at a time, in call order, and forgets idle keys", async () => {
    const lock = new KeyLock();
    const log: string[] = [];
    let running = 0;
    const task = (name: string, key: string) =>
      lock.run(Buffer.from(key), async () => {
        running++;
        assert.equal(running, 1, `${name} overlapped another task of ${key}`);
        log.push(`${name}+`);
        for (let i = 0; i < 3; i++) await Promise.resolve();
        log.push(`${name}-`);
        running--;
        return name;
      });
    const got = await Promise.all(["t1", "t2", "t3", "t4"].map((n) => task(n, "k")));
    assert.deepEqual(got, ["t1", "t2", "t3", "t4"]);
    assert.deepEqual(log, ["t1+", "t1-", "t2+", "t2-", "t3+", "t3-", "t4+", "t4-"]);
    assert.equal(lock.size, 0);
  });

  test("a failing task releases the key; equal bytes in different views are the same key", async () => {
    const lock = new KeyLock();
    const backing = Buffer.from("xxkeyxx");
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 2, 3);
    const order: string[] = [];
    const failing = lock.run(Buffer.from("key"), async () => {
      await Promise.resolve();
      order.push("fail");
      throw new Error("boom");
    });
    const next = lock.run(view, async () => {
      order.push("next");
      return 1;
    });
    await assert.rejects(failing, /boom/);
    assert.equal(await next, 1);
    assert.deepEqual(order, ["fail", "next"]);
    assert.equal(lock.size, 0);
  });
});
