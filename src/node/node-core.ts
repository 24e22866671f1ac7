/**
 * The protocol half of a node, with no I/O of its own: membership and its gossip driver, the replica,
 * the coordinator and router, and the dispatcher of peer requests. Everything from the world comes in
 * through `NodeCoreDeps` (a transport, a clock, timers, a seeded random source, a storage engine), so
 * the same code runs in a real process (node.ts adds TCP, disk and HTTP around it) and, many times over,
 * in one process under the simulator (src/sim) with virtual time and a simulated network.
 */

import { hash32 } from "../core/hash.js";
import { GossipDriver } from "../membership/gossip-driver.js";
import { Membership } from "../membership/membership.js";
import {
  decodeVector,
  encodeWriteOutcome,
  type PeerDirectory,
  Router,
  remotePeer,
} from "../replication/cluster-peers.js";
import { Coordinator, localPeer, type ReplicaPeer } from "../replication/coordinator.js";
import { ForwardMemo } from "../replication/forward-memo.js";
import { Replica } from "../replication/replica.js";
import { PreferenceTable } from "../ring/ring.js";
import type { Clock, Random, Timers } from "../runtime/runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import type { MemberView, RequestBody, ResponseBody, RingView } from "../transport/messages.js";
import type { Transport } from "../transport/transport.js";
import type { Actor } from "../versioning/dvv.js";
import { decodeSiblings, encodeSiblings } from "../versioning/object-codec.js";

/** The cluster-wide settings a node holds in its identity. */
export interface ClusterSettings {
  readonly clusterId: string;
  /** Base64 of the secret that signs context tokens (handed to joiners). */
  readonly clusterSecret: string;
  readonly n: number;
  readonly r: number;
  readonly w: number;
  /** Q, the ring's partition count. */
  readonly partitions: number;
}

export interface NodeCoreDeps {
  readonly nodeId: string;
  readonly actor: Actor;
  readonly cluster: ClusterSettings;
  readonly transport: Transport;
  readonly storage: StorageEngine;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly random: Random;
  /** This node's entry as it starts (status `up` if the saved ring holds it, else `joining`). */
  readonly self: MemberView;
  /** The last view known (saved, or from the join answer); undefined for a brand-new node. */
  readonly view?: { readonly members: readonly MemberView[]; readonly ring: RingView | null };
  /** Make the first ring (a new cluster of one). */
  readonly bootstrapRing: boolean;
  readonly gossipIntervalMs: number;
  readonly downAfterMs: number;
  readonly requestTimeoutMs: number;
  readonly maxSiblings: number;
  /** After every change of the membership epoch (node.ts saves the view). */
  readonly onViewChange?: () => void;
  readonly onReadRepair?: (nodeId: string) => void;
  /** A read or store sent to another replica timed out. */
  readonly onReplicaTimeout?: (op: "read" | "store") => void;
}

export class NodeCore {
  readonly membership: Membership;
  readonly replica: Replica;
  readonly coordinator: Coordinator;
  readonly router: Router;
  readonly gossip: GossipDriver;
  /** Outcomes of the forwarded writes coordinated here, by request id (a duplicate gets the same one). */
  readonly forwarded: ForwardMemo<ResponseBody>;
  private readonly peers = new Map<string, ReplicaPeer>();
  private table: PreferenceTable | undefined;
  private tableRingVersion = -1;

  constructor(private readonly d: NodeCoreDeps) {
    const now = () => d.clock.now();
    this.membership = new Membership(
      {
        selfId: d.nodeId,
        partitions: d.cluster.partitions,
        n: d.cluster.n,
        downAfterMs: d.downAfterMs,
        suspectForMs: Math.max(d.gossipIntervalMs * 4, 1000),
        fanout: 3,
      },
      d.self,
      now(),
    );
    const membership = this.membership;
    if (d.view !== undefined) membership.merge(d.view.members, d.view.ring, now());
    if (d.bootstrapRing) membership.bootstrapRing();

    this.replica = new Replica(d.storage, d.actor, d.maxSiblings);
    const directory: PeerDirectory = {
      addressOf: (nid) => membership.member(nid)?.peer,
      reachable: (nid) => nid === d.nodeId || membership.liveness(nid, now()) !== "down",
      contacted: (nid, ok) => (ok ? membership.contactSucceeded(nid) : membership.contactFailed(nid, now())),
    };
    this.peers.set(d.nodeId, localPeer(d.nodeId, this.replica));
    const peerFor = (nid: string): ReplicaPeer => {
      let p = this.peers.get(nid);
      if (p === undefined) {
        p = remotePeer(nid, d.transport, directory, d.requestTimeoutMs, d.onReplicaTimeout);
        this.peers.set(nid, p);
      }
      return p;
    };
    this.coordinator = new Coordinator({
      local: this.replica,
      localNodeId: d.nodeId,
      replicasFor: (key) => this.preferenceList(key).map(peerFor),
      timers: d.timers,
      random: d.random,
      onReadRepair: d.onReadRepair,
    });
    this.router = new Router({
      coordinator: this.coordinator,
      selfId: d.nodeId,
      transport: d.transport,
      directory,
      preferenceList: (key) => this.preferenceList(key),
      random: d.random,
    });
    this.forwarded = new ForwardMemo<ResponseBody>({ clock: d.clock }, (res) =>
      res.op === "coordinated" ? res.outcome.length : 0,
    );
    this.gossip = new GossipDriver({
      membership,
      transport: d.transport,
      timers: d.timers,
      clock: d.clock,
      random: d.random,
      intervalMs: d.gossipIntervalMs,
      requestTimeoutMs: Math.max(d.gossipIntervalMs * 2, 500),
      onChange: d.onViewChange,
    });
  }

  /** The preference table of the current ring (rebuilt when the ring changes). */
  preferences(): PreferenceTable | undefined {
    const ring = this.membership.ring;
    if (ring === null) return undefined;
    if (this.table === undefined || this.tableRingVersion !== ring.version) {
      this.table = new PreferenceTable(
        { partitions: ring.partitions, owners: ring.owners },
        this.membership.ringMembers(),
        this.d.cluster.n,
      );
      this.tableRingVersion = ring.version;
    }
    return this.table;
  }

  /** The key's preference list: node ids, in order ([] before the node has a ring). */
  preferenceList(key: Uint8Array): readonly string[] {
    return this.preferences()?.forKey(key) ?? [];
  }

  start(): void {
    this.gossip.start();
  }

  stop(): void {
    this.gossip.stop();
  }

  /** Answers one request from a peer. */
  async dispatch(_from: string, body: RequestBody): Promise<ResponseBody> {
    const d = this.d;
    switch (body.op) {
      case "ping":
        return { op: "pong" };
      case "gossip":
        return this.gossip.onGossip(_from, body);
      case "join": {
        this.membership.admit(body.member, d.clock.now());
        return {
          op: "joined",
          clusterId: d.cluster.clusterId,
          secret: d.cluster.clusterSecret,
          n: d.cluster.n,
          r: d.cluster.r,
          w: d.cluster.w,
          members: this.membership.view(),
          ring: this.membership.ring,
        };
      }
      case "probe": {
        const alive = await d.transport.request(body.target, { op: "ping" }, d.requestTimeoutMs).then(
          () => true,
          () => false,
        );
        return { op: "probed", alive };
      }
      case "read": {
        const set = await this.replica.read(body.key);
        return { op: "read", set: set.length === 0 ? null : encodeSiblings(set) };
      }
      case "store":
        await this.replica.merge(body.key, decodeSiblings(body.set));
        return { op: "stored" };
      case "coordinate":
        // The request id makes the write idempotent: a second copy gets the first one's outcome.
        return this.forwarded.run(body.requestId, `${body.key.length}:${hash32(body.key, 0)}`, () =>
          this.coordinateForwarded(body),
        );
    }
  }

  /** Coordinates a write another node forwarded here (without the memo: `dispatch` adds it). */
  async coordinateForwarded(body: Extract<RequestBody, { op: "coordinate" }>): Promise<ResponseBody> {
    const out = await this.coordinator.write(
      body.key,
      decodeVector(body.context),
      {
        data: body.value,
        contentType: body.contentType,
        deleted: body.deleted,
        writtenAtMs: body.writtenAtMs,
      },
      body.w,
      body.timeoutMs,
    );
    return { op: "coordinated", outcome: encodeWriteOutcome(out) };
  }

  /** The partitions this node owns (first in their preference list) and those it holds a replica of. */
  partitionsHeld(): { owned: number[]; replicated: number[] } {
    const ring = this.membership.ring;
    const pt = this.preferences();
    const owned: number[] = [];
    const replicated: number[] = [];
    if (ring !== null && pt !== undefined)
      for (let p = 0; p < ring.partitions; p++) {
        if (ring.owners[p] === this.d.nodeId) owned.push(p);
        if (pt.forPartition(p).includes(this.d.nodeId)) replicated.push(p);
      }
    return { owned, replicated };
  }
}
