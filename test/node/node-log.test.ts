/** The node's log helpers: JSON lines with level names, counted events per window, handoff passes once each. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createNodeLogger, EventTally, HandoffWatch, type TallyKind } from "../../src/node/node-log.js";
import type { HandoffProgress } from "../../src/replication/handoff.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";

function capture(level: "debug" | "info" = "info") {
  const lines: Record<string, unknown>[] = [];
  const log = createNodeLogger({
    id: "n1",
    level,
    stream: { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) },
  });
  return { log, lines };
}

test("a log line is one JSON object: level by name, ISO time, the node, the message and its fields", () => {
  const { log, lines } = capture();
  log.info({ event: "membership", member: "n2" }, "membership: n2 is up");
  log.debug("not at info");
  assert.equal(lines.length, 1);
  const l = lines[0]!;
  assert.equal(l.level, "info");
  assert.equal(l.node, "n1");
  assert.equal(l.event, "membership");
  assert.equal(l.msg, "membership: n2 is up");
  assert.match(String(l.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

const DELIVERED: TallyKind = {
  level: "info",
  event: "hints",
  line: (k, n, b) => `delivered ${n} to ${k} (${b} bytes)`,
};

test("counted events: the first of a burst at once, the rest as one line at the window's end", () => {
  const { log, lines } = capture();
  const v = new VirtualScheduler();
  const tally = new EventTally(log, v.group(), 10_000, 3);
  tally.note(DELIVERED, "n2", 10);
  for (let i = 0; i < 99; i++) tally.note(DELIVERED, "n2", 10);
  tally.note(DELIVERED, "n3", 5);
  assert.deepEqual(
    lines.map((l) => l.msg),
    ["delivered 1 to n2 (10 bytes)", "delivered 1 to n3 (5 bytes)"],
  );
  v.advance(10_000);
  assert.deepEqual(
    lines.slice(2).map((l) => l.msg),
    ["delivered 99 to n2 (990 bytes)"],
  );
  // Beyond maxKeys distinct keys, the rest are counted under "other".
  for (const k of ["a", "b", "c", "d", "e"]) tally.note(DELIVERED, k);
  tally.close();
  assert.deepEqual(
    lines.slice(3).map((l) => [l.key, l.count]),
    [
      ["a", 1],
      ["b", 1],
      ["c", 1],
      ["other", 1],
      ["other", 1],
    ],
  );
});

function progress(p: Partial<HandoffProgress>): HandoffProgress {
  return {
    state: "idle",
    ringVersion: 1,
    leaving: false,
    keysScanned: 0,
    keysSent: 0,
    storesFailed: 0,
    passesCompleted: 0,
    startedAt: 0,
    lastCompletedAt: null,
    lastError: null,
    bytesSent: 0,
    throttleBytesPerSecond: 64 << 20,
    keysPerSecond: null,
    bytesPerSecond: null,
    keysTotal: null,
    etaSeconds: null,
    ...p,
  };
}

test("handoff: each pass logged once when it starts and once when it ends; retries warned once", () => {
  const w = new HandoffWatch();
  assert.deepEqual(
    w.look(progress({ passesCompleted: 2, startedAt: 5 })),
    [],
    "the first look only takes the figures in",
  );
  const started = w.look(progress({ state: "running", ringVersion: 3, startedAt: 100, passesCompleted: 2 }));
  assert.equal(started.length, 1);
  assert.match(started[0]!.msg, /^handoff: a pass started: the ring changed to version 3/);
  assert.deepEqual(
    w.look(progress({ state: "running", ringVersion: 3, startedAt: 100, passesCompleted: 2 })),
    [],
  );
  const failing = progress({
    state: "retrying",
    ringVersion: 3,
    startedAt: 100,
    passesCompleted: 2,
    storesFailed: 4,
    lastError: "n3 timed out",
  });
  assert.equal(w.look(failing)[0]!.level, "warn");
  assert.deepEqual(w.look(failing), [], "warned once");
  const done = w.look(
    progress({ ringVersion: 3, startedAt: 100, passesCompleted: 3, keysScanned: 50, keysSent: 7 }),
  );
  assert.equal(done.length, 1);
  assert.equal(
    done[0]!.msg,
    "handoff: the pass for ring version 3 is done: 50 keys scanned, 7 copies sent; it ran because the ring changed to version 3, so keys whose replicas moved go to their new replicas",
  );
  // A pass that started and ended between two looks: its end is still logged.
  const quick = w.look(progress({ ringVersion: 4, startedAt: 200, passesCompleted: 4, leaving: true }));
  assert.deepEqual(
    quick.map((l) => l.fields.phase),
    ["done"],
  );
  assert.match(quick[0]!.msg, /because this node is leaving/);
});
