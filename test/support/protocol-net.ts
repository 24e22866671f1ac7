/**
 * ProtocolNet: a small synchronous network for protocol tests, so that a test reads like a sequence
 * diagram: "a asks b and c; the read to b is delivered; b answers; c is cut; 50 ms pass; the hedge asks
 * ...". Shared by the membership, coordinator and handoff tests.
 *
 * The layer. Nodes are named (a node's name is its peer address and its node id) and talk through the
 * Transport interface (src/transport/transport.ts): every message is a frame of the peer protocol
 * (src/transport/messages.ts: `req` with a RequestBody, `ans` with the AnswerBody of its request, `err`
 * with a TransportError's code). So the code under test runs unchanged: membership's GossipDriver speaks
 * the Transport; the coordinator and handoff speak ReplicaPeer, whose remote replicas are
 * replication/remote-replica.ts's `remotePeer` on this network (their `read` and `store` calls are the
 * `read` and `store` requests seen here), served by `serveReplica`. One message type for all three tests,
 * and remote-replica's own encoding, decoding and timeouts in the loop, rather than a queue of
 * ReplicaPeer calls that would skip them. Every body is encoded and decoded with the wire codec when it
 * is delivered, so a message TCP would refuse fails here too, and no object is shared between nodes.
 *
 * Nothing moves by itself:
 * - a request waits in the queue until the test delivers it: `deliver(filter?)` delivers the matching
 *   messages queued now (a request runs its node's handler, whose answer is queued; an answer or error
 *   settles its request), `step()` delivers everything queued now; both then let promise chains settle;
 * - `drop(filter)` loses queued messages; `cut(a, b)` loses everything from a to b (one way), when it is
 *   sent and when it would arrive, as a cable cut; `isolate(a)` cuts every link of a; `heal()` undoes
 *   cuts and isolation. A lost request is silence: its sender times out;
 * - `crash(a)`: a request to a is refused when delivered (ERR_UNREACHABLE, "a is down"), a's own
 *   requests never settle, and an answer its handler was preparing is lost; `restart(a)` brings it back
 *   as a new incarnation (a request sent to the old one is refused);
 * - time moves only on `elapse(ms)`: timers fire (request timeouts, a hedge, gossip rounds, a retry),
 *   messages stay queued. `settle()` lets promise chains settle and fires timers due at this instant.
 * - Long runs, for tests that watch a protocol converge rather than each message: `runFor`, `runUntil`
 *   and `runUntilSettled` move time as the scheduler does and deliver every message as soon as it is
 *   due: at once (no latency), or later under `faults` (seeded loss, duplication and delay).
 *
 * Traffic is visible: `pending()` lists the queued messages as lines, a request "a -> b read k" (its
 * kind, and its key if it has one), an answer "b --> a read", an error "b --> a ERR_UNREACHABLE"; `sent()`
 * gives every message sent since the start, with when and what became of it. A filter names any of from,
 * to, kind (a body's kind or an error's code), key, answer (true: answers and errors) and fate.
 *
 * Deterministic: one VirtualScheduler (runtime/virtual-runtime.ts) and, under faults, one seeded Random.
 * No latency: in a diagram a message takes no time, and what a test wants delayed it delays by not
 * delivering it. The whole-cluster simulator keeps its own network (src/sim/sim-network.ts), which
 * models what this one leaves out: latency, per-link bounds, pauses, the handshake beyond the cluster-id
 * check, and whether a refused request may have been handled (here an error never was; a request whose
 * handler's node crashes meanwhile goes unanswered, so its sender times out).
 */
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import type { PeerDirectory } from "../../src/replication/remote-replica.js";
import type { Replica } from "../../src/replication/replica.js";
import type { Random } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import {
  ANSWER_KIND,
  type AnswerBody,
  type AnswerOf,
  decodeFrame,
  encodeFrame,
  type Frame,
  type RequestBody,
  type RequestKind,
  wireDeadlineMs,
} from "../../src/transport/messages.js";
import {
  type RequestHandler,
  type Transport,
  TransportError,
  type TransportErrorCode,
} from "../../src/transport/transport.js";
import { decodeSiblings, encodeSiblings } from "../../src/versioning/object-codec.js";

/** What became of a message: on the wire, handed to its destination, lost, or an answer nobody waited for. */
export type Fate = "queued" | "delivered" | "lost" | "late";

/** One message sent, as a line of the diagram. */
export interface Sent {
  readonly from: string;
  readonly to: string;
  /** The body's kind, or an error's code. */
  readonly kind: string;
  /** A read's or store's key (UTF-8 if printable, else hex). */
  readonly key: string | undefined;
  /** An answer or error going back ("-->"), not a request ("->"). */
  readonly answer: boolean;
  readonly sentAt: number;
  fate: Fate;
  readonly line: string;
}

export type Filter =
  | Partial<Pick<Sent, "from" | "to" | "kind" | "key" | "answer" | "fate">>
  | ((s: Sent) => boolean);

/** Loss, duplication and delay, drawn from `random` for every message sent. */
export interface NetFaults {
  readonly random: Random;
  readonly drop: number;
  readonly duplicate: number;
  readonly delay: number;
  readonly delayMaxMs: number;
}

type WireFrame = Extract<Frame, { kind: "req" | "ans" | "err" }>;

interface Packet {
  readonly sent: Sent;
  readonly frame: WireFrame;
  /** The earliest instant it arrives (later than sent under `faults.delay`). */
  readonly dueAt: number;
  /** The incarnation of the destination a request was sent to. */
  readonly epoch: number;
}

interface NetNode {
  handler: RequestHandler | undefined;
  up: boolean;
  epoch: number;
  cluster: string;
}

interface Waiting {
  readonly from: string;
  readonly to: string;
  readonly kind: RequestKind;
  readonly resolve: (a: AnswerBody) => void;
  readonly reject: (e: Error) => void;
  readonly timer: { cancel(): void };
}

/** Bounds: messages remembered by `sent()`, and deliveries within one instant of a long run. */
const SENT_MAX = 1_000_000;
const DELIVERIES_PER_INSTANT_MAX = 100_000;

const keyText = (k: Uint8Array): string =>
  k.every((b) => b >= 0x21 && b < 0x7f) ? Buffer.from(k).toString() : Buffer.from(k).toString("hex");

const matches = (f: Filter | undefined, s: Sent): boolean =>
  f === undefined ||
  (typeof f === "function"
    ? f(s)
    : (Object.keys(f) as (keyof typeof f)[]).every((k) => f[k] === undefined || f[k] === s[k]));

/** A function that tells whether `p` has settled (and `p`'s rejection counts as handled). */
function watch(p: Promise<unknown>): () => boolean {
  let done = false;
  const mark = () => {
    done = true;
  };
  p.then(mark, mark);
  return () => done;
}

/** Lets every queued promise continuation run (one macrotask later, as the scheduler does). */
const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class ProtocolNet {
  readonly sched: VirtualScheduler;
  /** Seeded loss, duplication and delay of every message sent from now on (undefined: none). */
  faults: NetFaults | undefined;
  readonly counters = { sent: 0, duplicated: 0, delivered: 0, lost: 0 };
  /** A directory that finds every node by its name and always deems it worth asking (remotePeer). */
  readonly directory: PeerDirectory = {
    addressOf: (id) => id,
    reachable: () => true,
    contacted: () => undefined,
  };
  private readonly nodes = new Map<string, NetNode>();
  private queue: Packet[] = [];
  private readonly log: Sent[] = [];
  private readonly waiting = new Map<number, Waiting>();
  private readonly cuts = new Set<string>();
  private readonly isolated = new Set<string>();
  private nextId = 1;

  constructor(o: { sched?: VirtualScheduler; faults?: NetFaults } = {}) {
    this.sched = o.sched ?? new VirtualScheduler();
    this.faults = o.faults;
  }

  // ------------------------------------------------------------------ nodes

  /** Adds node `name`, answering requests with `handler` (none: every request to it is refused). */
  node(name: string, handler?: RequestHandler): Transport {
    assert.ok(!this.nodes.has(name), `node ${name} exists already`);
    const n: NetNode = { handler, up: true, epoch: 0, cluster: "" };
    this.nodes.set(name, n);
    return {
      address: name,
      request: <R extends RequestBody>(to: string, body: R, timeoutMs: number) =>
        this.request(name, to, body, timeoutMs) as Promise<AnswerOf<R["kind"]>>,
      resetBackoff: () => undefined,
      setCluster: (id) => {
        n.cluster = id;
      },
      close: async () => this.crash(name),
    };
  }

  /** The process dies: see the header. */
  crash(name: string): void {
    this.get(name).up = false;
    for (const [id, w] of this.waiting)
      if (w.from === name) {
        w.timer.cancel();
        this.waiting.delete(id);
      }
  }

  /** It runs again, a new incarnation, with `handler` (by default the one it had). */
  restart(name: string, handler?: RequestHandler): void {
    const n = this.get(name);
    assert.ok(!n.up, `${name} is not crashed`);
    n.up = true;
    n.epoch++;
    if (handler !== undefined) n.handler = handler;
  }

  // ------------------------------------------------------------------ links

  /** Loses every message from `a` to `b` (one way), queued or sent later, until `heal()`. */
  cut(a: string, b: string): void {
    this.cuts.add(`${a}\n${b}`);
  }

  /** Cuts every link to and from `a`. */
  isolate(a: string): void {
    this.isolated.add(a);
  }

  heal(): void {
    this.cuts.clear();
    this.isolated.clear();
  }

  // ------------------------------------------------------------------ traffic

  /** The queued messages' lines, in the order they were sent. */
  pending(filter?: Filter): string[] {
    return this.queue.filter((p) => matches(filter, p.sent)).map((p) => p.sent.line);
  }

  /** Every message sent so far (a duplicated one once), in order. */
  sent(filter?: Filter): Sent[] {
    return this.log.filter((s) => matches(filter, s));
  }

  /** Loses the matching queued messages; returns their lines. */
  drop(filter: Filter): string[] {
    const out = this.take(filter, Number.POSITIVE_INFINITY);
    for (const p of out) this.lose(p);
    return out.map((p) => p.sent.line);
  }

  /** Delivers the matching messages queued now (and due), then settles; returns their lines. */
  async deliver(filter?: Filter): Promise<string[]> {
    await this.settle();
    const batch = this.take(filter, this.sched.now());
    for (const p of batch) this.arrive(p);
    await this.settle();
    return batch.map((p) => p.sent.line);
  }

  /** Delivers everything queued now. */
  step(): Promise<string[]> {
    return this.deliver();
  }

  /** Lets promise chains settle and fires the timers due at this instant; time does not move. */
  async settle(): Promise<void> {
    await drain();
    await this.sched.runFor(0);
  }

  /** `ms` of virtual time pass: timers fire; nothing is delivered. */
  async elapse(ms: number): Promise<void> {
    await this.sched.runFor(ms);
  }

  // ------------------------------------------------------------------ long runs

  /**
   * Moves time as the scheduler does, delivering every message as soon as it is due, until `predicate`
   * holds (checked after each instant's deliveries) or `maxMs` passed. Returns whether it held.
   */
  async runUntil(predicate: () => boolean, maxMs: number): Promise<boolean> {
    const until = this.sched.now() + maxMs;
    for (;;) {
      await this.deliverDue();
      if (predicate()) return true;
      const next = this.nextEvent();
      if (next === undefined || next > until) break;
      await this.sched.runFor(next - this.sched.now());
    }
    await this.sched.runFor(until - this.sched.now());
    await this.deliverDue();
    return predicate();
  }

  async runFor(ms: number): Promise<void> {
    await this.runUntil(() => false, ms);
  }

  /** Runs until `p` settles and returns its value; throws if it is still pending after `maxMs`. */
  async runUntilSettled<T>(p: Promise<T>, maxMs: number): Promise<T> {
    if (!(await this.runUntil(watch(p), maxMs)))
      throw new Error(`protocol net: a promise was still pending after ${maxMs} ms of virtual time`);
    return p;
  }

  /** Has `p` settled, once promise chains have settled? (Moves nothing: no delivery, no time.) */
  async settled(p: Promise<unknown>): Promise<boolean> {
    const done = watch(p);
    await this.settle();
    return done();
  }

  /** Checks that every message is accounted for: sent + duplicated = delivered + lost + queued. */
  checkCounters(): ProtocolNet["counters"] {
    const c = this.counters;
    assert.equal(c.sent + c.duplicated, c.delivered + c.lost + this.queue.length, JSON.stringify(c));
    return c;
  }

  // ------------------------------------------------------------------ internals

  private get(name: string): NetNode {
    const n = this.nodes.get(name);
    assert.ok(n !== undefined, `no node ${name}`);
    return n;
  }

  private linkUp(a: string, b: string): boolean {
    return !this.isolated.has(a) && !this.isolated.has(b) && !this.cuts.has(`${a}\n${b}`);
  }

  private request(from: string, to: string, body: RequestBody, timeoutMs: number): Promise<AnswerBody> {
    if (!this.get(from).up) return Promise.reject(new TransportError("ERR_CLOSED", `${from} is down`));
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const timer = this.sched.after(timeoutMs, () => {
        this.waiting.delete(id);
        reject(new TransportError("ERR_TIMEOUT", `${body.kind} to ${to} timed out after ${timeoutMs} ms`));
      });
      this.waiting.set(id, { from, to, kind: body.kind, resolve, reject, timer });
      const frame = { kind: "req", id, deadlineMs: wireDeadlineMs(timeoutMs), body } as const;
      this.send(from, to, frame, this.nodes.get(to)?.epoch ?? 0);
    });
  }

  private send(from: string, to: string, frame: WireFrame, epoch: number): void {
    const now = this.sched.now();
    const answer = frame.kind !== "req";
    const kind = frame.kind === "err" ? frame.code : frame.body.kind;
    const body = frame.kind === "req" ? frame.body : undefined;
    const key = body?.kind === "read" || body?.kind === "store" ? keyText(body.key) : undefined;
    const line = `${from} ${answer ? "-->" : "->"} ${to} ${kind}${key === undefined ? "" : ` ${key}`}`;
    const sent: Sent = { from, to, kind, key, answer, sentAt: now, fate: "queued", line };
    assert.ok(this.log.length < SENT_MAX, `more than ${SENT_MAX} messages: a test without an end?`);
    this.log.push(sent);
    this.counters.sent++;
    const f = this.faults;
    if (!this.linkUp(from, to) || (f !== undefined && f.random.next() < f.drop)) {
      sent.fate = "lost";
      this.counters.lost++;
      return;
    }
    const copies = f !== undefined && f.random.next() < f.duplicate ? 2 : 1;
    this.counters.duplicated += copies - 1;
    for (let i = 0; i < copies; i++) {
      const late = f !== undefined && f.random.next() < f.delay;
      const dueAt = now + (late ? Math.floor(f.random.next() * f.delayMaxMs) : 0);
      this.queue.push({ sent, frame, dueAt, epoch });
    }
  }

  private lose(p: Packet): void {
    p.sent.fate = "lost";
    this.counters.lost++;
  }

  /** Removes and returns the queued packets that match and are due by `dueBy`. */
  private take(filter: Filter | undefined, dueBy: number): Packet[] {
    const out: Packet[] = [];
    this.queue = this.queue.filter((p) => {
      const hit = p.dueAt <= dueBy && matches(filter, p.sent);
      if (hit) out.push(p);
      return !hit;
    });
    return out;
  }

  private arrive(p: Packet): void {
    const { from, to } = p.sent;
    if (!this.linkUp(from, to)) {
      this.lose(p);
      return;
    }
    this.counters.delivered++;
    if (p.sent.fate === "queued") p.sent.fate = "delivered";
    const frame = roundTrip(p.frame);
    if (frame.kind === "req") this.handle(p, frame);
    else this.answerArrives(p, frame);
  }

  private handle(p: Packet, req: Extract<WireFrame, { kind: "req" }>): void {
    const { from, to } = p.sent;
    const dest = this.nodes.get(to);
    const refuse = (code: TransportErrorCode, message: string) =>
      this.send(to, from, { kind: "err", id: req.id, code, message }, 0);
    if (dest === undefined || !dest.up || dest.epoch !== p.epoch || dest.handler === undefined) {
      refuse("ERR_UNREACHABLE", `${to} is down`);
      return;
    }
    // The handshake: a node in no cluster yet may only join (or ping); members of two clusters never talk.
    const cluster = this.get(from).cluster;
    const joining = cluster === "" && (req.body.kind === "join" || req.body.kind === "ping");
    if (cluster !== dest.cluster && !joining) {
      refuse("ERR_REJECTED", `${from} (cluster "${cluster}") refused by ${to} ("${dest.cluster}")`);
      return;
    }
    const epoch = dest.epoch;
    const alive = () => dest.up && dest.epoch === epoch;
    let answer: Promise<AnswerBody>;
    try {
      answer = Promise.resolve(dest.handler(from, req.body));
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (body) => {
        if (alive()) this.send(to, from, { kind: "ans", id: req.id, body }, 0);
      },
      (err: unknown) => {
        const code = (err as { code?: unknown })?.code;
        const passed = code === "ERR_OVERLOADED" || code === "ERR_REJECTED" ? code : "ERR_REMOTE";
        if (alive()) refuse(passed, err instanceof Error ? err.message : String(err));
      },
    );
  }

  private answerArrives(p: Packet, frame: Extract<WireFrame, { kind: "ans" | "err" }>): void {
    const w = this.waiting.get(frame.id);
    if (w === undefined || w.from !== p.sent.to) {
      p.sent.fate = "late";
      return;
    }
    this.waiting.delete(frame.id);
    w.timer.cancel();
    if (frame.kind === "err") {
      w.reject(new TransportError(frame.code as TransportErrorCode, frame.message));
      return;
    }
    if (ANSWER_KIND[w.kind] === frame.body.kind) w.resolve(frame.body);
    else w.reject(new TransportError("ERR_PROTOCOL", `${w.kind} answered with ${frame.body.kind}`));
  }

  /** Delivers every due message, and what their handlers answer, until none is due at this instant. */
  private async deliverDue(): Promise<void> {
    for (let n = 0; ; ) {
      await this.settle();
      const batch = this.take(undefined, this.sched.now());
      if (batch.length === 0) return;
      n += batch.length;
      assert.ok(n <= DELIVERIES_PER_INSTANT_MAX, `more than ${n} deliveries in one instant: a message loop?`);
      for (const p of batch) this.arrive(p);
    }
  }

  /** The next instant something happens: a timer fires or a delayed message falls due. */
  private nextEvent(): number | undefined {
    let next = this.sched.nextAt();
    for (const p of this.queue) if (next === undefined || p.dueAt < next) next = p.dueAt;
    return next;
  }
}

/** A frame as its destination decodes it: what TCP would refuse fails here too. */
function roundTrip(f: WireFrame): WireFrame {
  return decodeFrame(encodeFrame(f)) as WireFrame;
}

/**
 * A node's replica as its peers reach it: `read` and `store`, answered as node/peer-dispatch.ts answers
 * them (without the stray forwarding, which is the node's); any other request is refused.
 */
export function serveReplica(replica: Replica): RequestHandler {
  return async (_from, body) => {
    switch (body.kind) {
      case "read": {
        const set = await replica.read(body.key);
        return { kind: "read", set: set.length === 0 ? null : encodeSiblings(set) };
      }
      case "store":
        await replica.merge(body.key, decodeSiblings(body.set));
        return { kind: "stored" };
      default:
        throw Object.assign(new Error(`${body.kind} is not served by a replica alone`), {
          code: "ERR_REJECTED",
        });
    }
  };
}
