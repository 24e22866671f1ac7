/**
 * Real-process cluster harness: nodes are started through the built CLI (`dist/cli/main.js start`) on
 * 127.0.0.1 with port 0, so parallel test files never collide. Every process and folder is cleaned up by
 * `shutdown()`, which tests call in an `after` hook (so also when they fail).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

const BIN = path.resolve("dist/cli/main.js");

export interface TestNode {
  readonly id: string;
  readonly dataDir: string;
  api: string;
  peer: string;
  child: ChildProcess | undefined;
  output: string;
}

/** Failure detection in about a second: gossip every 100 ms, a member down after 1 s of silence. */
export const FAST_DETECTION = ["--gossip-interval", "100", "--down-after", "1000"];
/** FAST_DETECTION with a 1.5 s coordinator timeout: what a TestCluster's nodes get by default. */
export const FAST_FLAGS = [...FAST_DETECTION, "--timeout", "1500"];

export class TestCluster {
  readonly root = mkdtempSync(path.join(tmpdir(), "ringstore-cluster-"));
  readonly nodes = new Map<string, TestNode>();
  /**
   * The cluster key: the `cluster.key` that the first node started without --join wrote. Every other
   * node is started with it (--cluster-key-file), as an operator does.
   */
  keyFile: string | undefined;

  constructor(private readonly extraArgs: string[] = FAST_FLAGS) {}

  /** Starts `ids` in order, each after the first joining through it, and waits until each sees all up. */
  async startJoined(ids: readonly string[]): Promise<void> {
    for (const id of ids) await this.start(id, id === ids[0] ? {} : { join: ids[0] });
    for (const id of ids) await this.converged(id, [...ids]);
  }

  /**
   * Starts (or restarts, keeping its data) node `id`; joins through `join` (a node id) if given. A node
   * other than the one that created the cluster gets the cluster's key file, unless `args` names one or
   * `noKey` says not to.
   */
  async start(
    id: string,
    opts: { join?: string; args?: string[]; noKey?: boolean; env?: Record<string, string> } = {},
  ): Promise<TestNode> {
    const dataDir = path.join(this.root, id);
    const ownKey = path.join(dataDir, "cluster.key");
    if (
      this.keyFile === undefined &&
      opts.join === undefined &&
      !(opts.args ?? []).includes("--cluster-key-file")
    )
      this.keyFile = ownKey;
    const args = [
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
      ...this.extraArgs,
      ...(opts.args ?? []),
    ];
    if (opts.join !== undefined) args.push("--join", this.nodes.get(opts.join)!.peer);
    if (
      opts.noKey !== true &&
      this.keyFile !== undefined &&
      this.keyFile !== ownKey &&
      !args.includes("--cluster-key-file")
    )
      args.push("--cluster-key-file", this.keyFile);
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env } }),
    });
    const node: TestNode = this.nodes.get(id) ?? { id, dataDir, api: "", peer: "", child, output: "" };
    node.child = child;
    node.output = "";
    this.nodes.set(id, node);
    child.stdout!.on("data", (d: Buffer) => {
      node.output += d.toString();
    });
    child.stderr!.on("data", (d: Buffer) => {
      node.output += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${id} did not start in time:\n${node.output}`)),
        20_000,
      );
      const check = () => {
        const m = /serving the API on https?:\/\/([0-9.]+:[0-9]+) \(peer ([0-9.]+:[0-9]+)\)/.exec(
          node.output,
        );
        if (m) {
          clearTimeout(timer);
          node.api = m[1]!;
          node.peer = m[2]!;
          resolve();
        }
      };
      child.stdout!.on("data", check);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${id} exited with ${code} before serving:\n${node.output}`));
      });
    });
    child.removeAllListeners("exit");
    return node;
  }

  url(id: string, p: string): string {
    return `http://${this.nodes.get(id)!.api}${p}`;
  }

  /** SIGKILL: a crash. */
  async kill(id: string): Promise<void> {
    await this.signal(id, "SIGKILL");
  }

  /** SIGTERM: a clean stop; resolves with the exit code. */
  async stop(id: string): Promise<number | null> {
    return this.signal(id, "SIGTERM");
  }

  private async signal(id: string, sig: NodeJS.Signals): Promise<number | null> {
    const n = this.nodes.get(id);
    const c = n?.child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => c.on("exit", (code) => resolve(code)));
    c.kill(sig);
    const code = await exited;
    n!.child = undefined;
    return code;
  }

  /**
   * Resolves with the exit code once node `id`'s process exits by itself (at once if it already has),
   * and forgets the process; with "still running after ...", instead, if it has not within `ms`.
   */
  exited(id: string, ms = 60_000): Promise<number | null | string> {
    const n = this.nodes.get(id)!;
    const c = n.child!;
    const exit = new Promise<number | null>((resolve) => {
      if (c.exitCode !== null) resolve(c.exitCode);
      else c.on("exit", (code) => resolve(code));
    }).then((code) => {
      if (n.child === c) n.child = undefined;
      return code;
    });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`still running after ${ms / 1000} s`), ms);
    });
    return Promise.race([exit, late]).finally(() => clearTimeout(timer));
  }

  /** Polls `fn` until it returns true, at most `ms`. */
  async until(what: string, fn: () => Promise<boolean>, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      if (await fn().catch(() => false)) return;
      if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Waits until node `id` sees every listed member up; with `atAddresses`, up at the API and peer
   * addresses it has now (a node just restarted takes its saved members as up for a while, wherever
   * they are).
   */
  async converged(id: string, members: string[], opts: { atAddresses?: boolean; ms?: number } = {}) {
    const where = opts.atAddresses === true ? " at their addresses" : "";
    await this.until(
      `${id} to see ${members.join(",")} up${where}`,
      async () => {
        const s = (await (await fetch(this.url(id, "/status"))).json()) as {
          members: { id: string; state: string; api: string; peer: string }[];
        };
        return members.every((m) => {
          const n = this.nodes.get(m);
          return s.members.some(
            (x) =>
              x.id === m &&
              x.state === "up" &&
              (opts.atAddresses !== true || (x.api === n?.api && x.peer === n?.peer)),
          );
        });
      },
      opts.ms,
    );
  }

  async shutdown(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id)));
    rmSync(this.root, { recursive: true, force: true });
  }
}

export interface Res {
  status: number;
  headers: Headers;
  text: string;
  json: () => Record<string, unknown>;
}

export async function http(url: string, init: RequestInit = {}): Promise<Res> {
  const r = await fetch(url, init);
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: () => JSON.parse(text) };
}
