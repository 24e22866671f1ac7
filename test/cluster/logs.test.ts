/**
 * The nodes' structured logs, on real processes: every line is one JSON object (time, level, node, msg),
 * `--log-level` filters, and each membership change, handoff pass, hint delivery, anti-entropy repair
 * and tombstone purge is logged once, with its cause.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { RingstoreClient } from "../../src/client/client.js";
import { FAST_FLAGS, TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");

interface LogLine {
  time: string;
  level: string;
  node: string;
  msg: string;
  event?: string;
  [k: string]: unknown;
}

/** Every line of a node's output as a log object (the test fails on a line that is not one). */
function lines(output: string): LogLine[] {
  return output
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      let j: LogLine;
      try {
        j = JSON.parse(l) as LogLine;
      } catch {
        throw new Error(`not a JSON line: ${l}`);
      }
      assert.equal(typeof j.msg, "string", l);
      assert.match(j.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, l);
      assert.ok(["trace", "debug", "info", "warn", "error", "fatal"].includes(j.level), l);
      return j;
    });
}

describe("the nodes' logs", { timeout: 240_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("one JSON object per line; each membership change, handoff pass and hint delivery logged once with its cause", async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.converged("a", ["a", "b"]);
    await c.start("c", { join: "a" });
    for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
    const a = () => lines(c.nodes.get("a")!.output);

    const start = a().find((l) => l.event === "start" && typeof l.api === "string");
    assert.ok(start, "a start line");
    assert.equal(start.node, "a");
    assert.match(start.msg, /^ringstore node a serving the API on http:\/\/127\.0\.0\.1:\d+ \(peer /);
    assert.equal(start.api, `http://${c.nodes.get("a")!.api}`);

    // c's joining is told once on a, with the member it is about and what carried it.
    const joins = a().filter((l) => l.event === "membership" && l.change === "join" && l.member === "c");
    assert.equal(joins.length, 1, JSON.stringify(joins));
    assert.match(joins[0]!.msg, /^membership: c joins the cluster/);

    // The ring changed when c joined: a handed keys off, and said so once per pass, with the figures.
    await c.until("a to log its handoff pass", async () =>
      a().some((l) => l.event === "handoff" && l.phase === "done"),
    );
    const done = a().filter((l) => l.event === "handoff" && l.phase === "done");
    assert.match(
      done[0]!.msg,
      /^handoff: the pass for ring version \d+ is done: \d+ keys scanned, \d+ copies sent; it ran because the ring changed to version \d+/,
    );
    assert.equal(new Set(done.map((l) => l.ringVersion)).size, done.length, "each pass once");

    // c down: writes leave hints for it; back up, they are delivered, and that is logged.
    await c.kill("c");
    await c.until("a to see c down", async () =>
      a().some((l) => l.event === "membership" && l.change === "down" && l.member === "c"),
    );
    assert.equal(
      a().filter((l) => l.event === "membership" && l.change === "down" && l.member === "c").length,
      1,
    );
    const db = new RingstoreClient([c.nodes.get("a")!.api, c.nodes.get("b")!.api]);
    try {
      for (let i = 0; i < 50; i++) await db.put(`h${i}`, "v");
    } finally {
      await db.close();
    }
    await c.start("c");
    await c.until(
      "hints delivered to c, logged",
      async () =>
        [...a(), ...lines(c.nodes.get("b")!.output)].some(
          (l) =>
            l.event === "hints" &&
            l.key === "c" &&
            /^hinted handoff: delivered \d+ hint\(s\) \(\d+ bytes\) to c/.test(l.msg),
        ),
      30_000,
    );
  });
});

describe("anti-entropy repairs and tombstone purges are logged", { timeout: 240_000 }, () => {
  // No hints (a replica that missed writes is repaired by anti-entropy), exchanges every second, a short
  // tombstone grace period.
  const c = new TestCluster([
    ...FAST_FLAGS,
    "--hinted-handoff",
    "off",
    "--anti-entropy-interval",
    "1000",
    "--tombstone-grace",
    "2000",
  ]);
  after(() => c.shutdown());

  test("a replica that missed writes is repaired, and the exchange says so; purged tombstones are counted", async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
    await c.stop("c");
    const db = new RingstoreClient([c.nodes.get("a")!.api, c.nodes.get("b")!.api]);
    try {
      for (let i = 0; i < 30; i++) await db.put(`ae${i}`, "v", { w: 2 });
      await c.start("c");
      const all = () => ["a", "b", "c"].flatMap((id) => lines(c.nodes.get(id)!.output));
      await c.until(
        "an anti-entropy repair, logged",
        async () =>
          all().some(
            (l) =>
              l.event === "anti_entropy" &&
              l.outcome === "differences" &&
              /^anti-entropy: an exchange found \d+ key\(s\) differing in \d+ partition\(s\) between replicas; repairing them$/.test(
                l.msg,
              ),
          ),
        60_000,
      );
      for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
      for (let i = 0; i < 5; i++) await db.delete(`ae${i}`);
      await c.until(
        "purged tombstones, logged",
        async () =>
          all().some(
            (l) =>
              l.event === "tombstones" &&
              l.level === "info" &&
              /^tombstones: purged \d+ deleted key\(s\): every replica held the delete past --tombstone-grace$/.test(
                l.msg,
              ),
          ),
        60_000,
      );
    } finally {
      await db.close();
    }
  });
});

describe("--log-level", { timeout: 60_000 }, () => {
  const root = mkdtempSync(path.join(tmpdir(), "ringstore-logs-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  /** Runs a node for a moment (or to its refusal); its output. */
  function run(args: string[], ms: number): Promise<{ code: number | null; out: string; err: string }> {
    return new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        [
          BIN,
          "start",
          "--api",
          "127.0.0.1:0",
          "--peer",
          "127.0.0.1:0",
          "--n",
          "1",
          "--r",
          "1",
          "--w",
          "1",
          ...args,
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      const t = setTimeout(() => child.kill("SIGTERM"), ms);
      child.on("exit", (code) => {
        clearTimeout(t);
        resolve({ code, out, err });
      });
    });
  }

  test("warn hides the info lines but where the node serves, debug keeps them, a bad level is refused with a sentence", async () => {
    // At warn, error or silent, a quiet start says one thing: where the node serves (a JSON line still).
    for (const level of ["warn", "error", "silent"]) {
      const quiet = await run(
        ["--id", "q", "--data", path.join(root, `q-${level}`), "--log-level", level],
        2500,
      );
      assert.equal(quiet.code, 0, quiet.err);
      const only = lines(quiet.out);
      assert.equal(only.length, 1, `${level}: ${quiet.out}`);
      assert.equal(only[0]!.event, "start");
      assert.equal(only[0]!.level, "info");
      assert.equal(only[0]!.node, "q");
      assert.match(String(only[0]!.api), /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match(
        only[0]!.msg,
        /^ringstore node q serving the API on http:\/\/127\.0\.0\.1:\d+ \(peer 127\.0\.0\.1:\d+\)/,
      );
    }
    const chatty = await run(["--id", "d", "--data", path.join(root, "d"), "--log-level", "debug"], 2500);
    assert.equal(chatty.code, 0, chatty.err);
    const l = lines(chatty.out);
    assert.ok(l.some((x) => x.level === "info" && /serving the API/.test(x.msg)));
    assert.ok(l.some((x) => x.level === "info" && x.msg === "stopped cleanly"));
    assert.ok(l.every((x) => x.node === "d"));
    const bad = await run(["--id", "x", "--data", path.join(root, "x"), "--log-level", "loud"], 10_000);
    assert.equal(bad.code, 1);
    assert.equal(
      bad.err,
      'ringstore: --log-level must be one of trace, debug, info, warn, error, fatal, silent, got "loud" (ERR_CONFIG)\n',
    );
  });
});
