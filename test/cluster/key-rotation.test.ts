/**
 * A cluster key rotated while three real nodes (through the CLI) serve a steady workload, by the steps
 * the README gives, each node with its own key file, edited with `ringstore cluster-key`:
 * 1. add the new key to every node's file (they accept it, still connect with the old one);
 * 2. once all accept it, switch every node to it (connections made with the old key drain);
 * 3. once all connect with it, drop the old key.
 * No request fails meanwhile, no node restarts; afterwards a node with the old key cannot join, and one
 * with the new key can.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync } from "node:fs";
import * as path from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");
const cluster = new TestCluster();
after(() => cluster.shutdown());

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });
  assert.equal(r.status, 0, `ringstore ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

interface PeerSecurity {
  key: string;
  accepted: string[];
  connections: { incoming: Record<string, number>; outgoing: Record<string, number> };
}

async function security(id: string): Promise<PeerSecurity> {
  return ((await (await fetch(cluster.url(id, "/status"))).json()) as { peerSecurity: PeerSecurity })
    .peerSecurity;
}

test("a key rotated on a running cluster: no failed request, no restart", { timeout: 180_000 }, async () => {
  const ids = ["n1", "n2", "n3"];
  await cluster.start("n1");
  const files: Record<string, string> = { n1: cluster.keyFile! };
  for (const id of ["n2", "n3"]) {
    files[id] = path.join(cluster.root, `${id}.key`);
    copyFileSync(cluster.keyFile!, files[id]!);
    chmodSync(files[id]!, 0o600);
    await cluster.start(id, { join: "n1", args: ["--cluster-key-file", files[id]!] });
  }
  for (const id of ids) await cluster.converged(id, ids);
  const oldId = (await security("n1")).key;
  const oldKey = path.join(cluster.root, "old.key");
  copyFileSync(cluster.keyFile!, oldKey);

  // The workload: writes and reads through every node, each answer checked.
  let stop = false;
  let ops = 0;
  const failures: string[] = [];
  const worker = async (w: number) => {
    for (let i = 0; !stop; i++) {
      const node = ids[(w + i) % 3]!;
      const key = `w${w}-${i % 50}`;
      try {
        const put = await fetch(cluster.url(node, `/kv/${key}`), { method: "PUT", body: `v${i}` });
        await put.arrayBuffer();
        if (put.status !== 204) failures.push(`PUT ${key} via ${node}: ${put.status}`);
        const get = await fetch(cluster.url(ids[(w + i + 1) % 3]!, `/kv/${key}`));
        const text = await get.text();
        if (get.status !== 200 && get.status !== 300) failures.push(`GET ${key}: ${get.status} ${text}`);
        ops += 2;
      } catch (err) {
        failures.push(`${key} via ${node}: ${(err as Error).message}`);
      }
    }
  };
  const workers = Array.from({ length: 4 }, (_, w) => worker(w));
  await sleep(500);

  // 1. Every node accepts the new key too.
  const fresh = path.join(cluster.root, "new.key");
  const newId = /current ([0-9a-f]{16})/.exec(cli("cluster-key", "generate", "--file", fresh))![1]!;
  for (const id of ids) cli("cluster-key", "add", "--file", files[id]!, "--from", fresh);
  for (const id of ids)
    await cluster.until(
      `${id} accepts the new key`,
      async () => (await security(id)).accepted.includes(newId),
      10_000,
    );
  // 2. Every node connects with it; connections made with the old key drain.
  for (const id of ids) cli("cluster-key", "use", "--file", files[id]!, "--id", newId);
  for (const id of ids)
    await cluster.until(
      `${id} connects with the new key only`,
      async () => {
        const s = await security(id);
        return (
          s.key === newId &&
          Object.keys(s.connections.outgoing).every((k) => k === newId) &&
          Object.keys(s.connections.incoming).every((k) => k === newId)
        );
      },
      15_000,
    );
  // 3. The old key goes.
  for (const id of ids) cli("cluster-key", "drop", "--file", files[id]!, "--id", oldId);
  for (const id of ids)
    await cluster.until(
      `${id} dropped the old key`,
      async () => (await security(id)).accepted.join() === newId,
      10_000,
    );
  await sleep(1000);
  stop = true;
  await Promise.all(workers);
  assert.deepEqual(failures, []);
  assert.ok(ops > 100, `only ${ops} requests ran`);
  for (const id of ids) {
    assert.equal(cluster.nodes.get(id)!.child?.exitCode, null, `${id} is running`);
    assert.match(cluster.nodes.get(id)!.output, new RegExp(`changed: peers now connect with key ${newId}`));
  }

  // The old key no longer gets in; the new one does.
  await assert.rejects(
    cluster.start("n4", { join: "n1", args: ["--cluster-key-file", oldKey] }),
    /the cluster refused this node's cluster key/,
  );
  await cluster.start("n4", { join: "n1", args: ["--cluster-key-file", fresh] });
  await cluster.converged("n1", [...ids, "n4"]);
});
