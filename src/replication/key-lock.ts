/**
 * Per-key mutual exclusion for read-modify-write of a key's sibling set on one node. Two writes of the
 * same key through the same node must not both read the old set and then overwrite each other's result.
 * The key is handed to its waiters one at a time, in the order they asked. The map holds only keys with
 * a holder or a waiter.
 *
 * Bounded: a key holds at most `waitersMax` waiters besides its holder, and at most `keysMax` keys are
 * held at once. Past either bound `acquire` fails at once with KeyLockOverloadedError (ERR_OVERLOADED):
 * a hot key on a stalled disk would otherwise queue writes (each holding its value) without limit, since
 * a waiter leaves the queue only when the key is handed to it.
 */
import { assert } from "../core/assert.js";

/**
 * Waiters per key. A key's writes run one durable write at a time (a read, then a put fsynced by group
 * commit: ~2-10 ms on a working disk), so 256 waiters drain in 0.5-2.6 s, inside the default 5 s
 * request timeout: a write that finds room in the queue of a working disk can still be acknowledged in
 * time, and a deeper queue would only hold writes that time out. The queue grows only while a key gets
 * writes faster than one per durable write (100-500 writes/s of one key); at the bound, with values of
 * at most 1 MiB, one key holds at most 256 MiB of waiting values, and on a stalled disk no more.
 */
export const keyLockWaitersMax = 256;

/**
 * Keys locked at once. Each is a write or a merge under way on this node. At 12,000 puts/s through
 * the cluster (bench:cluster's target), a node versions or merges at most 36,000 keys/s (each put locks
 * its key on each of its 3 replicas), each locked for 2-10 ms: 70-360 keys at once. 16,384 leaves room
 * for bursts and a slow disk
 * (a stalled one locks one key per write until the bound, then refuses), at ~200 bytes of bookkeeping
 * per key (3 MiB; the values are held by their requests).
 */
export const keyLockKeysMax = 16_384;

export interface KeyLockLimits {
  readonly waitersMax: number;
  readonly keysMax: number;
}

/** The key lock refused a waiter: too many writes wait for the key, or too many keys are locked. */
export class KeyLockOverloadedError extends Error {
  readonly code = "ERR_OVERLOADED";
  constructor(
    /** Which bound was reached: the key's waiters, or the keys locked on this node. */
    readonly limit: "waiters_per_key" | "keys_locked",
    readonly max: number,
  ) {
    super(
      limit === "waiters_per_key"
        ? `the key has ${max} writes waiting on this node, the most it queues`
        : `${max} keys have writes under way on this node, the most it locks at once`,
    );
    this.name = "KeyLockOverloadedError";
  }
}

/**
 * A key held: the tail of its chain of holders (each waiter waits for the one before it), and how many
 * are waiting. Do not "simplify" the chain into a queue of callbacks: that hands the key on a promise
 * turn sooner, which changes the interleavings (and so the histories) the simulator's seeds replay.
 */
interface Held {
  tail: Promise<void>;
  waiters: number;
}

export class KeyLock {
  private readonly held = new Map<string, Held>();
  private readonly limits: KeyLockLimits;

  constructor(limits: Partial<KeyLockLimits> = {}) {
    this.limits = {
      waitersMax: limits.waitersMax ?? keyLockWaitersMax,
      keysMax: limits.keysMax ?? keyLockKeysMax,
    };
    assert(
      this.limits.waitersMax >= 0 && this.limits.keysMax >= 1,
      () => `key lock limits ${JSON.stringify(this.limits)}`,
    );
  }

  /** Keys held now (each with or without waiters). */
  get size(): number {
    return this.held.size;
  }

  /** Waiters queued for `key` now, its holder not counted. */
  waiting(key: Uint8Array): number {
    return this.held.get(keyString(key))?.waiters ?? 0;
  }

  /**
   * Waits for the key, then holds it until the returned release is called (once). Rejects at once, with
   * KeyLockOverloadedError, when the key already has `waitersMax` waiters or `keysMax` keys are held.
   */
  async acquire(key: Uint8Array): Promise<() => void> {
    const k = keyString(key);
    let h = this.held.get(k);
    if (h === undefined && this.held.size >= this.limits.keysMax)
      throw new KeyLockOverloadedError("keys_locked", this.limits.keysMax);
    if (h !== undefined && h.waiters >= this.limits.waitersMax)
      throw new KeyLockOverloadedError("waiters_per_key", this.limits.waitersMax);
    let unblock!: () => void;
    const mine = new Promise<void>((r) => {
      unblock = r;
    });
    const prev = h?.tail;
    const tail = prev === undefined ? mine : prev.then(() => mine);
    if (h === undefined) {
      h = { tail, waiters: 0 };
      this.held.set(k, h);
    } else h.tail = tail;
    if (prev !== undefined) {
      h.waiters++;
      await prev;
      h.waiters--;
    }
    const entry = h;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      unblock();
      // Nobody chained behind this holder: the key is free.
      if (entry.tail === tail) {
        assert(entry.waiters === 0, () => `a key freed with ${entry.waiters} waiters`);
        this.held.delete(k);
      }
    };
  }

  /** Resolves once no key is held (those held now, and any taken meanwhile, all released). */
  async idle(): Promise<void> {
    while (this.held.size > 0) await Promise.allSettled([...this.held.values()].map((h) => h.tail));
  }

  async run<T>(key: Uint8Array, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

function keyString(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
}
