/**
 * Byte helpers shared by the storage formats: ordering, varints and 64-bit integers.
 *
 * Keys are compared as unsigned bytes, lexicographically (memcmp order), which is the order of every
 * sorted structure in the engine: memtable, data blocks, index blocks and sorted runs.
 */

/** memcmp order. A JS loop beats `Buffer.compare` for the short keys a key-value store holds. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  if (n > 64) {
    const c = Buffer.compare(a, b);
    return c;
  }
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/**
 * The first 6 bytes of a key, zero-padded, as a number: a < b in memcmp order implies prefix(a) <=
 * prefix(b), so unequal prefixes decide a comparison.
 */
export function keyPrefix(b: Uint8Array, o: number, n: number): number {
  if (n >= 6)
    return (
      ((b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!) * 16777216 +
      ((b[o + 3]! << 16) | (b[o + 4]! << 8) | b[o + 5]!)
    );
  let p = 0;
  for (let i = 0; i < 6; i++) p = p * 256 + (i < n ? b[o + i]! : 0);
  return p;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return compareBytes(a, b) === 0;
}

/** Number of bytes the unsigned LEB128 encoding of `v` takes (v < 2^53). */
export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Writes `v` as unsigned LEB128 at `pos`; returns the position after it. */
export function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/**
 * Reads an unsigned LEB128 at `pos`. Returns the value, and stores the next position in `out[0]`.
 * Throws a RangeError on a truncated or over-long varint (callers turn it into a corruption error).
 */
export function readVarint(buf: Uint8Array, pos: number, end: number, out: Int32Array | number[]): number {
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (pos >= end) throw new RangeError("truncated varint");
    const b = buf[pos++]!;
    result += (b & 0x7f) * mul;
    if (b < 0x80) {
      out[0] = pos;
      return result;
    }
    mul *= 128;
  }
  throw new RangeError("varint too long");
}

/** Writes a non-negative safe integer as 8 bytes little-endian. */
export function writeU64(buf: Buffer, pos: number, v: number): void {
  buf.writeUInt32LE(v % 0x1_0000_0000, pos);
  buf.writeUInt32LE(Math.floor(v / 0x1_0000_0000), pos + 4);
}

/** Reads 8 bytes little-endian; throws RangeError past 2^53 (never written by us: corruption). */
export function readU64(buf: Buffer, pos: number): number {
  const lo = buf.readUInt32LE(pos);
  const hi = buf.readUInt32LE(pos + 4);
  if (hi > 0x1f_ffff) throw new RangeError("u64 beyond 2^53");
  return hi * 0x1_0000_0000 + lo;
}

export function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
