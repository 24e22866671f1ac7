/**
 * The answers a node gives its peers: one handler per request of the peer protocol (transport/messages.ts),
 * each over the part of the node that owns the answer.
 */
import { hash32 } from "../core/hash.js";
import type { DepartureVerdict } from "../membership/departure.js";
import type { GossipDriver } from "../membership/gossip-driver.js";
import type { Membership } from "../membership/membership.js";
import { decodeVector, encodeWriteOutcome } from "../replication/cluster-peers.js";
import type { Coordinator } from "../replication/coordinator.js";
import type { ForwardMemo } from "../replication/forward-memo.js";
import type { Replica } from "../replication/replica.js";
import type { Clock } from "../runtime/runtime.js";
import type { RequestBody, ResponseBody } from "../transport/messages.js";
import type { Transport } from "../transport/transport.js";
import { decodeSiblings, encodeSiblings } from "../versioning/object-codec.js";
import type { ClusterSettings } from "./identity.js";

type Op = RequestBody["op"];
type Handler<K extends Op> = (
  from: string,
  body: Extract<RequestBody, { op: K }>,
) => Promise<ResponseBody> | ResponseBody;
export type PeerHandlers = { readonly [K in Op]: Handler<K> };

export interface PeerDispatchDeps {
  readonly cluster: ClusterSettings;
  readonly membership: Membership;
  readonly gossip: GossipDriver;
  readonly replica: Replica;
  readonly coordinator: Coordinator;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly requestTimeoutMs: number;
  /** Outcomes of the forwarded writes coordinated here, by request id (a duplicate gets the same one). */
  readonly forwarded: ForwardMemo<ResponseBody>;
  readonly approveDeparture: (id: string, how: "leave" | "remove", force: boolean) => DepartureVerdict;
  /** A store changed a key here (the stray forwarder sends it on if this node does not replicate it). */
  readonly stored: (key: Uint8Array, set: ReturnType<typeof decodeSiblings>) => void;
}

/** A write another node forwarded here, coordinated (without the memo of outcomes: see `coordinate`). */
export async function coordinateForwarded(
  coordinator: Coordinator,
  body: Extract<RequestBody, { op: "coordinate" }>,
): Promise<ResponseBody> {
  const out = await coordinator.write(
    body.key,
    decodeVector(body.context),
    { data: body.value, contentType: body.contentType, deleted: body.deleted, writtenAtMs: body.writtenAtMs },
    body.w,
    body.timeoutMs,
  );
  return { op: "coordinated", outcome: encodeWriteOutcome(out) };
}

export function peerHandlers(d: PeerDispatchDeps): PeerHandlers {
  return {
    ping: () => ({ op: "pong" }),
    gossip: (from, body) => d.gossip.onGossip(from, body),
    join: (_from, body) => {
      if (d.membership.member(body.member.id)?.status === "left")
        throw Object.assign(
          new Error(
            `node id ${body.member.id} has left this cluster (or was removed) and cannot join again: start the node with another --id`,
          ),
          { code: "ERR_REJECTED" },
        );
      d.membership.admit(body.member, d.clock.now());
      const c = d.cluster;
      return {
        op: "joined",
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
      const alive = await d.transport.request(body.target, { op: "ping" }, d.requestTimeoutMs).then(
        () => true,
        () => false,
      );
      return { op: "probed", alive };
    },
    read: async (_from, body) => {
      const set = await d.replica.read(body.key);
      return { op: "read", set: set.length === 0 ? null : encodeSiblings(set) };
    },
    store: async (_from, body) => {
      const { set, changed } = await d.replica.mergeChanged(body.key, decodeSiblings(body.set));
      if (changed && body.handoff !== true) d.stored(body.key, set);
      return { op: "stored" };
    },
    depart: (_from, body) => ({ op: "departure", ...d.approveDeparture(body.id, body.how, body.force) }),
    // The request id makes the write idempotent: a second copy gets the first one's outcome.
    coordinate: (_from, body) =>
      d.forwarded.run(body.requestId, `${body.key.length}:${hash32(body.key, 0)}`, () =>
        coordinateForwarded(d.coordinator, body),
      ),
  };
}

/** The transport's request handler over the handlers. */
export function dispatchTo(h: PeerHandlers): (from: string, body: RequestBody) => Promise<ResponseBody> {
  return async (from, body) => (h[body.op] as Handler<Op>)(from, body as never);
}
