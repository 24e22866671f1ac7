/**
 * `ringstore storage compact` through the built CLI (dist/; `npm test` builds first) against real
 * processes: a one-node cluster written with enough overwrites and deletes (under a small memory budget)
 * to hold several tables; `storage compact --node` prints progress lines and ends with fewer tables,
 * every key reads the same after, a second request while one runs gets 409; `/status` shows the
 * compaction and `/metrics` counts it. Then, the node stopped, `storage compact --data` on its directory;
 * while it runs, `--data` is refused.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { cli } from "../cli/support.js";
import { http, TestCluster } from "../cluster/harness.js";

const clusters: TestCluster[] = [];
after(async () => {
  for (const c of clusters) await c.shutdown();
});

const KEYS = 1500;
const VALUE_BYTES = 1024;

const keyOf = (i: number) => `key-${String(i).padStart(5, "0")}`;
const valueFor = (i: number, round: number) =>
  `${round}:${i}:`.padEnd(VALUE_BYTES, String.fromCharCode(97 + (i % 26)));

/** Runs `fn` over 0..n-1, `width` at a time. */
async function pool(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

interface Compaction {
  state: string;
  tablesBefore: number;
  tablesAfter: number | null;
  runsAfter: number | null;
}

async function storageOf(
  api: string,
): Promise<{ tables: number; runs: number; manual: Compaction; count: number }> {
  const s = (await http(`http://${api}/status`)).json().storage as {
    levels: { tables: number }[];
    manualCompaction: Compaction;
    manualCompactions: number;
  };
  return {
    tables: s.levels.reduce((n, l) => n + l.tables, 0),
    runs: s.levels.length,
    manual: s.manualCompaction,
    count: s.manualCompactions,
  };
}

/** Every key's value as the node reads it (null: 404). */
async function readAll(api: string): Promise<(string | null)[]> {
  const out: (string | null)[] = new Array(KEYS).fill(null);
  await pool(KEYS, 16, async (i) => {
    const r = await http(`http://${api}/kv/${keyOf(i)}`);
    assert.ok(r.status === 200 || r.status === 404, `GET ${keyOf(i)}: ${r.status} ${r.text.slice(0, 200)}`);
    out[i] = r.status === 200 ? r.text : null;
  });
  return out;
}

describe("ringstore storage compact", () => {
  test("--node: progress lines, fewer tables, the same data; then --data on the stopped node", {
    timeout: 240_000,
  }, async () => {
    const cluster = new TestCluster([
      "--gossip-interval",
      "100",
      "--n",
      "1",
      "--r",
      "1",
      "--w",
      "1",
      "--memory-budget",
      String(4 * 1024 * 1024),
      "--durability",
      "none",
    ]);
    clusters.push(cluster);
    const node = await cluster.start("n1");
    const api = node.api;
    // All keys, then two thirds of them overwritten a third at a time, then every fifth deleted: each
    // later round flushes about one small run, too few and too small for a background merge to take.
    const rounds: ((i: number) => "put" | "delete" | undefined)[] = [
      () => "put",
      (i) => (i % 3 === 1 ? "put" : undefined),
      (i) => (i % 3 === 2 ? "put" : undefined),
      (i) => (i % 5 === 0 ? "delete" : undefined),
    ];
    for (const [round, what] of rounds.entries())
      await pool(KEYS, 16, async (i) => {
        const op = what(i);
        if (op === undefined) return;
        // Read first, for the context the write supersedes.
        const g = await http(`http://${api}/kv/${keyOf(i)}`);
        const ctx = g.headers.get("x-context");
        const headers: Record<string, string> = ctx === null ? {} : { "x-context": ctx };
        const r = await http(`http://${api}/kv/${keyOf(i)}`, {
          method: op === "delete" ? "DELETE" : "PUT",
          headers,
          ...(op === "delete" ? {} : { body: valueFor(i, round) }),
        });
        assert.ok(r.status === 200 || r.status === 204, `write ${keyOf(i)}: ${r.status} ${r.text}`);
      });
    const before = await storageOf(api);
    assert.ok(before.tables >= 2, `the store should hold several tables, it holds ${before.tables}`);
    assert.equal(before.manual.state, "idle");
    const data = await readAll(api);
    assert.equal(data.filter((v) => v === null).length, KEYS / 5);

    const ran = await cli(["storage", "compact", "--node", api], { timeoutMs: 120_000 });
    const out = ran.stdout.toString();
    assert.equal(ran.code, 0, `${out}\n${ran.stderr}`);
    assert.match(out, /^compacting .*KiB/m, `no progress line:\n${out}`);
    assert.match(out, /^compacted node .* in [0-9.]+ s/m);
    const m =
      /before {2}(\d+) table\(s\) in (\d+) sorted run\(s\)[^\n]*\n {2}after {3}(\d+) table\(s\) in (\d+) sorted run\(s\)/.exec(
        out,
      );
    assert.ok(m !== null, `no before/after lines:\n${out}`);
    assert.ok(Number(m[3]) < Number(m[1]), `tables did not shrink:\n${out}`);
    assert.equal(Number(m[4]), 1, `not one run after:\n${out}`);

    const afterNode = await storageOf(api);
    assert.equal(afterNode.manual.state, "done");
    assert.equal(afterNode.count, 1);
    assert.ok(afterNode.tables < before.tables);
    assert.deepEqual(await readAll(api), data, "a key reads differently after the compaction");
    const metrics = (await http(`http://${api}/metrics`)).text;
    assert.match(metrics, /^ringstore_storage_manual_compactions_total(\{[^}]*\})? 1$/m);

    // One at a time: a second request while one runs gets 409 with that one's progress.
    const first = await http(`http://${api}/storage/compact`, { method: "POST" });
    assert.equal(first.status, 202, first.text);
    assert.equal((first.json().compaction as Compaction).state, "running");
    const second = await http(`http://${api}/storage/compact`, { method: "POST" });
    if (second.status === 409) {
      assert.equal(second.json().error, "compaction_running");
      assert.equal((second.json().compaction as Compaction).state, "running");
    } else {
      // The first had ended already (a store of one run merges quickly): it started another.
      assert.equal(second.status, 202, second.text);
    }
    for (let i = 0; i < 200 && (await storageOf(api)).manual.state === "running"; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await readAll(api), data);

    // Offline: refused while the node runs, done once it stopped.
    const refused = await cli(["storage", "compact", "--data", node.dataDir]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /running process \(pid \d+\) has the store in .* open/);
    assert.equal(await cluster.stop("n1"), 0);
    const offline = await cli(["storage", "compact", "--data", node.dataDir], { timeoutMs: 120_000 });
    assert.equal(offline.code, 0, `${offline.stdout}\n${offline.stderr}`);
    assert.match(offline.stdout.toString(), new RegExp(`compacted ${path.join(node.dataDir, "storage")} in`));
    const restarted = await cluster.start("n1");
    assert.deepEqual(
      await readAll(restarted.api),
      data,
      "a key reads differently after the offline compaction",
    );
  });
});
