/**
 * Node-to-node messages: a closed union, versioned, decoded with validation.
 *
 * A connection starts with a handshake (`hello` -> `welcome` | `reject`): both sides state the protocol
 * version and the cluster id, and a peer of another cluster or an incompatible version is refused. After
 * it, frames carry requests (`req`, with an id and a deadline) and their answers (`res` or `err`).
 *
 * Every frame is a MessagePack map (msgpackr with useRecords:false: standard MessagePack, no shared
 * structures). `decodeFrame` checks every field's type and bound and throws ProtocolError otherwise, so a
 * peer sending garbage gets an error and its connection closed, never a crash.
 */
import { Packr } from "msgpackr";

/**
 * Checked for equality in the handshake (tcp-transport.ts): nodes of different versions refuse each
 * other. 2: `coordinate` carries a `requestId` (forwarded writes are idempotent). 3: `depart` (a leave
 * or a removal is approved by the claimant, which serializes them).
 */
export const PROTOCOL_VERSION = 3;
/** Longest `coordinate` request id (the forwarder's node id, 16 hex digits, a counter). */
export const MAX_REQUEST_ID_CHARS = 128;
/** Largest frame accepted: 64 siblings of 1 MiB plus overhead fit easily. */
export const MAX_FRAME_BYTES = 96 * 1024 * 1024;

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
}

export interface RingView {
  readonly version: number;
  readonly partitions: number;
  readonly owners: readonly string[];
  /** The members (id:weight) the ring was claimed for; a member may own no partition (tiny weight). */
  readonly members: readonly string[];
}

export type RequestBody =
  | { readonly op: "ping" }
  | { readonly op: "probe"; readonly target: string }
  | { readonly op: "read"; readonly key: Uint8Array }
  | {
      readonly op: "store";
      readonly key: Uint8Array;
      readonly set: Uint8Array;
      /** Sent by ownership handoff (never sent on as a stray store: the sender's ring is the newer one). */
      readonly handoff?: boolean;
    }
  | {
      readonly op: "coordinate";
      /**
       * Names this forwarded write, uniquely across the cluster and restarts (replication/forward-memo.ts):
       * a copy of the request that arrives again gets the first one's outcome and applies nothing.
       */
      readonly requestId: string;
      readonly key: Uint8Array;
      readonly context: Uint8Array;
      readonly value: Uint8Array;
      readonly contentType: string;
      readonly deleted: boolean;
      readonly writtenAtMs: number;
      readonly w: number;
      readonly timeoutMs: number;
    }
  | { readonly op: "gossip"; readonly members: readonly MemberView[]; readonly ring: RingView | null }
  | {
      readonly op: "join";
      readonly member: MemberView;
    }
  | {
      /**
       * Asks the claimant to approve that member `id` departs: it leaves by itself, or is removed on its
       * behalf. The claimant answers from its view and the departures it approved lately, so two started
       * at once on different nodes cannot both pass the check that N members remain.
       */
      readonly op: "depart";
      readonly id: string;
      readonly how: "leave" | "remove";
      readonly force: boolean;
    };

export type ResponseBody =
  | { readonly op: "pong" }
  | { readonly op: "probed"; readonly alive: boolean }
  | { readonly op: "read"; readonly set: Uint8Array | null }
  | { readonly op: "stored" }
  | { readonly op: "coordinated"; readonly outcome: Uint8Array }
  /**
   * The claimant's answer to `depart`: `refused` says why, or is null; `retry`: refused for now (ask
   * again); `forceable`: refused because fewer than N would remain; `remaining`: members left after it.
   */
  | {
      readonly op: "departure";
      readonly refused: string | null;
      readonly retry: boolean;
      readonly forceable: boolean;
      readonly remaining: number;
    }
  | { readonly op: "gossip"; readonly members: readonly MemberView[]; readonly ring: RingView | null }
  | {
      readonly op: "joined";
      readonly clusterId: string;
      readonly secret: string;
      readonly n: number;
      readonly r: number;
      readonly w: number;
      readonly members: readonly MemberView[];
      readonly ring: RingView | null;
    };

export type Frame =
  | { readonly t: "hello"; readonly v: number; readonly cluster: string; readonly node: string }
  | { readonly t: "welcome"; readonly v: number; readonly cluster: string; readonly node: string }
  | { readonly t: "reject"; readonly reason: string }
  | { readonly t: "req"; readonly id: number; readonly deadlineMs: number; readonly body: RequestBody }
  | { readonly t: "res"; readonly id: number; readonly body: ResponseBody }
  | { readonly t: "err"; readonly id: number; readonly code: string; readonly message: string };

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

export function encodeFrame(f: Frame): Buffer {
  return packr.pack(f);
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

function member(v: unknown): MemberView {
  const o = obj(v, "member");
  const status = str(o, "status", 16);
  if (!STATUSES.has(status)) throw new ProtocolError(`member status ${status} unknown`);
  return {
    id: str(o, "id", 64),
    api: str(o, "api", 300),
    peer: str(o, "peer", 300),
    weight: num(o, "weight", 0, 1e6),
    zone: optStr(o, "zone", 64),
    status: status as MemberView["status"],
    incarnation: int(o, "incarnation"),
    heartbeat: int(o, "heartbeat"),
  };
}

function ring(v: unknown): RingView | null {
  if (v === null || v === undefined) return null;
  const o = obj(v, "ring");
  const partitions = int(o, "partitions", 1, MAX_PARTITIONS);
  const owners = arr(o, "owners", MAX_PARTITIONS);
  if (owners.length !== partitions) throw new ProtocolError("ring owners do not match its partition count");
  for (const x of owners)
    if (typeof x !== "string" || x.length > 64) throw new ProtocolError("ring owner is not an id");
  const members = arr(o, "members", MAX_MEMBERS);
  for (const x of members)
    if (typeof x !== "string" || x.length > 100) throw new ProtocolError("ring member is not an id");
  return { version: int(o, "version"), partitions, owners: owners as string[], members: members as string[] };
}

function requestBody(v: unknown): RequestBody {
  const o = obj(v, "request body");
  const op = str(o, "op", 32);
  switch (op) {
    case "ping":
      return { op };
    case "probe":
      return { op, target: str(o, "target", 300) };
    case "read":
      return { op, key: bytes(o, "key", 65536) };
    case "store": {
      const store = { op, key: bytes(o, "key", 65536), set: bytes(o, "set") } as const;
      return o.handoff === undefined ? store : { ...store, handoff: bool(o, "handoff") };
    }
    case "coordinate":
      return {
        op,
        requestId: requestId(o, "requestId"),
        key: bytes(o, "key", 65536),
        context: bytes(o, "context", 65536),
        value: bytes(o, "value"),
        contentType: str(o, "contentType", 1024),
        deleted: bool(o, "deleted"),
        writtenAtMs: int(o, "writtenAtMs"),
        w: int(o, "w", 1, 64),
        timeoutMs: int(o, "timeoutMs", 1, 3_600_000),
      };
    case "gossip":
      return { op, members: arr(o, "members", MAX_MEMBERS).map(member), ring: ring(o.ring) };
    case "join":
      return { op, member: member(o.member) };
    case "depart": {
      const how = str(o, "how", 16);
      if (how !== "leave" && how !== "remove")
        throw new ProtocolError(`unknown departure ${JSON.stringify(how)}`);
      return { op, id: str(o, "id", 64), how, force: bool(o, "force") };
    }
    default:
      throw new ProtocolError(`unknown request op ${JSON.stringify(op)}`);
  }
}

function responseBody(v: unknown): ResponseBody {
  const o = obj(v, "response body");
  const op = str(o, "op", 32);
  switch (op) {
    case "pong":
    case "stored":
      return { op };
    case "probed":
      return { op, alive: bool(o, "alive") };
    case "read":
      return { op, set: o.set === null || o.set === undefined ? null : bytes(o, "set") };
    case "coordinated":
      return { op, outcome: bytes(o, "outcome") };
    case "departure":
      return {
        op,
        refused: o.refused === null || o.refused === undefined ? null : str(o, "refused", 4096),
        retry: bool(o, "retry"),
        forceable: bool(o, "forceable"),
        remaining: int(o, "remaining", 0, MAX_MEMBERS),
      };
    case "gossip":
      return { op, members: arr(o, "members", MAX_MEMBERS).map(member), ring: ring(o.ring) };
    case "joined":
      return {
        op,
        clusterId: str(o, "clusterId", 64),
        secret: str(o, "secret", 128),
        n: int(o, "n", 1, 64),
        r: int(o, "r", 1, 64),
        w: int(o, "w", 1, 64),
        members: arr(o, "members", MAX_MEMBERS).map(member),
        ring: ring(o.ring),
      };
    default:
      throw new ProtocolError(`unknown response op ${JSON.stringify(op)}`);
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
  const t = str(o, "t", 16);
  switch (t) {
    case "hello":
    case "welcome":
      return { t, v: int(o, "v", 0, 1000), cluster: str(o, "cluster", 64), node: str(o, "node", 64) };
    case "reject":
      return { t, reason: str(o, "reason", 1000) };
    case "req":
      return {
        t,
        id: int(o, "id"),
        deadlineMs: int(o, "deadlineMs", 0, 3_600_000),
        body: requestBody(o.body),
      };
    case "res":
      return { t, id: int(o, "id"), body: responseBody(o.body) };
    case "err":
      return { t, id: int(o, "id"), code: str(o, "code", 64), message: str(o, "message", 4096) };
    default:
      throw new ProtocolError(`unknown frame type ${JSON.stringify(t)}`);
  }
}
