/**
 * How a node starts, decided from what is on its disk and on its command line, before anything is
 * written: a pure function, called by the node (node.ts, through boot.ts) and by the simulator alike.
 *
 * - No identity, no --join: a new cluster of one (its ring made at start).
 * - No identity, --join: ask a member to admit us (`join`), take the cluster's id, secret, N/R/W and view
 *   from the answer, and gossip as `joining` until the claimant gives us partitions.
 * - An identity: rejoin under it, from the saved view. --join then only names peers to reach the cluster
 *   through (a peer of another cluster is refused). After an unclean stop the actor is renewed: the
 *   coordinator sends a version to other replicas while it is still making it durable itself, so its own
 *   copy may be lost while others hold it, and keeping the actor could name a later write with a dot
 *   already used.
 * Refused: an identity of another node id, an N/R/W on the command line that contradicts the cluster's,
 * a node whose saved view says it left (its directory is out of use for good), and a node away longer
 * than the tombstone grace period (its last heartbeat, node/alive.ts, is older than that): deletes made
 * while it was away may have been purged everywhere else, and versions it still holds of those keys would
 * come back through it (replication/tombstones.ts). The operator wipes its data directory (it then
 * rejoins empty and gets its keys back from its peers), or forces it back with --force-rejoin, knowing
 * nothing it holds was deleted meanwhile; a forced node takes a new actor, as after an unclean stop (its
 * data is of an unknown age: a restored backup keeps an old counter lease).
 */
import type { MemberView } from "../transport/messages.js";
import { ConfigError, NodeLeftError } from "./config.js";
import { checkIdentity, type NodeIdentity } from "./identity.js";
import type { SavedView } from "./saved-view.js";

export interface StartFacts {
  readonly nodeId: string;
  readonly dataDir: string;
  /** Peer addresses given with --join. */
  readonly join: readonly string[];
  readonly settings: { readonly n: number; readonly r: number; readonly w: number };
  /** Which of n, r, w the user set explicitly (checked against an existing cluster's settings). */
  readonly explicit: { readonly n: boolean; readonly r: boolean; readonly w: boolean };
  readonly identity: NodeIdentity | undefined;
  readonly saved: SavedView | undefined;
  /** The running marker was left behind: the last stop was not clean. */
  readonly uncleanStop: boolean;
  /**
   * How long the node was away: its last heartbeat (undefined if it never wrote one), the time now, the
   * grace period it is judged against, and --force-rejoin. Absent: not judged.
   */
  readonly away?: {
    readonly lastAliveAtMs: number | undefined;
    readonly nowMs: number;
    readonly graceMs: number;
    readonly force: boolean;
  };
}

/** The start is refused because the node was away longer than the tombstone grace period. */
export class NodeAwayTooLongError extends ConfigError {
  constructor(message: string) {
    super(message);
    this.name = "NodeAwayTooLongError";
  }
}

export type StartPlan =
  | { readonly kind: "create" }
  | { readonly kind: "join"; readonly seeds: readonly string[] }
  | {
      readonly kind: "rejoin";
      readonly identity: NodeIdentity;
      /** Take a new actor before versioning anything (an unclean stop). */
      readonly renewActor: boolean;
      /** Peers to check belong to this node's cluster (--join on a node with data). */
      readonly checkSeeds: readonly string[];
      /** Forced back (--force-rejoin) after this long away, past the grace period. */
      readonly forcedBackAfterMs?: number;
    };

export function planStart(f: StartFacts): StartPlan {
  if (f.identity !== undefined) checkIdentity(f.identity, f.dataDir, f.nodeId, f.settings, f.explicit);
  const joining = f.identity === undefined && f.join.length > 0;
  if (!joining && f.saved?.members.find((m) => m.id === f.nodeId)?.status === "left")
    throw new NodeLeftError(
      `node ${f.nodeId} has left cluster ${f.identity?.clusterId ?? "(unknown)"} (cluster leave, or removed by cluster remove); the data directory ${f.dataDir} is no longer in use: to run a node again, start it with a new --data and a new --id (and --join a member)`,
    );
  if (f.identity === undefined) return joining ? { kind: "join", seeds: f.join } : { kind: "create" };
  const a = f.away;
  const awayMs = a?.lastAliveAtMs === undefined ? undefined : a.nowMs - a.lastAliveAtMs;
  if (a !== undefined && awayMs !== undefined && awayMs > a.graceMs) {
    if (!a.force)
      throw new NodeAwayTooLongError(
        `node ${f.nodeId} was last running ${duration(awayMs)} ago (at ${new Date(a.lastAliveAtMs!).toISOString()}), longer than the tombstone grace period (${duration(a.graceMs)}): keys deleted meanwhile may have had their tombstones purged, and the old versions in its data directory would bring them back. Wipe its data directory (${f.dataDir}) and start it again with --join MEMBER: it gets its keys back from its peers. Or, if you know that nothing it holds was deleted meanwhile, start it with --force-rejoin to keep its data.`,
      );
    return {
      kind: "rejoin",
      identity: f.identity,
      renewActor: true,
      checkSeeds: f.join,
      forcedBackAfterMs: awayMs,
    };
  }
  return { kind: "rejoin", identity: f.identity, renewActor: f.uncleanStop, checkSeeds: f.join };
}

/** A duration for people: "26.1 hours", "12.0 minutes", "40.0 seconds". */
export function duration(ms: number): string {
  if (ms >= 2 * 3600_000) return `${(ms / 3600_000).toFixed(1)} hours`;
  if (ms >= 2 * 60_000) return `${(ms / 60_000).toFixed(1)} minutes`;
  return `${(ms / 1000).toFixed(1)} seconds`;
}

/** The node's own entry and ring at start, from the view it starts from (saved, or the join answer). */
export interface SelfStart {
  readonly status: MemberView["status"];
  readonly incarnation: number;
  /** While leaving: the claimant that approved the leave (members that never saw it begin ask it). */
  readonly leaveApprovedBy?: string;
  /** Make the first ring: a new cluster of one (or a node of one that never had a ring). */
  readonly bootstrapRing: boolean;
}

export function planSelf(
  nodeId: string,
  view: { readonly members: readonly MemberView[]; readonly ring: SavedView["ring"] } | undefined,
  created: boolean,
  join: readonly string[],
): SelfStart {
  const prev = view?.members.find((m) => m.id === nodeId);
  const inRing = view?.ring?.owners.includes(nodeId) ?? false;
  const leaving = prev?.status === "leaving";
  return {
    // A leave survives a restart, with its approver: the node goes on handing off, then leaves.
    status: leaving ? "leaving" : inRing ? "up" : "joining",
    incarnation: (prev?.incarnation ?? 0) + 1,
    ...(leaving && prev?.leaveApprovedBy !== undefined ? { leaveApprovedBy: prev.leaveApprovedBy } : {}),
    bootstrapRing: created || (view?.ring == null && join.length === 0),
  };
}
