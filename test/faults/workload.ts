/**
 * The history-recording workload: concurrent shopping-cart clients over the HTTP API, each bound to one
 * node (moving to the next node for 2 s when a connection to it was refused: a node that is down), doing read-modify-writes on a few
 * keys and recording every write in the shape of src/sim/history.ts.
 *
 * Each operation reads the key, unions the items of the live siblings it got, and then
 *  - add: writes the union plus a new element, with the read's context;
 *  - remove: writes the union minus one element it saw, with the context;
 *  - blind: writes a new element alone, without a context (concurrent with everything);
 *  - delete: deletes with the read's context.
 * Values are CartValue JSON; write ids (`<client>.<n>`) and elements (`e.<client>.<n>`) are unique in
 * the run. Reads and writes use the cluster's quorums, with some r=1 reads and w=1 writes mixed in.
 *
 * Outcomes are classified strictly (raw undici, one Pool per node and client, no retries):
 *  - ok: 2xx;
 *  - failed: certainly not applied: a 4xx answer, or the connection could not be made (refused,
 *    connect timeout, unreachable), so the request was never sent;
 *  - unknown: anything else (503, 5xx, a timeout waiting for the answer, a connection reset after
 *    sending).
 */

import { Pool } from "undici";
import { seededRandom as projectRandom } from "../../src/runtime/runtime.js";
import type { CartValue, Outcome, WriteKind, WriteRecord } from "../../src/sim/history.js";

/** The project's seeded generator as a function: the same seed gives the same choices. */
export function seededRandom(seed: number): () => number {
  const r = projectRandom(seed);
  return () => r.next();
}

export interface WorkloadOptions {
  readonly keys: readonly string[];
  readonly clients: number;
  /** API address (host:port) of every node, by index; client c is bound to node c % nodes. */
  readonly nodes: readonly string[];
  readonly seed: number;
  /** Each client stops after this many ms or ops, whichever first. */
  readonly durationMs: number;
  readonly maxOpsPerClient: number;
  /** Pause between a client's operations (uniform in [0, thinkMs]). */
  readonly thinkMs: number;
  /** The run clock (ms): invokedAt and completedAt are on it. */
  readonly clock: () => number;
}

export interface WorkloadStats {
  readonly ops: number;
  /** Outcome counts per write kind: kind -> outcome -> count. */
  readonly byKind: Record<WriteKind, Record<Outcome, number>>;
  readonly byOutcome: Record<Outcome, number>;
  /** Reads that did not return a value (503, timeouts, refused...): the operation was skipped. */
  readonly readsFailed: number;
  /** Values read that were not CartValue JSON (a bug: reported as an anomaly by the scenario). */
  readonly badValues: string[];
  /**
   * Reads that returned one write as two siblings (a write applied twice, under two dots), seen during
   * the run: later writes that read both supersede them, so the final state alone may not show it.
   */
  readonly duplicateSiblings: string[];
}

const NOT_SENT = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
]);

function errorCode(err: unknown): string {
  let e = err as { code?: unknown; cause?: unknown; errors?: unknown } | undefined;
  for (let depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    if (typeof e.code === "string") return e.code;
    if (Array.isArray(e.errors) && e.errors.length > 0) e = e.errors[0] as typeof e;
    else e = e.cause as typeof e;
  }
  return "UNKNOWN";
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

type Sent = { kind: "answer"; answer: Answer } | { kind: "error"; code: string; notSent: boolean };

interface Read {
  readonly context: string | undefined;
  readonly observed: string[];
  readonly items: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function sortedUnique(xs: Iterable<string>): string[] {
  return [...new Set(xs)].sort();
}

export class Workload {
  readonly writes: WriteRecord[] = [];
  private readonly pools = new Map<string, Pool>();
  private readonly stats = {
    ops: 0,
    readsFailed: 0,
    badValues: [] as string[],
    duplicateSiblings: [] as string[],
  };
  private stopped = false;

  constructor(private readonly o: WorkloadOptions) {}

  private pool(addr: string): Pool {
    let p = this.pools.get(addr);
    if (p === undefined) {
      p = new Pool(`http://${addr}`, {
        connections: 4 * this.o.clients,
        pipelining: 1,
        headersTimeout: 4000,
        bodyTimeout: 4000,
        connect: { timeout: 2000 },
      });
      this.pools.set(addr, p);
    }
    return p;
  }

  private async send(
    addr: string,
    method: "GET" | "PUT" | "DELETE",
    path: string,
    headers: Record<string, string> = {},
    body?: string,
  ): Promise<Sent> {
    try {
      const res = await this.pool(addr).request(
        body === undefined ? { method, path, headers } : { method, path, headers, body },
      );
      const buf = Buffer.from(await res.body.arrayBuffer());
      return { kind: "answer", answer: { status: res.statusCode, headers: res.headers, body: buf } };
    } catch (err) {
      const code = errorCode(err);
      return { kind: "error", code, notSent: NOT_SENT.has(code) };
    }
  }

  /** Stops the clients after their current operation. */
  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<WorkloadStats> {
    const t0 = Date.now();
    await Promise.all([...Array(this.o.clients).keys()].map((c) => this.client(c, t0)));
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    return this.summary();
  }

  summary(): WorkloadStats {
    const zero = (): Record<Outcome, number> => ({ ok: 0, failed: 0, unknown: 0 });
    const byKind: Record<WriteKind, Record<Outcome, number>> = {
      add: zero(),
      remove: zero(),
      blind: zero(),
      delete: zero(),
    };
    const byOutcome = zero();
    for (const w of this.writes) {
      byKind[w.kind][w.outcome]++;
      byOutcome[w.outcome]++;
    }
    return {
      ops: this.stats.ops,
      byKind,
      byOutcome,
      readsFailed: this.stats.readsFailed,
      badValues: this.stats.badValues,
      duplicateSiblings: this.stats.duplicateSiblings,
    };
  }

  private parseValue(key: string, data: Buffer): CartValue | undefined {
    try {
      const v = JSON.parse(data.toString("utf8")) as CartValue;
      if (typeof v.w === "string" && Array.isArray(v.items)) return v;
    } catch {
      // reported below
    }
    if (this.stats.badValues.length < 20)
      this.stats.badValues.push(`${key}: ${data.toString("utf8").slice(0, 200)}`);
    return undefined;
  }

  /** The read, or why there is none: "refused" when the node could not be reached at all. */
  private async read(addr: string, key: string, r: string): Promise<Read | "refused" | undefined> {
    const s = await this.send(addr, "GET", `/kv/${key}${r}`);
    if (s.kind === "error") return s.notSent ? "refused" : undefined;
    const a = s.answer;
    const context = a.headers["x-context"] as string | undefined;
    if (a.status === 404) return { context, observed: [], items: [] };
    if (a.status === 200) {
      const v = this.parseValue(key, a.body);
      if (v === undefined) return undefined;
      return { context, observed: [v.w], items: sortedUnique(v.items) };
    }
    if (a.status === 300) {
      const j = JSON.parse(a.body.toString("utf8")) as {
        context: string;
        siblings: { value: string; deleted: boolean }[];
      };
      const observed: string[] = [];
      const items: string[] = [];
      for (const sib of j.siblings) {
        if (sib.deleted) continue;
        const v = this.parseValue(key, Buffer.from(sib.value, "base64"));
        if (v === undefined) return undefined;
        if (observed.includes(v.w) && this.stats.duplicateSiblings.length < 20)
          this.stats.duplicateSiblings.push(`${key}: write ${v.w} read as two siblings via ${addr}`);
        observed.push(v.w);
        items.push(...v.items);
      }
      return { context: j.context, observed: sortedUnique(observed), items: sortedUnique(items) };
    }
    return undefined;
  }

  private async client(c: number, t0: number): Promise<void> {
    const o = this.o;
    const rnd = seededRandom(o.seed * 1000 + c);
    const name = `c${c}`;
    const own = c % o.nodes.length;
    // Moved away from `own` (by this many nodes) after refused connections, until `backAt`.
    let away = 0;
    let backAt = 0;
    const refused = () => {
      away++;
      backAt = Date.now() + 2000;
    };
    let n = 0;
    while (!this.stopped && Date.now() - t0 < o.durationMs && n < o.maxOpsPerClient) {
      n++;
      this.stats.ops++;
      if (away > 0 && Date.now() >= backAt) away = 0;
      const addr = o.nodes[(own + away) % o.nodes.length]!;
      const key = o.keys[Math.floor(rnd() * o.keys.length)]!;
      const x = rnd();
      const kind: WriteKind = x < 0.65 ? "add" : x < 0.8 ? "remove" : x < 0.92 ? "blind" : "delete";
      const r = rnd() < 0.15 ? "?r=1" : "";
      const w = rnd() < 0.15 ? "?w=1" : "";
      const id = `${name}.${n}`;
      let read: Read = { context: undefined, observed: [], items: [] };
      if (kind !== "blind") {
        const got = await this.read(addr, key, r);
        if (got === undefined || got === "refused") {
          this.stats.readsFailed++;
          // A client stays with its node through timeouts and 503s (a partition does not move it); it
          // moves on only from a node that refuses connections (down).
          if (got === "refused") refused();
          await sleep(50 + rnd() * 100);
          continue;
        }
        read = got;
      }
      let effective: WriteKind = kind;
      let element: string | undefined;
      let items: string[] | undefined;
      if (kind === "remove" && read.items.length === 0) effective = "add";
      if (effective === "add") {
        element = `e.${id}`;
        items = sortedUnique([...read.items, element]);
      } else if (effective === "remove") {
        element = read.items[Math.floor(rnd() * read.items.length)]!;
        items = read.items.filter((e) => e !== element);
      } else if (effective === "blind") {
        element = `e.${id}`;
        items = [element];
      }
      const headers: Record<string, string> = {};
      if (effective !== "blind" && read.context !== undefined) headers["x-context"] = read.context;
      const invokedAt = o.clock();
      let sent: Sent;
      if (effective === "delete") sent = await this.send(addr, "DELETE", `/kv/${key}${w}`, headers);
      else {
        headers["content-type"] = "application/json";
        const value: CartValue = { w: id, items: items! };
        sent = await this.send(addr, "PUT", `/kv/${key}${w}`, headers, JSON.stringify(value));
      }
      const completedAt = o.clock();
      let outcome: Outcome;
      if (sent.kind === "answer") {
        const st = sent.answer.status;
        outcome = st >= 200 && st < 300 ? "ok" : st >= 400 && st < 500 ? "failed" : "unknown";
      } else {
        outcome = sent.notSent ? "failed" : "unknown";
        if (sent.notSent) refused();
      }
      const blind = effective === "blind";
      this.writes.push({
        id,
        client: name,
        key,
        kind: effective,
        ...(element !== undefined ? { element } : {}),
        observed: blind ? [] : read.observed,
        observedItems: blind ? [] : read.items,
        ...(items !== undefined ? { items } : {}),
        outcome,
        invokedAt,
        completedAt,
      });
      if (o.thinkMs > 0) await sleep(rnd() * o.thinkMs);
    }
  }
}
