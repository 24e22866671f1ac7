/**
 * bench:gossip: what gossip costs and how fast it spreads news, protocol 9 (the whole view and ring in
 * every exchange) beside protocol 10 (digests and deltas, membership/gossip-driver.ts) in the same run.
 * The real Membership and GossipDriver on the simulated network (src/sim/sim-network.ts) and one virtual
 * clock, for clusters of 10, 100 and 1000 nodes.
 *
 *   node --import tsx bench/gossip.ts [--sizes 10,100,1000] [--trials K] [--seed N] [--codec]
 *                                     [--partitions Q] [--protocols 9,10]
 *
 * Per size and protocol, an established cluster (every node knows every other as up, one ring claimed
 * over all of them, gossip started at random phases, a few rounds of warm-up), then three phases:
 *   1. steady state: STEADY_ROUNDS rounds with no change;
 *   2. a join: a new node asks a random member to admit it; the phase lasts until every node (the joiner
 *      too) knows the new member and holds a ring that includes it, and at least JOIN_WINDOW_ROUNDS
 *      rounds (the traffic the join causes goes on after it is known: the joiner turns up, views settle);
 *   3. a failure: a random member (not the claimant) crashes; the phase lasts until every live node
 *      reports it down.
 * Figures per phase:
 * - bytes per node per second: every gossip request and answer encoded as over TCP (MessagePack, the
 *   frame header included, TLS not), summed, divided by the nodes and the phase's virtual seconds. Each
 *   byte is sent by one node and received by another: this is what a node sends, and about what it
 *   receives. Messages are encoded for their size only (one in `sample`, scaled up, at the end of the
 *   phase) and that CPU is not counted below;
 * - CPU per node per round: the process's CPU time over the phase divided by the node-rounds in it (the
 *   simulator runs every node's work on one core); frames are passed by reference unless --codec (then
 *   every message is encoded and validated as over TCP: more CPU, the same virtual timeline);
 * - rounds until known everywhere (join and failure): virtual time / gossip interval, next to
 *   log_fanout(n), the rounds push gossip with this fanout needs to reach n nodes. Split for the join
 *   into the claim and the spread of the claimed ring, and for the failure into downAfterMs and the rest.
 * Each size runs several trials (9 up to 10 nodes, 5 up to 100, else 1; --trials K for all sizes) with
 * seeds derived from the run's seed; each figure is the median, with the range over trials for rounds.
 *
 * Defaults are those of a node (src/node/config.ts): gossip every 500 ms, down after 5000 ms, Q = 1024,
 * N = 3, fanout 3; links 1-5 ms. SIM_SEED or --seed replays.
 */
import * as os from "node:os";
import { parseArgs } from "node:util";
import { GossipDriver } from "../src/membership/gossip-driver.js";
import { Membership } from "../src/membership/membership.js";
import { NODE_DEFAULTS } from "../src/node/config.js";
import {
  derivedRandom,
  deriveSeed,
  type TimerGroup,
  VirtualScheduler,
} from "../src/runtime/virtual-runtime.js";
import { SimNetwork, type SimTransport } from "../src/sim/sim-network.js";
import {
  type AnswerBody,
  encodeFrame,
  type MemberView,
  type RequestBody,
  type RingView,
} from "../src/transport/messages.js";
import type { Transport } from "../src/transport/transport.js";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "10,100,1000" },
    trials: { type: "string" },
    seed: { type: "string", default: process.env.SIM_SEED ?? "20250" },
    codec: { type: "boolean", default: false },
    partitions: { type: "string", default: String(NODE_DEFAULTS.partitions) },
    protocols: { type: "string", default: "9,10" },
  },
});
const SIZES = values.sizes.split(",").map((s) => Number(s));
const TRIALS = values.trials === undefined ? undefined : Number(values.trials);
const trialsFor = (n: number): number => TRIALS ?? (n <= 10 ? 9 : n <= 100 ? 5 : 1);
const SEED = Number(values.seed);
const Q = Number(values.partitions);
const PROTOCOLS = values.protocols.split(",").map((s) => Number(s));
for (const n of SIZES)
  if (!(Number.isInteger(n) && n >= 2 && n <= 9998)) throw new Error(`--sizes: ${n} is not in 2..9998`);
if (TRIALS !== undefined && !(Number.isInteger(TRIALS) && TRIALS >= 1))
  throw new Error(`--trials must be an integer >= 1, got ${values.trials}`);
if (!Number.isInteger(SEED)) throw new Error(`--seed must be an integer, got ${values.seed}`);
for (const p of PROTOCOLS) if (p !== 9 && p !== 10) throw new Error(`--protocols: ${p} is not 9 or 10`);

const INTERVAL_MS = NODE_DEFAULTS.gossipIntervalMs;
const DOWN_AFTER_MS = NODE_DEFAULTS.downAfterMs;
// As node-core.ts derives them from the interval.
const SUSPECT_FOR_MS = Math.max(INTERVAL_MS * 4, 1000);
const REQUEST_TIMEOUT_MS = Math.max(INTERVAL_MS * 2, 500);
const FANOUT = 3;
const N = NODE_DEFAULTS.n;
const LATENCY = { minMs: 1, maxMs: 5 };
const WARMUP_MS = 4 * INTERVAL_MS;
const STEADY_ROUNDS = 10;
const JOIN_WINDOW_ROUNDS = 10;
const CLUSTER = "bench";
/** Most virtual time one phase may take before the bench gives up on it. */
const PHASE_MAX_MS = 120_000;

type Phase = "steady" | "join" | "failure";
const PHASES: readonly Phase[] = ["steady", "join", "failure"];

interface BenchNode {
  readonly id: string;
  readonly transport: SimTransport;
  readonly timers: TimerGroup;
  membership: Membership | undefined;
  gossip: GossipDriver | undefined;
}

/** What one phase cost. */
interface PhaseCost {
  readonly ms: number;
  readonly bytes: number;
  readonly cpuMs: number;
  readonly nodeRounds: number;
  readonly nodes: number;
}

/** One trial's figures (virtual ms unless said otherwise). */
interface Trial {
  readonly joinMs: number;
  readonly claimMs: number;
  readonly failMs: number;
  readonly phases: Record<Phase, PhaseCost>;
  readonly notes: string[];
}

const idOf = (i: number): string => `n${String(i).padStart(4, "0")}`;
const addrOf = (id: string): string => `sim:${id}`;
const refRounds = (n: number): number => Math.log(n) / Math.log(FANOUT);
const fmt = (x: number, d = 2): string => x.toFixed(d);
const cpuNowMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

function entry(id: string, status: MemberView["status"], incarnation: number): MemberView {
  return {
    id,
    api: `api-${id}`,
    peer: addrOf(id),
    weight: 1,
    zone: undefined,
    status,
    incarnation,
    heartbeat: 0,
  };
}

/**
 * Counts the encoded bytes of gossip: one message in `sample` is kept and, at the end of a phase
 * (`flush`, outside the phase's CPU figure), encoded as a frame TCP would carry and counted `sample`
 * times. Bodies are kept by reference: gossip never changes a body once sent.
 */
class ByteMeter {
  bytes = 0;
  private seen = 0;
  private kept: ({ kind: "req"; body: RequestBody } | { kind: "ans"; body: AnswerBody })[] = [];
  constructor(private readonly sample: number) {}

  count(m: { kind: "req"; body: RequestBody } | { kind: "ans"; body: AnswerBody }): void {
    if (this.seen++ % this.sample === 0) this.kept.push(m);
  }

  flush(): number {
    for (const m of this.kept) {
      const frame =
        m.kind === "req"
          ? encodeFrame({ kind: "req", id: 1, deadlineMs: REQUEST_TIMEOUT_MS, body: m.body })
          : encodeFrame({ kind: "ans", id: 1, body: m.body });
      // Four bytes of length before every frame (transport/framing.ts).
      this.bytes += (frame.length + 4) * this.sample;
    }
    this.kept = [];
    return this.bytes;
  }
}

/** `t`, with every gossip request it sends and every answer it gets counted by `meter`. */
function metered(t: SimTransport, meter: ByteMeter): Transport {
  return {
    address: t.address,
    request: (address, body, timeoutMs) => {
      if (body.kind === "gossip") meter.count({ kind: "req", body });
      const p = t.request(address, body, timeoutMs);
      return body.kind !== "gossip"
        ? p
        : p.then((a) => {
            meter.count({ kind: "ans", body: a });
            return a;
          });
    },
    resetBackoff: (a) => t.resetBackoff(a),
    setCluster: (c) => t.setCluster(c),
    close: () => t.close(),
  };
}

async function runTrial(n: number, seed: number, protocol: number): Promise<Trial> {
  const choose = derivedRandom(seed, "bench");
  const sched = new VirtualScheduler();
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: derivedRandom(seed, "network"),
    latency: LATENCY,
    codec: values.codec,
  });
  const meter = new ByteMeter(n >= 1000 ? (protocol === 9 ? 200 : 10) : n >= 100 && protocol === 9 ? 10 : 1);
  const nodes = new Map<string, BenchNode>();
  const notes: string[] = [];

  // Who knows the join (the member and a ring with it): updated on each membership change.
  let joinId = "";
  const knowsJoin = new Set<string>();
  let claimedAt: number | undefined;
  const onChange = (node: BenchNode) => {
    const m = node.membership!;
    if (joinId === "" || knowsJoin.has(node.id)) return;
    if (m.member(joinId) !== undefined && m.ring?.owners.includes(joinId) === true) {
      knowsJoin.add(node.id);
      claimedAt ??= sched.now(); // the first to know is the claimant, the instant it claims
    }
  };

  // The node's peer dispatch (node/peer-dispatch.ts), for the requests membership uses.
  const dispatch = async (node: BenchNode, from: string, body: RequestBody): Promise<AnswerBody> => {
    const m = node.membership;
    const g = node.gossip;
    if (m === undefined || g === undefined)
      throw Object.assign(new Error("starting"), { code: "ERR_STARTING" });
    switch (body.kind) {
      case "gossip":
        return g.onGossip(from, body);
      case "join":
        m.admit(body.member, sched.now());
        return {
          kind: "joined",
          clusterId: CLUSTER,
          secret: "c2VjcmV0",
          n: N,
          r: 2,
          w: 2,
          members: m.view(),
          ring: m.ring,
        };
      case "ping":
        return { kind: "pong" };
      default:
        throw Object.assign(new Error(`${body.kind} is not served`), { code: "ERR_UNSUPPORTED" });
    }
  };
  const attach = (id: string, clusterId: string): BenchNode => {
    let node: BenchNode | undefined;
    const transport = net.transport({
      address: addrOf(id),
      nodeId: id,
      clusterId,
      handler: (from, body) => dispatch(node!, from, body),
    });
    node = { id, transport, timers: sched.group(), membership: undefined, gossip: undefined };
    nodes.set(id, node);
    return node;
  };
  const startMembership = (
    node: BenchNode,
    self: MemberView,
    view: readonly MemberView[],
    ring: RingView | null,
  ): GossipDriver => {
    const membership = new Membership(
      {
        selfId: node.id,
        partitions: Q,
        n: N,
        downAfterMs: DOWN_AFTER_MS,
        suspectForMs: SUSPECT_FOR_MS,
        fanout: FANOUT,
      },
      self,
      sched.now(),
    );
    membership.merge(view, ring, sched.now());
    node.membership = membership;
    node.gossip = new GossipDriver({
      membership,
      transport: metered(node.transport, meter),
      timers: node.timers,
      clock: sched,
      random: derivedRandom(seed, node.id),
      intervalMs: INTERVAL_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      onChange: () => onChange(node),
      wholeView: protocol === 9,
    });
    return node.gossip;
  };

  // ---- the established cluster: everyone up, one ring, gossip started at random phases. The first node
  // learns every member and bootstraps the ring over all of them (the real claim), the others take both.
  const members = Array.from({ length: n }, (_, i) => entry(idOf(i + 1), "up", 1));
  const founder = startMembership(attach(members[0]!.id, CLUSTER), members[0]!, members, null);
  const founderMembership = nodes.get(members[0]!.id)!.membership!;
  founderMembership.bootstrapRing();
  const ring = founderMembership.ring!;
  sched.after(Math.floor(choose.next() * INTERVAL_MS), () => founder.start());
  for (const m of members.slice(1)) {
    const g = startMembership(attach(m.id, CLUSTER), m, members, ring);
    sched.after(Math.floor(choose.next() * INTERVAL_MS), () => g.start());
  }
  await sched.runFor(WARMUP_MS);

  const live = () => [...nodes.values()].filter((x) => x.gossip !== undefined);
  // The CPU is read before the byte meter encodes what it kept: encoding is no part of the phase.
  const mark = () => {
    const cpu = cpuNowMs();
    return {
      t: sched.now(),
      cpu,
      bytes: meter.flush(),
      rounds: [...nodes.values()].reduce((sum, x) => sum + (x.gossip?.rounds ?? 0), 0),
    };
  };
  const cost = (a: ReturnType<typeof mark>, nodeCount: number): PhaseCost => {
    const b = mark();
    return {
      ms: b.t - a.t,
      bytes: b.bytes - a.bytes,
      cpuMs: b.cpu - a.cpu,
      nodeRounds: b.rounds - a.rounds,
      nodes: nodeCount,
    };
  };

  // ---- 1. steady state
  const s0 = mark();
  await sched.runFor(STEADY_ROUNDS * INTERVAL_MS);
  const steady = cost(s0, n);

  // ---- 2. a join
  joinId = idOf(n + 1);
  const via = idOf(1 + Math.floor(choose.next() * n));
  const joiner = attach(joinId, "");
  const j0 = mark();
  const answer = await sched.runUntilSettled(
    joiner.transport.request(addrOf(via), { kind: "join", member: entry(joinId, "joining", 0) }, 5000),
    10_000,
  );
  joiner.transport.setCluster(answer.clusterId);
  startMembership(joiner, entry(joinId, "joining", 1), answer.members, answer.ring).start();
  const everyone = n + 1;
  if (!(await sched.runUntil(() => knowsJoin.size === everyone, PHASE_MAX_MS)))
    throw new Error(`n=${n}: the join reached ${knowsJoin.size} of ${everyone} nodes in ${PHASE_MAX_MS} ms`);
  const joinMs = sched.now() - j0.t;
  const claimMs = (claimedAt ?? j0.t) - j0.t;
  const claimant = nodes.get(idOf(1))!.membership!.claimant(sched.now())!;
  const rest = j0.t + JOIN_WINDOW_ROUNDS * INTERVAL_MS - sched.now();
  if (rest > 0) await sched.runFor(rest);
  const join = cost(j0, everyone);

  // ---- 3. a failure
  let victim = claimant;
  while (victim === claimant || victim === joinId) victim = idOf(1 + Math.floor(choose.next() * n));
  const dead = nodes.get(victim)!;
  net.crash(dead.transport.address);
  dead.timers.halt();
  dead.gossip!.stop();
  const survivors = live()
    .filter((x) => x !== dead)
    .map((x) => x.membership!);
  const f0 = mark();
  let i = 0;
  const allSeeDown = (): boolean => {
    // Down is a function of time: advance a cursor, then confirm all at once (nobody flipped back).
    const now = sched.now();
    while (i < survivors.length && survivors[i]!.liveness(victim, now) === "down") i++;
    if (i < survivors.length) return false;
    for (let j = 0; j < survivors.length; j++)
      if (survivors[j]!.liveness(victim, now) !== "down") {
        i = j;
        return false;
      }
    return true;
  };
  if (!(await sched.runUntil(allSeeDown, DOWN_AFTER_MS + PHASE_MAX_MS)))
    throw new Error(`n=${n}: ${victim}'s crash was not known everywhere in time`);
  const failMs = sched.now() - f0.t;
  const failure = cost(f0, n);

  net.checkCounters();
  notes.push(
    `n=${n}, protocol ${protocol}: ${sched.fired} timers, ${net.counters.sent} messages ` +
      `(${net.counters.dropped} lost to the crashed node, ${net.counters.timeouts} timeouts)`,
  );
  return { joinMs, claimMs, failMs, phases: { steady, join, failure }, notes };
}

function pad(s: string, w: number, right = false): string {
  return right ? s.padStart(w) : s.padEnd(w);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const cpus = os.cpus();
console.log(
  `machine: ${cpus[0]?.model ?? "unknown CPU"}, ${cpus.length} cores, ${fmt(os.totalmem() / 2 ** 30, 1)} GiB; ` +
    `node ${process.version}; ${os.platform()} ${os.release()}; load average ${os
      .loadavg()
      .map((x) => fmt(x, 1))
      .join(" ")}`,
);
console.log(
  `gossip every ${INTERVAL_MS} ms, fanout ${FANOUT}, down after ${DOWN_AFTER_MS} ms, Q=${Q}, N=${N}, ` +
    `links ${LATENCY.minMs}-${LATENCY.maxMs} ms, codec ${values.codec ? "on" : "off"}, seed ${SEED}`,
);
console.log(
  "protocol 9: the whole view and ring in every exchange; 10: digests, and entries and ring deltas only where lacking\n" +
    "bytes: gossip encoded as over TCP, per node per second (what a node sends; it receives about as much)\n" +
    "CPU: the process's CPU time / node-rounds, the simulated network's own work (timers, promises) included\n" +
    "rounds: until known everywhere (virtual time / interval); log3(n): what push gossip needs to reach n nodes\n",
);
const header = [
  pad("n", 5, true),
  pad("proto", 5, true),
  pad("phase", 8),
  pad("bytes/node/s", 12, true),
  pad("CPU us/node/round", 17, true),
  pad("rounds (min-max)", 18, true),
  pad("log3(n)", 7, true),
].join("  ");
console.log(header);
console.log("-".repeat(header.length));
const notes: string[] = [];
const detail: string[] = [];
const bytesText = (b: number): string =>
  b >= 2 ** 20 ? `${fmt(b / 2 ** 20, 2)} MiB` : b >= 1024 ? `${fmt(b / 1024, 1)} KiB` : `${fmt(b, 0)} B`;
for (const n of SIZES) {
  for (const protocol of PROTOCOLS) {
    const trials: Trial[] = [];
    const count = trialsFor(n);
    for (let j = 0; j < count; j++)
      trials.push(await runTrial(n, deriveSeed(SEED, `n=${n}/trial=${j}`), protocol));
    for (const phase of PHASES) {
      const bytes = median(
        trials.map((t) => {
          const c = t.phases[phase];
          return c.bytes / c.nodes / (c.ms / 1000);
        }),
      );
      const cpu = median(trials.map((t) => (t.phases[phase].cpuMs * 1000) / t.phases[phase].nodeRounds));
      const known =
        phase === "join"
          ? trials.map((t) => t.joinMs)
          : phase === "failure"
            ? trials.map((t) => t.failMs)
            : [];
      const rounds = known.map((x) => x / INTERVAL_MS);
      console.log(
        [
          pad(String(n), 5, true),
          pad(String(protocol), 5, true),
          pad(phase, 8),
          pad(`${bytesText(bytes)}`, 12, true),
          pad(fmt(cpu, 0), 17, true),
          pad(
            rounds.length === 0
              ? "-"
              : `${fmt(median(rounds), 1)} (${fmt(Math.min(...rounds), 1)}-${fmt(Math.max(...rounds), 1)})`,
            18,
            true,
          ),
          pad(phase === "steady" ? "" : fmt(refRounds(n), 2), 7, true),
        ].join("  "),
      );
    }
    const r = (xs: number[]) => fmt(median(xs) / INTERVAL_MS, 1);
    detail.push(
      `n=${n}, protocol ${protocol}: join: claim after ${r(trials.map((t) => t.claimMs))} rounds, ` +
        `the claimed ring everywhere ${r(trials.map((t) => t.joinMs - t.claimMs))} rounds later; ` +
        `failure: ${r(trials.map((t) => t.failMs - DOWN_AFTER_MS))} rounds beyond downAfterMs`,
    );
    notes.push(...trials[0]!.notes);
  }
}
console.log("");
for (const line of [...detail, ...notes]) console.log(line);
