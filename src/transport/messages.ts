/**
 * Node-to-node messages: closed unions, versioned, decoded with validation, each answer typed by its
 * request.
 *
 * A connection starts with a handshake (`hello` -> `welcome` | `reject`): both sides state the protocol
 * version and the cluster id, and a peer of another cluster or an incompatible version is refused. After
 * it, frames carry requests (`req`, with an id and a deadline) and their answers (`ans`, or `err`). Every
 * union, frames and bodies alike, is discriminated by a field named `kind`.
 *
 * Each request kind has exactly one answer kind (`ANSWER_KIND`; `AnswerOf<K>` is its type). The
 * transports check it: an answer of another kind fails the request with ERR_PROTOCOL, so a caller of
 * `Transport.request` gets the answer type of its request and never checks for a stray one.
 *
 * Every frame is a MessagePack map (msgpackr with useRecords:false: standard MessagePack, no shared
 * structures). `decodeFrame` checks every field's type and bound and throws ProtocolError otherwise, so a
 * peer sending garbage gets an error and its connection closed, never a crash. Nothing inside a frame is
 * a second MessagePack document: a forwarded write's context and outcome are fields of the message,
 * validated here like the rest.
 *
 * Sibling sets (`store`'s and `read`'s `set`, an ok outcome's `written` and `set`) travel as the bytes of
 * the stored object format (versioning/object-codec.ts: magic, version, CRC, the same bytes as on disk),
 * checked here only as bytes within the frame cap and decoded, with their own validation, by the
 * replication layer where they are used. They are not decoded here, for three reasons: a set whose
 * object bytes are bad fails only the request that carried it, where a frame that fails to decode closes
 * the connection and every request in flight on it; the forwarded-write memo bounds what it keeps by
 * the exact bytes of the outcomes; and the simulated network, with its codec off, passes bodies by
 * reference, where bytes are safe to share between nodes and decoded sets (with their mutable maps) are
 * not. (The layers would allow it: transport/ may depend on versioning/, which is below it.)
 */
import { Packr } from "msgpackr";
import {
  AE_ANSWER_KIND,
  type AeAnswer,
  type AeRequest,
  MAX_ANSWER_KEY_BYTES,
  MAX_MESSAGE_KEYS,
  MAX_REQUEST_IDS,
  MAX_REQUEST_SEGMENTS,
} from "../anti-entropy/messages.js";

/**
 * Checked for equality in the handshake (tcp-transport.ts): nodes of different versions refuse each
 * other. 2: `coordinate` carries a `requestId` (forwarded writes are idempotent). 3: `depart` (a leave
 * or a removal is approved by the claimant, which serializes them). 4: every union is discriminated by
 * `kind` (frames were `t`, bodies `op`), an answer frame is `ans` (was `res`), and `coordinate`'s context
 * and `coordinated`'s outcome are fields of the message (a list of [actor, counter] entries, a closed
 * union) instead of nested MessagePack blobs. 5: `read` and `store` may carry `hintFor` (sloppy quorum:
 * the receiver stands in for that replica); a node of version 4 would take such a store as its own data.
 * 6: anti-entropy's requests (ae_roots, ae_branches, ae_segments, ae_keys) and answers. 7: `list_keys`
 * (the cluster's key listing reads a partition set's live keys from a replica) and its `key_list`.
 * 8: tombstone purging's agreement (`purge_check`) and purge-if-equal (`purge`). 9: connections are TLS
 * with the cluster key (tcp-transport.ts), and a member's `left` entry made by a removal names the
 * claimant that approved it (`removedBy`), and a member's own leave the claimant that approved that
 * (`leaveApprovedBy`). 10: gossip by digest and delta (`gossip` carries a `digest` of every member's
 * incarnation, status and heartbeat and the ring's version; full entries and the ring, or a ring's
 * change as `ringDelta`, travel only to a peer that lacks them, asked with `want` and `ringWant`), and
 * a member's heartbeat is a u32. 11: `count_partitions` (how many sets and bytes a node stores per
 * partition, for `cluster plan`) and its `partition_counts`. 12: `handoff_progress` (a member's ownership
 * handoff figures, which a joining node follows) and its `handoff_figures`.
 */
export const PROTOCOL_VERSION = 12;
/**
 * The oldest protocol a node still speaks, for a rolling upgrade (tcp-transport.ts): 9, which differs
 * from 12 in gossip and in the requests of 11 (`count_partitions`) and 12 (`handoff_progress`), which
 * are never sent over a connection that speaks an older protocol (REQUEST_SINCE: they fail at once, so a
 * `cluster plan` asked while such a node remains names it, and a joining node's progress names it as not
 * answering). A node of 9 sends protocol 9's whole-view exchange, which a node of 12
 * answers the same way; a node of 12 opens with a digest, which a node of 9 reads as an empty whole-view
 * request (it ignores fields it does not know) and answers with its whole view, which the node of 12
 * merges. So a node of 12 accepts a hello of 9, 10 or 11 (its welcome says that version), and a node of
 * an older version that refuses its hello gets a hello of its own version on the next connection. The
 * window: as long as this constant is 9, i.e. until
 * the release whose protocol drops it (a later one may raise it only once no node of 9 can remain).
 */
export const MIN_PROTOCOL_VERSION = 9;

/**
 * The protocol that brought each request kind newer than MIN_PROTOCOL_VERSION. A node of an older one
 * cannot decode such a request (its decoder refuses the frame and closes the connection, failing every
 * request in flight on it), so the transport never sends one over a connection that speaks an older
 * protocol: the request fails at once, ERR_REJECTED, naming the version (tcp-transport.ts).
 */
export const REQUEST_SINCE: { readonly [K in RequestKind]?: number } = {
  count_partitions: 11,
  handoff_progress: 12,
};

/** Does a peer speaking protocol `version` understand requests of `kind`? */
export function speaksKind(version: number, kind: RequestKind): boolean {
  return version >= (REQUEST_SINCE[kind] ?? MIN_PROTOCOL_VERSION);
}

/** The version an older node's refusal names as its own ("protocol version V is not THEIRS"), if it is one this node still speaks. */
export function olderVersionIn(reason: string): number | undefined {
  const m = /^protocol version \d+ is not (\d+)/.exec(reason);
  const v = m === null ? Number.NaN : Number(m[1]);
  return v >= MIN_PROTOCOL_VERSION && v < PROTOCOL_VERSION ? v : undefined;
}
/** Longest `coordinate` request id (the forwarder's node id, 16 hex digits, a counter). */
export const MAX_REQUEST_ID_CHARS = 128;
/** Longest deadline a request frame carries (a longer timeout is sent as this). */
export const MAX_DEADLINE_MS = 3_600_000;
/** Largest frame accepted: 64 siblings of 1 MiB plus overhead fit easily. */
export const MAX_FRAME_BYTES = 96 * 1024 * 1024;
/** Longest actor in a context (a node id of at most 64 characters, a dot, 8 hex digits). */
export const MAX_ACTOR_CHARS = 128;
/**
 * Most entries in a forwarded write's context. The context comes from a client's token, at most 8192
 * characters (versioning/context-token.ts): 6144 bytes, which hold fewer than 600 actors of the
 * shortest form a node makes (a one-character id, a dot, 8 hex digits).
 */
export const MAX_CONTEXT_ENTRIES = 1024;
/** Largest key in a message (the API's limit is lower). */
const MAX_KEY_BYTES = 65536;
/** Most keys in one `key_list` answer (src/listing). */
export const MAX_LIST_KEYS = 10_000;
/** Most bytes of keys in one `key_list` answer: its keys' own bytes (one key may pass it by its size). */
export const MAX_LIST_BYTES = 4 * 1024 * 1024;
/** Largest replication factor, and so the largest count of replicas in an answer. */
const MAX_REPLICAS = 64;

export class ProtocolError extends Error {
  readonly code = "ERR_PROTOCOL";
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

export interface MemberView {
  readonly id: string;
  readonly api: string;
  readonly peer: string;
  readonly weight: number;
  readonly zone: string | undefined;
  /** joining | up | leaving | left (states the member itself owns; suspicion is local to each node). */
  readonly status: "joining" | "up" | "leaving" | "left";
  /** Bumped by the member itself to refute suspicion and to order its own state changes. */
  readonly incarnation: number;
  /** Increases while the member is alive (gossiped; the failure detector watches it). */
  readonly heartbeat: number;
  /**
   * On a `left` entry made by `cluster remove` (not by the member's own leave): the claimant that approved
   * the removal. Receivers take such an entry from that claimant, or from their own (membership.ts).
   */
  readonly removedBy?: string;
  /**
   * On the `leaving` and `left` entries of a member's own leave: the claimant that approved the leave. A
   * member that never saw the leave begin takes the `left` that ends it from that claimant (membership.ts).
   */
  readonly leaveApprovedBy?: string;
}

/** Largest heartbeat (it travels as a u32): a member that reaches it bumps its incarnation instead. */
export const MAX_HEARTBEAT = 0xffff_ffff;

/**
 * What a gossip exchange opens with (membership/digest.ts builds and reads it): enough to tell which
 * side lacks what, without the entries themselves.
 *
 * The directory is every member this node holds (departed ones too, until forgotten) in id order, each
 * with its incarnation and status; `dir` is a 53-bit hash of it. Two nodes with the same `dir` and
 * `count` hold the same members with the same incarnations and statuses, so `heartbeats` (u32
 * little-endian, one per member in id order) line up and are all that needs to travel. A full digest
 * (the answer to an opening whose `dir` differs) also names the members: `ids` (strictly ascending),
 * `incarnations`, and `statuses` (one byte each: 0 joining, 1 up, 2 leaving, 3 left).
 */
export interface GossipDigest {
  readonly dir: number;
  readonly count: number;
  readonly heartbeats: Uint8Array;
  readonly ringVersion: number;
  /** 32-bit hash of the ring (two rings of one version differ only if two claimants acted at once). */
  readonly ringHash: number;
  readonly ids?: readonly string[];
  readonly incarnations?: readonly number[];
  readonly statuses?: Uint8Array;
  /**
   * While departed members are in the directory: for each (in id order) a bitmap of ceil(count / 8)
   * bytes, bit i (byte i >> 3, bit i & 7) set if directory member i was seen holding it as left
   * (membership.ts forgets a departed member once every live member has).
   */
  readonly seen?: Uint8Array;
}

/** A ring named by its version and hash (0, 0: no ring). */
export interface RingRef {
  readonly version: number;
  readonly hash: number;
}

/**
 * A ring as the change from one the receiver holds (`base`, by version and hash): the partitions whose
 * owner changed (`moved`, u32 little-endian each) with their new `owners`, and the new ring's version and
 * member list. Sent instead of the whole ring when it is smaller.
 */
export interface RingDelta {
  readonly version: number;
  readonly partitions: number;
  readonly members: readonly string[];
  readonly base: RingRef;
  readonly moved: Uint8Array;
  readonly owners: readonly string[];
}

/**
 * Gossip (membership/gossip-driver.ts). An exchange opens with a request carrying `digest` (and no
 * entries); the answer carries the answerer's digest (full if the directories differ), the ring or its
 * delta if the asker's is older, and `ringWant` (the answerer's ring) if the asker's is newer. If the
 * asker then lacks entries or holds some the answerer lacks, it closes with a second request carrying
 * `want` (ids it asks for), the entries the answerer lacks and the ring it asked for; its answer carries
 * the entries wanted. A request with neither `digest` nor `want` is protocol 9's whole-view exchange:
 * it carries the sender's whole view and ring, and is answered with the answerer's.
 */
export interface GossipRequest {
  readonly kind: "gossip";
  readonly members: readonly MemberView[];
  readonly ring: RingView | null;
  readonly digest?: GossipDigest;
  readonly want?: readonly string[];
  readonly ringDelta?: RingDelta;
}

export interface GossipAnswer {
  readonly kind: "gossip";
  readonly members: readonly MemberView[];
  readonly ring: RingView | null;
  readonly digest?: GossipDigest;
  readonly ringWant?: RingRef;
  readonly ringDelta?: RingDelta;
}

export interface RingView {
  readonly version: number;
  readonly partitions: number;
  readonly owners: readonly string[];
  /** The members (id:weight) the ring was claimed for; a member may own no partition (tiny weight). */
  readonly members: readonly string[];
}

/** A version vector on the wire: [actor, counter] entries, no actor twice, every counter >= 1. */
export type WireContext = readonly (readonly [actor: string, counter: number])[];

/**
 * The outcome of a forwarded write, mirroring replication/coordinator.ts's WriteOutcome: the written
 * version and the key's sibling set as stored-object bytes (`written` is a set of one).
 */
export type WireWriteOutcome =
  | { readonly kind: "ok"; readonly written: Uint8Array; readonly set: Uint8Array; readonly acked: number }
  | { readonly kind: "too_many_siblings"; readonly siblings: number; readonly max: number }
  | {
      readonly kind: "unavailable";
      readonly needed: number;
      readonly acked: number;
      readonly primary?: { readonly needed: number; readonly acked: number };
    }
  | { readonly kind: "too_few_replicas"; readonly needed: number; readonly replicas: number }
  | {
      readonly kind: "overloaded";
      readonly limit: "waiters_per_key" | "keys_locked";
      readonly max: number;
    };

/**
 * A member's word on one key of a tombstone purge (replication/tombstones.ts), one byte per key in
 * `purge_verdicts` and `purge_results` (the byte is the index in this list):
 * - ok: it holds exactly the tombstones sent (or, if it is no replica of the key, nothing) and nothing
 *   stands in the way (`purge_check`), or it deleted them or held nothing (`purge`);
 * - differs: it holds another set for the key (a replica: or nothing);
 * - young: the newest tombstone is not past the grace period by its clock;
 * - hint_pending: it holds a hint for the key (for any target);
 * - handoff_pending: its ownership handoff for the current ring is not complete, or it is not `up`;
 * - ring_differs: its ring has another version, or under it the sender is not the key's first replica;
 * - off: it does not purge tombstones;
 * - busy: the key's lock is full (try again later).
 */
export const PURGE_VERDICTS = [
  "ok",
  "differs",
  "young",
  "hint_pending",
  "handoff_pending",
  "ring_differs",
  "off",
  "busy",
] as const;
export type PurgeVerdict = (typeof PURGE_VERDICTS)[number];
/** Most keys in one purge request. */
export const MAX_PURGE_KEYS = 256;

/** A tombstone purge's request (see RequestBody). */
export interface PurgeRequest<K extends "purge_check" | "purge"> {
  readonly kind: K;
  readonly ringVersion: number;
  readonly keys: readonly Uint8Array[];
  readonly sets: readonly Uint8Array[];
}

export type RequestBody =
  | { readonly kind: "ping" }
  | { readonly kind: "probe"; readonly target: string }
  | {
      readonly kind: "read";
      readonly key: Uint8Array;
      /**
       * Sloppy quorum: the receiver answers as a stand-in for this replica (every hint it holds for the
       * key, with any set of its own) instead of as a replica of the key.
       */
      readonly hintFor?: string;
    }
  | {
      readonly kind: "store";
      readonly key: Uint8Array;
      /** The sibling set, as stored-object bytes. */
      readonly set: Uint8Array;
      /** Sent by ownership handoff (never sent on as a stray store: the sender's ring is the newer one). */
      readonly handoff?: boolean;
      /**
       * Sloppy quorum: the receiver stands in for this replica, which is down or did not answer; it keeps
       * the set as a hint for it (replication/hints.ts) and delivers it later.
       */
      readonly hintFor?: string;
    }
  | {
      readonly kind: "coordinate";
      /**
       * Names this forwarded write, uniquely across the cluster and restarts (replication/forward-memo.ts):
       * a copy of the request that arrives again gets the first one's outcome and applies nothing.
       */
      readonly requestId: string;
      readonly key: Uint8Array;
      readonly context: WireContext;
      readonly value: Uint8Array;
      readonly contentType: string;
      readonly deleted: boolean;
      readonly writtenAtMs: number;
      readonly w: number;
      /** How many of the w acknowledgements must come from the key's primaries (absent: 0). */
      readonly pw?: number;
      readonly timeoutMs: number;
    }
  | GossipRequest
  | {
      readonly kind: "join";
      readonly member: MemberView;
    }
  | {
      /**
       * Asks the claimant to approve that member `id` departs: it leaves by itself, or is removed on its
       * behalf. The claimant answers from its view and the departures it approved lately, so two started
       * at once on different nodes cannot both pass the check that N members remain.
       */
      readonly kind: "depart";
      readonly id: string;
      readonly how: "leave" | "remove";
      readonly force: boolean;
    }
  | {
      /**
       * The live keys this replica holds in a set of partitions (src/listing/replica-scan.ts): every key
       * after `after` (from the first if null) in key order whose partition is in `include` and whose set
       * holds a live sibling, at most `maxKeys` of them and about `maxBytes` of key bytes.
       */
      readonly kind: "list_keys";
      /** Q, the ring's partition count: a replica with another refuses the request. */
      readonly partitions: number;
      /** The partitions listed: a bitmap of Q bits (partition p is bit p & 7 of byte p >> 3). */
      readonly include: Uint8Array;
      readonly after: Uint8Array | null;
      readonly maxKeys: number;
      readonly maxBytes: number;
    }
  /**
   * How many sibling sets (live or not) and bytes (keys and sets) this node stores in each of the ring's
   * `partitions` partitions (node/partition-counts.ts): what a change of the ring would move
   * (`cluster plan`).
   */
  | { readonly kind: "count_partitions"; readonly partitions: number }
  /**
   * This node's ownership handoff as it stands (replication/handoff.ts): a joining node asks every member
   * until each has finished its pass for the ring that includes it (node/join-follower.ts).
   */
  | { readonly kind: "handoff_progress" }
  /**
   * Tombstone purging (replication/tombstones.ts), from a key's first replica to every other member.
   * `keys[i]` holds `sets[i]` (stored-object bytes, all tombstones) at the sender, under its ring
   * `ringVersion`. `purge_check` asks whether each receiver holds the identical set (or, if it is no
   * replica of the key, nothing) and nothing stands in the way; `purge` asks it to delete the set if it
   * is still that one.
   */
  | PurgeRequest<"purge_check">
  | PurgeRequest<"purge">
  /** Anti-entropy (anti-entropy/messages.ts): tree levels and keys of the partitions two replicas share. */
  | AeRequest;

export type AnswerBody =
  | { readonly kind: "pong" }
  | { readonly kind: "probed"; readonly alive: boolean }
  /** The sibling set as stored-object bytes; null when the replica holds nothing for the key. */
  | { readonly kind: "read"; readonly set: Uint8Array | null }
  | { readonly kind: "stored" }
  | { readonly kind: "coordinated"; readonly outcome: WireWriteOutcome }
  /**
   * The claimant's answer to `depart`: `refused` says why, or is null; `retry`: refused for now (ask
   * again); `forceable`: refused because fewer than N would remain; `remaining`: members left after it.
   */
  | {
      readonly kind: "departure";
      readonly refused: string | null;
      readonly retry: boolean;
      readonly forceable: boolean;
      readonly remaining: number;
    }
  | GossipAnswer
  | {
      readonly kind: "joined";
      readonly clusterId: string;
      readonly secret: string;
      readonly n: number;
      readonly r: number;
      readonly w: number;
      readonly members: readonly MemberView[];
      readonly ring: RingView | null;
    }
  /**
   * The answer to `list_keys`: `keys`, in key order, are every live key of the partitions asked for in
   * (after, last]; `done` says no key of those partitions comes after `last` (else the next request
   * resumes after `last`, the last key the replica looked at, listed or not); `scanned` counts the
   * stored sets it looked at.
   */
  | {
      readonly kind: "key_list";
      readonly keys: readonly Uint8Array[];
      readonly last: Uint8Array | null;
      readonly done: boolean;
      readonly scanned: number;
    }
  /**
   * The answer to `count_partitions`: per partition p, `keys` holds the count of sets as the u32 at 4p
   * and `kib` the KiB they take (keys and sets, rounded up) as the u32 at 4p (little-endian).
   */
  | { readonly kind: "partition_counts"; readonly keys: Uint8Array; readonly kib: Uint8Array }
  | HandoffFigures
  /** One PurgeVerdict per key of the request (its index in PURGE_VERDICTS, one byte each). */
  | { readonly kind: "purge_verdicts"; readonly verdicts: Uint8Array }
  | { readonly kind: "purge_results"; readonly verdicts: Uint8Array }
  | AeAnswer;

/** The states of a handoff (replication/handoff.ts HandoffProgress). */
export const HANDOFF_STATES = ["idle", "running", "retrying"] as const;

/** The answer to `handoff_progress`: the answerer's handoff figures of the moment. */
export interface HandoffFigures {
  readonly kind: "handoff_figures";
  /** The answerer's ring version (0: it has no ring yet). */
  readonly ringVersion: number;
  /** The ring version its last complete pass was for (0: none): it is done for every ring up to it. */
  readonly handedOff: number;
  /**
   * Its last pass whose own stores have all arrived (its check of the losers it relied on may still run):
   * the ring it was for, and the ring it went from (null: a leaving pass, which sends everything it holds).
   * Absent if the answerer has none since it started, or is older than these fields. A keeper that relied
   * on the answerer to send what it loses reads them (replication/handoff.ts).
   */
  readonly sentFor?: number;
  readonly sentFrom?: number | null;
  readonly state: (typeof HANDOFF_STATES)[number];
  /** The ring the current (or last) pass is for, and that pass's figures. */
  readonly passRingVersion: number;
  readonly keysScanned: number;
  readonly keysSent: number;
  readonly bytesSent: number;
  readonly storesFailed: number;
  /** Sets the pass scans in all (the answerer's last census), null when not known. */
  readonly keysTotal: number | null;
  /** The throttle: bytes per second the answerer sends at most. */
  readonly throttleBytesPerSecond: number;
}

export type RequestKind = RequestBody["kind"];
export type AnswerKind = AnswerBody["kind"];
/** The request body of kind K. */
export type RequestOf<K extends RequestKind> = Extract<RequestBody, { readonly kind: K }>;

/** The one answer kind of each request kind. */
export const ANSWER_KIND = {
  ping: "pong",
  probe: "probed",
  read: "read",
  store: "stored",
  coordinate: "coordinated",
  gossip: "gossip",
  join: "joined",
  depart: "departure",
  list_keys: "key_list",
  count_partitions: "partition_counts",
  handoff_progress: "handoff_figures",
  purge_check: "purge_verdicts",
  purge: "purge_results",
  ...AE_ANSWER_KIND,
} as const satisfies { readonly [K in RequestKind]: AnswerKind };

/** The answer body to a request of kind K (a union of kinds gives the union of their answers). */
export type AnswerOf<K extends RequestKind> = Extract<AnswerBody, { readonly kind: (typeof ANSWER_KIND)[K] }>;

/** A request's timeout as its frame carries it: whole milliseconds, within the decoder's range. */
export function wireDeadlineMs(timeoutMs: number): number {
  return Math.min(MAX_DEADLINE_MS, Math.max(0, Math.ceil(timeoutMs)));
}

/** Is `answer` of the kind that a request of kind `request` expects? */
export function answers<K extends RequestKind>(request: K, answer: AnswerBody): answer is AnswerOf<K> {
  return ANSWER_KIND[request] === answer.kind;
}

export type Frame =
  | { readonly kind: "hello"; readonly v: number; readonly cluster: string; readonly node: string }
  | { readonly kind: "welcome"; readonly v: number; readonly cluster: string; readonly node: string }
  | { readonly kind: "reject"; readonly reason: string }
  | { readonly kind: "req"; readonly id: number; readonly deadlineMs: number; readonly body: RequestBody }
  | { readonly kind: "ans"; readonly id: number; readonly body: AnswerBody }
  | { readonly kind: "err"; readonly id: number; readonly code: string; readonly message: string };

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/**
 * Handshake frames also carry their kind as `t`, the discriminant of protocols 1-3, and `decodeFrame`
 * reads a handshake frame that has only `t`: so a node of an older protocol and one of this still
 * understand each other's hello, welcome and reject, and refuse each other by version number, as the
 * handshake promises, instead of by a frame neither can read.
 */
const HANDSHAKE_KINDS: ReadonlySet<unknown> = new Set(["hello", "welcome", "reject"]);

export function encodeFrame(f: Frame): Buffer {
  return packr.pack(HANDSHAKE_KINDS.has(f.kind) ? { ...f, t: f.kind } : f);
}

// ------------------------------------------------------------------ validation

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array)
    throw new ProtocolError(`${what} is not a map`);
  return v as Obj;
}
function str(o: Obj, k: string, max = 1024): string {
  const v = o[k];
  if (typeof v !== "string" || v.length > max)
    throw new ProtocolError(`field ${k} is not a string of at most ${max} chars`);
  return v;
}
function optStr(o: Obj, k: string, max = 1024): string | undefined {
  return o[k] === undefined || o[k] === null ? undefined : str(o, k, max);
}
function num(o: Obj, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max)
    throw new ProtocolError(`field ${k} is not a number in ${min}..${max}`);
  return v;
}
function int(o: Obj, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = num(o, k, min, max);
  if (!Number.isInteger(v)) throw new ProtocolError(`field ${k} is not an integer`);
  return v;
}
function requestId(o: Obj, k: string): string {
  const v = str(o, k, MAX_REQUEST_ID_CHARS);
  if (v.length === 0) throw new ProtocolError(`field ${k} is empty`);
  return v;
}
function bool(o: Obj, k: string): boolean {
  const v = o[k];
  if (typeof v !== "boolean") throw new ProtocolError(`field ${k} is not a boolean`);
  return v;
}
function bytes(o: Obj, k: string, max = MAX_FRAME_BYTES): Uint8Array {
  const v = o[k];
  if (!(v instanceof Uint8Array) || v.length > max) throw new ProtocolError(`field ${k} is not bytes`);
  // Decoded binaries are views into the frame: copy, so that keeping one does not keep the frame alive.
  return Buffer.from(v);
}
function arr(o: Obj, k: string, max: number): unknown[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length > max)
    throw new ProtocolError(`field ${k} is not a list of at most ${max}`);
  return v;
}

const STATUSES = new Set(["joining", "up", "leaving", "left"]);
const MAX_MEMBERS = 10_000;
const MAX_PARTITIONS = 1 << 20;

/** A member's weight: a share of the ring, so above 0 (the ring's claim refuses 0). */
function weight(o: Obj): number {
  const w = num(o, "weight", 0, 1e6);
  if (w === 0) throw new ProtocolError("field weight is 0: a member's weight is above 0");
  return w;
}

function member(v: unknown): MemberView {
  const o = obj(v, "member");
  const status = str(o, "status", 16);
  if (!STATUSES.has(status)) throw new ProtocolError(`member status ${status} unknown`);
  const m: MemberView = {
    id: str(o, "id", 64),
    api: str(o, "api", 300),
    peer: str(o, "peer", 300),
    weight: weight(o),
    zone: optStr(o, "zone", 64),
    status: status as MemberView["status"],
    incarnation: int(o, "incarnation"),
    heartbeat: int(o, "heartbeat", 0, MAX_HEARTBEAT),
  };
  const leave =
    o.leaveApprovedBy === undefined || o.leaveApprovedBy === null
      ? m
      : { ...m, leaveApprovedBy: nodeId(o, "leaveApprovedBy") };
  if (leave !== m && status !== "leaving" && status !== "left")
    throw new ProtocolError(
      `member ${m.id} names who approved its leave but is ${status}, not leaving or left`,
    );
  if (o.removedBy === undefined || o.removedBy === null) return leave;
  if (status !== "left")
    throw new ProtocolError(`member ${m.id} names who removed it but is ${status}, not left`);
  return { ...leave, removedBy: nodeId(o, "removedBy") };
}

function ring(v: unknown): RingView | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, "ring");
  const partitions = int(o, "partitions", 1, MAX_PARTITIONS);
  if (!Number.isInteger(Math.log2(partitions)))
    throw new ProtocolError(`ring of ${partitions} partitions: a ring has a power of two`);
  const owners = arr(o, "owners", MAX_PARTITIONS);
  if (owners.length !== partitions) throw new ProtocolError("ring owners do not match its partition count");
  for (const x of owners)
    if (typeof x !== "string" || x.length > 64) throw new ProtocolError("ring owner is not an id");
  const members = arr(o, "members", MAX_MEMBERS);
  for (const x of members)
    if (typeof x !== "string" || x.length > 100) throw new ProtocolError("ring member is not an id");
  return { version: int(o, "version"), partitions, owners: owners as string[], members: members as string[] };
}

/** A list of id strings of at most `maxChars` each. */
function ids(o: Obj, k: string, max: number, maxChars: number): string[] {
  const v = arr(o, k, max);
  for (const x of v)
    if (typeof x !== "string" || x.length > maxChars) throw new ProtocolError(`field ${k} holds a non-id`);
  return v as string[];
}

function ringRef(v: unknown, what: string): RingRef {
  const o = obj(v, what);
  return { version: int(o, "version"), hash: int(o, "hash", 0, 0xffff_ffff) };
}

function ringDelta(v: unknown): RingDelta | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, "ringDelta");
  const partitions = int(o, "partitions", 1, MAX_PARTITIONS);
  const moved = u32List(o, "moved", partitions);
  const owners = ids(o, "owners", partitions, 64);
  if (owners.length * 4 !== moved.length)
    throw new ProtocolError("ringDelta: moved partitions and owners do not match");
  const view = new DataView(moved.buffer, moved.byteOffset, moved.byteLength);
  for (let i = 0; i < owners.length; i++)
    if (view.getUint32(4 * i, true) >= partitions)
      throw new ProtocolError(`ringDelta: partition ${view.getUint32(4 * i, true)} of ${partitions}`);
  return {
    version: int(o, "version"),
    partitions,
    members: ids(o, "members", MAX_MEMBERS, 100),
    base: ringRef(o.base, "ringDelta base"),
    moved,
    owners,
  };
}

/** A digest's `seen`: whole bitmaps of ceil(count / 8) bytes, one per departed member. */
function seenBitmaps(o: Obj, count: number): Uint8Array {
  const width = (count + 7) >> 3;
  const v = bytes(o, "seen", width * count);
  if (width === 0 || v.length % width !== 0)
    throw new ProtocolError(`digest: ${v.length} bytes of seen bitmaps for ${count} members`);
  return v;
}

function digest(v: unknown): GossipDigest | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, "digest");
  const count = int(o, "count", 0, MAX_MEMBERS);
  const heartbeats = bytes(o, "heartbeats", 4 * MAX_MEMBERS);
  if (heartbeats.length !== 4 * count)
    throw new ProtocolError(`digest: ${heartbeats.length} bytes of heartbeats for ${count} members`);
  const d: GossipDigest = {
    dir: int(o, "dir"),
    count,
    heartbeats,
    ringVersion: int(o, "ringVersion"),
    ringHash: int(o, "ringHash", 0, 0xffff_ffff),
    ...(o.seen === undefined || o.seen === null ? {} : { seen: seenBitmaps(o, count) }),
  };
  if (o.ids === undefined || o.ids === null) return d;
  const list = ids(o, "ids", MAX_MEMBERS, 64);
  const incarnations = arr(o, "incarnations", MAX_MEMBERS);
  const statuses = bytes(o, "statuses", MAX_MEMBERS);
  if (list.length !== count || incarnations.length !== count || statuses.length !== count)
    throw new ProtocolError("digest: ids, incarnations, statuses and heartbeats do not match");
  for (let i = 0; i < count; i++) {
    if (i > 0 && !(list[i - 1]! < list[i]!)) throw new ProtocolError("digest: ids are not in strict order");
    const inc = incarnations[i];
    if (typeof inc !== "number" || !Number.isSafeInteger(inc) || inc < 0)
      throw new ProtocolError("digest: an incarnation is not a whole number");
    if (statuses[i]! > 3) throw new ProtocolError(`digest: status ${statuses[i]} unknown`);
  }
  return { ...d, ids: list, incarnations: incarnations as number[], statuses };
}

function gossipRequest(o: Obj): GossipRequest {
  const out: GossipRequest = {
    kind: "gossip",
    members: arr(o, "members", MAX_MEMBERS).map(member),
    ring: ring(o.ring),
  };
  const d = digest(o.digest);
  const delta = ringDelta(o.ringDelta);
  if (d?.ids !== undefined) throw new ProtocolError("gossip: a request's digest is never a full one");
  return {
    ...out,
    ...(d === undefined ? {} : { digest: d }),
    ...(o.want === undefined || o.want === null ? {} : { want: ids(o, "want", MAX_MEMBERS, 64) }),
    ...(delta === undefined ? {} : { ringDelta: delta }),
  };
}

function gossipAnswer(o: Obj): GossipAnswer {
  const d = digest(o.digest);
  const delta = ringDelta(o.ringDelta);
  return {
    kind: "gossip",
    members: arr(o, "members", MAX_MEMBERS).map(member),
    ring: ring(o.ring),
    ...(d === undefined ? {} : { digest: d }),
    ...(o.ringWant === undefined || o.ringWant === null ? {} : { ringWant: ringRef(o.ringWant, "ringWant") }),
    ...(delta === undefined ? {} : { ringDelta: delta }),
  };
}

function context(o: Obj, k: string): WireContext {
  const entries = arr(o, k, MAX_CONTEXT_ENTRIES);
  const seen = new Set<string>();
  return entries.map((e) => {
    if (!Array.isArray(e) || e.length !== 2) throw new ProtocolError(`${k} entry is not [actor, counter]`);
    const [actor, counter] = e as unknown[];
    if (typeof actor !== "string" || actor.length === 0 || actor.length > MAX_ACTOR_CHARS)
      throw new ProtocolError(`${k} actor is not a string of 1..${MAX_ACTOR_CHARS} chars`);
    if (typeof counter !== "number" || !Number.isSafeInteger(counter) || counter < 1)
      throw new ProtocolError(`${k} counter of ${actor} is not a positive integer`);
    if (seen.has(actor)) throw new ProtocolError(`${k} names actor ${actor} twice`);
    seen.add(actor);
    return [actor, counter] as const;
  });
}

function writeOutcome(v: unknown): WireWriteOutcome {
  const o = obj(v, "outcome");
  const kind = str(o, "kind", 32);
  switch (kind) {
    case "ok":
      return {
        kind,
        written: bytes(o, "written"),
        set: bytes(o, "set"),
        acked: int(o, "acked", 0, MAX_REPLICAS),
      };
    case "too_many_siblings":
      return { kind, siblings: int(o, "siblings"), max: int(o, "max") };
    case "unavailable": {
      const out = {
        kind,
        needed: int(o, "needed", 0, MAX_REPLICAS),
        acked: int(o, "acked", 0, MAX_REPLICAS),
      };
      if (o.primary === undefined) return out;
      const p = obj(o.primary, "primary");
      return {
        ...out,
        primary: { needed: int(p, "needed", 0, MAX_REPLICAS), acked: int(p, "acked", 0, MAX_REPLICAS) },
      };
    }
    case "too_few_replicas":
      return {
        kind,
        needed: int(o, "needed", 0, MAX_REPLICAS),
        replicas: int(o, "replicas", 0, MAX_REPLICAS),
      };
    case "overloaded": {
      const limit = str(o, "limit", 32);
      if (limit !== "waiters_per_key" && limit !== "keys_locked")
        throw new ProtocolError(`unknown overload limit ${JSON.stringify(limit)}`);
      return { kind, limit, max: int(o, "max") };
    }
    default:
      throw new ProtocolError(`unknown outcome kind ${JSON.stringify(kind)}`);
  }
}

/** A list of u32 values as one byte string (anti-entropy/messages.ts), at most `max` values. */
function u32List(o: Obj, k: string, max: number): Uint8Array {
  const v = bytes(o, k, 4 * max);
  if (v.length % 4 !== 0) throw new ProtocolError(`field ${k} is not a list of u32 (${v.length} bytes)`);
  return v;
}

/** A list of keys (byte strings of at most MAX_KEY_BYTES each), at most `max` (MAX_MESSAGE_KEYS). */
function keyList(o: Obj, k: string, max = MAX_MESSAGE_KEYS): Uint8Array[] {
  const v = arr(o, k, max);
  return v.map((x, i) => {
    if (!(x instanceof Uint8Array) || x.length > MAX_KEY_BYTES)
      throw new ProtocolError(`field ${k}[${i}] is not a key`);
    return Buffer.from(x);
  });
}

/** A node id: a non-empty string of at most 64 characters. */
function nodeId(o: Obj, k: string): string {
  const v = str(o, k, 64);
  if (v.length === 0) throw new ProtocolError(`field ${k} is empty`);
  return v;
}

function handoffFigures(o: Obj): HandoffFigures {
  const state = str(o, "state", 16);
  if (!(HANDOFF_STATES as readonly string[]).includes(state))
    throw new ProtocolError(`unknown handoff state ${JSON.stringify(state)}`);
  return {
    kind: "handoff_figures",
    ringVersion: int(o, "ringVersion"),
    handedOff: int(o, "handedOff"),
    ...(o.sentFor === undefined
      ? {}
      : { sentFor: int(o, "sentFor"), sentFrom: o.sentFrom === null ? null : int(o, "sentFrom") }),
    state: state as HandoffFigures["state"],
    passRingVersion: int(o, "passRingVersion"),
    keysScanned: int(o, "keysScanned"),
    keysSent: int(o, "keysSent"),
    bytesSent: int(o, "bytesSent"),
    storesFailed: int(o, "storesFailed"),
    keysTotal: o.keysTotal === null || o.keysTotal === undefined ? null : int(o, "keysTotal"),
    throttleBytesPerSecond: num(o, "throttleBytesPerSecond", Number.MIN_VALUE),
  };
}

function requestBody(v: unknown): RequestBody {
  const o = obj(v, "request body");
  const kind = str(o, "kind", 32);
  switch (kind) {
    case "ping":
      return { kind };
    case "probe":
      return { kind, target: str(o, "target", 300) };
    case "read": {
      const read = { kind, key: bytes(o, "key", MAX_KEY_BYTES) } as const;
      return o.hintFor === undefined ? read : { ...read, hintFor: nodeId(o, "hintFor") };
    }
    case "store": {
      const store = {
        kind,
        key: bytes(o, "key", MAX_KEY_BYTES),
        set: bytes(o, "set"),
        ...(o.handoff === undefined ? {} : { handoff: bool(o, "handoff") }),
      } as const;
      return o.hintFor === undefined ? store : { ...store, hintFor: nodeId(o, "hintFor") };
    }
    case "coordinate":
      return {
        kind,
        requestId: requestId(o, "requestId"),
        key: bytes(o, "key", MAX_KEY_BYTES),
        context: context(o, "context"),
        value: bytes(o, "value"),
        contentType: str(o, "contentType", 1024),
        deleted: bool(o, "deleted"),
        writtenAtMs: int(o, "writtenAtMs"),
        w: int(o, "w", 1, MAX_REPLICAS),
        ...(o.pw === undefined ? {} : { pw: int(o, "pw", 0, MAX_REPLICAS) }),
        timeoutMs: int(o, "timeoutMs", 1, 3_600_000),
      };
    case "gossip":
      return gossipRequest(o);
    case "join":
      return { kind, member: member(o.member) };
    case "depart": {
      const how = str(o, "how", 16);
      if (how !== "leave" && how !== "remove")
        throw new ProtocolError(`unknown departure ${JSON.stringify(how)}`);
      return { kind, id: str(o, "id", 64), how, force: bool(o, "force") };
    }
    case "list_keys": {
      const partitions = int(o, "partitions", 1, MAX_PARTITIONS);
      const include = bytes(o, "include", MAX_PARTITIONS / 8);
      if (include.length !== Math.ceil(partitions / 8))
        throw new ProtocolError(`list_keys: include is ${include.length} bytes for ${partitions} partitions`);
      return {
        kind,
        partitions,
        include,
        after: o.after === null || o.after === undefined ? null : bytes(o, "after", MAX_KEY_BYTES),
        maxKeys: int(o, "maxKeys", 1, MAX_LIST_KEYS),
        maxBytes: int(o, "maxBytes", 1, MAX_LIST_BYTES),
      };
    }
    case "count_partitions":
      return { kind, partitions: int(o, "partitions", 1, MAX_PARTITIONS) };
    case "handoff_progress":
      return { kind };
    case "purge_check":
    case "purge": {
      const keys = keyList(o, "keys", MAX_PURGE_KEYS);
      const sets = arr(o, "sets", MAX_PURGE_KEYS).map((x, i) => {
        if (!(x instanceof Uint8Array) || x.length > MAX_FRAME_BYTES)
          throw new ProtocolError(`field sets[${i}] is not bytes`);
        return Buffer.from(x);
      });
      if (keys.length !== sets.length) throw new ProtocolError(`${kind}: keys and sets do not match`);
      return { kind, ringVersion: int(o, "ringVersion"), keys, sets };
    }
    case "ae_roots":
    case "ae_branches":
      return { kind, partitions: u32List(o, "partitions", MAX_REQUEST_IDS) };
    case "ae_segments":
      return { kind, branches: u32List(o, "branches", MAX_REQUEST_IDS) };
    case "ae_keys": {
      const segments = u32List(o, "segments", MAX_REQUEST_SEGMENTS);
      const counts = u32List(o, "counts", MAX_REQUEST_SEGMENTS);
      const keys = keyList(o, "keys");
      const hashes = u32List(o, "hashes", MAX_MESSAGE_KEYS);
      if (counts.length !== segments.length || hashes.length !== 4 * keys.length)
        throw new ProtocolError("ae_keys: segments, counts, keys and hashes do not match");
      return {
        kind,
        segments,
        counts,
        keys,
        hashes,
        maxKeys: int(o, "maxKeys", 0, MAX_MESSAGE_KEYS),
        maxBytes: int(o, "maxBytes", 0, MAX_ANSWER_KEY_BYTES),
      };
    }
    default:
      throw new ProtocolError(`unknown request kind ${JSON.stringify(kind)}`);
  }
}

function answerBody(v: unknown): AnswerBody {
  const o = obj(v, "answer body");
  const kind = str(o, "kind", 32);
  switch (kind) {
    case "pong":
    case "stored":
      return { kind };
    case "probed":
      return { kind, alive: bool(o, "alive") };
    case "read":
      return { kind, set: o.set === null || o.set === undefined ? null : bytes(o, "set") };
    case "coordinated":
      return { kind, outcome: writeOutcome(o.outcome) };
    case "purge_verdicts":
    case "purge_results": {
      const verdicts = bytes(o, "verdicts", MAX_PURGE_KEYS);
      for (const v of verdicts)
        if (v >= PURGE_VERDICTS.length) throw new ProtocolError(`${kind}: unknown verdict ${v}`);
      return { kind, verdicts };
    }
    case "ae_hashes":
      return {
        kind,
        hashes: u32List(o, "hashes", MAX_REQUEST_IDS * 32),
        unavailable: u32List(o, "unavailable", MAX_REQUEST_IDS),
      };
    case "ae_key_diffs": {
      const keys = keyList(o, "keys");
      const hashes = u32List(o, "hashes", MAX_MESSAGE_KEYS);
      if (hashes.length !== 4 * keys.length)
        throw new ProtocolError("ae_key_diffs: keys and hashes do not match");
      return { kind, covered: int(o, "covered", 0, MAX_REQUEST_SEGMENTS), keys, hashes };
    }
    case "partition_counts": {
      const keys = u32List(o, "keys", MAX_PARTITIONS);
      const kib = u32List(o, "kib", MAX_PARTITIONS);
      if (keys.length !== kib.length) throw new ProtocolError("partition_counts: keys and kib do not match");
      return { kind, keys, kib };
    }
    case "handoff_figures":
      return handoffFigures(o);
    case "key_list": {
      const keys = arr(o, "keys", MAX_LIST_KEYS).map((x, i) => {
        if (!(x instanceof Uint8Array) || x.length === 0 || x.length > MAX_KEY_BYTES)
          throw new ProtocolError(`field keys[${i}] is not a key`);
        return Buffer.from(x);
      });
      let total = 0;
      for (const k of keys) total += k.length;
      if (total > MAX_LIST_BYTES + MAX_KEY_BYTES) throw new ProtocolError("key_list: too many key bytes");
      const done = bool(o, "done");
      const last = o.last === null || o.last === undefined ? null : bytes(o, "last", MAX_KEY_BYTES);
      if (!done && last === null) throw new ProtocolError("key_list: not done, yet no last key");
      return { kind, keys, last, done, scanned: int(o, "scanned") };
    }
    case "departure":
      return {
        kind,
        refused: o.refused === null || o.refused === undefined ? null : str(o, "refused", 4096),
        retry: bool(o, "retry"),
        forceable: bool(o, "forceable"),
        remaining: int(o, "remaining", 0, MAX_MEMBERS),
      };
    case "gossip":
      return gossipAnswer(o);
    case "joined":
      return {
        kind,
        clusterId: str(o, "clusterId", 64),
        secret: str(o, "secret", 128),
        n: int(o, "n", 1, MAX_REPLICAS),
        r: int(o, "r", 1, MAX_REPLICAS),
        w: int(o, "w", 1, MAX_REPLICAS),
        members: arr(o, "members", MAX_MEMBERS).map(member),
        ring: ring(o.ring),
      };
    default:
      throw new ProtocolError(`unknown answer kind ${JSON.stringify(kind)}`);
  }
}

/** Decodes and validates one frame's bytes. */
export function decodeFrame(buf: Uint8Array): Frame {
  let raw: unknown;
  try {
    raw = packr.unpack(buf);
  } catch (err) {
    throw new ProtocolError(`frame is not MessagePack: ${(err as Error).message}`);
  }
  const o = obj(raw, "frame");
  const kind = o.kind === undefined && HANDSHAKE_KINDS.has(o.t) ? (o.t as string) : str(o, "kind", 16);
  switch (kind) {
    case "hello":
    case "welcome":
      return { kind, v: int(o, "v", 0, 1000), cluster: str(o, "cluster", 64), node: str(o, "node", 64) };
    case "reject":
      return { kind, reason: str(o, "reason", 1000) };
    case "req":
      return {
        kind,
        id: int(o, "id"),
        deadlineMs: int(o, "deadlineMs", 0, MAX_DEADLINE_MS),
        body: requestBody(o.body),
      };
    case "ans":
      return { kind, id: int(o, "id"), body: answerBody(o.body) };
    case "err":
      return { kind, id: int(o, "id"), code: str(o, "code", 64), message: str(o, "message", 4096) };
    default:
      throw new ProtocolError(`unknown frame kind ${JSON.stringify(kind)}`);
  }
}
