/**
 * Stores that brought something new for a key this node does not replicate under its ring. The writer (a
 * coordinator, or a repair) went by an older ring, so the key's replicas of the current ring may lack it
 * (a joiner would, until a read repaired it). The set as merged here is sent on to them, in the
 * background, at most MAX_STRAYS_IN_FLIGHT at a time; past that, what arrives is not sent on (counted)
 * and read repair brings it to the replicas that lack it.
 *
 * Only a change is sent on, so two nodes whose rings differ stop after one exchange. Not sent on:
 * handoff's stores (their sender has the newer ring), and anything while this node is joining (its ring
 * is the older one). A node whose own ring is otherwise older sends a redundant copy to the old replicas.
 */
import type { ReplicaPeer } from "../replication/coordinator.js";
import type { StoredSibling } from "../versioning/object-codec.js";

export const MAX_STRAYS_IN_FLIGHT = 64;

export interface StrayForwarderDeps {
  readonly selfId: string;
  /** Is this node still joining (its ring is older than its senders')? */
  readonly joining: () => boolean;
  readonly preferenceList: (key: Uint8Array) => readonly string[];
  readonly peer: (nodeId: string) => ReplicaPeer;
}

export class StrayForwarder {
  private inFlight = 0;
  /**
   * Sent on to the replicas (`failed`: of those, sends that every replica refused or missed), or not sent
   * on (`dropped`: over the bound; left to read repair).
   */
  readonly counts = { forwarded: 0, failed: 0, dropped: 0 };

  constructor(private readonly d: StrayForwarderDeps) {}

  /** Stray stores being sent on now. */
  get straysInFlight(): number {
    return this.inFlight;
  }

  /** A store changed `key` here to `set`: send it on if this node is not one of the key's replicas. */
  stored(key: Uint8Array, set: readonly StoredSibling[]): void {
    if (this.d.joining()) return;
    const list = this.d.preferenceList(key);
    if (list.length === 0 || list.includes(this.d.selfId)) return;
    if (this.inFlight >= MAX_STRAYS_IN_FLIGHT) {
      this.counts.dropped++;
      return;
    }
    this.inFlight++;
    this.counts.forwarded++;
    void Promise.allSettled(list.map((id) => this.d.peer(id).store(key, set))).then((all) => {
      this.inFlight--;
      if (all.every((r) => r.status === "rejected")) this.counts.failed++;
    });
  }
}
