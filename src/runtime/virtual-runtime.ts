/**
 * Virtual time: a deterministic Clock and Timers for tests and the whole-cluster simulator, where many
 * nodes share one scheduler and one timeline (TigerBeetle's simulator, etcd-raft's `Tick()`: time is an
 * input, never read from the machine).
 *
 * Contract:
 * - `now()` moves only when the scheduler fires timers (`advance`, `runFor`, `runUntil`); it never reads
 *   the wall clock.
 * - Timers fire in order of (due time, creation sequence): two timers due at the same instant fire in the
 *   order they were created, so a run is a pure function of the code and its seeds. Do not "optimise"
 *   this into a per-instant batch or a hash map: ties would then depend on insertion accidents.
 * - A timer may be created with a delay of 0; it fires after every timer already due at this instant.
 * - Every queue has a bound: more than `maxTimers` pending timers is a bug (a loop that schedules without
 *   end) and throws.
 *
 * Promises. Code under test (transports, drivers, the storage engine) continues in promise callbacks.
 * `runFor` and `runUntil` let every promise continuation started by a timer run to completion before
 * the clock moves on, as Node's event loop drains microtasks after each timer callback. The only way to
 * know the microtask queue is empty is to yield to the event loop once (`setImmediate`, a macrotask that
 * runs after every queued microtask). That yield never waits on wall time and never decides what
 * happens in the simulation: the order of everything observable stays fixed by the virtual timeline.
 * `advance` is the synchronous variant for code without promises; it does not drain.
 *
 * Randomness comes from `seededRandom` (runtime.ts); `deriveSeed` gives each node or subsystem its own
 * stream, so adding draws in one place does not shift the draws of every other.
 */
import { setImmediate } from "node:timers";
import {
  type Clock,
  type Random,
  type Runtime,
  seededRandom,
  type TimerHandle,
  type Timers,
} from "./runtime.js";

export interface VirtualSchedulerOptions {
  /** The clock's value before anything runs (ms). Default 0. */
  readonly startMs?: number;
  /** Most timers that may be pending at once; one more throws. Default 1,000,000. */
  readonly maxTimers?: number;
}

export const DEFAULT_MAX_TIMERS = 1_000_000;

/** A pending timer; it is its own handle. */
class Entry implements TimerHandle {
  cancelled = false;

  constructor(
    readonly at: number,
    readonly seq: number,
    readonly fn: () => void,
    readonly group: TimerGroup | undefined,
    private readonly scheduler: VirtualScheduler,
  ) {}

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.group?.forget(this);
    this.scheduler.cancelled();
  }
}

/** (due time, creation sequence): the total order of timers. */
function before(a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets every queued promise continuation run (one macrotask later: see the header). */
function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class VirtualScheduler implements Clock, Timers {
  private time: number;
  private seq = 0;
  /** Binary min-heap by `before`. Cancelled entries stay until popped or compacted. */
  private heap: Entry[] = [];
  private live = 0;
  private running = false;
  private readonly maxTimers: number;
  /** Timers fired since creation (for benchmarks and to spot runaway loops). */
  fired = 0;

  constructor(o: VirtualSchedulerOptions = {}) {
    this.time = o.startMs ?? 0;
    this.maxTimers = o.maxTimers ?? DEFAULT_MAX_TIMERS;
    if (!Number.isFinite(this.time)) throw new RangeError(`startMs must be finite, got ${this.time}`);
    if (!(Number.isInteger(this.maxTimers) && this.maxTimers > 0))
      throw new RangeError(`maxTimers must be a positive integer, got ${this.maxTimers}`);
  }

  /** Virtual milliseconds (a property, so that `const { now } = clock` works too). */
  readonly now = (): number => this.time;

  /** Calls `fn` once, `ms` of virtual time from now (negative counts as 0, as in Node). */
  readonly after = (ms: number, fn: () => void): TimerHandle => this.schedule(ms, fn, undefined);

  /** Timers pending (not fired, not cancelled). */
  get pending(): number {
    return this.live;
  }

  /** When the next pending timer is due, or undefined if none is. */
  nextAt(): number | undefined {
    return this.peek()?.at;
  }

  /** A set of timers that can be stopped together: one node's timers, halted when the node crashes. */
  group(): TimerGroup {
    return new TimerGroup(this);
  }

  /** A node's runtime: this clock, its own timer group, and a random stream derived from `seed`. */
  runtime(seed: number): Runtime & { readonly timers: TimerGroup } {
    return { clock: this, timers: this.group(), random: seededRandom(seed) };
  }

  /** @internal TimerGroup schedules through here. */
  schedule(ms: number, fn: () => void, group: TimerGroup | undefined): TimerHandle {
    if (Number.isNaN(ms) || ms === Number.POSITIVE_INFINITY)
      throw new RangeError(`timer delay must be a finite number, got ${ms}`);
    if (this.live >= this.maxTimers)
      throw new Error(
        `virtual scheduler: more than ${this.maxTimers} timers pending (a queue without a bound?)`,
      );
    const e = new Entry(this.time + Math.max(0, ms), this.seq++, fn, group, this);
    this.push(e);
    this.live++;
    group?.track(e);
    return e;
  }

  /** @internal Entry.cancel reports here. */
  cancelled(): void {
    this.live--;
    this.maybeCompact();
  }

  /**
   * Fires, synchronously and in order, every timer due within `ms` from now; the clock ends at now + ms.
   * Promise continuations do not run in between (use `runFor` for code that uses promises).
   * Returns how many timers fired.
   */
  advance(ms: number): number {
    this.enter();
    try {
      const until = this.time + this.checkSpan(ms);
      let n = 0;
      for (let e = this.takeDue(until); e !== undefined; e = this.takeDue(until)) {
        this.fire(e);
        n++;
      }
      this.time = until;
      return n;
    } finally {
      this.running = false;
    }
  }

  /** Like `advance`, but every promise continuation a timer starts runs before the clock moves on. */
  async runFor(ms: number): Promise<number> {
    this.enter();
    try {
      const until = this.time + this.checkSpan(ms);
      await drainMicrotasks();
      let n = 0;
      for (let e = this.takeDue(until); e !== undefined; e = this.takeDue(until)) {
        this.fire(e);
        n++;
        await drainMicrotasks();
      }
      this.time = until;
      return n;
    } finally {
      this.running = false;
    }
  }

  /**
   * Runs timers (draining promises after each) until `predicate` holds, checked before the first timer
   * and after each one, or until `maxMs` of virtual time have passed. Returns whether it held. On success
   * the clock is at the instant it first held (as seen at timer granularity); otherwise at now + maxMs.
   */
  async runUntil(predicate: () => boolean, maxMs: number): Promise<boolean> {
    this.enter();
    try {
      const until = this.time + this.checkSpan(maxMs);
      await drainMicrotasks();
      if (predicate()) return true;
      for (let e = this.takeDue(until); e !== undefined; e = this.takeDue(until)) {
        this.fire(e);
        await drainMicrotasks();
        if (predicate()) return true;
      }
      this.time = until;
      return predicate();
    } finally {
      this.running = false;
    }
  }

  /** Runs the simulation until `p` settles, and returns its value; throws if it is still pending after maxMs. */
  async runUntilSettled<T>(p: Promise<T>, maxMs: number): Promise<T> {
    let settled = false;
    p.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    if (!(await this.runUntil(() => settled, maxMs)))
      throw new Error(`virtual scheduler: a promise was still pending after ${maxMs} ms of virtual time`);
    return p;
  }

  // ------------------------------------------------------------------ internals

  private enter(): void {
    // Two run loops interleaving on one timeline would make the order of timers depend on the event loop.
    if (this.running)
      throw new Error("virtual scheduler: already running (a run was started from inside one)");
    this.running = true;
  }

  private checkSpan(ms: number): number {
    if (!(Number.isFinite(ms) && ms >= 0))
      throw new RangeError(`a span of virtual time must be >= 0, got ${ms}`);
    return ms;
  }

  private fire(e: Entry): void {
    this.time = e.at;
    this.live--;
    e.cancelled = true; // fired: a later cancel() is a no-op
    e.group?.forget(e);
    this.fired++;
    e.fn();
  }

  /** Removes and returns the next live timer due at or before `until`. */
  private takeDue(until: number): Entry | undefined {
    const e = this.peek();
    if (e === undefined || e.at > until) return undefined;
    this.pop();
    return e;
  }

  /** The next live timer (cancelled ones at the top are discarded on the way). */
  private peek(): Entry | undefined {
    while (this.heap.length > 0 && this.heap[0]!.cancelled) this.pop();
    return this.heap[0];
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(e, h[parent]!)) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.siftDown(0);
    }
  }

  private siftDown(i: number): void {
    const h = this.heap;
    const e = h[i]!;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && before(h[r]!, h[l]!) ? r : l;
      if (!before(h[c]!, e)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = e;
  }

  /** Cancelled timers (request timeouts, mostly) would pile up in the heap: rebuild it when they dominate. */
  private maybeCompact(): void {
    const h = this.heap;
    if (h.length < 1024 || h.length - this.live < h.length / 2) return;
    this.heap = h.filter((e) => !e.cancelled);
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }
}

/**
 * One node's timers on the shared scheduler. `halt()` cancels them all and ignores any scheduled later:
 * a crashed process runs no more code, even if a promise of it settles afterwards. `pause()` holds
 * back every timer that falls due until `resume()`, which fires them in the order they fell due (a
 * stopped process: its timers are late, none is lost, none fires twice).
 */
export class TimerGroup implements Timers {
  private readonly entries = new Set<TimerHandle>();
  private stopped = false;
  private pausedNow = false;
  /** Timers that fell due while paused, in order; a cancel() before resume() still cancels them. */
  private readonly overdue: { fn: () => void; cancelled: boolean }[] = [];
  /** Timers asked for after `halt()` (and so never scheduled). */
  ignored = 0;

  constructor(private readonly scheduler: VirtualScheduler) {}

  readonly after = (ms: number, fn: () => void): TimerHandle => {
    if (this.stopped) {
      this.ignored++;
      return { cancel: () => undefined };
    }
    let late: { fn: () => void; cancelled: boolean } | undefined;
    const entry = this.scheduler.schedule(
      ms,
      () => {
        if (!this.pausedNow) return fn();
        late = { fn, cancelled: false };
        this.overdue.push(late);
      },
      this,
    );
    return {
      cancel: () => {
        entry.cancel();
        if (late !== undefined) late.cancelled = true;
      },
    };
  };

  get halted(): boolean {
    return this.stopped;
  }

  get paused(): boolean {
    return this.pausedNow;
  }

  /** Holds back every timer of the group that falls due from now until `resume()`. */
  pause(): void {
    this.pausedNow = true;
  }

  /** Fires the timers that fell due while paused (in that order, now), and lets later ones run on time. */
  resume(): void {
    this.pausedNow = false;
    for (const t of this.overdue.splice(0)) if (!t.cancelled && !this.stopped) t.fn();
  }

  /** Timers of this group still pending. */
  get pending(): number {
    return this.entries.size;
  }

  /** Cancels every pending timer of the group; timers asked for from now on are ignored. */
  halt(): void {
    this.stopped = true;
    this.overdue.length = 0;
    // cancel() calls forget(), which deletes from the set: iterate over a copy.
    for (const e of [...this.entries]) e.cancel();
  }

  /** @internal */
  track(e: TimerHandle): void {
    this.entries.add(e);
  }

  /** @internal */
  forget(e: TimerHandle): void {
    this.entries.delete(e);
  }
}

/**
 * A node's own clock on the shared timeline: virtual time plus a fixed offset, running `1 + drift` times
 * as fast (clock skew between machines; drift of a cheap crystal is ~1e-5, a VM's can be far worse).
 * Monotonic as long as 1 + drift > 0. Only what the node reads as "now" is skewed: its timers stay on the
 * shared scheduler (a timeout of 500 ms is 500 ms of virtual time), as a machine's timers are driven by
 * its monotonic clock, not by the wall clock it reports.
 */
export function skewedClock(base: Clock, offsetMs: number, drift = 0): Clock {
  if (!(Number.isFinite(offsetMs) && Number.isFinite(drift) && drift > -1))
    throw new RangeError(`skew needs a finite offset and drift > -1, got ${offsetMs}, ${drift}`);
  const t0 = base.now();
  return { now: () => Math.floor(t0 + offsetMs + (base.now() - t0) * (1 + drift)) };
}

/** A 32-bit seed for stream `label` of run `seed` (MurmurHash3's finalizer over both). */
export function deriveSeed(seed: number, label: string | number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  const s = String(label);
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0; // FNV-1a step
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A Random seeded for stream `label` of run `seed`. */
export function derivedRandom(seed: number, label: string | number): Random {
  return seededRandom(deriveSeed(seed, label));
}
