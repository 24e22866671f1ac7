/**
 * The API's bounds on its clients (api/limits.ts, api/http-server.ts): a client that trickles its
 * headers or its body is cut off at the deadline with a 408 and counted; connections past the cap are
 * answered 503 (200 for /health) and closed; requests past the in-flight cap are answered 503 overloaded
 * at once, not applied, and /health still answers. Each bound is set small here, by the same options the
 * node's flags set.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { KvService } from "../../src/replication/coordinator.js";
import { connectionsHeld, OK_READ, OK_WRITE, rawConnection, refusals, withServer } from "./api-support.js";

const PUT_K = "PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv";
const HEALTH = "GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

/** A service whose writes wait until `release()`; `entered` counts the writes that reached it. */
function heldWrites(): { service: KvService; entered: () => number; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let entered = 0;
  return {
    service: {
      get: async () => OK_READ,
      write: async () => {
        entered++;
        await gate;
        return OK_WRITE;
      },
    },
    entered: () => entered,
    release,
  };
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("a client that trickles its headers, or sends nothing, is cut off at the headers' deadline (408, counted)", async () => {
  await withServer({ limits: { headersTimeoutMs: 300, bodyTimeoutMs: 600 } }, async (port, metrics) => {
    const trickle = rawConnection(port);
    const silent = rawConnection(port);
    const started = Date.now();
    trickle.write("GET /kv/k HTTP/1.1\r\nhost: x\r\n");
    const timer = setInterval(() => trickle.write("x-slow: 1\r\n"), 50);
    try {
      // Meanwhile the node serves others.
      const ok = rawConnection(port);
      ok.write(HEALTH);
      assert.match(await ok.until(/\r\n\r\n.*\}/s), /^HTTP\/1\.1 200 /);
      ok.destroy();
      assert.ok(await trickle.untilClosed(), "the trickling client is closed");
      assert.ok(await silent.untilClosed(), "the silent client is closed");
    } finally {
      clearInterval(timer);
    }
    const took = Date.now() - started;
    assert.ok(took >= 250 && took < 2000, `cut off after ${took} ms`);
    assert.match(trickle.got, /^HTTP\/1\.1 408 /);
    assert.match(trickle.got, /"the request line and headers did not arrive in time"/);
    assert.deepEqual(await refusals(metrics), { headers_timeout: 2 });
  });
});

test("a client that trickles its body is cut off at the request's deadline (408, counted), nothing applied", async () => {
  const held = heldWrites();
  held.release();
  await withServer(
    { service: held.service, limits: { headersTimeoutMs: 200, bodyTimeoutMs: 600 } },
    async (port, metrics) => {
      const c = rawConnection(port);
      const started = Date.now();
      c.write("PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n");
      // One byte every 50 ms: each comes well within the headers' deadline, the whole never in time.
      const timer = setInterval(() => c.write("a"), 50);
      try {
        assert.ok(await c.untilClosed(), "the trickling client is closed");
      } finally {
        clearInterval(timer);
      }
      const took = Date.now() - started;
      assert.ok(took >= 550 && took < 2500, `cut off after ${took} ms`);
      assert.match(c.got, /^HTTP\/1\.1 408 /);
      assert.match(c.got, /"the request's body did not arrive in time"/);
      assert.equal(held.entered(), 0, "nothing reached the service");
      assert.deepEqual(await refusals(metrics), { body_timeout: 1 });
      const text = await metrics.registry.getSingleMetricAsString("ringstore_requests_total");
      assert.match(text, /op="put",status="408"[^\n]* 1/);
    },
  );
});

test("connections past the cap get 503 overloaded (200 for /health) and are closed; the cap frees as they go", async () => {
  await withServer(
    { limits: { maxConnections: 3, headersTimeoutMs: 10_000, bodyTimeoutMs: 10_000 } },
    async (port, metrics, api) => {
      // Three idle connections hold the cap.
      const idle = [rawConnection(port), rawConnection(port), rawConnection(port)];
      await connectionsHeld(api, 3);
      const over = rawConnection(port);
      over.write(PUT_K);
      await over.until(/\r\n\r\n.*\}/s);
      assert.match(over.got, /^HTTP\/1\.1 503 /);
      assert.match(over.got, /\r\nconnection: close\r\n/i);
      assert.match(over.got, /\r\nretry-after: 1\r\n/i);
      assert.match(over.got, /"error":"overloaded".*"limit":"connections","max":3,"applied":false/);
      assert.ok(await over.untilClosed());
      const health = rawConnection(port);
      health.write(HEALTH);
      assert.match(await health.until(/\r\n\r\n.*\}/s), /^HTTP\/1\.1 200 .*\{"status":"ok"\}$/s);
      assert.ok(await health.untilClosed());
      // One that sends nothing is closed within a second.
      const silent = rawConnection(port);
      const t0 = Date.now();
      assert.ok(await silent.untilClosed(3000), "closed");
      assert.ok(Date.now() - t0 < 2500);
      assert.equal(silent.got, "");
      assert.deepEqual(await refusals(metrics), { connections: 3 });
      // One idle connection goes: a new one is served.
      idle[0]!.destroy();
      await connectionsHeld(api, 2);
      const fresh = rawConnection(port);
      fresh.write(PUT_K);
      assert.match(await fresh.until(/\r\n\r\n/), /^HTTP\/1\.1 204 /);
      const text = await metrics.registry.getSingleMetricAsString("ringstore_api_connections");
      assert.match(text, /ringstore_api_connections\{node="t"\} 3/);
      fresh.destroy();
      for (const c of idle) c.destroy();
    },
  );
});

test("requests past the in-flight cap get 503 overloaded at once, not applied; /health answers; a slot frees when its work ends", async () => {
  const held = heldWrites();
  await withServer({ service: held.service, limits: { maxInFlight: 2 } }, async (port, metrics) => {
    const a = rawConnection(port);
    const b = rawConnection(port);
    a.write(PUT_K);
    b.write(PUT_K);
    await until("two writes in the service", () => held.entered() === 2);
    const c = rawConnection(port);
    c.write(PUT_K);
    const got = await c.until(/\r\n\r\n.*\}/s);
    assert.match(got, /^HTTP\/1\.1 503 /);
    assert.match(got, /\r\nretry-after: 1\r\n/i);
    assert.match(got, /"error":"overloaded".*"limit":"requests_in_flight","max":2,"applied":false/);
    assert.doesNotMatch(got, /connection: close/i, "the connection stays usable");
    c.write(HEALTH);
    assert.match(await c.until(/\{"status":"ok"\}/), /HTTP\/1\.1 200 /);
    assert.equal(held.entered(), 2, "the refused write never reached the service");
    // A client that goes away does not free its slot while the node still works for it.
    a.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const d = rawConnection(port);
    d.write(PUT_K);
    assert.match(await d.until(/\r\n\r\n.*\}/s), /^HTTP\/1\.1 503 /);
    const inFlight = await metrics.registry.getSingleMetricAsString("ringstore_api_requests_in_flight");
    assert.match(inFlight, / 2$/m);
    held.release();
    assert.match(await b.until(/\r\n\r\n/), /^HTTP\/1\.1 204 /);
    await until("the slots to free", async () =>
      / 0$/m.test(await metrics.registry.getSingleMetricAsString("ringstore_api_requests_in_flight")),
    );
    c.write(PUT_K);
    assert.match(await c.until(/HTTP\/1\.1 204 /), /HTTP\/1\.1 204 /);
    assert.deepEqual(await refusals(metrics), { in_flight: 2 });
    const text = await metrics.registry.getSingleMetricAsString("ringstore_requests_total");
    assert.match(text, /op="put",status="503"[^\n]* 2/);
    for (const x of [b, c, d]) x.destroy();
  });
});
