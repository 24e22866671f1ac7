/**
 * The simulated network: the in-memory twin of transport/tcp-transport.ts, for tests and the whole-cluster
 * simulator. Every node's `SimTransport` hangs off one `SimNetwork`, which moves messages on virtual
 * timers (runtime/virtual-runtime.ts) and draws every delay and fault from one seeded Random, so a run
 * replays exactly from its seed (TigerBeetle's packet simulator, Jepsen's nemesis knobs).
 *
 * What it keeps of TCP's semantics (a test passing here should mean the same thing over TCP):
 * - A request gets its answer, of the kind the request expects, or exactly one TransportError: ERR_TIMEOUT
 *   when no answer came within `timeoutMs` (lost request, lost answer, cut link, slow handler),
 *   ERR_UNREACHABLE when no live node holds the address (one round trip later, as a refused
 *   connection), ERR_REJECTED when the handshake fails, ERR_REMOTE when the handler throws (its code if
 *   that is ERR_OVERLOADED or ERR_REJECTED), ERR_PROTOCOL when the answer is of another kind than the
 *   request expects, ERR_OVERLOADED when a link has too many requests in flight, ERR_CLOSED when the
 *   sender is closed or changes cluster (TCP then closes its connections). The conformance suite
 *   (test/transport/conformance.test.ts) runs the same cases over both.
 * - Handshake, checked on each request as it arrives: both cluster ids set and different, or the sender
 *   in a cluster and the receiver in none, is ERR_REJECTED; a sender in no cluster talking to a member
 *   may only `join` and `ping` (other requests: ERR_REJECTED).
 * - With `codec` on (the default) every frame is encoded and decoded with transport/messages.ts, so a message TCP
 *   would refuse is refused here too (ERR_PROTOCOL), and no object is shared between nodes.
 * - The handler receives the sender's node id, as TCP's handshake gives it.
 *
 * What it adds, all drawn from the seed: latency uniform in [minMs, maxMs] per message; loss,
 * duplication (a second copy, its own delay: a request's handler may run twice, the second answer is
 * ignored as late; with `atMostOnceRequests` the second copy of a request is discarded on arrival, as
 * TCP would) and extra delay (reordering) per message; one-way `cut`, `cutBoth`, `isolate`,
 * `partition`, `heal`; `crash` and `restart`; a hook that sees every message and may drop or delay it.
 * Cuts are checked when a message is sent and again when it would arrive (a cable cut also loses what is
 * on it).
 *
 * Crash semantics: a crashed node runs no more code. Its own requests in flight are forgotten: their
 * promises never settle (a dead process never sees an answer) and their timers are cancelled. Requests
 * it was handling are answered by a "connection reset" (ERR_UNREACHABLE) to their senders, as the
 * kernel does for a dead process; a late answer from its handler is dropped. Messages already on the
 * wire from it still arrive. `restart` brings the address back with a new handler (the same cluster id:
 * it is on disk) and a new epoch, so answers meant for the dead incarnation are dropped.
 * A request reaches only the incarnation of its destination that was up when it was sent, as over TCP,
 * where a connection dies with its process and nothing sent on it reaches the next one. A copy that
 * arrives to find that incarnation gone is dropped and its sender told ERR_UNREACHABLE: "never delivered"
 * (maybeDelivered false) only if the destination was already down when the request was sent (TCP's
 * connection refused), otherwise "maybe delivered" (a connection reset). Do not relax either rule: a
 * copy of a request refused by a dead node could otherwise reach its next incarnation after the sender
 * moved on to another replica, and a forwarded write would be applied twice, a history TCP cannot produce.
 *
 * Bounds: requests in flight per directed link (`maxInFlightPerLink`, like TCP's per connection; more
 * fail with ERR_OVERLOADED, on both sides), and messages on the wire per directed link
 * (`maxQueuedPerLink`; more are dropped and counted as overflow). Every message is one virtual timer,
 * so the scheduler's `maxTimers` bounds the whole network too.
 *
 * Pauses (`pause`, `resume`): a paused node is a process stopped (SIGSTOP, a long GC, a VM
 * migration): messages reaching it wait in its kernel buffer (held, in arrival order, up to
 * `maxHeldPerNode`; more are dropped as overflow) and the timeouts of its own requests do not fire;
 * `resume` delivers what was held, in order, then fires the timeouts that fell due. Its peers see only
 * silence. The node's own timers are paused by the caller (TimerGroup.pause in virtual-runtime.ts).
 *
 * Accounting: `sent + duplicated = delivered + dropped + inFlight + held` at every instant (checked by
 * `checkCounters()`). High-water marks of every per-link queue are kept in `highWater`, so a
 * simulator can assert that no queue outgrew its bound.
 */
import type { Clock, Random, Timers } from "../runtime/runtime.js";
import {
  ANSWER_KIND,
  type AnswerBody,
  type AnswerKind,
  type AnswerOf,
  decodeFrame,
  encodeFrame,
  type RequestBody,
  wireDeadlineMs,
} from "../transport/messages.js";
import {
  type RequestHandler,
  type Transport,
  TransportError,
  type TransportErrorCode,
} from "../transport/transport.js";

export interface SimLatency {
  readonly minMs: number;
  readonly maxMs: number;
}

export interface SimFaults {
  /** Probability that a message is lost. */
  readonly dropProbability: number;
  /** Probability that a message is delivered twice (the copy has its own delay). */
  readonly duplicateProbability: number;
  /** Probability that a message is held up by an extra delay, uniform in [0, delayMaxMs]. */
  readonly delayProbability: number;
  readonly delayMaxMs: number;
}

export interface SimLimits {
  /** Requests in flight from one address to another; more fail with ERR_OVERLOADED (TCP: per connection). */
  readonly maxInFlightPerLink: number;
  /** Messages on the wire from one address to another; more are dropped (a full buffer). */
  readonly maxQueuedPerLink: number;
  /** Messages held for one paused node; more are dropped (its receive buffers are full). */
  readonly maxHeldPerNode: number;
}

export const DEFAULT_SIM_LATENCY: SimLatency = { minMs: 1, maxMs: 5 };
export const NO_FAULTS: SimFaults = {
  dropProbability: 0,
  duplicateProbability: 0,
  delayProbability: 0,
  delayMaxMs: 0,
};
/**
 * 4096 in flight per link, as TCP's maxInFlightPerConnection. On the wire: each request in flight has at
 * most one request and one answer on the wire, twice that with duplication: 4 x 4096.
 */
export const DEFAULT_SIM_LIMITS: SimLimits = {
  maxInFlightPerLink: 4096,
  maxQueuedPerLink: 4 * 4096,
  maxHeldPerNode: 4 * 4096,
};

/** The largest each per-link queue has been since the network was made. */
export interface SimHighWater {
  /** Messages on the wire on one directed link. */
  wirePerLink: number;
  /** Requests in flight on one directed link, as the sender counts them. */
  pendingPerLink: number;
  /** Requests being handled on one directed link, as the receiver counts them. */
  handlingPerLink: number;
  /** Messages held for one paused node. */
  heldPerNode: number;
}

export interface SimNetworkOptions {
  readonly clock: Clock;
  readonly timers: Timers;
  /** The network's own stream (derive it from the run's seed): delays, losses, duplicates. */
  readonly random: Random;
  readonly latency?: Partial<SimLatency>;
  readonly faults?: Partial<SimFaults>;
  readonly limits?: Partial<SimLimits>;
  /** Encode and decode every frame with transport/messages.ts (default true). Off: bodies are passed by reference. */
  readonly codec?: boolean;
  /**
   * What a duplicated request does at its destination. false (the default): the handler runs once per
   * copy (an at-least-once network: the second answer is dropped as late). true: the second copy is
   * discarded on arrival (counted in `duplicatesDiscarded`), as TCP's sequence numbers discard a
   * retransmitted segment: over TCP the application never sees a request twice.
   */
  readonly atMostOnceRequests?: boolean;
}

/** A message as the hook sees it. `id` is unique in the network; an answer carries its request's id. */
export type SimMessage =
  | {
      readonly kind: "request";
      readonly id: number;
      readonly from: string;
      readonly to: string;
      readonly body: RequestBody;
    }
  | {
      readonly kind: "answer";
      readonly id: number;
      readonly from: string;
      readonly to: string;
      readonly body: AnswerBody;
    }
  | {
      readonly kind: "error";
      readonly id: number;
      readonly from: string;
      readonly to: string;
      readonly code: TransportErrorCode;
      readonly message: string;
      /** The request had reached the handler (a connection reset while handling it). */
      readonly maybeDelivered?: boolean;
    };

/** What the hook decides for a message: deliver it (also `undefined`), drop it, or delay it further. */
export type SimVerdict = "deliver" | "drop" | { readonly delayMs: number } | undefined;
export type SimHook = (m: SimMessage, now: number) => SimVerdict;

export interface SimCounters {
  /** Messages handed to the network (requests and answers; a duplicate copy is not counted here). */
  sent: number;
  /** Extra copies made by duplication. */
  duplicated: number;
  /** Copies that reached a live destination. */
  delivered: number;
  /** Copies lost, for any of the reasons below. */
  dropped: number;
  droppedRandom: number;
  droppedCut: number;
  droppedHook: number;
  droppedOverflow: number;
  /** Reached an address with no live node (a request is then answered by ERR_UNREACHABLE). */
  droppedDead: number;
  /** Copies on the wire now. */
  inFlight: number;
  /** Copies waiting at a paused node now. */
  held: number;
  /** Copies given an extra delay by the `delayProbability` fault (the reordering fault). */
  delayed: number;
  /** Duplicate request copies discarded on arrival (atMostOnceRequests; counted in delivered too). */
  duplicatesDiscarded: number;
  /** Pauses begun (`pause`). */
  pauses: number;
  /** Requests that failed, by cause. */
  timeouts: number;
  unreachable: number;
  rejected: number;
  overloaded: number;
  remoteErrors: number;
  protocolErrors: number;
  /** Answers that came after their request had timed out (or a duplicate answer). */
  late: number;
}

type NodeState = "up" | "crashed" | "closed";

interface Pending {
  readonly to: string;
  /** The answer kind the request expects. */
  readonly expects: AnswerKind;
  readonly resolve: (r: AnswerBody) => void;
  readonly reject: (e: unknown) => void;
  readonly timer: { cancel(): void };
}

/** A request delivered to a node and not yet answered. */
interface Handling {
  readonly requester: string;
  readonly requesterEpoch: number;
  readonly id: number;
}

/** A copy of a message on the wire, with what TCP would know about its connection. */
interface Wire {
  readonly msg: SimMessage;
  /** The encoded frame (codec on). */
  readonly frame: Uint8Array | undefined;
  /** Requests: the sender's node id and cluster id (its handshake). */
  readonly fromNode: string;
  readonly fromCluster: string;
  /** The requester's epoch: answers to a node restarted since are dropped. */
  readonly epoch: number;
  /**
   * Requests: the destination's epoch when sent, or -1 if it was not up; a copy reaching another
   * incarnation is dropped.
   */
  readonly toEpoch?: number;
  /** Shared by the copies of a duplicated message: whether one of them has arrived. */
  readonly twins?: { arrived: boolean };
}

const linkKey = (from: string, to: string): string => `${from}\u0000${to}`;

function inc(m: Map<string, number>, k: string, d: number): number {
  const v = (m.get(k) ?? 0) + d;
  if (v === 0) m.delete(k);
  else m.set(k, v);
  return v;
}

function checkProbability(name: string, p: number): void {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`${name} must be in [0, 1], got ${p}`);
}

export interface SimTransportOptions {
  /** The peer address, e.g. "sim:n1". */
  readonly address: string;
  readonly nodeId: string;
  /** "" for a node not yet in a cluster (it may then only send join and ping). */
  readonly clusterId?: string;
  readonly handler: RequestHandler;
}

export class SimNetwork {
  readonly counters: SimCounters = {
    sent: 0,
    duplicated: 0,
    delivered: 0,
    dropped: 0,
    droppedRandom: 0,
    droppedCut: 0,
    droppedHook: 0,
    droppedOverflow: 0,
    droppedDead: 0,
    inFlight: 0,
    held: 0,
    delayed: 0,
    duplicatesDiscarded: 0,
    pauses: 0,
    timeouts: 0,
    unreachable: 0,
    rejected: 0,
    overloaded: 0,
    remoteErrors: 0,
    protocolErrors: 0,
    late: 0,
  };
  /** Sees every message as it is sent (before faults); may drop or delay it. */
  hook: SimHook | undefined;
  readonly highWater: SimHighWater = {
    wirePerLink: 0,
    pendingPerLink: 0,
    handlingPerLink: 0,
    heldPerNode: 0,
  };
  /** @internal */
  readonly clock: Clock;
  /** @internal */
  readonly timers: Timers;
  /** @internal */
  readonly limits: SimLimits;
  /** @internal */
  readonly codec: boolean;
  readonly atMostOnceRequests: boolean;
  private readonly random: Random;
  private latencyMs: SimLatency = DEFAULT_SIM_LATENCY;
  private faultsNow: SimFaults = NO_FAULTS;
  private readonly nodes = new Map<string, SimTransport>();
  private readonly cuts = new Set<string>();
  private readonly isolated = new Set<string>();
  private readonly wirePerLink = new Map<string, number>();
  /** @internal Requests in flight per directed link, as the sender counts them. */
  readonly pendingPerLink = new Map<string, number>();
  /** @internal Requests being handled per directed link, as the receiver counts them. */
  readonly handlingPerLink = new Map<string, number>();
  /** @internal */
  nextId = 1;

  constructor(o: SimNetworkOptions) {
    this.clock = o.clock;
    this.timers = o.timers;
    this.random = o.random;
    this.codec = o.codec ?? true;
    this.atMostOnceRequests = o.atMostOnceRequests ?? false;
    this.limits = { ...DEFAULT_SIM_LIMITS, ...o.limits };
    if (
      !(
        this.limits.maxInFlightPerLink >= 1 &&
        this.limits.maxQueuedPerLink >= 1 &&
        this.limits.maxHeldPerNode >= 1
      )
    )
      throw new RangeError("link limits must be at least 1");
    this.setLatency(o.latency ?? {});
    this.setFaults(o.faults ?? {});
  }

  /** Attaches a node at `address`. An address may be reused only once its previous node is closed. */
  transport(o: SimTransportOptions): SimTransport {
    const prev = this.nodes.get(o.address);
    if (prev !== undefined && prev.state !== "closed")
      throw new Error(`sim network: ${o.address} is taken (crashed nodes come back with restart())`);
    const t = new SimTransport(this, o);
    this.nodes.set(o.address, t);
    return t;
  }

  /** The node attached at `address`, if any. */
  node(address: string): SimTransport | undefined {
    return this.nodes.get(address);
  }

  get latency(): SimLatency {
    return this.latencyMs;
  }

  get faults(): SimFaults {
    return this.faultsNow;
  }

  setLatency(l: Partial<SimLatency>): void {
    const next = { ...this.latencyMs, ...l };
    if (!(next.minMs >= 0 && next.maxMs >= next.minMs && Number.isFinite(next.maxMs)))
      throw new RangeError(`latency needs 0 <= minMs <= maxMs, got ${next.minMs}..${next.maxMs}`);
    this.latencyMs = next;
  }

  setFaults(f: Partial<SimFaults>): void {
    const next = { ...this.faultsNow, ...f };
    checkProbability("dropProbability", next.dropProbability);
    checkProbability("duplicateProbability", next.duplicateProbability);
    checkProbability("delayProbability", next.delayProbability);
    if (!(next.delayMaxMs >= 0 && Number.isFinite(next.delayMaxMs)))
      throw new RangeError(`delayMaxMs must be >= 0, got ${next.delayMaxMs}`);
    this.faultsNow = next;
  }

  // ------------------------------------------------------------------ partitions

  /** Loses every message from `a` to `b` (one way) until heal(). */
  cut(a: string, b: string): void {
    this.cuts.add(linkKey(a, b));
  }

  cutBoth(a: string, b: string): void {
    this.cut(a, b);
    this.cut(b, a);
  }

  /** Loses every message to or from `a` until heal(). */
  isolate(a: string): void {
    this.isolated.add(a);
  }

  /** Loses every message between a node of `groupA` and one of `groupB`, both ways, until heal(). */
  partition(groupA: readonly string[], groupB: readonly string[]): void {
    for (const a of groupA) for (const b of groupB) this.cutBoth(a, b);
  }

  /** Removes every cut, isolation and partition (crashed nodes stay crashed). */
  heal(): void {
    this.cuts.clear();
    this.isolated.clear();
  }

  /** @internal The epoch of the node at `a` if it is up, else -1. */
  epochOfLive(a: string): number {
    const t = this.nodes.get(a);
    return t !== undefined && t.state === "up" ? t.epoch : -1;
  }

  isCut(from: string, to: string): boolean {
    return this.isolated.has(from) || this.isolated.has(to) || this.cuts.has(linkKey(from, to));
  }

  // ------------------------------------------------------------------ crashes

  /** Kills the node at `a` (see the header for what happens to its messages). */
  crash(a: string): void {
    const t = this.nodes.get(a);
    if (t === undefined || t.state !== "up") throw new Error(`sim network: no live node at ${a} to crash`);
    t.state = "crashed";
    t.epoch++;
    // A paused process can be killed too: what it held dies with it, its overdue timeouts never fire.
    if (t.paused) {
      t.paused = false;
      this.counters.held -= t.held.length;
      for (const _ of t.held) this.drop("dead");
      t.held.length = 0;
      t.overdue.length = 0;
    }
    for (const [, p] of t.pending) {
      p.timer.cancel();
      inc(this.pendingPerLink, linkKey(a, p.to), -1);
    }
    t.pending.clear();
    this.resetHandling(t, `connection reset: ${a} crashed`);
  }

  // ------------------------------------------------------------------ pauses

  /** Stops the node at `a` (see the header): what reaches it is held until `resume(a)`. */
  pause(a: string): void {
    const t = this.nodes.get(a);
    if (t === undefined || t.state !== "up") throw new Error(`sim network: no live node at ${a} to pause`);
    if (t.paused) throw new Error(`sim network: ${a} is already paused`);
    t.paused = true;
    this.counters.pauses++;
  }

  /** Lets the node at `a` run again: held messages arrive in order, then overdue timeouts fire. */
  resume(a: string): void {
    const t = this.nodes.get(a);
    if (t === undefined || !t.paused) throw new Error(`sim network: ${a} is not paused`);
    t.paused = false;
    const held = t.held.splice(0);
    const overdue = t.overdue.splice(0);
    this.counters.held -= held.length;
    for (const w of held) this.arrive(w);
    for (const fn of overdue) fn();
  }

  isPaused(a: string): boolean {
    return this.nodes.get(a)?.paused === true;
  }

  /** Brings a crashed node back at `a` with a fresh handler (its memory is gone; its cluster id is not). */
  restart(a: string, handler: RequestHandler): SimTransport {
    const t = this.nodes.get(a);
    if (t === undefined || t.state !== "crashed") throw new Error(`sim network: no crashed node at ${a}`);
    t.state = "up";
    t.handler = handler;
    return t;
  }

  /** Asserts the accounting identity; returns the counters. */
  checkCounters(): SimCounters {
    const c = this.counters;
    if (c.sent + c.duplicated !== c.delivered + c.dropped + c.inFlight + c.held)
      throw new Error(`sim network: counters do not add up: ${JSON.stringify(c)}`);
    return c;
  }

  // ------------------------------------------------------------------ moving messages

  /** @internal Puts a message on the wire: hook, cuts, loss, then one or two delayed copies. */
  send(w: Wire): void {
    const m = w.msg;
    this.counters.sent++;
    let extraMs = 0;
    if (this.hook !== undefined) {
      const v = this.hook(m, this.clock.now());
      if (v === "drop") {
        this.drop("hook");
        return;
      }
      if (typeof v === "object") extraMs = Math.max(0, v.delayMs);
    }
    if (this.isCut(m.from, m.to)) {
      this.drop("cut");
      return;
    }
    const f = this.faultsNow;
    if (f.dropProbability > 0 && this.random.next() < f.dropProbability) {
      this.drop("random");
      return;
    }
    // Requests carry a flag shared by their copies, so that a duplicate can be told from the original.
    const copy: Wire = m.kind === "request" ? { ...w, twins: { arrived: false } } : w;
    this.put(copy, extraMs);
    if (f.duplicateProbability > 0 && this.random.next() < f.duplicateProbability) {
      this.counters.duplicated++;
      this.put(copy, extraMs);
    }
  }

  private put(w: Wire, extraMs: number): void {
    const link = linkKey(w.msg.from, w.msg.to);
    if ((this.wirePerLink.get(link) ?? 0) >= this.limits.maxQueuedPerLink) {
      this.drop("overflow");
      return;
    }
    this.mark("wirePerLink", inc(this.wirePerLink, link, 1));
    this.counters.inFlight++;
    const { minMs, maxMs } = this.latencyMs;
    let delay = minMs + Math.floor(this.random.next() * (maxMs - minMs + 1));
    const f = this.faultsNow;
    if (f.delayProbability > 0 && this.random.next() < f.delayProbability) {
      this.counters.delayed++;
      delay += Math.floor(this.random.next() * (f.delayMaxMs + 1));
    }
    this.timers.after(delay + extraMs, () => {
      inc(this.wirePerLink, link, -1);
      this.counters.inFlight--;
      this.arrive(w);
    });
  }

  private drop(why: "random" | "cut" | "hook" | "overflow" | "dead"): void {
    const c = this.counters;
    c.dropped++;
    if (why === "random") c.droppedRandom++;
    else if (why === "cut") c.droppedCut++;
    else if (why === "hook") c.droppedHook++;
    else if (why === "overflow") c.droppedOverflow++;
    else c.droppedDead++;
  }

  /** @internal Records a queue's new length in the high-water marks. */
  mark(q: keyof SimHighWater, n: number): void {
    if (n > this.highWater[q]) this.highWater[q] = n;
  }

  private arrive(w: Wire): void {
    const m = w.msg;
    if (this.isCut(m.from, m.to)) {
      this.drop("cut");
      return;
    }
    const t = this.nodes.get(m.to);
    if (t?.paused === true && t.state === "up") {
      if (t.held.length >= this.limits.maxHeldPerNode) {
        this.drop("overflow");
        return;
      }
      t.held.push(w);
      this.counters.held++;
      this.mark("heldPerNode", t.held.length);
      return;
    }
    if (m.kind === "request") this.arriveRequest(w, m);
    else this.arriveAnswer(w, m);
  }

  private arriveRequest(w: Wire, m: Extract<SimMessage, { kind: "request" }>): void {
    const t = this.nodes.get(m.to);
    if (t === undefined || t.state !== "up" || t.epoch !== w.toEpoch) {
      this.drop("dead");
      // Sent to a live incarnation that is gone now: a connection reset, which cannot tell whether the
      // request was handled. Sent while nothing lived there: refused, never delivered (and no copy was).
      const wasUp = w.toEpoch !== undefined && w.toEpoch >= 0;
      this.answerError(
        w,
        "ERR_UNREACHABLE",
        wasUp
          ? `connection reset: ${m.to} crashed after the request was sent`
          : `${m.to} is unreachable: no live node there`,
        wasUp,
      );
      return;
    }
    this.counters.delivered++;
    if (w.twins !== undefined) {
      if (w.twins.arrived && this.atMostOnceRequests) {
        this.counters.duplicatesDiscarded++;
        return;
      }
      w.twins.arrived = true;
    }
    let body = m.body;
    if (w.frame !== undefined) {
      try {
        const f = decodeFrame(w.frame);
        if (f.kind !== "req") throw new Error(`expected a req frame, got ${f.kind}`);
        body = f.body;
      } catch (err) {
        this.answerError(
          w,
          "ERR_PROTOCOL",
          `${m.to} could not decode the request: ${(err as Error).message}`,
        );
        return;
      }
    }
    // The handshake, as tcp-transport.ts does it on connect (client and server checks).
    const cs = w.fromCluster;
    const ct = t.clusterId;
    if (cs !== "" && ct !== cs) {
      this.answerError(w, "ERR_REJECTED", `${m.to} belongs to cluster ${JSON.stringify(ct)}, not ours`);
      return;
    }
    if (cs === "" && ct !== "" && body.kind !== "join" && body.kind !== "ping") {
      this.answerError(w, "ERR_REJECTED", `${m.to}: join the cluster first`);
      return;
    }
    const link = linkKey(m.from, m.to);
    if ((this.handlingPerLink.get(link) ?? 0) >= this.limits.maxInFlightPerLink) {
      this.answerError(w, "ERR_OVERLOADED", `${m.to}: too many requests in flight`);
      return;
    }
    this.mark("handlingPerLink", inc(this.handlingPerLink, link, 1));
    const key = t.nextHandling++;
    t.handling.set(key, { requester: m.from, requesterEpoch: w.epoch, id: m.id });
    let res: Promise<AnswerBody>;
    try {
      res = t.handler(w.fromNode, body);
    } catch (err) {
      res = Promise.reject(err);
    }
    const epoch = t.epoch;
    const finish = (): boolean => {
      // Dropped if the node crashed or closed since (its senders already got a connection reset).
      if (t.epoch !== epoch || !t.handling.delete(key)) return false;
      inc(this.handlingPerLink, link, -1);
      return t.state === "up";
    };
    res.then(
      (body) => {
        if (finish()) this.answer(w, body);
      },
      (err: unknown) => {
        if (!finish()) return;
        const e = err as { code?: unknown; message?: unknown };
        // TCP sends the handler's code in an err frame; the client keeps ERR_OVERLOADED and ERR_REJECTED,
        // else ERR_REMOTE.
        const code = e?.code === "ERR_OVERLOADED" || e?.code === "ERR_REJECTED" ? e.code : "ERR_REMOTE";
        this.answerError(w, code, `${m.to}: ${String(e?.message ?? err)}`);
      },
    );
  }

  /** Sends the answer to request `w` back to its sender. */
  private answer(w: Wire, body: AnswerBody): void {
    const id = w.msg.id;
    const frame = this.codec ? encodeFrame({ kind: "ans", id, body }) : undefined;
    this.send({
      msg: { kind: "answer", id, from: w.msg.to, to: w.msg.from, body },
      frame,
      fromNode: "",
      fromCluster: "",
      epoch: w.epoch,
    });
  }

  private answerError(w: Wire, code: TransportErrorCode, message: string, maybeDelivered?: boolean): void {
    this.send({
      msg: {
        kind: "error",
        id: w.msg.id,
        from: w.msg.to,
        to: w.msg.from,
        code,
        message,
        ...(maybeDelivered === true ? { maybeDelivered } : {}),
      },
      frame: undefined,
      fromNode: "",
      fromCluster: "",
      epoch: w.epoch,
    });
  }

  /** @internal Answers every request `t` was handling with a connection reset. */
  resetHandling(t: SimTransport, why: string): void {
    for (const [, h] of t.handling) {
      inc(this.handlingPerLink, linkKey(h.requester, t.address), -1);
      this.send({
        msg: {
          kind: "error",
          id: h.id,
          from: t.address,
          to: h.requester,
          code: "ERR_UNREACHABLE",
          message: why,
          maybeDelivered: true,
        },
        frame: undefined,
        fromNode: "",
        fromCluster: "",
        epoch: h.requesterEpoch,
      });
    }
    t.handling.clear();
  }

  private arriveAnswer(w: Wire, m: Exclude<SimMessage, { kind: "request" }>): void {
    const t = this.nodes.get(m.to);
    if (t === undefined || t.state !== "up" || t.epoch !== w.epoch) {
      this.drop("dead");
      return;
    }
    this.counters.delivered++;
    const p = t.pending.get(m.id);
    if (p === undefined) {
      this.counters.late++;
      return;
    }
    t.pending.delete(m.id);
    inc(this.pendingPerLink, linkKey(m.to, m.from), -1);
    p.timer.cancel();
    if (m.kind === "error") {
      t.fail(p, m.code, m.message, m.maybeDelivered);
      return;
    }
    let body = m.body;
    if (w.frame !== undefined) {
      try {
        const f = decodeFrame(w.frame);
        if (f.kind !== "ans") throw new Error(`expected an ans frame, got ${f.kind}`);
        body = f.body;
      } catch (err) {
        // As over TCP, where a bad frame closes a connection the request was written to.
        t.fail(p, "ERR_PROTOCOL", `bad frame from ${m.from}: ${(err as Error).message}`, true);
        return;
      }
    }
    if (body.kind !== p.expects) {
      t.fail(p, "ERR_PROTOCOL", `${m.from} answered with ${body.kind} where ${p.expects} was expected`, true);
      return;
    }
    p.resolve(body);
  }

  /** @internal */
  countFailure(code: TransportErrorCode): void {
    const c = this.counters;
    if (code === "ERR_TIMEOUT") c.timeouts++;
    else if (code === "ERR_UNREACHABLE") c.unreachable++;
    else if (code === "ERR_REJECTED") c.rejected++;
    else if (code === "ERR_OVERLOADED") c.overloaded++;
    else if (code === "ERR_REMOTE") c.remoteErrors++;
    else if (code === "ERR_PROTOCOL") c.protocolErrors++;
  }
}

/** One node's end of the simulated network. */
export class SimTransport implements Transport {
  readonly address: string;
  readonly nodeId: string;
  clusterId: string;
  /** @internal */
  state: NodeState = "up";
  /** @internal Bumped by crash: answers addressed to an earlier epoch are dropped. */
  epoch = 0;
  /** @internal */
  handler: RequestHandler;
  /** @internal This node's requests awaiting an answer, by id. */
  readonly pending = new Map<number, Pending>();
  /** @internal Requests this node is handling, by a local key (a duplicate request is handled twice). */
  readonly handling = new Map<number, Handling>();
  /** @internal */
  nextHandling = 1;
  /** @internal Paused: arrivals are held, timeouts wait (see the header). */
  paused = false;
  /** @internal Messages that reached this node while paused, in arrival order. */
  readonly held: Wire[] = [];
  /** @internal Timeouts of this node's requests that fell due while it was paused. */
  readonly overdue: (() => void)[] = [];

  constructor(
    private readonly net: SimNetwork,
    o: SimTransportOptions,
  ) {
    this.address = o.address;
    this.nodeId = o.nodeId;
    this.clusterId = o.clusterId ?? "";
    this.handler = o.handler;
  }

  get crashed(): boolean {
    return this.state === "crashed";
  }

  request<R extends RequestBody>(address: string, body: R, timeoutMs: number): Promise<AnswerOf<R["kind"]>> {
    const net = this.net;
    if (this.state === "closed") return Promise.reject(new TransportError("ERR_CLOSED", "transport closed"));
    if (this.state === "crashed")
      return Promise.reject(
        new TransportError("ERR_CLOSED", `${this.address} has crashed: it sends nothing`),
      );
    if (!(Number.isFinite(timeoutMs) && timeoutMs >= 0))
      throw new RangeError(`timeoutMs must be a finite number >= 0, got ${timeoutMs}`);
    const link = linkKey(this.address, address);
    if ((net.pendingPerLink.get(link) ?? 0) >= net.limits.maxInFlightPerLink) {
      net.countFailure("ERR_OVERLOADED");
      return Promise.reject(new TransportError("ERR_OVERLOADED", `too much in flight to ${address}`));
    }
    const id = net.nextId++;
    let frame: Uint8Array | undefined;
    if (net.codec) {
      try {
        frame = encodeFrame({ kind: "req", id, deadlineMs: wireDeadlineMs(timeoutMs), body });
      } catch (err) {
        net.countFailure("ERR_PROTOCOL");
        return Promise.reject(
          new TransportError("ERR_PROTOCOL", `cannot encode ${body.kind}: ${(err as Error).message}`, {
            cause: err,
          }),
        );
      }
    }
    // Resolved only with an answer of the kind the request expects (arriveAnswer checks it).
    return new Promise<AnswerOf<R["kind"]>>((resolve, reject) => {
      const timer = net.timers.after(timeoutMs, () => {
        if (this.paused) {
          this.overdue.push(expire);
          return;
        }
        expire();
      });
      const expire = () => {
        const p = this.pending.get(id);
        if (p === undefined) return;
        this.pending.delete(id);
        inc(net.pendingPerLink, link, -1);
        this.fail(p, "ERR_TIMEOUT", `${body.kind} to ${address} timed out after ${timeoutMs} ms`);
      };
      this.pending.set(id, {
        to: address,
        expects: ANSWER_KIND[body.kind],
        resolve: resolve as (r: AnswerBody) => void,
        reject,
        timer,
      });
      net.mark("pendingPerLink", inc(net.pendingPerLink, link, 1));
      net.send({
        msg: { kind: "request", id, from: this.address, to: address, body },
        frame,
        fromNode: this.nodeId,
        fromCluster: this.clusterId,
        epoch: this.epoch,
        toEpoch: net.epochOfLive(address),
      });
    });
  }

  /** @internal */
  fail(p: Pending, code: TransportErrorCode, message: string, maybeDelivered?: boolean): void {
    this.net.countFailure(code);
    p.reject(new TransportError(code, message, { maybeDelivered }));
  }

  /** Nothing to forget: the simulated network keeps no reconnect backoff. */
  resetBackoff(_address: string): void {}

  /** As TCP: a change of cluster closes the connections, failing the requests in flight (ERR_CLOSED). */
  setCluster(clusterId: string): void {
    if (clusterId === this.clusterId) return;
    this.clusterId = clusterId;
    this.failPending("ERR_CLOSED", "cluster changed");
  }

  /** Detaches: requests in flight fail (ERR_CLOSED), requests being handled are reset, the address frees up. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    const wasUp = this.state === "up";
    this.state = "closed";
    if (wasUp) {
      this.failPending("ERR_CLOSED", "transport closed");
      this.net.resetHandling(this, `connection reset: ${this.address} closed`);
    }
  }

  private failPending(code: TransportErrorCode, message: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      p.timer.cancel();
      inc(this.net.pendingPerLink, linkKey(this.address, p.to), -1);
      // Sent and unanswered: it may have been handled (as TCP, where a closed connection cannot tell).
      this.fail(p, code, message, true);
    }
  }
}
