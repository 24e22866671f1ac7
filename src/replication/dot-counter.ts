/**
 * The counters a node's writes are named with: one counter for the whole node that never goes back, so
 * that no dot is ever issued twice, whatever becomes of the keys (Riak's fix for kv679, the "doomstone").
 *
 * Why. A dot (actor, counter) names one write (versioning/dvv.ts). If the counter of a write came only
 * from the key's current set (one above the highest counter of the actor in it), then after a tombstone
 * is purged the set is empty and the actor would count from 1 again: the next write of the key could get
 * a dot that an old version of it already had, and a stale copy of that old tombstone, held back somewhere
 * (a replica restored from a backup, a node forced back after a long absence), would then cover the new
 * write and hide it for good: an acknowledged write lost. So a write's counter is the larger of this
 * node's next counter and the one its key's set asks for (`next(atLeast)`).
 *
 * The lease. Every counter handed out is at most the *lease*, and the lease is durable before any counter
 * under it is handed out; a start begins above the saved lease. So a crash, whenever it comes, never lets
 * the node issue a counter again, and the write path pays an increment in memory almost always: a new
 * lease (one small durable put in the `meta` keyspace) is taken every LEASE_BLOCK counters, in the
 * background once half of the current block is used, so a write waits for it only at a burst of more than
 * half a block in one lease write's time. (The node also takes a new actor after an unclean stop, so a
 * lost lease would not reuse a dot either; the lease makes the counter safe on its own, across clean
 * restarts that keep the actor.)
 *
 * The counter is the node's, not an actor's: after the actor is renewed it goes on from where it was.
 * Counters stay far below 2^53 (a block per start, LEASE_BLOCK per 10,000 writes).
 *
 * Record layout (meta keyspace, name "dot-counter-lease"):
 *   magic    u8      0xDC
 *   version  u8      1
 *   lease    f64 LE  the highest counter that may have been handed out (an integer)
 *   crc32    u32 LE  of the 10 bytes before it
 */
import { crc32 } from "node:zlib";
import { assert } from "../core/assert.js";
import type { StorageEngine } from "../storage/engine.js";
import { KEYSPACES } from "./keyspaces.js";

/** Counters per lease. Written down durably once per this many writes coordinated by the node. */
export const LEASE_BLOCK = 10_000;

const MAGIC = 0xdc;
const VERSION = 1;
const RECORD_BYTES = 14;
const LEASE_KEY = KEYSPACES.meta.encode(Buffer.from("dot-counter-lease"));

/** The saved lease cannot be read: the node must not guess where its counters stand. */
export class DotLeaseCorruptionError extends Error {
  readonly code = "ERR_CORRUPTION";
  constructor(message: string) {
    super(message);
    this.name = "DotLeaseCorruptionError";
  }
}

export function encodeLease(lease: number): Buffer {
  assert(Number.isSafeInteger(lease) && lease >= 0, () => `dot counter lease ${lease}`);
  const b = Buffer.alloc(RECORD_BYTES);
  b[0] = MAGIC;
  b[1] = VERSION;
  b.writeDoubleLE(lease, 2);
  b.writeUInt32LE(crc32(b.subarray(0, 10)), 10);
  return b;
}

export function decodeLease(raw: Uint8Array): number {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const bad = (why: string) =>
    new DotLeaseCorruptionError(
      `the dot counter lease in the meta keyspace is damaged (${why}): the node cannot know which version names it has issued`,
    );
  if (b.length !== RECORD_BYTES) throw bad(`${b.length} bytes`);
  if (b[0] !== MAGIC) throw bad("bad magic");
  if (b[1] !== VERSION) throw bad(`version ${b[1]}`);
  if (b.readUInt32LE(10) !== crc32(b.subarray(0, 10))) throw bad("checksum mismatch");
  const lease = b.readDoubleLE(2);
  if (!Number.isSafeInteger(lease) || lease < 0) throw bad(`lease ${lease}`);
  return lease;
}

/** Where a counter's lease is kept. */
export interface LeaseStore {
  /** Makes `lease` durable; resolves once it is. */
  save(lease: number): Promise<void>;
}

export class DotCounter {
  /** The highest counter handed out (or that may have been, before this start). */
  private last: number;
  /** The durable lease: every counter handed out is at most this. */
  private leased: number;
  /** A lease being saved, and what it will be. */
  private extending: Promise<void> | undefined;
  private extendingTo = 0;
  private failure: Error | undefined;
  /** Leases saved since this counter was made. */
  leasesSaved = 0;

  private constructor(
    start: number,
    private readonly store: LeaseStore | undefined,
    private readonly block: number,
  ) {
    this.last = start;
    this.leased = store === undefined ? Number.MAX_SAFE_INTEGER : start;
  }

  /**
   * The node's counter, kept in `storage`'s meta keyspace: it starts above the lease saved there (0 if
   * none), and its first lease is durable when this resolves (a node takes it at its start, so that its
   * first write waits for nothing).
   */
  static async open(storage: StorageEngine, block = LEASE_BLOCK): Promise<DotCounter> {
    assert(Number.isSafeInteger(block) && block >= 2, () => `dot counter lease block ${block}`);
    const raw = await storage.get(LEASE_KEY);
    const saved = raw === undefined ? 0 : decodeLease(raw);
    const c = new DotCounter(saved, { save: (lease) => storage.put(LEASE_KEY, encodeLease(lease)) }, block);
    await c.extend(saved + 1);
    return c;
  }

  /**
   * A counter kept in memory only, from 0: for a replica whose data does not outlive this process (unit
   * tests, tools). It never goes back while it lives.
   */
  static volatile(): DotCounter {
    return new DotCounter(0, undefined, LEASE_BLOCK);
  }

  /** The highest counter handed out so far (or that may have been, before this start). */
  get issued(): number {
    return this.last;
  }

  /** The lease in force: no counter above it has been handed out. */
  get lease(): number {
    return this.leased;
  }

  /**
   * A counter above every one handed out before and at least `atLeast`: synchronously when the lease
   * covers it (almost always), else once a new lease is durable. Rejects if the lease cannot be saved
   * (the storage engine failed): then no counter is handed out.
   */
  next(atLeast: number): number | Promise<number> {
    assert(Number.isSafeInteger(atLeast) && atLeast >= 1, () => `a dot counter of at least ${atLeast}`);
    const c = Math.max(this.last + 1, atLeast);
    if (c <= this.leased) {
      this.last = c;
      // Half the block used: the next lease is saved in the background, before it is needed.
      // A failure is kept (`failure`) and reported to the first caller that needs the new lease.
      if (this.store !== undefined && this.extending === undefined && this.leased - c < this.block / 2)
        this.extend(c).catch(() => undefined);
      return c;
    }
    return this.extend(c).then(() => this.next(atLeast));
  }

  /** Saves a lease of at least `c` + one block (one save at a time; callers share it). */
  private extend(c: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const store = this.store;
    assert(store !== undefined, "a volatile dot counter never needs a lease");
    if (this.extending !== undefined && this.extendingTo >= c) return this.extending;
    const after = this.extending ?? Promise.resolve();
    const to = Math.max(c, this.last) + this.block;
    this.extendingTo = to;
    const p = after
      .then(() => store.save(to))
      .then(
        () => {
          this.leasesSaved++;
          if (to > this.leased) this.leased = to;
        },
        (err: unknown) => {
          this.failure ??= err instanceof Error ? err : new Error(String(err));
          throw this.failure;
        },
      )
      .finally(() => {
        if (this.extending === p) this.extending = undefined;
      });
    // A background extension's failure is kept in `failure` and reported to the next caller that needs it.
    void p.catch(() => undefined);
    this.extending = p;
    return p;
  }
}
