/**
 * The fuzzers in npm test: bounded and seeded (FUZZ_SEED replays a run). `npm run fuzz -- --runs N`
 * runs them long (test/fuzz/main.ts). See peer-frames.ts and http-requests.ts for what each checks.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { httpProperty } from "./http-requests.js";
import { decoderProperty, livePeerProperty } from "./peer-frames.js";
import { type FuzzTargets, startFuzzTargets } from "./targets.js";

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : 0x16_f022;
let targets: FuzzTargets;

before(async () => {
  targets = await startFuzzTargets();
});
after(() => targets.close());

test("the peer decoder: random and mutated frames decode and round-trip, or are refused with ProtocolError", () => {
  const r = decoderProperty({ runs: 3000, seed: SEED });
  assert.ok(r.decoded > 100 && r.refused > 100, JSON.stringify(r));
});

test("a live node's peer port: random and mutated frames, in and out of TLS", {
  timeout: 120_000,
}, async () => {
  const r = await livePeerProperty(targets.peer, { runs: 400, seed: SEED });
  targets.checkAlive();
  assert.ok(r.answers > 50 && r.closedOnInvalid > 5 && r.outsiders > 5, JSON.stringify(r));
  assert.ok(r.rssGrowthBytes < 64 * 1024 * 1024, `RSS grew ${r.rssGrowthBytes} bytes`);
});

test("a live node's API: random and malformed HTTP requests each get a clear answer", {
  timeout: 120_000,
}, async () => {
  const r = await httpProperty({ api: targets.api }, { runs: 300, seed: SEED });
  targets.checkAlive();
  assert.ok(Object.keys(r.byStatus).length > 4, JSON.stringify(r));
});
