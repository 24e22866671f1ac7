/**
 * The composition root of a real node: the system's clock, timers, disk and CSPRNG, the TCP transport and
 * the HTTP API, around the start-up that boot.ts shares with the simulator.
 *
 * Data directory layout: data-dir.ts.
 */
import { randomBytes, randomInt } from "node:crypto";
import * as path from "node:path";
import { buildHttpApi } from "../api/http-api.js";
import { NodeMetrics } from "../api/metrics.js";
import { seededRandom } from "../runtime/runtime.js";
import { systemRuntime } from "../runtime/system-runtime.js";
import { workerCompactionExecutor } from "../storage/compaction-worker.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import type { RequestBody, ResponseBody } from "../transport/messages.js";
import { TcpTransport } from "../transport/tcp-transport.js";
import { MAX_CONTEXT_TOKEN_CHARS } from "../versioning/context-token.js";
import { type BootedNode, bootNode, type NodeEnv, runAll } from "./boot.js";
import { formatHostPort, type HostPort, type NodeConfig } from "./config.js";
import type { NodeIdentity } from "./identity.js";

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

  // Requests arrive as soon as the peer port listens; until the node is assembled they are refused.
  let dispatch: (from: string, body: RequestBody) => Promise<ResponseBody> = async () => {
    throw Object.assign(new Error("node is starting"), { code: "ERR_STARTING" });
  };
  const transport = await TcpTransport.listen({
    host: config.peer.host,
    port: config.peer.port,
    nodeId: config.id,
    clusterId: "",
    handler: (from, body) => dispatch(from, body),
    timers: env.timers,
    clock: env.clock,
  });
  const peerBound = {
    host: config.peer.host,
    port: Number(transport.address.slice(transport.address.lastIndexOf(":") + 1)),
  };
  const cleanup: (() => Promise<unknown>)[] = [() => transport.close()];
  try {
    let metrics: NodeMetrics | undefined;
    const node: BootedNode = await bootNode(
      {
        nodeId: config.id,
        dataDir: config.dataDir,
        join: config.join.map(formatHostPort),
        settings: { n: config.n, r: config.r, w: config.w, partitions: config.partitions },
        explicit: options.explicit ?? { n: false, r: false, w: false },
        api: formatHostPort(config.api),
        weight: config.weight,
        zone: config.zone,
        gossipIntervalMs: config.gossipIntervalMs,
        downAfterMs: config.downAfterMs,
        requestTimeoutMs: config.requestTimeoutMs,
        maxSiblings: config.maxSiblings,
      },
      {
        env,
        transport,
        serve: (handler) => {
          dispatch = handler;
        },
        openStorage: (dir) =>
          LsmEngine.open(
            {
              dir,
              fs: env.fs,
              timers: env.timers,
              // A node's event loop serves peers as well as its own clients: a group commit's fdatasync
              // runs in the thread pool so that the loop keeps parsing requests and answering other
              // replicas meanwhile (docs/performance.md).
              options: { durability: config.durability, walSyncOnEventLoop: false },
              compactor: workerCompactionExecutor(),
            },
            now,
          ),
        onReadRepair: () => metrics?.readRepairs.inc(),
        onReplicaTimeout: (op) => metrics?.replicaRequestTimeouts.inc({ op }),
        onLeft: (how) => options.onLeft?.(how),
        onViewSaveError: (err) =>
          process.stderr.write(
            `ringstore node ${config.id}: saving the view failed (retrying): ${err.message}\n`,
          ),
      },
    );
    cleanup.unshift(() => node.stop());
    const { identity: id, core, storage } = node;
    const membership = core.membership;
    metrics = new NodeMetrics(() => storage.stats(), { node: config.id });

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
        const { owned, replicated } = core.placement.partitionsHeld();
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
          strayStores: { ...core.strays.counts },
          viewSaves: { ...node.views.status },
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
    if (membership.self.api !== formatHostPort(apiBound)) {
      membership.updateSelf({ api: formatHostPort(apiBound) });
      node.views.save();
    }

    let stopping: Promise<void> | undefined;
    return {
      id: config.id,
      identity: id,
      api: apiBound,
      peer: peerBound,
      createdCluster: node.created,
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
