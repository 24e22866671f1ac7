/**
 * bench:gossip: how fast the real membership code spreads news. Membership + GossipDriver, unchanged,
 * on the simulated network (src/sim/sim-network.ts) and one virtual clock, for clusters of 10, 100 and 1000 nodes.
 *
 *   node --import tsx bench/gossip.ts [--sizes 10,100,1000] [--trials K] [--seed N] [--codec] [--partitions Q]
 *
 * Per size: an established cluster (every node knows every other as up, one ring claimed over all of
 * them, heartbeats flowing for a few rounds), then
 *   1. a join: a new node asks a random member to admit it; measured until every node (the joiner too)
 *      knows the new member and holds a ring that includes it. Split into: until the claimant's claim,
 *      and the spread of that ring from the claimant to everyone;
 *   2. a failure: a random member (not the claimant) crashes; measured until every live node reports
 *      it down. Split into: downAfterMs and the rest (measured from the crash; the victim's last heartbeat
 *      left up to a round before it, so the rest can be slightly negative).
 * Each size runs several trials (9 up to 10 nodes, 5 up to 100, else 1; --trials K for all sizes) with
 * seeds derived from the run's seed. Each figure is the median, in virtual seconds and in gossip rounds
 * (virtual time / interval), with the range over trials, next to the epidemic reference computed in the
 * same run: log_fanout(n) rounds, the rounds push gossip with that fanout needs to reach n nodes, and the
 * ratio median/reference. Wall and CPU time are measured too: the
 * simulator runs every node's work on one core, so CPU / (node-rounds) is what one node spends per
 * gossip round (CPU time, unlike wall time, does not depend on what else the machine runs).
 *
 * Defaults are those of a node (src/node/config.ts): gossip every 500 ms, down after 5000 ms, Q = 1024,
 * N = 3, fanout 3; links 1-5 ms. Frames are passed by reference unless --codec (then every message is
 * MessagePack-encoded and validated, as over TCP: more CPU, the same virtual timeline; see
 * docs/performance.md, "gossip with the codec"). SIM_SEED or --seed replays.
 */
import * as os from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { GossipDriver } from "../src/membership/gossip-driver.js";
import { Membership } from "../src/membership/membership.js";
import { NODE_DEFAULTS } from "../src/node/config.js";
import { claim, type RingMember } from "../src/ring/ring.js";
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

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "10,100,1000" },
    trials: { type: "string" },
    seed: { type: "string", default: process.env.SIM_SEED ?? "20250" },
    codec: { type: "boolean", default: false },
    partitions: { type: "string", default: String(NODE_DEFAULTS.partitions) },
  },
});
const SIZES = values.sizes.split(",").map((s) => Number(s));
const TRIALS = values.trials === undefined ? undefined : Number(values.trials);
const trialsFor = (n: number): number => TRIALS ?? (n <= 10 ? 9 : n <= 100 ? 5 : 1);
const SEED = Number(values.seed);
const Q = Number(values.partitions);
for (const n of SIZES)
  if (!(Number.isInteger(n) && n >= 2 && n <= 9998)) throw new Error(`--sizes: ${n} is not in 2..9998`);
if (TRIALS !== undefined && !(Number.isInteger(TRIALS) && TRIALS >= 1))
  throw new Error(`--trials must be an integer >= 1, got ${values.trials}`);
if (!Number.isInteger(SEED)) throw new Error(`--seed must be an integer, got ${values.seed}`);

const INTERVAL_MS = NODE_DEFAULTS.gossipIntervalMs;
const DOWN_AFTER_MS = NODE_DEFAULTS.downAfterMs;
// As node-core.ts derives them from the interval.
const SUSPECT_FOR_MS = Math.max(INTERVAL_MS * 4, 1000);
const REQUEST_TIMEOUT_MS = Math.max(INTERVAL_MS * 2, 500);
const FANOUT = 3;
const N = NODE_DEFAULTS.n;
const LATENCY = { minMs: 1, maxMs: 5 };
const WARMUP_MS = 4 * INTERVAL_MS;
const CLUSTER = "bench";
/** Most virtual time one phase may take before the bench gives up on it. */
const PHASE_MAX_MS = 120_000;

interface BenchNode {
  readonly id: string;
  readonly transport: SimTransport;
  readonly timers: TimerGroup;
  membership: Membership | undefined;
  gossip: GossipDriver | undefined;
}

/** One trial's figures (virtual ms unless said otherwise). */
interface Trial {
  readonly joinMs: number;
  readonly claimMs: number;
  readonly failMs: number;
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly nodeRounds: number;
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

/** The fastest of a few runs of `fn` (the first runs include compilation), in ms. */
function fastestMs(fn: () => void, runs = 5): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

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

async function runTrial(n: number, seed: number): Promise<Trial> {
  const wall0 = performance.now();
  const cpu0 = cpuNowMs();
  const choose = derivedRandom(seed, "bench");
  const sched = new VirtualScheduler();
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: derivedRandom(seed, "network"),
    latency: LATENCY,
    codec: values.codec,
  });
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
      transport: node.transport,
      timers: node.timers,
      clock: sched,
      random: derivedRandom(seed, node.id),
      intervalMs: INTERVAL_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      onChange: () => onChange(node),
    });
    return node.gossip;
  };

  // ---- the established cluster: everyone up, one ring, gossip started at random phases. The first node
  // learns every member and bootstraps the ring over all of them (the real claim), the others take both.
  const members = Array.from({ length: n }, (_, i) => entry(idOf(i + 1), "up", 1));
  const ringMembers: RingMember[] = members.map((m) => ({ id: m.id, weight: 1 }));
  const founder = startMembership(attach(members[0]!.id, CLUSTER), members[0]!, members, null);
  const founderMembership = nodes.get(members[0]!.id)!.membership!;
  founderMembership.bootstrapRing();
  const ring = founderMembership.ring!;
  const firstClaimMs = fastestMs(() => claim(undefined, ringMembers, Q, N));
  sched.after(Math.floor(choose.next() * INTERVAL_MS), () => founder.start());
  for (const m of members.slice(1)) {
    const g = startMembership(attach(m.id, CLUSTER), m, members, ring);
    sched.after(Math.floor(choose.next() * INTERVAL_MS), () => g.start());
  }
  const gossipBytes = encodeFrame({
    kind: "req",
    id: 1,
    deadlineMs: REQUEST_TIMEOUT_MS,
    body: { kind: "gossip", members, ring },
  }).length;
  // Per round a node sends `fanout` requests and gets their answers, and answers about as many: all full size.
  const perNodeBytesPerSec = 4 * FANOUT * gossipBytes * (1000 / INTERVAL_MS);
  notes.push(
    `n=${n}: one gossip message (full view + ring of Q=${Q}) is ${fmt(gossipBytes / 1024, 1)} KiB encoded; ` +
      `each node sends and receives about ${4 * FANOUT} of them per round: ${fmt(perNodeBytesPerSec / 2 ** 20, 2)} MiB/s`,
  );
  notes.push(`n=${n}: claim of a first ring (${n} nodes, Q=${Q}): ${fmt(firstClaimMs, 1)} ms`);
  await sched.runFor(WARMUP_MS);

  // ---- 1. a join
  joinId = idOf(n + 1);
  const via = idOf(1 + Math.floor(choose.next() * n));
  const joiner = attach(joinId, "");
  const t0 = sched.now();
  const answer = await sched.runUntilSettled(
    joiner.transport.request(addrOf(via), { kind: "join", member: entry(joinId, "joining", 0) }, 5000),
    10_000,
  );
  joiner.transport.setCluster(answer.clusterId);
  startMembership(joiner, entry(joinId, "joining", 1), answer.members, answer.ring).start();
  const everyone = n + 1;
  if (!(await sched.runUntil(() => knowsJoin.size === everyone, PHASE_MAX_MS)))
    throw new Error(`n=${n}: the join reached ${knowsJoin.size} of ${everyone} nodes in ${PHASE_MAX_MS} ms`);
  const joinMs = sched.now() - t0;
  const claimMs = (claimedAt ?? t0) - t0;
  const claimant = nodes.get(idOf(1))!.membership!.claimant(sched.now())!;

  // The claim the claimant made for this join, timed alone.
  const withJoiner = [...ringMembers, { id: joinId, weight: 1 }];
  const joinClaimMs = fastestMs(() =>
    claim({ partitions: ring.partitions, owners: ring.owners }, withJoiner, Q, N),
  );
  notes.push(`n=${n}: claim for one join: ${fmt(joinClaimMs, 1)} ms (once, by the claimant)`);

  // ---- 2. a failure
  await sched.runFor(2 * INTERVAL_MS);
  let victim = claimant;
  while (victim === claimant || victim === joinId) victim = idOf(1 + Math.floor(choose.next() * n));
  const dead = nodes.get(victim)!;
  net.crash(dead.transport.address);
  dead.timers.halt();
  dead.gossip!.stop();
  const live = [...nodes.values()].filter((x) => x !== dead).map((x) => x.membership!);
  const t1 = sched.now();
  let i = 0;
  const allSeeDown = (): boolean => {
    // Down is a function of time: advance a cursor, then confirm all at once (nobody flipped back).
    const now = sched.now();
    while (i < live.length && live[i]!.liveness(victim, now) === "down") i++;
    if (i < live.length) return false;
    for (let j = 0; j < live.length; j++)
      if (live[j]!.liveness(victim, now) !== "down") {
        i = j;
        return false;
      }
    return true;
  };
  if (!(await sched.runUntil(allSeeDown, DOWN_AFTER_MS + PHASE_MAX_MS)))
    throw new Error(`n=${n}: ${victim}'s crash was not known everywhere in time`);
  const failMs = sched.now() - t1;

  net.checkCounters();
  const nodeRounds = [...nodes.values()].reduce((sum, x) => sum + (x.gossip?.rounds ?? 0), 0);
  notes.push(
    `n=${n}: ${nodeRounds} node-rounds, ${sched.fired} timers, ${net.counters.sent} messages ` +
      `(${net.counters.dropped} lost to the crashed node, ${net.counters.timeouts} timeouts)`,
  );
  return {
    joinMs,
    claimMs,
    failMs,
    wallMs: performance.now() - wall0,
    cpuMs: cpuNowMs() - cpu0,
    nodeRounds,
    notes,
  };
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
  "reference: log_fanout(n) rounds, what push gossip with this fanout needs to reach n nodes; ratio = median / reference\n",
);
const header = [
  pad("n", 5, true),
  pad("trials", 6, true),
  pad("event", 27),
  pad("virtual s", 9, true),
  pad("rounds (min-max)", 18, true),
  pad("log3(n)", 7, true),
  pad("ratio", 5, true),
].join("  ");
console.log(header);
console.log("-".repeat(header.length));
const notes: string[] = [];
for (const n of SIZES) {
  const trials: Trial[] = [];
  const count = trialsFor(n);
  for (let j = 0; j < count; j++) trials.push(await runTrial(n, deriveSeed(SEED, `n=${n}/trial=${j}`)));
  const rows: [string, number[]][] = [
    ["join known everywhere", trials.map((x) => x.joinMs)],
    ["  join request -> claim", trials.map((x) => x.claimMs)],
    ["  claimed ring -> everyone", trials.map((x) => x.joinMs - x.claimMs)],
    ["failure known everywhere", trials.map((x) => x.failMs)],
    ["  beyond downAfterMs", trials.map((x) => x.failMs - DOWN_AFTER_MS)],
  ];
  for (const [what, ms] of rows) {
    const rounds = ms.map((x) => x / INTERVAL_MS);
    const med = median(rounds);
    console.log(
      [
        pad(String(n), 5, true),
        pad(String(count), 6, true),
        pad(what, 27),
        pad(fmt(median(ms) / 1000, 3), 9, true),
        pad(`${fmt(med, 1)} (${fmt(Math.min(...rounds), 1)}-${fmt(Math.max(...rounds), 1)})`, 18, true),
        pad(fmt(refRounds(n), 2), 7, true),
        pad(fmt(med / refRounds(n), 2), 5, true),
      ].join("  "),
    );
  }
  const wall = trials.reduce((a, x) => a + x.wallMs, 0);
  const cpu = trials.reduce((a, x) => a + x.cpuMs, 0);
  const nodeRounds = trials.reduce((a, x) => a + x.nodeRounds, 0);
  notes.push(...trials[0]!.notes);
  notes.push(
    `n=${n}: ${count} trial(s) took ${fmt(wall / 1000)} s wall, ${fmt(cpu / 1000)} s CPU: ` +
      `${fmt((cpu * 1000) / nodeRounds, 0)} us of CPU per node per gossip round`,
  );
}
console.log("");
for (const note of notes) console.log(note);
