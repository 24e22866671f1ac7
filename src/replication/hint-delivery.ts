/**
 * Hinted handoff's delivery: every node sends the hints it holds (hints.ts) to their targets once these
 * are alive again, on a schedule of its own (every `intervalMs`, and at once when membership changes),
 * never waiting for the node to be idle (Riak's partitions stuck in handoff for a month waited for
 * that). Each node delivers what it holds, so a target's hints arrive from every holder in parallel.
 *
 * - A hint is sent as an ordinary `store` (a causal merge at the target: a hint delivered twice, or one
 *   crossing a newer write, changes nothing), and deleted only once the target acknowledged it durable,
 *   and only if it did not change meanwhile (a newer hint for the same key stays for the next round).
 *   Nothing is kept in memory between rounds: a restart of either side resumes from what is stored.
 * - Paced: at most `maxBytesPerSecond` for all targets together (a token bucket), and a window of stores
 *   in flight per target that grows by one after each page delivered and halves after a failure
 *   (additive increase, multiplicative decrease), so a slow or struggling target gets less.
 * - Bounded in age: a hint older than the hint window is dropped (counted) and left to anti-entropy,
 *   also while its target stays down (looked over at most once a minute, once the oldest is past it).
 * - A target that left the cluster, or was removed, gets nothing more: its hints are sent to the key's
 *   current replicas instead, then discarded.
 *
 * Progress per target is kept in `progress` for /status.
 */
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import type { ReplicaPeer } from "./coordinator.js";
import type { HintRecord, HintStore } from "./hints.js";

export interface HintDeliveryDeps {
  readonly selfId: string;
  readonly hints: HintStore;
  readonly peer: (nodeId: string) => ReplicaPeer;
  /** Is the node alive now (the failure detector sees it up)? */
  readonly alive: (nodeId: string) => boolean;
  /** Has the node left the cluster, or been removed? */
  readonly gone: (nodeId: string) => boolean;
  /** The key's replicas under the current ring. */
  readonly replicasOf: (key: Uint8Array) => readonly string[];
  readonly timers: Timers;
  readonly clock: Clock;
  /** Bytes of hints sent per second at most, all targets together. */
  readonly maxBytesPerSecond: number;
  /** How often the hints held are looked at when nothing else wakes delivery. */
  readonly intervalMs?: number;
  readonly onDelivered?: (target: string, bytes: number) => void;
  readonly onDropped?: (target: string, reason: "expired" | "removed") => void;
}

export interface TargetDelivery {
  state: "idle" | "delivering" | "waiting";
  /** Hints delivered (and deleted here) and their bytes, since this node started. */
  delivered: number;
  deliveredBytes: number;
  /** Sends that failed (each is tried again in a later round). */
  failed: number;
  lastError: string | null;
  lastDeliveredAt: number | null;
  /** Stores this node keeps in flight to the target now (the adaptive window). */
  window: number;
}

const PAGE_KEYS = 64;
const PAGE_BYTES = 1 << 20;
const WINDOW_MIN = 1;
const WINDOW_MAX = 32;
const WINDOW_START = 4;
/** How often the hints of a target that stays down are looked over for expiry, at most. */
const EXPIRY_SCAN_MS = 60_000;

export class HintDelivery {
  readonly progress = new Map<string, TargetDelivery>();
  private timer: TimerHandle | undefined;
  /** When each down target's hints were last looked over for expiry. */
  private readonly expiryScans = new Map<string, number>();
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Token bucket: bytes that may be sent now, and when it was last filled. */
  private tokens: number;
  private filledAt: number;

  constructor(private readonly d: HintDeliveryDeps) {
    this.tokens = d.maxBytesPerSecond;
    this.filledAt = d.clock.now();
  }

  start(): void {
    this.schedule();
  }

  /** Something changed (a target may be back): deliver now rather than at the next interval. */
  kick(): void {
    if (this.stopped) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.round().finally(() => {
      this.running = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        this.kick();
      }
    });
  }

  /** Stops delivering; resolves once the round under way has let go of the store. */
  stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    return this.running ?? Promise.resolve();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.d.timers.after(this.d.intervalMs ?? 1000, () => {
      this.kick();
      this.schedule();
    });
  }

  private progressOf(target: string): TargetDelivery {
    let p = this.progress.get(target);
    if (p === undefined) {
      p = {
        state: "idle",
        delivered: 0,
        deliveredBytes: 0,
        failed: 0,
        lastError: null,
        lastDeliveredAt: null,
        window: WINDOW_START,
      };
      this.progress.set(target, p);
    }
    return p;
  }

  /** One round: every target with hints, at once; each either delivered to, rerouted, or waiting. */
  private async round(): Promise<void> {
    const targets = [...this.d.hints.backlog().keys()];
    await Promise.all(
      targets.map(async (t) => {
        const p = this.progressOf(t);
        if (this.d.gone(t)) await this.pass(t, p, (h) => this.reroute(h));
        else if (this.d.alive(t)) await this.pass(t, p, (h) => this.d.peer(t).store(h.key, h.set));
        else {
          p.state = "waiting";
          await this.expireIfDue(t);
        }
      }),
    );
    for (const [t, p] of this.progress) if (!this.d.hints.backlog().has(t)) p.state = "idle";
  }

  /**
   * For a target that stays down: once its oldest hint is past the window, goes over its hints and drops
   * those past it (a pass sends nothing to a target that is down), at most once per EXPIRY_SCAN_MS.
   */
  private async expireIfDue(target: string): Promise<void> {
    const now = this.d.clock.now();
    const oldest = this.d.hints.backlog().get(target)?.oldestStoredAt ?? null;
    if (oldest === null || now - oldest <= this.d.hints.limits.windowMs) return;
    if (now - (this.expiryScans.get(target) ?? Number.NEGATIVE_INFINITY) < EXPIRY_SCAN_MS) return;
    this.expiryScans.set(target, now);
    let after: Uint8Array | undefined;
    let left: number | null = null;
    for (;;) {
      if (this.stopped) return;
      const { hints, last } = await this.d.hints.page(target, after, PAGE_KEYS, PAGE_BYTES);
      if (last === undefined) break;
      after = last;
      for (const h of hints) {
        if (now - h.storedAt > this.d.hints.limits.windowMs) {
          if (await this.d.hints.remove(target, h.key, h.record)) this.d.onDropped?.(target, "expired");
        } else if (left === null || h.storedAt < left) left = h.storedAt;
      }
    }
    this.d.hints.setOldest(target, left);
  }

  /** Sends a gone target's hint to the key's current replicas (at least one must take it). */
  private async reroute(h: HintRecord): Promise<void> {
    const to = this.d.replicasOf(h.key);
    if (to.length === 0) throw new Error("the key has no replica in the current ring");
    const all = await Promise.allSettled(to.map((id) => this.d.peer(id).store(h.key, h.set)));
    if (all.every((r) => r.status === "rejected"))
      throw new Error(`no current replica of the key took it (${to.join(", ")})`);
  }

  /** Goes once over `target`'s hints, sending each with `send`; stops at the first failure. */
  private async pass(
    target: string,
    p: TargetDelivery,
    send: (h: HintRecord) => Promise<void>,
  ): Promise<void> {
    const gone = this.d.gone(target);
    p.state = "delivering";
    let after: Uint8Array | undefined;
    let oldest: number | null = null;
    let complete = true;
    for (;;) {
      if (this.stopped) return;
      const { hints, last } = await this.d.hints.page(target, after, PAGE_KEYS, PAGE_BYTES);
      if (last === undefined) break;
      after = last;
      const now = this.d.clock.now();
      const live: HintRecord[] = [];
      for (const h of hints) {
        if (now - h.storedAt > this.d.hints.limits.windowMs) {
          if (await this.d.hints.remove(target, h.key, h.record)) this.d.onDropped?.(target, "expired");
        } else live.push(h);
      }
      const ok = await this.sendPage(target, p, live, send, gone);
      if (!ok) {
        complete = false;
        break;
      }
      for (const h of live) if (oldest === null || h.storedAt < oldest) oldest = h.storedAt;
      p.window = Math.min(WINDOW_MAX, p.window + 1);
    }
    // A full pass knows the oldest hint still held (a failed one left some unvisited).
    if (complete) this.d.hints.setOldest(target, oldest);
    p.state = this.d.hints.backlog().has(target) ? "waiting" : "idle";
  }

  /** Sends a page's hints, `p.window` at a time; false after a failure (the rest waits for a round). */
  private async sendPage(
    target: string,
    p: TargetDelivery,
    page: readonly HintRecord[],
    send: (h: HintRecord) => Promise<void>,
    gone: boolean,
  ): Promise<boolean> {
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (next < page.length && !failed && !this.stopped) {
        const h = page[next++]!;
        await this.take(h.record.length);
        try {
          await send(h);
        } catch (err) {
          p.failed++;
          p.lastError = (err as Error)?.message ?? String(err);
          // Once per page: the stores in flight together fail together.
          if (!failed) p.window = Math.max(WINDOW_MIN, Math.floor(p.window / 2));
          failed = true;
          return;
        }
        if (await this.d.hints.remove(target, h.key, h.record)) {
          if (gone) this.d.onDropped?.(target, "removed");
          else {
            p.delivered++;
            p.deliveredBytes += h.record.length;
            p.lastDeliveredAt = this.d.clock.now();
            this.d.onDelivered?.(target, h.record.length);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(p.window, page.length) }, worker));
    return !failed;
  }

  /** Waits until `bytes` may be sent under maxBytesPerSecond. */
  private async take(bytes: number): Promise<void> {
    const rate = this.d.maxBytesPerSecond;
    for (;;) {
      const now = this.d.clock.now();
      this.tokens = Math.min(rate, this.tokens + ((now - this.filledAt) * rate) / 1000);
      this.filledAt = now;
      // A hint larger than a second's worth goes once the bucket is full.
      if (this.tokens >= Math.min(bytes, rate)) {
        this.tokens -= bytes;
        return;
      }
      const waitMs = Math.ceil(((Math.min(bytes, rate) - this.tokens) * 1000) / rate);
      await new Promise<void>((resolve) => this.d.timers.after(Math.max(1, waitMs), resolve));
      if (this.stopped) return;
    }
  }
}
