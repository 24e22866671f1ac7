/**
 * The HTTP layer alone (api/http-api.ts) over a service the test controls: what it answers when the
 * service fails, and how it stops. The contract as a whole is tested on a real node (single-node.test.ts).
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { test } from "node:test";
import { type ApiDeps, buildHttpApi, createApi, type HttpApi, serveApi } from "../../src/api/http-api.js";
import type { NodeMetrics } from "../../src/api/metrics.js";
import type { KvService, WriteOutcome } from "../../src/replication/coordinator.js";
import { OK_READ, OK_WRITE, testDeps, testMetrics } from "./api-support.js";

async function withApi(
  service: KvService,
  fn: (api: HttpApi, port: number, metrics: NodeMetrics) => Promise<void>,
  more: Partial<ApiDeps> = {},
): Promise<void> {
  const metrics = testMetrics();
  const api = buildHttpApi(testDeps(service, metrics, more));
  const port = await api.listen("127.0.0.1", 0);
  try {
    await fn(api, port, metrics);
  } finally {
    await api.close();
  }
}

/**
 * A service whose writes wait until `release()`; `inService` resolves once a write has reached it.
 */
function heldWrites(): { service: KvService; inService: Promise<void>; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let entered!: () => void;
  const inService = new Promise<void>((r) => {
    entered = r;
  });
  const service: KvService = {
    get: async () => OK_READ,
    write: async () => {
      entered();
      await gate;
      return OK_WRITE;
    },
  };
  return { service, inService, release };
}

/** Resolves once the server holds no connection (it has seen every client close). */
async function noConnections(api: HttpApi): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const n = await new Promise<number>((resolve, reject) =>
      api.server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
    );
    if (n === 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("the server still holds a connection after 5 s");
}

/** A one-byte PUT of key k, as raw HTTP/1.1. */
const PUT_K = "PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv";

/** Runs `fn` with one raw connection to `port`, destroyed afterwards (also when `fn` fails). */
async function withConnection(port: number, fn: (c: ReturnType<typeof connection>) => Promise<void>) {
  const c = connection(port);
  try {
    await fn(c);
  } finally {
    c.destroy();
  }
}

/** One connection: send raw requests, read raw answers. */
function connection(port: number) {
  const s = net.connect(port, "127.0.0.1");
  let got = "";
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  s.on("data", (d) => {
    got += d.toString("latin1");
    wake();
  });
  s.on("close", () => {
    closed = true;
    wake();
  });
  s.on("error", () => undefined);
  return {
    write: (text: string) => s.write(text),
    /** Waits (up to 5 s) until what arrived matches, or the connection closed. */
    async until(re: RegExp): Promise<string> {
      const end = Date.now() + 5000;
      while (!re.test(got) && !closed && Date.now() < end)
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      return got;
    },
    get closed() {
      return closed;
    },
    /** Waits (up to 5 s) until the server closes the connection; whether it did. */
    async untilClosed(): Promise<boolean> {
      await this.until(/$^/);
      return closed;
    },
    destroy: () => s.destroy(),
  };
}

test("a service that fails gives 500 internal for GET, PUT and DELETE, counted under that status", async () => {
  const boom = async (): Promise<never> => {
    throw new Error("disk on fire");
  };
  await withApi({ get: boom, write: boom }, async (_api, port, metrics) => {
    for (const [method, body] of [
      ["GET", undefined],
      ["PUT", "value"],
      ["DELETE", undefined],
    ] as const) {
      const r = await fetch(`http://127.0.0.1:${port}/kv/k`, {
        method,
        body,
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(r.status, 500, method);
      const j = (await r.json()) as { error: string; message: string };
      assert.equal(j.error, "internal");
      assert.match(j.message, /disk on fire/);
    }
    const text = await metrics.registry.getSingleMetricAsString("ringstore_requests_total");
    for (const op of ["get", "put", "delete"])
      assert.match(text, new RegExp(`op="${op}",status="500"[^\\n]* 1`));
  });
});

test("a write refused by an overloaded key lock gives 503 overloaded, saying it was not applied", async () => {
  const overloaded: WriteOutcome = { kind: "overloaded", limit: "waiters_per_key", max: 256 };
  await withApi({ get: async () => OK_READ, write: async () => overloaded }, async (_api, port) => {
    for (const method of ["PUT", "DELETE"]) {
      const r = await fetch(`http://127.0.0.1:${port}/kv/k`, {
        method,
        body: method === "PUT" ? "value" : undefined,
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(r.status, 503, method);
      assert.equal(r.headers.get("retry-after"), "1");
      const j = (await r.json()) as Record<string, unknown>;
      assert.equal(j.error, "overloaded");
      assert.equal(j.applied, false);
      assert.equal(j.limit, "waiters_per_key");
      assert.equal(j.max, 256);
      assert.match(String(j.message), /too many writes waiting.*NOT applied.*retry/);
    }
  });
});

test("stopping: a request sent on an idle keep-alive connection gets 503 stopping, not a reset", async () => {
  await withApi({ get: async () => OK_READ, write: async () => OK_WRITE }, async (api, port) =>
    withConnection(port, async (c) => {
      c.write(PUT_K);
      assert.match(await c.until(/\r\n\r\n/), /^HTTP\/1\.1 204 /);
      // The connection is idle when the stop begins; the client sends its next write on it at once, as
      // a client that has just picked it from its pool does. Closing idle connections at once would
      // answer it with a reset: the client could not tell whether the write was applied.
      const closing = api.close();
      c.write(PUT_K);
      const got = await c.until(/"stopping":true/);
      const second = got.slice(got.indexOf("HTTP/1.1", 5));
      assert.match(second, /^HTTP\/1\.1 503 /);
      assert.match(second, /\r\nconnection: close\r\n/i);
      assert.match(second, /"error":"unavailable"/);
      await closing;
      assert.ok(await c.untilClosed(), "the server closed the connection after its 503");
    }),
  );
});

test("stopping: the request in flight finishes and its answer closes the connection; close() waits for it", async () => {
  const { service, inService, release } = heldWrites();
  await withApi(service, async (api, port) =>
    withConnection(port, async (c) => {
      c.write(PUT_K);
      await inService; // the write is in the service when the stop begins
      let closedApi = false;
      const closing = api.close().then(() => {
        closedApi = true;
      });
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(closedApi, false, "close() waits for the request in flight");
      release();
      const got = await c.until(/\r\n\r\n/);
      assert.match(got, /^HTTP\/1\.1 204 /);
      assert.match(got, /\r\nconnection: close\r\n/i, "a keep-alive client sends nothing more on it");
      await closing;
      assert.ok(await c.untilClosed(), "the server closed the connection");
    }),
  );
});

test("every query parameter counts, however many come before it", async () => {
  await withApi({ get: async () => OK_READ, write: async () => OK_WRITE }, async (_api, port) => {
    const many = Array.from({ length: 1200 }, (_, i) => `p${i}=1`).join("&");
    const r = await fetch(`http://127.0.0.1:${port}/kv/k?${many}&r=0`, { signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: string }).error, "bad_parameter");
  });
});

test("a request whose client goes away before the answer is counted under 499", async () => {
  const { service, inService, release } = heldWrites();
  await withApi(service, async (api, port, metrics) => {
    const c = connection(port);
    c.write(PUT_K);
    await inService;
    c.destroy();
    await noConnections(api); // the server has seen the close
    release();
    const count = async () =>
      /op="put",status="499"[^\n]* 1/.test(
        await metrics.registry.getSingleMetricAsString("ringstore_requests_total"),
      );
    for (let i = 0; i < 100 && !(await count()); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(await count(), "counted under 499");
  });
});

test("membership operations: accepted is 202 with the answer, refused 409, unavailable 503, an error 500", async () => {
  const answers = {
    leave: [
      { kind: "accepted", answer: { node: "t", status: "leaving", remaining: 3 } },
      { kind: "refused", reason: "too few would remain" },
      { kind: "unavailable", reason: "the claimant did not answer" },
    ],
    remove: [
      { kind: "accepted", answer: { node: "t", removed: "x", remaining: 2 } },
      { kind: "refused", reason: "x is up" },
      { kind: "unavailable", reason: "the claimant did not answer" },
    ],
  } as const;
  let i = 0;
  const asked: unknown[] = [];
  await withApi(
    { get: async () => OK_READ, write: async () => OK_WRITE },
    async (_api, port) => {
      const post = async (path: string) => {
        const r = await fetch(`http://127.0.0.1:${port}${path}`, {
          method: "POST",
          signal: AbortSignal.timeout(5000),
        });
        return [r.status, await r.json()];
      };
      for (const [op, path, refused] of [
        ["leave", "/cluster/leave?force=true", "leave_refused"],
        ["remove", "/cluster/remove?id=x", "remove_refused"],
      ] as const) {
        i = 0;
        assert.deepEqual(await post(path), [202, answers[op][0].answer]);
        assert.deepEqual(await post(path), [409, { error: refused, message: answers[op][1].reason }]);
        assert.deepEqual(await post(path), [503, { error: "unavailable", message: answers[op][2].reason }]);
        const [status, body] = await post(path);
        assert.equal(status, 500);
        assert.equal((body as { error: string }).error, "internal");
      }
    },
    {
      leave: async (force) => {
        asked.push(["leave", force]);
        if (i === 3) throw new Error("disk on fire");
        return answers.leave[i++]!;
      },
      remove: async (id, force) => {
        asked.push(["remove", id, force]);
        if (i === 3) throw new Error("disk on fire");
        return answers.remove[i++]!;
      },
    },
  );
  assert.deepEqual(asked, [
    ...Array.from({ length: 4 }, () => ["leave", true]),
    ...Array.from({ length: 4 }, () => ["remove", "x", false]),
  ]);
});

test("starting: a bound API answers 503 starting (nothing done) until the node serves it", async () => {
  const metrics = testMetrics();
  const api = createApi({ maxKeyBytes: 1024, maxValueBytes: 1024, metrics });
  const port = await api.listen("127.0.0.1", 0);
  try {
    for (const init of [
      { method: "GET" },
      { method: "PUT", body: "v" },
      { method: "GET", path: "/health" },
    ]) {
      const res = await fetch(`http://127.0.0.1:${port}${init.path ?? "/kv/k"}`, init);
      assert.equal(res.status, 503, init.method);
      const body = (await res.json()) as { error: string; starting?: boolean };
      assert.equal(body.error, "unavailable");
      assert.equal(body.starting, true);
    }
    const writes: string[] = [];
    const service: KvService = {
      get: async () => OK_READ,
      write: async (key) => {
        writes.push(Buffer.from(key).toString());
        return OK_WRITE;
      },
    };
    serveApi(api, testDeps(service, metrics));
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/kv/k2`, { method: "PUT", body: "v" })).status, 204);
    assert.deepEqual(writes, ["k2"]);
  } finally {
    await api.close();
  }
});
