/**
 * A small routed network of namespaces for real network faults.
 *
 *            root namespace (the test process, 10.77.X.250)
 *                 │ veth rs<pid>r<seq> ─ gw
 *            hub namespace rs-<pid>-<seq>-hub (a router: ip_forward=1 here only, 10.77.X.254 on each port)
 *        ┌────────┼────────┬─────── ...
 *      node 1   node 2   node 3       each in namespace rs-<pid>-<seq>-<i>, eth0 = 10.77.X.i/32
 *
 * Every packet between two nodes, and between the test and a node, is forwarded by the hub, so faults are
 * made there without touching the nodes: a partition is a set of policy rules `from A to B blackhole` in
 * the hub (forwarded packets that hit a blackhole are dropped silently: no ICMP, no RST, connections hang
 * exactly as across a real partition; removing the rules heals it). This machine has neither iptables
 * nor nft, and its kernel lacks tc classifiers and netem, which is why faults are routing rules.
 *
 * Packet loss: with `tc netem` available, `netem loss P%` on both directions of every hub port; without
 * it (as on the CI machine), "flapping": each directed link (node to node, and test to node) drops
 * everything for random bursts (exponential lengths, mean 400 ms, at most 4 s; about P% of the time), by adding and removing blackhole rules through one
 * long-running `ip -batch -` process. That is bursty loss (Gilbert-Elliott style) rather than independent
 * per-packet loss: TCP sees retransmissions and stalls, the nodes see slow and failed requests.
 *
 * The subnet X is chosen free in the root namespace; names carry the pid (see cleanup.ts).
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { promisify } from "node:util";
import { trackLink, trackNamespace, trackPid, untrackLink, untrackNamespace, untrackPid } from "./cleanup.js";

const execFileP = promisify(execFile);

export async function ip(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP("ip", args, { timeout: 10_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(" ")}: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** Runs many `ip` commands in one process (`ip -n NS -batch -`). */
async function ipBatch(ns: string, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await new Promise<void>((resolve, reject) => {
    const c = spawn("ip", ["-n", ns, "-batch", "-"], { stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    c.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    c.on("error", reject);
    c.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`ip -batch in ${ns}: ${err.trim()}`))));
    c.stdin.end(`${lines.join("\n")}\n`);
  });
}

let seq = 0;

/** Why namespaces cannot be used here, or undefined when they can. */
export function namespacesUnavailable(): string | undefined {
  if (process.env.RINGSTORE_FAULT_NETNS === "0") return "disabled by RINGSTORE_FAULT_NETNS=0";
  const ns = `rs-${process.pid}-probe`;
  try {
    execFileSync("ip", ["netns", "add", ns], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    return `ip netns add failed: ${(e.stderr?.toString() ?? e.message).trim()}`;
  }
  try {
    execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  } catch {
    // removed with the others at exit at worst
  }
  return undefined;
}

function netemAvailable(ns: string, dev: string): boolean {
  try {
    execFileSync(
      "ip",
      ["netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "0%"],
      {
        stdio: "ignore",
      },
    );
    execFileSync("ip", ["netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function freeSubnet(): number {
  const used = new Set<number>();
  const text = `${execFileSync("ip", ["-o", "-4", "addr", "show"], { encoding: "utf8" })}\n${execFileSync("ip", ["-4", "route", "show"], { encoding: "utf8" })}`;
  for (const m of text.matchAll(/10\.77\.(\d+)\./g)) used.add(Number(m[1]));
  const start = (process.pid * 7 + seq * 13) % 240;
  for (let k = 0; k < 240; k++) {
    const x = ((start + k) % 240) + 1;
    if (!used.has(x)) return x;
  }
  throw new Error("no free 10.77.X.0/24 subnet in the root namespace");
}

export interface LossStats {
  readonly mode: "netem" | "flapping";
  /** Drop bursts started (flapping) or the netem loss rate. */
  readonly bursts: number;
}

export class FaultNetwork {
  readonly hub: string;
  readonly subnet: number;
  readonly hostAddr: string;
  private readonly rootLink: string;
  /** Installed partition rules, as the `rule add` arguments that made them. */
  private readonly rules = new Set<string>();
  private prio = 1000;
  private flapper: ChildProcess | undefined;
  private flapTimer: NodeJS.Timeout | undefined;
  private flapBursts = 0;
  private netem = false;
  private destroyed = false;

  private constructor(
    readonly nodes: number,
    readonly tag: string,
  ) {
    this.hub = `rs-${tag}-hub`;
    this.subnet = freeSubnet();
    this.hostAddr = `10.77.${this.subnet}.250`;
    this.rootLink = `rs${tag.replace("-", "r")}`;
  }

  /** Makes the hub and `nodes` node namespaces (nodes numbered 0..nodes-1 here; addresses .1 upward). */
  static async create(nodes: number): Promise<FaultNetwork> {
    seq++;
    const net = new FaultNetwork(nodes, `${process.pid}-${seq}`);
    try {
      await net.build();
    } catch (err) {
      await net.destroy();
      throw err;
    }
    return net;
  }

  ns(i: number): string {
    return `rs-${this.tag}-${i + 1}`;
  }

  addr(i: number): string {
    return `10.77.${this.subnet}.${i + 1}`;
  }

  private async build(): Promise<void> {
    const X = this.subnet;
    const gw = `10.77.${X}.254`;
    trackNamespace(this.hub);
    await ip("netns", "add", this.hub);
    await ip("netns", "exec", this.hub, "sysctl", "-qw", "net.ipv4.ip_forward=1");
    const hubLines = ["link set lo up"];
    for (let i = 0; i < this.nodes; i++) {
      const ns = this.ns(i);
      const port = `p${i + 1}`;
      trackNamespace(ns);
      await ip("netns", "add", ns);
      await ip("link", "add", port, "netns", this.hub, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ipBatch(ns, [
        "link set lo up",
        `addr add ${this.addr(i)}/32 dev eth0`,
        "link set eth0 up",
        `route add ${gw}/32 dev eth0 scope link`,
        `route add 10.77.${X}.0/24 via ${gw} dev eth0`,
      ]);
      hubLines.push(
        `addr add ${gw}/32 dev ${port}`,
        `link set ${port} up`,
        `route add ${this.addr(i)}/32 dev ${port} scope link`,
      );
    }
    // The root namespace reaches the subnet through the hub.
    trackLink(this.rootLink);
    await ip("link", "add", this.rootLink, "type", "veth", "peer", "name", "gw", "netns", this.hub);
    hubLines.push(
      `addr add ${gw}/32 dev gw`,
      "link set gw up",
      `route add ${this.hostAddr}/32 dev gw scope link`,
    );
    await ipBatch(this.hub, hubLines);
    await ip("addr", "add", `${this.hostAddr}/32`, "dev", this.rootLink);
    await ip("link", "set", this.rootLink, "up");
    await ip("route", "add", `${gw}/32`, "dev", this.rootLink, "scope", "link");
    await ip("route", "add", `10.77.${X}.0/24`, "via", gw, "dev", this.rootLink);
  }

  // ------------------------------------------------------------------ partitions

  /** Blocks every packet from node `a` to node `b` (one direction). */
  private blockLines(a: number, b: number): string[] {
    const spec = `from ${this.addr(a)} to ${this.addr(b)} blackhole`;
    if (this.rules.has(spec)) return [];
    this.rules.add(spec);
    return [`rule add ${spec} prio ${this.prio++}`];
  }

  /**
   * Cuts every link between nodes of different groups, both ways. Nodes in no group keep every link
   * (a bridge between the sides). The test process still reaches every node.
   */
  async partition(groups: readonly (readonly number[])[]): Promise<void> {
    const lines: string[] = [];
    for (let g = 0; g < groups.length; g++)
      for (let h = 0; h < groups.length; h++)
        if (g !== h)
          for (const a of groups[g]!) for (const b of groups[h]!) lines.push(...this.blockLines(a, b));
    await ipBatch(this.hub, lines);
  }

  /** Cuts node `i` off from every other node (not from the test process). */
  async isolate(i: number): Promise<void> {
    const others = [...Array(this.nodes).keys()].filter((j) => j !== i);
    await this.partition([[i], others]);
  }

  /** Removes every partition rule. */
  async heal(): Promise<void> {
    const lines = [...this.rules].map((spec) => `rule del ${spec}`);
    this.rules.clear();
    await ipBatch(this.hub, lines);
  }

  /** The partition rules in force, as the hub lists them (for logs). */
  async listRules(): Promise<string> {
    return ip("-n", this.hub, "rule", "show");
  }

  // ------------------------------------------------------------------ packet loss

  /**
   * Starts packet loss of about `percent`% on every link, the test's links to the nodes included. See the header for the two mechanisms.
   */
  async startLoss(percent: number, random: () => number): Promise<LossStats["mode"]> {
    this.netem = netemAvailable(this.hub, "p1");
    if (this.netem) {
      for (let i = 0; i < this.nodes; i++) {
        await ip(
          "netns",
          "exec",
          this.hub,
          "tc",
          "qdisc",
          "add",
          "dev",
          `p${i + 1}`,
          "root",
          "netem",
          "loss",
          `${percent}%`,
          "delay",
          "2ms",
        );
        await ip(
          "netns",
          "exec",
          this.ns(i),
          "tc",
          "qdisc",
          "add",
          "dev",
          "eth0",
          "root",
          "netem",
          "loss",
          `${percent}%`,
          "delay",
          "2ms",
        );
      }
      return "netem";
    }
    const c = spawn("ip", ["-n", this.hub, "-force", "-batch", "-"], { stdio: ["pipe", "ignore", "ignore"] });
    this.flapper = c;
    trackPid(c.pid!);
    c.stdin.on("error", () => undefined); // the process may be gone when the last line is written
    const tickMs = 20;
    const meanBurstMs = 400;
    // A burst starts with probability p per tick; the link is then down about p*mean/tick of the time.
    const p = Math.min(0.5, (percent / (100 - percent)) * (tickMs / meanBurstMs));
    const downUntil = new Map<string, number>();
    let prio = 50_000;
    // Every directed link between two nodes, and between the test process and each node.
    const ends = [...[...Array(this.nodes).keys()].map((i) => this.addr(i)), this.hostAddr];
    const links: string[] = [];
    for (const a of ends) for (const b of ends) if (a !== b) links.push(`from ${a} to ${b} blackhole`);
    this.flapTimer = setInterval(() => {
      const now = Date.now();
      const lines: string[] = [];
      for (const spec of links) {
        const until = downUntil.get(spec);
        if (until !== undefined) {
          if (now >= until) {
            downUntil.delete(spec);
            lines.push(`rule del ${spec}`);
          }
        } else if (random() < p) {
          // Exponential burst lengths: mostly short, a few longer than the nodes' 1.5 s timeouts.
          downUntil.set(spec, now + Math.min(4000, 20 - meanBurstMs * Math.log(1 - random())));
          this.flapBursts++;
          lines.push(`rule add ${spec} prio ${prio++}`);
        }
      }
      if (lines.length > 0 && c.stdin.writable) c.stdin.write(`${lines.join("\n")}\n`);
    }, tickMs);
    this.stopFlapping = async () => {
      clearInterval(this.flapTimer);
      this.flapTimer = undefined;
      const lines = [...downUntil.keys()].map((spec) => `rule del ${spec}`);
      downUntil.clear();
      await new Promise<void>((resolve) => {
        c.on("exit", () => resolve());
        c.stdin.end(lines.length > 0 ? `${lines.join("\n")}\n` : "");
      });
      untrackPid(c.pid!);
      this.flapper = undefined;
    };
    return "flapping";
  }

  private stopFlapping: (() => Promise<void>) | undefined;

  /** Stops packet loss; returns what was done. */
  async stopLoss(): Promise<LossStats> {
    if (this.netem) {
      for (let i = 0; i < this.nodes; i++) {
        await ip("netns", "exec", this.hub, "tc", "qdisc", "del", "dev", `p${i + 1}`, "root").catch(() => "");
        await ip("netns", "exec", this.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root").catch(() => "");
      }
      this.netem = false;
      return { mode: "netem", bursts: 0 };
    }
    await this.stopFlapping?.();
    this.stopFlapping = undefined;
    return { mode: "flapping", bursts: this.flapBursts };
  }

  /** Removes every namespace and link (the processes inside must have been stopped first). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.flapTimer !== undefined) clearInterval(this.flapTimer);
    if (this.flapper !== undefined) {
      this.flapper.kill("SIGKILL");
      untrackPid(this.flapper.pid!);
    }
    for (let i = 0; i < this.nodes; i++) {
      await ip("netns", "del", this.ns(i)).catch(() => "");
      untrackNamespace(this.ns(i));
    }
    await ip("netns", "del", this.hub).catch(() => "");
    untrackNamespace(this.hub);
    await ip("link", "del", this.rootLink).catch(() => ""); // usually gone with the hub's end
    untrackLink(this.rootLink);
  }
}
