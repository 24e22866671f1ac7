/**
 * The live nodes the fuzzers run against: real `ringstore start` processes (the built dist/), each a
 * cluster of one (N=R=W=1), one for the peer fuzzer and one for the API fuzzer (so that members the
 * peer fuzzer gossips in never reach the API's answers). Torn down by `close()`.
 */
import { readFileSync } from "node:fs";
import * as net from "node:net";
import { peerKeysOf } from "../../src/node/cluster-key.js";
import { decodeKeyFile } from "../../src/node/cluster-key-file.js";
import { peerKeys } from "../../src/transport/peer-keys.js";
import { connectTls } from "../../src/transport/peer-tls.js";
import { TestCluster } from "../cluster/harness.js";
import type { LiveConnection, LiveTarget } from "./peer-frames.js";

const ONE = [
  "--n",
  "1",
  "--r",
  "1",
  "--w",
  "1",
  "--max-value-bytes",
  "1024",
  "--api-headers-timeout",
  "1000",
];
const OTHER = peerKeys(Buffer.alloc(32, 0x5a));

export interface FuzzTargets {
  readonly peer: LiveTarget;
  readonly api: string;
  /** The nodes' output, for a report. */
  output(): string;
  /** Throws if a node exited (a crash is a finding), with its output. */
  checkAlive(): void;
  close(): Promise<void>;
}

function wrap(socket: net.Socket): LiveConnection {
  const chunks: Buffer[] = [];
  let closed = false;
  socket.on("data", (d: Buffer) => chunks.push(d));
  socket.on("error", () => undefined);
  const done = new Promise<void>((r) =>
    socket.once("close", () => {
      closed = true;
      r();
    }),
  );
  return {
    write: (b) => {
      if (!socket.destroyed) socket.write(b);
    },
    received: () => Buffer.concat(chunks),
    closed: done,
    isClosed: () => closed,
    destroy: () => socket.destroy(),
  };
}

export async function startFuzzTargets(): Promise<FuzzTargets> {
  const cluster = new TestCluster(["--gossip-interval", "200", "--timeout", "500"]);
  const p = await cluster.start("a0", { args: ONE });
  const keys = peerKeysOf(decodeKeyFile(readFileSync(cluster.keyFile!, "utf8"), cluster.keyFile!));
  // The API fuzzer's node is a cluster of its own, with its own key.
  const apiCluster = new TestCluster(["--gossip-interval", "200", "--timeout", "500"]);
  const a = await apiCluster.start("a1", { args: ONE });
  const status = (await (await fetch(cluster.url("a0", "/status"))).json()) as { cluster: { id: string } };
  const [host, port] = ["127.0.0.1", Number(p.peer.split(":")[1])];
  const checkAlive = () => {
    for (const [c, id] of [
      [cluster, "a0"],
      [apiCluster, "a1"],
    ] as const) {
      const child = c.nodes.get(id)!.child;
      if (child === undefined || child.exitCode !== null || child.signalCode !== null)
        throw new Error(`node ${id} exited (${child?.exitCode ?? "?"}):\n${c.nodes.get(id)!.output}`);
    }
  };
  const peer: LiveTarget = {
    clusterId: status.cluster.id,
    async connect(how) {
      if (how === "plain") {
        const s = net.connect({ host, port });
        await new Promise<void>((resolve, reject) => {
          s.once("connect", resolve);
          s.once("error", reject);
        });
        return wrap(s);
      }
      const s = connectTls(net.connect({ host, port }), (how === "insider" ? keys : OTHER).current);
      const c = wrap(s);
      await new Promise<void>((resolve) => {
        s.once("secureConnect", resolve);
        s.once("error", () => resolve());
      });
      return c;
    },
    async alive() {
      checkAlive();
      for (const url of [cluster.url("a0", "/health"), apiCluster.url("a1", "/health")]) {
        const r = await fetch(url);
        if (r.status !== 200) throw new Error(`${url}: ${r.status}`);
      }
    },
    rss() {
      const pid = p.child!.pid!;
      return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
    },
  };
  return {
    peer,
    api: a.api,
    output: () => `${p.output}\n${a.output}`,
    checkAlive,
    close: async () => {
      await cluster.shutdown();
      await apiCluster.shutdown();
    },
  };
}
