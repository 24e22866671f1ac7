/**
 * A rolling restart under load, on real processes: each of three nodes in turn is stopped (SIGTERM) and
 * started again on its data directory while clients keep writing. The nodes listen on port 0, so every
 * restart moves a node to new addresses, as a restart on a new machine or container does.
 *
 * - Every node finds the cluster again. The last one restarted has only the view it saved: its peers
 *   must be at the addresses that view holds, although both of them moved while it ran (a member's new
 *   addresses are a change of the saved view, not only a new status).
 * - No write fails: a stopping node answers what it has started, and turns away what it has not with a
 *   503 that says so (`stopping`), which the client sends to another node.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { RingstoreClient, RingstoreError } from "../../src/client/client.js";
import { TestCluster } from "./harness.js";

const c = new TestCluster();
after(() => c.shutdown());

test("a rolling restart that moves every node: all rejoin from their saved views, no write fails", {
  timeout: 120_000,
}, async (t) => {
  const ids = ["a", "b", "c"];
  await c.start("a");
  await c.start("b", { join: "a" });
  await c.start("c", { join: "a" });
  // Up at the addresses each has now, on every node.
  const rejoined = async () => {
    for (const x of ids) await c.converged(x, ids, { atAddresses: true, ms: 20_000 });
  };
  await rejoined();

  // Every address a node has had: the client skips for a while one that refuses connections.
  const addresses = new Set(ids.map((id) => c.nodes.get(id)!.api));
  let db = new RingstoreClient([...addresses]);
  const clients = [db];
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const worker = async (w: number) => {
    const end = Date.now() + 90_000;
    for (let i = 0; !stop && i < 200_000 && Date.now() < end; i++) {
      try {
        // A new key each time: blind writes to the same keys would pile up siblings up to the limit.
        await db.put(`roll-${w}-${i}`, `${w}:${i}`);
        ok++;
      } catch (err) {
        failures.push(err instanceof RingstoreError ? `${err.code}: ${err.message}` : String(err));
      }
    }
  };
  const load = [0, 1, 2, 3, 4, 5].map(worker);
  try {
    await c.until("writes to flow", async () => ok > 100, 20_000);
    for (const id of ids) {
      assert.equal(await c.stop(id), 0, `${id} stops cleanly`);
      await c.start(id);
      addresses.add(c.nodes.get(id)!.api);
      await rejoined();
      db = new RingstoreClient([...addresses]);
      clients.push(db);
      const base = ok;
      await c.until(`writes to flow after ${id}'s restart`, async () => ok > base + 200, 20_000);
    }
  } finally {
    stop = true;
    await Promise.all(load);
    await Promise.all(clients.map((x) => x.close()));
  }
  t.diagnostic(`${ok} writes succeeded, ${failures.length} failed`);
  assert.deepEqual(failures, []);
});
