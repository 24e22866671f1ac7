/**
 * The messages of an anti-entropy exchange (exchange.ts), as plain typed values for the peer protocol
 * (transport/messages.ts carries them; each request kind has one answer kind, `AE_ANSWER_KIND`).
 *
 * Lists of fixed-width values travel as one flat byte string each, never as arrays of small numbers or
 * of tiny byte strings (TOOLCHAIN.md: one MessagePack bin of n x 4 bytes costs n x 4 + 5 bytes, an array
 * of n numbers up to n x 5 + 5 and a decode loop). Every such list is u32 big-endian:
 *
 *   partition id  the ring partition, 0..Q-1 (Q <= 2^20)
 *   branch id     partition * BRANCHES + branch            (< 2^25)
 *   segment id    partition * SEGMENTS + segment           (< 2^30)
 *   hash          a root, branch, segment or key state hash (key-state.ts, tree.ts; 0: empty / absent)
 *
 * Requests and their answers:
 *
 *   ae_roots     { partitions }        -> ae_hashes { hashes: one per partition, unavailable }
 *   ae_branches  { partitions }        -> ae_hashes { hashes: BRANCHES per partition, unavailable }
 *   ae_segments  { branches }          -> ae_hashes { hashes: SEGMENTS_PER_BRANCH per branch, unavailable }
 *   ae_keys      { segments, counts, keys, hashes, maxKeys, maxBytes }
 *                                      -> ae_key_diffs { covered, keys, hashes }
 *
 * `unavailable` lists the partitions of the request for which the responder has no tree now (it does
 * not hold the partition, or is rebuilding it); their hashes are 0 and mean nothing.
 *
 * `ae_keys` carries the initiator's own keys of each segment: `counts[i]` keys of `segments[i]`, in that
 * order, each group sorted by key bytes, with their state hashes. The responder lists its keys of those
 * segments and answers only the differences: for the first `covered` segments of the request, every key
 * whose state differs between the two, with the responder's state hash (0: it does not hold the key).
 * The responder stops early (a smaller `covered`) rather than answer more than `maxKeys` keys or
 * `maxBytes` bytes of keys (key-listing.ts `keyCost`). Sending the initiator's list one way and only the differences back
 * costs half the bytes of both lists crossing when segments are dense and few keys differ.
 *
 * `wireBytes` gives a body's exact MessagePack size as the transport encodes it (msgpackr,
 * useRecords:false), and REQUEST_FRAME_BYTES / ANSWER_FRAME_BYTES what a request or answer frame adds
 * around its body (kind, id, deadline, 4-byte length prefix): test/anti-entropy/messages.test.ts checks
 * both against msgpackr.
 */
import { BRANCHES, SEGMENTS_PER_BRANCH } from "./tree.js";

export interface AeRootsRequest {
  readonly kind: "ae_roots";
  readonly partitions: Uint8Array;
}

export interface AeBranchesRequest {
  readonly kind: "ae_branches";
  readonly partitions: Uint8Array;
}

export interface AeSegmentsRequest {
  readonly kind: "ae_segments";
  readonly branches: Uint8Array;
}

export interface AeKeysRequest {
  readonly kind: "ae_keys";
  /** Segment ids (u32 BE). */
  readonly segments: Uint8Array;
  /** Keys of each segment in `keys` (u32 BE, one per segment). */
  readonly counts: Uint8Array;
  /** The initiator's keys, grouped by segment in `segments` order, each group ascending. */
  readonly keys: readonly Uint8Array[];
  /** Their state hashes (u32 BE, one per key, never 0). */
  readonly hashes: Uint8Array;
  /** Most keys the answer may carry. */
  readonly maxKeys: number;
  /** Most bytes of keys the answer may carry, each counted as its length + 7 (key-listing.ts `keyCost`). */
  readonly maxBytes: number;
}

export type AeTreeRequest = AeRootsRequest | AeBranchesRequest | AeSegmentsRequest;
export type AeRequest = AeTreeRequest | AeKeysRequest;

export interface AeHashesAnswer {
  readonly kind: "ae_hashes";
  /** u32 BE hashes, as many per requested id as the request's level has (1, BRANCHES or SEGMENTS_PER_BRANCH). */
  readonly hashes: Uint8Array;
  /** Partition ids (u32 BE) the responder has no tree for now. */
  readonly unavailable: Uint8Array;
}

export interface AeKeyDiffsAnswer {
  readonly kind: "ae_key_diffs";
  /** How many of the request's segments (a prefix, in request order) were compared completely. */
  readonly covered: number;
  /** The keys of the covered segments whose state differs. */
  readonly keys: readonly Uint8Array[];
  /** The responder's state hash of each (u32 BE; 0: it does not hold the key). */
  readonly hashes: Uint8Array;
}

export type AeAnswer = AeHashesAnswer | AeKeyDiffsAnswer;

export const AE_ANSWER_KIND = {
  ae_roots: "ae_hashes",
  ae_branches: "ae_hashes",
  ae_segments: "ae_hashes",
  ae_keys: "ae_key_diffs",
} as const satisfies { readonly [K in AeRequest["kind"]]: AeAnswer["kind"] };

export type AeAnswerOf<R extends AeRequest> = R extends AeKeysRequest ? AeKeyDiffsAnswer : AeHashesAnswer;

/** Hashes per requested id in a tree request's answer. */
export function hashesPerId(kind: AeTreeRequest["kind"]): number {
  return kind === "ae_roots" ? 1 : kind === "ae_branches" ? BRANCHES : SEGMENTS_PER_BRANCH;
}

/** The partition of a tree request's id. */
export function partitionOfId(kind: AeTreeRequest["kind"], id: number): number {
  return kind === "ae_segments" ? Math.floor(id / BRANCHES) : id;
}

/** The ids of a tree request (partition ids, or branch ids for ae_segments). */
export function treeRequestIds(r: AeTreeRequest): Uint8Array {
  return r.kind === "ae_segments" ? r.branches : r.partitions;
}

// ------------------------------------------------------------------ bounds

/** Most ids in one tree request: every partition of the largest ring (2^20). */
export const MAX_REQUEST_IDS = 1 << 20;
/** Most segments in one ae_keys request. */
export const MAX_REQUEST_SEGMENTS = 1 << 16;
/** Most keys in one ae_keys request or answer. */
export const MAX_MESSAGE_KEYS = 1 << 20;
/** Most bytes of keys (key-listing.ts `keyCost`) a responder puts in one ae_key_diffs answer. */
export const MAX_ANSWER_KEY_BYTES = 64 * 1024 * 1024;
/** Largest key in an ae_keys message (the peer protocol's own limit). */
export const MAX_KEY_BYTES = 65536;

/** A peer's anti-entropy request or answer breaks the protocol (checked by responder.ts and exchange.ts). */
export class AntiEntropyProtocolError extends Error {
  readonly code = "ERR_PROTOCOL";
  constructor(message: string) {
    super(`anti-entropy: ${message}`);
    this.name = "AntiEntropyProtocolError";
  }
}

// ------------------------------------------------------------------ u32 lists

export function packU32(values: ArrayLike<number>): Uint8Array {
  const out = Buffer.allocUnsafe(4 * values.length);
  for (let i = 0; i < values.length; i++) out.writeUInt32BE(values[i]! >>> 0, 4 * i);
  return out;
}

/** The u32 BE values of `bytes`; throws AntiEntropyProtocolError if its length is not a multiple of 4. */
export function unpackU32(bytes: Uint8Array, what: string): Uint32Array {
  if (bytes.length % 4 !== 0) throw new AntiEntropyProtocolError(`${what}: ${bytes.length} bytes`);
  const n = bytes.length / 4;
  const out = new Uint32Array(n);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = v.getUint32(4 * i);
  return out;
}

// ------------------------------------------------------------------ sizes

/**
 * What a request frame adds around its body: the frame map's other fields (kind "req", an id below
 * 2^32, a deadline up to the transport's cap of an hour) and the 4-byte length prefix.
 */
export const REQUEST_FRAME_BYTES = 45;
/** What an answer frame adds around its body (kind "ans", an id below 2^32, the length prefix). */
export const ANSWER_FRAME_BYTES = 29;

/**
 * The MessagePack size of a message body as msgpackr (useRecords:false) writes it: maps of strings,
 * non-negative integers, byte strings and arrays of byte strings, which is all these messages hold.
 * (msgpackr writes every object as a map16, whatever its size: 3 bytes of header.)
 */
export function wireBytes(body: AeRequest | AeAnswer): number {
  return valueBytes(body);
}

function headerBytes(n: number, small: number): number {
  return n < small ? 1 : n < 0x10000 ? 3 : 5;
}

function valueBytes(v: unknown): number {
  if (typeof v === "string") {
    const n = Buffer.byteLength(v, "utf8");
    return n < 32 ? 1 + n : n < 0x100 ? 2 + n : n < 0x10000 ? 3 + n : 5 + n;
  }
  if (typeof v === "number") {
    if (!Number.isInteger(v) || v < 0) return 9;
    return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : v < 0x1_0000_0000 ? 5 : 9;
  }
  if (v instanceof Uint8Array) {
    const n = v.length;
    return (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n;
  }
  if (Array.isArray(v)) {
    let n = headerBytes(v.length, 16);
    for (const x of v) n += valueBytes(x);
    return n;
  }
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    let n = entries.length < 0x10000 ? 3 : 5;
    for (const [k, x] of entries) n += valueBytes(k) + valueBytes(x);
    return n;
  }
  throw new TypeError(`wireBytes: no MessagePack size for ${typeof v}`);
}
