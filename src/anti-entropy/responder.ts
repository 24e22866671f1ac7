/**
 * The responder's side of an exchange (messages.ts): answers from its trees and, for ae_keys, from a scan
 * of its sets. Stateless: each request is answered on its own, so a peer can make a node hold nothing
 * between requests, and a responder that restarts mid-exchange only makes that exchange fail.
 *
 * Every request comes from a peer, so it is checked before use; a malformed one throws
 * AntiEntropyProtocolError (ERR_PROTOCOL), which the transport returns as an error answer. The initiator
 * asks its own trees with the same `answerTreeRequest`.
 */
import { assert } from "../core/assert.js";
import { compareBytes } from "../storage/bytes.js";
import { decodeSiblings, ObjectDecodeError } from "../versioning/object-codec.js";
import { type KeyEntry, SegmentBuckets, SegmentIndex } from "./key-listing.js";
import { keyStateHash } from "./key-state.js";
import {
  type AeHashesAnswer,
  type AeKeyDiffsAnswer,
  type AeKeysRequest,
  type AeTreeRequest,
  AntiEntropyProtocolError,
  hashesPerId,
  MAX_ANSWER_KEY_BYTES,
  MAX_KEY_BYTES,
  MAX_MESSAGE_KEYS,
  MAX_REQUEST_IDS,
  MAX_REQUEST_SEGMENTS,
  packU32,
  partitionOfId,
  treeRequestIds,
  unpackU32,
} from "./messages.js";
import { BRANCHES, SEGMENTS, type TreeSource } from "./tree.js";

/** Largest partition id (rings have at most 2^20 partitions). */
const MAX_PARTITION = (1 << 20) - 1;

/** Answers ae_roots, ae_branches or ae_segments from `trees`. */
export function answerTreeRequest(trees: TreeSource, request: AeTreeRequest): AeHashesAnswer {
  const ids = unpackU32(treeRequestIds(request), `${request.kind} ids`);
  if (ids.length > MAX_REQUEST_IDS)
    throw new AntiEntropyProtocolError(
      `${request.kind} asks for ${ids.length} ids, at most ${MAX_REQUEST_IDS}`,
    );
  const per = hashesPerId(request.kind);
  const hashes = Buffer.alloc(4 * per * ids.length);
  const unavailable = new Set<number>();
  let p = 0;
  for (const id of ids) {
    const partition = partitionOfId(request.kind, id);
    if (partition > MAX_PARTITION)
      throw new AntiEntropyProtocolError(`${request.kind}: id ${id} out of range`);
    const tree = trees.tree(partition);
    if (tree === undefined) {
      unavailable.add(partition);
      p += 4 * per;
      continue;
    }
    if (request.kind === "ae_roots") {
      hashes.writeUInt32BE(tree.root, p);
      p += 4;
    } else {
      const level = request.kind === "ae_branches" ? tree.branches : tree.branchSegments(id % BRANCHES);
      for (let i = 0; i < per; i++, p += 4) hashes.writeUInt32BE(level[i]!, p);
    }
  }
  return { kind: "ae_hashes", hashes, unavailable: packU32([...unavailable].sort((a, b) => a - b)) };
}

/**
 * The responder's side of ae_keys: checks the request, gathers its own keys of the requested segments
 * from a scan (`offer`, as KeyListing does) and answers the keys whose state differs from the request's.
 * Bounded like KeyListing: the request's maxKeys and maxBytes (capped by this side's own bounds), by
 * whole segments.
 */
export class KeyDiffer {
  private readonly index: SegmentIndex;
  private readonly buckets: SegmentBuckets;
  /** The request's keys: latin1 key -> [state hash, segment position, seen here]. */
  private readonly theirs = new Map<
    string,
    { hash: number; position: number; seen: boolean; key: Uint8Array }
  >();
  /** Stored sets that failed to decode (treated as absent here). */
  damaged = 0;
  private done = false;

  constructor(request: AeKeysRequest, partitionOf: (key: Uint8Array) => number) {
    const segments = unpackU32(request.segments, "ae_keys segments");
    const counts = unpackU32(request.counts, "ae_keys counts");
    const hashes = unpackU32(request.hashes, "ae_keys hashes");
    const bad = (m: string): never => {
      throw new AntiEntropyProtocolError(`ae_keys: ${m}`);
    };
    if (segments.length > MAX_REQUEST_SEGMENTS) bad(`${segments.length} segments`);
    if (counts.length !== segments.length) bad(`${counts.length} counts for ${segments.length} segments`);
    if (request.keys.length > MAX_MESSAGE_KEYS) bad(`${request.keys.length} keys`);
    if (hashes.length !== request.keys.length) bad(`${hashes.length} hashes for ${request.keys.length} keys`);
    for (const [name, v] of [
      ["maxKeys", request.maxKeys],
      ["maxBytes", request.maxBytes],
    ] as const)
      if (!Number.isSafeInteger(v) || v < 0) bad(`${name} ${v}`);
    const ids: number[] = [];
    const seenIds = new Set<number>();
    for (const id of segments) {
      if (Math.floor(id / SEGMENTS) > MAX_PARTITION) bad(`segment id ${id} out of range`);
      if (seenIds.has(id)) bad(`segment ${id} twice`);
      seenIds.add(id);
      ids.push(id);
    }
    this.index = new SegmentIndex(ids, partitionOf);
    let k = 0;
    for (let pos = 0; pos < ids.length; pos++) {
      const n = counts[pos]!;
      if (k + n > request.keys.length) bad("counts add up to more keys than it carries");
      let prev: Uint8Array | undefined;
      for (let j = 0; j < n; j++, k++) {
        const key = request.keys[k]!;
        if (!(key instanceof Uint8Array) || key.length === 0 || key.length > MAX_KEY_BYTES)
          bad(`key ${k} is not a key`);
        if (prev !== undefined && compareBytes(prev, key) >= 0)
          bad(`segment ${ids[pos]}'s keys not ascending`);
        prev = key;
        if (this.index.segmentId(key) !== ids[pos]) bad(`key ${k} is not in segment ${ids[pos]}`);
        if (hashes[k] === 0) bad(`key ${k} has the empty state hash`);
        this.theirs.set(Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1"), {
          hash: hashes[k]!,
          position: pos,
          seen: false,
          key,
        });
      }
    }
    if (k !== request.keys.length) bad("carries keys that no count accounts for");
    this.buckets = new SegmentBuckets(ids.length, {
      maxKeys: Math.min(request.maxKeys, MAX_MESSAGE_KEYS),
      maxBytes: Math.min(request.maxBytes, MAX_ANSWER_KEY_BYTES),
    });
  }

  /** One stored entry of this replica's scan. */
  offer(key: Uint8Array, value: Uint8Array): void {
    assert(!this.done, "KeyDiffer: a key offered after the answer");
    const pos = this.index.positionOf(key);
    if (pos < 0 || !this.buckets.takes(pos)) return;
    let hash: number;
    try {
      hash = keyStateHash(key, decodeSiblings(value));
    } catch (err) {
      if (!(err instanceof ObjectDecodeError)) throw err;
      this.damaged++;
      return;
    }
    const theirs = this.theirs.get(
      Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1"),
    );
    if (theirs !== undefined) {
      theirs.seen = true;
      if (theirs.hash === hash) return;
    } else if (hash === 0) return;
    this.buckets.add(pos, { key: Buffer.from(key), hash });
  }

  /** Ends the scan: the differences in the covered segments. */
  answer(): AeKeyDiffsAnswer {
    assert(!this.done, "KeyDiffer: answered twice");
    this.done = true;
    // Keys of the request this replica does not hold differ too (hash 0 here).
    for (const t of this.theirs.values())
      if (!t.seen && this.buckets.takes(t.position)) this.buckets.add(t.position, { key: t.key, hash: 0 });
    const groups: KeyEntry[][] = this.buckets.take();
    const keys: Uint8Array[] = [];
    const hashes: number[] = [];
    for (const g of groups)
      for (const e of g) {
        keys.push(e.key);
        hashes.push(e.hash);
      }
    return { kind: "ae_key_diffs", covered: groups.length, keys, hashes: packU32(hashes) };
  }
}
