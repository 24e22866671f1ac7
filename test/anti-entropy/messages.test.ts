/**
 * The exchange's messages (src/anti-entropy/messages.ts): `wireBytes` is the exact MessagePack size the
 * peer transport writes (msgpackr with the transport's options), the frame allowances cover a real
 * frame's envelope, u32 lists round-trip; and the responder (src/anti-entropy/responder.ts) refuses
 * malformed requests with ERR_PROTOCOL instead of answering or crashing.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { keyStateHash } from "../../src/anti-entropy/key-state.js";
import {
  type AeAnswer,
  type AeKeysRequest,
  type AeRequest,
  ANSWER_FRAME_BYTES,
  AntiEntropyProtocolError,
  packU32,
  REQUEST_FRAME_BYTES,
  unpackU32,
  wireBytes,
} from "../../src/anti-entropy/messages.js";
import { answerTreeRequest, KeyDiffer } from "../../src/anti-entropy/responder.js";
import { PartitionTree, SEGMENTS, segmentOf } from "../../src/anti-entropy/tree.js";
import { TreeSet } from "../../src/anti-entropy/tree-set.js";
import { compareBytes } from "../../src/storage/bytes.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";
import { encodeSiblings } from "../../src/versioning/object-codec.js";
import { FC_PARAMS, storedValue } from "./support.js";

// The transport's codec (transport/messages.ts).
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

const bytesArb = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
const u32s = (max: number) => fc.array(fc.nat(), { maxLength: max }).map((v) => packU32(v));
const keysArb = fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 40 });
const uint = fc.oneof(fc.nat(300), fc.nat(), fc.integer({ min: 0, max: 2 ** 40 }));

const bodyArb: fc.Arbitrary<AeRequest | AeAnswer> = fc.oneof(
  u32s(5000).map((partitions) => ({ kind: "ae_roots" as const, partitions })),
  u32s(70).map((partitions) => ({ kind: "ae_branches" as const, partitions })),
  u32s(20000).map((branches) => ({ kind: "ae_segments" as const, branches })),
  fc
    .tuple(u32s(40), u32s(40), keysArb, u32s(40), uint, uint)
    .map(([segments, counts, keys, hashes, maxKeys, maxBytes]) => ({
      kind: "ae_keys" as const,
      segments,
      counts,
      keys,
      hashes,
      maxKeys,
      maxBytes,
    })),
  fc
    .tuple(bytesArb(70000), u32s(10))
    .map(([hashes, unavailable]) => ({ kind: "ae_hashes" as const, hashes, unavailable })),
  fc
    .tuple(uint, keysArb, u32s(40))
    .map(([covered, keys, hashes]) => ({ kind: "ae_key_diffs" as const, covered, keys, hashes })),
);

describe("messages", () => {
  test("wireBytes is the size msgpackr writes for every message shape", () => {
    fc.assert(
      fc.property(bodyArb, (body) => {
        assert.equal(wireBytes(body), packr.pack(body).length);
      }),
      { ...FC_PARAMS, numRuns: 300 },
    );
  });

  test("the frame allowances cover a request's and an answer's envelope (largest id and deadline)", () => {
    const body = { kind: "ae_roots" as const, partitions: packU32([1, 2, 3]) };
    const req = packr.pack({ kind: "req", id: 2 ** 32 - 1, deadlineMs: 3_600_000, body }).length + 4;
    const ans = packr.pack({ kind: "ans", id: 2 ** 32 - 1, body }).length + 4;
    assert.equal(req - wireBytes(body), REQUEST_FRAME_BYTES);
    assert.equal(ans - wireBytes(body), ANSWER_FRAME_BYTES);
  });

  test("u32 lists round-trip, big-endian; a length that is not a multiple of 4 is refused", () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 0xffffffff })), (v) => {
        assert.deepEqual([...unpackU32(packU32(v), "x")], v);
      }),
      FC_PARAMS,
    );
    assert.deepEqual([...packU32([0x01020304])], [1, 2, 3, 4]);
    assert.throws(() => unpackU32(new Uint8Array(5), "x"), AntiEntropyProtocolError);
  });
});

describe("responder: malformed requests", () => {
  const trees = new TreeSet(() => 0);
  trees.adopt(new PartitionTree(0));

  test("tree requests: bad lengths and out-of-range ids are refused; unknown partitions are unavailable", () => {
    assert.throws(
      () => answerTreeRequest(trees, { kind: "ae_roots", partitions: new Uint8Array(3) }),
      /ERR_PROTOCOL|anti-entropy/,
    );
    assert.throws(
      () => answerTreeRequest(trees, { kind: "ae_branches", partitions: packU32([1 << 20]) }),
      AntiEntropyProtocolError,
    );
    assert.throws(
      () => answerTreeRequest(trees, { kind: "ae_segments", branches: packU32([32 << 20]) }),
      AntiEntropyProtocolError,
    );
    const a = answerTreeRequest(trees, { kind: "ae_branches", partitions: packU32([0, 7, 7]) });
    assert.deepEqual([...unpackU32(a.unavailable, "u")], [7]);
    assert.equal(a.hashes.length, 3 * 32 * 4);
  });

  /** A well-formed ae_keys request for one partition (partitionOf is 0 for every key). */
  function request(n: number): AeKeysRequest {
    const keys = Array.from({ length: n }, (_, i) => Buffer.from(`k${i}`));
    const bySeg = new Map<number, Buffer[]>();
    for (const k of keys) bySeg.set(segmentOf(k), [...(bySeg.get(segmentOf(k)) ?? []), k]);
    const segs = [...bySeg.keys()];
    const ordered = segs.flatMap((s) => bySeg.get(s)!.sort(compareBytes));
    return {
      kind: "ae_keys",
      segments: packU32(segs),
      counts: packU32(segs.map((s) => bySeg.get(s)!.length)),
      keys: ordered,
      hashes: packU32(
        ordered.map((k) =>
          keyStateHash(k, [
            { dot: { actor: "a", counter: 1 }, context: EMPTY_VECTOR, value: storedValue("v") },
          ]),
        ),
      ),
      maxKeys: 100,
      maxBytes: 10_000,
    };
  }

  test("a well-formed ae_keys request is answered with the differences", () => {
    const r = request(30);
    const d = new KeyDiffer(r, () => 0);
    // This side holds k0 with another version, and not the others.
    const k0 = Buffer.from("k0");
    d.offer(
      k0,
      encodeSiblings([{ dot: { actor: "b", counter: 1 }, context: EMPTY_VECTOR, value: storedValue("w") }]),
    );
    const a = d.answer();
    assert.equal(a.covered, unpackU32(r.segments, "s").length);
    assert.equal(a.keys.length, 30);
    const h = unpackU32(a.hashes, "h");
    const i0 = a.keys.findIndex((k) => compareBytes(k, k0) === 0);
    assert.notEqual(h[i0], 0);
    assert.equal(h.filter((x) => x === 0).length, 29);
  });

  test("ae_keys: every kind of malformed request is refused with ERR_PROTOCOL", () => {
    const good = request(12);
    const segs = unpackU32(good.segments, "s");
    const bad: [string, AeKeysRequest][] = [
      ["segments not u32s", { ...good, segments: good.segments.subarray(1) }],
      ["counts for other segments", { ...good, counts: packU32([...unpackU32(good.counts, "c"), 0]) }],
      [
        "counts adding up to more keys",
        { ...good, counts: packU32(unpackU32(good.counts, "c").map((c) => c + 1)) },
      ],
      [
        "keys no count accounts for",
        {
          ...good,
          keys: [...good.keys, Buffer.from("extra")],
          hashes: Buffer.concat([good.hashes, packU32([1])]),
        },
      ],
      ["fewer hashes than keys", { ...good, hashes: good.hashes.subarray(4) }],
      ["a segment twice", { ...good, segments: packU32([segs[0]!, segs[0]!, ...segs.slice(2)]) }],
      ["a segment out of range", { ...good, segments: packU32([SEGMENTS << 20, ...segs.slice(1)]) }],
      [
        "a key in the wrong segment",
        { ...good, keys: [Buffer.from("not-k0-at-all"), ...good.keys.slice(1)] },
      ],
      ["an empty key", { ...good, keys: [new Uint8Array(0), ...good.keys.slice(1)] }],
      ["a zero hash", { ...good, hashes: Buffer.concat([Buffer.alloc(4), good.hashes.subarray(4)]) }],
      ["a negative maxKeys", { ...good, maxKeys: -1 }],
      ["a fractional maxBytes", { ...good, maxBytes: 1.5 }],
    ];
    for (const [name, r] of bad)
      assert.throws(
        () => new KeyDiffer(r, () => 0),
        (e: unknown) => e instanceof AntiEntropyProtocolError && e.code === "ERR_PROTOCOL",
        name,
      );
    // Keys out of order within a segment.
    const many = request(3000);
    const counts = unpackU32(many.counts, "c");
    const at = counts.findIndex((c) => c >= 2);
    const start = counts.slice(0, at).reduce((s, c) => s + c, 0);
    const keys = [...many.keys];
    [keys[start], keys[start + 1]] = [keys[start + 1]!, keys[start]!];
    assert.throws(() => new KeyDiffer({ ...many, keys }, () => 0), /not ascending/);
  });
});
