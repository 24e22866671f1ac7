/**
 * Exchanges (src/anti-entropy/exchange.ts, driven by driver.ts, answered by responder.ts) between two
 * real replicas (Replica on MemoryEngine, trees kept by the write hook): an exchange finds exactly the
 * keys that differ, whatever the difference (missing, older, a sibling more, a tombstone), with each
 * side's state hash, and nothing between equal replicas (one round trip); the two-look rule drops a
 * difference that goes away during the pause and ignores one that appears then; the bounds hold and
 * `resumeFrom` works through a large drift; partitions without a tree are skipped; an oversized segment
 * is skipped and reported; a peer's bad answers end the exchange as "failed", never in a crash.
 *
 * Seeded: FC_SEED=<n> replays another seed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  answerKeysRequest,
  driveExchange,
  type ExchangeIo,
  scanEach,
} from "../../src/anti-entropy/driver.js";
import {
  DEFAULT_EXCHANGE_LIMITS,
  Exchange,
  type ExchangeLimits,
  type ExchangeResult,
} from "../../src/anti-entropy/exchange.js";
import { keyStateHash } from "../../src/anti-entropy/key-state.js";
import type { AeHashesAnswer, AeKeyDiffsAnswer, AeKeysRequest } from "../../src/anti-entropy/messages.js";
import { packU32, unpackU32 } from "../../src/anti-entropy/messages.js";
import { answerTreeRequest } from "../../src/anti-entropy/responder.js";
import { PartitionTree, SEGMENTS, segmentOf } from "../../src/anti-entropy/tree.js";
import { TreeSet } from "../../src/anti-entropy/tree-set.js";
import { Replica } from "../../src/replication/replica.js";
import { partitionOf } from "../../src/ring/ring.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { contextOf, EMPTY_VECTOR } from "../../src/versioning/dvv.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { FC_PARAMS, HookedEngine, storedValue } from "./support.js";

const PAGING = { pageKeys: 64, pageBytes: 1 << 20, yieldNow: async () => {} };

interface Side {
  readonly trees: TreeSet;
  readonly replica: Replica;
}

function side(q: number, actor: string): Side {
  const pof = (k: Uint8Array) => partitionOf(k, q);
  const trees = new TreeSet(pof);
  for (let p = 0; p < q; p++) trees.adopt(new PartitionTree(p));
  return { trees, replica: new Replica(new HookedEngine(new MemoryEngine(), trees), actor, 64) };
}

const key = (i: number) => Buffer.from(`user:${i}`);
const names = (keys: readonly { key: Uint8Array }[]) => keys.map((k) => Buffer.from(k.key).toString()).sort();

/** Both sides hold the same sets for keys 0..n-1 (written on `a`, merged into `b`). */
async function sameData(a: Side, b: Side, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await a.replica.coordinate(key(i), EMPTY_VECTOR, storedValue(`v${i}`));
    assert.equal(r.kind, "ok");
    if (r.kind === "ok") await b.replica.merge(key(i), r.set);
  }
}

type Drift = "missing_on_b" | "missing_on_a" | "newer_on_a" | "sibling_on_b" | "tombstone_on_a";

async function drift(a: Side, b: Side, k: Uint8Array, how: Drift): Promise<void> {
  switch (how) {
    case "missing_on_b":
    case "missing_on_a": {
      // A key written on one side only (the other never got it).
      const on = how === "missing_on_b" ? a : b;
      await on.replica.coordinate(Buffer.concat([k, Buffer.from("+new")]), EMPTY_VECTOR, storedValue("only"));
      return;
    }
    case "newer_on_a": {
      const seen = await a.replica.read(k);
      await a.replica.coordinate(k, contextOf(seen), storedValue("newer"));
      return;
    }
    case "sibling_on_b": {
      await b.replica.coordinate(k, EMPTY_VECTOR, storedValue("concurrent"));
      return;
    }
    case "tombstone_on_a": {
      const seen = await a.replica.read(k);
      await a.replica.coordinate(k, contextOf(seen), storedValue("", true));
      return;
    }
  }
}

function io(a: Side, b: Side, pause: () => Promise<void> = async () => {}): ExchangeIo & { asked: number } {
  const pof = a.trees.partitionOf;
  const out = {
    asked: 0,
    trees: a.trees,
    data: a.replica,
    paging: PAGING,
    askTrees: async (r: Parameters<typeof answerTreeRequest>[1]) => {
      out.asked++;
      return answerTreeRequest(b.trees, r);
    },
    askKeys: async (r: Parameters<typeof answerKeysRequest>[0]) => {
      out.asked++;
      return answerKeysRequest(r, b.replica, pof, PAGING);
    },
    pause,
  };
  return out;
}

async function exchange(
  a: Side,
  b: Side,
  q: number,
  limits: Partial<ExchangeLimits> = {},
  resumeFrom?: number,
  pause?: () => Promise<void>,
): Promise<ExchangeResult> {
  const ex = new Exchange({
    partitions: Array.from({ length: q }, (_, i) => i),
    partitionOf: a.trees.partitionOf,
    limits,
    resumeFrom,
  });
  const result = await driveExchange(ex, io(a, b, pause));
  assert.ok(result.bytes <= (limits.maxBytes ?? DEFAULT_EXCHANGE_LIMITS.maxBytes), "within the byte bound");
  return result;
}

/** Every key whose stored set differs between the two sides. */
async function differingKeys(a: Side, b: Side): Promise<string[]> {
  const sets = async (s: Side) => {
    const m = new Map<string, number>();
    await scanEach(s.replica, PAGING, (e) =>
      m.set(Buffer.from(e.key).toString(), keyStateHash(e.key, decodeSiblings(e.value))),
    );
    return m;
  };
  const [x, y] = [await sets(a), await sets(b)];
  const all = new Set([...x.keys(), ...y.keys()]);
  return [...all].filter((k) => x.get(k) !== y.get(k)).sort();
}

/** Repairs the keys found: each side merges the other's set (the integration's repair). */
async function repair(a: Side, b: Side, result: ExchangeResult): Promise<void> {
  for (const d of result.keys) {
    const [x, y] = [await a.replica.read(d.key), await b.replica.read(d.key)];
    await a.replica.merge(d.key, y);
    await b.replica.merge(d.key, x);
  }
}

describe("exchange", () => {
  test("equal replicas: in sync after one round trip of roots", async () => {
    const a = side(16, "node-a.1");
    const b = side(16, "node-b.1");
    await sameData(a, b, 300);
    const r = await exchange(a, b, 16);
    assert.equal(r.outcome, "in_sync");
    assert.equal(r.roundTrips, 1);
    assert.equal(r.partitions, 16);
    assert.deepEqual(r.keys, []);
    assert.ok(r.bytes < 16 * 8 + 300, `${r.bytes} bytes`);
  });

  test("finds exactly the keys that differ, with both sides' state hashes", async () => {
    const kinds: Drift[] = ["missing_on_b", "missing_on_a", "newer_on_a", "sibling_on_b", "tombstone_on_a"];
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 32 }),
        fc.integer({ min: 0, max: 150 }),
        fc.array(fc.tuple(fc.nat(149), fc.constantFrom(...kinds)), { maxLength: 25 }),
        async (q, n, drifts) => {
          const a = side(q, "node-a.1");
          const b = side(q, "node-b.1");
          await sameData(a, b, n);
          for (const [i, how] of drifts) await drift(a, b, key(i), how);
          const expected = await differingKeys(a, b);
          const r = await exchange(a, b, q);
          assert.deepEqual(names(r.keys), expected);
          assert.equal(r.outcome, expected.length === 0 ? "in_sync" : "differences");
          assert.equal(r.capped, false);
          for (const d of r.keys) {
            assert.equal(d.local, keyStateHash(d.key, await a.replica.read(d.key)));
            assert.equal(d.remote, keyStateHash(d.key, await b.replica.read(d.key)));
          }
          await repair(a, b, r);
          assert.deepEqual(await differingKeys(a, b), []);
          assert.equal((await exchange(a, b, q)).outcome, "in_sync");
        },
      ),
      { ...FC_PARAMS, numRuns: 40 },
    );
  });

  test("dense segments (one partition, several keys per segment): still exactly the differing keys", async () => {
    const a = side(1, "node-a.1");
    const b = side(1, "node-b.1");
    await sameData(a, b, 4000);
    for (const i of [3, 77, 1500, 2222, 3999]) await drift(a, b, key(i), "newer_on_a");
    await drift(a, b, key(10), "missing_on_b");
    const r = await exchange(a, b, 1);
    assert.deepEqual(names(r.keys), await differingKeys(a, b));
    assert.equal(r.keys.length, 6);
    assert.equal(r.unexplainedSegments, 0);
    // The responder answered only the differences, not its ~4 keys per segment compared.
    assert.ok(r.bytes < 8 * 1024, `${r.bytes} bytes`);
  });

  test("a difference that goes away during the pause is dropped; one that appears then is not looked at", async () => {
    const a = side(4, "node-a.1");
    const b = side(4, "node-b.1");
    await sameData(a, b, 100);
    // In flight: a write reached a and not yet b; it lands on b during the pause.
    const w = await a.replica.coordinate(key(5), EMPTY_VECTOR, storedValue("in flight"));
    assert.equal(w.kind, "ok");
    // A key of the same partition and branch as key 5 but another segment: the second look sees its
    // segment too, and must leave it out since the first look did not see it.
    const pof = a.trees.partitionOf;
    let late = Buffer.from("late-0");
    for (let i = 1; ; i++) {
      late = Buffer.from(`late-${i}`);
      const same = pof(late) === pof(key(5)) && segmentOf(late) >> 5 === segmentOf(key(5)) >> 5;
      if (same && segmentOf(late) !== segmentOf(key(5))) break;
    }
    const r = await exchange(a, b, 4, {}, undefined, async () => {
      if (w.kind === "ok") await b.replica.merge(key(5), w.set);
      await a.replica.coordinate(
        late,
        contextOf(await a.replica.read(late)),
        storedValue("written during the pause"),
      );
    });
    assert.equal(r.differingSegments, 1);
    assert.equal(r.confirmedSegments, 0);
    assert.deepEqual(r.keys, []);
    assert.equal(r.outcome, "no_differences");
    // The next exchange sees the late write.
    assert.deepEqual(names((await exchange(a, b, 4)).keys), [late.toString()]);
  });

  test("bounds: segments, keys and bytes per exchange; resumeFrom works through a large drift", async () => {
    const seen = { capped: 0, keysCapped: 0, resumed: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 32 }),
        // At least the keys of one segment on one side (200 keys over 1,024 segments: a few at most), or
        // a segment is oversized and skipped for good (the next test).
        fc.integer({ min: 8, max: 20 }),
        fc.integer({ min: 6000, max: 40000 }),
        fc.uniqueArray(fc.nat(199), { minLength: 1, maxLength: 40 }),
        async (q, maxSegments, maxKeys, maxBytes, drifted) => {
          const a = side(q, "node-a.1");
          const b = side(q, "node-b.1");
          await sameData(a, b, 200);
          for (const i of drifted) await drift(a, b, key(i), i % 2 === 0 ? "newer_on_a" : "sibling_on_b");
          const expected = await differingKeys(a, b);
          const limits = { maxSegments, maxKeys, maxBytes };
          const found = new Set<string>();
          let resume: number | undefined;
          let exchanges = 0;
          for (;;) {
            const r = await exchange(a, b, q, limits, resume);
            exchanges++;
            assert.notEqual(r.outcome, "failed");
            assert.ok(r.comparedSegments <= maxSegments);
            assert.ok(r.keys.length <= maxKeys);
            if (r.capped) seen.capped++;
            if (r.comparedSegments > 0 && r.comparedSegments < Math.min(r.confirmedSegments, maxSegments))
              seen.keysCapped++;
            if (resume !== undefined) seen.resumed++;
            for (const n of names(r.keys)) found.add(n);
            await repair(a, b, r);
            if (r.outcome === "in_sync") break;
            resume = r.resumeFrom ?? resume;
            assert.ok(
              exchanges <= 2 * expected.length + 2,
              `${exchanges} exchanges for ${expected.length} keys`,
            );
          }
          assert.deepEqual([...found].sort(), expected);
          assert.deepEqual(await differingKeys(a, b), []);
        },
      ),
      { ...FC_PARAMS, numRuns: 30 },
    );
    assert.ok(seen.capped > 10 && seen.keysCapped > 0 && seen.resumed > 10, JSON.stringify(seen));
  });

  test("partitions without a tree on either side are skipped and named", async () => {
    const a = side(8, "node-a.1");
    const b = side(8, "node-b.1");
    await sameData(a, b, 100);
    for (let i = 0; i < 100; i++) await drift(a, b, key(i), "newer_on_a");
    b.trees.drop(3);
    a.trees.startRebuild([5]);
    const r = await exchange(a, b, 8);
    assert.deepEqual(r.unavailable, [3, 5]);
    assert.equal(r.partitions, 6);
    const pof = a.trees.partitionOf;
    assert.ok(r.keys.length > 0);
    assert.ok(r.keys.every((d) => pof(d.key) !== 3 && pof(d.key) !== 5));
    assert.equal(
      r.keys.length,
      (await differingKeys(a, b)).filter((n) => ![3, 5].includes(pof(Buffer.from(n)))).length,
    );
  });

  test("a segment with more differing keys than the bounds allow is skipped, reported, and passed over", async () => {
    const a = side(1, "node-a.1");
    const b = side(1, "node-b.1");
    // Three keys of one segment, and one key of a later segment.
    const bySegment = new Map<number, Uint8Array[]>();
    for (let i = 0; bySegment.size === 0 || ![...bySegment.values()].some((v) => v.length >= 3); i++) {
      const k = key(i);
      const s = segmentOf(k);
      bySegment.set(s, [...(bySegment.get(s) ?? []), k]);
    }
    const [seg, crowded] = [...bySegment.entries()].find(([, v]) => v.length >= 3)!;
    for (const k of crowded.slice(0, 3)) await a.replica.coordinate(k, EMPTY_VECTOR, storedValue("x"));
    let other = 0;
    while (segmentOf(key(100_000 + other)) <= seg) other++;
    await a.replica.coordinate(key(100_000 + other), EMPTY_VECTOR, storedValue("y"));
    const r = await exchange(a, b, 1, { maxKeys: 2 });
    assert.deepEqual(r.oversizedSegments, [seg]);
    assert.equal(r.resumeFrom, seg + 1);
    assert.deepEqual(r.keys, []);
    const next = await exchange(a, b, 1, { maxKeys: 2 }, r.resumeFrom);
    assert.deepEqual(names(next.keys), [`user:${100_000 + other}`]);
  });
});

describe("a peer's bad answers", () => {
  test("any corruption of an answer ends the exchange as failed, with a reason, never a crash", async () => {
    const a = side(4, "node-a.1");
    const b = side(4, "node-b.1");
    await sameData(a, b, 60);
    for (const i of [1, 2, 3, 30]) await drift(a, b, key(i), "newer_on_a");
    type Answer = AeHashesAnswer | AeKeyDiffsAnswer;
    const hashes = (f: (x: AeHashesAnswer) => AeHashesAnswer) => (x: Answer) =>
      x.kind === "ae_hashes" ? f(x) : x;
    const diffs =
      (f: (x: AeKeyDiffsAnswer, r: AeKeysRequest) => AeKeyDiffsAnswer) => (x: Answer, r?: AeKeysRequest) =>
        x.kind === "ae_key_diffs" ? f(x, r!) : x;
    const corruptions: [string, (x: Answer, r?: AeKeysRequest) => Answer][] = [
      ["hashes truncated", hashes((x) => ({ ...x, hashes: x.hashes.subarray(0, x.hashes.length - 4) }))],
      ["hashes of an odd length", hashes((x) => ({ ...x, hashes: x.hashes.subarray(1) }))],
      ["a partition unavailable that was not asked", hashes((x) => ({ ...x, unavailable: packU32([999]) }))],
      ["covers more segments than asked", diffs((x) => ({ ...x, covered: 1000 }))],
      ["covers a negative count", diffs((x) => ({ ...x, covered: -1 }))],
      [
        "a key outside the segments",
        diffs((x) => ({ ...x, keys: [Buffer.from("zzz-not-asked"), ...x.keys.slice(1)] })),
      ],
      ["fewer hashes than keys", diffs((x) => ({ ...x, hashes: x.hashes.subarray(4) }))],
      [
        "a key twice",
        diffs((x) => ({
          ...x,
          keys: [x.keys[0]!, ...x.keys],
          hashes: Buffer.concat([x.hashes.subarray(0, 4), x.hashes]),
        })),
      ],
      [
        "a key that does not differ",
        diffs((x, r) => ({ ...x, keys: [r.keys[0]!], hashes: packU32([unpackU32(r.hashes, "h")[0]!]) })),
      ],
      ["an empty key", diffs((x) => ({ ...x, keys: [new Uint8Array(0), ...x.keys.slice(1)] }))],
      ["not a key", diffs((x) => ({ ...x, keys: ["text" as unknown as Uint8Array, ...x.keys.slice(1)] }))],
      [
        "more keys than asked",
        diffs((x, r) => ({
          ...x,
          keys: Array(r.maxKeys + 1).fill(x.keys[0]),
          hashes: Buffer.alloc(4 * (r.maxKeys + 1)),
        })),
      ],
    ];
    for (const [name, corrupt] of corruptions) {
      const base = io(a, b);
      const bad: ExchangeIo = {
        ...base,
        askTrees: async (r) => corrupt(await base.askTrees(r)) as AeHashesAnswer,
        askKeys: async (r) => corrupt(await base.askKeys(r), r) as AeKeyDiffsAnswer,
      };
      const ex = new Exchange({ partitions: [0, 1, 2, 3], partitionOf: a.trees.partitionOf });
      const r = await driveExchange(ex, bad);
      assert.equal(r.outcome, "failed", name);
      assert.ok(r.failure !== undefined && r.failure.length > 0, name);
    }
  });

  test("keys of another partition than the segment's are refused", async () => {
    const a = side(4, "node-a.1");
    const b = side(4, "node-b.1");
    await sameData(a, b, 40);
    await drift(a, b, key(7), "newer_on_a");
    const pof = a.trees.partitionOf;
    const base = io(a, b);
    const bad: ExchangeIo = {
      ...base,
      askKeys: async (r) => {
        const answer = await base.askKeys(r);
        // A key of the same segment number in another partition.
        const target = answer.keys[0]!;
        let i = 0;
        let k: Uint8Array;
        do k = Buffer.from(`other-${i++}`);
        while (segmentOf(k) !== segmentOf(target) || pof(k) === pof(target));
        return { ...answer, keys: [k], hashes: packU32([5]) };
      },
    };
    const r = await driveExchange(new Exchange({ partitions: [0, 1, 2, 3], partitionOf: pof }), bad);
    assert.equal(r.outcome, "failed");
    assert.match(r.failure!, /outside the segments/);
  });
});

describe("exchange as a state machine", () => {
  test("steps in order, and a step answered out of order is a broken invariant", () => {
    const ex = new Exchange({ partitions: [2, 0, 1, 2], partitionOf: () => 0 });
    const step = ex.step;
    assert.equal(step.kind, "compare");
    if (step.kind !== "compare") return;
    assert.deepEqual(
      [...unpackU32(step.request.kind === "ae_roots" ? step.request.partitions : new Uint8Array(), "p")],
      [0, 1, 2],
    );
    assert.throws(() => ex.resumed(), /invariant/);
    assert.throws(() => ex.listed(), /invariant/);
  });

  test("resumeFrom orders the partitions from where the last exchange was cut, wrapping around", () => {
    const ex = new Exchange({
      partitions: [0, 1, 2, 3, 4],
      partitionOf: () => 0,
      resumeFrom: 3 * SEGMENTS + 17,
    });
    const step = ex.step;
    assert.ok(step.kind === "compare" && step.request.kind === "ae_roots");
    assert.deepEqual([...unpackU32(step.request.partitions, "p")], [3, 4, 0, 1, 2]);
  });

  test("no partitions: done at once, in sync", () => {
    const ex = new Exchange({ partitions: [], partitionOf: () => 0 });
    assert.equal(ex.step.kind, "done");
    if (ex.step.kind === "done") assert.equal(ex.step.result.outcome, "in_sync");
  });

  test("the roots message is cut to the tree levels' half of the byte budget and the rest resumed", () => {
    const ex = new Exchange({
      partitions: Array.from({ length: 4096 }, (_, i) => i),
      partitionOf: () => 0,
      limits: { maxBytes: 16384 },
    });
    const step = ex.step;
    assert.ok(step.kind === "compare" && step.request.kind === "ae_roots");
    const n = step.request.partitions.length / 4;
    assert.ok(n > 500 && n < 1024, `${n} roots`);
    const t = new TreeSet(() => 0);
    for (let p = 0; p < 4096; p++) t.adopt(new PartitionTree(p));
    const answer = answerTreeRequest(t, step.request);
    const done = ex.compared(answer, answer);
    assert.ok(done.kind === "done");
    assert.equal(done.result.capped, true);
    assert.equal(done.result.resumeFrom, n * SEGMENTS);
    assert.equal(done.result.outcome, "no_differences");
    assert.ok(done.result.bytes <= 8192);
    assert.ok(done.result.bytes > 5000, `${done.result.bytes} bytes`);
  });
});
