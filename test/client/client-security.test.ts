/**
 * The client library's `token` and `ca` options and `https://` nodes, against the API in this process
 * (the contract end to end, through the CLI and real nodes, is test/cluster/api-security.test.ts): the
 * token goes with every request (keys, /status, /ring, leave, remove); https is checked against the CA;
 * a failed handshake is `tls_error` saying what to check, and sends nothing (a write goes elsewhere).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { newToken, TokenSet } from "../../src/api/tokens.js";
import { RingstoreClient, RingstoreError } from "../../src/client/client.js";
import type { KvService } from "../../src/replication/coordinator.js";
import { OK_READ, OK_WRITE, withServer } from "../api/api-support.js";
import { makeTestPki, opensslMissing } from "../api/tls-fixture.js";

const read = newToken("read", "", 0);
const admin = newToken("admin", "", 0);
const tokens = new TokenSet([read.entry, admin.entry]);

/** The API's port in the first test (its ring names it). */
let port = 0;

const isError = (status: number, code: string) => (e: unknown) =>
  e instanceof RingstoreError && e.status === status && e.code === code;

test("the token goes with every request: keys, status, ring routing, leave and remove", async () => {
  const writes: string[] = [];
  const service: KvService = {
    get: async () => OK_READ,
    write: async (key) => {
      writes.push(Buffer.from(key).toString());
      return OK_WRITE;
    },
  };
  const ring = {
    version: 1,
    partitions: 1,
    n: 1,
    owners: ["t"],
    members: [] as { id: string; api: string; zone: null; weight: number; state: string }[],
  };
  const asked: string[] = [];
  await withServer(
    {
      service,
      tokens,
      deps: {
        ring: () =>
          ({
            ...ring,
            members: [{ id: "t", api: `127.0.0.1:${port}`, zone: null, weight: 1, state: "up" }],
          }) as never,
        leave: async () => {
          asked.push("leave");
          return { kind: "accepted", answer: { node: "t", status: "leaving", remaining: 2 } } as never;
        },
        remove: async (id) => {
          asked.push(`remove ${id}`);
          return { kind: "accepted", answer: { node: "t", removed: id, remaining: 2 } } as never;
        },
      },
    },
    async (p) => {
      port = p;
      const none = new RingstoreClient(`127.0.0.1:${p}`);
      const reader = new RingstoreClient(`127.0.0.1:${p}`, { token: read.token, routing: "partition-aware" });
      const boss = new RingstoreClient(`http://127.0.0.1:${p}`, { token: admin.token });
      try {
        await assert.rejects(none.get("k"), isError(401, "unauthorized"));
        await assert.rejects(none.status(), isError(401, "unauthorized"));
        assert.equal((await reader.get("k")).kind, "value");
        assert.deepEqual((await reader.route("k")).replicas, ["t"], "the ring was fetched with the token");
        await assert.rejects(reader.put("k", "v"), isError(403, "forbidden"));
        await assert.rejects(reader.leave(`127.0.0.1:${p}`), isError(403, "forbidden"));
        assert.deepEqual(writes, []);
        assert.deepEqual(await reader.status(`127.0.0.1:${p}`), {});
        await boss.put("k", "v");
        assert.deepEqual(writes, ["k"]);
        assert.deepEqual(await boss.leave(`127.0.0.1:${p}`, { force: true }), {
          node: "t",
          status: "leaving",
          remaining: 2,
        });
        assert.deepEqual((await boss.remove(`127.0.0.1:${p}`, "x")).removed, "x");
        assert.deepEqual(asked, ["leave", "remove x"]);
      } finally {
        await Promise.all([none.close(), reader.close(), boss.close()]);
      }
    },
  );
});

test("nodes are all https:// or all http://; a token HTTP cannot carry is refused before sending", () => {
  assert.throws(() => new RingstoreClient(["https://127.0.0.1:1", "http://127.0.0.1:2"]), RangeError);
  assert.throws(() => new RingstoreClient("127.0.0.1:1", { token: "a\nb" }), isError(0, "bad_argument"));
});

const noOpenssl = opensslMissing();
const dir = mkdtempSync(path.join(tmpdir(), "ringstore-client-tls-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("https: with the CA it works; without it, or against a plain node, tls_error says what to check", {
  skip: noOpenssl,
}, async () => {
  const pki = makeTestPki(dir, "client");
  await withServer({ tls: { cert: pki.cert, key: pki.key } }, async (tlsPort) => {
    await withServer({}, async (plainPort) => {
      const good = new RingstoreClient(`https://127.0.0.1:${tlsPort}`, { ca: pki.ca });
      const noCa = new RingstoreClient(`https://127.0.0.1:${tlsPort}`);
      const wrongScheme = new RingstoreClient(`https://127.0.0.1:${plainPort}`, { ca: pki.ca });
      const plainToTls = new RingstoreClient(`127.0.0.1:${tlsPort}`);
      try {
        await good.put("k", "v");
        assert.equal((await good.get("k")).kind, "value");
        assert.deepEqual(await good.status(`https://127.0.0.1:${tlsPort}`), {});
        await assert.rejects(good.status(`http://127.0.0.1:${tlsPort}`), RangeError);
        await assert.rejects(
          noCa.put("k", "v"),
          (e: unknown) =>
            isError(0, "tls_error")(e) &&
            /pass the CA that signed the nodes' certificates/.test((e as Error).message),
        );
        await assert.rejects(
          wrongScheme.get("k"),
          (e: unknown) =>
            isError(0, "tls_error")(e) && /does this node serve https\?/.test((e as Error).message),
        );
        await assert.rejects(
          plainToTls.get("k"),
          (e: unknown) =>
            isError(0, "unreachable")(e) && /is it https:\/\/HOST:PORT\?/.test((e as Error).message),
        );
      } finally {
        await Promise.all([good.close(), noCa.close(), wrongScheme.close(), plainToTls.close()]);
      }
    });
  });
});

test("https: a write whose handshake failed on one node goes to the next (nothing was sent)", {
  skip: noOpenssl,
}, async () => {
  const trusted = makeTestPki(dir, "trusted");
  const other = makeTestPki(dir, "other");
  const writes: string[] = [];
  const service: KvService = {
    get: async () => OK_READ,
    write: async (key) => {
      writes.push(Buffer.from(key).toString());
      return OK_WRITE;
    },
  };
  await withServer({ tls: { cert: other.cert, key: other.key }, service }, async (badPort) => {
    await withServer({ tls: { cert: trusted.cert, key: trusted.key }, service }, async (goodPort) => {
      const c = new RingstoreClient([`https://127.0.0.1:${badPort}`, `https://127.0.0.1:${goodPort}`], {
        ca: trusted.ca,
      });
      try {
        for (let i = 0; i < 4; i++) await c.put(`k${i}`, "v");
        assert.deepEqual(writes, ["k0", "k1", "k2", "k3"]);
      } finally {
        await c.close();
      }
    });
  });
});
