/**
 * Drives a Membership state machine: a gossip round every `intervalMs` (push-pull with `fanout` peers),
 * and the answer to gossip from others. Time, randomness and the network come in through interfaces, so
 * the same driver runs over TCP in a node and over the simulated network in bench:gossip.
 */
import type { Clock, Random, Timers } from "../runtime/runtime.js";
import type { AnswerOf, RequestOf } from "../transport/messages.js";
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

  /** One round: tick, then push our view to the chosen peers and merge what they answer. */
  round(): void {
    const m = this.d.membership;
    this.rounds++;
    const peers = m.tick(this.d.clock.now(), this.d.random);
    this.changed();
    for (const id of peers) this.exchangeWith(id);
  }

  /** One push-pull with member `id`: our view to it, its answer merged as its word. */
  exchangeWith(id: string): void {
    const m = this.d.membership;
    const addr = m.member(id)?.peer;
    if (addr === undefined || this.stopped) return;
    const body = { kind: "gossip", members: m.view(), ring: m.ring } as const;
    this.d.transport.request(addr, body, this.d.requestTimeoutMs).then(
      (res) => {
        m.contactSucceeded(id);
        m.merge(res.members, res.ring, this.d.clock.now(), id);
        this.changed();
      },
      () => m.contactFailed(id, this.d.clock.now()),
    );
  }

  /** Answers a gossip request from member `from`: merge theirs (as its word), return ours. */
  onGossip(from: string, body: RequestOf<"gossip">): AnswerOf<"gossip"> {
    const m = this.d.membership;
    // It just reached us, so it is alive: no reason to keep waiting out a reconnect backoff.
    const addr = m.member(from)?.peer;
    if (addr !== undefined) this.d.transport.resetBackoff(addr);
    m.contactSucceeded(from);
    m.merge(body.members, body.ring, this.d.clock.now(), from);
    this.changed();
    return { kind: "gossip", members: m.view(), ring: m.ring };
  }
}
