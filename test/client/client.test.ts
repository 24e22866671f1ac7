/**
 * The client library (`ringstore/client`) against real node processes started through the built CLI:
 * get/put/delete with contexts and siblings, `update` (read-merge-write) under concurrency, and
 * partition-aware routing, checked against where the servers actually keep each key.
 *
 * API ports are chosen up front (and passed as `--api`): a node started with API port 0 gossips "host:0"
 * as its API address (the port it bound never reaches its member entry), which partition-aware routing
 * cannot use; the client then skips such members and falls back to its seeds.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";
import { RingstoreClient, RingstoreError } from "../../src/client/client.js";
import { TestCluster } from "../cluster/harness.js";

async function freePorts(k: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: k },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const s = net.createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/** Requests a node has answered for one operation (its Prometheus counter, summed over statuses). */
async function requestCount(api: string, op: string): Promise<number> {
  const text = await (await fetch(`http://${api}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("ringstore_requests_total{") || !line.includes(`op="${op}"`)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function statusOf(api: string): Promise<{ partitions: { replicated: number[]; owned: number[] } }> {
  return (await (await fetch(`http://${api}/status`)).json()) as {
    partitions: { replicated: number[]; owned: number[] };
  };
}

const text = (b: Buffer) => b.toString("utf8");

/** The merge function of a shopping cart: the union of every sibling's items, plus `add`. */
const cartUnion =
  (...add: string[]) =>
  (values: Buffer[]): string => {
    const items = new Set<string>(add);
    for (const v of values) for (const i of JSON.parse(text(v)) as string[]) items.add(i);
    return JSON.stringify([...items].sort());
  };

async function startCluster(c: TestCluster, ids: string[], firstArgs: string[], args: string[] = []) {
  const ports = await freePorts(ids.length);
  const apiArg = (i: number) => ["--api", `127.0.0.1:${ports[i]}`];
  await c.start(ids[0]!, { args: [...apiArg(0), ...firstArgs, ...args] });
  await Promise.all(
    ids.slice(1).map((id, i) => c.start(id, { join: ids[0]!, args: [...apiArg(i + 1), ...args] })),
  );
  for (const id of ids) await c.converged(id, ids);
  // The ring has given every node its partitions, and every node has the same ring.
  await c.until("every node to have the same ring with every member in it", async () => {
    const rings = await Promise.all(
      ids.map(async (id) => (await (await fetch(c.url(id, "/ring"))).json()) as { owners: string[] }),
    );
    const first = JSON.stringify(rings[0]!.owners);
    return (
      rings.every((r) => JSON.stringify(r.owners) === first) && new Set(rings[0]!.owners).size === ids.length
    );
  });
}

describe("the client against a three-node cluster (N=3, R=2, W=2)", { timeout: 60_000 }, () => {
  const c = new TestCluster();
  const ids = ["a", "b", "c"];
  const clients: RingstoreClient[] = [];
  const client = (nodes: string | string[], o: ConstructorParameters<typeof RingstoreClient>[1] = {}) => {
    const x = new RingstoreClient(nodes, o);
    clients.push(x);
    return x;
  };
  const api = (id: string) => c.nodes.get(id)!.api;

  before(() => startCluster(c, ids, [], ["--max-siblings", "4"]));
  after(async () => {
    await Promise.all(clients.map((x) => x.close()));
    await c.shutdown();
  });

  test("get, put and delete with contexts, siblings, tombstones and errors", async () => {
    const db = client(api("a"));
    const viaB = client(`http://${api("b")}`);
    const viaC = client(api("c"));
    assert.deepEqual(await db.get("nothing-here"), { kind: "not_found", context: undefined });

    await db.put("greeting", "hello", { contentType: "text/plain" });
    const r1 = await viaB.get("greeting");
    assert.equal(r1.kind, "value");
    if (r1.kind !== "value") return;
    assert.equal(text(r1.value), "hello");
    assert.equal(r1.contentType, "text/plain");

    // Two writes carrying the same context, through two coordinators: both survive as siblings.
    await viaB.put("greeting", "hi from b", { context: r1.context });
    await viaC.put("greeting", "hi from c", { context: r1.context });
    const r2 = await db.get("greeting", { r: "all" });
    assert.equal(r2.kind, "siblings");
    if (r2.kind !== "siblings") return;
    assert.deepEqual(r2.siblings.map((s) => text(s.value)).sort(), ["hi from b", "hi from c"]);
    assert.ok(r2.siblings.every((s) => !s.deleted));

    // The merged context supersedes both, wherever the next read goes.
    await db.put("greeting", "merged", { context: r2.context, w: "all" });
    for (const x of [db, viaB, viaC]) {
      const r = await x.get("greeting", { r: 1 });
      assert.equal(r.kind === "value" && text(r.value), "merged");
    }

    // Delete with the context: 404 that still carries a context, which a following put supersedes.
    const r3 = await db.get("greeting");
    await db.delete("greeting", { context: r3.context, w: "all" });
    const r4 = await viaC.get("greeting");
    assert.equal(r4.kind, "not_found");
    assert.ok(r4.context !== undefined, "a deleted key still has a context");
    await db.put("greeting", "again", { context: r4.context });
    const r5 = await viaB.get("greeting", { r: "all" });
    assert.equal(r5.kind === "value" && text(r5.value), "again", "the tombstone was superseded");

    // A delete concurrent with a write shows as a deleted sibling.
    await viaB.delete("greeting", { context: r5.context });
    await viaC.put("greeting", "racing", { context: r5.context });
    const r6 = await db.get("greeting", { r: "all" });
    assert.equal(r6.kind, "siblings");
    if (r6.kind !== "siblings") return;
    assert.deepEqual(r6.siblings.map((s) => (s.deleted ? "<deleted>" : text(s.value))).sort(), [
      "<deleted>",
      "racing",
    ]);

    // Server errors arrive as RingstoreErrors with the server's code.
    const code = (status: number, c: string) => (e: unknown) =>
      e instanceof RingstoreError && e.status === status && e.code === c;
    await assert.rejects(db.put("greeting", "x", { context: "not-a-context" }), code(400, "bad_context"));
    await assert.rejects(db.put("other", "x", { context: r6.context }), code(400, "bad_context"));
    await assert.rejects(db.get("greeting", { r: 5 }), code(400, "bad_parameter"));
    await assert.rejects(db.get(""), code(400, "bad_key"));
    await assert.rejects(db.get("k".repeat(1025)), code(400, "bad_key"));

    // Keys are bytes: binary and non-ASCII keys round-trip.
    const bin = Uint8Array.from([0, 0xff, 0x2f, 0x25, 0x0a, 0x80]);
    await db.put(bin, Uint8Array.from([1, 2, 3]));
    const rb = await viaC.get(bin);
    assert.deepEqual(rb.kind === "value" && [...rb.value], [1, 2, 3]);
    await viaB.put("корзина/🛒 ?&#", "utf8 key");
    const ru = await db.get("корзина/🛒 ?&#");
    assert.equal(ru.kind === "value" && text(ru.value), "utf8 key");
  });

  test("update: fn sees [] for a missing key, the current value, and undefined deletes", async () => {
    const db = client([api("b"), api("c")]);
    const seen: string[][] = [];
    const r0 = await db.update("u", (values) => {
      seen.push(values.map(text));
      return undefined;
    });
    assert.deepEqual(r0, { context: undefined, value: undefined, deleted: true, attempts: 1 });

    const r1 = await db.update(
      "u",
      (values) => {
        seen.push(values.map(text));
        return "first";
      },
      { contentType: "text/plain" },
    );
    assert.equal(r1.deleted, false);
    assert.equal(text(r1.value!), "first");
    const r2 = await db.update("u", (values, info) => {
      seen.push(values.map(text));
      assert.ok(info.context !== undefined);
      return `${text(values[0]!)}+second`;
    });
    const g = await db.get("u");
    assert.equal(g.kind === "value" && `${text(g.value)} ${g.contentType}`, "first+second text/plain");
    assert.equal(typeof r2.context, "string");

    const r3 = await db.update("u", (values) => {
      seen.push(values.map(text));
      return undefined;
    });
    assert.equal(r3.deleted, true);
    const gone = await db.get("u", { r: "all" });
    assert.equal(gone.kind, "not_found");
    await db.update("u", (values) => {
      seen.push(values.map(text));
      return "reborn";
    });
    const back = await db.get("u", { r: "all" });
    assert.equal(back.kind === "value" && text(back.value), "reborn", "no sibling of the tombstone is left");
    assert.deepEqual(seen, [[], [], ["first"], ["first+second"], []]);
  });

  test("update resolves a key at the sibling limit, where a blind put gets 409 too_many_siblings", async () => {
    const db = client(api("a"));
    for (let i = 0; i < 4; i++)
      await db.put("crowded", JSON.stringify([`blind${i}`]), { contentType: "application/json" });
    await assert.rejects(
      db.put("crowded", JSON.stringify(["one too many"])),
      (e: unknown) => e instanceof RingstoreError && e.status === 409 && e.code === "too_many_siblings",
    );
    let siblingsSeen = 0;
    await db.update("crowded", (values) => {
      siblingsSeen = values.length;
      return cartUnion("resolved")(values);
    });
    assert.equal(siblingsSeen, 4);
    const r = await db.get("crowded", { r: "all" });
    assert.equal(r.kind, "value");
    // Siblings that all had one type: the merged value keeps it.
    assert.equal((r as { contentType: string }).contentType, "application/json");
    assert.deepEqual(JSON.parse(text((r as { value: Buffer }).value)), [
      "blind0",
      "blind1",
      "blind2",
      "blind3",
      "resolved",
    ]);
  });

  test("8 concurrent updaters adding distinct items through different nodes lose no item", async (t) => {
    const updaters = 8;
    const perUpdater = 4;
    let attempts = 0;
    await Promise.all(
      Array.from({ length: updaters }, async (_, u) => {
        const db = client(api(ids[u % 3]!));
        for (let j = 0; j < perUpdater; j++) {
          const r = await db.update("cart", cartUnion(`item-${u}-${j}`), { maxAttempts: 10 });
          attempts += r.attempts;
        }
      }),
    );
    const want = Array.from(
      { length: updaters * perUpdater },
      (_, i) => `item-${Math.floor(i / perUpdater)}-${i % perUpdater}`,
    ).sort();
    // Whatever siblings are left hold every item between them; one more update folds them into one value.
    const db = client(ids.map(api));
    const raw = await db.get("cart", { r: "all" });
    const values =
      raw.kind === "value" ? [raw.value] : raw.kind === "siblings" ? raw.siblings.map((s) => s.value) : [];
    assert.deepEqual(JSON.parse(cartUnion()(values)), want, "every item survives in some sibling");
    await db.update("cart", cartUnion(), { w: "all" });
    const final = await db.get("cart", { r: "all" });
    assert.equal(final.kind, "value");
    assert.deepEqual(JSON.parse(text((final as { value: Buffer }).value)), want);
    assert.ok(attempts >= updaters * perUpdater);
    t.diagnostic(`${updaters * perUpdater} updates took ${attempts} read-merge-write cycles`);
  });

  test("partition-aware routing sends each request to the first replica of its key", async () => {
    const pa = client(api("a"), { routing: "partition-aware" });
    const owners = new Map<number, string>();
    for (const id of ids) for (const p of (await statusOf(api(id))).partitions.owned) owners.set(p, id);
    assert.equal(owners.size, 1024);
    const keys = [
      ...Array.from({ length: 24 }, (_, i) => `route-${i}`),
      "ключ-🛒",
      Buffer.from([0, 1, 2, 0xfe, 0xff]),
    ];
    const landed = new Map<string, number>();
    for (const key of keys) {
      const route = await pa.route(key);
      assert.equal(route.replicas.length, 3);
      const first = route.replicas[0]!;
      assert.equal(owners.get(route.partition!), first, "the first replica is the partition's owner");
      assert.equal(route.nodes[0], api(first));
      const before = await Promise.all(ids.map((id) => requestCount(api(id), "put")));
      await pa.put(key, "v");
      const after = await Promise.all(ids.map((id) => requestCount(api(id), "put")));
      const hit = ids.filter((_, i) => after[i]! > before[i]!);
      assert.deepEqual(hit, [first], `the put of ${String(key)} went to ${hit}, not to ${first}`);
      landed.set(first, (landed.get(first) ?? 0) + 1);
    }
    assert.equal(landed.size, 3, "keys of every node were tried");

    // Without routing, several seeds are used in turn.
    const rr = client(ids.map(api));
    const before = await Promise.all(ids.map((id) => requestCount(api(id), "get")));
    for (let i = 0; i < 9; i++) await rr.get(`route-${i}`);
    const after = await Promise.all(ids.map((id) => requestCount(api(id), "get")));
    assert.deepEqual(
      ids.map((_, i) => after[i]! - before[i]!),
      [3, 3, 3],
    );
  });

  test("both routing modes keep working when a node is SIGKILLed under load", async (t) => {
    const pa = client(api("a"), { routing: "partition-aware", ringRefreshMs: 300 });
    const plain = client(ids.map(api));
    const victim = "a";
    let ownedByVictim: string | undefined;
    for (let i = 0; ownedByVictim === undefined; i++)
      if ((await pa.route(`kill-${i}`)).replicas[0] === victim) ownedByVictim = `kill-${i}`;

    let stop = false;
    let killedAt = Number.POSITIVE_INFINITY;
    const written = new Map<string, string>();
    const failures: { at: number; err: unknown }[] = [];
    let okAfterKill = 0;
    const worker = async (w: number, db: RingstoreClient) => {
      for (let i = 0; !stop && i < 100_000; i++) {
        const key = `load-${w}-${i % 40}`;
        const t = Date.now();
        try {
          await db.put(key, `${w}:${i}`, { context: (await db.get(key)).context });
          written.set(key, `${w}:${i}`);
          if (t > killedAt) okAfterKill++;
        } catch (err) {
          written.delete(key); // a write that failed in flight may or may not have been applied
          failures.push({ at: t, err });
        }
      }
    };
    const load = [0, 1, 2, 3].map((w) => worker(w, w % 2 === 0 ? pa : plain));
    await new Promise((r) => setTimeout(r, 300));
    killedAt = Date.now();
    await c.kill(victim);
    // The node is gone (its exit was seen): an operation started after this must not fail.
    const deadAt = Date.now();
    try {
      await c.until("20 writes to succeed after the kill", async () => okAfterKill > 20, 30_000);
    } finally {
      stop = true;
      await Promise.all(load);
    }

    // Only a write in flight when the node died may fail (it may have been applied: not resent).
    for (const f of failures) {
      assert.ok(
        f.at <= deadAt + 50,
        `an operation started ${f.at - deadAt} ms after the node died failed: ${f.err}`,
      );
      assert.ok(f.err instanceof RingstoreError && f.err.code === "unreachable", String(f.err));
    }
    assert.ok(failures.length <= 4);
    t.diagnostic(`${okAfterKill} writes succeeded after the kill; ${failures.length} in flight failed`);
    assert.ok(okAfterKill > 20, `only ${okAfterKill} operations succeeded after the kill`);

    // Keys whose first replica died are served by the next ones; the ring refresh saw the node down.
    await pa.put(ownedByVictim!, "still writable");
    const r = await pa.get(ownedByVictim!);
    assert.equal(r.kind === "value" && text(r.value), "still writable");
    const u = await pa.update(ownedByVictim!, (v) => `${text(v[0]!)}, updated`);
    assert.equal(u.attempts, 1);
    await c.until("the client's ring to show the victim down", async () => {
      const route = await pa.route(ownedByVictim!);
      return route.replicas[0] === victim && route.nodes[0] !== api(victim);
    });
    for (const [key, value] of written) {
      const g = await plain.get(key);
      assert.equal(g.kind === "value" && text(g.value), value, key);
    }
  });
});

describe("partition-aware routing against where the servers keep keys (N=1)", { timeout: 60_000 }, () => {
  const c = new TestCluster();
  const ids = ["x", "y", "z"];
  const clients: RingstoreClient[] = [];
  const api = (id: string) => c.nodes.get(id)!.api;

  before(() => startCluster(c, ids, ["--n", "1", "--r", "1", "--w", "1"]));
  after(async () => {
    await Promise.all(clients.map((x) => x.close()));
    await c.shutdown();
  });

  test("the client's partition and replica of a key are the servers'", async () => {
    const pa = new RingstoreClient(api("x"), { routing: "partition-aware" });
    const viaX = new RingstoreClient(api("x"));
    clients.push(pa, viaX);
    const replicated = new Map<string, Set<number>>();
    for (const id of ids) replicated.set(id, new Set((await statusOf(api(id))).partitions.replicated));
    assert.equal(
      [...replicated.values()].reduce((s, p) => s + p.size, 0),
      1024,
      "N=1: each partition once",
    );

    // The client's view of many keys agrees with the partitions each server says it replicates.
    for (let i = 0; i < 3000; i++) {
      const key = i % 3 === 0 ? Buffer.from([i & 0xff, (i >> 8) & 0xff, 0x80]) : `k${i}-ü`;
      const route = await pa.route(key);
      assert.equal(route.replicas.length, 1);
      assert.ok(replicated.get(route.replicas[0]!)!.has(route.partition!), `key ${String(key)}`);
    }

    // Writes land on the key's only replica.
    const keys = Array.from({ length: 45 }, (_, i) => `placed-${i}`);
    const home = new Map<string, string>();
    for (const key of keys) {
      const first = (await pa.route(key)).replicas[0]!;
      home.set(key, first);
      const before = await Promise.all(ids.map((id) => requestCount(api(id), "put")));
      await pa.put(key, key);
      const after = await Promise.all(ids.map((id) => requestCount(api(id), "put")));
      assert.deepEqual(
        ids.filter((_, i) => after[i]! > before[i]!),
        [first],
      );
    }

    // Independent of the client's hash: with z dead, exactly the keys the client placed on z are
    // unavailable (their only replica is gone), read through x without routing.
    const onZ = keys.filter((k) => home.get(k) === "z");
    assert.ok(onZ.length >= 5 && onZ.length <= 30, `${onZ.length} of ${keys.length} keys on z`);
    await c.kill("z");
    for (const key of keys) {
      if (home.get(key) === "z") {
        await assert.rejects(
          viaX.get(key, { r: 1, timeoutMs: 1000 }),
          (e: unknown) => e instanceof RingstoreError && e.status === 503 && e.code === "unavailable",
          key,
        );
      } else {
        const r = await viaX.get(key, { r: 1, timeoutMs: 1000 });
        assert.equal(r.kind === "value" && text(r.value), key);
      }
    }
  });
});

describe("the client's own checks (no cluster needed)", () => {
  test("a value or header HTTP cannot carry is refused before sending, not taken for a network failure", async () => {
    // Port 1 on loopback: nothing listens, so anything sent would fail as "unreachable".
    const c = new RingstoreClient("127.0.0.1:1");
    try {
      for (const attempt of [
        () => c.put("k", "v", { contentType: "a\r\nX-Injected: 1" }),
        () => c.put("k", "v", { context: "tok\nen" }),
        () => c.put("k", 5 as unknown as string),
        () => c.delete("k", { context: "\u20ac" }),
      ]) {
        await assert.rejects(attempt(), (e: unknown) => {
          assert.ok(e instanceof RingstoreError);
          assert.equal(e.code, "bad_argument");
          return true;
        });
      }
    } finally {
      await c.close();
    }
  });

  test("after close, requests and status fail with 'closed' and open nothing; a second close waits", async () => {
    const c = new RingstoreClient("127.0.0.1:1");
    const first = c.close();
    const second = c.close();
    assert.equal(first, second);
    await second;
    for (const attempt of [() => c.get("k"), () => c.status("127.0.0.1:1")])
      await assert.rejects(attempt(), (e: unknown) => e instanceof RingstoreError && e.code === "closed");
  });
});

/** Listens on a free loopback port; resolves to it. */
function listen(srv: net.Server): Promise<number> {
  return new Promise<number>((resolve) =>
    srv.listen(0, "127.0.0.1", () => resolve((srv.address() as net.AddressInfo).port)),
  );
}

test("a node that keeps failing is tried less and less often", async () => {
  // It accepts each connection and drops it at once: every request to it fails without a wait.
  let tries = 0;
  const failing = net.createServer((s) => {
    tries++;
    s.destroy();
  });
  const healthy = http.createServer((_req, res) => {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "not_found", message: "no such key" }));
  });
  const [pf, ph] = [await listen(failing), await listen(healthy)];
  // The client's clock is ours: each request takes 10 ms of it, so 300 requests span 3 s, whatever
  // the machine's speed.
  let now = 1_000_000;
  const c = new RingstoreClient([`127.0.0.1:${pf}`, `127.0.0.1:${ph}`], {
    avoidAfterFailureMs: 200,
    clock: () => now,
  });
  try {
    for (let i = 0; i <= 300; i++, now += 10) assert.equal((await c.get(`k${i}`)).kind, "not_found");
    // Avoided 200, 400, 800, 1600 ms after each failure: tried at about 0, 200, 600, 1400 and 3000 ms,
    // when its turn in the round comes (with a fixed 200 ms it would be about 15 times).
    assert.ok(tries >= 4 && tries <= 5, `the failing node got ${tries} connections`);
  } finally {
    await c.close();
    await new Promise<void>((r) => failing.close(() => r()));
    await new Promise<void>((r) => healthy.close(() => r()));
  }
});

test("a write a stopping node turned away goes to the next node once; one that got a plain 503 is not resent", async () => {
  // Node s answers every request 503; with `stopping: true` (it did nothing with the request) or without
  // (a quorum not met: the write may have been applied). Node h stores it.
  let stopping = true;
  const hits = { s: 0, h: 0 };
  const s = http.createServer((req, res) => {
    hits.s++;
    req.resume();
    req.on("end", () => {
      res.writeHead(503, { "content-type": "application/json", connection: "close" });
      res.end(
        JSON.stringify(
          stopping
            ? { error: "unavailable", message: "this node is stopping", stopping: true }
            : { error: "unavailable", message: "only 1 of 2 acknowledgements", needed: 2, acked: 1 },
        ),
      );
    });
  });
  const h = http.createServer((req, res) => {
    hits.h++;
    req.resume();
    req.on("end", () => {
      res.writeHead(204, { "x-context": "AQ" });
      res.end();
    });
  });
  const [ps, ph] = [await listen(s), await listen(h)];
  const c = new RingstoreClient([`127.0.0.1:${ps}`, `127.0.0.1:${ph}`]);
  try {
    await c.put("k", "v"); // to s first (the seeds in turn), then h
    assert.deepEqual(hits, { s: 1, h: 1 });
    stopping = false;
    // s is avoided for a while after turning the write away: a fresh client goes to it first again.
    const fresh = new RingstoreClient([`127.0.0.1:${ps}`, `127.0.0.1:${ph}`]);
    try {
      await assert.rejects(
        fresh.put("k", "v"),
        (e: unknown) => e instanceof RingstoreError && e.code === "unavailable",
      );
      assert.deepEqual(hits, { s: 2, h: 1 }, "a write that may have been applied is not sent again");
    } finally {
      await fresh.close();
    }
  } finally {
    await c.close();
    await new Promise<void>((r) => s.close(() => r()));
    await new Promise<void>((r) => h.close(() => r()));
  }
});
