/**
 * Fuzzing the peer protocol (fast-check, seeded):
 *
 * - `decoderProperty`: random bytes, and frames of every kind mutated (a field replaced by a random
 *   value, removed or added; bytes flipped, cut or inserted), into messages.ts's decoder: it returns a
 *   frame that encodes back to itself, or throws ProtocolError; anything else (another exception, a
 *   frame that does not round-trip) is a finding.
 * - `livePeerProperty`: the same against a live node (a real `ringstore start` process, one-node
 *   cluster): as an insider (TLS with the node's key), a hello then a run of valid and mutated requests
 *   of every kind, which its real handlers answer; as an outsider, plain bytes or another key. After
 *   each run the node must still answer, every answer it sent must be a well-formed `ans` or `err`
 *   (a clear error), a connection that carried an invalid frame must be closed, and the node's memory
 *   must stay bounded.
 *
 * Generated addresses (members' peers, probe targets) are never anything but 127.0.0.1:1 or strings
 * that are not addresses, so the node under test never reaches beyond the loopback; frames that carry
 * addresses are mutated only through their fields, never their bytes.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Packr } from "msgpackr";
import { FrameReader, frameBytes } from "../../src/transport/framing.js";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  type MemberView,
  PROTOCOL_VERSION,
  ProtocolError,
  type RequestBody,
  type RingView,
} from "../../src/transport/messages.js";

/** Plain MessagePack, to build frames the encoder would refuse to type. */
const plain = new Packr({ useRecords: false, mapsAsObjects: true });

// ------------------------------------------------------------------ arbitraries

const SAFE_ADDRESS = fc.constantFrom("127.0.0.1:1", "nowhere", "", "[::1", "127.0.0.1:0");
const id = fc.stringMatching(/^[b-z][a-z0-9._-]{0,10}$/);
const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));
const u32s = (max: number) => fc.array(fc.nat(), { maxLength: max }).map(u32);

function u32(values: readonly number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  for (const [i, v] of values.entries()) b.writeUInt32BE(v >>> 0, 4 * i);
  return b;
}

const member: fc.Arbitrary<MemberView> = fc.record({
  id,
  api: SAFE_ADDRESS,
  peer: SAFE_ADDRESS,
  weight: fc.oneof(fc.double({ min: 0.001, max: 1e6, noNaN: true }), fc.constant(0)),
  zone: fc.option(id, { nil: undefined }),
  // Never `left` from the fuzzer: a holder of the key may remove members (an insider's power, not a bug),
  // which would stop the node under test.
  status: fc.constantFrom("joining", "up", "leaving"),
  incarnation: fc.nat(1000),
  heartbeat: fc.nat(),
});

const ring: fc.Arbitrary<RingView | null> = fc.option(
  // The node under test has 8 partitions: such a ring is taken, others are ignored (or refused, not a
  // power of two).
  fc.constantFrom(8, 8, 8, 4, 5).chain((n) =>
    fc.record({
      version: fc.nat(5),
      partitions: fc.constant(n),
      owners: fc.array(id, { minLength: n, maxLength: n }),
      members: fc.array(id, { maxLength: 4 }),
    }),
  ),
  { nil: null },
);

const context = fc.uniqueArray(
  fc.tuple(fc.stringMatching(/^[a-z0-9.~]{1,20}$/), fc.integer({ min: 1, max: 2 ** 40 })),
  {
    selector: (e) => e[0],
    maxLength: 6,
  },
);

/** Requests of every kind, valid, with data drawn at random. */
export const request: fc.Arbitrary<RequestBody> = fc.oneof(
  fc.constant<RequestBody>({ kind: "ping" }),
  SAFE_ADDRESS.map((target): RequestBody => ({ kind: "probe", target })),
  fc.record({ key: bytes(40), hintFor: fc.option(id, { nil: undefined }) }).map(
    ({ key, hintFor }): RequestBody => ({
      kind: "read",
      key,
      ...(hintFor === undefined ? {} : { hintFor }),
    }),
  ),
  fc
    .record({
      key: bytes(40),
      set: bytes(300),
      handoff: fc.boolean(),
      hintFor: fc.option(id, { nil: undefined }),
    })
    .map(
      ({ key, set, handoff, hintFor }): RequestBody => ({
        kind: "store",
        key,
        set,
        handoff,
        ...(hintFor === undefined ? {} : { hintFor }),
      }),
    ),
  fc
    .record({
      requestId: fc.stringMatching(/^[a-z0-9:]{1,30}$/),
      key: bytes(40),
      context,
      value: bytes(200),
      contentType: fc.string({ maxLength: 30 }),
      deleted: fc.boolean(),
      writtenAtMs: fc.nat(),
      w: fc.integer({ min: 1, max: 3 }),
      timeoutMs: fc.integer({ min: 1, max: 200 }),
    })
    .map((c): RequestBody => ({ kind: "coordinate", ...c })),
  fc
    .record({ members: fc.array(member, { maxLength: 4 }), ring })
    .map(({ members, ring }): RequestBody => ({ kind: "gossip", members, ring })),
  member.map((m): RequestBody => ({ kind: "join", member: m })),
  fc
    .record({ id, how: fc.constantFrom("leave", "remove"), force: fc.boolean() })
    .map((d): RequestBody => ({ kind: "depart", ...d })),
  fc.constant<RequestBody>({ kind: "handoff_progress" }),
  u32s(8).map((partitions): RequestBody => ({ kind: "ae_roots", partitions })),
  u32s(8).map((partitions): RequestBody => ({ kind: "ae_branches", partitions })),
  u32s(8).map((branches): RequestBody => ({ kind: "ae_segments", branches })),
  fc.integer({ min: 0, max: 4 }).chain((k) =>
    fc
      .record({
        segments: u32s(3),
        keys: fc.array(bytes(20), { minLength: k, maxLength: k }),
        hashes: fc.array(fc.nat(), { minLength: 4 * k, maxLength: 4 * k }).map(u32),
        maxKeys: fc.nat(100),
        maxBytes: fc.nat(100_000),
      })
      .map(
        (r): RequestBody => ({
          kind: "ae_keys",
          segments: r.segments,
          counts: u32(Array.from({ length: r.segments.length / 4 }, () => 1)),
          keys: r.keys,
          hashes: r.hashes,
          maxKeys: r.maxKeys,
          maxBytes: r.maxBytes,
        }),
      ),
  ),
);

/** A value MessagePack can carry, of any shape: what a mutation puts in place of a field. */
const anyValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.constantFrom(-1, 2 ** 32, 2 ** 53 + 2, Number.NaN, Number.POSITIVE_INFINITY, -0),
    fc.string({ maxLength: 20 }),
    fc.string({ minLength: 60, maxLength: 300 }),
    bytes(20),
    fc.array(tie("v"), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom("kind", "t", "id", "v", "body", "key", "x"), tie("v"), { maxKeys: 3 }),
  ),
})).v;

type Path = (string | number)[];

/** Every path to a value in a MessagePack-able tree (maps and arrays). */
function paths(v: unknown, at: Path = [], out: Path[] = []): Path[] {
  out.push(at);
  if (Array.isArray(v)) for (const [i, x] of v.entries()) paths(x, [...at, i], out);
  else if (v !== null && typeof v === "object" && !(v instanceof Uint8Array))
    for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}

function clone(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(clone);
  if (v !== null && typeof v === "object")
    return Object.fromEntries(
      Object.entries(v)
        .filter(([, x]) => x !== undefined)
        .map(([k, x]) => [k, clone(x)]),
    );
  return v;
}

/** How a valid frame is damaged. */
type Mutation =
  | { readonly kind: "replace"; readonly at: number; readonly value: unknown }
  | { readonly kind: "remove"; readonly at: number }
  | { readonly kind: "add"; readonly at: number; readonly key: string; readonly value: unknown }
  | { readonly kind: "flip"; readonly at: number; readonly bits: number }
  | { readonly kind: "cut"; readonly at: number }
  | { readonly kind: "insert"; readonly at: number; readonly bytes: Buffer };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), value: anyValue }),
  fc.record({ kind: fc.constant("remove" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("add" as const),
    at: fc.nat(),
    key: fc.string({ maxLength: 8 }),
    value: anyValue,
  }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: bytes(8) }),
);

/** Kinds whose bytes may be mutated freely (they carry no address the node would connect to). */
const BYTE_MUTABLE = new Set([
  "ping",
  "read",
  "store",
  "coordinate",
  "depart",
  "ae_roots",
  "ae_branches",
  "ae_segments",
  "ae_keys",
]);

/** The payload of a frame carrying `body`, damaged by `m` (or whole, without). */
export function mutate(frame: Frame, m: Mutation | undefined): Buffer {
  const body = frame.kind === "req" ? frame.body.kind : "";
  if (m === undefined) return encodeFrame(frame);
  if (m.kind === "flip" || m.kind === "cut" || m.kind === "insert") {
    const b = Buffer.from(encodeFrame(frame));
    if (!BYTE_MUTABLE.has(body) || b.length === 0) return b;
    const at = m.at % b.length;
    if (m.kind === "flip") b[at] = b[at]! ^ m.bits;
    if (m.kind === "cut") return b.subarray(0, at);
    if (m.kind === "insert") return Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
    return b;
  }
  const tree = clone(frame) as Record<string, unknown>;
  const all = paths(tree).filter((p) => p.length > 0);
  const p = all[m.at % all.length]!;
  let parent: unknown = tree;
  for (const k of p.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[k];
  const last = p.at(-1)!;
  const obj = parent as Record<string | number, unknown>;
  // Addresses stay safe: a field named like one is never given a value it could be read as.
  if (m.kind === "replace")
    obj[last] = last === "peer" || last === "target" || last === "api" ? "nowhere" : m.value;
  else if (m.kind === "remove") {
    if (Array.isArray(obj)) obj.splice(Number(last), 1);
    else delete obj[last];
  } else if (!Array.isArray(obj) && typeof m.key === "string" && !["peer", "target", "api"].includes(m.key))
    obj[m.key] = m.value;
  return plain.pack(tree);
}

// ------------------------------------------------------------------ the decoder

export interface FuzzOptions {
  readonly runs: number;
  readonly seed: number;
}

/** Random and mutated frames into decodeFrame: a frame that round-trips, or ProtocolError. */
export function decoderProperty(o: FuzzOptions): { decoded: number; refused: number } {
  let decoded = 0;
  let refused = 0;
  const check = (payload: Uint8Array) => {
    let f: Frame;
    try {
      f = decodeFrame(payload);
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `not a ProtocolError: ${(err as Error)?.stack ?? String(err)}`);
      refused++;
      return;
    }
    decoded++;
    // What was accepted is a frame the encoder writes back to the same frame.
    assert.deepEqual(decodeFrame(encodeFrame(f)), f);
  };
  const frame = fc.oneof(
    request.map((body): Frame => ({ kind: "req", id: 1, deadlineMs: 1000, body })),
    fc.constant<Frame>({ kind: "hello", v: PROTOCOL_VERSION, cluster: "c", node: "n" }),
    fc.constant<Frame>({ kind: "err", id: 3, code: "ERR_X", message: "m" }),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        bytes(200).map((b) => ({ raw: b as Uint8Array })),
        fc
          .record({ frame, m: fc.option(mutation, { nil: undefined }) })
          .map(({ frame, m }) => ({ raw: mutate(frame, m) })),
      ),
      ({ raw }) => check(raw),
    ),
    { numRuns: o.runs, seed: o.seed, includeErrorInReport: true },
  );
  return { decoded, refused };
}

// ------------------------------------------------------------------ a live node

/** What a live run needs of the node under test. */
export interface LiveTarget {
  /** The cluster the node belongs to (an insider's hello names it). */
  readonly clusterId: string;
  /** Opens an authenticated (TLS, the node's key) connection, or an outsider's. */
  connect(how: "insider" | "plain" | "other-key"): Promise<LiveConnection>;
  /** Throws unless the node still serves its peers and API. */
  alive(): Promise<void>;
  /** The node's resident memory, bytes. */
  rss(): number;
}

export interface LiveConnection {
  write(b: Buffer): void;
  /** Everything received so far. */
  received(): Buffer;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  destroy(): void;
}

export interface LiveStats {
  runs: number;
  answers: number;
  errors: Record<string, number>;
  /** The first message seen per error code, and the request kind that got it. */
  samples: Record<string, string>;
  closedOnInvalid: number;
  outsiders: number;
  rssGrowthBytes: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function settleWithin<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs of random and mutated frames against a live node; see the file's opening comment. */
export async function livePeerProperty(target: LiveTarget, o: FuzzOptions): Promise<LiveStats> {
  const stats: LiveStats = {
    runs: 0,
    answers: 0,
    errors: {},
    samples: {},
    closedOnInvalid: 0,
    outsiders: 0,
    rssGrowthBytes: 0,
  };
  const rss0 = target.rss();
  const run = fc.record({
    how: fc.constantFrom("insider", "insider", "insider", "insider", "plain", "other-key"),
    frames: fc.array(fc.record({ body: request, m: fc.option(mutation, { nil: undefined, freq: 3 }) }), {
      minLength: 1,
      maxLength: 6,
    }),
    junk: bytes(64),
  });
  await fc.assert(
    fc.asyncProperty(run, async ({ how, frames, junk }) => {
      stats.runs++;
      const c = await target.connect(how);
      try {
        if (how !== "insider") {
          stats.outsiders++;
          c.write(
            Buffer.concat([
              frameBytes(encodeFrame({ kind: "hello", v: PROTOCOL_VERSION, cluster: "", node: "x" })),
              junk,
            ]),
          );
          const closed = await settleWithin(
            c.closed.then(() => true),
            8000,
          );
          assert.ok(closed, `${how}: the node kept an unauthenticated connection open`);
          assert.equal(new FrameReader().push(c.received()).length, 0, `${how}: a frame came back`);
          return;
        }
        const hello: Frame = { kind: "hello", v: PROTOCOL_VERSION, cluster: target.clusterId, node: "fuzz" };
        const out: Buffer[] = [frameBytes(encodeFrame(hello))];
        let valid = 0;
        let invalid = false;
        for (const [i, f] of frames.entries()) {
          const payload = mutate({ kind: "req", id: i + 1, deadlineMs: 3000, body: f.body }, f.m);
          let ok = true;
          try {
            const d = decodeFrame(payload);
            ok = d.kind === "req";
          } catch {
            ok = false;
          }
          if (payload.length > 64 * 1024 * 1024) continue;
          out.push(frameBytes(payload));
          if (!ok) {
            invalid = true;
            break; // the node closes the connection here; what follows would not be read
          }
          valid++;
        }
        c.write(Buffer.concat(out));
        // Each valid request gets an answer (ans or err) unless the connection closes on an invalid frame
        // (which may come before their answers are written).
        let got: Frame[] = [];
        const until = Date.now() + 8000;
        for (;;) {
          got = new FrameReader().push(c.received()).map((b) => decodeFrame(b));
          const answers = got.filter((f) => f.kind === "ans" || f.kind === "err").length;
          if (c.isClosed() || (!invalid && answers >= valid)) break;
          if (Date.now() > until) assert.fail(`no answer for ${valid - answers} of ${valid} requests in 8 s`);
          await sleep(2);
        }
        // A connection closed for an invalid frame is cut at once: what was answered before may be lost.
        if (!invalid) assert.equal(got[0]?.kind, "welcome", "the hello is welcomed");
        else assert.ok(got.length === 0 || got[0]!.kind === "welcome", "the first frame back is a welcome");
        for (const f of got.slice(1)) {
          assert.ok(f.kind === "ans" || f.kind === "err", `a ${f.kind} frame came back`);
          stats.answers++;
          if (f.kind === "err") {
            assert.ok(f.code.length > 0 && f.message.length > 0, "an error says what");
            stats.errors[f.code] = (stats.errors[f.code] ?? 0) + 1;
            const kind = frames[f.id - 1]?.body.kind ?? "?";
            stats.samples[`${f.code} ${kind}`] ??= f.message.slice(0, 200);
          }
        }
        if (invalid) {
          const closed = await settleWithin(
            c.closed.then(() => true),
            3000,
          );
          assert.ok(closed, "a connection that carried an invalid frame is closed");
          stats.closedOnInvalid++;
        } else assert.ok(!c.isClosed(), "a connection of valid frames stays open");
      } finally {
        c.destroy();
      }
      if (stats.runs % 50 === 0) await target.alive();
    }),
    { numRuns: o.runs, seed: o.seed, includeErrorInReport: true },
  );
  await target.alive();
  stats.rssGrowthBytes = target.rss() - rss0;
  return stats;
}
