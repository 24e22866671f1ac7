/** weight.json (src/node/weight-file.ts): a weight set online outlives a restart with the same --weight. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../src/node/config.js";
import { decodeWeight, encodeWeight, startingWeight } from "../../src/node/weight-file.js";

test("round trip; a damaged or foreign file is a ConfigError; bad weights are refused", () => {
  const text = encodeWeight({ weight: 3, flag: 1 });
  assert.deepEqual(decodeWeight(text, "w.json"), { weight: 3, flag: 1 });
  assert.throws(() => decodeWeight(text.replace('"weight":3', '"weight":4'), "w.json"), ConfigError);
  assert.throws(() => decodeWeight("{", "w.json"), ConfigError);
  assert.throws(() => decodeWeight('{"format":"other","version":1}', "w.json"), ConfigError);
  assert.throws(() => encodeWeight({ weight: 0, flag: 1 }), RangeError);
  assert.throws(() => encodeWeight({ weight: 2, flag: 1001 }), RangeError);
});

test("the starting weight: the one set online while --weight is unchanged, else the flag", () => {
  assert.equal(startingWeight(1, undefined), 1);
  assert.equal(startingWeight(1, { weight: 3, flag: 1 }), 3);
  assert.equal(startingWeight(2, { weight: 3, flag: 1 }), 2);
});
