/**
 * The end of a run: converge the replicas the way a user can today, then read every replica's own copy.
 *
 * Converging. Anti-entropy is not built yet; read repair is. With every fault healed and every node
 * running and seen up by all, each key is read with r=N (every replica must answer) through each node
 * in turn, a few rounds with pauses: a coordinator sends the merged set to each replica whose answer
 * lacked part of it, after replying. The rounds stop early once a round reads the same siblings
 * everywhere and no repair happened (the read_repairs metric did not move).
 *
 * Reading one replica's copy. The API has no way to do it: every GET is coordinated, so even r=1 asks
 * every replica and merges what arrives first. So the nodes are stopped cleanly (SIGTERM: files synced
 * and closed), and each node's storage engine is opened from its data directory in this process
 * (LsmEngine, as test/cluster does), and every sibling set decoded (object-codec). That is exactly what
 * each replica would serve and keeps on disk, with the dots, so replica agreement is judged by dot.
 * A key's replicas are its preference list (the ring read from GET /ring before the stop); copies found
 * on other nodes are reported separately (strict quorums never put one there).
 */
import * as path from "node:path";
import { DATA } from "../../src/replication/keyspaces.js";
import { PreferenceTable } from "../../src/ring/ring.js";
import type { CartValue, FinalSibling, FinalState } from "../../src/sim/history.js";
import { NodeFileSystem } from "../../src/storage/fs/node-file-system.js";
import { LsmEngine } from "../../src/storage/lsm/lsm-engine.js";
import { decodeSiblings } from "../../src/versioning/object-codec.js";
import type { FaultCluster } from "./cluster.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface RingAnswer {
  partitions: number;
  n: number;
  owners: string[];
  members: { id: string; zone: string | null; weight: number }[];
}

export interface ConvergeReport {
  readonly rounds: number;
  /** Reads that did not succeed (status or error) during convergence. */
  readonly failedReads: number;
  readonly readRepairs: number;
}

/** The read repair counter once it has not moved for three samples 300 ms apart (at most ~15 s). */
async function repairsSettled(c: FaultCluster): Promise<number> {
  let last = await readRepairs(c);
  let still = 0;
  const end = Date.now() + 15_000;
  while (still < 3 && Date.now() < end) {
    await sleep(300);
    const now = await readRepairs(c);
    still = now === last ? still + 1 : 0;
    last = now;
  }
  return last;
}

async function readRepairs(c: FaultCluster): Promise<number> {
  let total = 0;
  for (const n of c.nodes) {
    try {
      const r = await fetch(`http://${n.api}/metrics`, { signal: AbortSignal.timeout(3000) });
      const text = await r.text();
      for (const m of text.matchAll(/^ringstore_read_repairs_total(?:\{[^}]*\})? ([0-9.e+]+)$/gm))
        total += Number(m[1]);
    } catch {
      // counted as no repairs: the rounds go on anyway
    }
  }
  return total;
}

/** Reads every key with r=all through every node, until a round changes nothing (at most `maxRounds`). */
export async function converge(
  c: FaultCluster,
  keys: readonly string[],
  maxRounds = 4,
): Promise<ConvergeReport> {
  let failedReads = 0;
  let rounds = 0;
  const startRepairs = await readRepairs(c);
  let before = startRepairs;
  for (; rounds < maxRounds; ) {
    rounds++;
    const seen = new Map<string, Set<string>>();
    for (const n of c.nodes)
      await Promise.all(
        keys.map(async (k) => {
          try {
            const r = await fetch(`http://${n.api}/kv/${k}?r=all`, { signal: AbortSignal.timeout(5000) });
            const body = await r.text();
            if (r.status !== 200 && r.status !== 300 && r.status !== 404) failedReads++;
            const s = seen.get(k) ?? new Set<string>();
            seen.set(k, s);
            s.add(`${r.status} ${body}`);
          } catch {
            failedReads++;
          }
        }),
      );
    // Repairs go out after the reply: wait until the nodes' repair counter has stood still for three
    // samples in a row (at least 900 ms), or 15 s, rather than a fixed time a loaded machine can outrun.
    const after = await repairsSettled(c);
    const stable = [...seen.values()].every((s) => s.size === 1) && after === before;
    before = after;
    if (stable && rounds >= 2) break;
  }
  return { rounds, failedReads, readRepairs: before - startRepairs };
}

/** The ring as a node serves it: each key's replicas. */
export async function fetchPreferences(c: FaultCluster): Promise<PreferenceTable> {
  const r = await fetch(`http://${c.nodes[0]!.api}/ring`, { signal: AbortSignal.timeout(3000) });
  const j = (await r.json()) as RingAnswer;
  return new PreferenceTable(
    { partitions: j.partitions, owners: j.owners },
    j.members.map((m) => ({ id: m.id, weight: m.weight, zone: m.zone ?? undefined })),
    j.n,
  );
}

function finalSibling(s: ReturnType<typeof decodeSiblings>[number]): FinalSibling {
  const dot = `${s.dot.counter}@${s.dot.actor}`;
  if (s.value.deleted) return { w: undefined, items: [], deleted: true, dot };
  let v: CartValue | undefined;
  try {
    v = JSON.parse(Buffer.from(s.value.data).toString("utf8")) as CartValue;
  } catch {
    v = undefined;
  }
  // A value that is not CartValue JSON names no write: checkNoPhantoms reports it.
  return { w: v?.w ?? `<unparseable:${dot}>`, items: [...(v?.items ?? [])], deleted: false, dot };
}

/** Every key's sibling set on one stopped node's disk. */
async function readDisk(dataDir: string): Promise<Map<string, FinalSibling[]>> {
  const e = await LsmEngine.open({ dir: path.join(dataDir, "storage"), fs: new NodeFileSystem() });
  const out = new Map<string, FinalSibling[]>();
  try {
    for await (const { key, value } of e.iterate(DATA.range))
      out.set(Buffer.from(DATA.decode(key)).toString("utf8"), decodeSiblings(value).map(finalSibling));
  } finally {
    await e.close();
  }
  return out;
}

export interface Collected {
  readonly final: FinalState;
  /** key -> nodes that hold a copy without being one of its replicas. */
  readonly strays: Map<string, string[]>;
}

/**
 * The final state of `keys` (and of any other key found): stops every node cleanly first, then reads each
 * disk. Replicas without the key count as holding [].
 */
export async function collectFinalState(
  c: FaultCluster,
  prefs: PreferenceTable,
  keys: readonly string[],
): Promise<Collected> {
  await c.stopAll();
  const disks = new Map<string, Map<string, FinalSibling[]>>();
  for (const n of c.nodes) disks.set(n.id, await readDisk(n.dataDir));
  const all = new Set(keys);
  for (const d of disks.values()) for (const k of d.keys()) all.add(k);
  const final = new Map<string, Map<string, FinalSibling[]>>();
  const strays = new Map<string, string[]>();
  for (const k of [...all].sort()) {
    const replicas = prefs.forKey(Buffer.from(k, "utf8"));
    const m = new Map<string, FinalSibling[]>();
    for (const r of replicas) m.set(r, disks.get(r)?.get(k) ?? []);
    final.set(k, m);
    const extra = [...disks.entries()]
      .filter(([id, d]) => !replicas.includes(id) && d.has(k))
      .map(([id]) => id);
    if (extra.length > 0) strays.set(k, extra);
  }
  return { final: { keys: final }, strays };
}
