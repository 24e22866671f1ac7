/**
 * Reads one table file (format in table-format.ts).
 *
 * Opening reads and checks the footer, the index and the filter, and keeps them in memory; data blocks
 * are read on demand, checked, and kept in the shared block cache. A block that fails its check raises a
 * CorruptionError naming the file and offset: a wrong value is never returned.
 */
import { compareBytes, keyPrefix } from "../bytes.js";
import { CorruptionError } from "../errors.js";
import type { RandomAccessFile } from "../fs/file-system.js";
import { KIND_PUT } from "./batch-format.js";
import { Block } from "./block.js";
import type { BlockCache, BlockOwner } from "./block-cache.js";
import { BlockedBloomFilter, BloomFilter, bloomHash } from "./bloom.js";
import {
  BLOCK_DATA,
  BLOCK_FILTER,
  BLOCK_INDEX,
  BLOCK_TRAILER_BYTES,
  checkBlock,
  decodeFooter,
  FOOTER_BYTES,
  type Footer,
  verifyBlock,
} from "./table-format.js";

export interface ReadStats {
  bloomChecks: number;
  bloomNegatives: number;
  bloomFalsePositives: number;
}

export class TableReader implements BlockOwner {
  /** This table's blocks in the block cache, by index (the cache fills and empties it). */
  readonly cached: (Block | undefined)[];
  private readonly lastKeys: Buffer[];
  /**
   * keyPrefix of each last key: the block search runs over this one array and compares whole keys only
   * where prefixes tie. (A binary search over the keys' Buffers touches two objects per step, most of them
   * CPU cache misses: docs/performance.md, "storage read path".)
   */
  private readonly lastPrefixes: Float64Array;
  private readonly blockOffsets: number[];
  private readonly blockSizes: number[];
  private readonly filter: BloomFilter | BlockedBloomFilter;
  /** Blocks in this table. */
  readonly blockCount: number;

  private constructor(
    readonly fileNumber: number,
    private readonly file: RandomAccessFile,
    readonly footer: Footer,
    index: Buffer,
    filter: Buffer,
    private readonly cache: BlockCache,
    private readonly stats: ReadStats,
    private readonly syncReads: boolean,
  ) {
    const name = file.path;
    this.filter = (() => {
      try {
        return footer.version >= 2 ? new BlockedBloomFilter(filter) : new BloomFilter(filter);
      } catch (err) {
        throw new CorruptionError(name, footer.filterOffset, "bad filter block", { cause: err });
      }
    })();
    const count = index.readUInt32LE(index.length - 4);
    this.lastKeys = new Array(count);
    this.lastPrefixes = new Float64Array(count);
    this.blockOffsets = new Array(count);
    this.blockSizes = new Array(count);
    let p = 0;
    const end = index.length - 4;
    let prevEnd = 0;
    for (let i = 0; i < count; i++) {
      if (p + 2 > end) throw new CorruptionError(name, footer.indexOffset + p, "index block truncated");
      const klen = index.readUInt16LE(p);
      if (p + 2 + klen + 12 > end)
        throw new CorruptionError(name, footer.indexOffset + p, "index entry truncated");
      const key = index.subarray(p + 2, p + 2 + klen);
      p += 2 + klen;
      const off = index.readUInt32LE(p) + index.readUInt32LE(p + 4) * 0x1_0000_0000;
      const size = index.readUInt32LE(p + 8);
      p += 12;
      if (off !== prevEnd || off + size > footer.filterOffset)
        throw new CorruptionError(name, footer.indexOffset, `index entry ${i} points outside the data area`);
      if (i > 0 && compareBytes(this.lastKeys[i - 1]!, key) >= 0)
        throw new CorruptionError(name, footer.indexOffset, "index keys out of order");
      prevEnd = off + size;
      this.lastKeys[i] = key;
      this.lastPrefixes[i] = keyPrefix(key, 0, key.length);
      this.blockOffsets[i] = off;
      this.blockSizes[i] = size;
    }
    if (p !== end || prevEnd !== footer.filterOffset)
      throw new CorruptionError(name, footer.indexOffset, "index block does not cover the data area exactly");
    this.blockCount = count;
    this.cached = new Array(count).fill(undefined);
  }

  static async open(
    file: RandomAccessFile,
    fileNumber: number,
    cache: BlockCache,
    stats: ReadStats,
    syncReads = true,
  ): Promise<TableReader> {
    if (file.size < FOOTER_BYTES) throw new CorruptionError(file.path, 0, "file shorter than a table footer");
    const footer = decodeFooter(
      file.path,
      file.size,
      await file.read(file.size - FOOTER_BYTES, FOOTER_BYTES),
    );
    const filter = verifyBlock(
      file.path,
      footer.filterOffset,
      await file.read(footer.filterOffset, footer.filterSize),
      BLOCK_FILTER,
    );
    const index = verifyBlock(
      file.path,
      footer.indexOffset,
      await file.read(footer.indexOffset, footer.indexSize),
      BLOCK_INDEX,
    );
    if (index.length < 4) throw new CorruptionError(file.path, footer.indexOffset, "index block too short");
    return new TableReader(fileNumber, file, footer, index, filter, cache, stats, syncReads);
  }

  get path(): string {
    return this.file.path;
  }

  /** Index of the first block whose last key >= key (blockCount if none). */
  private findBlock(key: Uint8Array): number {
    const p = keyPrefix(key, 0, key.length);
    const prefixes = this.lastPrefixes;
    let lo = 0;
    let hi = prefixes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (prefixes[mid]! < p) lo = mid + 1;
      else hi = mid;
    }
    if (lo === prefixes.length || prefixes[lo] !== p) return lo;
    // Blocks whose last key shares the prefix (one, for random keys; many, for keys with a common
    // prefix): a binary search over whole keys among them (prefix order agrees with key order).
    let a = lo;
    hi = prefixes.length;
    while (a < hi) {
      const mid = (a + hi) >>> 1;
      if (prefixes[mid]! <= p) a = mid + 1;
      else hi = mid;
    }
    hi = a;
    const keys = this.lastKeys;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(keys[mid]!, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * For get: block i from the cache, or read synchronously (syncReads) into a cache slot, or undefined (then
   * use readBlockAsync). The block may be a cache slot: use it before returning, never across an await.
   */
  private cachedOrSyncBlock(i: number): Block | undefined {
    const cached = this.cache.get(this, i);
    if (cached !== undefined || !this.syncReads) return cached;
    const off = this.blockOffsets[i]!;
    const size = this.blockSizes[i]!;
    const cache = this.cache;
    const admitted = size <= cache.slotBytes && cache.admit(this, i);
    const slot = admitted ? cache.take(size) : size <= cache.slotBytes ? cache.scratch : undefined;
    if (slot === undefined) return Block.parse(this.verified(off, this.readSync(off, size)), this.path, off);
    try {
      try {
        this.file.readIntoSync(slot.buf, 0, size, off);
      } catch (err) {
        throw new CorruptionError(this.file.path, off, "data block could not be read", { cause: err });
      }
      slot.load(checkBlock(this.file.path, off, slot.buf, size, BLOCK_DATA), this.file.path, off);
    } catch (err) {
      if (slot !== cache.scratch) cache.release(slot);
      throw err;
    }
    if (slot !== cache.scratch) cache.insert(this, i, slot);
    return slot;
  }

  private readSync(off: number, size: number): Buffer {
    try {
      return this.file.readSync(off, size);
    } catch (err) {
      throw new CorruptionError(this.file.path, off, "data block could not be read", { cause: err });
    }
  }

  /** The content of a block read from disk at `off`, checked. */
  private verified(off: number, raw: Buffer): Buffer {
    return verifyBlock(this.file.path, off, raw, BLOCK_DATA);
  }

  /** Puts a copy of a private block in the cache (if it fits a slot and is admitted). */
  private admitCopy(i: number, block: Block): void {
    if (block.length + BLOCK_TRAILER_BYTES > this.cache.slotBytes || !this.cache.admit(this, i)) return;
    const slot = this.cache.take(block.length + BLOCK_TRAILER_BYTES);
    if (slot === undefined) return;
    slot.assign(block);
    this.cache.insert(this, i, slot);
  }

  /** Reads block i through the thread pool into a private block (and a copy into the cache if asked). */
  private async readBlockAsync(i: number, fillCache: boolean): Promise<Block> {
    const off = this.blockOffsets[i]!;
    let raw: Buffer;
    try {
      raw = await this.file.read(off, this.blockSizes[i]!);
    } catch (err) {
      throw new CorruptionError(this.file.path, off, "data block could not be read", { cause: err });
    }
    const block = Block.parse(this.verified(off, raw), this.file.path, off);
    if (fillCache) this.admitCopy(i, block);
    return block;
  }

  /**
   * For iterators, which hold a block across awaits: a private block (a copy of a cached one, or read into
   * its own buffer), at once, or a promise of it if it must come through the thread pool.
   */
  private privateBlock(i: number, fillCache: boolean): Block | Promise<Block> {
    const cached = fillCache ? this.cache.get(this, i) : this.cache.peek(this, i);
    if (cached !== undefined) return cached.copy();
    if (!this.syncReads) return this.readBlockAsync(i, fillCache);
    const off = this.blockOffsets[i]!;
    const block = Block.parse(this.verified(off, this.readSync(off, this.blockSizes[i]!)), this.path, off);
    if (fillCache) this.admitCopy(i, block);
    return block;
  }

  /**
   * Looks `key` up: its value (a copy: cached blocks are never handed out) if the table holds a put, null
   * if it holds a tombstone, undefined if it holds neither. Synchronous when the block is cached or read
   * with a synchronous pread; a promise only when the block must come through the thread pool.
   */
  get(key: Uint8Array, hash: number): Buffer | null | undefined | Promise<Buffer | null | undefined> {
    this.stats.bloomChecks++;
    if (!this.filter.mayContainHash(hash)) {
      this.stats.bloomNegatives++;
      return undefined;
    }
    const bi = this.findBlock(key);
    if (bi === this.blockCount) {
      this.stats.bloomFalsePositives++;
      return undefined;
    }
    const block = this.cachedOrSyncBlock(bi);
    if (block === undefined) return this.readBlockAsync(bi, true).then((b) => this.lookup(b, key));
    return this.lookup(block, key);
  }

  private lookup(block: Block, key: Uint8Array): Buffer | null | undefined {
    const i = block.lowerBound(key);
    if (i < block.count) {
      const o = block.offset(i);
      if (block.compareKeyAt(o, key) === 0) return block.kindAt(o) === KIND_PUT ? block.copyValueAt(o) : null;
    }
    this.stats.bloomFalsePositives++;
    return undefined;
  }

  /** `fillCache: false` for bulk reads (compaction) that should not push hot blocks out of the cache. */
  iterator(fillCache = true): TableIterator {
    return new TableIterator(this, fillCache);
  }

  /** @internal */
  _findBlock(key: Uint8Array): number {
    return this.findBlock(key);
  }
  /** @internal A private block (see privateBlock) at once, or a promise of it. */
  _block(i: number, fillCache: boolean): Block | Promise<Block> {
    return this.privateBlock(i, fillCache);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  static bloomHash(key: Uint8Array): number {
    return bloomHash(key);
  }
}

/**
 * Forward iterator over a table's entries (tombstones included). `seek` and `next` return a promise only
 * when they must load a block, so that scans over cached blocks cost no extra microtask per entry.
 */
export class TableIterator {
  private block: Block | null = null;
  private blockIndex = 0;
  private i = 0;
  private o = 0;
  /** Views of the current entry, made once per entry (a merge asks for the key several times). */
  private keyView: Buffer | undefined;
  private valueView: Buffer | undefined;
  valid = false;

  constructor(
    private readonly table: TableReader,
    private readonly fillCache: boolean,
  ) {}

  get key(): Buffer {
    this.keyView ??= this.block!.keyAt(this.o);
    return this.keyView;
  }
  get value(): Buffer {
    this.valueView ??= this.block!.valueAt(this.o);
    return this.valueView;
  }
  get kind(): number {
    return this.block!.kindAt(this.o);
  }

  seek(target: Uint8Array | undefined): void | Promise<void> {
    const bi = target === undefined ? 0 : this.table._findBlock(target);
    if (bi >= this.table.blockCount) {
      this.valid = false;
      return;
    }
    return this.enterBlock(bi, target);
  }

  /** Positions at `target` (or the start) of block `bi`; a promise only if the block must be awaited. */
  private enterBlock(bi: number, target: Uint8Array | undefined): void | Promise<void> {
    const b = this.table._block(bi, this.fillCache);
    if (b instanceof Promise) return b.then((block) => this.positionIn(block, bi, target));
    return this.positionIn(b, bi, target);
  }

  private positionIn(block: Block, bi: number, target: Uint8Array | undefined): void | Promise<void> {
    this.block = block;
    this.blockIndex = bi;
    this.i = target === undefined ? 0 : block.lowerBound(target);
    this.settle();
    if (!this.valid && this.blockIndex + 1 < this.table.blockCount)
      return this.enterBlock(this.blockIndex + 1, undefined);
  }

  private settle(): void {
    this.keyView = undefined;
    this.valueView = undefined;
    if (this.i < this.block!.count) {
      this.o = this.block!.offset(this.i);
      this.valid = true;
    } else {
      this.valid = false;
    }
  }

  next(): void | Promise<void> {
    this.i++;
    this.settle();
    if (!this.valid && this.blockIndex + 1 < this.table.blockCount)
      return this.enterBlock(this.blockIndex + 1, undefined);
  }
}
