/**
 * `cluster plan`: what a change of the ring would move, computed before it is made (and making none).
 *
 * The next ring is the one the claimant would claim (ring.claim over the current ring, with the members
 * the change leaves), so the partitions that move are exactly those the change then moves, if nothing
 * else changes meanwhile. A partition's data moves to every node that is new in its preference list
 * (ownership handoff, replication/handoff.ts); its keys and bytes are the largest count any of its
 * current replicas reports (`count_partitions`: what each node stores per partition), so a replica that
 * missed writes does not make the plan smaller.
 *
 * The time is estimated at the handoff's throttle: the senders run at once, each at most at the
 * throttle, so it is the largest count of bytes one node sends divided by the throttle. Who sends
 * follows the handoff's rules with every member up: a node losing the partition (every keeper when no
 * remaining member loses it); a leaving node sends everything it holds to every replica of the next
 * ring. Pure: it works on what it is given.
 */
import { claim, PreferenceTable, type Ring, type RingMember } from "./ring.js";

/** What a node stores per partition (`count_partitions`): sets, live or not, and their bytes. */
export interface PartitionCounts {
  readonly keys: number[];
  /** Bytes of keys and stored sets. */
  readonly bytes: number[];
}

export type RingChange =
  | {
      readonly kind: "join";
      readonly id: string;
      readonly weight: number;
      readonly zone?: string | undefined;
    }
  | { readonly kind: "leave"; readonly id: string }
  | { readonly kind: "remove"; readonly id: string }
  | { readonly kind: "weight"; readonly id: string; readonly weight: number };

export interface PlanInput {
  readonly ring: Ring;
  readonly ringVersion: number;
  readonly n: number;
  /** The members the ring is claimed for now (joining or up), with weights and zones. */
  readonly ringMembers: readonly RingMember[];
  /** Every member not gone (zones for the preference lists). */
  readonly placementMembers: readonly RingMember[];
  readonly change: RingChange;
  /** What each member that answered stores per partition. */
  readonly counts: ReadonlyMap<string, PartitionCounts>;
  /** The handoff's throttle, bytes per second per sending node. */
  readonly bytesPerSecond: number;
}

export interface PartitionMove {
  readonly partition: number;
  /** The partition's owner now and in the next ring. */
  readonly ownerFrom: string;
  readonly ownerTo: string;
  /** Its preference list now and in the next ring. */
  readonly from: readonly string[];
  readonly to: readonly string[];
  /** Its keys and bytes (the largest count of its current replicas). */
  readonly keys: number;
  readonly bytes: number;
}

export interface NodeShare {
  readonly id: string;
  readonly partitionsBefore: number;
  readonly partitionsAfter: number;
  /** Copies of keys it gets (it is new in their preference lists), and their bytes. */
  readonly receivesKeys: number;
  readonly receivesBytes: number;
  /** What it sends (by the handoff's rules). */
  readonly sendsBytes: number;
}

export interface Plan {
  readonly change: RingChange;
  readonly ringVersion: number;
  /** Partitions whose owner or preference list changes, in order. */
  readonly moves: PartitionMove[];
  /** Partitions whose owner changes. */
  readonly ownersChanged: number;
  /** Copies of keys made on nodes new in their preference lists, and their bytes. */
  readonly keys: number;
  readonly bytes: number;
  readonly nodes: NodeShare[];
  readonly bytesPerSecond: number;
  /** The largest sender's bytes at the throttle. */
  readonly estimateSeconds: number;
  /** Members whose counts are missing (they did not answer): their partitions may be undercounted. */
  readonly missingCounts: string[];
}

export class PlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PlanError";
  }
}

/** The ring's members after the change; a PlanError if the change does not apply to the cluster. */
export function membersAfter(change: RingChange, members: readonly RingMember[]): RingMember[] {
  const has = members.some((m) => m.id === change.id);
  switch (change.kind) {
    case "join":
      if (has) throw new PlanError(`${change.id} is a member already`);
      return [...members, { id: change.id, weight: change.weight, zone: change.zone }];
    case "leave":
    case "remove":
      if (!has) throw new PlanError(`${change.id} is not in the ring`);
      if (members.length === 1) throw new PlanError(`${change.id} is the ring's only member`);
      return members.filter((m) => m.id !== change.id);
    case "weight":
      if (!has) throw new PlanError(`${change.id} is not in the ring`);
      return members.map((m) => (m.id === change.id ? { ...m, weight: change.weight } : m));
  }
}

export function planChange(i: PlanInput): Plan {
  const q = i.ring.partitions;
  const after = membersAfter(i.change, i.ringMembers);
  const next = claim(i.ring, after, q, i.n);
  const placementAfter =
    i.change.kind === "join"
      ? [...i.placementMembers, { id: i.change.id, weight: i.change.weight, zone: i.change.zone }]
      : i.change.kind === "remove"
        ? i.placementMembers.filter((m) => m.id !== i.change.id)
        : i.placementMembers;
  const before = new PreferenceTable(i.ring, i.placementMembers, i.n);
  const nextTable = new PreferenceTable(next, placementAfter, i.n);
  const shares = new Map<string, { before: number; after: number; rk: number; rb: number; sb: number }>();
  const share = (id: string) => {
    let s = shares.get(id);
    if (s === undefined) {
      s = { before: 0, after: 0, rk: 0, rb: 0, sb: 0 };
      shares.set(id, s);
    }
    return s;
  };
  for (const m of [...i.ringMembers, ...after]) share(m.id);
  for (let p = 0; p < q; p++) {
    share(i.ring.owners[p]!).before++;
    share(next.owners[p]!).after++;
  }
  const moves: PartitionMove[] = [];
  let ownersChanged = 0;
  let keys = 0;
  let bytes = 0;
  const leaver = i.change.kind === "leave" ? i.change.id : undefined;
  const gone = i.change.kind === "remove" ? i.change.id : undefined;
  for (let p = 0; p < q; p++) {
    const from = before.forPartition(p);
    const to = nextTable.forPartition(p);
    const ownerFrom = i.ring.owners[p]!;
    const ownerTo = next.owners[p]!;
    if (ownerFrom !== ownerTo) ownersChanged++;
    const added = to.filter((id) => !from.includes(id));
    if (added.length === 0 && ownerFrom === ownerTo) continue;
    let pk = 0;
    let pb = 0;
    for (const id of from) {
      const c = i.counts.get(id);
      if (c === undefined) continue;
      pk = Math.max(pk, c.keys[p] ?? 0);
      pb = Math.max(pb, c.bytes[p] ?? 0);
    }
    moves.push({ partition: p, ownerFrom, ownerTo, from, to, keys: pk, bytes: pb });
    for (const id of added) {
      const s = share(id);
      s.rk += pk;
      s.rb += pb;
    }
    keys += pk * added.length;
    bytes += pb * added.length;
    // Who sends, by the handoff's rules (handoff.ts, targets()).
    if (added.length > 0) {
      const losers = from.filter((id) => !to.includes(id) && id !== leaver);
      const keepers = from.filter((id) => to.includes(id));
      // Planned with every member up: a keeper sends only when no loser will (handoff.ts sends for a loser
      // seen down too, which a plan cannot foresee).
      const live = losers.filter((id) => id !== gone);
      const senders = live.length === 0 ? keepers : live;
      for (const id of senders) share(id).sb += pb * added.length;
    }
    if (leaver !== undefined && from.includes(leaver))
      share(leaver).sb += (i.counts.get(leaver)?.bytes[p] ?? 0) * to.length;
  }
  const nodes: NodeShare[] = [...shares.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([id, s]) => ({
      id,
      partitionsBefore: s.before,
      partitionsAfter: s.after,
      receivesKeys: s.rk,
      receivesBytes: s.rb,
      sendsBytes: s.sb,
    }));
  const largest = Math.max(0, ...nodes.map((s) => s.sendsBytes));
  const missingCounts = i.placementMembers
    .map((m) => m.id)
    .filter((id) => id !== gone && !i.counts.has(id))
    .sort();
  return {
    change: i.change,
    ringVersion: i.ringVersion,
    moves,
    ownersChanged,
    keys,
    bytes,
    nodes,
    bytesPerSecond: i.bytesPerSecond,
    estimateSeconds: largest / i.bytesPerSecond,
    missingCounts,
  };
}
