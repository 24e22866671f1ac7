/**
 * The key commands through the built CLI against a real 3-node cluster: what `get` prints to a pipe and
 * to a terminal, the siblings hint as a command that works, `delete` superseding what it read (CLI and
 * client) and a missing key's delete the same everywhere, the one content type of a string, a bad
 * `--node`, `cluster status` with a paused node, `keys` counting on a terminal.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { RingstoreClient, STRING_CONTENT_TYPE } from "../../src/client/client.js";
import { http, TestCluster } from "../cluster/harness.js";
import { cli, cliOnTerminal, HAVE_SCRIPT } from "./support.js";

describe("the key commands on a three-node cluster", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  const ids = ["a", "b", "c"];
  let node: string;
  let client: RingstoreClient;

  before(async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ids) await c.converged(id, ids);
    node = c.nodes.get("a")!.api;
    client = new RingstoreClient(node);
  });
  after(async () => {
    await client?.close();
    await c.shutdown();
  });

  test("get to a pipe prints exactly the stored bytes; the context goes to stderr on a line of its own", async () => {
    const value = Buffer.from([0x68, 0x69, 0x00, 0xff, 0x0a, 0x7a]); // no trailing newline, binary
    await client.put("bin", value);
    const r = await cli(["get", "bin", "--node", node]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, value);
    assert.match(r.stderr, /^context: [A-Za-z0-9_-]+\n$/);
  });

  test("get on a terminal prints the value and a newline, then the context on its own line", {
    skip: !HAVE_SCRIPT && "util-linux script is not installed: no pseudo-terminal",
  }, async () => {
    await client.put("t", "plain text");
    const r = await cliOnTerminal(["get", "t", "--node", node]);
    assert.equal(r.code, 0, r.screen);
    assert.match(r.screen, /^plain text\r\ncontext: [A-Za-z0-9_-]+\r\n$/);
  });

  test("the siblings hint is the real command, key and --node filled in, and it resolves the siblings", async () => {
    const key = "my cart's key";
    assert.equal((await cli(["put", key, "milk", "--node", node])).code, 0);
    assert.equal((await cli(["put", key, "eggs", "--node", node])).code, 0);
    const r = await cli(["get", key, "--node", node]);
    const out = r.stdout.toString();
    assert.match(out, /^2 concurrent versions \(siblings\):/);
    const m = /Resolve them and write back with: (.*)\n/.exec(out);
    assert.ok(m, out);
    const hint = m[1]!;
    assert.match(
      hint,
      /^ringstore put 'my cart'\\''s key' VALUE --context [A-Za-z0-9_-]+ --node 127\.0\.0\.1:[0-9]+$/,
    );
    // The hint as a shell would read it, VALUE replaced: it supersedes both siblings.
    const words = [...hint.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)].map((x) =>
      x[1] !== undefined ? x[1].replace(/'\\''/g, "'") : x[2]!,
    );
    assert.deepEqual(words.slice(0, 3), ["ringstore", "put", key]);
    const args = words.slice(1).map((w) => (w === "VALUE" ? "milk,eggs" : w));
    assert.equal((await cli(args)).code, 0);
    const after = await client.get(key);
    assert.equal(after.kind, "value");
    assert.equal(after.kind === "value" && after.value.toString(), "milk,eggs");
  });

  test("a delete of a live key supersedes what it read: no sibling is left (CLI and client)", async () => {
    for (const [how, run] of [
      ["cli", async (k: string) => assert.equal((await cli(["delete", k, "--node", node])).code, 0)],
      ["client", async (k: string) => assert.ok((await client.delete(k)) !== undefined)],
    ] as const) {
      const k = `del-${how}`;
      await client.put(k, "live");
      await run(k);
      // Before the delete read first, the tombstone was concurrent with the value: 300, the value a sibling.
      for (const id of ids) {
        const res = await http(c.url(id, `/kv/${k}?r=all`));
        assert.equal(res.status, 404, `${how} via ${id}: ${res.status} ${res.text}`);
      }
    }
  });

  test("deleting a missing key is the same result everywhere: success, nothing to delete", async () => {
    const r = await cli(["delete", "never-written", "--node", node]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "not found: nothing to delete\n");
    assert.equal(await client.delete("never-written-2"), undefined);
    assert.equal((await http(c.url("a", "/kv/never-written-3"), { method: "DELETE" })).status, 204);
    // A key already deleted: the same.
    await client.put("twice", "x");
    assert.notEqual(await client.delete("twice"), undefined);
    assert.equal(await client.delete("twice"), undefined);
    assert.equal((await cli(["delete", "twice", "--node", node])).code, 0);
  });

  test("a string is stored with one content type by the CLI and by the client", async () => {
    assert.equal((await cli(["put", "s-cli", "text", "--node", node])).code, 0);
    await client.put("s-client", "text");
    await client.put("b-client", Buffer.from("text"));
    const type = async (k: string) => (await http(c.url("b", `/kv/${k}`))).headers.get("content-type");
    assert.equal(STRING_CONTENT_TYPE, "text/plain; charset=utf-8");
    assert.equal(await type("s-cli"), STRING_CONTENT_TYPE);
    assert.equal(await type("s-client"), STRING_CONTENT_TYPE);
    assert.equal(await type("b-client"), "application/octet-stream");
  });

  test("--node with a bad address gets one clear sentence and exit 1", async () => {
    for (const bad of ["localhost", "127.0.0.1:99999", "http://127.0.0.1:8001/kv", "127.0.0.1:", ":8001"]) {
      for (const args of [["get", "k"], ["cluster", "status"], ["keys"]]) {
        const r = await cli([...args, "--node", bad]);
        assert.equal(r.code, 1, `${args.join(" ")} --node ${bad}`);
        assert.equal(
          r.stderr,
          `ringstore: --node "${bad}" is not a node's API address: give HOST:PORT (such as 127.0.0.1:8001), or https://HOST:PORT for a node that serves https\n`,
        );
      }
    }
  });

  test("keys on a terminal counts on stderr as it goes, and ends with the total", {
    skip: !HAVE_SCRIPT && "util-linux script is not installed: no pseudo-terminal",
  }, async () => {
    const r = await cliOnTerminal(["keys", "--node", node, "--limit", "3"]);
    assert.equal(r.code, 0, r.screen);
    const total = (await cli(["keys", "--node", node])).stdout.toString().split("\n").filter(Boolean).length;
    assert.match(r.screen, /\rlisting: [0-9,]+ keys/);
    assert.match(r.screen, new RegExp(`\\r\\n?${total} keys\\r\\n$|${total} keys\\r\\n$`));
    // Not in a pipe: there stderr stays quiet.
    assert.equal((await cli(["keys", "--node", node])).stderr, "");
  });

  test("cluster status answers within a short bound when a node is paused, and names it", async () => {
    const paused = c.nodes.get("c")!;
    paused.child!.kill("SIGSTOP");
    try {
      const r = await cli(["cluster", "status", "--node", node]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.ms < 8000, `took ${r.ms} ms`);
      const out = r.stdout.toString();
      assert.match(out, new RegExp(`^c +\\S+ +NO +${paused.api.replace(/\./g, "\\.")}`, "m"));
      assert.match(
        out,
        new RegExp(`^c \\(${paused.api.replace(/\./g, "\\.")}\\) did not answer within 3 s`, "m"),
      );
      assert.match(out, /^a +up +yes /m);
      const direct = await cli(["cluster", "status", "--node", paused.api]);
      assert.equal(direct.code, 1);
      assert.ok(direct.ms < 8000, `took ${direct.ms} ms`);
      assert.equal(
        direct.stderr,
        `ringstore: ${paused.api} did not answer within 3 s: its process may be paused (SIGSTOP) or overloaded; ask another node with --node\n`,
      );
    } finally {
      paused.child!.kill("SIGCONT");
    }
  });
});
