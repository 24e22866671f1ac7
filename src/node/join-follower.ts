/**
 * A joining node follows the handoff its join started, until every member has finished its pass for the
 * first ring that includes the new node (what makes the join complete: the keys it now replicates have
 * been sent to it).
 *
 * It waits for that ring (`waiting`: the claimant has not re-claimed yet), then asks every member of it
 * for its handoff figures over the peer protocol (`handoff_progress`, which the cluster key
 * authenticates: the joiner needs no API token), all at once, every `lookEveryMs` (`handing_off`). A
 * member is done once the ring its last complete pass was for is at least that ring (a later ring's pass
 * covers it). The figures it reports (keys scanned of those it holds, copies sent) add up to the join's
 * progress; the rate and the time left are measured over the looks. It ends `done` once every member is
 * done or given up on: a member that is down, that refused the request (an older protocol), or that has
 * not answered for `silentForMs`, is named as not answering rather than waited for. It also ends,
 * `given_up`, past `maxMs`, so it is bounded in time whatever the cluster does.
 *
 * Protocol logic: the clock, the timers and the transport come in through the deps, so that the
 * simulator can run it; every look and its requests are bounded (one request per member, each within
 * `answerTimeoutMs`).
 */
import type { Membership } from "../membership/membership.js";
import type { Clock, TimerHandle, Timers } from "../runtime/runtime.js";
import type { HandoffFigures } from "../transport/messages.js";
import type { Transport } from "../transport/transport.js";

export interface JoinFollowerDeps {
  readonly selfId: string;
  readonly membership: Membership;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly timers: Timers;
  /** This node's own figures: it is a member of the ring too (its own pass is usually empty). */
  readonly ownFigures: () => HandoffFigures;
  /** Handoff stores this node received so far (keys, bytes). */
  readonly received: () => { readonly keys: number; readonly bytes: number };
  /** Called after every look, with the figures of the moment (the last call has a final state). */
  readonly onChange: (p: JoinProgress) => void;
  /** Between two looks (default 1000 ms). */
  readonly lookEveryMs?: number;
  /** How long a member's answer is waited for in one look (default 2000 ms). */
  readonly answerTimeoutMs?: number;
  /** A member that has not answered for this long is given up on (default 30 s). */
  readonly silentForMs?: number;
  /** The whole follow ends by then at the latest (default 24 h). */
  readonly maxMs?: number;
}

/** One member's part of the join's handoff. */
export interface MemberHandoff {
  readonly id: string;
  /** done: finished its pass for the ring; busy: not yet; silent: given up on (see `why`). */
  readonly state: "busy" | "done" | "silent";
  /** Its last figures (null: it never answered). */
  readonly figures: HandoffFigures | null;
  /** Why a silent member is given up on. */
  readonly why: string | null;
}

export interface JoinProgress {
  /**
   * waiting: no ring holds this node yet; handing_off: the members are passing; done: every member is
   * done or given up on; given_up: past the follow's time bound.
   */
  readonly state: "waiting" | "handing_off" | "done" | "given_up";
  /** The first ring version that includes this node (null while waiting). */
  readonly ringVersion: number | null;
  readonly members: readonly MemberHandoff[];
  /** Over the members' passes for the ring: keys scanned, of the keys they hold (null: not known). */
  readonly keysScanned: number;
  readonly keysTotal: number | null;
  /** Copies those passes sent (to this node and to others whose replicas moved), and their bytes. */
  readonly keysSent: number;
  readonly bytesSent: number;
  readonly storesFailed: number;
  /** Handoff stores this node received since it started, and their bytes. */
  readonly keysReceived: number;
  readonly bytesReceived: number;
  /** Keys scanned per second over the follow so far (null: not measured yet), and the time left at it. */
  readonly keysPerSecond: number | null;
  readonly etaSeconds: number | null;
  /** The slowest member's throttle (bytes per second; null before any answered). */
  readonly throttleBytesPerSecond: number | null;
  /** Clock times: the follow started, and ended (null while it runs). */
  readonly startedAt: number;
  readonly endedAt: number | null;
}

interface Followed {
  figures: HandoffFigures | null;
  /** When it last answered (or when following it began). */
  heardAt: number;
  silent: string | null;
}

export class JoinFollower {
  private readonly lookEveryMs: number;
  private readonly answerTimeoutMs: number;
  private readonly silentForMs: number;
  private readonly maxMs: number;
  private readonly startedAt: number;
  private ringVersion: number | null = null;
  private readonly followed = new Map<string, Followed>();
  /** The first look of the handoff (for the rate): when, and the keys scanned then. */
  private first: { at: number; scanned: number } | undefined;
  private timer: TimerHandle | undefined;
  private stopped = false;
  private last: JoinProgress;

  constructor(private readonly d: JoinFollowerDeps) {
    this.lookEveryMs = d.lookEveryMs ?? 1000;
    this.answerTimeoutMs = d.answerTimeoutMs ?? 2000;
    this.silentForMs = d.silentForMs ?? 30_000;
    this.maxMs = d.maxMs ?? 24 * 3600_000;
    this.startedAt = d.clock.now();
    this.last = this.figures("waiting");
  }

  /** The figures of the last look. */
  get progress(): JoinProgress {
    return this.last;
  }

  /** Looks at once, then every `lookEveryMs` until done. */
  start(): void {
    this.timer = this.d.timers.after(0, () => this.lookSafely());
  }

  /** A look; one that fails (a listener threw) is followed by the next, within the follow's bound. */
  private lookSafely(): void {
    this.look().catch(() => this.next());
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  private async look(): Promise<void> {
    if (this.stopped) return;
    const now = this.d.clock.now();
    if (now - this.startedAt > this.maxMs) return this.end("given_up");
    const m = this.d.membership;
    if (this.ringVersion === null) {
      const ring = m.ring;
      if (ring === null || !ring.members.some((x) => x.startsWith(`${this.d.selfId}:`))) {
        this.last = this.figures("waiting");
        this.d.onChange(this.last);
        return this.next();
      }
      this.ringVersion = ring.version;
      for (const x of ring.members) {
        const id = x.slice(0, x.lastIndexOf(":"));
        this.followed.set(id, { figures: null, heardAt: now, silent: null });
      }
    }
    const version = this.ringVersion;
    await Promise.all(
      [...this.followed.entries()].map(async ([id, f]) => {
        if (f.silent !== null || (f.figures !== null && f.figures.handedOff >= version)) return;
        if (id === this.d.selfId) {
          f.figures = this.d.ownFigures();
          f.heardAt = now;
          return;
        }
        const member = m.member(id);
        if (member === undefined || member.status === "left") {
          f.silent = "it left the cluster";
          return;
        }
        if (m.liveness(id, now) === "down") {
          f.silent = "it is down";
          return;
        }
        try {
          f.figures = await this.d.transport.request(
            member.peer,
            { kind: "handoff_progress" },
            this.answerTimeoutMs,
          );
          f.heardAt = this.d.clock.now();
        } catch (err) {
          const e = err as { code?: string; message?: string };
          // Refused (a node of an older protocol): asking again gets the same answer.
          if (e.code === "ERR_REJECTED") f.silent = e.message ?? "it refused the request";
          else if (this.d.clock.now() - f.heardAt >= this.silentForMs)
            f.silent = `no answer for ${Math.round(this.silentForMs / 1000)} s (${e.message ?? e.code})`;
        }
      }),
    );
    if (this.stopped) return;
    const all = [...this.followed.values()];
    if (all.every((f) => f.silent !== null || (f.figures !== null && f.figures.handedOff >= version)))
      return this.end("done");
    this.last = this.figures("handing_off");
    this.d.onChange(this.last);
    this.next();
  }

  private next(): void {
    if (!this.stopped) this.timer = this.d.timers.after(this.lookEveryMs, () => this.lookSafely());
  }

  private end(state: "done" | "given_up"): void {
    this.stopped = true;
    this.last = this.figures(state);
    this.d.onChange(this.last);
  }

  private figures(state: JoinProgress["state"]): JoinProgress {
    const now = this.d.clock.now();
    const version = this.ringVersion;
    const members: MemberHandoff[] = [];
    let scanned = 0;
    let total: number | null = 0;
    let sent = 0;
    let bytes = 0;
    let failed = 0;
    let throttle: number | null = null;
    for (const [id, f] of [...this.followed.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const fig = f.figures;
      const done = fig !== null && version !== null && fig.handedOff >= version;
      members.push({
        id,
        state: f.silent !== null ? "silent" : done ? "done" : "busy",
        figures: fig,
        why: f.silent,
      });
      if (fig === null) {
        if (f.silent === null) total = null;
        continue;
      }
      throttle =
        throttle === null ? fig.throttleBytesPerSecond : Math.min(throttle, fig.throttleBytesPerSecond);
      // The figures of a pass for this ring or a later one count; an earlier pass's are not this join's.
      const ours = version !== null && fig.passRingVersion >= version;
      const s = ours ? fig.keysScanned : 0;
      scanned += s;
      if (ours) {
        sent += fig.keysSent;
        bytes += fig.bytesSent;
        failed += fig.storesFailed;
      }
      // A member done has scanned all it will; a silent one is not waited for.
      if (done || f.silent !== null) total = total === null ? null : total + s;
      else total = total === null || fig.keysTotal === null ? null : total + Math.max(fig.keysTotal, s);
    }
    if (state === "handing_off" && (this.first === undefined || scanned < this.first.scanned))
      this.first = { at: now, scanned };
    const secs = this.first === undefined ? 0 : (now - this.first.at) / 1000;
    const rate = secs >= 1 && this.first !== undefined ? (scanned - this.first.scanned) / secs : null;
    const left = total === null ? null : total - scanned;
    const r = this.d.received();
    return {
      state,
      ringVersion: version,
      members,
      keysScanned: scanned,
      keysTotal: total,
      keysSent: sent,
      bytesSent: bytes,
      storesFailed: failed,
      keysReceived: r.keys,
      bytesReceived: r.bytes,
      keysPerSecond: rate,
      etaSeconds:
        state !== "handing_off" || left === null || left <= 0 || rate === null || rate <= 0
          ? null
          : left / rate,
      throttleBytesPerSecond: throttle,
      startedAt: this.startedAt,
      endedAt: state === "done" || state === "given_up" ? now : null,
    };
  }
}
