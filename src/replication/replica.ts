/**
 * One node's replica of the keys it holds: sibling sets stored in the storage engine, changed only by
 * read-modify-write under a per-key lock.
 *
 * - `coordinate` is a write this node coordinates: it versions the new value with this node's actor
 *   (dvv.update), refuses it if the key would exceed the sibling limit, and stores the result. It returns
 *   the whole new set: that set, not the lone new sibling, is what goes to the other replicas (see
 *   ARCHITECTURE.md: shipping whole sets keeps each actor's dots gap-free at every replica).
 * - `merge` folds in a set received from elsewhere (replication, read repair, handoff, anti-entropy).
 *
 * Storage layout: the engine key is a one-byte namespace followed by the user key; namespace `d` holds
 * sibling sets. Other namespaces (hints, metadata) share the engine later without colliding.
 */
import type { StorageEngine } from "../storage/engine.js";
import { type Actor, merge, update, type VersionVector } from "../versioning/dvv.js";
import {
  decodeSiblings,
  encodeSiblings,
  type StoredSibling,
  type StoredValue,
} from "../versioning/object-codec.js";
import { KeyLock } from "./key-lock.js";

const NS_DATA = 0x64; // "d"

export type CoordinateResult =
  | { readonly kind: "ok"; readonly set: StoredSibling[]; readonly written: StoredSibling }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number };

export class Replica {
  private readonly lock = new KeyLock();

  constructor(
    private readonly storage: StorageEngine,
    readonly actor: Actor,
    private readonly maxSiblings: number,
  ) {}

  static dataKey(key: Uint8Array): Buffer {
    const k = Buffer.allocUnsafe(key.length + 1);
    k[0] = NS_DATA;
    k.set(key, 1);
    return k;
  }

  /** The key's sibling set ([] if the key was never written here). */
  async read(key: Uint8Array): Promise<StoredSibling[]> {
    const raw = await this.storage.get(Replica.dataKey(key));
    return raw === undefined ? [] : decodeSiblings(raw);
  }

  async coordinate(key: Uint8Array, context: VersionVector, value: StoredValue): Promise<CoordinateResult> {
    return this.lock.run(key, async () => {
      const current = await this.read(key);
      const { set, written } = update(current, context, this.actor, value);
      if (set.length > this.maxSiblings)
        return { kind: "too_many_siblings", siblings: current.length, max: this.maxSiblings };
      await this.storage.put(Replica.dataKey(key), encodeSiblings(set));
      return { kind: "ok", set, written };
    });
  }

  /** Folds `incoming` into the stored set; returns the merged set. Writes only if something changed. */
  async merge(key: Uint8Array, incoming: readonly StoredSibling[]): Promise<StoredSibling[]> {
    return this.lock.run(key, async () => {
      const current = await this.read(key);
      const merged = merge(current, incoming);
      if (!sameDots(current, merged)) await this.storage.put(Replica.dataKey(key), encodeSiblings(merged));
      return merged;
    });
  }
}

function sameDots(a: readonly StoredSibling[], b: readonly StoredSibling[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!.dot;
    const y = b[i]!.dot;
    if (x.actor !== y.actor || x.counter !== y.counter) return false;
  }
  return true;
}
