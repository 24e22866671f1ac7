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
 *   dot (actor, n), n one above every counter of `actor` known in the set or in C, and context C. The
 *   siblings covered by C are removed; the others stay (they are concurrent with the write).
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
 */

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
  const out = all.filter((s) => !all.some((t) => t !== s && covers(t.context, s.dot)));
  return sortSiblings(out);
}

/** The counter the next write by `actor` gets: one above any it could have issued before. */
function nextCounter<V>(set: readonly Sibling<V>[], context: VersionVector, actor: Actor): number {
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
 */
export function update<V>(
  set: readonly Sibling<V>[],
  context: VersionVector,
  actor: Actor,
  value: V,
): { set: Sibling<V>[]; written: Sibling<V> } {
  const written: Sibling<V> = { dot: { actor, counter: nextCounter(set, context, actor) }, context, value };
  const kept = set.filter((s) => !covers(context, s.dot));
  kept.push(written);
  return { set: sortSiblings(kept), written };
}

/** True when a and b are concurrent: neither's context covers the other's dot. */
export function concurrent<V>(a: Sibling<V>, b: Sibling<V>): boolean {
  return !covers(a.context, b.dot) && !covers(b.context, a.dot);
}
