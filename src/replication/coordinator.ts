/**
 * The request coordinator (Dynamo section 4.5): runs one client request against the key's replicas and
 * decides its outcome from how many answered in time.
 *
 * - get: asks every replica of the key, answers once `r` replied, with the causal merge of their sets
 *   (siblings only when truly concurrent). Fewer than `r` replies by the deadline: `unavailable`.
 *   Read repair: after answering, it keeps collecting replies until the deadline, and sends the merged
 *   set to every replica whose answer lacked part of it (older, missing, or only some siblings), so the
 *   repair never slows the reply.
 * - put/delete: the coordinator must itself be a replica of the key (versioning needs its actor). It
 *   versions the write, and stores the resulting set locally while sending it to the other replicas;
 *   it answers once `w` replicas (itself included) made it durable. Fewer by the deadline: `unavailable`
 *   (the write is not rolled back; replicas that have it keep it).
 *
 * Outcomes are returned values, not exceptions: quorum not met is an expected protocol outcome.
 * Deterministic: time comes from the injected Timers; no I/O except through ReplicaPeer.
 */
import type { Timers } from "../runtime/runtime.js";
import { merge, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling, StoredValue } from "../versioning/object-codec.js";
import type { Replica } from "./replica.js";

/** A replica as the coordinator sees it: this node's own, or a remote one behind the transport. */
export interface ReplicaPeer {
  readonly nodeId: string;
  read(key: Uint8Array): Promise<StoredSibling[]>;
  /** Merges `set` into the replica's copy; resolves once durable there. */
  store(key: Uint8Array, set: readonly StoredSibling[]): Promise<void>;
}

export function localPeer(nodeId: string, replica: Replica): ReplicaPeer {
  return {
    nodeId,
    read: (key) => replica.read(key),
    store: async (key, set) => {
      await replica.merge(key, set);
    },
  };
}

export type ReadOutcome =
  | { readonly kind: "ok"; readonly siblings: StoredSibling[]; readonly replied: number }
  | { readonly kind: "unavailable"; readonly needed: number; readonly replied: number };

export type WriteOutcome =
  | {
      readonly kind: "ok";
      readonly written: StoredSibling;
      readonly set: StoredSibling[];
      readonly acked: number;
    }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | { readonly kind: "unavailable"; readonly needed: number; readonly acked: number };

/** Everything the API needs from the replication layer: a coordinator, or a router in front of one. */
export interface KvService {
  get(key: Uint8Array, r: number, timeoutMs: number): Promise<ReadOutcome>;
  write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
  ): Promise<WriteOutcome>;
}

export interface CoordinatorDeps {
  readonly local: Replica;
  /** The key's replicas, in preference-list order (the local one included when this node is one). */
  readonly replicasFor: (key: Uint8Array) => readonly ReplicaPeer[];
  readonly localNodeId: string;
  readonly timers: Timers;
  /** Called once per replica repaired after a read. */
  readonly onReadRepair?: (nodeId: string) => void;
}

interface Collected<T> {
  readonly ok: T[];
  readonly failed: number;
}

/**
 * Waits until `needed` of `tasks` succeeded, or that can no longer happen, or `timeoutMs` passed.
 * Late results are ignored (the tasks keep running; their errors are observed, never left unhandled).
 */
export function collect<T>(
  tasks: readonly Promise<T>[],
  needed: number,
  timeoutMs: number,
  timers: Timers,
): Promise<Collected<T>> {
  return new Promise((resolve) => {
    const ok: T[] = [];
    let failed = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      timer?.cancel();
      resolve({ ok: [...ok], failed });
    };
    const check = () => {
      if (ok.length >= needed || ok.length + (tasks.length - ok.length - failed) < needed) finish();
    };
    const timer = needed > 0 ? timers.after(timeoutMs, finish) : undefined;
    for (const t of tasks)
      t.then(
        (v) => {
          if (!done) {
            ok.push(v);
            check();
          }
        },
        () => {
          if (!done) {
            failed++;
            check();
          }
        },
      );
    check();
  });
}

function dotKey(s: StoredSibling): string {
  return `${s.dot.counter}@${s.dot.actor}`;
}

/** Does `have` hold every sibling of `merged`? (Both are merged sets, so equal dots mean equal versions.) */
function holdsAll(have: readonly StoredSibling[], merged: readonly StoredSibling[]): boolean {
  if (have.length !== merged.length) return false;
  const dots = new Set(have.map(dotKey));
  return merged.every((s) => dots.has(dotKey(s)));
}

export class Coordinator implements KvService {
  constructor(private readonly deps: CoordinatorDeps) {}

  async get(key: Uint8Array, r: number, timeoutMs: number): Promise<ReadOutcome> {
    const replicas = this.deps.replicasFor(key);
    const answers = replicas.map((p) => p.read(key));
    const got = await collect(answers, r, timeoutMs, this.deps.timers);
    if (got.ok.length < r) return { kind: "unavailable", needed: r, replied: got.ok.length };
    let siblings: StoredSibling[] = [];
    for (const s of got.ok) siblings = merge(siblings, s);
    if (replicas.length > 1) this.repairLater(key, replicas, answers, timeoutMs);
    return { kind: "ok", siblings, replied: got.ok.length };
  }

  /** Waits for every answer (until the deadline), then sends the merged set to replicas that lack part of it. */
  private repairLater(
    key: Uint8Array,
    replicas: readonly ReplicaPeer[],
    answers: Promise<StoredSibling[]>[],
    timeoutMs: number,
  ): void {
    const settled = answers.map((a, i) =>
      a.then(
        (set) => ({ i, set }),
        () => undefined,
      ),
    );
    void collect(settled, replicas.length, timeoutMs, this.deps.timers).then((all) => {
      const ok = all.ok.filter((x): x is { i: number; set: StoredSibling[] } => x !== undefined);
      let merged: StoredSibling[] = [];
      for (const x of ok) merged = merge(merged, x.set);
      if (merged.length === 0) return;
      for (const x of ok) {
        if (holdsAll(x.set, merged)) continue;
        const peer = replicas[x.i]!;
        peer.store(key, merged).then(
          () => this.deps.onReadRepair?.(peer.nodeId),
          () => undefined,
        );
      }
    });
  }

  async write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
  ): Promise<WriteOutcome> {
    const res = await this.deps.local.version(key, context, value);
    if (res.kind === "too_many_siblings") return res;
    // The local write and the other replicas' stores go at once; any w of them make the quorum. (Safe
    // for the dot: see Replica.version.)
    const others = this.deps.replicasFor(key).filter((p) => p.nodeId !== this.deps.localNodeId);
    const got = await collect(
      [res.durable, ...others.map((p) => p.store(key, res.set))],
      w,
      timeoutMs,
      this.deps.timers,
    );
    const acked = got.ok.length;
    if (acked < w) return { kind: "unavailable", needed: w, acked };
    return { kind: "ok", written: res.written, set: res.set, acked };
  }
}
