/**
 * The nemesis: the fault schedule of a run, drawn from its seed (Jepsen's nemesis, TigerBeetle's VOPR
 * fault knobs). While the clients run, every `gapMs` it starts one fault and schedules its end:
 * - partition: the nodes split in two groups that cannot talk (symmetric);
 * - one-way: a few directed links lose everything (a to b, while b to a still works);
 * - isolate: one node cut from everybody;
 * - crash: a node dies (losing unsynced data) and restarts later;
 * - pause: a node stops (timers and network input) for a while, sometimes longer than downAfterMs;
 * - burst: message loss, duplication and extra delay (reordering) well above the baseline;
 * - slow-disk: one node's fsyncs take 5-50 ms for a while (LSM storage; slow-disk.ts), which widens the
 *   windows in which a crash finds a write sent to other replicas but not yet durable on its own disk.
 * Clock skew is set per node when the cluster is made (cluster.ts), and a low baseline of loss,
 * duplication and delay runs the whole time the faults are on.
 *
 * The first faults of a run are a seeded shuffle of every kind, so every run with enough time sees each
 * kind at least once; later ones are drawn at random. At most one network fault (partition, one-way,
 * isolate) at a time, so that each heals exactly what it cut, and one burst at a time; at most
 * `maxCrashed` nodes down at once. A planned fault whose slot is busy waits for the next turn.
 */
import type { Random, TimerHandle } from "../runtime/runtime.js";
import type { VirtualScheduler } from "../runtime/virtual-runtime.js";
import type { SimCluster, SimNode } from "./cluster.js";
import type { SimFaults, SimNetwork } from "./sim-network.js";

export type FaultKind =
  | "partition"
  | "one-way"
  | "isolate"
  | "crash"
  | "pause"
  | "burst"
  | "slow-disk"
  /** A membership change: a new node joins, or (once the cluster has grown) a member leaves. */
  | "membership";
export const FAULT_KINDS: readonly FaultKind[] = [
  "partition",
  "one-way",
  "isolate",
  "crash",
  "pause",
  "burst",
  "slow-disk",
];

export interface NemesisConfig {
  /** Time between the starts of two faults: uniform in [min, max]. */
  readonly gapMs: readonly [number, number];
  /** How long a fault lasts: uniform in [min, max]. */
  readonly durationMs: readonly [number, number];
  /** Message faults in force the whole time (between bursts too). */
  readonly baseline: SimFaults;
  readonly maxCrashed: number;
  /** Most crashes in the whole run (memory storage: 1, since a crash wipes a replica). */
  readonly maxCrashes: number;
  /** Kinds allowed. */
  readonly kinds: readonly FaultKind[];
}

export interface FaultCounts {
  partitions: number;
  oneWayCuts: number;
  isolations: number;
  crashes: number;
  restarts: number;
  pauses: number;
  bursts: number;
  slowDisks: number;
  joins: number;
  leaves: number;
  /** Crashed members removed on their behalf (cluster remove). */
  removals: number;
  /** Nodes whose clock is skewed, and the largest offset (ms). */
  skewedNodes: number;
  maxSkewMs: number;
}

export class Nemesis {
  readonly counts: FaultCounts = {
    partitions: 0,
    oneWayCuts: 0,
    isolations: 0,
    crashes: 0,
    restarts: 0,
    pauses: 0,
    bursts: 0,
    slowDisks: 0,
    joins: 0,
    leaves: 0,
    removals: 0,
    skewedNodes: 0,
    maxSkewMs: 0,
  };
  private stopped = false;
  private netFault = false;
  private burst = false;
  private readonly ends = new Set<TimerHandle>();
  private readonly plan: FaultKind[];
  /** Restarts in progress (the LSM engine reopens asynchronously). */
  private readonly restarting = new Set<Promise<void>>();
  /** A membership change asked for and not yet answered (a join, or the approval of a leave or removal). */
  private changing: Promise<void> | undefined;
  /**
   * The node a leave or removal was asked on, and its generation then: if it crashes before the answer,
   * the request dies with it (as with a real process) and its promise never settles.
   */
  private changingOn: { node: SimNode; generation: number } | undefined;
  readonly errors: unknown[] = [];

  constructor(
    private readonly cfg: NemesisConfig,
    private readonly cluster: SimCluster,
    private readonly net: SimNetwork,
    private readonly sched: VirtualScheduler,
    private readonly random: Random,
    private readonly log: (line: string) => void,
  ) {
    this.plan = [...cfg.kinds];
    for (let i = this.plan.length - 1; i > 0; i--) {
      const j = Math.floor(random.next() * (i + 1));
      [this.plan[i], this.plan[j]] = [this.plan[j]!, this.plan[i]!];
    }
  }

  start(): void {
    this.net.setFaults(this.cfg.baseline);
    if (this.cfg.kinds.length > 0) this.next();
  }

  private between([lo, hi]: readonly [number, number]): number {
    return lo + Math.floor(this.random.next() * (hi - lo + 1));
  }

  private next(): void {
    this.sched.after(this.between(this.cfg.gapMs), () => {
      if (this.stopped) return;
      const planned = this.plan.shift();
      const kind = planned ?? this.cfg.kinds[Math.floor(this.random.next() * this.cfg.kinds.length)]!;
      // A planned fault that cannot start now (its slot is busy) is tried again at the next turn.
      if (this.inject(kind) === "busy" && planned !== undefined) this.plan.unshift(planned);
      this.next();
    });
  }

  /** Ends `fn` after a drawn duration (unless the nemesis is stopped first: heal() undoes everything). */
  private later(fn: () => void): void {
    const h = this.sched.after(this.between(this.cfg.durationMs), () => {
      this.ends.delete(h);
      if (!this.stopped) fn();
    });
    this.ends.add(h);
  }

  private ids(): string[] {
    return this.cluster.nodes.map((n) => n.id);
  }

  private readonly addr = (id: string): string => `sim:${id}`;

  /** Starts a fault; "busy" if it cannot start now (it may later), "skipped" if it never will. */
  private inject(kind: FaultKind): "started" | "busy" | "skipped" {
    const ids = this.ids();
    const pickId = (pool: readonly string[]) => pool[Math.floor(this.random.next() * pool.length)];
    switch (kind) {
      case "partition":
      case "one-way":
      case "isolate": {
        if (this.netFault) return "busy";
        this.netFault = true;
        if (kind === "partition") {
          const shuffled = [...ids];
          for (let i = shuffled.length - 1; i > 0; i--) {
            const j = Math.floor(this.random.next() * (i + 1));
            [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
          }
          const cut = 1 + Math.floor(this.random.next() * Math.floor(ids.length / 2));
          const a = shuffled.slice(0, cut);
          const b = shuffled.slice(cut);
          this.net.partition(a.map(this.addr), b.map(this.addr));
          this.counts.partitions++;
          this.log(`partition [${a.join(",")}] | [${b.join(",")}]`);
        } else if (kind === "one-way") {
          const links = 1 + Math.floor(this.random.next() * 3);
          const cuts: string[] = [];
          for (let i = 0; i < links; i++) {
            const from = pickId(ids)!;
            const to = pickId(ids.filter((x) => x !== from))!;
            this.net.cut(this.addr(from), this.addr(to));
            cuts.push(`${from}->${to}`);
          }
          this.counts.oneWayCuts++;
          this.log(`one-way cut ${cuts.join(" ")}`);
        } else {
          const who = pickId(ids)!;
          this.net.isolate(this.addr(who));
          this.counts.isolations++;
          this.log(`isolate ${who}`);
        }
        this.later(() => {
          this.net.heal();
          this.netFault = false;
          this.log(`heal network (${kind})`);
        });
        return "started";
      }
      case "crash": {
        const crashed = this.cluster.nodes.filter(
          (n) => n.state === "crashed" || n.state === "starting",
        ).length;
        if (this.counts.crashes >= this.cfg.maxCrashes) return "skipped";
        if (crashed >= this.cfg.maxCrashed) return "busy";
        // A node whose disk is slow is the likelier victim (a failing device often ends in a crash), and
        // its crash is the one most likely to find writes sent to other replicas but not yet durable here.
        const up = this.cluster.nodes.filter((n) => n.state === "up");
        const slow = up.filter((n) => n.disk?.slow === true);
        const who = pickId((slow.length > 0 && this.random.next() < 0.5 ? slow : up).map((n) => n.id));
        if (who === undefined) return "busy";
        const modes = ["drop", "torn", "zeroed"] as const;
        const mode = modes[Math.floor(this.random.next() * modes.length)]!;
        this.cluster.crash(who, mode, () => this.random.next());
        this.counts.crashes++;
        this.later(() => this.restart(who));
        return "started";
      }
      case "pause": {
        const who = pickId(this.cluster.nodes.filter((n) => n.state === "up" && !n.paused).map((n) => n.id));
        if (who === undefined) return "busy";
        this.cluster.pause(who);
        this.counts.pauses++;
        this.later(() => {
          const node = this.cluster.byId.get(who)!;
          if (node.paused) this.cluster.resume(who);
        });
        return "started";
      }
      case "slow-disk": {
        const disks = this.cluster.nodes.filter(
          (n) => n.state === "up" && n.disk !== undefined && !n.disk.slow,
        );
        if (this.cluster.config.storage !== "lsm") return "skipped";
        const node = disks[Math.floor(this.random.next() * disks.length)];
        if (node === undefined) return "busy";
        const disk = node.disk!;
        disk.slow = true;
        this.counts.slowDisks++;
        this.log(`slow disk ${node.id}`);
        this.later(() => {
          disk.slow = false;
          this.log(`disk of ${node.id} fast again`);
        });
        return "started";
      }
      case "membership":
        return this.membership();
      case "burst": {
        if (this.burst) return "busy";
        this.burst = true;
        const f: SimFaults = {
          dropProbability: 0.05 + 0.15 * this.random.next(),
          duplicateProbability: 0.05 + 0.15 * this.random.next(),
          delayProbability: 0.1 + 0.3 * this.random.next(),
          delayMaxMs: 50 + Math.floor(this.random.next() * 450),
        };
        this.net.setFaults(f);
        this.counts.bursts++;
        this.log(
          `burst: drop ${f.dropProbability.toFixed(3)} duplicate ${f.duplicateProbability.toFixed(3)} ` +
            `delay ${f.delayProbability.toFixed(3)} up to ${f.delayMaxMs} ms`,
        );
        this.later(() => {
          this.net.setFaults(this.cfg.baseline);
          this.burst = false;
          this.log("burst over");
        });
        return "started";
      }
    }
  }

  /** No network fault is in force (one can start now). */
  get networkFree(): boolean {
    return !this.netFault && !this.stopped;
  }

  /**
   * A long absence: one node, drawn among those up, is cut from everybody for `ms` (the network fault of
   * that time). Returns its id, or undefined if a network fault is in force or no node is up.
   */
  isolateFor(ms: number): string | undefined {
    if (!this.networkFree) return undefined;
    const up = this.cluster.nodes.filter((n) => n.state === "up");
    const who = up[Math.floor(this.random.next() * up.length)]?.id;
    if (who === undefined) return undefined;
    this.netFault = true;
    this.net.isolate(this.addr(who));
    this.counts.isolations++;
    this.log(`isolate ${who} for ${ms} ms (a long absence)`);
    const h = this.sched.after(ms, () => {
      this.ends.delete(h);
      if (this.stopped) return;
      this.net.heal();
      this.netFault = false;
      this.log(`heal network (the long absence of ${who})`);
    });
    this.ends.add(h);
    return who;
  }

  /**
   * One membership change at a time: a join while the cluster has its starting size, else a leave (or
   * the removal of a crashed member).
   */
  private membership(): "started" | "busy" {
    const members = this.cluster.members();
    if (this.changing !== undefined && !this.changeAlive()) {
      this.log(`the membership change asked on ${this.changingOn?.node.id} died with it`);
      this.changing = undefined;
      this.changingOn = undefined;
    }
    if (this.changing !== undefined) return "busy";
    if (members.some((n) => n.core.membership.self.status !== "up")) return "busy";
    const up = members.filter((n) => n.state === "up" && !n.paused);
    const pick = up[Math.floor(this.random.next() * up.length)];
    if (pick === undefined) return "busy";
    if (members.length > this.cluster.config.nodes) {
      // Half the time a crashed member, if any, is removed on its behalf instead (as for a dead machine);
      // the nemesis still restarts it later, and it must hear that it is gone and stop.
      const crashed = members.filter((n) => n.state === "crashed");
      let asked: Promise<void>;
      if (crashed.length > 0 && this.random.next() < 0.5) {
        const victim = crashed[0]!;
        // Asks the claimant to approve it first (a peer request), so it completes later. A refusal is
        // tried again at a later turn, as "busy" would have been.
        asked = pick.core.remove(victim.id, false).then(
          () => {
            this.counts.removals++;
            this.log(`${pick.id} removes ${victim.id}`);
          },
          (err: unknown) => {
            this.log(`${pick.id} refuses to remove ${victim.id}: ${(err as Error).message}`);
            this.plan.unshift("membership");
          },
        );
      } else
        asked = pick.core.leave(false).then(
          () => {
            this.counts.leaves++;
            this.log(`${pick.id} starts leaving`);
          },
          (err: unknown) => {
            this.log(`leave ${pick.id} refused: ${(err as Error).message}`);
            this.plan.unshift("membership");
          },
        );
      this.track(asked, { node: pick, generation: pick.generation });
      return "started";
    }
    const id = this.cluster.nextNodeId();
    this.track(
      this.cluster.join(id, pick.id).then(
        () => {
          this.counts.joins++;
        },
        (err: unknown) => this.log(`join ${id} through ${pick.id} failed: ${(err as Error).message}`),
      ),
      undefined,
    );
    return "started";
  }

  /** `p` is the membership change under way (asked on `on`, if a node's crash can cut it off). */
  private track(p: Promise<void>, on: { node: SimNode; generation: number } | undefined): void {
    this.changing = p;
    this.changingOn = on;
    void p.then(() => {
      if (this.changing === p) {
        this.changing = undefined;
        this.changingOn = undefined;
      }
    });
  }

  /** A membership change asked for can still complete (it was not asked on a node that crashed since). */
  private changeAlive(): boolean {
    if (this.changing === undefined) return false;
    const on = this.changingOn;
    return on === undefined || (on.node.state === "up" && on.node.generation === on.generation);
  }

  private restart(id: string): void {
    const node = this.cluster.byId.get(id)!;
    if (node.state !== "crashed") return;
    const p = this.cluster.restart(id).then(
      () => {
        this.counts.restarts++;
      },
      (err: unknown) => {
        this.errors.push(err);
        this.log(`restart ${id} FAILED: ${(err as Error).message}`);
      },
    );
    this.restarting.add(p);
    void p.then(() => this.restarting.delete(p));
  }

  /**
   * True while a restart is still reopening its storage, a join or a departure is being asked for, or a
   * member is leaving.
   */
  get busy(): boolean {
    return this.restarting.size > 0 || this.changeAlive() || this.cluster.leaving();
  }

  /** Stops injecting, and undoes every fault in force: network healed, nodes resumed and restarted. */
  heal(): void {
    this.stopped = true;
    for (const h of this.ends) h.cancel();
    this.ends.clear();
    this.net.heal();
    this.net.setFaults({ dropProbability: 0, duplicateProbability: 0, delayProbability: 0, delayMaxMs: 0 });
    this.netFault = false;
    this.burst = false;
    for (const node of this.cluster.nodes) {
      if (node.disk !== undefined) node.disk.slow = false;
      if (node.paused) this.cluster.resume(node.id);
      if (node.state === "crashed") this.restart(node.id);
    }
    this.log("heal everything");
  }
}
