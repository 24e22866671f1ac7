/**
 * What the dashboard (`GET /ui`) shows, kept by the node itself: every `sampleMs` it closes a sample of
 * its request rates and latencies (NodeMetrics.history, a fixed-size ring buffer, so a page opened now
 * has the last minutes at once), looks at its status to compute the rates and time left of handoff,
 * hint delivery and anti-entropy, and records what changed in its view of the members and the ring in
 * the event log (core/event-log.ts, which others may record into too). `document()` answers
 * `GET /ui/state` (views.ts, DashboardDocument) from the status of the moment and those samples.
 *
 * Cheap by construction: a sample is a few numbers per operation, the status is built as for
 * `GET /status`, and the hints' partitions are looked at (a bounded read) at most every `hintLookMs`.
 */
import type { ClusterEvent, EventLog } from "../core/event-log.js";
import type { ManualCompactionProgress } from "../storage/engine.js";
import type { NodeMetrics } from "./metrics.js";
import { CHARTED_OPS } from "./request-history.js";
import type {
  DashboardCompaction,
  DashboardDocument,
  DashboardPending,
  DashboardProgress,
  DashboardStorage,
  StatusDocument,
  WorkProgress,
} from "./views.js";

/** What the dashboard reads of its node. */
export interface DashboardSources {
  /** Wall clock, ms since the epoch. */
  readonly now: () => number;
  readonly status: () => Promise<StatusDocument>;
  /** The owner of each partition in this node's ring ([] without one). */
  readonly owners: () => readonly string[];
  /** How many partitions each member holds a replica of, in this node's ring. */
  readonly replicas: () => ReadonlyMap<string, number>;
  /** Partitions whose replicas changed since this node's last complete handoff pass ([] when idle). */
  readonly handoffPending: () => readonly number[];
  /** Partitions of the keys this node holds hints for, from a bounded look (complete: it saw them all). */
  readonly hintPartitions: () => Promise<{
    readonly partitions: readonly number[];
    readonly complete: boolean;
  }>;
  /** Partitions in which the last exchange with each co-replica found keys differing. */
  readonly antiEntropyPending: () => readonly number[];
  /** The last census of the keys stored here, or null. */
  readonly census: () => { readonly live: number; readonly tombstones: number; readonly at: number } | null;
}

export interface DashboardOptions {
  /** Between two samples. Default 2000 ms. */
  readonly sampleMs?: number;
  /** Between two looks at the hints' partitions. Default 10000 ms. */
  readonly hintLookMs?: number;
}

/** Figures of the previous look, for rates. */
interface Previous {
  readonly at: number;
  readonly handoffStartedAt: number;
  readonly handoffScanned: number;
  readonly delivered: ReadonlyMap<string, number>;
  readonly repaired: number;
  readonly diskBytes: number;
}

const rate = (delta: number, ms: number): number | null =>
  ms > 0 && delta >= 0 ? (delta * 1000) / ms : null;
const eta = (left: number | null, r: number | null): number | null =>
  left === null || left <= 0 || r === null || r <= 0 ? null : Math.round(left / r);

export class Dashboard {
  readonly sampleMs: number;
  private readonly hintLookMs: number;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private prev: Previous | undefined;
  private progress: DashboardProgress | undefined;
  private diskWriteRate: number | null = null;
  private states = new Map<string, string>();
  private owners: readonly string[] = [];
  private hints: { at: number; partitions: readonly number[]; complete: boolean } | undefined;

  constructor(
    private readonly metrics: NodeMetrics,
    private readonly sources: DashboardSources,
    readonly events: EventLog,
    options: DashboardOptions = {},
  ) {
    this.sampleMs = options.sampleMs ?? 2000;
    this.hintLookMs = options.hintLookMs ?? 10_000;
  }

  /** Samples every `sampleMs` from now on (the first sample ends one interval from now). */
  start(): void {
    if (this.timer !== undefined) return;
    this.metrics.history.sample(this.sources.now());
    void this.tick();
    this.timer = setInterval(() => {
      if (this.ticking === undefined) void this.tick();
    }, this.sampleMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    return this.ticking ?? Promise.resolve();
  }

  /** One look: a request sample, rates, and the events of the members' and ring's changes. */
  tick(): Promise<void> {
    this.ticking ??= this.look()
      .catch(() => undefined)
      .finally(() => {
        this.ticking = undefined;
      });
    return this.ticking;
  }

  private async look(): Promise<void> {
    const now = this.sources.now();
    if (this.prev !== undefined) this.metrics.history.sample(now);
    const s = await this.sources.status();
    this.watchMembers(s, now);
    this.watchRing(now);
    const p = this.prev;
    const ms = p === undefined ? 0 : now - p.at;
    const h = s.handoff;
    const scannedDelta =
      p !== undefined && p.handoffStartedAt === h.startedAt ? h.keysScanned - p.handoffScanned : -1;
    const handoffRate = h.state === "running" ? rate(scannedDelta, ms) : null;
    const held = this.sources.census();
    const handoffTotal = h.state === "idle" ? null : held === null ? null : held.live + held.tombstones;
    const delivered = new Map(s.hintedHandoff.targets.map((t) => [t.target, t.delivered] as const));
    const ae = s.antiEntropy;
    const aeRate = p === undefined ? null : rate(ae.keysRepaired - p.repaired, ms);
    const aePending = this.sources.antiEntropyPending();
    const last = ae.lastExchanges[ae.lastExchanges.length - 1];
    this.progress = {
      handoff: {
        state: h.state,
        rate: handoffRate,
        unit: "keys",
        done: h.keysScanned,
        total: handoffTotal,
        etaSeconds:
          h.state === "running"
            ? eta(handoffTotal === null ? null : handoffTotal - h.keysScanned, handoffRate)
            : null,
        ringVersion: h.ringVersion,
        leaving: h.leaving,
        throttleBytesPerSecond: h.throttleBytesPerSecond,
      },
      join: s.join ?? null,
      hints: s.hintedHandoff.targets.map((t) => {
        const before = p?.delivered.get(t.target);
        const r = before === undefined ? null : rate(t.delivered - before, ms);
        return {
          target: t.target,
          state: t.state,
          rate: r,
          unit: "hints",
          done: t.delivered,
          total: t.delivered + t.count,
          etaSeconds: eta(t.count, r),
          bytes: t.bytes,
        };
      }),
      antiEntropy: {
        enabled: ae.enabled,
        paused: ae.paused,
        state: !ae.enabled
          ? "off"
          : ae.paused
            ? "paused"
            : ae.rebuild?.state === "running"
              ? "rebuilding trees"
              : aePending.length > 0 || last?.capped === true
                ? "repairing"
                : last === undefined
                  ? "waiting"
                  : "in sync",
        rate: aeRate,
        unit: "keys repaired",
        done: ae.keysRepaired,
        total: null,
        etaSeconds: null,
        lastFullSweepAgeMs: ae.lastFullSweepAgeMs,
        exchanges: ae.exchanges,
      },
    };
    const disk = s.storage.diskBytesWritten;
    this.diskWriteRate = p === undefined ? null : rate(disk - p.diskBytes, ms);
    this.prev = {
      at: now,
      handoffStartedAt: h.startedAt,
      handoffScanned: h.keysScanned,
      delivered,
      repaired: ae.keysRepaired,
      diskBytes: disk,
    };
    const backlog = s.hintedHandoff.backlog;
    const stale =
      this.hints === undefined ||
      now - this.hints.at >= this.hintLookMs ||
      // Hints appeared since the last look (a node went down): look again at once.
      (backlog > 0 && this.hints.partitions.length === 0);
    if (stale) {
      const got =
        s.hintedHandoff.backlog === 0
          ? { partitions: [], complete: true }
          : await this.sources.hintPartitions();
      this.hints = { at: now, partitions: got.partitions, complete: got.complete };
    }
  }

  private watchMembers(s: StatusDocument, now: number): void {
    const first = this.states.size === 0;
    const next = new Map(s.members.map((m) => [m.id, m.state] as const));
    if (first) {
      this.events.record({
        at: now,
        kind: "note",
        member: s.node.id,
        detail: `${s.node.id} started watching: ${[...next].map(([id, st]) => `${id} ${st}`).join(", ")}`,
      });
    } else
      for (const [id, st] of next) {
        const was = this.states.get(id);
        if (was === undefined)
          this.events.record({
            at: now,
            kind: "joined",
            member: id,
            to: st,
            detail: `${id} appeared (${st})`,
          });
        else if (was !== st)
          this.events.record({
            at: now,
            kind: "state",
            member: id,
            from: was,
            to: st,
            detail: `${id}: ${was} -> ${st}`,
          });
      }
    this.states = next;
  }

  private watchRing(now: number): void {
    const owners = this.sources.owners();
    const before = this.owners;
    this.owners = owners;
    if (before.length === 0 || owners.length !== before.length) return;
    let moved = 0;
    for (let p = 0; p < owners.length; p++) if (owners[p] !== before[p]) moved++;
    if (moved > 0)
      this.events.record({
        at: now,
        kind: "ring",
        detail: `the ring changed: ${moved} of ${owners.length} partitions have a new owner`,
      });
  }

  /** `GET /ui/state`: samples ended after `since` (ms), events after sequence number `eventsAfter`. */
  async document(since: number, eventsAfter: number): Promise<DashboardDocument> {
    const s = await this.sources.status();
    const now = this.sources.now();
    const owners = this.sources.owners();
    const ids = s.members.map((m) => m.id);
    const index = new Map(ids.map((id, i) => [id, i] as const));
    const replicated = this.sources.replicas();
    const ownedBy = new Map<string, number>();
    for (const o of owners) ownedBy.set(o, (ownedBy.get(o) ?? 0) + 1);
    const st = s.storage;
    const hits = st.blockCacheHits + st.blockCacheMisses;
    const census = this.sources.census();
    const storage: DashboardStorage = {
      engine: st.engine,
      tables: st.levels.reduce((n, l) => n + l.tables, 0),
      sortedRuns: st.levels.length,
      diskBytes: st.levels.reduce((n, l) => n + l.bytes, 0),
      memtableBytes: st.memtableBytes,
      flushes: st.flushes,
      compactions: st.compactions,
      writeAmplification: st.writeAmplification,
      writeStalls: st.writeStalls,
      writeStallMs: st.writeStallMs,
      blockCacheHitRatio: hits === 0 ? null : st.blockCacheHits / hits,
      diskWriteRate: this.diskWriteRate,
      keys:
        census === null
          ? null
          : { live: census.live, tombstones: census.tombstones, ageMs: Math.max(0, now - census.at) },
      fullCompaction: fullCompaction(st.manualCompaction, now),
    };
    const pending: DashboardPending = {
      handoff: this.sources.handoffPending(),
      hints: this.hints?.partitions ?? [],
      hintsComplete: this.hints?.complete ?? true,
      antiEntropy: this.sources.antiEntropyPending(),
    };
    return {
      at: now,
      sampleMs: this.sampleMs,
      node: s.node,
      cluster: s.cluster,
      members: s.members.map((m) => ({
        id: m.id,
        api: m.api,
        peer: m.peer,
        state: m.state,
        zone: m.zone,
        weight: m.weight,
        owned: ownedBy.get(m.id) ?? 0,
        replicated: replicated.get(m.id) ?? 0,
        self: m.id === s.node.id,
      })),
      owners: owners.map((o) => index.get(o) ?? -1),
      pending,
      progress: this.progress ?? emptyProgress(),
      storage,
      requests: {
        ops: CHARTED_OPS,
        samples: this.metrics.history.samples(since).map((x) => ({
          at: x.at,
          ms: x.ms,
          ops: CHARTED_OPS.map((op) => {
            const o = x.ops[op];
            return [o.count, o.errors, o.p50, o.p99] as const;
          }),
        })),
      },
      events: this.events.since(eventsAfter).map((e: ClusterEvent) => ({ ...e })),
    };
  }
}

function emptyProgress(): DashboardProgress {
  const none: WorkProgress = { state: "idle", rate: null, unit: "", done: 0, total: null, etaSeconds: null };
  return {
    handoff: { ...none, unit: "keys", ringVersion: 0, leaving: false, throttleBytesPerSecond: 0 },
    join: null,
    hints: [],
    antiEntropy: {
      ...none,
      unit: "keys repaired",
      enabled: false,
      paused: false,
      lastFullSweepAgeMs: null,
      exchanges: 0,
    },
  };
}

/** The dashboard's view of the last full compaction asked for (null: none). */
function fullCompaction(c: ManualCompactionProgress, now: number): DashboardCompaction | null {
  if (c.state === "idle") return null;
  const at = c.state === "running" ? c.startedAt : c.finishedAt;
  return {
    state: c.state,
    phase: c.phase,
    bytesDone: c.bytesDone,
    bytesTotal: c.bytesTotal,
    bytesPerSecond: c.bytesPerSecond,
    tablesBefore: c.tablesBefore,
    tablesAfter: c.tablesAfter,
    ageMs: at === null ? 0 : Math.max(0, now - at),
    error: c.error === null ? null : c.error.message,
  };
}
