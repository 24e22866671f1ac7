/**
 * The key listing on real processes (3 nodes, N=3): 10,000 keys written, some deleted; `ringstore keys`
 * through the CLI lists each live key once and no deleted one, with a node down and writes going on;
 * a listing whose node is SIGKILLed mid-way goes on from its cursor on another node, each key once; a
 * bad cursor gets 400.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { RingstoreClient } from "../../src/client/client.js";
import { http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");
const KEYS = 10_000;

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T>(items: readonly T[], width: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

describe("listing the keys of a three-node cluster", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  const ids = ["a", "b", "c"];
  const live = new Set<string>();
  const deleted = new Set<string>();
  let client: RingstoreClient;

  before(async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ids) await c.converged(id, ids);
    client = new RingstoreClient(
      ids.map((id) => c.nodes.get(id)!.api),
      { connections: 8 },
    );
    const keys = Array.from(
      { length: KEYS },
      (_, i) => `user:${i}/${"x".repeat(i % 7)}${i % 10 === 0 ? " é%" : ""}`,
    );
    await pool(keys, 32, async (k) => client.put(k, `v${k}`));
    // Every 20th key deleted (read first, so that the tombstone covers the value).
    await pool(
      keys.filter((_, i) => i % 20 === 3),
      16,
      async (k) => {
        const cur = await client.get(k);
        await client.delete(k, { context: cur.context });
        deleted.add(k);
      },
    );
    for (const k of keys) if (!deleted.has(k)) live.add(k);
  });
  after(async () => {
    await client?.close();
    await c.shutdown();
  });

  test("ringstore keys lists each live key once, none deleted, with a node down and writes going on", async () => {
    await c.kill("c");
    let stop = false;
    let written = 0;
    const rewritten = new Set<string>();
    const writer = (async () => {
      const w = new RingstoreClient([c.nodes.get("a")!.api, c.nodes.get("b")!.api], { connections: 4 });
      try {
        for (let i = 0; !stop; i++) {
          // New keys, and blind overwrites of listed ones (they stay live: siblings).
          const k = i % 2 === 0 ? `new:${i}` : `user:${i * 7}/${"x".repeat((i * 7) % 7)}`;
          rewritten.add(k);
          await w.put(k, "w");
          written++;
        }
      } finally {
        await w.close();
      }
    })();
    const t0 = Date.now();
    const out = await run(
      process.execPath,
      [BIN, "keys", "--node", c.nodes.get("b")!.api, "--limit", "700"],
      {
        maxBuffer: 64 << 20,
      },
    );
    const ms = Date.now() - t0;
    stop = true;
    await writer;
    const lines = out.stdout.split("\n").filter((l) => l !== "");
    const counts = new Map<string, number>();
    for (const l of lines) counts.set(l, (counts.get(l) ?? 0) + 1);
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], "no key twice");
    // Keys outside printable text come percent-encoded (the " é%" ones have a '%').
    const decoded = new Set(lines.map((l) => (l.includes("%") ? decodeURIComponent(l) : l)));
    const missing = [...live].filter((k) => !decoded.has(k));
    assert.deepEqual(missing.slice(0, 5), [], `${missing.length} live keys missing`);
    // A deleted key written again meanwhile may come back; no other may.
    const back = [...deleted].filter((k) => decoded.has(k) && !rewritten.has(k));
    assert.deepEqual(back.slice(0, 5), [], "deleted keys listed");
    const stray = [...decoded].filter((k) => !live.has(k) && !rewritten.has(k));
    assert.deepEqual(stray.slice(0, 5), [], "keys never written");
    assert.ok(written > 0, "writes went on during the listing");
    process.stdout.write(
      `# listed ${lines.length} keys (${live.size} live before) in ${ms} ms, with ${written} writes meanwhile\n`,
    );
    await c.start("c");
    for (const id of ids) await c.converged(id, ids);
  });

  test("a listing whose node is SIGKILLed goes on from its cursor on another node, each key once", async () => {
    const cursorsSeen: string[] = [];
    const got: string[] = [];
    const lister = new RingstoreClient([c.nodes.get("a")!.api, c.nodes.get("b")!.api], { connections: 1 });
    try {
      let pages = 0;
      for await (const k of lister.keys({
        pageSize: 500,
        onPage: (p) => {
          pages++;
          if (p.cursor !== null) cursorsSeen.push(p.cursor);
        },
      })) {
        got.push(k.toString("utf8"));
        // After a few pages, the node serving them (and scanning its own keys) dies.
        if (got.length === 2000) await c.kill("a");
      }
      assert.ok(pages >= KEYS / 500, `${pages} pages`);
    } finally {
      await lister.close();
    }
    const seen = new Set(got);
    assert.equal(seen.size, got.length, "no key twice");
    const missing = [...live].filter((k) => !seen.has(k));
    assert.deepEqual(missing.slice(0, 5), [], `${missing.length} live keys missing`);
    assert.ok(cursorsSeen.length > 0);
    // The cursor is good on any node, and is refused once changed.
    const cur = cursorsSeen[0]!;
    const ok = await http(c.url("b", `/kv/?limit=3&cursor=${cur}`));
    assert.equal(ok.status, 200);
    assert.equal((ok.json().keys as string[]).length, 3);
    const bad = await http(c.url("b", `/kv/?cursor=${cur.slice(0, -2)}AA`));
    assert.equal(bad.status, 400);
    assert.equal(bad.json().error, "bad_cursor");
    assert.equal((await http(c.url("b", "/kv/?limit=0"))).status, 400);
    const m = await http(c.url("b", "/metrics"));
    assert.match(m.text, /ringstore_requests_total\{[^}]*op="list"[^}]*\} \d+/);
  });
});
