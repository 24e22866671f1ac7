/**
 * The client's JSON and string codecs (`client.json`, `client.string`) and AbortSignal on its calls,
 * against a real node process (N=R=W=1), and against a node that never answers (for aborts in flight).
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  JSON_CONTENT_TYPE,
  RingstoreClient,
  RingstoreError,
  STRING_CONTENT_TYPE,
} from "../../src/client/client.js";
import { TestCluster } from "../cluster/harness.js";

/** A server that accepts requests and never answers; it tells when a request's connection closes. */
async function silentNode(): Promise<{
  addr: string;
  requests: () => number;
  closed: () => number;
  stop: () => Promise<void>;
}> {
  let requests = 0;
  let closed = 0;
  const server = http.createServer((req) => {
    requests++;
    req.socket.on("close", () => {
      closed++;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    addr: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    closed: () => closed,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const rejectsWith = async (p: Promise<unknown>, code: string) => {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RingstoreError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  });
};

describe("codecs and aborts against a real node", { timeout: 120_000 }, () => {
  const c = new TestCluster();
  let db: RingstoreClient;
  let other: RingstoreClient;

  before(async () => {
    await c.start("a", { args: ["--n", "1", "--r", "1", "--w", "1"] });
    db = new RingstoreClient(c.nodes.get("a")!.api);
    other = new RingstoreClient(c.nodes.get("a")!.api);
  });
  after(async () => {
    await db?.close();
    await other?.close();
    await c.shutdown();
  });

  test("json and string values round-trip, stored with their content types", async () => {
    const cart = { items: ["milk", "eggs"], total: 3.5, note: null };
    await db.json.put("cart", cart);
    const got = await db.json.get("cart");
    assert.equal(got.kind, "value");
    assert.deepEqual(got.kind === "value" && got.value, cart);
    const raw = await db.get("cart");
    assert.equal(raw.kind === "value" && raw.contentType, JSON_CONTENT_TYPE);

    await db.string.put("greeting", "héllo");
    const s = await db.string.get("greeting");
    assert.equal(s.kind === "value" && s.value, "héllo");
    assert.equal(
      (await db.get("greeting")).kind === "value" &&
        ((await db.get("greeting")) as { contentType: string }).contentType,
      STRING_CONTENT_TYPE,
    );
    assert.deepEqual(await db.json.get("nothing-here"), { kind: "not_found", context: undefined });
  });

  test("a value that is not what the codec reads is a bad_value error naming the key", async () => {
    await db.put("not-json", "{oops");
    await db.put("not-utf8", Buffer.from([0xff, 0xfe]));
    await rejectsWith(db.json.get("not-json"), "bad_value");
    await assert.rejects(
      db.json.get("not-json"),
      /the value of "not-json" is not JSON \(stored as text\/plain/,
    );
    await rejectsWith(db.string.get("not-utf8"), "bad_value");
    await rejectsWith(db.json.put("k", undefined), "bad_argument");
  });

  test("update applies the function to the value and writes it back; undefined deletes", async () => {
    const r1 = await db.json.update("counter", (n) => ((n as number | undefined) ?? 0) + 1);
    assert.deepEqual([r1.value, r1.attempts], [1, 1]);
    for (let i = 0; i < 4; i++) await db.json.update("counter", (n) => (n as number) + 1);
    const got = await db.json.get("counter");
    assert.equal(got.kind === "value" && got.value, 5);
    const del = await db.json.update("counter", () => undefined);
    assert.equal(del.value, undefined);
    assert.equal((await db.get("counter")).kind, "not_found");
    // Nothing to delete: nothing written.
    assert.deepEqual(await db.json.update("counter", () => undefined), {
      value: undefined,
      context: undefined,
      attempts: 1,
    });
  });

  test("siblings are resolved by the merge function, or refused clearly without one", async () => {
    await db.json.put("set", ["a"]);
    await other.json.put("set", ["b"]); // no context: concurrent, a sibling
    assert.equal((await db.json.get("set")).kind, "siblings");
    await assert.rejects(
      db.json.update("set", (v) => v),
      (err: unknown) =>
        err instanceof RingstoreError &&
        err.code === "siblings" &&
        /"set" holds 2 concurrent versions: pass a merge function \(options\.merge\)/.test(err.message),
    );
    const union = (values: unknown[]) => [...new Set(values.flat() as string[])].sort();
    const r = await db.json.update("set", (v) => [...(v as string[]), "c"], { merge: union });
    assert.deepEqual(r.value, ["a", "b", "c"]);
    const got = await db.json.get("set");
    assert.equal(got.kind, "value");
    assert.deepEqual(got.kind === "value" && got.value, ["a", "b", "c"]);
  });

  test("a write that lands between update's read and write: fn is applied again to it, once in the end", async () => {
    await db.json.put("balance", 100);
    let calls = 0;
    const r = await db.json.update("balance", async (v) => {
      calls++;
      // Someone else writes between our read and our write (a blind write: concurrent with ours).
      if (calls === 1) await other.json.put("balance", 500);
      return (v as number) - 30;
    });
    assert.equal(calls, 2);
    assert.equal(r.attempts, 2);
    assert.equal(r.value, 470);
    const got = await db.json.get("balance");
    assert.equal(got.kind, "value", JSON.stringify(got));
    assert.equal(got.kind === "value" && got.value, 470);
  });

  test("without the check (verify: false) the concurrent write stays as a sibling", async () => {
    await db.json.put("balance2", 100);
    let calls = 0;
    await db.json.update(
      "balance2",
      async (v) => {
        if (++calls === 1) await other.json.put("balance2", 500);
        return (v as number) - 30;
      },
      { verify: false },
    );
    const got = await db.json.get("balance2");
    assert.equal(got.kind, "siblings");
    assert.deepEqual(got.kind === "siblings" && got.values.sort(), [500, 70]);
  });

  test("concurrent writes that keep winning: a bounded number of attempts, then conflict", async () => {
    await db.string.put("hot", "0");
    let calls = 0;
    await rejectsWith(
      db.string.update(
        "hot",
        async (v) => {
          calls++;
          await other.put("hot", `other-${calls}`, { context: undefined });
          return `${v}+`;
        },
        { maxAttempts: 3, merge: (vs) => vs.sort()[0]! },
      ),
      "conflict",
    );
    assert.equal(calls, 3);
  });

  test("an aborted signal: nothing is sent, every call rejects with aborted", async () => {
    const signal = AbortSignal.abort(new Error("user gave up"));
    const before = await db.status();
    for (const call of [
      () => db.get("k", { signal }),
      () => db.put("k", "v", { signal }),
      () => db.delete("k", { signal }),
      () => db.update("k", (v) => v[0], { signal }),
      () => db.json.get("k", { signal }),
      () => db.json.update("k", (v) => v, { signal }),
      () => db.status(undefined, { signal }),
      () => db.listKeys({ signal }),
      () => db.keys({ signal }).next(),
      () => db.leave(c.nodes.get("a")!.api, { signal }),
    ]) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof RingstoreError && err.code === "aborted", String(err));
        assert.match(err.message, /was aborted: user gave up$/);
        return true;
      });
    }
    const after = await db.status();
    assert.deepEqual(
      (after as { members: unknown[] }).members.length,
      (before as { members: unknown[] }).members.length,
      "the node did not leave",
    );
  });
});

describe("aborting a call in flight", { timeout: 60_000 }, () => {
  test("cancels the HTTP request (its connection closes), tries no other node, and rejects at once", async () => {
    const silent = await silentNode();
    const spare = await silentNode();
    // Two seeds: an abort must not move on to the second one.
    const db = new RingstoreClient([silent.addr, spare.addr], { httpTimeoutMs: 30_000, connections: 1 });
    try {
      for (const call of [
        (signal: AbortSignal) => db.get("k", { signal }),
        (signal: AbortSignal) => db.put("k", "v", { signal }),
        (signal: AbortSignal) => db.status(undefined, { signal }),
        (signal: AbortSignal) => db.status(silent.addr, { signal }),
      ]) {
        const closedBefore = silent.closed() + spare.closed();
        const ac = new AbortController();
        const t0 = Date.now();
        const p = call(ac.signal);
        await new Promise((r) => setTimeout(r, 200));
        ac.abort();
        await rejectsWith(p, "aborted");
        assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
        for (let i = 0; i < 100 && silent.closed() + spare.closed() === closedBefore; i++)
          await new Promise((r) => setTimeout(r, 10));
        assert.equal(
          silent.closed() + spare.closed(),
          closedBefore + 1,
          "the request's connection was closed",
        );
      }
      assert.equal(silent.requests() + spare.requests(), 4, "each call reached one node only");
    } finally {
      await db.close();
      await silent.stop();
      await spare.stop();
    }
  });
});
