/**
 * The ring (src/ring/ring.ts): Dynamo's partitioning strategy 3, checked by properties and examples.
 *
 * - balance: with equal weights no node owns more than ceil(Q/S) partitions, and a fresh ring of S > N
 *   nodes has N distinct owners in every N consecutive partitions;
 * - weights: every node owns its largest-remainder share, within one partition of Q*w/W;
 * - movement: a join moves only the new node's share, all of it to the new node; a leave moves only the
 *   leaver's partitions (equal weights; the regression tests at the end cover heterogeneous weights);
 * - preference lists: the first N distinct nodes clockwise, distinct zones first, against a naive model,
 *   on rings made by `claim` and on arbitrary owner arrays (a ring in the middle of a handoff);
 * - determinism: the same inputs in any order give the same ring;
 * - partitionOf: in range, nested across Q, uniform (chi-square), and pinned to fixed values;
 * - bad input: a RangeError that says what is wrong.
 *
 * Properties use small Q and S so the file runs in seconds; one example runs at S=1000, Q=16384.
 * Seeded: FC_SEED=<n> replays another seed; a failure prints its seed and counterexample.
 *
 * The tests at the end reproduce bugs found while writing this file (fixed since).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { hash32 } from "../../src/core/hash.js";
import {
  claim,
  ownership,
  PreferenceTable,
  partitionOf,
  type Ring,
  type RingMember,
  targetCounts,
} from "../../src/ring/ring.js";
import { seededRandom } from "../../src/runtime/runtime.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x52_49_4e_47;
/** Each property has its own seed, derived from SEED. */
const fcParams = (seedOffset: number, numRuns = 300) =>
  ({ seed: SEED + seedOffset, numRuns, includeErrorInReport: true }) as const;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

// ---------------------------------------------------------------- helpers

const equalMembers = (ids: readonly string[]): RingMember[] => ids.map((id) => ({ id, weight: 1 }));

const countOf = (ring: Ring, id: string): number => ownership(ring).get(id) ?? 0;

/** Partitions whose owner differs between two rings of the same Q. */
function changed(before: Ring, after: Ring): number[] {
  const out: number[] = [];
  for (let p = 0; p < before.partitions; p++) if (before.owners[p] !== after.owners[p]) out.push(p);
  return out;
}

/** Every partition has an owner, and every owner is a member. */
function assertWellFormed(ring: Ring, members: readonly RingMember[], q: number): void {
  assert.equal(ring.partitions, q);
  assert.equal(ring.owners.length, q);
  const ids = new Set(members.map((m) => m.id));
  for (let p = 0; p < q; p++)
    assert.ok(ids.has(ring.owners[p]!), `partition ${p} owned by ${ring.owners[p]}`);
}

/** With equal weights: every node owns floor(Q/S) or ceil(Q/S) partitions. */
function assertBalanced(ring: Ring, members: readonly RingMember[]): void {
  const q = ring.partitions;
  const s = members.length;
  const own = ownership(ring);
  const counts = members.map((m) => own.get(m.id) ?? 0);
  const max = Math.max(...counts);
  const min = Math.min(...counts);
  assert.ok(max <= Math.ceil(q / s), `most loaded node owns ${max} > ceil(${q}/${s})`);
  assert.ok(min >= Math.floor(q / s), `least loaded node owns ${min} < floor(${q}/${s})`);
  // The same bound stated as the load ratio.
  assert.ok(max / (q / s) <= Math.ceil(q / s) / (q / s) + 1e-12);
}

/** The rule `claim` aims for: any n consecutive partitions have n distinct owners. */
function assertWindowsDistinct(ring: Ring, n: number): void {
  const q = ring.partitions;
  for (let p = 0; p < q; p++) {
    const window = Array.from({ length: n }, (_, d) => ring.owners[(p + d) % q]!);
    assert.equal(new Set(window).size, n, `partitions ${p}..${p + n - 1} are owned by [${window}]`);
  }
}

/**
 * The naive preference list: walk the whole ring clockwise from p collecting distinct nodes; the first
 * node met of each zone comes first, in walk order; then the others, in walk order; keep n.
 */
function naivePreferenceList(
  owners: readonly string[],
  p: number,
  n: number,
  zoneOf: (id: string) => string,
): string[] {
  const q = owners.length;
  const seen = new Set<string>();
  const zones = new Set<string>();
  const firsts: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < q; i++) {
    const id = owners[(p + i) % q]!;
    if (seen.has(id)) continue;
    seen.add(id);
    const z = zoneOf(id);
    if (zones.has(z)) rest.push(id);
    else {
      zones.add(z);
      firsts.push(id);
    }
  }
  return [...firsts.slice(0, n), ...rest].slice(0, n);
}

function assertPreferenceLists(ring: Ring, members: readonly RingMember[], n: number): void {
  const table = new PreferenceTable(ring, members, n);
  const zoneById = new Map(members.map((m) => [m.id, m.zone ?? `node:${m.id}`]));
  const zoneOf = (id: string): string => zoneById.get(id)!;
  const distinctNodes = new Set(ring.owners).size;
  const zonesInRing = new Set(ring.owners.map(zoneOf)).size;
  for (let p = 0; p < ring.partitions; p++) {
    const list = table.forPartition(p);
    assert.equal(new Set(list).size, list.length, `partition ${p}: a node repeats in [${list}]`);
    assert.equal(list.length, Math.min(n, distinctNodes), `partition ${p}: [${list}] has the wrong length`);
    assert.equal(list[0], ring.owners[p], `partition ${p}: the owner does not come first`);
    const head = list.slice(0, Math.min(n, zonesInRing)).map(zoneOf);
    assert.equal(new Set(head).size, head.length, `partition ${p}: a zone repeats too early in [${list}]`);
    assert.deepEqual(list, naivePreferenceList(ring.owners, p, n, zoneOf), `partition ${p}`);
  }
}

// ---------------------------------------------------------------- arbitraries

const idArb = fc.string({ minLength: 1, maxLength: 8 });
/** Q = 2^k. */
const qArb = (minK: number, maxK: number) => fc.integer({ min: minK, max: maxK }).map((k) => 2 ** k);
/** Integer and fractional weights over six orders of magnitude. */
const weightArb = fc.oneof(
  fc.integer({ min: 1, max: 10 }),
  fc.double({ min: 0.001, max: 1000, noNaN: true, noDefaultInfinity: true }),
);
const membersArb = (minS: number, maxS: number, weight: fc.Arbitrary<number> = weightArb) =>
  fc
    .uniqueArray(idArb, { minLength: minS, maxLength: maxS })
    .chain((ids) => fc.tuple(...ids.map((id) => weight.map((w): RingMember => ({ id, weight: w })))));
/** Members of 1..zones zones (every member has one) or, half the time, no zones at all. */
const zonedMembersArb = (minS: number, maxS: number) =>
  fc
    .tuple(membersArb(minS, maxS, fc.integer({ min: 1, max: 4 })), fc.integer({ min: 0, max: 4 }), fc.nat())
    .map(([ms, zones, salt]) =>
      zones === 0 ? ms : ms.map((m, i): RingMember => ({ ...m, zone: `z${(i * 7 + salt) % zones}` })),
    );

// ---------------------------------------------------------------- balance and weights

describe("claim: balance and weights", () => {
  test("equal weights: the most loaded node owns at most ceil(Q/S) partitions", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(idArb, { minLength: 1, maxLength: 64 }),
        qArb(0, 12),
        fc.integer({ min: 1, max: 5 }),
        (ids, q, n) => {
          const members = equalMembers(ids);
          const ring = claim(undefined, members, q, n);
          assertWellFormed(ring, members, q);
          assertBalanced(ring, members);
        },
      ),
      fcParams(1),
    );
  });

  test("shares follow weights: within 1 of Q*w/W, within 10% once Q*w/W >= 10, fresh or incremental", () => {
    fc.assert(
      fc.property(
        membersArb(1, 24),
        fc.option(membersArb(1, 24), { nil: undefined }),
        qArb(4, 12),
        fc.integer({ min: 1, max: 4 }),
        (members, previousMembers, q, n) => {
          const prev = previousMembers === undefined ? undefined : claim(undefined, previousMembers, q, n);
          const ring = claim(prev, members, q, n);
          assertWellFormed(ring, members, q);
          const total = members.reduce((s, m) => s + m.weight, 0);
          const own = ownership(ring);
          const targets = targetCounts(members, q);
          for (const m of members) {
            const count = own.get(m.id) ?? 0;
            const share = (q * m.weight) / total;
            assert.equal(
              count,
              targets.get(m.id),
              `${m.id} owns ${count}, its target is ${targets.get(m.id)}`,
            );
            assert.ok(Math.abs(count - share) < 1 + 1e-9, `${m.id} owns ${count}, its share is ${share}`);
            if (share >= 10)
              assert.ok(Math.abs(count - share) <= 0.1 * share, `${m.id} owns ${count}, share ${share}`);
          }
        },
      ),
      fcParams(2),
    );
  });

  test("equal weights, S > N: every N consecutive partitions have N distinct owners (fresh claim)", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 5 })
          .chain((n) => fc.tuple(fc.constant(n), fc.uniqueArray(idArb, { minLength: n + 1, maxLength: 48 }))),
        qArb(4, 11),
        ([n, ids], q) => {
          assertWindowsDistinct(claim(undefined, equalMembers(ids), q, n), n);
        },
      ),
      fcParams(10),
    );
  });

  test("example: weights 1, 2, 3, 4 of Q=1024 own 102, 205, 307, 410 (largest remainder)", () => {
    const members: RingMember[] = [1, 2, 3, 4].map((w) => ({ id: `w${w}`, weight: w }));
    const own = ownership(claim(undefined, members, 1024, 3));
    // Exact shares 102.4, 204.8, 307.2, 409.6: floors 102, 204, 307, 409 and the two largest remainders
    // (w2 0.8, w4 0.6) get the two partitions left.
    assert.deepEqual(Object.fromEntries(own), { w1: 102, w2: 205, w3: 307, w4: 410 });
  });
});

// ---------------------------------------------------------------- movement

describe("claim: movement on join and leave (equal weights)", () => {
  test("a join moves <= ceil(Q/(S+1)) (<= 1.2x ideal) partitions, all to it; a leave moves only its own", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(idArb, { minLength: 40, maxLength: 40 }),
        fc.integer({ min: 1, max: 24 }),
        qArb(4, 10),
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.record({ join: fc.boolean(), pick: fc.nat() }), { minLength: 1, maxLength: 8 }),
        (ids, s, q, n, ops) => {
          let members = equalMembers(ids.slice(0, s));
          let next = s;
          let ring = claim(undefined, members, q, n);
          assertBalanced(ring, members);
          for (const op of ops) {
            if (op.join || members.length === 1) {
              const joiner: RingMember = { id: ids[next++]!, weight: 1 };
              const after = claim(ring, [...members, joiner], q, n);
              const moved = changed(ring, after);
              for (const p of moved)
                assert.equal(after.owners[p], joiner.id, `partition ${p} moved between old nodes`);
              assert.equal(moved.length, countOf(after, joiner.id));
              const ideal = q / (members.length + 1);
              assert.ok(moved.length <= Math.ceil(ideal), `moved ${moved.length}, ideal ${ideal}`);
              if (ideal >= 5) assert.ok(moved.length <= 1.2 * ideal, `moved ${moved.length}, ideal ${ideal}`);
              members = [...members, joiner];
              ring = after;
            } else {
              const leaver = members[op.pick % members.length]!;
              const rest = members.filter((m) => m !== leaver);
              const after = claim(ring, rest, q, n);
              const moved = changed(ring, after);
              for (const p of moved)
                assert.equal(ring.owners[p], leaver.id, `partition ${p} of ${ring.owners[p]} moved`);
              assert.equal(moved.length, countOf(ring, leaver.id));
              members = rest;
              ring = after;
            }
            assertWellFormed(ring, members, q);
            assertBalanced(ring, members);
          }
        },
      ),
      fcParams(3),
    );
  });

  test("a claim with the same members changes nothing", () => {
    fc.assert(
      fc.property(membersArb(1, 24), qArb(3, 10), fc.integer({ min: 1, max: 4 }), (members, q, n) => {
        const ring = claim(undefined, members, q, n);
        assert.deepEqual(claim(ring, members, q, n), ring);
      }),
      fcParams(4),
    );
  });

  test("example: S=1000, Q=16384: balance, one join, one leave, preference lists of 3", () => {
    const q = 16384;
    const ids = Array.from({ length: 1000 }, (_, i) => `node-${String(i).padStart(4, "0")}`);
    const members = equalMembers(ids);
    const ring = claim(undefined, members, q, 3);
    assertWellFormed(ring, members, q);
    assertBalanced(ring, members);
    assert.ok(Math.max(...ownership(ring).values()) <= 17);
    assertWindowsDistinct(ring, 3);

    const joined = claim(ring, [...members, { id: "node-new", weight: 1 }], q, 3);
    const moved = changed(ring, joined);
    assert.ok(moved.every((p) => joined.owners[p] === "node-new"));
    assert.ok(moved.length / q <= 1.2 / 1001, `moved ${moved.length} of ${q}`);

    const left = claim(ring, members.slice(1), q, 3);
    assert.ok(changed(ring, left).every((p) => ring.owners[p] === "node-0000"));

    const table = new PreferenceTable(ring, members, 3);
    for (let p = 0; p < q; p++) assert.equal(new Set(table.forPartition(p)).size, 3, `partition ${p}`);
  });
});

// ---------------------------------------------------------------- preference lists

describe("PreferenceTable", () => {
  test("rings made by claim: distinct nodes, min(N, nodes) of them, distinct zones first", () => {
    fc.assert(
      fc.property(zonedMembersArb(1, 12), qArb(0, 9), fc.integer({ min: 1, max: 5 }), (members, q, n) => {
        assertPreferenceLists(claim(undefined, members, q, n), members, n);
      }),
      fcParams(5),
    );
  });

  test("any owner array (a ring mid-handoff): the same rules", () => {
    const arb = zonedMembersArb(1, 10).chain((members) =>
      fc.tuple(
        fc.constant(members),
        qArb(0, 8).chain((q) =>
          fc.array(fc.constantFrom(...members.map((m) => m.id)), { minLength: q, maxLength: q }),
        ),
        fc.integer({ min: 1, max: 5 }),
      ),
    );
    fc.assert(
      fc.property(arb, ([members, owners, n]) => {
        assertPreferenceLists({ partitions: owners.length, owners }, members, n);
      }),
      fcParams(6),
    );
  });

  test("forKey is forPartition of partitionOf", () => {
    const members = equalMembers(["a", "b", "c", "d", "e"]);
    const table = new PreferenceTable(claim(undefined, members, 64, 3), members, 3);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (key) => {
        assert.equal(table.forKey(key), table.forPartition(partitionOf(key, 64)));
      }),
      fcParams(7),
    );
  });

  test("example: 3 zones of 3 nodes, N=3: every list spans the 3 zones", () => {
    const members: RingMember[] = Array.from({ length: 9 }, (_, i) => ({
      id: `n${i}`,
      weight: 1,
      zone: `z${i % 3}`,
    }));
    const ring = claim(undefined, members, 256, 3);
    const table = new PreferenceTable(ring, members, 3);
    const zoneOf = new Map(members.map((m) => [m.id, m.zone]));
    for (let p = 0; p < 256; p++)
      assert.equal(new Set(table.forPartition(p).map((id) => zoneOf.get(id))).size, 3);
  });
});

// ---------------------------------------------------------------- determinism

describe("claim: determinism", () => {
  const shuffledArb = zonedMembersArb(1, 16).chain((members) =>
    fc.tuple(
      fc.constant(members),
      fc.shuffledSubarray(members, { minLength: members.length, maxLength: members.length }),
    ),
  );

  test("same inputs, same ring, whatever the order of members", () => {
    fc.assert(
      fc.property(
        shuffledArb,
        fc.option(membersArb(1, 16), { nil: undefined }),
        qArb(0, 10),
        fc.integer({ min: 1, max: 4 }),
        ([members, shuffled], previousMembers, q, n) => {
          const prev = previousMembers === undefined ? undefined : claim(undefined, previousMembers, q, n);
          const ring = claim(prev, members, q, n);
          assert.deepEqual(claim(prev, members, q, n), ring);
          assert.deepEqual(claim(prev, shuffled, q, n), ring);
          const a = new PreferenceTable(ring, members, n);
          const b = new PreferenceTable(ring, shuffled, n);
          for (let p = 0; p < q; p++) assert.deepEqual(b.forPartition(p), a.forPartition(p));
        },
      ),
      fcParams(8),
    );
  });

  test("claim does not modify its inputs", () => {
    const members = equalMembers(["c", "a", "b"]);
    const prev = claim(undefined, equalMembers(["a", "b"]), 16, 3);
    const prevOwners = [...prev.owners];
    claim(prev, members, 16, 3);
    assert.deepEqual(prev.owners, prevOwners);
    assert.deepEqual(
      members.map((m) => m.id),
      ["c", "a", "b"],
    );
  });
});

// ---------------------------------------------------------------- partitionOf

describe("partitionOf", () => {
  test("in [0, Q), an integer, and nested: partitionOf(k, 2Q) >> 1 === partitionOf(k, Q)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), qArb(0, 19), (key, q) => {
        const p = partitionOf(key, q);
        assert.ok(Number.isInteger(p) && p >= 0 && p < q, `partition ${p} of ${q}`);
        assert.equal(partitionOf(key, 2 * q) >> 1, p);
      }),
      fcParams(9, 1000),
    );
  });

  test("asserted: a partition count that claim would refuse (0, none) is a bug, caught at the lookup", () => {
    assert.throws(() => partitionOf(Buffer.from("k"), 0), {
      code: "ERR_INVARIANT",
      message: /partition 0 of 0/,
    });
  });

  /** Pearson's chi-square of keys over Q=256 partitions; about 255 +- 23 for a uniform hash. */
  const chiSquare = (keys: Iterable<Uint8Array>, q: number): { chi2: number; n: number } => {
    const counts = new Array<number>(q).fill(0);
    let n = 0;
    for (const k of keys) {
      counts[partitionOf(k, q)]!++;
      n++;
    }
    const expected = n / q;
    return { chi2: counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0), n };
  };
  // Loose: df + 6 sd (sd = sqrt(2 df)); a hash that leaves whole partitions empty or doubles some fails.
  const Q = 256;
  const BOUND = Q - 1 + 6 * Math.sqrt(2 * (Q - 1));

  test("uniform: random 16-byte keys", () => {
    const random = seededRandom(SEED);
    function* keys(): Generator<Uint8Array> {
      for (let i = 0; i < 200 * Q; i++)
        yield Uint8Array.from({ length: 16 }, () => (random.next() * 256) | 0);
    }
    const { chi2 } = chiSquare(keys(), Q);
    assert.ok(chi2 < BOUND, `chi-square ${chi2.toFixed(1)} >= ${BOUND.toFixed(1)}`);
  });

  test("uniform: sequential keys (user:0, user:1, ...)", () => {
    function* keys(): Generator<Uint8Array> {
      for (let i = 0; i < 200 * Q; i++) yield utf8(`user:${i}`);
    }
    const { chi2 } = chiSquare(keys(), Q);
    assert.ok(chi2 < BOUND, `chi-square ${chi2.toFixed(1)} >= ${BOUND.toFixed(1)}`);
  });

  test("stable: MurmurHash3 x86_32 reference vectors", () => {
    const seed = 0x9747b28c;
    assert.equal(hash32(utf8(""), 0), 0);
    assert.equal(hash32(utf8(""), 1), 0x514e28b7);
    assert.equal(hash32(utf8(""), 0xffffffff), 0x81f16f39);
    assert.equal(hash32(new Uint8Array(4), 0), 0x2362f9de);
    assert.equal(hash32(utf8("a"), seed), 0x7fa09ea6);
    assert.equal(hash32(utf8("aa"), seed), 0x5d211726);
    assert.equal(hash32(utf8("aaa"), seed), 0x283e0130);
    assert.equal(hash32(utf8("aaaa"), seed), 0x5a97808a);
    assert.equal(hash32(utf8("abc"), seed), 0xc84a62dd);
    assert.equal(hash32(utf8("Hello, world!"), seed), 0x24884cba);
    assert.equal(hash32(utf8("The quick brown fox jumps over the lazy dog"), seed), 0x2fa826cd);
  });

  test("stable: pinned partitions (a change here moves every key of every existing cluster)", () => {
    const q20 = 1 << 20;
    const pinned: [string, number][] = [
      ["", 20160],
      ["a", 748913],
      ["user:1", 448605],
      ["user:42", 775569],
      ["ringstore", 697977],
      ["The quick brown fox jumps over the lazy dog", 160280],
    ];
    for (const [key, p] of pinned) {
      assert.equal(partitionOf(utf8(key), q20), p, JSON.stringify(key));
      assert.equal(partitionOf(utf8(key), 1024), p >> 10, JSON.stringify(key));
    }
    assert.equal(
      partitionOf(
        Uint8Array.from({ length: 16 }, (_, i) => i),
        q20,
      ),
      932902,
    );
    assert.equal(partitionOf(new Uint8Array([0xff, 0x00, 0x80]), q20), 343027);
  });
});

// ---------------------------------------------------------------- bad input

describe("claim: bad input is a RangeError that says what is wrong", () => {
  const ok = equalMembers(["a", "b"]);

  test("duplicate member ids", () => {
    assert.throws(() => claim(undefined, [...ok, { id: "a", weight: 2 }], 16, 3), {
      name: "RangeError",
      message: /duplicate ring member a/,
    });
  });

  test("zero, negative, NaN and infinite weights", () => {
    for (const w of [0, -0, -1, -0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.throws(() => claim(undefined, [...ok, { id: "c", weight: w }], 16, 3), {
        name: "RangeError",
        message: new RegExp(`member c has a bad weight ${String(w)}`),
      });
    }
  });

  test("no members", () => {
    assert.throws(() => claim(undefined, [], 16, 3), { name: "RangeError", message: /at least one member/ });
  });

  test("Q not a power of two (or out of range)", () => {
    for (const q of [0, -4, 3, 6, 1000, 1.5, 0.5, 2 ** 21, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => claim(undefined, ok, q, 3), {
        name: "RangeError",
        message: /partitions must be a power of two up to 2\^20/,
      });
    }
  });

  test("changing Q", () => {
    const ring = claim(undefined, ok, 16, 3);
    assert.throws(() => claim(ring, ok, 32, 3), {
      name: "RangeError",
      message: /the partition count never changes/,
    });
  });
});

// ---------------------------------------------------------------- regressions of bugs found while writing this file

describe("regressions", () => {
  test("heterogeneous weights: a join moves partitions between old nodes", () => {
    // Targets before: n0 2, n1 2, n2 2, n3 2, n4 0; after "new" (weight 3) joins: n0 2, n1 1, n2 2,
    // n3 1, n4 1, new 1. n4 gains a partition on a join, taken from an old node.
    const members: RingMember[] = [4, 3, 4, 3, 1].map((weight, i) => ({ id: `n${i}`, weight }));
    const ring = claim(undefined, members, 8, 3);
    const after = claim(ring, [...members, { id: "new", weight: 3 }], 8, 3);
    for (const p of changed(ring, after)) assert.equal(after.owners[p], "new", `partition ${p}`);
  });

  test("heterogeneous weights: a leave moves partitions of nodes that stay", () => {
    // Targets before: n0 4, n1 4, n2 2, n3 2, n4 4; after n2 leaves: n0 5, n1 5, n3 1, n4 5.
    const members: RingMember[] = [3, 3, 1, 1, 3].map((weight, i) => ({ id: `n${i}`, weight }));
    const ring = claim(undefined, members, 16, 3);
    const after = claim(
      ring,
      members.filter((m) => m.id !== "n2"),
      16,
      3,
    );
    for (const p of changed(ring, after)) assert.equal(ring.owners[p], "n2", `partition ${p}`);
  });

  test("large finite weights: shares ignore weights, or claim throws a plain Error", () => {
    // Scaling every weight by the same power of two must not change the ring.
    const members: RingMember[] = [1, 1, 2].map((weight, i) => ({ id: `n${i}`, weight }));
    const scaled = members.map((m) => ({ ...m, weight: m.weight * 2 ** 1012 }));
    assert.deepEqual(claim(undefined, scaled, 4096, 3), claim(undefined, members, 4096, 3));
    const big = equalMembers(["a", "b"]).map((m) => ({ ...m, weight: 1e308 }));
    assert.doesNotThrow(() => claim(undefined, big, 16, 3));
  });

  test("a non-integer Q next to a power of two passes the check", () => {
    assert.throws(() => claim(undefined, equalMembers(["a", "b"]), 1024 + 2 ** -42, 3), {
      name: "RangeError",
      message: /partitions must be a power of two/,
    });
  });
});
