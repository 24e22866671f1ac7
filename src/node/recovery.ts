/**
 * A replaced disk: a node that joined under the id of a member the cluster already has (its data
 * directory was lost and it started again with its old --id, an empty --data and --join) holds none of
 * the keys it replicates. Anti-entropy brings them back (anti-entropy/service.ts); until it has, the
 * node is *recovering*, and says so in /status.
 *
 * The state outlives a restart: the start that finds the replacement writes `recovering` in the data
 * directory, and it is removed once recovered, so a node restarted while it recovers goes on recovering.
 * Recovered means: anti-entropy exchanged in full (uncut by its bounds) with every current co-replica
 * since this process started, so every key a co-replica held at that exchange was compared and repaired
 * here (a key written since reached this node by its own write path).
 *
 * File: JSON `{format: "ringstore-recovering", version: 1, sinceMs, crc32}` (stamp-file.ts); replaced
 * durably like the node's other small files (data-dir.ts).
 */
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import { ConfigError } from "./config.js";
import { decodeStamp, encodeStamp } from "./stamp-file.js";

const FORMAT = "ringstore-recovering";
const FIELDS = ["sinceMs"] as const;
/** How often the tracker looks whether anti-entropy has swept every co-replica. */
const LOOK_INTERVAL_MS = 1000;

export function encodeRecovering(sinceMs: number): string {
  return encodeStamp(FORMAT, FIELDS, { sinceMs });
}

/** The time a recovery began, from a `recovering` file's text (`file` names it in errors). */
export function decodeRecovering(text: string, file: string): number {
  const damaged = (why: string) =>
    new ConfigError(
      `${file} is damaged (${why}): it says this node's data directory was replaced and is being refilled by anti-entropy; remove the file and start the node again (it will then not report that it is recovering)`,
    );
  return decodeStamp(text, file, FORMAT, FIELDS, damaged).sinceMs!;
}

export interface RecoveryStatus {
  readonly state: "recovering" | "done";
  /** When the replacement was found (the node's clock, ms since the epoch). */
  readonly since: number;
  /** When every co-replica had been swept in full (null while recovering). */
  readonly doneAt: number | null;
}

export interface RecoveryDeps {
  readonly clock: Clock;
  readonly timers: Timers;
  readonly sinceMs: number;
  /** When anti-entropy last swept every co-replica in full in this process (null: not yet). */
  readonly lastFullSweepAt: () => number | null;
  /** Removes the data directory's `recovering` file (durably). */
  readonly clear: () => Promise<void>;
  /** Told once, when the node has recovered; and of a failure to remove the file (tried again). */
  readonly onDone?: (status: RecoveryStatus) => void;
  readonly onError?: (err: Error) => void;
}

/** Watches a recovering node until anti-entropy has swept every co-replica; then clears the mark. */
export class Recovery {
  private timer: TimerHandle | undefined;
  private doneAt: number | null = null;
  private clearing = false;
  private stopped = false;

  constructor(private readonly d: RecoveryDeps) {}

  get status(): RecoveryStatus {
    return {
      state: this.doneAt === null ? "recovering" : "done",
      since: this.d.sinceMs,
      doneAt: this.doneAt,
    };
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped || this.doneAt !== null) return;
    this.timer = this.d.timers.after(LOOK_INTERVAL_MS, () => {
      this.timer = undefined;
      this.look();
    });
  }

  private look(): void {
    if (this.stopped || this.clearing) return;
    const at = this.d.lastFullSweepAt();
    if (at === null) {
      this.schedule();
      return;
    }
    this.clearing = true;
    this.d.clear().then(
      () => {
        this.clearing = false;
        this.doneAt = this.d.clock.now();
        this.d.onDone?.(this.status);
      },
      (err: Error) => {
        // The mark stays: the node would report recovering again after a restart, which is cautious.
        this.clearing = false;
        this.d.onError?.(err);
        this.schedule();
      },
    );
  }
}
