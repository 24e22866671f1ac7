/**
 * The start-up's exchanges with the cluster: asking a member to admit a new node (`join`), and, for a node
 * with data given --join, checking that the peers named belong to its own cluster.
 */
import type { AnswerOf, MemberView } from "../transport/messages.js";
import { type Transport, TransportError } from "../transport/transport.js";
import { ConfigError } from "./config.js";

/** How long a join request and a seed check wait for their answer. */
const JOIN_TIMEOUT_MS = 5000;
const CHECK_TIMEOUT_MS = 2000;

export type JoinAnswer = AnswerOf<"join">;

/** Asks each seed in turn to admit `self`; the first answer wins. ConfigError if none does. */
export async function joinVia(
  transport: Transport,
  seeds: readonly string[],
  self: MemberView,
): Promise<JoinAnswer> {
  const errors: string[] = [];
  for (const seed of seeds) {
    try {
      const res = await transport.request(seed, { kind: "join", member: self }, JOIN_TIMEOUT_MS);
      return res;
    } catch (err) {
      // The transport's message may name the address already.
      const message = (err as Error).message;
      errors.push(message.startsWith(seed) ? message : `${seed}: ${message}`);
    }
  }
  throw new ConfigError(`could not join a cluster (each --join address tried): ${errors.join("; ")}`);
}

/**
 * A restart with --join and an existing identity: refuses to start when a peer given answers that it
 * belongs to another cluster (the handshake rejects us). Unreachable peers are no evidence either way (a
 * restart while others are down is normal).
 */
export async function checkJoinTargets(
  transport: Transport,
  seeds: readonly string[],
  dataDir: string,
  clusterId: string,
): Promise<void> {
  for (const seed of seeds) {
    try {
      await transport.request(seed, { kind: "ping" }, CHECK_TIMEOUT_MS);
      return;
    } catch (err) {
      if (err instanceof TransportError && err.code === "ERR_REJECTED")
        throw new ConfigError(
          `the data directory ${dataDir} already belongs to cluster ${clusterId}, but --join ${seed} is a member of another cluster (${err.message}); a node joins a cluster only with an empty data directory: give a new --data to join it, or drop --join to run in cluster ${clusterId}`,
        );
    }
  }
}
