/**
 * The protocol test network (protocol-net.ts) keeps the Transport contract the tests above it rely on:
 * nothing moves until the test says so, a lost request is a timeout at the sender's timeout, a crashed
 * node refuses, answers are of their request's kind, and the faults of a long run are seeded and
 * accounted for.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { seededRandom } from "../../src/runtime/runtime.js";
import type { AnswerBody, RequestBody } from "../../src/transport/messages.js";
import { ProtocolNet } from "./protocol-net.js";

const pong = async (): Promise<AnswerBody> => ({ kind: "pong" });
const PING: RequestBody = { kind: "ping" };

describe("ProtocolNet", () => {
  test("a request and its answer wait in the queue until delivered; time moves only on elapse", async () => {
    const net = new ProtocolNet();
    const a = net.node("a");
    net.node("b", pong);
    const res = a.request("b", PING, 100);
    await net.elapse(50);
    assert.deepEqual(net.pending(), ["a -> b ping"]);
    assert.deepEqual(await net.deliver({ to: "c" }), [], "the filter matched nothing");
    assert.deepEqual(await net.step(), ["a -> b ping"]);
    assert.deepEqual(net.pending(), ["b --> a pong"]);
    assert.equal(await net.settled(res), false);
    await net.step();
    assert.deepEqual(await res, { kind: "pong" });
    assert.equal(net.sched.now(), 50);
    assert.deepEqual(
      net.sent().map((s) => [s.line, s.sentAt, s.fate]),
      [
        ["a -> b ping", 0, "delivered"],
        ["b --> a pong", 50, "delivered"],
      ],
    );
  });

  test("a cut link loses what is on it and what is sent later: the sender times out at its timeout", async () => {
    const net = new ProtocolNet();
    const a = net.node("a");
    net.node("b", pong);
    const first = assert.rejects(a.request("b", PING, 100), { code: "ERR_TIMEOUT" });
    net.cut("a", "b");
    const second = assert.rejects(a.request("b", PING, 100), { code: "ERR_TIMEOUT" });
    assert.deepEqual(net.pending(), ["a -> b ping"], "the second was lost as it was sent");
    await net.step();
    assert.deepEqual(net.pending(), []);
    assert.deepEqual(
      net.sent({ fate: "lost" }).map((s) => s.line),
      ["a -> b ping", "a -> b ping"],
    );
    await net.elapse(99);
    assert.equal(await net.settled(first), false);
    await net.elapse(1);
    await first;
    await second;
    net.heal();
    const third = a.request("b", PING, 100);
    assert.deepEqual(await net.runUntilSettled(third, 0), { kind: "pong" });
  });

  test("a crashed node refuses at once; restarted, it answers, but not what was sent before", async () => {
    const net = new ProtocolNet();
    const a = net.node("a");
    net.node("b", pong);
    const refused = assert.rejects(a.request("b", PING, 1000), {
      code: "ERR_UNREACHABLE",
      message: "b is down",
    });
    net.crash("b");
    await net.step();
    assert.deepEqual(net.pending(), ["b --> a ERR_UNREACHABLE"]);
    await net.step();
    await refused;
    const stale = assert.rejects(a.request("b", PING, 1000), { code: "ERR_UNREACHABLE" });
    net.restart("b");
    const fresh = a.request("b", PING, 1000);
    await net.step();
    assert.deepEqual(net.pending(), ["b --> a ERR_UNREACHABLE", "b --> a pong"]);
    await net.step();
    await stale;
    assert.deepEqual(await fresh, { kind: "pong" });
    assert.equal(net.sched.now(), 0);
  });

  test("an answer of another kind fails with ERR_PROTOCOL; a handler's error keeps an overload's code; the handshake", async () => {
    const net = new ProtocolNet();
    const a = net.node("a");
    net.node("b", async (_from, body) => {
      if (body.kind === "read") return { kind: "pong" };
      throw Object.assign(new Error("too busy"), { code: "ERR_OVERLOADED" });
    });
    const wrong = net.runUntilSettled(a.request("b", { kind: "read", key: Buffer.from("k") }, 100), 0);
    await assert.rejects(wrong, { code: "ERR_PROTOCOL", message: "read answered with pong" });
    await assert.rejects(net.runUntilSettled(a.request("b", PING, 100), 0), {
      code: "ERR_OVERLOADED",
      message: "too busy",
    });
    const c = net.node("c", pong);
    c.setCluster("one");
    await assert.rejects(
      net.runUntilSettled(a.request("c", { kind: "gossip", members: [], ring: null }, 100), 0),
      {
        code: "ERR_REJECTED",
      },
    );
    assert.deepEqual(await net.runUntilSettled(a.request("c", PING, 100), 0), { kind: "pong" }, "ping may");
  });

  test("a long run delivers each message when due; seeded faults are accounted for", async () => {
    const run = async (seed: number) => {
      const net = new ProtocolNet({
        faults: { random: seededRandom(seed), drop: 0.1, duplicate: 0.1, delay: 0.3, delayMaxMs: 50 },
      });
      const a = net.node("a");
      net.node("b", pong);
      const outcomes: string[] = [];
      for (let i = 0; i < 200; i++)
        a.request("b", PING, 1000).then(
          () => outcomes.push(`${i} ok at ${net.sched.now()}`),
          (err: { code: string }) => outcomes.push(`${i} ${err.code} at ${net.sched.now()}`),
        );
      await net.runFor(2000);
      assert.equal(outcomes.length, 200);
      const c = net.checkCounters();
      assert.ok(c.lost > 0 && c.duplicated > 0, JSON.stringify(c));
      assert.ok(net.sent({ fate: "late" }).length > 0, "a duplicate request's second answer comes late");
      assert.ok(
        outcomes.some((o) => /ok at [1-9]/.test(o)),
        "some were delayed",
      );
      assert.ok(
        outcomes.some((o) => o.includes("ERR_TIMEOUT at 1000")),
        "some were lost",
      );
      return outcomes.join("\n");
    };
    assert.equal(await run(7), await run(7), "one seed, one history");
    assert.notEqual(await run(7), await run(8));
  });
});
