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
 *   holds a relayed `left` and asks that claimant in its next round); the claimant, as
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
import type { MemberView, RingView } from "../transport/messages.js";

export type Liveness = "up" | "suspect" | "down";

/**
 * A change of the view, once, with its cause (node.ts logs each as one line): a member joins, is up, is
 * leaving, left, was removed, moved (new addresses), is suspect, looks down, is up again; a claim that
 * was ignored, or an entry for this node that was refuted.
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
    | "refuted";
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
}

interface Local {
  /** Local time when the member's heartbeat last increased (or when first heard of). */
  lastProgressAt: number;
  suspectUntil: number;
}

const STATUS_RANK: Record<MemberView["status"], number> = { joining: 0, up: 1, leaving: 2, left: 3 };

/**
 * Does `a` supersede `b` (both entries of the same member)? `left` is final: it supersedes every entry
 * that is not `left`, and none supersedes it, so a departed id never comes back (a node that left or was
 * removed stops when it hears it, and its id cannot join again).
 */
export function newerEntry(a: MemberView, b: MemberView): boolean {
  if ((a.status === "left") !== (b.status === "left")) return a.status === "left";
  if (a.incarnation !== b.incarnation) return a.incarnation > b.incarnation;
  if (a.status !== b.status) return STATUS_RANK[a.status] > STATUS_RANK[b.status];
  return a.heartbeat > b.heartbeat;
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
  private readonly members = new Map<string, MemberView>();
  private readonly local = new Map<string, Local>();
  private ringView: RingView | null = null;
  /** Liveness last reported per member (only changes are reported). */
  private readonly reported = new Map<string, Liveness>();
  /** Members to gossip with in the next round: they approved a removal this node heard of second-hand. */
  private readonly verify = new Set<string>();
  /** Receives every change (undefined: nobody listens, e.g. while the saved view is loaded at start). */
  onEvent: ((e: MembershipEvent) => void) | undefined;
  /**
   * Did this node, as the claimant, approve the departure of `id` lately (node/departures.ts)? Lets it take
   * a removal that names it as the approver from the member that performed it.
   */
  approvedDeparture: (id: string) => boolean = () => false;
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
    this.members.set(self.id, self);
    this.local.set(self.id, { lastProgressAt: now, suspectUntil: 0 });
  }

  get self(): MemberView {
    return this.members.get(this.config.selfId)!;
  }

  get ring(): RingView | null {
    return this.ringView;
  }

  view(): MemberView[] {
    return [...this.members.values()];
  }

  member(id: string): MemberView | undefined {
    return this.members.get(id);
  }

  liveness(id: string, now: number): Liveness {
    if (id === this.config.selfId) return "up";
    const l = this.local.get(id);
    if (l === undefined) return "down";
    if (now - l.lastProgressAt > this.config.downAfterMs) return "down";
    if (now < l.suspectUntil) return "suspect";
    return "up";
  }

  /**
   * Members the ring is claimed for: joining or up. A leaving member is claimed out at once, so that its
   * partitions go to the nodes that will keep them while it hands its data off (replication/handoff.ts).
   */
  ringMembers(): RingMember[] {
    return this.view()
      .filter((m) => m.status === "joining" || m.status === "up")
      .map((m) => ({ id: m.id, weight: m.weight, zone: m.zone }));
  }

  /** Every member not gone (left), with its zone: what preference lists need to know of placement. */
  placementMembers(): RingMember[] {
    return this.view()
      .filter((m) => m.status !== "left")
      .map((m) => ({ id: m.id, weight: m.weight, zone: m.zone }));
  }

  /** Every change of a member's entry: `left` is final. */
  private setEntry(id: string, next: MemberView): void {
    assert(next.id === id, () => `the entry of ${next.id} stored as ${id}'s`);
    const cur = this.members.get(id);
    assert(
      cur === undefined || cur.status !== "left" || next.status === "left",
      () => `member ${next.id} would go from left back to ${next.status}`,
    );
    this.members.set(id, next);
  }

  /** Every change of the ring: its version never goes back. */
  private setRing(next: RingView): void {
    const cur = this.ringView;
    assert(
      cur === null || next.version >= cur.version,
      () => `the ring would go from version ${cur?.version} back to ${next.version}`,
    );
    this.ringView = next;
  }

  private emit(change: MembershipEvent["change"], member: string, text: string, sender?: string): void {
    this.onEvent?.({ change, member, text, ...(sender === undefined ? {} : { sender }) });
  }

  /** Reports each member's liveness when it changed since last reported. */
  private reportLiveness(now: number): void {
    for (const m of this.members.values()) {
      if (m.id === this.config.selfId || m.status === "left") {
        this.reported.delete(m.id);
        continue;
      }
      const live = this.liveness(m.id, now);
      const was = this.reported.get(m.id) ?? "up";
      if (live === was) continue;
      this.reported.set(m.id, live);
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
    const me = this.self;
    this.setEntry(me.id, { ...me, heartbeat: me.heartbeat + 1 });
    this.local.get(me.id)!.lastProgressAt = now;
    this.maybeClaim(now);
    this.maybeBecomeUp();
    this.reportLiveness(now);
    const candidates = this.view().filter((m) => m.id !== me.id && m.status !== "left");
    // Prefer members that look alive, but keep probing the others now and then so they can come back.
    const alive = candidates.filter((m) => this.liveness(m.id, now) !== "down");
    const dead = candidates.filter((m) => this.liveness(m.id, now) === "down");
    const out: string[] = [];
    const pick = (pool: MemberView[], k: number) => {
      const p = [...pool];
      for (let i = 0; i < k && p.length > 0; i++) {
        const j = Math.floor(random.next() * p.length);
        out.push(p[j]!.id);
        p.splice(j, 1);
      }
    };
    pick(alive, this.config.fanout);
    if (dead.length > 0 && random.next() < 0.25) pick(dead, 1);
    // Ask the approvers of removals heard second-hand (merge): they confirm them, or nothing comes of it.
    for (const id of this.verify)
      if (!out.includes(id) && this.members.get(id)?.status !== "left" && id !== me.id) out.push(id);
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
      const cur = this.members.get(m.id);
      if (cur !== undefined && !newerEntry(m, cur)) continue;
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
      this.setEntry(m.id, m);
      const l = this.local.get(m.id);
      if (l === undefined) this.local.set(m.id, { lastProgressAt: now, suspectUntil: 0 });
      else if (cur === undefined || m.heartbeat > cur.heartbeat || m.incarnation > cur.incarnation)
        l.lastProgressAt = now;
      this.reportEntry(cur, m, from);
    }
    if (ring !== null && ring.partitions !== this.config.partitions)
      // Not this cluster's ring (Q is fixed at its creation): claiming over it would fail.
      this.emit(
        "ignored",
        this.config.selfId,
        `ignored ${from ?? "?"}'s ring (version ${ring.version}): it has ${ring.partitions} partitions, this cluster ${this.config.partitions}`,
        from,
      );
    else if (ring !== null && (this.ringView === null || compareRings(ring, this.ringView) > 0)) {
      changed = true;
      this.setRing(ring);
    }
    if (changed) this.epoch++;
    this.maybeBecomeUp();
  }

  /** Merges an entry for this node; returns whether the view changed. */
  private mergeSelf(m: MemberView, now: number, from: string | undefined): boolean {
    const me = this.self;
    if (!newerEntry(m, me)) return false;
    if (m.status === "left") {
      const why = this.leftRefused(m, me, now, from);
      if (why !== undefined) {
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
    this.setEntry(me.id, { ...me, incarnation, heartbeat: Math.max(me.heartbeat, m.heartbeat) + 1 });
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
        if (approver !== self && this.members.get(approver)?.status === "up") {
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
      const approver = this.members.get(m.removedBy);
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
    const l = this.local.get(id);
    if (l !== undefined) l.suspectUntil = now + this.config.suspectForMs;
  }

  /** A direct contact with `id` succeeded: lift our suspicion. */
  contactSucceeded(id: string): void {
    const l = this.local.get(id);
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
    const m = this.members.get(id);
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

  // ------------------------------------------------------------------ ring changes

  /** The members that are up and do not look down from here. */
  upAndAlive(now: number): MemberView[] {
    return this.view().filter((m) => m.status === "up" && this.liveness(m.id, now) !== "down");
  }

  /** The claimant: the lowest id among up members that look alive from here. */
  claimant(now: number): string | undefined {
    return this.upAndAlive(now)
      .map((m) => m.id)
      .sort()[0];
  }

  /** The claimant re-claims when the ring's members (or their weights) differ from the current members. */
  private maybeClaim(now: number): void {
    if (this.ringView === null || this.claimant(now) !== this.config.selfId) return;
    assert(
      this.self.status === "up",
      () => `the claimant ${this.config.selfId} is ${this.self.status}, not up`,
    );
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
