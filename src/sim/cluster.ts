/**
 * A whole ringstore cluster in one process: N nodes, each started by the real start-up (node/boot.ts:
 * the start plan, the data directory's files, the protocol core) over the simulated network (SimNetwork),
 * one virtual scheduler, and its own MemoryFileSystem holding its data directory (node.json,
 * members.json, the running marker and, with LSM storage, the engine's files, behind a disk with latency).
 * With the memory engine the data is in memory and only the node's small files are on its "disk".
 *
 * It is node.ts with the world swapped out, and the faults a world can inflict:
 * - `crash(id)`: the process dies. Its transport is dropped (SimNetwork.crash), its timers halted, and
 *   its file system loses what was not fsynced (MemoryFileSystem.crash, "drop", "torn" or "zeroed"
 *   tails). With the memory engine the data is gone entirely.
 * - `restart(id)`: boots the node again on its crashed disk, as `ringstore start` does: the running
 *   marker it left says the stop was unclean, so the real start plan renews its actor.
 * - `pause(id)` / `resume(id)`: the process stops (its timers and its network input wait) and goes on.
 * - `join(id, via)`: a new node boots with --join, asking again until admitted.
 * - clock skew: each node reads its own clock, virtual time plus an offset and a drift (skewedClock).
 *
 * The cluster's first nodes start as if a previous run had formed it: each one's identity and view are
 * written to its disk, then it boots as a restarted node (the first one makes the ring). Deterministic:
 * node ids, actors, every random stream come from the run's seed.
 */
import { type BootedNode, bootNode, type NodeEnv } from "../node/boot.js";
import { NodeLeftError } from "../node/config.js";
import { DataDir } from "../node/data-dir.js";
import type { NodeCore } from "../node/node-core.js";
import { pastGrace, type TombstonePacing } from "../replication/tombstones.js";
import type { Clock, Timers } from "../runtime/runtime.js";
import {
  derivedRandom,
  deriveSeed,
  skewedClock,
  type TimerGroup,
  type VirtualScheduler,
} from "../runtime/virtual-runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import type { FileSystem } from "../storage/fs/file-system.js";
import { MemoryFileSystem } from "../storage/fs/memory-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import type { Durability } from "../storage/lsm/options.js";
import { MemoryEngine } from "../storage/memory-engine.js";
import type { AnswerBody, MemberView, RequestBody } from "../transport/messages.js";
import { type RequestHandler, TransportError } from "../transport/transport.js";
import { merge } from "../versioning/dvv.js";
import { decodeSiblings } from "../versioning/object-codec.js";
import { DurableCopies } from "./copies.js";
import type { SimNetwork, SimTransport } from "./sim-network.js";
import { SlowDisk } from "./slow-disk.js";

export type StorageKind = "lsm" | "memory";

/** Bugs planted on purpose, to show that the checkers catch them (test/sim). Never used otherwise. */
export type PlantedBug =
  /** The first node answers `store` (replication, read repair) and merges (anti-entropy) without storing. */
  | "drop-store"
  /**
   * The first node's anti-entropy trees miss every other change of its stored sets (a skipped tree
   * update): its trees no longer match its data.
   */
  | "skip-tree-update"
  /** Every coordinator ignores the client's context (versions each write as if blind). */
  | "ignore-context"
  /** LSM durability "none": a write is acknowledged before it is fsynced, so a crash loses it. */
  | "no-fsync"
  /**
   * A restart after a crash keeps the node's actor (LSM storage): a version the coordinator had sent to
   * other replicas but lost from its own disk could be named again by its next write of the key, but for
   * the node's counter, which starts above its durable lease (replication/dot-counter.ts).
   */
  | "keep-actor"
  /**
   * `keep-actor` and `counter-from-set` together: neither the actor renewal nor the node's counter keeps
   * the dots apart, and the next write of the key is named like the version lost from the disk.
   */
  | "keep-actor-and-counter"
  /** A forwarded write's copies are each coordinated (no memo of outcomes by request id). */
  | "no-forward-memo"
  /**
   * A forwarder takes every failure of a forwarded write for "never delivered" and tries the next
   * replica, though the first may have applied it (a timeout, a connection lost after sending).
   */
  | "retry-forward"
  /**
   * Hints acknowledged but never kept: a node asked to stand in for a replica (a `store` carrying
   * `hintFor`) answers `stored` and drops the set, so the replica it stood in for never gets the write
   * unless something else repairs it. (Injected at the node's door rather than in its engine: an engine
   * that drops the hints' puts leaves the HintStore counting hints it does not hold, so the run would
   * never settle and only the liveness check would see it.)
   */
  | "lose-hints"
  /**
   * Tombstones purged without the replicas' agreement: every node deletes, on its own, each key whose
   * set is only tombstones past the grace period (a replica that missed the delete may still hold an
   * older version, which then comes back).
   */
  | "purge-without-agreement"
  /**
   * Every node names a write with one above its actor's highest counter in the key's set (no node-wide
   * counter): a key purged and written again reuses the dots of its old versions (Riak's kv679).
   */
  | "counter-from-set";

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
  /** Sloppy quorum and hinted handoff (on unless false). */
  readonly hints?: boolean;
  /** Anti-entropy (on unless false). */
  readonly antiEntropy?: boolean;
  /** Read repair after reads (on unless false). */
  readonly readRepair?: boolean;
  /** Hinted handoff's window (default SIM_HINTS': 3 h). */
  readonly hintWindowMs?: number;
  /** Tombstone purging (absent: no sweeps, no heartbeat). */
  readonly tombstones?: { readonly graceMs: number; readonly pacing: TombstonePacing };
  /** Record every set each node's engine makes durable, by key and primary (`copies`; the hint check). */
  readonly watchCopies?: boolean;
  readonly bug?: PlantedBug;
}

export interface SimNode {
  readonly id: string;
  readonly address: string;
  /** The coordinating actor of the current incarnation (node.json's `actor`). */
  actor: string;
  core: NodeCore;
  storage: StorageEngine;
  /** The node's disk: its data directory, kept across crashes (what was synced survives). */
  readonly fs: MemoryFileSystem;
  /** The latency layer over `fs` of the current incarnation (LSM storage only). */
  disk: SlowDisk | undefined;
  /** The booted node of the current incarnation. */
  booted: BootedNode | undefined;
  /** How it answers peers now ("starting" until its boot serves its core's answers). */
  handler: RequestHandler;
  timers: TimerGroup;
  readonly clock: Clock;
  readonly transport: SimTransport;
  /**
   * "starting": a boot is under way (it takes virtual time: syncs are slow). "left": it left the cluster
   * (`leave`) and stopped, as `ringstore start` stops a node that left.
   */
  state: "up" | "crashed" | "starting" | "left";
  paused: boolean;
  /** Incarnations of this node (1 + restarts). */
  generation: number;
  /** Resolvers of callers waiting for the node to run (it is paused). */
  readonly waiting: (() => void)[];
}

const CLUSTER_ID = "sim";
const DATA_DIR = "/data";

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
  // The fixed seeds of test/sim were chosen under the memtable switch's timing without it.
  walAhead: false,
} as const;

/** Hinted handoff in the simulator: the defaults a node runs with, a window far past any run. */
export const SIM_HINTS = {
  limits: { windowMs: 3 * 60 * 60 * 1000, maxBytesPerTarget: 64 * 1024 * 1024 },
  deliveryBytesPerSecond: 16 * 1024 * 1024,
};

/** Anti-entropy in the simulator: exchanges often enough to matter within a run of a few seconds. */
const SIM_ANTI_ENTROPY = { intervalMs: 2000, pauseMs: 200, keysPerSecond: 10_000 };

/** How often, and how long apart, a joining node boots again when its join is not answered. */
const JOIN_ATTEMPTS = 200;
const JOIN_RETRY_MS = 500;

export class SimCluster {
  readonly nodes: SimNode[] = [];
  readonly byId = new Map<string, SimNode>();
  readonly readRepairs = { count: 0 };
  /** Tombstone copies purged, and purges a sweep held back by reason, all nodes and incarnations. */
  readonly tombstones = { purged: 0, refused: new Map<string, number>() };
  /** What the engines made durable for each primary (with `watchCopies`). */
  readonly copies: DurableCopies | undefined;
  /** Actors (incarnations) ended by a crash, and when (virtual time). */
  readonly crashedAt = new Map<string, number>();
  /** Each node's pauses (virtual time; `to` undefined while it lasts). */
  private readonly pauses = new Map<string, { from: number; to: number | undefined }[]>();
  private readonly cluster;

  constructor(
    readonly config: ClusterConfig,
    readonly sched: VirtualScheduler,
    readonly net: SimNetwork,
    /** Per node: clock offset (ms) and drift (a rate error), drawn by the caller from the seed. */
    readonly skew: readonly { readonly offsetMs: number; readonly drift: number }[],
    private readonly log: (line: string) => void,
  ) {
    this.copies = config.watchCopies === true ? new DurableCopies() : undefined;
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

  /**
   * Boots the node's current incarnation on its disk, as `ringstore start` does (`join`: --join seeds).
   * Its peers get "starting" errors until the core answers them.
   */
  private async boot(node: SimNode, join: readonly string[], forceRejoin = false): Promise<void> {
    const c = this.config;
    const random = derivedRandom(c.seed, `disk/${node.id}/${node.generation}`);
    node.disk = c.storage === "lsm" ? new SlowDisk(node.fs, node.timers, random) : undefined;
    const fs: FileSystem = node.disk ?? node.fs;
    const entropy = derivedRandom(c.seed, `entropy/${node.id}/${node.generation}`);
    const env: NodeEnv = {
      clock: node.clock,
      timers: node.timers,
      random: derivedRandom(c.seed, `node/${node.id}/${node.generation}`),
      fs,
      entropy: (n) => Uint8Array.from({ length: n }, () => Math.floor(entropy.next() * 256)),
    };
    let booted: BootedNode | undefined;
    node.booted = undefined;
    const durability: Durability = c.bug === "no-fsync" ? "none" : "fsync";
    booted = await bootNode(
      {
        nodeId: node.id,
        dataDir: DATA_DIR,
        join,
        settings: { n: c.n, r: c.r, w: c.w, partitions: c.partitions },
        explicit: { n: false, r: false, w: false },
        api: `api:${node.id}`,
        weight: 1,
        zone: undefined,
        gossipIntervalMs: c.gossipIntervalMs,
        downAfterMs: c.downAfterMs,
        requestTimeoutMs: c.requestTimeoutMs,
        maxSiblings: c.maxSiblings,
        ...(c.hints === false
          ? {}
          : {
              hinted: {
                ...SIM_HINTS,
                limits: { ...SIM_HINTS.limits, windowMs: c.hintWindowMs ?? SIM_HINTS.limits.windowMs },
              },
            }),
        ...(c.tombstones === undefined ? {} : { tombstones: { ...c.tombstones, purging: true } }),
        ...(c.antiEntropy === false ? {} : { antiEntropy: SIM_ANTI_ENTROPY }),
        ...(c.readRepair === false ? { readRepair: false } : {}),
        ...(forceRejoin ? { forceRejoin } : {}),
      },
      {
        env,
        transport: node.transport,
        serve: (handler) => {
          node.handler = handler;
        },
        openStorage: async (dir) => {
          const open = async () =>
            c.storage === "memory"
              ? new MemoryEngine()
              : LsmEngine.open({ dir, fs, options: { ...LSM_OPTIONS, durability } });
          const copies = this.copies;
          return copies === undefined ? open() : copies.watch(node.id, await open());
        },
        onLeft: () => {
          if (node.booted !== booted || node.state !== "up") return;
          node.state = "left";
          this.net.crash(node.address);
          node.timers.halt();
          void booted!.core.stop();
          this.log(`${node.id} left the cluster and stopped`);
        },
        onReadRepair: () => {
          this.readRepairs.count++;
        },
        tombstoneEvents: {
          onPurged: () => {
            this.tombstones.purged++;
          },
          onRefused: (reason) => {
            this.tombstones.refused.set(reason, (this.tombstones.refused.get(reason) ?? 0) + 1);
          },
        },
      },
    );
    node.booted = booted;
    const trees = booted.core.trees;
    if (this.config.bug === "skip-tree-update" && node === this.nodes[0] && trees !== undefined) {
      const begins = trees.writeBegins.bind(trees);
      let calls = 0;
      trees.writeBegins = (key, oldSet, newSet) =>
        ++calls % 2 === 0 ? undefined : begins(key, oldSet, newSet);
    }
    // The planted drop-store bug also keeps the node's own merges (anti-entropy's repairs) from storing.
    if (this.config.bug === "drop-store" && node === this.nodes[0]) {
      const replica = booted.core.replica;
      replica.mergeChanged = async (key, incoming) => ({
        set: merge(await replica.read(key), incoming),
        changed: false,
      });
    }
    if (this.config.bug === "counter-from-set" || this.config.bug === "keep-actor-and-counter")
      booted.core.replica.counters.next = (atLeast) => atLeast;
    if (this.config.bug === "purge-without-agreement" && c.tombstones !== undefined)
      purgeAlone(booted, node.timers, node.clock, c.tombstones.graceMs, c.tombstones.pacing.sweepIntervalMs);
    node.core = booted.core;
    node.storage = booted.storage;
    node.actor = booted.identity.actor;
  }

  /** A node's process before it boots: its disk, its address on the network, its clock and timers. */
  private newNode(id: string, clock: Clock): SimNode {
    const address = `sim:${id}`;
    let node: SimNode | undefined;
    const transport = this.net.transport({
      address,
      nodeId: id,
      clusterId: "",
      handler: (from, body) => this.dispatch(node!, from, body),
    });
    if (this.config.bug === "retry-forward") forgetMaybeDelivered(transport);
    node = {
      id,
      address,
      actor: "",
      core: undefined as unknown as NodeCore,
      storage: undefined as unknown as StorageEngine,
      fs: new MemoryFileSystem(),
      disk: undefined,
      booted: undefined,
      handler: starting,
      timers: this.sched.group(),
      clock,
      transport,
      state: "starting",
      paused: false,
      generation: 1,
      waiting: [],
    };
    return node;
  }

  /**
   * Starts the first nodes as a cluster a previous run formed: each one's node.json and members.json (all
   * of them up; the ring made by the first when it boots) are written to its disk, then it boots, the
   * others at seeded phases, as processes started one after the other.
   */
  async start(): Promise<void> {
    const ids = Array.from({ length: this.config.nodes }, (_, i) => SimCluster.idOf(i));
    const members = ids.map((id) => this.entry(id, "up", 1));
    const phase = derivedRandom(this.config.seed, "gossip-phase");
    const boots: Promise<void>[] = [];
    for (const [i, id] of ids.entries()) {
      const { offsetMs, drift } = this.skew[i] ?? { offsetMs: 0, drift: 0 };
      const node = this.newNode(id, skewedClock(this.sched, offsetMs, drift));
      this.nodes.push(node);
      this.byId.set(id, node);
      const dir = new DataDir(node.fs, DATA_DIR);
      await node.fs.mkdirp(DATA_DIR);
      await dir.writeIdentity({
        nodeId: id,
        actor: `${id}.${deriveSeed(this.config.seed, `actor/${id}/1`).toString(36)}`,
        ...this.cluster,
        createdAt: new Date(0).toISOString(),
      });
      const ring = i === 0 ? null : this.nodes[0]!.core.membership.ring;
      await dir.writeView({ members, ring });
      const up = async () => {
        await this.boot(node, []);
        node.state = "up";
      };
      if (i === 0) await up();
      else {
        const at = Math.floor(phase.next() * this.config.gossipIntervalMs);
        boots.push(new Promise<void>((resolve) => node.timers.after(at, resolve)).then(up));
      }
    }
    await Promise.all(boots);
  }

  private dispatch(node: SimNode, from: string, body: RequestBody): Promise<AnswerBody> {
    const answer = this.answer(node, from, body);
    const copies = this.copies;
    if (copies !== undefined && body.kind === "store")
      answer.then(
        () => copies.stored(node.id, body.key, body.set, body.hintFor),
        () => undefined,
      );
    return answer;
  }

  private answer(node: SimNode, from: string, body: RequestBody): Promise<AnswerBody> {
    const handler = node.handler;
    if (handler === starting) return handler(from, body);
    if (this.config.bug === "drop-store" && node === this.nodes[0] && body.kind === "store")
      return Promise.resolve({ kind: "stored" });
    if (
      this.config.bug === "lose-hints" &&
      body.kind === "store" &&
      body.hintFor !== undefined &&
      body.hintFor !== node.id
    )
      return Promise.resolve({ kind: "stored" });
    if (this.config.bug === "no-forward-memo" && body.kind === "coordinate")
      return node.core.router.coordinateForwarded(body);
    return handler(from, body);
  }

  // ------------------------------------------------------------------ faults

  crash(id: string, unsynced: "drop" | "torn" | "zeroed", random: () => number): void {
    const node = this.byId.get(id)!;
    if (node.state !== "up") throw new Error(`sim: ${id} is not up`);
    // A paused process can be killed too: nothing it held back runs (the network drops what it held,
    // halt() forgets its overdue timers), and callers waiting for it wait in vain.
    if (node.paused) this.endPause(id);
    node.paused = false;
    node.waiting.length = 0;
    node.state = "crashed";
    this.crashedAt.set(node.actor, this.sched.now());
    this.net.crash(node.address);
    node.timers.halt();
    node.booted?.views.halt();
    void node.core.stop();
    node.fs.crash({ unsynced, random });
    this.log(`crash ${id} (unsynced data: ${this.config.storage === "memory" ? "all lost" : unsynced})`);
  }

  /**
   * Restarts a crashed node from its (crashed) disk, as `ringstore start` on its data directory (with
   * --force-rejoin if `forceRejoin`).
   */
  async restart(id: string, forceRejoin = false): Promise<void> {
    const node = this.byId.get(id)!;
    if (node.state !== "crashed") throw new Error(`sim: ${id} is not crashed`);
    node.state = "starting";
    node.generation++;
    node.timers = this.sched.group();
    // The planted bug: the node believes its last stop was clean, so it keeps its actor.
    if (
      (this.config.bug === "keep-actor" || this.config.bug === "keep-actor-and-counter") &&
      this.config.storage === "lsm"
    ) {
      const marker = `${DATA_DIR}/running`;
      if (await node.fs.exists(marker)) await node.fs.unlink(marker);
    }
    node.handler = starting;
    this.net.restart(node.address, (from, body) => this.dispatch(node, from, body));
    try {
      await this.boot(node, [], forceRejoin);
    } catch (err) {
      if (err instanceof NodeLeftError) {
        // It had left (or heard it was removed) and crashed before it stopped: its start is refused, as
        // `ringstore start` refuses it, and it stays out of the cluster.
        node.state = "left";
        this.net.crash(node.address);
        node.timers.halt();
        this.log(`restart ${id} refused: it had left the cluster; it stays out`);
        return;
      }
      node.state = "crashed"; // it stays down; the nemesis reports the failed restart
      this.net.crash(node.address);
      node.timers.halt();
      throw err;
    }
    node.state = "up";
    this.log(`restart ${id} (generation ${node.generation}, actor ${node.actor})`);
  }
  pause(id: string): void {
    const node = this.byId.get(id)!;
    if (node.state !== "up" || node.paused) throw new Error(`sim: ${id} cannot be paused`);
    node.paused = true;
    const list = this.pauses.get(id) ?? [];
    list.push({ from: this.sched.now(), to: undefined });
    this.pauses.set(id, list);
    this.net.pause(node.address);
    node.timers.pause();
    this.log(`pause ${id}`);
  }

  resume(id: string): void {
    const node = this.byId.get(id)!;
    if (!node.paused) throw new Error(`sim: ${id} is not paused`);
    node.paused = false;
    this.endPause(id);
    this.log(`resume ${id}`);
    node.timers.resume();
    // Its overdue timers ran just now: one may have ended its leave (onLeft), and its address is gone.
    if (node.state !== "left") this.net.resume(node.address);
    for (const wake of node.waiting.splice(0)) wake();
  }

  private endPause(id: string): void {
    const last = this.pauses.get(id)?.at(-1);
    if (last !== undefined && last.to === undefined) last.to = this.sched.now();
  }

  /** How long the node was paused between `from` and `to` (virtual time). */
  pausedMs(id: string, from: number, to: number): number {
    let ms = 0;
    for (const p of this.pauses.get(id) ?? [])
      ms += Math.max(0, Math.min(to, p.to ?? to) - Math.max(from, p.from));
    return ms;
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

  /**
   * The nodes that have not left the cluster (nor marked themselves left, about to stop), but for an
   * orphan: a node removed while it was cut off, every member it knows of having left and stopped since.
   * Nobody can tell it that it was removed (the cluster it knew is gone); it stays unsure of its
   * membership (node/absences.ts), admitting nobody and handing nothing off, until an operator stops it.
   */
  members(): SimNode[] {
    return this.nodes.filter(
      (n) => n.state !== "left" && n.core.membership.self.status !== "left" && !this.orphaned(n),
    );
  }

  private orphaned(n: SimNode): boolean {
    const known = n.core.membership.view().filter((x) => x.id !== n.id && x.status !== "left");
    return (
      known.length > 0 &&
      known.every((x) => this.byId.get(x.id)?.state === "left") &&
      this.nodes.some((o) => o !== n && o.state === "up" && o.core.membership.member(n.id)?.status === "left")
    );
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
   * Converged, and quiet: every member is `up` (no join or leave under way), has no handoff pass running
   * or waiting to retry, and holds no hint still to deliver, so what is on each replica no longer moves
   * by itself.
   */
  settled(): boolean {
    return (
      this.converged() &&
      this.members().every(
        (n) =>
          n.core.membership.self.status === "up" &&
          n.core.handoff.progress.state === "idle" &&
          n.core.strays.straysInFlight === 0 &&
          (n.core.hints?.backlog().size ?? 0) === 0,
      )
    );
  }

  /** Every member's anti-entropy has, since `since`, exchanged with each co-replica and found it in sync. */
  antiEntropyInSync(since: number): boolean {
    return this.members().every((n) => n.core.antiEntropy?.inSyncSince(since) ?? true);
  }

  /**
   * A new node joins through `via` (or the next member up, if `via` does not admit it), as `ringstore
   * start --join` does: it asks to join, takes the view from the answer, and gossips as `joining` until a
   * ring is claimed with it. A boot whose join was not answered wrote nothing, so it is started again, as
   * an operator runs the command again with the same id (a request whose answer was lost has already
   * admitted the member; only this id can take the entry).
   */
  async join(id: string, via: string): Promise<SimNode> {
    if (this.byId.has(id)) throw new Error(`sim: ${id} exists`);
    const node = this.newNode(id, this.sched);
    for (let attempt = 1; ; attempt++) {
      // --join names `via` first, then the other members up: a member that refuses to admit it (or is
      // gone) sends the join on to the next, as an operator's list of seeds does.
      const others = this.members().filter((n) => n.id !== via && n.state === "up");
      try {
        await this.boot(
          node,
          [via, ...others.map((n) => n.id)].map((x) => `sim:${x}`),
        );
        break;
      } catch (err) {
        if (attempt >= JOIN_ATTEMPTS) throw err;
        await new Promise<void>((resolve) => this.sched.after(JOIN_RETRY_MS, resolve));
      }
    }
    node.state = "up";
    this.nodes.push(node);
    this.byId.set(id, node);
    this.log(`${id} joined through ${via}`);
    return node;
  }

  stop(): void {
    for (const node of this.nodes) {
      if (node.state === "left" || node.booted === undefined) continue;
      node.booted.views.halt();
      void node.core.stop();
      node.timers.halt();
    }
  }
}

/** A node's answer to peers while it boots. */
async function starting(_from: string, _body: RequestBody): Promise<AnswerBody> {
  throw Object.assign(new Error("node is starting"), { code: "ERR_STARTING" });
}

/**
 * The planted `purge-without-agreement` bug: besides its real sweeps, the node deletes on its own, every
 * `intervalMs`, each set of its that is only tombstones past the grace period, asking nobody.
 */
function purgeAlone(
  booted: BootedNode,
  timers: Timers,
  clock: Clock,
  graceMs: number,
  intervalMs: number,
): void {
  const replica = booted.core.replica;
  const sweep = async () => {
    let after: Uint8Array | undefined;
    for (;;) {
      const page = await replica.scan(after, 256, 1 << 20);
      if (page.length === 0) return;
      after = Buffer.from(page[page.length - 1]!.key);
      for (const e of page) {
        const set = decodeSiblings(e.value);
        if (pastGrace(set, clock.now(), graceMs)) await replica.purgeIfEqual(Buffer.from(e.key), set);
      }
    }
  };
  const tick = () =>
    timers.after(intervalMs, () => {
      void sweep().then(tick, tick);
    });
  tick();
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
