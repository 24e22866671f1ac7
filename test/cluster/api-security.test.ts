/**
 * The API's security through the CLI and real node processes (issue 16, "Client API"): tokens made by
 * `ringstore auth add-token` (kept hashed, mode 0600); a client without a token gets 401, a `read` token
 * cannot write (403), an `admin` token makes a node leave; /health stays open. TLS: the CLI with
 * `--ca-file` (or RINGSTORE_CA_FILE) and the client with `ca` talk to an https node; a plain-HTTP request
 * to it gets nothing. A node's data directory is 0700 and node.json (the cluster secret) 0600.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { RingstoreClient, RingstoreError } from "../../src/client/client.js";
import { makeTestPki, opensslMissing } from "../api/tls-fixture.js";
import { TestCluster } from "./harness.js";

const BIN = path.resolve("dist/cli/main.js");

/** Runs the CLI to its end: exit code, stdout, stderr. `env` adds to this process's environment. */
function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const clean = { ...process.env };
    delete clean.RINGSTORE_TOKEN;
    delete clean.RINGSTORE_CA_FILE;
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...clean, ...env },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

const mode = (p: string) => statSync(p).mode & 0o777;

/** `ringstore auth add-token`: the token it prints once. */
async function addToken(file: string, role: string): Promise<string> {
  const r = await cli(["auth", "add-token", "--role", role, "--file", file, "--name", `${role} test`]);
  assert.equal(r.code, 0, r.err);
  const token = r.out.trim();
  assert.match(token, /^rs_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  return token;
}

/** Waits until `c` (its token and TLS) sees every listed member up through node `api`. */
async function converged(c: RingstoreClient, api: string, ids: string[]): Promise<void> {
  const end = Date.now() + 15_000;
  for (;;) {
    const s = (await c.status(api).catch(() => undefined)) as
      | { members: { id: string; state: string }[] }
      | undefined;
    if (s !== undefined && ids.every((id) => s.members.some((m) => m.id === id && m.state === "up"))) return;
    if (Date.now() > end) assert.fail(`${api} does not see ${ids.join(",")} up`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("API tokens through the CLI", () => {
  const cluster = new TestCluster();
  after(() => cluster.shutdown());

  test("no token: 401; read cannot write: 403; write writes; admin makes a node leave; /health is open", async () => {
    const file = path.join(cluster.root, "tokens.json");
    const read = await addToken(file, "read");
    const write = await addToken(file, "write");
    const admin = await addToken(file, "admin");
    assert.equal(mode(file), 0o600, "the token file is the owner's only");
    const stored = readFileSync(file, "utf8");
    for (const t of [read, write, admin]) assert.ok(!stored.includes(t.slice(16)), "only hashes are kept");
    const listed = await cli(["auth", "list", "--file", file]);
    assert.match(listed.out, /read .*read test\n.*write .*write test\n.*admin .*admin test/s);

    const args = ["--auth-file", file, "--n", "1", "--r", "1", "--w", "1"];
    const n1 = await cluster.start("n1", { args });
    for (let i = 0; i < 100 && !/the API requires a token from/.test(n1.output); i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.match(n1.output, /the API requires a token from .*tokens\.json on every request but GET \/health/);
    const n2 = await cluster.start("n2", { join: "n1", args });
    const boss = new RingstoreClient(n1.api, { token: admin });
    try {
      await converged(boss, n1.api, ["n1", "n2"]);

      // The data directory and node.json are the owner's only.
      for (const n of [n1, n2]) {
        assert.equal(mode(n.dataDir), 0o700, n.dataDir);
        assert.equal(mode(path.join(n.dataDir, "node.json")), 0o600);
        assert.equal(mode(path.join(n.dataDir, "storage")), 0o700);
      }

      // No token: 401, from the CLI and from the client; /health answers.
      const none = await cli(["put", "k", "v", "--node", n1.api]);
      assert.equal(none.code, 1);
      assert.match(none.err, /401 unauthorized: this node requires a token/);
      const anon = new RingstoreClient(n1.api);
      await assert.rejects(anon.get("k"), (e: unknown) => e instanceof RingstoreError && e.status === 401);
      await anon.close();
      const health = await fetch(`http://${n1.api}/health`);
      assert.equal(health.status, 200);
      assert.equal((await fetch(`http://${n1.api}/status`)).status, 401);

      // read: reads, cannot write.
      const denied = await cli(["put", "k", "v", "--node", n1.api], { RINGSTORE_TOKEN: read });
      assert.equal(denied.code, 1);
      assert.match(denied.err, /403 forbidden: token [0-9a-f]{12} has role read: PUT \/kv\/ needs write/);
      const missing = await cli(["get", "k", "--node", n2.api, "--token", read]);
      assert.match(missing.err, /not found/);

      // write: writes (through either node), cannot make a node leave.
      const put = await cli(["put", "k", "hello", "--node", n2.api], { RINGSTORE_TOKEN: write });
      assert.equal(put.code, 0, put.err);
      const got = await cli(["get", "k", "--node", n1.api], { RINGSTORE_TOKEN: read });
      assert.equal(got.out, "hello");
      const refused = await cli(["cluster", "leave", "--node", n2.api, "--no-wait"], {
        RINGSTORE_TOKEN: write,
      });
      assert.equal(refused.code, 1);
      assert.match(
        refused.err,
        /refused to leave: token [0-9a-f]{12} has role write: POST \/cluster\/leave needs admin/,
      );

      // admin: n2 hands off, leaves and stops.
      const status = await cli(["cluster", "status", "--node", n1.api], { RINGSTORE_TOKEN: admin });
      assert.match(status.out, /n2\s+up/);
      const leave = await cli(["cluster", "leave", "--node", n2.api, "--token", admin]);
      assert.equal(leave.code, 0, `${leave.out}${leave.err}`);
      assert.match(leave.out, /node n2 has left the cluster/);
      assert.equal(await cluster.exited("n2", 30_000), 0);
      const after = await cli(["get", "k", "--node", n1.api], { RINGSTORE_TOKEN: read });
      assert.equal(after.out, "hello");
    } finally {
      await boss.close();
    }
  });
});

const noOpenssl = opensslMissing();

describe("API TLS through the CLI", { skip: noOpenssl }, () => {
  const cluster = new TestCluster();
  after(() => cluster.shutdown());

  test("the CLI with a CA file and the client with ca talk to an https node; plain HTTP gets nothing", async () => {
    const pki = makeTestPki(cluster.root);
    const file = path.join(cluster.root, "tokens.json");
    const token = await addToken(file, "write");
    const n1 = await cluster.start("n1", {
      args: [
        "--tls-cert",
        pki.certFile,
        "--tls-key",
        pki.keyFile,
        "--auth-file",
        file,
        "--n",
        "1",
        "--r",
        "1",
        "--w",
        "1",
      ],
    });
    assert.match(n1.output, /serving the API on https:\/\//);
    const node = `https://${n1.api}`;

    const put = await cli([
      "put",
      "k",
      "over tls",
      "--node",
      node,
      "--ca-file",
      pki.caFile,
      "--token",
      token,
    ]);
    assert.equal(put.code, 0, put.err);
    assert.match(put.out, /^ok, context: /);
    const got = await cli(["get", "k", "--node", node], {
      RINGSTORE_CA_FILE: pki.caFile,
      RINGSTORE_TOKEN: token,
    });
    assert.equal(got.out, "over tls");
    const status = await cli([
      "cluster",
      "status",
      "--node",
      node,
      "--ca-file",
      pki.caFile,
      "--token",
      token,
    ]);
    assert.match(status.out, /n1\s+up/);

    // Without the CA, the CLI says what to pass.
    const noCa = await cli(["get", "k", "--node", node, "--token", token]);
    assert.equal(noCa.code, 1);
    assert.match(noCa.err, /TLS with .* failed .*--ca-file F or RINGSTORE_CA_FILE/);

    const c = new RingstoreClient(node, { ca: readFileSync(pki.caFile), token });
    try {
      const r = await c.get("k");
      assert.equal(r.kind === "value" && r.value.toString(), "over tls");
    } finally {
      await c.close();
    }

    // Plain HTTP to the https port: not a byte back, the connection closed.
    const port = Number(n1.api.slice(n1.api.lastIndexOf(":") + 1));
    const received = await new Promise<{ bytes: number; closed: boolean }>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      let bytes = 0;
      s.on("data", (d: Buffer) => {
        bytes += d.length;
      });
      s.on("error", () => undefined);
      const timer = setTimeout(() => {
        s.destroy();
        resolve({ bytes, closed: false });
      }, 5000);
      s.on("close", () => {
        clearTimeout(timer);
        resolve({ bytes, closed: true });
      });
      s.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    });
    assert.deepEqual(received, { bytes: 0, closed: true });
    const plainCli = await cli(["get", "k", "--node", n1.api, "--token", token]);
    assert.equal(plainCli.code, 1);
    assert.match(plainCli.err, /cannot reach .*is it https:\/\/HOST:PORT\?/);
  });
});
