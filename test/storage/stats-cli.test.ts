/**
 * `ringstore storage stats --data DIR` through the built CLI (dist/; `npm test` builds first), as a user
 * runs it: a read-only inspection that creates and changes nothing (every file's name, size and bytes
 * compared before and after), refuses a directory without a store, reads a node's data directory
 * through its storage/, and refuses a store a running node has open.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { LsmEngine, NodeFileSystem } from "../../src/storage/index.js";
import { TestCluster } from "../cluster/harness.js";

const BIN = path.resolve("dist/cli/main.js");
const HOLDER = "test/storage/lock-holder.ts";

const roots: string[] = [];
const children: ChildProcess[] = [];
const clusters: TestCluster[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const c of clusters) await c.shutdown();
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-stats-"));
  roots.push(d);
  return d;
}

function stats(dir: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, "storage", "stats", "--data", dir], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every entry under `dir`: relative path -> "dir", or "size sha256" of a file. */
function tree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        out.set(r, "dir");
        walk(r);
      } else {
        const data = fs.readFileSync(path.join(dir, r));
        out.set(r, `${data.length} ${createHash("sha256").update(data).digest("hex")}`);
      }
    }
  };
  walk("");
  return out;
}

/** Runs lock-holder.ts as a writer of `keys` keys and SIGKILLs it once it holds the store. */
async function killedWriter(dir: string, keys: number): Promise<void> {
  const c = spawn(process.execPath, ["--import", "tsx", HOLDER, dir, "writer", String(keys)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(c);
  let out = "";
  await new Promise<void>((resolve, reject) => {
    c.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve();
    });
    c.on("exit", (code) => reject(new Error(`the writer exited (${code}): ${out}`)));
  });
  assert.equal(out, `held ${c.pid}\n`);
  c.removeAllListeners("exit");
  const gone = new Promise((r) => c.once("exit", r));
  c.kill("SIGKILL");
  await gone;
}

describe("ringstore storage stats", { timeout: 120_000 }, () => {
  test("a missing directory is an error, and nothing is created", () => {
    const root = tempDir();
    const dir = path.join(root, "nothing-here");
    const r = stats(dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no such directory/);
    assert.equal(r.stdout, "");
    assert.deepEqual(fs.readdirSync(root), []);
  });

  test("a directory without a store is an error, and nothing is created", () => {
    const dir = tempDir();
    const r = stats(dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /holds no ringstore store/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  test("a store: its statistics, and the tree byte for byte the same after", async () => {
    const dir = tempDir();
    // Tables from a clean close, then writes only in the WAL of a writer killed with SIGKILL.
    const e = await LsmEngine.open({
      dir,
      fs: new NodeFileSystem(),
      options: { memtableBytes: 16 * 1024, tableTargetBytes: 64 * 1024 },
    });
    for (let i = 0; i < 2000; i++) await e.put(Buffer.from(`other-${i}`), Buffer.from(`value-${i}`));
    await e.close();
    await killedWriter(dir, 50);
    const before = tree(dir);
    assert.ok([...before.keys()].some((n) => n.endsWith(".sst")));

    const r = stats(dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\(read-only\)/);
    assert.match(r.stdout, /live keys +2,050\n/);
    assert.match(r.stdout, /sorted run/);
    assert.deepEqual(tree(dir), before, "names, sizes and contents unchanged");
  });

  test("a node's data directory whose own LOCK is held (a node starting up) is refused", async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, "node.json"), "{}\n");
    const store = await LsmEngine.open({ dir: path.join(root, "storage"), fs: new NodeFileSystem() });
    await store.put(Buffer.from("k"), Buffer.from("v"));
    await store.close();
    const release = await new NodeFileSystem().lock(root);
    try {
      const before = tree(root);
      const r = stats(root);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`a ringstore node is running on ${root} \\(pid ${process.pid}\\)`));
      assert.deepEqual(tree(root), before);
    } finally {
      await release();
    }
    const r = stats(root);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /live keys +1\n/);
  });

  test("a node's data directory: refused while the node runs, read through storage/ once it stopped", async () => {
    const cluster = new TestCluster();
    clusters.push(cluster);
    const node = await cluster.start("n1");
    const pid = node.child!.pid!;
    for (const dir of [node.dataDir, path.join(node.dataDir, "storage")]) {
      const r = stats(dir);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`\\(pid ${pid}\\)`), "names the node's process");
      assert.match(r.stderr, /GET \/status or GET \/metrics/, "says where to look instead");
      assert.equal(r.stdout, "");
    }
    assert.match(stats(node.dataDir).stderr, /a ringstore node is running on /);

    assert.equal(await cluster.stop("n1"), 0);
    const before = tree(node.dataDir);
    const r = stats(node.dataDir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${path.join(node.dataDir, "storage")} \\(read-only\\)`));
    assert.deepEqual(tree(node.dataDir), before);
  });
});
