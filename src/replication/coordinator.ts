/**
 * The request coordinator (Dynamo section 4.5): runs one client request against the key's replicas and
 * decides its outcome from how many answered in time.
 *
 * - get: asks `r` replicas of the key (more after a failure or a delay, and all of them for a share of
 *   reads: ReadPolicy), answers once `r` replied, with the causal merge of their sets (siblings only
 *   when truly concurrent). Fewer than `r` replies by the deadline: `unavailable`. Read repair: after
 *   answering, it keeps collecting the replies of the replicas it asked (for up to another `timeout`),
 *   and sends the merged set to every one whose answer lacked part of it (older, missing, or only some
 *   siblings), so the repair never slows the reply.
 * - put/delete: the coordinator must itself be a replica of the key (versioning needs its actor). It
 *   versions the write, and stores the resulting set locally while sending it to the other replicas;
 *   it answers once `w` replicas made it durable (its own copy counts as one). Fewer by the deadline
 *   (waiting for the key's lock included): `unavailable` (the write is not rolled back; replicas that
 *   have it keep it). The key's lock full (too many writes of the key waiting on this node, or too many
 *   keys locked): `overloaded` at once, and nothing was versioned or sent.
 *
 * Outcomes are returned values, not exceptions: quorum not met is an expected protocol outcome.
 *
 * Invariants asserted: r and w are whole numbers of at least 1; an ok read replied at least r times and
 * its merged set holds only mutually concurrent siblings (none covered by another's context); an ok
 * write has at least w acknowledgements, no more than it asked for, and its written sibling is in its
 * set with this node's actor. (More than the replicas available is no bug: a cluster with fewer members
 * than N answers `unavailable`.)
 * Deterministic: time comes from the injected Timers; no I/O except through ReplicaPeer.
 */
import { assert, unreachable } from "../core/assert.js";
import type { Random, TimerHandle, Timers } from "../runtime/runtime.js";
import { type Actor, covers, dotEquals, merge, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling, StoredValue } from "../versioning/object-codec.js";
import { type HintStore, HintsFullError } from "./hints.js";
import { type Asked, type ReadTarget, readRound, TRUE_COUNT_GRACE_MS } from "./read-round.js";
import type { Replica } from "./replica.js";
import { planSlots, type Slot, standInSet, standsIn } from "./sloppy.js";
import { type WriteRound, writeRound } from "./write-round.js";

/** A replica as the coordinator sees it: this node's own, or a remote one behind the transport. */
export interface ReplicaPeer {
  readonly nodeId: string;
  /**
   * The replica's set of `key`. With `hintFor`, the node answers as a stand-in for that replica (sloppy
   * quorum): every hint it holds for the key (the writer may have placed it in another slot than this
   * read does), merged with any set it holds itself.
   */
  read(key: Uint8Array, hintFor?: string): Promise<StoredSibling[]>;
  /**
   * Merges `set` into the replica's copy; resolves once durable there. `handoff`: sent by ownership
   * handoff (the replica does not send it on as a stray store). `hintFor`: the node stands in for that
   * replica and keeps the set as a hint for it (replication/hints.ts).
   */
  store(key: Uint8Array, set: readonly StoredSibling[], handoff?: boolean, hintFor?: string): Promise<void>;
}

/** This node's own replica as a peer: its data, and the hints it holds when it stands in for another. */
export function localPeer(nodeId: string, replica: Replica, hints?: HintStore): ReplicaPeer {
  return {
    nodeId,
    read: async (key, hintFor) => {
      const own = await replica.read(key);
      if (hintFor === undefined || hintFor === nodeId || hints === undefined) return own;
      return merge(own, await hints.readAll(key));
    },
    store: async (key, set, _handoff, hintFor) => {
      if (hintFor === undefined || hintFor === nodeId) await replica.merge(key, set);
      else {
        assert(hints !== undefined, () => `a hint for ${hintFor} on a node that keeps no hints`);
        await hints.put(hintFor, key, set);
      }
    },
  };
}

/**
 * The key has fewer replicas in the ring than the quorum asked for (a cluster with fewer members than
 * N): nothing was asked, and for a write nothing was applied.
 */
export interface TooFewReplicas {
  readonly kind: "too_few_replicas";
  readonly needed: number;
  /** The key's replicas in the ring. */
  readonly replicas: number;
}

export type ReadOutcome =
  | { readonly kind: "ok"; readonly siblings: StoredSibling[]; readonly replied: number }
  | {
      readonly kind: "unavailable";
      readonly needed: number;
      readonly replied: number;
      /** With pr: how many replies had to come from primaries, and how many did. */
      readonly primary?: { readonly needed: number; readonly replied: number };
    }
  | TooFewReplicas;

export type WriteOutcome =
  | {
      readonly kind: "ok";
      readonly written: StoredSibling;
      readonly set: StoredSibling[];
      readonly acked: number;
    }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | {
      readonly kind: "unavailable";
      readonly needed: number;
      readonly acked: number;
      /** With pw: how many acknowledgements had to come from primaries, and how many did. */
      readonly primary?: { readonly needed: number; readonly acked: number };
    }
  | TooFewReplicas
  /**
   * Refused at once, nothing applied: the key's lock on the coordinating node is full (`waiters_per_key`:
   * the key has `max` writes waiting; `keys_locked`: `max` keys have writes under way). Retry later.
   */
  | { readonly kind: "overloaded"; readonly limit: "waiters_per_key" | "keys_locked"; readonly max: number };

/** Everything the API needs from the replication layer: a coordinator, or a router in front of one. */
export interface KvService {
  /** `pr`: how many of the `r` replies must come from the key's primaries (sloppy quorum; default 0). */
  get(key: Uint8Array, r: number, timeoutMs: number, opts?: { pr?: number }): Promise<ReadOutcome>;
  /** `pw`: how many of the `w` acknowledgements must come from the key's primaries (default 0). */
  write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
    opts?: { pw?: number },
  ): Promise<WriteOutcome>;
}

/**
 * How reads choose replicas (Cassandra's approach rather than Riak's ask-everyone): a read asks `r`
 * replicas, this node's own first, then the others from a random one on; one that fails is replaced at
 * once by the next, and if the `r` have not all answered within `hedgeMs` the rest are asked too (a
 * speculative retry, so that one slow replica costs `hedgeMs`, not the timeout). A fraction of reads
 * asks all N, so that read repair still reaches every replica of keys that are read. Asking fewer
 * replicas is a third less work per read at N=3, R=2, with the same guarantee: any R replicas overlap
 * any W that acknowledged a write when R + W > N.
 */
export interface ReadPolicy {
  readonly hedgeMs: number;
  /** In [0, 1]: the share of reads that ask every replica. */
  readonly fullReadFraction: number;
}

export const DEFAULT_READ_POLICY: ReadPolicy = { hedgeMs: 50, fullReadFraction: 0.1 };

export interface CoordinatorDeps {
  readonly local: Replica;
  /** The key's replicas, in preference-list order (the local one included when this node is one). */
  readonly replicasFor: (key: Uint8Array) => readonly ReplicaPeer[];
  /**
   * Sloppy quorum: the key's fallbacks, the nodes after its preference list on the ring, in order (this
   * node's own peer included when it is one). Absent: a strict quorum over the replicas alone.
   */
  readonly fallbacksFor?: (key: Uint8Array) => readonly ReplicaPeer[];
  /** Is a node worth a request (the failure detector does not see it down)? Default: every node. */
  readonly healthy?: (nodeId: string) => boolean;
  /** This node's hints: what it keeps as a stand-in, and for replicas that did not acknowledge in time. */
  readonly hints?: HintStore;
  /** A new actor for one write this node versions as a stand-in (no replica of the key is reachable). */
  readonly standInActor?: () => Actor;
  readonly localNodeId: string;
  readonly timers: Timers;
  /** Draws which reads ask every replica (ReadPolicy.fullReadFraction). */
  readonly random: Random;
  readonly reads?: ReadPolicy;
  /**
   * Read repair after a read (on unless false). Off only to observe what the other mechanisms (hinted
   * handoff) deliver alone: the simulator's hint check.
   */
  readonly readRepair?: boolean;
  /** Called once per replica repaired after a read. */
  readonly onReadRepair?: (nodeId: string) => void;
  /**
   * A hint this node kept for a replica that acknowledged no copy of a write by its deadline (`stored`),
   * or could not keep (`refused`: its hints for that replica are full; `overloaded`: too many writes
   * were waiting for their late replicas; `failed`: the storage engine failed).
   */
  readonly onLateHint?: (outcome: "stored" | "refused" | "overloaded" | "failed") => void;
}

/** Writes whose late replicas are still awaited (for a hint after the deadline) at once, at most. */
export const LATE_ROUNDS_MAX = 4096;

interface Collected<T> {
  readonly ok: T[];
  readonly failed: number;
}

/** One request's deadline: a timer that fires once; `expired` and the waiters see it. */
class Deadline {
  expired = false;
  private readonly waiters: (() => void)[] = [];
  private readonly timer: TimerHandle;

  constructor(timers: Timers, ms: number) {
    this.timer = timers.after(ms, () => {
      this.expired = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Resolves when the deadline passes (never, if it is cancelled first). */
  readonly passed = (): Promise<"expired"> =>
    new Promise((resolve) => this.onExpire(() => resolve("expired")));

  onExpire(fn: () => void): void {
    if (this.expired) fn();
    else this.waiters.push(fn);
  }

  cancel(): void {
    this.timer.cancel();
    this.waiters.length = 0;
  }
}

/**
 * Waits until `needed` of `tasks` succeeded, or `deadline` passed, or that can no longer happen: then it
 * still waits for the tasks running, for up to TRUE_COUNT_GRACE_MS, so that the count of successes is
 * the true one (a 503 says how many acknowledged). Late results are ignored (the tasks keep running;
 * their errors are observed, never left unhandled).
 */
function collect<T>(
  tasks: readonly Promise<T>[],
  needed: number,
  deadline: Deadline,
  timers: Timers,
): Promise<Collected<T>> {
  return new Promise((resolve) => {
    const ok: T[] = [];
    let failed = 0;
    let done = false;
    let grace: TimerHandle | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      grace?.cancel();
      resolve({ ok: [...ok], failed });
    };
    const check = () => {
      const running = tasks.length - ok.length - failed;
      if (ok.length >= needed || running === 0) finish();
      else if (ok.length + running < needed) grace ??= timers.after(TRUE_COUNT_GRACE_MS, finish);
    };
    for (const t of tasks)
      t.then(
        (v) => {
          if (!done) {
            ok.push(v);
            check();
          }
        },
        () => {
          if (!done) {
            failed++;
            check();
          }
        },
      );
    check();
    if (!done) deadline.onExpire(finish);
  });
}

function dotKey(s: StoredSibling): string {
  return `${s.dot.counter}@${s.dot.actor}`;
}

/** Does `have` hold every sibling of `merged`? (Both are merged sets, so equal dots mean equal versions.) */
function holdsAll(have: readonly StoredSibling[], merged: readonly StoredSibling[]): boolean {
  if (have.length !== merged.length) return false;
  const dots = new Set(have.map(dotKey));
  return merged.every((s) => dots.has(dotKey(s)));
}

/** A merged set holds only mutually concurrent siblings: none is covered by another's context. */
function assertConcurrent(set: readonly StoredSibling[]): void {
  if (set.length < 2) return;
  for (const s of set)
    for (const t of set)
      assert(
        s === t || !covers(t.context, s.dot),
        () => `a merged read holds ${dotKey(s)}, which the sibling ${dotKey(t)} supersedes`,
      );
}

function assertOkWrite(
  out: Extract<WriteOutcome, { kind: "ok" }>,
  w: number,
  asked: number,
  actor: string,
): void {
  assert(out.acked >= w && out.acked <= asked, () => `ok write with ${out.acked} acks of ${asked}, w=${w}`);
  assert(
    out.written.dot.actor === actor,
    () => `a write coordinated by ${actor} has the dot ${dotKey(out.written)}`,
  );
  assert(
    out.set.some((s) => dotEquals(s.dot, out.written.dot)),
    () => `the written sibling ${dotKey(out.written)} is not in its set [${out.set.map(dotKey).join(", ")}]`,
  );
}

export class Coordinator implements KvService {
  /** Writes waiting for their late replicas (bounded by LATE_ROUNDS_MAX). */
  private lateRounds = 0;

  constructor(private readonly deps: CoordinatorDeps) {}

  /** False once this node's replica versions no more writes (Replica.cannotVersion). */
  canVersion(): boolean {
    return this.deps.local.cannotVersion === undefined;
  }

  private healthy(id: string): boolean {
    return id === this.deps.localNodeId || (this.deps.healthy?.(id) ?? true);
  }

  /** The key's primaries and fallbacks as peers, by node id. */
  private peersOf(key: Uint8Array): {
    primaries: readonly ReplicaPeer[];
    fallbacks: readonly ReplicaPeer[];
    byId: Map<string, ReplicaPeer>;
  } {
    const primaries = this.deps.replicasFor(key);
    const fallbacks = this.deps.fallbacksFor?.(key) ?? [];
    const byId = new Map<string, ReplicaPeer>();
    for (const p of primaries) byId.set(p.nodeId, p);
    for (const p of fallbacks) byId.set(p.nodeId, p);
    return { primaries, fallbacks, byId };
  }

  /**
   * Does this node stand in to coordinate a write of the key? When it is not one of the key's replicas,
   * none of them is healthy, and it is one of the key's fallbacks (it keeps what it versions as a hint).
   */
  private standsIn(primaries: readonly ReplicaPeer[], fallbacks: readonly ReplicaPeer[]): boolean {
    const self = this.deps.localNodeId;
    return (
      this.deps.hints !== undefined &&
      this.deps.standInActor !== undefined &&
      !primaries.some((p) => p.nodeId === self) &&
      !primaries.some((p) => this.healthy(p.nodeId)) &&
      standInSet(
        primaries.map((p) => p.nodeId),
        fallbacks.map((p) => p.nodeId),
        (id) => this.healthy(id),
      ).includes(self)
    );
  }

  async get(key: Uint8Array, r: number, timeoutMs: number, opts: { pr?: number } = {}): Promise<ReadOutcome> {
    const pr = opts.pr ?? 0;
    assert(Number.isInteger(r) && r >= 1, () => `read quorum r=${r}`);
    assert(Number.isInteger(pr) && pr >= 0, () => `primary read quorum pr=${pr}`);
    const { primaries, fallbacks, byId } = this.peersOf(key);
    const reachable = primaries.length + fallbacks.length;
    if (reachable < r) return { kind: "too_few_replicas", needed: r, replicas: reachable };
    if (primaries.length < pr) return { kind: "too_few_replicas", needed: pr, replicas: primaries.length };
    const self = this.deps.localNodeId;
    // The same nodes a write of the key goes to (a stand-in answers with every hint it holds for the key,
    // whichever primary's slot the write gave it), this node's own first below.
    const plan = planSlots(
      primaries.map((p) => p.nodeId),
      fallbacks.map((p) => p.nodeId),
      (id) => this.healthy(id),
    );
    const targets: ReadTarget[] = [];
    for (const slot of plan.slots)
      if (slot.node !== undefined)
        targets.push({ peer: byId.get(slot.node)!, hintFor: standsIn(slot) ? slot.primary : undefined });
    // This node first (no network), then the others from a random one on, so that reads (and their
    // repairs) spread over every replica rather than always the first ones of the list.
    const own = targets.filter((t) => t.peer.nodeId === self);
    const others = targets.filter((t) => t.peer.nodeId !== self);
    const k = others.length > 1 ? Math.floor(this.deps.random.next() * others.length) : 0;
    const ordered = [...own, ...others.slice(k), ...others.slice(0, k)];
    const policy = this.deps.reads ?? DEFAULT_READ_POLICY;
    const everyone = ordered.length <= r || pr > 0 || this.deps.random.next() < policy.fullReadFraction;
    const got = await readRound(
      ordered,
      key,
      r,
      pr,
      everyone ? ordered.length : r,
      policy.hedgeMs,
      timeoutMs,
      this.deps.timers,
    );
    const fromPrimaries = got.ok.filter((x) => x.target.hintFor === undefined).length;
    if (got.ok.length < r || fromPrimaries < pr)
      return {
        kind: "unavailable",
        needed: r,
        replied: got.ok.length,
        ...(pr > 0 ? { primary: { needed: pr, replied: fromPrimaries } } : {}),
      };
    let siblings: StoredSibling[] = [];
    for (const x of got.ok) siblings = merge(siblings, x.set);
    assertConcurrent(siblings);
    if (got.asked.length > 1 && this.deps.readRepair !== false) this.repairLater(key, got.asked, timeoutMs);
    return { kind: "ok", siblings, replied: got.ok.length };
  }

  /**
   * Waits for every node asked (until the deadline), then sends the merged set to the replicas whose
   * answer lacks part of it. Stand-ins are not repaired: what they hold is a hint, delivered as it is.
   */
  private repairLater(key: Uint8Array, asked: readonly Asked[], timeoutMs: number): void {
    const settled = asked.map((a) =>
      a.answer.then(
        (set) => ({ target: a.target, set }),
        () => undefined,
      ),
    );
    const deadline = new Deadline(this.deps.timers, timeoutMs);
    void collect(settled, asked.length, deadline, this.deps.timers).then((all) => {
      deadline.cancel();
      const ok = all.ok.filter((x): x is { target: ReadTarget; set: StoredSibling[] } => x !== undefined);
      let merged: StoredSibling[] = [];
      for (const x of ok) merged = merge(merged, x.set);
      if (merged.length === 0) return;
      for (const x of ok) {
        if (x.target.hintFor !== undefined || holdsAll(x.set, merged)) continue;
        const peer = x.target.peer;
        peer.store(key, merged).then(
          () => this.deps.onReadRepair?.(peer.nodeId),
          () => undefined,
        );
      }
    });
  }

  async write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
    opts: { pw?: number } = {},
  ): Promise<WriteOutcome> {
    const pw = opts.pw ?? 0;
    assert(Number.isInteger(w) && w >= 1, () => `write quorum w=${w}`);
    assert(Number.isInteger(pw) && pw >= 0, () => `primary write quorum pw=${pw}`);
    const { primaries, fallbacks, byId } = this.peersOf(key);
    const count = primaries.length + fallbacks.length;
    if (count < w) return { kind: "too_few_replicas", needed: w, replicas: count };
    if (primaries.length < pw) return { kind: "too_few_replicas", needed: pw, replicas: primaries.length };
    const self = this.deps.localNodeId;
    const standIn = this.standsIn(primaries, fallbacks);
    const plan = planSlots(
      primaries.map((p) => p.nodeId),
      fallbacks.map((p) => p.nodeId),
      (id) => this.healthy(id),
      standIn ? self : undefined,
    );
    // The slot whose copy is the one this node versions and stores itself: its own, as a replica, or the
    // one it stands in for.
    const ownSlot = plan.slots.find((s) => s.node === self && (s.primary === self || standIn));
    const deadline = new Deadline(this.deps.timers, timeoutMs);
    let keepDeadline = false;
    try {
      // The key may be locked behind a write still waiting for a slow disk: the wait counts against the
      // deadline, and a write that gives up before the key is free versions nothing.
      const abandoned = () => deadline.expired;
      const hints = this.deps.hints;
      const versioning =
        standIn && ownSlot !== undefined && hints !== undefined
          ? this.deps.local.versionStandIn(
              key,
              context,
              value,
              this.deps.standInActor!(),
              () => this.hintsHeld(key),
              (set) => hints.put(ownSlot.primary, key, set),
              abandoned,
            )
          : this.deps.local.version(key, context, value, abandoned);
      const res = await Promise.race([versioning, deadline.passed()]);
      if (res === "expired" || res.kind === "abandoned") {
        versioning.catch(() => undefined);
        return { kind: "unavailable", needed: w, acked: 0 };
      }
      switch (res.kind) {
        case "ok":
          break;
        case "too_many_siblings":
        case "overloaded":
          return res;
        default:
          return unreachable(res, "version result");
      }
      // The local copy and the other slots' stores go at once; any w of them make the quorum. (Safe for
      // the dot: see Replica.version.) The local copy counts only for its slot: a write forwarded here
      // after a ring change made this node a replica no longer is versioned here but counts nowhere.
      if (ownSlot === undefined) res.durable.catch(() => undefined);
      const send = (slot: Slot): Promise<void> =>
        slot === ownSlot
          ? res.durable
          : byId.get(slot.node!)!.store(key, res.set, false, standsIn(slot) ? slot.primary : undefined);
      const round = writeRound(plan, send, w, pw, deadline, this.deps.timers);
      keepDeadline = this.keepLateHints(key, res.set, round, deadline);
      const got = await round.answered;
      if (got.acked < w || got.primaryAcked < pw)
        return {
          kind: "unavailable",
          needed: w,
          acked: got.acked,
          ...(pw > 0 ? { primary: { needed: pw, acked: got.primaryAcked } } : {}),
        };
      const out: WriteOutcome = { kind: "ok", written: res.written, set: res.set, acked: got.acked };
      assertOkWrite(out, w, plan.slots.length, standIn ? res.written.dot.actor : this.deps.local.actor);
      return out;
    } finally {
      if (!keepDeadline) deadline.cancel();
    }
  }

  /** Every hint this node holds for the key: what a stand-in versions over. */
  private hintsHeld(key: Uint8Array): Promise<StoredSibling[]> {
    return this.deps.hints?.readAll(key) ?? Promise.resolve([]);
  }

  /**
   * Keeps a hint here for every replica that got no acknowledged copy of the write by its deadline
   * (Cassandra keeps such hints too): a replica that was paused or cut off gets the write when it is back
   * even if the quorum was met without it. Returns whether the deadline must stay (it ends the wait).
   */
  private keepLateHints(
    key: Uint8Array,
    set: StoredSibling[],
    round: WriteRound,
    deadline: Deadline,
  ): boolean {
    const hints = this.deps.hints;
    if (hints === undefined) return false;
    if (this.lateRounds >= LATE_ROUNDS_MAX) {
      void round.settled.then((missed) => {
        for (const s of missed) if (s.primary !== this.deps.localNodeId) this.deps.onLateHint?.("overloaded");
      });
      return false;
    }
    this.lateRounds++;
    void round.settled.then(async (missed) => {
      deadline.cancel();
      try {
        for (const slot of missed) {
          if (slot.primary === this.deps.localNodeId) continue;
          try {
            await hints.put(slot.primary, key, set);
            this.deps.onLateHint?.("stored");
          } catch (err) {
            // Full: counted, and left to anti-entropy. Anything else (the engine failed) is the engine's
            // to report; the write's answer is long gone.
            this.deps.onLateHint?.(err instanceof HintsFullError ? "refused" : "failed");
          }
        }
      } finally {
        this.lateRounds--;
      }
    });
    return true;
  }
}
