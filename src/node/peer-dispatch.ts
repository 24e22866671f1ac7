/**
 * The answers a node gives its peers: one handler per request of the peer protocol
 * (transport/messages.ts), each typed by its request, over the part of the node that owns the answer.
 */
import type { AntiEntropy } from "../anti-entropy/service.js";
import { hash32 } from "../core/hash.js";
import type { DepartureVerdict } from "../membership/departure.js";
import type { GossipDriver } from "../membership/gossip-driver.js";
import type { Membership } from "../membership/membership.js";
import type { ReplicaPeer } from "../replication/coordinator.js";
import type { ForwardMemo } from "../replication/forward-memo.js";
import type { Replica } from "../replication/replica.js";
import type { Router } from "../replication/router.js";
import type { TombstoneReaper } from "../replication/tombstones.js";
import type { Clock } from "../runtime/runtime.js";
import { type AnswerOf, PURGE_VERDICTS, type RequestOf } from "../transport/messages.js";
import type { PeerHandlers, Transport } from "../transport/transport.js";
import { decodeSiblings, encodeSiblings, type StoredSibling } from "../versioning/object-codec.js";
import type { ClusterSettings } from "./identity.js";

export interface PeerDispatchDeps {
  readonly selfId: string;
  /** Anti-entropy, when it is on: it answers the peers' exchanges. */
  readonly antiEntropy: AntiEntropy | undefined;
  /** Tombstone purging: it answers the peers' proposals (absent: every key gets "off"). */
  readonly tombstones: TombstoneReaper | undefined;
  readonly cluster: ClusterSettings;
  readonly membership: Membership;
  readonly gossip: GossipDriver;
  readonly replica: Replica;
  /** This node's replica as a peer: its data, and the hints it keeps when it stands in for another. */
  readonly local: ReplicaPeer;
  readonly router: Router;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly requestTimeoutMs: number;
  /** Outcomes of the forwarded writes coordinated here, by request id (a duplicate gets the same one). */
  readonly forwarded: ForwardMemo<AnswerOf<"coordinate">>;
  readonly approveDeparture: (id: string, how: "leave" | "remove", force: boolean) => DepartureVerdict;
  /** A store changed a key here (the stray forwarder sends it on if this node does not replicate it). */
  readonly stored: (key: Uint8Array, set: readonly StoredSibling[]) => void;
  /** Answers a peer's `count_partitions` from this node's sets (node/key-listing.ts). */
  readonly countPartitions: (body: RequestOf<"count_partitions">) => Promise<AnswerOf<"count_partitions">>;
  /** This node's handoff figures, for a peer's `handoff_progress` (a joining node follows them). */
  readonly handoffFigures: () => AnswerOf<"handoff_progress">;
  /** Why this node admits no new member now (undefined: it does; NodeCore.unsure). */
  readonly notAdmitting?: () => string | undefined;
  /** A store of handoff (`handoff: true`) arrived here, `bytes` of key and set (counted for /status). */
  readonly handedOffHere?: (bytes: number) => void;
  /** Answers a peer's `list_keys` from this node's sets (node/key-listing.ts). */
  readonly listKeys: (body: RequestOf<"list_keys">) => Promise<AnswerOf<"list_keys">>;
}

export function peerHandlers(d: PeerDispatchDeps): PeerHandlers {
  return {
    ping: () => ({ kind: "pong" }),
    gossip: (from, body) => d.gossip.onGossip(from, body),
    join: (_from, body) => {
      if (d.membership.member(body.member.id)?.status === "left")
        throw Object.assign(
          new Error(
            `node id ${body.member.id} has left this cluster (or was removed) and cannot join again: start the node with another --id`,
          ),
          { code: "ERR_REJECTED" },
        );
      // Its view could be one the cluster moved past (it may have been removed): a newcomer would take it.
      const unsure = d.notAdmitting?.();
      if (unsure !== undefined)
        throw Object.assign(new Error(`${unsure}; ask another member to admit ${body.member.id}`), {
          code: "ERR_REJECTED",
        });
      d.membership.admit(body.member, d.clock.now());
      const c = d.cluster;
      return {
        kind: "joined",
        clusterId: c.clusterId,
        secret: c.clusterSecret,
        n: c.n,
        r: c.r,
        w: c.w,
        members: d.membership.view(),
        ring: d.membership.ring,
      };
    },
    probe: async (_from, body) => {
      const alive = await d.transport.request(body.target, { kind: "ping" }, d.requestTimeoutMs).then(
        () => true,
        () => false,
      );
      return { kind: "probed", alive };
    },
    read: async (_from, body) => {
      const set = await d.local.read(body.key, body.hintFor);
      return { kind: "read", set: set.length === 0 ? null : encodeSiblings(set) };
    },
    store: async (_from, body) => {
      const incoming = decodeSiblings(body.set);
      // A stand-in keeps the set as a hint for the replica it stands in for.
      if (body.hintFor !== undefined && body.hintFor !== d.selfId) {
        await d.local.store(body.key, incoming, false, body.hintFor);
        return { kind: "stored" };
      }
      const { set, changed } = await d.replica.mergeChanged(body.key, incoming);
      if (body.handoff === true) d.handedOffHere?.(body.key.length + body.set.length);
      else if (changed) d.stored(body.key, set);
      return { kind: "stored" };
    },
    depart: (_from, body) => ({ kind: "departure", ...d.approveDeparture(body.id, body.how, body.force) }),
    list_keys: (_from, body) => d.listKeys(body),
    count_partitions: (_from, body) => d.countPartitions(body),
    handoff_progress: () => d.handoffFigures(),
    ae_roots: (_from, body) => aeOn(d).answerTrees(body),
    ae_branches: (_from, body) => aeOn(d).answerTrees(body),
    ae_segments: (_from, body) => aeOn(d).answerTrees(body),
    ae_keys: (_from, body) => aeOn(d).answerKeys(body),
    purge_check: (from, body) =>
      d.tombstones?.answerCheck(from, body) ?? { kind: "purge_verdicts", verdicts: off(body.keys.length) },
    purge: (from, body) =>
      d.tombstones?.answerPurge(from, body) ?? { kind: "purge_results", verdicts: off(body.keys.length) },
    // The request id makes the write idempotent: a second copy gets the first one's outcome.
    // It ends within the frame's deadline: the forwarder answers its client by then.
    coordinate: (_from, body, leftMs) =>
      d.forwarded.run(body.requestId, `${body.key.length}:${hash32(body.key, 0)}`, () =>
        d.router.coordinateForwarded(body, leftMs),
      ),
  };
}

/** The node's anti-entropy, or the refusal its peers get when it is off. */
function aeOn(d: PeerDispatchDeps): AntiEntropy {
  if (d.antiEntropy === undefined)
    throw Object.assign(new Error(`anti-entropy is off on ${d.selfId}`), { code: "ERR_UNAVAILABLE" });
  return d.antiEntropy;
}

/** "off" for each of `n` keys: this node does not purge tombstones. */
function off(n: number): Buffer {
  return Buffer.alloc(n, PURGE_VERDICTS.indexOf("off"));
}
