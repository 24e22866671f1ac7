/**
 * What the parts of a replicated put cost, each alone, in CPU time per operation: a lower bound under
 * `npm run bench:cluster`'s figures, and the budget its target leaves.
 *
 *   npm run bench:costs                      # npm run build && node --import tsx bench/costs.ts (~1.5 min)
 *   node --import tsx bench/costs.ts --seconds 3     # after npm run build: the node's code runs from dist/
 *
 * The node's code runs from dist/; the harness (the bare http server, the clients, the service stub)
 * runs under tsx, in this process and in the forked children.
 *
 * Each part runs alone on the machine, 32 operations in flight (as bench:cluster's clients), a warm-up,
 * then `--seconds` measured; CPU is process.cpuUsage of every process involved (all their threads):
 *   http-bare     a node:http server answering 204 to a 100-byte PUT, driven by a hand-written
 *                 keep-alive HTTP/1.1 client (bench:cluster's lean load generator does the same):
 *                 server and client CPU per request. The reference of the run.
 *   http-api      the same through the node's own API layer (api/http-api.ts: routing, key and
 *                 parameter parsing, body limit, the context token's MAC, metrics), its service
 *                 answering every write at once: what the API adds to a bare server.
 *   http-api-auth      the same with tokens required (--auth-file): each request carries a bearer token,
 *                      hashed and compared (api/access.ts).
 *   http-api-tls       the same over TLS (--tls-cert, --tls-key: ECDSA P-256, TLS 1.3), keep-alive
 *                      connections: the record layer's cost per request, the handshakes done in warm-up.
 *   http-api-tls-auth  both.
 *   (Pick parts with --parts NAME,NAME; the TLS parts make a throwaway CA with the openssl command.)
 *   peer-ping     a `ping` request and its answer between two processes over the node's TCP transport
 *                 (framing, MessagePack, ids, deadlines): both sides' CPU per round trip.
 *   peer-store    the same with a `store` message of a 100-byte value's sibling set, answered at once.
 *   peer-ping-plain, peer-store-plain   the same in plaintext (--insecure-peer-plaintext): what peer
 *                 TLS adds to a round trip (the nodes run peer-ping and peer-store).
 *   replica-merge Replica.merge on the LSM engine (fsync, group commit, flush and compaction threads):
 *                 what a replica does for each `store` it gets, durable before it returns.
 *   replica-write Replica.coordinate: what the coordinator does for its own copy of a put.
 * Then the sum for one put at N=3 (one HTTP request and its client, the coordinator's write, two peer
 * stores and two replica merges), as a rate if every core did nothing else, against the target of
 * bench:cluster (12,000 puts/s on this machine's cores). The parts run alone: in the cluster they share
 * two cores with three other busy processes, and pay for it (cache, scheduling), so the cluster's CPU
 * per put is higher than this sum.
 *
 * Every loop is bounded in time; child processes are stopped by PID (also on error); temp dirs removed.
 */
import { type ChildProcess, fork } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import * as tls from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { TcpTransport as TcpTransportType } from "../src/transport/tcp-transport.js";
import type { RequestHandler } from "../src/transport/transport.js";
import { makeTestPki } from "../test/api/tls-fixture.js";

const SELF = fileURLToPath(import.meta.url);

// The parts run the built code (dist/, as the nodes do), typed by its sources. Run from src under tsx,
// esbuild's keepNames wraps each closure the code creates in a __name() call, which costs CPU on every
// request (docs/performance.md, "built JavaScript against tsx").
const DIST = path.resolve(path.dirname(SELF), "../dist");
if (!fs.existsSync(path.join(DIST, "api/http-api.js")))
  throw new Error(`${DIST} is missing: run \`npm run build\` first (npm run bench:costs does)`);
const load = <T>(rel: string): Promise<T> => import(pathToFileURL(path.join(DIST, rel)).href) as Promise<T>;
const { buildHttpApi } = await load<typeof import("../src/api/http-api.js")>("api/http-api.js");
const { newToken, TokenSet } = await load<typeof import("../src/api/tokens.js")>("api/tokens.js");
const { NodeMetrics } = await load<typeof import("../src/api/metrics.js")>("api/metrics.js");
const { Replica } = await load<typeof import("../src/replication/replica.js")>("replication/replica.js");
const { systemRuntime } =
  await load<typeof import("../src/runtime/system-runtime.js")>("runtime/system-runtime.js");
const { workerCompactionExecutor } = await load<typeof import("../src/storage/compaction-worker.js")>(
  "storage/compaction-worker.js",
);
const { NodeFileSystem } = await load<typeof import("../src/storage/fs/node-file-system.js")>(
  "storage/fs/node-file-system.js",
);
const { LsmEngine } =
  await load<typeof import("../src/storage/lsm/lsm-engine.js")>("storage/lsm/lsm-engine.js");
const { TcpTransport } = await load<typeof import("../src/transport/tcp-transport.js")>(
  "transport/tcp-transport.js",
);
const { peerKeys } = await load<typeof import("../src/transport/peer-keys.js")>("transport/peer-keys.js");
const { EMPTY_VECTOR, update } = await load<typeof import("../src/versioning/dvv.js")>("versioning/dvv.js");
const { encodeSiblings } = await load<typeof import("../src/versioning/object-codec.js")>(
  "versioning/object-codec.js",
);
const TARGET_PUTS = 12_000;
const CONCURRENCY = 32;
const VALUE = {
  data: Buffer.alloc(100, 97),
  contentType: "application/octet-stream",
  deleted: false,
  writtenAtMs: 0,
};

const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

/**
 * A node's TCP transport on a free loopback port, in cluster "bench": with TLS and a cluster key as nodes
 * run, or in plaintext for the -plain parts.
 */
function listenPeer(nodeId: string, handler: RequestHandler, plain = false): Promise<TcpTransportType> {
  const rt = systemRuntime();
  return TcpTransport.listen({
    host: "127.0.0.1",
    port: 0,
    nodeId,
    clusterId: "bench",
    timers: rt.timers,
    clock: rt.clock,
    handler,
    ...(plain ? { security: "plaintext" } : { security: "tls", keys: peerKeys(Buffer.alloc(32, 1)) }),
  });
}

// ------------------------------------------------------------------ child: the server side of a part

/** What an API part adds: tokens, TLS (from the environment the parent gives its child). */
function apiVariant(kind: string): { auth: boolean; tls: boolean } {
  return { auth: kind.endsWith("-auth"), tls: kind.includes("-tls") };
}

async function child(kind: string): Promise<void> {
  let port = 0;
  let close: () => Promise<void>;
  if (kind === "http-bare") {
    const srv = http.createServer((req, res) => {
      req.on("data", () => undefined);
      req.on("end", () => {
        res.statusCode = 204;
        res.end();
      });
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    port = (srv.address() as net.AddressInfo).port;
    close = () => new Promise((r) => srv.close(() => r()));
  } else if (kind.startsWith("http-api")) {
    const done = update([], EMPTY_VECTOR, "a1", VALUE);
    const v = apiVariant(kind);
    const security = {
      ...(v.tls
        ? {
            tls: {
              cert: fs.readFileSync(process.env.BENCH_TLS_CERT!),
              key: fs.readFileSync(process.env.BENCH_TLS_KEY!),
            },
          }
        : {}),
      // The token the parent sends, among a hundred others (looked up by id).
      ...(v.auth
        ? {
            tokens: new TokenSet([
              ...Array.from({ length: 100 }, () => newToken("write", "", 0).entry),
              JSON.parse(process.env.BENCH_TOKEN_ENTRY!),
            ]),
          }
        : {}),
    };
    const api = buildHttpApi(
      {
        service: {
          get: async () => ({ kind: "ok", siblings: done.set, replied: 1 }),
          write: async () => ({ kind: "ok", written: done.written, set: done.set, acked: 1 }),
        },
        secret: Buffer.alloc(32, 7),
        n: 1,
        r: 1,
        w: 1,
        requestTimeoutMs: 1000,
        maxTimeoutMs: 60_000,
        limits: { maxKeyBytes: 1024, maxValueBytes: 1 << 20, maxContextChars: 8192 },
        metrics: new NodeMetrics(
          () => {
            throw new Error("not scraped in this benchmark");
          },
          { node: "bench" },
        ),
        now: () => 0,
        status: () => Promise.reject(new Error("/status is not asked in this benchmark")),
        ring: () => {
          throw new Error("/ring is not asked in this benchmark");
        },
      },
      security,
    );
    port = await api.listen("127.0.0.1", 0);
    close = () => api.close();
  } else {
    const t = await listenPeer(
      "server",
      async (_from, body) => (body.kind === "store" ? { kind: "stored" } : { kind: "pong" }),
      kind.endsWith("-plain"),
    );
    port = Number(t.address.slice(t.address.lastIndexOf(":") + 1));
    close = () => t.close();
  }
  process.send!({ port });
  process.on("message", (m: string) => {
    if (m === "cpu") process.send!({ cpu: cpuNow() });
    else void close().then(() => process.exit(0));
  });
}

// ------------------------------------------------------------------ parent: drive and measure

interface Result {
  name: string;
  ops: number;
  seconds: number;
  /** CPU per operation, microseconds: the side that serves, and the side that asks. */
  serverUs: number;
  clientUs: number;
}

const children = new Set<ChildProcess>();

async function withChild<T>(
  kind: string,
  fn: (port: number, cpu: () => Promise<number>) => Promise<T>,
  env: Record<string, string> = {},
): Promise<T> {
  const c = fork(SELF, ["--child", kind], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    env: { ...process.env, ...env },
  });
  children.add(c);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      c.once("message", (m: { port: number }) => resolve(m.port));
      c.once("exit", (code) => reject(new Error(`${kind} server exited with ${code}`)));
    });
    const cpu = () =>
      new Promise<number>((resolve) => {
        c.once("message", (m: { cpu: number }) => resolve(m.cpu));
        c.send("cpu");
      });
    return await fn(port, cpu);
  } finally {
    c.send("stop");
    await new Promise<void>((r) => {
      const t = setTimeout(() => {
        c.kill("SIGKILL");
        r();
      }, 5000);
      c.once("exit", () => {
        clearTimeout(t);
        r();
      });
    });
    children.delete(c);
  }
}

/** Runs `op` with CONCURRENCY in flight for warmup + seconds; counts the measured window only. */
async function drive(
  op: () => Promise<void>,
  warmupS: number,
  seconds: number,
  serverCpu: () => Promise<number>,
): Promise<{ ops: number; seconds: number; serverUs: number; clientUs: number }> {
  let measuring = false;
  let ops = 0;
  const endAt = performance.now() + (warmupS + seconds) * 1000;
  let s0 = 0;
  let c0 = 0;
  let t0 = 0;
  const start = setTimeout(async () => {
    s0 = await serverCpu();
    c0 = cpuNow();
    t0 = performance.now();
    ops = 0;
    measuring = true;
  }, warmupS * 1000);
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < endAt) {
        await op();
        ops++;
      }
    }),
  );
  clearTimeout(start);
  const el = (performance.now() - t0) / 1000;
  const c1 = cpuNow();
  const s1 = await serverCpu();
  if (!measuring || ops === 0) throw new Error("nothing measured: raise --seconds");
  return { ops, seconds: el, serverUs: (s1 - s0) / ops, clientUs: (c1 - c0) / ops };
}

/**
 * A minimal keep-alive HTTP/1.1 client: one connection per in-flight slot, 100-byte PUTs, 204s back;
 * over TLS (checked against `ca`) and with a bearer token when given.
 */
function httpClient(
  port: number,
  o: { readonly ca?: Buffer; readonly token?: string } = {},
): { op: () => Promise<void>; close: () => void } {
  const body = Buffer.alloc(100, 97);
  const auth = o.token === undefined ? "" : `Authorization: Bearer ${o.token}\r\n`;
  const free: { s: net.Socket; wait?: () => void; buf: string }[] = [];
  const all: net.Socket[] = [];
  let n = 0;
  for (let i = 0; i < CONCURRENCY; i++) {
    const s =
      o.ca === undefined
        ? net.connect(port, "127.0.0.1")
        : tls.connect({ port, host: "127.0.0.1", ca: o.ca, servername: "localhost" });
    s.setNoDelay(true);
    const slot: { s: net.Socket; wait?: () => void; buf: string } = { s, buf: "" };
    s.on("data", (d: Buffer) => {
      slot.buf += d.toString("latin1");
      const j = slot.buf.indexOf("\r\n\r\n");
      if (j >= 0) {
        slot.buf = slot.buf.slice(j + 4);
        const w = slot.wait;
        slot.wait = undefined;
        free.push(slot);
        w?.();
      }
    });
    free.push(slot);
    all.push(s);
  }
  return {
    op: () =>
      new Promise<void>((resolve) => {
        const slot = free.pop()!;
        slot.wait = resolve;
        slot.s.write(
          Buffer.concat([
            Buffer.from(
              `PUT /kv/k${n++} HTTP/1.1\r\nHost: bench\r\n${auth}Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n`,
            ),
            body,
          ]),
        );
      }),
    close: () => {
      for (const s of all) s.destroy();
    },
  };
}

/** A throwaway CA and server certificate for the TLS parts (made once, removed at exit). */
let pki: { dir: string; ca: Buffer; cert: string; key: string } | undefined;
function benchPki(): NonNullable<typeof pki> {
  if (pki !== undefined) return pki;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-costs-tls-"));
  const made = makeTestPki(dir, "bench");
  pki = { dir, ca: made.ca, cert: made.certFile, key: made.keyFile };
  return pki;
}

async function httpPart(kind: string, warmup: number, seconds: number): Promise<Result> {
  const v = kind === "http-bare" ? { auth: false, tls: false } : apiVariant(kind);
  const env: Record<string, string> = {};
  const client: { ca?: Buffer; token?: string } = {};
  if (v.tls) {
    const p = benchPki();
    env.BENCH_TLS_CERT = p.cert;
    env.BENCH_TLS_KEY = p.key;
    client.ca = p.ca;
  }
  if (v.auth) {
    const t = newToken("write", "bench", 0);
    env.BENCH_TOKEN_ENTRY = JSON.stringify(t.entry);
    client.token = t.token;
  }
  return withChild(
    kind,
    async (port, cpu) => {
      const c = httpClient(port, client);
      try {
        return { name: kind, ...(await drive(c.op, warmup, seconds, cpu)) };
      } finally {
        c.close();
      }
    },
    env,
  );
}

type PeerKind = "peer-ping" | "peer-store" | "peer-ping-plain" | "peer-store-plain";

async function peerPart(kind: PeerKind, warmup: number, seconds: number): Promise<Result> {
  return withChild(kind, async (port, cpu) => {
    const t = await listenPeer("client", async () => ({ kind: "pong" }), kind.endsWith("-plain"));
    const set = encodeSiblings(update([], EMPTY_VECTOR, "a1", VALUE).set);
    let k = 0;
    const body = () =>
      kind.startsWith("peer-ping")
        ? ({ kind: "ping" } as const)
        : ({ kind: "store", key: Buffer.from(`key-${k++}`), set } as const);
    try {
      const r = await drive(
        async () => {
          await t.request(`127.0.0.1:${port}`, body(), 5000);
        },
        warmup,
        seconds,
        cpu,
      );
      return { name: kind, ...r };
    } finally {
      await t.close();
    }
  });
}

async function replicaPart(
  kind: "replica-merge" | "replica-write",
  warmup: number,
  seconds: number,
): Promise<Result> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringstore-costs-"));
  const rt = systemRuntime();
  const engine = await LsmEngine.open({
    dir,
    fs: new NodeFileSystem(),
    timers: rt.timers,
    options: { durability: "fsync", walSyncOnEventLoop: false },
    compactor: workerCompactionExecutor(),
  });
  try {
    const replica = new Replica(engine, "bench1", 64);
    // What a replica receives: a set another node versioned (prepared outside the measured loop).
    const incoming = update([], EMPTY_VECTOR, "other1", VALUE).set;
    let k = 0;
    const op =
      kind === "replica-merge"
        ? async () => {
            await replica.merge(Buffer.from(`key-${k++}`), incoming);
          }
        : async () => {
            await replica.coordinate(Buffer.from(`key-${k++}`), EMPTY_VECTOR, VALUE);
          };
    // All in this process: the "server" CPU is ours (every thread of it), the client side none.
    const r = await drive(op, warmup, seconds, async () => cpuNow());
    return { name: kind, ops: r.ops, seconds: r.seconds, serverUs: r.serverUs, clientUs: 0 };
  } finally {
    await engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string", default: "8" },
      warmup: { type: "string", default: "4" },
      parts: { type: "string" },
      child: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.child !== undefined) return child(values.child);
  if (values.help) {
    console.log(
      "usage: node --import tsx bench/costs.ts [--seconds S (8)] [--warmup S (4)] [--parts NAME,NAME (all)]",
    );
    return;
  }
  const seconds = Number(values.seconds);
  const warmup = Number(values.warmup);
  if (!(seconds > 0) || !(warmup >= 0)) throw new Error("--seconds must be > 0 and --warmup >= 0");
  const cpus = os.cpus();
  console.log("machine");
  console.log(`  cpu        ${cpus[0]?.model ?? "?"}, ${cpus.length} cores`);
  console.log(`  os         ${os.type()} ${os.release()} ${os.arch()}, node ${process.version}`);
  console.log(`  temp dir   ${os.tmpdir()}`);
  console.log(
    `each part alone: ${CONCURRENCY} in flight, ${warmup} s warm-up + ${seconds} s; CPU us per operation\n`,
  );
  const rows: Result[] = [];
  const parts: [string, () => Promise<Result>][] = [
    ["http-bare", () => httpPart("http-bare", warmup, seconds)],
    ["http-api", () => httpPart("http-api", warmup, seconds)],
    ["http-api-auth", () => httpPart("http-api-auth", warmup, seconds)],
    ["http-api-tls", () => httpPart("http-api-tls", warmup, seconds)],
    ["http-api-tls-auth", () => httpPart("http-api-tls-auth", warmup, seconds)],
    ["peer-ping", () => peerPart("peer-ping", warmup, seconds)],
    ["peer-store", () => peerPart("peer-store", warmup, seconds)],
    ["peer-ping-plain", () => peerPart("peer-ping-plain", warmup, seconds)],
    ["peer-store-plain", () => peerPart("peer-store-plain", warmup, seconds)],
    ["replica-merge", () => replicaPart("replica-merge", warmup, seconds)],
    ["replica-write", () => replicaPart("replica-write", warmup, seconds)],
  ];
  const chosen = values.parts === undefined ? undefined : new Set(values.parts.split(","));
  for (const name of chosen ?? [])
    if (!parts.some(([n]) => n === name)) throw new Error(`--parts: no part named ${name}`);
  const show = (r: Result, ref: Result | undefined) => {
    const total = r.serverUs + r.clientUs;
    const ratio =
      ref === undefined ? "" : `${(total / (ref.serverUs + ref.clientUs)).toFixed(2)}x ${ref.name}`;
    console.log(
      `  ${r.name.padEnd(18)} ${String(Math.round(r.ops / r.seconds)).padStart(7)}/s  server ${r.serverUs.toFixed(1).padStart(6)}  client ${r.clientUs.toFixed(1).padStart(6)}  total ${total.toFixed(1).padStart(6)}  ${ratio}`,
    );
  };
  for (const [name, part] of parts) {
    if (chosen !== undefined && !chosen.has(name)) continue;
    const r = await part();
    rows.push(r);
    show(r, rows[0]);
  }
  const api = rows.find((r) => r.name === "http-api");
  for (const r of rows)
    if (api !== undefined && r.name.startsWith("http-api-"))
      console.log(
        `  ${r.name} adds ${(r.serverUs - api.serverUs).toFixed(1)} us of server CPU and ${(r.clientUs - api.clientUs).toFixed(1)} us of client CPU per request to http-api`,
      );
  const needed = ["http-api", "replica-write", "peer-store", "replica-merge"];
  if (!needed.every((n) => rows.some((r) => r.name === n))) return;
  const by = (n: string) => rows.find((r) => r.name === n)!;
  const total = (r: Result) => r.serverUs + r.clientUs;
  const put =
    total(by("http-api")) +
    total(by("replica-write")) +
    2 * total(by("peer-store")) +
    2 * total(by("replica-merge"));
  const cores = cpus.length;
  console.log(
    `\none put at N=3, parts alone (API request and its client, coordinator's write, 2 peer stores, 2 replica merges): ${put.toFixed(0)} us`,
  );
  console.log(
    `  with all ${cores} cores doing nothing else: at most ${Math.round((cores * 1e6) / put)} puts/s; ` +
      `the target (${TARGET_PUTS}/s) leaves ${((cores * 1e6) / TARGET_PUTS).toFixed(0)} us per put: ` +
      `${(put / ((cores * 1e6) / TARGET_PUTS)).toFixed(2)}x the budget, before the versioning, routing and ` +
      "quorum logic and the cost of sharing the cores",
  );
}

const onSignal = () => {
  for (const c of children) c.kill("SIGKILL");
  process.exit(1);
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("exit", () => {
  if (pki !== undefined) fs.rmSync(pki.dir, { recursive: true, force: true });
});
main().catch((err: unknown) => {
  for (const c of children) c.kill("SIGKILL");
  console.error(err);
  process.exit(1);
});
