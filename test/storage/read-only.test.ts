/**
 * LsmEngine.openReadOnly on MemoryFileSystem: it reads what a writable open would recover (tables, and
 * the WALs replayed into memory, torn tails skipped, corruption reported), and it never writes: every
 * call goes through a witness file system that fails the test at the first mutating call, and the whole
 * tree is compared before and after. Also the lock's shared holds in the memory twin.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { describe, test } from "node:test";
import { seededRandom } from "../../src/runtime/runtime.js";
import {
  CorruptionError,
  type FileSystem,
  LockedError,
  LsmEngine,
  type LsmOptions,
  MemoryFileSystem,
  type RandomAccessFile,
  type StorageEngine,
  StorageError,
  type WritableFile,
} from "../../src/storage/index.js";

const DIR = "/store";
const SMALL: Partial<LsmOptions> = { memtableBytes: 16 * 1024, tableTargetBytes: 64 * 1024, blockBytes: 512 };

/** Passes reads through; any call that could change the file system is recorded and fails. */
class ReadOnlyWitness implements FileSystem {
  readonly writes: string[] = [];
  constructor(private readonly inner: FileSystem) {}
  private refuse(what: string): never {
    this.writes.push(what);
    throw new Error(`a read-only open called ${what}`);
  }
  readdir = (d: string) => this.inner.readdir(d);
  exists = (p: string) => this.inner.exists(p);
  openRead = (p: string): Promise<RandomAccessFile> => this.inner.openRead(p);
  readFile = (p: string) => this.inner.readFile(p);
  lockShared = (d: string) => this.inner.lockShared(d);
  chmod = (p: string, m: number) => this.inner.chmod(p, m);
  mkdirp = async (d: string): Promise<void> => this.refuse(`mkdirp(${d})`);
  create = async (p: string): Promise<WritableFile> => this.refuse(`create(${p})`);
  rename = async (a: string, b: string): Promise<void> => this.refuse(`rename(${a}, ${b})`);
  unlink = async (p: string): Promise<void> => this.refuse(`unlink(${p})`);
  truncate = async (p: string): Promise<void> => this.refuse(`truncate(${p})`);
  syncDir = async (d: string): Promise<void> => this.refuse(`syncDir(${d})`);
  lock = async (d: string): Promise<() => Promise<void>> => this.refuse(`lock(${d})`);
}

/** Every file of `dir` with its bytes, as hex: to compare a tree before and after. */
async function tree(fs: FileSystem, dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const n of await fs.readdir(dir)) out.set(n, (await fs.readFile(path.join(dir, n))).toString("hex"));
  return out;
}

async function contents(e: StorageEngine): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const { key, value } of e.iterate())
    out.set(Buffer.from(key).toString(), Buffer.from(value).toString());
  return out;
}

/**
 * Writes `count` puts and some deletes over 300 keys with a small memtable (so flushes and compactions
 * happen), then `tail` more puts that stay in the WAL; returns what reads must give.
 */
async function fill(e: LsmEngine, seed: number, count: number, tail: number): Promise<Map<string, string>> {
  const r = seededRandom(seed);
  const model = new Map<string, string>();
  for (let i = 0; i < count + tail; i++) {
    if (i === count) await e.waitForBackground();
    const k = `k${Math.floor(r.next() * 300)}`;
    if (i < count && r.next() < 0.15) {
      await e.delete(Buffer.from(k));
      model.delete(k);
    } else {
      const v = `v${i}-${"x".repeat(Math.floor(r.next() * 60))}`;
      await e.put(Buffer.from(k), Buffer.from(v));
      model.set(k, v);
    }
  }
  return model;
}

async function rejectsWithCode(
  fn: () => Promise<unknown>,
  code: string,
  what: string,
): Promise<StorageError> {
  let caught: StorageError | undefined;
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof StorageError, `${what}: ${String(err)}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    caught = err;
    return true;
  });
  return caught!;
}

describe("LsmEngine.openReadOnly", () => {
  test("reads tables, frozen and WAL data as a writable open would, and writes nothing", async () => {
    const fs = new MemoryFileSystem();
    const w = await LsmEngine.open({ dir: DIR, fs, options: SMALL });
    const model = await fill(w, 1, 3000, 400);
    assert.ok(w.stats().levels.length > 0, "the writer made sorted runs");
    fs.crash(); // the writer dies: its last writes are only in the WAL
    const before = await tree(fs, DIR);
    assert.ok([...before.keys()].some((n) => n.endsWith(".wal")));

    const witness = new ReadOnlyWitness(fs);
    // A memtable smaller than the WAL's writes: the replay keeps several frozen memtables in memory.
    const ro = await LsmEngine.openReadOnly({
      dir: DIR,
      fs: witness,
      options: { ...SMALL, memtableBytes: 4096 },
    });
    try {
      assert.equal(ro.readOnly, true);
      assert.deepEqual(await contents(ro), model);
      for (const [k, v] of [...model].slice(0, 50))
        assert.equal(Buffer.from((await ro.get(Buffer.from(k)))!).toString(), v);
      assert.equal(await ro.get(Buffer.from("absent")), undefined);
      const s = ro.stats();
      assert.ok(s.immutableMemtables > 0, "the WAL was replayed into frozen memtables, not flushed");
      assert.ok(s.levels.length > 0);
      assert.equal(s.diskBytesWritten, 0);
      await ro.waitForBackground(); // nothing to wait for: never flushes or compacts
      await rejectsWithCode(() => ro.put(Buffer.from("k"), Buffer.from("v")), "ERR_READ_ONLY", "put");
      await rejectsWithCode(() => ro.delete(Buffer.from("k1")), "ERR_READ_ONLY", "delete");
      await rejectsWithCode(() => ro.write([]), "ERR_READ_ONLY", "empty write");
      await rejectsWithCode(() => ro.flush(), "ERR_READ_ONLY", "flush");
    } finally {
      await ro.close();
    }
    await rejectsWithCode(() => ro.get(Buffer.from("k1")), "ERR_CLOSED", "get after close");
    assert.deepEqual(witness.writes, []);
    assert.deepEqual(await tree(fs, DIR), before, "the tree is byte for byte the same");

    const again = await LsmEngine.open({ dir: DIR, fs, options: SMALL });
    try {
      assert.deepEqual(await contents(again), model, "a writable open recovers the same");
    } finally {
      await again.close();
    }
  });

  test("a torn WAL tail is skipped as recovery skips it", async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const fs = new MemoryFileSystem();
      const w = await LsmEngine.open({ dir: DIR, fs, options: { ...SMALL, durability: "none" } });
      await fill(w, seed, 500, 300);
      fs.crash({ unsynced: seed % 2 === 0 ? "torn" : "zeroed", random: seededRandom(seed).next });
      const before = await tree(fs, DIR);
      const witness = new ReadOnlyWitness(fs);
      const ro = await LsmEngine.openReadOnly({ dir: DIR, fs: witness, options: SMALL });
      const seen = await contents(ro);
      await ro.close();
      assert.deepEqual(witness.writes, []);
      assert.deepEqual(await tree(fs, DIR), before);
      const rw = await LsmEngine.open({ dir: DIR, fs, options: SMALL });
      assert.deepEqual(seen, await contents(rw), `seed ${seed}: read-only and writable recovery agree`);
      await rw.close();
    }
  });

  test("corruption is reported, and the failed open holds nothing", async () => {
    const fs = new MemoryFileSystem();
    const w = await LsmEngine.open({ dir: DIR, fs, options: { memtableBytes: 1024 * 1024 } });
    for (let i = 0; i < 200; i++) await w.put(Buffer.from(`key-${i}`), Buffer.from(`value-${i}`));
    await w.close();
    const wal = (await fs.readdir(DIR)).find((n) => n.endsWith(".wal"))!;
    // Inside the first record's payload, with many records after it: not a torn tail.
    fs.corruptByte(path.join(DIR, wal), 20 + 24 + 3);
    const witness = new ReadOnlyWitness(fs);
    await assert.rejects(
      () => LsmEngine.openReadOnly({ dir: DIR, fs: witness }),
      (err: unknown) =>
        err instanceof CorruptionError && err.code === "ERR_CORRUPTION" && err.file.endsWith(wal),
    );
    assert.deepEqual(witness.writes, []);
    await (await fs.lock(DIR))(); // the shared hold was released
  });

  test("no store: a missing directory, an empty one, or one without a store's files", async () => {
    const fs = new MemoryFileSystem();
    const witness = new ReadOnlyWitness(fs);
    const missing = await rejectsWithCode(
      () => LsmEngine.openReadOnly({ dir: "/missing", fs: witness }),
      "ERR_NOT_FOUND",
      "missing directory",
    );
    assert.match(missing.message, /no store in \/missing: no such directory/);
    await fs.mkdirp("/empty");
    await rejectsWithCode(
      () => LsmEngine.openReadOnly({ dir: "/empty", fs: witness }),
      "ERR_NOT_FOUND",
      "empty",
    );
    const f = await fs.create("/empty/notes.txt");
    await f.append(Buffer.from("not a store"));
    await f.close();
    const other = await rejectsWithCode(
      () => LsmEngine.openReadOnly({ dir: "/empty", fs: witness }),
      "ERR_NOT_FOUND",
      "unrelated files",
    );
    assert.match(other.message, /holds no CURRENT, manifest, write-ahead log or table file/);
    assert.deepEqual(witness.writes, []);
    assert.equal(await fs.exists("/missing"), false);
  });

  test("a writer excludes readers and readers exclude a writer; readers share; a crash frees all", async () => {
    const fs = new MemoryFileSystem();
    const w = await LsmEngine.open({ dir: DIR, fs });
    await w.put(Buffer.from("k"), Buffer.from("v"));
    await rejectsWithCode(() => LsmEngine.openReadOnly({ dir: DIR, fs }), "ERR_LOCKED", "reader vs writer");
    await w.close();
    const r1 = await LsmEngine.openReadOnly({ dir: DIR, fs });
    const r2 = await LsmEngine.openReadOnly({ dir: DIR, fs });
    const byReaders = await rejectsWithCode(
      () => LsmEngine.open({ dir: DIR, fs }),
      "ERR_LOCKED",
      "writer vs two readers",
    );
    assert.ok(byReaders instanceof LockedError && byReaders.readers, "the refusal says readers hold it");
    await r1.close();
    await rejectsWithCode(() => LsmEngine.open({ dir: DIR, fs }), "ERR_LOCKED", "writer vs one reader");
    assert.equal(Buffer.from((await r2.get(Buffer.from("k")))!).toString(), "v");
    fs.crash();
    const after = await LsmEngine.open({ dir: DIR, fs });
    await r2.close(); // a release from before the crash does not release the new holder's lock
    await rejectsWithCode(() => LsmEngine.openReadOnly({ dir: DIR, fs }), "ERR_LOCKED", "after the crash");
    await after.close();
  });
});
