/**
 * A join shows the progress of the handoff it started, with real processes: a fourth node joins a
 * 3-node cluster holding 3,000 keys while the members' handoff throttle is slow; the joining node
 * learns the members' figures over the peer protocol (no API token needed) and logs them (event
 * "join": keys scanned of the total, copies sent and received, rate, time left) a line every few
 * seconds with growing counts, then a last line saying the handoff is done on every member; its
 * /status and dashboard show the same.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");
const KEYS = 3000;
const VALUE = "v".repeat(200);

interface JoinLine {
  event?: string;
  phase?: string;
  msg: string;
  level: string;
  ringVersion?: number | null;
  keysScanned?: number;
  keysTotal?: number | null;
  keysSent?: number;
  keysReceived?: number;
  keysPerSecond?: number | null;
  etaSeconds?: number | null;
  membersDone?: string[];
  membersSilent?: string[];
}

const joinLines = (output: string): JoinLine[] =>
  output
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as JoinLine)
    .filter((l) => l.event === "join");

interface JoinStatus {
  state: string;
  keysScanned: number;
  keysTotal: number | null;
  keysReceived: number;
  membersDone: string[];
  membersSilent: { id: string; why: string }[];
}

describe("a join shows its handoff's progress", { timeout: 240_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("progress lines with growing counts, then the done line; /status and the dashboard show it", async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.converged("a", ["a", "b"]);
    await c.start("c", { join: "a" });
    for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
    for (let i = 0; i < KEYS; i += 50)
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const r = await http(c.url("a", `/kv/jp-${i + j}?w=3`), { method: "PUT", body: VALUE });
          assert.equal(r.status, 204);
        }),
      );
    // Each member's census has counted the keys (the pass's total), within its interval.
    await c.until(
      "every member's census to count the keys",
      async () => {
        for (const id of ["a", "b", "c"]) {
          const d = (await http(c.url(id, "/ui/state"))).json() as {
            storage: { keys: { live: number } | null };
          };
          if ((d.storage.keys?.live ?? 0) < KEYS) return false;
        }
        return true;
      },
      60_000,
    );
    // A slow throttle on every sender: 15 KiB/s (about 4,000 copies: 20-30 s of handoff).
    for (const id of ["a", "b", "c"])
      await run(process.execPath, [BIN, "cluster", "handoff-rate", "0.015", "--node", c.nodes.get(id)!.api]);

    await c.start("d", { join: "a" });
    const d = c.nodes.get("d")!;
    const statuses: JoinStatus[] = [];
    let dashboardJoin: { state: string } | null = null;
    await c.until(
      "d to log that its join's handoff is done",
      async () => {
        const s = (await http(c.url("d", "/status"))).json() as { join?: JoinStatus };
        if (s.join !== undefined) statuses.push(s.join);
        if (dashboardJoin === null && s.join?.state === "handing_off") {
          const ui = (await http(c.url("d", "/ui/state"))).json() as {
            progress: { join: { state: string } | null };
          };
          dashboardJoin = ui.progress.join;
        }
        return joinLines(d.output).some((l) => l.phase === "done" || l.phase === "given_up");
      },
      150_000,
    );
    const lines = joinLines(d.output);
    console.log(lines.map((l) => l.msg).join("\n"));
    const progress = lines.filter((l) => l.phase === "handing_off");
    assert.ok(progress.length >= 3, `${progress.length} progress lines`);
    // At most one line per change every few seconds: far fewer lines than the handoff's seconds.
    for (const l of progress) {
      assert.match(
        l.msg,
        /^join: handoff for ring version \d+( started)?: [\d,]+( of [\d,]+)? keys scanned, [\d,]+ copies sent, [\d,]+ received here/,
      );
      assert.equal(typeof l.ringVersion, "number");
    }
    // The counts grow: keys scanned, and copies received here.
    const scanned = progress.map((l) => l.keysScanned!);
    assert.ok(scanned[scanned.length - 1]! > scanned[0]!, `scanned ${scanned.join(", ")}`);
    for (let i = 1; i < scanned.length; i++)
      assert.ok(scanned[i]! >= scanned[i - 1]!, `scanned ${scanned.join(", ")}`);
    const received = progress.map((l) => l.keysReceived!);
    assert.ok(received[received.length - 1]! > received[0]!, `received ${received.join(", ")}`);
    // A total (the members' censuses: the first line may come before the new node's first count) and,
    // once measured, a rate and the time left.
    const totals = progress.map((l) => l.keysTotal);
    assert.ok(
      totals[totals.length - 1] !== null && totals[totals.length - 1]! >= KEYS,
      `totals ${totals.join(", ")}`,
    );
    assert.ok(
      progress.some((l) => l.keysPerSecond !== null && l.keysPerSecond! > 0 && l.etaSeconds !== null),
    );
    // The last line: done on every member, none silent.
    const last = lines[lines.length - 1]!;
    assert.equal(last.phase, "done", last.msg);
    assert.equal(last.level, "info");
    assert.match(
      last.msg,
      /^join: done: the handoff for ring version \d+ finished on a, b, c, d in \d+ s \([\d,]+ keys scanned, [\d,]+ copies sent, [\d,]+ received here\)$/,
    );
    assert.deepEqual(last.membersSilent, []);
    assert.ok(last.keysReceived! >= KEYS / 2, `${last.keysReceived} received`);
    assert.equal(lines.filter((l) => l.phase === "done").length, 1, "done once");
    // /status followed it (handing off, then done), and the dashboard too.
    assert.ok(statuses.some((s) => s.state === "handing_off" && s.keysTotal !== null));
    const final = ((await http(c.url("d", "/status"))).json() as { join: JoinStatus }).join;
    assert.equal(final.state, "done");
    assert.deepEqual(final.membersDone, ["a", "b", "c", "d"]);
    assert.notEqual(dashboardJoin, null, "the dashboard's join progress");
    // Members that did not join now have no join section.
    assert.equal(((await http(c.url("a", "/status"))).json() as { join?: unknown }).join, undefined);
  });
});
