/**
 * The key listing's parts (src/listing) over real replicas (Replica on MemoryEngine) and a real ring:
 * the cursor's codec, a replica's scan (live keys only, in key order, within its bounds), the pager
 * (every live key exactly once, whatever the page sizes, with replicas going down mid-listing; what a
 * listing costs in sets read), and the throttle, on virtual time.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  DONE,
  decodeCursor,
  encodeCursor,
  InvalidCursorError,
  type ListingPosition,
  PHASE,
  startPosition,
  TODO,
} from "../../src/listing/cursor.js";
import { type ListingDeps, listPage, type PageLimits } from "../../src/listing/pager.js";
import {
  bitmapOf,
  listReplicaKeys,
  ScanOverloadedError,
  ScanThrottle,
} from "../../src/listing/replica-scan.js";
import { Replica } from "../../src/replication/replica.js";
import { claim, PreferenceTable, partitionOf, type RingMember } from "../../src/ring/ring.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { compareBytes } from "../../src/storage/bytes.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { decodeFrame, encodeFrame, type RequestOf } from "../../src/transport/messages.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";

const SECRET = Buffer.alloc(32, 7);
const value = (v: string, deleted = false) => ({
  data: Buffer.from(deleted ? "" : v),
  contentType: "text/plain",
  deleted,
  writtenAtMs: 0,
});
const now = async () => undefined;
const hex = (k: Uint8Array) => Buffer.from(k).toString("hex");

describe("the cursor", () => {
  test("round-trips any position; runs keep it short", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 2048 })
          .chain((q) =>
            fc.tuple(
              fc.constant(q),
              fc.uint8Array({ minLength: q, maxLength: q, max: 2 }),
              fc.option(fc.uint8Array({ minLength: 1, maxLength: 300 }), { nil: undefined }),
            ),
          ),
        ([q, states, key]) => {
          const after = states.includes(PHASE) ? key : undefined;
          const pos: ListingPosition = { partitions: q, states, after };
          const back = decodeCursor(encodeCursor(pos, SECRET), SECRET, q);
          assert.deepEqual(back.states, states);
          assert.deepEqual(back.after === undefined ? undefined : hex(back.after), after && hex(after));
        },
      ),
    );
    const first = encodeCursor({ ...startPosition(1024), states: new Uint8Array(1024).fill(PHASE) }, SECRET);
    assert.ok(first.length < 40, `a one-phase cursor is short (${first.length} chars)`);
  });

  test("a cursor edited, of another cluster, another ring size, or garbage is refused", () => {
    const pos: ListingPosition = {
      partitions: 64,
      states: new Uint8Array(64).fill(DONE, 0, 10).fill(PHASE, 10, 40),
      after: Buffer.from("k"),
    };
    const t = encodeCursor(pos, SECRET);
    const bad = (token: string, secret = SECRET, q = 64) =>
      assert.throws(() => decodeCursor(token, secret, q), InvalidCursorError, token);
    bad(t, Buffer.alloc(32, 8));
    bad(t, SECRET, 128);
    const raw = Buffer.from(t, "base64url");
    for (let i = 0; i < raw.length; i++) {
      const x = Buffer.from(raw);
      x[i]! ^= 1;
      bad(x.toString("base64url"));
    }
    for (const g of ["", "!!", "a", `${t}A`, "A".repeat(200_000), Buffer.alloc(40).toString("base64url")])
      bad(g);
    assert.deepEqual(decodeCursor(t, SECRET, 64).states, pos.states);
  });
});

/** A replica on a memory engine, its sets written through the real versioning. */
async function replicaWith(keys: Iterable<[string, "live" | "deleted" | "both"]>): Promise<Replica> {
  const r = new Replica(new MemoryEngine(), "n1.00000001", 64);
  for (const [k, state] of keys) {
    const key = Buffer.from(k);
    if (state === "live" || state === "both") await r.coordinate(key, EMPTY_VECTOR, value(`v-${k}`));
    if (state === "deleted") {
      const w = await r.coordinate(key, EMPTY_VECTOR, value(k));
      assert.equal(w.kind, "ok");
      // The write's own dot (the node's counter is node-wide: not 1 for every key).
      const dot = w.kind === "ok" ? w.written.dot : { actor: "", counter: 0 };
      const ctx = new Map([[dot.actor, dot.counter]]);
      await r.coordinate(key, ctx, value("", true));
    }
    // A delete concurrent with a live write: a live sibling stays.
    if (state === "both") await r.coordinate(key, EMPTY_VECTOR, value("", true));
  }
  return r;
}

const listReq = (q: number, ps: number[], after: string | null, maxKeys = 1000, maxBytes = 1 << 20) =>
  ({
    kind: "list_keys",
    partitions: q,
    include: bitmapOf(ps, q),
    after: after === null ? null : Buffer.from(after),
    maxKeys,
    maxBytes,
  }) as const;

describe("a replica's scan", () => {
  test("answers the live keys of the partitions asked for, in key order, after the key given", async () => {
    const entries: [string, "live" | "deleted" | "both"][] = [];
    for (let i = 0; i < 300; i++)
      entries.push([`k${i}`, i % 7 === 0 ? "deleted" : i % 11 === 0 ? "both" : "live"]);
    const r = await replicaWith(entries);
    const q = 8;
    const ps = [1, 4, 6];
    const live = entries
      .filter(([k, s]) => s !== "deleted" && ps.includes(partitionOf(Buffer.from(k), q)))
      .map(([k]) => k)
      .sort((a, b) => compareBytes(Buffer.from(a), Buffer.from(b)));
    const all = await listReplicaKeys(listReq(q, ps, null), r, partitionOf, now);
    assert.deepEqual(all.keys.map(String), live);
    assert.equal(all.done, true);
    assert.equal(all.scanned, 300);
    const mid = live[10]!;
    const rest = await listReplicaKeys(listReq(q, ps, mid), r, partitionOf, now);
    assert.deepEqual(rest.keys.map(String), live.slice(11));
    // Bounds: keys, bytes, sets looked at; each answer says where to resume, and resuming loses nothing.
    for (const [maxKeys, maxBytes, maxScanned] of [
      [7, 1 << 20, 65536],
      [1000, 20, 65536],
      [1000, 1 << 20, 40],
      [1, 1, 1],
    ] as const) {
      const got: string[] = [];
      let after: string | null = null;
      for (let i = 0; i < 1000; i++) {
        const a = await listReplicaKeys(listReq(q, ps, after, maxKeys, maxBytes), r, partitionOf, now, {
          pageKeys: 16,
          pageBytes: 1 << 20,
          maxScanned,
        });
        assert.ok(a.keys.length <= maxKeys && a.scanned <= maxScanned + 16);
        got.push(...a.keys.map(String));
        if (a.done) break;
        after = String(a.last);
      }
      assert.deepEqual(got, live, `bounds ${maxKeys}/${maxBytes}/${maxScanned}`);
    }
  });

  test("the request and its answer survive the wire; garbage is refused", () => {
    const req = listReq(1024, [0, 3, 1023], "after");
    const f = decodeFrame(encodeFrame({ kind: "req", id: 1, deadlineMs: 5, body: req }));
    assert.deepEqual(f, { kind: "req", id: 1, deadlineMs: 5, body: req });
    const bad: unknown[] = [
      { ...req, include: Buffer.alloc(3) },
      { ...req, partitions: 0 },
      { ...req, maxKeys: 0 },
      { ...req, maxKeys: 10_001 },
      { ...req, after: "text" },
    ];
    for (const body of bad)
      assert.throws(() => decodeFrame(encodeFrame({ kind: "req", id: 1, deadlineMs: 5, body } as never)));
    const ans = { kind: "key_list", keys: [Buffer.from("a")], last: null, done: false, scanned: 1 };
    assert.throws(() => decodeFrame(encodeFrame({ kind: "ans", id: 1, body: ans } as never)), /no last key/);
  });
});

// ------------------------------------------------------------------ the pager over a cluster of replicas

const Q = 64;
const N = 3;

interface Cluster {
  readonly replicas: Map<string, Replica>;
  readonly table: PreferenceTable;
  readonly live: Set<string>;
  /** Sets looked at by every scan, all nodes together. */
  scanned: number;
}

/** `nodes` replicas, each holding the keys of its partitions; every key written to all N. */
async function cluster(nodes: string[], keys: [string, "live" | "deleted" | "both"][]): Promise<Cluster> {
  const members: RingMember[] = nodes.map((id) => ({ id, weight: 1 }));
  const ring = claim(undefined, members, Q, N);
  const table = new PreferenceTable(ring, members, N);
  const replicas = new Map<string, Replica>();
  for (const id of nodes)
    replicas.set(id, await replicaWith(keys.filter(([k]) => table.forKey(Buffer.from(k)).includes(id))));
  return {
    replicas,
    table,
    live: new Set(keys.filter(([, s]) => s !== "deleted").map(([k]) => k)),
    scanned: 0,
  };
}

function deps(c: Cluster, self: string, down: Set<string>, onAsk?: (id: string) => void): ListingDeps {
  return {
    selfId: self,
    ring: () => ({ partitions: Q, replicasOf: (p) => c.table.forPartition(p) }),
    usable: (id) => !down.has(id),
    ask: async (id, req: RequestOf<"list_keys">) => {
      onAsk?.(id);
      if (down.has(id)) throw new Error(`${id} is down`);
      const a = await listReplicaKeys(req, c.replicas.get(id)!, partitionOf, now);
      c.scanned += a.scanned;
      return a;
    },
    clock: { now: () => 0 },
  };
}

const limits = (keys: number): PageLimits => ({ keys, bytes: 1 << 20, timeMs: 60_000, maxAsks: 64 });

/** Lists everything, page after page; `between` runs before each page. */
async function listAll(
  d: ListingDeps,
  pageKeys: () => number,
  between?: (page: number) => void,
): Promise<{ keys: string[]; pages: number; phasesSorted: boolean }> {
  const keys: string[] = [];
  let pos: ListingPosition | null = startPosition(Q);
  let pages = 0;
  for (; pos !== null; pages++) {
    between?.(pages);
    const out = await listPage(d, decodeCursor(encodeCursor(pos, SECRET), SECRET, Q), limits(pageKeys()));
    assert.equal(out.kind, "page", JSON.stringify(out));
    if (out.kind !== "page") break;
    keys.push(...out.keys.map(String));
    pos = out.next;
    assert.ok(pages < 100_000);
  }
  return { keys, pages, phasesSorted: true };
}

function keySet(n: number): [string, "live" | "deleted" | "both"][] {
  return Array.from({ length: n }, (_, i) => [
    `key-${i}`,
    i % 13 === 0 ? "deleted" : i % 17 === 0 ? "both" : "live",
  ]);
}

describe("the pager", () => {
  test("lists every live key exactly once, whatever the page sizes; one phase on N nodes", async () => {
    const c = await cluster(["a", "b", "c"], keySet(2000));
    let asked = 0;
    const d = deps(c, "b", new Set(), () => asked++);
    const r = await listAll(d, () => 97);
    assert.equal(r.keys.length, c.live.size);
    assert.deepEqual(new Set(r.keys), c.live);
    // One phase: every partition from b itself, in key order, in one pass over its keys.
    assert.deepEqual(
      [...r.keys].sort((x, y) => compareBytes(Buffer.from(x), Buffer.from(y))),
      r.keys,
    );
    assert.equal(c.scanned, 2000);
    assert.equal(asked, r.pages - 1 + 1);
  });

  test("random page sizes, cluster sizes and nodes going down mid-listing: each live key once", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 7 }),
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 0, max: 30 }),
        fc.integer(),
        async (nodes, pageKeys, downAt, seed) => {
          const ids = Array.from({ length: nodes }, (_, i) => `n${i}`);
          const c = await cluster(ids, keySet(600));
          const down = new Set<string>();
          // One node goes down at page `downAt` (N=3: every partition keeps a live replica).
          const victim = ids[Math.abs(seed) % nodes]!;
          const self =
            ids[Math.abs(seed >> 3) % nodes] === victim
              ? ids[(Math.abs(seed) + 1) % nodes]!
              : ids[Math.abs(seed >> 3) % nodes]!;
          const r = await listAll(
            deps(c, self, down),
            () => pageKeys,
            (p) => {
              if (p === downAt) down.add(victim);
            },
          );
          assert.equal(r.keys.length, c.live.size, "no key twice");
          assert.deepEqual(new Set(r.keys), c.live);
        },
      ),
      { numRuns: 40 },
    );
  });

  test("a replica that fails its request mid-page: the phase is split between the others", async () => {
    const c = await cluster(["a", "b", "c", "d", "e"], keySet(1500));
    const down = new Set<string>();
    const failing = new Set<string>();
    const d = deps(c, "a", down);
    const ask = d.ask;
    // c answers its first request, then fails without being seen down.
    let cAsked = 0;
    const flaky: ListingDeps = {
      ...d,
      ask: (id, req) => {
        if (id === "c" && ++cAsked > 1) failing.add("c");
        if (failing.has(id)) return Promise.reject(new Error("connection reset"));
        return ask(id, req);
      },
    };
    const r = await listAll(flaky, () => 50);
    assert.equal(r.keys.length, c.live.size);
    assert.deepEqual(new Set(r.keys), c.live);
    assert.ok(cAsked > 1, "c was asked again after it failed (its partitions went elsewhere)");
  });

  test("costs about one pass over each phase's replica: phases and sets read on larger clusters", async () => {
    for (const nodes of [3, 6, 12]) {
      const ids = Array.from({ length: nodes }, (_, i) => `n${String(i).padStart(2, "0")}`);
      const c = await cluster(ids, keySet(3000));
      const first = await listPage(deps(c, ids[0]!, new Set()), startPosition(Q), limits(1));
      assert.equal(first.kind, "page");
      c.scanned = 0;
      await listAll(deps(c, ids[0]!, new Set()), () => 500);
      const perKey = c.scanned / 3000;
      // Each phase reads its replica's N/nodes share of the keys once; greedy phases number about
      // nodes/N .. nodes/2 (on 12 nodes, partitions left for the last phases are few).
      assert.ok(perKey >= 1 && perKey <= 2.5, `${nodes} nodes: ${perKey.toFixed(2)} sets read per key`);
    }
  });

  test("no replica of a partition left: unavailable, naming them; the same cursor works once one is back", async () => {
    const c = await cluster(["a", "b", "c", "d"], keySet(400));
    const down = new Set(["b", "c", "d"]);
    const d = deps(c, "a", down);
    const out = await listPage(d, startPosition(Q), limits(10_000));
    assert.equal(out.kind, "page");
    if (out.kind !== "page") return;
    // a's own partitions come first (its phase), then nothing can be read without b, c or d.
    const next = out.next!;
    const again = await listPage(d, next, limits(10_000));
    assert.equal(again.kind, "unavailable");
    assert.ok(again.kind === "unavailable" && again.partitions.length > 0);
    down.clear();
    const rest = await listAll(d, () => 10_000);
    assert.ok(rest.keys.length > 0);
    // Picking up the same cursor after recovery lists the rest, nothing twice.
    const fromNext: string[] = [...out.keys.map(String)];
    let pos: ListingPosition | null = next;
    while (pos !== null) {
      const p = await listPage(d, pos, limits(10_000));
      assert.equal(p.kind, "page");
      if (p.kind !== "page") break;
      fromNext.push(...p.keys.map(String));
      pos = p.next;
    }
    assert.equal(fromNext.length, c.live.size);
    assert.deepEqual(new Set(fromNext), c.live);
  });

  test("positions only move forward: states go TODO -> PHASE -> DONE", async () => {
    const c = await cluster(["a", "b", "c", "d", "e", "f"], keySet(500));
    let pos: ListingPosition | null = startPosition(Q);
    let prev = startPosition(Q).states;
    while (pos !== null) {
      const out = await listPage(deps(c, "c", new Set()), pos, limits(33));
      assert.equal(out.kind, "page");
      if (out.kind !== "page") break;
      pos = out.next;
      const states = pos?.states ?? new Uint8Array(Q).fill(DONE);
      for (let p = 0; p < Q; p++) assert.ok(states[p]! >= prev[p]!, `partition ${p} went back`);
      prev = states;
    }
    assert.ok(prev.every((s) => s === DONE) && !prev.includes(TODO));
  });
});

describe("the scan throttle", () => {
  test("one scan at a time, a bounded queue, and a rate", async () => {
    const s = new VirtualScheduler();
    const t = new ScanThrottle(s, s, 1000, 2);
    const order: string[] = [];
    const scan = (name: string, pages: number) =>
      t.run(async (pace) => {
        order.push(`${name}+`);
        for (let i = 0; i < pages; i++) await pace(100);
        order.push(`${name}-`);
      });
    const a = scan("a", 5);
    const b = scan("b", 1);
    const c = scan("c", 1);
    await assert.rejects(scan("d", 1), ScanOverloadedError);
    const t0 = s.now();
    await s.runUntilSettled(Promise.all([a, b, c]), 60_000);
    assert.deepEqual(order, ["a+", "a-", "b+", "b-", "c+", "c-"]);
    // 700 sets at 1000/s with a bucket of 100 to start: about 0.6 s of virtual time.
    const took = s.now() - t0;
    assert.ok(took >= 550 && took <= 700, `took ${took} ms`);
  });
});
