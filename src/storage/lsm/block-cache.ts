/**
 * The block cache: verified data blocks in fixed-size slots, bounded in memory, evicted by CLOCK.
 *
 * Memory is `maxSlots` = floor(capacityBytes / slotBytes) slots of `slotBytes` (the engine's blockBytes;
 * the table builder keeps every block of two or more entries under it), allocated as the cache fills and
 * then reused forever: a miss reads the block from the file straight into the slot of the block it
 * evicts, so a read allocates nothing and the collector has nothing to free. (A new Buffer per block costs
 * more than the pread itself: its fresh pages are faulted in, then collected; docs/performance.md, "The
 * machine".) A block larger than a slot (one big entry) is not cached.
 *
 * Where a block is: each table reader keeps an array of its cached blocks by block index (the owner's
 * `cached`), so a lookup is one array load, not a hash lookup. Recency is CLOCK (a reference bit set on each
 * hit; eviction sweeps the slots, clearing bits, and takes the first block whose bit is clear): a hit writes
 * one field of the block it already holds, where an LRU list also rewrites both neighbours. A read is
 * mostly a chain of CPU cache misses, so every object a hit touches counts (docs/performance.md,
 * "storage read path").
 *
 * Admission: once every slot is in use, a missed block takes a slot only on its second miss within a
 * while (a direct-mapped table of recently missed blocks, `ghosts`, as 2Q's and ARC's ghost lists and
 * TinyLFU's doorkeeper do); a first miss is served from one scratch block and leaves the cache alone. A
 * block read once (a scan, a random read of a large store) then evicts nothing, while a block asked for
 * again gets in. With uniformly random reads the hit rate is the same either way (cache / data), but each
 * admission costs an eviction and a write into a cold slot: admitting every miss was most of a miss's
 * cost beyond the pread itself.
 *
 * Slot blocks and the scratch block are used synchronously only (see block.ts): `take` may hand out the
 * slot of any block not in use by the running call.
 */
import { Block } from "./block.js";

/** A table reader's view of the cache: its cached blocks by index, and its table's file number. */
export interface BlockOwner {
  readonly cached: (Block | undefined)[];
  readonly fileNumber: number;
}

/** Most blocks in one table (the table builder enforces it), which bounds a reader's `cached` array. */
export const MAX_BLOCKS_PER_TABLE = 1 << 20;

/** Slots allocated at a time, so that a small cache does not reserve its whole capacity up front. */
const SLOTS_PER_CHUNK = 64;

export class BlockCache {
  /** Every slot block allocated so far, in clock order. */
  private readonly slots: Block[] = [];
  private readonly free: Block[] = [];
  private hand = 0;
  private chunk: Buffer | undefined;
  private chunkUsed = 0;
  private cachedCount = 0;
  readonly maxSlots: number;
  /** Ids (file * 2^20 + block) of blocks missed and not admitted, direct-mapped by a hash of the id. */
  private readonly ghosts: Float64Array;
  /** Where a block not admitted is read, to be used before the reader returns. */
  readonly scratch: Block;
  hits = 0;
  misses = 0;

  constructor(
    readonly capacityBytes: number,
    readonly slotBytes: number,
  ) {
    if (!(slotBytes > 0)) throw new RangeError("block cache slots must have a positive size");
    this.maxSlots = Math.floor(capacityBytes / slotBytes);
    let g = 16;
    while (g < this.maxSlots) g *= 2;
    this.ghosts = new Float64Array(this.maxSlots > 0 ? g : 0).fill(-1);
    this.scratch = new Block(Buffer.allocUnsafeSlow(slotBytes));
  }

  /**
   * Whether block `index` of `owner`, just missed, should take a slot: yes while slots are free, else only
   * if it was missed recently too (see the file comment). Records the miss either way.
   */
  admit(owner: BlockOwner, index: number): boolean {
    if (this.maxSlots === 0) return false;
    if (this.free.length > 0 || this.slots.length < this.maxSlots) return true;
    const id = owner.fileNumber * MAX_BLOCKS_PER_TABLE + index;
    // Fibonacci hashing of the id's low 32 bits and file number into the table.
    const h = Math.imul((id | 0) ^ Math.imul(owner.fileNumber, 0x9e3779b1), 0x9e3779b1) >>> 0;
    const at = h & (this.ghosts.length - 1);
    if (this.ghosts[at] === id) {
      this.ghosts[at] = -1;
      return true;
    }
    this.ghosts[at] = id;
    return false;
  }

  /** Cached blocks. */
  get size(): number {
    return this.cachedCount;
  }

  /** Memory held by cached blocks (whole slots). */
  get bytes(): number {
    return this.cachedCount * this.slotBytes;
  }

  /** The cached block `index` of `owner`, counted as a hit or a miss. */
  get(owner: BlockOwner, index: number): Block | undefined {
    const b = owner.cached[index];
    if (b === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    b.referenced = true;
    return b;
  }

  /** The same, neither counted nor marked (bulk readers). */
  peek(owner: BlockOwner, index: number): Block | undefined {
    return owner.cached[index];
  }

  /**
   * A slot block to read a block of `size` bytes into (its buffer is `slotBytes` long): a free slot, a new
   * one, or the slot of the block the clock evicts. Undefined if `size` does not fit a slot or the cache
   * has no room at all. Hand it back with `insert` or `release`.
   */
  take(size: number): Block | undefined {
    if (size > this.slotBytes || this.maxSlots === 0) return undefined;
    const f = this.free.pop();
    if (f !== undefined) return f;
    if (this.slots.length < this.maxSlots) {
      if (this.chunk === undefined || this.chunkUsed === SLOTS_PER_CHUNK) {
        this.chunk = Buffer.allocUnsafeSlow(
          Math.min(SLOTS_PER_CHUNK, this.maxSlots - this.slots.length) * this.slotBytes,
        );
        this.chunkUsed = 0;
      }
      const at = this.chunkUsed++ * this.slotBytes;
      const b = new Block(this.chunk.subarray(at, at + this.slotBytes));
      this.slots.push(b);
      return b;
    }
    // The clock: at most two sweeps (the first clears every bit), skipping slots taken and not yet
    // inserted or released (owner undefined and not free: none while the reader works synchronously).
    const n = this.slots.length;
    for (let k = 0; k < 2 * n; k++) {
      const b = this.slots[this.hand]!;
      this.hand = this.hand + 1 === n ? 0 : this.hand + 1;
      if (b.owner === undefined) continue;
      if (b.referenced) {
        b.referenced = false;
        continue;
      }
      this.detach(b);
      return b;
    }
    return undefined;
  }

  /** Caches `block` (from `take`, loaded) as block `index` of `owner`, replacing any block cached there. */
  insert(owner: BlockOwner, index: number, block: Block): void {
    const old = owner.cached[index];
    if (old !== undefined) {
      this.detach(old);
      this.free.push(old);
    }
    block.owner = owner;
    block.ownerIndex = index;
    block.referenced = false;
    owner.cached[index] = block;
    this.cachedCount++;
  }

  /** Gives back a block from `take` that was not inserted (its read failed). */
  release(block: Block): void {
    block.length = 0;
    block.count = 0;
    this.free.push(block);
  }

  /** Drops every cached block of `owner` (its table was closed or deleted). */
  evictOwner(owner: BlockOwner): void {
    const c = owner.cached;
    for (let i = 0; i < c.length; i++) {
      const b = c[i];
      if (b !== undefined) {
        this.detach(b);
        this.free.push(b);
      }
    }
  }

  private detach(b: Block): void {
    b.owner!.cached[b.ownerIndex] = undefined;
    b.owner = undefined;
    b.ownerIndex = -1;
    b.referenced = false;
    this.cachedCount--;
  }
}
