/**
 * Dotted version vectors: causality for one key's versions (Preguiça, Baquero, Almeida et al., "Dotted
 * Version Vectors: Logical Clocks for Optimistic Replication", 2010; the paper's section 4 applied to
 * Dynamo's get/put with context, section 4.3 of the Dynamo paper).
 *
 * A key holds a set of *siblings*. Each sibling is one write: its *dot* (actor, counter) names that write
 * uniquely, and its *context* is the version vector the client had seen when it wrote. An actor is a
 * replica node's incarnation (node id and data epoch), never a client, so vectors stay bounded by the
 * number of replicas that ever coordinated a write of the key.
 *
 * Rules (pure functions; no clock, no I/O):
 * - A sibling s is *covered* by a vector V when V[s.dot.actor] >= s.dot.counter.
 * - `update(set, C, actor, value)` (a coordinator's write with client context C): the new sibling gets the
 *   dot (actor, n), n above every counter of `actor` known in the set or in C (and, in a node, above every
 *   counter the node ever issued: replication/dot-counter.ts), and context C. The siblings covered by C
 *   are removed; the others stay (they are concurrent with the write).
 * - `merge(a, b)` (replication, reads): the union, minus every sibling covered by another sibling's
 *   context. The result holds exactly the mutually concurrent writes.
 * - `contextOf(set)`: the join of every sibling's context and dot; a write carrying it supersedes all
 *   the siblings it was read from.
 *
 * Why not plain per-node vector clocks: with one clock per sibling, two clients writing with the same
 * context through the same coordinator produce clocks where the second descends from the first, and the
 * first write is silently lost (the false overwrite). A dot per sibling keeps them apart: the second
 * write's context does not cover the first write's dot, so both stay as siblings.
 *
 * Do not "optimise" `merge` into comparing whole vectors: dominance is decided by dots against contexts.
 *
 * Postconditions of `update` and `merge` are asserted (core/assert.ts) whenever the sets are small
 * (CHECKED_SIBLINGS_MAX), which is nearly every call: a key usually holds one or two siblings, and the
 * checks are quadratic in the siblings, like merge itself.
 */
import { assert } from "../core/assert.js";

export type Actor = string;

export interface Dot {
  readonly actor: Actor;
  readonly counter: number;
}

/** A version vector: actor -> highest counter seen. Immutable by convention; sorted keys when encoded. */
export type VersionVector = ReadonlyMap<Actor, number>;

export interface Sibling<V> {
  readonly dot: Dot;
  readonly context: VersionVector;
  readonly value: V;
}

export const EMPTY_VECTOR: VersionVector = new Map();

/**
 * Sets up to this many siblings (both inputs together) get their postconditions checked: at most
 * 8 x 8 = 64 dot comparisons per call, against the encode and fsync that follow every update and merge.
 */
export const CHECKED_SIBLINGS_MAX = 8;

export function covers(vv: VersionVector, dot: Dot): boolean {
  return (vv.get(dot.actor) ?? 0) >= dot.counter;
}

export function dotEquals(a: Dot, b: Dot): boolean {
  return a.actor === b.actor && a.counter === b.counter;
}

/** Pointwise maximum. */
export function joinVectors(a: VersionVector, b: VersionVector): VersionVector {
  if (b.size === 0) return a;
  if (a.size === 0) return b;
  const out = new Map(a);
  for (const [k, n] of b) if ((out.get(k) ?? 0) < n) out.set(k, n);
  return out;
}

/** True when every counter of `a` is at most the one in `b`. */
export function vectorLeq(a: VersionVector, b: VersionVector): boolean {
  for (const [k, n] of a) if ((b.get(k) ?? 0) < n) return false;
  return true;
}

export function vectorEquals(a: VersionVector, b: VersionVector): boolean {
  return a.size === b.size && vectorLeq(a, b);
}

/** The causal context of a sibling set: everything a client that read it has seen. */
export function contextOf<V>(set: readonly Sibling<V>[]): VersionVector {
  let out: Map<Actor, number> | undefined;
  for (const s of set) {
    out ??= new Map();
    for (const [k, n] of s.context) if ((out.get(k) ?? 0) < n) out.set(k, n);
    if ((out.get(s.dot.actor) ?? 0) < s.dot.counter) out.set(s.dot.actor, s.dot.counter);
  }
  return out ?? EMPTY_VECTOR;
}

function compareDots(a: Dot, b: Dot): number {
  if (a.actor !== b.actor) return a.actor < b.actor ? -1 : 1;
  return a.counter - b.counter;
}

/** Canonical order (by dot), so that equal sets encode to equal bytes on every replica. */
export function sortSiblings<V>(set: Sibling<V>[]): Sibling<V>[] {
  return set.sort((x, y) => compareDots(x.dot, y.dot));
}

/**
 * Merges two sibling sets of the same key. Commutative, associative and idempotent. A sibling survives
 * unless another sibling's context covers its dot; duplicates (same dot) appear once.
 */
export function merge<V>(a: readonly Sibling<V>[], b: readonly Sibling<V>[]): Sibling<V>[] {
  const all: Sibling<V>[] = [];
  const seen = new Set<string>();
  for (const s of [...a, ...b]) {
    const id = `${s.dot.counter}@${s.dot.actor}`;
    if (seen.has(id)) continue;
    seen.add(id);
    all.push(s);
  }
  const out = sortSiblings(all.filter((s) => !all.some((t) => t !== s && covers(t.context, s.dot))));
  if (a.length + b.length <= CHECKED_SIBLINGS_MAX) assertMerged(a, b, out);
  return out;
}

/**
 * The lowest counter the next write by `actor` may get: one above every counter of `actor` that the key's
 * set or the client's context knows. (A node's counters are also node-wide and never go back:
 * replication/dot-counter.ts; `update` takes the larger.)
 */
export function nextCounter<V>(set: readonly Sibling<V>[], context: VersionVector, actor: Actor): number {
  let n = context.get(actor) ?? 0;
  for (const s of set) {
    if (s.dot.actor === actor && s.dot.counter > n) n = s.dot.counter;
    const c = s.context.get(actor) ?? 0;
    if (c > n) n = c;
  }
  return n + 1;
}

/**
 * A write coordinated by `actor` with the client's `context`: returns the new set and the new sibling.
 * Siblings the context covers are superseded; the rest stay. Never removes what the context did not see.
 *
 * `counter`, if given, is the new dot's counter (the coordinator's node-wide counter, at least
 * `nextCounter(set, context, actor)`); else it is `nextCounter`.
 */
export function update<V>(
  set: readonly Sibling<V>[],
  context: VersionVector,
  actor: Actor,
  value: V,
  counter?: number,
): { set: Sibling<V>[]; written: Sibling<V> } {
  const least = nextCounter(set, context, actor);
  assert(
    counter === undefined || (Number.isSafeInteger(counter) && counter >= least),
    () => `a write of ${actor} given the counter ${counter}, below ${least}, which its key's set asks for`,
  );
  const written: Sibling<V> = { dot: { actor, counter: counter ?? least }, context, value };
  const kept = set.filter((s) => !covers(context, s.dot));
  kept.push(written);
  const out = sortSiblings(kept);
  if (set.length < CHECKED_SIBLINGS_MAX) assertUpdated(set, context, actor, written, out);
  return { set: out, written };
}

/** True when a and b are concurrent: neither's context covers the other's dot. */
export function concurrent<V>(a: Sibling<V>, b: Sibling<V>): boolean {
  return !covers(a.context, b.dot) && !covers(b.context, a.dot);
}

// ------------------------------------------------------------------ invariants (core/assert.ts)

/**
 * merge's postconditions: the result is sorted by dot with no dot twice, every sibling of it comes from
 * an input, none is covered by another's context, and every input sibling that no other input covers is
 * in it (a concurrent write is never lost).
 */
export function assertMerged<V>(
  a: readonly Sibling<V>[],
  b: readonly Sibling<V>[],
  out: readonly Sibling<V>[],
): void {
  const has = (set: readonly Sibling<V>[], d: Dot) => set.some((x) => dotEquals(x.dot, d));
  for (let i = 0; i < out.length; i++) {
    const s = out[i]!;
    assert(i === 0 || compareDots(out[i - 1]!.dot, s.dot) < 0, () => `merge result not sorted: ${dots(out)}`);
    assert(has(a, s.dot) || has(b, s.dot), () => `merge made up the sibling ${dotString(s.dot)}`);
    for (const t of out)
      assert(
        t === s || !covers(t.context, s.dot),
        () => `merge kept ${dotString(s.dot)}, which ${dotString(t.dot)} supersedes`,
      );
  }
  for (const s of [...a, ...b]) {
    if (has(out, s.dot)) continue;
    const coveredBy = (x: Sibling<V>) => !dotEquals(x.dot, s.dot) && covers(x.context, s.dot);
    assert(
      a.some(coveredBy) || b.some(coveredBy),
      () => `merge lost the concurrent sibling ${dotString(s.dot)}`,
    );
  }
}

/**
 * update's postconditions: the new sibling carries the client's context and a fresh dot of `actor`
 * (assertFreshDot); the result is sorted, holds the new sibling, and holds exactly the old siblings the
 * context does not cover.
 */
export function assertUpdated<V>(
  set: readonly Sibling<V>[],
  context: VersionVector,
  actor: Actor,
  written: Sibling<V>,
  out: readonly Sibling<V>[],
): void {
  assert(written.context === context, () => `update's sibling ${dotString(written.dot)} lost its context`);
  assertFreshDot(set, context, actor, written.dot);
  let kept = 0;
  for (const s of set) {
    const inOut = out.includes(s);
    assert(
      inOut !== covers(context, s.dot),
      () => `update ${inOut ? "kept" : "dropped"} ${dotString(s.dot)} (its context covers it: ${!inOut})`,
    );
    if (inOut) kept++;
  }
  assert(out.length === kept + 1 && out.includes(written), () => `update's result ${dots(out)}`);
  for (let i = 1; i < out.length; i++)
    assert(compareDots(out[i - 1]!.dot, out[i]!.dot) < 0, () => `update's result not sorted: ${dots(out)}`);
}

/**
 * A write's dot is new: a dot of `actor` above every counter of `actor` that `set` (its dots and
 * contexts) or the client's `context` knows, so an actor never issues one dot twice (two different
 * writes would share a name, and one would hide the other). O(siblings).
 */
export function assertFreshDot<V>(
  set: readonly Sibling<V>[],
  context: VersionVector,
  actor: Actor,
  dot: Dot,
): void {
  const n = dot.counter;
  assert(
    dot.actor === actor && Number.isSafeInteger(n) && n >= 1,
    () => `a write versioned by ${actor} got the dot ${dotString(dot)}`,
  );
  assert(
    (context.get(actor) ?? 0) < n,
    () => `the dot ${dotString(dot)} is covered by the write's own context`,
  );
  for (const s of set)
    assert(
      (s.dot.actor !== actor || s.dot.counter < n) && (s.context.get(actor) ?? 0) < n,
      () => `the dot ${dotString(dot)} reuses a counter of the set it replaced (sibling ${dotString(s.dot)})`,
    );
}

/**
 * A merge's result covers both of its inputs: every sibling of `a` and `b` is in `merged` or superseded
 * by it (covered by its causal context). O(siblings x actors).
 */
export function assertMergeCovers<V>(
  merged: readonly Sibling<V>[],
  a: readonly Sibling<V>[],
  b: readonly Sibling<V>[],
): void {
  // covers(contextOf(merged), d), without building the vector.
  const covered = (d: Dot) =>
    merged.some((t) => covers(t.context, d) || (t.dot.actor === d.actor && t.dot.counter >= d.counter));
  for (const s of a)
    assert(covered(s.dot), () => `a merge dropped the sibling ${dotString(s.dot)}, which it does not cover`);
  for (const s of b)
    assert(covered(s.dot), () => `a merge dropped the sibling ${dotString(s.dot)}, which it does not cover`);
}

function dotString(d: Dot): string {
  return `${d.counter}@${d.actor}`;
}

function dots<V>(set: readonly Sibling<V>[]): string {
  return `[${set.map((s) => dotString(s.dot)).join(", ")}]`;
}
