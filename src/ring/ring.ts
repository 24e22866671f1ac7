/**
 * The ring: consistent hashing with Dynamo's partitioning strategy 3 (Dynamo paper section 6.2).
 *
 * The hash space is cut into Q equal partitions, fixed when the cluster is created; a key belongs to the
 * partition its hash falls in. Each physical node claims partitions in proportion to its weight (its
 * virtual nodes are the partitions it owns). A key's preference list is the first N distinct physical
 * nodes met walking clockwise from its partition, taking nodes of distinct zones first.
 *
 * Why strategy 3 rather than random tokens: partitions never split or merge, so a partition is a stable
 * unit for handoff (a join moves whole partitions) and for Merkle trees (one tree per partition, never
 * rebuilt because a neighbour's token moved); ownership is balanced to within one partition, instead of
 * the several-fold spread random tokens give; and a key's partition is one multiply, not a search.
 *
 * `claim` changes ownership incrementally: it only takes partitions from nodes above their target share
 * (or gone) and gives them to nodes below it. So a join moves about Q/(S+1) partitions, all to the new
 * node, and a leave moves only the leaver's partitions. Everything here is a pure function of its
 * inputs: every node that applies the same claim to the same ring gets the same ring.
 *
 * Invariants asserted: a key's partition is in [0, Q); targets sum to Q; a claimed ring gives every
 * partition to a member, each member exactly its target; every preference list holds distinct nodes of
 * the ring, as many as it can (min(n, distinct owners)).
 */
import { assert } from "../core/assert.js";
import { hash32 } from "../core/hash.js";

export interface RingMember {
  readonly id: string;
  /** Relative capacity; a node of weight 2 owns twice the partitions of one of weight 1. */
  readonly weight: number;
  readonly zone?: string | undefined;
}

export interface Ring {
  /** Q: number of partitions (a power of two, fixed at cluster creation). */
  readonly partitions: number;
  /** owners[p] is the id of the node that owns partition p. */
  readonly owners: readonly string[];
}

const RING_SEED = 0x52494e47; // "RING"

/** The partition of a key: its 32-bit hash scaled to [0, Q). Q must be a valid partition count (claim checks). */
export function partitionOf(key: Uint8Array, partitions: number): number {
  const p = Math.floor((hash32(key, RING_SEED) * partitions) / 0x1_0000_0000);
  assert(p >= 0 && p < partitions, () => `partition ${p} of ${partitions}`);
  return p;
}

/**
 * Integer targets summing to Q, each within one partition of its exact share Q*w/W. Which members get the
 * rounded-up count is chosen to keep partitions where they are: members that already own at least their
 * rounded-up count keep it first, then the largest remainders, then ids. (Plain largest-remainder rounding
 * is not monotone: a join could shift one partition between two members that did not change.)
 */
export function targetCounts(
  members: readonly RingMember[],
  partitions: number,
  current: ReadonlyMap<string, number> = new Map(),
): Map<string, number> {
  // Scale by the largest weight first so that huge weights cannot overflow Q * w.
  const maxW = Math.max(...members.map((m) => m.weight));
  const scaled = members.map((m) => m.weight / maxW);
  const total = scaled.reduce((s, w) => s + w, 0);
  if (!(total > 0) || !Number.isFinite(total))
    throw new RangeError("ring members need a positive, finite total weight");
  const exact = members.map((m, i) => ({ id: m.id, x: partitions * (scaled[i]! / total) }));
  const out = new Map<string, number>();
  let given = 0;
  for (const e of exact) {
    const lo = Math.floor(e.x);
    out.set(e.id, lo);
    given += lo;
  }
  const keepsHigh = (e: { id: string; x: number }) => (current.get(e.id) ?? 0) > Math.floor(e.x);
  const order = exact
    .filter((e) => e.x > Math.floor(e.x))
    .sort(
      (a, b) =>
        Number(keepsHigh(b)) - Number(keepsHigh(a)) ||
        b.x - Math.floor(b.x) - (a.x - Math.floor(a.x)) ||
        (a.id < b.id ? -1 : 1),
    );
  for (let i = 0; given < partitions && i < order.length; i++, given++) {
    const e = order[i]!;
    out.set(e.id, out.get(e.id)! + 1);
  }
  assert(given === partitions, () => `targets sum to ${given}, not Q=${partitions}`);
  return out;
}

function validateMembers(members: readonly RingMember[]): RingMember[] {
  if (members.length === 0) throw new RangeError("a ring needs at least one member");
  const seen = new Set<string>();
  for (const m of members) {
    if (seen.has(m.id)) throw new RangeError(`duplicate ring member ${m.id}`);
    seen.add(m.id);
    if (!(m.weight > 0) || !Number.isFinite(m.weight))
      throw new RangeError(`member ${m.id} has a bad weight ${m.weight}`);
  }
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Rebalances `prev` (or an empty ring) for `members`. `n` is the replication factor: a partition is
 * given, when possible, to a node owning none of the n-1 partitions on either side, so preference lists
 * find n distinct nodes in few steps.
 */
export function claim(
  prev: Ring | undefined,
  membersIn: readonly RingMember[],
  partitions: number,
  n: number,
): Ring {
  if (
    !Number.isInteger(partitions) ||
    !Number.isInteger(Math.log2(partitions)) ||
    partitions < 1 ||
    partitions > 1 << 20
  )
    throw new RangeError(`partitions must be a power of two up to 2^20, got ${partitions}`);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
  if (prev !== undefined && prev.partitions !== partitions)
    throw new RangeError("the partition count never changes");
  const members = validateMembers(membersIn);
  const owners: (string | undefined)[] = prev ? [...prev.owners] : new Array(partitions).fill(undefined);
  const currentCounts = new Map<string, number>();
  for (const o of owners) if (o !== undefined) currentCounts.set(o, (currentCounts.get(o) ?? 0) + 1);
  const targets = targetCounts(members, partitions, currentCounts);
  const owned = new Map<string, number[]>(members.map((m) => [m.id, []]));
  const pool: number[] = [];
  for (let p = 0; p < partitions; p++) {
    const o = owners[p];
    const list = o === undefined ? undefined : owned.get(o);
    if (list === undefined) {
      owners[p] = undefined;
      pool.push(p);
    } else list.push(p);
  }
  // Nodes above target release partitions spread evenly over what they own.
  for (const m of members) {
    const list = owned.get(m.id)!;
    const excess = list.length - targets.get(m.id)!;
    if (excess <= 0) continue;
    const step = list.length / excess;
    const release = new Set<number>();
    for (let i = 0; i < excess; i++) release.add(list[Math.floor(i * step)]!);
    for (const p of release) {
      owners[p] = undefined;
      pool.push(p);
    }
    owned.set(
      m.id,
      list.filter((p) => !release.has(p)),
    );
  }
  pool.sort((a, b) => a - b);
  const count = new Map<string, number>(members.map((m) => [m.id, owned.get(m.id)!.length]));
  let hungry = members.filter((m) => count.get(m.id)! < targets.get(m.id)!).map((m) => m.id);
  const near = (p: number, id: string): boolean => {
    for (let d = 1; d < n; d++) {
      if (owners[(p + d) % partitions] === id || owners[(p - d + partitions) % partitions] === id)
        return true;
    }
    return false;
  };
  for (const p of pool) {
    let best: string | undefined;
    let bestDeficit = -1;
    let fallback: string | undefined;
    let fallbackDeficit = -1;
    for (const id of hungry) {
      const deficit = targets.get(id)! - count.get(id)!;
      if (deficit > fallbackDeficit) {
        fallback = id;
        fallbackDeficit = deficit;
      }
      if (deficit > bestDeficit && !near(p, id)) {
        best = id;
        bestDeficit = deficit;
      }
    }
    const chosen = best ?? fallback;
    assert(
      chosen !== undefined,
      () => `claim left partition ${p} without an owner (targets do not sum to Q)`,
    );
    owners[p] = chosen;
    const c = count.get(chosen)! + 1;
    count.set(chosen, c);
    if (c >= targets.get(chosen)!) hungry = hungry.filter((id) => id !== chosen);
  }
  for (const m of members)
    assert(
      count.get(m.id) === targets.get(m.id),
      () => `claim gave ${m.id} ${count.get(m.id)} partitions, its target is ${targets.get(m.id)}`,
    );
  for (let p = 0; p < partitions; p++)
    assert(count.has(owners[p] ?? ""), () => `claim left partition ${p} to ${owners[p]}, not a member`);
  return { partitions, owners: owners as string[] };
}

/**
 * Preference lists of every partition, computed once per ring: lookup is then an array index, O(1).
 * A list holds up to n distinct nodes, nodes of zones not yet in the list first.
 */
export class PreferenceTable {
  private readonly lists: (readonly string[])[];
  private readonly fallbacks = new Map<number, readonly string[]>();

  constructor(
    readonly ring: Ring,
    members: readonly RingMember[],
    readonly n: number,
  ) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
    const zoneOf = new Map(members.map((m) => [m.id, m.zone ?? `node:${m.id}`]));
    const zones = new Set(zoneOf.values()).size;
    const distinctNodes = new Set(ring.owners).size;
    const want = Math.min(n, distinctNodes);
    const Q = ring.partitions;
    this.lists = new Array(Q);
    for (let p = 0; p < Q; p++) {
      const chosen: string[] = [];
      const usedZones = new Set<string>();
      const backup: string[] = [];
      const seen = new Set<string>();
      for (let i = 0; i < Q && chosen.length < want; i++) {
        const id = ring.owners[(p + i) % Q]!;
        if (seen.has(id)) continue;
        seen.add(id);
        const z = zoneOf.get(id) ?? `node:${id}`;
        if (!usedZones.has(z)) {
          chosen.push(id);
          usedZones.add(z);
        } else backup.push(id);
        // Every zone is represented and enough other nodes are in hand: the rest come from the backup.
        if (usedZones.size === Math.min(zones, want) && chosen.length + backup.length >= want) break;
      }
      while (chosen.length < want && backup.length > 0) chosen.push(backup.shift()!);
      assert(
        chosen.length === want && chosen.every((id, i) => chosen.indexOf(id) === i),
        () => `preference list of partition ${p} is [${chosen}], wanted ${want} distinct nodes`,
      );
      this.lists[p] = chosen;
    }
  }

  /** The preference list of a partition: up to n distinct node ids. */
  forPartition(p: number): readonly string[] {
    return this.lists[p]!;
  }

  forKey(key: Uint8Array): readonly string[] {
    return this.lists[partitionOf(key, this.ring.partitions)]!;
  }

  /**
   * The nodes after a partition's preference list, for a sloppy quorum (Dynamo 4.6): the next distinct
   * owners clockwise from the partition that are not in its list, in that order, at most 2n of them
   * (enough to stand in for every replica, and for stand-ins that fail in turn). Computed on first use.
   */
  fallbacksForPartition(p: number): readonly string[] {
    let out = this.fallbacks.get(p);
    if (out === undefined) {
      const list = this.lists[p]!;
      const Q = this.ring.partitions;
      const found: string[] = [];
      const seen = new Set(list);
      for (let i = 0; i < Q && found.length < 2 * this.n; i++) {
        const id = this.ring.owners[(p + i) % Q]!;
        if (seen.has(id)) continue;
        seen.add(id);
        found.push(id);
      }
      out = found;
      this.fallbacks.set(p, out);
    }
    return out;
  }

  fallbacksForKey(key: Uint8Array): readonly string[] {
    return this.fallbacksForPartition(partitionOf(key, this.ring.partitions));
  }
}

/** Partitions owned by each node. */
export function ownership(ring: Ring): Map<string, number> {
  const out = new Map<string, number>();
  for (const o of ring.owners) out.set(o, (out.get(o) ?? 0) + 1);
  return out;
}
