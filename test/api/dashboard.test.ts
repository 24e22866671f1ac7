/**
 * The dashboard's parts on the node's side: the request history (percentiles within a bucket's 9%, a
 * bounded ring buffer), the event log (bounded, read by sequence number), the Dashboard's rates and
 * events from the node's facts, and the routes: the page and its assets (gzip, CSP), /ui/state's
 * parameters, and a browser's Basic challenge when the API requires tokens (the token as password).
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import { describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { Dashboard, type DashboardSources } from "../../src/api/dashboard.js";
import { RequestHistory } from "../../src/api/request-history.js";
import { newToken, TokenSet } from "../../src/api/tokens.js";
import type { StatusDocument } from "../../src/api/views.js";
import { EventLog } from "../../src/core/event-log.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { testMetrics, withServer } from "./api-support.js";

describe("the request history", () => {
  test("p50 and p99 per interval within 9%, errors counted, the buffer bounded", () => {
    const h = new RequestHistory(5);
    assert.equal(h.sample(0), undefined, "the first call starts the first interval");
    for (let i = 1; i <= 1000; i++) h.observe("get", i % 100 === 0 ? 503 : 200, i / 1e6); // 1 us .. 1 ms
    h.observe("other", 200, 1);
    const s = h.sample(2000)!;
    assert.equal(s.ops.get.count, 1000);
    assert.equal(s.ops.get.errors, 10);
    assert.ok(Math.abs(s.ops.get.p50! - 0.5) / 0.5 < 0.09, `p50 ${s.ops.get.p50}`);
    assert.ok(Math.abs(s.ops.get.p99! - 0.99) / 0.99 < 0.09, `p99 ${s.ops.get.p99}`);
    assert.equal(s.ops.put.count, 0);
    assert.equal(s.ops.put.p50, null);
    for (let t = 4000; t <= 20_000; t += 2000) h.sample(t);
    assert.equal(h.samples().length, 5);
    assert.deepEqual(
      h.samples(16_000).map((x) => x.at),
      [18_000, 20_000],
    );
    assert.equal(h.samples()[0]!.ops.get.count, 0, "each interval starts from nothing");
  });
});

describe("the event log", () => {
  test("keeps the newest events, read after a sequence number", () => {
    const log = new EventLog(3);
    for (let i = 1; i <= 5; i++) log.record({ at: i, kind: "note", detail: `e${i}` });
    assert.deepEqual(
      log.since().map((e) => [e.seq, e.detail]),
      [
        [3, "e3"],
        [4, "e4"],
        [5, "e5"],
      ],
    );
    assert.deepEqual(
      log.since(4).map((e) => e.seq),
      [5],
    );
    assert.equal(log.last, 5);
  });
});

/** A node's facts, as the test sets them. */
function facts() {
  const engine = new MemoryEngine({ now: () => 4000 });
  const f = {
    engine,
    members: [
      { id: "a", state: "up" },
      { id: "b", state: "up" },
    ],
    handoffScanned: 0,
    delivered: 0,
    held: 100,
    owners: ["a", "b", "a", "b"],
  };
  const status = async (): Promise<StatusDocument> =>
    ({
      node: { id: "a", actor: "a.1", api: "x:1", peer: "x:2", dataDir: "/d", weight: 1, zone: null },
      cluster: { id: "c", n: 2, r: 1, w: 1, partitions: 4, ringVersion: 3 },
      members: f.members.map((m) => ({
        ...m,
        api: "",
        peer: "",
        status: "up",
        weight: 1,
        zone: null,
        incarnation: 0,
        heartbeat: 0,
        partitions: 2,
      })),
      partitions: { total: 4, owned: [0, 2], replicated: [0, 1, 2, 3] },
      handoff: {
        state: "running",
        ringVersion: 3,
        leaving: false,
        keysScanned: f.handoffScanned,
        keysSent: 0,
        storesFailed: 0,
        passesCompleted: 0,
        startedAt: 1,
        lastCompletedAt: null,
        lastError: null,
        throttleBytesPerSecond: 20 * 1024,
      },
      hintedHandoff: {
        backlog: f.held,
        backlogBytes: 1000,
        targets: [
          {
            target: "b",
            count: f.held,
            bytes: 1000,
            oldestAgeMs: 5,
            state: "delivering",
            delivered: f.delivered,
            deliveredBytes: 0,
            failed: 0,
            lastError: null,
            lastDeliveredAt: null,
            window: 1,
          },
        ],
        limits: null,
      },
      antiEntropy: {
        enabled: true,
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
      storage: engine.stats(),
    }) as unknown as StatusDocument;
  return Object.assign(f, { status });
}

function sourcesOf(f: ReturnType<typeof facts>, clock: { t: number }): DashboardSources {
  return {
    now: () => clock.t,
    status: f.status,
    owners: () => f.owners,
    replicas: () =>
      new Map([
        ["a", 4],
        ["b", 4],
      ]),
    handoffPending: () => [1, 3],
    hintPartitions: async () => ({ partitions: [3], complete: true }),
    antiEntropyPending: () => [],
    census: () => ({ live: 1000, tombstones: 20, at: 0 }),
  };
}

describe("the dashboard's document", () => {
  test("rates and time left from two looks; member changes and ring moves become events", async () => {
    const f = facts();
    const clock = { t: 10_000 };
    const m = testMetrics();
    const d = new Dashboard(m, sourcesOf(f, clock), new EventLog());
    m.history.sample(clock.t);
    await d.tick();
    clock.t += 2000;
    f.handoffScanned = 200;
    f.delivered = 40;
    f.held = 60;
    f.members[1]!.state = "down";
    f.owners = ["a", "a", "a", "b"];
    m.observeRequest("get", 200, 0.003);
    await d.tick();
    const doc = await d.document(0, 0);
    assert.equal(doc.progress.handoff.rate, 100);
    assert.equal(doc.progress.handoff.total, 1020);
    assert.equal(doc.progress.handoff.etaSeconds, 8);
    assert.equal(doc.progress.handoff.throttleBytesPerSecond, 20 * 1024, "the throttle, from /status");
    const hints = doc.progress.hints[0]!;
    assert.deepEqual([hints.rate, hints.etaSeconds, hints.done, hints.total], [20, 3, 40, 100]);
    assert.deepEqual(doc.pending, { handoff: [1, 3], hints: [3], hintsComplete: true, antiEntropy: [] });
    assert.deepEqual(doc.owners, [0, 0, 0, 1]);
    assert.deepEqual(
      doc.events.map((e) => e.kind),
      ["note", "state", "ring"],
    );
    assert.equal(doc.events[1]!.detail, "b: up -> down");
    // One interval closed (the second look's): it holds the get.
    assert.equal(doc.requests.samples.length, 1);
    assert.equal(doc.requests.samples[0]!.ops[0]![0], 1);
    assert.ok(doc.requests.samples[0]!.ops[0]![2]! > 2.7 && doc.requests.samples[0]!.ops[0]![2]! < 3.3);
    // A full compaction asked for shows, with when it ended.
    assert.equal(doc.storage.fullCompaction, null, "none asked for yet");
    await f.engine.compactAll().done;
    const compacted = (await d.document(0, 0)).storage.fullCompaction;
    assert.equal(compacted?.state, "done");
    assert.equal(compacted?.ageMs, clock.t - 4000);
    // Only what is new after `since` and `events`.
    const later = await d.document(doc.requests.samples[0]!.at, doc.events[2]!.seq);
    assert.deepEqual([later.requests.samples.length, later.events.length], [0, 0]);
  });
});

describe("the dashboard's routes", () => {
  const f = facts();
  const clock = { t: 0 };
  const read = newToken("read", "", 0);
  const dashboard = new Dashboard(testMetrics(), sourcesOf(f, clock), new EventLog());

  test("the page and its assets, gzipped on request, with a CSP; /ui/state checks its parameters", async () => {
    await withServer({ deps: { dashboard } }, async (port) => {
      const base = `http://127.0.0.1:${port}`;
      const page = await fetch(`${base}/ui`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type")!, /text\/html/);
      assert.match(page.headers.get("content-security-policy")!, /default-src 'self'/);
      assert.match(await page.text(), /<script src="\/ui\/uPlot.iife.min.js">/);
      const js = await fetch(`${base}/ui/app.js`);
      assert.match(js.headers.get("content-type")!, /javascript/);
      // fetch asks for gzip and inflates it; a raw request shows the encoding.
      const raw = await new Promise<{ enc: string | undefined; body: Buffer }>((resolve, reject) => {
        http
          .get(`${base}/ui/uPlot.iife.min.js`, { headers: { "accept-encoding": "gzip" } }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () =>
              resolve({ enc: res.headers["content-encoding"], body: Buffer.concat(chunks) }),
            );
          })
          .on("error", reject);
      });
      assert.equal(raw.enc, "gzip");
      assert.match(gunzipSync(raw.body).toString("utf8", 0, 200), /uPlot/);
      const state = await fetch(`${base}/ui/state`);
      assert.equal(state.status, 200);
      assert.equal(((await state.json()) as { cluster: { partitions: number } }).cluster.partitions, 4);
      assert.equal((await fetch(`${base}/ui/state?since=x`)).status, 400);
      assert.equal((await fetch(`${base}/ui/nothing`)).status, 404);
    });
  });

  test("with tokens: a browser gets a Basic challenge; the token as password opens it", async () => {
    await withServer({ deps: { dashboard }, tokens: new TokenSet([read.entry]) }, async (port) => {
      const base = `http://127.0.0.1:${port}`;
      const anon = await fetch(`${base}/ui`);
      assert.equal(anon.status, 401);
      assert.match(anon.headers.get("www-authenticate")!, /^Basic realm="ringstore"/);
      const basic = `Basic ${Buffer.from(`me:${read.token}`).toString("base64")}`;
      assert.equal((await fetch(`${base}/ui`, { headers: { authorization: basic } })).status, 200);
      assert.equal((await fetch(`${base}/ui/state`, { headers: { authorization: basic } })).status, 200);
      const bearer = { authorization: `Bearer ${read.token}` };
      assert.equal((await fetch(`${base}/ui/state`, { headers: bearer })).status, 200);
      const wrong = `Basic ${Buffer.from("me:rs_000000000000_nope").toString("base64")}`;
      assert.equal((await fetch(`${base}/ui`, { headers: { authorization: wrong } })).status, 401);
      // Other routes keep their Bearer challenge.
      assert.match((await fetch(`${base}/status`)).headers.get("www-authenticate")!, /^Bearer/);
    });
  });
});
