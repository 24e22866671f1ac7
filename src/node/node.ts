/**
 * The composition root: builds a node from its validated config by wiring the real adapters (disk,
 * clock, timers, TCP) into the storage engine, the replica, membership, the coordinator and the APIs.
 *
 * Data directory layout: `node.json` (identity, identity.ts), `members.json` (the saved view,
 * saved-view.ts) and `storage/` (the LSM engine). Both files are replaced durably (durable-file.ts): a
 * crash leaves the old file or the new one.
 *
 * Start-up:
 * - a directory without identity and no --join: a new cluster of one (its ring made here);
 * - a directory without identity and --join: ask a member to admit us (the `join` request), take the
 *   cluster's id, secret, N/R/W and view from the answer, and gossip from then on as `joining` until the
 *   claimant gives us partitions;
 * - a directory with identity: rejoin under the old identity, from the saved view (and --join, if given).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { buildHttpApi } from "../api/http-api.js";
import { NodeMetrics } from "../api/metrics.js";
import type { Replica } from "../replication/replica.js";
import { seededRandom } from "../runtime/runtime.js";
import { systemRuntime } from "../runtime/system-runtime.js";
import { workerCompactionExecutor } from "../storage/compaction-worker.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import type { MemberView } from "../transport/messages.js";
import { TcpTransport } from "../transport/tcp-transport.js";
import { type RequestHandler, TransportError } from "../transport/transport.js";
import { MAX_CONTEXT_TOKEN_CHARS } from "../versioning/context-token.js";
import { ConfigError, formatHostPort, type HostPort, type NodeConfig } from "./config.js";
import { writeFileDurably } from "./durable-file.js";
import {
  checkIdentity,
  type NodeIdentity,
  newIdentity,
  readIdentity,
  renewActor,
  writeIdentity,
} from "./identity.js";
import { NodeCore } from "./node-core.js";
import { readSavedView, type SavedView, writeSavedView } from "./saved-view.js";

export interface RunningNode {
  readonly id: string;
  readonly identity: NodeIdentity;
  /** The addresses actually bound (port 0 resolved). */
  readonly api: HostPort;
  readonly peer: HostPort;
  readonly createdCluster: boolean;
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
}

export async function startNode(config: NodeConfig, options: StartOptions = {}): Promise<RunningNode> {
  fs.mkdirSync(config.dataDir, { recursive: true });
  const rt = systemRuntime();
  const now = () => rt.clock.now();
  const random = seededRandom((Math.random() * 0x7fffffff) | 0);
  let identity = readIdentity(config.dataDir);
  const explicit = options.explicit ?? { n: false, r: false, w: false };
  if (identity !== undefined) checkIdentity(identity, config.dataDir, config.id, config, explicit);

  // Requests arrive as soon as the peer port listens; until the node is assembled they are refused.
  let dispatch: RequestHandler = async () => {
    throw Object.assign(new Error("node is starting"), { code: "ERR_STARTING" });
  };
  const transport = await TcpTransport.listen({
    host: config.peer.host,
    port: config.peer.port,
    nodeId: config.id,
    clusterId: identity?.clusterId ?? "",
    handler: (from, body) => dispatch(from, body),
    timers: rt.timers,
    clock: rt.clock,
  });
  const peerBound = {
    host: config.peer.host,
    port: Number(transport.address.slice(transport.address.lastIndexOf(":") + 1)),
  };

  const cleanup: (() => Promise<void>)[] = [() => transport.close()];
  try {
    const saved = readSavedView(config.dataDir);
    const selfEntry = (status: MemberView["status"], incarnation: number): MemberView => ({
      id: config.id,
      api: formatHostPort(config.api),
      peer: transport.address,
      weight: config.weight,
      zone: config.zone,
      status,
      incarnation,
      heartbeat: 0,
    });
    let created = false;
    let joinedView: SavedView | undefined;
    if (identity === undefined && config.join.length === 0) {
      identity = newIdentity(config.id, undefined, {
        n: config.n,
        r: config.r,
        w: config.w,
        partitions: config.partitions,
      });
      writeIdentity(config.dataDir, identity);
      created = true;
    } else if (identity === undefined) {
      const answer = await joinVia(transport, config.join.map(formatHostPort), selfEntry("joining", 0));
      identity = newIdentity(
        config.id,
        {
          clusterId: answer.clusterId,
          clusterSecret: answer.secret,
          n: answer.n,
          r: answer.r,
          w: answer.w,
          partitions: answer.ring?.partitions ?? config.partitions,
        },
        { ...config },
      );
      writeIdentity(config.dataDir, identity);
      joinedView = { members: [...answer.members], ring: answer.ring };
    } else if (config.join.length > 0) {
      // A node with data rejoins its own cluster and --join only names peers to reach it through; but if
      // a peer given belongs to another cluster, the user meant to join that one: say so, never run alone.
      await checkJoinTargets(transport, config.join.map(formatHostPort), config.dataDir, identity.clusterId);
    }
    // A coordinator sends a new version to the other replicas while it is still making it durable itself
    // (and with durability none or interval it acknowledges what the OS may still lose). After a crash its
    // own copy of a version may be gone while other replicas hold it; if it kept its actor it could name
    // its next write with a dot already used. So a start after an unclean stop takes a new actor. The
    // marker file lives while the node runs and is removed after a clean close of the storage engine
    // (unless a local write failed: see Replica.writeFailure).
    const marker = path.join(config.dataDir, "running");
    if (fs.existsSync(marker) && !created && joinedView === undefined) {
      identity = renewActor(identity);
      writeIdentity(config.dataDir, identity);
    }
    writeFileDurably(marker, `${process.pid}\n`);
    const id = identity;
    transport.setCluster(id.clusterId);

    const storage = await LsmEngine.open(
      {
        dir: path.join(config.dataDir, "storage"),
        fs: new NodeFileSystem(),
        timers: rt.timers,
        // A node's event loop serves peers as well as its own clients: a group commit's fdatasync runs in
        // the thread pool so that the loop keeps parsing requests and answering other replicas meanwhile
        // (3 nodes on 2 cores: 22-34% more puts/s than with the sync on the loop; ARCHITECTURE.md).
        options: { durability: config.durability, walSyncOnEventLoop: false },
        compactor: workerCompactionExecutor(),
      },
      now,
    );
    let replica: Replica | undefined; // set once the core exists
    cleanup.unshift(async () => {
      // Version nothing more, and let every versioned set reach the disk (or fail) before the engine
      // closes: the stop is clean only if every version this node sent to others is also durable here.
      await replica?.seal();
      await storage.close();
      // A failed engine may not have made durable what it acknowledged (a failed periodic sync): the
      // next start must then take a new actor, as after a crash.
      if (replica?.writeFailure === undefined && storage.failure === undefined)
        fs.rmSync(marker, { force: true });
    });

    // ---- the protocol core (membership, replication, gossip), wired to the real adapters
    const view = joinedView ?? saved;
    const prevSelf = view?.members.find((m) => m.id === config.id);
    if (prevSelf?.status === "left" && joinedView === undefined)
      throw new ConfigError(
        `node ${config.id} has left cluster ${id.clusterId} (cluster leave, or removed by cluster remove); the data directory ${config.dataDir} is no longer in use: to run a node again, start it with a new --data and a new --id (and --join a member)`,
      );
    const inRing = view?.ring?.owners.includes(config.id) ?? false;
    // A leave survives a restart: the node goes on handing off, then leaves.
    const startStatus: MemberView["status"] =
      prevSelf?.status === "leaving" ? "leaving" : inRing ? "up" : "joining";
    const metrics = new NodeMetrics(() => storage.stats(), { node: config.id });
    const core: NodeCore = new NodeCore({
      nodeId: config.id,
      actor: id.actor,
      cluster: id,
      transport,
      storage,
      clock: rt.clock,
      timers: rt.timers,
      random,
      self: selfEntry(startStatus, (prevSelf?.incarnation ?? 0) + 1),
      view,
      bootstrapRing: created || (view?.ring == null && config.join.length === 0),
      gossipIntervalMs: config.gossipIntervalMs,
      downAfterMs: config.downAfterMs,
      requestTimeoutMs: config.requestTimeoutMs,
      maxSiblings: config.maxSiblings,
      handedOff: saved?.handedOff,
      onViewChange: () => writeSavedView(config.dataDir, core.viewToSave()),
      onReadRepair: () => metrics.readRepairs.inc(),
      onReplicaTimeout: (op) => metrics.replicaRequestTimeouts.inc({ op }),
      onLeft: (how) => options.onLeft?.(how),
    });
    const membership = core.membership;
    replica = core.replica;
    dispatch = (from, body) => core.dispatch(from, body);

    let apiBound: HostPort = config.api;
    const app = buildHttpApi({
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
      ring: () => {
        const ring = membership.ring;
        const t = now();
        return {
          version: ring?.version ?? 0,
          partitions: ring?.partitions ?? 0,
          n: id.n,
          hash: "murmur3-x86-32, seed 0x52494e47, partition = floor(hash * partitions / 2^32)",
          owners: ring?.owners ?? [],
          members: membership
            .view()
            .filter((m) => m.status !== "left")
            .map((m) => ({
              id: m.id,
              api: m.api,
              zone: m.zone ?? null,
              weight: m.weight,
              state: membership.liveness(m.id, t),
            })),
        };
      },
      leave: async (force) => ({ node: config.id, ...(await core.leave(force)) }),
      remove: async (rid, force) => ({ node: config.id, ...(await core.remove(rid, force)) }),
      status: async () => {
        const t = now();
        const ring = membership.ring;
        const { owned, replicated } = core.partitionsHeld();
        return {
          node: {
            id: config.id,
            actor: id.actor,
            api: formatHostPort(apiBound),
            peer: transport.address,
            dataDir: path.resolve(config.dataDir),
            weight: config.weight,
            zone: config.zone ?? null,
          },
          cluster: {
            id: id.clusterId,
            n: id.n,
            r: id.r,
            w: id.w,
            partitions: id.partitions,
            ringVersion: ring?.version ?? 0,
          },
          members: membership
            .view()
            .sort((a, b) => (a.id < b.id ? -1 : 1))
            .map((m) => {
              const live = membership.liveness(m.id, t);
              return {
                id: m.id,
                api: m.api,
                peer: m.peer,
                state: live === "up" ? m.status : m.status === "left" ? "left" : live,
                status: m.status,
                weight: m.weight,
                zone: m.zone ?? null,
                incarnation: m.incarnation,
                heartbeat: m.heartbeat,
                partitions: ring?.owners.filter((o) => o === m.id).length ?? 0,
              };
            }),
          partitions: { total: ring?.partitions ?? 0, owned, replicated },
          handoff: { ...core.handoff.progress },
          strayStores: { ...core.strayStores },
          hintedHandoff: { backlog: 0 },
          antiEntropy: { lastExchanges: [] },
          transport: { ...transport.counters },
          storage: storage.stats(),
        };
      },
    });
    apiBound = { host: config.api.host, port: await app.listen(config.api.host, config.api.port) };
    cleanup.unshift(() => app.close());
    // Port 0 may have been asked for: gossip the address actually bound.
    if (membership.self.api !== formatHostPort(apiBound))
      membership.updateSelf({ api: formatHostPort(apiBound) });
    core.start();
    cleanup.unshift(() => core.stop());
    writeSavedView(config.dataDir, core.viewToSave());

    let stopping: Promise<void> | undefined;
    return {
      id: config.id,
      identity: id,
      api: apiBound,
      peer: peerBound,
      createdCluster: created,
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

/** Runs every cleanup step in order; throws the first error after trying them all. */
async function runAll(steps: readonly (() => Promise<void>)[]): Promise<void> {
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

/**
 * A restart with --join and an existing identity: refuses to start when a peer given answers that it
 * belongs to another cluster (the handshake rejects us). Unreachable peers are no evidence either way (a
 * restart while others are down is normal).
 */
async function checkJoinTargets(
  transport: TcpTransport,
  seeds: readonly string[],
  dataDir: string,
  clusterId: string,
): Promise<void> {
  for (const seed of seeds) {
    try {
      await transport.request(seed, { kind: "ping" }, 2000);
      return;
    } catch (err) {
      if (err instanceof TransportError && err.code === "ERR_REJECTED")
        throw new ConfigError(
          `the data directory ${dataDir} already belongs to cluster ${clusterId}, but --join ${seed} is a member of another cluster (${err.message}); a node joins a cluster only with an empty data directory: give a new --data to join it, or drop --join to run in cluster ${clusterId}`,
        );
    }
  }
}

async function joinVia(transport: TcpTransport, seeds: readonly string[], self: MemberView) {
  const errors: string[] = [];
  for (const seed of seeds) {
    try {
      return await transport.request(seed, { kind: "join", member: self }, 5000);
    } catch (err) {
      errors.push(`${seed}: ${(err as Error).message}`);
    }
  }
  throw new ConfigError(`could not join through ${seeds.join(", ")}: ${errors.join("; ")}`);
}
