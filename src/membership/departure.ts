/**
 * The rules for a member's departure (a leave, or a removal on its behalf), as pure functions of a view,
 * the approvals the claimant holds, and the time. The workflow that asks the claimant and applies a
 * verdict lives in src/node/departures.ts; this file only decides.
 *
 * Why a claimant approves every departure: two departures started at once on different nodes could each
 * pass the check "at least N members remain" on its own view and together leave fewer. The claimant (the
 * lowest id among members up and alive, membership.ts) is one node, so it sees both: a departure it
 * approved counts as done until the member's own status shows it (leaving, left) or the approval lapses.
 * That holds while the members agree on who the claimant is; views that disagree for longer (a
 * partition) can still approve one each.
 */
import type { MemberView } from "../transport/messages.js";

export type DepartureKind = "leave" | "remove";

/** The claimant's verdict on a departure (the `departure` answer of the peer protocol carries it). */
export interface DepartureVerdict {
  /** Why it is refused, or null when approved. */
  readonly refused: string | null;
  /** Refused for now: asking again in a moment may succeed (the API answers 503, not 409). */
  readonly retry: boolean;
  /** Refused only because fewer than N members would remain: forcing gets past it. */
  readonly forceable: boolean;
  /** The members that would remain up after it (0 when refused early). */
  readonly remaining: number;
}

/** Departures approved by the claimant: member id -> until when (clock ms) the approval counts. */
export type Approvals = ReadonlyMap<string, number>;

/** What the claimant's rules read of its view. */
export interface ClaimantView {
  readonly selfId: string;
  /** The claimant as this node sees the cluster (undefined: no member is up and alive). */
  readonly claimant: string | undefined;
  readonly member: (id: string) => MemberView | undefined;
  /** Ids of the members that are up and do not look down from here. */
  readonly upAndAlive: readonly string[];
  /** Replicas per key. */
  readonly n: number;
}

/** How long an approval counts before the member's own status (leaving, left) reaches the claimant. */
export const DEPARTURE_APPROVAL_MS = 30_000;

/** At most this many departing ids are named in a refusal (the answer's text is bounded). */
const MAX_NAMED_DEPARTURES = 3;

const verdict = (
  refused: string | null,
  retry = false,
  forceable = false,
  remaining = 0,
): DepartureVerdict => ({ refused, retry, forceable, remaining });

/** The approvals still counting: not lapsed, and for members whose own status has not moved on from up. */
export function liveApprovals(view: ClaimantView, approvals: Approvals, now: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const [id, until] of approvals)
    if (until > now && view.member(id)?.status === "up") out.set(id, until);
  return out;
}

function named(ids: readonly string[]): string {
  return ids.length <= MAX_NAMED_DEPARTURES
    ? ids.join(", ")
    : `${ids.slice(0, MAX_NAMED_DEPARTURES).join(", ")} and ${ids.length - MAX_NAMED_DEPARTURES} more`;
}

/**
 * The claimant's decision on member `id` departing, and the approvals afterwards (the live ones, plus
 * this one if approved). Refused for now when this node is not the claimant as it sees the cluster (the
 * asker's view is older or newer: asking again once gossip settled reaches the right one), and for the
 * claimant's own leave while departures it approved have not shown in its view yet (its successor as
 * claimant would not know of them). Refused for good for an unknown or departed member, when no other
 * member would be up to take the data, and, unless forced, when fewer than N members would remain.
 */
export function decideDeparture(
  view: ClaimantView,
  approvals: Approvals,
  request: { readonly id: string; readonly how: DepartureKind; readonly force: boolean },
  now: number,
): { verdict: DepartureVerdict; approvals: Map<string, number> } {
  const live = liveApprovals(view, approvals, now);
  const { id, how, force } = request;
  const self = view.selfId;
  const refuse = (v: DepartureVerdict) => ({ verdict: v, approvals: live });
  if (view.claimant !== self)
    return refuse(
      verdict(
        `${self} is not the claimant (${view.claimant ?? "no member"} is, as ${self} sees the cluster): try again in a moment`,
        true,
      ),
    );
  const pending = [...live.keys()].filter((x) => x !== id);
  if (id === self && pending.length > 0)
    return refuse(
      verdict(
        `the claimant ${id} approved the departure of ${named(pending)}, which has not started yet: try again in a moment`,
        true,
      ),
    );
  const target = view.member(id);
  if (target === undefined) return refuse(verdict(`no member ${id} in the claimant's view`));
  if (target.status === "left") return refuse(verdict(`member ${id} has already left`));
  const remaining = view.upAndAlive.filter((x) => x !== id && !pending.includes(x)).length;
  const also =
    pending.length === 0
      ? ""
      : ` (counting the departure of ${named(pending)}, approved by the claimant ${self})`;
  if (remaining === 0)
    return refuse(verdict(`no other member would remain up${also}: nobody would take the data`));
  if (remaining < view.n && !force)
    return refuse(
      verdict(
        `after this ${how === "leave" ? "leave" : "removal"} the cluster would have ${remaining} member(s), fewer than N=${view.n}${also}: every key would keep only ${remaining} copies`,
        false,
        true,
        remaining,
      ),
    );
  live.set(id, now + DEPARTURE_APPROVAL_MS);
  return { verdict: verdict(null, false, false, remaining), approvals: live };
}

/** Why a departure is refused by the node asked, before it asks the claimant. */
export interface LocalRefusal {
  /** `refused`: for good (409); `unavailable`: for now (503). */
  readonly code: "leave_refused" | "remove_refused" | "unavailable";
  readonly message: string;
}

/** The hint a refusal that forcing would pass carries. */
export const LEAVE_FORCE_HINT = '"cluster leave --force", or force=true, leaves anyway';
export const REMOVE_FORCE_HINT = "force it to remove anyway";

/**
 * The asked node's own checks of its leave, before the claimant is asked. `othersUp`: the other members
 * up and alive as it sees them. Returns a refusal, "already" (it is leaving: nothing to do), or undefined
 * (go on and ask the claimant).
 */
export function checkLeave(
  self: MemberView,
  othersUp: number,
  n: number,
  force: boolean,
): LocalRefusal | "already" | undefined {
  if (self.status === "left")
    return { code: "leave_refused", message: "this node has already left the cluster" };
  if (self.status === "leaving") return "already";
  if (othersUp === 0)
    return {
      code: "leave_refused",
      message: "no other member is up: there is nobody to claim this node's partitions and take its data",
    };
  if (self.status === "joining")
    return { code: "leave_refused", message: "this node is still joining; leave once it is up" };
  if (othersUp < n && !force)
    return {
      code: "leave_refused",
      message: `after this leave the cluster would have ${othersUp} member(s), fewer than N=${n}: every key would keep only ${othersUp} copies (${LEAVE_FORCE_HINT})`,
    };
  return undefined;
}

/**
 * The asked node's own checks of a removal of `id`, before the claimant is asked (and again after it
 * answered, `after`: the view may have moved meanwhile). `liveness`: how `id` looks from here;
 * `othersUp`: the members up and alive other than `id`.
 */
export function checkRemove(
  selfId: string,
  target: MemberView | undefined,
  id: string,
  liveness: "up" | "suspect" | "down",
  othersUp: number,
  n: number,
  force: boolean,
  after = false,
): LocalRefusal | undefined {
  const refused = (message: string): LocalRefusal => ({ code: "remove_refused", message });
  if (id === selfId)
    return refused("a node does not remove itself: make it leave (cluster leave), with its data");
  if (target === undefined) return refused(`no member ${id} in this node's view`);
  if (target.status === "left") return refused(`member ${id} has already left`);
  if (liveness !== "down" && !force)
    return refused(
      after
        ? `member ${id} is ${liveness} again, not down, as this node sees it: make it leave with its data, or remove it anyway with force`
        : `member ${id} is ${liveness}, not down, as this node sees it: make it leave with its data (cluster leave --node its API), or remove it anyway with force`,
    );
  if (!after && othersUp < n && !force)
    return refused(
      `after removing ${id} the cluster would have ${othersUp} member(s), fewer than N=${n}: every key would keep only ${othersUp} copies (${REMOVE_FORCE_HINT})`,
    );
  return undefined;
}
