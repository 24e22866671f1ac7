/**
 * A replica's side of the key listing: the answer to `list_keys` (transport/messages.ts), read from the
 * sets this node stores, and the throttle that keeps such scans from crowding out client requests.
 *
 * The sets are stored by user key, not by partition (ARCHITECTURE.md, "keys are stored by user key"), so
 * the keys of a set of partitions are spread over the whole keyspace: the scan reads the sets in key order
 * from `after`, hashes each key to its partition, and keeps the keys of the partitions asked for whose set
 * holds a live sibling (a set of tombstones only is a deleted key: skipped). Because it goes in key
 * order, a request that resumes after the last key looked at costs only what it reads: listing a node's
 * partitions costs one pass over its keys, however many pages it takes (pager.ts asks for many
 * partitions at once for that reason).
 *
 * Bounded: at most `maxKeys` keys and about `maxBytes` of key bytes answered, at most `maxScanned` sets
 * looked at per request (then the answer says where it stopped), pages of `pageKeys` sets read at a time.
 * Throttled (`ScanThrottle`): one listing scan at a time on a node (a few more wait; past them the
 * request is refused with ERR_OVERLOADED), at most `keysPerSecond` sets looked at per second, and the
 * event loop is given back between pages.
 */
import type { Clock, Timers } from "../runtime/runtime.js";
import type { AnswerOf, RequestOf } from "../transport/messages.js";
import { decodeSiblings, ObjectDecodeError } from "../versioning/object-codec.js";

/** One stored set as a scan returns it (Replica.scan). */
export interface ScannedSet {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** What the scan reads: the replica's sets in key order (Replica.scan). */
export interface ScanSource {
  scan(after: Uint8Array | undefined, maxKeys: number, maxBytes: number): Promise<ScannedSet[]>;
}

export interface ScanLimits {
  /** Sets read per page. */
  readonly pageKeys: number;
  /** A page also ends once its keys and values add up to this many bytes. */
  readonly pageBytes: number;
  /** Sets looked at per request at most. */
  readonly maxScanned: number;
}

export const DEFAULT_SCAN_LIMITS: ScanLimits = { pageKeys: 256, pageBytes: 1 << 20, maxScanned: 65_536 };

/** Is partition `p` in the bitmap? */
export function included(include: Uint8Array, p: number): boolean {
  return ((include[p >> 3]! >> (p & 7)) & 1) === 1;
}

/** The bitmap of a list of partitions out of `q`. */
export function bitmapOf(partitions: Iterable<number>, q: number): Uint8Array {
  const out = Buffer.alloc(Math.ceil(q / 8));
  for (const p of partitions) out[p >> 3]! |= 1 << (p & 7);
  return out;
}

/** Does the stored set hold a live sibling? (A damaged set counts as none; `damaged` says so.) */
function live(value: Uint8Array, damaged: () => void): boolean {
  try {
    for (const s of decodeSiblings(value)) if (!s.value.deleted) return true;
    return false;
  } catch (err) {
    if (!(err instanceof ObjectDecodeError)) throw err;
    damaged();
    return false;
  }
}

/**
 * Answers `list_keys` from `source`: the live keys of the partitions asked for, after `after`, in key
 * order, within the request's bounds and `limits`. `pace` is awaited before each page (the throttle).
 */
export async function listReplicaKeys(
  req: RequestOf<"list_keys">,
  source: ScanSource,
  partitionOf: (key: Uint8Array, partitions: number) => number,
  pace: (entries: number) => Promise<void>,
  limits: ScanLimits = DEFAULT_SCAN_LIMITS,
  onDamaged?: () => void,
): Promise<AnswerOf<"list_keys">> {
  const keys: Uint8Array[] = [];
  let bytes = 0;
  let scanned = 0;
  let after: Uint8Array | undefined = req.after ?? undefined;
  const damaged = () => onDamaged?.();
  for (;;) {
    // Past the budget (never before the first page: `after` is then the last key looked at).
    if (scanned >= limits.maxScanned && after !== undefined)
      return { kind: "key_list", keys, last: after, done: false, scanned };
    await pace(limits.pageKeys);
    const page = await source.scan(after, limits.pageKeys, limits.pageBytes);
    if (page.length === 0) return { kind: "key_list", keys, last: after ?? null, done: true, scanned };
    for (const e of page) {
      scanned++;
      const k = e.key;
      if (included(req.include, partitionOf(k, req.partitions)) && live(e.value, damaged)) {
        keys.push(Buffer.from(k));
        bytes += k.length;
        if (keys.length >= req.maxKeys || bytes >= req.maxBytes)
          return { kind: "key_list", keys, last: keys[keys.length - 1]!, done: false, scanned };
      }
    }
    // Scan keys are views into the engine's buffers: the next page starts after a copy.
    after = Buffer.from(page[page.length - 1]!.key);
  }
}

/** Too many listing scans are waiting on this node. */
export class ScanOverloadedError extends Error {
  readonly code = "ERR_OVERLOADED";
  constructor(max: number) {
    super(`this node has ${max} key listing scans waiting already: try again in a moment`);
    this.name = "ScanOverloadedError";
  }
}

/**
 * One listing scan at a time on a node, at most `keysPerSecond` sets looked at per second (a token
 * bucket holding a tenth of a second's worth), the event loop given back between pages.
 */
export class ScanThrottle {
  private busy = false;
  private readonly waiting: (() => void)[] = [];
  private tokens: number;
  private filledAt: number;
  /** Sets looked at by listing scans, since the node started. */
  scanned = 0;

  constructor(
    private readonly timers: Timers,
    private readonly clock: Clock,
    readonly keysPerSecond: number,
    private readonly maxWaiting = 8,
  ) {
    this.tokens = keysPerSecond / 10;
    this.filledAt = clock.now();
  }

  /** Runs `fn` when no other scan runs (in arrival order); refuses at once when too many wait. */
  async run<T>(fn: (pace: (entries: number) => Promise<void>) => Promise<T>): Promise<T> {
    if (this.busy) {
      if (this.waiting.length >= this.maxWaiting) throw new ScanOverloadedError(this.maxWaiting);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.busy = true;
    try {
      return await fn((n) => this.pace(n));
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.busy = false;
      else next();
    }
  }

  /** Takes `entries` tokens, waiting while the bucket is in debt; always yields to the event loop. */
  private pace(entries: number): Promise<void> {
    const now = this.clock.now();
    const rate = this.keysPerSecond;
    this.tokens = Math.min(rate / 10, this.tokens + ((now - this.filledAt) * rate) / 1000);
    this.filledAt = now;
    this.tokens -= entries;
    this.scanned += entries;
    const waitMs = this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / rate);
    return new Promise((resolve) => {
      if (waitMs === 0 && this.timers.soon !== undefined) this.timers.soon(resolve);
      else this.timers.after(waitMs, resolve);
    });
  }
}
