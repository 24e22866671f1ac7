/**
 * Membership and failure detection: a pure state machine (no timers, no I/O; the driver in
 * gossip-driver.ts feeds it ticks, gossip and contact results, and sends what it asks for).
 *
 * State gossiped (every member's entry, and the ring):
 * - An entry is owned by its member: only the member changes its status (joining -> up -> leaving ->
 *   left) and bumps its incarnation and heartbeat. A leaving member is out of the ring (ringMembers). Merging two views keeps, per member, the entry with
 *   the higher (incarnation, status rank, heartbeat): views converge whatever the order of exchanges.
 * - Who may say a member is `left` (merge knows the sender of each view, `from`; the transport
 *   authenticated it with the cluster key): the member itself; anyone, once the member announced its own
 *   leave (it is `leaving` here, and the `left` that completes it carries no removal); the claimant that
 *   approved that leave, named in the entry (`leaveApprovedBy`: a member that never saw the leave begin
 *   holds a relayed `left` and asks that claimant in its next round; a leave the leaver approved itself
 *   is taken from a relay once the leaver looks down); the claimant, as
 *   this node sees it; and for a removal (`cluster remove`, which marks another member left after the
 *   claimant approved it) the approving claimant, named in the entry (`removedBy`), or this node if it
 *   is that claimant and did approve it. A removal relayed by another member is held: this node asks the
 *   approver in its next round and takes the removal from it. Any other claim that a member left (a
 *   forged one, or one naming an approver that is not a member up) is ignored and reported with its
 *   sender (`onEvent`), and so is one about this node itself, which would stop it for good. A newer
 *   entry for this node from someone else is refuted (this node bumps its incarnation past it).
 *   Gossip relays every other part of an entry from member to member (that is how it spreads), so a
 *   relay is trusted for those: a holder of the cluster key is a member.
 * - Every change of a member's status, and of its liveness here, is reported once (`onEvent`), with its
 *   cause: who said it, or what was observed.
 * - Gossip travels by digest (gossip-driver.ts, digest.ts): entries change here only through merge (or
 *   this node's own changes); a digest only advances heartbeats of entries equal but for the heartbeat,
 *   and says which entries to ask a peer for or push to it.
 * - A departed member (left) is forgotten once every live member (not left, not down here) has been
 *   seen holding its departure and forgetAfterMs passed since this node first held it: it leaves the
 *   view, the digests and the status. Its final entry is kept apart (at most FORGOTTEN_MAX, the oldest
 *   dropped first): `member` still reads it as left (a join with its id is refused), no entry for it is
 *   taken again, and a peer still holding it otherwise is sent it.
 * - The ring has a version; the higher version wins. Ring changes are made by one member at a time, the
 *   claimant: the lowest id among members that are up and look alive. It claims the joining members in
 *   (and the departed out) with ring.claim, which moves partitions only to where they must go.
 *
 * Failure detection (local to each node, never gossiped):
 * - `up`: the member's heartbeat increased within `downAfterMs` of local time.
 * - `suspect`: this node's own direct contacts with it failed recently. Suspicion is one node's view (one
 *   bad link, a slow peer); it steers routing away from the member but does not declare it down.
 * - `down`: its heartbeat has not increased for `downAfterMs`. Heartbeats reach a node through any
 *   member that gossips with it, so a member is down only when nobody hears from it: the evidence of
 *   others, which one bad link cannot fake. When its heartbeat moves again, it is up again.
 * The time to detect a crash is bounded by downAfterMs plus the time gossip takes to stop carrying news.
 *
 * Invariants asserted (every change of an entry or the ring goes through setEntry and setRing): an
 * entry that is `left` stays `left`; the ring's version never decreases, and the first ring is made only
 * where there is none; a ring is claimed only by a claimant that is an up member.
 */
import { assert } from "../core/assert.js";

import { claim, type Ring, type RingMember } from "../ring/ring.js";
import type { Random } from "../runtime/runtime.js";
import {
  type GossipDigest,
  MAX_HEARTBEAT,
  type MemberView,
  type RingDelta,
  type RingRef,
  type RingView,
} from "../transport/messages.js";
import {
  applyRingDelta,
  directoryHash,
  NO_RING,
  ringDelta,
  ringHash,
  STATUS_RANK,
  STATUSES,
  u32At,
} from "./digest.js";

export type Liveness = "up" | "suspect" | "down";

/**
 * A change of the view, once, with its cause (node.ts logs each as one line): a member joins, is up, is
 * leaving, left, was removed, moved (new addresses), is suspect, looks down, is up again; a claim that
 * was ignored, or an entry for this node that was refuted; this node unsure that it is still a member
 * (cut off too long: node/absences.ts), or sure again.
 */
export interface MembershipEvent {
  readonly change:
    | "join"
    | "up"
    | "leave"
    | "left"
    | "remove"
    | "moved"
    | "suspect"
    | "down"
    | "alive"
    | "ignored"
    | "refuted"
    | "forgotten"
    | "unsure"
    | "confirmed";
  /** The member the change is about. */
  readonly member: string;
  /** The member whose gossip carried it (undefined: observed or decided here). */
  readonly sender?: string;
  /** One line: what changed and why. */
  readonly text: string;
}

export interface MembershipConfig {
  readonly selfId: string;
  readonly partitions: number;
  readonly n: number;
  /** No heartbeat increase for this long: down. */
  readonly downAfterMs: number;
  /** A failed direct contact makes the member suspect for this long. */
  readonly suspectForMs: number;
  /** Peers gossiped with per round. */
  readonly fanout: number;
  /**
   * How long a departed member (left) stays in the view after this node learned of its departure, at
   * least (and until every live member has been seen holding it): DEPARTED_GRACE_MS when absent.
   */
  readonly forgetAfterMs?: number;
}

/** The grace time before a departed member is forgotten, unless configured (forgetAfterMs). */
export const DEPARTED_GRACE_MS = 60_000;
/**
 * Departed members forgotten but still refused (their final `left` entry kept, outside the view): the
 * oldest is dropped beyond this many. About 200 bytes each: at most about 1 MiB.
 */
export const FORGOTTEN_MAX = 4096;

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** A member as this node holds it: its entry (this node's own copy) and what is local to this node. */
interface Slot {
  /**
   * Changed in place only for a heartbeat; every other change goes through setEntry. While the
   * directory is built (`order`), the heartbeat and lastProgressAt of its arrays are the ones that
   * count: read an entry through `fresh`, and the progress through `progressOf`.
   */
  entry: Mutable<MemberView>;
  /** Local time when the member's heartbeat last increased (or when first heard of). */
  lastProgressAt: number;
  suspectUntil: number;
  /** A departed member: when this node first held it left (its first round after), and who holds it so. */
  departed?: { readonly at: number; readonly seenBy: Set<string> };
  /** Liveness last reported (only changes are reported; undefined: up, or not reported). */
  reported?: Liveness;
  /** Its position in the directory (valid while the directory is, `order`). */
  index: number;
}

/**
 * The directory: slots in id order, its hash, and in that order every heartbeat and the local time it
 * last increased. While it is built these arrays hold the heartbeats and progress times (gossip updates
 * them without touching the slots); `invalidate` writes them back to the slots before it is rebuilt.
 */
interface Directory {
  readonly slots: readonly Slot[];
  readonly dir: number;
  readonly heartbeats: Uint32Array;
  readonly progress: Float64Array;
  /** What a full digest names (built when first asked for). */
  names?: Pick<GossipDigest, "ids" | "incarnations" | "statuses">;
}

/** Heartbeats travel as u32 little-endian: on a little-endian machine, a Uint32Array's bytes as they are. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Rings kept to send a peer the change from its version (a delta) instead of the whole ring. */
const RING_HISTORY = 8;

/** What a full digest comparison found (compareDigest). */
export interface DigestComparison {
  /** Entries the peer lacks or holds older (to push to it). */
  readonly lacks: MemberView[];
  /** Ids whose entries the peer holds newer, or this node lacks (to ask it for). */
  readonly wants: string[];
}

/**
 * Does `a` supersede `b` (both entries of the same member)? `left` is final: it supersedes every entry
 * that is not `left`, and none supersedes it, so a departed id never comes back (a node that left or was
 * removed stops when it hears it, and its id cannot join again).
 */
export function newerEntry(a: MemberView, b: MemberView): boolean {
  return entryOrder(a.status, a.incarnation, a.heartbeat, b) > 0;
}

/**
 * The order of newerEntry between an entry given by its parts (status, incarnation, heartbeat: what a
 * digest says of it) and `b`: above 0 if it supersedes `b`, below 0 if `b` supersedes it, 0 if equal.
 */
function entryOrder(
  status: MemberView["status"],
  incarnation: number,
  heartbeat: number,
  b: MemberView,
): number {
  if ((status === "left") !== (b.status === "left")) return status === "left" ? 1 : -1;
  if (incarnation !== b.incarnation) return incarnation > b.incarnation ? 1 : -1;
  if (status !== b.status) return STATUS_RANK[status] > STATUS_RANK[b.status] ? 1 : -1;
  return heartbeat === b.heartbeat ? 0 : heartbeat > b.heartbeat ? 1 : -1;
}

/** Whether two entries of a member give the same addresses, weight and zone. */
function samePlace(a: MemberView, b: MemberView): boolean {
  return a.api === b.api && a.peer === b.peer && a.weight === b.weight && a.zone === b.zone;
}

/** "id:weight" per ring member, sorted: what a ring was claimed for. */
export function ringMemberKeys(members: readonly RingMember[]): string[] {
  return members.map((m) => `${m.id}:${m.weight}`).sort();
}

/**
 * Orders two rings of the same version (only possible if two claimants acted at once): a deterministic
 * tie-break so every node keeps the same one. Compared element by element, stopping at the first
 * difference: this runs on every gossip message, and rings are usually identical.
 */
function compareRings(a: RingView, b: RingView): number {
  if (a === b) return 0;
  if (a.version !== b.version) return a.version - b.version;
  for (const [x, y] of [
    [a.owners, b.owners],
    [a.members, b.members],
  ] as const) {
    if (x.length !== y.length) return x.length - y.length;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  }
  return 0;
}

/** Members asked again about a held removal at once (beyond them, the next rounds ask). */
const VERIFY_MAX = 4;

/** " (heard from X)", or nothing for what this node trusts whole. */
function heard(from: string | undefined): string {
  return from === undefined ? "" : ` (heard from ${from})`;
}

export class Membership {
  private readonly slots = new Map<string, Slot>();
  /**
   * Departed members forgotten (out of the view, the digests and the status), by id, oldest first, with
   * their final entry: an entry for one of them is never taken again, and a peer that still holds one
   * as not left is told it left.
   */
  private readonly forgotten = new Map<string, MemberView>();
  /** Departed members in the view (kept by setEntry and forgetDeparted). */
  private departedCount = 0;
  /** The slots in id order, with the directory's hash: rebuilt when the directory changed (null). */
  private order: Directory | null = null;
  /** Bumped on every change of the directory (a member added, or its incarnation or status changed). */
  private dirVersion = 0;
  /** The directory version and ring the claimant last checked its ring against (maybeClaim). */
  private claimChecked: { dir: number; ring: RingView | null } | undefined;
  private ringView: RingView | null = null;
  private ringRefView: RingRef = NO_RING;
  /** The last rings held (newest last), to send a peer a delta from its own. */
  private readonly ringHistory: { readonly ring: RingView; readonly ref: RingRef }[] = [];
  /** Members to gossip with in the next round: they approved a removal this node heard of second-hand. */
  private readonly verify = new Set<string>();
  /** When a claim that this node left last reached it and was not taken (held, or refused). */
  private selfLeftClaimAt: number | undefined;
  /** Receives every change (undefined: nobody listens, e.g. while the saved view is loaded at start). */
  onEvent: ((e: MembershipEvent) => void) | undefined;
  /**
   * Did this node, as the claimant, approve the departure of `id` lately (node/departures.ts)? Lets it take
   * a removal that names it as the approver from the member that performed it.
   */
  approvedDeparture: (id: string) => boolean = () => false;

  /** When a claim that this node left last reached it and was not taken (undefined: never). */
  get leftClaimedAt(): number | undefined {
    return this.selfLeftClaimAt;
  }
  /**
   * Bumped whenever the ring, a member's status, or its addresses, weight or zone change: the view
   * the node saves on each bump (node/view-saver.ts). (The preference table follows the ring's version,
   * not this.)
   */
  epoch = 0;

  constructor(
    readonly config: MembershipConfig,
    self: MemberView,
    now: number,
  ) {
    this.slots.set(self.id, { entry: { ...self }, lastProgressAt: now, suspectUntil: 0, index: 0 });
  }

  get self(): MemberView {
    return this.fresh(this.slots.get(this.config.selfId)!);
  }

  /** A slot's entry with its heartbeat brought up to date (see Directory). */
  private fresh(s: Slot): Mutable<MemberView> {
    if (this.order !== null) s.entry.heartbeat = this.order.heartbeats[s.index]!;
    return s.entry;
  }

  private progressOf(s: Slot): number {
    return this.order === null ? s.lastProgressAt : this.order.progress[s.index]!;
  }

  private setProgress(s: Slot, at: number): void {
    if (this.order === null) s.lastProgressAt = at;
    else this.order.progress[s.index] = at;
  }

  /** The directory changes: its arrays go back to the slots, and it is rebuilt when next needed. */
  private invalidate(): void {
    const o = this.order;
    if (o === null) return;
    for (const s of o.slots) {
      s.entry.heartbeat = o.heartbeats[s.index]!;
      s.lastProgressAt = o.progress[s.index]!;
    }
    this.order = null;
  }

  get ring(): RingView | null {
    return this.ringView;
  }

  /** The ring's version and hash (0, 0 without a ring): what a digest says of it. */
  get ringRef(): RingRef {
    return this.ringRefView;
  }

  /** Every member's entry, copied (a snapshot: heartbeats move on afterwards). */
  view(): MemberView[] {
    const out: MemberView[] = [];
    for (const s of this.slots.values()) out.push({ ...this.fresh(s) });
    return out;
  }

  /** The final entries of the departed members forgotten here, oldest first (saved with the view). */
  forgottenEntries(): MemberView[] {
    return [...this.forgotten.values()].map((m) => ({ ...m }));
  }

  /**
   * Takes back the departed members forgotten before a restart (the saved view's): each stays refused. Only
   * `left` entries of members this node does not hold are taken; at most FORGOTTEN_MAX are kept.
   */
  restoreForgotten(entries: readonly MemberView[]): void {
    for (const m of entries) {
      if (m.status !== "left" || this.slots.has(m.id) || m.id === this.config.selfId) continue;
      this.forgotten.set(m.id, { ...m });
      if (this.forgotten.size > FORGOTTEN_MAX) this.forgotten.delete(this.forgotten.keys().next().value!);
    }
  }

  /**
   * A member's entry: this node's own, whose heartbeat moves as gossip arrives (read it, or copy it to
   * keep it).
   */
  member(id: string): MemberView | undefined {
    const s = this.slots.get(id);
    return s === undefined ? this.forgotten.get(id) : this.fresh(s);
  }

  /** Was `id` forgotten (a departed member out of the view, still refused)? */
  isForgotten(id: string): boolean {
    return this.forgotten.has(id);
  }

  liveness(id: string, now: number): Liveness {
    if (id === this.config.selfId) return "up";
    const l = this.slots.get(id);
    if (l === undefined) return "down";
    return this.slotLiveness(l, now);
  }

  private slotLiveness(l: Slot, now: number): Liveness {
    if (l.entry.id === this.config.selfId) return "up";
    if (now - this.progressOf(l) > this.config.downAfterMs) return "down";
    if (now < l.suspectUntil) return "suspect";
    return "up";
  }

  /**
   * Members the ring is claimed for: joining or up. A leaving member is claimed out at once, so that its
   * partitions go to the nodes that will keep them while it hands its data off (replication/handoff.ts).
   */
  ringMembers(): RingMember[] {
    const out: RingMember[] = [];
    for (const { entry: m } of this.slots.values())
      if (m.status === "joining" || m.status === "up") out.push({ id: m.id, weight: m.weight, zone: m.zone });
    return out;
  }

  /** Every member not gone (left), with its zone: what preference lists need to know of placement. */
  placementMembers(): RingMember[] {
    const out: RingMember[] = [];
    for (const { entry: m } of this.slots.values())
      if (m.status !== "left") out.push({ id: m.id, weight: m.weight, zone: m.zone });
    return out;
  }

  /** Every change of a member's entry but a heartbeat's: `left` is final. Stores a copy of `next`. */
  private setEntry(id: string, next: MemberView, now?: number): Slot {
    assert(next.id === id, () => `the entry of ${next.id} stored as ${id}'s`);
    assert(
      next.heartbeat <= MAX_HEARTBEAT,
      () => `member ${id}'s heartbeat ${next.heartbeat} is past ${MAX_HEARTBEAT}`,
    );
    const slot = this.slots.get(id);
    const cur = slot?.entry;
    assert(
      cur === undefined || cur.status !== "left" || next.status === "left",
      () => `member ${next.id} would go from left back to ${next.status}`,
    );
    if (cur === undefined || cur.incarnation !== next.incarnation || cur.status !== next.status) {
      this.invalidate();
      this.dirVersion++;
    }
    if (next.status === "left" && cur?.status !== "left") this.departedCount++;
    if (slot !== undefined) {
      slot.entry = { ...next };
      if (this.order !== null) this.order.heartbeats[slot.index] = next.heartbeat;
      return slot;
    }
    assert(now !== undefined, () => `member ${id} added without the time`);
    const added: Slot = { entry: { ...next }, lastProgressAt: now, suspectUntil: 0, index: 0 };
    this.slots.set(id, added);
    return added;
  }

  /** A heartbeat-only change (same incarnation and status): in place, as it is the most frequent. */
  private advanceHeartbeat(slot: Slot, heartbeat: number, now: number): void {
    const o = this.order;
    if (o === null) {
      assert(
        heartbeat > slot.entry.heartbeat,
        () => `member ${slot.entry.id}'s heartbeat would not increase`,
      );
      slot.entry.heartbeat = heartbeat;
      slot.lastProgressAt = now;
      return;
    }
    assert(
      heartbeat > o.heartbeats[slot.index]!,
      () => `member ${slot.entry.id}'s heartbeat would not increase`,
    );
    o.heartbeats[slot.index] = heartbeat;
    o.progress[slot.index] = now;
  }

  /** Every change of the ring: its version never goes back. */
  private setRing(next: RingView): void {
    const cur = this.ringView;
    assert(
      cur === null || next.version >= cur.version,
      () => `the ring would go from version ${cur?.version} back to ${next.version}`,
    );
    this.ringView = next;
    this.ringRefView = { version: next.version, hash: ringHash(next) };
    this.ringHistory.push({ ring: next, ref: this.ringRefView });
    if (this.ringHistory.length > RING_HISTORY) this.ringHistory.shift();
  }

  /** The slots in id order and the directory's hash (cached until the directory changes). */
  private directory(): Directory {
    if (this.order === null) {
      const slots = [...this.slots.values()].sort((a, b) => (a.entry.id < b.entry.id ? -1 : 1));
      const heartbeats = new Uint32Array(slots.length);
      const progress = new Float64Array(slots.length);
      slots.forEach((s, i) => {
        s.index = i;
        heartbeats[i] = s.entry.heartbeat;
        progress[i] = s.lastProgressAt;
      });
      this.order = { slots, dir: directoryHash(slots.map((s) => s.entry)), heartbeats, progress };
    }
    return this.order;
  }

  private emit(change: MembershipEvent["change"], member: string, text: string, sender?: string): void {
    this.onEvent?.({ change, member, text, ...(sender === undefined ? {} : { sender }) });
  }

  /** Reports each member's liveness when it changed since last reported. */
  private reportLiveness(now: number): void {
    for (const s of this.slots.values()) {
      const m = s.entry;
      if (m.id === this.config.selfId || m.status === "left") {
        s.reported = undefined;
        continue;
      }
      const live = this.slotLiveness(s, now);
      const was = s.reported ?? "up";
      if (live === was) continue;
      s.reported = live;
      if (live === "down")
        this.emit(
          "down",
          m.id,
          `${m.id} looks down: no heartbeat of it heard for ${this.config.downAfterMs} ms`,
        );
      else if (live === "suspect")
        this.emit(
          "suspect",
          m.id,
          `${m.id} is suspect: a direct contact with it failed (requests avoid it for now)`,
        );
      else
        this.emit(
          "alive",
          m.id,
          was === "down"
            ? `${m.id} is up again: its heartbeat moves`
            : `${m.id} is no longer suspect: a contact succeeded`,
        );
    }
  }

  // ------------------------------------------------------------------ inputs

  /** One gossip round: bumps our heartbeat; returns the peers to gossip with this round. */
  tick(now: number, random: Random): string[] {
    const mySlot = this.slots.get(this.config.selfId)!;
    const me = this.fresh(mySlot);
    // A heartbeat that reached its bound (it travels as a u32) moves into the incarnation.
    if (me.heartbeat >= MAX_HEARTBEAT)
      this.setEntry(me.id, { ...me, incarnation: me.incarnation + 1, heartbeat: 0 });
    else this.advanceHeartbeat(mySlot, me.heartbeat + 1, now);
    this.setProgress(mySlot, now);
    this.maybeClaim(now);
    this.maybeBecomeUp();
    this.reportLiveness(now);
    this.forgetDeparted(now);
    // Members that look alive, drawn at random from the directory (a scan when draws find too few), and
    // now and then one that looks down, so that it can come back.
    const self = this.config.selfId;
    const { slots } = this.directory();
    const out: string[] = [];
    const alive = (x: Slot) =>
      x.entry.id !== self && x.entry.status !== "left" && this.slotLiveness(x, now) !== "down";
    const pick = (pool: Slot[], k: number) => {
      for (let i = 0; i < k && pool.length > 0; i++) {
        const j = Math.floor(random.next() * pool.length);
        out.push(pool[j]!.entry.id);
        pool[j] = pool[pool.length - 1]!;
        pool.pop();
      }
    };
    const fanout = this.config.fanout;
    for (let tries = 0; out.length < fanout && tries < 4 * fanout + 8; tries++) {
      const x = slots[Math.floor(random.next() * slots.length)]!;
      if (alive(x) && !out.includes(x.entry.id)) out.push(x.entry.id);
    }
    if (out.length < fanout)
      pick(
        slots.filter((x) => alive(x) && !out.includes(x.entry.id)),
        fanout - out.length,
      );
    if (random.next() < 0.25)
      pick(
        slots.filter(
          (x) => x.entry.id !== self && x.entry.status !== "left" && this.slotLiveness(x, now) === "down",
        ),
        1,
      );
    // Ask the approvers of removals heard second-hand (merge): they confirm them, or nothing comes of it.
    for (const id of this.verify) {
      const v = this.slots.get(id);
      if (v !== undefined && v.entry.status !== "left" && id !== self && !out.includes(id)) out.push(id);
    }
    this.verify.clear();
    return out;
  }

  /**
   * Merges a view: one received by gossip from member `from` (its request, or its answer to ours), or,
   * with `from` undefined, one this node trusts whole (its saved view at start, the answer to its join).
   * Who may say that a member left: the file's opening comment.
   */
  merge(members: readonly MemberView[], ring: RingView | null, now: number, from?: string): void {
    let changed = false;
    for (const m of members) {
      if (m.id === this.config.selfId) {
        if (this.mergeSelf(m, now, from)) changed = true;
        continue;
      }
      // A departed member forgotten here never comes back (its final entry is kept: see `forgotten`).
      if (this.forgotten.has(m.id)) continue;
      const slot = this.slots.get(m.id);
      const cur = slot === undefined ? undefined : this.fresh(slot);
      if (from !== undefined && m.status === "left") this.sawDeparted(m.id, from);
      if (cur !== undefined && !newerEntry(m, cur)) continue;
      if (
        slot !== undefined &&
        cur!.incarnation === m.incarnation &&
        cur!.status === m.status &&
        samePlace(cur!, m) &&
        cur!.removedBy === m.removedBy &&
        cur!.leaveApprovedBy === m.leaveApprovedBy
      ) {
        // Only the heartbeat moved (the most frequent change): in place.
        this.advanceHeartbeat(slot, m.heartbeat, now);
        continue;
      }
      if (cur !== undefined && cur.status !== "left" && m.status === "left") {
        const why = this.leftRefused(m, cur, now, from);
        if (why !== undefined) {
          this.refuseLeft(m, from, why);
          continue;
        }
      }
      // A new status, or new addresses or placement (a member restarted elsewhere: port 0, a new IP),
      // is a change of the view that is saved (members.json): a node that restarts finds its peers at
      // the addresses it saved. Heartbeats alone are not.
      if (cur === undefined || cur.status !== m.status || !samePlace(cur, m)) changed = true;
      const progress = cur === undefined || m.heartbeat > cur.heartbeat || m.incarnation > cur.incarnation;
      const l = this.setEntry(m.id, m, now);
      if (progress) this.setProgress(l, now);
      this.reportEntry(cur, m, from);
    }
    if (ring !== null && this.takeRing(ring, from)) changed = true;
    if (changed) this.epoch++;
    this.maybeBecomeUp();
  }

  /** Takes a ring if it is this cluster's and newer than this node's; returns whether it did. */
  private takeRing(ring: RingView, from: string | undefined): boolean {
    if (ring.partitions !== this.config.partitions) {
      // Not this cluster's ring (Q is fixed at its creation): claiming over it would fail.
      this.emit(
        "ignored",
        this.config.selfId,
        `ignored ${from ?? "?"}'s ring (version ${ring.version}): it has ${ring.partitions} partitions, this cluster ${this.config.partitions}`,
        from,
      );
      return false;
    }
    if (this.ringView !== null && compareRings(ring, this.ringView) <= 0) return false;
    this.setRing(ring);
    return true;
  }

  /** Merges an entry for this node; returns whether the view changed. */
  private mergeSelf(m: MemberView, now: number, from: string | undefined): boolean {
    const me = this.self;
    if (!newerEntry(m, me)) return false;
    if (m.status === "left") {
      const why = this.leftRefused(m, me, now, from);
      if (why !== undefined) {
        this.selfLeftClaimAt = now;
        this.refuseLeft(m, from, why);
        return false;
      }
      // An operator removed us (cluster remove) while we were down or cut off: we are gone; the node
      // stops.
      this.setEntry(me.id, {
        ...me,
        status: "left",
        incarnation: Math.max(me.incarnation, m.incarnation),
        ...(m.removedBy === undefined ? {} : { removedBy: m.removedBy }),
      });
      this.emit(
        "remove",
        me.id,
        `this node was removed from the cluster${m.removedBy === undefined ? "" : ` (approved by ${m.removedBy})`}${heard(from)}: it stops`,
        from,
      );
      return true;
    }
    // Someone holds a newer entry for us than we do (we restarted, or it is forged): jump past it.
    const incarnation = m.incarnation + 1;
    this.setEntry(me.id, {
      ...me,
      incarnation,
      heartbeat: Math.min(MAX_HEARTBEAT, Math.max(me.heartbeat, m.heartbeat) + 1),
    });
    if (from !== undefined)
      this.emit(
        "refuted",
        me.id,
        `${from} gossiped an entry for this node newer than its own (incarnation ${m.incarnation}, ${m.status}): refuted with incarnation ${incarnation}`,
        from,
      );
    return false;
  }

  /**
   * Why `m`, an entry saying that member m.id left (its entry here, `cur`, says otherwise), may not be
   * taken from `from`; undefined when it may.
   */
  private leftRefused(
    m: MemberView,
    cur: MemberView,
    now: number,
    from: string | undefined,
  ): string | undefined {
    if (from === undefined) return undefined; // this node's own saved view, or its join answer
    const self = this.config.selfId;
    if (m.id !== self) {
      if (from === m.id) return undefined; // its own word
      // The end of a leave it announced itself.
      if (cur.status === "leaving" && m.removedBy === undefined) return undefined;
      // The end of a leave this node never saw begin: the claimant that approved it confirms it.
      const approver = m.leaveApprovedBy;
      if (m.removedBy === undefined && approver !== undefined) {
        if (from === approver) return undefined;
        // A leave the leaver approved itself (it was the claimant): once it has stopped, as a member that
        // left does, nobody can confirm it; taken when the leaver looks down here (a live member's
        // heartbeats keep it up, and it would answer a check with its own entry).
        if (approver === m.id && this.liveness(m.id, now) === "down") return undefined;
        if (approver !== self && this.slots.get(approver)?.entry.status === "up") {
          if (this.verify.size < VERIFY_MAX) this.verify.add(approver);
          return "";
        }
      }
    }
    const claimant = this.claimant(now);
    if (from === claimant) return undefined;
    if (m.removedBy !== undefined) {
      if (from === m.removedBy) return undefined; // the approver's own word
      if (m.removedBy === self && this.approvedDeparture(m.id)) return undefined;
      const approver = this.slots.get(m.removedBy)?.entry;
      if (m.removedBy !== self && approver?.status === "up") {
        // Plausible: confirm it with the approver itself in the next round.
        if (this.verify.size < VERIFY_MAX) this.verify.add(m.removedBy);
        return "";
      }
      return `it names ${m.removedBy} as the claimant that approved the removal, which ${m.removedBy === self ? "this node did not" : "is no member up here"}`;
    }
    if (claimant !== undefined && claimant !== self && this.verify.size < VERIFY_MAX)
      this.verify.add(claimant);
    return `only ${m.id === self ? "the claimant may say so of this node" : `${m.id} itself, or the claimant (${claimant ?? "none"}) may say so`}, and no removal approved by the claimant is named`;
  }

  /** A claim that a member left, not taken: reported with its sender, unless it is only held (""). */
  private refuseLeft(m: MemberView, from: string | undefined, why: string): void {
    if (why === "") return;
    const who = m.id === this.config.selfId ? "this node" : m.id;
    this.emit("ignored", m.id, `ignored ${from ?? "?"}'s claim that ${who} left the cluster: ${why}`, from);
  }

  /** Reports what changed between a member's entry here (`cur`) and the new one (`m`). */
  private reportEntry(cur: MemberView | undefined, m: MemberView, from: string | undefined): void {
    const source = from === m.id ? " (its own word)" : heard(from);
    if (cur === undefined) {
      if (m.status !== "left")
        this.emit("join", m.id, `${m.id} joins the cluster (${m.status}, peer ${m.peer})${source}`, from);
      return;
    }
    if (cur.status !== m.status)
      switch (m.status) {
        case "up":
          this.emit("up", m.id, `${m.id} is up${source}`, from);
          break;
        case "joining":
          this.emit("join", m.id, `${m.id} is joining again${source}`, from);
          break;
        case "leaving":
          this.emit("leave", m.id, `${m.id} is leaving the cluster (cluster leave)${source}`, from);
          break;
        case "left":
          if (m.removedBy === undefined)
            this.emit("left", m.id, `${m.id} left the cluster (its leave is complete)${source}`, from);
          else
            this.emit(
              "remove",
              m.id,
              `${m.id} was removed from the cluster (cluster remove, approved by ${m.removedBy})${source}`,
              from,
            );
          break;
      }
    else if (!samePlace(cur, m))
      this.emit(
        "moved",
        m.id,
        `${m.id} is now at peer ${m.peer}, API ${m.api}, weight ${m.weight}${source}`,
        from,
      );
  }

  /** A direct contact with `id` failed: suspect it for a while (local only). */
  contactFailed(id: string, now: number): void {
    const l = this.slots.get(id);
    if (l !== undefined) l.suspectUntil = now + this.config.suspectForMs;
  }

  /** A direct contact with `id` succeeded: lift our suspicion. */
  contactSucceeded(id: string): void {
    const l = this.slots.get(id);
    if (l !== undefined) l.suspectUntil = 0;
  }

  /** Changes our own entry (addresses, weight, zone), bumping the incarnation so that it wins everywhere. */
  updateSelf(patch: Partial<Pick<MemberView, "api" | "peer" | "weight" | "zone">>): void {
    const me = this.self;
    this.setEntry(me.id, { ...me, ...patch, incarnation: me.incarnation + 1 });
    this.epoch++;
  }

  /** This node starts leaving: the claimant claims it out of the ring; it hands its data off meanwhile. */
  startLeaving(approvedBy?: string): void {
    const me = this.self;
    if (me.status === "leaving" || me.status === "left") return;
    this.setEntry(me.id, {
      ...me,
      status: "leaving",
      incarnation: me.incarnation + 1,
      ...(approvedBy === undefined ? {} : { leaveApprovedBy: approvedBy }),
    });
    this.epoch++;
    this.emit("leave", me.id, "this node is leaving the cluster (cluster leave, approved by the claimant)");
  }

  /** This node has handed everything off and leaves for good. */
  markLeft(): void {
    const me = this.self;
    if (me.status === "left") return;
    this.setEntry(me.id, { ...me, status: "left", incarnation: me.incarnation + 1 });
    this.epoch++;
    this.emit("left", me.id, "this node left the cluster: everything it held is handed off");
  }

  /**
   * Marks another member left on its behalf: an operator's word that it is gone for good (cluster
   * remove), which the claimant `approvedBy` approved (other members take it from that claimant, or
   * from their own). The claimant claims it out of the ring; the keepers of its keys send them to their
   * new replicas (handoff); if it ever runs again, it hears that it left and stops.
   */
  remove(id: string, approvedBy: string): void {
    const m = this.slots.get(id)?.entry;
    if (m === undefined || m.status === "left" || id === this.config.selfId) return;
    this.setEntry(id, { ...m, status: "left", incarnation: m.incarnation + 1, removedBy: approvedBy });
    this.epoch++;
    this.emit(
      "remove",
      id,
      `${id} was removed from the cluster by this node (cluster remove, approved by ${approvedBy})`,
    );
  }

  /** Creates the first ring (a new cluster of one). */
  bootstrapRing(): void {
    assert(this.ringView === null, () => `a first ring made over ring version ${this.ringView?.version}`);
    const members = this.ringMembers();
    const r = claim(undefined, members, this.config.partitions, this.config.n);
    this.setRing({
      version: 1,
      partitions: r.partitions,
      owners: r.owners,
      members: ringMemberKeys(members),
    });
    const me = this.self;
    this.setEntry(me.id, { ...me, status: "up", incarnation: me.incarnation + 1 });
    this.epoch++;
  }

  /** Adds a member that asked to join through us (it gossips its own entry from then on). */
  admit(m: MemberView, now: number): void {
    this.merge([m], null, now, m.id);
  }

  // ------------------------------------------------------------------ departed members

  private departedSlots(): Slot[] {
    const out: Slot[] = [];
    if (this.departedCount === 0) return out;
    for (const s of this.slots.values()) if (s.entry.status === "left") out.push(s);
    return out;
  }

  /**
   * Who this node has seen holding each departed member as left: one bitmap per departed member (in
   * directory order), bit i (of byte i >> 3, i & 7) for the directory's member i; each ceil(count / 8)
   * bytes. A member not yet a round old here (no record) has only this node's bit.
   */
  private seenBitmaps(slots: readonly Slot[]): Uint8Array {
    const width = (slots.length + 7) >> 3;
    const departed = slots.filter((s) => s.entry.status === "left");
    const out = new Uint8Array(width * departed.length);
    departed.forEach((x, k) => {
      for (let i = 0; i < slots.length; i++) {
        const id = slots[i]!.entry.id;
        if (id === this.config.selfId || x.departed?.seenBy.has(id) === true)
          out[k * width + (i >> 3)]! |= 1 << (i & 7);
      }
    });
    return out;
  }

  /** Takes a peer's seen bitmaps (its directory is this node's), and notes that it holds them all. */
  private takeSeen(slots: readonly Slot[], seen: Uint8Array | undefined, from: string): void {
    const width = (slots.length + 7) >> 3;
    let k = 0;
    const count = seen === undefined ? 0 : seen.length / width;
    for (const x of slots) {
      if (x.entry.status !== "left") continue;
      x.departed?.seenBy.add(from);
      if (seen !== undefined && count === this.departedCount && x.departed !== undefined)
        for (let i = 0; i < slots.length; i++)
          if ((seen[k * width + (i >> 3)]! & (1 << (i & 7))) !== 0) x.departed.seenBy.add(slots[i]!.entry.id);
      k++;
    }
  }

  /** Member `by` holds departed member `id` as left (or forgot it). */
  private sawDeparted(id: string, by: string): void {
    this.slots.get(id)?.departed?.seenBy.add(by);
  }

  /**
   * Forgets the departed members that every live member (not left, not down here) has been seen
   * holding as left, once forgetAfterMs passed since this node first held them so. A member seen by
   * this node is seen through its digest (the same directory, or a full digest listing it left or not
   * at all) or its gossip of the `left` entry. Forgotten, a member leaves the view, the digests and the
   * status; its final entry is kept (at most FORGOTTEN_MAX, oldest dropped first) to refuse it and to
   * tell a peer that still holds it otherwise.
   */
  private forgetDeparted(now: number): void {
    const grace = this.config.forgetAfterMs ?? DEPARTED_GRACE_MS;
    for (const s of this.departedSlots()) {
      const d = s.departed;
      if (d === undefined) {
        s.departed = { at: now, seenBy: new Set([this.config.selfId]) };
        continue;
      }
      if (now - d.at < grace) continue;
      let all = true;
      for (const o of this.slots.values())
        if (
          o.entry.status !== "left" &&
          o.entry.id !== this.config.selfId &&
          this.slotLiveness(o, now) !== "down" &&
          !d.seenBy.has(o.entry.id)
        ) {
          all = false;
          break;
        }
      if (!all) continue;
      const id = s.entry.id;
      this.invalidate();
      this.slots.delete(id);
      this.departedCount--;
      this.dirVersion++;
      this.forgotten.set(id, { ...this.fresh(s) });
      if (this.forgotten.size > FORGOTTEN_MAX) this.forgotten.delete(this.forgotten.keys().next().value!);
      this.epoch++;
      this.emit(
        "forgotten",
        id,
        `${id} is forgotten: it left ${Math.round((now - d.at) / 1000)} s ago and every live member holds its departure (its id stays refused)`,
      );
    }
  }

  // ------------------------------------------------------------------ digests (gossip-driver.ts)

  /**
   * This node's digest (transport/messages.ts, GossipDigest): the directory's hash, every heartbeat in
   * id order and the ring's version and hash; `full` also names every member with its incarnation and
   * status.
   */
  digest(full: boolean): GossipDigest {
    const { slots, dir, heartbeats: hbs } = this.directory();
    let heartbeats: Uint8Array;
    if (LITTLE_ENDIAN) heartbeats = new Uint8Array(hbs.slice().buffer);
    else {
      heartbeats = new Uint8Array(4 * hbs.length);
      const view = new DataView(heartbeats.buffer);
      for (let i = 0; i < hbs.length; i++) view.setUint32(4 * i, hbs[i]!, true);
    }
    const d: GossipDigest = {
      dir,
      count: slots.length,
      heartbeats,
      ringVersion: this.ringRefView.version,
      ringHash: this.ringRefView.hash,
      ...(this.departedCount > 0 ? { seen: this.seenBitmaps(slots) } : {}),
    };
    if (!full) return d;
    const o = this.directory();
    o.names ??= {
      ids: slots.map((s) => s.entry.id),
      incarnations: slots.map((s) => s.entry.incarnation),
      statuses: Uint8Array.from(slots, (s) => STATUS_RANK[s.entry.status]),
    };
    return { ...d, ...o.names };
  }

  /**
   * Takes the heartbeats of a peer's digest if its directory is this node's (then they line up with
   * this node's members); returns false, taking nothing, otherwise. A heartbeat newer than this node's
   * own is an entry for it newer than its own: refuted as merge would (mergeSelf).
   */
  takeHeartbeats(d: GossipDigest, now: number, from: string): boolean {
    const o = this.directory();
    const { slots, dir, heartbeats: mine, progress } = o;
    if (d.dir !== dir || d.count !== slots.length) return false;
    // The same directory: the peer holds every departed member as left, as this node does, and tells
    // who else it has seen holding each.
    if (this.departedCount > 0) this.takeSeen(slots, d.seen, from);
    const b = d.heartbeats;
    // Read as u32s where they are aligned, else from a copy (a decoded Buffer may sit at any offset).
    const theirs = !LITTLE_ENDIAN
      ? undefined
      : b.byteOffset % 4 === 0
        ? new Uint32Array(b.buffer, b.byteOffset, slots.length)
        : new Uint32Array(new Uint8Array(b).buffer);
    const me = this.slots.get(this.config.selfId)!.index;
    let self: number | undefined;
    for (let i = 0; i < slots.length; i++) {
      const hb = theirs === undefined ? u32At(b, i) : theirs[i]!;
      if (hb <= mine[i]!) continue;
      if (i === me) self = hb;
      else {
        // advanceHeartbeat, inline: this loop runs over every member for every exchange.
        mine[i] = hb;
        progress[i] = now;
      }
    }
    // A newer heartbeat for this node: refuted (it changes the directory, so only after the loop).
    if (self !== undefined) this.mergeSelf({ ...this.self, heartbeat: self }, now, from);
    return true;
  }

  /**
   * Compares a peer's full digest with this node's view: takes its newer heartbeats of entries equal
   * but for the heartbeat, and returns the entries the peer lacks or holds older (to push) and the ids
   * it holds newer or this node lacks (to ask for). Entries change only through merge, with its rules;
   * this node's own entry is asked for whenever the peer's is newer, so that merge refutes it.
   */
  compareDigest(d: GossipDigest, now: number, from: string): DigestComparison {
    assert(
      d.ids !== undefined && d.incarnations !== undefined && d.statuses !== undefined,
      () => "not a full digest",
    );
    const { ids, incarnations, statuses } = d;
    const { slots } = this.directory();
    const lacks: MemberView[] = [];
    const wants: string[] = [];
    let i = 0;
    let j = 0;
    while (i < d.count || j < slots.length) {
      const theirs = i < d.count ? ids[i]! : undefined;
      const s = j < slots.length ? slots[j]! : undefined;
      if (s === undefined || (theirs !== undefined && theirs < s.entry.id)) {
        const gone = this.forgotten.get(theirs!);
        // A member forgotten here: the peer is told it left if it holds it otherwise; never asked for.
        if (gone === undefined) wants.push(theirs!);
        else if (statuses[i] !== STATUS_RANK.left) lacks.push(gone);
        i++;
        continue;
      }
      const m = this.fresh(s);
      if (theirs === undefined || m.id < theirs) {
        // Not in the peer's directory: a departed member it forgot (it saw it leave) holds nothing back.
        if (m.status === "left") this.sawDeparted(m.id, from);
        lacks.push({ ...m });
        j++;
        continue;
      }
      if (statuses[i] === STATUS_RANK.left && m.status === "left") this.sawDeparted(m.id, from);
      const status = STATUSES[statuses[i]!]!;
      const hb = u32At(d.heartbeats, i);
      const order = entryOrder(status, incarnations[i]!, hb, m);
      const sameButHeartbeat = status === m.status && incarnations[i] === m.incarnation;
      if (order > 0) {
        if (sameButHeartbeat && m.id !== this.config.selfId) this.advanceHeartbeat(s, hb, now);
        else wants.push(m.id);
      } else if (order < 0 && !sameButHeartbeat) lacks.push({ ...m });
      i++;
      j++;
    }
    return { lacks, wants };
  }

  /**
   * The final entries of members forgotten here that `pushed` (entries a peer sent) holds as not left:
   * what tells the peer they left, as it would not ask for them (they are in no digest of this node).
   */
  departuresFor(pushed: readonly MemberView[]): MemberView[] {
    const out: MemberView[] = [];
    if (this.forgotten.size === 0) return out;
    for (const m of pushed) {
      const gone = this.forgotten.get(m.id);
      if (gone !== undefined && m.status !== "left") out.push(gone);
    }
    return out;
  }

  /** Copies of the entries of `ids` this node holds in its view (what a peer asked for). */
  entriesFor(ids: readonly string[]): MemberView[] {
    const out: MemberView[] = [];
    for (const id of ids) {
      const s = this.slots.get(id);
      if (s !== undefined) out.push({ ...this.fresh(s) });
    }
    return out;
  }

  /**
   * What a peer whose ring is `ref` needs to hold this node's: nothing if it holds this one or a newer;
   * the change from its ring if this node held that ring lately and the change is smaller; else the
   * whole ring.
   */
  ringFor(ref: RingRef): { readonly ring: RingView } | { readonly ringDelta: RingDelta } | undefined {
    const mine = this.ringView;
    if (mine === null || ref.version > mine.version) return undefined;
    if (ref.version === mine.version && ref.hash === this.ringRefView.hash) return undefined;
    if (ref.version < mine.version) {
      const base = this.ringHistory.find((h) => h.ref.version === ref.version && h.ref.hash === ref.hash);
      const delta = base === undefined ? undefined : ringDelta(base.ring, base.ref, mine);
      if (delta !== undefined) return { ringDelta: delta };
    }
    return { ring: mine };
  }

  /** Is the peer's ring (`ref`) one to ask it for: newer than this node's, or another of the same version? */
  wantsRing(ref: RingRef): boolean {
    const mine = this.ringRefView;
    if (ref.version === 0) return false;
    return ref.version > mine.version || (ref.version === mine.version && ref.hash !== mine.hash);
  }

  /**
   * Takes a ring sent as the change from this node's; returns false, taking nothing, when this node's
   * ring is not the delta's base any more (a later exchange sends the ring again).
   */
  mergeRingDelta(d: RingDelta, now: number, from: string): boolean {
    const cur = this.ringView;
    const ref = this.ringRefView;
    if (cur === null || ref.version !== d.base.version || ref.hash !== d.base.hash) return false;
    if (d.partitions !== cur.partitions) return false;
    this.merge([], applyRingDelta(cur, d), now, from);
    return true;
  }

  // ------------------------------------------------------------------ ring changes

  /** The members that are up and do not look down from here. */
  upAndAlive(now: number): MemberView[] {
    const out: MemberView[] = [];
    for (const s of this.slots.values())
      if (s.entry.status === "up" && this.slotLiveness(s, now) !== "down") out.push(this.fresh(s));
    return out;
  }

  /** The claimant: the lowest id among up members that look alive from here. */
  claimant(now: number): string | undefined {
    for (const s of this.directory().slots)
      if (s.entry.status === "up" && this.slotLiveness(s, now) !== "down") return s.entry.id;
    return undefined;
  }

  /** The claimant re-claims when the ring's members (or their weights) differ from the current members. */
  private maybeClaim(now: number): void {
    if (this.ringView === null || this.claimant(now) !== this.config.selfId) return;
    assert(
      this.self.status === "up",
      () => `the claimant ${this.config.selfId} is ${this.self.status}, not up`,
    );
    // The ring's members change only with the directory (weights change with the incarnation).
    if (this.claimChecked?.dir === this.dirVersion && this.claimChecked.ring === this.ringView) return;
    this.claimChecked = { dir: this.dirVersion, ring: this.ringView };
    const members = this.ringMembers();
    const keys = ringMemberKeys(members);
    if (keys.length === this.ringView.members.length && keys.every((k, i) => k === this.ringView!.members[i]))
      return;
    const prev: Ring = { partitions: this.ringView.partitions, owners: this.ringView.owners };
    const next = claim(prev, members, this.ringView.partitions, this.config.n);
    this.setRing({
      version: this.ringView.version + 1,
      partitions: next.partitions,
      owners: next.owners,
      members: keys,
    });
    this.epoch++;
  }

  /** A joining member turns itself up once a ring has been claimed with it (even with no partition). */
  private maybeBecomeUp(): void {
    const me = this.self;
    if (me.status === "joining" && this.ringView?.members.some((k) => k.startsWith(`${me.id}:`))) {
      this.setEntry(me.id, { ...me, status: "up", incarnation: me.incarnation + 1 });
      this.epoch++;
      this.emit("up", me.id, `this node is up: ring version ${this.ringView.version} includes it`);
    }
  }
}
