/**
 * The TCP transport (src/transport/tcp-transport.ts) against its documented promises, with real
 * TcpTransport instances on 127.0.0.1 (port 0) and raw `net` sockets playing misbehaving peers:
 *
 * - request/response for every op, large frames, many concurrent requests answered out of order;
 * - handler errors (ERR_REMOTE, or the handler's ERR_OVERLOADED / ERR_REJECTED) leave the connection usable;
 * - deadlines: ERR_TIMEOUT, the late answer is dropped, the connection keeps working;
 * - handshake: other cluster or protocol version refused; a clusterless node may only join and ping;
 * - garbage (random bytes, oversized length, invalid messages, requests before hello) closes only that
 *   connection; a misbehaving server fails only the requests to it;
 * - unreachable peers: fast ERR_UNREACHABLE, exponential backoff, reconnect, peer restart;
 * - back-pressure on both sides (in-flight count, buffered bytes);
 * - coalescing of the frames of one event-loop turn into one socket write;
 * - close(): requests fail, listeners and sockets go, nothing keeps the process alive (child process,
 *   test/transport/tcp-child.ts, which also shows handler failures that take the process down).
 *
 * Six tests began as bugs found while writing this suite (an over-long error message, a handler that
 * rejects with undefined or throws synchronously, a fractional deadline, a clusterless peer kept after
 * setCluster, bytes queued during the handshake); the transport was fixed and they are regressions now.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { FrameReader, frameBytes } from "../../src/transport/framing.js";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  MAX_FRAME_BYTES,
  type MemberView,
  PROTOCOL_VERSION,
  type RequestBody,
  type ResponseBody,
  type RingView,
} from "../../src/transport/messages.js";
import { TcpTransport, type TcpTransportOptions } from "../../src/transport/tcp-transport.js";
import {
  type RequestHandler,
  TransportError,
  type TransportErrorCode,
} from "../../src/transport/transport.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHILD = "test/transport/tcp-child.ts";
const HOST = "127.0.0.1";
const CLUSTER = "test-cluster";
const rt = systemRuntime();
/** Bound on any single test: a hang fails the test instead of the run. */
const T = { timeout: 8000 };

// ------------------------------------------------------------------ helpers

/** Everything a test opens, closed in reverse order when the test ends (also when it fails). */
class Cleanup {
  private readonly fns: (() => unknown)[] = [];

  add(fn: () => unknown): void {
    this.fns.push(fn);
  }

  /** Runs every step, each bounded (a close that hangs must not hang the run), then reports failures. */
  async run(): Promise<void> {
    const failures: unknown[] = [];
    for (const fn of this.fns.splice(0).reverse()) {
      try {
        await within(Promise.resolve().then(fn), 3000, "cleanup step");
      } catch (err) {
        failures.push(err); // keep closing the rest
      }
    }
    if (failures.length > 0) throw new AggregateError(failures, "cleanup failed");
  }
}

function scope(t: TestContext): Cleanup {
  const c = new Cleanup();
  t.after(() => c.run());
  return c;
}

let nodes = 0;

async function listen(
  c: Cleanup,
  o: Partial<TcpTransportOptions> & { handler?: RequestHandler } = {},
): Promise<TcpTransport> {
  const t = await TcpTransport.listen({
    host: HOST,
    port: 0,
    nodeId: `n${++nodes}`,
    clusterId: CLUSTER,
    handler: async (_from, body) => echo(body),
    timers: rt.timers,
    clock: rt.clock,
    ...o,
  });
  c.add(() => t.close());
  return t;
}

const member = (id: string): MemberView => ({
  id,
  api: `${HOST}:8080`,
  peer: `${HOST}:7070`,
  weight: 1.5,
  zone: "z1",
  status: "up",
  incarnation: 2,
  heartbeat: 17,
});

const ringView: RingView = {
  version: 3,
  partitions: 4,
  owners: ["a", "b", "a", "b"],
  members: ["a:1", "b:1"],
};

/** The answer the echo handler gives: it carries the request's distinguishing data back. */
function echo(body: RequestBody): ResponseBody {
  switch (body.op) {
    case "ping":
      return { op: "pong" };
    case "probe":
      return { op: "probed", alive: body.target.length % 2 === 0 };
    case "read":
      return { op: "read", set: body.key.length === 0 ? null : Buffer.from(body.key) };
    case "store":
      return { op: "stored" };
    case "coordinate":
      return { op: "coordinated", outcome: Buffer.from(body.value) };
    case "gossip":
      return { op: "gossip", members: body.members, ring: body.ring };
    case "join":
      return {
        op: "joined",
        clusterId: CLUSTER,
        secret: "s3cret",
        n: 3,
        r: 2,
        w: 2,
        members: [body.member],
        ring: ringView,
      };
    case "depart":
      return {
        op: "departure",
        refused: body.force ? null : `${body.how} of ${body.id} refused`,
        retry: body.how === "remove",
        forceable: !body.force,
        remaining: 2,
      };
  }
}

const read = (key: string): RequestBody => ({ op: "read", key: Buffer.from(key) });
const readAnswer = (key: string): ResponseBody => ({ op: "read", set: Buffer.from(key) });

/** Fields of a `coordinate` request but its id (present since protocol 2; the cast keeps this file
 * compiling on either side of that change). */
type CoordinateFields = Omit<Extract<RequestBody, { op: "coordinate" }>, "op" | "requestId">;
const coordinate = (
  f: CoordinateFields,
  requestId = `fwd-${randomBytes(4).toString("hex")}-1`,
): RequestBody => ({ op: "coordinate", requestId, ...f }) as RequestBody;

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Never rejects: a request promise may be awaited much later without an unhandled rejection. */
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
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

function assertCode(s: Settled<unknown>, code: TransportErrorCode): TransportError {
  assert.ok(!s.ok, `expected ${code}, the request succeeded`);
  const e = s.error;
  assert.ok(e instanceof TransportError, `expected a TransportError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

/** Awaits `p` (bounded) and checks it failed with `code`. */
async function failsWith(p: Promise<unknown>, code: TransportErrorCode, ms = 3000): Promise<TransportError> {
  return assertCode(await within(settle(p), ms, `request expected to fail with ${code}`), code);
}

/** Checks that `p` is already settled (failed) before the event loop turns: "fails at once". */
async function failsAtOnce(p: Promise<unknown>, code: TransportErrorCode): Promise<TransportError> {
  const s = settle(p);
  const first = await Promise.race([s, new Promise<"pending">((r) => setImmediate(() => r("pending")))]);
  assert.notEqual(first, "pending", `expected ${code} at once, the request is still pending`);
  return assertCode(await s, code);
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A port nothing listens on (it was just bound and released). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, HOST, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const wire = (...frames: Frame[]): Buffer => Buffer.concat(frames.map((f) => frameBytes(encodeFrame(f))));
/** A frame that is valid MessagePack but not a valid message (the decoder must refuse it). */
const wireRaw = (value: unknown): Buffer => frameBytes(encodeFrame(value as Frame));
const hello = (cluster = CLUSTER, v = PROTOCOL_VERSION, node = "raw"): Frame => ({
  t: "hello",
  v,
  cluster,
  node,
});

/** A raw client socket that records the frames it receives (undecodable ones as errors). */
class RawPeer {
  readonly frames: Frame[] = [];
  /** 'data' events that carried at least one whole frame, with how many. */
  readonly chunks: number[] = [];
  readonly closed: Promise<void>;
  private readonly reader = new FrameReader();

  private constructor(readonly socket: net.Socket) {
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      const got = this.reader.push(chunk);
      if (got.length > 0) this.chunks.push(got.length);
      for (const f of got) this.frames.push(decodeFrame(f));
    });
    this.closed = new Promise((r) => socket.once("close", () => r()));
  }

  static async connect(c: Cleanup, port: number): Promise<RawPeer> {
    const s = net.connect({ host: HOST, port, noDelay: true });
    c.add(() => s.destroy());
    await within(
      new Promise<void>((resolve, reject) => {
        s.once("connect", resolve);
        s.once("error", reject);
      }),
      2000,
      "raw connect",
    );
    return new RawPeer(s);
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  async waitFrames(n: number, ms = 2000): Promise<void> {
    await waitFor(() => this.frames.length >= n, ms, `${n} frames`);
  }
}

/** A raw listening socket standing in for a (misbehaving) server; `onFrame` scripts its answers. */
class RawServer {
  readonly sockets = new Set<net.Socket>();
  /** Per 'data' event that carried frames: how many `req` frames it held. */
  readonly reqChunks: number[] = [];
  port = 0;
  private readonly server: net.Server;

  private constructor(onFrame: (send: (b: Buffer) => void, f: Frame, s: net.Socket) => void) {
    this.server = net.createServer((s) => {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => undefined);
      s.on("close", () => this.sockets.delete(s));
      const reader = new FrameReader();
      s.on("data", (chunk: Buffer) => {
        const out: Buffer[] = [];
        let reqs = 0;
        for (const raw of reader.push(chunk)) {
          const f = decodeFrame(raw);
          if (f.t === "req") reqs++;
          onFrame((b) => out.push(b), f, s);
        }
        if (reqs > 0) this.reqChunks.push(reqs);
        if (out.length > 0 && !s.destroyed) s.write(Buffer.concat(out));
      });
    });
  }

  static async start(
    c: Cleanup,
    onFrame: (send: (b: Buffer) => void, f: Frame, s: net.Socket) => void,
    port = 0,
  ): Promise<RawServer> {
    const r = new RawServer(onFrame);
    await new Promise<void>((resolve) => r.server.listen(port, HOST, resolve));
    r.port = (r.server.address() as net.AddressInfo).port;
    c.add(() => r.close());
    return r;
  }

  get address(): string {
    return `${HOST}:${this.port}`;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** The standard server handshake for a RawServer: welcome to any hello. */
function welcomeThen(
  onReq: (send: (b: Buffer) => void, f: Extract<Frame, { t: "req" }>, s: net.Socket) => void,
): (send: (b: Buffer) => void, f: Frame, s: net.Socket) => void {
  return (send, f, s) => {
    if (f.t === "hello") send(wire({ t: "welcome", v: PROTOCOL_VERSION, cluster: CLUSTER, node: "rawsrv" }));
    else if (f.t === "req") onReq(send, f, s);
  };
}

/** Counts socket.write calls on sockets that `match`, while `fn` runs. */
async function countSocketWrites(
  match: (s: net.Socket) => boolean,
  fn: () => Promise<void>,
): Promise<number> {
  const proto = net.Socket.prototype as unknown as { write: (...a: unknown[]) => boolean };
  const own = Object.hasOwn(proto, "write");
  const original = proto.write;
  let writes = 0;
  proto.write = function (this: net.Socket, ...args: unknown[]) {
    if (match(this)) writes++;
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    if (own) proto.write = original;
    else delete (proto as { write?: unknown }).write;
  }
  return writes;
}

function runChild(
  scenario: string,
  ms = 6000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, scenario], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`child ${scenario} did not exit within ${ms} ms; stdout: ${stdout}`));
    }, ms);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// ------------------------------------------------------------------ request / response

describe("request/response", () => {
  test("every op round-trips with its body, and the handler sees the caller's node id", T, async (t) => {
    const c = scope(t);
    const froms: string[] = [];
    const server = await listen(c, {
      handler: async (from, body) => {
        froms.push(from);
        return echo(body);
      },
    });
    const client = await listen(c, { nodeId: "the-client" });
    const bodies: RequestBody[] = [
      { op: "ping" },
      { op: "probe", target: "10.0.0.1:7070" },
      { op: "probe", target: "odd" },
      read("some key"),
      { op: "read", key: Buffer.alloc(0) },
      { op: "store", key: Buffer.from("k"), set: randomBytes(300) },
      coordinate({
        key: Buffer.from("k2"),
        context: Buffer.from([1, 2, 3]),
        value: randomBytes(1000),
        contentType: "application/octet-stream",
        deleted: false,
        writtenAtMs: 1_700_000_000_000,
        w: 2,
        timeoutMs: 1000,
      }),
      {
        op: "gossip",
        members: [member("a"), { ...member("b"), zone: undefined, status: "leaving" }],
        ring: ringView,
      },
      { op: "gossip", members: [], ring: null },
      { op: "join", member: member("c") },
      { op: "depart", id: "c", how: "leave", force: false },
      { op: "depart", id: "d", how: "remove", force: true },
    ];
    for (const body of bodies) {
      const res = await client.request(server.address, body, 2000);
      assert.deepEqual(res, echo(body), `answer to ${body.op}`);
    }
    assert.ok(froms.length === bodies.length && froms.every((f) => f === "the-client"));
    assert.equal(server.counters.protocolErrors, 0);
  });

  test("large bodies (several MiB, many TCP chunks) arrive whole", T, async (t) => {
    const c = scope(t);
    const server = await listen(c);
    const client = await listen(c);
    const value = randomBytes(3 * 1024 * 1024 + 17);
    const res = await client.request(
      server.address,
      coordinate({
        key: Buffer.from("big"),
        context: Buffer.alloc(0),
        value,
        contentType: "x",
        deleted: false,
        writtenAtMs: 1,
        w: 1,
        timeoutMs: 1,
      }),
      5000,
    );
    assert.equal(res.op, "coordinated");
    assert.ok(res.op === "coordinated" && Buffer.from(res.outcome).equals(value));
  });

  test("each direction works on its own connection", T, async (t) => {
    const c = scope(t);
    const a = await listen(c, { nodeId: "a", handler: async () => ({ op: "probed", alive: true }) });
    const b = await listen(c, { nodeId: "b", handler: async () => ({ op: "probed", alive: false }) });
    assert.deepEqual(await a.request(b.address, { op: "probe", target: "x" }, 2000), {
      op: "probed",
      alive: false,
    });
    assert.deepEqual(await b.request(a.address, { op: "probe", target: "x" }, 2000), {
      op: "probed",
      alive: true,
    });
  });

  test("500 concurrent requests answered out of order each get their own answer", T, async (t) => {
    const c = scope(t);
    const answeredOrder: string[] = [];
    const server = await listen(c, {
      handler: async (_from, body) => {
        await sleep(Math.random() * 20);
        if (body.op === "read") answeredOrder.push(Buffer.from(body.key).toString());
        return echo(body);
      },
    });
    const client = await listen(c);
    const keys = Array.from({ length: 500 }, (_, i) => `key-${i}-${randomBytes(4).toString("hex")}`);
    const results = await within(
      Promise.all(keys.map((k) => client.request(server.address, read(k), 5000))),
      6000,
      "500 requests",
    );
    assert.deepEqual(
      results,
      keys.map((k) => readAnswer(k)),
    );
    assert.equal(answeredOrder.length, 500);
    assert.notDeepEqual(answeredOrder, keys, "the handler should have answered out of order");
  });

  test(
    "property: any batch of requests, answered after random delays, matches request to answer",
    T,
    async (t) => {
      const c = scope(t);
      const server = await listen(c, {
        handler: async (_from, body) => {
          await sleep(Math.random() * 4);
          return echo(body);
        },
      });
      const client = await listen(c);
      const key = fc.uint8Array({ maxLength: 48 });
      const body: fc.Arbitrary<RequestBody> = fc.oneof(
        fc.constant<RequestBody>({ op: "ping" }),
        fc.string({ maxLength: 40 }).map((target): RequestBody => ({ op: "probe", target })),
        key.map((k): RequestBody => ({ op: "read", key: k })),
        fc
          .record({ key, set: fc.uint8Array({ maxLength: 2000 }) })
          .map((r): RequestBody => ({ op: "store", ...r })),
        fc
          .record({
            key,
            context: key,
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
          const answers = await Promise.all(batch.map((b) => client.request(server.address, b, 3000)));
          assert.deepEqual(answers, batch.map(echo));
        }),
        { numRuns: 15 },
      );
      assert.equal(server.counters.protocolErrors, 0);
    },
  );
});

// ------------------------------------------------------------------ handler errors

describe("handler errors", () => {
  test(
    "come back as ERR_REMOTE, or the handler's ERR_OVERLOADED / ERR_REJECTED; the connection stays",
    T,
    async (t) => {
      const c = scope(t);
      const coded = (code: string, message: string) => Object.assign(new Error(message), { code });
      const server = await listen(c, {
        handler: async (_from, body) => {
          if (body.op !== "probe") return echo(body);
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
            default:
              throw `a plain string: ${body.target}`;
          }
        },
      });
      const client = await listen(c);
      const probe = (target: string) => client.request(server.address, { op: "probe", target }, 2000);
      const cases: [string, TransportErrorCode, string][] = [
        ["boom", "ERR_REMOTE", "boom happened"],
        ["overloaded", "ERR_OVERLOADED", "queue full"],
        ["rejected", "ERR_REJECTED", "not a member"],
        ["timeout", "ERR_REMOTE", "the disk timed out"],
        ["unreachable", "ERR_REMOTE", "replica down"],
        ["errno", "ERR_REMOTE", "permission denied"],
        ["other", "ERR_REMOTE", "a plain string: other"],
      ];
      for (const [target, code, message] of cases) {
        const e = await failsWith(probe(target), code);
        assert.match(e.message, new RegExp(message), target);
        assert.deepEqual(await client.request(server.address, { op: "ping" }, 2000), { op: "pong" });
      }
      // Failures interleaved with successes on one connection, all at once.
      const mixed = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          settle(i % 2 === 0 ? probe("boom") : client.request(server.address, read(`k${i}`), 2000)),
        ),
      );
      mixed.forEach((s, i) => {
        if (i % 2 === 0) assertCode(s, "ERR_REMOTE");
        else assert.deepEqual(s, { ok: true, value: readAnswer(`k${i}`) });
      });
      assert.equal(server.counters.protocolErrors, 0);
    },
  );

  test("an error whose message or code is longer than an err frame allows fails only that request", {
    ...T,
  }, async (t) => {
    const c = scope(t);
    const slow = deferred<void>();
    const server = await listen(c, {
      handler: async (_from, body) => {
        if (body.op === "probe" && body.target === "long") throw new Error(`x${"y".repeat(5000)}`);
        if (body.op === "probe" && body.target === "code")
          throw Object.assign(new Error("e"), { code: "E".repeat(100) });
        if (body.op === "read") await slow.promise;
        return echo(body);
      },
    });
    const client = await listen(c);
    const inFlight = settle(client.request(server.address, read("bystander"), 3000));
    await failsWith(client.request(server.address, { op: "probe", target: "long" }, 2000), "ERR_REMOTE");
    await failsWith(client.request(server.address, { op: "probe", target: "code" }, 2000), "ERR_REMOTE");
    slow.resolve();
    assert.deepEqual(await inFlight, { ok: true, value: readAnswer("bystander") });
    assert.deepEqual(await client.request(server.address, { op: "ping" }, 2000), { op: "pong" });
  });

  test("a handler rejecting with undefined gets ERR_REMOTE and does not crash the process", {
    ...T,
  }, async () => {
    const r = await runChild("handler-rejects-undefined");
    assert.equal(r.code, 0, `child exited ${r.code}: ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), { first: "ERR_REMOTE", second: "resolved" });
  });

  test("a handler throwing before it returns a promise gets ERR_REMOTE and does not crash the process", {
    ...T,
  }, async () => {
    const r = await runChild("handler-throws-sync");
    assert.equal(r.code, 0, `child exited ${r.code}: ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), { first: "ERR_REMOTE", second: "resolved" });
  });
});

// ------------------------------------------------------------------ deadlines

describe("deadlines", () => {
  test(
    "a slow handler gives ERR_TIMEOUT; its late answer is dropped; the connection keeps working",
    T,
    async (t) => {
      const c = scope(t);
      const gates = new Map<string, Deferred<void>>();
      let finished = 0;
      const server = await listen(c, {
        handler: async (_from, body) => {
          if (body.op === "read") {
            const gate = gates.get(Buffer.from(body.key).toString());
            if (gate !== undefined) await gate.promise;
            finished++;
          }
          return echo(body);
        },
      });
      const client = await listen(c);
      await client.request(server.address, { op: "ping" }, 2000); // connected
      gates.set("slow", deferred());
      const start = performance.now();
      const e = await failsWith(client.request(server.address, read("slow"), 60), "ERR_TIMEOUT");
      const took = performance.now() - start;
      assert.ok(took >= 50 && took < 1500, `timed out after ${took} ms`);
      assert.match(e.message, /read .* timed out after 60 ms/);

      // The late answer arrives now; the next requests on the same connection get their own answers.
      gates.get("slow")!.resolve();
      await waitFor(() => finished === 1, 2000, "the late answer");
      assert.deepEqual(await client.request(server.address, read("after"), 2000), readAnswer("after"));
      assert.deepEqual(await client.request(server.address, { op: "ping" }, 2000), { op: "pong" });
      assert.equal(server.counters.protocolErrors, 0);
    },
  );

  test("slow and fast requests mixed: only the slow ones time out", T, async (t) => {
    const c = scope(t);
    const release = deferred<void>();
    const server = await listen(c, {
      handler: async (_from, body) => {
        if (body.op === "read" && Buffer.from(body.key).toString().startsWith("slow")) await release.promise;
        return echo(body);
      },
    });
    const client = await listen(c);
    const all = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const key = i % 3 === 0 ? `slow${i}` : `fast${i}`;
        return settle(client.request(server.address, read(key), i % 3 === 0 ? 80 : 3000));
      }),
    );
    release.resolve();
    all.forEach((s, i) => {
      if (i % 3 === 0) assertCode(s, "ERR_TIMEOUT");
      else assert.deepEqual(s, { ok: true, value: readAnswer(`fast${i}`) });
    });
    assert.deepEqual(await client.request(server.address, read("again"), 2000), readAnswer("again"));
  });

  test("a timeout that is not a whole number of ms (or over an hour) does not break the connection", {
    ...T,
  }, async (t) => {
    const c = scope(t);
    const slow = deferred<void>();
    const server = await listen(c, {
      handler: async (_from, body) => {
        if (body.op === "read") await slow.promise;
        return echo(body);
      },
    });
    const client = await listen(c);
    const bystander = settle(client.request(server.address, read("bystander"), 3000));
    await client.request(server.address, { op: "ping" }, 1500.5);
    await client.request(server.address, { op: "ping" }, 2 * 3_600_000);
    slow.resolve();
    assert.deepEqual(await bystander, { ok: true, value: readAnswer("bystander") });
    assert.equal(server.counters.protocolErrors, 0);
  });
});

// ------------------------------------------------------------------ handshake

describe("handshake", () => {
  test("a transport of another cluster is refused with ERR_REJECTED", T, async (t) => {
    const c = scope(t);
    let handled = 0;
    const server = await listen(c, {
      clusterId: "cluster-a",
      handler: async (_f, b) => {
        handled++;
        return echo(b);
      },
    });
    const other = await listen(c, { clusterId: "cluster-b" });
    const e = await failsWith(other.request(server.address, { op: "ping" }, 2000), "ERR_REJECTED");
    assert.match(e.message, /cluster/);
    assert.equal(server.counters.rejectedHandshakes, 1);
    assert.equal(server.counters.protocolErrors, 0);
    assert.equal(handled, 0);
    // The server is fine for its own cluster.
    const friend = await listen(c, { clusterId: "cluster-a" });
    assert.deepEqual(await friend.request(server.address, { op: "ping" }, 2000), { op: "pong" });
  });

  test("a hello with another protocol version gets a reject frame and the connection ends", T, async (t) => {
    const c = scope(t);
    const server = await listen(c);
    for (const v of [PROTOCOL_VERSION + 1, 0]) {
      const raw = await RawPeer.connect(c, Number(server.address.split(":")[1]));
      raw.write(wire(hello(CLUSTER, v)));
      await within(raw.closed, 2000, "server ends the connection");
      assert.equal(raw.frames.length, 1);
      const f = raw.frames[0]!;
      assert.equal(f.t, "reject");
      assert.ok(f.t === "reject" && f.reason.includes(String(v)), f.t === "reject" ? f.reason : "");
    }
    assert.equal(server.counters.rejectedHandshakes, 2);
  });

  test("a raw hello of another cluster gets a reject frame; the right cluster gets welcome", T, async (t) => {
    const c = scope(t);
    const server = await listen(c, { nodeId: "srv" });
    const port = Number(server.address.split(":")[1]);
    const bad = await RawPeer.connect(c, port);
    bad.write(wire(hello("some-other-cluster")));
    await within(bad.closed, 2000, "server ends the connection");
    assert.equal(bad.frames[0]?.t, "reject");
    const good = await RawPeer.connect(c, port);
    good.write(wire(hello(), { t: "req", id: 7, deadlineMs: 1000, body: read("k") }));
    await good.waitFrames(2);
    assert.deepEqual(good.frames[0], { t: "welcome", v: PROTOCOL_VERSION, cluster: CLUSTER, node: "srv" });
    assert.deepEqual(good.frames[1], { t: "res", id: 7, body: readAnswer("k") });
  });

  test('a node with cluster "" may only send join and ping, until it has a cluster', T, async (t) => {
    const c = scope(t);
    const seen: string[] = [];
    const server = await listen(c, {
      handler: async (from, body) => {
        seen.push(`${from}:${body.op}`);
        return echo(body);
      },
    });
    const newcomer = await listen(c, { clusterId: "", nodeId: "newcomer" });
    assert.deepEqual(await newcomer.request(server.address, { op: "ping" }, 2000), { op: "pong" });
    const joined = await newcomer.request(server.address, { op: "join", member: member("newcomer") }, 2000);
    assert.equal(joined.op, "joined");
    const forbidden: RequestBody[] = [
      read("k"),
      { op: "store", key: Buffer.from("k"), set: Buffer.from("v") },
      { op: "probe", target: "x" },
      { op: "gossip", members: [], ring: null },
    ];
    for (const body of forbidden) {
      const e = await failsWith(newcomer.request(server.address, body, 2000), "ERR_REJECTED");
      assert.match(e.message, /join/);
    }
    assert.deepEqual(seen, ["newcomer:ping", "newcomer:join"]);
    assert.deepEqual(await newcomer.request(server.address, { op: "ping" }, 2000), { op: "pong" });

    // Once it knows the cluster, a new connection carries it and everything is allowed.
    newcomer.setCluster(CLUSTER);
    assert.deepEqual(await newcomer.request(server.address, read("k"), 2000), readAnswer("k"));
    assert.equal(server.counters.protocolErrors, 0);
  });

  test("two nodes that are both outside any cluster may talk freely", T, async (t) => {
    const c = scope(t);
    const a = await listen(c, { clusterId: "" });
    const b = await listen(c, { clusterId: "" });
    assert.deepEqual(await a.request(b.address, read("k"), 2000), readAnswer("k"));
  });

  test("setCluster closes the outgoing connections: requests in flight fail ERR_CLOSED", T, async (t) => {
    const c = scope(t);
    const server = await listen(c, {
      handler: async (_f, b) => (b.op === "join" ? new Promise(() => {}) : echo(b)),
    });
    const client = await listen(c, { clusterId: "" });
    await client.request(server.address, { op: "ping" }, 2000);
    const inFlight = settle(client.request(server.address, { op: "join", member: member("x") }, 3000));
    await sleep(10);
    client.setCluster(CLUSTER);
    assertCode(await within(inFlight, 1000, "request in flight"), "ERR_CLOSED");
    // Not a reason for backoff: the next request reconnects at once, with the new cluster id.
    assert.deepEqual(await client.request(server.address, read("k"), 2000), readAnswer("k"));
  });

  test("after the server learns its cluster, a clusterless peer connected before may still only join and ping", {
    ...T,
  }, async (t) => {
    const c = scope(t);
    const server = await listen(c, { clusterId: "" });
    const stranger = await listen(c, { clusterId: "" });
    assert.deepEqual(await stranger.request(server.address, { op: "ping" }, 2000), { op: "pong" });
    server.setCluster(CLUSTER);
    const s = await within(settle(stranger.request(server.address, read("secret"), 2000)), 3000, "read");
    assert.ok(!s.ok, "a clusterless peer read data from a node that is now in a cluster");
  });
});

// ------------------------------------------------------------------ garbage

describe("garbage on the peer port closes that connection and nothing else", () => {
  const c = new Cleanup();
  let server: TcpTransport;
  let good: TcpTransport;
  let port = 0;
  const gate = { current: deferred<void>() };

  before(async () => {
    server = await listen(c, {
      handler: async (_f, body) => {
        if (body.op === "read" && Buffer.from(body.key).toString() === "held") await gate.current.promise;
        return echo(body);
      },
    });
    good = await listen(c);
    port = Number(server.address.split(":")[1]);
    await good.request(server.address, { op: "ping" }, 2000);
  });
  after(() => c.run());

  /** Sends `bytes` on a fresh raw connection; checks it alone is closed and the good peer is unharmed. */
  async function garbage(t: TestContext, bytes: Buffer, chunked = false): Promise<void> {
    const tc = scope(t);
    gate.current = deferred();
    const held = settle(good.request(server.address, read("held"), 3000));
    const before = server.counters.protocolErrors;
    const raw = await RawPeer.connect(tc, port);
    if (chunked) for (const b of bytes) raw.write(Buffer.from([b]));
    else raw.write(bytes);
    await within(raw.closed, 2000, "the server closes the garbage connection");
    assert.equal(server.counters.protocolErrors, before + 1, server.lastProtocolError);
    // The other peer's connection survived: its request in flight completes, new ones succeed.
    gate.current.resolve();
    assert.deepEqual(await within(held, 2000, "held request"), { ok: true, value: readAnswer("held") });
    assert.deepEqual(await good.request(server.address, read("after"), 2000), readAnswer("after"));
  }

  test("random bytes", T, (t) =>
    garbage(t, Buffer.concat([Buffer.from([0xff, 0x13, 0x37, 0x00]), randomBytes(200)])),
  );

  test("an oversized length prefix is refused before its body arrives", T, async (t) => {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    await garbage(t, Buffer.concat([prefix, Buffer.from("only a few bytes of the announced 96 MiB")]));
    assert.match(server.lastProtocolError, /over the cap/);
  });

  test("an oversized length prefix after a good handshake", T, (t) =>
    garbage(t, Buffer.concat([wire(hello()), Buffer.from([0xff, 0xff, 0xff, 0xff])])),
  );

  test("a request before hello", T, async (t) => {
    await garbage(t, wire({ t: "req", id: 1, deadlineMs: 1000, body: { op: "ping" } }));
    assert.match(server.lastProtocolError, /expected hello/);
  });

  test("a valid hello split into single bytes, then garbage", T, (t) =>
    garbage(t, Buffer.concat([wire(hello()), frameBytes(randomBytes(50))]), true),
  );

  /** A hello, then a request frame whose body is encoded as given (no validation on the way out). */
  const requestAfterHello = (body: unknown) =>
    Buffer.concat([wire(hello()), wireRaw({ t: "req", id: 1, deadlineMs: 5, body })]);
  const invalid: [string, Buffer][] = [
    ["a frame that is not MessagePack", frameBytes(Buffer.from([0xc1, 0xc1, 0xc1]))],
    ["an empty frame", frameBytes(Buffer.alloc(0))],
    ["a MessagePack array", wireRaw([1, 2, 3])],
    ["an unknown frame type", wireRaw({ t: "teleport" })],
    ["a hello with a string version", wireRaw({ t: "hello", v: "1", cluster: CLUSTER, node: "x" })],
    [
      "a hello with an overlong node id",
      wireRaw({ t: "hello", v: 1, cluster: CLUSTER, node: "n".repeat(65) }),
    ],
    ["a welcome instead of hello", wire({ t: "welcome", v: 1, cluster: CLUSTER, node: "x" })],
    ["an unknown op after hello", requestAfterHello({ op: "drop-table" })],
    [
      "a negative request id",
      Buffer.concat([wire(hello()), wireRaw({ t: "req", id: -1, deadlineMs: 5, body: { op: "ping" } })]),
    ],
    [
      "a read key over 64 KiB",
      Buffer.concat([
        wire(hello()),
        wire({ t: "req", id: 1, deadlineMs: 5, body: { op: "read", key: Buffer.alloc(70_000) } }),
      ]),
    ],
    [
      "a member with an unknown status",
      requestAfterHello({ op: "join", member: { ...member("m"), status: "zombie" } }),
    ],
    [
      "a departure of an unknown kind",
      requestAfterHello({ op: "depart", id: "m", how: "vanish", force: false }),
    ],
    [
      "a response sent to the server",
      Buffer.concat([wire(hello()), wire({ t: "res", id: 1, body: { op: "pong" } })]),
    ],
    ["a second hello", Buffer.concat([wire(hello()), wire(hello())])],
  ];
  for (const [name, bytes] of invalid)
    test(`a valid frame of an invalid message: ${name}`, T, (t) => garbage(t, bytes));

  test("property: any framed bytes, before or after hello, close only that connection", T, async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.uint8Array({ maxLength: 300 }), async (afterHello, payload) => {
        const tc = new Cleanup();
        try {
          const before = server.counters.protocolErrors;
          const raw = await RawPeer.connect(tc, port);
          raw.write(
            Buffer.concat([afterHello ? wire(hello()) : Buffer.alloc(0), frameBytes(Buffer.from(payload))]),
          );
          await within(raw.closed, 2000, "the server closes the garbage connection");
          assert.equal(server.counters.protocolErrors, before + 1);
        } finally {
          await tc.run();
        }
      }),
      { numRuns: 60 },
    );
    assert.deepEqual(await good.request(server.address, read("still"), 2000), readAnswer("still"));
  });

  test("a partial frame is not garbage: the connection stays open until the rest arrives", T, async (t) => {
    const tc = scope(t);
    const raw = await RawPeer.connect(tc, port);
    const bytes = wire(hello(), { t: "req", id: 3, deadlineMs: 1000, body: read("slowly") });
    raw.write(bytes.subarray(0, bytes.length - 3));
    await raw.waitFrames(1);
    await sleep(30);
    assert.equal(raw.frames.length, 1); // the welcome only
    raw.write(bytes.subarray(bytes.length - 3));
    await raw.waitFrames(2);
    assert.deepEqual(raw.frames[1], { t: "res", id: 3, body: readAnswer("slowly") });
  });
});

// ------------------------------------------------------------------ a misbehaving server

/**
 * `n` bytes of garbage whose first four announce a frame over the cap, so that it is refused at once.
 * Random bytes alone announce a length within the cap about one time in 40; the client then waits for
 * the rest of that frame until its connect timeout, and fails with ERR_UNREACHABLE, not ERR_PROTOCOL.
 */
function garbageBytes(n: number): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(n - 4)]);
}

describe("a misbehaving server fails only the requests to it", () => {
  test("garbage instead of welcome: ERR_PROTOCOL, then backoff", T, async (t) => {
    const c = scope(t);
    const raw = await RawServer.start(c, (send) => send(garbageBytes(40)));
    const client = await listen(c, { limits: { backoffMinMs: 5000 } });
    await failsWith(client.request(raw.address, { op: "ping" }, 2000), "ERR_PROTOCOL");
    await failsAtOnce(client.request(raw.address, { op: "ping" }, 2000), "ERR_UNREACHABLE");
  });

  test("reject instead of welcome: ERR_REJECTED", T, async (t) => {
    const c = scope(t);
    const raw = await RawServer.start(c, (send) => send(wire({ t: "reject", reason: "go away" })));
    const client = await listen(c);
    const e = await failsWith(client.request(raw.address, { op: "ping" }, 2000), "ERR_REJECTED");
    assert.match(e.message, /go away/);
  });

  test("a welcome with another protocol version or cluster is refused", T, async (t) => {
    const c = scope(t);
    const v2 = await RawServer.start(c, (send) =>
      send(wire({ t: "welcome", v: PROTOCOL_VERSION + 1, cluster: CLUSTER, node: "s" })),
    );
    const other = await RawServer.start(c, (send) =>
      send(wire({ t: "welcome", v: PROTOCOL_VERSION, cluster: "elsewhere", node: "s" })),
    );
    const client = await listen(c);
    await failsWith(client.request(v2.address, { op: "ping" }, 2000), "ERR_PROTOCOL");
    await failsWith(client.request(other.address, { op: "ping" }, 2000), "ERR_REJECTED");
  });

  test(
    "answers for unknown ids are ignored; a bad answer fails the connection, not the transport",
    T,
    async (t) => {
      const c = scope(t);
      let mode: "ok" | "bad" = "ok";
      const raw = await RawServer.start(
        c,
        welcomeThen((send, f) => {
          if (mode === "bad") {
            send(wire({ t: "req", id: 1, deadlineMs: 5, body: { op: "ping" } }));
            return;
          }
          send(wire({ t: "res", id: f.id + 1000, body: { op: "stored" } }));
          send(wire({ t: "err", id: f.id + 2000, code: "ERR_REMOTE", message: "stray" }));
          send(wire({ t: "res", id: f.id, body: echo(f.body) }));
        }),
      );
      const server = await listen(c);
      const client = await listen(c, { limits: { backoffMinMs: 10 } });
      assert.deepEqual(await client.request(raw.address, read("a"), 2000), readAnswer("a"));
      assert.deepEqual(await client.request(raw.address, read("b"), 2000), readAnswer("b"));
      mode = "bad";
      const pending = Array.from({ length: 5 }, (_, i) => client.request(raw.address, read(`p${i}`), 2000));
      for (const p of pending) await failsWith(p, "ERR_PROTOCOL");
      // Other peers are unaffected.
      assert.deepEqual(
        await client.request(server.address, read("elsewhere"), 2000),
        readAnswer("elsewhere"),
      );
    },
  );

  test("a peer that accepts but never says welcome: ERR_UNREACHABLE after connectTimeoutMs", T, async (t) => {
    const c = scope(t);
    const raw = await RawServer.start(c, () => undefined);
    const client = await listen(c, { limits: { connectTimeoutMs: 150 } });
    const start = performance.now();
    const e = await failsWith(client.request(raw.address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
    const took = performance.now() - start;
    assert.ok(took >= 140 && took < 2000, `failed after ${took} ms`);
    assert.match(e.message, /timed out/);
  });
});

// ------------------------------------------------------------------ unreachable peers

describe("unreachable peers, backoff and reconnect", () => {
  test(
    "a connection on which nothing arrived for a whole timeout is replaced; one that spoke meanwhile is kept",
    T,
    async (t) => {
      // A peer behind a partition (or a paused process) keeps the socket open but sends nothing. Keeping
      // that connection would leave later requests behind TCP's retransmission backoff after the network
      // heals (found by the real-fault suite: a cluster stayed split for tens of seconds after a heal).
      const c = scope(t);
      let silent = true;
      const connections: net.Socket[] = [];
      const raw = await RawServer.start(
        c,
        welcomeThen((send, f, s) => {
          if (!connections.includes(s)) connections.push(s);
          if (f.body.op === "ping" && !silent) send(wire({ t: "res", id: f.id, body: { op: "pong" } }));
          if (f.body.op === "read" && Buffer.from(f.body.key).toString() === "chatty")
            send(wire({ t: "res", id: f.id, body: readAnswer("chatty") }));
        }),
      );
      const client = await listen(c);
      // Silent peer: the request times out and the connection goes (no reconnect backoff for this).
      await failsWith(client.request(raw.address, { op: "ping" }, 80), "ERR_TIMEOUT");
      silent = false;
      assert.deepEqual(await client.request(raw.address, { op: "ping" }, 2000), { op: "pong" });
      assert.equal(connections.length, 2, "the next request came on a new connection");
      assert.equal(connections[0]!.destroyed || connections[0]!.readableEnded, true);

      // A slow request on a connection that answered something else meanwhile: the connection stays.
      const slow = client.request(raw.address, read("never"), 150);
      assert.deepEqual(await client.request(raw.address, read("chatty"), 2000), readAnswer("chatty"));
      await failsWith(slow, "ERR_TIMEOUT");
      assert.deepEqual(await client.request(raw.address, { op: "ping" }, 2000), { op: "pong" });
      assert.equal(connections.length, 2, "no new connection");
    },
  );

  test(
    "a closed port fails fast, then at once during backoff, then reconnects to a new listener",
    T,
    async (t) => {
      const c = scope(t);
      const port = await closedPort();
      const address = `${HOST}:${port}`;
      const client = await listen(c, { limits: { backoffMinMs: 200, backoffMaxMs: 1000 } });
      const start = performance.now();
      await failsWith(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
      assert.ok(performance.now() - start < 1000, "ECONNREFUSED should be reported quickly");
      const e = await failsAtOnce(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
      assert.match(e.message, /retrying in \d+ ms/);

      // A node comes up on that port; during the backoff it is not tried yet.
      await listen(c, { port });
      await failsAtOnce(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
      // After the backoff it is.
      await sleep(220);
      assert.deepEqual(await client.request(address, { op: "ping" }, 2000), { op: "pong" });
    },
  );

  test("resetBackoff makes the next request try at once", T, async (t) => {
    const c = scope(t);
    const port = await closedPort();
    const address = `${HOST}:${port}`;
    const client = await listen(c, { limits: { backoffMinMs: 60_000, backoffMaxMs: 60_000 } });
    await failsWith(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
    await listen(c, { port });
    await failsAtOnce(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
    client.resetBackoff(address);
    assert.deepEqual(await client.request(address, { op: "ping" }, 2000), { op: "pong" });
  });

  test(
    "the backoff doubles from min to max while the peer stays down, and resets once it is back",
    T,
    async (t) => {
      const c = scope(t);
      const port = await closedPort();
      const address = `${HOST}:${port}`;
      const client = await listen(c, { limits: { backoffMinMs: 100, backoffMaxMs: 250 } });
      const retryIn = async (): Promise<number> => {
        const e = await failsAtOnce(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
        return Number(/retrying in (\d+) ms/.exec(e.message)?.[1]);
      };
      const seen: number[] = [];
      for (let i = 0; i < 3; i++) {
        await failsWith(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
        const ms = await retryIn();
        seen.push(ms);
        await sleep(ms + 15);
      }
      assert.ok(seen[0]! <= 100 && seen[0]! > 50, `first backoff ${seen}`);
      assert.ok(seen[1]! <= 200 && seen[1]! > 100, `second backoff ${seen}`);
      assert.ok(seen[2]! <= 250 && seen[2]! > 200, `third backoff (capped) ${seen}`);

      // The peer comes back: a successful connection forgets the backoff, so the next outage starts at min.
      const back = await TcpTransport.listen({
        host: HOST,
        port,
        nodeId: "back",
        clusterId: CLUSTER,
        handler: async (_f, b) => echo(b),
        timers: rt.timers,
        clock: rt.clock,
      });
      try {
        assert.deepEqual(await client.request(address, { op: "ping" }, 2000), { op: "pong" });
      } finally {
        await back.close();
      }
      await failsWith(client.request(address, { op: "ping" }, 5000), "ERR_UNREACHABLE");
      const again = await retryIn();
      assert.ok(again <= 100, `backoff after recovery ${again}`);
    },
  );

  test("a malformed address fails ERR_UNREACHABLE", T, async (t) => {
    const c = scope(t);
    const client = await listen(c);
    for (const a of ["no-port", `${HOST}:0`, `${HOST}:70000`, ":123", `${HOST}:http`])
      await failsWith(client.request(a, { op: "ping" }, 1000), "ERR_UNREACHABLE");
  });

  test(
    "peer restart mid-stream: requests in flight fail (none hangs), later requests reconnect",
    T,
    async (t) => {
      const c = scope(t);
      const serve = async (_f: string, body: RequestBody) => {
        await sleep(Math.random() * 10);
        return echo(body);
      };
      const first = await listen(c, { handler: serve });
      const address = first.address;
      const port = Number(address.split(":")[1]);
      const client = await listen(c, { limits: { backoffMinMs: 30, backoffMaxMs: 100 } });
      let answered = 0;
      const results: Promise<Settled<ResponseBody>>[] = [];
      const keys: string[] = [];
      for (let i = 0; i < 300; i++) {
        const key = `k${i}`;
        keys.push(key);
        results.push(
          settle(
            client.request(address, read(key), 5000).then((r) => {
              answered++;
              return r;
            }),
          ),
        );
        if (i === 150) {
          // Wait for part of the stream to be answered, then kill the server with the rest in flight.
          await waitFor(() => answered >= 50, 3000, "first answers");
          await first.close();
        }
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
      const all = await within(Promise.all(results), 2000, "every request settles after the peer died");
      let ok = 0;
      all.forEach((s, i) => {
        if (s.ok) {
          ok++;
          assert.deepEqual(s.value, readAnswer(keys[i]!));
        } else assertCode(s, "ERR_UNREACHABLE");
      });
      assert.ok(ok >= 50 && ok < 300, `${ok} answered`);

      // The node restarts on the same port: the client reconnects once the backoff has passed.
      await listen(c, { port, handler: serve });
      const start = performance.now();
      let res: Settled<ResponseBody> = { ok: false, error: undefined };
      while (performance.now() - start < 2000) {
        res = await settle(client.request(address, read("back"), 1000));
        if (res.ok) break;
        await sleep(10);
      }
      assert.deepEqual(res, { ok: true, value: readAnswer("back") });
    },
  );
});

// ------------------------------------------------------------------ back-pressure

describe("back-pressure", () => {
  test("beyond maxInFlightPerConnection the client refuses at once with ERR_OVERLOADED", T, async (t) => {
    const c = scope(t);
    const server = await listen(c, {
      handler: async (_f, b) => (b.op === "read" ? new Promise(() => {}) : echo(b)),
    });
    const client = await listen(c, { limits: { maxInFlightPerConnection: 4 } });
    const held = Array.from({ length: 4 }, (_, i) =>
      settle(client.request(server.address, read(`h${i}`), 150)),
    );
    for (let i = 0; i < 3; i++)
      await failsAtOnce(client.request(server.address, { op: "ping" }, 1000), "ERR_OVERLOADED");
    // The first held one times out; nothing came back on the connection meanwhile, so the connection is
    // presumed dead and the others fail with it (maybe delivered). That frees their slots.
    const [first, ...rest] = await Promise.all(held);
    assertCode(first!, "ERR_TIMEOUT");
    for (const h of rest) {
      const e = h.ok ? undefined : (h.error as TransportError);
      assert.ok(e instanceof TransportError && ["ERR_TIMEOUT", "ERR_UNREACHABLE"].includes(e.code));
      assert.equal(e.maybeDelivered, true);
    }
    assert.deepEqual(await client.request(server.address, { op: "ping" }, 2000), { op: "pong" });
  });

  test("beyond its maxInFlightPerConnection the server answers ERR_OVERLOADED", T, async (t) => {
    const c = scope(t);
    const gates: Deferred<void>[] = [];
    const server = await listen(c, {
      limits: { maxInFlightPerConnection: 3 },
      handler: async (_f, b) => {
        if (b.op === "read") {
          const d = deferred<void>();
          gates.push(d);
          await d.promise;
        }
        return echo(b);
      },
    });
    const client = await listen(c);
    const reqs = Array.from({ length: 8 }, (_, i) =>
      settle(client.request(server.address, read(`r${i}`), 3000)),
    );
    await waitFor(
      () => gates.length === 3 && server.counters.overloaded === 5,
      2000,
      "the server to refuse 5",
    );
    const e = await failsWith(client.request(server.address, { op: "ping" }, 2000), "ERR_OVERLOADED");
    assert.match(e.message, /in flight/);
    for (const g of gates) g.resolve();
    const all = await Promise.all(reqs);
    assert.deepEqual(
      all.map((s) => (s.ok ? "ok" : (s.error as TransportError).code)),
      ["ok", "ok", "ok", ...Array(5).fill("ERR_OVERLOADED")],
    );
    assert.deepEqual(
      all.slice(0, 3),
      [0, 1, 2].map((i) => ({ ok: true, value: readAnswer(`r${i}`) })),
    );
    // Slots are free again.
    const again = Array.from({ length: 3 }, (_, i) =>
      client.request(server.address, { op: "probe", target: `${i}` }, 2000),
    );
    assert.equal((await Promise.all(again)).length, 3);
  });

  test("beyond maxBufferedBytes queued on the socket, new requests fail ERR_OVERLOADED", T, async (t) => {
    const c = scope(t);
    const server = await listen(c);
    const client = await listen(c, { limits: { maxBufferedBytes: 64 * 1024 } });
    await client.request(server.address, { op: "ping" }, 2000); // connected
    const set = randomBytes(100 * 1024);
    const reqs = Array.from({ length: 10 }, (_, i) =>
      settle(client.request(server.address, { op: "store", key: Buffer.from(`k${i}`), set }, 3000)),
    );
    const all = await Promise.all(reqs);
    assert.ok(all[0]!.ok, "the first request fits");
    for (const s of all.slice(1)) assertCode(s, "ERR_OVERLOADED");
    // Once flushed, requests go through again.
    assert.deepEqual(
      await client.request(server.address, { op: "store", key: Buffer.from("k"), set }, 3000),
      {
        op: "stored",
      },
    );
  });

  test("bytes queued while the connection is still being set up count towards maxBufferedBytes", {
    ...T,
  }, async (t) => {
    const c = scope(t);
    const server = await listen(c);
    const client = await listen(c, { limits: { maxBufferedBytes: 64 * 1024 } });
    const set = randomBytes(100 * 1024);
    const all = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        settle(client.request(server.address, { op: "store", key: Buffer.from(`k${i}`), set }, 3000)),
      ),
    );
    assert.ok(all[0]!.ok);
    for (const s of all.slice(1)) assertCode(s, "ERR_OVERLOADED");
  });
});

// ------------------------------------------------------------------ maybeDelivered

describe("maybeDelivered: whether a failed request may have reached the peer's handler", () => {
  const delivered = (s: Settled<unknown>, code: TransportErrorCode): boolean =>
    assertCode(s, code).maybeDelivered;

  test("ERR_TIMEOUT and ERR_REMOTE: maybe; refusals before the handler: no", T, async (t) => {
    const c = scope(t);
    const release = deferred<void>();
    const server = await listen(c, {
      limits: { maxInFlightPerConnection: 2 },
      handler: async (_f, b) => {
        if (b.op === "probe") throw new Error("handler failed");
        if (b.op === "read") await release.promise;
        return echo(b);
      },
    });
    const client = await listen(c, { limits: { maxInFlightPerConnection: 3 } });
    const timedOut = settle(client.request(server.address, read("slow"), 50));
    const held = settle(client.request(server.address, read("held"), 3000));
    // The server has 2 in flight: it refuses the third without running the handler.
    const refused = settle(client.request(server.address, { op: "ping" }, 2000));
    // The client has 3 in flight: it refuses the fourth without sending it.
    const local = settle(client.request(server.address, { op: "ping" }, 2000));
    assert.equal(delivered(await local, "ERR_OVERLOADED"), false, "refused locally");
    assert.equal(delivered(await refused, "ERR_OVERLOADED"), false, "refused by the server");
    assert.equal(delivered(await timedOut, "ERR_TIMEOUT"), true, "timed out");
    release.resolve();
    assert.ok((await held).ok);
    const remote = await settle(client.request(server.address, { op: "probe", target: "x" }, 2000));
    assert.equal(delivered(remote, "ERR_REMOTE"), true, "handler error");

    const newcomer = await listen(c, { clusterId: "" });
    const notYet = await settle(newcomer.request(server.address, read("k"), 2000));
    assert.equal(delivered(notYet, "ERR_REJECTED"), false, "join first");
  });

  test(
    "requests that never left (refused connection, backoff, handshake refused or timed out): no",
    T,
    async (t) => {
      const c = scope(t);
      const client = await listen(c, { limits: { connectTimeoutMs: 100, backoffMinMs: 5000 } });
      const refused = `${HOST}:${await closedPort()}`;
      const many = await Promise.all(
        Array.from({ length: 5 }, () => settle(client.request(refused, read("k"), 2000))),
      );
      for (const s of many) assert.equal(delivered(s, "ERR_UNREACHABLE"), false, "connection refused");
      assert.equal(
        delivered(await settle(client.request(refused, read("k"), 2000)), "ERR_UNREACHABLE"),
        false,
        "backoff",
      );

      const other = await listen(c, { clusterId: "another" });
      assert.equal(
        delivered(await settle(client.request(other.address, read("k"), 2000)), "ERR_REJECTED"),
        false,
      );

      const silent = await RawServer.start(c, () => undefined);
      assert.equal(
        delivered(await settle(client.request(silent.address, read("k"), 2000)), "ERR_UNREACHABLE"),
        false,
        "connect timed out",
      );

      const garbled = await RawServer.start(c, (send) => send(garbageBytes(30)));
      assert.equal(
        delivered(await settle(client.request(garbled.address, read("k"), 2000)), "ERR_PROTOCOL"),
        false,
        "garbage instead of welcome",
      );
    },
  );

  test("requests written on a connection that then broke: maybe (the handler may have run)", T, async (t) => {
    const c = scope(t);
    const received: string[] = [];
    const server = await listen(c, {
      handler: async (_f, b) => {
        if (b.op === "read") {
          received.push(Buffer.from(b.key).toString());
          return new Promise<ResponseBody>(() => {});
        }
        return echo(b);
      },
    });
    const client = await listen(c);
    const inFlight = Array.from({ length: 5 }, (_, i) =>
      settle(client.request(server.address, read(`r${i}`), 3000)),
    );
    await waitFor(() => received.length === 5, 2000, "the handler to receive them");
    await server.close();
    for (const s of await within(Promise.all(inFlight), 2000, "requests on the broken connection"))
      assert.equal(delivered(s, "ERR_UNREACHABLE"), true);

    // A server that answers garbage after taking the request.
    const garbled = await RawServer.start(
      c,
      welcomeThen((send) => send(frameBytes(Buffer.from([0xc1])))),
    );
    assert.equal(
      delivered(await settle(client.request(garbled.address, read("k"), 2000)), "ERR_PROTOCOL"),
      true,
    );
  });

  test(
    "close() and setCluster(): sent requests maybe, requests still waiting for the handshake no",
    T,
    async (t) => {
      const c = scope(t);
      const server = await listen(c, {
        handler: async (_f, b) => (b.op === "read" ? new Promise(() => {}) : echo(b)),
      });
      const silent = await RawServer.start(c, () => undefined);
      const a = await listen(c);
      await a.request(server.address, { op: "ping" }, 2000);
      const sentA = settle(a.request(server.address, read("x"), 3000));
      const queuedA = settle(a.request(silent.address, read("x"), 3000));
      await sleep(20);
      a.setCluster("renamed");
      assert.equal(delivered(await sentA, "ERR_CLOSED"), true, "setCluster, sent");
      assert.equal(delivered(await queuedA, "ERR_CLOSED"), false, "setCluster, not sent");

      const b = await listen(c);
      await b.request(server.address, { op: "ping" }, 2000);
      const sentB = settle(b.request(server.address, read("x"), 3000));
      const queuedB = settle(b.request(silent.address, read("x"), 3000));
      await sleep(20);
      await b.close();
      assert.equal(delivered(await sentB, "ERR_CLOSED"), true, "close, sent");
      assert.equal(delivered(await queuedB, "ERR_CLOSED"), false, "close, not sent");
    },
  );
});

// ------------------------------------------------------------------ coalescing

/*
 * The chunk counts on the raw peer are the observable effect, asserted loosely. They alone do not prove
 * the coalescing: the raw peer lives in this process, so it reads only after the whole turn's writes are
 * in the kernel, and it would see few chunks even with one write per frame (checked by mutating
 * FrameSink). The count of socket.write calls during the batch is what tells the two apart.
 */
describe("frames of one event-loop turn go out in one socket write", () => {
  test("requests issued in one synchronous loop reach a raw server in few chunks", T, async (t) => {
    const c = scope(t);
    const raw = await RawServer.start(
      c,
      welcomeThen((send, f) => send(wire({ t: "res", id: f.id, body: echo(f.body) }))),
    );
    const client = await listen(c);
    await client.request(raw.address, { op: "ping" }, 2000); // handshake done, warm
    raw.reqChunks.length = 0;
    const N = 200;
    let results: ResponseBody[] = [];
    const writes = await countSocketWrites(
      (s) => s.remotePort === raw.port,
      async () => {
        const ps: Promise<ResponseBody>[] = [];
        for (let i = 0; i < N; i++) ps.push(client.request(raw.address, read(`c${i}`), 3000));
        results = await Promise.all(ps);
      },
    );
    assert.deepEqual(
      results,
      Array.from({ length: N }, (_, i) => readAnswer(`c${i}`)),
    );
    const frames = raw.reqChunks.reduce((a, b) => a + b, 0);
    assert.equal(frames, N);
    assert.ok(raw.reqChunks.length <= N / 10, `${N} frames arrived in ${raw.reqChunks.length} chunks`);
    // Exactly: the client issued one write for the whole batch (allow one more for a turn boundary).
    assert.ok(writes >= 1 && writes <= 2, `${N} requests took ${writes} socket writes`);
  });

  test("responses ready in one turn reach a raw client in few chunks", T, async (t) => {
    const c = scope(t);
    const server = await listen(c, { nodeId: "srv" });
    const port = Number(server.address.split(":")[1]);
    const raw = await RawPeer.connect(c, port);
    raw.write(wire(hello()));
    await raw.waitFrames(1);
    raw.chunks.length = 0;
    const N = 150;
    const writes = await countSocketWrites(
      (s) => s.localPort === port,
      async () => {
        const reqs = Array.from(
          { length: N },
          (_, i): Frame => ({ t: "req", id: i + 1, deadlineMs: 1000, body: read(`s${i}`) }),
        );
        raw.write(wire(...reqs));
        await raw.waitFrames(1 + N);
      },
    );
    assert.deepEqual(
      raw.frames.slice(1),
      Array.from({ length: N }, (_, i) => ({ t: "res", id: i + 1, body: readAnswer(`s${i}`) })),
    );
    assert.ok(raw.chunks.length <= N / 10, `${N} responses arrived in ${raw.chunks.length} chunks`);
    assert.ok(writes >= 1 && writes <= 3, `${N} responses took ${writes} socket writes`);
  });

  test("frames written in different turns are not held back", T, async (t) => {
    const c = scope(t);
    const server = await listen(c);
    const client = await listen(c);
    // Sequential requests: each is flushed in its own turn, none waits for a batch to fill.
    const start = performance.now();
    for (let i = 0; i < 50; i++) await client.request(server.address, read(`q${i}`), 1000);
    assert.ok(performance.now() - start < 2000);
  });
});

// ------------------------------------------------------------------ close

describe("close()", () => {
  test("pending requests fail, listeners and connections go, further requests fail", T, async (t) => {
    const c = scope(t);
    const count = () => {
      const r = process.getActiveResourcesInfo();
      return {
        servers: r.filter((x) => x === "TCPServerWrap").length,
        sockets: r.filter((x) => x === "TCPSocketWrap").length,
        timers: r.filter((x) => x === "Timeout").length,
      };
    };
    const baseline = count();
    const never = async (_f: string, b: RequestBody): Promise<ResponseBody> =>
      b.op === "read" ? new Promise(() => {}) : echo(b);
    const server = await listen(c, { handler: never });
    const client = await listen(c, { handler: never });
    const third = await listen(c);
    await client.request(server.address, { op: "ping" }, 2000);
    await server.request(client.address, { op: "ping" }, 2000);
    const outgoing = settle(client.request(server.address, read("pending"), 60_000));
    const incoming = settle(server.request(client.address, read("pending"), 60_000));
    const connecting = settle(client.request(`${HOST}:${await closedPort()}`, { op: "ping" }, 60_000));
    await sleep(10);

    await within(client.close(), 2000, "close");
    assertCode(await within(outgoing, 500, "request in flight"), "ERR_CLOSED");
    assert.ok(!(await within(connecting, 500, "request still connecting")).ok);
    // The peer sees the connection go: its request to the closed node fails instead of hanging.
    assertCode(await within(incoming, 1000, "the peer's request"), "ERR_UNREACHABLE");
    await failsWith(client.request(server.address, { op: "ping" }, 1000), "ERR_CLOSED");
    await failsWith(third.request(client.address, { op: "ping" }, 1000), "ERR_UNREACHABLE");
    await client.close(); // twice is fine

    await server.close();
    await third.close();
    await waitFor(
      () => {
        const n = count();
        return n.servers <= baseline.servers && n.sockets <= baseline.sockets && n.timers <= baseline.timers;
      },
      1000,
      `no handles left (${JSON.stringify(count())} vs ${JSON.stringify(baseline)})`,
    );
  });

  test("a process that closes its transports exits by itself", T, async () => {
    const r = await runChild("close-exits");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      pending: "ERR_CLOSED",
      connecting: "ERR_CLOSED",
      resources: [],
    });
  });
});
