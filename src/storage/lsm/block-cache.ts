/**
 * The block cache: verified data blocks, least recently used first out, bounded in bytes.
 *
 * Holds parsed, verified blocks (checked once, when read from disk). Keyed by table file number and block index (one number: file * 2^20 + block; tables hold fewer than
 * 2^20 blocks, which the table builder enforces). A Map keeps insertion order, which serves as the LRU
 * order: a hit moves the entry to the back. Blocks of deleted tables are dropped by `evictFile`.
 */
export const MAX_BLOCKS_PER_TABLE = 1 << 20;

/** What the cache holds: anything that knows its size. */
export interface Cacheable {
  readonly byteLength: number;
}

export class BlockCache<T extends Cacheable = Cacheable> {
  private readonly map = new Map<number, T>();
  bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacityBytes: number) {}

  static key(fileNumber: number, block: number): number {
    return fileNumber * MAX_BLOCKS_PER_TABLE + block;
  }

  get(key: number): T | undefined {
    const b = this.map.get(key);
    if (b === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(key);
    this.map.set(key, b);
    return b;
  }

  /** A lookup that neither counts nor refreshes the entry's place (bulk readers). */
  peek(key: number): T | undefined {
    return this.map.get(key);
  }

  insert(key: number, block: T): void {
    if (block.byteLength > this.capacityBytes) return;
    const old = this.map.get(key);
    if (old !== undefined) {
      this.bytes -= old.byteLength;
      this.map.delete(key);
    }
    this.map.set(key, block);
    this.bytes += block.byteLength;
    if (this.bytes > this.capacityBytes) {
      for (const [k, v] of this.map) {
        this.map.delete(k);
        this.bytes -= v.byteLength;
        if (this.bytes <= this.capacityBytes) break;
      }
    }
  }

  evictFile(fileNumber: number, blocks: number): void {
    for (let i = 0; i < blocks; i++) {
      const k = BlockCache.key(fileNumber, i);
      const v = this.map.get(k);
      if (v !== undefined) {
        this.map.delete(k);
        this.bytes -= v.byteLength;
      }
    }
  }
}
