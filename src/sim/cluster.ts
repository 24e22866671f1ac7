/**
 * A whole ringstore cluster in one process: N nodes, each the real `NodeCore` (membership and gossip,
 * replica, coordinator, router, peer dispatch) over the simulated network (SimNetwork) and one virtual
 * scheduler, each with its own storage engine: the LSM engine on its own MemoryFileSystem (durability
 * "fsync", as a node runs it) or the memory engine.
 *
 * It is node.ts with the world swapped out, and the faults a world can inflict:
 * - `crash(id)`: the process dies. Its transport is dropped (SimNetwork.crash), its timers halted, and
 *   its file system loses what was not fsynced (MemoryFileSystem.crash, "drop", "torn" or "zeroed"
 *   tails). With the memory engine the data is gone entirely.
 * - `restart(id)`: as node.ts starts a node on an existing data directory after an unclean stop: reopen
 *   the LSM engine on the crashed file system, rebuild NodeCore under the same node id and a new actor
 *   (node.ts renews the actor after any unclean stop: the coordinator's copy of a version it had already
 *   sent to other replicas may be lost, and its old dots must not be reused), from the view node.ts
 *   would have saved in members.json (kept here in `saved`, rewritten on every view change), with the
 *   incarnation one above the saved one. A memory-engine node lost all its data.
 * - `pause(id)` / `resume(id)`: the process stops (its timers and its network input wait) and goes on.
 * - clock skew: each node reads its own clock, virtual time plus an offset and a drift (skewedClock).
 *
 * Deterministic: node ids, actors, every random stream come from the run's seed.
 */
import { NodeCore } from "../node/node-core.js";
import type { Clock } from "../runtime/runtime.js";
import {
  derivedRandom,
  deriveSeed,
  skewedClock,
  type TimerGroup,
  type VirtualScheduler,
} from "../runtime/virtual-runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import { MemoryFileSystem } from "../storage/fs/memory-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import type { Durability } from "../storage/lsm/options.js";
import { MemoryEngine } from "../storage/memory-engine.js";
import type { AnswerBody, AnswerOf, MemberView, RequestBody, RingView } from "../transport/messages.js";
import { TransportError } from "../transport/transport.js";
import type { SimNetwork, SimTransport } from "./sim-network.js";
import { SlowDisk } from "./slow-disk.js";

export type StorageKind = "lsm" | "memory";

/** Bugs planted on purpose, to show that the checkers catch them (test/sim). Never used otherwise. */
export type PlantedBug =
  /** The first node answers `store` (replication, read repair) without storing the set. */
  | "drop-store"
  /** Every coordinator ignores the client's context (versions each write as if blind). */
  | "ignore-context"
  /** LSM durability "none": a write is acknowledged before it is fsynced, so a crash loses it. */
  | "no-fsync"
  /**
   * A restart after a crash keeps the node's actor (LSM storage): a version the coordinator had sent to
   * other replicas but lost from its own disk can be named again by its next write of the key.
   */
  | "keep-actor"
  /** A forwarded write's copies are each coordinated (no memo of outcomes by request id). */
  | "no-forward-memo"
  /**
   * A forwarder takes every failure of a forwarded write for "never delivered" and tries the next
   * replica, though the first may have applied it (a timeout, a connection lost after sending).
   */
  | "retry-forward";

export interface ClusterConfig {
  readonly seed: number;
  readonly nodes: number;
  readonly storage: StorageKind;
  readonly n: number;
  readonly r: number;
  readonly w: number;
  readonly partitions: number;
  readonly gossipIntervalMs: number;
  readonly downAfterMs: number;
  readonly requestTimeoutMs: number;
  readonly maxSiblings: number;
  readonly bug?: PlantedBug;
}

export interface SimNode {
  readonly id: string;
  readonly address: string;
  /** The coordinating actor: node id and data epoch (identity.ts's `actor`). */
  actor: string;
  core: NodeCore;
  storage: StorageEngine;
  readonly fs: MemoryFileSystem | undefined;
  /** The latency layer over `fs` of the current incarnation (LSM storage only). */
  disk: SlowDisk | undefined;
  timers: TimerGroup;
  readonly clock: Clock;
  readonly transport: SimTransport;
  /** What node.ts keeps in members.json: the last view, rewritten on every change. */
  saved: { members: MemberView[]; ring: RingView | null; handedOff?: RingView | null };
  /**
   * "starting": a restart is reopening its storage (which takes virtual time: syncs are slow). "left":
   * it left the cluster (`leave`) and stopped, as node.ts stops a node that left.
   */
  state: "up" | "crashed" | "starting" | "left";
  paused: boolean;
  /** Incarnations of this node (1 + restarts). */
  generation: number;
  /** Resolvers of callers waiting for the node to run (it is paused). */
  readonly waiting: (() => void)[];
}

const CLUSTER_ID = "sim";
const DATA_DIR = "/data/storage";

/** Small tables and memtables, so that a run of a few hundred writes flushes and compacts. */
const LSM_OPTIONS = {
  memtableBytes: 16 * 1024,
  tableTargetBytes: 32 * 1024,
  blockCacheBytes: 256 * 1024,
  walPreallocateBytes: 16 * 1024,
  maxPendingWriteBytes: 1024 * 1024,
  maxWriteGroupBytes: 256 * 1024,
  // Syncs must take virtual time (SlowDisk): the asynchronous path, not a blocking one.
  walSyncOnEventLoop: false,
} as const;

export class SimCluster {
  readonly nodes: SimNode[] = [];
  readonly byId = new Map<string, SimNode>();
  readonly readRepairs = { count: 0 };
  private readonly cluster;

  constructor(
    readonly config: ClusterConfig,
    readonly sched: VirtualScheduler,
    readonly net: SimNetwork,
    /** Per node: clock offset (ms) and drift (a rate error), drawn by the caller from the seed. */
    readonly skew: readonly { readonly offsetMs: number; readonly drift: number }[],
    private readonly log: (line: string) => void,
  ) {
    this.cluster = {
      clusterId: CLUSTER_ID,
      clusterSecret: Buffer.from(`secret-${config.seed}`).toString("base64"),
      n: config.n,
      r: config.r,
      w: config.w,
      partitions: config.partitions,
    };
  }

  static idOf(i: number): string {
    return `n${i + 1}`;
  }

  private actorOf(id: string, generation: number): string {
    return `${id}.${deriveSeed(this.config.seed, `actor/${id}/${generation}`).toString(36)}`;
  }

  private entry(id: string, status: MemberView["status"], incarnation: number): MemberView {
    return {
      id,
      api: `api:${id}`,
      peer: `sim:${id}`,
      weight: 1,
      zone: undefined,
      status,
      incarnation,
      heartbeat: 0,
    };
  }

  /** Opens the node's storage; syncs take virtual time on its timers (halted when the node crashes). */
  private async openStorage(node: SimNode): Promise<StorageEngine> {
    const fs = node.fs;
    if (fs === undefined) return new MemoryEngine();
    const durability: Durability = this.config.bug === "no-fsync" ? "none" : "fsync";
    const random = derivedRandom(this.config.seed, `disk/${node.id}/${node.generation}`);
    node.disk = new SlowDisk(fs, node.timers, random);
    return LsmEngine.open({ dir: DATA_DIR, fs: node.disk, options: { ...LSM_OPTIONS, durability } });
  }

  /** Builds every node, the first one claiming the ring over all of them (as bench/gossip.ts does). */
  async start(): Promise<void> {
    const ids = Array.from({ length: this.config.nodes }, (_, i) => SimCluster.idOf(i));
    const members = ids.map((id) => this.entry(id, "up", 1));
    for (const [i, id] of ids.entries()) {
      const { offsetMs, drift } = this.skew[i] ?? { offsetMs: 0, drift: 0 };
      const node = await this.newNode(id, skewedClock(this.sched, offsetMs, drift), { members, ring: null });
      node.storage = await this.openStorage(node);
      const founder = i === 0;
      const ring = founder ? null : this.nodes[0]!.core.membership.ring;
      node.core = this.makeCore(node, members[i]!, { members, ring }, founder);
      node.saved = { members: node.core.membership.view(), ring: node.core.membership.ring };
      this.nodes.push(node);
      this.byId.set(id, node);
    }
    // Gossip starts at seeded phases, as processes started one after the other.
    const phase = derivedRandom(this.config.seed, "gossip-phase");
    for (const node of this.nodes) {
      const core = node.core;
      node.timers.after(Math.floor(phase.next() * this.config.gossipIntervalMs), () => core.start());
    }
  }

  /**
   * A node's process before its core exists: its empty file system (LSM storage), its address on the
   * network (requests go to whatever core it has), its clock and timers, and the view it starts from.
   */
  private async newNode(id: string, clock: Clock, saved: SimNode["saved"]): Promise<SimNode> {
    const fs = this.config.storage === "lsm" ? new MemoryFileSystem() : undefined;
    if (fs !== undefined) await fs.mkdirp(DATA_DIR);
    const address = `sim:${id}`;
    let node: SimNode | undefined;
    const transport = this.net.transport({
      address,
      nodeId: id,
      clusterId: CLUSTER_ID,
      handler: (from, body) => this.dispatch(node!, from, body),
    });
    if (this.config.bug === "retry-forward") forgetMaybeDelivered(transport);
    node = {
      id,
      address,
      actor: this.actorOf(id, 1),
      core: undefined as unknown as NodeCore,
      storage: undefined as unknown as StorageEngine,
      fs,
      disk: undefined,
      timers: this.sched.group(),
      clock,
      transport,
      saved,
      state: "up",
      paused: false,
      generation: 1,
      waiting: [],
    };
    return node;
  }

  private makeCore(
    node: SimNode,
    self: MemberView,
    view: { members: readonly MemberView[]; ring: RingView | null },
    bootstrapRing: boolean,
  ): NodeCore {
    const c = this.config;
    const core: NodeCore = new NodeCore({
      nodeId: node.id,
      actor: node.actor,
      cluster: this.cluster,
      transport: node.transport,
      storage: node.storage,
      clock: node.clock,
      timers: node.timers,
      random: derivedRandom(c.seed, `node/${node.id}/${node.generation}`),
      self,
      view,
      bootstrapRing,
      gossipIntervalMs: c.gossipIntervalMs,
      downAfterMs: c.downAfterMs,
      requestTimeoutMs: c.requestTimeoutMs,
      maxSiblings: c.maxSiblings,
      handedOff: node.saved.handedOff,
      onViewChange: () => {
        node.saved = core.viewToSave();
      },
      onLeft: () => {
        if (node.core !== core || node.state !== "up") return;
        node.state = "left";
        this.net.crash(node.address);
        node.timers.halt();
        void core.stop();
        this.log(`${node.id} left the cluster and stopped`);
      },
      onReadRepair: () => {
        this.readRepairs.count++;
      },
    });
    return core;
  }

  private dispatch(node: SimNode, from: string, body: RequestBody): Promise<AnswerBody> {
    if (this.config.bug === "drop-store" && node === this.nodes[0] && body.kind === "store")
      return Promise.resolve({ kind: "stored" });
    if (this.config.bug === "no-forward-memo" && body.kind === "coordinate")
      return node.core.router.coordinateForwarded(body);
    return node.core.dispatch(from, body);
  }

  // ------------------------------------------------------------------ faults

  crash(id: string, unsynced: "drop" | "torn" | "zeroed", random: () => number): void {
    const node = this.byId.get(id)!;
    if (node.state !== "up") throw new Error(`sim: ${id} is not up`);
    // A paused process can be killed too: nothing it held back runs (the network drops what it held,
    // halt() forgets its overdue timers), and callers waiting for it wait in vain.
    node.paused = false;
    node.waiting.length = 0;
    node.state = "crashed";
    this.net.crash(node.address);
    node.timers.halt();
    void node.core.stop();
    node.fs?.crash({ unsynced, random });
    this.log(`crash ${id} (unsynced data: ${node.fs === undefined ? "all lost" : unsynced})`);
  }

  /** Restarts a crashed node from its (crashed) disk and saved view. */
  async restart(id: string): Promise<void> {
    const node = this.byId.get(id)!;
    if (node.state !== "crashed") throw new Error(`sim: ${id} is not crashed`);
    node.state = "starting";
    node.generation++;
    // Every restart follows a crash: a new actor, as node.ts takes after an unclean stop (the coordinator's
    // own copy of a version it had already sent may be lost; with the memory engine everything is).
    if (this.config.bug !== "keep-actor" || node.fs === undefined)
      node.actor = this.actorOf(id, node.generation);
    node.timers = this.sched.group();
    try {
      node.storage = await this.openStorage(node);
    } catch (err) {
      node.state = "crashed"; // it stays down; the nemesis reports the failed restart
      throw err;
    }
    const view = node.saved;
    const prevSelf = view.members.find((m) => m.id === id);
    const inRing = view.ring?.owners.includes(id) ?? false;
    // As node.ts: a leave survives the restart.
    const status = prevSelf?.status === "leaving" ? "leaving" : inRing ? "up" : "joining";
    const self = this.entry(id, status, (prevSelf?.incarnation ?? 0) + 1);
    node.core = this.makeCore(node, self, view, false);
    node.state = "up";
    this.net.restart(node.address, (from, body) => this.dispatch(node, from, body));
    node.core.start();
    node.saved = node.core.viewToSave();
    this.log(`restart ${id} (generation ${node.generation}, actor ${node.actor})`);
  }

  pause(id: string): void {
    const node = this.byId.get(id)!;
    if (node.state !== "up" || node.paused) throw new Error(`sim: ${id} cannot be paused`);
    node.paused = true;
    this.net.pause(node.address);
    node.timers.pause();
    this.log(`pause ${id}`);
  }

  resume(id: string): void {
    const node = this.byId.get(id)!;
    if (!node.paused) throw new Error(`sim: ${id} is not paused`);
    node.paused = false;
    this.log(`resume ${id}`);
    node.timers.resume();
    // Its overdue timers ran just now: one may have ended its leave (onLeft), and its address is gone.
    if (node.state !== "left") this.net.resume(node.address);
    for (const wake of node.waiting.splice(0)) wake();
  }

  /** Resolves when the node runs (at once unless it is paused; never if it crashes meanwhile). */
  running(node: SimNode): Promise<void> {
    if (!node.paused) return Promise.resolve();
    return new Promise((resolve) => node.waiting.push(resolve));
  }

  /** An id for a node that joins: never one used before. */
  nextNodeId(): string {
    return SimCluster.idOf(this.nodes.length);
  }

  /** The nodes that have not left the cluster (nor marked themselves left, about to stop). */
  members(): SimNode[] {
    return this.nodes.filter((n) => n.state !== "left" && n.core.membership.self.status !== "left");
  }

  /** A member is leaving, or has left and not stopped yet. */
  leaving(): boolean {
    return this.nodes.some(
      (n) =>
        (n.state === "up" && n.core.membership.self.status === "left") ||
        (n.state !== "left" && n.core.membership.self.status === "leaving"),
    );
  }

  /** Every member up, and each sees every other as up with the same ring version. */
  converged(): boolean {
    const members = this.members();
    const version = members[0]?.core.membership.ring?.version;
    for (const a of members) {
      if (a.state !== "up" || a.paused) return false;
      const m = a.core.membership;
      if (m.ring?.version !== version) return false;
      for (const b of members) if (a !== b && m.liveness(b.id, a.clock.now()) !== "up") return false;
    }
    return true;
  }

  /**
   * Converged, and quiet: every member is `up` (no join or leave under way) and has no handoff pass
   * running or waiting to retry, so what is on each replica no longer moves by itself.
   */
  settled(): boolean {
    return (
      this.converged() &&
      this.members().every(
        (n) =>
          n.core.membership.self.status === "up" &&
          n.core.handoff.progress.state === "idle" &&
          n.core.straysInFlight === 0,
      )
    );
  }

  /**
   * A new node joins through `via`, as `ringstore start --join` does: it asks to join, takes the view
   * from the answer, and gossips as `joining` until a ring is claimed with it.
   */
  async join(id: string, via: string): Promise<SimNode> {
    if (this.byId.has(id)) throw new Error(`sim: ${id} exists`);
    const node = await this.newNode(id, this.sched, { members: [], ring: null });
    const self = this.entry(id, "joining", 1);
    // Asked again until answered, as an operator runs `ringstore start --join` again with the same id: a
    // request whose answer was lost has already admitted the member, and only this id can take that entry.
    let answer: AnswerOf<"join"> | undefined;
    for (let attempt = 1; answer === undefined; attempt++) {
      try {
        answer = await node.transport.request(`sim:${via}`, { kind: "join", member: self }, 2000);
      } catch (err) {
        if (attempt >= 200) throw err;
        await new Promise<void>((resolve) => this.sched.after(500, resolve));
      }
    }
    node.saved = { members: [...answer.members], ring: answer.ring };
    node.storage = await this.openStorage(node);
    node.core = this.makeCore(node, self, { members: answer.members, ring: answer.ring }, false);
    this.nodes.push(node);
    this.byId.set(id, node);
    node.core.start();
    this.log(`${id} joined through ${via}`);
    return node;
  }

  stop(): void {
    for (const node of this.nodes) {
      if (node.state === "left") continue;
      void node.core.stop();
      node.timers.halt();
    }
  }
}

/** The planted `retry-forward` bug: failures of forwarded writes lose their "maybe delivered" flag. */
function forgetMaybeDelivered(t: SimTransport): void {
  const request = t.request.bind(t);
  t.request = (address, body, timeoutMs) =>
    request(address, body, timeoutMs).catch((err: unknown) => {
      if (body.kind === "coordinate" && err instanceof TransportError)
        throw new TransportError("ERR_UNREACHABLE", err.message, { maybeDelivered: false });
      throw err;
    });
}
