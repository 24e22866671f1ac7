/**
 * A log that a flood cannot flood: events under a key (a peer's address, a sender) are written one line
 * each, at most `linesPerWindow` lines per window and one per key per window; the others are counted and
 * summed up in one line when the window ends ("... 5000 more in the last 10 s: 127.0.0.1 (4990), ...").
 * So a node under a connection flood writes at most linesPerWindow + 1 lines per window, and still names
 * who it refused. Memory is bounded too: at most `maxKeys` keys are remembered per window; the rest are
 * counted together.
 */
import type { Clock, TimerHandle, Timers } from "./runtime.js";

export interface BoundedLogOptions {
  readonly clock: Clock;
  readonly timers: Timers;
  readonly write: (line: string) => void;
  /** Default 10 s. */
  readonly windowMs?: number;
  /** Lines written as they come, per window. Default 10. */
  readonly linesPerWindow?: number;
  /** Keys remembered per window. Default 64. */
  readonly maxKeys?: number;
  /** The summary line's opening, given the count held back (e.g. "refused 12 more peer connections"). */
  readonly summary: (held: number) => string;
}

/** Keys named in a summary line, the busiest first. */
const NAMED_IN_SUMMARY = 5;

export class BoundedLog {
  private windowStart = Number.NEGATIVE_INFINITY;
  private written = 0;
  /** Keys logged or held back in this window, with how many were held back. */
  private readonly keys = new Map<string, number>();
  /** Held back under keys not remembered (beyond maxKeys). */
  private unkeyed = 0;
  private held = 0;
  private timer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly o: BoundedLogOptions) {}

  private get windowMs(): number {
    return this.o.windowMs ?? 10_000;
  }

  note(key: string, line: string): void {
    if (this.closed) return;
    const now = this.o.clock.now();
    if (now - this.windowStart >= this.windowMs && this.held === 0) {
      this.windowStart = now;
      this.written = 0;
      this.keys.clear();
    }
    const seen = this.keys.get(key);
    if (seen === undefined && this.written < (this.o.linesPerWindow ?? 10)) {
      this.written++;
      if (this.keys.size < (this.o.maxKeys ?? 64)) this.keys.set(key, 0);
      this.o.write(line);
      return;
    }
    this.held++;
    if (seen !== undefined) this.keys.set(key, seen + 1);
    else if (this.keys.size < (this.o.maxKeys ?? 64)) this.keys.set(key, 1);
    else this.unkeyed++;
    this.timer ??= this.o.timers.after(Math.max(0, this.windowStart + this.windowMs - now), () =>
      this.flush(),
    );
  }

  /** Writes the summary of what was held back, and starts a new window. */
  private flush(): void {
    this.timer = undefined;
    if (this.held > 0) {
      const top = [...this.keys].filter(([, n]) => n > 0).sort((x, y) => y[1] - x[1]);
      const named = top.slice(0, NAMED_IN_SUMMARY).map(([k, n]) => `${k} (${n})`);
      const rest = top.slice(NAMED_IN_SUMMARY).reduce((sum, [, n]) => sum + n, 0) + this.unkeyed;
      if (rest > 0) named.push(`others (${rest})`);
      this.o.write(
        `${this.o.summary(this.held)} in the last ${Math.round(this.windowMs / 1000)} s: ${named.join(", ")}`,
      );
    }
    this.held = 0;
    this.unkeyed = 0;
    this.keys.clear();
    this.written = 0;
    this.windowStart = this.o.clock.now();
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
  }
}
