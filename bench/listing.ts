/**
 * bench:listing: what the key listing costs (src/listing), and what it does to client latency.
 *
 *   npm run bench:listing [-- --keys 20000 --sizes 3,4,6,9,12,24 --cluster-keys 50000 --seconds 6]
 *
 * 1. Cost model, in one process: clusters of each size (Q=1024, N=3, replicas on the memory engine,
 *    every key on its N replicas), listed to the end in pages of 1000 from the first node: phases,
 *    requests to replicas, and stored sets read per key listed (1.0 would be one look at each key).
 * 2. On real processes (3 nodes through the CLI, dist/): `--cluster-keys` keys written, then 8 clients
 *    reading random keys for `--seconds` without a listing and again while listings run back to back
 *    (pages of 1000); p50/p99 of the reads in each, and the listing's keys per second.
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { RingstoreClient } from "../src/client/client.js";
import { type ListingPosition, startPosition } from "../src/listing/cursor.js";
import { listPage } from "../src/listing/pager.js";
import { listReplicaKeys } from "../src/listing/replica-scan.js";
import { Replica } from "../src/replication/replica.js";
import { claim, PreferenceTable, partitionOf } from "../src/ring/ring.js";
import { MemoryEngine } from "../src/storage/memory-engine.js";
import { EMPTY_VECTOR } from "../src/versioning/dvv.js";
import { TestCluster } from "../test/cluster/harness.js";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "20000" },
    sizes: { type: "string", default: "3,4,6,9,12,24" },
    "cluster-keys": { type: "string", default: "50000" },
    seconds: { type: "string", default: "6" },
  },
});
const Q = 1024;
const N = 3;

async function costModel(nodes: number, keys: number): Promise<void> {
  const ids = Array.from({ length: nodes }, (_, i) => `n${String(i).padStart(2, "0")}`);
  const members = ids.map((id) => ({ id, weight: 1 }));
  const table = new PreferenceTable(claim(undefined, members, Q, N), members, N);
  const reps = new Map(ids.map((id) => [id, new Replica(new MemoryEngine(), `${id}.1`, 64)] as const));
  const value = { data: Buffer.from("v"), contentType: "x", deleted: false, writtenAtMs: 0 };
  for (let i = 0; i < keys; i++) {
    const k = Buffer.from(`key-${i}`);
    for (const id of table.forKey(k)) await reps.get(id)!.coordinate(k, EMPTY_VECTOR, value);
  }
  let scanned = 0;
  let asks = 0;
  let phases = 0;
  let listed = 0;
  let pages = 0;
  let pos: ListingPosition | null = startPosition(Q);
  const t0 = performance.now();
  while (pos !== null) {
    const out = await listPage(
      {
        selfId: ids[0]!,
        ring: () => ({ partitions: Q, replicasOf: (p) => table.forPartition(p) }),
        usable: () => true,
        ask: async (id, req) => {
          asks++;
          if (req.after === null) phases++;
          const a = await listReplicaKeys(req, reps.get(id)!, partitionOf, async () => undefined);
          scanned += a.scanned;
          return a;
        },
        clock: { now: () => 0 },
      },
      pos,
      { keys: 1000, bytes: 1 << 20, timeMs: 1e9, maxAsks: 64 },
    );
    if (out.kind !== "page") throw new Error("unavailable");
    listed += out.keys.length;
    pos = out.next;
    pages++;
  }
  const ms = performance.now() - t0;
  process.stdout.write(
    `${String(nodes).padStart(3)} nodes  ${listed} keys  ${pages} pages  ${phases} phases  ${asks} requests  ` +
      `${(scanned / keys).toFixed(2)} sets read per key  ${((ms * 1000) / scanned).toFixed(2)} us per set read\n`,
  );
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

async function readLoad(client: RingstoreClient, keys: number, ms: number): Promise<number[]> {
  const lat: number[] = [];
  const end = Date.now() + ms;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (Date.now() < end) {
        const t = performance.now();
        await client.get(`key-${Math.floor(Math.random() * keys)}`);
        lat.push(performance.now() - t);
      }
    }),
  );
  return lat;
}

async function onProcesses(keys: number, seconds: number): Promise<void> {
  const c = new TestCluster(["--gossip-interval", "200", "--down-after", "3000"]);
  const ids = ["a", "b", "c"];
  try {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ids) await c.converged(id, ids);
    const client = new RingstoreClient(
      ids.map((id) => c.nodes.get(id)!.api),
      { connections: 16 },
    );
    try {
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < keys) await client.put(`key-${next++}`, "v".repeat(100));
        }),
      );
      const quiet = await readLoad(client, keys, seconds * 1000);
      let stop = false;
      let listed = 0;
      const lister = new RingstoreClient(c.nodes.get("a")!.api, { connections: 1 });
      const t0 = performance.now();
      const listing = (async () => {
        while (!stop) for await (const _ of lister.keys({ pageSize: 1000 })) listed++;
      })();
      const busy = await readLoad(client, keys, seconds * 1000);
      stop = true;
      await listing;
      const listMs = performance.now() - t0;
      await lister.close();
      const line = (what: string, l: number[]) =>
        `${what}: ${l.length} reads, p50 ${pct(l, 0.5).toFixed(2)} ms, p99 ${pct(l, 0.99).toFixed(2)} ms\n`;
      process.stdout.write(line("reads alone          ", quiet));
      process.stdout.write(line("reads during listings", busy));
      process.stdout.write(
        `listings: ${listed} keys in ${(listMs / 1000).toFixed(1)} s, ${Math.round((listed * 1000) / listMs)} keys/s\n`,
      );
    } finally {
      await client.close();
    }
  } finally {
    await c.shutdown();
  }
}

process.stdout.write(`cost model: Q=${Q}, N=${N}, ${values.keys} keys, pages of 1000\n`);
for (const n of values.sizes.split(",").map(Number)) await costModel(n, Number(values.keys));
process.stdout.write(`\nreal processes: 3 nodes, ${values["cluster-keys"]} keys\n`);
await onProcesses(Number(values["cluster-keys"]), Number(values.seconds));
