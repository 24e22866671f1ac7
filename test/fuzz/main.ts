/**
 * `npm run fuzz -- [--runs N] [--seed S] [--only decoder,peer,http]`: the fuzzers of fuzz.test.ts, run
 * long against fresh live nodes; prints what each saw, and on a failure fast-check's counterexample and
 * the seed that replays it.
 */
import { httpProperty } from "./http-requests.js";
import { decoderProperty, livePeerProperty } from "./peer-frames.js";
import { startFuzzTargets } from "./targets.js";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

const runs = Number(flag("runs") ?? 10_000);
const seed = Number(flag("seed") ?? Date.now() % 2 ** 31);
const only = new Set((flag("only") ?? "decoder,peer,http").split(","));
if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer`);

console.log(`fuzz: ${runs} runs each, seed ${seed} (replay: npm run fuzz -- --runs ${runs} --seed ${seed})`);
const targets = await startFuzzTargets();
let failed = false;
const part = async (name: string, fn: () => unknown) => {
  if (!only.has(name)) return;
  const start = Date.now();
  try {
    const r = await fn();
    console.log(`${name}: ok in ${((Date.now() - start) / 1000).toFixed(1)} s: ${JSON.stringify(r)}`);
  } catch (err) {
    failed = true;
    console.log(
      `${name}: FAILED after ${((Date.now() - start) / 1000).toFixed(1)} s\n${(err as Error).message}`,
    );
  }
};
try {
  await part("decoder", () => decoderProperty({ runs, seed }));
  await part("peer", () => livePeerProperty(targets.peer, { runs, seed }));
  await part("http", () => httpProperty({ api: targets.api }, { runs, seed }));
  targets.checkAlive();
} catch (err) {
  failed = true;
  console.log((err as Error).message);
} finally {
  if (failed) console.log(`the nodes' output:\n${targets.output().slice(-20_000)}`);
  await targets.close();
}
process.exitCode = failed ? 1 : 0;
