/**
 * Real node processes for the fault suite, started through the built CLI (`dist/cli/main.js start`),
 * either on 127.0.0.1 (ports picked by the OS at the first start, kept across restarts) or each in its
 * own network namespace of a `FaultNetwork` (`ip netns exec NS node ...`: ip execs, so the child's pid
 * is the node's). Process faults: SIGKILL and restart on the same data directory and addresses,
 * SIGSTOP and SIGCONT. Every pid and the data folder are registered with cleanup.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { trackDir, trackPid, untrackDir, untrackPid } from "./cleanup.js";
import type { FaultNetwork } from "./net.js";

const BIN = path.resolve("dist/cli/main.js");

/**
 * util-linux `setpriv --pdeathsig KILL` (where installed) makes the kernel SIGKILL a node when the test
 * process dies, even by SIGKILL, when no exit handler can run. It sets the flag and execs node, so the
 * pid stays the node's (as `ip netns exec` does).
 */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));
const guard = (cmd: string[]): string[] =>
  SETPRIV === undefined ? cmd : [SETPRIV, "--pdeathsig", "KILL", "--", ...cmd];

/** The short gossip and failure-detection settings of test/cluster/harness.ts. */
export const FAST_SETTINGS = ["--gossip-interval", "100", "--down-after", "1000", "--timeout", "1500"];
export const DOWN_AFTER_MS = 1000;

export interface FaultNode {
  readonly index: number;
  readonly id: string;
  readonly dataDir: string;
  /** API and peer addresses once known (host:port). */
  api: string;
  peer: string;
  child: ChildProcess | undefined;
  paused: boolean;
  /** Output of every run of this node, runs separated by a marker line. */
  log: string;
  starts: number;
}

export interface ClusterOptions {
  readonly nodes: number;
  readonly net?: FaultNetwork;
  readonly args?: readonly string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class FaultCluster {
  /** Named with the pid so that sweepStale (cleanup.ts) can remove it after a run that was killed. */
  readonly root = mkdtempSync(path.join(tmpdir(), `ringstore-faults-${process.pid}-`));
  readonly nodes: FaultNode[] = [];
  private readonly net: FaultNetwork | undefined;
  private readonly args: readonly string[];

  constructor(opts: ClusterOptions) {
    trackDir(this.root);
    this.net = opts.net;
    this.args = opts.args ?? FAST_SETTINGS;
    for (let i = 0; i < opts.nodes; i++) {
      const id = `n${i + 1}`;
      const host = opts.net?.addr(i) ?? "127.0.0.1";
      const fixed = opts.net !== undefined;
      this.nodes.push({
        index: i,
        id,
        dataDir: path.join(this.root, id),
        api: `${host}:${fixed ? 8001 : 0}`,
        peer: `${host}:${fixed ? 9001 : 0}`,
        child: undefined,
        paused: false,
        log: "",
        starts: 0,
      });
    }
  }

  /** Starts node 0 (a new cluster), then the others joining it; waits until all see all up. */
  async startAll(): Promise<void> {
    await this.start(0);
    await Promise.all(this.nodes.slice(1).map((n) => this.start(n.index, { join: this.nodes[0]!.peer })));
    await this.waitAllUp(30_000);
  }

  /**
   * Starts (or restarts on the same data and addresses) node `i`; resolves once it serves its API. On
   * loopback a port freed by a killed node may be briefly held by another socket: retried a few times.
   */
  async start(i: number, opts: { join?: string } = {}): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce(i, opts);
      } catch (err) {
        if (attempt >= 5 || !/EADDRINUSE/.test((err as Error).message)) throw err;
        await sleep(500);
      }
    }
  }

  private async startOnce(i: number, opts: { join?: string }): Promise<void> {
    const n = this.nodes[i]!;
    if (n.child !== undefined) throw new Error(`${n.id} is already running`);
    const args = [
      BIN,
      "start",
      "--id",
      n.id,
      "--api",
      n.api,
      "--peer",
      n.peer,
      "--data",
      n.dataDir,
      ...this.args,
    ];
    if (opts.join !== undefined) args.push("--join", opts.join);
    // Node 0 created the cluster and keeps its key; the others are given it, as an operator does.
    if (i !== 0) args.push("--cluster-key-file", path.join(this.nodes[0]!.dataDir, "cluster.key"));
    const cmd = [
      ...(this.net === undefined ? [] : ["ip", "netns", "exec", this.net.ns(i)]),
      ...guard([process.execPath, ...args]),
    ];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    trackPid(child.pid!);
    n.child = child;
    n.paused = false;
    n.starts++;
    n.log += `----- start #${n.starts} at ${new Date().toISOString()}\n`;
    let out = "";
    const onData = (d: Buffer) => {
      out += d.toString();
      n.log += d.toString();
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code, sig) => {
      untrackPid(child.pid!);
      n.log += `----- exit code=${code} signal=${sig}\n`;
      if (n.child === child) n.child = undefined;
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${n.id} did not start in time:\n${out}`)), 20_000);
      const check = () => {
        const m = /serving the API on http:\/\/([0-9.]+:[0-9]+) \(peer ([0-9.]+:[0-9]+)\)/.exec(out);
        if (m) {
          clearTimeout(timer);
          child.off("exit", early);
          n.api = m[1]!;
          n.peer = m[2]!;
          resolve();
        }
      };
      const early = (code: number | null) => {
        clearTimeout(timer);
        reject(new Error(`${n.id} exited with ${code} before serving:\n${out}`));
      };
      child.stdout!.on("data", check);
      child.on("exit", early);
    });
  }

  running(i: number): boolean {
    return this.nodes[i]!.child !== undefined;
  }

  /** Sends `sig` and waits for the exit. */
  private async signalAndWait(i: number, sig: NodeJS.Signals): Promise<void> {
    const n = this.nodes[i]!;
    const c = n.child;
    if (c === undefined) return;
    const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
    if (n.paused && sig !== "SIGKILL") c.kill("SIGCONT");
    c.kill(sig);
    const timer = setTimeout(() => c.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
    n.paused = false;
  }

  /** SIGKILL: a crash. */
  kill(i: number): Promise<void> {
    return this.signalAndWait(i, "SIGKILL");
  }

  /** SIGTERM: a clean stop (in-flight requests finish, files are closed). */
  stop(i: number): Promise<void> {
    return this.signalAndWait(i, "SIGTERM");
  }

  pause(i: number): void {
    const n = this.nodes[i]!;
    if (n.child === undefined || n.paused) return;
    n.child.kill("SIGSTOP");
    n.paused = true;
  }

  resume(i: number): void {
    const n = this.nodes[i]!;
    if (n.child === undefined || !n.paused) return;
    n.child.kill("SIGCONT");
    n.paused = false;
  }

  async status(i: number): Promise<{ members: { id: string; state: string }[] } | undefined> {
    try {
      const r = await fetch(`http://${this.nodes[i]!.api}/status`, { signal: AbortSignal.timeout(2000) });
      if (r.status !== 200) return undefined;
      return (await r.json()) as { members: { id: string; state: string }[] };
    } catch {
      return undefined;
    }
  }

  /**
   * Waits until every node sees every node up. Returns what was not up at the first look (for reports),
   * e.g. "n1 sees n3 suspect", empty when all were up at once.
   */
  async waitAllUp(ms: number): Promise<string[]> {
    const ids = this.nodes.map((n) => n.id);
    const end = Date.now() + ms;
    let first: string[] | undefined;
    for (;;) {
      const views = await Promise.all(this.nodes.map((n) => this.status(n.index)));
      const notUp: string[] = [];
      views.forEach((v, i) => {
        const who = this.nodes[i]!.id;
        if (v === undefined) notUp.push(`${who} does not answer /status`);
        else
          for (const id of ids) {
            const m = v.members.find((x) => x.id === id);
            if (m?.state !== "up") notUp.push(`${who} sees ${id} ${m?.state ?? "missing"}`);
          }
      });
      first ??= notUp;
      if (notUp.length === 0) return first;
      if (Date.now() > end)
        throw new Error(
          `the cluster did not converge in ${ms} ms: ${JSON.stringify(views.map((v) => v?.members.map((m) => `${m.id}:${m.state}`)))}`,
        );
      await sleep(100);
    }
  }

  /** Stops every node cleanly (SIGCONT first if paused). */
  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.stop(n.index)));
  }

  /** Kills every node and removes the data folder. */
  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n.index)));
    rmSync(this.root, { recursive: true, force: true });
    untrackDir(this.root);
  }
}
