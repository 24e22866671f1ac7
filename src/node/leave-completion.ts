/**
 * How a node finishes leaving the cluster, after its leave was approved (departures.ts) or after it heard
 * that an operator removed it:
 * - a leaving node waits until the ring no longer holds it, then hands off everything it holds
 *   (replication/handoff.ts); a pass that started before a settling time had passed since that ring
 *   arrived is followed by one more, since members may have written to it under the old ring until they
 *   all had the new one. Then it marks itself left, gossips that for a few rounds, and stops (`onLeft`).
 * - a removed node (left without a leave of its own) sends what it holds to the keys' replicas as a
 *   leaving node does (a write only it took would be lost otherwise), for at most REMOVED_HANDOFF_MS (it
 *   may be unable to reach anyone), then stops; unless it was cut off from the cluster for longer than
 *   the tombstone grace period (`cutOffTooLong`): its copies may then be older than tombstones purged
 *   meanwhile, and would bring deleted keys back, so it stops at once.
 * A node that marked itself left after its last pass passes no more: a newer ring would make it send its
 * copies again, after the cluster stopped counting on them (replication/tombstones.ts).
 */
import type { Membership } from "../membership/membership.js";
import type { Handoff } from "../replication/handoff.js";
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";

/** How long a removed node tries to hand off what it holds before it stops anyway. */
export const REMOVED_HANDOFF_MS = 30_000;

/**
 * How long a leaving node waits, after its data is handed off, for the hints it holds to reach the keys'
 * replicas, before it leaves anyway (those left are counted as dropped by delivery's bound on age, and
 * anti-entropy has the rest): a replica that cannot be reached must not hold a leave forever.
 */
export const LEAVE_HINTS_WAIT_MS = 10 * 60_000;
const HINTS_RECHECK_MS = 500;

export interface LeaveCompletionDeps {
  readonly selfId: string;
  readonly membership: Membership;
  readonly handoff: Handoff;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly gossipIntervalMs: number;
  /** This node marked itself left: save the view. */
  readonly saveView: () => void;
  /** Does this node still hold hints (hinted handoff)? A leaving node hands them on before it goes. */
  readonly hintsHeld?: () => boolean;
  /** Sends the hints held on now (to the keys' current replicas, as this node is leaving). */
  readonly deliverHints?: () => void;
  /** Was this node cut off from the cluster for longer than the tombstone grace period? */
  readonly cutOffTooLong?: () => boolean;
  /** This node is out of the cluster: stop it. */
  readonly onLeft: (how: "left" | "removed") => void;
}

export class LeaveCompletion {
  /** When this (leaving) node first saw a ring without itself. */
  private outOfRingSince: number | undefined;
  private leftTimer: TimerHandle | undefined;
  private settleTimer: TimerHandle | undefined;
  /** This node heard it was removed: it stops once its handoff pass is done (or REMOVED_HANDOFF_MS). */
  private removedStop = false;
  /** When this leaving node first waited for its hints to be handed on. */
  private hintsSince: number | undefined;

  constructor(private readonly d: LeaveCompletionDeps) {}

  /** How long a leaving node waits, after the ring without it arrived, before its final pass. */
  private get settleMs(): number {
    return Math.max(this.d.gossipIntervalMs * 6, 1000);
  }

  /** Is this node out of the current ring (no partition, not among the members it was claimed for)? */
  outOfRing(): boolean {
    const ring = this.d.membership.ring;
    if (ring === null) return false;
    const me = `${this.d.selfId}:`;
    return !ring.owners.includes(this.d.selfId) && !ring.members.some((k) => k.startsWith(me));
  }

  /** The view changed (gossip, or a change made here). */
  viewChanged(): void {
    const status = this.d.membership.self.status;
    // Left without finishing a leave of its own: an operator removed it while it was away (or cut off).
    if (status === "left" && this.leftTimer === undefined) {
      if (this.d.cutOffTooLong?.() === true) {
        void this.d.handoff.stop();
        this.leftTimer = this.d.timers.after(0, () => this.d.onLeft("removed"));
        return;
      }
      this.removedStop = true;
      this.leftTimer = this.d.timers.after(REMOVED_HANDOFF_MS, () => this.d.onLeft("removed"));
      this.d.handoff.rescan();
      return;
    }
    if (status === "leaving") {
      if (!this.outOfRing()) this.outOfRingSince = undefined;
      else this.outOfRingSince ??= this.d.clock.now();
    }
    this.d.handoff.kick();
  }

  /** A handoff pass that started at `startedAt` delivered everything. */
  passComplete(startedAt: number): void {
    if (this.removedStop) {
      this.leftTimer?.cancel();
      this.leftTimer = this.d.timers.after(0, () => this.d.onLeft("removed"));
      this.removedStop = false;
      return;
    }
    if (this.d.membership.self.status !== "leaving") return;
    // A ring that holds us again (a stale claimant) makes us a replica again: wait for the next one.
    if (!this.outOfRing()) this.outOfRingSince = undefined;
    if (this.outOfRingSince === undefined) return;
    const settledAt = this.outOfRingSince + this.settleMs;
    if (startedAt < settledAt) {
      this.settleTimer?.cancel();
      this.settleTimer = this.d.timers.after(Math.max(0, settledAt - this.d.clock.now()), () => {
        this.settleTimer = undefined;
        this.d.handoff.rescan();
      });
      return;
    }
    if (this.d.hintsHeld?.() === true && this.waitForHints()) return;
    this.d.membership.markLeft();
    void this.d.handoff.stop();
    this.d.saveView();
    // Gossip the news for a few rounds before stopping, so that every member hears it from us.
    this.leftTimer = this.d.timers.after(this.d.gossipIntervalMs * 4, () => this.d.onLeft("left"));
  }

  /**
   * The hints this leaving node holds go to the keys' replicas first: delivery is kicked, and the leave
   * completes once none is held (checked every HINTS_RECHECK_MS), or after LEAVE_HINTS_WAIT_MS. Returns
   * whether the leave waits.
   */
  private waitForHints(): boolean {
    const now = this.d.clock.now();
    this.hintsSince ??= now;
    if (now - this.hintsSince >= LEAVE_HINTS_WAIT_MS) return false;
    this.d.deliverHints?.();
    this.settleTimer?.cancel();
    this.settleTimer = this.d.timers.after(HINTS_RECHECK_MS, () => {
      this.settleTimer = undefined;
      this.passComplete(Number.POSITIVE_INFINITY);
    });
    return true;
  }

  stop(): void {
    this.leftTimer?.cancel();
    this.settleTimer?.cancel();
  }
}
