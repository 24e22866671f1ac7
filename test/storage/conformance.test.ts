/**
 * The StorageEngine conformance suite: one set of tests for the contract in src/storage/engine.ts, run
 * over every implementation (MemoryEngine; LsmEngine on MemoryFileSystem; LsmEngine on the real disk).
 *
 * The LSM runs use small memtables, tables and blocks, so that the data of a test is spread over the
 * memtable, frozen memtables and several sorted runs, and flushes and compactions happen during the tests.
 * The reference is a Map of hex strings: two-digit-per-byte hex compares like memcmp, so sorting hex
 * strings gives the engine's key order.
 *
 * After the shared suite, LSM-only tests: reopen, the directory lock, and the three durability modes.
 */
import assert from "node:assert/strict";
import * as nodeFs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type { TimerHandle, Timers } from "../../src/runtime/runtime.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import {
  type Durability,
  type FileSystem,
  LsmEngine,
  type LsmOptions,
  MemoryEngine,
  MemoryFileSystem,
  NodeFileSystem,
  type RangeOptions,
  type StorageEngine,
  StorageError,
  type WriteOp,
  workerCompactionExecutor,
} from "../../src/storage/index.js";

// ---------------------------------------------------------------- helpers

/** Seeds the one fast-check property here; FC_SEED=<n> replays another. */
const FC_SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 42;
const SMALL_LSM: Partial<LsmOptions> = {
  memtableBytes: 16 * 1024,
  tableTargetBytes: 64 * 1024,
  blockBytes: 512,
};
const TEST_TIMEOUT_MS = 60_000;
const MAX_KEY_BYTES = 65535;

const b = (s: string): Buffer => Buffer.from(s, "utf8");
const bytes = (...v: number[]): Buffer => Buffer.from(v);
const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString("hex");
const unhex = (h: string): Buffer => Buffer.from(h, "hex");

/** The reference: hex key -> hex value. */
type Model = Map<string, string>;

function applyToModel(model: Model, ops: readonly WriteOp[]): void {
  for (const op of ops) {
    if (op.kind === "put") model.set(hex(op.key), hex(op.value));
    else model.delete(hex(op.key));
  }
}

function modelRange(model: Model, range: RangeOptions = {}): [string, string][] {
  const lo = range.gte !== undefined ? hex(range.gte) : undefined;
  const loEx = range.gt !== undefined ? hex(range.gt) : undefined;
  const hi = range.lt !== undefined ? hex(range.lt) : undefined;
  const hiIn = range.lte !== undefined ? hex(range.lte) : undefined;
  const out = [...model.entries()]
    .filter(([k]) => {
      if (lo !== undefined && k < lo) return false;
      if (lo === undefined && loEx !== undefined && k <= loEx) return false;
      if (hi !== undefined && k >= hi) return false;
      if (hiIn !== undefined && k > hiIn) return false;
      return true;
    })
    .sort(([a], [c]) => (a < c ? -1 : a > c ? 1 : 0));
  return range.limit === undefined ? out : out.slice(0, range.limit);
}

async function scan(e: StorageEngine, range?: RangeOptions): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const { key, value } of e.iterate(range)) {
    assert.ok(key instanceof Uint8Array && value instanceof Uint8Array);
    out.push([hex(key), hex(value)]);
  }
  return out;
}

async function getHex(e: StorageEngine, key: Uint8Array): Promise<string | undefined> {
  const v = await e.get(key);
  if (v === undefined) return undefined;
  assert.ok(v instanceof Uint8Array, "get returns a Uint8Array");
  return hex(v);
}

/** Every key of the model, and some keys it lacks, read back one by one. */
async function assertMatchesModel(e: StorageEngine, model: Model, absent: readonly Uint8Array[] = []) {
  for (const [k, v] of model) assert.equal(await getHex(e, unhex(k)), v, `get(${k})`);
  for (const k of absent) if (!model.has(hex(k))) assert.equal(await e.get(k), undefined, `get(${hex(k)})`);
  assert.deepEqual(await scan(e), modelRange(model));
}

/** Runs `fn()` and checks that the promise it returns rejects with a StorageError of `code`. */
async function rejectsWithCode(fn: () => Promise<unknown>, code: string, what = ""): Promise<void> {
  const p = fn(); // a synchronous throw fails the test: the contract is promise-based
  let err: unknown;
  let settledOk = false;
  try {
    await p;
    settledOk = true;
  } catch (e) {
    err = e;
  }
  assert.ok(!settledOk, `${what}: expected a rejection with ${code}, but it resolved`);
  assert.ok(err instanceof StorageError, `${what}: expected a StorageError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, `${what}: ${err.message}`);
}

/** Deterministic bulk data: `count` distinct binary keys of 3..12 bytes with 10..80-byte values. */
function randomEntries(seed: number, count: number): { key: Buffer; value: Buffer }[] {
  const r = seededRandom(seed);
  const byte = () => {
    // Bias towards the edge bytes that trip signed or string comparisons.
    const x = r.next();
    if (x < 0.1) return 0x00;
    if (x < 0.2) return 0xff;
    if (x < 0.25) return 0x7f;
    if (x < 0.3) return 0x80;
    return Math.floor(r.next() * 256);
  };
  const seen = new Set<string>();
  const out: { key: Buffer; value: Buffer }[] = [];
  while (out.length < count) {
    const key = Buffer.alloc(3 + Math.floor(r.next() * 10));
    for (let i = 0; i < key.length; i++) key[i] = byte();
    if (seen.has(hex(key))) continue;
    seen.add(hex(key));
    const value = Buffer.alloc(10 + Math.floor(r.next() * 70));
    for (let i = 0; i < value.length; i++) value[i] = byte();
    out.push({ key, value });
  }
  return out;
}

async function writeInBatches(e: StorageEngine, ops: readonly WriteOp[], batch = 64): Promise<void> {
  for (let i = 0; i < ops.length; i += batch) await e.write(ops.slice(i, i + batch));
}

/** Timers driven by the test: `fire()` runs what is due, whatever its delay. */
class ManualTimers implements Timers {
  private pending: (() => void)[] = [];
  after(_ms: number, fn: () => void): TimerHandle {
    this.pending.push(fn);
    return { cancel: () => (this.pending = this.pending.filter((f) => f !== fn)) };
  }
  fire(): void {
    const due = this.pending;
    this.pending = [];
    for (const f of due) f();
  }
}

// ---------------------------------------------------------------- the shared suite

interface Place {
  readonly fs: FileSystem;
  readonly dir: string;
  /** Run compactions in a worker thread (the real disk only). */
  readonly worker?: boolean;
  /** Options of every open of this place (on top of SMALL_LSM and the test's own). */
  readonly options?: Partial<LsmOptions>;
}

interface Subject {
  readonly engine: StorageEngine;
  /** LSM: freeze the memtable and write it to a table. Memory: nothing. */
  flush(): Promise<void>;
  /** LSM: wait until no flush or compaction is running or due. Memory: nothing. */
  settle(): Promise<void>;
  /** LSM: table files on disk that no sorted run names (garbage once no reader needs them). */
  unreferencedTables?(): Promise<number>;
}

function lsmSubject(engine: LsmEngine, place: Place): Subject {
  return {
    engine,
    flush: () => engine.flush(),
    settle: () => engine.waitForBackground(),
    unreferencedTables: async () => {
      const onDisk = (await place.fs.readdir(place.dir)).filter((n) => n.endsWith(".sst")).length;
      return onDisk - engine.stats().levels.reduce((sum, l) => sum + l.tables, 0);
    },
  };
}

/** Tables replaced by compactions are deleted once no iterator reads them (deletion runs in the background). */
async function assertNoUnreferencedTables(s: Subject): Promise<void> {
  if (s.unreferencedTables === undefined) return;
  await s.settle();
  let n = await s.unreferencedTables();
  for (let i = 0; i < 500 && n !== 0; i++) {
    await new Promise((r) => setTimeout(r, 5));
    n = await s.unreferencedTables();
  }
  assert.equal(n, 0, "table files that no run names are left on disk");
}

async function withSubject(open: () => Promise<Subject>, fn: (s: Subject) => Promise<void>): Promise<void> {
  const s = await open();
  try {
    await fn(s);
  } finally {
    await s.engine.close();
  }
}

/** Registers the conformance tests in the current describe block; `open` gives a fresh, empty engine. */
function storageEngineConformance(open: () => Promise<Subject>): void {
  const t = (name: string, fn: (s: Subject) => Promise<void>) =>
    test(name, { timeout: TEST_TIMEOUT_MS }, () => withSubject(open, fn));

  t("get of a missing key is undefined; put then get returns the value", async ({ engine: e }) => {
    assert.equal(await e.get(b("nothing")), undefined);
    await e.put(b("k1"), b("v1"));
    assert.equal(await getHex(e, b("k1")), hex(b("v1")));
    assert.equal(await e.get(b("k2")), undefined);
    assert.equal(await e.get(b("k")), undefined, "a prefix of a stored key is another key");
    assert.equal(await e.get(b("k10")), undefined, "an extension of a stored key is another key");
  });

  t("put overwrites, delete removes, delete of a missing key is a no-op", async (s) => {
    const e = s.engine;
    await e.put(b("a"), b("1"));
    await e.put(b("a"), b("2"));
    assert.equal(await getHex(e, b("a")), hex(b("2")));
    await s.flush();
    await e.put(b("a"), b("3"));
    assert.equal(await getHex(e, b("a")), hex(b("3")), "a memtable version hides the table version");
    await e.delete(b("a"));
    assert.equal(await e.get(b("a")), undefined);
    await s.flush();
    assert.equal(await e.get(b("a")), undefined, "a flushed tombstone hides older versions");
    await e.delete(b("never-written"));
    await e.delete(b("a"));
    assert.equal(await e.get(b("never-written")), undefined);
    await e.put(b("a"), b("4"));
    assert.equal(await getHex(e, b("a")), hex(b("4")), "a key can come back after its deletion");
    assert.deepEqual(await scan(e), [[hex(b("a")), hex(b("4"))]]);
  });

  t("write applies a batch in order: a later operation on the same key wins", async (s) => {
    const e = s.engine;
    await e.put(b("x"), b("old-x"));
    await e.put(b("y"), b("old-y"));
    const ops: WriteOp[] = [
      { kind: "put", key: b("a"), value: b("a1") },
      { kind: "put", key: b("b"), value: b("b1") },
      { kind: "delete", key: b("x") },
      { kind: "put", key: b("a"), value: b("a2") },
      { kind: "delete", key: b("b") },
      { kind: "put", key: b("x"), value: b("x2") },
      { kind: "delete", key: b("y") },
      { kind: "delete", key: b("missing") },
      { kind: "put", key: b("c"), value: b("c1") },
      { kind: "delete", key: b("c") },
      { kind: "put", key: b("c"), value: b("c2") },
    ];
    await e.write(ops);
    const model: Model = new Map([
      [hex(b("x")), hex(b("old-x"))],
      [hex(b("y")), hex(b("old-y"))],
    ]);
    applyToModel(model, ops);
    await assertMatchesModel(e, model, [b("b"), b("y"), b("missing")]);
    await s.flush();
    await assertMatchesModel(e, model, [b("b"), b("y"), b("missing")]);
    await e.write([]);
    await assertMatchesModel(e, model);
  });

  t("a batch with one invalid operation is refused whole", async ({ engine: e }) => {
    await e.put(b("keep"), b("1"));
    const bad = [
      { kind: "put", key: b("new"), value: b("v") },
      { kind: "delete", key: b("keep") },
      { kind: "upsert", key: b("z"), value: b("v") },
    ] as unknown as WriteOp[];
    await rejectsWithCode(() => e.write(bad), "ERR_INVALID_ARGUMENT", "unknown kind in a batch");
    await rejectsWithCode(
      () =>
        e.write([
          { kind: "put", key: b("new"), value: b("v") },
          { kind: "put", key: new Uint8Array(0), value: b("v") },
        ]),
      "ERR_INVALID_ARGUMENT",
      "empty key in a batch",
    );
    assert.equal(await e.get(b("new")), undefined);
    assert.equal(await getHex(e, b("keep")), hex(b("1")));
  });

  t("writes issued concurrently are applied in call order", async ({ engine: e }) => {
    const k = b("contended");
    const ps: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      if (i % 7 === 3) ps.push(e.delete(k));
      else ps.push(e.put(k, Buffer.alloc(1 + (i % 50), i & 0xff)));
    }
    ps.push(e.put(k, b("last")));
    await Promise.all(ps);
    assert.equal(await getHex(e, k), hex(b("last")));
  });

  t("binary keys and values: 0x00 and 0xff bytes, empty values, views into larger buffers", async (s) => {
    const e = s.engine;
    const backing = bytes(9, 9, 9, 0x00, 0xff, 0x00, 9, 9);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 3, 3); // 00 ff 00
    const entries: [Uint8Array, Uint8Array][] = [
      [bytes(0x00), bytes(0xff)],
      [bytes(0x00, 0x00), bytes()],
      [bytes(0xff), bytes(0x00, 0x00, 0x00)],
      [bytes(0xff, 0xff, 0xff), bytes(0xff, 0x00, 0xff)],
      [bytes(0x7f), bytes(0x80)],
      [bytes(0x80), bytes()],
      [view, new Uint8Array(backing.buffer, backing.byteOffset + 1, 2)],
    ];
    const model: Model = new Map();
    for (const [k, v] of entries) {
      await e.put(k, v);
      model.set(hex(k), hex(v));
    }
    const absent = [bytes(0x00, 0x00, 0x00), bytes(0x01), bytes(0xfe), bytes(0x00, 0xff), bytes(0xff, 0xff)];
    await assertMatchesModel(e, model, absent);
    const empty = await e.get(bytes(0x00, 0x00));
    assert.ok(empty instanceof Uint8Array, "an empty value is present, not absent");
    assert.equal(empty.length, 0);
    await s.flush();
    await assertMatchesModel(e, model, absent);
    const emptyFromTable = await e.get(bytes(0x80));
    assert.ok(emptyFromTable instanceof Uint8Array && emptyFromTable.length === 0);
  });

  t("iteration is in memcmp order, over memtable and tables alike", async (s) => {
    const e = s.engine;
    const data = randomEntries(11, 3000);
    // Prefixes of each other, and the bytes that differ between signed and unsigned comparison.
    for (const k of [
      [0x01],
      [0x01, 0x00],
      [0x01, 0x00, 0x00],
      [0x01, 0xff],
      [0x02],
      [0x7f, 0xff],
      [0x80, 0x00],
    ])
      data.push({ key: bytes(...k), value: bytes(k.length) });
    const model: Model = new Map();
    for (let i = 0; i < data.length; i += 500) {
      const ops: WriteOp[] = data.slice(i, i + 500).map((d) => ({ kind: "put", ...d }));
      await writeInBatches(e, ops);
      applyToModel(model, ops);
      if ((i / 500) % 2 === 0) await s.flush();
    }
    const got = await scan(e);
    const keys = got.map(([k]) => unhex(k));
    for (let i = 1; i < keys.length; i++)
      assert.ok(Buffer.compare(keys[i - 1]!, keys[i]!) < 0, `keys ${i - 1} and ${i} are out of order`);
    assert.deepEqual(got, modelRange(model));
    await s.settle();
    assert.deepEqual(await scan(e), modelRange(model));
  });

  t("range options gte, gt, lt, lte and limit", async (s) => {
    const e = s.engine;
    const key = (i: number) => bytes(i >> 8, i & 0xff);
    const model: Model = new Map();
    const ops: WriteOp[] = [];
    for (let i = 0; i < 600; i += 2) ops.push({ kind: "put", key: key(i), value: bytes(i & 0xff, 1) });
    for (let i = 0; i < 600; i += 20) ops.push({ kind: "delete", key: key(i) });
    await writeInBatches(e, ops.slice(0, 200));
    await s.flush();
    await writeInBatches(e, ops.slice(200));
    applyToModel(model, ops);
    // Stored keys, deleted keys, keys between stored ones, and keys beyond both ends.
    const bounds = [key(0), key(1), key(20), key(255), key(256), key(598), bytes(0xff, 0xff, 0xff), bytes(0)];
    const lowers: RangeOptions[] = [{}, ...bounds.flatMap((k) => [{ gte: k }, { gt: k }])];
    const uppers: RangeOptions[] = [{}, ...bounds.flatMap((k) => [{ lt: k }, { lte: k }])];
    for (const lo of lowers)
      for (const hi of uppers)
        for (const limit of [undefined, 0, 1, 7]) {
          const range: RangeOptions = { ...lo, ...hi, ...(limit === undefined ? {} : { limit }) };
          const show = JSON.stringify(range, (_k, v) =>
            v?.type === "Buffer" ? hex(Buffer.from(v.data)) : v,
          );
          assert.deepEqual(await scan(e, range), modelRange(model, range), show);
        }
  });

  t("breaking out of an iteration early releases it", async (s) => {
    const e = s.engine;
    const ops: WriteOp[] = [];
    for (let i = 0; i < 1000; i++) ops.push({ kind: "put", key: b(`brk-${i}`), value: Buffer.alloc(40, i) });
    await writeInBatches(e, ops);
    await s.flush();
    for (let round = 0; round < 20; round++) {
      let n = 0;
      for await (const _ of e.iterate({ gte: b(`brk-${round}`) })) if (++n === 3) break;
      assert.equal(n, 3);
    }
    await e.put(b("after"), b("1"));
    await s.flush();
    await s.settle();
    assert.equal(await getHex(e, b("after")), hex(b("1")));
    await assertNoUnreferencedTables(s);
  });

  t("an iterator keeps its snapshot while writes, flushes and compactions happen", async (s) => {
    const e = s.engine;
    const model: Model = new Map();
    const load: WriteOp[] = [];
    for (let i = 0; i < 1500; i++)
      load.push({ kind: "put", key: b(`snap-${String(i).padStart(5, "0")}`), value: Buffer.alloc(30, i) });
    await writeInBatches(e, load);
    await s.flush();
    const overwrite: WriteOp[] = load
      .filter((_, i) => i % 3 === 0)
      .map((op) => ({ kind: "put", key: op.key, value: b("second version") }));
    await writeInBatches(e, overwrite);
    applyToModel(model, load);
    applyToModel(model, overwrite);
    const expected = modelRange(model);

    const before = e.stats();
    const it = e.iterate();
    const got: [string, string][] = [];
    for (let i = 0; i < 10; i++) {
      const r = await it.next();
      assert.ok(r.done !== true);
      got.push([hex(r.value.key), hex(r.value.value)]);
    }
    // Under the open iterator: delete everything, write new keys between the old ones and new versions
    // of deleted ones, and push all of it through several flushes so that compactions merge the runs the
    // iterator reads (a merge that includes the oldest run also drops the tombstones and the old values).
    for (let round = 0; round < 6; round++) {
      const ops: WriteOp[] = [];
      for (let i = round; i < 1500; i += 6) {
        const k = b(`snap-${String(i).padStart(5, "0")}`);
        ops.push({ kind: "delete", key: k });
        ops.push({ kind: "put", key: Buffer.concat([k, b("+")]), value: Buffer.alloc(30, 0xee) });
        if (i % 5 === 0) ops.push({ kind: "put", key: k, value: b("written after the snapshot") });
      }
      await writeInBatches(e, ops);
      applyToModel(model, ops);
      await s.flush();
    }
    await s.settle();
    if (e.kind === "lsm") {
      const now = e.stats();
      assert.ok(now.flushes > before.flushes, "flushes happened during the iteration");
      assert.ok(now.compactions > before.compactions, "compactions happened during the iteration");
    }
    for (;;) {
      const r = await it.next();
      if (r.done === true) break;
      got.push([hex(r.value.key), hex(r.value.value)]);
    }
    assert.equal(got.length, expected.length);
    assert.deepEqual(got, expected);
    assert.deepEqual(await scan(e), modelRange(model), "a new iterator sees the new state");
    await assertNoUnreferencedTables(s);
  });

  // Contract (engine.ts): "iterate reads one consistent snapshot, taken when it is called".
  t("iterate() takes its snapshot when called, not at the first next()", async (s) => {
    const e = s.engine;
    await e.put(b("a"), b("1"));
    await e.put(b("c"), b("1"));
    const it = e.iterate();
    await e.put(b("b"), b("written after iterate() was called"));
    await e.delete(b("c"));
    await s.flush();
    const got: string[] = [];
    for await (const { key } of it) got.push(key.toString());
    assert.deepEqual(got, ["a", "c"]);
  });

  t("invalid arguments reject with ERR_INVALID_ARGUMENT and change nothing", async ({ engine: e }) => {
    const INVALID = "ERR_INVALID_ARGUMENT";
    const badKeys: [string, unknown][] = [
      ["empty key", new Uint8Array(0)],
      ["string key", "abc"],
      ["array key", [1, 2, 3]],
      ["null key", null],
      ["undefined key", undefined],
      ["ArrayBuffer key", new ArrayBuffer(3)],
      ["too-long key", new Uint8Array(MAX_KEY_BYTES + 1)],
    ];
    for (const [what, key] of badKeys) {
      const k = key as Uint8Array;
      await rejectsWithCode(() => e.get(k), INVALID, `get with ${what}`);
      await rejectsWithCode(() => e.put(k, b("v")), INVALID, `put with ${what}`);
      await rejectsWithCode(() => e.delete(k), INVALID, `delete with ${what}`);
      await rejectsWithCode(
        () => e.write([{ kind: "put", key: k, value: b("v") }]),
        INVALID,
        `write: ${what}`,
      );
    }
    await rejectsWithCode(() => e.put(b("k"), "v" as unknown as Uint8Array), INVALID, "string value");
    await rejectsWithCode(() => e.put(b("k"), undefined as unknown as Uint8Array), INVALID, "no value");
    await rejectsWithCode(
      () => e.write([{ kind: "merge", key: b("k"), value: b("v") } as unknown as WriteOp]),
      INVALID,
      "unknown op kind",
    );
    await rejectsWithCode(() => e.write([null as unknown as WriteOp]), INVALID, "null op");
    await rejectsWithCode(() => e.write("ops" as unknown as WriteOp[]), INVALID, "ops not an array");
    assert.deepEqual(await scan(e), [], "nothing was written");
    // The longest allowed key works, in memory and in a table.
    const longest = Buffer.alloc(MAX_KEY_BYTES, 0xab);
    await e.put(longest, b("long"));
    assert.equal(await getHex(e, longest), hex(b("long")));
  });

  t("the longest allowed key survives a flush", async (s) => {
    const longest = Buffer.alloc(MAX_KEY_BYTES, 0xcd);
    await s.engine.put(longest, b("long"));
    await s.engine.put(b("short"), b("s"));
    await s.flush();
    assert.equal(await getHex(s.engine, longest), hex(b("long")));
    const got = await scan(s.engine);
    assert.deepEqual(
      got.map(([k]) => k.length / 2),
      [5, MAX_KEY_BYTES], // "short" (0x73...) sorts before 0xcd...
    );
  });

  t("after close every call rejects with ERR_CLOSED; close is idempotent", async ({ engine: e }) => {
    await e.put(b("k"), b("v"));
    await Promise.all([e.close(), e.close()]);
    await e.close();
    const CLOSED = "ERR_CLOSED";
    await rejectsWithCode(() => e.get(b("k")), CLOSED, "get");
    await rejectsWithCode(() => e.put(b("k"), b("v")), CLOSED, "put");
    await rejectsWithCode(() => e.delete(b("k")), CLOSED, "delete");
    await rejectsWithCode(() => e.write([{ kind: "delete", key: b("k") }]), CLOSED, "write");
    await rejectsWithCode(() => e.iterate().next(), CLOSED, "iterate");
    // Closing takes precedence over argument checks.
    await rejectsWithCode(() => e.get(new Uint8Array(0)), CLOSED, "get with an empty key after close");
    await e.close();
  });

  t("an iteration running when close() is called fails with ERR_CLOSED", async (s) => {
    const e = s.engine;
    const ops: WriteOp[] = [];
    for (let i = 0; i < 500; i++) ops.push({ kind: "put", key: b(`open-${i}`), value: Buffer.alloc(40, i) });
    await writeInBatches(e, ops);
    await s.flush();
    const it = e.iterate();
    assert.equal((await it.next()).done, false);
    await e.close();
    await rejectsWithCode(() => it.next(), "ERR_CLOSED", "next() after close");
  });

  t("large values: larger than a block, a table and a memtable", async (s) => {
    const e = s.engine;
    const sizes = [0, 511, 512, 513, 5000, 65535, 65536, 70_000, 300_000];
    const model: Model = new Map();
    for (const [i, n] of sizes.entries()) {
      const key = b(`large-${i}`);
      const value = Buffer.alloc(n, i + 1);
      if (n > 0) value[n - 1] = 0xfe;
      await e.put(key, value);
      model.set(hex(key), hex(value));
    }
    await assertMatchesModel(e, model);
    await s.flush();
    await s.settle();
    await assertMatchesModel(e, model);
  });

  t("callers may reuse their buffers as soon as a call returns", async ({ engine: e }) => {
    const key = b("mutable-key");
    const value = b("mutable-value");
    const p = e.put(key, value);
    key.fill(0x21);
    value.fill(0x21);
    await p;
    const batchKey = b("batch-key");
    const batchValue = b("batch-value");
    const ops: WriteOp[] = [{ kind: "put", key: batchKey, value: batchValue }];
    const q = e.write(ops);
    batchKey.fill(0x22);
    batchValue.fill(0x22);
    await q;
    // And after the promise settles.
    const late = b("late-key");
    const lateValue = b("late-value");
    await e.put(late, lateValue);
    late.fill(0x23);
    lateValue.fill(0x23);
    assert.equal(await getHex(e, b("mutable-key")), hex(b("mutable-value")));
    assert.equal(await getHex(e, b("batch-key")), hex(b("batch-value")));
    assert.equal(await getHex(e, b("late-key")), hex(b("late-value")));
    assert.equal(await e.get(key), undefined);
    assert.equal(await e.get(batchKey), undefined);
    assert.equal(await e.get(late), undefined);
  });

  t("returned keys and values are the caller's to mutate", async (s) => {
    const e = s.engine;
    const check = async (where: string) => {
      const v1 = await e.get(b("ret-1"));
      assert.ok(v1 !== undefined);
      v1.fill(0);
      assert.equal(
        await getHex(e, b("ret-1")),
        hex(b("value-1")),
        `${where}: get after mutating a get result`,
      );
      for await (const { key, value } of e.iterate()) {
        key.fill(0);
        value.fill(0);
      }
      assert.deepEqual(
        await scan(e),
        [
          [hex(b("ret-1")), hex(b("value-1"))],
          [hex(b("ret-2")), hex(b("value-2"))],
        ],
        `${where}: scan after mutating entries`,
      );
      assert.equal(await getHex(e, b("ret-2")), hex(b("value-2")), `${where}: get after mutating entries`);
    };
    await e.put(b("ret-1"), b("value-1"));
    await e.put(b("ret-2"), b("value-2"));
    await check("memtable");
    await s.flush();
    await check("table"); // the second read of each comes from the block cache
  });

  t("several thousand keys across many flushes and compactions", async (s) => {
    const e = s.engine;
    const data = randomEntries(7, 4000);
    const model: Model = new Map();
    const ops: WriteOp[] = data.map((d) => ({ kind: "put", ...d }));
    await writeInBatches(e, ops, 50);
    applyToModel(model, ops);
    const r = seededRandom(99);
    const churn: WriteOp[] = [];
    for (const d of data) {
      const x = r.next();
      if (x < 0.2) churn.push({ kind: "delete", key: d.key });
      else if (x < 0.4) churn.push({ kind: "put", key: d.key, value: Buffer.alloc(Math.floor(x * 100), 7) });
    }
    // One at a time and concurrently, so that group commit runs too.
    await Promise.all(churn.map((op) => (op.kind === "put" ? e.put(op.key, op.value) : e.delete(op.key))));
    applyToModel(model, churn);
    await s.settle();
    const absent = randomEntries(8, 300).map((d) => d.key);
    await assertMatchesModel(e, model, absent);
    if (e.kind === "lsm") {
      const st = e.stats();
      assert.ok(st.flushes > 0, "flushes happened");
      assert.ok(st.compactions > 0, "compactions happened");
      assert.ok(st.levels.length > 0, "there are sorted runs");
      for (const l of st.levels) assert.ok(l.tables > 0 && l.bytes > 0, `run ${l.level} has tables`);
      assert.ok(st.bloomChecks > 0, "gets reached the tables");
      assert.ok(st.userBytesWritten > 0 && st.tableBytesWritten > 0 && st.walBytesWritten > 0);
    }
    await assertNoUnreferencedTables(s);
    // Random ranges between stored keys against the model.
    const sorted = data.map((d) => d.key).sort(Buffer.compare);
    const bound = fc.option(fc.tuple(fc.boolean(), fc.nat(sorted.length - 1)), { nil: undefined });
    await fc.assert(
      fc.asyncProperty(bound, bound, fc.option(fc.nat(50), { nil: undefined }), async (lo, hi, limit) => {
        const range: RangeOptions = {
          ...(lo === undefined ? {} : lo[0] ? { gte: sorted[lo[1]]! } : { gt: sorted[lo[1]]! }),
          ...(hi === undefined ? {} : hi[0] ? { lte: sorted[hi[1]]! } : { lt: sorted[hi[1]]! }),
          ...(limit === undefined ? {} : { limit }),
        };
        assert.deepEqual(await scan(e, range), modelRange(model, range));
      }),
      { numRuns: 60, seed: FC_SEED },
    );
  });
}

// ---------------------------------------------------------------- LSM-only tests

function openLsm(place: Place, options: Partial<LsmOptions> = {}, timers?: Timers): Promise<LsmEngine> {
  return LsmEngine.open({
    dir: place.dir,
    fs: place.fs,
    options: { ...SMALL_LSM, ...place.options, ...options },
    ...(timers ? { timers } : {}),
    ...(place.worker ? { compactor: workerCompactionExecutor() } : {}),
  });
}

/** Data with overwrites and deletes, written in a mix of batches and single calls. */
async function writeWorkload(e: StorageEngine, model: Model, seed: number, count: number): Promise<void> {
  const data = randomEntries(seed, count);
  const ops: WriteOp[] = data.map((d) => ({ kind: "put", ...d }));
  await writeInBatches(e, ops.slice(0, count / 2), 40);
  await Promise.all(
    ops.slice(count / 2).map((op) => (op.kind === "put" ? e.put(op.key, op.value) : undefined)),
  );
  applyToModel(model, ops);
  const later: WriteOp[] = [];
  for (let i = 0; i < data.length; i += 4) later.push({ kind: "delete", key: data[i]!.key });
  for (let i = 1; i < data.length; i += 4)
    later.push({ kind: "put", key: data[i]!.key, value: b(`v2-${i}`) });
  await writeInBatches(e, later, 25);
  applyToModel(model, later);
}

function lsmOnlyTests(newPlace: () => Place, memFs?: () => MemoryFileSystem): void {
  const t = (name: string, fn: () => Promise<void>) => test(name, { timeout: TEST_TIMEOUT_MS }, fn);

  t("reopen after close keeps everything, again and again", async () => {
    const place = newPlace();
    const model: Model = new Map();
    let e = await openLsm(place);
    try {
      await writeWorkload(e, model, 21, 2000);
      await e.close();
      e = await openLsm(place);
      await assertMatchesModel(e, model);
      assert.ok(e.stats().levels.length > 0, "the reopened engine reads sorted runs");
      await writeWorkload(e, model, 22, 1000);
      await e.put(b("unflushed"), b("only in the WAL"));
      model.set(hex(b("unflushed")), hex(b("only in the WAL")));
      await e.close();
      e = await openLsm(place);
      await assertMatchesModel(e, model);
      await e.close();
      e = await openLsm(place);
      await assertMatchesModel(e, model);
    } finally {
      await e.close();
    }
  });

  t("a second open of an open directory fails with ERR_LOCKED", async () => {
    const place = newPlace();
    const e = await openLsm(place);
    try {
      await e.put(b("k"), b("v"));
      await rejectsWithCode(() => openLsm(place), "ERR_LOCKED", "second open");
      await rejectsWithCode(() => openLsm(place), "ERR_LOCKED", "third open");
      assert.equal(await getHex(e, b("k")), hex(b("v")), "the first engine is unaffected");
      await e.put(b("k2"), b("v2"));
    } finally {
      await e.close();
    }
    const again = await openLsm(place);
    try {
      assert.equal(await getHex(again, b("k2")), hex(b("v2")));
    } finally {
      await again.close();
    }
  });

  for (const durability of ["fsync", "interval", "none"] as const satisfies readonly Durability[]) {
    t(`durability "${durability}": writes survive close and reopen`, async () => {
      const place = newPlace();
      const timers = systemRuntime().timers;
      const opts = { durability, syncIntervalMs: 5 };
      const model: Model = new Map();
      let e = await openLsm(place, opts, timers);
      try {
        await writeWorkload(e, model, 31, 1500);
        await assertMatchesModel(e, model);
        await e.close();
        e = await openLsm(place, opts, timers);
        await assertMatchesModel(e, model);
        await e.put(b("tail"), b("last write before close"));
        model.set(hex(b("tail")), hex(b("last write before close")));
        await e.close();
        e = await openLsm(place, opts, timers);
        await assertMatchesModel(e, model);
      } finally {
        await e.close();
      }
    });
  }

  t('durability "interval" without timers is refused', async () => {
    await rejectsWithCode(() => openLsm(newPlace(), { durability: "interval" }), "ERR_INVALID_ARGUMENT");
  });

  t("writes that wait for queue space are still applied in call order", async () => {
    // maxPendingWriteBytes is tiny, so every writer after the first waits for room in the queue
    // (back-pressure); the last one is small enough to fit where the others do not.
    const e = await openLsm(newPlace(), { maxPendingWriteBytes: 256 });
    try {
      const k = b("ordered");
      const n = 40;
      const ps: Promise<void>[] = [];
      const resolved: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = e.put(k, Buffer.alloc(i === n - 1 ? 1 : 120, i));
        ps.push(p.then(() => void resolved.push(i)));
      }
      await Promise.all(ps);
      const v = await e.get(k);
      assert.ok(v !== undefined);
      assert.equal(v[0], n - 1, `the last write wins (found the value of write ${v[0]})`);
      // A write resolves once applied; one resolving before an earlier one was applied before it.
      assert.deepEqual(resolved, [...Array(n).keys()], "writes resolve in call order");
    } finally {
      await e.close();
    }
  });

  if (memFs === undefined) return;

  t("close() while writers wait for a compaction completes their writes", async () => {
    // One write per commit group and a low run limit: the writers soon wait for a compaction to bring
    // the number of sorted runs down (back-pressure), and close() is called while they are queued.
    const fs = memFs();
    const place = { fs, dir: "/db" };
    const options = {
      memtableBytes: 600,
      maxWriteGroupBytes: 128,
      minMergeWidth: 2,
      maxRunsBeforeForcedMerge: 3,
    };
    const e = await openLsm(place, { ...options, stopWritesAtRuns: 4 });
    const model: Model = new Map();
    const outcomes: string[] = [];
    const writes = Array.from({ length: 40 }, (_, i) => {
      model.set(hex(bytes(i)), hex(Buffer.alloc(100, i)));
      return e.put(bytes(i), Buffer.alloc(100, i)).then(
        () => void outcomes.push("ok"),
        (err: unknown) => void outcomes.push(String(err)),
      );
    });
    let closed = false;
    const closing = e.close().then(() => {
      closed = true;
    });
    // MemoryFileSystem does no real I/O: after a few turns of the event loop, what is still pending
    // waits for something that will never happen.
    for (let i = 0; i < 20 && !closed; i++) await new Promise((r) => setImmediate(r));
    assert.ok(closed, `close() never finished; ${outcomes.length} of 40 writes settled`);
    await Promise.all([closing, ...writes]);
    assert.deepEqual(new Set(outcomes), new Set(["ok"]), "writes issued before close() succeed");
    const again = await openLsm(place, options);
    try {
      await assertMatchesModel(again, model);
    } finally {
      await again.close();
    }
  });

  t('durability "fsync": a power loss keeps every acknowledged write', async () => {
    const fs = memFs();
    const place = { fs, dir: "/db" };
    const model: Model = new Map();
    const e = await openLsm(place);
    await writeWorkload(e, model, 41, 1500);
    await e.waitForBackground();
    fs.crash({ unsynced: "drop" }); // the engine is abandoned, as a power cut would
    const after = await openLsm(place);
    try {
      await assertMatchesModel(after, model);
    } finally {
      await after.close();
    }
  });

  t('durability "interval": a power loss keeps what the periodic sync covered', async () => {
    const fs = memFs();
    const place = { fs, dir: "/db" };
    const timers = new ManualTimers();
    const model: Model = new Map();
    const e = await openLsm(place, { durability: "interval" }, timers);
    await writeWorkload(e, model, 42, 1500);
    await e.waitForBackground();
    const syncs = e.stats().walSyncs;
    timers.fire();
    for (let i = 0; i < 100 && e.stats().walSyncs === syncs; i++) await new Promise((r) => setImmediate(r));
    assert.equal(e.stats().walSyncs, syncs + 1, "the timer synced the WAL");
    fs.crash({ unsynced: "drop" });
    const after = await openLsm(place, { durability: "interval" }, timers);
    try {
      await assertMatchesModel(after, model);
    } finally {
      await after.close();
    }
  });

  t('durability "none": close makes everything durable', async () => {
    const fs = memFs();
    const place = { fs, dir: "/db" };
    const model: Model = new Map();
    const e = await openLsm(place, { durability: "none" });
    await writeWorkload(e, model, 43, 1500);
    await e.close();
    fs.crash({ unsynced: "drop" });
    const after = await openLsm(place, { durability: "none" });
    try {
      await assertMatchesModel(after, model);
    } finally {
      await after.close();
    }
  });
}

// ---------------------------------------------------------------- the implementations

describe("MemoryEngine", () => {
  storageEngineConformance(async () => ({
    engine: new MemoryEngine(),
    flush: async () => {},
    settle: async () => {},
  }));
});

describe("LsmEngine on MemoryFileSystem", () => {
  const newPlace = (): Place => ({ fs: new MemoryFileSystem(), dir: "/data/db" });
  storageEngineConformance(async () => {
    const place = newPlace();
    return lsmSubject(await openLsm(place), place);
  });
  lsmOnlyTests(newPlace, () => new MemoryFileSystem());
});

describe("LsmEngine on NodeFileSystem", () => {
  let root = "";
  let n = 0;
  before(() => {
    root = nodeFs.mkdtempSync(path.join(os.tmpdir(), "ringstore-conformance-"));
  });
  after(() => {
    if (root !== "") nodeFs.rmSync(root, { recursive: true, force: true });
  });
  const newPlace = (): Place => ({ fs: new NodeFileSystem(), dir: path.join(root, `db-${n++}`) });
  storageEngineConformance(async () => {
    const place = newPlace();
    return lsmSubject(await openLsm(place), place);
  });
  lsmOnlyTests(newPlace);
});

describe("LsmEngine on NodeFileSystem, blocks read through the thread pool (syncReads: false)", () => {
  let root = "";
  let n = 0;
  before(() => {
    root = nodeFs.mkdtempSync(path.join(os.tmpdir(), "ringstore-conformance-async-"));
  });
  after(() => {
    if (root !== "") nodeFs.rmSync(root, { recursive: true, force: true });
  });
  storageEngineConformance(async () => {
    const place: Place = {
      fs: new NodeFileSystem(),
      dir: path.join(root, `db-${n++}`),
      options: { syncReads: false, blockCacheBytes: 16 * 1024 },
    };
    return lsmSubject(await openLsm(place), place);
  });
});

describe("LsmEngine on NodeFileSystem, compaction in a worker thread", () => {
  let root = "";
  let n = 0;
  before(() => {
    root = nodeFs.mkdtempSync(path.join(os.tmpdir(), "ringstore-conformance-worker-"));
  });
  after(() => {
    if (root !== "") nodeFs.rmSync(root, { recursive: true, force: true });
  });
  storageEngineConformance(async () => {
    const place: Place = { fs: new NodeFileSystem(), dir: path.join(root, `db-${n++}`), worker: true };
    return lsmSubject(await openLsm(place), place);
  });
});
