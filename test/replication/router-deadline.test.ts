/**
 * A forwarded write's timeout is one budget, not one per hop: the replica it is forwarded to is asked to
 * answer within what is left of it (less the answer's way back), the forwarder waits no longer than what
 * is left, a replica tried after another one refused gets only what remains, and the replica that
 * coordinates a forwarded write ends it within the frame's deadline.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Coordinator, WriteOutcome } from "../../src/replication/coordinator.js";
import type { PeerDirectory } from "../../src/replication/remote-replica.js";
import { FORWARD_RETURN_MS, Router, workingBudget } from "../../src/replication/router.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import type { RequestBody, RequestOf } from "../../src/transport/messages.js";
import { type Transport, TransportError } from "../../src/transport/transport.js";
import { EMPTY_VECTOR } from "../../src/versioning/dvv.js";

const KEY = Buffer.from("k");
const VALUE = { data: Buffer.from("v"), contentType: "text/plain", deleted: false, writtenAtMs: 1 };

interface Sent {
  readonly to: string;
  readonly at: number;
  readonly waitMs: number;
  readonly body: RequestBody;
}

/**
 * Node "a" (no replica of the key) forwards to "b" then "c". "b" refuses after `refuseAfterMs` with an
 * error that means the request was never delivered; "c" never answers (the request times out).
 */
function forwarder(sched: VirtualScheduler, refuseAfterMs: number) {
  const sent: Sent[] = [];
  const transport: Transport = {
    address: "a:7000",
    request: ((to: string, body: RequestBody, waitMs: number) => {
      sent.push({ to, at: sched.now(), waitMs, body });
      return new Promise((_resolve, reject) => {
        if (to === "b:7000")
          sched.after(refuseAfterMs, () =>
            reject(new TransportError("ERR_UNREACHABLE", "connecting to b timed out")),
          );
        else sched.after(waitMs, () => reject(new TransportError("ERR_TIMEOUT", "timed out")));
      });
    }) as Transport["request"],
    resetBackoff: () => undefined,
    setCluster: () => undefined,
    close: () => Promise.resolve(),
  };
  const directory: PeerDirectory = {
    addressOf: (id) => `${id}:7000`,
    reachable: () => true,
    contacted: () => undefined,
  };
  const router = new Router({
    coordinator: { canVersion: () => true } as Coordinator,
    selfId: "a",
    transport,
    directory,
    preferenceList: () => ["b", "c", "d"],
    random: seededRandom(1),
    clock: sched,
  });
  return { router, sent };
}

describe("Router: a forwarded write's timeout is one budget", () => {
  test("the second replica tried gets what is left, and the write is answered by its timeout", async () => {
    const sched = new VirtualScheduler({ startMs: 0 });
    const { router, sent } = forwarder(sched, 300);
    const out = await sched.runUntilSettled(router.write(KEY, EMPTY_VECTOR, VALUE, 2, 1000), 10_000);
    assert.equal(out.kind, "unavailable");
    assert.ok(sched.now() <= 1000, `answered at ${sched.now()} ms, after its 1000 ms timeout`);
    assert.deepEqual(
      sent.map((s) => s.to),
      ["b:7000", "c:7000"],
      "c timed out (maybe applied): d is not tried",
    );
    const [first, second] = sent as [Sent, Sent];
    assert.equal(first.waitMs, 1000);
    assert.equal(second.at, 300);
    assert.equal(second.waitMs, 700, "c is waited for only what is left");
    const asked = (second.body as RequestOf<"coordinate">).timeoutMs;
    assert.equal(asked, workingBudget(700));
    assert.ok(
      asked <= 700 - Math.min(FORWARD_RETURN_MS, 70),
      "c is asked to answer before the forwarder gives up",
    );
  });

  test("with the budget spent by refusals, nothing more is forwarded", async () => {
    const sched = new VirtualScheduler({ startMs: 0 });
    const { router, sent } = forwarder(sched, 1000);
    const out = await sched.runUntilSettled(router.write(KEY, EMPTY_VECTOR, VALUE, 2, 1000), 10_000);
    assert.equal(out.kind, "unavailable");
    assert.equal(sched.now(), 1000);
    assert.deepEqual(
      sent.map((s) => s.to),
      ["b:7000"],
    );
  });

  test("a forwarded write is coordinated within the frame's deadline, less the way back", async () => {
    const seen: number[] = [];
    const coordinator = {
      canVersion: () => true,
      write: async (_k: Uint8Array, _c: unknown, _v: unknown, _w: number, timeoutMs: number) => {
        seen.push(timeoutMs);
        return { kind: "unavailable", needed: 2, acked: 0 } satisfies WriteOutcome;
      },
    } as unknown as Coordinator;
    const sched = new VirtualScheduler({ startMs: 0 });
    const router = new Router({
      coordinator,
      selfId: "b",
      transport: {} as Transport,
      directory: {} as PeerDirectory,
      preferenceList: () => ["b"],
      random: seededRandom(1),
      clock: sched,
    });
    const body: RequestOf<"coordinate"> = {
      kind: "coordinate",
      requestId: "a:1",
      key: KEY,
      context: [],
      value: VALUE.data,
      contentType: VALUE.contentType,
      deleted: false,
      writtenAtMs: 1,
      w: 2,
      timeoutMs: 5000,
    };
    await router.coordinateForwarded(body, 400);
    await router.coordinateForwarded(body, 60_000);
    await router.coordinateForwarded(body);
    assert.deepEqual(seen, [workingBudget(400), 5000, 5000]);
    assert.ok(workingBudget(400) <= 400 - 40);
  });
});
