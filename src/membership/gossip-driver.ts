/**
 * Drives a Membership state machine: a gossip round every `intervalMs` (push-pull with `fanout` peers),
 * and the answer to gossip from others. Time, randomness and the network come in through interfaces, so
 * the same driver runs over TCP in a node and over the simulated network in bench:gossip.
 *
 * An exchange with a peer, by digest and delta (transport/messages.ts, GossipRequest):
 * 1. the opening request carries this node's digest: the hash of its directory (every member's id,
 *    incarnation and status), every heartbeat in id order, and the ring's version and hash;
 * 2. the peer takes the heartbeats if its directory is the same (the steady state: heartbeats are all
 *    that travels, 4 bytes a member) and answers with its own digest, full (naming every member) if the
 *    directories differ; with its ring, or the change from ours, if ours is older; and with its ring's
 *    version (`ringWant`) if ours is newer;
 * 3. only if the directories differ or the peer's ring is older, a closing request carries the entries
 *    the peer lacks (or holds older), the ring it asked for, and `want`, the ids of entries it holds
 *    newer; its answer carries those entries.
 * The digest also carries, while departed members are in the directory, who was seen holding each
 * (membership.ts forgets them once every live member has), and the answer to a closing request adds the
 * final entries of members the answerer forgot that the asker pushed as not left.
 * Full entries thus travel only to a node that lacks them, always from the node that holds them, and go
 * through Membership.merge with its rules (who may say a member left): the sender of each is `from`.
 * `wholeView` instead makes every exchange send the whole view and ring both ways (protocol 9's
 * exchange, kept for a node of that version and for bench:gossip's comparison).
 */
import type { Clock, Random, Timers } from "../runtime/runtime.js";
import type { AnswerOf, GossipRequest, RequestOf } from "../transport/messages.js";
import type { Transport } from "../transport/transport.js";
import type { Membership } from "./membership.js";

export interface GossipDriverDeps {
  readonly membership: Membership;
  readonly transport: Transport;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly random: Random;
  readonly intervalMs: number;
  readonly requestTimeoutMs: number;
  /** Called after every change of membership epoch (the ring, or a member's status or place). */
  readonly onChange?: () => void;
  /** Send the whole view and ring in every exchange (protocol 9), instead of digests and deltas. */
  readonly wholeView?: boolean;
  /** An exchange this node opened with member `id` completed: each side has what the other held. */
  readonly onExchanged?: (id: string) => void;
}

export class GossipDriver {
  private timer: { cancel(): void } | undefined;
  private stopped = false;
  private lastEpoch = -1;
  rounds = 0;

  constructor(private readonly d: GossipDriverDeps) {}

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.d.timers.after(this.d.intervalMs, () => {
      this.round();
      this.schedule();
    });
  }

  private changed(): void {
    const m = this.d.membership;
    if (m.epoch !== this.lastEpoch) {
      this.lastEpoch = m.epoch;
      this.d.onChange?.();
    }
  }

  /** One round: tick, then an exchange with each of the chosen peers. */
  round(): void {
    const m = this.d.membership;
    this.rounds++;
    const peers = m.tick(this.d.clock.now(), this.d.random);
    this.changed();
    for (const id of peers) this.exchangeWith(id);
  }

  /** One exchange with member `id` (the file's opening comment). */
  exchangeWith(id: string): void {
    const m = this.d.membership;
    const addr = m.member(id)?.peer;
    if (addr === undefined || this.stopped) return;
    if (this.d.wholeView === true) {
      const body = { kind: "gossip", members: m.view(), ring: m.ring } as const;
      this.d.transport.request(addr, body, this.d.requestTimeoutMs).then(
        (res) => {
          m.contactSucceeded(id);
          m.merge(res.members, res.ring, this.d.clock.now(), id);
          this.changed();
          this.d.onExchanged?.(id);
        },
        () => m.contactFailed(id, this.d.clock.now()),
      );
      return;
    }
    const opening = { kind: "gossip", members: [], ring: null, digest: m.digest(false) } as const;
    this.d.transport.request(addr, opening, this.d.requestTimeoutMs).then(
      (res) => {
        m.contactSucceeded(id);
        this.close(id, addr, res);
      },
      () => m.contactFailed(id, this.d.clock.now()),
    );
  }

  /** Takes the answer to an opening, and sends the closing request if either side lacks something. */
  private close(id: string, addr: string, res: AnswerOf<"gossip">): void {
    const m = this.d.membership;
    const now = this.d.clock.now();
    m.merge(res.members, res.ring, now, id);
    if (res.ringDelta !== undefined) m.mergeRingDelta(res.ringDelta, now, id);
    let push: GossipRequest["members"] = [];
    let want: readonly string[] = [];
    if (res.digest?.ids !== undefined) {
      const c = m.compareDigest(res.digest, now, id);
      push = c.lacks;
      want = c.wants;
    } else if (res.digest !== undefined) m.takeHeartbeats(res.digest, now, id);
    const ring = res.ringWant === undefined ? undefined : m.ringFor(res.ringWant);
    this.changed();
    if (this.stopped) return;
    if (push.length === 0 && want.length === 0 && ring === undefined) {
      this.d.onExchanged?.(id);
      return;
    }
    const closing: GossipRequest = {
      kind: "gossip",
      members: push,
      ring: ring !== undefined && "ring" in ring ? ring.ring : null,
      want,
      ...(ring !== undefined && "ringDelta" in ring ? { ringDelta: ring.ringDelta } : {}),
    };
    this.d.transport.request(addr, closing, this.d.requestTimeoutMs).then(
      (last) => {
        m.merge(last.members, last.ring, this.d.clock.now(), id);
        this.changed();
        this.d.onExchanged?.(id);
      },
      () => m.contactFailed(id, this.d.clock.now()),
    );
  }

  /** Answers a gossip request from member `from` (an opening, a closing, or protocol 9's whole view). */
  onGossip(from: string, body: RequestOf<"gossip">): AnswerOf<"gossip"> {
    const m = this.d.membership;
    const now = this.d.clock.now();
    // It just reached us, so it is alive: no reason to keep waiting out a reconnect backoff.
    const addr = m.member(from)?.peer;
    if (addr !== undefined) this.d.transport.resetBackoff(addr);
    m.contactSucceeded(from);
    m.merge(body.members, body.ring, now, from);
    if (body.ringDelta !== undefined) m.mergeRingDelta(body.ringDelta, now, from);
    this.changed();
    const d = body.digest;
    if (d !== undefined) {
      const theirs = { version: d.ringVersion, hash: d.ringHash };
      const ring = m.ringFor(theirs);
      const same = m.takeHeartbeats(d, now, from);
      this.changed();
      return {
        kind: "gossip",
        members: [],
        ring: ring !== undefined && "ring" in ring ? ring.ring : null,
        digest: m.digest(!same),
        ...(ring !== undefined && "ringDelta" in ring ? { ringDelta: ring.ringDelta } : {}),
        ...(m.wantsRing(theirs) ? { ringWant: m.ringRef } : {}),
      };
    }
    if (body.want !== undefined)
      return {
        kind: "gossip",
        members: [...m.entriesFor(body.want), ...m.departuresFor(body.members)],
        ring: null,
      };
    return { kind: "gossip", members: m.view(), ring: m.ring };
  }
}
