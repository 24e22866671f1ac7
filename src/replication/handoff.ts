/**
 * Ownership handoff: when the ring changes, keys move to the nodes that newly replicate them.
 *
 * A pass scans this node's sibling sets in key order, a page at a time, and for each key compares its
 * preference list under the ring the last complete pass was made for (`from`) with the current one
 * (`to`). A node that is new in the list gets the set with a `store` (a merge at the receiver, so a copy
 * sent twice or crossing a newer write changes nothing). Who sends:
 * - a node that is no longer in the key's list sends it to every new member (it is losing the key);
 * - a node that keeps the key sends nothing while a loser is a member that looks up: the loser's own
 *   pass sends it, so that a join costs one copy per key. The first node of the old list that keeps the
 *   key answers for it, though: it sends the key itself when every loser is down, and otherwise, once its
 *   scan is done, it asks each loser it relied on for its handoff (`passOf`) and waits until that loser has
 *   completed a pass for this ring from the same ring as its own (same old lists: it held itself a loser of
 *   the same keys) or a leaving pass (everything it held went). A loser that goes down or leaves, does not
 *   answer, or passed from another ring (one that did not count it a holder of a key it gained since) is
 *   covered: the keeper scans again and sends the keys it relied on that loser for;
 * - when nobody loses the key (a cluster of fewer than N nodes growing), or every loser is gone (left or
 *   removed: it will send nothing), every keeper sends: one of them may have missed a write;
 * - a leaving node sends every key it holds to every member of the key's current list: what it holds
 *   must survive it, whatever ring it last handed off for.
 *
 * What a pass could not deliver (a peer down, partitioned or slow) is sent again on its own (each key
 * as stored by then) after `retryMs`, then after waits doubling up to `maxRetryMs`, until it all
 * arrived; only a pass that missed more than it can remember (10,000 stores), or whose scan failed,
 * runs again whole. A store is also held back, and counted as missed, while the node may send nothing
 * (`held`: unsure that it is still a member, node/absences.ts). A ring change during a pass (or its
 * retries) starts a new pass at once, from the same `from`. A leaving node passes only once the ring no longer holds it. The
 * node saves `from` with its view (members.json), so a node restarted in the middle of a pass runs it
 * again.
 *
 * Everything is bounded: a page of `pageKeys` keys (or `pageBytes` bytes) is in memory at a time, with
 * at most `maxInFlight` stores outstanding, and the pass yields to the event loop between pages. What
 * it sends is paced by a throttle (`bytesPerSecond`, keys and sets, settable at run time): a token
 * bucket holding a tenth of a second's bytes.
 * Progress is kept in `progress` for /status.
 *
 * Invariants asserted: a node never sends a key to itself, sends a key only to members of its current
 * preference list (each once per pass), and the ring a completed pass was for never goes back (a pass for an older ring would hand keys back to where they no longer belong).
 */
import { assert } from "../core/assert.js";
import type { PreferenceTable } from "../ring/ring.js";
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import type { HandoffFigures, RingView } from "../transport/messages.js";
import { decodeSiblings } from "../versioning/object-codec.js";
import type { ReplicaPeer } from "./coordinator.js";
import type { StoredSets } from "./replica.js";

export interface HandoffDeps {
  readonly selfId: string;
  /** This node's replica: what handoff scans and reads (it never touches the engine's keys). */
  readonly replica: StoredSets;
  readonly peer: (nodeId: string) => ReplicaPeer;
  readonly timers: Timers;
  readonly clock: Clock;
  /** The current ring, its preference table and version (undefined before the node has a ring). */
  readonly current: () => HandoffRing | undefined;
  /** Is this node leaving the cluster (or removed from it, handing off what it holds before it stops)? */
  readonly leaving: () => boolean;
  /** Has this member left the cluster (or been removed)? Its keys must come from the others. */
  readonly gone?: (nodeId: string) => boolean;
  /**
   * Does this node see the member as down now (its failure detector)? A key whose loser is down is sent
   * by a keeper too, in case the loser never comes back to send it.
   */
  readonly down: (nodeId: string) => boolean;
  /**
   * May a leaving node's pass run now? (Not while the ring still holds it: it is still a replica then,
   * and a pass would only send what the next ring makes it send again.)
   */
  readonly leavingReady?: () => boolean;
  /**
   * A member's handoff, as its `handoff_progress` answer gives it: what a keeper that relied on that member
   * to send the keys it loses checks (rejects if it does not answer). Without it a keeper relies on no one:
   * the first keeper of a key always sends it too.
   */
  readonly passOf?: (nodeId: string) => Promise<LoserPass>;
  /** How often a keeper asks a loser it relies on whether its pass is done (default 1 s). */
  readonly confirmPollMs?: number;
  /** A pass ended with every key delivered (`ringVersion` is the ring it handed off for). */
  readonly onPassComplete?: (p: HandoffProgress) => void;
  readonly pageKeys?: number;
  /** A page also ends once its values add up to this many bytes (at least one entry per page). */
  readonly pageBytes?: number;
  readonly maxInFlight?: number;
  /** First wait before a pass that missed some stores runs again; doubled per failed pass up to maxRetryMs. */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
  /** The throttle: bytes (keys and sets) this node sends per second at most (DEFAULT_HANDOFF_BYTES_PER_SECOND). */
  readonly bytesPerSecond?: number;
  /** How many sets this node stores, if known (a census): a pass's total, for its time left. */
  readonly storedSets?: () => number | null;
  /**
   * Why this node may send nothing now (undefined: it may): a store held back counts as missed, and is
   * sent again once `retryNow` says the hold is over (or at the next retry).
   */
  readonly held?: () => string | undefined;
}

/** The handoff's throttle by default: bytes one node sends per second. */
export const DEFAULT_HANDOFF_BYTES_PER_SECOND = 64 * 1024 * 1024;

/** What a keeper reads of a loser's handoff (fields of its `handoff_figures`). */
export interface LoserPass {
  /** The ring version its last complete pass was for, which its next pass goes from (0: none). */
  readonly handedOff: number;
  /**
   * Its last pass whose own stores all arrived: the ring it was for and the ring it went from (null: a
   * leaving pass, which sent everything it held). Absent if the member does not say (an older node, or
   * none since it started).
   */
  readonly sentFor?: number;
  readonly sentFrom?: number | null;
}

/** Unanswered questions to a loser a keeper relies on before it covers for it. */
const CONFIRM_TRIES = 3;

/** A ring as handoff needs it: the view (to save), its preference table, its version. */
export interface HandoffRing {
  readonly ring: RingView;
  readonly table: PreferenceTable;
  readonly version: number;
}

export interface HandoffProgress {
  /** idle: nothing to do; running: a pass is under way; retrying: the last pass missed some, waiting. */
  state: "idle" | "running" | "retrying";
  /** The ring version the current (or last) pass hands off for. */
  ringVersion: number;
  /** The pass was made as a leaving node (everything it holds goes). */
  leaving: boolean;
  keysScanned: number;
  keysSent: number;
  /** Bytes (keys and sets) of the stores acknowledged in this pass. */
  bytesSent: number;
  storesFailed: number;
  passesCompleted: number;
  startedAt: number;
  lastCompletedAt: number | null;
  lastError: string | null;
  /** The throttle (bytes this node sends per second at most), as set now. */
  throttleBytesPerSecond: number;
  /** Over the pass so far: sets scanned and bytes sent per second (null before a pass ran a page). */
  keysPerSecond: number | null;
  bytesPerSecond: number | null;
  /**
   * Sets the pass scans in all (this node's last census, up to a census interval old), and the time left
   * at the scan's rate (null when unknown: no census yet, or the pass went past its count).
   */
  keysTotal: number | null;
  etaSeconds: number | null;
}

/** Missed stores remembered for a resend; a pass that misses more runs again whole. */
const MAX_FAILED = 10_000;

export class Handoff {
  /** The ring the last complete pass was for (undefined: the one the node started with). */
  private from: HandoffRing | undefined;
  /**
   * The last pass whose own stores all arrived (its checks of the losers it relied on may still be under
   * way): the ring it went from (null: a leaving pass, which sends everything) and the one it was for.
   */
  private sent: { readonly from: number | null; readonly to: number } | undefined;
  /** The losers the current pass, as a key's first keeper, relied on to send the key in its place. */
  private relied: ReadonlySet<string> = new Set();
  private running: Promise<void> | undefined;
  private rerun = false;
  /** Wakes a retry that is waiting (stop, or a newer ring). */
  private wake: (() => void) | undefined;
  /** The stores the current pass could not deliver (bounded; past the bound, a whole pass again). */
  private failed: { key: Uint8Array; to: string }[] = [];
  private failedOverflow = false;
  private stopped = false;
  readonly progress: HandoffProgress = {
    state: "idle",
    ringVersion: 0,
    leaving: false,
    keysScanned: 0,
    keysSent: 0,
    bytesSent: 0,
    storesFailed: 0,
    passesCompleted: 0,
    startedAt: 0,
    lastCompletedAt: null,
    lastError: null,
    throttleBytesPerSecond: DEFAULT_HANDOFF_BYTES_PER_SECOND,
    keysPerSecond: null,
    bytesPerSecond: null,
    keysTotal: null,
    etaSeconds: null,
  };
  private readonly pageKeys: number;
  private readonly pageBytes: number;
  private readonly maxInFlight: number;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  private readonly confirmPollMs: number;
  private rate: number;
  /** The throttle's bucket: bytes that may go now (negative: owed), as of `bucketAt`; it starts full. */
  private bucket: number;
  private bucketAt: number;
  /** Stores waiting off the bucket's debt: a new rate lets them go at once. */
  private readonly paced = new Set<{ timer: TimerHandle; go: () => void }>();

  constructor(private readonly d: HandoffDeps) {
    this.rate = d.bytesPerSecond ?? DEFAULT_HANDOFF_BYTES_PER_SECOND;
    if (!(this.rate > 0)) throw new RangeError(`handoff bytesPerSecond must be positive, got ${this.rate}`);
    this.bucket = this.rate / 10;
    this.bucketAt = d.clock.now();
    this.progress.throttleBytesPerSecond = this.rate;
    this.pageKeys = d.pageKeys ?? 256;
    this.pageBytes = d.pageBytes ?? 4 << 20;
    this.maxInFlight = d.maxInFlight ?? 16;
    this.retryMs = d.retryMs ?? 5000;
    this.confirmPollMs = d.confirmPollMs ?? 1000;
    this.maxRetryMs = d.maxRetryMs ?? 30_000;
  }

  /**
   * Starts from `handedOff`, the ring the last complete pass was for (saved by the node), else from the
   * ring the node starts with (it held what it holds under that one); a newer current ring is handed off
   * for at once.
   */
  start(handedOff?: HandoffRing): void {
    this.from = handedOff ?? this.d.current();
    this.kick();
  }

  /** The ring the last complete pass was for: what a restart starts from (saved with the node's view). */
  get handedOffRing(): RingView | undefined {
    return this.from?.ring;
  }

  /** This node's handoff as a peer's `handoff_progress` gets it, `ringVersion` being its current ring's. */
  figures(ringVersion: number): HandoffFigures {
    const p = this.progress;
    return {
      kind: "handoff_figures",
      ringVersion,
      handedOff: this.from?.version ?? 0,
      ...(this.sent === undefined ? {} : { sentFrom: this.sent.from, sentFor: this.sent.to }),
      state: p.state,
      passRingVersion: p.ringVersion,
      keysScanned: p.keysScanned,
      keysSent: p.keysSent,
      bytesSent: p.bytesSent,
      storesFailed: p.storesFailed,
      keysTotal: p.keysTotal,
      throttleBytesPerSecond: p.throttleBytesPerSecond,
    };
  }

  /** The throttle: bytes this node sends per second at most. */
  get bytesPerSecond(): number {
    return this.rate;
  }

  /** Changes the throttle (at once, for the stores still to go). */
  setBytesPerSecond(bps: number): void {
    if (!(bps > 0) || !Number.isFinite(bps))
      throw new RangeError(`handoff bytesPerSecond must be positive, got ${bps}`);
    this.refill();
    this.rate = bps;
    // The debt was owed at the old rate: the stores waiting on it go now, and the new rate paces the rest.
    this.bucket = Math.min(Math.max(this.bucket, 0), bps / 10);
    for (const w of [...this.paced]) {
      w.timer.cancel();
      w.go();
    }
    this.progress.throttleBytesPerSecond = bps;
  }

  /** The pass's rates so far, and its time left at its scan rate. */
  private measure(): void {
    const p = this.progress;
    const s = (this.d.clock.now() - p.startedAt) / 1000;
    if (!(s > 0)) return;
    p.keysPerSecond = p.keysScanned / s;
    p.bytesPerSecond = p.bytesSent / s;
    // The total is a census from up to a census interval ago: past it, the time left is unknown.
    p.etaSeconds =
      p.keysTotal === null || p.keysPerSecond === 0 || p.keysTotal <= p.keysScanned
        ? null
        : (p.keysTotal - p.keysScanned) / p.keysPerSecond;
  }

  private refill(): void {
    const now = this.d.clock.now();
    this.bucket = Math.min(this.rate / 10, this.bucket + ((now - this.bucketAt) * this.rate) / 1000);
    this.bucketAt = now;
  }

  /** Takes `bytes` from the throttle's bucket, waiting while it is in debt. */
  private pace(bytes: number): Promise<void> {
    this.refill();
    this.bucket -= bytes;
    if (this.bucket >= 0) return Promise.resolve();
    const ms = (-this.bucket * 1000) / this.rate;
    return new Promise((resolve) => {
      const w = {
        timer: this.d.timers.after(ms, () => w.go()),
        go: () => {
          this.paced.delete(w);
          resolve();
        },
      };
      this.paced.add(w);
    });
  }

  /** Stops passing; resolves once the pass under way (if any) has let go of the storage engine. */
  stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    for (const w of [...this.paced]) {
      w.timer.cancel();
      w.go();
    }
    return this.running ?? Promise.resolve();
  }

  /** The ring (or this node's leaving) changed: hand off for the new state. */
  kick(): void {
    if (this.stopped) return;
    const to = this.d.current();
    if (to === undefined) return;
    const leaving = this.d.leaving();
    if (this.from === undefined) {
      this.from = to;
      if (!leaving) return;
    }
    if (leaving && this.d.leavingReady?.() === false) return;
    const p = this.progress;
    // A leaving node's pass for this ring is done; its final one comes from rescan().
    if (leaving && this.running === undefined && p.leaving && p.ringVersion === to.version) return;
    if (!leaving && this.from.version === to.version && this.running === undefined) return;
    if (this.running !== undefined) {
      // A pass for this very ring is under way (or retrying what it missed): nothing new to do.
      if (p.ringVersion !== to.version || p.leaving !== leaving) this.restart();
      return;
    }
    this.launch();
  }

  /** A pass waiting to retry what it missed retries now (what held it back is over). */
  retryNow(): void {
    if (this.running !== undefined && this.progress.state === "retrying") this.wake?.();
  }

  /** Runs a pass for the current ring even if one was completed for it (a leaving node's final pass). */
  rescan(): void {
    if (this.stopped) return;
    if (this.running !== undefined) this.restart();
    else this.launch();
  }

  /** The pass under way starts over (at its next page, or at once if it is waiting to retry). */
  private restart(): void {
    this.rerun = true;
    this.wake?.();
  }

  private launch(): void {
    this.running = this.run().finally(() => {
      this.running = undefined;
      // A newer ring that came as the run was ending.
      if (this.rerun && !this.stopped) this.launch();
    });
  }

  /** Waits `ms`, or less if stop() or a restart wakes it. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.d.timers.after(ms, () => {
        this.wake = undefined;
        resolve();
      });
      this.wake = () => {
        this.wake = undefined;
        t.cancel();
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    do {
      this.rerun = false;
      const to = this.d.current();
      if (to === undefined || this.stopped) return;
      const from = this.from ?? to;
      if (!(await this.deliver(from, to, () => this.pass(from, to)))) continue;
      // Its own stores have all arrived: a keeper relying on this node may count on them now.
      this.sent = { from: this.progress.leaving ? null : from.version, to: to.version };
      // The keys it relied on a loser for: confirmed, or sent in the loser's place (again if a retry had to
      // run the whole pass again, relying anew).
      let relied: ReadonlySet<string> | undefined;
      let confirmed = true;
      while (confirmed && relied !== this.relied && this.relied.size > 0) {
        const losers = this.relied;
        relied = losers;
        confirmed = await this.deliver(from, to, () => this.confirm(from, to, losers));
      }
      if (!confirmed) continue;
      if (this.stopped) return;
      if (this.rerun) continue;
      const done = this.from;
      assert(
        done === undefined || to.version >= done.version,
        () => `a handoff pass completed for ring ${to.version} after one for ring ${done?.version}`,
      );
      this.from = to;
      this.progress.state = "idle";
      this.progress.etaSeconds = null;
      this.progress.passesCompleted++;
      this.progress.lastCompletedAt = this.d.clock.now();
      this.d.onPassComplete?.(this.progress);
    } while (this.rerun && !this.stopped);
  }

  /**
   * Runs `first` (a pass, or the check of the losers it relied on), then sends again what it could not
   * deliver (a replica down, partitioned or slow), on its own, waiting longer each time; the whole pass runs
   * again only if it missed too much to remember. False if a stop or a newer ring ended it.
   */
  private async deliver(from: HandoffRing, to: HandoffRing, first: () => Promise<boolean>): Promise<boolean> {
    let ok = await this.guarded(first);
    let delay = this.retryMs;
    while (!ok && !this.stopped && !this.rerun) {
      this.progress.state = "retrying";
      await this.sleep(delay);
      delay = Math.min(delay * 2, this.maxRetryMs);
      if (this.stopped || this.rerun) break;
      ok = await this.guarded(() => (this.failedOverflow ? this.pass(from, to) : this.resend()));
    }
    return ok && !this.stopped && !this.rerun;
  }

  /** Lets requests in between pages: a pass over a large store is background work. */
  private betweenPages(): Promise<void> {
    return new Promise((resolve) => this.d.timers.after(0, resolve));
  }

  /** Runs a pass or a resend; a storage failure (the engine failed or closed) counts as a miss. */
  private async guarded(fn: () => Promise<boolean>): Promise<boolean> {
    try {
      return await fn();
    } catch (err) {
      this.progress.lastError = `scan: ${(err as Error)?.message ?? String(err)}`;
      this.failedOverflow = true; // what it had not read yet is unknown: the next try is a whole pass
      return false;
    }
  }

  /** Sends again what the pass could not deliver, each key as it is stored now. */
  private async resend(): Promise<boolean> {
    const missed = this.failed.sort((a, b) => Buffer.compare(a.key, b.key));
    this.failed = [];
    this.progress.storesFailed = 0;
    // Paged like a pass: one read per key (a key missed by several targets is read once), at most a
    // page's keys and bytes in memory, a yield between pages, and a stop or a newer ring ends it.
    let i = 0;
    while (i < missed.length) {
      if (this.stopped || this.rerun) return false;
      const sends: { to: string; key: Uint8Array; value: Uint8Array }[] = [];
      let bytes = 0;
      let keys = 0;
      while (i < missed.length && keys < this.pageKeys && bytes < this.pageBytes) {
        const key = missed[i]!.key;
        const targets: string[] = [];
        while (i < missed.length && Buffer.compare(missed[i]!.key, key) === 0) targets.push(missed[i++]!.to);
        keys++;
        const value = await this.d.replica.readRaw(key);
        if (value === undefined) continue;
        bytes += value.length;
        for (const to of targets) sends.push({ to, key, value });
      }
      await this.send(sends);
      await this.betweenPages();
    }
    return this.failed.length === 0 && !this.failedOverflow;
  }

  /** One scan of every stored set; true if every store it needed was acknowledged. */
  private async pass(from: HandoffRing, to: HandoffRing): Promise<boolean> {
    const leaving = this.d.leaving();
    const p = this.progress;
    p.state = "running";
    p.ringVersion = to.version;
    p.leaving = leaving;
    p.keysScanned = 0;
    p.keysSent = 0;
    p.bytesSent = 0;
    p.storesFailed = 0;
    p.startedAt = this.d.clock.now();
    p.keysPerSecond = null;
    p.bytesPerSecond = null;
    p.keysTotal = this.d.storedSets?.() ?? null;
    p.etaSeconds = null;
    this.failed = [];
    this.failedOverflow = false;
    const relied = new Set<string>();
    this.relied = relied;
    let after: Uint8Array | undefined;
    for (;;) {
      if (this.stopped || this.rerun) return false;
      const page = await this.d.replica.scan(after, this.pageKeys, this.pageBytes);
      if (page.length === 0) break;
      after = page[page.length - 1]!.key;
      const sends: { to: string; key: Uint8Array; value: Uint8Array }[] = [];
      for (const e of page) {
        p.keysScanned++;
        for (const target of this.targets(e.key, from.table, to.table, leaving, relied))
          sends.push({ to: target, key: e.key, value: e.value });
      }
      await this.send(sends);
      this.measure();
      await this.betweenPages();
    }
    return p.storesFailed === 0;
  }

  /**
   * Waits until every loser in `relied` has sent what this node relied on it for, and covers for each one
   * that may not: it sends those keys itself (`cover`). False if a stop or a newer ring ended the wait.
   */
  private async confirm(from: HandoffRing, to: HandoffRing, relied: ReadonlySet<string>): Promise<boolean> {
    const waiting = new Map([...relied].map((id) => [id, 0])); // loser -> questions it left unanswered
    for (;;) {
      const uncovered = new Set<string>();
      await Promise.all(
        [...waiting].map(async ([id, unanswered]) => {
          const v = await this.verdict(id, from, to);
          if (v === "wait") return;
          if (v === "unanswered" && unanswered + 1 < CONFIRM_TRIES) {
            waiting.set(id, unanswered + 1);
            return;
          }
          waiting.delete(id);
          if (v !== "sent") uncovered.add(id);
        }),
      );
      if (this.stopped || this.rerun) return false;
      if (uncovered.size > 0 && !(await this.cover(from, to, uncovered))) return false;
      if (waiting.size === 0) return true;
      await this.sleep(this.confirmPollMs);
      if (this.stopped || this.rerun) return false;
    }
  }

  /**
   * Has loser `id` sent the keys it loses from `from` to `to`? It has once every store of a pass of its for
   * `to` (or a later ring) arrived, if that pass went from `from`, the ring this node's own lists came from
   * (the same lists: it counted itself a holder of exactly the keys this node relied on it for), or was a
   * leaving pass (everything it held went). A pass from another ring may have skipped a key it gained since
   * that ring.
   */
  private async verdict(
    id: string,
    from: HandoffRing,
    to: HandoffRing,
  ): Promise<"sent" | "wait" | "unanswered" | "cover"> {
    if (this.d.gone?.(id) === true || this.d.down(id)) return "cover";
    let pass: LoserPass;
    try {
      pass = await this.d.passOf!(id);
    } catch {
      return "unanswered";
    }
    if (pass.sentFor !== undefined && pass.sentFor >= to.version)
      return pass.sentFrom === null || pass.sentFrom === from.version ? "sent" : "cover";
    // Its pass from the same ring is under way (or it has yet to see this ring): it will send.
    if (pass.handedOff === from.version) return "wait";
    return "cover";
  }

  /** Scans again and sends the keys this node relied on one of `losers` for; true if all were delivered. */
  private async cover(from: HandoffRing, to: HandoffRing, losers: ReadonlySet<string>): Promise<boolean> {
    let after: Uint8Array | undefined;
    for (;;) {
      if (this.stopped || this.rerun) return false;
      const page = await this.d.replica.scan(after, this.pageKeys, this.pageBytes);
      if (page.length === 0) return true;
      after = page[page.length - 1]!.key;
      const sends: { to: string; key: Uint8Array; value: Uint8Array }[] = [];
      for (const e of page) {
        const relied = new Set<string>();
        if (this.targets(e.key, from.table, to.table, false, relied).length > 0) continue; // sent already
        if (![...relied].some((id) => losers.has(id))) continue;
        for (const target of this.targets(e.key, from.table, to.table, false, undefined))
          sends.push({ to: target, key: e.key, value: e.value });
      }
      await this.send(sends);
      await this.betweenPages();
    }
  }

  /**
   * The nodes this node must send `key` to. With `relied`, a first keeper may rely on a loser that looks
   * up and adds it there; without it, it relies on no one.
   */
  private targets(
    key: Uint8Array,
    from: PreferenceTable,
    to: PreferenceTable,
    leaving: boolean,
    relied: Set<string> | undefined,
  ): string[] {
    const self = this.d.selfId;
    const now = to.forKey(key);
    const out = this.chooseTargets(key, from, now, leaving, relied);
    assert(
      out.every((id, i) => id !== self && now.includes(id) && out.indexOf(id) === i),
      () =>
        `handoff targets [${out}] of a key are not distinct members of its list [${now}] other than ${self}`,
    );
    return out;
  }

  private chooseTargets(
    key: Uint8Array,
    from: PreferenceTable,
    now: readonly string[],
    leaving: boolean,
    relied: Set<string> | undefined,
  ): string[] {
    const self = this.d.selfId;
    if (leaving) return now.filter((id) => id !== self);
    const before = from.forKey(key);
    const gained = now.filter((id) => id !== self && !before.includes(id));
    if (gained.length === 0) return [];
    if (!before.includes(self)) return []; // it came to us by a write or repair; the holders send it
    if (!now.includes(self)) return gained; // we lose the key: always send
    // We keep it. If nobody loses it (a cluster growing towards N), or every loser is gone (it will send
    // nothing), every keeper sends: one of them may have missed a write.
    const losers = before.filter((id) => !now.includes(id));
    const gone = (id: string) => this.d.gone?.(id) === true;
    if (losers.every(gone)) return gained;
    // Otherwise the losers send it, and the first keeper answers for them: it sends too unless it may rely
    // on a loser that looks up, whose pass it then checks (confirm).
    if (before.find((id) => now.includes(id)) !== self) return [];
    const up = losers.filter((id) => !gone(id) && !this.d.down(id));
    if (relied === undefined || this.d.passOf === undefined || up.length === 0) return gained;
    for (const id of up) relied.add(id);
    return [];
  }

  private async send(sends: readonly { to: string; key: Uint8Array; value: Uint8Array }[]): Promise<void> {
    let next = 0;
    // Asked once per page: the answer walks the ring, and a hold that begins mid-page waits for the next.
    const held = sends.length === 0 ? undefined : this.d.held?.();
    const worker = async () => {
      while (next < sends.length && !this.stopped && !this.rerun) {
        const s = sends[next++]!;
        assert(s.to !== this.d.selfId, () => `handoff would send a key to itself (${s.to})`);
        const size = s.key.length + s.value.length;
        const missed = (why: string) => {
          this.progress.storesFailed++;
          this.progress.lastError = `${s.to}: ${why}`;
          if (this.failed.length < MAX_FAILED) this.failed.push({ key: Uint8Array.from(s.key), to: s.to });
          else this.failedOverflow = true;
        };
        if (held !== undefined) {
          missed(`held back: ${held}`);
          continue;
        }
        await this.pace(size);
        if (this.stopped || this.rerun) break;
        try {
          await this.d.peer(s.to).store(s.key, decodeSiblings(s.value), true);
          this.progress.keysSent++;
          this.progress.bytesSent += size;
        } catch (err) {
          missed((err as Error)?.message ?? String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.maxInFlight, sends.length) }, worker));
  }
}
