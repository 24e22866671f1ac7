/**
 * The start-up's exchanges with the cluster: asking a member to admit a new node (`join`); for a node
 * with data given --join, checking that the peers named belong to its own cluster; and, for a node that
 * restarts, checking that its peers take its cluster key. A peer's refusal of the key (ERR_AUTH: the TLS
 * handshake failed) is told apart from no answer at all, so that the start says which it was.
 */
import type { AnswerOf, MemberView } from "../transport/messages.js";
import { type Transport, TransportError } from "../transport/transport.js";
import { ConfigError } from "./config.js";

/** How long a join request and a seed check wait for their answer. */
const JOIN_TIMEOUT_MS = 5000;
const CHECK_TIMEOUT_MS = 2000;

export type JoinAnswer = AnswerOf<"join">;

/** Where the key in use came from, for the sentences of a refusal. */
export interface KeySource {
  /** The key file (--cluster-key-file, or the data directory's cluster.key). */
  readonly path: string;
  /** The id of the key this node connects with. */
  readonly id: string;
}

const PASS_KEY =
  "pass the cluster's key file with --cluster-key-file F (or RINGSTORE_CLUSTER_KEY_FILE): the cluster.key in the data directory of the node that created the cluster, or the file that node was given";

const isKeyRefusal = (err: unknown) => err instanceof TransportError && err.code === "ERR_AUTH";

/**
 * Asks each seed in turn to admit `self`; the first answer wins. ConfigError if none does: when every
 * seed that answered at all refused this node's key, the sentence says so and what to pass.
 */
export async function joinVia(
  transport: Transport,
  seeds: readonly string[],
  self: MemberView,
  key?: KeySource,
): Promise<JoinAnswer> {
  const errors: string[] = [];
  const refusedKey: string[] = [];
  let otherwise = false;
  for (const seed of seeds) {
    try {
      const res = await transport.request(seed, { kind: "join", member: self }, JOIN_TIMEOUT_MS);
      return res;
    } catch (err) {
      // The transport's message may name the address already.
      const message = (err as Error).message;
      errors.push(message.startsWith(seed) ? message : `${seed}: ${message}`);
      if (isKeyRefusal(err)) refusedKey.push(seed);
      else if (!(err instanceof TransportError && err.code === "ERR_UNREACHABLE")) otherwise = true;
    }
  }
  if (key !== undefined && refusedKey.length > 0 && !otherwise)
    throw new ConfigError(
      `the cluster refused this node's cluster key: ${refusedKey.join(", ")} refused key ${key.id} (from ${key.path}) in the TLS handshake, so ${key.path} is not the key of the cluster that --join names; ${PASS_KEY}`,
    );
  throw new ConfigError(`could not join a cluster (each --join address tried): ${errors.join("; ")}`);
}

/**
 * A node that restarts (it has an identity) checks that its peers take its key: each peer address it
 * knows is pinged at once; the start goes on as soon as one answers, or when none could be reached (a
 * restart while the others are down is normal). When none answered and some refused the key, the start
 * is refused: the node would run cut off from its cluster.
 */
export async function checkKeyAccepted(
  transport: Transport,
  peers: readonly string[],
  clusterId: string,
  key: KeySource,
): Promise<void> {
  if (peers.length === 0) return;
  const refused: string[] = [];
  const answered = await new Promise<boolean>((resolve) => {
    let left = peers.length;
    for (const peer of peers)
      transport.request(peer, { kind: "ping" }, CHECK_TIMEOUT_MS).then(
        () => resolve(true),
        (err: unknown) => {
          if (isKeyRefusal(err)) refused.push(peer);
          if (--left === 0) resolve(false);
        },
      );
  });
  if (!answered && refused.length > 0)
    throw new ConfigError(
      `the members of cluster ${clusterId} refused this node's cluster key: ${refused.join(", ")} refused key ${key.id} (from ${key.path}) in the TLS handshake (was the key rotated while this node was away?); ${PASS_KEY}`,
    );
}

/**
 * A restart with --join and an existing identity: refuses to start when a peer given answers that it
 * belongs to another cluster (the handshake rejects us, or its TLS handshake refuses our key). Unreachable
 * peers are no evidence either way (a restart while others are down is normal). Returns whether a peer
 * answered.
 */
export async function checkJoinTargets(
  transport: Transport,
  seeds: readonly string[],
  dataDir: string,
  clusterId: string,
): Promise<boolean> {
  for (const seed of seeds) {
    try {
      await transport.request(seed, { kind: "ping" }, CHECK_TIMEOUT_MS);
      return true;
    } catch (err) {
      if (err instanceof TransportError && (err.code === "ERR_REJECTED" || err.code === "ERR_AUTH"))
        throw new ConfigError(
          `the data directory ${dataDir} already belongs to cluster ${clusterId}, but --join ${seed} is a member of another cluster${err.code === "ERR_AUTH" ? ", or of this one under another cluster key" : ""} (${err.message}); a node joins a cluster only with an empty data directory: give a new --data to join it, or drop --join to run in cluster ${clusterId}`,
        );
    }
  }
  return false;
}
