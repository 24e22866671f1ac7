/**
 * A node's start-up refused for any reason leaves its data directory as it was (real processes through
 * the CLI): a second start on a directory in use, a start whose API port is taken.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");

/** Runs `ringstore start ...` to its end; resolves with its exit code and output. */
function runStart(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "start", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Name, size, mtime and content of every file directly in `dir` (not its subfolders). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = statSync(p);
    if (st.isFile()) out[name] = `${st.size} ${st.mtimeMs} ${readFileSync(p, "base64")}`;
  }
  return out;
}

describe("a refused start writes nothing", () => {
  const cluster = new TestCluster();
  after(() => cluster.shutdown());

  test("a second start on a directory in use is refused, and node.json and the running marker are untouched", async () => {
    const n1 = await cluster.start("n1");
    const before = snapshot(n1.dataDir);
    assert.ok("node.json" in before && "running" in before, Object.keys(before).join(","));
    const second = await runStart([
      "--id",
      "n1",
      "--api",
      "127.0.0.1:0",
      "--peer",
      "127.0.0.1:0",
      "--data",
      n1.dataDir,
    ]);
    assert.notEqual(second.code, 0, second.output);
    assert.match(second.output, /lock|in use|already open/i);
    const now = snapshot(n1.dataDir);
    for (const f of ["node.json", "running"]) assert.equal(now[f], before[f], `${f} changed`);
  });

  test("a data directory made with wider modes is its owner's only after a start (node.json holds the secret)", async () => {
    const n = await cluster.start("m1");
    await cluster.stop("m1");
    chmodSync(n.dataDir, 0o755);
    chmodSync(path.join(n.dataDir, "node.json"), 0o644);
    await cluster.start("m1");
    assert.equal(statSync(n.dataDir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(n.dataDir, "node.json")).mode & 0o777, 0o600);
  });

  test("a node SIGKILLed restarts at once on its directory (the lock dies with its process)", async () => {
    await cluster.start("k1");
    for (let i = 0; i < 3; i++) {
      await cluster.kill("k1");
      const again = await cluster.start("k1");
      assert.match(again.output, /serving the API/);
    }
  });

  test("a start whose API port is taken fails before it writes its identity; the retry then works", async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as net.AddressInfo).port;
    const dir = path.join(cluster.root, "taken");
    try {
      const res = await runStart([
        "--id",
        "t1",
        "--api",
        `127.0.0.1:${port}`,
        "--peer",
        "127.0.0.1:0",
        "--data",
        dir,
      ]);
      assert.notEqual(res.code, 0, res.output);
      assert.match(res.output, /EADDRINUSE|in use/);
      assert.equal(existsSync(path.join(dir, "node.json")), false, "node.json was written");
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
});
