/**
 * Bloom filter, one per table, over all of its keys.
 *
 * Layout (the filter block's content): `bits` bytes of bit array, then one byte `k` (probes per key).
 * Probing uses double hashing from one 32-bit hash (Kirsch and Mitzenmacher): probe j tests bit
 * (h + j*delta) mod m, with delta = h rotated by 17 bits, as LevelDB's bloom.cc does.
 * With 10 bits per key and k = 7, the false-positive rate is about 0.8%.
 */

/** 32-bit MurmurHash3 (x86_32) of `key`. */
export function hash32(key: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed | 0;
  const n = key.length;
  const blocks = n & ~3;
  let i = 0;
  for (; i < blocks; i += 4) {
    let k = key[i]! | (key[i + 1]! << 8) | (key[i + 2]! << 16) | (key[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const rem = n & 3;
  if (rem > 0) {
    let k = 0;
    if (rem === 3) k ^= key[i + 2]! << 16;
    if (rem >= 2) k ^= key[i + 1]! << 8;
    k ^= key[i]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

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
