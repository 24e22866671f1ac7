/**
 * Idempotent forwarded writes (src/replication/forward-memo.ts): the memo of coordinate outcomes by
 * request id (a duplicate in flight or after completion gets the same outcome and runs nothing; distinct
 * ids are independent; bounded in entries, bytes and time, oldest evicted first), the ids forwarders
 * make, the wire validation of the id, and NodeCore/Router end to end: a coordinate request delivered
 * twice versions the write once.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { NodeCore } from "../../src/node/node-core.js";
import type { Coordinator, WriteOutcome } from "../../src/replication/coordinator.js";
import {
  FORWARD_MEMO_MAX_AGE_MS,
  FORWARD_MEMO_MAX_BYTES,
  FORWARD_MEMO_MAX_ENTRIES,
  ForwardIds,
  ForwardMemo,
} from "../../src/replication/forward-memo.js";
import type { PeerDirectory } from "../../src/replication/remote-replica.js";
import { Router } from "../../src/replication/router.js";
import { type Clock, seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/index.js";
import {
  decodeFrame,
  encodeFrame,
  MAX_REQUEST_ID_CHARS,
  type MemberView,
  ProtocolError,
  type RequestBody,
} from "../../src/transport/messages.js";
import type { Transport } from "../../src/transport/transport.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0xf0_4a4d;
const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;

class ManualClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
}

/** A promise resolved from outside. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe("ForwardMemo", () => {
  test("the bounds are documented constants: 4096 entries, 2 minutes, 64 MiB", () => {
    assert.equal(FORWARD_MEMO_MAX_ENTRIES, 4096);
    assert.equal(FORWARD_MEMO_MAX_AGE_MS, 120_000);
    assert.equal(FORWARD_MEMO_MAX_BYTES, 64 * 1024 * 1024);
  });

  test("a duplicate while the first is in flight gets the same outcome and runs nothing", async () => {
    const memo = new ForwardMemo<string>({ clock: new ManualClock() });
    const d = deferred<string>();
    let runs = 0;
    const first = memo.run("a:1", "k", () => {
      runs++;
      return d.promise;
    });
    const second = memo.run("a:1", "k", () => {
      runs++;
      return Promise.resolve("second");
    });
    assert.equal(runs, 1);
    assert.equal(second, first, "the very same promise");
    d.resolve("outcome");
    assert.deepEqual(await Promise.all([first, second]), ["outcome", "outcome"]);
    assert.equal(memo.hits, 1);
  });

  test("a duplicate after completion gets the same outcome and runs nothing", async () => {
    const memo = new ForwardMemo<string>({ clock: new ManualClock() });
    let runs = 0;
    const run = () => {
      runs++;
      return Promise.resolve(`outcome ${runs}`);
    };
    assert.equal(await memo.run("a:1", "k", run), "outcome 1");
    await tick();
    assert.equal(await memo.run("a:1", "k", run), "outcome 1");
    assert.equal(await memo.run("a:1", "k", run), "outcome 1");
    assert.equal(runs, 1);
    assert.equal(memo.hits, 2);
  });

  test("a failure is remembered too: the duplicate gets the same error", async () => {
    const memo = new ForwardMemo<string>({ clock: new ManualClock() });
    let runs = 0;
    const run = () => {
      runs++;
      return Promise.reject(new Error(`boom ${runs}`));
    };
    await assert.rejects(memo.run("a:1", "k", run), /boom 1/);
    await assert.rejects(memo.run("a:1", "k", run), /boom 1/);
    assert.equal(runs, 1);
  });

  test("distinct ids are independent", async () => {
    const memo = new ForwardMemo<string>({ clock: new ManualClock() });
    const da = deferred<string>();
    const db = deferred<string>();
    const a = memo.run("a:1", "k", () => da.promise);
    const b = memo.run("a:2", "k", () => db.promise);
    const c = memo.run("b:1", "k", () => Promise.resolve("c"));
    assert.notEqual(a, b);
    db.resolve("b");
    da.reject(new Error("a failed"));
    await assert.rejects(a, /a failed/);
    assert.equal(await b, "b");
    assert.equal(await c, "c");
    assert.equal(memo.size, 3);
    assert.equal(memo.hits, 0);
  });

  test("an id reused for another key is refused, not answered with the other write's outcome", async () => {
    const memo = new ForwardMemo<string>({ clock: new ManualClock() });
    await memo.run("a:1", "key-1", () => Promise.resolve("one"));
    let ran = false;
    await assert.rejects(
      memo.run("a:1", "key-2", () => {
        ran = true;
        return Promise.resolve("two");
      }),
      /reused/,
    );
    assert.equal(ran, false);
  });

  test("bounded in entries: the oldest is evicted first, and then runs again", async () => {
    const memo = new ForwardMemo<number>({ clock: new ManualClock(), maxEntries: 3 });
    let runs = 0;
    const run = () => Promise.resolve(++runs);
    for (const id of ["1", "2", "3", "4"]) await memo.run(id, "k", run);
    assert.equal(memo.size, 3);
    assert.equal(await memo.run("4", "k", run), 4, "the newest is remembered");
    assert.equal(await memo.run("2", "k", run), 2, "so is the second oldest");
    assert.equal(runs, 4);
    assert.equal(await memo.run("1", "k", run), 5, "the oldest was evicted: it runs again");
    assert.equal(memo.size, 3);
  });

  test("the default bound holds 4096 entries and never more", async () => {
    const memo = new ForwardMemo<number>({ clock: new ManualClock() });
    for (let i = 0; i < FORWARD_MEMO_MAX_ENTRIES + 500; i++)
      void memo.run(`id:${i}`, "k", () => Promise.resolve(i));
    assert.equal(memo.size, FORWARD_MEMO_MAX_ENTRIES);
    let ran = false;
    const last = FORWARD_MEMO_MAX_ENTRIES + 499;
    assert.equal(
      await memo.run(`id:${last}`, "k", () => {
        ran = true;
        return Promise.resolve(-1);
      }),
      last,
    );
    assert.equal(ran, false);
  });

  test("bounded in time: an entry older than the age bound is dropped, even with no new request", async () => {
    const clock = new ManualClock();
    const memo = new ForwardMemo<number>({ clock, maxAgeMs: 1000 });
    let runs = 0;
    const run = () => Promise.resolve(++runs);
    await memo.run("old", "k", run);
    clock.t += 600;
    await memo.run("young", "k", run);
    clock.t += 400; // "old" is now exactly 1000 ms old: dropped at the bound
    assert.equal(await memo.run("young", "k", run), 2, "600 ms old: remembered");
    assert.equal(memo.size, 1);
    assert.equal(await memo.run("old", "k", run), 3, "the expired one runs again");
    // Time alone empties it: the next call (any id) drops everything older than the bound.
    clock.t += 5000;
    await memo.run("other", "k", run);
    assert.equal(memo.size, 1);
  });

  test("the default age bound is FORWARD_MEMO_MAX_AGE_MS", async () => {
    const clock = new ManualClock();
    const memo = new ForwardMemo<number>({ clock });
    let runs = 0;
    const run = () => Promise.resolve(++runs);
    await memo.run("x", "k", run);
    clock.t += FORWARD_MEMO_MAX_AGE_MS - 1;
    assert.equal(await memo.run("x", "k", run), 1);
    clock.t += 1;
    assert.equal(await memo.run("x", "k", run), 2);
  });

  test("bounded in bytes of finished outcomes, oldest first; running requests count nothing", async () => {
    const memo = new ForwardMemo<Buffer>({ clock: new ManualClock(), maxBytes: 1000 }, (b) => b.length);
    const held = deferred<Buffer>();
    void memo.run("running", "k", () => held.promise);
    for (let i = 0; i < 4; i++) await memo.run(`done:${i}`, "k", () => Promise.resolve(Buffer.alloc(300)));
    await tick();
    // 4 x 300 > 1000: the oldest entries go ("running", which held nothing, then done:0).
    assert.equal(memo.bytes, 900);
    assert.equal(memo.size, 3);
    let ran = false;
    await memo.run("done:0", "k", () => {
      ran = true;
      return Promise.resolve(Buffer.alloc(1));
    });
    assert.equal(ran, true, "done:0 was evicted");
    held.resolve(Buffer.alloc(500)); // evicted meanwhile: its bytes are not counted
    await tick();
    assert.ok(memo.bytes <= 1000, `${memo.bytes} bytes held`);
  });

  test("under any sequence of calls and time steps, the bounds hold and a remembered id never reruns", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant("call" as const), id: fc.integer({ min: 0, max: 30 }) }),
            fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 400 }) }),
          ),
          { maxLength: 200 },
        ),
        async (steps) => {
          const clock = new ManualClock();
          const memo = new ForwardMemo<number>({ clock, maxEntries: 8, maxAgeMs: 1000 });
          // Model: when each id was last (re)started, in start order.
          const started = new Map<number, number>();
          let runs = 0;
          for (const s of steps) {
            if (s.kind === "wait") {
              clock.t += s.ms;
              continue;
            }
            for (const [id, at] of started) if (at <= clock.t - 1000) started.delete(id);
            const before = runs;
            await memo.run(String(s.id), "k", () => Promise.resolve(++runs));
            const remembered = started.has(s.id);
            assert.equal(runs === before, remembered, `id ${s.id}: ran ${runs - before} times`);
            if (!remembered) {
              started.set(s.id, clock.t);
              while (started.size > 8) started.delete(started.keys().next().value as number);
            }
            assert.ok(memo.size <= 8);
            assert.equal(memo.size, started.size);
          }
        },
      ),
      { ...FC_PARAMS, numRuns: 200 },
    );
  });

  test("refuses bounds that are not positive", () => {
    const clock = new ManualClock();
    assert.throws(() => new ForwardMemo({ clock, maxEntries: 0 }), RangeError);
    assert.throws(() => new ForwardMemo({ clock, maxAgeMs: 0 }), RangeError);
    assert.throws(() => new ForwardMemo({ clock, maxBytes: -1 }), RangeError);
  });
});

describe("ForwardIds", () => {
  test("unique within a node, across nodes, and across restarts of one node", () => {
    const seen = new Set<string>();
    const starts = [
      new ForwardIds("n1", seededRandom(1)),
      new ForwardIds("n1", seededRandom(2)), // n1 restarted: a new random stream
      new ForwardIds("n2", seededRandom(1)), // same stream, other node
    ];
    for (const ids of starts)
      for (let i = 0; i < 1000; i++) {
        const id = ids.next();
        assert.ok(!seen.has(id), `duplicate id ${id}`);
        assert.ok(id.length <= MAX_REQUEST_ID_CHARS);
        seen.add(id);
      }
    assert.match([...seen][0]!, /^n1:[0-9a-f]{16}:1$/);
  });

  test("the id of the longest node id fits the wire limit; a longer node id is refused", () => {
    const ids = new ForwardIds("x".repeat(64), seededRandom(3));
    assert.ok(ids.next().length <= MAX_REQUEST_ID_CHARS);
    assert.throws(() => new ForwardIds("x".repeat(MAX_REQUEST_ID_CHARS), seededRandom(3)), RangeError);
  });
});

const coordinate = (requestId: unknown): Record<string, unknown> => ({
  kind: "coordinate",
  requestId,
  key: Buffer.from("k"),
  context: [],
  value: Buffer.from("v"),
  contentType: "text/plain",
  deleted: false,
  writtenAtMs: 1,
  w: 1,
  timeoutMs: 1000,
});

describe("coordinate request id on the wire", () => {
  const frame = (body: Record<string, unknown>) =>
    encodeFrame({ kind: "req", id: 1, deadlineMs: 1000, body: body as unknown as RequestBody });

  test("round-trips", () => {
    const f = decodeFrame(frame(coordinate("n1:0123456789abcdef:1")));
    assert.ok(
      f.kind === "req" && f.body.kind === "coordinate" && f.body.requestId === "n1:0123456789abcdef:1",
    );
  });

  test("a missing, empty, over-long or non-string id is a protocol error", () => {
    const { requestId: _, ...missing } = coordinate("x");
    for (const body of [
      missing,
      coordinate(""),
      coordinate(null),
      coordinate(42),
      coordinate(Buffer.from("n1:1")),
      coordinate("x".repeat(MAX_REQUEST_ID_CHARS + 1)),
    ])
      assert.throws(() => decodeFrame(frame(body)), ProtocolError, JSON.stringify(body.requestId));
    assert.doesNotThrow(() => decodeFrame(frame(coordinate("x".repeat(MAX_REQUEST_ID_CHARS)))));
  });
});

// ------------------------------------------------------------------ end to end

const noTransport: Transport = {
  address: "b:7000",
  request: () => Promise.reject(new Error("no network in this test")),
  resetBackoff: () => undefined,
  setCluster: () => undefined,
  close: () => Promise.resolve(),
};

/** A one-node cluster "b" (N=1): every key's preference list is [b]. */
function singleNode(sched: VirtualScheduler): NodeCore {
  const self: MemberView = {
    id: "b",
    api: "b:8000",
    peer: "b:7000",
    weight: 1,
    zone: undefined,
    status: "up",
    incarnation: 1,
    heartbeat: 0,
  };
  return new NodeCore({
    nodeId: "b",
    actor: "b.1",
    cluster: { clusterId: "c", clusterSecret: "c2VjcmV0", n: 1, r: 1, w: 1, partitions: 16 },
    transport: noTransport,
    storage: new MemoryEngine(),
    clock: sched,
    timers: sched,
    random: seededRandom(7),
    self,
    bootstrapRing: true,
    gossipIntervalMs: 1000,
    downAfterMs: 10_000,
    requestTimeoutMs: 1000,
    maxSiblings: 64,
  });
}

const KEY = Buffer.from("cart:1");

function coordinateBody(requestId: string, text: string): RequestBody {
  return {
    kind: "coordinate",
    requestId,
    key: KEY,
    context: [...EMPTY_VECTOR],
    value: Buffer.from(text),
    contentType: "text/plain",
    deleted: false,
    writtenAtMs: 1,
    w: 1,
    timeoutMs: 1000,
  };
}

describe("NodeCore: a coordinate request delivered twice is applied once", () => {
  test("duplicate in flight, duplicate after completion, and a distinct id", async () => {
    const sched = new VirtualScheduler({ startMs: 0 });
    const core = singleNode(sched);
    assert.deepEqual(core.preferenceList(KEY), ["b"]);
    const [a1, a2] = await Promise.all([
      core.dispatch("a", coordinateBody("a:1", "one")),
      core.dispatch("a", coordinateBody("a:1", "one")),
    ]);
    const a3 = await core.dispatch("a", coordinateBody("a:1", "one"));
    assert.deepEqual(a2, a1);
    assert.deepEqual(a3, a1);
    assert.equal((await core.replica.read(KEY)).length, 1, "one write, one sibling");
    await core.dispatch("a", coordinateBody("a:2", "two"));
    assert.equal((await core.replica.read(KEY)).length, 2, "another request id is another write");
    assert.equal(core.forwarded.hits, 2);
  });
});

describe("Router: forwarded writes carry an id", () => {
  /** Node "a" forwards to "b" over a network that delivers every request twice. */
  function twoNodes(random: number) {
    const sched = new VirtualScheduler({ startMs: 0 });
    const b = singleNode(sched);
    const sent: RequestBody[] = [];
    const transport: Transport = {
      ...noTransport,
      address: "a:7000",
      request: (async (_addr: string, body: RequestBody) => {
        sent.push(body);
        const [first] = await Promise.all([b.dispatch("a", body), b.dispatch("a", body)]);
        return first;
      }) as Transport["request"],
    };
    const directory: PeerDirectory = {
      addressOf: (id) => `${id}:7000`,
      reachable: () => true,
      contacted: () => undefined,
    };
    const router = new Router({
      coordinator: {} as Coordinator, // never used: "a" is no replica
      selfId: "a",
      transport,
      directory,
      preferenceList: () => ["b"],
      random: seededRandom(random),
      clock: sched,
    });
    return { b, router, sent };
  }

  const write = (router: Router, text: string): Promise<WriteOutcome> =>
    router.write(
      KEY,
      EMPTY_VECTOR,
      { data: Buffer.from(text), contentType: "text/plain", deleted: false, writtenAtMs: 1 },
      1,
      1000,
    );

  test("each write gets a fresh id; duplicates of each apply once", async () => {
    const { b, router, sent } = twoNodes(1);
    assert.equal((await write(router, "one")).kind, "ok");
    assert.equal((await write(router, "two")).kind, "ok");
    const ids = sent.map((s) => (s.kind === "coordinate" ? s.requestId : ""));
    assert.equal(new Set(ids).size, 2);
    assert.ok(ids.every((id) => id.startsWith("a:")));
    assert.equal((await b.replica.read(KEY)).length, 2);
  });

  test("a restarted forwarder (a new random stream) does not reuse its ids", async () => {
    const first = twoNodes(1);
    const second = twoNodes(2);
    await write(first.router, "x");
    await write(second.router, "x");
    const id = (s: RequestBody[]) => (s[0]?.kind === "coordinate" ? s[0].requestId : "");
    assert.notEqual(id(first.sent), id(second.sent));
  });
});
