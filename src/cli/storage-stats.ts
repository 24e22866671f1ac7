/**
 * `ringstore storage stats --data DIR`: a read-only look at a stopped store. It creates, writes, renames
 * and deletes nothing (LsmEngine.openReadOnly): a missing directory, or one that holds no store, is an
 * error. DIR is a store's directory or a node's data directory (`node.json` and `storage/`), read through
 * its `storage/`. A store a running process has open is refused: its files change under a reader, and the
 * node reports the same figures itself (GET /status, GET /metrics).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  type EngineStats,
  LockedError,
  NodeFileSystem,
  NoStoreError,
  openStorage,
  type StorageEngine,
} from "../storage/index.js";
import { bytes } from "./format.js";

/** A refusal of the command: its message is the whole sentence the user sees. */
class StatsError extends Error {}

function isDirectory(p: string): boolean {
  return fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
}

/** A node's data directory: the node's identity file beside its store's folder. */
function isNodeRoot(dir: string): boolean {
  return fs.existsSync(path.join(dir, "node.json")) && isDirectory(path.join(dir, "storage"));
}

function runningRefusal(dir: string, err: LockedError, nodeRoot: boolean): StatsError {
  const pid = err.holderPid === undefined ? "" : ` (pid ${err.holderPid})`;
  const who = nodeRoot
    ? `a ringstore node is running on ${dir}${pid}`
    : `a running process${pid} has the store in ${dir} open (a ringstore node, if it is a node's store)`;
  return new StatsError(
    `${who}: storage stats reads only a stopped node's store. Ask the running node instead (GET /status or GET /metrics on its HTTP API, or ringstore cluster status --node HOST:PORT), or stop it first`,
  );
}

export async function printStorageStats(dir: string): Promise<void> {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st === undefined)
    throw new StatsError(
      `${dir}: no such directory (storage stats reads an existing store; it creates none)`,
    );
  if (!st.isDirectory()) throw new StatsError(`${dir} is not a directory`);
  const nodeRoot = isNodeRoot(dir);
  const storeDir = nodeRoot ? path.join(dir, "storage") : dir;
  // A node may hold its data directory's own lock before its store's (while it starts): respect both.
  let releaseRoot: () => Promise<void> = async () => {};
  if (nodeRoot) {
    try {
      releaseRoot = await new NodeFileSystem().lockShared(dir);
    } catch (err) {
      if (err instanceof LockedError) throw runningRefusal(dir, err, true);
      throw err;
    }
  }
  try {
    let engine: StorageEngine;
    try {
      engine = await openStorage({ kind: "lsm", dir: storeDir, readOnly: true });
    } catch (err) {
      if (err instanceof LockedError) throw runningRefusal(dir, err, nodeRoot);
      if (err instanceof NoStoreError)
        throw new StatsError(
          nodeRoot
            ? `${dir} is a node's data directory, but its storage/ holds no store yet (no CURRENT, manifest, write-ahead log or table file)`
            : `${dir} holds no ringstore store (no CURRENT, manifest, write-ahead log or table file): give a store's directory, or a node's data directory (the --data of ringstore start)`,
        );
      throw err;
    }
    try {
      let keys = 0;
      for await (const _ of engine.iterate()) keys++;
      process.stdout.write(`${formatStoreStats(storeDir, keys, engine.stats())}\n`);
    } finally {
      await engine.close();
    }
  } finally {
    await releaseRoot();
  }
}

/** What a stopped store holds: the write counters of a read-only open are all zero, so they are left out. */
function formatStoreStats(dir: string, keys: number, s: EngineStats): string {
  let tables = 0;
  let tableBytes = 0;
  for (const l of s.levels) {
    tables += l.tables;
    tableBytes += l.bytes;
  }
  const lines = [
    `${dir} (read-only)`,
    `  live keys               ${keys.toLocaleString("en-US")}`,
    `  sequence                ${s.sequence.toLocaleString("en-US")}`,
    `  write-ahead log         ${bytes(s.memtableBytes)} in the memtable (+${s.immutableMemtables} frozen), replayed in memory`,
    `  tables                  ${tables} in ${s.levels.length} sorted run(s), ${bytes(tableBytes)}`,
  ];
  for (const l of s.levels) lines.push(`    run ${l.level}: ${l.tables} table(s), ${bytes(l.bytes)}`);
  return lines.join("\n");
}
