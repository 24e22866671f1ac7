/**
 * The block cache: verified data blocks, least recently used first out, bounded in bytes.
 *
 * Holds parsed, verified blocks (checked once, when read from disk). Keyed by table file number and block index (one number: file * 2^20 + block; tables hold fewer than
 * 2^20 blocks, which the table builder enforces). A hit moves the entry to the back of the recency
 * list; the front is evicted first. Blocks of deleted tables are dropped by `evictFile`.
 */
export const MAX_BLOCKS_PER_TABLE = 1 << 20;

/** What the cache holds: anything that knows its size. */
export interface Cacheable {
  readonly byteLength: number;
}

/** One cached block in the recency list (most recently used at the tail). */
interface Entry<T> {
  readonly key: number;
  value: T;
  prev: Entry<T> | undefined;
  next: Entry<T> | undefined;
}

/**
 * A Map finds the entry; an intrusive doubly-linked list keeps the recency order, so a hit, an insert
 * and an eviction are each O(1) with no allocation beyond the entry. (An earlier version used the Map's
 * insertion order, deleting and re-setting on every hit: V8 leaves a hole per delete, and evicting by
 * iterating from the front walked over all of them, a quarter of the time of a cached read workload.)
 */
export class BlockCache<T extends Cacheable = Cacheable> {
  private readonly map = new Map<number, Entry<T>>();
  private head: Entry<T> | undefined;
  private tail: Entry<T> | undefined;
  bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacityBytes: number) {}

  static key(fileNumber: number, block: number): number {
    return fileNumber * MAX_BLOCKS_PER_TABLE + block;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: number): T | undefined {
    const e = this.map.get(key);
    if (e === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    if (e !== this.tail) {
      this.unlink(e);
      this.append(e);
    }
    return e.value;
  }

  /** A lookup that neither counts nor refreshes the entry's place (bulk readers). */
  peek(key: number): T | undefined {
    return this.map.get(key)?.value;
  }

  insert(key: number, block: T): void {
    if (block.byteLength > this.capacityBytes) return;
    const old = this.map.get(key);
    if (old !== undefined) {
      this.bytes -= old.value.byteLength;
      old.value = block;
      this.unlink(old);
      this.append(old);
    } else {
      const e: Entry<T> = { key, value: block, prev: undefined, next: undefined };
      this.map.set(key, e);
      this.append(e);
    }
    this.bytes += block.byteLength;
    while (this.bytes > this.capacityBytes && this.head !== undefined) this.remove(this.head);
  }

  evictFile(fileNumber: number, blocks: number): void {
    for (let i = 0; i < blocks; i++) {
      const e = this.map.get(BlockCache.key(fileNumber, i));
      if (e !== undefined) this.remove(e);
    }
  }

  private remove(e: Entry<T>): void {
    this.unlink(e);
    this.map.delete(e.key);
    this.bytes -= e.value.byteLength;
  }

  private unlink(e: Entry<T>): void {
    if (e.prev === undefined) this.head = e.next;
    else e.prev.next = e.next;
    if (e.next === undefined) this.tail = e.prev;
    else e.next.prev = e.prev;
    e.prev = undefined;
    e.next = undefined;
  }

  private append(e: Entry<T>): void {
    e.prev = this.tail;
    e.next = undefined;
    if (this.tail === undefined) this.head = e;
    else this.tail.next = e;
    this.tail = e;
  }
}
