/**
 * The bounded log (src/runtime/bounded-log.ts) on virtual time: one line per key per window, at most
 * linesPerWindow lines as they come, the rest summed up in one line at the window's end, the busiest keys
 * named; nothing when nothing was held back.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BoundedLog } from "../../src/runtime/bounded-log.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";

function setup(linesPerWindow = 3) {
  const sched = new VirtualScheduler();
  const lines: string[] = [];
  const log = new BoundedLog({
    clock: sched,
    timers: sched,
    write: (l) => lines.push(l),
    windowMs: 1000,
    linesPerWindow,
    maxKeys: 4,
    summary: (n) => `refused ${n} more`,
  });
  return { sched, lines, log };
}

test("a flood from one key writes its first line, then one summary per window", () => {
  const { sched, lines, log } = setup();
  for (let i = 0; i < 500; i++) log.note("10.0.0.1", `refused 10.0.0.1:${i}`);
  assert.deepEqual(lines, ["refused 10.0.0.1:0"]);
  sched.advance(1000);
  assert.deepEqual(lines, ["refused 10.0.0.1:0", "refused 499 more in the last 1 s: 10.0.0.1 (499)"]);
  // A quiet window writes nothing; the next event is written at once again.
  sched.advance(5000);
  assert.equal(lines.length, 2);
  log.note("10.0.0.1", "again");
  assert.equal(lines.at(-1), "again");
});

test("many keys: linesPerWindow lines as they come, the rest summed with the busiest named, memory bounded", () => {
  const { sched, lines, log } = setup(2);
  for (let k = 0; k < 10; k++) for (let i = 0; i <= k; i++) log.note(`h${k}`, `refused h${k}`);
  assert.deepEqual(lines, ["refused h0", "refused h1"]);
  sched.advance(1000);
  assert.equal(lines.length, 3);
  // h1 was written once and held once; h2 and h3 remembered (maxKeys 4); the rest counted together.
  assert.equal(lines[2], "refused 53 more in the last 1 s: h3 (4), h2 (3), h1 (1), others (45)");
  log.close();
  log.note("h0", "after close");
  assert.equal(lines.length, 3);
});
