/**
 * The public HTTP contract (../shared/spec/http-api.md) on a cluster of one node (N=R=W=1), driven over
 * real HTTP against a node started in this process; some tests run the built CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { type NodeConfigInput, validateNodeConfig } from "../../src/node/config.js";
import { type RunningNode, startNode } from "../../src/node/node.js";

const root = mkdtempSync(path.join(tmpdir(), "ringstore-api-"));
after(() => rmSync(root, { recursive: true, force: true }));

async function start(
  name: string,
  extra: Partial<NodeConfigInput> = {},
): Promise<{ node: RunningNode; url: string }> {
  const config = validateNodeConfig({
    id: name,
    api: "127.0.0.1:0",
    peer: "127.0.0.1:0",
    data: path.join(root, name),
    n: 1,
    r: 1,
    w: 1,
    ...extra,
  });
  const node = await startNode(config);
  return { node, url: `http://127.0.0.1:${node.api.port}` };
}

interface Res {
  status: number;
  headers: Headers;
  body: Buffer;
  json: () => Record<string, unknown>;
}

async function req(url: string, init: RequestInit = {}): Promise<Res> {
  const r = await fetch(url, init);
  const body = Buffer.from(await r.arrayBuffer());
  return { status: r.status, headers: r.headers, body, json: () => JSON.parse(body.toString("utf8")) };
}

describe("single node", () => {
  let node: RunningNode;
  let url: string;
  before(async () => {
    ({ node, url } = await start("n1"));
  });
  after(() => node.stop());

  const put = (key: string, value: string | Uint8Array, headers: Record<string, string> = {}, q = "") =>
    req(`${url}/kv/${key}${q}`, { method: "PUT", body: value, headers });

  test("a value round-trips with its content type and a context", async () => {
    const w = await put("plain", "hello", { "content-type": "text/plain" });
    assert.equal(w.status, 204);
    assert.match(w.headers.get("x-context")!, /^[A-Za-z0-9_-]+$/);
    const r = await req(`${url}/kv/plain`);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), "hello");
    assert.equal(r.headers.get("content-type"), "text/plain");
    assert.ok(r.headers.get("x-context"));
  });

  test("a missing key is 404 with a JSON error and no context", async () => {
    const r = await req(`${url}/kv/never-written`);
    assert.equal(r.status, 404);
    assert.equal(r.json().error, "not_found");
    assert.equal(typeof r.json().message, "string");
    assert.equal(r.headers.get("x-context"), null);
  });

  test("blind writes become siblings; a write with their context supersedes them", async () => {
    await put("cart", "milk");
    await put("cart", "eggs");
    const r = await req(`${url}/kv/cart`);
    assert.equal(r.status, 300);
    const j = r.json() as {
      context: string;
      siblings: { value: string; contentType: string; deleted: boolean }[];
    };
    assert.equal(j.context, r.headers.get("x-context"));
    assert.deepEqual(j.siblings.map((s) => Buffer.from(s.value, "base64").toString()).sort(), [
      "eggs",
      "milk",
    ]);
    assert.ok(j.siblings.every((s) => s.deleted === false));
    const w = await put("cart", "eggs,milk", { "x-context": j.context });
    assert.equal(w.status, 204);
    const r2 = await req(`${url}/kv/cart`);
    assert.equal(r2.status, 200);
    assert.equal(r2.body.toString(), "eggs,milk");
  });

  test("two writes carrying the same context both survive", async () => {
    await put("same", "v0");
    const ctx = (await req(`${url}/kv/same`)).headers.get("x-context")!;
    assert.equal((await put("same", "a", { "x-context": ctx })).status, 204);
    assert.equal((await put("same", "b", { "x-context": ctx })).status, 204);
    const r = await req(`${url}/kv/same`);
    assert.equal(r.status, 300);
    const vals = (r.json().siblings as { value: string }[])
      .map((s) => Buffer.from(s.value, "base64").toString())
      .sort();
    assert.deepEqual(vals, ["a", "b"]);
  });

  test("a write supersedes exactly what its context covers", async () => {
    await put("partial", "x");
    const ctxX = (await req(`${url}/kv/partial`)).headers.get("x-context")!;
    await put("partial", "y"); // concurrent with x
    await put("partial", "x2", { "x-context": ctxX }); // replaces x only; y stays
    const r = await req(`${url}/kv/partial`);
    assert.equal(r.status, 300);
    const vals = (r.json().siblings as { value: string }[])
      .map((s) => Buffer.from(s.value, "base64").toString())
      .sort();
    assert.deepEqual(vals, ["x2", "y"]);
  });

  test("delete with context gives 404 with a context; a write with it supersedes the tombstone", async () => {
    await put("gone", "v");
    const ctx = (await req(`${url}/kv/gone`)).headers.get("x-context")!;
    const d = await req(`${url}/kv/gone`, { method: "DELETE", headers: { "x-context": ctx } });
    assert.equal(d.status, 204);
    const r = await req(`${url}/kv/gone`);
    assert.equal(r.status, 404);
    const tomb = r.headers.get("x-context");
    assert.ok(tomb, "404 of a deleted key carries a context");
    assert.equal((await put("gone", "back", { "x-context": tomb! })).status, 204);
    const r2 = await req(`${url}/kv/gone`);
    assert.equal(r2.status, 200);
    assert.equal(r2.body.toString(), "back");
  });

  test("a delete concurrent with a live write shows as a deleted sibling", async () => {
    await put("racy", "live");
    await req(`${url}/kv/racy`, { method: "DELETE" });
    const r = await req(`${url}/kv/racy`);
    assert.equal(r.status, 300);
    const sibs = r.json().siblings as { value: string; deleted: boolean }[];
    assert.deepEqual(sibs.map((s) => s.deleted).sort(), [false, true]);
    assert.equal(sibs.find((s) => s.deleted)!.value, "");
  });

  test("binary keys and values", async () => {
    const value = Buffer.from([0, 255, 1, 254, 0, 0, 10, 13]);
    const key = "%00%FF%2F%20k%C3%A9";
    assert.equal((await put(key, value, { "content-type": "application/x-bin" })).status, 204);
    const r = await req(`${url}/kv/${key}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, value);
    assert.equal(r.headers.get("content-type"), "application/x-bin");
    // The same bytes, encoded differently, are the same key.
    const r2 = await req(`${url}/kv/%00%ff%2f%20k%c3%a9`);
    assert.deepEqual(r2.body, value);
    assert.equal((await put("untyped", new Uint8Array([1, 2]))).status, 204);
    assert.equal((await req(`${url}/kv/untyped`)).headers.get("content-type"), "application/octet-stream");
    assert.equal((await put("empty-value", Buffer.alloc(0))).status, 204);
    const r3 = await req(`${url}/kv/empty-value`);
    assert.equal(r3.status, 200);
    assert.equal(r3.body.length, 0);
  });

  test("key and value limits", async () => {
    assert.equal((await put("k".repeat(1024), "ok")).status, 204);
    const long = await put("k".repeat(1025), "no");
    assert.equal(long.status, 400);
    assert.equal(long.json().error, "bad_key");
    // An empty key is refused; GET /kv/ (no key) is the key listing.
    const empty = await put("", "no");
    assert.equal(empty.status, 400);
    assert.equal(empty.json().error, "bad_key");
    assert.equal((await req(`${url}/kv/`)).status, 200);
    const bad = await req(`${url}/kv/a%zz`);
    assert.equal(bad.status, 400);
    assert.equal((await put("max-value", Buffer.alloc(1024 * 1024, 1))).status, 204);
    const big = await put("too-big", Buffer.alloc(1024 * 1024 + 1, 1));
    assert.equal(big.status, 413);
    assert.equal(big.json().error, "value_too_large");
    assert.equal((await req(`${url}/kv/too-big`)).status, 404, "nothing of a refused value is stored");
  });

  /** Opens a connection, lets `writes` send on it, and collects what comes back until `until` matches. */
  const raw = (writes: (s: net.Socket) => void, until: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const s = net.connect(node.api.port, "127.0.0.1", () => writes(s));
      let got = "";
      const finish = () => {
        s.destroy();
        resolve(got);
      };
      s.on("data", (d) => {
        got += d.toString("latin1");
        if (until.test(got)) finish();
      });
      s.on("close", finish);
      s.on("error", reject);
      s.setTimeout(10_000, finish);
    });

  test("a value far over the limit gets its 413, not a reset, and the connection stays usable", async () => {
    const body = Buffer.alloc(4 * 1024 * 1024, 7);
    const got = await raw((s) => {
      s.write(`PUT /kv/huge HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`);
      s.write(body);
      s.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    }, /"status":"ok"/);
    assert.match(got, /^HTTP\/1\.1 413 /);
    assert.match(got, /"error":"value_too_large"/);
    assert.match(got, /HTTP\/1\.1 200 [\s\S]*"status":"ok"/, "the next request on the connection is served");
    // Without a Content-Length (chunked), the limit is found while reading.
    const chunk = Buffer.alloc(512 * 1024, 1);
    const chunked = await raw((s) => {
      s.write("PUT /kv/huge HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
      for (let i = 0; i < 3; i++)
        s.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]));
      s.write("0\r\n\r\n");
    }, /value_too_large/);
    assert.match(chunked, /^HTTP\/1\.1 413 /);
    assert.equal((await req(`${url}/kv/huge`)).status, 404, "nothing of it is stored");
  });

  test("Expect: 100-continue: a value over the limit is refused before it is sent; one within it is taken", async () => {
    const refused = await raw(
      (s) =>
        s.write(
          `PUT /kv/cont HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: ${2 * 1024 * 1024}\r\n\r\n`,
        ),
      /value_too_large/,
    );
    assert.match(refused, /^HTTP\/1\.1 413 /, "no 100 Continue first");
    const taken = await raw((s) => {
      s.write("PUT /kv/cont HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n");
      s.once("data", () => s.write("hello"));
    }, /HTTP\/1\.1 204 /);
    assert.match(taken, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 204 /);
    assert.equal((await req(`${url}/kv/cont`)).body.toString(), "hello");
  });

  test("HEAD answers as GET without a body; a route's other methods get 405 with Allow", async () => {
    await put("headed", "twelve bytes", { "content-type": "text/plain" });
    const h = await raw((s) => s.write("HEAD /kv/headed HTTP/1.1\r\nhost: x\r\n\r\n"), /\r\n\r\n/);
    assert.match(h, /^HTTP\/1\.1 200 /);
    assert.match(h, /content-length: 12\r\n/i);
    assert.match(h, /x-context: /i);
    assert.ok(h.endsWith("\r\n\r\n"), "no body");
    assert.equal((await req(`${url}/health`, { method: "HEAD" })).status, 200);
    const wrong = await req(`${url}/cluster/leave`);
    assert.equal(wrong.status, 405);
    assert.equal(wrong.json().error, "method_not_allowed");
    assert.equal(wrong.headers.get("allow"), "POST");
    const kv = await req(`${url}/kv/x`, { method: "PATCH", body: "v" });
    assert.equal(kv.status, 405);
    assert.equal(kv.headers.get("allow"), "GET, HEAD, PUT, DELETE");
  });

  test("garbage contexts get 400 bad_context and change nothing", async () => {
    await put("guarded", "original");
    const good = (await req(`${url}/kv/guarded`)).headers.get("x-context")!;
    await put("other", "x");
    const otherKeyCtx = (await req(`${url}/kv/other`)).headers.get("x-context")!;
    const flipped = good.slice(0, 5) + (good[5] === "A" ? "B" : "A") + good.slice(6);
    for (const ctx of [
      "garbage",
      "",
      "!!!",
      "A".repeat(9000),
      flipped,
      otherKeyCtx,
      good.slice(0, -2),
      `${good}AA`,
    ]) {
      for (const method of ["PUT", "DELETE"]) {
        const r = await req(`${url}/kv/guarded`, {
          method,
          body: method === "PUT" ? "evil" : null,
          headers: { "x-context": ctx },
        });
        assert.equal(r.status, 400, `${method} with context ${JSON.stringify(ctx.slice(0, 20))}`);
        assert.equal(r.json().error, "bad_context");
      }
    }
    const r = await req(`${url}/kv/guarded`);
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), "original");
  });

  test("X-Context given twice gets 400 bad_context saying so", async () => {
    const w = await put("twice", "v");
    const token = w.headers.get("x-context")!;
    const h = new Headers();
    h.append("x-context", token);
    h.append("x-context", token);
    const r = await req(`${url}/kv/twice`, { method: "PUT", body: "w", headers: h });
    assert.equal(r.status, 400);
    assert.equal(r.json().error, "bad_context");
    assert.match(String(r.json().message), /more than once/);
  });

  test("garbage parameters get 400 bad_parameter", async () => {
    for (const q of [
      "r=0",
      "r=2",
      "r=abc",
      "r=-1",
      "r=1.5",
      "r=0000000000001",
      "timeout=abc",
      "timeout=0",
      "r=1&r=1",
    ]) {
      const r = await req(`${url}/kv/p?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.json().error, "bad_parameter", q);
    }
    for (const q of ["w=2", "w=zero", "timeout=-5", "w=all&w=one"]) {
      const r = await put("p", "v", {}, `?${q}`);
      assert.equal(r.status, 400, q);
    }
    for (const q of ["r=1", "r=01", "r=0001", "r=one", "r=quorum", "r=all", "timeout=100"]) {
      assert.equal((await req(`${url}/kv/p?${q}`)).status, 404, q);
    }
    assert.equal((await put("p", "v", {}, "?w=all&timeout=1000")).status, 204);
  });

  test("operational endpoints", async () => {
    const h = await req(`${url}/health`);
    assert.equal(h.status, 200);
    assert.deepEqual(h.json(), { status: "ok" });
    const s = (await req(`${url}/status`)).json() as {
      node: { id: string; api: string };
      members: { id: string; state: string }[];
      hintedHandoff: { backlog: number };
    };
    assert.equal(s.node.id, "n1");
    assert.equal(s.node.api, `127.0.0.1:${node.api.port}`);
    assert.deepEqual(
      s.members.map((m) => [m.id, m.state]),
      [["n1", "up"]],
    );
    assert.equal(s.hintedHandoff.backlog, 0);
    const m = (await req(`${url}/metrics`)).body.toString();
    for (const name of [
      "ringstore_requests_total",
      "ringstore_request_duration_seconds_bucket",
      "ringstore_replica_timeouts_total",
      "ringstore_read_repairs_total",
      "ringstore_hints_stored_total",
      "ringstore_storage_write_amplification",
      "ringstore_storage_flushes_total",
    ])
      assert.ok(m.includes(name), name);
    assert.match(m, /ringstore_requests_total\{op="put",status="204"/);
  });

  test("unknown routes and methods get JSON errors", async () => {
    const r = await req(`${url}/nope`);
    assert.equal(r.status, 404);
    assert.equal(r.json().error, "not_found");
    const p = await req(`${url}/kv/x`, { method: "POST", body: "v" });
    assert.equal(p.status, 405);
    assert.equal(p.json().error, "method_not_allowed");
  });

  test("any Content-Type is kept as sent, even one that is not a valid media type", async () => {
    for (const [i, ct] of ["garbage", ";;;", "text/x-odd; q=="].entries()) {
      const w = await put(`odd-type-${i}`, "v", { "content-type": ct });
      assert.equal(w.status, 204, ct);
      const r = await req(`${url}/kv/odd-type-${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), ct);
    }
  });

  test("metrics count every request under its final status, errors included", async () => {
    const count = async (op: string, status: number) => {
      const m = (await req(`${url}/metrics`)).body.toString();
      const line = m
        .split("\n")
        .find((l) => l.startsWith(`ringstore_requests_total{op="${op}",status="${status}"`));
      return line === undefined ? 0 : Number(line.split(" ").pop());
    };
    const before400 = await count("get", 400);
    const before413 = await count("put", 413);
    const badContext400 = await count("put", 400);
    assert.equal((await req(`${url}/kv/x?r=0`)).status, 400);
    assert.equal((await put("x", Buffer.alloc(1024 * 1024 + 1))).status, 413);
    assert.equal((await put("x", "v", { "x-context": "bad" })).status, 400);
    assert.equal(await count("get", 400), before400 + 1);
    assert.equal(await count("put", 413), before413 + 1);
    assert.equal(await count("put", 400), badContext400 + 1);
  });

  test("requests the HTTP parser refuses get the contract's JSON error body", async () => {
    const raw = (text: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(node.api.port, "127.0.0.1", () => s.write(text));
        let got = "";
        s.on("data", (d) => {
          got += d.toString("latin1");
        });
        s.on("close", () => resolve(got));
        s.on("error", reject);
        s.setTimeout(5000, () => s.destroy());
      });
    // A key far over its limit makes the request line longer than Node's header limit (16 KiB).
    const long = await raw(`GET /kv/${"k".repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`);
    assert.match(long, /^HTTP\/1\.1 400 /);
    const body = JSON.parse(long.slice(long.indexOf("\r\n\r\n") + 4)) as Record<string, string>;
    assert.equal(body.error, "bad_request");
    assert.match(body.message ?? "", /exceed/);
    const bad = await raw("PUT /kv/x HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n");
    assert.match(bad, /^HTTP\/1\.1 400 /);
    assert.match(bad, /"error":"bad_request"/);
    assert.equal((await req(`${url}/health`)).status, 200);
  });

  test("bytes after a request that asked to close get no second answer after the first (found by the fuzzer)", async () => {
    // A DELETE whose body was sent without a Content-Length (Node's client does that with agent:false): the
    // body reads as a next request on a connection that said close. Its answer must be the last bytes.
    const got = await new Promise<string>((resolve, reject) => {
      const s = net.connect(node.api.port, "127.0.0.1", () =>
        s.write("DELETE /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\naaaaaaaaaa"),
      );
      let text = "";
      s.on("data", (d) => {
        text += d.toString("latin1");
      });
      s.on("close", () => resolve(text));
      s.on("error", reject);
      s.setTimeout(5000, () => s.destroy());
    });
    assert.match(got, /^HTTP\/1\.1 405 /);
    assert.equal(got.match(/HTTP\/1\.1 /g)?.length, 1, got);
    assert.ok(got.endsWith('"DELETE is not supported on /metrics"}'), got);
  });

  test("garbage on the API port closes that connection and the node keeps serving", async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect(node.api.port, "127.0.0.1", () => {
        s.write(Buffer.from([0x16, 0x03, 0x01, 0xff, 0x00, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
      });
      s.on("error", () => resolve());
      s.on("close", () => resolve());
      s.setTimeout(5000, () => s.destroy());
    });
    assert.equal((await req(`${url}/health`)).status, 200);
  });
});

test("a node whose data belongs to one cluster refuses --join to another, saying why", async () => {
  const a = await start("join-a");
  try {
    // join-b's data directory holds a cluster of its own (a first start without --join)...
    const b = await start("join-b");
    await b.node.stop();
    // ...so a start with --join to another cluster's member must not quietly run that old cluster.
    await assert.rejects(
      start("join-b", { join: `127.0.0.1:${a.node.peer.port}` }),
      /already belongs to cluster [0-9a-f]+, but --join .* is a member of another cluster/,
    );
    // A restart whose --join peers cannot be reached goes on (a restart while the others are down).
    const again = await start("join-b", { join: `127.0.0.1:${b.node.peer.port}` });
    await again.node.stop();
  } finally {
    await a.node.stop();
  }
});

test("members.json carries a format and a checksum; a damaged one stops the start, saying so", async () => {
  const { node } = await start("view");
  await node.stop();
  const file = path.join(root, "view", "members.json");
  const saved = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  assert.equal(saved.format, "ringstore-members");
  assert.equal(saved.version, 1);
  assert.equal(typeof saved.crc32, "number");
  // Still JSON, but a member's weight changed: the checksum catches it.
  const text = readFileSync(file, "utf8");
  assert.match(text, /"weight":1\b/);
  writeFileSync(file, text.replace(/"weight":1\b/, '"weight":2'));
  await assert.rejects(start("view"), /members\.json is damaged \(checksum mismatch\).*--join/);
  writeFileSync(file, text.slice(0, 100));
  await assert.rejects(start("view"), /members\.json is damaged \(not valid JSON\)/);
  writeFileSync(file, text.replace('"version":1', '"version":2'));
  await assert.rejects(start("view"), /members\.json has format version 2; this build reads version 1/);
  // A view from before the format that a crash tore (it was written without fsync) is treated as
  // missing, as it always was: the node starts from its identity and gossip.
  writeFileSync(file, '{"members": [');
  const torn = await start("view");
  await torn.node.stop();
  // A view saved before the format existed (no format, no checksum) is read as it is.
  const { format: _f, version: _v, crc32: _c, ...legacy } = saved;
  writeFileSync(file, JSON.stringify(legacy));
  const again = await start("view");
  await again.node.stop();
  assert.equal((JSON.parse(readFileSync(file, "utf8")) as { format?: string }).format, "ringstore-members");
});

test("too many siblings: writes past the limit get 409 until resolved", async () => {
  const { node, url } = await start("sib", { maxSiblings: 3 });
  try {
    for (let i = 0; i < 3; i++)
      assert.equal((await req(`${url}/kv/k`, { method: "PUT", body: `v${i}` })).status, 204);
    const refused = await req(`${url}/kv/k`, { method: "PUT", body: "v3" });
    assert.equal(refused.status, 409);
    assert.equal(refused.json().error, "too_many_siblings");
    const r = await req(`${url}/kv/k`);
    assert.equal((r.json().siblings as unknown[]).length, 3);
    const ok = await req(`${url}/kv/k`, {
      method: "PUT",
      body: "merged",
      headers: { "x-context": r.headers.get("x-context")! },
    });
    assert.equal(ok.status, 204);
    assert.equal((await req(`${url}/kv/k`)).body.toString(), "merged");
  } finally {
    await node.stop();
  }
});

test("a quorum larger than the key's replicas in the cluster: 503 saying too few are up; a write is not applied", async () => {
  const { node, url } = await start("few", { n: 3, r: 1, w: 1 });
  try {
    const read = await req(`${url}/kv/k?r=all`);
    assert.equal(read.status, 503);
    assert.equal(read.json().error, "unavailable");
    assert.match(
      String(read.json().message),
      /too few replicas are up: r=3 needs 3 replicas, and this key has 1/,
    );
    assert.deepEqual([read.json().needed, read.json().replicas], [3, 1]);
    const write = await req(`${url}/kv/k?w=3`, { method: "PUT", body: "v" });
    assert.equal(write.status, 503);
    assert.match(String(write.json().message), /w=3 needs 3 .*NOT applied/);
    assert.equal(write.json().applied, false);
    assert.equal((await req(`${url}/kv/k?r=1`)).status, 404, "the refused write left nothing");
  } finally {
    await node.stop();
  }
});

test("a restart keeps every key, version and context", async () => {
  let { node, url } = await start("restart");
  await req(`${url}/kv/a`, { method: "PUT", body: "1" });
  await req(`${url}/kv/a`, { method: "PUT", body: "2" });
  await req(`${url}/kv/b`, { method: "PUT", body: "kept", headers: { "content-type": "text/x-kept" } });
  const before = await req(`${url}/kv/a`);
  await node.stop();
  ({ node, url } = await start("restart", { n: undefined, r: undefined, w: undefined }));
  try {
    const a = await req(`${url}/kv/a`);
    assert.equal(a.status, 300);
    assert.equal(a.headers.get("x-context"), before.headers.get("x-context"));
    const b = await req(`${url}/kv/b`);
    assert.equal(b.body.toString(), "kept");
    assert.equal(b.headers.get("content-type"), "text/x-kept");
    const w = await req(`${url}/kv/a`, {
      method: "PUT",
      body: "3",
      headers: { "x-context": a.headers.get("x-context")! },
    });
    assert.equal(w.status, 204, "a context from before the restart is still accepted");
    assert.equal((await req(`${url}/kv/a`)).body.toString(), "3");
  } finally {
    await node.stop();
  }
});

test("the CLI runs a node that stops cleanly on SIGTERM", { timeout: 30_000 }, async () => {
  const bin = path.resolve("dist/cli/main.js");
  const dir = path.join(root, "cli");
  const child = spawn(
    process.execPath,
    [
      bin,
      "start",
      "--id",
      "c1",
      "--api",
      "127.0.0.1:0",
      "--peer",
      "127.0.0.1:0",
      "--data",
      dir,
      "--n",
      "1",
      "--r",
      "1",
      "--w",
      "1",
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  try {
    const apiUrl = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`node did not start: ${out}`)), 15_000);
      const check = () => {
        const m = /serving the API on (http:\/\/[0-9.:]+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      };
      child.stdout.on("data", check);
      check();
    });
    assert.equal((await req(`${apiUrl}/kv/x`, { method: "PUT", body: "y" })).status, 204);
    child.kill("SIGTERM");
    assert.equal(await exited, 0, out);
    assert.match(out, /stopped cleanly/);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});

test("the CLI on a Node.js without zlib.crc32 says it is too old and exits 1, before loading anything", () => {
  // A preload takes crc32 away, as a Node.js older than 20.15 lacks it, and syncs the ESM view of zlib.
  const preload = path.join(root, "no-crc32.cjs");
  writeFileSync(
    preload,
    'const z = require("node:zlib"); delete z.crc32; require("node:module").syncBuiltinESMExports();\n',
  );
  const cli = path.resolve("dist/cli/main.js");
  const old = spawnSync(process.execPath, ["-r", preload, cli, "--version"], {
    encoding: "utf8",
    timeout: 20_000,
  });
  assert.equal(old.status, 1);
  assert.match(
    old.stderr,
    /^ringstore: this Node\.js \(v[0-9.]+\) is too old: ringstore needs 20\.15 or later/,
  );
  const ok = spawnSync(process.execPath, [cli, "--version"], { encoding: "utf8", timeout: 20_000 });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /^[0-9]+\.[0-9]+\.[0-9]+\n$/);
});

test("CLI key commands: a bad --timeout and an unreachable node give clear errors and exit 1", () => {
  const cli = path.resolve("dist/cli/main.js");
  const run = (args: string[]) =>
    spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 20_000 });
  const bad = run(["get", "k", "--node", "127.0.0.1:1", "--timeout", "abc"]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--timeout must be a whole number of milliseconds/);
  const gone = run(["get", "k", "--node", "127.0.0.1:1"]);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /^ringstore: cannot reach 127\.0\.0\.1:1: /);
});

test("a node that is stopping finishes the request in flight and answers the next with 503 unavailable", async () => {
  const { node } = await start("stopping");
  const s = net.connect(node.api.port, "127.0.0.1");
  let got = "";
  s.on("data", (d) => {
    got += d.toString("latin1");
  });
  s.on("error", () => undefined);
  await new Promise((r) => s.once("connect", r));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    // A write whose body is still arriving when the stop begins...
    s.write("PUT /kv/a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345");
    await sleep(100);
    const stopping = node.stop();
    // The API turns requests away at once and stops listening after a short drain: wait for that, not
    // for a guessed time.
    const refused = () =>
      new Promise<boolean>((resolve) => {
        const probe = net.connect(node.api.port, "127.0.0.1");
        probe.on("connect", () => {
          probe.destroy();
          resolve(false);
        });
        probe.on("error", () => resolve(true));
      });
    for (let i = 0; i < 500 && !(await refused()); i++) await sleep(10);
    // ...completes; a request that comes after it on the same connection is turned away.
    s.write("67890GET /kv/a HTTP/1.1\r\nhost: x\r\n\r\n");
    await stopping;
    for (let i = 0; i < 50 && !got.includes('"stopping":true'); i++) await sleep(20);
    assert.match(got, /^HTTP\/1\.1 204 /);
    assert.match(got, /HTTP\/1\.1 503 [\s\S]*"error":"unavailable"/);
  } finally {
    s.destroy();
  }
});
