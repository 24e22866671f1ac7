/**
 * The node asked for a page of the key listing (`GET /kv/?limit=N&cursor=C`): which replicas it reads,
 * in what order, and where the next page starts (cursor.ts).
 *
 * A listing goes in *phases*. A phase is a set of partitions listed together, in key order, by one scan
 * of a replica that holds them all (replica-scan.ts): the node opens a phase with the live node that
 * replicates the most partitions still to do (itself first on a tie: its scan needs no network), takes
 * all of those partitions, and reads the replica's keys from the phase's last key on, page after page,
 * until the replica has looked at its last key; then the phase's partitions are done and the next phase
 * opens. A replica's data is ordered by key, not by partition, so a phase costs one pass over that
 * replica's keys, and a listing about as many passes as it has phases (one on a cluster of N nodes; a
 * few for more: docs/performance.md has the figures).
 *
 * A phase's partitions are fixed once it opens (they are in the cursor), but not who reads them: each
 * page asks, for the phase, a live replica holding all of them, else splits them between live replicas
 * (the one holding most first), which scan the same key range for their share; the answers are merged,
 * and the page ends at the smallest key at which an answer stopped early, so keys past it come in a
 * later page, once. So a replica that goes down mid-listing costs nothing but the page it failed.
 *
 * What the listing guarantees, in the cursor's terms: every key lands in exactly one phase (the phases'
 * partitions are disjoint) and within a phase in exactly one page (each page covers the keys in
 * (after, bound], and the next starts after bound). So a key that every replica asked holds, live, from
 * before the listing started until its phase passes it appears exactly once. A key written during the
 * listing appears if it lands after its phase's position; a key a replica asked does not hold yet (a
 * write it missed, not yet repaired by hints or anti-entropy; a joining node's handoff under way) or
 * holds deleted while another holds it live does not, or does. It is not a snapshot, and keys come
 * unsorted (by phase, and in key order within one).
 *
 * Pure: the ring, liveness, the replicas' answers and time come in through `ListingDeps`.
 */
import { assert } from "../core/assert.js";
import type { Clock } from "../runtime/runtime.js";
import { compareBytes } from "../storage/bytes.js";
import type { AnswerOf, RequestOf } from "../transport/messages.js";
import { DONE, type ListingPosition, PHASE, TODO } from "./cursor.js";
import { bitmapOf } from "./replica-scan.js";

/** The ring as the listing needs it. */
export interface ListingRing {
  /** Q. */
  readonly partitions: number;
  /** The replicas of partition `p` (its preference list). */
  replicasOf(p: number): readonly string[];
}

export interface ListingDeps {
  readonly selfId: string;
  /** The current ring (undefined before the node has one). */
  readonly ring: () => ListingRing | undefined;
  /** May `id` be asked now (the failure detector does not see it down)? */
  readonly usable: (id: string) => boolean;
  /** Asks `node` (this one included) for keys; rejects when the node could not answer. */
  readonly ask: (node: string, request: RequestOf<"list_keys">) => Promise<AnswerOf<"list_keys">>;
  readonly clock: Clock;
}

export interface PageLimits {
  /** Keys in the page at most. */
  readonly keys: number;
  /** Bytes of keys in the page, about (a page ends once past it). */
  readonly bytes: number;
  /** After this long, the page is answered with what it has (the next page goes on). */
  readonly timeMs: number;
  /** Requests to replicas per page at most. */
  readonly maxAsks: number;
}

export type PageOutcome =
  | {
      readonly kind: "page";
      readonly keys: Uint8Array[];
      /** Where the next page starts; null: the listing is done. */
      readonly next: ListingPosition | null;
      /** The replicas asked (one entry per request), for the metrics and tests. */
      readonly asked: readonly string[];
    }
  /** Some partitions still to list have no replica that can be asked now. */
  | { readonly kind: "unavailable"; readonly partitions: readonly number[] };

/** Per node, the partitions of `wanted` it replicates (nodes that may be asked only). */
function coverage(
  ring: ListingRing,
  wanted: readonly number[],
  can: (id: string) => boolean,
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const p of wanted)
    for (const id of ring.replicasOf(p)) {
      if (!can(id)) continue;
      const ps = out.get(id);
      if (ps === undefined) out.set(id, [p]);
      else ps.push(p);
    }
  return out;
}

/** The node covering the most partitions; this node first on a tie, then by id. */
function best(cover: Map<string, number[]>, selfId: string): string | undefined {
  const first = (a: string, b: string) => (a === selfId ? true : b === selfId ? false : a < b);
  let pick: string | undefined;
  let most = 0;
  for (const [id, ps] of cover)
    if (pick === undefined || ps.length > most || (ps.length === most && first(id, pick))) {
      pick = id;
      most = ps.length;
    }
  return pick;
}

/**
 * Who reads the phase's partitions: one node holding them all if one can be asked, else a greedy split
 * (the node holding most of what is left, first). `lacking`: partitions no node can be asked for.
 */
function assign(
  ring: ListingRing,
  phase: readonly number[],
  can: (id: string) => boolean,
  selfId: string,
): { groups: Map<string, number[]>; lacking: number[] } {
  const groups = new Map<string, number[]>();
  let left = phase;
  while (left.length > 0) {
    const cover = coverage(ring, left, can);
    const id = best(cover, selfId);
    if (id === undefined) break;
    const ps = cover.get(id)!;
    groups.set(id, ps);
    const taken = new Set(ps);
    left = left.filter((p) => !taken.has(p));
  }
  return { groups, lacking: [...left] };
}

function indices(states: Uint8Array, state: number): number[] {
  const out: number[] = [];
  for (let p = 0; p < states.length; p++) if (states[p] === state) out.push(p);
  return out;
}

/** One page of the listing from `position` (cursor.ts), within `limits`. */
export async function listPage(
  deps: ListingDeps,
  position: ListingPosition,
  limits: PageLimits,
): Promise<PageOutcome> {
  const ring = deps.ring();
  if (ring === undefined) return { kind: "unavailable", partitions: [] };
  const q = ring.partitions;
  assert(position.partitions === q, () => `a listing position of ${position.partitions} partitions, Q=${q}`);
  assert(limits.keys >= 1 && limits.bytes >= 1 && limits.maxAsks >= 1, "page limits of at least one");
  const states = Uint8Array.from(position.states);
  let after = position.after;
  const keys: Uint8Array[] = [];
  let bytes = 0;
  const asked: string[] = [];
  /** Nodes whose request failed during this page: not asked again for it. */
  const failed = new Set<string>();
  const can = (id: string) => !failed.has(id) && deps.usable(id);
  const start = deps.clock.now();
  const page = (): PageOutcome => ({
    kind: "page",
    keys,
    next: states.every((s) => s === DONE) ? null : { partitions: q, states, after },
    asked,
  });

  while (keys.length < limits.keys && bytes < limits.bytes) {
    if (asked.length >= limits.maxAsks || deps.clock.now() - start >= limits.timeMs) break;
    if (!states.includes(PHASE)) {
      assert(after === undefined, "a key outside any phase");
      const todo = indices(states, TODO);
      if (todo.length === 0) break;
      const cover = coverage(ring, todo, can);
      const id = best(cover, deps.selfId);
      if (id === undefined) return keys.length > 0 ? page() : { kind: "unavailable", partitions: todo };
      for (const p of cover.get(id)!) states[p] = PHASE;
    }
    const phase = indices(states, PHASE);
    const { groups, lacking } = assign(ring, phase, can, deps.selfId);
    if (lacking.length > 0) return keys.length > 0 ? page() : { kind: "unavailable", partitions: lacking };
    const room = limits.keys - keys.length;
    const asks = [...groups].map(([id, ps]) => {
      asked.push(id);
      return deps
        .ask(id, {
          kind: "list_keys",
          partitions: q,
          include: bitmapOf(ps, q),
          after: after ?? null,
          maxKeys: room,
          maxBytes: Math.max(1, limits.bytes - bytes),
        })
        .then(
          (answer) => ({ id, answer }),
          () => ({ id, answer: undefined }),
        );
    });
    const answers = await Promise.all(asks);
    let anyFailed = false;
    for (const a of answers)
      if (a.answer === undefined) {
        failed.add(a.id);
        anyFailed = true;
      }
    // Asked again without the nodes that failed (their partitions go to others, or are lacking).
    if (anyFailed) continue;
    // Keys are complete up to the smallest key at which an answer stopped early.
    let bound: Uint8Array | undefined;
    for (const { answer } of answers) {
      const a = answer!;
      if (!a.done && (bound === undefined || compareBytes(a.last!, bound) < 0)) bound = a.last!;
    }
    let got: Uint8Array[] = [];
    for (const { answer } of answers)
      for (const k of answer!.keys) if (bound === undefined || compareBytes(k, bound) <= 0) got.push(k);
    if (answers.length > 1) got.sort(compareBytes);
    if (got.length > room) {
      got = got.slice(0, room);
      bound = got[got.length - 1]!;
    }
    for (const k of got) {
      assert(after === undefined || compareBytes(k, after) > 0, "a listed key at or before the position");
      keys.push(k);
      bytes += k.length;
    }
    if (bound === undefined) {
      for (const p of phase) states[p] = DONE;
      after = undefined;
    } else {
      assert(after === undefined || compareBytes(bound, after) > 0, "a page that does not move on");
      after = bound;
    }
  }
  return page();
}
