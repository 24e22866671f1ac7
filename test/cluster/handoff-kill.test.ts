/**
 * A handoff interrupted by SIGKILL completes after a restart, with real processes through the CLI: the
 * join of d while a sender (a) is killed midway, then the join of e while e itself, the receiver, is
 * killed midway. Anti-entropy and hinted handoff are off and nothing is read, so every copy a new
 * replica holds came by the handoff; at the end each node's store holds every key of every partition
 * it replicates in the final ring.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { DATA } from "../../src/replication/keyspaces.js";
import { PreferenceTable, partitionOf } from "../../src/ring/ring.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { FAST_FLAGS, http, TestCluster } from "./harness.js";

const Q = 64;
const KEYS = 1500;
const VALUE = "x".repeat(1000);
/** Slow enough that a pass is still running when the test kills a node (about 20 s for a join). */
const SLOW = 20_000;

interface Handoff {
  state: string;
  ringVersion: number;
  keysSent: number;
}
interface Status {
  handoff: Handoff;
  cluster: { ringVersion: number };
}
interface RingDoc {
  version: number;
  owners: string[];
  members: { id: string; weight: number }[];
}

const status = async (c: TestCluster, id: string) =>
  (await http(c.url(id, "/status"))).json() as unknown as Status;
const setRate = async (c: TestCluster, id: string, bytesPerSecond: number) =>
  assert.equal(
    (await http(c.url(id, `/cluster/handoff?bytesPerSecond=${bytesPerSecond}`), { method: "POST" })).status,
    200,
  );

/**
 * Until every node has one ring, newer than `than`, and an idle handoff for it (a joiner killed before its
 * first pass, `fresh`, may have none to run: it holds only what it was sent); returns its version.
 */
async function settled(c: TestCluster, ids: string[], than: number, fresh?: string): Promise<number> {
  let version = 0;
  await c
    .until(
      `one ring newer than ${than} handed off on ${ids.join(",")}`,
      async () => {
        const ss = await Promise.all(ids.map((id) => status(c, id)));
        version = ss[0]!.cluster.ringVersion;
        return (
          version > than &&
          ss.every(
            (s, i) =>
              s.cluster.ringVersion === version &&
              s.handoff.state === "idle" &&
              (s.handoff.ringVersion === version || ids[i] === fresh),
          )
        );
      },
      90_000,
    )
    .catch(async (err) => {
      // Say where it stands: each node's ring and handoff.
      for (const id of ids) {
        const s = await status(c, id).catch(() => undefined);
        console.log(`${id}: ring ${s?.cluster.ringVersion}, handoff ${JSON.stringify(s?.handoff)}`);
      }
      throw err;
    });
  return version;
}

/** The test's keys a stopped node holds. */
async function held(dataDir: string): Promise<Set<string>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Set<string>();
  try {
    for (let i = 0; i < KEYS; i++)
      if ((await e.get(DATA.encode(Buffer.from(`hk-${i}`)))) !== undefined) out.add(`hk-${i}`);
  } finally {
    await e.close();
  }
  return out;
}

describe("a handoff interrupted by SIGKILL completes after the restart", { timeout: 300_000 }, () => {
  const c = new TestCluster([
    ...FAST_FLAGS,
    "--partitions",
    `${Q}`,
    "--anti-entropy",
    "off",
    "--hinted-handoff",
    "off",
  ]);
  after(() => c.shutdown());

  test("a sender killed midway, then the receiver: every key reaches its new replicas", async () => {
    await c.startJoined(["a", "b", "c"]);
    for (let i = 0; i < KEYS; i++)
      assert.equal((await http(c.url("a", `/kv/hk-${i}?w=3`), { method: "PUT", body: VALUE })).status, 204);
    const v0 = (await status(c, "a")).cluster.ringVersion;

    // d joins while the senders are slow; a is killed once it has sent some and not all.
    for (const id of ["a", "b", "c"]) await setRate(c, id, SLOW);
    await c.start("d", { join: "a" });
    await c.until(
      "a's pass for d's join to be under way",
      async () => {
        const h = (await status(c, "a")).handoff;
        return h.ringVersion > v0 && h.state === "running" && h.keysSent >= 30;
      },
      60_000,
    );
    const sentBefore = (await status(c, "a")).handoff.keysSent;
    await c.kill("a");
    await c.start("a");
    for (const id of ["b", "c"]) await setRate(c, id, 64 << 20);
    const v1 = await settled(c, ["a", "b", "c", "d"], v0);
    console.log(
      `join of d: a was killed after sending ${sentBefore} copies; after its restart every pass completed`,
    );

    // e joins; e, the receiver, is killed once it has received some.
    for (const id of ["a", "b", "c", "d"]) await setRate(c, id, SLOW);
    await c.start("e", { join: "a" });
    await c.until(
      "a pass for e's join to be under way",
      async () => {
        const ss = await Promise.all(["a", "b", "c", "d"].map((id) => status(c, id)));
        return ss.some(
          (s) => s.handoff.ringVersion > v1 && s.handoff.state === "running" && s.handoff.keysSent >= 30,
        );
      },
      60_000,
    );
    await c.kill("e");
    console.log("join of e: e was killed once a sender had sent it 30 copies");
    await c.start("e");
    for (const id of ["a", "b", "c", "d"]) await setRate(c, id, 64 << 20);
    await settled(c, ["a", "b", "c", "d", "e"], v1, "e");

    // Every node holds every key of every partition it replicates in the final ring.
    const ring = (await http(c.url("a", "/ring"))).json() as unknown as RingDoc;
    const table = new PreferenceTable(
      { partitions: Q, owners: ring.owners },
      ring.members.map((m) => ({ ...m, zone: undefined })),
      3,
    );
    for (const id of ["a", "b", "c", "d", "e"]) {
      assert.equal(await c.stop(id), 0);
      const has = await held(c.nodes.get(id)!.dataDir);
      const missing: string[] = [];
      for (let i = 0; i < KEYS; i++) {
        const k = `hk-${i}`;
        if (table.forPartition(partitionOf(Buffer.from(k), Q)).includes(id) && !has.has(k)) missing.push(k);
      }
      assert.deepEqual(missing.slice(0, 5), [], `${id} lacks ${missing.length} keys it replicates`);
    }
  });
});
