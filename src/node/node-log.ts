/**
 * The node's log: one JSON object per line on stdout (pino), with `time` (ISO 8601), `level` (its name:
 * trace, debug, info, warn, error, fatal), `node` (the node's id), `msg` (one human sentence: what
 * happened and why) and, for events, `event` (membership, peer, handoff, join, hints, anti_entropy,
 * tombstones, start, stop, security, storage) with the event's figures as fields. Written synchronously: a node
 * logs events, not requests, and a line must not be lost when the process exits right after it.
 *
 * Events that come by the thousand (a hint delivered, a tombstone purged) are counted and logged as one
 * line per kind every `windowMs` (EventTally), with the count and the cause; the first of a burst is
 * logged at once. Handoff passes are watched on the handoff's own progress figures (HandoffWatch), so
 * that each pass is logged once when it starts and once when it ends. A joining node's follow of the
 * handoff its join started is logged by JoinWatch (event `join`): at most one line every few seconds.
 */
import pino, { type Logger } from "pino";
import type { ExchangeResult } from "../anti-entropy/exchange.js";
import type { RebuildReport } from "../anti-entropy/rebuild.js";
import type { HandoffProgress } from "../replication/handoff.js";
import type { Timers } from "../runtime/runtime.js";
import type { JoinProgress, MemberHandoff } from "./join-follower.js";

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

/** A whole number with thousands separators. */
const count = (n: number) => Math.round(n).toLocaleString("en-US");

/** The members of a join's handoff in one state, by id ("" when none). */
function named(p: JoinProgress, state: MemberHandoff["state"]): string[] {
  return p.members.filter((m) => m.state === state).map((m) => m.id);
}

/** The last sentence of a join's handoff: done (and who did not answer), or given up. */
export function joinEndSentence(p: JoinProgress): string {
  const secs = p.endedAt === null ? 0 : Math.round((p.endedAt - p.startedAt) / 1000);
  const figures = `${count(p.keysScanned)} keys scanned, ${count(p.keysSent)} copies sent, ${count(p.keysReceived)} received here`;
  const silent = p.members.filter((m) => m.state === "silent");
  const unanswered =
    silent.length === 0
      ? ""
      : `; ${silent.map((m) => `${m.id} (${m.why ?? "no answer"})`).join(", ")} did not answer: see cluster status (anti-entropy repairs what they hold)`;
  if (p.state === "given_up")
    return `join: stopped following the handoff after ${secs} s, not finished on ${named(p, "busy").join(", ") || "?"} (${figures}); it goes on: see cluster status${unanswered}`;
  return `join: done: the handoff for ring version ${p.ringVersion} finished on ${named(p, "done").join(", ") || "no member"} in ${secs} s (${figures})${unanswered}`;
}

/** A join's handoff of the moment, as one phrase of figures (for the log and the terminal). */
export function joinFigures(p: JoinProgress): string {
  const parts = [
    `${count(p.keysScanned)}${p.keysTotal === null ? "" : ` of ${count(p.keysTotal)}`} keys scanned`,
    `${count(p.keysSent)} copies sent`,
    `${count(p.keysReceived)} received here`,
  ];
  if (p.keysPerSecond !== null) parts.push(`${count(p.keysPerSecond)} keys/s`);
  if (p.etaSeconds !== null) parts.push(`about ${Math.ceil(p.etaSeconds)} s left`);
  if (p.storesFailed > 0) parts.push(`${count(p.storesFailed)} failed (retrying)`);
  const busy = named(p, "busy");
  if (busy.length > 0) parts.push(`waiting for ${busy.join(", ")}`);
  return parts.join(", ");
}

/**
 * Turns a joining node's follow of its handoff (node/join-follower.ts) into log lines: one when it
 * waits for the ring, one when the handoff starts, then one when the figures changed at most every
 * `everyMs`, and the last one, done (naming the members that did not answer) or given up.
 */
export class JoinWatch {
  private lastState: JoinProgress["state"] | undefined;
  private lastAt = Number.NEGATIVE_INFINITY;
  private lastFigures = "";

  constructor(private readonly everyMs = 3000) {}

  look(p: JoinProgress, now: number): LogLine | undefined {
    const changed = p.state !== this.lastState;
    this.lastState = p.state;
    const fields = {
      event: "join",
      phase: p.state,
      ringVersion: p.ringVersion,
      keysScanned: p.keysScanned,
      keysTotal: p.keysTotal,
      keysSent: p.keysSent,
      bytesSent: p.bytesSent,
      keysReceived: p.keysReceived,
      keysPerSecond: p.keysPerSecond === null ? null : Math.round(p.keysPerSecond),
      etaSeconds: p.etaSeconds === null ? null : Math.ceil(p.etaSeconds),
      storesFailed: p.storesFailed,
      membersDone: named(p, "done"),
      membersBusy: named(p, "busy"),
      membersSilent: named(p, "silent"),
    };
    if (p.state === "done" || p.state === "given_up")
      return changed
        ? {
            level: p.state === "done" && fields.membersSilent.length === 0 ? "info" : "warn",
            fields,
            msg: joinEndSentence(p),
          }
        : undefined;
    if (p.state === "waiting")
      return changed
        ? {
            level: "info",
            fields,
            msg: "join: waiting for the ring to include this node (the claimant re-claims it)",
          }
        : undefined;
    const figures = `${p.keysScanned}/${p.keysTotal}/${p.keysSent}/${p.keysReceived}/${p.storesFailed}/${fields.membersBusy.join(",")}`;
    if (!changed && (figures === this.lastFigures || now - this.lastAt < this.everyMs)) return undefined;
    this.lastFigures = figures;
    this.lastAt = now;
    return {
      level: "info",
      fields,
      msg: `join: handoff for ring version ${p.ringVersion}${changed ? " started" : ""}: ${joinFigures(p)}`,
    };
  }
}
