/**
 * Key state hashes (src/anti-entropy/key-state.ts) and partition trees (src/anti-entropy/tree.ts): a tree
 * kept up to date write by write (through TreeSet's hook, under a real Replica on a MemoryEngine) equals
 * the tree built from scratch from the data, over random sequences of writes, deletes, merges and
 * removals; levels stay consistent; merges of disjoint trees; the saved form round-trips and every
 * damage is refused.
 *
 * Seeded: FC_SEED=<n> replays another seed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { KEY_STATE_SEED, keyStateHash } from "../../src/anti-entropy/key-state.js";
import {
  BRANCHES,
  decodeTree,
  differingIndexes,
  encodeTree,
  mergeTrees,
  PartitionTree,
  SEGMENTS,
  segmentOf,
  TREE_RECORD_BYTES,
  TreeDecodeError,
  treeRecordKey,
} from "../../src/anti-entropy/tree.js";
import { TreeSet } from "../../src/anti-entropy/tree-set.js";
import { InvariantError } from "../../src/core/assert.js";
import { hash32 } from "../../src/core/hash.js";
import { KeyLock } from "../../src/replication/key-lock.js";
import { DATA } from "../../src/replication/keyspaces.js";
import { Replica } from "../../src/replication/replica.js";
import { partitionOf } from "../../src/ring/ring.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { contextOf, EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import type { StoredSibling } from "../../src/versioning/object-codec.js";
import { FC_PARAMS, HookedEngine, storedValue, treesFromScratch } from "./support.js";

const Q = 8;
const pof = (k: Uint8Array) => partitionOf(k, Q);
const ALL = Array.from({ length: Q }, (_, i) => i);

function sibling(actor: string, counter: number, deleted = false, text = "v"): StoredSibling {
  return { dot: { actor, counter }, context: EMPTY_VECTOR, value: storedValue(text, deleted) };
}

describe("key state hash", () => {
  const key = Buffer.from("k");

  test("0 for an empty set and only for it; the seed is its own", () => {
    assert.equal(keyStateHash(key, []), 0);
    for (let i = 0; i < 2000; i++)
      assert.notEqual(keyStateHash(Buffer.from(`k${i}`), [sibling("a", i + 1)]), 0);
    assert.notEqual(KEY_STATE_SEED, 0x52494e47, "not the ring's seed");
  });

  test("names the key and every dot and deleted flag; not the value bytes, context or timestamp", () => {
    const base = keyStateHash(key, [sibling("a", 1), sibling("b", 2)]);
    assert.notEqual(keyStateHash(Buffer.from("k2"), [sibling("a", 1), sibling("b", 2)]), base, "key");
    assert.notEqual(keyStateHash(key, [sibling("a", 1), sibling("b", 3)]), base, "counter");
    assert.notEqual(keyStateHash(key, [sibling("a", 1), sibling("c", 2)]), base, "actor");
    assert.notEqual(keyStateHash(key, [sibling("a", 1)]), base, "a sibling less");
    assert.notEqual(keyStateHash(key, [sibling("a", 1), sibling("b", 2, true)]), base, "tombstone");
    const other: StoredSibling = {
      dot: { actor: "b", counter: 2 },
      context: new Map([["a", 7]]),
      value: { ...storedValue("another value"), writtenAtMs: 5 },
    };
    assert.equal(
      keyStateHash(key, [sibling("a", 1), other]),
      base,
      "value, context and time are named by the dot",
    );
    // Counters past 2^32 are hashed whole.
    assert.notEqual(keyStateHash(key, [sibling("a", 2 ** 32 + 1)]), keyStateHash(key, [sibling("a", 1)]));
  });

  test("a set out of canonical order is a broken invariant", () => {
    assert.throws(() => keyStateHash(key, [sibling("b", 1), sibling("a", 1)]), InvariantError);
    assert.throws(() => keyStateHash(key, [sibling("a", 2), sibling("a", 1)]), InvariantError);
  });

  test("non-ASCII actors", () => {
    assert.notEqual(keyStateHash(key, [sibling("nœud-1", 1)]), keyStateHash(key, [sibling("nud-1", 1)]));
  });
});

describe("partition tree", () => {
  test("segments are spread evenly and independent of the ring's partition", () => {
    const counts = new Array<number>(SEGMENTS).fill(0);
    const byPartition = new Map<number, Set<number>>();
    for (let i = 0; i < 200_000; i++) {
      const k = Buffer.from(`key-${i}`);
      const s = segmentOf(k);
      counts[s]!++;
      const p = pof(k);
      if (!byPartition.has(p)) byPartition.set(p, new Set());
      byPartition.get(p)!.add(s);
    }
    const mean = 200_000 / SEGMENTS;
    assert.ok(Math.max(...counts) < 1.4 * mean && Math.min(...counts) > 0.6 * mean, "even spread");
    for (const [, segs] of byPartition)
      assert.ok(segs.size > 0.99 * SEGMENTS, "every partition uses every segment");
  });

  test("update is O(1) XOR at every level; order does not matter; counts keys", () => {
    const a = new PartitionTree(3);
    const b = new PartitionTree(3);
    const keys = Array.from({ length: 500 }, (_, i) => Buffer.from(`k${i}`));
    const hashes = keys.map((k, i) => keyStateHash(k, [sibling("a", i + 1)]));
    for (const [i, k] of keys.entries()) a.update(k, 0, hashes[i]!);
    for (let i = keys.length - 1; i >= 0; i--) b.update(keys[i]!, 0, hashes[i]!);
    assert.ok(a.equals(b));
    assert.equal(a.keys, 500);
    a.checkLevels();
    let x = 0;
    for (const h of hashes) x ^= h;
    assert.equal(a.root, x >>> 0);
    // Changing then restoring a key returns to the same tree; removing every key empties it.
    const before = a.clone();
    a.update(keys[7]!, hashes[7]!, 12345);
    assert.ok(!a.equals(before));
    assert.deepEqual(differingIndexes(a.segments, before.segments), [segmentOf(keys[7]!)]);
    assert.deepEqual(differingIndexes(a.branches, before.branches), [segmentOf(keys[7]!) >> 5]);
    a.update(keys[7]!, 12345, hashes[7]!);
    assert.ok(a.equals(before));
    for (const [i, k] of keys.entries()) a.update(k, hashes[i]!, 0);
    assert.equal(a.keys, 0);
    assert.equal(a.root, 0);
    assert.ok(a.segments.every((s) => s === 0));
  });

  test("the tree of two disjoint key sets merged equals the tree of their union", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), { maxLength: 200 }),
        fc.nat(),
        (names, split) => {
          const keys = names.map((n) => Buffer.from(n));
          const cut = keys.length === 0 ? 0 : split % (keys.length + 1);
          const left = new PartitionTree(1);
          const right = new PartitionTree(2);
          const all = new PartitionTree(1);
          keys.forEach((k, i) => {
            const h = keyStateHash(k, [sibling("x", i + 1)]);
            (i < cut ? left : right).update(k, 0, h);
            all.update(k, 0, h);
          });
          const merged = mergeTrees(left, right);
          assert.ok(merged.equals(all));
          merged.checkLevels();
          assert.equal(merged.partition, 1);
        },
      ),
      { ...FC_PARAMS, numRuns: 100 },
    );
  });

  test("fromSegments computes branches and root", () => {
    const segs = Array.from({ length: SEGMENTS }, (_, i) => hash32(Buffer.from([i & 0xff, i >> 8]), 9));
    const t = PartitionTree.fromSegments(4, segs, 77);
    t.checkLevels();
    assert.equal(t.keys, 77);
    assert.equal(t.branches.length, BRANCHES);
  });
});

// ------------------------------------------------------------------ incremental against from-scratch

type Op =
  | { readonly kind: "write"; readonly key: number; readonly stale: boolean; readonly text: string }
  | { readonly kind: "delete"; readonly key: number }
  | { readonly kind: "merge"; readonly key: number; readonly actor: number }
  | { readonly kind: "remove"; readonly key: number };

const KEYS = 24;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      key: fc.nat(KEYS - 1),
      stale: fc.boolean(),
      text: fc.string({ maxLength: 6 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("delete" as const), key: fc.nat(KEYS - 1) }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant("merge" as const), key: fc.nat(KEYS - 1), actor: fc.nat(2) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("remove" as const), key: fc.nat(KEYS - 1) }) },
);

describe("a tree kept write by write equals the tree built from the data", () => {
  test("random rounds of concurrent writes, deletes, merges from other actors and removals", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 8 }), { maxLength: 20 }),
        fc.array(fc.nat(3), { maxLength: 120 }),
        async (rounds, waits) => {
          const trees = new TreeSet(pof);
          for (const p of ALL) trees.adopt(new PartitionTree(p));
          const inner = new MemoryEngine();
          let turn = 0;
          const engine = new HookedEngine(inner, trees, {
            delay: async () => {
              for (let i = waits[turn++ % Math.max(1, waits.length)] ?? 0; i > 0; i--)
                await Promise.resolve();
            },
          });
          const lock = new KeyLock();
          const replica = new Replica(engine, "node-a.1", 50, lock);
          // Other replicas' writes reach this one by merge: sets versioned by their own actors.
          const elsewhere = new Map<string, StoredSibling[]>();
          const key = (i: number) => Buffer.from(`key-${i}`);
          const contexts = new Map<number, StoredSibling[]>();
          const run = async (op: Op) => {
            const k = key(op.key);
            switch (op.kind) {
              case "write": {
                const seen = op.stale ? [] : await replica.read(k);
                const r = await replica.coordinate(k, contextOf(seen), storedValue(op.text));
                if (r.kind === "ok") contexts.set(op.key, r.set);
                break;
              }
              case "delete": {
                const seen = await replica.read(k);
                await replica.coordinate(k, contextOf(seen), storedValue("", true));
                break;
              }
              case "merge": {
                const actor = `node-${"bcd"[op.actor]}.1`;
                const id = `${actor}/${op.key}`;
                const mine = elsewhere.get(id) ?? contexts.get(op.key) ?? [];
                const next = update(mine, contextOf(mine), actor, storedValue(`from ${actor}`)).set;
                elsewhere.set(id, next);
                await replica.merge(k, next);
                break;
              }
              case "remove": {
                // A removal (a purge or a handed-off key), under the key's lock as the integration must.
                await lock.run(k, () => engine.delete(DATA.encode(k)));
                break;
              }
            }
          };
          // Each round's operations run concurrently, the rounds one after the other.
          for (const ops of rounds) await Promise.all(ops.map((op) => run(op)));
          assert.equal(trees.writesInFlight, 0);
          const scratch = await treesFromScratch(inner, pof, ALL);
          for (const p of ALL) {
            const live = trees.tree(p)!;
            live.checkLevels();
            assert.ok(live.equals(scratch.get(p)!), `partition ${p}: the kept tree differs from the data's`);
          }
        },
      ),
      { ...FC_PARAMS, numRuns: 60 },
    );
  });

  test("a write that fails is taken back out of the tree", async () => {
    const trees = new TreeSet(pof);
    for (const p of ALL) trees.adopt(new PartitionTree(p));
    const inner = new MemoryEngine();
    const engine = new HookedEngine(inner, trees, {
      fails: (_k, set) => set.some((s) => Buffer.from(s.value.data).toString() === "boom"),
    });
    const replica = new Replica(engine, "node-a.1", 50);
    const k = Buffer.from("key");
    await replica.merge(k, [sibling("node-b.1", 1, false, "fine")]);
    await assert.rejects(replica.merge(k, [sibling("node-c.1", 1, false, "boom")]), /injected/);
    assert.equal(engine.counts.failed, 1);
    const scratch = await treesFromScratch(inner, pof, ALL);
    assert.ok(trees.tree(pof(k))!.equals(scratch.get(pof(k))!));
    assert.equal(trees.tree(pof(k))!.keys, 1);
  });

  test("a skipped hook leaves the tree differing from the data (what the checks must catch)", async () => {
    const trees = new TreeSet(pof);
    for (const p of ALL) trees.adopt(new PartitionTree(p));
    const inner = new MemoryEngine();
    const engine = new HookedEngine(inner, trees);
    const replica = new Replica(engine, "node-a.1", 50);
    await replica.coordinate(Buffer.from("a"), EMPTY_VECTOR, storedValue("1"));
    engine.hook(undefined);
    await replica.coordinate(Buffer.from("b"), EMPTY_VECTOR, storedValue("2"));
    const scratch = await treesFromScratch(inner, pof, ALL);
    const p = pof(Buffer.from("b"));
    assert.ok(!trees.tree(p)!.equals(scratch.get(p)!));
  });
});

// ------------------------------------------------------------------ saved form

describe("saved tree", () => {
  function someTree(partition: number, n: number): PartitionTree {
    const t = new PartitionTree(partition);
    for (let i = 0; i < n; i++) {
      const k = Buffer.from(`k${i}`);
      t.update(k, 0, keyStateHash(k, [sibling("a", i + 1)]));
    }
    return t;
  }

  test("round-trips, with its layout's size, for any partition", () => {
    for (const [p, n] of [
      [0, 0],
      [7, 1],
      [1023, 5000],
      [(1 << 20) - 1, 3],
    ] as const) {
      const t = someTree(p, n);
      const bytes = encodeTree(t);
      assert.equal(bytes.length, TREE_RECORD_BYTES);
      const back = decodeTree(bytes, p);
      assert.ok(back.equals(t));
      back.checkLevels();
      assert.equal(back.partition, p);
      assert.equal(back.keys, n);
      // A Uint8Array view at an offset decodes too.
      const copy = new Uint8Array(bytes.length + 3);
      copy.set(bytes, 3);
      assert.ok(decodeTree(copy.subarray(3)).equals(t));
    }
    assert.deepEqual([...treeRecordKey(258)], [0, 0, 1, 2]);
  });

  test("any flipped bit, truncation, extension or another partition's record is refused", () => {
    const t = someTree(5, 300);
    const good = encodeTree(t);
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const bad = Buffer.from(good);
        bad[at]! ^= mask;
        assert.throws(() => decodeTree(bad), TreeDecodeError);
      }),
      { ...FC_PARAMS, numRuns: 300 },
    );
    assert.throws(() => decodeTree(good.subarray(0, good.length - 1)), TreeDecodeError);
    assert.throws(() => decodeTree(Buffer.concat([good, Buffer.of(0)])), TreeDecodeError);
    assert.throws(() => decodeTree(Buffer.alloc(0)), TreeDecodeError);
    assert.throws(() => decodeTree(good, 6), /partition 5's tree, not 6's/);
    const err = (() => {
      try {
        decodeTree(good.subarray(1));
      } catch (e) {
        return e as TreeDecodeError;
      }
    })();
    assert.equal(err?.code, "ERR_BAD_TREE");
  });
});
