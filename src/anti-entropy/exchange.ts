/**
 * One anti-entropy exchange between this node (the initiator) and one peer (the responder) over the
 * partitions both hold: a pure state machine in the style of etcd's raft. It never does I/O; each step
 * says what the driver must do, and the driver reports the outcome:
 *
 *   compare  ask the request of both sides' trees: local = responder.ts answerTreeRequest(own trees),
 *            remote = the peer's answer                              -> exchange.compared(local, remote)
 *   pause    wait (the driver's timers; Riak pauses about a second)  -> exchange.resumed()
 *   list     scan the local sets, offering each to step.listing     -> exchange.listed()
 *   ask      send the ae_keys request to the peer                    -> exchange.answered(remote)
 *   done     the result: the keys that differ, to repair by merging both ways (not done here)
 *
 * The descent (messages.ts has the shapes):
 *
 *   1. roots of every partition, in one message (4 bytes each)      -> partitions whose roots differ
 *   2. their branches (32 each)                                     -> branches that differ
 *   3. those branches' segments (32 each)                           -> segments that differ (first look)
 *   4. pause, then the same branches' segments again                -> keep the segments seen both times
 *   5. the local keys of the kept segments (a scan, key-listing.ts), sent with their state hashes; the
 *      responder answers the keys whose state differs (responder.ts KeyDiffer)
 *
 * Why two looks (Riak's Tictac AAE does the same): the trees of two replicas differ for a moment
 * whenever a write has reached one and not yet the other, and under load that is always some segments.
 * Repairing those would race the writes themselves (a repair storm that grows with the load). A real
 * drift stays; a write in flight does not: a segment is compared key by key only if it differed at both
 * looks, a pause apart. Only the segment level is looked at twice: a difference that vanished shows
 * there, and the second look costs 132 bytes per branch instead of a new descent from the roots.
 *
 * Bounds (ExchangeLimits): at most `maxSegments` segments are compared key by key (1,024 by default; Riak: 256), at most
 * `maxKeys` keys listed on each side, and all messages together stay within `maxBytes` (frames
 * included, counted as messages.ts `wireBytes`): the tree levels within its first half, the keys (the
 * initiator's list, then the answer) within what the levels left, at least half. To honour them the descent takes partitions, branches
 * and segments in segment-id order starting at `resumeFrom` (wrapping around), and cuts the rest. Each
 * differing partition holds at least one differing branch, and each differing branch a differing
 * segment, so descending into `maxSegments` partitions and branches loses nothing the segment cap would
 * keep. What was cut is reported (`capped`, `resumeFrom`): the next exchange passes `resumeFrom` and
 * continues there, so a large drift is worked through in order rather than its first part forever.
 *
 * A segment whose keys alone exceed the key bounds on either side (`maxKeys`, or a quarter of `maxBytes`)
 * cannot be compared; it is reported in `oversizedSegments` and skipped (resumeFrom moves past it) so
 * that it does not block the rest.
 *
 * The peer's answers are checked against the requests (lengths, partitions, keys within the segments
 * asked, hashes that do differ); a bad answer ends the exchange with outcome "failed" and a reason, never
 * a crash. The local side's answers come from this node's own code, so a bad one is a broken invariant.
 */
import { assert } from "../core/assert.js";
import { compareBytes } from "../storage/bytes.js";
import { type KeyLimits, KeyListing, keyCost, SegmentIndex } from "./key-listing.js";
import {
  type AeHashesAnswer,
  type AeKeyDiffsAnswer,
  type AeKeysRequest,
  type AeTreeRequest,
  ANSWER_FRAME_BYTES,
  AntiEntropyProtocolError,
  hashesPerId,
  packU32,
  partitionOfId,
  REQUEST_FRAME_BYTES,
  treeRequestIds,
  unpackU32,
  wireBytes,
} from "./messages.js";
import { BRANCHES, SEGMENTS, SEGMENTS_PER_BRANCH } from "./tree.js";

export interface ExchangeLimits {
  /** Segments compared key by key per exchange. */
  readonly maxSegments: number;
  /** Keys listed per side per exchange (the initiator's list; the responder's differences). */
  readonly maxKeys: number;
  /** Bytes of every message of the exchange, both ways, frames included. */
  readonly maxBytes: number;
}

/**
 * Defaults. Segments: 1,024 per exchange, not Riak's 256. Riak caps the segments of one vnode's tree,
 * whose segments each hold many keys; ours are sparse (100,000 keys over 1,024 partitions of 1,024
 * segments: 0.1 key per segment), so an exchange that reaches the keys costs mostly the two scans of
 * every set (key-listing.ts), whatever the number of segments, and the more segments one scan settles
 * the better (bench/antientropy.ts: ~85 ms of CPU per side per scan of 100,000 keys). The key and byte
 * bounds still bound the work: 10,000 keys of 32 bytes listed cost ~390 KiB each way.
 *
 * Bytes: a clean sweep of 1,024 shared partitions costs 8 KiB of roots and ~80 bytes of frames. A
 * descent into 1,024 partitions then 1,024 branches costs at most 1,024 x (4 + 128 + 4) bytes for the
 * branches and twice as much again for the two looks at the segments: ~410 KiB, within the tree levels'
 * half of 1 MiB. A denser drift is cut and continued by the next exchange.
 */
export const DEFAULT_EXCHANGE_LIMITS: ExchangeLimits = {
  maxSegments: 1024,
  maxKeys: 10_000,
  maxBytes: 1024 * 1024,
};

/** A key whose state differs: its state hash here and at the peer (0: not held there). */
export interface KeyDifference {
  readonly key: Uint8Array;
  readonly local: number;
  readonly remote: number;
}

export interface ExchangeResult {
  /**
   * in_sync: every root compared equal. differences: keys differ (`keys`). no_differences: trees
   * differed but no key difference was confirmed (writes in flight, or a tree that disagrees with its
   * data: `unexplainedSegments`). failed: the peer's answer broke the protocol (`failure`).
   */
  readonly outcome: "in_sync" | "differences" | "no_differences" | "failed";
  readonly failure: string | undefined;
  /** Partitions whose roots were compared (both sides have a tree). */
  readonly partitions: number;
  /** Partitions skipped because one side had no tree for them (not held, or being rebuilt). */
  readonly unavailable: readonly number[];
  readonly differingPartitions: number;
  readonly differingBranches: number;
  /** Segments that differed at the first look. */
  readonly differingSegments: number;
  /** Of those, the segments that still differed at the second look. */
  readonly confirmedSegments: number;
  /** Segments compared key by key. */
  readonly comparedSegments: number;
  /** Segments compared key by key in which no key differed although their hashes did at both looks. */
  readonly unexplainedSegments: number;
  readonly keys: readonly KeyDifference[];
  /** Segments too large to compare within the key bounds (skipped). */
  readonly oversizedSegments: readonly number[];
  /** Something was cut by a bound: the next exchange should pass `resumeFrom`. */
  readonly capped: boolean;
  readonly resumeFrom: number | undefined;
  /** Bytes of every message both ways (wireBytes of each body plus its frame). */
  readonly bytes: number;
  /** Request-answer round trips with the peer. */
  readonly roundTrips: number;
  /** Local sets that failed to decode during the listing (left out as absent). */
  readonly damagedLocal: number;
}

export type ExchangeStep =
  | { readonly kind: "compare"; readonly request: AeTreeRequest }
  | { readonly kind: "pause" }
  | { readonly kind: "list"; readonly listing: KeyListing }
  | { readonly kind: "ask"; readonly request: AeKeysRequest }
  | { readonly kind: "done"; readonly result: ExchangeResult };

export interface ExchangeOptions {
  /** The partitions both nodes hold (the ring's), in any order. */
  readonly partitions: readonly number[];
  /** The ring's partition of a key (both nodes must use the same ring size). */
  readonly partitionOf: (key: Uint8Array) => number;
  readonly limits?: Partial<ExchangeLimits>;
  /** Where the previous exchange with this peer was cut (its result's resumeFrom): start there. */
  readonly resumeFrom?: number | undefined;
}

/** Ranks above every segment id (< 2^30), for the wrap-around order. */
const WRAP = 2 ** 31;
/** A bound on what a message body adds to its lists (field names, kind, headers). */
const BODY_OVERHEAD = 64;
const MAX_PARTITION = (1 << 20) - 1;

type Phase = "roots" | "branches" | "segments" | "pause" | "confirm" | "list" | "keys" | "done";

export class Exchange {
  private readonly limits: ExchangeLimits;
  private readonly from: number;
  private phase: Phase = "roots";
  private current: ExchangeStep;
  private bytes = 0;
  private roundTrips = 0;
  private cutFrom: number | undefined;
  private readonly unavailable = new Set<number>();
  private comparedPartitions = 0;
  private differingPartitions = 0;
  private differingBranches = 0;
  private differingSegments = 0;
  private confirmedSegments = 0;
  private comparedSegments = 0;
  private unexplainedSegments = 0;
  private readonly oversized: number[] = [];
  private readonly keys: KeyDifference[] = [];
  /** Branch ids asked at the first look at segments, and the segments that differed then. */
  private confirmBranches: number[] = [];
  private firstLook = new Set<number>();
  private segments: number[] = [];
  private listing: KeyListing | undefined;
  private keysRequest: AeKeysRequest | undefined;
  private readonly partitionOf: (key: Uint8Array) => number;
  private damaged = 0;
  private failure: string | undefined;

  constructor(options: ExchangeOptions) {
    this.limits = { ...DEFAULT_EXCHANGE_LIMITS, ...options.limits };
    const { maxSegments, maxKeys, maxBytes } = this.limits;
    assert(
      Number.isSafeInteger(maxSegments) && maxSegments >= 1 && Number.isSafeInteger(maxKeys) && maxKeys >= 1,
      () => `exchange limits ${maxSegments} segments, ${maxKeys} keys`,
    );
    assert(Number.isSafeInteger(maxBytes) && maxBytes >= 4096, () => `exchange limit of ${maxBytes} bytes`);
    this.partitionOf = options.partitionOf;
    this.from = options.resumeFrom ?? 0;
    assert(
      Number.isSafeInteger(this.from) && this.from >= 0 && this.from < WRAP,
      () => `resumeFrom ${this.from}`,
    );
    const seen = new Set<number>();
    for (const p of options.partitions) {
      assert(Number.isInteger(p) && p >= 0 && p <= MAX_PARTITION, () => `exchange of partition ${p}`);
      seen.add(p);
    }
    let partitions = this.ordered([...seen], SEGMENTS);
    const fit = this.fitting(partitions.length, 1, 4 + 4 + 4);
    partitions = this.cut(partitions, fit, SEGMENTS);
    this.current =
      partitions.length === 0
        ? this.finish()
        : this.compare({ kind: "ae_roots", partitions: packU32(partitions) });
  }

  /** What the driver must do now. */
  get step(): ExchangeStep {
    return this.current;
  }

  /** The answers of both sides to the current `compare` step's request. */
  compared(local: AeHashesAnswer, remote: AeHashesAnswer): ExchangeStep {
    const step = this.current;
    assert(step.kind === "compare", () => `compared() in step ${step.kind}`);
    const request = step.request;
    this.count(request, remote);
    const ids = unpackU32(treeRequestIds(request), "request ids");
    const mine = ownLevels(request, ids, local);
    let theirs: Levels;
    try {
      theirs = levels(request, ids, remote);
    } catch (err) {
      if (err instanceof AntiEntropyProtocolError) return this.fail(err.message);
      throw err;
    }
    for (const p of mine.unavailable) this.unavailable.add(p);
    for (const p of theirs.unavailable) this.unavailable.add(p);
    const usable = (id: number) => {
      const p = partitionOfId(request.kind, id);
      return !this.unavailable.has(p);
    };
    const per = hashesPerId(request.kind);
    // Differing (id, index) pairs, as the ids of the next level down.
    const next: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!usable(id)) continue;
      if (request.kind === "ae_roots") this.comparedPartitions++;
      for (let j = 0; j < per; j++)
        if (mine.hashes[i * per + j] !== theirs.hashes[i * per + j]) next.push(per === 1 ? id : id * per + j);
    }
    if (this.phase === "roots") return this.afterRoots(next);
    if (this.phase === "branches") return this.afterBranches(next);
    if (this.phase === "segments") return this.afterFirstLook(next);
    assert(this.phase === "confirm", () => `compare answered in phase ${this.phase}`);
    return this.afterSecondLook(next);
  }

  /** The pause asked for by a `pause` step is over. */
  resumed(): ExchangeStep {
    assert(this.current.kind === "pause", () => `resumed() in step ${this.current.kind}`);
    this.phase = "confirm";
    return this.compare({ kind: "ae_segments", branches: packU32(this.confirmBranches) });
  }

  /** The local scan of the `list` step is over: every stored entry was offered to step.listing. */
  listed(): ExchangeStep {
    assert(
      this.current.kind === "list" && this.listing !== undefined,
      () => `listed() in step ${this.current.kind}`,
    );
    const listing = this.listing;
    this.damaged = listing.damaged;
    const { covered } = listing.finish();
    if (covered === 0) return this.oversizedFirst();
    if (covered < this.segments.length) this.cutAt(this.segments[covered]!);
    this.segments = this.segments.slice(0, covered);
    // The answer gets what the request leaves of the budget.
    const probe = listing.request({ maxKeys: this.limits.maxKeys, maxBytes: 0 });
    const left =
      this.limits.maxBytes -
      this.bytes -
      wireBytes(probe) -
      REQUEST_FRAME_BYTES -
      ANSWER_FRAME_BYTES -
      2 * BODY_OVERHEAD;
    const request: AeKeysRequest = { ...probe, maxBytes: Math.max(0, left) };
    this.keysRequest = request;
    this.phase = "keys";
    this.current = { kind: "ask", request };
    return this.current;
  }

  /** The peer's answer to the `ask` step's ae_keys request. */
  answered(remote: AeKeyDiffsAnswer): ExchangeStep {
    const request = this.keysRequest;
    assert(
      this.current.kind === "ask" && request !== undefined,
      () => `answered() in step ${this.current.kind}`,
    );
    this.count(request, remote);
    const listing = this.listing!;
    const listed = this.segments.length;
    const { covered } = remote;
    if (!Number.isSafeInteger(covered) || covered < 0 || covered > listed)
      return this.fail(`ae_key_diffs covers ${covered} of ${listed} segments`);
    let hashes: Uint32Array;
    try {
      hashes = unpackU32(remote.hashes, "ae_key_diffs hashes");
    } catch (err) {
      return this.fail((err as Error).message);
    }
    if (!Array.isArray(remote.keys) || hashes.length !== remote.keys.length)
      return this.fail(`ae_key_diffs: ${hashes.length} hashes for ${remote.keys.length} keys`);
    if (remote.keys.length > request.maxKeys)
      return this.fail(`ae_key_diffs: ${remote.keys.length} keys, asked for at most ${request.maxKeys}`);
    const index = new SegmentIndex(this.segments, this.partitionOf);
    const seen = new Set<string>();
    const withDifference = new Set<number>();
    let cost = 0;
    const found: KeyDifference[] = [];
    for (let i = 0; i < remote.keys.length; i++) {
      const key = remote.keys[i]!;
      if (!(key instanceof Uint8Array) || key.length === 0)
        return this.fail(`ae_key_diffs: key ${i} is not a key`);
      cost += keyCost(key);
      const pos = index.positionOf(key);
      if (pos < 0 || pos >= covered)
        return this.fail(`ae_key_diffs: key ${i} is outside the segments covered`);
      const id = Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
      if (seen.has(id)) return this.fail(`ae_key_diffs: key ${i} twice`);
      seen.add(id);
      const local = listing.hashOf(key);
      const theirs = hashes[i]!;
      if (local === theirs) return this.fail(`ae_key_diffs: key ${i} does not differ`);
      withDifference.add(pos);
      found.push({ key: Buffer.from(key), local, remote: theirs });
    }
    if (cost > request.maxBytes)
      return this.fail(`ae_key_diffs: ${cost} bytes of keys, asked for at most ${request.maxBytes}`);
    found.sort((a, b) => compareBytes(a.key, b.key));
    this.keys.push(...found);
    if (covered === 0) return this.oversizedFirst();
    if (covered < listed) this.cutAt(this.segments[covered]!);
    this.comparedSegments = covered;
    this.unexplainedSegments = covered - withDifference.size;
    return this.finish();
  }

  // ---------------------------------------------------------------- the descent

  private afterRoots(partitions: number[]): ExchangeStep {
    this.differingPartitions = partitions.length;
    // Branches: 4 bytes asked, 128 answered, up to 4 unavailable, per partition.
    const fit = Math.min(this.limits.maxSegments, this.fitting(partitions.length, 1, 4 + 4 * BRANCHES + 4));
    const ids = this.cut(partitions, fit, SEGMENTS);
    if (ids.length === 0) return this.finish();
    this.phase = "branches";
    return this.compare({ kind: "ae_branches", partitions: packU32(ids) });
  }

  private afterBranches(branches: number[]): ExchangeStep {
    const ordered = this.ordered(branches, SEGMENTS_PER_BRANCH);
    this.differingBranches = ordered.length;
    // Two looks at the segments of each: 4 bytes asked, 128 answered, up to 4 unavailable, twice.
    const perBranch = 2 * (4 + 4 * SEGMENTS_PER_BRANCH + 4);
    const fit = Math.min(this.limits.maxSegments, this.fitting(ordered.length, 2, perBranch));
    const ids = this.cut(ordered, fit, SEGMENTS_PER_BRANCH);
    if (ids.length === 0) return this.finish();
    this.phase = "segments";
    return this.compare({ kind: "ae_segments", branches: packU32(ids) });
  }

  private afterFirstLook(segments: number[]): ExchangeStep {
    this.differingSegments = segments.length;
    if (segments.length === 0) return this.finish();
    this.firstLook = new Set(segments);
    this.confirmBranches = [...new Set(segments.map((s) => Math.floor(s / SEGMENTS_PER_BRANCH)))];
    this.phase = "pause";
    this.current = { kind: "pause" };
    return this.current;
  }

  private afterSecondLook(segments: number[]): ExchangeStep {
    const both = this.ordered(
      segments.filter((s) => this.firstLook.has(s)),
      1,
    );
    this.confirmedSegments = both.length;
    this.segments = this.cut(both, this.limits.maxSegments, 1);
    if (this.segments.length === 0) return this.finish();
    // The local list gets half of what is left; the answer gets the rest once the request is known.
    const left =
      this.limits.maxBytes - this.bytes - REQUEST_FRAME_BYTES - ANSWER_FRAME_BYTES - 2 * BODY_OVERHEAD;
    const limits: KeyLimits = {
      maxKeys: this.limits.maxKeys,
      maxBytes: Math.max(0, Math.floor(left / 2) - 8 * this.segments.length),
    };
    this.listing = new KeyListing(this.segments, this.partitionOf, limits);
    this.phase = "list";
    this.current = { kind: "list", listing: this.listing };
    return this.current;
  }

  /** The first segment of the list cannot be compared within the bounds: skip it, and say so. */
  private oversizedFirst(): ExchangeStep {
    const first = this.segments[0]!;
    this.oversized.push(first);
    this.cutAt(first + 1 < WRAP ? first + 1 : 0);
    this.comparedSegments = 0;
    return this.finish();
  }

  // ---------------------------------------------------------------- helpers

  private compare(request: AeTreeRequest): ExchangeStep {
    this.current = { kind: "compare", request };
    return this.current;
  }

  private count(request: AeTreeRequest | AeKeysRequest, answer: AeHashesAnswer | AeKeyDiffsAnswer): void {
    this.roundTrips++;
    this.bytes += wireBytes(request) + REQUEST_FRAME_BYTES + wireBytes(answer) + ANSWER_FRAME_BYTES;
  }

  /**
   * How many of `n` items fit in what is left of the tree levels' half of the byte budget (the other half
   * is kept for the keys), if each costs `perItem` bytes over `messages` request-answer pairs (plus their
   * frames and bodies).
   */
  private fitting(n: number, messages: number, perItem: number): number {
    const fixed = messages * (REQUEST_FRAME_BYTES + ANSWER_FRAME_BYTES + 2 * BODY_OVERHEAD);
    const left = Math.floor(this.limits.maxBytes / 2) - this.bytes - fixed;
    return Math.max(0, Math.min(n, Math.floor(left / perItem)));
  }

  /** Ids (of items `span` segments wide) in segment-id order from `from`, wrapping around. */
  private ordered(ids: readonly number[], span: number): number[] {
    const rank = (id: number) => (id * span + span - 1 >= this.from ? id * span : id * span + WRAP);
    return [...ids].sort((a, b) => rank(a) - rank(b));
  }

  /** The first `n` of `ordered`; if any is cut, the next exchange resumes at the first one cut. */
  private cut(ordered: number[], n: number, span: number): number[] {
    if (ordered.length <= n) return ordered;
    this.cutAt(ordered[n]! * span);
    return ordered.slice(0, n);
  }

  private cutAt(segment: number): void {
    this.cutFrom = segment;
  }

  private fail(reason: string): ExchangeStep {
    this.failure = reason;
    return this.finish();
  }

  private finish(): ExchangeStep {
    this.phase = "done";
    const failed = this.failure !== undefined;
    const outcome: ExchangeResult["outcome"] = failed
      ? "failed"
      : this.keys.length > 0
        ? "differences"
        : this.differingPartitions === 0 && this.cutFrom === undefined
          ? "in_sync"
          : "no_differences";
    this.current = {
      kind: "done",
      result: {
        outcome,
        failure: this.failure,
        partitions: this.comparedPartitions,
        unavailable: [...this.unavailable].sort((a, b) => a - b),
        differingPartitions: this.differingPartitions,
        differingBranches: this.differingBranches,
        differingSegments: this.differingSegments,
        confirmedSegments: this.confirmedSegments,
        comparedSegments: this.comparedSegments,
        unexplainedSegments: this.unexplainedSegments,
        keys: this.keys,
        oversizedSegments: this.oversized,
        capped: this.cutFrom !== undefined,
        resumeFrom: this.cutFrom,
        bytes: this.bytes,
        roundTrips: this.roundTrips,
        damagedLocal: this.damaged,
      },
    };
    return this.current;
  }
}

/** This node's own answer: built by its own code, so a bad one is a bug here, not the peer's. */
function ownLevels(request: AeTreeRequest, ids: Uint32Array, answer: AeHashesAnswer): Levels {
  try {
    return levels(request, ids, answer);
  } catch (err) {
    assert(
      !(err instanceof AntiEntropyProtocolError),
      () => `this node's own ${request.kind} answer: ${(err as Error).message}`,
    );
    throw err;
  }
}

interface Levels {
  readonly hashes: Uint32Array;
  readonly unavailable: readonly number[];
}

/** An ae_hashes answer checked against its request (throws AntiEntropyProtocolError). */
function levels(request: AeTreeRequest, ids: Uint32Array, answer: AeHashesAnswer): Levels {
  if (answer.kind !== "ae_hashes") throw new AntiEntropyProtocolError(`answer of kind ${answer.kind}`);
  const per = hashesPerId(request.kind);
  const hashes = unpackU32(answer.hashes, "ae_hashes hashes");
  if (hashes.length !== per * ids.length)
    throw new AntiEntropyProtocolError(`${hashes.length} hashes for ${ids.length} ids of ${request.kind}`);
  const asked = new Set<number>();
  for (const id of ids) asked.add(partitionOfId(request.kind, id));
  const unavailable = [...unpackU32(answer.unavailable, "ae_hashes unavailable")];
  for (const p of unavailable)
    if (!asked.has(p))
      throw new AntiEntropyProtocolError(`partition ${p} unavailable, but it was not asked for`);
  return { hashes, unavailable };
}
