/**
 * Leaves and removals as a node runs them: its own checks, the claimant's approval (asked over the
 * network, or given here when this node is the claimant), then the change of the membership state.
 * The rules themselves are pure (membership/departure.ts); this file asks and applies.
 */
import {
  type Approvals,
  type ClaimantView,
  checkLeave,
  checkRemove,
  type DepartureKind,
  type DepartureVerdict,
  decideDeparture,
  LEAVE_FORCE_HINT,
  type LocalRefusal,
  liveApprovals,
  REMOVE_FORCE_HINT,
} from "../membership/departure.js";
import type { Membership } from "../membership/membership.js";
import type { Clock } from "../runtime/runtime.js";
import type { Transport } from "../transport/transport.js";

/**
 * Why a leave or a removal is refused: `leave_refused` and `remove_refused` for good (the API answers
 * 409), `unavailable` for now (the claimant could not decide it: the API answers 503; asking again a
 * moment later may succeed).
 */
export class MembershipRefusedError extends Error {
  constructor(
    readonly code: LocalRefusal["code"],
    message: string,
  ) {
    super(message);
  }
}

export interface DeparturesDeps {
  readonly selfId: string;
  readonly n: number;
  readonly membership: Membership;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly requestTimeoutMs: number;
  /** The membership state changed here (a leave started, a member removed): hand off; resolves once the view is durable. */
  readonly changed: () => Promise<void>;
  /** Gossips with member `id` now (the claimant that approved a removal made here hears it at once). */
  readonly tell?: (id: string) => void;
}

function refusal(r: LocalRefusal): MembershipRefusedError {
  return new MembershipRefusedError(r.code, r.message);
}

export class Departures {
  /** Departures this node approved as the claimant (membership/departure.ts). */
  private approvals: Approvals = new Map();

  constructor(private readonly d: DeparturesDeps) {}

  private claimantView(now: number): ClaimantView {
    const m = this.d.membership;
    return {
      selfId: this.d.selfId,
      claimant: m.claimant(now),
      member: (id) => m.member(id),
      upAndAlive: m.upAndAlive(now).map((x) => x.id),
      n: this.d.n,
    };
  }

  /** The members other than `id` that are up and look alive from here: those that would remain. */
  private othersUp(id: string): number {
    return this.d.membership.upAndAlive(this.d.clock.now()).filter((x) => x.id !== id).length;
  }

  /** The claimant's check of a departure (a peer's `depart`, or this node's own as the claimant). */
  approve(id: string, how: DepartureKind, force: boolean): DepartureVerdict {
    const now = this.d.clock.now();
    const out = decideDeparture(this.claimantView(now), this.approvals, { id, how, force }, now);
    this.approvals = out.approvals;
    return out.verdict;
  }

  /** Did this node, as the claimant, approve the departure of `id` lately (and it has not shown yet)? */
  approvedDeparture(id: string): boolean {
    const now = this.d.clock.now();
    return liveApprovals(this.claimantView(now), this.approvals, now).has(id);
  }

  /**
   * Has the claimant (this node, or the member it sees as the claimant) approve a departure; returns the
   * members that would remain, and the claimant that approved it.
   */
  private async approvedByClaimant(
    id: string,
    how: DepartureKind,
    force: boolean,
  ): Promise<{ remaining: number; by: string }> {
    const code = how === "leave" ? "leave_refused" : "remove_refused";
    const claimant = this.d.membership.claimant(this.d.clock.now());
    let verdict: DepartureVerdict;
    if (claimant === undefined || claimant === this.d.selfId) verdict = this.approve(id, how, force);
    else {
      const addr = this.d.membership.member(claimant)?.peer;
      try {
        if (addr === undefined) throw new Error("no address known");
        const res = await this.d.transport.request(
          addr,
          { kind: "depart", id, how, force },
          this.d.requestTimeoutMs,
        );
        verdict = res;
      } catch (err) {
        throw new MembershipRefusedError(
          "unavailable",
          `the claimant ${claimant}, which approves every leave and removal, did not answer (${(err as Error).message}): try again`,
        );
      }
    }
    if (verdict.refused !== null) {
      const hint = how === "leave" ? LEAVE_FORCE_HINT : REMOVE_FORCE_HINT;
      throw new MembershipRefusedError(
        verdict.retry ? "unavailable" : code,
        verdict.forceable ? `${verdict.refused} (${hint})` : verdict.refused,
      );
    }
    return { remaining: verdict.remaining, by: claimant ?? this.d.selfId };
  }

  /**
   * Removes member `id` on its behalf (`cluster remove`): for a node that is gone for good and cannot
   * leave by itself. Its partitions go to the others, and the keepers of its keys send them to their new
   * replicas. Refused for this node itself (it leaves), for an unknown or departed id, for a member this
   * node does not see down (unless `force`: a live node would go on serving from a view that has no place
   * for it), and, unless `force`, when fewer than N members would remain, as this node and the claimant
   * see it.
   */
  async remove(id: string, force: boolean): Promise<{ removed: string; remaining: number }> {
    const m = this.d.membership;
    const check = (after: boolean) =>
      checkRemove(
        this.d.selfId,
        m.member(id),
        id,
        m.liveness(id, this.d.clock.now()),
        this.othersUp(id),
        this.d.n,
        force,
        after,
      );
    const before = check(false);
    if (before !== undefined) throw refusal(before);
    const { remaining, by } = await this.approvedByClaimant(id, "remove", force);
    // The view may have moved while the claimant was asked.
    const after = check(true);
    if (after !== undefined) throw refusal(after);
    // The removal names its approver: the other members take it from that claimant (membership.ts),
    // which takes it from here at once.
    m.remove(id, by);
    this.d.tell?.(by);
    await this.d.changed();
    return { removed: id, remaining };
  }

  /**
   * Starts this node's leave: it is claimed out of the ring, hands every key it holds to the key's new
   * replicas, then marks itself left and stops (leave-completion.ts). Refused when no member would be
   * left to take the data, and, unless `force`, when fewer than N members would remain, as this node and
   * the claimant see it.
   */
  async leave(force: boolean): Promise<{ status: "leaving"; remaining: number }> {
    const m = this.d.membership;
    // Only members that are up and look alive count: one of them must claim us out (the claimant), and
    // they are the ones that will hold the data.
    const others = this.othersUp(this.d.selfId);
    const local = checkLeave(m.self, others, this.d.n, force);
    if (local === "already") return { status: "leaving", remaining: others };
    if (local !== undefined) throw refusal(local);
    const { remaining, by } = await this.approvedByClaimant(this.d.selfId, "leave", force);
    // The view may have moved while the claimant was asked.
    if (m.self.status === "left")
      throw new MembershipRefusedError("leave_refused", "this node has already left the cluster");
    if (m.self.status === "leaving") return { status: "leaving", remaining };
    m.startLeaving(by);
    await this.d.changed();
    return { status: "leaving", remaining };
  }
}
