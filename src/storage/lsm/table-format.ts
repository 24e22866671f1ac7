/**
 * The sorted table (SSTable) file format. Tables are written once, by the table builder, and never
 * modified; every block is checked against its checksum when read from disk.
 *
 *   [data block 0] ... [data block n-1] [filter block] [index block] [footer]
 *
 * Data block (target 4 KiB; one entry may make a block larger):
 *   entries, each:  kind u8 (1 put, 0 tombstone) | keyLen u16 LE | valueLen u32 LE | key | value
 *   offsets         u32 LE per entry (for binary search; no prefix compression: ARCHITECTURE.md, "Format
 *                   decisions")
 *   count           u32 LE
 *   trailer
 *
 * Filter block: the bloom filter (bloom.ts: blocked in format 2, the legacy layout in format 1), then the
 * trailer.
 *
 * Index block: per data block, in key order:
 *   keyLen u16 LE | last key of the block | offset u64 LE | size u32 LE (size includes the trailer)
 *   then count u32 LE, then the trailer.
 *
 * Trailer of every block (5 bytes): blockType u8 (1 data, 2 index, 3 filter) | crc32 u32 LE of all the
 *   block's bytes before the crc (content and type byte). The type byte catches a read of the wrong block.
 *
 * Footer (48 bytes, at the end of the file):
 *   0 indexOffset u64 | 8 indexSize u32 | 12 filterOffset u64 | 20 filterSize u32 | 24 entryCount u64
 *   32 formatVersion u32 (2; 1 is still read) | 36 crc32 u32 of bytes 0..36 and 40..48 | 40 magic "RSSTABLE"
 *
 * Versions: 1 had the legacy bloom filter; 2 (written since) has the cache-line blocked one. Nothing else
 * differs, and a reader takes both.
 */
import { crc32 } from "node:zlib";
import { readU64, writeU64 } from "../bytes.js";
import { CorruptionError } from "../errors.js";

export const TABLE_MAGIC = "RSSTABLE";
export const TABLE_FORMAT_VERSION = 2;
/** The oldest table format this reader still takes. */
export const TABLE_FORMAT_MIN_VERSION = 1;
export const FOOTER_BYTES = 48;
export const BLOCK_TRAILER_BYTES = 5;
export const ENTRY_HEADER_BYTES = 7;
export const BLOCK_DATA = 1;
export const BLOCK_INDEX = 2;
export const BLOCK_FILTER = 3;
export const MAX_TABLE_KEY_BYTES = 0xffff;

export interface Footer {
  readonly indexOffset: number;
  readonly indexSize: number;
  readonly filterOffset: number;
  readonly filterSize: number;
  readonly entryCount: number;
  /** The table's format version (which bloom filter layout it has). */
  readonly version: number;
}

export function encodeFooter(f: Footer): Buffer {
  const b = Buffer.alloc(FOOTER_BYTES);
  writeU64(b, 0, f.indexOffset);
  b.writeUInt32LE(f.indexSize, 8);
  writeU64(b, 12, f.filterOffset);
  b.writeUInt32LE(f.filterSize, 20);
  writeU64(b, 24, f.entryCount);
  b.writeUInt32LE(f.version, 32);
  b.write(TABLE_MAGIC, 40, 8, "latin1");
  b.writeUInt32LE(footerCrc(b), 36);
  return b;
}

function footerCrc(b: Buffer): number {
  return crc32(b.subarray(40, 48), crc32(b.subarray(0, 36)));
}

export function decodeFooter(file: string, fileSize: number, b: Buffer): Footer {
  const at = fileSize - FOOTER_BYTES;
  if (b.toString("latin1", 40, 48) !== TABLE_MAGIC)
    throw new CorruptionError(file, at + 40, "bad table magic");
  if (b.readUInt32LE(36) !== footerCrc(b)) throw new CorruptionError(file, at, "footer checksum mismatch");
  const version = b.readUInt32LE(32);
  if (version < TABLE_FORMAT_MIN_VERSION || version > TABLE_FORMAT_VERSION)
    throw new CorruptionError(file, at + 32, `unsupported table version ${version}`);
  try {
    const f: Footer = {
      indexOffset: readU64(b, 0),
      indexSize: b.readUInt32LE(8),
      filterOffset: readU64(b, 12),
      filterSize: b.readUInt32LE(20),
      entryCount: readU64(b, 24),
      version,
    };
    if (f.filterOffset + f.filterSize > at || f.indexOffset + f.indexSize > at)
      throw new RangeError("block extends past the footer");
    if (f.indexSize < BLOCK_TRAILER_BYTES + 4 || f.filterSize < BLOCK_TRAILER_BYTES + 2)
      throw new RangeError("block too small");
    return f;
  } catch (err) {
    throw new CorruptionError(file, at, "footer fields out of range", { cause: err });
  }
}

/** Appends the trailer (type, crc) to a block's content in place: `block` has 5 spare bytes at its end. */
export function sealBlock(block: Buffer, type: number): void {
  const typeAt = block.length - BLOCK_TRAILER_BYTES;
  block[typeAt] = type;
  block.writeUInt32LE(crc32(block.subarray(0, typeAt + 1)), typeAt + 1);
}

/**
 * Checks the block of `size` bytes at the start of `buf` (read from disk at `offset`); returns its content
 * length (without the trailer). The same check as verifyBlock, for a block read into a reused buffer.
 */
export function checkBlock(file: string, offset: number, buf: Buffer, size: number, type: number): number {
  if (size < BLOCK_TRAILER_BYTES) throw new CorruptionError(file, offset, "block shorter than its trailer");
  const typeAt = size - BLOCK_TRAILER_BYTES;
  if (buf.readUInt32LE(typeAt + 1) !== crc32(buf.subarray(0, typeAt + 1)))
    throw new CorruptionError(file, offset, "block checksum mismatch");
  if (buf[typeAt] !== type)
    throw new CorruptionError(file, offset, `block type ${buf[typeAt]} where ${type} expected`);
  return typeAt;
}

/** Checks a block read from disk; returns its content (without the trailer). */
export function verifyBlock(file: string, offset: number, block: Buffer, type: number): Buffer {
  if (block.length < BLOCK_TRAILER_BYTES)
    throw new CorruptionError(file, offset, "block shorter than its trailer");
  const typeAt = block.length - BLOCK_TRAILER_BYTES;
  if (block.readUInt32LE(typeAt + 1) !== crc32(block.subarray(0, typeAt + 1)))
    throw new CorruptionError(file, offset, "block checksum mismatch");
  if (block[typeAt] !== type)
    throw new CorruptionError(file, offset, `block type ${block[typeAt]} where ${type} expected`);
  return block.subarray(0, typeAt);
}
