/**
 * The TCP transport's defences (src/transport/tcp-transport.ts, peer-tls.ts), with real transports on
 * 127.0.0.1 and raw sockets playing attackers:
 *
 * - without the cluster key nothing gets through and nothing comes back: another key fails the TLS
 *   handshake (ERR_AUTH for a transport, nothing readable for a raw client), plain bytes get no frame,
 *   no cluster id; each refusal is counted and the refused address logged, one line per address and
 *   window however many come;
 * - bounds before authentication: a silent connection is closed at the handshake deadline, a peer that
 *   announces a huge frame before hello is cut off at its first bytes, connections per address and in
 *   all are capped (the rest closed at accept, counted);
 * - after authentication: a peer that never reads its answers is dropped past the byte bound; reading
 *   pauses while too many bytes of requests are being handled; a request whose deadline passed before its
 *   handler would start is not run;
 * - a key rotation through setKeys: connections made with the old key drain (no request fails), a key no
 *   longer accepted closes the connections made with it.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { FrameReader, frameBytes } from "../../src/transport/framing.js";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  PROTOCOL_VERSION,
  type RequestBody,
} from "../../src/transport/messages.js";
import { type PeerKeys, peerKeys } from "../../src/transport/peer-keys.js";
import { connectTls } from "../../src/transport/peer-tls.js";
import { TcpTransport, type TcpTransportOptions } from "../../src/transport/tcp-transport.js";
import type { RequestHandler, TransportError } from "../../src/transport/transport.js";
import {
  assertCode,
  CLUSTER,
  deferred,
  echo,
  echoHandler,
  OTHER_KEYS,
  read,
  readAnswer,
  settle,
  TEST_KEYS,
  within,
} from "./peers.js";

const HOST = "127.0.0.1";
const rt = systemRuntime();
const T = { timeout: 15_000 };

const wire = (...frames: Frame[]): Buffer => Buffer.concat(frames.map((f) => frameBytes(encodeFrame(f))));
const hello = (node = "raw"): Frame => ({ kind: "hello", v: PROTOCOL_VERSION, cluster: CLUSTER, node });

let nodes = 0;

/** A transport on a free port, closed when the test ends; `lines` collects what it logs. */
async function listen(
  t: TestContext,
  o: Partial<TcpTransportOptions> = {},
): Promise<{ transport: TcpTransport; port: number; lines: string[] }> {
  const lines: string[] = [];
  const transport = await TcpTransport.listen({
    host: HOST,
    port: 0,
    nodeId: `s${++nodes}`,
    clusterId: CLUSTER,
    handler: echoHandler,
    timers: rt.timers,
    clock: rt.clock,
    security: "tls",
    keys: TEST_KEYS,
    log: (l) => lines.push(l),
    ...o,
  });
  t.after(() => transport.close());
  return { transport, port: Number(transport.address.split(":")[1]), lines };
}

/** A raw socket: what it received, and when it closed. */
interface Raw {
  readonly socket: net.Socket;
  readonly received: () => Buffer;
  readonly closed: Promise<void>;
}

function track(t: TestContext, socket: net.Socket): Raw {
  const chunks: Buffer[] = [];
  socket.on("data", (d: Buffer) => chunks.push(d));
  socket.on("error", () => undefined);
  t.after(() => socket.destroy());
  return {
    socket,
    received: () => Buffer.concat(chunks),
    closed: new Promise((r) => socket.once("close", () => r())),
  };
}

/** A plain TCP connection (no TLS), connected. */
async function rawTcp(t: TestContext, port: number): Promise<Raw> {
  const s = net.connect({ host: HOST, port });
  const r = track(t, s);
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("error", reject);
  });
  return r;
}

/** A TLS connection with `keys`' current key; resolves once the handshake succeeded or failed. */
async function rawTls(
  t: TestContext,
  port: number,
  keys: PeerKeys,
): Promise<Raw & { ok: boolean; error?: unknown }> {
  const s = connectTls(net.connect({ host: HOST, port }), keys.current);
  const r = track(t, s);
  const outcome = await new Promise<{ ok: boolean; error?: unknown }>((resolve) => {
    s.once("secureConnect", () => resolve({ ok: true }));
    s.once("error", (error) => resolve({ ok: false, error }));
  });
  return { ...r, ...outcome };
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe("without the key nothing gets through, and nothing comes back", () => {
  test(
    "a transport with another key: ERR_AUTH; the listener counts it and names the address and key id",
    T,
    async (t) => {
      const { transport: server, lines } = await listen(t);
      const { transport: stranger } = await listen(t, { keys: OTHER_KEYS });
      const e = assertCode(
        await settle(stranger.request(server.address, { kind: "ping" }, 2000)),
        "ERR_AUTH",
      );
      assert.match(e.message, /refused this node's cluster key \(key id [0-9a-f]{16}\)/);
      assert.equal(e.maybeDelivered, false);
      await waitFor(() => server.counters.refused.tls_handshake === 1, 2000, "the refusal counted");
      assert.equal(lines.length, 1);
      assert.match(
        lines[0]!,
        new RegExp(
          `refused a peer connection from 127\\.0\\.0\\.1:\\d+: the TLS handshake failed.*it named key id "${OTHER_KEYS.current.id}"`,
        ),
      );
    },
  );

  test("a raw TLS client with another key gets no application byte", T, async (t) => {
    const { port } = await listen(t);
    const r = await rawTls(t, port, OTHER_KEYS);
    assert.equal(r.ok, false);
    assert.match(
      String((r.error as { code?: string }).code),
      /ERR_SSL_SSLV3_ALERT_(ILLEGAL_PARAMETER|HANDSHAKE_FAILURE)/,
    );
    await within(r.closed, 2000, "closed");
    assert.equal(r.received().length, 0);
  });

  test(
    "plain bytes (a hello, a join, a read) get no frame and no cluster id, only a TLS alert",
    T,
    async (t) => {
      const { transport: server, port, lines } = await listen(t);
      const r = await rawTcp(t, port);
      r.socket.write(
        wire(hello(), {
          kind: "req",
          id: 1,
          deadlineMs: 1000,
          body: { kind: "read", key: Buffer.from("k") },
        }),
      );
      await within(r.closed, 3000, "the server closes the connection");
      const got = r.received();
      assert.ok(got.length < 16, `${got.length} bytes came back`);
      assert.ok(!got.includes(Buffer.from(CLUSTER)) && !got.includes(Buffer.from(server.nodeId)));
      assert.equal(new FrameReader().push(got).length, 0, "no frame");
      assert.equal(server.counters.refused.tls_handshake, 1);
      assert.match(lines[0]!, /refused a peer connection from 127\.0\.0\.1:\d+: the TLS handshake failed/);
    },
  );

  test("one line per address and window, however many connections are refused", T, async (t) => {
    const { transport: server, port, lines } = await listen(t);
    for (let i = 0; i < 40; i++) {
      const r = await rawTcp(t, port);
      r.socket.write("garbage, not TLS");
      await within(r.closed, 2000, "closed");
    }
    assert.equal(server.counters.refused.tls_handshake, 40);
    assert.equal(lines.length, 1, lines.join("\n"));
  });
});

describe("bounds before authentication", () => {
  test("a silent connection is closed at the handshake deadline, and counted", T, async (t) => {
    const { transport: server, port, lines } = await listen(t, { limits: { handshakeTimeoutMs: 200 } });
    const start = Date.now();
    const r = await rawTcp(t, port);
    await within(r.closed, 3000, "closed at the deadline");
    const took = Date.now() - start;
    assert.ok(took >= 180 && took < 2000, `closed after ${took} ms`);
    assert.equal(server.counters.refused.handshake_timeout, 1);
    assert.match(lines[0]!, /its TLS handshake did not complete within 200 ms/);
    // One that completes TLS but never says hello is closed too.
    const authed = await rawTls(t, port, TEST_KEYS);
    assert.ok(authed.ok);
    await within(authed.closed, 3000, "closed without a hello");
    assert.equal(server.counters.refused.handshake_timeout, 2);
  });

  test(
    "a frame announced over 64 KiB before hello is refused at its first 4 bytes (TLS and plaintext)",
    T,
    async (t) => {
      for (const security of ["tls", "plaintext"] as const) {
        const { transport: server, port } = await listen(t, { security });
        const r = security === "tls" ? await rawTls(t, port, TEST_KEYS) : await rawTcp(t, port);
        const head = Buffer.alloc(4);
        head.writeUInt32BE(96 * 1024 * 1024, 0);
        r.socket.write(head);
        r.socket.write(Buffer.alloc(1000, 1)); // the trickle begins
        await within(r.closed, 2000, `${security}: closed at once`);
        assert.equal(server.counters.protocolErrors, 1);
        assert.match(server.lastProtocolError, /frame of 100663296 bytes, over the cap/);
      }
    },
  );

  test(
    "connections not yet authenticated are capped per address and in all; the rest closed at accept",
    T,
    async (t) => {
      const { transport: server, port } = await listen(t, {
        limits: { maxPendingPerAddress: 5, handshakeTimeoutMs: 1000 },
      });
      const silent = await Promise.all(Array.from({ length: 20 }, () => rawTcp(t, port)));
      await waitFor(() => server.counters.refused.address_limit === 15, 2000, "15 refused at accept");
      // Once the deadline freed the slots, a peer with the key gets in.
      await Promise.all(silent.map((s) => within(s.closed, 3000, "closed")));
      const { transport: client } = await listen(t);
      assert.deepEqual(await client.request(server.address, read("k"), 2000), readAnswer("k"));
      const all = await listen(t, { limits: { maxPending: 3, handshakeTimeoutMs: 1000 } });
      await Promise.all(Array.from({ length: 8 }, () => rawTcp(t, all.port)));
      await waitFor(() => all.transport.counters.refused.pending_limit === 5, 2000, "5 refused in all");
    },
  );
});

describe("after authentication", () => {
  test("a request whose deadline passed before its handler would start is not run", T, async (t) => {
    const ran: string[] = [];
    const { port, transport: server } = await listen(t, {
      handler: async (_from, body) => {
        const key = body.kind === "read" ? Buffer.from(body.key).toString() : body.kind;
        ran.push(key);
        // The first request holds the event loop for 60 ms (a long synchronous handler).
        if (key === "busy") {
          const until = Date.now() + 60;
          while (Date.now() < until);
        }
        return echo(body);
      },
    });
    const r = await rawTls(t, port, TEST_KEYS);
    const frames: Frame[] = [];
    const reader = new FrameReader();
    r.socket.on("data", (d: Buffer) => {
      for (const f of reader.push(d)) frames.push(decodeFrame(f));
    });
    // One chunk: hello; a request with deadline 0 (already given up); one that waits behind the busy one
    // longer than its 20 ms; one with room to spare.
    r.socket.write(
      wire(
        hello(),
        { kind: "req", id: 1, deadlineMs: 0, body: read("gone") },
        { kind: "req", id: 2, deadlineMs: 1000, body: read("busy") },
        { kind: "req", id: 3, deadlineMs: 20, body: read("late") },
        { kind: "req", id: 4, deadlineMs: 5000, body: read("fine") },
      ),
    );
    await waitFor(() => frames.length === 5, 3000, "5 frames");
    assert.deepEqual(ran, ["busy", "fine"]);
    const err = (id: number) => frames.find((f) => f.kind === "err" && f.id === id);
    assert.equal((err(1) as { code?: string }).code, "ERR_TIMEOUT");
    assert.equal((err(3) as { code?: string }).code, "ERR_TIMEOUT");
    assert.equal(server.counters.expired, 2);
  });

  test("a peer that never reads its answers is dropped past the byte bound", T, async (t) => {
    const big = Buffer.alloc(64 * 1024, 5);
    const {
      port,
      transport: server,
      lines,
    } = await listen(t, {
      limits: { maxBufferedBytes: 512 * 1024 },
      handler: async (_from, body) => (body.kind === "read" ? { kind: "read", set: big } : echo(body)),
    });
    const r = await rawTls(t, port, TEST_KEYS);
    r.socket.pause(); // reads nothing, ever
    const reqs: Frame[] = [hello()];
    for (let i = 1; i <= 400; i++) reqs.push({ kind: "req", id: i, deadlineMs: 10_000, body: read(`r${i}`) });
    r.socket.write(wire(...reqs));
    await waitFor(() => server.counters.slowReaders === 1, 5000, "the slow reader dropped");
    assert.ok(
      lines.some((l) =>
        /dropped the peer connection from 127\.0\.0\.1:\d+ \(raw\): it left \d+ bytes of answers unread/.test(
          l,
        ),
      ),
    );
    // Others are served.
    const { transport: client } = await listen(t);
    assert.deepEqual(await client.request(server.address, { kind: "ping" }, 2000), { kind: "pong" });
  });

  test("reading pauses while too many bytes of requests are being handled", T, async (t) => {
    const gate = deferred<void>();
    let running = 0;
    let most = 0;
    const { transport: server } = await listen(t, {
      limits: { maxInFlightBytesPerConnection: 100 * 1024 },
      handler: async (_from, body) => {
        running++;
        most = Math.max(most, running);
        await gate.promise;
        running--;
        return echo(body);
      },
    });
    const { transport: client } = await listen(t);
    const value = Buffer.alloc(40 * 1024, 1);
    const body = (i: number): RequestBody => ({ kind: "store", key: Buffer.from(`k${i}`), set: value });
    const all = Array.from({ length: 20 }, (_, i) => client.request(server.address, body(i), 10_000));
    await sleep(300);
    assert.ok(most <= 4, `${most} handlers ran at once with 100 KiB of 40 KiB requests allowed`);
    gate.resolve();
    const done = await Promise.all(all);
    assert.equal(done.length, 20);
  });
});

describe("key rotation (setKeys)", () => {
  test(
    "switching keys drains the old connections with no failed request; a dropped key closes them",
    T,
    async (t) => {
      const K1 = TEST_KEYS.current;
      const k2 = Buffer.alloc(32, 9);
      const K2 = peerKeys(k2).current;
      const both = (current: typeof K1, other: typeof K1): PeerKeys => ({
        current,
        accepted: [current, other],
      });
      const gate = deferred<void>();
      const handler: RequestHandler = async (from, body) => {
        if (body.kind === "read" && Buffer.from(body.key).toString() === "slow") await gate.promise;
        return echoHandler(from, body);
      };
      const a = await listen(t, { handler });
      const b = await listen(t, { handler });
      assert.deepEqual(await a.transport.request(b.transport.address, { kind: "ping" }, 2000), {
        kind: "pong",
      });
      // Step 1, everywhere: accept K2 too.
      a.transport.setKeys(both(K1, K2));
      b.transport.setKeys(both(K1, K2));
      // A request is in flight on a's connection made with K1 when a switches to K2.
      const slow = settle(a.transport.request(b.transport.address, read("slow"), 5000));
      await sleep(50);
      a.transport.setKeys(both(K2, K1));
      const next = await a.transport.request(b.transport.address, read("new"), 2000);
      assert.deepEqual(next, readAnswer("new"));
      assert.deepEqual(a.transport.securityStatus().connections.outgoing, { [K1.id]: 1, [K2.id]: 1 });
      gate.resolve();
      assert.deepEqual(
        await slow,
        { ok: true, value: readAnswer("slow") },
        "the request on the old connection completes",
      );
      await waitFor(
        () =>
          JSON.stringify(a.transport.securityStatus().connections.outgoing) ===
          JSON.stringify({ [K2.id]: 1 }),
        2000,
        "the K1 connection retired once its request was answered",
      );
      // b still connects to a with K1 (not switched): when a drops K1, that connection is closed.
      assert.deepEqual(await b.transport.request(a.transport.address, { kind: "ping" }, 2000), {
        kind: "pong",
      });
      a.transport.setKeys({ current: K2, accepted: [K2] });
      await waitFor(() => a.transport.counters.refused.key_removed === 1, 2000, "the K1 connection closed");
      assert.match(a.lines.at(-1)!, /it was made with key [0-9a-f]{16}, which this node no longer accepts/);
      // b's next connection, with K1, is refused (after the closed one's short reconnect backoff).
      await sleep(100);
      const e = assertCode(
        await settle(b.transport.request(a.transport.address, { kind: "ping" }, 2000)),
        "ERR_AUTH",
      );
      assert.ok((e as TransportError).message.includes(K1.id));
    },
  );
});
