/**
 * The documents of the operational endpoints, field by field: `GET /ring` (what a client needs to route
 * a key to its replicas: src/client/client.ts reads it), `GET /status` (this node's view of the
 * cluster: `ringstore cluster status` and `cluster leave` read it), and the answers to
 * `POST /cluster/leave` and `POST /cluster/remove`.
 *
 * The builders are pure: they take the node's facts, its view of the members, a liveness function read
 * at one instant, the ring and the counters, and return the document. Their field order is the order of
 * the JSON sent, which clients and scripts may have come to rely on: keep it.
 */
import type { Liveness } from "../membership/membership.js";
import type { HandoffProgress } from "../replication/handoff.js";
import type { EngineStats } from "../storage/engine.js";
import type { MemberView, RingView } from "../transport/messages.js";
import type { JoinStatus } from "../ui/document.js";

/** How a key's partition is computed (src/ring/ring.ts's partitionOf), for clients in other languages. */
export const RING_HASH = "murmur3-x86-32, seed 0x52494e47, partition = floor(hash * partitions / 2^32)";

// ------------------------------------------------------------------ GET /ring

/** `GET /ring`: the ring as clients need it for partition-aware routing. */
export interface RingDocument {
  /** The ring's version (0: no ring yet). */
  readonly version: number;
  /** Q, the number of partitions (0: no ring yet). */
  readonly partitions: number;
  /** N, the replicas of each key: a key's preference list is the first N distinct members from its partition. */
  readonly n: number;
  /** How a key's partition is computed (RING_HASH). */
  readonly hash: string;
  /** The member owning each partition, by partition (Q entries; empty without a ring). */
  readonly owners: readonly string[];
  /** Every member that has not left, in the order of this node's view. */
  readonly members: readonly RingMember[];
}

export interface RingMember {
  readonly id: string;
  /** Its client API address, host:port (port 0: not yet known). */
  readonly api: string;
  readonly zone: string | null;
  readonly weight: number;
  /** Whether this node hears from it: up, suspect or down. */
  readonly state: Liveness;
}

/** What the ring document is built from. */
export interface RingInputs {
  readonly ring: RingView | null;
  readonly n: number;
  /** The members as this node sees them. */
  readonly members: readonly MemberView[];
  /** A member's liveness as this node sees it, all read at one instant. */
  readonly liveness: (id: string) => Liveness;
}

export function ringDocument(i: RingInputs): RingDocument {
  const ring = i.ring;
  return {
    version: ring?.version ?? 0,
    partitions: ring?.partitions ?? 0,
    n: i.n,
    hash: RING_HASH,
    owners: ring?.owners ?? [],
    members: i.members
      .filter((m) => m.status !== "left")
      .map((m) => ({
        id: m.id,
        api: m.api,
        zone: m.zone ?? null,
        weight: m.weight,
        state: i.liveness(m.id),
      })),
  };
}

// ------------------------------------------------------------------ GET /status

/** `GET /status`: this node, its cluster, its view of every member, and what it is doing. */
export interface StatusDocument {
  readonly node: StatusNode;
  readonly cluster: StatusCluster;
  /** Every member this node knows of (also those that left), by id. */
  readonly members: readonly StatusMember[];
  readonly partitions: StatusPartitions;
  /** This node's ownership handoff: its current or last pass. */
  readonly handoff: HandoffProgress;
  /**
   * The handoff this node's join started, as the node follows it on every member (present only on a node
   * that joined in this run).
   */
  readonly join?: JoinStatus;
  readonly strayStores: StrayStores;
  /** Saves of this node's view (members.json): a failing disk shows here, the node keeps running. */
  readonly viewSaves: ViewSaves;
  readonly hintedHandoff: HintedHandoffStatus;
  /** The last anti-entropy exchanges (none until anti-entropy exists). */
  readonly antiEntropy: AntiEntropyStatus;
  /** The tombstones this node holds, and their purging. */
  readonly tombstones: TombstoneStatus;
  /** The peer transport's counters. */
  readonly transport: TransportCounters;
  /** How peer traffic is protected: the cluster key's id, the keys accepted, connections by key. */
  readonly peerSecurity: PeerSecurityStatus;
  /** The storage engine's statistics. */
  readonly storage: EngineStats;
}

/** `/status` peerSecurity. */
export interface PeerSecurityStatus {
  /** "tls" (TLS 1.3 with the cluster key), or "plaintext" (--insecure-peer-plaintext: no protection). */
  readonly encryption: "tls" | "plaintext";
  /** The id of the key this node connects with (a one-way function of the key), or null. */
  readonly key: string | null;
  /** The ids of the keys it accepts (the current one first; two during a rotation). */
  readonly accepted: readonly string[];
  /** Open peer connections by the key id they authenticated with ("none" in plaintext). */
  readonly connections: {
    readonly incoming: Readonly<Record<string, number>>;
    readonly outgoing: Readonly<Record<string, number>>;
  };
}

/** The node's own facts. */
export interface StatusNode {
  readonly id: string;
  /** The actor that names the versions this node coordinates (renewed after an unclean stop). */
  readonly actor: string;
  /** Its client API and peer addresses as bound, host:port. */
  readonly api: string;
  readonly peer: string;
  /** Its data directory, as an absolute path. */
  readonly dataDir: string;
  readonly weight: number;
  readonly zone: string | null;
}

/** The cluster-wide settings, and the ring this node has. */
export interface StatusCluster {
  readonly id: string;
  readonly n: number;
  readonly r: number;
  readonly w: number;
  /** Q, the ring's partition count, as set when the cluster was created. */
  readonly partitions: number;
  /** The version of the ring this node has (0: none yet). */
  readonly ringVersion: number;
}

export interface StatusMember {
  readonly id: string;
  readonly api: string;
  readonly peer: string;
  /**
   * What an operator wants to know at a glance: the member's own status while this node hears from it
   * (joining, up, leaving), `left` once it left, else its liveness (suspect, down).
   */
  readonly state: MemberView["status"] | Liveness;
  /** The status the member itself gossips: joining, up, leaving, left. */
  readonly status: MemberView["status"];
  readonly weight: number;
  readonly zone: string | null;
  readonly incarnation: number;
  readonly heartbeat: number;
  /** The partitions it owns in this node's ring. */
  readonly partitions: number;
}

export interface StatusPartitions {
  /** Q (0: no ring yet). */
  readonly total: number;
  /** The partitions this node owns, and those it holds a replica of (owned ones included). */
  readonly owned: readonly number[];
  readonly replicated: readonly number[];
}

/** Stores that came for keys this node does not replicate. */
export interface StrayStores {
  /** Sent on to the key's replicas. */
  readonly forwarded: number;
  /** Of those, sends that every replica refused or missed. */
  readonly failed: number;
  /** Not sent on (over the bound): left to read repair. */
  readonly dropped: number;
}

/** Anti-entropy as this node runs it. */
export interface AntiEntropyStatus {
  readonly enabled: boolean;
  /** Paused by an operator (it still answers its peers). */
  readonly paused: boolean;
  /** The rebuild of this node's trees from its data (after an unclean stop), while it runs or last ran. */
  readonly rebuild: {
    readonly partitions: number;
    readonly startedAt: number;
    readonly state: "running" | "done" | "abandoned";
    readonly keys: number | null;
  } | null;
  /**
   * A replaced disk being refilled (node/recovery.ts): `recovering` until anti-entropy has swept every
   * co-replica in full since the start, then `done`; null when this node's disk was not replaced.
   */
  readonly recovery: {
    readonly state: "recovering" | "done";
    readonly since: number;
    readonly doneAt: number | null;
  } | null;
  /** When every co-replica was last exchanged with in full, and how long ago (ms); null: not yet. */
  readonly lastFullSweepAt: number | null;
  readonly lastFullSweepAgeMs: number | null;
  /** Exchanges this node started, keys repaired, exchanges that failed, since it started. */
  readonly exchanges: number;
  readonly keysRepaired: number;
  readonly failed: number;
  /** The last exchanges, oldest first. */
  readonly lastExchanges: readonly {
    readonly peer: string;
    readonly at: number;
    readonly outcome: string;
    readonly partitions: number;
    readonly differingSegments: number;
    readonly keysDiffering: number;
    readonly keysRepaired: number;
    readonly bytes: number;
    readonly capped: boolean;
    readonly error: string | null;
  }[];
}

const ANTI_ENTROPY_OFF: AntiEntropyStatus = {
  enabled: false,
  paused: false,
  rebuild: null,
  recovery: null,
  lastFullSweepAt: null,
  lastFullSweepAgeMs: null,
  exchanges: 0,
  keysRepaired: 0,
  failed: 0,
  lastExchanges: [],
};

/** Tombstones as this node holds and purges them (replication/tombstones.ts). */
export interface TombstoneStatus {
  /** Sweeps run (they count the tombstones); `purging`: they also purge those every replica agrees on. */
  readonly enabled: boolean;
  readonly purging: boolean;
  /** The grace period (ms): a tombstone is kept at least this long (null when no sweeps run). */
  readonly graceMs: number | null;
  /** Keys whose set is only tombstones, counted by the last complete sweep (null: none ended yet). */
  readonly held: number | null;
  /** Of those, the ones this node owns (first replica) that were past the grace period. */
  readonly ownedPastGrace: number | null;
  /** Keys whose tombstones this node deleted (as their owner, or asked by it), since it started. */
  readonly purged: number;
  /** Keys this node owns left unpurged at a sweep, by reason, since it started. */
  readonly refused: Readonly<Record<string, number>>;
  readonly sweeps: number;
  /** When the last sweep ended, and how long ago (ms); null: none yet. */
  readonly lastSweepAt: number | null;
  readonly lastSweepAgeMs: number | null;
}

const TOMBSTONES_OFF: TombstoneStatus = {
  enabled: false,
  purging: false,
  graceMs: null,
  held: null,
  ownedPastGrace: null,
  purged: 0,
  refused: {},
  sweeps: 0,
  lastSweepAt: null,
  lastSweepAgeMs: null,
};

/** Hinted handoff as this node holds and delivers it. */
export interface HintedHandoffStatus {
  /** Hints held here, all targets together. */
  readonly backlog: number;
  readonly backlogBytes: number;
  /** Per target node that has hints here (or had some delivered since this node started). */
  readonly targets: readonly HintTargetStatus[];
  readonly limits: {
    readonly windowMs: number;
    readonly maxBytesPerTarget: number;
    readonly deliveryBytesPerSecond: number;
  } | null;
}

export interface HintTargetStatus {
  readonly target: string;
  /** Hints held for it, their bytes, and the age of the oldest (ms; null when none). */
  readonly count: number;
  readonly bytes: number;
  readonly oldestAgeMs: number | null;
  /** idle: nothing to deliver; delivering: a pass is sending; waiting: the target is not up (or a pass failed). */
  readonly state: "idle" | "delivering" | "waiting";
  readonly delivered: number;
  readonly deliveredBytes: number;
  readonly failed: number;
  readonly lastError: string | null;
  readonly lastDeliveredAt: number | null;
  /** Stores kept in flight to it now (the adaptive window). */
  readonly window: number;
}

export interface ViewSaves {
  /** Saves that succeeded, and that failed (each failed retry counts). */
  readonly saved: number;
  readonly failed: number;
  /** The last failure's message while saves are failing, else null. */
  readonly lastError: string | null;
  /** A save is waiting to be retried. */
  readonly retrying: boolean;
}

export interface TransportCounters {
  /** Incoming connections closed for a malformed or unexpected frame. */
  readonly protocolErrors: number;
  /** Handshakes refused (another protocol version, another cluster). */
  readonly rejectedHandshakes: number;
  /** Requests refused because their connection had too many in flight. */
  readonly overloaded: number;
  /**
   * Incoming connections refused before their peer was authenticated, by reason (tls_handshake,
   * handshake_timeout, address_limit, pending_limit, connection_limit, key_removed).
   */
  readonly refused: Readonly<Record<string, number>>;
  /** Incoming connections dropped because their peer left its answers unread past the byte bound. */
  readonly slowReaders: number;
  /** Requests not run because their deadline had passed before they would start. */
  readonly expired: number;
}

/** What the status document is built from. */
export interface StatusInputs {
  readonly node: StatusNode;
  /** The cluster's settings; the ring version comes from `ring`. */
  readonly cluster: Omit<StatusCluster, "ringVersion">;
  readonly ring: RingView | null;
  readonly members: readonly MemberView[];
  /** A member's liveness as this node sees it, all read at one instant. */
  readonly liveness: (id: string) => Liveness;
  readonly partitions: { readonly owned: readonly number[]; readonly replicated: readonly number[] };
  readonly handoff: HandoffProgress;
  readonly join?: JoinStatus;
  readonly strayStores: StrayStores;
  readonly viewSaves: ViewSaves;
  readonly hintedHandoff?: HintedHandoffStatus;
  readonly antiEntropy?: AntiEntropyStatus;
  readonly tombstones?: TombstoneStatus;
  readonly transport: TransportCounters;
  readonly peerSecurity?: PeerSecurityStatus;
  readonly storage: EngineStats;
}

/** A member's state as /status shows it (StatusMember.state). */
export function memberState(m: MemberView, live: Liveness): StatusMember["state"] {
  return live === "up" ? m.status : m.status === "left" ? "left" : live;
}

/** The status document; the counters are copied (the document does not change as they do). */
export function statusDocument(i: StatusInputs): StatusDocument {
  const ring = i.ring;
  const n = i.node;
  const c = i.cluster;
  const t = i.transport;
  const s = i.strayStores;
  return {
    node: {
      id: n.id,
      actor: n.actor,
      api: n.api,
      peer: n.peer,
      dataDir: n.dataDir,
      weight: n.weight,
      zone: n.zone,
    },
    cluster: { id: c.id, n: c.n, r: c.r, w: c.w, partitions: c.partitions, ringVersion: ring?.version ?? 0 },
    members: [...i.members]
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((m) => ({
        id: m.id,
        api: m.api,
        peer: m.peer,
        state: memberState(m, i.liveness(m.id)),
        status: m.status,
        weight: m.weight,
        zone: m.zone ?? null,
        incarnation: m.incarnation,
        heartbeat: m.heartbeat,
        partitions: ring?.owners.filter((o) => o === m.id).length ?? 0,
      })),
    partitions: {
      total: ring?.partitions ?? 0,
      owned: i.partitions.owned,
      replicated: i.partitions.replicated,
    },
    handoff: { ...i.handoff },
    ...(i.join === undefined ? {} : { join: i.join }),
    strayStores: { forwarded: s.forwarded, failed: s.failed, dropped: s.dropped },
    viewSaves: {
      saved: i.viewSaves.saved,
      failed: i.viewSaves.failed,
      lastError: i.viewSaves.lastError,
      retrying: i.viewSaves.retrying,
    },
    hintedHandoff: i.hintedHandoff ?? { backlog: 0, backlogBytes: 0, targets: [], limits: null },
    antiEntropy: i.antiEntropy ?? ANTI_ENTROPY_OFF,
    tombstones: i.tombstones ?? TOMBSTONES_OFF,
    transport: {
      protocolErrors: t.protocolErrors,
      rejectedHandshakes: t.rejectedHandshakes,
      overloaded: t.overloaded,
      refused: { ...t.refused },
      slowReaders: t.slowReaders,
      expired: t.expired,
    },
    peerSecurity: i.peerSecurity ?? {
      encryption: "plaintext",
      key: null,
      accepted: [],
      connections: { incoming: {}, outgoing: {} },
    },
    storage: i.storage,
  };
}

// ------------------------------------------------------------------ POST /cluster/leave, /cluster/remove

/** The 202 answer to `POST /cluster/leave`: the leave has started. */
export interface LeaveAnswer {
  /** The node leaving (this one). */
  readonly node: string;
  /** Its status now: leaving. */
  readonly status: string;
  /** The members that stay up to take its data. */
  readonly remaining: number;
}

/** The 202 answer to `POST /cluster/remove`: the member is removed. */
export interface RemoveAnswer {
  /** The node that removed it (this one). */
  readonly node: string;
  /** The member removed. */
  readonly removed: string;
  /** The members that stay up to take its data. */
  readonly remaining: number;
}

/** What the hinted handoff section is built from. */
export interface HintedHandoffInputs {
  readonly backlog: ReadonlyMap<
    string,
    { readonly count: number; readonly bytes: number; readonly oldestStoredAt: number | null }
  >;
  readonly progress: ReadonlyMap<
    string,
    Omit<HintTargetStatus, "target" | "count" | "bytes" | "oldestAgeMs">
  >;
  readonly limits: HintedHandoffStatus["limits"];
  /** The clock the hints' storedAt came from. */
  readonly now: number;
}

export function hintedHandoffDocument(i: HintedHandoffInputs): HintedHandoffStatus {
  const ids = [...new Set([...i.backlog.keys(), ...i.progress.keys()])].sort();
  let count = 0;
  let bytes = 0;
  const targets = ids.map((target): HintTargetStatus => {
    const b = i.backlog.get(target);
    const p = i.progress.get(target);
    count += b?.count ?? 0;
    bytes += b?.bytes ?? 0;
    return {
      target,
      count: b?.count ?? 0,
      bytes: b?.bytes ?? 0,
      oldestAgeMs: b?.oldestStoredAt == null ? null : Math.max(0, Math.round(i.now - b.oldestStoredAt)),
      state: p?.state ?? (b === undefined ? "idle" : "waiting"),
      delivered: p?.delivered ?? 0,
      deliveredBytes: p?.deliveredBytes ?? 0,
      failed: p?.failed ?? 0,
      lastError: p?.lastError ?? null,
      lastDeliveredAt: p?.lastDeliveredAt ?? null,
      window: p?.window ?? 0,
    };
  });
  return { backlog: count, backlogBytes: bytes, targets, limits: i.limits };
}

// ------------------------------------------------------------------ GET /ui/state

/**
 * `GET /ui/state`: the dashboard's document. Its types live beside the page that reads them
 * (src/ui/document.ts, free of imports so that the browser's build and the node's share them).
 */
export type * from "../ui/document.js";
