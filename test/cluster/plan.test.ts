/**
 * `ringstore cluster plan` with real processes: the plan of a join and of a leave changes nothing, and
 * agrees with what the change then does: the partitions whose owners and replicas change are exactly
 * the plan's, and the keys the new replicas hold in them are the plan's count within 5%.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { DATA } from "../../src/replication/keyspaces.js";
import type { Plan } from "../../src/ring/plan.js";
import { PreferenceTable, partitionOf } from "../../src/ring/ring.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { FAST_FLAGS, http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");
const Q = 64;
const KEYS = 800;

interface RingDoc {
  version: number;
  owners: string[];
  members: { id: string; weight: number }[];
}

/** Keys of the test per partition held in a stopped node's storage. */
async function heldPerPartition(dataDir: string): Promise<Map<number, number>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Map<number, number>();
  try {
    for (let i = 0; i < KEYS; i++) {
      const k = Buffer.from(`pk-${i}`);
      if ((await e.get(DATA.encode(k))) !== undefined) {
        const p = partitionOf(k, Q);
        out.set(p, (out.get(p) ?? 0) + 1);
      }
    }
  } finally {
    await e.close();
  }
  return out;
}

async function plan(c: TestCluster, via: string, ...args: string[]): Promise<Plan> {
  const out = await run(
    process.execPath,
    [BIN, "cluster", "plan", ...args, "--node", c.nodes.get(via)!.api, "--json"],
    { timeout: 60_000 },
  );
  return JSON.parse(out.stdout) as Plan;
}

const ringOf = async (c: TestCluster, id: string) =>
  (await http(c.url(id, "/ring"))).json() as unknown as RingDoc;

/** Waits until every listed node has the same ring, without `gone`, and a completed handoff for it. */
async function settled(c: TestCluster, ids: string[], version: number): Promise<RingDoc> {
  await c.until(
    `ring ${version} handed off on ${ids.join(",")}`,
    async () => {
      const ss = await Promise.all(
        ids.map(async (id) => (await http(c.url(id, "/status"))).json() as Record<string, unknown>),
      );
      return ss.every((s) => {
        const h = s.handoff as unknown as { state: string; ringVersion: number };
        const v = (s.cluster as unknown as { ringVersion: number }).ringVersion;
        return v === version && h.state === "idle" && h.ringVersion === version;
      });
    },
    60_000,
  );
  return ringOf(c, ids[0]!);
}

/** The plan's partitions are exactly those whose owner or preference list the change changed. */
function samePartitions(p: Plan, before: RingDoc, afterRing: RingDoc): void {
  const lists = (r: RingDoc) =>
    new PreferenceTable(
      { partitions: Q, owners: r.owners },
      r.members.map((m) => ({ ...m, zone: undefined })),
      3,
    );
  const b = lists(before);
  const a = lists(afterRing);
  const changed: number[] = [];
  for (let q = 0; q < Q; q++) {
    const gained = a.forPartition(q).filter((id) => !b.forPartition(q).includes(id));
    if (gained.length > 0 || before.owners[q] !== afterRing.owners[q]) changed.push(q);
  }
  assert.deepEqual(
    p.moves.map((m) => m.partition),
    changed,
  );
  for (const m of p.moves) {
    assert.equal(afterRing.owners[m.partition], m.ownerTo, `partition ${m.partition}'s new owner`);
    assert.deepEqual(a.forPartition(m.partition), m.to, `partition ${m.partition}'s new replicas`);
  }
}

describe("cluster plan agrees with what the change then moves", { timeout: 180_000 }, () => {
  const c = new TestCluster([...FAST_FLAGS, "--partitions", `${Q}`]);
  after(() => c.shutdown());

  test("join, then leave: partitions exactly, keys within 5%; the plan changes nothing", async () => {
    await c.startJoined(["a", "b", "c"]);
    for (let i = 0; i < KEYS; i++)
      assert.equal((await http(c.url("a", `/kv/pk-${i}?w=3`), { method: "PUT", body: `v${i}` })).status, 204);

    // The join of d.
    const r1 = await ringOf(c, "a");
    const pj = await plan(c, "b", "join", "--id", "d");
    assert.equal((await ringOf(c, "a")).version, r1.version, "a plan changes nothing");
    assert.equal(pj.ringVersion, r1.version);
    assert.deepEqual(pj.missingCounts, []);
    assert.ok(pj.moves.length > 0 && pj.estimateSeconds >= 0 && pj.bytesPerSecond > 0);
    const dPlan = pj.nodes.find((n) => n.id === "d")!;
    assert.equal(dPlan.partitionsBefore, 0);
    assert.ok(dPlan.partitionsAfter >= Q / 4 - 1 && dPlan.partitionsAfter <= Q / 4 + 1);
    // The text form says the same.
    const text = await run(process.execPath, [
      BIN,
      "cluster",
      "plan",
      "join",
      "--id",
      "d",
      "--node",
      c.nodes.get("a")!.api,
    ]);
    assert.match(text.stdout, new RegExp(`${pj.moves.length} partition\\(s\\) change replicas`));
    assert.match(text.stdout, /estimated time at the handoff throttle/);
    console.log(text.stdout);

    await c.start("d", { join: "a" });
    const r2 = await settled(c, ["a", "b", "c", "d"], r1.version + 1);
    samePartitions(pj, r1, r2);
    // What the join moved against the ideal, the plan's (every key to each new replica of its partition
    // once): the handoff passes' copies and bytes on the senders (each ran one pass for this ring).
    let sentKeys = 0;
    let sentBytes = 0;
    for (const id of ["a", "b", "c"]) {
      const h = (
        (await http(c.url(id, "/status"))).json() as { handoff: { keysSent: number; bytesSent: number } }
      ).handoff;
      sentKeys += h.keysSent;
      sentBytes += h.bytesSent;
    }
    const idealBytes = pj.moves.reduce(
      (sum, m) => sum + m.bytes * m.to.filter((x) => !m.from.includes(x)).length,
      0,
    );
    console.log(
      `join of d: the handoff sent ${sentKeys} copies (${sentBytes} bytes) for the plan's ${pj.keys} (${idealBytes} bytes): ${(sentKeys / pj.keys).toFixed(3)}x the ideal in keys, ${(sentBytes / idealBytes).toFixed(3)}x in bytes`,
    );
    // Every replica is up: the one that loses a key sends it, and the keepers rely on it (a keeper sends
    // only for a loser it sees down; handoff.ts targets). So a join moves about the ideal; issue 18 asks
    // for 1.2x at most.
    assert.ok(sentKeys <= 1.2 * pj.keys, `${sentKeys} copies sent for ${pj.keys}: more than 1.2x the ideal`);
    assert.ok(
      sentBytes <= 1.2 * idealBytes,
      `${sentBytes} bytes sent for ${idealBytes}: more than 1.2x the ideal`,
    );
    assert.ok(sentKeys >= pj.keys, `${sentKeys} copies sent for ${pj.keys}: fewer than the plan`);
    // What d holds came by the handoff alone (nothing was written since).
    await c.stop("d");
    const dHeld = await heldPerPartition(c.nodes.get("d")!.dataDir);
    let dKeys = 0;
    for (const n of dHeld.values()) dKeys += n;
    console.log(`join of d: d holds ${dKeys} keys, the plan said ${dPlan.receivesKeys}`);
    assert.ok(dKeys > 0);
    assert.ok(
      Math.abs(dKeys - dPlan.receivesKeys) <= 0.05 * dPlan.receivesKeys,
      `d holds ${dKeys}, the plan said ${dPlan.receivesKeys}`,
    );
    await c.start("d");
    for (const id of ["a", "b", "c", "d"]) await c.converged(id, ["a", "b", "c", "d"]);

    // The leave of b, planned through another node.
    const pl = await plan(c, "c", "leave", "--id", "b");
    assert.equal((await ringOf(c, "a")).version, r2.version, "a plan changes nothing");
    await run(process.execPath, [BIN, "cluster", "leave", "--node", c.nodes.get("b")!.api], {
      timeout: 60_000,
    });
    assert.equal(await c.exited("b"), 0);
    const r3 = await settled(c, ["a", "c", "d"], r2.version + 1);
    samePartitions(pl, r2, r3);
    // Every new replica of a moved partition holds its keys: the plan's count, within 5%.
    const held = new Map<string, Map<number, number>>();
    for (const id of ["a", "c", "d"]) {
      await c.stop(id);
      held.set(id, await heldPerPartition(c.nodes.get(id)!.dataDir));
    }
    let moved = 0;
    for (const m of pl.moves)
      for (const id of m.to.filter((x) => !m.from.includes(x))) moved += held.get(id)!.get(m.partition) ?? 0;
    console.log(`leave of b: the new replicas hold ${moved} keys, the plan said ${pl.keys}`);
    assert.ok(moved > 0);
    assert.ok(
      Math.abs(moved - pl.keys) <= 0.05 * pl.keys,
      `new replicas hold ${moved} keys, the plan said ${pl.keys}`,
    );
  });
});
