/**
 * The simulator's hint check (src/sim/simulator.ts, `hintCheck`): read repair off on every node, no
 * converging reads, and after heal and quiet every acknowledged write must be on all N primaries through
 * hinted handoff alone (checker.ts, checkHintedHandoff). Fixed seeds pass it; the planted bug
 * `lose-hints` (a stand-in acknowledges a hint and drops it) fails it on the same seeds; a run replays
 * byte for byte.
 *
 * SIM_SEEDS=1,2,3 runs other seeds instead (heavy faults).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatAnomalies } from "../../src/sim/checker.js";
import {
  DEFAULT_SIM_OPTIONS,
  type FaultProfile,
  replayCommand,
  runSimulation,
  type SimOptions,
  type SimResult,
} from "../../src/sim/simulator.js";

/**
 * Seeds whose runs the planted bug fails, two of them (6 standard, 9 heavy) losing a copy with a
 * coordinator that crashed before its late hint. Histories follow the protocol: a change to it may call for
 * other seeds (a sweep with `npm run sim -- --hint-check --bug lose-hints` shows which catch it; chosen
 * again when gossip went by digest and forwarded writes got one budget).
 */
const FIXED: [number, FaultProfile][] = [
  [2, "standard"],
  [4, "standard"],
  [6, "standard"],
  [9, "standard"],
  [1, "heavy"],
  [9, "heavy"],
];
const SEEDS: [number, FaultProfile][] =
  process.env.SIM_SEEDS === undefined
    ? FIXED
    : process.env.SIM_SEEDS.split(",").map((s) => [Number(s), "heavy"]);

const options = (seed: number, faults: FaultProfile): SimOptions => ({
  ...DEFAULT_SIM_OPTIONS,
  seed,
  storage: "lsm",
  faults,
  hintCheck: true,
});

const explain = (r: SimResult) => `${formatAnomalies(r.anomalies)}\nreplay: ${replayCommand(r.options)}`;

describe("simulator: the hint check", () => {
  const results: SimResult[] = [];
  for (const [seed, faults] of SEEDS)
    test(`seed ${seed}, faults ${faults}: every acknowledged write reaches all N primaries`, async () => {
      const r = await runSimulation(options(seed, faults));
      results.push(r);
      assert.deepEqual(r.anomalies, [], explain(r));
      assert.equal(r.readRepairs, 0, "read repair is off");
      assert.ok(r.hints.delivered > 0, `seed ${seed}: no hint was delivered`);
      assert.ok(r.history.writes.filter((w) => w.outcome === "ok").length > 50);
      assert.match(replayCommand(r.options), /--hint-check/);
    });

  test("the fixed seeds exercised the excuse, and only for crashed coordinators", {
    skip: process.env.SIM_SEEDS !== undefined,
  }, () => {
    const excused = results.flatMap((r) => r.excused);
    assert.ok(excused.length > 0, "no copy was excused in the fixed seeds");
    for (const e of excused) assert.match(e, /no copy for it was ever kept, and its coordinator \S+ crashed/);
  });

  test("a stand-in that acknowledges hints and drops them fails it, on the same seeds", async () => {
    for (const [seed, faults] of SEEDS) {
      const r = await runSimulation({ ...options(seed, faults), bug: "lose-hints" });
      assert.ok(
        r.anomalies.some((a) => a.checker === "hinted-handoff"),
        `seed ${seed} (${faults}) did not catch lost hints: ${formatAnomalies(r.anomalies)}`,
      );
    }
  });

  test("the same seed gives the same history and trace", async () => {
    const a = await runSimulation(options(2, "heavy"));
    const b = await runSimulation(options(2, "heavy"));
    assert.equal(a.hash, b.hash);
    assert.deepEqual(a.trace, b.trace);
    assert.deepEqual(a.excused, b.excused);
  });

  test("runs it cannot judge are refused: memory storage, membership changes", async () => {
    await assert.rejects(runSimulation({ ...options(1, "standard"), storage: "memory" }), RangeError);
    await assert.rejects(runSimulation({ ...options(1, "standard"), membership: true }), RangeError);
  });
});
