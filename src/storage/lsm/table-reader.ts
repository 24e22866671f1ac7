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
import { BlockCache } from "./block-cache.js";
import { BloomFilter, bloomHash } from "./bloom.js";
import {
  BLOCK_DATA,
  BLOCK_FILTER,
  BLOCK_INDEX,
  decodeFooter,
  ENTRY_HEADER_BYTES,
  FOOTER_BYTES,
  type Footer,
  verifyBlock,
} from "./table-format.js";

export interface ReadStats {
  bloomChecks: number;
  bloomNegatives: number;
  bloomFalsePositives: number;
}

/** memcmp of buf[off, off+len) against key, without allocating a view. */
function compareAt(buf: Buffer, off: number, len: number, key: Uint8Array): number {
  const n = Math.min(len, key.length);
  for (let i = 0; i < n; i++) {
    const d = buf[off + i]! - key[i]!;
    if (d !== 0) return d;
  }
  return len - key.length;
}

/** A checked data block. Entries are validated once, on load; the block cache holds Block objects. */
export class Block {
  readonly count: number;
  private readonly offsetsAt: number;
  constructor(
    readonly data: Buffer,
    file: string,
    fileOffset: number,
  ) {
    if (data.length < 4) throw new CorruptionError(file, fileOffset, "data block too short");
    this.count = data.readUInt32LE(data.length - 4);
    this.offsetsAt = data.length - 4 - 4 * this.count;
    if (this.offsetsAt < 0) throw new CorruptionError(file, fileOffset, "data block entry count too large");
    // Validate every entry's extent once, on load, so that later reads cannot run off the block.
    let prevEnd = 0;
    for (let i = 0; i < this.count; i++) {
      const o = this.offset(i);
      if (o !== prevEnd || o + ENTRY_HEADER_BYTES > this.offsetsAt)
        throw new CorruptionError(file, fileOffset, `data block entry ${i} misplaced`);
      const kind = data[o]!;
      if (kind > 1) throw new CorruptionError(file, fileOffset, `data block entry ${i} has bad kind ${kind}`);
      prevEnd = o + ENTRY_HEADER_BYTES + data.readUInt16LE(o + 1) + data.readUInt32LE(o + 3);
      if (prevEnd > this.offsetsAt)
        throw new CorruptionError(file, fileOffset, `data block entry ${i} overruns`);
    }
    if (prevEnd !== this.offsetsAt)
      throw new CorruptionError(file, fileOffset, "data block has trailing bytes");
  }

  get byteLength(): number {
    return this.data.length;
  }

  offset(i: number): number {
    return this.data.readUInt32LE(this.offsetsAt + 4 * i);
  }
  kindAt(o: number): number {
    return this.data[o]!;
  }
  keyAt(o: number): Buffer {
    const len = this.data.readUInt16LE(o + 1);
    return this.data.subarray(o + ENTRY_HEADER_BYTES, o + ENTRY_HEADER_BYTES + len);
  }
  /** A copy of the value at entry offset `o`, in a new Buffer. */
  copyValueAt(o: number): Buffer {
    const d = this.data;
    const klen = d[o + 1]! | (d[o + 2]! << 8);
    const vlen = d.readUInt32LE(o + 3);
    const start = o + ENTRY_HEADER_BYTES + klen;
    const out = Buffer.allocUnsafe(vlen);
    d.copy(out, 0, start, start + vlen);
    return out;
  }
  valueAt(o: number): Buffer {
    const klen = this.data.readUInt16LE(o + 1);
    const vlen = this.data.readUInt32LE(o + 3);
    const start = o + ENTRY_HEADER_BYTES + klen;
    return this.data.subarray(start, start + vlen);
  }
  compareKeyAt(o: number, key: Uint8Array): number {
    return compareAt(this.data, o + ENTRY_HEADER_BYTES, this.data.readUInt16LE(o + 1), key);
  }
  /** Index of the first entry with key >= target (count if none). */
  lowerBound(target: Uint8Array): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compareKeyAt(this.offset(mid), target) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export class TableReader {
  private readonly lastKeys: Buffer[];
  /**
   * keyPrefix of each last key: the block search runs over this one array and compares whole keys only
   * where prefixes tie. (A binary search over the Buffers themselves touched two objects per step, most of
   * them cache misses: the largest share of a cached read's time, measured.)
   */
  private readonly lastPrefixes: Float64Array;
  private readonly blockOffsets: number[];
  private readonly blockSizes: number[];
  private readonly filter: BloomFilter;
  /** Blocks in this table. */
  readonly blockCount: number;

  private constructor(
    readonly fileNumber: number,
    private readonly file: RandomAccessFile,
    readonly footer: Footer,
    index: Buffer,
    filter: Buffer,
    private readonly cache: BlockCache<Block>,
    private readonly stats: ReadStats,
    private readonly syncReads: boolean,
  ) {
    const name = file.path;
    this.filter = (() => {
      try {
        return new BloomFilter(filter);
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
  }

  static async open(
    file: RandomAccessFile,
    fileNumber: number,
    cache: BlockCache<Block>,
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

  /** The block from the cache, or read synchronously (syncReads), or undefined: then use readBlockAsync. */
  private cachedOrSyncBlock(i: number, fillCache: boolean): Block | undefined {
    const ck = BlockCache.key(this.fileNumber, i);
    const cached = fillCache ? this.cache.get(ck) : this.cache.peek(ck);
    if (cached !== undefined || !this.syncReads) return cached;
    const off = this.blockOffsets[i]!;
    let raw: Buffer;
    try {
      raw = this.file.readSync(off, this.blockSizes[i]!);
    } catch (err) {
      throw new CorruptionError(this.file.path, off, "data block could not be read", { cause: err });
    }
    return this.admit(ck, i, raw, fillCache);
  }

  private admit(ck: number, i: number, raw: Buffer, fillCache: boolean): Block {
    const off = this.blockOffsets[i]!;
    const content = verifyBlock(this.file.path, off, raw, BLOCK_DATA);
    const block = new Block(content, this.file.path, off);
    if (fillCache) this.cache.insert(ck, block);
    return block;
  }

  /** Reads a block through the thread pool; callers have already looked in the cache. */
  private async readBlockAsync(i: number, fillCache: boolean): Promise<Block> {
    const off = this.blockOffsets[i]!;
    let raw: Buffer;
    try {
      raw = await this.file.read(off, this.blockSizes[i]!);
    } catch (err) {
      throw new CorruptionError(this.file.path, off, "data block could not be read", { cause: err });
    }
    return this.admit(BlockCache.key(this.fileNumber, i), i, raw, fillCache);
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
    const block = this.cachedOrSyncBlock(bi, true);
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
  /** @internal The block at once if cached or read synchronously, else a promise of it. */
  _block(i: number, fillCache: boolean): Block | Promise<Block> {
    return this.cachedOrSyncBlock(i, fillCache) ?? this.readBlockAsync(i, fillCache);
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
