/**
 * Architecture rules that the linter cannot express: deterministic code reaches no clock, timer, random
 * source, file system or network except through the interfaces it receives (DEVELOPERS.md).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

/** Folders (and files) that must stay deterministic, and the few edge files allowed to touch the world. */
const CORE = [
  "src/storage",
  "src/runtime/runtime.ts",
  "src/core",
  "src/ring",
  "src/versioning",
  "src/replication",
  "src/membership",
  "src/transport/messages.ts",
  "src/node/node-core.ts",
  "src/sim",
];
const EDGE = new Set(["src/storage/fs/node-file-system.ts", "src/storage/index.ts", "src/sim/main.ts"]);
const BANNED: [RegExp, string][] = [
  [/\bDate\.now\s*\(/, "Date.now"],
  [/\bnew Date\s*\(/, "new Date"],
  [/\bMath\.random\s*\(/, "Math.random"],
  [/\bperformance\.now\s*\(/, "performance.now"],
  [/\b(setTimeout|setInterval|setImmediate)\s*\(/, "global timers"],
  [/from\s+["'](node:)?(fs|fs\/promises|net|dgram|http|child_process)["']/, "I/O modules"],
];

function files(p: string): string[] {
  if (statSync(p).isFile()) return [p];
  return readdirSync(p).flatMap((n) => files(path.join(p, n)));
}

test("deterministic layers use no clock, timer, randomness, file system or network directly", () => {
  const offences: string[] = [];
  for (const root of CORE)
    for (const f of files(root)) {
      if (!f.endsWith(".ts") || EDGE.has(f)) continue;
      const src = readFileSync(f, "utf8");
      for (const [re, what] of BANNED) if (re.test(src)) offences.push(`${f}: ${what}`);
    }
  assert.deepEqual(offences, []);
});
