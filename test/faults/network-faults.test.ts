/**
 * Real network faults on a 5-node cluster (N=3, R=2, W=2), each node in its own network namespace
 * behind a router namespace (net.ts): partitions in halves, one node cut off, two sides joined only
 * through a bridge node, and packet loss; clients record a history that the simulator's checkers judge.
 * Needs root and `ip netns`; without them every case skips with the reason (process faults run anyway,
 * in process-faults.test.ts).
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { cleanupAllSync, sweepStale } from "./cleanup.js";
import { namespacesUnavailable } from "./net.js";
import {
  bridge,
  FAULT_SECONDS,
  halves,
  isolateOne,
  lossyLinks,
  runScenario,
  type ScenarioSpec,
} from "./scenario.js";

const TIMEOUT = FAULT_SECONDS * 1000 + 120_000;
const unavailable = namespacesUnavailable();

function check(spec: ScenarioSpec) {
  return async (t: { skip: (message: string) => void }) => {
    if (unavailable !== undefined) {
      t.skip(`network namespaces unavailable: ${unavailable}`);
      return;
    }
    const r = await runScenario(spec);
    assert.ok(r.stats.byOutcome.ok > 0, `no write was acknowledged at all\n${r.summary}`);
    assert.equal(r.anomalies.length, 0, r.summary);
  };
}

const base = { nodes: 5, network: true, clients: 5, keys: 12 } as const;

describe("network faults (5 nodes in namespaces)", { timeout: TIMEOUT * 4 }, () => {
  if (unavailable === undefined) sweepStale();
  after(() => cleanupAllSync());

  test("partitions into halves", { timeout: TIMEOUT }, check({ ...base, name: "halves", schedule: halves }));
  test(
    "one node cut off",
    { timeout: TIMEOUT },
    check({ ...base, name: "isolate-one", schedule: isolateOne }),
  );
  test(
    "two sides joined only through a bridge node",
    { timeout: TIMEOUT },
    check({ ...base, name: "bridge", schedule: bridge }),
  );
  test(
    "packet loss on every link",
    { timeout: TIMEOUT },
    check({ ...base, name: "lossy-links", schedule: lossyLinks }),
  );
});
