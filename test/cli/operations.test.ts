/**
 * The operator's commands through the built CLI, with real processes: `dev` with --n --r --w
 * --durability, its hints run as printed, a crashed node restarted; `start --config F` (TOML and JSON),
 * flags on the command line winning, unknown keys refused; `cluster leave` and `cluster remove`
 * following the handoff to its end.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { RingstoreClient } from "../../src/client/client.js";
import { http, TestCluster } from "../cluster/harness.js";
import { BIN, cli, cliOnTerminal, HAVE_SCRIPT } from "./support.js";

const root = mkdtempSync(path.join(tmpdir(), "ringstore-cli-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Whether 127.0.0.1:port can be bound now. */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** A base port for `dev --nodes n` whose API and peer ports are all free now. */
async function freeBase(n: number): Promise<number> {
  for (let i = 0; i < 50; i++) {
    // Below the ephemeral range (32768 up), where port-0 binds of other tests land.
    const base = 20_000 + Math.floor(Math.random() * 10_000);
    const ports = Array.from({ length: n }, (_, k) => [base + 1 + k, base + 1001 + k]).flat();
    if ((await Promise.all(ports.map(free))).every(Boolean)) return base;
  }
  throw new Error("no free base port found");
}

/** Waits until `fn` holds, polling. */
async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The words of a command line as printed in a hint (no quoting needed in the hints tested). */
const words = (line: string) => line.trim().split(/\s+/);

describe("ringstore dev", { timeout: 120_000 }, () => {
  let dev: ChildProcess | undefined;
  after(() => {
    if (dev !== undefined && dev.exitCode === null) dev.kill("SIGKILL");
  });

  test("takes --n --r --w --durability, prints hints that work with its ports, restarts a crashed node", async () => {
    const base = await freeBase(2);
    const data = path.join(root, "dev");
    dev = spawn(
      process.execPath,
      [BIN, "dev", "--nodes", "2", "--n", "2", "--r", "1", "--w", "1", "--durability", "none"].concat([
        "--base-port",
        String(base),
        "--data",
        data,
      ]),
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    dev.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    dev.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await until("the dev cluster to be up", () => out.includes("Ctrl-C stops every node."));
    assert.match(out, /local cluster of 2 node\(s\), N=2 R=1 W=1/);
    const s = (await http(`http://127.0.0.1:${base + 1}/status`)).json() as {
      cluster: { n: number; r: number; w: number };
    };
    assert.deepEqual([s.cluster.n, s.cluster.r, s.cluster.w], [2, 1, 1]);

    // The "try:" hints, run as printed (npx ringstore ... is this CLI): they reach this cluster's ports.
    const tryLine = /^try: (.*)$/m.exec(out)![1]!;
    const commands = tryLine.split(" && ").map((c) => words(c).slice(2));
    assert.equal(commands.length, 2);
    for (const c of commands)
      assert.ok(c.includes(`127.0.0.1:${base + (c[0] === "put" ? 1 : 2)}`), c.join(" "));
    assert.equal((await cli(commands[0]!)).code, 0);
    const got = await cli(commands[1]!);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout.toString(), "world");
    const status = /^ +npx ringstore (cluster status .*?);/m.exec(out)![1]!;
    assert.equal((await cli(words(status))).code, 0);

    // A node that crashes is started again, on the same ports with the same data, and says so.
    const pid = Number(/^ {2}n2 .* pid ([0-9]+)$/m.exec(out)![1]);
    process.kill(pid, "SIGKILL");
    await until("n2 to be restarted", () => /\[n2\] restarted after a crash \(pid [0-9]+\)/.test(out));
    assert.match(
      out,
      /\[n2\] crashed \(code null, signal SIGKILL\): restarting it in 1 s \(same data and ports\)/,
    );
    const again = await cli(["get", "hello", "--node", `127.0.0.1:${base + 2}`, "--r", "2"]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.toString(), "world");

    const exited = new Promise<number | null>((resolve) => dev!.on("exit", (code) => resolve(code)));
    dev.kill("SIGTERM");
    assert.equal(await exited, 0, out);
    for (const port of [base + 1, base + 2, base + 1001, base + 1002])
      assert.ok(await free(port), `port ${port} still taken after dev stopped`);
  });

  test("refuses an --n above the nodes it runs, and a bad --durability", async () => {
    const n = await cli(["dev", "--nodes", "2", "--n", "3", "--data", path.join(root, "dev-bad")]);
    assert.equal(n.code, 1);
    assert.match(n.stderr, /^ringstore: --n must be a whole number 1\.\.2, got "3"\n$/);
    const d = await cli(["dev", "--durability", "sometimes", "--data", path.join(root, "dev-bad")]);
    assert.equal(d.code, 1);
    assert.match(d.stderr, /--durability must be fsync, interval or none, got "sometimes"/);
  });
});

describe("ringstore start --config F", { timeout: 120_000 }, () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  });

  /** Starts a node with these arguments; resolves with its API address once it serves. */
  function start(args: string[]): Promise<{ api: string; child: ChildProcess }> {
    const child = spawn(process.execPath, [BIN, "start", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`did not start: ${out}`)), 20_000);
      const take = (d: Buffer) => {
        out += d.toString();
        const m = /serving the API on http:\/\/([0-9.]+:[0-9]+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve({ api: m[1]!, child });
        }
      };
      child.stdout!.on("data", take);
      child.stderr!.on("data", take);
      child.on("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
    });
  }

  async function stop(child: ChildProcess): Promise<void> {
    child.removeAllListeners("exit");
    const exited = new Promise((resolve) => child.on("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }

  for (const kind of ["toml", "json"] as const) {
    test(`a ${kind.toUpperCase()} file holds start's flags; flags on the command line win`, async () => {
      const data = path.join(root, `cfg-${kind}`);
      const file = path.join(root, `node.${kind}`);
      const settings = {
        id: "c1",
        api: "127.0.0.1:0",
        peer: "127.0.0.1:0",
        data,
        n: 1,
        r: 1,
        w: 1,
        durability: "none",
        zone: "from-file",
        weight: 3,
        "anti-entropy": false,
        "hint-window": 60000,
      };
      writeFileSync(
        file,
        kind === "json"
          ? JSON.stringify(settings)
          : Object.entries(settings)
              .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
              .join("\n"),
      );
      const { api, child } = await start(["--config", file, "--zone", "from-flag"]);
      try {
        const s = (await http(`http://${api}/status`)).json() as {
          node: { id: string };
          cluster: { n: number; r: number; w: number };
          members: { id: string; zone: string | null; weight: number }[];
          antiEntropy: { enabled: boolean };
        };
        assert.equal(s.node.id, "c1");
        assert.deepEqual([s.cluster.n, s.cluster.r, s.cluster.w], [1, 1, 1]);
        const me = s.members.find((m) => m.id === "c1")!;
        assert.equal(me.zone, "from-flag");
        assert.equal(me.weight, 3);
        assert.equal(s.antiEntropy.enabled, false);
      } finally {
        await stop(child);
      }
    });
  }

  test("unknown keys, values of the wrong kind and missing flags are refused with a sentence; nothing starts", async () => {
    const data = path.join(root, "cfg-bad");
    const cases: [string, string, RegExp][] = [
      [
        "unknown.toml",
        `id = "x"\napi = "127.0.0.1:0"\npeer = "127.0.0.1:0"\ndata = "${data}"\ncolour = "blue"\nreplicas = 3\n`,
        /^ringstore: .*unknown\.toml: "colour", "replicas" are not flags of ringstore start \(a key is a flag's long name without its dashes, such as max-value-bytes; see ringstore start --help\)\n$/,
      ],
      [
        "kind.toml",
        `id = "x"\napi = "127.0.0.1:0"\npeer = "127.0.0.1:0"\ndata = "${data}"\nforce-rejoin = "yes"\n`,
        /^ringstore: .*kind\.toml: "force-rejoin" is a switch: true or false, got "yes" \(see ringstore start --help\)\n$/,
      ],
      [
        "missing.json",
        JSON.stringify({ id: "x", api: "127.0.0.1:0" }),
        /^ringstore: ringstore start needs --peer, --data \(on the command line, or in the file of --config\)\n$/,
      ],
      ["broken.toml", `id = "x\n`, /^ringstore: the config file .*broken\.toml is not valid TOML: /],
    ];
    for (const [name, text, expected] of cases) {
      const file = path.join(root, name);
      writeFileSync(file, text);
      const r = await cli(["start", "--config", file]);
      assert.equal(r.code, 1, name);
      assert.match(r.stderr, expected, name);
      assert.ok(!existsSync(data), `${name}: the data directory was created`);
    }
  });
});

describe("cluster leave and cluster remove follow the handoff to its end", { timeout: 180_000 }, () => {
  const c = new TestCluster();
  after(() => c.shutdown());

  test("leave: progress until the node has left; remove: the remaining members' handoff until done", async () => {
    const ids = ["a", "b", "c", "d"];
    await c.start("a");
    for (const id of ids.slice(1)) await c.start(id, { join: "a" });
    for (const id of ids) await c.converged(id, ids);
    const client = new RingstoreClient(c.nodes.get("a")!.api, { connections: 8 });
    try {
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < 3000) await client.put(`key-${next++}`, "v".repeat(200));
        }),
      );
    } finally {
      await client.close();
    }

    const leaveArgs = ["cluster", "leave", "--node", c.nodes.get("d")!.api];
    if (HAVE_SCRIPT) {
      // On a terminal: one line redrawn in place (\r), then the end on a line of its own.
      const r = await cliOnTerminal(leaveArgs, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.screen);
      assert.match(r.screen, /^node d is leaving: its partitions go to the 3 other member\(s\)/);
      assert.match(r.screen, /\rhandoff of d: (\[[#-]{30}\] +[0-9]+% )?[0-9,]+(\/[0-9,]+)? keys/);
      const end = r.screen.slice(r.screen.lastIndexOf("\r\x1b[K") + 4);
      assert.match(end, /^node d has left the cluster(; it stops by itself| and stopped)\r\n$/);
    } else {
      const r = await cli(leaveArgs, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.toString(), /^handoff of d: [0-9,]+( of ~[0-9,]+)? keys/m);
      assert.match(r.stdout.toString(), /node d has left the cluster/);
    }
    assert.equal(await c.exited("d"), 0);

    // c is gone for good: removed on its behalf, and the others' handoff followed (plain lines here).
    await c.kill("c");
    await c.until("a to see c down", async () => {
      const s = (await http(c.url("a", "/status"))).json() as { members: { id: string; state: string }[] };
      return s.members.find((m) => m.id === "c")?.state === "down";
    });
    const r = await cli(["cluster", "remove", "--node", c.nodes.get("a")!.api, "--id", "c", "--force"], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, /^member c is removed: its partitions go to the 2 remaining member\(s\)/);
    assert.match(out, /\nhandoff after removing c done on a, b\n$/);
    // Every key is on both remaining nodes now (N=3 on 2 nodes: each holds all).
    for (const k of ["key-0", "key-1500", "key-2999"])
      assert.equal((await http(c.url("b", `/kv/${k}?r=2`))).status, 200, k);
  });
});
