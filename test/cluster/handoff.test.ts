/**
 * Ownership handoff with real processes started through the CLI: a node that joins receives the keys of
 * the partitions it takes from their old holders (no read needed), and `ringstore cluster leave` hands
 * a node's keys to the nodes that take its partitions, marks it left and stops it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { DATA } from "../../src/replication/keyspaces.js";
import { partitionOf } from "../../src/ring/ring.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");
const KEYS = 300;
const key = (i: number) => `hk-${i}`;

/** Every key's values straight from a stopped node's storage (key -> sorted values). */
async function storedAll(dataDir: string): Promise<Map<string, string[]>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Map<string, string[]>();
  try {
    for (let i = 0; i < KEYS; i++) {
      const raw = await e.get(DATA.encode(Buffer.from(key(i))));
      if (raw !== undefined)
        out.set(
          key(i),
          decodeSiblings(raw)
            .map((s) => Buffer.from(s.value.data).toString())
            .sort(),
        );
    }
  } finally {
    await e.close();
  }
  return out;
}

interface Status {
  cluster: { ringVersion: number };
  members: { id: string; status: string; state: string }[];
  partitions: { replicated: number[] };
  handoff: { state: string; ringVersion: number; passesCompleted: number; keysSent: number };
}

const statusOf = async (c: TestCluster, id: string) =>
  (await http(c.url(id, "/status"))).json() as unknown as Status;

/** Waits until every listed node has completed a handoff pass for the ring version they all have. */
const handedOff = (c: TestCluster, ids: string[], ms = 30_000) =>
  c.until(
    `handoff done on ${ids.join(",")}`,
    async () => {
      const ss = await Promise.all(ids.map((id) => statusOf(c, id)));
      const v = ss[0]!.cluster.ringVersion;
      return ss.every(
        (s) => s.cluster.ringVersion === v && s.handoff.state === "idle" && s.handoff.ringVersion === v,
      );
    },
    ms,
  );

/** Writes key(i) = v(i) for every i < KEYS through node `via`, each acknowledged (204). */
async function putKeys(c: TestCluster, via: string, query = ""): Promise<void> {
  for (let i = 0; i < KEYS; i++)
    assert.equal(
      (await http(c.url(via, `/kv/${key(i)}${query}`), { method: "PUT", body: `v${i}` })).status,
      204,
    );
}

/** Four nodes a, b, c, d (N=3), every one seeing the others up. */
async function startFour(c: TestCluster): Promise<void> {
  for (const id of ["a", "b", "c", "d"]) await c.start(id, id === "a" ? {} : { join: "a" });
  for (const id of ["a", "b", "c", "d"]) await c.converged(id, ["a", "b", "c", "d"]);
}

describe("ownership handoff on join and leave", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  const status = (id: string) => statusOf(c, id);
  before(async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
    await putKeys(c, "a", "?w=3");
  });
  after(() => c.shutdown());

  test("a joining node gets the keys of the partitions it takes, without any read", async () => {
    await c.start("d", { join: "a" });
    for (const id of ["a", "b", "c", "d"]) await c.converged(id, ["a", "b", "c", "d"]);
    await c.until("a ring claimed with d", async () => (await status("d")).partitions.replicated.length > 0);
    await handedOff(c, ["a", "b", "c"]);
    const replicated = new Set((await status("d")).partitions.replicated);
    const sent = (await Promise.all(["a", "b", "c"].map(status))).reduce((n, s) => n + s.handoff.keysSent, 0);
    assert.equal(await c.stop("d"), 0);
    const held = await storedAll(c.nodes.get("d")!.dataDir);
    let expected = 0;
    for (let i = 0; i < KEYS; i++) {
      if (!replicated.has(partitionOf(Buffer.from(key(i)), 1024))) continue;
      expected++;
      assert.deepEqual(held.get(key(i)), [`v${i}`], `${key(i)} on d`);
    }
    assert.ok(expected > KEYS / 2, `d replicates ${expected} of the keys (N=3 of 4 nodes)`);
    assert.ok(sent >= expected, `the holders sent ${sent} copies for ${expected} keys`);
    await c.start("d");
    for (const id of ["a", "b", "c", "d"]) await c.converged(id, ["a", "b", "c", "d"]);
  });

  test("cluster leave: the node hands everything off, is marked left and stops; a leave below N is refused", async () => {
    const a = c.nodes.get("a")!;
    const exited = c.exited("a");
    const out = await run(process.execPath, [BIN, "cluster", "leave", "--node", a.api], { timeout: 60_000 });
    assert.match(out.stdout, /node a is leaving/);
    assert.match(out.stdout, /node a has left the cluster/);
    assert.equal(await exited, 0, `a stops by itself after leaving:\n${a.output}`);
    assert.match(a.output, /left the cluster/);

    for (const id of ["b", "c", "d"])
      await c.until(`${id} to see a left`, async () =>
        (await status(id)).members.some((m) => m.id === "a" && m.status === "left"),
      );
    await handedOff(c, ["b", "c", "d"]);
    // Three members remain with N=3: one more leave is refused unless forced.
    const refused = await http(c.url("b", "/cluster/leave"), { method: "POST" });
    assert.equal(refused.status, 409);
    assert.equal(refused.json().error, "leave_refused");
    assert.match(String(refused.json().message), /fewer than N=3/);
    assert.equal((await http(c.url("b", "/cluster/leave?force=maybe"), { method: "POST" })).status, 400);

    // With N=3 and three members left, each of them holds every key, straight from its own storage.
    for (const id of ["b", "c", "d"]) {
      assert.equal(await c.stop(id), 0);
      const held = await storedAll(c.nodes.get(id)!.dataDir);
      for (let i = 0; i < KEYS; i++) assert.deepEqual(held.get(key(i)), [`v${i}`], `${key(i)} on ${id}`);
    }

    // The node that left does not start again on its old data directory.
    await assert.rejects(c.start("a"), /has left cluster/);
  });
});

describe("a leave that crashes half-way, with writes going on", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("SIGKILLed while leaving, the node resumes its leave on restart; no acknowledged write is lost", async () => {
    await startFour(c);
    await putKeys(c, "b", "?w=3");

    // Writers through a, b and c (every one bounded in count) while d leaves.
    const acked = new Map<string, string>();
    let writing = true;
    const writers = ["a", "b", "c"].map(async (via) => {
      for (let j = 0; j < 400 && writing; j++) {
        const k = `w-${via}-${j}`;
        const r = await http(c.url(via, `/kv/${k}`), { method: "PUT", body: k }).catch(() => undefined);
        if (r?.status === 204) acked.set(k, k);
      }
    });
    const d = c.nodes.get("d")!;
    assert.equal((await http(c.url("d", "/cluster/leave"), { method: "POST" })).status, 202);
    assert.equal((await http(c.url("d", "/cluster/leave"), { method: "POST" })).status, 202, "idempotent");
    await new Promise((r) => setTimeout(r, 300));
    await c.kill("d");
    await c.start("d");
    assert.equal(await c.exited("d"), 0, `d finishes its leave after the restart and stops:\n${d.output}`);
    writing = false;
    await Promise.all(writers);
    assert.ok(acked.size > 50, `${acked.size} writes acknowledged during the leave`);
    for (const id of ["a", "b", "c"])
      await c.until(`${id} to see d left`, async () => {
        const s = await statusOf(c, id);
        return s.members.some((m) => m.id === "d" && m.status === "left");
      });
    // Three members, N=3: each holds every key written (to all three) before the leave, and every write
    // acknowledged during it is on at least W=2 of them (a write acknowledged by d and one other under
    // the old ring reaches the third only through d's handoff; anything missing elsewhere is read repair's).
    const copies = new Map<string, number>();
    for (const id of ["a", "b", "c"]) {
      assert.equal(await c.stop(id), 0);
      const dir = path.join(c.nodes.get(id)!.dataDir, "storage");
      const e = await LsmEngine.open({ dir, fs: new NodeFileSystem() });
      try {
        for (let i = 0; i < KEYS; i++)
          assert.ok(await e.get(DATA.encode(Buffer.from(key(i)))), `${key(i)} on ${id}`);
        for (const k of acked.keys())
          if ((await e.get(DATA.encode(Buffer.from(k)))) !== undefined)
            copies.set(k, (copies.get(k) ?? 0) + 1);
      } finally {
        await e.close();
      }
    }
    for (const k of acked.keys()) assert.ok((copies.get(k) ?? 0) >= 2, `${k}: ${copies.get(k) ?? 0} copies`);
  });
});

describe("cluster remove: a member gone for good", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("a dead member is removed on its behalf; its keys reach their new replicas; it stops if it comes back, and its id cannot join again", async () => {
    await startFour(c);
    await putKeys(c, "b");
    // Refused: a live member, this node itself, an unknown id, a missing id.
    const live = await http(c.url("a", "/cluster/remove?id=d"), { method: "POST" });
    assert.equal(live.status, 409);
    assert.equal(live.json().error, "remove_refused");
    assert.match(String(live.json().message), /not down/);
    assert.equal((await http(c.url("a", "/cluster/remove?id=a"), { method: "POST" })).status, 409);
    assert.equal((await http(c.url("a", "/cluster/remove?id=zz"), { method: "POST" })).status, 409);
    assert.equal((await http(c.url("a", "/cluster/remove"), { method: "POST" })).status, 400);

    await c.kill("d");
    await c.until(
      "a to see d down",
      async () => {
        const s = (await http(c.url("a", "/status"))).json() as unknown as Status;
        return s.members.some((m) => m.id === "d" && m.state === "down");
      },
      20_000,
    );
    const out = await run(
      process.execPath,
      [BIN, "cluster", "remove", "--node", c.nodes.get("a")!.api, "--id", "d"],
      {
        timeout: 30_000,
      },
    );
    assert.match(out.stdout, /member d is removed/);
    for (const id of ["a", "b", "c"])
      await c.until(`${id} to see d left, and a ring without d`, async () => {
        const s = await statusOf(c, id);
        const ring = (await http(c.url(id, "/ring"))).json() as { owners: string[] };
        return s.members.some((m) => m.id === "d" && m.status === "left") && !ring.owners.includes("d");
      });
    await handedOff(c, ["a", "b", "c"]);

    // d comes back on its old data: it hears it was removed, and stops by itself.
    const d = await c.start("d");
    assert.equal(await c.exited("d"), 0);
    assert.match(d.output, /removed from the cluster/);
    // A new node under the id d cannot join.
    await assert.rejects(
      c.start("d2", { join: "a", args: ["--id", "d"] }),
      /cannot join again|has left this cluster/,
    );

    // Three members, N=3: each holds every key, from the others' handoff alone (no read was made).
    for (const id of ["a", "b", "c"]) {
      assert.equal(await c.stop(id), 0);
      const held = await storedAll(c.nodes.get(id)!.dataDir);
      for (let i = 0; i < KEYS; i++) assert.deepEqual(held.get(key(i)), [`v${i}`], `${key(i)} on ${id}`);
    }
  });
});
