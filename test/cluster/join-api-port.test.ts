/**
 * `ringstore start --join` given a member's API port (HTTP) where its peer port belongs: the new node
 * says that it reached an HTTP port and what --join takes, and exits non-zero. (It used to say "peer
 * announced a frame of 1213486160 bytes": the bytes "HTTP" read as a frame's length.)
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { after, test } from "node:test";
import { TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");
const cluster = new TestCluster();
after(() => cluster.shutdown());

test("--join with a node's API port fails at once with a sentence that says so", {
  timeout: 60_000,
}, async () => {
  const a = await cluster.start("a");
  const child = spawn(
    process.execPath,
    [
      BIN,
      "start",
      "--id",
      "b",
      "--api",
      "127.0.0.1:0",
      "--peer",
      "127.0.0.1:0",
      "--data",
      path.join(cluster.root, "b"),
      "--join",
      a.api,
      "--cluster-key-file",
      path.join(a.dataDir, "cluster.key"),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.on("data", (d: Buffer) => {
    output += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    output += d.toString();
  });
  const code = await new Promise<number | null | "timeout">((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve("timeout");
    }, 20_000);
    child.on("exit", (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.notEqual(code, "timeout", `the node did not exit:\n${output}`);
  assert.notEqual(code, 0, output);
  assert.ok(
    output.includes(
      `${a.api} answered in HTTP: that is a node's API port; --join takes a member's peer address (its --peer)`,
    ),
    output,
  );
  assert.doesNotMatch(output, /1213486160/);
  // The address is named once, not repeated by each layer.
  assert.ok(!output.includes(`${a.api}: ${a.api}`), output);
});
