/**
 * Fixtures shared by the transport tests (conformance.test.ts, tcp-transport.test.ts): a handler that
 * echoes what distinguishes each request in its answer, sample bodies, and promise helpers.
 */
import assert from "node:assert/strict";
import type {
  AnswerBody,
  AnswerOf,
  MemberView,
  RequestBody,
  RequestOf,
  RingView,
} from "../../src/transport/messages.js";
import { peerKeys } from "../../src/transport/peer-keys.js";
import {
  type PeerHandlers,
  peerHandler,
  TransportError,
  type TransportErrorCode,
} from "../../src/transport/transport.js";

export const CLUSTER = "test-cluster";

/** The cluster key of the transport tests (a fixed one: the tests are about the transport, not the key). */
export const TEST_KEYS = peerKeys(Buffer.alloc(32, 7));
/** Another cluster's key. */
export const OTHER_KEYS = peerKeys(Buffer.alloc(32, 8));

export const member = (id: string): MemberView => ({
  id,
  api: "127.0.0.1:8080",
  peer: "127.0.0.1:7070",
  weight: 1.5,
  zone: "z1",
  status: "up",
  incarnation: 2,
  heartbeat: 17,
});

export const ringView: RingView = {
  version: 3,
  partitions: 4,
  owners: ["a", "b", "a", "b"],
  members: ["a:1", "b:1"],
};

/** Typed handlers whose answers carry the request's distinguishing data back. */
export const ECHO: PeerHandlers = {
  ping: () => ({ kind: "pong" }),
  probe: (_from, body) => ({ kind: "probed", alive: body.target.length % 2 === 0 }),
  read: (_from, body) => ({ kind: "read", set: body.key.length === 0 ? null : Buffer.from(body.key) }),
  store: () => ({ kind: "stored" }),
  coordinate: (_from, body) => ({
    kind: "coordinated",
    outcome: body.deleted
      ? {
          kind: "too_many_siblings",
          siblings: body.context.length,
          max: body.context[0]?.[1] ?? 0,
        }
      : { kind: "ok", written: Buffer.from(body.value), set: Buffer.from(body.key), acked: body.w },
  }),
  gossip: (_from, body) => ({ kind: "gossip", members: body.members, ring: body.ring }),
  join: (_from, body) => ({
    kind: "joined",
    clusterId: CLUSTER,
    secret: "s3cret",
    n: 3,
    r: 2,
    w: 2,
    members: [body.member],
    ring: ringView,
  }),
  depart: (_from, body) => ({
    kind: "departure",
    refused: body.force ? null : `${body.how} of ${body.id} refused`,
    retry: body.how === "remove",
    forceable: !body.force,
    remaining: 2,
  }),
  ae_roots: (_from, body) => ({
    kind: "ae_hashes",
    hashes: Buffer.from(body.partitions),
    unavailable: Buffer.alloc(0),
  }),
  ae_branches: (_from, body) => ({
    kind: "ae_hashes",
    hashes: Buffer.alloc(0),
    unavailable: Buffer.from(body.partitions),
  }),
  ae_segments: (_from, body) => ({
    kind: "ae_hashes",
    hashes: Buffer.from(body.branches),
    unavailable: Buffer.alloc(0),
  }),
  list_keys: (_from, body) => ({
    kind: "key_list",
    keys: body.after === null ? [] : [Buffer.from(body.after), Buffer.from(body.include)],
    last: body.after,
    done: body.after === null,
    scanned: body.maxKeys + body.partitions,
  }),
  count_partitions: (_from, body) => ({
    kind: "partition_counts",
    keys: Buffer.alloc(4 * body.partitions, 1),
    kib: Buffer.alloc(4 * body.partitions, 2),
  }),
  handoff_progress: () => ({
    kind: "handoff_figures",
    ringVersion: 7,
    handedOff: 6,
    sentFor: 6,
    sentFrom: 5,
    state: "running",
    passRingVersion: 7,
    keysScanned: 1200,
    keysSent: 345,
    bytesSent: 2 ** 40 + 3,
    storesFailed: 2,
    keysTotal: 5000,
    throttleBytesPerSecond: 20971.52,
  }),
  ae_keys: (_from, body) => ({
    kind: "ae_key_diffs",
    covered: body.counts.length / 4,
    keys: [...body.keys],
    hashes: Buffer.from(body.hashes),
  }),
  purge_check: (_from, body) => ({
    kind: "purge_verdicts",
    verdicts: Buffer.from(body.keys.map((k) => k.length % 8)),
  }),
  purge: (_from, body) => ({
    kind: "purge_results",
    verdicts: Buffer.from(body.sets.map((s, i) => (s.length + i + body.ringVersion) % 8)),
  }),
};

/** The transport handler of ECHO. */
export const echoHandler = peerHandler(ECHO);

/** The answer ECHO gives to `body` (every ECHO handler answers at once). */
export function echo<R extends RequestBody>(body: R): AnswerOf<R["kind"]> {
  const handle = ECHO[body.kind] as (from: string, body: RequestBody) => AnswerBody;
  return handle("", body) as AnswerOf<R["kind"]>;
}

export const read = (key: string): RequestOf<"read"> => ({ kind: "read", key: Buffer.from(key) });
export const readAnswer = (key: string): AnswerOf<"read"> => ({ kind: "read", set: Buffer.from(key) });

let forwarded = 0;
/** A `coordinate` request (a fresh request id unless given). */
export const coordinate = (
  f: Omit<RequestOf<"coordinate">, "kind" | "requestId">,
  requestId = `fwd-${++forwarded}`,
): RequestOf<"coordinate"> => ({ kind: "coordinate", requestId, ...f });

/** One request of every kind (and of every shape within a kind), with the data each can carry. */
export function everyKind(): RequestBody[] {
  return [
    { kind: "ping" },
    { kind: "probe", target: "10.0.0.1:7070" },
    { kind: "probe", target: "odd" },
    read("some key"),
    { kind: "read", key: Buffer.alloc(0) },
    { kind: "store", key: Buffer.from("k"), set: Buffer.from("three hundred bytes of a set".repeat(10)) },
    { kind: "store", key: Buffer.from("h"), set: Buffer.from("handed off"), handoff: true },
    coordinate({
      key: Buffer.from("k2"),
      context: [
        ["a.0badcafe", 3],
        ["b.12345678", 1],
      ],
      value: Buffer.from("a value".repeat(100)),
      contentType: "application/octet-stream",
      deleted: false,
      writtenAtMs: 1_700_000_000_000,
      w: 2,
      timeoutMs: 1000,
    }),
    coordinate({
      key: Buffer.from("k3"),
      context: [["c.00000001", Number.MAX_SAFE_INTEGER]],
      value: Buffer.alloc(0),
      contentType: "",
      deleted: true,
      writtenAtMs: 0,
      w: 1,
      timeoutMs: 1,
    }),
    {
      kind: "gossip",
      members: [member("a"), { ...member("b"), zone: undefined, status: "leaving" }],
      ring: ringView,
    },
    { kind: "gossip", members: [], ring: null },
    { kind: "join", member: member("c") },
    { kind: "depart", id: "c", how: "leave", force: false },
    { kind: "depart", id: "d", how: "remove", force: true },
    {
      kind: "list_keys",
      partitions: 1024,
      include: Buffer.alloc(128, 0x5a),
      after: Buffer.from("key 1"),
      maxKeys: 1000,
      maxBytes: 1 << 20,
    },
    {
      kind: "list_keys",
      partitions: 4,
      include: Buffer.from([0b1010]),
      after: null,
      maxKeys: 1,
      maxBytes: 1,
    },
    { kind: "count_partitions", partitions: 256 },
    { kind: "handoff_progress" },
    { kind: "ae_roots", partitions: u32(0, 5, 1023) },
    { kind: "ae_branches", partitions: u32(7) },
    { kind: "ae_segments", branches: u32(7 * 32 + 3, 9 * 32) },
    {
      kind: "ae_keys",
      segments: u32(7 * 1024 + 12),
      counts: u32(2),
      keys: [Buffer.from("k1"), Buffer.from("k2")],
      hashes: u32(0xdeadbeef, 1),
      maxKeys: 100,
      maxBytes: 65536,
    },
    {
      kind: "purge_check",
      ringVersion: 12,
      keys: [Buffer.from("k1"), Buffer.from("a key of 15 b.")],
      sets: [Buffer.from("tombstones of k1"), Buffer.from("tombstones")],
    },
    { kind: "purge_check", ringVersion: 0, keys: [], sets: [] },
    {
      kind: "purge",
      ringVersion: 3,
      keys: [Buffer.from("k1"), Buffer.alloc(0), Buffer.from("k3")],
      sets: [Buffer.from("a"), Buffer.from("bb"), Buffer.alloc(0)],
    },
  ];
}

/** u32 values as one big-endian byte string (anti-entropy's lists). */
function u32(...values: number[]): Uint8Array {
  const b = Buffer.alloc(4 * values.length);
  for (const [i, v] of values.entries()) b.writeUInt32BE(v >>> 0, 4 * i);
  return b;
}

// ------------------------------------------------------------------ promises

export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Never rejects: a request promise may be awaited much later without an unhandled rejection. */
export function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** `p`, or a failure if it has not settled within `ms` of real time. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Checks that `s` failed with a TransportError of `code`, and returns the error. */
export function assertCode(s: Settled<unknown>, code: TransportErrorCode): TransportError {
  assert.ok(!s.ok, `expected ${code}, the request succeeded`);
  const e = s.error;
  assert.ok(e instanceof TransportError, `expected a TransportError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

/** Checks that `p` is already settled (failed) before the event loop turns: "fails at once". */
export async function failsAtOnce(p: Promise<unknown>, code: TransportErrorCode): Promise<TransportError> {
  const s = settle(p);
  const first = await Promise.race([s, new Promise<"pending">((r) => setImmediate(() => r("pending")))]);
  assert.notEqual(first, "pending", `expected ${code} at once, the request is still pending`);
  return assertCode(await s, code);
}
