/**
 * A 3-node cluster of real processes on 127.0.0.1, started through the CLI (N=3, R=2, W=2): replication,
 * quorums under node crashes, siblings across coordinators, read repair, garbage on both ports.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { DATA } from "../../src/replication/keyspaces.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import { http, TestCluster } from "./harness.js";

/** Reads a key's sibling values straight from a stopped node's storage. */
async function storedValues(dataDir: string, key: string): Promise<string[]> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  try {
    const raw = await e.get(DATA.encode(Buffer.from(key)));
    if (raw === undefined) return [];
    return decodeSiblings(raw)
      .map((s) => (s.value.deleted ? "<deleted>" : Buffer.from(s.value.data).toString()))
      .sort();
  } finally {
    await e.close();
  }
}

describe("a three-node cluster", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  const ids = ["a", "b", "c"];
  before(async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ids) await c.converged(id, ids);
  });
  after(() => c.shutdown());

  const put = (node: string, key: string, value: string, headers: Record<string, string> = {}, q = "") =>
    http(c.url(node, `/kv/${key}${q}`), { method: "PUT", body: value, headers });
  const get = (node: string, key: string, q = "") => http(c.url(node, `/kv/${key}${q}`));

  test("writes through one node are read through the others", async () => {
    for (let i = 0; i < 20; i++) assert.equal((await put(ids[i % 3]!, `k${i}`, `v${i}`)).status, 204);
    for (let i = 0; i < 20; i++)
      for (const id of ids) {
        const r = await get(id, `k${i}`);
        assert.equal(r.status, 200, `k${i} via ${id}`);
        assert.equal(r.text, `v${i}`);
      }
    const s = (await http(c.url("a", "/status"))).json() as {
      partitions: { owned: number[]; replicated: number[]; total: number };
    };
    assert.equal(s.partitions.total, 1024);
    assert.ok(s.partitions.owned.length > 300 && s.partitions.owned.length < 400);
    assert.equal(
      s.partitions.replicated.length,
      1024,
      "with N=3 and 3 nodes every node replicates every partition",
    );
  });

  test("concurrent blind writes through different coordinators are siblings; the merged context resolves them everywhere", async () => {
    await Promise.all([put("a", "cart", "milk"), put("b", "cart", "eggs"), put("c", "cart", "bread")]);
    const r = await get("b", "cart", "?r=3");
    assert.equal(r.status, 300);
    const j = r.json() as { context: string; siblings: { value: string }[] };
    assert.deepEqual(j.siblings.map((s) => Buffer.from(s.value, "base64").toString()).sort(), [
      "bread",
      "eggs",
      "milk",
    ]);
    assert.equal((await put("c", "cart", "bread,eggs,milk", { "x-context": j.context }, "?w=3")).status, 204);
    for (const id of ids) {
      const x = await get(id, "cart", "?r=3");
      assert.equal(x.status, 200, `via ${id}`);
      assert.equal(x.text, "bread,eggs,milk");
    }
  });

  test("two writes with the same stale context through two different nodes both survive", async () => {
    await put("a", "doc", "v1", {}, "?w=3");
    const ctx = (await get("a", "doc")).headers.get("x-context")!;
    assert.equal((await put("b", "doc", "from-b", { "x-context": ctx })).status, 204);
    assert.equal((await put("c", "doc", "from-c", { "x-context": ctx })).status, 204);
    const r = await get("a", "doc", "?r=3");
    assert.equal(r.status, 300);
    const vals = (r.json().siblings as { value: string }[])
      .map((s) => Buffer.from(s.value, "base64").toString())
      .sort();
    assert.deepEqual(vals, ["from-b", "from-c"]);
  });

  test("garbage on the API and peer ports closes that connection; the node keeps serving", async () => {
    const send = (addr: string, bytes: Buffer) =>
      new Promise<void>((resolve) => {
        const [host, port] = addr.split(":");
        const s = net.connect(Number(port), host!, () => s.write(bytes));
        s.on("error", () => resolve());
        s.on("close", () => resolve());
        s.setTimeout(5000, () => s.destroy());
      });
    const a = c.nodes.get("a")!;
    await send(a.peer, Buffer.from("GET / HTTP/1.1\r\n\r\n"));
    await send(a.peer, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await send(a.peer, Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from([0xc1, 0xc1, 0xc1])]));
    await send(a.api, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x0d, 0x0a, 0x0d, 0x0a]));
    assert.equal((await http(c.url("a", "/health"))).status, 200);
    assert.equal((await put("a", "after-garbage", "ok")).status, 204);
    assert.equal((await get("b", "after-garbage")).text, "ok");
  });

  test("one node down: R=2/W=2 keep working; two down: 503 in time, r=1/w=1 work; a returning replica gets what it missed", async () => {
    await c.kill("c");
    for (let i = 0; i < 10; i++) {
      assert.equal((await put("a", `m${i}`, `x${i}`)).status, 204, `write m${i} with c down`);
      assert.equal((await get("b", `m${i}`)).text, `x${i}`);
    }
    await c.kill("b");
    const t0 = Date.now();
    const w = await put("a", "two-down", "v", {}, "?timeout=1500");
    const r = await get("a", "m1", "?timeout=1500");
    assert.equal(w.status, 503);
    assert.equal(w.json().error, "unavailable");
    assert.equal(r.status, 503);
    assert.deepEqual([r.json().needed, r.json().replied], [2, 1]);
    assert.ok(Date.now() - t0 < 4000, "503s come within the timeout");
    assert.equal((await put("a", "one-of-three", "w1", {}, "?w=1")).status, 204);
    assert.equal((await get("a", "one-of-three", "?r=1")).text, "w1");
    // The write that got 503 was not rolled back on the coordinator: a blind w=1 write becomes its sibling.
    assert.equal((await put("a", "two-down", "w1", {}, "?w=1")).status, 204);
    const both = await get("a", "two-down", "?r=1");
    assert.equal(both.status, 300);
    assert.deepEqual(
      (both.json().siblings as { value: string }[])
        .map((s) => Buffer.from(s.value, "base64").toString())
        .sort(),
      ["v", "w1"],
    );

    // Bring b and c back. c missed m0..m9: a kept hints for it (c did not acknowledge them), and delivers
    // them once c is up; reads with r=3 would repair what a hint did not bring.
    await c.start("b");
    await c.start("c");
    for (const id of ids) await c.converged(id, ids);
    for (let i = 0; i < 10; i++) assert.equal((await get("a", `m${i}`, "?r=3")).text, `x${i}`);
    await c.until("a's hints for c to be delivered", async () => {
      const s = (await http(c.url("a", "/status"))).json() as { hintedHandoff: { backlog: number } };
      return s.hintedHandoff.backlog === 0;
    });
    // Let the last repairs land, then check c's own storage after a clean stop.
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(await c.stop("c"), 0);
    for (let i = 0; i < 10; i++)
      assert.deepEqual(await storedValues(c.nodes.get("c")!.dataDir, `m${i}`), [`x${i}`]);
    // And the resolved cart of the earlier test is resolved on this replica too.
    assert.deepEqual(await storedValues(c.nodes.get("c")!.dataDir, "cart"), ["bread,eggs,milk"]);
  });
});
