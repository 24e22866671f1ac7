/**
 * The deterministic whole-cluster simulator: one run of a ringstore cluster (cluster.ts) under seeded
 * faults (nemesis.ts) and concurrent cart clients (workload.ts), judged by the checkers (checker.ts).
 *
 * A run, all in virtual time (runtime/virtual-runtime.ts) on the simulated network
 * (sim-network.ts), everything drawn from one seed:
 * 1. start the nodes (every node up, one ring), let gossip settle (`warmupMs`);
 * 2. chaos: the clients run their operations while the nemesis injects faults; clock skew throughout;
 * 3. heal: every fault undone (network healed, paused nodes resumed, crashed nodes restarted), then wait
 *    until every node sees every other up with the same ring;
 * 4. converge: by anti-entropy alone, no reads: wait until every member has, since healing, exchanged
 *    with each of its co-replicas and found them in sync, then let the cluster go quiet (`quietMs`).
 * 5. collect every replica's stored siblings directly (NodeCore.replica.read on the key's preference
 *    list) and run the checkers; check the bounds (network queues, storage, siblings, steps).
 *
 * The hint check (`hintCheck`) judges hinted handoff alone: every node runs with read repair and
 * anti-entropy off, and after heal the run waits until the cluster is
 * settled (every hint delivered), quiet, and settled again; then every acknowledged write must be on all
 * N primaries (checker.ts, checkHintedHandoff, excusing copies lost with a coordinator that crashed
 * before keeping its late hint: lostLateHint), and the checkers that judge each replica's own set must
 * hold (checkHistoryWithoutRepair). LSM storage only, without membership changes (checkHintedHandoff
 * says why).
 *
 * Same seed and options, same history, byte for byte: `hash` is the SHA-256 of the canonical history
 * (every WriteRecord in order, then the final state sorted by key and replica).
 *
 * Bounds: the chaos phase stops new operations after `maxChaosMs` of virtual time; healing may take at
 * most `maxHealMs`; the scheduler fires at most `maxSteps` timers in a run (more is a runaway loop).
 */
import { createHash } from "node:crypto";
import type { KvService } from "../replication/coordinator.js";
import { derivedRandom, VirtualScheduler } from "../runtime/virtual-runtime.js";
import { DEFAULT_LSM_OPTIONS } from "../storage/lsm/options.js";
import { EMPTY_VECTOR } from "../versioning/dvv.js";
import { checkHistory, checkHistoryWithoutRepair, type Excuse, parseDot } from "./checker.js";
import { type PlantedBug, SIM_HINTS, SimCluster, type SimNode, type StorageKind } from "./cluster.js";
import type { Anomaly, FinalSibling, FinalState, History } from "./history.js";
import { FAULT_KINDS, type FaultCounts, Nemesis, type NemesisConfig } from "./nemesis.js";
import { NO_FAULTS, type SimCounters, SimNetwork } from "./sim-network.js";
import { finalSibling, keyName, Workload, type WorkloadStats } from "./workload.js";

export type FaultProfile = "none" | "standard" | "heavy";
export const FAULT_PROFILES: readonly FaultProfile[] = ["none", "standard", "heavy"];

export interface SimOptions {
  readonly seed: number;
  /** Nodes in the cluster (at least 5). */
  readonly nodes: number;
  /** Client operations in the run. */
  readonly ops: number;
  readonly clients: number;
  readonly keys: number;
  readonly storage: StorageKind;
  readonly faults: FaultProfile;
  /** A bug planted on purpose (tests only: shows the checkers catch it). */
  readonly bug?: PlantedBug;
  /**
   * Let duplicated requests reach their handler a second time (an at-least-once network). Off by
   * default: node-to-node requests travel over TCP, which never hands the application a request twice,
   * so a duplicated request copy is discarded on arrival (SimNetwork's atMostOnceRequests). On, it
   * shows what a retried request does (a forwarded write applied twice: see the report in test/sim).
   */
  readonly duplicateRequests?: boolean;
  /**
   * Membership changes among the faults: nodes join (a new node through a random member) and, once the
   * cluster has grown, members leave (handing their data off), one change at a time.
   */
  readonly membership?: boolean;
  /**
   * The hint check: read repair off on every node, no converging reads; after heal and quiet, every
   * acknowledged write must be on all N primaries (LSM storage, no membership changes).
   */
  readonly hintCheck?: boolean;
}

export const DEFAULT_SIM_OPTIONS: Omit<SimOptions, "seed"> = {
  nodes: 5,
  ops: 300,
  clients: 6,
  keys: 6,
  storage: "lsm",
  faults: "standard",
};

/** The cluster's timing and quorum settings (gossip and timeouts scaled down as in the cluster tests). */
const N = 3;
const R = 2;
const W = 2;
const PARTITIONS = 64;
const GOSSIP_INTERVAL_MS = 200;
const DOWN_AFTER_MS = 2000;
const PEER_TIMEOUT_MS = 500;
const CLIENT_TIMEOUT_MS = 1000;
const MAX_SIBLINGS = 64;
/** Virtual clocks start here, so that nodes' clocks (skewed) look like wall clocks and stay positive. */
const EPOCH_MS = 1_700_000_000_000;
const WARMUP_MS = 1500;
const MAX_CHAOS_MS = 120_000;
const MAX_HEAL_MS = 60_000;
const QUIET_MS = 3000;
/** Anti-entropy's time to bring the replicas in sync after healing (exchanges every 2 s in the simulator). */
const MAX_CONVERGE_MS = 120_000;
/**
 * The hint check: how long after a write's deadline its coordinator may still be keeping the hints for
 * its late primaries (durable puts behind a slow disk), for lostLateHint.
 */
const LATE_HINT_MARGIN_MS = 2000;
const MAX_STEPS = 5_000_000;
/** The largest clock offset of a node (either way). */
const MAX_SKEW_MS = 30_000;
/**
 * Tombstone purging (every run but the hint check's). A tombstone's age is read by each replica's clock
 * from its coordinator's stamp, so two clocks may disagree on it by twice the largest skew: the grace
 * period outlasts the hint window (hints of older versions are dropped past it) by more than that, as a
 * node's configuration requires it to outlast the window (node/config.ts), with the skew of real clocks
 * far smaller.
 */
const SIM_HINT_WINDOW_MS = 10_000;
const SIM_TOMBSTONE_GRACE_MS = SIM_HINT_WINDOW_MS + 2 * MAX_SKEW_MS + 10_000;
const SIM_TOMBSTONE_PACING = {
  sweepIntervalMs: 2000,
  scanKeysPerSecond: 100_000,
  purgesPerSecond: 10_000,
  pageKeys: 256,
  pageBytes: 1 << 20,
};
/**
 * The long absence: a node cut off from the deletes until past the grace period by every clock, and a
 * sweep more (so that a purge made without its agreement has happened when it comes back).
 */
const LONG_ABSENCE_MS = SIM_TOMBSTONE_GRACE_MS + 2 * MAX_SKEW_MS + 10_000;
/** After the deletes: the long absence, then time to purge what it held up. */
const PURGE_GAP_MS = LONG_ABSENCE_MS + 30_000;
/** Tries per key of the deletes that follow the first phase. */
const DELETE_ATTEMPTS = 5;

function nemesisConfig(o: SimOptions): NemesisConfig {
  const maxCrashes = o.storage === "memory" ? 1 : Number.POSITIVE_INFINITY;
  // The memory engine has no disk to slow down.
  const kinds = [
    ...(o.storage === "memory" ? FAULT_KINDS.filter((k) => k !== "slow-disk") : FAULT_KINDS),
    ...(o.membership === true ? (["membership"] as const) : []),
  ];
  switch (o.faults) {
    case "none":
      return {
        gapMs: [1000, 1000],
        durationMs: [0, 0],
        baseline: NO_FAULTS,
        maxCrashed: 0,
        maxCrashes: 0,
        kinds: [],
      };
    case "standard":
      return {
        gapMs: [300, 1200],
        durationMs: [300, 3000],
        baseline: {
          dropProbability: 0.01,
          duplicateProbability: 0.01,
          delayProbability: 0.05,
          delayMaxMs: 100,
        },
        maxCrashed: 1,
        maxCrashes,
        kinds,
      };
    case "heavy":
      return {
        gapMs: [200, 700],
        durationMs: [500, 5000],
        baseline: {
          dropProbability: 0.03,
          duplicateProbability: 0.03,
          delayProbability: 0.1,
          delayMaxMs: 300,
        },
        maxCrashed: Math.floor((o.nodes - 1) / 2),
        maxCrashes,
        kinds,
      };
  }
}

export interface SimResult {
  readonly options: SimOptions;
  readonly history: History;
  readonly anomalies: Anomaly[];
  readonly faults: FaultCounts;
  readonly network: Readonly<SimCounters>;
  readonly workload: WorkloadStats;
  readonly readRepairs: number;
  /**
   * The hint check's excused copies (an acknowledged write missing from a primary because its
   * coordinator crashed before keeping its late hint: lostLateHint), one line each; [] otherwise.
   */
  readonly excused: readonly string[];
  /** Anti-entropy exchanges and keys repaired (this incarnation of each node), all nodes together. */
  readonly antiEntropy: { readonly exchanges: number; readonly keysRepaired: number };
  /**
   * Tombstone copies deleted by the nodes (each replica's deletion counts), and keys whose purge a sweep
   * held back, by reason, all nodes and incarnations together.
   */
  readonly tombstones: { readonly purged: number; readonly refused: Readonly<Record<string, number>> };
  /** Hints stored (or merged) and delivered, all nodes together. */
  readonly hints: { readonly stored: number; readonly delivered: number };
  /** SHA-256 of the canonical history. */
  readonly hash: string;
  /** Every fault, operation and phase, with its virtual time (ms since the start). */
  readonly trace: readonly string[];
  readonly virtualMs: number;
  readonly steps: number;
}

/** The command that replays a run. */
export function replayCommand(o: SimOptions): string {
  const d = DEFAULT_SIM_OPTIONS;
  const parts = [`npm run sim -- --seed ${o.seed}`];
  if (o.nodes !== d.nodes) parts.push(`--nodes ${o.nodes}`);
  if (o.ops !== d.ops) parts.push(`--ops ${o.ops}`);
  if (o.clients !== d.clients) parts.push(`--clients ${o.clients}`);
  if (o.keys !== d.keys) parts.push(`--keys ${o.keys}`);
  if (o.storage !== d.storage) parts.push(`--storage ${o.storage}`);
  if (o.faults !== d.faults) parts.push(`--faults ${o.faults}`);
  if (o.bug !== undefined) parts.push(`--bug ${o.bug}`);
  if (o.duplicateRequests === true) parts.push("--dup-requests");
  if (o.membership === true) parts.push("--membership");
  if (o.hintCheck === true) parts.push("--hint-check");
  return parts.join(" ");
}

/** The history as canonical JSON: writes in order; keys, then replicas, sorted; siblings as stored. */
export function canonicalHistory(h: History): string {
  const keys = [...h.final.keys.keys()].sort();
  const final = keys.map((k) => {
    const replicas = [...h.final.keys.get(k)!.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
    return [
      k,
      replicas.map(([r, sibs]) => [r, sibs.map((s) => [s.dot ?? null, s.w ?? null, s.deleted, s.items])]),
    ];
  });
  const writes = h.writes.map((w) => [
    w.id,
    w.client,
    w.key,
    w.kind,
    w.element ?? null,
    w.observed,
    w.observedItems,
    w.items ?? null,
    w.outcome,
    w.dot ?? null,
    w.invokedAt,
    w.completedAt,
  ]);
  return JSON.stringify({ writes, final });
}

export function historyHash(h: History): string {
  return createHash("sha256").update(canonicalHistory(h)).digest("hex");
}

export async function runSimulation(o: SimOptions): Promise<SimResult> {
  if (!(Number.isInteger(o.nodes) && o.nodes >= 5))
    throw new RangeError(`nodes must be >= 5, got ${o.nodes}`);
  if (!(Number.isInteger(o.seed) && o.seed >= 0 && o.seed <= 0xffff_ffff))
    throw new RangeError(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (o.hintCheck === true && o.storage !== "lsm")
    throw new RangeError("the hint check needs lsm storage (the memory engine loses its data at a crash)");
  if (o.hintCheck === true && o.membership === true)
    throw new RangeError("the hint check runs without membership changes (they move a key's primaries)");
  const purging = o.hintCheck !== true;
  const sched = new VirtualScheduler({ startMs: EPOCH_MS });
  const trace: string[] = [];
  const log = (line: string) => trace.push(`${String(sched.now() - EPOCH_MS).padStart(7)} ${line}`);
  const anomalies: Anomaly[] = [];
  const fail = (checker: string, key: string, message: string) => {
    anomalies.push({ checker, key, message });
    log(`ANOMALY [${checker}] ${key}: ${message}`);
  };

  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: derivedRandom(o.seed, "network"),
    latency: { minMs: 1, maxMs: 10 },
    atMostOnceRequests: o.duplicateRequests !== true,
  });
  const nem = nemesisConfig(o);
  const skewRandom = derivedRandom(o.seed, "skew");
  const skew = Array.from({ length: o.nodes }, () =>
    o.faults === "none"
      ? { offsetMs: 0, drift: 0 }
      : {
          offsetMs: Math.round((skewRandom.next() * 2 - 1) * MAX_SKEW_MS),
          drift: (skewRandom.next() * 2 - 1) * 1e-3,
        },
  );
  const cluster = new SimCluster(
    {
      seed: o.seed,
      nodes: o.nodes,
      storage: o.storage,
      n: N,
      r: R,
      w: W,
      partitions: PARTITIONS,
      gossipIntervalMs: GOSSIP_INTERVAL_MS,
      downAfterMs: DOWN_AFTER_MS,
      requestTimeoutMs: PEER_TIMEOUT_MS,
      maxSiblings: MAX_SIBLINGS,
      ...(o.hintCheck === true
        ? { readRepair: false, watchCopies: true, antiEntropy: false }
        : {
            hintWindowMs: SIM_HINT_WINDOW_MS,
            tombstones: { graceMs: SIM_TOMBSTONE_GRACE_MS, pacing: SIM_TOMBSTONE_PACING },
          }),
      bug: o.bug,
    },
    sched,
    net,
    skew,
    log,
  );
  await sched.runUntilSettled(cluster.start(), 10_000);
  log(
    `started ${o.nodes} nodes (${o.storage} storage, faults ${o.faults}${o.bug ? `, planted bug ${o.bug}` : ""}` +
      `${o.hintCheck === true ? ", read repair off for the hint check" : ""})`,
  );
  for (const [i, s] of skew.entries())
    if (s.offsetMs !== 0 || s.drift !== 0)
      log(
        `skew ${SimCluster.idOf(i)}: clock ${s.offsetMs >= 0 ? "+" : ""}${s.offsetMs} ms, drift ${s.drift.toExponential(2)}`,
      );
  await sched.runFor(WARMUP_MS);

  // ---- chaos: clients and faults together
  const nemesis = new Nemesis(nem, cluster, net, sched, derivedRandom(o.seed, "nemesis"), log);
  nemesis.counts.skewedNodes = skew.filter((s) => s.offsetMs !== 0 || s.drift !== 0).length;
  nemesis.counts.maxSkewMs = Math.max(0, ...skew.map((s) => Math.abs(s.offsetMs)));
  const service = (node: SimNode): KvService => {
    const router = node.core.router;
    if (o.bug !== "ignore-context") return router;
    return {
      get: (k, r, t) => router.get(k, r, t),
      write: (k, _c, v, w, t) => router.write(k, EMPTY_VECTOR, v, w, t),
    };
  };
  const workload = new Workload(
    {
      clients: o.clients,
      ops: o.ops,
      keys: o.keys,
      r: R,
      w: W,
      requestTimeoutMs: CLIENT_TIMEOUT_MS,
      thinkMaxMs: 100,
    },
    cluster,
    sched,
    (c) => derivedRandom(o.seed, `client/${c}`),
    service,
    log,
  );
  nemesis.start();
  workload.start();
  if (!(await sched.runUntil(() => workload.done, MAX_CHAOS_MS))) {
    workload.stopping = true;
    log("chaos phase hit its time bound: clients stop after their current operation");
    if (!(await sched.runUntil(() => workload.done, MAX_CHAOS_MS)))
      fail("liveness", "", "clients did not finish their operations");
  }
  log(`chaos over: ${workload.history.length} writes recorded`);

  // ---- tombstones: a node goes away, every key is deleted, and the tombstones age past the grace period
  // (faults going on) while that node stays away; then a second phase of clients writes the hot keys
  // again (after their tombstones were purged, with luck: no dot may be reused) and leaves the others
  // deleted (none may come back).
  if (purging) {
    if (o.faults !== "none") {
      if (!(await sched.runUntil(() => nemesis.networkFree, MAX_HEAL_MS)))
        log("no long absence: a network fault stayed in force");
      nemesis.isolateFor(LONG_ABSENCE_MS);
    }
    void workload.deleteAll(derivedRandom(o.seed, "deletes"), DELETE_ATTEMPTS);
    if (!(await sched.runUntil(() => workload.done, MAX_CHAOS_MS)))
      fail("liveness", "", "the deletes did not finish");
    log(`every key deleted: ${workload.history.length} writes recorded`);
    await sched.runFor(PURGE_GAP_MS);
    workload.continueWith(Math.ceil(o.ops / 2), Math.ceil(o.keys / 2), "b");
    if (!(await sched.runUntil(() => workload.done, MAX_CHAOS_MS))) {
      workload.stopping = true;
      log("second phase hit its time bound: clients stop after their current operation");
      if (!(await sched.runUntil(() => workload.done, MAX_CHAOS_MS)))
        fail("liveness", "", "clients did not finish their operations");
    }
    log(`second phase over: ${workload.history.length} writes recorded`);
  }

  // ---- heal, and wait for the membership to see everyone up again, and for handoff to be done (a
  // handoff still retrying would move versions after the reads below made the replicas agree)
  nemesis.heal();
  if (!(await sched.runUntil(() => !nemesis.busy && cluster.settled(), MAX_HEAL_MS)))
    fail("liveness", "", `the cluster did not converge and settle within ${MAX_HEAL_MS} ms of healing`);
  log("healed: every node sees every other up, no handoff under way");

  // ---- converge through read repair (anti-entropy will take this over), then quiet; the hint check
  // reads nothing: it waits until quiet, and until every hint kept meanwhile (a coordinator's late hint)
  // is delivered
  const keys = Array.from({ length: o.keys }, (_, i) => keyName(i));
  if (o.hintCheck === true) {
    await sched.runFor(QUIET_MS);
    if (!(await sched.runUntil(() => cluster.settled(), MAX_HEAL_MS)))
      fail("liveness", "", `the cluster did not settle again within ${MAX_HEAL_MS} ms of going quiet`);
    log("quiet, and settled again: every hint delivered");
    // No primary can have been away longer than the run: the check judges every acknowledged write.
    if (sched.now() - EPOCH_MS >= SIM_HINTS.limits.windowMs)
      fail("hinted-handoff", "", "the run outlasted the hint window: hints may have expired");
  } else {
    // Anti-entropy alone brings the replicas together: no reads. Quiet means every member has since
    // exchanged with each of its co-replicas and found them in sync. Purges stop first (one under way
    // ends), so that none lands between the replicas found in sync and the final state read.
    await sched.runUntilSettled(
      Promise.all(cluster.members().map((n) => n.core.tombstones?.pause())),
      MAX_HEAL_MS,
    );
    const healedAt = sched.now();
    if (
      !(await sched.runUntil(() => cluster.settled() && cluster.antiEntropyInSync(healedAt), MAX_CONVERGE_MS))
    )
      fail(
        "liveness",
        "",
        `anti-entropy did not bring the replicas in sync within ${MAX_CONVERGE_MS} ms of healing`,
      );
    await sched.runFor(QUIET_MS);
  }
  log(`quiet: ${cluster.readRepairs.count} read repairs in the run`);

  // ---- the final state, straight from each replica's storage
  const finalKeys = new Map<string, Map<string, FinalSibling[]>>();
  for (const key of keys) {
    const k = Buffer.from(key);
    const members = cluster.members();
    const prefs = members[0]!.core.preferenceList(k);
    for (const node of members.slice(1)) {
      const p = node.core.preferenceList(k);
      if (p.join() !== prefs.join())
        fail("liveness", key, `preference lists differ: ${members[0]!.id} [${prefs}] ${node.id} [${p}]`);
    }
    const replicas = new Map<string, FinalSibling[]>();
    for (const id of prefs) {
      const node = cluster.byId.get(id);
      if (node === undefined || node.state !== "up") {
        fail("liveness", key, `replica ${id} of the final ring is not a running member`);
        continue;
      }
      const sibs = await sched.runUntilSettled(node.core.replica.read(k), 1000);
      replicas.set(id, sibs.map(finalSibling));
    }
    finalKeys.set(key, replicas);
  }
  const final: FinalState = { keys: finalKeys };
  const history: History = { writes: [...workload.history], final };

  // ---- checks
  const excused: string[] = [];
  const excuse: Excuse | undefined =
    cluster.copies === undefined ? undefined : lostLateHint(cluster, excused, workload.t0);
  const anomaliesFound =
    o.hintCheck === true
      ? checkHistoryWithoutRepair(history, excuse)
      : checkHistory(history, { tombstonesNamed: true, tombstonesPurged: purging });
  for (const a of anomaliesFound) fail(a.checker, a.key, a.message);
  for (const e of excused) log(`excused: ${e}`);
  checkBounds(o, cluster, net, workload.stats, sched.fired, fail);
  for (const err of [...workload.errors, ...nemesis.errors])
    fail("sim-error", "", err instanceof Error ? (err.stack ?? err.message) : String(err));

  const hints = { stored: 0, delivered: 0 };
  const antiEntropy = { exchanges: 0, keysRepaired: 0 };
  const tombstones = {
    purged: cluster.tombstones.purged,
    refused: Object.fromEntries([...cluster.tombstones.refused].sort()),
  };
  for (const node of cluster.nodes) {
    antiEntropy.exchanges += node.core?.antiEntropy?.totals.exchanges ?? 0;
    antiEntropy.keysRepaired += node.core?.antiEntropy?.totals.keysRepaired ?? 0;
    const c = node.core?.hints?.counters;
    hints.stored += (c?.stored ?? 0) + (c?.merged ?? 0);
    for (const p of node.core?.hintDelivery?.progress.values() ?? []) hints.delivered += p.delivered;
  }
  cluster.stop();
  return {
    options: o,
    history,
    anomalies,
    faults: { ...nemesis.counts },
    network: { ...net.counters },
    workload: workload.stats,
    readRepairs: cluster.readRepairs.count,
    excused,
    hints,
    antiEntropy,
    tombstones,
    hash: historyHash(history),
    trace,
    virtualMs: sched.now() - EPOCH_MS,
    steps: sched.fired,
  };
}

/**
 * The hint check's excuse (checker.ts, checkHintedHandoff): a write missing from a primary is excused
 * when no node ever kept a copy of it (or of a version superseding it) for that primary (copies.ts: made
 * durable, or acknowledged as such), neither the primary itself nor a stand-in or a coordinator as a
 * hint for it, and the incarnation that versioned it crashed before the write's round was over: within
 * the write's deadline after its answer, plus LATE_HINT_MARGIN_MS, plus the time its node was paused
 * meanwhile (its timers wait). Under correct code such a copy can be missing only because the primary
 * acknowledged nothing and its only copy was to be the hint the coordinator keeps once the write's
 * deadline passed, after the client's answer: a coordinator that crashed first kept none. Each excused
 * copy is noted in `excused`.
 */
function lostLateHint(cluster: SimCluster, excused: string[], t0: number): Excuse {
  return (w, primary) => {
    const dot = parseDot(w.dot ?? "");
    if (dot === undefined) return undefined;
    // Actors are `<node id>.<epoch>`; a stand-in coordinator's one-write actor is `<its actor>~<hex>`.
    const actor = dot.actor.split("~")[0]!;
    const crashedAt = cluster.crashedAt.get(actor);
    if (crashedAt === undefined || crashedAt < t0 + w.invokedAt) return undefined;
    const node = actor.slice(0, actor.indexOf("."));
    const roundOver =
      t0 +
      w.completedAt +
      CLIENT_TIMEOUT_MS +
      LATE_HINT_MARGIN_MS +
      cluster.pausedMs(node, t0 + w.invokedAt, crashedAt);
    if (crashedAt > roundOver) return undefined;
    if (cluster.copies!.covers(w.key, primary, dot)) return undefined;
    const why =
      `${w.id} at ${primary}: no copy for it was ever kept, and its coordinator ${actor} crashed ` +
      `${(crashedAt - t0 - w.completedAt).toFixed(0)} ms after the answer`;
    excused.push(why);
    return why;
  };
}

/** Every queue stayed within its bound. */
function checkBounds(
  o: SimOptions,
  cluster: SimCluster,
  net: SimNetwork,
  stats: WorkloadStats,
  steps: number,
  fail: (checker: string, key: string, message: string) => void,
): void {
  try {
    net.checkCounters();
  } catch (err) {
    fail("bounds", "", (err as Error).message);
  }
  const hw = net.highWater;
  const lim = net.limits;
  if (hw.wirePerLink > lim.maxQueuedPerLink) fail("bounds", "", `wire queue reached ${hw.wirePerLink}`);
  if (hw.pendingPerLink > lim.maxInFlightPerLink)
    fail("bounds", "", `requests in flight reached ${hw.pendingPerLink}`);
  if (hw.handlingPerLink > lim.maxInFlightPerLink)
    fail("bounds", "", `requests handled reached ${hw.handlingPerLink}`);
  if (hw.heldPerNode > lim.maxHeldPerNode) fail("bounds", "", `messages held reached ${hw.heldPerNode}`);
  if (stats.maxSiblingsRead > MAX_SIBLINGS)
    fail("bounds", "", `a read returned ${stats.maxSiblingsRead} siblings`);
  if (stats.maxInFlight > o.clients)
    fail("bounds", "", `${stats.maxInFlight} client requests were in flight`);
  if (steps > MAX_STEPS) fail("bounds", "", `${steps} timers fired (bound ${MAX_STEPS})`);
  for (const node of cluster.nodes) {
    const s = node.storage.stats();
    if (s.immutableMemtables > DEFAULT_LSM_OPTIONS.maxImmutableMemtables)
      fail("bounds", "", `${node.id}: ${s.immutableMemtables} immutable memtables`);
    if (s.levels.length > DEFAULT_LSM_OPTIONS.stopWritesAtRuns)
      fail("bounds", "", `${node.id}: ${s.levels.length} sorted runs`);
  }
}
