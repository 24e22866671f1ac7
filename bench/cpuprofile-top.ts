/**
 * Sums V8 CPU profiles (.cpuprofile, from `node --cpu-prof` or `bench/storage.ts --profile DIR`) by
 * function self time and prints the top functions.
 *
 *   node --import tsx bench/cpuprofile-top.ts [--top N] FILE.cpuprofile [FILE...]
 *
 * Self time of a node = the sum of the time deltas of the samples taken in it. Functions are keyed by
 * name, file and line, so one function reached through many call paths counts once. Percentages are of
 * all sampled time, and of the time not idle ("(idle)" is the event loop waiting for I/O).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function shortUrl(url: string): string {
  if (url === "") return "";
  const p = url.startsWith("file://") ? new URL(url).pathname : url;
  const nm = p.lastIndexOf("/node_modules/");
  if (nm >= 0) return p.slice(nm + "/node_modules/".length);
  const cwd = `${process.cwd()}${path.sep}`;
  return p.startsWith(cwd) ? p.slice(cwd.length) : p;
}

function keyOf(f: CallFrame): string {
  const name = f.functionName === "" ? "(anonymous)" : f.functionName;
  const url = shortUrl(f.url);
  return url === "" ? name : `${name}  ${url}:${f.lineNumber + 1}`;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string" } },
});
const top = Number(values.top ?? 15);
if (positionals.length === 0) {
  console.error("usage: node --import tsx bench/cpuprofile-top.ts [--top N] FILE.cpuprofile [FILE...]");
  process.exit(2);
}

const selfUs = new Map<string, number>();
let totalUs = 0;
for (const file of positionals) {
  const prof = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
  const byId = new Map<number, string>();
  for (const n of prof.nodes) byId.set(n.id, keyOf(n.callFrame));
  for (let i = 0; i < prof.samples.length; i++) {
    const k = byId.get(prof.samples[i]!) ?? "(unknown)";
    // The delta before sample i is the time since the previous one; attribute it to this sample.
    const dt = Math.max(0, prof.timeDeltas[i] ?? 0);
    selfUs.set(k, (selfUs.get(k) ?? 0) + dt);
    totalUs += dt;
  }
}
const idleUs = selfUs.get("(idle)") ?? 0;
const busyUs = totalUs - idleUs;
const rows = [...selfUs.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
console.log(
  `${positionals.length} profile(s), ${(totalUs / 1e6).toFixed(2)} s sampled, ` +
    `${(busyUs / 1e6).toFixed(2)} s not idle`,
);
console.log(`${"self ms".padStart(9)}  ${"% all".padStart(6)}  ${"% busy".padStart(6)}  function`);
for (const [k, us] of rows) {
  const busy = k === "(idle)" ? "" : ((100 * us) / busyUs).toFixed(1);
  console.log(
    `${(us / 1000).toFixed(0).padStart(9)}  ${((100 * us) / totalUs).toFixed(1).padStart(6)}  ${busy.padStart(6)}  ${k}`,
  );
}
