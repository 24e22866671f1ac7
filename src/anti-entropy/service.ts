/**
 * Anti-entropy as a node runs it (Dynamo 4.7): in the background, by itself, it exchanges trees with the
 * other replicas of its partitions (exchange.ts, driven by driver.ts over the peer protocol) and repairs
 * the keys that differ by a causal merge both ways, so that replicas that drifted apart (a lost hint, a
 * dropped message, a replaced disk) come back together without anyone reading the keys.
 *
 * - One exchange at a time, with one peer, over the partitions both replicate. Peers take turns every
 *   `intervalMs`; an exchange that found differences, or was cut by its bounds, is followed at once by
 *   the next with the same peer (resuming where it was cut), so a large drift is worked through quickly.
 * - Repairs are paced: at most `keysPerSecond` keys repaired (a token bucket), and an exchange's own bounds
 *   (exchange.ts ExchangeLimits) bound the segments, keys and bytes of each.
 * - A repair reads the peer's set, merges it here (Replica.mergeChanged: the ordinary merge, idempotent),
 *   and stores the merged set at the peer when the peer lacked part of it.
 * - While this node's trees are being rebuilt (after an unclean stop), the partitions being rebuilt are
 *   unavailable: exchanges skip them, here and at peers that ask.
 * - `pause()` and `resume()`: an operator's switch; a paused node still answers its peers' exchanges.
 *
 * Deterministic: time, timers and the network come in through the deps.
 */
import type { ReplicaPeer } from "../replication/coordinator.js";
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import type { StoredSibling } from "../versioning/object-codec.js";
import { answerKeysRequest, driveExchange } from "./driver.js";
import { DEFAULT_EXCHANGE_LIMITS, Exchange, type ExchangeLimits, type ExchangeResult } from "./exchange.js";
import type { AeHashesAnswer, AeKeyDiffsAnswer, AeKeysRequest, AeTreeRequest } from "./messages.js";
import {
  DEFAULT_REBUILD_PAGING,
  type RebuildPaging,
  type RebuildReport,
  runRebuild,
  type ScanSource,
} from "./rebuild.js";
import { answerTreeRequest } from "./responder.js";
import type { TreeSet } from "./tree-set.js";

export interface AntiEntropyDeps {
  readonly selfId: string;
  readonly trees: TreeSet;
  /** This node's sets (its replica): scanned, and merged into by repairs. */
  readonly data: ScanSource & {
    read(key: Uint8Array): Promise<StoredSibling[]>;
    mergeChanged(
      key: Uint8Array,
      set: readonly StoredSibling[],
    ): Promise<{ set: StoredSibling[]; changed: boolean }>;
  };
  readonly partitionOf: (key: Uint8Array) => number;
  /** The other replicas of this node's partitions that are up now, in a stable order. */
  readonly peers: () => readonly string[];
  /** The partitions this node and `peer` both replicate now. */
  readonly shared: (peer: string) => readonly number[];
  /** A tree request to `peer`, answered. */
  readonly askTrees: (peer: string, request: AeTreeRequest) => Promise<AeHashesAnswer>;
  /** A key request to `peer`, answered. */
  readonly askKeys: (peer: string, request: AeKeysRequest) => Promise<AeKeyDiffsAnswer>;
  /** The replica of `peer` (reads and stores for the repairs). */
  readonly peer: (id: string) => ReplicaPeer;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly intervalMs: number;
  /** The pause between an exchange's two looks at its segments. */
  readonly pauseMs: number;
  readonly keysPerSecond: number;
  readonly limits?: ExchangeLimits;
  readonly paging?: Omit<RebuildPaging, "yieldNow">;
  /** Keys repaired, by whom (here, or at the peer). */
  readonly onRepaired?: (where: "local" | "remote") => void;
  readonly onExchange?: (r: ExchangeResult) => void;
  readonly onRebuild?: (r: RebuildReport) => void;
}

/** One exchange as /status shows it. */
export interface ExchangeRecord {
  readonly peer: string;
  readonly at: number;
  readonly outcome: ExchangeResult["outcome"] | "error";
  readonly partitions: number;
  readonly differingSegments: number;
  readonly keysDiffering: number;
  readonly keysRepaired: number;
  readonly bytes: number;
  readonly capped: boolean;
  readonly error: string | null;
}

/** Exchanges kept for /status. */
const RECENT_MAX = 16;
/** A peer that failed an exchange waits this long before its next turn. */
const FAILED_PEER_WAIT_MS = 5000;

export class AntiEntropy {
  private timer: TimerHandle | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private pausedByOperator = false;
  private turn = 0;
  private readonly resumeFrom = new Map<string, number>();
  private readonly failedAt = new Map<string, number>();
  /** Per peer: when its last exchange ran to its end without a cut (it then covered every shared partition). */
  private readonly sweptAt = new Map<string, number>();
  private tokens: number;
  private filledAt: number;
  readonly recent: ExchangeRecord[] = [];
  readonly totals = { exchanges: 0, keysRepaired: 0, failed: 0 };
  rebuildProgress: { startedAt: number; partitions: number; report: RebuildReport | null } | null = null;

  constructor(private readonly d: AntiEntropyDeps) {
    this.tokens = d.keysPerSecond;
    this.filledAt = d.clock.now();
  }

  get paused(): boolean {
    return this.pausedByOperator;
  }

  start(): void {
    this.schedule(this.d.intervalMs);
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.d.trees.activeRebuild?.abandon("the node is stopping");
    return this.running ?? Promise.resolve();
  }

  pause(): void {
    this.pausedByOperator = true;
  }

  resume(): void {
    this.pausedByOperator = false;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer?.cancel();
    this.timer = this.d.timers.after(ms, () => {
      this.timer = undefined;
      if (this.running !== undefined) return;
      this.running = this.tick().finally(() => {
        this.running = undefined;
      });
    });
  }

  /** When the last full sweep ended: every peer's last exchange ran uncut (null until that happened). */
  lastFullSweepAt(): number | null {
    const peers = this.d.peers();
    if (peers.length === 0) return null;
    let oldest = Number.POSITIVE_INFINITY;
    for (const p of peers) {
      const at = this.sweptAt.get(p);
      if (at === undefined) return null;
      oldest = Math.min(oldest, at);
    }
    return oldest;
  }

  /**
   * Has every current co-replica, in its last exchange with this node started at or after `since`,
   * compared in sync (every shared root equal)? False while a rebuild runs.
   */
  inSyncSince(since: number): boolean {
    if (this.d.trees.activeRebuild !== undefined) return false;
    for (const p of this.d.peers()) {
      let last: ExchangeRecord | undefined;
      for (const r of this.recent) if (r.peer === p && r.at >= since) last = r;
      if (last?.outcome !== "in_sync") return false;
    }
    return true;
  }

  /** One turn: the next peer's exchange; soon again if it found something. */
  private async tick(): Promise<void> {
    if (this.pausedByOperator) return this.schedule(this.d.intervalMs);
    const now = this.d.clock.now();
    const peers = this.d
      .peers()
      .filter((p) => now - (this.failedAt.get(p) ?? Number.NEGATIVE_INFINITY) >= FAILED_PEER_WAIT_MS);
    if (peers.length === 0) return this.schedule(this.d.intervalMs);
    const peer = peers[this.turn % peers.length]!;
    const rec = await this.exchangeWith(peer);
    // Found something, or cut short: the same peer again at once (the next turn stays on it).
    if (rec.outcome === "differences" || rec.capped) return this.schedule(0);
    this.turn++;
    this.schedule(this.d.intervalMs / Math.max(1, peers.length));
  }

  /** One exchange with `peer`, and its repairs. */
  async exchangeWith(peer: string): Promise<ExchangeRecord> {
    const partitions = this.d.shared(peer);
    const exchange = new Exchange({
      partitions,
      partitionOf: this.d.partitionOf,
      limits: this.d.limits ?? DEFAULT_EXCHANGE_LIMITS,
      resumeFrom: this.resumeFrom.get(peer),
    });
    const paging = { ...(this.d.paging ?? DEFAULT_REBUILD_PAGING), yieldNow: () => this.yieldNow() };
    let record: ExchangeRecord;
    try {
      const result = await driveExchange(exchange, {
        trees: this.d.trees,
        data: this.d.data,
        paging,
        askTrees: (r) => this.d.askTrees(peer, r),
        askKeys: (r) => this.d.askKeys(peer, r),
        pause: () => new Promise((resolve) => this.d.timers.after(this.d.pauseMs, resolve)),
      });
      this.d.onExchange?.(result);
      if (result.resumeFrom === undefined) this.resumeFrom.delete(peer);
      else this.resumeFrom.set(peer, result.resumeFrom);
      const repaired = result.outcome === "differences" ? await this.repair(peer, result) : 0;
      if (result.outcome === "failed") this.failedAt.set(peer, this.d.clock.now());
      else this.failedAt.delete(peer);
      if (!result.capped && result.outcome !== "failed" && result.unavailable.length === 0)
        this.sweptAt.set(peer, this.d.clock.now());
      record = {
        peer,
        at: this.d.clock.now(),
        outcome: result.outcome,
        partitions: result.partitions,
        differingSegments: result.differingSegments,
        keysDiffering: result.keys.length,
        keysRepaired: repaired,
        bytes: result.bytes,
        capped: result.capped,
        error: result.failure ?? null,
      };
    } catch (err) {
      this.failedAt.set(peer, this.d.clock.now());
      this.totals.failed++;
      record = {
        peer,
        at: this.d.clock.now(),
        outcome: "error",
        partitions: partitions.length,
        differingSegments: 0,
        keysDiffering: 0,
        keysRepaired: 0,
        bytes: 0,
        capped: false,
        error: (err as Error)?.message ?? String(err),
      };
    }
    this.totals.exchanges++;
    this.recent.push(record);
    if (this.recent.length > RECENT_MAX) this.recent.shift();
    return record;
  }

  /** Merges each differing key both ways; returns the keys that changed on either side. */
  private async repair(peer: string, result: ExchangeResult): Promise<number> {
    const remote = this.d.peer(peer);
    let repaired = 0;
    for (const k of result.keys) {
      if (this.stopped) break;
      await this.take();
      const theirs = k.remote === 0 ? [] : await remote.read(k.key);
      const { set, changed } = await this.d.data.mergeChanged(k.key, theirs);
      if (changed) this.d.onRepaired?.("local");
      // The peer lacks part of the merged set (both are canonical: equal dots, equal sets).
      const peerLacks = !sameDots(set, theirs);
      if (peerLacks) {
        await remote.store(k.key, set);
        this.d.onRepaired?.("remote");
      }
      if (changed || peerLacks) repaired++;
    }
    this.totals.keysRepaired += repaired;
    return repaired;
  }

  /** Waits for one repair's token under keysPerSecond. */
  private async take(): Promise<void> {
    const rate = this.d.keysPerSecond;
    for (;;) {
      const now = this.d.clock.now();
      this.tokens = Math.min(rate, this.tokens + ((now - this.filledAt) * rate) / 1000);
      this.filledAt = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await new Promise<void>((r) => this.d.timers.after(Math.ceil(((1 - this.tokens) * 1000) / rate), r));
    }
  }

  private yieldNow(): Promise<void> {
    return new Promise((resolve) => this.d.timers.after(0, resolve));
  }

  /** Answers a peer's tree request from this node's trees. */
  answerTrees(request: AeTreeRequest): AeHashesAnswer {
    return answerTreeRequest(this.d.trees, request);
  }

  /** Answers a peer's key request by scanning this node's sets. */
  answerKeys(request: AeKeysRequest): Promise<AeKeyDiffsAnswer> {
    const paging = { ...(this.d.paging ?? DEFAULT_REBUILD_PAGING), yieldNow: () => this.yieldNow() };
    return answerKeysRequest(request, this.d.data, this.d.partitionOf, paging);
  }

  /** Rebuilds the trees of `partitions` from the data, in the background (after an unclean stop). */
  rebuild(partitions: Iterable<number>): Promise<RebuildReport> {
    const rebuild = this.d.trees.startRebuild(partitions);
    this.rebuildProgress = {
      startedAt: this.d.clock.now(),
      partitions: rebuild.partitions.size,
      report: null,
    };
    const paging = { ...(this.d.paging ?? DEFAULT_REBUILD_PAGING), yieldNow: () => this.yieldNow() };
    return runRebuild(rebuild, this.d.data, paging).then((report) => {
      if (this.rebuildProgress !== null) this.rebuildProgress.report = report;
      this.d.onRebuild?.(report);
      return report;
    });
  }
}

function sameDots(a: readonly StoredSibling[], b: readonly StoredSibling[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!.dot;
    const y = b[i]!.dot;
    if (x.actor !== y.actor || x.counter !== y.counter) return false;
  }
  return true;
}
