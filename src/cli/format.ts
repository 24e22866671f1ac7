/** Small formatting helpers for the command line's human output. */
import type { EngineStats } from "../storage/index.js";

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function rate(ops: number, ms: number): string {
  return `${Math.round(ops / (ms / 1000)).toLocaleString("en-US")} ops/s`;
}

export function formatStats(s: EngineStats): string {
  const lines: string[] = [];
  const pct = (a: number, b: number) => (b > 0 ? `${((100 * a) / b).toFixed(2)}%` : "n/a");
  lines.push(`  sequence                ${s.sequence.toLocaleString("en-US")}`);
  lines.push(`  user bytes written      ${bytes(s.userBytesWritten)}`);
  lines.push(
    `  disk bytes written      ${bytes(s.diskBytesWritten)} (WAL ${bytes(s.walBytesWritten)}, tables ${bytes(s.tableBytesWritten)})`,
  );
  lines.push(`  write amplification     ${s.writeAmplification.toFixed(2)}`);
  lines.push(`  flushes / compactions   ${s.flushes} / ${s.compactions}`);
  lines.push(`  memtable                ${bytes(s.memtableBytes)} (+${s.immutableMemtables} frozen)`);
  lines.push(`  sorted runs (newest first):`);
  if (s.levels.length === 0) lines.push("    (none)");
  for (const l of s.levels) lines.push(`    run ${l.level}: ${l.tables} table(s), ${bytes(l.bytes)}`);
  lines.push(
    `  bloom filter            ${s.bloomChecks} checks, ${s.bloomNegatives} ruled out, ${s.bloomFalsePositives} false positives (false-positive rate ${pct(s.bloomFalsePositives, s.bloomFalsePositives + s.bloomNegatives)})`,
  );
  lines.push(
    `  block cache             ${s.blockCacheHits} hits, ${s.blockCacheMisses} misses (${pct(s.blockCacheHits, s.blockCacheHits + s.blockCacheMisses)} hit rate), ${bytes(s.blockCacheBytes)} of ${bytes(s.blockCacheCapacityBytes)}`,
  );
  lines.push(`  write stalls            ${s.writeStalls} (${Math.round(s.writeStallMs)} ms)`);
  lines.push(`  WAL fsyncs              ${s.walSyncs}`);
  return lines.join("\n");
}
