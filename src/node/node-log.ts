/**
 * The node's log: one JSON object per line on stdout (pino), with `time` (ISO 8601), `level` (its name:
 * trace, debug, info, warn, error, fatal), `node` (the node's id), `msg` (one human sentence: what
 * happened and why) and, for events, `event` (membership, peer, handoff, hints, anti_entropy, tombstones,
 * start, stop, security, storage) with the event's figures as fields. Written synchronously: a node
 * logs events, not requests, and a line must not be lost when the process exits right after it.
 *
 * Events that come by the thousand (a hint delivered, a tombstone purged) are counted and logged as one
 * line per kind every `windowMs` (EventTally), with the count and the cause; the first of a burst is
 * logged at once. Handoff passes are watched on the handoff's own progress figures (HandoffWatch), so
 * that each pass is logged once when it starts and once when it ends.
 */
import pino, { type Logger } from "pino";
import type { ExchangeResult } from "../anti-entropy/exchange.js";
import type { RebuildReport } from "../anti-entropy/rebuild.js";
import type { HandoffProgress } from "../replication/handoff.js";
import type { Timers } from "../runtime/runtime.js";

export type NodeLogger = Logger;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function isLogLevel(v: string): v is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(v);
}

/**
 * A logger for node `id` at `level`, writing JSON lines to `fd` (default 1, stdout) synchronously, or
 * to `stream` (tests).
 */
export function createNodeLogger(o: {
  readonly id: string;
  readonly level: LogLevel;
  readonly fd?: number;
  readonly stream?: { write(line: string): void };
}): NodeLogger {
  return pino(
    {
      level: o.level,
      base: { node: o.id },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    o.stream ?? pino.destination({ fd: o.fd ?? 1, sync: true }),
  );
}

/** One kind of counted event: how it is logged once its window ends. */
export interface TallyKind {
  readonly level: "debug" | "info" | "warn";
  readonly event: string;
  /** The sentence for `count` events (and their bytes, when counted) of this key. */
  readonly line: (key: string, count: number, bytes: number) => string;
}

/**
 * Counts events by kind and key, and logs each kind and key at most once per window: the first event
 * at once, then what came during the window as one line when it ends. Bounded: at most `maxKeys` keys
 * are counted apart; more go under the key "other".
 */
export class EventTally {
  private readonly counts = new Map<string, { kind: TallyKind; key: string; count: number; bytes: number }>();
  /** Keys logged at once in this window (their next events wait for the window's end). */
  private readonly open = new Set<string>();
  private timer: { cancel(): void } | undefined;

  constructor(
    private readonly log: NodeLogger,
    private readonly timers: Timers,
    private readonly windowMs = 10_000,
    private readonly maxKeys = 64,
  ) {}

  note(kind: TallyKind, keyIn: string, bytes = 0): void {
    const id0 = `${kind.event}\u0000${keyIn}`;
    const known = this.open.has(id0) || this.counts.has(id0);
    const key = known || this.open.size + this.counts.size < this.maxKeys ? keyIn : "other";
    const id = `${kind.event}\u0000${key}`;
    if (!this.open.has(id)) {
      this.open.add(id);
      this.write(kind, key, 1, bytes);
    } else {
      const c = this.counts.get(id) ?? { kind, key, count: 0, bytes: 0 };
      c.count++;
      c.bytes += bytes;
      this.counts.set(id, c);
    }
    this.timer ??= this.timers.after(this.windowMs, () => {
      this.timer = undefined;
      this.flush();
    });
  }

  private write(kind: TallyKind, key: string, count: number, bytes: number): void {
    this.log[kind.level](
      { event: kind.event, key, count, ...(bytes > 0 ? { bytes } : {}) },
      kind.line(key, count, bytes),
    );
  }

  /** Logs what was counted and starts a new window. */
  flush(): void {
    for (const c of this.counts.values()) this.write(c.kind, c.key, c.count, c.bytes);
    this.counts.clear();
    this.open.clear();
  }

  close(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.flush();
  }
}

export interface LogLine {
  readonly level: "info" | "warn";
  readonly fields: Record<string, unknown>;
  readonly msg: string;
}

/**
 * Watches the handoff's progress figures (looked at every second or so) and says, once each, that a pass
 * started, that it has copies it could not deliver (retrying), and that it is done, with its cause.
 */
export class HandoffWatch {
  private prev: { startedAt: number; passesCompleted: number; warned: boolean } | undefined;

  look(p: HandoffProgress): LogLine[] {
    const prev = this.prev;
    const startedNew = prev !== undefined && p.startedAt !== prev.startedAt;
    this.prev = {
      startedAt: p.startedAt,
      passesCompleted: p.passesCompleted,
      warned: !startedNew && prev !== undefined ? prev.warned : false,
    };
    // The first look only takes the figures in: what came before the node started is not news.
    if (prev === undefined) return [];
    const out: LogLine[] = [];
    const why = p.leaving
      ? "this node is leaving, so every key it holds goes to the keys' new replicas"
      : `the ring changed to version ${p.ringVersion}, so keys whose replicas moved go to their new replicas`;
    if (startedNew && p.startedAt > 0 && p.state !== "idle")
      out.push({
        level: "info",
        fields: { event: "handoff", phase: "started", ringVersion: p.ringVersion, leaving: p.leaving },
        msg: `handoff: a pass started: ${why}`,
      });
    if (p.passesCompleted > prev.passesCompleted)
      out.push({
        level: "info",
        fields: {
          event: "handoff",
          phase: "done",
          ringVersion: p.ringVersion,
          leaving: p.leaving,
          keysScanned: p.keysScanned,
          keysSent: p.keysSent,
        },
        msg: `handoff: the pass for ring version ${p.ringVersion} is done: ${p.keysScanned} keys scanned, ${p.keysSent} copies sent; it ran because ${why}`,
      });
    else if (p.state === "retrying" && p.storesFailed > 0 && !this.prev.warned) {
      this.prev.warned = true;
      out.push({
        level: "warn",
        fields: { event: "handoff", phase: "retrying", storesFailed: p.storesFailed, error: p.lastError },
        msg: `handoff: ${p.storesFailed} copies could not be delivered${p.lastError ? ` (${p.lastError})` : ""}: retrying them`,
      });
    }
    return out;
  }
}

// ------------------------------------------------------------------ the events' lines

export const HINTS_DELIVERED: TallyKind = {
  level: "info",
  event: "hints",
  line: (target, n, bytes) =>
    `hinted handoff: delivered ${n} hint(s) (${bytes} bytes) to ${target}, a replica that had missed those writes`,
};
export const HINTS_DROPPED: Record<"expired" | "removed" | "full" | "corrupt", TallyKind> = {
  full: {
    level: "warn",
    event: "hints",
    line: (target, n) =>
      `hinted handoff: dropped ${n} hint(s) for ${target}: its hints reached --hint-max-bytes (anti-entropy repairs those keys)`,
  },
  corrupt: {
    level: "warn",
    event: "hints",
    line: (target, n) =>
      `hinted handoff: dropped ${n} hint(s) for ${target}: they failed their checksum on disk`,
  },
  expired: {
    level: "warn",
    event: "hints",
    line: (target, n) =>
      `hinted handoff: dropped ${n} hint(s) for ${target}: older than --hint-window (anti-entropy repairs those keys)`,
  },
  removed: {
    level: "info",
    event: "hints",
    line: (target, n) => `hinted handoff: dropped ${n} hint(s) for ${target}: it left the cluster`,
  },
};
export const TOMBSTONES_PURGED: TallyKind = {
  level: "info",
  event: "tombstones",
  line: (_k, n) =>
    `tombstones: purged ${n} deleted key(s): every replica held the delete past --tombstone-grace`,
};
export const TOMBSTONES_KEPT: TallyKind = {
  level: "debug",
  event: "tombstones",
  line: (reason, n) => `tombstones: kept ${n} for now (${reason}); a later sweep tries again`,
};

/** An anti-entropy exchange, logged when it found (and so repaired) differences, or failed. */
export function logExchange(log: NodeLogger, r: ExchangeResult): void {
  if (r.outcome === "differences")
    log.info(
      { event: "anti_entropy", outcome: r.outcome, keys: r.keys.length, partitions: r.differingPartitions },
      `anti-entropy: an exchange found ${r.keys.length} key(s) differing in ${r.differingPartitions} partition(s) between replicas; repairing them`,
    );
  else if (r.outcome === "failed")
    log.warn(
      { event: "anti_entropy", outcome: r.outcome, failure: r.failure },
      `anti-entropy: an exchange failed: ${r.failure ?? "unknown"}`,
    );
  else
    log.debug(
      { event: "anti_entropy", outcome: r.outcome, partitions: r.partitions },
      `anti-entropy: ${r.outcome}`,
    );
}

/** A hash-tree rebuild's end: done, or abandoned with its reason. */
export function logRebuild(log: NodeLogger, r: RebuildReport): void {
  if (r.outcome === "done")
    log.info(
      { event: "anti_entropy", rebuild: "done", partitions: r.partitions, keys: r.keys, damaged: r.damaged },
      `anti-entropy: hash trees of ${r.partitions} partition(s) rebuilt from ${r.keys} keys`,
    );
  else
    log.warn(
      { event: "anti_entropy", rebuild: "abandoned", partitions: r.partitions, reason: r.reason },
      `anti-entropy: a rebuild of ${r.partitions} partition(s) was abandoned: ${r.reason ?? "stopped"}`,
    );
}
