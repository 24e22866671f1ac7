/**
 * Anti-entropy as an operator meets it, on real node processes started through the CLI, with hinted
 * handoff off and nothing read until the end (so that neither hints nor read repair can carry a key):
 * - a replica whose disk was replaced (stopped, its data directory wiped, started again under its old id
 *   with --join) gets every key back from its peers, under a fresh actor; the test prints how long 10,000
 *   keys took, and /status shows the catching up while it lasts;
 * - a write that reached two of three replicas (the third paused with SIGSTOP past the failure detector,
 *   so that nothing was even sent to it) reaches the third, and ringstore_antientropy_keys_repaired_total
 *   counts it;
 * - POST /cluster/anti-entropy?paused=true stops a node's own exchanges (it still answers its peers'), and
 *   paused=false starts them again.
 * Each replica's copy is checked in its own storage after a clean stop.
 */
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { DATA } from "../../src/replication/keyspaces.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { http, TestCluster } from "./harness.js";

/** An exchange as GET /status lists it (antiEntropy.lastExchanges). */
interface Exchange {
  peer: string;
  at: number;
  outcome: string;
  keysDiffering: number;
  keysRepaired: number;
  capped: boolean;
}

interface AntiEntropyStatus {
  enabled: boolean;
  paused: boolean;
  rebuild: unknown;
  recovery: { state: "recovering" | "done"; since: number; doneAt: number | null } | null;
  lastFullSweepAt: number | null;
  exchanges: number;
  keysRepaired: number;
  failed: number;
  lastExchanges: Exchange[];
}

interface Status {
  node: { actor: string };
  members: { id: string; state: string }[];
  partitions: { replicated: number[] };
  handoff: { keysSent: number };
  hintedHandoff: { limits: unknown };
  antiEntropy: AntiEntropyStatus;
}

/** Every key a stopped node holds in its data keyspace, with its sibling values (sorted). */
async function storedData(dataDir: string): Promise<Map<string, string[]>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Map<string, string[]>();
  try {
    for await (const { key, value } of e.iterate(DATA.range))
      out.set(
        Buffer.from(DATA.decode(key)).toString(),
        decodeSiblings(value)
          .map((s) => (s.value.deleted ? "<deleted>" : Buffer.from(s.value.data).toString()))
          .sort(),
      );
  } finally {
    await e.close();
  }
  return out;
}

const FLAGS = [
  "--gossip-interval",
  "100",
  "--down-after",
  "1000",
  "--timeout",
  "1500",
  "--hinted-handoff",
  "off",
  // Each co-replica's turn comes every 500 ms / 2 peers; the default is 30 s.
  "--anti-entropy-interval",
  "500",
];
const IDS = ["a", "b", "c"];

class Nodes {
  readonly c = new TestCluster(FLAGS);

  async startAll(): Promise<void> {
    await this.c.start("a");
    await this.c.start("b", { join: "a" });
    await this.c.start("c", { join: "a" });
    for (const id of IDS) await this.c.converged(id, IDS);
  }

  async status(id: string): Promise<Status> {
    return (await http(this.c.url(id, "/status"))).json() as unknown as Status;
  }

  /** The sum of a metric's samples (every label set) on node `id`. */
  async metric(id: string, name: string): Promise<number> {
    const text = (await http(this.c.url(id, "/metrics"))).text;
    let sum = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm")))
      sum += Number(m[1]);
    return sum;
  }

  async metricEverywhere(name: string, ids = IDS): Promise<number> {
    let sum = 0;
    for (const id of ids) sum += await this.metric(id, name);
    return sum;
  }

  /**
   * Has node `id`, in an exchange started by it since `since` (its clock: the Unix epoch in ms), found
   * each of `peers` in sync, and its last exchange with each in sync?
   */
  async inSyncWith(id: string, peers: string[], since: number): Promise<boolean> {
    const ae = (await this.status(id)).antiEntropy;
    return peers.every((p) => {
      const mine = ae.lastExchanges.filter((x) => x.peer === p && x.at >= since);
      return mine.length > 0 && mine[mine.length - 1]!.outcome === "in_sync";
    });
  }

  put(id: string, key: string, value: string, q = ""): Promise<{ status: number; text: string }> {
    return http(this.c.url(id, `/kv/${key}${q}`), { method: "PUT", body: value });
  }
}

describe("a replaced disk: a replica started empty under its old id", { timeout: 300_000 }, () => {
  const n = new Nodes();
  const c = n.c;
  before(() => n.startAll());
  after(() => c.shutdown());

  test("gets every key back by anti-entropy alone, under a fresh actor, and /status shows it catching up", async (t) => {
    const KEYS = 10_000;
    // Every key on all three replicas (w=3), through the three coordinators in turn, 32 at a time.
    let next = 0;
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < KEYS) {
          const i = next++;
          const r = await n.put(IDS[i % 3]!, `key${i}`, `value${i}`, "?w=3");
          assert.equal(r.status, 204, `key${i}: ${r.text}`);
        }
      }),
    );
    t.diagnostic(`${KEYS} keys written (w=3) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const old = await n.status("c");
    const handoffBefore = (await n.status("a")).handoff.keysSent + (await n.status("b")).handoff.keysSent;

    // The disk is replaced: a clean stop, the data directory gone, the same id started with --join.
    assert.equal(await c.stop("c"), 0);
    rmSync(c.nodes.get("c")!.dataDir, { recursive: true, force: true });
    const spawnedAt = Date.now();
    await c.start("c", { join: "a" });
    const servingAt = Date.now();

    // It is back as the member it was (its partitions, up), with an actor of its own that it never used.
    const s0 = await n.status("c");
    assert.notEqual(s0.node.actor, old.node.actor, "a replaced disk comes back with a fresh actor");
    assert.equal(s0.members.find((m) => m.id === "c")?.state, "up");
    assert.equal(s0.partitions.replicated.length, 1024, "it replicates every partition again");
    assert.equal(s0.antiEntropy.enabled, true);
    assert.equal(s0.antiEntropy.rebuild, null, "no tree rebuild: a node that joined empty has empty trees");
    assert.equal(s0.hintedHandoff.limits, null, "hinted handoff is off");
    // It says it is recovering, and the mark is on its disk (a restart meanwhile would go on recovering).
    assert.equal(s0.antiEntropy.recovery?.state, "recovering");
    assert.ok(existsSync(path.join(c.nodes.get("c")!.dataDir, "recovering")));
    assert.equal((await n.status("a")).antiEntropy.recovery, null, "a's disk was not replaced");

    // Until it finds each co-replica in sync, /status shows the catching up: exchanges that found
    // differences, keys repaired rising, no full sweep yet.
    const samples: AntiEntropyStatus[] = [];
    await c.until(
      "c to find a and b in sync",
      async () => {
        const ae = (await n.status("c")).antiEntropy;
        samples.push(ae);
        return ae.lastFullSweepAt !== null && (await n.inSyncWith("c", ["a", "b"], spawnedAt));
      },
      240_000,
    );
    const inSyncAt = Date.now();
    // Recovered once every co-replica was swept in full: the state says so and the mark is gone.
    await c.until(
      "c to say it recovered",
      async () => (await n.status("c")).antiEntropy.recovery?.state === "done",
      10_000,
    );
    assert.ok(!existsSync(path.join(c.nodes.get("c")!.dataDir, "recovering")));
    assert.ok(
      samples.some((s) => s.recovery?.state === "recovering" && s.keysRepaired > 0),
      "recovering while keys came back",
    );
    const catchingUp = samples.filter(
      (s) => s.lastFullSweepAt === null && s.lastExchanges.some((x) => x.outcome === "differences"),
    );
    assert.ok(catchingUp.length > 0, "/status showed exchanges finding differences before the first sweep");
    for (let i = 1; i < samples.length; i++)
      assert.ok(samples[i]!.keysRepaired >= samples[i - 1]!.keysRepaired, "keys repaired never falls");
    const byC = samples[samples.length - 1]!.keysRepaired;
    assert.ok(byC > 0);

    // Nothing but anti-entropy carried a key: no read repair anywhere, no hint, no data handoff.
    assert.equal(await n.metricEverywhere("ringstore_read_repairs_total"), 0);
    assert.equal(await n.metricEverywhere("ringstore_hints_stored_total"), 0);
    const handoffAfter = (await n.status("a")).handoff.keysSent + (await n.status("b")).handoff.keysSent;
    assert.equal(handoffAfter, handoffBefore, "no data handoff to the returning node");
    // Each key came back through a repair counted somewhere: pulled by c, or pushed to it by a or b.
    const repaired = await n.metricEverywhere("ringstore_antientropy_keys_repaired_total");
    assert.ok(repaired >= KEYS, `${repaired} key copies repaired, ${KEYS} expected at least`);

    // c's own storage, after a clean stop, holds every key with its value.
    assert.equal(await c.stop("c"), 0);
    const held = await storedData(c.nodes.get("c")!.dataDir);
    assert.equal(held.size, KEYS);
    for (let i = 0; i < KEYS; i++) assert.deepEqual(held.get(`key${i}`), [`value${i}`], `key${i}`);
    const byPeers =
      (await n.status("a")).antiEntropy.keysRepaired + (await n.status("b")).antiEntropy.keysRepaired;
    t.diagnostic(
      `replaced disk: ${KEYS} keys back in ${((inSyncAt - servingAt) / 1000).toFixed(1)} s after the node served ` +
        `(${((servingAt - spawnedAt) / 1000).toFixed(1)} s to start; --anti-entropy-interval 500, --anti-entropy-rate 2000); ` +
        `repaired by c ${byC}, pushed by a and b ${byPeers}`,
    );
  });
});

describe("divergence that nobody reads", { timeout: 120_000 }, () => {
  const n = new Nodes();
  const c = n.c;
  before(() => n.startAll());
  after(() => c.shutdown());
  const KEYS = 20;

  test("a write that reached two of three replicas reaches the third by anti-entropy alone", async () => {
    // c paused past the failure detector: a and b see it down, so the writes are not even sent to it (a
    // store sent to a paused process would wait in its socket and land when it resumes).
    const cn = c.nodes.get("c")!;
    cn.child!.kill("SIGSTOP");
    try {
      await c.until("a and b to see c down", async () => {
        for (const id of ["a", "b"])
          if ((await n.status(id)).members.find((m) => m.id === "c")?.state !== "down") return false;
        return true;
      });
      for (let i = 0; i < KEYS; i++) {
        const r = await n.put("a", `two-of-three-${i}`, `v${i}`);
        assert.equal(r.status, 204, r.text);
      }
      assert.equal(await n.metricEverywhere("ringstore_antientropy_keys_repaired_total", ["a", "b"]), 0);
    } finally {
      cn.child!.kill("SIGCONT");
    }
    const resumedAt = Date.now();
    await c.converged("a", IDS);
    await c.until("c to find a and b in sync", () => n.inSyncWith("c", ["a", "b"], resumedAt), 30_000);
    const repaired = await n.metricEverywhere("ringstore_antientropy_keys_repaired_total");
    assert.ok(repaired >= KEYS, `ringstore_antientropy_keys_repaired_total rose to ${repaired}`);
    assert.ok((await n.metricEverywhere("ringstore_antientropy_exchanges_total")) > 0);
    assert.equal(await n.metricEverywhere("ringstore_read_repairs_total"), 0);
    assert.equal(await n.metricEverywhere("ringstore_hints_stored_total"), 0);
  });

  test("paused=true stops a node's own exchanges, which its peers still get answers to; paused=false resumes them", async () => {
    const pause = (id: string, v: string) =>
      http(c.url(id, `/cluster/anti-entropy?paused=${v}`), { method: "POST" });
    const bad = await pause("a", "maybe");
    assert.equal(bad.status, 400);
    assert.equal(bad.json().error, "bad_parameter");

    const r = await pause("a", "true");
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { node: "a", paused: true });
    assert.equal((await n.status("a")).antiEntropy.paused, true);
    // An exchange already under way finishes (an in-sync one takes a few ms); none starts after it.
    await new Promise((res) => setTimeout(res, 1000));
    const frozen = (await n.status("a")).antiEntropy;
    const bBefore = (await n.status("b")).antiEntropy.exchanges;
    const since = Date.now();
    await new Promise((res) => setTimeout(res, 2500));
    const still = (await n.status("a")).antiEntropy;
    assert.equal(still.paused, true);
    assert.equal(still.exchanges, frozen.exchanges, "no exchange started by a while paused");
    assert.deepEqual(still.lastExchanges, frozen.lastExchanges);
    // b goes on exchanging, a included, and a answers.
    assert.ok((await n.status("b")).antiEntropy.exchanges > bBefore);
    await c.until("b to find a in sync while a is paused", () => n.inSyncWith("b", ["a"], since));

    const resumed = await pause("a", "false");
    assert.deepEqual(resumed.json(), { node: "a", paused: false });
    await c.until("a to exchange again", async () => {
      const ae = (await n.status("a")).antiEntropy;
      return !ae.paused && ae.exchanges > still.exchanges;
    });

    // The third replica's own storage, after a clean stop, holds the writes it missed.
    assert.equal(await c.stop("c"), 0);
    const held = await storedData(c.nodes.get("c")!.dataDir);
    for (let i = 0; i < KEYS; i++) assert.deepEqual(held.get(`two-of-three-${i}`), [`v${i}`]);
  });

  test("a node that ran with --anti-entropy off rebuilds its trees when it runs with it on again", async () => {
    // c stopped cleanly above, its trees saved. A run with anti-entropy off takes writes that its saved
    // trees do not know of.
    await c.start("c", { args: ["--anti-entropy", "off"] });
    for (const id of IDS) await c.converged(id, IDS, { atAddresses: true });
    assert.equal((await n.status("c")).antiEntropy.enabled, false);
    for (let i = 0; i < KEYS; i++) {
      const r = await n.put("a", `while-off-${i}`, `w${i}`, "?w=3");
      assert.equal(r.status, 204, r.text);
    }
    assert.equal(await c.stop("c"), 0);
    // On again: its trees come from its data, so it finds its co-replicas in sync (trees saved before the
    // run with it off would differ from the data in every segment those writes touched, for good).
    const restartedAt = Date.now();
    await c.start("c");
    await c.until("c to find a and b in sync", () => n.inSyncWith("c", ["a", "b"], restartedAt), 30_000);
    const ae = (await n.status("c")).antiEntropy as AntiEntropyStatus & {
      rebuild: { state: string; keys: number | null } | null;
    };
    assert.equal(ae.rebuild?.state, "done");
    assert.equal(ae.rebuild?.keys, 2 * KEYS);
  });
});
