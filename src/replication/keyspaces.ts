/**
 * The keyspaces of a node's storage engine: the one place that knows how the engine's keys are laid out.
 *
 * The engine is one ordered map shared by every kind of record a node keeps. Each kind lives in its own
 * keyspace: its engine keys are one prefix byte followed by the keyspace's own key bytes,
 *
 *   engine key = [prefix] ++ key
 *
 * so a keyspace is exactly the engine keys in [prefix, prefix + 1): a scan of that range reads every
 * record of the keyspace and nothing else, and the order of a keyspace's keys is the engine's order.
 * Keys of different keyspaces can never collide, whatever their bytes (a key that is a prefix of
 * another, or empty, included), because the prefix byte differs. 0xff is never a prefix, so that every
 * range has a one-byte exclusive upper bound.
 *
 * Nobody else builds or takes apart engine keys: the replica stores and scans through `DATA`, and the
 * mechanisms that come next get their keyspace here (reserved below, so no two can collide). The table
 * is checked when this module loads.
 */
import { assert } from "../core/assert.js";
import type { RangeOptions } from "../storage/engine.js";

export type KeyspaceName = "data" | "hints" | "meta" | "trees";

/** What each keyspace holds; a reserved one is named and given its byte before its first record. */
const TABLE: readonly { name: KeyspaceName; prefix: number; holds: string; reserved: boolean }[] = [
  // "d": user key -> the key's sibling set (object-codec.ts), written by Replica.
  { name: "data", prefix: 0x64, holds: "sibling sets, by user key", reserved: false },
  // "h": hinted handoff. A stand-in's copy of a write meant for a replica that was down: keyed by the
  // intended replica's node id (length-prefixed) then the user key, valued by the sibling set to deliver.
  { name: "hints", prefix: 0x68, holds: "hints, by target node and user key", reserved: true },
  // "m": node metadata that must be atomic with the data (e.g. the ring the last handoff pass was for,
  // counters), one small record per name.
  { name: "meta", prefix: 0x6d, holds: "node metadata, by name", reserved: true },
  // "t": anti-entropy hash trees, one per partition: keyed by partition, level and index (fixed-width,
  // big-endian, so that a level scans in order), valued by the node's hashes.
  { name: "trees", prefix: 0x74, holds: "hash tree nodes, by partition, level and index", reserved: true },
];

export class Keyspace {
  /**
   * Every engine key of this keyspace and no other (for scans): `gte` [prefix], `lt` [prefix + 1].
   * Shared: callers must not change its bytes.
   */
  readonly range: { readonly gte: Uint8Array; readonly lt: Uint8Array };

  constructor(
    readonly name: KeyspaceName,
    readonly prefix: number,
    /** What its records are (for docs and tools). */
    readonly holds: string,
    /** Named and given its byte, but nothing writes it yet. */
    readonly reserved: boolean,
  ) {
    assert(
      Number.isInteger(prefix) && prefix >= 0 && prefix < 0xff,
      () => `keyspace ${name}: prefix ${prefix}`,
    );
    this.range = { gte: Uint8Array.of(prefix), lt: Uint8Array.of(prefix + 1) };
  }

  /** The engine key of `key` in this keyspace (a new buffer). */
  encode(key: Uint8Array): Buffer {
    const k = Buffer.allocUnsafe(key.length + 1);
    k[0] = this.prefix;
    k.set(key, 1);
    return k;
  }

  /** Is `engineKey` a key of this keyspace? */
  contains(engineKey: Uint8Array): boolean {
    return engineKey.length >= 1 && engineKey[0] === this.prefix;
  }

  /**
   * The keyspace's key inside one of its engine keys: a view of the same bytes (copy it to keep it past
   * the buffer's life). The engine key must come from this keyspace (its range, or `encode`).
   */
  decode(engineKey: Uint8Array): Uint8Array {
    assert(
      this.contains(engineKey),
      () => `keyspace ${this.name}: engine key ${hex(engineKey)} is not one of its keys`,
    );
    return engineKey.subarray(1);
  }

  /**
   * The engine range of this keyspace's keys after `key` (every key if undefined), at most `limit`
   * entries: one page of a scan that resumes where the last page ended.
   */
  after(key: Uint8Array | undefined, limit?: number): RangeOptions {
    const lim = limit === undefined ? {} : { limit };
    return key === undefined
      ? { gte: this.range.gte, lt: this.range.lt, ...lim }
      : { gt: this.encode(key), lt: this.range.lt, ...lim };
  }
}

function hex(b: Uint8Array): string {
  const h = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
  return h.length > 64 ? `${h.slice(0, 64)}...` : h;
}

/** Every keyspace, in use or reserved, by name. */
export const KEYSPACES: Readonly<Record<KeyspaceName, Keyspace>> = (() => {
  const byPrefix = new Map<number, string>();
  const out = {} as Record<KeyspaceName, Keyspace>;
  for (const k of TABLE) {
    const clash = byPrefix.get(k.prefix);
    assert(clash === undefined, () => `keyspaces ${clash} and ${k.name} share the prefix byte ${k.prefix}`);
    assert(out[k.name] === undefined, () => `keyspace ${k.name} is declared twice`);
    byPrefix.set(k.prefix, k.name);
    out[k.name] = new Keyspace(k.name, k.prefix, k.holds, k.reserved);
  }
  return Object.freeze(out);
})();

/** Sibling sets, by user key: the replica's data. */
export const DATA: Keyspace = KEYSPACES.data;
