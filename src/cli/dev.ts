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
  const n = Math.min(3, count);
  const quorum = Math.floor(n / 2) + 1;
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
      if (k === 1) args.push("--n", String(n), "--r", String(quorum), "--w", String(quorum));
      else
        args.push(
          "--join",
          `127.0.0.1:${base + 1001}`,
          "--cluster-key-file",
          path.join(flags.data, "n1", "cluster.key"),
        );
      const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
      children.push(child);
      let ready = false;
      child.stdout!.on(
        "data",
        prefixLines(`[n${k}] `, (l) => {
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
        prefixLines(`[n${k}] `, (l) => process.stderr.write(`${l}\n`)),
      );
      child.on("exit", (code, signal) => {
        if (!ready) reject(new Error(`node n${k} exited before serving (code ${code}, signal ${signal})`));
        else if (!stopping && code === 0) out(`[n${k}] stopped (code 0; a node that left the cluster stops)`);
        else if (!stopping) out(`[n${k}] exited unexpectedly (code ${code}, signal ${signal})`);
      });
    });
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
  out(
    `local cluster of ${count} node(s), N=${n} R=${quorum} W=${quorum}, data in ${path.resolve(flags.data)}:`,
  );
  for (let k = 1; k <= count; k++)
    out(
      `  n${k}  API http://127.0.0.1:${base + k}  peer 127.0.0.1:${base + 1000 + k}${left.has(k) ? "  (left the cluster)" : ""}`,
    );
  out(
    `try: npx ringstore put hello world && npx ringstore get hello --node 127.0.0.1:${base + Math.min(2, count)}`,
  );
  out("Ctrl-C stops every node.");
}
