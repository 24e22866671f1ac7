/**
 * What the simulator saw kept, for the hint check (simulator.ts): for each key and each of its primaries,
 * the versions some node kept for that primary, on the primary itself or as a hint for it on any node:
 * - made durable: a put some node's storage engine acknowledged, in its data keyspace (a copy for that
 *   node) or its hints keyspace (a copy for the hint's target);
 * - or claimed durable: a `store` a node answered (`stored`), for the store's `hintFor` or for itself,
 *   whether or not it kept the set (a node that answers without keeping is the bug this must not excuse).
 * Each set is kept as its causal context (contextOf: its siblings' dots and contexts joined), so a
 * version counts as kept for a primary once a set that held it, or superseded it, was kept for it.
 *
 * It tells the hint check which missing copies no node ever held: under correct code, the only copy of a
 * write meant for a primary that acknowledged nothing may be the hint its coordinator keeps after the
 * write's deadline, so a coordinator that crashed first leaves none (checker.ts, checkHintedHandoff).
 *
 * It watches from outside: `watch` wraps a node's engine, `stored` is told of each store answered; the
 * nodes' code is unchanged.
 */

import { decodeHint, splitKey } from "../replication/hints.js";
import { DATA, KEYSPACES } from "../replication/keyspaces.js";
import type { Entry, RangeOptions, StorageEngine, WriteOp } from "../storage/engine.js";
import { contextOf, type Dot } from "../versioning/dvv.js";
import { decodeSiblings, type StoredSibling } from "../versioning/object-codec.js";

export class DurableCopies {
  /** key -> primary -> the join of the contexts of the sets made durable for it. */
  private readonly seen = new Map<string, Map<string, Map<string, number>>>();

  /** Has a set holding `dot`, or superseding it, been kept for `primary` (on it or as a hint)? */
  covers(key: string, primary: string, dot: Dot): boolean {
    return (this.seen.get(key)?.get(primary)?.get(dot.actor) ?? 0) >= dot.counter;
  }

  private record(key: Uint8Array, primary: string, set: readonly StoredSibling[]): void {
    const k = Buffer.from(key).toString("utf8");
    let byPrimary = this.seen.get(k);
    if (byPrimary === undefined) {
      byPrimary = new Map();
      this.seen.set(k, byPrimary);
    }
    let vv = byPrimary.get(primary);
    if (vv === undefined) {
      vv = new Map();
      byPrimary.set(primary, vv);
    }
    for (const [actor, n] of contextOf(set)) if ((vv.get(actor) ?? 0) < n) vv.set(actor, n);
  }

  /** `nodeId` answered a `store` of `set` (bytes as sent) with `hintFor`: kept, as it claims. */
  stored(nodeId: string, key: Uint8Array, set: Uint8Array, hintFor: string | undefined): void {
    this.record(key, hintFor ?? nodeId, decodeSiblings(set));
  }

  /** A put acknowledged by `nodeId`'s engine. */
  private observe(nodeId: string, key: Uint8Array, value: Uint8Array): void {
    if (DATA.contains(key)) this.record(DATA.decode(key), nodeId, decodeSiblings(value));
    else if (KEYSPACES.hints.contains(key)) {
      const { target, key: userKey } = splitKey(key);
      this.record(userKey, target, decodeHint(value, `hint for ${target}`).set);
    }
  }

  /** `engine`, with every put it acknowledges recorded (as `nodeId`'s). */
  watch(nodeId: string, engine: StorageEngine): StorageEngine {
    const observe = (key: Uint8Array, value: Uint8Array) => this.observe(nodeId, key, value);
    return {
      get kind() {
        return engine.kind;
      },
      get failure() {
        return engine.failure;
      },
      get: (key: Uint8Array) => engine.get(key),
      compactAll: () => engine.compactAll(),
      compactionProgress: () => engine.compactionProgress(),
      put: (key: Uint8Array, value: Uint8Array) => {
        const p = engine.put(key, value);
        p.then(
          () => observe(key, value),
          () => undefined,
        );
        return p;
      },
      delete: (key: Uint8Array) => engine.delete(key),
      write: (ops: readonly WriteOp[]) => {
        const p = engine.write(ops);
        p.then(
          () => {
            for (const op of ops) if (op.kind === "put") observe(op.key, op.value);
          },
          () => undefined,
        );
        return p;
      },
      iterate: (range?: RangeOptions): AsyncIterableIterator<Entry> => engine.iterate(range),
      stats: () => engine.stats(),
      close: () => engine.close(),
    };
  }
}
