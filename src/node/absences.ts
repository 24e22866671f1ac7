/**
 * What tombstone purging must know of members that left (replication/tombstones.ts): a copy of a key
 * kept by a node the cluster no longer counts is one that no purge agreement asks about.
 *
 * A member removed by an operator (marked left without a leave of its own: it went from up or joining to
 * left) may still be running somewhere, cut off, with copies older than deletes made since; when it
 * hears of its removal it sends them on (node/leave-completion.ts). So, for a grace period after this
 * node saw the removal:
 * - purges wait for it as for a member that is down (`recentlyRemoved`): whatever it sends meanwhile
 *   meets the tombstones still there, which supersede it;
 * - its requests are still heard.
 * After that, and at once for a member that left by itself (its last pass delivered everything before it
 * marked itself left), nothing it sends is taken any more (`gone`), but gossip, through which it learns
 * that it left.
 *
 * Kept in memory: a node restarted since a removal no longer knows when it saw it, and takes the member
 * as long gone (it refuses what it sends; its purges may go ahead sooner).
 *
 * And this node's own last contact with the cluster (another member up in its view, sampled): a removed
 * node cut off for longer than the grace period sends nothing on when it hears of its removal
 * (leave-completion.ts), since purges may have gone ahead without it. Kept across restarts in the
 * heartbeat file (alive.ts).
 *
 * Pure bookkeeping: the caller passes the time and the view.
 */
import type { Membership } from "../membership/membership.js";
import type { MemberView } from "../transport/messages.js";

export class Absences {
  private readonly seen = new Map<string, MemberView["status"]>();
  private readonly removed = new Map<string, number>();
  private contact: number;

  constructor(view: readonly MemberView[], lastContactAtMs: number) {
    for (const m of view) this.seen.set(m.id, m.status);
    this.contact = lastContactAtMs;
  }

  /** A sample: is another member up in this node's view (or is there none)? */
  sample(connected: boolean, now: number): void {
    if (connected) this.contact = now;
  }

  /** The last time this node was in contact with the cluster. */
  get lastContactAtMs(): number {
    return this.contact;
  }

  /** How long this node has been out of contact with the cluster (0 while in contact). */
  cutOffFor(now: number): number {
    return Math.max(0, now - this.contact);
  }

  /** The view changed: a member that went to `left` from up or joining was removed. */
  viewChanged(view: readonly MemberView[], now: number): void {
    for (const m of view) {
      const before = this.seen.get(m.id);
      if (m.status === "left" && before !== undefined && before !== "left" && before !== "leaving")
        this.removed.set(m.id, now);
      this.seen.set(m.id, m.status);
    }
  }

  /** Members removed less than `withinMs` ago (since this node saw the removal, by its clock). */
  recentlyRemoved(now: number, withinMs: number): string[] {
    const out: string[] = [];
    for (const [id, at] of this.removed) {
      if (now - at < withinMs) out.push(id);
      else this.removed.delete(id);
    }
    return out.sort();
  }

  /** Is `id` a member that left, and not one removed less than `withinMs` ago? */
  gone(id: string, membership: Membership, now: number, withinMs: number): boolean {
    if (membership.member(id)?.status !== "left") return false;
    const at = this.removed.get(id);
    return at === undefined || now - at >= withinMs;
  }
}
