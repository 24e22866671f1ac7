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
import { Coordinator, localPeer, type ReplicaPeer } from "../replication/coordinator.js";
import { ForwardMemo } from "../replication/forward-memo.js";
import { Handoff } from "../replication/handoff.js";
import { type PeerDirectory, remotePeer } from "../replication/remote-replica.js";
import { Replica } from "../replication/replica.js";
import { Router } from "../replication/router.js";
import { PreferenceTable } from "../ring/ring.js";
import type { Clock, Random, Timers } from "../runtime/runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import type { AnswerOf, MemberView, RingView } from "../transport/messages.js";
import {
  type PeerHandlers,
  peerHandler,
  type RequestHandler,
  type Transport,
} from "../transport/transport.js";
import type { Actor } from "../versioning/dvv.js";
import { decodeSiblings, encodeSiblings, type StoredSibling } from "../versioning/object-codec.js";

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
  /** The ring the node's last complete handoff pass was for (saved in members.json), if any. */
  readonly handedOff?: RingView | null;
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
  /**
   * This node is out of the cluster: it finished leaving (everything handed off, `left` gossiped for a few
   * rounds), or it heard that an operator removed it. Stop it.
   */
  readonly onLeft?: (how: "left" | "removed") => void;
}

/** How long a removed node tries to hand off what it holds before it stops anyway. */
const REMOVED_HANDOFF_MS = 30_000;

/**
 * How long the claimant counts a departure it approved before the member's own status (leaving, left)
 * reaches it by gossip; an approval whose departure never started lapses then.
 */
const DEPARTURE_APPROVAL_MS = 30_000;

/**
 * Why a leave or a removal is refused: `leave_refused` and `remove_refused` for good (the API answers
 * 409), `unavailable` for now (the claimant could not decide it: the API answers 503; asking again a
 * moment later may succeed).
 */
export class MembershipRefusedError extends Error {
  constructor(
    readonly code: "leave_refused" | "remove_refused" | "unavailable",
    message: string,
  ) {
    super(message);
  }
}

/** The claimant's verdict on a departure: the `departure` answer (messages.ts) without its kind. */
export type DepartureVerdict = Omit<AnswerOf<"depart">, "kind">;

/**
 * Stores for keys this node does not replicate (see forwardStray) sent on at once; past this, what
 * arrives is not sent on (counted): read repair brings it to the replicas that lack it (anti-entropy,
 * when it exists).
 */
const MAX_STRAYS_IN_FLIGHT = 64;

/** At most this many departing ids are named in a refusal (the answer's text is bounded). */
const MAX_NAMED_DEPARTURES = 3;

export class NodeCore {
  readonly membership: Membership;
  readonly replica: Replica;
  readonly coordinator: Coordinator;
  readonly router: Router;
  readonly gossip: GossipDriver;
  /** Outcomes of the forwarded writes coordinated here, by request id (a duplicate gets the same one). */
  readonly forwarded: ForwardMemo<AnswerOf<"coordinate">>;
  /** Answers the requests of peers, one handler per request kind. */
  readonly handlers: PeerHandlers;
  /** The same, as the transport's handler. */
  readonly dispatch: RequestHandler;
  private readonly peers = new Map<string, ReplicaPeer>();
  /** Departures this node approved as the claimant: member id -> until when they count (clock ms). */
  private readonly approvedDepartures = new Map<string, number>();
  private readonly peerFor: (nid: string) => ReplicaPeer;
  private strays = 0;
  /**
   * Stores that came for keys this node does not replicate: sent on to the replicas (`failed`: of those,
   * sends that every replica refused or missed), or not sent on (`dropped`: over the bound; left to read
   * repair).
   */
  readonly strayStores = { forwarded: 0, failed: 0, dropped: 0 };
  private table: PreferenceTable | undefined;
  private tableRingVersion = -1;
  readonly handoff: Handoff;
  /** When this (leaving) node first saw a ring without itself; a leave completes only after a pass that
   * started a settling time later, when every member has the new ring and sends it nothing more. */
  private outOfRingSince: number | undefined;
  private leftTimer: { cancel(): void } | undefined;
  private settleTimer: { cancel(): void } | undefined;
  /** This node heard it was removed: it stops once its handoff pass is done (or REMOVED_HANDOFF_MS). */
  private removedStop = false;

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
    this.peerFor = peerFor;
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
    this.forwarded = new ForwardMemo<AnswerOf<"coordinate">>({ clock: d.clock }, ({ outcome }) =>
      outcome.kind === "ok" ? outcome.written.length + outcome.set.length : 0,
    );
    this.handlers = this.peerHandlers();
    this.dispatch = peerHandler(this.handlers);
    this.gossip = new GossipDriver({
      membership,
      transport: d.transport,
      timers: d.timers,
      clock: d.clock,
      random: d.random,
      intervalMs: d.gossipIntervalMs,
      requestTimeoutMs: Math.max(d.gossipIntervalMs * 2, 500),
      onChange: () => {
        this.membershipChanged();
        d.onViewChange?.();
      },
    });
    this.handoff = new Handoff({
      selfId: d.nodeId,
      storage: d.storage,
      peer: peerFor,
      timers: d.timers,
      clock: d.clock,
      current: () => {
        const table = this.preferences();
        const ring = this.membership.ring;
        return table === undefined || ring === null ? undefined : { ring, table, version: ring.version };
      },
      leaving: () => this.membership.self.status === "leaving" || this.membership.self.status === "left",
      gone: (id) => this.membership.member(id)?.status === "left",
      leavingReady: () => this.outOfRing(),
      onPassComplete: (p) => this.handoffPassComplete(p.startedAt),
      retryMs: Math.max(d.gossipIntervalMs * 4, 1000),
    });
  }

  /** How long a leaving node waits, after the ring without it arrived, before its final pass. */
  private get settleMs(): number {
    return Math.max(this.d.gossipIntervalMs * 6, 1000);
  }

  /** Is this node out of the current ring (no partition, not among the members it was claimed for)? */
  private outOfRing(): boolean {
    const ring = this.membership.ring;
    if (ring === null) return false;
    const me = `${this.d.nodeId}:`;
    return !ring.owners.includes(this.d.nodeId) && !ring.members.some((k) => k.startsWith(me));
  }

  private membershipChanged(): void {
    // Left without finishing a leave of its own: an operator removed it (cluster remove) while it was
    // away (or cut off). The others already gave its partitions away; before it stops, it sends what it
    // holds to the keys' replicas, as a leaving node does (a write only it took would be lost
    // otherwise), for a bounded time: a removed node may be unable to reach anyone.
    if (this.membership.self.status === "left" && this.leftTimer === undefined) {
      this.removedStop = true;
      this.leftTimer = this.d.timers.after(REMOVED_HANDOFF_MS, () => this.d.onLeft?.("removed"));
      this.handoff.rescan();
      return;
    }
    if (this.membership.self.status === "leaving") {
      if (!this.outOfRing()) this.outOfRingSince = undefined;
      else this.outOfRingSince ??= this.d.clock.now();
    }
    this.handoff.kick();
  }

  private handoffPassComplete(startedAt: number): void {
    this.d.onViewChange?.(); // saves the ring handed off for
    if (this.removedStop) {
      // A removed node handed off what it held: stop now.
      this.leftTimer?.cancel();
      this.leftTimer = this.d.timers.after(0, () => this.d.onLeft?.("removed"));
      this.removedStop = false;
      return;
    }
    if (this.membership.self.status !== "leaving") return;
    // A ring that holds us again (a stale claimant) makes us a replica again: wait for the next one.
    if (!this.outOfRing()) this.outOfRingSince = undefined;
    if (this.outOfRingSince === undefined) return;
    const settledAt = this.outOfRingSince + this.settleMs;
    if (startedAt < settledAt) {
      // Members may still have written to us under the old ring: one more pass once they all have the new.
      this.settleTimer?.cancel();
      this.settleTimer = this.d.timers.after(Math.max(0, settledAt - this.d.clock.now()), () => {
        this.settleTimer = undefined;
        this.handoff.rescan();
      });
      return;
    }
    this.membership.markLeft();
    this.d.onViewChange?.();
    // Gossip the news for a few rounds before stopping, so that every member hears it from us.
    this.leftTimer = this.d.timers.after(this.d.gossipIntervalMs * 4, () => this.d.onLeft?.("left"));
  }

  /** The members other than `id` that are up and look alive from here: those that would remain. */
  private upMembersBut(id: string): MemberView[] {
    return this.membership.upAndAlive(this.d.clock.now()).filter((x) => x.id !== id);
  }

  /**
   * The claimant's check of a departure (a peer's `depart`, or one of this node's own when it is the
   * claimant). Refused for now when this node is not the claimant as it sees the cluster (the asker's
   * view is older or newer; asking again once gossip has settled reaches the right one), and for its own
   * leave while departures it approved have not shown in its view yet (its successor as claimant would
   * not know of them). Refused for good for an unknown or departed member, when no other member would be
   * up to take the data, and, unless forced, when fewer than N members would remain. Departures it
   * approved count as done until the member's own status shows them (leaving, left) or 30 s pass, so two
   * asked for at once on different nodes cannot both pass. That holds while the members agree on who
   * the claimant is: views that disagree for longer (a partition) can still approve one each.
   */
  approveDeparture(id: string, how: "leave" | "remove", force: boolean): DepartureVerdict {
    const m = this.membership;
    const now = this.d.clock.now();
    for (const [x, until] of this.approvedDepartures)
      if (until <= now || m.member(x)?.status !== "up") this.approvedDepartures.delete(x);
    const no = (refused: string, retry = false, forceable = false, remaining = 0): DepartureVerdict => ({
      refused,
      retry,
      forceable,
      remaining,
    });
    const claimant = m.claimant(now);
    if (claimant !== this.d.nodeId)
      return no(
        `${this.d.nodeId} is not the claimant (${claimant ?? "no member"} is, as ${this.d.nodeId} sees the cluster): try again in a moment`,
        true,
      );
    const pending = [...this.approvedDepartures.keys()].filter((x) => x !== id);
    const named =
      pending.length <= MAX_NAMED_DEPARTURES
        ? pending.join(", ")
        : `${pending.slice(0, MAX_NAMED_DEPARTURES).join(", ")} and ${pending.length - MAX_NAMED_DEPARTURES} more`;
    if (id === this.d.nodeId && pending.length > 0)
      return no(
        `the claimant ${id} approved the departure of ${named}, which has not started yet: try again in a moment`,
        true,
      );
    const target = m.member(id);
    if (target === undefined) return no(`no member ${id} in the claimant's view`);
    if (target.status === "left") return no(`member ${id} has already left`);
    const remaining = this.upMembersBut(id).filter((x) => !pending.includes(x.id)).length;
    const also =
      pending.length === 0
        ? ""
        : ` (counting the departure of ${named}, approved by the claimant ${this.d.nodeId})`;
    if (remaining === 0) return no(`no other member would remain up${also}: nobody would take the data`);
    if (remaining < this.d.cluster.n && !force)
      return no(
        `after this ${how === "leave" ? "leave" : "removal"} the cluster would have ${remaining} member(s), fewer than N=${this.d.cluster.n}${also}: every key would keep only ${remaining} copies`,
        false,
        true,
        remaining,
      );
    this.approvedDepartures.set(id, now + DEPARTURE_APPROVAL_MS);
    return { refused: null, retry: false, forceable: false, remaining };
  }

  /** Has the claimant (this node, or the member it sees as the claimant) approve a departure. */
  private async approvedByClaimant(
    id: string,
    how: "leave" | "remove",
    force: boolean,
    forceHint: string,
  ): Promise<number> {
    const code = how === "leave" ? "leave_refused" : "remove_refused";
    const claimant = this.membership.claimant(this.d.clock.now());
    let verdict: DepartureVerdict;
    if (claimant === undefined || claimant === this.d.nodeId) verdict = this.approveDeparture(id, how, force);
    else {
      const addr = this.membership.member(claimant)?.peer;
      try {
        if (addr === undefined) throw new Error("no address known");
        verdict = await this.d.transport.request(
          addr,
          { kind: "depart", id, how, force },
          this.d.requestTimeoutMs,
        );
      } catch (err) {
        throw new MembershipRefusedError(
          "unavailable",
          `the claimant ${claimant}, which approves every leave and removal, did not answer (${(err as Error).message}): try again`,
        );
      }
    }
    if (verdict.refused !== null)
      throw new MembershipRefusedError(
        verdict.retry ? "unavailable" : code,
        verdict.forceable ? `${verdict.refused} (${forceHint})` : verdict.refused,
      );
    return verdict.remaining;
  }

  /**
   * Removes member `id` on its behalf (`cluster remove`): for a node that is gone for good and cannot
   * leave by itself. Its partitions go to the others, and the keepers of its keys send them to their new
   * replicas. Refused for this node itself (it leaves), for an unknown or departed id, for a member this
   * node does not see down (unless `force`: a live node would go on serving from a view that has no place
   * for it), and, unless `force`, when fewer than N members would remain, as this node and the claimant
   * (which approves every departure) see it.
   */
  async remove(id: string, force: boolean): Promise<{ removed: string; remaining: number }> {
    const m = this.membership;
    const target = m.member(id);
    if (id === this.d.nodeId)
      throw new MembershipRefusedError(
        "remove_refused",
        "a node does not remove itself: make it leave (cluster leave), with its data",
      );
    if (target === undefined)
      throw new MembershipRefusedError("remove_refused", `no member ${id} in this node's view`);
    if (target.status === "left")
      throw new MembershipRefusedError("remove_refused", `member ${id} has already left`);
    const t = this.d.clock.now();
    if (m.liveness(id, t) !== "down" && !force)
      throw new MembershipRefusedError(
        "remove_refused",
        `member ${id} is ${m.liveness(id, t)}, not down, as this node sees it: make it leave with its data (cluster leave --node its API), or remove it anyway with force`,
      );
    const others = this.upMembersBut(id);
    if (others.length < this.d.cluster.n && !force)
      throw new MembershipRefusedError(
        "remove_refused",
        `after removing ${id} the cluster would have ${others.length} member(s), fewer than N=${this.d.cluster.n}: every key would keep only ${others.length} copies (force it to remove anyway)`,
      );
    const remaining = await this.approvedByClaimant(id, "remove", force, "force it to remove anyway");
    // The view may have moved while the claimant was asked.
    if (m.member(id)?.status === "left")
      throw new MembershipRefusedError("remove_refused", `member ${id} has already left`);
    const after = m.liveness(id, this.d.clock.now());
    if (after !== "down" && !force)
      throw new MembershipRefusedError(
        "remove_refused",
        `member ${id} is ${after} again, not down, as this node sees it: make it leave with its data, or remove it anyway with force`,
      );
    m.remove(id);
    this.d.onViewChange?.();
    this.membershipChanged();
    return { removed: id, remaining };
  }

  /**
   * Starts this node's leave: it is claimed out of the ring, hands every key it holds to the key's new
   * replicas, then marks itself left and stops (onLeft). Refused when no member would be left to take the
   * data, and, unless `force`, when fewer than N members would remain, as this node and the claimant
   * (which approves every departure) see it.
   */
  async leave(force: boolean): Promise<{ status: string; remaining: number }> {
    const m = this.membership;
    const self = m.self;
    if (self.status === "left")
      throw new MembershipRefusedError("leave_refused", "this node has already left the cluster");
    // Only members that are up and look alive count: one of them must claim us out (the claimant), and
    // they are the ones that will hold the data.
    const others = this.upMembersBut(self.id);
    if (self.status === "leaving") return { status: "leaving", remaining: others.length };
    if (others.length === 0)
      throw new MembershipRefusedError(
        "leave_refused",
        "no other member is up: there is nobody to claim this node's partitions and take its data",
      );
    if (self.status === "joining")
      throw new MembershipRefusedError("leave_refused", "this node is still joining; leave once it is up");
    const forceHint = '"cluster leave --force", or force=true, leaves anyway';
    if (others.length < this.d.cluster.n && !force)
      throw new MembershipRefusedError(
        "leave_refused",
        `after this leave the cluster would have ${others.length} member(s), fewer than N=${this.d.cluster.n}: every key would keep only ${others.length} copies (${forceHint})`,
      );
    const remaining = await this.approvedByClaimant(self.id, "leave", force, forceHint);
    if (m.self.status === "left")
      throw new MembershipRefusedError("leave_refused", "this node has already left the cluster");
    if (m.self.status === "leaving") return { status: "leaving", remaining };
    m.startLeaving();
    this.d.onViewChange?.();
    this.membershipChanged();
    return { status: "leaving", remaining };
  }

  /** The preference table of the current ring (rebuilt when the ring changes). */
  preferences(): PreferenceTable | undefined {
    const ring = this.membership.ring;
    if (ring === null) return undefined;
    if (this.table === undefined || this.tableRingVersion !== ring.version) {
      this.table = new PreferenceTable(
        { partitions: ring.partitions, owners: ring.owners },
        this.membership.placementMembers(),
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
    // A pass that a stop or crash interrupted runs again from the ring saved as handed off for.
    const saved = this.d.handedOff;
    this.handoff.start(
      saved === undefined || saved === null
        ? undefined
        : {
            ring: saved,
            version: saved.version,
            table: new PreferenceTable(
              { partitions: saved.partitions, owners: saved.owners },
              this.membership.placementMembers(),
              this.d.cluster.n,
            ),
          },
    );
    this.membershipChanged();
  }

  /** Stops gossip and handoff; resolves once a handoff pass under way has let go of the storage. */
  stop(): Promise<void> {
    this.gossip.stop();
    this.leftTimer?.cancel();
    this.settleTimer?.cancel();
    return this.handoff.stop();
  }

  /** The answer to each kind of peer request. */
  private peerHandlers(): PeerHandlers {
    const d = this.d;
    return {
      ping: () => ({ kind: "pong" }),
      gossip: (from, body) => this.gossip.onGossip(from, body),
      join: (_from, body) => {
        if (this.membership.member(body.member.id)?.status === "left")
          throw Object.assign(
            new Error(
              `node id ${body.member.id} has left this cluster (or was removed) and cannot join again: start the node with another --id`,
            ),
            { code: "ERR_REJECTED" },
          );
        this.membership.admit(body.member, d.clock.now());
        return {
          kind: "joined",
          clusterId: d.cluster.clusterId,
          secret: d.cluster.clusterSecret,
          n: d.cluster.n,
          r: d.cluster.r,
          w: d.cluster.w,
          members: this.membership.view(),
          ring: this.membership.ring,
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
        const set = await this.replica.read(body.key);
        return { kind: "read", set: set.length === 0 ? null : encodeSiblings(set) };
      },
      store: async (_from, body) => {
        const { set, changed } = await this.replica.mergeChanged(body.key, decodeSiblings(body.set));
        if (changed && body.handoff !== true) this.forwardStray(body.key, set);
        return { kind: "stored" };
      },
      depart: (_from, body) => ({
        kind: "departure",
        ...this.approveDeparture(body.id, body.how, body.force),
      }),
      // The request id makes the write idempotent: a second copy gets the first one's outcome.
      coordinate: (_from, body) =>
        this.forwarded.run(body.requestId, `${body.key.length}:${hash32(body.key, 0)}`, () =>
          this.router.coordinateForwarded(body),
        ),
    };
  }

  /**
   * A store that brought something new for a key this node does not replicate under its ring: the writer
   * (a coordinator, or a repair) went by an older ring, so the key's replicas of the current ring may
   * lack it (a joiner would, until a read repaired it). The set as merged here is sent on to them, in the
   * background, at most 64 at a time (past that, read repair). Only a change is sent on, so two nodes
   * whose rings differ stop after one exchange. Not sent on: handoff's stores (their sender has the
   * newer ring), and anything while this node is joining (its ring is the older one). A node whose own
   * ring is otherwise older sends a redundant copy to the old replicas.
   */
  private forwardStray(key: Uint8Array, set: readonly StoredSibling[]): void {
    // A joining node's ring is older than the one that sends it keys (it is joining until it hears of a
    // ring claimed with it): what it is sent is not stray.
    if (this.membership.self.status === "joining") return;
    const list = this.preferenceList(key);
    if (list.length === 0 || list.includes(this.d.nodeId)) return;
    if (this.strays >= MAX_STRAYS_IN_FLIGHT) {
      this.strayStores.dropped++;
      return;
    }
    this.strays++;
    this.strayStores.forwarded++;
    void Promise.allSettled(list.map((id) => this.peerFor(id).store(key, set))).then((all) => {
      this.strays--;
      if (all.every((r) => r.status === "rejected")) this.strayStores.failed++;
    });
  }

  /** Stray stores being sent on now. */
  get straysInFlight(): number {
    return this.strays;
  }

  /** What a node saves to find its place again after a restart: members, ring, last handed-off ring. */
  viewToSave(): { members: MemberView[]; ring: RingView | null; handedOff: RingView | null } {
    return {
      members: this.membership.view(),
      ring: this.membership.ring,
      handedOff: this.handoff.handedOffRing ?? null,
    };
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
