/**
 * The operational routes: `GET /health`, `/status`, `/ring` and `/metrics`, and the membership
 * operations `POST /cluster/leave` and `POST /cluster/remove?id=ID` (the CLI's `cluster leave` and
 * `cluster remove`).
 */
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
