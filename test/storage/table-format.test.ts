/**
 * The table builder's block layout: blocks stay under blockBytes (so that 4 KiB reads come from Node's
 * buffer pool), and every entry reads back through the reader. A regression here once left whole tables
 * in one block, which no functional test noticed: the reads were right, only ruinously slow.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { BlockCache } from "../../src/storage/lsm/block-cache.js";
import { TableBuilder } from "../../src/storage/lsm/table-builder.js";
import { TableReader } from "../../src/storage/lsm/table-reader.js";

async function build(count: number, valueBytes: number, blockBytes: number) {
  const fs = new MemoryFileSystem();
  await fs.mkdirp("/t");
  const b = new TableBuilder(await fs.create("/t/1.sst"), {
    blockBytes,
    bloomBitsPerKey: 10,
    drainBytes: 1 << 20,
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
  return { built, reader, key };
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
