/**
 * The node's identity file, `node.json` in its data directory: who this node is, which cluster it belongs
 * to, and the cluster-wide settings fixed when the cluster was created.
 *
 * - `actor` is the node id plus a random epoch made when the data directory is created: versions are
 *   stamped with it. A node whose data was wiped comes back with a new epoch, so it can never reissue a
 *   dot (version name) that its lost data had already used.
 * - `clusterSecret` keys the integrity check of client contexts.
 *
 * Format: JSON `{format: "ringstore-node", version: 1, ..., crc32}`, the crc over the JSON of the other
 * fields. Written to `node.json.tmp`, fsynced, renamed, and the directory fsynced.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { crc32 } from "node:zlib";
import { ConfigError } from "./config.js";
import { readFileIfExists, writeFileDurably } from "./durable-file.js";
import type { ClusterSettings } from "./node-core.js";

/** Who this node is, and the cluster settings it holds (N, R, W and Q fixed at the cluster's creation). */
export interface NodeIdentity extends ClusterSettings {
  readonly nodeId: string;
  readonly actor: string;
  readonly createdAt: string;
}

const FILE = "node.json";

function checksum(id: NodeIdentity): number {
  const { nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt } = id;
  return crc32(JSON.stringify({ nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt }));
}

export function readIdentity(dataDir: string): NodeIdentity | undefined {
  const p = path.join(dataDir, FILE);
  const text = readFileIfExists(p);
  if (text === undefined) return undefined;
  let j: NodeIdentity & { format?: string; version?: number; crc32?: number };
  try {
    j = JSON.parse(text);
  } catch {
    throw new ConfigError(`${p} is not valid JSON: the node identity file is damaged`);
  }
  if (j.format !== "ringstore-node" || j.version !== 1)
    throw new ConfigError(`${p}: unknown identity file format`);
  if (j.crc32 !== checksum(j))
    throw new ConfigError(`${p}: checksum mismatch: the node identity file is damaged`);
  return j;
}

export function writeIdentity(dataDir: string, id: NodeIdentity): void {
  fs.mkdirSync(dataDir, { recursive: true });
  const body = `${JSON.stringify({ format: "ringstore-node", version: 1, ...id, crc32: checksum(id) }, null, 2)}\n`;
  writeFileDurably(path.join(dataDir, FILE), body);
}

/** Checks a found identity against the command line: same node id, and no contradicting N/R/W. */
export function checkIdentity(
  found: NodeIdentity,
  dataDir: string,
  nodeId: string,
  settings: { n: number; r: number; w: number },
  explicit: { n: boolean; r: boolean; w: boolean },
): void {
  if (found.nodeId !== nodeId)
    throw new ConfigError(`data directory ${dataDir} belongs to node "${found.nodeId}", not "${nodeId}"`);
  for (const k of ["n", "r", "w"] as const)
    if (explicit[k] && settings[k] !== found[k])
      throw new ConfigError(
        `--${k} ${settings[k]} differs from the cluster's ${k}=${found[k]}, fixed when the cluster was created`,
      );
}

/**
 * The same identity under a new actor (a fresh random epoch). Used after an unclean stop of a node whose
 * writes are not fsynced before they are replicated: its own copy of a version may be lost while other
 * replicas hold it, and reusing the old actor could name a different write with the same dot.
 */
export function renewActor(id: NodeIdentity): NodeIdentity {
  // Never the actor it replaces (a draw of the same 4 bytes, one time in 2^32, would reuse its dots).
  for (let i = 0; i < 100; i++) {
    const actor = freshActor(id.nodeId);
    if (actor !== id.actor) return { ...id, actor };
  }
  throw new Error("the random source drew the same actor 100 times in a row");
}

/** The node id and a random epoch. */
function freshActor(nodeId: string): string {
  return `${nodeId}.${randomBytes(4).toString("hex")}`;
}

/** A new identity: for a new cluster (cluster fields made here) or for a node that joined one. */
export function newIdentity(
  nodeId: string,
  cluster:
    | { clusterId: string; clusterSecret: string; n: number; r: number; w: number; partitions: number }
    | undefined,
  settings: { n: number; r: number; w: number; partitions: number },
): NodeIdentity {
  return {
    nodeId,
    actor: freshActor(nodeId),
    clusterId: cluster?.clusterId ?? randomBytes(8).toString("hex"),
    clusterSecret: cluster?.clusterSecret ?? randomBytes(32).toString("base64"),
    n: cluster?.n ?? settings.n,
    r: cluster?.r ?? settings.r,
    w: cluster?.w ?? settings.w,
    partitions: cluster?.partitions ?? settings.partitions,
    createdAt: new Date().toISOString(),
  };
}
