/**
 * Architecture rules that the linter cannot express. Deterministic code reaches no clock, timer, random
 * source, file system or network except through the interfaces it receives (ARCHITECTURE.md, "Layers").
 *
 * Which files are deterministic is written once, in biome.json: the override that bans I/O imports and
 * global timers lists them (folders as `dir/**`, edge files excluded with `!`). This test reads that list
 * and checks what Biome cannot: no Date.now, new Date(), Math.random, performance.now, timer calls or I/O
 * imports of any spelling in those files.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

const BANNED: [RegExp, string][] = [
  [/\bDate\.now\s*\(/, "Date.now"],
  [/\bnew Date\s*\(\s*\)/, "new Date()"],
  [/\bMath\.random\s*\(/, "Math.random"],
  [/\bperformance\.now\s*\(/, "performance.now"],
  [/\b(setTimeout|setInterval|setImmediate)\s*\(/, "global timers"],
  [
    /from\s+["'](node:)?(fs|fs\/promises|net|dgram|http|https|http2|tls|child_process|worker_threads)["']/,
    "I/O modules",
  ],
];

/** The deterministic files' globs, from the biome.json override that bans I/O imports. */
function deterministicGlobs(): string[] {
  const biome = JSON.parse(readFileSync("biome.json", "utf8")) as {
    overrides: { includes: string[]; linter?: { rules?: { style?: Record<string, unknown> } } }[];
  };
  const o = biome.overrides.find((x) => x.linter?.rules?.style?.noRestrictedImports !== undefined);
  assert.ok(o !== undefined, "biome.json has no override banning I/O imports");
  return o.includes;
}

function files(p: string): string[] {
  if (statSync(p).isFile()) return [p];
  return readdirSync(p).flatMap((n) => files(path.join(p, n)));
}

/** The files a glob list names: `dir/**` (every file below), a file path, `!` excluding either. */
function expand(globs: readonly string[]): string[] {
  const out = new Set<string>();
  for (const g of globs) {
    const neg = g.startsWith("!");
    const p = neg ? g.slice(1) : g;
    assert.ok(!p.includes("*") || p.endsWith("/**"), `biome.json glob ${g}: only dir/** and plain paths`);
    const matched = files(p.endsWith("/**") ? p.slice(0, -3) : p);
    assert.ok(matched.length > 0, `biome.json glob ${g} matches no file`);
    for (const f of matched)
      if (neg) out.delete(f);
      else out.add(f);
  }
  return [...out].filter((f) => f.endsWith(".ts")).sort();
}

test("deterministic layers use no clock, timer, randomness, file system or network directly", () => {
  const core = expand(deterministicGlobs());
  const offences: string[] = [];
  for (const f of core) {
    const src = readFileSync(f, "utf8");
    for (const [re, what] of BANNED) if (re.test(src)) offences.push(`${f}: ${what}`);
  }
  assert.deepEqual(offences, []);
});

test("the deterministic list covers the protocol layers whole (their edges named one by one)", () => {
  const core = new Set(expand(deterministicGlobs()));
  const mustBe = [
    "src/core",
    "src/ring",
    "src/versioning",
    "src/membership",
    "src/replication",
    "src/node",
    "src/sim",
    "src/storage",
    "src/listing",
  ];
  const edges = new Set([
    "src/node/node.ts",
    "src/sim/main.ts",
    "src/storage/fs/node-file-system.ts",
    "src/storage/index.ts",
    "src/storage/compaction-worker.ts",
    "src/storage/compaction-thread.ts",
  ]);
  const missing = mustBe.flatMap(files).filter((f) => f.endsWith(".ts") && !core.has(f) && !edges.has(f));
  assert.deepEqual(missing, []);
});
