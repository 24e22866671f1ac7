/**
 * The node's identity, `node.json` in its data directory: who this node is, which cluster it belongs to,
 * and the cluster-wide settings fixed when the cluster was created. This file holds the format and the
 * rules; data-dir.ts reads and writes it.
 *
 * - `actor` is the node id plus a random epoch, made when the identity is created and renewed after an
 *   unclean stop: versions are stamped with it. A node whose data was wiped, or whose last writes may be
 *   lost, comes back with a new epoch, so it never reissues a dot (version name) already used.
 * - `clusterSecret` keys the integrity check of client contexts.
 *
 * Format: JSON `{format: "ringstore-node", version: 1, ..., crc32}`, the crc over the JSON of the other
 * fields.
 */
import { crc32 } from "node:zlib";
import { ConfigError } from "./config.js";

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

/** Who this node is, and the cluster settings it holds (N, R, W and Q fixed at the cluster's creation). */
export interface NodeIdentity extends ClusterSettings {
  readonly nodeId: string;
  readonly actor: string;
  readonly createdAt: string;
}

/** Random bytes for identities (cluster ids, secrets, actor epochs): the system's CSPRNG in a node. */
export type Entropy = (bytes: number) => Uint8Array;

function checksum(id: NodeIdentity): number {
  const { nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt } = id;
  return crc32(JSON.stringify({ nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt }));
}

/** Parses node.json's text (`file` names it in errors). */
export function decodeIdentity(text: string, file: string): NodeIdentity {
  let j: NodeIdentity & { format?: string; version?: number; crc32?: number };
  try {
    j = JSON.parse(text);
  } catch {
    throw new ConfigError(`${file} is not valid JSON: the node identity file is damaged`);
  }
  if (j === null || typeof j !== "object" || j.format !== "ringstore-node" || j.version !== 1)
    throw new ConfigError(`${file}: unknown identity file format`);
  if (j.crc32 !== checksum(j))
    throw new ConfigError(`${file}: checksum mismatch: the node identity file is damaged`);
  const { nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt } = j;
  return { nodeId, actor, clusterId, clusterSecret, n, r, w, partitions, createdAt };
}

export function encodeIdentity(id: NodeIdentity): string {
  return `${JSON.stringify({ format: "ringstore-node", version: 1, ...id, crc32: checksum(id) }, null, 2)}\n`;
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

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** The node id and a random epoch. */
export function freshActor(nodeId: string, entropy: Entropy): string {
  return `${nodeId}.${hex(entropy(4))}`;
}

/**
 * The same identity under a new actor (a fresh random epoch). Used after an unclean stop: the node's own
 * copy of a version it sent to other replicas may be lost, and reusing the old actor could name a
 * different write with the same dot. Never the actor it replaces (a draw of the same 4 bytes, one time in
 * 2^32, would reuse its dots).
 */
export function renewActor(id: NodeIdentity, entropy: Entropy): NodeIdentity {
  for (let i = 0; i < 100; i++) {
    const actor = freshActor(id.nodeId, entropy);
    if (actor !== id.actor) return { ...id, actor };
  }
  throw new Error("the random source drew the same actor 100 times in a row");
}

/** A new identity: for a new cluster (cluster fields made here) or for a node that joined one. */
export function newIdentity(
  nodeId: string,
  cluster: ClusterSettings | undefined,
  settings: { n: number; r: number; w: number; partitions: number },
  entropy: Entropy,
  createdAtMs: number,
): NodeIdentity {
  return {
    nodeId,
    actor: freshActor(nodeId, entropy),
    clusterId: cluster?.clusterId ?? hex(entropy(8)),
    clusterSecret: cluster?.clusterSecret ?? Buffer.from(entropy(32)).toString("base64"),
    n: cluster?.n ?? settings.n,
    r: cluster?.r ?? settings.r,
    w: cluster?.w ?? settings.w,
    partitions: cluster?.partitions ?? settings.partitions,
    createdAt: new Date(createdAtMs).toISOString(),
  };
}
