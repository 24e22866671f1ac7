/**
 * Writes one table file (format in table-format.ts) from entries added in strictly increasing key order.
 *
 * `add` encodes into memory; the caller awaits `drainIfNeeded()` now and then so that written bytes go to
 * the file in large appends and memory stays bounded by `drainBytes`. `finish()` writes the filter, index
 * and footer and syncs the file. The caller makes the directory entry durable and records the table in
 * the manifest; a table not in the manifest is garbage, removed on the next open.
 */
import { compareBytes } from "../bytes.js";

/** memcmp of buf[off, off+len) against key, without a view. */
function compareRange(buf: Buffer, off: number, len: number, key: Uint8Array): number {
  const n = Math.min(len, key.length);
  for (let i = 0; i < n; i++) {
    const d = buf[off + i]! - key[i]!;
    if (d !== 0) return d;
  }
  return len - key.length;
}

import type { WritableFile } from "../fs/file-system.js";
import { MAX_BLOCKS_PER_TABLE } from "./block-cache.js";
import { bloomHash, buildBlockedBloom, buildBloom } from "./bloom.js";
import {
  BLOCK_DATA,
  BLOCK_FILTER,
  BLOCK_INDEX,
  BLOCK_TRAILER_BYTES,
  ENTRY_HEADER_BYTES,
  encodeFooter,
  MAX_TABLE_KEY_BYTES,
  sealBlock,
  TABLE_FORMAT_VERSION,
} from "./table-format.js";

export interface TableBuilderOptions {
  readonly blockBytes: number;
  readonly bloomBitsPerKey: number;
  /** Buffered bytes that trigger a write to the file. */
  readonly drainBytes: number;
  /** Table format to write (default TABLE_FORMAT_VERSION); tests write format 1 to check it still reads. */
  readonly formatVersion?: number;
}

export interface BuiltTable {
  readonly size: number;
  readonly entries: number;
  readonly tombstones: number;
  readonly smallest: Buffer;
  readonly largest: Buffer;
}

export class TableBuilder {
  private block: Buffer;
  private blockLen = 0;
  private offsets: number[] = [];
  private readonly pending: Buffer[] = [];
  private pendingLen = 0;
  private fileOffset = 0;
  private readonly indexKeys: Buffer[] = [];
  private readonly indexOffsets: number[] = [];
  private readonly indexSizes: number[] = [];
  private hashes = new Uint32Array(1024);
  private count = 0;
  private tombstones = 0;
  private smallest: Buffer | null = null;
  /** The last key added, in `this.block` (-1: none yet); after finishBlock, the last index key. */
  private lastKeyOffset = 0;
  private lastKeyLength = -1;

  constructor(
    private readonly file: WritableFile,
    private readonly options: TableBuilderOptions,
  ) {
    this.block = Buffer.allocUnsafe(options.blockBytes * 2);
  }

  get entries(): number {
    return this.count;
  }

  /** Bytes the finished file will have, roughly (without filter and index). */
  get estimatedSize(): number {
    return this.fileOffset + this.pendingLen + this.blockLen;
  }

  get pendingBytes(): number {
    return this.pendingLen;
  }

  get blocks(): number {
    return this.indexKeys.length;
  }

  add(key: Uint8Array, kind: number, value: Uint8Array): void {
    if (key.length > MAX_TABLE_KEY_BYTES)
      throw new RangeError(`key of ${key.length} bytes too long for a table`);
    if (this.lastKeyLength >= 0) {
      // The previous key: in the block being built, or (first entry of a block) the last index key.
      const c =
        this.blockLen > 0
          ? compareRange(this.block, this.lastKeyOffset, this.lastKeyLength, key)
          : compareBytes(this.indexKeys[this.indexKeys.length - 1]!, key);
      if (c >= 0) throw new Error("table builder: keys must be added in strictly increasing order");
    }
    if (this.indexKeys.length >= MAX_BLOCKS_PER_TABLE - 1)
      throw new Error("table builder: too many blocks in one table");
    // Close the block before this entry would take its encoded size (entries, offsets, count, trailer) to
    // blockBytes, so that every block of two or more entries fits one slot of the block cache (slots are
    // blockBytes long; block-cache.ts). A block of one larger entry is read but never cached.
    const entryBytes = ENTRY_HEADER_BYTES + key.length + value.length;
    if (
      this.offsets.length > 0 &&
      this.blockLen + entryBytes + 4 * (this.offsets.length + 1) + 4 + BLOCK_TRAILER_BYTES >=
        this.options.blockBytes
    )
      this.finishBlock();
    const need = this.blockLen + ENTRY_HEADER_BYTES + key.length + value.length;
    if (need > this.block.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.block.length * 2));
      this.block.copy(grown, 0, 0, this.blockLen);
      this.block = grown;
    }
    const b = this.block;
    let p = this.blockLen;
    this.offsets.push(p);
    b[p] = kind;
    b.writeUInt16LE(key.length, p + 1);
    b.writeUInt32LE(value.length, p + 3);
    p += ENTRY_HEADER_BYTES;
    b.set(key, p);
    this.lastKeyOffset = p;
    this.lastKeyLength = key.length;
    p += key.length;
    b.set(value, p);
    p += value.length;
    this.blockLen = p;

    if (this.count === this.hashes.length) {
      const grown = new Uint32Array(this.hashes.length * 2);
      grown.set(this.hashes);
      this.hashes = grown;
    }
    this.hashes[this.count++] = bloomHash(key);
    if (kind === 0) this.tombstones++;
    if (this.smallest === null) this.smallest = Buffer.from(key);
  }

  private finishBlock(): void {
    if (this.offsets.length === 0) return;
    const n = this.offsets.length;
    const size = this.blockLen + 4 * n + 4 + BLOCK_TRAILER_BYTES;
    const out = Buffer.allocUnsafe(size);
    this.block.copy(out, 0, 0, this.blockLen);
    let p = this.blockLen;
    for (let i = 0; i < n; i++, p += 4) out.writeUInt32LE(this.offsets[i]!, p);
    out.writeUInt32LE(n, p);
    sealBlock(out, BLOCK_DATA);
    // The block's last key, copied out of `this.block`, which is about to be reused.
    this.indexKeys.push(
      Buffer.from(this.block.subarray(this.lastKeyOffset, this.lastKeyOffset + this.lastKeyLength)),
    );
    this.indexOffsets.push(this.fileOffset + this.pendingLen);
    this.indexSizes.push(size);
    this.pending.push(out);
    this.pendingLen += size;
    this.blockLen = 0;
    this.offsets = [];
  }

  async drainIfNeeded(): Promise<void> {
    if (this.pendingLen >= this.options.drainBytes) await this.drain();
  }

  private async drain(): Promise<void> {
    if (this.pendingLen === 0) return;
    const chunk = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    this.pending.length = 0;
    const len = this.pendingLen;
    this.pendingLen = 0;
    await this.file.append(chunk);
    this.fileOffset += len;
  }

  /** Writes filter, index and footer, syncs and closes the file. */
  async finish(): Promise<BuiltTable> {
    if (this.count === 0) throw new Error("table builder: an empty table is never written");
    this.finishBlock();
    const lastKey = this.indexKeys[this.indexKeys.length - 1]!;
    const version = this.options.formatVersion ?? TABLE_FORMAT_VERSION;
    const filterContent =
      version >= 2
        ? buildBlockedBloom(this.hashes, this.count, this.options.bloomBitsPerKey)
        : buildBloom(this.hashes, this.count, this.options.bloomBitsPerKey);
    const filter = Buffer.allocUnsafe(filterContent.length + BLOCK_TRAILER_BYTES);
    filterContent.copy(filter, 0);
    sealBlock(filter, BLOCK_FILTER);
    const filterOffset = this.fileOffset + this.pendingLen;
    this.pending.push(filter);
    this.pendingLen += filter.length;

    let indexLen = 4 + BLOCK_TRAILER_BYTES;
    for (const k of this.indexKeys) indexLen += 2 + k.length + 8 + 4;
    const index = Buffer.allocUnsafe(indexLen);
    let p = 0;
    for (let i = 0; i < this.indexKeys.length; i++) {
      const k = this.indexKeys[i]!;
      index.writeUInt16LE(k.length, p);
      k.copy(index, p + 2);
      p += 2 + k.length;
      const off = this.indexOffsets[i]!;
      index.writeUInt32LE(off % 0x1_0000_0000, p);
      index.writeUInt32LE(Math.floor(off / 0x1_0000_0000), p + 4);
      index.writeUInt32LE(this.indexSizes[i]!, p + 8);
      p += 12;
    }
    index.writeUInt32LE(this.indexKeys.length, p);
    sealBlock(index, BLOCK_INDEX);
    const indexOffset = this.fileOffset + this.pendingLen;
    this.pending.push(index);
    this.pendingLen += index.length;
    const footer = encodeFooter({
      version,
      indexOffset,
      indexSize: index.length,
      filterOffset,
      filterSize: filter.length,
      entryCount: this.count,
    });
    this.pending.push(footer);
    this.pendingLen += footer.length;
    await this.drain();
    await this.file.sync();
    await this.file.close();
    return {
      size: this.fileOffset,
      entries: this.count,
      tombstones: this.tombstones,
      smallest: this.smallest!,
      largest: lastKey,
    };
  }
}
