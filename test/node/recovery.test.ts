/**
 * A replaced disk's recovery (src/node/recovery.ts): the `recovering` file's format, and the tracker that
 * says `done` once anti-entropy swept every co-replica, clearing the mark (retried when that fails).
 * Through real processes: test/cluster/anti-entropy.test.ts (a replaced disk).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../src/node/config.js";
import {
  decodeRecovering,
  encodeRecovering,
  Recovery,
  type RecoveryStatus,
} from "../../src/node/recovery.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";

test("the recovering file: round trip; damage, another format and a newer version refused with a sentence", () => {
  const text = encodeRecovering(1_700_000_000_123);
  assert.equal(decodeRecovering(text, "f"), 1_700_000_000_123);
  const j = JSON.parse(text);
  const bad = [
    "not json",
    JSON.stringify({ ...j, sinceMs: j.sinceMs + 1 }),
    JSON.stringify({ ...j, format: "other" }),
    JSON.stringify({ ...j, version: 2 }),
    JSON.stringify({ ...j, sinceMs: "x" }),
  ];
  for (const b of bad) assert.throws(() => decodeRecovering(b, "/d/recovering"), ConfigError, b);
  assert.throws(
    () => decodeRecovering(bad[1]!, "/d/recovering"),
    /\/d\/recovering is damaged \(checksum mismatch\)/,
  );
  assert.throws(() => decodeRecovering(bad[3]!, "/d/recovering"), /format version 2/);
});

test("recovering until anti-entropy swept every co-replica; then the mark is cleared and done reported once", async () => {
  const sched = new VirtualScheduler();
  let sweptAt: number | null = null;
  let clears = 0;
  let failNext = true;
  const done: RecoveryStatus[] = [];
  const errors: string[] = [];
  const r = new Recovery({
    clock: sched,
    timers: sched,
    sinceMs: sched.now(),
    lastFullSweepAt: () => sweptAt,
    clear: async () => {
      clears++;
      if (failNext) {
        failNext = false;
        throw new Error("disk full");
      }
    },
    onDone: (s) => done.push(s),
    onError: (e) => errors.push(e.message),
  });
  r.start();
  await sched.runUntil(() => false, 10_000);
  assert.equal(r.status.state, "recovering");
  assert.equal(clears, 0, "no sweep yet: the mark stays");
  sweptAt = sched.now();
  await sched.runUntil(() => done.length > 0, 10_000);
  assert.deepEqual(errors, ["disk full"], "a failed clear is reported and tried again");
  assert.equal(clears, 2);
  assert.equal(r.status.state, "done");
  assert.ok(r.status.doneAt !== null && r.status.doneAt >= sweptAt);
  await sched.runUntil(() => false, 10_000);
  assert.equal(done.length, 1, "done is reported once");
  r.stop();
});
