/**
 * The peer messages (src/transport/messages.ts) as bytes: every frame and body decodes to what was
 * encoded; a forwarded write's context and outcome are validated as fields of the frame (the list of
 * [actor, counter] entries, the closed outcome union), and refused otherwise; each request kind has one
 * answer kind; handshake frames stay readable by, and read, the protocols before the `kind` rename. And
 * the replication layer's side of a forwarded write's outcome (replication/router.ts): its sibling sets
 * survive the wire and are decoded with the object codec's validation.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Packr } from "msgpackr";
import type { WriteOutcome } from "../../src/replication/coordinator.js";
import { outcomeFromWire, outcomeToWire } from "../../src/replication/router.js";
import {
  ANSWER_KIND,
  type AnswerBody,
  answers,
  decodeFrame,
  encodeFrame,
  type Frame,
  MAX_ACTOR_CHARS,
  MAX_CONTEXT_ENTRIES,
  MAX_PURGE_KEYS,
  PROTOCOL_VERSION,
  ProtocolError,
  PURGE_VERDICTS,
  type RequestBody,
  type RequestKind,
  wireDeadlineMs,
} from "../../src/transport/messages.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import { encodeSiblings, ObjectDecodeError } from "../../src/versioning/object-codec.js";
import { coordinate, echo, everyKind } from "./peers.js";

const plain = new Packr({ useRecords: false, mapsAsObjects: true });
const roundTrip = (f: Frame): Frame => decodeFrame(encodeFrame(f));
const req = (body: RequestBody): Frame => ({ kind: "req", id: 1, deadlineMs: 1000, body });
const ans = (body: AnswerBody): Frame => ({ kind: "ans", id: 1, body });
/** A request frame whose body is encoded as given, with no validation on the way out. */
const rawReq = (body: unknown): Uint8Array => plain.pack({ kind: "req", id: 1, deadlineMs: 1000, body });
const rawAns = (body: unknown): Uint8Array => plain.pack({ kind: "ans", id: 1, body });

const base = {
  key: Buffer.from("k"),
  value: Buffer.from("v"),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 1,
  w: 2,
  timeoutMs: 1000,
};

describe("frames", () => {
  test("every request kind and its echo answer decode to what was encoded", () => {
    for (const body of everyKind()) {
      assert.deepEqual(roundTrip(req(body)), req(body), body.kind);
      assert.deepEqual(roundTrip(ans(echo(body))), ans(echo(body)), `answer to ${body.kind}`);
    }
    for (const f of [
      { kind: "hello", v: PROTOCOL_VERSION, cluster: "c", node: "n" },
      { kind: "welcome", v: PROTOCOL_VERSION, cluster: "", node: "n" },
      { kind: "reject", reason: "no" },
      { kind: "err", id: 9, code: "ERR_REMOTE", message: "it failed" },
    ] as const)
      assert.deepEqual(roundTrip(f), f);
  });

  test("each request kind has one answer kind; answers() checks it", () => {
    const kinds = [...new Set(everyKind().map((b) => b.kind))].sort();
    assert.deepEqual(Object.keys(ANSWER_KIND).sort(), kinds);
    for (const body of everyKind()) {
      assert.equal(echo(body).kind, ANSWER_KIND[body.kind]);
      assert.ok(answers(body.kind, echo(body)));
    }
    assert.ok(!answers("ping" as RequestKind, { kind: "stored" }));
    assert.ok(!answers("read", { kind: "gossip", members: [], ring: null }));
  });

  test("a request's deadline on the wire: whole milliseconds within the decoder's range", () => {
    assert.deepEqual(
      [0.4, 1, 1500.5, 3_600_000, 7_200_000, -5].map(wireDeadlineMs),
      [1, 1, 1501, 3_600_000, 3_600_000, 0],
    );
  });
});

describe("a forwarded write's context is a validated list of [actor, counter]", () => {
  const withContext = (context: unknown) => rawReq({ ...base, kind: "coordinate", requestId: "r", context });

  test("round-trips, in order", () => {
    const body = coordinate(
      {
        ...base,
        context: [
          ["b.00000002", 7],
          ["a.00000001", Number.MAX_SAFE_INTEGER],
        ],
      },
      "r1",
    );
    assert.deepEqual(roundTrip(req(body)), req(body));
    assert.deepEqual(roundTrip(req({ ...body, context: [] })), req({ ...body, context: [] }));
  });

  test("anything else is a protocol error", () => {
    const long = "x".repeat(MAX_ACTOR_CHARS + 1);
    const many = Array.from({ length: MAX_CONTEXT_ENTRIES + 1 }, (_, i): [string, number] => [`a${i}`, 1]);
    const bad: [string, unknown][] = [
      ["a blob, as protocol 3 sent it", Buffer.from([0x90])],
      ["a map", { a: 1 }],
      ["missing", undefined],
      ["an entry that is not a pair", [["a", 1, 2]]],
      ["an entry that is a map", [{ actor: "a", counter: 1 }]],
      ["a zero counter", [["a", 0]]],
      ["a negative counter", [["a", -1]]],
      ["a fractional counter", [["a", 1.5]]],
      ["an unsafe counter", [["a", 2 ** 53]]],
      ["a string counter", [["a", "1"]]],
      ["an empty actor", [["", 1]]],
      ["an actor too long", [[long, 1]]],
      ["an actor that is bytes", [[Buffer.from("a"), 1]]],
      [
        "an actor twice",
        [
          ["a", 1],
          ["a", 2],
        ],
      ],
      ["too many entries", many],
    ];
    for (const [what, context] of bad)
      assert.throws(() => decodeFrame(withContext(context)), ProtocolError, what);
    assert.doesNotThrow(() => decodeFrame(withContext(many.slice(1))));
    assert.doesNotThrow(() => decodeFrame(withContext([["x".repeat(MAX_ACTOR_CHARS), 1]])));
  });

  test("property: any valid context round-trips; any duplicate actor is refused", () => {
    const entry = fc.tuple(
      fc.string({ minLength: 1, maxLength: MAX_ACTOR_CHARS }),
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    );
    fc.assert(
      fc.property(fc.uniqueArray(entry, { maxLength: 40, selector: ([a]) => a }), (context) => {
        const body = coordinate({ ...base, context }, "r");
        assert.deepEqual(roundTrip(req(body)), req(body));
        if (context.length > 0) {
          const twice = [...context, [context[0]![0], 1]];
          assert.throws(() => decodeFrame(withContext(twice)), ProtocolError);
        }
      }),
      { seed: 13, numRuns: 200 },
    );
  });
});

describe("a forwarded write's outcome is a closed union", () => {
  const coordinated = (outcome: unknown) => rawAns({ kind: "coordinated", outcome });

  test("each variant round-trips", () => {
    for (const outcome of [
      { kind: "ok", written: Buffer.from("w"), set: Buffer.from("s"), acked: 2 },
      { kind: "too_many_siblings", siblings: 65, max: 64 },
      { kind: "unavailable", needed: 2, acked: 0 },
    ] as const)
      assert.deepEqual(
        roundTrip(ans({ kind: "coordinated", outcome })),
        ans({ kind: "coordinated", outcome }),
      );
  });

  test("anything else is a protocol error", () => {
    const bad: [string, unknown][] = [
      ["a blob, as protocol 3 sent it", Buffer.from([0x80])],
      ["an unknown kind", { kind: "maybe", needed: 1, acked: 0 }],
      ["no kind", { needed: 1, acked: 0 }],
      ["ok without its set", { kind: "ok", written: Buffer.from("w"), acked: 1 }],
      [
        "ok whose written is a list",
        { kind: "ok", written: [Buffer.from("w")], set: Buffer.from("s"), acked: 1 },
      ],
      [
        "acked over the largest N",
        { kind: "ok", written: Buffer.from("w"), set: Buffer.from("s"), acked: 65 },
      ],
      ["a negative count", { kind: "unavailable", needed: -1, acked: 0 }],
      ["a fractional count", { kind: "too_many_siblings", siblings: 1.5, max: 64 }],
    ];
    for (const [what, outcome] of bad)
      assert.throws(() => decodeFrame(coordinated(outcome)), ProtocolError, what);
  });

  test("the router's outcome survives the wire; sets that do not decode are refused", () => {
    const v = (text: string) => ({
      data: Buffer.from(text),
      contentType: "t",
      deleted: false,
      writtenAtMs: 5,
    });
    const first = update([], EMPTY_VECTOR, "a.1", v("one"));
    const second = update(first.set, EMPTY_VECTOR, "b.2", v("two"));
    const outcomes: WriteOutcome[] = [
      { kind: "ok", written: second.written, set: second.set, acked: 2 },
      { kind: "too_many_siblings", siblings: 65, max: 64 },
      { kind: "unavailable", needed: 2, acked: 1 },
    ];
    for (const o of outcomes) {
      const f = roundTrip(ans({ kind: "coordinated", outcome: outcomeToWire(o) }));
      assert.ok(f.kind === "ans" && f.body.kind === "coordinated");
      assert.deepEqual(outcomeFromWire(f.body.outcome), o);
    }
    const set = encodeSiblings(second.set);
    const corrupt = Buffer.from(set);
    corrupt[corrupt.length - 1]! ^= 1;
    assert.throws(
      () =>
        outcomeFromWire({ kind: "ok", written: encodeSiblings([second.written]), set: corrupt, acked: 1 }),
      ObjectDecodeError,
    );
    // `written` is one version: a set of two (or none) is refused.
    assert.throws(() => outcomeFromWire({ kind: "ok", written: set, set, acked: 1 }), /2 written versions/);
    assert.throws(
      () => outcomeFromWire({ kind: "ok", written: encodeSiblings([]), set, acked: 1 }),
      /0 written versions/,
    );
  });
});

describe("tombstone purging's requests and verdicts are validated", () => {
  const keys = [Buffer.from("a"), Buffer.from("b")];
  const sets = [Buffer.from("s1"), Buffer.from("s2")];

  test("the verdicts are a closed list, one byte each", () => {
    assert.deepEqual(
      [...PURGE_VERDICTS],
      ["ok", "differs", "young", "hint_pending", "handoff_pending", "ring_differs", "off", "busy"],
    );
    for (const kind of ["purge_verdicts", "purge_results"] as const) {
      const body = { kind, verdicts: Buffer.from([0, PURGE_VERDICTS.length - 1]) };
      assert.deepEqual(roundTrip(ans(body)), ans(body));
      assert.throws(
        () => decodeFrame(rawAns({ kind, verdicts: Buffer.from([PURGE_VERDICTS.length]) })),
        /unknown verdict/,
      );
      assert.throws(() => decodeFrame(rawAns({ kind, verdicts: [0, 1] })), ProtocolError);
      assert.throws(
        () => decodeFrame(rawAns({ kind, verdicts: Buffer.alloc(MAX_PURGE_KEYS + 1) })),
        ProtocolError,
      );
    }
  });

  test("anything else in a request is a protocol error", () => {
    const bad: [string, unknown][] = [
      ["keys and sets of different lengths", { ringVersion: 1, keys, sets: sets.slice(1) }],
      ["a key that is a string", { ringVersion: 1, keys: ["a", "b"], sets }],
      ["a set that is a string", { ringVersion: 1, keys, sets: ["s1", "s2"] }],
      ["no ring version", { keys, sets }],
      ["a negative ring version", { ringVersion: -1, keys, sets }],
      [
        "too many keys",
        {
          ringVersion: 1,
          keys: Array.from({ length: MAX_PURGE_KEYS + 1 }, () => Buffer.from("k")),
          sets: Array.from({ length: MAX_PURGE_KEYS + 1 }, () => Buffer.from("s")),
        },
      ],
    ];
    for (const kind of ["purge_check", "purge"])
      for (const [what, body] of bad)
        assert.throws(() => decodeFrame(rawReq({ kind, ...(body as object) })), ProtocolError, what);
    assert.doesNotThrow(() => decodeFrame(rawReq({ kind: "purge", ringVersion: 0, keys, sets })));
  });
});

describe("handshake frames across the rename of the discriminant (protocols 1-3 used `t`)", () => {
  test("ours carry `t` as well as `kind`; other frames do not", () => {
    const hello = plain.unpack(encodeFrame({ kind: "hello", v: PROTOCOL_VERSION, cluster: "c", node: "n" }));
    assert.equal(hello.t, "hello");
    assert.equal(hello.kind, "hello");
    assert.equal(plain.unpack(encodeFrame({ kind: "reject", reason: "r" })).t, "reject");
    assert.equal(plain.unpack(encodeFrame(req({ kind: "ping" }))).t, undefined);
  });

  test("theirs decode by `t`; a request or answer with only `t` does not", () => {
    assert.deepEqual(decodeFrame(plain.pack({ t: "hello", v: 3, cluster: "c", node: "old" })), {
      kind: "hello",
      v: 3,
      cluster: "c",
      node: "old",
    });
    assert.deepEqual(decodeFrame(plain.pack({ t: "reject", reason: "protocol version 4 is not 3" })), {
      kind: "reject",
      reason: "protocol version 4 is not 3",
    });
    assert.throws(
      () => decodeFrame(plain.pack({ t: "req", id: 1, deadlineMs: 5, body: { op: "ping" } })),
      ProtocolError,
    );
    assert.throws(() => decodeFrame(plain.pack({ t: "res", id: 1, body: { op: "pong" } })), ProtocolError);
    assert.throws(() => decodeFrame(rawReq({ op: "ping" })), ProtocolError);
  });
});

describe("gossip the ring's claim could not use is refused at decode (found by the fuzzer)", () => {
  const gossip = (members: unknown[], ring: unknown) =>
    encodeFrame({ kind: "req", id: 1, deadlineMs: 5, body: { kind: "gossip", members, ring } as never });
  const m = { id: "a", api: "x", peer: "y", weight: 1, status: "up", incarnation: 1, heartbeat: 1 };

  test("a ring whose partition count is not a power of two", () => {
    const ring = { version: 2, partitions: 5, owners: ["a", "a", "a", "a", "a"], members: ["a:1"] };
    assert.throws(() => decodeFrame(gossip([m], ring)), /ring of 5 partitions: a ring has a power of two/);
    assert.equal(
      decodeFrame(gossip([m], { ...ring, partitions: 4, owners: ring.owners.slice(1) })).kind,
      "req",
    );
  });

  test("a member of weight 0; one that names who removed it but is not left", () => {
    assert.throws(() => decodeFrame(gossip([{ ...m, weight: 0 }], null)), /weight is 0/);
    assert.throws(
      () => decodeFrame(gossip([{ ...m, removedBy: "b" }], null)),
      /names who removed it but is up/,
    );
    const left = decodeFrame(gossip([{ ...m, status: "left", removedBy: "b" }], null));
    assert.ok(left.kind === "req" && left.body.kind === "gossip");
    assert.equal(left.body.members[0]?.removedBy, "b");
  });
});

describe("gossip digests and ring deltas are validated (protocol 10)", () => {
  const u32s = (...xs: number[]) => {
    const b = Buffer.alloc(4 * xs.length);
    for (const [i, x] of xs.entries()) b.writeUInt32LE(x, 4 * i);
    return b;
  };
  const digest = { dir: 12345, count: 2, heartbeats: u32s(1, 2), ringVersion: 3, ringHash: 99 };
  const full = { ...digest, ids: ["a", "b"], incarnations: [1, 2], statuses: Buffer.from([1, 3]) };
  const opening = (d: unknown) =>
    encodeFrame({
      kind: "req",
      id: 1,
      deadlineMs: 5,
      body: { kind: "gossip", members: [], ring: null, digest: d } as never,
    });
  const answer = (body: Record<string, unknown>) =>
    encodeFrame({ kind: "ans", id: 1, body: { kind: "gossip", members: [], ring: null, ...body } as never });
  const delta = {
    version: 4,
    partitions: 8,
    members: ["a:1", "b:1"],
    base: { version: 3, hash: 99 },
    moved: u32s(0, 5),
    owners: ["a", "b"],
  };

  test("digests, full digests, wants and deltas survive the wire", () => {
    const f = decodeFrame(opening(digest));
    assert.ok(f.kind === "req" && f.body.kind === "gossip");
    assert.deepEqual(
      { ...f.body.digest, heartbeats: [...f.body.digest!.heartbeats] },
      { ...digest, heartbeats: [...digest.heartbeats] },
    );
    const a = decodeFrame(answer({ digest: full, ringDelta: delta, ringWant: { version: 1, hash: 2 } }));
    assert.ok(a.kind === "ans" && a.body.kind === "gossip");
    assert.deepEqual(a.body.digest?.ids, ["a", "b"]);
    assert.deepEqual(a.body.ringDelta?.owners, ["a", "b"]);
    assert.deepEqual(a.body.ringWant, { version: 1, hash: 2 });
    const closing = decodeFrame(
      encodeFrame(req({ kind: "gossip", members: [], ring: null, want: ["a"], ringDelta: delta })),
    );
    assert.ok(closing.kind === "req" && closing.body.kind === "gossip");
    assert.deepEqual(closing.body.want, ["a"]);
  });

  test("a bad digest or delta is a ProtocolError", () => {
    assert.throws(
      () => decodeFrame(opening({ ...digest, count: 3 })),
      /2 members|8 bytes of heartbeats for 3/,
    );
    assert.throws(() => decodeFrame(opening(full)), /never a full one/);
    assert.throws(() => decodeFrame(answer({ digest: { ...full, ids: ["b", "a"] } })), /strict order/);
    assert.throws(() => decodeFrame(answer({ digest: { ...full, ids: ["a", "a"] } })), /strict order/);
    assert.throws(
      () => decodeFrame(answer({ digest: { ...full, statuses: Buffer.from([1, 4]) } })),
      /status 4/,
    );
    assert.throws(() => decodeFrame(answer({ digest: { ...full, incarnations: [1, -1] } })), /incarnation/);
    assert.throws(() => decodeFrame(answer({ digest: { ...full, incarnations: [1] } })), /do not match/);
    assert.throws(
      () => decodeFrame(answer({ ringDelta: { ...delta, moved: u32s(0, 8) } })),
      /partition 8 of 8/,
    );
    assert.throws(() => decodeFrame(answer({ ringDelta: { ...delta, owners: ["a"] } })), /do not match/);
    assert.throws(
      () => decodeFrame(answer({ ringDelta: { ...delta, moved: Buffer.from([1, 2, 3]) } })),
      /u32/,
    );
    assert.throws(() => decodeFrame(answer({ ringWant: { version: -1, hash: 0 } })), ProtocolError);
  });

  test("a heartbeat travels as a u32", () => {
    const m = { id: "a", api: "x", peer: "y", weight: 1, status: "up", incarnation: 1, heartbeat: 2 ** 32 };
    assert.throws(() => decodeFrame(answer({ members: [m] })), /heartbeat/);
    assert.equal(decodeFrame(answer({ members: [{ ...m, heartbeat: 2 ** 32 - 1 }] })).kind, "ans");
  });
});

describe("handoff_progress (protocol 12): its figures are validated", () => {
  const figures = echo({ kind: "handoff_progress" });

  test("round-trips, with and without a total; the request carries nothing", () => {
    assert.deepEqual(roundTrip(ans(figures)), ans(figures));
    const unknown = { ...figures, keysTotal: null };
    assert.deepEqual(roundTrip(ans(unknown)), ans(unknown));
    // The last pass whose stores all arrived: its rings (null from: a leaving pass), absent when none.
    const leavingPass = { ...figures, sentFrom: null };
    assert.deepEqual(roundTrip(ans(leavingPass)), ans(leavingPass));
    const {
      sentFor: _f,
      sentFrom: _s,
      ...none
    } = figures as typeof figures & {
      sentFor?: number;
      sentFrom?: number | null;
    };
    assert.deepEqual(roundTrip(ans(none)), ans(none));
    assert.deepEqual(roundTrip(req({ kind: "handoff_progress" })), req({ kind: "handoff_progress" }));
    assert.ok(PROTOCOL_VERSION >= 12);
  });

  test("anything else is a protocol error", () => {
    const bad: [string, unknown][] = [
      ["an unknown state", { ...figures, state: "paused" }],
      ["a state that is not a string", { ...figures, state: 1 }],
      ["a negative count", { ...figures, keysSent: -1 }],
      ["a fractional count", { ...figures, keysScanned: 1.5 }],
      ["a count that is a string", { ...figures, bytesSent: "12" }],
      ["no ring version", { ...figures, ringVersion: undefined }],
      ["a throttle of 0", { ...figures, throttleBytesPerSecond: 0 }],
      ["a total that is not a number", { ...figures, keysTotal: "many" }],
      ["a pass's first ring that is not a number", { ...figures, sentFrom: "5" }],
      ["a pass's first ring below 0", { ...figures, sentFrom: -1 }],
      [
        "a pass's ring without the ring it went from",
        (({ sentFrom: _, ...f }) => f)(figures as typeof figures & { sentFrom?: number }),
      ],
    ];
    for (const [what, body] of bad) assert.throws(() => decodeFrame(rawAns(body)), ProtocolError, what);
  });
});
