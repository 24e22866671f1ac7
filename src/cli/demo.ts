/**
 * `ringstore demo`: a short tour of the storage engine on real disk. Writes keys in batches and one at a
 * time (fsynced, group-committed), reads them back, deletes some, scans a range, closes, reopens (which
 * replays the write-ahead log), checks every key, and prints the engine's statistics at each step.
 */
import { openStorage, type StorageEngine } from "../storage/index.js";
import { formatStats, rate } from "./format.js";

const key = (i: number) => Buffer.from(`demo-key-${String(i).padStart(9, "0")}`);
const value = (i: number, round: number) =>
  Buffer.from(`value ${i} written in round ${round}`.padEnd(100, "."));

async function check(engine: StorageEngine, n: number): Promise<number> {
  let bad = 0;
  for (let i = 0; i < n; i++) {
    const v = await engine.get(key(i));
    const want = i % 10 === 0 ? undefined : value(i, i % 7 === 0 ? 2 : 1);
    if ((v === undefined) !== (want === undefined) || (v && want && !want.equals(v))) bad++;
  }
  return bad;
}

export async function runDemo(dir: string, n: number): Promise<void> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`ringstore storage demo: ${n.toLocaleString("en-US")} keys in ${dir}`);
  let engine = await openStorage({ kind: "lsm", dir });
  out(`opened (recovered ${engine.stats().sequence.toLocaleString("en-US")} earlier writes)`);

  let t = performance.now();
  for (let i = 0; i < n; i += 1000) {
    const ops = [];
    for (let j = i; j < Math.min(n, i + 1000); j++)
      ops.push({ kind: "put" as const, key: key(j), value: value(j, 1) });
    await engine.write(ops);
  }
  out(`wrote ${n} keys in batches of 1000, fsynced: ${rate(n, performance.now() - t)}`);

  t = performance.now();
  const writers = 32;
  let next = 0;
  let rewritten = 0;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      for (;;) {
        const i = next;
        next += 7;
        if (i >= n) return;
        await engine.put(key(i), value(i, 2));
        rewritten++;
      }
    }),
  );
  out(
    `overwrote ${rewritten} keys with ${writers} concurrent writers, each write fsynced: ${rate(rewritten, performance.now() - t)}`,
  );

  t = performance.now();
  const dels = [];
  for (let i = 0; i < n; i += 10) dels.push({ kind: "delete" as const, key: key(i) });
  await engine.write(dels);
  out(`deleted ${dels.length} keys in one atomic batch in ${Math.round(performance.now() - t)} ms`);

  t = performance.now();
  const bad = await check(engine, n);
  out(
    `read back all ${n} keys: ${bad === 0 ? "all correct" : `${bad} WRONG`} (${rate(n, performance.now() - t)})`,
  );

  let scanned = 0;
  for await (const e of engine.iterate({ gte: key(Math.floor(n / 2)), limit: 5 })) {
    if (scanned === 0) out("first entries from the middle of the key space:");
    out(`  ${e.key.toString()} = ${Buffer.from(e.value).toString().replace(/\.+$/, "")}`);
    scanned++;
  }
  out("\nstatistics before close:");
  out(formatStats(engine.stats()));
  await engine.close();

  t = performance.now();
  engine = await openStorage({ kind: "lsm", dir });
  out(
    `\nreopened in ${Math.round(performance.now() - t)} ms (the write-ahead log was replayed into a table)`,
  );
  const bad2 = await check(engine, n);
  out(`read back all ${n} keys after reopen: ${bad2 === 0 ? "all correct" : `${bad2} WRONG`}`);
  out("\nstatistics after reopen:");
  out(formatStats(engine.stats()));
  await engine.close();
  out(`\ndata left in ${dir}; inspect it with: ringstore storage stats --data ${dir}`);
  if (bad !== 0 || bad2 !== 0) process.exitCode = 1;
}
