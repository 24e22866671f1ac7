/**
 * Corruption detection: a small database with known contents is built, closed, one byte of one file is
 * flipped, and the database is reopened. The engine must report a CorruptionError naming the damaged file
 * (at open, or for a table's data block when the damaged block is read) and must never return a wrong
 * value or fail with anything but a CorruptionError.
 *
 * The database has several tables in several runs (small memtable and table size, 1 KiB blocks), and its
 * last writes are left in the WAL (the engine replays and flushes WALs at open, so the WAL is damaged
 * after close and before the reopen). The layouts parsed here are those of log-format.ts (WAL, MANIFEST,
 * CURRENT) and table-format.ts (tables).
 */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import {
  CorruptionError,
  type FileSystem,
  LsmEngine,
  MemoryFileSystem,
  NodeFileSystem,
} from "../../src/storage/index.js";

const DIR = "/db";
// No WAL preallocation: these cases locate records, the last record and the last byte of each WAL, which
// a zero-filled preallocated tail would hide. (Recovery from preallocated WALs is exercised by the model
// and crash tests, which use the default options.)
const OPTIONS = {
  memtableBytes: 8 * 1024,
  tableTargetBytes: 6 * 1024,
  blockBytes: 1024,
  walPreallocateBytes: 0,
};
const LOG_FILE_HEADER_BYTES = 20;
const LOG_RECORD_HEADER_BYTES = 24;
const FOOTER_BYTES = 48;
const BLOCK_TRAILER_BYTES = 5;
const ZERO_TAIL_ALIGN = 512;

const keyName = (i: number): string => `key-${String(i).padStart(4, "0")}`;

/** One write of the test data: a put (value) or a delete (no value). */
interface Op {
  readonly key: string;
  readonly value?: string;
}

interface Db {
  /** File name -> bytes, as left by a clean close. */
  readonly files: ReadonlyMap<string, Buffer>;
  /** The state once every write is applied. */
  readonly expected: ReadonlyMap<string, string>;
  /** The state in the tables (before the writes left in the WAL). */
  readonly tableState: ReadonlyMap<string, string>;
  /** The writes left in the WAL, one WAL record each, in order. */
  readonly walWrites: readonly (readonly Op[])[];
  /** Every key ever written, and a few never written. */
  readonly keys: readonly string[];
}

function apply(state: Map<string, string>, ops: readonly Op[]): void {
  for (const op of ops) {
    if (op.value === undefined) state.delete(op.key);
    else state.set(op.key, op.value);
  }
}

async function write(engine: LsmEngine, ops: readonly Op[]): Promise<void> {
  if (ops.length === 1 && ops[0]!.value !== undefined)
    return engine.put(Buffer.from(ops[0]!.key), Buffer.from(ops[0]!.value));
  if (ops.length === 1) return engine.delete(Buffer.from(ops[0]!.key));
  return engine.write(
    ops.map((op) =>
      op.value === undefined
        ? { kind: "delete", key: Buffer.from(op.key) }
        : { kind: "put", key: Buffer.from(op.key), value: Buffer.from(op.value) },
    ),
  );
}

function openDb(fs: FileSystem, dir = DIR): Promise<LsmEngine> {
  return LsmEngine.open({ dir, fs, options: OPTIONS });
}

/**
 * Builds the test database in `dir`: 300 keys written in batches, overwrites and deletes, flushed and
 * compacted into several runs of tables; then reopened (which drops obsolete files and leaves a manifest
 * of one record) and given a few more writes that stay in the WAL. Every value ends in "!", so that no
 * file ends in a zero byte (see the torn-tail rule of log-format.ts).
 */
async function buildDb(fs: FileSystem, dir: string): Promise<Db> {
  const state = new Map<string, string>();
  let engine = await openDb(fs, dir);
  const run = async (ops: Op[]) => {
    await write(engine, ops);
    apply(state, ops);
  };
  for (let i = 0; i < 300; i += 10) {
    const ops: Op[] = [];
    for (let j = i; j < i + 10; j++) ops.push({ key: keyName(j), value: `v${j}-${"x".repeat(j % 50)}!` });
    await run(ops);
  }
  for (let i = 0; i < 300; i += 7) await run([{ key: keyName(i), value: `w${i}!` }]);
  for (let i = 3; i < 300; i += 11) await run([{ key: keyName(i) }]);
  await engine.flush();
  await engine.waitForBackground();
  await engine.close();
  const tableState = new Map(state);

  engine = await openDb(fs, dir);
  const walWrites: Op[][] = [
    [{ key: keyName(1000), value: "wal-0!" }],
    [{ key: keyName(1) }],
    [
      { key: keyName(1001), value: "wal-1!" },
      { key: keyName(2), value: "wal-2!" },
      { key: keyName(1002) },
      { key: keyName(1003), value: "wal-3!" },
    ],
    [{ key: keyName(4), value: `wal-4-${"y".repeat(300)}!` }],
    [{ key: keyName(1004), value: "wal-5!" }],
    [{ key: keyName(5), value: "wal-6!" }],
  ];
  for (const ops of walWrites) await run(ops);
  await engine.close();

  const files = new Map<string, Buffer>();
  for (const name of await fs.readdir(dir)) files.set(name, await fs.readFile(path.join(dir, name)));
  const keys = [...new Set([...tableState.keys(), ...walWrites.flat().map((o) => o.key)])];
  for (let i = 0; i < 300; i++) keys.push(keyName(i));
  keys.push("a", "key-", "key-0150x", "zzz");
  return { files, expected: state, tableState, walWrites, keys: [...new Set(keys)].sort() };
}

/** A fresh MemoryFileSystem holding `files` (durably) in DIR. */
async function restore(files: ReadonlyMap<string, Buffer>): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  await fs.mkdirp(DIR);
  for (const [name, data] of files) {
    const f = await fs.create(path.join(DIR, name));
    await f.append(data);
    await f.sync();
    await f.close();
  }
  await fs.syncDir(DIR);
  return fs;
}

let built: Promise<Db> | undefined;
function db(): Promise<Db> {
  built ??= (async () => {
    const fs = new MemoryFileSystem();
    return buildDb(fs, DIR);
  })();
  return built;
}

async function damaged(name: string, offset: number, xor = 0xff): Promise<MemoryFileSystem> {
  const fs = await restore((await db()).files);
  fs.corruptByte(path.join(DIR, name), offset, xor);
  return fs;
}

const fileNames = async (suffix: string): Promise<string[]> =>
  [...(await db()).files.keys()].filter((n) => n.endsWith(suffix) || n.startsWith(suffix)).sort();

// ---------------------------------------------------------------- parsing the formats

interface LogRecordPos {
  readonly offset: number;
  readonly end: number;
}

/** Record extents of an intact log file (log-format.ts). */
function logRecords(data: Buffer): LogRecordPos[] {
  const out: LogRecordPos[] = [];
  let pos = LOG_FILE_HEADER_BYTES;
  while (pos < data.length) {
    const end = pos + LOG_RECORD_HEADER_BYTES + data.readUInt32LE(pos + 4);
    assert.ok(end <= data.length, "test database: log record past the end");
    out.push({ offset: pos, end });
    pos = end;
  }
  return out;
}

const u64 = (b: Buffer, at: number): number => b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x1_0000_0000;

interface TableLayout {
  readonly indexOffset: number;
  readonly indexSize: number;
  readonly filterOffset: number;
  readonly filterSize: number;
  readonly blocks: { readonly offset: number; readonly size: number }[];
}

/** Block layout of an intact table, from its footer and index block (table-format.ts). */
function tableLayout(data: Buffer): TableLayout {
  const f = data.subarray(data.length - FOOTER_BYTES);
  assert.equal(f.toString("latin1", 40, 48), "RSSTABLE");
  const indexOffset = u64(f, 0);
  const indexSize = f.readUInt32LE(8);
  const filterOffset = u64(f, 12);
  const filterSize = f.readUInt32LE(20);
  const index = data.subarray(indexOffset, indexOffset + indexSize - BLOCK_TRAILER_BYTES);
  const count = index.readUInt32LE(index.length - 4);
  const blocks: { offset: number; size: number }[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    const klen = index.readUInt16LE(p);
    p += 2 + klen;
    blocks.push({ offset: u64(index, p), size: index.readUInt32LE(p + 8) });
    p += 12;
  }
  return { indexOffset, indexSize, filterOffset, filterSize, blocks };
}

interface BlockEntry {
  readonly kind: number;
  readonly key: string;
  readonly value: string;
  /** File offset of the value's first byte. */
  readonly valueAt: number;
}

function blockEntries(data: Buffer, block: { offset: number; size: number }): BlockEntry[] {
  const content = data.subarray(block.offset, block.offset + block.size - BLOCK_TRAILER_BYTES);
  const count = content.readUInt32LE(content.length - 4);
  const out: BlockEntry[] = [];
  let o = 0;
  for (let i = 0; i < count; i++) {
    const klen = content.readUInt16LE(o + 1);
    const vlen = content.readUInt32LE(o + 3);
    const k = o + 7;
    out.push({
      kind: content[o]!,
      key: content.toString("latin1", k, k + klen),
      value: content.toString("latin1", k + klen, k + klen + vlen),
      valueAt: block.offset + k + klen,
    });
    o = k + klen + vlen;
  }
  return out;
}

// ---------------------------------------------------------------- checking outcomes

function isCorruptionOf(file: string, offset?: (o: number) => boolean) {
  return (err: unknown): true => {
    assert.ok(err instanceof CorruptionError, `expected a CorruptionError, got ${String(err)}`);
    assert.equal(err.file, file, `the error names the damaged file: ${err.message}`);
    assert.ok(Number.isSafeInteger(err.offset) && err.offset >= 0, `offset ${err.offset}`);
    if (offset !== undefined) assert.ok(offset(err.offset), `unexpected offset in: ${err.message}`);
    return true;
  };
}

async function expectOpenFails(fs: FileSystem, file: string, offset?: (o: number) => boolean): Promise<void> {
  await assert.rejects(openDb(fs), isCorruptionOf(path.join(DIR, file), offset));
}

interface ReadResult {
  /** Key -> value (undefined: absent) for the point reads that succeeded. */
  readonly gets: Map<string, string | undefined>;
  /** The entries an iteration returned before it ended or failed. */
  readonly scanned: Map<string, string>;
  readonly scanComplete: boolean;
  readonly errors: CorruptionError[];
}

/** Reads every key with get, and the whole store with iterate; only CorruptionErrors are tolerated. */
async function readEverything(engine: LsmEngine, keys: readonly string[]): Promise<ReadResult> {
  const gets = new Map<string, string | undefined>();
  const errors: CorruptionError[] = [];
  const tolerate = (err: unknown) => {
    if (!(err instanceof CorruptionError)) throw err;
    errors.push(err);
  };
  for (const k of keys) {
    try {
      const v = await engine.get(Buffer.from(k));
      gets.set(k, v === undefined ? undefined : Buffer.from(v).toString("latin1"));
    } catch (err) {
      tolerate(err);
    }
  }
  const scanned = new Map<string, string>();
  let scanComplete = false;
  let prev: string | undefined;
  try {
    for await (const e of engine.iterate()) {
      const k = Buffer.from(e.key).toString("latin1");
      assert.ok(prev === undefined || prev < k, `iteration out of order: ${prev} then ${k}`);
      prev = k;
      scanned.set(k, Buffer.from(e.value).toString("latin1"));
    }
    scanComplete = true;
  } catch (err) {
    tolerate(err);
  }
  return { gets, scanned, scanComplete, errors };
}

/** Problems of `r` against `state`: every value returned is right, and a complete scan is everything. */
function wrongReads(r: ReadResult, state: ReadonlyMap<string, string>): string[] {
  const bad: string[] = [];
  for (const [k, v] of r.gets) if (v !== state.get(k)) bad.push(`get(${k}) = ${v}, expected ${state.get(k)}`);
  for (const [k, v] of r.scanned)
    if (v !== state.get(k)) bad.push(`scan ${k} = ${v}, expected ${state.get(k)}`);
  if (r.scanComplete)
    for (const k of state.keys()) if (!r.scanned.has(k)) bad.push(`scan completed without ${k}`);
  return bad;
}

// ---------------------------------------------------------------- the cases

describe("corruption detection (MemoryFileSystem)", () => {
  test("the intact database reads back exactly, with tables in several runs and writes in the WAL", async () => {
    const d = await db();
    assert.ok((await fileNames(".sst")).length >= 3, "several tables");
    assert.equal((await fileNames(".wal")).length, 1);
    assert.equal((await fileNames("MANIFEST-")).length, 1);
    const wal = d.files.get((await fileNames(".wal"))[0]!)!;
    assert.equal(logRecords(wal).length, d.walWrites.length, "one WAL record per write");
    const engine = await openDb(await restore(d.files));
    try {
      const r = await readEverything(engine, d.keys);
      assert.deepEqual(r.errors, []);
      assert.ok(r.scanComplete);
      assert.deepEqual(wrongReads(r, d.expected), []);
      assert.equal(r.gets.size, d.keys.length);
    } finally {
      await engine.close();
    }
  });

  test("(a) a damaged WAL record (header or payload; middle or last record) fails the open", async () => {
    const d = await db();
    const wal = (await fileNames(".wal"))[0]!;
    const recs = logRecords(d.files.get(wal)!);
    const middle = recs[Math.floor(recs.length / 2)]!;
    const last = recs[recs.length - 1]!;
    const cases: [string, number, number][] = [
      ["file header magic", 0, 0],
      ["file header number", 9, 0],
      ["middle record header checksum", middle.offset + 1, middle.offset],
      ["middle record length", middle.offset + 4, middle.offset],
      ["middle record sequence", middle.offset + 12, middle.offset],
      ["middle record payload checksum", middle.offset + 21, middle.offset],
      ["middle record payload", middle.offset + LOG_RECORD_HEADER_BYTES + 5, middle.offset],
      ["last record header checksum", last.offset, last.offset],
      ["last record length", last.offset + 5, last.offset],
      ["last record type", last.offset + 8, last.offset],
      ["last record payload", last.offset + LOG_RECORD_HEADER_BYTES + 2, last.offset],
      ["last byte of the file", last.end - 1, last.offset],
    ];
    for (const [what, at, recordOffset] of cases)
      for (const xor of [0xff, 0x01])
        await assert.rejects(
          openDb(await damaged(wal, at, xor)),
          isCorruptionOf(path.join(DIR, wal), (o) => o === recordOffset),
          `${what} (byte ${at} ^ ${xor})`,
        );
  });

  test("(b) a damaged data block: the open may succeed, reading the block fails, no wrong value", async () => {
    const d = await db();
    const walKeys = new Set(d.walWrites.flat().map((o) => o.key));
    let checked = 0;
    for (const sst of await fileNames(".sst")) {
      const data = d.files.get(sst)!;
      const layout = tableLayout(data);
      assert.ok(layout.blocks.length >= 1);
      const picks = [...new Set([0, Math.floor(layout.blocks.length / 2), layout.blocks.length - 1])];
      for (const bi of picks) {
        const block = layout.blocks[bi]!;
        // A key whose live value is in this block (written once, or last, here; not in the WAL).
        const entry = blockEntries(data, block).find(
          (e) => e.kind === 1 && d.expected.get(e.key) === e.value && !walKeys.has(e.key),
        );
        if (entry === undefined) continue;
        const spots = [
          entry.valueAt, // the value itself: a careless reader would return a wrong value
          block.offset, // the first entry's kind
          block.offset + block.size - BLOCK_TRAILER_BYTES, // the block type
          block.offset + block.size - 1, // the checksum
        ];
        for (const at of spots) {
          const fs = await damaged(sst, at, 0x01);
          const file = path.join(DIR, sst);
          let engine: LsmEngine;
          try {
            engine = await openDb(fs);
          } catch (err) {
            isCorruptionOf(file)(err);
            checked++;
            continue;
          }
          try {
            await assert.rejects(
              engine.get(Buffer.from(entry.key)),
              isCorruptionOf(file, (o) => o === block.offset),
              `get(${entry.key}) with ${sst} byte ${at} damaged`,
            );
            const r = await readEverything(engine, d.keys);
            assert.equal(
              r.scanComplete,
              false,
              `a scan over ${sst} block ${bi} (byte ${at} damaged) must fail`,
            );
            for (const err of r.errors) isCorruptionOf(file, (o) => o === block.offset)(err);
            assert.deepEqual(wrongReads(r, d.expected), []);
          } finally {
            await engine.close();
          }
          checked++;
        }
      }
    }
    assert.ok(checked >= 8, `data block cases checked: ${checked}`);
  });

  test("(c) a damaged index block fails the open, naming the table", async () => {
    const d = await db();
    for (const sst of await fileNames(".sst")) {
      const { indexOffset: at, indexSize: size } = tableLayout(d.files.get(sst)!);
      for (const off of [
        at,
        at + 2,
        at + Math.floor(size / 2),
        at + size - BLOCK_TRAILER_BYTES,
        at + size - 1,
      ])
        await expectOpenFails(await damaged(sst, off), sst, (o) => o === at);
    }
  });

  test("(d) a damaged filter block fails the open, naming the table", async () => {
    const d = await db();
    for (const sst of await fileNames(".sst")) {
      const { filterOffset: at, filterSize: size } = tableLayout(d.files.get(sst)!);
      for (const off of [
        at,
        at + Math.floor(size / 2),
        at + size - 6,
        at + size - BLOCK_TRAILER_BYTES,
        at + size - 1,
      ])
        await expectOpenFails(await damaged(sst, off), sst, (o) => o === at);
    }
  });

  test("(e) a damaged footer (fields, checksum, magic) fails the open, naming the table", async () => {
    const d = await db();
    for (const sst of await fileNames(".sst")) {
      const size = d.files.get(sst)!.length;
      const at = size - FOOTER_BYTES;
      for (const field of [0, 7, 8, 12, 20, 24, 32, 35, 36, 39, 40, 43, 47])
        for (const xor of [0xff, 0x01])
          await expectOpenFails(await damaged(sst, at + field, xor), sst, (o) => o >= at && o < size);
    }
  });

  test("(f) a damaged MANIFEST fails the open, naming it", async () => {
    const d = await db();
    const manifest = (await fileNames("MANIFEST-"))[0]!;
    const data = d.files.get(manifest)!;
    const recs = logRecords(data);
    assert.equal(recs.length, 1, "a fresh manifest holds one snapshot edit");
    const rec = recs[0]!;
    const cases: [number, number][] = [
      [0, 0],
      [5, 0],
      [12, 0],
      [19, 0],
      [rec.offset, rec.offset],
      [rec.offset + 4, rec.offset],
      [rec.offset + 14, rec.offset],
      [rec.offset + 22, rec.offset],
      [rec.offset + LOG_RECORD_HEADER_BYTES, rec.offset],
      [Math.floor((rec.offset + rec.end) / 2), rec.offset],
      [data.length - 1, rec.offset],
    ];
    for (const [at, recordOffset] of cases)
      for (const xor of [0xff, 0x01])
        await expectOpenFails(await damaged(manifest, at, xor), manifest, (o) => o === recordOffset);
  });

  test("(g) a damaged CURRENT fails the open", async () => {
    const size = (await db()).files.get("CURRENT")!.length;
    for (let at = 0; at < size; at += 3)
      for (const xor of [0xff, 0x01]) await expectOpenFails(await damaged("CURRENT", at, xor), "CURRENT");
    await expectOpenFails(await damaged("CURRENT", size - 1), "CURRENT");
  });

  test("a WAL whose last byte is zeroed at a 512-byte boundary: the documented torn tail, no wrong value", async () => {
    // log-format.ts: a damaged record overlapping a run of zeros that reaches from a 512-byte boundary to
    // the end of the file is taken for a torn tail and dropped. Build a WAL whose last byte sits at such a
    // boundary and zero it: the open may drop the last record (only it), or report corruption.
    const fs = new MemoryFileSystem();
    let engine = await openDb(fs);
    await engine.put(Buffer.from("a"), Buffer.from("first!"));
    await engine.close();
    engine = await openDb(fs);
    const wal = (await fs.readdir(DIR)).find((n) => n.endsWith(".wal"))!;
    const walPath = path.join(DIR, wal);
    await engine.put(Buffer.from("b"), Buffer.from("second!"));
    // A record of a put with key "c" and an n-byte value takes 24 + 4 + 1 + 1 + varint(n) + 1 + n bytes.
    const before = fs.fileSize(walPath);
    const target = Math.ceil((before + 64) / ZERO_TAIL_ALIGN) * ZERO_TAIL_ALIGN + 1;
    let n = 1;
    while (before + 31 + (n < 128 ? 1 : 2) + n < target) n++;
    await engine.put(Buffer.from("c"), Buffer.from(`${"z".repeat(n - 1)}!`));
    await engine.close();
    const size = fs.fileSize(walPath);
    assert.equal((size - 1) % ZERO_TAIL_ALIGN, 0, `the WAL's last byte is at a 512-byte boundary (${size})`);
    fs.corruptByte(walPath, size - 1, "!".charCodeAt(0));

    let reopened: LsmEngine;
    try {
      reopened = await openDb(fs);
    } catch (err) {
      isCorruptionOf(walPath)(err);
      return;
    }
    try {
      const r = await readEverything(reopened, ["a", "b", "c"]);
      assert.deepEqual(r.errors, []);
      assert.deepEqual(
        wrongReads(
          r,
          new Map([
            ["a", "first!"],
            ["b", "second!"],
          ]),
        ),
        [],
      );
    } finally {
      await reopened.close();
    }
  });

  test("a MANIFEST whose last byte is zeroed at a 512-byte boundary does not lose the tables", async () => {
    // The manifest named by CURRENT always holds its snapshot edit durably (ManifestWriter.create syncs it
    // before CURRENT names the file), so a manifest without it is corruption, never a torn tail: the open
    // must fail, or read back every acknowledged write. Find a key length that puts the manifest's last
    // byte just past a 512-byte boundary, then zero that byte.
    for (let n = 1; n < 600; n++) {
      const fs = new MemoryFileSystem();
      let engine = await openDb(fs);
      await engine.put(Buffer.from("a"), Buffer.from("1"));
      await engine.put(Buffer.from("z".repeat(n)), Buffer.from("2"));
      await engine.close();
      engine = await openDb(fs); // replays the WAL into a table; the new manifest holds one snapshot
      await engine.close();
      const manifest = (await fs.readdir(DIR)).find((x) => x.startsWith("MANIFEST-"))!;
      const p = path.join(DIR, manifest);
      const size = fs.fileSize(p);
      if ((size - 1) % ZERO_TAIL_ALIGN !== 0) continue;
      const tables = (await fs.readdir(DIR)).filter((x) => x.endsWith(".sst"));
      assert.equal(tables.length, 1);
      fs.corruptByte(p, size - 1, (await fs.readFile(p))[size - 1]!);
      let reopened: LsmEngine;
      try {
        reopened = await openDb(fs);
      } catch (err) {
        isCorruptionOf(p)(err);
        return;
      }
      try {
        const a = await reopened.get(Buffer.from("a"));
        const z = await reopened.get(Buffer.from("z".repeat(n)));
        assert.deepEqual(
          [
            a && Buffer.from(a).toString(),
            z && Buffer.from(z).toString(),
            await fs.exists(path.join(DIR, tables[0]!)),
          ],
          ["1", "2", true],
          `the open succeeded with ${manifest} damaged, and lost acknowledged writes (and the table file)`,
        );
      } finally {
        await reopened.close();
      }
      return;
    }
    assert.fail("no key length put the manifest's last byte at a 512-byte boundary");
  });

  test("property: any single flipped byte gives a CorruptionError or correct reads, never a wrong value", async () => {
    const d = await db();
    const names = [...d.files.keys()].filter(
      (n) => n.endsWith(".sst") || n.endsWith(".wal") || n.startsWith("MANIFEST-") || n === "CURRENT",
    );
    const wal = (await fileNames(".wal"))[0]!;
    const walRecs = logRecords(d.files.get(wal)!);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...names),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (name, rawOffset, xor) => {
          const data = d.files.get(name)!;
          const offset = rawOffset % data.length;
          const file = path.join(DIR, name);
          const fs = await damaged(name, offset, xor);

          // The states a correct engine may show: all writes; or, for the WAL only, the documented torn
          // tail: when the damaged record overlaps zeros from a 512-byte boundary to the end, it and what
          // follows are dropped.
          const allowed = [d.expected];
          if (name === wal) {
            const bytes = Buffer.from(data);
            bytes[offset]! ^= xor;
            let z = bytes.length;
            while (z > 0 && bytes[z - 1] === 0) z--;
            const zeroStart = Math.min(Math.ceil(z / ZERO_TAIL_ALIGN) * ZERO_TAIL_ALIGN, bytes.length);
            const r = walRecs.findIndex((rec) => offset >= rec.offset && offset < rec.end);
            if (zeroStart < bytes.length && r >= 0 && walRecs[r]!.end > zeroStart) {
              const state = new Map(d.tableState);
              for (const ops of d.walWrites.slice(0, r)) apply(state, ops);
              allowed.push(state);
            }
          }

          let engine: LsmEngine;
          try {
            engine = await openDb(fs);
          } catch (err) {
            isCorruptionOf(file)(err);
            return;
          }
          try {
            const r = await readEverything(engine, d.keys);
            for (const err of r.errors) isCorruptionOf(file)(err);
            const verdicts = allowed.map((s) => wrongReads(r, s));
            assert.ok(
              verdicts.some((v) => v.length === 0),
              `${name} byte ${offset} ^ ${xor}: wrong reads: ${verdicts[0]!.slice(0, 5).join("; ")}`,
            );
          } finally {
            await engine.close();
          }
        },
      ),
      { numRuns: Number(process.env.CORRUPTION_RUNS ?? 1000) },
    );
  });
});

describe("corruption detection (NodeFileSystem)", () => {
  const tmp = mkdtempSync(path.join(tmpdir(), "ringstore-corruption-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const nodeFs = new NodeFileSystem();
  const original = path.join(tmp, "original");
  let base: Promise<Db> | undefined;
  const baseDb = () => {
    base ??= buildDb(nodeFs, original);
    return base;
  };
  const named = (pred: (name: string) => boolean): string => readdirSync(original).sort().find(pred)!;
  let copies = 0;
  /** A copy of the original database directory with byte `at` of file `name` flipped through node:fs. */
  const damagedCopy = (name: string, at: number) => {
    const dir = path.join(tmp, `copy-${copies++}`);
    cpSync(original, dir, { recursive: true });
    const file = path.join(dir, name);
    const data = readFileSync(file);
    data[at]! ^= 0xff;
    writeFileSync(file, data);
    return { dir, file };
  };

  test("a damaged WAL record in a real directory fails the open, naming the file and the record", async () => {
    await baseDb();
    const wal = named((n) => n.endsWith(".wal"));
    const rec = logRecords(readFileSync(path.join(original, wal)))[2]!;
    const { dir, file } = damagedCopy(wal, rec.offset + LOG_RECORD_HEADER_BYTES + 3);
    await assert.rejects(
      openDb(nodeFs, dir),
      isCorruptionOf(file, (o) => o === rec.offset),
    );
  });

  test("a damaged data block in a real directory: reading it fails, naming the table", async () => {
    const d = await baseDb();
    const walKeys = new Set(d.walWrites.flat().map((o) => o.key));
    // The first table block holding a key whose live value is there; damage that value.
    let found: { sst: string; block: number; entry: BlockEntry } | undefined;
    for (const sst of readdirSync(original).filter((n) => n.endsWith(".sst"))) {
      const data = readFileSync(path.join(original, sst));
      for (const block of tableLayout(data).blocks) {
        const entry = blockEntries(data, block).find(
          (x) => x.kind === 1 && d.expected.get(x.key) === x.value && !walKeys.has(x.key),
        );
        if (entry !== undefined) {
          found ??= { sst, block: block.offset, entry };
          break;
        }
      }
    }
    assert.ok(found !== undefined, "a table block holds a live value");
    const { dir, file } = damagedCopy(found.sst, found.entry.valueAt + 1);
    const engine = await openDb(nodeFs, dir);
    try {
      await assert.rejects(
        engine.get(Buffer.from(found.entry.key)),
        isCorruptionOf(file, (o) => o === found.block),
      );
      const r = await readEverything(engine, d.keys);
      assert.equal(r.scanComplete, false);
      for (const err of r.errors) isCorruptionOf(file, (o) => o === found.block)(err);
      assert.deepEqual(wrongReads(r, d.expected), []);
    } finally {
      await engine.close();
    }
  });

  test("a damaged index block, MANIFEST or CURRENT in a real directory fails the open", async () => {
    await baseDb();
    const sst = named((n) => n.endsWith(".sst"));
    const manifest = named((n) => n.startsWith("MANIFEST-"));
    const cases: [string, number][] = [
      [sst, tableLayout(readFileSync(path.join(original, sst))).indexOffset + 1],
      [manifest, readFileSync(path.join(original, manifest)).length - 2],
      ["CURRENT", 30],
    ];
    for (const [name, at] of cases) {
      const { dir, file } = damagedCopy(name, at);
      await assert.rejects(openDb(nodeFs, dir), isCorruptionOf(file), `${name} byte ${at}`);
    }
  });
});
