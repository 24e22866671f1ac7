/**
 * Bloom filter, one per table, over all of its keys.
 *
 * Layout (the filter block's content): `bits` bytes of bit array, then one byte `k` (probes per key).
 * Probing uses double hashing from one 32-bit hash (Kirsch and Mitzenmacher): probe j tests bit
 * (h + j*delta) mod m, with delta = h rotated by 17 bits, as LevelDB's bloom.cc does.
 * With 10 bits per key and k = 7, the false-positive rate is about 0.8%.
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
