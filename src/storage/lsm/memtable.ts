/**
 * The memtable: a skip list of versioned entries, ordered by (key ascending, sequence descending).
 *
 * Every write lands here after its WAL record is durable. Several versions of a key may coexist so that
 * an iterator's snapshot (a sequence number) keeps reading the versions it saw. A memtable is frozen
 * (made immutable) when it reaches its size limit and is then flushed to a table in the background.
 *
 * The skip list follows LevelDB's db/skiplist.h: towers of height h with probability 4^-(h-1), at most
 * 12 levels (4^12 = 16M entries before the expected search cost degrades). Its coin flips come from a
 * seeded generator so runs are reproducible.
 */
import { compareBytes } from "../bytes.js";
import { KIND_DELETE } from "./batch-format.js";

const MAX_HEIGHT = 12;
/** Approximate per-entry overhead of a node (object, tower array, views), for size accounting. */
const NODE_OVERHEAD_BYTES = 96;

export interface MemEntry {
  readonly key: Uint8Array;
  readonly seq: number;
  readonly kind: number;
  readonly value: Uint8Array;
}

interface Node extends MemEntry {
  readonly next: (Node | null)[];
}

export class Memtable {
  private readonly head: Node;
  private height = 1;
  private rng: number;
  /** Approximate memory use in bytes. */
  bytes = 0;
  entries = 0;
  /** Number of the WAL file that holds this memtable's writes. */
  readonly walNumber: number;
  minSeq = Number.POSITIVE_INFINITY;
  maxSeq = 0;

  constructor(walNumber: number, seed = 0x9e3779b9) {
    this.walNumber = walNumber;
    this.rng = seed | 1;
    this.head = {
      key: new Uint8Array(0),
      seq: 0,
      kind: KIND_DELETE,
      value: new Uint8Array(0),
      next: new Array(MAX_HEIGHT).fill(null),
    };
  }

  private randomHeight(): number {
    let h = 1;
    // xorshift32
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x;
    let bits = x >>> 0;
    while (h < MAX_HEIGHT && (bits & 3) === 0) {
      h++;
      bits >>>= 2;
    }
    return h;
  }

  /** Is node ordered before (key, seq)? Order: key ascending, then sequence descending. */
  private static before(node: Node, key: Uint8Array, seq: number): boolean {
    const c = compareBytes(node.key, key);
    return c < 0 || (c === 0 && node.seq > seq);
  }

  /** First node at or after (key, seq), filling `prev` with the last node before it on each level. */
  private findGreaterOrEqual(key: Uint8Array, seq: number, prev: Node[] | null): Node | null {
    let x = this.head;
    let level = this.height - 1;
    for (;;) {
      const next = x.next[level]!;
      if (next !== null && Memtable.before(next, key, seq)) {
        x = next;
      } else {
        if (prev !== null) prev[level] = x;
        if (level === 0) return next;
        level--;
      }
    }
  }

  /** Adds a version. (key, seq) pairs are unique: sequence numbers are never reused. */
  add(key: Uint8Array, seq: number, kind: number, value: Uint8Array): void {
    const prev: Node[] = new Array(MAX_HEIGHT);
    this.findGreaterOrEqual(key, seq, prev);
    const h = this.randomHeight();
    if (h > this.height) {
      for (let i = this.height; i < h; i++) prev[i] = this.head;
      this.height = h;
    }
    const node: Node = { key, seq, kind, value, next: new Array(h) };
    for (let i = 0; i < h; i++) {
      node.next[i] = prev[i]!.next[i]!;
      prev[i]!.next[i] = node;
    }
    this.bytes += key.length + value.length + NODE_OVERHEAD_BYTES;
    this.entries++;
    if (seq < this.minSeq) this.minSeq = seq;
    if (seq > this.maxSeq) this.maxSeq = seq;
  }

  /** The newest version of `key` with sequence <= `snapshot`, or undefined if the memtable has none. */
  get(key: Uint8Array, snapshot: number): MemEntry | undefined {
    const n = this.findGreaterOrEqual(key, snapshot, null);
    if (n !== null && compareBytes(n.key, key) === 0) return n;
    return undefined;
  }

  /** Iterator over the newest version (<= snapshot) of each key, tombstones included. */
  iterator(snapshot: number): MemtableIterator {
    return new MemtableIterator(this, snapshot);
  }

  /** @internal First node at or after key (any version), or the first node. */
  seekNode(key: Uint8Array | undefined): Node | null {
    if (key === undefined) return this.head.next[0]!;
    return this.findGreaterOrEqual(key, Number.MAX_SAFE_INTEGER, null);
  }
}

/** Yields, for each key, its newest version visible at the snapshot. */
export class MemtableIterator {
  private node: Node | null = null;
  constructor(
    private readonly table: Memtable,
    private readonly snapshot: number,
  ) {}

  get valid(): boolean {
    return this.node !== null;
  }
  get key(): Uint8Array {
    return this.node!.key;
  }
  get value(): Uint8Array {
    return this.node!.value;
  }
  get kind(): number {
    return this.node!.kind;
  }

  seek(target: Uint8Array | undefined): void {
    this.node = this.table.seekNode(target) as Node | null;
    this.skipInvisible();
  }

  next(): void {
    const key = this.node!.key;
    let n = this.node!.next[0]!;
    while (n !== null && compareBytes(n.key, key) === 0) n = n.next[0]!;
    this.node = n;
    this.skipInvisible();
  }

  /** Moves past versions newer than the snapshot (the first remaining version of a key is the newest visible). */
  private skipInvisible(): void {
    let n = this.node;
    while (n !== null && n.seq > this.snapshot) n = n.next[0]!;
    this.node = n;
  }
}
