/**
 * `ringstore storage compact`: a full compaction of a store (StorageEngine.compactAll: the memtables
 * flushed, every sorted run merged into one, shadowed versions and tombstones dropped), followed to its end
 * with a progress bar on a terminal and plain lines otherwise, then the tables and bytes before and after.
 *
 * - `--node HOST:PORT`: a running node's store, through `POST /storage/compact` (admin), followed in
 *   `GET /status` (storage.manualCompaction). A compaction running already is followed, not started again.
 * - `--data DIR`: a stopped node's store (a node's data directory or a store's directory), opened here.
 *   A store a running process has open is refused (the engine's lock): ask that node with `--node`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { RingstoreClient, RingstoreError } from "../client/client.js";
import {
  LockedError,
  type ManualCompactionProgress,
  NodeFileSystem,
  openStorage,
  type StorageEngine,
} from "../storage/index.js";
import { type ConnectionFlags, clientOptions } from "./connection.js";
import { bytes } from "./format.js";
import { Progress } from "./progress.js";

/** How often the progress is read while following a compaction. */
const POLL_MS = 250;
/** A node that stops answering while followed: give up after this long without an answer. */
const NO_ANSWER_MS = 30_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The figures of one progress reading, drawn on `bar`. */
function draw(bar: Progress, p: ManualCompactionProgress): void {
  const phase =
    p.phase === "merge"
      ? "merging"
      : p.phase === "wait"
        ? "waiting for a background merge"
        : "flushing the memtables";
  const total = p.phase === "merge" ? p.bytesTotal / 1024 : null;
  bar.update("compacting", p.bytesDone / 1024, total, phase);
}

/** "12 tables in 5 runs, 3.2 MiB" */
function store(tables: number | null, runs: number | null, b: number | null): string {
  return `${tables ?? "?"} table(s) in ${runs ?? "?"} sorted run(s), ${bytes(b ?? 0)}`;
}

/** The closing lines of a compaction that ended; throws (the command fails) if it failed. */
function report(where: string, p: ManualCompactionProgress): string {
  if (p.state === "failed")
    throw new Error(`the full compaction of ${where} failed: ${p.error?.message ?? "unknown error"}`);
  const secs =
    p.startedAt !== null && p.finishedAt !== null ? ((p.finishedAt - p.startedAt) / 1000).toFixed(1) : "?";
  return [
    `compacted ${where} in ${secs} s (merged ${bytes(p.bytesTotal)} of tables)`,
    `  before  ${store(p.tablesBefore, p.runsBefore, p.bytesBefore)}`,
    `  after   ${store(p.tablesAfter, p.runsAfter, p.bytesAfter)}`,
  ].join("\n");
}

// ------------------------------------------------------------------ a running node

function progressOf(doc: Record<string, unknown>): ManualCompactionProgress | undefined {
  const storage = doc.storage as { manualCompaction?: ManualCompactionProgress } | undefined;
  const c = storage?.manualCompaction ?? (doc.compaction as ManualCompactionProgress | undefined);
  return c !== undefined && typeof c === "object" && typeof c.state === "string" ? c : undefined;
}

export async function compactNodeCommand(flags: ConnectionFlags): Promise<void> {
  const c = new RingstoreClient(flags.node, {
    connections: 1,
    httpTimeoutMs: 10_000,
    ...clientOptions(flags),
  });
  const out = process.stdout;
  try {
    let first: ManualCompactionProgress | undefined;
    try {
      first = progressOf(await c.compactStorage(flags.node));
    } catch (err) {
      if (!(err instanceof RingstoreError) || err.code !== "compaction_running") throw err;
      first = progressOf(err.body);
      out.write(`node ${flags.node}: a full compaction is running already; following it\n`);
    }
    if (first === undefined) throw new Error(`node ${flags.node} answered without the compaction's progress`);
    const startedAt = first.startedAt;
    const bar = new Progress({ stream: out, unit: "KiB" });
    let p = first;
    let answeredAt = Date.now();
    while (p.state === "running") {
      draw(bar, p);
      await sleep(POLL_MS);
      let doc: Record<string, unknown>;
      try {
        doc = await c.status(flags.node);
      } catch (err) {
        if (Date.now() - answeredAt > NO_ANSWER_MS)
          throw new Error(
            `node ${flags.node} has not answered for ${NO_ANSWER_MS / 1000} s while compacting: ${(err as Error).message}`,
          );
        continue;
      }
      answeredAt = Date.now();
      const next = progressOf(doc);
      if (next === undefined) throw new Error(`node ${flags.node}'s status has no storage.manualCompaction`);
      // Another compaction than the one followed (this one ended and a new one began meanwhile): done.
      if (next.startedAt !== startedAt) break;
      p = next;
    }
    bar.finish();
    out.write(`${report(`node ${flags.node}`, p)}\n`);
  } finally {
    await c.close();
  }
}

// ------------------------------------------------------------------ a stopped node's directory

/** A node's data directory: the node's identity file beside its store's folder. */
function isNodeRoot(dir: string): boolean {
  return (
    fs.existsSync(path.join(dir, "node.json")) &&
    fs.statSync(path.join(dir, "storage"), { throwIfNoEntry: false })?.isDirectory() === true
  );
}

function runningRefusal(dir: string, err: LockedError): Error {
  const pid = err.holderPid === undefined ? "" : ` (pid ${err.holderPid})`;
  return new Error(
    `a running process${pid} has the store in ${dir} open: storage compact --data works on a stopped node's store. Ask the running node instead (ringstore storage compact --node HOST:PORT), or stop it first`,
  );
}

export async function compactDataCommand(dir: string): Promise<void> {
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (st === undefined) throw new Error(`${dir}: no such directory`);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  const nodeRoot = isNodeRoot(dir);
  const storeDir = nodeRoot ? path.join(dir, "storage") : dir;
  if (!nodeRoot && !fs.readdirSync(dir).some((n) => n === "CURRENT"))
    throw new Error(
      `${dir} holds no ringstore store (no CURRENT): give a store's directory, or a node's data directory (the --data of ringstore start)`,
    );
  // A node holds its data directory's lock while it runs (and its store's): take both, exclusively.
  let releaseRoot: () => Promise<void> = async () => {};
  if (nodeRoot) {
    try {
      releaseRoot = await new NodeFileSystem().lock(dir);
    } catch (err) {
      if (err instanceof LockedError) throw runningRefusal(dir, err);
      throw err;
    }
  }
  try {
    let engine: StorageEngine;
    try {
      engine = await openStorage({ kind: "lsm", dir: storeDir });
    } catch (err) {
      if (err instanceof LockedError) throw runningRefusal(dir, err);
      throw err;
    }
    try {
      const run = engine.compactAll();
      const bar = new Progress({ stream: process.stdout, unit: "KiB" });
      let ended = false;
      void run.done.then(() => {
        ended = true;
      });
      while (!ended) {
        draw(bar, engine.compactionProgress());
        await Promise.race([run.done, sleep(POLL_MS)]);
      }
      bar.finish();
      process.stdout.write(`${report(storeDir, await run.done)}\n`);
    } finally {
      await engine.close();
    }
  } finally {
    await releaseRoot();
  }
}
