/**
 * `GET /ui/state[?since=T&events=S]` (api/ui-routes.ts, built by api/dashboard.ts): what the dashboard
 * shows, as the node serving it sees it, in one document: the members, the ring's owners, the partitions
 * with work pending, the progress of handoff, hint delivery and anti-entropy, storage figures, the
 * request samples that ended after `since` and the events after sequence number `events` (so a page
 * refreshing every few seconds fetches only what is new).
 *
 * Types only, and no imports: the node (api/views.ts re-exports them) and the page (app.ts, built for
 * the browser) compile this same file.
 */

export interface DashboardDocument {
  /** The node's wall clock, ms since the epoch. */
  readonly at: number;
  /** How often the node samples (ms): the page refreshes at that pace. */
  readonly sampleMs: number;
  readonly node: {
    readonly id: string;
    readonly api: string;
    readonly peer: string;
    readonly weight: number;
    readonly zone: string | null;
  };
  readonly cluster: {
    readonly id: string;
    readonly n: number;
    readonly r: number;
    readonly w: number;
    readonly partitions: number;
    readonly ringVersion: number;
  };
  readonly members: readonly DashboardMember[];
  /** The owner of each partition, as an index into `members` (-1: none known). */
  readonly owners: readonly number[];
  readonly pending: DashboardPending;
  readonly progress: DashboardProgress;
  readonly storage: DashboardStorage;
  readonly requests: {
    /** The operations of each sample's `ops`, in order. */
    readonly ops: readonly string[];
    /** Samples ended after `since`, oldest first (at most the node's buffer). */
    readonly samples: readonly RequestSampleView[];
  };
  /** Events after `events`, oldest first (at most the node's buffer). */
  readonly events: readonly DashboardEvent[];
}

export interface DashboardMember {
  readonly id: string;
  readonly api: string;
  readonly peer: string;
  /** joining, up, suspect, down, leaving, left (as /status shows it). */
  readonly state: string;
  readonly zone: string | null;
  readonly weight: number;
  /** Partitions it owns in this node's ring. */
  readonly owned: number;
  /** Partitions it holds a replica of in this node's ring. */
  readonly replicated: number;
  /** Is it the node serving the page? */
  readonly self: boolean;
}

/** Partitions with work pending on the node serving the page (each list sorted). */
export interface DashboardPending {
  /** Partitions whose replicas changed since the node's last complete handoff pass, while one runs. */
  readonly handoff: readonly number[];
  /** Partitions of keys the node holds hints for (from a bounded look at its hints). */
  readonly hints: readonly number[];
  /** Whether `hints` came from every hint held (false: from the first ones of each target only). */
  readonly hintsComplete: boolean;
  /** Partitions in which the node's latest anti-entropy exchange found keys differing. */
  readonly antiEntropy: readonly number[];
}

/** A rate and what is left, for one piece of background work. */
export interface WorkProgress {
  readonly state: string;
  /** Units done per second over the last sample (null: not known yet). */
  readonly rate: number | null;
  readonly unit: string;
  /** Units done, and units in all (null: not known). */
  readonly done: number;
  readonly total: number | null;
  /** Seconds left at the current rate (null: not known, or nothing left). */
  readonly etaSeconds: number | null;
}

/**
 * A joining node's follow of the handoff its join started (node/join-follower.ts), in `/status` as `join`
 * and on the dashboard: until every member has finished its pass for the first ring holding the node.
 */
export interface JoinStatus {
  /** waiting (for a ring holding this node), handing_off, done, given_up (past the follow's bound). */
  readonly state: string;
  /** The first ring version holding this node (null while waiting). */
  readonly ringVersion: number | null;
  /** Over the members' passes for that ring: keys scanned of those they hold (null: not known). */
  readonly keysScanned: number;
  readonly keysTotal: number | null;
  /** Copies those passes sent (to this node and to others whose replicas moved), and their bytes. */
  readonly keysSent: number;
  readonly bytesSent: number;
  readonly storesFailed: number;
  /** Handoff copies this node received, and their bytes. */
  readonly keysReceived: number;
  readonly bytesReceived: number;
  /** Keys scanned per second so far, and the seconds left at that rate (null: not known). */
  readonly keysPerSecond: number | null;
  readonly etaSeconds: number | null;
  /** The slowest member's handoff throttle, bytes per second (null before any answered). */
  readonly throttleBytesPerSecond: number | null;
  /** Members done with their pass, still at it, and given up on (with why). */
  readonly membersDone: readonly string[];
  readonly membersBusy: readonly string[];
  readonly membersSilent: readonly { readonly id: string; readonly why: string }[];
  /** Since the follow began (ms), to its end if it ended. */
  readonly elapsedMs: number;
}

export interface DashboardProgress {
  readonly handoff: WorkProgress & {
    readonly ringVersion: number;
    readonly leaving: boolean;
    /** The throttle this node's handoff is paced at (bytes per second; settable at run time). */
    readonly throttleBytesPerSecond: number;
  };
  /** The handoff a join of this node started, while this node follows it (null: it did not join now). */
  readonly join: JoinStatus | null;
  /** Per target with hints held here, or delivered since the node started. */
  readonly hints: readonly (WorkProgress & { readonly target: string; readonly bytes: number })[];
  readonly antiEntropy: WorkProgress & {
    readonly enabled: boolean;
    readonly paused: boolean;
    readonly lastFullSweepAgeMs: number | null;
    readonly exchanges: number;
  };
}

export interface DashboardStorage {
  readonly engine: string;
  readonly tables: number;
  readonly sortedRuns: number;
  readonly diskBytes: number;
  readonly memtableBytes: number;
  readonly flushes: number;
  readonly compactions: number;
  readonly writeAmplification: number;
  readonly writeStalls: number;
  readonly writeStallMs: number;
  readonly blockCacheHitRatio: number | null;
  /** Bytes written to disk per second over the last sample (null: not known yet). */
  readonly diskWriteRate: number | null;
  /** The last census of the keys stored on the node (null: none ended yet). */
  readonly keys: { readonly live: number; readonly tombstones: number; readonly ageMs: number } | null;
  /** The last full compaction asked for (`ringstore storage compact`); null: none since the node started. */
  readonly fullCompaction: DashboardCompaction | null;
}

export interface DashboardCompaction {
  readonly state: "running" | "done" | "failed";
  /** While running: flush, wait (for a background merge) or merge. */
  readonly phase: string | null;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly bytesPerSecond: number;
  /** Tables before, and after (null while running). */
  readonly tablesBefore: number;
  readonly tablesAfter: number | null;
  /** Since it started (running) or ended. */
  readonly ageMs: number;
  readonly error: string | null;
}

export interface RequestSampleView {
  /** When the sample's interval ended, and its length (ms). */
  readonly at: number;
  readonly ms: number;
  /** Per op, in `requests.ops` order: [count, errors, p50 ms | null, p99 ms | null]. */
  readonly ops: readonly (readonly [number, number, number | null, number | null])[];
}

export interface DashboardEvent {
  readonly seq: number;
  readonly at: number;
  /** joined, state, ring, note. */
  readonly kind: string;
  readonly member: string | null;
  readonly from: string | null;
  readonly to: string | null;
  readonly detail: string;
}
