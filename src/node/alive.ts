/**
 * The node's heartbeat on its own disk, `alive` in its data directory: the last time (its clock, ms since
 * the epoch) it was known to be running, and the last time it was in contact with the cluster (another
 * member up in its view; absences.ts). A start compares the first with the time now to tell how long the
 * node was away (start-plan.ts): a node away longer than the tombstone grace period may hold versions of
 * keys deleted meanwhile, whose tombstones may have been purged since, and is refused unless forced. The
 * second outlives a restart, so that a node cut off for long and restarted meanwhile still knows it.
 *
 * Written at start, every interval while the node runs (`AliveBeat`), and at a clean stop; so after a
 * crash it is at most one interval old, and the time away is never under-estimated by more than that.
 *
 * JSON `{format: "ringstore-alive", version: 1, atMs, contactMs, crc32}` (stamp-file.ts); replaced
 * durably like the node's other small files (data-dir.ts).
 */
import type { TimerHandle, Timers } from "../runtime/runtime.js";
import { ConfigError } from "./config.js";
import { decodeStamp, encodeStamp } from "./stamp-file.js";

const FORMAT = "ringstore-alive";
const FIELDS = ["atMs", "contactMs"] as const;

/** What the heartbeat file holds (ms since the epoch, by the node's clock). */
export interface Alive {
  /** The node was running. */
  readonly atMs: number;
  /** Another member was up in its view (or it had none). */
  readonly contactMs: number;
}

export function encodeAlive(a: Alive): string {
  return encodeStamp(FORMAT, FIELDS, { atMs: a.atMs, contactMs: a.contactMs });
}

/** What an `alive` file's text holds (`file` names it in errors). */
export function decodeAlive(text: string, file: string): Alive {
  const damaged = (why: string) =>
    new ConfigError(
      `${file} is damaged (${why}): it holds the last time this node was running, which its start checks against the tombstone grace period; if you know the node was not away longer than that, remove the file and start it again`,
    );
  const v = decodeStamp(text, file, FORMAT, FIELDS, damaged);
  return { atMs: v.atMs!, contactMs: v.contactMs! };
}

/**
 * Writes the heartbeat every `intervalMs`, one write at a time. A failed write (a full disk) is counted
 * and tried again at the next beat, never thrown: the file is then older than it should be, which can
 * only make a later start more cautious.
 */
export class AliveBeat {
  private timer: TimerHandle | undefined;
  private writing: Promise<void> = Promise.resolve();
  private stopped = false;
  failures = 0;

  constructor(
    private readonly write: () => Promise<void>,
    private readonly timers: Timers,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.timers.after(this.intervalMs, () => {
      this.writing = this.write().then(
        () => undefined,
        () => {
          this.failures++;
        },
      );
      void this.writing.then(() => this.schedule());
    });
  }

  /** No more beats; resolves once the one under way (if any) has ended. */
  stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    return this.writing;
  }
}
