/**
 * A checked data block of a table (layout in table-format.ts): its entries are validated once, when it is
 * loaded, so that later reads cannot run off it.
 *
 * A Block is either private (its own buffer: iterators, compactions, uncached reads) or one of the block
 * cache's slots (block-cache.ts), whose buffer is reused for another block once the slot is evicted.
 * A slot block is only ever used synchronously, between the cache lookup and the end of the same call:
 * anything that holds a block across an await takes a private copy (`copy()`). Do not "optimise" that away:
 * a reused slot under an iterator would hand out another block's bytes.
 */
import { CorruptionError } from "../errors.js";
import type { BlockOwner } from "./block-cache.js";
import { ENTRY_HEADER_BYTES } from "./table-format.js";

/**
 * Little-endian u32 at p, read byte by byte: Buffer.readUInt32LE's argument checks cost more than the read
 * (docs/performance.md, "storage read path").
 */
function u32(d: Buffer, p: number): number {
  return (d[p]! | (d[p + 1]! << 8) | (d[p + 2]! << 16) | (d[p + 3]! << 24)) >>> 0;
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

export class Block {
  /** The content is buf[0, length). */
  length = 0;
  count = 0;
  private offsetsAt = 0;
  /** Block-cache bookkeeping (a slot block): the table reader and block index it is cached as, if any. */
  owner: BlockOwner | undefined;
  ownerIndex = -1;
  /** CLOCK's reference bit: set by a hit, cleared by the sweeping hand. */
  referenced = false;

  constructor(readonly buf: Buffer) {}

  /** A private block over `content` (checksum already verified), validated. */
  static parse(content: Buffer, file: string, fileOffset: number): Block {
    const b = new Block(content);
    b.load(content.length, file, fileOffset);
    return b;
  }

  /**
   * Takes buf[0, length) as this block's content (checksum already verified) and validates its structure.
   * On failure the block is left empty.
   */
  load(length: number, file: string, fileOffset: number): void {
    this.length = 0;
    this.count = 0;
    const data = this.buf;
    if (length < 4 || length > data.length)
      throw new CorruptionError(file, fileOffset, "data block too short");
    const count = u32(data, length - 4);
    const offsetsAt = length - 4 - 4 * count;
    if (offsetsAt < 0) throw new CorruptionError(file, fileOffset, "data block entry count too large");
    let prevEnd = 0;
    for (let i = 0; i < count; i++) {
      const o = u32(data, offsetsAt + 4 * i);
      if (o !== prevEnd || o + ENTRY_HEADER_BYTES > offsetsAt)
        throw new CorruptionError(file, fileOffset, `data block entry ${i} misplaced`);
      const kind = data[o]!;
      if (kind > 1) throw new CorruptionError(file, fileOffset, `data block entry ${i} has bad kind ${kind}`);
      prevEnd = o + ENTRY_HEADER_BYTES + (data[o + 1]! | (data[o + 2]! << 8)) + u32(data, o + 3);
      if (prevEnd > offsetsAt) throw new CorruptionError(file, fileOffset, `data block entry ${i} overruns`);
    }
    if (prevEnd !== offsetsAt) throw new CorruptionError(file, fileOffset, "data block has trailing bytes");
    this.length = length;
    this.count = count;
    this.offsetsAt = offsetsAt;
  }

  /** Makes this (slot) block a copy of `other`, already validated. */
  assign(other: Block): void {
    if (other.length > this.buf.length) throw new Error("block: copy larger than the slot");
    other.buf.copy(this.buf, 0, 0, other.length);
    this.length = other.length;
    this.count = other.count;
    this.offsetsAt = other.offsetsAt;
  }

  /** A private copy, for a reader that holds the block across an await. */
  copy(): Block {
    const b = new Block(Buffer.allocUnsafe(this.length));
    this.buf.copy(b.buf, 0, 0, this.length);
    b.length = this.length;
    b.count = this.count;
    b.offsetsAt = this.offsetsAt;
    return b;
  }

  offset(i: number): number {
    return u32(this.buf, this.offsetsAt + 4 * i);
  }
  kindAt(o: number): number {
    return this.buf[o]!;
  }
  private keyLengthAt(o: number): number {
    const d = this.buf;
    return d[o + 1]! | (d[o + 2]! << 8);
  }
  keyAt(o: number): Buffer {
    return this.buf.subarray(o + ENTRY_HEADER_BYTES, o + ENTRY_HEADER_BYTES + this.keyLengthAt(o));
  }
  valueAt(o: number): Buffer {
    const start = o + ENTRY_HEADER_BYTES + this.keyLengthAt(o);
    return this.buf.subarray(start, start + u32(this.buf, o + 3));
  }
  /** A copy of the value at entry offset `o`, in a new Buffer. */
  copyValueAt(o: number): Buffer {
    const b = this.buf;
    const start = o + ENTRY_HEADER_BYTES + this.keyLengthAt(o);
    const vlen = u32(b, o + 3);
    const out = Buffer.allocUnsafe(vlen);
    // A plain view and TypedArray.set: Buffer.copy's argument handling cost more than the copy (measured).
    out.set(new Uint8Array(b.buffer, b.byteOffset + start, vlen));
    return out;
  }
  compareKeyAt(o: number, key: Uint8Array): number {
    return compareAt(this.buf, o + ENTRY_HEADER_BYTES, this.keyLengthAt(o), key);
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
