/**
 * The transport conformance suite: one set of cases for the contract in src/transport/transport.ts, run
 * over both implementations, as test/storage/conformance.test.ts is over both storage engines:
 *
 * - TcpTransport on 127.0.0.1 (port 0), in real time, with TLS and the cluster key (as nodes run) and in
 *   plaintext (the measurement mode);
 * - the simulated network (src/sim/sim-network.ts) with its codec on (every frame encoded and decoded as
 *   over TCP), on virtual time, with no faults injected.
 *
 * A case passing on the simulated network should mean what it means over TCP; the simulator's histories
 * rest on that. The cases: request and answer for every kind, the answer typed by its request (checked
 * by the compiler, and at run time: an answer of another kind is ERR_PROTOCOL), ERR_TIMEOUT,
 * ERR_UNREACHABLE, ERR_REJECTED (another cluster; a node not yet in a cluster may only join and ping),
 * handler failures (ERR_REMOTE with the handler's message, its ERR_OVERLOADED and ERR_REJECTED kept),
 * ERR_OVERLOADED past the in-flight bound, ERR_CLOSED after close, setCluster closing the connections
 * made before, and for each failure whether the request may have reached the handler (maybeDelivered).
 *
 * What only TCP has (framing, partial frames, garbage, handshake frames, backoff, the handshake HTTP
 * check, coalescing of writes, process handles) is in tcp-transport.test.ts; the simulator's own fault
 * knobs in test/sim/faults.test.ts.
 */
import assert from "node:assert/strict";
import { describe, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import fc from "fast-check";
import { seededRandom } from "../../src/runtime/runtime.js";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { SimNetwork } from "../../src/sim/sim-network.js";
import type { AnswerBody, AnswerOf, RequestBody } from "../../src/transport/messages.js";
import { type PeerSecurity, TcpTransport } from "../../src/transport/tcp-transport.js";
import {
  type PeerHandlers,
  peerHandler,
  type RequestHandler,
  type Transport,
  TransportError,
  type TransportErrorCode,
} from "../../src/transport/transport.js";
import {
  assertCode,
  CLUSTER,
  coordinate,
  type Deferred,
  deferred,
  ECHO,
  echo,
  echoHandler,
  everyKind,
  failsAtOnce,
  member,
  read,
  readAnswer,
  type Settled,
  settle,
  TEST_KEYS,
  within,
} from "./peers.js";

/** Bound on any single case, in real time: a hang fails the case instead of the run. */
const T = { timeout: 10_000 };
const HOST = "127.0.0.1";
/** Delays of the handlers that answer out of order. */
const random = seededRandom(20_250);

// ------------------------------------------------------------------ the two networks

interface NodeOptions {
  readonly nodeId?: string;
  /** The cluster id ("" for a node not yet in one); CLUSTER by default. */
  readonly clusterId?: string;
  /** ECHO's handler by default. */
  readonly handler?: RequestHandler;
}

/** A network of nodes, real or simulated, and the means to let its time pass. */
interface Net {
  /** Attaches a node. */
  node(o?: NodeOptions): Promise<Transport>;
  /** Lets time pass until `p` settles (at most `ms`, else the case fails); never rejects. */
  settle<T>(p: Promise<T>, ms?: number): Promise<Settled<T>>;
  /** Lets time pass until `p` settles, and returns its value (throws its error). */
  run<T>(p: Promise<T>, ms?: number): Promise<T>;
  /** Lets time pass until `cond` holds (at most `ms`, else the case fails). */
  until(cond: () => boolean, what: string, ms?: number): Promise<void>;
  /** Resolves after `ms` of this network's time (for handlers that take time). */
  sleep(ms: number): Promise<void>;
  /** This network's clock (ms). */
  now(): number;
  /** An address where no node listens. */
  nowhere(): Promise<string>;
  /** Closes every node. */
  close(): Promise<void>;
}

interface NetOptions {
  /** Requests in flight per connection (TCP) or per link (simulated), both sides. */
  readonly maxInFlight?: number;
}

const rt = systemRuntime();

async function tcpNet(o: NetOptions, security: PeerSecurity = "tls"): Promise<Net> {
  const secured = { security, ...(security === "tls" ? { keys: TEST_KEYS } : {}) } as const;
  const nodes: TcpTransport[] = [];
  let n = 0;
  const waitFor = async (cond: () => boolean, what: string, ms = 3000) => {
    const until = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
      await sleep(2);
    }
  };
  return {
    async node(x = {}) {
      const t = await TcpTransport.listen({
        host: HOST,
        port: 0,
        nodeId: x.nodeId ?? `n${++n}`,
        clusterId: x.clusterId ?? CLUSTER,
        handler: x.handler ?? echoHandler,
        timers: rt.timers,
        clock: rt.clock,
        limits: o.maxInFlight === undefined ? {} : { maxInFlightPerConnection: o.maxInFlight },
        ...secured,
      });
      nodes.push(t);
      return t;
    },
    settle: (p, ms = 5000) => within(settle(p), ms, "request"),
    run: (p, ms = 5000) => within(p, ms, "request"),
    until: waitFor,
    sleep: (ms) => sleep(ms),
    now: () => performance.now(),
    async nowhere() {
      const s = await TcpTransport.listen({
        host: HOST,
        port: 0,
        nodeId: "gone",
        clusterId: CLUSTER,
        handler: echoHandler,
        timers: rt.timers,
        clock: rt.clock,
        ...secured,
      });
      await s.close();
      return s.address;
    },
    async close() {
      for (const t of nodes.reverse()) await t.close();
    },
  };
}

async function simNet(o: NetOptions): Promise<Net> {
  const sched = new VirtualScheduler();
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: seededRandom(1),
    latency: { minMs: 1, maxMs: 5 },
    limits: o.maxInFlight === undefined ? {} : { maxInFlightPerLink: o.maxInFlight },
    atMostOnceRequests: true,
  });
  const nodes: Transport[] = [];
  let n = 0;
  const run = <T>(p: Promise<T>, ms = 5000): Promise<T> => sched.runUntilSettled(p, ms);
  return {
    async node(x = {}) {
      const i = ++n;
      const t = net.transport({
        address: `sim:${i}`,
        nodeId: x.nodeId ?? `n${i}`,
        clusterId: x.clusterId ?? CLUSTER,
        handler: x.handler ?? echoHandler,
      });
      nodes.push(t);
      return t;
    },
    settle: (p, ms) => run(settle(p), ms),
    run,
    async until(cond, what, ms = 5000) {
      if (!(await sched.runUntil(cond, ms))) throw new Error(`timed out waiting for ${what}`);
    },
    sleep: (ms) => new Promise((resolve) => sched.after(ms, resolve)),
    now: () => sched.now(),
    nowhere: async () => "sim:nowhere",
    async close() {
      for (const t of nodes) await t.close();
      net.checkCounters();
    },
  };
}

const NETWORKS: [string, (o: NetOptions) => Promise<Net>][] = [
  ["TcpTransport on loopback (TLS with the cluster key)", (o) => tcpNet(o, "tls")],
  ["TcpTransport on loopback (plaintext)", (o) => tcpNet(o, "plaintext")],
  ["the simulated network on virtual time", simNet],
];

// ------------------------------------------------------------------ helpers

/** A network for one case, closed when the case ends. */
async function open(t: TestContext, make: (o: NetOptions) => Promise<Net>, o: NetOptions = {}): Promise<Net> {
  const net = await make(o);
  t.after(() => net.close());
  return net;
}

async function failsWith(net: Net, p: Promise<unknown>, code: TransportErrorCode): Promise<TransportError> {
  return assertCode(await net.settle(p), code);
}

/** A handler that holds the reads of keys starting with "held" until released; others are echoed. */
function holding(): { handler: RequestHandler; received: string[]; release(): void } {
  const received: string[] = [];
  let gate: Deferred<void> = deferred();
  return {
    received,
    handler: async (from, body) => {
      if (body.kind === "read") {
        const key = Buffer.from(body.key).toString();
        received.push(key);
        if (key.startsWith("held")) await gate.promise;
      }
      return echoHandler(from, body);
    },
    release() {
      gate.resolve();
      gate = deferred();
    },
  };
}

// ------------------------------------------------------------------ the cases

for (const [name, make] of NETWORKS)
  describe(name, () => {
    describe("request and answer", () => {
      test("every kind round-trips whole; the handler sees the sender's node id", T, async (t) => {
        const net = await open(t, make);
        const seen: [string, RequestBody][] = [];
        const server = await net.node({
          handler: (from, body) => {
            seen.push([from, body]);
            return echoHandler(from, body);
          },
        });
        const client = await net.node({ nodeId: "the-client" });
        const bodies = everyKind();
        for (const body of bodies)
          assert.deepEqual(await net.run(client.request(server.address, body, 2000)), echo(body), body.kind);
        assert.deepEqual(
          seen,
          bodies.map((b) => ["the-client", b]),
        );
      });

      test("the answer is typed by its request; typed handlers answer through peerHandler", T, async (t) => {
        const net = await open(t, make);
        const server = await net.node({ handler: peerHandler(ECHO) });
        const client = await net.node();
        const got = await net.run(client.request(server.address, read("k"), 2000));
        // The compiler knows the answer to a read: a set, and nothing of another answer.
        const set: Uint8Array | null = got.set;
        // @ts-expect-error a read's answer has no outcome
        assert.equal(got.outcome, undefined);
        assert.deepEqual(set, Buffer.from("k"));
        const joined: AnswerOf<"join"> = await net.run(
          client.request(server.address, { kind: "join", member: member("j") }, 2000),
        );
        assert.deepEqual(joined.members, [member("j")]);
        // A handler must answer with its own request's answer.
        const wrong: PeerHandlers = {
          ...ECHO,
          // @ts-expect-error a ping is answered by a pong, not by stored
          ping: () => ({ kind: "stored" }),
        };
        assert.equal(typeof wrong.ping, "function");
      });

      test("two nodes ask each other at once; each gets the other's answer", T, async (t) => {
        const net = await open(t, make);
        const a = await net.node({ nodeId: "a", handler: async () => ({ kind: "probed", alive: true }) });
        const b = await net.node({ nodeId: "b", handler: async () => ({ kind: "probed", alive: false }) });
        const [fromB, fromA] = await net.run(
          Promise.all([
            a.request(b.address, { kind: "probe", target: "x" }, 2000),
            b.request(a.address, { kind: "probe", target: "x" }, 2000),
          ]),
        );
        assert.deepEqual(
          [fromB, fromA],
          [
            { kind: "probed", alive: false },
            { kind: "probed", alive: true },
          ],
        );
      });

      test("500 concurrent requests answered out of order each get their own answer", T, async (t) => {
        const net = await open(t, make);
        const answered: string[] = [];
        const server = await net.node({
          handler: async (from, body) => {
            await net.sleep(Math.floor(random.next() * 20));
            if (body.kind === "read") answered.push(Buffer.from(body.key).toString());
            return echoHandler(from, body);
          },
        });
        const client = await net.node();
        const keys = Array.from({ length: 500 }, (_, i) => `key-${i}`);
        const results = await net.run(
          Promise.all(keys.map((k) => client.request(server.address, read(k), 5000))),
          8000,
        );
        assert.deepEqual(
          results,
          keys.map((k) => readAnswer(k)),
        );
        assert.equal(answered.length, 500);
        assert.notDeepEqual(answered, keys, "the handler should have answered out of order");
      });

      test("property: any batch of requests, answered after random delays, matches request to answer", {
        ...T,
      }, async (t) => {
        const net = await open(t, make);
        const server = await net.node({
          handler: async (from, body) => {
            await net.sleep(Math.floor(random.next() * 4));
            return echoHandler(from, body);
          },
        });
        const client = await net.node();
        const key = fc.uint8Array({ maxLength: 48 });
        const actor = fc.string({ minLength: 1, maxLength: 20 });
        const body: fc.Arbitrary<RequestBody> = fc.oneof(
          fc.constant<RequestBody>({ kind: "ping" }),
          fc.string({ maxLength: 40 }).map((target): RequestBody => ({ kind: "probe", target })),
          key.map((k): RequestBody => ({ kind: "read", key: k })),
          fc
            .record({ key, set: fc.uint8Array({ maxLength: 2000 }) })
            .map((r): RequestBody => ({ kind: "store", ...r })),
          fc
            .record({
              key,
              context: fc.uniqueArray(fc.tuple(actor, fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })), {
                maxLength: 8,
                selector: ([a]) => a,
              }),
              value: fc.uint8Array({ maxLength: 4000 }),
              contentType: fc.string({ maxLength: 30 }),
              deleted: fc.boolean(),
              writtenAtMs: fc.nat(),
              w: fc.integer({ min: 1, max: 64 }),
              timeoutMs: fc.integer({ min: 1, max: 3_600_000 }),
              requestId: fc.string({ minLength: 1, maxLength: 128 }),
            })
            .map(({ requestId, ...r }) => coordinate(r, requestId)),
        );
        await fc.assert(
          fc.asyncProperty(fc.array(body, { minLength: 1, maxLength: 80 }), async (batch) => {
            const answers = await net.run(
              Promise.all(batch.map((b) => client.request(server.address, b, 3000))),
            );
            assert.deepEqual(answers, batch.map(echo));
          }),
          { numRuns: 15 },
        );
      });

      test(
        "an answer of another kind than its request expects is ERR_PROTOCOL, maybe delivered",
        T,
        async (t) => {
          const net = await open(t, make);
          const server = await net.node({
            handler: async (from, body) => {
              if (body.kind === "ping") return { kind: "stored" }; // a misbehaving handler
              if (body.kind === "probe")
                return { kind: "departure", refused: null, retry: false, forceable: false, remaining: 1 };
              return echoHandler(from, body);
            },
          });
          const client = await net.node();
          const e = await failsWith(
            net,
            client.request(server.address, { kind: "ping" }, 2000),
            "ERR_PROTOCOL",
          );
          assert.match(e.message, /stored/);
          assert.equal(e.maybeDelivered, true, "the handler ran");
          assertCode(
            await net.settle(client.request(server.address, { kind: "probe", target: "x" }, 2000)),
            "ERR_PROTOCOL",
          );
          // Only those requests failed: the node answers the next ones.
          assert.deepEqual(
            await net.run(client.request(server.address, read("next"), 2000)),
            readAnswer("next"),
          );
        },
      );

      test("an answer that is no valid message at all is ERR_PROTOCOL, maybe delivered", T, async (t) => {
        const net = await open(t, make);
        const server = await net.node({
          handler: async () => ({ kind: "pong", extra: 1, deeper: { kind: 7 } }) as unknown as AnswerBody,
        });
        const invalid = await net.node({
          handler: async () => ({ kind: "gossip", members: "all" }) as unknown as AnswerBody,
        });
        const client = await net.node();
        // Unknown fields are ignored: a pong is a pong.
        assert.deepEqual(await net.run(client.request(server.address, { kind: "ping" }, 2000)), {
          kind: "pong",
        });
        const e = await failsWith(
          net,
          client.request(invalid.address, { kind: "gossip", members: [], ring: null }, 2000),
          "ERR_PROTOCOL",
        );
        assert.equal(e.maybeDelivered, true);
      });
    });

    describe("failures", () => {
      test("a slow handler gives ERR_TIMEOUT, maybe delivered; the late answer is dropped", T, async (t) => {
        const net = await open(t, make);
        const h = holding();
        let finished = 0;
        const server = await net.node({
          handler: async (from, body) => {
            const answer = await h.handler(from, body);
            finished++;
            return answer;
          },
        });
        const client = await net.node();
        await net.run(client.request(server.address, { kind: "ping" }, 2000)); // connected
        const start = net.now();
        const e = await failsWith(net, client.request(server.address, read("held-slow"), 60), "ERR_TIMEOUT");
        const took = net.now() - start;
        assert.ok(took >= 50 && took < 1500, `timed out after ${took} ms`);
        assert.match(e.message, /read .* timed out after 60 ms/);
        assert.equal(e.maybeDelivered, true);
        // The late answer arrives now; the next requests get their own answers.
        h.release();
        await net.until(() => finished === 2, "the late answer");
        assert.deepEqual(
          await net.run(client.request(server.address, read("after"), 2000)),
          readAnswer("after"),
        );
        assert.deepEqual(await net.run(client.request(server.address, { kind: "ping" }, 2000)), {
          kind: "pong",
        });
      });

      test("slow and fast requests mixed: only the slow ones time out", T, async (t) => {
        const net = await open(t, make);
        const h = holding();
        const server = await net.node({ handler: h.handler });
        const client = await net.node();
        const all = await net.run(
          Promise.all(
            Array.from({ length: 40 }, (_, i) =>
              settle(
                client.request(
                  server.address,
                  read(i % 3 === 0 ? `held${i}` : `fast${i}`),
                  i % 3 === 0 ? 80 : 3000,
                ),
              ),
            ),
          ),
        );
        h.release();
        all.forEach((s, i) => {
          if (i % 3 === 0) assertCode(s, "ERR_TIMEOUT");
          else assert.deepEqual(s, { ok: true, value: readAnswer(`fast${i}`) });
        });
        assert.deepEqual(
          await net.run(client.request(server.address, read("again"), 2000)),
          readAnswer("again"),
        );
      });

      test(
        "a timeout that is not a whole number of ms, or over an hour, works like any other",
        T,
        async (t) => {
          const net = await open(t, make);
          const h = holding();
          const server = await net.node({ handler: h.handler });
          const client = await net.node();
          const bystander = settle(client.request(server.address, read("held"), 3000));
          await net.run(client.request(server.address, { kind: "ping" }, 1500.5));
          await net.run(client.request(server.address, { kind: "ping" }, 2 * 3_600_000));
          h.release();
          assert.deepEqual(await net.run(bystander), { ok: true, value: readAnswer("held") });
        },
      );

      test("no node at the address: ERR_UNREACHABLE, never delivered", T, async (t) => {
        const net = await open(t, make);
        const client = await net.node();
        const e = await failsWith(
          net,
          client.request(await net.nowhere(), { kind: "ping" }, 2000),
          "ERR_UNREACHABLE",
        );
        assert.equal(e.maybeDelivered, false);
        // The same for a node that was there and closed.
        const gone = await net.node();
        await gone.close();
        const e2 = await failsWith(
          net,
          client.request(gone.address, { kind: "ping" }, 2000),
          "ERR_UNREACHABLE",
        );
        assert.equal(e2.maybeDelivered, false);
      });

      test(
        "a node that closes with requests in its handler: ERR_UNREACHABLE, maybe delivered",
        T,
        async (t) => {
          const net = await open(t, make);
          const h = holding();
          const server = await net.node({ handler: h.handler });
          const client = await net.node();
          const inFlight = Array.from({ length: 5 }, (_, i) =>
            settle(client.request(server.address, read(`held${i}`), 3000)),
          );
          await net.until(() => h.received.length === 5, "the handler to receive them");
          await server.close();
          for (const s of await net.run(Promise.all(inFlight)))
            assert.equal(assertCode(s, "ERR_UNREACHABLE").maybeDelivered, true);
        },
      );

      test(
        "a handler's failure: ERR_REMOTE with its message (its ERR_OVERLOADED and ERR_REJECTED kept)",
        T,
        async (t) => {
          const net = await open(t, make);
          const coded = (code: string, message: string) => Object.assign(new Error(message), { code });
          const server = await net.node({
            handler: async (from, body) => {
              if (body.kind !== "probe") return echoHandler(from, body);
              switch (body.target) {
                case "boom":
                  throw new Error("boom happened");
                case "overloaded":
                  throw new TransportError("ERR_OVERLOADED", "queue full");
                case "rejected":
                  throw coded("ERR_REJECTED", "not a member");
                case "timeout":
                  // A remote failure must never pass for a local condition (a timeout, an unreachable peer).
                  throw coded("ERR_TIMEOUT", "the disk timed out");
                case "unreachable":
                  throw coded("ERR_UNREACHABLE", "replica down");
                case "errno":
                  throw coded("EACCES", "permission denied");
                case "undefined":
                  throw undefined;
                default:
                  throw `a plain string: ${body.target}`;
              }
            },
          });
          const client = await net.node();
          const probe = (target: string) => client.request(server.address, { kind: "probe", target }, 2000);
          const cases: [string, TransportErrorCode, string][] = [
            ["boom", "ERR_REMOTE", "boom happened"],
            ["overloaded", "ERR_OVERLOADED", "queue full"],
            ["rejected", "ERR_REJECTED", "not a member"],
            ["timeout", "ERR_REMOTE", "the disk timed out"],
            ["unreachable", "ERR_REMOTE", "replica down"],
            ["errno", "ERR_REMOTE", "permission denied"],
            ["undefined", "ERR_REMOTE", "undefined"],
            ["other", "ERR_REMOTE", "a plain string: other"],
          ];
          for (const [target, code, message] of cases) {
            const e = await failsWith(net, probe(target), code);
            assert.match(e.message, new RegExp(message), target);
            assert.equal(e.maybeDelivered, code === "ERR_REMOTE", `${target}: maybeDelivered`);
            assert.deepEqual(await net.run(client.request(server.address, { kind: "ping" }, 2000)), {
              kind: "pong",
            });
          }
          // Failures interleaved with successes, all at once.
          const mixed = await net.run(
            Promise.all(
              Array.from({ length: 100 }, (_, i) =>
                settle<AnswerBody>(
                  i % 2 === 0 ? probe("boom") : client.request(server.address, read(`k${i}`), 2000),
                ),
              ),
            ),
          );
          mixed.forEach((s, i) => {
            if (i % 2 === 0) assertCode(s, "ERR_REMOTE");
            else assert.deepEqual(s, { ok: true, value: readAnswer(`k${i}`) });
          });
        },
      );

      test(
        "past the in-flight bound: ERR_OVERLOADED at once, never delivered; slots free as answers come",
        T,
        async (t) => {
          const net = await open(t, make, { maxInFlight: 4 });
          const h = holding();
          const server = await net.node({ handler: h.handler });
          const client = await net.node();
          await net.run(client.request(server.address, { kind: "ping" }, 2000)); // connected
          const held = Array.from({ length: 4 }, (_, i) =>
            settle(client.request(server.address, read(`held${i}`), 3000)),
          );
          await net.until(() => h.received.length === 4, "the handler to hold four");
          for (let i = 0; i < 3; i++) {
            const e = await failsAtOnce(
              client.request(server.address, { kind: "ping" }, 2000),
              "ERR_OVERLOADED",
            );
            assert.equal(e.maybeDelivered, false);
          }
          h.release();
          assert.deepEqual(
            await net.run(Promise.all(held)),
            [0, 1, 2, 3].map((i) => ({ ok: true, value: readAnswer(`held${i}`) })),
          );
          const again = Array.from({ length: 4 }, (_, i) =>
            client.request(server.address, { kind: "probe", target: `${i}` }, 2000),
          );
          assert.equal((await net.run(Promise.all(again))).length, 4);
        },
      );
    });

    describe("clusters", () => {
      test("a node of another cluster is refused: ERR_REJECTED, never delivered", T, async (t) => {
        const net = await open(t, make);
        let handled = 0;
        const server = await net.node({
          clusterId: "cluster-a",
          handler: async (from, body) => {
            handled++;
            return echoHandler(from, body);
          },
        });
        const other = await net.node({ clusterId: "cluster-b" });
        const e = await failsWith(net, other.request(server.address, { kind: "ping" }, 2000), "ERR_REJECTED");
        assert.match(e.message, /cluster/);
        assert.equal(e.maybeDelivered, false);
        assert.equal(handled, 0);
        // A member of a cluster does not talk to a node in none either.
        const friend = await net.node({ clusterId: "cluster-a" });
        const loner = await net.node({ clusterId: "" });
        await failsWith(net, friend.request(loner.address, { kind: "ping" }, 2000), "ERR_REJECTED");
        // The server is fine for its own cluster.
        assert.deepEqual(await net.run(friend.request(server.address, { kind: "ping" }, 2000)), {
          kind: "pong",
        });
      });

      test('a node with cluster "" may only send join and ping, until it has a cluster', T, async (t) => {
        const net = await open(t, make);
        const seen: string[] = [];
        const server = await net.node({
          handler: async (from, body) => {
            seen.push(`${from}:${body.kind}`);
            return echoHandler(from, body);
          },
        });
        const newcomer = await net.node({ clusterId: "", nodeId: "newcomer" });
        assert.deepEqual(await net.run(newcomer.request(server.address, { kind: "ping" }, 2000)), {
          kind: "pong",
        });
        const joined = await net.run(
          newcomer.request(server.address, { kind: "join", member: member("newcomer") }, 2000),
        );
        assert.equal(joined.clusterId, CLUSTER);
        const forbidden: RequestBody[] = [
          read("k"),
          { kind: "store", key: Buffer.from("k"), set: Buffer.from("v") },
          { kind: "probe", target: "x" },
          { kind: "gossip", members: [], ring: null },
          { kind: "depart", id: "x", how: "leave", force: false },
        ];
        for (const body of forbidden) {
          const e = await failsWith(net, newcomer.request(server.address, body, 2000), "ERR_REJECTED");
          assert.match(e.message, /join/);
          assert.equal(e.maybeDelivered, false);
        }
        assert.deepEqual(seen, ["newcomer:ping", "newcomer:join"]);
        // Once it knows the cluster, everything is allowed.
        newcomer.setCluster(CLUSTER);
        assert.deepEqual(await net.run(newcomer.request(server.address, read("k"), 2000)), readAnswer("k"));
      });

      test("after a node learns its cluster, a clusterless peer that talked to it before may still only join and ping", {
        ...T,
      }, async (t) => {
        const net = await open(t, make);
        const server = await net.node({ clusterId: "" });
        const stranger = await net.node({ clusterId: "" });
        assert.deepEqual(await net.run(stranger.request(server.address, { kind: "ping" }, 2000)), {
          kind: "pong",
        });
        server.setCluster(CLUSTER);
        const s = await net.settle(stranger.request(server.address, read("secret"), 2000));
        assert.ok(!s.ok, "a clusterless peer read data from a node that is now in a cluster");
      });

      test("two nodes that are both outside any cluster may talk freely", T, async (t) => {
        const net = await open(t, make);
        const a = await net.node({ clusterId: "" });
        const b = await net.node({ clusterId: "" });
        assert.deepEqual(await net.run(a.request(b.address, read("k"), 2000)), readAnswer("k"));
      });

      test(
        "setCluster closes the connections made before: requests in flight fail ERR_CLOSED, maybe delivered",
        T,
        async (t) => {
          const net = await open(t, make);
          const server = await net.node({
            handler: async (from, body) =>
              body.kind === "join" ? new Promise(() => {}) : echoHandler(from, body),
          });
          const client = await net.node({ clusterId: "" });
          await net.run(client.request(server.address, { kind: "ping" }, 2000));
          const inFlight = settle(
            client.request(server.address, { kind: "join", member: member("x") }, 3000),
          );
          await net.run(net.sleep(20));
          client.setCluster(CLUSTER);
          assert.equal(assertCode(await net.run(inFlight), "ERR_CLOSED").maybeDelivered, true);
          // Not a reason to wait: the next request goes at once, under the new cluster id.
          assert.deepEqual(await net.run(client.request(server.address, read("k"), 2000)), readAnswer("k"));
        },
      );
    });

    describe("close()", () => {
      test(
        "requests in flight fail ERR_CLOSED (maybe delivered), later ones ERR_CLOSED; peers find nobody",
        T,
        async (t) => {
          const net = await open(t, make);
          const never: RequestHandler = async (from, body) =>
            body.kind === "read" ? new Promise(() => {}) : echoHandler(from, body);
          const server = await net.node({ handler: never });
          const client = await net.node({ handler: never });
          const third = await net.node();
          await net.run(client.request(server.address, { kind: "ping" }, 2000));
          await net.run(server.request(client.address, { kind: "ping" }, 2000));
          const outgoing = settle(client.request(server.address, read("pending"), 60_000));
          const incoming = settle(server.request(client.address, read("pending"), 60_000));
          await net.run(net.sleep(20));

          await client.close();
          assert.equal(assertCode(await net.run(outgoing, 1000), "ERR_CLOSED").maybeDelivered, true);
          // The peer's request that the closed node was handling fails instead of hanging.
          assert.equal(assertCode(await net.run(incoming, 1000), "ERR_UNREACHABLE").maybeDelivered, true);
          await failsWith(net, client.request(server.address, { kind: "ping" }, 1000), "ERR_CLOSED");
          const e = await failsWith(
            net,
            third.request(client.address, { kind: "ping" }, 1000),
            "ERR_UNREACHABLE",
          );
          assert.equal(e.maybeDelivered, false);
          await client.close(); // twice is fine
        },
      );
    });
  });
