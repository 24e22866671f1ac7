/**
 * A node whose writes are not fsynced before replication takes a new actor after an unclean stop (so it
 * never names two different writes with one dot); a clean stop, or fsync durability, keeps the actor.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { TestCluster } from "./harness.js";

const cluster = new TestCluster();
after(() => cluster.shutdown());

async function actorOf(id: string): Promise<string> {
  const s = (await (await fetch(cluster.url(id, "/status"))).json()) as { node: { actor: string } };
  return s.node.actor;
}

test("durability none: SIGKILL renews the actor, SIGTERM keeps it", { timeout: 60_000 }, async () => {
  const args = ["--durability", "none", "--n", "1", "--r", "1", "--w", "1"];
  await cluster.start("a", { args });
  const first = await actorOf("a");
  assert.equal((await fetch(cluster.url("a", "/kv/k"), { method: "PUT", body: "v1" })).status, 204);

  assert.equal(await cluster.stop("a"), 0);
  await cluster.start("a", { args });
  assert.equal(await actorOf("a"), first, "a clean stop keeps the actor");

  await cluster.kill("a");
  await cluster.start("a", { args });
  const renewed = await actorOf("a");
  assert.notEqual(renewed, first, "an unclean stop takes a new actor");
  assert.match(renewed, /^a\.[0-9a-f]{8}$/);
  // Data written under the old actor is still there and still versioned by it.
  const res = await fetch(cluster.url("a", "/kv/k"));
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "v1");
});

test("durability fsync: SIGKILL keeps the actor", { timeout: 60_000 }, async () => {
  await cluster.start("b");
  const first = await actorOf("b");
  await cluster.kill("b");
  await cluster.start("b");
  assert.equal(await actorOf("b"), first);
});
