/**
 * Anti-entropy benchmark. Three parts (--parts, default all):
 *   core     this file: two replicas in one process exchange over their trees (src/anti-entropy), and the
 *            cost of keeping a tree on the write path, in CPU per write;
 *   writes   real nodes (bench/antientropy-nodes.ts): puts/s, p99 and CPU per put of a 3-node cluster with
 *            --anti-entropy on and off, alternating, in the same run;
 *   repair   real nodes (bench/antientropy-nodes.ts): two replicas of --keys keys, identical, one key and 1%
 *            of the keys differing: the time until they are in sync again, and the bytes exchanged.
 *
 *   npm run bench:antientropy                          # npm run build && node --expose-gc --import tsx bench/antientropy.ts
 *   node --expose-gc --import tsx bench/antientropy.ts --keys 20000 --rounds 5 --parts core   # after npm run build
 *   node --expose-gc --import tsx bench/antientropy.ts --help                                 # every flag
 *
 * The core part:
 *
 * The code measured runs from dist/ (as the nodes do; bench:costs explains why: under tsx every closure
 * pays for esbuild's keepNames).
 *
 * Setup. Replica A (actor node-a.1) and replica B (node-b.1), each a Replica on a MemoryEngine, hold the
 * same --keys keys (12-byte keys, 100-byte values: A coordinated each write, B merged A's sets), on a ring
 * of --partitions partitions, all held by both. Each builds its trees with a rebuild (runRebuild, pages of
 * 1,000 keys, setImmediate between pages): its time is printed. Writes made afterwards go through the
 * TreeSet's hook (writeBegins before the write, writeEnds after), as the integration will do.
 *
 * Scenarios, each from identical replicas: identical; one key differs (A holds a newer version); 1% of the
 * keys differ (a third newer on A, a third newer on B, a third written on A only). For each, exchanges
 * (driveExchange with the default limits: 1,024 segments, 10,000 keys, 1 MiB) run until one finds the
 * replicas in sync, each followed by the repair of the keys it found (each side merges the other's set;
 * hooks included). Printed:
 *   exchanges    how many, until the one that found them in sync (included)
 *   found        keys found differing (must equal the keys that differ)
 *   trips        the exchanges' round trips with the peer
 *   ex bytes     every exchange message both ways, as the exchange counts them (ExchangeResult.bytes, what a
 *                node's /status shows): each body's MessagePack size as the peer transport writes it
 *                (messages.ts wireBytes, checked against msgpackr by the tests) plus the frame envelope at
 *                its largest (kind, an id up to 2^32, a deadline up to an hour, 4-byte length prefix)
 *   on the wire  the same messages encoded by the transport's own encodeFrame with a node's id and deadline,
 *                plus the length prefix (the difference per round trip is printed)
 *   repair bytes per differing key, a `read` of the peer's set and a `store` of the merged set, with
 *                their answers, framed by the transport's own encodeFrame + framing (4-byte prefix)
 *   find cpu     CPU time (process.cpuUsage, this process: both sides' work) of the exchanges: tree
 *                levels, both sides' scans of their 100,000 sets for the keys of the chosen segments, the
 *                comparison. The pause between the two looks is a timer in a node (skipped here, not timed)
 *   repair cpu   CPU time of the repairs (reads and merges on both sides, with the tree hooks), and their
 *                wall time (repair wall). A node paces repairs (--anti-entropy-rate) and pauses between
 *                the looks: its time to repair is measured by the node parts (bench/antientropy-nodes.ts)
 *
 * Write path. Replica.version (the coordinator's own write, durable on the MemoryEngine) of existing keys,
 * each write superseding the key's set, alternately without and with the tree hook (two state hashes, the
 * partition and segment hashes, one segment updated), --rounds rounds of --writes writes each, same
 * replica, same keys, in the same run: CPU ns per write (best round, and median), writes/s per core, and
 * the difference. On a shared machine the difference between two loops of ~8 us writes is noisier than
 * the hook itself, so the hook is also timed inside the write loop (where it pays the cache misses the
 * rest of the write causes, as in a node), and that figure is the one compared with the aim (under 5%
 * of a write). Also the hook alone with hot caches, a state hash and a bare segment update.
 *
 * All data comes from a seeded generator; only times vary between runs.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { ExchangeResult } from "../src/anti-entropy/exchange.js";
import type { TreeSet as TreeSetType } from "../src/anti-entropy/tree-set.js";
import type { Replica as ReplicaType } from "../src/replication/replica.js";
import type { StoredSibling, StoredValue } from "../src/versioning/object-codec.js";
import { BIN, dataDirMount, repairTime, stopAllNodes, writeCost } from "./antientropy-nodes.js";

const SELF = fileURLToPath(import.meta.url);
const DIST = path.resolve(path.dirname(SELF), "../dist");
if (!fs.existsSync(path.join(DIST, "anti-entropy/exchange.js")))
  throw new Error(`${DIST} lacks anti-entropy: run \`npm run build\` first (npm run bench:antientropy does)`);
const load = <T>(rel: string): Promise<T> => import(pathToFileURL(path.join(DIST, rel)).href) as Promise<T>;
const { answerKeysRequest, driveExchange } =
  await load<typeof import("../src/anti-entropy/driver.js")>("anti-entropy/driver.js");
const { Exchange } = await load<typeof import("../src/anti-entropy/exchange.js")>("anti-entropy/exchange.js");
const { keyStateHash } =
  await load<typeof import("../src/anti-entropy/key-state.js")>("anti-entropy/key-state.js");
const { runRebuild } = await load<typeof import("../src/anti-entropy/rebuild.js")>("anti-entropy/rebuild.js");
const { answerTreeRequest } =
  await load<typeof import("../src/anti-entropy/responder.js")>("anti-entropy/responder.js");
const { PartitionTree, TREE_RECORD_BYTES } =
  await load<typeof import("../src/anti-entropy/tree.js")>("anti-entropy/tree.js");
const { TreeSet } = await load<typeof import("../src/anti-entropy/tree-set.js")>("anti-entropy/tree-set.js");
const { Replica } = await load<typeof import("../src/replication/replica.js")>("replication/replica.js");
const { partitionOf } = await load<typeof import("../src/ring/ring.js")>("ring/ring.js");
const { seededRandom } = await load<typeof import("../src/runtime/runtime.js")>("runtime/runtime.js");
const { MemoryEngine } =
  await load<typeof import("../src/storage/memory-engine.js")>("storage/memory-engine.js");
const { encodeFrame } = await load<typeof import("../src/transport/messages.js")>("transport/messages.js");
const { contextOf, EMPTY_VECTOR } =
  await load<typeof import("../src/versioning/dvv.js")>("versioning/dvv.js");
const { encodeSiblings } = await load<typeof import("../src/versioning/object-codec.js")>(
  "versioning/object-codec.js",
);

const PARTS = ["core", "writes", "repair"] as const;
type Part = (typeof PARTS)[number];

const HELP = `usage: node --expose-gc --import tsx bench/antientropy.ts [flags]   (after npm run build)
  --parts LIST      comma list of ${PARTS.join(",")} (default all)
  --keys N          keys per replica, core and repair parts (default 100000)
core:
  --partitions Q    ring partitions, all held by both replicas (default 1024)
  --writes N        writes per round of the write-path measure (default 20000)
  --rounds R        rounds per mode of the write-path measure (default 10)
  --seed S          seed of the data (default 1)
writes and repair (real nodes, dist/cli/main.js):
  --seconds S       measured seconds per phase of the writes part (default 10)
  --warmup S        warm-up seconds per cluster, not counted (default 20: the nodes' JIT warms up)
  --node-rounds K   measured phases per cluster, alternating (default 3)
  --clients C       concurrent clients (default 32)
  --value-bytes B   value size (default 100)
  --durability M    the nodes' --durability: fsync (default), interval or none
  --write-interval MS   the writes part's "on" nodes' --anti-entropy-interval (default: the node's, 30000)
  (RINGSTORE_NODE_FLAGS="--cpu-prof --cpu-prof-dir=D" gives node's own flags to every node started)
  --quiet-wait S    before each phase of the writes part, wait up to S seconds for other processes to
                    leave the CPU idle (under 25% of a core for 2 s; default 0: do not wait)
  --repair-interval MS  the repair part's --anti-entropy-interval (default 1000)`;

const collect = (globalThis as { gc?: () => void }).gc ?? (() => {});
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const immediate = () => new Promise<void>((r) => setImmediate(r));
const PAGING = { pageKeys: 1000, pageBytes: 1 << 20, yieldNow: immediate } as const;
const fmt = (x: number, d = 0) =>
  x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Side {
  readonly name: string;
  readonly replica: ReplicaType;
  readonly trees: TreeSetType;
}

function value(random: { next(): number }, tag: number): StoredValue {
  const data = Buffer.allocUnsafe(100);
  for (let i = 0; i < 100; i += 4) data.writeUInt32LE((random.next() * 0x1_0000_0000) >>> 0, i);
  data.writeUInt32LE(tag >>> 0, 0);
  return { data, contentType: "application/octet-stream", deleted: false, writtenAtMs: 1_700_000_000_000 };
}

const keyOf = (i: number) => Buffer.from(`k${String(i).padStart(11, "0")}`);

/** A write through the hook, as the integration will make it (old set, write, hook around the store). */
async function writeHooked(s: Side, key: Uint8Array, v: StoredValue): Promise<void> {
  const old = await s.replica.read(key);
  const r = await s.replica.coordinate(key, contextOf(old), v);
  if (r.kind !== "ok") throw new Error(`write refused: ${r.kind}`);
  s.trees.writeEnds(s.trees.writeBegins(key, old, r.set), true);
}

async function mergeHooked(s: Side, key: Uint8Array, incoming: readonly StoredSibling[]): Promise<void> {
  const old = await s.replica.read(key);
  const { set, changed } = await s.replica.mergeChanged(key, incoming);
  if (changed) s.trees.writeEnds(s.trees.writeBegins(key, old, set), true);
}

async function setup(
  keys: number,
  q: number,
  seed: number,
): Promise<{ a: Side; b: Side; rebuildMs: number[] }> {
  const random = seededRandom(seed);
  const pof = (k: Uint8Array) => partitionOf(k, q);
  const a: Side = {
    name: "A",
    replica: new Replica(new MemoryEngine(), "node-a.1", 64),
    trees: new TreeSet(pof),
  };
  const b: Side = {
    name: "B",
    replica: new Replica(new MemoryEngine(), "node-b.1", 64),
    trees: new TreeSet(pof),
  };
  for (let i = 0; i < keys; i++) {
    const k = keyOf(i);
    const r = await a.replica.coordinate(k, EMPTY_VECTOR, value(random, i));
    if (r.kind !== "ok") throw new Error("setup write refused");
    await b.replica.merge(k, r.set);
  }
  const rebuildMs: number[] = [];
  for (const s of [a, b]) {
    collect();
    const t0 = performance.now();
    const report = await runRebuild(
      s.trees.startRebuild(Array.from({ length: q }, (_, i) => i)),
      s.replica,
      PAGING,
    );
    rebuildMs.push(performance.now() - t0);
    if (report.outcome !== "done" || report.keys !== keys)
      throw new Error(`rebuild of ${s.name}: ${JSON.stringify(report)}`);
  }
  for (let p = 0; p < q; p++)
    if (!a.trees.tree(p)!.equals(b.trees.tree(p)!))
      throw new Error(`partition ${p}: the replicas' trees differ after setup`);
  return { a, b, rebuildMs };
}

/**
 * A request's id and deadline as a node's transport writes them: ids count up per connection (one past
 * 65,535 takes the 5-byte form, as on any connection that has carried a few minutes of traffic), and an
 * anti-entropy request's deadline is 4 x --timeout (20,000 ms by default; node-core.ts).
 */
const WIRE_ID = 1_000_000;
const AE_DEADLINE_MS = 20_000;

/** The frame bytes of a request and its answer, as the transport writes them (4-byte prefix included). */
function framed(body: unknown, answer: unknown, deadlineMs = 5000): number {
  type F = Parameters<typeof encodeFrame>[0];
  const req = encodeFrame({ kind: "req", id: WIRE_ID, deadlineMs, body } as F).length + 4;
  const ans = encodeFrame({ kind: "ans", id: WIRE_ID, body: answer } as F).length + 4;
  return req + ans;
}

interface ScenarioResult {
  readonly name: string;
  readonly differing: number;
  readonly exchanges: number;
  readonly found: number;
  readonly exchangeBytes: number;
  /** The same messages framed by the transport's own encoder (framed), for comparison. */
  readonly wireBytes: number;
  readonly roundTrips: number;
  readonly repairBytes: number;
  readonly findCpuMs: number;
  readonly findWallMs: number;
  readonly repairCpuMs: number;
  readonly repairWallMs: number;
  readonly last: ExchangeResult;
}

async function scenario(
  name: string,
  a: Side,
  b: Side,
  q: number,
  drift: () => Promise<Set<string>>,
): Promise<ScenarioResult> {
  const differing = await drift();
  const partitions = Array.from({ length: q }, (_, i) => i);
  const pof = a.trees.partitionOf;
  let exchanges = 0;
  let exchangeBytes = 0;
  let wire = 0;
  let roundTrips = 0;
  let repairBytes = 0;
  let findCpu = 0;
  let findWall = 0;
  let repairCpu = 0;
  let repairWall = 0;
  const found = new Set<string>();
  let resumeFrom: number | undefined;
  for (;;) {
    collect();
    const c0 = cpuUs();
    const t0 = performance.now();
    const result = await driveExchange(new Exchange({ partitions, partitionOf: pof, resumeFrom }), {
      trees: a.trees,
      data: a.replica,
      paging: PAGING,
      askTrees: async (r) => {
        const answer = answerTreeRequest(b.trees, r);
        wire += framed(r, answer, AE_DEADLINE_MS);
        return answer;
      },
      askKeys: async (r) => {
        const answer = await answerKeysRequest(r, b.replica, pof, PAGING);
        wire += framed(r, answer, AE_DEADLINE_MS);
        return answer;
      },
      pause: async () => {},
    });
    findCpu += cpuUs() - c0;
    findWall += performance.now() - t0;
    exchanges++;
    exchangeBytes += result.bytes;
    roundTrips += result.roundTrips;
    if (result.outcome === "failed") throw new Error(`exchange failed: ${result.failure}`);
    resumeFrom = result.resumeFrom ?? resumeFrom;
    const c1 = cpuUs();
    const t1 = performance.now();
    for (const d of result.keys) {
      found.add(Buffer.from(d.key).toString());
      const theirs = await b.replica.read(d.key);
      const theirBytes = theirs.length === 0 ? null : encodeSiblings(theirs);
      repairBytes += framed({ kind: "read", key: d.key }, { kind: "read", set: theirBytes });
      await mergeHooked(a, d.key, theirs);
      const merged = await a.replica.read(d.key);
      repairBytes += framed({ kind: "store", key: d.key, set: encodeSiblings(merged) }, { kind: "stored" });
      await mergeHooked(b, d.key, merged);
    }
    repairCpu += cpuUs() - c1;
    repairWall += performance.now() - t1;
    if (result.outcome === "in_sync") {
      const missed = [...differing].filter((k) => !found.has(k));
      const extra = [...found].filter((k) => !differing.has(k));
      if (missed.length > 0 || extra.length > 0)
        throw new Error(
          `${name}: ${missed.length} differing keys not found, ${extra.length} found that did not differ`,
        );
      return {
        name,
        differing: differing.size,
        exchanges,
        found: found.size,
        exchangeBytes,
        wireBytes: wire,
        roundTrips,
        repairBytes,
        findCpuMs: findCpu / 1000,
        findWallMs: findWall,
        repairCpuMs: repairCpu / 1000,
        repairWallMs: repairWall,
        last: result,
      };
    }
    if (exchanges > 1000) throw new Error(`${name}: not in sync after 1000 exchanges`);
  }
}

// ------------------------------------------------------------------ the write path

async function writePath(q: number, writes: number, rounds: number, seed: number) {
  const random = seededRandom(seed + 1);
  const pof = (k: Uint8Array) => partitionOf(k, q);
  const trees = new TreeSet(pof);
  for (let p = 0; p < q; p++) trees.adopt(new PartitionTree(p));
  const replica = new Replica(new MemoryEngine(), "node-a.1", 64);
  const keys = Array.from({ length: writes }, (_, i) => keyOf(i));
  const sets: StoredSibling[][] = [];
  const values = Array.from({ length: 64 }, (_, i) => value(random, i));
  for (let i = 0; i < writes; i++) {
    const r = await replica.coordinate(keys[i]!, EMPTY_VECTOR, values[i % 64]!);
    if (r.kind !== "ok") throw new Error("write refused");
    sets.push(r.set);
    trees.writeEnds(trees.writeBegins(keys[i]!, [], r.set), true);
  }
  /**
   * CPU ns per write of one round (CPU, not wall time: the machine may be shared); `timed`, the hook's own
   * time inside the loop instead (clock reads around it, less the clock's own cost), where it pays the
   * cache misses the write's other work causes, as it will in a node.
   */
  const round = async (hooked: boolean, timed = false): Promise<{ write: number; hook: number }> => {
    collect();
    let inHook = 0;
    let clock = 0;
    const c0 = cpuUs();
    for (let i = 0; i < writes; i++) {
      const key = keys[i]!;
      const old = sets[i]!;
      const r = await replica.version(key, contextOf(old), values[i % 64]!);
      if (r.kind !== "ok") throw new Error("write refused");
      // The integration calls writeBegins right before the engine write and writeEnds once it settles;
      // here both around the same point (the cost is the same).
      if (hooked && !timed) trees.writeEnds(trees.writeBegins(key, old, r.set), true);
      else if (hooked) {
        const t0 = performance.now();
        trees.writeEnds(trees.writeBegins(key, old, r.set), true);
        const t1 = performance.now();
        inHook += t1 - t0;
        clock += performance.now() - t1;
      }
      await r.durable;
      sets[i] = r.set;
    }
    return { write: ((cpuUs() - c0) * 1e3) / writes, hook: ((inHook - clock) * 1e6) / writes };
  };
  // Warm-up, then alternate.
  await round(false);
  await round(true);
  const off: number[] = [];
  const on: number[] = [];
  const inSitu: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const hooked of r % 2 === 0 ? [false, true] : [true, false])
      (hooked ? on : off).push((await round(hooked)).write);
    inSitu.push((await round(true, true)).hook);
  }
  // The hook alone and its parts, on the same sets.
  const loop = (fn: (i: number) => void): number => {
    let best = Number.POSITIVE_INFINITY;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < writes; i++) fn(i);
      best = Math.min(best, ((performance.now() - t0) * 1e6) / writes);
    }
    return best;
  };
  const prev = sets.map((s) => s.map((x) => ({ ...x, dot: { ...x.dot, counter: x.dot.counter - 1 } })));
  let sink = 0;
  const hookNs =
    loop((i) => {
      const w = trees.writeBegins(keys[i]!, prev[i]!, sets[i]!);
      trees.writeEnds(w, true);
      const back = trees.writeBegins(keys[i]!, sets[i]!, prev[i]!);
      trees.writeEnds(back, true);
    }) / 2;
  const stateHashNs = loop((i) => {
    sink ^= keyStateHash(keys[i]!, sets[i]!);
  });
  const tree = new PartitionTree(0);
  const updateNs = loop((i) => tree.updateSegment(i & 1023, i, i + 1));
  if (sink === -1) throw new Error("unreachable: a state hash is a u32");
  return { off, on, inSitu, hookNs, stateHashNs, updateNs };
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      parts: { type: "string", default: PARTS.join(",") },
      keys: { type: "string", default: "100000" },
      partitions: { type: "string", default: "1024" },
      writes: { type: "string", default: "20000" },
      rounds: { type: "string", default: "10" },
      seed: { type: "string", default: "1" },
      seconds: { type: "string", default: "10" },
      warmup: { type: "string", default: "20" },
      "node-rounds": { type: "string", default: "3" },
      clients: { type: "string", default: "32" },
      "value-bytes": { type: "string", default: "100" },
      durability: { type: "string", default: "fsync" },
      "repair-interval": { type: "string", default: "1000" },
      "write-interval": { type: "string" },
      "quiet-wait": { type: "string", default: "0" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const parts = values.parts.split(",").map((x) => x.trim());
  for (const x of parts)
    if (!PARTS.includes(x as Part)) throw new Error(`--parts: unknown "${x}" (${PARTS.join(",")})`);
  const keys = Number(values.keys);
  const q = Number(values.partitions);
  const writes = Number(values.writes);
  const rounds = Number(values.rounds);
  const seed = Number(values.seed);
  const seconds = Number(values.seconds);
  const warmup = Number(values.warmup);
  const quietWait = Number(values["quiet-wait"]);
  const nodeRounds = Number(values["node-rounds"]);
  const clients = Number(values.clients);
  const valueBytes = Number(values["value-bytes"]);
  const repairInterval = Number(values["repair-interval"]);
  const writeInterval = values["write-interval"] === undefined ? undefined : Number(values["write-interval"]);
  for (const [n, v] of Object.entries({
    keys,
    partitions: q,
    writes,
    rounds,
    "node-rounds": nodeRounds,
    clients,
    "value-bytes": valueBytes,
    "repair-interval": repairInterval,
    "write-interval": writeInterval ?? 1,
  }))
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${n} must be a positive integer`);
  for (const [n, v] of Object.entries({ seconds, warmup, "quiet-wait": quietWait }))
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${n} must be a number >= 0`);
  if (!["fsync", "interval", "none"].includes(values.durability))
    throw new Error(`--durability must be fsync, interval or none, not ${values.durability}`);

  const cpus = os.cpus();
  console.log("ringstore anti-entropy benchmark");
  console.log("machine");
  console.log(
    `  cpu        ${cpus[0]?.model.trim() ?? "unknown"}, ${cpus.length} cores (shared by the nodes and the load generator)`,
  );
  console.log(
    `  memory     ${fmt(os.totalmem() / 2 ** 30, 1)} GiB, load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  );
  console.log(
    `  os         ${os.platform()} ${os.release()} ${os.arch()}, node ${process.version}, V8 ${process.versions.v8}`,
  );
  console.log(`  code       ${DIST} (the core part loads it; the nodes run ${BIN})`);
  console.log(`  data dirs  ${dataDirMount()}`);
  console.log(
    `  gc between runs: ${(globalThis as { gc?: unknown }).gc !== undefined ? "yes" : "no (--expose-gc)"}`,
  );
  if (parts.includes("core")) await core(keys, q, writes, rounds, seed);
  if (parts.includes("writes"))
    await writeCost({
      seconds,
      warmup,
      rounds: nodeRounds,
      clients,
      valueBytes,
      durability: values.durability,
      intervalMs: writeInterval,
      quietWait,
    });
  if (parts.includes("repair"))
    await repairTime({
      keys,
      clients,
      valueBytes,
      durability: values.durability,
      intervalMs: repairInterval,
    });
}

/** The core part: two replicas in one process (see the header). */
async function core(keys: number, q: number, writes: number, rounds: number, seed: number): Promise<void> {
  console.log("\ncore: two replicas in one process; code from dist/");
  console.log(
    `data: ${fmt(keys)} keys of 12 bytes, 100-byte values, ${q} partitions (all held by both), seed ${seed}; ` +
      `trees ${fmt((q * TREE_RECORD_BYTES) / 2 ** 20, 1)} MiB per replica saved`,
  );

  const { a, b, rebuildMs } = await setup(keys, q, seed);
  console.log(
    `\nrebuild of every tree from the data (runRebuild, pages of 1,000 keys): A ${fmt(rebuildMs[0]!)} ms, B ${fmt(rebuildMs[1]!)} ms ` +
      `(${fmt((keys / rebuildMs[0]!) * 1000)} keys/s)`,
  );

  const random = seededRandom(seed + 2);
  let tag = 1_000_000;
  const results: ScenarioResult[] = [];
  results.push(await scenario("identical", a, b, q, async () => new Set()));
  results.push(
    await scenario("one key differs", a, b, q, async () => {
      const k = keyOf(Math.floor(random.next() * keys));
      await writeHooked(a, k, value(random, tag++));
      return new Set([k.toString()]);
    }),
  );
  results.push(
    await scenario("1% of keys differ", a, b, q, async () => {
      const n = Math.max(1, Math.round(keys / 100));
      const picked = new Set<number>();
      while (picked.size < n) picked.add(Math.floor(random.next() * keys));
      const out = new Set<string>();
      let i = 0;
      for (const p of picked) {
        const third = i++ % 3;
        if (third === 2) {
          // A key written on A only (a lost hint).
          const k = keyOf(keys + p);
          await writeHooked(a, k, value(random, tag++));
          out.add(k.toString());
        } else {
          const k = keyOf(p);
          await writeHooked(third === 0 ? a : b, k, value(random, tag++));
          out.add(k.toString());
        }
      }
      return out;
    }),
  );

  console.log(
    "\nexchanges until in sync (limits: 1,024 segments, 10,000 keys, 1 MiB per exchange; repair after each)",
  );
  const header = [
    "scenario",
    "differ",
    "exchanges",
    "trips",
    "found",
    "ex bytes",
    "on the wire",
    "bytes/key",
    "repair bytes",
    "find cpu ms",
    "find wall ms",
    "repair cpu ms",
    "repair wall ms",
  ];
  const rows = results.map((r) => [
    r.name,
    fmt(r.differing),
    fmt(r.exchanges),
    fmt(r.roundTrips),
    fmt(r.found),
    fmt(r.exchangeBytes),
    fmt(r.wireBytes),
    r.found === 0 ? "-" : fmt(r.exchangeBytes / r.found),
    fmt(r.repairBytes),
    fmt(r.findCpuMs, 1),
    fmt(r.findWallMs, 1),
    fmt(r.repairCpuMs, 1),
    fmt(r.repairWallMs, 1),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")}`;
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  for (const r of results) {
    if (r.differing === 0) continue;
    console.log(
      `  ${r.name}: the last exchange ${r.last.outcome}, ${r.last.roundTrips} round trip(s), ${fmt(r.last.bytes)} bytes`,
    );
  }
  const over = results.map((r) => (r.exchangeBytes - r.wireBytes) / r.roundTrips);
  console.log(
    `  ex bytes (the exchange's own count, exchange.ts: wireBytes of each body plus the largest frame envelope) against the\n` +
      `  same messages framed by the transport's encoder (id ${fmt(WIRE_ID)}, deadline ${fmt(AE_DEADLINE_MS)} ms): ` +
      `${over.map((x) => fmt(x, 1)).join(" / ")} bytes more per round trip`,
  );

  const w = await writePath(q, writes, rounds, seed);
  // The least CPU per write of the rounds: interference (other processes, their cache traffic) only adds.
  const off = Math.min(...w.off);
  const on = Math.min(...w.on);
  const hook = median(w.inSitu);
  console.log(
    `\nwrite path: Replica.version on a MemoryEngine, ${fmt(writes)} existing keys, ${rounds} rounds per mode, alternating; CPU ns per write, best round (median)`,
  );
  console.log(`  without tree  ${fmt(off)} ns  (${fmt(median(w.off))}), ${fmt(1e9 / off)} writes/s per core`);
  console.log(`  with tree     ${fmt(on)} ns  (${fmt(median(w.on))}), ${fmt(1e9 / on)} writes/s per core`);
  console.log(
    `  difference    ${fmt(on - off)} ns, ${fmt((100 * (on - off)) / off, 1)}% (medians: ${fmt(median(w.on) - median(w.off))} ns, ${fmt((100 * (median(w.on) - median(w.off))) / median(w.off), 1)}%)`,
  );
  console.log(
    `  the hook timed inside the write loop: ${fmt(hook)} ns per write (median of rounds; ${w.inSitu.map((x) => fmt(x)).join(" ")}), ` +
      `${fmt((100 * hook) / off, 1)}% of the best write without it (aim: under 5%)`,
  );
  console.log(
    `  the hook alone, hot caches: ${fmt(w.hookNs)} ns (a key state hash ${fmt(w.stateHashNs)} ns, two per write; a bare segment update ${fmt(w.updateNs, 1)} ns)`,
  );
}

await main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => stopAllNodes());
