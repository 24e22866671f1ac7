/**
 * The fault knobs the simulator added to the virtual runtime and the simulated network: paused timer
 * groups, paused nodes (messages held, timeouts late), skewed clocks, and TCP-like at-most-once delivery
 * of duplicated requests.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { seededRandom } from "../../src/runtime/runtime.js";
import { skewedClock, VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { SimNetwork } from "../../src/sim/sim-network.js";
import type { TransportError } from "../../src/transport/transport.js";

describe("TimerGroup.pause", () => {
  test("timers due while paused fire at resume, in order; cancelled ones never", async () => {
    const sched = new VirtualScheduler();
    const g = sched.group();
    const fired: string[] = [];
    g.after(10, () => fired.push(`a@${sched.now()}`));
    const b = g.after(20, () => fired.push(`b@${sched.now()}`));
    g.after(30, () => fired.push(`c@${sched.now()}`));
    g.after(200, () => fired.push(`d@${sched.now()}`));
    sched.advance(5);
    g.pause();
    sched.advance(50);
    assert.deepEqual(fired, []);
    b.cancel();
    g.resume();
    assert.deepEqual(fired, ["a@55", "c@55"]);
    sched.advance(200);
    assert.deepEqual(fired, ["a@55", "c@55", "d@200"]);
  });

  test("halt while paused forgets the overdue timers", () => {
    const sched = new VirtualScheduler();
    const g = sched.group();
    let n = 0;
    g.after(10, () => n++);
    g.pause();
    sched.advance(20);
    g.halt();
    g.resume();
    assert.equal(n, 0);
  });
});

describe("skewedClock", () => {
  test("offset and drift, monotonic, integral", () => {
    const sched = new VirtualScheduler({ startMs: 1000 });
    const c = skewedClock(sched, -500, 0.01);
    assert.equal(c.now(), 500);
    sched.advance(1000);
    assert.equal(c.now(), 1510);
    assert.throws(() => skewedClock(sched, 0, -1));
  });
});

function pair(o: { atMostOnceRequests?: boolean; duplicateProbability?: number } = {}) {
  const sched = new VirtualScheduler();
  const net = new SimNetwork({
    clock: sched,
    timers: sched,
    random: seededRandom(7),
    latency: { minMs: 5, maxMs: 5 },
    faults: { duplicateProbability: o.duplicateProbability ?? 0 },
    atMostOnceRequests: o.atMostOnceRequests,
  });
  let handled = 0;
  const a = net.transport({ address: "a", nodeId: "a", handler: async () => ({ kind: "pong" }) });
  net.transport({
    address: "b",
    nodeId: "b",
    handler: async () => {
      handled++;
      return { kind: "pong" };
    },
  });
  return { sched, net, a, handled: () => handled };
}

describe("SimNetwork.pause", () => {
  test("a paused node's input waits; it answers after resume", async () => {
    const { sched, net, a, handled } = pair();
    net.pause("b");
    const p = a.request("b", { kind: "ping" }, 1000);
    await sched.runFor(100);
    assert.equal(handled(), 0);
    assert.equal(net.counters.held, 1);
    net.checkCounters();
    net.resume("b");
    const res = await sched.runUntilSettled(p, 100);
    assert.equal(res.kind, "pong");
    assert.equal(handled(), 1);
    assert.equal(net.highWater.heldPerNode, 1);
    net.checkCounters();
  });

  test("a paused sender's timeouts wait for it: the request fails only after resume", async () => {
    const { sched, net, a } = pair();
    net.isolate("b");
    let outcome = "pending";
    a.request("b", { kind: "ping" }, 50).then(
      () => {
        outcome = "ok";
      },
      (e: TransportError) => {
        outcome = e.code;
      },
    );
    net.pause("a");
    await sched.runFor(500);
    assert.equal(outcome, "pending");
    net.resume("a");
    await sched.runFor(0);
    assert.equal(outcome, "ERR_TIMEOUT");
  });
});

describe("SimNetwork duplicated requests", () => {
  test("at-least-once (default): the handler runs once per copy", async () => {
    const { sched, net, a, handled } = pair({ duplicateProbability: 1 });
    await sched.runUntilSettled(a.request("b", { kind: "ping" }, 1000), 100);
    await sched.runFor(100);
    assert.equal(handled(), 2);
    assert.equal(net.counters.duplicatesDiscarded, 0);
  });

  test("atMostOnceRequests (TCP): the second copy is discarded on arrival", async () => {
    const { sched, net, a, handled } = pair({ duplicateProbability: 1, atMostOnceRequests: true });
    await sched.runUntilSettled(a.request("b", { kind: "ping" }, 1000), 100);
    await sched.runFor(100);
    assert.equal(handled(), 1);
    assert.equal(net.counters.duplicatesDiscarded, 1);
    net.checkCounters();
  });
});

describe("SimNetwork: a request reaches only the incarnation it was sent to (as over TCP)", () => {
  const failure = async (sched: VirtualScheduler, p: Promise<unknown>) => {
    try {
      await sched.runUntilSettled(p, 100);
    } catch (e) {
      return e as TransportError;
    }
    assert.fail("the request should have failed");
  };

  test("sent while the destination is down: refused, never handled by its next incarnation", async () => {
    // The simulator once let such a request (a duplicated `coordinate`) reach the restarted node after
    // its sender had been told "never delivered" and had given the write to another replica: one write
    // applied twice (seed 2135820155, heavy faults). Over TCP the connection is refused at once.
    const { sched, net, a, handled } = pair({ duplicateProbability: 1 });
    net.crash("b");
    let handledAfterRestart = 0;
    const p = a.request("b", { kind: "ping" }, 1000);
    await sched.runFor(2);
    net.restart("b", async () => {
      handledAfterRestart++;
      return { kind: "pong" };
    });
    const err = await failure(sched, p);
    await sched.runFor(100);
    assert.equal(err.code, "ERR_UNREACHABLE");
    assert.equal(err.maybeDelivered, false);
    assert.equal(handled() + handledAfterRestart, 0);
    net.checkCounters();
  });

  test("in flight when the destination crashes: not handled after its restart, 'maybe delivered'", async () => {
    const { sched, net, a } = pair();
    let handledAfterRestart = 0;
    const p = a.request("b", { kind: "ping" }, 1000);
    await sched.runFor(2);
    net.crash("b");
    net.restart("b", async () => {
      handledAfterRestart++;
      return { kind: "pong" };
    });
    const err = await failure(sched, p);
    assert.equal(err.code, "ERR_UNREACHABLE");
    assert.equal(err.maybeDelivered, true);
    assert.equal(handledAfterRestart, 0);
    // A request sent after the restart reaches the new incarnation.
    const res = await sched.runUntilSettled(a.request("b", { kind: "ping" }, 1000), 100);
    assert.equal(res.kind, "pong");
    assert.equal(handledAfterRestart, 1);
    net.checkCounters();
  });
});
