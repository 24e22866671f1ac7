/**
 * Write forwarding, both ends. The versioning needs the coordinator of a write to be a replica of its
 * key: the Router coordinates a write here when this node is one, and otherwise sends it (`coordinate`)
 * to a replica, which coordinates it (`coordinateForwarded`) and answers with the outcome.
 *
 * On the wire the write's context is a list of [actor, counter] entries and its outcome a closed union
 * whose sibling sets are stored-object bytes (transport/messages.ts); they are turned into a
 * VersionVector and a WriteOutcome here, the sets decoded with the object codec's validation.
 */
import type { Clock, Random } from "../runtime/runtime.js";
import type { AnswerOf, RequestOf, WireContext, WireWriteOutcome } from "../transport/messages.js";
import { type Transport, TransportError } from "../transport/transport.js";
import type { VersionVector } from "../versioning/dvv.js";
import { decodeSiblings, encodeSiblings, type StoredValue } from "../versioning/object-codec.js";
import type { Coordinator, KvService, ReadOutcome, WriteOutcome } from "./coordinator.js";
import { ForwardIds } from "./forward-memo.js";
import type { PeerDirectory } from "./remote-replica.js";
import { standInSet } from "./sloppy.js";

/**
 * Of a forwarded write's budget, what is kept for its answer's way back: the replica that coordinates it
 * answers this much before the forwarder stops waiting (at most a tenth of the budget).
 */
export const FORWARD_RETURN_MS = 50;
/** With less budget left than this, a write is not forwarded (again): 503 at once. */
export const MIN_FORWARD_MS = 5;

/** The part of `leftMs` a coordinator works in, the rest being the answer's way back. */
export function workingBudget(leftMs: number): number {
  return Math.max(1, Math.floor(leftMs - Math.min(FORWARD_RETURN_MS, leftMs / 10)));
}

export interface RouterDeps {
  readonly coordinator: Coordinator;
  readonly selfId: string;
  readonly transport: Transport;
  readonly directory: PeerDirectory;
  /** The key's preference list (node ids). */
  readonly preferenceList: (key: Uint8Array) => readonly string[];
  /** Sloppy quorum: the nodes after the key's preference list on the ring, in order (absent: none). */
  readonly fallbacks?: (key: Uint8Array) => readonly string[];
  /** Seeds the ids of forwarded writes (drawn once, at construction). */
  readonly random: Random;
  /** Measures what is left of a write's budget while it is forwarded. */
  readonly clock: Clock;
}

/** A write's outcome as a `coordinated` answer carries it. */
export function outcomeToWire(o: WriteOutcome): WireWriteOutcome {
  if (o.kind !== "ok") return o;
  return { kind: "ok", written: encodeSiblings([o.written]), set: encodeSiblings(o.set), acked: o.acked };
}

/** The outcome of a `coordinated` answer; throws ObjectDecodeError (or Error) on sets that do not decode. */
export function outcomeFromWire(o: WireWriteOutcome): WriteOutcome {
  if (o.kind !== "ok") return o;
  const written = decodeSiblings(o.written);
  if (written.length !== 1 || written[0] === undefined)
    throw new Error(`a forwarded write's outcome holds ${written.length} written versions, not one`);
  return { kind: "ok", written: written[0], set: decodeSiblings(o.set), acked: o.acked };
}

function contextToWire(vv: VersionVector): WireContext {
  return [...vv];
}

function contextFromWire(entries: WireContext): VersionVector {
  return new Map(entries);
}

/**
 * Reads are coordinated here (any node may merge replicas' answers). A write is coordinated here if this
 * node is a replica of the key that can version writes; otherwise it goes to the first other replica
 * that is not down, which coordinates it and sends back the outcome.
 *
 * The timeout is one budget for the whole request, not one per hop: a forwarded write asks the replica to
 * answer within what is left of it (less the answer's way back), the transport waits no longer than what
 * is left, and a replica tried after another one refused gets only what remains.
 */
export class Router implements KvService {
  private readonly ids: ForwardIds;

  constructor(private readonly d: RouterDeps) {
    this.ids = new ForwardIds(d.selfId, d.random);
  }

  get(key: Uint8Array, r: number, timeoutMs: number, opts: { pr?: number } = {}): Promise<ReadOutcome> {
    return this.d.coordinator.get(key, r, timeoutMs, opts);
  }

  async write(
    key: Uint8Array,
    context: VersionVector,
    value: StoredValue,
    w: number,
    timeoutMs: number,
    opts: { pw?: number } = {},
  ): Promise<WriteOutcome> {
    const self = this.d.selfId;
    const prefs = this.d.preferenceList(key);
    // A replica coordinates its own writes, unless it cannot version any (a failed disk, or stopping):
    // then another replica does.
    if (prefs.includes(self) && this.d.coordinator.canVersion())
      return this.d.coordinator.write(key, context, value, w, timeoutMs, opts);
    const reachable = (id: string) => id !== self && this.d.directory.reachable(id);
    const fallbacks = this.d.fallbacks?.(key) ?? [];
    // Sloppy quorum: with every replica of the key down, one of the stand-ins its requests go to
    // coordinates as a stand-in, this node if it is one.
    if (
      !prefs.some(reachable) &&
      standInSet(prefs, fallbacks, (id) => id === self || reachable(id)).includes(self) &&
      this.d.coordinator.canVersion()
    )
      return this.d.coordinator.write(key, context, value, w, timeoutMs, opts);
    // The replicas first; the fallbacks only if no replica took the request.
    const candidates = [...prefs.filter(reachable), ...fallbacks.filter(reachable)];
    // One id for the write, whichever replica gets it: a copy the network delivers twice is applied once
    // (the coordinator's ForwardMemo). Moving on to the next replica happens only when the request was
    // never delivered, so no two replicas see the id.
    const requestId = this.ids.next();
    const start = this.d.clock.now();
    for (const id of candidates) {
      const addr = this.d.directory.addressOf(id);
      if (addr === undefined) continue;
      const leftMs = timeoutMs - (this.d.clock.now() - start);
      if (leftMs < MIN_FORWARD_MS) break;
      try {
        const res = await this.d.transport.request(
          addr,
          {
            kind: "coordinate",
            requestId,
            key,
            context: contextToWire(context),
            value: value.data,
            contentType: value.contentType,
            deleted: value.deleted,
            writtenAtMs: value.writtenAtMs,
            w,
            ...(opts.pw === undefined || opts.pw === 0 ? {} : { pw: opts.pw }),
            timeoutMs: workingBudget(leftMs),
          },
          leftMs,
        );
        this.d.directory.contacted(id, true);
        return outcomeFromWire(res.outcome);
      } catch (err) {
        this.d.directory.contacted(id, false);
        // After a timeout, a failure there, or a connection lost with the request sent, the write may have
        // been applied: trying another replica would make a second version of it (one client write as two
        // siblings). Only errors that mean "never delivered" move on to the next replica.
        if (!(err instanceof TransportError) || err.maybeDelivered)
          return { kind: "unavailable", needed: w, acked: 0 };
      }
    }
    return { kind: "unavailable", needed: w, acked: 0 };
  }

  /**
   * Coordinates a write another node forwarded here. Not idempotent by itself: the node's dispatch puts
   * the forwarded-write memo (forward-memo.ts) in front of it, so a copy that arrives twice applies once.
   * `leftMs`: how long the forwarder still waits (its frame's deadline, where the transport knows it); the
   * write ends early enough for the answer to reach it.
   */
  async coordinateForwarded(body: RequestOf<"coordinate">, leftMs?: number): Promise<AnswerOf<"coordinate">> {
    const timeoutMs = leftMs === undefined ? body.timeoutMs : Math.min(body.timeoutMs, workingBudget(leftMs));
    const out = await this.d.coordinator.write(
      body.key,
      contextFromWire(body.context),
      {
        data: body.value,
        contentType: body.contentType,
        deleted: body.deleted,
        writtenAtMs: body.writtenAtMs,
      },
      body.w,
      timeoutMs,
      { pw: body.pw ?? 0 },
    );
    return { kind: "coordinated", outcome: outcomeToWire(out) };
  }
}
