/**
 * The composition root of a real node: the system's clock, timers, disk and CSPRNG, the TCP transport and
 * the HTTP API, around the start-up that boot.ts shares with the simulator.
 *
 * Data directory layout: data-dir.ts.
 */
import { randomBytes, randomInt } from "node:crypto";
import { statSync } from "node:fs";
import * as path from "node:path";
import type { AntiEntropy } from "../anti-entropy/service.js";
import { checkSecretFileMode, loadApiSecurity } from "../api/api-security.js";
import { Dashboard } from "../api/dashboard.js";
import { createApi, type MembershipOutcome, serveApi } from "../api/http-api.js";
import { NodeMetrics } from "../api/metrics.js";
import {
  type AntiEntropyStatus,
  hintedHandoffDocument,
  type JoinStatus,
  memberState,
  ringDocument,
  type StatusDocument,
  statusDocument,
  type TombstoneStatus,
} from "../api/views.js";
import { EventLog } from "../core/event-log.js";
import { DEFAULT_TOMBSTONE_PACING, type TombstoneReaper } from "../replication/tombstones.js";
import { PlanError } from "../ring/plan.js";
import { partitionOf } from "../ring/ring.js";
import { BoundedLog } from "../runtime/bounded-log.js";
import { seededRandom } from "../runtime/runtime.js";
import { systemRuntime } from "../runtime/system-runtime.js";
import { workerCompactionExecutor } from "../storage/compaction-worker.js";
import type { StorageEngine } from "../storage/engine.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import { TcpTransport } from "../transport/tcp-transport.js";
import type { RequestHandler } from "../transport/transport.js";
import { MAX_CONTEXT_TOKEN_CHARS } from "../versioning/context-token.js";
import { type BootedNode, bootNode, type NodeEnv, runAll } from "./boot.js";
import { watchClusterKey } from "./cluster-key.js";
import { ConfigError, formatHostPort, type HostPort, type NodeConfig } from "./config.js";
import { MembershipRefusedError } from "./departures.js";
import type { NodeIdentity } from "./identity.js";
import { JoinFollower, type JoinProgress } from "./join-follower.js";
import type { Census } from "./key-listing.js";
import type { NodeCore } from "./node-core.js";
import {
  createNodeLogger,
  EventTally,
  HandoffWatch,
  HINTS_DELIVERED,
  HINTS_DROPPED,
  JoinWatch,
  logExchange,
  logRebuild,
  type NodeLogger,
  TOMBSTONES_KEPT,
  TOMBSTONES_PURGED,
} from "./node-log.js";
import type { RecoveryStatus } from "./recovery.js";

/** The pause between an anti-entropy exchange's two looks (Riak pauses about a second). */
const ANTI_ENTROPY_PAUSE_MS = 1000;
/** The first census of the keys stored here comes this long after the start, then one every interval. */
const CENSUS_FIRST_MS = 3000;
/** Between two censuses: at least this, and at least 20 times the last one's length (so at most 5% busy). */
const CENSUS_INTERVAL_MS = 30_000;
/** The most hints looked at (per target, and in all) to mark their partitions on the dashboard. */
const HINT_LOOK_PER_TARGET = 1000;
const HINT_LOOK_TARGETS = 8;

/**
 * The wait between two tombstone sweeps: a tenth of the grace period, within [100 ms, 10 min] (a
 * tombstone is purged within about grace + this, once every replica agrees).
 */
export function tombstoneSweepIntervalMs(graceMs: number): number {
  return Math.min(600_000, Math.max(100, Math.floor(graceMs / 10)));
}

export interface RunningNode {
  readonly id: string;
  readonly identity: NodeIdentity;
  /** The addresses actually bound (port 0 resolved). */
  readonly api: HostPort;
  readonly peer: HostPort;
  readonly createdCluster: boolean;
  /** The node's recent cluster events (the dashboard's): others may record into it. */
  readonly events: EventLog;
  /** Forced back (--force-rejoin) after this long away, past the tombstone grace period. */
  readonly forcedBackAfterMs: number | undefined;
  /** The cluster key file in use (undefined: peer traffic in plaintext), and whether this start wrote it. */
  readonly clusterKey: { readonly path: string; readonly created: boolean } | undefined;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Which of n, r, w the user set explicitly (checked against an existing cluster's settings). */
  readonly explicit?: { n: boolean; r: boolean; w: boolean };
  /**
   * The node is out of its cluster: it left (`cluster leave`, everything handed off), or it heard that an
   * operator removed it (`cluster remove`). The caller stops it.
   */
  readonly onLeft?: (how: "left" | "removed") => void;
  /** Where the node logs (node-log.ts); default: JSON lines on stdout at level info. */
  readonly log?: NodeLogger;
  /**
   * A node that joins in this start follows the handoff its join started (join-follower.ts): its figures
   * after every look, the last with state done or given_up (the node logs them too, JoinWatch).
   */
  readonly onJoinProgress?: (p: JoinProgress) => void;
}

/** The real environment: system clock and timers, the disk, a CSPRNG for identities. */
export function systemEnv(): NodeEnv {
  const rt = systemRuntime();
  return {
    ...rt,
    random: seededRandom(randomInt(0x7fffffff)),
    fs: new NodeFileSystem(),
    entropy: (n) => randomBytes(n),
  };
}

export async function startNode(config: NodeConfig, options: StartOptions = {}): Promise<RunningNode> {
  const env = systemEnv();
  const now = () => env.clock.now();
  const log = options.log ?? createNodeLogger({ id: config.id, level: "info" });
  const warn = (m: string) => log.warn(m);
  // A key file that every user of the machine may read is refused before anything starts.
  if (config.peerEncryption && config.clusterKeyFile !== undefined) {
    let mode: number | undefined;
    try {
      mode = statSync(config.clusterKeyFile).mode;
    } catch {
      mode = undefined; // missing: the start says so with the sentence of cluster-key.ts
    }
    if (mode !== undefined)
      try {
        checkSecretFileMode(config.clusterKeyFile, mode, warn);
      } catch (err) {
        throw new ConfigError((err as Error).message);
      }
  }

  // Requests arrive as soon as the peer port listens; until the node is assembled they are refused.
  let dispatch: RequestHandler = async () => {
    throw Object.assign(new Error("node is starting"), { code: "ERR_STARTING" });
  };
  const transport = await TcpTransport.listen({
    host: config.peer.host,
    port: config.peer.port,
    nodeId: config.id,
    clusterId: "",
    handler: (from, body, leftMs) => dispatch(from, body, leftMs),
    timers: env.timers,
    clock: env.clock,
    security: config.peerEncryption ? "tls" : "plaintext",
    // Refused peers (no key, another key, bytes that are not the protocol), bounded per address there.
    log: (m) => log.warn({ event: "peer" }, m),
  });
  const peerBound = {
    host: config.peer.host,
    port: Number(transport.address.slice(transport.address.lastIndexOf(":") + 1)),
  };
  const cleanup: (() => Promise<unknown>)[] = [() => transport.close()];
  try {
    // The API's port is bound before anything is written too; it answers 503 `starting` until served.
    let engine: StorageEngine | undefined;
    let backlog: () => ReadonlyMap<string, { count: number; bytes: number }> = () => new Map();
    let lastSweep: () => number | null = () => null;
    let tombstonesHeld: () => number | null = () => null;
    const metrics = new NodeMetrics(
      () => engine!.stats(),
      { node: config.id },
      () => backlog(),
      () => lastSweep(),
      now,
      true,
      () => tombstonesHeld(),
    );
    const events = new EventLog();
    /** Partitions in which the last anti-entropy exchange found keys differing (until the next one). */
    let aeDiffering: readonly number[] = [];
    /** Q, once the node knows its cluster's. */
    let ringPartitions = 0;
    metrics.watchPeers(() => transport.counters);
    const claims = new BoundedLog({
      clock: env.clock,
      timers: env.timers,
      write: (line) => log.warn({ event: "membership" }, line),
      summary: (n) => `membership: ignored ${n} more claim(s)`,
    });
    cleanup.push(async () => claims.close());
    // Hints delivered and dropped, tombstones purged: counted, one line per kind and key per window.
    const tally = new EventTally(log, env.timers);
    cleanup.push(async () => tally.close());
    // The API's TLS and token files: one that cannot be used stops the start before anything is written.
    const security = await loadApiSecurity({
      tls: config.apiTls,
      authFile: config.apiAuthFile,
      warn,
      onReload: (f) => log.info({ event: "security", file: f }, `${f} changed: now in use`),
    });
    const app = createApi({
      maxKeyBytes: config.maxKeyBytes,
      maxValueBytes: config.maxValueBytes,
      metrics,
      limits: config.apiLimits,
      security,
    });
    cleanup.unshift(() => app.close());
    const apiBound: HostPort = {
      host: config.api.host,
      port: await app.listen(config.api.host, config.api.port),
    };
    const node: BootedNode = await bootNode(
      {
        nodeId: config.id,
        dataDir: config.dataDir,
        join: config.join.map(formatHostPort),
        settings: { n: config.n, r: config.r, w: config.w, partitions: config.partitions },
        explicit: options.explicit ?? { n: false, r: false, w: false },
        api: formatHostPort(apiBound),
        weight: config.weight,
        zone: config.zone,
        gossipIntervalMs: config.gossipIntervalMs,
        downAfterMs: config.downAfterMs,
        requestTimeoutMs: config.requestTimeoutMs,
        maxSiblings: config.maxSiblings,
        handoffBytesPerSecond: config.handoffBytesPerSecond,
        ...(config.antiEntropy
          ? {
              antiEntropy: {
                intervalMs: config.antiEntropyIntervalMs,
                pauseMs: ANTI_ENTROPY_PAUSE_MS,
                keysPerSecond: config.antiEntropyKeysPerSec,
              },
            }
          : {}),
        tombstones: {
          graceMs: config.tombstoneGraceMs,
          purging: config.tombstonePurge,
          pacing: {
            ...DEFAULT_TOMBSTONE_PACING,
            sweepIntervalMs: tombstoneSweepIntervalMs(config.tombstoneGraceMs),
          },
        },
        forceRejoin: config.forceRejoin,
        ...(config.hintedHandoff
          ? {
              hinted: {
                limits: { windowMs: config.hintWindowMs, maxBytesPerTarget: config.hintMaxBytes },
                deliveryBytesPerSecond: config.hintRateBytesPerSec,
              },
            }
          : {}),
      },
      {
        env,
        transport,
        serve: (handler) => {
          dispatch = handler;
        },
        ...(config.peerEncryption
          ? { clusterKey: { file: config.clusterKeyFile, use: (keys) => transport.setKeys(keys) } }
          : {}),
        openStorage: (dir) =>
          LsmEngine.open(
            {
              dir,
              fs: env.fs,
              timers: env.timers,
              // A node's event loop serves peers as well as its own clients: a group commit's fdatasync
              // runs in the thread pool so that the loop keeps parsing requests and answering other
              // replicas meanwhile (docs/performance.md, "WAL sync in a cluster node").
              options: {
                durability: config.durability,
                walSyncOnEventLoop: false,
                ...(config.memoryBudgetBytes > 0 ? { memoryBudgetBytes: config.memoryBudgetBytes } : {}),
              },
              compactor: workerCompactionExecutor(),
            },
            now,
          ),
        onReadRepair: () => metrics.readRepairs.inc(),
        onReplicaTimeout: (op) => metrics.replicaRequestTimeouts.inc({ op }),
        onLeft: (how) => options.onLeft?.(how),
        // One line per change, on stdout; claims ignored (or refuted) go to stderr, bounded per sender, as
        // a member that keeps making them must not flood the log.
        onMembershipEvent: (e) => {
          if (e.change === "ignored" || e.change === "refuted")
            claims.note(e.sender ?? "?", `membership: ${e.text}`);
          // Unsure of its own membership, the node admits nobody and hands nothing off: a warning.
          else
            log[e.change === "unsure" ? "warn" : "info"](
              {
                event: "membership",
                change: e.change,
                member: e.member,
                ...(e.sender ? { sender: e.sender } : {}),
              },
              `membership: ${e.text}`,
            );
        },
        antiEntropyEvents: {
          onRepaired: () => metrics.antiEntropyKeysRepaired.inc(),
          onExchange: (r) => {
            logExchange(log, r);
            metrics.antiEntropyExchanges.inc({ outcome: r.outcome });
            metrics.antiEntropyDifferingSegments.inc(r.confirmedSegments);
            const q = ringPartitions;
            if (q > 0)
              aeDiffering = [...new Set(r.keys.map((k) => partitionOf(k.key, q)))].sort((a, b) => a - b);
          },
          onRebuild: (r) => {
            logRebuild(log, r);
            metrics.antiEntropyRebuilds.inc({ outcome: r.outcome });
          },
        },
        tombstoneEvents: {
          onPurged: () => {
            tally.note(TOMBSTONES_PURGED, "purged");
            metrics.tombstonesPurged.inc();
          },
          onRefused: (reason) => {
            tally.note(TOMBSTONES_KEPT, reason);
            metrics.tombstonesRefused.inc({ reason });
          },
        },
        hintEvents: {
          onStored: () => metrics.hintsStored.inc(),
          onDelivered: (target, bytes) => {
            tally.note(HINTS_DELIVERED, target, bytes);
            metrics.hintsDelivered.inc();
            metrics.hintsDeliveredBytes.inc(bytes);
          },
          onDropped: (target, reason) => {
            tally.note(HINTS_DROPPED[reason], target);
            metrics.hintsDropped.inc({ reason });
          },
          // A late hint refused at the bound is counted by the store (full).
          onLateHint: (outcome) => {
            if (outcome === "overloaded" || outcome === "failed")
              metrics.hintsDropped.inc({ reason: outcome });
          },
        },
        onViewSaveError: (err) =>
          log.error(
            { event: "storage", err: err.message },
            `saving the view failed (retrying): ${err.message}`,
          ),
        onRecovered: (s) =>
          log.info(
            { event: "recovered", ms: Math.round((s.doneAt ?? s.since) - s.since) },
            "recovered: anti-entropy swept every co-replica in full since this node's data directory was found replaced",
          ),
        onRecoveryError: (err) =>
          log.error(
            { event: "storage", err: err.message },
            `removing the recovering mark failed (retrying): ${err.message}`,
          ),
      },
    );
    // Stopping: the API first (no new requests), then the node, then the peer port.
    cleanup.splice(1, 0, () => node.stop());
    // A rotation edits the key file; the node takes the change without a restart.
    const key = node.clusterKey;
    if (key !== undefined) {
      const unwatch = watchClusterKey({
        fs: env.fs,
        timers: env.timers,
        file: key.path,
        keys: key.keys,
        onChange: (keys, line) => {
          transport.setKeys(keys);
          log.info({ event: "security" }, line);
        },
        onError: warn,
      });
      cleanup.unshift(async () => unwatch());
    }
    const { identity: id, core, storage } = node;
    ringPartitions = id.partitions;
    const membership = core.membership;
    engine = storage;
    const hints = core.hints;
    if (hints !== undefined) backlog = () => hints.backlog();
    const ae = core.antiEntropy;
    if (ae !== undefined) lastSweep = () => ae.lastFullSweepAt();
    const reaper = core.tombstones;
    if (reaper !== undefined) tombstonesHeld = () => reaper.stats.held;
    // A node that joined now follows the handoff its join started on every member, to its end.
    let follower: JoinFollower | undefined;
    if (node.joined) {
      const watch = new JoinWatch();
      follower = new JoinFollower({
        selfId: config.id,
        membership,
        transport,
        clock: env.clock,
        timers: env.timers,
        ownFigures: () => core.handoffFigures(),
        received: () => core.handoffReceived,
        onChange: (p) => {
          const l = watch.look(p, now());
          if (l !== undefined) log[l.level](l.fields, l.msg);
          options.onJoinProgress?.(p);
        },
      });
      const f = follower;
      cleanup.splice(1, 0, async () => f.stop());
    }
    const status = async (): Promise<StatusDocument> => {
      const t = now();
      return statusDocument({
        node: {
          id: config.id,
          actor: id.actor,
          api: formatHostPort(apiBound),
          peer: transport.address,
          dataDir: path.resolve(config.dataDir),
          weight: membership.self.weight,
          zone: config.zone ?? null,
        },
        cluster: { id: id.clusterId, n: id.n, r: id.r, w: id.w, partitions: id.partitions },
        ring: membership.ring,
        members: membership.view(),
        liveness: (mid) => membership.liveness(mid, t),
        partitions: core.placement.partitionsHeld(),
        handoff: core.handoff.progress,
        ...(follower === undefined ? {} : { join: joinStatus(follower.progress, t) }),
        strayStores: core.strays.counts,
        viewSaves: node.views.status,
        antiEntropy: ae === undefined ? undefined : antiEntropyDocument(ae, node.recovery?.status, t),
        tombstones:
          reaper === undefined
            ? undefined
            : tombstoneDocument(reaper, config.tombstonePurge, config.tombstoneGraceMs, t),
        hintedHandoff: hintedHandoffDocument({
          backlog: hints?.backlog() ?? new Map(),
          progress: core.hintDelivery?.progress ?? new Map(),
          limits:
            hints === undefined
              ? null
              : {
                  windowMs: hints.limits.windowMs,
                  maxBytesPerTarget: hints.limits.maxBytesPerTarget,
                  deliveryBytesPerSecond: config.hintRateBytesPerSec,
                },
          now: t,
        }),
        transport: transport.counters,
        peerSecurity: transport.securityStatus(),
        storage: storage.stats(),
      });
    };
    let census: Census | null = null;
    metrics.watchNode({
      members: () => {
        const t = now();
        return membership
          .view()
          .map((m) => ({ id: m.id, state: memberState(m, membership.liveness(m.id, t)) }));
      },
      census: () => census,
    });
    const dashboard = new Dashboard(
      metrics,
      {
        now: () => Date.now(),
        status,
        owners: () => membership.ring?.owners ?? [],
        replicas: () => replicasPerMember(core),
        handoffPending: () => handoffPartitions(core),
        hintPartitions: async () => {
          const out = new Set<number>();
          let complete = true;
          const targets = [...(hints?.backlog().keys() ?? [])];
          if (targets.length > HINT_LOOK_TARGETS) complete = false;
          for (const t of targets.slice(0, HINT_LOOK_TARGETS)) {
            const page = await hints!.page(t, undefined, HINT_LOOK_PER_TARGET, 1 << 20);
            if (page.hints.length >= HINT_LOOK_PER_TARGET) complete = false;
            for (const h of page.hints) out.add(partitionOf(h.key, id.partitions));
          }
          return { partitions: [...out].sort((a, b) => a - b), complete };
        },
        antiEntropyPending: () => aeDiffering,
        census: () => census,
      },
      events,
    );
    serveApi(app, {
      service: core.router,
      secret: Buffer.from(id.clusterSecret, "base64"),
      n: id.n,
      r: id.r,
      w: id.w,
      requestTimeoutMs: config.requestTimeoutMs,
      maxTimeoutMs: config.maxRequestTimeoutMs,
      limits: {
        maxKeyBytes: config.maxKeyBytes,
        maxValueBytes: config.maxValueBytes,
        maxContextChars: MAX_CONTEXT_TOKEN_CHARS,
      },
      metrics,
      now,
      listing: {
        partitions: id.partitions,
        page: (position, limits) => core.keyListing.page(position, limits),
      },
      ring: () => {
        const t = now();
        return ringDocument({
          ring: membership.ring,
          n: id.n,
          members: membership.view(),
          liveness: (mid) => membership.liveness(mid, t),
        });
      },
      leave: (force) => membershipOutcome(async () => ({ node: config.id, ...(await core.leave(force)) })),
      remove: (rid, force) =>
        membershipOutcome(async () => ({ node: config.id, ...(await core.remove(rid, force)) })),
      plan: async (change) => {
        try {
          return await core.plan(change);
        } catch (err) {
          if (err instanceof PlanError) return { refused: err.message };
          throw err;
        }
      },
      compactStorage: () => {
        const out = storage.compactAll();
        if (out.started) {
          log.info({ event: "storage" }, "full compaction asked for: started");
          void out.done.then((p) => {
            if (p.state === "done")
              log.info(
                {
                  event: "storage",
                  tablesBefore: p.tablesBefore,
                  tablesAfter: p.tablesAfter,
                  bytesAfter: p.bytesAfter,
                },
                "full compaction done",
              );
            else log.warn({ event: "storage", err: p.error?.message }, "full compaction failed");
          });
        }
        return out;
      },
      setHandoffRate: (bps) => {
        const was = core.handoff.bytesPerSecond;
        core.handoff.setBytesPerSecond(bps);
        return { node: config.id, bytesPerSecond: bps, was };
      },
      setWeight: async (wid, weight) => {
        const self = membership.self;
        if (wid !== undefined && wid !== config.id) {
          const other = membership.member(wid);
          return {
            refused:
              other === undefined || other.status === "left"
                ? `${wid} is not a member of this cluster`
                : `this is ${config.id}: send the weight of ${wid} to its own API, ${other.api}`,
          };
        }
        if (self.status !== "up")
          return { refused: `${config.id} is ${self.status}: only a member that is up changes its weight` };
        const was = self.weight;
        if (weight !== was) {
          // Kept first (a restart with the same --weight keeps it), then gossiped.
          if (weight === config.weight) await node.dataDir.forgetWeight();
          else await node.dataDir.writeWeight({ weight, flag: config.weight });
          membership.updateSelf({ weight });
          const detail = `this node's weight is now ${weight} (was ${was}): the claimant re-claims the ring`;
          events.record({ at: Date.now(), kind: "note", member: config.id, detail });
          process.stdout.write(`ringstore node ${config.id}: membership: ${detail}\n`);
          core.gossip.round();
        }
        return { node: config.id, weight, was };
      },
      antiEntropy:
        ae === undefined
          ? undefined
          : (paused) => {
              if (paused) ae.pause();
              else ae.resume();
              return { node: config.id, paused: ae.paused };
            },
      status,
      dashboard,
    });
    dashboard.start();
    follower?.start();
    // Each handoff pass, logged when it starts and when it ends (from its progress, every second).
    const handoffWatch = new HandoffWatch();
    const lookAtHandoff = () => {
      for (const l of handoffWatch.look(core.handoff.progress)) log[l.level](l.fields, l.msg);
      handoffTimer = env.timers.after(HANDOFF_LOOK_MS, lookAtHandoff);
    };
    let handoffTimer = env.timers.after(0, lookAtHandoff);
    cleanup.splice(1, 0, async () => handoffTimer.cancel());
    const stopCensus = scheduleCensus(core, (c) => {
      census = c;
      core.storedSets = c.live + c.tombstones;
    });
    cleanup.splice(1, 0, async () => {
      stopCensus();
      await dashboard.stop();
    });
    let stopping: Promise<void> | undefined;
    return {
      id: config.id,
      identity: id,
      api: apiBound,
      peer: peerBound,
      createdCluster: node.created,
      events,
      forcedBackAfterMs: node.forcedBackAfterMs,
      clusterKey: key === undefined ? undefined : { path: key.path, created: key.fresh },
      stop: () => {
        stopping ??= runAll(cleanup);
        return stopping;
      },
    };
  } catch (err) {
    await runAll(cleanup);
    throw err;
  }
}

/** A join's follow as `/status` and the dashboard show it (`now`: the node's clock). */
function joinStatus(p: JoinProgress, now: number): JoinStatus {
  const ids = (state: string) => p.members.filter((m) => m.state === state).map((m) => m.id);
  return {
    state: p.state,
    ringVersion: p.ringVersion,
    keysScanned: p.keysScanned,
    keysTotal: p.keysTotal,
    keysSent: p.keysSent,
    bytesSent: p.bytesSent,
    storesFailed: p.storesFailed,
    keysReceived: p.keysReceived,
    bytesReceived: p.bytesReceived,
    keysPerSecond: p.keysPerSecond,
    etaSeconds: p.etaSeconds,
    throttleBytesPerSecond: p.throttleBytesPerSecond,
    membersDone: ids("done"),
    membersBusy: ids("busy"),
    membersSilent: p.members
      .filter((m) => m.state === "silent")
      .map((m) => ({ id: m.id, why: m.why ?? "no answer" })),
    elapsedMs: Math.max(0, Math.round((p.endedAt ?? now) - p.startedAt)),
  };
}

/** How often the handoff's progress is looked at, to log its passes. */
const HANDOFF_LOOK_MS = 1000;

/**
 * A leave or a removal as the API takes it: the core's refusal (MembershipRefusedError) is an outcome,
 * refused for good or unavailable for now; any other error stays an error.
 */
async function membershipOutcome<A>(run: () => Promise<A>): Promise<MembershipOutcome<A>> {
  try {
    return { kind: "accepted", answer: await run() };
  } catch (err) {
    if (!(err instanceof MembershipRefusedError)) throw err;
    return { kind: err.code === "unavailable" ? "unavailable" : "refused", reason: err.message };
  }
}

/** Anti-entropy's part of /status. */
function antiEntropyDocument(
  ae: AntiEntropy,
  recovery: RecoveryStatus | undefined,
  now: number,
): AntiEntropyStatus {
  const at = ae.lastFullSweepAt();
  const r = ae.rebuildProgress;
  return {
    enabled: true,
    paused: ae.paused,
    rebuild:
      r === null
        ? null
        : {
            partitions: r.partitions,
            startedAt: r.startedAt,
            state: r.report === null ? "running" : r.report.outcome,
            keys: r.report?.keys ?? null,
          },
    recovery: recovery ?? null,
    lastFullSweepAt: at,
    lastFullSweepAgeMs: at === null ? null : Math.max(0, Math.round(now - at)),
    exchanges: ae.totals.exchanges,
    keysRepaired: ae.totals.keysRepaired,
    failed: ae.totals.failed,
    lastExchanges: [...ae.recent],
  };
}

/** Partitions whose replicas changed since the node's last complete handoff pass, while one runs. */
function handoffPartitions(core: NodeCore): number[] {
  const from = core.handoff.handedOffRing;
  const to = core.placement.current();
  if (core.handoff.progress.state === "idle" || from === undefined || to === undefined) return [];
  const before = core.placement.tableOf(from);
  const out: number[] = [];
  for (let p = 0; p < to.ring.partitions; p++) {
    const a = before.forPartition(p);
    const b = to.forPartition(p);
    if (a.length !== b.length || a.some((x, i) => x !== b[i])) out.push(p);
  }
  return out;
}

/** How many partitions each member replicates in the node's current ring (cached by ring version). */
const replicaCounts = new WeakMap<NodeCore, { version: number; counts: Map<string, number> }>();
function replicasPerMember(core: NodeCore): ReadonlyMap<string, number> {
  const table = core.placement.current();
  const version = core.membership.ring?.version ?? -1;
  if (table === undefined) return new Map();
  const cached = replicaCounts.get(core);
  if (cached !== undefined && cached.version === version) return cached.counts;
  const counts = new Map<string, number>();
  for (let p = 0; p < table.ring.partitions; p++)
    for (const id of table.forPartition(p)) counts.set(id, (counts.get(id) ?? 0) + 1);
  replicaCounts.set(core, { version, counts });
  return counts;
}

/** Counts the node's stored keys soon after the start, then again and again (CENSUS_INTERVAL_MS); returns a stop. */
function scheduleCensus(core: NodeCore, done: (c: Census) => void): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const run = () => {
    const started = Date.now();
    core.keyListing
      .census()
      .then(
        (c) => {
          if (!stopped) done(c);
        },
        () => undefined,
      )
      .finally(() => {
        const wait = Math.max(CENSUS_INTERVAL_MS, 20 * (Date.now() - started));
        if (!stopped) timer = setTimeout(run, wait).unref();
      });
  };
  timer = setTimeout(run, CENSUS_FIRST_MS).unref();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** Tombstone purging's part of /status. */
function tombstoneDocument(
  reaper: TombstoneReaper,
  purging: boolean,
  graceMs: number,
  now: number,
): TombstoneStatus {
  const s = reaper.stats;
  return {
    enabled: true,
    purging,
    graceMs,
    held: s.held,
    ownedPastGrace: s.ownedPastGrace,
    purged: s.purged,
    refused: { ...s.refused },
    sweeps: s.sweeps,
    lastSweepAt: s.lastSweepAt,
    lastSweepAgeMs: s.lastSweepAt === null ? null : Math.max(0, Math.round(now - s.lastSweepAt)),
  };
}
