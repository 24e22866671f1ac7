/**
 * The table builder's block layout: blocks stay under blockBytes (so that each fits one slot of the block
 * cache, which is blockBytes long), and every entry reads back through the reader, in both table formats.
 * A regression here once left whole tables in one block, which no functional test noticed: the reads were
 * right, only ruinously slow.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { crc32 } from "node:zlib";
import { CorruptionError } from "../../src/storage/errors.js";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { BlockCache } from "../../src/storage/lsm/block-cache.js";
import { TableBuilder } from "../../src/storage/lsm/table-builder.js";
import { FOOTER_BYTES, TABLE_FORMAT_VERSION } from "../../src/storage/lsm/table-format.js";
import { TableReader } from "../../src/storage/lsm/table-reader.js";

async function build(count: number, valueBytes: number, blockBytes: number, formatVersion?: number) {
  const fs = new MemoryFileSystem();
  await fs.mkdirp("/t");
  const b = new TableBuilder(await fs.create("/t/1.sst"), {
    blockBytes,
    bloomBitsPerKey: 10,
    drainBytes: 1 << 20,
    ...(formatVersion !== undefined ? { formatVersion } : {}),
  });
  const key = (i: number) => Buffer.from(`key-${String(i).padStart(8, "0")}`);
  for (let i = 0; i < count; i++) b.add(key(i), 1, Buffer.alloc(valueBytes, i & 0xff));
  const built = await b.finish();
  const reader = await TableReader.open(
    await fs.openRead("/t/1.sst"),
    1,
    new BlockCache(1 << 20, blockBytes),
    {
      bloomChecks: 0,
      bloomNegatives: 0,
      bloomFalsePositives: 0,
    },
  );
  return { built, reader, key, fs };
}

test("blocks stay under blockBytes and a table holds many of them", async () => {
  const { reader, key } = await build(20_000, 100, 4096);
  const entryBytes = 7 + 12 + 100;
  assert.ok(
    reader.blockCount >= Math.floor((20_000 * entryBytes) / 4096),
    `only ${reader.blockCount} blocks`,
  );
  const sizes = (reader as unknown as { blockSizes: number[] }).blockSizes;
  assert.ok(
    sizes.every((s) => s < 4096),
    `largest block ${Math.max(...sizes)} bytes`,
  );
  for (const i of [0, 1, 4999, 12_345, 19_999]) {
    const hit = await reader.get(key(i), TableReader.bloomHash(key(i)));
    assert.ok(hit instanceof Buffer, `key ${i}: a value`);
    assert.equal(hit.length, 100);
    assert.equal(hit[0], i & 0xff);
  }
});

test("an entry larger than blockBytes gets a block of its own", async () => {
  const { reader } = await build(10, 10_000, 4096);
  assert.equal(reader.blockCount, 10);
});

for (const version of [1, 2]) {
  test(`a table of format ${version} reads back: every key present, absent keys absent`, async () => {
    const { reader, key } = await build(3000, 20, 4096, version);
    assert.equal(reader.footer.version, version);
    for (let i = 0; i < 3000; i++) {
      const hit = await reader.get(key(i), TableReader.bloomHash(key(i)));
      assert.ok(hit instanceof Buffer && hit.length === 20 && hit[0] === (i & 0xff), `key ${i}`);
    }
    for (let i = 3000; i < 4000; i++)
      assert.equal(await reader.get(key(i), TableReader.bloomHash(key(i))), undefined, `absent key ${i}`);
  });
}

test("a table of an unknown format version (with a valid footer checksum) is refused", async () => {
  const { fs } = await build(100, 20, 4096);
  const data = await fs.readFile("/t/1.sst");
  const footer = data.subarray(data.length - FOOTER_BYTES);
  footer.writeUInt32LE(TABLE_FORMAT_VERSION + 1, 32);
  footer.writeUInt32LE(crc32(footer.subarray(40, 48), crc32(footer.subarray(0, 36))), 36);
  const w = await fs.create("/t/2.sst");
  await w.append(data);
  await w.sync();
  await assert.rejects(
    TableReader.open(await fs.openRead("/t/2.sst"), 2, new BlockCache(1 << 20, 4096), {
      bloomChecks: 0,
      bloomNegatives: 0,
      bloomFalsePositives: 0,
    }),
    (err: unknown) => err instanceof CorruptionError && /unsupported table version/.test(err.message),
  );
});
