/**
 * A simulator cluster for the tests that drive ring changes and faults by hand: real NodeCores on the
 * simulated network in virtual time, formed and converged, with `keys` keys written at W=3 (value `v<i>`).
 */
import assert from "node:assert/strict";
import { derivedRandom, VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { type ClusterConfig, SimCluster } from "../../src/sim/cluster.js";
import { SimNetwork } from "../../src/sim/sim-network.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";

export const SIM_EPOCH_MS = 1_700_000_000_000;

/** Key number i of such a cluster. */
export const simKey = (i: number) => Buffer.from(`key-${i}`);

export async function writtenSimCluster(o: {
  readonly seed: number;
  readonly nodes: number;
  readonly storage: "memory" | "lsm";
  readonly keys: number;
  /** More of the cluster's configuration (tombstone purging, the hint window). */
  readonly extra?: Partial<Pick<ClusterConfig, "tombstones" | "hintWindowMs">>;
}) {
  const sched = new VirtualScheduler({ startMs: SIM_EPOCH_MS });
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: derivedRandom(o.seed, "network"),
    latency: { minMs: 1, maxMs: 5 },
  });
  const trace: string[] = [];
  const cluster = new SimCluster(
    {
      seed: o.seed,
      nodes: o.nodes,
      storage: o.storage,
      n: 3,
      r: 2,
      w: 2,
      partitions: 32,
      gossipIntervalMs: 200,
      downAfterMs: 2000,
      requestTimeoutMs: 500,
      maxSiblings: 64,
      ...o.extra,
    },
    sched,
    net,
    [],
    (l) => trace.push(`${sched.now() - SIM_EPOCH_MS} ${l}`),
  );
  await sched.runUntilSettled(cluster.start(), 10_000);
  assert.ok(await sched.runUntil(() => cluster.converged(), 20_000), "the cluster forms");
  // Every key written to all three replicas (w=3).
  for (let i = 0; i < o.keys; i++) {
    const out = await sched.runUntilSettled(
      cluster.nodes[i % o.nodes]!.core.router.write(
        simKey(i),
        EMPTY_VECTOR,
        { data: Buffer.from(`v${i}`), contentType: "", deleted: false, writtenAtMs: 0 },
        3,
        2000,
      ),
      5000,
    );
    assert.equal(out.kind, "ok", `write key-${i}: ${JSON.stringify(out)}`);
  }
  return { sched, net, cluster, trace };
}
