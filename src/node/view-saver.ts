/**
 * Saves the node's view (members.json) after every change of the membership epoch, in the background and
 * in order: one save at a time, and the changes that come meanwhile coalesce into one more save of the
 * latest view. A failed save (a full disk, an I/O error) never stops the node: it is counted, reported in
 * /status, and retried after a wait that doubles up to RETRY_MAX_MS, until a save succeeds. The view on
 * disk is then at worst older than the one in memory, which a restart catches up by gossip.
 *
 * A change that must be durable before it is acknowledged (a leave, a removal) waits with `persist`.
 */
import type { TimerHandle, Timers } from "../runtime/runtime.js";
import type { SavedView } from "./saved-view.js";

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 10_000;

export interface ViewSaveStatus {
  /** Saves that succeeded, and that failed (each retry that failed counts). */
  saved: number;
  failed: number;
  /** The last failure's message while saves are failing, else null. */
  lastError: string | null;
  /** A save is waiting to retry after a failure. */
  retrying: boolean;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export class ViewSaver {
  private running = false;
  private again = false;
  private retryDelay = RETRY_MIN_MS;
  private retryTimer: TimerHandle | undefined;
  private stopped = false;
  /** Callers of persist() waiting for a save that starts after their call. */
  private waiters: Waiter[] = [];
  private idle: Promise<void> = Promise.resolve();
  readonly status: ViewSaveStatus = { saved: 0, failed: 0, lastError: null, retrying: false };

  constructor(
    private readonly view: () => SavedView,
    private readonly write: (v: SavedView) => Promise<void>,
    private readonly timers: Timers,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {}

  /** The view changed: save it (now, or after the save under way). */
  save(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.status.retrying = false;
    this.running = true;
    this.idle = this.loop().finally(() => {
      this.running = false;
    });
  }

  /** Saves the view as it is now; resolves once that is durable, rejects if that save failed. */
  persist(): Promise<void> {
    if (this.stopped) return Promise.reject(new Error("the node is stopping: its view is no longer saved"));
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.save();
    return p;
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      const waiting = this.waiters;
      this.waiters = [];
      try {
        await this.write(this.view());
        this.status.saved++;
        this.status.lastError = null;
        this.retryDelay = RETRY_MIN_MS;
        for (const w of waiting) w.resolve();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        this.status.failed++;
        this.status.lastError = e.message;
        this.onError(e);
        for (const w of waiting) w.reject(e);
        if (this.stopped) return;
        this.status.retrying = true;
        const delay = this.retryDelay;
        this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX_MS);
        this.retryTimer = this.timers.after(delay, () => {
          this.retryTimer = undefined;
          this.save();
        });
        return;
      }
    } while ((this.again || this.waiters.length > 0) && !this.stopped);
  }

  /** A stop: no more background saves; waits for the one under way, then saves the view once more. */
  async flush(): Promise<void> {
    this.halt();
    await this.idle;
    await this.write(this.view());
    this.status.saved++;
  }

  /** Stops saving at once (a crash in the simulator: nothing more is written). */
  halt(): void {
    this.stopped = true;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    const e = new Error("the node is stopping: its view is no longer saved");
    for (const w of this.waiters.splice(0)) w.reject(e);
  }
}
