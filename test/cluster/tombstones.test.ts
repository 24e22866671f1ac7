/**
 * Deletes that stay deleted, and tombstones that go away, with real processes started through the CLI
 * (a short grace period, hinted handoff off so that only anti-entropy repairs a replica that missed a
 * delete):
 * - a key deleted while one replica is down: the replica comes back holding the old value; anti-entropy
 *   gives it the tombstone (reads with r=all, and r=1 reads it serves alone, say 404); past the grace
 *   period the tombstone is gone from every replica (read from the stores after a clean stop);
 * - kv679: a replica's data directory is restored from a copy that holds the key's old tombstone, after
 *   the tombstone was purged and the key written again; the node is refused at its start (away longer
 *   than the grace period) and forced back with --force-rejoin; its stale tombstone spreads, and the new
 *   write survives it.
 */
import assert from "node:assert/strict";
import { cpSync, rmSync } from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { DATA } from "../../src/replication/keyspaces.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { http, TestCluster } from "./harness.js";

const GRACE_MS = 5000;
const ARGS = [
  "--gossip-interval",
  "100",
  "--down-after",
  "1000",
  "--timeout",
  "1500",
  "--tombstone-grace",
  String(GRACE_MS),
  "--hint-window",
  "1000",
  "--hinted-handoff",
  "off",
  "--anti-entropy-interval",
  "300",
];

interface Tombstones {
  enabled: boolean;
  purging: boolean;
  graceMs: number;
  held: number | null;
  purged: number;
  refused: Record<string, number>;
  sweeps: number;
}

const tombstonesOf = async (c: TestCluster, id: string) =>
  ((await http(c.url(id, "/status"))).json() as unknown as { tombstones: Tombstones }).tombstones;

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

/** The key's siblings straight from a stopped node's store: [value, deleted] (undefined: absent). */
async function stored(dataDir: string, key: string): Promise<[string, boolean][] | undefined> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  try {
    const raw = await e.get(DATA.encode(Buffer.from(key)));
    return raw === undefined
      ? undefined
      : decodeSiblings(raw).map((s) => [Buffer.from(s.value.data).toString(), s.value.deleted]);
  } finally {
    await e.close();
  }
}

async function startThree(c: TestCluster): Promise<void> {
  await c.startJoined(["a", "b", "c"]);
}

async function seenDown(c: TestCluster, id: string, target: string): Promise<void> {
  await c.until(
    `${id} to see ${target} down`,
    async () => {
      const s = (await http(c.url(id, "/status"))).json() as { members: { id: string; state: string }[] };
      return s.members.some((m) => m.id === target && m.state === "down");
    },
    20_000,
  );
}

const put = async (c: TestCluster, via: string, key: string, value: string, context?: string) =>
  http(c.url(via, `/kv/${key}?w=all`), {
    method: "PUT",
    body: value,
    headers: context === undefined ? {} : { "x-context": context },
  });

const purgedEverywhere = (c: TestCluster, ids: string[], atLeast: number) =>
  c.until(
    `every replica to purge the tombstone (${ids.join(",")})`,
    async () => (await Promise.all(ids.map((id) => tombstonesOf(c, id)))).every((t) => t.purged >= atLeast),
    GRACE_MS + 20_000,
  );

describe("tombstones", () => {
  const c = new TestCluster(ARGS);
  after(() => c.shutdown());

  test("a delete while a replica is down stays deleted there, and its tombstone goes away after the grace period", async () => {
    await startThree(c);
    assert.equal((await put(c, "a", "k", "v1")).status, 204);
    assert.equal(await c.stop("c"), 0);
    await seenDown(c, "a", "c");
    const read = await http(c.url("a", "/kv/k"));
    assert.equal(read.status, 200);
    const del = await http(c.url("a", "/kv/k"), {
      method: "DELETE",
      headers: { "x-context": read.headers.get("x-context")! },
    });
    assert.equal(del.status, 204);
    // c comes back within the grace period, holding v1; anti-entropy alone gives it the tombstone.
    const repairedBefore = await metric(c, "a", "ringstore_antientropy_keys_repaired_total");
    await c.start("c");
    await c.converged("c", ["a", "b", "c"]);
    for (const id of ["a", "b"]) await c.converged(id, ["c"]);
    await c.until(
      "anti-entropy to repair c",
      async () =>
        (await metric(c, "a", "ringstore_antientropy_keys_repaired_total")) +
          (await metric(c, "b", "ringstore_antientropy_keys_repaired_total")) +
          (await metric(c, "c", "ringstore_antientropy_keys_repaired_total")) >
        repairedBefore,
      20_000,
    );
    // r=1 at c: c's own replica answers (a coordinator asks its own first).
    const one = await http(c.url("c", "/kv/k?r=1"));
    assert.equal(one.status, 404, `c serves ${one.status} ${one.text}`);
    assert.ok(one.headers.get("x-context"), "a tombstone, not nothing: the 404 carries a context");
    for (const id of ["a", "b", "c"]) assert.equal((await http(c.url(id, "/kv/k?r=all"))).status, 404);
    // Past the grace period, every copy agrees: the tombstone is purged on every replica.
    await purgedEverywhere(c, ["a", "b", "c"], 1);
    for (const id of ["a", "b", "c"]) {
      const t = await tombstonesOf(c, id);
      assert.equal(t.enabled && t.purging, true);
      assert.equal(t.graceMs, GRACE_MS);
      assert.ok((await metric(c, id, "ringstore_tombstones_purged_total")) >= 1, id);
    }
    await c.until(
      "a sweep to count no tombstone left",
      async () =>
        (await Promise.all(["a", "b", "c"].map((id) => metric(c, id, "ringstore_tombstones_held")))).every(
          (n) => n === 0,
        ),
      20_000,
    );
    assert.equal((await http(c.url("a", "/kv/k?r=all"))).status, 404);
    assert.equal((await http(c.url("a", "/kv/k?r=all"))).headers.get("x-context"), null, "nothing left");
    for (const id of ["a", "b", "c"]) {
      assert.equal(await c.stop(id), 0);
      assert.equal(await stored(c.nodes.get(id)!.dataDir, "k"), undefined, `${id} still holds k`);
    }
  });
});

describe("no dot is reused after a purge (kv679), end to end", () => {
  const c = new TestCluster(ARGS);
  after(() => c.shutdown());

  test("a replica restored with the key's old tombstone, after the key was written again: the new write survives", async () => {
    await startThree(c);
    assert.equal((await put(c, "a", "k", "v1")).status, 204);
    const read = await http(c.url("a", "/kv/k?r=all"));
    const del = await http(c.url("a", "/kv/k?w=all"), {
      method: "DELETE",
      headers: { "x-context": read.headers.get("x-context")! },
    });
    assert.equal(del.status, 204);
    // A copy of c's data directory while it holds the tombstone (a backup).
    assert.equal(await c.stop("c"), 0);
    const backup = path.join(c.root, "c-backup");
    const cDir = c.nodes.get("c")!.dataDir;
    cpSync(cDir, backup, { recursive: true });
    const backupAt = Date.now();
    await c.start("c");
    await c.converged("c", ["a", "b", "c"]);
    await purgedEverywhere(c, ["a", "b", "c"], 1);
    assert.equal((await http(c.url("a", "/kv/k?r=all"))).headers.get("x-context"), null, "purged");
    // The key is written again, as a client that read nothing writes it (no context).
    assert.equal((await put(c, "a", "k", "v2")).status, 204);
    // c's backup comes back, older than the grace period.
    await new Promise((r) => setTimeout(r, Math.max(0, backupAt + GRACE_MS + 500 - Date.now())));
    assert.equal(await c.stop("c"), 0);
    rmSync(cDir, { recursive: true, force: true });
    cpSync(backup, cDir, { recursive: true });
    await assert.rejects(
      c.start("c"),
      (err: Error) =>
        /was last running .* ago .* longer than the tombstone grace period/.test(err.message) &&
        /--force-rejoin/.test(err.message),
    );
    const forced = await c.start("c", { args: ["--force-rejoin"] });
    assert.match(forced.output, /started with --force-rejoin after/);
    await c.converged("c", ["a", "b", "c"]);
    // Anti-entropy spreads c's old tombstone; the new write is not covered by it.
    await c.until(
      "the old tombstone to reach a (anti-entropy)",
      async () => (await http(c.url("a", "/kv/k?r=1"))).status === 300,
      20_000,
    );
    for (const id of ["a", "b", "c"]) {
      const r = await http(c.url(id, "/kv/k?r=all"));
      assert.equal(r.status, 300, `${id}: ${r.status} ${r.text}`);
      const sibs = (r.json() as { siblings: { value: string; deleted: boolean }[] }).siblings;
      assert.deepEqual(sibs.map((s) => [Buffer.from(s.value, "base64").toString(), s.deleted]).sort(), [
        ["", true],
        ["v2", false],
      ]);
    }
  });
});
