/**
 * The attacks of issue 16, replayed against a running cluster of three real node processes (started
 * through the CLI), by a test process that can reach the peer ports:
 * - without the cluster key (plain TCP, or TLS with another key): read a key's versions, overwrite one
 *   with a forged context (counter 1e9), join as a made-up member, gossip that a member left, announce a
 *   96 MiB frame and trickle it, open 200 silent connections. None gets past the TLS handshake: nothing
 *   comes back, nothing changes, the nodes keep serving, memory stays put, and the log names the
 *   refused address (a few lines, not one per attempt);
 * - with the key (an insider, or a stolen key): a gossip frame from a member that is not the claimant
 *   saying another member (or the receiver itself) left is ignored, and the log names its sender.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { peerKeysOf } from "../../src/node/cluster-key.js";
import { decodeKeyFile } from "../../src/node/cluster-key-file.js";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import { frameBytes } from "../../src/transport/framing.js";
import { encodeFrame, type Frame, type MemberView, PROTOCOL_VERSION } from "../../src/transport/messages.js";
import { type PeerKeys, peerKeys } from "../../src/transport/peer-keys.js";
import { TcpTransport } from "../../src/transport/tcp-transport.js";
import { TransportError } from "../../src/transport/transport.js";
import { type TestCluster as Cluster, http, TestCluster } from "./harness.js";

const rt = systemRuntime();
const cluster = new TestCluster();
let clusterId = "";

interface Status {
  cluster: { id: string };
  members: { id: string; state: string; status: string; incarnation: number }[];
  transport: { refused: Record<string, number> };
}

async function status(c: Cluster, id: string): Promise<Status> {
  return (await http(c.url(id, "/status"))).json() as unknown as Status;
}

/** A peer transport in this process: an attacker with `keys` (another cluster's, or the stolen one). */
async function attacker(keys: PeerKeys, nodeId: string, cid = ""): Promise<TcpTransport> {
  const t = await TcpTransport.listen({
    host: "127.0.0.1",
    port: 0,
    nodeId,
    clusterId: cid,
    handler: async () => ({ kind: "pong" }),
    timers: rt.timers,
    clock: rt.clock,
    security: "tls",
    keys,
  });
  after(() => t.close());
  return t;
}

const wire = (...frames: Frame[]): Buffer => Buffer.concat(frames.map((f) => frameBytes(encodeFrame(f))));
const peerOf = (id: string) => cluster.nodes.get(id)!.peer;

/** Opens a plain TCP connection to `address`, writes `bytes`; resolves with what came back once closed. */
function plain(address: string, bytes: Buffer, ms = 8000): Promise<Buffer> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.split(":").at(-1))];
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => s.write(bytes));
    const got: Buffer[] = [];
    s.on("data", (d: Buffer) => got.push(d));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${address} kept the connection open ${ms} ms`));
    }, ms);
  });
}

const other = peerKeys(Buffer.alloc(32, 0x66));

/** The node process's resident memory, from /proc (Linux). */
function rss(id: string): number {
  const pid = cluster.nodes.get(id)!.child!.pid!;
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  assert.ok(kb > 0, "VmRSS read");
  return kb * 1024;
}

async function refusedMetric(id: string, reason: string): Promise<number> {
  const text = (await http(cluster.url(id, "/metrics"))).text;
  return Number(
    new RegExp(`^ringstore_peer_refused_total\\{reason="${reason}"[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? 0,
  );
}

const refusedLines = (id: string) =>
  cluster.nodes
    .get(id)!
    .output.split("\n")
    .filter((l) => l.includes("refused a peer connection from 127.0.0.1"));

describe("attacks without the cluster key", () => {
  before(async () => {
    await cluster.start("n1");
    await cluster.start("n2", { join: "n1" });
    await cluster.start("n3", { join: "n1" });
    for (const id of ["n1", "n2", "n3"]) await cluster.converged(id, ["n1", "n2", "n3"]);
    clusterId = (await status(cluster, "n1")).cluster.id;
    await cluster.until(
      "a first write on all three",
      async () =>
        (await http(cluster.url("n1", "/kv/secret?w=all"), { method: "PUT", body: "original" })).status ===
        204,
    );
  });
  after(() => cluster.shutdown());

  test("read, overwrite with a forged context, join as a made-up member, gossip a member left: refused at TLS", {
    timeout: 60_000,
  }, async () => {
    const forged: MemberView = {
      id: "mallory",
      api: "127.0.0.1:1",
      peer: "127.0.0.1:2",
      weight: 1000,
      zone: undefined,
      status: "up",
      incarnation: 1,
      heartbeat: 1,
    };
    const n3 = (await status(cluster, "n1")).members.find((m) => m.id === "n3")!;
    const left: MemberView = { ...forged, id: "n3", status: "left", incarnation: n3.incarnation + 100 };
    const bodies = [
      { kind: "read", key: Buffer.from("secret") },
      {
        kind: "coordinate",
        requestId: "mallory:1",
        key: Buffer.from("secret"),
        context: [["n1.00000000", 1e9]],
        value: Buffer.from("overwritten"),
        contentType: "text/plain",
        deleted: false,
        writtenAtMs: Date.now(),
        w: 3,
        timeoutMs: 2000,
      },
      { kind: "join", member: forged },
      { kind: "gossip", members: [left], ring: null },
    ] as const;
    // With another key, through a real transport: the handshake fails, nothing is sent.
    const t = await attacker(other, "mallory", clusterId);
    for (const body of bodies) {
      const e = await t.request(peerOf("n1"), body, 2000).then(
        () => assert.fail(`${body.kind} was answered`),
        (err: unknown) => err as TransportError,
      );
      assert.ok(
        e instanceof TransportError && (e.code === "ERR_AUTH" || e.code === "ERR_UNREACHABLE"),
        String(e),
      );
      await sleep(60); // past the reconnect backoff, so each is a new handshake
    }
    // In plain TCP, the frames a node of the old protocol took: no frame comes back, no cluster id.
    for (const body of bodies) {
      const got = await plain(
        peerOf("n1"),
        wire(
          { kind: "hello", v: PROTOCOL_VERSION, cluster: clusterId, node: "mallory" },
          { kind: "req", id: 1, deadlineMs: 2000, body },
        ),
      );
      assert.ok(
        got.length < 16 && !got.includes(Buffer.from(clusterId)),
        `${body.kind}: ${got.length} bytes back`,
      );
    }
    // Nothing changed, and the node keeps serving.
    const read = await http(cluster.url("n2", "/kv/secret?r=all"));
    assert.equal(read.status, 200);
    assert.equal(read.text, "original");
    await sleep(500);
    for (const id of ["n1", "n2", "n3"]) {
      const s = await status(cluster, id);
      assert.ok(!s.members.some((m) => m.id === "mallory"), `${id} knows mallory`);
      assert.equal(s.members.find((m) => m.id === "n3")?.status, "up", `${id}: n3 is not up`);
    }
    // Each plain attempt, and at least the first with another key (later ones may meet the attacker's own
    // reconnect backoff), failed the handshake.
    assert.ok((await refusedMetric("n1", "tls_handshake")) >= bodies.length + 1);
    const lines = refusedLines("n1");
    assert.ok(lines.length >= 1 && lines.length <= 12, `${lines.length} log lines:\n${lines.join("\n")}`);
    assert.match(lines[0]!, /refused a peer connection from 127\.0\.0\.1:\d+: the TLS handshake failed/);
  });

  test("a 96 MiB frame announced and trickled, 20 at once: closed at once, memory unchanged", {
    timeout: 60_000,
  }, async () => {
    const before = rss("n2");
    const head = Buffer.alloc(4);
    head.writeUInt32BE(96 * 1024 * 1024 - 1, 0);
    const trickles = Array.from({ length: 20 }, () => {
      const [host, port] = ["127.0.0.1", Number(peerOf("n2").split(":")[1])];
      return new Promise<number>((resolve) => {
        const start = Date.now();
        const s = net.connect({ host, port }, () => {
          s.write(head);
          const timer = setInterval(() => {
            if (!s.destroyed) s.write(Buffer.alloc(64 * 1024, 0x41));
          }, 10);
          s.on("close", () => {
            clearInterval(timer);
            resolve(Date.now() - start);
          });
        });
        s.on("error", () => undefined);
      });
    });
    const took = await Promise.all(trickles);
    assert.ok(Math.max(...took) < 3000, `connections held ${Math.max(...took)} ms`);
    const afterRss = rss("n2");
    assert.ok(afterRss - before < 40 * 1024 * 1024, `RSS grew ${(afterRss - before) / 1048576} MiB`);
    assert.equal((await http(cluster.url("n2", "/kv/secret"))).text, "original");
    assert.ok(refusedLines("n2").length >= 1);
  });

  test("200 silent connections: most closed at accept, the rest at the handshake deadline; the node serves throughout", {
    timeout: 60_000,
  }, async () => {
    const port = Number(peerOf("n3").split(":")[1]);
    const closedAt: number[] = [];
    const start = Date.now();
    const sockets = Array.from({ length: 200 }, () => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.on("error", () => undefined);
      s.on("close", () => closedAt.push(Date.now() - start));
      return s;
    });
    after(() => {
      for (const s of sockets) s.destroy();
    });
    // The node keeps serving while they are open.
    for (let i = 0; i < 10; i++) {
      const w = await http(cluster.url("n3", `/kv/during-${i}`), { method: "PUT", body: "x" });
      assert.equal(w.status, 204);
    }
    await cluster.until("every silent connection closed", async () => closedAt.length === 200, 15_000);
    assert.ok(Math.max(...closedAt) < 9000, `the last closed after ${Math.max(...closedAt)} ms`);
    assert.ok(closedAt.filter((t) => t < 1000).length >= 150, "most are closed at accept");
    assert.ok((await refusedMetric("n3", "address_limit")) >= 150);
    assert.ok((await refusedMetric("n3", "handshake_timeout")) >= 1);
    const lines = refusedLines("n3");
    assert.ok(lines.length >= 1 && lines.length <= 12, `${lines.length} lines for 200 refusals`);
    assert.equal((await http(cluster.url("n3", "/kv/during-3?r=all"))).status, 200);
  });
});

describe("with the key: a gossip claim that a member left, from one that is not the claimant", () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("is ignored by every node (the member keeps running), and the log names the sender", {
    timeout: 90_000,
  }, async () => {
    await c.start("n1");
    await c.start("n2", { join: "n1" });
    await c.start("n3", { join: "n1" });
    for (const id of ["n1", "n2", "n3"]) await c.converged(id, ["n1", "n2", "n3"]);
    const cid = (await status(c, "n1")).cluster.id;
    const stolen = peerKeysOf(decodeKeyFile(readFileSync(c.keyFile!, "utf8"), c.keyFile!));
    const n3 = (await status(c, "n1")).members.find((m) => m.id === "n3")!;
    const claim: MemberView = {
      id: "n3",
      api: "127.0.0.1:1",
      peer: "127.0.0.1:2",
      weight: 1,
      zone: undefined,
      status: "left",
      incarnation: n3.incarnation + 1000,
      heartbeat: 1,
    };
    // As a made-up member, and as n2 (a member, not the claimant: n1 is), to n1, n2 and n3 itself.
    for (const sender of ["mallory", "n2"]) {
      const t = await attacker(stolen, sender, cid);
      for (const target of ["n1", "n2", "n3"]) {
        const ans = await t.request(
          c.nodes.get(target)!.peer,
          { kind: "gossip", members: [claim], ring: null },
          2000,
        );
        assert.equal(ans.kind, "gossip");
      }
    }
    // Several gossip rounds later (100 ms each), n3 is up everywhere and still running.
    await sleep(1500);
    for (const id of ["n1", "n2", "n3"]) {
      const s = await status(c, id);
      assert.equal(s.members.find((m) => m.id === "n3")?.status, "up", `${id} took the claim`);
    }
    assert.equal(c.nodes.get("n3")!.child?.exitCode, null, "n3 is running");
    assert.equal((await http(c.url("n3", "/health"))).status, 200);
    assert.match(c.nodes.get("n1")!.output, /membership: ignored mallory's claim that n3 left the cluster/);
    assert.match(c.nodes.get("n2")!.output, /membership: ignored mallory's claim that n3 left the cluster/);
    assert.match(
      c.nodes.get("n3")!.output,
      /membership: ignored mallory's claim that this node left the cluster/,
    );
    assert.match(c.nodes.get("n1")!.output, /membership: ignored n2's claim that n3 left the cluster/);
  });
});
