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
import { covers, dotEquals, merge, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling, StoredValue } from "../versioning/object-codec.js";
import type { Replica } from "./replica.js";

/** A replica as the coordinator sees it: this node's own, or a remote one behind the transport. */
export interface ReplicaPeer {
  readonly nodeId: string;
  read(key: Uint8Array): Promise<StoredSibling[]>;
  /**
   * Merges `set` into the replica's copy; resolves once durable there. `handoff`: sent by ownership
   * handoff (the replica does not send it on as a stray store).
   */
  store(key: Uint8Array, set: readonly StoredSibling[], handoff?: boolean): Promise<void>;
}

export function localPeer(nodeId: string, replica: Replica): ReplicaPeer {
  return {
    nodeId,
    read: (key) => replica.read(key),
    store: async (key, set) => {
      await replica.merge(key, set);
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
  | { readonly kind: "unavailable"; readonly needed: number; readonly replied: number }
  | TooFewReplicas;

export type WriteOutcome =
  | {
      readonly kind: "ok";
      readonly written: StoredSibling;
      readonly set: StoredSibling[];
      readonly acked: number;
    }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | { readonly kind: "unavailable"; readonly needed: number; readonly acked: number }
  | TooFewReplicas
  /**
   * Refused at once, nothing applied: the key's lock on the coordinating node is full (`waiters_per_key`:
   * the key has `max` writes waiting; `keys_locked`: `max` keys have writes under way). Retry later.
   */
  | { readonly kind: "overloaded"; readonly limit: "waiters_per_key" | "keys_locked"; readonly max: number };

/** Everything the API needs from the replication layer: a coordinator, or a router in front of one. */
export interface KvService {
  get(key: Uint8Array, r: number, timeoutMs: number): Promise<ReadOutcome>;
  write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
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

/** A replica a read asked, and its answer. */
interface Asked {
  readonly peer: ReplicaPeer;
  readonly answer: Promise<StoredSibling[]>;
}

/**
 * Asks `first` of `replicas` (in order), and more as described in ReadPolicy, until `needed` answered,
 * or that can no longer happen and no replica asked is still to answer (so that a 503 says truly how
 * many replied), or `timeoutMs` passed. Answers that come later are left to `asked`.
 */
function gatherReads(
  replicas: readonly ReplicaPeer[],
  key: Uint8Array,
  needed: number,
  first: number,
  hedgeMs: number,
  timeoutMs: number,
  timers: Timers,
): Promise<{ ok: { peer: ReplicaPeer; set: StoredSibling[] }[]; asked: Asked[] }> {
  return new Promise((resolve) => {
    const ok: { peer: ReplicaPeer; set: StoredSibling[] }[] = [];
    const asked: Asked[] = [];
    let failed = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      deadline.cancel();
      hedge?.cancel();
      grace?.cancel();
      resolve({ ok: [...ok], asked });
    };
    const impossible = () => replicas.length - failed < needed;
    let grace: TimerHandle | undefined;
    const check = () => {
      if (ok.length >= needed || (impossible() && asked.length === ok.length + failed)) finish();
      // Out of reach: the replicas still to answer get a short grace, so that the count is true.
      else if (impossible()) grace ??= timers.after(TRUE_COUNT_GRACE_MS, finish);
    };
    const ask = () => {
      if (done || asked.length >= replicas.length || impossible()) return;
      const peer = replicas[asked.length]!;
      const answer = peer.read(key);
      asked.push({ peer, answer });
      answer.then(
        (set) => {
          if (done) return;
          ok.push({ peer, set });
          check();
        },
        () => {
          if (done) return;
          failed++;
          ask();
          check();
        },
      );
    };
    const deadline = timers.after(timeoutMs, finish);
    const hedge =
      first < replicas.length
        ? timers.after(Math.min(hedgeMs, timeoutMs), () => {
            while (!done && asked.length < replicas.length && !impossible()) ask();
          })
        : undefined;
    for (let i = 0; i < first; i++) ask();
    check();
  });
}

export interface CoordinatorDeps {
  readonly local: Replica;
  /** The key's replicas, in preference-list order (the local one included when this node is one). */
  readonly replicasFor: (key: Uint8Array) => readonly ReplicaPeer[];
  readonly localNodeId: string;
  readonly timers: Timers;
  /** Draws which reads ask every replica (ReadPolicy.fullReadFraction). */
  readonly random: Random;
  readonly reads?: ReadPolicy;
  /** Called once per replica repaired after a read. */
  readonly onReadRepair?: (nodeId: string) => void;
}

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
 * Once a quorum is out of reach, how long the coordinator still waits for the replicas it already asked
 * (its own disk included), so that the 503 says how many truly answered: long enough for a local fsync
 * or a live replica, short enough that a 503 stays fast when replicas are known to be down.
 */
const TRUE_COUNT_GRACE_MS = 50;

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
  constructor(private readonly deps: CoordinatorDeps) {}

  /** False once this node's replica versions no more writes (Replica.cannotVersion). */
  canVersion(): boolean {
    return this.deps.local.cannotVersion === undefined;
  }

  async get(key: Uint8Array, r: number, timeoutMs: number): Promise<ReadOutcome> {
    assert(Number.isInteger(r) && r >= 1, () => `read quorum r=${r}`);
    const replicas = this.deps.replicasFor(key);
    if (replicas.length < r) return { kind: "too_few_replicas", needed: r, replicas: replicas.length };
    // This node's own replica first (no network), then the others from a random one on, so that reads
    // (and their repairs) spread over every replica rather than always the first ones of the list.
    const own = replicas.filter((p) => p.nodeId === this.deps.localNodeId);
    const others = replicas.filter((p) => p.nodeId !== this.deps.localNodeId);
    const k = others.length > 1 ? Math.floor(this.deps.random.next() * others.length) : 0;
    const ordered = [...own, ...others.slice(k), ...others.slice(0, k)];
    const policy = this.deps.reads ?? DEFAULT_READ_POLICY;
    const everyone = ordered.length <= r || this.deps.random.next() < policy.fullReadFraction;
    const got = await gatherReads(
      ordered,
      key,
      r,
      everyone ? ordered.length : r,
      policy.hedgeMs,
      timeoutMs,
      this.deps.timers,
    );
    if (got.ok.length < r) return { kind: "unavailable", needed: r, replied: got.ok.length };
    let siblings: StoredSibling[] = [];
    for (const x of got.ok) siblings = merge(siblings, x.set);
    assertConcurrent(siblings);
    if (got.asked.length > 1) this.repairLater(key, got.asked, timeoutMs);
    return { kind: "ok", siblings, replied: got.ok.length };
  }

  /**
   * Waits for every replica asked (until the deadline), then sends the merged set to those whose answer
   * lacks part of it.
   */
  private repairLater(key: Uint8Array, asked: readonly Asked[], timeoutMs: number): void {
    const settled = asked.map((a) =>
      a.answer.then(
        (set) => ({ peer: a.peer, set }),
        () => undefined,
      ),
    );
    const deadline = new Deadline(this.deps.timers, timeoutMs);
    void collect(settled, asked.length, deadline, this.deps.timers).then((all) => {
      deadline.cancel();
      const ok = all.ok.filter((x): x is { peer: ReplicaPeer; set: StoredSibling[] } => x !== undefined);
      let merged: StoredSibling[] = [];
      for (const x of ok) merged = merge(merged, x.set);
      if (merged.length === 0) return;
      for (const x of ok) {
        if (holdsAll(x.set, merged)) continue;
        const peer = x.peer;
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
  ): Promise<WriteOutcome> {
    assert(Number.isInteger(w) && w >= 1, () => `write quorum w=${w}`);
    const count = this.deps.replicasFor(key).length;
    if (count < w) return { kind: "too_few_replicas", needed: w, replicas: count };
    const deadline = new Deadline(this.deps.timers, timeoutMs);
    try {
      // The key may be locked behind a write still waiting for a slow disk: the wait counts against the
      // deadline, and a write that gives up before the key is free versions nothing.
      const versioning = this.deps.local.version(key, context, value, () => deadline.expired);
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
      // The local write and the other replicas' stores go at once; any w of them make the quorum. (Safe
      // for the dot: see Replica.version.) The local copy counts only if this node is a replica of the
      // key: a forwarded write may arrive after a ring change made it one no longer.
      const replicas = this.deps.replicasFor(key);
      const local = this.deps.localNodeId;
      const isReplica = replicas.some((p) => p.nodeId === local);
      if (!isReplica) res.durable.catch(() => undefined);
      const stores = replicas.filter((p) => p.nodeId !== local).map((p) => p.store(key, res.set));
      const got = await collect(isReplica ? [res.durable, ...stores] : stores, w, deadline, this.deps.timers);
      const acked = got.ok.length;
      if (acked < w) return { kind: "unavailable", needed: w, acked };
      const out: WriteOutcome = { kind: "ok", written: res.written, set: res.set, acked };
      assertOkWrite(out, w, stores.length + (isReplica ? 1 : 0), this.deps.local.actor);
      return out;
    } finally {
      deadline.cancel();
    }
  }
}
