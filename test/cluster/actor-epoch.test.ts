/**
 * A node takes a new actor after an unclean stop, whatever its durability: a coordinator sends a new
 * version to the other replicas while it is still making it durable itself, so after a crash its own
 * copy may be lost while others hold it, and reusing the actor could name two writes with one dot. A
 * clean stop keeps the actor.
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

test("durability fsync: SIGKILL renews the actor too, SIGTERM keeps it", { timeout: 60_000 }, async () => {
  await cluster.start("b");
  const first = await actorOf("b");
  assert.equal(await cluster.stop("b"), 0);
  await cluster.start("b");
  assert.equal(await actorOf("b"), first, "a clean stop keeps the actor");
  await cluster.kill("b");
  await cluster.start("b");
  assert.notEqual(await actorOf("b"), first, "an unclean stop takes a new actor");
});
