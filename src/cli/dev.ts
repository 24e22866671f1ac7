/**
 * `ringstore dev [--nodes 3] [--data DIR]`: a local cluster on 127.0.0.1, one real process per node
 * (`ringstore start`), node k on API port 8000+k and peer port 9000+k. The first node creates the cluster
 * (or restarts it, if its data exists); the others join through it, given its cluster key
 * (`<data>/n1/cluster.key`, which n1 wrote when it created the cluster). Ctrl-C stops every node cleanly.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { DataDir } from "../node/data-dir.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";

export interface DevFlags {
  nodes: string;
  data: string;
  basePort: string;
  n?: string;
  r?: string;
  w?: string;
  durability?: string;
}

/** A node that crashed is started again after this long... */
const RESTART_DELAY_MS = 1000;
/** ...unless it crashed this many times within RESTART_WINDOW_MS: then it is left down, and said so. */
const RESTARTS_MAX = 5;
const RESTART_WINDOW_MS = 60_000;

function whole(v: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v) || Number(v) < min || Number(v) > max)
    throw new Error(`${flag} must be a whole number ${min}..${max}, got "${v}"`);
  return Number(v);
}

function prefixLines(prefix: string, onLine: (l: string) => void) {
  let buf = "";
  return (chunk: Buffer) => {
    buf += chunk.toString("utf8");
    let i = buf.indexOf("\n");
    while (i >= 0) {
      onLine(`${prefix}${buf.slice(0, i)}`);
      buf = buf.slice(i + 1);
      i = buf.indexOf("\n");
    }
  };
}

/**
 * A node's log line as a person reads it: its message, after the level when above info (the nodes log
 * JSON lines; `dev` is for people). A line that is not a log object is shown as it is.
 */
export function humanLine(line: string): string {
  if (!line.startsWith("{")) return line;
  try {
    const j = JSON.parse(line) as { level?: unknown; msg?: unknown };
    if (typeof j.msg !== "string") return line;
    const level = typeof j.level === "string" && j.level !== "info" ? `${j.level.toUpperCase()}: ` : "";
    return `${level}${j.msg}`;
  } catch {
    return line;
  }
}

/** Did the node of this data directory leave its cluster (its saved view says so)? */
async function leftEarlier(dataDir: string, id: string): Promise<boolean> {
  try {
    const view = await new DataDir(new NodeFileSystem(), dataDir).readView();
    return view?.members.some((m) => m.id === id && m.status === "left") === true;
  } catch {
    return false; // an unreadable view: start the node, and let it say what is wrong
  }
}

export async function devCommand(flags: DevFlags): Promise<void> {
  const count = Number(flags.nodes);
  const base = Number(flags.basePort);
  if (!Number.isInteger(count) || count < 1 || count > 32)
    throw new Error(`--nodes must be 1..32, got ${flags.nodes}`);
  // API ports are base+1..base+count, peer ports base+1001..base+1000+count.
  if (!Number.isInteger(base) || base < 1024 || base + 1000 + count > 65535)
    throw new Error(
      `--base-port must be a whole number from 1024 to ${65535 - 1000 - count} (peer ports are base+1000+k), got ${flags.basePort}`,
    );
  const main = path.join(path.dirname(fileURLToPath(import.meta.url)), "main.js");
  const n = whole(flags.n, "--n", 1, count) ?? Math.min(3, count);
  const r = whole(flags.r, "--r", 1, n) ?? Math.floor(n / 2) + 1;
  const w = whole(flags.w, "--w", 1, n) ?? Math.floor(n / 2) + 1;
  if (flags.durability !== undefined && !["fsync", "interval", "none"].includes(flags.durability))
    throw new Error(`--durability must be fsync, interval or none, got "${flags.durability}"`);
  const crashes = new Map<number, number[]>();
  const pids = new Map<number, number | undefined>();
  const children: ChildProcess[] = [];
  let stopping = false;
  const out = (s: string) => process.stdout.write(`${s}\n`);

  const left = new Set<number>();
  const startOne = async (k: number): Promise<void> => {
    const gone = await leftEarlier(path.join(flags.data, `n${k}`), `n${k}`);
    return new Promise((resolve, reject) => {
      if (gone) {
        left.add(k);
        out(
          `[n${k}] left the cluster earlier (cluster leave): not started; remove ${path.join(flags.data, `n${k}`)} to run a new node in its place`,
        );
        return resolve();
      }
      const args = [
        main,
        "start",
        "--id",
        `n${k}`,
        "--api",
        `127.0.0.1:${base + k}`,
        "--peer",
        `127.0.0.1:${base + 1000 + k}`,
        "--data",
        path.join(flags.data, `n${k}`),
      ];
      if (flags.durability !== undefined) args.push("--durability", flags.durability);
      if (k === 1) args.push("--n", String(n), "--r", String(r), "--w", String(w));
      else
        args.push(
          "--join",
          `127.0.0.1:${base + 1001}`,
          "--cluster-key-file",
          path.join(flags.data, "n1", "cluster.key"),
        );
      const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      pids.set(k, child.pid);
      let ready = false;
      child.stdout!.on(
        "data",
        prefixLines(`[n${k}] `, (l) => {
          l = `[n${k}] ${humanLine(l.slice(`[n${k}] `.length))}`;
          // The first node's note on a cluster of one is moot here: the others join at once.
          if (!l.includes("note: a cluster of one node")) out(l);
          if (!ready && l.includes("serving the API")) {
            ready = true;
            resolve();
          }
        }),
      );
      child.stderr!.on(
        "data",
        prefixLines(`[n${k}] `, (l) =>
          process.stderr.write(`[n${k}] ${humanLine(l.slice(`[n${k}] `.length))}\n`),
        ),
      );
      child.on("exit", (code, signal) => {
        children.splice(children.indexOf(child), 1);
        if (!ready) reject(new Error(`node n${k} exited before serving (code ${code}, signal ${signal})`));
        else if (!stopping && code === 0) out(`[n${k}] stopped (code 0; a node that left the cluster stops)`);
        else if (!stopping) restart(k, `code ${code}, signal ${signal}`);
      });
    });
  };

  /** A node that crashed is started again (same data, same ports), unless it keeps crashing. */
  const restart = (k: number, how: string) => {
    const now = Date.now();
    const recent = (crashes.get(k) ?? []).filter((t) => now - t < RESTART_WINDOW_MS);
    recent.push(now);
    crashes.set(k, recent);
    if (recent.length > RESTARTS_MAX) {
      out(
        `[n${k}] crashed (${how}), ${recent.length} times within ${RESTART_WINDOW_MS / 1000} s: not restarted again; see its output above`,
      );
      return;
    }
    out(`[n${k}] crashed (${how}): restarting it in ${RESTART_DELAY_MS / 1000} s (same data and ports)`);
    setTimeout(() => {
      if (stopping) return;
      startOne(k).then(
        () => out(`[n${k}] restarted after a crash (pid ${pids.get(k)})`),
        (err: unknown) => out(`[n${k}] could not be restarted: ${(err as Error).message}`),
      );
    }, RESTART_DELAY_MS);
  };

  const stopAll = async () => {
    stopping = true;
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.on("exit", () => resolve());
            c.kill("SIGTERM");
          }),
      ),
    );
  };
  const onSignal = () => {
    if (stopping) return;
    out("stopping the local cluster...");
    stopAll().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    await startOne(1);
    await Promise.all(Array.from({ length: count - 1 }, (_, i) => startOne(i + 2)));
  } catch (err) {
    await stopAll();
    throw err;
  }
  out("");
  out(`local cluster of ${count} node(s), N=${n} R=${r} W=${w}, data in ${path.resolve(flags.data)}:`);
  for (let k = 1; k <= count; k++)
    out(
      `  n${k}  API http://127.0.0.1:${base + k}  peer 127.0.0.1:${base + 1000 + k}${left.has(k) ? "  (left the cluster)" : `  pid ${pids.get(k)}`}`,
    );
  // The hints name --node unless it is the CLI's default (base 8000, node 1).
  const at = (k: number) => (base + k === 8001 ? "" : ` --node 127.0.0.1:${base + k}`);
  out(
    `try: npx ringstore put hello world${at(1)} && npx ringstore get hello${count >= 2 ? ` --node 127.0.0.1:${base + 2}` : at(1)}`,
  );
  out(`     npx ringstore cluster status${at(1)}; the dashboard: http://127.0.0.1:${base + 1}/ui`);
  out("A node that crashes is restarted (same data and ports); Ctrl-C stops every node.");
}
