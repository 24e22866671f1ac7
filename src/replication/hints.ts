/**
 * Hinted handoff's store (Dynamo 4.6): a stand-in's copies of writes meant for a replica that was down or
 * did not answer, each with a hint naming that replica, kept durably in the node's storage engine (the
 * `hints` keyspace, apart from its own data) until they are delivered (hint-delivery.ts).
 *
 *   engine key = [hints prefix] [target id length: u8] [target id: UTF-8] [user key]
 *   value      = magic 0xB7 | version 1 | storedAtMs f64 LE | sibling set (object-codec.ts) | crc32 u32 LE
 *
 * One record per (target, key): a second hint for the same pair merges into it (the sets' causal merge),
 * keeping the time the first was stored, so the age bound measures how long the target has been missing
 * the key. The crc covers the whole record; a record that fails it is reported (never delivered or
 * served) and dropped.
 *
 * Bounded per target: a hint that would take the target's hints past `maxBytesPerTarget` is refused
 * (HintsFullError, ERR_OVERLOADED): the coordinator then asks another stand-in or counts it missing, and
 * the write fails honestly rather than filling the disk (ScyllaDB's lesson). Age is bounded by
 * `windowMs`: delivery drops older hints (counted) and leaves them to anti-entropy.
 *
 * A stand-in never serves a hint as its own data: reads of it come only from a coordinator that asks this
 * node to stand in for that target (`read`), and a delivered hint is deleted (if unchanged since it was
 * sent).
 */
import { crc32 } from "node:zlib";
import { assert } from "../core/assert.js";
import type { Clock } from "../runtime/runtime.js";
import type { StorageEngine } from "../storage/engine.js";
import { merge } from "../versioning/dvv.js";
import { decodeSiblings, encodeSiblings, type StoredSibling } from "../versioning/object-codec.js";
import { KeyLock } from "./key-lock.js";
import { KEYSPACES } from "./keyspaces.js";

const HINTS = KEYSPACES.hints;
const MAGIC = 0xb7;
const VERSION = 1;
const HEADER_BYTES = 2 + 8;
const MAX_TARGET_BYTES = 255;

export interface HintLimits {
  /** Bytes of hints (engine keys and values) held for one target at most. */
  readonly maxBytesPerTarget: number;
  /** Hints older than this are dropped at delivery (Cassandra's max_hint_window, 3 hours). */
  readonly windowMs: number;
}

export const DEFAULT_HINT_LIMITS: HintLimits = {
  maxBytesPerTarget: 256 * 1024 * 1024,
  windowMs: 3 * 60 * 60 * 1000,
};

/** A hint refused: the target's hints are at their bound. Nothing was stored. */
export class HintsFullError extends Error {
  readonly code = "ERR_OVERLOADED";
  constructor(
    readonly target: string,
    readonly max: number,
  ) {
    super(`the hints held for ${target} are at their bound (${max} bytes): the hint was not stored`);
    this.name = "HintsFullError";
  }
}

export class HintCorruptionError extends Error {
  readonly code = "ERR_CORRUPTION";
  constructor(message: string) {
    super(message);
    this.name = "HintCorruptionError";
  }
}

/** The hints held for one target. */
export interface TargetBacklog {
  count: number;
  /** Engine bytes (keys and values). */
  bytes: number;
  /** When the oldest hint still held was stored (clock ms), or null when none is held. */
  oldestStoredAt: number | null;
}

/** One hint as a page returns it. */
export interface HintRecord {
  readonly key: Uint8Array;
  /** The record as stored: what `remove` compares against. */
  readonly record: Uint8Array;
  readonly set: readonly StoredSibling[];
  readonly storedAt: number;
}

/** What the store tells the node's metrics. */
export interface HintStoreEvents {
  /** A hint was stored (a new record, or merged into one held). */
  readonly onStored?: (target: string) => void;
  /** A hint was refused at the target's byte bound, or a damaged record was dropped. */
  readonly onDropped?: (target: string, reason: "full" | "corrupt") => void;
}

export interface HintCounters {
  /** Hints stored (new records) and merged into a record already held. */
  stored: number;
  merged: number;
  /** Hints refused at the byte bound. */
  refusedFull: number;
  /** Records that failed their checksum (dropped). */
  corrupt: number;
}

function targetPrefix(target: string): Buffer {
  const t = Buffer.from(target, "utf8");
  assert(t.length >= 1 && t.length <= MAX_TARGET_BYTES, () => `hint target id of ${t.length} bytes`);
  return Buffer.concat([Uint8Array.of(t.length), t]);
}

function engineKey(target: string, key: Uint8Array): Buffer {
  return HINTS.encode(Buffer.concat([targetPrefix(target), key]));
}

/** The engine range of one target's hints, after `key` if given. */
function targetRange(target: string, after: Uint8Array | undefined, limit: number) {
  const prefix = HINTS.encode(targetPrefix(target));
  const end = Buffer.from(prefix);
  // The prefix ends with the target's bytes; its successor bounds the range (no id byte is 0xff: UTF-8).
  end[end.length - 1]! += 1;
  return after === undefined
    ? { gte: prefix, lt: end, limit }
    : { gt: Buffer.concat([prefix, after]), lt: end, limit };
}

/** Splits an engine key of the hints keyspace into its target and user key. */
export function splitKey(engineKeyBytes: Uint8Array): { target: string; key: Uint8Array } {
  const k = HINTS.decode(engineKeyBytes);
  const n = k[0]!;
  assert(n >= 1 && k.length >= 1 + n, () => `hint key of ${k.length} bytes names a ${n}-byte target`);
  return { target: Buffer.from(k.subarray(1, 1 + n)).toString("utf8"), key: k.subarray(1 + n) };
}

export function encodeHint(storedAt: number, set: readonly StoredSibling[]): Buffer {
  const body = encodeSiblings(set);
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length + 4);
  out[0] = MAGIC;
  out[1] = VERSION;
  out.writeDoubleLE(storedAt, 2);
  body.copy(out, HEADER_BYTES);
  out.writeUInt32LE(crc32(out.subarray(0, HEADER_BYTES + body.length)), HEADER_BYTES + body.length);
  return out;
}

export function decodeHint(b: Uint8Array, what: string): { storedAt: number; set: StoredSibling[] } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < HEADER_BYTES + 4 || buf[0] !== MAGIC)
    throw new HintCorruptionError(`${what}: not a hint record`);
  if (buf[1] !== VERSION) throw new HintCorruptionError(`${what}: hint record version ${buf[1]}`);
  const end = buf.length - 4;
  if (crc32(buf.subarray(0, end)) !== buf.readUInt32LE(end))
    throw new HintCorruptionError(`${what}: hint record checksum mismatch`);
  return { storedAt: buf.readDoubleLE(2), set: decodeSiblings(buf.subarray(HEADER_BYTES, end)) };
}

export class HintStore {
  private readonly lock = new KeyLock();
  private readonly backlogs = new Map<string, TargetBacklog>();
  readonly counters: HintCounters = { stored: 0, merged: 0, refusedFull: 0, corrupt: 0 };

  constructor(
    private readonly storage: StorageEngine,
    private readonly clock: Clock,
    readonly limits: HintLimits = DEFAULT_HINT_LIMITS,
    private readonly events: HintStoreEvents = {},
  ) {}

  /** Counts the hints held (a start: they survive restarts), a page at a time. */
  async load(): Promise<void> {
    this.backlogs.clear();
    for await (const e of this.storage.iterate(HINTS.range)) {
      const { target } = splitKey(e.key);
      let storedAt: number;
      try {
        storedAt = decodeHint(e.value, `hint for ${target}`).storedAt;
      } catch (err) {
        if (!(err instanceof HintCorruptionError)) throw err;
        storedAt = 0; // counted now; delivery reports and drops it
      }
      this.account(target, e.key.length + e.value.length, storedAt);
    }
  }

  private account(target: string, deltaBytes: number, storedAt: number | undefined, deltaCount = 1): void {
    let b = this.backlogs.get(target);
    if (b === undefined) {
      b = { count: 0, bytes: 0, oldestStoredAt: null };
      this.backlogs.set(target, b);
    }
    b.count += deltaCount;
    b.bytes += deltaBytes;
    if (storedAt !== undefined && (b.oldestStoredAt === null || storedAt < b.oldestStoredAt))
      b.oldestStoredAt = storedAt;
    assert(
      b.count >= 0 && b.bytes >= 0,
      () => `hint backlog of ${target}: ${b!.count} hints, ${b!.bytes} bytes`,
    );
    if (b.count === 0) this.backlogs.delete(target);
  }

  /** The hints held, by target. */
  backlog(): ReadonlyMap<string, Readonly<TargetBacklog>> {
    return this.backlogs;
  }

  /** Bytes of hints held for `target`. */
  bytesFor(target: string): number {
    return this.backlogs.get(target)?.bytes ?? 0;
  }

  /**
   * Stores `set` as a hint for `target` (merged with one held for the same key), durably. Throws
   * HintsFullError if it would take the target's hints past their bound.
   */
  async put(target: string, key: Uint8Array, set: readonly StoredSibling[]): Promise<void> {
    const ek = engineKey(target, key);
    await this.lock.run(ek, async () => {
      const old = await this.storage.get(ek);
      let current: StoredSibling[] = [];
      let storedAt = this.clock.now();
      if (old !== undefined) {
        try {
          const h = decodeHint(old, `hint for ${target}`);
          current = h.set;
          storedAt = h.storedAt;
        } catch (err) {
          if (!(err instanceof HintCorruptionError)) throw err;
          this.counters.corrupt++; // replaced by the new hint
        }
      }
      const record = encodeHint(storedAt, old === undefined ? set : merge(current, set));
      const delta = record.length + (old === undefined ? ek.length : -old.length);
      if (delta > 0 && this.bytesFor(target) + delta > this.limits.maxBytesPerTarget) {
        this.counters.refusedFull++;
        this.events.onDropped?.(target, "full");
        throw new HintsFullError(target, this.limits.maxBytesPerTarget);
      }
      // Counted before the write's await, so that hints stored at once for other keys see these bytes
      // (the check and the count are one step); given back if the write fails.
      const added = old === undefined ? 1 : 0;
      this.account(target, delta, storedAt, added);
      try {
        await this.storage.put(ek, record);
      } catch (err) {
        this.account(target, -delta, undefined, -added);
        throw err;
      }
      if (old === undefined) this.counters.stored++;
      else this.counters.merged++;
      this.events.onStored?.(target);
    });
  }

  /** The set held as a hint for `target` of `key` ([] if none, or if its record is damaged). */
  async read(target: string, key: Uint8Array): Promise<StoredSibling[]> {
    const raw = await this.storage.get(engineKey(target, key));
    if (raw === undefined) return [];
    try {
      return decodeHint(raw, `hint for ${target}`).set;
    } catch (err) {
      if (!(err instanceof HintCorruptionError)) throw err;
      this.counters.corrupt++;
      return [];
    }
  }

  /**
   * Every hint held for `key`, whatever its target, merged: what a stand-in answers a read with (the
   * coordinator of a read may have placed this node in another slot than the writer did). One lookup per
   * target holding hints.
   */
  async readAll(key: Uint8Array): Promise<StoredSibling[]> {
    let out: StoredSibling[] = [];
    for (const target of [...this.backlogs.keys()]) {
      const set = await this.read(target, key);
      if (set.length > 0) out = merge(out, set);
    }
    return out;
  }

  /**
   * One page of `target`'s hints in key order, after `after` (from the first if undefined): at most
   * `maxKeys`, ending also once the page holds `maxBytes`. Damaged records are removed and counted, not
   * returned. An empty page means done.
   */
  async page(
    target: string,
    after: Uint8Array | undefined,
    maxKeys: number,
    maxBytes: number,
  ): Promise<{ hints: HintRecord[]; last: Uint8Array | undefined }> {
    const hints: HintRecord[] = [];
    const damaged: { key: Uint8Array; record: Uint8Array }[] = [];
    let bytes = 0;
    let last: Uint8Array | undefined;
    for await (const e of this.storage.iterate(targetRange(target, after, maxKeys))) {
      const key = Buffer.from(splitKey(e.key).key);
      last = key;
      try {
        const h = decodeHint(e.value, `hint for ${target}`);
        hints.push({ key, record: e.value, set: h.set, storedAt: h.storedAt });
      } catch (err) {
        if (!(err instanceof HintCorruptionError)) throw err;
        damaged.push({ key, record: e.value });
      }
      bytes += e.key.length + e.value.length;
      if (bytes >= maxBytes) break;
    }
    for (const d of damaged) {
      this.counters.corrupt++;
      this.events.onDropped?.(target, "corrupt");
      await this.remove(target, d.key, d.record);
    }
    return { hints, last };
  }

  /**
   * Deletes the hint for (`target`, `key`) if its record is still `record` (a hint merged since, by a
   * newer write, stays for the next delivery). Returns whether it was deleted.
   */
  async remove(target: string, key: Uint8Array, record: Uint8Array): Promise<boolean> {
    const ek = engineKey(target, key);
    return this.lock.run(ek, async () => {
      const now = await this.storage.get(ek);
      if (now === undefined || Buffer.compare(now, record) !== 0) return false;
      await this.storage.delete(ek);
      this.account(target, -(ek.length + now.length), undefined, -1);
      return true;
    });
  }

  /** After a full pass over `target`'s hints: the oldest one still held (the backlog's figure is exact again). */
  setOldest(target: string, storedAt: number | null): void {
    const b = this.backlogs.get(target);
    if (b !== undefined) b.oldestStoredAt = storedAt;
  }
}
