/**
 * The stored object codec (src/versioning/object-codec.ts) and the opaque context tokens
 * (src/versioning/context-token.ts).
 *
 * Objects: random sibling sets (unicode actors, counters up to 2^40, contexts, tombstones, content types,
 * binary data including empty) round-trip to the canonical (dot-sorted) set and re-encode to the same
 * bytes; any flipped byte, truncation or appended byte is an ObjectDecodeError, never another object or
 * another error; bytes with a valid header and checksum but any body decode or fail with ObjectDecodeError.
 *
 * Tokens: random vectors round-trip under their key and secret; another key or secret, any changed
 * character, any truncation and any garbage string is an InvalidContextError, never another error.
 *
 * Seeded: FC_SEED=<n> replays another seed.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, test } from "node:test";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { writeVarint } from "../../src/storage/bytes.js";
import {
  decodeContext,
  encodeContext,
  InvalidContextError,
  MAX_CONTEXT_TOKEN_CHARS,
} from "../../src/versioning/context-token.js";
import { type Actor, sortSiblings, type VersionVector } from "../../src/versioning/dvv.js";
import {
  decodeSiblings,
  encodeSiblings,
  ObjectDecodeError,
  type StoredSibling,
} from "../../src/versioning/object-codec.js";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0xc0de_c;
const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;

// ---------------------------------------------------------------- arbitraries

const actorArb: fc.Arbitrary<Actor> = fc.oneof(
  fc.constantFrom("a", "b", "node-1@3", "", "ü", "ñodo-β", "🦀", "節点"),
  fc.string({ unit: "binary", maxLength: 10 }),
  fc.string({ unit: "grapheme", maxLength: 6 }),
);

const counterArb = fc.oneof(
  fc.integer({ min: 1, max: 300 }),
  fc.constantFrom(127, 128, 16_383, 16_384, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40 - 1, 2 ** 40),
  fc.integer({ min: 1, max: 2 ** 40 }),
);

const vectorArb: fc.Arbitrary<VersionVector> = fc
  .uniqueArray(fc.tuple(actorArb, counterArb), { selector: ([a]) => a, maxLength: 5 })
  .map((entries) => new Map(entries));

const dataArb = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 40 }), weight: 5 },
  { arbitrary: fc.constant(new Uint8Array(0)), weight: 1 },
  { arbitrary: fc.uint8Array({ minLength: 200, maxLength: 3000 }), weight: 1 },
);

const siblingArb: fc.Arbitrary<StoredSibling> = fc.record({
  dot: fc.record({ actor: actorArb, counter: counterArb }),
  context: vectorArb,
  value: fc.record({
    data: dataArb,
    contentType: fc.oneof(
      fc.constantFrom("", "application/octet-stream", "text/plain; charset=utf-8"),
      fc.string({ unit: "binary", maxLength: 20 }),
    ),
    deleted: fc.boolean(),
    writtenAtMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 42 }), fc.maxSafeNat()),
  }),
});

const setArb = fc.uniqueArray(siblingArb, {
  selector: (s) => `${s.dot.counter}@${s.dot.actor}`,
  maxLength: 6,
});

// ---------------------------------------------------------------- helpers

/** A set as plain data, Buffers for bytes and contexts as sorted entry lists, for deep comparison. */
function plain(set: readonly StoredSibling[]): unknown[] {
  return set.map((s) => ({
    dot: { actor: s.dot.actor, counter: s.dot.counter },
    context: [...s.context].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)),
    value: { ...s.value, data: Buffer.from(s.value.data) },
  }));
}

/** The canonical form of a set: its siblings in dot order (what decode returns). */
const canonical = (set: readonly StoredSibling[]): StoredSibling[] => sortSiblings([...set]);

/** The same set with every context's entries inserted in reverse order (same Map, other iteration order). */
const reversedContexts = (set: readonly StoredSibling[]): StoredSibling[] =>
  set.map((s) => ({ ...s, context: new Map([...s.context].reverse()) }));

function expectDecodeError(buf: Uint8Array, what: string): void {
  let got: StoredSibling[];
  try {
    got = decodeSiblings(buf);
  } catch (err) {
    if (err instanceof ObjectDecodeError) return;
    assert.fail(`${what}: threw ${(err as Error)?.name}: ${(err as Error)?.message}, not ObjectDecodeError`);
  }
  assert.fail(`${what}: decoded to ${JSON.stringify(plain(got))} instead of failing`);
}

function expectContextError(token: string, key: Uint8Array, secret: Uint8Array, what: string): void {
  let got: VersionVector;
  try {
    got = decodeContext(token, key, secret);
  } catch (err) {
    if (err instanceof InvalidContextError) return;
    assert.fail(
      `${what}: threw ${(err as Error)?.name}: ${(err as Error)?.message}, not InvalidContextError`,
    );
  }
  assert.fail(`${what}: token ${JSON.stringify(token)} accepted as ${JSON.stringify([...got])}`);
}

/** Seals bytes after the header with a correct checksum, as the encoder would. */
function sealObject(body: Uint8Array): Buffer {
  const head = Buffer.concat([Buffer.from([0xd7, 1]), body]);
  const out = Buffer.alloc(head.length + 4);
  head.copy(out);
  out.writeUInt32LE(crc32(head), head.length);
  return out;
}

/** A token for an arbitrary body, with the MAC context-token.ts documents (only the secret holder can). */
function sealToken(body: Uint8Array, key: Uint8Array, secret: Uint8Array): string {
  const mac = createHmac("sha256", secret).update(key).update(body).digest().subarray(0, 12);
  return Buffer.concat([body, mac]).toString("base64url");
}

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/**
 * A position counted from the token's end, often the last character: it carries the padding bits of the
 * base64url encoding, the one place where a changed character can leave the decoded bytes unchanged.
 */
const positionFromEndArb = fc.oneof(fc.constant(0), fc.nat());
const replacementArb = fc.oneof(
  { arbitrary: fc.constantFrom(...BASE64URL), weight: 4 },
  { arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), weight: 1 },
);
const keyArb = fc.uint8Array({ maxLength: 24 });
const secretArb = fc.uint8Array({ minLength: 1, maxLength: 40 });

// ---------------------------------------------------------------- stored objects

describe("object codec", () => {
  test("decode(encode(set)) is the set in canonical order, and re-encodes to the same bytes", () => {
    fc.assert(
      fc.property(setArb, (set) => {
        const bytes = encodeSiblings(set);
        const back = decodeSiblings(bytes);
        assert.deepEqual(plain(back), plain(canonical(set)));
        for (const s of back) assert.ok(s.value.data instanceof Uint8Array);
        const canonBytes = encodeSiblings(canonical(set));
        assert.deepEqual(encodeSiblings(back), canonBytes, "re-encoding the decoded set changed its bytes");
        assert.deepEqual(
          encodeSiblings(reversedContexts(canonical(set))),
          canonBytes,
          "the bytes depend on the insertion order of a context's entries",
        );
      }),
      { ...FC_PARAMS, numRuns: 500 },
    );
  });

  test("decodes from a Uint8Array view into a larger buffer", () => {
    fc.assert(
      fc.property(
        setArb,
        fc.uint8Array({ maxLength: 9 }),
        fc.uint8Array({ maxLength: 9 }),
        (set, pre, post) => {
          const bytes = encodeSiblings(set);
          const backing = new Uint8Array(pre.length + bytes.length + post.length);
          backing.set(pre);
          backing.set(bytes, pre.length);
          backing.set(post, pre.length + bytes.length);
          const view = new Uint8Array(backing.buffer, pre.length, bytes.length);
          assert.deepEqual(plain(decodeSiblings(view)), plain(canonical(set)));
        },
      ),
      { ...FC_PARAMS, numRuns: 100 },
    );
  });

  test("any single flipped byte is an ObjectDecodeError", () => {
    fc.assert(
      fc.property(setArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (set, at, mask) => {
        const bytes = encodeSiblings(set);
        const i = at % bytes.length;
        const bad = Buffer.from(bytes);
        bad[i]! ^= mask;
        expectDecodeError(bad, `byte ${i} of ${bytes.length} xor ${mask}`);
      }),
      { ...FC_PARAMS, numRuns: 2000 },
    );
  });

  test("every truncation, and any appended bytes, is an ObjectDecodeError", () => {
    fc.assert(
      fc.property(setArb, fc.uint8Array({ minLength: 1, maxLength: 8 }), (set, extra) => {
        const bytes = encodeSiblings(set);
        for (let n = 0; n < bytes.length; n++) expectDecodeError(bytes.subarray(0, n), `first ${n} bytes`);
        expectDecodeError(Buffer.concat([bytes, extra]), `${extra.length} bytes appended`);
      }),
      { ...FC_PARAMS, numRuns: 200 },
    );
  });

  test("garbage with a valid header and checksum decodes or is an ObjectDecodeError, nothing else", () => {
    // The checksum stops random damage; these reach the parser: random bodies, and real objects with bytes
    // changed and the checksum recomputed.
    const resealedArb = fc
      .tuple(
        setArb,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }),
      )
      .map(([set, flips]) => {
        const body = Buffer.from(encodeSiblings(set).subarray(2, -4));
        for (const [at, mask] of flips) if (body.length > 0) body[at % body.length]! ^= mask;
        return body;
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), resealedArb), (body) => {
        try {
          const got = decodeSiblings(sealObject(body));
          for (const s of got) {
            assert.equal(typeof s.dot.actor, "string");
            assert.ok(Number.isSafeInteger(s.dot.counter));
            assert.ok(s.value.data instanceof Uint8Array);
          }
        } catch (err) {
          if (!(err instanceof ObjectDecodeError))
            assert.fail(`threw ${(err as Error)?.name}: ${(err as Error)?.message}, not ObjectDecodeError`);
        }
      }),
      { ...FC_PARAMS, numRuns: 3000 },
    );
  });

  test("examples: empty set, header errors", () => {
    assert.deepEqual(decodeSiblings(encodeSiblings([])), []);
    expectDecodeError(new Uint8Array(0), "empty");
    const ok = encodeSiblings([]);
    const badMagic = Buffer.from(ok);
    badMagic[0] = 0;
    expectDecodeError(badMagic, "bad magic");
    expectDecodeError(sealObject(Buffer.from([0])).fill(2, 1, 2), "version 2");
    expectDecodeError(sealObject(Buffer.from([0, 0, 7])), "trailing bytes");
  });
});

// ---------------------------------------------------------------- context tokens

describe("context tokens", () => {
  test("round trip under the same key and secret; URL-safe", () => {
    fc.assert(
      fc.property(vectorArb, keyArb, secretArb, (vv, key, secret) => {
        const token = encodeContext(vv, key, secret);
        assert.match(token, /^[A-Za-z0-9_-]+$/);
        assert.ok(token.length <= MAX_CONTEXT_TOKEN_CHARS);
        assert.deepEqual(decodeContext(token, key, secret), vv);
        assert.equal(encodeContext(new Map([...vv].reverse()), key, secret), token, "token not canonical");
      }),
      { ...FC_PARAMS, numRuns: 500 },
    );
  });

  test("a token is refused under another key or another secret", () => {
    fc.assert(
      fc.property(
        vectorArb,
        keyArb,
        keyArb,
        secretArb,
        secretArb,
        (vv, key, otherKey, secret, otherSecret) => {
          const token = encodeContext(vv, key, secret);
          if (!Buffer.from(otherKey).equals(Buffer.from(key)))
            expectContextError(token, otherKey, secret, "another key");
          if (!Buffer.from(otherSecret).equals(Buffer.from(secret)))
            expectContextError(token, key, otherSecret, "another secret");
        },
      ),
      { ...FC_PARAMS, numRuns: 500 },
    );
  });

  test("a changed character never yields another vector, nor another error", () => {
    fc.assert(
      fc.property(
        vectorArb,
        keyArb,
        secretArb,
        positionFromEndArb,
        replacementArb,
        (vv, key, secret, at, ch) => {
          const token = encodeContext(vv, key, secret);
          const i = token.length - 1 - (at % token.length); // shrinks towards the last character
          fc.pre(token[i] !== ch);
          const bad = token.slice(0, i) + ch + token.slice(i + 1);
          try {
            assert.deepEqual(decodeContext(bad, key, secret), vv, `${bad} accepted as another vector`);
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            if (!(err instanceof InvalidContextError))
              assert.fail(
                `threw ${(err as Error)?.name}: ${(err as Error)?.message}, not InvalidContextError`,
              );
          }
        },
      ),
      { ...FC_PARAMS, numRuns: 1000 },
    );
  });

  test("any changed character is an InvalidContextError", () => {
    // Stricter than the test above: a token that is not the one issued is refused, even when it would
    // decode to the same vector.
    fc.assert(
      fc.property(
        vectorArb,
        keyArb,
        secretArb,
        positionFromEndArb,
        replacementArb,
        (vv, key, secret, at, ch) => {
          const token = encodeContext(vv, key, secret);
          const i = token.length - 1 - (at % token.length); // shrinks towards the last character
          fc.pre(token[i] !== ch);
          expectContextError(
            token.slice(0, i) + ch + token.slice(i + 1),
            key,
            secret,
            `character ${i} -> ${ch}`,
          );
        },
      ),
      { ...FC_PARAMS, numRuns: 1000 },
    );
  });

  test("every truncation is an InvalidContextError", () => {
    fc.assert(
      fc.property(vectorArb, keyArb, secretArb, (vv, key, secret) => {
        const token = encodeContext(vv, key, secret);
        for (let n = 0; n < token.length; n++)
          expectContextError(token.slice(0, n), key, secret, `first ${n} of ${token.length} characters`);
      }),
      { ...FC_PARAMS, numRuns: 200 },
    );
  });

  test("garbage strings are an InvalidContextError", () => {
    const garbageArb = fc.oneof(
      fc.string({ unit: "binary", maxLength: 60 }),
      fc.string({ unit: "grapheme", maxLength: 30 }),
      fc.string({ unit: fc.constantFrom(...BASE64URL), maxLength: 120 }),
      fc.string({ unit: fc.constantFrom(...`${BASE64URL}=+/ .\n`), maxLength: 60 }),
      fc
        .tuple(
          fc.integer({ min: MAX_CONTEXT_TOKEN_CHARS - 4, max: 3 * MAX_CONTEXT_TOKEN_CHARS }),
          fc.constantFrom(...BASE64URL),
        )
        .map(([n, c]) => c.repeat(n)),
    );
    fc.assert(
      fc.property(garbageArb, keyArb, secretArb, (garbage, key, secret) => {
        expectContextError(garbage, key, secret, "garbage");
      }),
      { ...FC_PARAMS, numRuns: 1000 },
    );
  });

  test("any body under a valid MAC decodes or is an InvalidContextError, nothing else", () => {
    // Only the secret's holder can produce these; they exercise the parser behind the MAC.
    const bodyArb = fc.oneof(
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.concat([Buffer.from([1]), b])),
      fc.uint8Array({ maxLength: 40 }),
    );
    fc.assert(
      fc.property(bodyArb, keyArb, secretArb, (body, key, secret) => {
        try {
          const vv = decodeContext(sealToken(body, key, secret), key, secret);
          for (const n of vv.values()) assert.ok(n >= 1);
        } catch (err) {
          if (!(err instanceof InvalidContextError))
            assert.fail(`threw ${(err as Error)?.name}: ${(err as Error)?.message}, not InvalidContextError`);
        }
      }),
      { ...FC_PARAMS, numRuns: 2000 },
    );
  });

  test("a token issued for one key cannot be re-split into a token for a prefix of that key", () => {
    // The MAC covers key bytes immediately followed by body bytes, with no boundary between them. The
    // client picks key1 = victim | S, reads it (any context, here node-1:1) and moves S from the key to
    // the front of the body: the MAC input is unchanged. S is chosen so that S | body1 parses as a vector
    // in which node-1 has a huge counter, covering every version node-1 ever wrote of the victim key.
    const secret = Buffer.from("cluster secret");
    const victim = Buffer.from("victim");
    fc.assert(
      fc.property(
        fc.constantFrom("node-1", "n2", "node-3@7"),
        fc.integer({ min: 1, max: 127 }),
        fc.integer({ min: 1000, max: 2 ** 28 - 1 }),
        (actor, readCounter, forgedCounter) => {
          const actorBytes = Buffer.from(actor);
          const counter = Buffer.alloc(8);
          const counterEnd = writeVarint(counter, 0, forgedCounter);
          const body1Length = 3 + actorBytes.length + 1; // version, count, length, actor, counter < 128
          const s = Buffer.concat([
            Buffer.from([1, 2, actorBytes.length]),
            actorBytes,
            counter.subarray(0, counterEnd),
            Buffer.from([body1Length - 1]),
          ]);
          const key1 = Buffer.concat([victim, s]);
          const token1 = encodeContext(new Map([[actor, readCounter]]), key1, secret);
          assert.equal(Buffer.from(token1, "base64url").length, body1Length + 12);
          const forged = Buffer.concat([s, Buffer.from(token1, "base64url")]).toString("base64url");
          expectContextError(
            forged,
            victim,
            secret,
            `token of key ${JSON.stringify(key1.toString("latin1"))}`,
          );
        },
      ),
      { ...FC_PARAMS, numRuns: 50 },
    );
  });
});
