/**
 * Another node's replica, as the coordinator and handoff see it (a ReplicaPeer), behind the transport:
 * `read` and `store` requests, their sibling sets as stored-object bytes (versioning/object-codec.ts,
 * decoded with its validation here), and where a node is and whether it is worth asking (PeerDirectory).
 */
import { type Transport, TransportError } from "../transport/transport.js";
import { decodeSiblings, encodeSiblings } from "../versioning/object-codec.js";
import type { ReplicaPeer } from "./coordinator.js";

/** Where a node is, and whether it is worth asking now. */
export interface PeerDirectory {
  /** Peer address of a member, if known. */
  addressOf(nodeId: string): string | undefined;
  /** False when the failure detector has declared the node down: requests to it fail at once. */
  reachable(nodeId: string): boolean;
  /** Reports the outcome of a direct contact (feeds local suspicion). */
  contacted(nodeId: string, ok: boolean): void;
}

export function remotePeer(
  nodeId: string,
  transport: Transport,
  dir: PeerDirectory,
  timeoutMs: number,
  /** Called when a request to this replica timed out (for the metrics). */
  onTimeout?: (kind: "read" | "store") => void,
): ReplicaPeer {
  const call = async <T>(kind: "read" | "store", fn: (addr: string) => Promise<T>): Promise<T> => {
    const addr = dir.addressOf(nodeId);
    if (addr === undefined || !dir.reachable(nodeId)) throw new Error(`replica ${nodeId} is down`);
    try {
      const out = await fn(addr);
      dir.contacted(nodeId, true);
      return out;
    } catch (err) {
      dir.contacted(nodeId, false);
      if (err instanceof TransportError && err.code === "ERR_TIMEOUT") onTimeout?.(kind);
      throw err;
    }
  };
  return {
    nodeId,
    read: (key, hintFor) =>
      call("read", async (addr) => {
        const body = { kind: "read", key } as const;
        const res = await transport.request(
          addr,
          hintFor === undefined ? body : { ...body, hintFor },
          timeoutMs,
        );
        return res.set === null ? [] : decodeSiblings(res.set);
      }),
    store: (key, set, handoff, hintFor) =>
      call("store", async (addr) => {
        const body = {
          kind: "store",
          key,
          set: encodeSiblings(set),
          ...(handoff === true ? { handoff } : {}),
        } as const;
        await transport.request(addr, hintFor === undefined ? body : { ...body, hintFor }, timeoutMs);
      }),
  };
}
