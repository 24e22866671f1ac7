/**
 * Bloom filters, one per table, over all of its keys. Two layouts; the table's format version says which.
 *
 * Blocked (table format 2, what the builder writes): the filter is an array of 64-byte blocks (one CPU
 * cache line each), then one byte `k` (probes per key). A key's 32-bit hash h picks one block (h scaled to
 * the block count); its k probes all fall in that block, at bit positions taken 9 bits at a time from a
 * second hash of h (the top bits of h2, h2 * 0x9e3779b9, ...), as RocksDB's FastLocalBloom does. A lookup
 * costs one CPU cache miss instead of k, and the misses are most of a check's cost (docs/performance.md,
 * "storage read path"). The reader keeps the blocks 64-byte aligned. With 10 bits per key and k = 6 the
 * false-positive rate is about 1%.
 *
 * Legacy (table format 1): `bits` bytes of bit array, then one byte `k`. Probing uses double hashing from
 * one 32-bit hash (Kirsch and Mitzenmacher): probe j tests bit (h + j*delta) mod m, with delta = h rotated
 * by 17 bits, as LevelDB's bloom.cc does. Kept to read tables written before format 2.
 */
import { hash32 } from "../../core/hash.js";

export { hash32 };

const BLOOM_SEED = 0xbc9f1d34;

export function bloomHash(key: Uint8Array): number {
  return hash32(key, BLOOM_SEED);
}

export function probesForBitsPerKey(bitsPerKey: number): number {
  return Math.max(1, Math.min(30, Math.round(bitsPerKey * 0.69)));
}

/** Builds the filter block content from the keys' bloom hashes. */
export function buildBloom(hashes: Uint32Array, count: number, bitsPerKey: number): Buffer {
  const k = probesForBitsPerKey(bitsPerKey);
  const bytes = Math.max(8, Math.ceil((count * bitsPerKey) / 8));
  const bits = bytes * 8;
  const out = Buffer.alloc(bytes + 1);
  for (let i = 0; i < count; i++) {
    let h = hashes[i]!;
    const delta = ((h >>> 17) | (h << 15)) >>> 0;
    for (let j = 0; j < k; j++) {
      const bit = h % bits;
      out[bit >>> 3]! |= 1 << (bit & 7);
      h = (h + delta) >>> 0;
    }
  }
  out[bytes] = k;
  return out;
}

/** A parsed filter: `mayContain` is false only if the key is certainly absent. */
export class BloomFilter {
  private readonly bits: number;
  private readonly k: number;
  constructor(private readonly data: Uint8Array) {
    if (data.length < 2) throw new RangeError("bloom filter too short");
    this.bits = (data.length - 1) * 8;
    this.k = data[data.length - 1]!;
    if (this.k < 1 || this.k > 30) throw new RangeError(`bloom filter has bad probe count ${this.k}`);
  }

  mayContainHash(hash: number): boolean {
    let h = hash;
    const delta = ((h >>> 17) | (h << 15)) >>> 0;
    const bits = this.bits;
    const data = this.data;
    for (let j = 0; j < this.k; j++) {
      const bit = h % bits;
      if ((data[bit >>> 3]! & (1 << (bit & 7))) === 0) return false;
      h = (h + delta) >>> 0;
    }
    return true;
  }
}

/** Bytes per filter block: a CPU cache line. */
const FILTER_BLOCK_BYTES = 64;

/** Probes per key of a blocked filter: fewer than a plain filter's, since its bits are less spread. */
export function blockedProbesForBitsPerKey(bitsPerKey: number): number {
  return Math.max(1, Math.min(24, Math.round(bitsPerKey * 0.6)));
}

/** The second hash, for the bit positions inside a block (MurmurHash3's finalizer of a salted h). */
function secondHash(h: number): number {
  let x = (h ^ 0x5bd1e995) >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The first byte of the block that hash h selects among `blocks`. */
function blockStart(h: number, blocks: number): number {
  return Math.floor((h / 4294967296) * blocks) * FILTER_BLOCK_BYTES;
}

/** Builds a blocked filter block's content from the keys' bloom hashes. */
export function buildBlockedBloom(hashes: Uint32Array, count: number, bitsPerKey: number): Buffer {
  const k = blockedProbesForBitsPerKey(bitsPerKey);
  const blocks = Math.max(1, Math.ceil((count * bitsPerKey) / (8 * FILTER_BLOCK_BYTES)));
  const bytes = blocks * FILTER_BLOCK_BYTES;
  const out = Buffer.alloc(bytes + 1);
  for (let i = 0; i < count; i++) {
    const h = hashes[i]!;
    const base = blockStart(h, blocks);
    let h2 = secondHash(h);
    for (let j = 0; j < k; j++) {
      const bit = h2 >>> 23;
      out[base + (bit >>> 3)]! |= 1 << (bit & 7);
      h2 = Math.imul(h2, 0x9e3779b9) >>> 0;
    }
  }
  out[bytes] = k;
  return out;
}

/** A parsed blocked filter (a 64-byte aligned copy of the blocks): false only if the key is absent. */
export class BlockedBloomFilter {
  private readonly blocks: number;
  private readonly k: number;
  private readonly data: Uint8Array;
  constructor(content: Uint8Array) {
    const bytes = content.length - 1;
    if (bytes < FILTER_BLOCK_BYTES || bytes % FILTER_BLOCK_BYTES !== 0)
      throw new RangeError(`blocked bloom filter of ${content.length} bytes`);
    this.k = content[bytes]!;
    if (this.k < 1 || this.k > 24) throw new RangeError(`bloom filter has bad probe count ${this.k}`);
    this.blocks = bytes / FILTER_BLOCK_BYTES;
    const raw = Buffer.allocUnsafeSlow(bytes + FILTER_BLOCK_BYTES);
    const skip = (FILTER_BLOCK_BYTES - (raw.byteOffset % FILTER_BLOCK_BYTES)) % FILTER_BLOCK_BYTES;
    this.data = new Uint8Array(raw.buffer, raw.byteOffset + skip, bytes);
    this.data.set(content.subarray(0, bytes));
  }

  mayContainHash(hash: number): boolean {
    const base = blockStart(hash, this.blocks);
    let h2 = secondHash(hash);
    const d = this.data;
    for (let j = 0; j < this.k; j++) {
      const bit = h2 >>> 23;
      if ((d[base + (bit >>> 3)]! & (1 << (bit & 7))) === 0) return false;
      h2 = Math.imul(h2, 0x9e3779b9) >>> 0;
    }
    return true;
  }
}
