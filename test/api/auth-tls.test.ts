/**
 * The API's gate (api/access.ts through api/http-server.ts) and its TLS, on the wire: without a valid
 * token 401 with WWW-Authenticate, a role that may not 403, nothing reaches the service either way;
 * /health stays open; with TLS a plain-HTTP request gets nothing and is counted; a renewed certificate
 * serves new connections; the connection cap holds for TLS connections too.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { newToken, TokenSet } from "../../src/api/tokens.js";
import type { KvService } from "../../src/replication/coordinator.js";
import { connectionsHeld, OK_READ, OK_WRITE, rawConnection, refusals, withServer } from "./api-support.js";
import { makeTestPki, opensslMissing } from "./tls-fixture.js";

const read = newToken("read", "", 0);
const write = newToken("write", "", 0);
const admin = newToken("admin", "", 0);
const tokens = new TokenSet([read.entry, write.entry, admin.entry]);

/** A service that counts what reaches it. */
function counting(): { service: KvService; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    service: {
      get: async () => {
        calls.push("get");
        return OK_READ;
      },
      write: async () => {
        calls.push("write");
        return OK_WRITE;
      },
    },
  };
}

const leaveAnswer = { kind: "accepted", answer: { node: "t", status: "leaving", remaining: 2 } } as const;

async function call(port: number, method: string, p: string, token?: string, body?: string) {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const r = await fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  return {
    status: r.status,
    headers: r.headers,
    text,
    json: () => JSON.parse(text) as Record<string, unknown>,
  };
}

test("without a valid token: 401 unauthorized with WWW-Authenticate, for every route but /health; nothing done", async () => {
  const { service, calls } = counting();
  await withServer({ service, tokens }, async (port, metrics) => {
    for (const [method, p] of [
      ["GET", "/kv/k"],
      ["PUT", "/kv/k"],
      ["DELETE", "/kv/k"],
      ["GET", "/status"],
      ["GET", "/ring"],
      ["GET", "/metrics"],
      ["POST", "/cluster/leave"],
      ["GET", "/nowhere"],
      ["POST", "/health"],
    ] as const) {
      const r = await call(port, method, p, undefined, method === "PUT" ? "v" : undefined);
      assert.equal(r.status, 401, `${method} ${p}`);
      assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="ringstore"');
      assert.equal(r.json().error, "unauthorized");
      assert.match(String(r.json().message), /Authorization: Bearer TOKEN/);
    }
    const bad = await call(port, "GET", "/kv/k", `rs_${read.entry.id}_${write.token.slice(16)}`);
    assert.equal(bad.status, 401);
    assert.equal(bad.headers.get("www-authenticate"), 'Bearer realm="ringstore", error="invalid_token"');
    assert.deepEqual(calls, [], "nothing reached the service");
    assert.equal((await call(port, "GET", "/health")).status, 200);
    assert.equal((await call(port, "HEAD", "/health")).status, 200);
    assert.deepEqual(await refusals(metrics), { unauthorized: 10 });
  });
});

test("a read token reads but cannot write (403); write writes but cannot leave; admin leaves", async () => {
  const { service, calls } = counting();
  const left: boolean[] = [];
  await withServer(
    {
      service,
      tokens,
      deps: {
        leave: async (force) => {
          left.push(force);
          return leaveAnswer;
        },
      },
    },
    async (port, metrics) => {
      assert.equal((await call(port, "GET", "/kv/k", read.token)).status, 200);
      assert.equal((await call(port, "GET", "/status", read.token)).status, 200);
      assert.equal((await call(port, "GET", "/ring", read.token)).status, 200);
      const denied = await call(port, "PUT", "/kv/k", read.token, "v");
      assert.equal(denied.status, 403);
      assert.deepEqual(denied.json(), {
        error: "forbidden",
        message: `token ${read.entry.id} has role read: PUT /kv/ needs write`,
        role: "read",
        needs: "write",
      });
      assert.equal((await call(port, "DELETE", "/kv/k", read.token)).status, 403);
      assert.deepEqual(calls, ["get"], "the refused writes never reached the service");
      assert.equal((await call(port, "PUT", "/kv/k", write.token, "v")).status, 204);
      assert.equal((await call(port, "POST", "/cluster/leave", write.token)).status, 403);
      assert.deepEqual(left, []);
      const ok = await call(port, "POST", "/cluster/leave?force=true", admin.token);
      assert.equal(ok.status, 202);
      assert.deepEqual(left, [true]);
      assert.equal((await call(port, "PUT", "/kv/k", admin.token, "v")).status, 204);
      assert.deepEqual(await refusals(metrics), { forbidden: 3 });
      const text = await metrics.registry.getSingleMetricAsString("ringstore_requests_total");
      assert.match(text, /op="put",status="403"[^\n]* 1/);
    },
  );
});

test("a refused request's body is read and dropped: the client reads the 401 and keeps its connection", async () => {
  await withServer({ tokens }, async (port) => {
    const c = rawConnection(port);
    try {
      const body = "x".repeat(600);
      c.write(`PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      assert.match(await c.until(/\r\n\r\n.*\}/s), /^HTTP\/1\.1 401 /);
      c.write(
        `PUT /kv/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${write.token}\r\ncontent-length: 1\r\n\r\nv`,
      );
      assert.match(await c.until(/HTTP\/1\.1 204 /), /HTTP\/1\.1 204 /);
      assert.equal(c.closed, false);
    } finally {
      c.destroy();
    }
  });
});

const noOpenssl = opensslMissing();
const dir = mkdtempSync(path.join(tmpdir(), "ringstore-tls-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("TLS: https works with the CA; a plain-HTTP request gets nothing and is counted", {
  skip: noOpenssl,
}, async () => {
  const pki = makeTestPki(dir, "a");
  await withServer({ tls: { cert: pki.cert, key: pki.key } }, async (port, metrics) => {
    const s = rawConnection(port, { ca: pki.ca });
    s.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    assert.match(await s.until(/\{"status":"ok"\}/), /^HTTP\/1\.1 200 /);
    s.destroy();
    const plain = rawConnection(port);
    plain.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    assert.ok(await plain.untilClosed(), "closed");
    assert.equal(plain.got, "", "not a byte back");
    const put = rawConnection(port);
    put.write("PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nv");
    assert.ok(await put.untilClosed(), "closed");
    assert.equal(put.got, "");
    assert.deepEqual(await refusals(metrics), { tls_handshake: 2 });
  });
});

test("TLS: a renewed certificate serves new connections", { skip: noOpenssl }, async () => {
  const a = makeTestPki(dir, "renew-a");
  const b = makeTestPki(dir, "renew-b");
  await withServer({ tls: { cert: a.cert, key: a.key } }, async (port, _metrics, api) => {
    const health = async (ca: Buffer) => {
      const c = rawConnection(port, { ca });
      c.write("GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
      await c.untilClosed();
      return /^HTTP\/1\.1 200 /.test(c.got);
    };
    assert.equal(await health(a.ca), true);
    assert.equal(await health(b.ca), false);
    api.renewTls({ cert: b.cert, key: b.key });
    assert.equal(await health(b.ca), true);
    assert.equal(await health(a.ca), false);
  });
});

test("TLS: connections past the cap get their 503 over TLS, and /health its 200", {
  skip: noOpenssl,
}, async () => {
  const pki = makeTestPki(dir, "cap");
  await withServer(
    { tls: { cert: pki.cert, key: pki.key }, limits: { maxConnections: 1 } },
    async (port, metrics, api) => {
      const first = rawConnection(port, { ca: pki.ca });
      first.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
      await first.until(/\{"status":"ok"\}/);
      await connectionsHeld(api, 1);
      const over = rawConnection(port, { ca: pki.ca });
      over.write("GET /kv/k HTTP/1.1\r\nhost: x\r\n\r\n");
      assert.match(await over.until(/\}$/), /^HTTP\/1\.1 503 .*"limit":"connections"/s);
      const health = rawConnection(port, { ca: pki.ca });
      health.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
      assert.match(await health.until(/\}$/), /^HTTP\/1\.1 200 /);
      assert.ok(await over.untilClosed());
      assert.ok(await health.untilClosed());
      assert.equal(first.closed, false);
      assert.deepEqual(await refusals(metrics), { connections: 2 });
      first.destroy();
    },
  );
});
