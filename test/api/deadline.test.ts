/**
 * A request's timeout is one budget from its arrival to its answer: the replication layer is given what
 * is left of it, and a request whose outcome the layer has not given by then is answered 503 (a write
 * "may have been applied"), never left waiting.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEADLINE_BACKSTOP_MS } from "../../src/api/kv-routes.js";
import type { KvService } from "../../src/replication/coordinator.js";
import { withServer } from "./api-support.js";

/** A service that never answers, and records the timeouts it was given. */
function silent(): { service: KvService; budgets: number[] } {
  const budgets: number[] = [];
  const never = new Promise<never>(() => undefined);
  return {
    budgets,
    service: {
      get: (_k, _r, timeoutMs) => {
        budgets.push(timeoutMs);
        return never;
      },
      write: (_k, _c, _v, _w, timeoutMs) => {
        budgets.push(timeoutMs);
        return never;
      },
    },
  };
}

/** Timers fire late on a machine loaded by other test runs: the bound allows for it (the answer comes). */
const LOAD_MS = 500;

async function timed(url: string, init: RequestInit = {}) {
  const start = performance.now();
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
  const body = (await r.json()) as Record<string, unknown>;
  const held = Number(/^total;dur=([0-9.]+)$/.exec(r.headers.get("server-timing") ?? "")?.[1]);
  return { status: r.status, body, ms: performance.now() - start, held };
}

test("a request the replication layer leaves unanswered gets its 503 at its timeout", async () => {
  const { service, budgets } = silent();
  await withServer({ service }, async (port, metrics) => {
    const put = await timed(`http://127.0.0.1:${port}/kv/k?timeout=300`, { method: "PUT", body: "v" });
    assert.equal(put.status, 503);
    assert.equal(put.body.error, "unavailable");
    assert.match(String(put.body.message), /may have been applied/);
    assert.ok(put.ms >= 290 && put.ms < 300 + DEADLINE_BACKSTOP_MS + LOAD_MS, `answered after ${put.ms} ms`);
    // The node says how long it held the request (Server-Timing).
    assert.ok(put.held >= 290 && put.held <= put.ms, `held ${put.held} ms`);
    const get = await timed(`http://127.0.0.1:${port}/kv/k?timeout=200`);
    assert.equal(get.status, 503);
    assert.equal(get.body.error, "unavailable");
    assert.ok(get.ms >= 190 && get.ms < 200 + DEADLINE_BACKSTOP_MS + LOAD_MS, `answered after ${get.ms} ms`);
    // The default timeout (1000 ms in these tests) is the budget when none is given.
    const dflt = await timed(`http://127.0.0.1:${port}/kv/k`);
    assert.equal(dflt.status, 503);
    assert.ok(
      dflt.ms >= 990 && dflt.ms < 1000 + DEADLINE_BACKSTOP_MS + LOAD_MS,
      `answered after ${dflt.ms} ms`,
    );
    const counted = await metrics.registry.getSingleMetricAsString("ringstore_api_deadline_answers_total");
    assert.match(counted, /ringstore_api_deadline_answers_total\{[^}]*when="late"[^}]*\} 3/);
  });
  assert.equal(budgets.length, 3);
  assert.ok(budgets[0]! <= 300 && budgets[0]! > 250, `the write got ${budgets[0]} ms`);
  assert.ok(budgets[1]! <= 200 && budgets[1]! > 150, `the read got ${budgets[1]} ms`);
});

test("the time a body takes to arrive counts against the budget", async () => {
  const { service, budgets } = silent();
  await withServer({ service }, async (port, metrics) => {
    const net = await import("node:net");
    const s = net.connect(port, "127.0.0.1");
    await new Promise((r) => s.once("connect", r));
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString();
    });
    const start = performance.now();
    s.write("PUT /kv/k?timeout=200 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nv");
    await new Promise((r) => setTimeout(r, 300));
    s.write("w");
    while (!got.includes("\r\n\r\n{")) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 20));
    s.destroy();
    assert.match(got, /^HTTP\/1.1 503/);
    assert.match(got, /NOT applied/);
    const counted = await metrics.registry.getSingleMetricAsString("ringstore_api_deadline_answers_total");
    assert.match(counted, /ringstore_api_deadline_answers_total\{[^}]*when="ready"[^}]*\} 1/);
    assert.ok(performance.now() - start < 300 + LOAD_MS);
  });
  assert.deepEqual(budgets, [], "a request past its budget is not started");
});
