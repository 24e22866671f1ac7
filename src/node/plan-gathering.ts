/**
 * `cluster plan` as a node answers it: the counts of keys and bytes per partition from every member that
 * would hold data (this node's own from its store, the others' by `count_partitions`, all at once), then
 * the pure plan (ring/plan.ts). A member that is down or does not answer is left out, and the plan names
 * it. Changes nothing.
 */
import type { Membership } from "../membership/membership.js";
import { type PartitionCounts, type Plan, PlanError, planChange, type RingChange } from "../ring/plan.js";
import type { Clock } from "../runtime/runtime.js";
import type { Transport } from "../transport/transport.js";
import { countsFromWire } from "./key-listing.js";

/** How long a member may take to count its store for a plan (a paced scan of every set it holds). */
const PLAN_COUNT_TIMEOUT_MS = 60_000;

export interface PlanGatheringDeps {
  readonly selfId: string;
  readonly n: number;
  readonly membership: Membership;
  readonly transport: Transport;
  readonly clock: Clock;
  /** This node's own counts (node/key-listing.ts). */
  readonly ownCounts: () => Promise<PartitionCounts>;
  /** The handoff's throttle now, for the plan's time estimate. */
  readonly bytesPerSecond: () => number;
}

/** What `change` would move; a PlanError if it does not apply or the node has no ring yet. */
export async function gatherPlan(d: PlanGatheringDeps, change: RingChange): Promise<Plan> {
  const m = d.membership;
  const ring = m.ring;
  if (ring === null) throw new PlanError("this node has no ring yet");
  const placement = m.placementMembers();
  const counts = new Map<string, PartitionCounts>();
  const t = d.clock.now();
  await Promise.all(
    placement.map(async ({ id }) => {
      try {
        if (id === d.selfId) counts.set(id, await d.ownCounts());
        else {
          const addr = m.member(id)?.peer;
          if (addr === undefined || m.liveness(id, t) === "down") return;
          const a = await d.transport.request(
            addr,
            { kind: "count_partitions", partitions: ring.partitions },
            PLAN_COUNT_TIMEOUT_MS,
          );
          counts.set(id, countsFromWire(a));
        }
      } catch {
        // Left out: the plan names the members whose counts are missing.
      }
    }),
  );
  return planChange({
    ring,
    ringVersion: ring.version,
    n: d.n,
    ringMembers: m.ringMembers(),
    placementMembers: placement,
    change,
    counts,
    bytesPerSecond: d.bytesPerSecond(),
  });
}
