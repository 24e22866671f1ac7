/**
 * `npm run sim`: the simulator's command line (the edge of src/sim: it parses arguments, prints, and
 * measures wall time; the runs themselves are deterministic, simulator.ts).
 *
 *   npm run sim -- --seed S [--nodes 5] [--ops 300] [--clients 6] [--keys 6] [--storage lsm|memory]
 *                  [--faults none|standard|heavy] [--dup-requests] [--membership] [--hint-check]
 *                  [--bug NAME] [--verbose]
 *   npm run sim -- --runs N [same options]      sweep N random seeds (storage alternates unless given;
 *                                               lsm with --hint-check)
 *
 * --hint-check: read repair off, no converging reads; after heal and quiet every acknowledged write must
 * be on all N primaries through hinted handoff alone (simulator.ts; lsm storage, no --membership).
 *
 * A failing run prints its seed, its anomalies and the command that replays it; the exit code is 1.
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { formatAnomalies } from "./checker.js";
import type { PlantedBug, StorageKind } from "./cluster.js";
import {
  DEFAULT_SIM_OPTIONS,
  FAULT_PROFILES,
  type FaultProfile,
  replayCommand,
  runSimulation,
  type SimOptions,
  type SimResult,
} from "./simulator.js";

const { values } = parseArgs({
  options: {
    seed: { type: "string" },
    runs: { type: "string" },
    nodes: { type: "string", default: String(DEFAULT_SIM_OPTIONS.nodes) },
    ops: { type: "string", default: String(DEFAULT_SIM_OPTIONS.ops) },
    clients: { type: "string", default: String(DEFAULT_SIM_OPTIONS.clients) },
    keys: { type: "string", default: String(DEFAULT_SIM_OPTIONS.keys) },
    storage: { type: "string" },
    faults: { type: "string", default: DEFAULT_SIM_OPTIONS.faults },
    bug: { type: "string" },
    "dup-requests": { type: "boolean", default: false },
    membership: { type: "boolean", default: false },
    "hint-check": { type: "boolean", default: false },
    verbose: { type: "boolean", short: "v", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

function usage(message?: string): never {
  if (message !== undefined) console.error(`sim: ${message}`);
  console.error(
    "usage: npm run sim -- [--seed S | --runs N] [--nodes >=5] [--ops N] [--clients N] [--keys N]\n" +
      "                      [--storage lsm|memory] [--faults none|standard|heavy|on|off] [--dup-requests]\n" +
      "                      [--membership]   (nodes join, leave and are removed during the run)\n" +
      "                      [--hint-check]   (read repair off; every acknowledged write must reach all N\n" +
      "                                        primaries through hinted handoff; lsm, no --membership)\n" +
      "                      [--bug drop-store|ignore-context|no-fsync|keep-actor|no-forward-memo|retry-forward|\n" +
      "                             lose-hints|skip-tree-update|purge-without-agreement|\n" +
      "                             counter-from-set|keep-actor-and-counter]\n" +
      "                      (a planted bug, to see the checkers catch it) [--verbose]",
  );
  process.exit(message === undefined ? 0 : 2);
}

if (values.help) usage();
const int = (v: string, name: string, min: number): number => {
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= min)) usage(`${name} must be an integer >= ${min}, got ${v}`);
  return n;
};
const nodes = int(values.nodes, "--nodes", 5);
const ops = int(values.ops, "--ops", 1);
const clients = int(values.clients, "--clients", 1);
const keys = int(values.keys, "--keys", 1);
const storageArg = values.storage;
if (storageArg !== undefined && storageArg !== "lsm" && storageArg !== "memory")
  usage(`--storage must be lsm or memory, got ${storageArg}`);
// "on" and "off" are aliases of the standard profile and of none.
if (values.faults === "on") values.faults = "standard";
if (values.faults === "off") values.faults = "none";
if (!FAULT_PROFILES.includes(values.faults as FaultProfile))
  usage(`--faults must be one of ${FAULT_PROFILES.join(", ")}, got ${values.faults}`);
const bugs: PlantedBug[] = [
  "drop-store",
  "ignore-context",
  "no-fsync",
  "keep-actor",
  "keep-actor-and-counter",
  "no-forward-memo",
  "retry-forward",
  "lose-hints",
  "skip-tree-update",
  "purge-without-agreement",
  "counter-from-set",
];
if (values.bug !== undefined && !bugs.includes(values.bug as PlantedBug))
  usage(`--bug must be one of ${bugs.join(", ")}`);
if (values.seed !== undefined && values.runs !== undefined) usage("give --seed or --runs, not both");
if (values["hint-check"] && storageArg === "memory") usage("--hint-check needs lsm storage");
if (values["hint-check"] && values.membership) usage("--hint-check runs without --membership");

function options(seed: number, storage: StorageKind): SimOptions {
  return {
    seed,
    nodes,
    ops,
    clients,
    keys,
    storage,
    faults: values.faults as FaultProfile,
    ...(values.bug === undefined ? {} : { bug: values.bug as PlantedBug }),
    ...(values["dup-requests"] ? { duplicateRequests: true } : {}),
    ...(values.membership ? { membership: true } : {}),
    ...(values["hint-check"] ? { hintCheck: true } : {}),
  };
}

function summary(r: SimResult, wallMs: number): string {
  const f = r.faults;
  const n = r.network;
  const w = r.workload;
  return [
    `seed ${r.options.seed} (${r.options.storage}, faults ${r.options.faults}${r.options.hintCheck === true ? ", hint check" : ""}): ${r.anomalies.length === 0 ? "ok" : `${r.anomalies.length} ANOMALIES`}`,
    `  ${r.history.writes.length} writes (ok ${w.writes.ok}, unknown ${w.writes.unknown}, failed ${w.writes.failed}), ` +
      `${w.readsUnavailable} reads unavailable, ${r.readRepairs} read repairs, ${r.hints.stored} hints stored and ${r.hints.delivered} delivered, ${r.antiEntropy.exchanges} anti-entropy exchanges repairing ${r.antiEntropy.keysRepaired} keys (this incarnation of each node), ${r.tombstones.purged} tombstone copies purged (held back: ${
        Object.entries(r.tombstones.refused)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ") || "none"
      }), most siblings read ${w.maxSiblingsRead}` +
      (r.options.hintCheck === true
        ? `; hint check: ${r.excused.length} copies excused (coordinator crashed before its late hint)`
        : ""),
    `  faults: ${f.partitions} partitions, ${f.oneWayCuts} one-way cuts, ${f.isolations} isolations, ` +
      `${f.crashes} crashes, ${f.restarts} restarts, ${f.pauses} pauses, ${f.bursts} bursts, ${f.slowDisks} slow disks, ` +
      `${f.skewedNodes} skewed clocks (up to ${f.maxSkewMs} ms)` +
      (r.options.membership === true ? `, ${f.joins} joins, ${f.leaves} leaves, ${f.removals} removals` : ""),
    `  messages: ${n.sent} sent, ${n.droppedRandom} lost, ${n.droppedCut} cut, ${n.duplicated} duplicated, ` +
      `${n.delayed} delayed, ${n.timeouts} timeouts`,
    `  ${(r.virtualMs / 1000).toFixed(1)} s virtual, ${r.steps} timers, ${wallMs.toFixed(0)} ms wall; history ${r.hash.slice(0, 16)}`,
  ].join("\n");
}

function report(r: SimResult): void {
  if (r.anomalies.length === 0) return;
  console.log(formatAnomalies(r.anomalies));
  console.log(`FAILED: seed ${r.options.seed}. Replay: ${replayCommand(r.options)}`);
}

if (values.runs === undefined) {
  const seed = values.seed === undefined ? 1 : int(values.seed, "--seed", 0);
  const t = performance.now();
  const r = await runSimulation(options(seed, (storageArg as StorageKind | undefined) ?? "lsm"));
  const wall = performance.now() - t;
  if (values.verbose) {
    for (const line of r.trace) console.log(line);
    console.log("");
  }
  console.log(summary(r, wall));
  report(r);
  process.exitCode = r.anomalies.length === 0 ? 0 : 1;
} else {
  const runs = int(values.runs, "--runs", 1);
  // An exception thrown from a timer of the run (a bug in the simulator or the node) escapes the run's
  // promise: name the seed before dying.
  let current: SimOptions | undefined;
  process.on("uncaughtException", (err) => {
    console.error(err);
    if (current !== undefined)
      console.log(`FAILED: seed ${current.seed} threw. Replay: ${replayCommand(current)}`);
    process.exit(1);
  });
  // Random seeds: the sweep itself is the one place that may use the machine's randomness.
  const base = Math.floor(Math.random() * 0x1_0000_0000);
  const failures: SimResult[] = [];
  const walls: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) {
    const seed = (base + i * 0x9e37_79b1) >>> 0;
    // The hint check needs durable storage: lsm unless given.
    const storage =
      (storageArg as StorageKind | undefined) ?? (values["hint-check"] || i % 2 === 0 ? "lsm" : "memory");
    const t = performance.now();
    current = options(seed, storage);
    const r = await runSimulation(current);
    const wall = performance.now() - t;
    walls.push(wall);
    if (values.verbose) console.log(summary(r, wall));
    if (r.anomalies.length > 0) {
      failures.push(r);
      if (!values.verbose) console.log(summary(r, wall));
      report(r);
    }
  }
  const total = performance.now() - t0;
  walls.sort((a, b) => a - b);
  console.log(
    `${runs} runs in ${(total / 1000).toFixed(1)} s wall (median ${walls[walls.length >> 1]!.toFixed(0)} ms, ` +
      `max ${walls[walls.length - 1]!.toFixed(0)} ms per run); ${failures.length} failed` +
      (failures.length === 0 ? "" : `: seeds ${failures.map((f) => f.options.seed).join(", ")}`),
  );
  process.exitCode = failures.length === 0 ? 0 : 1;
}
