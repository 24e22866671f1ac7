/**
 * The keys of chosen segments, gathered from a scan of a replica's sets: the initiator's side of the
 * last step of an exchange (exchange.ts). responder.ts's KeyDiffer gathers the responder's side the same
 * way.
 *
 * The data keyspace is ordered by user key, and a segment's keys (those whose partition and segment
 * match, tree.ts `segmentOf`) are spread over all of it, so gathering them means one scan of every set
 * the replica holds: two 32-bit hashes per key to test it, and a decode and a state hash only for the
 * keys wanted. One scan serves every segment of an exchange; the exchange's cap on segments bounds how
 * often a node pays for it.
 *
 * Bounded by whole segments (`SegmentBuckets`): segments are taken in the order given, and when the keys
 * gathered pass `maxKeys` or `maxBytes` (key bytes + 4 per key), the last segments of that order are
 * dropped, whole, until they fit (a key costs its length + 7: its bytes, a MessagePack bin header of at most
 * 3 bytes and its 4-byte hash, so the bound holds for the message that carries the keys). So what is gathered is always every key of a prefix of the segments
 * (`covered` of them), never part of a segment: a key missing from a cut segment must not look absent.
 * A segment whose keys alone pass the bounds leaves `covered` at 0 (exchange.ts skips it and says so).
 *
 * Pure: the caller runs the scan (scan.ts) and offers each stored entry.
 */
import { assert } from "../core/assert.js";
import { compareBytes } from "../storage/bytes.js";
import { decodeSiblings, ObjectDecodeError } from "../versioning/object-codec.js";
import { keyStateHash } from "./key-state.js";
import { type AeKeysRequest, packU32 } from "./messages.js";
import { SEGMENTS, segmentOf } from "./tree.js";

export interface KeyLimits {
  /** Most keys gathered. */
  readonly maxKeys: number;
  /** Most bytes gathered: `keyCost` of each key. */
  readonly maxBytes: number;
}

export interface KeyEntry {
  readonly key: Uint8Array;
  readonly hash: number;
}

/** The bytes a key costs against `maxBytes`: its own, its bin header (at most 3) and its hash. */
export function keyCost(key: Uint8Array): number {
  return key.length + 7;
}

/** Entries of an ordered list of segments, kept to a prefix of whole segments that fits the limits. */
export class SegmentBuckets {
  private readonly buckets: KeyEntry[][];
  private readonly bucketBytes: number[];
  private keys = 0;
  private bytes = 0;
  private cut: number;

  constructor(
    segments: number,
    private readonly limits: KeyLimits,
  ) {
    assert(
      limits.maxKeys >= 0 && limits.maxBytes >= 0,
      () => `key limits ${limits.maxKeys} keys, ${limits.maxBytes} bytes`,
    );
    this.buckets = Array.from({ length: segments }, () => []);
    this.bucketBytes = new Array<number>(segments).fill(0);
    this.cut = segments;
  }

  /** Segments (a prefix of the order) still whole. */
  get covered(): number {
    return this.cut;
  }

  get size(): number {
    return this.keys;
  }

  /** Is the segment at `position` still gathered? */
  takes(position: number): boolean {
    return position < this.cut;
  }

  /** Adds an entry to the segment at `position` (ignored if that segment was dropped). */
  add(position: number, entry: KeyEntry): void {
    if (position >= this.cut) return;
    const cost = keyCost(entry.key);
    this.buckets[position]!.push(entry);
    this.bucketBytes[position]! += cost;
    this.keys++;
    this.bytes += cost;
    while ((this.keys > this.limits.maxKeys || this.bytes > this.limits.maxBytes) && this.cut > 0) {
      this.cut--;
      this.keys -= this.buckets[this.cut]!.length;
      this.bytes -= this.bucketBytes[this.cut]!;
      this.buckets[this.cut] = [];
      this.bucketBytes[this.cut] = 0;
    }
  }

  /** The entries of the covered segments, by segment, each sorted by key. */
  take(): KeyEntry[][] {
    const out = this.buckets.slice(0, this.cut);
    for (const b of out) b.sort((x, y) => compareBytes(x.key, y.key));
    return out;
  }
}

/**
 * Where each wanted segment id sits in the order, and the test of a key against it: partition by the
 * caller's `partitionOf` (the ring's), segment by tree.ts.
 */
export class SegmentIndex {
  private readonly positions = new Map<number, number>();

  constructor(
    readonly segments: readonly number[],
    private readonly partitionOf: (key: Uint8Array) => number,
  ) {
    segments.forEach((id, i) => {
      assert(!this.positions.has(id), () => `segment ${id} listed twice`);
      this.positions.set(id, i);
    });
  }

  /** The key's segment id. */
  segmentId(key: Uint8Array): number {
    return this.partitionOf(key) * SEGMENTS + segmentOf(key);
  }

  /** The position of the key's segment in the order, or -1 if it is not wanted. */
  positionOf(key: Uint8Array): number {
    return this.positions.get(this.segmentId(key)) ?? -1;
  }

  positionOfSegment(id: number): number {
    return this.positions.get(id) ?? -1;
  }
}

/** The initiator's keys of the segments an exchange compares, and the ae_keys request made of them. */
export class KeyListing {
  private readonly index: SegmentIndex;
  private readonly buckets: SegmentBuckets;
  /** Stored sets that failed to decode (their keys are left out, as if absent). */
  damaged = 0;
  private listed: KeyEntry[][] | undefined;
  private readonly byKey = new Map<string, number>();

  constructor(
    readonly segments: readonly number[],
    partitionOf: (key: Uint8Array) => number,
    limits: KeyLimits,
  ) {
    this.index = new SegmentIndex(segments, partitionOf);
    this.buckets = new SegmentBuckets(segments.length, limits);
  }

  /** One stored entry of the scan: its user key and its set as stored (object-codec.ts). */
  offer(key: Uint8Array, value: Uint8Array): void {
    assert(this.listed === undefined, "a key offered to a finished listing");
    const pos = this.index.positionOf(key);
    if (pos < 0 || !this.buckets.takes(pos)) return;
    let hash: number;
    try {
      hash = keyStateHash(key, decodeSiblings(value));
    } catch (err) {
      if (!(err instanceof ObjectDecodeError)) throw err;
      // A damaged set: left out (the exchange then sees the key as absent here); counted for the caller.
      this.damaged++;
      return;
    }
    if (hash !== 0) this.buckets.add(pos, { key: Buffer.from(key), hash });
  }

  /** Ends the scan: the segments listed (a prefix of `segments`) and their keys. */
  finish(): { covered: number; keys: number } {
    if (this.listed === undefined) {
      this.listed = this.buckets.take();
      for (const group of this.listed)
        for (const e of group) this.byKey.set(Buffer.from(e.key).toString("latin1"), e.hash);
    }
    return { covered: this.listed.length, keys: this.byKey.size };
  }

  /** The local state hash of a listed key (0: not held here, or not listed). */
  hashOf(key: Uint8Array): number {
    assert(this.listed !== undefined, "hashOf before finish");
    return this.byKey.get(Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1")) ?? 0;
  }

  /** The ae_keys request for the listed segments. */
  request(answerLimits: KeyLimits): AeKeysRequest {
    assert(this.listed !== undefined, "request before finish");
    const keys: Uint8Array[] = [];
    const hashes: number[] = [];
    for (const group of this.listed)
      for (const e of group) {
        keys.push(e.key);
        hashes.push(e.hash);
      }
    return {
      kind: "ae_keys",
      segments: packU32(this.segments.slice(0, this.listed.length)),
      counts: packU32(this.listed.map((g) => g.length)),
      keys,
      hashes: packU32(hashes),
      maxKeys: answerLimits.maxKeys,
      maxBytes: answerLimits.maxBytes,
    };
  }
}
