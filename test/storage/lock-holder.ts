/**
 * Child program of test/storage/lock.test.ts and stats-cli.test.ts: opens the store in <dir> and holds
 * it until killed, or until <maxMs> have passed (then it closes the store and exits 0).
 *
 *   writer    LsmEngine.open, then <keys> puts of key-<i> -> value-<i> (fsync), then holds
 *   reader    LsmEngine.openReadOnly, then holds
 *
 * It prints one line on stdout: `held <pid>` once it holds the store, or `refused <code> <message>` if
 * the open failed (then it exits 3).
 *
 * Usage: lock-holder.ts <dir> writer|reader [keys] [maxMs]
 */
import { writeSync } from "node:fs";
import { LsmEngine, NodeFileSystem, StorageError } from "../../src/storage/index.js";

const [dir, mode, keysArg, maxMsArg] = process.argv.slice(2);
if (dir === undefined || (mode !== "writer" && mode !== "reader")) {
  process.stderr.write("usage: lock-holder.ts <dir> writer|reader [keys] [maxMs]\n");
  process.exit(2);
}
const keys = Number(keysArg ?? "0");
const maxMs = Number(maxMsArg ?? "30000");

let engine: LsmEngine;
try {
  const config = { dir, fs: new NodeFileSystem(), options: { memtableBytes: 64 * 1024 * 1024 } };
  engine = mode === "writer" ? await LsmEngine.open(config) : await LsmEngine.openReadOnly(config);
} catch (err) {
  if (!(err instanceof StorageError)) throw err;
  writeSync(1, `refused ${err.code} ${err.message}\n`);
  process.exit(3);
}
for (let i = 0; i < keys; i++) await engine.put(Buffer.from(`key-${i}`), Buffer.from(`value-${i}`));
writeSync(1, `held ${process.pid}\n`);
setTimeout(() => {
  void engine.close().then(() => process.exit(0));
}, maxMs);
