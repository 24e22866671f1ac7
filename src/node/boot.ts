/**
 * A node's start-up and clean stop over its environment: the same code for a real process (node.ts, with
 * the real disk, clock and TCP) and for every node of the simulator (src/sim/cluster.ts, with a memory
 * file system, virtual time and a simulated network).
 *
 * Start-up, in this order, so that a start refused for any reason leaves the data directory as it was:
 * 1. read the identity, the saved view and the running marker, and decide (start-plan.ts); choose the
 *    cluster key (cluster-key.ts: the file given, the data directory's, or a fresh one for a new
 *    cluster) and give it to the transport: refusals here write nothing;
 * 2. take the data directory's lock (a second node on the same directory is refused here);
 * 3. for a new node given --join, ask the cluster to admit it (refused if its members refuse the key);
 *    for a node with data, check that the peers given with --join belong to its cluster and that its
 *    peers take its key;
 * 4. only then write: a new cluster's key, the identity (new, joined, or with a renewed actor), the
 *    running marker and the heartbeat (alive.ts);
 * 5. open the storage engine and the node's dot counter (its lease, replication/dot-counter.ts), build
 *    the protocol core, answer peers, start gossip, handoff and the tombstone sweeps, save the view.
 * The caller binds its ports (peer, API) before calling, so a port in use also refuses the start before
 * anything is written.
 */
import { PartitionTree } from "../anti-entropy/tree.js";
import { TreeSet } from "../anti-entropy/tree-set.js";
import { forgetTrees, loadTrees, saveTrees } from "../anti-entropy/tree-store.js";
import { DotCounter } from "../replication/dot-counter.js";
import { type HintLimits, HintStore, type HintStoreEvents } from "../replication/hints.js";
import type { TombstonePacing } from "../replication/tombstones.js";
import { partitionOf } from "../ring/ring.js";
import type { Runtime } from "../runtime/runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import type { FileSystem } from "../storage/fs/file-system.js";
import type { MemberView } from "../transport/messages.js";
import type { PeerKeys } from "../transport/peer-keys.js";
import type { RequestHandler, Transport } from "../transport/transport.js";
import { AliveBeat } from "./alive.js";
import { type ClusterKeyChoice, chooseClusterKey, peerKeysOf } from "./cluster-key.js";
import { DataDir } from "./data-dir.js";
import { type Entropy, type NodeIdentity, newIdentity, renewActor } from "./identity.js";
import { checkJoinTargets, checkKeyAccepted, joinVia, type KeySource } from "./join.js";
import { NodeCore, type NodeCoreDeps } from "./node-core.js";
import { Recovery, type RecoveryStatus } from "./recovery.js";
import type { SavedView } from "./saved-view.js";
import { planSelf, planStart } from "./start-plan.js";
import { ViewSaver } from "./view-saver.js";
import { startingWeight } from "./weight-file.js";

/** Everything a node reaches the world through. */
export interface NodeEnv extends Runtime {
  readonly fs: FileSystem;
  readonly entropy: Entropy;
}

export interface BootConfig {
  readonly nodeId: string;
  readonly dataDir: string;
  /** Peer addresses given with --join. */
  readonly join: readonly string[];
  /** N, R, W and Q for a new cluster (a joiner takes the cluster's). */
  readonly settings: {
    readonly n: number;
    readonly r: number;
    readonly w: number;
    readonly partitions: number;
  };
  readonly explicit: { readonly n: boolean; readonly r: boolean; readonly w: boolean };
  /** The addresses this node gossips (as bound), its weight and zone. */
  readonly api: string;
  readonly weight: number;
  readonly zone: string | undefined;
  readonly gossipIntervalMs: number;
  readonly downAfterMs: number;
  readonly requestTimeoutMs: number;
  readonly maxSiblings: number;
  /** The handoff's throttle, bytes per second. */
  readonly handoffBytesPerSecond?: number;
  /** Read repair after reads (on unless false: the simulator's hint check turns it off). */
  readonly readRepair?: boolean;
  /** Anti-entropy (absent: off). */
  readonly antiEntropy?: {
    readonly intervalMs: number;
    readonly pauseMs: number;
    readonly keysPerSecond: number;
  };
  /** Sloppy quorum and hinted handoff (absent: strict quorums, no hints). */
  readonly hinted?: {
    readonly limits: HintLimits;
    readonly deliveryBytesPerSecond: number;
  };
  /**
   * Tombstones (replication/tombstones.ts): the grace period, whether to purge, the pacing. With it the
   * node also keeps its heartbeat on disk, and a start after longer away than the grace period is refused
   * unless `forceRejoin` (start-plan.ts). Absent: no sweeps, no heartbeat, no such check.
   */
  readonly tombstones?: {
    readonly graceMs: number;
    readonly purging: boolean;
    readonly pacing?: TombstonePacing;
  };
  /** Start a node away longer than the grace period with its data (--force-rejoin). */
  readonly forceRejoin?: boolean;
}

/** How often the heartbeat is written: a tenth of the grace period, within [100 ms, 1 min]. */
export function aliveIntervalMs(graceMs: number): number {
  return Math.min(60_000, Math.max(100, Math.floor(graceMs / 10)));
}

export interface BootDeps {
  readonly env: NodeEnv;
  /** The peer transport, bound; requests to it are refused until `serve` gives it the node's handler. */
  readonly transport: Transport;
  readonly serve: (handler: RequestHandler) => void;
  /** Opens the storage engine in `dir`. */
  readonly openStorage: (dir: string) => Promise<StorageEngine>;
  /**
   * The cluster key, when the transport authenticates peers with one (a real node; the simulator's
   * network needs none): the file given with --cluster-key-file (undefined: the data directory's), and
   * the transport that takes the keys.
   */
  readonly clusterKey?: {
    readonly file: string | undefined;
    readonly use: (keys: PeerKeys) => void;
  };
  readonly onReadRepair?: (nodeId: string) => void;
  readonly onReplicaTimeout?: (op: "read" | "store") => void;
  readonly onLeft?: (how: "left" | "removed") => void;
  /** Every change of the membership view, with its cause. */
  readonly onMembershipEvent?: NodeCoreDeps["onMembershipEvent"];
  /** A background save of the view failed (it is retried). */
  readonly onViewSaveError?: (err: Error) => void;
  /** A replaced disk was refilled by anti-entropy (recovery.ts). */
  readonly onRecovered?: (status: RecoveryStatus) => void;
  /** Removing the data directory's `recovering` mark failed (tried again). */
  readonly onRecoveryError?: (err: Error) => void;
  /** Anti-entropy's events, for the metrics. */
  readonly antiEntropyEvents?: Pick<
    NonNullable<NodeCoreDeps["antiEntropy"]>,
    "onRepaired" | "onExchange" | "onRebuild"
  >;
  /** Tombstone purging's events, for the metrics. */
  readonly tombstoneEvents?: Pick<NonNullable<NodeCoreDeps["tombstones"]>, "onPurged" | "onRefused">;
  /** Hinted handoff's events, for the metrics. */
  readonly hintEvents?: Pick<
    NonNullable<NodeCoreDeps["hinted"]>,
    "onLateHint" | "onDelivered" | "onDropped"
  > &
    HintStoreEvents;
}

export interface BootedNode {
  readonly identity: NodeIdentity;
  /** This start created a new cluster. */
  readonly created: boolean;
  /** This start joined a cluster (a new node given --join, admitted by a member). */
  readonly joined: boolean;
  readonly core: NodeCore;
  readonly storage: StorageEngine;
  readonly views: ViewSaver;
  readonly dataDir: DataDir;
  /** The node was forced back (--force-rejoin) after this long away, past the grace period. */
  readonly forcedBackAfterMs: number | undefined;
  /**
   * The cluster key file in use and the keys read from it (undefined without `clusterKey`); `fresh`:
   * this start made the key (a new cluster) and wrote the file.
   */
  /** A replaced disk being refilled by anti-entropy (undefined: none, or anti-entropy is off). */
  readonly recovery: Recovery | undefined;
  readonly clusterKey:
    | { readonly path: string; readonly keys: PeerKeys; readonly fresh: boolean }
    | undefined;
  /**
   * A clean stop: gossip and handoff stop, the view is saved, every versioned set is stored (or failed),
   * the engine closes, and the running marker goes (unless a write failed: the next start then renews the
   * actor, as after a crash); then the lock is released. Calls after the first return the same promise.
   */
  stop(): Promise<void>;
}

export async function bootNode(config: BootConfig, deps: BootDeps): Promise<BootedNode> {
  const { env, transport } = deps;
  const dir = new DataDir(env.fs, config.dataDir);
  const found = await dir.readIdentity();
  const saved = await dir.readView();
  const tomb = config.tombstones;
  const alive = tomb === undefined ? undefined : await dir.readAlive();
  const plan = planStart({
    nodeId: config.nodeId,
    dataDir: config.dataDir,
    join: config.join,
    settings: config.settings,
    explicit: config.explicit,
    identity: found,
    saved,
    uncleanStop: await dir.uncleanStop(),
    away:
      tomb === undefined
        ? undefined
        : {
            lastAliveAtMs: alive?.atMs,
            nowMs: env.clock.now(),
            graceMs: tomb.graceMs,
            force: config.forceRejoin === true,
          },
  });
  let key: ClusterKeyChoice | undefined;
  let keySource: KeySource | undefined;
  let keys: PeerKeys | undefined;
  if (deps.clusterKey !== undefined) {
    key = await chooseClusterKey(dir, deps.clusterKey.file, plan, config.nodeId, env.entropy);
    keys = peerKeysOf(key.keys);
    keySource = { path: key.path, id: keys.current.id };
    deps.clusterKey.use(keys);
  }
  const release = await dir.lock(env.timers);
  let storage: StorageEngine | undefined;
  let core: NodeCore | undefined;
  let beat: AliveBeat | undefined;
  try {
    // A weight set online (cluster weight) outlives a restart with the same --weight.
    const savedWeight = await dir.readWeight();
    const weight = startingWeight(config.weight, savedWeight);
    if (savedWeight !== undefined && savedWeight.flag !== config.weight) await dir.forgetWeight();
    const selfEntry = (
      status: MemberView["status"],
      incarnation: number,
      leaveApprovedBy?: string,
    ): MemberView => ({
      id: config.nodeId,
      api: config.api,
      peer: transport.address,
      weight,
      zone: config.zone,
      status,
      incarnation,
      heartbeat: 0,
      ...(leaveApprovedBy === undefined ? {} : { leaveApprovedBy }),
    });
    let identity: NodeIdentity;
    let view: SavedView | undefined = saved;
    let write = true;
    // A replaced disk (recovery.ts): when it began to be refilled, if it still is.
    let recoveringSince: number | undefined;
    switch (plan.kind) {
      case "create":
        identity = newIdentity(config.nodeId, undefined, config.settings, env.entropy, env.clock.now());
        break;
      case "join": {
        const answer = await joinVia(transport, plan.seeds, selfEntry("joining", 0), keySource);
        identity = newIdentity(
          config.nodeId,
          {
            clusterId: answer.clusterId,
            clusterSecret: answer.secret,
            n: answer.n,
            r: answer.r,
            w: answer.w,
            partitions: answer.ring?.partitions ?? config.settings.partitions,
          },
          config.settings,
          env.entropy,
          env.clock.now(),
        );
        view = { members: [...answer.members], ring: answer.ring };
        // The cluster knows this id already: the node's disk was replaced (or wiped); anti-entropy
        // refills it, under the fresh actor just made.
        if (answer.members.some((m) => m.id === config.nodeId && m.status !== "left"))
          recoveringSince = env.clock.now();
        break;
      }
      case "rejoin": {
        // The handshake names our cluster, so that a peer of another cluster refuses us.
        transport.setCluster(plan.identity.clusterId);
        const answered =
          plan.checkSeeds.length > 0 &&
          (await checkJoinTargets(transport, plan.checkSeeds, config.dataDir, plan.identity.clusterId));
        if (keySource !== undefined && !answered)
          await checkKeyAccepted(
            transport,
            (saved?.members ?? [])
              .filter((m) => m.id !== config.nodeId && m.status !== "left")
              .map((m) => m.peer),
            plan.identity.clusterId,
            keySource,
          );
        identity = plan.renewActor ? renewActor(plan.identity, env.entropy) : plan.identity;
        write = plan.renewActor;
        recoveringSince = await dir.readRecovering();
        break;
      }
    }
    if (key?.fresh === true) await dir.writeClusterKey(key.keys);
    if (write) await dir.writeIdentity(identity);
    if (plan.kind === "join" && recoveringSince !== undefined) await dir.writeRecovering(recoveringSince);
    await dir.markRunning();
    // A node that never wrote a heartbeat (new, or from before it existed) starts in contact.
    const lastContactAtMs = alive?.contactMs ?? env.clock.now();
    if (tomb !== undefined) await dir.writeAlive({ atMs: env.clock.now(), contactMs: lastContactAtMs });
    transport.setCluster(identity.clusterId);
    storage = await deps.openStorage(dir.storageDir);
    const counters = await DotCounter.open(storage);
    let antiEntropy: NodeCoreDeps["antiEntropy"];
    if (config.antiEntropy !== undefined) {
      const q = identity.partitions;
      const trees = new TreeSet((key) => partitionOf(key, q));
      const all = Array.from({ length: q }, (_, p) => p);
      let rebuild: number[] = [];
      if (plan.kind !== "rejoin") {
        // A new node holds no data yet: its trees are empty.
        for (const p of all) trees.adopt(new PartitionTree(p));
      } else {
        const loaded = await loadTrees(storage);
        if (loaded.trees !== undefined && loaded.trees.length === q)
          for (const t of loaded.trees) trees.adopt(t);
        else rebuild = all;
      }
      antiEntropy = { trees, rebuild, ...config.antiEntropy, ...deps.antiEntropyEvents };
    } else if (plan.kind === "rejoin") {
      // This run's writes will not reach the trees saved at the last stop: the next start with
      // anti-entropy on must rebuild them rather than load them.
      await forgetTrees(storage);
    }
    let hints: HintStore | undefined;
    if (config.hinted !== undefined) {
      hints = new HintStore(storage, env.clock, config.hinted.limits, {
        onStored: deps.hintEvents?.onStored,
        onDropped: deps.hintEvents?.onDropped,
      });
      await hints.load();
    }

    const self = planSelf(config.nodeId, view, plan.kind === "create", config.join);
    const views = new ViewSaver(
      () => core!.viewToSave(),
      (v) => dir.writeView(v),
      env.timers,
      deps.onViewSaveError,
    );
    core = new NodeCore({
      nodeId: config.nodeId,
      actor: identity.actor,
      cluster: identity,
      transport,
      storage,
      clock: env.clock,
      timers: env.timers,
      random: env.random,
      self: selfEntry(self.status, self.incarnation, self.leaveApprovedBy),
      view,
      bootstrapRing: self.bootstrapRing,
      gossipIntervalMs: config.gossipIntervalMs,
      downAfterMs: config.downAfterMs,
      requestTimeoutMs: config.requestTimeoutMs,
      maxSiblings: config.maxSiblings,
      handoffBytesPerSecond: config.handoffBytesPerSecond,
      handedOff: saved?.handedOff,
      views,
      antiEntropy,
      hinted:
        hints === undefined || config.hinted === undefined
          ? undefined
          : {
              hints,
              deliveryBytesPerSecond: config.hinted.deliveryBytesPerSecond,
              entropy: env.entropy,
              onLateHint: deps.hintEvents?.onLateHint,
              onDelivered: deps.hintEvents?.onDelivered,
              onDropped: deps.hintEvents?.onDropped,
            },
      counters,
      tombstones: tomb === undefined ? undefined : { ...tomb, lastContactAtMs, ...deps.tombstoneEvents },
      readRepair: config.readRepair,
      onReadRepair: deps.onReadRepair,
      onReplicaTimeout: deps.onReplicaTimeout,
      onLeft: deps.onLeft,
      onMembershipEvent: deps.onMembershipEvent,
    });
    deps.serve(core.dispatch);
    core.start();
    const ae = core.antiEntropy;
    const recovery =
      recoveringSince === undefined || ae === undefined
        ? undefined
        : new Recovery({
            clock: env.clock,
            timers: env.timers,
            sinceMs: recoveringSince,
            lastFullSweepAt: () => ae.lastFullSweepAt(),
            clear: () => dir.clearRecovering(),
            onDone: deps.onRecovered,
            onError: deps.onRecoveryError,
          });
    recovery?.start();
    beat =
      tomb === undefined
        ? undefined
        : new AliveBeat(
            () => dir.writeAlive({ atMs: env.clock.now(), contactMs: core!.lastContactAtMs }),
            env.timers,
            aliveIntervalMs(tomb.graceMs),
          );
    beat?.start();
    const heartbeat = beat;
    await views.persist();

    const engine = storage;
    const booted = core;
    let stopping: Promise<void> | undefined;
    return {
      identity,
      created: plan.kind === "create",
      joined: plan.kind === "join",
      core: booted,
      storage: engine,
      views,
      dataDir: dir,
      forcedBackAfterMs: plan.kind === "rejoin" ? plan.forcedBackAfterMs : undefined,
      recovery,
      clusterKey:
        key === undefined || keys === undefined ? undefined : { path: key.path, keys, fresh: key.fresh },
      stop: () => {
        stopping ??= runAll([
          async () => recovery?.stop(),
          () => booted.stop(),
          async () => {
            if (heartbeat === undefined) return;
            await heartbeat.stop();
            await dir.writeAlive({ atMs: env.clock.now(), contactMs: booted.lastContactAtMs });
          },
          () => views.flush(),
          async () => {
            // Version nothing more, and let every versioned set reach the disk (or fail) before the engine
            // closes: the stop is clean only if every version this node sent to others is durable here.
            await booted.replica.close();
            // Anti-entropy's trees, saved only if they match the data (every partition's tree is whole).
            const trees = antiEntropy?.trees;
            if (
              trees !== undefined &&
              booted.replica.writeFailure === undefined &&
              engine.failure === undefined
            ) {
              const whole = Array.from({ length: identity.partitions }, (_, p) => trees.tree(p));
              if (whole.every((t) => t !== undefined)) await saveTrees(engine, whole);
            }
            await engine.close();
            if (booted.replica.writeFailure === undefined && engine.failure === undefined)
              await dir.markStopped();
          },
          release,
        ]);
        return stopping;
      },
    };
  } catch (err) {
    await runAll([
      async () => core?.stop(),
      async () => beat?.stop(),
      async () => storage?.close(),
      release,
    ]).catch(() => undefined);
    throw err;
  }
}

/** Runs every step in order; throws the first error after trying them all. */
export async function runAll(steps: readonly (() => Promise<unknown>)[]): Promise<void> {
  let first: unknown;
  for (const s of steps) {
    try {
      await s();
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}
