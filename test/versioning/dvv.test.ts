/**
 * Dotted version vectors (src/versioning/dvv.ts) against a naive causal model.
 *
 * The model knows nothing of vectors. Each write is an event with a unique id, and its causal history is
 * the set of event ids its writer had seen: the histories and ids of the versions whose context it carried
 * (none for a blind write). Each replica has seen a set of events, closed under history: what it
 * coordinated, what those writes' clients had seen, and what it merged in from other replicas. The versions
 * a replica must hold are then its maximal events: those it has seen that are in no other seen event's
 * history. The implementation must hold exactly those, with nothing lost (a concurrent write dropped) and
 * nothing kept that was superseded.
 *
 * The simulation runs three replicas (actors "a", "b", "c") and three clients. A client reads from one
 * replica (or merges the sets of two, like a quorum read) and keeps every context it read, so later writes
 * may carry a stale one; writes go through any coordinator with `update`; replicas exchange WHOLE sets
 * with `merge`, as src/replication/replica.ts does (a lone sibling is never shipped).
 *
 * Seeded: FC_SEED=<n> replays another seed; a failure prints its seed, path and command list.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  assertFreshDot,
  assertMergeCovers,
  assertMerged,
  assertUpdated,
  CHECKED_SIBLINGS_MAX,
  concurrent,
  contextOf,
  covers,
  type Dot,
  EMPTY_VECTOR,
  merge,
  type Sibling,
  update,
  type VersionVector,
} from "../../src/versioning/dvv.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0xd07_2024;
const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;
const ACTORS = ["a", "b", "c"] as const;
const REPLICAS = ACTORS.length;
const CLIENTS = 3;

// ---------------------------------------------------------------- the model

/** Values are the model's event names, so a sibling says which event it is. */
type Value = string;

interface ModelEvent {
  readonly id: number;
  readonly sibling: Sibling<Value>;
  /** Ids of every event the writer had seen. */
  readonly history: ReadonlySet<number>;
}

interface Read {
  readonly context: VersionVector;
  /** The model's view of the same read: every event the replica(s) read from had seen. */
  readonly history: ReadonlySet<number>;
}

/** Which context a write carries: none, the client's latest read, or an older one (stale). */
type ContextChoice = "blind" | "latest" | number;

type Cmd =
  | { readonly kind: "read"; readonly client: number; readonly replica: number }
  | { readonly kind: "readQuorum"; readonly client: number; readonly replicas: readonly [number, number] }
  | {
      readonly kind: "write";
      readonly client: number;
      readonly coordinator: number;
      readonly context: ContextChoice;
    }
  | { readonly kind: "sync"; readonly from: number; readonly to: number };

/** Counts of the interesting situations, so that a property cannot pass by never meeting them. */
interface Coverage {
  staleWrites: number;
  writesKeepingSiblings: number;
  writesSupersedingSiblings: number;
  syncsDroppingVersions: number;
  replicasWithThreeSiblings: number;
  /** Sets past CHECKED_SIBLINGS_MAX, where update and merge skip their own checks. */
  largeSets: number;
}

const newCoverage = (): Coverage => ({
  staleWrites: 0,
  writesKeepingSiblings: 0,
  writesSupersedingSiblings: 0,
  syncsDroppingVersions: 0,
  replicasWithThreeSiblings: 0,
  largeSets: 0,
});

function assertCovered(c: Coverage): void {
  for (const [name, n] of Object.entries(c)) assert.ok(n > 0, `the runs never produced ${name}`);
}

const dotKey = (d: Dot): string => `${d.actor}:${d.counter}`;

function union(...sets: ReadonlySet<number>[]): Set<number> {
  const out = new Set<number>();
  for (const s of sets) for (const x of s) out.add(x);
  return out;
}

const sortedIds = (ids: Iterable<number>): number[] => [...ids].sort((x, y) => x - y);

/** A set compared by dots, values and contexts, independently of order. */
function canon(set: readonly Sibling<Value>[]): string[] {
  return set
    .map((s) => {
      const ctx = [...s.context].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
      return `${dotKey(s.dot)}=${s.value} ctx{${ctx.map(([k, n]) => `${k}:${n}`).join(",")}}`;
    })
    .sort();
}

class World {
  readonly sets: Sibling<Value>[][] = ACTORS.map(() => []);
  readonly seen: Set<number>[] = ACTORS.map(() => new Set());
  readonly events: ModelEvent[] = [];
  readonly byDot = new Map<string, ModelEvent>();
  readonly reads: Read[][] = Array.from({ length: CLIENTS }, () => []);
  /** Every set that existed during the run (replica states and quorum reads), for the algebraic laws. */
  readonly observed: Sibling<Value>[][] = [[]];
  /** The sibling written by each write, with the coordinator and context, for the false-overwrite check. */
  readonly writes: { coordinator: number; read: Read | undefined; sibling: Sibling<Value> }[] = [];

  constructor(readonly coverage: Coverage) {}

  eventOf(s: Sibling<Value>): ModelEvent {
    const e = this.byDot.get(dotKey(s.dot));
    assert.ok(e !== undefined, `sibling ${dotKey(s.dot)} is no write that happened`);
    assert.equal(s.value, e.sibling.value, `sibling ${dotKey(s.dot)} carries another write's value`);
    return e;
  }

  /** The events the model says must be siblings: seen, and in no other seen event's history. */
  maximal(seen: ReadonlySet<number>): number[] {
    const out: number[] = [];
    for (const id of seen) {
      let superseded = false;
      for (const other of seen) if (other !== id && this.events[other]!.history.has(id)) superseded = true;
      if (!superseded) out.push(id);
    }
    return sortedIds(out);
  }

  /** The events a vector covers (dots are unique, so this is the history the vector stands for). */
  coveredBy(vv: VersionVector): Set<number> {
    const out = new Set<number>();
    for (const e of this.events) if (covers(vv, e.sibling.dot)) out.add(e.id);
    return out;
  }

  /** The implementation's set must be exactly the model's maximal events, and its context exact. */
  checkSet(set: readonly Sibling<Value>[], seen: ReadonlySet<number>, where: string): void {
    const dots = set.map((s) => dotKey(s.dot));
    assert.equal(new Set(dots).size, dots.length, `${where}: a dot appears twice in ${dots.join(" ")}`);
    const ids = sortedIds(set.map((s) => this.eventOf(s).id));
    const want = this.maximal(seen);
    assert.deepEqual(
      ids.map((i) => dotKey(this.events[i]!.sibling.dot)),
      want.map((i) => dotKey(this.events[i]!.sibling.dot)),
      `${where}: siblings are not the concurrent versions the model expects`,
    );
    for (const s of set)
      assert.deepEqual(
        canon([s]),
        canon([this.eventOf(s).sibling]),
        `${where}: ${dotKey(s.dot)} is not the sibling its write produced`,
      );
    const ctx = contextOf(set);
    assert.deepEqual(
      sortedIds(this.coveredBy(ctx)),
      sortedIds(seen),
      `${where}: contextOf covers other events than those the replica has seen`,
    );
    for (const [actor, n] of ctx) {
      const issued = this.events.filter((e) => e.sibling.dot.actor === actor).length;
      assert.ok(n <= issued, `${where}: context claims ${actor}:${n}, but ${actor} issued ${issued} dots`);
    }
    for (const x of set)
      for (const y of set)
        if (x !== y)
          assert.ok(concurrent(x, y), `${where}: ${dotKey(x.dot)} and ${dotKey(y.dot)} not concurrent`);
  }

  checkAll(where: string): void {
    for (let r = 0; r < REPLICAS; r++) {
      this.checkSet(this.sets[r]!, this.seen[r]!, `${where}, replica ${ACTORS[r]}`);
      if (this.sets[r]!.length >= 3) this.coverage.replicasWithThreeSiblings++;
    }
  }

  pickRead(client: number, choice: ContextChoice): Read | undefined {
    const reads = this.reads[client]!;
    if (choice === "blind" || reads.length === 0) return undefined;
    if (choice === "latest") return reads[reads.length - 1];
    const i = choice % reads.length;
    if (i !== reads.length - 1) this.coverage.staleWrites++;
    return reads[i];
  }

  write(coordinator: number, read: Read | undefined, where: string): Sibling<Value> {
    const context = read?.context ?? EMPTY_VECTOR;
    const history = read?.history ?? new Set<number>();
    const actor = ACTORS[coordinator]!;
    const before = this.sets[coordinator]!;
    const id = this.events.length;
    const value = `e${id}`;
    const { set, written } = update(before, context, actor, value);
    // The invariants the code asserts, checked here on sets of every size (update and merge check
    // their own only on small sets).
    assertUpdated(before, context, actor, written, set);
    if (set.length > CHECKED_SIBLINGS_MAX) this.coverage.largeSets++;
    assert.equal(written.dot.actor, actor, `${where}: the new dot is not the coordinator's`);
    assert.ok(!this.byDot.has(dotKey(written.dot)), `${where}: update reused the dot ${dotKey(written.dot)}`);
    assert.equal(written.value, value);
    assert.deepEqual(canon([written]), canon([{ dot: written.dot, context, value }]), `${where}: context`);
    const after = new Set(set.map((s) => dotKey(s.dot)));
    assert.ok(after.has(dotKey(written.dot)), `${where}: the written sibling is not in the new set`);
    let removed = 0;
    for (const s of before) {
      const kept = after.has(dotKey(s.dot));
      // A write never removes a version its context did not cover, and removes every one it covers.
      assert.equal(
        kept,
        !covers(context, s.dot),
        `${where}: ${dotKey(s.dot)} was ${kept ? "kept" : "removed"} though the context ${
          kept ? "covers" : "does not cover"
        } it`,
      );
      if (!kept) removed++;
    }
    assert.equal(set.length, before.length - removed + 1, `${where}: the new set has foreign siblings`);
    if (removed > 0) this.coverage.writesSupersedingSiblings++;
    if (before.length - removed > 0) this.coverage.writesKeepingSiblings++;
    const event: ModelEvent = { id, sibling: written, history };
    this.events.push(event);
    this.byDot.set(dotKey(written.dot), event);
    this.sets[coordinator] = set;
    this.seen[coordinator] = union(this.seen[coordinator]!, history, new Set([id]));
    this.writes.push({ coordinator, read, sibling: written });
    this.observed.push(set);
    return written;
  }

  sync(from: number, to: number): void {
    const merged = merge(this.sets[to]!, this.sets[from]!);
    // What Replica.merge asserts: the result covers both inputs. It holds only because contexts are
    // causally closed in any real history (stale contexts included), which these runs produce.
    assertMerged(this.sets[to]!, this.sets[from]!, merged);
    assertMergeCovers(merged, this.sets[to]!, this.sets[from]!);
    const total = new Set([...this.sets[to]!, ...this.sets[from]!].map((s) => dotKey(s.dot))).size;
    if (merged.length < total) this.coverage.syncsDroppingVersions++;
    this.sets[to] = merged;
    this.seen[to] = union(this.seen[to]!, this.seen[from]!);
    this.observed.push(merged);
  }

  apply(cmd: Cmd, step: number): void {
    const where = `step ${step} ${JSON.stringify(cmd)}`;
    switch (cmd.kind) {
      case "read": {
        const set = this.sets[cmd.replica]!;
        this.reads[cmd.client]!.push({ context: contextOf(set), history: new Set(this.seen[cmd.replica]) });
        break;
      }
      case "readQuorum": {
        const [r1, r2] = cmd.replicas;
        const set = merge(this.sets[r1]!, this.sets[r2]!);
        const history = union(this.seen[r1]!, this.seen[r2]!);
        this.checkSet(set, history, `${where}, merged read`);
        this.observed.push(set);
        this.reads[cmd.client]!.push({ context: contextOf(set), history });
        break;
      }
      case "write":
        this.write(cmd.coordinator, this.pickRead(cmd.client, cmd.context), where);
        break;
      case "sync":
        this.sync(cmd.from, cmd.to);
        break;
    }
    this.checkAll(where);
  }

  /** Anti-entropy to quiescence: twice round the ring a -> b -> c -> a carries everything everywhere. */
  syncAll(): void {
    for (let round = 0; round < 2; round++)
      for (let r = 0; r < REPLICAS; r++) this.sync(r, (r + 1) % REPLICAS);
  }
}

function run(cmds: readonly Cmd[], coverage: Coverage): World {
  const w = new World(coverage);
  cmds.forEach((c, i) => {
    w.apply(c, i);
  });
  return w;
}

// ---------------------------------------------------------------- arbitraries

const replicaArb = fc.integer({ min: 0, max: REPLICAS - 1 });
const clientArb = fc.integer({ min: 0, max: CLIENTS - 1 });
const contextArb: fc.Arbitrary<ContextChoice> = fc.oneof(
  { arbitrary: fc.constant("latest" as const), weight: 4 },
  { arbitrary: fc.constant("blind" as const), weight: 1 },
  { arbitrary: fc.nat({ max: 30 }), weight: 2 },
);
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    arbitrary: fc.record({ kind: fc.constant("read" as const), client: clientArb, replica: replicaArb }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("readQuorum" as const),
      client: clientArb,
      replicas: fc.tuple(replicaArb, replicaArb),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("write" as const),
      client: clientArb,
      coordinator: replicaArb,
      context: contextArb,
    }),
    weight: 4,
  },
  {
    arbitrary: fc
      .record({ kind: fc.constant("sync" as const), from: replicaArb, to: replicaArb })
      .filter((c) => c.from !== c.to),
    weight: 3,
  },
);
const cmdsArb = fc.array(cmdArb, { maxLength: 50, size: "max" });

// ---------------------------------------------------------------- properties

describe("dotted version vectors against the causal model", () => {
  test("at every replica, after every step, the siblings are exactly the model's concurrent versions", () => {
    const coverage = newCoverage();
    fc.assert(
      fc.property(cmdsArb, (cmds) => {
        run(cmds, coverage);
      }),
      { ...FC_PARAMS, numRuns: 1000 },
    );
    assertCovered(coverage);
  });

  test("once every replica merged everything, all hold the identical set: the model's maximal events", () => {
    fc.assert(
      fc.property(cmdsArb, (cmds) => {
        const w = run(cmds, newCoverage());
        w.syncAll();
        w.checkAll("after anti-entropy");
        const all = new Set(w.events.map((e) => e.id));
        for (let r = 0; r < REPLICAS; r++) {
          assert.deepEqual(canon(w.sets[r]!), canon(w.sets[0]!), `replica ${ACTORS[r]} differs from a`);
          assert.deepEqual(
            sortedIds(w.seen[r]!),
            sortedIds(all),
            "the model's anti-entropy did not spread everything",
          );
        }
      }),
      { ...FC_PARAMS, numRuns: 300 },
    );
  });

  test("merge is commutative, associative and idempotent on the sets a run produces", () => {
    const triple = fc.tuple(fc.nat(), fc.nat(), fc.nat());
    fc.assert(
      fc.property(cmdsArb, fc.array(triple, { minLength: 1, maxLength: 30 }), (cmds, picks) => {
        const w = run(cmds, newCoverage());
        w.syncAll();
        const sets = w.observed;
        for (const [i, j, k] of picks) {
          const x = sets[i % sets.length]!;
          const y = sets[j % sets.length]!;
          const z = sets[k % sets.length]!;
          assert.deepEqual(canon(merge(x, y)), canon(merge(y, x)), "merge(x, y) != merge(y, x)");
          assert.deepEqual(
            canon(merge(merge(x, y), z)),
            canon(merge(x, merge(y, z))),
            "merge(merge(x, y), z) != merge(x, merge(y, z))",
          );
          assert.deepEqual(canon(merge(x, x)), canon(x), "merge(x, x) != x");
          assert.deepEqual(canon(merge(x, [])), canon(x), "merge(x, []) != x");
          const xy = merge(x, y);
          assert.deepEqual(canon(merge(xy, y)), canon(xy), "merging y again changed merge(x, y)");
        }
      }),
      { ...FC_PARAMS, numRuns: 300 },
    );
  });

  test("two writes with the same context (or none) through one coordinator both survive", () => {
    const contextSource = fc.oneof(
      fc.constant({ kind: "blind" as const }),
      fc.record({ kind: fc.constant("fresh" as const), replica: replicaArb }),
      fc.record({ kind: fc.constant("stale" as const), client: clientArb, index: fc.nat() }),
    );
    fc.assert(
      fc.property(cmdsArb, replicaArb, contextSource, (cmds, coordinator, source) => {
        const w = run(cmds, newCoverage());
        let read: Read | undefined;
        if (source.kind === "fresh") {
          const set = w.sets[source.replica]!;
          read = { context: contextOf(set), history: new Set(w.seen[source.replica]) };
        } else if (source.kind === "stale") {
          const reads = w.reads[source.client]!;
          read = reads.length === 0 ? undefined : reads[source.index % reads.length];
        }
        const first = w.write(coordinator, read, "first write");
        w.checkAll("after the first write");
        const second = w.write(coordinator, read, "second write");
        w.checkAll("after the second write");
        const dots = w.sets[coordinator]!.map((s) => dotKey(s.dot));
        assert.ok(dots.includes(dotKey(first.dot)), `the first write ${dotKey(first.dot)} was overwritten`);
        assert.ok(dots.includes(dotKey(second.dot)), "the second write is missing");
        assert.ok(concurrent(first, second), "two writes with one context are not concurrent");
        w.syncAll();
        w.checkAll("after anti-entropy");
        for (let r = 0; r < REPLICAS; r++) {
          const there = w.sets[r]!.map((s) => dotKey(s.dot));
          assert.ok(there.includes(dotKey(first.dot)) && there.includes(dotKey(second.dot)));
        }
      }),
      { ...FC_PARAMS, numRuns: 300 },
    );
  });

  test("concurrent() and covers() agree with the model on every pair of writes", () => {
    fc.assert(
      fc.property(cmdsArb, (cmds) => {
        const w = run(cmds, newCoverage());
        for (const x of w.events)
          for (const y of w.events) {
            if (x === y) continue;
            assert.equal(covers(y.sibling.context, x.sibling.dot), y.history.has(x.id), "covers");
            const model = !x.history.has(y.id) && !y.history.has(x.id);
            assert.equal(concurrent(x.sibling, y.sibling), model, `concurrent(e${x.id}, e${y.id})`);
          }
      }),
      { ...FC_PARAMS, numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------- examples

/** A value that may be a tombstone, as the store keeps deletes. */
interface Doc {
  readonly data: string;
  readonly deleted: boolean;
}
const put = (data: string): Doc => ({ data, deleted: false });
const TOMBSTONE: Doc = { data: "", deleted: true };

const show = (set: readonly Sibling<Doc>[]): string[] =>
  set.map((s) => `${dotKey(s.dot)}=${s.value.deleted ? "<deleted>" : s.value.data}`).sort();

describe("dotted version vectors by example", () => {
  test("two blind writes through one coordinator are two siblings", () => {
    // client1 --put v1, no context--> a     a: {a:1=v1}
    // client2 --put v2, no context--> a     a: {a:1=v1, a:2=v2}
    let a: Sibling<Doc>[] = [];
    a = update(a, EMPTY_VECTOR, "a", put("v1")).set;
    a = update(a, EMPTY_VECTOR, "a", put("v2")).set;
    assert.deepEqual(show(a), ["a:1=v1", "a:2=v2"]);
    assert.deepEqual(contextOf(a), new Map([["a", 2]]));
    assert.deepEqual(show(merge([], a)), show(a), "replicating the set lost a sibling");
  });

  test("a write carrying the context of a read supersedes every sibling read", () => {
    // a: {a:1=v1, a:2=v2}; client reads a (context a:2), puts v3 through b, which has a's set.
    let a: Sibling<Doc>[] = [];
    a = update(a, EMPTY_VECTOR, "a", put("v1")).set;
    a = update(a, EMPTY_VECTOR, "a", put("v2")).set;
    let b = merge([], a);
    const { set, written } = update(b, contextOf(a), "b", put("v3"));
    b = set;
    assert.deepEqual(show(b), ["b:1=v3"]);
    assert.deepEqual(written.context, new Map([["a", 2]]));
    a = merge(a, b);
    assert.deepEqual(show(a), ["b:1=v3"]);
  });

  test("a delete is a tombstone sibling: concurrent with unseen writes, never resurrecting what it saw", () => {
    // a: v1 --replicated--> b, c
    let a = update([], EMPTY_VECTOR, "a", put("v1")).set;
    let b = merge([], a);
    let c = merge([], a);
    // client1 reads b (a:1) and deletes through b; client2 writes v2 blind through a meanwhile.
    b = update(b, contextOf(b), "b", TOMBSTONE).set;
    a = update(a, EMPTY_VECTOR, "a", put("v2")).set;
    assert.deepEqual(show(b), ["b:1=<deleted>"]);
    assert.deepEqual(show(a), ["a:1=v1", "a:2=v2"]);
    // c still holds v1; merging the tombstone in removes it, and v1 never comes back.
    c = merge(c, b);
    assert.deepEqual(show(c), ["b:1=<deleted>"]);
    c = merge(c, update([], EMPTY_VECTOR, "a", put("v1")).set);
    assert.deepEqual(show(c), ["b:1=<deleted>"], "an old copy of v1 resurrected a deleted value");
    // a merges b: v1 is gone (the delete saw it), v2 stays beside the tombstone (the delete did not see it).
    a = merge(a, b);
    assert.deepEqual(show(a), ["a:2=v2", "b:1=<deleted>"]);
    // A client reads both and writes v3 with their context: one sibling again.
    a = update(a, contextOf(a), "a", put("v3")).set;
    assert.deepEqual(show(a), ["a:3=v3"]);
  });

  test("the false overwrite: two clients, one context, one coordinator, two siblings", () => {
    // Both clients read {a:1=v1} (context a:1), then write through a. With one vector clock per sibling
    // the second write would descend from the first and replace it.
    const a0 = update([], EMPTY_VECTOR, "a", put("v1")).set;
    const ctx = contextOf(a0);
    const a1 = update(a0, ctx, "a", put("x")).set;
    const a2 = update(a1, ctx, "a", put("y")).set;
    assert.deepEqual(show(a2), ["a:2=x", "a:3=y"]);
    // Replicated, and merged back: x's dot is still covered by neither context.
    const b = merge([], a2);
    assert.deepEqual(show(b), ["a:2=x", "a:3=y"]);
    assert.deepEqual(show(merge(a2, b)), ["a:2=x", "a:3=y"]);
  });

  test("a stale context supersedes only what it saw", () => {
    // client reads a at a:1, someone writes v2 blind, then the client writes v3 with its old context.
    let a = update([], EMPTY_VECTOR, "a", put("v1")).set;
    const stale = contextOf(a);
    a = update(a, EMPTY_VECTOR, "a", put("v2")).set;
    let c = update([], stale, "c", put("v3")).set;
    assert.deepEqual(show(c), ["c:1=v3"]);
    c = merge(c, a);
    assert.deepEqual(show(c), ["a:2=v2", "c:1=v3"]);
    assert.deepEqual(show(merge(a, c)), show(c));
  });
});

describe("the invariants dvv asserts catch a broken result", () => {
  const a1 = update([], EMPTY_VECTOR, "a", put("a1")).written;
  const b1 = update([], EMPTY_VECTOR, "b", put("b1")).written;
  const a2 = update([a1], contextOf([a1]), "a", put("a2")).written; // supersedes a1
  const INVARIANT = (message: RegExp) => ({ code: "ERR_INVARIANT", message });

  test("merge: a lost concurrent sibling, a superseded one kept, an unsorted or made-up result", () => {
    assertMerged([a1], [b1], [a1, b1]);
    assert.throws(() => assertMerged([a1], [b1], [a1]), INVARIANT(/lost the concurrent sibling 1@b/));
    assert.throws(() => assertMerged([a1], [a2], [a1, a2]), INVARIANT(/kept 1@a, which 2@a supersedes/));
    assert.throws(() => assertMerged([a1], [b1], [b1, a1]), INVARIANT(/not sorted/));
    assert.throws(() => assertMerged([a1], [], [a1, b1]), INVARIANT(/made up the sibling 1@b/));
    assertMergeCovers([a2], [a1], [a2]);
    assert.throws(() => assertMergeCovers([a1], [a1], [b1]), INVARIANT(/dropped the sibling 1@b/));
  });

  test("update: a reused dot, a dot inside its own context, a covered sibling kept or a concurrent one dropped", () => {
    const ok = update([b1], EMPTY_VECTOR, "a", put("x"));
    assertUpdated([b1], EMPTY_VECTOR, "a", ok.written, ok.set);
    const reused = { ...ok.written, dot: { actor: "a", counter: 1 } };
    assert.throws(() => assertFreshDot([a1], EMPTY_VECTOR, "a", reused.dot), INVARIANT(/reuses a counter/));
    assert.throws(
      () => assertFreshDot([], contextOf([a1]), "a", reused.dot),
      INVARIANT(/the write.s own context/),
    );
    assert.throws(() => assertFreshDot([], EMPTY_VECTOR, "b", reused.dot), INVARIANT(/versioned by b/));
    assert.throws(
      () => assertUpdated([b1], EMPTY_VECTOR, "a", ok.written, [ok.written]),
      INVARIANT(/dropped 1@b/),
    );
    const seen = contextOf([b1]);
    const w = update([b1], seen, "a", put("y")).written;
    assert.throws(() => assertUpdated([b1], seen, "a", w, [w, b1]), INVARIANT(/kept 1@b/));
  });
});
