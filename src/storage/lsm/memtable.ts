/**
 * The memtable: versioned entries ordered by (key ascending, sequence descending), in a B+ tree over an
 * arena.
 *
 * Every write lands here after its WAL record is durable. Several versions of a key may coexist so that
 * an iterator's snapshot (a sequence number) keeps reading the versions it saw. A memtable is frozen
 * (made immutable) when it reaches its size limit and is then flushed to a table in the background.
 * Entries are never removed.
 *
 * Layout (ARCHITECTURE.md, "Writes"; each choice measured on the write benchmark: docs/performance.md,
 * "storage write path"):
 * - The bytes of the operations live in an arena of large chunks, in the WAL batch encoding (kind, varint
 *   key length, varint value length, key, value): a write's operations are copied in with one copy of its
 *   record's body. So a write leaves no object per operation on the heap for a young-generation
 *   collection to copy (a skip list of node objects, each with its link array and key views, would).
 * - The tree's nodes keep, per entry, four numbers in one Float64Array: the key's first 6 bytes as an
 *   order-preserving number, the sequence, and the arena chunk and offset of the operation. A search is a
 *   few binary searches over contiguous memory; the key bytes are compared only when 6-byte prefixes tie.
 *   (A skip list's scattered node objects make each insert a long chain of CPU cache misses.)
 *
 * Iterators hold a position (leaf, index) that an insert can shift; they notice through `mods` and find
 * their entry again (entries never change order relative to each other, they only move between slots).
 */
import { keyPrefix } from "../bytes.js";
import { KIND_PUT } from "./batch-format.js";

/** Memory per entry beyond its encoded bytes in the arena: its slot of 4 doubles in a leaf ~2/3 full. */
const ENTRY_OVERHEAD_BYTES = 48;
/** Entries per leaf and children per inner node. */
const DEFAULT_NODE_CAPACITY = 64;
/** Numbers per entry in a node: prefix, sequence, chunk, offset. */
const STRIDE = 4;
const FIRST_CHUNK_BYTES = 64 * 1024;
const MAX_CHUNK_BYTES = 1024 * 1024;

/** memcmp of a[ao, ao+al) and b[bo, bo+bl). */
function compareRange(a: Uint8Array, ao: number, al: number, b: Uint8Array, bo: number, bl: number): number {
  const n = Math.min(al, bl);
  for (let i = 0; i < n; i++) {
    const d = a[ao + i]! - b[bo + i]!;
    if (d !== 0) return d;
  }
  return al - bl;
}

/** Where an encoded operation's parts are. Reused by the decoder, so decoding allocates nothing. */
export interface OpView {
  kind: number;
  keyOffset: number;
  keyLength: number;
  valueOffset: number;
  valueLength: number;
}

/** Decodes the operation at `off` of `buf` (written by this module or checked by the WAL reader). */
export function decodeOp(buf: Uint8Array, off: number, out: OpView): void {
  const kind = buf[off]!;
  let pos = off + 1;
  let klen = buf[pos++]!;
  if (klen >= 0x80) {
    klen &= 0x7f;
    let mul = 128;
    for (;;) {
      const b = buf[pos++]!;
      klen += (b & 0x7f) * mul;
      if (b < 0x80) break;
      mul *= 128;
    }
  }
  let vlen = 0;
  if (kind === KIND_PUT) {
    vlen = buf[pos++]!;
    if (vlen >= 0x80) {
      vlen &= 0x7f;
      let mul = 128;
      for (;;) {
        const b = buf[pos++]!;
        vlen += (b & 0x7f) * mul;
        if (b < 0x80) break;
        mul *= 128;
      }
    }
  }
  out.kind = kind;
  out.keyOffset = pos;
  out.keyLength = klen;
  out.valueOffset = pos + klen;
  out.valueLength = vlen;
}

function varintBytes(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function putVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** One version found by `get` or under an iterator: views of the arena made on demand. */
export class MemEntry {
  constructor(
    private readonly buf: Buffer,
    private readonly keyOffset: number,
    private readonly keyLength: number,
    private readonly valueOffset: number,
    private readonly valueLength: number,
    readonly seq: number,
    readonly kind: number,
  ) {}

  get key(): Buffer {
    return this.buf.subarray(this.keyOffset, this.keyOffset + this.keyLength);
  }

  get value(): Buffer {
    return this.buf.subarray(this.valueOffset, this.valueOffset + this.valueLength);
  }

  /** A copy of the value (readers never get views of memtable memory). */
  copyValue(): Buffer {
    const out = Buffer.allocUnsafe(this.valueLength);
    this.buf.copy(out, 0, this.valueOffset, this.valueOffset + this.valueLength);
    return out;
  }
}

class Leaf {
  n = 0;
  /** Per entry: prefix, sequence, chunk, offset. */
  readonly d: Float64Array;
  next: Leaf | null = null;
  constructor(cap: number) {
    this.d = new Float64Array(cap * STRIDE);
  }
}

class Inner {
  n = 0;
  /** Per child i >= 1: the smallest entry of kids[i] when it was made (slot 0 unused). */
  readonly d: Float64Array;
  readonly kids: (Leaf | Inner | undefined)[];
  constructor(cap: number) {
    this.d = new Float64Array(cap * STRIDE);
    this.kids = new Array(cap).fill(undefined);
  }
}

/** A search target: (key, seq) with the key's prefix. Reused, so a search allocates nothing. */
interface Probe {
  p: number;
  buf: Uint8Array;
  off: number;
  len: number;
  seq: number;
}

const NO_BYTES = new Uint8Array(0);

/**
 * A Buffer over a SharedArrayBuffer. The memtable's chunks are shared so that a flush in a worker thread
 * reads them where they are (a frozen memtable's bytes never change). The engine's group buffers too.
 */
export function sharedBuffer(bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes));
}
const EMPTY_BUFFER = Buffer.alloc(0);

export class Memtable {
  private root: Leaf | Inner;
  private height = 1;
  private readonly cap: number;
  /** The arena's chunks and adopted buffers; entries name them by index. */
  private readonly chunks: Buffer[] = [];
  /** The arena chunk that copies go to, and its index in `chunks`. */
  private chunk: Buffer | undefined;
  private arenaIndex = -1;
  private chunkPos = 0;
  private readonly probe: Probe = { p: 0, buf: NO_BYTES, off: 0, len: 0, seq: 0 };
  private readonly op: OpView = { kind: 0, keyOffset: 0, keyLength: 0, valueOffset: 0, valueLength: 0 };
  /** The comparison's own scratch (a comparison runs while `op` describes the entry being inserted). */
  private readonly cmpOp: OpView = { kind: 0, keyOffset: 0, keyLength: 0, valueOffset: 0, valueLength: 0 };
  /** A split's separator, handed up the tree: its node, and its entry's 4 numbers in `sepD`. */
  private sepNode: Leaf | Inner | undefined;
  private readonly sepD = new Float64Array(STRIDE);
  /** Approximate memory use in bytes. */
  bytes = 0;
  entries = 0;
  /** Incremented by every insert: iterators re-find their place when it moved. */
  mods = 0;
  /** Number of the WAL file that holds this memtable's writes. */
  readonly walNumber: number;
  minSeq = Number.POSITIVE_INFINITY;
  maxSeq = 0;

  /** `nodeCapacity` (at least 4) is for tests that want many nodes from few entries. */
  constructor(walNumber: number, nodeCapacity = DEFAULT_NODE_CAPACITY) {
    if (!Number.isInteger(nodeCapacity) || nodeCapacity < 4)
      throw new RangeError("nodeCapacity must be >= 4");
    this.walNumber = walNumber;
    this.cap = nodeCapacity;
    this.root = new Leaf(nodeCapacity);
  }

  /** Room for `len` bytes at the end of the arena; returns the chunk index (the offset is chunkPos). */
  private reserve(len: number): number {
    if (this.chunk === undefined || this.chunkPos + len > this.chunk.length) {
      const prev = this.chunk?.length ?? FIRST_CHUNK_BYTES / 2;
      this.chunk = sharedBuffer(Math.max(len, Math.min(MAX_CHUNK_BYTES, prev * 2)));
      this.chunks.push(this.chunk);
      this.arenaIndex = this.chunks.length - 1;
      this.chunkPos = 0;
    }
    return this.arenaIndex;
  }

  /** Adds a version (copying key and value). (key, seq) pairs are unique: sequence numbers are never reused. */
  add(key: Uint8Array, seq: number, kind: number, value: Uint8Array): void {
    const put = kind === KIND_PUT;
    const len =
      1 + varintBytes(key.length) + key.length + (put ? varintBytes(value.length) + value.length : 0);
    const c = this.reserve(len);
    const buf = this.chunk!;
    const off = this.chunkPos;
    let pos = off;
    buf[pos++] = kind;
    pos = putVarint(buf, pos, key.length);
    if (put) pos = putVarint(buf, pos, value.length);
    buf.set(key, pos);
    pos += key.length;
    if (put) buf.set(value, pos);
    this.chunkPos = off + len;
    this.insertOp(c, off, seq);
  }

  /**
   * Adds the `count` operations encoded in `src` from `start` to `end` (the WAL batch encoding, well formed:
   * made by encodeBatchRecord or checked by the WAL reader), with sequences from `seq`, in one copy.
   * Returns the next sequence.
   */
  addBatch(src: Buffer, start: number, end: number, count: number, seq: number): number {
    const c = this.reserve(end - start);
    const buf = this.chunk!;
    const base = this.chunkPos;
    src.copy(buf, base, start, end);
    this.chunkPos = base + (end - start);
    let off = base;
    for (let i = 0; i < count; i++) off += this.insertOp(c, off, seq++);
    if (off !== base + (end - start)) throw new Error("memtable: batch length does not match its operations");
    return seq;
  }

  /**
   * Like addBatch, but keeps a reference to `src` instead of copying: the caller never changes the range
   * again (the writer loop's group buffers). Consecutive batches in one buffer share its chunk slot.
   */
  adoptBatch(src: Buffer, start: number, end: number, count: number, seq: number): number {
    let c = this.chunks.length - 1;
    if (c < 0 || this.chunks[c] !== src || c === this.arenaIndex) {
      this.chunks.push(src);
      c++;
    }
    let off = start;
    for (let i = 0; i < count; i++) off += this.insertOp(c, off, seq++);
    if (off !== end) throw new Error("memtable: batch length does not match its operations");
    return seq;
  }

  /** Inserts the operation at (chunk c, offset off) of the arena with sequence `seq`; returns its length. */
  private insertOp(c: number, off: number, seq: number): number {
    const buf = this.chunks[c]!;
    const op = this.op;
    decodeOp(buf, off, op);
    const len = op.valueOffset + op.valueLength - off;
    const q = this.probe;
    q.p = keyPrefix(buf, op.keyOffset, op.keyLength);
    q.buf = buf;
    q.off = op.keyOffset;
    q.len = op.keyLength;
    q.seq = seq;
    if (this.insertInto(this.root, this.height, q, c, off)) {
      const r = new Inner(this.cap);
      r.kids[0] = this.root;
      r.kids[1] = this.sepNode;
      r.d.set(this.sepD, STRIDE);
      r.n = 2;
      this.root = r;
      this.height++;
    }
    q.buf = NO_BYTES;
    this.sepNode = undefined;
    this.mods++;
    this.bytes += len + ENTRY_OVERHEAD_BYTES;
    this.entries++;
    if (seq < this.minSeq) this.minSeq = seq;
    if (seq > this.maxSeq) this.maxSeq = seq;
    return len;
  }

  /** Order of the entry at d[b..] relative to the probe: negative if the entry comes first. */
  private cmp(d: Float64Array, b: number, q: Probe): number {
    const ep = d[b]!;
    if (ep !== q.p) return ep < q.p ? -1 : 1;
    const buf = this.chunks[d[b + 2]! | 0]!;
    const op = this.cmpOp;
    decodeOp(buf, d[b + 3]! | 0, op);
    const c = compareRange(buf, op.keyOffset, op.keyLength, q.buf, q.off, q.len);
    if (c !== 0) return c;
    return q.seq - d[b + 1]!;
  }

  /** Index of the first entry of leaf `l` at or after the probe (l.n if none). */
  private leafLowerBound(l: Leaf, q: Probe): number {
    let lo = 0;
    let hi = l.n;
    const d = l.d;
    while (lo < hi) {
      const m = (lo + hi) >>> 1;
      if (this.cmp(d, m * STRIDE, q) < 0) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  /** The child of `n` to descend into: the last i >= 1 whose separator is <= the probe, else 0. */
  private innerChild(n: Inner, q: Probe): number {
    let lo = 1;
    let hi = n.n;
    const d = n.d;
    while (lo < hi) {
      const m = (lo + hi) >>> 1;
      if (this.cmp(d, m * STRIDE, q) <= 0) lo = m + 1;
      else hi = m;
    }
    return lo - 1;
  }

  /** Inserts into the subtree; on a split returns true with the new right node and separator in sep*. */
  private insertInto(node: Leaf | Inner, h: number, q: Probe, c: number, off: number): boolean {
    const cap = this.cap;
    if (h === 1) {
      const l = node as Leaf;
      const at = this.leafLowerBound(l, q);
      if (at < l.n && this.cmp(l.d, at * STRIDE, q) === 0)
        throw new Error("memtable: a (key, sequence) pair was added twice");
      if (l.n < cap) {
        leafInsertAt(l, at, q.p, q.seq, c, off);
        return false;
      }
      const r = new Leaf(cap);
      const half = cap >>> 1;
      r.d.set(l.d.subarray(half * STRIDE, l.n * STRIDE));
      r.n = l.n - half;
      l.n = half;
      r.next = l.next;
      l.next = r;
      if (at <= half) leafInsertAt(l, at, q.p, q.seq, c, off);
      else leafInsertAt(r, at - half, q.p, q.seq, c, off);
      this.sepNode = r;
      this.sepD.set(r.d.subarray(0, STRIDE));
      return true;
    }
    const n = node as Inner;
    const ci = this.innerChild(n, q);
    if (!this.insertInto(n.kids[ci]!, h - 1, q, c, off)) return false;
    const at = ci + 1;
    const child = this.sepNode!;
    if (n.n < cap) {
      innerInsertAt(n, at, this.sepD, child);
      return false;
    }
    const r = new Inner(cap);
    const half = cap >>> 1;
    r.d.set(n.d.subarray(half * STRIDE, n.n * STRIDE));
    for (let i = half; i < n.n; i++) {
      r.kids[i - half] = n.kids[i];
      n.kids[i] = undefined;
    }
    r.n = n.n - half;
    n.n = half;
    if (at <= half) innerInsertAt(n, at, this.sepD, child);
    else innerInsertAt(r, at - half, this.sepD, child);
    this.sepNode = r;
    this.sepD.set(r.d.subarray(0, STRIDE));
    return true;
  }

  /** The leaf holding the first entry at or after the probe, and its index (may equal the leaf's count). */
  private descend(q: Probe): Leaf {
    let node = this.root;
    for (let h = this.height; h > 1; h--) {
      const n = node as Inner;
      node = n.kids[this.innerChild(n, q)]!;
    }
    return node as Leaf;
  }

  private setProbe(key: Uint8Array, seq: number): Probe {
    const q = this.probe;
    q.p = keyPrefix(key, 0, key.length);
    q.buf = key;
    q.off = 0;
    q.len = key.length;
    q.seq = seq;
    return q;
  }

  /** The newest version of `key` with sequence <= `snapshot`, or undefined if the memtable has none. */
  get(key: Uint8Array, snapshot: number): MemEntry | undefined {
    if (this.entries === 0) return undefined;
    const q = this.setProbe(key, snapshot);
    let l: Leaf | null = this.descend(q);
    let i = this.leafLowerBound(l, q);
    q.buf = NO_BYTES;
    if (i === l.n) {
      l = l.next;
      i = 0;
      if (l === null || l.n === 0) return undefined;
    }
    const d = l.d;
    const b = i * STRIDE;
    if (d[b] !== q.p) return undefined;
    const buf = this.chunks[d[b + 2]! | 0]!;
    const op = this.op;
    decodeOp(buf, d[b + 3]! | 0, op);
    if (compareRange(buf, op.keyOffset, op.keyLength, key, 0, key.length) !== 0) return undefined;
    return new MemEntry(buf, op.keyOffset, op.keyLength, op.valueOffset, op.valueLength, d[b + 1]!, op.kind);
  }

  /**
   * The newest version of each key, in key order, as (chunk index, offset) pairs of the encoded operation
   * in `chunks` (the array itself, not a copy): what a flush writes. Call it on a frozen memtable.
   */
  latestOrder(): { chunks: readonly Buffer[]; order: Float64Array<ArrayBuffer>; count: number } {
    const order = new Float64Array(this.entries * 2);
    let count = 0;
    let node = this.root;
    for (let h = this.height; h > 1; h--) node = (node as Inner).kids[0]!;
    let prevBuf: Buffer = EMPTY_BUFFER;
    let prevOff = 0;
    let prevLen = -1;
    let prevP = -1;
    const op = this.op;
    for (let l: Leaf | null = node as Leaf; l !== null; l = l.next) {
      const d = l.d;
      for (let i = 0; i < l.n; i++) {
        const b = i * STRIDE;
        const c = d[b + 2]! | 0;
        const off = d[b + 3]! | 0;
        const buf = this.chunks[c]!;
        decodeOp(buf, off, op);
        // Versions of a key follow each other, newest first: keep the first of each key.
        if (d[b] === prevP && compareRange(buf, op.keyOffset, op.keyLength, prevBuf, prevOff, prevLen) === 0)
          continue;
        prevP = d[b]!;
        prevBuf = buf;
        prevOff = op.keyOffset;
        prevLen = op.keyLength;
        order[2 * count] = c;
        order[2 * count + 1] = off;
        count++;
      }
    }
    return { chunks: this.chunks, order, count };
  }

  /** Iterator over the newest version (<= snapshot) of each key, tombstones included. */
  iterator(snapshot: number): MemtableIterator {
    return new MemtableIterator(this, snapshot);
  }

  /** @internal Position of the first entry at or after (key, seq); the first entry if key is undefined. */
  _seek(key: Uint8Array | undefined, seq: number, pos: Position): void {
    if (key === undefined) {
      let node = this.root;
      for (let h = this.height; h > 1; h--) node = (node as Inner).kids[0]!;
      pos.leaf = node as Leaf;
      pos.i = 0;
      return;
    }
    const q = this.setProbe(key, seq);
    pos.leaf = this.descend(q);
    pos.i = this.leafLowerBound(pos.leaf, q);
    q.buf = NO_BYTES;
  }

  /** @internal Fills `it` with the entry at its position, moving to the next leaf as needed. */
  _settle(pos: Position, it: IteratorEntry): void {
    let l = pos.leaf;
    while (l !== null && pos.i >= l.n) {
      l = l.next;
      pos.i = 0;
    }
    pos.leaf = l;
    if (l === null) {
      it.valid = false;
      return;
    }
    const d = l.d;
    const b = pos.i * STRIDE;
    const buf = this.chunks[d[b + 2]! | 0]!;
    const op = this.op;
    decodeOp(buf, d[b + 3]! | 0, op);
    it.valid = true;
    it.buf = buf;
    it.prefix = d[b]!;
    it.seq = d[b + 1]!;
    it.kind = op.kind;
    it.keyOffset = op.keyOffset;
    it.keyLength = op.keyLength;
    it.valueOffset = op.valueOffset;
    it.valueLength = op.valueLength;
  }
}

function leafInsertAt(l: Leaf, at: number, p: number, seq: number, c: number, off: number): void {
  const d = l.d;
  if (at < l.n) d.copyWithin((at + 1) * STRIDE, at * STRIDE, l.n * STRIDE);
  const b = at * STRIDE;
  d[b] = p;
  d[b + 1] = seq;
  d[b + 2] = c;
  d[b + 3] = off;
  l.n++;
}

function innerInsertAt(n: Inner, at: number, sep: Float64Array, child: Leaf | Inner): void {
  if (at < n.n) {
    n.d.copyWithin((at + 1) * STRIDE, at * STRIDE, n.n * STRIDE);
    for (let i = n.n; i > at; i--) n.kids[i] = n.kids[i - 1];
  }
  n.d.set(sep, at * STRIDE);
  n.kids[at] = child;
  n.n++;
}

/** @internal An iterator's place in the tree. */
interface Position {
  leaf: Leaf | null;
  i: number;
}

/** @internal The decoded entry under an iterator. */
interface IteratorEntry {
  valid: boolean;
  buf: Buffer;
  prefix: number;
  seq: number;
  kind: number;
  keyOffset: number;
  keyLength: number;
  valueOffset: number;
  valueLength: number;
}

/** Yields, for each key, its newest version visible at the snapshot. */
export class MemtableIterator implements IteratorEntry {
  valid = false;
  buf: Buffer = EMPTY_BUFFER;
  prefix = 0;
  seq = 0;
  kind = 0;
  keyOffset = 0;
  keyLength = 0;
  valueOffset = 0;
  valueLength = 0;
  private readonly pos: Position = { leaf: null, i: 0 };
  private mods = -1;
  private keyView: Buffer | undefined;

  constructor(
    private readonly table: Memtable,
    private readonly snapshot: number,
  ) {}

  /** A view of the current key, made once per entry (a merge asks for it several times). */
  get key(): Buffer {
    this.keyView ??= this.buf.subarray(this.keyOffset, this.keyOffset + this.keyLength);
    return this.keyView;
  }
  get value(): Buffer {
    return this.buf.subarray(this.valueOffset, this.valueOffset + this.valueLength);
  }

  seek(target: Uint8Array | undefined): void {
    this.table._seek(target, Number.MAX_SAFE_INTEGER, this.pos);
    this.mods = this.table.mods;
    this.settle();
    this.skipInvisible();
  }

  next(): void {
    if (!this.valid) throw new Error("memtable iterator: next() past the end");
    const buf = this.buf;
    const ko = this.keyOffset;
    const kl = this.keyLength;
    const p = this.prefix;
    if (this.mods !== this.table.mods) {
      // Inserts moved entries between slots since we last looked: find ours again.
      this.table._seek(buf.subarray(ko, ko + kl), this.seq, this.pos);
      this.mods = this.table.mods;
    }
    // Past the other (older) versions of this key.
    for (;;) {
      this.step();
      if (
        !this.valid ||
        this.prefix !== p ||
        compareRange(this.buf, this.keyOffset, this.keyLength, buf, ko, kl) !== 0
      )
        break;
    }
    this.skipInvisible();
  }

  private settle(): void {
    this.table._settle(this.pos, this);
    this.keyView = undefined;
  }

  private step(): void {
    this.pos.i++;
    this.settle();
  }

  /** Moves past versions newer than the snapshot (the first remaining version of a key is the newest visible). */
  private skipInvisible(): void {
    while (this.valid && this.seq > this.snapshot) this.step();
  }
}
