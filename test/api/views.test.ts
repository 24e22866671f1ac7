/**
 * The /status and /ring documents (api/views.ts) built from a small fixed input: every field, in the
 * order sent (the client routes by /ring; `ringstore cluster status` reads /status).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { memberState, ringDocument, statusDocument } from "../../src/api/views.js";
import type { Liveness } from "../../src/membership/membership.js";
import type { HandoffProgress } from "../../src/replication/handoff.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import type { MemberView, RingView } from "../../src/transport/messages.js";

const member = (id: string, status: MemberView["status"], zone?: string): MemberView => ({
  id,
  api: `127.0.0.1:80${id.charCodeAt(0) - 96}`,
  peer: `127.0.0.1:90${id.charCodeAt(0) - 96}`,
  weight: 100,
  zone,
  status,
  incarnation: 2,
  heartbeat: 7,
});

// In view order (not sorted): c leaving and down, a up, d left, b up but suspect.
const MEMBERS: MemberView[] = [
  member("c", "leaving"),
  member("a", "up", "z1"),
  member("d", "left"),
  member("b", "up"),
];
const LIVENESS: Record<string, Liveness> = { a: "up", b: "suspect", c: "down", d: "down" };
const RING: RingView = {
  version: 5,
  partitions: 4,
  owners: ["a", "b", "a", "b"],
  members: ["a:100", "b:100"],
};

test("ring document: version, partitions, n, hash, owners, and every member not left, in view order", () => {
  const doc = ringDocument({ ring: RING, n: 2, members: MEMBERS, liveness: (id) => LIVENESS[id]! });
  assert.equal(
    JSON.stringify(doc),
    JSON.stringify({
      version: 5,
      partitions: 4,
      n: 2,
      hash: "murmur3-x86-32, seed 0x52494e47, partition = floor(hash * partitions / 2^32)",
      owners: ["a", "b", "a", "b"],
      members: [
        { id: "c", api: "127.0.0.1:803", zone: null, weight: 100, state: "down" },
        { id: "a", api: "127.0.0.1:801", zone: "z1", weight: 100, state: "up" },
        { id: "b", api: "127.0.0.1:802", zone: null, weight: 100, state: "suspect" },
      ],
    }),
  );
});

test("ring document without a ring: version 0, no partitions, no owners", () => {
  const doc = ringDocument({ ring: null, n: 3, members: [member("a", "joining")], liveness: () => "up" });
  assert.deepEqual([doc.version, doc.partitions, doc.owners, doc.members.length], [0, 0, [], 1]);
});

test("member state: the member's own status while heard from, left once left, else its liveness", () => {
  assert.equal(memberState(member("a", "joining"), "up"), "joining");
  assert.equal(memberState(member("a", "leaving"), "up"), "leaving");
  assert.equal(memberState(member("a", "up"), "suspect"), "suspect");
  assert.equal(memberState(member("a", "leaving"), "down"), "down");
  assert.equal(memberState(member("a", "left"), "down"), "left");
});

test("status document: every field, members sorted by id, counters copied", () => {
  const handoff: HandoffProgress = {
    state: "running",
    ringVersion: 5,
    leaving: false,
    keysScanned: 10,
    keysSent: 4,
    bytesSent: 400,
    storesFailed: 1,
    passesCompleted: 3,
    startedAt: 1000,
    lastCompletedAt: null,
    lastError: null,
    throttleBytesPerSecond: 1 << 20,
    keysPerSecond: 5,
    bytesPerSecond: 200,
    keysTotal: 30,
    etaSeconds: 4,
  };
  const strayStores = { forwarded: 2, failed: 1, dropped: 0 };
  const transport = {
    protocolErrors: 1,
    rejectedHandshakes: 2,
    overloaded: 3,
    refused: { tls_handshake: 4, address_limit: 5 },
    slowReaders: 6,
    expired: 7,
  };
  const peerSecurity = {
    encryption: "tls",
    key: "00112233aabbccdd",
    accepted: ["00112233aabbccdd", "ffeeddccbbaa9988"],
    connections: { incoming: { "00112233aabbccdd": 2 }, outgoing: { "00112233aabbccdd": 1 } },
  } as const;
  const storage = new MemoryEngine().stats();
  const doc = statusDocument({
    node: {
      id: "a",
      actor: "a.0000002a",
      api: "127.0.0.1:801",
      peer: "127.0.0.1:901",
      dataDir: "/data/a",
      weight: 100,
      zone: "z1",
    },
    cluster: { id: "c1", n: 2, r: 1, w: 2, partitions: 4 },
    ring: RING,
    members: MEMBERS,
    liveness: (id) => LIVENESS[id]!,
    partitions: { owned: [0, 2], replicated: [0, 1, 2, 3] },
    handoff,
    strayStores,
    viewSaves: { saved: 5, failed: 2, lastError: "ENOSPC: no space left on device", retrying: true },
    transport,
    peerSecurity,
    storage,
  });
  const m = (id: string, state: string, status: string, zone: string | null, partitions: number) => ({
    id,
    api: `127.0.0.1:80${id.charCodeAt(0) - 96}`,
    peer: `127.0.0.1:90${id.charCodeAt(0) - 96}`,
    state,
    status,
    weight: 100,
    zone,
    incarnation: 2,
    heartbeat: 7,
    partitions,
  });
  assert.equal(
    JSON.stringify(doc),
    JSON.stringify({
      node: {
        id: "a",
        actor: "a.0000002a",
        api: "127.0.0.1:801",
        peer: "127.0.0.1:901",
        dataDir: "/data/a",
        weight: 100,
        zone: "z1",
      },
      cluster: { id: "c1", n: 2, r: 1, w: 2, partitions: 4, ringVersion: 5 },
      members: [
        m("a", "up", "up", "z1", 2),
        m("b", "suspect", "up", null, 2),
        m("c", "down", "leaving", null, 0),
        m("d", "left", "left", null, 0),
      ],
      partitions: { total: 4, owned: [0, 2], replicated: [0, 1, 2, 3] },
      handoff: {
        state: "running",
        ringVersion: 5,
        leaving: false,
        keysScanned: 10,
        keysSent: 4,
        bytesSent: 400,
        storesFailed: 1,
        passesCompleted: 3,
        startedAt: 1000,
        lastCompletedAt: null,
        lastError: null,
        throttleBytesPerSecond: 1 << 20,
        keysPerSecond: 5,
        bytesPerSecond: 200,
        keysTotal: 30,
        etaSeconds: 4,
      },
      strayStores: { forwarded: 2, failed: 1, dropped: 0 },
      viewSaves: { saved: 5, failed: 2, lastError: "ENOSPC: no space left on device", retrying: true },
      hintedHandoff: { backlog: 0, backlogBytes: 0, targets: [], limits: null },
      antiEntropy: {
        enabled: false,
        paused: false,
        rebuild: null,
        recovery: null,
        lastFullSweepAt: null,
        lastFullSweepAgeMs: null,
        exchanges: 0,
        keysRepaired: 0,
        failed: 0,
        lastExchanges: [],
      },
      tombstones: {
        enabled: false,
        purging: false,
        graceMs: null,
        held: null,
        ownedPastGrace: null,
        purged: 0,
        refused: {},
        sweeps: 0,
        lastSweepAt: null,
        lastSweepAgeMs: null,
      },
      transport: {
        protocolErrors: 1,
        rejectedHandshakes: 2,
        overloaded: 3,
        refused: { tls_handshake: 4, address_limit: 5 },
        slowReaders: 6,
        expired: 7,
      },
      peerSecurity,
      storage,
    }),
  );
  // The input's view order is left as it was; the document's counters do not follow later changes.
  assert.deepEqual(
    MEMBERS.map((x) => x.id),
    ["c", "a", "d", "b"],
  );
  handoff.keysSent++;
  strayStores.forwarded++;
  transport.overloaded++;
  transport.refused.tls_handshake++;
  assert.deepEqual(
    [
      doc.handoff.keysSent,
      doc.strayStores.forwarded,
      doc.transport.overloaded,
      doc.transport.refused.tls_handshake,
    ],
    [4, 2, 3, 4],
  );
});
