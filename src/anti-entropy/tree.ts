/**
 * A partition's anti-entropy tree, in the style of Riak's Tictac AAE (Martin Sceats, riak_kv 2.9,
 * `leveled_tictac.erl`): a fixed two-level hash tree over the keys a replica holds in one partition,
 * updated in O(1) as writes land instead of rebuilt per exchange.
 *
 * Shape: SEGMENTS = 1,024 leaves ("segments"), grouped into BRANCHES = 32 branches of 32 segments. A key
 * belongs to one segment, `segmentOf(key)`: the top 10 bits of a hash of the key with a seed of its own,
 * so segments are independent of the ring's hash (keys of one partition share the ring hash's top bits)
 * and spread evenly. Each level holds 32-bit hashes:
 *
 *   segment s  = XOR of keyStateHash(k, set) over the keys k of segment s   (key-state.ts; 0 when empty)
 *   branch b   = XOR of its 32 segments
 *   root       = XOR of the 32 branches (= XOR of every key's state hash)
 *
 * Why XOR at every level: a write of k from set `old` to set `new` changes exactly one segment by
 * `keyStateHash(k, old) ^ keyStateHash(k, new)`, without reading the segment's other keys (Tictac's
 * `seg ^= h(k, old) ^ h(k, new)`); the order of updates does not matter (XOR commutes), so a tree updated
 * write by write equals one built from a scan; and the tree of a union of disjoint key sets is the XOR of
 * their trees (`mergeTrees`), which lets a rebuild or a coarse comparison combine trees. A write changes
 * only its segment: branches and root are recomputed from the segments when an exchange reads them
 * (1,024 XORs, cached until the next write), which costs an exchange of 1,024 partitions about a
 * millisecond and saves every write the cache misses of two more levels.
 *
 * The root is the XOR of the branches rather than a hash of their bytes: it stays mergeable, and a hash
 * would not make a miss less likely. What a collision costs: two replicas whose
 * segments differ by deltas d1..dm that XOR to 0 within a segment (or within a branch, or at the root)
 * look equal at that level, and the exchange does not descend there: the difference stays hidden until
 * one of those keys changes again (or is read: read repair still works). For random deltas that happens
 * with probability 2^-32 per differing segment, branch or partition: about once per 4 billion drifted
 * partitions, against disks and networks that fail far more often. A hash-of-branches root would only
 * move the 2^-32 from the root to the branches and segments, which are XORs either way.
 *
 * The key count (keys whose state hash is not 0) rides along for `/status` and tests; it is exact because
 * a non-empty set never hashes to 0 (key-state.ts).
 *
 * Saved form (`encodeTree`), one record per partition in the engine's `trees` keyspace (4,116 bytes):
 *
 *   magic       u32 BE  0x52535454 ("RSTT")
 *   version     u8      1
 *   branchBits  u8      5   (32 branches)
 *   segmentBits u8      5   (32 segments per branch)
 *   reserved    u8      0
 *   partition   u32 BE
 *   keys        u32 BE  keys with a non-empty state
 *   segments    1,024 x u32 BE
 *   crc32       u32 BE  of everything before it (zlib.crc32)
 *
 * Branches and root are recomputed on decode. A record that fails any check is a TreeDecodeError
 * (ERR_BAD_TREE): the caller then rebuilds the tree from the data (rebuild.ts); a tree is a cache of the
 * data, never the truth.
 */
import { crc32 } from "node:zlib";
import { assert } from "../core/assert.js";
import { hash32 } from "../core/hash.js";

export const BRANCH_BITS = 5;
export const SEGMENT_BITS = 5;
/** Branches per tree. */
export const BRANCHES = 1 << BRANCH_BITS;
/** Segments per branch. */
export const SEGMENTS_PER_BRANCH = 1 << SEGMENT_BITS;
/** Segments per tree (leaves). */
export const SEGMENTS = BRANCHES * SEGMENTS_PER_BRANCH;

/** The seed of a key's segment hash ("SEGM"): independent of the ring's and of the key state's. */
export const SEGMENT_SEED = 0x5345474d;

/** The segment (0..SEGMENTS-1) a key belongs to in its partition's tree. */
export function segmentOf(key: Uint8Array): number {
  return hash32(key, SEGMENT_SEED) >>> (32 - BRANCH_BITS - SEGMENT_BITS);
}

/** The branch a segment belongs to. */
export function branchOfSegment(segment: number): number {
  return segment >>> SEGMENT_BITS;
}

export class TreeDecodeError extends Error {
  readonly code = "ERR_BAD_TREE";
  constructor(message: string) {
    super(`anti-entropy tree cannot be decoded: ${message}`);
    this.name = "TreeDecodeError";
  }
}

export class PartitionTree {
  /** Segment hashes, by segment. Read-only for callers. */
  readonly segments: Uint32Array;
  private readonly branchHashes: Uint32Array;
  private rootHash = 0;
  /** Branches and root lag the segments (updates since they were last computed). */
  private stale = false;
  private keyCount = 0;

  constructor(readonly partition: number) {
    assert(
      Number.isInteger(partition) && partition >= 0 && partition <= 0xffffffff,
      () => `tree of partition ${partition}`,
    );
    this.segments = new Uint32Array(SEGMENTS);
    this.branchHashes = new Uint32Array(BRANCHES);
  }

  /** XOR of every key's state hash (0 for an empty tree). */
  get root(): number {
    if (this.stale) this.recompute();
    return this.rootHash;
  }

  /** Branch hashes (XOR of their segments), by branch. Read-only for callers. */
  get branches(): Uint32Array {
    if (this.stale) this.recompute();
    return this.branchHashes;
  }

  /** Keys with a non-empty state. */
  get keys(): number {
    return this.keyCount;
  }

  /**
   * Key `key` went from the state hashed `oldHash` to the one hashed `newHash` (key-state.ts; 0: absent).
   * O(1): one segment hash changes.
   */
  update(key: Uint8Array, oldHash: number, newHash: number): void {
    this.updateSegment(segmentOf(key), oldHash, newHash);
  }

  /**
   * `update` for a key whose segment is known. Only the segment changes here; branches and root are
   * recomputed when next read (1,024 XORs, at an exchange), which keeps a write's update to the few
   * cache lines of one segment and this object (bench/antientropy.ts measured the difference).
   */
  updateSegment(segment: number, oldHash: number, newHash: number): void {
    if (oldHash === newHash) return;
    this.segments[segment] = this.segments[segment]! ^ oldHash ^ newHash;
    this.stale = true;
    if (oldHash === 0) this.keyCount++;
    else if (newHash === 0) this.keyCount--;
    assert(this.keyCount >= 0, () => `partition ${this.partition}'s tree counts ${this.keyCount} keys`);
  }

  private recompute(): void {
    let root = 0;
    for (let b = 0; b < BRANCHES; b++) {
      let x = 0;
      const end = (b + 1) * SEGMENTS_PER_BRANCH;
      for (let s = b * SEGMENTS_PER_BRANCH; s < end; s++) x ^= this.segments[s]!;
      this.branchHashes[b] = x;
      root ^= x;
    }
    this.rootHash = root >>> 0;
    this.stale = false;
  }

  /** The 32 segment hashes of branch `b` (a view: do not change it). */
  branchSegments(b: number): Uint32Array {
    return this.segments.subarray(b * SEGMENTS_PER_BRANCH, (b + 1) * SEGMENTS_PER_BRANCH);
  }

  /** Same keys and states (every segment equal, so every branch and the root too). */
  equals(other: PartitionTree): boolean {
    if (this.keyCount !== other.keyCount) return false;
    for (let i = 0; i < SEGMENTS; i++) if (this.segments[i] !== other.segments[i]) return false;
    return true;
  }

  /** A copy (the copy's partition may differ, for `mergeTrees`). */
  clone(partition = this.partition): PartitionTree {
    return PartitionTree.fromSegments(partition, this.segments, this.keyCount);
  }

  /**
   * Folds in the tree of a key set disjoint from this one's: afterwards this is the tree of their union
   * (segments XORed, key counts added).
   */
  absorb(other: PartitionTree): void {
    for (let i = 0; i < SEGMENTS; i++) this.segments[i] = this.segments[i]! ^ other.segments[i]!;
    this.keyCount += other.keyCount;
    this.stale = true;
  }

  /** The tree whose segments are `segments` (copied), holding `keys` keys. */
  static fromSegments(partition: number, segments: ArrayLike<number>, keys: number): PartitionTree {
    assert(segments.length === SEGMENTS, () => `a tree of ${segments.length} segments`);
    assert(Number.isSafeInteger(keys) && keys >= 0, () => `a tree of ${keys} keys`);
    const t = new PartitionTree(partition);
    for (let s = 0; s < SEGMENTS; s++) t.segments[s] = segments[s]! >>> 0;
    t.keyCount = keys;
    t.stale = true;
    return t;
  }

  /** Checks that branches and root agree with the segments (a test and debugging aid: O(SEGMENTS)). */
  checkLevels(): void {
    const branches = this.branches;
    const rootNow = this.root;
    let root = 0;
    for (let b = 0; b < BRANCHES; b++) {
      let x = 0;
      for (const s of this.branchSegments(b)) x ^= s;
      assert(x >>> 0 === branches[b], () => `partition ${this.partition}: branch ${b} disagrees`);
      root ^= x;
    }
    assert(root >>> 0 === rootNow, () => `partition ${this.partition}: root disagrees`);
  }
}

/** The trees a node can answer from now (tree-set.ts's TreeSet): undefined for a partition it has none of. */
export interface TreeSource {
  tree(partition: number): PartitionTree | undefined;
}

/** The tree of the union of two disjoint key sets, labelled `partition` (Tictac's tree merge). */
export function mergeTrees(a: PartitionTree, b: PartitionTree, partition = a.partition): PartitionTree {
  const t = a.clone(partition);
  t.absorb(b);
  return t;
}

/** The indexes where two levels of equal length differ, ascending. */
export function differingIndexes(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  assert(a.length === b.length, () => `comparing levels of ${a.length} and ${b.length} hashes`);
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

// ------------------------------------------------------------------ saved form

const MAGIC = 0x52535454; // "RSTT"
const VERSION = 1;
const HEADER_BYTES = 16;
/** Bytes of a saved tree. */
export const TREE_RECORD_BYTES = HEADER_BYTES + 4 * SEGMENTS + 4;

/**
 * The tree's key in the engine's `trees` keyspace (replication/keyspaces.ts): the partition, u32 BE, so
 * that the keyspace scans in partition order. One record holds the whole tree.
 */
export function treeRecordKey(partition: number): Uint8Array {
  const k = Buffer.allocUnsafe(4);
  k.writeUInt32BE(partition, 0);
  return k;
}

export function encodeTree(tree: PartitionTree): Buffer {
  const out = Buffer.allocUnsafe(TREE_RECORD_BYTES);
  out.writeUInt32BE(MAGIC, 0);
  out[4] = VERSION;
  out[5] = BRANCH_BITS;
  out[6] = SEGMENT_BITS;
  out[7] = 0;
  out.writeUInt32BE(tree.partition, 8);
  out.writeUInt32BE(tree.keys, 12);
  let p = HEADER_BYTES;
  for (let i = 0; i < SEGMENTS; i++, p += 4) out.writeUInt32BE(tree.segments[i]!, p);
  out.writeUInt32BE(crc32(out.subarray(0, p)), p);
  return out;
}

/**
 * Decodes a saved tree, checking length, magic, version, shape, checksum and, if given, that it is the
 * tree of `partition`. Throws TreeDecodeError on any failure.
 */
export function decodeTree(bytes: Uint8Array, partition?: number): PartitionTree {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length !== TREE_RECORD_BYTES)
    throw new TreeDecodeError(`${b.length} bytes, a tree record has ${TREE_RECORD_BYTES}`);
  if (b.readUInt32BE(0) !== MAGIC) throw new TreeDecodeError("bad magic");
  if (b[4] !== VERSION) throw new TreeDecodeError(`unsupported version ${b[4]}`);
  const end = TREE_RECORD_BYTES - 4;
  if (b.readUInt32BE(end) !== crc32(b.subarray(0, end))) throw new TreeDecodeError("checksum mismatch");
  if (b[5] !== BRANCH_BITS || b[6] !== SEGMENT_BITS || b[7] !== 0)
    throw new TreeDecodeError(`shape ${b[5]}/${b[6]}/${b[7]}, expected ${BRANCH_BITS}/${SEGMENT_BITS}/0`);
  const p = b.readUInt32BE(8);
  if (partition !== undefined && p !== partition)
    throw new TreeDecodeError(`the record is partition ${p}'s tree, not ${partition}'s`);
  const keys = b.readUInt32BE(12);
  const segments = new Uint32Array(SEGMENTS);
  let any = 0;
  for (let s = 0; s < SEGMENTS; s++) {
    segments[s] = b.readUInt32BE(HEADER_BYTES + 4 * s);
    any |= segments[s]!;
  }
  if (keys === 0 && any !== 0) throw new TreeDecodeError("a tree of no keys with a non-zero segment");
  return PartitionTree.fromSegments(p, segments, keys);
}
