/**
 * A key's state hash: 32 bits that name a key together with the versions it holds, for the anti-entropy
 * trees (tree.ts). Two replicas whose sets for a key hold the same siblings get the same hash; any other
 * difference (a sibling more or less, a tombstone against a value) changes it, except with probability
 * 2^-32.
 *
 * What is hashed: first the key, `k = hash32(key, KEY_STATE_SEED)`; then, with `k` as the seed, the
 * version information in the set's canonical order (dvv.ts `sortSiblings`: by dot):
 *
 *   u32 BE sibling count | per sibling: u32 BE actor hash | counter as u32 BE high, u32 BE low | u8 flags
 *
 * where the actor hash is hash32(actor's UTF-8, ACTOR_SEED) and flags bit 0 is "deleted". Hashing an
 * actor once (its hash is cached: a node sees few actors) rather than its bytes on every call keeps the
 * write path's cost down: two state hashes per write (the old set's and the new one's). Two actors whose
 * hashes collide (2^-32) could make two different sets hash alike, which the 32-bit state hash allows
 * anyway.
 *
 * Not the value bytes, nor the sibling's context or timestamp: a dot names one write, and a write's value,
 * context and deleted flag never change, so equal dots mean equal siblings (Tictac AAE hashes key and
 * version vector, not the object, for the same reason: the hash costs the same for a 1 MiB value as for a
 * 10-byte one). The deleted flag is hashed anyway: it costs nothing and keeps a tombstone and a value apart
 * even if a bug ever gave two writes one dot.
 *
 * The key is part of the hash so that two keys holding the same dots do not cancel each other in a
 * segment's XOR. An empty set (the key is absent) hashes to 0, and a non-empty one never does (0 is
 * mapped to 1): "hash 0" means "absent" everywhere in anti-entropy, which keeps a tree's key count exact.
 *
 * Deterministic and pure; the one scratch buffer is reused between calls (no call awaits, so none can
 * interleave with another).
 */
import { assert } from "../core/assert.js";
import { hash32 } from "../core/hash.js";
import type { Sibling } from "../versioning/dvv.js";

/** The seed of key state hashes ("KSTH"): independent of the ring's and the segments' hashes. */
export const KEY_STATE_SEED = 0x4b535448;
/** The seed of an actor's hash inside a key state hash ("ACTR"). */
const ACTOR_SEED = 0x41435452;
/** Actors whose hashes are cached; past it the cache starts again (actors are few: nodes x restarts). */
const ACTOR_CACHE_MAX = 4096;

const actorHashes = new Map<string, number>();

function actorHash(actor: string): number {
  let h = actorHashes.get(actor);
  if (h === undefined) {
    if (actorHashes.size >= ACTOR_CACHE_MAX) actorHashes.clear();
    h = hash32(Buffer.from(actor, "utf8"), ACTOR_SEED);
    actorHashes.set(actor, h);
  }
  return h;
}

const SIBLING_BYTES = 13;
let scratch = new Uint8Array(4 + 8 * SIBLING_BYTES);
/** Views of scratch's first n bytes, by n (hash32 hashes a whole array): no view is made per call. */
let views: Uint8Array[] = [];

function view(n: number): Uint8Array {
  if (scratch.length < n) {
    scratch = new Uint8Array(Math.max(n, 2 * scratch.length));
    views = [];
  }
  let v = views[n];
  if (v === undefined) {
    v = scratch.subarray(0, n);
    views[n] = v;
  }
  return v;
}

function putU32(b: Uint8Array, p: number, x: number): void {
  b[p] = x >>> 24;
  b[p + 1] = (x >>> 16) & 0xff;
  b[p + 2] = (x >>> 8) & 0xff;
  b[p + 3] = x & 0xff;
}

/**
 * The state hash of `key` holding `set` (0 if the set is empty, never 0 otherwise). The set must be in
 * canonical order (every set that the replica stores or merges is: dvv.ts sorts them).
 */
export function keyStateHash(
  key: Uint8Array,
  set: readonly Sibling<{ readonly deleted: boolean }>[],
): number {
  const n = set.length;
  if (n === 0) return 0;
  const b = view(4 + n * SIBLING_BYTES);
  putU32(b, 0, n);
  let p = 4;
  let prev: Sibling<{ readonly deleted: boolean }> | undefined;
  for (let i = 0; i < n; i++) {
    const s = set[i]!;
    const { actor, counter } = s.dot;
    if (prev !== undefined) {
      const a = prev.dot;
      assert(
        a.actor < actor || (a.actor === actor && a.counter < counter),
        () =>
          `key state hash of a set not in canonical order: ${a.counter}@${a.actor} before ${counter}@${actor}`,
      );
    }
    prev = s;
    putU32(b, p, actorHash(actor));
    putU32(b, p + 4, Math.floor(counter / 0x1_0000_0000));
    putU32(b, p + 8, counter >>> 0);
    b[p + 12] = s.value.deleted ? 1 : 0;
    p += SIBLING_BYTES;
  }
  const h = hash32(b, hash32(key, KEY_STATE_SEED));
  return h === 0 ? 1 : h;
}
