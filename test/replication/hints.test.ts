/**
 * The hint store (src/replication/hints.ts): hints kept durably per target and key, merged causally,
 * bounded in bytes per target, counted again at a restart, deleted only if unchanged, and damaged records
 * reported, never served.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeHint, encodeHint, HintStore, HintsFullError } from "../../src/replication/hints.js";
import { KEYSPACES } from "../../src/replication/keyspaces.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";

const value = (text: string) => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 0,
});
/** A set of one blind write by `actor`. */
const set = (actor: string, text: string): StoredSibling[] =>
  update([], EMPTY_VECTOR, actor, value(text)).set;
const texts = (s: readonly StoredSibling[]) => s.map((x) => Buffer.from(x.value.data).toString()).sort();
const K = Buffer.from("k");

describe("HintStore", () => {
  test("a hint is kept per target and key, merged with one held, and read back only for that target", async () => {
    const sched = new VirtualScheduler({ startMs: 1000 });
    const store = new HintStore(new MemoryEngine(), sched);
    await store.put("b", K, set("a1", "x"));
    sched.advance(500);
    await store.put("b", K, set("a2", "y"));
    await store.put("c", K, set("a1", "x"));
    assert.deepEqual(texts(await store.read("b", K)), ["x", "y"]);
    assert.deepEqual(texts(await store.read("c", K)), ["x"]);
    assert.deepEqual(await store.read("d", K), []);
    const b = store.backlog().get("b")!;
    assert.equal(b.count, 1);
    assert.equal(b.oldestStoredAt, 1000, "a merge keeps the time the first hint was stored");
    assert.deepEqual([store.counters.stored, store.counters.merged], [2, 1]);
  });

  test("bounded per target in bytes: a hint past the bound is refused (nothing stored), others go on", async () => {
    const sched = new VirtualScheduler();
    const dropped: string[] = [];
    const store = new HintStore(
      new MemoryEngine(),
      sched,
      { maxBytesPerTarget: 600, windowMs: 60_000 },
      { onDropped: (t, why) => dropped.push(`${t}:${why}`) },
    );
    let stored = 0;
    for (let i = 0; i < 20; i++) {
      try {
        await store.put("b", Buffer.from(`k${i}`), set("a", `value-${i}`));
        stored++;
      } catch (err) {
        assert.ok(err instanceof HintsFullError);
        assert.equal(err.code, "ERR_OVERLOADED");
      }
    }
    assert.ok(stored > 0 && stored < 20, `${stored} stored`);
    assert.ok(store.bytesFor("b") <= 600);
    assert.equal(dropped.length, 20 - stored);
    assert.ok(dropped.every((d) => d === "b:full"));
    // Another target has its own bound.
    await store.put("c", K, set("a", "x"));
  });

  test("the byte bound holds for hints stored at once (the check and the count are one step)", async () => {
    const store = new HintStore(new MemoryEngine(), new VirtualScheduler(), {
      maxBytesPerTarget: 600,
      windowMs: 60_000,
    });
    const all = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => store.put("b", Buffer.from(`k${i}`), set("a", `value-${i}`))),
    );
    const stored = all.filter((r) => r.status === "fulfilled").length;
    assert.ok(stored > 0 && stored < 20, `${stored} stored`);
    assert.ok(store.bytesFor("b") <= 600, `${store.bytesFor("b")} bytes held for b, bound 600`);
    assert.equal(store.backlog().get("b")!.count, stored);
  });

  test("counted again from the engine at a restart; a page lists a target's hints in key order", async () => {
    const engine = new MemoryEngine();
    const sched = new VirtualScheduler({ startMs: 5 });
    const first = new HintStore(engine, sched);
    for (const k of ["k3", "k1", "k2"]) await first.put("b", Buffer.from(k), set("a", k));
    await first.put("bb", K, set("a", "other target"));
    const again = new HintStore(engine, sched);
    await again.load();
    assert.deepEqual(
      [...again.backlog()].map(([t, b]) => [t, b.count, b.bytes]),
      [...first.backlog()].map(([t, b]) => [t, b.count, b.bytes]),
    );
    const page1 = await again.page("b", undefined, 2, 1 << 20);
    assert.deepEqual(
      page1.hints.map((h) => Buffer.from(h.key).toString()),
      ["k1", "k2"],
    );
    const page2 = await again.page("b", page1.last, 2, 1 << 20);
    assert.deepEqual(
      page2.hints.map((h) => Buffer.from(h.key).toString()),
      ["k3"],
      "a target's range holds its hints only (not those of b's longer namesake bb)",
    );
    assert.equal((await again.page("b", page2.last, 2, 1 << 20)).last, undefined);
  });

  test("remove deletes a hint only if it did not change since it was read", async () => {
    const store = new HintStore(new MemoryEngine(), new VirtualScheduler());
    await store.put("b", K, set("a1", "x"));
    const { hints } = await store.page("b", undefined, 10, 1 << 20);
    await store.put("b", K, set("a2", "y")); // a newer write merged in meanwhile
    assert.equal(await store.remove("b", K, hints[0]!.record), false);
    assert.deepEqual(texts(await store.read("b", K)), ["x", "y"]);
    const now = await store.page("b", undefined, 10, 1 << 20);
    assert.equal(await store.remove("b", K, now.hints[0]!.record), true);
    assert.equal(store.backlog().size, 0);
    assert.deepEqual(await store.read("b", K), []);
  });

  test("a damaged record is reported and dropped, never served", async () => {
    const engine = new MemoryEngine();
    const store = new HintStore(engine, new VirtualScheduler());
    await store.put("b", K, set("a", "x"));
    await store.put("b", Buffer.from("k2"), set("a", "y"));
    // Flip a byte of the first record in place.
    for await (const e of engine.iterate(KEYSPACES.hints.range)) {
      const bad = Buffer.from(e.value);
      bad[bad.length - 6]! ^= 0xff;
      await engine.put(e.key, bad);
      break;
    }
    assert.throws(() => decodeHint(Buffer.from([1, 2, 3]), "x"), { code: "ERR_CORRUPTION" });
    assert.deepEqual(await store.read("b", K), []);
    const page = await store.page("b", undefined, 10, 1 << 20);
    assert.deepEqual(
      page.hints.map((h) => Buffer.from(h.key).toString()),
      ["k2"],
    );
    assert.equal(store.counters.corrupt, 2);
    assert.equal(store.backlog().get("b")?.count, 1);
  });

  test("the record format round-trips and checks its version", () => {
    const s = set("a", "x");
    const rec = encodeHint(1234.5, s);
    assert.equal(decodeHint(rec, "t").storedAt, 1234.5);
    const other = Buffer.from(rec);
    other[1] = 2;
    assert.throws(() => decodeHint(other, "t"), /version 2/);
  });
});
