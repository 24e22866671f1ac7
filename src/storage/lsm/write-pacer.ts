/**
 * Delayed writes: how long a group commit waits before its WAL write while the background is behind
 * (RocksDB's write controller, with the rate taken from this engine's own flushes).
 *
 * Without it a writer runs at full speed until a limit (frozen memtables waiting for their flush, or
 * `stopWritesAtRuns` runs) and then stops until a flush or a merge ends, which is one write that waits
 * hundreds of milliseconds. With it, past a soft limit each group commit is spaced after the previous one
 * as if the writes flowed at an allowed rate: the flush rate measured so far, scaled down linearly as the
 * debt nears the hard limit (at the soft limit the writes flow as fast as flushes drain them, so the debt
 * stops growing there under a steady load). The stop turns into many small waits.
 *
 * Pure: the engine gives it the time, the debt and the flushes it measured, and sleeps what it answers.
 */
import type { LsmOptions } from "./options.js";

export interface WriteDebt {
  /** Bytes in the active memtable and in the frozen ones waiting for their flush. */
  readonly unflushedBytes: number;
  /** What they may hold before writes stop: (1 + maxImmutableMemtables) memtables. */
  readonly unflushedLimitBytes: number;
  readonly runs: number;
}

/**
 * The flush rate assumed before the first flush is measured, bytes per ms (32 MiB/s, about what a flush
 * worker sustains on a busy two-core machine): the first memtables fill before any flush has ended.
 */
const PRIOR_FLUSH_BYTES_PER_MS = (32 * 1024 * 1024) / 1000;

/** Smoothing of the flush rate: each flush moves the estimate this fraction of the way. */
const FLUSH_RATE_WEIGHT = 0.3;

export class WritePacer {
  /** Flush throughput in bytes per ms (the prior until a flush has been measured). */
  private flushBytesPerMs = PRIOR_FLUSH_BYTES_PER_MS;
  private measured = false;
  /** When the next group may be written at the allowed rate (the previous group's bytes paid for). */
  private nextFreeMs = 0;

  constructor(
    private readonly o: Pick<
      LsmOptions,
      "slowdownWritesAtRuns" | "stopWritesAtRuns" | "slowdownMemtableFraction" | "maxWriteDelayMs"
    >,
  ) {}

  /** Records a flush of `bytes` memtable bytes that took `ms` (ignored if the clock did not move). */
  noteFlush(bytes: number, ms: number): void {
    if (!(ms > 0) || bytes <= 0) return;
    const rate = bytes / ms;
    const first = !this.measured;
    this.measured = true;
    this.flushBytesPerMs = first
      ? rate
      : this.flushBytesPerMs + FLUSH_RATE_WEIGHT * (rate - this.flushBytesPerMs);
  }

  get flushRateBytesPerMs(): number {
    return this.flushBytesPerMs;
  }

  /**
   * The allowed write rate in bytes per ms under `debt`: Infinity below both soft limits, else the flush rate times the smaller of the two headrooms left.
   */
  allowedRate(debt: WriteDebt): number {
    let inDebt = false;
    let headroom = 1;
    const soft = this.o.slowdownMemtableFraction * debt.unflushedLimitBytes;
    if (debt.unflushedBytes > soft) {
      inDebt = true;
      const span = debt.unflushedLimitBytes - soft;
      headroom = span > 0 ? Math.max(0, (debt.unflushedLimitBytes - debt.unflushedBytes) / span) : 0;
    }
    if (debt.runs >= this.o.slowdownWritesAtRuns) {
      inDebt = true;
      const span = this.o.stopWritesAtRuns - this.o.slowdownWritesAtRuns + 1;
      headroom = Math.min(headroom, Math.max(0, (this.o.stopWritesAtRuns - debt.runs) / span));
    }
    return inDebt ? this.flushBytesPerMs * headroom : Number.POSITIVE_INFINITY;
  }

  /**
   * How long a group of `bytes` about to be written at `nowMs` waits first (0: none), capped at
   * maxWriteDelayMs. Call `wrote` once it is written.
   */
  delayMs(nowMs: number, debt: WriteDebt): number {
    const rate = this.allowedRate(debt);
    if (rate === Number.POSITIVE_INFINITY) {
      this.nextFreeMs = nowMs;
      return 0;
    }
    if (rate <= 0) return this.o.maxWriteDelayMs;
    return Math.min(this.o.maxWriteDelayMs, Math.max(0, this.nextFreeMs - nowMs));
  }

  /** A group of `bytes` was written at `nowMs` under `debt`: the next one waits for its share of time. */
  wrote(nowMs: number, bytes: number, debt: WriteDebt): void {
    const rate = this.allowedRate(debt);
    if (rate === Number.POSITIVE_INFINITY) {
      this.nextFreeMs = nowMs;
      return;
    }
    const start = Math.max(nowMs, this.nextFreeMs);
    // A debt of more than one maximal delay is not carried over: the hard limits take it from there.
    this.nextFreeMs = Math.min(
      nowMs + this.o.maxWriteDelayMs,
      start + (rate > 0 ? bytes / rate : this.o.maxWriteDelayMs),
    );
  }
}
