/**
 * Sloppy quorum and hinted handoff with real processes started through the CLI: writes succeed through
 * stand-ins while a key's primaries are down, the hints the stand-ins keep reach the primaries when
 * they return (also after the holder itself restarted), pr and pw ask for primaries, hints for a node
 * that never returns stay within their byte bound, and `cluster remove` discards them.
 *
 * Which keys a node "owns" (holds a replica of) is computed from GET /ring with the same preference
 * table the servers use, so each check covers exactly the keys a stand-in took for the missing node.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { DATA } from "../../src/replication/keyspaces.js";
import { PreferenceTable, partitionOf } from "../../src/ring/ring.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");

interface HintTarget {
  target: string;
  count: number;
  bytes: number;
  oldestAgeMs: number | null;
  state: string;
  delivered: number;
  deliveredBytes: number;
  failed: number;
  lastError: string | null;
}

interface HintedHandoff {
  backlog: number;
  backlogBytes: number;
  targets: HintTarget[];
  limits: { windowMs: number; maxBytesPerTarget: number; deliveryBytesPerSecond: number } | null;
}

const hintsOf = async (c: TestCluster, id: string): Promise<HintedHandoff> =>
  ((await http(c.url(id, "/status"))).json() as { hintedHandoff: HintedHandoff }).hintedHandoff;

/** Node `id`'s hints for `target` (zeros when it holds none and delivered none). */
async function hintsFor(c: TestCluster, id: string, target: string): Promise<HintTarget> {
  const t = (await hintsOf(c, id)).targets.find((x) => x.target === target);
  return (
    t ?? {
      target,
      count: 0,
      bytes: 0,
      oldestAgeMs: null,
      state: "idle",
      delivered: 0,
      deliveredBytes: 0,
      failed: 0,
      lastError: null,
    }
  );
}

/** The sum of a metric's samples on node `id` whose labels include every one of `labels`. */
async function metric(c: TestCluster, id: string, name: string, labels: Record<string, string> = {}) {
  const text = (await http(c.url(id, "/metrics"))).text;
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[3]);
  }
  return sum;
}

const sumOver = async (ids: string[], f: (id: string) => Promise<number>) =>
  (await Promise.all(ids.map(f))).reduce((a, b) => a + b, 0);

/** Each key's preference list, from node `id`'s GET /ring, with the servers' own table. */
async function preferenceLists(c: TestCluster, id: string): Promise<(key: string) => readonly string[]> {
  const j = (await http(c.url(id, "/ring"))).json() as unknown as {
    partitions: number;
    n: number;
    owners: string[];
    members: { id: string; weight: number; zone: string | null }[];
  };
  const table = new PreferenceTable(
    { partitions: j.partitions, owners: j.owners },
    j.members.map((m) => ({ id: m.id, weight: m.weight, zone: m.zone ?? undefined })),
    j.n,
  );
  return (key) => table.forPartition(partitionOf(Buffer.from(key), j.partitions));
}

/** Starts `ids` (the first creates the cluster, the others join it) and waits until all see all up. */
async function startAll(c: TestCluster, ids: string[], args: string[] = []): Promise<void> {
  for (const id of ids) await c.start(id, id === ids[0] ? { args } : { join: ids[0]!, args });
  for (const id of ids) await c.converged(id, ids);
}

/** Waits until every node of `observers` sees `target` down. */
async function seenDown(c: TestCluster, observers: string[], target: string): Promise<void> {
  for (const id of observers)
    await c.until(
      `${id} to see ${target} down`,
      async () => {
        const s = (await http(c.url(id, "/status"))).json() as { members: { id: string; state: string }[] };
        return s.members.some((m) => m.id === target && m.state === "down");
      },
      20_000,
    );
}

/** Waits until none of `ids` holds a hint any more. */
const drained = (c: TestCluster, ids: string[], ms = 30_000) =>
  c.until(
    `the hints on ${ids.join(",")} to be delivered`,
    async () => (await Promise.all(ids.map((id) => hintsOf(c, id)))).every((h) => h.backlog === 0),
    ms,
  );

const put = (c: TestCluster, via: string, key: string, value: string, q = "") =>
  http(c.url(via, `/kv/${key}${q}`), { method: "PUT", body: value });
const get = (c: TestCluster, via: string, key: string, q = "") => http(c.url(via, `/kv/${key}${q}`));

/** The values each of `keys` has in a stopped node's own storage (its data keyspace, not its hints). */
async function stored(dataDir: string, keys: readonly string[]): Promise<Map<string, string[]>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Map<string, string[]>();
  try {
    for (const k of keys) {
      const raw = await e.get(DATA.encode(Buffer.from(k)));
      out.set(
        k,
        raw === undefined
          ? []
          : decodeSiblings(raw)
              .map((s) => Buffer.from(s.value.data).toString())
              .sort(),
      );
    }
  } finally {
    await e.close();
  }
  return out;
}

describe("a node of four SIGKILLed: w=3 through a stand-in, then the hints reach it", {
  timeout: 120_000,
}, () => {
  const c = new TestCluster();
  after(() => c.shutdown());
  const live = ["a", "b", "c"];

  test("w=3 succeeds with d down; pw=3 and pr=3 get 503 naming them; d back, it holds what was written meanwhile and answers r=1 alone", async () => {
    await startAll(c, ["a", "b", "c", "d"]);
    const listOf = await preferenceLists(c, "a");
    await c.kill("d");
    await seenDown(c, live, "d");

    const keys = Array.from({ length: 120 }, (_, i) => `hh1-${i}`);
    for (const [i, k] of keys.entries())
      assert.equal((await put(c, live[i % 3]!, k, `v-${k}`, "?w=3")).status, 204, `w=3 write of ${k}`);
    const ofD = keys.filter((k) => listOf(k).includes("d"));
    assert.ok(ofD.length > 60, `d replicates ${ofD.length} of ${keys.length} keys (N=3 of 4 nodes)`);

    // Each of d's keys went to the one node outside its list, which keeps it as a hint for d.
    const held = await Promise.all(live.map((id) => hintsFor(c, id, "d")));
    assert.equal(
      held.reduce((n, h) => n + h.count, 0),
      ofD.length,
      "one hint for d per key of d's, held by the stand-ins",
    );
    for (const [i, id] of live.entries()) {
      const h = held[i]!;
      const expected = ofD.filter((k) => !listOf(k).includes(id)).length;
      assert.equal(h.count, expected, `${id} stood in for d on the keys whose list lacks ${id}`);
      assert.equal(h.state, "waiting", `${id}'s delivery waits for d`);
      assert.ok(h.bytes > 0 && h.oldestAgeMs !== null && h.oldestAgeMs >= 0);
    }
    assert.equal(
      await sumOver(live, (id) => metric(c, id, "ringstore_hints_backlog", { target: "d" })),
      ofD.length,
    );
    assert.equal(await sumOver(live, (id) => metric(c, id, "ringstore_hints_stored_total")), ofD.length);
    // cluster status shows the hints the node asked holds, per target.
    const holder = live.find((_, i) => held[i]!.count > 0)!;
    const shown = await run(
      process.execPath,
      [BIN, "cluster", "status", "--node", c.nodes.get(holder)!.api],
      {
        timeout: 30_000,
      },
    );
    assert.match(shown.stdout, new RegExp(`hints held by ${holder} \\(\\d+ for delivery`));
    assert.match(shown.stdout, /\nd +\d+ +[0-9.]+ (B|KiB|MiB) +\d+s +waiting +0 +0/);

    // pw and pr ask for primaries: with one of three down, 3 of them cannot answer.
    const k0 = ofD[0]!;
    const pwKey = "hh1-pw";
    assert.ok(listOf(pwKey).includes("d"));
    const pw = await put(c, "a", pwKey, "pw", "?pw=3&timeout=1000");
    assert.equal(pw.status, 503);
    assert.equal(pw.json().error, "unavailable");
    assert.match(String(pw.json().message), /primary replicas \(pw\)/);
    assert.deepEqual(pw.json().primary, { needed: 3, acked: 2 });
    // pw=2 is met (two primaries are up): rewritten with its context, k0 keeps one version.
    const ctx = (await get(c, "b", k0)).headers.get("x-context")!;
    const pw2 = await http(c.url("b", `/kv/${k0}?pw=2&w=3`), {
      method: "PUT",
      body: `v-${k0}`,
      headers: { "x-context": ctx },
    });
    assert.equal(pw2.status, 204, "pw=2: two primaries are up");
    const pr = await get(c, "c", k0, "?pr=3&timeout=1000");
    assert.equal(pr.status, 503);
    assert.match(String(pr.json().message), /primary replicas \(pr\)/);
    assert.deepEqual(pr.json().primary, { needed: 3, replied: 2 });
    const pr2 = await get(c, "c", k0, "?pr=2");
    assert.equal(pr2.status, 200);
    assert.equal(pr2.text, `v-${k0}`);
    const ofDNow = [...ofD, pwKey]; // the pw write was applied though refused (not rolled back)

    await c.start("d");
    for (const id of [...live, "d"]) await c.converged(id, [...live, "d"]);
    await drained(c, live);
    const delivered = await Promise.all(live.map((id) => hintsFor(c, id, "d")));
    assert.equal(
      delivered.reduce((n, h) => n + h.delivered, 0),
      ofDNow.length,
    );
    assert.equal(
      await sumOver(live, (id) => metric(c, id, "ringstore_hints_delivered_total")),
      ofDNow.length,
    );
    assert.equal(await sumOver(live, (id) => metric(c, id, "ringstore_hints_backlog", { target: "d" })), 0);

    // With the other three stopped, d alone answers r=1 reads of its keys with what it missed.
    for (const id of live) assert.equal(await c.stop(id), 0);
    for (const k of ofD) {
      const r = await get(c, "d", k, "?r=1");
      assert.equal(r.status, 200, `${k} on d`);
      assert.equal(r.text, `v-${k}`);
    }
    assert.equal((await get(c, "d", pwKey, "?r=1")).text, "pw");
  });
});

describe("two of a key's three primaries down (five nodes)", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());
  const live = ["a", "b", "c"];

  test("w=2 writes succeed and r=2 reads return them; the primaries get them back, and pr=2 reads them there", async () => {
    await startAll(c, ["a", "b", "c", "d", "e"]);
    const listOf = await preferenceLists(c, "a");
    // Keys whose lists hold both d and e: one primary (a, b or c) is left up for each.
    const both: string[] = [];
    for (let i = 0; both.length < 41 && i < 10_000; i++) {
      const k = `hh2-${i}`;
      const l = listOf(k);
      if (l.includes("d") && l.includes("e")) both.push(k);
    }
    assert.equal(both.length, 41);
    const pwKey = both.pop()!;
    const keys = both;
    await c.kill("d");
    await c.kill("e");
    await seenDown(c, live, "d");
    await seenDown(c, live, "e");

    for (const [i, k] of keys.entries())
      assert.equal((await put(c, live[i % 3]!, k, `v-${k}`, "?w=2")).status, 204, `w=2 write of ${k}`);
    for (const [i, k] of keys.entries()) {
      const r = await get(c, live[(i + 1) % 3]!, k, "?r=2");
      assert.equal(r.status, 200, `r=2 read of ${k}`);
      assert.equal(r.text, `v-${k}`);
    }
    // Each write's stand-ins keep a hint for d and one for e (two stand-ins per key: w=2 may answer
    // before the second has stored, so wait for the count).
    await c.until("a hint for d and for e per key", async () => {
      const d = await sumOver(live, async (id) => (await hintsFor(c, id, "d")).count);
      const e = await sumOver(live, async (id) => (await hintsFor(c, id, "e")).count);
      return d === keys.length && e === keys.length;
    });
    const r = await get(c, "a", keys[0]!, "?r=2&pr=2&timeout=1000");
    assert.equal(r.status, 503, "one primary is up: pr=2 cannot be met");
    assert.deepEqual(r.json().primary, { needed: 2, replied: 1 });
    const w = await put(c, "b", pwKey, "pw", "?pw=2&timeout=1000");
    assert.equal(w.status, 503);
    assert.match(String(w.json().message), /\(pw\)/);

    await c.start("d");
    await c.start("e");
    for (const id of [...live, "d", "e"]) await c.converged(id, [...live, "d", "e"]);
    await drained(c, live);
    // In d's and e's own storage (before any read, which would repair them).
    for (const id of ["d", "e"]) {
      assert.equal(await c.stop(id), 0);
      const held = await stored(c.nodes.get(id)!.dataDir, [...keys, pwKey]);
      for (const k of keys) assert.deepEqual(held.get(k), [`v-${k}`], `${k} on ${id}`);
      assert.deepEqual(held.get(pwKey), ["pw"], "the write refused for pw was applied, and delivered");
    }
    await c.start("d");
    await c.start("e");
    for (const id of live) await c.converged(id, [...live, "d", "e"], { atAddresses: true });
    for (const [i, k] of keys.entries()) {
      const x = await get(c, live[i % 3]!, k, "?r=2&pr=2");
      assert.equal(x.status, 200, `pr=2 read of ${k}`);
      assert.equal(x.text, `v-${k}`);
    }
  });
});

describe("the holder of hints restarts before delivering them", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("a holder SIGKILLed and restarted while the target is down still holds its hints, and delivers them once the target is back", async () => {
    await startAll(c, ["a", "b", "c", "d"]);
    const listOf = await preferenceLists(c, "a");
    await c.kill("d");
    await seenDown(c, ["a", "b", "c"], "d");
    const keys = Array.from({ length: 120 }, (_, i) => `hh3-${i}`);
    for (const [i, k] of keys.entries())
      assert.equal((await put(c, ["a", "b", "c"][i % 3]!, k, `v-${k}`, "?w=3")).status, 204);
    // a stands in for d on the keys whose list is b, c, d.
    const ofA = keys.filter((k) => listOf(k).includes("d") && !listOf(k).includes("a"));
    assert.ok(ofA.length > 10, `${ofA.length} keys hinted on a`);
    const before = await hintsFor(c, "a", "d");
    assert.equal(before.count, ofA.length);

    // A crash, not a clean stop: the hints were durable before the writes were acknowledged.
    await c.kill("a");
    await c.start("a");
    await c.converged("a", ["b", "c"], { atAddresses: true });
    const afterRestart = await hintsFor(c, "a", "d");
    assert.equal(afterRestart.count, before.count, "the hints survived the crash");
    assert.equal(afterRestart.bytes, before.bytes);
    assert.equal(afterRestart.delivered, 0);

    await c.start("d");
    for (const id of ["a", "b", "c", "d"]) await c.converged(id, ["a", "b", "c", "d"], { atAddresses: true });
    await drained(c, ["a", "b", "c"]);
    assert.equal((await hintsFor(c, "a", "d")).delivered, ofA.length, "a delivered them after its restart");
    assert.equal(await metric(c, "a", "ringstore_hints_delivered_total"), ofA.length);

    // In d's own storage now (no read was made, so no read repair brought them).
    assert.equal(await c.stop("d"), 0);
    const onD = await stored(c.nodes.get("d")!.dataDir, ofA);
    for (const k of ofA) assert.deepEqual(onD.get(k), [`v-${k}`], `${k} on d`);
  });
});

describe("hints for a node that never comes back", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());
  const BOUND = 2048;
  const live = ["a", "b", "c"];

  test("stay within --hint-max-bytes (refusals counted as full); cluster remove discards them, their data on the key's current replicas", async () => {
    await startAll(c, ["a", "b", "c", "d"], ["--hint-max-bytes", String(BOUND)]);
    await c.kill("d");
    await seenDown(c, live, "d");
    const value = (k: string) => `v-${k}-${"x".repeat(80)}`;
    const keys: string[] = [];
    const write = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const k = `hh4-${i}`;
        keys.push(k);
        // w=2: two primaries of every key are up; the stand-in's hint is refused once its bound is reached.
        assert.equal((await put(c, live[i % 3]!, k, value(k), "?w=2")).status, 204, `write of ${k}`);
      }
    };
    const settledCounts = async () => {
      // Writes at w=2 answer before the stand-in has stored (or refused): wait until the counts stop moving.
      let last = "";
      await c.until(
        "the hint counts to settle",
        async () => {
          const now = JSON.stringify(
            await Promise.all(
              live.map(async (id) => {
                const h = await hintsFor(c, id, "d");
                return [
                  h.count,
                  h.bytes,
                  await metric(c, id, "ringstore_hints_dropped_total", { reason: "full" }),
                ];
              }),
            ),
          );
          const same = now === last;
          last = now;
          if (!same) await new Promise((r) => setTimeout(r, 300));
          return same;
        },
        20_000,
      );
    };

    await write(0, 150);
    await settledCounts();
    const full1 = await sumOver(live, (id) =>
      metric(c, id, "ringstore_hints_dropped_total", { reason: "full" }),
    );
    const held1 = await Promise.all(live.map((id) => hintsFor(c, id, "d")));
    assert.ok(full1 > 0, "hints were refused at the bound");
    for (const [i, h] of held1.entries()) {
      assert.ok(h.bytes <= BOUND, `${live[i]} holds ${h.bytes} bytes of hints for d (bound ${BOUND})`);
      assert.ok(h.bytes > BOUND / 2, `${live[i]} filled up to near its bound: ${h.bytes} bytes`);
    }
    const limits = (await hintsOf(c, "a")).limits!;
    assert.equal(limits.maxBytesPerTarget, BOUND);

    // More writes: the backlog stays where it is, and the refusals go on being counted.
    await write(150, 250);
    await settledCounts();
    const held2 = await Promise.all(live.map((id) => hintsFor(c, id, "d")));
    for (const [i, h] of held2.entries())
      assert.ok(h.bytes <= BOUND, `${live[i]} holds ${h.bytes} bytes of hints for d after more writes`);
    const full2 = await sumOver(live, (id) =>
      metric(c, id, "ringstore_hints_dropped_total", { reason: "full" }),
    );
    assert.ok(full2 > full1, `refusals counted: ${full1} then ${full2}`);
    const heldCount = held2.reduce((n, h) => n + h.count, 0);
    assert.ok(heldCount > 0);

    // d is gone for good: removed, its hints go to the keys' current replicas and are discarded.
    const out = await run(
      process.execPath,
      [BIN, "cluster", "remove", "--node", c.nodes.get("a")!.api, "--id", "d"],
      {
        timeout: 30_000,
      },
    );
    assert.match(out.stdout, /member d is removed/);
    await c.until(
      "every hint for d discarded",
      async () => (await Promise.all(live.map((id) => hintsFor(c, id, "d")))).every((h) => h.count === 0),
      30_000,
    );
    assert.equal(await sumOver(live, (id) => metric(c, id, "ringstore_hints_backlog", { target: "d" })), 0);
    assert.equal(
      await sumOver(live, (id) => metric(c, id, "ringstore_hints_dropped_total", { reason: "removed" })),
      heldCount,
      "each hint held for d was sent to the key's current replicas, then dropped as removed",
    );
    await c.until("a ring without d, handed off", async () => {
      const ss = await Promise.all(
        live.map(async (id) => {
          const s = (await http(c.url(id, "/status"))).json() as {
            cluster: { ringVersion: number };
            handoff: { state: string; ringVersion: number };
          };
          const ring = (await http(c.url(id, "/ring"))).json() as { owners: string[] };
          return { s, gone: !ring.owners.includes("d") };
        }),
      );
      const v = ss[0]!.s.cluster.ringVersion;
      return ss.every(
        (x) =>
          x.gone &&
          x.s.cluster.ringVersion === v &&
          x.s.handoff.state === "idle" &&
          x.s.handoff.ringVersion === v,
      );
    });
    // Three members, N=3: every key written is on each of them, in its own storage.
    for (const id of live) assert.equal(await c.stop(id), 0);
    for (const id of live) {
      const held = await stored(c.nodes.get(id)!.dataDir, keys);
      for (const k of keys) assert.deepEqual(held.get(k), [value(k)], `${k} on ${id}`);
    }
  });
});
