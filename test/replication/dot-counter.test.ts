/**
 * The node's dot counter (src/replication/dot-counter.ts): counters never go back, across restarts and
 * crashes, and almost every one is an increment in memory; its lease record is checked like any format.
 * And the replica's use of it: a key deleted, purged and written again gets a dot above every one it had.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DotCounter,
  DotLeaseCorruptionError,
  decodeLease,
  encodeLease,
  LEASE_BLOCK,
} from "../../src/replication/dot-counter.js";
import { KEYSPACES } from "../../src/replication/keyspaces.js";
import { Replica } from "../../src/replication/replica.js";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { contextOf, EMPTY_VECTOR } from "../../src/versioning/dvv.js";
import type { StoredValue } from "../../src/versioning/object-codec.js";

const value = (text: string, deleted = false): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted,
  writtenAtMs: 0,
});

async function take(c: DotCounter, atLeast = 1): Promise<number> {
  const n = c.next(atLeast);
  return typeof n === "number" ? n : await n;
}

describe("DotCounter", () => {
  test("counts up from the saved lease, above every counter asked for, never twice", async () => {
    const storage = new MemoryEngine();
    const c = await DotCounter.open(storage, 100);
    const seen: number[] = [];
    for (let i = 0; i < 250; i++) seen.push(await take(c));
    assert.deepEqual(seen.slice(0, 3), [1, 2, 3]);
    assert.equal(new Set(seen).size, seen.length);
    assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]!));
    // A key whose set asks for more (a counter from before the lease existed) is served above it.
    assert.equal(await take(c, 10_000), 10_000);
    assert.equal(await take(c), 10_001);
    assert.ok(c.lease >= c.issued, `lease ${c.lease} below ${c.issued}`);
  });

  test("a new lease is durable before a counter under it is handed out; a restart starts above it", async () => {
    const fs = new MemoryFileSystem();
    let storage = await LsmEngine.open({ dir: "/s", fs });
    let c = await DotCounter.open(storage, 100);
    let last = 0;
    for (let i = 0; i < 130; i++) last = await take(c);
    assert.ok(c.leasesSaved >= 2);
    // A crash loses what was not synced; every counter handed out is under the lease that survived.
    fs.crash({ unsynced: "drop" });
    storage = await LsmEngine.open({ dir: "/s", fs });
    c = await DotCounter.open(storage, 100);
    const after = await take(c);
    assert.ok(after > last, `after a crash the counter went back: ${after} <= ${last}`);
    await storage.close();
  });

  test("most counters are handed out at once; the lease is taken ahead, in the background", async () => {
    const storage = new MemoryEngine();
    const c = await DotCounter.open(storage);
    assert.equal(c.leasesSaved, 1, "the first lease is taken when the counter opens");
    assert.equal(c.next(1), 1, "so the first counter waits for nothing");
    let waited = 0;
    for (let i = 0; i < 3 * LEASE_BLOCK; i++) {
      const n = c.next(1);
      if (typeof n !== "number") {
        waited++;
        await n;
      }
      // Let a lease saved in the background land, as the event loop does between writes.
      if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(waited, 0, "a steady writer never waits for a lease");
    assert.ok(c.leasesSaved >= 3);
  });

  test("a lease that cannot be saved hands out nothing above the old one", async () => {
    const storage = new MemoryEngine();
    const c = await DotCounter.open(storage, 10);
    for (let i = 0; i < 5; i++) await take(c);
    await storage.close();
    const lease = c.lease;
    let failed = 0;
    for (let i = 0; i < 20; i++) {
      try {
        const n = await take(c);
        assert.ok(n <= lease, `counter ${n} above the durable lease ${lease}`);
      } catch {
        failed++;
      }
    }
    assert.ok(failed > 0);
  });

  test("the lease record: round trip, and every damage is an error", async () => {
    assert.equal(decodeLease(encodeLease(123_456_789)), 123_456_789);
    const good = encodeLease(42);
    for (const [what, bad] of [
      ["short", good.subarray(0, 10)],
      ["bad magic", Buffer.concat([Buffer.from([0]), good.subarray(1)])],
      ["a flipped bit", Buffer.from(good.map((b, i) => (i === 4 ? b ^ 1 : b)))],
    ] as const)
      assert.throws(() => decodeLease(bad), DotLeaseCorruptionError, what);
    const storage = new MemoryEngine();
    await storage.put(KEYSPACES.meta.encode(Buffer.from("dot-counter-lease")), Buffer.from("garbage"));
    await assert.rejects(DotCounter.open(storage), DotLeaseCorruptionError);
  });
});

describe("a replica's dots come from the node's counter", () => {
  test("a key purged and written again gets a dot above every one it had (kv679)", async () => {
    const storage = new MemoryEngine();
    const replica = new Replica(storage, "a.1", 64, undefined, undefined, await DotCounter.open(storage));
    const key = Buffer.from("k");
    const v1 = await replica.coordinate(key, EMPTY_VECTOR, value("v1"));
    assert.equal(v1.kind, "ok");
    const del = await replica.coordinate(key, contextOf(v1.kind === "ok" ? v1.set : []), value("", true));
    assert.ok(del.kind === "ok");
    const tombstone = del.set;
    assert.ok(await replica.purgeIfEqual(key, tombstone));
    assert.deepEqual(await replica.read(key), []);
    const again = await replica.coordinate(key, EMPTY_VECTOR, value("v2"));
    assert.ok(again.kind === "ok");
    const old = Math.max(
      ...tombstone.map((s) => s.dot.counter),
      ...tombstone.map((s) => s.context.get("a.1") ?? 0),
    );
    assert.ok(
      again.written.dot.counter > old,
      `the re-created key reused a counter: ${again.written.dot.counter} <= ${old}`,
    );
    // The stale tombstone, merged back, does not cover the new write: both stay, the value is live.
    const merged = await replica.merge(key, tombstone);
    assert.deepEqual(
      merged.map((s) => [s.dot.counter, s.value.deleted]),
      [...tombstone.map((s) => [s.dot.counter, true]), [again.written.dot.counter, false]],
    );
  });

  test("other keys' writes move the counter: one actor's dots of one key are not contiguous", async () => {
    const replica = new Replica(new MemoryEngine(), "a.1", 64);
    const k1 = Buffer.from("k1");
    const k2 = Buffer.from("k2");
    const c = async (k: Buffer) => {
      const r = await replica.coordinate(k, contextOf(await replica.read(k)), value("x"));
      assert.ok(r.kind === "ok");
      return r.written.dot.counter;
    };
    assert.deepEqual([await c(k1), await c(k2), await c(k1), await c(k2)], [1, 2, 3, 4]);
  });

  test("purge-if-equal deletes only the agreed tombstones, through the tree hook", async () => {
    const changes: [string, number, number][] = [];
    const hook = {
      writeBegins: (key: Uint8Array, oldSet: readonly unknown[], newSet: readonly unknown[]) => {
        changes.push([Buffer.from(key).toString(), oldSet.length, newSet.length]);
        return undefined;
      },
      writeEnds: () => undefined,
    };
    const replica = new Replica(new MemoryEngine(), "a.1", 64, undefined, hook);
    const key = Buffer.from("k");
    const del = await replica.coordinate(key, EMPTY_VECTOR, value("", true));
    assert.ok(del.kind === "ok");
    const later = await replica.coordinate(key, EMPTY_VECTOR, value("", true));
    assert.ok(later.kind === "ok");
    // The set changed since the agreement (a second, concurrent delete): it stays.
    assert.equal(await replica.purgeIfEqual(key, del.set), false);
    assert.equal((await replica.read(key)).length, 2);
    assert.equal(await replica.purgeIfEqual(key, later.set), true);
    assert.deepEqual(await replica.read(key), []);
    assert.deepEqual(changes.at(-1), ["k", 2, 0]);
    await assert.rejects(
      replica.purgeIfEqual(key, [{ ...del.written, value: value("live") }]),
      /not all tombstones/,
    );
  });
});
