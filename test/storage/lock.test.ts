/**
 * The data-directory lock on the real disk (NodeFileSystem): a kernel-held advisory lock on `LOCK`, held
 * by the open file and so by the process, never decided from the pid written into the file.
 *
 * Real processes (test/storage/lock-holder.ts) hold the lock; a holder that is SIGKILLed frees it at once,
 * even while it is a zombie its parent has not reaped. The zombie is kept by a parent that does not reap
 * in the meantime: `/bin/sh -c 'holder & echo $!; read x; wait'` (a non-interactive POSIX shell collects a
 * background job only at `wait`); the test checks the holder is a zombie before and after it locks.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import {
  type FileLocks,
  LockedError,
  LsmEngine,
  NodeFileSystem,
  StorageError,
} from "../../src/storage/index.js";

const HOLDER = "test/storage/lock-holder.ts";
const TEST_TIMEOUT_MS = 60_000;

const roots: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-lock-"));
  roots.push(d);
  return d;
}

/** Lines a child prints on stdout, as they arrive. */
function lines(c: ChildProcess): () => Promise<string> {
  let buf = "";
  const queue: string[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  c.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      queue.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    wake?.();
  });
  c.on("exit", () => {
    ended = true;
    wake?.();
  });
  return async () => {
    const deadline = Date.now() + 30_000;
    while (queue.length === 0) {
      if (ended) throw new Error("the child exited before printing a line");
      if (Date.now() > deadline) throw new Error("no line from the child in 30 s");
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
    }
    return queue.shift()!;
  };
}

function holder(
  dir: string,
  mode: "writer" | "reader",
  keys = 0,
): { child: ChildProcess; line: () => Promise<string> } {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, dir, mode, String(keys)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return { child, line: lines(child) };
}

function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => c.once("exit", () => r()));
}

/**
 * Whether `pid` is a zombie: dead, not yet reaped. /proc shows a thread-group leader as Z as soon as it
 * exits, while its other threads may still be tearing down (and holding the file table); the process is
 * dead once the leader is the only task left.
 */
function isZombie(pid: number): boolean {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  return state === "Z" && fs.readdirSync(`/proc/${pid}/task`).length === 1;
}

/** Refused by a holder: a writer with pid `holder`, or "readers" (read-only opens, which write no pid). */
async function rejectsLocked(fn: () => Promise<unknown>, holder: number | "readers", what: string) {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof LockedError, `${what}: ${String(err)}`);
    assert.equal(err.code, "ERR_LOCKED", what);
    if (holder === "readers") {
      assert.equal(err.readers, true, what);
      assert.equal(err.holderPid, undefined, what);
      assert.match(err.message, /a read-only inspection .* is reading it; try again/, what);
    } else {
      assert.equal(err.readers, false, what);
      assert.equal(err.holderPid, holder, `${what}: the holder's pid`);
      assert.match(err.message, new RegExp(`pid ${holder}\\b`), what);
      assert.match(err.message, /Stop that ringstore node/, `${what}: the message says what to do`);
    }
    return true;
  });
}

describe("the data-directory lock (NodeFileSystem)", { timeout: TEST_TIMEOUT_MS }, () => {
  test("a SIGKILLed holder frees the lock at once, even while it is an unreaped zombie", async () => {
    const dir = tempDir();
    const keeper = spawn(
      "/bin/sh",
      ["-c", `"$0" --import tsx ${HOLDER} "$1" writer 3 & echo $!; read x; wait`, process.execPath, dir],
      {
        stdio: ["pipe", "pipe", "inherit"],
      },
    );
    children.push(keeper);
    const line = lines(keeper);
    try {
      const pid = Number(await line());
      assert.equal(await line(), `held ${pid}`);
      await rejectsLocked(() => LsmEngine.open({ dir, fs: new NodeFileSystem() }), pid, "while it runs");

      process.kill(pid, "SIGKILL");
      const deadline = Date.now() + 10_000;
      while (!isZombie(pid)) {
        assert.ok(Date.now() < deadline, "the holder did not become a zombie in 10 s");
        await new Promise((r) => setTimeout(r, 5));
      }
      const engine = await LsmEngine.open({ dir, fs: new NodeFileSystem() });
      try {
        assert.ok(isZombie(pid), "the holder is still an unreaped zombie when the lock is taken");
        assert.equal(fs.readFileSync(path.join(dir, "LOCK"), "utf8"), `${process.pid}\n`);
        assert.equal(Buffer.from((await engine.get(Buffer.from("key-2")))!).toString(), "value-2");
      } finally {
        await engine.close();
      }
    } finally {
      keeper.stdin!.end("go\n");
      await exited(keeper);
    }
  });

  test("two openers in two processes: the second is refused with the holder's pid", async () => {
    const dir = tempDir();
    const first = holder(dir, "writer", 1);
    const held = await first.line();
    assert.equal(held, `held ${first.child.pid}`);
    const second = holder(dir, "writer");
    const refused = await second.line();
    await exited(second.child);
    assert.equal(second.child.exitCode, 3);
    assert.match(refused, new RegExp(`^refused ERR_LOCKED .*pid ${first.child.pid}\\b`));
    assert.match(refused, /Stop that ringstore node/);
    // A read-only open is refused too while a writer holds the store.
    const reader = holder(dir, "reader");
    assert.match(await reader.line(), new RegExp(`^refused ERR_LOCKED .*pid ${first.child.pid}\\b`));
    await exited(reader.child);
    first.child.kill("SIGKILL");
    await exited(first.child);
  });

  test("a LOCK file naming a live but unrelated process does not block", async () => {
    for (const pid of [1, process.ppid, process.pid]) {
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, "LOCK"), `${pid}\n`);
      const engine = await LsmEngine.open({ dir, fs: new NodeFileSystem() });
      assert.equal(fs.readFileSync(path.join(dir, "LOCK"), "utf8"), `${process.pid}\n`);
      await engine.close();
      assert.equal(
        fs.readFileSync(path.join(dir, "LOCK"), "utf8"),
        "",
        "a release empties LOCK and keeps it",
      );
    }
  });

  test("in one process, a second open of a held directory is refused too, and a release frees it", async () => {
    const dir = tempDir();
    const nfs = new NodeFileSystem();
    const release = await nfs.lock(dir);
    await rejectsLocked(() => nfs.lock(dir), process.pid, "a second exclusive lock");
    await rejectsLocked(() => nfs.lockShared(dir), process.pid, "a shared hold");
    await release();
    await release(); // releasing twice is harmless
    const again = await nfs.lock(dir);
    await again();
  });

  test("shared holds (read-only opens) share, exclude a writer, and create nothing", async () => {
    const dir = tempDir();
    const nfs = new NodeFileSystem();
    const none = await nfs.lockShared(dir);
    assert.deepEqual(fs.readdirSync(dir), [], "a shared hold of a never-locked directory creates no LOCK");
    await none();
    await (await nfs.lock(dir))();
    // The pid a writer killed with SIGKILL leaves behind: a writer refused by readers must not name it.
    fs.writeFileSync(path.join(dir, "LOCK"), "4194000\n");
    const lockBefore = fs.statSync(path.join(dir, "LOCK"));
    const r1 = await nfs.lockShared(dir);
    const r2 = await nfs.lockShared(dir);
    await rejectsLocked(() => nfs.lock(dir), "readers", "a writer while readers hold it");
    await r1();
    await rejectsLocked(() => nfs.lock(dir), "readers", "a writer while one reader holds it");
    await r2();
    const lockAfter = fs.statSync(path.join(dir, "LOCK"));
    assert.equal(fs.readFileSync(path.join(dir, "LOCK"), "utf8"), "4194000\n");
    assert.equal(lockAfter.mtimeMs, lockBefore.mtimeMs, "readers never wrote LOCK");
    await (await nfs.lock(dir))();
  });

  test("a file system without file locks is an error, never an unlocked run", async () => {
    for (const code of ["ENOLCK", "EOPNOTSUPP", "EINVAL"]) {
      const dir = tempDir();
      const unsupported: FileLocks = {
        tryLock() {
          const err = new Error(`${code}: locks not supported`) as NodeJS.ErrnoException;
          err.code = code;
          throw err;
        },
      };
      const fdsBefore = fs.readdirSync("/proc/self/fd").length;
      await assert.rejects(
        () => LsmEngine.open({ dir, fs: new NodeFileSystem(unsupported) }),
        (err: unknown) => {
          assert.ok(err instanceof StorageError);
          assert.equal(err.code, "ERR_IO");
          assert.match(err.message, new RegExp(`does not support file locks \\(${code}\\)`));
          assert.match(err.message, /will not run on a data directory it cannot lock/);
          return true;
        },
      );
      assert.equal(fs.readdirSync("/proc/self/fd").length, fdsBefore, "the LOCK file is closed again");
      assert.deepEqual(fs.readdirSync(dir), ["LOCK"], "nothing but LOCK was created");
    }
  });
});
