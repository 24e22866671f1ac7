/** The node's log helpers: JSON lines with level names, counted events per window, handoff passes once each. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { JoinProgress } from "../../src/node/join-follower.js";
import {
  createNodeLogger,
  EventTally,
  HandoffWatch,
  JoinWatch,
  type TallyKind,
} from "../../src/node/node-log.js";
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

/** A join's figures with `members` given as id:state and the rest as given. */
function joinAt(state: JoinProgress["state"], members: string, o: Partial<JoinProgress> = {}): JoinProgress {
  return {
    state,
    ringVersion: state === "waiting" ? null : 5,
    members: members
      .split(" ")
      .filter((x) => x !== "")
      .map((x) => {
        const [id, st] = x.split(":") as [string, "busy" | "done" | "silent"];
        return { id, state: st, figures: null, why: st === "silent" ? "it is down" : null };
      }),
    keysScanned: 0,
    keysTotal: 3000,
    keysSent: 0,
    bytesSent: 0,
    storesFailed: 0,
    keysReceived: 0,
    bytesReceived: 0,
    keysPerSecond: null,
    etaSeconds: null,
    throttleBytesPerSecond: 1024,
    startedAt: 0,
    endedAt: state === "done" || state === "given_up" ? 12_000 : null,
    ...o,
  };
}

test("join: a line when waiting and when the handoff starts, then one per change at most every 3 s, then the last", () => {
  const w = new JoinWatch(3000);
  assert.match(w.look(joinAt("waiting", ""), 0)!.msg, /^join: waiting for the ring to include this node/);
  assert.equal(w.look(joinAt("waiting", ""), 500), undefined, "once");
  const started = w.look(joinAt("handing_off", "a:busy b:busy d:done", { keysScanned: 100 }), 1000)!;
  assert.match(
    started.msg,
    /^join: handoff for ring version 5 started: 100 of 3,000 keys scanned, 0 copies sent, 0 received here, waiting for a, b$/,
  );
  assert.equal(started.fields.phase, "handing_off");
  // Changed figures within 3 s: not logged; the same figures later: not logged either.
  assert.equal(w.look(joinAt("handing_off", "a:busy b:busy d:done", { keysScanned: 400 }), 2000), undefined);
  const l = w.look(
    joinAt("handing_off", "a:busy b:done d:done", {
      keysScanned: 1500,
      keysSent: 700,
      keysReceived: 690,
      keysPerSecond: 299.6,
      etaSeconds: 5.01,
    }),
    4000,
  )!;
  assert.equal(
    l.msg,
    "join: handoff for ring version 5: 1,500 of 3,000 keys scanned, 700 copies sent, 690 received here, 300 keys/s, about 6 s left, waiting for a",
  );
  assert.deepEqual(
    { ...l.fields, membersDone: [...(l.fields.membersDone as string[])] },
    {
      event: "join",
      phase: "handing_off",
      ringVersion: 5,
      keysScanned: 1500,
      keysTotal: 3000,
      keysSent: 700,
      bytesSent: 0,
      keysReceived: 690,
      keysPerSecond: 300,
      etaSeconds: 6,
      storesFailed: 0,
      membersDone: ["b", "d"],
      membersBusy: ["a"],
      membersSilent: [],
    },
  );
  assert.equal(
    w.look(
      joinAt("handing_off", "a:busy b:done d:done", { keysScanned: 1500, keysSent: 700, keysReceived: 690 }),
      9000,
    ),
    undefined,
  );
  // The end: once, naming who did not answer (a warning then).
  const end = w.look(
    joinAt("done", "a:silent b:done d:done", { keysScanned: 2000, keysSent: 900, keysReceived: 880 }),
    9500,
  )!;
  assert.equal(end.level, "warn");
  assert.equal(
    end.msg,
    "join: done: the handoff for ring version 5 finished on b, d in 12 s (2,000 keys scanned, 900 copies sent, 880 received here); a (it is down) did not answer: see cluster status (anti-entropy repairs what they hold)",
  );
  assert.equal(w.look(joinAt("done", "a:silent b:done d:done"), 20_000), undefined);
  const clean = new JoinWatch().look(joinAt("done", "b:done d:done"), 0)!;
  assert.equal(clean.level, "info");
  assert.match(clean.msg, /^join: done: the handoff for ring version 5 finished on b, d in 12 s \(/);
  const gaveUp = new JoinWatch().look(joinAt("given_up", "b:busy d:done"), 0)!;
  assert.equal(gaveUp.level, "warn");
  assert.match(gaveUp.msg, /^join: stopped following the handoff after 12 s, not finished on b/);
});
