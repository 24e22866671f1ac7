/**
 * The handoff throttle at run time, with real processes: `ringstore cluster handoff-rate` slows a
 * node's handoff down while it runs, /status and `cluster status` show its rates and throttle, and
 * raising the rate again lets the pass finish at once.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { http, TestCluster } from "./harness.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/cli/main.js");
const KEYS = 300;
const VALUE = "x".repeat(2048);

interface Handoff {
  state: string;
  ringVersion: number;
  keysScanned: number;
  bytesSent: number;
  throttleBytesPerSecond: number;
  keysPerSecond: number | null;
  bytesPerSecond: number | null;
}

const handoffOf = async (c: TestCluster, id: string) =>
  ((await http(c.url(id, "/status"))).json() as { handoff: Handoff }).handoff;

describe("the handoff throttle, set at run time", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("a slow throttle paces a join's handoff, status shows it, and a fast one ends it", async () => {
    for (const id of ["a", "b", "c"])
      await c.start(id, id === "a" ? {} : { join: "a", args: ["--handoff-rate", "1"] });
    for (const id of ["a", "b", "c"]) await c.converged(id, ["a", "b", "c"]);
    for (let i = 0; i < KEYS; i++)
      assert.equal((await http(c.url("a", `/kv/hr-${i}?w=3`), { method: "PUT", body: VALUE })).status, 204);
    // The start flag, then the run-time setting: 20 KiB/s on every holder.
    assert.equal((await handoffOf(c, "b")).throttleBytesPerSecond, 1 << 20);
    for (const id of ["a", "b", "c"]) {
      const out = await run(process.execPath, [
        BIN,
        "cluster",
        "handoff-rate",
        "0.02",
        "--node",
        c.nodes.get(id)!.api,
      ]);
      assert.match(out.stdout, /handoff throttle 20\.\d KiB\/s/);
    }
    assert.equal((await handoffOf(c, "a")).throttleBytesPerSecond, Math.round(0.02 * (1 << 20)));
    // d joins: about 3/4 of the keys (~450 KiB) go to it, each from the holder that loses it: at 20 KiB/s
    // per sender, many seconds.
    await c.start("d", { join: "a" });
    const seen: (Handoff & { id: string })[] = [];
    await c.until(
      "a handoff pass running for some time on a, b or c",
      async () => {
        for (const id of ["a", "b", "c"]) {
          const h = await handoffOf(c, id);
          if (h.state === "running" && h.bytesPerSecond !== null && h.bytesSent > 40_000) {
            seen.push({ ...h, id });
            return true;
          }
        }
        return false;
      },
      30_000,
    );
    const h = seen[0]!;
    // Paced: at most the throttle (and its bucket of a tenth of a second), however fast the network.
    assert.ok(h.bytesPerSecond! <= 0.02 * (1 << 20) * 1.3, `${h.bytesPerSecond} bytes/s`);
    assert.ok(h.keysPerSecond! > 0);
    const status = await run(process.execPath, [BIN, "cluster", "status", "--node", c.nodes.get(h.id)!.api]);
    console.log(status.stdout);
    assert.match(
      status.stdout,
      /handoff on [abc]: running .*keys\/s scanned, [0-9.]+ KiB\/s sent.*throttle 20\.\d KiB\/s/,
    );
    // Raised to 64 MiB/s: every pass ends within seconds.
    for (const id of ["a", "b", "c"])
      await run(process.execPath, [BIN, "cluster", "handoff-rate", "64", "--node", c.nodes.get(id)!.api]);
    await c.until(
      "every handoff pass done",
      async () => {
        const hs = await Promise.all(["a", "b", "c", "d"].map((id) => handoffOf(c, id)));
        return hs.every((x) => x.state === "idle" && x.ringVersion === hs[0]!.ringVersion);
      },
      15_000,
    );
    for (let i = 0; i < KEYS; i += 10) assert.equal((await http(c.url("d", `/kv/hr-${i}?r=3`))).status, 200);
  });
});
