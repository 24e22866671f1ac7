/**
 * The invariant helpers (src/core/assert.ts): a broken invariant throws InvariantError with a stable code
 * and the message naming the values; a message given as a function is built only on failure.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  InvariantError,
  assert as invariant,
  onInvariantBroken,
  unreachable,
} from "../../src/core/assert.js";

test("assert throws InvariantError (ERR_INVARIANT) with its message, and nothing when the condition holds", () => {
  invariant(true, "never shown");
  invariant(1, () => {
    throw new Error("a lazy message is not built when the condition holds");
  });
  const err = (() => {
    try {
      invariant(2 + 2 === 5, () => `sum ${2 + 2}, wanted 5`);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof InvariantError);
  assert.equal(err.code, "ERR_INVARIANT");
  assert.equal(err.message, "invariant broken: sum 4, wanted 5");
  assert.throws(() => invariant(0, "zero"), { code: "ERR_INVARIANT", message: "invariant broken: zero" });
});

test("unreachable names the value that got past an exhaustive switch", () => {
  type Kind = { kind: "a" } | { kind: "b" };
  const name = (k: Kind): string => {
    switch (k.kind) {
      case "a":
        return "A";
      case "b":
        return "B";
      default:
        return unreachable(k, "kind");
    }
  };
  assert.equal(name({ kind: "b" }), "B");
  assert.throws(() => name({ kind: "c" } as unknown as Kind), {
    code: "ERR_INVARIANT",
    message: 'invariant broken: unexpected kind: {"kind":"c"}',
  });
  // A value JSON cannot show (a cycle) still gets a message.
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => unreachable(cyclic as never), { code: "ERR_INVARIANT" });
});

test("a broken invariant reaches the handler at its site, before any catch on the way can swallow it", () => {
  const seen: string[] = [];
  onInvariantBroken((err) => seen.push(err.message));
  try {
    try {
      invariant(1 + 1 === 3, "arithmetic");
    } catch {
      // a request's catch-all, say
    }
    assert.deepEqual(seen, ["invariant broken: arithmetic"]);
  } finally {
    onInvariantBroken(undefined);
  }
});
