/**
 * The block cache against a reference CLOCK (a plain array of slots with reference bits), over random
 * sequences of lookups, reads of missing blocks (take a slot, fill it, insert it; or give it back, as a
 * failed read does), and evictions of a whole table: same hits, same contents, memory within the bound.
 * Each block's bytes carry a tag, so a slot reused while its block was still cached shows as a wrong tag.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Block } from "../../src/storage/lsm/block.js";
import { BlockCache, type BlockOwner } from "../../src/storage/lsm/block-cache.js";

const SLOT = 32;
const TABLES = 3;
const BLOCKS = 6;

/** The reference: slots in allocation order, each (table, block, tag, referenced) or free. */
class ReferenceClock {
  slots: ({ table: number; block: number; tag: number; ref: boolean } | undefined)[] = [];
  hand = 0;
  constructor(readonly max: number) {}
  find(table: number, block: number) {
    return this.slots.find((s) => s !== undefined && s.table === table && s.block === block);
  }
  get(table: number, block: number): number | undefined {
    const s = this.find(table, block);
    if (s === undefined) return undefined;
    s.ref = true;
    return s.tag;
  }
  /** The slot index a read takes (the cache prefers the most recently freed slot). */
  take(freeOrder: number[]): number {
    if (freeOrder.length > 0) return freeOrder.pop()!;
    if (this.slots.length < this.max) {
      this.slots.push(undefined);
      return this.slots.length - 1;
    }
    for (;;) {
      const i = this.hand;
      this.hand = (this.hand + 1) % this.slots.length;
      const s = this.slots[i]!;
      if (s.ref) s.ref = false;
      else return i;
    }
  }
}

/** A one-entry block whose key and value are the tag, as the table builder lays it out. */
function blockBytes(tag: number): Buffer {
  const b = Buffer.alloc(7 + 4 + 4 + 4 + 4);
  b[0] = 1;
  b.writeUInt16LE(4, 1);
  b.writeUInt32LE(4, 3);
  b.writeUInt32LE(tag, 7);
  b.writeUInt32LE(tag, 11);
  b.writeUInt32LE(0, 15); // entry offsets: one, at 0
  b.writeUInt32LE(1, 19); // count
  return b;
}

function tagOf(block: Block | undefined): number | undefined {
  if (block === undefined) return undefined;
  assert.equal(block.count, 1);
  return block.buf.readUInt32LE(7);
}

const op = fc.oneof(
  fc.record({ kind: fc.constant("get" as const), table: fc.nat(TABLES - 1), block: fc.nat(BLOCKS - 1) }),
  fc.record({
    kind: fc.constant("read" as const),
    table: fc.nat(TABLES - 1),
    block: fc.nat(BLOCKS - 1),
    fails: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("evict" as const), table: fc.nat(TABLES - 1) }),
);

test("the block cache is a CLOCK bounded in slots that never hands out a slot in use", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 10 }),
      fc.array(op, { maxLength: 300, size: "large" }),
      (max, ops) => {
        const cache = new BlockCache(max * SLOT + (SLOT - 1), SLOT);
        assert.equal(cache.maxSlots, max);
        const owners: BlockOwner[] = [];
        for (let t = 0; t < TABLES; t++)
          owners.push({ cached: new Array(BLOCKS).fill(undefined), fileNumber: t });
        const ref = new ReferenceClock(max);
        /** Reference slot index of each cache slot block, to follow which slot the cache hands out. */
        const slotOf = new Map<Block, number>();
        const free: number[] = [];
        let tag = 0;
        for (const o of ops) {
          if (o.kind === "get") {
            assert.equal(tagOf(cache.get(owners[o.table]!, o.block)), ref.get(o.table, o.block));
          } else if (o.kind === "read") {
            // A block is read only on a miss (the reader looked in the cache first).
            if (ref.find(o.table, o.block) !== undefined) {
              assert.equal(tagOf(cache.get(owners[o.table]!, o.block)), ref.get(o.table, o.block));
              continue;
            }
            const t = tag++;
            const bytes = blockBytes(t);
            assert.equal(cache.take(SLOT + 1), undefined, "a block larger than a slot is not cached");
            const slot = cache.take(bytes.length);
            if (max === 0) {
              assert.equal(slot, undefined);
              continue;
            }
            assert.ok(slot !== undefined);
            assert.equal(slot.buf.length, SLOT);
            const i = ref.take(free);
            if (!slotOf.has(slot)) slotOf.set(slot, i);
            assert.equal(slotOf.get(slot), i, "the cache took the slot the reference clock takes");
            ref.slots[i] = undefined;
            bytes.copy(slot.buf);
            if (o.fails) {
              cache.release(slot);
              free.push(i);
            } else {
              slot.load(bytes.length, "t", 0);
              cache.insert(owners[o.table]!, o.block, slot);
              ref.slots[i] = { table: o.table, block: o.block, tag: t, ref: false };
            }
          } else {
            cache.evictOwner(owners[o.table]!);
            // Freed in the owner's block order, as the cache frees them.
            for (let b = 0; b < BLOCKS; b++) {
              const i = ref.slots.findIndex((x) => x?.table === o.table && x.block === b);
              if (i >= 0) {
                ref.slots[i] = undefined;
                free.push(i);
              }
            }
          }
          const live = ref.slots.filter((s) => s !== undefined).length;
          assert.equal(cache.size, live);
          assert.equal(cache.bytes, live * SLOT);
          assert.ok(cache.size <= max);
        }
        // Same contents, tags intact in the slots.
        for (let t = 0; t < TABLES; t++)
          for (let b = 0; b < BLOCKS; b++)
            assert.equal(tagOf(cache.peek(owners[t]!, b)), ref.find(t, b)?.tag, `table ${t} block ${b}`);
      },
    ),
    { numRuns: 300 },
  );
});

test("admission: every miss while slots are free, then a block only on its second recent miss", () => {
  const cache = new BlockCache(4 * SLOT, SLOT);
  const owner: BlockOwner = { cached: new Array(100).fill(undefined), fileNumber: 7 };
  const other: BlockOwner = { cached: new Array(100).fill(undefined), fileNumber: 8 };
  for (let i = 0; i < 4; i++) {
    assert.equal(cache.admit(owner, i), true, "a free slot admits");
    const slot = cache.take(SLOT)!;
    blockBytes(i).copy(slot.buf);
    slot.load(23, "t", 0);
    cache.insert(owner, i, slot);
  }
  assert.equal(cache.admit(owner, 10), false, "a first miss with the cache full");
  assert.equal(cache.admit(other, 10), false, "the same block index of another table is another block");
  assert.equal(cache.admit(owner, 10), true, "a second miss");
  assert.equal(cache.admit(owner, 10), false, "admitted once: the next miss starts over");
  // A block not admitted leaves the cache as it was.
  for (let i = 0; i < 4; i++) assert.equal(tagOf(cache.peek(owner, i)), i);
  // Bounded: many distinct misses neither grow anything nor admit anything on a first miss.
  for (let i = 20; i < 100; i++) assert.equal(cache.admit(owner, i), false);
  assert.equal(cache.size, 4);
  assert.equal(new BlockCache(SLOT - 1, SLOT).admit(owner, 1), false, "no slot at all: nothing is admitted");
});
