/**
 * One fault scenario, start to end: a fresh cluster of real processes (on loopback, or in namespaces),
 * the recording workload running while a fault schedule runs, then every fault healed, the cluster
 * settled and converged, each replica's copy read from its disk, and the history judged by the
 * checkers shared with the simulator (src/sim/checker.ts). Prints ops by outcome, the faults injected
 * and every anomaly; a failing run leaves the history and the node logs under scratch/faults/.
 *
 * Time: the fault phase lasts RINGSTORE_FAULT_SECONDS (default 20) seconds; a whole scenario takes about
 * that plus 8-10 s. RINGSTORE_FAULT_SEED fixes the workload's and the schedule's random choices (fault
 * timings are real time, so a run is not replayed exactly).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { checkHistory, formatAnomalies } from "../../src/sim/checker.js";
import type { Anomaly, History } from "../../src/sim/history.js";
import { FaultCluster } from "./cluster.js";
import { collectFinalState, converge, fetchPreferences } from "./final-state.js";
import { FaultNetwork } from "./net.js";
import { seededRandom, Workload, type WorkloadStats } from "./workload.js";

export const FAULT_SECONDS = Number(process.env.RINGSTORE_FAULT_SECONDS ?? "20");

export interface FaultContext {
  readonly cluster: FaultCluster;
  readonly net: FaultNetwork | undefined;
  readonly random: () => number;
  /** Date.now() at which the schedule must have healed everything and returned. */
  readonly deadline: number;
  /** Records one injected fault (for the summary). */
  note(what: string): void;
  /** Sleeps `ms`, at most until the deadline. */
  sleep(ms: number): Promise<void>;
  /** A uniform integer in [lo, hi]. */
  between(lo: number, hi: number): number;
}

export interface ScenarioSpec {
  readonly name: string;
  readonly nodes: number;
  /** Run the nodes in namespaces behind the hub (needed for network faults). */
  readonly network: boolean;
  readonly clients: number;
  readonly keys: number;
  /** Injects faults until ctx.deadline, then heals what it did and returns. */
  readonly schedule: (ctx: FaultContext) => Promise<void>;
}

export interface ScenarioResult {
  readonly name: string;
  readonly seed: number;
  readonly seconds: number;
  readonly stats: WorkloadStats;
  readonly faults: Map<string, number>;
  readonly anomalies: Anomaly[];
  readonly summary: string;
}

/** Leaves the history and node logs where a person can read them. */
function saveArtifacts(name: string, history: History, c: FaultCluster, summary: string): string {
  const dir = path.resolve(
    process.env.RINGSTORE_FAULT_ARTIFACTS ?? "scratch/faults",
    `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}`,
  );
  mkdirSync(dir, { recursive: true });
  const final = Object.fromEntries(
    [...history.final.keys].map(([k, m]) => [k, Object.fromEntries(m)] as const),
  );
  writeFileSync(path.join(dir, "history.json"), JSON.stringify({ writes: history.writes, final }, null, 1));
  for (const n of c.nodes) writeFileSync(path.join(dir, `${n.id}.log`), n.log);
  writeFileSync(path.join(dir, "summary.txt"), summary);
  return dir;
}

export async function runScenario(spec: ScenarioSpec): Promise<ScenarioResult> {
  const seed = Number(process.env.RINGSTORE_FAULT_SEED ?? Math.floor(Math.random() * 1e9));
  const random = seededRandom(seed);
  const t0 = Date.now();
  const faultMs = FAULT_SECONDS * 1000;
  let net: FaultNetwork | undefined;
  let cluster: FaultCluster | undefined;
  try {
    if (spec.network) net = await FaultNetwork.create(spec.nodes);
    cluster = new FaultCluster({ nodes: spec.nodes, ...(net !== undefined ? { net } : {}) });
    const c = cluster;
    const phases: [string, number][] = [];
    let mark = Date.now();
    const phase = (name: string) => {
      const now = Date.now();
      phases.push([name, (now - mark) / 1000]);
      mark = now;
    };
    await c.startAll();
    phase("start");
    const keys = [...Array(spec.keys).keys()].map((i) => `cart-${i}`);
    const start = Date.now();
    const workload = new Workload({
      keys,
      clients: spec.clients,
      nodes: c.nodes.map((n) => n.api),
      seed,
      durationMs: faultMs,
      maxOpsPerClient: 100_000,
      thinkMs: 20,
      clock: () => Date.now() - start,
    });
    const faults = new Map<string, number>();
    const events: string[] = [];
    const deadline = start + faultMs - 1500;
    const ctx: FaultContext = {
      cluster: c,
      net,
      random,
      deadline,
      note: (what) => {
        faults.set(what, (faults.get(what) ?? 0) + 1);
        events.push(`${Date.now() - start} ms: ${what}`);
      },
      sleep: (ms) => new Promise((r) => setTimeout(r, Math.max(0, Math.min(ms, deadline - Date.now())))),
      between: (lo, hi) => lo + Math.floor(random() * (hi - lo + 1)),
    };
    const running = workload.run();
    await spec.schedule(ctx);
    phase("faults");
    const stats = await running;
    phase("last ops");

    // Heal whatever is left (idempotent), then let the cluster settle and converge.
    await net?.heal();
    for (const n of c.nodes) c.resume(n.index);
    for (const n of c.nodes) if (!c.running(n.index)) await c.start(n.index);
    const notUpAfterHeal = await c.waitAllUp(90_000);
    phase("settle");
    const conv = await converge(c, keys);
    phase("converge");
    const prefs = await fetchPreferences(c);
    const { final, strays } = await collectFinalState(c, prefs, keys);
    phase("stop and read disks");
    const history: History = { writes: workload.writes, final };
    const anomalies = [
      ...checkHistory(history),
      ...stats.duplicateSiblings.map((v) => ({
        checker: "workload-duplicate-siblings",
        key: v.split(":")[0]!,
        message: v,
      })),
      ...stats.badValues.map((v) => ({
        checker: "workload-values",
        key: v.split(":")[0]!,
        message: `not a CartValue: ${v}`,
      })),
    ];
    const seconds = (Date.now() - t0) / 1000;
    const kinds = Object.entries(stats.byKind)
      .map(([k, o]) => `${k} ${o.ok}/${o.failed}/${o.unknown}`)
      .join(", ");
    const siblings = [...final.keys.values()].map((m) =>
      Math.max(0, ...[...m.values()].map((s) => s.length)),
    );
    const lines = [
      `scenario ${spec.name}: seed ${seed}, ${seconds.toFixed(1)} s (fault phase ${FAULT_SECONDS} s), ${spec.nodes} nodes${net !== undefined ? ` in namespaces (10.77.${net.subnet}.0/24)` : " on 127.0.0.1"}, ${spec.clients} clients, ${spec.keys} keys`,
      `  ops ${stats.ops}: writes ok ${stats.byOutcome.ok}, failed ${stats.byOutcome.failed}, unknown ${stats.byOutcome.unknown}; reads that failed (op skipped) ${stats.readsFailed}`,
      `  by kind (ok/failed/unknown): ${kinds}`,
      `  phases: ${phases.map(([p, t]) => `${p} ${t.toFixed(1)} s`).join(", ")}`,
      ...(notUpAfterHeal.length > 0 ? [`  after healing, not yet up: ${notUpAfterHeal.join(", ")}`] : []),
      `  faults: ${[...faults].map(([f, k]) => `${f} x${k}`).join(", ") || "none"}`,
      `  convergence: ${conv.rounds} rounds of r=all reads, ${conv.readRepairs} read repairs, ${conv.failedReads} failed reads; max siblings per key at the end ${Math.max(0, ...siblings)}`,
      ...(strays.size > 0
        ? [`  copies on non-replicas: ${[...strays].map(([k, v]) => `${k}@${v.join("+")}`).join(", ")}`]
        : []),
      `  anomalies: ${anomalies.length}${anomalies.length > 0 ? `\n${formatAnomalies(anomalies.slice(0, 30))}` : ""}`,
    ];
    let summary = lines.join("\n");
    if (anomalies.length > 0 || stats.byOutcome.ok === 0) {
      const dir = saveArtifacts(spec.name, history, c, `${summary}\n\nfault events:\n${events.join("\n")}\n`);
      summary += `\n  history, fault events and node logs saved in ${dir}`;
    }
    console.log(summary);
    return { name: spec.name, seed, seconds, stats, faults, anomalies, summary };
  } finally {
    await cluster?.destroy();
    await net?.destroy();
  }
}

// ------------------------------------------------------------------ the fault schedules

/** SIGKILL one node at a time, restart it after 0.5-3 s (sometimes before the failure detector notices). */
export async function killRestart(ctx: FaultContext): Promise<void> {
  const c = ctx.cluster;
  while (Date.now() < ctx.deadline - 1000) {
    await ctx.sleep(ctx.between(1000, 2500));
    if (Date.now() >= ctx.deadline - 1000) break;
    const i = ctx.between(0, c.nodes.length - 1);
    await c.kill(i);
    ctx.note("SIGKILL");
    await ctx.sleep(ctx.between(500, 3000));
    await c.start(i);
    ctx.note("restart");
  }
}

/**
 * SIGSTOP one node past the failure detector's down-after (1 s), sometimes past the clients' 4 s
 * timeout (their requests then end unknown and are applied late, at SIGCONT), then SIGCONT.
 */
export async function pauseResume(ctx: FaultContext): Promise<void> {
  const c = ctx.cluster;
  while (Date.now() < ctx.deadline - 1000) {
    await ctx.sleep(ctx.between(1000, 2500));
    if (Date.now() >= ctx.deadline - 1000) break;
    const i = ctx.between(0, c.nodes.length - 1);
    c.pause(i);
    ctx.note("SIGSTOP");
    await ctx.sleep(ctx.between(1500, 6000));
    c.resume(i);
    ctx.note("SIGCONT");
  }
}

function shuffled(n: number, random: () => number): number[] {
  const a = [...Array(n).keys()];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Repeated partitions made by `groups`, held 3-5 s, healed for 1.5-2.5 s. */
async function partitions(
  ctx: FaultContext,
  what: string,
  groups: () => { groups: number[][]; label: string },
): Promise<void> {
  const net = ctx.net!;
  while (Date.now() < ctx.deadline - 2000) {
    await ctx.sleep(ctx.between(1500, 2500));
    if (Date.now() >= ctx.deadline - 2000) break;
    const g = groups();
    await net.partition(g.groups);
    ctx.note(`${what} ${g.label}`);
    await ctx.sleep(ctx.between(3000, 5000));
    await net.heal();
    ctx.note("heal");
  }
}

const label = (groups: number[][]) => groups.map((g) => g.map((i) => `n${i + 1}`).join(",")).join(" | ");

/** The cluster cut in two halves (2 | 3 of 5), sides chosen at random each time. */
export function halves(ctx: FaultContext): Promise<void> {
  return partitions(ctx, "partition", () => {
    const order = shuffled(ctx.cluster.nodes.length, ctx.random);
    const k = Math.floor(order.length / 2);
    const groups = [order.slice(0, k).sort(), order.slice(k).sort()];
    return { groups, label: label(groups) };
  });
}

/** One node cut off from every other node (clients still reach it). */
export function isolateOne(ctx: FaultContext): Promise<void> {
  return partitions(ctx, "isolate", () => {
    const i = ctx.between(0, ctx.cluster.nodes.length - 1);
    const others = [...Array(ctx.cluster.nodes.length).keys()].filter((j) => j !== i);
    return { groups: [[i], others], label: `n${i + 1}` };
  });
}

/** Two sides that cannot reach each other, and one bridge node that reaches both. */
export function bridge(ctx: FaultContext): Promise<void> {
  return partitions(ctx, "bridge partition", () => {
    const order = shuffled(ctx.cluster.nodes.length, ctx.random);
    const b = order[0]!;
    const rest = order.slice(1);
    const k = Math.floor(rest.length / 2);
    const groups = [rest.slice(0, k).sort(), rest.slice(k).sort()];
    return { groups, label: `${label(groups)} via n${b + 1}` };
  });
}

const LOSS_PERCENT = 15;

/** Packet loss of about 15% on every link (see net.ts) for the whole phase. */
export async function lossyLinks(ctx: FaultContext): Promise<void> {
  const net = ctx.net!;
  const mode = await net.startLoss(LOSS_PERCENT, ctx.random);
  ctx.note(mode === "netem" ? `netem loss ${LOSS_PERCENT}%` : `flapping links ~${LOSS_PERCENT}% down`);
  await ctx.sleep(ctx.deadline - Date.now());
  const s = await net.stopLoss();
  if (s.mode === "flapping") for (let k = 0; k < s.bursts; k++) ctx.note("drop burst");
}
