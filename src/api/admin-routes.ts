/**
 * The operational routes: `GET /health`, `/status`, `/ring` and `/metrics`, and the membership
 * operations `POST /cluster/leave` and `POST /cluster/remove?id=ID` (the CLI's `cluster leave` and
 * `cluster remove`), `GET /cluster/plan` (what a change would move; `cluster plan`) and
 * `POST /cluster/weight` (this node's weight; `cluster weight`), `POST /cluster/handoff` (this node's
 * handoff throttle; `cluster handoff-rate`), and `POST /storage/compact` (a full compaction of this node's
 * storage engine; `storage compact`).
 */
import type { Plan, RingChange } from "../ring/plan.js";
import type { ManualCompactionProgress } from "../storage/engine.js";
import type { Call } from "./http-server.js";
import type { NodeMetrics } from "./metrics.js";
import { parseForce } from "./params.js";
import type { LeaveAnswer, RemoveAnswer, RingDocument, StatusDocument } from "./views.js";

/**
 * What a membership operation came to. A refusal is an expected outcome, not an error: `refused` for
 * good (the API answers 409 `leave_refused` or `remove_refused`: the operation is not allowed now, as
 * the cluster stands), `unavailable` for now (503: the claimant, which approves every departure, could
 * not decide it; asking again a moment later may succeed).
 */
export type MembershipOutcome<A> =
  | { readonly kind: "accepted"; readonly answer: A }
  | { readonly kind: "refused"; readonly reason: string }
  | { readonly kind: "unavailable"; readonly reason: string };

/** What the operational routes need. */
export interface AdminRouteDeps {
  readonly metrics: NodeMetrics;
  readonly status: () => Promise<StatusDocument>;
  /** The ring as clients need it for routing: partitions, owners, and each member's API address. */
  readonly ring: () => RingDocument;
  /** Starts this node's leave (`POST /cluster/leave`); absent: this node cannot leave (404). */
  readonly leave?: (force: boolean) => Promise<MembershipOutcome<LeaveAnswer>>;
  /** Removes another member on its behalf (`POST /cluster/remove?id=ID`); absent: 404. */
  readonly remove?: (id: string, force: boolean) => Promise<MembershipOutcome<RemoveAnswer>>;
  /**
   * Pauses or resumes this node's anti-entropy exchanges (`POST /cluster/anti-entropy?paused=BOOL`);
   * absent: anti-entropy is off on this node (409).
   */
  readonly antiEntropy?: (paused: boolean) => { readonly node: string; readonly paused: boolean };
  /** What a change of the ring would move (`GET /cluster/plan`); refused: why it does not apply. */
  readonly plan?: (change: RingChange) => Promise<{ readonly refused: string } | Plan>;
  /**
   * Sets this node's weight (`POST /cluster/weight?weight=W`, optionally `&id=` this node's id):
   * refused with why (another member's id: its address, to send it there).
   */
  /** Sets this node's handoff throttle, bytes per second (`POST /cluster/handoff?bytesPerSecond=N`). */
  readonly setHandoffRate?: (bytesPerSecond: number) => {
    readonly node: string;
    readonly bytesPerSecond: number;
    readonly was: number;
  };
  /**
   * Starts a full compaction of this node's store (`POST /storage/compact`): whether it started (false:
   * one runs already, and that one's progress). Absent: 404.
   */
  readonly compactStorage?: () => {
    readonly started: boolean;
    readonly progress: ManualCompactionProgress;
  };
  readonly setWeight?: (
    id: string | undefined,
    weight: number,
  ) => Promise<
    { readonly refused: string } | { readonly node: string; readonly weight: number; readonly was: number }
  >;
}

/** The handoff throttle's bounds (`POST /cluster/handoff?bytesPerSecond=N`): 1 KiB/s to 1 TiB/s. */
export const HANDOFF_RATE_MIN = 1024;
export const HANDOFF_RATE_MAX = 2 ** 40;

/** Largest weight a member may have (as `--weight`). */
export const MAX_WEIGHT = 1000;

function weightOf(v: string | string[] | undefined): number | undefined {
  if (typeof v !== "string" || !/^[0-9]{1,4}$/.test(v)) return undefined;
  const w = Number(v);
  return w >= 1 && w <= MAX_WEIGHT ? w : undefined;
}

/** The change a plan request names, or a message saying what is wrong with it. */
function changeOf(q: Record<string, string | string[] | undefined>): RingChange | string {
  const id = q.id;
  if (typeof id !== "string" || id === "") return "id (the member the change is about) is required, once";
  const weight = q.weight === undefined ? undefined : weightOf(q.weight);
  if (q.weight !== undefined && weight === undefined)
    return `weight must be an integer 1..${MAX_WEIGHT}, once`;
  switch (q.change) {
    case "join":
      return {
        kind: "join",
        id,
        weight: weight ?? 1,
        ...(typeof q.zone === "string" && q.zone !== "" ? { zone: q.zone } : {}),
      };
    case "leave":
    case "remove":
      return { kind: q.change, id };
    case "weight":
      if (weight === undefined) return "weight is required for change=weight";
      return { kind: "weight", id, weight };
    default:
      return "change must be one of join, leave, remove, weight";
  }
}

/** A route of an exact path. */
export interface Route {
  /** GET routes answer HEAD as well. */
  readonly method: "GET" | "POST";
  readonly run: (c: Call) => Promise<void> | void;
}

/** Answers a membership operation's outcome: 202 with its answer, else 409 `refusedCode` or 503. */
async function membershipOp<A>(
  c: Call,
  refusedCode: "leave_refused" | "remove_refused",
  run: () => Promise<MembershipOutcome<A>>,
): Promise<void> {
  const out = await run();
  switch (out.kind) {
    case "accepted":
      return c.json(202, out.answer);
    case "refused":
      return c.error(409, refusedCode, out.reason);
    case "unavailable":
      return c.error(503, "unavailable", out.reason);
  }
}

/** The operational routes, by path. */
export function adminRoutes(deps: AdminRouteDeps): ReadonlyMap<string, Route> {
  const m = deps.metrics;
  return new Map<string, Route>([
    ["/health", { method: "GET", run: (c) => c.json(200, { status: "ok" }) }],
    ["/status", { method: "GET", run: async (c) => c.json(200, await deps.status()) }],
    ["/ring", { method: "GET", run: (c) => c.json(200, deps.ring()) }],
    [
      "/metrics",
      {
        method: "GET",
        run: async (c) => c.respond(200, { "content-type": m.contentType }, await m.render()),
      },
    ],
    [
      "/cluster/leave",
      {
        method: "POST",
        run: (c) => {
          const leave = deps.leave;
          if (leave === undefined) return c.error(404, "not_found", "this node cannot leave a cluster");
          const force = parseForce(c.query());
          return membershipOp(c, "leave_refused", () => leave(force));
        },
      },
    ],
    [
      "/cluster/remove",
      {
        method: "POST",
        run: (c) => {
          const remove = deps.remove;
          if (remove === undefined) return c.error(404, "not_found", "this node cannot remove members");
          const q = c.query();
          const force = parseForce(q);
          if (typeof q.id !== "string" || q.id === "")
            return c.error(400, "bad_parameter", "id (the member to remove) is required, once");
          const id = q.id;
          return membershipOp(c, "remove_refused", () => remove(id, force));
        },
      },
    ],
    [
      "/cluster/plan",
      {
        method: "GET",
        run: async (c) => {
          const plan = deps.plan;
          if (plan === undefined) return c.error(404, "not_found", "this node makes no plans");
          const change = changeOf(c.query());
          if (typeof change === "string") return c.error(400, "bad_parameter", change);
          const out = await plan(change);
          if ("refused" in out) return c.error(409, "plan_refused", out.refused);
          return c.json(200, out);
        },
      },
    ],
    [
      "/cluster/weight",
      {
        method: "POST",
        run: async (c) => {
          const set = deps.setWeight;
          if (set === undefined) return c.error(404, "not_found", "this node's weight cannot be changed");
          const q = c.query();
          const weight = weightOf(q.weight);
          if (weight === undefined)
            return c.error(400, "bad_parameter", `weight must be an integer 1..${MAX_WEIGHT}, once`);
          if (q.id !== undefined && (typeof q.id !== "string" || q.id === ""))
            return c.error(400, "bad_parameter", "id must be given at most once, not empty");
          const out = await set(q.id, weight);
          if ("refused" in out) return c.error(409, "weight_refused", out.refused);
          return c.json(200, out);
        },
      },
    ],
    [
      "/cluster/handoff",
      {
        method: "POST",
        run: (c) => {
          const set = deps.setHandoffRate;
          if (set === undefined)
            return c.error(404, "not_found", "this node's handoff throttle cannot be changed");
          const v = c.query().bytesPerSecond;
          const bps = typeof v === "string" && /^[0-9]{1,16}$/.test(v) ? Number(v) : Number.NaN;
          if (!(bps >= HANDOFF_RATE_MIN && bps <= HANDOFF_RATE_MAX))
            return c.error(
              400,
              "bad_parameter",
              `bytesPerSecond must be an integer ${HANDOFF_RATE_MIN}..${HANDOFF_RATE_MAX}, once`,
            );
          return c.json(200, set(bps));
        },
      },
    ],
    [
      "/storage/compact",
      {
        method: "POST",
        run: (c) => {
          const compact = deps.compactStorage;
          if (compact === undefined)
            return c.error(404, "not_found", "this node's storage cannot be compacted");
          let out: ReturnType<typeof compact>;
          try {
            out = compact();
          } catch (err) {
            // The engine failed (it takes no more writes) or is closing: nothing was started.
            return c.error(
              503,
              "unavailable",
              `the storage engine cannot compact: ${(err as Error).message}`,
            );
          }
          if (!out.started)
            return c.error(
              409,
              "compaction_running",
              "a full compaction of this node's storage is running already: follow it in GET /status (storage.manualCompaction)",
              { compaction: out.progress },
            );
          return c.json(202, { compaction: out.progress });
        },
      },
    ],
    [
      "/cluster/anti-entropy",
      {
        method: "POST",
        run: (c) => {
          const q = c.query();
          if (q.paused !== "true" && q.paused !== "false")
            return c.error(400, "bad_parameter", "paused must be given once, true or false");
          const set = deps.antiEntropy;
          if (set === undefined)
            return c.error(409, "anti_entropy_off", "anti-entropy is off on this node (--anti-entropy off)");
          return c.json(200, set(q.paused === "true"));
        },
      },
    ],
  ]);
}
