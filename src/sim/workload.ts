/**
 * The simulated clients: each runs a loop of operations on a few set-valued keys (shopping carts),
 * through a node's `router` (the KvService the HTTP API calls), and records every write it makes in the
 * history (history.ts) for the checkers.
 *
 * Operations, all drawn from the client's own seeded stream:
 * - add: read (R), take the union of the siblings' items, add a fresh element, write back with the
 *   read's context (contextOf: the join of the siblings' contexts and dots, as kv-routes.ts hands out);
 * - remove: the same, removing an element the read saw;
 * - blind: a write without context (it supersedes nothing);
 * - delete: a delete (tombstone) with the read's context.
 * A read that fails ends the operation with no write (nothing to record). A write's outcome is `ok`
 * when the quorum acknowledged it, `failed` when the coordinator refused it before storing anything
 * (too many siblings), and `unknown` otherwise (not enough acknowledgements, a timeout, an error: it may
 * have been applied somewhere).
 *
 * Every value is a CartValue whose `w` is the write's id; a delete's tombstone carries its id too (the
 * replica stores a tombstone's bytes), so the checkers run with `tombstonesNamed`.
 *
 * A client talks to a node as an HTTP client would: it waits while the node is paused (its request sits
 * in the socket), and gives up after its own deadline (the request's timeout plus slack), recording
 * `unknown`: the node may have crashed, or be stuck.
 */
import type { KvService, ReadOutcome, WriteOutcome } from "../replication/coordinator.js";
import type { Random } from "../runtime/runtime.js";
import type { VirtualScheduler } from "../runtime/virtual-runtime.js";
import { contextOf, EMPTY_VECTOR, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling, StoredValue } from "../versioning/object-codec.js";
import type { SimCluster, SimNode } from "./cluster.js";
import type { CartValue, FinalSibling, Outcome, WriteKind, WriteRecord } from "./history.js";

export interface WorkloadConfig {
  readonly clients: number;
  /** Operations in total, over all clients. */
  readonly ops: number;
  readonly keys: number;
  readonly r: number;
  readonly w: number;
  readonly requestTimeoutMs: number;
  /** Pause between a client's operations: uniform in [0, thinkMaxMs]. */
  readonly thinkMaxMs: number;
}

export interface WorkloadStats {
  opsStarted: number;
  readsUnavailable: number;
  writes: Record<Outcome, number>;
  /** Most siblings one read returned. */
  maxSiblingsRead: number;
  /** Most client requests in flight at once (bounded by the number of clients). */
  maxInFlight: number;
}

export const keyName = (i: number): string => `cart:${i}`;

/** A stored sibling as the checkers see it (the CartValue in its bytes, its dot). */
export function finalSibling(s: StoredSibling): FinalSibling {
  const v = parseCart(s.value.data);
  return {
    w: v?.w,
    items: s.value.deleted ? [] : [...(v?.items ?? [])],
    deleted: s.value.deleted,
    dot: `${s.dot.counter}@${s.dot.actor}`,
    context: Object.fromEntries(s.context),
  };
}

function parseCart(data: Uint8Array): CartValue | undefined {
  if (data.length === 0) return undefined;
  try {
    const v = JSON.parse(Buffer.from(data).toString("utf8")) as Partial<CartValue>;
    if (typeof v.w !== "string" || !Array.isArray(v.items)) return undefined;
    return { w: v.w, items: v.items.filter((x): x is string => typeof x === "string") };
  } catch {
    // Not a CartValue: the checkers see a sibling that names no write (and report it).
    return undefined;
  }
}

export class Workload {
  readonly history: WriteRecord[] = [];
  readonly stats: WorkloadStats = {
    opsStarted: 0,
    readsUnavailable: 0,
    writes: { ok: 0, failed: 0, unknown: 0 },
    maxSiblingsRead: 0,
    maxInFlight: 0,
  };
  /** Errors the clients threw (bugs in the simulator or the code under test): reported as anomalies. */
  readonly errors: unknown[] = [];
  /** Set to stop the clients after their current operation. */
  stopping = false;
  /** The clients stop once this many operations have started (over every phase). */
  private opsLimit: number;
  /** Keys the clients use now: the first `activeKeys` (the hot ones). */
  private activeKeys: number;
  private running = 0;
  private inFlight = 0;
  /** When the clients started (virtual time): the zero of the history's times. */
  readonly t0: number;

  constructor(
    private readonly cfg: WorkloadConfig,
    private readonly cluster: SimCluster,
    private readonly sched: VirtualScheduler,
    private readonly randomFor: (client: number) => Random,
    private readonly service: (node: SimNode) => KvService,
    private readonly log: (line: string) => void,
  ) {
    this.t0 = sched.now();
    this.opsLimit = cfg.ops;
    this.activeKeys = cfg.keys;
  }

  get done(): boolean {
    return this.running === 0;
  }

  /** Starts every client (each on its own timer). */
  start(): void {
    this.startClients("");
  }

  private startClients(phase: string): void {
    for (let c = 0; c < this.cfg.clients; c++) {
      this.running++;
      const random = this.randomFor(c);
      const name = `c${c + 1}${phase}`;
      this.client(name, random).then(
        () => this.running--,
        (err: unknown) => {
          this.running--;
          this.errors.push(err);
        },
      );
    }
  }

  /**
   * A second phase, once the first is done: the clients run `ops` more operations on the first `keys`
   * keys only (the others are left as they are: deleted, for the no-resurrection check).
   */
  continueWith(ops: number, keys: number, phase: string): void {
    this.opsLimit = this.stats.opsStarted + ops;
    this.activeKeys = Math.max(1, Math.min(keys, this.cfg.keys));
    this.stopping = false;
    this.startClients(phase);
  }

  /**
   * Deletes every key, one after the other (a read, then a delete with its context), by a client of its
   * own; a delete whose outcome is not `ok` is tried again, up to `attempts` times.
   */
  async deleteAll(random: Random, attempts: number): Promise<void> {
    this.running++;
    try {
      let seq = 0;
      for (let k = 0; k < this.cfg.keys; k++)
        for (let a = 0; a < attempts; a++) {
          const id = `d${++seq}`;
          await this.operation("cleanup", id, keyName(k), "delete", random);
          if (this.history.at(-1)?.id === id && this.history.at(-1)?.outcome === "ok") break;
        }
    } finally {
      this.running--;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.sched.after(ms, resolve));
  }

  /** `p`, or "timeout" after `ms` of virtual time (the client gives up; `p` may still settle). */
  private deadline<T>(p: Promise<T>, ms: number): Promise<T | "timeout" | "error"> {
    this.inFlight++;
    if (this.inFlight > this.stats.maxInFlight) this.stats.maxInFlight = this.inFlight;
    return new Promise((resolve) => {
      let done = false;
      const finish = (v: T | "timeout" | "error") => {
        if (done) return;
        done = true;
        this.inFlight--;
        timer.cancel();
        resolve(v);
      };
      const timer = this.sched.after(ms, () => finish("timeout"));
      p.then(finish, () => finish("error"));
    });
  }

  private pick<T>(random: Random, xs: readonly T[]): T {
    return xs[Math.floor(random.next() * xs.length)]!;
  }

  private async client(name: string, random: Random): Promise<void> {
    let seq = 0;
    while (!this.stopping && this.stats.opsStarted < this.opsLimit) {
      this.stats.opsStarted++;
      await this.sleep(Math.floor(random.next() * (this.cfg.thinkMaxMs + 1)));
      // Hot keys first: a skewed choice makes concurrent writes of one key common.
      const k = Math.floor(random.next() ** 2 * this.activeKeys);
      const x = random.next();
      const kind: WriteKind = x < 0.55 ? "add" : x < 0.78 ? "remove" : x < 0.9 ? "blind" : "delete";
      await this.operation(name, `${name}-${++seq}`, keyName(k), kind, random);
    }
  }

  private node(random: Random): SimNode | undefined {
    const up = this.cluster.nodes.filter((n) => n.state === "up");
    return up.length === 0 ? undefined : this.pick(random, up);
  }

  private async operation(
    client: string,
    id: string,
    key: string,
    kind: WriteKind,
    random: Random,
  ): Promise<void> {
    const node = this.node(random);
    if (node === undefined) return;
    const keyBytes = Buffer.from(key);
    const timeout = this.cfg.requestTimeoutMs;
    const slack = 2 * timeout + 1000; // a forwarded write may take two timeouts; pauses add more
    let siblings: StoredSibling[] = [];
    let context: VersionVector = EMPTY_VECTOR;
    if (kind !== "blind") {
      const read = await this.deadline(
        this.cluster.running(node).then(() => this.service(node).get(keyBytes, this.cfg.r, timeout)),
        slack,
      );
      if (typeof read === "string" || read.kind !== "ok") {
        this.stats.readsUnavailable++;
        this.log(`${client} ${id} read ${key} via ${node.id}: ${describeRead(read)}`);
        return;
      }
      siblings = read.siblings;
      context = contextOf(siblings);
      if (siblings.length > this.stats.maxSiblingsRead) this.stats.maxSiblingsRead = siblings.length;
    }
    const finals = siblings.map(finalSibling);
    const observed = finals.flatMap((s) => (s.w === undefined ? [] : [s.w]));
    const observedItems = [...new Set(finals.flatMap((s) => (s.deleted ? [] : s.items)))].sort();
    let element: string | undefined;
    let items: string[] | undefined;
    if (kind === "remove" && observedItems.length === 0) kind = "add";
    if (kind === "add") {
      element = `e.${id}`;
      items = [...new Set([...observedItems, element])].sort();
    } else if (kind === "remove") {
      element = this.pick(random, observedItems);
      items = observedItems.filter((e) => e !== element);
    } else if (kind === "blind") {
      items = [`b.${id}`];
    }
    const cart: CartValue = { w: id, items: items ?? [] };
    const value: StoredValue = {
      data: Buffer.from(JSON.stringify(cart)),
      contentType: "application/json",
      deleted: kind === "delete",
      writtenAtMs: node.clock.now(),
    };
    const invokedAt = this.sched.now() - this.t0;
    const out = await this.deadline(
      this.cluster
        .running(node)
        .then(() => this.service(node).write(keyBytes, context, value, this.cfg.w, timeout)),
      slack,
    );
    const outcome = outcomeOf(out);
    this.stats.writes[outcome]++;
    const rec: WriteRecord = {
      id,
      client,
      key,
      kind,
      ...(element === undefined ? {} : { element }),
      observed,
      observedItems,
      ...(items === undefined ? {} : { items }),
      outcome,
      ...(typeof out !== "string" && out.kind === "ok"
        ? { dot: `${out.written.dot.counter}@${out.written.dot.actor}` }
        : {}),
      invokedAt,
      completedAt: this.sched.now() - this.t0,
    };
    this.history.push(rec);
    this.log(
      `${client} ${id} ${kind}${element === undefined ? "" : ` ${element}`} ${key} via ${node.id} ` +
        `(sent at ${invokedAt}) ` +
        `observed [${observed.join(",")}]: ${outcome}${typeof out === "string" ? ` (${out})` : ` (${out.kind})`}`,
    );
  }
}

function describeRead(r: ReadOutcome | "timeout" | "error"): string {
  if (typeof r === "string") return r;
  if (r.kind === "too_few_replicas") return `too few replicas (${r.replicas}/${r.needed})`;
  return r.kind === "ok" ? "ok" : `unavailable (${r.replied}/${r.needed})`;
}

function outcomeOf(out: WriteOutcome | "timeout" | "error"): Outcome {
  if (typeof out === "string") return "unknown";
  if (out.kind === "ok") return "ok";
  // Refused before anything was versioned or applied.
  if (out.kind === "too_many_siblings" || out.kind === "overloaded" || out.kind === "too_few_replicas")
    return "failed";
  return "unknown";
}
