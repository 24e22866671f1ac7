/**
 * The protocol half of a node, wired, with no I/O of its own: membership and its gossip driver, the
 * replica, the coordinator and router, handoff, departures, stray forwarding and the answers to peers.
 * Everything from the world comes in through `NodeCoreDeps` (a transport, a clock, timers, a seeded
 * random source, a storage engine), so the same code runs in a real process (boot.ts and node.ts add the
 * data directory, TCP and HTTP around it) and, many times over, under the simulator (src/sim).
 *
 * This class wires; the parts decide: departures.ts (leave, remove, the claimant's approval),
 * leave-completion.ts, stray-forwarder.ts, placement.ts, peer-dispatch.ts.
 */

import type { AeRequest } from "../anti-entropy/messages.js";
import { AntiEntropy, type AntiEntropyDeps } from "../anti-entropy/service.js";
import type { TreeSet } from "../anti-entropy/tree-set.js";
import { GossipDriver } from "../membership/gossip-driver.js";
import { Membership, type MembershipEvent } from "../membership/membership.js";
import { Coordinator, type CoordinatorDeps } from "../replication/coordinator.js";
import type { DotCounter } from "../replication/dot-counter.js";
import { ForwardMemo } from "../replication/forward-memo.js";
import { Handoff } from "../replication/handoff.js";
import { HintDelivery, type HintDeliveryDeps } from "../replication/hint-delivery.js";
import type { HintStore } from "../replication/hints.js";
import { Replica } from "../replication/replica.js";
import { Router } from "../replication/router.js";
import { type TombstoneDeps, type TombstonePacing, TombstoneReaper } from "../replication/tombstones.js";
import type { Plan, RingChange } from "../ring/plan.js";
import type { Clock, Random, TimerHandle, Timers } from "../runtime/runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import type { AnswerOf, MemberView, PurgeRequest, RingView } from "../transport/messages.js";
import {
  type PeerHandlers,
  peerHandler,
  type RequestHandler,
  type Transport,
} from "../transport/transport.js";
import type { Actor } from "../versioning/dvv.js";
import { Absences } from "./absences.js";
import { Departures } from "./departures.js";
import type { ClusterSettings } from "./identity.js";
import { countsToWire, KeyListing } from "./key-listing.js";
import { LeaveCompletion } from "./leave-completion.js";
import { peerHandlers } from "./peer-dispatch.js";
import { Placement } from "./placement.js";
import { gatherPlan } from "./plan-gathering.js";
import { ReplicaPeers } from "./replica-peers.js";
import type { SavedView } from "./saved-view.js";
import { StrayForwarder } from "./stray-forwarder.js";

/** Requests a member that left may still make: it hears of its departure through them. */
const GOSSIP_KINDS: ReadonlySet<string> = new Set(["ping", "probe", "gossip"]);

export interface NodeCoreDeps {
  readonly nodeId: string;
  readonly actor: Actor;
  readonly cluster: ClusterSettings;
  readonly transport: Transport;
  readonly storage: StorageEngine;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly random: Random;
  /** This node's entry as it starts (start-plan.ts). */
  readonly self: MemberView;
  /** The last view known (saved, or from the join answer); undefined for a brand-new node. */
  readonly view?: {
    readonly members: readonly MemberView[];
    readonly ring: RingView | null;
    /** Departed members forgotten before the restart (saved-view.ts): their ids stay refused. */
    readonly forgotten?: readonly MemberView[];
  };
  /** The ring the node's last complete handoff pass was for (saved in members.json), if any. */
  readonly handedOff?: RingView | null;
  /** Make the first ring (a new cluster of one). */
  readonly bootstrapRing: boolean;
  readonly gossipIntervalMs: number;
  readonly downAfterMs: number;
  readonly requestTimeoutMs: number;
  readonly maxSiblings: number;
  /** Saves the view (viewToSave) in the background, and durably before a change is acknowledged. */
  readonly views?: { save(): void; persist(): Promise<void> };
  /**
   * Sloppy quorum and hinted handoff: this node's hints (loaded), and how fast it delivers them. Absent:
   * strict quorums over the key's replicas alone, and no hints.
   */
  readonly hinted?: {
    readonly hints: HintStore;
    readonly deliveryBytesPerSecond: number;
    /** Random bytes for the actor of a write this node versions as a stand-in. */
    readonly entropy: (bytes: number) => Uint8Array;
    readonly onLateHint?: CoordinatorDeps["onLateHint"];
    readonly onDelivered?: HintDeliveryDeps["onDelivered"];
    readonly onDropped?: HintDeliveryDeps["onDropped"];
  };
  /** Read repair after reads (on unless false; CoordinatorDeps.readRepair). */
  readonly readRepair?: boolean;
  /**
   * Anti-entropy: this node's trees (loaded, or to be rebuilt: `rebuild`), and how its exchanges run.
   * Absent: no trees, no exchanges (peers' exchange requests are refused).
   */
  readonly antiEntropy?: {
    readonly trees: TreeSet;
    /** Partitions whose trees must be rebuilt from the data at start (an unclean stop, no saved trees). */
    readonly rebuild: readonly number[];
    readonly intervalMs: number;
    readonly pauseMs: number;
    readonly keysPerSecond: number;
    readonly onRepaired?: AntiEntropyDeps["onRepaired"];
    readonly onExchange?: AntiEntropyDeps["onExchange"];
    readonly onRebuild?: AntiEntropyDeps["onRebuild"];
  };
  /**
   * Tombstone purging (replication/tombstones.ts): the grace period, whether to purge (else sweeps only
   * count), the pacing. Absent: no sweeps, and peers' proposals get "off".
   */
  readonly tombstones?: {
    readonly graceMs: number;
    readonly purging: boolean;
    readonly pacing?: TombstonePacing;
    /** The node's last contact with the cluster before this start (its heartbeat file). */
    readonly lastContactAtMs?: number;
    readonly onPurged?: TombstoneDeps["onPurged"];
    readonly onRefused?: TombstoneDeps["onRefused"];
  };
  /** The node's dot counter (replication/dot-counter.ts; volatile if absent). */
  readonly counters?: DotCounter;
  readonly onReadRepair?: (nodeId: string) => void;
  /** Sets the key listing's scans look at per second at most on this node (key-listing.ts's default). */
  readonly listKeysPerSecond?: number;
  /** The handoff's throttle, bytes per second (handoff.ts's default if absent). */
  readonly handoffBytesPerSecond?: number;
  /** A read or store sent to another replica timed out. */
  readonly onReplicaTimeout?: (op: "read" | "store") => void;
  /**
   * This node is out of the cluster: it finished leaving (everything handed off, `left` gossiped for a few
   * rounds), or it heard that an operator removed it. Stop it.
   */
  readonly onLeft?: (how: "left" | "removed") => void;
  /** Every change of the membership view, once, with its cause (node.ts logs it). */
  readonly onMembershipEvent?: (e: MembershipEvent) => void;
}

export class NodeCore {
  readonly membership: Membership;
  readonly placement: Placement;
  readonly replica: Replica;
  readonly coordinator: Coordinator;
  readonly router: Router;
  readonly gossip: GossipDriver;
  readonly handoff: Handoff;
  readonly departures: Departures;
  readonly strays: StrayForwarder;
  /** Anti-entropy's exchanges and this node's trees (undefined when it is off). */
  readonly antiEntropy: AntiEntropy | undefined;
  readonly trees: TreeSet | undefined;
  /** Tombstone purging (undefined when absent from the deps). */
  readonly tombstones: TombstoneReaper | undefined;
  /** Hinted handoff's store and delivery (undefined without hints). */
  readonly hints: HintStore | undefined;
  readonly hintDelivery: HintDelivery | undefined;
  /** Outcomes of the forwarded writes coordinated here, by request id (a duplicate gets the same one). */
  readonly forwarded: ForwardMemo<AnswerOf<"coordinate">>;
  /** The cluster's key listing: pages for clients, and answers to peers' list_keys. */
  readonly keyListing: KeyListing;
  readonly handlers: PeerHandlers;
  /** The transport's request handler. */
  readonly dispatch: RequestHandler;
  private readonly completion: LeaveCompletion;
  /** Members removed lately, and this node's last contact with the others (for tombstone purging). */
  private readonly absences: Absences;
  private sampling: TimerHandle | undefined;

  /** Sets this node stores (its last census), for the handoff's time left; null before the first. */
  storedSets: number | null = null;
  /** Handoff stores received from other members since the start: keys and their bytes. */
  readonly handoffReceived = { keys: 0, bytes: 0 };

  constructor(private readonly d: NodeCoreDeps) {
    const now = () => d.clock.now();
    const membership = new Membership(
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
    this.membership = membership;
    if (d.view !== undefined) {
      membership.merge(d.view.members, d.view.ring, now());
      membership.restoreForgotten(d.view.forgotten ?? []);
    }
    this.absences = new Absences(
      membership.view(),
      d.tombstones?.lastContactAtMs ?? now(),
      now(),
      d.tombstones?.graceMs,
    );
    if (d.bootstrapRing) membership.bootstrapRing();
    // Changes from here on are reported (loading the view at start is not a change).
    membership.onEvent = d.onMembershipEvent;
    this.placement = new Placement(membership, d.nodeId, d.cluster.n);
    const list = (key: Uint8Array) => this.placement.preferenceList(key);
    const fallbacks = (key: Uint8Array) => (d.hinted === undefined ? [] : this.placement.fallbacks(key));
    const alive = (id: string) => membership.liveness(id, now()) !== "down";

    this.replica = new Replica(
      d.storage,
      d.actor,
      d.maxSiblings,
      undefined,
      d.antiEntropy?.trees,
      d.counters,
    );
    const peers = new ReplicaPeers({
      selfId: d.nodeId,
      membership,
      replica: this.replica,
      hints: d.hinted?.hints,
      transport: d.transport,
      clock: d.clock,
      requestTimeoutMs: d.requestTimeoutMs,
      onTimeout: d.onReplicaTimeout,
    });
    const peerFor = (id: string) => peers.peer(id);
    const hinted = d.hinted;
    this.hints = hinted?.hints;
    this.coordinator = new Coordinator({
      local: this.replica,
      localNodeId: d.nodeId,
      replicasFor: (key) => list(key).map(peerFor),
      fallbacksFor: (key) => fallbacks(key).map(peerFor),
      healthy: alive,
      hints: hinted?.hints,
      standInActor:
        hinted === undefined
          ? undefined
          : () => `${d.actor}~${Buffer.from(hinted.entropy(8)).toString("hex")}`,
      timers: d.timers,
      random: d.random,
      readRepair: d.readRepair,
      onReadRepair: d.onReadRepair,
      onLateHint: hinted?.onLateHint,
    });
    this.router = new Router({
      coordinator: this.coordinator,
      selfId: d.nodeId,
      transport: d.transport,
      directory: peers.directory,
      preferenceList: list,
      fallbacks,
      random: d.random,
      clock: d.clock,
    });
    this.forwarded = new ForwardMemo<AnswerOf<"coordinate">>({ clock: d.clock }, ({ outcome }) =>
      outcome.kind === "ok" ? outcome.written.length + outcome.set.length : 0,
    );
    const saveView = () => d.views?.save();
    this.gossip = new GossipDriver({
      membership,
      transport: d.transport,
      timers: d.timers,
      clock: d.clock,
      random: d.random,
      intervalMs: d.gossipIntervalMs,
      requestTimeoutMs: Math.max(d.gossipIntervalMs * 2, 500),
      onChange: () => {
        this.absences.viewChanged(membership.view(), now());
        this.completion.viewChanged();
        this.hintDelivery?.kick();
        saveView();
      },
      onExchanged: (id) => {
        this.absences.exchanged(id);
        this.settleContact();
      },
    });
    this.handoff = new Handoff({
      selfId: d.nodeId,
      replica: this.replica,
      peer: peerFor,
      timers: d.timers,
      clock: d.clock,
      current: () => {
        const table = this.placement.current();
        const ring = membership.ring;
        return table === undefined || ring === null ? undefined : { ring, table, version: ring.version };
      },
      leaving: () => membership.self.status === "leaving" || membership.self.status === "left",
      gone: (id) => membership.member(id)?.status === "left",
      // Suspect counts as down: a keeper then sends a duplicate rather than rely on a loser it cannot reach.
      down: (id) => membership.liveness(id, now()) !== "up",
      passOf: async (id) => {
        const peer = membership.member(id)?.peer;
        if (peer === undefined) throw new Error(`${id} is not a member`);
        return d.transport.request(peer, { kind: "handoff_progress" }, d.requestTimeoutMs);
      },
      leavingReady: () => this.completion.outOfRing(),
      onPassComplete: (p) => {
        saveView(); // the ring handed off for
        this.completion.passComplete(p.startedAt);
      },
      retryMs: Math.max(d.gossipIntervalMs * 4, 1000),
      bytesPerSecond: d.handoffBytesPerSecond,
      storedSets: () => this.storedSets,
      held: () => this.staleView(),
    });
    this.completion = new LeaveCompletion({
      selfId: d.nodeId,
      membership,
      handoff: this.handoff,
      clock: d.clock,
      timers: d.timers,
      gossipIntervalMs: d.gossipIntervalMs,
      saveView,
      hintsHeld: () => (this.hints?.backlog().size ?? 0) > 0,
      deliverHints: () => this.hintDelivery?.kick(),
      // Cut off for longer than the grace period: its copies may be older than tombstones purged since.
      cutOffTooLong: () => this.absences.cutOffTooLong(now()),
      onLeft: (how) => d.onLeft?.(how),
    });
    this.departures = new Departures({
      selfId: d.nodeId,
      n: d.cluster.n,
      membership,
      transport: d.transport,
      clock: d.clock,
      requestTimeoutMs: d.requestTimeoutMs,
      changed: async () => {
        this.absences.viewChanged(membership.view(), now());
        this.completion.viewChanged();
        await d.views?.persist();
      },
      tell: (id) => {
        if (id !== d.nodeId) this.gossip.exchangeWith(id);
      },
    });
    membership.approvedDeparture = (id) => this.departures.approvedDeparture(id);
    this.strays = new StrayForwarder({
      selfId: d.nodeId,
      joining: () => membership.self.status === "joining",
      preferenceList: list,
      peer: peerFor,
    });
    this.hintDelivery =
      hinted === undefined
        ? undefined
        : new HintDelivery({
            selfId: d.nodeId,
            hints: hinted.hints,
            peer: peerFor,
            alive: (id) => membership.liveness(id, now()) === "up",
            // A node leaving (or removed) hands every hint it holds to the keys' current replicas, as it
            // hands off its data: it will not be there to deliver them.
            // So does a target that is leaving and already out of the ring: it may have finished and
            // stopped unheard (its last gossip lost), and it replicates nothing any more.
            gone: (id) =>
              membership.member(id)?.status === "left" ||
              (membership.member(id)?.status === "leaving" && !this.placement.inRing(id)) ||
              membership.self.status === "leaving" ||
              membership.self.status === "left",
            replicasOf: list,
            timers: d.timers,
            clock: d.clock,
            maxBytesPerSecond: hinted.deliveryBytesPerSecond,
            intervalMs: Math.max(d.gossipIntervalMs * 2, 500),
            onDelivered: hinted.onDelivered,
            onDropped: hinted.onDropped,
          });
    const ae = d.antiEntropy;
    this.trees = ae?.trees;
    const ask = async <R extends AeRequest | PurgeRequest<"purge_check" | "purge">>(
      peer: string,
      request: R,
    ) => {
      const addr = membership.member(peer)?.peer;
      if (addr === undefined) throw new Error(`no address known for ${peer}`);
      return d.transport.request(addr, request, d.requestTimeoutMs * 4);
    };
    this.antiEntropy =
      ae === undefined
        ? undefined
        : new AntiEntropy({
            selfId: d.nodeId,
            trees: ae.trees,
            data: this.replica,
            partitionOf: ae.trees.partitionOf,
            peers: () => this.placement.coReplicas().filter(alive),
            shared: (peer) => this.placement.shared(peer),
            askTrees: (peer, r) => ask(peer, r),
            askKeys: (peer, r) => ask(peer, r),
            peer: peerFor,
            timers: d.timers,
            clock: d.clock,
            intervalMs: ae.intervalMs,
            pauseMs: ae.pauseMs,
            keysPerSecond: ae.keysPerSecond,
            onRepaired: ae.onRepaired,
            onExchange: ae.onExchange,
            onRebuild: ae.onRebuild,
          });
    this.keyListing = new KeyListing({
      selfId: d.nodeId,
      partitions: d.cluster.partitions,
      membership,
      placement: this.placement,
      replica: this.replica,
      transport: d.transport,
      clock: d.clock,
      timers: d.timers,
      requestTimeoutMs: d.requestTimeoutMs,
      keysPerSecond: d.listKeysPerSecond,
    });
    const tomb = d.tombstones;
    this.tombstones =
      tomb === undefined
        ? undefined
        : new TombstoneReaper({
            selfId: d.nodeId,
            replica: this.replica,
            clock: d.clock,
            timers: d.timers,
            graceMs: tomb.graceMs,
            purging: tomb.purging,
            pacing: tomb.pacing,
            ring: () => {
              const ring = membership.ring;
              return ring === null
                ? undefined
                : { version: ring.version, list: (key) => this.placement.preferenceList(key) };
            },
            alive: (id) => membership.liveness(id, now()) === "up",
            hintHeld: async (key) => {
              const hints = this.hints;
              return hints !== undefined && (await hints.readAll(key)).length > 0;
            },
            // Every member answers for itself: no pass under way, the last one for its current ring.
            handoffSettled: () =>
              membership.self.status === "up" &&
              this.handoff.progress.state === "idle" &&
              this.handoff.handedOffRing?.version === membership.ring?.version &&
              this.strays.straysInFlight === 0,
            // Every member that has not left, and those removed within the grace period (absences.ts).
            members: () => [
              ...membership
                .view()
                .filter((m) => m.status !== "left" && m.id !== d.nodeId)
                .map((m) => m.id),
              ...this.absences.recentlyRemoved(now(), tomb.graceMs),
            ],
            store: (peer, key, set) => peerFor(peer).store(key, set),
            ask: (peer, body) => ask(peer, body),
            onPurged: tomb.onPurged,
            onRefused: tomb.onRefused,
          });
    this.handlers = peerHandlers({
      selfId: d.nodeId,
      listKeys: (body) => this.keyListing.answer(body),
      countPartitions: async (body) => {
        if (body.partitions !== d.cluster.partitions)
          throw Object.assign(
            new Error(
              `count_partitions for ${body.partitions} partitions: this cluster has ${d.cluster.partitions}`,
            ),
            { code: "ERR_REJECTED" },
          );
        return countsToWire(await this.keyListing.partitionCounts());
      },
      handoffFigures: () => this.handoffFigures(),
      notAdmitting: () => this.staleView(),
      handedOffHere: (bytes) => {
        this.handoffReceived.keys++;
        this.handoffReceived.bytes += bytes;
      },
      antiEntropy: this.antiEntropy,
      tombstones: this.tombstones,
      local: peerFor(d.nodeId),
      cluster: d.cluster,
      membership,
      gossip: this.gossip,
      replica: this.replica,
      router: this.router,
      transport: d.transport,
      clock: d.clock,
      requestTimeoutMs: d.requestTimeoutMs,
      forwarded: this.forwarded,
      approveDeparture: (id, how, force) => this.departures.approve(id, how, force),
      stored: (key, set) => this.strays.stored(key, set),
    });
    const handle = peerHandler(this.handlers);
    this.dispatch =
      tomb === undefined
        ? handle
        : (from, body, leftMs) => {
            // A member that left (or was removed longer than the grace period ago) is heard no more, but
            // for gossip (so that it learns it left): its copies may be older than tombstones purged since.
            if (!GOSSIP_KINDS.has(body.kind) && this.absences.gone(from, membership, now(), tomb.graceMs))
              return Promise.reject(
                Object.assign(new Error(`${from} has left this cluster: its ${body.kind} is refused`), {
                  code: "ERR_REJECTED",
                }),
              );
            return handle(from, body, leftMs);
          };
  }

  /** This node's handoff as a peer's `handoff_progress` gets it (and as its own join follower reads it). */
  handoffFigures(): AnswerOf<"handoff_progress"> {
    return this.handoff.figures(this.membership.ring?.version ?? 0);
  }

  /** What `change` would move (plan-gathering.ts); changes nothing. */
  plan(change: RingChange): Promise<Plan> {
    return gatherPlan(
      {
        selfId: this.d.nodeId,
        n: this.d.cluster.n,
        membership: this.membership,
        transport: this.d.transport,
        clock: this.d.clock,
        ownCounts: () => this.keyListing.partitionCounts(),
        bytesPerSecond: () => this.handoff.bytesPerSecond,
      },
      change,
    );
  }

  /** The key's preference list: node ids, in order ([] before the node has a ring). */
  preferenceList(key: Uint8Array): readonly string[] {
    return this.placement.preferenceList(key);
  }

  leave(force: boolean): ReturnType<Departures["leave"]> {
    return this.departures.leave(force);
  }

  remove(id: string, force: boolean): ReturnType<Departures["remove"]> {
    return this.departures.remove(id, force);
  }

  start(): void {
    this.gossip.start();
    this.hintDelivery?.start();
    this.tombstones?.start();
    if (this.tombstones !== undefined) this.sampleContact();
    if (this.absences.unsureSince !== undefined) this.reportUnsure();
    const ae = this.d.antiEntropy;
    if (this.antiEntropy !== undefined && ae !== undefined) {
      if (ae.rebuild.length > 0) void this.antiEntropy.rebuild(ae.rebuild);
      this.antiEntropy.start();
    }
    // A pass that a stop or crash interrupted runs again from the ring saved as handed off for.
    const saved = this.d.handedOff;
    this.handoff.start(
      saved === undefined || saved === null
        ? undefined
        : { ring: saved, version: saved.version, table: this.placement.tableOf(saved) },
    );
    this.completion.viewChanged();
  }

  /** The last time this node was in contact with the cluster (absences.ts). */
  get lastContactAtMs(): number {
    return this.absences.lastContactAtMs;
  }

  /**
   * Why this node serves no join and hands nothing off now: it was cut off for longer than the tombstone
   * grace period and has not yet confirmed that it is still a member (absences.ts). Undefined: it may.
   */
  unsure(): string | undefined {
    const since = this.absences.unsureSince;
    if (since === undefined) return undefined;
    const claimed = (this.membership.leftClaimedAt ?? -1) >= since;
    const why = claimed
      ? "a member says it was removed, and the claimant that approved the removal has not confirmed it yet"
      : this.waitingFor.length > 0
        ? `waiting to hear from ${this.waitingFor.join(", ")}`
        : "no other member is up (if this node was removed while away, stop it and wipe its data directory; if the others are gone for good, remove them with cluster remove)";
    return `${this.d.nodeId} was cut off from the cluster for longer than the tombstone grace period (${Math.round((this.d.tombstones?.graceMs ?? 0) / 1000)} s) and has not yet confirmed that it is still a member (it may have been removed meanwhile): ${why}`;
  }

  /**
   * Why this node's view may be one the cluster moved past, so that it admits nobody and hands nothing
   * off: it is unsure of its membership, or it is up while the ring no longer holds it (only its removal
   * takes an up member out of the ring; it waits to hear of it from the claimant or the approver).
   */
  staleView(): string | undefined {
    const unsure = this.unsure();
    if (unsure !== undefined) return unsure;
    if (this.membership.self.status === "up" && this.completion.outOfRing())
      return `${this.d.nodeId} is up but ring ${this.membership.ring?.version} no longer holds it: it was removed, and waits to hear so from the claimant`;
    return undefined;
  }

  /** The members an unsure node still waits to hear from (settleContact). */
  private waitingFor: readonly string[] = [];

  /** An unsure node checks whether it has now heard from every member up; if so, it is sure again. */
  private settleContact(): void {
    const since = this.absences.unsureSince;
    if (since === undefined) return;
    const m = this.membership;
    const t = this.d.clock.now();
    const others = m.view().filter((x) => x.id !== this.d.nodeId && x.status !== "left");
    const up = others.filter((x) => m.liveness(x.id, t) === "up").map((x) => x.id);
    const waiting = this.absences.settle(up, others.length, m.leftClaimedAt);
    if (waiting !== undefined) {
      this.waitingFor = waiting;
      return;
    }
    this.waitingFor = [];
    this.d.onMembershipEvent?.({
      change: "confirmed",
      member: this.d.nodeId,
      text: `this node confirmed that it is still a member (it heard from ${up.length === 0 ? "no other member: there is none" : up.join(", ")}): it serves joins and hands off again`,
    });
    this.handoff.retryNow();
  }

  /** Every second (or gossip round): is another member up, or is there none? (absences.ts) */
  private sampleContact(): void {
    this.sampling = this.d.timers.after(Math.max(this.d.gossipIntervalMs, 1000), () => {
      const m = this.membership;
      const t = this.d.clock.now();
      const others = m.view().filter((x) => x.id !== this.d.nodeId && x.status !== "left");
      const wasUnsure = this.absences.unsureSince !== undefined;
      this.absences.sample(others.length === 0 || others.some((x) => m.liveness(x.id, t) === "up"), t);
      if (!wasUnsure && this.absences.unsureSince !== undefined) this.reportUnsure();
      this.settleContact();
      // Unsure: ask every member up not yet heard from now, rather than wait for gossip to pick it.
      for (const id of this.waitingFor) this.gossip.exchangeWith(id);
      this.sampleContact();
    });
  }

  private reportUnsure(): void {
    const grace = Math.round((this.d.tombstones?.graceMs ?? 0) / 1000);
    this.d.onMembershipEvent?.({
      change: "unsure",
      member: this.d.nodeId,
      text: `this node was cut off from the cluster for longer than the tombstone grace period (${grace} s), so it may have been removed meanwhile: it serves no join and hands nothing off until it has heard from every member up`,
    });
  }

  /** Stops gossip and handoff; resolves once a handoff pass under way has let go of the storage. */
  stop(): Promise<void> {
    this.sampling?.cancel();
    this.gossip.stop();
    this.completion.stop();
    return Promise.all([
      this.handoff.stop(),
      this.hintDelivery?.stop(),
      this.antiEntropy?.stop(),
      this.tombstones?.stop(),
    ]).then(() => undefined);
  }

  /** What a node saves to find its place again after a restart: members, ring, last handed-off ring. */
  viewToSave(): SavedView {
    return {
      members: this.membership.view(),
      ring: this.membership.ring,
      handedOff: this.handoff.handedOffRing ?? null,
      forgotten: this.membership.forgottenEntries(),
    };
  }
}
