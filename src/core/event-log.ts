/**
 * A bounded log of recent cluster events, as a node saw them (the dashboard's "recent membership
 * events"): a member joined, changed state (up, suspect, down, leaving, left), the ring moved
 * partitions. Anyone holding the node's log may record into it (`record`); the node itself records what
 * it sees change between two looks at its view (api/dashboard.ts). Pure: the time of each event is
 * given by the caller.
 *
 * Bounded: the newest `capacity` events are kept, oldest dropped first; each has a sequence number, so
 * a reader asks for what came after the last one it has (`since`).
 */
import { assert } from "./assert.js";

export type ClusterEventKind =
  /** A member appeared in this node's view. */
  | "joined"
  /** A member's state changed (`from` -> `to`: joining, up, suspect, down, leaving, left). */
  | "state"
  /** The ring changed (`detail` says how many partitions moved). */
  | "ring"
  /** Anything else worth a line (a refused peer, a handoff that ended, ...). */
  | "note";

export interface ClusterEvent {
  readonly seq: number;
  /** When it happened (ms since the epoch, the recorder's clock). */
  readonly at: number;
  readonly kind: ClusterEventKind;
  /** The member it is about, if one. */
  readonly member: string | null;
  readonly from: string | null;
  readonly to: string | null;
  /** A short sentence, for people. */
  readonly detail: string;
}

export type NewClusterEvent = Omit<ClusterEvent, "seq" | "member" | "from" | "to"> & {
  readonly member?: string | null;
  readonly from?: string | null;
  readonly to?: string | null;
};

export class EventLog {
  private readonly ring: ClusterEvent[] = [];
  private nextSeq = 1;

  constructor(readonly capacity = 200) {
    assert(Number.isInteger(capacity) && capacity >= 1, () => `an event log of ${capacity} events`);
  }

  /** Records an event; returns it with its sequence number. */
  record(e: NewClusterEvent): ClusterEvent {
    const full: ClusterEvent = {
      seq: this.nextSeq++,
      at: e.at,
      kind: e.kind,
      member: e.member ?? null,
      from: e.from ?? null,
      to: e.to ?? null,
      detail: e.detail.length > 500 ? `${e.detail.slice(0, 497)}...` : e.detail,
    };
    this.ring.push(full);
    if (this.ring.length > this.capacity) this.ring.shift();
    return full;
  }

  /** The events kept with a sequence number above `seq` (all of them by default), oldest first. */
  since(seq = 0): ClusterEvent[] {
    return this.ring.filter((e) => e.seq > seq);
  }

  /** The sequence number of the newest event (0: none yet). */
  get last(): number {
    return this.nextSeq - 1;
  }
}
