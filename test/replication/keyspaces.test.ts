/**
 * The storage engine's keyspaces (src/replication/keyspaces.ts) and the replica's scan over its own:
 * round trips, order, ranges that hold exactly their keyspace and no other, keys that are prefixes of
 * other keys, and paging by keys and bytes over a real engine that holds records of several keyspaces.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { DATA, KEYSPACES, type Keyspace } from "../../src/replication/keyspaces.js";
import { Replica } from "../../src/replication/replica.js";
import { MemoryEngine } from "../../src/storage/index.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";
import { encodeSiblings } from "../../src/versioning/object-codec.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0x6b_e75;
const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;

const ALL: Keyspace[] = Object.values(KEYSPACES);
const key = fc.uint8Array({ maxLength: 40 });

/** Is `k` inside `range` (gte/lt)? Byte order, as the engines compare. */
function inRange(k: Uint8Array, range: { gte: Uint8Array; lt: Uint8Array }): boolean {
  return Buffer.compare(k, range.gte) >= 0 && Buffer.compare(k, range.lt) < 0;
}

const setOf = (text: string) =>
  encodeSiblings(
    update([], EMPTY_VECTOR, "a", {
      data: Buffer.from(text),
      contentType: "text/plain",
      deleted: false,
      writtenAtMs: 0,
    }).set,
  );

describe("keyspaces", () => {
  test("the table: distinct names and prefix bytes; data keeps the byte 'd' it has on disk", () => {
    assert.deepEqual(Object.keys(KEYSPACES).sort(), ["data", "hints", "meta", "trees"]);
    assert.equal(new Set(ALL.map((k) => k.prefix)).size, ALL.length);
    for (const [name, k] of Object.entries(KEYSPACES)) assert.equal(k.name, name);
    assert.equal(DATA, KEYSPACES.data);
    assert.equal(DATA.prefix, "d".charCodeAt(0), "changing it would orphan every stored set");
    assert.equal(DATA.reserved, false);
    for (const k of ALL) if (k !== DATA) assert.equal(k.reserved, true, `${k.name} is reserved`);
  });

  test("property: decode(encode(k)) is k, and encoding keeps the order of keys", () => {
    fc.assert(
      fc.property(fc.constantFrom(...ALL), key, key, (ks, a, b) => {
        const ea = ks.encode(a);
        assert.deepEqual(Buffer.from(ks.decode(ea)), Buffer.from(a));
        assert.ok(ks.contains(ea));
        assert.equal(Math.sign(Buffer.compare(ea, ks.encode(b))), Math.sign(Buffer.compare(a, b)));
      }),
      FC_PARAMS,
    );
  });

  test("property: an engine key is in a keyspace's range exactly when it is one of its keys", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), key, (first, rest) => {
        const k = Buffer.concat([Uint8Array.of(first), rest]);
        const holders = ALL.filter((ks) => inRange(k, ks.range));
        assert.ok(holders.length <= 1, "ranges are disjoint");
        for (const ks of ALL) assert.equal(inRange(k, ks.range), ks.contains(k), ks.name);
        assert.equal(holders[0]?.prefix, ALL.find((ks) => ks.prefix === first)?.prefix);
      }),
      FC_PARAMS,
    );
    // The edges: the empty key (the prefix byte alone) is the first of its range, and the longest key of
    // 0xff bytes is still inside it; the bytes on either side belong elsewhere.
    for (const ks of ALL) {
      assert.ok(inRange(ks.encode(new Uint8Array(0)), ks.range));
      assert.ok(inRange(ks.encode(new Uint8Array(1024).fill(0xff)), ks.range));
      assert.ok(!inRange(Uint8Array.of(ks.prefix - 1, 0xff), ks.range));
      assert.ok(!inRange(Uint8Array.of(ks.prefix + 1), ks.range));
    }
  });

  test("decode refuses an engine key of another keyspace (a bug, not an input)", () => {
    assert.throws(() => DATA.decode(KEYSPACES.hints.encode(Buffer.from("k"))), { code: "ERR_INVARIANT" });
    assert.throws(() => DATA.decode(new Uint8Array(0)), { code: "ERR_INVARIANT" });
  });

  test("on an engine: a scan of a keyspace sees its keys in order, prefixes of each other included, and no other keyspace's", async () => {
    const e = new MemoryEngine();
    const userKeys = ["a", "ab", "abc", "b", "\u00ff"].map((s) => Buffer.from(s, "latin1"));
    for (const k of userKeys) await e.put(DATA.encode(k), setOf(k.toString("latin1")));
    // Same user bytes in the other keyspaces, and raw keys just outside data's range.
    for (const ks of ALL)
      if (ks !== DATA) for (const k of userKeys) await e.put(ks.encode(k), Buffer.from("x"));
    await e.put(Uint8Array.of(DATA.prefix - 1, 0xff, 0xff), Buffer.from("below"));
    await e.put(Uint8Array.of(DATA.prefix + 1), Buffer.from("above"));
    const seen: string[] = [];
    for await (const { key: k } of e.iterate(DATA.range))
      seen.push(Buffer.from(DATA.decode(k)).toString("latin1"));
    assert.deepEqual(seen, ["a", "ab", "abc", "b", "\u00ff"]);
    const afterAb: string[] = [];
    for await (const { key: k } of e.iterate(DATA.after(Buffer.from("ab"), 2)))
      afterAb.push(Buffer.from(DATA.decode(k)).toString());
    assert.deepEqual(afterAb, ["abc", "b"], "after 'ab' comes 'abc' (it extends it), then 'b'; limit 2");
  });
});

describe("Replica.scan and readRaw", () => {
  async function filled(n: number) {
    const e = new MemoryEngine();
    const replica = new Replica(e, "a", 64);
    for (let i = 0; i < n; i++) {
      const k = Buffer.from(`k${String(i).padStart(3, "0")}`);
      const r = await replica.coordinate(k, EMPTY_VECTOR, {
        data: Buffer.alloc(100, i),
        contentType: "b",
        deleted: false,
        writtenAtMs: 0,
      });
      assert.equal(r.kind, "ok");
    }
    // Records of other keyspaces around and among the data: a scan must not return them.
    for (const ks of ALL)
      if (ks !== DATA)
        for (let i = 0; i < n; i += 7) await e.put(ks.encode(Buffer.from(`k${i}`)), Buffer.from("x"));
    return { e, replica };
  }

  test("pages by keys, resumes after the last key, ends with an empty page, and returns only sibling sets", async () => {
    const { replica } = await filled(50);
    const keys: string[] = [];
    let after: Uint8Array | undefined;
    let pages = 0;
    for (;;) {
      const page = await replica.scan(after, 16, 1 << 20);
      if (page.length === 0) break;
      pages++;
      assert.ok(page.length <= 16);
      for (const e of page) {
        keys.push(Buffer.from(e.key).toString());
        assert.deepEqual(Buffer.from(e.value), Buffer.from((await replica.readRaw(e.key))!));
      }
      after = page[page.length - 1]!.key;
    }
    assert.equal(pages, 4);
    assert.deepEqual(
      keys,
      Array.from({ length: 50 }, (_, i) => `k${String(i).padStart(3, "0")}`),
    );
  });

  test("a page ends once it holds maxBytes (at least one entry); readRaw of a missing key is undefined", async () => {
    const { replica } = await filled(10);
    const one = await replica.scan(undefined, 100, 1);
    assert.equal(one.length, 1, "at least one entry, even past the byte bound");
    const entryBytes = 1 + one[0]!.key.length + one[0]!.value.length;
    const three = await replica.scan(undefined, 100, 3 * entryBytes);
    assert.equal(three.length, 3);
    const rest = await replica.scan(three[2]!.key, 100, 1 << 20);
    assert.equal(rest.length, 7);
    assert.equal(await replica.readRaw(Buffer.from("nope")), undefined);
  });
});
