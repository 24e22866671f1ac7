/**
 * Where keys live under the current ring: the preference table of the ring this node holds (rebuilt when
 * the ring's version changes), a key's preference list, and the partitions this node owns or replicates.
 */
import type { Membership } from "../membership/membership.js";
import { PreferenceTable } from "../ring/ring.js";
import type { RingView } from "../transport/messages.js";

export class Placement {
  private table: PreferenceTable | undefined;
  private tableRingVersion = -1;
  /** For the current table: each other node that replicates a partition with this one, and which. */
  private sharedWith: Map<string, number[]> | undefined;

  constructor(
    private readonly membership: Membership,
    private readonly selfId: string,
    private readonly n: number,
  ) {}

  /** The preference table of a ring, over the members as they are placed now. */
  tableOf(ring: RingView): PreferenceTable {
    return new PreferenceTable(
      { partitions: ring.partitions, owners: ring.owners },
      this.membership.placementMembers(),
      this.n,
    );
  }

  /** The preference table of the current ring (undefined before the node has a ring). */
  current(): PreferenceTable | undefined {
    const ring = this.membership.ring;
    if (ring === null) return undefined;
    if (this.table === undefined || this.tableRingVersion !== ring.version) {
      this.table = this.tableOf(ring);
      this.tableRingVersion = ring.version;
      this.sharedWith = undefined;
    }
    return this.table;
  }

  /** The partitions this node and `peer` both replicate under the current ring. */
  shared(peer: string): readonly number[] {
    return this.sharing().get(peer) ?? [];
  }

  /** The nodes that replicate at least one partition with this one, by id. */
  coReplicas(): readonly string[] {
    return [...this.sharing().keys()].sort();
  }

  private sharing(): Map<string, number[]> {
    const table = this.current();
    if (table === undefined) return new Map();
    if (this.sharedWith === undefined) {
      const out = new Map<string, number[]>();
      for (let p = 0; p < table.ring.partitions; p++) {
        const list = table.forPartition(p);
        if (!list.includes(this.selfId)) continue;
        for (const id of list)
          if (id !== this.selfId) {
            const ps = out.get(id);
            if (ps === undefined) out.set(id, [p]);
            else ps.push(p);
          }
      }
      this.sharedWith = out;
    }
    return this.sharedWith;
  }

  /** The key's preference list: node ids, in order ([] before the node has a ring). */
  preferenceList(key: Uint8Array): readonly string[] {
    return this.current()?.forKey(key) ?? [];
  }

  /** The nodes after the key's preference list on the ring, for a sloppy quorum ([] without a ring). */
  fallbacks(key: Uint8Array): readonly string[] {
    return this.current()?.fallbacksForKey(key) ?? [];
  }

  /** Does the current ring hold `id` (a partition, or among the members it was claimed for)? */
  inRing(id: string): boolean {
    const ring = this.membership.ring;
    if (ring === null) return false;
    return ring.owners.includes(id) || ring.members.some((k) => k.startsWith(`${id}:`));
  }

  /** The partitions this node owns (first in their preference list) and those it holds a replica of. */
  partitionsHeld(): { owned: number[]; replicated: number[] } {
    const ring = this.membership.ring;
    const pt = this.current();
    const owned: number[] = [];
    const replicated: number[] = [];
    if (ring !== null && pt !== undefined)
      for (let p = 0; p < ring.partitions; p++) {
        if (ring.owners[p] === this.selfId) owned.push(p);
        if (pt.forPartition(p).includes(this.selfId)) replicated.push(p);
      }
    return { owned, replicated };
  }
}
