/**
 * Idempotent forwarded writes. A node that is not a replica of a key forwards a write to one that is
 * (`coordinate`, see router.ts). On a network that may deliver a request twice, running
 * the handler twice would version the one client write twice: two dots, two siblings of one value. So
 * the forwarder names each `coordinate` request (`ForwardIds`), and the coordinating node keeps a memo
 * from that name to the promise of the outcome (`ForwardMemo`): a second copy, whether it arrives while
 * the first is still running or after it finished, gets the same outcome and applies nothing.
 *
 * The memo is bounded in entries, in bytes of remembered outcomes, and in (virtual) time, evicting the
 * oldest first; a duplicate that arrives after its entry was evicted (or after the coordinator restarted)
 * is applied again. Duplicates are expected within a network delay, far inside these windows.
 */
import type { Clock, Random } from "../runtime/runtime.js";
import { MAX_REQUEST_ID_CHARS } from "../transport/messages.js";

/** Most remembered requests per node: a few seconds of forwarded writes at a high rate. */
export const FORWARD_MEMO_MAX_ENTRIES = 4096;
/**
 * How long a request is remembered (virtual ms of the node's clock): longer than any sensible request
 * timeout (the forwarder waits no longer than the write's timeout), so a copy held by the network for as
 * long as its sender still waits is caught.
 */
export const FORWARD_MEMO_MAX_AGE_MS = 120_000;
/**
 * Bytes of finished outcomes remembered (an ok outcome carries the written version and the whole set:
 * with 1 MiB values, 4096 of them would hold gigabytes). Requests still running count nothing.
 */
export const FORWARD_MEMO_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Names forwarded requests uniquely across the cluster and across restarts: the forwarder's node id, a
 * 64-bit random value drawn once from the node's random source (a new one each time the node starts),
 * and a counter.
 */
export class ForwardIds {
  private readonly prefix: string;
  private seq = 0;

  constructor(nodeId: string, random: Random) {
    const word = () =>
      Math.floor(random.next() * 0x1_0000_0000)
        .toString(16)
        .padStart(8, "0");
    this.prefix = `${nodeId}:${word()}${word()}:`;
    // The counter adds at most 11 base-36 digits (2^53).
    if (this.prefix.length + 11 > MAX_REQUEST_ID_CHARS) throw new RangeError(`node id too long: ${nodeId}`);
  }

  next(): string {
    this.seq++;
    return `${this.prefix}${this.seq.toString(36)}`;
  }
}

export interface ForwardMemoOptions {
  readonly clock: Clock;
  readonly maxEntries?: number;
  readonly maxAgeMs?: number;
  readonly maxBytes?: number;
}

interface Entry<T> {
  readonly at: number;
  /** What identifies the request besides its id (the key): a different one under the same id is a bug. */
  readonly fingerprint: string;
  readonly outcome: Promise<T>;
  bytes: number;
}

export class ForwardMemo<T> {
  /** In insertion order, which is the order of `at` (the clock is monotonic): the oldest first. */
  private readonly entries = new Map<string, Entry<T>>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  private readonly maxBytes: number;
  private bytesHeld = 0;
  /** Requests answered from the memo (duplicates caught). */
  hits = 0;

  constructor(
    private readonly o: ForwardMemoOptions,
    /** The size in bytes of a finished outcome (for the byte bound). */
    private readonly sizeOf: (outcome: T) => number = () => 0,
  ) {
    this.maxEntries = o.maxEntries ?? FORWARD_MEMO_MAX_ENTRIES;
    this.maxAgeMs = o.maxAgeMs ?? FORWARD_MEMO_MAX_AGE_MS;
    this.maxBytes = o.maxBytes ?? FORWARD_MEMO_MAX_BYTES;
    if (!(Number.isInteger(this.maxEntries) && this.maxEntries >= 1))
      throw new RangeError(`maxEntries must be a positive integer, got ${this.maxEntries}`);
    if (!(this.maxAgeMs > 0)) throw new RangeError(`maxAgeMs must be positive, got ${this.maxAgeMs}`);
    if (!(this.maxBytes >= 0)) throw new RangeError(`maxBytes must be >= 0, got ${this.maxBytes}`);
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.bytesHeld;
  }

  /**
   * The outcome of the request `id`: `run()`'s, started now if the id is not remembered, else the one
   * remembered (same promise, resolved or rejected alike). `fingerprint` must match the remembered one.
   */
  run(id: string, fingerprint: string, run: () => Promise<T>): Promise<T> {
    this.expire();
    const known = this.entries.get(id);
    if (known !== undefined) {
      if (known.fingerprint !== fingerprint)
        return Promise.reject(new Error(`request id ${id} reused for another request`));
      this.hits++;
      return known.outcome;
    }
    while (this.entries.size >= this.maxEntries) this.evictOldest();
    const outcome = run();
    const entry: Entry<T> = { at: this.o.clock.now(), fingerprint, outcome, bytes: 0 };
    this.entries.set(id, entry);
    outcome.then(
      (v) => {
        if (this.entries.get(id) !== entry) return; // evicted meanwhile
        entry.bytes = this.sizeOf(v);
        this.bytesHeld += entry.bytes;
        while (this.bytesHeld > this.maxBytes && this.entries.size > 0) this.evictOldest();
      },
      () => undefined,
    );
    return outcome;
  }

  /** Drops the entries older than the age bound. */
  private expire(): void {
    const oldest = this.o.clock.now() - this.maxAgeMs;
    for (const e of this.entries.values()) {
      if (e.at > oldest) break;
      this.evictOldest();
    }
  }

  private evictOldest(): void {
    const first = this.entries.entries().next();
    if (first.done === true) return;
    const [id, e] = first.value;
    this.entries.delete(id);
    this.bytesHeld -= e.bytes;
  }
}
