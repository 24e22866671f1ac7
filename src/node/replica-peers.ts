/**
 * The replicas this node talks to, one `ReplicaPeer` per member: its own replica directly, every other
 * member's behind the transport (replication/remote-replica.ts), found and judged through membership
 * (address, liveness; each contact's outcome feeds local suspicion).
 */
import type { Membership } from "../membership/membership.js";
import { localPeer, type ReplicaPeer } from "../replication/coordinator.js";
import type { HintStore } from "../replication/hints.js";
import { type PeerDirectory, remotePeer } from "../replication/remote-replica.js";
import type { Replica } from "../replication/replica.js";
import type { Clock } from "../runtime/runtime.js";
import type { Transport } from "../transport/transport.js";

export class ReplicaPeers {
  private readonly peers = new Map<string, ReplicaPeer>();
  readonly directory: PeerDirectory;

  constructor(
    private readonly d: {
      readonly selfId: string;
      readonly membership: Membership;
      readonly replica: Replica;
      /** The hints this node keeps when it stands in for another (sloppy quorum). */
      readonly hints?: HintStore;
      readonly transport: Transport;
      readonly clock: Clock;
      readonly requestTimeoutMs: number;
      /** A read or store sent to another replica timed out. */
      readonly onTimeout?: (op: "read" | "store") => void;
    },
  ) {
    const m = d.membership;
    this.directory = {
      addressOf: (id) => m.member(id)?.peer,
      reachable: (id) => id === d.selfId || m.liveness(id, d.clock.now()) !== "down",
      contacted: (id, ok) => (ok ? m.contactSucceeded(id) : m.contactFailed(id, d.clock.now())),
    };
    this.peers.set(d.selfId, localPeer(d.selfId, d.replica, d.hints));
  }

  /** The replica of member `id` (this node's own for its id). */
  peer(id: string): ReplicaPeer {
    let p = this.peers.get(id);
    if (p === undefined) {
      const d = this.d;
      p = remotePeer(id, d.transport, this.directory, d.requestTimeoutMs, d.onTimeout);
      this.peers.set(id, p);
    }
    return p;
  }
}
