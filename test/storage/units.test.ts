/**
 * Unit tests of the LSM engine's parts: the log format's torn-tail and corruption rules, the bloom
 * filter, the memtable's order and snapshots, and the compaction picker.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { seededRandom } from "../../src/runtime/runtime.js";
import { CorruptionError } from "../../src/storage/index.js";
import { KIND_DELETE, KIND_PUT } from "../../src/storage/lsm/batch-format.js";
import {
  BlockedBloomFilter,
  BloomFilter,
  bloomHash,
  buildBlockedBloom,
  buildBloom,
} from "../../src/storage/lsm/bloom.js";
import { type CompactionPick, pickCompaction } from "../../src/storage/lsm/compaction.js";
import {
  encodeLogFileHeader,
  encodeRecord,
  LOG_FILE_HEADER_BYTES,
  LOG_RECORD_HEADER_BYTES,
  parseLogFile,
  RECORD_TYPE_BATCH,
  WAL_MAGIC,
} from "../../src/storage/lsm/log-format.js";
import { Memtable } from "../../src/storage/lsm/memtable.js";
import { resolveLsmOptions } from "../../src/storage/lsm/options.js";
import type { Run } from "../../src/storage/lsm/version.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x5eed_2024;
const fcParams = (numRuns: number) => ({ seed: SEED, numRuns, includeErrorInReport: true }) as const;

const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString("hex");

// ---------------------------------------------------------------- log format

const FILE = "/db/000007.wal";

/** Payload bytes are never 0x00 or 0xff, so a file never ends in zeros and a flip never makes a zero. */
function payload(seed: number, length: number): Buffer {
  const r = seededRandom(seed);
  const p = Buffer.alloc(length);
  for (let i = 0; i < length; i++) p[i] = 1 + Math.floor(r.next() * 254);
  return p;
}

interface LogFile {
  readonly data: Buffer;
  /** Offset of each record. */
  readonly offsets: number[];
  readonly payloads: Buffer[];
}

function logFile(payloadLengths: readonly number[]): LogFile {
  const parts: Buffer[] = [encodeLogFileHeader(WAL_MAGIC, 7)];
  const offsets: number[] = [];
  const payloads: Buffer[] = [];
  let at = LOG_FILE_HEADER_BYTES;
  payloadLengths.forEach((n, i) => {
    const p = payload(i + 1, n);
    offsets.push(at);
    payloads.push(p);
    const rec = encodeRecord(RECORD_TYPE_BATCH, 100 + i, p);
    parts.push(rec);
    at += rec.length;
  });
  return { data: Buffer.concat(parts), offsets, payloads };
}

function assertRecords(parsed: ReturnType<typeof parseLogFile>, f: LogFile, count: number): void {
  assert.equal(parsed.records.length, count, "number of records read");
  parsed.records.forEach((r, i) => {
    assert.equal(r.offset, f.offsets[i]);
    assert.equal(r.sequence, 100 + i);
    assert.equal(r.type, RECORD_TYPE_BATCH);
    assert.equal(hex(r.payload), hex(f.payloads[i]!));
  });
}

function corruptionAt(offset: number): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof CorruptionError, `expected a CorruptionError, got ${String(err)}`);
    assert.equal(err.code, "ERR_CORRUPTION");
    assert.equal(err.file, FILE);
    assert.equal(err.offset, offset, err.message);
    assert.match(err.message, new RegExp(`${FILE}.*offset ${offset}`));
    return true;
  };
}

function flip(data: Buffer, at: number): Buffer {
  const d = Buffer.from(data);
  d[at]! ^= 0xff;
  return d;
}

// Records at 20 (100-byte payload), 144 (200) and 368 (300); the file ends at 692.
const THREE = logFile([100, 200, 300]);

describe("log format", () => {
  test("the layout the tests rely on", () => {
    assert.deepEqual(THREE.offsets, [20, 144, 368]);
    assert.equal(THREE.data.length, 692);
    const parsed = parseLogFile(FILE, THREE.data, WAL_MAGIC);
    assertRecords(parsed, THREE, 3);
    assert.equal(parsed.fileNumber, 7);
    assert.equal(parsed.validEnd, 692);
    assert.equal(parsed.tornTail, false);
  });

  test("a torn tail is cut silently: incomplete record header", () => {
    for (const cut of [368 + 1, 368 + 10, 368 + LOG_RECORD_HEADER_BYTES - 1]) {
      const parsed = parseLogFile(FILE, THREE.data.subarray(0, cut), WAL_MAGIC);
      assertRecords(parsed, THREE, 2);
      assert.equal(parsed.validEnd, 368);
      assert.equal(parsed.tornTail, true);
    }
  });

  test("a torn tail is cut silently: incomplete payload", () => {
    for (const cut of [368 + LOG_RECORD_HEADER_BYTES, 368 + LOG_RECORD_HEADER_BYTES + 150, 691]) {
      const parsed = parseLogFile(FILE, THREE.data.subarray(0, cut), WAL_MAGIC);
      assertRecords(parsed, THREE, 2);
      assert.equal(parsed.validEnd, 368);
      assert.equal(parsed.tornTail, true);
    }
  });

  test("a torn tail is cut silently: zeros from a 512-aligned offset to the end", () => {
    // The last record was being written when the power failed; the file system had persisted the size
    // but not the data from the 512-byte boundary on.
    const zeroedInside = Buffer.from(THREE.data);
    zeroedInside.fill(0, 512);
    const a = parseLogFile(FILE, zeroedInside, WAL_MAGIC);
    assertRecords(a, THREE, 2);
    assert.equal(a.validEnd, 368);
    assert.equal(a.tornTail, true);
    // The same, with the file's size persisted beyond the record.
    const zeroedBeyond = Buffer.concat([THREE.data.subarray(0, 512), Buffer.alloc(1024)]);
    const b = parseLogFile(FILE, zeroedBeyond, WAL_MAGIC);
    assertRecords(b, THREE, 2);
    assert.equal(b.tornTail, true);
    // Zeros after a record that ends exactly on a boundary: 20 + 24 + 468 = 512.
    const aligned = logFile([468]);
    const c = parseLogFile(FILE, Buffer.concat([aligned.data, Buffer.alloc(700)]), WAL_MAGIC);
    assertRecords(c, aligned, 1);
    assert.equal(c.validEnd, 512);
    assert.equal(c.tornTail, true);
  });

  // What MemoryFileSystem.crash({ unsynced: "zeroed" }) leaves, and a real file system too when the
  // sector holding the last synced byte was written at that sync: zeros from the end of the last synced
  // record, wherever it ends. The records before it were acknowledged and are intact.
  test("a zero tail right after the last complete record is a torn tail, 512-aligned or not", () => {
    for (const zeros of [24, 100, 1000]) {
      const data = Buffer.concat([THREE.data, Buffer.alloc(zeros)]);
      let parsed: ReturnType<typeof parseLogFile> | undefined;
      assert.doesNotThrow(() => {
        parsed = parseLogFile(FILE, data, WAL_MAGIC);
      }, `${zeros} zero bytes after the record ending at 692`);
      assertRecords(parsed!, THREE, 3);
      assert.equal(parsed!.validEnd, 692);
      assert.equal(parsed!.tornTail, true);
    }
  });

  test("a file shorter than its header is a torn header if it could be one", () => {
    const header = encodeLogFileHeader(WAL_MAGIC, 7);
    for (const data of [Buffer.alloc(0), header.subarray(0, 3), header.subarray(0, 19), Buffer.alloc(11)]) {
      const parsed = parseLogFile(FILE, data, WAL_MAGIC);
      assert.equal(parsed.records.length, 0);
      assert.equal(parsed.tornTail, data.length > 0);
    }
    assert.throws(() => parseLogFile(FILE, Buffer.from("RSMF-abc"), WAL_MAGIC), corruptionAt(0));
  });

  // A new WAL is preallocated with zeros; if another file's directory sync made its entry durable before
  // its header's sync, a power cut leaves a file of zeros longer than a header. Nothing in it was ever
  // acknowledged, and the store must open. Zeros in the header before non-zero bytes are still corruption.
  test("a file of nothing but zeros, of any length, is an empty log with a torn header", () => {
    for (const n of [20, 24, 700, 4096]) {
      const parsed = parseLogFile(FILE, Buffer.alloc(n), WAL_MAGIC);
      assert.equal(parsed.records.length, 0, `${n} zero bytes`);
      assert.equal(parsed.tornTail, true);
    }
    const zeroHeader = Buffer.from(THREE.data);
    zeroHeader.fill(0, 0, 20);
    assert.throws(() => parseLogFile(FILE, zeroHeader, WAL_MAGIC), corruptionAt(0));
    const oneByte = Buffer.alloc(700);
    oneByte[699] = 1;
    assert.throws(() => parseLogFile(FILE, oneByte, WAL_MAGIC), corruptionAt(0));
  });

  test("a flipped byte in the middle record is corruption at that record", () => {
    for (const at of [144 + LOG_RECORD_HEADER_BYTES, 144 + LOG_RECORD_HEADER_BYTES + 100, 367])
      assert.throws(() => parseLogFile(FILE, flip(THREE.data, at), WAL_MAGIC), corruptionAt(144));
  });

  test("a flipped byte in the last record's payload is corruption, not a torn tail", () => {
    for (const at of [368 + LOG_RECORD_HEADER_BYTES, 500, 600, 691])
      assert.throws(() => parseLogFile(FILE, flip(THREE.data, at), WAL_MAGIC), corruptionAt(368));
  });

  test("a flipped byte in a record header is corruption at that record", () => {
    // Every field: header checksum, length, type, reserved, sequence, payload checksum.
    for (const field of [0, 4, 7, 8, 9, 12, 19, 20, 23])
      for (const rec of [20, 144, 368])
        assert.throws(() => parseLogFile(FILE, flip(THREE.data, rec + field), WAL_MAGIC), corruptionAt(rec));
  });

  test("a flipped byte in the file header is corruption at offset 0", () => {
    for (let at = 0; at < LOG_FILE_HEADER_BYTES; at++)
      assert.throws(() => parseLogFile(FILE, flip(THREE.data, at), WAL_MAGIC), corruptionAt(0));
  });

  test("property: any truncation reads a prefix of the records, without error", () => {
    fc.assert(
      fc.property(fc.array(fc.nat(300), { minLength: 1, maxLength: 8 }), fc.nat(), (lengths, cutSeed) => {
        const f = logFile(lengths);
        const cut = LOG_FILE_HEADER_BYTES + (cutSeed % (f.data.length - LOG_FILE_HEADER_BYTES + 1));
        const parsed = parseLogFile(FILE, f.data.subarray(0, cut), WAL_MAGIC);
        const whole = f.offsets.filter((o, i) => o + LOG_RECORD_HEADER_BYTES + lengths[i]! <= cut).length;
        assertRecords(parsed, f, whole);
        const boundary = whole === f.offsets.length ? f.data.length : f.offsets[whole]!;
        assert.equal(parsed.validEnd, boundary);
        assert.equal(parsed.tornTail, cut !== boundary);
      }),
      fcParams(300),
    );
  });

  test("property: any flipped byte after the file header is corruption at its record", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 6 }),
        fc.nat(),
        (lengths, atSeed) => {
          const f = logFile(lengths);
          const at = LOG_FILE_HEADER_BYTES + (atSeed % (f.data.length - LOG_FILE_HEADER_BYTES));
          const rec = f.offsets.filter((o) => o <= at).at(-1)!;
          assert.throws(() => parseLogFile(FILE, flip(f.data, at), WAL_MAGIC), corruptionAt(rec));
        },
      ),
      fcParams(500),
    );
  });
});

// ---------------------------------------------------------------- bloom filter

/** The two filter layouts: blocked (table format 2, written now) and legacy (format 1, still read). */
const FILTER_KINDS = [
  {
    name: "blocked",
    build: buildBlockedBloom,
    parse: (b: Uint8Array) => new BlockedBloomFilter(b),
  },
  { name: "legacy", build: buildBloom, parse: (b: Uint8Array) => new BloomFilter(b) },
] as const;

for (const kind of FILTER_KINDS) {
  const bloomOf = (keys: readonly Uint8Array[], bitsPerKey: number) => {
    const hashes = new Uint32Array(keys.length);
    keys.forEach((k, i) => {
      hashes[i] = bloomHash(k);
    });
    return kind.parse(kind.build(hashes, keys.length, bitsPerKey));
  };

  describe(`bloom filter (${kind.name})`, () => {
    test("10 bits per key: false-positive rate near 1% (under 2% over 10,000 absent keys)", () => {
      const present = Array.from({ length: 10_000 }, (_, i) => Buffer.from(`user:${i}:profile`));
      const filter = bloomOf(present, 10);
      let falsePositives = 0;
      const absentCount = 10_000;
      for (let i = 0; i < absentCount; i++)
        if (filter.mayContainHash(bloomHash(Buffer.from(`user:${i}:settings`)))) falsePositives++;
      const rate = falsePositives / absentCount;
      assert.ok(rate < 0.02, `false-positive rate ${(rate * 100).toFixed(2)}%`);
      for (const k of present) assert.ok(filter.mayContainHash(bloomHash(k)));
    });

    test("random binary keys: false-positive rate under 2%", () => {
      const r = seededRandom(3);
      const key = (tag: number) => {
        const k = Buffer.alloc(1 + Math.floor(r.next() * 24));
        for (let i = 0; i < k.length; i++) k[i] = Math.floor(r.next() * 256);
        k[0] = tag; // the two sets cannot overlap
        return k;
      };
      const filter = bloomOf(
        Array.from({ length: 5000 }, () => key(0)),
        10,
      );
      let falsePositives = 0;
      for (let i = 0; i < 10_000; i++) if (filter.mayContainHash(bloomHash(key(1)))) falsePositives++;
      assert.ok(falsePositives / 10_000 < 0.02, `${falsePositives} false positives in 10,000`);
    });

    test("property: no false negatives, whatever the keys and bits per key", () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.uint8Array({ maxLength: 20 }), { maxLength: 400, selector: hex }),
          fc.integer({ min: 1, max: 24 }),
          (keys, bitsPerKey) => {
            const filter = bloomOf(keys, bitsPerKey);
            for (const k of keys) assert.ok(filter.mayContainHash(bloomHash(k)), `lost ${hex(k)}`);
          },
        ),
        fcParams(300),
      );
    });

    test("a damaged filter is refused", () => {
      assert.throws(() => kind.parse(new Uint8Array(1)), RangeError);
      const f = kind.build(new Uint32Array([1, 2, 3]), 3, 10);
      f[f.length - 1] = 0; // probe count
      assert.throws(() => kind.parse(f), RangeError);
    });
  });
}

test("a blocked filter's blocks are whole cache lines: a length that is not is refused", () => {
  const f = buildBlockedBloom(new Uint32Array([1, 2, 3]), 3, 10);
  assert.equal((f.length - 1) % 64, 0);
  assert.throws(() => new BlockedBloomFilter(Buffer.concat([f.subarray(0, 10), f.subarray(-1)])), RangeError);
});

// ---------------------------------------------------------------- memtable

interface Version {
  readonly key: string;
  readonly seq: number;
  readonly kind: number;
  readonly value: string;
}

const memKeyArb = fc
  .array(fc.constantFrom(0x00, 0x01, 0x80, 0xff), { minLength: 1, maxLength: 3 })
  .map((a) => Buffer.from(a));
const memOpArb = fc.record({
  key: memKeyArb,
  put: fc.boolean(),
  value: fc.uint8Array({ maxLength: 4 }),
});

/** The newest version of each key with seq <= snapshot, tombstones included, in key order. */
function visible(versions: readonly Version[], snapshot: number): Version[] {
  const best = new Map<string, Version>();
  for (const v of versions) {
    if (v.seq > snapshot) continue;
    const b = best.get(v.key);
    if (b === undefined || v.seq > b.seq) best.set(v.key, v);
  }
  return [...best.values()].sort((a, c) => (a.key < c.key ? -1 : a.key > c.key ? 1 : 0));
}

function drain(it: ReturnType<Memtable["iterator"]>): Version[] {
  const out: Version[] = [];
  for (; it.valid; it.next()) out.push({ key: hex(it.key), seq: -1, kind: it.kind, value: hex(it.value) });
  return out;
}

const noSeq = (vs: readonly Version[]) => vs.map((v) => ({ ...v, seq: -1 }));

/** Small B+ tree nodes make deep trees (splits of leaves and inner nodes) out of few entries. */
const nodeCapacityArb = fc.constantFrom(4, 5, 64);

describe("memtable", () => {
  test("property: get, iterator and seek show each key's newest version at a snapshot", () => {
    fc.assert(
      fc.property(
        fc.array(memOpArb, { maxLength: 80, size: "max" }),
        fc.nat(),
        fc.nat(100),
        memKeyArb,
        nodeCapacityArb,
        (ops, orderSeed, snapSeed, target, capacity) => {
          // Sequence numbers 1..n, inserted in a shuffled order: the list orders by (key, seq desc).
          const versions: Version[] = ops.map((op, i) => ({
            key: hex(op.key),
            seq: i + 1,
            kind: op.put ? KIND_PUT : KIND_DELETE,
            value: op.put ? hex(op.value) : "",
          }));
          const order = versions.map((_, i) => i);
          const r = seededRandom(orderSeed);
          for (let i = order.length - 1; i > 0; i--) {
            const j = Math.floor(r.next() * (i + 1));
            [order[i], order[j]] = [order[j]!, order[i]!];
          }
          const m = new Memtable(1, capacity);
          for (const i of order) {
            const v = versions[i]!;
            m.add(Buffer.from(v.key, "hex"), v.seq, v.kind, Buffer.from(v.value, "hex"));
          }
          assert.equal(m.entries, ops.length);
          if (ops.length > 0) {
            assert.equal(m.minSeq, 1);
            assert.equal(m.maxSeq, ops.length);
          }
          const snapshot = snapSeed % (ops.length + 2);
          const expected = visible(versions, snapshot);
          const it = m.iterator(snapshot);
          it.seek(undefined);
          assert.deepEqual(drain(it), noSeq(expected));
          const from = m.iterator(snapshot);
          from.seek(target);
          assert.deepEqual(drain(from), noSeq(expected.filter((v) => v.key >= hex(target))));
          const byKey = new Map(expected.map((v) => [v.key, v]));
          for (const key of new Set([...versions.map((v) => v.key), hex(target)])) {
            const e = m.get(Buffer.from(key, "hex"), snapshot);
            const want = byKey.get(key);
            if (want === undefined) assert.equal(e, undefined, `get(${key}) at ${snapshot}`);
            else {
              assert.ok(e !== undefined, `get(${key}) at ${snapshot}`);
              assert.deepEqual(
                { key: hex(e.key), seq: e.seq, kind: e.kind, value: hex(e.value) },
                want,
                `get(${key}) at ${snapshot}`,
              );
            }
          }
        },
      ),
      fcParams(400),
    );
  });

  test("property: an iterator does not see versions added while it is open", () => {
    fc.assert(
      fc.property(
        fc.array(memOpArb, { maxLength: 40, size: "max" }),
        fc.array(memOpArb, { maxLength: 40, size: "max" }),
        fc.nat(50),
        nodeCapacityArb,
        (before, during, steps, capacity) => {
          const m = new Memtable(1, capacity);
          const versions: Version[] = [];
          const add = (op: { key: Buffer; put: boolean; value: Uint8Array }) => {
            const v: Version = {
              key: hex(op.key),
              seq: versions.length + 1,
              kind: op.put ? KIND_PUT : KIND_DELETE,
              value: op.put ? hex(op.value) : "",
            };
            versions.push(v);
            m.add(Buffer.from(op.key), v.seq, v.kind, Buffer.from(v.value, "hex"));
          };
          for (const op of before) add(op);
          const snapshot = versions.length;
          const expected = noSeq(visible(versions, snapshot));
          const it = m.iterator(snapshot);
          it.seek(undefined);
          const got: Version[] = [];
          for (let i = 0; i < steps && it.valid; i++, it.next())
            got.push({ key: hex(it.key), seq: -1, kind: it.kind, value: hex(it.value) });
          for (const op of during) add(op);
          got.push(...drain(it));
          assert.deepEqual(got, expected);
        },
      ),
      fcParams(400),
    );
  });
});

// ---------------------------------------------------------------- compaction picker

function runs(sizes: readonly number[]): Run[] {
  // Newest first: run 0 has the highest sequence numbers.
  return sizes.map((bytes, i) => {
    const maxSeq = (sizes.length - i) * 1000;
    return { id: 100 + i, minSeq: maxSeq - 999, maxSeq, files: [], bytes, entries: 1 };
  });
}

interface PickerOptions {
  readonly minMergeWidth: number;
  readonly sizeRatioPercent: number;
  readonly maxSizeAmplificationPercent: number;
  readonly maxRunsBeforeForcedMerge: number;
}

function options(p: PickerOptions) {
  return resolveLsmOptions({ ...p, stopWritesAtRuns: p.maxRunsBeforeForcedMerge + 1 });
}

const pickerOptionsArb: fc.Arbitrary<PickerOptions> = fc
  .record({
    minMergeWidth: fc.integer({ min: 2, max: 6 }),
    sizeRatioPercent: fc.integer({ min: 0, max: 300 }),
    maxSizeAmplificationPercent: fc.integer({ min: 25, max: 400 }),
    extraRuns: fc.integer({ min: 0, max: 10 }),
  })
  .map(({ extraRuns, ...o }) => ({ ...o, maxRunsBeforeForcedMerge: o.minMergeWidth + extraRuns }));

const DEFAULTS: PickerOptions = {
  minMergeWidth: 4,
  sizeRatioPercent: 100,
  maxSizeAmplificationPercent: 200,
  maxRunsBeforeForcedMerge: 12,
};

function pick(sizes: readonly number[], o: PickerOptions = DEFAULTS): CompactionPick | undefined {
  return pickCompaction(runs(sizes), options(o));
}

describe("compaction picker", () => {
  test("nothing to do below minMergeWidth runs", () => {
    assert.equal(pick([]), undefined);
    assert.equal(pick([10, 10, 10]), undefined);
    assert.equal(pick([1, 1, 1_000_000]), undefined);
  });

  test("size amplification merges everything", () => {
    // Newer runs hold 200% of the oldest.
    assert.deepEqual(pick([100, 100, 100, 100, 150]), { start: 0, end: 5, reason: "size-amplification" });
    assert.deepEqual(pick([10, 10, 10, 10]), { start: 0, end: 4, reason: "size-amplification" });
  });

  test("size ratio merges a window of similar runs, never the big old one", () => {
    assert.deepEqual(pick([10, 10, 10, 10, 1000]), { start: 0, end: 4, reason: "size-ratio" });
    // A too-big run ends the window; the next window starts after the small ones.
    assert.deepEqual(pick([1, 1, 100, 100, 100, 100, 100_000]), { start: 2, end: 6, reason: "size-ratio" });
    assert.equal(pick([1, 1, 1, 1000, 1_000_000]), undefined);
  });

  test("more runs than maxRunsBeforeForcedMerge merges the newest regardless of size", () => {
    // Sizes that grow so fast that no ratio window forms and amplification stays low.
    const sizes = Array.from({ length: 14 }, (_, i) => 10 ** (i / 2 + 1));
    sizes[13] = 10 ** 12;
    assert.deepEqual(pick(sizes), { start: 0, end: 3, reason: "run-count" });
  });

  test("property: picks are contiguous, wide enough, and follow their rule", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 1 << 30 }), { maxLength: 20 }),
        pickerOptionsArb,
        (sizes, o) => {
          const p = pick(sizes, o);
          const n = sizes.length;
          if (n < o.minMergeWidth) assert.equal(p, undefined, "too few runs");
          if (n > o.maxRunsBeforeForcedMerge) assert.notEqual(p, undefined, "read amplification is bounded");
          if (p === undefined) return;
          assert.ok(Number.isInteger(p.start) && Number.isInteger(p.end), "a range of indexes");
          assert.ok(0 <= p.start && p.start < p.end && p.end <= n, `range [${p.start}, ${p.end}) of ${n}`);
          const width = p.end - p.start;
          const newer = sizes.slice(0, -1).reduce((a, c) => a + c, 0);
          const amplified = newer * 100 >= o.maxSizeAmplificationPercent * sizes[n - 1]!;
          switch (p.reason) {
            case "size-amplification":
              assert.ok(amplified);
              assert.deepEqual([p.start, p.end], [0, n], "size amplification merges all runs");
              break;
            case "size-ratio": {
              assert.ok(!amplified, "size amplification comes first");
              assert.ok(width >= o.minMergeWidth, `width ${width} < ${o.minMergeWidth}`);
              let sum = sizes[p.start]!;
              for (let i = p.start + 1; i < p.end; i++) {
                assert.ok(sizes[i]! * 100 <= sum * (100 + o.sizeRatioPercent), `run ${i} is too big to join`);
                sum += sizes[i]!;
              }
              break;
            }
            case "run-count":
              assert.ok(!amplified);
              assert.ok(n > o.maxRunsBeforeForcedMerge);
              assert.equal(p.start, 0, "the newest runs");
              assert.ok(width >= 2, "a merge of one run does nothing");
              assert.ok(
                n - width + 1 <= o.maxRunsBeforeForcedMerge,
                "the run count comes back under the limit",
              );
              break;
            default:
              assert.fail(`unknown reason ${String((p as { reason: unknown }).reason)}`);
          }
        },
      ),
      fcParams(2000),
    );
  });
});
