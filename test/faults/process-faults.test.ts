/**
 * Real process faults on a 5-node cluster on 127.0.0.1 (N=3, R=2, W=2: writes through a node that is not
 * a replica of the key are forwarded to one): SIGKILL and restart, and
 * SIGSTOP/SIGCONT past the failure detector, while clients record a history that the simulator's
 * checkers judge. No namespaces needed: these run everywhere. See scenario.ts for the phases and
 * RINGSTORE_FAULT_SECONDS for longer runs.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { checkHistory } from "../../src/sim/checker.js";
import { cleanupAllSync, sweepStale } from "./cleanup.js";
import { FAST_SETTINGS, FaultCluster } from "./cluster.js";
import { collectFinalState, fetchPreferences } from "./final-state.js";
import { FAULT_SECONDS, killRestart, pauseResume, runScenario, type ScenarioSpec } from "./scenario.js";
import { Workload } from "./workload.js";

const TIMEOUT = FAULT_SECONDS * 1000 + 120_000;

function check(spec: ScenarioSpec) {
  return async () => {
    const r = await runScenario(spec);
    assert.ok(r.stats.byOutcome.ok > 0, `no write was acknowledged at all\n${r.summary}`);
    assert.equal(r.anomalies.length, 0, r.summary);
  };
}

const base = { nodes: 5, network: false, clients: 5, keys: 12 } as const;

describe("process faults (5 nodes on loopback)", { timeout: TIMEOUT * 2 }, () => {
  sweepStale();
  after(() => cleanupAllSync());

  test(
    "SIGKILL and restart, one node at a time, repeatedly",
    { timeout: TIMEOUT },
    check({ ...base, name: "kill-restart", schedule: killRestart }),
  );

  test(
    "SIGSTOP past the failure detector's down-after, then SIGCONT",
    { timeout: TIMEOUT },
    check({ ...base, name: "pause-resume", schedule: pauseResume }),
  );

  // The suite checking itself: without the convergence step, a replica that was down while acknowledged
  // writes went to the others must show up as a disagreement and as lost adds at that replica. If this
  // passes vacuously, the final-state reading or the checkers are broken, not the store.
  test("self-check: a replica that missed writes is reported when nothing repairs it", {
    timeout: 60_000,
  }, async () => {
    // Hinted handoff off: the coordinators' hints would otherwise bring n3 what it missed.
    const c = new FaultCluster({ nodes: 3, args: [...FAST_SETTINGS, "--hinted-handoff", "off"] });
    try {
      await c.startAll();
      await c.kill(2);
      const start = Date.now();
      const w = new Workload({
        keys: ["k0", "k1", "k2"],
        clients: 2,
        nodes: [c.nodes[0]!.api, c.nodes[1]!.api],
        seed: 1,
        // Bounded by the op count on a quick machine; the time only bounds a slow one.
        durationMs: 5000,
        maxOpsPerClient: 200,
        thinkMs: 5,
        clock: () => Date.now() - start,
      });
      const stats = await w.run();
      assert.ok(stats.byOutcome.ok > 0);
      await c.start(2);
      await c.waitAllUp(20_000);
      const { final } = await collectFinalState(c, await fetchPreferences(c), ["k0", "k1", "k2"]);
      const anomalies = checkHistory({ writes: w.writes, final });
      const about = (checker: string) =>
        anomalies.filter((a) => a.checker === checker && /n3/.test(a.message));
      assert.ok(about("replicas-agree").length > 0, "replica n3 missed every write: replicas must disagree");
      assert.ok(about("acknowledged-adds").length > 0, "n3 lacks acknowledged adds: they must be reported");
    } finally {
      await c.destroy();
    }
  });
});
