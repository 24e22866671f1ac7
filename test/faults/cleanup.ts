/**
 * Everything a fault test creates outside its own memory (child processes, network namespaces, links in
 * the root namespace, temporary folders) is registered here the moment it exists, so that it is removed
 * whatever way the test ends: the scenario's own teardown (an `after` hook), or, if the test process
 * dies first, the synchronous `exit` handler (and SIGINT/SIGTERM, which then exit).
 *
 * Names carry this process's pid (`rs-<pid>-...` namespaces, `rs<pid>...` links, `ringstore-faults-<pid>-`
 * folders), so parallel runs never
 * collide, and `sweepStale()` can remove what a run that was SIGKILLed left behind: names whose pid is no
 * longer alive.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

const pids = new Set<number>();
const namespaces = new Set<string>();
const links = new Set<string>();
const dirs = new Set<string>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", cleanupAllSync);
  for (const [sig, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)
    process.once(sig, () => {
      cleanupAllSync();
      process.exit(code);
    });
}

export function trackPid(pid: number): void {
  install();
  pids.add(pid);
}
export function untrackPid(pid: number): void {
  pids.delete(pid);
}
export function trackNamespace(ns: string): void {
  install();
  namespaces.add(ns);
}
export function untrackNamespace(ns: string): void {
  namespaces.delete(ns);
}
export function trackLink(name: string): void {
  install();
  links.add(name);
}
export function untrackLink(name: string): void {
  links.delete(name);
}
export function trackDir(dir: string): void {
  install();
  dirs.add(dir);
}
export function untrackDir(dir: string): void {
  dirs.delete(dir);
}

function quietly(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: "ignore", timeout: 10_000 });
    return true;
  } catch {
    return false; // already gone, or never made: nothing left to remove
  }
}

/** Kills every tracked process, then removes namespaces, links and folders. Synchronous: safe on exit. */
export function cleanupAllSync(): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL"); // also ends a SIGSTOPped process
    } catch {
      // already exited
    }
  }
  pids.clear();
  for (const ns of namespaces) quietly("ip", ["netns", "del", ns]);
  namespaces.clear();
  for (const l of links) quietly("ip", ["link", "del", l]);
  links.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes namespaces, root links and data folders (`ringstore-faults-<pid>-*` in the temp dir) left by
 * fault runs whose process no longer exists. (Their node processes died with them: cluster.ts starts
 * nodes under `setpriv --pdeathsig KILL`.)
 */
export function sweepStale(): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(tmpdir())) {
    const m = /^ringstore-faults-(\d+)-/.exec(name);
    if (m && !alive(Number(m[1]))) {
      rmSync(path.join(tmpdir(), name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  let list = "";
  try {
    list = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
  } catch {
    return removed;
  }
  for (const line of list.split("\n")) {
    const m = /^(rs-(\d+)-\S+)/.exec(line.trim());
    if (m && !alive(Number(m[2])) && quietly("ip", ["netns", "del", m[1]!])) removed.push(m[1]!);
  }
  let ls = "";
  try {
    ls = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" });
  } catch {
    return removed;
  }
  for (const line of ls.split("\n")) {
    const m = /^\d+: (rs(\d+)[a-z]\w*)[@:]/.exec(line);
    if (m && !alive(Number(m[2])) && quietly("ip", ["link", "del", m[1]!])) removed.push(m[1]!);
  }
  return removed;
}
