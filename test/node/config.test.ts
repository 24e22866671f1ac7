/** The node's configuration (src/node/config.ts): the tombstone flags, their defaults and their bounds. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, validateNodeConfig } from "../../src/node/config.js";

const base = { id: "n1", api: "127.0.0.1:0", peer: "127.0.0.1:0", data: "/d" };

test("tombstones: purged by default after 24 h, above the 3 h hint window; --force-rejoin off", () => {
  const c = validateNodeConfig(base);
  assert.equal(c.tombstonePurge, true);
  assert.equal(c.tombstoneGraceMs, 24 * 3600_000);
  assert.equal(c.hintWindowMs, 3 * 3600_000);
  assert.equal(c.forceRejoin, false);
  const off = validateNodeConfig({
    ...base,
    tombstonePurge: "off",
    tombstoneGraceMs: "5000",
    hintWindowMs: "1000",
    forceRejoin: true,
  });
  assert.deepEqual([off.tombstonePurge, off.tombstoneGraceMs, off.forceRejoin], [false, 5000, true]);
});

test("the hint window must end before the grace period (a hint delivered after a purge would resurrect)", () => {
  assert.throws(
    () => validateNodeConfig({ ...base, tombstoneGraceMs: "3600000", hintWindowMs: "3600000" }),
    (err: Error) =>
      err instanceof ConfigError &&
      /--hint-window .* must be shorter than --tombstone-grace/.test(err.message),
  );
  // Without hinted handoff there are no hints to outlive it.
  assert.equal(
    validateNodeConfig({
      ...base,
      tombstoneGraceMs: "3600000",
      hintWindowMs: "3600000",
      hintedHandoff: "off",
    }).tombstoneGraceMs,
    3600_000,
  );
  assert.throws(() => validateNodeConfig({ ...base, tombstoneGraceMs: "999" }), /--tombstone-grace must be/);
  assert.throws(
    () => validateNodeConfig({ ...base, tombstonePurge: "maybe" }),
    /--tombstone-purge must be on or off/,
  );
});

test("--memory-budget: 0 (the engine's defaults) by default, else at least 4 MiB", () => {
  assert.equal(validateNodeConfig(base).memoryBudgetBytes, 0);
  assert.equal(
    validateNodeConfig({ ...base, memoryBudget: "134217728" }).memoryBudgetBytes,
    128 * 1024 * 1024,
  );
  for (const bad of ["1000", "-1", "lots"])
    assert.throws(
      () => validateNodeConfig({ ...base, memoryBudget: bad }),
      (err: Error) => err instanceof ConfigError && /--memory-budget/.test(err.message),
    );
});
