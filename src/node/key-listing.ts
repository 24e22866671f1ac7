/**
 * The key listing as a node runs it (src/listing): its answers to peers' `list_keys` requests, from its
 * replica behind the scan throttle, and the pages it serves to clients, read from the replicas of the
 * current ring that the failure detector does not see down (itself by a direct call).
 */

import { DONE, type ListingPosition } from "../listing/cursor.js";
import { type ListingDeps, listPage, type PageLimits, type PageOutcome } from "../listing/pager.js";
import { listReplicaKeys, type ScanSource, ScanThrottle } from "../listing/replica-scan.js";
import type { Membership } from "../membership/membership.js";
import type { PartitionCounts } from "../ring/plan.js";
import { partitionOf } from "../ring/ring.js";
import type { Clock, Timers } from "../runtime/runtime.js";
import type { AnswerOf, RequestOf } from "../transport/messages.js";
import type { Transport } from "../transport/transport.js";
import type { Placement } from "./placement.js";

/** Sets a node's listing scans look at per second at most, by default. */
export const DEFAULT_LIST_KEYS_PER_SECOND = 50_000;

/** A count of the keys a node stores. */
export interface Census {
  readonly live: number;
  /** Keys whose set holds deleted siblings only (and sets that failed to decode). */
  readonly tombstones: number;
  /** When it ended (the node's clock). */
  readonly at: number;
}

export interface KeyListingDeps {
  readonly selfId: string;
  /** Q, as the cluster was created. */
  readonly partitions: number;
  readonly membership: Membership;
  readonly placement: Placement;
  readonly replica: ScanSource;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly requestTimeoutMs: number;
  readonly keysPerSecond?: number;
}

/** Packs counts into a `partition_counts` answer (bytes as KiB, rounded up; u32, little-endian). */
export function countsToWire(c: PartitionCounts): AnswerOf<"count_partitions"> {
  const q = c.keys.length;
  const keys = Buffer.alloc(4 * q);
  const kib = Buffer.alloc(4 * q);
  for (let p = 0; p < q; p++) {
    keys.writeUInt32LE(Math.min(0xffff_ffff, c.keys[p]!), 4 * p);
    kib.writeUInt32LE(Math.min(0xffff_ffff, Math.ceil(c.bytes[p]! / 1024)), 4 * p);
  }
  return { kind: "partition_counts", keys, kib };
}

/** The counts a `partition_counts` answer carries (bytes as whole KiB). */
export function countsFromWire(a: AnswerOf<"count_partitions">): PartitionCounts {
  const k = Buffer.from(a.keys.buffer, a.keys.byteOffset, a.keys.length);
  const b = Buffer.from(a.kib.buffer, a.kib.byteOffset, a.kib.length);
  const keys: number[] = [];
  const bytes: number[] = [];
  for (let i = 0; i + 4 <= k.length; i += 4) {
    keys.push(k.readUInt32LE(i));
    bytes.push(b.readUInt32LE(i) * 1024);
  }
  return { keys, bytes };
}

export class KeyListing {
  readonly throttle: ScanThrottle;
  /** Pages served, and keys in them, since the node started. */
  readonly totals = { pages: 0, keys: 0 };
  private readonly deps: ListingDeps;

  constructor(private readonly d: KeyListingDeps) {
    this.throttle = new ScanThrottle(d.timers, d.clock, d.keysPerSecond ?? DEFAULT_LIST_KEYS_PER_SECOND);
    const m = d.membership;
    this.deps = {
      selfId: d.selfId,
      ring: () => {
        const table = d.placement.current();
        return table === undefined
          ? undefined
          : { partitions: table.ring.partitions, replicasOf: (p) => table.forPartition(p) };
      },
      usable: (id) => id === d.selfId || m.liveness(id, d.clock.now()) !== "down",
      ask: (id, request) => {
        if (id === d.selfId) return this.answer(request);
        const addr = m.member(id)?.peer;
        if (addr === undefined) return Promise.reject(new Error(`no address known for ${id}`));
        // A scan may wait its turn behind the throttle: allow it more than a key's read.
        return d.transport.request(addr, request, d.requestTimeoutMs * 4);
      },
      clock: d.clock,
    };
  }

  /** A peer's (or this node's) `list_keys`, answered from this node's sets. */
  answer(body: RequestOf<"list_keys">): Promise<AnswerOf<"list_keys">> {
    if (body.partitions !== this.d.partitions)
      return Promise.reject(
        Object.assign(
          new Error(`list_keys for ${body.partitions} partitions: this cluster has ${this.d.partitions}`),
          { code: "ERR_REJECTED" },
        ),
      );
    return this.throttle.run((pace) => listReplicaKeys(body, this.d.replica, partitionOf, pace));
  }

  /**
   * Counts the sets this node stores per partition, and their bytes, in one paced pass (behind the
   * listing's throttle, as the census). Calls made while one runs share it.
   */
  partitionCounts(): Promise<PartitionCounts> {
    this.counting ??= this.countPartitions().finally(() => {
      this.counting = undefined;
    });
    return this.counting;
  }

  private counting: Promise<PartitionCounts> | undefined;

  private async countPartitions(): Promise<PartitionCounts> {
    const q = this.d.partitions;
    const keys = new Array<number>(q).fill(0);
    const bytes = new Array<number>(q).fill(0);
    let after: Uint8Array | undefined;
    for (;;) {
      const page = await this.throttle.run(async (pace) => {
        await pace(256);
        return this.d.replica.scan(after, 256, 1 << 20);
      });
      if (page.length === 0) break;
      for (const e of page) {
        const p = partitionOf(e.key, q);
        keys[p]!++;
        bytes[p]! += e.key.length + e.value.length;
      }
      // Scan keys are views into the engine's buffers: the next page starts after a copy.
      after = Buffer.from(page[page.length - 1]!.key);
    }
    return { keys, bytes };
  }

  /** One page of a listing from `position`. */
  async page(position: ListingPosition, limits: PageLimits): Promise<PageOutcome> {
    const out = await listPage(this.deps, position, limits);
    if (out.kind === "page") {
      this.totals.pages++;
      this.totals.keys += out.keys.length;
    }
    return out;
  }

  /**
   * Counts the keys this node stores, live and deleted (tombstones only), in one paced pass over its sets
   * (a page of the scan at a time behind the throttle, so listings go on meanwhile).
   */
  async census(): Promise<Census> {
    let live = 0;
    let scanned = 0;
    let after: Uint8Array | null = null;
    const all = Buffer.alloc(Math.ceil(this.d.partitions / 8), 0xff);
    for (;;) {
      const a = await this.throttle.run((pace) =>
        listReplicaKeys(
          {
            kind: "list_keys",
            partitions: this.d.partitions,
            include: all,
            after,
            maxKeys: 10_000,
            maxBytes: 1 << 22,
          },
          this.d.replica,
          partitionOf,
          pace,
          { pageKeys: 256, pageBytes: 1 << 20, maxScanned: 4096 },
        ),
      );
      live += a.keys.length;
      scanned += a.scanned;
      if (a.done) break;
      after = a.last;
    }
    return { live, tombstones: scanned - live, at: this.d.clock.now() };
  }

  /** Partitions listed by a position, for progress (0..Q). */
  static done(position: ListingPosition): number {
    let n = 0;
    for (const s of position.states) if (s === DONE) n++;
    return n;
  }
}
