/**
 * The composition root: builds a node from its validated config by wiring the real adapters (disk,
 * clock, timers) into the storage engine, the replica, the coordinator and the HTTP API.
 *
 * Data directory layout: `node.json` (identity, identity.ts) and `storage/` (the LSM engine).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { buildHttpApi } from "../api/http-api.js";
import { NodeMetrics } from "../api/metrics.js";
import { Coordinator, localPeer } from "../replication/coordinator.js";
import { Replica } from "../replication/replica.js";
import { systemRuntime } from "../runtime/system-runtime.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";
import { LsmEngine } from "../storage/lsm/lsm-engine.js";
import { MAX_CONTEXT_TOKEN_CHARS } from "../versioning/context-token.js";
import { formatHostPort, type HostPort, type NodeConfig } from "./config.js";
import { loadOrCreateIdentity, type NodeIdentity } from "./identity.js";

export interface RunningNode {
  readonly id: string;
  readonly identity: NodeIdentity;
  /** The API address actually bound (port 0 resolved). */
  readonly api: HostPort;
  readonly createdCluster: boolean;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Which of n, r, w the user set explicitly (checked against an existing cluster's settings). */
  readonly explicit?: { n: boolean; r: boolean; w: boolean };
}

export async function startNode(config: NodeConfig, options: StartOptions = {}): Promise<RunningNode> {
  fs.mkdirSync(config.dataDir, { recursive: true });
  const { identity, created } = loadOrCreateIdentity(
    config.dataDir,
    config.id,
    { n: config.n, r: config.r, w: config.w },
    options.explicit ?? { n: false, r: false, w: false },
  );
  const rt = systemRuntime();
  const storage = await LsmEngine.open(
    {
      dir: path.join(config.dataDir, "storage"),
      fs: new NodeFileSystem(),
      timers: rt.timers,
      options: { durability: config.durability },
    },
    () => rt.clock.now(),
  );
  try {
    const replica = new Replica(storage, identity.actor, config.maxSiblings);
    const self = localPeer(config.id, replica);
    const coordinator = new Coordinator({
      local: replica,
      localNodeId: config.id,
      // One node: the preference list is this node alone, whatever N is (N > 1 cannot be met: 503).
      replicasFor: () => [self],
      timers: rt.timers,
    });
    const metrics = new NodeMetrics(() => storage.stats(), { node: config.id });
    let apiBound: HostPort = config.api;
    const app = buildHttpApi({
      coordinator,
      secret: Buffer.from(identity.clusterSecret, "base64"),
      n: identity.n,
      r: identity.r,
      w: identity.w,
      requestTimeoutMs: config.requestTimeoutMs,
      maxTimeoutMs: config.maxRequestTimeoutMs,
      limits: {
        maxKeyBytes: config.maxKeyBytes,
        maxValueBytes: config.maxValueBytes,
        maxContextChars: MAX_CONTEXT_TOKEN_CHARS,
      },
      metrics,
      now: () => rt.clock.now(),
      status: async () => ({
        node: {
          id: config.id,
          actor: identity.actor,
          api: formatHostPort(apiBound),
          peer: formatHostPort(config.peer),
          dataDir: path.resolve(config.dataDir),
        },
        cluster: { id: identity.clusterId, n: identity.n, r: identity.r, w: identity.w, size: 1 },
        members: [
          { id: config.id, api: formatHostPort(apiBound), peer: formatHostPort(config.peer), state: "up" },
        ],
        partitions: { note: "a cluster of one holds every key", owned: "all", replicated: "all" },
        hintedHandoff: { backlog: 0 },
        antiEntropy: { lastExchanges: [] },
        storage: storage.stats(),
      }),
    });
    await app.listen({ host: config.api.host, port: config.api.port });
    const addr = app.server.address();
    if (addr !== null && typeof addr === "object") apiBound = { host: config.api.host, port: addr.port };
    let stopping: Promise<void> | undefined;
    return {
      id: config.id,
      identity,
      api: apiBound,
      createdCluster: created,
      stop: () => {
        stopping ??= (async () => {
          try {
            await app.close();
          } finally {
            await storage.close();
          }
        })();
        return stopping;
      },
    };
  } catch (err) {
    await storage.close();
    throw err;
  }
}
