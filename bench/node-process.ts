/**
 * A node process for the benchmarks: `node ARGS` started from the repository's root, resolved once it
 * prints the line that says where it serves (its API and peer addresses), and added to `children` so the
 * caller can stop it by PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export interface NodeProc {
  readonly id: string;
  readonly api: string;
  readonly peer: string;
  readonly child: ChildProcess;
}

/** Starts `node ARGS` and resolves once it serves (30 s at most). */
export function spawnNode(
  id: string,
  args: readonly string[],
  children: Set<ChildProcess>,
): Promise<NodeProc> {
  const child = spawn(process.execPath, [...args], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id} did not start in 30 s:\n${output}`)), 30_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      if (output.length > 100_000) output = output.slice(-50_000);
      const m = /serving the API on http:\/\/([0-9.]+:[0-9]+) \(peer ([0-9.]+:[0-9]+)\)/.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off("data", onData);
        // Keep draining the pipes so a chatty node never blocks on a full pipe.
        child.stdout!.resume();
        resolve({ id, api: m[1]!, peer: m[2]!, child });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${id} exited (${code ?? signal}) before serving:\n${output}`));
    });
  });
}
