/**
 * The replication layer's view of the cluster: remote replicas behind the transport, the choice of a
 * key's replicas from the ring, and the router that sends a write to a replica when this node is not one
 * (the versioning needs the coordinator of a write to be a replica of its key).
 */
import { Packr } from "msgpackr";
import type { Random } from "../runtime/runtime.js";
import { type Transport, TransportError } from "../transport/transport.js";
import type { VersionVector } from "../versioning/dvv.js";
import { decodeSiblings, encodeSiblings, type StoredValue } from "../versioning/object-codec.js";
import type { Coordinator, KvService, ReadOutcome, ReplicaPeer, WriteOutcome } from "./coordinator.js";
import { ForwardIds } from "./forward-memo.js";

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** Where a node is, and whether it is worth asking now. */
export interface PeerDirectory {
  /** Peer address of a member, if known. */
  addressOf(nodeId: string): string | undefined;
  /** False when the failure detector has declared the node down: requests to it fail at once. */
  reachable(nodeId: string): boolean;
  /** Reports the outcome of a direct contact (feeds local suspicion). */
  contacted(nodeId: string, ok: boolean): void;
}

export function remotePeer(
  nodeId: string,
  transport: Transport,
  dir: PeerDirectory,
  timeoutMs: number,
  /** Called when a request to this replica timed out (for the metrics). */
  onTimeout?: (op: "read" | "store") => void,
): ReplicaPeer {
  const call = async <T>(op: "read" | "store", fn: (addr: string) => Promise<T>): Promise<T> => {
    const addr = dir.addressOf(nodeId);
    if (addr === undefined || !dir.reachable(nodeId)) throw new Error(`replica ${nodeId} is down`);
    try {
      const out = await fn(addr);
      dir.contacted(nodeId, true);
      return out;
    } catch (err) {
      dir.contacted(nodeId, false);
      if (err instanceof TransportError && err.code === "ERR_TIMEOUT") onTimeout?.(op);
      throw err;
    }
  };
  return {
    nodeId,
    read: (key) =>
      call("read", async (addr) => {
        const res = await transport.request(addr, { op: "read", key }, timeoutMs);
        if (res.op !== "read") throw new Error(`unexpected answer ${res.op} to read`);
        return res.set === null ? [] : decodeSiblings(res.set);
      }),
    store: (key, set, handoff) =>
      call("store", async (addr) => {
        const body = { op: "store", key, set: encodeSiblings(set) } as const;
        const res = await transport.request(addr, handoff === true ? { ...body, handoff } : body, timeoutMs);
        if (res.op !== "stored") throw new Error(`unexpected answer ${res.op} to store`);
      }),
  };
}

// ------------------------------------------------------------------ forwarded writes

export function encodeVector(vv: VersionVector): Buffer {
  return packr.pack([...vv.entries()]);
}

export function decodeVector(b: Uint8Array): VersionVector {
  const raw = packr.unpack(b) as unknown;
  if (!Array.isArray(raw)) throw new Error("bad vector");
  const out = new Map<string, number>();
  for (const e of raw) {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !Number.isSafeInteger(e[1]) || e[1] < 1)
      throw new Error("bad vector entry");
    out.set(e[0], e[1]);
  }
  return out;
}

export function encodeWriteOutcome(o: WriteOutcome): Buffer {
  if (o.kind === "ok")
    return packr.pack({
      kind: o.kind,
      written: encodeSiblings([o.written]),
      set: encodeSiblings(o.set),
      acked: o.acked,
    });
  return packr.pack(o);
}

export function decodeWriteOutcome(b: Uint8Array): WriteOutcome {
  const o = packr.unpack(b) as Record<string, unknown>;
  const int = (k: string) => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new Error(`bad outcome field ${k}`);
    return v;
  };
  switch (o.kind) {
    case "ok": {
      const written = decodeSiblings(o.written as Uint8Array)[0];
      if (written === undefined) throw new Error("outcome without its written version");
      return { kind: "ok", written, set: decodeSiblings(o.set as Uint8Array), acked: int("acked") };
    }
    case "too_many_siblings":
      return { kind: "too_many_siblings", siblings: int("siblings"), max: int("max") };
    case "unavailable":
      return { kind: "unavailable", needed: int("needed"), acked: int("acked") };
    default:
      throw new Error(`unknown outcome ${String(o.kind)}`);
  }
}

export interface RouterDeps {
  readonly coordinator: Coordinator;
  readonly selfId: string;
  readonly transport: Transport;
  readonly directory: PeerDirectory;
  /** The key's preference list (node ids). */
  readonly preferenceList: (key: Uint8Array) => readonly string[];
  /** Seeds the ids of forwarded writes (drawn once, at construction). */
  readonly random: Random;
}

/**
 * Reads are coordinated here (any node may merge replicas' answers). A write is coordinated here if this
 * node is a replica of the key that can version writes; otherwise it goes to the first other replica
 * that is not down, which coordinates it and sends back the outcome.
 */
export class Router implements KvService {
  private readonly ids: ForwardIds;

  constructor(private readonly d: RouterDeps) {
    this.ids = new ForwardIds(d.selfId, d.random);
  }

  get(key: Uint8Array, r: number, timeoutMs: number): Promise<ReadOutcome> {
    return this.d.coordinator.get(key, r, timeoutMs);
  }

  async write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
  ): Promise<WriteOutcome> {
    const prefs = this.d.preferenceList(key);
    // A replica coordinates its own writes, unless it cannot version any (a failed disk, or stopping):
    // then another replica does.
    if (prefs.includes(this.d.selfId) && this.d.coordinator.canVersion())
      return this.d.coordinator.write(key, context, value, w, timeoutMs);
    const candidates = prefs.filter((id) => id !== this.d.selfId && this.d.directory.reachable(id));
    // One id for the write, whichever replica gets it: a copy the network delivers twice is applied once
    // (the coordinator's ForwardMemo). Moving on to the next replica happens only when the request was
    // never delivered, so no two replicas see the id.
    const requestId = this.ids.next();
    for (const id of candidates) {
      const addr = this.d.directory.addressOf(id);
      if (addr === undefined) continue;
      try {
        const res = await this.d.transport.request(
          addr,
          {
            op: "coordinate",
            requestId,
            key,
            context: encodeVector(context),
            value: value.data,
            contentType: value.contentType,
            deleted: value.deleted,
            writtenAtMs: value.writtenAtMs,
            w,
            timeoutMs,
          },
          timeoutMs + 500,
        );
        this.d.directory.contacted(id, true);
        if (res.op !== "coordinated") throw new Error(`unexpected answer ${res.op} to coordinate`);
        return decodeWriteOutcome(res.outcome);
      } catch (err) {
        this.d.directory.contacted(id, false);
        // After a timeout, a failure there, or a connection lost with the request sent, the write may have
        // been applied: trying another replica would make a second version of it (found by the
        // simulator: a coordinator crashed mid-request, and the write came back as two siblings). Only
        // errors that mean "never delivered" move on to the next replica.
        if (!(err instanceof TransportError) || err.maybeDelivered)
          return { kind: "unavailable", needed: w, acked: 0 };
      }
    }
    return { kind: "unavailable", needed: w, acked: 0 };
  }
}
