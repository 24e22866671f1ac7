/**
 * Tombstone purging: a deleted key's tombstones go away once it is safe, and only then.
 *
 * A delete is a tombstone (a sibling with the deleted flag, dvv.ts); it must stay while any copy of an
 * older version of the key may still turn up somewhere, or that version would come back (a resurrection).
 * A key's tombstones (its set holds nothing but tombstones) are purged when, and only when:
 *
 * 1. the newest of them is older than the grace period (`graceMs`, measured from the `writtenAtMs` the
 *    coordinator stamped, by each replica's own clock): hints, the one copy of a key's versions kept
 *    outside its primaries, are dropped past the hint window, which the node's configuration keeps below
 *    the grace period, so no hint of an older version can still be delivered; and a node away longer than
 *    the grace period is refused at its start (node/start-plan.ts), so none comes back with one either;
 * 2. every primary replica of the key (its preference list under one ring version) holds the identical
 *    set, and every other member of the cluster holds that set too or nothing at all for the key; every
 *    member is up, holds no hint for the key, and has no ownership handoff under way (a handoff pass may
 *    still be moving older versions);
 * 3. then each holder deletes its set only if it is still exactly that set (`Replica.purgeIfEqual`), so
 *    a write or a merge that came meanwhile keeps its key.
 *
 * Why every member and not only the primaries: a node keeps its copy of a key it no longer replicates
 * after handing it off (replication/handoff.ts), and a store for a key it does not replicate leaves a
 * copy too (a stray); such a copy, older than the delete, would come back if the node became a replica
 * of the key again, or sent it on, after the purge. So every copy in the cluster must agree, and a member
 * that is down (it may hold one) holds purges back until it returns or is removed. A member that holds
 * another set for a key it does not replicate is sent the owner's tombstones (an ordinary `store`): they
 * supersede what the delete saw, and anything else it holds (a write the primaries never got) goes on to
 * them as a stray store does (node/stray-forwarder.ts), so the key is no longer all tombstones.
 *
 * The agreement. The key's first replica (its *owner*) drives it: a sweep reads every set this node holds,
 * in pages, paced; for the tombstones past grace that it owns it asks every other member (`purge_check`,
 * one request per member per page) whether it holds what it must and nothing stands in the way (`judge`,
 * the same rule everywhere); for the keys every member agreed on it asks them to purge (`purge`), and it
 * purges its own copy last, only once every member said it purged (or held nothing).
 *
 * Why the owner's copy goes last: while it holds the tombstone, a replica that purged and then received a
 * stale older version (a delayed message) gets the tombstone back from it by anti-entropy, which covers
 * that version; and if any peer could not purge (it changed, it did not answer), the owner keeps its copy,
 * so the partial purge only spreads the tombstone again (anti-entropy), to be purged at a later sweep.
 * A partial purge can never bring back an older value: every replica held the identical tombstones, and
 * only a copy of exactly those is deleted anywhere.
 *
 * Deterministic: time, timers, the ring and the network come in through the deps.
 */
import { assert } from "../core/assert.js";
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import {
  type AnswerOf,
  MAX_PURGE_KEYS,
  PURGE_VERDICTS,
  type PurgeRequest,
  type PurgeVerdict,
} from "../transport/messages.js";
import {
  decodeSiblings,
  ObjectDecodeError,
  type StoredSibling,
  tombstoneWrittenAt,
} from "../versioning/object-codec.js";
import { KeyLockOverloadedError } from "./key-lock.js";
import { type Replica, sameDots } from "./replica.js";

/** Why a key's tombstones were not purged this time (a peer's verdict, or what the owner saw itself). */
export type PurgeRefusal =
  | Exclude<PurgeVerdict, "ok">
  /** A primary of the key is down (the owner does not ask). */
  | "replica_down"
  /** A primary did not answer (the request failed or timed out). */
  | "unreachable"
  /** A replica's set changed between the agreement and its purge (it keeps it). */
  | "changed";

export const PURGE_REFUSALS: readonly PurgeRefusal[] = [
  ...PURGE_VERDICTS.filter((v): v is Exclude<PurgeVerdict, "ok"> => v !== "ok"),
  "replica_down",
  "unreachable",
  "changed",
];

/** Is every sibling a tombstone, the newest written at least `graceMs` before `now`? */
export function pastGrace(set: readonly StoredSibling[], now: number, graceMs: number): boolean {
  if (set.length === 0) return false;
  let newest = 0;
  for (const s of set) {
    if (!s.value.deleted) return false;
    newest = Math.max(newest, s.value.writtenAtMs);
  }
  return now - newest >= graceMs;
}

/** What a replica knows of a key when it judges a purge of it. */
export interface ReplicaFacts {
  /** It purges tombstones at all. */
  readonly purging: boolean;
  /** Its ring's version (undefined before it has one) and the key's preference list under it. */
  readonly ringVersion: number | undefined;
  readonly list: readonly string[];
  /** No ownership handoff under way, the last complete pass was for its current ring, and it is `up`. */
  readonly handoffSettled: boolean;
  /** It holds a hint for the key (for any target). */
  readonly hintHeld: boolean;
  /** Its own set for the key. */
  readonly held: readonly StoredSibling[];
}

/**
 * A member's verdict on purging `proposal.agreed` (the owner's set of the key, all tombstones), proposed
 * by `proposal.owner` under its ring `proposal.ringVersion`: "ok" only if, under the same ring, in which
 * the owner is the key's first replica, the member holds exactly that set (a replica of the key) or that
 * set or nothing (any other member), the set is past the grace period by its clock, and it has no hint
 * for the key and no handoff under way. Pure.
 */
export function judge(
  f: ReplicaFacts,
  proposal: {
    readonly owner: string;
    readonly self: string;
    readonly ringVersion: number;
    readonly agreed: readonly StoredSibling[];
    readonly now: number;
    readonly graceMs: number;
  },
): PurgeVerdict {
  if (!f.purging) return "off";
  if (f.ringVersion !== proposal.ringVersion || f.list[0] !== proposal.owner) return "ring_differs";
  if (!f.handoffSettled) return "handoff_pending";
  const replica = f.list.includes(proposal.self);
  if (!sameDots(f.held, proposal.agreed) && (replica || f.held.length > 0)) return "differs";
  if (!pastGrace(proposal.agreed, proposal.now, proposal.graceMs)) return "young";
  if (f.hintHeld) return "hint_pending";
  return "ok";
}

/** How fast a node sweeps and purges. */
export interface TombstonePacing {
  /** The wait between the end of one sweep of the node's sets and the start of the next. */
  readonly sweepIntervalMs: number;
  /** Sets read per second at most by a sweep. */
  readonly scanKeysPerSecond: number;
  /** Keys proposed for purging per second at most (each costs two requests per other primary). */
  readonly purgesPerSecond: number;
  /** Sets per page of a sweep (at most MAX_PURGE_KEYS of them proposed together), and bytes. */
  readonly pageKeys: number;
  readonly pageBytes: number;
}

export const DEFAULT_TOMBSTONE_PACING: TombstonePacing = {
  sweepIntervalMs: 60_000,
  scanKeysPerSecond: 20_000,
  purgesPerSecond: 2_000,
  pageKeys: MAX_PURGE_KEYS,
  pageBytes: 1 << 20,
};

export interface TombstoneDeps {
  readonly selfId: string;
  readonly replica: Pick<Replica, "scan" | "read" | "purgeIfEqual">;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly graceMs: number;
  /** Purge at all (false: sweeps only count the tombstones, and peers' proposals get "off"). */
  readonly purging: boolean;
  /** The current ring: its version and a key's preference list (undefined before the node has one). */
  readonly ring: () => { readonly version: number; list(key: Uint8Array): readonly string[] } | undefined;
  /** Every other member of the cluster that has not left (each copy of a key must agree). */
  readonly members: () => readonly string[];
  /** Is this member up (not seen down by the failure detector)? */
  readonly alive: (id: string) => boolean;
  /** Sends a member the owner's set of a key (a `store`): the repair of a copy that differs. */
  readonly store: (peer: string, key: Uint8Array, set: readonly StoredSibling[]) => Promise<void>;
  /** Does this node hold a hint for the key (for any target)? */
  readonly hintHeld: (key: Uint8Array) => Promise<boolean>;
  /** See ReplicaFacts.handoffSettled. */
  readonly handoffSettled: () => boolean;
  /** A purge request to `peer`, answered. */
  readonly ask: <K extends "purge_check" | "purge">(
    peer: string,
    body: PurgeRequest<K>,
  ) => Promise<AnswerOf<K>>;
  readonly pacing?: TombstonePacing;
  /** This node deleted a key's tombstones (as its owner, or asked by it). */
  readonly onPurged?: () => void;
  /** A key this node owns was not purged this time, and why. */
  readonly onRefused?: (reason: PurgeRefusal) => void;
}

/** What /status and /metrics show. */
export interface TombstoneStats {
  /** Keys whose set is only tombstones, counted by the last complete sweep (null before one ended). */
  held: number | null;
  /** Of those, the ones this node owns that were past the grace period. */
  ownedPastGrace: number | null;
  /** Keys whose tombstones this node deleted. */
  purged: number;
  /** Keys this node owns not purged at a sweep, by why (one reason per key and sweep). */
  refused: Record<PurgeRefusal, number>;
  sweeps: number;
  lastSweepAt: number | null;
}

/** One key proposed for purging: its set as the owner holds it, and its other primaries. */
interface Proposal {
  readonly key: Uint8Array;
  readonly raw: Uint8Array;
  readonly set: StoredSibling[];
  readonly replicas: readonly string[];
}

export class TombstoneReaper {
  readonly stats: TombstoneStats = {
    held: null,
    ownedPastGrace: null,
    purged: 0,
    refused: Object.fromEntries(PURGE_REFUSALS.map((r) => [r, 0])) as Record<PurgeRefusal, number>,
    sweeps: 0,
    lastSweepAt: null,
  };
  private readonly pacing: TombstonePacing;
  private running: Promise<void> | undefined;
  private stopped = false;
  private paused = false;
  /** Resolves the loop's wait (a sleep, or a pause). */
  private wake: (() => void) | undefined;
  private sleeping: TimerHandle | undefined;
  /** A page's work under way (what `pause` waits for). */
  private busy: Promise<void> | undefined;

  constructor(private readonly d: TombstoneDeps) {
    this.pacing = d.pacing ?? DEFAULT_TOMBSTONE_PACING;
    const p = this.pacing;
    assert(
      p.pageKeys >= 1 && p.pageKeys <= MAX_PURGE_KEYS && p.scanKeysPerSecond > 0 && p.purgesPerSecond > 0,
      () => `tombstone pacing ${JSON.stringify(p)}`,
    );
  }

  start(): void {
    if (this.running !== undefined || this.stopped) return;
    this.running = this.loop();
  }

  /** Stops sweeping; resolves once the page under way is done. */
  stop(): Promise<void> {
    this.stopped = true;
    this.sleeping?.cancel();
    this.wake?.();
    return this.running ?? Promise.resolve();
  }

  /** No more purges until `resume`; resolves once the page under way is done (the simulator's quiet). */
  async pause(): Promise<void> {
    this.paused = true;
    await this.busy;
  }

  resume(): void {
    this.paused = false;
    this.wake?.();
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        this.sleeping?.cancel();
        this.sleeping = undefined;
        resolve();
      };
      if (ms !== Number.POSITIVE_INFINITY) this.sleeping = this.d.timers.after(ms, () => this.wake?.());
    });
  }

  private async loop(): Promise<void> {
    await this.wait(this.pacing.sweepIntervalMs);
    while (!this.stopped) {
      await this.sweep();
      if (this.stopped) return;
      await this.wait(this.pacing.sweepIntervalMs);
    }
  }

  /** One pass over every set this node holds. */
  private async sweep(): Promise<void> {
    let after: Uint8Array | undefined;
    let held = 0;
    let owned = 0;
    for (;;) {
      while (this.paused && !this.stopped) await this.wait(Number.POSITIVE_INFINITY);
      if (this.stopped) return;
      const started = this.d.clock.now();
      let proposed = 0;
      let pageKeys = 0;
      const work = (async () => {
        const page = await this.d.replica.scan(after, this.pacing.pageKeys, this.pacing.pageBytes);
        pageKeys = page.length;
        if (page.length === 0) return;
        after = Buffer.from(page[page.length - 1]!.key);
        const ring = this.d.ring();
        const now = this.d.clock.now();
        const proposals: Proposal[] = [];
        for (const e of page) {
          let newest: number | undefined;
          try {
            newest = tombstoneWrittenAt(e.value);
          } catch (err) {
            // A damaged set is not for a sweep to judge (reads report it).
            if (err instanceof ObjectDecodeError) continue;
            throw err;
          }
          if (newest === undefined) continue;
          held++;
          const list = ring?.list(e.key) ?? [];
          if (list[0] !== this.d.selfId || now - newest < this.d.graceMs) continue;
          owned++;
          const raw = Buffer.from(e.value);
          proposals.push({
            key: Buffer.from(e.key),
            raw,
            set: decodeSiblings(raw),
            replicas: list.filter((id) => id !== this.d.selfId),
          });
        }
        if (this.d.purging && ring !== undefined && proposals.length > 0) {
          proposed = proposals.length;
          await this.purge(ring.version, proposals);
        }
      })();
      this.busy = work.then(
        () => undefined,
        () => undefined,
      );
      try {
        await work;
      } catch {
        // A scan that failed (the engine stopping or failed) ends this sweep; the next starts over.
        return;
      }
      if (pageKeys === 0) break;
      const p = this.pacing;
      const due = Math.max((pageKeys * 1000) / p.scanKeysPerSecond, (proposed * 1000) / p.purgesPerSecond);
      const wait = due - (this.d.clock.now() - started);
      if (wait > 0) await this.wait(wait);
    }
    this.stats.held = held;
    this.stats.ownedPastGrace = owned;
    this.stats.sweeps++;
    this.stats.lastSweepAt = this.d.clock.now();
  }

  private refuse(reason: PurgeRefusal): void {
    this.stats.refused[reason]++;
    this.d.onRefused?.(reason);
  }

  /** Proposes these keys (this node owns them, past grace) to every other member; purges what all agree on. */
  private async purge(ringVersion: number, proposals: readonly Proposal[]): Promise<void> {
    const members = this.d.members();
    const down = !members.every((id) => this.d.alive(id));
    if (down || !this.d.handoffSettled()) {
      for (const _ of proposals) this.refuse(down ? "replica_down" : "handoff_pending");
      return;
    }
    const ready: Proposal[] = [];
    for (const p of proposals) {
      if (await this.d.hintHeld(p.key)) this.refuse("hint_pending");
      else ready.push(p);
    }
    const agreed = await this.round("purge_check", ringVersion, members, ready);
    const purged = await this.round("purge", ringVersion, members, agreed);
    // The owner's copy goes last, and only where every other primary purged (see the header).
    for (const p of purged) {
      let done: boolean;
      try {
        done = await this.d.replica.purgeIfEqual(p.key, p.set);
      } catch (err) {
        if (!(err instanceof KeyLockOverloadedError)) throw err;
        this.refuse("busy");
        continue;
      }
      if (done) {
        this.stats.purged++;
        this.d.onPurged?.();
      } else this.refuse("changed");
    }
  }

  /**
   * Sends `kind` with every proposal to every member (one request per member and page, all at once);
   * returns the proposals every member answered "ok", and counts a refusal for each other (the first
   * reason heard). A member that is no replica of a key and holds another set for it is sent the owner's.
   */
  private async round(
    kind: "purge_check" | "purge",
    ringVersion: number,
    members: readonly string[],
    proposals: readonly Proposal[],
  ): Promise<Proposal[]> {
    const refused = new Map<Proposal, PurgeRefusal>();
    const note = (p: Proposal, r: PurgeRefusal) => {
      if (!refused.has(p)) refused.set(p, r);
    };
    const repairs: Promise<void>[] = [];
    if (proposals.length === 0) return [];
    await Promise.all(
      members.map(async (peer) => {
        for (let i = 0; i < proposals.length; i += MAX_PURGE_KEYS) {
          const chunk = proposals.slice(i, i + MAX_PURGE_KEYS);
          let verdicts: Uint8Array;
          try {
            const a = await this.d.ask(peer, {
              kind,
              ringVersion,
              keys: chunk.map((p) => p.key),
              sets: chunk.map((p) => p.raw),
            });
            verdicts = a.verdicts;
          } catch {
            for (const p of chunk) note(p, "unreachable");
            continue;
          }
          chunk.forEach((p, j) => {
            const v = PURGE_VERDICTS[verdicts[j] ?? -1];
            // A missing verdict (a short answer) is no agreement.
            if (v === undefined) note(p, "unreachable");
            else if (v !== "ok") note(p, kind === "purge" && v === "differs" ? "changed" : v);
            // A copy at a member that is no replica of the key: it gets the tombstones (see the header).
            if (kind === "purge_check" && v === "differs" && !p.replicas.includes(peer))
              repairs.push(this.d.store(peer, p.key, p.set).catch(() => undefined));
          });
        }
      }),
    );
    await Promise.all(repairs);
    for (const r of refused.values()) this.refuse(r);
    return proposals.filter((p) => !refused.has(p));
  }

  /** The verdicts of this replica on a peer's `purge_check`. */
  async answerCheck(from: string, body: PurgeRequest<"purge_check">): Promise<AnswerOf<"purge_check">> {
    const verdicts = Buffer.alloc(body.keys.length);
    for (let i = 0; i < body.keys.length; i++)
      verdicts[i] = PURGE_VERDICTS.indexOf((await this.verdict(from, body, i)).verdict);
    return { kind: "purge_verdicts", verdicts };
  }

  /** This replica's purge-if-equal of each key of a peer's `purge`: "ok" where it deleted the set. */
  async answerPurge(from: string, body: PurgeRequest<"purge">): Promise<AnswerOf<"purge">> {
    const verdicts = Buffer.alloc(body.keys.length);
    for (let i = 0; i < body.keys.length; i++) {
      let { verdict, agreed } = await this.verdict(from, body, i);
      if (verdict === "ok" && agreed.length > 0) {
        try {
          if (await this.d.replica.purgeIfEqual(body.keys[i]!, agreed)) {
            this.stats.purged++;
            this.d.onPurged?.();
          } else verdict = "differs";
        } catch (err) {
          if (!(err instanceof KeyLockOverloadedError)) throw err;
          verdict = "busy";
        }
      }
      verdicts[i] = PURGE_VERDICTS.indexOf(verdict);
    }
    return { kind: "purge_results", verdicts };
  }

  private async verdict(
    from: string,
    body: PurgeRequest<"purge_check" | "purge">,
    i: number,
  ): Promise<{ verdict: PurgeVerdict; agreed: StoredSibling[] }> {
    const key = body.keys[i]!;
    let agreed: StoredSibling[];
    try {
      agreed = decodeSiblings(body.sets[i]!);
    } catch (err) {
      if (!(err instanceof ObjectDecodeError)) throw err;
      return { verdict: "differs", agreed: [] };
    }
    // Only tombstones are ever purged, whatever a peer proposes.
    if (agreed.length === 0 || agreed.some((s) => !s.value.deleted)) return { verdict: "differs", agreed };
    const held = await this.d.replica.read(key);
    const ring = this.d.ring();
    const verdict = judge(
      {
        purging: this.d.purging,
        ringVersion: ring?.version,
        list: ring?.list(key) ?? [],
        handoffSettled: this.d.handoffSettled(),
        hintHeld: await this.d.hintHeld(key),
        held,
      },
      {
        owner: from,
        self: this.d.selfId,
        ringVersion: body.ringVersion,
        agreed,
        now: this.d.clock.now(),
        graceMs: this.d.graceMs,
      },
    );
    // A member that holds nothing for the key has nothing to purge: its "ok" stands.
    return { verdict, agreed: held.length === 0 ? [] : agreed };
  }
}
