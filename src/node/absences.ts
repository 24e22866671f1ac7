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
 * Such a node may have been removed without knowing it yet: it learns that from the claimant or the
 * approver, some gossip rounds after contact resumes, and meanwhile the others refuse what it sends but a
 * newcomer it admitted would not. So once it finds itself cut off for longer than the grace period (at a
 * sample, or at start), it is `unsure` of its membership until a gossip exchange of its own has completed
 * with every other member it sees up (at least one; none is needed when it has no other member that has
 * not left): any of them that holds its removal passes it on, and the approver's word is taken (while a
 * claim of its removal waits for that word, it stays unsure). The node serves no join and hands nothing
 * off meanwhile (node-core.ts).
 *
 * Pure bookkeeping: the caller passes the time and the view.
 */
import type { Membership } from "../membership/membership.js";
import type { MemberView } from "../transport/messages.js";

export class Absences {
  private readonly seen = new Map<string, MemberView["status"]>();
  private readonly removed = new Map<string, number>();
  private contact: number;
  /** Since when this node is unsure that it is still a member (undefined: sure). */
  private unsureAt: number | undefined;
  /** The last contact before this node became unsure (what it saves while unsure). */
  private unsureContact = 0;
  /** The members a gossip exchange of this node's completed with since it became unsure. */
  private readonly heard = new Set<string>();

  /** `graceMs`: the tombstone grace period (undefined: purging is off, and nothing can be resurrected). */
  constructor(
    view: readonly MemberView[],
    lastContactAtMs: number,
    now: number,
    private readonly graceMs: number | undefined,
  ) {
    for (const m of view) this.seen.set(m.id, m.status);
    this.contact = lastContactAtMs;
    this.checkCutOff(now);
  }

  private checkCutOff(now: number): void {
    if (this.graceMs !== undefined && now - this.contact > this.graceMs && this.unsureAt === undefined) {
      this.unsureAt = now;
      this.unsureContact = this.contact;
      this.heard.clear();
    }
  }

  /** A sample: is another member up in this node's view (or is there none)? */
  sample(connected: boolean, now: number): void {
    this.checkCutOff(now);
    if (connected) this.contact = now;
  }

  /** A gossip exchange this node opened with member `id` completed (both ways). */
  exchanged(id: string): void {
    if (this.unsureAt !== undefined) this.heard.add(id);
  }

  /** When this node became unsure that it is still a member, or undefined when it is sure. */
  get unsureSince(): number | undefined {
    return this.unsureAt;
  }

  /**
   * Settles an unsure node: `up` are the other members up in its view, `others` how many other members
   * have not left, `leftClaimedAt` when a claim that this node left last reached it without being taken
   * (it stays unsure after one: the claim waits for its approver's word). Returns undefined once sure,
   * else the members still to be heard from (none while no other member is up).
   */
  settle(
    up: readonly string[],
    others: number,
    leftClaimedAt: number | undefined,
  ): readonly string[] | undefined {
    if (this.unsureAt === undefined) return undefined;
    const waiting = up.filter((id) => !this.heard.has(id));
    const claimed = leftClaimedAt !== undefined && leftClaimedAt >= this.unsureAt;
    if (!claimed && (others === 0 || (up.length > 0 && waiting.length === 0))) {
      this.unsureAt = undefined;
      this.heard.clear();
      return undefined;
    }
    return waiting;
  }

  /**
   * The last time this node was in contact with the cluster, as saved across restarts: while it is unsure
   * of its membership, the contact before it became unsure (so that a restart leaves it unsure).
   */
  get lastContactAtMs(): number {
    return this.unsureAt === undefined ? this.contact : this.unsureContact;
  }

  /** How long this node has been out of contact with the cluster (0 while in contact). */
  cutOffFor(now: number): number {
    return Math.max(0, now - this.contact);
  }

  /** Cut off for longer than the grace period: now, or since, with its membership not yet confirmed. */
  cutOffTooLong(now: number): boolean {
    return this.unsureAt !== undefined || (this.graceMs !== undefined && this.cutOffFor(now) > this.graceMs);
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
