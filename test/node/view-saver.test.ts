/**
 * The view saver (src/node/view-saver.ts): saves in order and coalesced, a failed save (a full disk) is
 * counted, reported and retried rather than thrown into the node, and `persist` waits for a durable save.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { SavedView } from "../../src/node/saved-view.js";
import { ViewSaver } from "../../src/node/view-saver.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";

const view = (incarnation: number): SavedView => ({
  members: [
    { id: "a", api: "", peer: "", weight: 1, zone: undefined, status: "up", incarnation, heartbeat: 0 },
  ],
  ring: null,
});

test("changes during a save coalesce into one more save of the latest view", async () => {
  const sched = new VirtualScheduler();
  let current = 1;
  const written: number[] = [];
  const saver = new ViewSaver(
    () => view(current),
    (v) =>
      new Promise<void>((resolve) =>
        sched.after(10, () => {
          written.push(v.members[0]!.incarnation);
          resolve();
        }),
      ),
    sched,
  );
  saver.save();
  for (current = 2; current <= 5; current++) saver.save();
  current = 5;
  await sched.runUntil(() => written.length >= 2, 1000);
  await sched.runUntil(() => false, 100);
  assert.deepEqual(written, [1, 5]);
  assert.equal(saver.status.saved, 2);
});

test("a failing disk: counted, reported, retried with a growing wait, never thrown; persist rejects then resolves", async () => {
  const sched = new VirtualScheduler();
  let full = true;
  let attempts = 0;
  const errors: string[] = [];
  const saver = new ViewSaver(
    () => view(1),
    async () => {
      attempts++;
      if (full) throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    },
    sched,
    (e) => errors.push(e.message),
  );
  await assert.rejects(saver.persist(), /ENOSPC/);
  assert.equal(saver.status.failed, 1);
  assert.equal(saver.status.retrying, true);
  assert.match(saver.status.lastError ?? "", /ENOSPC/);
  // Retries after 100, 200, 400 ms ...
  await sched.runUntil(() => attempts >= 4, 1000);
  assert.equal(attempts, 4);
  assert.ok(sched.now() >= 700, `retries waited ${sched.now()} ms`);
  full = false;
  const ok = saver.persist();
  await sched.runUntilSettled(ok, 100);
  assert.equal(saver.status.lastError, null);
  assert.equal(saver.status.retrying, false);
  assert.ok(errors.length >= 4);
  // After a stop, nothing more is saved in the background.
  await saver.flush();
  const n = attempts;
  saver.save();
  await sched.runUntil(() => false, 1000);
  assert.equal(attempts, n);
});
