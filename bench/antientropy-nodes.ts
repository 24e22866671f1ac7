/**
 * The parts of bench:antientropy that run real nodes (built dist/, started through the CLI as
 * bench/cluster.ts starts them, each in its own data directory under a temp dir, every port 0):
 *
 * writes   What anti-entropy costs the write path in a node: two 3-node clusters (N=3 R=2 W=2, --durability
 *          as asked, fsync by default), one with `--anti-entropy on` (the default: trees kept as writes land,
 *          exchanges every --anti-entropy-interval, 30 s by default) and one with `--anti-entropy off` (no
 *          trees, no exchanges), both running for the whole part. The same load generator (lean: hand-
 *          written keep-alive HTTP/1.1, partition-aware, as bench:cluster's) drives the same put load
 *          (--clients workers, one request each in flight, fresh keys, --value-bytes values) against each
 *          in turn: a warm-up of each (--warmup s, not counted), then --rounds rounds of --seconds s on
 *          each, alternating which goes first. Per phase: puts/s, p50/p99 latency, the nodes' CPU per put
 *          (/proc/PID/stat) and the CPU every other process used (a busy machine shows there). Then the
 *          medians, and on/off ratios of puts/s, p99 and CPU per put. The exchanges the "on" nodes ran
 *          meanwhile are counted from /status (they are part of what "on" costs); --write-interval sets
 *          the "on" nodes' --anti-entropy-interval, to price exchanges that run under the load.
 *
 * repair   Two replicas of --keys keys (two nodes, N=2, hinted handoff off, exchanges every
 *          --repair-interval ms): identical, one key differing, 1% of the keys differing (half of them
 *          existing keys written again without a context, so that n1 holds two siblings where n2 holds
 *          one; half new keys). The drift is made on n1 alone: n2 is paused
 *          (SIGSTOP) until n1 sees it down, the writes go to n1 with w=1 (nothing is sent to a node seen
 *          down), and n2 resumes (SIGCONT). Both nodes' exchanges are paused (POST
 *          /cluster/anti-entropy?paused=true) while the drift is made and started again together; printed:
 *          the time from then until each node found the other in sync and every differing key was
 *          repaired, the exchanges both nodes ran, their bytes (as /status counts them: wireBytes plus
 *          frames; the core part checks that count against the transport's encoder), and keys repaired.
 *          The time includes the wait for a node's next turn (up to --repair-interval) and the pause
 *          between an exchange's two looks (1 s), and repairs are paced by --anti-entropy-rate (2,000
 *          keys/s): what a user sees, not the CPU (the core part measures that).
 *
 * Every loop is bounded in time and count; every child process is stopped by its PID (SIGTERM, SIGKILL
 * after 5 s; SIGKILL at exit), and temp dirs are removed.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { PreferenceTable, partitionOf } from "../src/ring/ring.js";
import { type NodeProc, spawnNode } from "./node-process.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const BIN = path.join(REPO, "dist/cli/main.js");

export interface WriteCostConfig {
  readonly seconds: number;
  readonly warmup: number;
  readonly rounds: number;
  readonly clients: number;
  readonly valueBytes: number;
  readonly durability: string;
  /** The "on" cluster's --anti-entropy-interval (undefined: the node's default). */
  readonly intervalMs: number | undefined;
  /** Before each phase, wait up to this many seconds for the other processes to leave the CPU idle. */
  readonly quietWait: number;
}

export interface RepairConfig {
  readonly keys: number;
  readonly clients: number;
  readonly valueBytes: number;
  readonly durability: string;
  readonly intervalMs: number;
}

// ------------------------------------------------------------------ processes

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

process.on("exit", () => {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** SIGTERM by PID (a clean stop), SIGKILL after 5 s; a paused node is continued first. */
async function stopNode(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) {
    children.delete(c);
    return;
  }
  const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
  process.kill(c.pid, "SIGCONT");
  process.kill(c.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, "SIGKILL");
  }, 5000);
  await exited;
  clearTimeout(timer);
  children.delete(c);
}

/** Stops every node this module started (by PID) and removes the temp dirs. */
export async function stopAllNodes(): Promise<void> {
  await Promise.all([...children].map(stopNode));
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

function startNode(id: string, dataDir: string, extra: readonly string[]): Promise<NodeProc> {
  const args = [BIN, "start", "--id", id, "--api", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--data", dataDir];
  // RINGSTORE_NODE_FLAGS: node's own flags for every node started (to profile them: --cpu-prof ...).
  const nodeFlags = (process.env.RINGSTORE_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "");
  return spawnNode(id, [...nodeFlags, ...args, ...extra], children);
}

async function getJson(api: string, p: string): Promise<Record<string, unknown>> {
  const r = await fetch(`http://${api}${p}`, { signal: AbortSignal.timeout(5000) });
  return (await r.json()) as Record<string, unknown>;
}

async function post(api: string, p: string): Promise<Record<string, unknown>> {
  const r = await fetch(`http://${api}${p}`, { method: "POST", signal: AbortSignal.timeout(5000) });
  const j = (await r.json()) as Record<string, unknown>;
  if (r.status !== 200) throw new Error(`POST ${p} on ${api}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

/** Polls `fn` every 50 ms until it is true; throws after `ms`. */
async function until(what: string, fn: () => Promise<boolean>, ms: number): Promise<void> {
  const end = performance.now() + ms;
  for (let i = 0; i < 10_000_000; i++) {
    if (await fn().catch(() => false)) return;
    if (performance.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface MemberRow {
  id: string;
  state: string;
}

/** Does node `api` see each of `ids` in `state`? */
async function sees(api: string, ids: readonly string[], state: string): Promise<boolean> {
  const members = (await getJson(api, "/status")).members as MemberRow[];
  return ids.every((id) => members.some((m) => m.id === id && m.state === state));
}

/** Starts `count` nodes (n1 new, the others --join it) and waits until all hold the same full ring. */
async function startCluster(
  label: string,
  count: number,
  flags: readonly string[],
): Promise<{ nodes: NodeProc[]; root: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `ringstore-bench-ae-${label}-`));
  tempDirs.add(root);
  const first = await startNode("n1", path.join(root, "n1"), flags);
  const rest = await Promise.all(
    Array.from({ length: count - 1 }, (_, i) =>
      // A joiner is given the key the first node wrote, as an operator does.
      startNode(`n${i + 2}`, path.join(root, `n${i + 2}`), [
        ...flags,
        "--join",
        first.peer,
        "--cluster-key-file",
        path.join(root, "n1", "cluster.key"),
      ]),
    ),
  );
  const nodes = [first, ...rest];
  const ids = nodes.map((n) => n.id);
  await until(
    `${label}: every node to hold the full ring with every member up`,
    async () => {
      const rings = await Promise.all(nodes.map((n) => getJson(n.api, "/ring")));
      const owners = rings.map((r) => JSON.stringify(r.owners));
      return (
        owners.every((o) => o === owners[0]) &&
        new Set(rings[0]!.owners as string[]).size === ids.length &&
        rings.every((r) =>
          ids.every((id) => (r.members as MemberRow[]).some((m) => m.id === id && m.state === "up")),
        )
      );
    },
    60_000,
  );
  return { nodes, root };
}

// ------------------------------------------------------------------ CPU time

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

interface CpuSample {
  /** CPU seconds of every node process of this benchmark, by PID. */
  readonly procs: Map<number, number>;
  readonly self: number;
  readonly machine: number;
  readonly at: number;
}

function cpuSample(): CpuSample {
  const procs = new Map<number, number>();
  for (const c of children) if (c.pid !== undefined) procs.set(c.pid, cpuSeconds(c.pid));
  const u = process.cpuUsage();
  return { procs, self: (u.user + u.system) / 1e6, machine: machineBusySeconds(), at: performance.now() };
}

// ------------------------------------------------------------------ the lean load generator

/**
 * One keep-alive HTTP/1.1 connection with one request at a time, written and parsed by hand (as
 * bench/cluster.ts's lean load generator): little client CPU, so that on a machine whose cores the nodes
 * share, the figures measure the nodes. It reads the status line and Content-Length, nothing else.
 */
class LeanConnection {
  private readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: { resolve: (status: number) => void; reject: (e: Error) => void } | undefined;
  private failed: Error | undefined;

  constructor(api: string) {
    const i = api.lastIndexOf(":");
    this.socket = net.connect({ host: api.slice(0, i), port: Number(api.slice(i + 1)), noDelay: true });
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    const fail = (e: Error) => {
      this.failed ??= e;
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(e);
    };
    this.socket.on("error", fail);
    this.socket.on("close", () => fail(new Error(`connection to ${api} closed`)));
  }

  request(head: Buffer, body: Buffer): Promise<number> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    if (this.waiter !== undefined) return Promise.reject(new Error("one request at a time"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.socket.write(Buffer.concat([head, body]));
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
    this.buf = Buffer.alloc(0);
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve(status);
  }

  get usable(): boolean {
    return this.failed === undefined;
  }

  close(): void {
    this.socket.destroy();
  }
}

interface Putter {
  /** PUT /kv/key (with `query`, e.g. "?w=1"); true on 204. */
  put(key: string, value: Buffer, query?: string): Promise<boolean>;
  close(): void;
}

/** Puts straight to each key's first replica (from the ring of GET /ring), over LeanConnections. */
async function leanPutter(via: NodeProc, skip: ReadonlySet<string> = new Set()): Promise<Putter> {
  const j = (await getJson(via.api, "/ring")) as {
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
  const apiOf = new Map(j.members.map((m) => [m.id, m.api]));
  const route = (key: string) =>
    apiOf.get(table.forPartition(partitionOf(Buffer.from(key), j.partitions)).find((id) => !skip.has(id))!)!;
  const all: LeanConnection[] = [];
  const idle = new Map<string, LeanConnection[]>();
  return {
    async put(key, value, query = "") {
      const api = route(key);
      let c = idle.get(api)?.pop();
      if (c === undefined || !c.usable) {
        c = new LeanConnection(api);
        all.push(c);
      }
      const head = Buffer.from(
        `PUT /kv/${key}${query} HTTP/1.1\r\nhost: ringstore\r\ncontent-type: application/octet-stream\r\ncontent-length: ${value.length}\r\n\r\n`,
        "latin1",
      );
      const status = await c.request(head, value);
      const list = idle.get(api);
      if (list === undefined) idle.set(api, [c]);
      else list.push(c);
      return status === 204;
    },
    close() {
      for (const c of all) c.close();
    },
  };
}

function valueBytesOf(bytes: number): Buffer {
  const v = Buffer.alloc(bytes);
  for (let i = 0; i < v.length; i++) v[i] = (i * 131 + 17) & 0xff;
  return v;
}

// ------------------------------------------------------------------ writes: the cost on the write path

interface PhaseResult {
  readonly mode: "on" | "off";
  readonly round: number;
  readonly ops: number;
  readonly errors: number;
  readonly firstError: string;
  readonly rate: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  /** CPU % (of one core) of each node of the cluster measured, of this process, of every other process. */
  readonly nodeCpu: number[];
  readonly benchCpu: number;
  readonly otherCpu: number;
  /** Node CPU microseconds per put (the three nodes together). */
  readonly nodeUsPerPut: number;
  /** Exchanges the measured cluster's nodes started during the phase, and keys they repaired. */
  readonly exchanges: number;
  readonly keysRepaired: number;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** Exchanges started and keys repaired by the nodes (0 with anti-entropy off), from /status. */
async function aeTotals(nodes: readonly NodeProc[]): Promise<{ exchanges: number; keysRepaired: number }> {
  let exchanges = 0;
  let keysRepaired = 0;
  for (const n of nodes) {
    const ae = (await getJson(n.api, "/status")).antiEntropy as { exchanges: number; keysRepaired: number };
    exchanges += ae.exchanges;
    keysRepaired += ae.keysRepaired;
  }
  return { exchanges, keysRepaired };
}

/**
 * Waits (at most `seconds`) until processes other than this benchmark's use under 25% of a core for two
 * seconds in a row (a shared machine's noise is most of the run-to-run difference).
 */
async function waitQuiet(seconds: number): Promise<void> {
  if (seconds <= 0) return;
  const end = performance.now() + seconds * 1000;
  let calm = 0;
  for (let i = 0; i < 100_000 && performance.now() < end; i++) {
    const a = cpuSample();
    await new Promise((r) => setTimeout(r, 1000));
    const b = cpuSample();
    let ours = b.self - a.self;
    for (const [pid, x] of b.procs) ours += x - (a.procs.get(pid) ?? x);
    const other = (100 * (b.machine - a.machine - ours)) / ((b.at - a.at) / 1000);
    calm = other < 25 ? calm + 1 : 0;
    if (calm >= 2) return;
  }
  console.log(`  (the machine was not quiet within ${seconds} s: measuring anyway)`);
}

/**
 * `clients` workers put fresh keys for `seconds` (bounded by a deadline and a count), over connections of
 * their own (a connection left idle while the other cluster is measured may be closed by its node).
 */
async function putPhase(
  cfg: WriteCostConfig,
  mode: "on" | "off",
  round: number,
  nodes: readonly NodeProc[],
  seconds: number,
  value: Buffer,
): Promise<PhaseResult> {
  await waitQuiet(cfg.quietWait);
  const putter = await leanPutter(nodes[0]!);
  try {
    return await putLoad(cfg, mode, round, nodes, putter, seconds, value);
  } finally {
    putter.close();
  }
}

async function putLoad(
  cfg: WriteCostConfig,
  mode: "on" | "off",
  round: number,
  nodes: readonly NodeProc[],
  putter: Putter,
  seconds: number,
  value: Buffer,
): Promise<PhaseResult> {
  const maxOps = 5_000_000;
  const lat = new Float64Array(maxOps);
  let n = 0;
  let errors = 0;
  let firstError = "";
  const aeBefore = await aeTotals(nodes);
  const before = cpuSample();
  const deadline = before.at + seconds * 1000;
  const tag = `${mode}-${round}`;
  await Promise.all(
    Array.from({ length: cfg.clients }, async (_, w) => {
      for (let i = 0; i < maxOps; i++) {
        const s = performance.now();
        if (s >= deadline || n >= maxOps) return;
        let ok = false;
        try {
          ok = await putter.put(`${tag}-${w}-${i}`, value);
          if (!ok) firstError ||= "unexpected status";
        } catch (err) {
          firstError ||= (err as Error).message;
        }
        const e = performance.now();
        if (e > deadline) return;
        if (ok) lat[n++] = e - s;
        else errors++;
      }
    }),
  );
  const after = cpuSample();
  const aeAfter = await aeTotals(nodes);
  const wall = (after.at - before.at) / 1000;
  const sorted = lat.subarray(0, n).sort();
  const nodeCpuSec = nodes.map((x) => after.procs.get(x.child.pid!)! - before.procs.get(x.child.pid!)!);
  let allNodes = 0;
  for (const [pid, s] of after.procs) allNodes += s - (before.procs.get(pid) ?? s);
  return {
    mode,
    round,
    ops: n,
    errors,
    firstError,
    rate: n / wall,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    nodeCpu: nodeCpuSec.map((x) => (100 * x) / wall),
    benchCpu: (100 * (after.self - before.self)) / wall,
    // Everything but this benchmark's processes (the idle cluster's nodes count as ours).
    otherCpu: (100 * (after.machine - before.machine - (after.self - before.self) - allNodes)) / wall,
    nodeUsPerPut: (nodeCpuSec.reduce((a, b) => a + b, 0) * 1e6) / n,
    exchanges: aeAfter.exchanges - aeBefore.exchanges,
    keysRepaired: aeAfter.keysRepaired - aeBefore.keysRepaired,
  };
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "-");
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function printPhase(r: PhaseResult): void {
  console.log(
    `  ${`${r.mode} ${r.round === 0 ? "warm" : `r${r.round}`}`.padEnd(8)} ${r.rate.toFixed(0).padStart(7)} ${f2(r.p50).padStart(7)} ${f2(r.p99).padStart(7)} ${f2(r.p999).padStart(8)} ${String(r.errors).padStart(6)}  ${r.nodeCpu
      .map((x) => x.toFixed(0))
      .join("/")
      .padEnd(
        12,
      )} ${r.benchCpu.toFixed(0).padStart(5)} ${r.otherCpu.toFixed(0).padStart(5)} ${r.nodeUsPerPut.toFixed(0).padStart(9)} ${String(r.exchanges).padStart(9)}${r.errors > 0 ? `   first error: ${r.firstError}` : ""}`,
  );
}

/** The write path with anti-entropy on and off, alternating (see the header). */
export async function writeCost(cfg: WriteCostConfig): Promise<void> {
  const flags = ["--durability", cfg.durability];
  console.log(
    `\nwrite path in real nodes: two 3-node clusters (N=3 R=2 W=2, durability ${cfg.durability}), --anti-entropy on (${cfg.intervalMs === undefined ? "default interval" : `--anti-entropy-interval ${cfg.intervalMs}`}, default rate) and off; lean load generator, ${cfg.clients} clients, ${cfg.valueBytes}-byte values, fresh keys; ${cfg.warmup} s warm-up each, then ${cfg.rounds} rounds of ${cfg.seconds} s each, alternating`,
  );
  const interval = cfg.intervalMs === undefined ? [] : ["--anti-entropy-interval", String(cfg.intervalMs)];
  const on = await startCluster("on", 3, [...flags, "--anti-entropy", "on", ...interval]);
  const off = await startCluster("off", 3, [...flags, "--anti-entropy", "off"]);
  const clusters = { on, off };
  console.log(
    `  on:  ${on.nodes.map((n) => `${n.id} pid ${n.child.pid}`).join(", ")}\n  off: ${off.nodes.map((n) => `${n.id} pid ${n.child.pid}`).join(", ")}`,
  );
  const value = valueBytesOf(cfg.valueBytes);
  const results: PhaseResult[] = [];
  try {
    console.log(
      "  phase      puts/s  p50 ms  p99 ms  p99.9 ms errors  node CPU %    bench other node us/put exchanges",
    );
    for (const mode of ["on", "off"] as const)
      printPhase(await putPhase(cfg, mode, 0, clusters[mode].nodes, cfg.warmup, value));
    for (let r = 1; r <= cfg.rounds; r++)
      for (const mode of r % 2 === 1 ? (["off", "on"] as const) : (["on", "off"] as const)) {
        const res = await putPhase(cfg, mode, r, clusters[mode].nodes, cfg.seconds, value);
        results.push(res);
        printPhase(res);
      }
  } finally {
    await Promise.all([...on.nodes, ...off.nodes].map((n) => stopNode(n.child)));
    for (const c of [on, off]) {
      fs.rmSync(c.root, { recursive: true, force: true });
      tempDirs.delete(c.root);
    }
  }
  const of = (mode: "on" | "off", f: (r: PhaseResult) => number) =>
    results.filter((r) => r.mode === mode).map(f);
  const m = (mode: "on" | "off", f: (r: PhaseResult) => number) => median(of(mode, f));
  const list = (mode: "on" | "off", f: (r: PhaseResult) => number) =>
    of(mode, f)
      .map((x) => x.toFixed(0))
      .join(", ");
  console.log(`  medians of ${cfg.rounds} rounds (each round's figures: puts/s; node CPU us per put):`);
  for (const mode of ["on", "off"] as const)
    console.log(
      `    ${mode.padEnd(3)} ${m(mode, (r) => r.rate).toFixed(0)} puts/s (${list(mode, (r) => r.rate)}), p99 ${f2(m(mode, (r) => r.p99))} ms, ${m(mode, (r) => r.nodeUsPerPut).toFixed(0)} us of node CPU per put (${list(mode, (r) => r.nodeUsPerPut)}), other processes ${m(mode, (r) => r.otherCpu).toFixed(0)}% of a core`,
    );
  const rate = m("on", (r) => r.rate) / m("off", (r) => r.rate);
  const cpu = m("on", (r) => r.nodeUsPerPut) / m("off", (r) => r.nodeUsPerPut);
  const ex = of("on", (r) => r.exchanges).reduce((a, b) => a + b, 0);
  const rep = of("on", (r) => r.keysRepaired).reduce((a, b) => a + b, 0);
  console.log(
    `  on / off: ${f2(rate)}x puts/s (${f1(100 * (rate - 1))}%), p99 ${f2(m("on", (r) => r.p99) / m("off", (r) => r.p99))}x, node CPU per put ${f2(cpu)}x (${f1(100 * (cpu - 1))}%; aim: under 5%)`,
  );
  console.log(
    `  the "on" nodes started ${ex} exchanges during the measured rounds and repaired ${rep} keys (writes in flight must not look like drift)`,
  );
}

// ------------------------------------------------------------------ repair: time to repair two replicas

interface ExchangeRow {
  peer: string;
  at: number;
  outcome: string;
  keysDiffering: number;
  keysRepaired: number;
  bytes: number;
  capped: boolean;
}

interface AeStatus {
  paused: boolean;
  exchanges: number;
  keysRepaired: number;
  lastExchanges: ExchangeRow[];
}

const aeOf = async (n: NodeProc) => (await getJson(n.api, "/status")).antiEntropy as AeStatus;

/** Pauses or resumes anti-entropy on every node. */
async function setPaused(nodes: readonly NodeProc[], paused: boolean): Promise<void> {
  for (const n of nodes) await post(n.api, `/cluster/anti-entropy?paused=${paused}`);
}

/** Puts `keys` through `putter` with `clients` workers; throws on the first failure. */
async function putAll(putter: Putter, keys: readonly string[], clients: number, value: Buffer, q = "") {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < keys.length) {
        const k = keys[next++]!;
        if (!(await putter.put(k, value, q))) throw new Error(`PUT ${k}${q} failed`);
      }
    }),
  );
}

interface RepairResult {
  readonly name: string;
  readonly differing: number;
  readonly seconds: number;
  readonly exchanges: number;
  readonly outcomes: string;
  readonly bytes: number;
  readonly keysDiffering: number;
  readonly keysRepaired: number;
  /** Exchanges not in /status's list any more (it keeps the last 16): their bytes are missing. */
  readonly unlisted: number;
}

/** Two replicas of cfg.keys keys, three drifts, the time each takes to repair (see the header). */
export async function repairTime(cfg: RepairConfig): Promise<void> {
  console.log(
    `\ntime to repair in real nodes: two replicas (2 nodes, N=2 R=2 W=2, hinted handoff off, durability ${cfg.durability}) of ${cfg.keys.toLocaleString("en-US")} keys (${cfg.valueBytes}-byte values); --anti-entropy-interval ${cfg.intervalMs} ms, --anti-entropy-rate 2000 (the default)`,
  );
  const flags = [
    "--n",
    "2",
    "--durability",
    cfg.durability,
    "--hinted-handoff",
    "off",
    "--anti-entropy-interval",
    String(cfg.intervalMs),
    "--gossip-interval",
    "100",
    "--down-after",
    "1000",
  ];
  const { nodes, root } = await startCluster("repair", 2, flags);
  const [n1, n2] = [nodes[0]!, nodes[1]!];
  const value = valueBytesOf(cfg.valueBytes);
  const out: RepairResult[] = [];
  try {
    await setPaused(nodes, true);
    const putter = await leanPutter(n1);
    const base = Array.from({ length: cfg.keys }, (_, i) => `k${String(i).padStart(9, "0")}`);
    const t0 = performance.now();
    await putAll(putter, base, cfg.clients, value);
    putter.close();
    console.log(
      `  ${cfg.keys.toLocaleString("en-US")} keys written to both (w=2) in ${f1((performance.now() - t0) / 1000)} s`,
    );
    const drifts: [string, () => string[]][] = [
      ["identical", () => []],
      ["one key differs", () => [base[Math.floor(cfg.keys / 2)]!]],
      [
        "1% of keys differ",
        () => {
          const k = Math.max(1, Math.round(cfg.keys / 100));
          // Half existing keys (spread over the key range) written again, half new keys.
          const updates = Array.from({ length: Math.ceil(k / 2) }, (_, i) => base[(i * 199 + 7) % cfg.keys]!);
          const fresh = Array.from(
            { length: k - updates.length },
            (_, i) => `new${String(i).padStart(9, "0")}`,
          );
          return [...updates, ...fresh];
        },
      ],
    ];
    for (const [name, make] of drifts) {
      const keys = [...new Set(make())];
      if (keys.length > 0) {
        // n2 away (seen down by n1, so nothing is sent to it), the writes on n1 alone, n2 back.
        process.kill(n2.child.pid!, "SIGSTOP");
        try {
          await until("n1 to see n2 down", () => sees(n1.api, ["n2"], "down"), 30_000);
          const only = await leanPutter(n1, new Set(["n2"]));
          await putAll(only, keys, cfg.clients, valueBytesOf(cfg.valueBytes + 1), "?w=1");
          only.close();
        } finally {
          process.kill(n2.child.pid!, "SIGCONT");
        }
        await until(
          "each node to see the other up",
          async () => (await sees(n1.api, ["n2"], "up")) && (await sees(n2.api, ["n1"], "up")),
          30_000,
        );
      }
      const before = await Promise.all(nodes.map(aeOf));
      const start = Date.now();
      const t1 = performance.now();
      await setPaused(nodes, false);
      let last: AeStatus[] = before;
      await until(
        `${name}: each node to find the other in sync`,
        async () => {
          last = await Promise.all(nodes.map(aeOf));
          const repaired = last.reduce((a, s, i) => a + s.keysRepaired - before[i]!.keysRepaired, 0);
          const synced = last.every((s) => {
            const mine = s.lastExchanges.filter((x) => x.at >= start);
            return mine.length > 0 && mine[mine.length - 1]!.outcome === "in_sync";
          });
          return synced && repaired >= keys.length;
        },
        600_000,
      );
      const seconds = (performance.now() - t1) / 1000;
      await setPaused(nodes, true);
      const rows = last.flatMap((s) => s.lastExchanges.filter((x) => x.at >= start));
      const exchanges = last.reduce((a, s, i) => a + s.exchanges - before[i]!.exchanges, 0);
      const outcomes = new Map<string, number>();
      for (const r of rows) outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
      out.push({
        name,
        differing: keys.length,
        seconds,
        exchanges,
        outcomes: [...outcomes].map(([o, k]) => `${k} ${o}`).join(", "),
        bytes: rows.reduce((a, r) => a + r.bytes, 0),
        keysDiffering: rows.reduce((a, r) => a + r.keysDiffering, 0),
        keysRepaired: last.reduce((a, s, i) => a + s.keysRepaired - before[i]!.keysRepaired, 0),
        unlisted: exchanges - rows.length,
      });
      const r = out[out.length - 1]!;
      console.log(
        `  ${r.name.padEnd(18)} ${String(r.differing).padStart(6)} differing: in sync after ${f2(r.seconds)} s; ${r.exchanges} exchanges (${r.outcomes}), ${r.bytes.toLocaleString("en-US")} bytes exchanged${r.unlisted > 0 ? ` (${r.unlisted} exchanges no longer listed: not counted)` : ""}, ${r.keysDiffering} keys found differing, ${r.keysRepaired} repaired`,
      );
    }
  } finally {
    await Promise.all(nodes.map((n) => stopNode(n.child)));
    fs.rmSync(root, { recursive: true, force: true });
    tempDirs.delete(root);
  }
}

/** Where the temp dirs live, for the machine facts. */
export function dataDirMount(): string {
  try {
    const dir = fs.realpathSync(os.tmpdir());
    let best = "";
    let mount = "unknown";
    for (const line of fs.readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [dev, mnt, type] = line.split(" ");
      if (dev === undefined || mnt === undefined || type === undefined) continue;
      const prefix = mnt.endsWith("/") ? mnt : `${mnt}/`;
      if ((dir === mnt || dir.startsWith(prefix)) && mnt.length >= best.length) {
        best = mnt;
        mount = `${dev} on ${mnt} (${type})`;
      }
    }
    return `${os.tmpdir()}: ${mount}`;
  } catch {
    return `${os.tmpdir()}: unknown`;
  }
}
