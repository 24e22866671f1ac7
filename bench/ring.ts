/**
 * Ring benchmark: Dynamo strategy 3 (src/ring/ring.ts) at 3, 10, 100 and 1000 nodes.
 *
 *   npm run bench:ring                  # node --expose-gc --import tsx bench/ring.ts
 *   npm run bench:ring -- --seed 7      # other random keys and tokens
 *
 * For each cluster size (Q = 4096 up to 100 nodes, 16384 at 1000) it prints:
 *   balance     equal weights: the most loaded node's share / the mean share (target <= 1.10)
 *   weights     weights 1, 2, 3, 4 cycling: the worst |share - weighted share| / weighted share (<= 10%)
 *   join        one node of weight 1 joins an equal-weight ring: the fraction of partitions, and of 200k
 *               random keys (looked up through PreferenceTable.forKey before and after), whose owner
 *               changed, against the ideal 1/(S+1) (target <= 1.2x), and whether all went to the new node;
 *               then the same with weights 1..4 cycling (a join and a leave): moves between nodes that
 *               neither joined nor left, which should be 0
 *   pref lists  N=3: lists with a repeated node or fewer than min(3, nodes) entries (must be 0); with 3
 *               zones (node i in zone i mod 3): the fraction of lists spanning the 3 zones
 *   time        claim of a fresh ring, claim of the join, building the PreferenceTable (best of runs)
 *   lookup      ns per key over 1,000,000 lookups: PreferenceTable.forKey (hash, multiply, index) against the
 *               classic random-token ring in the same run: a binary search over V = Q sorted random 32-bit
 *               tokens (O(log V)) after the same hash, then an index; also both with the hash precomputed.
 *
 * Everything random comes from a seeded generator, so two runs see the same keys, tokens and rings; only
 * the times vary. Nothing is written anywhere.
 */
import * as os from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { hash32 } from "../src/core/hash.js";
import {
  claim,
  ownership,
  PreferenceTable,
  partitionOf,
  type Ring,
  type RingMember,
} from "../src/ring/ring.js";
import { type Random, seededRandom } from "../src/runtime/runtime.js";

const CLUSTERS: readonly { nodes: number; q: number }[] = [
  { nodes: 3, q: 4096 },
  { nodes: 10, q: 4096 },
  { nodes: 100, q: 4096 },
  { nodes: 1000, q: 16384 },
];
const N = 3;
const ZONES = 3;
const MOVE_KEYS = 200_000;
const KEY_BYTES = 16;
const LOOKUPS = 1_000_000;
const LOOKUP_KEY_POOL = 1 << 16; // distinct keys cycled through by the lookup loops
const LOOKUP_ROUNDS = 5;
/** src/ring/ring.ts's RING_SEED (not exported), so the locate loops find forKey's partition; checked in main. */
const HASH_SEED = 0x52494e47;

const TARGET_BALANCE = 1.1;
const TARGET_WEIGHT_DEVIATION = 0.1;
const TARGET_MOVE_RATIO = 1.2;

// ------------------------------------------------------------------------------------------ helpers

const verdict = (ok: boolean): string => (ok ? "PASS" : "MISS");
const fixed = (x: number, digits: number): string => x.toFixed(digits);
const pct = (x: number, digits = 2): string => `${(100 * x).toFixed(digits)}%`;
const row = (cells: readonly (string | number)[], widths: readonly number[]): string =>
  cells.map((c, i) => String(c).padStart(widths[i]!)).join("  ");

function printTable(title: string, header: readonly string[], rows: readonly (string | number)[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  console.log(`\n${title}`);
  console.log(row(header, widths));
  for (const r of rows) console.log(row(r, widths));
}

const nodeId = (i: number): string => `node-${String(i).padStart(4, "0")}`;

function members(count: number, weight: (i: number) => number, zoned = false): RingMember[] {
  return Array.from({ length: count }, (_, i) => ({
    id: nodeId(i),
    weight: weight(i),
    zone: zoned ? `zone-${i % ZONES}` : undefined,
  }));
}

function randomKeys(random: Random, count: number): Uint8Array[] {
  const buf = new Uint8Array(count * KEY_BYTES);
  for (let i = 0; i < buf.length; i += 4) {
    const x = (random.next() * 0x1_0000_0000) >>> 0;
    buf[i] = x & 0xff;
    buf[i + 1] = (x >>> 8) & 0xff;
    buf[i + 2] = (x >>> 16) & 0xff;
    buf[i + 3] = x >>> 24;
  }
  return Array.from({ length: count }, (_, i) => buf.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES));
}

/** With `node --expose-gc`, a collection before each timed call keeps one call's garbage out of the next. */
const collect = (globalThis as { gc?: () => void }).gc ?? (() => {});

/**
 * Best (least) wall time in ms of `runs` calls, and the last result. The least, not the median: on a shared
 * machine interference only ever adds time, so the minimum is the most repeatable estimate.
 */
function timed<T>(runs: number, fn: () => T): { ms: number; value: T } {
  const times: number[] = [];
  let value: T | undefined;
  for (let i = 0; i < runs; i++) {
    collect();
    const t0 = performance.now();
    value = fn();
    times.push(performance.now() - t0);
  }
  return { ms: Math.min(...times), value: value as T };
}

/** Partitions whose owner changed; and how many of them went to a node other than `to`. */
function moves(before: Ring, after: Ring, to: string | undefined): { moved: number; elsewhere: number } {
  let moved = 0;
  let elsewhere = 0;
  for (let p = 0; p < before.partitions; p++) {
    if (before.owners[p] === after.owners[p]) continue;
    moved++;
    if (to !== undefined && after.owners[p] !== to) elsewhere++;
  }
  return { moved, elsewhere };
}

// ------------------------------------------------------------------------------------------ lookups

// Each loop is its own function so that V8 optimises each call site for one shape.

function lookupTable(table: PreferenceTable, keys: readonly Uint8Array[], count: number): number {
  const mask = keys.length - 1;
  let sink = 0;
  for (let i = 0; i < count; i++) sink += table.forKey(keys[i & mask]!).length;
  return sink;
}

/** The first token >= h, wrapping to token 0: the successor on a ring of random tokens. */
function successor(tokens: Uint32Array, h: number): number {
  let lo = 0;
  let hi = tokens.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (tokens[mid]! < h) lo = mid + 1;
    else hi = mid;
  }
  return lo === tokens.length ? 0 : lo;
}

function lookupTokens(
  tokens: Uint32Array,
  lists: readonly (readonly string[])[],
  keys: readonly Uint8Array[],
  count: number,
): number {
  const mask = keys.length - 1;
  let sink = 0;
  for (let i = 0; i < count; i++)
    sink += lists[successor(tokens, hash32(keys[i & mask]!, HASH_SEED))]!.length;
  return sink;
}

/** Locate only: partitionOf's multiply on a precomputed hash. */
function locateTable(table: PreferenceTable, hashes: Uint32Array, count: number): number {
  const mask = hashes.length - 1;
  const q = table.ring.partitions;
  let sink = 0;
  for (let i = 0; i < count; i++)
    sink += table.forPartition(Math.floor((hashes[i & mask]! * q) / 0x1_0000_0000)).length;
  return sink;
}

function locateTokens(
  tokens: Uint32Array,
  lists: readonly (readonly string[])[],
  hashes: Uint32Array,
  count: number,
): number {
  const mask = hashes.length - 1;
  let sink = 0;
  for (let i = 0; i < count; i++) sink += lists[successor(tokens, hashes[i & mask]!)]!.length;
  return sink;
}

/** ns per lookup: best of the rounds, ours and the reference alternating, after a warm-up of each. */
function nsPerLookup(ours: (count: number) => number, ref: (count: number) => number): [number, number] {
  let sink = ours(LOOKUPS / 5) + ref(LOOKUPS / 5);
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < LOOKUP_ROUNDS; r++) {
    collect();
    let t0 = performance.now();
    sink += ours(LOOKUPS);
    a.push(((performance.now() - t0) * 1e6) / LOOKUPS);
    collect();
    t0 = performance.now();
    sink += ref(LOOKUPS);
    b.push(((performance.now() - t0) * 1e6) / LOOKUPS);
  }
  if (sink === 0) throw new Error("lookups returned only empty lists");
  return [Math.min(...a), Math.min(...b)];
}

// ------------------------------------------------------------------------------------------ main

function main(): void {
  const { values } = parseArgs({ options: { seed: { type: "string", default: "1" } } });
  const seed = Number(values.seed);
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
  const random = seededRandom(seed);

  const cpus = os.cpus();
  console.log("ringstore ring benchmark (Dynamo strategy 3: Q fixed partitions claimed by weight)");
  console.log(
    `machine: ${cpus[0]?.model.trim() ?? "unknown CPU"}, ${cpus.length} logical cores ` +
      `(available parallelism ${os.availableParallelism()}), ${fixed(os.totalmem() / 2 ** 30, 1)} GiB, ` +
      `${os.platform()} ${os.arch()}`,
  );
  const load = os
    .loadavg()
    .map((x) => fixed(x, 2))
    .join(" ");
  const gc = (globalThis as { gc?: unknown }).gc !== undefined ? "yes" : "no (run with --expose-gc)";
  console.log(
    `runtime: node ${process.version}, V8 ${process.versions.v8}; load average ${load}; gc between runs: ${gc}`,
  );
  console.log(
    `seed ${seed}; N=${N}; ${MOVE_KEYS.toLocaleString("en-US")} random ${KEY_BYTES}-byte keys for movement; ` +
      `${LOOKUPS.toLocaleString("en-US")} lookups x ${LOOKUP_ROUNDS} rounds (best) over ` +
      `${LOOKUP_KEY_POOL.toLocaleString("en-US")} keys`,
  );

  // Warm-up: let V8 optimise claim and the table before anything is timed (the first cluster would
  // otherwise pay for the compilation).
  for (let i = 0; i < 10; i++) {
    const warm = members(10 + 10 * i, () => 1);
    const ring = claim(undefined, warm, 4096, N);
    claim(ring, [...warm, { id: "warm", weight: 1 }], 4096, N);
    new PreferenceTable(ring, warm, N);
  }

  const moveKeys = randomKeys(random, MOVE_KEYS);
  const lookupKeys = randomKeys(random, LOOKUP_KEY_POOL);
  const lookupHashes = Uint32Array.from(lookupKeys, (k) => hash32(k, HASH_SEED));

  const balanceRows: (string | number)[][] = [];
  const weightRows: (string | number)[][] = [];
  const joinRows: (string | number)[][] = [];
  const heteroRows: (string | number)[][] = [];
  const prefRows: (string | number)[][] = [];
  const timeRows: (string | number)[][] = [];
  const lookupRows: (string | number)[][] = [];

  for (const { nodes: s, q } of CLUSTERS) {
    const runs = s >= 1000 ? 3 : 5;

    // Balance, equal weights; and the times of claim and of the table.
    const equal = members(s, () => 1);
    const fresh = timed(runs, () => claim(undefined, equal, q, N));
    const ring = fresh.value;
    const own = ownership(ring);
    const mean = q / s;
    const max = Math.max(...equal.map((m) => own.get(m.id) ?? 0));
    balanceRows.push([
      s,
      q,
      fixed(mean, 2),
      max,
      fixed(max / mean, 4),
      verdict(max / mean <= TARGET_BALANCE),
    ]);

    // Weighted shares.
    const weighted = members(s, (i) => 1 + (i % 4));
    const wRing = claim(undefined, weighted, q, N);
    const wOwn = ownership(wRing);
    const total = weighted.reduce((sum, m) => sum + m.weight, 0);
    let worst = 0;
    let worstAt = "";
    for (const m of weighted) {
      const share = (q * m.weight) / total;
      const dev = Math.abs((wOwn.get(m.id) ?? 0) - share) / share;
      if (dev > worst) {
        worst = dev;
        worstAt = `${m.id} (w=${m.weight}): ${wOwn.get(m.id) ?? 0} vs ${fixed(share, 2)}`;
      }
    }
    weightRows.push([s, q, pct(worst), worstAt, verdict(worst <= TARGET_WEIGHT_DEVIATION)]);

    // Join of one node, equal weights: partitions and keys.
    const joiner: RingMember = { id: nodeId(s), weight: 1 };
    const joinedMembers = [...equal, joiner];
    const join = timed(runs, () => claim(ring, joinedMembers, q, N));
    const joined = join.value;
    const ideal = 1 / (s + 1);
    const pm = moves(ring, joined, joiner.id);
    const before = new PreferenceTable(ring, equal, N);
    const after = new PreferenceTable(joined, joinedMembers, N);
    let keysMoved = 0;
    let keysElsewhere = 0;
    let replicaSetsChanged = 0;
    for (const key of moveKeys) {
      const a = before.forKey(key);
      const b = after.forKey(key);
      if (a[0] !== b[0]) {
        keysMoved++;
        if (b[0] !== joiner.id) keysElsewhere++;
      }
      if (a.some((id, i) => b[i] !== id)) replicaSetsChanged++;
    }
    const partRatio = pm.moved / q / ideal;
    const keyRatio = keysMoved / MOVE_KEYS / ideal;
    joinRows.push([
      s,
      q,
      pct(ideal, 3),
      `${pm.moved} (${pct(pm.moved / q, 3)})`,
      fixed(partRatio, 3),
      `${keysMoved} (${pct(keysMoved / MOVE_KEYS, 3)})`,
      fixed(keyRatio, 3),
      pm.elsewhere === 0 && keysElsewhere === 0 ? "yes" : `NO (${pm.elsewhere} parts, ${keysElsewhere} keys)`,
      pct(replicaSetsChanged / MOVE_KEYS, 2),
      verdict(partRatio <= TARGET_MOVE_RATIO && keyRatio <= TARGET_MOVE_RATIO && pm.elsewhere === 0),
    ]);

    // Join and leave with weights 1..4 cycling: moves between nodes that neither joined nor left.
    const hJoiner: RingMember = { id: nodeId(s), weight: 1 };
    const hJoined = claim(wRing, [...weighted, hJoiner], q, N);
    const hj = moves(wRing, hJoined, hJoiner.id);
    const leaver = weighted[0]!;
    const hLeft = claim(
      wRing,
      weighted.filter((m) => m !== leaver),
      q,
      N,
    );
    let leaveOthers = 0;
    for (let p = 0; p < q; p++)
      if (wRing.owners[p] !== hLeft.owners[p] && wRing.owners[p] !== leaver.id) leaveOthers++;
    const leaveOwn = wOwn.get(leaver.id) ?? 0;
    heteroRows.push([
      s,
      q,
      hj.moved,
      hj.elsewhere,
      leaveOwn,
      leaveOthers,
      verdict(hj.elsewhere === 0 && leaveOthers === 0),
    ]);

    // Preference lists, without and with zones.
    const table = timed(runs, () => new PreferenceTable(ring, equal, N));
    const zoned = members(s, () => 1, true);
    const zRing = claim(undefined, zoned, q, N);
    const zTable = timed(runs, () => new PreferenceTable(zRing, zoned, N));
    const zoneOf = new Map(zoned.map((m) => [m.id, m.zone]));
    const want = Math.min(N, s);
    let violations = 0;
    let zViolations = 0;
    let spanning = 0;
    for (let p = 0; p < q; p++) {
      const list = table.value.forPartition(p);
      if (list.length !== want || new Set(list).size !== list.length) violations++;
      const zList = zTable.value.forPartition(p);
      if (zList.length !== want || new Set(zList).size !== zList.length) zViolations++;
      if (new Set(zList.map((id) => zoneOf.get(id))).size === ZONES) spanning++;
    }
    prefRows.push([
      s,
      q,
      violations,
      zViolations,
      pct(spanning / q, 2),
      verdict(violations === 0 && zViolations === 0),
    ]);

    timeRows.push([
      s,
      q,
      fixed(fresh.ms, 2),
      fixed(join.ms, 2),
      fixed(table.ms, 2),
      fixed(zTable.ms, 2),
      runs,
    ]);

    // Lookups: the same table against V = Q random tokens.
    const tokens = new Uint32Array(q);
    for (let i = 0; i < q; i++) tokens[i] = (random.next() * 0x1_0000_0000) >>> 0;
    tokens.sort();
    const tokenLists = Array.from({ length: q }, (_, i) => table.value.forPartition(i));
    const t = table.value;
    for (const [i, key] of lookupKeys.entries())
      if (Math.floor((lookupHashes[i]! * q) / 0x1_0000_0000) !== partitionOf(key, q))
        throw new Error("the locate loop does not compute partitionOf: HASH_SEED differs from the ring's");
    const [fullOurs, fullRef] = nsPerLookup(
      (n) => lookupTable(t, lookupKeys, n),
      (n) => lookupTokens(tokens, tokenLists, lookupKeys, n),
    );
    const [locOurs, locRef] = nsPerLookup(
      (n) => locateTable(t, lookupHashes, n),
      (n) => locateTokens(tokens, tokenLists, lookupHashes, n),
    );
    lookupRows.push([
      s,
      q,
      fixed(fullOurs, 1),
      fixed(fullRef, 1),
      fixed(fullOurs / fullRef, 2),
      fixed(locOurs, 1),
      fixed(locRef, 1),
      fixed(locOurs / locRef, 2),
    ]);
  }

  printTable(
    `balance, equal weights: most loaded node's share / mean share (target <= ${TARGET_BALANCE})`,
    ["nodes", "Q", "mean", "max", "max/mean", "verdict"],
    balanceRows,
  );
  printTable(
    `weighted shares, weights 1,2,3,4 cycling: worst |owned - Q*w/W| / (Q*w/W) ` +
      `(target <= ${pct(TARGET_WEIGHT_DEVIATION, 0)})`,
    ["nodes", "Q", "worst", "where (owned vs weighted share)", "verdict"],
    weightRows,
  );
  printTable(
    `join one node, equal weights: owners changed vs ideal 1/(S+1) (target <= ${TARGET_MOVE_RATIO}x, all to new)`,
    [
      "nodes",
      "Q",
      "ideal",
      "parts moved",
      "/ideal",
      "keys moved",
      "/ideal",
      "all to new",
      "N-sets chg",
      "verdict",
    ],
    joinRows,
  );
  console.log(
    "  (keys moved: keys whose primary owner, by PreferenceTable.forKey, changed;\n" +
      "   N-sets chg: keys whose preference list changed at all)",
  );
  printTable(
    "weights 1,2,3,4 cycling: a node of weight 1 joins, or node-0000 (weight 1) leaves; " +
      "moves between other nodes (must be 0)",
    ["nodes", "Q", "join moved", "old->old", "leaver owned", "stayer->stayer", "verdict"],
    heteroRows,
  );
  printTable(
    `preference lists, N=${N}: violations (repeated node or short list; must be 0); ${ZONES} zones: ` +
      `lists spanning ${ZONES} zones`,
    ["nodes", "Q", "violations", "violations (zones)", "span 3 zones", "verdict"],
    prefRows,
  );
  printTable(
    "time, ms (best of runs)",
    ["nodes", "Q", "claim fresh", "claim join", "PreferenceTable", "PreferenceTable (zones)", "runs"],
    timeRows,
  );
  printTable(
    `lookup, ns per key (best of ${LOOKUP_ROUNDS} x ${LOOKUPS.toLocaleString("en-US")}); reference: ` +
      "binary search over V=Q sorted random 32-bit tokens",
    ["nodes", "Q=V", "forKey", "hash+bsearch", "ours/ref", "locate: multiply", "locate: bsearch", "ours/ref"],
    lookupRows,
  );
  console.log(
    "  (forKey: MurmurHash3 of the key, multiply, array index; reference: the same hash, binary search, " +
      "array index.\n   locate: the same with the hash precomputed, so only the position on the ring is timed)",
  );
}

main();
