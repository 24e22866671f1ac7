/**
 * Cluster benchmark: puts/s and gets/s with p50/p99/p99.9 latency of a 3-node cluster (N=3, R=2, W=2,
 * durability fsync) on 127.0.0.1, and of ONE node (N=R=W=1, fsync) in the same run, with their ratio,
 * checked against the target (3x a 3-member etcd measured on this machine; PASS/MISS). And of the floor,
 * with the ratio: three bench/floor-node.ts processes doing the same protocol shape (HTTP in, a group-
 * committed fdatasync'd append on each of 3 processes, TCP frames between them, an answer at W=2; a read
 * of one peer at R=2) with none of the node's other work (versions, LSM, checksums, MessagePack, ring,
 * metrics). It is the least Node does for this load here: what the node could reach at best, and, if
 * the floor is below the target, a measurement that the target is out of Node's reach on this machine.
 * The floor always runs N3R2W2 (whatever --quorum says), with the lean load generator only, as
 * JavaScript compiled by tsc into a temp dir (not under tsx: see compiledFloor).
 *
 * The cost of peer encryption, in the same run: the 3-node cluster again with `--insecure-peer-plaintext`
 * on every node (peer traffic neither encrypted nor authenticated: for this measurement only), lean load
 * generator only, the ratio to the TLS cluster printed (`--configs 3,3plain` runs just these).
 *
 * The cost of sloppy quorum, in the same run: a 4-node cluster (the --quorum's N, R, W) with every node
 * up, against a fresh one with node n4 SIGKILLed and seen down by the others, so that writes of the keys
 * n4 replicates go to a stand-in with a hint (lean load generator only; the ratio is printed). And the
 * drain: on another fresh 4-node cluster with n4 down, `--hinted-writes` (100,000) writes of keys n4
 * replicates, each leaving a hint for it on a stand-in; then n4 restarts, and the time until no node
 * holds a hint any more is measured, with the delivery throttle's setting (`--hint-rate`, as the nodes'
 * /status reports it) printed beside the rate reached.
 *
 * The mixed run (`--configs mixed`, `--mixed-seconds`, 300 by default): a fresh 3-node cluster with
 * `--mixed-keys` keys written first; then half the clients write (fresh keys, and overwrites of their own
 * keys with the context of their last write, 1 KiB values, so that the LSM flushes and compacts) and half
 * read acknowledged keys, for the whole run. At 1/3 a fourth node joins (`start --join`); at 2/3 the
 * clients stop using n3 and it leaves (`cluster leave`). Printed: per window (`--window`, 10 s), writes
 * and reads apart, ops/s, p50/p99/p99.9 and the longest, the failed requests, the nodes' CPU and the
 * flushes, compactions and delayed or stalled writes (from /status), with marks where the join and the
 * leave happened and where their handoffs ended (every remaining node idle at the new ring, by /status);
 * each node's storage figures before and after; and the totals: errors by status and kind (a write's 503
 * that "may have been applied" apart), stale reads (older than the version acknowledged when the read
 * began: each value carries its version's number), answers later than the timeout + 100 ms, and each
 * node's peak RSS against its memory budget.
 *
 *   npm run build && node --import tsx bench/cluster.ts                 # 20 s warm-up + 10 s per phase, about 18 minutes
 *   node --import tsx bench/cluster.ts --seconds 3 --loadgens lean      # quicker
 *   node --import tsx bench/cluster.ts --configs 4,4down,drain --loadgens lean   # sloppy quorum alone, about 4 minutes
 *   node --import tsx bench/cluster.ts --configs mixed                  # the mixed run alone, about 6 minutes
 *   node --import tsx bench/cluster.ts --help                           # every flag
 *
 * Nodes are real processes started through the built CLI (`dist/cli/main.js start`, or `--bin`), each
 * with its own data directory under a temp dir; each load generator gets a fresh cluster, so that each
 * starts from the same empty data (the cost of a write grows with the data stored, which would favour
 * whichever ran first). The load generator runs in this process: `--clients` concurrent workers
 * (default 32), each with one request in flight, 100-byte values, for a bounded time per phase (a warm-up
 * not counted, 20 s by default, then `--seconds`). The warm-up is that long because the nodes' JIT is
 * still compiling for about the first 20 s, and a server runs warm: the figure that counts is the warm
 * one (docs/performance.md, "warm-up, warm figures and the parts of a put"). Load generators:
 *   lean    partition-aware, over hand-written keep-alive HTTP/1.1 connections (little client CPU; the
 *           reference for the target, as etcd's figures came from its own lean Go benchmark tool)
 *   pool    one undici Pool per node, requests spread over the nodes in turn (no routing)
 *   client  RingstoreClient with every node as a seed, routing "none" (the seeds in turn)
 *   pa      RingstoreClient with routing "partition-aware" (straight to the key's first replica)
 * Puts write fresh keys (no context needed, no siblings); gets read random keys written by the put
 * phase of the same load generator and count anything but 200 as an error.
 *
 * The load generator shares the machine's cores with the nodes. Each row shows the CPU time each node
 * process (all its threads) and this process used in the measured window (/proc/PID/stat,
 * process.cpuUsage), the CPU used by every other process on the machine (/proc/stat; on a shared machine
 * this says whether the row is trustworthy; `--quiet-wait` waits for a quiet moment before each phase),
 * the CPU time per operation and the rate that cost would allow with every core ours. Put rows add the
 * nodes' WAL fsyncs per second and writes per fsync (group commit), from /status. Every row (and the
 * drain and the mixed run) prints each node's peak RSS (VmHWM of /proc/PID/status) beside the memory
 * budget its /status reports: every node gets `--memory-budget` (`--memory-budget-mib`; by default the
 * node's own default, none).
 *
 * Every loop is bounded in time and in count; every child process is stopped by its PID at the end (and
 * on error, SIGINT or SIGTERM): SIGTERM, then SIGKILL after 5 s. Temp dirs are removed.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { RingstoreClient } from "../src/client/client.js";
import { NODE_DEFAULTS } from "../src/node/config.js";
import { PreferenceTable, partitionOf } from "../src/ring/ring.js";
import { MIN_MEMORY_BUDGET_BYTES } from "../src/storage/lsm/options.js";
import { type NodeProc, spawnNode } from "./node-process.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
let BIN = path.join(REPO, "dist/cli/main.js");
const FLOOR_NODE = path.join(REPO, "bench/floor-node.ts");

// The target: 3x the throughput of a 3-member etcd cluster on this machine, at a lower p99 (the
// reference's figures: docs/performance.md, "The machine").
const TARGET = { putsPerSec: 12_000, getsPerSec: 15_000, p99Ms: 20 };

const LOADGENS = ["lean", "pool", "client", "pa"] as const;
type Loadgen = (typeof LOADGENS)[number];
const OPS = ["puts", "gets"] as const;
type Op = (typeof OPS)[number];
/**
 * The clusters a run can measure: ringstore's 3 nodes, its single node, the floor (floor-node.ts), 4 nodes
 * all up and with one down, and the drain of hints (see the header).
 */
const SIZES = ["3", "3plain", "1", "floor", "4", "4down", "drain", "mixed"] as const;
type Size = 3 | 1 | 4 | "3plain" | "floor" | "4down" | "drain" | "mixed";
/** The configurations measured by phases of one load (rows of the results table). */
type Measured = Exclude<Size, "drain" | "mixed">;
/** A mixed run's client gives up on a request after this long (three times the node's default timeout). */
const MIXED_CLIENT_TIMEOUT_MS = 15_000;

const HELP = `usage: node --import tsx bench/cluster.ts [flags]   (run \`npm run build\` first)
  --seconds S        measured seconds per phase (default 10), after the warm-up
  --warmup S         warm-up seconds per phase, not counted (default 20: the nodes' JIT warms up)
  --clients C        concurrent clients (default 32)
  --value-bytes B    value size (default 100)
  --loadgens LIST    comma list of ${LOADGENS.join(",")} (default all; one node runs all but pa; 4 nodes
                     run lean, and client and pa when this flag names them)
  --configs LIST     comma list of 3,3plain,1,floor,4,4down,drain,mixed: the 3-node cluster, the same with peer
                     traffic in plaintext (the cost of peer TLS; lean only), the single node, the floor
                     (three bench/floor-node.ts processes: the same protocol shape with none of the
                     node's work, the least Node does here; lean load generator only), 4 nodes all up
                     and 4 nodes with one down (sloppy quorum's cost; lean only), the drain of
                     --hinted-writes hints once their target returns, and the mixed run (writes and
                     reads for --mixed-seconds while a 4th node joins at 1/3 and one leaves at 2/3, its
                     latency over time) (default all of them)
  --phases LIST      comma list of puts,gets (default both)
  --durability M     fsync (default), interval or none (the floor knows fsync and none: with interval it
                     is left out of the default configs, and asking for it is an error)
  --repeat K         run everything K times (fresh clusters each time) and report each phase's median
                     run, with the range (default 1; the machine's noise is often 20-30% run to run)
  --quorum N,R,W     the 3- and 4-node clusters' N, R and W (default 3,2,2; the target applies to 3,2,2 only).
                     1,1,1 and 2,1,1 show what each replica adds to an operation's cost
  --max-ops N        cap on the operations of one phase (default 2000000)
  --hinted-writes H  the drain's writes of keys whose down node's hints are measured (default 100000)
  --hint-rate B      the drain's nodes' --hint-rate, bytes of hints delivered per second at most
                     (default: the node's own default; the setting in force is printed)
  --memory-budget-mib M  every node's --memory-budget, MiB (default the node's default, ${NODE_DEFAULTS.memoryBudgetBytes / 2 ** 20}: none); each
                     row prints every node's peak RSS (VmHWM) beside the budget /status reports
  --mixed-seconds S  the mixed run's length (default 300); --window S its windows (default 10)
  --mixed-keys K     keys written before the mixed run starts (default 5000)
  --mixed-value-bytes B  the mixed run's value size (default 1024: enough data for flushes and compactions)
  --overwrite-share F    the share of the mixed run's writes that overwrite a key with its context (0.5)
  --bin FILE         the CLI the nodes run (default dist/cli/main.js; e.g. a build of a clean snapshot)
  --node-flags=F     flags for every node's node process, one string (e.g. --node-flags="--max-semi-space-size=16")
  --profile DIR      start node n1 of each cluster with --cpu-prof (profile written to DIR at its stop)
  --quiet-wait S     before each phase, wait up to S seconds for other processes to leave the CPU idle
                     (under 25% of one core for 2 s; for shared machines; default 0: do not wait)`;

interface Config {
  seconds: number;
  warmup: number;
  clients: number;
  valueBytes: number;
  loadgens: Loadgen[];
  /** --loadgens was given: the 4-node cluster then runs client and pa too (routing's gain needs > N nodes). */
  loadgensGiven: boolean;
  configs: Size[];
  phases: Op[];
  durability: string;
  maxOps: number;
  profileDir: string | undefined;
  nodeFlags: string[];
  quietWait: number;
  bin: string;
  repeat: number;
  /** N, R, W of the 3- and 4-node clusters. */
  quorum: readonly [number, number, number];
  hintedWrites: number;
  /** The drain's nodes' --hint-rate (undefined: the node's default). */
  hintRate: number | undefined;
  /** Every node's --memory-budget, bytes (0: none, the engine's own sizes). */
  memoryBudgetBytes: number;
  /** The mixed run: its length, its windows, the keys written before it, the share of writes that overwrite. */
  mixedSeconds: number;
  window: number;
  mixedKeys: number;
  overwriteShare: number;
  mixedValueBytes: number;
}

function parseQuorumFlag(v: string): readonly [number, number, number] {
  const m = /^([1-3]),([1-3]),([1-3])$/.exec(v.trim());
  const [n, r, w] = m === null ? [0, 0, 0] : [Number(m[1]), Number(m[2]), Number(m[3])];
  if (m === null || r > n || w > n)
    throw new Error(`--quorum must be N,R,W with 1 <= R,W <= N <= 3 (3 nodes), got "${v}"`);
  return [n, r, w];
}

/** A comma list flag: each item one of `all` (every one of them when the flag is absent). */
function parseList<T extends string>(v: string | undefined, all: readonly T[], name: string): T[] {
  if (v === undefined) return [...all];
  const out = v.split(",").map((s) => s.trim());
  for (const s of out)
    if (!all.includes(s as T)) throw new Error(`--${name}: unknown "${s}" (${all.join(",")})`);
  return out as T[];
}

/**
 * --configs as sizes. The floor knows only fsync and none: with another durability it is left out of
 * the default, and asking for it is an error now rather than after the other configs ran.
 */
function configsOf(v: string | undefined, durability: string): Size[] {
  const floorOk = durability === "fsync" || durability === "none";
  const all = parseList(
    v ?? (floorOk ? undefined : SIZES.filter((x) => x !== "floor").join(",")),
    SIZES,
    "configs",
  );
  if (all.includes("floor") && !floorOk)
    throw new Error(
      `the floor runs with --durability fsync or none, not ${durability}: leave it out of --configs`,
    );
  return all.map((s) =>
    s === "floor" || s === "4down" || s === "drain" || s === "3plain" || s === "mixed"
      ? s
      : (Number(s) as 1 | 3 | 4),
  );
}

/** --memory-budget-mib as bytes: 0 (none) or at least the engine's least budget; default the node's. */
function memoryBudgetFlag(v: string | undefined): number {
  if (v === undefined) return NODE_DEFAULTS.memoryBudgetBytes;
  const mib = Number(v);
  const bytes = Math.floor(mib * 2 ** 20);
  if (!Number.isFinite(mib) || mib < 0 || (bytes !== 0 && bytes < MIN_MEMORY_BUDGET_BYTES))
    throw new Error(
      `--memory-budget-mib must be 0 (none) or at least ${MIN_MEMORY_BUDGET_BYTES / 2 ** 20}, got ${v}`,
    );
  return bytes;
}

function parseConfig(): Config {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string" },
      warmup: { type: "string" },
      clients: { type: "string" },
      "value-bytes": { type: "string" },
      loadgens: { type: "string" },
      configs: { type: "string" },
      phases: { type: "string" },
      durability: { type: "string" },
      "max-ops": { type: "string" },
      profile: { type: "string" },
      "quiet-wait": { type: "string" },
      quorum: { type: "string" },
      repeat: { type: "string" },
      bin: { type: "string" },
      "node-flags": { type: "string" },
      "hinted-writes": { type: "string" },
      "hint-rate": { type: "string" },
      "memory-budget-mib": { type: "string" },
      "mixed-seconds": { type: "string" },
      window: { type: "string" },
      "mixed-keys": { type: "string" },
      "overwrite-share": { type: "string" },
      "mixed-value-bytes": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const num = (v: string | undefined, d: number, name: string, min = 0) => {
    if (v === undefined) return d;
    const x = Number(v);
    if (!Number.isFinite(x) || x < min) throw new Error(`--${name} must be a number >= ${min}, got ${v}`);
    return x;
  };
  return {
    seconds: num(values.seconds, 10, "seconds", 0.1),
    warmup: num(values.warmup, 20, "warmup", 0),
    clients: Math.floor(num(values.clients, 32, "clients", 1)),
    valueBytes: Math.floor(num(values["value-bytes"], 100, "value-bytes", 0)),
    loadgens: parseList(values.loadgens, LOADGENS, "loadgens"),
    loadgensGiven: values.loadgens !== undefined,
    configs: configsOf(values.configs, values.durability ?? "fsync"),
    phases: parseList(values.phases, OPS, "phases"),
    durability: values.durability ?? "fsync",
    maxOps: Math.floor(num(values["max-ops"], 2_000_000, "max-ops", 1)),
    profileDir: values.profile === undefined ? undefined : path.resolve(values.profile),
    quietWait: num(values["quiet-wait"], 0, "quiet-wait", 0),
    quorum: parseQuorumFlag(values.quorum ?? "3,2,2"),
    repeat: Math.floor(num(values.repeat, 1, "repeat", 1)),
    bin: path.resolve(values.bin ?? BIN),
    nodeFlags: (values["node-flags"] ?? "").split(/\s+/).filter((f) => f !== ""),
    hintedWrites: Math.floor(num(values["hinted-writes"], 100_000, "hinted-writes", 1)),
    hintRate:
      values["hint-rate"] === undefined
        ? undefined
        : Math.floor(num(values["hint-rate"], 0, "hint-rate", 1024)),
    memoryBudgetBytes: memoryBudgetFlag(values["memory-budget-mib"]),
    mixedSeconds: num(values["mixed-seconds"], 300, "mixed-seconds", 3),
    window: num(values.window, 10, "window", 0.5),
    mixedKeys: Math.floor(num(values["mixed-keys"], 5000, "mixed-keys", 0)),
    overwriteShare: Math.min(1, num(values["overwrite-share"], 0.5, "overwrite-share", 0)),
    mixedValueBytes: Math.floor(num(values["mixed-value-bytes"], 1024, "mixed-value-bytes", 16)),
  };
}

// ------------------------------------------------------------------------------------------ processes

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

function killAllSync(): void {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
}
process.on("exit", killAllSync);
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${sig}: stopping the nodes`);
    void stopAll().finally(() => process.exit(130));
  });

/** SIGTERM each node by PID (a clean stop, so profiles are written), SIGKILL after 5 s. */
async function stopNode(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) {
    children.delete(c);
    return;
  }
  const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
  process.kill(c.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, "SIGKILL");
  }, 5000);
  await exited;
  clearTimeout(timer);
  children.delete(c);
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stopNode));
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

async function freePorts(k: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: k },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const s = net.createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/**
 * Starts node `id` of a cluster whose nodes' data directories are siblings: n1 created the cluster and
 * keeps its key; every other node is given that key, as an operator does.
 */
function startNode(id: string, dataDir: string, extra: string[], nodeFlags: string[]): Promise<NodeProc> {
  const key =
    id === "n1" ? [] : ["--cluster-key-file", path.join(path.dirname(dataDir), "n1", "cluster.key")];
  return spawnNode(
    id,
    [
      ...nodeFlags,
      BIN,
      "start",
      "--id",
      id,
      "--api",
      "127.0.0.1:0",
      "--peer",
      "127.0.0.1:0",
      "--data",
      dataDir,
      ...key,
      ...extra,
    ],
    children,
  );
}

async function getJson(api: string, p: string): Promise<Record<string, unknown>> {
  const r = await fetch(`http://${api}${p}`, { signal: AbortSignal.timeout(3000) });
  return (await r.json()) as Record<string, unknown>;
}

/** Waits (at most 30 s) until every node sees every member up and all hold the same full ring. */
async function waitConverged(nodes: NodeProc[]): Promise<void> {
  const ids = nodes.map((n) => n.id);
  const end = Date.now() + 30_000;
  for (let i = 0; i < 10_000; i++) {
    try {
      const rings = await Promise.all(nodes.map((n) => getJson(n.api, "/ring")));
      const owners = rings.map((r) => JSON.stringify(r.owners));
      const ok =
        owners.every((o) => o === owners[0]) &&
        new Set(rings[0]!.owners as string[]).size === ids.length &&
        rings.every((r) =>
          ids.every((id) =>
            (r.members as { id: string; state: string }[]).some((m) => m.id === id && m.state === "up"),
          ),
        );
      if (ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error("the cluster did not converge in 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The flags every node of a cluster gets (the drain's nodes also the --hint-rate asked for). */
function commonFlags(cfg: Config, size: Size): string[] {
  const rate = size === "drain" && cfg.hintRate !== undefined ? ["--hint-rate", String(cfg.hintRate)] : [];
  const plain = size === "3plain" ? ["--insecure-peer-plaintext"] : [];
  return [
    "--durability",
    cfg.durability,
    "--memory-budget",
    String(cfg.memoryBudgetBytes),
    ...rate,
    ...plain,
  ];
}

async function startCluster(
  cfg: Config,
  size: Size,
  label: string,
): Promise<{ nodes: NodeProc[]; root: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `ringstore-bench-${size}n-`));
  tempDirs.add(root);
  if (size === "floor") return { nodes: await startFloor(cfg, root), root };
  // Every port is 0, the kernel's choice (each node prints where it serves): ports chosen here and bound
  // later could be taken meanwhile by another node's port 0.
  const count = size === 1 ? 1 : size === 3 || size === "3plain" || size === "mixed" ? 3 : 4;
  const common = commonFlags(cfg, size);
  const [n, r, w] = size === 1 ? [1, 1, 1] : cfg.quorum;
  const q = ["--n", String(n), "--r", String(r), "--w", String(w)];
  const prof =
    cfg.profileDir === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${cfg.profileDir}`, `--cpu-prof-name=n1-${label}.cpuprofile`];
  const first = await startNode("n1", path.join(root, "n1"), [...q, ...common], [...cfg.nodeFlags, ...prof]);
  const nodes = [first];
  const rest = await Promise.all(
    Array.from({ length: count - 1 }, (_, i) =>
      startNode(`n${i + 2}`, path.join(root, `n${i + 2}`), ["--join", first.peer, ...common], cfg.nodeFlags),
    ),
  );
  nodes.push(...rest);
  await waitConverged(nodes);
  return { nodes, root };
}

let floorScript: string | undefined;

/**
 * bench/floor-node.ts compiled by tsc into a temp dir (once a run), so that the floor runs as plain
 * JavaScript, as the nodes run dist/: under tsx, esbuild's keepNames wraps every closure the code
 * creates in a __name() call, which costs CPU on each request (docs/performance.md, "built JavaScript
 * against tsx").
 */
function compiledFloor(): string {
  if (floorScript !== undefined) return floorScript;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-bench-floor-js-"));
  tempDirs.add(dir);
  execFileSync(
    path.join(REPO, "node_modules/.bin/tsc"),
    [
      "--ignoreConfig",
      FLOOR_NODE,
      "--outDir",
      dir,
      "--target",
      "es2022",
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--types",
      "node",
      "--skipLibCheck",
      "--strict",
    ],
    { cwd: REPO, stdio: ["ignore", "inherit", "inherit"] },
  );
  fs.writeFileSync(path.join(dir, "package.json"), '{ "type": "module" }\n');
  floorScript = path.join(dir, "floor-node.js");
  return floorScript;
}

/**
 * Three floor nodes (bench/floor-node.ts), each linked to the two others, under the same node flags and
 * durability; resolves once every one has both of its peer links up (at most 30 s).
 */
async function startFloor(cfg: Config, root: string): Promise<NodeProc[]> {
  const script = compiledFloor();
  const ports = await freePorts(6);
  const peers = ports.slice(3).map((p) => `127.0.0.1:${p}`);
  const nodes = await Promise.all(
    [0, 1, 2].map((i) =>
      spawnNode(
        `f${i + 1}`,
        [
          ...cfg.nodeFlags,
          script,
          "--api",
          `127.0.0.1:${ports[i]}`,
          "--peer",
          peers[i]!,
          "--peers",
          peers.filter((_, j) => j !== i).join(","),
          "--data",
          path.join(root, `f${i + 1}`),
          "--durability",
          cfg.durability,
        ],
        children,
      ),
    ),
  );
  const end = Date.now() + 30_000;
  for (let i = 0; i < 1000; i++) {
    const linked = await Promise.all(
      nodes.map((n) =>
        getJson(n.api, "/status")
          .then((s) => s.peersConnected === 2)
          .catch(() => false),
      ),
    );
    if (linked.every((x) => x)) return nodes;
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the floor nodes did not link up in 30 s");
}

// ------------------------------------------------------------------------------------------ CPU time

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat). */
function cpuSeconds(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/**
 * A process's peak resident set so far (VmHWM of /proc/PID/status), in bytes; NaN once it is gone. The
 * kernel keeps the peak, so one read at the end of a run covers all of it while the process lives.
 */
function peakRss(pid: number): number {
  try {
    const m = /^VmHWM:\s+([0-9]+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? Number.NaN : Number(m[1]) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds the whole machine spent not idle (all cores), from the first line of /proc/stat. */
function machineBusySeconds(): number {
  try {
    const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3]! - f[4]!) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

function cpuSample(nodes: NodeProc[]): { nodes: number[]; self: number; machine: number; at: number } {
  const u = process.cpuUsage();
  return {
    nodes: nodes.map((n) => cpuSeconds(n.child.pid!)),
    self: (u.user + u.system) / 1e6,
    machine: machineBusySeconds(),
    at: performance.now(),
  };
}

// ------------------------------------------------------------------------------------------ load

interface Driver {
  put(key: string, value: Buffer): Promise<boolean>;
  get(key: string): Promise<boolean>;
  close(): Promise<void>;
}

function poolDriver(nodes: NodeProc[], clients: number): Driver {
  const pools = nodes.map(
    (n) =>
      new Pool(`http://${n.api}`, {
        connections: clients,
        pipelining: 1,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      }),
  );
  let next = 0;
  const pick = () => pools[next++ % pools.length]!;
  return {
    async put(key, value) {
      const res = await pick().request({
        method: "PUT",
        path: `/kv/${key}`,
        body: value,
        headers: { "content-type": "application/octet-stream" },
      });
      await res.body.dump();
      return res.statusCode === 204 || res.statusCode === 200;
    },
    async get(key) {
      const res = await pick().request({ method: "GET", path: `/kv/${key}` });
      await res.body.arrayBuffer();
      return res.statusCode === 200;
    },
    close: async () => {
      await Promise.all(pools.map((p) => p.close()));
    },
  };
}

function clientDriver(nodes: NodeProc[], clients: number, routing: "none" | "partition-aware"): Driver {
  const c = new RingstoreClient(
    nodes.map((n) => n.api),
    { connections: clients, routing, httpTimeoutMs: 10_000 },
  );
  return {
    async put(key, value) {
      await c.put(key, value);
      return true;
    },
    async get(key) {
      return (await c.get(key)).kind === "value";
    },
    close: () => c.close(),
  };
}

/** An answer as LeanConnection reads it: the status, the head (status line and headers) and the body. */
interface LeanResponse {
  status: number;
  head: string;
  body: Buffer;
}

/**
 * One keep-alive HTTP/1.1 connection with one request at a time, written and parsed by hand: a load
 * generator that costs little CPU, so that on a machine whose cores the nodes share, the figures measure
 * the nodes rather than the client (etcd's reference figures came from its Go benchmark tool). It reads
 * the status line and Content-Length, and keeps the head and body for a caller that wants them; anything
 * it cannot parse is an error. A request given `timeoutMs` that has no answer by then fails, and the
 * connection with it.
 */
class LeanConnection {
  private readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (r: LeanResponse) => void; reject: (e: Error) => void } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failed: Error | undefined;

  constructor(api: string) {
    const i = api.lastIndexOf(":");
    this.socket = net.connect({ host: api.slice(0, i), port: Number(api.slice(i + 1)), noDelay: true });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    const fail = (e: Error) => {
      this.failed ??= e;
      clearTimeout(this.timer);
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(e);
    };
    this.socket.on("error", fail);
    this.socket.on("close", () => fail(new Error(`connection to ${api} closed`)));
  }

  get broken(): boolean {
    return this.failed !== undefined;
  }

  request(head: Buffer, body: Buffer | undefined, timeoutMs?: number): Promise<LeanResponse> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    if (this.waiter !== undefined) return Promise.reject(new Error("one request at a time"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      if (timeoutMs !== undefined)
        this.timer = setTimeout(
          () => this.socket.destroy(new Error(`no answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      this.socket.write(body === undefined ? head : Buffer.concat([head, body]));
    });
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.buf.toString("latin1", 0, end);
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length: *([0-9]+)/i.exec(head);
    const bodyLen = m === null ? 0 : Number(m[1]);
    if (m === null && status !== 204 && status !== 304) {
      this.socket.destroy(new Error(`response without Content-Length: ${head.split("\r\n")[0]}`));
      return;
    }
    if (this.buf.length < end + 4 + bodyLen) return;
    if (this.buf.length > end + 4 + bodyLen) {
      this.socket.destroy(new Error("bytes after the response"));
      return;
    }
    const body = this.buf.subarray(end + 4);
    this.buf = Buffer.alloc(0);
    clearTimeout(this.timer);
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve({ status, head, body });
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * LeanConnections to any number of nodes, one per (node, request in flight): a request takes one from
 * the node's free list (or opens one) and puts it back when its answer is in.
 */
class LeanPool {
  private readonly all: LeanConnection[] = [];
  private readonly idle = new Map<string, LeanConnection[]>();

  async roundTrip(
    api: string,
    head: Buffer,
    body: Buffer | undefined,
    timeoutMs?: number,
  ): Promise<LeanResponse> {
    let c = this.idle.get(api)?.pop();
    if (c === undefined || c.broken) {
      c = new LeanConnection(api);
      this.all.push(c);
    }
    const r = await c.request(head, body, timeoutMs);
    const list = this.idle.get(api);
    if (list === undefined) this.idle.set(api, [c]);
    else list.push(c);
    return r;
  }

  close(): void {
    for (const c of this.all) c.close();
    this.all.length = 0;
    this.idle.clear();
  }
}

/** The ring of GET /ring as a preference table, with the members' API addresses. */
async function ringTable(
  node: NodeProc,
): Promise<{ listOf: (key: string) => readonly string[]; apiOf: Map<string, string> }> {
  const j = (await getJson(node.api, "/ring")) as {
    partitions: number;
    n: number;
    owners: string[];
    members: { id: string; api: string; zone: string | null; weight: number }[];
  };
  const table = new PreferenceTable(
    { partitions: j.partitions, owners: j.owners },
    j.members.map((m) => ({ id: m.id, weight: m.weight, zone: m.zone ?? undefined })),
    j.n,
  );
  return {
    listOf: (key) => table.forPartition(partitionOf(Buffer.from(key), j.partitions)),
    apiOf: new Map(j.members.map((m) => [m.id, m.api])),
  };
}

/** Each key's preference list, from `node`'s GET /ring. */
async function preferenceLists(node: NodeProc): Promise<(key: string) => readonly string[]> {
  return (await ringTable(node)).listOf;
}

/**
 * Each key's first replica that is not in `down`, from the ring of GET /ring (the client library's
 * "partition-aware" routing, which also skips a replica it knows to be down).
 */
async function ringRoute(
  nodes: NodeProc[],
  down: ReadonlySet<string> = new Set(),
): Promise<(key: string) => string> {
  const { listOf, apiOf } = await ringTable(nodes[0]!);
  return (key) => apiOf.get(listOf(key).find((id) => !down.has(id))!)!;
}

/** The floor's route: every floor node holds every key, so keys are spread by a hash (FNV-1a). */
function hashRoute(nodes: NodeProc[]): (key: string) => string {
  return (key) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    return nodes[(h >>> 0) % nodes.length]!.api;
  };
}

/**
 * The lean load generator: each request straight to the node `target` names (for ringstore the key's
 * first replica, as the client library's "partition-aware" routing does) over a LeanPool.
 */
function leanDriver(target: (key: string) => string): Driver {
  const pool = new LeanPool();
  return {
    async put(key, value) {
      const s = (await pool.roundTrip(target(key), putHead(key, value.length, undefined), value)).status;
      return s === 204 || s === 200;
    },
    async get(key) {
      return (await pool.roundTrip(target(key), getHead(key), undefined)).status === 200;
    },
    close: async () => {
      pool.close();
    },
  };
}

function putHead(key: string, length: number, context: string | undefined): Buffer {
  const ctx = context === undefined ? "" : `x-context: ${context}\r\n`;
  return Buffer.from(
    `PUT /kv/${key} HTTP/1.1\r\nhost: ringstore\r\ncontent-type: application/octet-stream\r\n${ctx}content-length: ${length}\r\n\r\n`,
    "latin1",
  );
}

function getHead(key: string): Buffer {
  return Buffer.from(`GET /kv/${key} HTTP/1.1\r\nhost: ringstore\r\n\r\n`, "latin1");
}

interface PhaseResult {
  config: string;
  loadgen: Loadgen;
  op: Op;
  ops: number;
  errors: number;
  firstError: string;
  seconds: number;
  rate: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  nodeCpu: number[];
  benchCpu: number;
  /** CPU used by every other process on the machine in the window (% of one core). */
  otherCpu: number;
  /** Per node over the whole phase (warm-up included): WAL fsyncs per second, writes per fsync. */
  storage: { fsyncsPerSec: number; writesPerFsync: number }[];
  /** Per node: peak RSS (VmHWM) at the end of the phase, bytes, and its memory budget as /status says. */
  rssPeak: number[];
  budget: number[];
}

/**
 * WAL fsyncs, the engine's sequence number (one per written record) and the memory budget of each node,
 * from /status (NaN where it has none: the floor).
 */
async function storageCounters(
  nodes: NodeProc[],
): Promise<{ syncs: number; seq: number; budget: number; at: number }[]> {
  return Promise.all(
    nodes.map(async (n) => {
      try {
        const st = (await getJson(n.api, "/status")).storage as {
          walSyncs: number;
          sequence: number;
          memoryBudgetBytes: number;
        };
        return { syncs: st.walSyncs, seq: st.sequence, budget: st.memoryBudgetBytes, at: performance.now() };
      } catch {
        return { syncs: Number.NaN, seq: Number.NaN, budget: Number.NaN, at: performance.now() };
      }
    }),
  );
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** Waits (at most cfg.quietWait s) until the machine is idle but for us: under 25% of a core for 2 s. */
async function waitQuiet(cfg: Config, nodes: NodeProc[]): Promise<void> {
  if (cfg.quietWait <= 0) return;
  const end = performance.now() + cfg.quietWait * 1000;
  let calm = 0;
  for (let i = 0; i < 100_000 && performance.now() < end; i++) {
    const a = cpuSample(nodes);
    await new Promise((r) => setTimeout(r, 1000));
    const b = cpuSample(nodes);
    const ours = b.self - a.self + b.nodes.reduce((s, x, j) => s + x - a.nodes[j]!, 0);
    const other = (100 * (b.machine - a.machine - ours)) / ((b.at - a.at) / 1000);
    calm = other < 25 ? calm + 1 : 0;
    if (calm >= 2) return;
  }
  console.log(`  (the machine was not quiet within ${cfg.quietWait} s: running anyway)`);
}

async function runPhase(
  cfg: Config,
  nodes: NodeProc[],
  configName: string,
  loadgen: Loadgen,
  op: Op,
  run: (worker: number, i: number) => Promise<boolean>,
): Promise<PhaseResult> {
  await waitQuiet(cfg, nodes);
  const storageBefore = await storageCounters(nodes);
  const lat = new Float64Array(cfg.maxOps);
  let n = 0;
  let ops = 0;
  let errors = 0;
  let firstError = "";
  const t0 = performance.now();
  const measureFrom = t0 + cfg.warmup * 1000;
  const deadline = measureFrom + cfg.seconds * 1000;
  let before: ReturnType<typeof cpuSample> | undefined;
  const startTimer = setTimeout(() => {
    before = cpuSample(nodes);
  }, cfg.warmup * 1000);
  let after: ReturnType<typeof cpuSample> | undefined;
  const endTimer = setTimeout(
    () => {
      after = cpuSample(nodes);
    },
    (cfg.warmup + cfg.seconds) * 1000,
  );
  const worker = async (w: number) => {
    for (let i = 0; i < cfg.maxOps; i++) {
      const s = performance.now();
      if (s >= deadline || n >= cfg.maxOps) return;
      let ok = false;
      try {
        ok = await run(w, i);
        if (!ok && firstError === "") firstError = "unexpected status";
      } catch (err) {
        if (firstError === "") firstError = (err as Error).message;
      }
      const e = performance.now();
      if (s >= measureFrom && e <= deadline) {
        if (ok) {
          lat[n++] = e - s;
          ops++;
        } else errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.clients }, (_, w) => worker(w)));
  clearTimeout(startTimer);
  clearTimeout(endTimer);
  before ??= cpuSample(nodes);
  after ??= cpuSample(nodes);
  const storageAfter = await storageCounters(nodes);
  const storage = storageAfter.map((a, i) => {
    const b = storageBefore[i]!;
    const syncs = a.syncs - b.syncs;
    return { fsyncsPerSec: syncs / ((a.at - b.at) / 1000), writesPerFsync: (a.seq - b.seq) / syncs };
  });
  const wall = (after.at - before.at) / 1000;
  const sorted = lat.subarray(0, n).sort();
  return {
    config: configName,
    loadgen,
    op,
    ops,
    errors,
    firstError,
    seconds: cfg.seconds,
    rate: ops / cfg.seconds,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: n > 0 ? sorted[n - 1]! : Number.NaN,
    nodeCpu: after.nodes.map((x, i) => (100 * (x - before!.nodes[i]!)) / wall),
    benchCpu: (100 * (after.self - before.self)) / wall,
    otherCpu:
      (100 *
        (after.machine -
          before.machine -
          (after.self - before.self) -
          after.nodes.reduce((s, x, i) => s + x - before!.nodes[i]!, 0))) /
      wall,
    storage,
    rssPeak: nodes.map((x) => peakRss(x.child.pid!)),
    budget: storageAfter.map((x) => x.budget),
  };
}

/** A configuration's name in the result rows. */
function configName(cfg: Config, size: Measured): string {
  const [n, r, w] = cfg.quorum;
  switch (size) {
    case 3:
      return `3 nodes N${n}R${r}W${w}`;
    case "3plain":
      return `3 nodes N${n}R${r}W${w} plaintext peers`;
    case 1:
      return "1 node N1R1W1";
    case "floor":
      return "floor N3R2W2";
    case 4:
      return `4 nodes N${n}R${r}W${w}`;
    case "4down":
      return "4 nodes, 1 down";
  }
}

async function benchConfig(cfg: Config, size: Measured, value: Buffer): Promise<PhaseResult[]> {
  const name = configName(cfg, size);
  const out: PhaseResult[] = [];
  // One node runs every load generator but pa (no routing to do); the floor runs only lean (the others
  // need the node's /ring or its client semantics), and so do the 4-node clusters (one comparison), but
  // that the 4-node one also runs client and pa when --loadgens names them: with more nodes than N, a
  // coordinator may hold no replica of the key, the hop partition-aware routing saves.
  const gens = cfg.loadgens.filter((g) =>
    size === 1
      ? g !== "pa"
      : size === 3
        ? true
        : g === "lean" || (size === 4 && cfg.loadgensGiven && (g === "client" || g === "pa")),
  );
  // A fresh cluster for each load generator, so that each starts from the same (empty) data: the cost of
  // a write grows with the data already stored, which would otherwise favour whichever runs first.
  for (const [k, g] of gens.entries()) {
    console.log(`\nstarting ${name} (durability ${cfg.durability}) for loadgen ${g} ...`);
    const { nodes: all, root } = await startCluster(cfg, size, `${size}node-${k}-${g}`);
    console.log(`  ${all.map((n) => `${n.id} ${n.api} pid ${n.child.pid}`).join(", ")}`);
    // One node down: n4 is SIGKILLed, and measured once the others see it down (so that they send its
    // copies to a stand-in at once rather than after a failed store). The rows count the live nodes.
    const down = new Set<string>();
    if (size === "4down") {
      const n4 = all[3]!;
      await killNode(n4.child);
      down.add(n4.id);
      await waitSeenDown(all.slice(0, 3), n4.id);
      console.log(`  ${n4.id} SIGKILLed and seen down by the others`);
    }
    const nodes = all.filter((x) => !down.has(x.id));
    try {
      const driver =
        g === "lean"
          ? leanDriver(size === "floor" ? hashRoute(nodes) : await ringRoute(nodes, down))
          : g === "pool"
            ? poolDriver(nodes, cfg.clients)
            : clientDriver(nodes, cfg.clients, g === "pa" ? "partition-aware" : "none");
      try {
        const written: string[][] = Array.from({ length: cfg.clients }, () => []);
        const tag = `${size}${g}`;
        if (cfg.phases.includes("puts")) {
          const r = await runPhase(cfg, nodes, name, g, "puts", async (w, i) => {
            const key = `${tag}-${w}-${i}`;
            const ok = await driver.put(key, value);
            if (ok && written[w]!.length < 1_000_000) written[w]!.push(key);
            return ok;
          });
          out.push(r);
          printRow(r);
        }
        if (cfg.phases.includes("gets")) {
          const keys = written.flat();
          if (keys.length === 0) {
            // No put phase: write a few thousand keys to read.
            for (let i = 0; i < 5000; i++) {
              const k = `${tag}-pre-${i}`;
              if (await driver.put(k, value)) keys.push(k);
            }
          }
          let seed = 0x9e3779b9;
          const rnd = () => {
            seed ^= seed << 13;
            seed ^= seed >>> 17;
            seed ^= seed << 5;
            return (seed >>> 0) / 0x1_0000_0000;
          };
          const r = await runPhase(cfg, nodes, name, g, "gets", (_w, _i) =>
            driver.get(keys[Math.floor(rnd() * keys.length)]!),
          );
          out.push(r);
          printRow(r);
        }
      } finally {
        await driver.close();
      }
    } finally {
      await Promise.all(all.map((n) => stopNode(n.child)));
      fs.rmSync(root, { recursive: true, force: true });
      tempDirs.delete(root);
    }
  }
  return out;
}

/** SIGKILL by PID (a crash); resolves once the process is gone. */
async function killNode(c: ChildProcess): Promise<void> {
  if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    process.kill(c.pid, "SIGKILL");
    await exited;
  }
  children.delete(c);
}

/** Waits (at most 60 s) until every one of `observers` sees member `id` down. */
async function waitSeenDown(observers: NodeProc[], id: string): Promise<void> {
  const end = Date.now() + 60_000;
  for (let i = 0; i < 100_000; i++) {
    const seen = await Promise.all(
      observers.map((o) =>
        getJson(o.api, "/status")
          .then((s) =>
            (s.members as { id: string; state: string }[]).some((m) => m.id === id && m.state === "down"),
          )
          .catch(() => false),
      ),
    );
    if (seen.every((x) => x)) return;
    if (Date.now() > end) throw new Error(`${id} was not seen down within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface HintTargetStatus {
  target: string;
  count: number;
  bytes: number;
  delivered: number;
  deliveredBytes: number;
  failed: number;
}

/** The hints node `api` holds for `target` (zeros when none), and its delivery limits. */
async function hintsHeld(
  api: string,
  target: string,
): Promise<{ t: HintTargetStatus; limits: { deliveryBytesPerSecond: number } | null }> {
  const h = (await getJson(api, "/status")).hintedHandoff as {
    targets: HintTargetStatus[];
    limits: { deliveryBytesPerSecond: number } | null;
  };
  const t = h.targets.find((x) => x.target === target) ?? {
    target,
    count: 0,
    bytes: 0,
    delivered: 0,
    deliveredBytes: 0,
    failed: 0,
  };
  return { t, limits: h.limits };
}

/** Sums the hints `holders` hold for `target`; `perHolder`: the bytes each holds. */
async function hintsTotal(
  holders: NodeProc[],
  target: string,
): Promise<HintTargetStatus & { perHolder: number[] }> {
  const all = await Promise.all(holders.map((h) => hintsHeld(h.api, target)));
  const sum = (f: (t: HintTargetStatus) => number) => all.reduce((a, x) => a + f(x.t), 0);
  return {
    target,
    perHolder: all.map((x) => x.t.bytes),
    count: sum((t) => t.count),
    bytes: sum((t) => t.bytes),
    delivered: sum((t) => t.delivered),
    deliveredBytes: sum((t) => t.deliveredBytes),
    failed: sum((t) => t.failed),
  };
}

interface DrainResult {
  /** Writes of keys the down node replicates, acknowledged, and refused or failed. */
  writes: number;
  writeErrors: number;
  writeSeconds: number;
  /** Hints held for the down node before it returned (all holders), and their bytes. */
  held: number;
  heldBytes: number;
  /** The bytes each holder held: the largest share, at the throttle's rate, bounds the drain from below. */
  heldBytesPerHolder: number[];
  /** Each node's --hint-rate as its /status reports it (bytes/s). */
  rateSetting: number;
  /** From the restart's spawn until it served, and from then until no node held a hint. */
  restartSeconds: number;
  drainSeconds: number;
  delivered: number;
  deliveredBytes: number;
  /** Sends that failed during the drain (tried again later). */
  failed: number;
  /** Per node (n4 as restarted): peak RSS at the end, bytes, and its memory budget as /status says. */
  rssPeak: number[];
  budget: number[];
}

/**
 * The drain: a fresh 4-node cluster, n4 SIGKILLed and seen down, --hinted-writes writes of keys n4
 * replicates (each leaves a hint for it on a stand-in), n4 restarted on its data, and the time until no
 * node holds a hint.
 */
async function benchDrain(cfg: Config, value: Buffer): Promise<DrainResult> {
  const [n, r, w] = cfg.quorum;
  console.log(
    `\nstarting 4 nodes N${n}R${r}W${w} (durability ${cfg.durability}) for the drain of ${cfg.hintedWrites} hinted writes ...`,
  );
  const { nodes, root } = await startCluster(cfg, "drain", "drain");
  const procs = nodes.map((x) => x.child);
  try {
    const n4 = nodes[3]!;
    const live = nodes.slice(0, 3);
    const listOf = await preferenceLists(nodes[0]!);
    await killNode(n4.child);
    await waitSeenDown(live, n4.id);
    const keys: string[] = [];
    for (let i = 0; keys.length < cfg.hintedWrites && i < cfg.hintedWrites * 100; i++) {
      const k = `drain-${i}`;
      if (listOf(k).includes(n4.id)) keys.push(k);
    }
    console.log(`  ${n4.id} SIGKILLed and seen down; writing ${keys.length} keys it replicates ...`);
    const driver = leanDriver(await ringRoute(live, new Set([n4.id])));
    let next = 0;
    let errors = 0;
    let firstError = "";
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: cfg.clients }, async () => {
        while (next < keys.length) {
          const k = keys[next++]!;
          try {
            if (!(await driver.put(k, value))) {
              errors++;
              firstError ||= "unexpected status";
            }
          } catch (err) {
            errors++;
            firstError ||= (err as Error).message;
          }
        }
      }),
    );
    const writeSeconds = (performance.now() - t0) / 1000;
    await driver.close();
    console.log(
      `  ${keys.length - errors} writes acknowledged in ${f1(writeSeconds)} s (${((keys.length - errors) / writeSeconds).toFixed(0)}/s), ${errors} errors${errors > 0 ? ` (first: ${firstError})` : ""}`,
    );
    // A write answers at W, possibly before its stand-in stored the hint: wait until the count holds still.
    let held = await hintsTotal(live, n4.id);
    for (let i = 0; i < 600; i++) {
      await new Promise((res) => setTimeout(res, 500));
      const now = await hintsTotal(live, n4.id);
      const still = now.count === held.count;
      held = now;
      if (still) break;
    }
    const rateSetting = (await hintsHeld(live[0]!.api, n4.id)).limits?.deliveryBytesPerSecond ?? Number.NaN;
    console.log(
      `  hints held for ${n4.id}: ${held.count} (${(held.bytes / 2 ** 20).toFixed(1)} MiB); each node's --hint-rate ${(rateSetting / 2 ** 20).toFixed(1)} MiB/s`,
    );

    const t1 = performance.now();
    const back = await startNode(n4.id, path.join(root, n4.id), commonFlags(cfg, "drain"), cfg.nodeFlags);
    procs.push(back.child);
    const t2 = performance.now();
    let t3 = Number.NaN;
    const end = t2 + 30 * 60_000;
    let last = held;
    for (let i = 0; i < 1_000_000 && performance.now() < end; i++) {
      last = await hintsTotal(live, n4.id);
      if (last.count === 0) {
        t3 = performance.now();
        break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    if (!Number.isFinite(t3)) console.log(`  the hints did not drain within 30 minutes: ${last.count} left`);
    const after = [...live, back];
    const budget = (await storageCounters(after)).map((x) => x.budget);
    return {
      rssPeak: after.map((x) => peakRss(x.child.pid!)),
      budget,
      writes: keys.length - errors,
      writeErrors: errors,
      writeSeconds,
      held: held.count,
      heldBytes: held.bytes,
      heldBytesPerHolder: held.perHolder,
      rateSetting,
      restartSeconds: (t2 - t1) / 1000,
      drainSeconds: (t3 - t2) / 1000,
      delivered: last.delivered,
      deliveredBytes: last.deliveredBytes,
      failed: last.failed,
    };
  } finally {
    await Promise.all(procs.map((c) => stopNode(c)));
    fs.rmSync(root, { recursive: true, force: true });
    tempDirs.delete(root);
  }
}

function printDrain(d: DrainResult): void {
  const mib = (b: number) => (b / 2 ** 20).toFixed(2);
  const largest = Math.max(...d.heldBytesPerHolder);
  console.log(
    `  ${d.writes} hinted writes (${(d.writes / d.writeSeconds).toFixed(0)} puts/s, ${d.writeErrors} errors) left ${d.held} hints (${mib(d.heldBytes)} MiB; per holder ${d.heldBytesPerHolder.map(mib).join("/")}) for the down node`,
  );
  console.log(
    `  restarted (serving after ${f1(d.restartSeconds)} s), every hint delivered ${f1(d.drainSeconds)} s later: ${(d.delivered / d.drainSeconds).toFixed(0)} hints/s, ${mib(d.deliveredBytes / d.drainSeconds)} MiB/s, ${d.failed} sends failed and retried`,
  );
  console.log(
    `  throttle: --hint-rate ${mib(d.rateSetting)} MiB/s per holder, which alone allows the largest holder's share in ${f1(largest / d.rateSetting)} s`,
  );
  console.log(`  peak RSS per node ${rssVsBudget(d.rssPeak, d.budget)}`);
}

// ------------------------------------------------------------------------------------------ mixed run

/** A key of the mixed run: the number its last acknowledged value carries, and that version's context. */
interface MixedKey {
  readonly key: string;
  acked: number;
  context: string | undefined;
  /** A write of it failed (it may have been applied, so the context is not the latest): not overwritten again. */
  doubtful: boolean;
}

/** One window of the mixed run's timeline. */
interface MixedWindow {
  readonly lat: { writes: number[]; reads: number[] };
  readonly errors: { writes: number; reads: number };
  /** Summed over the nodes in the window: flushes, compactions, delayed-write and stalled-write ms. */
  flushes: number;
  compactions: number;
  delayMs: number;
  stallMs: number;
  /** CPU seconds in the window: each node (by id), this process, the machine in all. */
  readonly nodeCpu: Map<string, number>;
  selfCpu: number;
  machineCpu: number;
  readonly marks: string[];
}

interface StorageFigures {
  sequence: number;
  userBytesWritten: number;
  tableBytesWritten: number;
  flushes: number;
  compactions: number;
  compactionBytesWritten: number;
  writeDelays: number;
  writeDelayMs: number;
  writeStalls: number;
  writeStallMs: number;
  liveKeysEstimate: number;
  memoryBudgetBytes: number;
  levels: { level: number; tables: number; bytes: number }[];
}

interface NodeStatus {
  cluster: { ringVersion: number };
  handoff: { state: string; ringVersion: number; keysSent: number; bytesSent: number };
  storage: StorageFigures;
}

/** A client's own xorshift32 stream from `seed`: numbers in [0, 1), the same for the same seed. */
function xorshift(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

/** The kind of a failed request, for the error counts: status and error code, or what went wrong. */
function failureKind(r: LeanResponse): string {
  let code = "";
  let message = "";
  try {
    const j = JSON.parse(r.body.toString("utf8")) as { error?: unknown; message?: unknown };
    code = typeof j.error === "string" ? j.error : "";
    message = typeof j.message === "string" ? j.message : "";
  } catch {
    // not JSON
  }
  const applied = message.includes("may have been applied")
    ? " (may have been applied)"
    : /NOT applied/.test(message)
      ? " (not applied)"
      : "";
  return `${r.status} ${code || "-"}${applied}`;
}

function exceptionKind(err: unknown): string {
  const m = (err as Error).message ?? String(err);
  if (m.startsWith("no answer within")) return `no answer (${m})`;
  if (m.startsWith("connection to")) return "connection closed";
  return `exception: ${m.slice(0, 80)}`;
}

function storageLine(id: string, s: StorageFigures): string {
  const runs = s.levels
    .filter((l) => l.tables > 0)
    .map((l) => `L${l.level}:${l.tables}/${wholeMib(l.bytes)}`);
  return `    ${id}: seq ${s.sequence}, ~${s.liveKeysEstimate} keys, ${wholeMib(s.userBytesWritten)} MiB written by users, ${wholeMib(s.tableBytesWritten)} MiB to tables; ${s.flushes} flushes, ${s.compactions} compactions (${wholeMib(s.compactionBytesWritten)} MiB written); delayed writes ${s.writeDelays} (${s.writeDelayMs.toFixed(0)} ms), stalls ${s.writeStalls} (${s.writeStallMs.toFixed(0)} ms); runs (tables/MiB) ${runs.join(" ") || "none"}`;
}

/**
 * The mixed run: a 3-node cluster, `--mixed-keys` keys written first, then for `--mixed-seconds` half
 * the clients write (fresh keys, and overwrites of their own keys with the context of their last write)
 * and half read keys already acknowledged, checking that each read returns at least the version
 * acknowledged when it began. At 1/3 of the run n4 joins (`start --join`), at 2/3 n3 leaves (`cluster
 * leave`), clients having stopped using it first. Printed: per window, writes and reads apart, the rate,
 * p50/p99/p99.9 and the longest, with the join, the leave and the ends of their handoffs marked; the
 * storage figures of every node before and after; the totals, errors by kind, stale reads and each
 * node's peak RSS against its memory budget.
 */
async function benchMixed(cfg: Config): Promise<void> {
  const [qn, qr, qw] = cfg.quorum;
  const winMs = cfg.window * 1000;
  const runMs = cfg.mixedSeconds * 1000;
  const windows: MixedWindow[] = Array.from({ length: Math.ceil(runMs / winMs) }, () => ({
    lat: { writes: [], reads: [] },
    errors: { writes: 0, reads: 0 },
    flushes: 0,
    compactions: 0,
    delayMs: 0,
    stallMs: 0,
    nodeCpu: new Map(),
    selfCpu: 0,
    machineCpu: 0,
    marks: [],
  }));
  console.log(
    `\nstarting 3 nodes N${qn}R${qr}W${qw} (durability ${cfg.durability}) for the mixed run: ${cfg.mixedSeconds} s, ${cfg.window} s windows, ${cfg.clients >> 1} writers (${Math.round(100 * cfg.overwriteShare)}% overwrites) and ${cfg.clients - (cfg.clients >> 1)} readers, ${cfg.mixedValueBytes}-byte values ...`,
  );
  const { nodes: first, root } = await startCluster(cfg, "mixed", "mixed");
  const all: NodeProc[] = [...first];
  const pool = new LeanPool();
  const extra: ChildProcess[] = [];
  try {
    console.log(`  ${all.map((n) => `${n.id} ${n.api} pid ${n.child.pid}`).join(", ")}`);
    const alive = () => all.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
    const statusOf = async (n: NodeProc) => (await getJson(n.api, "/status")) as unknown as NodeStatus;

    // Routing: each key to its first replica that clients use, from a /ring refreshed by the monitor.
    const active = new Set(first.map((n) => n.id));
    let table = await ringTable(first[0]!);
    const inFlight = new Map<string, number>();
    const target = (key: string): string => {
      const id = table.listOf(key).find((x) => active.has(x) && table.apiOf.has(x));
      return id !== undefined ? table.apiOf.get(id)! : all.find((n) => active.has(n.id))!.api;
    };

    const value = (seq: number) => {
      const v = Buffer.alloc(Math.max(cfg.mixedValueBytes, 16), 0x2e);
      v.write(`${seq}|`, 0, "latin1");
      return v;
    };
    const known: MixedKey[] = [];
    const writers = Math.max(1, cfg.clients >> 1);
    const readers = Math.max(1, cfg.clients - writers);
    const own: MixedKey[][] = Array.from({ length: writers }, () => []);
    const MAX_KEYS = 2_000_000;

    const counts = { writes: 0, reads: 0, stale: 0, siblings: 0, late: 0, longest: 0 };
    const errors = new Map<string, number>();
    /** Each kind's first failure: when, which node answered, and its message (what explains it). */
    const firstOf = new Map<string, string>();
    const fail = (op: "writes" | "reads", kind: string, at: number, detail?: string) => {
      const k = `${op === "writes" ? "write" : "read"} ${kind}`;
      errors.set(k, (errors.get(k) ?? 0) + 1);
      if (!firstOf.has(k))
        firstOf.set(k, `at ${(at / 1000).toFixed(1)} s${detail === undefined ? "" : `, ${detail}`}`);
      const w = windows[Math.floor(at / winMs)];
      if (w !== undefined) w.errors[op]++;
    };
    const send = async (key: string, head: Buffer, body: Buffer | undefined): Promise<LeanResponse> => {
      const api = target(key);
      inFlight.set(api, (inFlight.get(api) ?? 0) + 1);
      try {
        return await pool.roundTrip(api, head, body, MIXED_CLIENT_TIMEOUT_MS);
      } finally {
        inFlight.set(api, inFlight.get(api)! - 1);
      }
    };
    const contextOf = (r: LeanResponse) => /\r\nx-context: *([^\r]+)/i.exec(r.head)?.[1];

    // The keys written before the run: reads and overwrites have something to work on from the start.
    let preloaded = 0;
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = w; i < cfg.mixedKeys; i += writers) {
          const k: MixedKey = { key: `mx-pre-${i}`, acked: 0, context: undefined, doubtful: false };
          try {
            const r = await send(k.key, putHead(k.key, value(1).length, undefined), value(1));
            if (r.status !== 200 && r.status !== 204) continue;
            k.acked = 1;
            k.context = contextOf(r);
            own[w]!.push(k);
            known.push(k);
            preloaded++;
          } catch {
            // not counted: the run has not begun
          }
        }
      }),
    );
    const before = new Map<string, StorageFigures>();
    for (const n of all) before.set(n.id, (await statusOf(n)).storage);
    console.log(`  ${preloaded} keys written first; storage before the run:`);
    for (const n of all) console.log(storageLine(n.id, before.get(n.id)!));

    const t0 = performance.now();
    const end = t0 + runMs;
    // V8's CPU profiles (--profile) time their samples by this clock, in microseconds.
    console.log(
      `  the run starts (monotonic clock ${process.hrtime.bigint() / 1000n} us, to line up CPU profiles; load average ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")})`,
    );
    const now = () => performance.now() - t0;
    const mark = (text: string) => {
      const at = now();
      const w = windows[Math.min(windows.length - 1, Math.floor(at / winMs))]!;
      w.marks.push(`${text} at ${(at / 1000).toFixed(1)} s${at >= runMs ? " (after the run)" : ""}`);
      console.log(`  [${(at / 1000).toFixed(1)} s] ${text}`);
    };
    let stopping = false;
    let total = 0;

    const writer = async (w: number) => {
      const rnd = xorshift((w + 1) * 0x9e3779b1);
      const mine = own[w]!;
      for (let i = 0; i < cfg.maxOps && !stopping && total < cfg.maxOps; i++) {
        const s = now();
        if (s >= runMs) return;
        total++;
        const old =
          mine.length > 0 && rnd() < cfg.overwriteShare ? mine[Math.floor(rnd() * mine.length)]! : undefined;
        const k =
          old?.doubtful === false
            ? old
            : { key: `mx-${w}-${i}`, acked: 0, context: undefined, doubtful: false };
        const seq = k.acked + 1;
        const body = value(seq);
        let ok = false;
        try {
          const r = await send(k.key, putHead(k.key, body.length, k.context), body);
          if (r.status === 200 || r.status === 204) {
            ok = true;
            k.acked = seq;
            k.context = contextOf(r);
            if (seq === 1 && known.length < MAX_KEYS) {
              known.push(k);
              mine.push(k);
            }
          } else {
            k.doubtful = true;
            fail(
              "writes",
              failureKind(r),
              s,
              `key routed to ${target(k.key)}: ${r.body.toString("utf8").slice(0, 300)}`,
            );
          }
        } catch (err) {
          k.doubtful = true;
          fail("writes", exceptionKind(err), s);
        }
        const lat = now() - s;
        answered(lat);
        if (ok) record("writes", s, lat);
      }
    };
    const record = (op: "writes" | "reads", s: number, lat: number) => {
      counts[op]++;
      windows[Math.floor(s / winMs)]?.lat[op].push(lat);
    };
    /** Every request, answered or failed: the longest, and those later than the timeout + 100 ms. */
    const answered = (lat: number) => {
      if (lat > counts.longest) counts.longest = lat;
      if (lat > NODE_DEFAULTS.requestTimeoutMs + 100) counts.late++;
    };
    const reader = async (r0: number) => {
      const rnd = xorshift((r0 + 101) * 0x85ebca6b);
      for (let i = 0; i < cfg.maxOps && !stopping && total < cfg.maxOps; i++) {
        const s = now();
        if (s >= runMs) return;
        if (known.length === 0) {
          await new Promise((res) => setTimeout(res, 10));
          continue;
        }
        total++;
        const k = known[Math.floor(rnd() * known.length)]!;
        const want = k.acked;
        try {
          const r = await send(k.key, getHead(k.key), undefined);
          if (r.status === 200) {
            const got = Number.parseInt(r.body.toString("latin1", 0, 16), 10);
            if (!(got >= want)) counts.stale++;
            record("reads", s, now() - s);
          } else if (r.status === 300) {
            counts.siblings++;
            record("reads", s, now() - s);
          } else fail("reads", r.status === 404 ? "404 (an acknowledged key not found)" : failureKind(r), s);
        } catch (err) {
          fail("reads", exceptionKind(err), s);
        }
        answered(now() - s);
      }
    };

    // The monitor: every second, each live node's /status (handoff, ring version, storage counters) and
    // CPU; the ring for routing every other second; the ends of handoffs; the nodes' peak RSS.
    const peaks = new Map<string, number>();
    const budgets = new Map<string, number>();
    const lastStorage = new Map<string, StorageFigures>();
    const lastHandoff = new Map<string, NodeStatus["handoff"]>();
    const lastCpu = new Map<number, number>();
    const spare = {
      ...windows[0]!,
      lat: { writes: [], reads: [] },
      errors: { writes: 0, reads: 0 },
      nodeCpu: new Map<string, number>(),
      marks: [],
    };
    for (const n of all) lastCpu.set(n.child.pid!, cpuSeconds(n.child.pid!));
    let lastSelf = process.cpuUsage();
    let lastMachine = machineBusySeconds();
    let pending: { label: string; base: number; watch: () => NodeProc[]; also: () => boolean } | undefined;
    const monitor = async () => {
      for (let tick = 0; tick < 100_000 && !stopping; tick++) {
        await new Promise((res) => setTimeout(res, 1000));
        // Past the run's end the figures go to a window that is not printed.
        const at = now();
        const w = windows[Math.floor(at / winMs)] ?? spare;
        const live = alive();
        for (const n of live) {
          const pid = n.child.pid!;
          const c = cpuSeconds(pid);
          const prev = lastCpu.get(pid);
          if (prev !== undefined && Number.isFinite(c))
            w.nodeCpu.set(n.id, (w.nodeCpu.get(n.id) ?? 0) + c - prev);
          if (Number.isFinite(c)) lastCpu.set(pid, c);
          const p = peakRss(pid);
          if (Number.isFinite(p)) peaks.set(n.id, Math.max(peaks.get(n.id) ?? 0, p));
        }
        const self = process.cpuUsage(lastSelf);
        lastSelf = process.cpuUsage();
        w.selfCpu += (self.user + self.system) / 1e6;
        const m = machineBusySeconds();
        w.machineCpu += m - lastMachine;
        lastMachine = m;
        const statuses = new Map<string, NodeStatus>();
        await Promise.all(
          live.map(async (n) => {
            try {
              const st = await statusOf(n);
              // A node stopping after its leave may answer with something else than its status.
              if (st?.storage !== undefined && st.handoff !== undefined) statuses.set(n.id, st);
            } catch {
              // not answering now (leaving, starting)
            }
          }),
        );
        for (const [id, st] of statuses) {
          budgets.set(id, st.storage.memoryBudgetBytes);
          const prev = lastStorage.get(id);
          if (prev !== undefined) {
            w.flushes += st.storage.flushes - prev.flushes;
            w.compactions += st.storage.compactions - prev.compactions;
            w.delayMs += st.storage.writeDelayMs - prev.writeDelayMs;
            w.stallMs += st.storage.writeStallMs - prev.writeStallMs;
          }
          lastStorage.set(id, st.storage);
          lastHandoff.set(id, st.handoff);
        }
        if (pending !== undefined) {
          const watched = pending.watch().map((n) => statuses.get(n.id));
          const v = watched[0]?.cluster.ringVersion ?? 0;
          const done =
            watched.every(
              (s) =>
                s !== undefined &&
                s.cluster.ringVersion === v &&
                s.handoff.state === "idle" &&
                s.handoff.ringVersion === v,
            ) &&
            v > pending.base &&
            pending.also();
          if (done) {
            // What each node's pass for the change sent (a node gone meanwhile: as last seen).
            const base = pending.base;
            const sent = [...lastHandoff]
              .filter(([, h]) => h.ringVersion > base && h.keysSent > 0)
              .map(([id, h]) => `${id} ${h.keysSent} keys/${wholeMib(h.bytesSent)} MiB`);
            mark(`${pending.label} handoff ended (ring version ${v}; sent: ${sent.join(", ") || "-"})`);
            pending = undefined;
          }
        }
        if (tick % 2 === 1) {
          const src = live.find((n) => active.has(n.id));
          if (src !== undefined) table = await ringTable(src).catch(() => table);
        }
      }
    };

    const ringVersion = async (n: NodeProc) => (await statusOf(n)).cluster.ringVersion;
    const script = async () => {
      // The join, at 1/3 of the run.
      await sleepUntil(t0 + runMs / 3, () => stopping);
      if (stopping) return;
      const base = await ringVersion(first[0]!);
      mark("n4 starts (start --join)");
      const n4 = await startNode(
        "n4",
        path.join(root, "n4"),
        ["--join", first[0]!.peer, ...commonFlags(cfg, "mixed")],
        cfg.nodeFlags,
      );
      all.push(n4);
      active.add(n4.id);
      mark(`n4 serves (${n4.api}, pid ${n4.child.pid})`);
      pending = { label: "join", base, watch: () => first, also: () => true };
      // The leave, at 2/3: clients stop using n3, then `cluster leave` (its own wait bounded).
      await sleepUntil(t0 + (2 * runMs) / 3, () => stopping);
      if (stopping) return;
      if (pending !== undefined) mark("(the join's handoff has not ended yet)");
      const n3 = first[2]!;
      active.delete(n3.id);
      mark("clients stop using n3");
      const drainEnd = performance.now() + 15_000;
      for (let i = 0; i < 300 && (inFlight.get(n3.api) ?? 0) > 0 && performance.now() < drainEnd; i++)
        await new Promise((res) => setTimeout(res, 50));
      const leaveBase = await ringVersion(first[0]!);
      mark("n3 leaves (cluster leave)");
      const cli = spawn(
        process.execPath,
        [BIN, "cluster", "leave", "--node", n3.api, "--wait-timeout", String(Math.max(60, cfg.mixedSeconds))],
        { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
      );
      children.add(cli);
      extra.push(cli);
      let out = "";
      cli.stdout!.on("data", (d: Buffer) => {
        out = (out + d.toString()).slice(-4000);
      });
      cli.stderr!.on("data", (d: Buffer) => {
        out = (out + d.toString()).slice(-4000);
      });
      const rest = [first[0]!, first[1]!, n4];
      pending = {
        label: "leave",
        base: leaveBase,
        watch: () => rest,
        also: () => n3.child.exitCode !== null || n3.child.signalCode !== null,
      };
      const code = await new Promise<number | null>((res) => cli.once("exit", (c) => res(c)));
      children.delete(cli);
      const last =
        out
          .trim()
          .split("\n")
          .filter((l) => l.trim() !== "")
          .pop() ?? "";
      mark(`cluster leave returned (exit ${code}${last === "" ? "" : `: ${last.slice(0, 120)}`})`);
    };

    // A failure of either ends the run early (the load stops), and is printed.
    const failed = (what: string) => (err: unknown) => {
      mark(`${what} failed: ${(err as Error).message}`);
      stopping = true;
    };
    const monitorDone = monitor().catch(failed("the monitor"));
    const scriptDone = script().catch(failed("the join or the leave"));
    await Promise.all([
      ...Array.from({ length: writers }, (_, w) => writer(w)),
      ...Array.from({ length: readers }, (_, r) => reader(r)),
    ]);
    // After the load: wait (bounded) for the leave command and the last handoff to finish.
    const settle = performance.now() + 120_000;
    await Promise.race([scriptDone, sleepUntil(settle, () => false)]);
    for (let i = 0; i < 600 && pending !== undefined && performance.now() < settle; i++)
      await new Promise((res) => setTimeout(res, 200));
    if (pending !== undefined)
      console.log(`  the ${pending.label} handoff had not ended 120 s after the run`);
    stopping = true;
    await monitorDone;
    if (end < performance.now() - 1000)
      console.log(`  (${((performance.now() - end) / 1000).toFixed(0)} s after the run's end)`);

    console.log(
      `  load average at the end ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
    );
    printTimeline(
      windows,
      cfg.window,
      all.map((n) => n.id),
    );
    const afterStatus = new Map<string, StorageFigures>();
    for (const n of alive()) {
      afterStatus.set(n.id, (await statusOf(n)).storage);
      const p = peakRss(n.child.pid!);
      if (Number.isFinite(p)) peaks.set(n.id, Math.max(peaks.get(n.id) ?? 0, p));
    }
    console.log("  storage after the run (n3 left: its last figures before it stopped):");
    for (const n of all) {
      const s = afterStatus.get(n.id) ?? lastStorage.get(n.id);
      if (s !== undefined) console.log(storageLine(n.id, s));
    }
    const secs = cfg.mixedSeconds;
    const writeLat = Float64Array.from(windows.flatMap((w) => w.lat.writes)).sort();
    const readLat = Float64Array.from(windows.flatMap((w) => w.lat.reads)).sort();
    const tot = (name: string, l: Float64Array) =>
      `  ${name}: ${l.length} (${(l.length / secs).toFixed(0)}/s), p50 ${f2(percentile(l, 0.5))} ms, p99 ${f2(percentile(l, 0.99))} ms, p99.9 ${f2(percentile(l, 0.999))} ms, longest ${f1(l.length > 0 ? l[l.length - 1]! : Number.NaN)} ms`;
    console.log("\n  mixed run totals:");
    console.log(tot("writes acknowledged", writeLat));
    console.log(tot("reads answered     ", readLat));
    console.log(
      `  stale reads ${counts.stale} (a value older than the one acknowledged when the read began), reads with siblings ${counts.siblings}, longest request (answered or failed) ${f1(counts.longest)} ms, ${counts.late} later than the ${NODE_DEFAULTS.requestTimeoutMs} ms timeout + 100 ms`,
    );
    const errs = [...errors.entries()].sort((a, b) => b[1] - a[1]);
    console.log(`  errors: ${errs.length === 0 ? "none" : errs.map(([k, v]) => `${v} x ${k}`).join("; ")}`);
    for (const [k] of errs) console.log(`    first ${k}: ${firstOf.get(k)}`);
    const ids = all.map((n) => n.id);
    console.log(
      `  peak RSS per node ${ids.join("/")} ${rssVsBudget(
        ids.map((id) => peaks.get(id) ?? Number.NaN),
        ids.map((id) => budgets.get(id) ?? Number.NaN),
      )}`,
    );
  } finally {
    pool.close();
    await Promise.all([...all.map((n) => stopNode(n.child)), ...extra.map((c) => stopNode(c))]);
    fs.rmSync(root, { recursive: true, force: true });
    tempDirs.delete(root);
  }
}

/** Waits until performance.now() reaches `at` or `stop()` says so (checked every 200 ms). */
async function sleepUntil(at: number, stop: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000_000 && performance.now() < at && !stop(); i++)
    await new Promise((res) => setTimeout(res, Math.min(200, Math.max(1, at - performance.now()))));
}

function printTimeline(windows: MixedWindow[], windowS: number, ids: string[]): void {
  console.log(
    `\n  latency over time (${windowS} s windows; ops/s, then p50/p99/p99.9/longest ms; err: failed requests; node CPU: each node, % of one core; other: outside this benchmark; LSM: flushes/compactions, delayed-write ms, stalled ms, summed over nodes):`,
  );
  console.log(
    `  ${"window s".padEnd(9)} ${"writes/s".padStart(8)} ${"write p50/p99/p99.9/max".padEnd(27)} ${"err".padStart(4)} ${"reads/s".padStart(8)} ${"read p50/p99/p99.9/max".padEnd(27)} ${"err".padStart(4)} ${"node CPU %".padStart(15)} ${"other".padStart(5)}  LSM`,
  );
  for (const [i, w] of windows.entries()) {
    const q = (l: number[]) => {
      const s = Float64Array.from(l).sort();
      return `${f1(percentile(s, 0.5))}/${f1(percentile(s, 0.99))}/${f1(percentile(s, 0.999))}/${f1(s.length > 0 ? s[s.length - 1]! : Number.NaN)}`;
    };
    const nodes = [...w.nodeCpu.values()].reduce((a, b) => a + b, 0);
    const other = w.machineCpu - nodes - w.selfCpu;
    const each = ids.map((id) => {
      const c = w.nodeCpu.get(id);
      return c === undefined ? "-" : ((100 * c) / windowS).toFixed(0);
    });
    console.log(
      `  ${`${i * windowS}-${(i + 1) * windowS}`.padEnd(9)} ${(w.lat.writes.length / windowS).toFixed(0).padStart(8)} ${q(w.lat.writes).padEnd(27)} ${String(w.errors.writes).padStart(4)} ${(w.lat.reads.length / windowS).toFixed(0).padStart(8)} ${q(w.lat.reads).padEnd(27)} ${String(w.errors.reads).padStart(4)} ${each.join("/").padStart(15)} ${((100 * other) / windowS).toFixed(0).padStart(5)}  ${w.flushes}/${w.compactions} ${w.delayMs.toFixed(0)} ${w.stallMs.toFixed(0)}`,
    );
    for (const m of w.marks) console.log(`      ^ ${m}`);
  }
}

// ------------------------------------------------------------------------------------------ report

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");

/** CPU time (nodes and load generator) per operation, in microseconds. */
function cpuPerOp(r: PhaseResult): number {
  const pct = r.nodeCpu.reduce((a, b) => a + b, 0) + r.benchCpu;
  return ((pct / 100) * 1e6) / r.rate;
}

/** The rate at which nodes and load generator would use every core, at this CPU cost per operation. */
function ceiling(r: PhaseResult): number {
  return (os.cpus().length * 1e6) / cpuPerOp(r);
}

const COLUMNS: [string, number][] = [
  ["config", -15],
  ["loadgen", -7],
  ["op", -4],
  ["ops/s", 7],
  ["p50 ms", 7],
  ["p99 ms", 7],
  ["p99.9 ms", 8],
  ["max ms", 7],
  ["errors", 6],
  ["node CPU % (each)", -17],
  ["bench CPU %", 11],
  ["other CPU %", 11],
  ["CPU us/op", 9],
  ["ceiling/s", 9],
];

function line(cells: string[]): string {
  return `  ${cells.map((c, i) => (COLUMNS[i]![1] < 0 ? c.padEnd(-COLUMNS[i]![1]) : c.padStart(COLUMNS[i]![1]))).join(" ")}`;
}

function header(): void {
  console.log(line(COLUMNS.map((c) => c[0])));
}

function printRow(r: PhaseResult): void {
  const cells = [
    r.config,
    r.loadgen,
    r.op,
    r.rate.toFixed(0),
    f2(r.p50),
    f2(r.p99),
    f2(r.p999),
    f1(r.max),
    String(r.errors),
    r.nodeCpu.map((x) => x.toFixed(0)).join("/"),
    r.benchCpu.toFixed(0),
    r.otherCpu.toFixed(0),
    cpuPerOp(r).toFixed(0),
    ceiling(r).toFixed(0),
  ];
  console.log(`${line(cells)}${r.errors > 0 ? `   first error: ${r.firstError}` : ""}`);
  if (r.op === "puts")
    console.log(
      `      WAL fsyncs/s per node ${r.storage.map((x) => x.fsyncsPerSec.toFixed(0)).join("/")}, writes per fsync ${r.storage.map((x) => f1(x.writesPerFsync)).join("/")}`,
    );
  console.log(`      peak RSS per node ${rssVsBudget(r.rssPeak, r.budget)}`);
}

const wholeMib = (b: number) => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : "-");

/** "a/b/c MiB against a memory budget of ..." for nodes' peak RSS and their budgets (bytes). */
function rssVsBudget(peaks: number[], budgets: number[]): string {
  const set = [...new Set(budgets.map((b) => (Number.isFinite(b) ? b : -1)))];
  const budget =
    set.length === 1 && set[0] === -1
      ? "no memory budget (not a ringstore node)"
      : set.every((b) => b === 0)
        ? "memory budget none (the engine's own sizes)"
        : `memory budget ${budgets.map(wholeMib).join("/")} MiB`;
  return `(VmHWM) ${peaks.map(wholeMib).join("/")} MiB; ${budget}`;
}

function machineFacts(): void {
  const cpus = os.cpus();
  let mount = "unknown";
  try {
    const dir = fs.realpathSync(os.tmpdir());
    let best = "";
    for (const line of fs.readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [dev, mnt, type] = line.split(" ");
      if (dev === undefined || mnt === undefined || type === undefined) continue;
      const prefix = mnt.endsWith("/") ? mnt : `${mnt}/`;
      if ((dir === mnt || dir.startsWith(prefix)) && mnt.length >= best.length) {
        best = mnt;
        mount = `${dev} on ${mnt} (${type})`;
      }
    }
  } catch {
    // not Linux
  }
  console.log("machine:");
  console.log(
    `  cpu        ${cpus[0]?.model ?? "unknown"}, ${cpus.length} cores (load generator shares them)`,
  );
  console.log(
    `  memory     ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  console.log(`  nodes run  ${BIN}`);
  console.log(`  os         ${os.platform()} ${os.release()} ${os.arch()}, node ${process.version}`);
  console.log(`  data dirs  ${os.tmpdir()}: ${mount}`);
  console.log(
    "  CPU % columns are of one core; 'other' is every process outside this benchmark (should be ~0)",
  );
  console.log(
    "  CPU us/op: node + load generator CPU per operation; ceiling/s: cores / that (all cores ours)",
  );
}

async function main(): Promise<void> {
  const cfg = parseConfig();
  BIN = cfg.bin;
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first`);
  if (cfg.profileDir !== undefined) fs.mkdirSync(cfg.profileDir, { recursive: true });
  machineFacts();
  console.log(
    `load: ${cfg.clients} concurrent clients, ${cfg.valueBytes}-byte values, ${cfg.warmup} s warm-up + ${cfg.seconds} s per phase, durability ${cfg.durability}`,
  );
  console.log(
    "loadgens: pool = undici Pool per node, round robin; client = RingstoreClient routing none; pa = partition-aware",
  );
  const value = Buffer.alloc(cfg.valueBytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 17) & 0xff;

  const runs: PhaseResult[][] = [];
  const drains: DrainResult[] = [];
  // Rows come from the configurations measured in phases; the drain and the mixed run print their own.
  const rows = cfg.configs.some((x) => x !== "drain" && x !== "mixed");
  if (rows) header();
  for (let k = 0; k < cfg.repeat; k++) {
    if (cfg.repeat > 1) console.log(`\n=== run ${k + 1} of ${cfg.repeat}`);
    const one: PhaseResult[] = [];
    for (const size of cfg.configs) {
      if (size === "mixed") await benchMixed(cfg);
      else if (size !== "drain") one.push(...(await benchConfig(cfg, size, value)));
      else {
        const d = await benchDrain(cfg, value);
        drains.push(d);
        printDrain(d);
      }
    }
    runs.push(one);
  }
  // With --repeat, each row below is the run with the median throughput of its phase (all its figures
  // from that run), and the range of the throughputs follows it.
  const results: PhaseResult[] = [];
  const ranges = new Map<PhaseResult, string>();
  for (const [i, first] of runs[0]!.entries()) {
    const same = runs.map((one) => one[i]!).sort((a, b) => a.rate - b.rate);
    const median = same[(same.length - 1) >> 1]!;
    results.push(median);
    if (same.length > 1)
      ranges.set(
        median,
        `median of ${same.length} runs; ops/s ${same.map((r) => r.rate.toFixed(0)).join(", ")} (${first.loadgen} ${first.op})`,
      );
  }

  if (rows) console.log(cfg.repeat > 1 ? `\nresults (median of ${cfg.repeat} runs each):` : "\nresults:");
  if (rows) header();
  for (const r of results) {
    printRow(r);
    const range = ranges.get(r);
    if (range !== undefined) console.log(`      ${range}`);
  }

  const find = (size: Measured, g: Loadgen, op: Op) =>
    results.find((r) => r.config === configName(cfg, size) && r.loadgen === g && r.op === op);
  const ratio = (title: string, base: Measured, of: Measured = 3) => {
    if (!cfg.configs.includes(of) || !cfg.configs.includes(base)) return;
    console.log(`\n${title} (throughput; p99; CPU per operation):`);
    for (const g of LOADGENS)
      for (const op of OPS) {
        const a = find(of, g, op);
        const b = find(base, g, op);
        if (a === undefined || b === undefined) continue;
        console.log(
          `  ${g.padEnd(7)} ${op}: ${f2(a.rate / b.rate)}x ops/s; p99 ${f2(a.p99)} vs ${f2(b.p99)} ms; ${cpuPerOp(a).toFixed(0)} vs ${cpuPerOp(b).toFixed(0)} us`,
        );
      }
  };
  ratio("ratio 3-node / 1-node", 1);
  ratio("ratio 3-node with peer TLS / with plaintext peers (the cost of peer encryption)", "3plain");
  ratio("ratio 3-node / floor (the same protocol shape with none of the node's work)", "floor");
  ratio(
    "ratio 4 nodes with one down / all four up (the cost of sloppy quorum: stand-ins and hints)",
    4,
    "4down",
  );
  if (drains.length > 0) {
    console.log(
      `\nhinted handoff drain (${cfg.hintedWrites} writes of keys whose replica n4 is down, then n4 back):`,
    );
    for (const d of drains) printDrain(d);
  }

  if (cfg.profileDir !== undefined) console.log(`\nprofiles of n1 in ${cfg.profileDir}`);
  if (!cfg.configs.includes(3) && !cfg.configs.includes("floor")) return;
  console.log(
    `\ntarget (3 nodes, 3x a 3-member etcd on this machine: >= ${TARGET.putsPerSec} puts/s, >= ${TARGET.getsPerSec} gets/s, p99 < ${TARGET.p99Ms} ms):`,
  );
  if (cfg.quorum.join(",") !== "3,2,2")
    console.log(`  (not judged: the target is for N=3 R=2 W=2, this run used ${cfg.quorum.join(",")})`);
  else
    for (const g of LOADGENS)
      for (const op of OPS) {
        const r = find(3, g, op);
        if (r === undefined) continue;
        const want = op === "puts" ? TARGET.putsPerSec : TARGET.getsPerSec;
        const okRate = r.rate >= want;
        const okP99 = r.p99 < TARGET.p99Ms;
        console.log(
          `  ${okRate && okP99 && r.errors === 0 ? "PASS" : "MISS"}  ${g.padEnd(7)} ${op}: ${r.rate.toFixed(0)}/s (${okRate ? ">=" : "<"} ${want}), p99 ${f2(r.p99)} ms (${okP99 ? "<" : ">="} ${TARGET.p99Ms}), errors ${r.errors}`,
        );
      }
  for (const op of OPS) {
    const f = find("floor", "lean", op);
    if (f === undefined) continue;
    const want = op === "puts" ? TARGET.putsPerSec : TARGET.getsPerSec;
    console.log(
      `  the floor here: ${op} ${f.rate.toFixed(0)}/s, p99 ${f2(f.p99)} ms: ${f.rate >= want ? "the target is within what Node allows on this machine" : "below the target: even a minimal Node implementation of the protocol does not reach it here"}`,
    );
  }
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => stopAll());
