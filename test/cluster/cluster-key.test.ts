/**
 * The cluster key's life with real processes through the CLI:
 * - a new cluster writes `<data>/cluster.key` (0600, in a 0700 directory) and says so;
 * - a node given the cluster's key joins (--cluster-key-file, or RINGSTORE_CLUSTER_KEY_FILE); one given
 *   another key, or none, is refused at once with a sentence that says which and what to pass, and
 *   writes no identity;
 * - a node that joined restarts with its key file, and is refused without it, or with a key its peers
 *   refuse;
 * - a key file that every user may read is refused.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");

/** `ringstore ARGS` to its end: exit code and output. */
function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("the cluster key's life", () => {
  const cluster = new TestCluster();
  after(() => cluster.shutdown());
  const startArgs = (id: string, extra: string[]) => [
    "start",
    "--id",
    id,
    "--api",
    "127.0.0.1:0",
    "--peer",
    "127.0.0.1:0",
    "--data",
    path.join(cluster.root, id),
    "--gossip-interval",
    "100",
    ...extra,
  ];

  test("a new cluster writes its key 0600 and says where; joiners need it", {
    timeout: 120_000,
  }, async () => {
    const n1 = await cluster.start("n1");
    const key = path.join(n1.dataDir, "cluster.key");
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.equal(statSync(n1.dataDir).mode & 0o777, 0o700);
    assert.match(readFileSync(key, "utf8"), /^ringstore-cluster-key 1\ncurrent rck1_/m);
    await cluster.until("the start says where the key is", async () =>
      n1.output.includes(`new cluster key in ${key} (mode 0600)`),
    );

    // No key: refused at once, saying what to pass; no identity written.
    const none = await run(startArgs("n4", ["--join", n1.peer]));
    assert.notEqual(none.code, 0);
    assert.match(
      none.output,
      /no cluster key given: node n4 joins a cluster.*pass --cluster-key-file F \(or set RINGSTORE_CLUSTER_KEY_FILE=F\)/,
    );
    assert.ok(!existsSync(path.join(cluster.root, "n4", "node.json")));

    // Another key: the members refuse it, and the sentence says so (not "no key").
    const wrong = path.join(cluster.root, "wrong.key");
    assert.equal((await run(["cluster-key", "generate", "--file", wrong])).code, 0);
    const refused = await run(startArgs("n4", ["--join", n1.peer, "--cluster-key-file", wrong]));
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.output,
      new RegExp(
        `the cluster refused this node's cluster key: ${n1.peer} refused key [0-9a-f]{16} \\(from ${wrong.replace(/[.]/g, "\\.")}\\)`,
      ),
    );
    assert.ok(!existsSync(path.join(cluster.root, "n4", "node.json")));
    assert.match(n1.output, /refused a peer connection from 127\.0\.0\.1:\d+: the TLS handshake failed/);

    // The right key, by the environment: it joins.
    await cluster.start("n4", { join: "n1", noKey: true, env: { RINGSTORE_CLUSTER_KEY_FILE: key } });
    await cluster.converged("n1", ["n1", "n4"]);

    // A key file every user may read is refused.
    const open = path.join(cluster.root, "open.key");
    copyFileSync(key, open);
    chmodSync(open, 0o644);
    const tooOpen = await run(startArgs("n5", ["--join", n1.peer, "--cluster-key-file", open]));
    assert.notEqual(tooOpen.code, 0);
    assert.match(
      tooOpen.output,
      /open\.key holds a secret but its mode is 0644 \(every user may read it\): run chmod 600/,
    );
  });

  test("a node that joined restarts with its key file; without it, or with a key the peers refuse, it is refused", {
    timeout: 120_000,
  }, async () => {
    assert.equal(await cluster.stop("n4"), 0);
    const noKey = await run(startArgs("n4", []));
    assert.notEqual(noKey.code, 0);
    assert.match(
      noKey.output,
      /no cluster key given: node n4 belongs to cluster [0-9a-f]+, and only the node that created a cluster keeps its key in its data directory/,
    );
    const wrong = path.join(cluster.root, "wrong.key");
    const refused = await run(startArgs("n4", ["--cluster-key-file", wrong]));
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.output,
      /the members of cluster [0-9a-f]+ refused this node's cluster key: .* refused key [0-9a-f]{16}/,
    );
    // With the key it rejoins.
    await cluster.start("n4", { args: ["--cluster-key-file", cluster.keyFile!] });
    await cluster.converged("n1", ["n1", "n4"], { atAddresses: true });
  });
});
